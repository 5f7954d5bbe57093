//! `train --task causal-lm` and `generate` from the command line, on the
//! random-initialised GPT-2 and Llama fixtures with a word-level tokenizer
//! written here: a corpus where every word is followed by the next number
//! teaches the successor, which greedy generation must then continue.

mod common;

use std::path::{Path, PathBuf};

/// Documents of 16 consecutive numbers from 10 to 10 + `modulo` - 1 (then
/// round again), one per paragraph.
fn counting_corpus(path: &Path, docs: usize, modulo: usize) {
    let text: Vec<String> = (0..docs)
        .map(|d| {
            (0..16)
                .map(|k| format!("t{}", 10 + (d * 7 + k) % modulo))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    std::fs::write(path, text.join("\n\n")).unwrap();
}

/// A temporary copy of a fixture model with a word tokenizer, and a
/// counting corpus of `docs` documents beside it.
fn setup(
    fixture: &str,
    vocab: usize,
    eos: usize,
    docs: usize,
) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    common::copy_dir(&common::fixtures().join(fixture), &model);
    common::word_tokenizer(&model, vocab, eos);
    let corpus = tmp.path().join("corpus.txt");
    counting_corpus(&corpus, docs, 40);
    (tmp, model, corpus)
}

/// Runs `headstart train --task causal-lm` expecting a failure; its stderr.
fn train_fails(model: &Path, train: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["train", "--task", "causal-lm"];
    let (m, t, o) = (
        model.to_str().unwrap(),
        train.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    args.extend(["--model", m, "--train", t, "--out", o]);
    args.extend(extra);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_headstart"))
        .args(&args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn eval_losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["eval"]["loss"].as_f64()
        })
        .collect()
}

fn learns_to_count(fixture: &str, strategy: &str, expect_class: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    common::copy_dir(&common::fixtures().join(fixture), &model);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    let vocab = config["vocab_size"].as_u64().unwrap() as usize;
    let eos = match &config["eos_token_id"] {
        serde_json::Value::Array(a) => a[0].as_u64().unwrap(),
        v => v.as_u64().unwrap(),
    } as usize;
    common::word_tokenizer(&model, vocab, eos);
    let corpus = tmp.path().join("corpus.txt");
    counting_corpus(&corpus, 120, 40);
    let run = tmp.path().join("run");
    let (m, c, r) = (
        model.to_str().unwrap(),
        corpus.to_str().unwrap(),
        run.to_str().unwrap(),
    );
    common::headstart_ok(&[
        "train",
        "--task",
        "causal-lm",
        "--model",
        m,
        "--train",
        c,
        "--strategy",
        strategy,
        "--epochs",
        "25",
        "--batch-size",
        "8",
        "--block-size",
        "32",
        "--lr",
        "5e-3",
        "--eval-every",
        "40",
        "--out",
        r,
        "--quiet",
    ]);
    let losses = eval_losses(&run);
    assert!(losses.len() >= 3, "{losses:?}");
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < 0.5 * first, "validation loss {first} -> {last}");
    let exported: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("model/config.json")).unwrap())
            .unwrap();
    assert_eq!(exported["architectures"][0], expect_class);
    assert!(run.join("model/tokenizer.json").is_file());

    let out = common::headstart_ok(&[
        "generate",
        "--model",
        r,
        "--prompt",
        "t10 t11 t12",
        "--prompt",
        "t31 t32",
        "--max-new-tokens",
        "3",
        "--json",
    ]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["completion"], "t13 t14 t15", "{out}");
    assert_eq!(lines[1]["completion"], "t33 t34 t35", "{out}");
    assert_eq!(lines[0]["stop"], "length");

    // beam search finds the same continuations; sampling flags do not mix with it
    let beam = common::headstart_ok(&[
        "generate",
        "--model",
        r,
        "--prompt",
        "t10 t11 t12",
        "--prompt",
        "t31 t32",
        "--max-new-tokens",
        "3",
        "--beams",
        "3",
        "--no-repeat-ngram",
        "2",
        "--json",
    ]);
    let completions: Vec<String> = beam
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["completion"].to_string())
        .collect();
    assert_eq!(
        completions,
        ["\"t13 t14 t15\"", "\"t33 t34 t35\""],
        "{beam}"
    );
    let e = headstart_fails(&[
        "generate",
        "--model",
        r,
        "--prompt",
        "t1",
        "--beams",
        "2",
        "--temperature",
        "0.7",
    ]);
    assert!(
        e.contains("beam search (--beams, --no-repeat-ngram) is deterministic"),
        "{e}"
    );
}

