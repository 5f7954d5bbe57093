//! A ViT + GPT-2 captioner by cross-attention in transformers'
//! `VisionEncoderDecoderModel` layout, and back: file-level conversions
//! between headstart's captioner export (the encoder's `config.json` with
//! a `captioning` field, `model.safetensors` with the ViT under `vit.*` and
//! the projection under `mapping.0.*`, `decoder/` a GPT-2 directory) and
//! one directory transformers loads (`config.json` with `encoder` and
//! `decoder` configs; `encoder.*`, `decoder.*`, `enc_to_dec_proj.*`
//! tensors; the tokenizer and image processor files beside them).
//!
//! The export writes the second beside the first for ViT + GPT-2
//! captioners; `train`, `eval` and `predict` read a
//! `VisionEncoderDecoderModel` directory (nlpconnect's ViT-GPT2, say) by
//! converting it once into the first under `$HEADSTART_HOME/converted`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::MODEL_TYPE;
use crate::fsutil::{copy_present, write_atomic, write_json_atomic};
use crate::hub::{Checkpoint, write_torch_safetensors};
use crate::tasks::captioning::{
    CONFIG_FIELD, CaptionTaskState, DECODER_DIR, DecoderPart, Decoding, MapperKind,
};
use crate::tokenize::TOKENIZER_FILES;

/// Where a captioner's export keeps its `VisionEncoderDecoderModel` copy.
pub const DIR: &str = "vision-encoder-decoder";

/// The image processor's file, carried in both layouts.
const PREPROCESSOR: &str = "preprocessor_config.json";

/// A JSON file (the one reader the runs use).
fn read_json(path: &Path) -> Result<serde_json::Value> {
    crate::train::checkpoint::read_json(path)
}

/// Whether `dir` holds a `VisionEncoderDecoderModel` (its `config.json`'s
/// `model_type`).
pub fn is_encoder_decoder(dir: &Path) -> bool {
    read_json(&dir.join("config.json"))
        .map(|c| c["model_type"] == MODEL_TYPE)
        .unwrap_or(false)
}

