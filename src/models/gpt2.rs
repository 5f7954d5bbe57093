//! GPT-2 (Radford et al. 2019) with transformers' `GPT2LMHeadModel`
//! semantics: token and learned position embeddings, N pre-LN decoder
//! blocks (`x + Attn(LN(x))` with causal self-attention, then
//! `x + MLP(LN(x))`), a final LayerNorm and the output projection to the
//! vocabulary, which is the token embedding matrix itself unless the
//! config unties them (`tie_word_embeddings: false`).
//!
//! The module structs mirror transformers' hierarchy, so a parameter's path
//! is its checkpoint key under `transformer.` (`wte.weight`,
//! `h.3.attn.c_attn.weight`, `h.3.mlp.c_proj.bias`, `ln_f.weight`); an
//! untied output projection is `lm_head.weight`, beside the base model, as
//! transformers names it. Checkpoints of the bare `GPT2Model` (no prefix,
//! as the hub's `gpt2` ships) load too; the causal-mask buffers older
//! files carry (`attn.bias`, `attn.masked_bias`) are ignored, and so is a
//! stored `lm_head.weight` equal to the tied embeddings.
//!
//! GPT-2's projections are transformers' `Conv1D`: a weight stored
//! `[in, out]`, the layout burn computes in, where PyTorch's `nn.Linear`
//! stores `[out, in]`. [`Conv1D`] is therefore its own module, whose
//! weight the state walk loads and exports as stored, without the
//! transpose it gives a `Linear`.
//!
//! Layer groups: `embeddings` (`wte`, `wpe`), `h.0` ... `h.{N-1}`, and
//! `head` (`ln_f` and an untied `lm_head`), which returns the logits
//! `[batch, seq, vocab]` (see [`super::causal`]).

// `lora_A`/`lora_B` fields: the segments of PEFT's checkpoint keys
#![allow(non_snake_case)]

use crate::kernels::matmul::LinearExt;
use std::ops::Range;
use std::path::Path;

use crate::kernels;
use crate::kernels::dropout::DropoutExt;
use anyhow::{Context, Result, bail};
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Embedding, Linear};

use crate::kernels::layer_norm::LayerNorm;

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

pub use super::causal::EncoderStates;
use super::causal::{CausalLm, KvCache, causal_bias, positions};
use super::state::Init;
use super::transformer::{Activation, layer_norm, linear};
use super::{Architecture, Flow, Group, Positions};

/// One token id or several (`eos_token_id` may be either).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            Self::One(id) => vec![*id],
            Self::Many(ids) => ids.clone(),
        }
    }
}

/// `config.json` of a GPT-2 model, with transformers' `GPT2Config` field
/// names and defaults. The size fields are required: every saved GPT-2
/// config carries them, and one without them describes some other model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// Width of the MLP; `None` means 4 * `n_embd`.
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "d_act")]
    pub activation_function: String,
    #[serde(default = "d_dropout")]
    pub resid_pdrop: f64,
    #[serde(default = "d_dropout")]
    pub embd_pdrop: f64,
    #[serde(default = "d_dropout")]
    pub attn_pdrop: f64,
    #[serde(default = "d_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "d_init_range")]
    pub initializer_range: f64,
    /// Divide attention scores by sqrt(head_dim).
    #[serde(default = "d_true")]
    pub scale_attn_weights: bool,
    /// Divide the scores of layer i (from 0) also by i + 1.
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Scale the keys before the product and compute it in f32 under mixed
    /// precision: the same values in exact arithmetic, and here every
    /// product is f32 already.
    #[serde(default)]
    pub reorder_and_upcast_attn: bool,
    /// The output projection is the token embedding matrix.
    #[serde(default = "d_true")]
    pub tie_word_embeddings: bool,
    /// Cross-attention to an encoder (encoder-decoder use): not supported.
    #[serde(default)]
    pub add_cross_attention: bool,
    #[serde(default = "d_special")]
    pub bos_token_id: Option<u32>,
    #[serde(default = "d_eos")]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

fn d_act() -> String {
    "gelu_new".into()
}
fn d_dropout() -> f64 {
    0.1
}
fn d_eps() -> f64 {
    1e-5
}
fn d_init_range() -> f64 {
    0.02
}
fn d_true() -> bool {
    true
}
fn d_special() -> Option<u32> {
    Some(50256)
}
fn d_eos() -> Option<TokenIds> {
    Some(TokenIds::One(50256))
}

