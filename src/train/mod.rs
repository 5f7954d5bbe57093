//! Training, top to bottom: [`train`] (or [`resume`]) reads the
//! configuration and the data, picks the family and the task, and hands
//! both to the one generic loop in [`fit`].
//!
//! - `config`: what a run is asked to do and where it stands;
//! - `fit`: the loop (batches, loss, optimizer, validation, checkpoints, export);
//! - `freeze` and `cache`: the frozen prefix computed once (feature cache);
//! - `optim`: AdamW, accumulation, clipping, the schedule;
//! - `checkpoint`, `export`, `eval`, `progress`.
//!
//! A run directory holds `config.json` (every setting used), `metrics.jsonl`,
//! `checkpoints/` (the last complete one named by `checkpoints/LAST`),
//! `best/` (the weights with the best validation score), `model/` (the
//! exported Hugging Face directory), `cost.json` and `emissions.csv`.

pub mod cache;
pub mod captioning;
pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod eval_caption;
pub mod eval_image;
pub mod eval_lm;
pub mod export;
pub mod fit;
pub mod freeze;
pub mod optim;
pub mod progress;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use sha2::{Digest, Sha256};

pub use config::{ExportChoice, Resolved, RunConfig, SCHEMA_VERSION, TrainConfig, TrainState};
pub use eval::{ExportMeta, LoadedClassifier, load_classifier, load_classifier_with_base};
pub use fit::TrainOutcome;
pub use progress::{Observer, Quiet, StepLine};

use crate::cost::run::Phases;
use crate::data::split::{seeded_subset, stratified_split};
use crate::data::table::{self, Columns, Example};
use crate::models::bert::Bert;
use crate::models::vision;
use crate::models::{Architecture, TaskModel};
use crate::tasks::Task;
use crate::tasks::causal_lm::CausalLanguageModelling;
use crate::tasks::classification::{LabelMap, TextClassification};
use crate::tasks::image::{self, ImageClassification, ImageTaskState};
use crate::tokenize::TextTokenizer;
use fit::{Prepared, Setup};

/// Starts a new run in `config.out`.
pub fn train(config: TrainConfig, device: &Device, obs: &mut dyn Observer) -> Result<TrainOutcome> {
    let started = Instant::now();
    config.check()?;
    let out = config
        .out
        .clone()
        .context("--out DIR is required: where the run goes")?;
    if out.join("config.json").exists() {
        bail!(
            "{} already holds a run; continue it with --resume {} or choose another --out",
            out.display(),
            out.display()
        );
    }
    let model_dir = locate_model(&config)?;
    let model_dir = model_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", model_dir.display()))?;
    let config = absolute_paths(config)?;
    dispatch(&config, &model_dir, None, device, started, obs)
}

/// Continues the interrupted run in `run_dir` from its last checkpoint.
pub fn resume(run_dir: &Path, device: &Device, obs: &mut dyn Observer) -> Result<TrainOutcome> {
    let started = Instant::now();
    let path = run_dir.join("config.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot resume: {} is not a run directory (no config.json)",
            run_dir.display()
        )
    })?;
    let probe: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a run configuration", path.display()))?;
    let schema = probe.get("schema").and_then(|s| s.as_u64()).unwrap_or(1);
    if schema != SCHEMA_VERSION as u64 {
        bail!(
            "{} was written by another version of headstart (run schema {schema}, this one \
             reads {SCHEMA_VERSION}): start the run again",
            path.display()
        );
    }
    let saved: RunConfig = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a run configuration", path.display()))?;
    let last = checkpoint::last_checkpoint(run_dir)?;
    let config = TrainConfig {
        out: Some(run_dir.to_path_buf()),
        ..saved.config.clone()
    };
    let model_dir = saved.model_dir.clone();
    dispatch(
        &config,
        &model_dir,
        Some((saved, last)),
        device,
        started,
        obs,
    )
}

