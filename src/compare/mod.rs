//! `headstart compare`: every strategy (and training-set size) on the same
//! data under the same budget, over several seeds, tested on held-out data;
//! then a report of what each reached and what it cost.
//!
//! Layout of `--out DIR`: `data/` (the held-out split, when `--test` is not
//! given), `runs/<size>-<strategy>-seed<k>/` (one training run each, with its
//! `cost.json` and `test.json`), `plots/`, `report.md`, `report.html` and
//! `report.json`. A run that finished is reused when the comparison is run
//! again with the same settings, so an interrupted comparison continues, and
//! a folder moved elsewhere (or runs of two folders merged) keeps its runs.

pub mod captions;
pub mod plan;
mod reuse;
use reuse::{ReuseKey, reuse, sha256_files, weight_files};
pub mod report;
pub mod samples;
pub mod stats;

use std::path::{Path, PathBuf};

use crate::models::encoder_decoder::layout;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::cost::run::RunCost;
use crate::data::split::stratified_split;
use crate::data::table::{self, Columns, Example};
use crate::fsutil::{write_atomic, write_json_atomic};
use crate::models::Architecture;
use crate::models::bert::Bert;
use crate::strategy::Strategy;
use crate::tasks::Task;
use crate::tasks::causal_lm::{CausalLanguageModelling, LmMetrics};
use crate::tasks::classification::{MetricName, Metrics};
use crate::tasks::image::ImageClassification;
use crate::train::{self, TrainConfig};
use burn::tensor::Device;
pub use plan::Plan;
pub use samples::Sample;
use stats::{Budget, MeanCi};
pub use stats::{data_multiplier, summarise};

/// `headstart compare`'s own options; the data, model and training flags are
/// [`TrainConfig`]'s.
#[derive(Clone, Debug, clap::Args)]
pub struct CompareOptions {
    /// Held-out data the table reports on (default: a stratified, seeded 20% of --train, kept out of training).
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Strategies to compare; `freeze:A..B` expands to every depth (B may be `L`, the model's layer count).
    #[arg(long, default_value = "scratch,head,freeze:4,full")]
    pub strategies: String,
    /// Seeds per strategy (the table shows mean and 95% interval).
    #[arg(long, default_value_t = 3)]
    pub seeds: usize,
    /// The same for every strategy: epochs (3ep), optimizer steps (500steps), wall time (10m, 90s) or energy (5Wh).
    #[arg(long, default_value = "3ep")]
    pub budget: Budget,
    /// A validation score (of --metric) whose time and energy to reach are reported, e.g. 0.90.
    #[arg(long)]
    pub target: Option<f64>,
    /// Training-set sizes for a data-efficiency sweep, e.g. 100,300,1000.
    #[arg(long, value_delimiter = ',')]
    pub train_sizes: Vec<usize>,
    /// Validations per run, for the learning curves.
    #[arg(long, default_value_t = 8)]
    pub curve_points: usize,
    /// Examples of the held-out set to test on (default: all).
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Language models: held-out prompts each strategy continues in the report.
    #[arg(long, default_value_t = 3)]
    pub samples: usize,
    /// Keep each finished run's `checkpoints/` and `best/`. By default they are removed once the run is tested: they only serve to resume or re-export it, the exported `model/` is what the test, the samples and `predict` read, and with a 135M-parameter language model they are 1.5 GB a run.
    #[arg(long)]
    pub keep_checkpoints: bool,
}

/// Removes a tested run's `checkpoints/` and `best/` (resume state and
/// the best weights, already exported to `model/`).
fn prune_finished(dir: &Path) -> Result<()> {
    for name in ["checkpoints", "best"] {
        let sub = dir.join(name);
        if sub.is_dir() {
            std::fs::remove_dir_all(&sub).with_context(|| {
                format!(
                    "cannot remove {} of a finished run (--keep-checkpoints keeps it)",
                    sub.display()
                )
            })?;
        }
    }
    Ok(())
}

/// One point of a learning curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub step: usize,
    pub seconds: f64,
    pub energy_wh: f64,
    /// Validation accuracy and macro-F1 (NaN where the task has none:
    /// JSON writes NaN as null, which reads back as NaN, so that a finished
    /// run's `test.json` parses and the run is reused).
    #[serde(deserialize_with = "stats::nan_if_null")]
    pub accuracy: f64,
    #[serde(deserialize_with = "stats::nan_if_null")]
    pub macro_f1: f64,
    /// Validation perplexity (`exp` of the loss).
    #[serde(default = "nan", deserialize_with = "stats::nan_if_null")]
    pub perplexity: f64,
    /// Captioning: validation BLEU-4 and CIDEr-D (NaN for other tasks).
    #[serde(default = "nan", deserialize_with = "stats::nan_if_null")]
    pub bleu4: f64,
    #[serde(default = "nan", deserialize_with = "stats::nan_if_null")]
    pub cider: f64,
}

