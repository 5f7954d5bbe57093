//! LayerNorm under autodiff as one op each way.
//!
//! burn-flex normalises rows in one parallel, vectorised pass (its
//! variance in one pass, E[x²] - E[x]²), but only outside autodiff: under `Autodiff<Flex>` the backend's `layer_norm` is
//! the generic decomposition (mean, subtract, square, mean, add, square
//! root, divide, scale, shift), each op a pass on one thread, and its
//! backward is the chain of those ops' backwards. Here each way is one
//! pass over rows on every core ([`forward`], [`backward`]; the mean and
//! variance in two passes over the row, as the decomposition computes them); the parameter gradients are summed per fixed block of
//! rows and the blocks in order, so the bits do not depend on the threads.

use burn::module::{Module, Param};
use burn::tensor::{DType, Device, Tensor};
use rayon::prelude::*;

use super::simd;

/// Rows per rayon task (and per partial sum of the parameter gradients).
const ROWS: usize = 64;

/// The gradients of `y = (x - mean) / sqrt(var + eps) * gamma + beta` over
/// rows of `d` values: `(dx, dgamma, dbeta)` from `x`, `gamma` and `dy`.
///
/// With `xhat = (x - mean) * rstd` and `g = dy * gamma`:
/// `dx = rstd * (g - mean(g) - xhat * mean(g * xhat))`,
/// `dgamma = sum over rows of dy * xhat`, `dbeta = sum over rows of dy`.
pub fn backward(
    x: &[f32],
    gamma: &[f32],
    dy: &[f32],
    d: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert!(
        d > 0 && x.len() == dy.len() && x.len().is_multiple_of(d) && gamma.len() == d,
        "layer norm backward: {} values, {} gradients, width {d}, gamma {}",
        x.len(),
        dy.len(),
        gamma.len()
    );
    let mut dx = vec![0f32; x.len()];
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(ROWS * d)
        .zip(x.par_chunks(ROWS * d))
        .zip(dy.par_chunks(ROWS * d))
        .map(|((dx, x), dy)| {
            let mut acc = vec![0f32; 2 * d];
            rows_into(x, gamma, dy, dx, &mut acc, eps);
            acc
        })
        .collect();
    let mut sums = simd::sum_in_order(&partials, 2 * d);
    let dbeta = sums.split_off(d);
    (dx, sums, dbeta)
}

/// `(x - mean) / sqrt(var + eps) * gamma + beta` over rows of
/// `gamma.len()` values, the mean and variance in two passes.
pub fn forward(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f32> {
    let d = gamma.len();
    assert!(
        d > 0 && x.len().is_multiple_of(d) && beta.len() == d,
        "layer norm: {} values, width {d}, beta {}",
        x.len(),
        beta.len()
    );
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(ROWS * d)
        .zip(x.par_chunks(ROWS * d))
        .for_each(|(y, x)| forward_rows(x, gamma, beta, y, eps));
    y
}

super::simd::multiversion! {
    fn forward_rows(x: &[f32], gamma: &[f32], beta: &[f32], y: &mut [f32], eps: f32) {
        let d = gamma.len();
        for (x, y) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
            let (mean, rstd) = moments(x, eps);
            for j in 0..d {
                y[j] = (x[j] - mean) * rstd * gamma[j] + beta[j];
            }
        }
    }
}

/// A row's mean and `1 / sqrt(var + eps)`.
#[inline(always)]
fn moments(x: &[f32], eps: f32) -> (f32, f32) {
    let inv_d = 1.0 / x.len() as f32;
    let mean = simd::sum_map(x, |v| v) * inv_d;
    let var = simd::sum_map(x, |v| (v - mean) * (v - mean)) * inv_d;
    (mean, 1.0 / (var + eps).sqrt())
}

