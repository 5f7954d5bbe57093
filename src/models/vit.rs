//! Vision Transformer (Dosovitskiy et al. 2021) with Hugging Face
//! `ViTForImageClassification` semantics: the image is cut into `patch_size`
//! squares by a convolution of that stride, a learned [CLS] vector is put in
//! front, learned position embeddings are added, N pre-LN encoder layers
//! follow (`x + Attn(LN(x))`, then `x + FFN(LN(x))`), and the classifier
//! reads the final LayerNorm of the [CLS] position.
//!
//! The module structs mirror transformers' hierarchy, so a parameter's path
//! is its checkpoint key under `vit.` (`embeddings.patch_embeddings.projection.weight`,
//! `encoder.layer.3.attention.attention.query.weight`, `layernorm.bias`);
//! the classifier is `classifier`. Checkpoints of the bare `ViTModel`
//! (no `vit.` prefix, with a pooler the classifier does not read) load too.
//!
//! Layer groups: `embeddings`, `encoder.layer.0` ... `encoder.layer.{N-1}`,
//! and `head` (the final LayerNorm, where a task's classifier joins).
//!
//! At an input size other than the checkpoint's, the patch part of the
//! position embeddings is resampled once, when the checkpoint is loaded,
//! as transformers' `interpolate_pos_encoding` does at every forward pass
//! (bicubic, `align_corners=False`; the [CLS] position is kept): the loaded
//! model then holds the grid of its own input size, trains it, and exports
//! it with that `image_size`, so transformers loads the export as it is.

use std::ops::Range;
use std::path::Path;

use crate::kernels::dropout::DropoutExt;
use anyhow::{Context, Result, bail};
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig};

use crate::kernels::layer_norm::LayerNorm;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::state::Init;
use super::transformer::{Activation, Intermediate, SelfAttention, layer_norm, proj};
use super::{Architecture, Flow, Group, Positions};

/// `config.json` of a ViT, with transformers' `ViTConfig` field names and
/// defaults (which are ViT-B/16 at 224 pixels).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub hidden_dropout_prob: f64,
    #[serde(default)]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "d_init_range")]
    pub initializer_range: f64,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d_image")]
    pub image_size: usize,
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    #[serde(default = "d_true")]
    pub qkv_bias: bool,
}

fn d_hidden() -> usize {
    768
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    12
}
fn d_intermediate() -> usize {
    3072
}
fn d_act() -> String {
    "gelu".into()
}
fn d_init_range() -> f64 {
    0.02
}
fn d_eps() -> f64 {
    1e-12
}
fn d_image() -> usize {
    224
}
fn d_patch() -> usize {
    16
}
fn d_channels() -> usize {
    3
}
fn d_true() -> bool {
    true
}

impl Default for VitConfig {
    /// ViT-B/16 at 224 pixels (`vit_b_16`, transformers' defaults).
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

impl VitConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read {}: a model directory needs a config.json next to its weights",
                path.display()
            )
        })?;
        let config: VitConfig = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid ViT config.json (image_size and patch_size are integers, \
                 hidden_size, num_hidden_layers, num_attention_heads and intermediate_size \
                 positive integers)",
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
        if self.patch_size == 0 || self.image_size < self.patch_size {
            bail!(
                "image_size ({}) must be at least patch_size ({}), which must be positive",
                self.image_size,
                self.patch_size
            );
        }
        if self.num_channels != 3 {
            bail!(
                "num_channels is {}: images are read as RGB, so only 3 is supported",
                self.num_channels
            );
        }
        Activation::parse(&self.hidden_act)?;
        Ok(())
    }

    /// Patches along each side of the input (the convolution floors).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Positions of the encoder: the patches and [CLS].
    pub fn positions(&self) -> usize {
        self.grid() * self.grid() + 1
    }
}

/// The patch projection: a `patch_size` x `patch_size` convolution of the same stride.
#[derive(Module, Debug)]
pub struct VitPatchEmbeddings {
    pub projection: Conv2d,
}

