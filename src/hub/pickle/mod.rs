//! Reading `pytorch_model.bin` (the zip format of `torch.save`, torch >= 1.6).
//!
//! The archive holds `<prefix>/data.pkl`, a pickle of the state_dict in
//! which every tensor is `torch._utils._rebuild_tensor_v2(storage, offset,
//! size, stride, ...)` and every storage is a persistent id `('storage',
//! torch.FloatStorage, key, location, numel)` whose bytes are the archive
//! member `<prefix>/data/<key>` (little-endian unless `<prefix>/byteorder`
//! says `big`).
//!
//! The pickle is run by a small VM that knows only the opcodes and globals a
//! state_dict uses. It never imports or calls anything: unknown globals
//! become inert placeholders, so a malicious pickle cannot run code. The
//! same VM reads a pickled numpy array ([`read_numpy_pickle`]).

mod numpy;
mod vm;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use anyhow::{Context, Result, bail};

use super::safetensors_io::{LFS_POINTER, lfs_pointer_error};
use super::tensor::HostTensor;
pub use numpy::{NpArray, read_numpy_pickle};
use vm::{TensorRef, Unpickler, Value};

/// Index one past the last storage element a view touches (0 when it has
/// no elements), or `None` on overflow.
fn view_end(t: &TensorRef) -> Option<usize> {
    if t.size.contains(&0) {
        return Some(0);
    }
    let mut last = t.offset;
    for (&n, &s) in t.size.iter().zip(&t.stride) {
        last = last.checked_add((n - 1).checked_mul(s)?)?;
    }
    last.checked_add(1)
}

/// Copies a strided view of `src` into a contiguous row-major vector.
/// The caller has checked `view_end(t) <= src.len()`.
fn gather(src: &[f32], t: &TensorRef) -> Vec<f32> {
    let numel: usize = t.size.iter().product();
    let mut out = Vec::with_capacity(numel);
    if numel == 0 {
        return out;
    }
    let nd = t.size.len();
    if nd == 0 {
        out.push(src[t.offset]);
        return out;
    }
    let (inner, inner_stride) = (t.size[nd - 1], t.stride[nd - 1]);
    let mut idx = vec![0usize; nd - 1];
    loop {
        let base = t.offset
            + idx
                .iter()
                .zip(&t.stride)
                .map(|(&i, &s)| i * s)
                .sum::<usize>();
        if inner_stride == 1 {
            out.extend_from_slice(&src[base..base + inner]);
        } else {
            out.extend((0..inner).map(|j| src[base + j * inner_stride]));
        }
        // advance the odometer over the outer dimensions
        let mut d = nd - 1;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < t.size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// The `(name, tensor)` entries of an unpickled state_dict. Accepts the
/// state_dict itself, or a dict wrapping it under `state_dict`/`model`.
fn state_dict_entries(top: &Value, what: &str) -> Result<Vec<(String, Rc<TensorRef>)>> {
    let Value::Dict(d) = top else {
        bail!(
            "{what} holds a value of type {}, not a state_dict: save the weights with \
             torch.save(model.state_dict(), path)",
            top.kind()
        );
    };
    let d = d.borrow();
    let tensors: Vec<(String, Rc<TensorRef>)> = d
        .iter()
        .filter_map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Tensor(t)) => Some((k.to_string(), t.clone())),
            _ => None,
        })
        .collect();
    if !tensors.is_empty() {
        return Ok(tensors);
    }
    for wrapper in ["state_dict", "model", "module"] {
        if let Some((_, inner @ Value::Dict(_))) = d
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if &**s == wrapper))
        {
            return state_dict_entries(inner, what);
        }
    }
    let keys: Vec<String> = d
        .iter()
        .take(8)
        .map(|(k, v)| match k {
            Value::Str(s) => format!("{s}: {}", v.describe()),
            other => other.kind(),
        })
        .collect();
    bail!(
        "{what} holds a dict without tensors ({}): save the weights with \
         torch.save(model.state_dict(), path)",
        keys.join(", ")
    )
}

