//! Model families, one file each, behind one [`Architecture`] trait.
//!
//! A family declares its layer groups bottom to top (the units that
//! strategies freeze, cache and give learning rates to), runs any range of
//! them, says what the group above a boundary reads, counts its own FLOPs
//! and names its checkpoint keys. A task adds a head on top
//! ([`TaskModel`]); the fit loop, strategies, feature cache, checkpoints and
//! export work on that pair without knowing the family.
//!
//! Module paths are checkpoint keys: `body.encoder.layer.3.attention.self_.query.weight`
//! is `bert.encoder.layer.3.attention.self.query.weight` (the family's
//! [`Architecture::BASE_PREFIX`] for `body.`, nothing for `head.`, the
//! family's [`Architecture::RENAMES`] for segments Rust cannot spell). One
//! walk over the module ([`state`]) therefore initialises, loads, exports
//! and groups every parameter.

pub mod bert;
pub mod causal;
pub mod efficientnet;
pub mod encoder_decoder;
pub mod gpt2;
pub mod inception;
pub mod llama;
pub mod lora;
pub mod mobilenet_v2;
pub mod params;
pub mod resnet;
pub mod state;
pub mod transformer;
pub mod vgg;
pub mod vision;
pub mod vit;

use std::ops::Range;

use anyhow::{Context, Result, bail};
use burn::module::{Module, ModuleDisplay, ParamGroup};
use burn::tensor::{Device, Int, Tensor};

/// What flows between layer groups.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // one per batch, moved, never stored in bulk
pub enum Flow {
    /// A tokenised batch: ids and segment ids `[batch, seq]`, the 0/1 mask `[batch, seq]`.
    Tokens {
        ids: Tensor<2, Int>,
        type_ids: Tensor<2, Int>,
        mask: Tensor<2>,
    },
    /// Hidden states `[batch, seq, hidden]` and the 0/1 mask `[batch, seq]`.
    Hidden { x: Tensor<3>, mask: Tensor<2> },
    /// One vector per example, `[batch, features]`: what a classification head reads.
    Pooled(Tensor<2>),
    /// Images or feature maps `[batch, channels, height, width]`.
    Maps(Tensor<4>),
}

impl Flow {
    /// The same values on the plain device, outside autodiff.
    pub fn inner(self) -> Self {
        match self {
            Flow::Tokens {
                ids,
                type_ids,
                mask,
            } => Flow::Tokens {
                ids: ids.inner(),
                type_ids: type_ids.inner(),
                mask: mask.inner(),
            },
            Flow::Hidden { x, mask } => Flow::Hidden {
                x: x.inner(),
                mask: mask.inner(),
            },
            Flow::Pooled(x) => Flow::Pooled(x.inner()),
            Flow::Maps(x) => Flow::Maps(x.inner()),
        }
    }

    /// Values computed outside autodiff, as constants of the autodiff graph.
    pub fn from_inner(self) -> Self {
        match self {
            Flow::Tokens {
                ids,
                type_ids,
                mask,
            } => Flow::Tokens {
                ids: Tensor::from_inner(ids),
                type_ids: Tensor::from_inner(type_ids),
                mask: Tensor::from_inner(mask),
            },
            Flow::Hidden { x, mask } => Flow::Hidden {
                x: Tensor::from_inner(x),
                mask: Tensor::from_inner(mask),
            },
            Flow::Pooled(x) => Flow::Pooled(Tensor::from_inner(x)),
            Flow::Maps(x) => Flow::Maps(Tensor::from_inner(x)),
        }
    }

    pub fn device(&self) -> Device {
        match self {
            Flow::Tokens { mask, .. } | Flow::Hidden { mask, .. } => mask.device(),
            Flow::Pooled(x) => x.device(),
            Flow::Maps(x) => x.device(),
        }
    }
}

/// Which positions of a boundary's output the groups above it read; a
/// feature cache keeps only those.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Positions {
    /// The first position ([CLS]) only.
    First,
    /// Every real position.
    All,
    /// One vector per example (pooled features).
    Vector,
    /// Every position of a sequence of the same length for every example
    /// (a ViT's patches and [CLS]).
    Sequence { len: usize },
    /// One feature map per example.
    Map {
        channels: usize,
        height: usize,
        width: usize,
    },
}

