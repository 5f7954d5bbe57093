//! `headstart train` end to end on the tiny BERT fixture (nothing fetched):
//! frozen weights stay bit-identical, same seed gives the same run, a killed
//! run resumes to the same result, bad rows are reported by line; then eval
//! and predict on the exported model.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use headstart::hub::read_safetensors;

use common::fixtures;

fn headstart(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_headstart"));
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("running headstart")
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

/// 48 short reports in the tiny vocabulary, two labels.
fn write_data(dir: &Path) -> PathBuf {
    let normal = [
        "the lungs are clear.",
        "no focal consolidation.",
        "heart size is normal.",
        "no pleural effusion or pneumothorax.",
        "the lungs are clear, heart size is normal.",
        "no effusion.",
    ];
    let abnormal = [
        "mild right base atelectasis.",
        "stable left pleural effusion.",
        "focal consolidation in the right lung.",
        "mild atelectasis with effusion.",
        "left base consolidation.",
        "right pleural effusion and atelectasis.",
    ];
    let mut csv = String::from("id,text,label\n");
    for i in 0..4 {
        for (j, t) in normal.iter().enumerate() {
            csv.push_str(&format!("n{i}{j},\"{t}\",normal\n"));
        }
        for (j, t) in abnormal.iter().enumerate() {
            csv.push_str(&format!("a{i}{j},\"{t}\",abnormal\n"));
        }
    }
    let path = dir.join("train.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

fn train_args<'a>(data: &'a str, out: &'a str, strategy: &'a str) -> Vec<&'a str> {
    // Feature-cache files beside the run, not in the user's cache.
    let cache_dir: &'static str = Box::leak(format!("{out}.cache").into_boxed_str());
    let model = Box::leak(
        fixtures()
            .join("tiny-bert")
            .to_string_lossy()
            .into_owned()
            .into_boxed_str(),
    );
    vec![
        "train",
        "--model",
        model,
        "--train",
        data,
        "--strategy",
        strategy,
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--max-length",
        "32",
        "--lr",
        "1e-3",
        "--val-fraction",
        "0.25",
        "--checkpoint-every",
        "2",
        "--out",
        out,
        "--cache-dir",
        cache_dir,
        "--quiet",
    ]
}

/// metrics.jsonl without the timing and energy fields, which differ from run to run.
fn metrics_without_timing(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("samples_per_s");
            v.as_object_mut().unwrap().remove("elapsed");
            v
        })
        .collect()
}

#[test]
fn frozen_weights_stay_bit_identical_and_the_rest_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let original = read_safetensors(&fixtures().join("tiny-bert/model.safetensors")).unwrap();
    for (strategy, frozen_prefixes, trained_prefix) in [
        (
            "freeze:1",
            vec!["embeddings.", "encoder.layer.0."],
            "encoder.layer.1.",
        ),
        (
            "head",
            vec!["embeddings.", "encoder.layer.0.", "encoder.layer.1."],
            "pooler.",
        ),
        // 3 epochs of gradual unfreezing on 2 layers: head, then layer 1, then
        // layer 0; the embeddings are never reached.
        ("gradual", vec!["embeddings."], "encoder.layer.0."),
    ] {
        let out = tmp.path().join(strategy.replace(':', "-"));
        ok(&headstart(
            &train_args(data.to_str().unwrap(), out.to_str().unwrap(), strategy),
            &[],
        ));
        // The last checkpoint: the exported model holds the best validation
        // weights, which may predate a group's unfreezing.
        let last = std::fs::read_to_string(out.join("checkpoints/LAST")).unwrap();
        let trained = read_safetensors(
            &out.join("checkpoints")
                .join(last.trim())
                .join("model.safetensors"),
        )
        .unwrap();
        let exported = read_safetensors(&out.join("model/model.safetensors")).unwrap();
        let mut frozen_checked = 0;
        let mut trained_changed = 0;
        for (key, before) in &original {
            if key.ends_with("position_ids") {
                continue;
            }
            let k = format!("bert.{key}");
            if frozen_prefixes.iter().any(|p| key.starts_with(p)) {
                // Never trained, so never written to a checkpoint; the
                // exported model has them bit-identical, not just close.
                assert!(
                    !trained.contains_key(&k),
                    "{strategy}: frozen {key} in a checkpoint"
                );
                let same = before
                    .data
                    .iter()
                    .zip(&exported[&k].data)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{strategy}: frozen {key} changed");
                frozen_checked += 1;
            } else if key.starts_with(trained_prefix) && before.data != trained[&k].data {
                trained_changed += 1;
            }
        }
        assert!(frozen_checked >= 5, "{strategy}: checked {frozen_checked}");
        assert!(
            trained_changed > 0,
            "{strategy}: nothing under {trained_prefix} trained"
        );
        // Frozen parameters get no optimizer state.
        let ckpt = std::fs::read_to_string(out.join("checkpoints/LAST")).unwrap();
        let state = read_safetensors(
            &out.join("checkpoints")
                .join(ckpt.trim())
                .join("optimizer.safetensors"),
        )
        .unwrap();
        assert!(
            state.keys().all(|k| !k.starts_with("body.embeddings")),
            "{strategy}"
        );
        assert!(
            state
                .keys()
                .any(|k| k.starts_with("head.classifier.weight"))
        );
    }
}

