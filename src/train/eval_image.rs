//! A trained (or pretrained) image classifier for `eval`, `predict` and
//! `compare`: an exported run (`config.json` with `id2label` and the image
//! recipe, `model.safetensors`), or a bare pretrained file with its own
//! classifier (torchvision's ImageNet MobileNetV2: 1000 ImageNet classes,
//! named from the class list torchvision ships).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::Serialize;

use super::checkpoint::read_json;
use super::eval::predict;
use crate::data::preprocess::{Augment, Recipe};
use crate::data::table::Example;
use crate::hub::Checkpoint;
use crate::models::state::{self, Source};
use crate::models::{Architecture, Flow, TaskModel};
use crate::tasks::Task;
use crate::tasks::classification::{LabelMap, Metrics, labels_from_config, softmax};
use crate::tasks::image::{ImageClassification, ImageSplit, load_split};

/// ImageNet-1k class names in index order (torchvision's list).
pub const IMAGENET_CLASSES: &str = include_str!("../models/data/imagenet_classes.txt");

/// A loaded image classifier.
pub struct ImageClassifier {
    /// The head's outputs for every image of a split (the family's
    /// model in inference mode, batched).
    run: RunFn,
    /// Logits of a preprocessed batch `[batch, 3, side, side]`.
    forward: Box<dyn Fn(Tensor<4>) -> Tensor<2>>,
    pub task: ImageClassification,
    pub source: PathBuf,
}

type RunFn = Box<dyn Fn(&ImageClassification, &ImageSplit, usize, &Device) -> Vec<Vec<f32>>>;

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
    crate::with_image_family!(family.as_str(), A => load_as::<A>(dir, device), else bail!(
        "{} is a `{family}` model, not an image classifier this build implements ({})",
        dir.display(),
        crate::models::vision::IMAGE_FAMILIES.join(", ")
    ))
}

fn load_as<A: Architecture + 'static>(dir: PathBuf, device: &Device) -> Result<ImageClassifier> {
    let checkpoint = Checkpoint::open(&dir)?;
    if dir.is_file() && !A::recognises(&checkpoint) {
        let first: Vec<&str> = checkpoint
            .tensors
            .keys()
            .take(5)
            .map(String::as_str)
            .collect();
        let hint = match crate::models::vision::family_of_checkpoint(&checkpoint) {
            Some(f) => format!("its tensors are a {f} checkpoint's: use --arch {f}"),
            None => "no image family recognises its tensor names".to_string(),
        };
        bail!(
            "{} is not a {} checkpoint in any naming headstart reads (its first keys are {first:?}); {hint}",
            dir.display(),
            A::MODEL_TYPE
        );
    }
    let config_path = dir.join("config.json");
    // built once: for a bare file this reads the weights' names and shapes
    let body = A::from_config_file(&config_path, device)?;
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
            None => A::recipe(&dir, None)?,
        };
        (labels, recipe)
    } else {
        let key = body.head_key("classifier.weight");
        let classes = checkpoint
            .tensors
            .get(&key)
            .map(|t| t.shape[0])
            .with_context(|| format!("{} has no classifier ({key}): a base network cannot predict labels; train one with `headstart train --task image-classification`", dir.display()))?;
        let names: Vec<String> = IMAGENET_CLASSES.lines().map(str::to_string).collect();
        let labels = if classes == names.len() {
            names
        } else {
            (0..classes).map(|i| i.to_string()).collect()
        };
        (LabelMap { labels }, A::recipe(&dir, None)?)
    };
    recipe.check()?;
    let task = ImageClassification {
        labels,
        recipe,
        seed: 0,
    };
    let body = task.adapt_body(body);
    let head = task.new_head(&body, device);
    let (model, report) =
        state::load(TaskModel { body, head }, Source::Pretrained(&checkpoint), 0)?;
    super::eval::require_complete(&report, &dir)?;
    let model = model.valid();
    let same = model.clone();
    Ok(ImageClassifier {
        run: Box::new(move |task, split, batch_size, device| {
            predict(&model, task, split, batch_size, None, device)
        }),
        forward: Box::new(move |x| same.head.forward(same.features(Flow::Maps(x), 0))),
        task,
        source: dir,
    })
}

impl ImageClassifier {
    /// Logits `[batch, labels]` of images already preprocessed with
    /// [`ImageClassifier::task`]'s recipe, `[batch, 3, side, side]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        (self.forward)(images)
    }

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
        Ok((self.run)(&self.task, &split, batch_size, device))
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
        let outputs = (self.run)(&self.task, &split, batch_size, device);
        Ok(self.task.metrics(&split, &outputs))
    }
}
