//! ResNet (He et al. 2015) with torchvision's `resnet18`/`resnet50`
//! semantics: a 7x7 stride-2 convolution, BatchNorm, ReLU and a 3x3 stride-2
//! max pooling (the stem); stages of residual blocks, the first block of
//! every stage but the first halving the map; global average pooling. A
//! basic block is two 3x3 convolutions; a bottleneck block a 1x1 reduction
//! to a quarter of the stage's width, a 3x3 convolution (which carries the
//! stride, "ResNet v1.5") and a 1x1 expansion. Every convolution is followed
//! by BatchNorm; a block adds its input (through a 1x1 convolution and
//! BatchNorm, the `downsample`, where the shape changes) before its last
//! ReLU.
//!
//! The sizes follow transformers' `ResNetConfig` (`embedding_size`,
//! `hidden_sizes`, `depths`, `layer_type`, `downsample_in_first_stage`,
//! `downsample_in_bottleneck`), which describes torchvision's ResNet-18/34/
//! 50/101/152 and narrower ones alike. A bare weights file gets its sizes
//! from its tensor names and shapes ([`ResNetConfig::from_tensors`]): the
//! number of blocks per stage, the widths, and basic or bottleneck blocks
//! (`layer1.0.conv3.weight` is there).
//!
//! Checkpoint keys are torchvision's (`conv1.weight`, `bn1.running_mean`,
//! `layer2.0.downsample.0.weight`, `layer3.1.bn2.bias`, `fc.weight`);
//! timm's `resnet18`/`resnet50` use exactly the same names. transformers'
//! `ResNetForImageClassification` names the same tensors otherwise
//! (`resnet.embedder.embedder.convolution.weight`,
//! `resnet.encoder.stages.S.layers.L.layer.K.normalization.bias`,
//! `...shortcut.convolution.weight`, `classifier.1.weight`); those load
//! too, through [`Architecture::key_aliases`], and are reported as renamed.
//! Export writes transformers' names ([`Architecture::export_key`]) so that
//! `ResNetForImageClassification.from_pretrained` reads the directory.
//!
//! Layer groups: `stem` (conv1, bn1, the pooling), `layer1` ... `layer4`
//! (one per stage; the last one ends with the global average pooling,
//! which has no parameters, so that a feature cache above it keeps one
//! vector per image), and an empty top group `head` where the task's
//! classifier (torchvision's `fc`) sits.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::state::Init;
use super::{Architecture, Flow, Group, Positions};
use crate::hub::Checkpoint;
use crate::hub::HostTensor;
use crate::kernels::batch_norm::{self, Act};

/// The kind of residual block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerType {
    /// Two 3x3 convolutions (ResNet-18/34).
    Basic,
    /// 1x1, 3x3, 1x1 with a 4x expansion (ResNet-50/101/152).
    Bottleneck,
}

/// `config.json` of a ResNet: transformers' `ResNetConfig` fields (missing
/// ones take its defaults, a ResNet-50) and the input size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResNetConfig {
    #[serde(default = "three")]
    pub num_channels: usize,
    /// Channels out of the stem.
    #[serde(default = "sixty_four")]
    pub embedding_size: usize,
    /// Channels out of each stage.
    #[serde(default = "resnet50_widths")]
    pub hidden_sizes: Vec<usize>,
    /// Blocks per stage.
    #[serde(default = "resnet50_depths")]
    pub depths: Vec<usize>,
    #[serde(default = "bottleneck")]
    pub layer_type: LayerType,
    #[serde(default = "relu_name")]
    pub hidden_act: String,
    /// The first stage halves the map too (torchvision: never).
    #[serde(default)]
    pub downsample_in_first_stage: bool,
    /// A bottleneck's stride sits on its first 1x1 convolution ("v1")
    /// rather than on the 3x3 (torchvision's "v1.5").
    #[serde(default)]
    pub downsample_in_bottleneck: bool,
    /// Side of the square input images (crop size), for shapes and FLOPs.
    #[serde(default = "default_image_size")]
    pub image_size: usize,
}

fn three() -> usize {
    3
}
fn sixty_four() -> usize {
    64
}
fn resnet50_widths() -> Vec<usize> {
    vec![256, 512, 1024, 2048]
}
fn resnet50_depths() -> Vec<usize> {
    vec![3, 4, 6, 3]
}
fn bottleneck() -> LayerType {
    LayerType::Bottleneck
}
fn relu_name() -> String {
    "relu".into()
}
fn default_image_size() -> usize {
    224
}

/// One block's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockShape {
    pub input: usize,
    pub output: usize,
    /// Width of a bottleneck's middle convolutions (the output for a basic block).
    pub mid: usize,
    pub stride: usize,
}

impl ResNetConfig {
    /// torchvision's `resnet18`.
    pub fn resnet18() -> Self {
        Self {
            hidden_sizes: vec![64, 128, 256, 512],
            depths: vec![2, 2, 2, 2],
            layer_type: LayerType::Basic,
            ..Self::resnet50()
        }
    }

