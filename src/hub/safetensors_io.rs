//! Reading and writing `.safetensors` files.
//!
//! Layout: 8-byte little-endian header length `n`, `n` bytes of JSON
//! (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {..}}`),
//! then the tensor bytes, offsets relative to the end of the header.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use ::safetensors::tensor::{Metadata, TensorInfo};
use ::safetensors::{Dtype, SafeTensors};
use anyhow::{Context, Result, bail};

use super::tensor::{DType, HostTensor};

/// Text at the start of a Git LFS pointer file (what a clone without
/// `git lfs` leaves in place of the weights).
pub(crate) const LFS_POINTER: &[u8] = b"version https://git-lfs";

/// Error for a file that is a Git LFS pointer rather than the weights.
pub(crate) fn lfs_pointer_error(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} is a Git LFS pointer, not the weights: run `git lfs pull` in that repository \
         (or download the file again)",
        path.display()
    )
}

fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "safetensors file".to_owned())
}

fn from_st_dtype(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::F64 => DType::F64,
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I64 => DType::I64,
        Dtype::I32 => DType::I32,
        Dtype::I16 => DType::I16,
        Dtype::I8 => DType::I8,
        Dtype::U8 => DType::U8,
        Dtype::BOOL => DType::Bool,
        _ => return None,
    })
}

/// Reads every tensor of a `.safetensors` file, converted to `f32`.
///
/// The file is memory-mapped, so only the converted copy stays resident.
/// A truncated or corrupt file is an error saying what the header promised
/// and what the file holds; dtypes other than F64/F32/F16/BF16/I64/I32/I16/
/// I8/U8/BOOL (e.g. FP8, U32) are an error naming the tensor.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    if len < 8 {
        bail!(
            "{} at {} is truncated or corrupt (header says nothing: a safetensors file starts \
             with an 8-byte header length / the file has {len} bytes): re-download it",
            file_label(path),
            path.display()
        );
    }
    // SAFETY: the map is read-only and dropped before returning; a file
    // truncated by another process while we read would fault, which is the
    // accepted risk of every mmap-based safetensors reader.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("cannot memory-map {}", path.display()))?;
    let bytes: &[u8] = &map;
    if bytes.starts_with(LFS_POINTER) {
        return Err(lfs_pointer_error(path));
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| corrupt_error(path, bytes, &e))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.iter() {
        let dtype = from_st_dtype(view.dtype()).with_context(|| {
            format!(
                "tensor `{name}` in {} has dtype {:?}, which headstart cannot read: convert \
                 the checkpoint to F32, F16 or BF16",
                path.display(),
                view.dtype()
            )
        })?;
        let data = dtype
            .decode_le(view.data())
            .with_context(|| format!("tensor `{name}` in {}", path.display()))?;
        out.insert(
            name.to_owned(),
            HostTensor {
                shape: view.shape().to_vec(),
                dtype,
                data,
            },
        );
    }
    Ok(out)
}

/// Builds the "truncated or corrupt" error, saying what the header claims
/// against what the file holds.
fn corrupt_error(path: &Path, bytes: &[u8], err: &::safetensors::SafeTensorError) -> anyhow::Error {
    let len = bytes.len();
    let n = bytes.get(..8).map_or(0, |b| {
        let mut n8 = [0u8; 8];
        n8.copy_from_slice(b);
        u64::from_le_bytes(n8)
    });
    let detail = match usize::try_from(n).ok().and_then(|n| n.checked_add(8)) {
        Some(end) if end <= len => {
            let header = &bytes[8..end];
            match serde_json::from_slice::<serde_json::Value>(header) {
                Ok(json) => {
                    let data_end = json
                        .as_object()
                        .map(|o| {
                            o.values()
                                .filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64())
                                .max()
                                .unwrap_or(0)
                        })
                        .unwrap_or(0);
                    let want = data_end.saturating_add(end as u64);
                    if want != len as u64 {
                        format!("header says the file is {want} bytes / it has {len} bytes")
                    } else {
                        format!("header says {err} / the file has {len} bytes")
                    }
                }
                Err(e) => format!(
                    "header says {n} bytes of JSON but they do not parse ({e}) / the file has \
                     {len} bytes"
                ),
            }
        }
        _ => format!("header says its JSON alone is {n} bytes / the file has {len} bytes"),
    };
    anyhow::anyhow!(
        "{} at {} is truncated or corrupt ({detail}): re-download it",
        file_label(path),
        path.display()
    )
}

