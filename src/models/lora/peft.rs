//! Reading a PEFT LoRA adapter directory (`adapter_config.json` +
//! `adapter_model.safetensors`, as `PeftModel.save_pretrained` writes it)
//! and attaching it to its base model.
//!
//! PEFT names each tensor `base_model.model.<module>.lora_A.weight`
//! (`[r, in]`) or `.lora_B.weight` (`[out, r]`), `<module>` being the
//! module path in the model PEFT wrapped (the task model for `CAUSAL_LM`
//! and `SEQ_CLS`, the bare base model otherwise), and a module of
//! `modules_to_save` (a classifier's new head) as its plain weights under
//! the same prefix. The tensors, not `target_modules`, say which
//! projections carry an adapter (PEFT matches names by suffix or regex and
//! may leave out layers): every projection of the family gets one, those
//! the file has no tensors for are dropped, and the rest are filled from
//! the file.
//!
//! Settings that change the computation beyond plain LoRA (DoRA,
//! rsLoRA, per-module ranks or alphas, trained biases, LoRA on embeddings,
//! ...) are errors naming `adapter_config.json` and the key. There is no
//! Rust crate for PEFT's format, and what is read here is a JSON file and a
//! safetensors file that the project already reads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

use super::LoraConfig;
use crate::hub::{Checkpoint, HostTensor};
use crate::models::state::{self, Source, key_of};
use crate::models::{Architecture, Head, TaskModel};

/// The adapter's settings file.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// The adapter's tensors.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The prefix of every tensor name PEFT saves.
const PREFIX: &str = "base_model.model.";

/// Whether `path` is a PEFT adapter directory (it has `adapter_config.json`).
pub fn is_adapter_dir(path: &Path) -> bool {
    path.join(CONFIG_FILE).is_file()
}

/// A PEFT LoRA adapter read from disk.
#[derive(Clone, Debug)]
pub struct PeftAdapter {
    pub dir: PathBuf,
    /// `r`, `lora_alpha`, `lora_dropout`; `targets` are `target_modules`
    /// when it is a list (empty when it is a regular expression).
    pub lora: LoraConfig,
    /// `target_modules` when it is one string (a regular expression PEFT
    /// matches against whole module names).
    pub target_regex: Option<String>,
    /// `base_model_name_or_path`.
    pub base_model: Option<String>,
    /// `task_type` (`CAUSAL_LM`, `SEQ_CLS`, ...).
    pub task_type: Option<String>,
    pub fan_in_fan_out: bool,
    pub modules_to_save: Vec<String>,
    /// The tensors, named without PEFT's `base_model.model.` prefix.
    pub tensors: BTreeMap<String, HostTensor>,
}

