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
//! the tokenizer files, the maximum length, the token ids of every example
//! and the stored dtype, hashed again with the version of headstart and
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
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Tensor, TensorData};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::models::Flow;

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
    /// (one position, the first, for [`Positions::First`]).
    pub fn batch(&self, idx: &[usize], device: &Device) -> Flow {
        let h = self.hidden;
        let b = idx.len();
        match self.positions {
            Positions::First => {
                let mut x = vec![0f32; b * h];
                for (row, &i) in idx.iter().enumerate() {
                    self.copy_rows(i, &mut x[row * h..(row + 1) * h]);
                }
                Flow::Hidden {
                    x: Tensor::from_data(TensorData::new(x, [b, 1, h]), device),
                    mask: Tensor::ones([b, 1], device),
                }
            }
            Positions::All => {
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
        }
    }
}

fn decode(bytes: &[u8], dtype: CacheDtype, out: &mut [f32]) {
    match dtype {
        CacheDtype::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        CacheDtype::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
    }
}

fn encode(values: &[f32], dtype: CacheDtype, out: &mut Vec<u8>) {
    match dtype {
        CacheDtype::F32 => {
            for v in values {
                out.extend(v.to_le_bytes());
            }
        }
        CacheDtype::F16 => {
            for v in values {
                out.extend(half::f16::from_f32(*v).to_le_bytes());
            }
        }
    }
}

/// What a cache file's header records.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Header {
    key: String,
    dtype: CacheDtype,
    hidden: usize,
    positions: Positions,
    rows: Vec<usize>,
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
        Positions::First => vec![1; req.lengths.len()],
        Positions::All => req.lengths.clone(),
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
                Positions::First => req.hidden,
                Positions::All => seq * req.hidden,
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

enum Sink {
    Memory(Vec<f32>),
    File(FileSink),
}

impl Sink {
    fn append(&mut self, values: &[f32], dtype: CacheDtype) -> Result<()> {
        match self {
            Sink::Memory(v) => v.extend_from_slice(values),
            Sink::File(f) => {
                let mut bytes = Vec::with_capacity(values.len() * dtype.bytes());
                encode(values, dtype, &mut bytes);
                f.hasher.update(&bytes);
                f.out
                    .write_all(&bytes)
                    .with_context(|| format!("cannot write {}", f.tmp.display()))?;
            }
        }
        Ok(())
    }
}

/// A cache file being written under a temporary name.
struct FileSink {
    out: BufWriter<File>,
    hasher: Sha256,
    tmp: PathBuf,
    path: PathBuf,
}

