//! The cache file: its layout, writing it to a temporary name and renaming
//! it, and reading it back with its header and checksum verified.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::*;

pub(super) fn decode(bytes: &[u8], dtype: CacheDtype, out: &mut [f32]) {
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

pub(super) fn encode(values: &[f32], dtype: CacheDtype, out: &mut Vec<u8>) {
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
pub(super) struct Header {
    pub(super) key: String,
    pub(super) dtype: CacheDtype,
    pub(super) hidden: usize,
    pub(super) positions: Positions,
    pub(super) rows: Vec<usize>,
}

pub(super) enum Sink {
    Memory(Vec<f32>),
    File(FileSink),
}

impl Sink {
    pub(super) fn append(&mut self, values: &[f32], dtype: CacheDtype) -> Result<()> {
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
pub(super) struct FileSink {
    out: BufWriter<File>,
    hasher: Sha256,
    tmp: PathBuf,
    path: PathBuf,
}

impl FileSink {
    pub(super) fn create(path: &Path, header: &Header) -> Result<Self> {
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

    pub(super) fn finish(mut self, seconds: f64) -> Result<PathBuf> {
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
pub(super) fn open_file(path: &Path, expected: &Header) -> Result<Option<(Store, f64)>> {
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
pub(super) fn header_end(prefix: &[u8], file_len: u64) -> Result<usize> {
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
pub(super) fn payload_bytes(header: &Header) -> Option<usize> {
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
pub(super) fn file_key(key: &str, crate_version: &str, numerics: u32) -> String {
    KeyHasher::default()
        .field("key", key.as_bytes())
        .field("crate version", crate_version.as_bytes())
        .field("numerics version", &numerics.to_le_bytes())
        .hex()
}

/// Marks a cache file as just used: eviction goes by modification time.
/// Best effort: a file this user may not touch keeps its older time.
pub(super) fn touch(path: &Path) {
    if let Ok(file) = File::options().write(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}
