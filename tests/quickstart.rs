//! The README's main job, end to end on the real model and data, in a small
//! setting: fetch, splits, inspect, fine-tune, test-split evaluation.

mod common;

use std::process::Command;

#[test]
fn quickstart_fine_tunes_and_reports_test_accuracy() {
    common::minilm_dir();
    common::iu_dir();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("qs");
    let run = Command::new(env!("CARGO_BIN_EXE_headstart"))
        .args([
            "quickstart",
            "--out",
            out.to_str().unwrap(),
            "--strategy",
            "head",
            "--train-limit",
            "64",
            "--epochs",
            "1",
            "--max-length",
            "48",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("22,713,216 in total"), "{stdout}");
    assert!(
        stdout.contains("3955 reports, 530 without FINDINGS dropped"),
        "{stdout}"
    );
    let done = stdout
        .lines()
        .find(|l| l.starts_with("done:"))
        .expect("summary line");
    assert!(done.contains("685 IU test reports"), "{done}");
    let printed: f64 = done
        .split("accuracy ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .expect("accuracy in the summary");

    // The exported model gives the same accuracy when evaluated on its own.
    let eval = Command::new(env!("CARGO_BIN_EXE_headstart"))
        .args([
            "eval",
            "--model",
            out.join("run").to_str().unwrap(),
            "--data",
            out.join("iu-reports/test.csv").to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!(m["examples"], 685);
    let acc = m["accuracy"].as_f64().unwrap();
    assert!(
        (acc - printed).abs() < 5e-4,
        "eval {acc} vs printed {printed}"
    );
    let metrics = std::fs::read_to_string(out.join("run/metrics.jsonl")).unwrap();
    assert!(metrics.lines().any(|l| l.contains("\"eval\"")));
}
