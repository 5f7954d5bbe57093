use std::time::SystemTime;

use super::file::*;
use super::*;

fn device() -> Device {
    Device::default()
}

/// A fake frozen prefix: value = example * 1000 + position * 10 + channel / 8.
fn fake(lengths: &[usize], hidden: usize, positions: Positions, idx: &[usize]) -> Vec<f32> {
    let seq = idx.iter().map(|&i| lengths[i]).max().unwrap_or(0);
    let mut out = Vec::new();
    for &i in idx {
        let n = match positions {
            Positions::All => seq,
            _ => 1,
        };
        for p in 0..n {
            for c in 0..hidden {
                let pad = p >= lengths[i];
                out.push(if pad {
                    -7.0
                } else {
                    (i * 1000 + p * 10) as f32 + c as f32 / 8.0
                });
            }
        }
    }
    out
}

fn request(dir: &Path, mode: CacheMode, dtype: CacheDtype, positions: Positions) -> Request<'_> {
    Request {
        mode,
        dir,
        dtype,
        memory_budget: 1 << 30,
        max_bytes: DEFAULT_MAX_BYTES,
        key: format!("k-{mode:?}-{dtype:?}-{positions:?}"),
        positions,
        hidden: 4,
        lengths: vec![3, 1, 5, 2, 4],
    }
}

fn build(req: &Request<'_>) -> (Features, CacheReport, usize) {
    let mut calls = 0;
    let (f, r) = get_or_build(req, 2, |idx| {
        calls += 1;
        Ok(fake(&req.lengths, req.hidden, req.positions, idx))
    })
    .unwrap();
    (f, r, calls)
}

fn values(f: &Features, idx: &[usize]) -> (Vec<usize>, Vec<f32>, Vec<f32>) {
    match f.batch(idx, &device()) {
        Flow::Hidden { x, mask } => {
            let (s, v) = crate::models::params::host(&x);
            (s, v, crate::models::params::host(&mask).1)
        }
        other => panic!("a cache holds hidden states, not {other:?}"),
    }
}

#[test]
fn batches_hold_real_tokens_and_zero_padding() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [CacheMode::Memory, CacheMode::Disk, CacheMode::Auto] {
        let req = request(dir.path(), mode, CacheDtype::F32, Positions::All);
        let (f, report, calls) = build(&req);
        assert_eq!(calls, 3, "5 examples in batches of 2");
        assert!(report.built);
        assert_eq!(report.bytes, (3 + 1 + 5 + 2 + 4) * 4 * 4);
        let (shape, x, mask) = values(&f, &[1, 0]);
        assert_eq!(shape, vec![2, 3, 4]);
        // example 1: one real token, then zeros (not the prefix's -7 padding)
        assert_eq!(&x[..4], &[1000.0, 1000.125, 1000.25, 1000.375]);
        assert!(x[4..12].iter().all(|&v| v == 0.0));
        // example 0, position 2, channel 3
        assert_eq!(x[12 + 2 * 4 + 3], 20.375);
        assert_eq!(mask, vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    }
}

#[test]
fn first_position_only_for_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let req = request(
        dir.path(),
        CacheMode::Disk,
        CacheDtype::F32,
        Positions::First,
    );
    let (f, report, _) = build(&req);
    assert_eq!(report.bytes, 5 * 4 * 4);
    let (shape, x, mask) = values(&f, &[4, 2]);
    assert_eq!(shape, vec![2, 1, 4]);
    assert_eq!(mask, vec![1.0, 1.0]);
    assert_eq!(
        x,
        vec![
            4000.0, 4000.125, 4000.25, 4000.375, 2000.0, 2000.125, 2000.25, 2000.375
        ]
    );
}

#[test]
fn a_file_is_reused_and_a_damaged_one_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let req = request(dir.path(), CacheMode::Disk, CacheDtype::F32, Positions::All);
    let (_, first, calls) = build(&req);
    assert!(first.built && calls > 0);
    let path = first.file.clone().unwrap();
    let (f, second, calls) = build(&req);
    assert!(
        !second.built && calls == 0,
        "an intact file is read, not recomputed"
    );
    assert_eq!(values(&f, &[2]).1[4 * 4], 2040.0);

    // flip one payload byte: the checksum catches it
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 50] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let (f, third, calls) = build(&req);
    assert!(third.built && calls > 0);
    assert!(
        third.rejected.as_ref().unwrap().contains("checksum"),
        "{:?}",
        third.rejected
    );
    assert_eq!(values(&f, &[2]).1[4 * 4], 2040.0);

    // truncate it
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let (_, fourth, calls) = build(&req);
    assert!(fourth.built && calls > 0);
    assert!(fourth.rejected.unwrap().contains("truncated"));

    // a header for other inputs (same file name) is not trusted either
    let mut other = request(dir.path(), CacheMode::Disk, CacheDtype::F32, Positions::All);
    other.lengths = vec![3, 1, 5, 2, 3];
    let (_, fifth, calls) = build(&other);
    assert!(fifth.built && calls > 0);
    assert!(fifth.rejected.unwrap().contains("header"));
    // no temporary files are left behind
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.ends_with(".feat")), "{names:?}");
}

