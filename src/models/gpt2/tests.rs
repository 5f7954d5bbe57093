use burn::tensor::TensorData;

use super::*;
use crate::hub::{Checkpoint, DType, HostTensor};
use crate::models::TaskModel;
use crate::models::params::{NamedTensors, host};
use crate::models::state::{Source, export, group_counts, load};

/// A body with nothing on top, as the causal-lm task will use it.
type Lm = TaskModel<Gpt2, Option<Linear>>;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gpt2")
        .join(name)
}

fn reference(name: &str) -> serde_json::Value {
    let path = fixture(&format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn device() -> Device {
    Device::default()
}

/// The fixture `name` loaded from its own directory, every key used.
fn loaded(name: &str) -> Gpt2 {
    let dir = fixture(name);
    let body = Gpt2::from_config_file(&dir.join("config.json"), &device()).unwrap();
    let checkpoint = Checkpoint::open(&dir).unwrap();
    let (model, report) = load(Lm { body, head: None }, Source::Exact(&checkpoint), 0).unwrap();
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    model.body
}

fn int_rows(v: &serde_json::Value) -> (Vec<i64>, [usize; 2]) {
    let rows = v.as_array().unwrap();
    let flat: Vec<i64> = rows
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
        .collect();
    let n = rows.len();
    let shape = [n, flat.len() / n];
    (flat, shape)
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    match v {
        serde_json::Value::Array(a) => a.iter().flat_map(floats).collect(),
        x => vec![x.as_f64().unwrap() as f32],
    }
}

fn ids_tensor(ids: &[i64], shape: [usize; 2]) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(ids.to_vec(), shape), &device())
}

fn mask_tensor(mask: &[i64], shape: [usize; 2]) -> Tensor<2> {
    let m: Vec<f32> = mask.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(m, shape), &device())
}

/// The fixture's input as group 0 takes it.
fn input(r: &serde_json::Value) -> (Flow, Vec<i64>) {
    let (ids, shape) = int_rows(&r["input_ids"]);
    let (mask, _) = int_rows(&r["attention_mask"]);
    let flow = Flow::Tokens {
        ids: ids_tensor(&ids, shape),
        type_ids: ids_tensor(&vec![0; ids.len()], shape),
        mask: mask_tensor(&mask, shape),
    };
    (flow, mask)
}

fn logits_of(model: &Gpt2, flow: Flow) -> (Vec<usize>, Vec<f32>) {
    let n = model.groups().len();
    match model.run(flow, 0..n) {
        Flow::Hidden { x, .. } => host(&x),
        other => panic!("the top group returns logits, not {other:?}"),
    }
}

/// Max |a - b| over the positions whose mask is 1 (`vocab` values each).
fn max_diff_real(a: &[f32], b: &[f32], mask: &[i64], vocab: usize) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    assert_eq!(a.len(), mask.len() * vocab);
    let (mut diff, mut scale) = (0f32, 0f32);
    for (p, &m) in mask.iter().enumerate() {
        if m == 0 {
            continue;
        }
        for i in p * vocab..(p + 1) * vocab {
            diff = diff.max((a[i] - b[i]).abs());
            scale = scale.max(b[i].abs());
        }
    }
    (diff, scale)
}

fn assert_matches_transformers(name: &str) {
    let r = reference(name);
    let model = loaded(name);
    let vocab = model.config.vocab_size;
    let (flow, mask) = input(&r);
    let (shape, got) = logits_of(&model, flow);
    assert_eq!(shape, vec![2, 12, vocab]);
    let want = floats(&r["logits"]);
    let (diff, scale) = max_diff_real(&got, &want, &mask, vocab);
    eprintln!("{name}: max |logit diff| {diff:.3e} (scale {scale:.3})");
    assert!(scale > 0.5, "logits too small to test anything: {scale}");
    assert!(
        diff <= 1e-4 * scale.max(1.0),
        "max |diff| {diff} (scale {scale})"
    );
    // the padded row's real positions equal the row run alone
    let alone = floats(&r["row1_alone_logits"]);
    let row1 = &got[12 * vocab..12 * vocab + alone.len()];
    let (diff, _) = max_diff_real(row1, &alone, &vec![1; alone.len() / vocab], vocab);
    assert!(diff <= 1e-4 * scale.max(1.0), "row 1 alone: {diff}");
}