/// `--bn`: how the BatchNorm layers of trainable groups train. Frozen
/// groups' BatchNorm always runs in inference mode on its running
/// statistics and is never updated.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum BatchNormMode {
    /// Normalise with each batch's statistics and update the running ones
    /// (PyTorch's `model.train()`).
    #[default]
    Train,
    /// Every BatchNorm in inference mode on its running statistics, which
    /// stay as loaded; its scale and shift still train where their group
    /// does (the usual choice with small batches).
    Frozen,
}

/// A layer group: a unit of freezing, caching and learning rates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The name strategies and `inspect` use (`embeddings`, `encoder.layer.3`, `head`).
    pub name: String,
    /// Module paths under the body (`encoder.layer.3`), each a checkpoint-key
    /// prefix once [`Architecture::BASE_PREFIX`] is put in front.
    pub paths: Vec<String>,
}

/// A model family: its modules, groups, FLOPs and checkpoint names.
pub trait Architecture: Module + ModuleDisplay + Sized {
    /// `config.json`'s `model_type`.
    const MODEL_TYPE: &'static str;
    /// Prefix of the base model's keys in a task checkpoint (`bert.`);
    /// checkpoints of the bare base model have none.
    const BASE_PREFIX: &'static str;
    /// The HF class name stem (`Bert` for `BertForSequenceClassification`).
    const HF_STEM: &'static str;
    /// The HF class of this family for a task's class suffix (`Bert` +
    /// `ForSequenceClassification`); families whose classes break the
    /// pattern override it (GPT-2's causal LM is `GPT2LMHeadModel`).
    fn hf_class(suffix: &str) -> String {
        format!("{}{suffix}", Self::HF_STEM)
    }
    /// Module-path segments spelled otherwise in checkpoint keys.
    const RENAMES: &'static [(&'static str, &'static str)] = &[];
    /// The `config.json` fields that set tensor shapes, named when a
    /// checkpoint's shapes disagree with the config.
    const SIZE_FIELDS: &'static str;
    /// Checkpoint keys that hold no parameter (buffers such as `position_ids`).
    const IGNORED_KEY_SUFFIXES: &'static [&'static str] = &[];
    /// First segments of module paths under the body whose checkpoint keys
    /// take no [`Architecture::BASE_PREFIX`]: a causal LM's untied output
    /// projection, which transformers keeps beside the base model
    /// (`lm_head.weight` next to `transformer.wte.weight`).
    const UNPREFIXED: &'static [&'static str] = &[];

    /// Reads `config.json` of a model directory.
    fn from_config_file(path: &std::path::Path, device: &Device) -> Result<Self>;

    /// The family's reference configuration (for image families the
    /// published ImageNet model), built when no `config.json` says otherwise
    /// (benchmarks on scratch weights).
    fn reference(_device: &Device) -> Result<Self> {
        bail!(
            "`{}` has no reference configuration: give a model directory with a config.json",
            Self::MODEL_TYPE
        )
    }

    /// The reference configuration of variant `arch` (one of
    /// [`Architecture::ARCH_NAMES`] or the family's `model_type`): the
    /// family's [`Architecture::reference`] unless the variants differ in
    /// size (ResNet's depths).
    fn reference_named(_arch: &str, device: &Device) -> Result<Self> {
        Self::reference(device)
    }

    /// Layer groups bottom to top. The last one is the top group: a task's
    /// head joins it, and every strategy trains it.
    fn groups(&self) -> Vec<Group>;

    /// Runs groups `range` of [`Architecture::groups`]: group 0 takes the
    /// task's input, the top group returns what the head reads.
    fn run(&self, flow: Flow, range: Range<usize>) -> Flow;

    /// What the groups above `boundary` (the number of groups below it) read.
    fn reads_after(&self, boundary: usize) -> Positions;

    /// Width of each position's vector at a group boundary.
    fn hidden_size(&self) -> usize;

    /// Width of what the head reads.
    fn feature_size(&self) -> usize;

    /// Dropout before a task's head.
    fn head_dropout(&self) -> f64;

    /// Forward FLOPs of each group on `batch` sequences of `seq` positions.
    fn group_flops(&self, batch: usize, seq: usize) -> Vec<f64>;

    /// The longest input the model takes (positions).
    fn max_positions(&self) -> usize;

    /// How a parameter is initialised when training from scratch (the
    /// family's published init), from its module path and its container.
    fn init(&self, path: &str, container: &str, field: &str) -> state::Init;

    /// Everything that defines the architecture, for cache keys.
    fn identity(&self) -> String;

    /// `config.json` as Hugging Face writes it, for export.
    fn hf_config(&self) -> serde_json::Value;

    /// The body for inputs of `side` x `side` pixels (image families; shapes
    /// of feature maps and FLOPs depend on it). Others ignore it.
    fn with_image_size(self, _side: usize) -> Self {
        self
    }

    /// The body whose top group hands on its last feature map averaged to
    /// a `grid` x `grid` map ([`pool_top`]) instead of one vector (0), for
    /// heads that read where things are (captioning's `--feature-grid`).
    /// Families without such a map ignore it.
    fn with_feature_grid(self, _grid: usize) -> Self {
        self
    }

    /// The body whose top group hands on every position's final state
    /// ([`Flow::Hidden`]) instead of a pooled vector, for a decoder that
    /// cross-attends to them (a ViT's tokens after its final LayerNorm, as
    /// transformers' `VisionEncoderDecoderModel` reads them). Families whose
    /// top is a feature map ignore it (`--feature-grid` sets its cells).
    fn with_all_tokens(self) -> Self {
        self
    }

    /// The grid [`Architecture::with_feature_grid`] set (0: pooled), or
    /// `None` for families whose top is not a feature map (transformers,
    /// VGG with its fully connected classifier).
    fn feature_grid(&self) -> Option<usize> {
        None
    }

    /// The checkpoint key (without [`Architecture::BASE_PREFIX`]) of a
    /// module path under the body, for families whose reference layout a
    /// struct cannot mirror field by field; [`Architecture::RENAMES`] apply
    /// to the result.
    fn key_path(&self, path: &str) -> String {
        path.to_string()
    }

    /// The preprocessing that the pretrained weights at `model` (a model
    /// directory or a bare weights file) expect, with the crop at `side`
    /// pixels when given: image families override it where the checkpoint
    /// says (HF `preprocessor_config.json`) or their published recipe is not
    /// torchvision's ImageNet one.
    fn recipe(
        model: &std::path::Path,
        side: Option<u32>,
    ) -> Result<crate::data::preprocess::Recipe> {
        crate::data::preprocess::Recipe::for_model(model, Self::MODEL_TYPE, side)
    }

    /// Other `--arch` names of this family's variants (`resnet18`,
    /// `resnet50`), beside its `model_type`.
    const ARCH_NAMES: &'static [&'static str] = &[];

    /// Whether a bare weights file holding `checkpoint` is unmistakably
    /// this family, from its tensor names and shapes (image families; used
    /// when no `--arch` and no `config.json` say).
    fn recognises(_checkpoint: &crate::hub::Checkpoint) -> bool {
        false
    }

    /// Values for the parameter at `path` (under the body) from a
    /// checkpoint tensor of another shape, where the family knows how to
    /// fit it (ViT's position embeddings at another image size); `None`
    /// makes the shape difference an error.
    fn resample(
        &self,
        _path: &str,
        _stored: &[usize],
        _values: &[f32],
        _wanted: &[usize],
    ) -> Option<Vec<f32>> {
        None
    }

    /// The checkpoint key of a head parameter (`classifier.weight` under
    /// the head), where the family's reference names it otherwise.
    fn head_key(&self, path: &str) -> String {
        path.to_string()
    }

    /// `checkpoint` under the family's reference names when it uses
    /// another naming the family knows (Keras names for VGG16); `None`
    /// when it needs no renaming.
    fn reference_checkpoint(
        &self,
        _checkpoint: &crate::hub::Checkpoint,
    ) -> Option<crate::hub::Checkpoint> {
        None
    }

    /// Other spellings of checkpoint key `key` (after the hooks above and
    /// the renames): the same tensor in another library's naming (timm's,
    /// transformers'), tried on load when `key` itself is absent; a key
    /// found this way is reported as renamed.
    fn key_aliases(&self, _key: &str) -> Vec<String> {
        Vec::new()
    }

    /// The name checkpoint key `key` gets in an exported directory, where
    /// the library that reads it back (transformers) names it otherwise.
    fn export_key(&self, key: &str) -> String {
        key.to_string()
    }

    /// The name checkpoint key `key` (after [`Architecture::export_key`])
    /// has in a PEFT adapter: PEFT matches `target_modules` and loads
    /// adapter tensors by the module paths of the model as the pinned
    /// transformers builds it, which may differ from the checkpoint's
    /// (transformers 5 renames ViT's modules on load).
    fn peft_key(&self, key: &str) -> String {
        key.to_string()
    }

    /// Checkpoint keys that hold a copy of another parameter's values,
    /// `(copy, original)`: an output projection tied to the input
    /// embeddings, which older files store anyway. A copy equal to its
    /// original loads (as used); one that differs is an error.
    fn tied_keys(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Names of the projections `--lora-targets` can adapt (none: the
    /// family takes no LoRA).
    const LORA_TARGETS: &'static [&'static str] = &[];
    /// The adapted projections when `--lora-targets` is not given.
    const LORA_DEFAULT_TARGETS: &'static [&'static str] = &[];

    /// Applies `op` to every projection of the body (adding adapters only
    /// to those named in `targets`); see [`lora::visit`].
    fn lora_walk(&mut self, _targets: &[String], _op: &mut lora::LoraOp) {}
}