impl FileSink {
    fn create(path: &Path, header: &Header) -> Result<Self> {
        let dir = path.parent().context("cache file has no directory")?;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the cache directory {}", dir.display()))?;
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let file = File::create(&tmp)
            .with_context(|| format!("cannot create cache file {}", tmp.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let json = serde_json::to_vec(header)?;
        let mut head = Vec::new();
        head.extend(MAGIC);
        head.extend((json.len() as u64).to_le_bytes());
        head.extend(&json);
        head.resize(head.len().div_ceil(ALIGN) * ALIGN, 0);
        out.write_all(&head)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        Ok(Self {
            out,
            hasher: Sha256::new(),
            tmp,
            path: path.to_path_buf(),
        })
    }

    fn finish(mut self, seconds: f64) -> Result<PathBuf> {
        let result = (|| -> Result<()> {
            let digest = self.hasher.clone().finalize();
            self.out.write_all(&seconds.to_le_bytes())?;
            self.out.write_all(&digest)?;
            let file = self.out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            std::fs::rename(&self.tmp, &self.path)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        result.with_context(|| format!("cannot write cache file {}", self.path.display()))?;
        Ok(self.path)
    }
}

/// Opens and verifies a cache file: `Ok(None)` when there is none, an error
/// saying what is wrong when it does not match `expected` or its checksum;
/// with the store, the seconds its computation took.
fn open_file(path: &Path, expected: &Header) -> Result<Option<(Store, f64)>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    // SAFETY: cache files are only ever replaced by rename, never written in
    // place, so the mapped file does not change under us.
    let map = unsafe { Mmap::map(&file) }.context("cannot map the file")?;
    let header_end = header_end(&map, map.len() as u64)?;
    let header: Header =
        serde_json::from_slice(&map[16..header_end]).context("unreadable header")?;
    if header != *expected {
        bail!("its header does not describe these inputs");
    }
    let start = header_end
        .checked_next_multiple_of(ALIGN)
        .context("damaged: its header is too long")?;
    let end = payload_bytes(&header)
        .and_then(|p| start.checked_add(p))
        .context("damaged: its header implies a payload too large to address")?;
    let total = end
        .checked_add(8 + 32)
        .context("damaged: its header implies a payload too large to address")?;
    if map.len() != total {
        bail!(
            "it has {} bytes, its header implies {total}: truncated or damaged",
            map.len()
        );
    }
    let digest = Sha256::digest(&map[start..end]);
    if digest.as_slice() != &map[end + 8..] {
        bail!("checksum mismatch: the payload is damaged");
    }
    let seconds = f64::from_le_bytes(map[end..end + 8].try_into().unwrap());
    let store = Store::Mapped {
        map,
        start,
        dtype: header.dtype,
    };
    Ok(Some((store, seconds)))
}

/// Where the JSON header of a cache file ends, from the file's first 16
/// bytes (`prefix`, the magic and the header length) and its size; the
/// header length read from the file is checked against the size, so a
/// damaged one is an error, not an overflow or an out-of-bounds slice.
fn header_end(prefix: &[u8], file_len: u64) -> Result<usize> {
    if prefix.len() < 16 || &prefix[..8] != MAGIC {
        bail!("not a feature-cache file (bad magic)");
    }
    let declared = u64::from_le_bytes(prefix[8..16].try_into().unwrap());
    declared
        .checked_add(16)
        .filter(|&end| end <= file_len)
        .and_then(|end| usize::try_from(end).ok())
        .with_context(|| {
            format!(
                "damaged or truncated header: its length field says {declared} bytes, but the \
                 file has {file_len} bytes in all"
            )
        })
}

/// Payload bytes a header describes, `None` if that overflows.
fn payload_bytes(header: &Header) -> Option<usize> {
    header
        .rows
        .iter()
        .try_fold(0usize, |sum, &r| sum.checked_add(r))?
        .checked_mul(header.hidden)?
        .checked_mul(header.dtype.bytes())
}

/// The name (without extension) of the cache file for the caller's `key`:
/// the key hashed with the crate version and the numerics version, so that
/// another version of headstart never reads a file this one wrote.
fn file_key(key: &str, crate_version: &str, numerics: u32) -> String {
    KeyHasher::default()
        .field("key", key.as_bytes())
        .field("crate version", crate_version.as_bytes())
        .field("numerics version", &numerics.to_le_bytes())
        .hex()
}

/// Marks a cache file as just used: eviction goes by modification time.
/// Best effort: a file this user may not touch keeps its older time.
fn touch(path: &Path) {
    if let Ok(file) = File::options().write(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// A cache file in a cache directory, as [`list`] reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub path: PathBuf,
    pub bytes: u64,
    /// When it was last written or read (its modification time).
    pub last_used: SystemTime,
    /// Examples it holds, from its header; `None` for this and the next two
    /// fields when the header is unreadable (the file is damaged, and would
    /// be rebuilt when next needed).
    pub examples: Option<usize>,
    /// Values per stored row (the model's hidden size).
    pub hidden: Option<usize>,
    pub dtype: Option<CacheDtype>,
}

/// The cache files (`*.feat`) directly in `dir` with their sizes and
/// modification times; none when `dir` does not exist.
fn cache_files(dir: &Path) -> Result<Vec<(PathBuf, u64, SystemTime)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != EXTENSION) {
            continue;
        }
        // Gone since it was listed (another run evicted it), or not a file.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        files.push((path, meta.len(), modified));
    }
    Ok(files)
}

/// The header of the cache file at `path`, read without mapping the file.
fn read_header(path: &Path, file_len: u64) -> Result<Header> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut prefix = [0u8; 16];
    file.read_exact(&mut prefix)
        .context("not a feature-cache file (too short)")?;
    let end = header_end(&prefix, file_len)?;
    let mut json = vec![0u8; end - 16];
    file.read_exact(&mut json).context("truncated header")?;
    serde_json::from_slice(&json).context("unreadable header")
}

