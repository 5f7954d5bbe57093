//! VGG16 with torchvision's `vgg16` (and `vgg16_bn`) semantics (Simonyan
//! and Zisserman 2014, configuration D): five blocks of 3x3 convolutions
//! (padding 1, each followed by ReLU, and by BatchNorm first in `_bn`), each
//! block ending in a 2x2 max pool; then either torchvision's classifier
//! (adaptive average pool to 7x7, flatten, fc6 and fc7 of 4096 with ReLU and
//! dropout; fc8 is the task's head) or, for the conv base alone (Keras
//! `VGG16(include_top=False)`), a global average pool to one 512-vector.
//!
//! Checkpoint keys are torchvision's: `features.N.weight`/`.bias` at the
//! indices of its `nn.Sequential` (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24,
//! 26, 28 for `vgg16`), `classifier.0` (fc6), `classifier.3` (fc7) and
//! `classifier.6` (fc8, the head). Keras names (`block3_conv2`, as
//! `functional_1/block3_conv2_1/convolution/ReadVariableOp:0` in a tf2onnx
//! export, or `block3_conv2/kernel:0`) are mapped onto them by
//! [`keras_to_torchvision`]. Keras' ImageNet VGG16 came from Caffe: its
//! first convolution reads BGR channels, 0-255 values minus the Caffe mean
//! ([`crate::data::preprocess::Recipe::caffe`]).
//!
//! Layer groups: `block1` ... `block5` (each block's convolutions and its
//! pool; the conv base's `block5` also pools globally), `classifier` (fc6
//! and fc7, with the full network only), and an empty top group `head`, so
//! that the `head` strategy trains the task's classifier alone.

use crate::kernels::matmul::LinearExt;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use crate::kernels::batch_norm::{self, Act};
use crate::kernels::dropout::DropoutExt;
use anyhow::{Result, bail};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d,
};
use burn::tensor::activation::relu;
use burn::tensor::module::adaptive_avg_pool2d;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::state::Init;
use super::{Architecture, Flow, Group, Positions};
use crate::data::preprocess::Recipe;
use crate::hub::{Checkpoint, HostTensor};

/// Side of the map torchvision's classifier reads (`AdaptiveAvgPool2d((7, 7))`).
const POOLED_SIDE: usize = 7;

/// How the pretrained weights expect their input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputConvention {
    /// torchvision: RGB in [0, 1], ImageNet mean and std.
    #[default]
    Torchvision,
    /// Keras' `preprocess_input(mode="caffe")`: BGR, 0-255 minus the Caffe mean.
    Caffe,
}

/// `config.json` of a VGG (written by headstart's export; a bare weights
/// file is described by [`Vgg16Config::from_checkpoint`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Vgg16Config {
    /// Output channels of each convolution, block by block (configuration
    /// D: 64 64 | 128 128 | 256 256 256 | 512 512 512 | 512 512 512).
    #[serde(default = "default_blocks")]
    pub blocks: Vec<Vec<usize>>,
    /// BatchNorm after each convolution (`vgg16_bn`).
    #[serde(default)]
    pub batch_norm: bool,
    /// torchvision's classifier (fc6, fc7) above the blocks; without it the
    /// conv base is pooled globally (Keras `include_top=False`).
    #[serde(default = "yes")]
    pub include_top: bool,
    /// Width of fc6 and fc7.
    #[serde(default = "default_hidden")]
    pub hidden: usize,
    /// Dropout after fc6 and fc7, and before the task's head.
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Side of the square input images (crop size), for shapes and FLOPs.
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    /// What input the pretrained weights expect.
    #[serde(default)]
    pub input: InputConvention,
}

fn default_blocks() -> Vec<Vec<usize>> {
    vec![
        vec![64, 64],
        vec![128, 128],
        vec![256, 256, 256],
        vec![512, 512, 512],
        vec![512, 512, 512],
    ]
}
fn yes() -> bool {
    true
}
fn default_hidden() -> usize {
    4096
}
fn default_dropout() -> f64 {
    0.5
}
fn default_image_size() -> usize {
    224
}

