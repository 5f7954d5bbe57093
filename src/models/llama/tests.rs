use super::*;
use crate::hub::{Checkpoint, DType, HostTensor};
use crate::models::TaskModel;
use crate::models::params::host;
use crate::models::state::{Source, export, group_counts, load};

/// The causal-lm task puts no module on the body; `None` stands for it here.
type Lm = TaskModel<Llama, Option<Linear>>;

fn lm(body: Llama) -> Lm {
    TaskModel { body, head: None }
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/llama")
        .join(name)
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("reference.json")).unwrap()).unwrap()
}

/// A fixture directory loaded exactly: every parameter from the file, every
/// key of the file used.
fn loaded(name: &str) -> Lm {
    let dir = fixture(name);
    let body = Llama::from_config_file(&dir.join("config.json"), &Device::default()).unwrap();
    let checkpoint = Checkpoint::open(&dir).unwrap();
    load(lm(body), Source::Exact(&checkpoint), 0).unwrap().0
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(floats).collect(),
        x => vec![x.as_f64().unwrap() as f32],
    }
}

/// The fixture's batch: ids and mask `[2, seq]`.
fn batch(r: &Value) -> (Tensor<2, Int>, Tensor<2>, usize) {
    let ids = ints(&r["input_ids"]);
    let mask: Vec<f32> = ints(&r["attention_mask"])
        .iter()
        .map(|&m| m as f32)
        .collect();
    let seq = ids.len() / 2;
    let device = Device::default();
    (
        Tensor::from_data(TensorData::new(ids, [2, seq]), &device),
        Tensor::from_data(TensorData::new(mask, [2, seq]), &device),
        seq,
    )
}

fn tokens(ids: Tensor<2, Int>, mask: Tensor<2>) -> Flow {
    Flow::Tokens {
        type_ids: ids.zeros_like(),
        ids,
        mask,
    }
}

/// Logits of every group run on `flow`.
fn logits(body: &Llama, flow: Flow) -> Tensor<3> {
    let n = body.groups().len();
    match body.run(flow, 0..n) {
        Flow::Hidden { x, .. } => x,
        other => panic!("the top group returns logits, not {other:?}"),
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// The values at real positions of `[2, seq, vocab]` logits.
fn real_positions(values: &[f32], mask: &[i64], vocab: usize) -> Vec<f32> {
    mask.iter()
        .enumerate()
        .filter(|(_, m)| **m == 1)
        .flat_map(|(p, _)| values[p * vocab..(p + 1) * vocab].to_vec())
        .collect()
}

fn check_parity(name: &str) {
    let r = &reference()["fixtures"][name];
    let model = loaded(name);
    let vocab = model.body.config.vocab_size;
    let (ids, mask, seq) = batch(r);
    let (shape, got) = host(&logits(&model.body, tokens(ids, mask)));
    assert_eq!(shape, vec![2, seq, vocab]);
    let want = floats(&r["logits"]);
    let real_mask = ints(&r["attention_mask"]);
    let (got, want) = (
        real_positions(&got, &real_mask, vocab),
        real_positions(&want, &real_mask, vocab),
    );
    assert!(real_mask.contains(&0), "one row is padded");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = max_diff(&got, &want);
    eprintln!("{name}: max |logit diff| {diff:.3e} (scale {scale:.3})");
    assert!(
        scale > 1.0,
        "the fixture's logits are not trivial ({scale})"
    );
    assert!(
        diff <= 1e-4 * scale,
        "{name}: max |diff| {diff} (scale {scale})"
    );
    // one parameter for the tied output projection, as transformers counts
    assert_eq!(
        model.num_params() as u64,
        r["num_params"].as_u64().unwrap(),
        "{name}"
    );
}

#[test]
fn tied_gqa_logits_match_transformers() {
    check_parity("tied_gqa");
}

#[test]
fn llama3_untied_logits_match_transformers() {
    check_parity("llama3_untied");
}

#[test]
fn fixture_configs_read_both_rope_spellings() {
    let tied = LlamaConfig::from_file(&fixture("tied_gqa/config.json")).unwrap();
    assert_eq!(tied.rope.theta, 100000.0);
    assert_eq!(tied.rope.scaling, RopeScaling::Default);
    assert!(tied.tie_word_embeddings);
    assert_eq!((tied.num_key_value_heads, tied.head_dim), (2, 12));
    assert_eq!(tied.eos_token_ids, vec![2]);
    // written the transformers 4 way: rope_theta + rope_scaling
    let l3 = LlamaConfig::from_file(&fixture("llama3_untied/config.json")).unwrap();
    assert_eq!(l3.rope.theta, 10000.0);
    assert_eq!(
        l3.rope.scaling,
        RopeScaling::Llama3 {
            factor: 4.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 16
        }
    );
    assert_eq!((l3.num_key_value_heads, l3.head_dim), (1, 16));
    assert_eq!(l3.eos_token_ids, vec![2, 5]);
    assert!(l3.attention_bias && l3.mlp_bias && !l3.tie_word_embeddings);
}

#[test]
fn rotary_frequencies_match_transformers() {
    let r = reference();
    let tables = r["inv_freq"].as_object().unwrap();
    assert_eq!(tables.len(), 4);
    for (name, t) in tables {
        let config = json!({
            "vocab_size": 10, "hidden_size": 64, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 4,
            "max_position_embeddings": 131072,
            "rope_parameters": t["rope_parameters"],
        });
        let c = LlamaConfig::from_json(&config.to_string()).unwrap();
        let dim = t["head_dim"].as_u64().unwrap() as usize;
        let got = c.rope.inv_freq(dim);
        let want = floats(&t["inv_freq"]);
        assert_eq!(got.len(), want.len(), "{name}");
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 2e-6 * w.abs(), "{name}: {g} vs {w}");
        }
    }
}

