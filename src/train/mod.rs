//! The training loop for text classification, top to bottom: configuration,
//! data, model, optimizer, loop, evaluation, checkpoint, resume, export.
//!
//! A run directory holds `config.json` (every setting used), `metrics.jsonl`,
//! `checkpoints/` (the last complete one named by `checkpoints/LAST`),
//! `best/` (the weights with the best validation score) and `model/` (the
//! exported Hugging Face directory).

pub mod cache;
pub mod optim;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::cost::flops::BertShape;
use crate::cost::run::{CostOptions, FlopCount, Phases, RunCost};
use crate::data::table::{self, Columns, Example};
use crate::fsutil::{write_atomic, write_json_atomic};
use crate::hub::{Checkpoint, read_safetensors, write_safetensors};
use crate::models::bert::{BertClassifier, BertConfig, BertInput};
use crate::models::params::{NamedTensors, ParamBuilder, SeededRng, host};
use crate::strategy::Strategy;
use crate::tasks::classification::{LabelMap, MetricName, Metrics};
use crate::tokenize::{Encoded, TOKENIZER_FILES, TextTokenizer, pad_batch};
use cache::{CacheDtype, CacheMode, CacheReport, Features, KeyHasher, Positions};
use optim::{AdamW, AdamWConfig, Decay, GradAccumulator, schedule};

/// Every setting of a training run; saved as the run's `config.json`.
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
pub struct TrainConfig {
    /// The task; text-classification for now.
    #[arg(long, default_value = "text-classification")]
    pub task: String,
    /// Pretrained model: HF directory, hub id or packaged short name.
    #[arg(long, default_value = "all-MiniLM-L6-v2")]
    pub model: String,
    /// scratch | full | freeze:N | head | lr-decay:F | gradual
    #[arg(long, default_value = "full", value_parser = parse_strategy)]
    pub strategy: Strategy,
    /// Training data (.csv, .tsv or .jsonl).
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// Validation data; without it, --val-fraction of the training data (stratified, seeded).
    #[arg(long)]
    pub val: Option<PathBuf>,
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    #[arg(long, default_value = "text")]
    pub text_column: String,
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// Skip rows with a missing text or label (counted) instead of stopping.
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// Use only this many training examples (a seeded random subset).
    #[arg(long)]
    pub train_limit: Option<usize>,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Epochs (default: the strategy's, 3).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop after this many optimizer steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Peak learning rate (default: the strategy's).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Fraction of the steps spent warming up linearly (default: the strategy's).
    #[arg(long)]
    pub warmup_ratio: Option<f64>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    #[arg(long, value_enum, default_value = "linear")]
    pub schedule: Decay,
    /// Clip gradients to this global L2 norm (0 turns clipping off).
    #[arg(long, default_value_t = 1.0)]
    pub clip_norm: f64,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    #[arg(long, default_value_t = 128)]
    pub max_length: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Validate every K optimizer steps as well as at each epoch's end.
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Metric for the best checkpoint and early stopping.
    #[arg(long, value_enum, default_value = "accuracy")]
    pub metric: MetricName,
    /// Stop after this many validations without improvement.
    #[arg(long)]
    pub patience: Option<usize>,
    /// Write a resumable checkpoint every K optimizer steps (and at the end of
    /// each epoch that ends a minute or more after the last checkpoint, and at the end).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Run directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Compute what frozen layers output once and train from it:
    /// auto (in memory within --cache-memory-mb, else on disk) | off | memory | disk.
    #[arg(long, value_enum, default_value = "auto")]
    #[serde(default)]
    pub feature_cache: CacheMode,
    /// Where feature-cache files go (default: $HEADSTART_HOME/feature-cache).
    #[arg(long)]
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Memory the feature cache may hold before it goes to disk, in MB.
    #[arg(long, default_value_t = 2048)]
    #[serde(default = "default_cache_memory_mb")]
    pub cache_memory_mb: u64,
    /// Dtype of feature-cache files: f32 (exact) or f16 (half the size).
    #[arg(long, value_enum, default_value = "f32")]
    #[serde(default)]
    pub cache_dtype: CacheDtype,
    /// Size cap of the feature-cache directory, in GB: after writing a new
    /// file, the least recently used others are deleted until it fits.
    #[arg(long, default_value_t = cache::DEFAULT_MAX_BYTES as f64 / 1e9)]
    #[serde(default = "default_cache_max_gb")]
    pub cache_max_gb: f64,
    /// Stop (validate, checkpoint, export) once the run has taken this many seconds.
    #[arg(long)]
    #[serde(default)]
    pub max_seconds: Option<f64>,
    /// Stop once the run has used this much energy, in Wh.
    #[arg(long)]
    #[serde(default)]
    pub max_wh: Option<f64>,
    #[command(flatten)]
    #[serde(default)]
    pub cost: CostOptions,
}

impl Default for TrainConfig {
    /// The command line's defaults.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            config: TrainConfig,
        }
        <Cli as clap::Parser>::parse_from(["headstart"]).config
    }
}

fn default_cache_memory_mb() -> u64 {
    2048
}

fn default_cache_max_gb() -> f64 {
    cache::DEFAULT_MAX_BYTES as f64 / 1e9
}

/// `--strategy` as clap parses it.
pub fn parse_strategy(s: &str) -> std::result::Result<Strategy, String> {
    s.parse().map_err(|e: anyhow::Error| e.to_string())
}

/// Settings with the strategy's defaults filled in.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Resolved {
    pub lr: f64,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub epochs: usize,
    pub steps_per_epoch: usize,
    pub total_steps: usize,
    pub warmup_steps: usize,
}

/// What `config.json` of a run holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    pub config: TrainConfig,
    pub resolved: Resolved,
    pub labels: LabelMap,
    pub model_dir: PathBuf,
    pub train_examples: usize,
    pub val_examples: usize,
    pub skipped_rows: usize,
}

/// Where a run stands; saved with every checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: usize,
    pub epoch: usize,
    /// Next micro-batch within `epoch`.
    pub batch_in_epoch: usize,
    pub best_score: Option<f64>,
    pub best_step: Option<usize>,
    pub evals_since_best: usize,
    pub stopped_early: bool,
    /// Which budget (--max-seconds, --max-wh) ended the run, if one did.
    #[serde(default)]
    pub budget_reached: Option<String>,
    pub optimizer_steps: std::collections::BTreeMap<String, u64>,
}

/// How much the loop prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
}

pub struct TrainOutcome {
    pub run_dir: PathBuf,
    pub model_dir: PathBuf,
    pub best_val: Option<Metrics>,
    pub state: TrainState,
    pub seconds: f64,
    /// The feature caches the run used (one per freeze boundary).
    pub caches: Vec<CacheUse>,
    /// Time, FLOPs, energy, CO2 and money of this process's part of the run.
    pub cost: RunCost,
}

/// A feature cache as one run used it.
#[derive(Clone, Debug, Serialize)]
pub struct CacheUse {
    /// Frozen layer groups below the cached output.
    pub boundary: usize,
    pub train: CacheReport,
    pub val: CacheReport,
    /// Training micro-batches and validations served from the cache.
    pub train_batches: usize,
    pub val_passes: usize,
    /// Micro-batches in one epoch.
    pub batches_per_epoch: usize,
}