impl Default for Vgg16Config {
    fn default() -> Self {
        Self {
            blocks: default_blocks(),
            batch_norm: false,
            include_top: true,
            hidden: default_hidden(),
            dropout: default_dropout(),
            image_size: default_image_size(),
            input: InputConvention::Torchvision,
        }
    }
}

impl Vgg16Config {
    /// The input the weights of this configuration expect, at `crop` pixels.
    pub fn recipe(&self, crop: u32) -> Recipe {
        match self.input {
            InputConvention::Torchvision => Recipe::imagenet(crop),
            InputConvention::Caffe => Recipe::caffe(crop),
        }
    }

    /// The conv base alone (Keras `VGG16(include_top=False)`), pooled globally.
    pub fn conv_base() -> Self {
        Self {
            include_top: false,
            ..Self::default()
        }
    }

    fn check(&self) -> Result<()> {
        if self.blocks.is_empty() || self.blocks.iter().any(|b| b.is_empty()) {
            bail!("a VGG needs at least one block, each of at least one convolution");
        }
        if self.blocks.iter().flatten().any(|&c| c == 0) || self.hidden == 0 {
            bail!("VGG widths must be positive");
        }
        let min = 1usize << self.blocks.len();
        if self.image_size < min {
            bail!(
                "image size {} is too small for VGG ({} max pools of stride 2): use at least {min}",
                self.image_size,
                self.blocks.len()
            );
        }
        Ok(())
    }

    /// Channels out of the last block.
    pub fn last_channels(&self) -> usize {
        self.blocks
            .last()
            .and_then(|b| b.last())
            .copied()
            .unwrap_or(0)
    }

    /// Side of the map entering block `b` (`b == blocks.len()`: after the last pool).
    fn side(&self, b: usize) -> usize {
        (0..b).fold(self.image_size, |s, _| s / 2)
    }

    /// torchvision's `nn.Sequential` index of convolution `j` of block `b`
    /// (BatchNorm, when present, is the next index).
    pub fn feature_index(&self, b: usize, j: usize) -> usize {
        let per = if self.batch_norm { 3 } else { 2 };
        let before: usize = self.blocks[..b].iter().map(|c| c.len() * per + 1).sum();
        before + j * per
    }

    /// The configuration of a bare weights file: torchvision names (the
    /// classifier and BatchNorm present or not, widths from the shapes) or
    /// Keras names (the conv base, Caffe input).
    pub fn from_checkpoint(c: &Checkpoint) -> Self {
        if let Some(renamed) = keras_to_torchvision(c) {
            let mut config = Self::from_checkpoint(&renamed);
            config.input = InputConvention::Caffe;
            return config;
        }
        let mut config = Self {
            batch_norm: c.tensors.contains_key("features.1.running_var"),
            include_top: c.tensors.contains_key("classifier.0.weight"),
            ..Self::default()
        };
        if let Some(fc6) = c.tensors.get("classifier.0.weight") {
            config.hidden = fc6.shape[0];
        }
        for b in 0..config.blocks.len() {
            for j in 0..config.blocks[b].len() {
                let key = format!("features.{}.weight", config.feature_index(b, j));
                if let Some(t) = c.tensors.get(&key).filter(|t| t.shape.len() == 4) {
                    config.blocks[b][j] = t.shape[0];
                }
            }
        }
        config
    }
}