super::simd::multiversion! {
    /// Writes `dx` for whole rows and adds each row's `dy * xhat` and `dy`
    /// to `acc` (`[dgamma, dbeta]`, `2 d` values; `d` is `gamma`'s length).
    fn rows_into(x: &[f32], gamma: &[f32], dy: &[f32], dx: &mut [f32], acc: &mut [f32], eps: f32) {
        let d = gamma.len();
        let inv_d = 1.0 / d as f32;
        let (dgamma, dbeta) = acc.split_at_mut(d);
        for ((x, dy), dx) in x.chunks_exact(d).zip(dy.chunks_exact(d)).zip(dx.chunks_exact_mut(d)) {
            let (mean, rstd) = moments(x, eps);
            let sum_g = simd::sum_zip3(dy, gamma, dy, |dy, gamma, _| dy * gamma);
            let sum_gx =
                simd::sum_zip3(dy, gamma, x, |dy, gamma, x| dy * gamma * ((x - mean) * rstd));
            for j in 0..d {
                let xhat = (x[j] - mean) * rstd;
                dgamma[j] += dy[j] * xhat;
                dbeta[j] += dy[j];
            }
            let (a, b) = (sum_g * inv_d, sum_gx * inv_d);
            for j in 0..d {
                let xhat = (x[j] - mean) * rstd;
                dx[j] = rstd * (dy[j] * gamma[j] - a - xhat * b);
            }
        }
    }
}

/// burn's `LayerNorm`: the same parameters (`gamma`, `beta`) under the
/// same container name, so checkpoints and initialisation rules see no
/// difference; its forward takes [`super::CpuKernels::layer_norm`] under
/// autodiff on the CPU (burn's module keeps `epsilon` private, so it cannot
/// be called with burn's own parameters).
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub gamma: Param<Tensor<1>>,
    pub beta: Option<Param<Tensor<1>>>,
    #[module(skip)]
    pub epsilon: f64,
}

impl LayerNorm {
    /// Weight 1 and bias 0 over the last dimension of width `d`.
    pub fn new(d: usize, epsilon: f64, device: &Device) -> Self {
        Self {
            gamma: Param::from_tensor(Tensor::ones([d], device)),
            beta: Some(Param::from_tensor(Tensor::zeros([d], device))),
            epsilon,
        }
    }

