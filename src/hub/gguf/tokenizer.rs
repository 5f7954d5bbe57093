//! The tokenizer a GGUF file describes in its `tokenizer.ggml.*` metadata,
//! as a `tokenizers::Tokenizer` that encodes like the one transformers 5.24
//! builds from the same file (`AutoTokenizer.from_pretrained(dir,
//! gguf_file=...)`).
//!
//! Only byte-level BPE (`tokenizer.ggml.model` = `gpt2`, the GPT-2 family,
//! SmolLM, Llama 3, ...) is built. We write the `tokenizer.json` that
//! transformers' tokenizer serialises to and load it with the `tokenizers`
//! crate, so the same JSON can be saved next to an exported model:
//!
//! * model: BPE over the file's tokens and merges (tokens spelled outside
//!   the byte-level alphabet are re-spelled byte by byte, as transformers
//!   does), no unknown token, no dropout;
//! * pre-tokenizer: byte-level with GPT-2's split regex, or the Llama 3 split
//!   regex then byte-level for the `tokenizer.ggml.pre` values transformers
//!   gives it; the other splits transformers knows (Qwen 2, GPT-4o, Tekken,
//!   ...) are an error rather than a silently different tokenizer;
//! * added tokens: those of type CONTROL (3) as special tokens, those of type
//!   USER_DEFINED (4) as plain added tokens, and the BOS/EOS/UNK/PAD tokens
//!   and GPT-2's `<|endoftext|>` (when in the vocabulary) as special tokens;
//! * post-processor: BOS / EOS added when `tokenizer.ggml.add_bos_token` /
//!   `add_eos_token` say so (both default to false for BPE files);
//! * decoder: byte-level.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Map, Value, json};
use tokenizers::Tokenizer;

use super::GgufFile;

/// GGUF token type of a control token (`<|im_start|>`, `</s>`).
const CONTROL: i64 = 3;
/// GGUF token type of a user-defined added token (`<think>`).
const USER_DEFINED: i64 = 4;

/// The split regex of Llama 3's tokenizer (and of the other `pre` values
/// below), applied before the byte-level step.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.pre` values that split text like Llama 3.
const LLAMA3_PRE: &[&str] = &[
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "dbrx",
    "smaug-bpe",
];

/// `tokenizer.ggml.pre` values with a split regex of their own in
/// transformers, which this builder does not reproduce.
const OTHER_SPLIT_PRE: &[&str] = &[
    "tekken",
    "qwen2",
    "deepseek-r1-qwen",
    "kormo",
    "f2llmv2",
    "megrez",
    "qwen35",
    "gpt-4o",
    "llama4",
    "kanana2",
    "talkie",
    "minimax-m2",
];

/// A GGUF file's tokenizer and what goes with it.
#[derive(Clone, Debug)]
pub struct GgufTokenizer {
    /// Ready to encode and decode.
    pub tokenizer: Tokenizer,
    /// Its `tokenizer.json` ([`tokenizer_json`]).
    pub json: Value,
    /// The BOS token (`tokenizer.ggml.bos_token_id`), if the file names one.
    pub bos_token: Option<String>,
    /// The EOS token (`tokenizer.ggml.eos_token_id`).
    pub eos_token: Option<String>,
    /// The unknown token (`tokenizer.ggml.unknown_token_id`).
    pub unk_token: Option<String>,
    /// The padding token (`tokenizer.ggml.padding_token_id`).
    pub pad_token: Option<String>,
    /// Whether encoding prepends BOS (`tokenizer.ggml.add_bos_token`).
    pub add_bos_token: bool,
    /// Whether encoding appends EOS (`tokenizer.ggml.add_eos_token`).
    pub add_eos_token: bool,
    /// The chat template (`tokenizer.chat_template`, Jinja).
    pub chat_template: Option<String>,
}

