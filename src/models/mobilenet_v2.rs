//! MobileNetV2 with torchvision's `mobilenet_v2` semantics (Sandler et al.
//! 2018): a stride-2 3x3 stem, seventeen inverted residual blocks (1x1
//! expansion, 3x3 depthwise, 1x1 linear projection, a residual connection
//! where shapes allow), a 1x1 convolution to 1280 channels, global average
//! pooling; every convolution is followed by BatchNorm, and all but the
//! projections by ReLU6.
//!
//! Checkpoint keys are torchvision's (`features.0.0.weight`,
//! `features.3.conv.1.1.running_mean`, `classifier.1.weight`). torchvision
//! builds `features` as one `nn.Sequential` of unlike modules, which a Rust
//! struct cannot mirror field by field; the structs here name their parts
//! (`stem`, `blocks.N.expand`, `blocks.N.depthwise`, ...) and
//! [`Architecture::key_path`] spells each part's torchvision key.
//!
//! Layer groups: `features.0` (the stem), `features.1` ... `features.17`
//! (one per block), `features.18` (the last 1x1 convolution and the
//! pooling, which outputs one 1280-vector per image), and an empty top group
//! `head`, so that the `head` strategy trains the classifier alone on the
//! pooled features, the classic feature-extraction baseline.

use std::ops::Range;
use std::path::Path;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::state::Init;
use super::{Architecture, Flow, Group, Positions};
use crate::hub::Checkpoint;
use crate::kernels::batch_norm::Act;

/// The published block table: expansion t, output channels c, repeats n,
/// first stride s.
const SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// `config.json` of a MobileNetV2 (written by headstart's export; a bare
/// torchvision file uses the defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MobileNetV2Config {
    /// Channel multiplier (torchvision's `width_mult`).
    #[serde(default = "one")]
    pub width_mult: f64,
    /// Channels are rounded to multiples of this.
    #[serde(default = "eight")]
    pub round_nearest: usize,
    /// Dropout before the classifier.
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Side of the square input images (crop size), for shapes and FLOPs.
    #[serde(default = "default_image_size")]
    pub image_size: usize,
}

fn one() -> f64 {
    1.0
}
fn eight() -> usize {
    8
}
fn default_dropout() -> f64 {
    0.2
}
fn default_image_size() -> usize {
    224
}

impl Default for MobileNetV2Config {
    fn default() -> Self {
        Self {
            width_mult: 1.0,
            round_nearest: 8,
            dropout: 0.2,
            image_size: 224,
        }
    }
}

/// torchvision's `_make_divisible`: `v` rounded to a multiple of `divisor`,
/// never below it and never more than 10% under `v`.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v = (((v + d / 2.0) as usize) / divisor * divisor).max(divisor);
    if (new_v as f64) < 0.9 * v {
        new_v += divisor;
    }
    new_v
}

/// One block's shape: input and output channels, hidden width, stride.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockShape {
    pub input: usize,
    pub output: usize,
    pub hidden: usize,
    pub stride: usize,
    pub expand: bool,
}

impl MobileNetV2Config {
    fn check(&self) -> Result<()> {
        if !(self.width_mult > 0.0 && self.width_mult.is_finite()) {
            bail!("width_mult must be positive, not {}", self.width_mult);
        }
        if self.round_nearest == 0 {
            bail!("round_nearest must be at least 1");
        }
        if self.image_size < 32 {
            bail!(
                "image size {} is too small for MobileNetV2 (five stride-2 stages): use at least 32",
                self.image_size
            );
        }
        Ok(())
    }

    /// Channels out of the stem.
    pub fn stem_channels(&self) -> usize {
        make_divisible(32.0 * self.width_mult, self.round_nearest)
    }

    /// Channels of the last convolution (the pooled features).
    pub fn last_channels(&self) -> usize {
        make_divisible(1280.0 * self.width_mult.max(1.0), self.round_nearest)
    }

