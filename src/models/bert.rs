//! BERT (and every checkpoint of its layout: BERT base/large, MiniLM, bge, ...),
//! with Hugging Face `BertModel` semantics.
//!
//! Data flows: token ids -> word + position + token-type embeddings -> LayerNorm
//! -> dropout -> N post-LN encoder layers (self-attention, add & norm, GELU
//! feed-forward, add & norm) -> last hidden states; the pooler is tanh(Linear)
//! of the first token.
//!
//! The module structs mirror transformers' `BertModel` hierarchy, so a
//! parameter's path is its checkpoint key (`encoder.layer.{i}.attention.self.query.weight`;
//! `self_` and `layer_norm` are spelled `self` and `LayerNorm` in keys); checkpoints that carry a `bert.`
//! prefix (saved from a task model) load the same way.
//!
//! Layer groups: the embeddings, each encoder layer, and the pooler (the top
//! group, where a task's head joins).

use crate::kernels::matmul::LinearExt;
use std::ops::Range;
use std::path::Path;

use crate::kernels::dropout::DropoutExt;
use anyhow::{Context, Result, bail};
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Embedding, Linear};

use crate::kernels::layer_norm::LayerNorm;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::params::LoadReport;
use super::state::{Init, Source, load};
pub use super::transformer::Activation;
use super::transformer::{Intermediate, SelfAttention, layer_norm, proj};
use super::{Architecture, Flow, Group, Positions, TaskModel};
use crate::hub::Checkpoint;

/// `config.json` of a BERT-family model, with transformers' field names and
/// defaults.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: Option<usize>,
    #[serde(default = "default_pos_type")]
    pub position_embedding_type: String,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    /// Dropout before a classification head; None means hidden_dropout_prob.
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_max_pos() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_init_range() -> f64 {
    0.02
}
fn default_eps() -> f64 {
    1e-12
}
fn default_pos_type() -> String {
    "absolute".into()
}

impl BertConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read {}: a model directory needs a config.json next to its weights",
                path.display()
            )
        })?;
        let config: BertConfig = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid BERT config.json (needs vocab_size, hidden_size, \
                 num_hidden_layers, num_attention_heads, intermediate_size)",
                path.display()
            )
        })?;
        config
            .validate()
            .with_context(|| format!("in {}", path.display()))?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            bail!(
                "hidden_size ({}) must be a multiple of num_attention_heads ({})",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if self.position_embedding_type != "absolute" {
            bail!(
                "position_embedding_type `{}` is not supported (only `absolute`)",
                self.position_embedding_type
            );
        }
        Activation::parse(&self.hidden_act)?;
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Token ids, their segment ids and the attention mask, as tensors.
#[derive(Clone, Debug)]
pub struct BertInput {
    /// `[batch, seq]`
    pub input_ids: Tensor<2, Int>,
    /// `[batch, seq]`
    pub token_type_ids: Tensor<2, Int>,
    /// `[batch, seq]`, 1.0 for real tokens, 0.0 for padding.
    pub attention_mask: Tensor<2>,
}

impl BertInput {
    /// From a tokenised, padded batch.
    pub fn from_batch(b: &crate::tokenize::TokenBatch, device: &Device) -> Self {
        Self::from_host(
            &b.input_ids,
            &b.token_type_ids,
            &b.attention_mask,
            b.batch,
            b.seq_len,
            device,
        )
    }

    /// From row-major host arrays of `batch * seq` entries.
    pub fn from_host(
        input_ids: &[i64],
        token_type_ids: &[i64],
        attention_mask: &[i64],
        batch: usize,
        seq: usize,
        device: &Device,
    ) -> Self {
        let mask: Vec<f32> = attention_mask.iter().map(|&m| m as f32).collect();
        Self {
            input_ids: Tensor::from_data(TensorData::new(input_ids.to_vec(), [batch, seq]), device),
            token_type_ids: Tensor::from_data(
                TensorData::new(token_type_ids.to_vec(), [batch, seq]),
                device,
            ),
            attention_mask: Tensor::from_data(TensorData::new(mask, [batch, seq]), device),
        }
    }

    /// What group 0 (the embeddings) takes.
    pub fn flow(&self) -> Flow {
        Flow::Tokens {
            ids: self.input_ids.clone(),
            type_ids: self.token_type_ids.clone(),
            mask: self.attention_mask.clone(),
        }
    }
}

/// A biased Linear layer of zeros (see [`super::transformer::linear`]).
fn linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    super::transformer::linear(d_in, d_out, true, device)
}

