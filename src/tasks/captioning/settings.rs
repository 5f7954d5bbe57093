//! The captioning task's settings: the `train`/`compare` flags
//! ([`CaptionConfig`]), decoding, and the state a run records.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::data::preprocess::Recipe;
use crate::generate::beam::BeamSearch;
use crate::models::lora::LoraConfig;
use crate::strategy::Strategy;

/// `--mapper`: how image features become the prefix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MapperKind {
    /// ClipCap's MLP: features (all cells of `--feature-grid`, flattened)
    /// -> P·H/2 -> tanh -> P·H, reshaped to P embeddings of the language
    /// model's width H.
    #[default]
    Mlp,
    /// ClipCap's transformer: the feature cells as tokens and P learned
    /// queries through `--mapper-layers` transformer layers of width H
    /// ([`mapper::TransformerMapper`]).
    Transformer,
    /// No mapping network: the pooled features are the one-position prefix
    /// (their size must equal the language model's hidden size).
    None,
    /// No prefix: every block of the language model cross-attends to the
    /// image's tokens (a ViT's every position, a feature map's cells of
    /// `--feature-grid`, or the pooled vector), projected to its width
    /// where they differ: transformers' `VisionEncoderDecoderModel`. The
    /// cross-attention layers are new unless the decoder's checkpoint
    /// holds them, and always train; GPT-2 decoders only.
    #[serde(rename = "cross-attention")]
    #[value(name = "cross-attention")]
    CrossAttention,
}

/// How captions are decoded.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct Decoding {
    /// Beams of beam search (1: greedy).
    #[arg(long, default_value_t = 1)]
    pub beams: usize,
    /// Beam search: finished captions are ranked by score / length^F.
    #[arg(long, default_value_t = 1.0)]
    pub length_penalty: f64,
    /// Beam search: no n-gram of this size occurs twice in a caption (0: off).
    #[arg(long, default_value_t = 0)]
    pub no_repeat_ngram: usize,
}

impl Decoding {
    /// Rejects settings no decoding can use.
    pub fn check(&self) -> Result<()> {
        if self.beams == 0 {
            bail!("--beams must be at least 1 (1: greedy)");
        }
        if self.beams > 1 {
            BeamSearch {
                beams: self.beams,
                length_penalty: self.length_penalty,
                no_repeat_ngram: self.no_repeat_ngram,
            }
            .check()?;
        }
        Ok(())
    }
}

impl Default for Decoding {
    fn default() -> Self {
        Self {
            beams: 1,
            length_penalty: 1.0,
            no_repeat_ngram: 0,
        }
    }
}

/// The captioning flags of `train` and `compare`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default)]
pub struct CaptionConfig {
    /// The language model that writes captions: a causal-LM checkpoint
    /// (HF directory, hub id, packaged name such as smollm2, GGUF file).
    #[arg(long)]
    pub decoder: Option<String>,
    /// scratch | full | freeze:N | frozen | lora[:R] for the language model.
    #[arg(long, default_value = "lora")]
    pub decoder_strategy: Strategy,
    /// Column of captions (one row per caption; an image may have several).
    #[arg(long, default_value = "caption")]
    pub caption_column: String,
    /// Input embeddings the image becomes.
    #[arg(long, default_value_t = 10)]
    pub prefix_length: usize,
    #[arg(long, value_enum, default_value = "mlp")]
    pub mapper: MapperKind,
    /// Layers of `--mapper transformer`.
    #[arg(long, default_value_t = 2)]
    pub mapper_layers: usize,
    /// What the mapper reads of a convolutional encoder's last feature
    /// map: 0 its mean (one vector), G the means of a G x G grid of it
    /// (adaptive average pooling), which keep where things are.
    #[arg(long, default_value_t = 0)]
    pub feature_grid: usize,
    /// Longest caption generated, in tokens (default: the longest training
    /// caption's length plus 8).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    #[command(flatten)]
    pub decoding: Decoding,
}

impl Default for CaptionConfig {
    fn default() -> Self {
        Self {
            decoder: None,
            decoder_strategy: Strategy::Lora(None),
            caption_column: "caption".into(),
            prefix_length: 10,
            mapper: MapperKind::Mlp,
            mapper_layers: 2,
            feature_grid: 0,
            max_new_tokens: None,
            decoding: Decoding::default(),
        }
    }
}

/// The language-model part of a captioner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecoderPart {
    /// Its `model_type` (`gpt2`, `llama`).
    pub model_type: String,
    /// The directory its config, weights and tokenizer come from (relative
    /// to the exported model's directory in an export).
    pub dir: PathBuf,
    pub strategy: Strategy,
    /// Adapters on it (a `lora` decoder strategy; none once merged).
    pub lora: Option<LoraConfig>,
}

/// What a captioning run records (`config.json`'s task state, and an
/// exported captioner's `captioning` field).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaptionTaskState {
    pub recipe: Recipe,
    pub decoder: DecoderPart,
    pub mapper: MapperKind,
    pub prefix_length: usize,
    /// Width of the mapper's hidden layer.
    pub mapper_hidden: usize,
    /// Layers of a transformer mapper.
    #[serde(default)]
    pub mapper_layers: usize,
    /// The encoder's `--feature-grid` (0: pooled).
    #[serde(default)]
    pub feature_grid: usize,
    /// Tokens the tokenizer puts before a text (a BOS): they follow the
    /// prefix in training and start generation.
    pub start: Vec<u32>,
    /// Tokens that end a caption; the first ends each training caption.
    pub eos: Vec<u32>,
    pub max_new_tokens: usize,
    pub decoding: Decoding,
}