#[test]
fn same_seed_gives_the_same_run_and_resume_after_a_kill_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let data = data.to_str().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let c = tmp.path().join("c");
    ok(&headstart(
        &train_args(data, a.to_str().unwrap(), "full"),
        &[],
    ));
    ok(&headstart(
        &train_args(data, b.to_str().unwrap(), "full"),
        &[],
    ));
    let ma = metrics_without_timing(&a);
    assert!(ma.len() > 10);
    assert_eq!(
        ma,
        metrics_without_timing(&b),
        "two runs with one seed differ"
    );
    assert_eq!(
        std::fs::read(a.join("model/model.safetensors")).unwrap(),
        std::fs::read(b.join("model/model.safetensors")).unwrap()
    );

    // Killed after step 7 (mid-epoch 2; last checkpoint at step 6), then resumed.
    let killed = headstart(
        &train_args(data, c.to_str().unwrap(), "full"),
        &[("HEADSTART_ABORT_AFTER_STEP", "7")],
    );
    assert!(!killed.status.success());
    assert!(!c.join("model").exists());
    assert_eq!(
        std::fs::read_to_string(c.join("checkpoints/LAST"))
            .unwrap()
            .trim(),
        "step-00000006"
    );
    let resumed = ok(&headstart(
        &["train", "--resume", c.to_str().unwrap(), "--quiet"],
        &[],
    ));
    assert!(resumed.contains("model:"));
    assert_eq!(
        ma,
        metrics_without_timing(&c),
        "resumed run differs from uninterrupted"
    );
    assert_eq!(
        std::fs::read(a.join("model/model.safetensors")).unwrap(),
        std::fs::read(c.join("model/model.safetensors")).unwrap()
    );
}

#[test]
fn bad_rows_are_reported_by_line_or_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let mut csv = std::fs::read_to_string(&data).unwrap();
    csv.push_str("x1,\"the lungs are clear.\",\n");
    std::fs::write(&data, csv).unwrap();
    let out = tmp.path().join("run");
    let args = train_args(data.to_str().unwrap(), out.to_str().unwrap(), "head");
    let failed = headstart(&args, &[]);
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        err.contains("train.csv line 50") && err.contains("--skip-bad-rows"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    let mut args = args.clone();
    args.push("--skip-bad-rows");
    ok(&headstart(&args, &[]));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["skipped_rows"], 1);
}