/// Picks the family and the task.
fn dispatch(
    config: &TrainConfig,
    model_dir: &Path,
    resumed: Option<(RunConfig, PathBuf)>,
    device: &Device,
    started: Instant,
    obs: &mut dyn Observer,
) -> Result<TrainOutcome> {
    if config.task == crate::tasks::captioning::NAME {
        return captioning::captioning(config, model_dir, resumed, device, started, obs);
    }
    let family = family_of(model_dir, config.arch.as_deref())?;
    match (config.task.as_str(), family.as_str()) {
        (TextClassification::NAME, "bert") => {
            text_classification::<Bert>(config, model_dir, resumed, device, started, obs)
        }
        (ImageClassification::NAME, family) if vision::is_image_family(family) => {
            crate::with_image_family!(family, A => image_classification::<A>(config, model_dir, resumed, device, started, obs), else unreachable!("{family} is an image family"))
        }
        (CausalLanguageModelling::NAME, family)
            if crate::models::causal::CAUSAL_FAMILIES.contains(&family) =>
        {
            crate::with_causal_family!(family, A => causal_lm::<A>(config, model_dir, resumed, device, started, obs), else unreachable!("{family} is a causal-LM family"))
        }
        (task, family) => bail!(
            "task `{task}` is not supported for model_type `{family}` \
             (supported: text-classification with bert; image-classification with {}; \
             causal-lm with {}; captioning with an image family as --encoder and a causal LM \
             as --decoder)",
            vision::IMAGE_FAMILIES.join(", "),
            crate::models::causal::CAUSAL_FAMILIES.join(", ")
        ),
    }
}

/// The model a run starts from: an existing file or directory as it is,
/// else a packaged model, hub id or cached snapshot ([`crate::find_model`]).
fn locate_model(config: &TrainConfig) -> Result<PathBuf> {
    resolve_model(&config.model)
}

/// `--model`: an existing file or directory as it is, else a packaged
/// model, hub id or cached snapshot ([`crate::find_model`]).
/// A GGUF file becomes a model directory ([`crate::hub::gguf::model_dir`]).
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let log = &mut |l: &str| eprintln!("{l}");
    let p = Path::new(spec);
    let file = if p.is_file() {
        Some(p.to_path_buf())
    } else if !p.exists() {
        crate::assets::packaged_weights_file(spec, log)?
    } else {
        None
    };
    match file {
        Some(f) if crate::hub::gguf::is_gguf(&f) => crate::hub::gguf::model_dir(&f, log),
        Some(f) => Ok(f),
        None => crate::find_model(spec),
    }
}

/// The image family of `model` (a run, an exported directory or a weights
/// file of family `arch`), `None` for other models; pass it on as the
/// family so that a bare file's tensor names are read only once.
pub fn image_family(model: &Path, arch: Option<&str>) -> Option<String> {
    family_of(&eval::exported_model(model), arch)
        .ok()
        .filter(|f| vision::is_image_family(f))
}

/// The family of `model`: `--arch` when given (a family or one of its
/// variants: `resnet50`), else the directory's `config.json`; a bare
/// weights file's family comes from its tensor names, else needs `--arch`.
pub fn family_of(model: &Path, arch: Option<&str>) -> Result<String> {
    if let Some(arch) = arch {
        let name = arch.trim().to_ascii_lowercase().replace('-', "_");
        if let Some(family) = vision::family_for_arch(&name) {
            return Ok(family.to_string());
        }
        if crate::models::SUPPORTED.contains(&name.as_str()) {
            return Ok(name);
        }
        bail!(
            "--arch {arch} is not a family this build implements (image families: {})",
            vision::arch_names().join(", ")
        );
    }
    if model.is_file() {
        if let Some(family) = infer_family(model) {
            return Ok(family);
        }
        bail!(
            "{} is a bare weights file with no config.json and its tensor names match no family's \
             reference layout: say which family it is with --arch (one of {})",
            model.display(),
            vision::arch_names().join(", ")
        );
    }
    crate::models::model_type(model)
}

/// The family of a bare weights file from its tensor names, when exactly
/// one image family recognises them ([`vision::family_of_checkpoint`]).
fn infer_family(file: &Path) -> Option<String> {
    let c = crate::hub::Checkpoint::load_file(file).ok()?;
    vision::family_of_checkpoint(&c).map(str::to_string)
}