/// The torchvision names of Keras VGG16's convolutions (`block{b}_conv{n}`
/// anywhere in a tensor's name: a 4-D kernel, OIHW or Keras' HWIO, and a
/// 1-D bias); `None` when `c` has none. Other tensors (a Keras model's own
/// head) keep their names and are reported as unused when loading.
pub fn keras_to_torchvision(c: &Checkpoint) -> Option<Checkpoint> {
    // (block, conv) -> (kernel, bias)
    type Found<'a> = BTreeMap<(usize, usize), (Option<&'a HostTensor>, Option<&'a HostTensor>)>;
    let mut found: Found<'_> = BTreeMap::new();
    let mut rest = BTreeMap::new();
    for (name, t) in &c.tensors {
        match keras_conv(name) {
            Some(bn) if t.shape.len() == 4 => found.entry(bn).or_default().0 = Some(t),
            Some(bn) if t.shape.len() == 1 => found.entry(bn).or_default().1 = Some(t),
            _ => {
                rest.insert(name.clone(), t.clone());
            }
        }
    }
    if found.is_empty() {
        return None;
    }
    let config = Vgg16Config::default();
    let mut tensors = rest;
    for ((b, n), (kernel, bias)) in &found {
        let known =
            (1..=config.blocks.len()).contains(b) && (1..=config.blocks[b - 1].len()).contains(n);
        if !known {
            continue;
        }
        let index = config.feature_index(b - 1, n - 1);
        if let Some(k) = kernel {
            tensors.insert(format!("features.{index}.weight"), oihw(k));
        }
        if let Some(b) = bias {
            tensors.insert(format!("features.{index}.bias"), (*b).clone());
        }
    }
    let mut notes = c.notes.clone();
    notes.push(format!(
        "Keras VGG16 names mapped to torchvision's: {} convolutions (block{{b}}_conv{{n}} -> \
         features.N)",
        found.len()
    ));
    Some(Checkpoint {
        tensors,
        files: c.files.clone(),
        notes,
        graph: c.graph.clone(),
    })
}

/// Whether `c` holds a VGG16 (or VGG16-BN) conv stack: torchvision's
/// `features.N` kernels at configuration D's indices, or Keras names.
pub fn recognises(c: &Checkpoint) -> bool {
    let has4 = |k: String| c.tensors.get(&k).is_some_and(|t| t.shape.len() == 4);
    let torchvision = |batch_norm: bool| {
        let config = Vgg16Config {
            batch_norm,
            ..Vgg16Config::default()
        };
        (0..config.blocks.len()).all(|b| {
            (0..config.blocks[b].len())
                .all(|j| has4(format!("features.{}.weight", config.feature_index(b, j))))
        })
    };
    torchvision(false)
        || torchvision(true)
        || keras_to_torchvision(c).is_some_and(|r| {
            let config = Vgg16Config::default();
            (0..5).all(|b| {
                (0..config.blocks[b].len()).all(|j| {
                    r.tensors
                        .contains_key(&format!("features.{}.weight", config.feature_index(b, j)))
                })
            })
        })
}

/// `(block, conv)` of a Keras VGG layer name: a path segment
/// `block{b}_conv{n}`, optionally with a `_{k}` suffix (Keras 3 and tf2onnx
/// add one).
fn keras_conv(name: &str) -> Option<(usize, usize)> {
    name.split('/').find_map(|seg| {
        let rest = seg.strip_prefix("block")?;
        let (b, rest) = rest.split_once("_conv")?;
        let mut parts = rest.split('_');
        let n = parts.next()?;
        let suffix: Vec<&str> = parts.collect();
        let numeric = |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
        if suffix.len() > 1 || !suffix.iter().all(numeric) {
            return None;
        }
        Some((b.parse().ok()?, n.parse().ok()?))
    })
}

/// A convolution kernel in OIHW (torch's) layout: Keras' HWIO
/// `[3, 3, in, out]` is transposed, OIHW `[out, in, 3, 3]` kept.
fn oihw(t: &HostTensor) -> HostTensor {
    let s = &t.shape;
    if !(s[0] == 3 && s[1] == 3 && s[2] != 3) {
        return t.clone();
    }
    let (kh, kw, i, o) = (s[0], s[1], s[2], s[3]);
    let mut data = vec![0f32; t.data.len()];
    for y in 0..kh {
        for x in 0..kw {
            for ci in 0..i {
                for co in 0..o {
                    data[((co * i + ci) * kh + y) * kw + x] =
                        t.data[((y * kw + x) * i + ci) * o + co];
                }
            }
        }
    }
    HostTensor {
        shape: vec![o, i, kh, kw],
        dtype: t.dtype,
        data,
    }
}

