//! Evaluation: a split's outputs batched by length (inference mode, no
//! autodiff), its metrics and what computing them cost; and loading a
//! trained classifier for `eval` and `predict`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::cache::Features;
use super::checkpoint::read_json;
use crate::cost::run::{CostOptions, FlopCount, Phases, RunCost};
use crate::data::table::Example;
use crate::hub::Checkpoint;
use crate::models::bert::Bert;
use crate::models::state::{self, Source};
use crate::models::{Architecture, TaskModel};
use crate::tasks::Task;
use crate::tasks::classification::{
    ClassificationHead, LabelMap, Metrics, TextClassification, labels_from_config,
};
use crate::tokenize::TextTokenizer;

/// Items in batches of similar length (longest first).
pub fn length_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// The head's output for every example of `split`, in split order. With a
/// cache, the groups below its boundary are read from it.
pub fn predict<A: Architecture, T: Task>(
    model: &TaskModel<A, T::Head>,
    task: &T,
    split: &T::Split,
    batch_size: usize,
    cached: Option<(&Features, usize)>,
    device: &Device,
) -> Vec<Vec<f32>> {
    let model = model.valid();
    let lengths = T::lengths(split);
    let mut out = vec![Vec::new(); lengths.len()];
    for chunk in length_batches(&lengths, batch_size) {
        let features = match cached {
            Some((f, boundary)) => model.features_from(f.batch(&chunk, device), boundary),
            None => model.features(task.input(split, &chunk, device), 0),
        };
        for (i, o) in chunk
            .iter()
            .zip(task.outputs(&model.head, features, split, &chunk))
        {
            out[*i] = o;
        }
    }
    out
}

/// Forward FLOPs of [`predict`] over examples of `lengths`, less the bottom
/// `skip` groups (read from a feature cache).
pub fn eval_flops<A: Architecture, T: Task>(
    body: &A,
    task: &T,
    lengths: &[usize],
    batch_size: usize,
    skip: usize,
) -> f64 {
    length_batches(lengths, batch_size)
        .iter()
        .map(|c| {
            let per_group = body.group_flops(c.len(), lengths[c[0]]);
            per_group.iter().skip(skip).sum::<f64>() + task.head_flops(body, c.len())
        })
        .sum()
}

/// What `eval` and `predict` need besides the HF files.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportMeta {
    pub text_column: String,
    pub label_column: String,
    pub max_length: usize,
    pub strategy: String,
    pub base_model: String,
}

/// A trained classifier loaded from an exported (or any HF
/// `BertForSequenceClassification`) directory.
pub struct LoadedClassifier {
    pub model: TaskModel<Bert, ClassificationHead>,
    pub task: TextClassification,
    pub labels: LabelMap,
    pub tokenizer: TextTokenizer,
    pub meta: Option<ExportMeta>,
    pub dir: PathBuf,
}

/// What testing has spent so far.
pub struct Spent<'a> {
    pub options: &'a CostOptions,
    /// The energy meter, running since `started`.
    pub meter: crate::cost::energy::EnergyMeter,
    pub started: Instant,
    /// `data` filled in: the time reading and tokenising took.
    pub phases: Phases,
}

/// The outputs of `model` on the prepared `split` (batches of similar
/// length), their metrics and what testing cost, forward FLOPs counted as
/// evaluated.
pub fn costed_eval<A: Architecture, T: Task>(
    model: &TaskModel<A, T::Head>,
    task: &T,
    split: &T::Split,
    batch_size: usize,
    device: &Device,
    spent: Spent<'_>,
) -> Result<(T::Metrics, RunCost)> {
    let Spent {
        options: cost,
        meter,
        started,
        mut phases,
    } = spent;
    let lengths = T::lengths(split);
    let flops = FlopCount {
        eval: eval_flops(&model.body, task, &lengths, batch_size, 0),
        ..FlopCount::default()
    };
    let outputs = predict(model, task, split, batch_size, None, device);
    phases.eval = started.elapsed().as_secs_f64() - phases.data;
    let metrics = task.metrics(split, &outputs);
    let cost = RunCost::new(
        cost,
        started.elapsed().as_secs_f64(),
        phases,
        flops,
        cost.peak(device)?,
        meter.stop(),
        0.0,
    )?;
    Ok((metrics, cost))
}

