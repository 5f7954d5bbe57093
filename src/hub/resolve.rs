//! Turning `--model M` into a model directory on disk.
//!
//! Hugging Face cache layout (shared with Python's `huggingface_hub`):
//!
//! ```text
//! <cache>/models--org--name/refs/main          text file holding a commit hash
//! <cache>/models--org--name/snapshots/<commit>/config.json, model.safetensors, ...
//! <cache>/models--org--name/blobs/<etag>       the bytes; snapshot files link here
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::checkpoint::WEIGHT_FILES;

/// Where a model directory came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A directory given on the command line.
    LocalDir,
    /// A snapshot already in the Hugging Face cache; `revision` is the commit
    /// hash of that snapshot (the requested branch or tag resolved).
    HfCache {
        /// `org/name`.
        repo: String,
        /// Commit hash of the snapshot.
        revision: String,
    },
    /// Downloaded by this run into the Hugging Face cache; `revision` is the
    /// commit hash of the snapshot.
    Downloaded {
        /// `org/name`.
        repo: String,
        /// Commit hash of the snapshot.
        revision: String,
    },
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::LocalDir => f.write_str("local directory"),
            ModelSource::HfCache { repo, revision } => {
                write!(f, "{repo}@{revision} from the Hugging Face cache")
            }
            ModelSource::Downloaded { repo, revision } => {
                write!(
                    f,
                    "{repo}@{revision}, downloaded into the Hugging Face cache"
                )
            }
        }
    }
}

/// A model directory (holding `config.json` and weights) and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelDir {
    /// The directory: the local path as given, or a cache snapshot.
    pub path: PathBuf,
    /// How it was found.
    pub source: ModelSource,
}

fn non_empty_env(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// The Hugging Face hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub` (the same place Python's `huggingface_hub` uses,
/// so models downloaded by either are shared).
pub fn hf_cache_dir() -> PathBuf {
    if let Some(c) = non_empty_env("HF_HUB_CACHE") {
        return PathBuf::from(c);
    }
    if let Some(h) = non_empty_env("HF_HOME") {
        return PathBuf::from(h).join("hub");
    }
    let home = non_empty_env("HOME").or_else(|| non_empty_env("USERPROFILE"));
    match home {
        Some(h) => PathBuf::from(h)
            .join(".cache")
            .join("huggingface")
            .join("hub"),
        None => PathBuf::from(".cache").join("huggingface").join("hub"),
    }
}

/// Whether `HF_HUB_OFFLINE` forbids downloads: set to anything but empty,
/// `0`, `false`, `no` or `off` (case-insensitive).
pub fn hf_offline() -> bool {
    match std::env::var("HF_HUB_OFFLINE") {
        Ok(v) => {
            let v = v.trim().to_ascii_lowercase();
            !matches!(v.as_str(), "" | "0" | "false" | "no" | "off")
        }
        Err(std::env::VarError::NotPresent) => false,
        Err(std::env::VarError::NotUnicode(_)) => true,
    }
}

/// One path segment of a repo id: `[A-Za-z0-9._-]`, 1..=96 chars, no `--` or
/// `..`, not starting or ending with `.` or `-`.
fn valid_repo_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 96
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !s.contains("--")
        && !s.contains("..")
        && !s.starts_with(['.', '-'])
        && !s.ends_with(['.', '-'])
}

