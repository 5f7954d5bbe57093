//! `headstart data captions-demo`: a captioning set built from real
//! Fashion-MNIST images, a stand-in for x-rays and their reports.
//!
//! No image-caption pairs ship in a package reachable here, so scenes are
//! composed: a 64 x 64 black canvas split into a 2 x 2 grid of 32-pixel
//! cells, two to four of the cells (a uniform choice of count, then of
//! cells) each holding one real 28 x 28 Fashion-MNIST image, shifted by 0-4
//! pixels in each direction inside its cell and composited by maximum (the
//! items are light on black). Training scenes draw their items from
//! Fashion-MNIST's official training part, test scenes from its test part,
//! so no item image is seen in both.
//!
//! Every scene has two reference captions from a small grammar that says
//! what is where, with cells named `top left`, `top right`, `bottom left`,
//! `bottom right` and items by [`PHRASES`]:
//!
//! - two items in a row: "A sneaker to the left of a bag at the top." /
//!   "A bag to the right of a sneaker, both at the top.";
//! - two in a column: "A dress above a coat on the left." / "A coat below
//!   a dress, both on the left.";
//! - two on a diagonal, or three or four items: each item with its cell, in
//!   reading order ("A shirt at the top left, a sandal at the top right and
//!   an ankle boot at the bottom left."), and the same list in reverse.
//!
//! The captions CSV has one row per caption (`image,caption,labels`; the
//! labels are the items' classes in reading order, `;`-separated), which is
//! the layout a user's own images and reports take. Everything is
//! determined by `--seed`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use super::images::{Image, ImageSet, Labelled, Sample};
use crate::models::params::SeededRng;

/// The canvas side in pixels, and the grid cell's.
pub const CANVAS: u32 = 64;
const CELL: u32 = 32;
/// How far an item may shift inside its cell.
const JITTER: u32 = 4;
/// The cells' names, in reading order.
pub const CELLS: [&str; 4] = ["top left", "top right", "bottom left", "bottom right"];
/// How the captions name Fashion-MNIST's classes, in label order.
pub const PHRASES: [&str; 10] = [
    "t-shirt",
    "pair of trousers",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

/// What to build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoOptions {
    pub train: usize,
    pub test: usize,
    pub seed: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            train: 1000,
            test: 500,
            seed: 13,
        }
    }
}

impl DemoOptions {
    /// The folder under `$HEADSTART_HOME/data` these options write.
    pub fn dir_name(&self) -> String {
        if *self == Self::default() {
            "captions-demo".into()
        } else {
            format!("captions-demo-{}-{}-s{}", self.train, self.test, self.seed)
        }
    }
}

/// One composed scene: which source images sit in which cells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scene {
    /// (cell, class, source index, x, y) per item, in reading order.
    pub items: Vec<Item>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    pub cell: usize,
    pub class: usize,
    pub source: usize,
    pub x: u32,
    pub y: u32,
}

/// `dataset.json`: the options, the counts and where the images came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoManifest {
    pub options: DemoOptions,
    pub source: String,
    pub canvas: u32,
    pub train_images: usize,
    pub test_images: usize,
    pub captions_per_image: usize,
    pub classes: Vec<String>,
    pub phrases: Vec<String>,
}

fn article(phrase: &str) -> String {
    let vowel = phrase.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {phrase}", if vowel { "an" } else { "a" })
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn listing(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The scene's two reference captions.
pub fn captions(scene: &Scene) -> [String; 2] {
    let name = |i: &Item| article(PHRASES[i.class]);
    let (first, second) = match scene.items.as_slice() {
        [a, b] if a.cell / 2 == b.cell / 2 => {
            let row = if a.cell < 2 { "top" } else { "bottom" };
            (
                format!("{} to the left of {} at the {row}.", name(a), name(b)),
                format!(
                    "{} to the right of {}, both at the {row}.",
                    name(b),
                    name(a)
                ),
            )
        }
        [a, b] if a.cell % 2 == b.cell % 2 => {
            let col = if a.cell % 2 == 0 { "left" } else { "right" };
            (
                format!("{} above {} on the {col}.", name(a), name(b)),
                format!("{} below {}, both on the {col}.", name(b), name(a)),
            )
        }
        items => {
            let parts: Vec<String> = items
                .iter()
                .map(|i| format!("{} at the {}", name(i), CELLS[i.cell]))
                .collect();
            let reversed: Vec<String> = parts.iter().rev().cloned().collect();
            (
                format!("{}.", listing(&parts)),
                format!("{}.", listing(&reversed)),
            )
        }
    };
    [capitalise(&first), capitalise(&second)]
}

/// The classes a caption names, in the order it names them: each class's
/// phrase as whole words (`shirt` is not found inside `t-shirt`).
pub fn named_classes(caption: &str) -> Vec<usize> {
    let words: Vec<String> = caption
        .to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '-'))
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect();
    let phrases: Vec<Vec<&str>> = PHRASES.iter().map(|p| p.split(' ').collect()).collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < words.len() {
        // the longest phrase first ("pair of trousers" before nothing shorter)
        let hit = phrases
            .iter()
            .enumerate()
            .filter(|(_, p)| starts_with_words(&words[i..], p))
            .max_by_key(|(_, p)| p.len());
        match hit {
            Some((class, p)) => {
                found.push(class);
                i += p.len();
            }
            None => i += 1,
        }
    }
    found
}

