//! What a run is asked to do ([`TrainConfig`], saved as the run's
//! `config.json` with a schema version) and where it stands ([`TrainState`],
//! saved with every checkpoint). Plain serde structs: the command line's
//! flags live in the binary.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::cache::{CacheDtype, CacheMode};
use super::optim::Decay;
use crate::cost::run::CostOptions;
use crate::strategy::Strategy;
use crate::tasks::MetricName;

/// Version of [`RunConfig`]'s layout; a run directory written by another
/// version is refused with a clear message instead of misread.
pub const SCHEMA_VERSION: u32 = 2;

/// Which weights `model/` gets at the end of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportChoice {
    /// The weights after the last step. With a few hundred validation
    /// examples a validation score moves in steps of 1/n and ties are
    /// common, while the schedule has decayed the learning rate to zero by
    /// the end: the last weights are the better default (and what
    /// transformers' Trainer keeps unless told otherwise).
    #[default]
    Last,
    /// The weights with the best validation `--metric`; ties go to the
    /// lower validation loss, then to the later step.
    Best,
}

impl std::str::FromStr for ExportChoice {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "last" => Ok(Self::Last),
            "best" => Ok(Self::Best),
            other => bail!("--export `{other}`: use last or best"),
        }
    }
}

/// Every setting of a training run; saved in the run's `config.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// `text-classification` for now.
    pub task: String,
    /// Pretrained model: HF directory, hub id or packaged short name.
    pub model: String,
    pub strategy: Strategy,
    /// Training data (.csv, .tsv or .jsonl).
    pub train: Option<PathBuf>,
    /// Validation data; without it, `val_fraction` of the training data (stratified, seeded).
    pub val: Option<PathBuf>,
    pub val_fraction: f64,
    pub text_column: String,
    pub label_column: String,
    /// Column of image paths in a CSV/JSONL list of images.
    pub image_column: String,
    /// The family of a bare weights file (`mobilenet_v2`, ...), when
    /// `model` has no `config.json`.
    pub arch: Option<String>,
    /// Crop size of images (default: the family's, 224).
    pub image_size: Option<u32>,
    /// Augmentation of training images.
    pub augment: crate::data::preprocess::Augment,
    /// BatchNorm of trainable groups: batch statistics, or frozen.
    pub bn: crate::models::BatchNormMode,
    /// Skip rows with a missing text or label (counted) instead of stopping.
    pub skip_bad_rows: bool,
    /// Use only this many training examples (a seeded random subset).
    pub train_limit: Option<usize>,
    pub batch_size: usize,
    /// Epochs (default: the strategy's, 3).
    pub epochs: Option<usize>,
    /// Optimizer steps; the schedule spans exactly this many, whatever the epochs.
    pub max_steps: Option<usize>,
    pub lr: Option<f64>,
    pub warmup_ratio: Option<f64>,
    pub weight_decay: Option<f64>,
    pub schedule: Decay,
    /// Clip gradients to this global L2 norm (0 turns clipping off).
    pub clip_norm: f64,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub max_length: usize,
    /// Tokens per training row of a causal LM (default: the smaller of 512
    /// and the model's context).
    pub block_size: Option<usize>,
    /// How a causal LM's documents become rows.
    pub pack: crate::tasks::causal_lm::Pack,
    pub seed: u64,
    /// Validate every K optimizer steps as well as at each epoch's end.
    pub eval_every: Option<usize>,
    /// Metric for the best checkpoint and early stopping.
    pub metric: MetricName,
    /// Stop after this many validations without improvement.
    pub patience: Option<usize>,
    /// Which weights `model/` gets.
    pub export: ExportChoice,
    /// Write a resumable checkpoint every K optimizer steps.
    pub checkpoint_every: Option<usize>,
    /// Run directory.
    pub out: Option<PathBuf>,
    pub feature_cache: CacheMode,
    /// Where feature-cache files go (default: $HEADSTART_HOME/feature-cache).
    pub cache_dir: Option<PathBuf>,
    /// Memory the feature cache may hold before it goes to disk, in MB.
    pub cache_memory_mb: u64,
    pub cache_dtype: CacheDtype,
    /// Size cap of the feature-cache directory, in GB: after writing a new
    /// file, the least recently used others are deleted until it fits.
    pub cache_max_gb: f64,
    /// Stop (validate, checkpoint, export) once the run has taken this many seconds.
    pub max_seconds: Option<f64>,
    /// Stop once the run has used this much energy, in Wh.
    pub max_wh: Option<f64>,
    pub cost: CostOptions,
    /// `--strategy lora`: adapter rank (`lora:R` overrides it).
    pub lora_r: usize,
    /// Adapter scale alpha / r.
    pub lora_alpha: f64,
    /// Dropout on the adapters' input while training. 0 by default: the
    /// runs here are short and small, and without it a LoRA step is
    /// deterministic given the seed; PEFT's scripts often use 0.05-0.1.
    pub lora_dropout: f64,
    /// Projection names to adapt (empty: the family's defaults, attention's
    /// query and value).
    pub lora_targets: Vec<String>,
    /// `--task captioning`: the language model, its strategy, the mapper
    /// and decoding.
    pub captioning: crate::tasks::captioning::CaptionConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            task: "text-classification".into(),
            model: "all-MiniLM-L6-v2".into(),
            strategy: Strategy::Full,
            train: None,
            val: None,
            val_fraction: 0.1,
            text_column: "text".into(),
            label_column: "label".into(),
            image_column: "image".into(),
            arch: None,
            image_size: None,
            augment: crate::data::preprocess::Augment::None,
            bn: crate::models::BatchNormMode::Train,
            skip_bad_rows: false,
            train_limit: None,
            batch_size: 16,
            epochs: None,
            max_steps: None,
            lr: None,
            warmup_ratio: None,
            weight_decay: None,
            schedule: Decay::Linear,
            clip_norm: 1.0,
            grad_accum: 1,
            max_length: 128,
            block_size: None,
            pack: crate::tasks::causal_lm::Pack::On,
            seed: 42,
            eval_every: None,
            metric: MetricName::Accuracy,
            patience: None,
            export: ExportChoice::Last,
            checkpoint_every: None,
            out: None,
            feature_cache: CacheMode::Auto,
            cache_dir: None,
            cache_memory_mb: 2048,
            cache_dtype: CacheDtype::F32,
            cache_max_gb: super::cache::DEFAULT_MAX_BYTES as f64 / 1e9,
            max_seconds: None,
            max_wh: None,
            cost: CostOptions::default(),
            lora_r: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.0,
            lora_targets: Vec::new(),
            captioning: Default::default(),
        }
    }
}

