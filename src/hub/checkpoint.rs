//! All the tensors of a model directory, whichever weight format it uses,
//! or of one bare weights file (a `.pth`/`.pt`/`.bin`/`.safetensors`/`.onnx`
//! as vision packages ship them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::onnx::{OnnxGraph, looks_like_onnx, read_onnx};
use super::pickle::{read_head, read_pytorch_bin, read_torch_file};
use super::safetensors_io::{LFS_POINTER, lfs_pointer_error, read_safetensors};
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
    /// How [`Checkpoint::load_file`] found the tensors, one line each: the
    /// format read, a wrapper dict unwrapped (`state_dict`, `model`, ...),
    /// a `module.` prefix stripped, objects ignored. Empty for
    /// [`Checkpoint::load`].
    pub notes: Vec<String>,
    /// The operators of an ONNX file (for families that map anonymous
    /// initializers by walking the graph); `None` for other formats.
    pub graph: Option<OnnxGraph>,
}

/// What [`Checkpoint::load_file`] reads, for messages.
const FILE_FORMATS: &str = "safetensors, torch.save files (zip format of torch >= 1.6, or the \
                            legacy format) holding a state_dict, TorchScript archives \
                            (torch.jit.save) and ONNX models (their initializers)";

/// The part of `*.index.json` we use: tensor name -> shard file name.
#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

impl Checkpoint {
    /// A model directory ([`Checkpoint::load`]) or a bare weights file
    /// ([`Checkpoint::load_file`]).
    pub fn open(path: &Path) -> Result<Checkpoint> {
        if path.is_file() {
            Self::load_file(path)
        } else {
            Self::load(path)
        }
    }

    /// Reads the weights of a model directory: `model.safetensors`, else
    /// `model.safetensors.index.json` (sharded: every shard named in its
    /// `weight_map`), else `pytorch_model.bin` (zip format, torch >= 1.6),
    /// else `pytorch_model.bin.index.json`.
    ///
    /// When none exists the error names the directory, what was looked for,
    /// and what is there.
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
            return Ok(Checkpoint {
                tensors,
                files,
                notes: Vec::new(),
                graph: None,
            });
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