impl CacheUse {
    /// Seconds the cache saved: each pass it served would have recomputed
    /// the frozen prefix (its compute time), less what building or reading
    /// it cost. An estimate: a step's frozen forward is timed as the build's.
    pub fn seconds_saved(&self) -> f64 {
        let train_passes = self.train_batches as f64 / self.batches_per_epoch.max(1) as f64;
        train_passes * self.train.compute_seconds
            + self.val_passes as f64 * self.val.compute_seconds
            - self.train.seconds
            - self.val.seconds
    }
}

/// The feature cache in use: the boundary it was computed at and both splits.
struct ActiveCache {
    use_: CacheUse,
    train: Features,
    val: Features,
}

/// Tokenised examples with label ids.
struct Split {
    items: Vec<Encoded>,
    labels: Vec<usize>,
}

/// Starts a run (`resume` None) or continues one from its last checkpoint.
pub fn train(
    config: Option<TrainConfig>,
    resume: Option<&Path>,
    verbosity: Verbosity,
) -> Result<TrainOutcome> {
    let started = Instant::now();
    let log = |msg: &str| {
        if verbosity != Verbosity::Quiet {
            eprintln!("{msg}");
        }
    };
    let mut phases = Phases::default();
    let mut flops = FlopCount::default();
    let mut phase = Instant::now();
    // 1. configuration
    let (run_dir, run_config, resume_from) = match resume {
        Some(dir) => {
            let path = dir.join("config.json");
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot resume: {} is not a run directory (no config.json)",
                    dir.display()
                )
            })?;
            let rc: RunConfig = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a run configuration", path.display()))?;
            let last = last_checkpoint(dir)?;
            (dir.to_path_buf(), Some(rc), last)
        }
        None => {
            let c = config.as_ref().context("no configuration")?;
            let out = c
                .out
                .clone()
                .context("--out DIR is required: where the run goes")?;
            if out.join("config.json").exists() {
                bail!(
                    "{} already holds a run; continue it with --resume {} or choose another --out",
                    out.display(),
                    out.display()
                );
            }
            (out, None, None)
        }
    };
    let config = match &run_config {
        Some(rc) => rc.config.clone(),
        None => config.context("no configuration")?,
    };
    let meter = config.cost.start_meter()?;
    if config.task != "text-classification" {
        bail!(
            "task `{}` is not supported yet (text-classification)",
            config.task
        );
    }
    if config.batch_size == 0 || config.grad_accum == 0 {
        bail!("--batch-size and --grad-accum must be at least 1");
    }

    // 2. data
    let model_dir = match &run_config {
        Some(rc) => rc.model_dir.clone(),
        None => crate::find_model(&config.model)?,
    };
    let bert_config = BertConfig::from_file(&model_dir.join("config.json"))?;
    config.strategy.check(bert_config.num_hidden_layers)?;
    if config.max_length > bert_config.max_position_embeddings {
        bail!(
            "--max-length {} exceeds the model's max_position_embeddings ({})",
            config.max_length,
            bert_config.max_position_embeddings
        );
    }
    let mut tokenizer = TextTokenizer::from_dir(&model_dir)?;
    let (train_examples, val_examples, skipped) = read_data(&config)?;
    let labels = match &run_config {
        Some(rc) => rc.labels.clone(),
        None => LabelMap::from_examples(&train_examples)?,
    };
    let train_file = config
        .train
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let val_file = config
        .val
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| train_file.clone());
    let train_split = tokenise(
        &mut tokenizer,
        &train_examples,
        &labels,
        &train_file,
        config.max_length,
    )?;
    let val_split = tokenise(
        &mut tokenizer,
        &val_examples,
        &labels,
        &val_file,
        config.max_length,
    )?;

    phases.data += lap(&mut phase);
    // 3. schedule
    let defaults = config.strategy.defaults();
    let micro_per_epoch = train_split.items.len().div_ceil(config.batch_size);
    let steps_per_epoch = micro_per_epoch.div_ceil(config.grad_accum);
    let epochs = config.epochs.unwrap_or(defaults.epochs);
    let total_steps = config
        .max_steps
        .unwrap_or(usize::MAX)
        .min(epochs * steps_per_epoch);
    let warmup_ratio = config.warmup_ratio.unwrap_or(defaults.warmup_ratio);
    let resolved = Resolved {
        lr: config.lr.unwrap_or(defaults.lr),
        warmup_ratio,
        weight_decay: config.weight_decay.unwrap_or(defaults.weight_decay),
        epochs,
        steps_per_epoch,
        total_steps,
        warmup_steps: (warmup_ratio * total_steps as f64).round() as usize,
    };
    let run_config = RunConfig {
        config: config.clone(),
        resolved: resolved.clone(),
        labels: labels.clone(),
        model_dir: model_dir.clone(),
        train_examples: train_split.items.len(),
        val_examples: val_split.items.len(),
        skipped_rows: skipped,
    };
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
    if resume.is_none() {
        write_json_atomic(&run_dir.join("config.json"), &run_config)?;
    }
    log(&format!(
        "{} on {} training / {} validation examples, labels {}; {} epochs x {} steps, lr {:.1e}, warmup {} steps{}",
        config.strategy,
        train_split.items.len(),
        val_split.items.len(),
        labels.labels.join(", "),
        epochs,
        steps_per_epoch,
        resolved.lr,
        resolved.warmup_steps,
        if skipped > 0 {
            format!("; {skipped} bad rows skipped")
        } else {
            String::new()
        }
    ));

    // 4. model and optimizer
    let device = crate::compute_device()?;
    let train_device = device.clone().autodiff();
    let layers = bert_config.num_hidden_layers;
    let mut store = WeightStore::new(config.strategy, layers, epochs, &model_dir);
    let (mut model, mut state, mut opt) = match &resume_from {
        Some(ckpt_dir) => {
            let (checkpoint, base_hash) = load_weights(ckpt_dir, layers)?;
            store.base_hash = base_hash;
            let mut builder = ParamBuilder::pretrained(&checkpoint, &train_device, config.seed);
            let model = BertClassifier::build(&bert_config, &mut builder, labels.len())?;
            let state: TrainState = read_json(&ckpt_dir.join("state.json"))?;
            let opt_tensors = read_safetensors(&ckpt_dir.join("optimizer.safetensors"))?;
            let opt = AdamW::import(
                adamw_config(&resolved),
                &opt_tensors,
                &state.optimizer_steps,
                &train_device,
            )?;
            truncate_metrics(&run_dir.join("metrics.jsonl"), state.step)?;
            log(&format!(
                "resuming {} at step {} (epoch {}, batch {})",
                run_dir.display(),
                state.step,
                state.epoch + 1,
                state.batch_in_epoch
            ));
            (model, state, opt)
        }
        None => {
            let model = if config.strategy.uses_pretrained_weights() {
                let checkpoint = Checkpoint::load(&model_dir)?;
                let mut builder = ParamBuilder::pretrained(&checkpoint, &train_device, config.seed);
                let model = BertClassifier::build(&bert_config, &mut builder, labels.len())?;
                for line in builder.finish().lines() {
                    log(&line);
                }
                store.hash_base(checkpoint, layers);
                model
            } else {
                let mut builder = ParamBuilder::scratch(&train_device, config.seed);
                let model = BertClassifier::build(&bert_config, &mut builder, labels.len())?;
                for line in builder.finish().lines() {
                    log(&line);
                }
                model
            };
            let _ = std::fs::remove_file(run_dir.join("metrics.jsonl"));
            (
                model,
                TrainState::default(),
                AdamW::new(adamw_config(&resolved)),
            )
        }
    };

    if store.saved.is_some() && store.base_hash.is_none() {
        // resumed from a complete checkpoint of a frozen strategy
        store.hash_base(Checkpoint::load(&model_dir)?, layers);
    }
    let store = store;
    phases.load += lap(&mut phase);
    // 5. the loop
    let shape = BertShape {
        layers,
        hidden: bert_config.hidden_size,
        ffn: bert_config.intermediate_size,
        labels: labels.len(),
    };
    let val_lengths: Vec<usize> = val_split.items.iter().map(|e| e.ids.len()).collect();
    let lr_scale = config.strategy.lr_scale(layers);
    let mut metrics_log = MetricsLog::open(&run_dir.join("metrics.jsonl"))?;
    let mut progress = Progress::new(verbosity, resolved.total_steps);
    let abort_after: Option<usize> = std::env::var("HEADSTART_ABORT_AFTER_STEP")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut best_val: Option<Metrics> = None;
    let mut acc = GradAccumulator::default();
    let mut best_pending: Option<(NamedTensors, Metrics)> = None;
    let mut last_checkpoint_at = Instant::now();
    let mut active: Option<ActiveCache> = None;
    let mut caches: Vec<CacheUse> = Vec::new();
    'epochs: while state.epoch < epochs
        && state.step < total_steps
        && !state.stopped_early
        && state.budget_reached.is_none()
    {
        let epoch = state.epoch;
        let trainable = config.strategy.trainable(layers, epoch);
        let frozen_prefix = trainable.iter().take_while(|t| !**t).count();
        model = apply_freeze(model, &trainable);
        if cache_wanted(&config, frozen_prefix) {
            if active.as_ref().map(|c| c.use_.boundary) != Some(frozen_prefix) {
                caches.extend(active.take().map(|c| c.use_));
                phases.train += lap(&mut phase);
                let c = build_cache(
                    &model,
                    &bert_config,
                    &model_dir,
                    &config,
                    frozen_prefix,
                    [&train_split, &val_split],
                    tokenizer.pad_id,
                    micro_per_epoch,
                    &device,
                )?;
                log(&c.describe());
                for (report, split) in [(&c.use_.train, &train_split), (&c.use_.val, &val_split)] {
                    if report.built {
                        flops.feature_cache += split
                            .items
                            .iter()
                            .map(|e| shape.prefix_forward(1, e.ids.len(), frozen_prefix))
                            .sum::<f64>();
                    }
                }
                phases.feature_cache += lap(&mut phase);
                active = Some(c);
            }
        } else {
            caches.extend(active.take().map(|c| c.use_));
        }
        let order = epoch_order(train_split.items.len(), config.seed, epoch);
        let batches: Vec<&[usize]> = order.chunks(config.batch_size).collect();
        let mut step_started = Instant::now();
        let mut step_samples = 0usize;
        let mut step_loss = 0.0;
        while state.batch_in_epoch < batches.len() {
            let bi = state.batch_in_epoch;
            let chunk = batches[bi];
            // Dropout masks depend on (seed, position) only, so a resumed run
            // draws exactly the masks the uninterrupted one would have.
            train_device.seed(
                config
                    .seed
                    .wrapping_mul(0x9E37_79B9)
                    .wrapping_add((epoch * micro_per_epoch + bi) as u64),
            );
            let targets = batch_targets(&train_split, chunk, &train_device);
            let seq = chunk
                .iter()
                .map(|&i| train_split.items[i].ids.len())
                .max()
                .unwrap_or(0);
            flops.train += if active.is_some() {
                shape.train_step_cached(chunk.len(), seq, &trainable)
            } else {
                shape.train_step(chunk.len(), seq, &trainable)
            };
            let logits = match active.as_mut() {
                Some(c) => {
                    c.use_.train_batches += 1;
                    model.forward_from_frozen(c.train.batch(chunk, &train_device), frozen_prefix)
                }
                None => {
                    let input = batch_input(&train_split, chunk, tokenizer.pad_id, &train_device);
                    model.forward_frozen_prefix(&input, frozen_prefix)
                }
            };
            let loss = cross_entropy(logits, targets);
            let loss_value = host(&loss).1[0] as f64;
            let mut grads = (loss / config.grad_accum as f64).backward();
            acc.add(&model, &mut grads);
            step_loss += loss_value;
            step_samples += chunk.len();
            state.batch_in_epoch += 1;
            let micro_in_step = (bi + 1) % config.grad_accum;
            if micro_in_step != 0 && state.batch_in_epoch < batches.len() {
                continue;
            }
            // optimizer step
            let grad_norm = acc.global_norm();
            let scale = if config.clip_norm > 0.0 && grad_norm > config.clip_norm {
                config.clip_norm / (grad_norm + 1e-6)
            } else {
                1.0
            };
            let factor = schedule(
                state.step,
                resolved.warmup_steps,
                resolved.total_steps,
                config.schedule,
            );
            let lr = resolved.lr * factor;
            let lr_of = |path: &str| lr * lr_scale[group_of(path, layers)];
            model = opt.step(model, &mut acc, &lr_of, scale);
            state.step += 1;
            let secs = step_started.elapsed().as_secs_f64();
            let micro = if micro_in_step == 0 {
                config.grad_accum
            } else {
                micro_in_step
            };
            let line = StepLine {
                step: state.step,
                epoch: epoch as f64 + state.batch_in_epoch as f64 / batches.len() as f64,
                loss: step_loss / micro as f64,
                lr,
                grad_norm,
                samples_per_s: step_samples as f64 / secs.max(1e-9),
            };
            metrics_log.write(&serde_json::to_value(&line)?)?;
            progress.step(&line, epoch + 1, epochs);
            step_started = Instant::now();
            step_samples = 0;
            step_loss = 0.0;

            let end_of_epoch = state.batch_in_epoch == batches.len();
            if state.budget_reached.is_none() {
                state.budget_reached = budget_reached(&config, &started, &meter);
            }
            let out_of_budget = state.budget_reached.is_some();
            let eval_now = out_of_budget
                || end_of_epoch
                || config
                    .eval_every
                    .is_some_and(|k| state.step.is_multiple_of(k))
                || state.step == total_steps;
            if eval_now {
                phases.train += lap(&mut phase);
                let skip = if active.is_some() { frozen_prefix } else { 0 };
                flops.eval += eval_flops(&shape, &val_lengths, config.batch_size, skip);
                let m = match active.as_mut() {
                    Some(c) => {
                        c.use_.val_passes += 1;
                        evaluate_cached(
                            &model,
                            &c.val,
                            &val_split,
                            &labels,
                            config.batch_size,
                            frozen_prefix,
                            &device,
                        )
                    }
                    None => evaluate(
                        &model,
                        &val_split,
                        &labels,
                        config.batch_size,
                        tokenizer.pad_id,
                        &device,
                    ),
                };
                progress.clear();
                log(&format!(
                    "step {} (epoch {}): validation accuracy {:.4}, macro-F1 {:.4}, loss {:.4}",
                    state.step,
                    epoch + 1,
                    m.accuracy,
                    m.macro_f1,
                    m.loss
                ));
                phases.eval += lap(&mut phase);
                metrics_log.write(&serde_json::json!({
                    "step": state.step,
                    "epoch": line.epoch,
                    "eval": {"accuracy": m.accuracy, "macro_f1": m.macro_f1, "loss": m.loss},
                    "elapsed": {
                        "seconds": started.elapsed().as_secs_f64(),
                        "energy_wh": meter.snapshot().total_kwh * 1000.0,
                    },
                }))?;
                let score = m.score(config.metric);
                if state.best_score.is_none_or(|b| score > b) {
                    state.best_score = Some(score);
                    state.best_step = Some(state.step);
                    state.evals_since_best = 0;
                    // Written with the next checkpoint, so best/ always
                    // matches the state a resume starts from.
                    best_pending = Some((store.tensors(&model), m.clone()));
                    best_val = Some(m);
                } else {
                    state.evals_since_best += 1;
                    if config.patience.is_some_and(|p| state.evals_since_best >= p) {
                        log(&format!(
                            "early stopping: no better {:?} in {} validations",
                            config.metric, state.evals_since_best
                        ));
                        state.stopped_early = true;
                    }
                }
            }
            if end_of_epoch {
                state.epoch += 1;
                state.batch_in_epoch = 0;
            }
            // Epoch ends checkpoint unless the last checkpoint is recent:
            // epochs trained from a feature cache take well under a second.
            let ckpt_now = (end_of_epoch
                && last_checkpoint_at.elapsed().as_secs_f64() >= EPOCH_CHECKPOINT_INTERVAL_S)
                || out_of_budget
                || state.stopped_early
                || state.step == total_steps
                || config
                    .checkpoint_every
                    .is_some_and(|k| state.step.is_multiple_of(k));
            if ckpt_now {
                phases.train += lap(&mut phase);
                if let Some((tensors, m)) = best_pending.take() {
                    store.write(&tensors, &run_dir.join("best"))?;
                    write_json_atomic(&run_dir.join("best").join("metrics.json"), &m)?;
                }
                save_checkpoint(&run_dir, &store, &model, &opt, &mut state)?;
                last_checkpoint_at = Instant::now();
                phases.checkpoint += lap(&mut phase);
            }
            if abort_after == Some(state.step) {
                // Test hook: die like a killed process, with no cleanup.
                std::process::abort();
            }
            if let Some(why) = &state.budget_reached
                && out_of_budget
            {
                log(&format!(
                    "budget reached: {why}; stopping at step {}",
                    state.step
                ));
                break 'epochs;
            }
            if state.stopped_early || state.step >= total_steps {
                break 'epochs;
            }
            if end_of_epoch {
                break;
            }
        }
    }
    progress.clear();
    phases.train += lap(&mut phase);
    if let Some((tensors, m)) = best_pending.take() {
        store.write(&tensors, &run_dir.join("best"))?;
        write_json_atomic(&run_dir.join("best").join("metrics.json"), &m)?;
        phases.checkpoint += lap(&mut phase);
    }
    caches.extend(active.take().map(|c| c.use_));
    if best_val.is_none() && run_dir.join("best").join("metrics.json").exists() {
        best_val = Some(read_json(&run_dir.join("best").join("metrics.json"))?);
    }

    // 6. export the best weights (or the last, if never validated)
    let export_dir = run_dir.join("model");
    let best_dir = run_dir.join("best");
    if best_dir.join("model.safetensors").exists() {
        let (checkpoint, _) = load_weights(&best_dir, layers)?;
        let mut builder = ParamBuilder::pretrained(&checkpoint, &device, 0);
        model = BertClassifier::build(&bert_config, &mut builder, labels.len())?;
    }
    export(&model, &model_dir, &export_dir, &labels, &config)?;
    phases.export += lap(&mut phase);
    let seconds = started.elapsed().as_secs_f64();
    let saved: f64 = caches.iter().map(CacheUse::seconds_saved).sum();
    let cost = RunCost::new(
        &config.cost,
        seconds,
        phases,
        flops,
        crate::compute_peak(),
        meter.stop(),
        saved,
    )?;
    cost.save(&run_dir, &config.cost)?;
    for line in cost.summary_lines() {
        log(&line);
    }
    log(&format!(
        "done in {seconds:.1} s; model in {}, metrics in {}, cost in {}",
        export_dir.display(),
        run_dir.join("metrics.jsonl").display(),
        run_dir.join("cost.json").display()
    ));
    Ok(TrainOutcome {
        run_dir,
        model_dir: export_dir,
        best_val,
        state,
        seconds,
        caches,
        cost,
    })
}