impl TrainConfig {
    /// The adapters of a `--strategy lora` run (none for other strategies).
    pub fn lora(&self) -> Option<crate::models::lora::LoraConfig> {
        match self.strategy {
            Strategy::Lora(r) => Some(self.lora_config(r)),
            _ => None,
        }
    }

    /// The `--lora-*` adapters at rank `r` (`lora:R`), else `--lora-r`.
    pub fn lora_config(&self, r: Option<usize>) -> crate::models::lora::LoraConfig {
        crate::models::lora::LoraConfig {
            r: r.unwrap_or(self.lora_r),
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            targets: self.lora_targets.clone(),
        }
    }

    /// Rejects settings no run can use.
    pub fn check(&self) -> Result<()> {
        if self.lora_r == 0 {
            bail!("--lora-r must be at least 1");
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            bail!("--lora-dropout must be in [0, 1)");
        }
        if self.batch_size == 0 || self.grad_accum == 0 {
            bail!("--batch-size and --grad-accum must be at least 1");
        }
        if self.max_steps == Some(0) || self.epochs == Some(0) {
            bail!("--max-steps and --epochs must be at least 1");
        }
        if self.task == "causal-lm" && self.metric == MetricName::MacroF1 {
            bail!(
                "--metric macro_f1 has no meaning for causal-lm (no classes): use loss (perplexity) \
                 or accuracy (next-token)"
            );
        }
        let captioning = self.task == crate::tasks::captioning::NAME;
        if !captioning && matches!(self.metric, MetricName::Bleu4 | MetricName::Cider) {
            bail!(
                "--metric {:?} scores captions: use it with --task captioning",
                self.metric
            );
        }
        if captioning && self.metric == MetricName::MacroF1 {
            bail!(
                "--metric macro_f1 has no meaning for captioning: use cider, bleu4, accuracy \
                 (captions naming the right items) or loss"
            );
        }
        if self.max_length < 2 {
            bail!("--max-length must be at least 2 (room for [CLS] and [SEP])");
        }
        Ok(())
    }
}

/// Settings with the strategy's defaults filled in.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Resolved {
    pub lr: f64,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    /// Epochs the run goes through (enough for `total_steps` when
    /// `max_steps` is set).
    pub epochs: usize,
    pub steps_per_epoch: usize,
    /// Optimizer steps the learning-rate schedule spans.
    pub total_steps: usize,
    pub warmup_steps: usize,
}

impl Resolved {
    /// The schedule of `config` for `examples` training examples: `--max-steps`
    /// when given is the exact length of the run and of its schedule (epochs
    /// repeat as needed); else `--epochs` (default the strategy's) times the
    /// steps of an epoch. Time and energy budgets stop a run early; its
    /// schedule still spans these steps.
    pub fn new(config: &TrainConfig, examples: usize) -> Self {
        let defaults = config.strategy.defaults_for(&config.task);
        let micro = examples.div_ceil(config.batch_size).max(1);
        let steps_per_epoch = micro.div_ceil(config.grad_accum);
        let (epochs, total_steps) = match config.max_steps {
            Some(n) => (config.epochs.unwrap_or(n.div_ceil(steps_per_epoch)), n),
            None => {
                let e = config.epochs.unwrap_or(defaults.epochs);
                (e, e * steps_per_epoch)
            }
        };
        let epochs = epochs.max(total_steps.div_ceil(steps_per_epoch));
        let warmup_ratio = config.warmup_ratio.unwrap_or(defaults.warmup_ratio);
        Self {
            lr: config.lr.unwrap_or(defaults.lr),
            warmup_ratio,
            weight_decay: config.weight_decay.unwrap_or(defaults.weight_decay),
            epochs,
            steps_per_epoch,
            total_steps,
            warmup_steps: (warmup_ratio * total_steps as f64).round() as usize,
        }
    }
}

