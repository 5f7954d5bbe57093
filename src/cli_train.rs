//! The command line's training flags (`train`, `compare`) and the progress
//! bar: the binary's side of [`headstart::train`], whose library API takes
//! a plain [`TrainConfig`] and reports through an [`Observer`].

use std::path::PathBuf;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use headstart::cost::run::CostOptions;
use headstart::strategy::Strategy;
use headstart::tasks::MetricName;
use headstart::train::cache::{CacheDtype, CacheMode};
use headstart::train::optim::Decay;
use headstart::train::{ExportChoice, Observer, StepLine, TrainConfig};

/// `headstart train` / `compare` flags; defaults are [`TrainConfig::default`]'s.
#[derive(Clone, Debug, clap::Args)]
pub struct TrainArgs {
    /// text-classification | image-classification | causal-lm | captioning
    #[arg(long, default_value = "text-classification")]
    pub task: String,
    /// Pretrained model: HF directory, hub id, packaged short name, or a
    /// bare weights file (.pth, .safetensors) with --arch. For captioning,
    /// the image encoder (--encoder).
    #[arg(long, alias = "encoder", default_value = "all-MiniLM-L6-v2")]
    pub model: String,
    /// The family of a bare weights file (mobilenet_v2, ...); inferred from its tensor names when unmistakable.
    #[arg(long)]
    pub arch: Option<String>,
    /// scratch | full | freeze:N | head | lr-decay:F | gradual | lora[:R].
    /// For captioning, the image encoder's (--encoder-strategy; `frozen` = head).
    #[arg(long, alias = "encoder-strategy", default_value = "full")]
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
    /// Column of image paths in a CSV/JSONL list of images (relative to its folder).
    #[arg(long, default_value = "image")]
    pub image_column: String,
    /// Crop size of images, in pixels (default: the family's, 224).
    #[arg(long)]
    pub image_size: Option<u32>,
    /// Augmentation of training images; with any, the feature cache is off.
    #[arg(long, value_enum, default_value = "none")]
    pub augment: headstart::data::preprocess::Augment,
    /// BatchNorm in trainable groups: `train` (batch statistics, running ones
    /// updated) or `frozen` (inference mode everywhere, running statistics
    /// kept as loaded; better with small batches). Frozen groups are always frozen.
    #[arg(long, value_enum, default_value = "train")]
    pub bn: headstart::models::BatchNormMode,
    /// Skip bad rows (counted) instead of stopping at the first.
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
    /// Optimizer steps: the run and its learning-rate schedule span exactly this many.
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
    /// linear | cosine | constant
    #[arg(long, default_value = "linear")]
    pub schedule: Decay,
    /// Clip gradients to this global L2 norm (0 turns clipping off).
    #[arg(long, default_value_t = 1.0)]
    pub clip_norm: f64,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    #[arg(long, default_value_t = 128)]
    pub max_length: usize,
    /// causal-lm: tokens per training row (default: the smaller of 512 and the model's context).
    #[arg(long)]
    pub block_size: Option<usize>,
    /// causal-lm: `on` joins documents with EOS and cuts full rows; `off` keeps one document per row (padding masked).
    #[arg(long, value_enum, default_value = "on")]
    pub pack: headstart::tasks::causal_lm::Pack,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// --strategy lora: adapter rank (lora:R sets it too).
    #[arg(long, default_value_t = 8)]
    pub lora_r: usize,
    /// --strategy lora: adapters are scaled by alpha / r.
    #[arg(long, default_value_t = 16.0)]
    pub lora_alpha: f64,
    /// --strategy lora: dropout on the adapters' input while training.
    #[arg(long, default_value_t = 0.0)]
    pub lora_dropout: f64,
    /// --strategy lora: comma-separated projections to adapt (bert/vit: query,key,value,attention.output.dense,intermediate.dense,output.dense; gpt2: c_attn,attn.c_proj,c_fc,mlp.c_proj,c_proj; llama: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj). Default: query and value of attention.
    #[arg(long, value_delimiter = ',')]
    pub lora_targets: Vec<String>,
    /// Validate every K optimizer steps as well as at each epoch's end.
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Metric for the best checkpoint and early stopping: accuracy | macro_f1 | loss |
    /// perplexity (default: accuracy; loss for causal-lm; perplexity orders as loss).
    #[arg(long)]
    pub metric: Option<MetricName>,
    /// Stop after this many validations without improvement.
    #[arg(long)]
    pub patience: Option<usize>,
    /// Which weights model/ gets: last (default) or best (by --metric; ties to the lower loss, then the later step).
    #[arg(long, default_value = "last")]
    pub export: ExportChoice,
    /// Write a resumable checkpoint every K optimizer steps (and at the end of
    /// each epoch that ends a minute or more after the last checkpoint, and at the end).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Run directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Compute what frozen layers output once and train from it: auto | off | memory | disk.
    #[arg(long, default_value = "auto")]
    pub feature_cache: CacheMode,
    /// Where feature-cache files go (default: $HEADSTART_HOME/feature-cache).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Memory the feature cache may hold before it goes to disk, in MB.
    #[arg(long, default_value_t = 2048)]
    pub cache_memory_mb: u64,
    /// Dtype of feature-cache files: f32 (exact) or f16 (half the size).
    #[arg(long, default_value = "f32")]
    pub cache_dtype: CacheDtype,
    /// Size cap of the feature-cache directory, in GB: after writing a new
    /// file, the least recently used others are deleted until it fits.
    #[arg(long, default_value_t = headstart::train::cache::DEFAULT_MAX_BYTES as f64 / 1e9)]
    pub cache_max_gb: f64,
    /// Stop (validate, checkpoint, export) once the run has taken this many seconds.
    #[arg(long)]
    pub max_seconds: Option<f64>,
    /// Stop once the run has used this much energy, in Wh.
    #[arg(long)]
    pub max_wh: Option<f64>,
    #[command(flatten)]
    pub cost: CostOptions,
    #[command(flatten)]
    pub captioning: headstart::tasks::captioning::CaptionConfig,
}

