//! `headstart inspect`: what a checkpoint is, how big, and the names of its
//! layer groups that freezing strategies refer to. Takes a model directory
//! (text or image families) or a bare weights file (image families: the
//! family named with `--arch` or recognised from the tensor names).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::module::Module;
use serde::Serialize;

use crate::hub::Checkpoint;
use crate::models::bert::{Bert, BertConfig};
use crate::models::state::{Source, group_counts, load};
use crate::models::{Architecture, TaskModel};
use crate::tasks::classification::LabelMap;
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
    /// How the weights were read (format, wrapper dicts, prefixes), for bare files.
    pub format: Vec<String>,
    /// `None` for image models.
    pub tokenizer: Option<String>,
    /// The preprocessing the pretrained weights expect (image models).
    pub preprocessing: Option<String>,
    /// How BatchNorm behaves under each strategy (families that have it).
    pub batch_norm: Option<String>,
    /// Forward FLOPs of one example (an image at the recipe's crop; text at 128 tokens).
    pub forward_flops: f64,
    pub total_params: usize,
    pub groups: Vec<Group>,
    /// Encoder layer count: `freeze:N` takes N in 0..=layers.
    pub layers: usize,
    pub load_report: Vec<String>,
}

/// What `model` (a directory or a weights file) is; `arch` names the
/// family of a bare file.
pub fn inspect(model: &Path, arch: Option<&str>) -> Result<Inspection> {
    if model.is_file() && crate::hub::gguf::is_gguf(model) {
        let dir = crate::hub::gguf::model_dir(model, &mut |l| eprintln!("{l}"))?;
        let mut i = inspect(&dir, arch)?;
        i.format.insert(
            0,
            format!(
                "GGUF file {} ({}), dequantised to f32 in {}",
                model.display(),
                crate::hub::gguf::GgufFile::open(model)?.type_summary(),
                dir.display()
            ),
        );
        return Ok(i);
    }
    let family = crate::train::family_of(model, arch)?;
    if crate::models::causal::CAUSAL_FAMILIES.contains(&family.as_str()) {
        return crate::with_causal_family!(family.as_str(), A => inspect_causal::<A>(model), else unreachable!());
    }
    if crate::models::vision::is_image_family(&family) {
        return crate::with_image_family!(family.as_str(), A => inspect_image::<A>(model), else unreachable!());
    }
    if model.is_file() {
        bail!(
            "{} is a single file: a text model is a directory with config.json, the weights and the tokenizer",
            model.display()
        );
    }
    inspect_text(model)
}

