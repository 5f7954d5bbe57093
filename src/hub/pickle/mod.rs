//! Reading the files `torch.save` and `torch.jit.save` write, without
//! PyTorch and without running any of their code.
//!
//! Three layouts, told apart by content:
//!
//! * **zip** (`torch.save`, torch >= 1.6): `<prefix>/data.pkl`, a pickle
//!   of the saved object in which every tensor is
//!   `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`
//!   and every storage a persistent id `('storage', torch.FloatStorage, key,
//!   location, numel)` whose bytes are the member `<prefix>/data/<key>`
//!   (little-endian unless `<prefix>/byteorder` says `big`); see
//!   [`archive`];
//! * **TorchScript** (`torch.jit.save`): the same zip layout, plus
//!   `code/` and `constants.pkl`, but `data.pkl` holds the module tree:
//!   objects of `__torch__.*` classes whose state dicts hold parameters,
//!   buffers and child modules; see [`torchscript`];
//! * **legacy** (`torch.save` before torch 1.6, or with
//!   `_use_new_zipfile_serialization=False`): pickles back to back, then the
//!   raw storages; see [`legacy`].
//!
//! The pickles are run by a small VM ([`vm`]) that knows only the opcodes and
//! globals these files use. It never imports or calls anything. It is
//! written here rather than taken from a general pickle crate so that what
//! it accepts stays short and auditable: torch's persistent storage ids, a
//! handful of tensor rebuilders interpreted by hand, and inert placeholders
//! for every other global. The same VM reads a pickled numpy array
//! ([`read_numpy_pickle`]).

mod archive;
mod legacy;
mod numpy;
mod torchscript;
mod vm;

#[cfg(test)]
pub(super) mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

use anyhow::{Context, Result, bail};

use super::safetensors_io::{LFS_POINTER, lfs_pointer_error};
use super::tensor::HostTensor;
pub use numpy::{NpArray, read_numpy_pickle};
use vm::{Storage, TensorRef, Value};

/// The tensors of a torch file, and how they were found (for messages).
#[derive(Debug)]
pub(crate) struct TorchFile {
    pub(crate) tensors: BTreeMap<String, HostTensor>,
    /// The layout read and anything unwrapped or ignored on the way, e.g.
    /// ``"took the tensors from the `state_dict` entry of a dict (also held:
    /// epoch, optimizer)"``.
    pub(crate) notes: Vec<String>,
}

/// Reads a `torch.save` file (zip or legacy format) holding a state_dict, or
/// a dict wrapping one under `state_dict`/`model`/`model_state_dict`/
/// `module`, or a TorchScript archive, into tensors by name, honouring
/// storage offsets and strides (views such as a transposed weight come out
/// contiguous, row-major).
///
/// Git LFS pointers and other formats are errors saying what to do.
pub fn read_pytorch_bin(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    Ok(read_torch_file(path)?.tensors)
}

/// [`read_pytorch_bin`], with notes on what was read.
pub(crate) fn read_torch_file(path: &Path) -> Result<TorchFile> {
    let head = read_head(path, 64)?;
    if head.starts_with(LFS_POINTER) {
        return Err(lfs_pointer_error(path));
    }
    if head.starts_with(b"PK\x03\x04") {
        return archive::read(path);
    }
    if head.first() == Some(&0x80) {
        return legacy::read(path);
    }
    bail!(
        "{} is not a PyTorch checkpoint (expected a zip archive written by torch.save or \
         torch.jit.save, or the legacy torch.save format): re-download it",
        path.display()
    )
}

/// The first `n` bytes of the file (fewer if it is shorter).
pub(crate) fn read_head(path: &Path, n: usize) -> Result<Vec<u8>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut head = Vec::with_capacity(n);
    file.take(n as u64)
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(head)
}