    /// torchvision's ResNet of depth `arch` (`resnet18`, `resnet34`,
    /// `resnet50`, `resnet101`, `resnet152`; `resnet` is ResNet-50).
    pub fn named(arch: &str) -> Result<Self> {
        let (layer_type, depths) = match arch {
            "resnet18" => (LayerType::Basic, vec![2, 2, 2, 2]),
            "resnet34" => (LayerType::Basic, vec![3, 4, 6, 3]),
            "resnet" | "resnet50" => (LayerType::Bottleneck, resnet50_depths()),
            "resnet101" => (LayerType::Bottleneck, vec![3, 4, 23, 3]),
            "resnet152" => (LayerType::Bottleneck, vec![3, 8, 36, 3]),
            _ => bail!(
                "`{arch}` is not a ResNet: resnet18, resnet34, resnet50, resnet101 or resnet152"
            ),
        };
        let base = if layer_type == LayerType::Basic {
            Self::resnet18()
        } else {
            Self::resnet50()
        };
        Ok(Self { depths, ..base })
    }

    /// torchvision's `resnet50` (transformers' defaults).
    pub fn resnet50() -> Self {
        Self {
            num_channels: 3,
            embedding_size: 64,
            hidden_sizes: resnet50_widths(),
            depths: resnet50_depths(),
            layer_type: LayerType::Bottleneck,
            hidden_act: relu_name(),
            downsample_in_first_stage: false,
            downsample_in_bottleneck: false,
            image_size: 224,
        }
    }

    fn check(&self, what: &str) -> Result<()> {
        if self.hidden_act != "relu" {
            bail!(
                "{what}: hidden_act `{}` is not supported (ResNet here uses relu)",
                self.hidden_act
            );
        }
        if self.num_channels != 3 {
            bail!(
                "{what}: num_channels is {}, but images are fed as RGB (3 channels)",
                self.num_channels
            );
        }
        if self.depths.is_empty() || self.depths.len() != self.hidden_sizes.len() {
            bail!(
                "{what}: depths {:?} and hidden_sizes {:?} must list the same, non-zero number of stages",
                self.depths,
                self.hidden_sizes
            );
        }
        if self.depths.contains(&0) || self.hidden_sizes.contains(&0) || self.embedding_size == 0 {
            bail!("{what}: every stage needs at least one block and one channel");
        }
        if self.layer_type == LayerType::Bottleneck && self.hidden_sizes.iter().any(|h| h % 4 != 0)
        {
            bail!(
                "{what}: bottleneck stages need hidden_sizes divisible by 4, not {:?}",
                self.hidden_sizes
            );
        }
        let min = 1usize << (2 + self.strides().iter().filter(|s| **s == 2).count());
        if self.image_size < min {
            bail!(
                "image size {} is too small for this ResNet: use at least {min}",
                self.image_size
            );
        }
        Ok(())
    }

    /// The first block's stride of each stage.
    fn strides(&self) -> Vec<usize> {
        (0..self.depths.len())
            .map(|s| {
                if s > 0 || self.downsample_in_first_stage {
                    2
                } else {
                    1
                }
            })
            .collect()
    }

    /// The blocks of each stage, bottom to top.
    pub fn stages(&self) -> Vec<Vec<BlockShape>> {
        let mut input = self.embedding_size;
        let strides = self.strides();
        let mut out = Vec::new();
        for (s, (&depth, &output)) in self.depths.iter().zip(&self.hidden_sizes).enumerate() {
            let mid = match self.layer_type {
                LayerType::Basic => output,
                LayerType::Bottleneck => output / 4,
            };
            let mut stage = Vec::new();
            for i in 0..depth {
                stage.push(BlockShape {
                    input,
                    output,
                    mid,
                    stride: if i == 0 { strides[s] } else { 1 },
                });
                input = output;
            }
            out.push(stage);
        }
        out
    }

    /// Side of the map after the stem's convolution, after its pooling, and
    /// after each stage.
    fn sides(&self) -> (usize, Vec<usize>) {
        let down = |x: usize, s: usize| (x - 1) / s + 1; // kernel k, padding k / 2
        let conv = down(self.image_size, 2);
        let mut side = down(conv, 2);
        let mut sides = vec![side];
        for s in self.strides() {
            side = down(side, s);
            sides.push(side);
        }
        (conv, sides)
    }

