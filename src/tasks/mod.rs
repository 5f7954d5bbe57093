//! Tasks, behind one [`Task`] trait: how examples become batches, the head
//! on top of a family's body, the loss, the metrics, and what an export
//! adds to `config.json`. The fit loop knows no task.

pub mod captioning;
pub mod causal_lm;
pub mod classification;
pub mod image;

use anyhow::Result;
use burn::tensor::{Device, Tensor};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::models::{Architecture, Flow, Head};

/// A learning task; see the module doc.
pub trait Task: Sized {
    /// `--task` and `config.json`'s name for it.
    const NAME: &'static str;
    /// The HF class name after the family's stem (`ForSequenceClassification`).
    const HF_SUFFIX: &'static str;
    /// The module the task puts on top of a body.
    type Head: Head;
    /// One split of examples, ready for batching.
    type Split;
    /// The targets of one batch.
    type Targets;
    /// What validation and testing report.
    type Metrics: Clone + Serialize + DeserializeOwned;

    /// A head for `body`, its parameters zero until loaded or initialised.
    fn new_head<A: Architecture>(&self, body: &A, device: &Device) -> Self::Head;
    /// Positions of each example: its cost, and its rows in a feature cache.
    fn lengths(split: &Self::Split) -> Vec<usize>;
    /// The examples `idx` as the body's first group takes them.
    fn input(&self, split: &Self::Split, idx: &[usize], device: &Device) -> Flow;
    /// The targets of the examples `idx`.
    fn targets(&self, split: &Self::Split, idx: &[usize], device: &Device) -> Self::Targets;
    /// Feeds what makes each example's input into a cache key.
    fn hash_inputs(&self, split: &Self::Split, key: &mut crate::train::cache::KeyHasher);
    /// The mean loss of a batch from the body's output.
    fn loss(&self, head: &Self::Head, features: Flow, targets: Self::Targets) -> Tensor<1>;
    /// The head's output for each example `idx` of `split` in a batch
    /// (host copies).
    fn outputs(
        &self,
        head: &Self::Head,
        features: Flow,
        split: &Self::Split,
        idx: &[usize],
    ) -> Vec<Vec<f32>>;
    /// Metrics of a split from its examples' outputs, in split order.
    fn metrics(&self, split: &Self::Split, outputs: &[Vec<f32>]) -> Self::Metrics;
    /// A named metric, oriented so that larger is better.
    fn score(metrics: &Self::Metrics, name: MetricName) -> f64;
    /// The validation loss (breaks ties between equal scores).
    fn loss_of(metrics: &Self::Metrics) -> f64;
    /// One line for the log.
    fn describe(metrics: &Self::Metrics) -> String;
    /// Forward FLOPs of the head on `batch` examples.
    fn head_flops<A: Architecture>(&self, body: &A, batch: usize) -> f64;

    /// Backward FLOPs of the head on `batch` examples: by default twice its
    /// forward (input and weight gradients); less where parts of it are
    /// frozen (a captioner's frozen or LoRA-tuned language model passes
    /// input gradients only).
    fn head_backward_flops<A: Architecture>(&self, body: &A, batch: usize) -> f64 {
        2.0 * self.head_flops(body, batch)
    }
    /// What an export adds to the base model's `config.json`.
    fn export_config(&self, config: &mut serde_json::Map<String, serde_json::Value>) -> Result<()>;

    /// Files an export writes besides the config and weights (an image
    /// task's `preprocessor_config.json`), as JSON by file name.
    fn export_files(&self) -> Vec<(&'static str, serde_json::Value)> {
        Vec::new()
    }

    /// The body as this task feeds it (image tasks set the input size).
    fn adapt_body<A: Architecture>(&self, body: A) -> A {
        body
    }

    /// Called before each training epoch with the training split (seeded
    /// augmentations draw per epoch).
    fn start_epoch(&self, _split: &Self::Split, _epoch: usize) {}

    /// Whether the split's inputs change from epoch to epoch (augmentation),
    /// which rules out a feature cache.
    fn augmented(&self, _split: &Self::Split) -> bool {
        false
    }

    /// Fills the head's parameters after the body's were loaded on a fresh
    /// run (a captioner's language model from its own checkpoint); returns
    /// the head and lines for the log. By default the head is as loaded.
    fn load_head(&self, head: Self::Head, _seed: u64) -> Result<(Self::Head, Vec<String>)> {
        Ok((head, Vec::new()))
    }

    /// Which of the head's parameters train in `epoch`, applied after the
    /// strategy has set the body's (the head trains by default).
    fn head_trainable(&self, head: Self::Head, _epoch: usize) -> Self::Head {
        head
    }

    /// Whether the export's `model.safetensors` holds the parameter at
    /// module path `path` (a captioner writes its language model apart).
    fn exports_param(_path: &str) -> bool {
        true
    }

    /// Writes what the export holds besides `model.safetensors` and the
    /// files above (a captioner's language model, under `decoder/`).
    fn export_head(&self, _head: &Self::Head, _out: &std::path::Path) -> Result<()> {
        Ok(())
    }
}

/// `--metric`: what picks the best checkpoint and stops early.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricName {
    Accuracy,
    MacroF1,
    Loss,
    /// `exp(loss)`: the same order as the loss, on the scale language
    /// models are reported on.
    Perplexity,
    /// Captioning: corpus BLEU-4.
    Bleu4,
    /// Captioning: CIDEr-D.
    Cider,
}

impl MetricName {
    /// Accuracy, macro-F1, BLEU and CIDEr grow as a model improves; loss and perplexity shrink.
    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Self::Accuracy | Self::MacroF1 | Self::Bleu4 | Self::Cider
        )
    }
}

impl std::str::FromStr for MetricName {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "accuracy" => Self::Accuracy,
            "macro_f1" | "macro-f1" => Self::MacroF1,
            "loss" => Self::Loss,
            "perplexity" => Self::Perplexity,
            "bleu4" | "bleu-4" => Self::Bleu4,
            "cider" | "cider-d" => Self::Cider,
            other => anyhow::bail!(
                "unknown metric `{other}`: use accuracy, macro_f1, loss or perplexity \
                 (captioning also bleu4 and cider)"
            ),
        })
    }
}
