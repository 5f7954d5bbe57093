//! Debian packages: downloading a pinned `.deb` with `apt-get download`
//! (which works unprivileged, into the current directory) and keeping it,
//! verified, in `downloads/`.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{lock, remove_leftovers, verify_sha256};

/// A pinned Debian package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebPackage {
    /// The package name, e.g. `dataset-fashion-mnist`.
    pub name: &'static str,
    /// The pinned version, e.g. `0.0~git20200523.55506a9-1`.
    pub version: &'static str,
    /// sha256 of the `.deb` file (lowercase hex).
    pub sha256: &'static str,
    /// File name the verified package is kept under in `downloads/` (what
    /// `apt-get download` names it).
    pub file: &'static str,
    /// Approximate size, for progress messages.
    pub size_mb: u32,
}

impl DebPackage {
    /// `name=version`, as apt wants it.
    pub fn requirement(&self) -> String {
        format!("{}={}", self.name, self.version)
    }

    /// Where the verified package is kept under `home`.
    pub fn kept_path(&self, home: &Path) -> PathBuf {
        home.join("downloads").join(self.file)
    }
}

fn tmp_prefix(deb: &DebPackage) -> String {
    format!("tmp-{}-", deb.name)
}

/// The verified `.deb` of `deb` in `home/downloads/`, downloaded with
/// [`apt_download`] first if it is missing or corrupt.
pub fn fetch_deb(deb: &DebPackage, home: &Path, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    fetch_deb_with(deb, home, &mut apt_download, log)
}

/// Downloads `deb` into the (empty) directory given; exactly one `.deb`
/// file must be there afterwards.
pub(crate) type DebDownloader<'a> =
    dyn FnMut(&DebPackage, &Path, &mut dyn FnMut(&str)) -> Result<()> + 'a;

/// [`fetch_deb`] with the download step supplied by the caller.
pub(crate) fn fetch_deb_with(
    deb: &DebPackage,
    home: &Path,
    download: &mut DebDownloader<'_>,
    log: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    let downloads = home.join("downloads");
    fs::create_dir_all(&downloads).with_context(|| format!("creating {}", downloads.display()))?;
    let _lock = lock(deb.name, home, log)?;
    remove_leftovers(&downloads, &tmp_prefix(deb), deb.name, log)?;
    let kept = deb.kept_path(home);
    if kept.exists() {
        log(&format!(
            "{}: checking the sha256 of {}",
            deb.name,
            kept.display()
        ));
        match verify_sha256(&kept, deb.sha256) {
            Ok(()) => return Ok(kept),
            Err(e) => log(&format!("{}: {e:#}; downloading again", deb.name)),
        }
    }

    let tmp = downloads.join(format!("{}{}", tmp_prefix(deb), std::process::id()));
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = (|| -> Result<PathBuf> {
        download(deb, &tmp, log)?;
        let got =
            single_deb_in(&tmp).with_context(|| format!("downloading {}", deb.requirement()))?;
        log(&format!(
            "{}: checking the sha256 of {}",
            deb.name,
            got.display()
        ));
        verify_sha256(&got, deb.sha256)
            .with_context(|| format!("verifying the Debian package {}", deb.requirement()))?;
        fs::rename(&got, &kept)
            .with_context(|| format!("moving {} to {}", got.display(), kept.display()))?;
        Ok(kept.clone())
    })();
    // Best effort: a leftover is removed by the next run anyway.
    let _ = fs::remove_dir_all(&tmp);
    result
}

fn single_deb_in(dir: &Path) -> Result<PathBuf> {
    let mut debs = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            debs.push(path);
        }
    }
    match debs.len() {
        1 => Ok(debs.pop().expect("one package")),
        0 => bail!("no .deb file appeared in {}", dir.display()),
        n => bail!("{n} .deb files appeared in {}, expected one", dir.display()),
    }
}