/// Image classification with family `A`: list and decode the images, then fit.
fn image_classification<A: Architecture>(
    config: &TrainConfig,
    model_dir: &Path,
    resumed: Option<(RunConfig, PathBuf)>,
    device: &Device,
    started: Instant,
    obs: &mut dyn Observer,
) -> Result<TrainOutcome> {
    let train_device = device.clone().autodiff();
    let body = A::from_config_file(&model_dir.join("config.json"), &train_device)?;
    config.strategy.check(body.groups().len())?;
    let (train_examples, val_examples, skipped_rows, data_sha256) = read_image_data(config)?;
    let state = match restored_state(&resumed, &data_sha256, "label names or image recipe")? {
        Some(state) => state,
        None => ImageTaskState {
            labels: LabelMap::from_examples(&train_examples)?,
            recipe: A::recipe(model_dir, config.image_size)?,
        },
    };
    state.recipe.check()?;
    let task = ImageClassification {
        labels: state.labels.clone(),
        recipe: state.recipe.clone(),
        seed: config.seed,
    };
    let body = task.adapt_body(body);
    let (train_file, val_file) = file_names(config);
    let (train, bad_train) = image::load_split(
        &task,
        &train_examples,
        &train_file,
        config.augment,
        config.skip_bad_rows,
    )?;
    let (val, bad_val) = image::load_split(
        &task,
        &val_examples,
        &val_file,
        crate::data::preprocess::Augment::None,
        config.skip_bad_rows,
    )?;
    let skipped = skipped_rows + bad_train + bad_val;
    if train.is_empty() || val.is_empty() {
        bail!("no decodable training or validation images left");
    }
    let run = Run {
        config,
        model_dir,
        resumed,
        task_state: serde_json::to_value(&state)?,
        data_sha256,
        skipped,
        device,
        started,
    };
    let describe = |resolved: &Resolved| {
        format!(
            "{} on {} training / {} validation images, labels {}; {} epochs, {} steps, lr {:.1e}, \
             warmup {} steps; images: {}{}{}",
            config.strategy,
            train.len(),
            val.len(),
            state.labels.labels.join(", "),
            resolved.epochs,
            resolved.total_steps,
            resolved.lr,
            resolved.warmup_steps,
            state.recipe.describe(),
            if config.augment != crate::data::preprocess::Augment::None {
                format!("; augmentation {:?} (feature cache off)", config.augment).to_lowercase()
            } else {
                String::new()
            },
            if skipped > 0 {
                format!("; {skipped} bad rows or images skipped")
            } else {
                String::new()
            }
        )
    };
    let line = describe(&Resolved::new(config, train.len()));
    run.fit(body, task, train, val, &line, obs)
}

/// Training and validation images (from folders or tables), rows skipped,
/// and a SHA-256 of the lists read (the images themselves are hashed into
/// cache keys as they are decoded).
fn read_image_data(config: &TrainConfig) -> Result<(Vec<Example>, Vec<Example>, usize, String)> {
    let train_path = config.train.as_ref().context(
        "--train is required: an image folder (one sub-folder per class) or a CSV/JSONL with \
         image and label columns",
    )?;
    let read = |p: &Path| {
        let list = crate::data::image_list::read(
            p,
            &config.image_column,
            &config.label_column,
            config.skip_bad_rows,
        )?;
        Ok((list.examples, list.skipped))
    };
    let mut hasher = Sha256::new();
    let (train, val, skipped) = split_examples(config, train_path, read, "images", |t, v| {
        for e in t.iter().chain(v) {
            hasher.update((e.text.len() as u64).to_le_bytes());
            hasher.update(e.text.as_bytes());
            hasher.update((e.label.len() as u64).to_le_bytes());
            hasher.update(e.label.as_bytes());
            if let Ok(meta) = std::fs::metadata(&e.text) {
                hasher.update(meta.len().to_le_bytes());
            }
        }
    })?;
    Ok((train, val, skipped, hex(hasher.finalize().as_slice())))
}

