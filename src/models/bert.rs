//! BERT (and every checkpoint of its layout: BERT base/large, MiniLM, bge, ...),
//! with Hugging Face `BertModel` semantics.
//!
//! Data flows: token ids -> word + position + token-type embeddings -> LayerNorm
//! -> dropout -> N post-LN encoder layers (self-attention, add & norm, GELU
//! feed-forward, add & norm) -> last hidden states; the pooler is tanh(Linear)
//! of the first token.
//!
//! Parameters are named after the checkpoint keys
//! (`encoder.layer.{i}.attention.self.query.weight`, ...); checkpoints that
//! carry a `bert.` prefix (saved from a task model) load the same way.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding, LayerNorm, Linear};
use burn::tensor::activation::{gelu, gelu_approximate, relu, silu, softmax};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Deserialize;

use super::params::{
    GroupCounts, LoadReport, NamedTensors, ParamBuilder, export_embedding, export_layer_norm,
    export_linear,
};
use crate::hub::Checkpoint;

/// `config.json` of a BERT-family model, with transformers' field names and
/// defaults.
#[derive(Clone, Debug, Deserialize)]
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

/// The feed-forward activation named by `hidden_act`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU, x * Φ(x) with erf (transformers' "gelu").
    Gelu,
    /// tanh approximation ("gelu_new", "gelu_pytorch_tanh", "gelu_fast").
    GeluTanh,
    Relu,
    Silu,
}

impl Activation {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "relu" => Self::Relu,
            "silu" | "swish" => Self::Silu,
            other => bail!(
                "hidden_act `{other}` is not supported (gelu, gelu_new, gelu_pytorch_tanh, \
                 relu, silu)"
            ),
        })
    }

    fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Gelu => gelu(x),
            Self::GeluTanh => gelu_approximate(x),
            Self::Relu => relu(x),
            Self::Silu => silu(x),
        }
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
        self.dropout.forward(self.layer_norm.forward(x))
    }
}

/// One post-LN encoder layer: `x = LN(x + Attn(x)); x = LN(x + FFN(x))`.
#[derive(Module, Debug)]
pub struct BertLayer {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub attention_output: Linear,
    pub attention_layer_norm: LayerNorm,
    pub intermediate: Linear,
    pub output: Linear,
    pub output_layer_norm: LayerNorm,
    pub attention_dropout: Dropout,
    pub hidden_dropout: Dropout,
    #[module(skip)]
    pub num_heads: usize,
    #[module(skip)]
    pub activation: Activation,
}

impl BertLayer {
    /// `x`: `[batch, seq, hidden]`; `mask_bias`: `[batch, 1, 1, seq]`, 0 for
    /// tokens to attend to and a large negative number for padding.
    /// Returns `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<3>, mask_bias: Tensor<4>) -> Tensor<3> {
        let [batch, seq, hidden] = x.dims();
        let heads = self.num_heads;
        let head_dim = hidden / heads;
        // Projections run on [batch * seq, hidden]: one large matrix product
        // per weight instead of one per sequence.
        let x = x.reshape([batch * seq, hidden]);
        let split = |t: Tensor<2>| t.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2);

        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x.clone()));
        let dropout_active = self.attention_dropout.prob > 0.0
            && self.attention_dropout.training.is_enabled()
            && x.device().is_autodiff();
        let context = if dropout_active {
            // Dropout on the attention probabilities needs them materialised.
            let scores = q.matmul(k.transpose()) / (head_dim as f64).sqrt() + mask_bias;
            let probs = self.attention_dropout.forward(softmax(scores, 3));
            probs.matmul(v)
        } else {
            // The backend's fused attention (on autodiff backends it is the
            // same decomposition as above, with a correct backward).
            attention(
                q,
                k,
                v,
                None,
                Some(mask_bias.expand([batch, heads, seq, seq])),
                AttentionModuleOptions {
                    scale: None,
                    softcap: None,
                    is_causal: false,
                },
            )
        };
        let context = context.swap_dims(1, 2).reshape([batch * seq, hidden]);

        let attended = self
            .hidden_dropout
            .forward(self.attention_output.forward(context));
        let x = self.attention_layer_norm.forward(attended + x);

        let inner = self.activation.apply(self.intermediate.forward(x.clone()));
        let out = self.hidden_dropout.forward(self.output.forward(inner));
        self.output_layer_norm
            .forward(out + x)
            .reshape([batch, seq, hidden])
    }
}

/// The pre-trained encoder: embeddings, layers and (optionally) the pooler.
#[derive(Module, Debug)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    pub layers: Vec<BertLayer>,
    pub pooler: Option<Linear>,
}

