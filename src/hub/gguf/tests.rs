//! Synthetic GGUF files written here (every value type, each tensor type we
//! decode, broken headers), and the real SmolLM2-135M-Instruct Q4_1 file
//! (fetched through `crate::assets`) against what transformers 5.24 read
//! from it (`tests/fixtures/gguf/smollm2_reference.json`, written by
//! `scripts/make_gguf_reference.py`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use half::f16;
use serde_json::Value;

use super::*;

// ---------------------------------------------------------------------------
// A small GGUF writer for the tests.

/// A metadata value to write (GGUF value type ids in comments).
#[derive(Clone, Debug)]
enum M {
    U8(u8),      // 0
    I8(i8),      // 1
    U16(u16),    // 2
    I16(i16),    // 3
    U32(u32),    // 4
    I32(i32),    // 5
    F32(f32),    // 6
    Bool(bool),  // 7
    Str(String), // 8
    /// element type id, elements
    Arr(u32, Vec<M>), // 9
    U64(u64),    // 10
    I64(i64),    // 11
    F64(f64),    // 12
}

fn s(v: &str) -> M {
    M::Str(v.to_owned())
}

fn strs(v: &[&str]) -> M {
    M::Arr(8, v.iter().map(|x| s(x)).collect())
}

fn ints(v: &[i32]) -> M {
    M::Arr(5, v.iter().map(|&x| M::I32(x)).collect())
}

impl M {
    fn type_id(&self) -> u32 {
        match self {
            M::U8(_) => 0,
            M::I8(_) => 1,
            M::U16(_) => 2,
            M::I16(_) => 3,
            M::U32(_) => 4,
            M::I32(_) => 5,
            M::F32(_) => 6,
            M::Bool(_) => 7,
            M::Str(_) => 8,
            M::Arr(..) => 9,
            M::U64(_) => 10,
            M::I64(_) => 11,
            M::F64(_) => 12,
        }
    }
}

/// One tensor to write: name, GGUF dims (fastest-varying first), type id, data.
struct T {
    name: String,
    dims: Vec<u64>,
    ty: u32,
    data: Vec<u8>,
}