fn embedding(n: usize, d: usize, device: &Device) -> Embedding {
    Embedding {
        weight: Param::from_tensor(Tensor::zeros([n, d], device)),
    }
}

#[derive(Module, Debug)]
pub struct BertEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub layer_norm: LayerNorm,
    pub dropout: Dropout,
}

impl BertEmbeddings {
    /// `[batch, seq]` ids -> `[batch, seq, hidden]`.
    pub fn forward(&self, input_ids: Tensor<2, Int>, token_type_ids: Tensor<2, Int>) -> Tensor<3> {
        let [batch, seq] = input_ids.dims();
        let device = input_ids.device();
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device)
            .reshape([1, seq])
            .expand([batch, seq]);
        let x = self.word_embeddings.forward(input_ids)
            + self.position_embeddings.forward(positions)
            + self.token_type_embeddings.forward(token_type_ids);
        self.dropout.apply(self.layer_norm.forward(x))
    }
}

/// Output projection, dropout, residual and LayerNorm (of attention or of the FFN).
#[derive(Module, Debug)]
pub struct BertOutput {
    pub dense: super::lora::Linear,
    pub layer_norm: LayerNorm,
    pub dropout: Dropout,
}

impl BertOutput {
    /// `LN(residual + dropout(dense(x)))`, `[n, in]` -> `[n, hidden]`.
    fn forward(&self, x: Tensor<2>, residual: Tensor<2>) -> Tensor<2> {
        let out = self.dropout.apply(self.dense.forward(x));
        self.layer_norm.forward(out + residual)
    }
}

/// BERT's `attention.self`: the shared multi-head self-attention.
pub type BertSelfAttention = SelfAttention;

/// BERT's `intermediate`: the shared feed-forward expansion.
pub type BertIntermediate = Intermediate;

#[derive(Module, Debug)]
pub struct BertAttention {
    /// `attention.self` in checkpoint keys.
    pub self_: BertSelfAttention,
    pub output: BertOutput,
}

/// One post-LN encoder layer: `x = LN(x + Attn(x)); x = LN(x + FFN(x))`.
#[derive(Module, Debug)]
pub struct BertLayer {
    pub attention: BertAttention,
    pub intermediate: BertIntermediate,
    pub output: BertOutput,
}

impl BertLayer {
    /// `x`: `[batch, seq, hidden]`; `mask_bias`: `[batch, 1, 1, seq]`, 0 for
    /// tokens to attend to and a large negative number for padding.
    /// Returns `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<3>, mask_bias: Tensor<4>) -> Tensor<3> {
        let [batch, seq, hidden] = x.dims();
        // Projections run on [batch * seq, hidden]: one large matrix product
        // per weight instead of one per sequence.
        let x = x.reshape([batch * seq, hidden]);
        let context = self
            .attention
            .self_
            .forward(x.clone(), Some(mask_bias), batch, seq);
        let x = self.attention.output.forward(context, x);
        let inner = self.intermediate.forward(x.clone());
        self.output.forward(inner, x).reshape([batch, seq, hidden])
    }
}

#[derive(Module, Debug)]
pub struct BertEncoder {
    pub layer: Vec<BertLayer>,
}

/// tanh(W h_[CLS] + b).
#[derive(Module, Debug)]
pub struct BertPooler {
    pub dense: Linear,
}

/// transformers' `BertModel`: embeddings, encoder layers and the pooler.
#[derive(Module, Debug)]
pub struct Bert {
    pub embeddings: BertEmbeddings,
    pub encoder: BertEncoder,
    pub pooler: BertPooler,
    #[module(skip)]
    pub config: BertConfig,
}