#[test]
fn gpt2_trained_fully_counts_on() {
    learns_to_count("gpt2/tied", "full", "GPT2LMHeadModel");
}

#[test]
fn llama_with_a_frozen_layer_counts_on() {
    learns_to_count("llama/tied_gqa", "freeze:1", "LlamaForCausalLM");
}

#[test]
fn an_empty_corpus_and_a_block_above_the_context_are_errors() {
    let (tmp, model, corpus) = setup("gpt2/tied", 96, 94, 20);
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let out = tmp.path().join("run");
    let run = |train: &Path, extra: &[&str]| train_fails(&model, train, &out, extra);
    let e = run(&empty, &[]);
    assert!(e.contains("empty.txt") && e.contains("empty"), "{e}");
    let e = run(&corpus, &["--block-size", "100"]);
    assert!(e.contains("100") && e.contains("64"), "{e}");
    let e = run(&corpus, &["--metric", "macro_f1"]);
    assert!(e.contains("macro_f1"), "{e}");
}

#[test]
fn a_lora_run_on_llama_exports_a_merged_model_and_a_peft_adapter() {
    let (tmp, model, corpus) = setup("llama/tied_gqa", 100, 2, 60);
    let run = tmp.path().join("run");
    common::headstart_ok(&[
        "train",
        "--task",
        "causal-lm",
        "--model",
        model.to_str().unwrap(),
        "--train",
        corpus.to_str().unwrap(),
        "--strategy",
        "lora:4",
        "--lora-targets",
        "q_proj,v_proj,gate_proj,up_proj,down_proj",
        "--epochs",
        "8",
        "--batch-size",
        "8",
        "--block-size",
        "32",
        "--lr",
        "1e-2",
        "--eval-every",
        "10",
        "--out",
        run.to_str().unwrap(),
        "--quiet",
    ]);
    let losses = eval_losses(&run);
    assert!(
        losses.last().unwrap() < &(0.8 * losses[0]),
        "validation loss {losses:?}"
    );
    let adapter: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(adapter["task_type"], "CAUSAL_LM");
    assert_eq!(adapter["r"], 4);
    let base = headstart::hub::Checkpoint::load(&model).unwrap();
    let merged = headstart::hub::Checkpoint::load(&run.join("model")).unwrap();
    assert!(!merged.tensors.keys().any(|k| k.contains("lora_")));
    // untargeted weights as loaded, targeted ones moved by B A
    for (key, same) in [
        ("model.layers.0.self_attn.k_proj.weight", true),
        ("model.embed_tokens.weight", true),
        ("model.layers.1.self_attn.q_proj.weight", false),
        ("model.layers.0.mlp.down_proj.weight", false),
    ] {
        assert_eq!(
            base.tensors[key].data == merged.tensors[key].data,
            same,
            "{key}"
        );
    }
    // the merged model generates through the CLI
    let out = common::headstart_ok(&[
        "generate",
        "--model",
        run.to_str().unwrap(),
        "--prompt",
        "t10 t11",
        "--max-new-tokens",
        "2",
        "--json",
    ]);
    assert_eq!(out.lines().count(), 1);
}

#[test]
fn an_unknown_lora_target_is_an_error_listing_the_valid_ones() {
    let (tmp, model, corpus) = setup("gpt2/tied", 96, 94, 20);
    let extra = ["--strategy", "lora", "--lora-targets", "q_proj"];
    let e = train_fails(&model, &corpus, &tmp.path().join("run"), &extra);
    assert!(e.contains("q_proj") && e.contains("c_attn"), "{e}");
}

