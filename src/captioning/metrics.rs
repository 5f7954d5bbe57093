//! Caption metrics computed the way the COCO caption evaluation
//! (pycocoevalcap) computes them: BLEU-1..4 at corpus level with the
//! closest reference length, ROUGE-L (beta 1.2) and CIDEr-D (sigma 6,
//! clipped counts, document frequencies from the evaluated references),
//! each on captions tokenised by [`super::ptb::tokenize`].
//!
//! Written out rather than taken from a crate: the crates that score BLEU
//! or ROUGE follow other conventions (sentence-level smoothing, other
//! tokenisers, ROUGE-L F1 with beta 1), and the figures are only
//! comparable with published ones when every quirk matches: pycocoevalcap's
//! BLEU adds 1e-15/1e-9 to each precision and applies the brevity penalty
//! on summed lengths; its CIDEr-D's length penalty counts bigrams, not
//! words. `tests/fixtures/captions/coco_eval_reference.json`
//! (`scripts/make_caption_metric_fixture.py`) holds pycocoevalcap's scores
//! on 22 images; the tests below match them within 1e-9.

use std::collections::{HashMap, HashSet};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// N-gram orders BLEU and CIDEr-D count.
const N: usize = 4;
/// CIDEr-D's length penalty width.
const SIGMA: f64 = 6.0;
/// ROUGE-L's recall weight.
const BETA: f64 = 1.2;

/// Corpus scores, and each image's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaptionScores {
    pub bleu: [f64; N],
    pub rouge_l: f64,
    pub cider_d: f64,
    pub per_image: Vec<ImageScores>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageScores {
    pub bleu: [f64; N],
    pub rouge_l: f64,
    pub cider_d: f64,
}

/// Scores raw captions: `references[i]` are image i's reference captions,
/// `hypotheses[i]` the generated one. Both are tokenised first.
pub fn score(references: &[Vec<String>], hypotheses: &[String]) -> Result<CaptionScores> {
    let refs: Vec<Vec<String>> = references
        .iter()
        .map(|r| r.iter().map(|c| super::ptb::tokenize(c)).collect())
        .collect();
    let hyps: Vec<String> = hypotheses.iter().map(|h| super::ptb::tokenize(h)).collect();
    score_tokenized(&refs, &hyps)
}

/// Scores captions already tokenised (tokens joined by single spaces).
pub fn score_tokenized(references: &[Vec<String>], hypotheses: &[String]) -> Result<CaptionScores> {
    if references.len() != hypotheses.len() {
        bail!(
            "{} images have references but {} have a generated caption",
            references.len(),
            hypotheses.len()
        );
    }
    if references.is_empty() {
        bail!("no captions to score");
    }
    if let Some(i) = references.iter().position(|r| r.is_empty()) {
        bail!("image {i} has no reference caption");
    }
    let (bleu, per_bleu) = bleu(references, hypotheses);
    let rouge: Vec<f64> = references
        .iter()
        .zip(hypotheses)
        .map(|(r, h)| rouge_l(r, h))
        .collect();
    let cider = cider_d(references, hypotheses);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok(CaptionScores {
        bleu,
        rouge_l: mean(&rouge),
        cider_d: mean(&cider),
        per_image: (0..hypotheses.len())
            .map(|i| ImageScores {
                bleu: per_bleu[i],
                rouge_l: rouge[i],
                cider_d: cider[i],
            })
            .collect(),
    })
}

type Counts<'a> = HashMap<Vec<&'a str>, usize>;

/// Every n-gram of orders 1..=N with its count.
fn ngrams(sentence: &str) -> (usize, Counts<'_>) {
    let words: Vec<&str> = sentence.split_whitespace().collect();
    let mut counts = Counts::new();
    for k in 1..=N {
        for w in words.windows(k) {
            *counts.entry(w.to_vec()).or_default() += 1;
        }
    }
    (words.len(), counts)
}

/// Matched and proposed n-grams per order, and the lengths, of one image.
struct BleuStats {
    test_len: usize,
    ref_len: usize,
    guess: [usize; N],
    correct: [usize; N],
}

fn bleu_stats(refs: &[String], hyp: &str) -> BleuStats {
    let mut ref_lens = Vec::new();
    let mut max_counts: HashMap<Vec<&str>, usize> = HashMap::new();
    for r in refs {
        let (len, counts) = ngrams(r);
        ref_lens.push(len);
        for (g, c) in counts {
            let m = max_counts.entry(g).or_default();
            *m = (*m).max(c);
        }
    }
    let (test_len, counts) = ngrams(hyp);
    // the closest reference length, the shorter one on a tie
    let ref_len = ref_lens
        .iter()
        .copied()
        .min_by_key(|&l| (l.abs_diff(test_len), l))
        .unwrap_or(0);
    let mut correct = [0; N];
    for (g, c) in &counts {
        correct[g.len() - 1] += c.min(max_counts.get(g).unwrap_or(&0));
    }
    let guess = std::array::from_fn(|k| (test_len + 1).saturating_sub(k + 1));
    BleuStats {
        test_len,
        ref_len,
        guess,
        correct,
    }
}