/// Value added to attention scores of padding positions; exp() of it is 0 in f32.
const MASK_NEG: f32 = -1.0e9;

impl BertModel {
    /// Builds the model from `builder` (pretrained or scratch). `prefix` is the
    /// key prefix in the checkpoint (`""` or `"bert."`).
    pub fn build(
        config: &BertConfig,
        builder: &mut ParamBuilder<'_>,
        prefix: &str,
        with_pooler: bool,
    ) -> Result<Self> {
        config.validate()?;
        let h = config.hidden_size;
        let std = config.initializer_range;
        let eps = config.layer_norm_eps;
        let activation = Activation::parse(&config.hidden_act)?;
        builder.ignore_suffix("embeddings.position_ids");

        let e = format!("{prefix}embeddings");
        let embeddings = BertEmbeddings {
            word_embeddings: builder.embedding(
                &format!("{e}.word_embeddings"),
                config.vocab_size,
                h,
                std,
                config.pad_token_id,
            )?,
            position_embeddings: builder.embedding(
                &format!("{e}.position_embeddings"),
                config.max_position_embeddings,
                h,
                std,
                None,
            )?,
            token_type_embeddings: builder.embedding(
                &format!("{e}.token_type_embeddings"),
                config.type_vocab_size,
                h,
                std,
                None,
            )?,
            layer_norm: builder.layer_norm(&format!("{e}.LayerNorm"), h, eps)?,
            dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
        };

        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let l = format!("{prefix}encoder.layer.{i}");
            layers.push(BertLayer {
                query: builder.linear(&format!("{l}.attention.self.query"), h, h, std)?,
                key: builder.linear(&format!("{l}.attention.self.key"), h, h, std)?,
                value: builder.linear(&format!("{l}.attention.self.value"), h, h, std)?,
                attention_output: builder.linear(
                    &format!("{l}.attention.output.dense"),
                    h,
                    h,
                    std,
                )?,
                attention_layer_norm: builder.layer_norm(
                    &format!("{l}.attention.output.LayerNorm"),
                    h,
                    eps,
                )?,
                intermediate: builder.linear(
                    &format!("{l}.intermediate.dense"),
                    h,
                    config.intermediate_size,
                    std,
                )?,
                output: builder.linear(
                    &format!("{l}.output.dense"),
                    config.intermediate_size,
                    h,
                    std,
                )?,
                output_layer_norm: builder.layer_norm(&format!("{l}.output.LayerNorm"), h, eps)?,
                attention_dropout: DropoutConfig::new(config.attention_probs_dropout_prob).init(),
                hidden_dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
                num_heads: config.num_attention_heads,
                activation,
            });
        }
        let pooler = if with_pooler {
            Some(builder.linear(&format!("{prefix}pooler.dense"), h, h, std)?)
        } else {
            None
        };
        Ok(Self {
            embeddings,
            layers,
            pooler,
        })
    }

    /// Loads a BERT-layout checkpoint directory (config.json + weights).
    pub fn from_pretrained(dir: &Path, device: &Device) -> Result<(Self, BertConfig, LoadReport)> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let checkpoint = Checkpoint::load(dir)?;
        let prefix = checkpoint_prefix(&checkpoint)?;
        let mut builder = ParamBuilder::pretrained(&checkpoint, device, 0);
        let model = Self::build(&config, &mut builder, &prefix, true)?;
        Ok((model, config, builder.finish()))
    }

    /// Additive attention bias from a `[batch, seq]` 0/1 mask: `[batch, 1, 1, seq]`.
    pub fn mask_bias(attention_mask: Tensor<2>) -> Tensor<4> {
        let [batch, seq] = attention_mask.dims();
        ((attention_mask.neg() + 1.0) * MASK_NEG).reshape([batch, 1, 1, seq])
    }

    /// Last hidden states, `[batch, seq, hidden]`.
    pub fn forward(&self, input: &BertInput) -> Tensor<3> {
        let mask = Self::mask_bias(input.attention_mask.clone());
        let mut x = self
            .embeddings
            .forward(input.input_ids.clone(), input.token_type_ids.clone());
        for layer in &self.layers {
            x = layer.forward(x, mask.clone());
        }
        x
    }

    /// tanh(W h_[CLS] + b): `[batch, seq, hidden]` -> `[batch, hidden]`.
    pub fn pool(&self, hidden: Tensor<3>) -> Option<Tensor<2>> {
        let pooler = self.pooler.as_ref()?;
        let [batch, _, h] = hidden.dims();
        let first = hidden.narrow(1, 0, 1).reshape([batch, h]);
        Some(pooler.forward(first).tanh())
    }

    /// Every parameter under its checkpoint key (`prefix` is `""` or `"bert."`),
    /// in PyTorch's layout: the inverse of [`BertModel::build`].
    pub fn export(&self, prefix: &str, out: &mut NamedTensors) {
        self.export_groups(prefix, out, &|_| true);
    }

    /// [`BertModel::export`] of the layer groups `keep` accepts (0 the
    /// embeddings, i + 1 encoder layer i, layers + 1 the pooler).
    pub fn export_groups(
        &self,
        prefix: &str,
        out: &mut NamedTensors,
        keep: &dyn Fn(usize) -> bool,
    ) {
        let e = format!("{prefix}embeddings");
        if keep(0) {
            export_embedding(
                out,
                &format!("{e}.word_embeddings"),
                &self.embeddings.word_embeddings,
            );
            export_embedding(
                out,
                &format!("{e}.position_embeddings"),
                &self.embeddings.position_embeddings,
            );
            export_embedding(
                out,
                &format!("{e}.token_type_embeddings"),
                &self.embeddings.token_type_embeddings,
            );
            export_layer_norm(out, &format!("{e}.LayerNorm"), &self.embeddings.layer_norm);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            if !keep(i + 1) {
                continue;
            }
            let l = format!("{prefix}encoder.layer.{i}");
            export_linear(out, &format!("{l}.attention.self.query"), &layer.query);
            export_linear(out, &format!("{l}.attention.self.key"), &layer.key);
            export_linear(out, &format!("{l}.attention.self.value"), &layer.value);
            export_linear(
                out,
                &format!("{l}.attention.output.dense"),
                &layer.attention_output,
            );
            export_layer_norm(
                out,
                &format!("{l}.attention.output.LayerNorm"),
                &layer.attention_layer_norm,
            );
            export_linear(out, &format!("{l}.intermediate.dense"), &layer.intermediate);
            export_linear(out, &format!("{l}.output.dense"), &layer.output);
            export_layer_norm(
                out,
                &format!("{l}.output.LayerNorm"),
                &layer.output_layer_norm,
            );
        }
        if let Some(p) = &self.pooler
            && keep(self.layers.len() + 1)
        {
            export_linear(out, &format!("{prefix}pooler.dense"), p);
        }
    }

    /// Parameter counts per layer group, in the order data flows; the group
    /// names are those freezing strategies refer to.
    pub fn group_counts(&self) -> GroupCounts {
        let mut groups = vec![("embeddings".to_string(), self.embeddings.num_params())];
        for (i, layer) in self.layers.iter().enumerate() {
            groups.push((format!("encoder.layer.{i}"), layer.num_params()));
        }
        if let Some(p) = &self.pooler {
            groups.push(("pooler".to_string(), p.num_params()));
        }
        groups
    }
}

