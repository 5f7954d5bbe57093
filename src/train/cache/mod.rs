//! The feature cache: what a frozen prefix computes, computed once.
//!
//! When the bottom groups of a model are frozen they run in inference mode
//! (no dropout) on a deterministic input pipeline (tokenised text, no
//! augmentation), so their output is a pure function of the input. Every
//! epoch would recompute the same activations; instead they are computed
//! once per split and the trainable part trains from them.
//!
//! What is stored is only what the layers above read: every real token's
//! hidden state after the boundary layer when encoder layers still train
//! (`freeze:N`), or the [CLS] vector alone when only the head trains
//! (`head`: the pooler and classifier read nothing else). Padding is never
//! stored; batches are padded with zeros, which the attention mask hides.
//!
//! Where it lives (`--feature-cache`):
//! - `memory`: in RAM only, for this run;
//! - `disk`: a file in `--cache-dir`, read back with memory mapping;
//! - `auto` (default): in RAM when it fits `--cache-memory-mb`, else on disk;
//!   in both cases the file is kept so later runs on the same inputs (other
//!   seeds, other strategies with the same boundary) skip the computation.
//!
//! A cache file is named by its key, a SHA-256 of everything its values
//! depend on: the frozen weights, the boundary, which positions are kept,
//! the maximum length, the inputs of every example (token ids) and the
//! stored dtype, hashed again with the version of headstart and
//! [`NUMERICS_VERSION`] (another version may compute slightly different
//! values from the same inputs). The file carries a SHA-256 of its payload; a
//! file that is truncated or does not match is reported, deleted and rebuilt,
//! never used. Files are written to a temporary name and renamed.
//!
//! The cache directory is kept under [`Request::max_bytes`]: after a new file
//! is written, the least recently used files (by modification time; reading
//! a file touches it) are deleted until the directory fits, never the file
//! just written. [`list`] and [`clear`] serve `headstart cache list|clear`.
//!
//! File layout: `HSFEAT01`, a little-endian u64 header length, the JSON
//! header, zero padding to a multiple of 64 bytes, the payload (rows of
//! `hidden` values, little-endian f32 or f16, example after example),
//! the seconds it took to compute (f64), then the 32-byte SHA-256 of the
//! payload.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Tensor, TensorData};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::models::Flow;

mod dir;
mod file;
#[cfg(test)]
mod tests;

use dir::evict;
pub use dir::{Entry, clear, list};
use file::*;

const MAGIC: &[u8; 8] = b"HSFEAT01";
const ALIGN: usize = 64;
/// Examples computed (and buffered) together while a cache is built.
const CHUNK: usize = 256;
/// Extension of cache files.
const EXTENSION: &str = "feat";

/// Version of what a cache file holds for given inputs: bump it when the file
/// layout changes or when the frozen layers' numerics change (kernels,
/// summation order, pooling), so files of the old numerics are not reused.
/// File names hash it, together with the crate version.
pub const NUMERICS_VERSION: u32 = 1;

/// Default of [`Request::max_bytes`]: 10 GB of cache files per directory.
pub const DEFAULT_MAX_BYTES: u64 = 10_000_000_000;

/// `--feature-cache`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// In memory within the budget, else on disk; kept on disk for reuse.
    #[default]
    Auto,
    /// Recompute the frozen prefix at every step.
    Off,
    /// In memory only.
    Memory,
    /// On disk, memory-mapped.
    Disk,
}

/// `--cache-dtype`: how values are stored on disk. f32 is exact; f16 halves
/// the size and rounds each value (relative error up to 2^-11).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CacheDtype {
    #[default]
    F32,
    F16,
}

impl CacheDtype {
    fn bytes(self) -> usize {
        match self {
            CacheDtype::F32 => 4,
            CacheDtype::F16 => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            CacheDtype::F32 => "f32",
            CacheDtype::F16 => "f16",
        }
    }
}

pub use crate::models::Positions;

/// Hashes the inputs a cache depends on into its key.
#[derive(Clone)]
pub struct KeyHasher(Sha256);

