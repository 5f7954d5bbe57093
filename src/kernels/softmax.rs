//! Softmax over the last dimension, forward and backward, rows on every
//! core and each row in vector code.
//!
//! Under autodiff burn computes softmax as separate max, subtract, exp, sum
//! and divide ops, each one pass on one thread with libm's scalar `expf`:
//! the attention probabilities of a BERT `full` step were the largest
//! single-threaded cost left once GELU and dropout were vectorised. Here the
//! forward is one op (max, `exp(x - max)` with [`super::activation`]'s
//! exponential, normalise) and the backward another,
//! `dx = y (dy - sum(dy y))`, from the saved output. Attention's scale and
//! additive mask ([`forward_biased`]) are applied in the same pass instead
//! of two more single-threaded passes over the scores.
//!
//! A row holding NaN gives NaN; `-inf` entries give 0 (a row of only
//! `-inf` gives NaN, as in PyTorch).

use rayon::prelude::*;

use super::activation::exp_neg;
use super::simd::{self, multiversion};

/// Elements per rayon task, in whole rows.
const CHUNK: usize = 1 << 14;

fn rows_per_task(n: usize) -> usize {
    (CHUNK / n.max(1)).max(1)
}

multiversion! {
    /// Softmax of each `n`-long row of `values`, in place.
    fn forward_rows(values: &mut [f32], n: usize) {
        for row in values.chunks_exact_mut(n) {
            let max = simd::max(row);
            exp_normalise(row, max);
        }
    }
}

/// `exp(v - max)` of a row's values, divided by their sum (inlined into
/// each vector version of its callers).
#[inline(always)]
fn exp_normalise(row: &mut [f32], max: f32) {
    for v in row.iter_mut() {
        *v = exp_neg(*v - max);
    }
    let inv = 1.0 / simd::sum_map(row, |v| v);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

multiversion! {
    /// Softmax of `scale * row + bias`, in place.
    fn forward_row_biased(row: &mut [f32], bias: &[f32], scale: f32) {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v = *v * scale + b;
        }
        let max = simd::max(row);
        exp_normalise(row, max);
    }
}