/// The model of `path`: a run directory's exported `model/`, else `path` itself.
pub fn exported_model(path: &Path) -> PathBuf {
    if path.join("model").join("config.json").exists() {
        path.join("model")
    } else {
        path.to_path_buf()
    }
}

/// A trained classifier's checkpoint must hold every parameter, head included.
pub fn require_complete(report: &crate::models::params::LoadReport, dir: &Path) -> Result<()> {
    if let Some(k) = report.missing.iter().chain(&report.new_head).next() {
        bail!(
            "{}: the checkpoint lacks `{k}`: it is damaged or not a classifier of this config",
            dir.display()
        );
    }
    Ok(())
}

/// `dir` may be a run directory (its `model/` is used) or an HF directory.
pub fn load_classifier(dir: &Path, device: &Device) -> Result<LoadedClassifier> {
    let dir = exported_model(dir);
    let config_path = dir.join("config.json");
    let body = Bert::from_config_file(&config_path, device)?;
    let raw: serde_json::Value = read_json(&config_path)?;
    let labels = labels_from_config(&raw, &config_path.display().to_string())?;
    let tokenizer = TextTokenizer::from_dir(&dir)?;
    let task = TextClassification {
        labels: labels.clone(),
        pad_id: tokenizer.pad_id,
    };
    let checkpoint = Checkpoint::load(&dir)?;
    if !checkpoint.tensors.contains_key("classifier.weight") {
        bail!(
            "{} has no classifier weights (classifier.weight): it is a base model, not one trained with `headstart train`",
            dir.display()
        );
    }
    let head = task.new_head(&body, device);
    let (model, report) =
        state::load(TaskModel { body, head }, Source::Pretrained(&checkpoint), 0)?;
    require_complete(&report, &dir)?;
    let meta = read_json(&dir.join("headstart.json")).ok();
    Ok(LoadedClassifier {
        model,
        task,
        labels,
        tokenizer,
        meta,
        dir,
    })
}

/// A classifier for `eval` and `predict`: as [`load_classifier`], or for a
/// PEFT adapter directory (`adapter_config.json`, task `SEQ_CLS`) its base
/// (`base`, else the adapter's `base_model_name_or_path`) with the adapter
/// and its saved head (`modules_to_save`) attached. Label names come from
/// the base's `config.json` when it has as many as the head has rows,
/// else they are `LABEL_0`, `LABEL_1`, ... (PEFT's adapter files name none).
pub fn load_classifier_with_base(
    dir: &Path,
    base: Option<&str>,
    device: &Device,
) -> Result<LoadedClassifier> {
    use crate::models::lora::peft::{self, PeftAdapter};
    if !peft::is_adapter_dir(dir) || dir.join("config.json").is_file() {
        if base.is_some() {
            bail!(
                "--base goes with a PEFT adapter directory (one with {}), and {} is not one",
                peft::CONFIG_FILE,
                dir.display()
            );
        }
        return load_classifier(dir, device);
    }
    let adapter = PeftAdapter::read(dir)?;
    let config_file = dir.join(peft::CONFIG_FILE);
    if let Some(t) = adapter.task_type.as_deref()
        && t != "SEQ_CLS"
    {
        bail!(
            "{}: task_type is {t}: a text classifier's adapter is SEQ_CLS",
            config_file.display()
        );
    }
    let base_dir = adapter.resolve_base(base)?;
    let config_path = base_dir.join("config.json");
    let body = Bert::from_config_file(&config_path, device)?;
    let raw: serde_json::Value = read_json(&config_path)?;
    let checkpoint = Checkpoint::load(&base_dir)?;
    let rows = adapter
        .tensors
        .get("classifier.weight")
        .or_else(|| checkpoint.tensors.get("classifier.weight"))
        .map(|t| t.shape[0])
        .with_context(|| {
            format!(
                "neither {} (modules_to_save) nor the base {} has a classifier                  (classifier.weight): give the adapter of a text classifier",
                dir.display(),
                base_dir.display()
            )
        })?;
    let labels = match labels_from_config(&raw, &config_path.display().to_string()) {
        Ok(l) if l.len() == rows => l,
        _ => LabelMap {
            labels: (0..rows).map(|i| format!("LABEL_{i}")).collect(),
        },
    };
    let tokenizer = TextTokenizer::from_dir(&base_dir)?;
    let task = TextClassification {
        labels: labels.clone(),
        pad_id: tokenizer.pad_id,
    };
    let head = task.new_head(&body, device);
    let (model, report) =
        state::load(TaskModel { body, head }, Source::Pretrained(&checkpoint), 0)?;
    if let Some(k) = report.missing.first() {
        bail!(
            "{}: the checkpoint lacks `{k}`: it is damaged or not a model of this config",
            base_dir.display()
        );
    }
    if !report.new_head.is_empty() && !adapter.tensors.contains_key("classifier.weight") {
        bail!(
            "{}: the adapter saves no classifier (modules_to_save) and the base {} has none for              its labels: give the adapter of a text classifier",
            config_file.display(),
            base_dir.display()
        );
    }
    let model = adapter.attach(model)?.merge_lora();
    Ok(LoadedClassifier {
        model,
        task,
        labels,
        tokenizer,
        meta: None,
        dir: dir.to_path_buf(),
    })
}

