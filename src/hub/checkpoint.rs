//! All the tensors of a model directory, whichever weight format it uses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::pickle::read_pytorch_bin;
use super::safetensors_io::read_safetensors;
use super::tensor::{DType, HostTensor};

/// Weight files [`Checkpoint::load`] looks for, in order of preference.
pub(crate) const WEIGHT_FILES: [&str; 4] = [
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
];

/// Every tensor of a checkpoint, by name (e.g. `encoder.layer.0.attention.self.query.weight`),
/// plus the files they came from (for messages and hashing).
#[derive(Clone, Debug, Default)]
pub struct Checkpoint {
    /// Tensors by their name in the checkpoint, values as `f32`.
    pub tensors: BTreeMap<String, HostTensor>,
    /// The weight files read (one, or the index file followed by its shards).
    pub files: Vec<PathBuf>,
}

/// The part of `*.index.json` we use: tensor name -> shard file name.
#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Reads the weights of a model directory: `model.safetensors`, else
    /// `model.safetensors.index.json` (sharded: every shard named in its
    /// `weight_map`), else `pytorch_model.bin` (zip format, torch >= 1.6),
    /// else `pytorch_model.bin.index.json`.
    ///
    /// When none exists the error names the directory, what was looked for,
    /// and what is there.
    /// A model directory ([`Checkpoint::load`]) or a bare weights file
    /// ([`Checkpoint::load_file`]).
    pub fn open(path: &Path) -> Result<Checkpoint> {
        if path.is_file() {
            Self::load_file(path)
        } else {
            Self::load(path)
        }
    }

    /// One bare weights file: safetensors, or a PyTorch zip archive.
    pub fn load_file(path: &Path) -> Result<Checkpoint> {
        let mut head = [0u8; 4];
        {
            use std::io::Read;
            std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?
                .read_exact(&mut head)
                .with_context(|| format!("{} is too short to be a weights file", path.display()))?;
        }
        let tensors = if &head == b"PK\x03\x04" {
            read_pytorch_bin(path)?
        } else {
            read_safetensors(path)?
        };
        Ok(Checkpoint {
            tensors,
            files: vec![path.to_path_buf()],
        })
    }

    pub fn load(dir: &Path) -> Result<Checkpoint> {
        if !dir.is_dir() {
            bail!(
                "{} is not a directory: expected a model directory with config.json and \
                 model.safetensors (or pytorch_model.bin)",
                dir.display()
            );
        }
        for name in WEIGHT_FILES {
            let path = dir.join(name);
            if !present(&path)? {
                continue;
            }
            let (tensors, files) = match name {
                "model.safetensors" => (read_safetensors(&path)?, vec![path]),
                "pytorch_model.bin" => (read_pytorch_bin(&path)?, vec![path]),
                "model.safetensors.index.json" => load_sharded(&path, read_safetensors)?,
                _ => load_sharded(&path, read_pytorch_bin)?,
            };
            return Ok(Checkpoint { tensors, files });
        }
        let mut found: Vec<String> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        found.sort();
        let found = if found.is_empty() {
            "it is empty".to_owned()
        } else if found.len() > 12 {
            format!(
                "it holds {}, ... ({} entries)",
                found[..12].join(", "),
                found.len()
            )
        } else {
            format!("it holds {}", found.join(", "))
        };
        bail!(
            "no weights in {}: looked for {} ({found}). Download the model again, or convert \
             other formats (TensorFlow, Flax, GGUF) to safetensors first",
            dir.display(),
            WEIGHT_FILES.join(", ")
        )
    }

    /// Number of parameters: the summed element counts of the floating-point
    /// tensors (integer buffers such as `position_ids` are not parameters).
    pub fn num_params(&self) -> usize {
        self.tensors
            .values()
            .filter(|t| t.dtype.is_float())
            .map(|t| t.data.len())
            .sum()
    }

    /// Stored dtypes, e.g. `"F32"` when uniform, else `"F16 (12 tensors), F32
    /// (3 tensors)"` in dtype-name order; `"no tensors"` when empty.
    pub fn dtype_summary(&self) -> String {
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for t in self.tensors.values() {
            *counts.entry(t.dtype.name()).or_default() += 1;
        }
        match counts.len() {
            0 => "no tensors".to_owned(),
            1 => counts.keys().map(|k| (*k).to_owned()).collect(),
            _ => counts
                .iter()
                .map(|(k, &n)| format!("{k} ({n} tensor{})", if n == 1 { "" } else { "s" }))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// The tensor called `name`, or an error naming it, the checkpoint files
    /// and a few keys that end the same way (to spot a prefix mismatch).
    pub fn tensor(&self, name: &str) -> Result<&HostTensor> {
        if let Some(t) = self.tensors.get(name) {
            return Ok(t);
        }
        let last = name.rsplit('.').next().unwrap_or(name);
        let similar: Vec<&str> = self
            .tensors
            .keys()
            .filter(|k| k.ends_with(last))
            .take(5)
            .map(String::as_str)
            .collect();
        let files: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        bail!(
            "checkpoint ({}) has no tensor `{name}`{}: check that the model matches the \
             architecture",
            files.join(", "),
            if similar.is_empty() {
                String::new()
            } else {
                format!(" (similar keys: {})", similar.join(", "))
            }
        )
    }

    /// How many tensors have each stored dtype.
    pub fn dtype_counts(&self) -> BTreeMap<DType, usize> {
        let mut counts = BTreeMap::new();
        for t in self.tensors.values() {
            *counts.entry(t.dtype).or_default() += 1;
        }
        counts
    }
}

/// Whether `path` is a readable file; a dangling symlink (a Hugging Face
/// cache entry whose blob was deleted) is an error rather than "absent".
fn present(path: &Path) -> Result<bool> {
    if path.is_file() {
        return Ok(true);
    }
    if path.symlink_metadata().is_ok() && !path.exists() {
        bail!(
            "{} is a broken symlink (its blob in the Hugging Face cache is gone): delete the \
             snapshot and download the model again",
            path.display()
        );
    }
    Ok(false)
}

/// Reads a sharded checkpoint from its `*.index.json`; returns the tensors
/// and `[index, shard...]`.
fn load_sharded(
    index_path: &Path,
    read: fn(&Path) -> Result<BTreeMap<String, HostTensor>>,
) -> Result<(BTreeMap<String, HostTensor>, Vec<PathBuf>)> {
    let text = std::fs::read_to_string(index_path)
        .with_context(|| format!("cannot read {}", index_path.display()))?;
    let index: ShardIndex = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a valid shard index (expected {{\"weight_map\": {{tensor: shard file}}}}): \
             re-download it",
            index_path.display()
        )
    })?;
    let dir = index_path.parent().unwrap_or(Path::new("."));
    let shards: BTreeSet<&str> = index.weight_map.values().map(String::as_str).collect();
    if shards.is_empty() {
        bail!(
            "{} lists no shards (empty weight_map): re-download it",
            index_path.display()
        );
    }
    let mut tensors: BTreeMap<String, HostTensor> = BTreeMap::new();
    let mut origin: BTreeMap<String, &str> = BTreeMap::new();
    let mut files = vec![index_path.to_path_buf()];
    for shard in shards {
        let rel = Path::new(shard);
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            bail!(
                "{} names shard `{shard}`, which is not a plain file name inside the model \
                 directory: the index is corrupt, re-download it",
                index_path.display()
            );
        }
        let path = dir.join(rel);
        if !present(&path)? {
            bail!(
                "{} names shard {shard}, but {} does not exist: download the missing shard \
                 (or the whole model again)",
                index_path.display(),
                path.display()
            );
        }
        for (name, t) in read(&path)? {
            if let Some(prev) = origin.insert(name.clone(), shard) {
                bail!(
                    "tensor `{name}` appears in two shards, {prev} and {shard}: re-download them"
                );
            }
            tensors.insert(name, t);
        }
        files.push(path);
    }
    for (name, shard) in &index.weight_map {
        if origin.get(name.as_str()) != Some(&shard.as_str()) {
            bail!(
                "{} says tensor `{name}` is in {shard}, but that shard has no such tensor: the \
                 shards do not match the index, re-download them",
                index_path.display()
            );
        }
    }
    Ok((tensors, files))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::write_safetensors;

    fn t(name: &str, shape: &[usize], data: &[f32]) -> (String, Vec<usize>, Vec<f32>) {
        (name.to_owned(), shape.to_vec(), data.to_vec())
    }

    #[test]
    fn loads_single_file_and_summarises() {
        let dir = tempfile::tempdir().unwrap();
        write_safetensors(
            &dir.path().join("model.safetensors"),
            &[
                t("w", &[2, 3], &[1., 2., 3., 4., 5., 6.]),
                t("b", &[3], &[0.5, 0.5, 0.5]),
            ],
            None,
        )
        .unwrap();
        let ck = Checkpoint::load(dir.path()).unwrap();
        assert_eq!(ck.files, vec![dir.path().join("model.safetensors")]);
        assert_eq!(ck.num_params(), 9);
        assert_eq!(ck.dtype_summary(), "F32");
        assert_eq!(ck.tensor("w").unwrap().data[5], 6.0);
        let err = ck.tensor("encoder.w").unwrap_err().to_string();
        assert!(
            err.contains("`encoder.w`") && err.contains("similar keys: w"),
            "{err}"
        );

        let mut mixed = ck.clone();
        for i in 0..12 {
            mixed.tensors.insert(
                format!("h{i}"),
                HostTensor {
                    shape: vec![1],
                    dtype: DType::F16,
                    data: vec![0.0],
                },
            );
        }
        mixed.tensors.insert(
            "position_ids".into(),
            HostTensor {
                shape: vec![1, 4],
                dtype: DType::I64,
                data: vec![0., 1., 2., 3.],
            },
        );
        assert_eq!(
            mixed.dtype_summary(),
            "F16 (12 tensors), F32 (2 tensors), I64 (1 tensor)"
        );
        assert_eq!(mixed.num_params(), 9 + 12);
        assert_eq!(mixed.dtype_counts()[&DType::F16], 12);
    }

    #[test]
    fn loads_two_shards_from_index() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_safetensors(
            &d.join("model-00001-of-00002.safetensors"),
            &[
                t("a.weight", &[2, 2], &[1., 2., 3., 4.]),
                t("a.bias", &[2], &[0.1, 0.2]),
            ],
            None,
        )
        .unwrap();
        write_safetensors(
            &d.join("model-00002-of-00002.safetensors"),
            &[t("b.weight", &[1, 3], &[-1., -2., -3.])],
            None,
        )
        .unwrap();
        let index = r#"{"metadata": {"total_size": 36}, "weight_map": {
            "a.weight": "model-00001-of-00002.safetensors",
            "a.bias": "model-00001-of-00002.safetensors",
            "b.weight": "model-00002-of-00002.safetensors"}}"#;
        std::fs::write(d.join("model.safetensors.index.json"), index).unwrap();
        let ck = Checkpoint::load(d).unwrap();
        assert_eq!(ck.tensors.len(), 3);
        assert_eq!(ck.tensors["a.weight"].data, vec![1., 2., 3., 4.]);
        assert_eq!(ck.tensors["a.bias"].data, vec![0.1, 0.2]);
        assert_eq!(ck.tensors["b.weight"].shape, vec![1, 3]);
        assert_eq!(ck.tensors["b.weight"].data, vec![-1., -2., -3.]);
        assert_eq!(ck.num_params(), 9);
        assert_eq!(ck.files.len(), 3);
        assert!(ck.files[0].ends_with("model.safetensors.index.json"));
        assert!(ck.files[2].ends_with("model-00002-of-00002.safetensors"));

        // the index promises a tensor the shard lacks
        let bad = index.replace("\"a.bias\"", "\"a.gone\"").replace(
            "\"b.weight\": \"model-00002",
            "\"a.bias\": \"model-00001-of-00002.safetensors\", \"b.weight\": \"model-00002",
        );
        std::fs::write(d.join("model.safetensors.index.json"), bad).unwrap();
        let err = Checkpoint::load(d).unwrap_err().to_string();
        assert!(
            err.contains("`a.gone`") && err.contains("re-download"),
            "{err}"
        );

        // a shard is missing
        std::fs::write(d.join("model.safetensors.index.json"), index).unwrap();
        std::fs::remove_file(d.join("model-00002-of-00002.safetensors")).unwrap();
        let err = Checkpoint::load(d).unwrap_err().to_string();
        assert!(
            err.contains("model-00002-of-00002.safetensors") && err.contains("does not exist"),
            "{err}"
        );

        // path traversal in a shard name
        std::fs::write(
            d.join("model.safetensors.index.json"),
            r#"{"weight_map": {"x": "../evil.safetensors"}}"#,
        )
        .unwrap();
        let err = Checkpoint::load(d).unwrap_err().to_string();
        assert!(err.contains("not a plain file name"), "{err}");
    }

    #[test]
    fn no_weights_lists_what_it_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        std::fs::write(dir.path().join("tf_model.h5"), "x").unwrap();
        let err = Checkpoint::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(
            err.contains("model.safetensors, model.safetensors.index.json, pytorch_model.bin"),
            "{err}"
        );
        assert!(err.contains("it holds config.json, tf_model.h5"), "{err}");
        let err = Checkpoint::load(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a directory"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn dangling_symlink_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("blobs-gone"),
            dir.path().join("model.safetensors"),
        )
        .unwrap();
        let err = Checkpoint::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("broken symlink"), "{err}");
    }
}