    /// The sizes of the ResNet whose tensors these are, in torchvision's (or
    /// timm's) naming or transformers'; `what` names the file in errors.
    pub fn from_tensors(tensors: &BTreeMap<String, HostTensor>, what: &str) -> Result<Self> {
        let shape = |k: &str| tensors.get(k).map(|t| t.shape.clone());
        let out_channels = |k: &str| shape(k).and_then(|s| s.first().copied());
        let mut config = Self::resnet50();
        // torchvision and timm
        if let Some(stem) = shape("conv1.weight").filter(|s| s.len() == 4) {
            config.embedding_size = stem[0];
            config.num_channels = stem[1];
            let bottleneck = tensors.contains_key("layer1.0.conv3.weight");
            config.layer_type = if bottleneck {
                LayerType::Bottleneck
            } else {
                LayerType::Basic
            };
            let last = if bottleneck { "conv3" } else { "conv2" };
            let (mut depths, mut widths) = (Vec::new(), Vec::new());
            for s in 1.. {
                let blocks = (0..)
                    .take_while(|i| tensors.contains_key(&format!("layer{s}.{i}.conv1.weight")))
                    .count();
                if blocks == 0 {
                    break;
                }
                depths.push(blocks);
                let key = format!("layer{s}.0.{last}.weight");
                widths.push(out_channels(&key).with_context(|| {
                    format!("{what}: `layer{s}.0.conv1.weight` is there but `{key}` is not")
                })?);
                if bottleneck {
                    let mid = out_channels(&format!("layer{s}.0.conv1.weight")).unwrap_or(0);
                    if mid * 4 != widths[s - 1] {
                        bail!(
                            "{what}: `layer{s}.0.conv1.weight` has {mid} channels, not a quarter of \
                             the stage's {}: wide or grouped ResNets (wide_resnet, resnext) are \
                             not supported",
                            widths[s - 1]
                        );
                    }
                }
            }
            if depths.is_empty() {
                bail!(
                    "{what}: `conv1.weight` is there but no `layer1.0.conv1.weight`: not a ResNet"
                );
            }
            config.depths = depths;
            config.hidden_sizes = widths;
            return Ok(config);
        }
        // transformers: ResNetForImageClassification, or the bare ResNetModel
        for prefix in ["resnet.", ""] {
            let Some(stem) = shape(&format!("{prefix}embedder.embedder.convolution.weight"))
                .filter(|s| s.len() == 4)
            else {
                continue;
            };
            config.embedding_size = stem[0];
            config.num_channels = stem[1];
            let layer = |s: usize, l: usize, k: usize| {
                format!("{prefix}encoder.stages.{s}.layers.{l}.layer.{k}.convolution.weight")
            };
            let bottleneck = tensors.contains_key(&layer(0, 0, 2));
            config.layer_type = if bottleneck {
                LayerType::Bottleneck
            } else {
                LayerType::Basic
            };
            let (mut depths, mut widths) = (Vec::new(), Vec::new());
            for s in 0.. {
                let blocks = (0..)
                    .take_while(|&l| tensors.contains_key(&layer(s, l, 0)))
                    .count();
                if blocks == 0 {
                    break;
                }
                depths.push(blocks);
                let key = layer(s, 0, if bottleneck { 2 } else { 1 });
                widths.push(
                    out_channels(&key)
                        .with_context(|| format!("{what}: a stage {s} block lacks `{key}`"))?,
                );
            }
            if depths.is_empty() {
                bail!("{what}: a ResNet stem but no `{}`", layer(0, 0, 0));
            }
            config.depths = depths;
            config.hidden_sizes = widths;
            return Ok(config);
        }
        bail!(
            "{what} holds no ResNet stem (`conv1.weight` as torchvision and timm name it, or \
             `resnet.embedder.embedder.convolution.weight` as transformers does): is it a ResNet? \
             Its first keys are {:?}",
            tensors.keys().take(5).collect::<Vec<_>>()
        )
    }
}

impl Default for ResNetConfig {
    fn default() -> Self {
        Self::resnet50()
    }
}

/// A 1x1 convolution and BatchNorm on the shortcut (torchvision's
/// `downsample.0` and `downsample.1`).
#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

/// A basic block (`conv3` and `bn3` absent) or a bottleneck block.
#[derive(Module, Debug)]
pub struct Block {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub conv3: Option<Conv2d>,
    pub bn3: Option<BatchNorm>,
    pub downsample: Option<Downsample>,
}

fn conv(input: usize, output: usize, kernel: usize, stride: usize, device: &Device) -> Conv2d {
    let pad = kernel / 2;
    Conv2dConfig::new([input, output], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .init(device)
}

fn bn(channels: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(channels)
        .with_epsilon(1e-5)
        .init(device)
}

impl Block {
    fn new(s: &BlockShape, layer_type: LayerType, stride_first: bool, device: &Device) -> Self {
        let downsample = (s.stride != 1 || s.input != s.output).then(|| Downsample {
            conv: conv(s.input, s.output, 1, s.stride, device),
            bn: bn(s.output, device),
        });
        match layer_type {
            LayerType::Basic => Self {
                conv1: conv(s.input, s.output, 3, s.stride, device),
                bn1: bn(s.output, device),
                conv2: conv(s.output, s.output, 3, 1, device),
                bn2: bn(s.output, device),
                conv3: None,
                bn3: None,
                downsample,
            },
            LayerType::Bottleneck => {
                let (s1, s2) = if stride_first {
                    (s.stride, 1)
                } else {
                    (1, s.stride)
                };
                Self {
                    conv1: conv(s.input, s.mid, 1, s1, device),
                    bn1: bn(s.mid, device),
                    conv2: conv(s.mid, s.mid, 3, s2, device),
                    bn2: bn(s.mid, device),
                    conv3: Some(conv(s.mid, s.output, 1, 1, device)),
                    bn3: Some(bn(s.output, device)),
                    downsample,
                }
            }
        }
    }

    /// `[batch, input, h, w]` to `[batch, output, h / stride, w / stride]`
    /// (rounded up).
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut y = batch_norm::apply(
            &self.bn1,
            crate::kernels::conv2d(&self.conv1, x.clone()),
            Act::Relu,
        );
        // a bottleneck's second BatchNorm takes its ReLU before conv3
        let bottleneck = self.conv3.is_some() && self.bn3.is_some();
        let act2 = if bottleneck { Act::Relu } else { Act::None };
        y = batch_norm::apply(&self.bn2, crate::kernels::conv2d(&self.conv2, y), act2);
        if let (Some(c3), Some(b3)) = (&self.conv3, &self.bn3) {
            y = batch_norm::apply(b3, crate::kernels::conv2d(c3, y), Act::None);
        }
        let identity = match &self.downsample {
            Some(d) => batch_norm::apply(&d.bn, crate::kernels::conv2d(&d.conv, x), Act::None),
            None => x,
        };
        relu(y + identity)
    }
}