fn adamw_config(r: &Resolved) -> AdamWConfig {
    AdamWConfig {
        weight_decay: r.weight_decay,
        ..AdamWConfig::default()
    }
}

/// Layer group of a parameter: 0 embeddings, i + 1 encoder layer i, layers + 1
/// the head (pooler and classifier). Takes module paths (`bert.layers.3.query.weight`)
/// and checkpoint keys (`bert.encoder.layer.3.attention.self.query.weight`).
pub fn group_of(path: &str, layers: usize) -> usize {
    let path = path.strip_prefix("bert.").unwrap_or(path);
    if path.starts_with("embeddings") {
        0
    } else if let Some(rest) = path
        .strip_prefix("layers.")
        .or_else(|| path.strip_prefix("encoder.layer."))
    {
        rest.split('.')
            .next()
            .and_then(|i| i.parse::<usize>().ok())
            .map_or(layers + 1, |i| i + 1)
    } else {
        layers + 1
    }
}

/// Freezes (no gradient, inference mode) or unfreezes each layer group.
pub fn apply_freeze(mut model: BertClassifier, trainable: &[bool]) -> BertClassifier {
    fn set<M: Module>(m: M, train: bool) -> M {
        if train { m.unfreeze() } else { m.freeze() }
    }
    let layers = model.bert.layers.len();
    model.bert.embeddings = set(model.bert.embeddings, trainable[0]);
    model.bert.layers = model
        .bert
        .layers
        .into_iter()
        .enumerate()
        .map(|(i, l)| set(l, trainable[i + 1]))
        .collect();
    let head = trainable[layers + 1];
    model.bert.pooler = model.bert.pooler.map(|p| set(p, head));
    model.dropout = set(model.dropout, head);
    model.classifier = set(model.classifier, head);
    model
}