impl Default for Gpt2Config {
    /// GPT-2 small (`gpt2`, 124M parameters), transformers' defaults.
    fn default() -> Self {
        serde_json::from_str(
            r#"{"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12,
                "n_head": 12}"#,
        )
        .expect("the other fields have defaults")
    }
}

impl Gpt2Config {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read {}: a model directory needs a config.json next to its weights",
                path.display()
            )
        })?;
        let config: Gpt2Config = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid GPT-2 config.json (vocab_size, n_positions, n_embd, n_layer \
                 and n_head are required positive integers, n_inner an integer or null, \
                 eos_token_id an id or a list of ids)",
                path.display()
            )
        })?;
        config
            .validate()
            .with_context(|| format!("in {}", path.display()))?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_inner", self.n_inner.unwrap_or(1)),
        ] {
            if value == 0 {
                bail!("{field} is 0: it must be a positive integer");
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            bail!(
                "n_embd ({}) must be a multiple of n_head ({})",
                self.n_embd,
                self.n_head
            );
        }
        for (field, p) in [
            ("resid_pdrop", self.resid_pdrop),
            ("embd_pdrop", self.embd_pdrop),
            ("attn_pdrop", self.attn_pdrop),
        ] {
            if !(0.0..1.0).contains(&p) {
                bail!("{field} is {p}: a dropout probability must be in [0, 1)");
            }
        }
        if self.layer_norm_epsilon.is_nan() || self.layer_norm_epsilon <= 0.0 {
            bail!(
                "layer_norm_epsilon is {}: it must be positive",
                self.layer_norm_epsilon
            );
        }
        Activation::parse(&self.activation_function)
            .context("in activation_function (GPT-2's field for the MLP's activation)")?;
        Ok(())
    }

    /// Width of the MLP.
    pub fn inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// The factor attention scores of layer `layer` (from 0) are multiplied by.
    pub fn attention_scale(&self, layer: usize) -> f64 {
        let mut scale = 1.0;
        if self.scale_attn_weights {
            scale /= (self.head_dim() as f64).sqrt();
        }
        if self.scale_attn_by_inverse_layer_idx {
            scale /= (layer + 1) as f64;
        }
        scale
    }
}

/// transformers' `Conv1D`: `x W + b` with `W` stored `[in, out]` (loaded
/// and exported as stored, unlike a `Linear`).
#[derive(Module, Debug)]
pub struct Conv1D {
    /// `[in, out]`
    pub weight: Param<Tensor<2>>,
    /// `[out]`
    pub bias: Param<Tensor<1>>,
    /// An optional LoRA adapter (see [`super::lora`]): `[in, r]`, stored
    /// `[r, in]` as PEFT does with `fan_in_fan_out`.
    pub lora_A: Option<Param<Tensor<2>>>,
    /// `[r, out]`, stored `[out, r]`.
    pub lora_B: Option<Param<Tensor<2>>>,
    pub lora_dropout: Dropout,
    #[module(skip)]
    pub lora_scale: f64,
}

impl Conv1D {
    /// Zeros until loaded or initialised.
    pub fn new(d_in: usize, d_out: usize, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::zeros([d_in, d_out], device)),
            bias: Param::from_tensor(Tensor::zeros([d_out], device)),
            lora_A: None,
            lora_B: None,
            lora_dropout: super::lora::no_dropout(),
            lora_scale: 0.0,
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let delta = super::lora::adapter_delta(
            &x,
            &self.lora_A,
            &self.lora_B,
            &self.lora_dropout,
            self.lora_scale,
        );
        let y = kernels::linear(x, self.weight.val(), Some(self.bias.val()));
        match delta {
            Some(d) => y + d,
            None => y,
        }
    }
}

impl super::lora::Adaptable for Conv1D {
    fn sizes(&self) -> (usize, usize) {
        let [i, o] = self.weight.dims();
        (i, o)
    }
    fn device(&self) -> Device {
        self.weight.device()
    }
    fn adapter_mut(&mut self) -> super::lora::AdapterMut<'_> {
        super::lora::AdapterMut {
            weight: &mut self.weight,
            a: &mut self.lora_A,
            b: &mut self.lora_B,
            dropout: &mut self.lora_dropout,
            scale: &mut self.lora_scale,
        }
    }
}