#[test]
fn cached_decoding_equals_one_full_forward() {
    for name in ["tied_gqa", "llama3_untied"] {
        let model = loaded(name).body;
        let device = Device::default();
        let seq = 18;
        let ids: Vec<i64> = (0..2 * seq as i64).map(|i| (i * 37 + 11) % 90).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, seq]), &device);
        let full = logits(&model, tokens(ids.clone(), Tensor::ones([2, seq], &device)));
        let (_, full) = host(&full);
        let vocab = model.config.vocab_size;
        // an empty cache: the same as running the groups
        let mut cache = KvCache::default();
        let once = model.forward_cached(
            ids.clone(),
            positions(2, 0, seq, &device),
            Tensor::ones([2, seq], &device),
            &mut cache,
        );
        assert!(max_diff(&host(&once).1, &full) <= 1e-6, "{name}");
        assert_eq!(cache.len(), seq);
        // a prompt of 5, a chunk of 3, then one position at a time
        let mut cache = KvCache::new(model.num_layers());
        let mut steps = vec![(0, 5), (5, 3)];
        steps.extend((8..seq).map(|p| (p, 1)));
        let mut worst = 0f32;
        for (start, n) in steps {
            let out = model.forward_cached(
                ids.clone().narrow(1, start, n),
                positions(2, start, n, &device),
                Tensor::ones([2, start + n], &device),
                &mut cache,
            );
            let (shape, out) = host(&out);
            assert_eq!(shape, vec![2, n, vocab]);
            for row in 0..2 {
                let want = &full[(row * seq + start) * vocab..(row * seq + start + n) * vocab];
                worst = worst.max(max_diff(&out[row * n * vocab..(row + 1) * n * vocab], want));
            }
        }
        eprintln!("{name}: cached vs full max |diff| {worst:.3e}");
        assert!(worst <= 1e-5, "{name}: {worst}");
        assert_eq!(cache.len(), seq);
        // the cache holds the key/value heads before they are repeated
        let (k, _) = cache.layers[0].as_ref().unwrap();
        assert_eq!(
            k.dims(),
            [
                2,
                model.config.num_key_value_heads,
                seq,
                model.config.head_dim
            ]
        );
    }
}

#[test]
fn padded_positions_do_not_change_real_ones() {
    let model = loaded("tied_gqa").body;
    let device = Device::default();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![5i64, 9, 13, 21], [1, 4]), &device);
    let short = logits(&model, tokens(ids.clone(), Tensor::ones([1, 4], &device)));
    let padded_ids = Tensor::cat(vec![ids, Tensor::zeros([1, 3], &device)], 1);
    let mask = Tensor::<2>::from_data(
        TensorData::new(vec![1f32, 1., 1., 1., 0., 0., 0.], [1, 7]),
        &device,
    );
    let padded = logits(&model, tokens(padded_ids, mask));
    let (_, a) = host(&short);
    let (_, b) = host(&padded.narrow(1, 0, 4));
    assert!(max_diff(&a, &b) <= 1e-6);
}