impl GgufTokenizer {
    /// Builds the tokenizer of `file` (see the module documentation).
    pub fn from_file(file: &GgufFile) -> Result<GgufTokenizer> {
        let json = tokenizer_json(file)?;
        let text = serde_json::to_string(&json)?;
        let tokenizer = Tokenizer::from_bytes(text.as_bytes())
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| {
                format!(
                    "{}: the tokenizer in its metadata does not load",
                    file.path().display()
                )
            })?;
        let tokens = file
            .get_strings("tokenizer.ggml.tokens")?
            .unwrap_or_default();
        let special = |key: &str| -> Result<Option<String>> { special_token(file, &tokens, key) };
        Ok(GgufTokenizer {
            tokenizer,
            json,
            bos_token: special("bos_token_id")?,
            eos_token: special("eos_token_id")?,
            unk_token: special("unknown_token_id")?,
            pad_token: special("padding_token_id")?,
            add_bos_token: file
                .get_bool("tokenizer.ggml.add_bos_token")?
                .unwrap_or(false),
            add_eos_token: file
                .get_bool("tokenizer.ggml.add_eos_token")?
                .unwrap_or(false),
            chat_template: file.chat_template()?.map(str::to_owned),
        })
    }

    /// A `tokenizer_config.json` for this tokenizer: the special tokens,
    /// `add_bos_token` / `add_eos_token` and the chat template.
    pub fn tokenizer_config(&self) -> Value {
        let mut c = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "add_bos_token": self.add_bos_token,
            "add_eos_token": self.add_eos_token,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "unk_token": self.unk_token,
            "pad_token": self.pad_token,
        });
        if let Some(t) = &self.chat_template {
            c["chat_template"] = t.clone().into();
        }
        c
    }
}

impl GgufFile {
    /// The tokenizer in this file's metadata ([`GgufTokenizer::from_file`]).
    pub fn tokenizer(&self) -> Result<GgufTokenizer> {
        GgufTokenizer::from_file(self)
    }
}

/// The token the id under `tokenizer.ggml.{key}` names; an error when the id
/// is past the vocabulary.
fn special_token(file: &GgufFile, tokens: &[&str], key: &str) -> Result<Option<String>> {
    let full = format!("tokenizer.ggml.{key}");
    let Some(id) = file.get_u64(&full)? else {
        return Ok(None);
    };
    match tokens.get(id as usize) {
        Some(t) => Ok(Some((*t).to_owned())),
        None => bail!(
            "{}: {full} is {id}, past the {} tokens of tokenizer.ggml.tokens",
            file.path().display(),
            tokens.len()
        ),
    }
}