/// A permutation of 0..n that depends only on the seed and the epoch.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = SeededRng::new(seed ^ (epoch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// An epoch's end writes a checkpoint when the last one is at least this old.
const EPOCH_CHECKPOINT_INTERVAL_S: f64 = 60.0;

/// Seconds since `*t`, and restarts it.
fn lap(t: &mut Instant) -> f64 {
    let s = t.elapsed().as_secs_f64();
    *t = Instant::now();
    s
}

/// Which budget, if any, the run has used up.
fn budget_reached(
    config: &TrainConfig,
    started: &Instant,
    meter: &crate::cost::energy::EnergyMeter,
) -> Option<String> {
    let secs = started.elapsed().as_secs_f64();
    if let Some(max) = config.max_seconds
        && secs >= max
    {
        return Some(format!("{secs:.0} s of --max-seconds {max}"));
    }
    if let Some(max) = config.max_wh {
        let wh = meter.snapshot().total_kwh * 1000.0;
        if wh >= max {
            return Some(format!("{wh:.2} Wh of --max-wh {max}"));
        }
    }
    None
}

fn batch_input(split: &Split, idx: &[usize], pad_id: u32, device: &Device) -> BertInput {
    let items: Vec<&Encoded> = idx.iter().map(|&i| &split.items[i]).collect();
    BertInput::from_batch(&pad_batch(&items, pad_id), device)
}