/// Training and validation examples from `train_path` (and `--val`, else a
/// stratified `--val-fraction` of the training examples), `hash` shown both
/// before `--train-limit` takes its subset; and the rows skipped.
fn split_examples(
    config: &TrainConfig,
    train_path: &Path,
    read: impl Fn(&Path) -> Result<(Vec<Example>, usize)>,
    what: &str,
    mut hash: impl FnMut(&[Example], &[Example]),
) -> Result<(Vec<Example>, Vec<Example>, usize)> {
    let (mut train, mut skipped) = read(train_path)?;
    let val = match &config.val {
        Some(p) => {
            let (v, s) = read(p)?;
            skipped += s;
            v
        }
        None => {
            if !(config.val_fraction > 0.0 && config.val_fraction < 1.0) {
                bail!("--val-fraction must be in (0, 1) when no --val is given");
            }
            let (t, v) = stratified_split(train, config.val_fraction, config.seed);
            train = t;
            v
        }
    };
    hash(&train, &val);
    if let Some(limit) = config.train_limit {
        train = seeded_subset(&train, limit, config.seed);
    }
    if train.is_empty() {
        bail!("{}: no training {what}", train_path.display());
    }
    if val.is_empty() {
        bail!("no validation {what}: give --val or a larger --val-fraction");
    }
    Ok((train, val, skipped))
}

/// The task state a resumed run saved (`None` for a new run), after
/// checking that its data did not change.
fn restored_state<S: serde::de::DeserializeOwned>(
    resumed: &Option<(RunConfig, PathBuf)>,
    data_sha256: &str,
    what: &str,
) -> Result<Option<S>> {
    let Some((rc, _)) = resumed else {
        return Ok(None);
    };
    if rc.data_sha256 != data_sha256 {
        bail!(
            "the training or validation data changed since {} started; start the run again",
            rc.config.out.as_deref().unwrap_or(Path::new(".")).display()
        );
    }
    serde_json::from_value(rc.task_state.clone())
        .map(Some)
        .with_context(|| format!("the run's config.json has no {what}"))
}

/// The training and validation file names, for messages.
fn file_names(config: &TrainConfig) -> (String, String) {
    let name = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let train_file = name(&config.train).unwrap_or_default();
    let val_file = name(&config.val).unwrap_or_else(|| train_file.clone());
    (train_file, val_file)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What every task hands to the fit loop besides its model and splits.
struct Run<'a> {
    config: &'a TrainConfig,
    model_dir: &'a Path,
    resumed: Option<(RunConfig, PathBuf)>,
    task_state: serde_json::Value,
    data_sha256: String,
    skipped: usize,
    device: &'a Device,
    started: Instant,
}

impl Run<'_> {
    /// Writes the run's config.json (a new run), logs `line` and fits.
    fn fit<A: Architecture, T: Task>(
        self,
        body: A,
        task: T,
        train: T::Split,
        val: T::Split,
        line: &str,
        obs: &mut dyn Observer,
    ) -> Result<TrainOutcome> {
        let config = self.config;
        let (n_train, n_val) = (T::lengths(&train).len(), T::lengths(&val).len());
        let run_config = RunConfig {
            schema: SCHEMA_VERSION,
            config: config.clone(),
            resolved: Resolved::new(config, n_train),
            task_state: self.task_state,
            model_dir: self.model_dir.to_path_buf(),
            train_examples: n_train,
            val_examples: n_val,
            skipped_rows: self.skipped,
            data_sha256: self.data_sha256,
        };
        let run_dir = config.out.clone().context("--out DIR is required")?;
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
        let resume_from = match self.resumed {
            Some((_, last)) => Some(last),
            None => {
                crate::fsutil::write_json_atomic(&run_dir.join("config.json"), &run_config)?;
                None
            }
        };
        obs.line(line);
        let phases = Phases {
            data: self.started.elapsed().as_secs_f64(),
            ..Phases::default()
        };
        let setup = Setup {
            run_dir,
            run_config,
            resume_from,
            device: self.device.clone(),
        };
        let head = task.new_head(&body, &self.device.clone().autodiff());
        let model = TaskModel { body, head };
        fit::fit(
            setup,
            Prepared {
                model,
                task,
                train,
                val,
            },
            self.started,
            phases,
            obs,
        )
    }
}