/// The cache files in `dir`, most recently used first.
pub fn list(dir: &Path) -> Result<Vec<Entry>> {
    let mut entries: Vec<Entry> = cache_files(dir)?
        .into_iter()
        .map(|(path, bytes, last_used)| {
            let header = read_header(&path, bytes).ok();
            Entry {
                examples: header.as_ref().map(|h| h.rows.len()),
                hidden: header.as_ref().map(|h| h.hidden),
                dtype: header.as_ref().map(|h| h.dtype),
                path,
                bytes,
                last_used,
            }
        })
        .collect();
    entries.sort_by(|a, b| {
        b.last_used
            .cmp(&a.last_used)
            .then_with(|| a.path.cmp(&b.path))
    });
    Ok(entries)
}

/// Deletes every cache file in `dir`, and temporary files that interrupted
/// runs left there; returns how many files and bytes were deleted. Other
/// files are left alone. Meant for when no run is writing to `dir`.
pub fn clear(dir: &Path) -> Result<(usize, u64)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    let (mut files, mut bytes) = (0, 0);
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let path = entry.path();
        let ours = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            e == EXTENSION
                || e.strip_prefix("tmp-")
                    .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        });
        let Ok(meta) = entry.metadata() else { continue };
        if !ours || !meta.is_file() {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                files += 1;
                bytes += meta.len();
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot delete {}", path.display())),
        }
    }
    Ok((files, bytes))
}

