//! Checkpoints, `best/` and the metrics log, written so that a kill at any
//! moment loses at most the step in progress.
//!
//! A checkpoint holds every parameter, or, when the strategy leaves some
//! layer groups frozen for the whole run, only the groups it trains: the
//! frozen rest is the base model's, named in `base.json` with a SHA-256 of
//! those tensors, and checked when the checkpoint is read back. A `head`
//! checkpoint of MiniLM is then 0.6 MB instead of 90 MB. Reading a
//! checkpoint is strict: a missing or unexpected tensor is an error naming
//! its key, never a silently re-initialised weight.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::config::TrainState;
use super::optim::AdamW;
use crate::fsutil::{write_atomic, write_json_atomic};
use crate::hub::{Checkpoint, write_safetensors};
use crate::models::params::NamedTensors;
use crate::models::state::{self, Source, export, export_groups, hash_tensors};
use crate::models::{Architecture, Head, TaskModel, group_of};
use crate::strategy::Strategy;

/// What a run's checkpoints (and `best/`) hold; see the module doc.
pub struct WeightStore {
    /// Groups written; `None`: all.
    saved: Option<Vec<bool>>,
    model_dir: PathBuf,
    /// SHA-256 of the base tensors not written.
    base_hash: Option<String>,
}

/// `base.json` of a checkpoint that holds only the trained groups.
#[derive(Serialize, Deserialize)]
struct BaseRef {
    model_dir: PathBuf,
    groups_saved: Vec<bool>,
    /// SHA-256 of the base model's tensors of the other groups.
    sha256: String,
}

impl WeightStore {
    /// What a run of `strategy` over `epochs` saves, for a model of `groups` groups.
    pub fn new(strategy: Strategy, groups: usize, epochs: usize, model_dir: &Path) -> Self {
        let mut saved = vec![false; groups];
        for e in 0..epochs.min(groups) {
            for (g, t) in strategy.trainable(groups, e).iter().enumerate() {
                saved[g] |= *t;
            }
        }
        let partial = strategy.uses_pretrained_weights() && saved.iter().any(|t| !t);
        Self {
            saved: partial.then_some(saved),
            model_dir: model_dir.to_path_buf(),
            base_hash: None,
        }
    }

    /// Hashes the groups a partial store does not write, from the model as
    /// loaded from the base checkpoint.
    pub fn hash_base<A: Architecture, H: Head>(&mut self, model: &TaskModel<A, H>) {
        if let Some(saved) = &self.saved {
            self.base_hash = Some(hash_tensors(&export_groups(model, &|g| !saved[g])));
        }
    }

    /// The parameters a save writes.
    pub fn tensors<A: Architecture, H: Head>(&self, model: &TaskModel<A, H>) -> NamedTensors {
        match &self.saved {
            Some(saved) => export_groups(model, &|g| saved[g]),
            None => export(model, &|_| true),
        }
    }

    pub fn write(&self, tensors: &NamedTensors, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        if let (Some(saved), Some(sha256)) = (&self.saved, &self.base_hash) {
            let r = BaseRef {
                model_dir: self.model_dir.clone(),
                groups_saved: saved.clone(),
                sha256: sha256.clone(),
            };
            write_json_atomic(&dir.join("base.json"), &r)?;
        }
        write_safetensors(&dir.join("model.safetensors"), tensors, None)
    }
}

/// Fills `model` (built for the run's architecture) with what
/// [`WeightStore::write`] wrote in `dir`: complete, or completed from the
/// base model after checking it is the one the run started from.
pub fn load_weights<A: Architecture, H: Head>(
    model: TaskModel<A, H>,
    dir: &Path,
) -> Result<TaskModel<A, H>> {
    let checkpoint = Checkpoint::load(dir)?;
    let base_json = dir.join("base.json");
    if !base_json.is_file() {
        return Ok(state::load(model, Source::Exact(&checkpoint), 0)?.0);
    }
    let r: BaseRef = read_json(&base_json)?;
    let base = Checkpoint::open(&r.model_dir).with_context(|| {
        format!(
            "{} holds only the layers this run trains; the rest comes from the base model {}",
            dir.display(),
            r.model_dir.display()
        )
    })?;
    let (model, _) = state::load(model, Source::Pretrained(&base), 0)?;
    let groups = model.body.groups();
    if r.groups_saved.len() != groups.len() {
        bail!(
            "{} was saved for a model of {} layer groups, this one has {}",
            base_json.display(),
            r.groups_saved.len(),
            groups.len()
        );
    }
    let hash = hash_tensors(&export_groups(&model, &|g| !r.groups_saved[g]));
    if hash != r.sha256 {
        bail!(
            "{} holds only the layers this run trains; the frozen rest comes from the base model {}, \
             whose weights have changed since the run started (their SHA-256 is {hash}, was {}): \
             put that model back as it was to resume or export this run",
            dir.display(),
            r.model_dir.display(),
            r.sha256
        );
    }
    let saved = |path: &str| r.groups_saved[group_of(&groups, path)];
    Ok(state::load(model, Source::Overlay(&checkpoint, &saved), 0)?.0)
}

/// Writes `checkpoints/step-N/` completely, then points `checkpoints/LAST` at
/// it, then removes older ones: a kill at any moment leaves LAST naming a
/// complete checkpoint.
pub fn save_checkpoint<A: Architecture, H: Head>(
    run_dir: &Path,
    store: &WeightStore,
    model: &TaskModel<A, H>,
    opt: &AdamW,
    state: &mut TrainState,
) -> Result<()> {
    let root = run_dir.join("checkpoints");
    let name = format!("step-{:08}", state.step);
    let dir = root.join(&name);
    store.write(&store.tensors(model), &dir)?;
    let (tensors, steps) = opt.export();
    state.optimizer_steps = steps;
    write_safetensors(&dir.join("optimizer.safetensors"), &tensors, None)?;
    write_json_atomic(&dir.join("state.json"), state)?;
    write_atomic(&root.join("LAST"), |w| Ok(w.write_all(name.as_bytes())?))?;
    for entry in std::fs::read_dir(&root)?.flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        if n.starts_with("step-") && n != name {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// The checkpoint `checkpoints/LAST` names.
pub fn last_checkpoint(run_dir: &Path) -> Result<PathBuf> {
    let pointer = run_dir.join("checkpoints").join("LAST");
    match std::fs::read_to_string(&pointer) {
        Ok(name) => {
            let dir = run_dir.join("checkpoints").join(name.trim());
            if !dir.join("state.json").exists() {
                bail!(
                    "{} names {}, which is incomplete",
                    pointer.display(),
                    dir.display()
                );
            }
            Ok(dir)
        }
        Err(_) => bail!(
            "cannot resume {}: it has no checkpoint yet (checkpoints/LAST); start it again",
            run_dir.display()
        ),
    }
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
}

/// Appends JSON lines, flushed after each so a kill loses at most the line being written.
pub struct MetricsLog {
    file: std::fs::File,
}

impl MetricsLog {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self { file })
    }

    pub fn write(&mut self, v: &impl Serialize) -> Result<()> {
        let mut line = serde_json::to_string(v)?;
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        Ok(())
    }
}

/// On resume, drops the lines a killed run wrote after its last checkpoint,
/// which the resumed run writes again.
pub fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step")?.as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .collect();
    write_atomic(path, |w| {
        for l in kept {
            w.write_all(l.as_bytes())?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}