fn batch_targets(split: &Split, idx: &[usize], device: &Device) -> Tensor<1, Int> {
    let y: Vec<i64> = idx.iter().map(|&i| split.labels[i] as i64).collect();
    let n = y.len();
    Tensor::from_data(TensorData::new(y, [n]), device)
}

/// Whether this epoch trains from a feature cache: there is a frozen prefix
/// and the cache is not off. `auto` leaves `gradual` alone: its boundary
/// moves every epoch, so a cache would be used for one epoch and thrown away.
fn cache_wanted(config: &TrainConfig, frozen_prefix: usize) -> bool {
    frozen_prefix > 0
        && match config.feature_cache {
            CacheMode::Off => false,
            CacheMode::Auto => config.strategy != Strategy::Gradual,
            CacheMode::Memory | CacheMode::Disk => true,
        }
}

/// Computes (or reads) the frozen prefix's output for the training and
/// validation splits. The key covers what the values depend on; see
/// [`cache`].
#[allow(clippy::too_many_arguments)]
fn build_cache(
    model: &BertClassifier,
    bert_config: &BertConfig,
    model_dir: &Path,
    config: &TrainConfig,
    frozen: usize,
    splits: [&Split; 2],
    pad_id: u32,
    batches_per_epoch: usize,
    device: &Device,
) -> Result<ActiveCache> {
    let layers = bert_config.num_hidden_layers;
    let plain = model.valid();
    let positions = if frozen > layers {
        Positions::First
    } else {
        Positions::All
    };
    let key = cache_key(&plain, bert_config, model_dir, config, frozen, positions)?;
    let dir = config
        .cache_dir
        .clone()
        .unwrap_or_else(|| crate::assets::home().join("feature-cache"));
    let mut reports = Vec::new();
    let mut features = Vec::new();
    for split in splits {
        let examples: Vec<(&[u32], &[u32])> = split
            .items
            .iter()
            .map(|e| (e.ids.as_slice(), e.type_ids.as_slice()))
            .collect();
        let req = cache::Request {
            mode: config.feature_cache,
            dir: &dir,
            dtype: config.cache_dtype,
            memory_budget: config.cache_memory_mb * 1_000_000,
            max_bytes: (config.cache_max_gb.max(0.0) * 1e9) as u64,
            key: key.clone().examples(&examples).hex(),
            positions,
            hidden: bert_config.hidden_size,
            lengths: split.items.iter().map(|e| e.ids.len()).collect(),
        };
        let (f, report) = cache::get_or_build(&req, 32, |idx| {
            let input = batch_input(split, idx, pad_id, device);
            let x = plain.frozen_output(&input, frozen);
            Ok(match positions {
                Positions::First => host(&plain.first_token(x)).1,
                Positions::All => host(&x).1,
            })
        })?;
        reports.push(report);
        features.push(f);
    }
    let val = features.pop().unwrap();
    let train = features.pop().unwrap();
    let val_report = reports.pop().unwrap();
    let train_report = reports.pop().unwrap();
    Ok(ActiveCache {
        use_: CacheUse {
            boundary: frozen,
            train: train_report,
            val: val_report,
            train_batches: 0,
            val_passes: 0,
            batches_per_epoch,
        },
        train,
        val,
    })
}

/// What the frozen prefix's output depends on, short of the examples.
fn cache_key(
    plain: &BertClassifier,
    bert_config: &BertConfig,
    model_dir: &Path,
    config: &TrainConfig,
    frozen: usize,
    positions: Positions,
) -> Result<KeyHasher> {
    let mut key = KeyHasher::default();
    key.field("architecture", format!("{bert_config:?}").as_bytes())
        .field("boundary", &(frozen as u64).to_le_bytes())
        .field("positions", format!("{positions:?}").as_bytes())
        .field("max_length", &(config.max_length as u64).to_le_bytes())
        .field("dtype", format!("{:?}", config.cache_dtype).as_bytes());
    for (name, shape, values) in plain.export_groups(&|g| g < frozen) {
        key.tensor(&name, &shape, &values);
    }
    for file in TOKENIZER_FILES {
        let path = model_dir.join(file);
        if path.is_file() {
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            key.field(file, &bytes);
        }
    }
    Ok(key)
}

impl ActiveCache {
    fn describe(&self) -> String {
        let u = &self.use_;
        let at = if u.boundary == 1 {
            "the embeddings".to_string()
        } else {
            format!("encoder layer {}", u.boundary - 2)
        };
        let mut line = format!(
            "feature cache of the frozen layers (output of {at}): train {}; validation {}",
            u.train.describe(),
            u.val.describe()
        );
        for r in [&u.train, &u.val] {
            if let Some(why) = &r.rejected {
                line.push_str(&format!("\n  cache file not used: {why}"));
            }
        }
        line
    }
}

/// Mean negative log-likelihood of the targets.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [batch, _] = logits.dims();
    let logp = log_softmax(logits, 1);
    logp.gather(1, targets.reshape([batch, 1])).neg().mean()
}

/// Validation metrics from cached frozen outputs: the layers above the
/// boundary and the head, in inference mode, batched as [`evaluate`] batches.
fn evaluate_cached(
    model: &BertClassifier,
    features: &Features,
    split: &Split,
    labels: &LabelMap,
    batch_size: usize,
    frozen: usize,
    device: &Device,
) -> Metrics {
    let model = model.valid();
    let lengths: Vec<usize> = split.items.iter().map(|e| e.ids.len()).collect();
    let ((predicted, loss_sum), _) =
        predict_batches(&lengths, Some(&split.labels), batch_size, |chunk| {
            model.forward_from_frozen(features.batch(chunk, device), frozen)
        });
    Metrics::compute(labels, &split.labels, &predicted, loss_sum)
}

/// Validation metrics, computed without autodiff and without dropout.
fn evaluate(
    model: &BertClassifier,
    split: &Split,
    labels: &LabelMap,
    batch_size: usize,
    pad_id: u32,
    device: &Device,
) -> Metrics {
    let model = model.valid();
    let (predicted, loss_sum) = predict_ids(
        &model,
        &split.items,
        Some(&split.labels),
        batch_size,
        pad_id,
        device,
    )
    .0;
    Metrics::compute(labels, &split.labels, &predicted, loss_sum)
}

/// Predicted ids, summed loss (when labels are given) and the logits of every
/// item; items are batched by length to save padding work.
#[allow(clippy::type_complexity)]
pub fn predict_ids(
    model: &BertClassifier,
    items: &[Encoded],
    labels: Option<&[usize]>,
    batch_size: usize,
    pad_id: u32,
    device: &Device,
) -> ((Vec<usize>, f64), Vec<Vec<f32>>) {
    let lengths: Vec<usize> = items.iter().map(|e| e.ids.len()).collect();
    predict_batches(&lengths, labels, batch_size, |chunk| {
        let batch: Vec<&Encoded> = chunk.iter().map(|&i| &items[i]).collect();
        model.forward(&BertInput::from_batch(&pad_batch(&batch, pad_id), device))
    })
}