#[test]
fn untied_logits_match_transformers() {
    let model = loaded("untied");
    assert!(model.lm_head.is_some());
    assert!(model.config.scale_attn_by_inverse_layer_idx);
    assert_eq!(model.config.inner(), 128);
    assert_matches_transformers("untied");
}

#[test]
fn tied_logits_match_transformers_from_an_old_pytorch_file() {
    // pytorch_model.bin with `lm_head.weight` (equal to wte) and the old
    // `attn.bias` / `attn.masked_bias` buffers: every key used or ignored
    let model = loaded("tied");
    assert!(model.lm_head.is_none());
    assert_eq!(model.config.inner(), 80);
    assert_eq!(model.eos_token_ids(), vec![94, 95]);
    assert_matches_transformers("tied");
}

/// `cases` of (ids, positions, key mask) run through one cache in turn;
/// returns the logits of each call.
fn run_cached(
    model: &Gpt2,
    steps: &[(Vec<i64>, Vec<i64>, Vec<f32>)],
    batch: usize,
) -> Vec<Vec<f32>> {
    let mut cache = KvCache::new(model.num_layers());
    let mut mask: Vec<Vec<f32>> = vec![Vec::new(); batch];
    steps
        .iter()
        .map(|(ids, pos, m)| {
            let new = ids.len() / batch;
            for (b, row) in mask.iter_mut().enumerate() {
                row.extend(&m[b * new..(b + 1) * new]);
            }
            let total = mask[0].len();
            let key_mask: Vec<f32> = mask.iter().flatten().copied().collect();
            let logits = model.forward_cached(
                ids_tensor(ids, [batch, new]),
                ids_tensor(pos, [batch, new]),
                Tensor::from_data(TensorData::new(key_mask, [batch, total]), &device()),
                &mut cache,
            );
            assert_eq!(cache.len(), total);
            host(&logits).1
        })
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn forward_cached_on_an_empty_cache_equals_run() {
    for name in ["untied", "tied"] {
        let r = reference(name);
        let model = loaded(name);
        let (flow, mask) = input(&r);
        let (_, whole) = logits_of(&model, flow);
        let (ids, _) = int_rows(&r["input_ids"]);
        let pos: Vec<i64> = (0..2).flat_map(|_| 0..12).collect();
        let m: Vec<f32> = mask.iter().map(|&x| x as f32).collect();
        let cached = run_cached(&model, &[(ids, pos, m)], 2);
        let vocab = model.config.vocab_size;
        let (diff, _) = max_diff_real(&cached[0], &whole, &mask, vocab);
        assert!(diff <= 1e-6, "{name}: {diff}");
    }
}

#[test]
fn decoding_one_token_at_a_time_through_the_cache_equals_one_forward() {
    for name in ["untied", "tied"] {
        let model = loaded(name);
        let vocab = model.config.vocab_size;
        let seq = 10;
        let rows: Vec<Vec<i64>> = vec![
            (0..seq).map(|i| (13 * i + 2) % 96).collect(),
            (0..seq).map(|i| (29 * i + 7) % 96).collect(),
        ];
        let flat: Vec<i64> = rows.iter().flatten().copied().collect();
        let (_, whole) = logits_of(
            &model,
            Flow::Tokens {
                ids: ids_tensor(&flat, [2, seq as usize]),
                type_ids: ids_tensor(&[0; 20], [2, seq as usize]),
                mask: Tensor::ones([2, seq as usize], &device()),
            },
        );
        // a prompt of 4, then 6 steps of one token
        let mut steps = vec![(
            rows.iter().flat_map(|r| r[..4].to_vec()).collect(),
            (0..2).flat_map(|_| 0..4).collect(),
            vec![1.0; 8],
        )];
        for t in 4..seq as usize {
            steps.push((
                rows.iter().map(|r| r[t]).collect(),
                vec![t as i64; 2],
                vec![1.0; 2],
            ));
        }
        let got = run_cached(&model, &steps, 2);
        let v = vocab;
        for b in 0..2 {
            let full = &whole[b * seq as usize * v..(b + 1) * seq as usize * v];
            let mut pieces: Vec<f32> = got[0][b * 4 * v..(b + 1) * 4 * v].to_vec();
            for step in &got[1..] {
                pieces.extend(&step[b * v..(b + 1) * v]);
            }
            let diff = max_abs_diff(&pieces, full);
            eprintln!("{name} row {b}: max |cached - full| {diff:.2e}");
            assert!(diff <= 1e-5, "{name} row {b}: {diff}");
        }
    }
}

#[test]
fn a_right_padded_prompt_decodes_past_its_padding() {
    // row 1's prompt is 2 tokens and a padding slot: its next tokens go to
    // positions 2, 3, ... while the padding key stays hidden
    let model = loaded("tied");
    let v = model.config.vocab_size;
    let row0 = [5i64, 17, 33, 40, 41, 42];
    let row1 = [9i64, 60, 70, 71, 72];
    let steps = vec![
        (
            vec![5, 17, 33, 9, 60, 0],
            vec![0, 1, 2, 0, 1, 2],
            vec![1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        ),
        (vec![40, 70], vec![3, 2], vec![1.0, 1.0]),
        (vec![41, 71], vec![4, 3], vec![1.0, 1.0]),
        (vec![42, 72], vec![5, 4], vec![1.0, 1.0]),
    ];
    let got = run_cached(&model, &steps, 2);
    let alone = |row: &[i64]| {
        let n = row.len();
        logits_of(
            &model,
            Flow::Tokens {
                ids: ids_tensor(row, [1, n]),
                type_ids: ids_tensor(&vec![0; n], [1, n]),
                mask: Tensor::ones([1, n], &device()),
            },
        )
        .1
    };
    let (full0, full1) = (alone(&row0), alone(&row1));
    // row 0: prompt positions 0..3, then 3, 4, 5
    let mut r0 = got[0][..3 * v].to_vec();
    let mut r1 = got[0][3 * v..5 * v].to_vec();
    for step in &got[1..] {
        r0.extend(&step[..v]);
        r1.extend(&step[v..2 * v]);
    }
    assert!(max_abs_diff(&r0, &full0) <= 1e-5);
    assert!(max_abs_diff(&r1, &full1) <= 1e-5);
}

#[test]
fn groups_run_in_pieces_equal_the_whole() {
    let r = reference("untied");
    let model = loaded("untied");
    let (flow, _) = input(&r);
    let (_, whole) = logits_of(&model, flow.clone());
    let half = model.run(flow, 0..2);
    let Flow::Hidden { x, mask } = &half else {
        panic!("blocks output hidden states");
    };
    assert_eq!(x.dims(), [2, 12, 32]);
    assert_eq!(mask.dims(), [2, 12]);
    let Flow::Hidden { x, .. } = model.run(half, 2..4) else {
        panic!("the top group returns logits");
    };
    assert_eq!(host(&x).1, whole);
    let names: Vec<String> = model.groups().into_iter().map(|g| g.name).collect();
    assert_eq!(names, ["embeddings", "h.0", "h.1", "head"]);
    assert_eq!(model.reads_after(4), Positions::All);
}

#[test]
fn module_paths_are_transformers_keys_and_conv1d_weights_stay_in_out() {
    let untied = loaded("untied");
    let model = Lm {
        body: untied,
        head: None,
    };
    let exported = export(&model, &|_| true);
    let shape = |k: &str| {
        exported
            .iter()
            .find(|t| t.0 == k)
            .unwrap_or_else(|| panic!("{k} not exported"))
            .1
            .clone()
    };
    assert_eq!(shape("transformer.wte.weight"), vec![96, 32]);
    assert_eq!(shape("transformer.wpe.weight"), vec![64, 32]);
    assert_eq!(shape("transformer.h.0.ln_1.weight"), vec![32]);
    assert_eq!(shape("transformer.h.0.attn.c_attn.weight"), vec![32, 96]);
    assert_eq!(shape("transformer.h.0.attn.c_attn.bias"), vec![96]);
    assert_eq!(shape("transformer.h.1.attn.c_proj.weight"), vec![32, 32]);
    assert_eq!(shape("transformer.h.1.mlp.c_fc.weight"), vec![32, 128]);
    assert_eq!(shape("transformer.h.1.mlp.c_proj.weight"), vec![128, 32]);
    assert_eq!(shape("transformer.h.1.ln_2.bias"), vec![32]);
    assert_eq!(shape("transformer.ln_f.bias"), vec![32]);
    // nn.Linear, stored [out, in], beside `transformer.`
    assert_eq!(shape("lm_head.weight"), vec![96, 32]);
    // exactly the file's keys, with the file's values
    let checkpoint = Checkpoint::open(&fixture("untied")).unwrap();
    assert_eq!(exported.len(), checkpoint.tensors.len());
    for (k, s, v) in &exported {
        let t = &checkpoint.tensors[k];
        assert_eq!((&t.shape, &t.data), (s, v), "{k}");
    }
}

fn as_checkpoint(tensors: &NamedTensors) -> Checkpoint {
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

fn scratch(config: &Gpt2Config, seed: u64) -> Lm {
    let body = Gpt2::new(config, &device()).unwrap();
    load(Lm { body, head: None }, Source::Scratch, seed)
        .unwrap()
        .0
}

fn tiny(tied: bool) -> Gpt2Config {
    Gpt2Config {
        vocab_size: 40,
        n_positions: 16,
        n_embd: 16,
        n_layer: 2,
        n_head: 2,
        tie_word_embeddings: tied,
        ..Gpt2Config::default()
    }
}

#[test]
fn export_round_trips_through_a_model_directory() {
    for name in ["untied", "tied"] {
        let r = reference(name);
        // trained-looking weights: the fixture's, then every value moved
        let model = Lm {
            body: loaded(name),
            head: None,
        };
        let moved: NamedTensors = export(&model, &|_| true)
            .into_iter()
            .map(|(k, s, v)| {
                let v = v
                    .iter()
                    .enumerate()
                    .map(|(i, x)| x + 0.01 * ((i % 7) as f32 - 3.0))
                    .collect();
                (k, s, v)
            })
            .collect();
        let body = Gpt2::from_config_file(&fixture(name).join("config.json"), &device()).unwrap();
        let (model, _) = load(
            Lm { body, head: None },
            Source::Exact(&as_checkpoint(&moved)),
            0,
        )
        .unwrap();
        let (flow, mask) = input(&r);
        let (_, want) = logits_of(&model.body, flow.clone());

        let dir = tempfile::tempdir().unwrap();
        write_export(&model, dir.path());
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["model_type"], "gpt2");
        assert_eq!(config["architectures"][0], "GPT2LMHeadModel");
        let again = Gpt2::from_config_file(&dir.path().join("config.json"), &device()).unwrap();
        assert_eq!(again.config, model.body.config);
        let checkpoint = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(
            checkpoint.tensors.contains_key("lm_head.weight"),
            name == "untied"
        );
        let (again, _) = load(
            Lm {
                body: again,
                head: None,
            },
            Source::Exact(&checkpoint),
            0,
        )
        .unwrap();
        let (_, got) = logits_of(&again.body, flow);
        assert_eq!(got, want, "{name}");
        let _ = mask;

        // for scripts/check_gpt2_export.py: the directory and these logits
        if let Some(out) = std::env::var_os("HEADSTART_GPT2_EXPORT_TO") {
            let out = Path::new(&out).join(name);
            std::fs::create_dir_all(&out).unwrap();
            write_export(&model, &out);
            let (ids, _) = int_rows(&r["input_ids"]);
            let (m, _) = int_rows(&r["attention_mask"]);
            let json = serde_json::json!({
                "input_ids": ids, "attention_mask": m, "shape": [2, 12, model.body.config.vocab_size],
                "logits": want,
            });
            crate::fsutil::write_json_atomic(&out.join("headstart_logits.json"), &json).unwrap();
        }
    }
}

/// What the later export of a causal LM writes: config.json and
/// model.safetensors under transformers' keys.
fn write_export(model: &Lm, dir: &Path) {
    crate::fsutil::write_json_atomic(&dir.join("config.json"), &model.body.hf_config()).unwrap();
    let tensors: NamedTensors = export(model, &|_| true)
        .into_iter()
        .map(|(k, s, v)| (model.body.export_key(&k), s, v))
        .collect();
    let meta = [("format".to_string(), "pt".to_string())].into();
    crate::hub::write_safetensors(&dir.join("model.safetensors"), &tensors, Some(meta)).unwrap();
}

#[test]
fn a_stored_lm_head_that_differs_from_the_tied_embeddings_is_an_error() {
    let model = scratch(&tiny(true), 1);
    let mut tensors = export(&model, &|_| true);
    let wte = tensors
        .iter()
        .find(|t| t.0 == "transformer.wte.weight")
        .unwrap()
        .clone();
    // equal: loads, every key used
    tensors.push(("lm_head.weight".into(), wte.1.clone(), wte.2.clone()));
    let (_, report) = load(
        scratch(&tiny(true), 2),
        Source::Exact(&as_checkpoint(&tensors)),
        0,
    )
    .unwrap();
    assert!(report.unexpected.is_empty());
    // different: an error naming both keys and the config field
    tensors.last_mut().unwrap().2[0] += 1.0;
    let err = load(
        scratch(&tiny(true), 2),
        Source::Pretrained(&as_checkpoint(&tensors)),
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("lm_head.weight")
            && err.contains("transformer.wte.weight")
            && err.contains("tie_word_embeddings"),
        "{err}"
    );
}

#[test]
fn a_bare_gpt2model_checkpoint_loads() {
    // the hub's `gpt2` ships GPT2Model keys: no prefix, old `attn.bias` buffers
    let full = Lm {
        body: loaded("tied"),
        head: None,
    };
    let mut bare: NamedTensors = export(&full, &|_| true)
        .into_iter()
        .map(|(k, s, v)| (k.strip_prefix("transformer.").unwrap().to_string(), s, v))
        .collect();
    bare.push((
        "h.0.attn.bias".into(),
        vec![1, 1, 2, 2],
        vec![1.0, 0.0, 1.0, 1.0],
    ));
    let body = Gpt2::from_config_file(&fixture("tied").join("config.json"), &device()).unwrap();
    let (model, report) = load(
        Lm { body, head: None },
        Source::Pretrained(&as_checkpoint(&bare)),
        0,
    )
    .unwrap();
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    assert_eq!(export(&model, &|_| true), export(&full, &|_| true),);
}

#[test]
fn tied_output_projection_is_the_embedding_parameter() {
    let tied = scratch(&tiny(true), 3);
    let counts = group_counts(&tied);
    let h = 16;
    assert_eq!(counts[0], ("embeddings".to_string(), 40 * h + 16 * h));
    assert_eq!(counts[3], ("head".to_string(), 2 * h));
    let untied = scratch(&tiny(false), 3);
    assert_eq!(
        group_counts(&untied)[3],
        ("head".to_string(), 2 * h + 40 * h)
    );
    assert_eq!(untied.num_params(), tied.num_params() + 40 * h);

    // freezing the embeddings freezes the output projection: no gradient
    // reaches wte through the logits
    let device = device().autodiff();
    let body = Gpt2::new(&tiny(true), &device).unwrap();
    let model = load(Lm { body, head: None }, Source::Scratch, 3)
        .unwrap()
        .0
        .set_trainable(&[false, true, true, true]);
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 3], [1, 3]), &device);
    let flow = Flow::Tokens {
        ids: ids.clone(),
        type_ids: ids.zeros_like(),
        mask: Tensor::ones([1, 3], &device),
    };
    let Flow::Hidden { x, .. } = model.body.run(flow, 0..4) else {
        panic!("logits");
    };
    let grads = x.sum().backward();
    assert!(model.body.wte.weight.grad(&grads).is_none());
    assert!(model.body.ln_f.gamma.grad(&grads).is_some());
}