multiversion! {
    /// `grads = scale y (grads - sum(grads y))` per `n`-long row, in place.
    fn backward_rows(ys: &[f32], grads: &mut [f32], n: usize, scale: f32) {
        for (g, y) in grads.chunks_exact_mut(n).zip(ys.chunks_exact(n)) {
            let dot = simd::sum_zip3(g, y, y, |g, y, _| g * y);
            for (g, &y) in g.iter_mut().zip(y) {
                *g = y * (*g - dot) * scale;
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

/// Where each row's bias starts: rows of a `dims`-shaped tensor (the last
/// dimension the row) against a contiguous bias of `bias_dims`, each of its
/// dimensions equal to `dims`' or 1 (broadcast).
pub struct BiasRows {
    /// Per leading dimension: its size and the bias's stride along it (0
    /// where broadcast).
    dims: Vec<(usize, usize)>,
}

impl BiasRows {
    /// `None` unless `bias_dims` broadcasts to `dims` as described, with an
    /// equal last dimension.
    pub fn new(dims: &[usize], bias_dims: &[usize]) -> Option<Self> {
        let r = dims.len();
        if r == 0 || bias_dims.len() != r || bias_dims[r - 1] != dims[r - 1] {
            return None;
        }
        let mut stride = dims[r - 1];
        let mut out = vec![(0, 0); r - 1];
        for d in (0..r - 1).rev() {
            out[d] = match bias_dims[d] {
                b if b == dims[d] && b != 1 => (dims[d], stride),
                1 => (dims[d], 0),
                _ => return None,
            };
            stride *= bias_dims[d];
        }
        Some(BiasRows { dims: out })
    }

    /// The bias offset of row `row`.
    fn offset(&self, mut row: usize) -> usize {
        let mut offset = 0;
        for &(size, stride) in self.dims.iter().rev() {
            offset += (row % size) * stride;
            row /= size;
        }
        offset
    }
}

/// Softmax of `scale * x + bias` over each `n`-long row of `values`, in
/// place; `bias` is broadcast over the rows as `rows` says (an additive
/// attention mask `[batch, 1, 1, keys]` over heads and queries).
pub fn forward_biased(values: &mut [f32], n: usize, bias: &[f32], rows: &BiasRows, scale: f32) {
    assert!(
        n > 0 && values.len().is_multiple_of(n),
        "softmax: {} values in rows of {n}",
        values.len()
    );
    let per_task = rows_per_task(n);
    values
        .par_chunks_mut(per_task * n)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (i, row) in chunk.chunks_exact_mut(n).enumerate() {
                let at = rows.offset(task * per_task + i);
                forward_row_biased(row, &bias[at..at + n], scale);
            }
        });
}

/// The backward of [`forward`] from its output `ys`, in place on `grads`.
pub fn backward(ys: &[f32], grads: &mut [f32], n: usize) {
    backward_scaled(ys, grads, n, 1.0)
}

/// The backward of [`forward_biased`] with `scale` from its output `ys`,
/// in place on `grads` (the bias is a constant: no gradient).
pub fn backward_scaled(ys: &[f32], grads: &mut [f32], n: usize, scale: f32) {
    assert_eq!(ys.len(), grads.len(), "softmax backward: lengths differ");
    assert!(
        n > 0 && ys.len().is_multiple_of(n),
        "softmax: {} values in rows of {n}",
        ys.len()
    );
    let per_task = rows_per_task(n) * n;
    if ys.len() <= per_task {
        backward_rows(ys, grads, n, scale)
    } else {
        grads
            .par_chunks_mut(per_task)
            .zip(ys.par_chunks(per_task))
            .for_each(|(g, y)| backward_rows(y, g, n, scale))
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
    fn a_broadcast_bias_and_a_scale_match_adding_them_first() {
        // scores [2, 3, 4, 5], bias [2, 1, 1, 5] as an attention mask
        let dims = [2, 3, 4, 5];
        let xs: Vec<f32> = (0..120).map(|i| ((i as f32) * 0.61).sin() * 4.0).collect();
        let bias: Vec<f32> = (0..10)
            .map(|i| if i % 4 == 3 { -1e9 } else { i as f32 * 0.1 })
            .collect();
        let rows = BiasRows::new(&dims, &[2, 1, 1, 5]).unwrap();
        let mut got = xs.clone();
        forward_biased(&mut got, 5, &bias, &rows, 0.5);
        let mut want: Vec<f32> = xs
            .iter()
            .enumerate()
            .map(|(i, &v)| v * 0.5 + bias[(i / 60) * 5 + i % 5])
            .collect();
        forward(&mut want, 5);
        assert_eq!(got, want);
        let gs: Vec<f32> = (0..120).map(|i| ((i as f32) * 0.37).cos()).collect();
        let (mut a, mut b) = (gs.clone(), gs);
        backward_scaled(&got, &mut a, 5, 0.5);
        backward(&got, &mut b, 5);
        for (a, b) in a.iter().zip(&b) {
            assert_eq!(*a, b * 0.5);
        }
        // per-row bias [2, 1, 4, 5] (a causal mask) and shapes that do not broadcast
        let rows = BiasRows::new(&dims, &[2, 1, 4, 5]).unwrap();
        assert_eq!(rows.offset(4 + 3), 3 * 5, "batch 0, head 1, query 3");
        assert_eq!(rows.offset(12 + 1), 20 + 5, "batch 1, head 0, query 1");
        assert!(BiasRows::new(&dims, &[2, 2, 1, 5]).is_none());
        assert!(BiasRows::new(&dims, &[2, 1, 1, 4]).is_none());
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