    /// Reads one bare weights file, the format chosen by its content (not its
    /// name): safetensors; a zip written by `torch.save` (a state_dict, or a
    /// dict wrapping one under `state_dict`, `model_state_dict`, `model` or
    /// `module`) or by `torch.jit.save` (TorchScript: the module tree's
    /// parameters and buffers under their dotted paths, e.g.
    /// `net.layers.conv.weight`); or the legacy `torch.save` format of
    /// torch < 1.6; or an ONNX model (its initializers, under their names in
    /// the graph, and the graph's operators in [`Checkpoint::graph`]). When
    /// every key starts with `module.` (a model saved inside
    /// `nn.DataParallel`), that prefix is stripped.
    /// [`Checkpoint::notes`] says what was read and unwrapped.
    ///
    /// Anything else is an error naming the file and the formats accepted.
    pub fn load_file(path: &Path) -> Result<Checkpoint> {
        if path.is_dir() {
            bail!(
                "{} is a directory, not a weights file: load a model directory with \
                 Checkpoint::load",
                path.display()
            );
        }
        if !present(path)? {
            bail!("{} does not exist: expected a weights file", path.display());
        }
        let head = read_head(path, 64)?;
        let onnx_name = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
        let mut graph = None;
        let (mut tensors, mut notes) = if head.starts_with(LFS_POINTER) {
            return Err(lfs_pointer_error(path));
        } else if looks_like_safetensors(&head, path) {
            (read_safetensors(path)?, vec!["safetensors".to_owned()])
        } else if head.starts_with(b"PK\x03\x04") || head.first() == Some(&0x80) {
            let file = read_torch_file(path)?;
            (file.tensors, file.notes)
        } else if onnx_name || looks_like_onnx(&head) {
            match read_onnx(path) {
                Ok(m) => {
                    graph = Some(m.graph);
                    (m.tensors, m.notes)
                }
                // something else that happens to start like protobuf
                Err(_) if !onnx_name => bail!("{}", not_a_weights_file(path, &head)),
                Err(e) => return Err(e),
            }
        } else {
            bail!("{}", not_a_weights_file(path, &head));
        };
        strip_data_parallel_prefix(&mut tensors, &mut notes);
        if tensors.is_empty() {
            bail!(
                "{} holds no tensors: expected the weights of a model",
                path.display()
            );
        }
        Ok(Checkpoint {
            tensors,
            files: vec![path.to_path_buf()],
            notes,
            graph,
        })
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

/// Whether `head` (the first bytes of `path`) starts a safetensors file: a
/// little-endian u64 header length that fits in the file, then `{`.
fn looks_like_safetensors(head: &[u8], path: &Path) -> bool {
    let Some(len) = head.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
        return false;
    };
    let header = u64::from_le_bytes(len);
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    head.get(8) == Some(&b'{') && header >= 2 && header.saturating_add(8) <= size
}

/// The error for a file [`Checkpoint::load_file`] does not read, with a hint
/// when its first bytes say what it is.
fn not_a_weights_file(path: &Path, head: &[u8]) -> String {
    let what = if head.starts_with(b"GGUF") {
        Some("it is a GGUF file (llama.cpp): headstart does not read GGUF here")
    } else if head.starts_with(b"\x89HDF\r\n\x1a\n") {
        Some("it is an HDF5 file (Keras .h5 weights), not a torch file")
    } else if head.starts_with(b"\x93NUMPY") {
        Some("it is a NumPy .npy array, not a checkpoint")
    } else if looks_like_onnx(head) {
        Some("it starts like protobuf but is not a valid ONNX model")
    } else if head.is_empty() {
        Some("it is empty")
    } else {
        None
    };
    format!(
        "{} is not a torch or safetensors weights file{}; headstart reads {FILE_FORMATS}",
        path.display(),
        what.map(|w| format!(" ({w})")).unwrap_or_default()
    )
}

/// Strips `module.` from every key when all keys have it (a model saved
/// while wrapped in `nn.DataParallel` or `DistributedDataParallel`).
fn strip_data_parallel_prefix(tensors: &mut BTreeMap<String, HostTensor>, notes: &mut Vec<String>) {
    const PREFIX: &str = "module.";
    if tensors.is_empty()
        || !tensors
            .keys()
            .all(|k| k.len() > PREFIX.len() && k.starts_with(PREFIX))
    {
        return;
    }
    let n = tensors.len();
    *tensors = std::mem::take(tensors)
        .into_iter()
        .map(|(k, v)| (k[PREFIX.len()..].to_owned(), v))
        .collect();
    notes.push(format!(
        "stripped the DataParallel prefix `{PREFIX}` from all {n} keys"
    ));
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

    #[test]
    fn load_file_picks_the_format_by_content() {
        use crate::hub::pickle::tests::{P, le, zip_file_named};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();

        // safetensors, whatever the name
        let st = d.join("weights.pth");
        write_safetensors(&st, &[t("w", &[2], &[1., 2.])], None).unwrap();
        let ck = Checkpoint::load_file(&st).unwrap();
        assert_eq!(ck.tensors["w"].data, vec![1., 2.]);
        assert_eq!(ck.files, vec![st.clone()]);
        assert_eq!(ck.notes, ["safetensors"]);

        // a torch.save zip of {"model": DataParallel state_dict}
        let mut p = P::default();
        p.op(&[0x80, 2, b'}', b'(']).s("model").op(b"}(");
        p.s("module.conv.weight")
            .tensor("FloatStorage", "0", 2, 0, &[2], &[1]);
        p.s("module.fc.bias")
            .tensor("FloatStorage", "0", 2, 1, &[1], &[1]);
        p.op(b"u").s("epoch").op(b"K\x05u.");
        let zip = zip_file_named(
            d,
            "ckpt.tar",
            &[
                ("ckpt/data.pkl", p.0),
                ("ckpt/data/0", le(&[3f32, 4.], f32::to_le_bytes)),
            ],
        );
        let ck = Checkpoint::load_file(&zip).unwrap();
        let keys: Vec<&str> = ck.tensors.keys().map(String::as_str).collect();
        assert_eq!(keys, ["conv.weight", "fc.bias"]);
        assert_eq!(ck.tensors["fc.bias"].data, vec![4.]);
        assert_eq!(
            ck.notes,
            [
                "torch.save zip archive (torch >= 1.6)",
                "took the tensors from the `model` entry of a dict (also held: epoch)",
                "stripped the DataParallel prefix `module.` from all 2 keys",
            ]
        );

        // what is not a weights file: the error names the file and the formats
        let err_for = |name: &str, bytes: &[u8]| {
            let path = d.join(name);
            std::fs::write(&path, bytes).unwrap();
            let err = Checkpoint::load_file(&path).unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            err
        };
        let err = err_for("model.bin", b"\x08\x07\x12\x07pytorch\x1a\x032.0");
        assert!(
            err.contains("not a torch or safetensors weights file")
                && err.contains("ONNX")
                && err.contains("TorchScript archives"),
            "{err}"
        );
        assert!(err_for("m.onnx", b"\x08").contains("is not a valid ONNX model"));
        assert!(err_for("m.onnx", b"").contains("without a graph"));

        // an ONNX model, whatever the name: initializers and graph
        use crate::hub::onnx::write::{Init, model};
        let onnx = d.join("exported.bin");
        let raw: Vec<u8> = [1f32, -2.].iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(
            &onnx,
            model(
                &[Init {
                    raw: Some(raw),
                    ..Init::new("conv.weight", &[2, 1, 1, 1], 1)
                }],
                &[("Conv", &["x", "conv.weight"], &["y"])],
            ),
        )
        .unwrap();
        let ck = Checkpoint::load_file(&onnx).unwrap();
        assert_eq!(ck.tensors["conv.weight"].data, [1., -2.]);
        assert_eq!(ck.tensors["conv.weight"].shape, [2, 1, 1, 1]);
        assert!(ck.notes[0].starts_with("ONNX model"), "{:?}", ck.notes);
        let graph = ck.graph.unwrap();
        assert_eq!(graph.nodes[0].op, "Conv");
        assert_eq!(
            graph.nodes[0].attributes["pads"],
            crate::hub::onnx::Attribute::Ints(vec![1, 1, 1, 1])
        );
        assert!(err_for("m.gguf", b"GGUF\x03\x00").contains("GGUF"));
        assert!(err_for("w.h5", b"\x89HDF\r\n\x1a\n").contains("HDF5"));
        let err = err_for("notes.txt", b"hello");
        assert!(
            err.contains(
                "is not a torch or safetensors weights file; headstart reads \
                          safetensors, torch.save files"
            ),
            "{err}"
        );
        assert!(err_for("empty.pt", b"").contains("it is empty"));
        assert!(
            err_for("p.pkl", &[0x80, 2, b'K', 1, b'.'])
                .contains("not a file written by torch.save")
        );
        let keras = zip_file_named(d, "model.keras", &[("config.json", b"{}".to_vec())]);
        let err = Checkpoint::load_file(&keras).unwrap_err().to_string();
        assert!(
            err.contains("model.keras") && err.contains("no <name>/data.pkl"),
            "{err}"
        );

        let err = Checkpoint::load_file(d).unwrap_err().to_string();
        assert!(
            err.contains("is a directory") && err.contains("Checkpoint::load"),
            "{err}"
        );
        let err = Checkpoint::load_file(&d.join("gone.pth"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
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