/// Deletes the least recently used cache files in `dir` until those left
/// take at most `max_bytes`, never `keep` (the file just written); returns
/// how many files and bytes were deleted.
fn evict(dir: &Path, max_bytes: u64, keep: &Path) -> Result<(usize, u64)> {
    let mut files = cache_files(dir)?;
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    if total <= max_bytes {
        return Ok((0, 0));
    }
    files.sort_by(|a, b| a.2.cmp(&b.2).then_with(|| a.0.cmp(&b.0)));
    let (mut count, mut freed) = (0, 0);
    for (path, bytes, _) in files {
        if total <= max_bytes {
            break;
        }
        if path == keep {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                count += 1;
                freed += bytes;
            }
            // Another run deleted it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot delete {}", path.display())),
        }
        total = total.saturating_sub(bytes);
    }
    Ok((count, freed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        Device::default()
    }

    /// A fake frozen prefix: value = example * 1000 + position * 10 + channel / 8.
    fn fake(lengths: &[usize], hidden: usize, positions: Positions, idx: &[usize]) -> Vec<f32> {
        let seq = idx.iter().map(|&i| lengths[i]).max().unwrap_or(0);
        let mut out = Vec::new();
        for &i in idx {
            let n = match positions {
                Positions::First => 1,
                Positions::All => seq,
            };
            for p in 0..n {
                for c in 0..hidden {
                    let pad = p >= lengths[i];
                    out.push(if pad {
                        -7.0
                    } else {
                        (i * 1000 + p * 10) as f32 + c as f32 / 8.0
                    });
                }
            }
        }
        out
    }

    fn request(
        dir: &Path,
        mode: CacheMode,
        dtype: CacheDtype,
        positions: Positions,
    ) -> Request<'_> {
        Request {
            mode,
            dir,
            dtype,
            memory_budget: 1 << 30,
            max_bytes: DEFAULT_MAX_BYTES,
            key: format!("k-{mode:?}-{dtype:?}-{positions:?}"),
            positions,
            hidden: 4,
            lengths: vec![3, 1, 5, 2, 4],
        }
    }

    fn build(req: &Request<'_>) -> (Features, CacheReport, usize) {
        let mut calls = 0;
        let (f, r) = get_or_build(req, 2, |idx| {
            calls += 1;
            Ok(fake(&req.lengths, req.hidden, req.positions, idx))
        })
        .unwrap();
        (f, r, calls)
    }

    fn values(f: &Features, idx: &[usize]) -> (Vec<usize>, Vec<f32>, Vec<f32>) {
        match f.batch(idx, &device()) {
            Flow::Hidden { x, mask } => {
                let (s, v) = crate::models::params::host(&x);
                (s, v, crate::models::params::host(&mask).1)
            }
            other => panic!("a cache holds hidden states, not {other:?}"),
        }
    }

    #[test]
    fn batches_hold_real_tokens_and_zero_padding() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [CacheMode::Memory, CacheMode::Disk, CacheMode::Auto] {
            let req = request(dir.path(), mode, CacheDtype::F32, Positions::All);
            let (f, report, calls) = build(&req);
            assert_eq!(calls, 3, "5 examples in batches of 2");
            assert!(report.built);
            assert_eq!(report.bytes, (3 + 1 + 5 + 2 + 4) * 4 * 4);
            let (shape, x, mask) = values(&f, &[1, 0]);
            assert_eq!(shape, vec![2, 3, 4]);
            // example 1: one real token, then zeros (not the prefix's -7 padding)
            assert_eq!(&x[..4], &[1000.0, 1000.125, 1000.25, 1000.375]);
            assert!(x[4..12].iter().all(|&v| v == 0.0));
            // example 0, position 2, channel 3
            assert_eq!(x[12 + 2 * 4 + 3], 20.375);
            assert_eq!(mask, vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        }
    }

    #[test]
    fn first_position_only_for_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(
            dir.path(),
            CacheMode::Disk,
            CacheDtype::F32,
            Positions::First,
        );
        let (f, report, _) = build(&req);
        assert_eq!(report.bytes, 5 * 4 * 4);
        let (shape, x, mask) = values(&f, &[4, 2]);
        assert_eq!(shape, vec![2, 1, 4]);
        assert_eq!(mask, vec![1.0, 1.0]);
        assert_eq!(
            x,
            vec![
                4000.0, 4000.125, 4000.25, 4000.375, 2000.0, 2000.125, 2000.25, 2000.375
            ]
        );
    }

    #[test]
    fn a_file_is_reused_and_a_damaged_one_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path(), CacheMode::Disk, CacheDtype::F32, Positions::All);
        let (_, first, calls) = build(&req);
        assert!(first.built && calls > 0);
        let path = first.file.clone().unwrap();
        let (f, second, calls) = build(&req);
        assert!(
            !second.built && calls == 0,
            "an intact file is read, not recomputed"
        );
        assert_eq!(values(&f, &[2]).1[4 * 4], 2040.0);

        // flip one payload byte: the checksum catches it
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 50] ^= 0x55;
        std::fs::write(&path, &bytes).unwrap();
        let (f, third, calls) = build(&req);
        assert!(third.built && calls > 0);
        assert!(
            third.rejected.as_ref().unwrap().contains("checksum"),
            "{:?}",
            third.rejected
        );
        assert_eq!(values(&f, &[2]).1[4 * 4], 2040.0);

        // truncate it
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let (_, fourth, calls) = build(&req);
        assert!(fourth.built && calls > 0);
        assert!(fourth.rejected.unwrap().contains("truncated"));

        // a header for other inputs (same file name) is not trusted either
        let mut other = request(dir.path(), CacheMode::Disk, CacheDtype::F32, Positions::All);
        other.lengths = vec![3, 1, 5, 2, 3];
        let (_, fifth, calls) = build(&other);
        assert!(fifth.built && calls > 0);
        assert!(fifth.rejected.unwrap().contains("header"));
        // no temporary files are left behind
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| n.ends_with(".feat")), "{names:?}");
    }

    #[test]
    fn auto_goes_to_disk_beyond_the_memory_budget() {
        let dir = tempfile::tempdir().unwrap();
        let mut req = request(dir.path(), CacheMode::Auto, CacheDtype::F16, Positions::All);
        req.memory_budget = 100;
        let (f, report, _) = build(&req);
        assert_eq!(report.location, "disk");
        assert_eq!(report.bytes, 15 * 4 * 2);
        assert!(matches!(f.store, Store::Mapped { .. }));
        // f16 rounds: 4020.375 has no f16 representation; the nearest is 4020.0
        let x = values(&f, &[4]).1;
        assert_eq!(x[2 * 4 + 3], 4020.0);
        assert_eq!(x[0], 4000.0);
        req.memory_budget = 1 << 20;
        let (f, report, calls) = build(&req);
        assert_eq!((report.location.as_str(), calls), ("memory", 0));
        assert!(matches!(f.store, Store::Memory(_)));
    }

    #[test]
    fn memory_mode_writes_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(
            dir.path(),
            CacheMode::Memory,
            CacheDtype::F16,
            Positions::All,
        );
        let (_, report, _) = build(&req);
        assert_eq!(report.dtype, CacheDtype::F32);
        assert!(report.file.is_none());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_damaged_header_length_is_reported_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path(), CacheMode::Disk, CacheDtype::F32, Positions::All);
        let (_, first, _) = build(&req);
        let path = first.file.unwrap();
        let good = std::fs::read(&path).unwrap();
        let len = good.len() as u64;
        for declared in [u64::MAX, u64::MAX - 15, len - 15, 1 << 40] {
            let mut bytes = good.clone();
            bytes[8..16].copy_from_slice(&declared.to_le_bytes());
            std::fs::write(&path, &bytes).unwrap();
            let (f, report, calls) = build(&req);
            assert!(report.built && calls == 3, "{declared}: rebuilt");
            let why = report.rejected.unwrap();
            assert!(
                why.contains(&format!("its length field says {declared} bytes"))
                    && why.contains(&format!("the file has {len} bytes"))
                    && why.contains("rebuilt"),
                "{why}"
            );
            assert_eq!(values(&f, &[2]).1[4 * 4], 2040.0);
            let rebuilt = std::fs::read(&path).unwrap();
            assert_eq!(rebuilt.len(), good.len(), "{declared}: rewritten");
            assert_eq!(rebuilt[8..16], good[8..16]);
        }
        // Too short to hold a header length at all.
        std::fs::write(&path, &good[..12]).unwrap();
        let (_, report, calls) = build(&req);
        assert!(report.built && calls == 3);
        assert!(report.rejected.unwrap().contains("bad magic"));
    }

    #[test]
    fn file_names_carry_the_code_version() {
        let version = env!("CARGO_PKG_VERSION");
        let k = |v, n| file_key("the inputs", v, n);
        assert_eq!(k(version, NUMERICS_VERSION).len(), 64);
        assert_eq!(k(version, NUMERICS_VERSION), k(version, NUMERICS_VERSION));
        assert_ne!(
            k(version, NUMERICS_VERSION),
            k("0.0.0-other", NUMERICS_VERSION)
        );
        assert_ne!(
            k(version, NUMERICS_VERSION),
            k(version, NUMERICS_VERSION + 1)
        );
        assert_ne!(
            k(version, NUMERICS_VERSION),
            file_key("other inputs", version, NUMERICS_VERSION)
        );

        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path(), CacheMode::Disk, CacheDtype::F32, Positions::All);
        let (_, report, _) = build(&req);
        let name = format!("{}.feat", file_key(&req.key, version, NUMERICS_VERSION));
        assert_eq!(report.file.unwrap(), dir.path().join(name));
        assert!(!dir.path().join(format!("{}.feat", req.key)).exists());
    }

    fn set_last_used(path: &Path, seconds_ago: u64) {
        let t = SystemTime::now() - std::time::Duration::from_secs(seconds_ago);
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    fn last_used(path: &Path) -> SystemTime {
        std::fs::metadata(path).unwrap().modified().unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn least_recently_used_files_are_evicted_beyond_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let request_for = |key: &str, max_bytes: u64| {
            let mut req = request(dir.path(), CacheMode::Disk, CacheDtype::F32, Positions::All);
            req.key = key.into();
            req.max_bytes = max_bytes;
            req
        };
        let file_of = |key: &str| {
            let name = file_key(key, env!("CARGO_PKG_VERSION"), NUMERICS_VERSION);
            dir.path().join(format!("{name}.feat"))
        };
        let name_of = |key: &str| {
            file_of(key)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };
        for key in ["a", "b", "c"] {
            let (_, report, _) = build(&request_for(key, u64::MAX));
            assert!(report.evicted.is_none());
        }
        let size = std::fs::metadata(file_of("a")).unwrap().len();
        assert!(
            ["b", "c"]
                .iter()
                .all(|k| std::fs::metadata(file_of(k)).unwrap().len() == size)
        );
        set_last_used(&file_of("a"), 300);
        set_last_used(&file_of("b"), 200);
        set_last_used(&file_of("c"), 100);

        // Reading `a` makes it the most recently used.
        let (_, report, calls) = build(&request_for("a", u64::MAX));
        assert!(!report.built && calls == 0);
        assert!(last_used(&file_of("a")) > last_used(&file_of("c")));

        // A fourth file with room for two: `b` and `c` go, `a` and `d` stay.
        let (f, report, _) = build(&request_for("d", 2 * size));
        let mut want = vec![name_of("a"), name_of("d")];
        want.sort();
        assert_eq!(names(dir.path()), want);
        let evicted = report.evicted.clone().unwrap();
        assert!(
            evicted.contains(&format!(
                "deleted 2 least recently used cache file(s) ({:.1} MB)",
                (2 * size) as f64 / 1e6
            )),
            "{evicted}"
        );
        assert!(report.describe().ends_with(&evicted));
        assert_eq!(values(&f, &[2]).1[4 * 4], 2040.0);

        // A cap smaller than the new file alone: everything else goes, never it.
        let (f, report, _) = build(&request_for("e", 0));
        assert_eq!(names(dir.path()), vec![name_of("e")]);
        assert!(report.evicted.unwrap().contains("deleted 2 "));
        assert_eq!(values(&f, &[2]).1[4 * 4], 2040.0);
    }

    #[test]
    fn list_and_clear_the_cache_dir() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut head = request(d, CacheMode::Disk, CacheDtype::F32, Positions::First);
        head.key = "head".into();
        let head = build(&head).1.file.unwrap();
        let mut layers = request(d, CacheMode::Disk, CacheDtype::F16, Positions::All);
        layers.key = "layers".into();
        let layers = build(&layers).1.file.unwrap();
        let broken = d.join("broken.feat");
        let mut bytes = MAGIC.to_vec();
        bytes.extend(u64::MAX.to_le_bytes());
        std::fs::write(&broken, &bytes).unwrap();
        std::fs::write(d.join("x.tmp-4242"), b"partial").unwrap();
        std::fs::write(d.join("notes.txt"), b"mine").unwrap();
        set_last_used(&head, 100);
        set_last_used(&broken, 50);
        set_last_used(&layers, 10);

        let entries = list(d).unwrap();
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert_eq!(
            entries
                .iter()
                .map(|e| (e.path.clone(), e.bytes, e.examples, e.hidden, e.dtype))
                .collect::<Vec<_>>(),
            vec![
                (
                    layers.clone(),
                    size(&layers),
                    Some(5),
                    Some(4),
                    Some(CacheDtype::F16)
                ),
                (broken.clone(), 16, None, None, None),
                (
                    head.clone(),
                    size(&head),
                    Some(5),
                    Some(4),
                    Some(CacheDtype::F32)
                ),
            ]
        );
        assert!(entries[0].last_used > entries[1].last_used);
        assert!(entries[1].last_used > entries[2].last_used);
        // Listing is not using: the times are unchanged.
        assert_eq!(entries[2].last_used, last_used(&head));

        let freed = size(&head) + size(&layers) + 16 + 7;
        assert_eq!(clear(d).unwrap(), (4, freed));
        assert_eq!(names(d), vec!["notes.txt".to_string()]);
        assert!(list(d).unwrap().is_empty());
        assert_eq!(clear(&d.join("absent")).unwrap(), (0, 0));
        assert!(list(&d.join("absent")).unwrap().is_empty());
    }

    #[test]
    fn keys_separate_fields() {
        let mut a = KeyHasher::default();
        a.field("a", b"bc");
        let mut b = KeyHasher::default();
        b.field("ab", b"c");
        assert_ne!(a.hex(), b.hex());
        let mut c = KeyHasher::default();
        c.field("a", b"bc");
        assert_eq!(a.hex(), c.hex());
        assert_eq!(a.hex().len(), 64);
    }
}
