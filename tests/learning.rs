//! A learning guard on real data: small `full` and `head` runs of the real
//! all-MiniLM-L6-v2 on 200 IU chest x-ray reports must beat the majority
//! class on the held-out test reports by a clear margin. An accuracy, not a
//! timing: it fails when training stops learning, whatever the speed.

mod common;

use std::path::Path;

use common::headstart_ok;

/// Test accuracy, and the majority class's accuracy on the same reports.
fn test_accuracy(run: &Path, test: &Path) -> (f64, f64) {
    let out = headstart_ok(&[
        "eval",
        "--model",
        run.to_str().unwrap(),
        "--data",
        test.to_str().unwrap(),
        "--json",
    ]);
    let m: serde_json::Value = serde_json::from_str(&out).unwrap();
    let examples = m["examples"].as_u64().unwrap() as f64;
    let largest = m["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["support"].as_u64().unwrap())
        .max()
        .unwrap() as f64;
    assert_eq!(examples, 685.0);
    (m["accuracy"].as_f64().unwrap(), largest / examples)
}

#[test]
fn full_and_head_on_real_reports_beat_the_majority_class() {
    common::minilm_dir();
    common::iu_dir();
    let tmp = tempfile::tempdir().unwrap();
    let splits = tmp.path().join("iu");
    headstart_ok(&["data", "iu-reports", "--out", splits.to_str().unwrap()]);
    let test = splits.join("test.csv");

    for (strategy, margin) in [("full", 0.12), ("head", 0.12)] {
        let run = tmp.path().join(strategy);
        headstart_ok(&[
            "train",
            "--train",
            splits.join("train.csv").to_str().unwrap(),
            "--val",
            splits.join("val.csv").to_str().unwrap(),
            "--text-column",
            "findings",
            "--train-limit",
            "200",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--strategy",
            strategy,
            "--cache-dir",
            tmp.path().join("cache").to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--quiet",
        ]);
        let (accuracy, majority) = test_accuracy(&run, &test);
        eprintln!("{strategy}: test accuracy {accuracy:.4}, majority class {majority:.4}");
        assert!(
            accuracy >= majority + margin,
            "{strategy}: test accuracy {accuracy:.4} is not {margin} above the majority class's {majority:.4}"
        );
    }
}
