//! One walk over a model's parameters by module path: initialise (the
//! family's published init), load from a checkpoint, overlay a run's own
//! checkpoint, export in PyTorch layout, count and hash per group.
//!
//! A parameter's checkpoint key is its module path with `body.` replaced by
//! the family's base prefix (none for the family's
//! [`Architecture::UNPREFIXED`] paths), `head.` dropped and the family's
//! renames applied; a Linear weight is stored `[out, in]` in checkpoints
//! and `[in, out]` in burn (any other container's weight, GPT-2's `Conv1D`
//! say, is stored as burn holds it), and a LayerNorm's `gamma`/`beta` are
//! `weight`/`bias` (older BERT checkpoints say `gamma`/`beta`, which load
//! too).

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};
use sha2::{Digest, Sha256};

use super::params::{LoadReport, NamedTensors, SeededRng, host, transpose};
use super::{Architecture, Group, Head, TaskModel, group_of};
use crate::hub::Checkpoint;

/// How a parameter is initialised when it does not come from a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Normal(0, std), as transformers does for Linear and Embedding weights.
    Normal(f64),
    /// Normal(0, std) with one row zero (an embedding's padding index).
    NormalZeroRow(f64, usize),
    Zeros,
    Ones,
    /// Normal(0, sqrt(2 / fan_out)), fan_out = output channels x kernel
    /// area: torchvision's `kaiming_normal_(mode="fan_out")` for convolutions.
    KaimingNormalFanOut,
    /// Uniform in [-bound, bound): PyTorch's default for a Linear layer's
    /// weight and bias is bound 1/sqrt(fan_in).
    Uniform(f64),
    /// Normal(0, std) redrawn until within ±bound: PyTorch's
    /// `trunc_normal_(std=std, a=-bound, b=bound)` (transformers' ViT init).
    TruncatedNormal(f64, f64),
}

/// Module path and container of the parameter being visited.
#[derive(Default)]
struct Walk(Vec<(String, String)>);

impl Walk {
    fn enter(&mut self, name: &str, container: &str) {
        self.0.push((name.to_string(), container.to_string()));
    }
    fn exit(&mut self) {
        self.0.pop();
    }
    fn path(&self) -> String {
        let names: Vec<&str> = self.0.iter().map(|(n, _)| n.as_str()).collect();
        names.join(".")
    }
    /// The struct holding the parameter (`Linear`, `LayerNorm`, ...) and its field name.
    fn leaf(&self) -> (&str, &str) {
        self.0
            .last()
            .map(|(n, c)| (c.strip_prefix("Struct:").unwrap_or(c), n.as_str()))
            .unwrap_or(("", ""))
    }
}

/// Where a parameter is stored in a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyOf {
    pub key: String,
    /// Older spellings that load too.
    pub aliases: Vec<String>,
    /// The same tensor in other libraries' namings ([`Architecture::key_aliases`]).
    pub renamings: Vec<String>,
    /// Stored `[out, in]`, held `[in, out]`.
    pub transposed: bool,
}

/// The checkpoint key of the parameter at `path` whose holder is `container`.
pub fn key_of<A: Architecture>(body: &A, path: &str, container: &str, field: &str) -> KeyOf {
    let renamed;
    let (prefix, rest) = match path.strip_prefix("body.") {
        Some(r) => {
            renamed = body.key_path(r);
            let first = renamed.split('.').next().unwrap_or_default();
            let prefix = if A::UNPREFIXED.contains(&first) {
                ""
            } else {
                A::BASE_PREFIX
            };
            (prefix, renamed.as_str())
        }
        None => {
            renamed = body.head_key(path.strip_prefix("head.").unwrap_or(path));
            ("", renamed.as_str())
        }
    };
    let mut segments: Vec<&str> = rest
        .split('.')
        .map(|s| {
            A::RENAMES
                .iter()
                .find(|(from, _)| *from == s)
                .map_or(s, |(_, to)| *to)
        })
        .collect();
    let mut aliases = Vec::new();
    if matches!(container, "LayerNorm" | "BatchNorm") && matches!(field, "gamma" | "beta") {
        let (new, old) = match field {
            "gamma" => ("weight", "gamma"),
            _ => ("bias", "beta"),
        };
        segments.pop();
        let stem = segments.join(".");
        aliases.push(format!("{prefix}{stem}.{old}"));
        segments.push(new);
    }
    // an adapter is stored as PEFT stores it: `...q_proj.lora_A.weight`, `[r, in]`
    let adapter = matches!(field, "lora_A" | "lora_B");
    if adapter {
        segments.push("weight");
    }
    let key = format!("{prefix}{}", segments.join("."));
    if !prefix.is_empty() {
        // the bare base model's checkpoint has no prefix
        let bare: Vec<String> = std::iter::once(key.clone())
            .chain(aliases.iter().cloned())
            .map(|k| k[prefix.len()..].to_string())
            .collect();
        aliases.extend(bare);
    }
    let renamings = body.key_aliases(&key);
    KeyOf {
        key,
        aliases,
        renamings,
        transposed: (container == "Linear" && field == "weight") || adapter,
    }
}