/// A revision: a branch, tag (may contain `/`, e.g. `refs/pr/1`) or commit
/// hash; never an absolute path or one with `.`/`..` segments.
fn valid_revision(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
        && s.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// Parses a hub id: `org/name`, `org/name@revision` or plain `name` (e.g.
/// `bert-base-uncased`). Returns `(repo, revision)`, or `None` when `s` is
/// not shaped like a hub id (paths such as `./x` or `/a/b/c`, spaces, ...).
pub fn parse_hub_id(s: &str) -> Option<(String, Option<String>)> {
    let (repo, revision) = match s.split_once('@') {
        Some((r, rev)) => {
            if !valid_revision(rev) {
                return None;
            }
            (r, Some(rev.to_owned()))
        }
        None => (s, None),
    };
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() > 2 || !parts.iter().all(|p| valid_repo_part(p)) {
        return None;
    }
    Some((repo.to_owned(), revision))
}

/// `models--org--name`: the cache folder of a model repo.
fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Looks `repo` up in a hub cache directory: `models--org--name/snapshots/<commit>/`.
///
/// `revision` `None` means `refs/main`; a revision is either a ref name (a
/// file under `refs/` holding a commit hash) or a commit hash (full, or a
/// unique prefix of at least 7 hex digits) naming `snapshots/<hash>`.
/// Returns `Ok(None)` when the repo, ref or snapshot is absent; errors only
/// for unreadable or corrupt cache entries and malformed arguments.
pub fn resolve_in_cache(
    cache: &Path,
    repo: &str,
    revision: Option<&str>,
) -> Result<Option<PathBuf>> {
    if !repo.split('/').all(valid_repo_part) || repo.split('/').count() > 2 {
        bail!("`{repo}` is not a valid hub repo id (expected `org/name` or `name`)");
    }
    let rev = revision.unwrap_or("main");
    if !valid_revision(rev) {
        bail!("`{rev}` is not a valid revision (expected a branch, tag or commit hash)");
    }
    let folder = cache.join(repo_folder(repo));
    if !folder.is_dir() {
        return Ok(None);
    }
    let snapshots = folder.join("snapshots");
    let ref_file = folder.join("refs").join(rev);
    match std::fs::read_to_string(&ref_file) {
        Ok(text) => {
            let commit = text.trim();
            if !is_hex(commit) && !valid_repo_part(commit) {
                bail!(
                    "{} should hold a commit hash but holds {:?}: delete it and download the \
                     model again",
                    ref_file.display(),
                    text.chars().take(60).collect::<String>()
                );
            }
            let snap = snapshots.join(commit);
            return Ok(snap.is_dir().then_some(snap));
        }
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::IsADirectory) => {}
        // `refs/<rev>` is a folder of other refs (e.g. `refs/pr`), not a ref.
        Err(_) if ref_file.is_dir() => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", ref_file.display()));
        }
    }
    if !(is_hex(rev) && rev.len() >= 7) {
        return Ok(None);
    }
    let exact = snapshots.join(rev);
    if exact.is_dir() {
        return Ok(Some(exact));
    }
    let entries = match std::fs::read_dir(&snapshots) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", snapshots.display())),
    };
    let rev_lower = rev.to_ascii_lowercase();
    let matches: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&rev_lower))
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    match matches.len() {
        0 => Ok(None),
        1 => Ok(matches.into_iter().next()),
        n => bail!(
            "revision `{rev}` matches {n} snapshots of {repo} in {}: give more digits of the \
             commit hash",
            snapshots.display()
        ),
    }
}

/// Full resolution of `--model M`, reading `HF_HUB_CACHE`/`HF_HOME` and
/// `HF_HUB_OFFLINE`; see [`resolve_model_in`].
pub fn resolve_model(spec: &str) -> Result<ModelDir> {
    resolve_model_in(spec, &hf_cache_dir(), hf_offline())
}

/// What a usable snapshot lacks (`config.json`, weights), if anything.
fn snapshot_gaps(dir: &Path) -> Vec<&'static str> {
    let mut gaps = Vec::new();
    if !dir.join("config.json").is_file() {
        gaps.push("config.json");
    }
    if !WEIGHT_FILES.iter().any(|w| dir.join(w).is_file()) {
        gaps.push("weights (model.safetensors or pytorch_model.bin)");
    }
    gaps
}