fn t(name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> T {
    T {
        name: name.to_owned(),
        dims: dims.to_vec(),
        ty,
        data,
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn string(&mut self, v: &str) -> &mut Self {
        self.u64(v.len() as u64);
        self.0.extend(v.as_bytes());
        self
    }
    fn value(&mut self, v: &M) {
        match v {
            M::U8(x) => self.0.push(*x),
            M::I8(x) => self.0.push(*x as u8),
            M::U16(x) => self.0.extend(x.to_le_bytes()),
            M::I16(x) => self.0.extend(x.to_le_bytes()),
            M::U32(x) => self.0.extend(x.to_le_bytes()),
            M::I32(x) => self.0.extend(x.to_le_bytes()),
            M::F32(x) => self.0.extend(x.to_le_bytes()),
            M::Bool(x) => self.0.push(u8::from(*x)),
            M::Str(x) => {
                self.string(x);
            }
            M::Arr(ty, items) => {
                self.u32(*ty).u64(items.len() as u64);
                for i in items {
                    self.value(i);
                }
            }
            M::U64(x) => self.0.extend(x.to_le_bytes()),
            M::I64(x) => self.0.extend(x.to_le_bytes()),
            M::F64(x) => self.0.extend(x.to_le_bytes()),
        }
    }
}

/// A GGUF file (v2/v3 layout) with `meta` and `tensors`, the data of each
/// tensor aligned to `general.alignment` (32 unless `meta` sets it).
fn gguf(version: u32, meta: &[(&str, M)], tensors: &[T]) -> Vec<u8> {
    let align = meta
        .iter()
        .find_map(|(k, v)| match (k, v) {
            (&"general.alignment", M::U32(a)) => Some(*a as usize),
            _ => None,
        })
        .unwrap_or(32);
    let mut w = W::default();
    w.0.extend(b"GGUF");
    w.u32(version)
        .u64(tensors.len() as u64)
        .u64(meta.len() as u64);
    for (k, v) in meta {
        w.string(k).u32(v.type_id());
        w.value(v);
    }
    let mut offset = 0usize;
    let mut offsets = Vec::new();
    for t in tensors {
        offsets.push(offset);
        offset = (offset + t.data.len()).next_multiple_of(align);
    }
    for (t, off) in tensors.iter().zip(&offsets) {
        w.string(&t.name).u32(t.dims.len() as u32);
        for d in &t.dims {
            w.u64(*d);
        }
        w.u32(t.ty).u64(*off as u64);
    }
    let start = w.0.len().next_multiple_of(align);
    w.0.resize(start, 0);
    for (t, off) in tensors.iter().zip(&offsets) {
        w.0.resize(start + off, 0);
        w.0.extend(&t.data);
    }
    w.0
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn open_err(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = write(dir, name, bytes);
    let err = format!("{:#}", GgufFile::open(&path).unwrap_err());
    assert!(err.contains(&path.display().to_string()), "{err}");
    err
}

// ---------------------------------------------------------------------------
// Parsing.

#[test]
fn reads_every_value_type_nested_arrays_and_alignment() {
    let dir = tempfile::tempdir().unwrap();
    let meta = vec![
        ("general.architecture", s("test")),
        ("general.alignment", M::U32(64)),
        ("v.u8", M::U8(200)),
        ("v.i8", M::I8(-7)),
        ("v.u16", M::U16(60000)),
        ("v.i16", M::I16(-30000)),
        ("v.u32", M::U32(4_000_000_000)),
        ("v.i32", M::I32(-2_000_000_000)),
        ("v.f32", M::F32(0.15625)),
        ("v.bool", M::Bool(true)),
        ("v.str", s("héllo ✓")),
        ("v.u64", M::U64(1 << 40)),
        ("v.i64", M::I64(-(1 << 40))),
        ("v.f64", M::F64(-2.5e-300)),
        ("v.ints", ints(&[3, -1, 4])),
        ("v.strs", strs(&["a", "", "ü c"])),
        (
            "v.nested",
            M::Arr(
                9,
                vec![
                    M::Arr(4, vec![M::U32(1), M::U32(2)]),
                    M::Arr(4, vec![]),
                    M::Arr(8, vec![s("x")]),
                ],
            ),
        ),
        ("v.empty", M::Arr(6, vec![])),
    ];
    let tensors = [
        t("a", &[3, 2], 0, f32_bytes(&[1., 2., 3., 4., 5., 6.])),
        t("b", &[2], 0, f32_bytes(&[7., 8.])),
    ];
    for version in [2, 3] {
        let path = write(dir.path(), "all.gguf", &gguf(version, &meta, &tensors));
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.version(), version);
        assert_eq!(f.alignment(), 64);
        assert_eq!(f.data_offset() % 64, 0);
        assert_eq!(f.metadata().len(), meta.len());
        assert_eq!(f.architecture().unwrap(), "test");
        assert_eq!(f.get_u64("v.u8").unwrap(), Some(200));
        assert_eq!(f.get("v.i8"), Some(&GgufValue::Int8(-7)));
        assert_eq!(f.get_u64("v.u16").unwrap(), Some(60000));
        assert_eq!(f.get("v.i16"), Some(&GgufValue::Int16(-30000)));
        assert_eq!(f.get_u64("v.u32").unwrap(), Some(4_000_000_000));
        assert_eq!(f.get("v.i32"), Some(&GgufValue::Int32(-2_000_000_000)));
        assert_eq!(f.get_f64("v.f32").unwrap(), Some(0.15625));
        assert_eq!(f.get_bool("v.bool").unwrap(), Some(true));
        assert_eq!(f.get_str("v.str").unwrap(), Some("héllo ✓"));
        assert_eq!(f.get_u64("v.u64").unwrap(), Some(1 << 40));
        assert_eq!(f.get("v.i64"), Some(&GgufValue::Int64(-(1 << 40))));
        assert_eq!(f.get_f64("v.f64").unwrap(), Some(-2.5e-300));
        assert_eq!(f.get_ints("v.ints").unwrap(), Some(vec![3, -1, 4]));
        assert_eq!(f.get_strings("v.strs").unwrap(), Some(vec!["a", "", "ü c"]));
        assert_eq!(
            value_to_json(f.get("v.nested").unwrap()),
            serde_json::json!([[1, 2], [], ["x"]])
        );
        assert_eq!(
            value_to_json(f.get("v.empty").unwrap()),
            serde_json::json!([])
        );
        assert_eq!(f.get("absent"), None);
        assert_eq!(f.get_u64("absent").unwrap(), None);

        // shapes outermost first; data found through the alignment
        let infos: Vec<(&str, &[usize])> = f
            .tensors()
            .iter()
            .map(|t| (t.name.as_str(), t.shape.as_slice()))
            .collect();
        assert_eq!(infos, [("a", &[2, 3][..]), ("b", &[2][..])]);
        assert_eq!(f.tensors()[1].start, f.data_offset() + 64);
        let a = f.tensor("a").unwrap();
        assert_eq!((a.shape.clone(), a.dtype), (vec![2, 3], DType::F32));
        assert_eq!(a.data, [1., 2., 3., 4., 5., 6.]);
        assert_eq!(f.tensor("b").unwrap().data, [7., 8.]);
        assert_eq!(f.raw("b").unwrap(), f32_bytes(&[7., 8.]).as_slice());
        assert_eq!(f.type_summary(), "F32 (2)");
    }

    // A metadata value of the wrong type names the file, the key and what it holds.
    let path = write(dir.path(), "all.gguf", &gguf(3, &meta, &tensors));
    let f = GgufFile::open(&path).unwrap();
    let err = f.get_u64("v.str").unwrap_err().to_string();
    assert!(
        err.contains("all.gguf")
            && err.contains("v.str should be a non-negative integer")
            && err.contains("a string"),
        "{err}"
    );
    let err = f.get_strings("v.ints").unwrap_err().to_string();
    assert!(err.contains("an array of 3 int32s"), "{err}");
    let err = f.tensor("c").unwrap_err().to_string();
    assert!(err.contains("has no tensor `c`"), "{err}");
}

/// ggml's block layouts, built by hand: the expected values follow from the
/// definitions (Q8_0: d * q; Q4_0: d * (q - 8); Q4_1: d * q + m, low nibbles
/// first, then high nibbles).
#[test]
fn dequantises_float_and_block_types_row_major() {
    let dir = tempfile::tempdir().unwrap();
    let halves = |v: &[f32]| -> Vec<u8> {
        v.iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect()
    };
    let bf16s = |v: &[f32]| -> Vec<u8> {
        v.iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect()
    };
    let plain: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();

    // Two rows of one block each (row r uses scale d_r).
    let (d, m) = (0.25f32, -1.5f32);
    let mut q8 = Vec::new();
    let mut q8_want = Vec::new();
    let mut q40 = Vec::new();
    let mut q40_want = Vec::new();
    let mut q41 = Vec::new();
    let mut q41_want = Vec::new();
    for row in 0..2 {
        let d = d * (row + 1) as f32;
        q8.extend(f16::from_f32(d).to_le_bytes());
        q40.extend(f16::from_f32(d).to_le_bytes());
        q41.extend(f16::from_f32(d).to_le_bytes());
        q41.extend(f16::from_f32(m).to_le_bytes());
        for j in 0..32 {
            let q = (j as i8 - 16) * if row == 0 { 1 } else { -3 };
            q8.push(q as u8);
            q8_want.push(d * f32::from(q));
        }
        let nibbles: Vec<u8> = (0..32).map(|j| ((j * 7 + row * 5) % 16) as u8).collect();
        for j in 0..16 {
            q40.push(nibbles[j] | (nibbles[j + 16] << 4));
            q41.push(nibbles[j] | (nibbles[j + 16] << 4));
        }
        for &n in &nibbles {
            q40_want.push(d * (f32::from(n) - 8.0));
            q41_want.push(d * f32::from(n) + m);
        }
    }
    let tensors = [
        t("f32", &[3, 2], 0, f32_bytes(&plain)),
        t("f16", &[3, 2], 1, halves(&plain)),
        t("bf16", &[3, 2], 30, bf16s(&plain)),
        t("q8_0", &[32, 2], 8, q8),
        t("q4_0", &[32, 2], 2, q40),
        t("q4_1", &[32, 2], 3, q41),
    ];
    let path = write(dir.path(), "types.gguf", &gguf(3, &[], &tensors));
    let f = GgufFile::open(&path).unwrap();
    for (name, dtype) in [
        ("f32", DType::F32),
        ("f16", DType::F16),
        ("bf16", DType::BF16),
    ] {
        let x = f.tensor(name).unwrap();
        assert_eq!((x.shape.clone(), x.dtype), (vec![2, 3], dtype), "{name}");
        assert_eq!(x.data, plain, "{name}");
        assert!(!f.tensor_info(name).unwrap().is_quantized());
    }
    for (name, ty, want) in [
        ("q8_0", "Q8_0", &q8_want),
        ("q4_0", "Q4_0", &q40_want),
        ("q4_1", "Q4_1", &q41_want),
    ] {
        let info = f.tensor_info(name).unwrap();
        assert_eq!((info.type_name, info.is_quantized()), (ty, true));
        let x = f.tensor(name).unwrap();
        // dequantised values are reported as F32
        assert_eq!(
            (x.shape.clone(), x.dtype),
            (vec![2, 32], DType::F32),
            "{name}"
        );
        assert_eq!(&x.data, want, "{name}");
    }
    assert_eq!(
        f.type_summary(),
        "BF16 (1), F16 (1), F32 (1), Q4_0 (1), Q4_1 (1), Q8_0 (1)"
    );
}

#[test]
fn bad_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = gguf(
        3,
        &[("general.architecture", s("llama")), ("k", s("some value"))],
        &[t("w", &[4], 0, f32_bytes(&[1., 2., 3., 4.]))],
    );
    assert!(GgufFile::open(&write(d, "good.gguf", &good)).is_ok());

    let err = open_err(d, "magic.gguf", b"PK\x03\x04 not gguf at all, a zip");
    assert!(
        err.contains("is not a GGUF file") && err.contains("\"PK"),
        "{err}"
    );
    let err = open_err(d, "tiny.gguf", b"GG");
    assert!(err.contains("not a GGUF file"), "{err}");

    let mut v = good.clone();
    v[4..8].copy_from_slice(&4u32.to_le_bytes());
    let err = open_err(d, "v4.gguf", &v);
    assert!(err.contains("GGUF version 4 is not supported"), "{err}");
    v[4..8].copy_from_slice(&0u32.to_le_bytes());
    assert!(open_err(d, "v0.gguf", &v).contains("version 0"));

    // cut inside the metadata, and inside the tensor infos
    for cut in [12, 30, good.len() - 40] {
        let err = open_err(d, "cut.gguf", &good[..cut]);
        assert!(err.contains("truncated"), "{cut}: {err}");
    }

    // the last tensor's data runs past the end of the file
    let err = open_err(d, "short.gguf", &good[..good.len() - 4]);
    assert!(
        err.contains("truncated") && err.contains("tensor `w`") && err.contains("past the end"),
        "{err}"
    );

    // a count larger than the file
    let mut v = good.clone();
    v[16..24].copy_from_slice(&5_000u64.to_le_bytes());
    let err = open_err(d, "count.gguf", &v);
    assert!(err.contains("metadata entry count of 5000"), "{err}");

    // a repacked type: the file opens, the tensor does not decode
    let repacked = gguf(
        3,
        &[],
        &[t("blk.0.ffn_up.weight", &[32, 4], 31, vec![0; 72])],
    );
    let path = write(d, "repacked.gguf", &repacked);
    let f = GgufFile::open(&path).unwrap();
    let err = f.tensor("blk.0.ffn_up.weight").unwrap_err().to_string();
    assert!(
        err.contains(&path.display().to_string())
            && err.contains("`blk.0.ffn_up.weight`")
            && err.contains("Q4_0_4_4"),
        "{err}"
    );
    // a type id no ggml version has (4 was Q4_2, removed)
    let err = open_err(
        d,
        "type4.gguf",
        &gguf(3, &[], &[t("w", &[32], 4, vec![0; 20])]),
    );
    assert!(err.contains("type id 4"), "{err}");
}

// ---------------------------------------------------------------------------
// Llama naming, permutation, config and tokenizer on a tiny synthetic file.

#[test]
fn llama_names_map_to_transformers() {
    for (gguf, hf) in [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
        (
            "blk.0.attn_norm.weight",
            "model.layers.0.input_layernorm.weight",
        ),
        (
            "blk.12.attn_q.weight",
            "model.layers.12.self_attn.q_proj.weight",
        ),
        ("blk.1.attn_k.bias", "model.layers.1.self_attn.k_proj.bias"),
        (
            "blk.1.attn_v.weight",
            "model.layers.1.self_attn.v_proj.weight",
        ),
        (
            "blk.1.attn_output.weight",
            "model.layers.1.self_attn.o_proj.weight",
        ),
        (
            "blk.2.ffn_norm.weight",
            "model.layers.2.post_attention_layernorm.weight",
        ),
        (
            "blk.2.ffn_gate.weight",
            "model.layers.2.mlp.gate_proj.weight",
        ),
        ("blk.2.ffn_up.weight", "model.layers.2.mlp.up_proj.weight"),
        (
            "blk.2.ffn_down.weight",
            "model.layers.2.mlp.down_proj.weight",
        ),
    ] {
        assert_eq!(hf_name(gguf).as_deref(), Some(hf), "{gguf}");
    }
    for other in [
        "rope_freqs.weight",
        "blk.x.attn_q.weight",
        "blk.0.attn_q.scale",
        "blk.0.ffn_gate_exps.weight",
        "blk..attn_q.weight",
    ] {
        assert_eq!(hf_name(other), None, "{other}");
    }
}

/// llama.cpp's permutation as `convert_hf_to_gguf.py` applies it
/// (`reshape(heads, 2, half, cols).swapaxes(1, 2)`): file row (h, i, j) is
/// transformers row (h, j, i).
fn llama_cpp_permute(hf: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let half = rows / heads / 2;
    let mut out = vec![0.0; hf.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                let from = h * 2 * half + j * half + i;
                let to = h * 2 * half + 2 * i + j;
                out[to * cols..(to + 1) * cols]
                    .copy_from_slice(&hf[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

#[test]
fn unpermute_inverts_llama_cpp_rotary_order() {
    // 2 heads of 4 rows, 3 columns: row r holds 10r, 10r+1, 10r+2
    let hf: Vec<f32> = (0..8)
        .flat_map(|r| (0..3).map(move |c| (10 * r + c) as f32))
        .collect();
    let file = llama_cpp_permute(&hf, 8, 3, 2);
    // head 0 in the file: rows 0, 2, 1, 3 of transformers
    assert_eq!(
        &file[..12],
        &[0., 1., 2., 20., 21., 22., 10., 11., 12., 30., 31., 32.]
    );
    assert_eq!(unpermute_rows(&file, 8, 3, 2).unwrap(), hf);
    // a bias (one column), one head
    let bias = [0., 1., 2., 3., 4., 5.];
    assert_eq!(
        unpermute_rows(&llama_cpp_permute(&bias, 6, 1, 1), 6, 1, 1).unwrap(),
        bias
    );
    assert!(unpermute_rows(&hf, 8, 3, 3).is_err());
}

/// Sizes of the tiny Llama: hidden 8, 2 heads of 4, 1 key/value head,
/// FFN 32, 2 layers, vocabulary of the byte-level tokens below.
const TOKENS: &[&str] = &[
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "a",
    "b",
    "c",
    "Ġ",
    "ab",
    "Ġa",
    "Ġab",
    "abc",
    "€", // outside the byte alphabet: respelled byte by byte, "âĤ¬"
    "\n",
];
const MERGES: &[&str] = &["Ġ a", "a b", "Ġa b", "ab c"];

fn tiny_meta(extra: &[(&str, M)]) -> Vec<(String, M)> {
    let mut types = vec![1; TOKENS.len()];
    types[0] = 3;
    types[1] = 3;
    types[2] = 3;
    types[3] = 4;
    let mut meta: Vec<(String, M)> = vec![
        ("general.architecture".into(), s("llama")),
        ("general.name".into(), s("tiny")),
        ("llama.block_count".into(), M::U32(2)),
        ("llama.context_length".into(), M::U32(64)),
        ("llama.embedding_length".into(), M::U32(8)),
        ("llama.feed_forward_length".into(), M::U32(32)),
        ("llama.attention.head_count".into(), M::U32(2)),
        ("llama.attention.head_count_kv".into(), M::U32(1)),
        ("llama.rope.freq_base".into(), M::F32(10000.0)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            M::F32(1e-5),
        ),
        ("llama.rope.dimension_count".into(), M::U32(4)),
        ("tokenizer.ggml.model".into(), s("gpt2")),
        ("tokenizer.ggml.pre".into(), s("smollm")),
        ("tokenizer.ggml.tokens".into(), strs(TOKENS)),
        ("tokenizer.ggml.token_type".into(), ints(&types)),
        ("tokenizer.ggml.merges".into(), strs(MERGES)),
        ("tokenizer.ggml.bos_token_id".into(), M::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), M::U32(2)),
        ("tokenizer.ggml.unknown_token_id".into(), M::U32(0)),
        ("tokenizer.ggml.padding_token_id".into(), M::U32(2)),
        ("tokenizer.ggml.add_bos_token".into(), M::Bool(false)),
        ("tokenizer.chat_template".into(), s("{{ messages }}")),
    ];
    for (k, v) in extra {
        match meta.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.clone(),
            None => meta.push(((*k).into(), v.clone())),
        }
    }
    meta
}

/// Deterministic F32 values for tensor number `n`.
fn values(n: usize, count: usize) -> Vec<f32> {
    (0..count)
        .map(|i| ((i * 31 + n * 17) % 23) as f32 / 23.0 - 0.5)
        .collect()
}

/// The tiny Llama's tensors in llama.cpp's layout (Q and K permuted);
/// `(transformers name, transformers-layout values)` alongside.
fn tiny_tensors(output: bool) -> (Vec<T>, Vec<(String, Vec<f32>)>) {
    let v = TOKENS.len() as u64;
    let mut specs: Vec<(String, Vec<u64>)> = vec![
        ("token_embd.weight".into(), vec![8, v]),
        ("output_norm.weight".into(), vec![8]),
    ];
    if output {
        specs.push(("output.weight".into(), vec![8, v]));
    }
    for l in 0..2 {
        for (part, dims) in [
            ("attn_norm", vec![8]),
            ("attn_q", vec![8, 8]),
            ("attn_k", vec![8, 4]),
            ("attn_v", vec![8, 4]),
            ("attn_output", vec![8, 8]),
            ("ffn_norm", vec![8]),
            ("ffn_gate", vec![8, 32]),
            ("ffn_up", vec![8, 32]),
            ("ffn_down", vec![32, 8]),
        ] {
            specs.push((format!("blk.{l}.{part}.weight"), dims));
        }
    }
    let mut tensors = Vec::new();
    let mut want = Vec::new();
    for (n, (name, dims)) in specs.into_iter().enumerate() {
        let count = dims.iter().product::<u64>() as usize;
        let hf = values(n, count);
        let rows = *dims.last().unwrap() as usize;
        let cols = count / rows;
        let stored = if name.contains("attn_q") {
            llama_cpp_permute(&hf, rows, cols, 2)
        } else if name.contains("attn_k") {
            llama_cpp_permute(&hf, rows, cols, 1)
        } else {
            hf.clone()
        };
        want.push((hf_name(&name).unwrap(), hf));
        tensors.push(t(&name, &dims, 0, f32_bytes(&stored)));
    }
    (tensors, want)
}

fn tiny_file(dir: &Path, name: &str, extra: &[(&str, M)], output: bool) -> PathBuf {
    let meta = tiny_meta(extra);
    let meta: Vec<(&str, M)> = meta.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    write(dir, name, &gguf(3, &meta, &tiny_tensors(output).0))
}

#[test]
fn tiny_llama_loads_as_a_transformers_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_file(dir.path(), "tiny.gguf", &[], false);
    let ll = load_llama(&path).unwrap();

    let (_, want) = tiny_tensors(false);
    assert_eq!(ll.checkpoint.tensors.len(), want.len());
    for (name, values) in &want {
        assert_eq!(&ll.checkpoint.tensor(name).unwrap().data, values, "{name}");
    }
    assert_eq!(
        ll.checkpoint.tensors["model.layers.1.self_attn.k_proj.weight"].shape,
        [4, 8]
    );
    assert_eq!(
        ll.checkpoint.tensors["model.embed_tokens.weight"].shape,
        [TOKENS.len(), 8]
    );
    assert!(!ll.checkpoint.tensors.contains_key("lm_head.weight"));
    assert_eq!(ll.checkpoint.files, std::slice::from_ref(&path));
    assert!(
        ll.checkpoint.notes[0].starts_with("GGUF v3"),
        "{:?}",
        ll.checkpoint.notes
    );
    assert!(
        ll.checkpoint.notes[1].contains("4 q_proj/k_proj"),
        "{:?}",
        ll.checkpoint.notes
    );

    let c = &ll.config;
    assert_eq!(c["architectures"], serde_json::json!(["LlamaForCausalLM"]));
    for (k, v) in [
        ("model_type", serde_json::json!("llama")),
        ("vocab_size", TOKENS.len().into()),
        ("hidden_size", 8.into()),
        ("intermediate_size", 32.into()),
        ("num_hidden_layers", 2.into()),
        ("num_attention_heads", 2.into()),
        ("num_key_value_heads", 1.into()),
        ("head_dim", 4.into()),
        ("max_position_embeddings", 64.into()),
        ("rms_norm_eps", f64::from(1e-5f32).into()),
        ("tie_word_embeddings", true.into()),
        ("bos_token_id", 1.into()),
        ("eos_token_id", 2.into()),
        ("pad_token_id", 2.into()),
        ("unk_token_id", 0.into()),
        (
            "rope_parameters",
            serde_json::json!({"rope_theta": 10000.0, "rope_type": "default"}),
        ),
    ] {
        assert_eq!(c[k], v, "{k}");
    }

    // with its own output projection: lm_head.weight, untied
    let path = tiny_file(dir.path(), "untied.gguf", &[], true);
    let ll2 = load_llama(&path).unwrap();
    assert_eq!(ll2.config["tie_word_embeddings"], false);
    assert_eq!(
        ll2.checkpoint.tensors["lm_head.weight"].shape,
        [TOKENS.len(), 8]
    );

    // the tokenizer: merges, special and added tokens, respelled tokens
    let tok = &ll.tokenizer;
    let ids = |text: &str| {
        tok.tokenizer
            .encode(text, false)
            .unwrap()
            .get_ids()
            .to_vec()
    };
    // "ab" / " abc": Ġ+a first (rank 0), then Ġa+b; ab+c never applies
    assert_eq!(ids("ab abc"), [8, 10, 6]);
    assert_eq!(ids(" ab"), [10]);
    assert_eq!(ids("<|im_start|>ab<|im_end|>"), [1, 8, 2]);
    assert_eq!(ids("<think>c"), [3, 6]);
    assert_eq!(ids("\n"), [13], "\\n is respelled Ċ");
    let enc = tok.tokenizer.encode("ab", true).unwrap();
    assert_eq!(enc.get_ids(), [8], "add_bos_token is false");
    assert_eq!(tok.tokenizer.decode(&[10, 6, 12], false).unwrap(), " abc€");
    assert_eq!(tok.bos_token.as_deref(), Some("<|im_start|>"));
    assert_eq!(tok.eos_token.as_deref(), Some("<|im_end|>"));
    assert_eq!(tok.unk_token.as_deref(), Some("<|endoftext|>"));
    assert_eq!(tok.chat_template.as_deref(), Some("{{ messages }}"));
    let added: Vec<(u64, bool)> = tok.json["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_u64().unwrap(), t["special"].as_bool().unwrap()))
        .collect();
    assert_eq!(added, [(0, true), (1, true), (2, true), (3, false)]);
    assert_eq!(tok.tokenizer_config()["chat_template"], "{{ messages }}");

    // add_bos_token: the post-processor prepends BOS
    let path = tiny_file(
        dir.path(),
        "bos.gguf",
        &[("tokenizer.ggml.add_bos_token", M::Bool(true))],
        false,
    );
    let tok = GgufFile::open(&path).unwrap().tokenizer().unwrap();
    assert_eq!(tok.tokenizer.encode("ab", true).unwrap().get_ids(), [1, 8]);
    let pair = tok.tokenizer.encode(("ab", "c"), true).unwrap();
    assert_eq!(pair.get_ids(), [1, 8, 1, 6]);
    assert_eq!(pair.get_type_ids(), [0, 0, 1, 1]);

    // a Llama 3 style split
    let path = tiny_file(
        dir.path(),
        "l3.gguf",
        &[("tokenizer.ggml.pre", s("llama-bpe"))],
        false,
    );
    let tok = GgufFile::open(&path).unwrap().tokenizer().unwrap();
    assert_eq!(tok.json["pre_tokenizer"]["type"], "Sequence");
    assert_eq!(
        tok.tokenizer.encode("ab abc", false).unwrap().get_ids(),
        [8, 10, 6]
    );
    assert_eq!(tok.tokenizer.encode("abc", false).unwrap().get_ids(), [11]);
}

#[test]
fn tiny_llama_bad_metadata_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err_for = |extra: &[(&str, M)]| {
        let path = tiny_file(dir.path(), "bad.gguf", extra, false);
        let err = format!("{:#}", load_llama(&path).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
        err
    };
    assert!(err_for(&[("llama.block_count", M::U32(0))]).contains("llama.block_count is 0"));
    assert!(
        err_for(&[("llama.embedding_length", s("eight"))])
            .contains("llama.embedding_length should be a non-negative integer")
    );
    assert!(
        err_for(&[("llama.attention.head_count_kv", M::U32(3))])
            .contains("head_count (2) is not a multiple of llama.attention.head_count_kv (3)")
    );
    // heads that do not divide the hidden size, with no explicit head size
    let meta: Vec<(String, M)> = tiny_meta(&[("llama.attention.head_count", M::U32(3))])
        .into_iter()
        .filter(|(k, _)| k != "llama.rope.dimension_count" && k != "llama.attention.head_count_kv")
        .collect();
    let meta: Vec<(&str, M)> = meta.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let path = write(
        dir.path(),
        "heads.gguf",
        &gguf(3, &meta, &tiny_tensors(false).0),
    );
    let err = format!("{:#}", load_llama(&path).unwrap_err());
    assert!(
        err.contains("heads.gguf")
            && err.contains(
                "llama.embedding_length (8) is not a multiple of llama.attention.head_count (3)"
            ),
        "{err}"
    );
    // a missing field
    let meta: Vec<(String, M)> = tiny_meta(&[])
        .into_iter()
        .filter(|(k, _)| k != "llama.feed_forward_length")
        .collect();
    let meta: Vec<(&str, M)> = meta.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let path = write(
        dir.path(),
        "noffn.gguf",
        &gguf(3, &meta, &tiny_tensors(false).0),
    );
    let err = format!("{:#}", load_llama(&path).unwrap_err());
    assert!(err.contains("has no llama.feed_forward_length"), "{err}");

    // metadata that disagrees with the tensors
    assert!(
        err_for(&[("llama.feed_forward_length", M::U32(16))])
            .contains("`blk.0.ffn_gate.weight` (model.layers.0.mlp.gate_proj.weight) has shape [32, 8], but the metadata makes it [16, 8]")
    );
    assert!(err_for(&[("llama.block_count", M::U32(3))]).contains("lacks 9 tensor(s)"));
    assert!(err_for(&[("llama.block_count", M::U32(1))]).contains("belongs to layer 1"));
    assert!(err_for(&[("general.architecture", s("qwen2"))]).contains("holds a `qwen2` model"));
    assert!(
        err_for(&[("llama.rope.scaling.type", s("linear"))])
            .contains("RoPE scaling is not supported")
    );
    assert!(
        err_for(&[("tokenizer.ggml.model", s("llama"))])
            .contains("tokenizer.ggml.model is `llama`")
    );
    assert!(err_for(&[("tokenizer.ggml.pre", s("qwen2"))]).contains("`qwen2`"));
    assert!(
        err_for(&[("tokenizer.ggml.merges", strs(&["a b c"]))])
            .contains("not two tokens separated by one space")
    );
    assert!(
        err_for(&[("tokenizer.ggml.eos_token_id", M::U32(99))])
            .contains("tokenizer.ggml.eos_token_id is 99, past the 14 tokens")
    );

    // a tensor outside the mapping
    let meta = tiny_meta(&[]);
    let meta: Vec<(&str, M)> = meta.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let mut tensors = tiny_tensors(false).0;
    tensors.push(t("rope_freqs.weight", &[2], 0, f32_bytes(&[1., 1.])));
    let path = write(dir.path(), "freqs.gguf", &gguf(3, &meta, &tensors));
    let err = format!("{:#}", load_llama(&path).unwrap_err());
    assert!(
        err.contains("tensors a Llama checkpoint does not: rope_freqs.weight")
            && err.contains("not supported"),
        "{err}"
    );
}

/// A tensor in one of llama.cpp's repacked CPU layouts (Q4_0_4_4, type 31)
/// is refused by name, with what to convert it to.
#[test]
fn an_unsupported_quantisation_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = gguf(3, &[], &[t("w", &[32], 31, vec![0u8; 18])]);
    let path = write(dir.path(), "repacked.gguf", &bytes);
    let err = match GgufFile::open(&path) {
        Ok(f) => format!("{:#}", f.tensor("w").unwrap_err()),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(
        err.contains('w') && err.to_lowercase().contains("convert"),
        "{err}"
    );
}
mod real;