/// Value added to attention scores of padding positions; exp() of it is 0 in f32.
const MASK_NEG: f32 = -1.0e9;

/// Additive attention bias from a `[batch, seq]` 0/1 mask: `[batch, 1, 1, seq]`.
pub fn mask_bias(attention_mask: Tensor<2>) -> Tensor<4> {
    let [batch, seq] = attention_mask.dims();
    ((attention_mask.neg() + 1.0) * MASK_NEG).reshape([batch, 1, 1, seq])
}

impl Bert {
    /// The architecture `config` describes, its parameters zero until loaded
    /// or initialised ([`super::state::load`]).
    pub fn new(config: &BertConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let (h, f, eps) = (
            config.hidden_size,
            config.intermediate_size,
            config.layer_norm_eps,
        );
        let activation = Activation::parse(&config.hidden_act)?;
        let hidden_dropout = || DropoutConfig::new(config.hidden_dropout_prob).init();
        let output = |d_in: usize| BertOutput {
            dense: proj(d_in, h, true, device),
            layer_norm: layer_norm(h, eps, device),
            dropout: hidden_dropout(),
        };
        let layer = (0..config.num_hidden_layers)
            .map(|_| BertLayer {
                attention: BertAttention {
                    self_: BertSelfAttention {
                        query: proj(h, h, true, device),
                        key: proj(h, h, true, device),
                        value: proj(h, h, true, device),
                        dropout: DropoutConfig::new(config.attention_probs_dropout_prob).init(),
                        num_heads: config.num_attention_heads,
                    },
                    output: output(h),
                },
                intermediate: BertIntermediate {
                    dense: proj(h, f, true, device),
                    activation,
                },
                output: output(f),
            })
            .collect();
        Ok(Self {
            embeddings: BertEmbeddings {
                word_embeddings: embedding(config.vocab_size, h, device),
                position_embeddings: embedding(config.max_position_embeddings, h, device),
                token_type_embeddings: embedding(config.type_vocab_size, h, device),
                layer_norm: layer_norm(h, eps, device),
                dropout: hidden_dropout(),
            },
            encoder: BertEncoder { layer },
            pooler: BertPooler {
                dense: linear(h, h, device),
            },
            config: config.clone(),
        })
    }

    /// Loads a BERT-layout checkpoint directory (config.json + weights), as
    /// a base model (no task head).
    pub fn from_pretrained(dir: &Path, device: &Device) -> Result<(Self, LoadReport)> {
        let body = Self::from_config_file(&dir.join("config.json"), device)?;
        let checkpoint = Checkpoint::load(dir)?;
        let model = TaskModel::<Self, Option<Linear>> { body, head: None };
        let (model, report) = load(model, Source::Pretrained(&checkpoint), 0)?;
        Ok((model.body, report))
    }

    /// Last hidden states, `[batch, seq, hidden]`.
    pub fn forward(&self, input: &BertInput) -> Tensor<3> {
        match self.run(input.flow(), 0..self.config.num_hidden_layers + 1) {
            Flow::Hidden { x, .. } => x,
            _ => unreachable!("BERT's encoder layers output hidden states"),
        }
    }

    /// The pooler output, `[batch, seq, hidden]` -> `[batch, hidden]`.
    pub fn pool(&self, hidden: Tensor<3>) -> Tensor<2> {
        let [batch, _, h] = hidden.dims();
        let first = hidden.narrow(1, 0, 1).reshape([batch, h]);
        self.pooler.dense.apply(first).tanh()
    }
}