impl PeftAdapter {
    /// Reads `dir`; see the module doc for what is refused.
    pub fn read(dir: &Path) -> Result<Self> {
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path).with_context(|| {
            format!(
                "cannot read {}: a PEFT adapter directory holds {CONFIG_FILE} and {WEIGHTS_FILE}",
                config_path.display()
            )
        })?;
        let raw: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", config_path.display()))?;
        let file = config_path.display().to_string();
        let config = parse_config(&raw, &file)?;
        let weights = dir.join(WEIGHTS_FILE);
        if !weights.is_file() {
            bail!(
                "{} has no {WEIGHTS_FILE}: save the adapter with PEFT's `save_pretrained` \
                 (safetensors, the default)",
                dir.display()
            );
        }
        let stored = crate::hub::read_safetensors(&weights)?;
        let mut tensors = BTreeMap::new();
        for (k, t) in stored {
            let Some(name) = k.strip_prefix(PREFIX) else {
                bail!(
                    "{}: tensor `{k}` does not start with `{PREFIX}`: not an adapter as PEFT \
                     saves it",
                    weights.display()
                );
            };
            tensors.insert(name.to_string(), t);
        }
        if !tensors.keys().any(|k| k.ends_with(".lora_A.weight")) {
            bail!(
                "{} holds no LoRA weights (`...lora_A.weight`)",
                weights.display()
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            tensors,
            ..config
        })
    }

    /// The base model's directory: `base` when given (`--base`), else
    /// `base_model_name_or_path` as a path (from the working directory,
    /// then from the adapter's directory), packaged name or hub id
    /// ([`crate::train::resolve_model`]); a run directory's `model/`.
    pub fn resolve_base(&self, base: Option<&str>) -> Result<PathBuf> {
        let path = match base {
            Some(b) => crate::train::resolve_model(b)?,
            None => {
                let Some(b) = self.base_model.as_deref().filter(|b| !b.is_empty()) else {
                    bail!(
                        "{} has no base_model_name_or_path: give the base model with --base",
                        self.dir.join(CONFIG_FILE).display()
                    );
                };
                let beside = self.dir.join(b);
                if !Path::new(b).exists() && Path::new(b).is_relative() && beside.exists() {
                    beside
                } else {
                    crate::train::resolve_model(b).with_context(|| {
                        format!(
                            "cannot find the adapter's base model `{b}` ({} \
                             base_model_name_or_path): give it with --base",
                            self.dir.join(CONFIG_FILE).display()
                        )
                    })?
                }
            }
        };
        Ok(crate::train::eval::exported_model(&path))
    }

    /// `model` (the base, loaded) with this adapter's projections adapted
    /// and, for `modules_to_save`, its head from the adapter: it computes
    /// what PEFT's model does. Merge it ([`TaskModel::merge_lora`]) for
    /// the plain model.
    pub fn attach<A: Architecture, H: Head>(
        &self,
        model: TaskModel<A, H>,
    ) -> Result<TaskModel<A, H>> {
        let config_file = self.dir.join(CONFIG_FILE).display().to_string();
        let weights_file = self.dir.join(WEIGHTS_FILE).display().to_string();
        let family = A::MODEL_TYPE;
        if A::LORA_TARGETS.is_empty() {
            bail!(
                "{config_file}: the base is a `{family}` model, a family headstart has no LoRA \
                 for (it has for bert, vit, gpt2 and llama)"
            );
        }
        let every = LoraConfig {
            targets: A::LORA_TARGETS.iter().map(|s| s.to_string()).collect(),
            ..self.lora.clone()
        };
        let (model, _) = model.add_lora(&every, 0)?;
        let params = parameters(&model);
        // every name a parameter may have in the file -> its index
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        for (i, p) in params.iter().enumerate() {
            for n in &p.names {
                by_name.entry(n.as_str()).or_insert(i);
            }
        }
        let adaptable: Vec<&str> = params
            .iter()
            .filter(|p| p.field == "lora_A")
            .flat_map(|p| p.names.iter())
            .filter_map(|n| n.strip_suffix(".lora_A.weight"))
            .collect();
        let embeddings: Vec<&str> = params
            .iter()
            .filter(|p| p.container == "Embedding")
            .flat_map(|p| p.names.iter())
            .filter_map(|n| n.strip_suffix(".weight"))
            .collect();
        let head_modules: HashSet<&str> = params
            .iter()
            .filter(|p| p.path.starts_with("head."))
            .filter_map(|p| p.names[0].split('.').next())
            .collect();
        let valid = A::LORA_TARGETS.join(", ");
        for t in &self.lora.targets {
            if embeddings.iter().any(|m| suffix_match(m, t)) {
                bail!(
                    "{config_file}: target_modules names `{t}`, an embedding: LoRA on \
                     embeddings is not supported (projections of {family}: {valid})"
                );
            }
            if !adaptable.iter().any(|m| suffix_match(m, t)) {
                bail!(
                    "{config_file}: target_modules names `{t}`, which is not a projection of the \
                     `{family}` family that takes LoRA (valid names: {valid})"
                );
            }
        }
        for m in &self.modules_to_save {
            // PEFT adds `classifier` and `score` to every SEQ_CLS adapter,
            // whichever of the two the model has
            let seq_cls_default = matches!(m.as_str(), "classifier" | "score");
            if !head_modules.contains(m.as_str()) && !seq_cls_default {
                bail!(
                    "{config_file}: modules_to_save names `{m}`, a part of the base model: \
                     only the task's head ({}) can be saved with the adapter",
                    if head_modules.is_empty() {
                        "this task has none".to_string()
                    } else {
                        head_modules.iter().copied().collect::<Vec<_>>().join(", ")
                    }
                );
            }
        }
        let mut checkpoint = BTreeMap::new();
        let mut touch: HashSet<String> = HashSet::new();
        let mut kept: HashSet<&str> = HashSet::new();
        for (k, t) in &self.tensors {
            if k.contains(".lora_embedding_") {
                bail!(
                    "{weights_file} holds `{PREFIX}{k}`: LoRA on embeddings is not supported \
                     ({config_file} target_modules)"
                );
            }
            if k.contains(".lora_") && k.ends_with(".bias") {
                bail!(
                    "{weights_file} holds `{PREFIX}{k}`: trained LoRA biases are not supported \
                     ({config_file} lora_bias)"
                );
            }
            let Some(&i) = by_name.get(k.as_str()) else {
                if let Some(module) = k
                    .strip_suffix(".lora_A.weight")
                    .or_else(|| k.strip_suffix(".lora_B.weight"))
                {
                    bail!(
                        "{weights_file} adapts `{module}`, which is not a projection of the \
                         `{family}` family that takes LoRA (valid target_modules: {valid})"
                    );
                }
                bail!(
                    "{weights_file} holds `{PREFIX}{k}`, which is neither a LoRA weight nor a \
                     parameter of the task's head: {config_file} modules_to_save may name only \
                     the head"
                );
            };
            let p = &params[i];
            if p.path.starts_with("body.") && !is_lora(&p.field) {
                bail!(
                    "{weights_file} holds `{PREFIX}{k}`, a weight of the base model: \
                     {config_file} modules_to_save may name only the task's head"
                );
            }
            let r = self.lora.r;
            let rank = match p.field.as_str() {
                "lora_A" => t.shape.first(),
                _ => t.shape.get(1),
            };
            if is_lora(&p.field) && rank != Some(&r) {
                bail!(
                    "{weights_file}: `{PREFIX}{k}` has shape {:?}, not rank r = {r} as \
                     {config_file} says (per-module ranks, rank_pattern, are not supported)",
                    t.shape
                );
            }
            if p.field == "lora_A" {
                kept.insert(p.path.as_str());
            }
            touch.insert(p.path.clone());
            checkpoint.insert(p.names[0].clone(), t.clone());
        }
        let dropped: HashSet<ParamId> = params
            .iter()
            .filter(|p| p.field == "lora_A" && !kept.contains(p.path.as_str()))
            .map(|p| p.id)
            .collect();
        let mut model = model;
        model
            .body
            .lora_walk(&[], &mut super::LoraOp::Drop(&dropped));
        let checkpoint = Checkpoint {
            tensors: checkpoint,
            files: vec![self.dir.join(WEIGHTS_FILE)],
            notes: Vec::new(),
            graph: None,
        };
        let (model, _) = state::load(
            model,
            Source::Overlay(&checkpoint, &|p: &str| touch.contains(p)),
            0,
        )?;
        Ok(model)
    }
}

