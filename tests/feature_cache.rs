//! The feature cache end to end on the tiny BERT fixture: training from the
//! cache gives the run training without it gives, cache files are reused
//! when the inputs are the same and not when any of them changes, and a
//! damaged file is rebuilt.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::fixtures;

fn headstart(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_headstart"))
        .args(args)
        .output()
        .expect("running headstart")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// 60 short reports in the tiny vocabulary, of varied lengths, two labels.
fn write_data(dir: &Path, extra: &str) -> PathBuf {
    let normal = [
        "the lungs are clear.",
        "no focal consolidation.",
        "heart size is normal.",
        "no pleural effusion or pneumothorax.",
        "the lungs are clear, heart size is normal, no effusion.",
    ];
    let abnormal = [
        "mild right base atelectasis.",
        "stable left pleural effusion.",
        "focal consolidation in the right lung.",
        "mild atelectasis with effusion.",
        "right pleural effusion and atelectasis, left base consolidation.",
    ];
    let mut csv = String::from("text,label\n");
    for i in 0..6 {
        for t in normal {
            csv.push_str(&format!("\"{t}\",normal\n"));
        }
        for t in abnormal {
            csv.push_str(&format!(
                "\"{t}{}\",abnormal\n",
                if i == 0 { extra } else { "" }
            ));
        }
    }
    let path = dir.join(format!("train{}.csv", extra.len()));
    std::fs::write(&path, csv).unwrap();
    path
}

struct Run<'a> {
    model: &'a Path,
    data: &'a Path,
    strategy: &'a str,
    cache: &'a str,
    cache_dir: &'a Path,
    max_length: usize,
}

impl Run<'_> {
    fn args(&self, out: &Path) -> Vec<String> {
        [
            "train",
            "--model",
            self.model.to_str().unwrap(),
            "--train",
            self.data.to_str().unwrap(),
            "--strategy",
            self.strategy,
            "--epochs",
            "3",
            "--batch-size",
            "8",
            "--max-length",
            &self.max_length.to_string(),
            "--lr",
            "1e-3",
            "--val-fraction",
            "0.25",
            "--feature-cache",
            self.cache,
            "--cache-dir",
            self.cache_dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every number of two metrics logs, pairwise, except the timing.
fn assert_close(a: &[serde_json::Value], b: &[serde_json::Value], what: &str) {
    fn numbers(v: &serde_json::Value, path: String, out: &mut Vec<(String, f64)>) {
        match v {
            serde_json::Value::Number(n) => out.push((path, n.as_f64().unwrap())),
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    if k != "samples_per_s" && k != "elapsed" {
                        numbers(v, format!("{path}.{k}"), out);
                    }
                }
            }
            _ => {}
        }
    }
    assert_eq!(a.len(), b.len(), "{what}: different number of log lines");
    let mut checked = 0;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let (mut nx, mut ny) = (Vec::new(), Vec::new());
        numbers(x, format!("line {i}"), &mut nx);
        numbers(y, format!("line {i}"), &mut ny);
        assert_eq!(nx.len(), ny.len());
        for ((k, u), (_, v)) in nx.iter().zip(&ny) {
            assert!((u - v).abs() <= 1e-5, "{what}: {k}: {u} vs {v}");
            checked += 1;
        }
    }
    assert!(checked > 30, "{what}: only {checked} numbers compared");
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn training_from_the_cache_equals_training_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path(), "");
    let model = fixtures().join("tiny-bert");
    for strategy in ["head", "freeze:1", "freeze:0"] {
        let run = |cache: &str| {
            let out = tmp
                .path()
                .join(format!("{}-{cache}", strategy.replace(':', "")));
            let cache_dir = tmp.path().join(format!("cache-{cache}"));
            let stderr = ok(&headstart(
                &Run {
                    model: &model,
                    data: &data,
                    strategy,
                    cache,
                    cache_dir: &cache_dir,
                    max_length: 32,
                }
                .args(&out),
            ));
            (out, stderr)
        };
        let (off, off_log) = run("off");
        assert!(
            !off_log.contains("feature cache of the frozen"),
            "{off_log}"
        );
        let reference = metrics(&off);
        for cache in ["memory", "disk", "auto"] {
            let (cached, log) = run(cache);
            assert!(
                log.contains("feature cache of the frozen"),
                "{strategy} {cache}: {log}"
            );
            assert_close(
                &reference,
                &metrics(&cached),
                &format!("{strategy} {cache}"),
            );
        }
    }
}

