//! A trained (or pretrained) image classifier for `eval`, `predict` and
//! `compare`: an exported run (`config.json` with `id2label` and the image
//! recipe, `model.safetensors`), a Hugging Face directory (`config.json`
//! with `id2label`, `preprocessor_config.json`), or a bare pretrained file
//! with its own classifier (torchvision's ImageNet MobileNetV2: 1000
//! ImageNet classes, named from the class list torchvision ships).

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
use crate::models::state::{self, Source};
use crate::models::vit::Vit;
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

/// The model of an image classifier, by family.
#[allow(clippy::large_enum_variant)] // one per loaded classifier
pub enum ImageModel {
    MobileNetV2(TaskModel<MobileNetV2, ClassificationHead>),
    Vit(TaskModel<Vit, ClassificationHead>),
}

impl ImageModel {
    /// Logits `[batch, labels]` of images `[batch, 3, side, side]` already preprocessed.
    pub fn forward(&self, pixels: burn::tensor::Tensor<4>) -> burn::tensor::Tensor<2> {
        let input = crate::models::Flow::Maps(pixels);
        match self {
            Self::MobileNetV2(m) => m.head.forward(m.features(input, 0)),
            Self::Vit(m) => m.head.forward(m.features(input, 0)),
        }
    }

    /// The logits of `split`'s images, in order.
    fn outputs(
        &self,
        task: &ImageClassification,
        split: &crate::tasks::image::ImageSplit,
        batch_size: usize,
        device: &Device,
    ) -> Vec<Vec<f32>> {
        match self {
            Self::MobileNetV2(m) => predict(m, task, split, batch_size, None, device),
            Self::Vit(m) => predict(m, task, split, batch_size, None, device),
        }
    }
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
    let checkpoint = Checkpoint::open(&dir)?;
    let config_path = dir.join("config.json");
    let labels = if dir.is_dir() {
        let raw: serde_json::Value = read_json(&config_path)?;
        labels_from_config(&raw, &config_path.display().to_string())?
    } else {
        let head = ["classifier.1.weight", "classifier.weight"];
        let classes = head
            .iter()
            .find_map(|k| checkpoint.tensors.get(*k))
            .map(|t| t.shape[0])
            .with_context(|| format!("{} has no classifier ({}): a base network cannot predict labels; train one with `headstart train --task image-classification`", dir.display(), head.join(" or ")))?;
        let names: Vec<String> = IMAGENET_CLASSES.lines().map(str::to_string).collect();
        let labels = if classes == names.len() {
            names
        } else {
            (0..classes).map(|i| i.to_string()).collect()
        };
        LabelMap { labels }
    };
    let task = ImageClassification {
        labels,
        recipe: Recipe::for_model(&dir, &family, None)?,
        seed: 0,
    };
    let model = match family.as_str() {
        "mobilenet_v2" => {
            ImageModel::MobileNetV2(load_as::<MobileNetV2>(&task, &dir, &checkpoint, device)?)
        }
        "vit" => ImageModel::Vit(load_as::<Vit>(&task, &dir, &checkpoint, device)?),
        other => bail!(
            "{} is a `{other}` model, not an image classifier this build implements ({})",
            dir.display(),
            crate::models::IMAGE_FAMILIES.join(", ")
        ),
    };
    Ok(ImageClassifier {
        model,
        task,
        source: dir,
    })
}