#[test]
fn groups_run_in_pieces_equal_the_whole() {
    let model = loaded("llama3_untied").body;
    let r = &reference()["fixtures"]["llama3_untied"];
    let (ids, mask, _) = batch(r);
    let groups = model.groups();
    assert_eq!(groups.len(), 5);
    assert_eq!(groups[0].paths, vec!["model.embed_tokens".to_string()]);
    assert_eq!(groups[2].name, "layers.1");
    assert_eq!(
        groups[4].paths,
        vec!["model.norm".to_string(), "lm_head".to_string()]
    );
    let whole = logits(&model, tokens(ids.clone(), mask.clone()));
    let half = model.run(tokens(ids, mask), 0..2);
    let Flow::Hidden { x, .. } = &half else {
        panic!("the layers output hidden states");
    };
    assert_eq!(x.dims()[2], 32);
    let Flow::Hidden { x: rest, .. } = model.run(half, 2..5) else {
        panic!("the top group returns logits");
    };
    assert_eq!(host(&whole), host(&rest));
    assert_eq!(model.reads_after(3), Positions::All);
    assert_eq!(model.feature_size(), 96);
}

#[test]
fn module_paths_are_checkpoint_keys_and_tied_weights_one_parameter() {
    for (name, tied) in [("tied_gqa", true), ("llama3_untied", false)] {
        let model = loaded(name);
        let keys: Vec<String> = export(&model, &|_| true).into_iter().map(|t| t.0).collect();
        let file: Vec<String> = Checkpoint::open(&fixture(name))
            .unwrap()
            .tensors
            .keys()
            .cloned()
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, file, "{name}");
        assert_eq!(keys.iter().any(|k| k == "lm_head.weight"), !tied);
        for k in [
            "model.embed_tokens.weight",
            "model.layers.1.self_attn.q_proj.weight",
            "model.layers.1.self_attn.k_proj.weight",
            "model.layers.0.mlp.gate_proj.weight",
            "model.layers.1.input_layernorm.weight",
            "model.layers.0.post_attention_layernorm.weight",
            "model.norm.weight",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} not in {keys:?}");
        }
        assert_eq!(
            keys.iter()
                .any(|k| k == "model.layers.0.self_attn.o_proj.bias"),
            !tied
        );
        let counts = group_counts(&model);
        let c = &model.body.config;
        assert_eq!(
            counts[0],
            ("embeddings".into(), c.vocab_size * c.hidden_size)
        );
        let head = c.hidden_size
            + if tied {
                0
            } else {
                c.vocab_size * c.hidden_size
            };
        assert_eq!(counts.last().unwrap(), &("head".to_string(), head));
    }
}