    /// The seventeen blocks, bottom to top.
    pub fn blocks(&self) -> Vec<BlockShape> {
        let mut input = self.stem_channels();
        let mut out = Vec::new();
        for (t, c, n, s) in SETTINGS {
            let output = make_divisible(c as f64 * self.width_mult, self.round_nearest);
            for i in 0..n {
                out.push(BlockShape {
                    input,
                    output,
                    hidden: input * t,
                    stride: if i == 0 { s } else { 1 },
                    expand: t != 1,
                });
                input = output;
            }
        }
        out
    }

    /// Side of the feature map after the stem and after each block.
    fn sides(&self) -> Vec<usize> {
        let down = |x: usize, s: usize| (x - 1) / s + 1; // 3x3, padding 1
        let mut side = down(self.image_size, 2);
        let mut sides = vec![side];
        for b in self.blocks() {
            side = down(side, b.stride);
            sides.push(side);
        }
        sides
    }
}

/// Convolution, BatchNorm and (optionally) ReLU6: torchvision's
/// `Conv2dNormActivation`, keys `.0` and `.1`.
#[derive(Module, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm,
    #[module(skip)]
    pub relu: bool,
}

impl ConvBn {
    fn new(
        input: usize,
        output: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
        relu: bool,
        device: &Device,
    ) -> Self {
        let pad = (kernel - 1) / 2;
        Self {
            conv: Conv2dConfig::new([input, output], [kernel, kernel])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_groups(groups)
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(output).with_epsilon(1e-5).init(device),
            relu,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let act = if self.relu { Act::Relu6 } else { Act::None };
        crate::kernels::conv2d_bn(&self.conv, &self.bn, x, act)
    }
}

/// An inverted residual block.
#[derive(Module, Debug)]
pub struct InvertedResidual {
    /// 1x1 expansion (absent when the expansion factor is 1).
    pub expand: Option<ConvBn>,
    /// 3x3 depthwise convolution.
    pub depthwise: ConvBn,
    /// 1x1 linear projection (no activation).
    pub project: ConvBn,
    #[module(skip)]
    pub residual: bool,
}

impl InvertedResidual {
    fn new(s: &BlockShape, device: &Device) -> Self {
        Self {
            expand: s
                .expand
                .then(|| ConvBn::new(s.input, s.hidden, 1, 1, 1, true, device)),
            depthwise: ConvBn::new(s.hidden, s.hidden, 3, s.stride, s.hidden, true, device),
            project: ConvBn::new(s.hidden, s.output, 1, 1, 1, false, device),
            residual: s.stride == 1 && s.input == s.output,
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
}

/// The MobileNetV2 body: everything below the classifier.
#[derive(Module, Debug)]
pub struct MobileNetV2 {
    pub stem: ConvBn,
    pub blocks: Vec<InvertedResidual>,
    pub last: ConvBn,
    #[module(skip)]
    pub config: MobileNetV2Config,
    /// [`Architecture::with_feature_grid`]
    #[module(skip)]
    pub grid: usize,
}

impl MobileNetV2 {
    /// The architecture of `config`, parameters zero until loaded or initialised.
    pub fn new(config: &MobileNetV2Config, device: &Device) -> Result<Self> {
        config.check()?;
        let blocks = config.blocks();
        let top = blocks.last().map_or(config.stem_channels(), |b| b.output);
        Ok(Self {
            stem: ConvBn::new(3, config.stem_channels(), 3, 2, 1, true, device),
            blocks: blocks
                .iter()
                .map(|s| InvertedResidual::new(s, device))
                .collect(),
            last: ConvBn::new(top, config.last_channels(), 1, 1, 1, true, device),
            config: config.clone(),
            grid: 0,
        })
    }

    /// The configuration in a model directory's `config.json`, or the
    /// defaults (torchvision's ImageNet model) for a bare weights file.
    pub fn config_of(model: &Path) -> Result<MobileNetV2Config> {
        super::read_config_or_default(model, "a MobileNetV2")
    }
}

impl Architecture for MobileNetV2 {
    const MODEL_TYPE: &'static str = "mobilenet_v2";
    const BASE_PREFIX: &'static str = "";
    const HF_STEM: &'static str = "MobileNetV2";
    const SIZE_FIELDS: &'static str = "width_mult, round_nearest";
    const IGNORED_KEY_SUFFIXES: &'static [&'static str] = &["num_batches_tracked"];

    fn from_config_file(path: &Path, device: &Device) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::new(&Self::config_of(dir)?, device)
    }

