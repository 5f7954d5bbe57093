//! BatchNorm with its running statistics (inference, or a frozen layer)
//! and the activation after it, as one pass over the channels' planes on
//! every core.
//!
//! burn computes an inference BatchNorm as four broadcast binary ops
//! (subtract the mean, divide by the standard deviation, scale, shift),
//! each a fresh tensor, and ReLU6 as a scalar clamp, all on one thread
//! below 4M elements: in a frozen MobileNetV2 they were ~45% of the CPU
//! time. Here `y = act(x * scale[c] + shift[c])` with
//! `scale = gamma / sqrt(var + eps)` and `shift = beta - mean * scale`
//! folded per channel first; the backward (for an input that needs a
//! gradient) is `dy * scale[c]` where the activation passes.
//!
//! In training the statistics are the batch's ([`batch_stats`]: the mean
//! and biased variance per channel, summed in a fixed order whatever the
//! threads) and the gradient flows to the input through them and to gamma
//! and beta ([`train_backward`]): burn's `batch_norm_train` is a dozen
//! tensor ops (swapped copies, reductions, broadcasts) and its backward as
//! many, with the activation's clamp and its mask-fill backward after it,
//! all on one thread; here the forward is two passes over the input and
//! one writing the output, the backward one summing and one writing.

use burn::nn::BatchNorm;
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use super::simd::{self, multiversion};

/// The activation after the norm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None,
    Relu,
    Relu6,
}

impl Act {
    pub fn code(self) -> u32 {
        match self {
            Act::None => 0,
            Act::Relu => 1,
            Act::Relu6 => 2,
        }
    }

    pub fn from_code(code: u32) -> Self {
        match code {
            1 => Act::Relu,
            2 => Act::Relu6,
            _ => Act::None,
        }
    }

    /// The activation's lower and upper bounds: what it clamps to (`-inf`
    /// and `inf` where it does not).
    fn bounds(self) -> (f32, f32) {
        match self {
            Act::None => (f32::NEG_INFINITY, f32::INFINITY),
            Act::Relu => (0.0, f32::INFINITY),
            Act::Relu6 => (0.0, 6.0),
        }
    }
}

/// Elements per rayon task, in whole planes.
const CHUNK: usize = 1 << 15;

multiversion! {
    fn forward_plane(x: &mut [f32], scale: f32, shift: f32, low: f32, high: f32) {
        for v in x.iter_mut() {
            let y = *v * scale + shift;
            let y = if y < low { low } else { y };
            *v = if y > high { high } else { y };
        }
    }
}

multiversion! {
    fn backward_plane(y: &[f32], g: &mut [f32], scale: f32, low: f32, high: f32) {
        for (g, &y) in g.iter_mut().zip(y) {
            *g = if y > low && y < high { *g * scale } else { 0.0 };
        }
    }
}

/// Runs `f(out_plane, in_plane, channel)` over the `plane`-long planes of
/// `out` and `input` side by side (channel `p % channels` for plane `p`),
/// in parallel chunks of planes.
fn planes_zip(
    out: &mut [f32],
    input: &[f32],
    plane: usize,
    channels: usize,
    f: impl Fn(&mut [f32], &[f32], usize) + Sync,
) {
    if plane == 0 {
        return;
    }
    let per_task = (CHUNK / plane).max(1);
    out.par_chunks_mut(per_task * plane)
        .zip(input.par_chunks(per_task * plane))
        .enumerate()
        .for_each(|(task, (out, input))| {
            for (i, (o, x)) in out.chunks_mut(plane).zip(input.chunks(plane)).enumerate() {
                f(o, x, (task * per_task + i) % channels);
            }
        });
}

/// Runs `f(plane, channel)` over the `plane`-long planes of `values`
/// (channel `p % channels` for plane `p`), in parallel chunks of planes.
fn planes(values: &mut [f32], plane: usize, channels: usize, f: impl Fn(&mut [f32], usize) + Sync) {
    if plane == 0 {
        return;
    }
    let per_task = (CHUNK / plane).max(1);
    values
        .par_chunks_mut(per_task * plane)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (i, p) in chunk.chunks_mut(plane).enumerate() {
                f(p, (task * per_task + i) % channels);
            }
        });
}

