//! Llama (and every checkpoint of its layout: Llama 2/3, SmolLM2, TinyLlama,
//! ...), with Hugging Face `LlamaForCausalLM` semantics.
//!
//! Data flows: token ids -> embeddings -> N pre-norm decoder layers (RMSNorm,
//! grouped-query self-attention with rotary position embeddings, residual;
//! RMSNorm, SwiGLU feed-forward, residual) -> final RMSNorm -> output
//! projection to the vocabulary (the embedding matrix itself when
//! `tie_word_embeddings`).
//!
//! The module structs mirror transformers' hierarchy, so a parameter's path
//! is its checkpoint key: `model.embed_tokens.weight`,
//! `model.layers.{i}.self_attn.q_proj.weight`, `model.layers.{i}.mlp.gate_proj.weight`,
//! `model.layers.{i}.input_layernorm.weight`, `model.norm.weight` and, when the
//! output projection is not tied, `lm_head.weight`. The norms are burn's
//! [`RmsNorm`] (`x / sqrt(mean(x²) + eps) · weight`, the mean taken in f32 as
//! transformers does); its `gamma` is spelled `weight` in keys. Checkpoints
//! of the bare `LlamaModel` (no `model.` prefix) load too.
//!
//! Rotary embeddings use transformers' rotate-half layout (the first half
//! of each head's dimensions pairs with the second half), at the position
//! ids given, with `rope_theta` and the `rope_scaling` types `default`,
//! `linear` and `llama3`; config.json may spell them the transformers 4
//! way (`rope_theta` + `rope_scaling`) or the transformers 5 way
//! (`rope_parameters`), and [`Architecture::hf_config`] writes the latter.
//! The rotation is written here rather than taken from burn's
//! `RotaryEncoding`, which pairs adjacent dimensions (not transformers'
//! halves) and shifts a whole batch by one start offset, where cached
//! generation needs each row's own position ids.
//!
//! Layer groups: `embeddings`, `layers.0` ... `layers.{N-1}`, and `head`
//! (the final norm and the output projection; its output is the logits).

use crate::kernels::matmul::LinearExt;
use std::ops::Range;
use std::path::Path;

use crate::kernels;
use crate::kernels::dropout::DropoutExt;
use crate::kernels::rms_norm::RmsNormExt;
use anyhow::{Context, Result, bail};
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Embedding, Linear, RmsNorm, RmsNormConfig};

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Deserialize;
use serde_json::{Value, json};

use super::causal::{CausalLm, KvCache, causal_bias, positions};
use super::state::Init;
use super::transformer::{linear, proj};
use super::{Architecture, Flow, Group, Positions};
use crate::hub::Checkpoint;

/// `rope_theta` when config.json gives none (transformers' `default_theta`).
const DEFAULT_THETA: f64 = 10_000.0;

/// How rotary frequencies are scaled (`rope_parameters.rope_type`).
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// `default`: the original RoPE frequencies.
    Default,
    /// `linear`: every frequency divided by `factor` (position interpolation).
    Linear { factor: f64 },
    /// `llama3` (Llama 3.1): low frequencies divided by `factor`, high ones
    /// kept, those between interpolated smoothly.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// Rotary position embedding: base and scaling.
#[derive(Clone, Debug, PartialEq)]
pub struct Rope {
    pub theta: f64,
    pub scaling: RopeScaling,
}