/// [CLS], patch embeddings and position embeddings.
#[derive(Module, Debug)]
pub struct VitEmbeddings {
    /// `[1, 1, hidden]`
    pub cls_token: Param<Tensor<3>>,
    /// `[1, positions, hidden]`, [CLS] first, then the patch grid row by row.
    pub position_embeddings: Param<Tensor<3>>,
    pub patch_embeddings: VitPatchEmbeddings,
    pub dropout: Dropout,
}

impl VitEmbeddings {
    /// `[batch, 3, side, side]` -> `[batch, positions, hidden]`.
    #[allow(clippy::disallowed_methods)] // the 16x16 stride-16 patch projection stays burn's convolution
    pub fn forward(&self, pixels: Tensor<4>) -> Tensor<3> {
        let patches = self.patch_embeddings.projection.forward(pixels);
        let [batch, hidden, gh, gw] = patches.dims();
        let patches = patches.reshape([batch, hidden, gh * gw]).swap_dims(1, 2);
        let cls = self.cls_token.val().expand([batch, 1, hidden]);
        let x = Tensor::cat(vec![cls, patches], 1) + self.position_embeddings.val();
        self.dropout.apply(x)
    }
}

/// Output projection and dropout after attention (the residual is the layer's).
#[derive(Module, Debug)]
pub struct VitSelfOutput {
    pub dense: super::lora::Linear,
    pub dropout: Dropout,
}

#[derive(Module, Debug)]
pub struct VitAttention {
    /// `attention.attention` in checkpoint keys.
    pub attention: SelfAttention,
    pub output: VitSelfOutput,
}

/// The feed-forward contraction, its dropout and residual.
#[derive(Module, Debug)]
pub struct VitOutput {
    pub dense: super::lora::Linear,
    pub dropout: Dropout,
}

/// One pre-LN encoder layer: `x = x + Attn(LN(x)); x = x + FFN(LN(x))`.
#[derive(Module, Debug)]
pub struct VitLayer {
    pub attention: VitAttention,
    pub intermediate: Intermediate,
    pub output: VitOutput,
    pub layernorm_before: LayerNorm,
    pub layernorm_after: LayerNorm,
}

impl VitLayer {
    /// `[batch, seq, hidden]` -> `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [batch, seq, hidden] = x.dims();
        let x = x.reshape([batch * seq, hidden]);
        let normed = self.layernorm_before.forward(x.clone());
        let context = self.attention.attention.forward(normed, None, batch, seq);
        let attended = self
            .attention
            .output
            .dropout
            .apply(self.attention.output.dense.forward(context));
        let x = x + attended;
        let inner = self
            .intermediate
            .forward(self.layernorm_after.forward(x.clone()));
        let out = self.output.dropout.apply(self.output.dense.forward(inner));
        (x + out).reshape([batch, seq, hidden])
    }
}

#[derive(Module, Debug)]
pub struct VitEncoder {
    pub layer: Vec<VitLayer>,
}

/// transformers' `ViTModel` without a pooler: embeddings, encoder layers,
/// the final LayerNorm.
#[derive(Module, Debug)]
pub struct Vit {
    pub embeddings: VitEmbeddings,
    pub encoder: VitEncoder,
    pub layernorm: LayerNorm,
    #[module(skip)]
    pub config: VitConfig,
    /// Whether the top group hands on every token after the final
    /// LayerNorm (what an encoder-decoder's decoder cross-attends to)
    /// instead of [CLS] alone ([`Architecture::with_all_tokens`]).
    #[module(skip)]
    pub all_tokens: bool,
}