/// The mean and biased variance of each channel of `[batch, channels,
/// plane]` values (two passes; each plane summed in [`simd::LANES`]
/// partials, the planes in batch order in f64), channels on every core.
pub fn batch_stats(x: &[f32], plane: usize, channels: usize) -> (Vec<f32>, Vec<f32>) {
    assert!(
        plane > 0 && channels > 0 && x.len().is_multiple_of(plane * channels),
        "batch norm: {} values in planes of {plane} over {channels} channels",
        x.len()
    );
    let batch = x.len() / (plane * channels);
    let count = (batch * plane) as f64;
    let plane_of = |n: usize, c: usize| &x[(n * channels + c) * plane..][..plane];
    let stats: Vec<(f32, f32)> = (0..channels)
        .into_par_iter()
        .map(|c| {
            let mut sum = 0f64;
            for n in 0..batch {
                sum += simd::sum_map(plane_of(n, c), |v| v) as f64;
            }
            let mean = (sum / count) as f32;
            let mut squares = 0f64;
            for n in 0..batch {
                squares += simd::sum_map(plane_of(n, c), |v| (v - mean) * (v - mean)) as f64;
            }
            (mean, (squares / count) as f32)
        })
        .collect();
    stats.into_iter().unzip()
}

/// The per-channel `scale = gamma / sqrt(var + eps)` and
/// `shift = beta - mean * scale` that fold a BatchNorm.
pub fn fold(
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = gamma
        .iter()
        .zip(var)
        .map(|(&g, &v)| g / (v + eps).sqrt())
        .collect();
    let shift = beta
        .iter()
        .zip(mean)
        .zip(&scale)
        .map(|((&b, &m), &s)| b - m * s)
        .collect();
    (scale, shift)
}

multiversion! {
    fn forward_plane_into(x: &[f32], y: &mut [f32], scale: f32, shift: f32, low: f32, high: f32) {
        for (y, &v) in y.iter_mut().zip(x) {
            let p = v * scale + shift;
            let p = if p < low { low } else { p };
            *y = if p > high { high } else { p };
        }
    }
}

/// `act(x * scale[c] + shift[c])` over `[batch, channels, plane]` into a
/// fresh buffer (the input is kept for the backward).
pub fn forward_into(x: &[f32], plane: usize, scale: &[f32], shift: &[f32], act: Act) -> Vec<f32> {
    let (low, high) = act.bounds();
    // every plane is written in full below
    let mut y = simd::uninit(x.len());
    planes_zip(&mut y, x, plane, scale.len(), |y, x, c| {
        forward_plane_into(x, y, scale[c], shift[c], low, high)
    });
    y
}

multiversion! {
    /// `sums[0] += sum of g`, `sums[1] += sum of g * (x - mean)` over a
    /// plane, `g = dy` where `x * scale + shift` passes the activation.
    fn train_sums_plane(x: &[f32], dy: &[f32], k: &[f32; 5], sums: &mut [f64; 2]) {
        let [scale, shift, low, high, mean] = *k;
        let mut acc = [[0f32; simd::LANES]; 2];
        let n = x.len().min(dy.len());
        let whole = n - n % simd::LANES;
        let gate = |x: f32, dy: f32| {
            let p = x * scale + shift;
            if p > low && p < high { dy } else { 0.0 }
        };
        for (x, dy) in x[..whole]
            .chunks_exact(simd::LANES)
            .zip(dy[..whole].chunks_exact(simd::LANES))
        {
            for j in 0..simd::LANES {
                let g = gate(x[j], dy[j]);
                acc[0][j] += g;
                acc[1][j] += g * (x[j] - mean);
            }
        }
        let mut tail = [0f32; 2];
        for i in whole..n {
            let g = gate(x[i], dy[i]);
            tail[0] += g;
            tail[1] += g * (x[i] - mean);
        }
        for (s, (a, t)) in sums.iter_mut().zip(acc.iter().zip(tail)) {
            *s += (a.iter().sum::<f32>() + t) as f64;
        }
    }
}

multiversion! {
    /// `dy <- a g + b (x - mean) + c` in place over a plane, `g` as in
    /// [`train_sums_plane`]; `k` is `[scale, shift, low, high, mean, a, b, c]`.
    fn train_dx_plane(x: &[f32], dy: &mut [f32], k: &[f32; 8]) {
        let [scale, shift, low, high, mean, a, b, c] = *k;
        for (d, &x) in dy.iter_mut().zip(x) {
            let p = x * scale + shift;
            let g = if p > low && p < high { *d } else { 0.0 };
            *d = a * g + b * (x - mean) + c;
        }
    }
}