/// The ResNet body: everything below the classifier.
#[derive(Module, Debug)]
pub struct ResNet {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    /// Stage `s` is torchvision's `layer{s+1}`.
    pub layers: Vec<Vec<Block>>,
    #[module(skip)]
    pub config: ResNetConfig,
    /// [`Architecture::with_feature_grid`]
    #[module(skip)]
    pub grid: usize,
}

impl ResNet {
    /// The architecture of `config`, parameters zero until loaded or initialised.
    pub fn new(config: &ResNetConfig, device: &Device) -> Result<Self> {
        config.check("ResNet config")?;
        Ok(Self {
            conv1: conv(config.num_channels, config.embedding_size, 7, 2, device),
            bn1: bn(config.embedding_size, device),
            layers: config
                .stages()
                .iter()
                .map(|stage| {
                    stage
                        .iter()
                        .map(|b| {
                            Block::new(
                                b,
                                config.layer_type,
                                config.downsample_in_bottleneck,
                                device,
                            )
                        })
                        .collect()
                })
                .collect(),
            config: config.clone(),
            grid: 0,
        })
    }

    /// The configuration of `model`: a directory's `config.json`
    /// (transformers' `ResNetConfig`; a timm directory, whose config.json
    /// names only the architecture, gets its sizes from its weights), or
    /// the tensor names and shapes of a bare weights file.
    pub fn config_of(model: &Path) -> Result<ResNetConfig> {
        let path = model.join("config.json");
        let config = if model.is_dir() && path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let raw: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            if raw.get("model_type").and_then(|t| t.as_str()) == Some(Self::MODEL_TYPE) {
                serde_json::from_value(raw).with_context(|| {
                    format!(
                        "{} is not a ResNet config.json (expected transformers' ResNetConfig \
                         fields: depths, hidden_sizes, layer_type basic|bottleneck)",
                        path.display()
                    )
                })?
            } else {
                let c = Checkpoint::load(model)?;
                let mut config =
                    ResNetConfig::from_tensors(&c.tensors, &model.display().to_string())?;
                if let Some(side) = raw
                    .pointer("/pretrained_cfg/input_size/1")
                    .and_then(|v| v.as_u64())
                {
                    config.image_size = side as usize;
                }
                config
            }
        } else {
            let c = Checkpoint::load_file(model)?;
            ResNetConfig::from_tensors(&c.tensors, &model.display().to_string())?
        };
        config.check(&path.display().to_string())?;
        Ok(config)
    }

    /// Runs the stem: convolution, BatchNorm, ReLU, 3x3 stride-2 max
    /// pooling; `[batch, 3, s, s]` to `[batch, embedding_size, s / 4, s / 4]`
    /// (rounded up).
    fn stem(&self, x: Tensor<4>) -> Tensor<4> {
        let y = batch_norm::apply(&self.bn1, crate::kernels::conv2d(&self.conv1, x), Act::Relu);
        // windows leave the padding out, as PyTorch's -inf padding does
        crate::kernels::pool::max_pool2d(y, 3, 2, 1)
    }

    /// transformers' name of a torchvision key (`None` for keys that are not
    /// a ResNet's).
    pub fn hf_key(key: &str) -> Option<String> {
        let segs: Vec<&str> = key.split('.').collect();
        let norm_or_conv = |part: &str| {
            if part.starts_with("conv") {
                "convolution"
            } else {
                "normalization"
            }
        };
        match segs.as_slice() {
            [part @ ("conv1" | "bn1"), rest @ ..] => Some(format!(
                "resnet.embedder.embedder.{}.{}",
                norm_or_conv(part),
                rest.join(".")
            )),
            ["fc", rest @ ..] => Some(format!("classifier.1.{}", rest.join("."))),
            [layer, i, "downsample", k, rest @ ..] => {
                let s = layer
                    .strip_prefix("layer")?
                    .parse::<usize>()
                    .ok()?
                    .checked_sub(1)?;
                let part = match *k {
                    "0" => "convolution",
                    "1" => "normalization",
                    _ => return None,
                };
                Some(format!(
                    "resnet.encoder.stages.{s}.layers.{i}.shortcut.{part}.{}",
                    rest.join(".")
                ))
            }
            [layer, i, part, rest @ ..] => {
                let s = layer
                    .strip_prefix("layer")?
                    .parse::<usize>()
                    .ok()?
                    .checked_sub(1)?;
                let k = part
                    .strip_prefix("conv")
                    .or_else(|| part.strip_prefix("bn"))?
                    .parse::<usize>()
                    .ok()?
                    .checked_sub(1)?;
                Some(format!(
                    "resnet.encoder.stages.{s}.layers.{i}.layer.{k}.{}.{}",
                    norm_or_conv(part),
                    rest.join(".")
                ))
            }
            _ => None,
        }
    }
}

