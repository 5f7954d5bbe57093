//! GGUF files (llama.cpp's single-file format): metadata, tensors
//! dequantised to `f32`, and a Llama checkpoint under transformers' names
//! with its `config.json` and tokenizer.
//!
//! * [`GgufFile::open`] memory-maps a file and parses its header (GGUF v1-v3:
//!   magic, version, every metadata value type including nested arrays,
//!   tensor infos, `general.alignment`, the data offset). Every count, length
//!   and tensor extent is checked against the file before anything is
//!   allocated or read, so a truncated or corrupt file is an error naming
//!   the file and what is wrong, never a panic or a huge allocation.
//! * [`GgufFile::tensor`] dequantises one tensor to `f32` in PyTorch order
//!   (GGUF lists dimensions fastest-varying first; they come out reversed,
//!   outermost first): F32, F16, BF16, F64, the integer types, Q8_0, Q4_0,
//!   Q4_1, Q5_0, Q5_1, the K-quants (Q2_K ... Q8_K) and the IQ types. The
//!   row-interleaved layouts llama.cpp repacks for one CPU kernel
//!   (`Q4_0_4_4`, `IQ4_NL_4_8`, ...) are not portable tensors and are an error
//!   naming the file, the tensor and the type; so is a type id this reader
//!   does not know.
//! * [`load_llama`] turns a `llama` file into what a Hugging Face Llama
//!   directory holds: the weights as a [`crate::hub::Checkpoint`] under transformers'
//!   `LlamaForCausalLM` names (with llama.cpp's rotary row permutation of
//!   the Q and K projections undone), a `config.json` ([`llama_config`]) and
//!   the tokenizer ([`GgufFile::tokenizer`]).
//!
//! Parsing and dequantisation come from the `pmetal-gguf` crate (MIT OR
//! Apache-2.0): it validates every header field against the file size and
//! its block decoders follow ggml's reference arithmetic. The naming, the
//! permutation, the config and the tokenizer are ours, written to match what
//! transformers 5.24 derives from the same file (`scripts/make_gguf_reference.py`
//! records it; `tests.rs` compares).

pub mod convert;
mod llama;
mod tokenizer;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use memmap2::Mmap;
use pmetal_gguf::dequant::{self, DequantError};
use pmetal_gguf::{GgmlType, GgufContent, GgufReadError, GgufVersion};

use super::tensor::{DType, HostTensor};

pub use convert::{is_gguf, model_dir};
pub use llama::{LlamaGguf, hf_name, llama_config, load_llama, unpermute_rows};
/// A metadata value: the 13 GGUF value types, arrays nested to any depth.
/// `as_u64`, `as_i64`, `as_f64`, `as_str`, `as_bool` and `as_array` read it;
/// [`value_to_json`] converts it.
pub use pmetal_gguf::MetadataValue as GgufValue;
pub use tokenizer::{GgufTokenizer, tokenizer_json};

/// The magic every GGUF file starts with.
pub const MAGIC: &[u8; 4] = b"GGUF";

/// One tensor as the file describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensorInfo {
    /// The tensor's name in the file (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions outermost first (PyTorch order: the file's list reversed),
    /// e.g. `[576, 1536]` for an FFN up projection of hidden 576.
    pub shape: Vec<usize>,
    /// The stored type as llama.cpp spells it: `F32`, `Q4_1`, `Q6_K`, ...
    pub type_name: &'static str,
    /// Where the data starts, in bytes from the start of the file.
    pub start: u64,
    /// How many bytes of data it has.
    pub len: u64,
    ggml_type: GgmlType,
}

impl GgufTensorInfo {
    /// Number of elements (product of [`GgufTensorInfo::shape`]).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the stored values are block-quantised (not a plain float or
    /// integer type).
    pub fn is_quantized(&self) -> bool {
        plain_dtype(self.ggml_type).is_none()
    }
}