/// Text classification with family `A`: read and tokenise the data, then fit.
fn text_classification<A: Architecture>(
    config: &TrainConfig,
    model_dir: &Path,
    resumed: Option<(RunConfig, PathBuf)>,
    device: &Device,
    started: Instant,
    obs: &mut dyn Observer,
) -> Result<TrainOutcome> {
    let train_device = device.clone().autodiff();
    let body = A::from_config_file(&model_dir.join("config.json"), &train_device)?;
    body_checks(&body, config)?;
    let (train_examples, val_examples, skipped, data_sha256) = read_data(config)?;
    let labels = match restored_state(&resumed, &data_sha256, "label names")? {
        Some(labels) => labels,
        None => LabelMap::from_examples(&train_examples)?,
    };
    let mut tokenizer = TextTokenizer::from_dir(model_dir)?;
    let task = TextClassification {
        labels: labels.clone(),
        pad_id: tokenizer.pad_id,
    };
    let (train_file, val_file) = file_names(config);
    let train = task.split(
        &mut tokenizer,
        &train_examples,
        &train_file,
        config.max_length,
    )?;
    let val = task.split(&mut tokenizer, &val_examples, &val_file, config.max_length)?;
    let resolved = Resolved::new(config, train.items.len());
    let line = format!(
        "{} on {} training / {} validation examples, labels {}; {} epochs, {} steps, lr {:.1e}, warmup {} steps{}",
        config.strategy,
        train.items.len(),
        val.items.len(),
        labels.labels.join(", "),
        resolved.epochs,
        resolved.total_steps,
        resolved.lr,
        resolved.warmup_steps,
        if skipped > 0 {
            format!("; {skipped} bad rows skipped")
        } else {
            String::new()
        }
    );
    let run = Run {
        config,
        model_dir,
        resumed,
        task_state: serde_json::to_value(&labels)?,
        data_sha256,
        skipped,
        device,
        started,
    };
    run.fit(body, task, train, val, &line, obs)
}

/// Causal language modelling with family `A`: read, tokenise and pack the
/// corpus, then fit.
fn causal_lm<A: crate::models::causal::CausalLm>(
    config: &TrainConfig,
    model_dir: &Path,
    resumed: Option<(RunConfig, PathBuf)>,
    device: &Device,
    started: Instant,
    obs: &mut dyn Observer,
) -> Result<TrainOutcome> {
    use crate::tasks::causal_lm::{LmSplit, check_block_size, lm_rows};
    let train_device = device.clone().autodiff();
    let body = A::from_config_file(&model_dir.join("config.json"), &train_device)?;
    config.strategy.check(body.groups().len())?;
    let block = config.block_size.unwrap_or(512.min(body.max_positions()));
    check_block_size(block, body.max_positions())?;
    let eos = *body.eos_token_ids().first().with_context(|| {
        format!(
            "{} names no eos_token_id: documents cannot be joined",
            model_dir.join("config.json").display()
        )
    })?;
    let train_path = config
        .train
        .as_ref()
        .context("--train is required: a text file, a folder of text files, or a CSV/JSONL with a text column")?;
    let mut hasher = Sha256::new();
    let read = |p: &Path| {
        crate::data::corpus::read_documents(p, &config.text_column, config.skip_bad_rows)
    };
    let (train_docs, val_docs, skipped) =
        split_examples(config, train_path, read, "documents", |t, v| {
            for e in t.iter().chain(v) {
                hasher.update((e.text.len() as u64).to_le_bytes());
                hasher.update(e.text.as_bytes());
            }
        })?;
    let data_sha256 = hex(hasher.finalize().as_slice());
    if resumed.is_some() {
        restored_state::<serde_json::Value>(&resumed, &data_sha256, "task state")?;
    }
    let tokenizer = crate::tokenize::lm_tokenizer(model_dir)?;
    let rows = |docs: &[Example]| -> Result<Vec<Vec<u32>>> {
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        lm_rows(&tokenizer, &texts, eos, block, config.pack)
    };
    let train = LmSplit {
        rows: rows(&train_docs)?,
    };
    let val = LmSplit {
        rows: rows(&val_docs)?,
    };
    if train.rows.is_empty() || val.rows.is_empty() {
        bail!("no training or validation tokens left after tokenising (every document is empty)");
    }
    let task = CausalLanguageModelling { pad_id: eos };
    let resolved = Resolved::new(config, train.rows.len());
    let line = format!(
        "{} on {} training / {} validation documents ({} / {} tokens to predict, rows of {} tokens, \
         packing {:?}); {} epochs, {} steps, lr {:.1e}, warmup {} steps{}",
        config.strategy,
        train_docs.len(),
        val_docs.len(),
        train.targets(),
        val.targets(),
        block,
        config.pack,
        resolved.epochs,
        resolved.total_steps,
        resolved.lr,
        resolved.warmup_steps,
        if skipped > 0 {
            format!("; {skipped} bad rows skipped")
        } else {
            String::new()
        }
    )
    .to_lowercase();
    let run = Run {
        config,
        model_dir,
        resumed,
        task_state: serde_json::json!({
            "block_size": block,
            "eos": eos,
            "train_documents": train_docs.len(),
            "train_tokens": train.targets(),
        }),
        data_sha256,
        skipped,
        device,
        started,
    };
    run.fit(body, task, train, val, &line, obs)
}