impl LoadedClassifier {
    /// The length texts are truncated to: what the model was trained with,
    /// at most the model's positions.
    pub fn max_length(&self) -> usize {
        self.meta
            .as_ref()
            .map_or(128, |m| m.max_length)
            .min(self.model.body.max_positions())
    }

    /// Logits `[batch, labels]` of a padded batch, in inference mode.
    pub fn forward(&self, input: &crate::models::bert::BertInput) -> burn::tensor::Tensor<2> {
        let model = self.model.valid();
        model.head.forward(model.features(input.flow(), 0))
    }

    /// Logits of each text, in order.
    pub fn logits(
        &mut self,
        texts: &[&str],
        batch_size: usize,
        device: &Device,
    ) -> Result<Vec<Vec<f32>>> {
        let max_length = self.max_length();
        let items = self.tokenizer.encode_each(texts, max_length)?;
        let split = crate::tasks::classification::TextSplit {
            labels: vec![0; items.len()],
            items,
        };
        Ok(predict(
            &self.model,
            &self.task,
            &split,
            batch_size,
            None,
            device,
        ))
    }

    /// Metrics on labelled examples; an unknown label is an error naming its line.
    pub fn evaluate(
        &mut self,
        examples: &[Example],
        file: &str,
        batch_size: usize,
        device: &Device,
    ) -> Result<Metrics> {
        let cost = CostOptions::default();
        Ok(self
            .evaluate_with_cost(examples, file, batch_size, device, &cost)?
            .0)
    }

    /// [`LoadedClassifier::evaluate`] with what it cost: time, forward FLOPs
    /// (batches of similar length, as evaluated), energy, CO2 and money.
    pub fn evaluate_with_cost(
        &mut self,
        examples: &[Example],
        file: &str,
        batch_size: usize,
        device: &Device,
        cost: &CostOptions,
    ) -> Result<(Metrics, RunCost)> {
        let meter = cost.start_meter(device)?;
        let started = Instant::now();
        let mut phases = Phases::default();
        let max_length = self.max_length();
        let split = self
            .task
            .split(&mut self.tokenizer, examples, file, max_length)
            .with_context(|| format!("evaluating on {file}"))?;
        phases.data = started.elapsed().as_secs_f64();
        costed_eval(
            &self.model,
            &self.task,
            &split,
            batch_size,
            device,
            Spent {
                options: cost,
                meter,
                started,
                phases,
            },
        )
    }
}