/// Causal self-attention with the fused Q/K/V projection `c_attn`.
#[derive(Module, Debug)]
pub struct Gpt2Attention {
    /// `[n_embd, 3 * n_embd]`: queries, keys and values side by side.
    pub c_attn: Conv1D,
    pub c_proj: Conv1D,
    pub attn_dropout: Dropout,
    pub resid_dropout: Dropout,
    #[module(skip)]
    pub num_heads: usize,
    /// What the scores are multiplied by ([`Gpt2Config::attention_scale`]).
    #[module(skip)]
    pub scale: f64,
}

impl Gpt2Attention {
    /// `x` `[batch, new, n_embd]`; `bias` `[batch, 1, new, total]` (see
    /// [`causal_bias`]); with a cache, this layer's keys and values are
    /// appended to it and the queries attend to every cached position.
    pub fn forward(
        &self,
        x: Tensor<3>,
        bias: Tensor<4>,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let [batch, new, hidden] = x.dims();
        let heads = self.num_heads;
        let head_dim = hidden / heads;
        let qkv = self.c_attn.forward(x);
        let split = |i: usize| {
            qkv.clone()
                .narrow(2, i * hidden, hidden)
                .reshape([batch, new, heads, head_dim])
                .swap_dims(1, 2)
        };
        let (q, mut k, mut v) = (split(0), split(1), split(2));
        if let Some((cache, layer)) = cache {
            (k, v) = cache.append(layer, k, v);
        }
        let total = k.dims()[2];
        let dropout_active = self.attn_dropout.prob > 0.0
            && self.attn_dropout.training.is_enabled()
            && q.device().is_autodiff();
        // Dropout on the attention probabilities needs them materialised;
        // and on the CPU this path's products and softmax kernel beat
        // burn's fused op both ways (a scalar loop with libm's `expf`
        // forward, a one-thread decomposition backward).
        let explicit = dropout_active || kernels::is_flex(&q.device());
        let context = if explicit {
            let scores = kernels::matmul(q, k.transpose());
            let probs = kernels::softmax_biased(scores, self.scale, Some(bias));
            kernels::matmul_merge_heads(self.attn_dropout.apply(probs), v)
        } else {
            attention(
                q,
                k,
                v,
                None,
                Some(bias.expand([batch, heads, new, total])),
                AttentionModuleOptions {
                    scale: Some(self.scale),
                    softcap: None,
                    is_causal: false,
                },
            )
            .swap_dims(1, 2)
            .reshape([batch, new, hidden])
        };
        self.resid_dropout.apply(self.c_proj.forward(context))
    }
}

/// Cross-attention of an encoder-decoder's decoder (`add_cross_attention`):
/// queries from the decoder (`q_attn`), keys and values side by side from
/// the encoder's states (`c_attn`, `[n_embd, 2 * n_embd]`), scaled as the
/// layer's self-attention.
#[derive(Module, Debug)]
pub struct Gpt2CrossAttention {
    pub q_attn: Conv1D,
    pub c_attn: Conv1D,
    pub c_proj: Conv1D,
    pub attn_dropout: Dropout,
    pub resid_dropout: Dropout,
    #[module(skip)]
    pub num_heads: usize,
    #[module(skip)]
    pub scale: f64,
}

/// Keys and values of one layer's cross-attention, `[batch, heads, source, head_dim]`.
type CrossKv = (Tensor<4>, Tensor<4>);

impl Gpt2CrossAttention {
    /// Cross-attention of `x` to `encoder`; with a cache slot, the keys and
    /// values of the encoder's states are computed at the first step and
    /// read from the slot after.
    pub fn forward(
        &self,
        x: Tensor<3>,
        encoder: &EncoderStates,
        cached: Option<&mut Option<CrossKv>>,
    ) -> Tensor<3> {
        let [batch, new, hidden] = x.dims();
        let source = encoder.states.dims()[1];
        let heads = self.num_heads;
        let head_dim = hidden / heads;
        let heads_of =
            |t: Tensor<3>, n: usize| t.reshape([batch, n, heads, head_dim]).swap_dims(1, 2);
        let q = heads_of(self.q_attn.forward(x), new);
        let keys_values = || {
            let kv = self.c_attn.forward(encoder.states.clone());
            (
                heads_of(kv.clone().narrow(2, 0, hidden), source),
                heads_of(kv.narrow(2, hidden, hidden), source),
            )
        };
        let (k, v) = match cached {
            Some(slot) => slot.get_or_insert_with(keys_values).clone(),
            None => keys_values(),
        };
        let scores = kernels::matmul(q, k.transpose());
        let probs = kernels::softmax_biased(scores, self.scale, Some(encoder.bias.clone()));
        let probs = self.attn_dropout.apply(probs);
        let context = kernels::matmul_merge_heads(probs, v);
        self.resid_dropout.apply(self.c_proj.forward(context))
    }
}