/// Settings the architecture must allow.
fn body_checks<A: Architecture>(body: &A, config: &TrainConfig) -> Result<()> {
    config.strategy.check(body.groups().len())?;
    if config.max_length > body.max_positions() {
        bail!(
            "--max-length {} exceeds the model's {} positions (max_position_embeddings): use at most {}",
            config.max_length,
            body.max_positions(),
            body.max_positions()
        );
    }
    Ok(())
}

/// Paths stored in a run's config.json, absolute, so a resume from any
/// directory finds them.
fn absolute_paths(mut config: TrainConfig) -> Result<TrainConfig> {
    for p in [
        &mut config.train,
        &mut config.val,
        &mut config.out,
        &mut config.cache_dir,
    ]
    .into_iter()
    .flatten()
    {
        *p = std::path::absolute(&*p).with_context(|| format!("cannot resolve {}", p.display()))?;
    }
    Ok(config)
}

/// Training and validation examples, rows skipped, and a SHA-256 of the files read.
fn read_data(config: &TrainConfig) -> Result<(Vec<Example>, Vec<Example>, usize, String)> {
    let train_path = config
        .train
        .as_ref()
        .context("--train FILE is required (CSV, TSV or JSONL with a text and a label column)")?;
    let cols = Columns {
        text: &config.text_column,
        label: Some(&config.label_column),
        skip_bad_rows: config.skip_bad_rows,
    };
    let read = |p: &Path| {
        let t = table::read_examples(p, &cols)?;
        Ok((t.examples, t.skipped))
    };
    let (train, val, skipped) = split_examples(config, train_path, read, "examples", |_, _| {})?;
    Ok((train, val, skipped, tables_sha256(config, train_path)?))
}

