//! `train --task captioning`, `eval` and `predict` of a captioner from the
//! command line, on the random-initialised ResNet (encoder, frozen) and
//! GPT-2 (language model) fixtures with a word-level tokenizer: solid
//! red, green and blue images whose captions name their colour's words
//! must be captioned right after training, and the exported captioner must
//! caption exactly as the run did. Bad inputs are clear errors.

mod common;

use std::path::{Path, PathBuf};

/// The caption of each colour (words of the fixture's tokenizer).
const COLOURS: [([u8; 3], &str); 3] = [
    ([220, 30, 30], "t10 t11 t12"),
    ([30, 200, 40], "t20 t21 t22"),
    ([40, 50, 210], "t30 t31 t32"),
];

/// Images of each colour (a darker square at a varying place) and caption
/// tables `train.csv` (`per_class` images each, the first image with a
/// second caption row) and `val.csv` (2 each).
fn write_data(dir: &Path, per_class: usize) {
    std::fs::create_dir_all(dir.join("img")).unwrap();
    let mut train = String::from("image,caption\n");
    let mut val = String::from("image,caption\n");
    for (c, (rgb, caption)) in COLOURS.iter().enumerate() {
        for i in 0..per_class + 2 {
            let img = image::RgbImage::from_fn(32, 32, |x, y| {
                let o = (i as u32 * 3) % 20;
                if (o..o + 8).contains(&x) && (o..o + 8).contains(&y) {
                    image::Rgb(rgb.map(|v| v / 2))
                } else {
                    image::Rgb(*rgb)
                }
            });
            let name = format!("img/{c}_{i}.png");
            img.save(dir.join(&name)).unwrap();
            let table = if i < per_class { &mut train } else { &mut val };
            table.push_str(&format!("{name},{caption}\n"));
            if i == 0 {
                table.push_str(&format!("{name},{caption}\n"));
            }
        }
    }
    std::fs::write(dir.join("train.csv"), train).unwrap();
    std::fs::write(dir.join("val.csv"), val).unwrap();
}

/// A temporary folder with the data and a copy of the GPT-2 fixture with
/// a word tokenizer; returns it and the language model's directory.
fn setup(per_class: usize) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let lm = tmp.path().join("lm");
    common::copy_dir(&common::fixtures().join("gpt2/tied"), &lm);
    common::word_tokenizer(&lm, 96, 94);
    write_data(tmp.path(), per_class);
    (tmp, lm)
}

fn encoder() -> String {
    common::fixtures()
        .join("vision/resnet_hf_random")
        .display()
        .to_string()
}