/// [`resolve_model`] with the cache directory and offline flag given:
///
/// 1. an existing directory -> [`ModelSource::LocalDir`] (it must hold
///    `config.json`);
/// 2. else a hub id whose snapshot in `cache` holds `config.json` and
///    weights -> [`ModelSource::HfCache`];
/// 3. else, unless `offline`, download `config.json`, the weights and the
///    tokenizer files into `cache` -> [`ModelSource::Downloaded`];
/// 4. else an error saying which of these failed and what to do.
pub fn resolve_model_in(spec: &str, cache: &Path, offline: bool) -> Result<ModelDir> {
    if spec.trim().is_empty() {
        bail!("--model is empty: pass a model directory or a hub id such as `org/name`");
    }
    let path = Path::new(spec);
    if path.is_dir() {
        if !path.join("config.json").is_file() {
            bail!(
                "{} is a directory but has no config.json: expected a Hugging Face model \
                 directory (config.json plus model.safetensors or pytorch_model.bin, and \
                 tokenizer files)",
                path.display()
            );
        }
        return Ok(ModelDir {
            path: path.to_path_buf(),
            source: ModelSource::LocalDir,
        });
    }
    if path.exists() {
        bail!(
            "{} is a file; --model wants a model directory (with config.json and weights) or a \
             hub id such as `org/name`",
            path.display()
        );
    }
    let looks_like_path = path.is_absolute()
        || spec.starts_with('.')
        || spec.starts_with('~')
        || spec.contains('\\')
        || path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir));
    let Some((repo, revision)) = parse_hub_id(spec).filter(|_| !looks_like_path) else {
        bail!(
            "{spec} is neither an existing directory nor a hub id (`org/name` or \
             `org/name@revision`): check the path"
        );
    };
    let rev_label = revision.as_deref().unwrap_or("main");
    let cached = resolve_in_cache(cache, &repo, revision.as_deref())?;
    let mut why_not_cached = format!(
        "not in the Hugging Face cache at {} ({} has no snapshot for `{rev_label}`)",
        cache.display(),
        repo_folder(&repo)
    );
    if let Some(snap) = cached {
        let gaps = snapshot_gaps(&snap);
        if gaps.is_empty() {
            let commit = snap
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Ok(ModelDir {
                path: snap,
                source: ModelSource::HfCache {
                    repo,
                    revision: commit,
                },
            });
        }
        why_not_cached = format!(
            "only partly in the Hugging Face cache: snapshot {} lacks {}",
            snap.display(),
            gaps.join(" and ")
        );
    }
    if offline {
        bail!(
            "`{spec}` is not a local directory, and {repo}@{rev_label} is {why_not_cached}; \
             HF_HUB_OFFLINE is set, so it will not be downloaded. Unset HF_HUB_OFFLINE, fetch it \
             elsewhere (`huggingface-cli download {repo}`) and copy the cache, or pass a local \
             model directory"
        );
    }
    let (path, commit) = download(cache, &repo, revision.as_deref()).with_context(|| {
        format!("{repo}@{rev_label} is {why_not_cached}, and downloading it failed")
    })?;
    Ok(ModelDir {
        path,
        source: ModelSource::Downloaded {
            repo,
            revision: commit,
        },
    })
}

/// Tokenizer and sentence-transformers files fetched when the repo has them.
const OPTIONAL_FILES: [&str; 9] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "modules.json",
    "1_Pooling/config.json",
    "sentence_bert_config.json",
];