/// A JSON object's fields without `drop`.
fn without(v: &serde_json::Value, drop: &[&str]) -> serde_json::Map<String, serde_json::Value> {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| !drop.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes the captioner exported at `model` as a `VisionEncoderDecoderModel`
/// directory at `out`; `preprocessor` is its image processor's config.
/// Only a ViT encoder with a GPT-2 decoder read by cross-attention has
/// this layout.
pub fn write_encoder_decoder(
    model: &Path,
    preprocessor: &serde_json::Value,
    out: &Path,
) -> Result<()> {
    let config = read_json(&model.join("config.json"))?;
    let state: CaptionTaskState = serde_json::from_value(config[CONFIG_FIELD].clone())
        .with_context(|| format!("{} is not a captioner's export", model.display()))?;
    let decoder_dir = model.join(&state.decoder.dir);
    if config["model_type"] != "vit"
        || state.decoder.model_type != "gpt2"
        || state.mapper != MapperKind::CrossAttention
    {
        bail!(
            "{}: only a ViT encoder with a GPT-2 decoder reading it by cross-attention has \
             transformers' VisionEncoderDecoderModel layout (this is a `{}` encoder, a `{}` \
             decoder, mapper {:?})",
            model.display(),
            config["model_type"],
            state.decoder.model_type,
            state.mapper
        );
    }
    let mut encoder = without(
        &config,
        &[
            CONFIG_FIELD,
            "preprocessing",
            "architectures",
            "_name_or_path",
        ],
    );
    encoder.insert("architectures".into(), serde_json::json!(["ViTModel"]));
    let mut decoder = without(
        &read_json(&decoder_dir.join("config.json"))?,
        &["_name_or_path"],
    );
    decoder.insert("add_cross_attention".into(), true.into());
    decoder.insert("is_decoder".into(), true.into());
    let start = *state
        .start
        .first()
        .context("the captioner has no start token")?;
    let eos = *state
        .eos
        .first()
        .context("the captioner has no end token")?;
    let top = serde_json::json!({
        "architectures": ["VisionEncoderDecoderModel"],
        "model_type": MODEL_TYPE,
        "is_encoder_decoder": true,
        "tie_word_embeddings": false,
        "decoder_start_token_id": start,
        "eos_token_id": eos,
        "pad_token_id": eos,
        "encoder": encoder,
        "decoder": decoder,
    });
    let generation = serde_json::json!({
        "decoder_start_token_id": start,
        "bos_token_id": start,
        "eos_token_id": state.eos,
        "pad_token_id": eos,
        "max_new_tokens": state.max_new_tokens,
        "num_beams": state.decoding.beams,
        "length_penalty": state.decoding.length_penalty,
        "no_repeat_ngram_size": state.decoding.no_repeat_ngram,
    });

    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    for (k, t) in Checkpoint::open(model)?.tensors {
        let name = if let Some(rest) = k.strip_prefix("vit.") {
            format!("encoder.{rest}")
        } else if let Some(rest) = k.strip_prefix("mapping.0.") {
            format!("enc_to_dec_proj.{rest}")
        } else {
            bail!(
                "{}: `{k}` is neither the ViT's nor the projection's",
                model.display()
            );
        };
        tensors.insert(name, (t.shape, t.data));
    }
    for (k, t) in Checkpoint::open(&decoder_dir)?.tensors {
        tensors.insert(format!("decoder.{k}"), (t.shape, t.data));
    }
    let list: Vec<_> = tensors.into_iter().map(|(k, (s, v))| (k, s, v)).collect();

    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write_torch_safetensors(&out.join("model.safetensors"), &list)?;
    write_json_atomic(&out.join("generation_config.json"), &generation)?;
    write_json_atomic(&out.join(PREPROCESSOR), preprocessor)?;
    copy_present(&decoder_dir, out, &TOKENIZER_FILES)?;
    write_json_atomic(&out.join("config.json"), &top)
}

/// Writes the `VisionEncoderDecoderModel` at `ved` as a captioner export at
/// `out` (decoding as its generation config says; the `decoder` strategy
/// recorded is `full`).
pub fn write_captioner(ved: &Path, out: &Path) -> Result<()> {
    let path = ved.join("config.json");
    let config = read_json(&path)?;
    super::check_config(&config, &path)?;
    let generation = read_json(&ved.join("generation_config.json")).unwrap_or_default();
    let field = |name: &str| -> Option<u64> {
        [&generation, &config, &config["decoder"]]
            .iter()
            .find_map(|c| c.get(name).and_then(serde_json::Value::as_u64))
    };
    let start = field("decoder_start_token_id")
        .or_else(|| field("bos_token_id"))
        .with_context(|| format!("{} names no decoder_start_token_id", path.display()))?;
    let eos: Vec<u32> = match generation
        .get("eos_token_id")
        .or_else(|| config["decoder"].get("eos_token_id"))
    {
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_u64()).collect(),
        Some(v) => v.as_u64().into_iter().collect(),
        None => Vec::new(),
    }
    .into_iter()
    .map(|t| t as u32)
    .collect();
    if eos.is_empty() {
        bail!(
            "{} names no eos_token_id: a caption needs an end",
            path.display()
        );
    }
    let encoder = serde_json::Value::Object(without(&config["encoder"], &["_name_or_path"]));
    let recipe = crate::data::preprocess::Recipe::for_model(ved, "vit", None)?;
    let positions = config["decoder"]["n_positions"].as_u64().unwrap_or(1024) as usize;
    let max_new_tokens = generation["max_new_tokens"]
        .as_u64()
        .map(|n| n as usize)
        .or_else(|| generation["max_length"].as_u64().map(|n| n as usize - 1))
        .unwrap_or(20)
        .min(positions - 1);
    let state = CaptionTaskState {
        recipe: recipe.clone(),
        decoder: DecoderPart {
            model_type: "gpt2".into(),
            dir: PathBuf::from(DECODER_DIR),
            strategy: crate::strategy::Strategy::Full,
            lora: None,
        },
        mapper: MapperKind::CrossAttention,
        prefix_length: 0,
        mapper_hidden: 0,
        mapper_layers: 0,
        feature_grid: 0,
        start: vec![start as u32],
        eos,
        max_new_tokens,
        decoding: Decoding {
            beams: generation["num_beams"].as_u64().unwrap_or(1).max(1) as usize,
            length_penalty: generation["length_penalty"].as_f64().unwrap_or(1.0),
            no_repeat_ngram: generation["no_repeat_ngram_size"].as_u64().unwrap_or(0) as usize,
        },
    };
    let mut top = without(&encoder, &["architectures"]);
    top.insert("architectures".into(), serde_json::json!(["ViTModel"]));
    top.insert(CONFIG_FIELD.into(), serde_json::to_value(&state)?);
    top.insert("preprocessing".into(), serde_json::to_value(&recipe)?);
    let mut decoder = without(&config["decoder"], &["_name_or_path"]);
    decoder.insert(
        "architectures".into(),
        serde_json::json!(["GPT2LMHeadModel"]),
    );

    let weights = Checkpoint::open(ved)?;
    let mut body = Vec::new();
    let mut lm = Vec::new();
    for (k, t) in weights.tensors {
        if let Some(rest) = k.strip_prefix("encoder.") {
            body.push((format!("vit.{rest}"), t.shape, t.data));
        } else if let Some(rest) = k.strip_prefix("enc_to_dec_proj.") {
            body.push((format!("mapping.0.{rest}"), t.shape, t.data));
        } else if let Some(rest) = k.strip_prefix("decoder.") {
            lm.push((rest.to_string(), t.shape, t.data));
        } else {
            bail!(
                "{}: `{k}` belongs to neither the encoder nor the decoder",
                ved.display()
            );
        }
    }
    let lm_dir = out.join(DECODER_DIR);
    std::fs::create_dir_all(&lm_dir)
        .with_context(|| format!("cannot create {}", lm_dir.display()))?;
    write_torch_safetensors(&out.join("model.safetensors"), &body)?;
    write_torch_safetensors(&lm_dir.join("model.safetensors"), &lm)?;
    write_json_atomic(&lm_dir.join("config.json"), &decoder)?;
    copy_present(ved, &lm_dir, &TOKENIZER_FILES)?;
    copy_present(ved, out, &[PREPROCESSOR])?;
    write_json_atomic(&out.join("config.json"), &top)
}

