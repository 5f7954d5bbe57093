//! GELU (exact and tanh), and SiLU, forward and backward, vectorised and on
//! every core, for the CPU backend.
//!
//! burn-flex computes these one element at a time on one thread, exact GELU
//! through libm's `erff` and `expf` (14% of a BERT `full` step's CPU time,
//! the whole while the other core waits). Here each function is written
//! with nothing but multiplies, adds, `min`/`max`/`abs`, selects and bit
//! casts, which the compiler turns into 8- or 16-wide vector code, and the
//! tensor is split over rayon's threads in fixed chunks (the result does
//! not depend on the split).
//!
//! - `exp(y)` for `y <= 0`: `2^n * e^r` with `n = round(y / ln 2)`, `r`
//!   reduced in two steps (Cody-Waite) and `e^r` by its degree-6 Taylor
//!   polynomial on `|r| <= ln2/2` (relative error < 2e-7); 0 below -87.
//! - Exact GELU needs `erfc(|x|/sqrt 2)`: Abramowitz & Stegun 7.1.26,
//!   `t P(t) exp(-z^2)` with `t = 1/(1 + p z)`, absolute error < 1.5e-7. It
//!   gives `Phi(x)` for negative `x` directly, without the cancellation in
//!   `1 + erf(x/sqrt 2)`. `exp(-x^2/2)` serves both `Phi` and the density
//!   in the backward.
//! - tanh and the logistic function from `exp(-|u|)`, so that nothing
//!   overflows, and without subtractions that cancel (`1 + tanh u` for
//!   negative `u` as `2e/(1+e)`).
//!
//! Against f64 references (tests below), absolute below 1 and relative
//! above, every 1/1024 over [-12, 12]: GELU within 2.2e-7 (its derivative
//! 2.6e-7), tanh-GELU and SiLU within 1.9e-7; +-inf and NaN as libm.
//!
//! Hand-written because no maintained crate offers vectorised f32
//! activations on slices without a second thread pool or a C library.

use burn::backend::DType;
use burn::backend::flex::{FlexTensor, Layout};
use burn::tensor::Bytes;
use rayon::prelude::*;

use super::simd;

/// The activations this module computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `x Phi(x)`, transformers' "gelu".
    Gelu,
    /// `x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, "gelu_new".
    GeluTanh,
    /// `x sigmoid(x)`.
    Silu,
}

