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

use burn::nn::BatchNorm;
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use super::simd::multiversion;

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

    /// The activation's upper bound (`inf` for none and ReLU) and whether
    /// it clamps at 0.
    fn bounds(self) -> (bool, f32) {
        match self {
            Act::None => (false, f32::INFINITY),
            Act::Relu => (true, f32::INFINITY),
            Act::Relu6 => (true, 6.0),
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

/// `act(x * scale[c] + shift[c])` in place over `[batch, channels, plane]`.
pub fn forward(x: &mut [f32], plane: usize, scale: &[f32], shift: &[f32], act: Act) {
    let (clamp, high) = act.bounds();
    let low = if clamp { 0.0 } else { f32::NEG_INFINITY };
    planes(x, plane, scale.len(), |p, c| {
        forward_plane(p, scale[c], shift[c], low, high)
    });
}

/// The input's gradient from the output `y` and its gradient `g` (in place
/// on `g`): `g * scale[c]` where the activation passes, 0 elsewhere.
pub fn backward(y: &[f32], g: &mut [f32], plane: usize, scale: &[f32], act: Act) {
    let (clamp, high) = act.bounds();
    let low = if clamp { 0.0 } else { f32::NEG_INFINITY };
    let channels = scale.len();
    if plane == 0 {
        return;
    }
    let per_task = (CHUNK / plane).max(1);
    g.par_chunks_mut(per_task * plane)
        .zip(y.par_chunks(per_task * plane))
        .enumerate()
        .for_each(|(task, (g, y))| {
            for (i, (g, y)) in g.chunks_mut(plane).zip(y.chunks(plane)).enumerate() {
                backward_plane(y, g, scale[(task * per_task + i) % channels], low, high);
            }
        });
}

/// `act(bn(x))`: with the running statistics through
/// [`super::CpuKernels::batch_norm_act`] on the CPU in f32 when the layer
/// uses them (not training, or not on an autodiff device) and its own
/// parameters take no gradient; burn's BatchNorm and activation otherwise.
pub fn apply<const D: usize>(bn: &BatchNorm, x: Tensor<D>, act: Act) -> Tensor<D> {
    let device = x.device();
    let running = !(device.is_autodiff() && bn.training.is_enabled());
    let trained = bn.gamma.is_require_grad() || bn.beta.is_require_grad();
    if !running || trained || x.dtype() != DType::F32 || !super::is_flex(&device) || D < 2 {
        let y = bn.forward(x);
        return match act {
            Act::None => y,
            Act::Relu => burn::tensor::activation::relu(y),
            Act::Relu6 => burn::tensor::activation::relu6(y),
        };
    }
    let mean = bn.running_mean.value().to_device(&device);
    let var = bn.running_var.value().to_device(&device);
    let scale = bn.gamma.val().detach() / (var + bn.epsilon).sqrt();
    let shift = bn.beta.val().detach() - mean * scale.clone();
    super::batch_norm_act_tensor(x, scale, shift, act)
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
