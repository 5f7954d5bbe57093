//! The adapters under tests/fixtures/peft/ were written by PEFT itself
//! (scripts/make_peft_fixtures.py) with non-zero B, with PEFT's logits
//! beside them.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::*;
use crate::models::causal::{CausalLm, KvCache};
use crate::models::gpt2::Gpt2;
use crate::models::llama::Llama;
use crate::models::{Flow, state};
use crate::tasks::causal_lm::NoHead;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/peft").join(name)
}

struct Reference {
    ids: Vec<Vec<i64>>,
    logits: Vec<f32>,
    base_logits: Vec<f32>,
}

fn reference(name: &str) -> Reference {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(name).join("reference.json")).unwrap(),
    )
    .unwrap();
    let floats = |k: &str| -> Vec<f32> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    Reference {
        ids: serde_json::from_value(v["input_ids"].clone()).unwrap(),
        logits: floats("logits"),
        base_logits: floats("base_logits"),
    }
}

/// Largest difference relative to the largest magnitude of `want`.
fn relative(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    got.iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

fn base<A: Architecture>(dir: &Path, device: &Device) -> TaskModel<A, NoHead> {
    let body = A::from_config_file(&dir.join("config.json"), device).unwrap();
    let c = Checkpoint::open(dir).unwrap();
    let (m, report) =
        state::load(TaskModel { body, head: NoHead }, Source::Pretrained(&c), 0).unwrap();
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    m
}

fn lm_logits<A: CausalLm>(m: &A, ids: &[Vec<i64>], device: &Device) -> Vec<f32> {
    let (b, s) = (ids.len(), ids[0].len());
    let t = Tensor::<2, Int>::from_data(TensorData::new(ids.concat(), [b, s]), device);
    let logits = m.forward_cached(
        t,
        crate::models::causal::positions(b, 0, s, device),
        Tensor::ones([b, s], device),
        &mut KvCache::new(m.num_layers()),
    );
    crate::models::params::host(&logits).1
}

/// Checks (a) PEFT's logits, (b) a re-export equal to PEFT's files, (c)
/// the merged model's logits, for a causal LM fixture.
fn causal_round_trip<A: CausalLm>(name: &str) {
    let device = Device::default();
    let adapter = PeftAdapter::read(&fixture(name)).unwrap();
    // base_model_name_or_path is relative to the repository root
    let base_dir = adapter.resolve_base(None).unwrap();
    assert!(base_dir.join("config.json").is_file(), "{base_dir:?}");
    let want = reference(name);
    let plain = base::<A>(&base_dir, &device);
    let unadapted = lm_logits(&plain.body, &want.ids, &device);
    assert!(relative(&unadapted, &want.base_logits) < 1e-5);
    assert!(
        relative(&unadapted, &want.logits) > 1e-2,
        "the adapter must move the logits for the check to mean anything"
    );
    // (a)
    let adapted = adapter.attach(plain).unwrap();
    let got = lm_logits(&adapted.body, &want.ids, &device);
    let d = relative(&got, &want.logits);
    eprintln!("{name}: ours vs PEFT's logits, {d:e} of their scale");
    assert!(
        d < 1e-5,
        "{name}: PEFT's logits differ by {d:e} of their scale"
    );
    // (b)
    let out = tempfile::tempdir().unwrap();
    let task_type = adapter.task_type.as_deref();
    crate::train::export::write_peft_adapter(
        &adapted,
        &adapter.lora,
        task_type,
        adapter.base_model.as_deref().unwrap(),
        true,
        out.path(),
    )
    .unwrap();
    same_adapter_files(&fixture(name), out.path());
    // (c)
    let merged = adapted.merge_lora();
    let m = lm_logits(&merged.body, &want.ids, &device);
    let d = relative(&m, &got);
    assert!(d < 1e-5, "{name}: merged differs by {d:e}");
}

/// The re-exported adapter `ours` has PEFT's tensors (names, shapes,
/// values) and its settings.
fn same_adapter_files(peft: &Path, ours: &Path) {
    let a = crate::hub::read_safetensors(&peft.join(WEIGHTS_FILE)).unwrap();
    let b = crate::hub::read_safetensors(&ours.join(WEIGHTS_FILE)).unwrap();
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "tensor names"
    );
    for (k, t) in &a {
        assert_eq!(t.shape, b[k].shape, "{k}");
        assert_eq!(t.data, b[k].data, "{k}");
    }
    let json = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join(CONFIG_FILE)).unwrap()).unwrap()
    };
    let (p, o) = (json(peft), json(ours));
    for k in [
        "peft_type",
        "r",
        "task_type",
        "fan_in_fan_out",
        "base_model_name_or_path",
    ] {
        assert_eq!(p[k], o[k], "{k}");
    }
    assert_eq!(p["lora_alpha"].as_f64(), o["lora_alpha"].as_f64());
    // PEFT writes the names it matched by suffix, ours the module paths:
    // both must select exactly the adapted modules
    let modules: std::collections::BTreeSet<String> = a
        .keys()
        .filter_map(|k| k.strip_suffix(".lora_A.weight"))
        .map(|m| m.trim_start_matches(PREFIX).to_string())
        .collect();
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    for targets in [names(&p["target_modules"]), names(&o["target_modules"])] {
        for m in &modules {
            assert!(
                targets.iter().any(|t| suffix_match(m, t)),
                "{m} in {targets:?}"
            );
        }
    }
    let ours: std::collections::BTreeSet<String> =
        names(&o["target_modules"]).into_iter().collect();
    assert_eq!(ours, modules);
    // ours saves what PEFT saved of modules_to_save
    if let Some(saved) = o["modules_to_save"].as_array() {
        for m in saved {
            assert!(p["modules_to_save"].as_array().unwrap().contains(m), "{m}");
        }
    } else {
        assert!(p["modules_to_save"].is_null());
    }
}

