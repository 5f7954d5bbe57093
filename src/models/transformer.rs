//! Pieces of transformer encoders that several families share: the
//! feed-forward activation named by `hidden_act`, multi-head
//! self-attention with Q/K/V projections, the intermediate (expansion)
//! layer, and zero-filled Linear and LayerNorm constructors.
//!
//! Where a family's layer differs (BERT normalises after each residual,
//! ViT before each sub-layer), the layer itself stays in the family's file.

use crate::kernels::dropout::DropoutExt;
use crate::kernels::{self, Kind};
use anyhow::{Result, bail};
use burn::module::{Module, Param};
use burn::nn::{Dropout, Linear};

pub use crate::kernels::layer_norm::LayerNorm;
use burn::tensor::activation::relu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor};

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

    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Gelu => kernels::activation(Kind::Gelu, x),
            Self::GeluTanh => kernels::activation(Kind::GeluTanh, x),
            Self::Relu => relu(x),
            Self::Silu => kernels::activation(Kind::Silu, x),
        }
    }
}

/// A Linear layer of zeros, `[d_in, d_out]` as burn holds it; the state walk fills it.
pub fn linear(d_in: usize, d_out: usize, bias: bool, device: &Device) -> Linear {
    Linear {
        weight: Param::from_tensor(Tensor::zeros([d_in, d_out], device)),
        bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
    }
}

/// A projection of zeros that can carry a LoRA adapter; the state walk fills it.
pub fn proj(d_in: usize, d_out: usize, bias: bool, device: &Device) -> super::lora::Linear {
    super::lora::Linear::zeros(d_in, d_out, bias, device)
}

pub fn layer_norm(d: usize, eps: f64, device: &Device) -> LayerNorm {
    LayerNorm::new(d, eps, device)
}

/// LoRA targets of an encoder layer (BERT, ViT), by the module names PEFT matches.
pub const LORA_TARGETS: &[&str] = &[
    "query",
    "key",
    "value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];
/// The targets LoRA takes by default: attention's query and value.
pub const LORA_DEFAULT_TARGETS: &[&str] = &["query", "value"];

/// Applies `op` to the targeted projections of one encoder layer: its
/// self-attention, the attention output, the intermediate and output dense.
pub fn lora_walk_layer(
    attention: &mut SelfAttention,
    attention_output: &mut super::lora::Linear,
    intermediate: &mut Intermediate,
    output: &mut super::lora::Linear,
    targets: &[String],
    op: &mut super::lora::LoraOp,
) {
    use super::lora::visit;
    visit(&mut attention.query, "query", targets, op);
    visit(&mut attention.key, "key", targets, op);
    visit(&mut attention.value, "value", targets, op);
    visit(attention_output, "attention.output.dense", targets, op);
    visit(&mut intermediate.dense, "intermediate.dense", targets, op);
    visit(output, "output.dense", targets, op);
}

/// Q, K and V projections and attention-probability dropout.
#[derive(Module, Debug)]
pub struct SelfAttention {
    pub query: super::lora::Linear,
    pub key: super::lora::Linear,
    pub value: super::lora::Linear,
    pub dropout: Dropout,
    #[module(skip)]
    pub num_heads: usize,
}

impl SelfAttention {
    /// `x`: `[batch * seq, hidden]`; `mask_bias`: `[batch, 1, 1, seq]`
    /// added to the scores (none: every position attends to every other).
    /// Returns the attention context `[batch * seq, hidden]`.
    pub fn forward(
        &self,
        x: Tensor<2>,
        mask_bias: Option<Tensor<4>>,
        batch: usize,
        seq: usize,
    ) -> Tensor<2> {
        let hidden = x.dims()[1];
        let heads = self.num_heads;
        let head_dim = hidden / heads;
        let split = |t: Tensor<2>| t.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2);
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x.clone()));
        let dropout_active = self.dropout.prob > 0.0
            && self.dropout.training.is_enabled()
            && x.device().is_autodiff();
        // Dropout on the attention probabilities needs them materialised;
        // and on the CPU this path's products and softmax kernel beat
        // burn's fused op both ways (a scalar loop with libm's `expf`
        // forward, a one-thread decomposition backward).
        let explicit = dropout_active || kernels::is_flex(&x.device());
        if explicit {
            // The scale and the mask are applied in the softmax's pass.
            let scores = kernels::matmul(q, k.transpose());
            let scale = 1.0 / (head_dim as f64).sqrt();
            let probs = self
                .dropout
                .apply(kernels::softmax_biased(scores, scale, mask_bias));
            kernels::matmul_merge_heads(probs, v).reshape([batch * seq, hidden])
        } else {
            // The backend's fused attention (CUDA).
            attention(
                q,
                k,
                v,
                None,
                mask_bias.map(|b| b.expand([batch, heads, seq, seq])),
                AttentionModuleOptions {
                    scale: None,
                    softcap: None,
                    is_causal: false,
                },
            )
            .swap_dims(1, 2)
            .reshape([batch * seq, hidden])
        }
    }
}

/// The feed-forward expansion: `act(dense(x))`.
#[derive(Module, Debug)]
pub struct Intermediate {
    pub dense: super::lora::Linear,
    #[module(skip)]
    pub activation: Activation,
}

impl Intermediate {
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.activation.apply(self.dense.forward(x))
    }
}