    /// Normalises the last dimension of `x`, then scales and shifts it
    /// (half-precision inputs are normalised in f32, as burn does).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let device = x.device();
        let gamma = self.gamma.val();
        let beta = self.beta.as_ref().map(|b| b.val());
        let dtype = x.dtype();
        if matches!(dtype, DType::F16 | DType::BF16) {
            return burn::tensor::module::layer_norm(
                x.cast(DType::F32),
                gamma.cast(DType::F32),
                beta.map(|b| b.cast(DType::F32)),
                self.epsilon,
            )
            .cast(dtype);
        }
        match beta {
            Some(beta)
                if device.is_autodiff() && super::is_flex(&device) && dtype == DType::F32 =>
            {
                super::layer_norm_tensor(x, gamma, beta, self.epsilon)
            }
            beta => burn::tensor::module::layer_norm(x, gamma, beta, self.epsilon),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    fn wave(n: usize, f: f32, scale: f32) -> Vec<f32> {
        super::super::testutil::wave(n, f, scale, 0.3)
    }

    /// Forward and all three gradients against burn's LayerNorm through
    /// autodiff, over more rows than one block and a width that is not a
    /// multiple of the vector width.
    #[test]
    fn matches_burn_through_autodiff() {
        let device = Device::flex().autodiff();
        let (rows, d) = (3 * ROWS + 5, 37);
        let ln = LayerNorm {
            gamma: Param::from_tensor(tensor(wave(d, 0.7, 0.5), [d], &device)),
            beta: Some(Param::from_tensor(tensor(wave(d, 0.3, 0.2), [d], &device))),
            epsilon: 1e-5,
        };
        let x = wave(rows * d, 0.713, 3.0);
        let weights = tensor(wave(rows * d, 0.037, 1.0), [rows, d], &device);
        let run = |ours: bool| {
            let input = tensor(x.clone(), [rows, d], &device).require_grad();
            let y = if ours {
                ln.forward(input.clone())
            } else {
                // burn's decomposition, differentiated op by op
                burn::tensor::module::layer_norm(
                    input.clone(),
                    ln.gamma.val(),
                    ln.beta.as_ref().map(|b| b.val()),
                    ln.epsilon,
                )
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            let host = |t: Tensor<2>| -> Vec<f32> { t.into_data().try_into_vec().unwrap() };
            let host1 = |t: Tensor<1>| -> Vec<f32> { t.into_data().try_into_vec().unwrap() };
            (
                host(y.inner()),
                host(input.grad(&grads).unwrap()),
                host1(ln.gamma.grad(&grads).unwrap()),
                host1(ln.beta.as_ref().unwrap().grad(&grads).unwrap()),
            )
        };
        let (ours, theirs) = (run(true), run(false));
        // the same in f64 on the host
        let (gamma, beta) = (wave(d, 0.7, 0.5), wave(d, 0.3, 0.2));
        let dy = wave(rows * d, 0.037, 1.0);
        let (mut y, mut dx) = (vec![0f64; rows * d], vec![0f64; rows * d]);
        let (mut dgamma, mut dbeta) = (vec![0f64; d], vec![0f64; d]);
        for r in 0..rows {
            let row = |v: &[f32], j: usize| f64::from(v[r * d + j]);
            let mean = (0..d).map(|j| row(&x, j)).sum::<f64>() / d as f64;
            let var = (0..d).map(|j| (row(&x, j) - mean).powi(2)).sum::<f64>() / d as f64;
            let rstd = 1.0 / (var + 1e-5).sqrt();
            let xhat: Vec<f64> = (0..d).map(|j| (row(&x, j) - mean) * rstd).collect();
            let g: Vec<f64> = (0..d).map(|j| row(&dy, j) * f64::from(gamma[j])).collect();
            let a = g.iter().sum::<f64>() / d as f64;
            let b = g.iter().zip(&xhat).map(|(g, h)| g * h).sum::<f64>() / d as f64;
            for j in 0..d {
                y[r * d + j] = xhat[j] * f64::from(gamma[j]) + f64::from(beta[j]);
                dx[r * d + j] = rstd * (g[j] - a - xhat[j] * b);
                dgamma[j] += row(&dy, j) * xhat[j];
                dbeta[j] += row(&dy, j);
            }
        }
        let err = |a: &[f32], b: &[f64]| {
            a.iter()
                .zip(b)
                .map(|(a, b)| (f64::from(*a) - b).abs() / b.abs().max(1.0))
                .fold(0f64, f64::max)
        };
        let ours = [
            err(&ours.0, &y),
            err(&ours.1, &dx),
            err(&ours.2, &dgamma),
            err(&ours.3, &dbeta),
        ];
        let theirs = [
            err(&theirs.0, &y),
            err(&theirs.1, &dx),
            err(&theirs.2, &dgamma),
            err(&theirs.3, &dbeta),
        ];
        // as close to the f64 result as burn's decomposition, or within f32 rounding
        for (k, name) in [
            "output",
            "input gradient",
            "gamma gradient",
            "beta gradient",
        ]
        .iter()
        .enumerate()
        {
            assert!(
                ours[k] <= theirs[k].max(1e-5),
                "{name}: error {} against burn's {}",
                ours[k],
                theirs[k]
            );
        }
    }

    /// The parameter gradients are the same bits however rayon splits the
    /// work (blocks are summed in order).
    #[test]
    fn backward_is_deterministic_across_thread_counts() {
        let (rows, d) = (5 * ROWS + 3, 24);
        let x = wave(rows * d, 0.019, 2.0);
        let dy = wave(rows * d, 0.041, 1.0);
        let gamma = wave(d, 0.5, 1.0);
        let run = |threads| {
            super::super::testutil::on_threads(threads, || backward(&x, &gamma, &dy, d, 1e-12))
        };
        assert_eq!(run(1), run(2));
    }
}