#[test]
fn gpt2_adapter_from_peft_gives_peft_logits_and_exports_back() {
    causal_round_trip::<Gpt2>("gpt2");
}

#[test]
fn llama_adapter_from_peft_gives_peft_logits_and_exports_back() {
    causal_round_trip::<Llama>("llama");
}

#[test]
fn bert_classifier_adapter_with_its_head_gives_peft_logits() {
    let device = Device::default();
    let adapter = PeftAdapter::read(&fixture("bert-cls")).unwrap();
    assert_eq!(adapter.modules_to_save, vec!["classifier", "score"]);
    let loaded =
        crate::train::eval::load_classifier(&adapter.resolve_base(None).unwrap(), &device).unwrap();
    let want = reference("bert-cls");
    let run = |m: &TaskModel<
        crate::models::bert::Bert,
        crate::tasks::classification::ClassificationHead,
    >| {
        let (b, s) = (want.ids.len(), want.ids[0].len());
        let ids = Tensor::<2, Int>::from_data(TensorData::new(want.ids.concat(), [b, s]), &device);
        let flow = Flow::Tokens {
            type_ids: ids.zeros_like(),
            ids,
            mask: Tensor::ones([b, s], &device),
        };
        crate::models::params::host(&m.head.forward(m.features(flow, 0))).1
    };
    assert!(relative(&run(&loaded.model), &want.base_logits) < 1e-5);
    let head_before = state::export(&loaded.model, &|p| p.starts_with("head."));
    let adapted = adapter.attach(loaded.model).unwrap();
    // the head is the adapter's, not the base's
    assert_ne!(
        state::export(&adapted, &|p| p.starts_with("head.")),
        head_before
    );
    let got = run(&adapted);
    let d = relative(&got, &want.logits);
    eprintln!("bert-cls: ours vs PEFT's logits, {d:e} of their scale");
    assert!(d < 1e-5, "PEFT's logits differ by {d:e} of their scale");
    let out = tempfile::tempdir().unwrap();
    crate::train::export::write_peft_adapter(
        &adapted,
        &adapter.lora,
        Some("SEQ_CLS"),
        adapter.base_model.as_deref().unwrap(),
        true,
        out.path(),
    )
    .unwrap();
    same_adapter_files(&fixture("bert-cls"), out.path());
    let merged = run(&adapted.merge_lora());
    assert!(relative(&merged, &got) < 1e-5);
}

/// A copy of the GPT-2 fixture adapter with `edit` applied to its config.
fn edited(edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("gpt2");
    std::fs::copy(src.join(WEIGHTS_FILE), dir.path().join(WEIGHTS_FILE)).unwrap();
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join(CONFIG_FILE)).unwrap()).unwrap();
    // the base as an absolute path: the copy is elsewhere
    c["base_model_name_or_path"] = root()
        .join("tests/fixtures/gpt2/tied")
        .display()
        .to_string()
        .into();
    edit(&mut c);
    std::fs::write(dir.path().join(CONFIG_FILE), c.to_string()).unwrap();
    dir
}

