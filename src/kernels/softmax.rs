//! Softmax over the last dimension, forward and backward, rows on every
//! core and each row in vector code.
//!
//! Under autodiff burn computes softmax as separate max, subtract, exp, sum
//! and divide ops, each one pass on one thread with libm's scalar `expf`:
//! the attention probabilities of a BERT `full` step were the largest
//! single-threaded cost left once GELU and dropout were vectorised. Here the
//! forward is one op (max, `exp(x - max)` with [`super::activation`]'s
//! exponential, normalise) and the backward another,
//! `dx = y (dy - sum(dy y))`, from the saved output.
//!
//! A row holding NaN gives NaN; `-inf` entries give 0 (a row of only
//! `-inf` gives NaN, as in PyTorch).

use rayon::prelude::*;

use super::activation::exp_neg;
use super::simd::multiversion;

/// Elements per rayon task, in whole rows.
const CHUNK: usize = 1 << 14;

fn rows_per_task(n: usize) -> usize {
    (CHUNK / n.max(1)).max(1)
}

multiversion! {
    /// Softmax of each `n`-long row of `values`, in place.
    fn forward_rows(values: &mut [f32], n: usize) {
        for row in values.chunks_exact_mut(n) {
            let mut max = f32::NEG_INFINITY;
            for &v in row.iter() {
                max = if v > max { v } else { max };
            }
            let mut sum = 0.0f32;
            for v in row.iter_mut() {
                *v = exp_neg(*v - max);
                sum += *v;
            }
            let inv = 1.0 / sum;
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

multiversion! {
    /// `grads = y (grads - sum(grads y))` per `n`-long row, in place.
    fn backward_rows(ys: &[f32], grads: &mut [f32], n: usize) {
        for (g, y) in grads.chunks_exact_mut(n).zip(ys.chunks_exact(n)) {
            let mut dot = 0.0f32;
            for (&g, &y) in g.iter().zip(y) {
                dot += g * y;
            }
            for (g, &y) in g.iter_mut().zip(y) {
                *g = y * (*g - dot);
            }
        }
    }
}

/// Softmax of each `n`-long row of `values` (a whole number of rows), in place.
pub fn forward(values: &mut [f32], n: usize) {
    assert!(
        n > 0 && values.len().is_multiple_of(n),
        "softmax: {} values in rows of {n}",
        values.len()
    );
    let per_task = rows_per_task(n) * n;
    if values.len() <= per_task {
        forward_rows(values, n)
    } else {
        values
            .par_chunks_mut(per_task)
            .for_each(|c| forward_rows(c, n))
    }
}

/// The backward of [`forward`] from its output `ys`, in place on `grads`.
pub fn backward(ys: &[f32], grads: &mut [f32], n: usize) {
    assert_eq!(ys.len(), grads.len(), "softmax backward: lengths differ");
    assert!(
        n > 0 && ys.len().is_multiple_of(n),
        "softmax: {} values in rows of {n}",
        ys.len()
    );
    let per_task = rows_per_task(n) * n;
    if ys.len() <= per_task {
        backward_rows(ys, grads, n)
    } else {
        grads
            .par_chunks_mut(per_task)
            .zip(ys.par_chunks(per_task))
            .for_each(|(g, y)| backward_rows(y, g, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(row: &[f32]) -> Vec<f64> {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let e: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    #[test]
    fn rows_match_f64_and_gradients_match_the_jacobian() {
        let n = 77;
        let rows = 1000; // several rayon tasks
        let xs: Vec<f32> = (0..n * rows)
            .map(|i| ((i as f32) * 0.731).sin() * 9.0)
            .collect();
        let mut ys = xs.clone();
        forward(&mut ys, n);
        let gs: Vec<f32> = (0..n * rows).map(|i| ((i as f32) * 0.37).cos()).collect();
        let mut dx = gs.clone();
        backward(&ys, &mut dx, n);
        for r in 0..rows {
            let want = reference(&xs[r * n..(r + 1) * n]);
            let g = &gs[r * n..(r + 1) * n];
            let dot: f64 = g.iter().zip(&want).map(|(&g, &y)| g as f64 * y).sum();
            for i in 0..n {
                let y = ys[r * n + i] as f64;
                assert!(
                    (y - want[i]).abs() < 1e-7 + 2e-6 * want[i],
                    "row {r} col {i}"
                );
                let d = want[i] * (g[i] as f64 - dot);
                assert!(
                    (dx[r * n + i] as f64 - d).abs() < 1e-6,
                    "grad row {r} col {i}"
                );
            }
        }
    }

    #[test]
    fn masked_and_nan_rows() {
        let mut v = vec![0.0, f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY];
        forward(&mut v, 4);
        assert_eq!(v, [0.5, 0.0, 0.5, 0.0]);
        let mut v = vec![1.0, f32::NAN, 2.0];
        forward(&mut v, 3);
        assert!(v.iter().all(|x| x.is_nan()));
        let mut v = vec![f32::NEG_INFINITY; 3];
        forward(&mut v, 3);
        assert!(v.iter().all(|x| x.is_nan()));
    }
}