fn nan() -> f64 {
    f64::NAN
}

impl CurvePoint {
    pub fn score(&self, metric: MetricName) -> f64 {
        match metric {
            MetricName::Accuracy => self.accuracy,
            MetricName::MacroF1 => self.macro_f1,
            MetricName::Perplexity => self.perplexity,
            // compare refuses --metric loss
            MetricName::Loss => f64::NAN,
            MetricName::Bleu4 => self.bleu4,
            MetricName::Cider => self.cider,
        }
    }
}

/// What a run scored on the held-out set: a classifier's metrics or a
/// language model's perplexity.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TestMetrics {
    Captions(crate::tasks::captioning::CaptionMetrics),
    Text(LmMetrics),
    Classes(Metrics),
}

impl TestMetrics {
    /// Accuracy (of labels, or of next tokens).
    pub fn accuracy(&self) -> f64 {
        match self {
            Self::Classes(m) => m.accuracy,
            Self::Text(m) => m.accuracy,
            Self::Captions(m) => m.label_accuracy.unwrap_or(f64::NAN),
        }
    }

    /// Macro-F1 (none for a language model).
    pub fn macro_f1(&self) -> f64 {
        match self {
            Self::Classes(m) => m.macro_f1,
            Self::Text(_) | Self::Captions(_) => f64::NAN,
        }
    }

    /// `exp` of the mean loss per example (classes) or per token (text).
    pub fn perplexity(&self) -> f64 {
        match self {
            Self::Classes(m) => m.loss.exp(),
            Self::Text(m) => m.perplexity,
            Self::Captions(m) => m.loss.exp(),
        }
    }

    pub fn value(&self, metric: MetricName) -> f64 {
        match metric {
            MetricName::Accuracy => self.accuracy(),
            MetricName::MacroF1 => self.macro_f1(),
            MetricName::Perplexity => self.perplexity(),
            MetricName::Loss => f64::NAN,
            MetricName::Bleu4 => match self {
                Self::Captions(m) => m.bleu[3],
                _ => f64::NAN,
            },
            MetricName::Cider => match self {
                Self::Captions(m) => m.cider_d,
                _ => f64::NAN,
            },
        }
    }
}

/// One training run of the comparison, tested.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub strategy: Plan,
    pub seed: u64,
    /// Training examples (after the validation split).
    pub train_examples: usize,
    /// `--train-sizes` entry, if sweeping.
    pub train_size: Option<usize>,
    pub dir: PathBuf,
    pub test: TestMetrics,
    pub steps: usize,
    pub cost: RunCost,
    pub curve: Vec<CurvePoint>,
    /// Seconds to test the exported model on the held-out set.
    pub test_seconds: f64,
}

impl RunRecord {
    pub fn score(&self, metric: MetricName) -> f64 {
        self.test.value(metric)
    }

    /// First validation at or better than `target` (at or above it, or at or
    /// below it for perplexity): (seconds, Wh).
    pub fn to_target(&self, target: f64, metric: MetricName) -> Option<(f64, f64)> {
        self.curve
            .iter()
            .find(|p| at_least(p.score(metric), target, metric))
            .map(|p| (p.seconds, p.energy_wh))
    }
}

