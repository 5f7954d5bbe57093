//! The two convolutions of the mobile networks, each way: pointwise (1x1,
//! stride 1, no padding) and depthwise (one k x k filter per channel).
//!
//! burn-flex runs a convolution's forward well (a gemm per batch item, a
//! direct depthwise loop), but its weight gradient is burn's generic
//! fallback: a convolution of the input, batch and channels swapped, with
//! the output's gradient as the filter. For a 1x1 layer that filter is a
//! whole feature map, for a depthwise layer the batch of one runs its
//! channels' tiles through an im2col on the calling thread: in a MobileNetV2
//! training step the weight gradients were ~40% of the CPU time, mostly on
//! one core. Here:
//! - pointwise: `y[n] = W x[n]`, `dx[n] = W^T dy[n]` as batched products
//!   (the matrix products of [`super::matmul`]), and `dW = sum_n dy[n]
//!   x[n]^T` summed over fixed blocks of the batch on every core;
//! - depthwise: direct loops over each (item, channel) plane on every core,
//!   the inner loop over an output row (vectorised at stride 1; a stride-2
//!   forward reads its plane's rows split into even and odd columns), and
//!   the filter's gradient per channel.
//!
//! Every sum runs in an order fixed by the shapes, so the bits do not
//! depend on the threads.

use rayon::prelude::*;

use super::matmul::{self, Strided};
use super::simd::{self, multiversion};

/// A depthwise convolution's geometry: `k x k` filters, `stride`, the
/// padding before the rows and columns (`pad`), the input's and output's
/// plane sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Depthwise {
    pub k: usize,
    pub stride: usize,
    pub pad: [usize; 2],
    pub input: [usize; 2],
    pub output: [usize; 2],
}

impl Depthwise {
    /// The output columns `ow` whose input column `ow * stride + j - pad`
    /// falls inside the input, for filter column `j`.
    fn cols(&self, j: usize) -> std::ops::Range<usize> {
        valid(j, self.pad[1], self.stride, self.input[1], self.output[1])
    }

    fn rows(&self, i: usize) -> std::ops::Range<usize> {
        valid(i, self.pad[0], self.stride, self.input[0], self.output[0])
    }
}

/// The outputs `o` in `0..outputs` with `o * stride + tap - pad` in
/// `0..inputs`.
fn valid(
    tap: usize,
    pad: usize,
    stride: usize,
    inputs: usize,
    outputs: usize,
) -> std::ops::Range<usize> {
    // o * stride >= pad - tap
    let lo = pad.saturating_sub(tap).div_ceil(stride);
    // o * stride + tap - pad <= inputs - 1
    let hi = if inputs + pad > tap {
        ((inputs + pad - tap - 1) / stride + 1).min(outputs)
    } else {
        0
    };
    lo.min(hi)..hi
}

/// `out[o] += w * x[o * stride + offset]` for `o` in `lo..hi`.
#[inline(always)]
fn axpy_strided(
    out: &mut [f32],
    x: &[f32],
    w: f32,
    stride: usize,
    offset: isize,
    lo: usize,
    hi: usize,
) {
    if stride == 1 {
        let start = (lo as isize + offset) as usize;
        let x = &x[start..start + (hi - lo)];
        for (o, &v) in out[lo..hi].iter_mut().zip(x) {
            *o += w * v;
        }
    } else {
        for (o, out) in out[lo..hi].iter_mut().enumerate() {
            *out += w * x[(((lo + o) * stride) as isize + offset) as usize];
        }
    }
}

/// `x[o * stride + offset] += w * g[o]` for `o` in `lo..hi`.
#[inline(always)]
fn scatter_strided(
    x: &mut [f32],
    g: &[f32],
    w: f32,
    stride: usize,
    offset: isize,
    lo: usize,
    hi: usize,
) {
    if stride == 1 {
        let start = (lo as isize + offset) as usize;
        let x = &mut x[start..start + (hi - lo)];
        for (x, &v) in x.iter_mut().zip(&g[lo..hi]) {
            *x += w * v;
        }
    } else {
        for (o, &g) in g[lo..hi].iter().enumerate() {
            let i = ((lo + o) * stride) as isize + offset;
            x[i as usize] += w * g;
        }
    }
}

