//! A `llama` GGUF file as a transformers `LlamaForCausalLM` checkpoint: the
//! tensor names, the Q/K row permutation, and `config.json`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::{Value, json};

use super::GgufFile;
use super::tokenizer::GgufTokenizer;
use crate::hub::{Checkpoint, HostTensor};

/// What a Hugging Face Llama directory would hold, read from one GGUF file.
#[derive(Debug)]
pub struct LlamaGguf {
    /// Every weight, dequantised to `f32`, under transformers' names
    /// (`model.embed_tokens.weight`, `model.layers.N.self_attn.q_proj.weight`,
    /// ..., `model.norm.weight`, and `lm_head.weight` only when the file has
    /// its own output projection; otherwise `tie_word_embeddings` is true).
    pub checkpoint: Checkpoint,
    /// The `config.json` equivalent ([`llama_config`]).
    pub config: Value,
    /// The tokenizer, its `tokenizer.json`, special tokens and chat template.
    pub tokenizer: GgufTokenizer,
}

/// Reads a `llama` GGUF file (llama.cpp's name for the Llama family:
/// Llama 1/2, SmolLM, TinyLlama, Mistral 7B v0.1, ...) into a checkpoint,
/// a config and a tokenizer, equal to what transformers 5.24 builds from
/// the same file with `AutoModelForCausalLM.from_pretrained(dir, gguf_file=..)`
/// and `AutoTokenizer.from_pretrained(dir, gguf_file=..)`.
///
/// Errors name the file: another architecture, missing or inconsistent
/// hyper-parameters, tensors this mapping does not know (e.g. Llama 3.1's
/// `rope_freqs.weight`, whose frequency scaling is not supported), shapes
/// that disagree with the metadata, a tokenizer that is not byte-level BPE.
pub fn load_llama(path: &Path) -> Result<LlamaGguf> {
    let file = GgufFile::open(path)?;
    let config = llama_config(&file)?;
    let checkpoint = llama_checkpoint(&file, &config)?;
    let tokenizer = GgufTokenizer::from_file(&file)?;
    Ok(LlamaGguf {
        checkpoint,
        config,
        tokenizer,
    })
}

/// The transformers name of a llama.cpp tensor of a Llama model, `None` for
/// names outside the mapping:
///
/// | llama.cpp | transformers |
/// |---|---|
/// | `token_embd.weight` | `model.embed_tokens.weight` |
/// | `blk.N.attn_norm` | `model.layers.N.input_layernorm` |
/// | `blk.N.attn_q` / `attn_k` / `attn_v` / `attn_output` | `model.layers.N.self_attn.q_proj` / `k_proj` / `v_proj` / `o_proj` |
/// | `blk.N.ffn_norm` | `model.layers.N.post_attention_layernorm` |
/// | `blk.N.ffn_gate` / `ffn_up` / `ffn_down` | `model.layers.N.mlp.gate_proj` / `up_proj` / `down_proj` |
/// | `output_norm.weight` | `model.norm.weight` |
/// | `output.weight` | `lm_head.weight` |
///
/// (`.weight` or `.bias` after the `blk.N.*` names.)
pub fn hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (part, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let module = match part {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{module}.{suffix}"))
}

/// Undoes llama.cpp's row permutation of a Q or K projection (`data`:
/// `rows` x `cols`, row-major, `cols` = 1 for a bias).
///
/// `convert_hf_to_gguf.py` reorders each head's rows from transformers'
/// rotary layout (the first half of the head's dimensions paired with the
/// second half) to GGML's (neighbouring dimensions paired): row `2i + j` of
/// a head in the file is row `j * half + i` in transformers (`half` = head
/// size / 2). `heads` is the number of query heads for Q and of key/value
/// heads for K.
pub fn unpermute_rows(data: &[f32], rows: usize, cols: usize, heads: usize) -> Result<Vec<f32>> {
    ensure!(
        heads > 0 && rows.is_multiple_of(2 * heads),
        "{rows} rows do not split into {heads} heads of an even size"
    );
    ensure!(
        data.len() == rows * cols,
        "{} values for {rows} x {cols}",
        data.len()
    );
    let half = rows / heads / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let from = h * 2 * half + 2 * i + j;
                let to = h * 2 * half + j * half + i;
                out[to * cols..(to + 1) * cols]
                    .copy_from_slice(&data[from * cols..(from + 1) * cols]);
            }
        }
    }
    Ok(out)
}

