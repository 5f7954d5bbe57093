//! Image classification: labelled images decoded once, preprocessed per
//! batch (the recipe's evaluation transform, or a seeded augmentation of
//! the training split), a dropout + linear head on the body's pooled
//! features, cross-entropy, and the same metrics as text classification.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::Task;
use super::classification::{
    ClassificationHead, LabelMap, MetricName, Metrics, cross_entropy, label_targets,
};
use crate::data::preprocess::{Augment, Recipe, Stored, decode_bytes};
use crate::data::table::Example;
use crate::models::params::SeededRng;
use crate::models::{Architecture, Flow};
use crate::train::cache::KeyHasher;

/// What a run records about its images (`config.json`'s task state).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageTaskState {
    pub labels: LabelMap,
    pub recipe: Recipe,
}

/// Decoded images with their label ids.
pub struct ImageSplit {
    pub images: Vec<Stored>,
    pub labels: Vec<usize>,
    /// Source files, in order (messages and cache keys).
    pub files: Vec<PathBuf>,
    /// SHA-256 of each file's bytes, for cache keys.
    pub digests: Vec<[u8; 32]>,
    /// Augment this split's batches (the training split only).
    pub augment: Augment,
    /// The epoch whose augmentation draws batches take.
    epoch: AtomicUsize,
}

/// Single-label image classification.
#[derive(Clone)]
pub struct ImageClassification {
    pub labels: LabelMap,
    pub recipe: Recipe,
    /// Seed of the augmentation draws.
    pub seed: u64,
}

/// Decodes the images of `examples` (in parallel); a file that will not
/// decode is an error naming it, or skipped and counted with `skip_bad`.
/// Returns the split and the number skipped.
pub fn load_split(
    task: &ImageClassification,
    examples: &[Example],
    file: &str,
    augment: Augment,
    skip_bad: bool,
) -> Result<(ImageSplit, usize)> {
    let ids = task.labels.ids(examples, file)?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(examples.len().max(1));
    let per = examples.len().div_ceil(threads.max(1)).max(1);
    let decoded: Vec<Result<(Stored, [u8; 32])>> = std::thread::scope(|s| {
        let handles: Vec<_> = examples
            .chunks(per)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|e| {
                            let path = Path::new(&e.text);
                            let bytes = std::fs::read(path)
                                .with_context(|| format!("cannot read image {}", path.display()))?;
                            let digest: [u8; 32] =
                                <sha2::Sha256 as sha2::Digest>::digest(&bytes).into();
                            let img = decode_bytes(&bytes, path)?;
                            Ok((Stored::new(img, &task.recipe), digest))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("image decoding thread panicked"))
            .collect()
    });
    let mut split = ImageSplit {
        images: Vec::new(),
        labels: Vec::new(),
        files: Vec::new(),
        digests: Vec::new(),
        augment,
        epoch: AtomicUsize::new(0),
    };
    let mut skipped = 0;
    for ((r, e), id) in decoded.into_iter().zip(examples).zip(ids) {
        match r {
            Ok((img, digest)) => {
                split.images.push(img);
                split.labels.push(id);
                split.files.push(PathBuf::from(&e.text));
                split.digests.push(digest);
            }
            Err(err) if skip_bad => {
                skipped += 1;
                let _ = err;
            }
            Err(err) => {
                return Err(err.context(format!(
                    "{file}: example {} (pass --skip-bad-rows to skip images that do not decode)",
                    e.line
                )));
            }
        }
    }
    Ok((split, skipped))
}

