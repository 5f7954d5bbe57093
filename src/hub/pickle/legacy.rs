//! The legacy `torch.save` format (torch < 1.6, or
//! `_use_new_zipfile_serialization=False`), not a zip: five pickles back to
//! back,
//!
//! 1. the magic number 0x1950a86a20f9469cfc6c,
//! 2. the protocol version, 1001,
//! 3. `sys_info`: `{'protocol_version': 1001, 'little_endian': bool,
//!    'type_sizes': {...}}`,
//! 4. the saved object, whose storages are persistent ids `('storage',
//!    torch.FloatStorage, key, location, numel, view)`,
//! 5. the list of storage keys,
//!
//! then, for each key of that list in order, the storage's element count as
//! a u64 and its raw elements, both in the byte order `sys_info` gives.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::vm::{Unpickler, Value};
use super::{TorchFile, materialize, tensor_entries};

/// The magic number 0x1950a86a20f9469cfc6c, little-endian, as the first
/// pickle holds it.
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// The protocol version legacy files record.
const PROTOCOL_VERSION: i64 = 1001;

/// Reads a legacy-format torch file (the caller saw that it starts like a
/// pickle).
pub(super) fn read(path: &Path) -> Result<TorchFile> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: the map is read-only and lives only for this call; like
    // read_safetensors, this assumes the file is not truncated meanwhile.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("cannot memory-map {}", path.display()))?;
    read_bytes(&map, &path.display().to_string())
}

/// [`read`] on the file's bytes; `file` names it in messages.
pub(super) fn read_bytes(bytes: &[u8], file: &str) -> Result<TorchFile> {
    let parts = [
        "magic number",
        "protocol version",
        "sys_info",
        "saved object",
        "storage keys",
    ]
    .map(|part| format!("{file} (legacy torch.save format, {part})"));
    let mut pos = 0;
    let mut values = Vec::with_capacity(parts.len());
    let mut object_vm = None;
    for (i, what) in parts.iter().enumerate() {
        let mut vm = Unpickler::new(&bytes[pos..], what);
        let value = vm.run();
        if i == 0 && !matches!(&value, Ok(Value::BigInt(b)) if **b == MAGIC) {
            bail!(
                "{file} is a pickle but not a file written by torch.save (no torch magic \
                 number at its start): headstart reads torch.save and torch.jit.save files \
                 and safetensors; re-save the weights with torch.save(model.state_dict(), path)"
            );
        }
        values.push(value?);
        pos += vm.position();
        if i == 3 {
            object_vm = Some(vm);
        }
    }
    let [_magic, version, sys_info, top, keys] = <[Value; 5]>::try_from(values)
        .map_err(|_| anyhow::anyhow!("{file}: five pickles expected"))?;
    let vm = object_vm.expect("the loop keeps the VM of the saved object");
    if !matches!(version, Value::Int(PROTOCOL_VERSION)) {
        bail!(
            "{file} is a legacy torch.save file of protocol version {}; headstart reads \
             version {PROTOCOL_VERSION}: re-save it with a recent torch",
            version.describe()
        );
    }
    let little_endian = !matches!(sys_info.get("little_endian"), Some(Value::Bool(false)));
    let Value::List(keys) = keys else {
        bail!(
            "{file} is corrupt (the list of storage keys is a {}): re-download it",
            keys.kind()
        );
    };
    let storages = vm.storages();

    // Where each storage's elements lie in the file.
    let mut records: HashMap<String, (usize, usize)> = HashMap::new();
    for key in keys.borrow().iter() {
        let Value::Str(key) = key else {
            bail!(
                "{file} is corrupt (a storage key is a {}): re-download it",
                key.kind()
            );
        };
        let st = storages.get(&**key).with_context(|| {
            format!("{file} is corrupt (storage {key} is listed but never used): re-download it")
        })?;
        let count_bytes: [u8; 8] = bytes
            .get(pos..pos + 8)
            .and_then(|b| b.try_into().ok())
            .with_context(|| truncated(file, key))?;
        let count = if little_endian {
            u64::from_le_bytes(count_bytes)
        } else {
            u64::from_be_bytes(count_bytes)
        };
        if usize::try_from(count).ok() != Some(st.numel) {
            bail!(
                "{file} is corrupt (storage {key} holds {count} elements on disk but {} in the \
                 pickle): re-download it",
                st.numel
            );
        }
        let start = pos + 8;
        let end = st
            .numel
            .checked_mul(st.dtype.size())
            .and_then(|n| n.checked_add(start))
            .filter(|&end| end <= bytes.len())
            .with_context(|| truncated(file, key))?;
        records.insert(key.to_string(), (start, end));
        pos = end;
    }

    let what = format!("{file} (legacy torch.save format)");
    let mut notes = vec!["legacy torch.save format (torch < 1.6)".to_owned()];
    let entries = tensor_entries(&top, vm.unknown_classes(), &what, &mut notes)?;
    let tensors = materialize(entries, &what, &mut |st, name| {
        let &(start, end) = records.get(&st.key).with_context(|| {
            format!(
                "{file} is corrupt (tensor `{name}` uses storage {}, which the file does not \
                 store): re-download it",
                st.key
            )
        })?;
        st.dtype
            .decode(&bytes[start..end], !little_endian)
            .with_context(|| format!("{file}: storage {}", st.key))
    })?;
    Ok(TorchFile { tensors, notes })
}

fn truncated(file: &str, key: &str) -> String {
    format!("{file} is truncated (it ends inside storage {key}): re-download it")
}