/// The `config.json` of a `llama` GGUF file, with transformers 5.24's
/// `LlamaConfig` field names and the values transformers derives from the
/// same metadata:
///
/// | metadata | field | when absent |
/// |---|---|---|
/// | `llama.block_count` | `num_hidden_layers` | error |
/// | `llama.embedding_length` | `hidden_size` | error |
/// | `llama.feed_forward_length` | `intermediate_size` | error |
/// | `llama.attention.head_count` | `num_attention_heads` | error |
/// | `llama.attention.head_count_kv` | `num_key_value_heads` | `num_attention_heads` |
/// | `llama.context_length` | `max_position_embeddings` | 2048 |
/// | `llama.attention.layer_norm_rms_epsilon` | `rms_norm_eps` | 1e-6 |
/// | `llama.rope.freq_base` | `rope_parameters.rope_theta` | 10000 |
/// | `llama.rope.dimension_count` | `head_dim` | hidden / heads |
/// | `llama.vocab_size` | `vocab_size` | the number of `tokenizer.ggml.tokens` |
/// | no `output.weight` tensor | `tie_word_embeddings` | |
/// | `tokenizer.ggml.bos/eos/padding/unknown_token_id` | `bos/eos/pad/unk_token_id` | 1, 2, null, absent |
///
/// plus `architectures: ["LlamaForCausalLM"]`, `model_type: "llama"` and
/// LlamaConfig's fixed defaults (SiLU, no biases, no dropout, float32).
/// Zero sizes, heads that do not divide the hidden size (without an explicit
/// head size) or the key/value heads that do not divide the heads, and RoPE
/// scaling (`llama.rope.scaling.type` other than `none`) are errors naming
/// the file and key.
pub fn llama_config(file: &GgufFile) -> Result<Value> {
    let p = file.path().display().to_string();
    let arch = file.architecture()?;
    if arch != "llama" {
        bail!(
            "{p} holds a `{arch}` model (general.architecture); headstart reads `llama` GGUF \
             files only"
        );
    }
    let key = |k: &str| format!("llama.{k}");
    let required = |k: &str| -> Result<u64> {
        let full = key(k);
        let v = file.get_u64(&full)?.ok_or_else(|| {
            anyhow!("{p} has no {full} in its metadata: the file is incomplete, convert it again")
        })?;
        ensure!(v > 0, "{p}: {full} is 0; it must be positive");
        Ok(v)
    };
    let layers = required("block_count")?;
    let hidden = required("embedding_length")?;
    let ffn = required("feed_forward_length")?;
    let heads = required("attention.head_count")?;
    let kv_heads = match file.get_u64(&key("attention.head_count_kv"))? {
        Some(0) => bail!("{p}: llama.attention.head_count_kv is 0; it must be positive"),
        Some(v) => v,
        None => heads,
    };
    ensure!(
        heads.is_multiple_of(kv_heads),
        "{p}: llama.attention.head_count ({heads}) is not a multiple of \
         llama.attention.head_count_kv ({kv_heads})"
    );
    let head_dim = match file.get_u64(&key("rope.dimension_count"))? {
        Some(0) => bail!("{p}: llama.rope.dimension_count is 0; it must be positive"),
        Some(d) => d,
        None => {
            ensure!(
                hidden.is_multiple_of(heads),
                "{p}: llama.embedding_length ({hidden}) is not a multiple of \
                 llama.attention.head_count ({heads}), and no llama.rope.dimension_count gives \
                 the head size"
            );
            hidden / heads
        }
    };
    ensure!(
        head_dim.is_multiple_of(2),
        "{p}: the head size {head_dim} (llama.rope.dimension_count) is odd; rotary embeddings \
         need an even size"
    );
    if let Some(t) = file.get_str(&key("rope.scaling.type"))?
        && t != "none"
    {
        bail!(
            "{p}: llama.rope.scaling.type is `{t}`; RoPE scaling is not supported, only plain \
             rotary embeddings"
        );
    }
    let context = file.get_u64(&key("context_length"))?.unwrap_or(2048);
    let eps = file
        .get_f64(&key("attention.layer_norm_rms_epsilon"))?
        .unwrap_or(1e-6);
    ensure!(
        eps > 0.0 && eps.is_finite(),
        "{p}: llama.attention.layer_norm_rms_epsilon is {eps}; it must be positive"
    );
    let theta = file.get_f64(&key("rope.freq_base"))?.unwrap_or(10000.0);
    ensure!(
        theta > 0.0 && theta.is_finite(),
        "{p}: llama.rope.freq_base is {theta}; it must be positive"
    );
    let vocab = match file.get_u64(&key("vocab_size"))? {
        Some(v) => v,
        None => match file.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
            Some(tokens) => tokens.len() as u64,
            None => bail!(
                "{p} has neither llama.vocab_size nor tokenizer.ggml.tokens: the vocabulary \
                 size is unknown"
            ),
        },
    };
    ensure!(
        vocab > 0,
        "{p}: the vocabulary is empty (llama.vocab_size is 0)"
    );
    let tied = !file.tensors().iter().any(|t| t.name == "output.weight");
    let id = |k: &str| file.get_u64(&format!("tokenizer.ggml.{k}"));

    let mut config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": context,
        "initializer_range": 0.02,
        "rms_norm_eps": eps,
        "use_cache": true,
        "pad_token_id": id("padding_token_id")?,
        "bos_token_id": id("bos_token_id")?.unwrap_or(1),
        "eos_token_id": id("eos_token_id")?.unwrap_or(2),
        "pretraining_tp": 1,
        "tie_word_embeddings": tied,
        "rope_parameters": {"rope_theta": theta, "rope_type": "default"},
        "attention_bias": file.tensors().iter().any(|t| t.name.ends_with(".attn_q.bias")),
        "attention_dropout": 0.0,
        "mlp_bias": file.tensors().iter().any(|t| t.name.ends_with(".ffn_up.bias")),
        "dtype": "float32",
    });
    if let Some(unk) = id("unknown_token_id")? {
        config["unk_token_id"] = unk.into();
    }
    Ok(config)
}