/// The gradients of `y = act((x - mean) / sqrt(var + eps) * gamma + beta)`
/// with the batch's own `mean` and biased `var` ([`batch_stats`]) over
/// `[batch, channels, plane]`, from the input `x` and the output's
/// gradient `dy`: `(dgamma, dbeta)`, and, with `want_dx`, the input's
/// gradient written over `dy`.
///
/// With `g = dy` where the activation passes (0 elsewhere),
/// `xhat = (x - mean) * rstd` and `m` values per channel:
/// `dbeta = sum g`, `dgamma = sum g xhat`,
/// `dx = gamma rstd (g - dbeta / m - xhat dgamma / m)`.
#[allow(clippy::too_many_arguments)]
pub fn train_backward(
    x: &[f32],
    dy: &mut [f32],
    plane: usize,
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
    act: Act,
    want_dx: bool,
) -> (Vec<f32>, Vec<f32>) {
    let channels = gamma.len();
    assert!(
        plane > 0 && x.len() == dy.len() && x.len().is_multiple_of(plane * channels),
        "batch norm backward: {} values, {} gradients, planes of {plane}, {channels} channels",
        x.len(),
        dy.len()
    );
    let (low, high) = act.bounds();
    let (scale, shift) = fold(gamma, beta, mean, var, eps);
    let batch = x.len() / (plane * channels);
    let count = (batch * plane) as f32;
    let at = |n: usize, c: usize| (n * channels + c) * plane;
    let dys: &[f32] = dy;
    let sums: Vec<[f64; 2]> = (0..channels)
        .into_par_iter()
        .map(|c| {
            let k = [scale[c], shift[c], low, high, mean[c]];
            let mut sums = [0f64; 2];
            for n in 0..batch {
                let i = at(n, c);
                train_sums_plane(&x[i..i + plane], &dys[i..i + plane], &k, &mut sums);
            }
            sums
        })
        .collect();
    let rstd: Vec<f32> = var.iter().map(|&v| 1.0 / (v + eps).sqrt()).collect();
    let dbeta: Vec<f32> = sums.iter().map(|s| s[0] as f32).collect();
    let dgamma: Vec<f32> = sums
        .iter()
        .zip(&rstd)
        .map(|(s, &r)| s[1] as f32 * r)
        .collect();
    if want_dx {
        let coef: Vec<[f32; 8]> = (0..channels)
            .map(|c| {
                let a = gamma[c] * rstd[c];
                [
                    scale[c],
                    shift[c],
                    low,
                    high,
                    mean[c],
                    a,
                    -a * rstd[c] * dgamma[c] / count,
                    -a * dbeta[c] / count,
                ]
            })
            .collect();
        planes_zip(dy, x, plane, channels, |d, x, c| {
            train_dx_plane(x, d, &coef[c])
        });
    }
    (dgamma, dbeta)
}

/// `act(x * scale[c] + shift[c])` in place over `[batch, channels, plane]`.
pub fn forward(x: &mut [f32], plane: usize, scale: &[f32], shift: &[f32], act: Act) {
    let (low, high) = act.bounds();
    planes(x, plane, scale.len(), |p, c| {
        forward_plane(p, scale[c], shift[c], low, high)
    });
}

/// `act(x * scale + shift)` in place on one plane (a channel's values).
pub fn affine_plane(x: &mut [f32], scale: f32, shift: f32, act: Act) {
    let (low, high) = act.bounds();
    forward_plane(x, scale, shift, low, high);
}

/// The input's gradient from the output `y` and its gradient `g` (in place
/// on `g`): `g * scale[c]` where the activation passes, 0 elsewhere.
pub fn backward(y: &[f32], g: &mut [f32], plane: usize, scale: &[f32], act: Act) {
    let (low, high) = act.bounds();
    planes_zip(g, y, plane, scale.len(), |g, y, c| {
        backward_plane(y, g, scale[c], low, high)
    });
}