/// Items in batches of similar length (longest first).
fn length_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// Forward FLOPs of evaluating items of `lengths` batched as
/// [`predict_batches`] batches them, less the bottom `skip` groups (read from
/// a feature cache).
fn eval_flops(shape: &BertShape, lengths: &[usize], batch_size: usize, skip: usize) -> f64 {
    length_batches(lengths, batch_size)
        .iter()
        .map(|c| {
            let seq = lengths[c[0]];
            shape.forward(c.len(), seq) - shape.prefix_forward(c.len(), seq, skip)
        })
        .sum()
}

/// [`predict_ids`] with the logits of a batch of item indices from `logits_of`.
#[allow(clippy::type_complexity)]
fn predict_batches(
    lengths: &[usize],
    labels: Option<&[usize]>,
    batch_size: usize,
    mut logits_of: impl FnMut(&[usize]) -> Tensor<2>,
) -> ((Vec<usize>, f64), Vec<Vec<f32>>) {
    let mut predicted = vec![0usize; lengths.len()];
    let mut all_logits = vec![Vec::new(); lengths.len()];
    let mut loss_sum = 0.0;
    for chunk in length_batches(lengths, batch_size) {
        let (shape, values) = host(&logits_of(&chunk));
        let k = shape[1];
        for (row, &i) in chunk.iter().enumerate() {
            let l = &values[row * k..(row + 1) * k];
            predicted[i] = argmax(l);
            if let Some(y) = labels {
                loss_sum += nll(l, y[i]);
            }
            all_logits[i] = l.to_vec();
        }
    }
    ((predicted, loss_sum), all_logits)
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// -log softmax(logits)[target], computed stably in f64.
fn nll(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    lse - logits[target] as f64
}

pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = logits.iter().map(|&x| (x as f64 - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

fn read_data(config: &TrainConfig) -> Result<(Vec<Example>, Vec<Example>, usize)> {
    let train_path = config
        .train
        .as_ref()
        .context("--train FILE is required (CSV, TSV or JSONL with a text and a label column)")?;
    let cols = Columns {
        text: &config.text_column,
        label: Some(&config.label_column),
        skip_bad_rows: config.skip_bad_rows,
    };
    let train = table::read_examples(train_path, &cols)?;
    let mut skipped = train.skipped;
    let mut train_examples = train.examples;
    let val_examples = match &config.val {
        Some(p) => {
            let v = table::read_examples(p, &cols)?;
            skipped += v.skipped;
            v.examples
        }
        None => {
            if !(config.val_fraction > 0.0 && config.val_fraction < 1.0) {
                bail!("--val-fraction must be in (0, 1) when no --val file is given");
            }
            let (t, v) = stratified_split(train_examples, config.val_fraction, config.seed);
            train_examples = t;
            v
        }
    };
    if let Some(limit) = config.train_limit
        && limit < train_examples.len()
    {
        let order = epoch_order(train_examples.len(), config.seed, usize::MAX);
        let mut keep: Vec<usize> = order.into_iter().take(limit).collect();
        keep.sort_unstable();
        train_examples = keep
            .into_iter()
            .map(|i| train_examples[i].clone())
            .collect();
    }
    if train_examples.is_empty() {
        bail!("{}: no training examples", train_path.display());
    }
    if val_examples.is_empty() {
        bail!("no validation examples: give --val FILE or a larger --val-fraction");
    }
    Ok((train_examples, val_examples, skipped))
}

/// Per label, a seeded shuffle; `fraction` of each label goes to the second part.
pub fn stratified_split(
    examples: Vec<Example>,
    fraction: f64,
    seed: u64,
) -> (Vec<Example>, Vec<Example>) {
    let mut by_label: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (i, e) in examples.iter().enumerate() {
        by_label.entry(e.label.clone()).or_default().push(i);
    }
    let mut rng = SeededRng::new(seed ^ 0x5EED_5EED);
    let mut is_val = vec![false; examples.len()];
    for idx in by_label.values_mut() {
        for i in (1..idx.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            idx.swap(i, j);
        }
        let k = (idx.len() as f64 * fraction).round() as usize;
        for &i in idx.iter().take(k) {
            is_val[i] = true;
        }
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (e, v) in examples.into_iter().zip(is_val) {
        if v { b.push(e) } else { a.push(e) }
    }
    (a, b)
}

fn tokenise(
    tokenizer: &mut TextTokenizer,
    examples: &[Example],
    labels: &LabelMap,
    file: &str,
    max_length: usize,
) -> Result<Split> {
    let ids = labels.ids(examples, file)?;
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let items = tokenizer.encode_each(&texts, max_length)?;
    Ok(Split { items, labels: ids })
}

#[derive(Serialize)]
struct StepLine {
    step: usize,
    epoch: f64,
    loss: f64,
    lr: f64,
    grad_norm: f64,
    samples_per_s: f64,
}

/// Appends JSON lines, flushed after each so a kill loses at most the line being written.
struct MetricsLog {
    file: std::fs::File,
}

impl MetricsLog {
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self { file })
    }
    fn write(&mut self, v: &serde_json::Value) -> Result<()> {
        let mut line = serde_json::to_string(v)?;
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        Ok(())
    }
}

/// On resume, drops the lines a killed run wrote after its last checkpoint,
/// which the resumed run writes again.
fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step")?.as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .collect();
    write_atomic(path, |w| {
        for l in kept {
            w.write_all(l.as_bytes())?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}

/// What a run's checkpoints (and `best/`) hold: every parameter, or, when
/// the strategy leaves some layer groups frozen for the whole run, only the
/// groups it trains. The frozen rest is the base model's, recorded in
/// `base.json` with a SHA-256 of those tensors and checked when the
/// checkpoint is read back. A `head` checkpoint of MiniLM is then 0.6 MB
/// instead of 90 MB.
struct WeightStore {
    /// Groups written; `None`: all.
    saved: Option<Vec<bool>>,
    model_dir: PathBuf,
    /// SHA-256 of the base tensors not written.
    base_hash: Option<String>,
}

/// `base.json` of a checkpoint that holds only the trained groups.
#[derive(Serialize, Deserialize)]
struct BaseRef {
    model_dir: PathBuf,
    groups_saved: Vec<bool>,
    /// SHA-256 of the base model's tensors of the other groups.
    sha256: String,
}

impl WeightStore {
    /// A partial store needs [`WeightStore::base_hash`] set before it saves.
    fn new(strategy: Strategy, layers: usize, epochs: usize, model_dir: &Path) -> Self {
        let mut saved = vec![false; layers + 2];
        for e in 0..epochs.min(layers + 2) {
            for (g, t) in strategy.trainable(layers, e).iter().enumerate() {
                saved[g] |= *t;
            }
        }
        let partial = strategy.uses_pretrained_weights() && saved.iter().any(|t| !t);
        Self {
            saved: partial.then_some(saved),
            model_dir: model_dir.to_path_buf(),
            base_hash: None,
        }
    }

    /// Hashes the frozen rest of `base` (the base model, already loaded to
    /// build the model), so later saves cost only the trained groups.
    fn hash_base(&mut self, base: Checkpoint, layers: usize) {
        if let Some(saved) = &self.saved {
            self.base_hash = Some(base_rest(base, saved, layers).1);
        }
    }

    /// The parameters a save writes.
    fn tensors(&self, model: &BertClassifier) -> NamedTensors {
        match &self.saved {
            Some(saved) => model.export_groups(&|g| saved[g]),
            None => model.export(),
        }
    }

    fn save(&self, model: &BertClassifier, dir: &Path) -> Result<()> {
        self.write(&self.tensors(model), dir)
    }

    fn write(&self, tensors: &NamedTensors, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        if let (Some(saved), Some(sha256)) = (&self.saved, &self.base_hash) {
            let r = BaseRef {
                model_dir: self.model_dir.clone(),
                groups_saved: saved.clone(),
                sha256: sha256.clone(),
            };
            write_json_atomic(&dir.join("base.json"), &r)?;
        }
        write_safetensors(&dir.join("model.safetensors"), tensors, None)
    }
}

/// The base model's tensors of the groups not in `saved`, under the run's
/// key names (`bert.`-prefixed), and their SHA-256.
fn base_rest(
    base: Checkpoint,
    saved: &[bool],
    layers: usize,
) -> (Vec<(String, crate::hub::HostTensor)>, String) {
    let mut hasher = KeyHasher::default();
    let mut rest = Vec::new();
    for (k, t) in base.tensors {
        let key = if k.starts_with("bert.") {
            k
        } else {
            format!("bert.{k}")
        };
        let body = &key["bert.".len()..];
        let encoder_part = ["embeddings", "encoder", "pooler"]
            .iter()
            .any(|p| body.starts_with(p));
        if !encoder_part || saved[group_of(&key, layers)] {
            continue;
        }
        hasher.tensor(&key, &t.shape, &t.data);
        rest.push((key, t));
    }
    (rest, hasher.hex())
}

/// Reads weights written by [`WeightStore::save`]: complete, or completed
/// from the base model after checking it is the one the run started from.
/// With the checkpoint, the hash of the base model's part (when it has one).
fn load_weights(dir: &Path, layers: usize) -> Result<(Checkpoint, Option<String>)> {
    let mut checkpoint = Checkpoint::load(dir)?;
    let base_json = dir.join("base.json");
    let mut base_hash = None;
    if base_json.is_file() {
        let r: BaseRef = read_json(&base_json)?;
        let (rest, hash) = base_rest(Checkpoint::load(&r.model_dir)?, &r.groups_saved, layers);
        if hash != r.sha256 {
            bail!(
                "{} holds only the layers this run trains; the frozen rest comes from the base model {}, \
                 whose weights have changed since the run started (their SHA-256 is {hash}, was {}): \
                 put that model back as it was to resume or export this run",
                dir.display(),
                r.model_dir.display(),
                r.sha256
            );
        }
        checkpoint.tensors.extend(rest);
        base_hash = Some(hash);
    }
    Ok((checkpoint, base_hash))
}

/// Writes `checkpoints/step-N/` completely, then points `checkpoints/LAST` at
/// it, then removes older ones: a kill at any moment leaves LAST naming a
/// complete checkpoint.
fn save_checkpoint(
    run_dir: &Path,
    store: &WeightStore,
    model: &BertClassifier,
    opt: &AdamW,
    state: &mut TrainState,
) -> Result<()> {
    let root = run_dir.join("checkpoints");
    let name = format!("step-{:08}", state.step);
    let dir = root.join(&name);
    store.save(model, &dir)?;
    let (tensors, steps) = opt.export();
    state.optimizer_steps = steps;
    write_safetensors(&dir.join("optimizer.safetensors"), &tensors, None)?;
    write_json_atomic(&dir.join("state.json"), state)?;
    write_atomic(&root.join("LAST"), |w| Ok(w.write_all(name.as_bytes())?))?;
    for entry in std::fs::read_dir(&root)?.flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        if n.starts_with("step-") && n != name {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

fn last_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>> {
    let pointer = run_dir.join("checkpoints").join("LAST");
    match std::fs::read_to_string(&pointer) {
        Ok(name) => {
            let dir = run_dir.join("checkpoints").join(name.trim());
            if !dir.join("state.json").exists() {
                bail!(
                    "{} names {}, which is incomplete",
                    pointer.display(),
                    dir.display()
                );
            }
            Ok(Some(dir))
        }
        Err(_) => bail!(
            "cannot resume {}: it has no checkpoint yet (checkpoints/LAST); start it again",
            run_dir.display()
        ),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
}

/// What `eval` and `predict` need besides the HF files.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportMeta {
    pub text_column: String,
    pub label_column: String,
    pub max_length: usize,
    pub strategy: String,
    pub base_model: String,
}

/// Writes an HF directory that `AutoModelForSequenceClassification` loads.
pub fn export(
    model: &BertClassifier,
    base_dir: &Path,
    out: &Path,
    labels: &LabelMap,
    config: &TrainConfig,
) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let raw = std::fs::read_to_string(base_dir.join("config.json"))?;
    let mut hf: serde_json::Value = serde_json::from_str(&raw)?;
    let obj = hf
        .as_object_mut()
        .context("config.json is not a JSON object")?;
    obj.insert(
        "architectures".into(),
        serde_json::json!(["BertForSequenceClassification"]),
    );
    obj.insert("model_type".into(), serde_json::json!("bert"));
    let id2label: serde_json::Map<String, serde_json::Value> = labels
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), serde_json::json!(l)))
        .collect();
    let label2id: serde_json::Map<String, serde_json::Value> = labels
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), serde_json::json!(i)))
        .collect();
    obj.insert("id2label".into(), id2label.into());
    obj.insert("label2id".into(), label2id.into());
    obj.insert(
        "problem_type".into(),
        serde_json::json!("single_label_classification"),
    );
    obj.remove("_name_or_path");
    write_json_atomic(&out.join("config.json"), &hf)?;
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    write_safetensors(&out.join("model.safetensors"), &model.export(), Some(meta))?;
    for f in TOKENIZER_FILES {
        let src = base_dir.join(f);
        if src.is_file() {
            let bytes = std::fs::read(&src)?;
            write_atomic(&out.join(f), |w| Ok(w.write_all(&bytes)?))?;
        }
    }
    write_json_atomic(
        &out.join("headstart.json"),
        &ExportMeta {
            text_column: config.text_column.clone(),
            label_column: config.label_column.clone(),
            max_length: config.max_length,
            strategy: config.strategy.to_string(),
            base_model: config.model.clone(),
        },
    )
}