fn is_lora(field: &str) -> bool {
    matches!(field, "lora_A" | "lora_B")
}

/// PEFT's match of a target name: the module itself or a suffix after a dot.
fn suffix_match(module: &str, target: &str) -> bool {
    module == target
        || module
            .strip_suffix(target)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// A parameter of the model: its module path, holder, field, the names it
/// may have in an adapter file (the first is the one the loader looks up
/// first) and its id.
struct ParamInfo {
    path: String,
    container: String,
    field: String,
    names: Vec<String>,
    id: ParamId,
}

fn parameters<A: Architecture, H: Head>(model: &TaskModel<A, H>) -> Vec<ParamInfo> {
    struct Collect<'a, A: Architecture> {
        body: &'a A,
        walk: Vec<(String, String)>,
        out: Vec<ParamInfo>,
    }
    impl<A: Architecture> ModuleVisitor for Collect<'_, A> {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.walk.push((name.to_string(), container.to_string()));
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.walk.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let path: Vec<&str> = self.walk.iter().map(|(n, _)| n.as_str()).collect();
            let path = path.join(".");
            let (field, container) = self
                .walk
                .last()
                .map(|(n, c)| {
                    (
                        n.clone(),
                        c.strip_prefix("Struct:").unwrap_or(c).to_string(),
                    )
                })
                .unwrap_or_default();
            let k = key_of(self.body, &path, &container, &field);
            let mut names = vec![k.key.clone()];
            names.extend(k.aliases);
            names.extend(k.renamings);
            names.push(self.body.export_key(&k.key));
            let peft = self.body.peft_key(&self.body.export_key(&k.key));
            if let Some(bare) = peft
                .strip_prefix(A::BASE_PREFIX)
                .filter(|_| !A::BASE_PREFIX.is_empty())
            {
                names.push(bare.to_string());
            }
            names.push(peft);
            // an adapter made on a bare `LlamaModel` (no `model.` in front)
            if let Some(bare) = k.key.strip_prefix("model.") {
                names.push(bare.to_string());
            }
            names.dedup();
            self.out.push(ParamInfo {
                path,
                container,
                field,
                names,
                id: param.id,
            });
        }
    }
    let mut c = Collect {
        body: &model.body,
        walk: Vec::new(),
        out: Vec::new(),
    };
    model.visit(&mut c);
    c.out
}