/// The `(name, tensor)` entries of the object a torch file holds: a
/// TorchScript module tree ([`torchscript::module_tensors`]), else a
/// state_dict (see [`state_dict_entries`]). Notes what was unwrapped and
/// which unknown classes were ignored.
fn tensor_entries(
    top: &Value,
    unknown: &BTreeSet<String>,
    what: &str,
    notes: &mut Vec<String>,
) -> Result<Vec<(String, Rc<TensorRef>)>> {
    let entries = match top {
        Value::Object(o) if o.class.starts_with("__torch__.") => {
            let entries = torchscript::module_tensors(top, what)?;
            notes.push(format!(
                "flattened the TorchScript module tree (top class {}) into {} parameters and \
                 buffers",
                o.class.trim_start_matches("__torch__."),
                entries.len()
            ));
            return Ok(entries);
        }
        _ => state_dict_entries(top, what, notes).map_err(|e| {
            if unknown.is_empty() {
                e
            } else {
                let shown: Vec<&str> = unknown.iter().take(8).map(String::as_str).collect();
                e.context(format!(
                    "{what} instantiates classes headstart does not know and does not import: {}",
                    shown.join(", ")
                ))
            }
        })?,
    };
    if !unknown.is_empty() {
        let shown: Vec<&str> = unknown.iter().take(8).map(String::as_str).collect();
        notes.push(format!(
            "ignored objects of classes headstart does not import: {}",
            shown.join(", ")
        ));
    }
    Ok(entries)
}

/// Keys under which checkpoints commonly wrap their state_dict.
const WRAPPERS: [&str; 4] = ["state_dict", "model_state_dict", "model", "module"];

/// The `(name, tensor)` entries of an unpickled state_dict. Accepts the
/// state_dict itself, or a dict wrapping it under one of [`WRAPPERS`]
/// (noted, with what else the wrapper held).
fn state_dict_entries(
    top: &Value,
    what: &str,
    notes: &mut Vec<String>,
) -> Result<Vec<(String, Rc<TensorRef>)>> {
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
        let others = d.len() - tensors.len();
        if others > 0 {
            notes.push(format!(
                "ignored {others} non-tensor entr{} of the state_dict",
                if others == 1 { "y" } else { "ies" }
            ));
        }
        return Ok(tensors);
    }
    let key_name = |k: &Value| match k {
        Value::Str(s) => s.to_string(),
        other => other.kind(),
    };
    for wrapper in WRAPPERS {
        if let Some(inner @ Value::Dict(_)) = top.get(wrapper) {
            let others: Vec<String> = d
                .iter()
                .map(|(k, _)| key_name(k))
                .filter(|k| k != wrapper)
                .take(8)
                .collect();
            notes.push(format!(
                "took the tensors from the `{wrapper}` entry of a dict{}",
                if others.is_empty() {
                    String::new()
                } else {
                    format!(" (also held: {})", others.join(", "))
                }
            ));
            return state_dict_entries(&inner, what, notes);
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

/// Turns tensor entries into host tensors. `load(storage, tensor_name)`
/// returns the decoded elements of a storage (at least `storage.numel`, or
/// an error naming the file); each storage is decoded once and dropped after
/// its last tensor.
fn materialize(
    entries: Vec<(String, Rc<TensorRef>)>,
    what: &str,
    load: &mut dyn FnMut(&Storage, &str) -> Result<Vec<f32>>,
) -> Result<BTreeMap<String, HostTensor>> {
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
                let v = Rc::new(load(st, &name)?);
                cache.insert(st.key.clone(), v.clone());
                v
            }
        };
        let end = view_end(&t);
        if end.is_none_or(|e| e > values.len()) {
            bail!(
                "{what}: tensor `{name}` (size {:?}, stride {:?}, offset {}) reaches past the end \
                 of its storage {} ({} elements): the file is corrupt, re-download it",
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
        if out
            .insert(
                name.clone(),
                HostTensor {
                    shape: t.size.clone(),
                    dtype: st.dtype,
                    data,
                },
            )
            .is_some()
        {
            bail!("{what} holds two tensors called `{name}`: the file is corrupt, re-download it");
        }
    }
    Ok(out)
}