#[test]
fn cache_files_are_reused_only_for_the_same_inputs_and_rebuilt_when_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path(), "");
    let fixture = fixtures().join("tiny-bert");
    let cache_dir = tmp.path().join("cache");
    let mut n = 0;
    let mut run = |model: &Path, data: &Path, strategy: &str, max_length: usize| {
        n += 1;
        ok(&headstart(
            &Run {
                model,
                data,
                strategy,
                cache: "disk",
                cache_dir: &cache_dir,
                max_length,
            }
            .args(&tmp.path().join(format!("run{n}"))),
        ))
    };

    let first = run(&fixture, &data, "freeze:1", 32);
    assert!(first.contains("computed"), "{first}");
    let made = files(&cache_dir);
    assert_eq!(made.len(), 2, "train and validation: {made:?}");

    // Same inputs, another seed-independent run: read, not recomputed.
    let again = run(&fixture, &data, "freeze:1", 32);
    assert!(
        again.contains("read in") && !again.contains("computed"),
        "{again}"
    );
    assert_eq!(files(&cache_dir), made);

    // Each input the values depend on makes new files.
    let mut count = 2;
    let mut changed = |what: &str, log: String| {
        assert!(log.contains("computed"), "{what}: {log}");
        let now = files(&cache_dir).len();
        assert!(now > count, "{what}: no new cache file");
        count = now;
    };
    changed("max length", run(&fixture, &data, "freeze:1", 24));
    changed("boundary", run(&fixture, &data, "freeze:0", 32));
    let other_data = write_data(tmp.path(), " no effusion.");
    changed("data", run(&fixture, &other_data, "freeze:1", 32));

    let copy = |name: &str| {
        let dir = tmp.path().join(name);
        common::copy_dir(&fixture, &dir);
        dir
    };
    let tokenizer = copy("other-tokenizer");
    let config_path = tokenizer.join("tokenizer_config.json");
    let mut config: serde_json::Value = match std::fs::read_to_string(&config_path) {
        Ok(t) => serde_json::from_str(&t).unwrap(),
        Err(_) => serde_json::json!({}),
    };
    config["model_max_length"] = serde_json::json!(48);
    std::fs::write(&config_path, config.to_string()).unwrap();
    // The values depend on the token ids, not on the files that made them:
    // a tokenizer change that leaves every id alone reuses the files.
    let before = files(&cache_dir).len();
    let log = run(&tokenizer, &data, "freeze:1", 32);
    assert!(
        log.contains("read in") && !log.contains("computed"),
        "{log}"
    );
    assert_eq!(files(&cache_dir).len(), before);

    let weights = copy("other-weights");
    common::nudge_weight(
        &weights.join("model.safetensors"),
        "embeddings.LayerNorm.weight",
        0,
        0.25,
    );
    changed("frozen weights", run(&weights, &data, "freeze:1", 32));

    // Damage the first file: detected by its checksum and rebuilt.
    let target = &made[0];
    let mut bytes = std::fs::read(target).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x40;
    std::fs::write(target, &bytes).unwrap();
    let log = run(&fixture, &data, "freeze:1", 32);
    assert!(
        log.contains("checksum mismatch") && log.contains("rebuilt"),
        "{log}"
    );
    assert_eq!(files(&cache_dir).len(), count);
    let log = run(&fixture, &data, "freeze:1", 32);
    assert!(!log.contains("computed"), "the rebuilt file is used: {log}");
}