/// Loads (or initialises) parameters; see [`load`].
struct Loader<'a, A: Architecture> {
    walk: Walk,
    body: &'a A,
    source: Option<&'a Checkpoint>,
    touch: &'a dyn Fn(&str) -> bool,
    rng: SeededRng,
    used: BTreeSet<String>,
    report: LoadReport,
    error: Option<String>,
    /// A run's own checkpoint: a head of another shape is an error too.
    exact: bool,
}

impl<A: Architecture> Loader<'_, A> {
    /// Initial values of a parameter not taken from a checkpoint (the
    /// family's init), in the layout burn holds.
    fn init_values(
        &mut self,
        path: &str,
        container: &str,
        field: &str,
        dims: &[usize],
        stored: &[usize],
        transposed: bool,
    ) -> Vec<f32> {
        let n: usize = dims.iter().product();
        let init = match field {
            // PEFT's: A Kaiming-uniform with a = sqrt(5), B zero
            "lora_A" => Init::Uniform(1.0 / (dims[0].max(1) as f64).sqrt()),
            "lora_B" => Init::Zeros,
            _ => self.body.init(path, container, field),
        };
        let mut v: Vec<f32> = match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal(std) | Init::NormalZeroRow(std, _) => {
                (0..n).map(|_| (self.rng.normal() * std) as f32).collect()
            }
            Init::TruncatedNormal(std, bound) => (0..n)
                .map(|_| {
                    loop {
                        let v = self.rng.normal() * std;
                        if v.abs() <= bound {
                            break v as f32;
                        }
                    }
                })
                .collect(),
            Init::KaimingNormalFanOut => {
                let fan_out = dims[0] * dims[2..].iter().product::<usize>();
                let std = (2.0 / fan_out.max(1) as f64).sqrt();
                (0..n).map(|_| (self.rng.normal() * std) as f32).collect()
            }
            Init::Uniform(bound) => (0..n)
                .map(|_| ((self.rng.uniform() * 2.0 - 1.0) * bound) as f32)
                .collect(),
        };
        if let Init::NormalZeroRow(_, row) = init {
            let width = n / dims[0].max(1);
            if row < dims[0] {
                v[row * width..(row + 1) * width].fill(0.0);
            }
        }
        // Values are held [in, out]; the generator fills them in stored order.
        if transposed {
            transpose(&v, stored[0], stored[1])
        } else {
            v
        }
    }
}

impl<A: Architecture> ModuleMapper for Loader<'_, A> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.walk.enter(name, container);
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.walk.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.walk.path();
        if !(self.touch)(&path) {
            return param;
        }
        let (container, field) = self.walk.leaf();
        let (container, field) = (container.to_string(), field.to_string());
        let k = key_of(self.body, &path, &container, &field);
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        let stored: Vec<usize> = if k.transposed {
            vec![dims[1], dims[0]]
        } else {
            dims.to_vec()
        };
        let found = self.source.and_then(|c| {
            std::iter::once(&k.key)
                .chain(&k.aliases)
                .chain(&k.renamings)
                .find_map(|name| c.tensors.get(name).map(|t| (name.clone(), t)))
        });
        if let Some((name, _)) = &found
            && k.renamings.contains(name)
        {
            self.report.renamed.push(format!("{name} -> {}", k.key));
        }
        let values = match found {
            Some((name, t)) if t.shape != stored && path.starts_with("head.") && !self.exact => {
                // a pretrained classifier for other labels (ImageNet's 1000):
                // the task's new head replaces it
                self.used.insert(name);
                self.report.new_head.push(format!(
                    "{} (the checkpoint's {:?} is for other labels)",
                    k.key, t.shape
                ));
                self.init_values(&path, &container, &field, &dims, &stored, k.transposed)
            }
            Some((name, t)) if t.shape != stored && !self.exact && path.starts_with("body.") => {
                // a tensor the family can fit to its shape (ViT's position
                // grid at another image size), else the shape error below
                match self
                    .body
                    .resample(&path["body.".len()..], &t.shape, &t.data, &stored)
                {
                    Some(v) => {
                        self.used.insert(name.clone());
                        self.report.loaded += 1;
                        self.report
                            .resampled
                            .push(format!("{name} {:?} -> {stored:?}", t.shape));
                        v
                    }
                    None => {
                        self.error
                            .get_or_insert(shape_error::<A>(&name, &t.shape, &stored));
                        return Param::from_mapped_value(id, tensor, mapper);
                    }
                }
            }
            Some((name, t)) => {
                if t.shape != stored {
                    self.error
                        .get_or_insert(shape_error::<A>(&name, &t.shape, &stored));
                    return Param::from_mapped_value(id, tensor, mapper);
                }
                self.used.insert(name);
                self.report.loaded += 1;
                if k.transposed {
                    transpose(&t.data, stored[0], stored[1])
                } else {
                    t.data.clone()
                }
            }
            None => {
                if self.source.is_some() {
                    if path.starts_with("head.") {
                        self.report.new_head.push(k.key.clone());
                    } else {
                        self.report.missing.push(k.key.clone());
                    }
                }
                self.init_values(&path, &container, &field, &dims, &stored, k.transposed)
            }
        };
        let device = tensor.device();
        let mut t = Tensor::from_data(TensorData::new(values, dims), &device);
        if tensor.is_require_grad() {
            t = t.require_grad();
        }
        Param::from_mapped_value(id, t, mapper)
    }
}