/// `sum_o g[o] * x[o * stride + offset]` over `lo..hi`.
#[inline(always)]
fn dot_strided(g: &[f32], x: &[f32], stride: usize, offset: isize, lo: usize, hi: usize) -> f32 {
    if stride == 1 {
        let start = (lo as isize + offset) as usize;
        let x = &x[start..start + (hi - lo)];
        simd::sum_zip3(&g[lo..hi], x, x, |g, x, _| g * x)
    } else {
        let mut acc = 0f32;
        for (o, &g) in g[lo..hi].iter().enumerate() {
            acc += g * x[(((lo + o) * stride) as isize + offset) as usize];
        }
        acc
    }
}

/// A filter tap `(i, j)` applied along output row `row`: the input row it
/// reads, its index in the filter, the output columns it reaches and the
/// input column of output column 0 (`offset`, negative in the padding).
struct Tap {
    row: usize,
    input_row: usize,
    tap: usize,
    cols: std::ops::Range<usize>,
    offset: isize,
}

/// Runs `body` with `$t` bound to every tap of every output row whose
/// input row lies inside the input (rows in the padding add nothing), in a
/// fixed order. A macro, not a function taking a closure: a closure in a
/// multiversioned body is compiled for the baseline instruction set and
/// called once per tap (measured: 22% of a MobileNetV2 `head` step sat in
/// such a closure), while the macro's loops stay in the vectorised body.
macro_rules! for_each_tap {
    ($d:expr, |$t:ident| $body:block) => {{
        let d: &Depthwise = $d;
        for i in 0..d.k {
            for row in d.rows(i) {
                for j in 0..d.k {
                    let $t = Tap {
                        row,
                        input_row: row * d.stride + i - d.pad[0],
                        tap: i * d.k + j,
                        cols: d.cols(j),
                        offset: j as isize - d.pad[1] as isize,
                    };
                    $body
                }
            }
        }
    }};
}

multiversion! {
    /// One plane of the depthwise forward: `out` (zeroed here) from `x`
    /// and the channel's `k * k` filter.
    fn depthwise_plane(x: &[f32], w: &[f32], out: &mut [f32], d: &Depthwise) {
        let (iw, ow) = (d.input[1], d.output[1]);
        out.fill(0.0);
        for_each_tap!(d, |t| {
            let x_row = &x[t.input_row * iw..][..iw];
            let o_row = &mut out[t.row * ow..][..ow];
            axpy_strided(o_row, x_row, w[t.tap], d.stride, t.offset, t.cols.start, t.cols.end);
        });
    }
}

/// Each row of a plane `iw` wide split into its even columns, then its odd
/// ones (`iw.div_ceil(2)` and `iw / 2` values), into `out`.
fn deinterleave(x: &[f32], iw: usize, out: &mut Vec<f32>) {
    out.clear();
    for row in x.chunks_exact(iw) {
        out.extend(row.iter().step_by(2));
        out.extend(row.iter().skip(1).step_by(2));
    }
}

multiversion! {
    /// [`depthwise_plane`] at stride 2 from the deinterleaved plane `xs`
    /// ([`deinterleave`]): input column `2 o + offset` is value
    /// `o + offset.div_euclid(2)` of the row's even or odd half, so every
    /// tap reads consecutive values (the stride-2 loop reads every other
    /// value and does not vectorise). The backward keeps the stride-2
    /// loops: deinterleaving there (the input for the filter gradient, the
    /// input gradient written back) measured 0.99-1.00x of them.
    fn depthwise_plane_s2(xs: &[f32], w: &[f32], out: &mut [f32], d: &Depthwise) {
        let (iw, ow) = (d.input[1], d.output[1]);
        let even = iw.div_ceil(2);
        out.fill(0.0);
        for_each_tap!(d, |t| {
            let row = &xs[t.input_row * iw..][..iw];
            let half = if t.offset.rem_euclid(2) == 0 { &row[..even] } else { &row[even..] };
            let o_row = &mut out[t.row * ow..][..ow];
            axpy_strided(o_row, half, w[t.tap], 1, t.offset.div_euclid(2), t.cols.start, t.cols.end);
        });
    }
}