    fn reference(device: &Device) -> Result<Self> {
        Self::new(&MobileNetV2Config::default(), device)
    }

    fn recognises(checkpoint: &Checkpoint) -> bool {
        [
            "features.18.0.weight",
            "features.1.conv.0.0.weight",
            "features.17.conv.2.weight",
        ]
        .iter()
        .all(|k| checkpoint.tensors.contains_key(*k))
    }

    fn groups(&self) -> Vec<Group> {
        let mut groups = vec![Group {
            name: "features.0".into(),
            paths: vec!["stem".into()],
        }];
        for i in 0..self.blocks.len() {
            groups.push(Group {
                name: format!("features.{}", i + 1),
                paths: vec![format!("blocks.{i}")],
            });
        }
        groups.push(Group {
            name: format!("features.{}", self.blocks.len() + 1),
            paths: vec!["last".into()],
        });
        groups.push(Group {
            name: "head".into(),
            paths: vec![],
        });
        groups
    }

    fn run(&self, flow: Flow, range: Range<usize>) -> Flow {
        let n = self.blocks.len();
        let mut flow = flow;
        for g in range {
            flow = match (g, flow) {
                (0, Flow::Maps(x)) => Flow::Maps(self.stem.forward(x)),
                (g, Flow::Maps(x)) if g <= n => Flow::Maps(self.blocks[g - 1].forward(x)),
                (g, Flow::Maps(x)) if g == n + 1 => {
                    super::pool_top(self.last.forward(x), self.grid)
                }
                (g, Flow::Pooled(x)) if g == n + 2 => Flow::Pooled(x),
                (g, Flow::Maps(x)) if g == n + 2 && self.grid > 0 => Flow::Maps(x),
                (g, other) => panic!("MobileNetV2 group {g} cannot take {other:?}"),
            };
        }
        flow
    }

    fn reads_after(&self, boundary: usize) -> Positions {
        let n = self.blocks.len();
        if boundary > n + 1 {
            return super::top_positions(self.feature_size(), self.grid);
        }
        let sides = self.config.sides();
        let channels = match boundary {
            0 => 3,
            1 => self.config.stem_channels(),
            b => self.config.blocks()[b - 2].output,
        };
        let side = if boundary == 0 {
            self.config.image_size
        } else {
            sides[boundary - 1]
        };
        Positions::Map {
            channels,
            height: side,
            width: side,
        }
    }

    fn hidden_size(&self) -> usize {
        self.config.last_channels()
    }

    fn feature_size(&self) -> usize {
        self.config.last_channels()
    }

    fn head_dropout(&self) -> f64 {
        self.config.dropout
    }