fn shape_error<A: Architecture>(name: &str, shape: &[usize], stored: &[usize]) -> String {
    format!(
        "checkpoint tensor `{name}` has shape {shape:?}, but the architecture built from \
         config.json expects {stored:?}: the config does not describe these weights (check {} \
         in config.json)",
        A::SIZE_FIELDS
    )
}

/// What to load.
pub enum Source<'a> {
    /// Every parameter from the family's published init (training from scratch).
    Scratch,
    /// A pretrained checkpoint: absent keys are reported (a new head is
    /// expected to be absent) and initialised.
    Pretrained(&'a Checkpoint),
    /// A run's own checkpoint: every parameter must be there and every key
    /// used, or it is an error naming the key.
    Exact(&'a Checkpoint),
    /// A run's partial checkpoint: exactly the parameters `touch` selects.
    Overlay(&'a Checkpoint, &'a dyn Fn(&str) -> bool),
}

/// Fills `model`'s parameters from `source`; `seed` drives the init of
/// parameters that are not loaded.
pub fn load<A: Architecture, H: Head>(
    model: TaskModel<A, H>,
    source: Source<'_>,
    seed: u64,
) -> Result<(TaskModel<A, H>, LoadReport)> {
    let all = |_: &str| true;
    type Plan<'a> = (Option<&'a Checkpoint>, &'a dyn Fn(&str) -> bool, bool);
    let (checkpoint, touch, exact): Plan<'_> = match source {
        Source::Scratch => (None, &all, false),
        Source::Pretrained(c) => (Some(c), &all, false),
        Source::Exact(c) => (Some(c), &all, true),
        Source::Overlay(c, t) => (Some(c), t, true),
    };
    let body = model.body.clone();
    let renamed = checkpoint.and_then(|c| body.reference_checkpoint(c));
    let checkpoint = renamed.as_ref().or(checkpoint);
    let mut loader = Loader {
        walk: Walk::default(),
        body: &body,
        source: checkpoint,
        touch,
        rng: SeededRng::new(seed),
        used: BTreeSet::new(),
        report: LoadReport {
            from_scratch: checkpoint.is_none(),
            ..LoadReport::default()
        },
        error: None,
        exact,
    };
    let model = model.map(&mut loader);
    let mut report = loader.report;
    let mut used = loader.used;
    let file = checkpoint
        .and_then(|c| c.files.first())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the checkpoint".into());
    if let Some(e) = loader.error {
        bail!("{file}: {e}");
    }
    if let Some(c) = checkpoint {
        for (copy, original) in body.tied_keys() {
            let Some(t) = c.tensors.get(&copy) else {
                continue;
            };
            // the bare base model's checkpoint has no prefix
            let bare = original.strip_prefix(A::BASE_PREFIX);
            let Some(o) = c
                .tensors
                .get(&original)
                .or_else(|| bare.and_then(|b| c.tensors.get(b)))
            else {
                continue;
            };
            if o.shape != t.shape || o.data != t.data {
                bail!(
                    "{file} stores `{copy}` with other values than `{original}`, but config.json \
                     ties them (tie_word_embeddings): set tie_word_embeddings to false to load \
                     `{copy}` as an output projection of its own"
                );
            }
            used.insert(copy);
        }
    }
    if let Some(c) = checkpoint {
        report.unexpected = c
            .tensors
            .keys()
            .filter(|k| {
                !used.contains(*k) && !A::IGNORED_KEY_SUFFIXES.iter().any(|s| k.ends_with(s))
            })
            .cloned()
            .collect();
        if !exact && report.loaded == 0 {
            bail!(
                "{file} holds no {} weights this architecture uses; its first keys are {:?}",
                A::MODEL_TYPE,
                c.tensors.keys().take(5).collect::<Vec<_>>()
            );
        }
    }
    if exact {
        let mut missing = report.missing.clone();
        missing.extend(report.new_head.iter().cloned());
        if let Some(k) = missing.first() {
            bail!(
                "{file} lacks `{k}`{}: the checkpoint is damaged or from another model; \
                 restore it or start the run again",
                if missing.len() > 1 {
                    format!(" (and {} more)", missing.len() - 1)
                } else {
                    String::new()
                }
            );
        }
        if let Some(k) = report.unexpected.first() {
            bail!(
                "{file} holds `{k}`, which this model has no parameter for: the checkpoint \
                 is from another model or configuration"
            );
        }
    }
    Ok((model, report))
}

