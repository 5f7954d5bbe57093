use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::*;
use crate::hub::Checkpoint;
use crate::models::bert::Bert;
use crate::models::gpt2::Gpt2;
use crate::models::llama::Llama;
use crate::models::params::host;
use crate::models::state::{Source, export, load};
use crate::models::{Architecture, Flow, TaskModel};
use crate::train::optim::{AdamW, AdamWConfig, GradAccumulator};

type Bare<A> = TaskModel<A, Option<burn::nn::Linear>>;

fn fixture(family: &str, name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(family)
        .join(name)
}

fn loaded<A: Architecture>(dir: &Path, device: &Device) -> Bare<A> {
    let body = A::from_config_file(&dir.join("config.json"), device).unwrap();
    let checkpoint = Checkpoint::open(dir).unwrap();
    load(
        TaskModel { body, head: None },
        Source::Pretrained(&checkpoint),
        0,
    )
    .unwrap()
    .0
}

fn tokens(device: &Device) -> Flow {
    let ids = Tensor::<2, Int>::from_data(
        TensorData::new(vec![1i64, 5, 7, 2, 3, 9, 4, 6], [2, 4]),
        device,
    );
    Flow::Tokens {
        type_ids: ids.zeros_like(),
        ids,
        mask: Tensor::ones([2, 4], device),
    }
}

/// The top group's output (logits or hidden states), flattened.
fn output<A: Architecture>(model: &Bare<A>, device: &Device) -> Vec<f32> {
    let n = model.num_groups();
    match model.body.run(tokens(device), 0..n) {
        Flow::Hidden { x, .. } => host(&x).1,
        Flow::Pooled(x) => host(&x).1,
        other => panic!("unexpected {other:?}"),
    }
}

fn all_targets<A: Architecture>(r: usize) -> LoraConfig {
    LoraConfig {
        r,
        alpha: 16.0,
        dropout: 0.0,
        targets: A::LORA_TARGETS.iter().map(|s| s.to_string()).collect(),
    }
}

/// Every adapter's B set to small non-zero values, so that it changes outputs.
fn perturb_b<M: Module>(model: M) -> M {
    struct Fill(Vec<String>, u64);
    impl burn::module::ModuleMapper for Fill {
        fn enter_module(&mut self, name: &str, _c: &str) {
            self.0.push(name.to_string());
        }
        fn exit_module(&mut self, _n: &str, _c: &str) {
            self.0.pop();
        }
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if self.0.last().is_none_or(|n| n != "lora_B") {
                return p;
            }
            let (id, t, _) = p.consume();
            let dims = t.dims();
            let n: usize = dims.iter().product();
            let mut rng = crate::models::params::SeededRng::new(self.1);
            self.1 += 1;
            let v: Vec<f32> = (0..n).map(|_| (rng.normal() * 0.05) as f32).collect();
            Param::initialized(id, Tensor::from_data(TensorData::new(v, dims), &t.device()))
        }
    }
    model.map(&mut Fill(Vec::new(), 11))
}

fn fresh_adapter_changes_nothing<A: Architecture>(dir: &Path) {
    let device = Device::default();
    let model = loaded::<A>(dir, &device);
    let before = output(&model, &device);
    let (model, targets) = model.add_lora(&all_targets::<A>(4), 1).unwrap();
    assert_eq!(targets.len(), A::LORA_TARGETS.len());
    let adapters = export(&model, &|p| is_adapter_path(p));
    assert!(!adapters.is_empty());
    // A is drawn (non-zero), B is zero
    assert!(
        adapters
            .iter()
            .any(|(k, _, v)| k.ends_with("lora_A.weight") && v.iter().any(|x| *x != 0.0))
    );
    assert!(
        adapters
            .iter()
            .filter(|(k, _, _)| k.ends_with("lora_B.weight"))
            .all(|(_, _, v)| v.iter().all(|x| *x == 0.0))
    );
    assert_eq!(
        output(&model, &device),
        before,
        "B = 0 must be bit-identical"
    );
    // a non-zero B changes the outputs; merging gives the same ones
    let model = perturb_b(model);
    let adapted = output(&model, &device);
    assert_ne!(adapted, before);
    let merged = model.merge_lora();
    assert!(export(&merged, &|p| is_adapter_path(p)).is_empty());
    let plain = output(&merged, &device);
    let worst = adapted
        .iter()
        .zip(&plain)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "merged differs by {worst}");
}

#[test]
fn gpt2_fresh_adapter_is_exact_and_merges() {
    fresh_adapter_changes_nothing::<Gpt2>(&fixture("gpt2", "tied"));
}

#[test]
fn llama_fresh_adapter_is_exact_and_merges() {
    fresh_adapter_changes_nothing::<Llama>(&fixture("llama", "tied_gqa"));
}