/// `train --task captioning` arguments on the data in `dir`.
fn train_args(dir: &Path, lm: &Path, run: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--task",
        "captioning",
        "--encoder",
        &encoder(),
        "--encoder-strategy",
        "frozen",
        "--decoder",
        lm.to_str().unwrap(),
        "--train",
        dir.join("train.csv").to_str().unwrap(),
        "--val",
        dir.join("val.csv").to_str().unwrap(),
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--out",
        run.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn headstart(args: &[String]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_headstart"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[String]) -> String {
    let out = headstart(args);
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(args: &[String]) -> String {
    let out = headstart(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The validations of a run's `metrics.jsonl`.
fn validations(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v.get("eval").cloned()
        })
        .collect()
}

/// Training flags under which the colours are learned.
const COLOUR_RUN: [&str; 8] = [
    "--decoder-strategy",
    "full",
    "--epochs",
    "12",
    "--lr",
    "3e-3",
    "--prefix-length",
    "2",
];

/// The last validation, after checking the caption loss fell to under a
/// third of the first's.
fn loss_fell(evals: &[serde_json::Value]) -> &serde_json::Value {
    let (first, last) = (&evals[0], evals.last().unwrap());
    assert!(
        last["loss"].as_f64().unwrap() < first["loss"].as_f64().unwrap() / 3.0,
        "the caption loss fell from {} to {}",
        first["loss"],
        last["loss"]
    );
    last
}

/// The tensor names in a safetensors file's header.
fn safetensors_header(path: &Path) -> String {
    let weights = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    String::from_utf8_lossy(&weights[8..8 + header_len]).into_owned()
}

/// The `{"image", "caption"}` lines `predict` writes for `images`.
fn predict_json(model: &Path, images: &[String], extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec![
        "predict".to_string(),
        "--model".into(),
        model.display().to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args.extend(images.iter().cloned());
    ok(&args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `eval --json` of `model` on `val.csv` in `dir`.
fn eval_json(model: &Path, dir: &Path) -> serde_json::Value {
    let out = ok(&[
        "eval".into(),
        "--model".into(),
        model.display().to_string(),
        "--data".into(),
        dir.join("val.csv").display().to_string(),
        "--json".into(),
    ]);
    serde_json::from_str(&out).unwrap()
}

/// `eval` of `model` on `val.csv` in `dir` writes the captions of the
/// run's `last` validation, with its caption loss, and scores CIDEr-D
/// above 1 (the colours learned).
fn eval_captions_as_the_run_did(model: &Path, dir: &Path, last: &serde_json::Value) {
    let m = eval_json(model, dir);
    assert_eq!(m["samples"], last["samples"]);
    let (a, b) = (m["loss"].as_f64().unwrap(), last["loss"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-4, "loss: eval {a}, run {b}");
    assert!(m["cider_d"].as_f64().unwrap() > 1.0, "{m}");
}

#[test]
fn a_captioner_learns_the_colours_and_its_export_captions_as_the_run_did() {
    let (tmp, lm) = setup(8);
    let run = tmp.path().join("run");
    ok(&train_args(tmp.path(), &lm, &run, &COLOUR_RUN));
    let evals = validations(&run);
    assert_eq!(evals.len(), 12, "one validation per epoch");
    let last = loss_fell(&evals);

    // the export: encoder and mapper beside a transformers causal-LM directory
    let model = run.join("model");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "resnet");
    assert_eq!(config["captioning"]["decoder"]["dir"], "decoder");
    let decoder: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("decoder/config.json")).unwrap())
            .unwrap();
    assert_eq!(decoder["model_type"], "gpt2");
    assert!(model.join("decoder/tokenizer.json").is_file());

    // eval of the export captions the validation images exactly as the
    // run's last validation did, and scores them the same
    let m = eval_json(&run, tmp.path());
    assert_eq!(m["samples"], last["samples"]);
    for k in ["cider_d", "rouge_l", "loss"] {
        let (a, b) = (m[k].as_f64().unwrap(), last[k].as_f64().unwrap());
        assert!((a - b).abs() < 1e-4, "{k}: eval {a}, run {b}");
    }

    // every held-out image is captioned with its colour's words
    let images: Vec<String> = (0..3)
        .flat_map(|c| (8..10).map(move |i| format!("{c}_{i}.png")))
        .map(|f| tmp.path().join("img").join(f).display().to_string())
        .collect();
    let got = predict_json(&run, &images, &[]);
    assert_eq!(got.len(), 6);
    for (k, g) in got.iter().enumerate() {
        assert_eq!(g["image"], images[k]);
        assert_eq!(g["caption"], COLOURS[k / 2].1, "{g}");
    }
    assert_eq!(m["label_accuracy"], serde_json::Value::Null);
    assert!((m["cider_d"].as_f64().unwrap()) > 1.0, "{m}");
}

/// `--mapper transformer` on a 2 x 2 grid of the frozen encoder's last
/// map (through the feature cache): it learns the colours, and the export
/// (grid, layers, the mapper's weights) captions exactly as the run did.
#[test]
fn a_transformer_mapper_on_a_feature_grid_learns_and_exports() {
    let (tmp, lm) = setup(8);
    let run = tmp.path().join("run");
    let mut extra = COLOUR_RUN.to_vec();
    extra.extend([
        "--mapper",
        "transformer",
        "--mapper-layers",
        "1",
        "--feature-grid",
        "2",
    ]);
    let out = headstart(&train_args(tmp.path(), &lm, &run, &extra));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("transformer (1 layer) on a 2x2 grid"), "{log}");
    let evals = validations(&run);
    let last = loss_fell(&evals);
    let model = run.join("model");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["captioning"]["mapper"], "transformer");
    assert_eq!(config["captioning"]["feature_grid"], 2);
    assert_eq!(config["captioning"]["mapper_layers"], 1);
    let header = safetensors_header(&model.join("model.safetensors"));
    assert!(header.contains("transformer.queries"), "{header}");
    eval_captions_as_the_run_did(&model, tmp.path(), last);
}

/// `--mapper cross-attention` (transformers' `VisionEncoderDecoderModel`):
/// every token of a frozen ViT (served by the feature cache) is what each
/// GPT-2 block cross-attends to, through a projection from the ViT's
/// width (64) to GPT-2's (48). It learns the colours; the export's
/// decoder is a GPT-2 with `add_cross_attention` and its cross-attention
/// weights, and it captions exactly as the run did, greedily and by beam
/// search.
#[test]
fn a_cross_attending_language_model_reads_a_vit_and_exports() {
    let (tmp, lm) = setup(8);
    let run = tmp.path().join("run");
    let vit = common::fixtures()
        .join("vision/vit_random")
        .display()
        .to_string();
    let mut args = train_args(tmp.path(), &lm, &run, &COLOUR_RUN);
    let i = args.iter().position(|a| a == "--encoder").unwrap();
    args[i + 1] = vit;
    args.extend(["--mapper".to_string(), "cross-attention".to_string()]);
    let out = headstart(&args);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("cross-attention mapper")
            && log.contains("reading the image by cross-attention"),
        "{log}"
    );
    assert!(
        log.contains("feature cache"),
        "the frozen ViT is cached: {log}"
    );
    let evals = validations(&run);
    let last = loss_fell(&evals);

    let model = run.join("model");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "vit");
    assert_eq!(config["captioning"]["mapper"], "cross-attention");
    assert_eq!(config["captioning"]["start"], serde_json::json!([94]));
    let decoder: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("decoder/config.json")).unwrap())
            .unwrap();
    assert_eq!(decoder["add_cross_attention"], true);
    let header = safetensors_header(&model.join("decoder/model.safetensors"));
    assert!(
        header.contains("h.0.crossattention.c_attn.weight"),
        "{header}"
    );
    assert!(header.contains("h.2.ln_cross_attn.weight"), "{header}");
    eval_captions_as_the_run_did(&run, tmp.path(), last);

    let images: Vec<String> = (0..3)
        .map(|c| {
            tmp.path()
                .join(format!("img/{c}_9.png"))
                .display()
                .to_string()
        })
        .collect();
    for beams in ["1", "3"] {
        let got = predict_json(&model, &images, &["--beams", beams]);
        assert_eq!(got.len(), 3);
        for (c, g) in got.iter().enumerate() {
            assert_eq!(g["caption"], COLOURS[c].1, "{beams} beams: {g}");
        }
    }

    // the same model in transformers' VisionEncoderDecoderModel layout,
    // which headstart's parity-tested loader reads, captions the same when
    // predict takes it (converted once into a captioner, in HEADSTART_HOME)
    let ved = model.join("vision-encoder-decoder");
    let top: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ved.join("config.json")).unwrap()).unwrap();
    assert_eq!(top["model_type"], "vision-encoder-decoder");
    assert_eq!(top["decoder_start_token_id"], 94);
    let header = safetensors_header(&ved.join("model.safetensors"));
    assert!(header.contains("enc_to_dec_proj.weight"), "{header}");
    headstart::models::encoder_decoder::VisionEncoderDecoder::load(
        &ved,
        &burn::tensor::Device::default(),
    )
    .unwrap();
    let home = tmp.path().join("home");
    let in_home = |args: &[String]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_headstart"))
            .args(args)
            .env("HEADSTART_HOME", &home)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let mut args = vec![
        "predict".to_string(),
        "--model".into(),
        ved.display().to_string(),
    ];
    args.extend(images.iter().cloned());
    let out = in_home(&args);
    let captions: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(captions, predict_json(&model, &images, &[]));

    // and train takes it as both parts: with a learning rate too small to
    // move anything, the first validation captions as the run it came from
    let again = tmp.path().join("again");
    let mut args = train_args(tmp.path(), &lm, &again, &["--epochs", "1", "--lr", "1e-20"]);
    let i = args.iter().position(|a| a == "--encoder").unwrap();
    args[i + 1] = ved.display().to_string();
    let i = args.iter().position(|a| a == "--decoder").unwrap();
    args.drain(i..i + 2);
    let i = args
        .iter()
        .position(|a| a == "--decoder-strategy")
        .unwrap_or(args.len());
    args.truncate(i);
    args.extend(["--decoder-strategy".into(), "full".into()]);
    let out = in_home(&args);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("mapper from"), "{log}");
    assert_eq!(validations(&again)[0]["samples"], last["samples"]);

    // compare takes it as the encoder of its pairs, with no --decoder
    let cmp = tmp.path().join("cmp");
    let args: Vec<String> = [
        "compare",
        "--task",
        "captioning",
        "--encoder",
        ved.to_str().unwrap(),
        "--train",
        tmp.path().join("train.csv").to_str().unwrap(),
        "--test",
        tmp.path().join("val.csv").to_str().unwrap(),
        "--strategies",
        "frozen+frozen",
        "--seeds",
        "1",
        "--budget",
        "1ep",
        "--image-size",
        "32",
        "--out",
        cmp.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    in_home(&args);
    assert!(cmp.join("report.json").is_file());
}