/// The output of a frozen prefix, as the trainable part above it reads it.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // built once per batch, never stored
pub enum FrozenOutput {
    /// Hidden states `[batch, seq, hidden]` and the `[batch, seq]` 0/1 mask.
    Hidden {
        x: Tensor<3>,
        attention_mask: Tensor<2>,
    },
    /// The [CLS] vector `[batch, hidden]` after the last encoder layer.
    First(Tensor<2>),
}

/// Hugging Face `BertForSequenceClassification`: the encoder, the pooler,
/// dropout and a linear layer to `num_labels` logits.
#[derive(Module, Debug)]
pub struct BertClassifier {
    pub bert: BertModel,
    pub dropout: Dropout,
    pub classifier: Linear,
}

impl BertClassifier {
    /// Builds encoder and head. With a checkpoint that has no `classifier.*`
    /// keys (a base model), the head is new and said to be so in the report.
    pub fn build(
        config: &BertConfig,
        builder: &mut ParamBuilder<'_>,
        num_labels: usize,
    ) -> Result<Self> {
        if num_labels < 2 {
            bail!("a classifier needs at least 2 labels, the data has {num_labels}");
        }
        let prefix = match builder.checkpoint() {
            Some(c) => checkpoint_prefix(c)?,
            None => "bert.".to_string(),
        };
        builder.expect_new_head("classifier.");
        let bert = BertModel::build(config, builder, &prefix, true)?;
        let classifier = builder.linear(
            "classifier",
            config.hidden_size,
            num_labels,
            config.initializer_range,
        )?;
        let p = config
            .classifier_dropout
            .unwrap_or(config.hidden_dropout_prob);
        Ok(Self {
            bert,
            dropout: DropoutConfig::new(p).init(),
            classifier,
        })
    }

