//! The zip layout shared by `torch.save` (torch >= 1.6) and `torch.jit.save`:
//! `<prefix>/data.pkl`, the storages as `<prefix>/data/<key>`, optionally
//! `<prefix>/byteorder`; TorchScript archives add `<prefix>/code/` and
//! `<prefix>/constants.pkl`, which are not needed for the weights.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::vm::{Unpickler, Value};
use super::{TorchFile, materialize, tensor_entries};

/// The `data.pkl` at the top of a torch zip archive (`data.pkl` or
/// `<prefix>/data.pkl`, the shortest if several), among member `names`.
pub(crate) fn top_data_pkl<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    names
        .into_iter()
        .filter(|n| *n == "data.pkl" || (n.ends_with("/data.pkl") && n.matches('/').count() == 1))
        .min_by_key(|n| n.len())
}

/// Reads a zip-format torch file: a state_dict (or a dict wrapping one) or a
/// TorchScript module tree.
pub(super) fn read(path: &Path) -> Result<TorchFile> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
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
    let pkl = top_data_pkl(names.iter().map(String::as_str))
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "{} has no <name>/data.pkl: it is a zip archive but not one written by \
                 torch.save or torch.jit.save",
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
    let mut vm = Unpickler::new(&pickle, &what);
    let top = vm.run()?;
    let torchscript = matches!(&top, Value::Object(o) if o.class.starts_with("__torch__."));
    let mut notes = vec![if torchscript {
        format!("TorchScript archive (torch.jit.save), module `{prefix}`")
    } else {
        "torch.save zip archive (torch >= 1.6)".to_owned()
    }];
    let entries = tensor_entries(&top, vm.unknown_classes(), &what, &mut notes)?;

    let tensors = materialize(entries, &what, &mut |st, name| {
        let member = format!("{prefix}data/{}", st.key);
        let bytes = read_member(&member)?;
        let want = st.numel.checked_mul(st.dtype.size());
        if want.is_none_or(|w| bytes.len() < w) {
            bail!(
                "{}: storage {member} has {} bytes but tensor `{name}` needs {} {} elements: \
                 the file is truncated or corrupt, re-download it",
                path.display(),
                bytes.len(),
                st.numel,
                st.dtype
            );
        }
        st.dtype
            .decode(&bytes[..want.unwrap_or(0)], big_endian)
            .with_context(|| format!("{}: storage {member}", path.display()))
    })?;
    Ok(TorchFile { tensors, notes })
}