impl Rope {
    /// The `dim / 2` inverse frequencies of a head of `dim` dimensions,
    /// computed in f32 as transformers computes them.
    pub fn inv_freq(&self, dim: usize) -> Vec<f32> {
        let base = self.theta as f32;
        let plain = (0..dim)
            .step_by(2)
            .map(|i| 1.0f32 / base.powf(i as f32 / dim as f32));
        match self.scaling {
            RopeScaling::Default => plain.collect(),
            RopeScaling::Linear { factor } => plain.map(|f| f / factor as f32).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let (factor, low, high) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                );
                let old = original_max_position_embeddings as f32;
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                plain
                    .map(|f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }

    /// `rope_parameters` as transformers 5 writes it.
    fn to_json(&self) -> Value {
        let mut v = json!({ "rope_theta": self.theta });
        let o = v.as_object_mut().expect("an object");
        match self.scaling {
            RopeScaling::Default => {
                o.insert("rope_type".into(), json!("default"));
            }
            RopeScaling::Linear { factor } => {
                o.insert("rope_type".into(), json!("linear"));
                o.insert("factor".into(), json!(factor));
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                o.insert("rope_type".into(), json!("llama3"));
                o.insert("factor".into(), json!(factor));
                o.insert("low_freq_factor".into(), json!(low_freq_factor));
                o.insert("high_freq_factor".into(), json!(high_freq_factor));
                o.insert(
                    "original_max_position_embeddings".into(),
                    json!(original_max_position_embeddings),
                );
            }
        }
        v
    }
}

/// One token id or several (`eos_token_id` may be either).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

/// config.json as written, with transformers' `LlamaConfig` defaults for
/// the fields that have one; the sizes have none here, so that a config
/// that lacks one is an error rather than a 7B model.
#[derive(Clone, Debug, Deserialize)]
struct RawConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default = "d_act")]
    hidden_act: String,
    #[serde(default = "d_max_pos")]
    max_position_embeddings: usize,
    #[serde(default = "d_init_range")]
    initializer_range: f64,
    #[serde(default = "d_eps")]
    rms_norm_eps: f64,
    #[serde(default)]
    pad_token_id: Option<u32>,
    #[serde(default = "d_bos")]
    bos_token_id: Option<u32>,
    #[serde(default = "d_eos")]
    eos_token_id: Option<TokenIds>,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default)]
    attention_dropout: f64,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_scaling: Option<Value>,
    #[serde(default)]
    rope_parameters: Option<Value>,
}

fn d_act() -> String {
    "silu".into()
}
fn d_max_pos() -> usize {
    2048
}
fn d_init_range() -> f64 {
    0.02
}
fn d_eps() -> f64 {
    1e-6
}
fn d_bos() -> Option<u32> {
    Some(1)
}
fn d_eos() -> Option<TokenIds> {
    Some(TokenIds::One(2))
}

/// A Llama model's configuration, resolved: key/value heads and head size
/// filled in, the rotary embedding in one place whichever way config.json
/// spelled it.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub initializer_range: f64,
    pub rms_norm_eps: f64,
    pub pad_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub attention_dropout: f64,
    pub rope: Rope,
}