/// `score` is as good as `target` or better, in `metric`'s direction.
pub fn at_least(score: f64, target: f64, metric: MetricName) -> bool {
    if metric.higher_is_better() {
        score >= target
    } else {
        score <= target
    }
}

/// Everything `compare` measured; `report.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Comparison {
    /// `--task`: text-classification, image-classification or causal-lm.
    #[serde(default = "default_task")]
    pub task: String,
    pub model: String,
    pub train_file: String,
    pub test_file: String,
    pub test_examples: usize,
    pub metric: MetricName,
    pub budget: Budget,
    pub seeds: usize,
    pub target: Option<f64>,
    pub strategies: Vec<Plan>,
    pub train_sizes: Vec<usize>,
    pub layers: usize,
    pub runs: Vec<RunRecord>,
    pub summary: Vec<Summary>,
    /// Language models: continuations of held-out prompts by each strategy.
    #[serde(default)]
    pub samples: Vec<Sample>,
    pub date: String,
}

fn default_task() -> String {
    crate::tasks::classification::TextClassification::NAME.to_string()
}

impl Comparison {
    /// Whether the runs are language models (scored by perplexity).
    pub fn is_language_model(&self) -> bool {
        self.task == CausalLanguageModelling::NAME
    }

    /// Whether the runs are captioners (scored by BLEU and CIDEr).
    pub fn is_captioning(&self) -> bool {
        self.task == crate::tasks::captioning::NAME
    }
}

/// One strategy at one training-set size, over seeds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub strategy: Plan,
    pub train_size: Option<usize>,
    pub train_examples: usize,
    pub score: MeanCi,
    pub accuracy: MeanCi,
    pub macro_f1: MeanCi,
    pub perplexity: MeanCi,
    /// Captioning: BLEU-4 and CIDEr-D on the test set.
    #[serde(default)]
    pub bleu4: MeanCi,
    #[serde(default)]
    pub cider: MeanCi,
    pub seconds: MeanCi,
    pub flops: MeanCi,
    pub energy_wh: MeanCi,
    pub co2_g: MeanCi,
    pub money: MeanCi,
    pub mfu: MeanCi,
    pub energy_measured: bool,
    /// Seeds that reached --target, and the mean time and energy they took.
    pub reached_target: usize,
    pub seconds_to_target: Option<f64>,
    pub wh_to_target: Option<f64>,
    pub cache_saved_seconds: f64,
    pub cache_saved_wh: f64,
}

/// Expands `scratch,head,freeze:0..L,full` for a model of `layers` layers.
pub fn parse_strategies(list: &str, layers: usize) -> Result<Vec<Plan>> {
    let mut out: Vec<Plan> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some(range) = item.strip_prefix("freeze:")
            && let Some((a, b)) = range.split_once("..")
        {
            let bound = |s: &str| -> Result<usize> {
                let s = s.trim().trim_start_matches('=');
                if s.eq_ignore_ascii_case("l") {
                    return Ok(layers);
                }
                s.parse()
                    .with_context(|| format!("`{item}`: `{s}` is not a layer count"))
            };
            let (a, b) = (bound(a)?, bound(b)?);
            if a > b {
                bail!("`{item}`: the range is empty");
            }
            for n in a..=b {
                out.push(Strategy::Freeze(n).into());
            }
        } else {
            out.push(item.parse()?);
        }
    }
    if out.is_empty() {
        bail!("--strategies is empty");
    }
    for s in &out {
        s.strategy.check(layers + 2)?;
    }
    let mut seen = Vec::new();
    out.retain(|s| {
        let new = !seen.contains(s);
        seen.push(*s);
        new
    });
    Ok(out)
}

fn run_name(strategy: Plan, size: Option<usize>, seed: usize) -> String {
    let s = strategy.to_string().replace([':', '.', '+'], "-");
    match size {
        Some(n) => format!("n{n}-{s}-seed{seed}"),
        None => format!("{s}-seed{seed}"),
    }
}