fn to_checkpoint(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Checkpoint {
    Checkpoint {
        tensors: tensors
            .iter()
            .map(|(k, s, v)| {
                (
                    k.clone(),
                    HostTensor {
                        shape: s.clone(),
                        dtype: DType::F32,
                        data: v.clone(),
                    },
                )
            })
            .collect(),
        files: vec![],
        notes: vec![],
        graph: None,
    }
}

/// `hf_config` and the exported tensors written as a model directory.
fn write_export(model: &Lm, dir: &Path) {
    crate::fsutil::write_json_atomic(&dir.join("config.json"), &model.body.hf_config()).unwrap();
    let tensors = export(model, &|_| true);
    crate::hub::write_safetensors(&dir.join("model.safetensors"), &tensors, None).unwrap();
}

#[test]
fn export_loads_back_with_equal_logits() {
    for name in ["tied_gqa", "llama3_untied"] {
        let model = loaded(name);
        let dir = tempfile::tempdir().unwrap();
        write_export(&model, dir.path());
        let config = LlamaConfig::from_file(&dir.path().join("config.json")).unwrap();
        assert_eq!(config, model.body.config, "{name}");
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert!(written.get("rope_theta").is_none() && written.get("rope_scaling").is_none());
        assert_eq!(written["architectures"], json!(["LlamaForCausalLM"]));
        let body =
            Llama::from_config_file(&dir.path().join("config.json"), &Device::default()).unwrap();
        let checkpoint = Checkpoint::open(dir.path()).unwrap();
        let (again, _) = load(lm(body), Source::Exact(&checkpoint), 0).unwrap();
        let r = &reference()["fixtures"][name];
        let (ids, mask, _) = batch(r);
        let a = host(&logits(&model.body, tokens(ids.clone(), mask.clone())));
        let b = host(&logits(&again.body, tokens(ids, mask)));
        assert_eq!(a, b, "{name}");
    }
}

#[test]
fn a_bare_llama_model_checkpoint_loads_without_the_prefix() {
    let model = loaded("tied_gqa");
    let exported = export(&model, &|_| true);
    let bare: Vec<_> = exported
        .iter()
        .map(|(k, s, v)| {
            (
                k.strip_prefix("model.").unwrap().to_string(),
                s.clone(),
                v.clone(),
            )
        })
        .collect();
    assert!(bare.iter().any(|t| t.0 == "embed_tokens.weight"));
    let fresh = lm(Llama::new(&model.body.config, &Device::default()).unwrap());
    let (again, report) = load(fresh, Source::Pretrained(&to_checkpoint(&bare)), 0).unwrap();
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    assert!(report.unexpected.is_empty() && report.renamed.is_empty());
    assert_eq!(report.loaded, exported.len());
    assert_eq!(export(&again, &|_| true), exported);
    // a tied checkpoint that also holds the projection's copy loads too
    let mut with_copy = exported.clone();
    let table = exported[0].clone();
    assert_eq!(table.0, "model.embed_tokens.weight");
    with_copy.push(("lm_head.weight".into(), table.1, table.2));
    let fresh = lm(Llama::new(&model.body.config, &Device::default()).unwrap());
    let (_, report) = load(fresh, Source::Exact(&to_checkpoint(&with_copy)), 0).unwrap();
    assert!(report.unexpected.is_empty());
}

/// For `scripts/check_llama_export.py`: writes, under
/// `$HEADSTART_LLAMA_EXPORT`, each fixture's architecture initialised from
/// scratch (seeded, `initializer_range` 0.2 so that the logits are not
/// tiny) as an exported directory, with its logits on the fixture's batch
/// in `logits.json`, for transformers to load and compare.
#[test]
#[ignore = "run by scripts/check_llama_export.py"]
fn write_exports_for_transformers() {
    let root = std::path::PathBuf::from(
        std::env::var("HEADSTART_LLAMA_EXPORT").expect("HEADSTART_LLAMA_EXPORT names a directory"),
    );
    for name in ["tied_gqa", "llama3_untied"] {
        let mut config = LlamaConfig::from_file(&fixture(name).join("config.json")).unwrap();
        config.initializer_range = 0.2;
        let body = Llama::new(&config, &Device::default()).unwrap();
        let (model, _) = load(lm(body), Source::Scratch, 7).unwrap();
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        write_export(&model, &dir);
        let r = &reference()["fixtures"][name];
        let (ids, mask, _) = batch(r);
        let (shape, values) = host(&logits(&model.body, tokens(ids, mask)));
        let out = json!({
            "input_ids": r["input_ids"],
            "attention_mask": r["attention_mask"],
            "shape": shape,
            "logits": values,
        });
        crate::fsutil::write_json_atomic(&dir.join("logits.json"), &out).unwrap();
        assert!(dir.join("model.safetensors").is_file());
    }
}

#[test]
fn scratch_init_follows_transformers() {
    let mut config = LlamaConfig::from_file(&fixture("llama3_untied/config.json")).unwrap();
    config.pad_token_id = Some(3);
    let body = Llama::new(&config, &Device::default()).unwrap();
    let (m, report) = load(lm(body), Source::Scratch, 3).unwrap();
    assert!(report.from_scratch);
    let layer = &m.body.model.layers[1];
    let (_, g) = host(&layer.input_layernorm.gamma.val());
    assert!(g.iter().all(|&v| v == 1.0));
    let (_, g) = host(&m.body.model.norm.gamma.val());
    assert!(g.iter().all(|&v| v == 1.0));
    for b in [
        &layer.self_attn.q_proj.bias,
        &layer.self_attn.o_proj.bias,
        &layer.mlp.down_proj.bias,
    ] {
        let (_, b) = host(&b.as_ref().unwrap().val());
        assert!(b.iter().all(|&v| v == 0.0));
    }
    let std = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    let (_, table) = host(&m.body.model.embed_tokens.weight.val());
    let h = config.hidden_size;
    assert!(table[3 * h..4 * h].iter().all(|&v| v == 0.0), "padding row");
    for t in [
        table,
        host(&layer.self_attn.k_proj.weight.val()).1,
        host(&layer.mlp.up_proj.weight.val()).1,
        host(&m.body.lm_head.as_ref().unwrap().weight.val()).1,
    ] {
        assert!((std(&t) - 0.02).abs() < 0.004, "std {}", std(&t));
    }
}

#[test]
fn flops_of_a_tiny_config_by_hand() {
    // hidden 8, 4 heads of 4 (q 16), 2 key-value heads (kv 8), ffn 12, vocab 10, 2 layers
    let c = LlamaConfig::from_json(
        r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 12,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 4}"#,
    )
    .unwrap();
    let m = Llama::new(&c, &Device::default()).unwrap();
    let (b, s) = (3.0, 5.0);
    // q 8x16, k 8x8, v 8x8, o 16x8: 2bs(128 + 64 + 64 + 128);
    // gate, up 8x12, down 12x8: 2bs(3 * 96); scores + context: 2 * 2 b s s 16
    let layer = 2.0 * b * s * 384.0 + 2.0 * b * s * 288.0 + 4.0 * b * s * s * 16.0;
    assert_eq!(layer, 24960.0);
    let head = 2.0 * b * s * 8.0 * 10.0;
    assert_eq!(m.group_flops(3, 5), vec![0.0, layer, layer, head]);
}