#[test]
fn bert_fresh_adapter_is_exact_and_merges() {
    fresh_adapter_changes_nothing::<Bert>(&fixture("", "tiny-bert"));
}

#[test]
fn vit_fresh_adapter_is_exact_and_merges() {
    let device = Device::default();
    let dir = fixture("vision", "vit_random");
    let body =
        crate::models::vit::Vit::from_config_file(&dir.join("config.json"), &device).unwrap();
    let checkpoint = Checkpoint::open(&dir).unwrap();
    let (model, _) = load(
        TaskModel {
            body,
            head: None::<burn::nn::Linear>,
        },
        Source::Pretrained(&checkpoint),
        0,
    )
    .unwrap();
    let side = model.body.config.image_size;
    let mut rng = crate::models::params::SeededRng::new(3);
    let pixels: Vec<f32> = (0..2 * 3 * side * side)
        .map(|_| rng.normal() as f32)
        .collect();
    let run = |m: &Bare<crate::models::vit::Vit>| {
        let x =
            Tensor::<4>::from_data(TensorData::new(pixels.clone(), [2, 3, side, side]), &device);
        let n = m.num_groups();
        match m.body.run(Flow::Maps(x), 0..n) {
            Flow::Pooled(x) => host(&x).1,
            Flow::Hidden { x, .. } => host(&x).1,
            other => panic!("unexpected {other:?}"),
        }
    };
    let before = run(&model);
    let (model, _) = model
        .add_lora(&all_targets::<crate::models::vit::Vit>(2), 4)
        .unwrap();
    assert_eq!(run(&model), before);
    let model = perturb_b(model);
    let adapted = run(&model);
    assert_ne!(adapted, before);
    let merged = run(&model.merge_lora());
    let worst = adapted
        .iter()
        .zip(&merged)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "merged differs by {worst}");
}

#[test]
fn adapters_keep_peft_keys_and_layouts() {
    let device = Device::default();
    let model = loaded::<Gpt2>(&fixture("gpt2", "tied"), &device);
    let (model, _) = model
        .add_lora(
            &LoraConfig {
                r: 3,
                alpha: 6.0,
                dropout: 0.0,
                targets: vec!["c_attn".into(), "c_proj".into()],
            },
            0,
        )
        .unwrap();
    let t = export(&model, &|p| is_adapter_path(p));
    let shape = |k: &str| t.iter().find(|x| x.0 == k).unwrap().1.clone();
    let h = model.body.hidden_size();
    assert_eq!(
        shape("transformer.h.0.attn.c_attn.lora_A.weight"),
        vec![3, h]
    );
    assert_eq!(
        shape("transformer.h.0.attn.c_attn.lora_B.weight"),
        vec![3 * h, 3]
    );
    assert_eq!(
        shape("transformer.h.0.mlp.c_proj.lora_B.weight"),
        vec![h, 3]
    );
    assert!(t.iter().all(|x| !x.0.contains("c_fc")));
    // a run's checkpoint of the adapted model loads back exactly
    let dir = tempfile::tempdir().unwrap();
    let all = export(&model, &|_| true);
    crate::hub::write_safetensors(&dir.path().join("model.safetensors"), &all, None).unwrap();
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    let body =
        Gpt2::from_config_file(&fixture("gpt2", "tied").join("config.json"), &device).unwrap();
    let (fresh, _) = TaskModel::<Gpt2, Option<burn::nn::Linear>> { body, head: None }
        .add_lora(
            &LoraConfig {
                r: 3,
                alpha: 6.0,
                dropout: 0.0,
                targets: vec!["c_attn".into(), "c_proj".into()],
            },
            9,
        )
        .unwrap();
    let (back, _) = load(fresh, Source::Exact(&ckpt), 0).unwrap();
    assert_eq!(export(&back, &|_| true), all);
}

#[test]
fn unknown_target_is_named_with_the_valid_ones() {
    let device = Device::default();
    let model = loaded::<Llama>(&fixture("llama", "tied_gqa"), &device);
    let err = model
        .add_lora(
            &LoraConfig {
                r: 4,
                alpha: 8.0,
                dropout: 0.0,
                targets: vec!["q_proj".into(), "query".into()],
            },
            0,
        )
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("`query`"), "{err}");
    assert!(err.contains("q_proj, k_proj, v_proj, o_proj"), "{err}");
}