/// A trained classifier loaded from an exported (or any HF
/// `BertForSequenceClassification`) directory.
pub struct LoadedClassifier {
    pub model: BertClassifier,
    pub labels: LabelMap,
    pub tokenizer: TextTokenizer,
    pub meta: Option<ExportMeta>,
    pub dir: PathBuf,
}

/// `dir` may be a run directory (its `model/` is used) or an HF directory.
pub fn load_classifier(dir: &Path, device: &Device) -> Result<LoadedClassifier> {
    let dir = if dir.join("model").join("config.json").exists() {
        dir.join("model")
    } else {
        dir.to_path_buf()
    };
    let config_path = dir.join("config.json");
    let config = BertConfig::from_file(&config_path)?;
    let raw: serde_json::Value = read_json(&config_path)?;
    let id2label = raw
        .get("id2label")
        .and_then(|v| v.as_object())
        .with_context(|| {
            format!(
                "{} has no id2label: not a trained classifier",
                config_path.display()
            )
        })?;
    let mut pairs: Vec<(usize, String)> = id2label
        .iter()
        .map(|(k, v)| {
            let id = k
                .parse::<usize>()
                .with_context(|| format!("id2label key `{k}` is not an integer"))?;
            Ok((id, v.as_str().unwrap_or_default().to_string()))
        })
        .collect::<Result<_>>()?;
    pairs.sort();
    let labels = LabelMap {
        labels: pairs.into_iter().map(|(_, l)| l).collect(),
    };
    let checkpoint = Checkpoint::load(&dir)?;
    if !checkpoint.tensors.contains_key("classifier.weight") {
        bail!(
            "{} has no classifier weights (classifier.weight): it is a base model, not one trained with `headstart train`",
            dir.display()
        );
    }
    let mut builder = ParamBuilder::pretrained(&checkpoint, device, 0);
    let model = BertClassifier::build(&config, &mut builder, labels.len())?;
    let report = builder.finish();
    if !report.missing.is_empty() {
        bail!(
            "{}: the checkpoint lacks {}",
            dir.display(),
            report.missing.join(", ")
        );
    }
    let tokenizer = TextTokenizer::from_dir(&dir)?;
    let meta = read_json(&dir.join("headstart.json")).ok();
    Ok(LoadedClassifier {
        model,
        labels,
        tokenizer,
        meta,
        dir,
    })
}