#[test]
fn smollm2_135m_has_its_published_size_and_cost() {
    let c = LlamaConfig::smollm2_135m();
    let m = Llama::reference(&Device::default()).unwrap();
    assert_eq!(m.config, c);
    // counted by transformers on an empty LlamaForCausalLM of this config
    let want = reference()["smollm2_135m_params"].as_u64().unwrap() as usize;
    assert_eq!(want, 134_515_008);
    assert_eq!(m.num_params(), want);
    assert_eq!(m.groups().len(), 32);
    assert!(m.lm_head.is_none());
    // one position: every weight matrix once (2 FLOPs per weight: all
    // parameters but the 61 norms of 576), plus 4·576 per layer for
    // attention on one key
    let flops = m.group_flops(1, 1);
    let matrices = (want - 61 * 576) as f64;
    assert_eq!(
        flops.iter().sum::<f64>(),
        2.0 * matrices + 30.0 * 4.0 * 576.0
    );
    assert_eq!(flops[31], 2.0 * 576.0 * 49152.0);
    // 2048 positions: attention's share grows with the square
    let long: f64 = m.group_flops(1, 2048).iter().sum();
    assert_eq!(
        long,
        2048.0 * 2.0 * matrices + 30.0 * 4.0 * 2048.0 * 2048.0 * 576.0
    );
    assert_eq!(m.max_positions(), 8192);
    assert_eq!(m.eos_token_ids(), vec![2]);
}

fn config_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, text).unwrap();
    format!("{:#}", LlamaConfig::from_file(&path).unwrap_err())
}

const SIZES: &str = r#""vocab_size": 10, "hidden_size": 8, "intermediate_size": 12,
    "num_hidden_layers": 1, "num_attention_heads": 4"#;