fn inspect_image<A: Architecture>(model: &Path) -> Result<Inspection> {
    let device = burn::tensor::Device::default();
    let checkpoint = Checkpoint::open(model)?;
    let body = A::from_config_file(&model.join("config.json"), &device)?;
    // under the family's reference names (Keras' or TensorFlow's read as torchvision's)
    let checkpoint = body.reference_checkpoint(&checkpoint).unwrap_or(checkpoint);
    let recipe = A::recipe(model, None)?;
    let body = body.with_image_size(recipe.crop as usize);
    let key = body.head_key("classifier.weight");
    let classes = checkpoint.tensors.get(&key).map(|t| t.shape[0]);
    let head = classes.map(|n| {
        LabelMap {
            labels: (0..n).map(|i| i.to_string()).collect(),
        }
        .new_head(&body, &device)
    });
    let forward_flops = body.group_flops(1, 0).iter().sum::<f64>()
        + classes.map_or(0.0, |n| 2.0 * (body.feature_size() * n) as f64);
    let (model_loaded, report) =
        load(TaskModel { body, head }, Source::Pretrained(&checkpoint), 0)?;
    let mut files = Vec::new();
    if model.is_dir() {
        collect_files(model, model, &mut files)?;
    } else {
        files.push(FileEntry {
            name: model.display().to_string(),
            bytes: std::fs::metadata(model)?.len(),
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let groups: Vec<Group> = group_counts(&model_loaded)
        .into_iter()
        .map(|(name, params)| Group { name, params })
        .collect();
    let has_bn = checkpoint
        .tensors
        .keys()
        .any(|k| k.ends_with("running_mean"));
    let mut load_report = report.lines();
    if let Some(n) = classes {
        load_report.push(format!(
            "classifier {key}: {n} classes{}",
            if n == 1000 { " (ImageNet-1k)" } else { "" }
        ));
    } else {
        load_report.push(format!(
            "no classifier ({key}): a base network; training puts a new head on it"
        ));
    }
    let layers = groups.len().saturating_sub(2);
    Ok(Inspection {
        path: model.to_path_buf(),
        architecture: format!("{} ({} image family)", A::HF_STEM, A::MODEL_TYPE),
        model_type: A::MODEL_TYPE.to_string(),
        config: model_loaded.body.hf_config(),
        files,
        dtype: checkpoint.dtype_summary(),
        format: checkpoint.notes.clone(),
        tokenizer: None,
        preprocessing: Some(recipe.describe()),
        batch_norm: has_bn.then(|| {
            "frozen groups run in inference mode on their running statistics, never updated; \
             trainable groups normalise with batch statistics and update the running ones \
             (--bn frozen keeps every BatchNorm in inference mode)"
                .to_string()
        }),
        forward_flops,
        // parameters only: BatchNorm running statistics are buffers
        total_params: groups.iter().map(|g| g.params).sum(),
        groups,
        layers,
        load_report,
    })
}

/// A causal LM's directory: its groups, parameters (a tied output
/// projection counted once), tokenizer and FLOPs of 128 tokens.
fn inspect_causal<A: crate::models::causal::CausalLm>(dir: &Path) -> Result<Inspection> {
    let device = burn::tensor::Device::default();
    let checkpoint = Checkpoint::open(dir)?;
    let body = A::from_config_file(&dir.join("config.json"), &device)?;
    let forward_flops = body.group_flops(1, 128).iter().sum::<f64>();
    let (loaded, report) = load(
        TaskModel {
            body,
            head: crate::tasks::causal_lm::NoHead,
        },
        Source::Pretrained(&checkpoint),
        0,
    )?;
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files)?;
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let groups: Vec<Group> = group_counts(&loaded)
        .into_iter()
        .map(|(name, params)| Group { name, params })
        .collect();
    let tokenizer = crate::tokenize::lm_tokenizer(dir).map(|t| {
        format!(
            "{} tokens; end of sequence {:?}",
            t.get_vocab_size(true),
            loaded.body.eos_token_ids()
        )
    });
    Ok(Inspection {
        path: dir.to_path_buf(),
        architecture: format!("{} (causal language model)", A::hf_class("ForCausalLM")),
        model_type: A::MODEL_TYPE.to_string(),
        config: loaded.body.hf_config(),
        files,
        dtype: checkpoint.dtype_summary(),
        format: checkpoint.notes.clone(),
        tokenizer: Some(tokenizer.unwrap_or_else(|e| format!("none usable: {e}"))),
        preprocessing: None,
        batch_norm: None,
        forward_flops,
        total_params: groups.iter().map(|g| g.params).sum(),
        layers: loaded.body.num_layers(),
        groups,
        load_report: report.lines(),
    })
}

fn inspect_text(dir: &Path) -> Result<Inspection> {
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
            TokenizerSource::VocabMerges { .. } => format!(
                "vocab.json + merges.txt byte-level BPE ({} tokens)",
                t.vocab_size()
            ),
            TokenizerSource::VocabTxt { lowercase, .. } => format!(
                "vocab.txt WordPiece ({} tokens, {})",
                t.vocab_size(),
                if *lowercase { "lower-cased" } else { "cased" }
            ),
        },
        Err(e) => format!("none usable: {e:#}"),
    };
    let forward_flops = model.body.group_flops(1, 128).iter().sum::<f64>();
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
        format: Vec::new(),
        tokenizer: Some(tokenizer),
        preprocessing: None,
        batch_norm: None,
        forward_flops,
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
        if self.tokenizer.is_some() {
            // the first of the fields that name each size in the families' configs
            let field = |names: &[&str]| {
                names
                    .iter()
                    .map(|n| &c[*n])
                    .find(|v| !v.is_null())
                    .map_or("?".to_string(), |v| v.to_string())
            };
            push(
                &mut s,
                format!(
                    "config        {} layers, hidden {}, {} heads, FFN {}, vocab {}, max positions {}, {}, norm eps {}",
                    field(&["num_hidden_layers", "n_layer"]),
                    field(&["hidden_size", "n_embd"]),
                    field(&["num_attention_heads", "n_head"]),
                    field(&["intermediate_size", "n_inner"]),
                    field(&["vocab_size"]),
                    field(&["max_position_embeddings", "n_positions"]),
                    field(&["hidden_act", "activation_function"]).trim_matches('"'),
                    field(&["layer_norm_eps", "rms_norm_eps", "layer_norm_epsilon"]),
                ),
            );
        } else {
            push(&mut s, format!("config        {c}"));
        }
        for line in &self.format {
            push(&mut s, format!("read          {line}"));
        }
        push(&mut s, format!("dtype         {}", self.dtype));
        if let Some(t) = &self.tokenizer {
            push(&mut s, format!("tokenizer     {t}"));
        }
        if let Some(p) = &self.preprocessing {
            push(&mut s, format!("images        {p}"));
        }
        push(
            &mut s,
            format!(
                "forward       {:.2} GFLOPs per {}",
                self.forward_flops / 1e9,
                if self.tokenizer.is_some() {
                    "128-token text"
                } else {
                    "image"
                }
            ),
        );
        if let Some(b) = &self.batch_norm {
            push(&mut s, format!("batch norm    {b}"));
        }
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
                "layer groups  {} (freeze:N freezes the bottom group and the N above it, N in 0..={})",
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

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/vision")
            .join(name)
    }

    #[test]
    fn an_image_model_directory_is_described_with_its_groups_and_batch_norm() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            fixture("mobilenet_v2_random.safetensors"),
            dir.path().join("model.safetensors"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"model_type": "mobilenet_v2", "width_mult": 0.25}"#,
        )
        .unwrap();
        let report = inspect(dir.path(), None).unwrap();
        assert_eq!(report.model_type, "mobilenet_v2");
        assert!(report.tokenizer.is_none());
        // torchvision's count for width 0.25 with a 10-class classifier
        let reference: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture("mobilenet_v2_random.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            report.total_params as u64,
            reference["num_parameters"].as_u64().unwrap()
        );
        assert_eq!(report.groups.len(), 20);
        assert_eq!(report.groups[0].name, "features.0");
        assert_eq!(
            report.groups.iter().map(|g| g.params).sum::<usize>(),
            report.total_params
        );
        assert_eq!(report.layers, 18);
        assert!(
            report
                .batch_norm
                .as_deref()
                .unwrap()
                .contains("--bn frozen")
        );
        assert!(
            report.load_report.iter().any(|l| l.contains("10 classes")),
            "{:?}",
            report.load_report
        );
        let text = report.to_text();
        assert!(
            text.contains("layer groups  features.0, features.1"),
            "{text}"
        );
        assert!(text.contains("images        "), "{text}");
    }

    #[test]
    fn a_bare_file_of_no_known_family_asks_for_arch() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weights.safetensors");
        crate::hub::write_safetensors(
            &file,
            &[("encoder.w".to_string(), vec![2], vec![1.0, 2.0])],
            None,
        )
        .unwrap();
        let err = format!("{:#}", inspect(&file, None).unwrap_err());
        assert!(err.contains("--arch"), "{err}");
        assert!(err.contains("mobilenet_v2"), "{err}");
    }

    #[test]
    fn a_causal_lm_directory_is_described_with_its_layers() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama/tied_gqa");
        let i = inspect(&dir, None).unwrap();
        assert_eq!(i.model_type, "llama");
        assert!(
            i.architecture.starts_with("LlamaForCausalLM"),
            "{}",
            i.architecture
        );
        assert_eq!(i.layers, 2);
        let names: Vec<&str> = i.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["embeddings", "layers.0", "layers.1", "head"]);
        // tied: the output projection is the embedding matrix, counted once
        let c = crate::hub::Checkpoint::load(&dir).unwrap();
        assert_eq!(i.total_params, c.num_params());
        let text = i.to_text();
        assert!(text.contains("2 layers, hidden 48, 4 heads"), "{text}");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(22_713_216), "22,713,216");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(0), "0");
    }
}