/// Downloads a model into `cache` with `hf-hub`; returns the snapshot
/// directory and its commit hash.
///
/// When the hub lists the repo, every file is fetched at the listed commit,
/// files already in that snapshot are reused, and `refs/<revision>` is
/// pointed at the commit, so a partly cached older snapshot never mixes with
/// a newer one and the next run finds the model offline.
fn download(cache: &Path, repo_id: &str, revision: Option<&str>) -> Result<(PathBuf, String)> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Cache, Repo, RepoType};

    let mut builder = ApiBuilder::from_cache(Cache::new(cache.to_path_buf()));
    if let Some(token) = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        builder = builder.with_token(Some(token.trim().to_owned()));
    }
    if let Some(endpoint) = std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())
    {
        builder = builder.with_endpoint(endpoint.trim().trim_end_matches('/').to_owned());
    }
    let api = builder
        .build()
        .context("cannot set up the Hugging Face hub client")?;
    let rev = revision.unwrap_or("main").to_owned();
    let model = |r: &str| Repo::with_revision(repo_id.to_owned(), RepoType::Model, r.to_owned());

    // The listing gives the commit and which optional files exist; if it is
    // refused (some mirrors), fetch by revision and probe each file instead.
    let info = api.repo(model(&rev)).info().ok();
    let commit = info
        .as_ref()
        .map(|i| i.sha.clone())
        .filter(|sha| valid_repo_part(sha));
    let listing: Option<BTreeSet<String>> =
        info.map(|i| i.siblings.into_iter().map(|s| s.rfilename).collect());
    let has = |f: &str| listing.as_ref().is_none_or(|l| l.contains(f));
    let hub = api.repo(model(commit.as_deref().unwrap_or(&rev)));
    let pinned = commit
        .as_ref()
        .map(|sha| cache.join(repo_folder(repo_id)).join("snapshots").join(sha));
    let fetch = |f: &str| -> std::result::Result<PathBuf, hf_hub::api::sync::ApiError> {
        if let Some(p) = pinned.as_ref().map(|d| d.join(f)).filter(|p| p.is_file()) {
            return Ok(p);
        }
        hub.get(f)
    };

    let config = fetch("config.json").map_err(|e| {
        anyhow::anyhow!(
            "cannot download config.json of {repo_id}@{rev}: {e}. Check the name \
             (https://huggingface.co/{repo_id}), the network, and for gated or private models \
             a token (HF_TOKEN or `huggingface-cli login`); HF_HUB_OFFLINE=1 uses only the cache"
        )
    })?;
    let snapshot = config
        .parent()
        .map(Path::to_path_buf)
        .context("hf-hub returned a config.json path without a parent directory")?;

    let mut got_weights = None;
    let mut failures = Vec::new();
    for w in WEIGHT_FILES {
        if !has(w) {
            continue;
        }
        match fetch(w) {
            Ok(p) => {
                got_weights = Some((w, p));
                break;
            }
            Err(e) => failures.push(format!("{w}: {e}")),
        }
    }
    let Some((weights_name, weights_path)) = got_weights else {
        let listed = listing
            .map(|l| l.into_iter().collect::<Vec<_>>().join(", "))
            .unwrap_or_else(|| failures.join("; "));
        bail!(
            "{repo_id}@{rev} has none of {} ({listed}): headstart needs PyTorch or safetensors \
             weights",
            WEIGHT_FILES.join(", ")
        );
    };
    if weights_path.parent() != Some(snapshot.as_path()) {
        bail!(
            "{repo_id}@{rev} changed while downloading (config.json is in {}, {weights_name} in \
             {}): run again",
            snapshot.display(),
            weights_path.display()
        );
    }
    if weights_name.ends_with(".index.json") {
        let text = std::fs::read_to_string(&weights_path)
            .with_context(|| format!("cannot read {}", weights_path.display()))?;
        let index: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", weights_path.display()))?;
        let shards: BTreeSet<String> = index
            .get("weight_map")
            .and_then(|m| m.as_object())
            .with_context(|| format!("{} has no weight_map", weights_path.display()))?
            .values()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        for shard in shards {
            fetch(&shard)
                .with_context(|| format!("cannot download shard {shard} of {repo_id}@{rev}"))?;
        }
    }
    for f in OPTIONAL_FILES {
        if has(f) {
            // Optional: a failure here only means the repo lacks the file.
            let _ = fetch(f);
        }
    }
    let commit = snapshot
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if commit != rev && valid_repo_part(&commit) {
        // Point refs/<rev> at what we fetched so resolve_in_cache finds it.
        let ref_file = cache.join(repo_folder(repo_id)).join("refs").join(&rev);
        let written = ref_file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&ref_file, &commit));
        written.with_context(|| format!("cannot write {}", ref_file.display()))?;
    }
    Ok((snapshot, commit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const MAIN: &str = "0123456789abcdef0123456789abcdef01234567";
    const OLD: &str = "fedcba9876543210fedcba9876543210fedcba98";

    /// A cache with `org/model` at two commits (`main` -> MAIN, tag `v1` -> OLD)
    /// and MAIN holding config + weights.
    fn fake_cache() -> tempfile::TempDir {
        let cache = tempfile::tempdir().unwrap();
        let repo = cache.path().join("models--org--model");
        for (commit, complete) in [(MAIN, true), (OLD, false)] {
            let snap = repo.join("snapshots").join(commit);
            fs::create_dir_all(&snap).unwrap();
            fs::write(snap.join("config.json"), "{}").unwrap();
            if complete {
                fs::write(snap.join("model.safetensors"), "x").unwrap();
            }
        }
        fs::create_dir_all(repo.join("refs").join("pr")).unwrap();
        fs::write(repo.join("refs/main"), format!("{MAIN}\n")).unwrap();
        fs::write(repo.join("refs/v1"), OLD).unwrap();
        fs::write(repo.join("refs/pr/1"), OLD).unwrap();
        cache
    }

    #[test]
    fn parses_hub_ids() {
        assert_eq!(parse_hub_id("org/name"), Some(("org/name".into(), None)));
        assert_eq!(
            parse_hub_id("sentence-transformers/all-MiniLM-L6-v2@v1.0"),
            Some((
                "sentence-transformers/all-MiniLM-L6-v2".into(),
                Some("v1.0".into())
            ))
        );
        assert_eq!(
            parse_hub_id("bert-base-uncased"),
            Some(("bert-base-uncased".into(), None))
        );
        assert_eq!(
            parse_hub_id("org/name@refs/pr/1"),
            Some(("org/name".into(), Some("refs/pr/1".into())))
        );
        for bad in [
            "",
            "a/b/c",
            "/abs",
            "org/",
            "org/name@",
            "org/na me",
            "../x",
            "org/..",
            "a--b/c",
            "org/name@../x",
            "org/name@a//b",
        ] {
            assert_eq!(parse_hub_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn resolves_refs_and_hashes_in_cache() {
        let cache = fake_cache();
        let snaps = cache.path().join("models--org--model/snapshots");
        let c = cache.path();
        assert_eq!(
            resolve_in_cache(c, "org/model", None).unwrap(),
            Some(snaps.join(MAIN))
        );
        assert_eq!(
            resolve_in_cache(c, "org/model", Some("main")).unwrap(),
            Some(snaps.join(MAIN))
        );
        assert_eq!(
            resolve_in_cache(c, "org/model", Some("v1")).unwrap(),
            Some(snaps.join(OLD))
        );
        assert_eq!(
            resolve_in_cache(c, "org/model", Some("pr/1")).unwrap(),
            Some(snaps.join(OLD))
        );
        assert_eq!(
            resolve_in_cache(c, "org/model", Some(OLD)).unwrap(),
            Some(snaps.join(OLD))
        );
        assert_eq!(
            resolve_in_cache(c, "org/model", Some("fedcba98")).unwrap(),
            Some(snaps.join(OLD))
        );
        // absent: repo, ref, hash; `pr` is a folder of refs, not a ref
        assert_eq!(resolve_in_cache(c, "org/other", None).unwrap(), None);
        assert_eq!(resolve_in_cache(c, "org/model", Some("dev")).unwrap(), None);
        assert_eq!(
            resolve_in_cache(c, "org/model", Some("abcabcabc")).unwrap(),
            None
        );
        assert_eq!(resolve_in_cache(c, "org/model", Some("pr")).unwrap(), None);
        assert_eq!(
            resolve_in_cache(&c.join("nowhere"), "org/model", None).unwrap(),
            None
        );
        // a ref pointing at a missing snapshot is absent too
        fs::write(
            c.join("models--org--model/refs/gone"),
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        )
        .unwrap();
        assert_eq!(
            resolve_in_cache(c, "org/model", Some("gone")).unwrap(),
            None
        );
        // a corrupt ref and malformed arguments are errors
        fs::write(c.join("models--org--model/refs/bad"), "../../etc").unwrap();
        let err = resolve_in_cache(c, "org/model", Some("bad"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("refs/bad") && err.contains("commit hash"),
            "{err}"
        );
        assert!(resolve_in_cache(c, "org/model", Some("../x")).is_err());
        assert!(resolve_in_cache(c, "a/b/c", None).is_err());
    }

    #[test]
    fn resolve_model_offline() {
        let cache = fake_cache();
        let c = cache.path();
        let snaps = c.join("models--org--model/snapshots");

        let got = resolve_model_in("org/model", c, true).unwrap();
        assert_eq!(got.path, snaps.join(MAIN));
        assert_eq!(
            got.source,
            ModelSource::HfCache {
                repo: "org/model".into(),
                revision: MAIN.into()
            }
        );
        assert_eq!(
            got.source.to_string(),
            format!("org/model@{MAIN} from the Hugging Face cache")
        );

        // v1's snapshot has config.json but no weights: offline that is an error
        let err = resolve_model_in("org/model@v1", c, true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lacks weights") && err.contains("HF_HUB_OFFLINE"),
            "{err}"
        );

        let err = resolve_model_in("org/absent", c, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not in the Hugging Face cache at"), "{err}");
        assert!(
            err.contains(&c.display().to_string()) && err.contains("HF_HUB_OFFLINE"),
            "{err}"
        );

        // a local directory wins, and must hold config.json
        let local = tempfile::tempdir().unwrap();
        let spec = local.path().to_str().unwrap();
        let err = resolve_model_in(spec, c, true).unwrap_err().to_string();
        assert!(
            err.contains("has no config.json") && err.contains(spec),
            "{err}"
        );
        fs::write(local.path().join("config.json"), "{}").unwrap();
        let got = resolve_model_in(spec, c, true).unwrap();
        assert_eq!(
            got,
            ModelDir {
                path: local.path().to_path_buf(),
                source: ModelSource::LocalDir
            }
        );

        // a file, and a path that does not exist
        let err = resolve_model_in(local.path().join("config.json").to_str().unwrap(), c, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a file"), "{err}");
        let err = resolve_model_in("./no/such/dir", c, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("neither an existing directory nor a hub id"),
            "{err}"
        );
        assert!(resolve_model_in("  ", c, true).is_err());
    }
}
