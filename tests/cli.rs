//! The `headstart` binary end to end: real model, real data, and bad input.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use headstart::embed::cosine;
use headstart::hub::read_safetensors;

use common::{copy_dir, fixtures, minilm_dir};

fn headstart(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_headstart"));
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("running headstart")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A failure must be a clean error: non-zero exit, a message, no panic.
fn assert_clean_error(out: &Output, needles: &[&str]) -> String {
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success: {err}"
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        !err.contains("panicked"),
        "panic instead of an error: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "stderr lacks `{n}`: {err}");
    }
    err
}

#[test]
fn inspect_minilm_counts_every_parameter() {
    minilm_dir();
    let out = headstart(&["inspect", "all-MiniLM-L6-v2"], &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("22,713,216 in total"), "{stdout}");
    assert!(stdout.contains("encoder.layer.5"), "{stdout}");

    let out = headstart(&["inspect", "all-MiniLM-L6-v2", "--json"], &[]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total_params"], 22_713_216);
    let groups = v["groups"].as_array().unwrap();
    // embeddings, 6 layers, pooler
    assert_eq!(groups.len(), 8);
    assert_eq!(groups[0]["params"], 11_918_592);
    assert_eq!(groups[1]["params"], 1_774_464);
    assert_eq!(groups[7]["params"], 147_840);
    // position_ids is an I64 buffer, not a parameter.
    assert_eq!(v["dtype"], "F32 (103 tensors), I64 (1 tensor)");
}

#[test]
fn embed_minilm_matches_sentence_transformers_from_file_and_args() {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("minilm_reference.json")).unwrap(),
    )
    .unwrap();
    let sentences: Vec<String> = meta["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let reference = read_safetensors(&fixtures().join("minilm_reference.safetensors")).unwrap();
    let want = &reference["st_embeddings"];
    let dim = want.shape[1];

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("texts.txt");
    std::fs::write(&file, sentences[..4].join("\n") + "\n\n").unwrap();
    let model = minilm_dir();
    let mut args = vec![
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--normalize",
        "--file",
        file.to_str().unwrap(),
    ];
    args.extend(sentences[4..].iter().map(String::as_str));
    let out = headstart(&args, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), sentences.len());
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["text"], sentences[i].as_str());
        let v: Vec<f32> = line["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(v.len(), dim);
        let c = cosine(&v, &want.data[i * dim..(i + 1) * dim]);
        assert!(c >= 0.99999, "sentence {i}: cosine {c}");
    }
}

#[test]
fn truncated_safetensors_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("tiny-bert"), dir.path());
    let weights = dir.path().join("model.safetensors");
    let len = std::fs::metadata(&weights).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&weights)
        .unwrap();
    f.set_len(len / 2).unwrap();
    let out = headstart(&["inspect", dir.path().to_str().unwrap()], &[]);
    let err = assert_clean_error(&out, &["model.safetensors"]);
    assert!(
        err.contains("truncated") || err.contains("corrupt"),
        "{err}"
    );
    eprintln!("truncated safetensors -> {err}");
}

#[test]
fn missing_config_json_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("tiny-bert"), dir.path());
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let out = headstart(&["inspect", dir.path().to_str().unwrap()], &[]);
    let err = assert_clean_error(&out, &["config.json"]);
    eprintln!("missing config.json -> {err}");
    let out = headstart(
        &["embed", "--model", dir.path().to_str().unwrap(), "hello"],
        &[],
    );
    assert_clean_error(&out, &["config.json"]);
}

#[test]
fn hidden_size_that_disagrees_with_the_weights_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("tiny-bert"), dir.path());
    let path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["hidden_size"] = 64.into();
    std::fs::write(&path, config.to_string()).unwrap();
    let out = headstart(&["inspect", dir.path().to_str().unwrap()], &[]);
    let err = assert_clean_error(
        &out,
        &[
            "embeddings.word_embeddings.weight",
            "[103, 32]",
            "[103, 64]",
            "hidden_size",
        ],
    );
    eprintln!("hidden_size mismatch -> {err}");
}

#[test]
fn hub_id_resolves_offline_through_the_hf_cache() {
    let cache = tempfile::tempdir().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.path().join("models--test-org--tiny-bert");
    copy_dir(
        &fixtures().join("tiny-bert"),
        &repo.join("snapshots").join(commit),
    );
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let offline = Path::new("1");
    let envs = [("HF_HUB_CACHE", cache.path()), ("HF_HUB_OFFLINE", offline)];

    let out = headstart(&["inspect", "test-org/tiny-bert"], &envs);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(commit), "{}", text(&out.stdout));

    let out = headstart(&["inspect", &format!("test-org/tiny-bert@{commit}")], &envs);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = headstart(&["inspect", "test-org/absent-model"], &envs);
    let err = assert_clean_error(&out, &["test-org/absent-model"]);
    eprintln!("absent hub id offline -> {err}");
}

#[test]
fn embed_without_texts_is_a_clear_error() {
    let out = headstart(&["embed", "--model", "all-MiniLM-L6-v2"], &[]);
    assert_clean_error(&out, &["nothing to embed"]);
    let out = headstart(
        &[
            "embed",
            "--model",
            "all-MiniLM-L6-v2",
            "--file",
            "/nonexistent/texts.txt",
        ],
        &[],
    );
    assert_clean_error(&out, &["/nonexistent/texts.txt"]);
}

#[test]
fn predict_and_eval_run_a_classifier_adapter_from_peft_on_its_base() {
    // tests/fixtures/peft/bert-cls: PEFT's adapter with its own classifier
    // (modules_to_save) on tiny-bert-cls, named by base_model_name_or_path
    let adapter = fixtures().join("peft/bert-cls");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(adapter.join("reference.json")).unwrap())
            .unwrap();
    // ". ; !" is [CLS] . ; ! [SEP]: ids 2 5 7 9 3, PEFT's input row 0
    assert_eq!(
        reference["input_ids"][0],
        serde_json::json!([2, 5, 7, 9, 3])
    );
    let want: Vec<f32> = reference["logits"].as_array().unwrap()[..3]
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let out = headstart(
        &["predict", "--model", adapter.to_str().unwrap(), ". ; !"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    let got: Vec<f32> = v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    let d = common::max_abs_diff(&got, &want);
    assert!(d < 1e-5 * scale, "PEFT's logits {want:?}, ours {got:?}");
    // the base's labels name the adapter's classes
    assert!(v["probabilities"].get("positive").is_some(), "{v}");

    // eval, with the base given explicitly
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("test.csv");
    std::fs::write(&data, "text,label\n. ; !,positive\n( ),negative\n").unwrap();
    let base = fixtures().join("tiny-bert-cls");
    let out = headstart(
        &[
            "eval",
            "--model",
            adapter.to_str().unwrap(),
            "--base",
            base.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(m["examples"], 2, "{m}");

    // a base that is not there
    let out = headstart(
        &[
            "predict",
            "--model",
            adapter.to_str().unwrap(),
            "--base",
            "./no-such-base",
            "x",
        ],
        &[],
    );
    assert_clean_error(&out, &["no-such-base"]);
}