#[test]
fn compare_reports_held_out_perplexity_per_strategy_with_samples() {
    let (tmp, model, corpus) = setup("gpt2/tied", 96, 94, 60);
    let out = tmp.path().join("cmp");
    let (m, c, o) = (
        model.to_str().unwrap(),
        corpus.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let table = common::headstart_ok(&[
        "compare",
        "--task",
        "causal-lm",
        "--model",
        m,
        "--train",
        c,
        "--strategies",
        "scratch,lora:4,full",
        "--seeds",
        "1",
        "--budget",
        "12steps",
        "--batch-size",
        "8",
        "--block-size",
        "32",
        "--lr",
        "5e-3",
        "--out",
        o,
    ]);
    assert!(table.contains("test perplexity"), "{table}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["task"], "causal-lm");
    assert_eq!(report["metric"], "perplexity");
    // 20% of the 60 documents held out, as JSON lines of the text column
    assert_eq!(report["test_examples"], 12);
    let test_file = out.join("data/test.jsonl");
    assert_eq!(
        std::fs::read_to_string(&test_file).unwrap().lines().count(),
        12
    );
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    // training documents (48 less the validation share), not packed rows
    let n = runs[0]["train_examples"].as_u64().unwrap();
    assert!((40..48).contains(&n), "{n}");
    for r in runs {
        let ppl = r["test"]["perplexity"].as_f64().unwrap();
        let loss = r["test"]["loss"].as_f64().unwrap();
        assert!(ppl > 1.0 && (ppl - loss.exp()).abs() < 1e-6 * ppl, "{r}");
        assert!(r["test"]["tokens"].as_u64().unwrap() > 100);
    }
    let summary = report["summary"].as_array().unwrap();
    for s in summary {
        assert_eq!(s["score"]["mean"], s["perplexity"]["mean"], "{s}");
    }
    // `eval` on the same held-out file gives the number the table reports,
    // whatever the batch size
    let full = runs
        .iter()
        .find(|r| r["strategy"] == "full")
        .expect("a full run");
    let dir = full["dir"].as_str().unwrap();
    for batch in ["1", "5"] {
        let json = common::headstart_ok(&[
            "eval",
            "--model",
            dir,
            "--data",
            test_file.to_str().unwrap(),
            "--batch-size",
            batch,
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["tokens"], full["test"]["tokens"]);
        let (a, b) = (
            v["loss"].as_f64().unwrap(),
            full["test"]["loss"].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-4, "eval {a} vs compare {b}");
    }
    // three held-out prompts, continued by the untuned model and each strategy
    let samples = report["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 3);
    for s in samples {
        let who: Vec<&str> = s["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o[0].as_str().unwrap())
            .collect();
        assert_eq!(who, ["pretrained, untuned", "scratch", "lora:4", "full"]);
        assert_eq!(s["prompt"].as_str().unwrap().split(' ').count(), 8);
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Held-out prompts") && html.contains("next-token accuracy"));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| held-out text |"), "{md}");
}

/// Runs `headstart` expecting a failure; its stderr.
fn headstart_fails(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_headstart"))
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn generate_runs_a_peft_adapter_on_its_base() {
    // the adapter PEFT wrote (scripts/make_peft_fixtures.py) and its base
    // with a word tokenizer (`t5` is id 5, `<eos>` id 2)
    let (_tmp, model, _) = setup("llama/tied_gqa", 100, 2, 1);
    let adapter = common::fixtures().join("peft/llama");
    let (a, m) = (adapter.to_str().unwrap(), model.to_str().unwrap());
    // PEFT's reference input ids, row 0
    let prompt = "t1 t5 t7 <eos> t3 t9";
    let next = |args: &[&str]| -> String {
        let mut all = vec![
            "generate",
            "--prompt",
            prompt,
            "--max-new-tokens",
            "1",
            "--json",
        ];
        all.extend(args);
        let out = common::headstart_ok(&all);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        v["completion"].as_str().unwrap().trim().to_string()
    };
    // the most likely next token under PEFT's logits is 82; the base's is 60
    assert_eq!(next(&["--model", a, "--base", m]), "t82");
    assert_eq!(next(&["--model", m]), "t60");
    let e = headstart_fails(&["generate", "--model", m, "--base", m, "--prompt", "t1"]);
    assert!(
        e.contains("--base") && e.contains("adapter_config.json"),
        "{e}"
    );
    let cls = common::fixtures().join("peft/bert-cls");
    let e = headstart_fails(&[
        "generate",
        "--model",
        cls.to_str().unwrap(),
        "--prompt",
        "t1",
    ]);
    assert!(e.contains("SEQ_CLS") && e.contains("CAUSAL_LM"), "{e}");
}
