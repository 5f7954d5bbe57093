//! `headstart inspect`: what a checkpoint is, how big, and the names of its
//! layer groups that freezing strategies refer to.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::module::Module;
use serde::Serialize;

use crate::hub::Checkpoint;
use crate::models::bert::{Bert, BertConfig};
use crate::models::state::{Source, group_counts, load};
use crate::models::{Architecture, TaskModel};
use crate::tokenize::{TextTokenizer, TokenizerSource};

#[derive(Debug, Serialize)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Group {
    pub name: String,
    pub params: usize,
}

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub path: PathBuf,
    pub architecture: String,
    pub model_type: String,
    pub config: serde_json::Value,
    pub files: Vec<FileEntry>,
    pub dtype: String,
    pub tokenizer: String,
    pub total_params: usize,
    pub groups: Vec<Group>,
    /// Encoder layer count: `freeze:N` takes N in 0..=layers.
    pub layers: usize,
    pub load_report: Vec<String>,
}

pub fn inspect(dir: &Path) -> Result<Inspection> {
    let config_path = dir.join("config.json");
    let _: serde_json::Value = match std::fs::read_to_string(&config_path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not valid JSON: {e}", config_path.display()))?,
        Err(_) => bail!(
            "{} has no config.json: a Hugging Face model directory holds config.json next to \
             its weights (model.safetensors or pytorch_model.bin)",
            dir.display()
        ),
    };
    let model_type = crate::models::model_type(dir)?;
    let config = BertConfig::from_file(&config_path)?;
    let checkpoint = Checkpoint::load(dir)?;
    let device = burn::tensor::Device::default();
    let blank = TaskModel::<Bert, Option<burn::nn::Linear>> {
        body: Bert::from_config_file(&config_path, &device)?,
        head: None,
    };
    let (model, report) = load(blank, Source::Pretrained(&checkpoint), 0)?;

    let mut files = Vec::new();
    collect_files(dir, dir, &mut files)?;
    files.sort_by(|a, b| a.name.cmp(&b.name));

    let tokenizer = match TextTokenizer::from_dir(dir) {
        Ok(t) => match &t.source {
            TokenizerSource::TokenizerJson(_) => {
                format!("tokenizer.json ({} tokens)", t.vocab_size())
            }
            TokenizerSource::VocabTxt { lowercase, .. } => format!(
                "vocab.txt WordPiece ({} tokens, {})",
                t.vocab_size(),
                if *lowercase { "lower-cased" } else { "cased" }
            ),
        },
        Err(e) => format!("none usable: {e:#}"),
    };
    let architecture = config
        .architectures
        .as_ref()
        .and_then(|a| a.first().cloned())
        .unwrap_or_else(|| "BertModel".to_string());
    let groups = group_counts(&model)
        .into_iter()
        .map(|(name, params)| Group { name, params })
        .collect();
    Ok(Inspection {
        path: dir.to_path_buf(),
        architecture,
        model_type,
        config: serde_json::json!({
            "vocab_size": config.vocab_size,
            "hidden_size": config.hidden_size,
            "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads,
            "intermediate_size": config.intermediate_size,
            "max_position_embeddings": config.max_position_embeddings,
            "type_vocab_size": config.type_vocab_size,
            "hidden_act": config.hidden_act,
            "layer_norm_eps": config.layer_norm_eps,
        }),
        files,
        dtype: checkpoint.dtype_summary(),
        tokenizer,
        total_params: model.num_params(),
        groups,
        layers: config.num_hidden_layers,
        load_report: report.lines(),
    })
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<FileEntry>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        // Follow symlinks: the HF cache links snapshot files to blobs.
        let meta = std::fs::metadata(&path)?;
        if meta.is_dir() {
            collect_files(root, &path, out)?;
        } else {
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            if !name.starts_with('.') {
                out.push(FileEntry {
                    name,
                    bytes: meta.len(),
                });
            }
        }
    }
    Ok(())
}

/// 22713216 -> "22,713,216".
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Inspection {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let push = |s: &mut String, line: String| {
            s.push_str(&line);
            s.push('\n');
        };
        push(&mut s, format!("model         {}", self.path.display()));
        push(
            &mut s,
            format!(
                "architecture  {} (model_type {})",
                self.architecture, self.model_type
            ),
        );
        let c = &self.config;
        push(
            &mut s,
            format!(
                "config        {} layers, hidden {}, {} heads, FFN {}, vocab {}, max positions {}, {}, LayerNorm eps {}",
                c["num_hidden_layers"],
                c["hidden_size"],
                c["num_attention_heads"],
                c["intermediate_size"],
                c["vocab_size"],
                c["max_position_embeddings"],
                c["hidden_act"].as_str().unwrap_or("?"),
                c["layer_norm_eps"],
            ),
        );
        push(&mut s, format!("dtype         {}", self.dtype));
        push(&mut s, format!("tokenizer     {}", self.tokenizer));
        push(&mut s, "files".to_string());
        for f in &self.files {
            push(
                &mut s,
                format!("  {:>14}  {}", thousands(f.bytes as usize), f.name),
            );
        }
        push(
            &mut s,
            format!("parameters    {} in total", thousands(self.total_params)),
        );
        for g in &self.groups {
            push(&mut s, format!("  {:>14}  {}", thousands(g.params), g.name));
        }
        push(
            &mut s,
            format!(
                "layer groups  {} (freeze:N freezes embeddings and encoder.layer.0..N-1, N in 0..={})",
                self.groups
                    .iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.layers
            ),
        );
        for line in &self.load_report {
            push(&mut s, format!("load          {line}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(22_713_216), "22,713,216");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(0), "0");
    }
}