fn starts_with_words(words: &[String], phrase: &[&str]) -> bool {
    words.len() >= phrase.len() && words.iter().zip(phrase).all(|(w, p)| w == p)
}

/// Whether `caption` names exactly the classes of `labels` (as multisets).
pub fn names_the_labels(caption: &str, labels: &[usize]) -> bool {
    let mut named = named_classes(caption);
    let mut want = labels.to_vec();
    named.sort_unstable();
    want.sort_unstable();
    named == want
}

fn below(rng: &mut SeededRng, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

/// `count` scenes whose items come from `pool`.
pub fn compose(pool: &[Sample], count: usize, rng: &mut SeededRng) -> Vec<Scene> {
    (0..count)
        .map(|_| {
            let k = 2 + below(rng, 3);
            let mut cells = [0, 1, 2, 3];
            // a seeded Fisher-Yates shuffle, then the first k in reading order
            for i in (1..cells.len()).rev() {
                cells.swap(i, below(rng, i + 1));
            }
            let mut chosen = cells[..k].to_vec();
            chosen.sort_unstable();
            let items = chosen
                .into_iter()
                .map(|cell| {
                    let source = below(rng, pool.len());
                    Item {
                        cell,
                        class: pool[source].label,
                        source,
                        x: (cell as u32 % 2) * CELL + below(rng, JITTER as usize + 1) as u32,
                        y: (cell as u32 / 2) * CELL + below(rng, JITTER as usize + 1) as u32,
                    }
                })
                .collect();
            Scene { items }
        })
        .collect()
}

/// The scene's pixels, `CANVAS` x `CANVAS` grey.
pub fn render(scene: &Scene, pool: &[Sample]) -> Result<image::GrayImage> {
    let mut canvas = image::GrayImage::new(CANVAS, CANVAS);
    for item in &scene.items {
        let Image::Grey {
            width,
            height,
            pixels,
        } = &pool[item.source].image
        else {
            bail!("captions-demo takes grey source images");
        };
        for y in 0..*height {
            for x in 0..*width {
                let (cx, cy) = (item.x + x, item.y + y);
                if cx < CANVAS && cy < CANVAS {
                    let v = pixels[(y * width + x) as usize];
                    let p = canvas.get_pixel_mut(cx, cy);
                    p.0[0] = p.0[0].max(v);
                }
            }
        }
    }
    Ok(canvas)
}

/// What [`build`] wrote, or found already written.
#[derive(Clone, Debug)]
pub struct Demo {
    pub dir: PathBuf,
    pub manifest: DemoManifest,
    pub already_present: bool,
}

impl Demo {
    pub fn csv(&self, split: &str) -> PathBuf {
        self.dir.join(format!("{split}.csv"))
    }
}

/// Builds the set in `out` (default `$HEADSTART_HOME/data/<dir_name>`),
/// fetching Fashion-MNIST first if needed. A folder already holding the
/// same build is reused; one holding anything else is an error.
pub fn build(
    opts: &DemoOptions,
    out: Option<&Path>,
    home: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<Demo> {
    let dir = match out {
        Some(p) => p.to_path_buf(),
        None => home.join("data").join(opts.dir_name()),
    };
    if let Some(manifest) = existing(&dir, opts)? {
        return Ok(Demo {
            dir,
            manifest,
            already_present: true,
        });
    }
    let labelled = ImageSet::FashionMnist.load(home, log)?;
    let manifest = write(&labelled, opts, &dir)?;
    log(&format!(
        "captions-demo: {} training and {} test scenes in {}",
        opts.train,
        opts.test,
        dir.display()
    ));
    Ok(Demo {
        dir,
        manifest,
        already_present: false,
    })
}

/// The manifest of a finished build of `opts` in `dir`; an error when
/// `dir` holds something else.
fn existing(dir: &Path, opts: &DemoOptions) -> Result<Option<DemoManifest>> {
    if !dir.exists() {
        return Ok(None);
    }
    let path = dir.join("dataset.json");
    let found: Option<DemoManifest> = fs::read_to_string(&path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    match found {
        Some(m) if m.options == *opts => Ok(Some(m)),
        Some(m) => bail!(
            "{} holds a captions-demo built with {:?}, not {:?}; remove it or pass another --out",
            dir.display(),
            m.options,
            opts
        ),
        None => bail!(
            "{} exists and is not a finished captions-demo build (no readable {}); \
             remove it or pass another --out",
            dir.display(),
            path.display()
        ),
    }
}

/// Writes the scenes of `labelled` (Fashion-MNIST, with its test part) into
/// `dir` through a staging folder renamed into place at the end.
pub fn write(labelled: &Labelled, opts: &DemoOptions, dir: &Path) -> Result<DemoManifest> {
    ensure!(
        opts.train > 0 && opts.test > 0,
        "captions-demo needs at least one training and one test scene (--train, --test)"
    );
    let test_pool = labelled
        .test
        .as_deref()
        .context("captions-demo needs a source with a test part")?;
    ensure!(
        labelled.classes.len() == PHRASES.len() && !labelled.train.is_empty(),
        "captions-demo composes Fashion-MNIST's 10 classes"
    );
    ensure!(
        !dir.exists(),
        "{} exists; remove it or pass another --out",
        dir.display()
    );
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = dir
        .file_name()
        .with_context(|| format!("{} has no folder name", dir.display()))?
        .to_string_lossy();
    let staging = parent.join(format!(".staging-{name}@{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    let result = (|| -> Result<DemoManifest> {
        let mut rng_train = SeededRng::new(opts.seed);
        let mut rng_test = SeededRng::new(opts.seed ^ 0x5eed_7e57_0000_0001);
        for (split, pool, count, rng) in [
            (
                "train",
                labelled.train.as_slice(),
                opts.train,
                &mut rng_train,
            ),
            ("test", test_pool, opts.test, &mut rng_test),
        ] {
            let images = staging.join("images").join(split);
            fs::create_dir_all(&images)
                .with_context(|| format!("creating {}", images.display()))?;
            let mut csv = csv::Writer::from_writer(Vec::new());
            csv.write_record(["image", "caption", "labels"])?;
            for (i, scene) in compose(pool, count, rng).iter().enumerate() {
                let rel = format!("images/{split}/{i:05}.png");
                render(scene, pool)?
                    .save(staging.join(&rel))
                    .with_context(|| format!("writing {rel}"))?;
                let labels: Vec<&str> = scene
                    .items
                    .iter()
                    .map(|it| labelled.classes[it.class].as_str())
                    .collect();
                for caption in captions(scene) {
                    csv.write_record([rel.as_str(), &caption, &labels.join(";")])?;
                }
            }
            fs::write(staging.join(format!("{split}.csv")), csv.into_inner()?)
                .with_context(|| format!("writing {split}.csv"))?;
        }
        let manifest = DemoManifest {
            options: opts.clone(),
            source: "Fashion-MNIST (Debian dataset-fashion-mnist); scenes composed by \
                     headstart data captions-demo"
                .into(),
            canvas: CANVAS,
            train_images: opts.train,
            test_images: opts.test,
            captions_per_image: 2,
            classes: labelled.classes.clone(),
            phrases: PHRASES.map(String::from).to_vec(),
        };
        fs::write(
            staging.join("dataset.json"),
            serde_json::to_string_pretty(&manifest)? + "\n",
        )?;
        ensure!(
            !dir.exists(),
            "{} appeared while the set was being written; left it alone",
            dir.display()
        );
        fs::rename(&staging, dir)
            .with_context(|| format!("moving {} to {}", staging.display(), dir.display()))?;
        Ok(manifest)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

#[cfg(test)]
mod tests;