multiversion! {
    /// One plane of the depthwise input gradient: `dx` (zeroed here) from
    /// the output's gradient `g` and the channel's filter.
    fn depthwise_dx_plane(g: &[f32], w: &[f32], dx: &mut [f32], d: &Depthwise) {
        let (iw, ow) = (d.input[1], d.output[1]);
        dx.fill(0.0);
        for_each_tap!(d, |t| {
            let dx_row = &mut dx[t.input_row * iw..][..iw];
            let g_row = &g[t.row * ow..][..ow];
            scatter_strided(dx_row, g_row, w[t.tap], d.stride, t.offset, t.cols.start, t.cols.end);
        });
    }
}

multiversion! {
    /// Adds one plane's share of the filter gradient to `dw` (`k * k`).
    fn depthwise_dw_plane(x: &[f32], g: &[f32], dw: &mut [f64], d: &Depthwise) {
        let (iw, ow) = (d.input[1], d.output[1]);
        for_each_tap!(d, |t| {
            let x_row = &x[t.input_row * iw..][..iw];
            let g_row = &g[t.row * ow..][..ow];
            dw[t.tap] += dot_strided(g_row, x_row, d.stride, t.offset, t.cols.start, t.cols.end) as f64;
        });
    }
}

/// The depthwise convolution of `[batch, channels, h, w]` values `x` with
/// filters `w` (`[channels, k, k]`), one (item, channel) plane per task.
pub fn depthwise_forward(x: &[f32], w: &[f32], channels: usize, d: &Depthwise) -> Vec<f32> {
    depthwise_forward_affine(x, w, channels, d, None)
}

/// [`depthwise_forward`] with each output plane of channel `c` mapped to
/// `act(y * scale[c] + shift[c])` as soon as it is computed (an inference
/// BatchNorm and its activation, while the plane is still in cache).
pub fn depthwise_forward_affine(
    x: &[f32],
    w: &[f32],
    channels: usize,
    d: &Depthwise,
    affine: Option<(&[f32], &[f32], super::batch_norm::Act)>,
) -> Vec<f32> {
    let (ip, op) = (d.input[0] * d.input[1], d.output[0] * d.output[1]);
    let kk = d.k * d.k;
    assert!(
        ip > 0 && x.len().is_multiple_of(ip * channels) && w.len() == channels * kk,
        "depthwise conv: {} values in planes of {:?}, {} filter values for {channels} channels of {}x{}",
        x.len(),
        d.input,
        w.len(),
        d.k,
        d.k
    );
    let planes = x.len() / ip;
    let mut out = simd::uninit(planes * op);
    if op == 0 {
        return out;
    }
    out.par_chunks_mut(op)
        .zip(x.par_chunks(ip))
        .enumerate()
        .for_each_init(Vec::new, |scratch, (p, (o, x))| {
            let c = p % channels;
            let w = &w[c * kk..][..kk];
            if d.stride == 2 {
                deinterleave(x, d.input[1], scratch);
                depthwise_plane_s2(scratch, w, o, d)
            } else {
                depthwise_plane(x, w, o, d)
            }
            if let Some((scale, shift, act)) = affine {
                super::batch_norm::affine_plane(o, scale[c], shift[c], act);
            }
        });
    out
}

/// The depthwise convolution's gradients from its input `x`, filters `w`
/// and the output's gradient `g`: the input's (when `want_dx`) and the
/// filters' (when `want_dw`).
pub fn depthwise_backward(
    x: &[f32],
    w: &[f32],
    g: &[f32],
    channels: usize,
    d: &Depthwise,
    want_dx: bool,
    want_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (ip, op) = (d.input[0] * d.input[1], d.output[0] * d.output[1]);
    let kk = d.k * d.k;
    let planes = x.len() / ip.max(1);
    assert_eq!(
        g.len(),
        planes * op,
        "depthwise conv backward: gradient size"
    );
    let dx = want_dx.then(|| {
        let mut dx = simd::uninit(x.len());
        if ip > 0 {
            dx.par_chunks_mut(ip)
                .zip(g.par_chunks(op.max(1)))
                .enumerate()
                .for_each(|(p, (dx, g))| {
                    let c = p % channels;
                    depthwise_dx_plane(g, &w[c * kk..][..kk], dx, d)
                });
        }
        dx
    });
    let dw = want_dw.then(|| {
        let batch = planes / channels.max(1);
        let per_channel: Vec<Vec<f32>> = (0..channels)
            .into_par_iter()
            .map(|c| {
                let mut acc = vec![0f64; kk];
                for n in 0..batch {
                    let p = n * channels + c;
                    depthwise_dw_plane(&x[p * ip..][..ip], &g[p * op..][..op], &mut acc, d);
                }
                acc.into_iter().map(|v| v as f32).collect()
            })
            .collect();
        per_channel.concat()
    });
    (dx, dw)
}

