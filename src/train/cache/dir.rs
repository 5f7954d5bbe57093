//! The cache directory: listing, clearing, and least-recently-used eviction.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};

use super::file::*;
use super::*;

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
pub(super) fn cache_files(dir: &Path) -> Result<Vec<(PathBuf, u64, SystemTime)>> {
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
pub(super) fn read_header(path: &Path, file_len: u64) -> Result<Header> {
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
pub(super) fn evict(dir: &Path, max_bytes: u64, keep: &Path) -> Result<(usize, u64)> {
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