impl Kind {
    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Self {
        match code {
            0 => Self::Gelu,
            1 => Self::GeluTanh,
            2 => Self::Silu,
            other => panic!("activation code {other} is not a kernels::activation::Kind"),
        }
    }
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5 * 2^23: adding it rounds an f32 of magnitude < 2^22 to an integer.
const ROUND: f32 = 12_582_912.0;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_TANH_C: f32 = 0.044_715;

/// `e^y` for `y <= 0` (positive `y` is not used here); 0 below -87 (no
/// denormals). NaN gives NaN.
#[inline(always)]
pub(super) fn exp_neg(y: f32) -> f32 {
    let underflow = y < -87.0;
    let y = y.clamp(-87.0, 0.0);
    // k holds round(y / ln 2) in its low mantissa bits
    let k = y * LOG2E + ROUND;
    let n = k - ROUND;
    let r = (y - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    let n_int = (k.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let scale = f32::from_bits((n_int.wrapping_add(127) << 23) as u32);
    if underflow { 0.0 } else { p * scale }
}

/// `(Phi(x), phi(x))`: the standard normal CDF and density.
#[inline(always)]
fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    let z = x.abs() * FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let e = exp_neg(-0.5 * x * x);
    // erfc(|x|/sqrt 2) / 2 = Phi(-|x|)
    let tail = 0.5 * poly * e;
    // (NaN in: `tail` is NaN, and so is `cdf`)
    let cdf = if x >= 0.0 { 1.0 - tail } else { tail };
    (cdf, e * FRAC_1_SQRT_2PI)
}

/// For tanh-GELU at `x`: `(1 + tanh(u), 1 - tanh(u)^2, du/dx)` with
/// `u = sqrt(2/pi) (x + 0.044715 x^3)`, from `e = e^(-2|u|)` as `2/(1+e)`
/// (or `2e/(1+e)` for negative `u`) and `4e/(1+e)^2`: no subtraction, so
/// no cancellation where `tanh(u)` is near -1.
#[inline(always)]
fn tanh_parts(x: f32) -> (f32, f32, f32) {
    let x2 = x * x;
    let u = SQRT_2_OVER_PI * (x + GELU_TANH_C * x2 * x);
    let e = exp_neg(-2.0 * u.abs());
    let r = 1.0 / (1.0 + e);
    let one_plus_t = if u >= 0.0 { 2.0 * r } else { 2.0 * e * r };
    // NaN in: `e` and so `r` are NaN, and the comparison above takes `2er`
    let sech2 = 4.0 * e * r * r;
    let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_C * x2);
    (one_plus_t, sech2, du)
}

/// The logistic function and its complement, `(s(x), 1 - s(x))`, each
/// from `e^-|x|` without a subtraction.
#[inline(always)]
fn sigmoid(x: f32) -> (f32, f32) {
    let e = exp_neg(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 { (r, e * r) } else { (e * r, r) }
}

#[inline(always)]
pub(super) fn forward_one(kind: Kind, x: f32) -> f32 {
    match kind {
        Kind::Gelu => x * normal_cdf_pdf(x).0,
        Kind::GeluTanh => 0.5 * x * tanh_parts(x).0,
        Kind::Silu => x * sigmoid(x).0,
    }
}

/// The derivative at `x`, times `g`.
#[inline(always)]
pub(super) fn backward_one(kind: Kind, x: f32, g: f32) -> f32 {
    match kind {
        Kind::Gelu => {
            let (cdf, pdf) = normal_cdf_pdf(x);
            g * (cdf + x * pdf)
        }
        Kind::GeluTanh => {
            let (one_plus_t, sech2, du) = tanh_parts(x);
            g * (0.5 * one_plus_t + 0.5 * x * sech2 * du)
        }
        Kind::Silu => {
            let (s, one_minus_s) = sigmoid(x);
            g * (s * (1.0 + x * one_minus_s))
        }
    }
}

/// Elements per rayon task: large enough that a task outweighs its
/// scheduling, small enough to share a [16 x 128 x 1536] tensor out.
const CHUNK: usize = 1 << 14;

/// Forward over a slice, in place.
pub fn forward_slice(kind: Kind, xs: &mut [f32]) {
    // Monomorphised per kind so that the inner loop has no match in it.
    fn run<F: Fn(f32) -> f32 + Sync>(xs: &mut [f32], f: F) {
        let body = |c: &mut [f32]| simd::map(c, &f);
        if xs.len() <= CHUNK {
            body(xs)
        } else {
            xs.par_chunks_mut(CHUNK).for_each(body)
        }
    }
    match kind {
        Kind::Gelu => run(xs, |x| forward_one(Kind::Gelu, x)),
        Kind::GeluTanh => run(xs, |x| forward_one(Kind::GeluTanh, x)),
        Kind::Silu => run(xs, |x| forward_one(Kind::Silu, x)),
    }
}

/// `grads[i] *= f'(xs[i])`, in place.
pub fn backward_slice(kind: Kind, xs: &[f32], grads: &mut [f32]) {
    assert_eq!(xs.len(), grads.len(), "activation backward: lengths differ");
    fn run<F: Fn(f32, f32) -> f32 + Sync>(xs: &[f32], gs: &mut [f32], f: F) {
        let body = |(g, x): (&mut [f32], &[f32])| simd::zip_map(x, g, &f);
        if xs.len() <= CHUNK {
            body((gs, xs))
        } else {
            gs.par_chunks_mut(CHUNK)
                .zip(xs.par_chunks(CHUNK))
                .for_each(body)
        }
    }
    match kind {
        Kind::Gelu => run(xs, grads, |x, g| backward_one(Kind::Gelu, x, g)),
        Kind::GeluTanh => run(xs, grads, |x, g| backward_one(Kind::GeluTanh, x, g)),
        Kind::Silu => run(xs, grads, |x, g| backward_one(Kind::Silu, x, g)),
    }
}

/// A contiguous f32 copy of `t`'s values, or `t` itself when it already is one.
pub(super) fn contiguous(t: FlexTensor) -> FlexTensor {
    match t.layout().contiguous_offsets() {
        Some((0, end)) if end == t.layout().num_elements() => t,
        _ => t.to_contiguous(),
    }
}

/// A fresh contiguous tensor holding `values` in `shape_of`'s shape.
pub(super) fn from_vec(values: Vec<f32>, shape_of: &FlexTensor) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(shape_of.layout().shape().clone()),
        DType::F32,
    )
}

/// `f` over the values of a Flex f32 tensor: in place when the tensor is
/// contiguous and held once, on a copy otherwise.
pub fn map_flex(x: FlexTensor, f: impl FnOnce(&mut [f32])) -> FlexTensor {
    assert_eq!(x.dtype(), DType::F32, "CPU kernels take f32 tensors");
    let mut x = contiguous(x);
    let n = x.layout().num_elements();
    if let Some(values) = x.try_storage_mut::<f32>() {
        f(&mut values[..n]);
        return x;
    }
    let mut out = x.storage::<f32>()[..n].to_vec();
    f(&mut out);
    from_vec(out, &x)
}

/// The activation of a Flex f32 tensor.
pub fn flex_forward(kind: Kind, x: FlexTensor) -> FlexTensor {
    map_flex(x, |values| forward_slice(kind, values))
}

/// `grad * f'(x)` for Flex tensors of the same shape.
pub fn flex_backward(kind: Kind, x: FlexTensor, grad: FlexTensor) -> FlexTensor {
    let x = contiguous(x);
    let mut grad = contiguous(grad);
    let n = x.layout().num_elements();
    assert_eq!(
        n,
        grad.layout().num_elements(),
        "activation backward: shapes differ"
    );
    let xs = &x.storage::<f32>()[..n];
    if let Some(g) = grad.try_storage_mut::<f32>() {
        backward_slice(kind, xs, &mut g[..n]);
        return grad;
    }
    let mut out = grad.storage::<f32>()[..n].to_vec();
    backward_slice(kind, xs, &mut out);
    from_vec(out, &x)
}

#[cfg(test)]
mod tests;