/// A 3x3 convolution (padding 1), optionally BatchNorm, then ReLU.
#[derive(Module, Debug)]
pub struct ConvLayer {
    pub conv: Conv2d,
    pub bn: Option<BatchNorm>,
}

impl ConvLayer {
    fn new(input: usize, output: usize, batch_norm: bool, device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new([input, output], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            bn: batch_norm.then(|| BatchNormConfig::new(output).with_epsilon(1e-5).init(device)),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = crate::kernels::conv2d(&self.conv, x);
        match &self.bn {
            Some(bn) => batch_norm::apply(bn, y, Act::Relu),
            None => relu(y),
        }
    }
}

/// One block: its convolutions, then a 2x2 max pool.
#[derive(Module, Debug)]
pub struct VggBlock {
    pub convs: Vec<ConvLayer>,
}

impl VggBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.convs.iter().fold(x, |x, c| c.forward(x));
        crate::kernels::pool::max_pool2d(y, 2, 2, 0)
    }
}

/// fc6 and fc7 (torchvision's `classifier.0` and `classifier.3`).
#[derive(Module, Debug)]
pub struct VggClassifier {
    pub fc6: Linear,
    pub fc7: Linear,
    pub dropout: Dropout,
}

impl VggClassifier {
    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = adaptive_avg_pool2d(x, [POOLED_SIDE, POOLED_SIDE]);
        let [b, c, h, w] = x.dims();
        let x = x.reshape([b, c * h * w]);
        let x = self.dropout.apply(relu(self.fc6.apply(x)));
        self.dropout.apply(relu(self.fc7.apply(x)))
    }
}

/// The VGG16 body: everything below fc8.
#[derive(Module, Debug)]
pub struct Vgg16 {
    pub blocks: Vec<VggBlock>,
    pub classifier: Option<VggClassifier>,
    #[module(skip)]
    pub config: Vgg16Config,
    /// [`Architecture::with_feature_grid`]
    #[module(skip)]
    pub grid: usize,
}

impl Vgg16 {
    /// The architecture of `config`, parameters as burn initialises them
    /// until loaded or initialised by [`crate::models::state::load`].
    pub fn new(config: &Vgg16Config, device: &Device) -> Result<Self> {
        config.check()?;
        let mut input = 3;
        let blocks = config
            .blocks
            .iter()
            .map(|widths| VggBlock {
                convs: widths
                    .iter()
                    .map(|&w| {
                        let layer = ConvLayer::new(input, w, config.batch_norm, device);
                        input = w;
                        layer
                    })
                    .collect(),
            })
            .collect();
        let classifier = config.include_top.then(|| VggClassifier {
            fc6: LinearConfig::new(
                config.last_channels() * POOLED_SIDE * POOLED_SIDE,
                config.hidden,
            )
            .init(device),
            fc7: LinearConfig::new(config.hidden, config.hidden).init(device),
            dropout: DropoutConfig::new(config.dropout).init(),
        });
        Ok(Self {
            blocks,
            classifier,
            config: config.clone(),
            grid: 0,
        })
    }

    /// The configuration of a model directory's `config.json`, of a bare
    /// weights file ([`Vgg16Config::from_checkpoint`]), or torchvision's
    /// `vgg16` when there is neither.
    pub fn config_of(model: &Path) -> Result<Vgg16Config> {
        if model.is_file() {
            return Ok(Vgg16Config::from_checkpoint(&Checkpoint::load_file(model)?));
        }
        super::read_config_or_default(model, "a VGG16")
    }