#[test]
fn a_lora_language_model_is_exported_merged_and_beam_search_decodes_it() {
    let (tmp, lm) = setup(4);
    let run = tmp.path().join("run");
    let stdout = ok(&train_args(
        tmp.path(),
        &lm,
        &run,
        &["--decoder-strategy", "lora:4", "--epochs", "1"],
    ));
    assert!(stdout.contains("model:"), "{stdout}");
    let weights = std::fs::read(run.join("model/decoder/model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&weights[8..8 + header_len]);
    assert!(header.contains("wte.weight"), "{header}");
    assert!(!header.contains("lora"), "adapters are merged: {header}");
    // the run saved its adapters in its checkpoint config
    let rc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(rc["task_state"]["decoder"]["lora"]["r"], 4);
    let image = tmp.path().join("img/0_4.png").display().to_string();
    let line = ok(&[
        "predict".into(),
        "--model".into(),
        run.display().to_string(),
        "--beams".into(),
        "3".into(),
        image.clone(),
    ]);
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["image"], image);
    assert!(v["caption"].is_string());
}

#[test]
fn bad_captioning_inputs_are_clear_errors() {
    let (tmp, lm) = setup(2);
    let dir = tmp.path();
    let run = dir.join("run");

    // no language model
    let mut args = train_args(dir, &lm, &run, &[]);
    let i = args.iter().position(|a| a == "--decoder").unwrap();
    args.drain(i..i + 2);
    assert!(fails(&args).contains("--decoder is required"));

    // a row without a caption
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "image,caption\nimg/0_0.png,t10 t11\nimg/0_1.png,\n").unwrap();
    let mut args = train_args(dir, &lm, &run, &[]);
    let i = args.iter().position(|a| a == "--train").unwrap();
    args[i + 1] = bad.display().to_string();
    let err = fails(&args);
    assert!(err.contains("bad.csv") && err.contains("line 3"), "{err}");
    assert!(err.contains("caption"), "{err}");

    // a missing image file
    std::fs::write(
        &bad,
        "image,caption\nimg/0_0.png,t10 t11\nimg/nope.png,t10\n",
    )
    .unwrap();
    let err = fails(&args);
    assert!(err.contains("line 3") && err.contains("not found"), "{err}");

    // a caption longer than the language model's context (64 positions)
    let long: Vec<String> = (0..60).map(|k| format!("t{}", 10 + k % 50)).collect();
    std::fs::write(
        &bad,
        format!(
            "image,caption\nimg/0_0.png,t10 t11\nimg/0_1.png,{}\n",
            long.join(" ")
        ),
    )
    .unwrap();
    let err = fails(&args);
    assert!(
        err.contains("exceeds the language model's context of 64 positions")
            && err.contains("0_1.png"),
        "{err}"
    );

    // no mapper, and features (128) of another size than the embeddings (48)
    let args = train_args(
        dir,
        &lm,
        &run,
        &["--mapper", "none", "--prefix-length", "1"],
    );
    let err = fails(&args);
    assert!(
        err.contains("128") && err.contains("48") && err.contains("--mapper mlp"),
        "{err}"
    );

    // a grid with no mapper to take its cells
    let err = fails(&train_args(
        tmp.path(),
        &lm,
        &run,
        &[
            "--mapper",
            "none",
            "--prefix-length",
            "1",
            "--feature-grid",
            "2",
        ],
    ));
    assert!(err.contains("4 cells"), "{err}");
    // cross-attention for a family transformers gives none (Llama)
    let llama = common::fixtures().join("llama/tied_gqa");
    let err = fails(&train_args(
        dir,
        &llama,
        &run,
        &["--mapper", "cross-attention"],
    ));
    assert!(
        err.contains("`llama` language model has no cross-attention") && err.contains("GPT-2"),
        "{err}"
    );
    // a language model given as the encoder
    let mut args = train_args(dir, &lm, &run, &[]);
    let i = args.iter().position(|a| a == "--encoder").unwrap();
    args[i + 1] = lm.display().to_string();
    let err = fails(&args);
    assert!(err.contains("captioning needs an image family"), "{err}");
    assert!(!run.join("config.json").exists(), "no run was started");
}