impl ImageSplit {
    /// A split of decoded images (benchmarks, tests).
    pub fn from_images(images: Vec<image::RgbImage>, labels: Vec<usize>, recipe: &Recipe) -> Self {
        let n = images.len();
        Self {
            images: images.into_iter().map(|i| Stored::new(i, recipe)).collect(),
            labels,
            files: vec![PathBuf::new(); n],
            digests: vec![[0; 32]; n],
            augment: Augment::None,
            epoch: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}

impl ImageClassification {
    /// The batch `idx` as `[batch, 3, crop, crop]`.
    pub fn pixels(&self, split: &ImageSplit, idx: &[usize], device: &Device) -> Tensor<4> {
        let c = self.recipe.crop as usize;
        let per = 3 * c * c;
        let mut x = vec![0f32; idx.len() * per];
        let epoch = split.epoch.load(Ordering::Relaxed) as u64;
        for (row, &i) in idx.iter().enumerate() {
            let out = &mut x[row * per..(row + 1) * per];
            if split.augment == Augment::None {
                split.images[i].write(&self.recipe, None, out);
            } else {
                // one stream per (seed, epoch, example): batches and resumes draw alike
                let mut rng = SeededRng::new(
                    self.seed
                        ^ epoch.wrapping_mul(0xA24B_AED4_963E_E407)
                        ^ (i as u64).wrapping_mul(0x9FB2_1C65_1E98_DF25),
                );
                split.images[i].write(&self.recipe, Some((split.augment, &mut rng)), out);
            }
        }
        Tensor::from_data(TensorData::new(x, [idx.len(), 3, c, c]), device)
    }
}

impl Task for ImageClassification {
    const NAME: &'static str = "image-classification";
    const HF_SUFFIX: &'static str = "ForImageClassification";
    type Head = ClassificationHead;
    type Split = ImageSplit;
    type Targets = Tensor<1, Int>;
    type Metrics = Metrics;

    fn new_head<A: Architecture>(&self, body: &A, device: &Device) -> ClassificationHead {
        self.labels.new_head(body, device)
    }

    fn lengths(split: &ImageSplit) -> Vec<usize> {
        vec![1; split.len()]
    }

    fn input(&self, split: &ImageSplit, idx: &[usize], device: &Device) -> Flow {
        Flow::Maps(self.pixels(split, idx, device))
    }

    fn targets(&self, split: &ImageSplit, idx: &[usize], device: &Device) -> Tensor<1, Int> {
        label_targets(&split.labels, idx, device)
    }

    fn hash_inputs(&self, split: &ImageSplit, key: &mut KeyHasher) {
        key.field(
            "pixels",
            crate::data::preprocess::PIXELS_REVISION.as_bytes(),
        );
        key.field(
            "recipe",
            serde_json::to_string(&self.recipe)
                .unwrap_or_default()
                .as_bytes(),
        );
        let bytes: Vec<u8> = split.digests.iter().flatten().copied().collect();
        key.field("images", &bytes);
    }

    fn loss(
        &self,
        head: &ClassificationHead,
        features: Flow,
        targets: Tensor<1, Int>,
    ) -> Tensor<1> {
        cross_entropy(head.forward(features), targets)
    }

    fn outputs(
        &self,
        head: &ClassificationHead,
        features: Flow,
        _split: &ImageSplit,
        _idx: &[usize],
    ) -> Vec<Vec<f32>> {
        head.logit_rows(features)
    }

    fn metrics(&self, split: &ImageSplit, outputs: &[Vec<f32>]) -> Metrics {
        self.labels.metrics(&split.labels, outputs)
    }

    fn score(m: &Metrics, name: MetricName) -> f64 {
        m.score(name)
    }

    fn loss_of(m: &Metrics) -> f64 {
        m.loss
    }

    fn describe(m: &Metrics) -> String {
        format!(
            "accuracy {:.4}, macro-F1 {:.4}, loss {:.4}",
            m.accuracy, m.macro_f1, m.loss
        )
    }

    fn head_flops<A: Architecture>(&self, body: &A, batch: usize) -> f64 {
        self.labels.head_flops(body, batch)
    }

    fn export_config(&self, obj: &mut serde_json::Map<String, serde_json::Value>) -> Result<()> {
        self.labels.export_config(obj);
        obj.insert("num_labels".into(), serde_json::json!(self.labels.len()));
        obj.insert("preprocessing".into(), serde_json::to_value(&self.recipe)?);
        Ok(())
    }

    /// The recipe as a Hugging Face image processor, so that transformers
    /// preprocesses images as the model was trained.
    fn export_files(&self) -> Vec<(&'static str, serde_json::Value)> {
        // Hugging Face image processors feed RGB: a BGR (Caffe) recipe has
        // no such file, and `preprocessing` in config.json says it all.
        if self.recipe.channels == crate::data::preprocess::ChannelOrder::Bgr {
            return Vec::new();
        }
        vec![("preprocessor_config.json", self.recipe.to_preprocessor())]
    }

    fn adapt_body<A: Architecture>(&self, body: A) -> A {
        body.with_image_size(self.recipe.crop as usize)
    }

    fn start_epoch(&self, split: &ImageSplit, epoch: usize) {
        split.epoch.store(epoch, Ordering::Relaxed);
    }

    fn augmented(&self, split: &ImageSplit) -> bool {
        split.augment != Augment::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::classification::LabelMap;

    #[test]
    fn a_test_label_absent_from_training_is_an_error_naming_file_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boot.png");
        image::RgbImage::new(4, 4).save(&path).unwrap();
        let task = ImageClassification {
            labels: LabelMap {
                labels: vec!["coat".into(), "shirt".into()],
            },
            recipe: Recipe::imagenet(4),
            seed: 0,
        };
        let examples = vec![Example {
            text: path.display().to_string(),
            label: "boot".into(),
            line: 7,
        }];
        let err = match load_split(&task, &examples, "test.csv", Augment::None, false) {
            Ok(_) => panic!("an unknown label was accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains("test.csv line 7") && err.contains("`boot`"),
            "{err}"
        );
    }
}