/// SHA-256 of the training table's bytes and the validation table's (if
/// given), each after its length.
fn tables_sha256(config: &TrainConfig, train_path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    for p in [Some(train_path), config.val.as_deref()]
        .into_iter()
        .flatten()
    {
        let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hex(hasher.finalize().as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/vision")
            .join(name)
    }

    #[test]
    fn resnet_files_and_directories_are_recognised() {
        let tv = fixture("resnet_bottleneck_random.safetensors");
        assert_eq!(family_of(&tv, None).unwrap(), "resnet");
        assert_eq!(family_of(&tv, Some("ResNet50")).unwrap(), "resnet");
        assert_eq!(family_of(&tv, Some("resnet18")).unwrap(), "resnet");
        assert_eq!(
            family_of(&fixture("resnet_hf_random"), None).unwrap(),
            "resnet"
        );
        assert_eq!(
            family_of(&fixture("mobilenet_v2_random.safetensors"), None).unwrap(),
            "mobilenet_v2"
        );
        let e = family_of(&tv, Some("resnet19")).unwrap_err().to_string();
        assert!(e.contains("resnet19") && e.contains("resnet"), "{e}");
        // a timm directory: config.json names the architecture, the weights the sizes
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"architecture": "resnet50", "num_classes": 10,
                "pretrained_cfg": {"input_size": [3, 96, 96]}}"#,
        )
        .unwrap();
        std::fs::copy(&tv, dir.path().join("model.safetensors")).unwrap();
        assert_eq!(family_of(dir.path(), None).unwrap(), "resnet");
        let config = crate::models::resnet::ResNet::config_of(dir.path()).unwrap();
        assert_eq!(config.depths, vec![1, 2, 1, 1]);
        assert_eq!(config.image_size, 96);
    }

    /// Two classes of 64x64 noise images, light and dark.
    fn image_folder(root: &Path, per_class: usize) {
        let mut rng = crate::models::params::SeededRng::new(5);
        for (label, base) in [("dark", 40u8), ("light", 200u8)] {
            let d = root.join(label);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..per_class {
                let img = ::image::RgbImage::from_fn(64, 64, |_, _| {
                    let v = (rng.next_u64() % 40) as u8;
                    ::image::Rgb([base + v, base + v / 2, base])
                });
                img.save(d.join(format!("{i}.png"))).unwrap();
            }
        }
    }

    #[test]
    fn a_torchvision_resnet_file_trains_exports_and_predicts() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        image_folder(&images, 6);
        let out = dir.path().join("run");
        let config = TrainConfig {
            task: ImageClassification::NAME.into(),
            model: fixture("resnet_basic_random.safetensors")
                .display()
                .to_string(),
            arch: Some("resnet18".into()),
            train: Some(images.clone()),
            val_fraction: 0.34,
            image_size: Some(64),
            strategy: "freeze:2".parse().unwrap(),
            epochs: Some(1),
            batch_size: 4,
            out: Some(out.clone()),
            cache_dir: Some(dir.path().join("cache")),
            ..TrainConfig::default()
        };
        let device = Device::default();
        let outcome = train(config, &device, &mut Quiet).unwrap();
        let model = outcome.model_dir;
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(written["model_type"], "resnet");
        assert_eq!(written["architectures"][0], "ResNetForImageClassification");
        let exported = crate::hub::Checkpoint::load(&model).unwrap();
        assert!(exported.tensors.contains_key("classifier.1.weight"));
        assert!(
            exported
                .tensors
                .contains_key("resnet.embedder.embedder.normalization.running_var")
        );
        // the frozen stem and layer1 left as loaded, BatchNorm statistics included
        let fixture =
            crate::hub::Checkpoint::load_file(&fixture("resnet_basic_random.safetensors")).unwrap();
        for (tv, hf) in [
            (
                "bn1.running_var",
                "resnet.embedder.embedder.normalization.running_var",
            ),
            (
                "layer1.1.conv2.weight",
                "resnet.encoder.stages.0.layers.1.layer.1.convolution.weight",
            ),
        ] {
            assert_eq!(fixture.tensors[tv].data, exported.tensors[hf].data, "{tv}");
        }
        assert_ne!(
            fixture.tensors["layer3.0.conv1.weight"].data,
            exported.tensors["resnet.encoder.stages.2.layers.0.layer.0.convolution.weight"].data
        );
        let loaded = eval_image::load_image_classifier(&out, None, &device).unwrap();
        let files = vec![images.join("dark/0.png"), images.join("light/0.png")];
        let predictions = loaded.predict(&files, 2, 2, &device).unwrap();
        assert_eq!(predictions.len(), 2);
        let labels: Vec<&str> = predictions[0].top.iter().map(|t| t.0.as_str()).collect();
        assert!(labels.contains(&"dark") && labels.contains(&"light"));
    }

    #[test]
    fn a_lora_run_exports_the_merged_model_and_a_peft_adapter() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("train.csv");
        let mut rows = String::from("text,label\n");
        for i in 0..16 {
            let (t, l) = if i % 2 == 0 {
                ("the movie was good and fun", "pos")
            } else {
                ("a bad and dull film", "neg")
            };
            rows.push_str(&format!("{t} {i},{l}\n"));
        }
        std::fs::write(&data, rows).unwrap();
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert");
        let out = dir.path().join("run");
        let config = TrainConfig {
            model: base.display().to_string(),
            train: Some(data),
            val_fraction: 0.25,
            strategy: "lora:4".parse().unwrap(),
            lora_targets: vec!["query".into(), "value".into()],
            epochs: Some(2),
            batch_size: 4,
            max_length: 16,
            out: Some(out.clone()),
            cache_dir: Some(dir.path().join("cache")),
            ..TrainConfig::default()
        };
        let outcome = train(config, &Device::default(), &mut Quiet).unwrap();
        let merged = crate::hub::Checkpoint::load(&outcome.model_dir).unwrap();
        assert!(merged.tensors.keys().all(|k| !k.contains("lora_")));
        let fixture = crate::hub::Checkpoint::load(&base).unwrap();
        let layer = "encoder.layer.0.attention.self";
        // untargeted and frozen: as loaded; targeted: W + scale B A
        assert_eq!(
            fixture.tensors[&format!("{layer}.key.weight")].data,
            merged.tensors[&format!("bert.{layer}.key.weight")].data
        );
        assert_eq!(
            fixture.tensors[&format!("{layer}.query.bias")].data,
            merged.tensors[&format!("bert.{layer}.query.bias")].data
        );
        assert_ne!(
            fixture.tensors[&format!("{layer}.query.weight")].data,
            merged.tensors[&format!("bert.{layer}.query.weight")].data
        );
        let adapter = out.join("adapter");
        let c: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(c["task_type"], "SEQ_CLS");
        assert_eq!(c["r"], 4);
        assert_eq!(c["modules_to_save"], serde_json::json!(["classifier"]));
        assert_eq!(c["fan_in_fan_out"], false);
        let t = crate::hub::read_safetensors(&adapter.join("adapter_model.safetensors")).unwrap();
        assert!(t.contains_key("base_model.model.classifier.weight"));
        let a = &t[&format!("base_model.model.bert.{layer}.query.lora_A.weight")];
        assert_eq!(a.shape[0], 4);
        assert!(!t.keys().any(|k| k.contains(".key.lora_")));
        // for scripts/check_lora_peft.py: the classifier run's adapter and merged model
        if let Some(keep) = std::env::var_os("HEADSTART_PEFT_OUT") {
            let keep = Path::new(&keep).join("bert-cls");
            for (from, to) in [(&adapter, "adapter"), (&outcome.model_dir, "merged")] {
                std::fs::create_dir_all(keep.join(to)).unwrap();
                for f in std::fs::read_dir(from).unwrap() {
                    let f = f.unwrap().path();
                    std::fs::copy(&f, keep.join(to).join(f.file_name().unwrap())).unwrap();
                }
            }
            std::fs::write(keep.join("base.txt"), base.display().to_string()).unwrap();
        }

        // --export best reloads the best checkpoint into an adapted model
        let out2 = dir.path().join("run-best");
        let config = TrainConfig {
            model: base.display().to_string(),
            train: Some(dir.path().join("train.csv")),
            val_fraction: 0.25,
            strategy: "lora".parse().unwrap(),
            epochs: Some(2),
            batch_size: 4,
            max_length: 16,
            export: ExportChoice::Best,
            out: Some(out2.clone()),
            cache_dir: Some(dir.path().join("cache")),
            ..TrainConfig::default()
        };
        let outcome = train(config, &Device::default(), &mut Quiet).unwrap();
        assert!(
            outcome.exported.starts_with("the best validation"),
            "{}",
            outcome.exported
        );
        let best = crate::hub::Checkpoint::load(&outcome.model_dir).unwrap();
        assert!(best.tensors.keys().all(|k| !k.contains("lora_")));
        assert!(out2.join("adapter/adapter_model.safetensors").is_file());
    }
}
