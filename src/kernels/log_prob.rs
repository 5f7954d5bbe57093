//! The log-probability of each row's target under a softmax over the row:
//! `log_softmax(x)[t] = x[t] - logsumexp(x)`, forward and backward as one
//! pass each over rows on every core.
//!
//! A language model's loss takes this over `[tokens, vocabulary]` logits
//! (`[512, 49,152]`, 100 MB in f32, for a SmolLM2 step of 4 x 128). burn
//! computes `log_softmax` as max, subtract, exp, sum, log and subtract, each
//! a fresh full-size tensor on one thread, then gathers one value per row;
//! its backward runs that chain back. Here the forward reads the logits
//! once and keeps one `logsumexp` per row; the backward writes the logits'
//! gradient `g (onehot(t) - softmax(x))` in one pass.

use rayon::prelude::*;

use super::activation::exp_neg;
use super::simd::{self, multiversion};

/// Rows per rayon task.
const ROWS: usize = 4;

/// `logsumexp` of a row.
#[inline(always)]
fn log_sum_exp(row: &[f32]) -> f32 {
    let max = simd::max(row);
    if max == f32::NEG_INFINITY || max.is_nan() {
        return max;
    }
    max + simd::sum_map(row, |v| exp_neg(v - max)).ln()
}

multiversion! {
    fn forward_rows(x: &[f32], targets: &[usize], out: &mut [f32], lse: &mut [f32], n: usize) {
        for (((row, &t), o), l) in x.chunks_exact(n).zip(targets).zip(out.iter_mut()).zip(lse.iter_mut()) {
            *l = log_sum_exp(row);
            *o = row[t] - *l;
        }
    }
}

multiversion! {
    fn backward_rows(x: &[f32], targets: &[usize], lse: &[f32], g: &[f32], dx: &mut [f32], n: usize) {
        for ((((row, d), &t), &l), &g) in x
            .chunks_exact(n)
            .zip(dx.chunks_exact_mut(n))
            .zip(targets)
            .zip(lse)
            .zip(g)
        {
            for (d, &v) in d.iter_mut().zip(row) {
                *d = -g * exp_neg(v - l);
            }
            d[t] += g;
        }
    }
}

/// Checked targets: ids (held as f32, exact below 2^24) inside `0..n`.
pub fn targets(ids: &[f32], n: usize) -> Vec<usize> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| {
            assert!(
                id >= 0.0 && id.fract() == 0.0 && (id as usize) < n,
                "log-probability: target {id} of row {i} is not a class of 0..{n}"
            );
            id as usize
        })
        .collect()
}

/// `(log_softmax(row)[target], logsumexp(row))` for each `n`-long row of
/// `x`.
pub fn forward(x: &[f32], targets: &[usize], n: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = targets.len();
    assert!(
        n > 0 && x.len() == rows * n,
        "log-probability: {} values, {rows} targets, rows of {n}",
        x.len()
    );
    let mut out = vec![0f32; rows];
    let mut lse = vec![0f32; rows];
    x.par_chunks(ROWS * n)
        .zip(targets.par_chunks(ROWS))
        .zip(out.par_chunks_mut(ROWS))
        .zip(lse.par_chunks_mut(ROWS))
        .for_each(|(((x, t), o), l)| forward_rows(x, t, o, l, n));
    (out, lse)
}

/// The gradient of the logits from the gradient `g` of each row's
/// log-probability: `g (onehot(target) - exp(x - logsumexp))`.
pub fn backward(x: &[f32], targets: &[usize], lse: &[f32], g: &[f32], n: usize) -> Vec<f32> {
    // every row is written in full below
    let mut dx = simd::uninit(x.len());
    dx.par_chunks_mut(ROWS * n)
        .zip(x.par_chunks(ROWS * n))
        .zip(targets.par_chunks(ROWS))
        .zip(lse.par_chunks(ROWS))
        .zip(g.par_chunks(ROWS))
        .for_each(|((((d, x), t), l), g)| backward_rows(x, t, l, g, d, n));
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{on_threads, wave};

    #[test]
    fn matches_an_f64_reference_both_ways() {
        let (rows, n) = (9, 1000);
        let x = wave(rows * n, 0.173, 6.0, 0.3);
        let t: Vec<usize> = (0..rows).map(|r| (r * 337) % n).collect();
        let g = wave(rows, 0.9, 1.0, 0.2);
        let (out, lse) = forward(&x, &t, n);
        let dx = backward(&x, &t, &lse, &g, n);
        for r in 0..rows {
            let row = &x[r * n..(r + 1) * n];
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let l = max
                + row
                    .iter()
                    .map(|&v| (v as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            assert!(
                (out[r] as f64 - (row[t[r]] as f64 - l)).abs() < 1e-5,
                "row {r}"
            );
            for j in 0..n {
                let p = (row[j] as f64 - l).exp();
                let want = g[r] as f64 * (f64::from(u8::from(j == t[r])) - p);
                assert!(
                    (dx[r * n + j] as f64 - want).abs() < 1e-6,
                    "row {r} col {j}"
                );
            }
        }
        let again = on_threads(1, || forward(&x, &t, n));
        assert_eq!(again.0, out, "the same bits on one thread");
    }

    #[test]
    #[should_panic(expected = "target 7 of row 1 is not a class of 0..5")]
    fn a_target_outside_the_classes_is_named() {
        targets(&[1.0, 7.0], 5);
    }
}