    fn n_blocks(&self) -> usize {
        self.blocks.len()
    }

    fn top(&self) -> usize {
        self.n_blocks() + usize::from(self.classifier.is_some())
    }
}

impl Architecture for Vgg16 {
    const MODEL_TYPE: &'static str = "vgg16";
    const BASE_PREFIX: &'static str = "";
    const HF_STEM: &'static str = "Vgg";
    const SIZE_FIELDS: &'static str = "blocks, batch_norm, include_top, hidden";
    const IGNORED_KEY_SUFFIXES: &'static [&'static str] = &["num_batches_tracked"];

    fn from_config_file(path: &Path, device: &Device) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::new(&Self::config_of(dir)?, device)
    }

    fn groups(&self) -> Vec<Group> {
        let mut groups: Vec<Group> = (0..self.n_blocks())
            .map(|b| Group {
                name: format!("block{}", b + 1),
                paths: vec![format!("blocks.{b}")],
            })
            .collect();
        if self.classifier.is_some() {
            groups.push(Group {
                name: "classifier".into(),
                paths: vec!["classifier".into()],
            });
        }
        groups.push(Group {
            name: "head".into(),
            paths: vec![],
        });
        groups
    }

    fn run(&self, flow: Flow, range: Range<usize>) -> Flow {
        let n = self.n_blocks();
        let mut flow = flow;
        for g in range {
            flow = match (g, flow) {
                (g, Flow::Maps(x)) if g < n => {
                    let y = self.blocks[g].forward(x);
                    if g + 1 == n && self.classifier.is_none() {
                        super::pool_top(y, self.grid)
                    } else {
                        Flow::Maps(y)
                    }
                }
                (g, Flow::Maps(x)) if g == n && self.classifier.is_some() => {
                    Flow::Pooled(self.classifier.as_ref().expect("checked").forward(x))
                }
                (g, Flow::Pooled(x)) if g == self.top() => Flow::Pooled(x),
                (g, Flow::Maps(x)) if g == self.top() && self.grid > 0 => Flow::Maps(x),
                (g, other) => panic!("VGG16 group {g} cannot take {other:?}"),
            };
        }
        flow
    }

    fn reads_after(&self, boundary: usize) -> Positions {
        let n = self.n_blocks();
        if boundary > n || (boundary == n && self.classifier.is_none()) {
            return super::top_positions(self.feature_size(), self.grid);
        }
        let channels = match boundary {
            0 => 3,
            b => self.config.blocks[b - 1].last().copied().unwrap_or(0),
        };
        let side = self.config.side(boundary);
        Positions::Map {
            channels,
            height: side,
            width: side,
        }
    }

    fn hidden_size(&self) -> usize {
        self.feature_size()
    }

    fn feature_size(&self) -> usize {
        if self.config.include_top {
            self.config.hidden
        } else {
            self.config.last_channels()
        }
    }

    fn head_dropout(&self) -> f64 {
        self.config.dropout
    }

    /// A 3x3 convolution producing an `s`x`s` map of `o` channels from `i`
    /// channels costs 2·s²·o·i·9 per image; fc6 and fc7 2·in·out. ReLU,
    /// BatchNorm, the pools are not counted (as torchvision-style counts do not).
    fn group_flops(&self, batch: usize, _seq: usize) -> Vec<f64> {
        let b = batch as f64;
        let mut input = 3usize;
        let mut out: Vec<f64> = self
            .config
            .blocks
            .iter()
            .enumerate()
            .map(|(k, widths)| {
                let s = self.config.side(k) as f64;
                widths
                    .iter()
                    .map(|&o| {
                        let f = 2.0 * s * s * o as f64 * input as f64 * 9.0;
                        input = o;
                        b * f
                    })
                    .sum()
            })
            .collect();
        if self.config.include_top {
            let h = self.config.hidden as f64;
            let fc6_in = (self.config.last_channels() * POOLED_SIDE * POOLED_SIDE) as f64;
            out.push(b * 2.0 * (fc6_in * h + h * h));
        }
        out.push(0.0);
        out
    }

    /// Images are one position each.
    fn max_positions(&self) -> usize {
        1
    }

    /// torchvision's init: Kaiming normal (fan out) for convolutions,
    /// BatchNorm 1 and 0, Linear normal(0, 0.01), every bias zero.
    fn init(&self, _path: &str, container: &str, field: &str) -> Init {
        match (container, field) {
            ("Conv2d", "weight") => Init::KaimingNormalFanOut,
            ("BatchNorm", "gamma") | ("BatchNorm", "running_var") => Init::Ones,
            ("Linear", "weight") => Init::Normal(0.01),
            _ => Init::Zeros,
        }
    }

    fn with_image_size(mut self, side: usize) -> Self {
        self.config.image_size = side;
        self
    }

    fn with_feature_grid(mut self, grid: usize) -> Self {
        self.grid = grid;
        self
    }

    fn feature_grid(&self) -> Option<usize> {
        self.classifier.is_none().then_some(self.grid)
    }

    fn identity(&self) -> String {
        format!("{:?}", self.config)
    }

    fn hf_config(&self) -> serde_json::Value {
        super::config_json(&self.config, Self::MODEL_TYPE)
    }

    /// The input the pretrained weights were trained with: torchvision's
    /// ImageNet normalisation, or Keras' Caffe mode for Keras weights.
    fn recipe(model: &Path, side: Option<u32>) -> Result<Recipe> {
        Ok(Self::config_of(model)?.recipe(side.unwrap_or(224)))
    }

    fn recognises(checkpoint: &Checkpoint) -> bool {
        recognises(checkpoint)
    }

    /// The conv base (Keras `VGG16(include_top=False)`): the model
    /// `--model vgg16` fetches, and what `scripts/bench_vision_pytorch.py`
    /// times (`vgg16().features`, pooled). With fc6 and fc7 a `full` step
    /// would also train 120M more parameters, as the PyTorch side does not.
    fn reference(device: &Device) -> Result<Self> {
        Self::new(&Vgg16Config::conv_base(), device)
    }

    /// Keras names (the packaged ImageNet conv base) read as torchvision's.
    fn reference_checkpoint(&self, checkpoint: &Checkpoint) -> Option<Checkpoint> {
        keras_to_torchvision(checkpoint)
    }

    /// torchvision's fc8 is `classifier.6`; the conv base's head keeps
    /// its own name.
    fn head_key(&self, path: &str) -> String {
        match path.strip_prefix("classifier.") {
            Some(rest) if self.config.include_top => format!("classifier.6.{rest}"),
            _ => path.to_string(),
        }
    }

    /// `blocks.2.convs.1.conv.weight` is `features.12.weight`,
    /// `blocks.0.convs.0.bn.gamma` (with BatchNorm) `features.1.gamma`,
    /// `classifier.fc6` `classifier.0`, `classifier.fc7` `classifier.3`.
    fn key_path(&self, path: &str) -> String {
        let segs: Vec<&str> = path.split('.').collect();
        match segs.as_slice() {
            ["blocks", b, "convs", j, part, rest @ ..] => {
                let (Ok(b), Ok(j)) = (b.parse::<usize>(), j.parse::<usize>()) else {
                    return path.to_string();
                };
                if b >= self.config.blocks.len() || j >= self.config.blocks[b].len() {
                    return path.to_string();
                }
                let i = self.config.feature_index(b, j) + usize::from(*part == "bn");
                format!("features.{i}.{}", rest.join("."))
            }
            ["classifier", "fc6", rest @ ..] => format!("classifier.0.{}", rest.join(".")),
            ["classifier", "fc7", rest @ ..] => format!("classifier.3.{}", rest.join(".")),
            _ => path.to_string(),
        }
    }
}

#[cfg(test)]
mod tests;