/// Download `deb` (exactly the pinned version) into `dir` with `apt-get
/// download`, which needs no root.
pub fn apt_download(deb: &DebPackage, dir: &Path, log: &mut dyn FnMut(&str)) -> Result<()> {
    let by_hand = format!(
        "or download {} (sha256 {}) from a Debian mirror by hand and put it in {}",
        deb.file,
        deb.sha256,
        dir.parent().unwrap_or(dir).display()
    );
    log(&format!(
        "{}: downloading {} (about {} MB) from Debian with `apt-get download`",
        deb.name,
        deb.requirement(),
        deb.size_mb
    ));
    let output = match Command::new("apt-get")
        .arg("download")
        .arg(deb.requirement())
        .current_dir(dir)
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "`apt-get` was not found: headstart fetches {} from Debian with `apt-get download`, \
             so it needs apt (a Debian or Ubuntu system, or the `apt` package), {by_hand}",
            deb.name
        ),
        Err(e) => return Err(e).context("running `apt-get download`"),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("Unable to locate package")
            || stderr.contains("Can't select")
            || stderr.contains("not found")
        {
            format!(
                "apt does not know {} (run `apt-get update` as root first; the package is in \
                 Debian bookworm's main archive)",
                deb.requirement()
            )
        } else {
            "is a Debian mirror reachable?".to_owned()
        };
        let lines: Vec<&str> = stderr.lines().collect();
        bail!(
            "`apt-get download {}` failed ({}): {hint}, {by_hand}\n{}",
            deb.requirement(),
            output.status,
            lines[lines.len().saturating_sub(20)..].join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::sha256_file;

    fn deb_named(sha256: &'static str) -> DebPackage {
        DebPackage {
            name: "dataset-test",
            version: "1.0-1",
            sha256,
            file: "dataset-test_1.0-1_all.deb",
            size_mb: 1,
        }
    }

    /// A downloader that writes `bytes` as the package file and counts calls.
    fn writes<'a>(bytes: &'static [u8], calls: &'a mut usize) -> Box<DebDownloader<'a>> {
        Box::new(
            move |deb: &DebPackage, dir: &Path, _log: &mut dyn FnMut(&str)| {
                *calls += 1;
                fs::write(dir.join(deb.file), bytes)?;
                Ok(())
            },
        )
    }

    #[test]
    fn keeps_a_verified_package_and_reuses_it() {
        let home = tempfile::tempdir().unwrap();
        let probe = home.path().join("probe");
        fs::write(&probe, b"package").unwrap();
        let sha: &'static str = sha256_file(&probe).unwrap().leak();
        let deb = deb_named(sha);
        // A leftover of a killed download goes.
        let leftover = home.path().join("downloads/tmp-dataset-test-1");
        fs::create_dir_all(&leftover).unwrap();

        let mut calls = 0;
        let kept = fetch_deb_with(
            &deb,
            home.path(),
            &mut writes(b"package", &mut calls),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(kept, deb.kept_path(home.path()));
        assert_eq!(fs::read(&kept).unwrap(), b"package");
        assert!(!leftover.exists());
        let again = fetch_deb_with(
            &deb,
            home.path(),
            &mut writes(b"package", &mut calls),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!((again, calls), (kept.clone(), 1));

        // A corrupt kept file is downloaded again.
        fs::write(&kept, b"torn").unwrap();
        fetch_deb_with(
            &deb,
            home.path(),
            &mut writes(b"package", &mut calls),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!((fs::read(&kept).unwrap(), calls), (b"package".to_vec(), 2));
    }

    #[test]
    fn a_wrong_download_is_not_kept() {
        let home = tempfile::tempdir().unwrap();
        let deb = deb_named("00");
        let mut calls = 0;
        let err = fetch_deb_with(
            &deb,
            home.path(),
            &mut writes(b"other", &mut calls),
            &mut |_| {},
        )
        .unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("sha256 mismatch") && err.contains("dataset-test=1.0-1"),
            "{err}"
        );
        assert!(!deb.kept_path(home.path()).exists());
        let left: Vec<_> = fs::read_dir(home.path().join("downloads"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");

        let mut none = |_: &DebPackage, _: &Path, _: &mut dyn FnMut(&str)| Ok(());
        let err = format!(
            "{:#}",
            fetch_deb_with(&deb, home.path(), &mut none, &mut |_| {}).unwrap_err()
        );
        assert!(err.contains("no .deb file appeared"), "{err}");
    }
}