/// Runs the comparison and writes the report; returns it.
pub fn compare(
    base: &TrainConfig,
    opts: &CompareOptions,
    device: &Device,
    log: &mut dyn FnMut(&str),
) -> Result<Comparison> {
    let out = base
        .out
        .clone()
        .context("--out DIR is required: where the runs and the report go")?;
    if base.strategy != Strategy::Full {
        bail!("compare takes --strategies (a list), not --strategy");
    }
    if opts.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let is_lm = base.task == CausalLanguageModelling::NAME;
    let mut base = base.clone();
    if is_lm && base.metric == MetricName::Loss {
        // the same order as the loss, on the scale language models are read on
        base.metric = MetricName::Perplexity;
    }
    let base = &base;
    if base.metric == MetricName::Loss {
        bail!(
            "compare reports accuracy, macro-f1 or perplexity: use --metric accuracy, macro-f1 or perplexity"
        );
    }
    base.cost.check()?;
    let train_file = base
        .train
        .clone()
        .context("--train FILE is required: the data to train on")?;
    let model_dir = train::resolve_model(&base.model)?;
    let is_image = base.task == ImageClassification::NAME;
    let is_caption = base.task == crate::tasks::captioning::NAME;
    let ved = is_caption && layout::is_encoder_decoder(&model_dir);
    let groups = if is_lm {
        let family = crate::models::model_type(&model_dir)?;
        crate::with_causal_family!(family.as_str(), A => A::from_config_file(&model_dir.join("config.json"), device)?
            .groups()
            .len(), else bail!(
            "causal-lm compares language-model families ({}), not `{family}`",
            crate::models::causal::CAUSAL_FAMILIES.join(", ")
        ))
    } else if is_image || is_caption {
        // a VisionEncoderDecoderModel's encoder, from its captioner form
        let dir = if ved {
            layout::converted_captioner(&model_dir, &mut |l| eprintln!("{l}"))?
        } else {
            model_dir.clone()
        };
        let family = train::family_of(&dir, base.arch.as_deref())?;
        crate::with_image_family!(family.as_str(), A => A::from_config_file(&dir.join("config.json"), device)?
            .groups()
            .len(), else bail!(
            "image-classification compares image families ({}), not `{family}`",
            crate::models::vision::IMAGE_FAMILIES.join(", ")
        ))
    } else {
        Bert::from_config_file(&model_dir.join("config.json"), device)?
            .groups()
            .len()
    };
    let layers = groups - 2;
    let strategies = parse_strategies(&opts.strategies, layers)?;
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;

    // Held-out data: given, or a stratified split of the training file.
    let cols = Columns {
        text: &base.text_column,
        label: Some(&base.label_column),
        skip_bad_rows: base.skip_bad_rows,
    };
    // Images: a folder or a list, read as examples whose text is the path.
    let input_column = if is_image {
        &base.image_column
    } else {
        &base.text_column
    };
    let read_rows = |p: &Path| -> Result<Vec<Example>> {
        if is_lm {
            Ok(crate::data::corpus::read_documents(p, &base.text_column, base.skip_bad_rows)?.0)
        } else if is_image {
            Ok(crate::data::image_list::read(
                p,
                &base.image_column,
                &base.label_column,
                base.skip_bad_rows,
            )?
            .examples)
        } else {
            Ok(table::read_examples(p, &cols)?.examples)
        }
    };
    let caption_test = if is_caption {
        Some(captions::test_set(base, opts, &train_file, &out)?)
    } else {
        None
    };
    let (train_path, test_path, train_rows) = match &opts.test {
        Some(t) if is_caption => (
            train_file.clone(),
            t.clone(),
            caption_test.as_ref().map_or(0, |c| c.train_images),
        ),
        Some(t) => {
            let rows = read_rows(&train_file)?.len();
            (train_file.clone(), t.clone(), rows)
        }
        None => {
            let all = read_rows(&train_file)?;
            let (train_part, test_part) = stratified_split(all, 0.2, base.seed);
            let dir = out.join("data");
            let ext = if is_lm { "jsonl" } else { "csv" };
            let (a, b) = (
                dir.join(format!("train.{ext}")),
                dir.join(format!("test.{ext}")),
            );
            write_rows(&a, &train_part, is_lm, input_column, &base.label_column)?;
            write_rows(&b, &test_part, is_lm, input_column, &base.label_column)?;
            log(&format!(
                "held out {} of {} {} of {} as the test set ({})",
                test_part.len(),
                test_part.len() + train_part.len(),
                if is_lm { "documents" } else { "examples" },
                train_file.display(),
                b.display()
            ));
            (a, b, train_part.len())
        }
    };
    let mut test = match &caption_test {
        Some(_) => Vec::new(),
        None => read_rows(&test_path)?,
    };
    let mut test_path = match &caption_test {
        Some(c) => c.path.clone(),
        None => test_path,
    };
    if let Some(k) = opts.test_limit
        && k < test.len()
    {
        // A stratified, seeded subset, written out so the numbers can be checked.
        let fraction = k as f64 / test.len() as f64;
        test = stratified_split(test, fraction, base.seed).1;
        test_path = out.join("data").join(if is_lm {
            "test-subset.jsonl"
        } else {
            "test-subset.csv"
        });
        write_rows(&test_path, &test, is_lm, input_column, &base.label_column)?;
    }
    if test.is_empty() && caption_test.is_none() {
        bail!("the test set {} has no examples", test_path.display());
    }
    let test_examples = caption_test
        .as_ref()
        .map_or(test.len(), |c| c.set.images.len());

    let sizes: Vec<Option<usize>> = if opts.train_sizes.is_empty() {
        vec![base.train_limit]
    } else {
        let mut s = opts.train_sizes.clone();
        s.sort_unstable();
        s.dedup();
        s.into_iter().map(Some).collect()
    };
    let total = sizes.len() * strategies.len() * opts.seeds;
    let mut runs = Vec::new();
    // What a finished run's results depend on besides its settings: the
    // contents of the training and test files and the model's weights.
    let inputs = ReuseKey {
        train_sha256: sha256_files(&[&train_path])?,
        test_sha256: sha256_files(&[&test_path])?,
        test_limit: opts.test_limit,
        model_sha256: {
            let mut files = weight_files(&model_dir)?;
            if is_caption && !ved {
                files.extend(weight_files(&train::captioning::decoder_dir(base)?)?);
            }
            sha256_files(&files.iter().collect::<Vec<_>>())?
        },
        config: serde_json::Value::Null,
    };
    let mut k = 0;
    for &size in &sizes {
        for &strategy in &strategies {
            for seed in 0..opts.seeds {
                k += 1;
                let dir = out.join("runs").join(run_name(strategy, size, seed));
                let mut config = base.clone();
                config.strategy = strategy.strategy;
                if let Some(d) = strategy.decoder {
                    config.captioning.decoder_strategy = d;
                }
                config.seed = base.seed + seed as u64;
                config.train = Some(train_path.clone());
                config.train_limit = size;
                config.out = Some(dir.clone());
                apply_budget(&mut config, opts.budget);
                config.eval_every = Some(eval_every(&config, opts, train_rows));
                let key = ReuseKey {
                    config: serde_json::to_value(&config)?,
                    ..inputs.clone()
                };
                let record = match reuse(&dir, &key)? {
                    Some(r) => {
                        log(&format!(
                            "[{k}/{total}] {strategy}, seed {seed}{}: done before, reused",
                            size.map(|n| format!(", {n} examples")).unwrap_or_default()
                        ));
                        r
                    }
                    None => {
                        log(&format!(
                            "[{k}/{total}] {strategy}, seed {seed}{}: training ({})",
                            size.map(|n| format!(", {n} examples")).unwrap_or_default(),
                            opts.budget
                        ));
                        if dir.exists() {
                            std::fs::remove_dir_all(&dir).with_context(|| {
                                format!("cannot clear the unfinished run {}", dir.display())
                            })?;
                        }
                        let outcome = train::train(config.clone(), device, &mut train::Quiet)?;
                        let started = std::time::Instant::now();
                        let test_file = test_path.display().to_string();
                        let metrics = if let Some(c) = &caption_test {
                            TestMetrics::Captions(captions::test(
                                &outcome.model_dir,
                                c,
                                base,
                                device,
                            )?)
                        } else if is_lm {
                            TestMetrics::Text(
                                train::eval_lm::evaluate_lm(
                                    &outcome.model_dir,
                                    &test,
                                    &test_file,
                                    train::eval_lm::Rows::of_run(&dir),
                                    base.batch_size,
                                    device,
                                    &base.cost,
                                )?
                                .0,
                            )
                        } else if is_image {
                            TestMetrics::Classes(
                                train::eval_image::load_image_classifier(
                                    &outcome.model_dir,
                                    None,
                                    device,
                                )?
                                .evaluate(&test, &test_file, 32, device)?,
                            )
                        } else {
                            TestMetrics::Classes(
                                train::load_classifier(&outcome.model_dir, device)?
                                    .evaluate(&test, &test_file, 32, device)?,
                            )
                        };
                        let test_seconds = started.elapsed().as_secs_f64();
                        let record = RunRecord {
                            strategy,
                            seed: config.seed,
                            train_examples: read_run_examples(&dir)?,
                            train_size: size,
                            dir: dir.clone(),
                            test: metrics,
                            steps: outcome.state.step,
                            cost: outcome.cost,
                            curve: read_curve(&dir)?,
                            test_seconds,
                        };
                        write_json_atomic(&dir.join("test.json"), &record)?;
                        write_json_atomic(&dir.join("reuse.json"), &key)?;
                        if !opts.keep_checkpoints {
                            prune_finished(&dir)?;
                        }
                        record
                    }
                };
                let scores = match &record.test {
                    TestMetrics::Classes(m) => {
                        format!(
                            "test accuracy {:.4}, macro-F1 {:.4}",
                            m.accuracy, m.macro_f1
                        )
                    }
                    TestMetrics::Text(m) => format!(
                        "test perplexity {:.3}, next-token accuracy {:.4}",
                        m.perplexity, m.accuracy
                    ),
                    TestMetrics::Captions(m) => format!("test {}", m.describe()),
                };
                log(&format!(
                    "    {scores}; {:.1} s, {:.2} Wh, {:.3} TFLOP",
                    record.cost.seconds,
                    record.cost.energy.kwh * 1000.0,
                    record.cost.flops_total / 1e12
                ));
                runs.push(record);
            }
        }
    }

    let summary = summarise(&runs, &strategies, &sizes, base.metric, opts.target);
    let samples = if is_lm && opts.samples > 0 {
        log(&format!(
            "writing {} held-out continuations per strategy",
            opts.samples
        ));
        samples::lm_samples(&model_dir, &runs, &test, opts.samples, device)?
    } else if let Some(c) = &caption_test
        && opts.samples > 0
    {
        log(&format!(
            "captioning {} held-out images per pair",
            opts.samples
        ));
        captions::samples(&runs, c, opts.samples, &out, device)?
    } else {
        Vec::new()
    };
    let comparison = Comparison {
        task: base.task.clone(),
        model: base.model.clone(),
        train_file: train_file.display().to_string(),
        test_file: test_path.display().to_string(),
        test_examples,
        metric: base.metric,
        budget: opts.budget,
        seeds: opts.seeds,
        target: opts.target,
        strategies,
        train_sizes: opts.train_sizes.clone(),
        layers,
        runs,
        summary,
        samples,
        date: report::today(),
    };
    report::write(&comparison, &out)?;
    Ok(comparison)
}