impl LoadedClassifier {
    pub fn max_length(&self) -> usize {
        self.meta.as_ref().map_or(128, |m| m.max_length)
    }

    /// Logits of each text, in order.
    pub fn logits(
        &mut self,
        texts: &[&str],
        batch_size: usize,
        device: &Device,
    ) -> Result<Vec<Vec<f32>>> {
        let max_length = self.max_length();
        let items = self.tokenizer.encode_each(texts, max_length)?;
        Ok(predict_ids(
            &self.model,
            &items,
            None,
            batch_size,
            self.tokenizer.pad_id,
            device,
        )
        .1)
    }

    /// Metrics on labelled examples; an unknown label is an error naming its line.
    pub fn evaluate(
        &mut self,
        examples: &[Example],
        file: &str,
        batch_size: usize,
        device: &Device,
    ) -> Result<Metrics> {
        let cost = CostOptions::default();
        Ok(self
            .evaluate_with_cost(examples, file, batch_size, device, &cost)?
            .0)
    }

    /// [`LoadedClassifier::evaluate`] with what it cost: time, forward FLOPs
    /// (batches of similar length, as evaluated), energy, CO2 and money.
    pub fn evaluate_with_cost(
        &mut self,
        examples: &[Example],
        file: &str,
        batch_size: usize,
        device: &Device,
        cost: &CostOptions,
    ) -> Result<(Metrics, RunCost)> {
        let meter = cost.start_meter()?;
        let started = Instant::now();
        let mut phase = Instant::now();
        let mut phases = Phases::default();
        let max_length = self.max_length();
        let split = tokenise(
            &mut self.tokenizer,
            examples,
            &self.labels,
            file,
            max_length,
        )?;
        phases.data = lap(&mut phase);
        let lengths: Vec<usize> = split.items.iter().map(|e| e.ids.len()).collect();
        let layer = &self.model.bert.layers[0];
        let shape = BertShape {
            layers: self.model.bert.layers.len(),
            hidden: layer.query.weight.dims()[0],
            ffn: layer.intermediate.weight.dims()[1],
            labels: self.labels.len(),
        };
        let flops = FlopCount {
            eval: eval_flops(&shape, &lengths, batch_size, 0),
            ..FlopCount::default()
        };
        let ((predicted, loss), _) = predict_ids(
            &self.model,
            &split.items,
            Some(&split.labels),
            batch_size,
            self.tokenizer.pad_id,
            device,
        );
        phases.eval = lap(&mut phase);
        let metrics = Metrics::compute(&self.labels, &split.labels, &predicted, loss);
        let cost = RunCost::new(
            cost,
            started.elapsed().as_secs_f64(),
            phases,
            flops,
            crate::compute_peak(),
            meter.stop(),
            0.0,
        )?;
        Ok((metrics, cost))
    }
}

/// A progress bar on a terminal, plain lines otherwise, nothing when quiet.
struct Progress {
    verbosity: Verbosity,
    terminal: bool,
    total: usize,
    started: Instant,
    drawn: bool,
}

impl Progress {
    fn new(verbosity: Verbosity, total: usize) -> Self {
        Self {
            verbosity,
            terminal: std::io::stderr().is_terminal(),
            total,
            started: Instant::now(),
            drawn: false,
        }
    }

    fn step(&mut self, line: &StepLine, epoch: usize, epochs: usize) {
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        let done = line.step.min(self.total).max(1);
        let eta = elapsed / done as f64 * (self.total.saturating_sub(done)) as f64;
        let text = format!(
            "epoch {epoch}/{epochs} step {}/{} loss {:.4} lr {:.2e} {:.1} samples/s ETA {}",
            line.step,
            self.total,
            line.loss,
            line.lr,
            line.samples_per_s,
            format_secs(eta)
        );
        if self.terminal {
            let width = 24;
            let filled = width * done / self.total.max(1);
            eprint!(
                "\r[{}{}] {text}\x1b[K",
                "#".repeat(filled),
                ".".repeat(width - filled)
            );
            self.drawn = true;
        } else if line.step.is_multiple_of(10) || line.step == self.total {
            eprintln!("{text}");
        }
    }

    fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[K");
            self.drawn = false;
        }
    }
}

fn format_secs(s: f64) -> String {
    let s = s.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_of_parameter_paths() {
        assert_eq!(group_of("bert.embeddings.word_embeddings.weight", 6), 0);
        assert_eq!(group_of("bert.layers.0.query.weight", 6), 1);
        assert_eq!(group_of("bert.layers.5.output_layer_norm.beta", 6), 6);
        assert_eq!(group_of("bert.pooler.weight", 6), 7);
        assert_eq!(group_of("classifier.bias", 6), 7);
        // checkpoint keys, with and without the prefix
        assert_eq!(group_of("bert.encoder.layer.2.output.dense.weight", 6), 3);
        assert_eq!(group_of("encoder.layer.0.attention.self.key.bias", 6), 1);
        assert_eq!(group_of("embeddings.LayerNorm.weight", 6), 0);
        assert_eq!(group_of("bert.pooler.dense.weight", 6), 7);
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(100, 1, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(100, 1, 0));
        assert_ne!(a, epoch_order(100, 1, 1));
        assert_ne!(a, epoch_order(100, 2, 0));
    }

    #[test]
    fn stratified_split_keeps_label_shares() {
        let ex: Vec<Example> = (0..100)
            .map(|i| Example {
                text: format!("t{i}"),
                label: if i < 30 { "a".into() } else { "b".into() },
                line: i + 2,
            })
            .collect();
        let (t, v) = stratified_split(ex, 0.1, 3);
        assert_eq!(v.len(), 10);
        assert_eq!(v.iter().filter(|e| e.label == "a").count(), 3);
        assert_eq!(t.len(), 90);
    }

    #[test]
    fn softmax_and_nll_agree() {
        let l = [1.0f32, 2.0, 0.5];
        let p = softmax(&l);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((nll(&l, 1) + p[1].ln()).abs() < 1e-9);
        assert_eq!(argmax(&l), 1);
    }
}