/// A few AdamW steps on the adapted model: base weights stay bit-identical,
/// every adapter (and only adapters) moves.
fn only_adapters_train<A: Architecture>(dir: &Path) {
    let device = Device::default().autodiff();
    let model = loaded::<A>(dir, &device);
    let (model, _) = model
        .add_lora(
            &LoraConfig {
                r: 2,
                alpha: 4.0,
                dropout: 0.1,
                targets: Vec::new(),
            },
            5,
        )
        .unwrap();
    let mut model = model.train_only_adapters();
    let start = export(&model, &|_| true);
    let mut opt = AdamW::new(AdamWConfig::default());
    for _ in 0..3 {
        let n = model.num_groups();
        let out = match model.body.run(tokens(&device), 0..n) {
            Flow::Hidden { x, .. } => x.flatten::<1>(0, 2),
            Flow::Pooled(x) => x.flatten::<1>(0, 1),
            other => panic!("unexpected {other:?}"),
        };
        let loss = (out.clone() * out).mean();
        let mut grads = loss.backward();
        let mut acc = GradAccumulator::default();
        acc.add(&model, &mut grads);
        model = opt.step(model, &mut acc, &|_| 1e-2, 1.0);
    }
    let end = export(&model, &|_| true);
    assert_eq!(start.len(), end.len());
    let mut moved = 0;
    for ((k, _, a), (_, _, b)) in start.iter().zip(&end) {
        if k.contains(".lora_") {
            assert_ne!(a, b, "{k} did not train");
            moved += 1;
        } else {
            assert_eq!(a, b, "{k} is frozen but changed");
        }
    }
    assert!(moved > 0);
    // the optimizer holds state for the adapters alone
    let (state, _) = opt.export();
    assert!(!state.is_empty());
    assert!(
        state.iter().all(|(k, _, _)| k.contains(".lora_")),
        "{state:?}"
    );
}

#[test]
fn gpt2_trains_only_adapters() {
    only_adapters_train::<Gpt2>(&fixture("gpt2", "tied"));
}

#[test]
fn llama_trains_only_adapters() {
    only_adapters_train::<Llama>(&fixture("llama", "tied_gqa"));
}

#[test]
fn bert_trains_only_adapters() {
    only_adapters_train::<Bert>(&fixture("", "tiny-bert"));
}

/// Writes, for each family's fixture, a PEFT adapter directory, the merged
/// model and our outputs on fixed ids, for `scripts/check_lora_peft.py`
/// (to `$HEADSTART_PEFT_OUT` when set, else a temporary directory).
fn write_round_trip<A: Architecture>(family: &str, dir: &Path, out: &Path) {
    let device = Device::default();
    let model = loaded::<A>(dir, &device);
    let (model, _) = model.add_lora(&all_targets::<A>(3), 2).unwrap();
    let model = perturb_b(model);
    let ours = output(&model, &device);
    let root = out.join(family);
    let config = all_targets::<A>(3);
    // the Python side loads BertModel (no `bert.` prefix) and the causal LMs
    // whole (`transformer.`/`model.` prefixes)
    let with_prefix = family != "bert";
    crate::train::export::write_peft_adapter(
        &model,
        &config,
        None,
        family,
        with_prefix,
        &root.join("adapter"),
    )
    .unwrap();
    let adapter =
        crate::hub::read_safetensors(&root.join("adapter/adapter_model.safetensors")).unwrap();
    assert!(!adapter.is_empty());
    assert!(adapter.keys().all(|k| k.starts_with("base_model.model.")
        && (k.ends_with(".lora_A.weight") || k.ends_with(".lora_B.weight"))));
    let merged = model.merge_lora();
    let merged_out = output(&merged, &device);
    let tensors: Vec<_> = export(&merged, &|_| true)
        .into_iter()
        .map(|(k, s, v)| (merged.body.export_key(&k), s, v))
        .collect();
    std::fs::create_dir_all(root.join("merged")).unwrap();
    crate::hub::write_safetensors(&root.join("merged/model.safetensors"), &tensors, None).unwrap();
    std::fs::copy(dir.join("config.json"), root.join("merged/config.json")).unwrap();
    let report = serde_json::json!({
        "base": dir,
        "ids": [[1, 5, 7, 2], [3, 9, 4, 6]],
        "ours": ours,
        "ours_merged": merged_out,
    });
    std::fs::write(root.join("ours.json"), report.to_string()).unwrap();
}

#[test]
fn writes_peft_round_trip_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::env::var_os("HEADSTART_PEFT_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    write_round_trip::<Gpt2>("gpt2", &fixture("gpt2", "tied"), &out);
    write_round_trip::<Llama>("llama", &fixture("llama", "tied_gqa"), &out);
    write_round_trip::<Bert>("bert", &fixture("", "tiny-bert"), &out);
    let c: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("gpt2/adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(c["peft_type"], "LORA");
    assert_eq!(c["fan_in_fan_out"], true);
    assert_eq!(c["r"], 3);
    assert!(
        c["target_modules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "transformer.h.0.attn.c_attn")
    );
}
