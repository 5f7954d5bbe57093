//! A trained (or pretrained) image classifier for `eval`, `predict` and
//! `compare`: an exported run (`config.json` with `id2label` and the image
//! recipe, `model.safetensors`), or a bare pretrained file with its own
//! classifier (torchvision's ImageNet MobileNetV2 or ResNet: 1000 ImageNet
//! classes, named from the class list torchvision ships).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::Device;
use serde::Serialize;

use super::checkpoint::read_json;
use super::eval::predict;
use crate::data::preprocess::{Augment, Recipe};
use crate::data::table::Example;
use crate::hub::Checkpoint;
use crate::models::mobilenet_v2::MobileNetV2;
use crate::models::resnet::ResNet;
use crate::models::state::{self, Source};
use crate::models::{Architecture, TaskModel};
use crate::tasks::Task;
use crate::tasks::classification::{
    ClassificationHead, LabelMap, Metrics, labels_from_config, softmax,
};
use crate::tasks::image::{ImageClassification, load_split};

/// ImageNet-1k class names in index order (torchvision's list).
pub const IMAGENET_CLASSES: &str = include_str!("../models/data/imagenet_classes.txt");

/// A loaded image classifier.
pub struct ImageClassifier {
    pub model: ImageModel,
    pub task: ImageClassification,
    pub source: PathBuf,
}

/// A classifier of one of the image families.
#[allow(clippy::large_enum_variant)] // one per loaded classifier, never stored in bulk
pub enum ImageModel {
    MobileNetV2(TaskModel<MobileNetV2, ClassificationHead>),
    ResNet(TaskModel<ResNet, ClassificationHead>),
}

/// Runs `$body` with `$m` bound to the family's model.
macro_rules! with_model {
    ($model:expr, $m:ident => $body:expr) => {
        match $model {
            ImageModel::MobileNetV2($m) => $body,
            ImageModel::ResNet($m) => $body,
        }
    };
}

/// One image's prediction.
#[derive(Clone, Debug, Serialize)]
pub struct ImagePrediction {
    pub image: String,
    pub label: String,
    pub probability: f64,
    pub top: Vec<(String, f64)>,
}

/// Loads `model`: a run directory (its `model/`), an exported directory,
/// or a bare weights file of family `arch` whose classifier is ImageNet's.
pub fn load_image_classifier(
    model: &Path,
    arch: Option<&str>,
    device: &Device,
) -> Result<ImageClassifier> {
    let dir = super::eval::exported_model(model);
    let family = super::family_of(&dir, arch)?;
    match family.as_str() {
        "mobilenet_v2" => {
            let (model, task) = load_family::<MobileNetV2>(&dir, device)?;
            Ok(ImageClassifier {
                model: ImageModel::MobileNetV2(model),
                task,
                source: dir,
            })
        }
        "resnet" => {
            let (model, task) = load_family::<ResNet>(&dir, device)?;
            Ok(ImageClassifier {
                model: ImageModel::ResNet(model),
                task,
                source: dir,
            })
        }
        _ => bail!(
            "{} is a `{family}` model, not an image classifier this build implements ({})",
            dir.display(),
            super::IMAGE_FAMILIES.join(", ")
        ),
    }
}

/// The classifier of family `A` in `dir` (a directory or a bare file).
fn load_family<A: Architecture>(
    dir: &Path,
    device: &Device,
) -> Result<(TaskModel<A, ClassificationHead>, ImageClassification)> {
    let checkpoint = Checkpoint::open(dir)?;
    let config_path = dir.join("config.json");
    let (labels, recipe) = if dir.is_dir() {
        let raw: serde_json::Value = read_json(&config_path)?;
        let labels = labels_from_config(&raw, &config_path.display().to_string())?;
        let recipe: Recipe = match raw.get("preprocessing") {
            Some(r) => serde_json::from_value(r.clone()).with_context(|| {
                format!(
                    "{}: `preprocessing` is not an image recipe",
                    config_path.display()
                )
            })?,
            None => Recipe::imagenet(224),
        };
        (labels, recipe)
    } else {
        let body = A::from_config_file(&config_path, device)?;
        let key = state::key_of(&body, "head.classifier.weight", "Linear", "weight");
        let classes = std::iter::once(&key.key)
            .chain(&key.renamings)
            .find_map(|k| checkpoint.tensors.get(k))
            .map(|t| t.shape[0])
            .with_context(|| format!("{} has no classifier ({}): a base network cannot predict labels; train one with `headstart train --task image-classification`", dir.display(), key.key))?;
        let names: Vec<String> = IMAGENET_CLASSES.lines().map(str::to_string).collect();
        let labels = if classes == names.len() {
            names
        } else {
            (0..classes).map(|i| i.to_string()).collect()
        };
        (LabelMap { labels }, Recipe::imagenet(224))
    };
    recipe.check()?;
    let task = ImageClassification {
        labels,
        recipe,
        seed: 0,
    };
    let body = task.adapt_body(A::from_config_file(&config_path, device)?);
    let head = task.new_head(&body, device);
    let (model, report) =
        state::load(TaskModel { body, head }, Source::Pretrained(&checkpoint), 0)?;
    super::eval::require_complete(&report, dir)?;
    Ok((model.valid(), task))
}

impl ImageClassifier {
    /// Logits of each image, in order; an image that will not decode is an error naming it.
    pub fn logits(
        &self,
        images: &[PathBuf],
        batch_size: usize,
        device: &Device,
    ) -> Result<Vec<Vec<f32>>> {
        let examples: Vec<Example> = images
            .iter()
            .enumerate()
            .map(|(i, p)| Example {
                text: p.display().to_string(),
                label: self.task.labels.labels[0].clone(),
                line: i + 1,
            })
            .collect();
        let (split, _) = load_split(&self.task, &examples, "the images", Augment::None, false)?;
        Ok(with_model!(&self.model, m => predict(
            m,
            &self.task,
            &split,
            batch_size,
            None,
            device,
        )))
    }

    /// The `top_k` most likely labels of each image.
    pub fn predict(
        &self,
        images: &[PathBuf],
        top_k: usize,
        batch_size: usize,
        device: &Device,
    ) -> Result<Vec<ImagePrediction>> {
        let logits = self.logits(images, batch_size, device)?;
        Ok(images
            .iter()
            .zip(logits)
            .map(|(p, l)| {
                let probs = softmax(&l);
                let mut order: Vec<usize> = (0..probs.len()).collect();
                order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
                let top: Vec<(String, f64)> = order
                    .iter()
                    .take(top_k.max(1))
                    .map(|&i| (self.task.labels.labels[i].clone(), probs[i]))
                    .collect();
                ImagePrediction {
                    image: p.display().to_string(),
                    label: top[0].0.clone(),
                    probability: top[0].1,
                    top,
                }
            })
            .collect())
    }

    /// Metrics on labelled images; a label the model does not know is an error naming it.
    pub fn evaluate(
        &self,
        examples: &[Example],
        file: &str,
        batch_size: usize,
        device: &Device,
    ) -> Result<Metrics> {
        let (split, _) = load_split(&self.task, examples, file, Augment::None, false)?;
        let outputs =
            with_model!(&self.model, m => predict(m, &self.task, &split, batch_size, None, device));
        Ok(self.task.metrics(&split, &outputs))
    }
}