impl LlamaConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read {}: a model directory needs a config.json next to its weights",
                path.display()
            )
        })?;
        Self::from_json(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses and checks the text of a config.json.
    pub fn from_json(text: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text).context(
            "not a valid Llama config.json (it needs the positive integers vocab_size, \
             hidden_size, intermediate_size, num_hidden_layers and num_attention_heads)",
        )?;
        Self::resolve(raw)
    }

    fn resolve(raw: RawConfig) -> Result<Self> {
        for (name, value) in [
            ("vocab_size", raw.vocab_size),
            ("hidden_size", raw.hidden_size),
            ("intermediate_size", raw.intermediate_size),
            ("num_hidden_layers", raw.num_hidden_layers),
            ("num_attention_heads", raw.num_attention_heads),
            ("max_position_embeddings", raw.max_position_embeddings),
        ] {
            if value == 0 {
                bail!("{name} is 0: it must be a positive integer");
            }
        }
        let heads = raw.num_attention_heads;
        if !raw.hidden_size.is_multiple_of(heads) {
            bail!(
                "hidden_size ({}) must be a multiple of num_attention_heads ({heads})",
                raw.hidden_size
            );
        }
        let kv_heads = raw.num_key_value_heads.unwrap_or(heads);
        if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            bail!(
                "num_attention_heads ({heads}) must be a multiple of num_key_value_heads \
                 ({kv_heads}), which must be positive"
            );
        }
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / heads);
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            bail!("head_dim ({head_dim}) must be a positive even number (rotary embeddings)");
        }
        if raw.hidden_act != "silu" && raw.hidden_act != "swish" {
            bail!(
                "hidden_act `{}` is not supported: Llama's feed-forward is SwiGLU, with \
                 `silu`",
                raw.hidden_act
            );
        }
        if raw.rms_norm_eps <= 0.0 {
            bail!("rms_norm_eps ({}) must be positive", raw.rms_norm_eps);
        }
        if !(0.0..1.0).contains(&raw.attention_dropout) {
            bail!(
                "attention_dropout ({}) must be in [0, 1)",
                raw.attention_dropout
            );
        }
        let rope = resolve_rope(&raw)?;
        let eos_token_ids = match &raw.eos_token_id {
            None => Vec::new(),
            Some(TokenIds::One(t)) => vec![*t],
            Some(TokenIds::Many(t)) => t.clone(),
        };
        Ok(Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            max_position_embeddings: raw.max_position_embeddings,
            initializer_range: raw.initializer_range,
            rms_norm_eps: raw.rms_norm_eps,
            pad_token_id: raw.pad_token_id,
            bos_token_id: raw.bos_token_id,
            eos_token_ids,
            tie_word_embeddings: raw.tie_word_embeddings,
            attention_bias: raw.attention_bias,
            mlp_bias: raw.mlp_bias,
            attention_dropout: raw.attention_dropout,
            rope,
        })
    }

    /// SmolLM2-135M(-Instruct): 30 layers, hidden 576, 9 heads / 3 key-value
    /// heads, feed-forward 1536, vocabulary 49152, tied embeddings,
    /// rope_theta 100000.
    pub fn smollm2_135m() -> Self {
        Self::from_json(
            r#"{"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
                "num_hidden_layers": 30, "num_attention_heads": 9,
                "num_key_value_heads": 3, "max_position_embeddings": 8192,
                "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
                "initializer_range": 0.041666666666666664, "tie_word_embeddings": true,
                "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}"#,
        )
        .expect("a valid config")
    }

    /// Width of all query heads together.
    pub fn q_width(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_width(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// `config.json` as transformers 5 writes it for `LlamaForCausalLM`.
    pub fn to_json(&self) -> Value {
        let eos = match self.eos_token_ids.as_slice() {
            [] => Value::Null,
            [one] => json!(one),
            many => json!(many),
        };
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "initializer_range": self.initializer_range,
            "rms_norm_eps": self.rms_norm_eps,
            "pad_token_id": self.pad_token_id,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "attention_dropout": self.attention_dropout,
            "mlp_bias": self.mlp_bias,
            "pretraining_tp": 1,
            "use_cache": true,
            "rope_parameters": self.rope.to_json(),
        })
    }
}