    /// A convolution producing an `s`x`s` map of `o` channels from `i`
    /// channels in `g` groups with a `k`x`k` kernel costs 2·s²·o·(i/g)·k²
    /// per image (multiply and add). BatchNorm, ReLU6, the residual adds and
    /// the pooling (a few operations per activation) are not counted, as
    /// torchvision-style FLOP counts do not.
    fn group_flops(&self, batch: usize, _seq: usize) -> Vec<f64> {
        let conv = |side: usize, o: usize, i: usize, k: usize| {
            2.0 * (side * side) as f64 * o as f64 * i as f64 * (k * k) as f64
        };
        let sides = self.config.sides();
        let b = batch as f64;
        let mut out = vec![b * conv(sides[0], self.config.stem_channels(), 3, 3)];
        let mut in_side = sides[0];
        for (j, s) in self.config.blocks().iter().enumerate() {
            let side = sides[j + 1];
            let mut f = 0.0;
            if s.expand {
                f += conv(in_side, s.hidden, s.input, 1);
            }
            f += conv(side, s.hidden, 1, 3);
            f += conv(side, s.output, s.hidden, 1);
            out.push(b * f);
            in_side = side;
        }
        let top = self.config.blocks().last().map_or(0, |s| s.output);
        out.push(b * conv(in_side, self.config.last_channels(), top, 1));
        out.push(0.0);
        out
    }

    /// Images are one position each.
    fn max_positions(&self) -> usize {
        1
    }

    /// torchvision's init: Kaiming normal (fan out) for convolutions,
    /// BatchNorm 1 and 0 (running mean 0, variance 1), the classifier
    /// normal(0, 0.01) with zero bias.
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
        Some(self.grid)
    }

    fn identity(&self) -> String {
        format!("{:?}", self.config)
    }

    fn hf_config(&self) -> serde_json::Value {
        super::config_json(&self.config, Self::MODEL_TYPE)
    }

    /// torchvision's classifier is `Sequential(Dropout, Linear)`.
    fn head_key(&self, path: &str) -> String {
        match path.strip_prefix("classifier.") {
            Some(rest) => format!("classifier.1.{rest}"),
            None => path.to_string(),
        }
    }