/// Collects parameters in checkpoint layout.
struct Exporter<'a, A: Architecture> {
    walk: Walk,
    body: &'a A,
    keep: &'a dyn Fn(&str) -> bool,
    out: NamedTensors,
}

impl<A: Architecture> ModuleVisitor for Exporter<'_, A> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.walk.enter(name, container);
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.walk.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.walk.path();
        if !(self.keep)(&path) {
            return;
        }
        let (container, field) = self.walk.leaf();
        let k = key_of(self.body, &path, container, field);
        let (shape, values) = host(&param.val());
        if k.transposed {
            self.out.push((
                k.key,
                vec![shape[1], shape[0]],
                transpose(&values, shape[0], shape[1]),
            ));
        } else {
            self.out.push((k.key, shape, values));
        }
    }
}

/// The parameters whose module path `keep` accepts, under their checkpoint
/// keys, in PyTorch's layout: the inverse of [`load`].
pub fn export<A: Architecture, H: Head>(
    model: &TaskModel<A, H>,
    keep: &dyn Fn(&str) -> bool,
) -> NamedTensors {
    // burn holds a BatchNorm's latest running-statistics update per thread
    // until the next update or a sync, and a visit reads the synced value:
    // without this, checkpoints and exports would miss the last step's update.
    // `valid` syncs the shared state (the copy it returns is dropped).
    drop(model.valid());
    let mut v = Exporter::<A> {
        walk: Walk::default(),
        body: &model.body,
        keep,
        out: Vec::new(),
    };
    model.visit(&mut v);
    v.out
}

/// [`export`] of the groups `keep_group` accepts.
pub fn export_groups<A: Architecture, H: Head>(
    model: &TaskModel<A, H>,
    keep_group: &dyn Fn(usize) -> bool,
) -> NamedTensors {
    let groups = model.body.groups();
    export(model, &|path| keep_group(group_of(&groups, path)))
}

/// SHA-256 of tensors (names, shapes and values), in the order given.
pub fn hash_tensors(tensors: &NamedTensors) -> String {
    let mut h = Sha256::new();
    for (name, shape, values) in tensors {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        for d in shape {
            h.update((*d as u64).to_le_bytes());
        }
        for v in values {
            h.update(v.to_le_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a field holds a buffer (BatchNorm's running statistics), not a
/// parameter: loaded, saved and exported, never counted as a parameter.
pub fn is_buffer(field: &str) -> bool {
    matches!(field, "running_mean" | "running_var")
}

/// Parameters per group (buffers excluded), with the groups' names, bottom to top.
pub fn group_counts<A: Architecture, H: Head>(model: &TaskModel<A, H>) -> Vec<(String, usize)> {
    struct Count<'a> {
        walk: Walk,
        groups: &'a [Group],
        counts: Vec<usize>,
    }
    impl ModuleVisitor for Count<'_> {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.walk.enter(name, container);
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.walk.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if is_buffer(self.walk.leaf().1) {
                return;
            }
            let g = group_of(self.groups, &self.walk.path());
            self.counts[g] += param.val().shape().num_elements();
        }
    }
    let groups = model.body.groups();
    let mut c = Count {
        walk: Walk::default(),
        groups: &groups,
        counts: vec![0; groups.len()],
    };
    model.visit(&mut c);
    let counts = c.counts;
    groups.into_iter().map(|g| g.name).zip(counts).collect()
}
