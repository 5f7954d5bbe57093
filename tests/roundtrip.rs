//! A `BertForSequenceClassification` saved by transformers round-trips
//! through headstart: loaded with `load_classifier` it gives transformers'
//! logits, exported with `train::export` it is the same file (keys, shapes,
//! bit-identical values, labels), and the export loads again to the same
//! logits. The fixture tests/fixtures/tiny-bert-cls is written by
//! `scripts/check_roundtrip.py --write-fixture`; no Python runs here.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::Device;
use headstart::hub::{HostTensor, read_safetensors};
use headstart::models::bert::BertInput;
use headstart::models::params::host;
use headstart::train::export::export;
use headstart::train::{LoadedClassifier, TrainConfig, load_classifier};

use common::{fixtures, max_abs_diff};

const LABELS: [&str; 3] = ["negative", "neutral", "positive"];

struct Reference {
    texts: Vec<String>,
    max_length: usize,
    tensors: BTreeMap<String, HostTensor>,
}

fn fixture_dir() -> std::path::PathBuf {
    fixtures().join("tiny-bert-cls")
}

fn reference() -> Reference {
    let dir = fixture_dir();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    Reference {
        texts: meta["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect(),
        max_length: meta["max_length"].as_u64().unwrap() as usize,
        tensors: read_safetensors(&dir.join("reference.safetensors")).unwrap(),
    }
}

fn ids(t: &HostTensor) -> Vec<i64> {
    t.data.iter().map(|&v| v as i64).collect()
}

/// Tokenises the reference texts with the loaded tokenizer at the reference
/// max_length (checking the ids against transformers') and returns the logits
/// `[batch * num_labels]` of one padded batch, as transformers computed them.
fn reference_logits(loaded: &mut LoadedClassifier, r: &Reference, device: &Device) -> Vec<f32> {
    let texts: Vec<&str> = r.texts.iter().map(String::as_str).collect();
    let batch = loaded.tokenizer.encode_batch(&texts, r.max_length).unwrap();
    let shape = &r.tensors["input_ids"].shape;
    assert_eq!((batch.batch, batch.seq_len), (shape[0], shape[1]));
    assert_eq!(batch.input_ids, ids(&r.tensors["input_ids"]), "token ids");
    assert_eq!(batch.attention_mask, ids(&r.tensors["attention_mask"]));
    assert_eq!(batch.token_type_ids, ids(&r.tensors["token_type_ids"]));
    let input = BertInput::from_host(
        &batch.input_ids,
        &batch.token_type_ids,
        &batch.attention_mask,
        batch.batch,
        batch.seq_len,
        device,
    );
    let (shape, logits) = host(&loaded.forward(&input));
    assert_eq!(shape, r.tensors["logits"].shape);
    logits
}

fn labels_of(loaded: &LoadedClassifier) -> Vec<&str> {
    loaded.labels.labels.iter().map(String::as_str).collect()
}

#[test]
fn transformers_classifier_loads_with_its_logits_and_labels() {
    let device = Device::default();
    let r = reference();
    let mut loaded = load_classifier(&fixture_dir(), &device).unwrap();
    assert_eq!(labels_of(&loaded), LABELS);
    assert!(loaded.meta.is_none(), "the fixture has no headstart.json");

    let logits = reference_logits(&mut loaded, &r, &device);
    let diff = max_abs_diff(&logits, &r.tensors["logits"].data);
    eprintln!("tiny-bert-cls: logits max abs diff {diff:e}");
    assert!(diff <= 1e-5, "logits differ from transformers' by {diff}");

    // The public path (`predict`): each text on its own, padded per batch,
    // max_length 128 without headstart.json. Texts shorter than the
    // reference's 16 tokens are tokenised identically.
    let short: Vec<usize> = (0..r.texts.len())
        .filter(|&i| r.tensors["attention_mask"].data[i * 16 + 15] == 0.0)
        .collect();
    assert!(short.len() >= 2, "the fixture needs texts under 16 tokens");
    let texts: Vec<&str> = short.iter().map(|&i| r.texts[i].as_str()).collect();
    let per_text = loaded.logits(&texts, 2, &device).unwrap();
    let k = LABELS.len();
    for (row, &i) in per_text.iter().zip(&short) {
        let want = &r.tensors["logits"].data[i * k..(i + 1) * k];
        let diff = max_abs_diff(row, want);
        assert!(diff <= 1e-5, "{:?}: logits differ by {diff}", r.texts[i]);
    }
}

fn train_config(out: &Path, max_length: usize) -> TrainConfig {
    TrainConfig {
        model: fixture_dir().display().to_string(),
        max_length,
        out: Some(out.to_path_buf()),
        ..TrainConfig::default()
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn safetensors_metadata(path: &Path) -> Option<std::collections::HashMap<String, String>> {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    meta.metadata().clone()
}

#[test]
fn export_writes_back_the_transformers_files_and_reloads_identically() {
    let device = Device::default();
    let r = reference();
    let fixture = fixture_dir();
    let mut loaded = load_classifier(&fixture, &device).unwrap();
    let before = reference_logits(&mut loaded, &r, &device);

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model");
    export(
        &loaded.model,
        &loaded.task,
        &fixture,
        &out,
        &train_config(tmp.path(), r.max_length),
    )
    .unwrap();

    // Weights: the same keys, dtypes, shapes and bits as transformers wrote.
    let want = read_safetensors(&fixture.join("model.safetensors")).unwrap();
    let got = read_safetensors(&out.join("model.safetensors")).unwrap();
    let want_keys: Vec<&String> = want.keys().collect();
    let got_keys: Vec<&String> = got.keys().collect();
    assert_eq!(got_keys, want_keys, "exported key set");
    for (name, w) in &want {
        let g = &got[name];
        assert_eq!(g.shape, w.shape, "{name}: shape");
        assert_eq!(g.dtype, w.dtype, "{name}: dtype");
        let differing = g
            .data
            .iter()
            .zip(&w.data)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            differing, 0,
            "{name}: {differing} values are not bit-identical"
        );
    }
    assert_eq!(
        safetensors_metadata(&out.join("model.safetensors")),
        safetensors_metadata(&fixture.join("model.safetensors")),
        "safetensors __metadata__"
    );

    // config.json: the fixture's, labels and architecture included.
    let want_cfg = read_json(&fixture.join("config.json"));
    let got_cfg = read_json(&out.join("config.json"));
    for key in ["architectures", "id2label", "label2id", "problem_type"] {
        assert_eq!(got_cfg[key], want_cfg[key], "config.json `{key}`");
    }
    assert_eq!(got_cfg, want_cfg, "config.json as a whole");

    // Tokenizer files copied byte for byte; headstart.json records max_length.
    for f in ["vocab.txt", "tokenizer_config.json"] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(fixture.join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(
        read_json(&out.join("headstart.json"))["max_length"],
        serde_json::json!(r.max_length)
    );

    // Reloaded: the same labels and bit-identical logits.
    let mut again = load_classifier(&out, &device).unwrap();
    assert_eq!(labels_of(&again), LABELS);
    assert_eq!(again.max_length(), r.max_length);
    let after = reference_logits(&mut again, &r, &device);
    assert_eq!(
        after.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        before.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "logits after export and reload: {after:?} vs {before:?}"
    );

    // And through `logits` (max_length now from headstart.json): every text,
    // the truncated one included, as transformers computed it.
    let texts: Vec<&str> = r.texts.iter().map(String::as_str).collect();
    let per_text: Vec<f32> = again
        .logits(&texts, 8, &device)
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    let diff = max_abs_diff(&per_text, &r.tensors["logits"].data);
    eprintln!("re-exported tiny-bert-cls via logits(): max abs diff {diff:e}");
    assert!(
        diff <= 1e-5,
        "reloaded logits differ from transformers' by {diff}"
    );
}
