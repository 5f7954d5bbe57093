use super::*;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ved_random")
}

fn reference() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ved_random.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The script's deterministic pixels, `[2, 3, 32, 32]`.
fn pixels(device: &Device) -> Tensor<4> {
    let mut v = Vec::with_capacity(2 * 3 * 32 * 32);
    for n in 0..2 {
        for c in 0..3 {
            for h in 0..32 {
                for w in 0..32 {
                    let x = 0.1 * (n + 1) as f64 * (h + 1) as f64
                        + 0.07 * (c + 1) as f64 * (w + 1) as f64;
                    v.push(x.sin() as f32);
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(v, [2, 3, 32, 32]), device)
}

fn ids(r: &serde_json::Value, device: &Device) -> Tensor<2, Int> {
    let flat: Vec<i64> = r["ids"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()))
        .collect();
    Tensor::from_data(TensorData::new(flat, [2, 5]), device)
}

fn flat(v: &serde_json::Value) -> Vec<f32> {
    match v {
        serde_json::Value::Array(a) => a.iter().flat_map(flat).collect(),
        x => vec![x.as_f64().unwrap() as f32],
    }
}

fn logits_of(m: &VisionEncoderDecoder, r: &serde_json::Value, device: &Device) -> Vec<f32> {
    m.forward(pixels(device), ids(r, device))
        .into_data()
        .try_into_vec()
        .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn logits_and_greedy_tokens_equal_transformers() {
    let device = Device::default();
    let r = reference();
    let m = VisionEncoderDecoder::load(&fixture(), &device).unwrap();
    let want = flat(&r["logits"]);
    let got = logits_of(&m, &r, &device);
    let scale = want.iter().fold(0f32, |a, x| a.max(x.abs()));
    let diff = max_diff(&got, &want);
    println!("encoder-decoder logits: max abs diff {diff:.2e} (scale {scale:.2})");
    assert!(diff <= 1e-4 * scale.max(1.0), "{diff} at scale {scale}");
    // generate(max_new_tokens=6) from decoder_start_token_id
    let greedy = m.greedy(pixels(&device), 62, 6);
    let want: Vec<Vec<u32>> = r["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    assert_eq!(greedy, want);
}

#[test]
fn the_export_holds_the_checkpoints_tensors_and_reloads_to_the_same_logits() {
    let device = Device::default();
    let r = reference();
    let m = VisionEncoderDecoder::load(&fixture(), &device).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    m.export(&fixture(), tmp.path()).unwrap();
    let original = Checkpoint::open(&fixture()).unwrap();
    let written = Checkpoint::open(tmp.path()).unwrap();
    let keys = |c: &Checkpoint| c.tensors.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&written), keys(&original));
    for (k, t) in &original.tensors {
        let w = &written.tensors[k];
        assert_eq!(w.shape, t.shape, "{k}");
        assert_eq!(w.data, t.data, "{k}");
    }
    let again = VisionEncoderDecoder::load(tmp.path(), &device).unwrap();
    assert_eq!(logits_of(&again, &r, &device), logits_of(&m, &r, &device));
}

#[test]
fn configs_it_cannot_build_are_errors_naming_the_field() {
    let device = Device::default();
    let tmp = tempfile::tempdir().unwrap();
    let raw = std::fs::read_to_string(fixture().join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let write = |c: &serde_json::Value| {
        std::fs::write(tmp.path().join("config.json"), c.to_string()).unwrap();
        std::fs::copy(
            fixture().join("model.safetensors"),
            tmp.path().join("model.safetensors"),
        )
        .unwrap();
        VisionEncoderDecoder::load(tmp.path(), &device)
            .unwrap_err()
            .to_string()
    };
    config["decoder"]["add_cross_attention"] = false.into();
    assert!(write(&config).contains("add_cross_attention"));
    config["decoder"]["model_type"] = "llama".into();
    assert!(write(&config).contains("llama"));
    config["model_type"] = "vit".into();
    assert!(write(&config).contains("vision-encoder-decoder"));
}

/// The captioning task's cross-attention path (`--mapper cross-attention`)
/// on the encoder-decoder's own weights: the ViT's every token after its
/// final LayerNorm, through the projection, as the memory of GPT-2's
/// cross-attention gives transformers' logits, and cached generation
/// (the memory's keys and values computed once, rows selected with the
/// cache) writes transformers' greedy tokens; beam search with one beam
/// writes the same.
#[test]
fn the_captioning_cross_attention_path_reads_the_image_as_transformers_does() {
    use crate::generate::beam::{BeamSearch, Start, beam_search};
    use crate::generate::{Sampling, generate_attending};
    use crate::models::causal::CausalLm;
    use crate::tasks::captioning::PrefixHead;

    let device = Device::default();
    let r = reference();
    let m = VisionEncoderDecoder::load(&fixture(), &device).unwrap();
    let body = m.encoder.clone().with_all_tokens();
    let layers = body.config.num_hidden_layers;
    let features = body.run(Flow::Maps(pixels(&device)), 0..layers + 2);
    let head = PrefixHead {
        mapping: m.enc_to_dec_proj.clone().into_iter().collect(),
        transformer: None,
        decoder: m.decoder.clone(),
    };
    let memory = head.memory(features);
    let ids = ids(&r, &device);
    let [b, t] = ids.dims();
    let logits: Vec<f32> = head
        .decoder
        .forward_memory(
            head.decoder.embed_tokens(ids),
            positions(b, 0, t, &device),
            Tensor::ones([b, t], &device),
            &memory,
        )
        .into_data()
        .try_into_vec()
        .unwrap();
    let want = flat(&r["logits"]);
    let scale = want.iter().fold(0f32, |a, x| a.max(x.abs()));
    let diff = max_diff(&logits, &want);
    assert!(diff <= 1e-4 * scale.max(1.0), "{diff} at scale {scale}");

    let start = head.decoder.embed_tokens(Tensor::from_data(
        TensorData::new(vec![62i64, 62], [2, 1]),
        &device,
    ));
    let want: Vec<Vec<u32>> = r["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array().unwrap()[1..]
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    let greedy = generate_attending(
        &head.decoder,
        start.clone(),
        Some(memory.clone()),
        6,
        &Sampling::greedy(),
        &[],
        &device,
    )
    .unwrap();
    let got: Vec<Vec<u32>> = greedy.into_iter().map(|g| g.ids).collect();
    assert_eq!(got, want);
    let one_beam = BeamSearch {
        beams: 1,
        length_penalty: 1.0,
        no_repeat_ngram: 0,
    };
    let beam = beam_search(
        &head.decoder,
        Start::Attending {
            prefix: start,
            memory,
        },
        6,
        &one_beam,
        &[],
        &device,
    )
    .unwrap();
    let got: Vec<Vec<u32>> = beam.into_iter().map(|g| g.ids).collect();
    assert_eq!(got, want);
}

/// The encoder-decoder fixture converted into a captioner and back holds
/// every tensor of the original, byte for byte, under the same names, and
/// the configs transformers needs (the decoder's cross-attention, the
/// start and end tokens); the round trip loads to the same logits.
#[test]
fn the_layout_converts_to_a_captioner_and_back_tensor_for_tensor() {
    let device = Device::default();
    let r = reference();
    let tmp = tempfile::tempdir().unwrap();
    let captioner = tmp.path().join("captioner");
    layout::write_captioner(&fixture(), &captioner).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(captioner.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["model_type"], "vit");
    assert_eq!(config["captioning"]["mapper"], "cross-attention");
    assert_eq!(config["captioning"]["start"], serde_json::json!([62]));
    assert_eq!(config["captioning"]["eos"], serde_json::json!([63]));
    let back = tmp.path().join("back");
    layout::write_encoder_decoder(&captioner, &serde_json::json!({}), &back).unwrap();
    let original = Checkpoint::open(&fixture()).unwrap();
    let written = Checkpoint::open(&back).unwrap();
    assert_eq!(
        written.tensors.keys().collect::<Vec<_>>(),
        original.tensors.keys().collect::<Vec<_>>()
    );
    for (k, t) in &original.tensors {
        assert_eq!(written.tensors[k].shape, t.shape, "{k}");
        assert_eq!(written.tensors[k].data, t.data, "{k}");
    }
    let top: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(back.join("config.json")).unwrap()).unwrap();
    assert_eq!(top["model_type"], MODEL_TYPE);
    assert_eq!(top["decoder_start_token_id"], 62);
    assert_eq!(top["decoder"]["add_cross_attention"], true);
    assert_eq!(top["decoder"]["is_decoder"], true);
    assert_eq!(top["encoder"]["model_type"], "vit");
    assert!(top["encoder"].get("captioning").is_none());
    let again = VisionEncoderDecoder::load(&back, &device).unwrap();
    let m = VisionEncoderDecoder::load(&fixture(), &device).unwrap();
    assert_eq!(logits_of(&again, &r, &device), logits_of(&m, &r, &device));

    // what is not a ViT + GPT-2 encoder-decoder is refused, naming why
    let mut bad: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap())
            .unwrap();
    bad["decoder"]["model_type"] = "llama".into();
    let dir = tmp.path().join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), bad.to_string()).unwrap();
    let err = layout::write_captioner(&dir, &tmp.path().join("x"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`\"llama\"`") && err.contains("gpt2"), "{err}");
}