/// What can sit on a body: any module (burn's derive also wants it displayable).
pub trait Head: Module + ModuleDisplay {}

impl<M: Module + ModuleDisplay> Head for M {}

/// A family's body with a task's head on top: the model a run trains.
#[derive(Module, Debug)]
pub struct TaskModel<A: Architecture, H: Head> {
    pub body: A,
    pub head: H,
}

impl<A: Architecture, H: Head> TaskModel<A, H> {
    /// Number of layer groups.
    pub fn num_groups(&self) -> usize {
        self.body.groups().len()
    }

    /// Freezes (no gradient, inference mode) or unfreezes each group.
    pub fn set_trainable(mut self, trainable: &[bool]) -> Self {
        let groups = self.body.groups();
        for (g, group) in groups.iter().enumerate() {
            let mut alternatives: Vec<String> = group
                .paths
                .iter()
                .map(|p| format!("body\\.{}", regex_escape(p)))
                .collect();
            if g + 1 == groups.len() {
                alternatives.push("head".to_string());
            }
            let pattern = format!("^({})(\\.|$)", alternatives.join("|"));
            let matcher = ParamGroup::from_regex(&pattern).expect("group paths form a valid regex");
            self = if trainable[g] {
                self.unfreeze_group(matcher)
            } else {
                self.freeze_group(matcher)
            };
        }
        self
    }

