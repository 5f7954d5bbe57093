//! Reading files out of a Debian package without installing it: a `.deb`
//! is an `ar` archive (read with the `ar` crate) holding `debian-binary`,
//! `control.tar.*` and `data.tar.*`, the last a tarball of the installed
//! tree compressed with xz (what the pinned package uses), gzip, or not at
//! all.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The regular files `wanted` (paths as installed, e.g.
/// `usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz`; a leading
/// `/` or `./` is ignored on both sides) from the data tarball of the
/// `.deb` at `deb`, in the order asked. A missing one is an error.
pub fn read_deb_files(deb: &Path, wanted: &[&str]) -> Result<Vec<Vec<u8>>> {
    let file = File::open(deb).with_context(|| format!("opening {}", deb.display()))?;
    read_deb_files_from(BufReader::new(file), wanted)
        .with_context(|| format!("reading the Debian package {}", deb.display()))
}

fn normalise(path: &str) -> &str {
    path.trim_start_matches("./").trim_start_matches('/')
}

/// [`read_deb_files`] on any reader.
pub(crate) fn read_deb_files_from<R: Read>(reader: R, wanted: &[&str]) -> Result<Vec<Vec<u8>>> {
    let mut archive = ar::Archive::new(reader);
    let mut first = true;
    while let Some(entry) = archive.next_entry() {
        let entry = entry.context("not a valid ar archive (is the .deb truncated?)")?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if first {
            if name != "debian-binary" {
                bail!("first member is {name:?}, not debian-binary: not a Debian package");
            }
            first = false;
            continue;
        }
        let Some(compression) = name.strip_prefix("data.tar") else {
            continue;
        };
        let plain: Box<dyn Read + '_> = match compression {
            ".xz" => Box::new(liblzma::read::XzDecoder::new(entry)),
            ".gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            "" => Box::new(entry),
            other => bail!(
                "its data tarball is data.tar{other}; headstart reads xz, gzip or uncompressed ones"
            ),
        };
        return files_from_tar(plain, wanted).with_context(|| format!("reading {name}"));
    }
    if first {
        bail!("the archive is empty: not a Debian package");
    }
    bail!("it has no data.tar member");
}

fn files_from_tar(reader: impl Read, wanted: &[&str]) -> Result<Vec<Vec<u8>>> {
    let mut found: Vec<Option<Vec<u8>>> = vec![None; wanted.len()];
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(i) = wanted.iter().position(|w| normalise(w) == normalise(&path)) else {
            continue;
        };
        let mut bytes = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
        entry
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {path}"))?;
        found[i] = Some(bytes);
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    let missing: Vec<&str> = wanted
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(w, _)| *w)
        .collect();
    if !missing.is_empty() {
        bail!(
            "it lacks {}; is the pinned package the right one?",
            missing.join(", ")
        );
    }
    Ok(found.into_iter().flatten().collect())
}