#[test]
fn auto_goes_to_disk_beyond_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut req = request(dir.path(), CacheMode::Auto, CacheDtype::F16, Positions::All);
    req.memory_budget = 100;
    let (f, report, _) = build(&req);
    assert_eq!(report.location, "disk");
    assert_eq!(report.bytes, 15 * 4 * 2);
    assert!(matches!(f.store, Store::Mapped { .. }));
    // f16 rounds: 4020.375 has no f16 representation; the nearest is 4020.0
    let x = values(&f, &[4]).1;
    assert_eq!(x[2 * 4 + 3], 4020.0);
    assert_eq!(x[0], 4000.0);
    req.memory_budget = 1 << 20;
    let (f, report, calls) = build(&req);
    assert_eq!((report.location.as_str(), calls), ("memory", 0));
    assert!(matches!(f.store, Store::Memory(_)));
}

#[test]
fn memory_mode_writes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let req = request(
        dir.path(),
        CacheMode::Memory,
        CacheDtype::F16,
        Positions::All,
    );
    let (_, report, _) = build(&req);
    assert_eq!(report.dtype, CacheDtype::F32);
    assert!(report.file.is_none());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_damaged_header_length_is_reported_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let req = request(dir.path(), CacheMode::Disk, CacheDtype::F32, Positions::All);
    let (_, first, _) = build(&req);
    let path = first.file.unwrap();
    let good = std::fs::read(&path).unwrap();
    let len = good.len() as u64;
    for declared in [u64::MAX, u64::MAX - 15, len - 15, 1 << 40] {
        let mut bytes = good.clone();
        bytes[8..16].copy_from_slice(&declared.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let (f, report, calls) = build(&req);
        assert!(report.built && calls == 3, "{declared}: rebuilt");
        let why = report.rejected.unwrap();
        assert!(
            why.contains(&format!("its length field says {declared} bytes"))
                && why.contains(&format!("the file has {len} bytes"))
                && why.contains("rebuilt"),
            "{why}"
        );
        assert_eq!(values(&f, &[2]).1[4 * 4], 2040.0);
        let rebuilt = std::fs::read(&path).unwrap();
        assert_eq!(rebuilt.len(), good.len(), "{declared}: rewritten");
        assert_eq!(rebuilt[8..16], good[8..16]);
    }
    // Too short to hold a header length at all.
    std::fs::write(&path, &good[..12]).unwrap();
    let (_, report, calls) = build(&req);
    assert!(report.built && calls == 3);
    assert!(report.rejected.unwrap().contains("bad magic"));
}

#[test]
fn file_names_carry_the_code_version() {
    let version = env!("CARGO_PKG_VERSION");
    let k = |v, n| file_key("the inputs", v, n);
    assert_eq!(k(version, NUMERICS_VERSION).len(), 64);
    assert_eq!(k(version, NUMERICS_VERSION), k(version, NUMERICS_VERSION));
    assert_ne!(
        k(version, NUMERICS_VERSION),
        k("0.0.0-other", NUMERICS_VERSION)
    );
    assert_ne!(
        k(version, NUMERICS_VERSION),
        k(version, NUMERICS_VERSION + 1)
    );
    assert_ne!(
        k(version, NUMERICS_VERSION),
        file_key("other inputs", version, NUMERICS_VERSION)
    );

    let dir = tempfile::tempdir().unwrap();
    let req = request(dir.path(), CacheMode::Disk, CacheDtype::F32, Positions::All);
    let (_, report, _) = build(&req);
    let name = format!("{}.feat", file_key(&req.key, version, NUMERICS_VERSION));
    assert_eq!(report.file.unwrap(), dir.path().join(name));
    assert!(!dir.path().join(format!("{}.feat", req.key)).exists());
}