/// [`write_safetensors`] with the metadata PyTorch's `save_file` writes
/// (`format: pt`), which transformers expects of a model's weights.
pub fn write_torch_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> Result<()> {
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_safetensors(path, tensors, Some(meta))
}

/// Writes `(name, shape, values)` tensors as an F32 safetensors file,
/// atomically: the bytes go to a temporary file in the same directory, which
/// is synced and then renamed over `path`, so readers never see half a file.
///
/// `metadata` lands in the header's `__metadata__` (transformers expects
/// `{"format": "pt"}`). Names must be unique and `values.len()` must equal
/// the product of `shape`.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let mut order: Vec<&(String, Vec<usize>, Vec<f32>)> = tensors.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    let mut infos = Vec::with_capacity(order.len());
    let mut offset = 0usize;
    for pair in order.windows(2) {
        if pair[0].0 == pair[1].0 {
            bail!(
                "cannot write {}: tensor `{}` is given twice",
                path.display(),
                pair[0].0
            );
        }
    }
    for (name, shape, values) in &order {
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .with_context(|| format!("tensor `{name}` has an absurd shape {shape:?}"))?;
        if numel != values.len() {
            bail!(
                "cannot write {}: tensor `{name}` has shape {shape:?} ({numel} elements) but \
                 {} values",
                path.display(),
                values.len()
            );
        }
        let end = offset + 4 * numel;
        infos.push((
            name.clone(),
            TensorInfo {
                dtype: Dtype::F32,
                shape: shape.clone(),
                data_offsets: (offset, end),
            },
        ));
        offset = end;
    }
    let meta = Metadata::new(metadata, infos)
        .with_context(|| format!("cannot build the header of {}", path.display()))?;
    let mut header = serde_json::to_vec(&meta)
        .with_context(|| format!("cannot encode the header of {}", path.display()))?;
    header.resize(header.len().next_multiple_of(8), b' ');

    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        bail!(
            "cannot write {}: directory {} does not exist (create it first)",
            path.display(),
            parent.display()
        );
    }
    crate::fsutil::write_atomic(path, |w| {
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        let mut buf = Vec::with_capacity(1 << 16);
        for (_, _, values) in &order {
            for chunk in values.chunks(1 << 14) {
                buf.clear();
                buf.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
                w.write_all(&buf)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn round_trip_with_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let tensors = vec![
            (
                "b.weight".to_owned(),
                vec![2, 3],
                vec![1.0, 2.0, 3.0, -4.0, 5.5, 6.0],
            ),
            ("a.bias".to_owned(), vec![2], vec![0.25, -0.5]),
            ("scalar".to_owned(), vec![], vec![7.0]),
        ];
        let meta = HashMap::from([("format".to_owned(), "pt".to_owned())]);
        write_safetensors(&path, &tensors, Some(meta)).unwrap();
        let back = read_safetensors(&path).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back["b.weight"].shape, vec![2, 3]);
        assert_eq!(back["b.weight"].data, vec![1.0, 2.0, 3.0, -4.0, 5.5, 6.0]);
        assert_eq!(back["a.bias"].data, vec![0.25, -0.5]);
        assert_eq!(back["scalar"].shape, Vec::<usize>::new());
        assert_eq!(back["scalar"].data, vec![7.0]);
        assert_eq!(back["a.bias"].dtype, DType::F32);
        // metadata survives, and the header is 8-byte aligned
        let bytes = fs::read(&path).unwrap();
        let (n, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(n % 8, 0);
        assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
        // no temporary file left behind
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("model.safetensors")]);
    }

    #[test]
    fn write_rejects_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let err = write_safetensors(&path, &[("w".into(), vec![2, 2], vec![1.0; 3])], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`w`") && err.contains("3 values"), "{err}");
        let dup = vec![
            ("w".into(), vec![1], vec![1.0]),
            ("w".into(), vec![1], vec![2.0]),
        ];
        let err = write_safetensors(&path, &dup, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("given twice"), "{err}");
        let missing = dir.path().join("nope").join("x.safetensors");
        let err = write_safetensors(&missing, &[], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn f16_bf16_f64_i64_decoded() {
        let f16: Vec<u8> = [1.5f32, -2.0, 0.099975586]
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        let bf16: Vec<u8> = [1.5f32, -2.0, 3.140625]
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect();
        let f64s: Vec<u8> = [0.1f64, -1e10]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let i64s: Vec<u8> = [0i64, 1, 2, 511]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let views = vec![
            (
                "h",
                ::safetensors::tensor::TensorView::new(Dtype::F16, vec![3], &f16).unwrap(),
            ),
            (
                "b",
                ::safetensors::tensor::TensorView::new(Dtype::BF16, vec![3, 1], &bf16).unwrap(),
            ),
            (
                "d",
                ::safetensors::tensor::TensorView::new(Dtype::F64, vec![2], &f64s).unwrap(),
            ),
            (
                "ids",
                ::safetensors::tensor::TensorView::new(Dtype::I64, vec![1, 4], &i64s).unwrap(),
            ),
        ];
        let bytes = ::safetensors::serialize(views, None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("half.safetensors");
        fs::write(&path, bytes).unwrap();
        let t = read_safetensors(&path).unwrap();
        assert_eq!(t["h"].dtype, DType::F16);
        assert_eq!(t["h"].data, vec![1.5, -2.0, 0.099975586]);
        assert_eq!(t["b"].dtype, DType::BF16);
        assert_eq!(t["b"].shape, vec![3, 1]);
        assert_eq!(t["b"].data, vec![1.5, -2.0, 3.140625]);
        assert_eq!(t["d"].data, vec![0.1f64 as f32, -1e10]);
        assert_eq!(t["ids"].dtype, DType::I64);
        assert_eq!(t["ids"].data, vec![0.0, 1.0, 2.0, 511.0]);
    }

    #[test]
    fn truncated_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let values: Vec<f32> = (0..64).map(|i| i as f32).collect();
        write_safetensors(&path, &[("w".into(), vec![8, 8], values)], None).unwrap();
        let full = fs::read(&path).unwrap();
        fs::write(&path, &full[..full.len() / 2]).unwrap();
        let err = read_safetensors(&path).unwrap_err().to_string();
        assert!(err.contains("truncated or corrupt"), "{err}");
        assert!(
            err.contains(&format!("the file is {} bytes", full.len())),
            "{err}"
        );
        assert!(
            err.contains(&format!("it has {} bytes", full.len() / 2)),
            "{err}"
        );
        assert!(err.contains("re-download"), "{err}");

        // cut inside the JSON header
        fs::write(&path, &full[..20]).unwrap();
        let err = read_safetensors(&path).unwrap_err().to_string();
        assert!(
            err.contains("truncated or corrupt") && err.contains("has 20 bytes"),
            "{err}"
        );
        // fewer than 8 bytes
        fs::write(&path, b"abc").unwrap();
        let err = read_safetensors(&path).unwrap_err().to_string();
        assert!(
            err.contains("truncated or corrupt") && err.contains("3 bytes"),
            "{err}"
        );
        // garbage JSON
        let mut junk = 16u64.to_le_bytes().to_vec();
        junk.extend_from_slice(b"{not json at all");
        fs::write(&path, &junk).unwrap();
        let err = read_safetensors(&path).unwrap_err().to_string();
        assert!(
            err.contains("corrupt") && err.contains("do not parse"),
            "{err}"
        );
        // a Git LFS pointer
        fs::write(
            &path,
            b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n",
        )
        .unwrap();
        let err = read_safetensors(&path).unwrap_err().to_string();
        assert!(err.contains("Git LFS pointer"), "{err}");
    }

    #[test]
    fn unsupported_dtype_names_the_tensor() {
        let raw = [0u8; 8];
        let views = vec![(
            "u",
            ::safetensors::tensor::TensorView::new(Dtype::U32, vec![2], &raw).unwrap(),
        )];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.safetensors");
        fs::write(&path, ::safetensors::serialize(views, None).unwrap()).unwrap();
        let err = read_safetensors(&path).unwrap_err().to_string();
        assert!(err.contains("`u`") && err.contains("U32"), "{err}");
    }
}