/// The rotary embedding from `rope_parameters` (transformers 5) or
/// `rope_theta` + `rope_scaling` (transformers 4); as in transformers, a
/// non-empty `rope_scaling` wins, and `rope_theta` fills a missing
/// `rope_parameters.rope_theta`.
fn resolve_rope(raw: &RawConfig) -> Result<Rope> {
    let (field, params) = match (&raw.rope_scaling, &raw.rope_parameters) {
        (Some(v), _) if !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty()) => {
            ("rope_scaling", v)
        }
        (_, Some(v)) if !v.is_null() => ("rope_parameters", v),
        _ => ("rope_parameters", &Value::Null),
    };
    let empty = serde_json::Map::new();
    let params = match params {
        Value::Null => &empty,
        Value::Object(o) => o,
        other => bail!("{field} must be an object, not {other}"),
    };
    if params.values().any(Value::is_object) {
        bail!(
            "{field} holds one set of rotary parameters per layer type; Llama has one set \
             (rope_type, rope_theta, ...)"
        );
    }
    let number = |key: &str| -> Result<Option<f64>> {
        match params.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .with_context(|| format!("{field}.{key} must be a number, not {v}")),
        }
    };
    let required = |key: &str, kind: &str| -> Result<f64> {
        number(key)?.with_context(|| format!("{field}.{key} is missing (rope_type `{kind}`)"))
    };
    let theta = match number("rope_theta")? {
        Some(t) => t,
        None => raw.rope_theta.unwrap_or(DEFAULT_THETA),
    };
    if theta <= 0.0 {
        bail!("rope_theta ({theta}) must be positive");
    }
    if let Some(p) = number("partial_rotary_factor")?
        && p != 1.0
    {
        bail!("{field}.partial_rotary_factor {p} is not supported (only 1.0)");
    }
    let kind = match params.get("rope_type").or_else(|| params.get("type")) {
        None | Some(Value::Null) => "default",
        Some(Value::String(s)) => s.as_str(),
        Some(other) => bail!("{field}.rope_type must be a string, not {other}"),
    };
    let positive = |key: &str, v: f64| -> Result<f64> {
        if v > 0.0 {
            Ok(v)
        } else {
            bail!("{field}.{key} ({v}) must be positive")
        }
    };
    let scaling = match kind {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear {
            factor: positive("factor", required("factor", kind)?)?,
        },
        "llama3" => {
            let low = positive("low_freq_factor", required("low_freq_factor", kind)?)?;
            let high = positive("high_freq_factor", required("high_freq_factor", kind)?)?;
            if high <= low {
                bail!(
                    "{field}.high_freq_factor ({high}) must be greater than \
                     low_freq_factor ({low})"
                );
            }
            let original = match number("original_max_position_embeddings")? {
                None => raw.max_position_embeddings,
                Some(v) if v >= 1.0 && v.fract() == 0.0 => v as usize,
                Some(v) => bail!(
                    "{field}.original_max_position_embeddings ({v}) must be a positive integer"
                ),
            };
            RopeScaling::Llama3 {
                factor: positive("factor", required("factor", kind)?)?,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: original,
            }
        }
        other => bail!(
            "{field}.rope_type `{other}` is not supported (supported: default, linear, llama3)"
        ),
    };
    Ok(Rope { theta, scaling })
}

/// Q, K, V and output projections; `num_key_value_heads` key/value heads,
/// each shared by `num_attention_heads / num_key_value_heads` query heads.
#[derive(Module, Debug)]
pub struct LlamaAttention {
    pub q_proj: super::lora::Linear,
    pub k_proj: super::lora::Linear,
    pub v_proj: super::lora::Linear,
    pub o_proj: super::lora::Linear,
    pub dropout: Dropout,
    #[module(skip)]
    pub num_heads: usize,
    #[module(skip)]
    pub num_kv_heads: usize,
    #[module(skip)]
    pub head_dim: usize,
}

/// transformers' `rotate_half` layout: `x·cos + rotate_half(x)·sin`, where
/// `rotate_half([a, b]) = [-b, a]` for the two halves of a head. `x`:
/// `[batch, heads, n, dim]`; `cos`, `sin`: `[batch, 1, n, dim]`.
fn rotary(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
    kernels::rotary::rotary(x, cos, sin)
}

/// `[batch, kv_heads, n, dim]` -> `[batch, kv_heads * groups, n, dim]`, each
/// key/value head repeated for the query heads of its group.
fn repeat_kv(x: Tensor<4>, groups: usize) -> Tensor<4> {
    if groups == 1 {
        return x;
    }
    let [batch, kv_heads, n, dim] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([batch, kv_heads, groups, n, dim])
        .reshape([batch, kv_heads * groups, n, dim])
}

