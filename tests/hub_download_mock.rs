//! The download path of `resolve_model_in`, against a tiny in-process HTTP
//! server that answers like the Hugging Face hub (HF_ENDPOINT points at it).
//! HF_ENDPOINT is process-global, so this binary has a single test.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use headstart::hub::{Checkpoint, ModelSource, resolve_model_in, write_safetensors};

const SHA: &str = "abcdef0123456789abcdef0123456789abcdef01";

/// Serves `files` of repo `acme/tiny` at commit SHA: the listing API and
/// `resolve/<rev>/<file>` with Range support. Returns the endpoint URL.
fn serve(files: BTreeMap<String, Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let mut range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if request.is_empty() {
                    request = line.clone();
                } else if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    range = Some(v.trim().to_owned());
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
            let (status, headers, body) = if path.starts_with("/api/models/acme/tiny/revision/") {
                let siblings: Vec<String> = files
                    .keys()
                    .map(|f| format!("{{\"rfilename\":\"{f}\"}}"))
                    .collect();
                let body = format!(
                    "{{\"sha\":\"{SHA}\",\"siblings\":[{}]}}",
                    siblings.join(",")
                );
                ("200 OK", String::new(), body.into_bytes())
            } else if let Some(data) = path
                .strip_prefix("/acme/tiny/resolve/")
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(_, name)| files.get(name))
            {
                let (a, b) = match range.as_deref().and_then(|r| r.split_once('-')) {
                    Some((a, b)) => (
                        a.parse::<usize>().unwrap_or(0),
                        b.parse::<usize>().unwrap_or(data.len().saturating_sub(1)),
                    ),
                    None => (0, data.len().saturating_sub(1)),
                };
                let chunk = data.get(a..=b.min(data.len() - 1)).unwrap_or(&[]).to_vec();
                let headers = format!(
                    "etag: \"etag-{}-{}\"\r\nx-repo-commit: {SHA}\r\ncontent-range: bytes {a}-{b}/{}\r\n",
                    data.len(),
                    data.iter().map(|&x| x as usize).sum::<usize>(),
                    data.len()
                );
                ("206 Partial Content", headers, chunk)
            } else {
                ("404 Not Found", String::new(), Vec::new())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    url
}

#[test]
fn downloads_into_cache_then_reuses_it() {
    let staging = tempfile::tempdir().unwrap();
    let weights = staging.path().join("model.safetensors");
    write_safetensors(
        &weights,
        &[("w".into(), vec![2, 2], vec![1.0, -2.0, 3.5, 4.0])],
        None,
    )
    .unwrap();
    let mut files = BTreeMap::new();
    files.insert(
        "config.json".to_owned(),
        b"{\"model_type\":\"bert\"}".to_vec(),
    );
    files.insert(
        "model.safetensors".to_owned(),
        std::fs::read(&weights).unwrap(),
    );
    files.insert("vocab.txt".to_owned(), b"[PAD]\n[UNK]\n".to_vec());
    files.insert("1_Pooling/config.json".to_owned(), b"{}".to_vec());
    files.insert("README.md".to_owned(), b"not fetched".to_vec());
    let endpoint = serve(files);
    // SAFETY: the only test in this binary; the server thread never reads the environment.
    unsafe {
        std::env::set_var("HF_ENDPOINT", &endpoint);
        std::env::remove_var("HF_TOKEN");
    }

    let cache = tempfile::tempdir().unwrap();
    let got = resolve_model_in("acme/tiny", cache.path(), false).unwrap();
    let snap = cache.path().join("models--acme--tiny/snapshots").join(SHA);
    assert_eq!(got.path, snap);
    assert_eq!(
        got.source,
        ModelSource::Downloaded {
            repo: "acme/tiny".into(),
            revision: SHA.into()
        }
    );
    assert!(snap.join("vocab.txt").is_file());
    assert!(snap.join("1_Pooling/config.json").is_file());
    assert!(!snap.join("README.md").exists());
    let main = std::fs::read_to_string(cache.path().join("models--acme--tiny/refs/main")).unwrap();
    assert_eq!(main.trim(), SHA);
    let ck = Checkpoint::load(&got.path).unwrap();
    assert_eq!(ck.tensors["w"].data, vec![1.0, -2.0, 3.5, 4.0]);

    // offline, the same id now comes from the cache
    let again = resolve_model_in("acme/tiny", cache.path(), true).unwrap();
    assert_eq!(again.path, snap);
    assert!(matches!(again.source, ModelSource::HfCache { .. }));

    // a repo the hub does not have
    let err = format!(
        "{:#}",
        resolve_model_in("acme/absent", cache.path(), false).unwrap_err()
    );
    assert!(
        err.contains("cannot download config.json of acme/absent@main") && err.contains("404"),
        "{err}"
    );
}