/// The feed-forward block: `c_proj(act(c_fc(x)))`, then dropout.
#[derive(Module, Debug)]
pub struct Gpt2Mlp {
    pub c_fc: Conv1D,
    pub c_proj: Conv1D,
    pub dropout: Dropout,
    #[module(skip)]
    pub activation: Activation,
}

impl Gpt2Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let inner = self.activation.apply(self.c_fc.forward(x));
        self.dropout.apply(self.c_proj.forward(inner))
    }
}

/// One pre-LN decoder block: `x = x + Attn(LN(x)); x = x + MLP(LN(x))`.
#[derive(Module, Debug)]
pub struct Gpt2Block {
    pub ln_1: LayerNorm,
    pub attn: Gpt2Attention,
    /// With `add_cross_attention`: the LayerNorm before cross-attention.
    pub ln_cross_attn: Option<LayerNorm>,
    pub crossattention: Option<Gpt2CrossAttention>,
    pub ln_2: LayerNorm,
    pub mlp: Gpt2Mlp,
}

impl Gpt2Block {
    /// Self-attention, cross-attention to `encoder` (when the block has it
    /// and states are given; skipped otherwise, as in transformers), MLP.
    pub fn forward(
        &self,
        x: Tensor<3>,
        bias: Tensor<4>,
        mut cache: Option<(&mut KvCache, usize)>,
        encoder: Option<&EncoderStates>,
    ) -> Tensor<3> {
        let mut x = x.clone()
            + self.attn.forward(
                self.ln_1.forward(x),
                bias,
                cache.as_mut().map(|(c, i)| (&mut **c, *i)),
            );
        if let (Some(ln), Some(cross), Some(e)) =
            (&self.ln_cross_attn, &self.crossattention, encoder)
        {
            let slot = cache.map(|(c, i)| &mut c.cross[i]);
            x = x.clone() + cross.forward(ln.forward(x), e, slot);
        }
        x.clone() + self.mlp.forward(self.ln_2.forward(x))
    }
}

/// transformers' `GPT2LMHeadModel`: `GPT2Model` (embeddings, blocks, final
/// LayerNorm) and the output projection.
#[derive(Module, Debug)]
pub struct Gpt2 {
    /// Token embeddings `[vocab, n_embd]`; also the output projection when tied.
    pub wte: Embedding,
    /// Position embeddings `[n_positions, n_embd]`.
    pub wpe: Embedding,
    pub drop: Dropout,
    pub h: Vec<Gpt2Block>,
    pub ln_f: LayerNorm,
    /// The untied output projection (`lm_head.weight`, stored `[vocab,
    /// n_embd]`); `None` when tied to [`Gpt2::wte`].
    pub lm_head: Option<Linear>,
    #[module(skip)]
    pub config: Gpt2Config,
}

fn embedding(n: usize, d: usize, device: &Device) -> Embedding {
    Embedding {
        weight: Param::from_tensor(Tensor::zeros([n, d], device)),
    }
}