/// BLEU-1..4 from summed statistics, as pycocoevalcap's `compute_score`.
fn bleu_from(test_len: usize, ref_len: f64, guess: &[f64; N], correct: &[f64; N]) -> [f64; N] {
    const SMALL: f64 = 1e-9;
    const TINY: f64 = 1e-15;
    let mut out = [0.0; N];
    let mut product = 1.0;
    for k in 0..N {
        product *= (correct[k] + TINY) / (guess[k] + SMALL);
        out[k] = product.powf(1.0 / (k + 1) as f64);
    }
    let ratio = (test_len as f64 + TINY) / (ref_len + SMALL);
    if ratio < 1.0 {
        let penalty = (1.0 - 1.0 / ratio).exp();
        out.iter_mut().for_each(|b| *b *= penalty);
    }
    out
}

fn bleu(refs: &[Vec<String>], hyps: &[String]) -> ([f64; N], Vec<[f64; N]>) {
    let stats: Vec<BleuStats> = refs
        .iter()
        .zip(hyps)
        .map(|(r, h)| bleu_stats(r, h))
        .collect();
    let as_f64 = |a: &[usize; N]| a.map(|v| v as f64);
    let per_image = stats
        .iter()
        .map(|s| {
            bleu_from(
                s.test_len,
                s.ref_len as f64,
                &as_f64(&s.guess),
                &as_f64(&s.correct),
            )
        })
        .collect();
    let mut guess = [0.0; N];
    let mut correct = [0.0; N];
    for s in &stats {
        for k in 0..N {
            guess[k] += s.guess[k] as f64;
            correct[k] += s.correct[k] as f64;
        }
    }
    let test_len = stats.iter().map(|s| s.test_len).sum();
    let ref_len = stats.iter().map(|s| s.ref_len).sum::<usize>() as f64;
    (bleu_from(test_len, ref_len, &guess, &correct), per_image)
}

/// Length of the longest common subsequence of two token lists.
fn lcs(a: &[&str], b: &[&str]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// ROUGE-L of one caption: the best precision and the best recall over
/// the references, combined with beta 1.2. Tokens split on single spaces,
/// as the reference does (an empty caption is one empty token).
fn rouge_l(refs: &[String], hyp: &str) -> f64 {
    let c: Vec<&str> = hyp.split(' ').collect();
    let (mut p, mut r) = (0.0f64, 0.0f64);
    for reference in refs {
        let t: Vec<&str> = reference.split(' ').collect();
        let l = lcs(&t, &c) as f64;
        p = p.max(l / c.len() as f64);
        r = r.max(l / t.len() as f64);
    }
    if p != 0.0 && r != 0.0 {
        ((1.0 + BETA * BETA) * p * r) / (r + BETA * BETA * p)
    } else {
        0.0
    }
}

/// TF-IDF vectors per order, their norms, and the length CIDEr-D's
/// penalty compares (the number of bigrams, as the reference counts it).
struct TfIdf<'a> {
    vec: [HashMap<Vec<&'a str>, f64>; N],
    norm: [f64; N],
    length: usize,
}

fn tfidf<'a>(counts: &Counts<'a>, df: &HashMap<Vec<&'a str>, f64>, log_images: f64) -> TfIdf<'a> {
    let mut vec: [HashMap<Vec<&str>, f64>; N] = Default::default();
    let mut norm = [0.0; N];
    let mut length = 0;
    for (g, &tf) in counts {
        let n = g.len() - 1;
        let d = df.get(g).copied().unwrap_or(0.0).max(1.0).ln();
        let v = tf as f64 * (log_images - d);
        norm[n] += v * v;
        vec[n].insert(g.clone(), v);
        if n == 1 {
            length += tf;
        }
    }
    TfIdf {
        vec,
        norm: norm.map(f64::sqrt),
        length,
    }
}

fn cider_d(refs: &[Vec<String>], hyps: &[String]) -> Vec<f64> {
    let ref_counts: Vec<Vec<Counts>> = refs
        .iter()
        .map(|rs| rs.iter().map(|r| ngrams(r).1).collect())
        .collect();
    let mut df: HashMap<Vec<&str>, f64> = HashMap::new();
    for rs in &ref_counts {
        let seen: HashSet<&Vec<&str>> = rs.iter().flat_map(|c| c.keys()).collect();
        for g in seen {
            *df.entry(g.clone()).or_default() += 1.0;
        }
    }
    let log_images = (refs.len() as f64).ln();
    hyps.iter()
        .zip(&ref_counts)
        .map(|(h, rs)| {
            let hyp = tfidf(&ngrams(h).1, &df, log_images);
            let mut sum = [0.0; N];
            for r in rs {
                let r = tfidf(r, &df, log_images);
                let delta = hyp.length as f64 - r.length as f64;
                let penalty = (-(delta * delta) / (2.0 * SIGMA * SIGMA)).exp();
                for (n, total) in sum.iter_mut().enumerate() {
                    let mut v: f64 = hyp.vec[n]
                        .iter()
                        .map(|(g, &x)| {
                            let y = r.vec[n].get(g).copied().unwrap_or(0.0);
                            x.min(y) * y
                        })
                        .sum();
                    if hyp.norm[n] != 0.0 && r.norm[n] != 0.0 {
                        v /= hyp.norm[n] * r.norm[n];
                    }
                    *total += v * penalty;
                }
            }
            sum.iter().sum::<f64>() / N as f64 / rs.len() as f64 * 10.0
        })
        .collect()
}

#[cfg(test)]
mod tests;
