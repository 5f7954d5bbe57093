//! A GGUF file as a Hugging Face model directory: the first time a file is
//! used as `--model`, its weights (dequantised to f32, under transformers'
//! names), `config.json`, `tokenizer.json`, `tokenizer_config.json` and
//! `generation_config.json` are written to
//! `$HEADSTART_HOME/converted/<file stem>-<sha256 prefix>/`, which every
//! later use reads: training, evaluation, generation and export then work on
//! one kind of model directory. The directory is written under a temporary
//! name and renamed, so an interrupted conversion leaves nothing half-made.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::load_llama;
use crate::fsutil::{write_atomic, write_json_atomic};

/// Whether `path` names a GGUF file (by its magic, else its extension).
pub fn is_gguf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    match std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)) {
        Ok(()) => &magic == b"GGUF",
        Err(_) => path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf")),
    }
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The model directory of GGUF file `path` under `root` (made on first
/// use; see the module doc), and whether it was made now.
pub fn model_dir_in(path: &Path, root: &Path) -> Result<(PathBuf, bool)> {
    let sha = sha256_file(path)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".into());
    let dir = root.join(format!("{stem}-{}", &sha[..16]));
    if dir.join("headstart-source.json").is_file() {
        return Ok((dir, false));
    }
    let gguf = load_llama(path)?;
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let tmp = root.join(format!(".{stem}-{}.tmp-{}", &sha[..16], std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut config = gguf.config.clone();
    config["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
    write_json_atomic(&tmp.join("config.json"), &config)?;
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = gguf
        .checkpoint
        .tensors
        .into_iter()
        .map(|(k, t)| (k, t.shape, t.data))
        .collect();
    crate::hub::write_torch_safetensors(&tmp.join("model.safetensors"), &tensors)?;
    drop(tensors);
    let json = serde_json::to_vec(&gguf.tokenizer.json)?;
    write_atomic(&tmp.join("tokenizer.json"), |w| Ok(w.write_all(&json)?))?;
    write_json_atomic(
        &tmp.join("tokenizer_config.json"),
        &gguf.tokenizer.tokenizer_config(),
    )?;
    write_json_atomic(
        &tmp.join("generation_config.json"),
        &serde_json::json!({
            "bos_token_id": config.get("bos_token_id"),
            "eos_token_id": config.get("eos_token_id"),
        }),
    )?;
    write_json_atomic(
        &tmp.join("headstart-source.json"),
        &serde_json::json!({
            "gguf": path.display().to_string(),
            "sha256": sha,
            "tensor_types": gguf.checkpoint.notes,
        }),
    )?;
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok((dir, true)),
        // another process finished the same conversion first
        Err(_) if dir.join("headstart-source.json").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok((dir, false))
        }
        Err(e) => {
            Err(e).with_context(|| format!("cannot move {} to {}", tmp.display(), dir.display()))
        }
    }
}

/// [`model_dir_in`] under `$HEADSTART_HOME/converted`, logging a conversion.
pub fn model_dir(path: &Path, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let root = crate::assets::home().join("converted");
    let (dir, made) = model_dir_in(path, &root)?;
    if made {
        log(&format!(
            "converted {} to a model directory: {}",
            path.display(),
            dir.display()
        ));
    }
    Ok(dir)
}
