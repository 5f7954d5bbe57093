use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use super::deb::read_deb_files_from;
use super::sources::{self, Image, Labelled, Sample};
use super::*;

/// A tar of `(path, bytes)` regular files.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append_data(&mut h, path, *bytes).unwrap();
    }
    b.into_inner().unwrap()
}

fn xz(bytes: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// An `ar` archive of `(name, bytes)` members, as a `.deb` is.
fn ar_of(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = ar::Builder::new(Vec::new());
    for (name, bytes) in members {
        let h = ar::Header::new(name.as_bytes().to_vec(), bytes.len() as u64);
        b.append(&h, &bytes[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// A `.deb` whose data tarball (`data.tar.xz`) holds `files` under `./`.
fn deb_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let data: Vec<(String, &[u8])> = files.iter().map(|(p, b)| (format!("./{p}"), *b)).collect();
    let data: Vec<(&str, &[u8])> = data.iter().map(|(p, b)| (p.as_str(), *b)).collect();
    ar_of(&[
        ("debian-binary", b"2.0\n".to_vec()),
        (
            "control.tar.xz",
            xz(&tar_of(&[("./control", b"Package: x\n")])),
        ),
        ("data.tar.xz", xz(&tar_of(&data))),
    ])
}

#[test]
fn reads_files_from_a_deb() {
    let deb = deb_of(&[("usr/share/a.gz", b"alpha"), ("usr/share/doc/b", b"beta")]);
    let got = read_deb_files_from(&deb[..], &["usr/share/doc/b", "/usr/share/a.gz"]).unwrap();
    assert_eq!(got, [b"beta".to_vec(), b"alpha".to_vec()]);

    let err = read_deb_files_from(&deb[..], &["usr/share/a.gz", "usr/missing"]).unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("lacks usr/missing"), "{err}");

    // gzip and uncompressed data tarballs too; zstd is a clear error.
    let tarball = tar_of(&[("./f", b"x")]);
    for (name, bytes) in [("data.tar.gz", gz(&tarball)), ("data.tar", tarball.clone())] {
        let deb = ar_of(&[("debian-binary", b"2.0\n".to_vec()), (name, bytes)]);
        assert_eq!(
            read_deb_files_from(&deb[..], &["f"]).unwrap(),
            [b"x".to_vec()]
        );
    }
    let deb = ar_of(&[
        ("debian-binary", b"2.0\n".to_vec()),
        ("data.tar.zst", vec![0; 8]),
    ]);
    let err = format!("{:#}", read_deb_files_from(&deb[..], &["f"]).unwrap_err());
    assert!(err.contains("data.tar.zst"), "{err}");

    let not_deb = ar_of(&[("hello.o", vec![1, 2])]);
    let err = format!(
        "{:#}",
        read_deb_files_from(&not_deb[..], &["f"]).unwrap_err()
    );
    assert!(err.contains("not a Debian package"), "{err}");
    let err = format!(
        "{:#}",
        read_deb_files_from(&b"garbage"[..], &["f"]).unwrap_err()
    );
    assert!(err.contains("ar archive"), "{err}");
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(data);
    b
}

#[test]
fn reads_fashion_mnist_from_a_deb() {
    let dir = tempfile::tempdir().unwrap();
    let train_px: Vec<u8> = (0..3 * 784).map(|i| (i % 251) as u8).collect();
    let test_px = vec![9u8; 2 * 784];
    let d = "usr/share/datasets/fashion-mnist/";
    let files = [
        (
            format!("{d}train-images-idx3-ubyte.gz"),
            gz(&idx(&[3, 28, 28], &train_px)),
        ),
        (
            format!("{d}train-labels-idx1-ubyte.gz"),
            gz(&idx(&[3], &[9, 0, 9])),
        ),
        (
            format!("{d}t10k-images-idx3-ubyte.gz"),
            gz(&idx(&[2, 28, 28], &test_px)),
        ),
        (
            format!("{d}t10k-labels-idx1-ubyte.gz"),
            gz(&idx(&[2], &[1, 2])),
        ),
    ];
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (p.as_str(), &b[..])).collect();
    let path = dir.path().join("f.deb");
    std::fs::write(&path, deb_of(&refs)).unwrap();

    let set = sources::fashion_mnist(&path).unwrap();
    assert_eq!(set.classes[0], "t-shirt");
    assert_eq!(set.classes[9], "ankle-boot");
    let labels = |s: &[Sample]| s.iter().map(|s| s.label).collect::<Vec<_>>();
    assert_eq!(labels(&set.train), [9, 0, 9]);
    let test = set.test.as_ref().unwrap();
    assert_eq!(labels(test), [1, 2]);
    let Image::Grey {
        width,
        height,
        pixels,
    } = &set.train[1].image
    else {
        panic!("grey")
    };
    assert_eq!(
        (*width, *height, &pixels[..]),
        (28, 28, &train_px[784..1568])
    );

    // A label outside the ten classes is an error naming the file.
    let mut bad = files.clone();
    bad[3].1 = gz(&idx(&[2], &[1, 10]));
    let refs: Vec<(&str, &[u8])> = bad.iter().map(|(p, b)| (p.as_str(), &b[..])).collect();
    std::fs::write(&path, deb_of(&refs)).unwrap();
    let err = format!("{:#}", sources::fashion_mnist(&path).unwrap_err());
    assert!(
        err.contains("t10k-images") && err.contains("label 10"),
        "{err}"
    );
}

#[test]
fn reads_the_mnist_csv() {
    let row = |px: u8, label: u8| {
        let mut r = vec![px.to_string(); 784];
        r.push(label.to_string());
        r.join(",")
    };
    let text = format!("{}\n{}\n", row(0, 7), row(255, 3));
    let set = sources::mnist_csv(text.as_bytes(), "m.csv").unwrap();
    assert!(set.test.is_none());
    assert_eq!(set.train.len(), 2);
    assert_eq!((set.train[0].label, set.train[1].label), (7, 3));
    assert_eq!(set.train[1].image, grey(28, vec![255; 784]));

    let err = format!("{:#}", sources::mnist_csv(b"1,2,3\n", "m.csv").unwrap_err());
    assert!(err.contains("m.csv: line 1 has 3 fields"), "{err}");
    let bad = format!("{}\n", row(0, 7).replacen('0', "256", 1));
    let err = format!(
        "{:#}",
        sources::mnist_csv(bad.as_bytes(), "m.csv").unwrap_err()
    );
    assert!(err.contains("field 1") && err.contains("\"256\""), "{err}");
}

#[test]
fn xray_classes_come_from_file_names() {
    assert_eq!(sources::xray_label("NORMAL2-IM-1427-0001.jpeg"), Some(0));
    assert_eq!(
        sources::xray_label("person1946_bacteria_4874.jpeg"),
        Some(1)
    );
    assert_eq!(sources::xray_label("person1_virus_6.jpeg"), Some(1));
    assert_eq!(sources::xray_label("scan.jpeg"), None);
}

fn grey(side: u32, pixels: Vec<u8>) -> Image {
    Image::Grey {
        width: side,
        height: side,
        pixels,
    }
}

/// `per_class` samples of each of three classes, interleaved, each image a
/// distinct 4x4 pattern.
fn synthetic(per_class: usize) -> Labelled {
    let train = (0..3 * per_class)
        .map(|index| Sample {
            index,
            label: index % 3,
            image: grey(4, (0..16).map(|p| (index * 7 + p) as u8).collect()),
        })
        .collect();
    Labelled {
        classes: vec!["cat".into(), "dog".into(), "t-shirt".into()],
        train,
        test: None,
    }
}

/// Every file under `dir` (relative path with `/`) and its bytes.
fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn write(set: &Labelled, opts: &FetchOptions, threads: usize) -> (tempfile::TempDir, Manifest) {
    let dir = tempfile::tempdir().unwrap();
    let m = write_set(ImageSet::Mnist, set, opts, dir.path(), threads).unwrap();
    (dir, m)
}

#[test]
fn writes_class_folders_csvs_and_a_manifest() {
    let set = synthetic(10);
    let (dir, m) = write(&set, &FetchOptions::default(), 2);
    assert_eq!(m.classes, ["cat", "dog", "t-shirt"]);
    assert_eq!((m.train, m.test), (vec![8; 3], vec![2; 3]));
    assert!(!m.official_split);

    let files = files_under(dir.path());
    let pngs = |split: &str, class: &str| {
        files
            .keys()
            .filter(|k| k.starts_with(&format!("{split}/{class}/")) && k.ends_with(".png"))
            .count()
    };
    for class in ["cat", "dog", "t-shirt"] {
        assert_eq!(
            (pngs("train", class), pngs("test", class)),
            (8, 2),
            "{class}"
        );
    }
    // The CSV lists each image once, with its class; paths are relative.
    let mut seen = 0;
    for split in SPLITS {
        let mut csv = csv::Reader::from_path(dir.path().join(format!("{split}.csv"))).unwrap();
        assert_eq!(csv.headers().unwrap(), vec!["image", "label"]);
        for row in csv.records() {
            let row = row.unwrap();
            let (image, label) = (&row[0], &row[1]);
            assert!(image.starts_with(&format!("{split}/{label}/")), "{image}");
            let stem = Path::new(image).file_stem().unwrap().to_str().unwrap();
            let index: usize = stem.parse().unwrap();
            assert_eq!(set.classes[set.train[index].label], label);
            // The PNG decodes to the source pixels.
            let png = image::load_from_memory(&files[image]).unwrap().to_luma8();
            assert_eq!(set.train[index].image, grey(4, png.into_raw()));
            seen += 1;
        }
    }
    assert_eq!(seen, 30);
    let json: Manifest = serde_json::from_slice(&files["dataset.json"]).unwrap();
    assert_eq!(json.test_total(), 6);
}

#[test]
fn same_seed_same_files_other_seed_other_split() {
    let set = synthetic(20);
    let opts = FetchOptions::default();
    let (a, _) = write(&set, &opts, 1);
    let (b, _) = write(&set, &opts, 3);
    let (fa, fb) = (files_under(a.path()), files_under(b.path()));
    assert_eq!(
        fa, fb,
        "the same seed must give the same files, whatever the threads"
    );

    let other = FetchOptions { seed: 14, ..opts };
    let (c, _) = write(&set, &other, 2);
    let test_names = |f: &BTreeMap<String, Vec<u8>>| {
        f.keys()
            .filter(|k| k.starts_with("test/"))
            .cloned()
            .collect::<Vec<_>>()
    };
    let fc = files_under(c.path());
    assert_eq!(test_names(&fc).len(), test_names(&fa).len());
    assert_ne!(test_names(&fc), test_names(&fa));
}

#[test]
fn limits_per_class_and_official_splits() {
    let mut set = synthetic(20);
    let opts = FetchOptions {
        train_per_class: Some(5),
        test_per_class: Some(1),
        ..FetchOptions::default()
    };
    let (_dir, m) = write(&set, &opts, 2);
    assert_eq!((m.train, m.test), (vec![5; 3], vec![1; 3]));
    // A limit above what there is keeps everything.
    let big = FetchOptions {
        train_per_class: Some(1000),
        ..FetchOptions::default()
    };
    assert_eq!(write(&set, &big, 2).1.train, vec![16; 3]);

    // An official split is kept as it is (the test fraction plays no part).
    let test: Vec<Sample> = set.train.drain(..9).collect();
    set.test = Some(test);
    let (dir, m) = write(
        &set,
        &FetchOptions {
            test_fraction: 0.5,
            ..opts
        },
        2,
    );
    assert!(m.official_split);
    assert_eq!(m.test, vec![1; 3]);
    let (_, full) = write(&set, &FetchOptions::default(), 2);
    assert_eq!((full.train, full.test), (vec![17; 3], vec![3; 3]));
    assert!(dir.path().join("test/dog").is_dir());
}

#[test]
fn a_class_left_empty_is_an_error() {
    let set = synthetic(2);
    let dir = tempfile::tempdir().unwrap();
    // 2 per class with a 0.2 test fraction leaves no test image.
    let err = write_set(
        ImageSet::Mnist,
        &set,
        &FetchOptions::default(),
        dir.path(),
        1,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("has no test images"), "{err}");
}

#[test]
fn encoded_files_are_kept_as_they_are() {
    let mut set = synthetic(5);
    for s in &mut set.train {
        s.image = Image::File {
            ext: "jpeg",
            bytes: format!("jpeg {}", s.index).into_bytes(),
        };
    }
    let (dir, m) = write(&set, &FetchOptions::default(), 2);
    assert_eq!(m.test, vec![1; 3]);
    let files = files_under(dir.path());
    let jpegs: Vec<_> = files.keys().filter(|k| k.ends_with(".jpeg")).collect();
    assert_eq!(jpegs.len(), 15);
    let mut f = std::fs::File::open(dir.path().join(jpegs[0])).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert!(s.starts_with("jpeg "));
}

#[test]
fn names_and_directories() {
    assert_eq!(
        ImageSet::from_name("Fashion_MNIST"),
        Some(ImageSet::FashionMnist)
    );
    assert_eq!(ImageSet::from_name("xrays"), Some(ImageSet::ChestXrays));
    assert_eq!(ImageSet::from_name("cifar"), None);
    let err = fetch("cifar", &FetchOptions::default(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fashion-mnist, mnist, animals, chest-xrays"),
        "{err}"
    );

    let d = FetchOptions::default();
    assert_eq!(d.dir_name(ImageSet::Mnist), "mnist");
    let o = FetchOptions {
        seed: 5,
        train_per_class: Some(100),
        ..d
    };
    assert_eq!(o.dir_name(ImageSet::Mnist), "mnist-train100-seed5");
    assert_eq!(
        o.dir_name(ImageSet::FashionMnist),
        "fashion-mnist-train100-seed5"
    );
    // The seed and test fraction do not change Fashion-MNIST's own split.
    let o = FetchOptions {
        seed: 5,
        test_fraction: 0.3,
        ..d
    };
    assert_eq!(o.dir_name(ImageSet::FashionMnist), "fashion-mnist");
    assert_eq!(o.dir_name(ImageSet::Animals), "animals-seed5-testfrac0.3");
    assert_ne!(
        o.marker(ImageSet::FashionMnist),
        d.marker(ImageSet::FashionMnist)
    );

    for bad in [
        FetchOptions {
            test_fraction: 0.0,
            ..d
        },
        FetchOptions {
            test_fraction: 1.0,
            ..d
        },
        FetchOptions {
            test_per_class: Some(0),
            ..d
        },
    ] {
        assert!(
            fetch_in(
                ImageSet::Mnist,
                &bad,
                Path::new("/nonexistent"),
                &mut |_| {}
            )
            .is_err()
        );
    }
}

#[test]
fn only_a_marked_directory_with_the_same_options_is_complete() {
    let set = synthetic(10);
    let dir = tempfile::tempdir().unwrap();
    let opts = FetchOptions::default();
    write_set(ImageSet::Mnist, &set, &opts, dir.path(), 1).unwrap();
    let marker = opts.marker(ImageSet::Mnist);
    assert!(
        complete_manifest(dir.path(), &marker).is_none(),
        "no marker yet"
    );
    std::fs::write(dir.path().join(MARKER), format!("{marker}\n")).unwrap();
    assert_eq!(
        complete_manifest(dir.path(), &marker).unwrap().train,
        vec![8; 3]
    );
    let other = FetchOptions { seed: 1, ..opts }.marker(ImageSet::Mnist);
    assert!(complete_manifest(dir.path(), &other).is_none());
}
