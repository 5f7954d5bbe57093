//! `resolve_model` reads HF_HUB_CACHE / HF_HOME / HF_HUB_OFFLINE. Environment
//! variables are process-global, so everything that sets them is in this one
//! test (its own test binary).

use std::fs;

use headstart::hub::{ModelSource, hf_cache_dir, hf_offline, resolve_model};

#[test]
fn resolve_model_uses_hf_env() {
    let cache = tempfile::tempdir().unwrap();
    let commit = "1111111111111111111111111111111111111111";
    let snap = cache
        .path()
        .join("models--acme--tiny/snapshots")
        .join(commit);
    fs::create_dir_all(&snap).unwrap();
    fs::create_dir_all(cache.path().join("models--acme--tiny/refs")).unwrap();
    fs::write(cache.path().join("models--acme--tiny/refs/main"), commit).unwrap();
    fs::write(snap.join("config.json"), "{}").unwrap();
    fs::write(snap.join("model.safetensors"), "x").unwrap();

    // SAFETY: no other thread of this test binary reads the environment.
    unsafe {
        std::env::remove_var("HF_HUB_CACHE");
        std::env::set_var("HF_HOME", "/tmp/hf-home");
        std::env::set_var("HF_HUB_OFFLINE", "false");
    }
    assert_eq!(hf_cache_dir(), std::path::PathBuf::from("/tmp/hf-home/hub"));
    assert!(!hf_offline());

    unsafe {
        std::env::set_var("HF_HUB_CACHE", cache.path());
        std::env::set_var("HF_HUB_OFFLINE", "1");
    }
    assert_eq!(hf_cache_dir(), cache.path());
    assert!(hf_offline());

    let got = resolve_model("acme/tiny").unwrap();
    assert_eq!(got.path, snap);
    assert_eq!(
        got.source,
        ModelSource::HfCache {
            repo: "acme/tiny".into(),
            revision: commit.into()
        }
    );
    let got = resolve_model(&format!("acme/tiny@{commit}")).unwrap();
    assert_eq!(got.path, snap);

    // offline and not cached: a clear error, no network
    let err = resolve_model("acme/missing").unwrap_err().to_string();
    assert!(
        err.contains("HF_HUB_OFFLINE") && err.contains("not in the Hugging Face cache"),
        "{err}"
    );
}