    /// Every BatchNorm layer in inference mode ([`BatchNormMode::Frozen`]):
    /// running statistics used and never updated; scale and shift keep
    /// their gradients. Apply after [`TaskModel::set_trainable`], which
    /// switches trainable groups' BatchNorm back to batch statistics.
    pub fn freeze_batch_norm(self) -> Self {
        struct Freeze {
            containers: Vec<String>,
        }
        impl burn::module::ModuleMapper for Freeze {
            fn enter_module(&mut self, _name: &str, container: &str) {
                self.containers.push(container.to_string());
            }
            fn exit_module(&mut self, _name: &str, _container: &str) {
                self.containers.pop();
            }
            fn map_flag(
                &mut self,
                flag: burn::module::Param<burn::module::Flag>,
            ) -> burn::module::Param<burn::module::Flag> {
                // entering a field passes the type that owns it: `Struct:BatchNorm`
                match self.containers.last().map(String::as_str) {
                    Some("Struct:BatchNorm") => flag.with_value(false),
                    _ => flag,
                }
            }
        }
        self.map(&mut Freeze {
            containers: Vec::new(),
        })
    }

    /// Gives the projections `config` names a fresh adapter (drawn from
    /// `seed`); returns the model and the targets used.
    pub fn add_lora(mut self, config: &lora::LoraConfig, seed: u64) -> Result<(Self, Vec<String>)> {
        let targets =
            config.resolve_targets(A::MODEL_TYPE, A::LORA_TARGETS, A::LORA_DEFAULT_TARGETS)?;
        let mut rng = params::SeededRng::new(seed ^ 0x4C6F_5241);
        self.body.lora_walk(
            &targets,
            &mut lora::LoraOp::Add {
                config,
                rng: &mut rng,
            },
        );
        Ok((self, targets))
    }

    /// Folds every adapter into its base weight: the plain model, which
    /// computes what the adapted one does (without adapter dropout).
    pub fn merge_lora(mut self) -> Self {
        self.body.lora_walk(&[], &mut lora::LoraOp::Merge);
        self
    }

    /// Only the adapters and the head train; every base weight is frozen.
    pub fn train_only_adapters(self) -> Self {
        lora::freeze_all_but_adapters(self, &|p| p.starts_with("head."))
    }