impl Gpt2 {
    /// The architecture `config` describes, its parameters zero until loaded
    /// or initialised ([`super::state::load`]).
    pub fn new(config: &Gpt2Config, device: &Device) -> Result<Self> {
        config.validate()?;
        let (h, f, eps) = (config.n_embd, config.inner(), config.layer_norm_epsilon);
        let activation = Activation::parse(&config.activation_function)?;
        let resid = || DropoutConfig::new(config.resid_pdrop).init();
        let blocks = (0..config.n_layer)
            .map(|i| Gpt2Block {
                ln_1: layer_norm(h, eps, device),
                attn: Gpt2Attention {
                    c_attn: Conv1D::new(h, 3 * h, device),
                    c_proj: Conv1D::new(h, h, device),
                    attn_dropout: DropoutConfig::new(config.attn_pdrop).init(),
                    resid_dropout: resid(),
                    num_heads: config.n_head,
                    scale: config.attention_scale(i),
                },
                ln_cross_attn: config
                    .add_cross_attention
                    .then(|| layer_norm(h, eps, device)),
                crossattention: config.add_cross_attention.then(|| Gpt2CrossAttention {
                    q_attn: Conv1D::new(h, h, device),
                    c_attn: Conv1D::new(h, 2 * h, device),
                    c_proj: Conv1D::new(h, h, device),
                    attn_dropout: DropoutConfig::new(config.attn_pdrop).init(),
                    resid_dropout: resid(),
                    num_heads: config.n_head,
                    scale: config.attention_scale(i),
                }),
                ln_2: layer_norm(h, eps, device),
                mlp: Gpt2Mlp {
                    c_fc: Conv1D::new(h, f, device),
                    c_proj: Conv1D::new(f, h, device),
                    dropout: resid(),
                    activation,
                },
            })
            .collect();
        Ok(Self {
            wte: embedding(config.vocab_size, h, device),
            wpe: embedding(config.n_positions, h, device),
            drop: DropoutConfig::new(config.embd_pdrop).init(),
            h: blocks,
            ln_f: layer_norm(h, eps, device),
            lm_head: (!config.tie_word_embeddings)
                .then(|| linear(h, config.vocab_size, false, device)),
            config: config.clone(),
        })
    }

    /// The configuration in a model directory's `config.json`.
    pub fn config_of(model: &Path) -> Result<Gpt2Config> {
        Gpt2Config::from_file(&model.join("config.json"))
    }

    /// Token plus position embeddings, `[batch, new, n_embd]`.
    fn embed(&self, ids: Tensor<2, Int>, positions: Tensor<2, Int>) -> Tensor<3> {
        self.drop
            .apply(self.wte.forward(ids) + self.wpe.forward(positions))
    }

    /// The final LayerNorm and the output projection: logits `[batch, seq, vocab]`.
    pub fn logits(&self, x: Tensor<3>) -> Tensor<3> {
        let x = self.ln_f.forward(x);
        match &self.lm_head {
            Some(head) => head.apply(x),
            None => {
                let [batch, seq, hidden] = x.dims();
                kernels::matmul(
                    x.reshape([batch * seq, hidden]),
                    self.wte.weight.val().transpose(),
                )
                .reshape([batch, seq, self.config.vocab_size])
            }
        }
    }

    fn check_length(&self, positions: usize) {
        assert!(
            positions <= self.config.n_positions,
            "{positions} positions, but this GPT-2 has position embeddings for {} \
             (n_positions): truncate the input",
            self.config.n_positions
        );
    }
}

impl Architecture for Gpt2 {
    const MODEL_TYPE: &'static str = "gpt2";
    const BASE_PREFIX: &'static str = "transformer.";
    const HF_STEM: &'static str = "GPT2";

