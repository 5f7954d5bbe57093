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
pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod eval_image;
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
pub use eval::{ExportMeta, LoadedClassifier, load_classifier};
pub use fit::TrainOutcome;
pub use progress::{Observer, Quiet, StepLine};

use crate::cost::run::Phases;
use crate::data::preprocess::Recipe;
use crate::data::split::{seeded_subset, stratified_split};
use crate::data::table::{self, Columns, Example};
use crate::models::bert::Bert;
use crate::models::mobilenet_v2::MobileNetV2;
use crate::models::vit::Vit;
use crate::models::{Architecture, TaskModel};
use crate::tasks::Task;
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
    let family = family_of(model_dir, config.arch.as_deref())?;
    match (config.task.as_str(), family.as_str()) {
        (TextClassification::NAME, "bert") => {
            text_classification::<Bert>(config, model_dir, resumed, device, started, obs)
        }
        (ImageClassification::NAME, "mobilenet_v2") => {
            image_classification::<MobileNetV2>(config, model_dir, resumed, device, started, obs)
        }
        (ImageClassification::NAME, "vit") => {
            image_classification::<Vit>(config, model_dir, resumed, device, started, obs)
        }
        (task, family) => bail!(
            "task `{task}` is not supported for model_type `{family}` \
             (supported: text-classification with bert; image-classification with {})",
            crate::models::IMAGE_FAMILIES.join(", ")
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
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let p = Path::new(spec);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    if !p.exists()
        && let Some(file) = crate::assets::packaged_weights_file(spec, &mut |l| eprintln!("{l}"))?
    {
        return Ok(file);
    }
    crate::find_model(spec)
}

/// The image family of `model` (a run, an exported directory or a weights
/// file of family `arch`), `None` for other models; pass it on as the
/// family so that a bare file's tensor names are read only once.
pub fn image_family(model: &Path, arch: Option<&str>) -> Option<String> {
    family_of(&eval::exported_model(model), arch)
        .ok()
        .filter(|f| crate::models::IMAGE_FAMILIES.contains(&f.as_str()))
}

/// The family of `model`: `--arch` when given, else the directory's
/// `config.json`; a bare weights file needs `--arch`.
pub fn family_of(model: &Path, arch: Option<&str>) -> Result<String> {
    if let Some(arch) = arch {
        let arch = arch.trim().to_ascii_lowercase().replace('-', "_");
        let family = crate::models::family_of_arch(&arch);
        if !crate::models::SUPPORTED.contains(&family) {
            bail!(
                "--arch {arch} is not a family this build implements (supported: {}; \
                 vit_b_16 names ViT-B/16 at 224 pixels)",
                crate::models::SUPPORTED.join(", ")
            );
        }
        return Ok(family.to_string());
    }
    if model.is_file() {
        if let Some(family) = infer_family(model) {
            return Ok(family);
        }
        bail!(
            "{} is a bare weights file with no config.json: say which family it is with --arch \
             (one of {})",
            model.display(),
            crate::models::SUPPORTED.join(", ")
        );
    }
    crate::models::model_type(model)
}

/// The family of a bare weights file from its tensor names, when they are
/// unmistakable (torchvision's MobileNetV2: `features.18.0.weight` and
/// inverted residual blocks `features.N.conv...`; Hugging Face's ViT: the
/// patch projection and `encoder.layer.0.attention.attention.query`, with
/// or without the `vit.` prefix).
fn infer_family(file: &Path) -> Option<String> {
    let c = crate::hub::Checkpoint::load_file(file).ok()?;
    let has = |k: &str| c.tensors.contains_key(k);
    if has("features.18.0.weight")
        && has("features.1.conv.0.0.weight")
        && has("features.17.conv.2.weight")
    {
        return Some(MobileNetV2::MODEL_TYPE.to_string());
    }
    ["vit.", ""]
        .iter()
        .any(|p| {
            has(&format!("{p}embeddings.patch_embeddings.projection.weight"))
                && has(&format!(
                    "{p}encoder.layer.0.attention.attention.query.weight"
                ))
        })
        .then(|| Vit::MODEL_TYPE.to_string())
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
            recipe: Recipe::for_model(model_dir, A::MODEL_TYPE, config.image_size)?,
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
    let mut hasher = Sha256::new();
    for p in [Some(train_path), config.val.as_ref()]
        .into_iter()
        .flatten()
    {
        let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    let read = |p: &Path| {
        let t = table::read_examples(p, &cols)?;
        Ok((t.examples, t.skipped))
    };
    let (train, val, skipped) = split_examples(config, train_path, read, "examples", |_, _| {})?;
    Ok((train, val, skipped, hex(hasher.finalize().as_slice())))
}
