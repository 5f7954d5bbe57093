//! RMSNorm (Llama's `x / sqrt(mean(x²) + eps) · weight`) as one op each
//! way on the CPU.
//!
//! burn's `RmsNorm::forward` is six tensor ops (cast, square, mean, add,
//! square root, divide, scale), each a pass on one thread, in inference as
//! well as in training, and under autodiff its backward is the chain of
//! theirs. Here the forward is one pass over rows on every core and the
//! backward another; the weight's gradient is summed per fixed block of
//! rows and the blocks in order, so the bits do not depend on the threads.

use burn::nn::RmsNorm;
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

/// Rows per rayon task (and per partial sum of the weight's gradient).
const ROWS: usize = 64;

/// `1 / sqrt(mean(x²) + eps)` of a row.
#[inline(always)]
fn rstd(x: &[f32], eps: f32) -> f32 {
    let ms = super::simd::sum_map(x, |v| v * v) / x.len() as f32;
    1.0 / (ms + eps).sqrt()
}

super::simd::multiversion! {
    fn forward_rows(x: &[f32], weight: &[f32], y: &mut [f32], eps: f32) {
        let d = weight.len();
        for (x, y) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
            let r = rstd(x, eps);
            for j in 0..d {
                y[j] = x[j] * r * weight[j];
            }
        }
    }
}

/// The normalised rows of `x` (width `weight.len()`), scaled by `weight`.
pub fn forward(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let d = weight.len();
    assert!(
        d > 0 && x.len().is_multiple_of(d),
        "rms norm: {} values, width {d}",
        x.len()
    );
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(ROWS * d)
        .zip(x.par_chunks(ROWS * d))
        .for_each(|(y, x)| forward_rows(x, weight, y, eps));
    y
}

super::simd::multiversion! {
    /// Writes `dx` for whole rows and adds each row's `dy * xhat` to `dw`.
    fn backward_rows(x: &[f32], weight: &[f32], dy: &[f32], dx: &mut [f32], dw: &mut [f32], eps: f32) {
        let d = weight.len();
        let inv_d = 1.0 / d as f32;
        for ((x, dy), dx) in x.chunks_exact(d).zip(dy.chunks_exact(d)).zip(dx.chunks_exact_mut(d)) {
            let r = rstd(x, eps);
            let sum_gx = super::simd::sum_zip3(dy, weight, x, |dy, w, x| dy * w * (x * r));
            for j in 0..d {
                dw[j] += dy[j] * (x[j] * r);
            }
            let b = sum_gx * inv_d;
            for j in 0..d {
                dx[j] = r * (dy[j] * weight[j] - x[j] * r * b);
            }
        }
    }
}

/// The gradients `(dx, dweight)` of [`forward`] for the upstream `dy`:
/// with `xhat = x * rstd` and `g = dy * weight`,
/// `dx = rstd * (g - xhat * mean(g * xhat))` and `dweight` the sum over
/// rows of `dy * xhat`.
pub fn backward(x: &[f32], weight: &[f32], dy: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let d = weight.len();
    assert!(
        d > 0 && x.len() == dy.len() && x.len().is_multiple_of(d),
        "rms norm backward: {} values, {} gradients, width {d}",
        x.len(),
        dy.len()
    );
    let mut dx = vec![0f32; x.len()];
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(ROWS * d)
        .zip(x.par_chunks(ROWS * d))
        .zip(dy.par_chunks(ROWS * d))
        .map(|((dx, x), dy)| {
            let mut dw = vec![0f32; d];
            backward_rows(x, weight, dy, dx, &mut dw, eps);
            dw
        })
        .collect();
    (dx, super::simd::sum_in_order(&partials, d))
}

/// burn's `RmsNorm::forward`, with this module's op on the CPU in f32.
pub trait RmsNormExt {
    fn apply<const D: usize>(&self, x: Tensor<D>) -> Tensor<D>;
}