/// `act(bn(x))`. With the running statistics (not training, or not on an
/// autodiff device) and parameters that take no gradient: one pass of
/// [`super::CpuKernels::batch_norm_act`] on the CPU in f32. In training:
/// the batch's statistics, [`super::CpuKernels::batch_norm_train`] on the
/// CPU in f32, burn's `batch_norm_train` elsewhere; the running statistics
/// then move by the layer's momentum towards the batch's mean and unbiased
/// variance (PyTorch's rule, so that an exported model's statistics are
/// the ones PyTorch would have kept).
#[allow(clippy::disallowed_methods)] // burn's BatchNorm where the CPU op does not apply
pub fn apply<const D: usize>(bn: &BatchNorm, x: Tensor<D>, act: Act) -> Tensor<D> {
    let device = x.device();
    let cpu = x.dtype() == DType::F32 && super::is_flex(&device) && D >= 2;
    let act_of = |y: Tensor<D>| match act {
        Act::None => y,
        Act::Relu => burn::tensor::activation::relu(y),
        Act::Relu6 => burn::tensor::activation::relu6(y),
    };
    if device.is_autodiff() && bn.training.is_enabled() {
        let dims = x.dims();
        let count = dims.iter().product::<usize>() / dims.get(1).copied().unwrap_or(1).max(1);
        let (y, mean, var) = if cpu {
            let channels = dims[1];
            let stats = super::batch_stats_tensor(x.clone());
            let y = super::batch_norm_train_tensor(
                x,
                bn.gamma.val(),
                bn.beta.val(),
                stats.clone(),
                bn.epsilon,
                act,
            );
            let mean = stats.clone().narrow(0, 0, 1).reshape([channels]);
            let var = stats.narrow(0, 1, 1).reshape([channels]);
            (y, mean, var)
        } else {
            let r = burn::tensor::module::batch_norm_train(
                x,
                bn.gamma.val(),
                bn.beta.val(),
                bn.epsilon,
            );
            (act_of(r.output), r.mean.detach(), r.variance.detach())
        };
        let unbiased = count as f64 / (count.max(2) - 1) as f64;
        let m = bn.momentum;
        let running_mean = bn.running_mean.value_sync().to_device(&device);
        let running_var = bn.running_var.value_sync().to_device(&device);
        bn.running_mean
            .update((running_mean.mul_scalar(1.0 - m) + mean.mul_scalar(m)).detach());
        bn.running_var
            .update((running_var.mul_scalar(1.0 - m) + var.mul_scalar(m * unbiased)).detach());
        return y;
    }
    match inference_affine(bn, &x) {
        Some((scale, shift)) => super::batch_norm_act_tensor(x, scale, shift, act),
        None => act_of(bn.forward(x)),
    }
}

/// The per-channel `(scale, shift)` that `bn` applies to `x` when it runs
/// on its running statistics with parameters that take no gradient, on
/// the CPU in f32 (`scale = gamma / sqrt(var + eps)`, `shift = beta -
/// mean * scale`); `None` in training or otherwise.
pub fn inference_affine<const D: usize>(
    bn: &BatchNorm,
    x: &Tensor<D>,
) -> Option<(Tensor<1>, Tensor<1>)> {
    let device = x.device();
    let cpu = x.dtype() == DType::F32 && super::is_flex(&device) && D >= 2;
    let training = device.is_autodiff() && bn.training.is_enabled();
    let trained = bn.gamma.is_require_grad() || bn.beta.is_require_grad();
    if training || trained || !cpu {
        return None;
    }
    let mean = bn.running_mean.value().to_device(&device);
    let var = bn.running_var.value().to_device(&device);
    let scale = bn.gamma.val().detach() / (var + bn.epsilon).sqrt();
    let shift = bn.beta.val().detach() - mean * scale.clone();
    Some((scale, shift))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::wave;

    #[test]
    fn planes_take_their_channels_values_and_the_gradient_stops_at_the_clamps() {
        // [2, 3, 5]: planes of 5, channel = plane % 3
        let x = wave(30, 0.7, 8.0, 1.0);
        let scale = [0.5, -2.0, 1.5];
        let shift = [0.1, 3.0, -1.0];
        for act in [Act::None, Act::Relu, Act::Relu6] {
            let mut y = x.clone();
            forward(&mut y, 5, &scale, &shift, act);
            let g = wave(30, 0.3, 1.0, 0.0);
            let mut dx = g.clone();
            backward(&y, &mut dx, 5, &scale, act);
            for i in 0..30 {
                let c = (i / 5) % 3;
                let pre = x[i] * scale[c] + shift[c];
                let want = match act {
                    Act::None => pre,
                    Act::Relu => pre.max(0.0),
                    Act::Relu6 => pre.clamp(0.0, 6.0),
                };
                assert_eq!(y[i], want, "{act:?} value {i}");
                let passes = match act {
                    Act::None => true,
                    Act::Relu => pre > 0.0,
                    Act::Relu6 => pre > 0.0 && pre < 6.0,
                };
                let want = if passes { g[i] * scale[c] } else { 0.0 };
                assert_eq!(dx[i], want, "{act:?} gradient {i}");
            }
        }
    }
}