impl TrainArgs {
    pub fn into_config(self) -> Result<TrainConfig> {
        let metric = self.metric.unwrap_or(match self.task.as_str() {
            "causal-lm" => MetricName::Loss,
            headstart::tasks::captioning::NAME => MetricName::Cider,
            _ => MetricName::Accuracy,
        });
        let c = TrainConfig {
            task: self.task,
            model: self.model,
            strategy: self.strategy,
            train: self.train,
            val: self.val,
            val_fraction: self.val_fraction,
            text_column: self.text_column,
            label_column: self.label_column,
            image_column: self.image_column,
            arch: self.arch,
            image_size: self.image_size,
            augment: self.augment,
            bn: self.bn,
            skip_bad_rows: self.skip_bad_rows,
            train_limit: self.train_limit,
            batch_size: self.batch_size,
            epochs: self.epochs,
            max_steps: self.max_steps,
            lr: self.lr,
            warmup_ratio: self.warmup_ratio,
            weight_decay: self.weight_decay,
            schedule: self.schedule,
            clip_norm: self.clip_norm,
            grad_accum: self.grad_accum,
            max_length: self.max_length,
            block_size: self.block_size,
            pack: self.pack,
            seed: self.seed,
            eval_every: self.eval_every,
            metric,
            patience: self.patience,
            export: self.export,
            checkpoint_every: self.checkpoint_every,
            out: self.out,
            feature_cache: self.feature_cache,
            cache_dir: self.cache_dir,
            cache_memory_mb: self.cache_memory_mb,
            cache_dtype: self.cache_dtype,
            cache_max_gb: self.cache_max_gb,
            max_seconds: self.max_seconds,
            max_wh: self.max_wh,
            cost: self.cost,
            lora_r: self.lora_r,
            lora_alpha: self.lora_alpha,
            lora_dropout: self.lora_dropout,
            lora_targets: self.lora_targets,
            captioning: self.captioning,
        };
        c.check()?;
        Ok(c)
    }
}

/// Log lines on standard error; a progress bar on a terminal (plain lines
/// every ten steps off a terminal); nothing with `--quiet`.
pub struct ProgressObserver {
    quiet: bool,
    bar: Option<ProgressBar>,
    /// `HEADSTART_ABORT_AFTER_STEP` in builds with the `test-hooks` feature:
    /// the process dies like a killed one after that step, for resume tests.
    abort_after: Option<usize>,
}

impl ProgressObserver {
    pub fn new(quiet: bool) -> Self {
        let abort_after = if cfg!(feature = "test-hooks") {
            std::env::var("HEADSTART_ABORT_AFTER_STEP")
                .ok()
                .and_then(|v| v.parse().ok())
        } else {
            None
        };
        Self {
            quiet,
            bar: None,
            abort_after,
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Observer for ProgressObserver {
    fn line(&mut self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    fn step(&mut self, line: &StepLine, epoch: usize, epochs: usize, total: usize) {
        if self.quiet {
            return;
        }
        let msg = format!(
            "epoch {epoch}/{epochs} loss {:.4} lr {:.2e} {:.1} samples/s",
            line.loss, line.lr, line.samples_per_s
        );
        let bar = self.bar.get_or_insert_with(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("[{bar:24}] step {pos}/{len} {msg} ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("#>."),
            );
            bar
        });
        bar.set_position(line.step as u64);
        bar.set_message(msg.clone());
        if bar.is_hidden() && (line.step.is_multiple_of(10) || line.step == total) {
            eprintln!("step {}/{total} {msg}", line.step);
        }
    }

    fn step_done(&mut self, step: usize) {
        if self.abort_after == Some(step) {
            std::process::abort();
        }
    }
}