#[test]
fn compare_reports_pairs_of_strategies_with_caption_scores_and_samples() {
    let (tmp, lm) = setup(4);
    let dir = tmp.path();
    let out = dir.join("cmp");
    let stdout = ok(&[
        "compare",
        "--task",
        "captioning",
        "--encoder",
        &encoder(),
        "--decoder",
        lm.to_str().unwrap(),
        "--train",
        dir.join("train.csv").to_str().unwrap(),
        "--test",
        dir.join("val.csv").to_str().unwrap(),
        "--val-fraction",
        "0.25",
        "--strategies",
        "frozen+full,scratch+scratch",
        "--seeds",
        "1",
        "--budget",
        "2ep",
        "--lr",
        "3e-3",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--samples",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from));
    assert!(stdout.contains("frozen+full"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["metric"], "cider");
    assert_eq!(report["test_examples"], 6);
    let summary = report["summary"].as_array().unwrap();
    let names: Vec<&str> = summary
        .iter()
        .map(|s| s["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["frozen+full", "scratch+scratch"]);
    for s in summary {
        assert!(s["cider"]["mean"].as_f64().unwrap() >= 0.0, "{s}");
        assert_eq!(s["score"]["mean"], s["cider"]["mean"]);
        assert!(s["bleu4"]["mean"].as_f64().unwrap() >= 0.0, "{s}");
    }
    // each run's test scores are those eval gives its exported captioner
    let run = out.join("runs/frozen-full-seed0");
    let eval = eval_json(&run, dir);
    let test: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("test.json")).unwrap()).unwrap();
    assert_eq!(test["test"]["cider_d"], eval["cider_d"]);
    assert_eq!(test["strategy"], "frozen+full");
    // sample captions beside copies of the images
    let samples = report["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2);
    for s in samples {
        assert!(out.join(s["prompt"].as_str().unwrap()).is_file());
        assert_eq!(s["outputs"].as_array().unwrap().len(), 2);
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<img src=\"samples/1.png\""), "{html}");
    assert!(html.contains("CIDEr-D") && html.contains("BLEU-4"));
}

#[test]
fn a_captioning_run_killed_mid_way_resumes_to_the_uninterrupted_result() {
    let (tmp, lm) = setup(4);
    let extra = [
        "--decoder-strategy",
        "lora:4",
        "--epochs",
        "4",
        "--checkpoint-every",
        "2",
    ];
    let a = tmp.path().join("a");
    ok(&train_args(tmp.path(), &lm, &a, &extra));
    let b = tmp.path().join("b");
    let killed = std::process::Command::new(env!("CARGO_BIN_EXE_headstart"))
        .args(train_args(tmp.path(), &lm, &b, &extra))
        .env("HEADSTART_ABORT_AFTER_STEP", "5")
        .output()
        .unwrap();
    assert!(!killed.status.success());
    assert!(!b.join("model").exists());
    ok(&[
        "train".into(),
        "--resume".into(),
        b.display().to_string(),
        "--quiet".into(),
    ]);
    for f in ["model/model.safetensors", "model/decoder/model.safetensors"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs after the resume"
        );
    }
    let caps = |run: &Path| -> Vec<serde_json::Value> {
        validations(run)
            .iter()
            .map(|v| v["samples"].clone())
            .collect()
    };
    assert_eq!(caps(&a), caps(&b));
}