    /// The head's input after the body, with the bottom `frozen` groups run
    /// on the plain device outside autodiff: no graph is recorded for them
    /// and the backend's inference kernels are used. Equals running every
    /// group in order with those groups frozen.
    pub fn features(&self, input: Flow, frozen: usize) -> Flow {
        let n = self.num_groups();
        let frozen = frozen.min(n);
        if frozen == 0 || !input.device().is_autodiff() {
            return self.body.run(input, 0..n);
        }
        let below = self.body.valid().run(input.inner(), 0..frozen).from_inner();
        self.body.run(below, frozen..n)
    }

    /// The head's input from a boundary's output (a feature cache).
    pub fn features_from(&self, boundary_output: Flow, boundary: usize) -> Flow {
        let n = self.num_groups();
        self.body.run(boundary_output, boundary.min(n)..n)
    }
}

/// The group of a module path (`body.encoder.layer.3.output.dense.weight`):
/// the head's parameters are in the top group.
/// What an image family's top group hands on from its last feature map
/// `[batch, channels, h, w]`: the mean over positions (`grid` 0), or the
/// means over a `grid` x `grid` partition of it as PyTorch's
/// `AdaptiveAvgPool2d` computes them (a map).
pub fn pool_top(y: Tensor<4>, grid: usize) -> Flow {
    let [b, c, _, _] = y.dims();
    if grid == 0 {
        Flow::Pooled(y.mean_dim(3).mean_dim(2).reshape([b, c]))
    } else {
        Flow::Maps(burn::tensor::module::adaptive_avg_pool2d(y, [grid, grid]))
    }
}

/// What reads an image family's top after its pooling: one vector of
/// `channels`, or with a feature grid ([`Architecture::with_feature_grid`])
/// the `grid` x `grid` map [`pool_top`] hands on.
pub fn top_positions(channels: usize, grid: usize) -> Positions {
    if grid == 0 {
        Positions::Vector
    } else {
        Positions::Map {
            channels,
            height: grid,
            width: grid,
        }
    }
}

pub fn group_of(groups: &[Group], path: &str) -> usize {
    let top = groups.len() - 1;
    let Some(rest) = path.strip_prefix("body.") else {
        return top;
    };
    groups
        .iter()
        .position(|g| {
            g.paths.iter().any(|p| {
                rest.strip_prefix(p.as_str())
                    .is_some_and(|r| r.is_empty() || r.starts_with('.'))
            })
        })
        .unwrap_or(top)
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

/// The family of a model directory, from `config.json`'s `model_type`.
pub fn model_type(dir: &std::path::Path) -> Result<String> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {}: {e}; a model directory needs a config.json next to its weights",
            path.display()
        )
    })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", path.display()))?;
    let t = match v.get("model_type").and_then(|t| t.as_str()) {
        Some(t) => t.to_string(),
        // timm's config.json names the architecture (`resnet50`) instead
        None => match v.get("architecture").and_then(|a| a.as_str()) {
            Some(a) => timm_family(a).unwrap_or(a).to_string(),
            None => bert::Bert::MODEL_TYPE.to_string(),
        },
    };
    if !SUPPORTED.contains(&t.as_str()) {
        bail!(
            "model_type `{t}` in {} is not supported yet (supported: {})",
            path.display(),
            SUPPORTED.join(", ")
        );
    }
    Ok(t)
}

/// The config in model directory `model`'s `config.json`, or `C`'s
/// defaults when `model` is not a directory or has none; `what` names the
/// family in the error for a file that does not parse.
pub fn read_config_or_default<C: serde::de::DeserializeOwned + Default>(
    model: &std::path::Path,
    what: &str,
) -> Result<C> {
    let path = model.join("config.json");
    if !model.is_dir() || !path.exists() {
        return Ok(C::default());
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not {what} config.json", path.display()))
}

/// A family's serialisable config as `config.json`, with its `model_type`.
pub fn config_json(config: &impl serde::Serialize, model_type: &str) -> serde_json::Value {
    let mut v = serde_json::to_value(config).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("model_type".into(), serde_json::json!(model_type));
    }
    v
}

/// Families this build implements, by `model_type`.
pub const SUPPORTED: &[&str] = &[
    "bert",
    "mobilenet_v2",
    "vgg16",
    "resnet",
    "inception_v3",
    "efficientnet_lite0",
    "vit",
    "gpt2",
    "llama",
];

