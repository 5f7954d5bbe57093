//! Writes a trained model as a Hugging Face directory that `transformers`
//! loads: the base model's `config.json` with the task's fields and class
//! name, `model.safetensors` under transformers' keys, the tokenizer files
//! (or an image task's `preprocessor_config.json`), and `headstart.json`
//! with what `eval` and `predict` need.

use std::path::Path;

use anyhow::{Context, Result};

use super::config::TrainConfig;
use super::eval::ExportMeta;
use crate::fsutil::{copy_present, write_json_atomic};
use crate::hub::write_torch_safetensors;
use crate::models::state::export as export_tensors;
use crate::models::{Architecture, TaskModel};
use crate::tasks::Task;
use crate::tokenize::TOKENIZER_FILES;

/// See the module doc. `base_dir` is the directory of the model the run
/// started from (its config and tokenizer are carried over).
pub fn export<A: Architecture, T: Task>(
    model: &TaskModel<A, T::Head>,
    task: &T,
    base_dir: &Path,
    out: &Path,
    config: &TrainConfig,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let base_config = base_dir.join("config.json");
    let mut hf: serde_json::Value = match std::fs::read_to_string(&base_config) {
        Ok(raw) => serde_json::from_str(&raw)
            .with_context(|| format!("{} is not JSON", base_config.display()))?,
        Err(_) => model.body.hf_config(),
    };
    // a config.json of another library (timm's names only the architecture)
    // says nothing transformers can build from: the body's own config instead
    if hf.get("model_type").is_none() && hf.get("architecture").is_some() {
        hf = model.body.hf_config();
    }
    let obj = hf
        .as_object_mut()
        .with_context(|| format!("{} is not a JSON object", base_config.display()))?;
    // what the trained body is (an image family's input size, say) wins
    // over the base's fields; fields the base did not write stay out
    if let serde_json::Value::Object(body) = model.body.hf_config() {
        for (k, v) in body {
            if let Some(slot) = obj.get_mut(&k) {
                *slot = v;
            }
        }
    }
    obj.insert(
        "architectures".into(),
        serde_json::json!([A::hf_class(T::HF_SUFFIX)]),
    );
    obj.insert("model_type".into(), serde_json::json!(A::MODEL_TYPE));
    task.export_config(obj)?;
    obj.remove("_name_or_path");
    write_json_atomic(&out.join("config.json"), &hf)?;
    let tensors: Vec<_> = export_tensors(model, &|p| T::exports_param(p))
        .into_iter()
        .map(|(k, shape, values)| (model.body.export_key(&k), shape, values))
        .collect();
    write_torch_safetensors(&out.join("model.safetensors"), &tensors)?;
    task.export_head(&model.head, out)?;
    for (name, value) in task.export_files() {
        write_json_atomic(&out.join(name), &value)?;
    }
    copy_present(base_dir, out, &TOKENIZER_FILES)?;
    write_json_atomic(
        &out.join("headstart.json"),
        &ExportMeta {
            text_column: config.text_column.clone(),
            label_column: config.label_column.clone(),
            max_length: config.max_length,
            strategy: config.strategy.to_string(),
            base_model: config.model.clone(),
        },
    )
}

/// Writes a LoRA run's adapters as a PEFT adapter directory (see
/// [`write_peft_adapter`]), with the task's PEFT `task_type`.
pub fn export_adapter<A: Architecture, T: Task>(
    model: &TaskModel<A, T::Head>,
    _task: &T,
    lora: &crate::models::lora::LoraConfig,
    out: &Path,
    config: &TrainConfig,
) -> Result<()> {
    write_peft_adapter(
        model,
        lora,
        peft_task_type(T::NAME),
        &config.model,
        true,
        out,
    )
}

/// PEFT's `task_type` for a task of ours. PEFT's `TaskType` has no image
/// classification (it lists SEQ_CLS, SEQ_2_SEQ_LM, CAUSAL_LM, TOKEN_CLS,
/// QUESTION_ANS, FEATURE_EXTRACTION), and its image-classification recipe
/// leaves `task_type` unset: `PeftModel.from_pretrained` then wraps the
/// `ViTForImageClassification` as it is, keys under `base_model.model.`
/// with the task model's names (`vit.encoder...`), and restores the head
/// from `modules_to_save`. So an image classifier's adapter says `null`,
/// and SEQ_CLS (which would make PEFT look for `classifier`/`score` and a
/// text model's inputs) would be wrong.
pub fn peft_task_type(task: &str) -> Option<&'static str> {
    match task {
        "causal-lm" => Some("CAUSAL_LM"),
        "text-classification" => Some("SEQ_CLS"),
        _ => None,
    }
}