fn attach_error(dir: &Path, case: &str) -> String {
    let adapter = match PeftAdapter::read(dir) {
        Ok(a) => a,
        Err(e) => return format!("{e:#}"),
    };
    let base_dir = adapter.resolve_base(None).unwrap();
    let plain = base::<Gpt2>(&base_dir, &Device::default());
    match adapter.attach(plain) {
        Ok(_) => panic!("{case}: no error"),
        Err(e) => format!("{e:#}"),
    }
}

/// A change to a copy of adapter_config.json.
type Edit = dyn FnOnce(&mut serde_json::Value);

#[test]
fn unsupported_settings_name_the_file_and_key() {
    let cases: Vec<(Box<Edit>, &str)> = vec![
        (Box::new(|c| c["use_dora"] = true.into()), "use_dora"),
        (
            Box::new(|c| c["rank_pattern"] = serde_json::json!({"c_attn": 8})),
            "rank_pattern",
        ),
        (
            Box::new(|c| c["alpha_pattern"] = serde_json::json!({"c_fc": 2})),
            "alpha_pattern",
        ),
        (Box::new(|c| c["bias"] = "lora_only".into()), "bias"),
        (
            Box::new(|c| c["target_modules"] = serde_json::json!(["c_attn", "wte"])),
            "embedding",
        ),
        (
            Box::new(|c| c["target_modules"] = serde_json::json!(["q_proj"])),
            "`q_proj`",
        ),
        (
            Box::new(|c| c["modules_to_save"] = serde_json::json!(["lm_head"])),
            "modules_to_save",
        ),
        (Box::new(|c| c["r"] = 8.into()), "rank r = 8"),
        (Box::new(|c| c["peft_type"] = "IA3".into()), "peft_type"),
    ];
    for (edit, key) in cases {
        let dir = edited(edit);
        let e = attach_error(dir.path(), key);
        assert!(e.contains(CONFIG_FILE) && e.contains(key), "{key}: {e}");
    }
}

#[test]
fn a_tensor_on_a_module_without_lora_is_an_error() {
    let dir = edited(|_| {});
    let path = dir.path().join(WEIGHTS_FILE);
    let mut t: Vec<(String, Vec<usize>, Vec<f32>)> = crate::hub::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t.shape, t.data))
        .collect();
    t.push((
        format!("{PREFIX}transformer.wte.lora_embedding_A"),
        vec![4, 96],
        vec![0.0; 4 * 96],
    ));
    crate::hub::write_safetensors(&path, &t, None).unwrap();
    let e = attach_error(dir.path(), "extra tensor");
    assert!(
        e.contains("embeddings") && e.contains("lora_embedding_A"),
        "{e}"
    );
    t.pop();
    t.push((
        format!("{PREFIX}transformer.h.0.ln_1.lora_A.weight"),
        vec![4, 48],
        vec![0.0; 4 * 48],
    ));
    crate::hub::write_safetensors(&path, &t, None).unwrap();
    let e = attach_error(dir.path(), "extra tensor");
    assert!(
        e.contains("transformer.h.0.ln_1") && e.contains("c_attn"),
        "{e}"
    );
}

#[test]
fn only_the_adapted_layers_get_adapters_and_a_missing_base_says_what_to_do() {
    // PEFT's layers_to_transform: the file has layer 1 only
    let dir = edited(|c| c["layers_to_transform"] = serde_json::json!([1]));
    let path = dir.path().join(WEIGHTS_FILE);
    let t: Vec<(String, Vec<usize>, Vec<f32>)> = crate::hub::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.contains(".h.1."))
        .map(|(k, t)| (k, t.shape, t.data))
        .collect();
    crate::hub::write_safetensors(&path, &t, None).unwrap();
    let adapter = PeftAdapter::read(dir.path()).unwrap();
    let plain = base::<Gpt2>(&adapter.resolve_base(None).unwrap(), &Device::default());
    let adapted = adapter.attach(plain).unwrap();
    let adapters = state::export(&adapted, &|p| crate::models::lora::is_adapter_path(p));
    assert_eq!(adapters.len(), t.len());
    assert!(adapters.iter().all(|(k, _, _)| k.contains(".h.1.")));

    let dir = edited(|c| c["base_model_name_or_path"] = "./no-such-base".into());
    let adapter = PeftAdapter::read(dir.path()).unwrap();
    let e = format!("{:#}", adapter.resolve_base(None).unwrap_err());
    assert!(e.contains("./no-such-base") && e.contains("--base"), "{e}");
    // --base overrides it
    let b = root().join("tests/fixtures/gpt2/tied");
    assert_eq!(adapter.resolve_base(Some(b.to_str().unwrap())).unwrap(), b);
}
