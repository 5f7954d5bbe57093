//! Reusing a comparison's finished runs: what a run's result depends on
//! (its settings and the SHA-256 of its data and weights) and the check
//! that a run folder's saved key still matches.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::RunRecord;

/// What a run's reuse depends on: its settings, the data it trained and
/// was tested on (by content), the test subset and the model's weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct ReuseKey {
    pub(super) config: serde_json::Value,
    pub(super) train_sha256: String,
    pub(super) test_sha256: String,
    pub(super) test_limit: Option<usize>,
    pub(super) model_sha256: String,
}

/// SHA-256 of the contents of `paths`, in order.
pub(super) fn sha256_files(paths: &[&PathBuf]) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut h = Sha256::new();
    for p in paths {
        if p.is_dir() {
            // an image folder: its files' names and sizes, in order
            let mut files = Vec::new();
            let mut stack = vec![p.to_path_buf()];
            while let Some(d) = stack.pop() {
                for e in
                    std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?
                {
                    let path = e?.path();
                    if path.is_dir() {
                        stack.push(path);
                    } else {
                        let len = std::fs::metadata(&path)?.len();
                        files.push((path, len));
                    }
                }
            }
            files.sort();
            for (path, len) in files {
                h.update(path.display().to_string().as_bytes());
                h.update(len.to_le_bytes());
            }
            h.update(b"\0");
            continue;
        }
        let mut f =
            std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        h.update(b"\0");
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A model directory's weight and config files, sorted.
pub(super) fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if dir.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name == "config.json" || name.ends_with(".safetensors") || name.ends_with(".bin")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The key without the run folder's own path (`config.out`): where the
/// comparison folder lies does not change what its runs computed.
fn placeless(key: &ReuseKey) -> ReuseKey {
    let mut key = key.clone();
    if let Some(config) = key.config.as_object_mut() {
        config.remove("out");
    }
    key
}

/// A finished run of the same settings on the same inputs, if `dir` holds
/// one. A comparison folder moved or copied elsewhere (another disk, another
/// machine, runs of two folders merged into one) keeps its runs: the key
/// leaves the run's own path out, and the record read back points at `dir`.
pub(super) fn reuse(dir: &Path, key: &ReuseKey) -> Result<Option<RunRecord>> {
    let (record, saved) = (dir.join("test.json"), dir.join("reuse.json"));
    if !record.is_file() || !saved.is_file() {
        return Ok(None);
    }
    let Ok(saved) = serde_json::from_str::<ReuseKey>(&std::fs::read_to_string(&saved)?) else {
        return Ok(None);
    };
    if placeless(&saved) != placeless(key) {
        return Ok(None);
    }
    let record: Option<RunRecord> = serde_json::from_str(&std::fs::read_to_string(&record)?).ok();
    Ok(record.map(|r| RunRecord {
        dir: dir.to_path_buf(),
        ..r
    }))
}