/// The family of an `--arch` name or a timm architecture that names a
/// variant (`resnet18`, `resnet50`): its sizes come from the weights.
pub fn timm_family(arch: &str) -> Option<&'static str> {
    matches!(
        arch,
        "resnet18" | "resnet34" | "resnet50" | "resnet101" | "resnet152"
    )
    .then_some(resnet::ResNet::MODEL_TYPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grid 0 is the mean over positions; a 2x2 grid of a 5x5 map averages
    /// the overlapping blocks AdaptiveAvgPool2d takes (rows and columns
    /// 0..3 and 2..5).
    #[test]
    fn the_top_is_pooled_or_kept_as_a_grid() {
        let device = Device::flex();
        let values: Vec<f32> = (0..2 * 25).map(|i| i as f32).collect();
        let y =
            Tensor::<4>::from_data(burn::tensor::TensorData::new(values, [1, 2, 5, 5]), &device);
        let Flow::Pooled(p) = pool_top(y.clone(), 0) else {
            panic!("grid 0 pools")
        };
        let p: Vec<f32> = p.into_data().try_into_vec().unwrap();
        assert_eq!(p, vec![12.0, 37.0]);
        let Flow::Maps(m) = pool_top(y, 2) else {
            panic!("a grid is a map")
        };
        assert_eq!(m.dims(), [1, 2, 2, 2]);
        let m: Vec<f32> = m.into_data().try_into_vec().unwrap();
        // channel 0, cell (0, 0): rows 0..3, columns 0..3 of 5 x 5
        let block = |r0: usize, c0: usize, ch: usize| {
            let mut sum = 0.0;
            for r in r0..r0 + 3 {
                for c in c0..c0 + 3 {
                    sum += (ch * 25 + r * 5 + c) as f32;
                }
            }
            sum / 9.0
        };
        let want = vec![
            block(0, 0, 0),
            block(0, 2, 0),
            block(2, 0, 0),
            block(2, 2, 0),
            block(0, 0, 1),
            block(0, 2, 1),
            block(2, 0, 1),
            block(2, 2, 1),
        ];
        for (a, b) in m.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{m:?} against {want:?}");
        }
    }

    /// The grid trains: under autodiff each input position gets the sum,
    /// over the cells whose block holds it, of the cell's gradient over the
    /// block's size (a 4x4 map into 2x2 cells: disjoint 2x2 blocks).
    #[test]
    fn the_grid_passes_gradients_back_to_the_map() {
        let device = Device::flex().autodiff();
        let y = Tensor::<4>::ones([1, 1, 4, 4], &device).require_grad();
        let Flow::Maps(m) = pool_top(y.clone(), 2) else {
            panic!("a grid is a map")
        };
        let weights = Tensor::<4>::from_data(
            burn::tensor::TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 2, 2]),
            &device,
        );
        let grads = (m * weights).sum().backward();
        let g: Vec<f32> = y.grad(&grads).unwrap().into_data().try_into_vec().unwrap();
        let want: Vec<f32> = (0..16)
            .map(|i| {
                let (r, c) = (i / 4, i % 4);
                [1.0, 2.0, 3.0, 4.0][(r / 2) * 2 + c / 2] / 4.0
            })
            .collect();
        assert_eq!(g, want);
    }

    fn groups() -> Vec<Group> {
        let mut g = vec![Group {
            name: "embeddings".into(),
            paths: vec!["embeddings".into()],
        }];
        for i in 0..2 {
            g.push(Group {
                name: format!("encoder.layer.{i}"),
                paths: vec![format!("encoder.layer.{i}")],
            });
        }
        g.push(Group {
            name: "head".into(),
            paths: vec!["pooler".into()],
        });
        g
    }

    #[test]
    fn module_paths_fall_in_their_groups() {
        let g = groups();
        assert_eq!(group_of(&g, "body.embeddings.word_embeddings.weight"), 0);
        assert_eq!(group_of(&g, "body.encoder.layer.1.output.dense.bias"), 2);
        assert_eq!(group_of(&g, "body.pooler.dense.weight"), 3);
        assert_eq!(group_of(&g, "head.classifier.weight"), 3);
        // a prefix must end at a path segment: layer.1 is not layer.10
        let mut many = g.clone();
        many.insert(
            2,
            Group {
                name: "encoder.layer.10".into(),
                paths: vec!["encoder.layer.10".into()],
            },
        );
        assert_eq!(
            group_of(&many, "body.encoder.layer.10.output.dense.bias"),
            2
        );
        assert_eq!(group_of(&many, "body.encoder.layer.1.output.dense.bias"), 3);
    }

    #[test]
    fn escaped_paths_match_literally() {
        assert_eq!(regex_escape("encoder.layer.3"), "encoder\\.layer\\.3");
    }
}
