//! `compare --task captioning`: the held-out caption table (a seeded subset
//! of its images with `--test-limit`), each run's captioner tested on it,
//! and sample captions of a few held-out images by each pair of strategies
//! beside the image (copied under `samples/` for the report).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;

use super::{CompareOptions, RunRecord, Sample};
use crate::data::captions::{self, CaptionSet};
use crate::data::split::epoch_order;
use crate::fsutil::write_atomic;
use crate::tasks::captioning::CaptionMetrics;
use crate::train::TrainConfig;
use crate::train::eval_caption::load_captioner;

/// The held-out captioned images a comparison tests on.
pub struct CaptionTest {
    /// The table tested on (the subset written by [`test_set`], if limited).
    pub path: PathBuf,
    pub set: CaptionSet,
    /// Captioned images of the training table.
    pub train_images: usize,
}

/// Reads `--test` (required: captions are not split off the training
/// table, whose images may share scenes) and applies `--test-limit`.
pub fn test_set(
    base: &TrainConfig,
    opts: &CompareOptions,
    train: &Path,
    out: &Path,
) -> Result<CaptionTest> {
    let Some(test) = &opts.test else {
        bail!(
            "compare --task captioning needs --test TABLE: held-out images with their captions \
             (headstart data captions-demo writes train.csv and test.csv)"
        );
    };
    let read = |p: &Path| {
        captions::read(
            p,
            &base.image_column,
            &base.captioning.caption_column,
            base.skip_bad_rows,
        )
    };
    let train_images = read(train)?.images.len();
    let mut set = read(test)?;
    let mut path = test.clone();
    if let Some(k) = opts.test_limit
        && k < set.images.len()
    {
        let mut keep = epoch_order(set.images.len(), base.seed, 0)[..k].to_vec();
        keep.sort_unstable();
        set.images = keep.iter().map(|&i| set.images[i].clone()).collect();
        set.rows = set.images.iter().map(|i| i.captions.len()).sum();
        path = out.join("data").join("test-subset.csv");
        write_table(
            &path,
            &set,
            &base.image_column,
            &base.captioning.caption_column,
        )?;
    }
    Ok(CaptionTest {
        path,
        set,
        train_images,
    })
}

/// Writes `set` as a CSV caption table (absolute image paths).
fn write_table(path: &Path, set: &CaptionSet, image: &str, caption: &str) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    write_atomic(path, |w| {
        let mut csv = csv::Writer::from_writer(w);
        csv.write_record([image, caption])?;
        for img in &set.images {
            for c in &img.captions {
                csv.write_record([img.path.display().to_string().as_str(), c.as_str()])?;
            }
        }
        csv.flush()?;
        Ok(())
    })
}

/// The captioner exported at `model_dir` scored on the test set.
pub fn test(
    model_dir: &Path,
    t: &CaptionTest,
    base: &TrainConfig,
    device: &Device,
) -> Result<CaptionMetrics> {
    let captioner = load_captioner(model_dir, &Default::default(), device)?;
    let file = t.path.display().to_string();
    Ok(captioner
        .evaluate(&t.set, &file, base.batch_size, device, &base.cost)?
        .0)
}

/// `k` held-out images (spread over the test set) captioned by the first
/// seed of each pair at the largest training size; the images are copied
/// to `out/samples/` and each sample's `prompt` is that copy's path,
/// relative to `out`.
pub fn samples(
    runs: &[RunRecord],
    t: &CaptionTest,
    k: usize,
    out: &Path,
    device: &Device,
) -> Result<Vec<Sample>> {
    let n = t.set.images.len();
    let step = (n / k.max(1)).max(1);
    let chosen: Vec<&captions::CaptionedImage> =
        t.set.images.iter().step_by(step).take(k).collect();
    let dir = out.join("samples");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut samples = Vec::new();
    for (i, img) in chosen.iter().enumerate() {
        let ext = img
            .path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("png");
        let name = format!("samples/{}.{ext}", i + 1);
        let bytes = std::fs::read(&img.path)
            .with_context(|| format!("cannot read {}", img.path.display()))?;
        write_atomic(&out.join(&name), |w| Ok(w.write_all(&bytes)?))?;
        samples.push(Sample {
            prompt: name,
            reference: img.captions.join(" / "),
            outputs: Vec::new(),
        });
    }
    let files: Vec<PathBuf> = chosen.iter().map(|i| i.path.clone()).collect();
    let size = runs.iter().filter_map(|r| r.train_size).max();
    let mut seen = Vec::new();
    for r in runs.iter().filter(|r| r.train_size == size) {
        if seen.contains(&r.strategy) {
            continue;
        }
        seen.push(r.strategy);
        let captioner = load_captioner(&r.dir, &Default::default(), device)?;
        for (s, (_, caption)) in
            samples
                .iter_mut()
                .zip(captioner.predict(&files, files.len(), device)?)
        {
            s.outputs.push((r.strategy.to_string(), caption));
        }
    }
    Ok(samples)
}