    /// Logits `[batch, num_labels]`.
    pub fn forward(&self, input: &BertInput) -> Tensor<2> {
        let hidden = self.bert.forward(input);
        self.head(self.first_token(hidden))
    }

    /// Logits, with the bottom `frozen` layer groups (0 = embeddings, i =
    /// encoder layer i - 1) run on the plain device, outside autodiff: no
    /// graph is recorded for them and the backend's inference kernels are used.
    /// The result equals [`BertClassifier::forward`] with those groups frozen.
    pub fn forward_frozen_prefix(&self, input: &BertInput, frozen: usize) -> Tensor<2> {
        let layers = self.bert.layers.len();
        if frozen == 0 || !input.input_ids.device().is_autodiff() {
            return self.forward(input);
        }
        let mask = BertModel::mask_bias(input.attention_mask.clone());
        let plain_mask = mask.clone().inner();
        let mut x = self.bert.embeddings.valid().forward(
            input.input_ids.clone().inner(),
            input.token_type_ids.clone().inner(),
        );
        let frozen_layers = (frozen - 1).min(layers);
        for layer in &self.bert.layers[..frozen_layers] {
            x = layer.valid().forward(x, plain_mask.clone());
        }
        if frozen > layers + 1 {
            return Tensor::from_inner(self.valid().head(self.first_token(x)));
        }
        let mut x = Tensor::from_inner(x);
        for layer in &self.bert.layers[frozen_layers..] {
            x = layer.forward(x, mask.clone());
        }
        self.head(self.first_token(x))
    }

    /// What the bottom `frozen` layer groups output (`frozen` >= 1): hidden
    /// states `[batch, seq, hidden]` after encoder layer `frozen - 2` (after
    /// the embeddings for `frozen` = 1). Run it on a model in inference mode
    /// ([`Module::valid`]) to get the values training sees from a frozen prefix.
    pub fn frozen_output(&self, input: &BertInput, frozen: usize) -> Tensor<3> {
        let frozen_layers = frozen.saturating_sub(1).min(self.bert.layers.len());
        let mask = BertModel::mask_bias(input.attention_mask.clone());
        let mut x = self
            .bert
            .embeddings
            .forward(input.input_ids.clone(), input.token_type_ids.clone());
        for layer in &self.bert.layers[..frozen_layers] {
            x = layer.forward(x, mask.clone());
        }
        x
    }

    /// Logits from what the bottom `frozen` groups output: the layers above
    /// the boundary, then the head. With `frozen` = layers + 1 (every encoder
    /// layer frozen) only the [CLS] vector is needed ([`FrozenOutput::First`]).
    pub fn forward_from_frozen(&self, input: FrozenOutput, frozen: usize) -> Tensor<2> {
        match input {
            FrozenOutput::First(cls) => self.head(cls),
            FrozenOutput::Hidden {
                mut x,
                attention_mask,
            } => {
                let frozen_layers = frozen.saturating_sub(1).min(self.bert.layers.len());
                let mask = BertModel::mask_bias(attention_mask);
                for layer in &self.bert.layers[frozen_layers..] {
                    x = layer.forward(x, mask.clone());
                }
                self.head(self.first_token(x))
            }
        }
    }

    /// The [CLS] hidden state, `[batch, hidden]`: what the head reads.
    pub fn first_token(&self, hidden: Tensor<3>) -> Tensor<2> {
        let [batch, _, h] = hidden.dims();
        hidden.narrow(1, 0, 1).reshape([batch, h])
    }

    /// Pooler, dropout, classifier: `[batch, hidden]` -> `[batch, num_labels]`.
    pub fn head(&self, cls: Tensor<2>) -> Tensor<2> {
        let pooled = match &self.bert.pooler {
            Some(p) => p.forward(cls).tanh(),
            None => cls,
        };
        self.classifier.forward(self.dropout.forward(pooled))
    }