/// The adapter settings of `adapter_config.json` (`file`, for messages).
fn parse_config(raw: &serde_json::Value, file: &str) -> Result<PeftAdapter> {
    use serde_json::Value;
    let get = |k: &str| raw.get(k).filter(|v| !v.is_null());
    if let Some(t) = get("peft_type")
        && t != "LORA"
    {
        bail!("{file}: peft_type is {t}: headstart reads LoRA adapters only (peft_type \"LORA\")");
    }
    let truthy = |k: &str| get(k).is_some_and(|v| v != &Value::Bool(false));
    let refuse = [
        ("use_dora", "DoRA adapters"),
        ("use_rslora", "rank-stabilised scaling (rsLoRA)"),
        ("use_qalora", "QALoRA adapters"),
        ("lora_bias", "trained LoRA biases"),
    ];
    for (key, what) in refuse {
        if truthy(key) {
            bail!("{file}: {key} is set: {what} are not supported; export a plain LoRA adapter");
        }
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        if get(key).is_some_and(|v| v.as_object().is_none_or(|o| !o.is_empty())) {
            bail!(
                "{file}: {key} is not empty: per-module ranks and alphas are not supported; \
                 use one r and lora_alpha for every module"
            );
        }
    }
    for key in [
        "target_parameters",
        "trainable_token_indices",
        "layer_replication",
        "alora_invocation_tokens",
    ] {
        let set = get(key).is_some_and(|v| match v {
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            _ => true,
        });
        if set {
            bail!("{file}: {key} is set, which headstart does not support; remove it");
        }
    }
    if let Some(b) = get("bias")
        && b != "none"
    {
        bail!("{file}: bias is {b}: trained biases are not supported (bias \"none\")");
    }
    let number = |k: &str, default: f64| -> Result<f64> {
        match get(k) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .with_context(|| format!("{file}: {k} is {v}, not a number")),
        }
    };
    let r = number("r", 8.0)?;
    if r < 1.0 || r.fract() != 0.0 {
        bail!("{file}: r is {r}: the rank must be a whole number of at least 1");
    }
    let strings = |k: &str| -> Result<Vec<String>> {
        match get(k) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .with_context(|| format!("{file}: {k} holds {v}, not a name"))
                })
                .collect(),
            Some(v) => bail!("{file}: {k} is {v}, not a list of names"),
        }
    };
    let (targets, target_regex) = match get("target_modules") {
        Some(Value::String(s)) => (Vec::new(), Some(s.clone())),
        _ => (strings("target_modules")?, None),
    };
    let mut modules_to_save = strings("modules_to_save")?;
    modules_to_save.sort();
    modules_to_save.dedup();
    let text = |k: &str| -> Result<Option<String>> {
        match get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => bail!("{file}: {k} is {v}, not a string"),
        }
    };
    Ok(PeftAdapter {
        dir: PathBuf::new(),
        lora: LoraConfig {
            r: r as usize,
            alpha: number("lora_alpha", 8.0)?,
            dropout: number("lora_dropout", 0.0)?,
            targets,
        },
        target_regex,
        base_model: text("base_model_name_or_path")?,
        task_type: text("task_type")?,
        fan_in_fan_out: get("fan_in_fan_out")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        modules_to_save,
        tensors: BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests;