/// Where each of `batch` items of `size` values starts.
fn starts(batch: usize, size: usize) -> Vec<isize> {
    (0..batch).map(|n| (n * size) as isize).collect()
}

/// Batch items per partial sum of a pointwise filter's gradient.
const ITEMS: usize = 4;

/// The pointwise convolution `y[n] = W x[n]` of `x` (`[batch, cin, plane]`)
/// with `w` (`[cout, cin]`): `[batch, cout, plane]`.
pub fn pointwise_forward(x: &[f32], w: &[f32], batch: usize, cin: usize, cout: usize) -> Vec<f32> {
    let plane = plane_of(x.len(), batch, cin, w.len(), cout);
    // W [cout, cin] for every item; x[n] [cin, plane]
    matmul::strided_products(
        Strided::new(w, vec![0; batch], [cout, cin], [cin as isize, 1]),
        Strided::new(
            x,
            starts(batch, cin * plane),
            [cin, plane],
            [plane as isize, 1],
        ),
    )
}

/// The plane of a pointwise convolution's input, checking the shapes.
fn plane_of(len: usize, batch: usize, cin: usize, wlen: usize, cout: usize) -> usize {
    assert!(
        wlen == cin * cout && (batch * cin == 0 || len.is_multiple_of(batch * cin)),
        "pointwise conv: {wlen} weights for {cin} -> {cout}, {len} values for {batch} items"
    );
    len.checked_div(batch * cin).unwrap_or(0)
}