/// GPT-2's byte-to-character table: printable Latin-1 bytes stand for
/// themselves, the other 68 bytes for U+0100 upwards, in byte order.
fn byte_chars() -> [char; 256] {
    let printable = |b: u32| {
        (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let b = b as u32;
        let code = if printable(b) {
            b
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(code).expect("below U+0200");
    }
    table
}

/// The `tokenizer.json` of the byte-level BPE tokenizer `file` describes
/// (see the module documentation). Errors name the file and key: no
/// tokens, another tokenizer model, a `pre` split this builder does not
/// reproduce, a malformed merge, token types that do not match the tokens.
pub fn tokenizer_json(file: &GgufFile) -> Result<Value> {
    let p = file.path().display().to_string();
    let model = file
        .get_str("tokenizer.ggml.model")?
        .ok_or_else(|| anyhow!("{p} has no tokenizer.ggml.model: the file carries no tokenizer"))?;
    if model != "gpt2" {
        bail!(
            "{p}: tokenizer.ggml.model is `{model}`; headstart builds byte-level BPE \
             tokenizers (`gpt2`) from GGUF files, not SentencePiece (`llama`) or others"
        );
    }
    let tokens = file
        .get_strings("tokenizer.ggml.tokens")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow!("{p} has no tokenizer.ggml.tokens: the vocabulary is missing"))?;
    let types = file
        .get_ints("tokenizer.ggml.token_type")?
        .unwrap_or_default();
    if !types.is_empty() && types.len() != tokens.len() {
        bail!(
            "{p}: tokenizer.ggml.token_type has {} entries for {} tokens",
            types.len(),
            tokens.len()
        );
    }
    let merges = file.get_strings("tokenizer.ggml.merges")?.ok_or_else(|| {
        anyhow!("{p} has no tokenizer.ggml.merges: a BPE tokenizer needs its merges")
    })?;

    // The vocabulary, each token in the byte-level alphabet.
    let chars = byte_chars();
    let alphabet: std::collections::HashSet<char> = chars.iter().copied().collect();
    let mut vocab = Map::new();
    for (id, token) in tokens.iter().enumerate() {
        let spelled = if token.chars().all(|c| alphabet.contains(&c)) {
            (*token).to_owned()
        } else {
            token.bytes().map(|b| chars[b as usize]).collect()
        };
        vocab.insert(spelled, id.into());
    }
    let merges = merges
        .iter()
        .map(|m| match m.split(' ').collect::<Vec<_>>()[..] {
            [a, b] => Ok(json!([a, b])),
            _ => Err(anyhow!(
                "{p}: tokenizer.ggml.merges has {m:?}, not two tokens separated by one space"
            )),
        })
        .collect::<Result<Vec<_>>>()?;

    // Added tokens, by id: control tokens (special; skipped when spelled
    // outside the byte alphabet, a mislabel llama.cpp makes), user-defined
    // ones (not special), then the named special tokens.
    let mut added: std::collections::BTreeMap<u64, (String, bool)> = Default::default();
    for (id, (token, ty)) in tokens.iter().zip(&types).enumerate() {
        let id = id as u64;
        if *ty == CONTROL && token.chars().all(|c| alphabet.contains(&c)) {
            added.entry(id).or_insert(((*token).to_owned(), true));
        } else if *ty == USER_DEFINED && vocab.contains_key(*token) {
            added.entry(id).or_insert(((*token).to_owned(), false));
        }
    }
    let mut named: Vec<u64> = Vec::new();
    for key in [
        "unknown_token_id",
        "bos_token_id",
        "eos_token_id",
        "padding_token_id",
    ] {
        if let Some(t) = special_token(file, &tokens, key)? {
            named.extend(vocab.get(&t).and_then(Value::as_u64));
        }
    }
    // GPT-2's default special token, which transformers' GPT-2 tokenizer adds.
    named.extend(vocab.get("<|endoftext|>").and_then(Value::as_u64));
    for id in named {
        let token = tokens[id as usize].to_owned();
        if !added.values().any(|(t, _)| *t == token) {
            added.insert(id, (token, true));
        }
    }
    let added_tokens: Vec<Value> = added
        .iter()
        .map(|(id, (content, special))| {
            json!({
                "id": id, "content": content, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": special,
            })
        })
        .collect();

    let pre = file.get_str("tokenizer.ggml.pre")?;
    let pre_tokenizer = match pre {
        Some(pre) if LLAMA3_PRE.contains(&pre) => json!({
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
            ],
        }),
        Some(pre) if OTHER_SPLIT_PRE.contains(&pre) => bail!(
            "{p}: tokenizer.ggml.pre is `{pre}`, whose split regex headstart does not reproduce; \
             it builds GPT-2 style (`default`, `gpt2`, `smollm`, ...) and Llama 3 style \
             (`llama-bpe`, ...) byte-level tokenizers"
        ),
        _ => {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
        }
    };

    let add_bos = file
        .get_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(false);
    let add_eos = file
        .get_bool("tokenizer.ggml.add_eos_token")?
        .unwrap_or(false);
    let bos = special_token(file, &tokens, "bos_token_id")?.filter(|_| add_bos);
    let eos = special_token(file, &tokens, "eos_token_id")?.filter(|_| add_eos);
    let id_of = |t: &str| {
        vocab
            .get(t)
            .and_then(Value::as_u64)
            .map(|id| (t.to_owned(), id))
    };
    let post_processor = template(
        bos.as_deref().and_then(id_of),
        eos.as_deref().and_then(id_of),
    );

    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges,
        },
    }))
}

/// transformers' template post-processor: `[BOS] $A [EOS]` for one
/// sequence, `[BOS] $A [EOS] [BOS] $B [EOS]` for a pair (type id 1 for the
/// second), each special token only when given.
fn template(bos: Option<(String, u64)>, eos: Option<(String, u64)>) -> Value {
    let special = |t: &str, type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let seq = |s: &str, type_id: u32| json!({"Sequence": {"id": s, "type_id": type_id}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    for (part, out, type_id) in [("A", &mut single, 0), ("B", &mut pair, 1)] {
        if let Some((t, _)) = &bos {
            out.push(special(t, type_id));
        }
        out.push(seq(part, type_id));
        if let Some((t, _)) = &eos {
            out.push(special(t, type_id));
        }
    }
    let pair: Vec<Value> = single.iter().cloned().chain(pair).collect();
    let mut tokens = Map::new();
    for (t, id) in bos.into_iter().chain(eos) {
        tokens.insert(t.clone(), json!({"id": t, "ids": [id], "tokens": [t]}));
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": tokens})
}