impl Vit {
    /// The architecture `config` describes, its parameters zero until loaded
    /// or initialised ([`super::state::load`]).
    pub fn new(config: &VitConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let (h, f, eps, p) = (
            config.hidden_size,
            config.intermediate_size,
            config.layer_norm_eps,
            config.patch_size,
        );
        let activation = Activation::parse(&config.hidden_act)?;
        let hidden_dropout = || DropoutConfig::new(config.hidden_dropout_prob).init();
        let layer = (0..config.num_hidden_layers)
            .map(|_| VitLayer {
                attention: VitAttention {
                    attention: SelfAttention {
                        query: proj(h, h, config.qkv_bias, device),
                        key: proj(h, h, config.qkv_bias, device),
                        value: proj(h, h, config.qkv_bias, device),
                        dropout: DropoutConfig::new(config.attention_probs_dropout_prob).init(),
                        num_heads: config.num_attention_heads,
                    },
                    output: VitSelfOutput {
                        dense: proj(h, h, true, device),
                        dropout: hidden_dropout(),
                    },
                },
                intermediate: Intermediate {
                    dense: proj(h, f, true, device),
                    activation,
                },
                output: VitOutput {
                    dense: proj(f, h, true, device),
                    dropout: hidden_dropout(),
                },
                layernorm_before: layer_norm(h, eps, device),
                layernorm_after: layer_norm(h, eps, device),
            })
            .collect();
        Ok(Self {
            embeddings: VitEmbeddings {
                cls_token: Param::from_tensor(Tensor::zeros([1, 1, h], device)),
                position_embeddings: Param::from_tensor(Tensor::zeros(
                    [1, config.positions(), h],
                    device,
                )),
                patch_embeddings: VitPatchEmbeddings {
                    projection: Conv2dConfig::new([config.num_channels, h], [p, p])
                        .with_stride([p, p])
                        .init(device),
                },
                dropout: hidden_dropout(),
            },
            encoder: VitEncoder { layer },
            layernorm: layer_norm(h, eps, device),
            config: config.clone(),
            all_tokens: false,
        })
    }

    /// The configuration in a model directory's `config.json`, or ViT-B/16
    /// at 224 pixels (`--arch vit_b_16`) for a bare weights file.
    pub fn config_of(model: &Path) -> Result<VitConfig> {
        let path = model.join("config.json");
        if !model.is_dir() || !path.exists() {
            return Ok(VitConfig::default());
        }
        VitConfig::from_file(&path)
    }

    /// The final LayerNorm of [CLS]: what the classifier reads, `[batch, hidden]`.
    fn pool(&self, x: Tensor<3>) -> Tensor<2> {
        let [batch, _, hidden] = x.dims();
        let first = x.narrow(1, 0, 1).reshape([batch, hidden]);
        self.layernorm.forward(first)
    }
}