/// What `config.json` of a run holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    /// [`SCHEMA_VERSION`] of the code that wrote it.
    pub schema: u32,
    pub config: TrainConfig,
    pub resolved: Resolved,
    /// The task's own state (a classifier's label names).
    pub task_state: serde_json::Value,
    /// The base model's directory, canonical, so a resume from anywhere finds it.
    pub model_dir: PathBuf,
    pub train_examples: usize,
    pub val_examples: usize,
    pub skipped_rows: usize,
    /// SHA-256 of the training and validation files as read.
    pub data_sha256: String,
}

/// Where a run stands; saved with every checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: usize,
    pub epoch: usize,
    /// Next micro-batch within `epoch`.
    pub batch_in_epoch: usize,
    pub best_score: Option<f64>,
    /// Validation loss of the best checkpoint (breaks ties).
    pub best_loss: Option<f64>,
    pub best_step: Option<usize>,
    pub best_epoch: Option<f64>,
    pub evals_since_best: usize,
    pub stopped_early: bool,
    /// Which budget (--max-seconds, --max-wh) ended the run, if one did.
    pub budget_reached: Option<String>,
    pub optimizer_steps: std::collections::BTreeMap<String, u64>,
}

/// See [`TrainState::compare`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    Better,
    Tie,
    Worse,
}

impl TrainState {
    /// How a validation with `score` and `loss` compares with the best so
    /// far: `Better` (a higher score, or an equal score with a lower loss),
    /// `Tie` (both equal: it becomes the best, the later of two equal
    /// validations being the better-trained, but it is no improvement for
    /// early stopping) or `Worse`.
    pub fn compare(&self, score: f64, loss: f64) -> Standing {
        match (self.best_score, self.best_loss) {
            (None, _) => Standing::Better,
            (Some(b), _) if score > b => Standing::Better,
            (Some(b), Some(l)) if score == b && loss < l => Standing::Better,
            (Some(b), Some(l)) if score == b && loss == l => Standing::Tie,
            _ => Standing::Worse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_steps_is_the_exact_length_of_the_schedule() {
        let c = TrainConfig {
            max_steps: Some(25),
            batch_size: 8,
            ..TrainConfig::default()
        };
        // 40 examples: 5 steps an epoch; 25 steps need 5 epochs, more than the default 3
        let r = Resolved::new(&c, 40);
        assert_eq!((r.steps_per_epoch, r.total_steps, r.epochs), (5, 25, 5));
        // full's default warmup is 10% of the steps: 2.5 rounds to 3
        assert_eq!(r.warmup_steps, 3);
        // fewer steps than the epochs hold: the run and its schedule end at 7
        let r = Resolved::new(
            &TrainConfig {
                max_steps: Some(7),
                epochs: Some(3),
                ..c.clone()
            },
            40,
        );
        assert_eq!((r.total_steps, r.epochs), (7, 3));
        // no max_steps: epochs x steps
        let r = Resolved::new(
            &TrainConfig {
                max_steps: None,
                ..c
            },
            41,
        );
        assert_eq!((r.steps_per_epoch, r.total_steps, r.epochs), (6, 18, 3));
    }

    #[test]
    fn ties_go_to_the_lower_loss_then_the_later_step() {
        let mut s = TrainState::default();
        assert_eq!(s.compare(0.9, 0.5), Standing::Better);
        s.best_score = Some(0.9);
        s.best_loss = Some(0.5);
        assert_eq!(s.compare(0.95, 0.9), Standing::Better);
        assert_eq!(s.compare(0.85, 0.1), Standing::Worse);
        assert_eq!(s.compare(0.9, 0.4), Standing::Better);
        assert_eq!(s.compare(0.9, 0.5), Standing::Tie);
        assert_eq!(s.compare(0.9, 0.6), Standing::Worse);
    }

    #[test]
    fn config_round_trips_and_fills_missing_fields_with_defaults() {
        let c = TrainConfig::default();
        let v = serde_json::to_string(&c).unwrap();
        let back: TrainConfig = serde_json::from_str(&v).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), v);
        let partial: TrainConfig = serde_json::from_str(r#"{"strategy": "head"}"#).unwrap();
        assert_eq!(partial.strategy, Strategy::Head);
        assert_eq!(partial.batch_size, 16);
    }
}