/// The classifier of family `A` in `dir` (a directory or a bare file),
/// every parameter from `checkpoint`.
fn load_as<A: Architecture>(
    task: &ImageClassification,
    dir: &Path,
    checkpoint: &Checkpoint,
    device: &Device,
) -> Result<TaskModel<A, ClassificationHead>> {
    let body = task.adapt_body(A::from_config_file(&dir.join("config.json"), device)?);
    let head = task.new_head(&body, device);
    let (model, report) = state::load(TaskModel { body, head }, Source::Pretrained(checkpoint), 0)?;
    super::eval::require_complete(&report, dir)?;
    Ok(model.valid())
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
        Ok(self.model.outputs(&self.task, &split, batch_size, device))
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
        let outputs = self.model.outputs(&self.task, &split, batch_size, device);
        Ok(self.task.metrics(&split, &outputs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Strategy;
    use crate::train::{Quiet, TrainConfig, train};

    /// Two classes of striped 32 x 32 images, six each.
    fn image_folder(root: &Path, side: u32) {
        for (c, class) in ["rows", "columns"].iter().enumerate() {
            let dir = root.join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..6u32 {
                let img = image::RgbImage::from_fn(side, side, |x, y| {
                    let v = if c == 0 { y } else { x };
                    let on = (v / (2 + i % 3)) % 2 == 1;
                    image::Rgb(if on {
                        [220, 40 + 20 * i as u8, 30]
                    } else {
                        [20, 30, 200]
                    })
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }

    fn vit_fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vision/vit_random")
    }

    /// A ViT trained with its embeddings and first layer frozen (their
    /// output cached: every patch position), at the checkpoint's size and at
    /// 48 pixels (the position grid resampled), exports a directory that
    /// loads back with its processor and predicts.
    #[test]
    fn vit_trains_through_its_cache_exports_and_loads_back() {
        let work = tempfile::tempdir().unwrap();
        let data = work.path().join("images");
        image_folder(&data, 32);
        let device = Device::default();
        for side in [None, Some(48)] {
            let out = work.path().join(format!("run{side:?}"));
            let config = TrainConfig {
                task: "image-classification".into(),
                model: vit_fixture().display().to_string(),
                strategy: Strategy::Freeze(1),
                train: Some(data.clone()),
                val_fraction: 0.34,
                image_size: side,
                batch_size: 4,
                epochs: Some(2),
                lr: Some(1e-3),
                out: Some(out.clone()),
                feature_cache: crate::train::cache::CacheMode::Memory,
                cache_dir: Some(work.path().join("cache")),
                ..TrainConfig::default()
            };
            let outcome = train(config, &device, &mut Quiet).unwrap();
            assert_eq!(outcome.caches.len(), 1, "one frozen boundary");
            assert_eq!(outcome.caches[0].boundary, 2);
            let model_dir = out.join("model");
            let hf: serde_json::Value = read_json(&model_dir.join("config.json")).unwrap();
            assert_eq!(hf["architectures"][0], "ViTForImageClassification");
            assert_eq!(hf["image_size"], side.unwrap_or(32));
            let processor: serde_json::Value =
                read_json(&model_dir.join("preprocessor_config.json")).unwrap();
            assert_eq!(processor["image_processor_type"], "ViTImageProcessor");
            assert_eq!(processor["size"]["height"], side.unwrap_or(32));
            assert_eq!(processor["image_mean"][0], 0.5);
            let weights = Checkpoint::open(&model_dir).unwrap();
            let grid = side.map_or(17, |s| (s / 8).pow(2) as usize + 1);
            assert_eq!(
                weights.tensors["vit.embeddings.position_embeddings"].shape,
                vec![1, grid, 64]
            );
            let loaded = load_image_classifier(&out, None, &device).unwrap();
            assert!(matches!(loaded.model, ImageModel::Vit(_)));
            assert_eq!(loaded.task.recipe.crop, side.unwrap_or(32));
            let images = vec![data.join("rows/0.png"), data.join("columns/1.png")];
            let p = loaded.predict(&images, 2, 4, &device).unwrap();
            assert_eq!(p.len(), 2);
            let total: f64 = p[0].top.iter().map(|(_, v)| v).sum();
            assert!((total - 1.0).abs() < 1e-5, "{total}");
        }
    }

    #[test]
    fn bare_vit_files_are_recognised_by_their_tensor_names() {
        let file = vit_fixture().join("model.safetensors");
        assert_eq!(super::super::family_of(&file, None).unwrap(), "vit");
        assert_eq!(
            super::super::family_of(&file, Some("ViT-B-16")).unwrap(),
            "vit"
        );
        let err = super::super::family_of(&file, Some("vit_x_99"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("vit_b_16"), "{err}");
    }
}