#[test]
fn eval_and_predict_use_the_exported_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let out = tmp.path().join("run");
    let mut args = train_args(data.to_str().unwrap(), out.to_str().unwrap(), "full");
    let i = args.iter().position(|a| *a == "--epochs").unwrap();
    args[i + 1] = "12";
    ok(&headstart(&args, &[]));
    let model = out.join("model");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert_eq!(config["id2label"]["0"], "abnormal");
    assert_eq!(config["label2id"]["normal"], 1);

    let report = ok(&headstart(
        &[
            "eval",
            "--model",
            out.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
        ],
        &[],
    ));
    let m: serde_json::Value = serde_json::from_str(&report).unwrap();
    let acc = m["accuracy"].as_f64().unwrap();
    // The synthetic labels follow the words; a trained model separates them.
    assert!(acc >= 0.9, "training accuracy {acc}");
    assert_eq!(m["confusion"].as_array().unwrap().len(), 2);
    assert!(m["macro_f1"].as_f64().unwrap() > 0.0);

    let lines = ok(&headstart(
        &[
            "predict",
            "--model",
            model.to_str().unwrap(),
            "the lungs are clear.",
            "mild right base atelectasis.",
        ],
        &[],
    ));
    let preds: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(preds.len(), 2);
    assert_eq!(preds[0]["label"], "normal");
    assert_eq!(preds[1]["label"], "abnormal");
    let p = &preds[0]["probabilities"];
    let sum = p["normal"].as_f64().unwrap() + p["abnormal"].as_f64().unwrap();
    assert!((sum - 1.0).abs() < 1e-9);
    assert_eq!(preds[0]["logits"].as_array().unwrap().len(), 2);

    // An unknown label in eval data names the file and line.
    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, "text,label\nthe lungs are clear.,maybe\n").unwrap();
    let failed = headstart(
        &[
            "eval",
            "--model",
            out.to_str().unwrap(),
            "--data",
            bad.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        err.contains("bad.csv line 2") && err.contains("maybe"),
        "{err}"
    );
}

#[test]
fn early_stopping_ends_the_run_after_patience_validations_without_improvement() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let out = tmp.path().join("run");
    let mut args = train_args(data.to_str().unwrap(), out.to_str().unwrap(), "full");
    // A zero learning rate never improves on the first validation.
    let i = args.iter().position(|a| *a == "--lr").unwrap();
    args[i + 1] = "0";
    args.extend(["--eval-every", "1", "--patience", "2", "--metric", "loss"]);
    ok(&headstart(&args, &[]));
    let lines = metrics_without_timing(&out);
    let evals: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("eval").is_some()).collect();
    // step 1 sets the best; steps 2 and 3 do not beat it (they tie, and the
    // later of equal validations is kept as the best); the run stops at step 3 of 15.
    assert_eq!(evals.len(), 3, "{lines:?}");
    assert_eq!(lines.last().unwrap()["step"], 3);
    assert!(out.join("model/model.safetensors").exists());
    let state = std::fs::read_to_string(out.join("checkpoints/step-00000003/state.json")).unwrap();
    assert!(state.contains("\"stopped_early\": true"), "{state}");
    assert!(state.contains("\"best_step\": 3"), "{state}");
}

#[test]
fn a_lora_run_resumes_with_its_adapters_restored_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let data = data.to_str().unwrap();
    let a = tmp.path().join("a");
    let c = tmp.path().join("c");
    ok(&headstart(
        &train_args(data, a.to_str().unwrap(), "lora:4"),
        &[],
    ));
    // Killed after step 7 (last checkpoint at step 6), then resumed: the
    // adapters (and their optimizer state) come back from the checkpoint,
    // not from a fresh draw.
    let killed = headstart(
        &train_args(data, c.to_str().unwrap(), "lora:4"),
        &[("HEADSTART_ABORT_AFTER_STEP", "7")],
    );
    assert!(!killed.status.success());
    assert!(!c.join("adapter").exists());
    ok(&headstart(
        &["train", "--resume", c.to_str().unwrap(), "--quiet"],
        &[],
    ));
    assert_eq!(metrics_without_timing(&a), metrics_without_timing(&c));
    let adapter =
        |run: &Path| read_safetensors(&run.join("adapter/adapter_model.safetensors")).unwrap();
    let (ta, tc) = (adapter(&a), adapter(&c));
    assert_eq!(ta.keys().collect::<Vec<_>>(), tc.keys().collect::<Vec<_>>());
    let mut b_trained = false;
    for (k, t) in &ta {
        assert_eq!(t.shape, tc[k].shape, "{k}");
        assert_eq!(
            t.data, tc[k].data,
            "{k}: resumed differs from uninterrupted"
        );
        b_trained |= k.ends_with("lora_B.weight") && t.data.iter().any(|x| *x != 0.0);
    }
    assert!(
        b_trained,
        "the adapters must have trained for the check to mean anything"
    );
    assert_eq!(
        std::fs::read(a.join("model/model.safetensors")).unwrap(),
        std::fs::read(c.join("model/model.safetensors")).unwrap()
    );
}