impl Architecture for Vit {
    const MODEL_TYPE: &'static str = "vit";
    const BASE_PREFIX: &'static str = "vit.";
    const HF_STEM: &'static str = "ViT";
    const SIZE_FIELDS: &'static str = "hidden_size, num_hidden_layers, intermediate_size, \
        patch_size, image_size, qkv_bias";
    /// The bare `ViTModel`'s pooler, which the classifier does not read.
    const IGNORED_KEY_SUFFIXES: &'static [&'static str] =
        &["pooler.dense.weight", "pooler.dense.bias"];

    /// torchvision's name for ViT-B/16 at 224 pixels, the defaults of a
    /// bare file without a config.json.
    const ARCH_NAMES: &'static [&'static str] = &["vit_b_16"];

    fn from_config_file(path: &Path, device: &Device) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::new(&Self::config_of(dir)?, device)
    }

    /// ViT-B/16 at 224 pixels.
    fn reference(device: &Device) -> Result<Self> {
        Self::new(&VitConfig::default(), device)
    }

    /// Hugging Face's names: the patch projection and the first layer's
    /// query, with or without the `vit.` prefix.
    fn recognises(checkpoint: &crate::hub::Checkpoint) -> bool {
        let has = |k: &str| checkpoint.tensors.contains_key(k);
        ["vit.", ""].iter().any(|p| {
            has(&format!("{p}embeddings.patch_embeddings.projection.weight"))
                && has(&format!(
                    "{p}encoder.layer.0.attention.attention.query.weight"
                ))
        })
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
            paths: vec!["layernorm".into()],
        });
        groups
    }

    fn run(&self, flow: Flow, range: Range<usize>) -> Flow {
        let layers = self.config.num_hidden_layers;
        let mut flow = flow;
        for g in range {
            flow = match (g, flow) {
                (0, Flow::Maps(x)) => {
                    let x = self.embeddings.forward(x);
                    let [batch, seq, _] = x.dims();
                    let mask = Tensor::ones([batch, seq], &x.device());
                    Flow::Hidden { x, mask }
                }
                (g, Flow::Hidden { x, mask }) if g <= layers => Flow::Hidden {
                    x: self.encoder.layer[g - 1].forward(x),
                    mask,
                },
                (g, Flow::Hidden { x, mask }) if g == layers + 1 && self.all_tokens => {
                    Flow::Hidden {
                        x: self.layernorm.forward(x),
                        mask,
                    }
                }
                (g, Flow::Hidden { x, .. }) if g == layers + 1 => Flow::Pooled(self.pool(x)),
                (g, other) => panic!("ViT group {g} cannot take {other:?}"),
            };
        }
        flow
    }

    fn reads_after(&self, boundary: usize) -> Positions {
        let layers = self.config.num_hidden_layers;
        match boundary {
            0 => Positions::Map {
                channels: self.config.num_channels,
                height: self.config.image_size,
                width: self.config.image_size,
            },
            b if b <= layers => Positions::Sequence {
                len: self.config.positions(),
            },
            b if b == layers + 1 && self.all_tokens => Positions::Sequence {
                len: self.config.positions(),
            },
            b if b == layers + 1 => Positions::First,
            _ => Positions::Vector,
        }
    }

    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    fn feature_size(&self) -> usize {
        self.config.hidden_size
    }

    /// `ViTForImageClassification` puts no dropout before its classifier.
    fn head_dropout(&self) -> f64 {
        0.0
    }

    /// The patch projection costs 2·n·h·(3p²) per image (n patches), an
    /// encoder layer on s = n + 1 positions 2·s·(4h² + 2hf) for its six
    /// projections plus 4·s²·h for attention scores and context.
    /// LayerNorms, GELU, softmax and the residual adds are not counted.
    fn group_flops(&self, batch: usize, _seq: usize) -> Vec<f64> {
        let c = &self.config;
        let b = batch as f64;
        let (h, f, p) = (
            c.hidden_size as f64,
            c.intermediate_size as f64,
            c.patch_size as f64,
        );
        let n = (c.grid() * c.grid()) as f64;
        let s = n + 1.0;
        let layer = 2.0 * b * s * (4.0 * h * h + 2.0 * h * f) + 4.0 * b * s * s * h;
        let mut out = vec![2.0 * b * n * h * c.num_channels as f64 * p * p];
        out.extend(std::iter::repeat_n(layer, c.num_hidden_layers));
        out.push(0.0);
        out
    }

    /// Images are one example each.
    fn max_positions(&self) -> usize {
        1
    }

    const LORA_TARGETS: &'static [&'static str] = super::transformer::LORA_TARGETS;
    const LORA_DEFAULT_TARGETS: &'static [&'static str] = super::transformer::LORA_DEFAULT_TARGETS;

    fn lora_walk(&mut self, targets: &[String], op: &mut super::lora::LoraOp) {
        for l in &mut self.encoder.layer {
            let a = &mut l.attention;
            super::transformer::lora_walk_layer(
                &mut a.attention,
                &mut a.output.dense,
                &mut l.intermediate,
                &mut l.output.dense,
                targets,
                op,
            );
        }
    }

    /// transformers' `ViTPreTrainedModel._init_weights`: truncated normal
    /// (std `initializer_range`, cut at ±2) for Linear and convolution
    /// weights and for the [CLS] and position embeddings, zero biases,
    /// LayerNorm 1 and 0.
    fn init(&self, _path: &str, container: &str, field: &str) -> Init {
        let std = self.config.initializer_range;
        match (container, field) {
            ("LayerNorm", "gamma") => Init::Ones,
            ("LayerNorm", _) | (_, "bias") => Init::Zeros,
            _ => Init::TruncatedNormal(std, 2.0),
        }
    }

    fn with_all_tokens(mut self) -> Self {
        self.all_tokens = true;
        self
    }

    fn with_image_size(mut self, side: usize) -> Self {
        if side == self.config.image_size || side < self.config.patch_size {
            return self;
        }
        self.config.image_size = side;
        let device = self.embeddings.cls_token.val().device();
        self.embeddings.position_embeddings = Param::from_tensor(Tensor::zeros(
            [1, self.config.positions(), self.config.hidden_size],
            &device,
        ));
        self
    }

    /// The patch part of position embeddings stored for another grid,
    /// resampled to this model's grid.
    fn resample(
        &self,
        path: &str,
        stored: &[usize],
        values: &[f32],
        wanted: &[usize],
    ) -> Option<Vec<f32>> {
        if path != "embeddings.position_embeddings" {
            return None;
        }
        let (&[1, from, dim], &[1, to, dim2]) = (stored, wanted) else {
            return None;
        };
        let side = |n: usize| {
            let s = ((n - 1) as f64).sqrt().round() as usize;
            (n >= 1 && s * s == n - 1).then_some(s)
        };
        let (a, b) = (side(from)?, side(to)?);
        if dim != dim2 || values.len() != from * dim {
            return None;
        }
        // [CLS] as it is, then the grid `[a, a, dim]` resampled to `[b, b, dim]`
        let mut out = values[..dim].to_vec();
        out.extend(bicubic_grid(&values[dim..], a, b, dim));
        Some(out)
    }

    fn identity(&self) -> String {
        format!("{:?}", self.config)
    }

    /// transformers 5 builds ViT with other module names than its
    /// checkpoints hold (`ViTModel`'s renamings in its
    /// `conversion_mapping.py`): `encoder.layer.N` is `layers.N`,
    /// `attention.attention.query` `attention.q_proj` (and `k_proj`,
    /// `v_proj`), `attention.output.dense` `attention.o_proj`,
    /// `intermediate.dense` `mlp.fc1` and `output.dense` `mlp.fc2`.
    fn peft_key(&self, key: &str) -> String {
        let mut k = key.replacen("encoder.layer.", "layers.", 1);
        for (old, new) in [
            ("attention.attention.query", "attention.q_proj"),
            ("attention.attention.key", "attention.k_proj"),
            ("attention.attention.value", "attention.v_proj"),
            ("attention.output.dense", "attention.o_proj"),
            ("intermediate.dense", "mlp.fc1"),
            ("output.dense", "mlp.fc2"),
        ] {
            if k.contains(old) {
                k = k.replacen(old, new, 1);
                break;
            }
        }
        k
    }

    fn hf_config(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.config).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("model_type".into(), serde_json::json!(Self::MODEL_TYPE));
        }
        v
    }
}

