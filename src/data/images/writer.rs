//! Choosing the train/test samples of a set and writing them as an image
//! folder: `<split>/<class>/<index>.<ext>` (grey pixels as PNG, encoded
//! files as they are) and `<split>.csv` (`image,label`, image paths relative
//! to the folder, in source order).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result, ensure};
use image::ImageEncoder;
use image::codecs::png::PngEncoder;

use super::FetchOptions;
use super::sources::{Image, Labelled, Sample};
use crate::data::split::{seeded_subset, stratified_split_by};

/// The two parts of a set.
pub const SPLITS: [&str; 2] = ["train", "test"];

/// The samples of each split, in source order: the official split if the
/// set has one, else a seeded split stratified by class
/// (`opts.test_fraction` of each class to test); then at most
/// `opts.train_per_class` / `opts.test_per_class` per class, a seeded
/// choice.
pub fn choose<'a>(set: &'a Labelled, opts: &FetchOptions) -> [Vec<&'a Sample>; 2] {
    let all: Vec<&Sample> = set.train.iter().collect();
    let (train, test) = match &set.test {
        Some(test) => (all, test.iter().collect()),
        None => stratified_split_by(all, |s| s.label, opts.test_fraction, opts.seed),
    };
    let limit = |part: Vec<&'a Sample>, per_class: Option<usize>, salt: u64| match per_class {
        None => part,
        Some(n) => {
            let mut kept: Vec<&Sample> = (0..set.classes.len())
                .flat_map(|c| {
                    let of_class: Vec<&Sample> =
                        part.iter().copied().filter(|s| s.label == c).collect();
                    seeded_subset(&of_class, n, opts.seed ^ salt ^ ((c as u64) << 32))
                })
                .collect();
            kept.sort_by_key(|s| s.index);
            kept
        }
    };
    [
        limit(train, opts.train_per_class, 0x7EA1),
        limit(test, opts.test_per_class, 0x7E57),
    ]
}

/// Number of samples of each class in `samples`.
pub fn class_counts(samples: &[&Sample], classes: usize) -> Vec<usize> {
    let mut counts = vec![0; classes];
    for s in samples {
        counts[s.label] += 1;
    }
    counts
}

/// The path of a sample relative to the folder, with `/`.
pub fn relative_path(split: &str, class: &str, sample: &Sample) -> String {
    format!("{split}/{class}/{}.{}", sample.index, sample.image.ext())
}

/// Writes `parts` (train, test; see [`choose`]) of a set with class names
/// `classes` into the existing, empty directory `dir`, on up to `threads`
/// threads. Every class must have at least one sample in each part.
pub fn write_folder(
    dir: &Path,
    classes: &[String],
    parts: &[Vec<&Sample>; 2],
    threads: usize,
) -> Result<()> {
    for (split, part) in SPLITS.iter().zip(parts) {
        let counts = class_counts(part, classes.len());
        for (class, &n) in classes.iter().zip(&counts) {
            ensure!(
                n > 0,
                "class {class} has no {split} images with these options; use a larger \
                 per-class limit or test fraction"
            );
            let d = dir.join(split).join(class);
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        write_images(dir, split, classes, part, threads)?;
        crate::fsutil::write_atomic(&dir.join(format!("{split}.csv")), |w| {
            let mut csv = csv::Writer::from_writer(w);
            csv.write_record(["image", "label"])?;
            for s in part {
                let class = &classes[s.label];
                csv.write_record([relative_path(split, class, s).as_str(), class])?;
            }
            csv.flush()?;
            Ok(())
        })?;
    }
    Ok(())
}

fn write_images(
    dir: &Path,
    split: &str,
    classes: &[String],
    samples: &[&Sample],
    threads: usize,
) -> Result<()> {
    let threads = threads.clamp(1, 16);
    let chunk = samples.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = samples
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || -> Result<()> {
                    for s in part {
                        let path = dir.join(relative_path(split, &classes[s.label], s));
                        write_image(&path, &s.image)
                            .with_context(|| format!("writing {}", path.display()))?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("an image writer panicked"))
    })
}

fn write_image(path: &Path, image: &Image) -> Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    match image {
        Image::Grey {
            width,
            height,
            pixels,
        } => PngEncoder::new(&mut out).write_image(
            pixels,
            *width,
            *height,
            image::ExtendedColorType::L8,
        )?,
        Image::File { bytes, .. } => out.write_all(bytes)?,
    }
    out.flush()?;
    Ok(())
}