/// Every tensor of `file` under its transformers name, dequantised, Q and K
/// un-permuted, shapes checked against `config`.
fn llama_checkpoint(file: &GgufFile, config: &Value) -> Result<Checkpoint> {
    let p = file.path().display().to_string();
    let get = |k: &str| config[k].as_u64().unwrap_or(0) as usize;
    let (hidden, heads, kv_heads, head_dim, ffn, vocab, layers) = (
        get("hidden_size"),
        get("num_attention_heads"),
        get("num_key_value_heads"),
        get("head_dim"),
        get("intermediate_size"),
        get("vocab_size"),
        get("num_hidden_layers"),
    );
    let unknown: Vec<&str> = file
        .tensors()
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| hf_name(n).is_none())
        .collect();
    if !unknown.is_empty() {
        let hint = if unknown.contains(&"rope_freqs.weight") {
            " (rope_freqs.weight holds Llama 3.1-style RoPE frequency scaling, which is not \
             supported)"
        } else {
            ""
        };
        bail!(
            "{p} has tensors a Llama checkpoint does not: {}{hint}",
            unknown.join(", ")
        );
    }

    let mut tensors: BTreeMap<String, HostTensor> = BTreeMap::new();
    let mut permuted = 0;
    for info in file.tensors() {
        let name = hf_name(&info.name).expect("checked above");
        let mut t = file.decode(info)?;
        let expected: Option<Vec<usize>> =
            expected_shape(&name, hidden, heads, kv_heads, head_dim, ffn, vocab, layers);
        match expected {
            Some(shape) if shape == t.shape => {}
            Some(shape) => bail!(
                "{p}: tensor `{}` ({name}) has shape {:?}, but the metadata makes it {:?}",
                info.name,
                t.shape,
                shape
            ),
            None => bail!(
                "{p}: tensor `{}` belongs to layer {} of a {layers}-layer model \
                 (llama.block_count)",
                info.name,
                name.split('.').nth(2).unwrap_or("?")
            ),
        }
        let qk_heads = if name.contains(".self_attn.q_proj.") {
            Some(heads)
        } else if name.contains(".self_attn.k_proj.") {
            Some(kv_heads)
        } else {
            None
        };
        if let Some(h) = qk_heads {
            let cols = t.shape.get(1).copied().unwrap_or(1);
            t.data = unpermute_rows(&t.data, t.shape[0], cols, h)
                .with_context(|| format!("{p}: tensor `{}`", info.name))?;
            permuted += 1;
        }
        tensors.insert(name, t);
    }
    let mut missing = vec![
        "model.embed_tokens.weight".to_owned(),
        "model.norm.weight".to_owned(),
    ];
    for l in 0..layers {
        for m in [
            "input_layernorm",
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "post_attention_layernorm",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ] {
            missing.push(format!("model.layers.{l}.{m}.weight"));
        }
    }
    missing.retain(|n| !tensors.contains_key(n));
    if !missing.is_empty() {
        bail!(
            "{p} lacks {} tensor(s) of a {layers}-layer Llama: {}{}",
            missing.len(),
            missing[..missing.len().min(5)].join(", "),
            if missing.len() > 5 { ", ..." } else { "" }
        );
    }
    Ok(Checkpoint {
        tensors,
        files: vec![file.path().to_path_buf()],
        notes: vec![
            format!(
                "GGUF v{} (llama.cpp): {} tensors, stored as {}; dequantised to f32",
                file.version(),
                file.tensors().len(),
                file.type_summary()
            ),
            format!(
                "renamed to transformers' Llama names and undid llama.cpp's rotary row order in \
                 {permuted} q_proj/k_proj tensors"
            ),
        ],
        graph: None,
    })
}