    pub fn num_labels(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    /// All parameters under transformers' key names (`bert.*`, `classifier.*`).
    pub fn export(&self) -> NamedTensors {
        self.export_groups(&|_| true)
    }

    /// [`BertClassifier::export`] of the layer groups `keep` accepts
    /// (layers + 1, the head, holds the classifier too).
    pub fn export_groups(&self, keep: &dyn Fn(usize) -> bool) -> NamedTensors {
        let mut out = Vec::new();
        self.bert.export_groups("bert.", &mut out, keep);
        if keep(self.bert.layers.len() + 1) {
            export_linear(&mut out, "classifier", &self.classifier);
        }
        out
    }
}

/// `""` when keys are `embeddings.*`, `"bert."` when they are `bert.embeddings.*`.
pub fn checkpoint_prefix(checkpoint: &Checkpoint) -> Result<String> {
    for prefix in ["", "bert."] {
        if checkpoint
            .tensors
            .contains_key(&format!("{prefix}embeddings.word_embeddings.weight"))
        {
            return Ok(prefix.to_string());
        }
    }
    let sample: Vec<&str> = checkpoint
        .tensors
        .keys()
        .take(5)
        .map(|s| s.as_str())
        .collect();
    bail!(
        "{} holds no BERT weights: no `embeddings.word_embeddings.weight` (with or without a \
         `bert.` prefix); its first keys are {:?}",
        checkpoint
            .files
            .first()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the checkpoint".into()),
        sample
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_config() -> BertConfig {
        serde_json::from_str(
            r#"{"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2,
                "num_attention_heads": 4, "intermediate_size": 32,
                "max_position_embeddings": 20}"#,
        )
        .unwrap()
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
    fn scratch_model_has_the_parameter_count_of_its_config() {
        let c = tiny_config();
        let device = Device::default();
        let mut b = ParamBuilder::scratch(&device, 1);
        let m = BertModel::build(&c, &mut b, "", true).unwrap();
        let h = 16;
        let emb = 50 * h + 20 * h + 2 * h + 2 * h;
        let layer = 4 * (h * h + h) + 2 * (2 * h) + (h * 32 + 32) + (32 * h + h);
        let pooler = h * h + h;
        assert_eq!(m.num_params(), emb + 2 * layer + pooler);
        let groups = m.group_counts();
        assert_eq!(groups[0], ("embeddings".to_string(), emb));
        assert_eq!(groups[2], ("encoder.layer.1".to_string(), layer));
        // Padding row of the word embeddings is zero, as transformers initialises it.
        let c0 = BertConfig {
            pad_token_id: Some(0),
            ..c
        };
        let mut b = ParamBuilder::scratch(&device, 1);
        let m = BertModel::build(&c0, &mut b, "", false).unwrap();
        let (_, w) = super::super::params::host(&m.embeddings.word_embeddings.weight.val());
        assert!(w[..h].iter().all(|&v| v == 0.0));
        assert!(w[h..2 * h].iter().any(|&v| v != 0.0));
    }

    #[test]
    fn padding_does_not_change_real_token_outputs() {
        let c = tiny_config();
        let device = Device::default();
        let mut b = ParamBuilder::scratch(&device, 3);
        let m = BertModel::build(&c, &mut b, "", true).unwrap();
        let short = BertInput::from_host(&[2, 7, 9, 3], &[0; 4], &[1; 4], 1, 4, &device);
        let padded = BertInput::from_host(
            &[2, 7, 9, 3, 0, 0],
            &[0; 6],
            &[1, 1, 1, 1, 0, 0],
            1,
            6,
            &device,
        );
        let (_, a) = super::super::params::host(&m.forward(&short));
        let (_, p) = super::super::params::host(&m.forward(&padded));
        let max = a
            .iter()
            .zip(&p[..a.len()])
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(max < 1e-5, "padding changed real outputs by {max}");
    }

    #[test]
    fn classifier_export_is_the_inverse_of_loading() {
        let c = tiny_config();
        let device = Device::default();
        let mut b = ParamBuilder::scratch(&device, 5);
        let m = BertClassifier::build(&c, &mut b, 3).unwrap();
        let exported = m.export();
        assert!(
            exported
                .iter()
                .any(|(k, s, _)| k == "classifier.weight" && s == &[3, 16])
        );
        assert!(
            exported
                .iter()
                .all(|(k, _, _)| k.starts_with("bert.") || k.starts_with("classifier."))
        );
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
        };
        let mut b = ParamBuilder::pretrained(&checkpoint, &device, 0);
        let again = BertClassifier::build(&c, &mut b, 3).unwrap();
        let report = b.finish();
        assert!(
            report.missing.is_empty() && report.new_head.is_empty() && report.unexpected.is_empty()
        );
        assert_eq!(again.export(), exported);
        let input = BertInput::from_host(&[2, 7, 9, 3], &[0; 4], &[1; 4], 1, 4, &device);
        let (_, a) = super::super::params::host(&m.forward(&input));
        let (_, b) = super::super::params::host(&again.forward(&input));
        assert_eq!(a, b);
    }

    #[test]
    fn unknown_activation_is_an_error() {
        let mut c = tiny_config();
        c.hidden_act = "mish".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("mish"), "{err}");
    }
}