impl LlamaAttention {
    /// `x`: `[batch, n, hidden]` (the `n` newest positions); `cos`, `sin`:
    /// their rotary tables `[batch, 1, n, head_dim]`; `bias`: `[batch, 1, n,
    /// total]` over every position (cached ones first). With a cache, the
    /// new keys and values are appended to `cache.layers[layer]`.
    fn forward(
        &self,
        x: Tensor<3>,
        rope: &(Tensor<4>, Tensor<4>),
        bias: Tensor<4>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let [batch, n, _] = x.dims();
        let (heads, kv_heads, dim) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let split = |t: Tensor<3>, h: usize| t.reshape([batch, n, h, dim]).swap_dims(1, 2);
        let q = split(self.q_proj.forward(x.clone()), heads);
        let k = split(self.k_proj.forward(x.clone()), kv_heads);
        let v = split(self.v_proj.forward(x.clone()), kv_heads);
        let (cos, sin) = rope;
        let q = rotary(q, cos.clone(), sin.clone());
        let k = rotary(k, cos.clone(), sin.clone());
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, k, v),
            None => (k, v),
        };
        let total = k.dims()[2];
        let k = repeat_kv(k, heads / kv_heads);
        let v = repeat_kv(v, heads / kv_heads);
        let scale = 1.0 / (dim as f64).sqrt();
        let dropout_active = self.dropout.prob > 0.0
            && self.dropout.training.is_enabled()
            && x.device().is_autodiff();
        // Dropout on the attention probabilities needs them materialised;
        // and on the CPU this path's products and softmax kernel beat
        // burn's fused op both ways (a scalar loop with libm's `expf`
        // forward, a one-thread decomposition backward).
        let explicit = dropout_active || kernels::is_flex(&x.device());
        let context = if explicit {
            let scores = kernels::matmul(q, k.transpose());
            let probs = kernels::softmax_biased(scores, scale, Some(bias));
            kernels::matmul_merge_heads(self.dropout.apply(probs), v)
        } else {
            attention(
                q,
                k,
                v,
                None,
                Some(bias.expand([batch, heads, n, total])),
                AttentionModuleOptions {
                    scale: Some(scale),
                    softcap: None,
                    is_causal: false,
                },
            )
            .swap_dims(1, 2)
            .reshape([batch, n, heads * dim])
        };
        self.o_proj.forward(context)
    }
}

/// SwiGLU: `down(silu(gate(x)) · up(x))`.
#[derive(Module, Debug)]
pub struct LlamaMlp {
    pub gate_proj: super::lora::Linear,
    pub up_proj: super::lora::Linear,
    pub down_proj: super::lora::Linear,
}

impl LlamaMlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gated =
            kernels::gated::swiglu(self.gate_proj.forward(x.clone()), self.up_proj.forward(x));
        self.down_proj.forward(gated)
    }
}