/// Writes `adapter_config.json` and `adapter_model.safetensors` with PEFT's
/// key names (`base_model.model.<module>.lora_A.weight`, `[r, in]`; a
/// classifier's head as `base_model.model.<head key>`, PEFT's
/// `modules_to_save`), so that `PeftModel.from_pretrained(base, dir)`
/// rebuilds the trained model. `with_base_prefix`: keys as the task
/// model names them (`bert.encoder...` in `BertForSequenceClassification`);
/// without, as the bare base model does (`encoder...` in `BertModel`).
pub fn write_peft_adapter<A: Architecture, H: crate::models::Head>(
    model: &TaskModel<A, H>,
    lora: &crate::models::lora::LoraConfig,
    task_type: Option<&str>,
    base_model: &str,
    with_base_prefix: bool,
    out: &Path,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let tensors: Vec<_> = export_tensors(model, &|p| {
        crate::models::lora::is_adapter_path(p) || p.starts_with("head.")
    })
    .into_iter()
    .map(|(k, shape, values)| {
        let k = model.body.peft_key(&model.body.export_key(&k));
        let k = match k.strip_prefix(A::BASE_PREFIX) {
            Some(bare) if !with_base_prefix && !A::BASE_PREFIX.is_empty() => bare.to_string(),
            _ => k,
        };
        (format!("base_model.model.{k}"), shape, values)
    })
    .collect();
    let mut modules: Vec<String> = tensors
        .iter()
        .filter_map(|(k, _, _)| k.strip_suffix(".lora_A.weight"))
        .map(|m| m.trim_start_matches("base_model.model.").to_string())
        .collect();
    modules.sort();
    modules.dedup();
    let head_modules: Vec<String> = export_tensors(model, &|p| p.starts_with("head."))
        .into_iter()
        .filter_map(|(k, _, _)| k.split('.').next().map(str::to_string))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let adapter_config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model,
        "r": lora.r,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": modules,
        "modules_to_save": (!head_modules.is_empty()).then_some(head_modules),
        "fan_in_fan_out": A::MODEL_TYPE == "gpt2",
        "bias": "none",
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "revision": null,
    });
    write_json_atomic(&out.join("adapter_config.json"), &adapter_config)?;
    write_torch_safetensors(&out.join("adapter_model.safetensors"), &tensors)
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;
    use crate::models::state::{Source, load};
    use crate::models::vit::Vit;
    use crate::tasks::classification::LabelMap;

    /// An image classifier's adapter is what PEFT's image-classification
    /// recipe saves: no task_type, the head in modules_to_save, keys with
    /// the task model's names. (Set HEADSTART_PEFT_OUT to keep it with the
    /// base's path for a check with PEFT.)
    #[test]
    fn a_vit_classifier_adapter_has_no_task_type_and_saves_its_head() {
        let device = Device::default();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/vision/vit_random");
        let body = Vit::from_config_file(&dir.join("config.json"), &device).unwrap();
        let labels = LabelMap {
            labels: vec!["cat".into(), "dog".into(), "owl".into()],
        };
        let head = labels.new_head(&body, &device);
        let checkpoint = crate::hub::Checkpoint::open(&dir).unwrap();
        let (model, _) =
            load(TaskModel { body, head }, Source::Pretrained(&checkpoint), 0).unwrap();
        let lora = crate::models::lora::LoraConfig {
            r: 2,
            alpha: 4.0,
            dropout: 0.0,
            targets: Vec::new(),
        };
        let (model, _) = model.add_lora(&lora, 1).unwrap();
        let task_type = peft_task_type(crate::tasks::image::ImageClassification::NAME);
        assert_eq!(task_type, None);
        let tmp = tempfile::tempdir().unwrap();
        let out = std::env::var_os("HEADSTART_PEFT_OUT")
            .map(|d| std::path::PathBuf::from(d).join("vit-cls"))
            .unwrap_or_else(|| tmp.path().to_path_buf());
        write_peft_adapter(
            &model,
            &lora,
            task_type,
            &dir.display().to_string(),
            true,
            &out,
        )
        .unwrap();
        let c: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert!(c["task_type"].is_null(), "{c}");
        assert_eq!(c["modules_to_save"], serde_json::json!(["classifier"]));
        assert_eq!(c["fan_in_fan_out"], false);
        let t = crate::hub::read_safetensors(&out.join("adapter_model.safetensors")).unwrap();
        assert_eq!(
            t["base_model.model.classifier.weight"].shape,
            vec![3, model.body.feature_size()]
        );
        // transformers 5's module names, which PEFT targets and loads by
        assert!(t.contains_key("base_model.model.vit.layers.0.attention.q_proj.lora_A.weight"));
        assert!(
            c["target_modules"]
                .as_array()
                .unwrap()
                .contains(&"vit.layers.1.attention.v_proj".into())
        );
        assert!(!t.keys().any(|k| k.contains(".k_proj.lora_")));
        // and it reads back onto the base, head included
        let adapter = crate::models::lora::peft::PeftAdapter::read(&out).unwrap();
        let body = Vit::from_config_file(&dir.join("config.json"), &device).unwrap();
        let head = labels.new_head(&body, &device);
        let (plain, _) =
            load(TaskModel { body, head }, Source::Pretrained(&checkpoint), 0).unwrap();
        let back = adapter.attach(plain).unwrap();
        let keep = |p: &str| crate::models::lora::is_adapter_path(p) || p.starts_with("head.");
        assert_eq!(
            crate::models::state::export(&back, &keep),
            crate::models::state::export(&model, &keep)
        );
    }
}