    fn hf_class(suffix: &str) -> String {
        match suffix {
            "ForCausalLM" => "GPT2LMHeadModel".to_string(),
            other => format!("GPT2{other}"),
        }
    }
    const SIZE_FIELDS: &'static str =
        "vocab_size, n_positions, n_embd, n_layer, n_inner, tie_word_embeddings";
    /// Causal-mask buffers of older transformers versions.
    const IGNORED_KEY_SUFFIXES: &'static [&'static str] = &[".attn.bias", ".attn.masked_bias"];
    /// The untied output projection sits beside `transformer.`.
    const UNPREFIXED: &'static [&'static str] = &["lm_head"];

    fn from_config_file(path: &Path, device: &Device) -> Result<Self> {
        Self::new(&Gpt2Config::from_file(path)?, device)
    }

    /// GPT-2 small (124M).
    fn reference(device: &Device) -> Result<Self> {
        Self::new(&Gpt2Config::default(), device)
    }

    /// The first block's fused attention projection and the token
    /// embeddings, with or without the `transformer.` prefix.
    fn recognises(checkpoint: &crate::hub::Checkpoint) -> bool {
        let has = |k: &str| checkpoint.tensors.contains_key(k);
        ["transformer.", ""]
            .iter()
            .any(|p| has(&format!("{p}wte.weight")) && has(&format!("{p}h.0.attn.c_attn.weight")))
    }

    fn groups(&self) -> Vec<Group> {
        let mut groups = vec![Group {
            name: "embeddings".into(),
            paths: vec!["wte".into(), "wpe".into()],
        }];
        for i in 0..self.config.n_layer {
            let name = format!("h.{i}");
            groups.push(Group {
                name: name.clone(),
                paths: vec![name],
            });
        }
        let mut top = vec!["ln_f".to_string()];
        if self.lm_head.is_some() {
            top.push("lm_head".into());
        }
        groups.push(Group {
            name: "head".into(),
            paths: top,
        });
        groups
    }

    fn run(&self, flow: Flow, range: Range<usize>) -> Flow {
        let layers = self.config.n_layer;
        let mut flow = flow;
        let mut cached_bias: Option<Tensor<4>> = None;
        for g in range {
            flow = match (g, flow) {
                (0, Flow::Tokens { ids, mask, .. }) => {
                    let [batch, seq] = ids.dims();
                    self.check_length(seq);
                    let positions = positions(batch, 0, seq, &ids.device());
                    Flow::Hidden {
                        x: self.embed(ids, positions),
                        mask,
                    }
                }
                (g, Flow::Hidden { x, mask }) if g <= layers => {
                    let seq = mask.dims()[1];
                    let bias = cached_bias
                        .get_or_insert_with(|| causal_bias(mask.clone(), seq))
                        .clone();
                    Flow::Hidden {
                        x: self.h[g - 1].forward(x, bias, None, None),
                        mask,
                    }
                }
                (g, Flow::Hidden { x, mask }) if g == layers + 1 => Flow::Hidden {
                    x: self.logits(x),
                    mask,
                },
                (g, other) => panic!("GPT-2 group {g} cannot take {other:?}"),
            };
        }
        flow
    }

    /// Every real position, at every boundary (the logits included).
    fn reads_after(&self, _boundary: usize) -> Positions {
        Positions::All
    }

    fn hidden_size(&self) -> usize {
        self.config.n_embd
    }

    /// The head reads the logits.
    fn feature_size(&self) -> usize {
        self.config.vocab_size
    }

    /// Nothing sits between the logits and the loss.
    fn head_dropout(&self) -> f64 {
        0.0
    }

    /// The embedding lookups count as nothing; a block on b sequences of s
    /// tokens costs 2·b·s·(4h² + 2hf) for its projections (Q/K/V, output,
    /// the MLP's two) plus 4·b·s²·h for attention scores and context (the
    /// full square, as the kernels compute it); the top group 2·b·s·h·V for
    /// the output projection. LayerNorms, GELU, softmax and the residual
    /// adds are not counted.
    fn group_flops(&self, batch: usize, seq: usize) -> Vec<f64> {
        let c = &self.config;
        let (b, s) = (batch as f64, seq as f64);
        let (h, f, v) = (c.n_embd as f64, c.inner() as f64, c.vocab_size as f64);
        let layer = 2.0 * b * s * (4.0 * h * h + 2.0 * h * f) + 4.0 * b * s * s * h;
        let mut out = vec![0.0];
        out.extend(std::iter::repeat_n(layer, c.n_layer));
        out.push(2.0 * b * s * h * v);
        out
    }

    fn max_positions(&self) -> usize {
        self.config.n_positions
    }

    /// transformers' `GPT2PreTrainedModel._init_weights`: normal(0,
    /// initializer_range) for embeddings and projection weights, zero
    /// biases, LayerNorm 1 and 0, and both `c_proj` weights of every block
    /// normal(0, initializer_range / sqrt(2 * n_layer)) (the residual
    /// branches' scaled init of the GPT-2 paper).
    /// `c_proj` names both output projections (attention's and the MLP's).
    const LORA_TARGETS: &'static [&'static str] =
        &["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj", "c_proj"];
    const LORA_DEFAULT_TARGETS: &'static [&'static str] = &["c_attn"];

    fn lora_walk(&mut self, targets: &[String], op: &mut super::lora::LoraOp) {
        use super::lora::visit;
        let both = targets.iter().any(|t| t == "c_proj");
        let with = |name: &str| {
            let mut t = targets.to_vec();
            if both {
                t.push(name.to_string());
            }
            t
        };
        let (attn_proj, mlp_proj) = (with("attn.c_proj"), with("mlp.c_proj"));
        for b in &mut self.h {
            visit(&mut b.attn.c_attn, "c_attn", targets, op);
            visit(&mut b.attn.c_proj, "attn.c_proj", &attn_proj, op);
            visit(&mut b.mlp.c_fc, "c_fc", targets, op);
            visit(&mut b.mlp.c_proj, "mlp.c_proj", &mlp_proj, op);
        }
    }

    fn init(&self, path: &str, container: &str, field: &str) -> Init {
        let std = self.config.initializer_range;
        match (container, field) {
            ("LayerNorm", "gamma") => Init::Ones,
            ("LayerNorm", _) | (_, "bias") => Init::Zeros,
            ("Conv1D", "weight") if path.ends_with(".c_proj.weight") => {
                Init::Normal(std / (2.0 * self.config.n_layer as f64).sqrt())
            }
            _ => Init::Normal(std),
        }
    }

    fn identity(&self) -> String {
        format!("{:?}", self.config)
    }

    /// Every `GPT2Config` field this body reads, `model_type` and the
    /// `GPT2LMHeadModel` class.
    fn hf_config(&self) -> serde_json::Value {
        let mut v = super::config_json(&self.config, Self::MODEL_TYPE);
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "architectures".into(),
                serde_json::json!(["GPT2LMHeadModel"]),
            );
        }
        v
    }

    /// A stored `lm_head.weight` is a copy of the tied token embeddings.
    fn tied_keys(&self) -> Vec<(String, String)> {
        if self.lm_head.is_some() {
            return Vec::new();
        }
        vec![(
            "lm_head.weight".into(),
            format!("{}wte.weight", Self::BASE_PREFIX),
        )]
    }
}