#[test]
fn a_frozen_strategy_resumes_from_its_partial_checkpoint_and_notices_a_changed_base() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let data = data.to_str().unwrap();
    // A private copy of the base model, so it can be changed.
    let base = tmp.path().join("base");
    common::copy_dir(&fixtures().join("tiny-bert"), &base);
    let with_base = |out: &Path| -> Vec<String> {
        let mut args: Vec<String> = train_args(data, out.to_str().unwrap(), "freeze:1")
            .iter()
            .map(|s| s.to_string())
            .collect();
        let i = args.iter().position(|a| a == "--model").unwrap();
        args[i + 1] = base.to_string_lossy().into_owned();
        args
    };
    let run = |args: &[String], env: &[(&str, &str)]| {
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        headstart(&refs, env)
    };
    let a = tmp.path().join("a");
    let c = tmp.path().join("c");
    ok(&run(&with_base(&a), &[]));
    assert!(a.join("checkpoints").read_dir().unwrap().count() >= 2);
    let killed = run(&with_base(&c), &[("HEADSTART_ABORT_AFTER_STEP", "7")]);
    assert!(!killed.status.success());
    ok(&headstart(
        &["train", "--resume", c.to_str().unwrap(), "--quiet"],
        &[],
    ));
    assert_eq!(metrics_without_timing(&a), metrics_without_timing(&c));
    assert_eq!(
        std::fs::read(a.join("model/model.safetensors")).unwrap(),
        std::fs::read(c.join("model/model.safetensors")).unwrap()
    );

    // A run killed, then its base model's frozen weights changed: resuming
    // says so instead of mixing two models.
    let d = tmp.path().join("d");
    let killed = run(&with_base(&d), &[("HEADSTART_ABORT_AFTER_STEP", "7")]);
    assert!(!killed.status.success());
    common::nudge_weight(
        &base.join("model.safetensors"),
        "embeddings.word_embeddings.weight",
        5,
        1.0,
    );
    let resumed = headstart(&["train", "--resume", d.to_str().unwrap(), "--quiet"], &[]);
    assert!(!resumed.status.success());
    let err = String::from_utf8_lossy(&resumed.stderr);
    assert!(err.contains("have changed since the run started"), "{err}");
}

/// `headstart` run from `dir`.
fn headstart_in(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_headstart"));
    cmd.args(args).current_dir(dir);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("running headstart")
}

#[test]
fn a_run_started_with_relative_paths_resumes_from_another_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    write_data(&work);
    let mut args = train_args("train.csv", "run", "full");
    let i = args.iter().position(|a| *a == "--cache-dir").unwrap();
    args[i + 1] = "cache";
    let killed = headstart_in(&work, &args, &[("HEADSTART_ABORT_AFTER_STEP", "5")]);
    assert!(!killed.status.success());
    // From elsewhere, naming the run by a path relative to there.
    let resumed = headstart_in(
        tmp.path(),
        &["train", "--resume", "work/run", "--quiet"],
        &[],
    );
    ok(&resumed);
    assert!(work.join("run/model/model.safetensors").is_file());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("run/config.json")).unwrap())
            .unwrap();
    for key in ["train", "out", "cache_dir"] {
        let p = config["config"][key].as_str().unwrap();
        assert!(Path::new(p).is_absolute(), "{key}: {p}");
    }
    assert!(Path::new(config["model_dir"].as_str().unwrap()).is_absolute());
}