/// Sets the run's limits from the budget. Time and energy budgets stop the
/// run when used up; its learning-rate schedule still spans the epochs of
/// `--epochs` (default the strategy's), so set those to about what fits.
fn apply_budget(config: &mut TrainConfig, budget: Budget) {
    match budget {
        Budget::Epochs(n) => config.epochs = Some(n),
        Budget::Steps(n) => config.max_steps = Some(n),
        Budget::Seconds(s) => config.max_seconds = Some(s),
        Budget::WattHours(w) => config.max_wh = Some(w),
    }
}

/// Validate often enough for `curve_points` points per run on `n` training rows.
fn eval_every(config: &TrainConfig, opts: &CompareOptions, n: usize) -> usize {
    let n = config.train_limit.map_or(n, |k| k.min(n));
    let n_train = if config.val.is_some() {
        n
    } else {
        n - (n as f64 * config.val_fraction).round() as usize
    };
    let per_epoch = n_train
        .div_ceil(config.batch_size.max(1))
        .div_ceil(config.grad_accum.max(1))
        .max(1);
    let total = match opts.budget {
        Budget::Steps(s) => s,
        Budget::Epochs(e) => e * per_epoch,
        _ => config.epochs.unwrap_or(3) * per_epoch,
    };
    (total / opts.curve_points.max(1)).max(1)
}