    /// `stem.conv` is `features.0.0`, `blocks.3.depthwise.bn` is
    /// `features.4.conv.1.1`, `blocks.0.project.conv` is `features.1.conv.1`
    /// (the first block has no expansion), `last.bn` is `features.18.1`.
    fn key_path(&self, path: &str) -> String {
        let conv_or_bn = |part: &str| match part {
            "conv" => "0",
            _ => "1",
        };
        let segs: Vec<&str> = path.split('.').collect();
        let n = self.blocks.len();
        match segs.as_slice() {
            ["stem", part, rest @ ..] => {
                format!("features.0.{}.{}", conv_or_bn(part), rest.join("."))
            }
            ["last", part, rest @ ..] => {
                format!("features.{}.{}.{}", n + 1, conv_or_bn(part), rest.join("."))
            }
            ["blocks", i, layer, part, rest @ ..] => {
                let Ok(i) = i.parse::<usize>() else {
                    return path.to_string();
                };
                let e = usize::from(self.blocks.get(i).is_some_and(|b| b.expand.is_some()));
                let rest = rest.join(".");
                let f = i + 1;
                match *layer {
                    "expand" => format!("features.{f}.conv.0.{}.{rest}", conv_or_bn(part)),
                    "depthwise" => format!("features.{f}.conv.{e}.{}.{rest}", conv_or_bn(part)),
                    // torchvision's projection is a bare Conv2d then a BatchNorm
                    _ => format!(
                        "features.{f}.conv.{}.{rest}",
                        e + 1 + usize::from(*part != "conv")
                    ),
                }
            }
            _ => path.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Checkpoint;
    use crate::models::TaskModel;
    use crate::models::params::host;
    use crate::models::state::{Source, load};
    use crate::tasks::Task;
    use crate::tasks::classification::LabelMap;
    use crate::tasks::image::ImageClassification;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/vision")
            .join(name)
    }

    /// The fixtures' input: sin(0.1(n+1)(h+1) + 0.07(c+1)(w+1)), f64 then f32.
    fn sine_input(n: usize, side: usize) -> Tensor<4> {
        let mut v = Vec::with_capacity(n * 3 * side * side);
        for b in 0..n {
            for c in 0..3 {
                for h in 0..side {
                    for w in 0..side {
                        let x = 0.1 * (b + 1) as f64 * (h + 1) as f64
                            + 0.07 * (c + 1) as f64 * (w + 1) as f64;
                        v.push(x.sin() as f32);
                    }
                }
            }
        }
        Tensor::from_data(
            burn::tensor::TensorData::new(v, [n, 3, side, side]),
            &Device::default(),
        )
    }

    fn classifier(
        config: MobileNetV2Config,
        labels: usize,
    ) -> TaskModel<MobileNetV2, crate::tasks::classification::ClassificationHead> {
        classifier_on(config, labels, &Device::default())
    }

    fn classifier_on(
        config: MobileNetV2Config,
        labels: usize,
        device: &Device,
    ) -> TaskModel<MobileNetV2, crate::tasks::classification::ClassificationHead> {
        let device = device.clone();
        let task = ImageClassification {
            labels: LabelMap {
                labels: (0..labels).map(|i| i.to_string()).collect(),
            },
            recipe: crate::data::preprocess::Recipe::imagenet(224),
            seed: 0,
        };
        let body = MobileNetV2::new(&config, &device).unwrap();
        let head = task.new_head(&body, &device);
        TaskModel { body, head }
    }

    #[test]
    fn logits_match_torchvision_on_a_random_checkpoint() {
        let reference: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture("mobilenet_v2_random.json")).unwrap(),
        )
        .unwrap();
        let config = MobileNetV2Config {
            width_mult: reference["config"]["width_mult"].as_f64().unwrap(),
            ..MobileNetV2Config::default()
        };
        let checkpoint =
            Checkpoint::load_file(&fixture("mobilenet_v2_random.safetensors")).unwrap();
        // every parameter and buffer from the file, every key of the file used
        let (model, _) = load(classifier(config, 10), Source::Exact(&checkpoint), 0).unwrap();
        let x = sine_input(2, 224);
        let sum: f64 = host(&x).1.iter().map(|v| *v as f64).sum();
        assert!((sum - reference["input"]["sum"].as_f64().unwrap()).abs() < 1e-6);
        let features = model.features(Flow::Maps(x), 0);
        let logits = host(&model.head.forward(features)).1;
        let want: Vec<f32> = reference["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
            })
            .collect();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = logits
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "max |diff| {diff} (scale {scale})"
        );
    }

    #[test]
    fn frozen_batch_norm_keeps_running_statistics_and_trains_scale() {
        let config = MobileNetV2Config {
            width_mult: 0.25,
            ..MobileNetV2Config::default()
        };
        let device = Device::default().autodiff();
        let (blank, _) = load(classifier_on(config, 3, &device), Source::Scratch, 7).unwrap();
        let groups = blank.num_groups();
        // read through export, as checkpoints and the exported model read them
        let stats =
            |m: &TaskModel<MobileNetV2, crate::tasks::classification::ClassificationHead>| {
                crate::models::state::export(m, &|_| true)
                    .into_iter()
                    .find(|(k, _, _)| k == "features.0.1.running_mean")
                    .unwrap()
                    .2
            };
        let x = || Flow::Maps(Tensor::from_data(sine_input(2, 32).into_data(), &device));
        let before = stats(&blank);

        // every group trainable: batch statistics, running ones updated
        let training = blank.clone().set_trainable(&vec![true; groups]);
        let _ = training.head.forward(training.features(x(), 0));
        assert_ne!(
            stats(&training),
            before,
            "--bn train updates running statistics"
        );

        // --bn frozen: inference mode everywhere, scale and shift still learn
        // (clones share running statistics: read them again first)
        let frozen = blank.set_trainable(&vec![true; groups]).freeze_batch_norm();
        let loaded = stats(&frozen);
        let loss = frozen.head.forward(frozen.features(x(), 0)).sum();
        assert_eq!(stats(&frozen), loaded, "--bn frozen leaves them as loaded");
        let grads = loss.backward();
        assert!(frozen.body.stem.bn.gamma.grad(&grads).is_some());
        assert!(frozen.body.stem.conv.weight.grad(&grads).is_some());
    }

    #[test]
    fn channel_rounding_matches_torchvision() {
        assert_eq!(make_divisible(32.0, 8), 32);
        assert_eq!(make_divisible(32.0 * 0.35, 8), 16);
        assert_eq!(make_divisible(24.0 * 0.25, 8), 8);
        assert_eq!(make_divisible(1280.0, 8), 1280);
        let c = MobileNetV2Config::default();
        let blocks = c.blocks();
        assert_eq!(blocks.len(), 17);
        assert_eq!(blocks[0].hidden, 32);
        assert!(!blocks[0].expand);
        assert_eq!(blocks[1].hidden, 96);
        assert_eq!(blocks[16].output, 320);
        assert_eq!(c.sides(), {
            let mut v = vec![112, 112, 56, 56, 28, 28, 28, 14, 14, 14, 14, 14, 14, 14];
            v.extend([7, 7, 7, 7]);
            v
        });
    }

    #[test]
    fn module_paths_spell_torchvision_keys() {
        let m = MobileNetV2::new(&MobileNetV2Config::default(), &Device::default()).unwrap();
        assert_eq!(m.key_path("stem.conv.weight"), "features.0.0.weight");
        assert_eq!(
            m.key_path("stem.bn.running_var"),
            "features.0.1.running_var"
        );
        assert_eq!(
            m.key_path("blocks.0.depthwise.conv.weight"),
            "features.1.conv.0.0.weight"
        );
        assert_eq!(
            m.key_path("blocks.0.project.conv.weight"),
            "features.1.conv.1.weight"
        );
        assert_eq!(
            m.key_path("blocks.0.project.bn.gamma"),
            "features.1.conv.2.gamma"
        );
        assert_eq!(
            m.key_path("blocks.3.expand.bn.beta"),
            "features.4.conv.0.1.beta"
        );
        assert_eq!(
            m.key_path("blocks.3.depthwise.conv.weight"),
            "features.4.conv.1.0.weight"
        );
        assert_eq!(
            m.key_path("blocks.3.project.conv.weight"),
            "features.4.conv.2.weight"
        );
        assert_eq!(
            m.key_path("blocks.3.project.bn.running_mean"),
            "features.4.conv.3.running_mean"
        );
        assert_eq!(m.key_path("last.bn.gamma"), "features.18.1.gamma");
    }

    #[test]
    fn imagenet_model_has_the_published_size_and_cost() {
        let m = MobileNetV2::new(&MobileNetV2Config::default(), &Device::default()).unwrap();
        // torchvision: 3,504,872 parameters with the 1000-class classifier
        // (1280 * 1000 + 1000 of them); 300.77 M multiply-adds at 224 px
        // with the classifier's 1.28 M (fvcore's count, torchvision's docs).
        let body: usize = m.num_params();
        let bn_buffers: usize = 2
            * (m.config.stem_channels()
                + m.config.last_channels()
                + m.config
                    .blocks()
                    .iter()
                    .map(|b| if b.expand { 2 * b.hidden } else { b.hidden } + b.output)
                    .sum::<usize>());
        assert_eq!(body - bn_buffers + 1280 * 1000 + 1000, 3_504_872);
        let macs: f64 = m.group_flops(1, 1).iter().sum::<f64>() / 2.0 + 1280.0 * 1000.0;
        assert!((macs / 1e6 - 300.77).abs() < 0.01, "{macs}");
        assert_eq!(m.groups().len(), 20);
        assert_eq!(
            m.reads_after(4),
            Positions::Map {
                channels: 24,
                height: 56,
                width: 56
            }
        );
        assert_eq!(m.reads_after(19), Positions::Vector);
    }
}