/// One pre-norm decoder layer: `x = x + Attn(norm(x)); x = x + MLP(norm(x))`.
#[derive(Module, Debug)]
pub struct LlamaDecoderLayer {
    pub self_attn: LlamaAttention,
    pub mlp: LlamaMlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

impl LlamaDecoderLayer {
    fn forward(
        &self,
        x: Tensor<3>,
        rope: &(Tensor<4>, Tensor<4>),
        bias: Tensor<4>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let attended =
            self.self_attn
                .forward(self.input_layernorm.apply(x.clone()), rope, bias, cache);
        let x = x + attended;
        let out = self
            .mlp
            .forward(self.post_attention_layernorm.apply(x.clone()));
        x + out
    }
}

/// transformers' `LlamaModel`: embeddings, decoder layers, final norm.
#[derive(Module, Debug)]
pub struct LlamaModel {
    pub embed_tokens: Embedding,
    pub layers: Vec<LlamaDecoderLayer>,
    pub norm: RmsNorm,
}

/// transformers' `LlamaForCausalLM`: the decoder and the output projection,
/// which is `model.embed_tokens` itself when the embeddings are tied
/// (`lm_head` is then `None`: one parameter, not a copy).
#[derive(Module, Debug)]
pub struct Llama {
    pub model: LlamaModel,
    pub lm_head: Option<Linear>,
    #[module(skip)]
    pub config: LlamaConfig,
}

fn rms_norm(d: usize, eps: f64, device: &Device) -> RmsNorm {
    RmsNormConfig::new(d).with_epsilon(eps).init(device)
}

impl Llama {
    /// The architecture `config` describes, its parameters zero (norms one)
    /// until loaded or initialised ([`super::state::load`]).
    pub fn new(config: &LlamaConfig, device: &Device) -> Result<Self> {
        let c = config;
        let h = c.hidden_size;
        let layers = (0..c.num_hidden_layers)
            .map(|_| LlamaDecoderLayer {
                self_attn: LlamaAttention {
                    q_proj: proj(h, c.q_width(), c.attention_bias, device),
                    k_proj: proj(h, c.kv_width(), c.attention_bias, device),
                    v_proj: proj(h, c.kv_width(), c.attention_bias, device),
                    o_proj: proj(c.q_width(), h, c.attention_bias, device),
                    dropout: DropoutConfig::new(c.attention_dropout).init(),
                    num_heads: c.num_attention_heads,
                    num_kv_heads: c.num_key_value_heads,
                    head_dim: c.head_dim,
                },
                mlp: LlamaMlp {
                    gate_proj: proj(h, c.intermediate_size, c.mlp_bias, device),
                    up_proj: proj(h, c.intermediate_size, c.mlp_bias, device),
                    down_proj: proj(c.intermediate_size, h, c.mlp_bias, device),
                },
                input_layernorm: rms_norm(h, c.rms_norm_eps, device),
                post_attention_layernorm: rms_norm(h, c.rms_norm_eps, device),
            })
            .collect();
        Ok(Self {
            model: LlamaModel {
                embed_tokens: Embedding {
                    weight: Param::from_tensor(Tensor::zeros([c.vocab_size, h], device)),
                },
                layers,
                norm: rms_norm(h, c.rms_norm_eps, device),
            },
            lm_head: (!c.tie_word_embeddings).then(|| linear(h, c.vocab_size, false, device)),
            config: c.clone(),
        })
    }

    /// The rotary tables `[batch, 1, n, head_dim]` (cos, sin) at `positions`
    /// `[batch, n]`.
    pub fn rotary_tables(&self, positions: Tensor<2, Int>) -> (Tensor<4>, Tensor<4>) {
        let [batch, n] = positions.dims();
        let inv = self.config.rope.inv_freq(self.config.head_dim);
        let half = inv.len();
        let device = positions.device();
        let inv = Tensor::<3>::from_data(TensorData::new(inv, [1, 1, half]), &device);
        let freqs = positions.float().reshape([batch, n, 1]) * inv;
        let angles = Tensor::cat(vec![freqs.clone(), freqs], 2).reshape([batch, 1, n, 2 * half]);
        (angles.clone().cos(), angles.sin())
    }

    /// Logits `[batch, n, vocab]` from the last hidden states: the final
    /// norm, then the output projection.
    fn logits(&self, x: Tensor<3>) -> Tensor<3> {
        let x = self.model.norm.apply(x);
        match &self.lm_head {
            Some(head) => head.apply(x),
            None => {
                let [batch, n, h] = x.dims();
                let table = self.model.embed_tokens.weight.val();
                kernels::matmul(x.reshape([batch * n, h]), table.transpose()).reshape([
                    batch,
                    n,
                    self.config.vocab_size,
                ])
            }
        }
    }
}

impl Architecture for Llama {
    const MODEL_TYPE: &'static str = "llama";
    /// `LlamaForCausalLM`'s keys already start with `model.` (the body's
    /// field of that name) or are `lm_head.weight`.
    const BASE_PREFIX: &'static str = "";
    const HF_STEM: &'static str = "Llama";
    const RENAMES: &'static [(&'static str, &'static str)] = &[("gamma", "weight")];
    const SIZE_FIELDS: &'static str = "vocab_size, hidden_size, intermediate_size, \
        num_attention_heads, num_key_value_heads, head_dim, attention_bias, mlp_bias, \
        tie_word_embeddings";
    /// The rotary frequencies older transformers saved with the weights, and
    /// the copy of the embeddings that some tied checkpoints also hold (an
    /// untied model uses it, so it is never left over there).
    const IGNORED_KEY_SUFFIXES: &'static [&'static str] =
        &["self_attn.rotary_emb.inv_freq", "lm_head.weight"];