/// A GGUF file, memory-mapped, with its header parsed.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: BTreeMap<String, GgufValue>,
    /// In the order of their data in the file.
    tensors: Vec<GgufTensorInfo>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps `path` and parses its header and tensor infos. Errors name
    /// the file and say what is wrong: not GGUF (wrong magic), a version
    /// other than 1-3, a header cut short, a count or length larger than the
    /// file, tensor data past the end of the file, an unknown type id.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let mut file = File::open(path)
            .with_context(|| format!("cannot open GGUF file {}", path.display()))?;
        let mut head = Vec::with_capacity(4);
        (&mut file)
            .take(4)
            .read_to_end(&mut head)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if head != MAGIC {
            bail!(
                "{} is not a GGUF file: it starts with {:?}, not \"GGUF\"{}",
                path.display(),
                String::from_utf8_lossy(&head),
                if head.len() < 4 {
                    " (it is shorter than 4 bytes)"
                } else {
                    ""
                }
            );
        }
        // SAFETY: the map is read-only and private to this value; like every
        // memory-mapped reader we rely on the file not being truncated while
        // it is open (the model caches are written once and renamed into place).
        let map = unsafe { Mmap::map(&file) }
            .with_context(|| format!("cannot memory-map {}", path.display()))?;
        let content = GgufContent::read(&mut Cursor::new(&map[..]))
            .map_err(|e| header_error(path, &map, e))?;
        let version = match content.version {
            GgufVersion::V1 => 1,
            GgufVersion::V2 => 2,
            GgufVersion::V3 => 3,
        };
        let data_offset = content.tensor_data_offset;
        let mut tensors = content
            .tensor_infos
            .into_values()
            .map(|t| {
                let len = t
                    .byte_size_checked()
                    .map_err(|e| anyhow!("{}: tensor `{}`: {e}", path.display(), t.name))?
                    as u64;
                let shape = t
                    .dimensions
                    .iter()
                    .map(|&d| usize::try_from(d))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| {
                        anyhow!(
                            "{}: tensor `{}` has dimensions {:?}, too large for this machine",
                            path.display(),
                            t.name,
                            t.dimensions
                        )
                    })?;
                Ok(GgufTensorInfo {
                    start: data_offset + t.offset,
                    len,
                    type_name: type_name(t.dtype),
                    ggml_type: t.dtype,
                    shape,
                    name: t.name,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        tensors.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.name.cmp(&b.name)));
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            version,
            alignment: content.alignment,
            data_offset,
            metadata: content.metadata.into_iter().collect(),
            tensors,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version (1, 2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// `general.alignment` (32 when the file does not set it).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Where the tensor data section starts, in bytes from the start of the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Every metadata key and value, by key.
    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    /// The metadata value under `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// `general.architecture` (`llama`, `qwen2`, `gpt2`, ...).
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")?.ok_or_else(|| {
            anyhow!(
                "{} has no general.architecture in its metadata: not a model file llama.cpp \
                 would load",
                self.path.display()
            )
        })
    }

    /// The string under `key`; `None` when absent, an error naming the file
    /// and key when it holds another type.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        self.typed(key, "a string", GgufValue::as_str)
    }

    /// The non-negative integer under `key` (any integer type); `None` when
    /// absent, an error naming the file and key otherwise.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, "a non-negative integer", GgufValue::as_u64)
    }

    /// The number under `key` (a float, or an integer converted); `None` when
    /// absent, an error naming the file and key otherwise.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        self.typed(key, "a number", GgufValue::as_f64)
    }

    /// The bool under `key`; `None` when absent, an error naming the file and
    /// key otherwise.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "a bool", GgufValue::as_bool)
    }

    /// The array of strings under `key`; `None` when absent, an error naming
    /// the file and key when it is not an array of strings.
    pub fn get_strings(&self, key: &str) -> Result<Option<Vec<&str>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let items = v.as_array().and_then(|a| {
            a.iter()
                .map(GgufValue::as_str)
                .collect::<Option<Vec<&str>>>()
        });
        items
            .map(Some)
            .ok_or_else(|| self.wrong_type(key, "an array of strings", v))
    }

    /// The array of integers under `key`; `None` when absent, an error naming
    /// the file and key when it is not an array of integers.
    pub fn get_ints(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let items = v
            .as_array()
            .and_then(|a| a.iter().map(GgufValue::as_i64).collect::<Option<Vec<_>>>());
        items
            .map(Some)
            .ok_or_else(|| self.wrong_type(key, "an array of integers", v))
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        what: &str,
        read: impl Fn(&'a GgufValue) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => read(v)
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, what, v)),
        }
    }

    fn wrong_type(&self, key: &str, what: &str, v: &GgufValue) -> anyhow::Error {
        anyhow!(
            "{}: metadata key {key} should be {what}, but holds {}",
            self.path.display(),
            describe(v)
        )
    }

    /// Every tensor, in the order of their data in the file.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`, or an error naming the file.
    pub fn tensor_info(&self, name: &str) -> Result<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name).ok_or_else(|| {
            anyhow!(
                "{} has no tensor `{name}` ({} tensors, e.g. {})",
                self.path.display(),
                self.tensors.len(),
                self.tensors
                    .iter()
                    .take(4)
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    /// The stored bytes of tensor `name` (a slice of the memory map).
    pub fn raw(&self, name: &str) -> Result<&[u8]> {
        let t = self.tensor_info(name)?;
        Ok(self.bytes(t))
    }

    fn bytes(&self, t: &GgufTensorInfo) -> &[u8] {
        // `open` checked every extent against the file size.
        &self.map[t.start as usize..(t.start + t.len) as usize]
    }

    /// Tensor `name` dequantised to `f32`, shape outermost first. Its
    /// [`HostTensor::dtype`] is the stored type for plain float and integer
    /// tensors, and [`DType::F32`] for block-quantised ones (their values are
    /// the dequantised `f32`s; [`GgufTensorInfo::type_name`] says what was
    /// stored).
    pub fn tensor(&self, name: &str) -> Result<HostTensor> {
        let t = self.tensor_info(name)?;
        self.decode(t)
    }

    fn decode(&self, t: &GgufTensorInfo) -> Result<HostTensor> {
        let ctx = || {
            format!(
                "{}: tensor `{}` ({})",
                self.path.display(),
                t.name,
                t.type_name
            )
        };
        if !dequant::is_supported(t.ggml_type) {
            bail!(
                "{}: tensor `{}` is stored as {}, a layout llama.cpp repacks for one CPU kernel; \
                 headstart dequantises F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, the K-quants \
                 and the IQ types. Convert the file to one of those (llama-quantize \
                 --allow-requantize, or re-export it) and try again",
                self.path.display(),
                t.name,
                t.type_name
            );
        }
        let shape = t
            .shape
            .iter()
            .map(|&d| i32::try_from(d))
            .collect::<Result<Vec<i32>, _>>()
            .map_err(|_| anyhow!("dimensions {:?} do not fit the dequantiser", t.shape))
            .with_context(ctx)?;
        let data = dequant::dequantize(self.bytes(t), t.ggml_type, &shape)
            .map_err(|e: DequantError| anyhow!("{e}"))
            .with_context(ctx)?;
        Ok(HostTensor {
            shape: t.shape.clone(),
            dtype: plain_dtype(t.ggml_type).unwrap_or(DType::F32),
            data,
        })
    }

    /// How many tensors of each stored type, e.g. `Q4_1 (210), F32 (61), Q8_0 (1)`,
    /// most frequent first.
    pub fn type_summary(&self) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for t in &self.tensors {
            *counts.entry(t.type_name).or_default() += 1;
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        counts
            .iter()
            .map(|(k, n)| format!("{k} ({n})"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `tokenizer.chat_template`, the Jinja template of a chat model.
    pub fn chat_template(&self) -> Result<Option<&str>> {
        self.get_str("tokenizer.chat_template")
    }
}

/// A metadata value as JSON: numbers, bools and strings as themselves,
/// arrays as arrays (a non-finite float becomes `null`).
pub fn value_to_json(v: &GgufValue) -> serde_json::Value {
    use serde_json::Value;
    match v {
        GgufValue::Uint8(x) => Value::from(*x),
        GgufValue::Int8(x) => Value::from(*x),
        GgufValue::Uint16(x) => Value::from(*x),
        GgufValue::Int16(x) => Value::from(*x),
        GgufValue::Uint32(x) => Value::from(*x),
        GgufValue::Int32(x) => Value::from(*x),
        GgufValue::Uint64(x) => Value::from(*x),
        GgufValue::Int64(x) => Value::from(*x),
        GgufValue::Float32(x) => Value::from(f64::from(*x)),
        GgufValue::Float64(x) => Value::from(*x),
        GgufValue::Bool(x) => Value::from(*x),
        GgufValue::String(x) => Value::from(x.as_str()),
        GgufValue::Array(a) => Value::Array(a.iter().map(value_to_json).collect()),
    }
}

/// A short description of a value for messages: `a uint32 (7)`, `an array of
/// 3 strings`, ...
fn describe(v: &GgufValue) -> String {
    match v {
        GgufValue::Array(a) => match a.first() {
            None => "an empty array".to_owned(),
            Some(first) => {
                let word = type_word(first);
                let word = word.split_once(' ').map_or(word, |(_, w)| w);
                format!("an array of {} {word}s", a.len())
            }
        },
        GgufValue::String(s) if s.len() > 40 => {
            format!("a string ({:?}...)", &s[..s.floor_char_boundary(40)])
        }
        _ => format!("{} ({})", type_word(v), value_to_json(v)),
    }
}

fn type_word(v: &GgufValue) -> &'static str {
    match v {
        GgufValue::Uint8(_) => "a uint8",
        GgufValue::Int8(_) => "an int8",
        GgufValue::Uint16(_) => "a uint16",
        GgufValue::Int16(_) => "an int16",
        GgufValue::Uint32(_) => "a uint32",
        GgufValue::Int32(_) => "an int32",
        GgufValue::Uint64(_) => "a uint64",
        GgufValue::Int64(_) => "an int64",
        GgufValue::Float32(_) => "a float32",
        GgufValue::Float64(_) => "a float64",
        GgufValue::Bool(_) => "a bool",
        GgufValue::String(_) => "a string",
        GgufValue::Array(_) => "an array",
    }
}

/// The [`DType`] of a plain (not block-quantised) stored type.
fn plain_dtype(t: GgmlType) -> Option<DType> {
    Some(match t {
        GgmlType::F32 => DType::F32,
        GgmlType::F16 => DType::F16,
        GgmlType::Bf16 => DType::BF16,
        GgmlType::F64 => DType::F64,
        GgmlType::I8 => DType::I8,
        GgmlType::I16 => DType::I16,
        GgmlType::I32 => DType::I32,
        GgmlType::I64 => DType::I64,
        _ => return None,
    })
}

/// llama.cpp's spelling of a tensor type (`ggml_type_name`).
fn type_name(t: GgmlType) -> &'static str {
    match t {
        GgmlType::F32 => "F32",
        GgmlType::F16 => "F16",
        GgmlType::Q4_0 => "Q4_0",
        GgmlType::Q4_1 => "Q4_1",
        GgmlType::Q5_0 => "Q5_0",
        GgmlType::Q5_1 => "Q5_1",
        GgmlType::Q8_0 => "Q8_0",
        GgmlType::Q8_1 => "Q8_1",
        GgmlType::Q2K => "Q2_K",
        GgmlType::Q3K => "Q3_K",
        GgmlType::Q4K => "Q4_K",
        GgmlType::Q5K => "Q5_K",
        GgmlType::Q6K => "Q6_K",
        GgmlType::Q8K => "Q8_K",
        GgmlType::Iq2Xxs => "IQ2_XXS",
        GgmlType::Iq2Xs => "IQ2_XS",
        GgmlType::Iq3Xxs => "IQ3_XXS",
        GgmlType::Iq1S => "IQ1_S",
        GgmlType::Iq4Nl => "IQ4_NL",
        GgmlType::Iq3S => "IQ3_S",
        GgmlType::Iq2S => "IQ2_S",
        GgmlType::Iq4Xs => "IQ4_XS",
        GgmlType::I8 => "I8",
        GgmlType::I16 => "I16",
        GgmlType::I32 => "I32",
        GgmlType::I64 => "I64",
        GgmlType::F64 => "F64",
        GgmlType::Iq1M => "IQ1_M",
        GgmlType::Bf16 => "BF16",
        GgmlType::Q4_0_4_4 => "Q4_0_4_4",
        GgmlType::Q4_0_4_8 => "Q4_0_4_8",
        GgmlType::Q4_0_8_8 => "Q4_0_8_8",
        GgmlType::Tq1_0 => "TQ1_0",
        GgmlType::Tq2_0 => "TQ2_0",
        GgmlType::Iq4Nl_4_4 => "IQ4_NL_4_4",
        GgmlType::Iq4Nl_4_8 => "IQ4_NL_4_8",
        GgmlType::Iq4Nl_8_8 => "IQ4_NL_8_8",
        GgmlType::Mxfp4 => "MXFP4",
        GgmlType::Nvfp4 => "NVFP4",
        GgmlType::Q1_0 => "Q1_0",
    }
}

/// The error for a header `pmetal-gguf` rejected, naming the file and saying
/// what to do.
fn header_error(path: &Path, bytes: &[u8], e: GgufReadError) -> anyhow::Error {
    let p = path.display();
    match e {
        GgufReadError::InvalidMagic(_) => {
            anyhow!("{p} is not a GGUF file: it does not start with \"GGUF\"")
        }
        GgufReadError::UnsupportedVersion(v) => anyhow!(
            "{p}: GGUF version {v} is not supported (headstart reads versions 1 to 3); convert \
             the model again with a current llama.cpp"
        ),
        GgufReadError::BigEndian => anyhow!(
            "{p} is a big-endian GGUF file; headstart reads little-endian files only: convert \
             it again without --bigendian"
        ),
        GgufReadError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => anyhow!(
            "{p} is truncated: its header ends in the middle of a field ({} bytes in all). \
             Download or copy the file again",
            bytes.len()
        ),
        GgufReadError::ExceedsFile {
            what,
            claimed,
            remaining,
        } => anyhow!(
            "{p} is truncated or corrupt: its header gives a {what} of {claimed}, more than the \
             {remaining} bytes left in the file. Download or copy the file again"
        ),
        GgufReadError::TensorOutOfBounds {
            name,
            end,
            file_len,
        } => anyhow!(
            "{p} is truncated: the data of tensor `{name}` ends at byte {end}, past the end of \
             the {file_len}-byte file. Download or copy the file again"
        ),
        GgufReadError::InvalidDtype(id) => anyhow!(
            "{p}: a tensor has type id {id}, which is no ggml tensor type headstart knows (it \
             dequantises F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, the K-quants and the IQ \
             types); the file is corrupt or from a newer llama.cpp"
        ),
        other => anyhow!("{p} is not a valid GGUF file: {other}"),
    }
}

#[cfg(test)]
mod tests;