/// Training examples of a run: documents for a language model (its rows
/// are packed blocks), else examples.
fn read_run_examples(dir: &Path) -> Result<usize> {
    let rc: train::RunConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    Ok(rc
        .task_state
        .get("train_documents")
        .and_then(|n| n.as_u64())
        .map_or(rc.train_examples, |n| n as usize))
}

/// The validation points of a run's metrics.jsonl.
pub fn read_curve(dir: &Path) -> Result<Vec<CurvePoint>> {
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} has a line that is not JSON", path.display()))?;
        if let (Some(e), Some(t)) = (v.get("eval"), v.get("elapsed")) {
            let f = |x: &serde_json::Value, k: &str| x.get(k).and_then(|v| v.as_f64());
            out.push(CurvePoint {
                step: v.get("step").and_then(|s| s.as_u64()).unwrap_or(0) as usize,
                seconds: f(t, "seconds").unwrap_or(0.0),
                energy_wh: f(t, "energy_wh").unwrap_or(0.0),
                accuracy: f(e, "accuracy")
                    .or_else(|| f(e, "label_accuracy"))
                    .unwrap_or(f64::NAN),
                macro_f1: f(e, "macro_f1").unwrap_or(f64::NAN),
                perplexity: f(e, "perplexity")
                    .or_else(|| f(e, "loss").map(f64::exp))
                    .unwrap_or(f64::NAN),
                bleu4: e
                    .get("bleu")
                    .and_then(|b| b.get(3))
                    .and_then(|b| b.as_f64())
                    .unwrap_or(f64::NAN),
                cider: f(e, "cider_d").unwrap_or(f64::NAN),
            });
        }
    }
    Ok(out)
}