    fn from_config_file(path: &Path, device: &Device) -> Result<Self> {
        Self::new(&LlamaConfig::from_file(path)?, device)
    }

    /// SmolLM2-135M.
    fn reference(device: &Device) -> Result<Self> {
        Self::new(&LlamaConfig::smollm2_135m(), device)
    }

    fn groups(&self) -> Vec<Group> {
        let mut groups = vec![Group {
            name: "embeddings".into(),
            paths: vec!["model.embed_tokens".into()],
        }];
        for i in 0..self.config.num_hidden_layers {
            groups.push(Group {
                name: format!("layers.{i}"),
                paths: vec![format!("model.layers.{i}")],
            });
        }
        groups.push(Group {
            name: "head".into(),
            paths: vec!["model.norm".into(), "lm_head".into()],
        });
        groups
    }

    /// Group 0 takes [`Flow::Tokens`] (right-padded), every later group
    /// [`Flow::Hidden`]; the top group returns the logits as `x`. Position
    /// ids are `0..seq` in every row.
    fn run(&self, flow: Flow, range: Range<usize>) -> Flow {
        let layers = self.config.num_hidden_layers;
        let mut flow = flow;
        let mut context: Option<((Tensor<4>, Tensor<4>), Tensor<4>)> = None;
        for g in range {
            flow = match (g, flow) {
                (0, Flow::Tokens { ids, mask, .. }) => Flow::Hidden {
                    x: self.model.embed_tokens.forward(ids),
                    mask,
                },
                (g, Flow::Hidden { x, mask }) if g <= layers => {
                    let (rope, bias) = context.get_or_insert_with(|| {
                        let [batch, seq] = mask.dims();
                        let pos = positions(batch, 0, seq, &mask.device());
                        (self.rotary_tables(pos), causal_bias(mask.clone(), seq))
                    });
                    Flow::Hidden {
                        x: self.model.layers[g - 1].forward(x, rope, bias.clone(), None),
                        mask,
                    }
                }
                (g, Flow::Hidden { x, mask }) if g == layers + 1 => Flow::Hidden {
                    x: self.logits(x),
                    mask,
                },
                (g, other) => panic!("Llama group {g} cannot take {other:?}"),
            };
        }
        flow
    }

    /// Every real position, at every boundary.
    fn reads_after(&self, _boundary: usize) -> Positions {
        Positions::All
    }

    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// The top group's output is the logits.
    fn feature_size(&self) -> usize {
        self.config.vocab_size
    }

    fn head_dropout(&self) -> f64 {
        0.0
    }

    /// The embedding lookup counts as nothing. A decoder layer on b
    /// sequences of s positions costs 2·b·s·h·(q + 2kv + q) for the Q, K, V
    /// and output projections (q = heads·head_dim, kv = kv_heads·head_dim),
    /// 2·b·s·3hf for the three feed-forward projections, and 4·b·s²·q for
    /// attention scores and context; the top group 2·b·s·h·vocab for the
    /// output projection. Norms, rotary embeddings, softmax, SiLU and the
    /// residual adds are not counted.
    fn group_flops(&self, batch: usize, seq: usize) -> Vec<f64> {
        let c = &self.config;
        let (b, s) = (batch as f64, seq as f64);
        let (h, f) = (c.hidden_size as f64, c.intermediate_size as f64);
        let (q, kv) = (c.q_width() as f64, c.kv_width() as f64);
        let layer = 2.0 * b * s * h * (2.0 * q + 2.0 * kv)
            + 2.0 * b * s * 3.0 * h * f
            + 4.0 * b * s * s * q;
        let mut out = vec![0.0];
        out.extend(std::iter::repeat_n(layer, c.num_hidden_layers));
        out.push(2.0 * b * s * h * c.vocab_size as f64);
        out
    }