impl Default for KeyHasher {
    fn default() -> Self {
        let mut h = Sha256::new();
        h.update(MAGIC);
        Self(h)
    }
}

impl KeyHasher {
    /// A labelled field: the label keeps fields from running into each other.
    pub fn field(&mut self, label: &str, bytes: &[u8]) -> &mut Self {
        self.0.update((label.len() as u64).to_le_bytes());
        self.0.update(label.as_bytes());
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    pub fn floats(&mut self, label: &str, values: &[f32]) -> &mut Self {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.field(label, &bytes)
    }

    /// A named tensor: its shape and values.
    pub fn tensor(&mut self, name: &str, shape: &[usize], values: &[f32]) -> &mut Self {
        let dims: Vec<u8> = shape
            .iter()
            .flat_map(|d| (*d as u64).to_le_bytes())
            .collect();
        self.field(name, &dims).floats(name, values)
    }

    /// Token ids and segment ids of every example, in order.
    pub fn examples(&mut self, lengths_and_ids: &[(&[u32], &[u32])]) -> &mut Self {
        let mut bytes = Vec::new();
        for (ids, types) in lengths_and_ids {
            bytes.extend((ids.len() as u32).to_le_bytes());
            for v in ids.iter().chain(types.iter()) {
                bytes.extend(v.to_le_bytes());
            }
        }
        self.field("examples", &bytes)
    }

    pub fn hex(&self) -> String {
        hex(&self.0.clone().finalize())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Frozen-prefix outputs of one split, example by example.
pub struct Features {
    hidden: usize,
    positions: Positions,
    /// Row offsets: example i owns rows `offsets[i]..offsets[i + 1]`.
    offsets: Vec<usize>,
    store: Store,
}

enum Store {
    Memory(Vec<f32>),
    Mapped {
        map: Mmap,
        start: usize,
        dtype: CacheDtype,
    },
}

impl Features {
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stored positions of example `i`.
    pub fn rows(&self, i: usize) -> usize {
        self.offsets[i + 1] - self.offsets[i]
    }

    /// Copies example `i`'s rows into `out` (`rows(i) * hidden` values).
    fn copy_rows(&self, i: usize, out: &mut [f32]) {
        let (a, b) = (
            self.offsets[i] * self.hidden,
            self.offsets[i + 1] * self.hidden,
        );
        match &self.store {
            Store::Memory(v) => out.copy_from_slice(&v[a..b]),
            Store::Mapped { map, start, dtype } => {
                let w = dtype.bytes();
                let bytes = &map[start + a * w..start + b * w];
                decode(bytes, *dtype, out);
            }
        }
    }

    /// The batch of examples `idx` as the layers above the boundary read it:
    /// hidden states padded with zeros to the longest example, with the mask
    /// (one position, the first, for [`Positions::First`]); pooled vectors
    /// or feature maps as they are.
    pub fn batch(&self, idx: &[usize], device: &Device) -> Flow {
        let h = self.hidden;
        let b = idx.len();
        match self.positions {
            Positions::All | Positions::Sequence { .. } => {
                let s = idx.iter().map(|&i| self.rows(i)).max().unwrap_or(0);
                let mut x = vec![0f32; b * s * h];
                let mut mask = vec![0f32; b * s];
                for (row, &i) in idx.iter().enumerate() {
                    let n = self.rows(i);
                    self.copy_rows(i, &mut x[row * s * h..(row * s + n) * h]);
                    mask[row * s..row * s + n].fill(1.0);
                }
                Flow::Hidden {
                    x: Tensor::from_data(TensorData::new(x, [b, s, h]), device),
                    mask: Tensor::from_data(TensorData::new(mask, [b, s]), device),
                }
            }
            fixed => {
                // one row per example
                let mut x = vec![0f32; b * h];
                for (row, &i) in idx.iter().enumerate() {
                    self.copy_rows(i, &mut x[row * h..(row + 1) * h]);
                }
                match fixed {
                    Positions::Map {
                        channels,
                        height,
                        width,
                    } => Flow::Maps(Tensor::from_data(
                        TensorData::new(x, [b, channels, height, width]),
                        device,
                    )),
                    Positions::Vector => {
                        Flow::Pooled(Tensor::from_data(TensorData::new(x, [b, h]), device))
                    }
                    _ => Flow::Hidden {
                        x: Tensor::from_data(TensorData::new(x, [b, 1, h]), device),
                        mask: Tensor::ones([b, 1], device),
                    },
                }
            }
        }
    }
}

/// One split's request: its key and the rows each example keeps.
pub struct Request<'a> {
    pub mode: CacheMode,
    pub dir: &'a Path,
    pub dtype: CacheDtype,
    /// Bytes `auto` may hold in memory.
    pub memory_budget: u64,
    /// Bytes the cache files in `dir` may take together; after a new file is
    /// written the least recently used others are deleted until they fit
    /// (usually [`DEFAULT_MAX_BYTES`]).
    pub max_bytes: u64,
    pub key: String,
    pub positions: Positions,
    pub hidden: usize,
    /// Real tokens of each example.
    pub lengths: Vec<usize>,
}

/// How a cache was obtained, for the log and the cost report.
#[derive(Clone, Debug, Serialize)]
pub struct CacheReport {
    /// "memory" or "disk".
    pub location: String,
    pub file: Option<PathBuf>,
    pub dtype: CacheDtype,
    pub bytes: u64,
    pub examples: usize,
    /// Computed now (false: read from an existing file).
    pub built: bool,
    /// Seconds to compute (or read and verify) it now.
    pub seconds: f64,
    /// Seconds its computation took when it was built (now or by an earlier run).
    pub compute_seconds: f64,
    /// Why an existing file was not used, when it was not.
    pub rejected: Option<String>,
    /// Older cache files deleted to keep the directory under its size cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evicted: Option<String>,
}

impl CacheReport {
    pub fn describe(&self) -> String {
        let how = if self.built { "computed" } else { "read" };
        let mb = self.bytes as f64 / 1e6;
        let place = match &self.file {
            Some(f) if self.location == "disk" => format!("on disk ({})", f.display()),
            Some(f) => format!("in memory, kept at {}", f.display()),
            None => "in memory".to_string(),
        };
        let mut line = format!(
            "{} examples, {mb:.1} MB {} {place}, {how} in {:.1} s",
            self.examples,
            self.dtype.name(),
            self.seconds
        );
        if let Some(evicted) = &self.evicted {
            line.push_str("; ");
            line.push_str(evicted);
        }
        line
    }
}

/// The cache for `req`: read from its file when one is there and intact,
/// else computed with `compute` and stored. `compute` gets a batch of
/// example indices (sorted by length) and returns the frozen output as a
/// host array `[batch, seq, hidden]` (`seq` = the longest of the batch) or,
/// for [`Positions::First`], `[batch, hidden]`.
pub fn get_or_build(
    req: &Request<'_>,
    batch_size: usize,
    mut compute: impl FnMut(&[usize]) -> Result<Vec<f32>>,
) -> Result<(Features, CacheReport)> {
    let started = Instant::now();
    let rows: Vec<usize> = match req.positions {
        Positions::All => req.lengths.clone(),
        Positions::Sequence { len } => vec![len; req.lengths.len()],
        _ => vec![1; req.lengths.len()],
    };
    let mut offsets = vec![0usize];
    for r in &rows {
        offsets.push(offsets.last().unwrap() + r);
    }
    let values = offsets.last().unwrap() * req.hidden;
    let f32_bytes = values as u64 * 4;
    let in_memory = match req.mode {
        CacheMode::Memory => true,
        CacheMode::Disk => false,
        CacheMode::Auto => f32_bytes <= req.memory_budget,
        CacheMode::Off => bail!("the feature cache is off"),
    };
    // Memory-only caches are exact f32; files use the requested dtype.
    let dtype = if req.mode == CacheMode::Memory {
        CacheDtype::F32
    } else {
        req.dtype
    };
    let key = file_key(&req.key, env!("CARGO_PKG_VERSION"), NUMERICS_VERSION);
    let header = Header {
        key: key.clone(),
        dtype,
        hidden: req.hidden,
        positions: req.positions,
        rows,
    };
    let file = (req.mode != CacheMode::Memory).then(|| req.dir.join(format!("{key}.{EXTENSION}")));
    let mut report = CacheReport {
        location: if in_memory { "memory" } else { "disk" }.into(),
        file: file.clone(),
        dtype,
        bytes: values as u64 * dtype.bytes() as u64,
        examples: req.lengths.len(),
        built: false,
        seconds: 0.0,
        compute_seconds: 0.0,
        rejected: None,
        evicted: None,
    };
    let features = |store| Features {
        hidden: req.hidden,
        positions: req.positions,
        offsets: offsets.clone(),
        store,
    };

    if let Some(path) = &file {
        match open_file(path, &header) {
            Ok(Some((store, compute_seconds))) => {
                touch(path);
                report.compute_seconds = compute_seconds;
                let store = if in_memory {
                    to_memory(store, values)
                } else {
                    store
                };
                report.seconds = started.elapsed().as_secs_f64();
                return Ok((features(store), report));
            }
            Ok(None) => {}
            Err(why) => {
                let _ = std::fs::remove_file(path);
                report.rejected = Some(format!("{}: {why:#}; rebuilt", path.display()));
            }
        }
    }

    report.built = true;
    let mut sink = match &file {
        Some(path) => Sink::File(FileSink::create(path, &header)?),
        None => Sink::Memory(Vec::with_capacity(values)),
    };
    let mut buffer = Vec::new();
    let n = req.lengths.len();
    for start in (0..n).step_by(CHUNK) {
        let end = (start + CHUNK).min(n);
        let chunk_rows = offsets[end] - offsets[start];
        buffer.clear();
        buffer.resize(chunk_rows * req.hidden, 0f32);
        let mut order: Vec<usize> = (start..end).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(req.lengths[i]));
        for batch in order.chunks(batch_size.max(1)) {
            let out = compute(batch)?;
            let seq = batch.iter().map(|&i| req.lengths[i]).max().unwrap_or(0);
            let per_example = match req.positions {
                Positions::All => seq * req.hidden,
                Positions::Sequence { len } => len * req.hidden,
                _ => req.hidden,
            };
            if out.len() != batch.len() * per_example {
                bail!(
                    "frozen prefix returned {} values for a batch of {} (expected {})",
                    out.len(),
                    batch.len(),
                    batch.len() * per_example
                );
            }
            for (row, &i) in batch.iter().enumerate() {
                let keep = (offsets[i + 1] - offsets[i]) * req.hidden;
                let dst = (offsets[i] - offsets[start]) * req.hidden;
                let src = row * per_example;
                buffer[dst..dst + keep].copy_from_slice(&out[src..src + keep]);
            }
        }
        sink.append(&buffer, dtype)?;
    }
    let store = match sink {
        Sink::Memory(v) => Store::Memory(v),
        Sink::File(f) => {
            let path = f.finish(started.elapsed().as_secs_f64())?;
            let (store, _) = open_file(&path, &header)?
                .with_context(|| format!("{} vanished after writing", path.display()))?;
            report.evicted = match evict(req.dir, req.max_bytes, &path) {
                Ok((0, _)) => None,
                Ok((files, bytes)) => Some(format!(
                    "deleted {files} least recently used cache file(s) ({:.1} MB) to keep {} \
                     under {:.1} GB",
                    bytes as f64 / 1e6,
                    req.dir.display(),
                    req.max_bytes as f64 / 1e9
                )),
                Err(e) => Some(format!("could not delete older cache files: {e:#}")),
            };
            if in_memory {
                to_memory(store, values)
            } else {
                store
            }
        }
    };
    report.seconds = started.elapsed().as_secs_f64();
    report.compute_seconds = report.seconds;
    Ok((features(store), report))
}

fn to_memory(store: Store, values: usize) -> Store {
    match store {
        Store::Mapped { map, start, dtype } => {
            let mut v = vec![0f32; values];
            decode(&map[start..start + values * dtype.bytes()], dtype, &mut v);
            Store::Memory(v)
        }
        s => s,
    }
}