#[test]
fn scratch_init_follows_transformers() {
    let config = Gpt2Config {
        vocab_size: 300,
        n_positions: 64,
        n_embd: 64,
        n_layer: 8,
        n_head: 4,
        ..Gpt2Config::default()
    };
    let (m, report) = load(
        Lm {
            body: Gpt2::new(&config, &device()).unwrap(),
            head: None,
        },
        Source::Scratch,
        5,
    )
    .unwrap();
    assert!(report.from_scratch);
    let std = |t: &Tensor<2>| {
        let (_, v) = host(t);
        (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt()
    };
    let b = &m.body.h[3];
    for (what, t) in [
        ("wte", m.body.wte.weight.val()),
        ("wpe", m.body.wpe.weight.val()),
        ("c_attn", b.attn.c_attn.weight.val()),
        ("c_fc", b.mlp.c_fc.weight.val()),
    ] {
        let s = std(&t);
        assert!((s - 0.02).abs() < 0.002, "{what}: std {s}");
    }
    // the residual projections: 0.02 / sqrt(2 * 8) = 0.005
    for (what, t) in [
        ("attn.c_proj", b.attn.c_proj.weight.val()),
        ("mlp.c_proj", b.mlp.c_proj.weight.val()),
    ] {
        let s = std(&t);
        assert!((s - 0.005).abs() < 0.0006, "{what}: std {s}");
    }
    let (_, bias) = host(&b.attn.c_attn.bias.val());
    assert!(bias.iter().all(|&x| x == 0.0));
    let (_, g) = host(&m.body.ln_f.gamma.val());
    assert!(g.iter().all(|&x| x == 1.0));
    let (_, beta) = host(&b.ln_2.beta.as_ref().unwrap().val());
    assert!(beta.iter().all(|&x| x == 0.0));
    // an untied lm_head: nn.Linear's normal(0, 0.02)
    let untied = Gpt2Config {
        tie_word_embeddings: false,
        ..config
    };
    let m = load(
        Lm {
            body: Gpt2::new(&untied, &device()).unwrap(),
            head: None,
        },
        Source::Scratch,
        5,
    )
    .unwrap()
    .0;
    let s = std(&m.body.lm_head.as_ref().unwrap().weight.val());
    assert!((s - 0.02).abs() < 0.002, "lm_head: std {s}");
}

#[test]
fn flops_count_the_matrix_products() {
    let config = Gpt2Config {
        vocab_size: 10,
        n_positions: 8,
        n_embd: 8,
        n_layer: 1,
        n_head: 2,
        n_inner: Some(16),
        ..Gpt2Config::default()
    };
    let m = Gpt2::new(&config, &device()).unwrap();
    // batch 2, 3 positions: 6 rows through c_attn (8x24), c_proj (8x8),
    // c_fc (8x16), mlp.c_proj (16x8): 2*6*(192 + 64 + 128 + 128) = 6144;
    // per sequence and head (2 heads of 4 dims) the 3x3 scores cost
    // 2*3*3*4 = 72 and the context as much: 2 * 72 * 2 heads * 2 = 576;
    // logits 2*6*8*10 = 960
    assert_eq!(m.group_flops(2, 3), vec![0.0, 6144.0 + 576.0, 960.0]);
}

#[test]
fn gpt2_small_has_the_published_size() {
    let m = Gpt2::reference(&device()).unwrap();
    // transformers' GPT2LMHeadModel("gpt2").num_parameters(): 124,439,808
    assert_eq!(m.num_params(), 124_439_808);
    assert_eq!(m.groups().len(), 14);
    assert_eq!(m.max_positions(), 1024);
    assert_eq!(m.eos_token_ids(), vec![50256]);
    assert_eq!(m.feature_size(), 50257);
}

#[test]
fn bad_configs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let err_for = |text: &str| {
        std::fs::write(&path, text).unwrap();
        format!("{:#}", Gpt2Config::from_file(&path).unwrap_err())
    };
    let sizes = r#""vocab_size": 96, "n_positions": 64, "n_layer": 2"#;
    let err = err_for(&format!(r#"{{{sizes}, "n_head": 4}}"#));
    assert!(
        err.contains("config.json") && err.contains("n_embd"),
        "{err}"
    );
    let err = err_for(&format!(r#"{{{sizes}, "n_embd": 30, "n_head": 4}}"#));
    assert!(
        err.contains("config.json") && err.contains("n_embd (30)") && err.contains("n_head (4)"),
        "{err}"
    );
    let err = err_for(
        r#"{"vocab_size": 96, "n_positions": 64, "n_layer": 0, "n_embd": 32, "n_head": 4}"#,
    );
    assert!(
        err.contains("config.json") && err.contains("n_layer is 0"),
        "{err}"
    );
    let err = err_for(&format!(r#"{{{sizes}, "n_embd": 32, "n_head": 0}}"#));
    assert!(err.contains("n_head is 0"), "{err}");
    let err = err_for(&format!(
        r#"{{{sizes}, "n_embd": 32, "n_head": 4, "activation_function": "mish"}}"#
    ));
    assert!(
        err.contains("activation_function") && err.contains("mish"),
        "{err}"
    );
    let err = err_for(&format!(
        r#"{{{sizes}, "n_embd": 32, "n_head": 4, "attn_pdrop": 1.5}}"#
    ));
    assert!(err.contains("attn_pdrop"), "{err}");
    // transformers' defaults for the rest
    std::fs::write(
        &path,
        format!(r#"{{{sizes}, "n_embd": 32, "n_head": 4, "n_ctx": 64}}"#),
    )
    .unwrap();
    let c = Gpt2Config::from_file(&path).unwrap();
    assert_eq!(
        (c.inner(), c.layer_norm_epsilon, c.tie_word_embeddings),
        (128, 1e-5, true)
    );
    assert_eq!(c.activation_function, "gelu_new");
    assert_eq!(c.eos_token_id, Some(TokenIds::One(50256)));
    assert_eq!(c.attention_scale(3), 1.0 / (8f64).sqrt());
}

#[test]
fn a_gpt2_in_the_hugging_face_cache_resolves_and_loads_offline() {
    // the fixture laid out as the hub's `gpt2` is cached: bare GPT2Model keys
    let cache = tempfile::tempdir().unwrap();
    let commit = "607a30d783dfa663caf39e06633721c8d4cfcd7e";
    let repo = cache.path().join("models--gpt2");
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    std::fs::copy(fixture("tied/config.json"), snap.join("config.json")).unwrap();
    let full = Lm {
        body: loaded("tied"),
        head: None,
    };
    let bare: NamedTensors = export(&full, &|_| true)
        .into_iter()
        .map(|(k, s, v)| (k.strip_prefix("transformer.").unwrap().to_string(), s, v))
        .collect();
    crate::hub::write_safetensors(&snap.join("model.safetensors"), &bare, None).unwrap();

    let found = crate::hub::resolve_model_in("gpt2", cache.path(), true).unwrap();
    assert_eq!(found.path, snap);
    assert_eq!(crate::models::model_type(&found.path).unwrap(), "gpt2");
    let body = Gpt2::from_config_file(&found.path.join("config.json"), &device()).unwrap();
    let checkpoint = Checkpoint::open(&found.path).unwrap();
    let (model, report) =
        load(Lm { body, head: None }, Source::Pretrained(&checkpoint), 0).unwrap();
    assert!(report.missing.is_empty() && report.unexpected.is_empty());
    let r = reference("tied");
    let (flow, mask) = input(&r);
    let (_, got) = logits_of(&model.body, flow);
    let (diff, scale) = max_diff_real(&got, &floats(&r["logits"]), &mask, 96);
    assert!(diff <= 1e-4 * scale.max(1.0), "{diff}");
}

#[test]
fn training_with_dropout_runs_and_reaches_every_parameter() {
    // attention-probability dropout takes the explicit softmax path
    let device = device().autodiff();
    let config = Gpt2Config {
        attn_pdrop: 0.5,
        ..tiny(false)
    };
    let body = Gpt2::new(&config, &device).unwrap();
    let model = load(Lm { body, head: None }, Source::Scratch, 4).unwrap().0;
    let ids = Tensor::<2, Int>::from_data(
        TensorData::new(vec![1i64, 2, 3, 4, 5, 6, 7, 0], [2, 4]),
        &device,
    );
    let mask = Tensor::<2>::from_data(
        TensorData::new(vec![1f32, 1., 1., 1., 1., 1., 1., 0.], [2, 4]),
        &device,
    );
    let flow = Flow::Tokens {
        ids: ids.clone(),
        type_ids: ids.zeros_like(),
        mask,
    };
    let Flow::Hidden { x, .. } = model.body.run(flow, 0..4) else {
        panic!("logits");
    };
    assert_eq!(x.dims(), [2, 4, 40]);
    let (_, v) = host(&x);
    assert!(v.iter().all(|x| x.is_finite()));
    let grads = (x.clone() * x).sum().backward();
    let b = &model.body.h[0];
    assert!(b.attn.c_attn.weight.grad(&grads).is_some());
    assert!(model.body.wte.weight.grad(&grads).is_some());
    assert!(
        model
            .body
            .lm_head
            .as_ref()
            .unwrap()
            .weight
            .grad(&grads)
            .is_some()
    );
}