/// The captioner export of the `VisionEncoderDecoderModel` at `ved`,
/// converted once under `$HEADSTART_HOME/converted` (keyed by the bytes of
/// its config, generation config, image processor and tokenizer files and
/// its weight files' (or shard index's) names, sizes and times).
pub fn converted_captioner(ved: &Path, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let mut h = Sha256::new();
    let mut names: Vec<&str> = vec!["config.json", "generation_config.json", PREPROCESSOR];
    names.extend(TOKENIZER_FILES);
    for name in names {
        if let Ok(bytes) = std::fs::read(ved.join(name)) {
            h.update(name.as_bytes());
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
    }
    for name in crate::hub::WEIGHT_FILES {
        let f = ved.join(name);
        let Ok(meta) = std::fs::metadata(&f) else {
            continue;
        };
        h.update(f.display().to_string().as_bytes());
        h.update(meta.len().to_le_bytes());
        if let Ok(t) = meta.modified()
            && let Ok(d) = t.duration_since(std::time::UNIX_EPOCH)
        {
            h.update(d.as_nanos().to_le_bytes());
        }
    }
    let sha: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let stem = ved
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into());
    let root = crate::assets::home().join("converted");
    let dir = root.join(format!("{stem}-captioner-{}", &sha[..16]));
    if dir.join("config.json").is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let tmp = root.join(format!(".{stem}-{}.tmp-{}", &sha[..16], std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    write_captioner(ved, &tmp)?;
    write_atomic(&tmp.join("headstart-source.json"), |w| {
        Ok(w.write_all(
            serde_json::json!({"vision-encoder-decoder": ved.display().to_string()})
                .to_string()
                .as_bytes(),
        )?)
    })?;
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => {
            log(&format!(
                "converted the {MODEL_TYPE} {} to a captioner: {}",
                ved.display(),
                dir.display()
            ));
            Ok(dir)
        }
        // another process finished the same conversion first
        Err(_) if dir.join("config.json").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => {
            Err(e).with_context(|| format!("cannot move {} to {}", tmp.display(), dir.display()))
        }
    }
}