#[test]
fn a_damaged_checkpoint_is_an_error_naming_the_missing_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let run = tmp.path().join("run");
    let killed = headstart(
        &train_args(data.to_str().unwrap(), run.to_str().unwrap(), "full"),
        &[("HEADSTART_ABORT_AFTER_STEP", "3")],
    );
    assert!(!killed.status.success());
    let ckpt = run.join("checkpoints/step-00000002/model.safetensors");
    let kept: Vec<(String, Vec<usize>, Vec<f32>)> = read_safetensors(&ckpt)
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k != "bert.encoder.layer.1.attention.self.key.weight")
        .map(|(k, t)| (k, t.shape, t.data))
        .collect();
    headstart::hub::write_safetensors(&ckpt, &kept, None).unwrap();
    let out = headstart(&["train", "--resume", run.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lacks `bert.encoder.layer.1.attention.self.key.weight`"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn max_steps_is_honoured_past_the_default_epochs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let out = tmp.path().join("run");
    // 36 training examples in batches of 8: 5 steps an epoch, so 17 steps
    // need a fourth epoch beyond the default three.
    let mut args = train_args(data.to_str().unwrap(), out.to_str().unwrap(), "full");
    let i = args.iter().position(|a| *a == "--epochs").unwrap();
    args.drain(i..i + 2);
    args.extend(["--max-steps", "17"]);
    ok(&headstart(&args, &[]));
    let lines = metrics_without_timing(&out);
    let steps: Vec<u64> = lines
        .iter()
        .filter(|l| l.get("eval").is_none())
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=17).collect::<Vec<u64>>());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["resolved"]["total_steps"], 17);
    assert_eq!(config["resolved"]["epochs"], 4);
    // the schedule ends at zero on the last step
    let last = lines.iter().rfind(|l| l.get("eval").is_none()).unwrap();
    assert!(last["lr"].as_f64().unwrap() < 1e-4, "{last}");
}

#[test]
fn predict_caps_a_stored_max_length_at_the_model_positions() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let out = tmp.path().join("run");
    ok(&headstart(
        &train_args(data.to_str().unwrap(), out.to_str().unwrap(), "head"),
        &[],
    ));
    let meta_path = out.join("model/headstart.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["max_length"] = 100_000.into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let long = "the lungs are clear. ".repeat(60);
    let predicted = ok(&headstart(
        &["predict", "--model", out.to_str().unwrap(), &long],
        &[],
    ));
    assert!(predicted.contains("\"label\""), "{predicted}");
    // Training asks for no more than the model has.
    let too_long = tmp.path().join("too-long");
    let mut args = train_args(data.to_str().unwrap(), too_long.to_str().unwrap(), "head");
    let i = args.iter().position(|a| *a == "--max-length").unwrap();
    args[i + 1] = "100000";
    let out = headstart(&args, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--max-length 100000 exceeds the model's 64 positions"),
        "{err}"
    );
}

#[test]
fn model_gets_the_last_weights_by_default_and_the_best_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let tensors = |path: PathBuf| {
        let mut t: Vec<(String, Vec<f32>)> = read_safetensors(&path)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.data))
            .collect();
        t.sort_by(|a, b| a.0.cmp(&b.0));
        t
    };
    for choice in ["last", "best"] {
        let out = tmp.path().join(choice);
        let mut args = train_args(data.to_str().unwrap(), out.to_str().unwrap(), "full");
        // A rate far too high makes the validation loss jump about; the run
        // stops at the first validation that is no better, one step after
        // the best: the best and the last weights differ.
        let i = args.iter().position(|a| *a == "--lr").unwrap();
        args[i + 1] = "0.5";
        args.extend([
            "--eval-every",
            "1",
            "--metric",
            "loss",
            "--warmup-ratio",
            "0",
            "--patience",
            "1",
            "--export",
            choice,
        ]);
        let stdout = ok(&headstart(&args, &[]));
        let exported = tensors(out.join("model/model.safetensors"));
        let last = std::fs::read_to_string(out.join("checkpoints/LAST")).unwrap();
        let final_weights = tensors(
            out.join("checkpoints")
                .join(last.trim())
                .join("model.safetensors"),
        );
        let best = tensors(out.join("best/model.safetensors"));
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("checkpoints").join(last.trim()).join("state.json"))
                .unwrap(),
        )
        .unwrap();
        assert_ne!(
            state["best_step"], state["step"],
            "best and last coincide: {state}"
        );
        match choice {
            "last" => {
                assert_eq!(exported, final_weights);
                assert!(
                    stdout.contains("the weights after the last step (step 2,"),
                    "{stdout}"
                );
            }
            _ => {
                assert_eq!(exported, best);
                assert!(
                    stdout.contains("the best validation loss (step 1,"),
                    "{stdout}"
                );
            }
        }
        assert_ne!(best, final_weights);
    }
}