impl CausalLm for Gpt2 {
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn num_layers(&self) -> usize {
        self.config.n_layer
    }

    fn eos_token_ids(&self) -> Vec<u32> {
        self.config
            .eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }

    fn embed_tokens(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.wte.forward(ids)
    }

    fn forward_embeds(
        &self,
        x: Tensor<3>,
        positions: Tensor<2, Int>,
        key_mask: Tensor<2>,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let memory = cache.as_ref().and_then(|c| c.memory.clone());
        self.forward_cross(x, positions, key_mask, cache, memory.as_ref())
    }

    fn has_cross_attention(&self) -> bool {
        self.config.add_cross_attention
    }

    fn with_cross_attention(path: &Path, device: &Device) -> Result<Self> {
        let mut config = Gpt2Config::from_file(path)?;
        config.add_cross_attention = true;
        Self::new(&config, device)
    }

    fn forward_memory(
        &self,
        x: Tensor<3>,
        positions: Tensor<2, Int>,
        key_mask: Tensor<2>,
        memory: &EncoderStates,
    ) -> Tensor<3> {
        assert!(
            self.config.add_cross_attention,
            "a GPT-2 without cross-attention cannot read encoder states"
        );
        self.forward_cross(x, positions, key_mask, None, Some(memory))
    }
}

impl Gpt2 {
    /// [`CausalLm::forward_embeds`] with cross-attention to `encoder` in
    /// every block that has it (an encoder-decoder's decoder).
    pub fn forward_cross(
        &self,
        x: Tensor<3>,
        positions: Tensor<2, Int>,
        key_mask: Tensor<2>,
        mut cache: Option<&mut KvCache>,
        encoder: Option<&EncoderStates>,
    ) -> Tensor<3> {
        let new = x.dims()[1];
        let total = key_mask.dims()[1];
        let cached = cache.as_ref().map_or(0, |c| c.len());
        assert_eq!(
            total,
            cached + new,
            "the key mask covers {total} positions, the cache {cached} and the new inputs {new}"
        );
        self.check_length(total);
        let bias = causal_bias(key_mask, new);
        let mut x = self.drop.apply(x + self.wpe.forward(positions));
        for (i, block) in self.h.iter().enumerate() {
            x = block.forward(
                x,
                bias.clone(),
                cache.as_deref_mut().map(|c| (c, i)),
                encoder,
            );
        }
        self.logits(x)
    }
}

#[cfg(test)]
mod tests;