    fn max_positions(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// transformers' `LlamaPreTrainedModel._init_weights`: normal(0,
    /// initializer_range) for Linear and Embedding weights (the padding row
    /// zero), zero biases, RMSNorm weights one.
    const LORA_TARGETS: &'static [&'static str] = &[
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ];
    const LORA_DEFAULT_TARGETS: &'static [&'static str] = &["q_proj", "v_proj"];

    fn lora_walk(&mut self, targets: &[String], op: &mut super::lora::LoraOp) {
        use super::lora::visit;
        for l in &mut self.model.layers {
            let a = &mut l.self_attn;
            visit(&mut a.q_proj, "q_proj", targets, op);
            visit(&mut a.k_proj, "k_proj", targets, op);
            visit(&mut a.v_proj, "v_proj", targets, op);
            visit(&mut a.o_proj, "o_proj", targets, op);
            let m = &mut l.mlp;
            visit(&mut m.gate_proj, "gate_proj", targets, op);
            visit(&mut m.up_proj, "up_proj", targets, op);
            visit(&mut m.down_proj, "down_proj", targets, op);
        }
    }

    fn init(&self, _path: &str, container: &str, field: &str) -> Init {
        let std = self.config.initializer_range;
        match (container, field) {
            ("RmsNorm", _) => Init::Ones,
            (_, "bias") => Init::Zeros,
            ("Embedding", _) => match self.config.pad_token_id {
                Some(p) => Init::NormalZeroRow(std, p as usize),
                None => Init::Normal(std),
            },
            _ => Init::Normal(std),
        }
    }

    fn identity(&self) -> String {
        format!("{:?}", self.config)
    }

    fn hf_config(&self) -> Value {
        self.config.to_json()
    }

    /// A bare `LlamaModel` checkpoint (`embed_tokens.weight`, `layers.N...`,
    /// `norm.weight`) under `LlamaForCausalLM`'s names.
    fn reference_checkpoint(&self, checkpoint: &Checkpoint) -> Option<Checkpoint> {
        let bare = checkpoint.tensors.contains_key("embed_tokens.weight")
            && !checkpoint.tensors.contains_key("model.embed_tokens.weight");
        if !bare {
            return None;
        }
        let mut renamed = checkpoint.clone();
        renamed.tensors = checkpoint
            .tensors
            .iter()
            .map(|(k, t)| {
                let bare_key = k.starts_with("embed_tokens.")
                    || k.starts_with("layers.")
                    || k.starts_with("norm.");
                let key = if bare_key {
                    format!("model.{k}")
                } else {
                    k.clone()
                };
                (key, t.clone())
            })
            .collect();
        Some(renamed)
    }
}

impl CausalLm for Llama {
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn num_layers(&self) -> usize {
        self.config.num_hidden_layers
    }

    fn eos_token_ids(&self) -> Vec<u32> {
        self.config.eos_token_ids.clone()
    }

    fn embed_tokens(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.model.embed_tokens.forward(ids)
    }

    fn forward_embeds(
        &self,
        x: Tensor<3>,
        positions: Tensor<2, Int>,
        key_mask: Tensor<2>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let new = x.dims()[1];
        let layers = self.config.num_hidden_layers;
        if let Some(cache) = cache.as_deref_mut() {
            if cache.layers.is_empty() {
                *cache = KvCache::new(layers);
            }
            assert_eq!(
                cache.layers.len(),
                layers,
                "a key/value cache of {} layers given to a model of {layers}",
                cache.layers.len()
            );
        }
        let cached = cache.as_ref().map_or(0, |c| c.len());
        let total = key_mask.dims()[1];
        assert_eq!(
            total,
            cached + new,
            "the key mask covers {total} positions, the cache {cached} and the new inputs {new}"
        );
        let rope = self.rotary_tables(positions);
        let bias = causal_bias(key_mask, new);
        let mut x = x;
        for (i, layer) in self.model.layers.iter().enumerate() {
            x = layer.forward(x, &rope, bias.clone(), cache.as_deref_mut().map(|c| (c, i)));
        }
        self.logits(x)
    }
}

#[cfg(test)]
mod tests;