#[test]
fn bad_configs_are_named() {
    let cases = [
        (
            r#"{"vocab_size": 10, "intermediate_size": 12, "num_hidden_layers": 1, "num_attention_heads": 4}"#.to_string(),
            "hidden_size",
        ),
        (
            r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 0, "num_hidden_layers": 1, "num_attention_heads": 4}"#.to_string(),
            "intermediate_size is 0",
        ),
        (
            r#"{"vocab_size": 10, "hidden_size": 10, "intermediate_size": 12, "num_hidden_layers": 1, "num_attention_heads": 4}"#.to_string(),
            "num_attention_heads (4)",
        ),
        (format!(r#"{{{SIZES}, "num_key_value_heads": 3}}"#), "num_key_value_heads (3)"),
        (format!(r#"{{{SIZES}, "hidden_act": "gelu"}}"#), "hidden_act `gelu`"),
        (
            format!(r#"{{{SIZES}, "rope_scaling": {{"rope_type": "yarn", "factor": 2.0}}}}"#),
            "rope_scaling.rope_type `yarn`",
        ),
        (
            format!(r#"{{{SIZES}, "rope_parameters": {{"rope_type": "dynamic", "factor": 2.0}}}}"#),
            "rope_parameters.rope_type `dynamic`",
        ),
        (
            format!(
                r#"{{{SIZES}, "rope_parameters": {{"rope_type": "llama3", "factor": 8.0, "high_freq_factor": 4.0}}}}"#
            ),
            "rope_parameters.low_freq_factor is missing",
        ),
        (
            format!(r#"{{{SIZES}, "rope_scaling": {{"type": "linear"}}}}"#),
            "rope_scaling.factor is missing",
        ),
        (format!(r#"{{{SIZES}, "head_dim": 3}}"#), "head_dim (3)"),
    ];
    for (text, want) in cases {
        let err = config_error(&text);
        assert!(
            err.contains("config.json") && err.contains(want),
            "wanted `{want}` in: {err}"
        );
    }
}

#[test]
fn rope_spellings_and_defaults_follow_transformers() {
    let parse = |extra: &str| LlamaConfig::from_json(&format!("{{{SIZES}{extra}}}")).unwrap();
    // nothing said: theta 10000, no scaling, head_dim hidden / heads, MHA
    let c = parse("");
    assert_eq!(
        c.rope,
        Rope {
            theta: 10000.0,
            scaling: RopeScaling::Default
        }
    );
    assert_eq!((c.head_dim, c.num_key_value_heads), (2, 4));
    assert_eq!((c.rms_norm_eps, c.max_position_embeddings), (1e-6, 2048));
    assert_eq!(c.eos_token_ids, vec![2]);
    // transformers 4: rope_theta beside rope_scaling (`type` or `rope_type`)
    let old =
        parse(r#", "rope_theta": 500000.0, "rope_scaling": {"type": "linear", "factor": 2.0}"#);
    let new = parse(
        r#", "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 500000.0}"#,
    );
    assert_eq!(old, new);
    assert_eq!(old.rope.scaling, RopeScaling::Linear { factor: 2.0 });
    // a null rope_scaling falls back to rope_theta alone
    let plain = parse(r#", "rope_theta": 1000.0, "rope_scaling": null"#);
    assert_eq!(plain.rope.theta, 1000.0);
    // llama3 without original_max_position_embeddings takes max_position_embeddings
    let l3 = parse(
        r#", "max_position_embeddings": 512, "rope_scaling": {"rope_type": "llama3",
            "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}"#,
    );
    let RopeScaling::Llama3 {
        original_max_position_embeddings,
        ..
    } = l3.rope.scaling
    else {
        panic!("llama3");
    };
    assert_eq!(original_max_position_embeddings, 512);
    // several end-of-sequence ids, or none
    assert_eq!(
        parse(r#", "eos_token_id": [7, 9]"#).eos_token_ids,
        vec![7, 9]
    );
    assert!(parse(r#", "eos_token_id": null"#).eos_token_ids.is_empty());
    // what hf_config writes reads back as the same configuration
    for c in [old, l3, plain] {
        assert_eq!(LlamaConfig::from_json(&c.to_json().to_string()).unwrap(), c);
    }
}

#[test]
fn dropout_on_attention_probabilities_keeps_the_expectation() {
    // the explicit path (dropout active while training) with a vanishing
    // rate equals the fused attention
    let mut config = LlamaConfig::from_file(&fixture("tied_gqa/config.json")).unwrap();
    let dir = fixture("tied_gqa");
    let checkpoint = Checkpoint::open(&dir).unwrap();
    let plain = loaded("tied_gqa");
    config.attention_dropout = 1e-9;
    let device = Device::default().autodiff();
    let body = Llama::new(&config, &device).unwrap();
    let (dropping, _) = load(lm(body), Source::Exact(&checkpoint), 0).unwrap();
    assert!(dropping.body.model.layers[0].self_attn.dropout.prob > 0.0);
    let r = &reference()["fixtures"]["tied_gqa"];
    let (ids, mask, _) = batch(r);
    let a = host(&logits(&plain.body, tokens(ids.clone(), mask.clone()))).1;
    let flow = Flow::Tokens {
        type_ids: Tensor::from_data(ids.to_data(), &device),
        ids: Tensor::from_data(ids.to_data(), &device),
        mask: Tensor::from_data(mask.to_data(), &device),
    };
    let b = host(&logits(&dropping.body, flow)).1;
    assert!(max_diff(&a, &b) <= 1e-4, "{}", max_diff(&a, &b));
}