impl Architecture for ResNet {
    const MODEL_TYPE: &'static str = "resnet";
    const BASE_PREFIX: &'static str = "";
    const HF_STEM: &'static str = "ResNet";
    const SIZE_FIELDS: &'static str = "embedding_size, hidden_sizes, depths, layer_type";
    const IGNORED_KEY_SUFFIXES: &'static [&'static str] = &["num_batches_tracked"];

    const ARCH_NAMES: &'static [&'static str] =
        &["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"];

    fn from_config_file(path: &Path, device: &Device) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::new(&Self::config_of(dir)?, device)
    }

    /// ResNet-50 (a bare `--arch resnet18` file takes its sizes from its tensors).
    fn reference(device: &Device) -> Result<Self> {
        Self::new(&ResNetConfig::resnet50(), device)
    }

    /// torchvision's `resnet18` ... `resnet152`; ResNet-50 for `resnet`.
    fn reference_named(arch: &str, device: &Device) -> Result<Self> {
        Self::new(&ResNetConfig::named(arch)?, device)
    }

    /// torchvision's and timm's names (`conv1.weight`, `bn1.running_var`,
    /// `layer1.0.conv1.weight`) or transformers' (stem
    /// `resnet.embedder.embedder.convolution.weight`).
    fn recognises(checkpoint: &crate::hub::Checkpoint) -> bool {
        let has = |k: &str| checkpoint.tensors.contains_key(k);
        let torchvision =
            has("conv1.weight") && has("bn1.running_var") && has("layer1.0.conv1.weight");
        let hf = ["resnet.", ""].iter().any(|p| {
            has(&format!("{p}embedder.embedder.convolution.weight"))
                && has(&format!(
                    "{p}encoder.stages.0.layers.0.layer.0.convolution.weight"
                ))
        });
        torchvision || hf
    }

    fn groups(&self) -> Vec<Group> {
        let mut groups = vec![Group {
            name: "stem".into(),
            paths: vec!["conv1".into(), "bn1".into()],
        }];
        for s in 0..self.layers.len() {
            groups.push(Group {
                name: format!("layer{}", s + 1),
                paths: vec![format!("layers.{s}")],
            });
        }
        groups.push(Group {
            name: "head".into(),
            paths: vec![],
        });
        groups
    }

    fn run(&self, flow: Flow, range: Range<usize>) -> Flow {
        let n = self.layers.len();
        let mut flow = flow;
        for g in range {
            flow = match (g, flow) {
                (0, Flow::Maps(x)) => Flow::Maps(self.stem(x)),
                (g, Flow::Maps(x)) if g <= n => {
                    let y = self.layers[g - 1].iter().fold(x, |h, b| b.forward(h));
                    if g < n {
                        Flow::Maps(y)
                    } else {
                        super::pool_top(y, self.grid)
                    }
                }
                (g, Flow::Pooled(x)) if g == n + 1 => Flow::Pooled(x),
                (g, Flow::Maps(x)) if g == n + 1 && self.grid > 0 => Flow::Maps(x),
                (g, other) => panic!("ResNet group {g} cannot take {other:?}"),
            };
        }
        flow
    }

    fn reads_after(&self, boundary: usize) -> Positions {
        let n = self.layers.len();
        if boundary > n {
            return super::top_positions(self.feature_size(), self.grid);
        }
        let (_, sides) = self.config.sides();
        let (channels, side) = match boundary {
            0 => (self.config.num_channels, self.config.image_size),
            1 => (self.config.embedding_size, sides[0]),
            b => (self.config.hidden_sizes[b - 2], sides[b - 1]),
        };
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
        *self.config.hidden_sizes.last().unwrap_or(&0)
    }

    /// torchvision's ResNet has no dropout before `fc`.
    fn head_dropout(&self) -> f64 {
        0.0
    }

    /// A convolution producing an `s`x`s` map of `o` channels from `i`
    /// channels with a `k`x`k` kernel costs 2·s²·o·i·k² per image
    /// (multiply and add); the shortcut's 1x1 convolutions count too.
    /// BatchNorm, ReLU, the residual adds and the poolings are not counted,
    /// as torchvision's published counts do not.
    fn group_flops(&self, batch: usize, _seq: usize) -> Vec<f64> {
        let conv = |side: usize, o: usize, i: usize, k: usize| {
            2.0 * (side * side) as f64 * o as f64 * i as f64 * (k * k) as f64
        };
        let c = &self.config;
        let b = batch as f64;
        let (stem_side, sides) = c.sides();
        let mut out = vec![b * conv(stem_side, c.embedding_size, c.num_channels, 7)];
        for (s, stage) in c.stages().iter().enumerate() {
            let mut f = 0.0;
            for (j, blk) in stage.iter().enumerate() {
                let (a, z) = (if j == 0 { sides[s] } else { sides[s + 1] }, sides[s + 1]);
                match c.layer_type {
                    LayerType::Basic => {
                        f += conv(z, blk.output, blk.input, 3) + conv(z, blk.output, blk.output, 3);
                    }
                    LayerType::Bottleneck => {
                        let first = if c.downsample_in_bottleneck { z } else { a };
                        f += conv(first, blk.mid, blk.input, 1)
                            + conv(z, blk.mid, blk.mid, 3)
                            + conv(z, blk.output, blk.mid, 1);
                    }
                }
                if blk.stride != 1 || blk.input != blk.output {
                    f += conv(z, blk.output, blk.input, 1);
                }
            }
            out.push(b * f);
        }
        out.push(0.0);
        out
    }

    /// Images are one position each.
    fn max_positions(&self) -> usize {
        1
    }

    /// torchvision's init: Kaiming normal (fan out, ReLU gain) for
    /// convolutions, BatchNorm 1 and 0 (running mean 0, variance 1), `fc`
    /// PyTorch's Linear default, uniform in ±1/sqrt(fan in) for weight and
    /// bias; `zero_init_residual` off, as torchvision's default.
    fn init(&self, _path: &str, container: &str, field: &str) -> Init {
        match (container, field) {
            ("Conv2d", "weight") => Init::KaimingNormalFanOut,
            ("BatchNorm", "gamma") | ("BatchNorm", "running_var") => Init::Ones,
            ("Linear", _) => Init::Uniform(1.0 / (self.feature_size().max(1) as f64).sqrt()),
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

    /// The task's `classifier` is torchvision's `fc`.
    fn head_key(&self, path: &str) -> String {
        match path.strip_prefix("classifier.") {
            Some(rest) => format!("fc.{rest}"),
            None => path.to_string(),
        }
    }

    /// `layers.1.0.downsample.conv.weight` is `layer2.0.downsample.0.weight`.
    fn key_path(&self, path: &str) -> String {
        let segs: Vec<&str> = path.split('.').collect();
        match segs.as_slice() {
            ["layers", s, rest @ ..] => {
                let Ok(s) = s.parse::<usize>() else {
                    return path.to_string();
                };
                let rest: Vec<&str> = rest
                    .iter()
                    .enumerate()
                    .map(|(j, seg)| match (j, *seg) {
                        (2, "conv") if rest.get(1) == Some(&"downsample") => "0",
                        (2, "bn") if rest.get(1) == Some(&"downsample") => "1",
                        _ => seg,
                    })
                    .collect();
                format!("layer{}.{}", s + 1, rest.join("."))
            }
            _ => path.to_string(),
        }
    }

    /// transformers' names: `ResNetForImageClassification`'s, and the bare
    /// `ResNetModel`'s (no `resnet.`).
    fn key_aliases(&self, key: &str) -> Vec<String> {
        let Some(hf) = Self::hf_key(key) else {
            return Vec::new();
        };
        let bare = hf.strip_prefix("resnet.").map(str::to_string);
        std::iter::once(hf).chain(bare).collect()
    }

    fn export_key(&self, key: &str) -> String {
        Self::hf_key(key).unwrap_or_else(|| key.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::TaskModel;
    use crate::models::params::host;
    use crate::models::state::{Source, load};
    use crate::tasks::Task;
    use crate::tasks::classification::{ClassificationHead, LabelMap};
    use crate::tasks::image::ImageClassification;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/vision")
            .join(name)
    }

    fn reference(name: &str) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
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

    fn task(labels: usize, side: u32) -> ImageClassification {
        ImageClassification {
            labels: LabelMap {
                labels: (0..labels).map(|i| i.to_string()).collect(),
            },
            recipe: crate::data::preprocess::Recipe::imagenet(side),
            seed: 0,
        }
    }

    fn classifier(config: &ResNetConfig, labels: usize) -> TaskModel<ResNet, ClassificationHead> {
        let device = Device::default();
        let task = task(labels, config.image_size as u32);
        let body = task.adapt_body(ResNet::new(config, &device).unwrap());
        let head = task.new_head(&body, &device);
        TaskModel { body, head }
    }

    fn logits(model: &TaskModel<ResNet, ClassificationHead>, side: usize) -> Vec<f32> {
        let features = model.features(Flow::Maps(sine_input(2, side)), 0);
        host(&model.head.forward(features)).1
    }

    /// Max |a - b| and the reference's largest magnitude.
    fn max_diff(got: &[f32], want: &serde_json::Value) -> (f32, f32) {
        let want: Vec<f32> = want
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
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        (diff, scale)
    }

    /// A torchvision-named fixture: sizes read from its names, every key
    /// used, logits as torchvision's.
    fn torchvision_parity(name: &str, depths: &[usize], widths: &[usize], layer_type: LayerType) {
        let file = fixture(&format!("{name}.safetensors"));
        let mut config = ResNet::config_of(&file).unwrap();
        assert_eq!(config.depths, depths);
        assert_eq!(config.hidden_sizes, widths);
        assert_eq!(config.layer_type, layer_type);
        assert_eq!(config.embedding_size, 16);
        config.image_size = 64;
        let checkpoint = Checkpoint::load_file(&file).unwrap();
        let (model, report) = load(classifier(&config, 10), Source::Exact(&checkpoint), 0).unwrap();
        assert!(report.renamed.is_empty());
        let reference = reference(&format!("{name}.json"));
        let (diff, scale) = max_diff(&logits(&model, 64), &reference["logits"]);
        eprintln!("{name}: max |logit diff| {diff:.3e}, scale {scale:.3}");
        assert!(scale > 0.5, "logits too small to compare: {scale}");
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "max |diff| {diff} (scale {scale})"
        );
    }

    #[test]
    fn basic_blocks_match_torchvision() {
        torchvision_parity(
            "resnet_basic_random",
            &[2, 1, 2, 1],
            &[16, 32, 48, 64],
            LayerType::Basic,
        );
    }

    #[test]
    fn bottleneck_blocks_match_torchvision() {
        torchvision_parity(
            "resnet_bottleneck_random",
            &[1, 2, 1, 1],
            &[32, 64, 96, 128],
            LayerType::Bottleneck,
        );
    }

    #[test]
    fn transformers_directory_loads_renamed_with_equal_logits() {
        let dir = fixture("resnet_hf_random");
        let mut config = ResNet::config_of(&dir).unwrap();
        assert!(config.downsample_in_bottleneck);
        assert_eq!(config.depths, vec![1, 2, 1, 1]);
        config.image_size = 64;
        let checkpoint = Checkpoint::load(&dir).unwrap();
        let (model, report) = load(classifier(&config, 10), Source::Exact(&checkpoint), 0).unwrap();
        // every parameter and buffer came under transformers' name
        let stored = checkpoint
            .tensors
            .keys()
            .filter(|k| !k.ends_with("num_batches_tracked"))
            .count();
        assert_eq!(report.renamed.len(), stored);
        assert!(
            report
                .renamed
                .contains(&"classifier.1.weight -> fc.weight".to_string())
        );
        assert!(report.lines()[0].contains("another naming"));
        let reference = reference("resnet_hf_random.json");
        let (diff, scale) = max_diff(&logits(&model, 64), &reference["logits"]);
        eprintln!("resnet_hf_random: max |logit diff| {diff:.3e}, scale {scale:.3}");
        assert!(scale > 0.5, "logits too small to compare: {scale}");
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "max |diff| {diff} (scale {scale})"
        );
        // the same sizes from the names alone (a bare transformers file)
        let inferred = ResNetConfig::from_tensors(&checkpoint.tensors, "x").unwrap();
        assert_eq!(inferred.hidden_sizes, config.hidden_sizes);
        assert_eq!(inferred.depths, config.depths);
        assert_eq!(inferred.layer_type, LayerType::Bottleneck);
    }

    #[test]
    fn export_writes_transformers_names_that_load_back() {
        let file = fixture("resnet_basic_random.safetensors");
        let mut config = ResNet::config_of(&file).unwrap();
        config.image_size = 64;
        let checkpoint = Checkpoint::load_file(&file).unwrap();
        let (model, _) = load(classifier(&config, 10), Source::Exact(&checkpoint), 0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("model");
        let train = crate::train::TrainConfig::default();
        crate::train::export::export(&model, &task(10, 64), &file, &out, &train).unwrap();
        let exported = Checkpoint::load(&out).unwrap();
        assert!(
            exported
                .tensors
                .contains_key("resnet.encoder.stages.1.layers.0.shortcut.convolution.weight")
        );
        assert!(exported.tensors.contains_key("classifier.1.bias"));
        assert!(!exported.tensors.keys().any(|k| k.starts_with("layer")));
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(written["model_type"], "resnet");
        assert_eq!(written["layer_type"], "basic");
        assert_eq!(written["architectures"][0], "ResNetForImageClassification");
        assert_eq!(written["depths"], serde_json::json!([2, 1, 2, 1]));
        let back = ResNet::config_of(&out).unwrap();
        assert_eq!(back, config);
        let (reloaded, _) = load(classifier(&back, 10), Source::Exact(&exported), 0).unwrap();
        assert_eq!(logits(&reloaded, 64), logits(&model, 64));
    }

    /// For scripts/check_resnet_export.py: loads the exported directory in
    /// `$HEADSTART_RESNET_EXPORT` as `eval` and `predict` do and writes its
    /// logits on the fixtures' input (at the run's crop size) to
    /// `$HEADSTART_RESNET_LOGITS`.
    #[test]
    #[ignore = "run by scripts/check_resnet_export.py"]
    fn logits_of_an_exported_directory() {
        use crate::train::eval_image::load_image_classifier;
        let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("set {k}"));
        let dir = std::path::PathBuf::from(var("HEADSTART_RESNET_EXPORT"));
        let loaded = load_image_classifier(&dir, None, &Device::default()).unwrap();
        let side = loaded.task.recipe.crop as usize;
        let values = host(&loaded.forward(sine_input(2, side))).1;
        assert!(values.iter().all(|v| v.is_finite()));
        let rows: Vec<&[f32]> = values.chunks(values.len() / 2).collect();
        let out = serde_json::json!({"side": side, "logits": rows});
        crate::fsutil::write_json_atomic(Path::new(&var("HEADSTART_RESNET_LOGITS")), &out).unwrap();
    }

    #[test]
    fn module_paths_spell_torchvision_and_transformers_keys() {
        let m = ResNet::new(&ResNetConfig::resnet50(), &Device::default()).unwrap();
        assert_eq!(m.key_path("conv1.weight"), "conv1.weight");
        assert_eq!(
            m.key_path("layers.0.2.conv3.weight"),
            "layer1.2.conv3.weight"
        );
        assert_eq!(
            m.key_path("layers.1.0.downsample.conv.weight"),
            "layer2.0.downsample.0.weight"
        );
        assert_eq!(
            m.key_path("layers.3.0.downsample.bn.running_var"),
            "layer4.0.downsample.1.running_var"
        );
        assert_eq!(m.head_key("classifier.weight"), "fc.weight");
        assert_eq!(
            ResNet::hf_key("bn1.running_mean").unwrap(),
            "resnet.embedder.embedder.normalization.running_mean"
        );
        assert_eq!(
            ResNet::hf_key("layer3.5.bn2.bias").unwrap(),
            "resnet.encoder.stages.2.layers.5.layer.1.normalization.bias"
        );
        assert_eq!(
            ResNet::hf_key("layer2.0.downsample.1.weight").unwrap(),
            "resnet.encoder.stages.1.layers.0.shortcut.normalization.weight"
        );
        assert_eq!(ResNet::hf_key("fc.weight").unwrap(), "classifier.1.weight");
        assert_eq!(ResNet::hf_key("features.0.0.weight"), None);
        assert_eq!(
            m.key_aliases("layer1.0.conv1.weight"),
            vec![
                "resnet.encoder.stages.0.layers.0.layer.0.convolution.weight".to_string(),
                "encoder.stages.0.layers.0.layer.0.convolution.weight".to_string()
            ]
        );
    }

    /// Parameters (BatchNorm buffers excluded) of the body plus a
    /// 1000-class `fc`, and multiply-adds at 224 px with that `fc`.
    fn size_and_cost(config: &ResNetConfig) -> (usize, f64) {
        let m = ResNet::new(config, &Device::default()).unwrap();
        let bn_channels: usize = config.embedding_size
            + config
                .stages()
                .iter()
                .flatten()
                .map(|b| {
                    let convs = match config.layer_type {
                        LayerType::Basic => 2 * b.output,
                        LayerType::Bottleneck => 2 * b.mid + b.output,
                    };
                    convs
                        + if b.stride != 1 || b.input != b.output {
                            b.output
                        } else {
                            0
                        }
                })
                .sum::<usize>();
        let f = m.feature_size();
        let params = m.num_params() - 2 * bn_channels + f * 1000 + 1000;
        let macs = m.group_flops(1, 1).iter().sum::<f64>() / 2.0 + (f * 1000) as f64;
        (params, macs)
    }

    #[test]
    fn imagenet_models_have_the_published_size_and_cost() {
        // torchvision: resnet18 11,689,512 parameters, 1.81 GFLOPS (counted
        // as multiply-adds); resnet50 25,557,032 and 4.09
        let (p18, macs18) = size_and_cost(&ResNetConfig::resnet18());
        assert_eq!(p18, 11_689_512);
        assert!((macs18 / 1e9 - 1.81).abs() < 0.01, "{macs18}");
        let (p50, macs50) = size_and_cost(&ResNetConfig::resnet50());
        eprintln!("resnet18: {p18} parameters, {macs18} MACs; resnet50: {p50}, {macs50}");
        assert_eq!(p50, 25_557_032);
        assert!((macs50 / 1e9 - 4.09).abs() < 0.01, "{macs50}");
        let m = ResNet::new(&ResNetConfig::resnet50(), &Device::default()).unwrap();
        assert_eq!(m.groups().len(), 6);
        assert_eq!(
            m.groups()
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>(),
            ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
        );
        assert_eq!(
            m.reads_after(1),
            Positions::Map {
                channels: 64,
                height: 56,
                width: 56
            }
        );
        assert_eq!(
            m.reads_after(4),
            Positions::Map {
                channels: 1024,
                height: 14,
                width: 14
            }
        );
        assert_eq!(m.reads_after(5), Positions::Vector);
    }

    #[test]
    fn every_named_depth_has_torchvisions_parameter_count() {
        for (arch, params) in [
            ("resnet18", 11_689_512),
            ("resnet34", 21_797_672),
            ("resnet50", 25_557_032),
            ("resnet101", 44_549_160),
            ("resnet152", 60_192_808),
        ] {
            assert_eq!(
                size_and_cost(&ResNetConfig::named(arch).unwrap()).0,
                params,
                "{arch}"
            );
        }
        let err = ResNetConfig::named("resnet20").unwrap_err().to_string();
        assert!(
            err.contains("resnet20") && err.contains("resnet152"),
            "{err}"
        );
    }

    #[test]
    fn scratch_init_is_torchvisions() {
        let config = ResNetConfig {
            image_size: 64,
            ..ResNetConfig::resnet18()
        };
        let (model, report) = load(classifier(&config, 10), Source::Scratch, 3).unwrap();
        assert!(report.from_scratch);
        let conv = host(&model.body.layers[3][1].conv2.weight.val()).1;
        let std =
            (conv.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / conv.len() as f64).sqrt();
        let want = (2.0f64 / (512.0 * 9.0)).sqrt(); // fan_out = 512 * 3 * 3
        assert!((std / want - 1.0).abs() < 0.02, "{std} vs {want}");
        assert!(
            host(&model.body.bn1.gamma.val())
                .1
                .iter()
                .all(|v| *v == 1.0)
        );
        assert!(host(&model.body.bn1.beta.val()).1.iter().all(|v| *v == 0.0));
        let fc = host(&model.head.classifier.weight.val()).1;
        let bound = 1.0 / (512f32).sqrt();
        assert!(fc.iter().all(|v| v.abs() <= bound));
        assert!(fc.iter().any(|v| v.abs() > 0.9 * bound));
        let bias = host(&model.head.classifier.bias.as_ref().unwrap().val()).1;
        assert!(bias.iter().all(|v| v.abs() <= bound) && bias.iter().any(|v| *v != 0.0));
    }

    #[test]
    fn bad_names_and_configs_are_clear_errors() {
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "features.0.0.weight".to_string(),
            HostTensor {
                shape: vec![1],
                dtype: crate::hub::DType::F32,
                data: vec![1.0],
            },
        );
        let e = ResNetConfig::from_tensors(&tensors, "w.pth")
            .unwrap_err()
            .to_string();
        assert!(e.contains("w.pth") && e.contains("conv1.weight"), "{e}");
        let bad = ResNetConfig {
            depths: vec![2, 2],
            ..ResNetConfig::resnet18()
        };
        let e = ResNet::new(&bad, &Device::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("depths"), "{e}");
    }
}