/// PyTorch's `interpolate(mode="bicubic", align_corners=False)` of a square
/// `[a, a, dim]` grid (channels last) to `[b, b, dim]`: source coordinate
/// `(i + 0.5)·a/b − 0.5`, Keys' cubic with A = −0.75, taps clamped at the
/// border.
///
/// Written here rather than run through burn's `interpolate`: it runs once,
/// on host values while a checkpoint is read, before any device tensor
/// exists, and computing it in f64 makes the result the same on every
/// backend.
pub fn bicubic_grid(grid: &[f32], a: usize, b: usize, dim: usize) -> Vec<f32> {
    const A: f64 = -0.75;
    let cubic = |t: f64| -> [f64; 4] {
        let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
        let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
        [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
    };
    let scale = a as f64 / b as f64;
    let taps: Vec<([usize; 4], [f64; 4])> = (0..b)
        .map(|i| {
            let src = (i as f64 + 0.5) * scale - 0.5;
            let base = src.floor();
            let w = cubic(src - base);
            let at = |k: i64| (base as i64 + k).clamp(0, a as i64 - 1) as usize;
            ([at(-1), at(0), at(1), at(2)], w)
        })
        .collect();
    let mut out = vec![0f32; b * b * dim];
    for (y, (ys, wy)) in taps.iter().enumerate() {
        for (x, (xs, wx)) in taps.iter().enumerate() {
            let o = &mut out[(y * b + x) * dim..(y * b + x + 1) * dim];
            for (c, slot) in o.iter_mut().enumerate() {
                let mut acc = 0.0;
                for (yy, wyy) in ys.iter().zip(wy) {
                    let mut row = 0.0;
                    for (xx, wxx) in xs.iter().zip(wx) {
                        row += grid[(yy * a + xx) * dim + c] as f64 * wxx;
                    }
                    acc += row * wyy;
                }
                *slot = acc as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