impl RmsNormExt for RmsNorm {
    fn apply<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if x.dtype() != DType::F32 || !super::is_flex(&x.device()) {
            #[allow(clippy::disallowed_methods)]
            return self.forward(x);
        }
        super::rms_norm_tensor(x, self.gamma.val(), self.epsilon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::nn::RmsNormConfig;
    use burn::tensor::{Device, TensorData};

    fn wave(n: usize, f: f32, scale: f32) -> Vec<f32> {
        super::super::testutil::wave(n, f, scale, 0.2)
    }

    /// Output and both gradients within f32 rounding of an f64 reference,
    /// through autodiff, and the plain forward equal to the autodiff one.
    #[test]
    fn matches_an_f64_reference_through_autodiff() {
        let device = Device::flex().autodiff();
        let (rows, d) = (3 * ROWS + 7, 45);
        let (x, w, dy) = (
            wave(rows * d, 0.713, 2.0),
            wave(d, 0.37, 1.0),
            wave(rows * d, 0.041, 1.0),
        );
        let mut norm = RmsNormConfig::new(d).with_epsilon(1e-5).init(&device);
        norm.gamma =
            Param::from_tensor(Tensor::from_data(TensorData::new(w.clone(), [d]), &device));
        let input =
            Tensor::<2>::from_data(TensorData::new(x.clone(), [rows, d]), &device).require_grad();
        let upstream = Tensor::<2>::from_data(TensorData::new(dy.clone(), [rows, d]), &device);
        let y = norm.apply(input.clone());
        let grads = (y.clone() * upstream).sum().backward();
        let host = |t: Tensor<2>| -> Vec<f32> { t.into_data().try_into_vec().unwrap() };
        let (y, dx) = (host(y.inner()), host(input.grad(&grads).unwrap()));
        let dw: Vec<f32> = norm
            .gamma
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_into_vec()
            .unwrap();
        let (mut y64, mut dx64, mut dw64) =
            (vec![0f64; rows * d], vec![0f64; rows * d], vec![0f64; d]);
        for r in 0..rows {
            let xs: Vec<f64> = (0..d).map(|j| f64::from(x[r * d + j])).collect();
            let ms = xs.iter().map(|v| v * v).sum::<f64>() / d as f64;
            let rs = 1.0 / (ms + 1e-5).sqrt();
            let g: Vec<f64> = (0..d)
                .map(|j| f64::from(dy[r * d + j]) * f64::from(w[j]))
                .collect();
            let b = (0..d).map(|j| g[j] * xs[j] * rs).sum::<f64>() / d as f64;
            for j in 0..d {
                y64[r * d + j] = xs[j] * rs * f64::from(w[j]);
                dx64[r * d + j] = rs * (g[j] - xs[j] * rs * b);
                dw64[j] += f64::from(dy[r * d + j]) * xs[j] * rs;
            }
        }
        let err = |a: &[f32], b: &[f64]| {
            a.iter()
                .zip(b)
                .map(|(a, b)| (f64::from(*a) - b).abs() / b.abs().max(1.0))
                .fold(0f64, f64::max)
        };
        assert!(err(&y, &y64) < 1e-6, "output {}", err(&y, &y64));
        assert!(err(&dx, &dx64) < 1e-5, "input gradient {}", err(&dx, &dx64));
        assert!(
            err(&dw, &dw64) < 1e-5,
            "weight gradient {}",
            err(&dw, &dw64)
        );
        // the plain device runs the same forward
        let plain = Device::flex();
        let mut norm = RmsNormConfig::new(d).with_epsilon(1e-5).init(&plain);
        norm.gamma = Param::from_tensor(Tensor::from_data(TensorData::new(w, [d]), &plain));
        let y_plain = norm.apply(Tensor::<2>::from_data(
            TensorData::new(x, [rows, d]),
            &plain,
        ));
        assert_eq!(host(y_plain), y);
    }

    #[test]
    fn backward_is_deterministic_across_thread_counts() {
        let (rows, d) = (5 * ROWS + 3, 24);
        let (x, w, dy) = (
            wave(rows * d, 0.019, 2.0),
            wave(d, 0.5, 1.0),
            wave(rows * d, 0.041, 1.0),
        );
        let run =
            |threads| super::super::testutil::on_threads(threads, || backward(&x, &w, &dy, 1e-6));
        assert_eq!(run(1), run(2));
    }
}