/// The pointwise convolution's gradients from its input `x` (`[batch,
/// cin, plane]`), weight `w` and the output's gradient `g`: the input's
/// `W^T g[n]` (when `want_dx`) and the weight's `sum_n g[n] x[n]^T` (when
/// `want_dw`), the latter over fixed blocks of [`ITEMS`] items on every
/// core, summed in order.
#[allow(clippy::too_many_arguments)]
pub fn pointwise_backward(
    x: &[f32],
    w: &[f32],
    g: &[f32],
    batch: usize,
    cin: usize,
    cout: usize,
    want_dx: bool,
    want_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let plane = plane_of(x.len(), batch, cin, w.len(), cout);
    assert_eq!(
        g.len(),
        batch * cout * plane,
        "pointwise conv backward: gradient size"
    );
    let dx = want_dx.then(|| {
        matmul::strided_products(
            Strided::new(w, vec![0; batch], [cin, cout], [1, cin as isize]),
            Strided::new(
                g,
                starts(batch, cout * plane),
                [cout, plane],
                [plane as isize, 1],
            ),
        )
    });
    let dw = want_dw.then(|| {
        let blocks: Vec<Vec<f32>> = (0..batch.div_ceil(ITEMS))
            .into_par_iter()
            .map(|b| {
                let items = b * ITEMS..((b + 1) * ITEMS).min(batch);
                let at = |size: usize| items.clone().map(|n| (n * size) as isize).collect();
                // g[n] [cout, plane] times x[n]^T [plane, cin], each item
                // accumulated into the block's sum
                matmul::accumulated_products(
                    Strided::new(g, at(cout * plane), [cout, plane], [plane as isize, 1]),
                    Strided::new(x, at(cin * plane), [plane, cin], [1, plane as isize]),
                )
            })
            .collect();
        simd::sum_in_order(&blocks, cout * cin)
    });
    (dx, dw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{on_threads, wave};

    /// The depthwise convolution and its gradients, in f64 by definition.
    fn reference(x: &[f32], w: &[f32], g: &[f32], c: usize, d: &Depthwise) -> [Vec<f64>; 3] {
        let ([ih, iw], [oh, ow], k) = (d.input, d.output, d.k);
        let planes = x.len() / (ih * iw);
        let mut y = vec![0f64; planes * oh * ow];
        let mut dx = vec![0f64; x.len()];
        let mut dw = vec![0f64; w.len()];
        for p in 0..planes {
            let ch = p % c;
            for r in 0..oh {
                for s in 0..ow {
                    for i in 0..k {
                        for j in 0..k {
                            let (a, b) = (
                                (r * d.stride + i) as isize - d.pad[0] as isize,
                                (s * d.stride + j) as isize - d.pad[1] as isize,
                            );
                            if a < 0 || b < 0 || a >= ih as isize || b >= iw as isize {
                                continue;
                            }
                            let xi = p * ih * iw + a as usize * iw + b as usize;
                            let oi = p * oh * ow + r * ow + s;
                            let wi = ch * k * k + i * k + j;
                            y[oi] += w[wi] as f64 * x[xi] as f64;
                            dx[xi] += w[wi] as f64 * g[oi] as f64;
                            dw[wi] += g[oi] as f64 * x[xi] as f64;
                        }
                    }
                }
            }
        }
        [y, dx, dw]
    }

    fn close(name: &str, got: &[f32], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len(), "{name}: length");
        for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a as f64 - b).abs() <= tol * (1.0 + b.abs()),
                "{name}[{i}]: {a} vs {b}"
            );
        }
    }

    #[test]
    fn depthwise_matches_the_definition_at_every_stride_padding_and_edge() {
        // odd and even sizes, stride 1 and 2, 3x3 and 5x5, padding as the
        // mobile networks use it and asymmetric ("same" at stride 2)
        for (k, stride, pad, input) in [
            (3, 1, [1, 1], [7, 9]),
            (3, 2, [1, 1], [8, 7]),
            (5, 1, [2, 2], [6, 11]),
            (5, 2, [1, 2], [9, 10]),
            (3, 2, [0, 0], [7, 7]),
        ] {
            let output = [
                (input[0] + 2 * pad[0] - k) / stride + 1,
                (input[1] + 2 * pad[1] - k) / stride + 1,
            ];
            let d = Depthwise {
                k,
                stride,
                pad,
                input,
                output,
            };
            let c = 3;
            let x = wave(2 * c * input[0] * input[1], 0.37, 1.5, 0.2);
            let w = wave(c * k * k, 0.71, 1.0, -0.1);
            let g = wave(2 * c * output[0] * output[1], 0.23, 1.0, 0.05);
            let [y, dx, dw] = reference(&x, &w, &g, c, &d);
            close("forward", &depthwise_forward(&x, &w, c, &d), &y, 1e-5);
            let (gx, gw) = depthwise_backward(&x, &w, &g, c, &d, true, true);
            close("input gradient", &gx.unwrap(), &dx, 1e-5);
            close("filter gradient", &gw.unwrap(), &dw, 1e-5);
        }
    }

    #[test]
    fn pointwise_matches_the_definition_and_its_bits_do_not_depend_on_threads() {
        let (batch, cin, cout, plane) = (6, 5, 7, 13);
        let x = wave(batch * cin * plane, 0.31, 1.0, 0.1);
        let w = wave(cout * cin, 0.53, 0.8, 0.0);
        let g = wave(batch * cout * plane, 0.19, 1.0, -0.2);
        let mut y = vec![0f64; batch * cout * plane];
        let mut dx = vec![0f64; x.len()];
        let mut dw = vec![0f64; w.len()];
        for n in 0..batch {
            for o in 0..cout {
                for i in 0..cin {
                    for p in 0..plane {
                        let (xi, yi, wi) = (
                            (n * cin + i) * plane + p,
                            (n * cout + o) * plane + p,
                            o * cin + i,
                        );
                        y[yi] += w[wi] as f64 * x[xi] as f64;
                        dx[xi] += w[wi] as f64 * g[yi] as f64;
                        dw[wi] += g[yi] as f64 * x[xi] as f64;
                    }
                }
            }
        }
        let run = || {
            let y = pointwise_forward(&x, &w, batch, cin, cout);
            let (gx, gw) = pointwise_backward(&x, &w, &g, batch, cin, cout, true, true);
            [y, gx.unwrap(), gw.unwrap()]
        };
        let one = on_threads(1, run);
        close("forward", &one[0], &y, 1e-5);
        close("input gradient", &one[1], &dx, 1e-5);
        close("weight gradient", &one[2], &dw, 1e-5);
        let three = on_threads(3, run);
        for (a, b) in one.iter().zip(&three) {
            assert!(a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}