/// Writes the split `examples`: documents as JSONL with the text column
/// (language models), else a two-column CSV.
fn write_rows(
    path: &Path,
    examples: &[Example],
    documents: bool,
    text: &str,
    label: &str,
) -> Result<()> {
    if !documents {
        return write_csv(path, examples, text, label);
    }
    write_atomic(path, |w| {
        for e in examples {
            let mut row = serde_json::Map::new();
            row.insert(text.to_string(), e.text.clone().into());
            serde_json::to_writer(&mut *w, &row)?;
            std::io::Write::write_all(w, b"\n")?;
        }
        Ok(())
    })
}

/// Writes examples as a two-column CSV (atomically).
pub fn write_csv(path: &Path, examples: &[Example], text: &str, label: &str) -> Result<()> {
    write_atomic(path, |w| {
        let mut csv = csv::Writer::from_writer(w);
        csv.write_record([text, label])?;
        for e in examples {
            csv.write_record([e.text.as_str(), e.label.as_str()])?;
        }
        csv.flush()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A curve point of a task without accuracy or macro-F1 (captioning,
    /// language models) holds NaN, which JSON writes as null: it must read
    /// back, or a finished run's `test.json` does not parse and the run is
    /// trained again instead of reused.
    #[test]
    fn curve_points_without_a_metric_read_back_from_json() {
        let p = CurvePoint {
            step: 3,
            seconds: 1.5,
            energy_wh: 0.1,
            accuracy: f64::NAN,
            macro_f1: f64::NAN,
            perplexity: f64::NAN,
            bleu4: 0.25,
            cider: 1.0,
        };
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"macro_f1\":null"), "{json}");
        let back: CurvePoint = serde_json::from_str(&json).unwrap();
        assert!(back.accuracy.is_nan() && back.macro_f1.is_nan() && back.perplexity.is_nan());
        assert_eq!((back.step, back.bleu4, back.cider), (3, 0.25, 1.0));
    }

    #[test]
    fn strategy_lists_expand_freeze_ranges() {
        let s = parse_strategies("scratch, head,freeze:0..L,full", 3).unwrap();
        let names: Vec<String> = s.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            names,
            [
                "scratch", "head", "freeze:0", "freeze:1", "freeze:2", "freeze:3", "full"
            ]
        );
        assert_eq!(
            parse_strategies("freeze:1..2,freeze:2", 6).unwrap().len(),
            2
        );
        assert!(parse_strategies("freeze:2..9", 6).is_err());
        assert!(parse_strategies("freeze:3..1", 6).is_err());
        assert!(parse_strategies("", 6).is_err());
        assert!(parse_strategies("warp", 6).is_err());
    }

    #[test]
    fn metrics_a_task_lacks_are_nan_and_read_back_as_nan() {
        let p = CurvePoint {
            step: 3,
            seconds: 1.0,
            energy_wh: 0.1,
            accuracy: 0.5,
            macro_f1: 0.4,
            perplexity: f64::NAN,
            bleu4: f64::NAN,
            cider: f64::NAN,
        };
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"bleu4\":null"), "{json}");
        let back: CurvePoint = serde_json::from_str(&json).unwrap();
        assert!(back.bleu4.is_nan() && back.cider.is_nan() && back.perplexity.is_nan());
        assert_eq!(back.accuracy, 0.5);
        let m: MeanCi = serde_json::from_str(r#"{"mean":null,"ci":null,"n":0}"#).unwrap();
        assert!(m.mean.is_nan());
    }

    fn summary(strategy: Strategy, size: usize, score: f64) -> Summary {
        let m = MeanCi::of(&[score]);
        Summary {
            strategy: strategy.into(),
            train_size: Some(size),
            train_examples: size,
            score: m,
            accuracy: m,
            macro_f1: m,
            perplexity: m,
            bleu4: m,
            cider: m,
            seconds: m,
            flops: m,
            energy_wh: m,
            co2_g: m,
            money: m,
            mfu: m,
            energy_measured: false,
            reached_target: 0,
            seconds_to_target: None,
            wh_to_target: None,
            cache_saved_seconds: 0.0,
            cache_saved_wh: 0.0,
        }
    }

    #[test]
    fn data_multiplier_finds_the_size_scratch_needs() {
        let s = vec![
            summary(Strategy::Scratch, 100, 0.70),
            summary(Strategy::Full, 100, 0.90),
            summary(Strategy::Head, 100, 0.85),
            summary(Strategy::Scratch, 300, 0.85),
            summary(Strategy::Scratch, 1000, 0.91),
        ];
        let (best, smallest, m) = data_multiplier(&s, MetricName::Accuracy).unwrap();
        assert_eq!((best, smallest, m), (Strategy::Full.into(), 100, Ok(10.0)));
        let never = vec![
            summary(Strategy::Scratch, 100, 0.70),
            summary(Strategy::Full, 100, 0.90),
            summary(Strategy::Scratch, 300, 0.80),
        ];
        assert_eq!(
            data_multiplier(&never, MetricName::Accuracy).unwrap().2,
            Err(0.80)
        );
        assert!(
            data_multiplier(&s[..3], MetricName::Accuracy).is_none(),
            "one size is no sweep"
        );
        // perplexity: lower is better, for the best tuned one and for scratch
        let ppl = vec![
            summary(Strategy::Scratch, 100, 90.0),
            summary(Strategy::Full, 100, 12.0),
            summary(Strategy::Head, 100, 20.0),
            summary(Strategy::Scratch, 300, 30.0),
            summary(Strategy::Scratch, 1000, 11.5),
        ];
        assert_eq!(
            data_multiplier(&ppl, MetricName::Perplexity).unwrap(),
            (Strategy::Full.into(), 100, Ok(10.0))
        );
        assert_eq!(
            data_multiplier(&ppl[..4], MetricName::Perplexity)
                .unwrap()
                .2,
            Err(30.0)
        );
    }
}