/// The shape transformers gives `name` in a Llama of these sizes; `None`
/// for a layer index past `layers`.
#[allow(clippy::too_many_arguments)]
fn expected_shape(
    name: &str,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    ffn: usize,
    vocab: usize,
    layers: usize,
) -> Option<Vec<usize>> {
    Some(match name {
        "model.embed_tokens.weight" | "lm_head.weight" => vec![vocab, hidden],
        "model.norm.weight" => vec![hidden],
        _ => {
            let rest = name.strip_prefix("model.layers.")?;
            let (layer, module) = rest.split_once('.')?;
            if layer.parse::<usize>().ok()? >= layers {
                return None;
            }
            let bias = module.ends_with(".bias");
            let (out, inp) = match module.rsplit_once('.')?.0 {
                "input_layernorm" | "post_attention_layernorm" => return Some(vec![hidden]),
                "self_attn.q_proj" => (heads * head_dim, hidden),
                "self_attn.k_proj" | "self_attn.v_proj" => (kv_heads * head_dim, hidden),
                "self_attn.o_proj" => (hidden, heads * head_dim),
                "mlp.gate_proj" | "mlp.up_proj" => (ffn, hidden),
                "mlp.down_proj" => (hidden, ffn),
                _ => return None,
            };
            if bias { vec![out] } else { vec![out, inp] }
        }
    })
}