/// Reads a `pytorch_model.bin` written by `torch.save` (zip format,
/// torch >= 1.6) into `f32` tensors, honouring storage offsets and strides
/// (views such as a transposed weight come out contiguous, row-major).
///
/// Legacy (non-zip) files, Git LFS pointers and other formats are errors
/// saying what to do.
pub fn read_pytorch_bin(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut head = [0u8; 32];
    let mut got = 0;
    while got < head.len() {
        let n = file
            .read(&mut head[got..])
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let head = &head[..got];
    if head.starts_with(LFS_POINTER) {
        return Err(lfs_pointer_error(path));
    }
    if !head.starts_with(b"PK\x03\x04") {
        if head.first() == Some(&0x80) {
            bail!(
                "{}: legacy PyTorch format (torch < 1.6) is not supported yet: re-save it with \
                 torch.save(..., _use_new_zipfile_serialization=True)",
                path.display()
            );
        }
        bail!(
            "{} is not a PyTorch checkpoint (expected a zip archive written by torch.save): \
             re-download it",
            path.display()
        );
    }
    let archive_len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).with_context(|| {
        format!(
            "{} is truncated or corrupt (bad zip archive): re-download it",
            path.display()
        )
    })?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    let pkl = names
        .iter()
        .filter(|n| *n == "data.pkl" || (n.ends_with("/data.pkl") && n.matches('/').count() == 1))
        .min_by_key(|n| n.len())
        .cloned()
        .with_context(|| {
            format!(
                "{} has no <name>/data.pkl: it is a zip archive but not one written by torch.save",
                path.display()
            )
        })?;
    let prefix = pkl.trim_end_matches("data.pkl").to_owned();

    let mut read_member = |name: &str| -> Result<Vec<u8>> {
        let mut f = zip.by_name(name).with_context(|| {
            format!(
                "{} lacks archive member {name}: the file is truncated or corrupt, re-download it",
                path.display()
            )
        })?;
        let cap = f.size().min(archive_len);
        let mut buf = Vec::with_capacity(usize::try_from(cap).unwrap_or(0));
        f.read_to_end(&mut buf).with_context(|| {
            format!(
                "cannot read member {name} of {}: the file is corrupt, re-download it",
                path.display()
            )
        })?;
        Ok(buf)
    };

    let byteorder = format!("{prefix}byteorder");
    let big_endian = if names.contains(&byteorder) {
        let b = read_member(&byteorder)?;
        match b.trim_ascii() {
            b"little" => false,
            b"big" => true,
            other => bail!(
                "{} has byteorder {:?}; expected little or big",
                path.display(),
                String::from_utf8_lossy(other)
            ),
        }
    } else {
        false
    };

    let pickle = read_member(&pkl)?;
    let what = format!("{} ({pkl})", path.display());
    let top = Unpickler::new(&pickle, &what).run()?;
    let entries = state_dict_entries(&top, &what)?;

    // Decode each storage once; drop it after its last tensor.
    let mut uses: HashMap<String, usize> = HashMap::new();
    for (_, t) in &entries {
        *uses.entry(t.storage.key.clone()).or_default() += 1;
    }
    let mut cache: HashMap<String, Rc<Vec<f32>>> = HashMap::new();
    let mut out = BTreeMap::new();
    for (name, t) in entries {
        let st = &t.storage;
        let values = match cache.get(&st.key) {
            Some(v) => v.clone(),
            None => {
                let member = format!("{prefix}data/{}", st.key);
                let bytes = read_member(&member)?;
                let want = st.numel.checked_mul(st.dtype.size());
                if want.is_none_or(|w| bytes.len() < w) {
                    bail!(
                        "{}: storage {member} has {} bytes but tensor `{name}` needs {} {} \
                         elements: the file is truncated or corrupt, re-download it",
                        path.display(),
                        bytes.len(),
                        st.numel,
                        st.dtype
                    );
                }
                let usable = want.unwrap_or(0);
                let v = Rc::new(
                    st.dtype
                        .decode(&bytes[..usable], big_endian)
                        .with_context(|| format!("{}: storage {member}", path.display()))?,
                );
                cache.insert(st.key.clone(), v.clone());
                v
            }
        };
        let end = view_end(&t);
        if end.is_none_or(|e| e > values.len()) {
            bail!(
                "{}: tensor `{name}` (size {:?}, stride {:?}, offset {}) reaches past the end of \
                 its storage data/{} ({} elements): the file is corrupt, re-download it",
                path.display(),
                t.size,
                t.stride,
                t.offset,
                st.key,
                values.len()
            );
        }
        let data = gather(&values, &t);
        if let Some(n) = uses.get_mut(&st.key) {
            *n -= 1;
            if *n == 0 {
                cache.remove(&st.key);
            }
        }
        out.insert(
            name,
            HostTensor {
                shape: t.size.clone(),
                dtype: st.dtype,
                data,
            },
        );
    }
    Ok(out)
}