impl Architecture for Bert {
    const MODEL_TYPE: &'static str = "bert";
    const BASE_PREFIX: &'static str = "bert.";
    const HF_STEM: &'static str = "Bert";
    const RENAMES: &'static [(&'static str, &'static str)] =
        &[("self_", "self"), ("layer_norm", "LayerNorm")];
    const IGNORED_KEY_SUFFIXES: &'static [&'static str] = &["embeddings.position_ids"];
    const SIZE_FIELDS: &'static str = "hidden_size, vocab_size, intermediate_size, \
        num_attention_heads, max_position_embeddings, type_vocab_size";

    fn from_config_file(path: &Path, device: &Device) -> Result<Self> {
        Self::new(&BertConfig::from_file(path)?, device)
    }

    fn groups(&self) -> Vec<Group> {
        let mut groups = vec![Group {
            name: "embeddings".into(),
            paths: vec!["embeddings".into()],
        }];
        for i in 0..self.config.num_hidden_layers {
            let name = format!("encoder.layer.{i}");
            groups.push(Group {
                name: name.clone(),
                paths: vec![name],
            });
        }
        groups.push(Group {
            name: "head".into(),
            paths: vec!["pooler".into()],
        });
        groups
    }

    fn run(&self, flow: Flow, range: Range<usize>) -> Flow {
        let layers = self.config.num_hidden_layers;
        let mut flow = flow;
        let mut cached_bias: Option<Tensor<4>> = None;
        for g in range {
            flow = match (g, flow) {
                (
                    0,
                    Flow::Tokens {
                        ids,
                        type_ids,
                        mask,
                    },
                ) => Flow::Hidden {
                    x: self.embeddings.forward(ids, type_ids),
                    mask,
                },
                (g, Flow::Hidden { x, mask }) if g <= layers => {
                    let bias = cached_bias
                        .get_or_insert_with(|| mask_bias(mask.clone()))
                        .clone();
                    Flow::Hidden {
                        x: self.encoder.layer[g - 1].forward(x, bias),
                        mask,
                    }
                }
                (g, Flow::Hidden { x, .. }) if g == layers + 1 => Flow::Pooled(self.pool(x)),
                (g, other) => panic!("BERT group {g} cannot take {other:?}"),
            };
        }
        flow
    }

    fn reads_after(&self, boundary: usize) -> Positions {
        if boundary > self.config.num_hidden_layers {
            Positions::First
        } else {
            Positions::All
        }
    }

    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    fn feature_size(&self) -> usize {
        self.config.hidden_size
    }

    fn head_dropout(&self) -> f64 {
        self.config
            .classifier_dropout
            .unwrap_or(self.config.hidden_dropout_prob)
    }

    /// The embedding lookup counts as nothing; an encoder layer on b
    /// sequences of s tokens costs 2·b·s·(4h² + 2hf) for its six projections
    /// plus 4·b·s²·h for attention scores and context; the pooler 2·b·h².
    fn group_flops(&self, batch: usize, seq: usize) -> Vec<f64> {
        let (b, s) = (batch as f64, seq as f64);
        let (h, f) = (
            self.config.hidden_size as f64,
            self.config.intermediate_size as f64,
        );
        let layer = 2.0 * b * s * (4.0 * h * h + 2.0 * h * f) + 4.0 * b * s * s * h;
        let mut out = vec![0.0];
        out.extend(std::iter::repeat_n(layer, self.config.num_hidden_layers));
        out.push(2.0 * b * h * h);
        out
    }

    fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }

    const LORA_TARGETS: &'static [&'static str] = super::transformer::LORA_TARGETS;
    const LORA_DEFAULT_TARGETS: &'static [&'static str] = super::transformer::LORA_DEFAULT_TARGETS;

    fn lora_walk(&mut self, targets: &[String], op: &mut super::lora::LoraOp) {
        for l in &mut self.encoder.layer {
            let a = &mut l.attention;
            super::transformer::lora_walk_layer(
                &mut a.self_,
                &mut a.output.dense,
                &mut l.intermediate,
                &mut l.output.dense,
                targets,
                op,
            );
        }
    }

    /// transformers' `BertPreTrainedModel._init_weights`: normal(0,
    /// initializer_range) for Linear and Embedding weights (the padding row
    /// zero), zero biases, LayerNorm 1 and 0.
    fn init(&self, path: &str, container: &str, field: &str) -> Init {
        let std = self.config.initializer_range;
        match (container, field) {
            ("LayerNorm", "gamma") => Init::Ones,
            ("LayerNorm", _) | (_, "bias") => Init::Zeros,
            ("Embedding", _) if path.ends_with("word_embeddings.weight") => {
                match self.config.pad_token_id {
                    Some(p) => Init::NormalZeroRow(std, p),
                    None => Init::Normal(std),
                }
            }
            _ => Init::Normal(std),
        }
    }

    fn identity(&self) -> String {
        format!("{:?}", self.config)
    }

    fn hf_config(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.config).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.retain(|_, v| !v.is_null());
            o.insert("model_type".into(), serde_json::json!("bert"));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::super::params::host;
    use super::super::state::{self, export, group_counts};
    use super::*;

    fn tiny_config() -> BertConfig {
        serde_json::from_str(
            r#"{"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2,
                "num_attention_heads": 4, "intermediate_size": 32,
                "max_position_embeddings": 20}"#,
        )
        .unwrap()
    }

    type Classifier = TaskModel<Bert, Option<Linear>>;

    fn scratch(c: &BertConfig, head: bool, seed: u64) -> Classifier {
        let device = Device::default();
        let model = TaskModel {
            body: Bert::new(c, &device).unwrap(),
            head: head.then(|| linear(16, 3, &device)),
        };
        state::load(model, Source::Scratch, seed).unwrap().0
    }

    #[test]
    fn config_defaults_follow_transformers() {
        let c = tiny_config();
        assert_eq!(c.hidden_act, "gelu");
        assert_eq!(c.layer_norm_eps, 1e-12);
        assert_eq!(c.type_vocab_size, 2);
        assert_eq!(c.initializer_range, 0.02);
        assert_eq!(c.head_dim(), 4);
    }

    #[test]
    fn module_paths_are_checkpoint_keys() {
        let m = scratch(&tiny_config(), true, 1);
        let keys: Vec<String> = export(&m, &|_| true).into_iter().map(|t| t.0).collect();
        for k in [
            "bert.embeddings.word_embeddings.weight",
            "bert.embeddings.LayerNorm.weight",
            "bert.encoder.layer.1.attention.self.query.weight",
            "bert.encoder.layer.0.attention.output.LayerNorm.bias",
            "bert.encoder.layer.1.intermediate.dense.weight",
            "bert.encoder.layer.1.output.dense.bias",
            "bert.pooler.dense.weight",
            "weight",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} not in {keys:?}");
        }
        // the Linear weight is exported [out, in], as PyTorch stores it
        let t = export(&m, &|p| {
            p == "body.encoder.layer.0.intermediate.dense.weight"
        });
        assert_eq!(t[0].1, vec![32, 16]);
    }

    #[test]
    fn scratch_model_has_the_parameter_count_of_its_config() {
        let c = tiny_config();
        let m = scratch(&c, false, 1);
        let h = 16;
        let emb = 50 * h + 20 * h + 2 * h + 2 * h;
        let layer = 4 * (h * h + h) + 2 * (2 * h) + (h * 32 + 32) + (32 * h + h);
        let pooler = h * h + h;
        assert_eq!(m.num_params(), emb + 2 * layer + pooler);
        let groups = group_counts(&m);
        assert_eq!(groups[0], ("embeddings".to_string(), emb));
        assert_eq!(groups[2], ("encoder.layer.1".to_string(), layer));
        assert_eq!(groups[3], ("head".to_string(), pooler));
        // LayerNorm starts at 1 and 0, biases at 0, weights with std 0.02
        let (_, g) = host(&m.body.embeddings.layer_norm.gamma.val());
        assert!(g.iter().all(|&v| v == 1.0));
        let (_, w) = host(&m.body.encoder.layer[0].attention.self_.query.weight.val());
        let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        assert!((std - 0.02).abs() < 0.004, "std {std}");
        // Padding row of the word embeddings is zero, as transformers initialises it.
        let c0 = BertConfig {
            pad_token_id: Some(0),
            ..c
        };
        let m = scratch(&c0, false, 1);
        let (_, w) = host(&m.body.embeddings.word_embeddings.weight.val());
        assert!(w[..h].iter().all(|&v| v == 0.0));
        assert!(w[h..2 * h].iter().any(|&v| v != 0.0));
    }

    #[test]
    fn padding_does_not_change_real_token_outputs() {
        let m = scratch(&tiny_config(), false, 3).body;
        let device = Device::default();
        let short = BertInput::from_host(&[2, 7, 9, 3], &[0; 4], &[1; 4], 1, 4, &device);
        let padded = BertInput::from_host(
            &[2, 7, 9, 3, 0, 0],
            &[0; 6],
            &[1, 1, 1, 1, 0, 0],
            1,
            6,
            &device,
        );
        let (_, a) = host(&m.forward(&short));
        let (_, p) = host(&m.forward(&padded));
        let max = a
            .iter()
            .zip(&p[..a.len()])
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(max < 1e-5, "padding changed real outputs by {max}");
    }

    #[test]
    fn export_is_the_inverse_of_loading() {
        let c = tiny_config();
        let m = scratch(&c, true, 5);
        let exported = export(&m, &|_| true);
        let checkpoint = crate::hub::Checkpoint {
            tensors: exported
                .iter()
                .map(|(k, s, v)| {
                    (
                        k.clone(),
                        crate::hub::HostTensor {
                            shape: s.clone(),
                            dtype: crate::hub::DType::F32,
                            data: v.clone(),
                        },
                    )
                })
                .collect(),
            files: vec![],
            notes: vec![],
            graph: None,
        };
        let fresh = scratch(&c, true, 99);
        let (again, report) = state::load(fresh, Source::Exact(&checkpoint), 0).unwrap();
        assert_eq!(report.loaded, exported.len());
        assert_eq!(export(&again, &|_| true), exported);
        let device = Device::default();
        let input = BertInput::from_host(&[2, 7, 9, 3], &[0; 4], &[1; 4], 1, 4, &device);
        let (_, a) = host(&m.body.forward(&input));
        let (_, b) = host(&again.body.forward(&input));
        assert_eq!(a, b);

        // A run's checkpoint that lacks a key is an error naming it.
        let mut damaged = checkpoint.clone();
        damaged
            .tensors
            .remove("bert.encoder.layer.1.output.dense.weight");
        let err = state::load(scratch(&c, true, 1), Source::Exact(&damaged), 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lacks `bert.encoder.layer.1.output.dense.weight`"),
            "{err}"
        );
        // ... and so is one with a key the model has no parameter for.
        let mut extra = checkpoint.clone();
        let t = extra.tensors["weight"].clone();
        extra.tensors.insert("classifier.extra".into(), t);
        let err = state::load(scratch(&c, true, 1), Source::Exact(&extra), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`classifier.extra`"), "{err}");
        // A base checkpoint without the `bert.` prefix loads as a pretrained source.
        let mut bare = checkpoint.clone();
        bare.tensors = bare
            .tensors
            .into_iter()
            .map(|(k, t)| (k.strip_prefix("bert.").unwrap_or(&k).to_string(), t))
            .collect();
        let (m2, report) = state::load(scratch(&c, true, 1), Source::Pretrained(&bare), 0).unwrap();
        assert!(report.missing.is_empty(), "{:?}", report.missing);
        assert_eq!(
            export(&m2, &|p| p.starts_with("body.")),
            export(&m, &|p| p.starts_with("body."))
        );
    }

    #[test]
    fn groups_run_in_pieces_equal_the_whole() {
        let m = scratch(&tiny_config(), false, 7).body;
        let device = Device::default();
        let input = BertInput::from_host(
            &[2, 7, 9, 3, 4, 0],
            &[0; 6],
            &[1, 1, 1, 1, 1, 0],
            2,
            3,
            &device,
        );
        let whole = m.run(input.flow(), 0..4);
        let half = m.run(input.flow(), 0..2);
        let rest = m.run(half, 2..4);
        let (Flow::Pooled(a), Flow::Pooled(b)) = (whole, rest) else {
            panic!("the top group pools");
        };
        assert_eq!(host(&a), host(&b));
        assert_eq!(m.reads_after(3), Positions::First);
        assert_eq!(m.reads_after(2), Positions::All);
    }

    #[test]
    fn unknown_activation_is_an_error() {
        let mut c = tiny_config();
        c.hidden_act = "mish".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("mish"), "{err}");
    }
}
