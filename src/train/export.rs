//! Writes a trained model as a Hugging Face directory that `transformers`
//! loads: the base model's `config.json` with the task's fields and class
//! name, `model.safetensors` under transformers' keys, the tokenizer files
//! (or an image task's `preprocessor_config.json`), and `headstart.json`
//! with what `eval` and `predict` need.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::config::TrainConfig;
use super::eval::ExportMeta;
use crate::fsutil::{write_atomic, write_json_atomic};
use crate::hub::write_safetensors;
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
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let tensors: Vec<_> = export_tensors(model, &|_| true)
        .into_iter()
        .map(|(k, shape, values)| (model.body.export_key(&k), shape, values))
        .collect();
    write_safetensors(&out.join("model.safetensors"), &tensors, Some(meta))?;
    for (name, value) in task.export_files() {
        write_json_atomic(&out.join(name), &value)?;
    }
    for f in TOKENIZER_FILES {
        let src = base_dir.join(f);
        if src.is_file() {
            let bytes =
                std::fs::read(&src).with_context(|| format!("cannot read {}", src.display()))?;
            write_atomic(&out.join(f), |w| Ok(w.write_all(&bytes)?))?;
        }
    }
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
    let task_type = match T::NAME {
        "causal-lm" => Some("CAUSAL_LM"),
        "text-classification" => Some("SEQ_CLS"),
        _ => None,
    };
    write_peft_adapter(model, lora, task_type, &config.model, true, out)
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
        let k = model.body.export_key(&k);
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
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    write_safetensors(&out.join("adapter_model.safetensors"), &tensors, Some(meta))
}