fn set_last_used(path: &Path, seconds_ago: u64) {
    let t = SystemTime::now() - std::time::Duration::from_secs(seconds_ago);
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn last_used(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn least_recently_used_files_are_evicted_beyond_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let request_for = |key: &str, max_bytes: u64| {
        let mut req = request(dir.path(), CacheMode::Disk, CacheDtype::F32, Positions::All);
        req.key = key.into();
        req.max_bytes = max_bytes;
        req
    };
    let file_of = |key: &str| {
        let name = file_key(key, env!("CARGO_PKG_VERSION"), NUMERICS_VERSION);
        dir.path().join(format!("{name}.feat"))
    };
    let name_of = |key: &str| {
        file_of(key)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    for key in ["a", "b", "c"] {
        let (_, report, _) = build(&request_for(key, u64::MAX));
        assert!(report.evicted.is_none());
    }
    let size = std::fs::metadata(file_of("a")).unwrap().len();
    assert!(
        ["b", "c"]
            .iter()
            .all(|k| std::fs::metadata(file_of(k)).unwrap().len() == size)
    );
    set_last_used(&file_of("a"), 300);
    set_last_used(&file_of("b"), 200);
    set_last_used(&file_of("c"), 100);

    // Reading `a` makes it the most recently used.
    let (_, report, calls) = build(&request_for("a", u64::MAX));
    assert!(!report.built && calls == 0);
    assert!(last_used(&file_of("a")) > last_used(&file_of("c")));

    // A fourth file with room for two: `b` and `c` go, `a` and `d` stay.
    let (f, report, _) = build(&request_for("d", 2 * size));
    let mut want = vec![name_of("a"), name_of("d")];
    want.sort();
    assert_eq!(names(dir.path()), want);
    let evicted = report.evicted.clone().unwrap();
    assert!(
        evicted.contains(&format!(
            "deleted 2 least recently used cache file(s) ({:.1} MB)",
            (2 * size) as f64 / 1e6
        )),
        "{evicted}"
    );
    assert!(report.describe().ends_with(&evicted));
    assert_eq!(values(&f, &[2]).1[4 * 4], 2040.0);

    // A cap smaller than the new file alone: everything else goes, never it.
    let (f, report, _) = build(&request_for("e", 0));
    assert_eq!(names(dir.path()), vec![name_of("e")]);
    assert!(report.evicted.unwrap().contains("deleted 2 "));
    assert_eq!(values(&f, &[2]).1[4 * 4], 2040.0);
}

#[test]
fn list_and_clear_the_cache_dir() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut head = request(d, CacheMode::Disk, CacheDtype::F32, Positions::First);
    head.key = "head".into();
    let head = build(&head).1.file.unwrap();
    let mut layers = request(d, CacheMode::Disk, CacheDtype::F16, Positions::All);
    layers.key = "layers".into();
    let layers = build(&layers).1.file.unwrap();
    let broken = d.join("broken.feat");
    let mut bytes = MAGIC.to_vec();
    bytes.extend(u64::MAX.to_le_bytes());
    std::fs::write(&broken, &bytes).unwrap();
    std::fs::write(d.join("x.tmp-4242"), b"partial").unwrap();
    std::fs::write(d.join("notes.txt"), b"mine").unwrap();
    set_last_used(&head, 100);
    set_last_used(&broken, 50);
    set_last_used(&layers, 10);

    let entries = list(d).unwrap();
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.path.clone(), e.bytes, e.examples, e.hidden, e.dtype))
            .collect::<Vec<_>>(),
        vec![
            (
                layers.clone(),
                size(&layers),
                Some(5),
                Some(4),
                Some(CacheDtype::F16)
            ),
            (broken.clone(), 16, None, None, None),
            (
                head.clone(),
                size(&head),
                Some(5),
                Some(4),
                Some(CacheDtype::F32)
            ),
        ]
    );
    assert!(entries[0].last_used > entries[1].last_used);
    assert!(entries[1].last_used > entries[2].last_used);
    // Listing is not using: the times are unchanged.
    assert_eq!(entries[2].last_used, last_used(&head));

    let freed = size(&head) + size(&layers) + 16 + 7;
    assert_eq!(clear(d).unwrap(), (4, freed));
    assert_eq!(names(d), vec!["notes.txt".to_string()]);
    assert!(list(d).unwrap().is_empty());
    assert_eq!(clear(&d.join("absent")).unwrap(), (0, 0));
    assert!(list(&d.join("absent")).unwrap().is_empty());
}

#[test]
fn keys_separate_fields() {
    let mut a = KeyHasher::default();
    a.field("a", b"bc");
    let mut b = KeyHasher::default();
    b.field("ab", b"c");
    assert_ne!(a.hex(), b.hex());
    let mut c = KeyHasher::default();
    c.field("a", b"bc");
    assert_eq!(a.hex(), c.hex());
    assert_eq!(a.hex().len(), 64);
}
