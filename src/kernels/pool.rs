//! Max and average pooling over square windows (VGG16's 2x2 pools,
//! ResNet's and Inception's 3x3 ones, Inception's 3x3 average pools) as one
//! op each way on every core.
//!
//! burn-flex pools through its 3D routine with indices: per output it
//! computes each window's clipped range with integer divisions and writes
//! an `i64` index beside the value, on one core for VGG16's 14x14 maps
//! (profiled: ~10% of a VGG16 `head` step at 224 px, all in that loop).
//! Here the forward keeps no indices: the backward finds each window's
//! maximum again in the input, which autodiff keeps anyway. Windows are
//! scanned row by row and a value replaces the maximum when it is greater
//! or NaN, burn's (and PyTorch's) rule, so outputs and gradients are
//! burn's, ties and NaNs included (tested).
//!
//! burn-flex's average pool clamps every window's range per output (a
//! quarter of an Inception v3 `head` step's samples); here the ranges are
//! computed once per row and column. Each window sums from zero in row
//! order and divides by its count (the window's area with
//! `count_include_pad`), and the backward adds each output's share in the
//! same order, so the bits are burn's too (tested). Windows that keep the
//! plane's size (stride 1, Inception's 3x3 pools) run a row at a time:
//! each window row added at each column shift along the whole row, the
//! same additions in the same order, vectorised.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, DType, Dispatch, Flex, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::pool::{AvgPool2dConfig, MaxPool2dConfig};
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::activation;
use super::matmul::tensor;
use super::register_each;
use super::simd::{self, multiversion};

/// A square pooling window: `k x k`, `stride`, `pad` on every side
/// (`pad < k`, so every window holds a value of the plane).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pool {
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Pool {
    /// The output's side for an input side `n` (windows that fit, as
    /// PyTorch's `ceil_mode=False`).
    pub fn out(&self, n: usize) -> usize {
        (n + 2 * self.pad).saturating_sub(self.k) / self.stride + 1
    }

    /// The input range of output `o`'s window along a side of `n`.
    fn span(&self, o: usize, n: usize) -> (usize, usize) {
        let at = o * self.stride;
        (at.saturating_sub(self.pad), (at + self.k - self.pad).min(n))
    }

    /// Every output's window along a side of `n` inputs.
    fn spans(&self, n: usize) -> Vec<(usize, usize)> {
        (0..self.out(n)).map(|o| self.span(o, n)).collect()
    }
}

/// Whether `v` replaces the maximum `m` so far (burn's and PyTorch's rule:
/// greater, or NaN).
#[inline(always)]
fn beats(v: f32, m: f32) -> bool {
    v > m || v.is_nan()
}

multiversion! {
    /// The maxima of one plane (`w` values a row) over the windows
    /// `rows x cols`, into `out` (`rows.len() x cols.len()`).
    fn forward_plane(x: &[f32], w: usize, rows: &[(usize, usize)], cols: &[(usize, usize)], out: &mut [f32]) {
        for (&(r0, r1), out) in rows.iter().zip(out.chunks_exact_mut(cols.len())) {
            for (&(c0, c1), o) in cols.iter().zip(out.iter_mut()) {
                let mut m = x[r0 * w + c0];
                for r in r0..r1 {
                    for &v in &x[r * w + c0..r * w + c1] {
                        if beats(v, m) {
                            m = v;
                        }
                    }
                }
                *o = m;
            }
        }
    }
}

/// Where the maximum of the window `rows x cols` of a plane of `w`-value
/// rows lies: the maximum so far and its place, chosen without branches
/// (the comparisons follow the data, so a branch on them is mispredicted
/// about half the time).
#[inline(always)]
fn argmax(x: &[f32], w: usize, (r0, r1): (usize, usize), (c0, c1): (usize, usize)) -> usize {
    let (mut at, mut m) = (r0 * w + c0, x[r0 * w + c0]);
    for r in r0..r1 {
        for (i, &v) in x.iter().enumerate().take(r * w + c1).skip(r * w + c0) {
            let b = beats(v, m);
            at = if b { i } else { at };
            m = if b { v } else { m };
        }
    }
    at
}

multiversion! {
    /// The gradient of one plane: each output's `g` added where its
    /// window's maximum lies (`dx` zero on entry).
    fn backward_plane(x: &[f32], w: usize, rows: &[(usize, usize)], cols: &[(usize, usize)], g: &[f32], dx: &mut [f32]) {
        for (&rs, g) in rows.iter().zip(g.chunks_exact(cols.len())) {
            for (&cs, &g) in cols.iter().zip(g) {
                dx[argmax(x, w, rs, cs)] += g;
            }
        }
    }
}

/// An average's divisor: the window's area when the padding counts,
/// else the values it holds.
fn divisor(p: &Pool, include_pad: bool, (r0, r1): (usize, usize), (c0, c1): (usize, usize)) -> f32 {
    let n = if include_pad {
        p.k * p.k
    } else {
        (r1 - r0) * (c1 - c0)
    };
    n.max(1) as f32
}

multiversion! {
    /// The averages of one plane over the windows `rows x cols`.
    fn avg_forward_plane(x: &[f32], w: usize, rows: &[(usize, usize)], cols: &[(usize, usize)], p: &Pool, include_pad: bool, out: &mut [f32]) {
        for (&rs, out) in rows.iter().zip(out.chunks_exact_mut(cols.len())) {
            for (&cs, o) in cols.iter().zip(out.iter_mut()) {
                let mut sum = 0f32;
                for r in rs.0..rs.1 {
                    for &v in &x[r * w + cs.0..r * w + cs.1] {
                        sum += v;
                    }
                }
                *o = sum / divisor(p, include_pad, rs, cs);
            }
        }
    }
}

multiversion! {
    /// The gradient of one plane's averages: each output's `g / divisor`
    /// added over its window (`dx` zero on entry).
    fn avg_backward_plane(w: usize, rows: &[(usize, usize)], cols: &[(usize, usize)], p: &Pool, include_pad: bool, g: &[f32], dx: &mut [f32]) {
        for (&rs, g) in rows.iter().zip(g.chunks_exact(cols.len())) {
            for (&cs, &g) in cols.iter().zip(g) {
                let share = g / divisor(p, include_pad, rs, cs);
                for r in rs.0..rs.1 {
                    for d in &mut dx[r * w + cs.0..r * w + cs.1] {
                        *d += share;
                    }
                }
            }
        }
    }
}

/// Each plane of `x` (`[h, w]`) pooled by `plane` (its input, the
/// windows' rows and columns, its output) on every core: `[planes, oh, ow]`.
fn pooled(
    x: &[f32],
    [h, w]: [usize; 2],
    p: &Pool,
    plane: impl Fn(&[f32], &[(usize, usize)], &[(usize, usize)], &mut [f32]) + Sync,
) -> Vec<f32> {
    let (rows, cols) = (p.spans(h), p.spans(w));
    let (ip, op) = (h * w, rows.len() * cols.len());
    assert!(
        p.pad < p.k && ip > 0 && x.len().is_multiple_of(ip),
        "pool: {p:?} over {} values of {h}x{w} planes",
        x.len()
    );
    let mut out = simd::uninit(x.len() / ip * op);
    out.par_chunks_mut(op)
        .zip(x.par_chunks(ip))
        .for_each(|(out, x)| plane(x, &rows, &cols, out));
    out
}

/// The average pool of `x` (`planes` planes of `[h, w]`): `[planes, oh,
/// ow]`; `include_pad` divides by the window's area (PyTorch's
/// `count_include_pad`), else by the values it holds.
pub fn avg_forward(x: &[f32], [h, w]: [usize; 2], p: &Pool, include_pad: bool) -> Vec<f32> {
    let same = keeps_size(p, [h, w]);
    pooled(x, [h, w], p, |x, rows, cols, out| match same {
        true => avg_forward_plane_same(x, rows, cols, p, include_pad, out),
        false => avg_forward_plane(x, w, rows, cols, p, include_pad, out),
    })
}

/// Whether `p` keeps a `[h, w]` plane's size (stride 1, `2 pad = k - 1`:
/// Inception's 3x3 average pools), where the plane functions run along
/// whole rows.
fn keeps_size(p: &Pool, [h, w]: [usize; 2]) -> bool {
    p.stride == 1 && 2 * p.pad + 1 == p.k && p.out(h) == h && p.out(w) == w
}

/// The column shifts `e` (input column `c + e` for output `c`) of a
/// window of `p` that keeps the size, in order.
fn shifts(p: &Pool) -> std::ops::RangeInclusive<isize> {
    -(p.pad as isize)..=(p.k - 1 - p.pad) as isize
}

/// `acc[c] += src[c + e]` for every `c` with `c + e` inside `src`.
#[inline(always)]
fn add_shifted(acc: &mut [f32], src: &[f32], e: isize) {
    let n = acc.len() as isize;
    let (from, to) = ((-e).max(0), (n - e).min(n));
    if from < to {
        let (from, to) = (from as usize, to as usize);
        let src = &src[(from as isize + e) as usize..][..to - from];
        for (a, &v) in acc[from..to].iter_mut().zip(src) {
            *a += v;
        }
    }
}

multiversion! {
    /// [`avg_forward_plane`] for a window that keeps the size, a row of
    /// outputs at a time: each window row's values added at each column
    /// shift along the whole row, in the scalar loop's order (window rows,
    /// then columns), so the same bits.
    fn avg_forward_plane_same(x: &[f32], rows: &[(usize, usize)], cols: &[(usize, usize)], p: &Pool, include_pad: bool, out: &mut [f32]) {
        // the size kept: as many outputs a row as inputs
        let w = cols.len();
        for (&rs, out) in rows.iter().zip(out.chunks_exact_mut(w)) {
            out.fill(0.0);
            for r in rs.0..rs.1 {
                for e in shifts(p) {
                    add_shifted(out, &x[r * w..][..w], e);
                }
            }
            for (o, &cs) in out.iter_mut().zip(cols) {
                *o /= divisor(p, include_pad, rs, cs);
            }
        }
    }
}

multiversion! {
    /// [`avg_backward_plane`] for a window that keeps the size, a row of
    /// inputs at a time: each output's share computed once (into
    /// `shares`, a buffer the caller keeps), then the shares of the output
    /// rows whose windows hold the row added at each column shift, in the
    /// scalar loop's order (outputs row by row), so the same bits.
    fn avg_backward_plane_same(rows: &[(usize, usize)], cols: &[(usize, usize)], p: &Pool, include_pad: bool, g: &[f32], shares: &mut Vec<f32>, dx: &mut [f32]) {
        // the size kept: as many outputs a row as inputs
        let w = cols.len();
        shares.clear();
        shares.extend_from_slice(g);
        for (&rs, row) in rows.iter().zip(shares.chunks_exact_mut(w)) {
            for (s, &cs) in row.iter_mut().zip(cols) {
                *s /= divisor(p, include_pad, rs, cs);
            }
        }
        let h = rows.len();
        for (r, dx) in dx.chunks_exact_mut(w).enumerate() {
            // outputs i whose window rows i - pad ..= i - pad + k - 1 hold r
            let first = (r + p.pad).saturating_sub(p.k - 1);
            for i in first..(r + p.pad + 1).min(h) {
                for e in shifts(p) {
                    add_shifted(dx, &shares[i * w..][..w], e);
                }
            }
        }
    }
}

/// The input's gradient of [`avg_forward`] (`planes` planes of `[h, w]`)
/// from the output's gradient `g`.
pub fn avg_backward(g: &[f32], [h, w]: [usize; 2], p: &Pool, include_pad: bool) -> Vec<f32> {
    let (rows, cols) = (p.spans(h), p.spans(w));
    let op = rows.len() * cols.len();
    let mut dx = vec![0f32; g.len() / op.max(1) * h * w];
    let same = keeps_size(p, [h, w]);
    dx.par_chunks_mut(h * w)
        .zip(g.par_chunks(op.max(1)))
        .for_each_init(Vec::new, |shares, (dx, g)| match same {
            true => avg_backward_plane_same(&rows, &cols, p, include_pad, g, shares, dx),
            false => avg_backward_plane(w, &rows, &cols, p, include_pad, g, dx),
        });
    dx
}

/// The max pool of `x` (`planes` planes of `[h, w]`): `[planes, oh, ow]`.
pub fn forward(x: &[f32], [h, w]: [usize; 2], p: &Pool) -> Vec<f32> {
    pooled(x, [h, w], p, |x, rows, cols, out| {
        forward_plane(x, w, rows, cols, out)
    })
}

/// The input's gradient of [`forward`] from the output's gradient `g`.
pub fn backward(x: &[f32], g: &[f32], [h, w]: [usize; 2], p: &Pool) -> Vec<f32> {
    let (rows, cols) = (p.spans(h), p.spans(w));
    let (ip, op) = (h * w, rows.len() * cols.len());
    assert_eq!(
        g.len() * ip,
        x.len() * op,
        "max pool backward: gradient size"
    );
    #[cfg(target_arch = "x86_64")]
    let wide = std::arch::is_x86_feature_detected!("avx512f");
    let mut dx = vec![0f32; x.len()];
    dx.par_chunks_mut(ip)
        .zip(x.par_chunks(ip).zip(g.par_chunks(op)))
        .for_each(|(dx, (x, g))| {
            #[cfg(target_arch = "x86_64")]
            if wide {
                // SAFETY: the CPU has AVX-512F.
                return unsafe { backward_plane_wide(x, w, &rows, &cols, p, g, dx) };
            }
            backward_plane(x, w, &rows, &cols, g, dx)
        });
    dx
}

/// [`backward_plane`] with 16 outputs of a row at a time where their
/// windows lie whole inside the plane: each window position is gathered
/// for the 16 and the maximum and its place kept by mask, so 16 chains of
/// comparisons run at once (one window's chain, value after value, was a
/// ResNet18 `full` step's 4%). The rule (greater, or NaN) and the order
/// of the positions are the scalar loop's, and the gradients are added in
/// output order as there, so the bits are the same (tested).
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn backward_plane_wide(
    x: &[f32],
    w: usize,
    rows: &[(usize, usize)],
    cols: &[(usize, usize)],
    p: &Pool,
    g: &[f32],
    dx: &mut [f32],
) {
    use std::arch::x86_64::*;
    // the outputs whose windows are whole: a run of columns
    let whole = |j: usize| cols[j].1 - cols[j].0 == p.k;
    let lo = (0..cols.len()).find(|&j| whole(j)).unwrap_or(cols.len());
    let hi = (lo..cols.len()).find(|&j| !whole(j)).unwrap_or(cols.len());
    let lanes = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(p.stride as i32),
    );
    let mut at = [0u32; 16];
    for (&(r0, r1), g) in rows.iter().zip(g.chunks_exact(cols.len())) {
        let mut j = 0;
        while j < cols.len() {
            if j < lo || j + 16 > hi {
                dx[argmax(x, w, (r0, r1), cols[j])] += g[j];
                j += 1;
                continue;
            }
            let c0 = cols[j].0;
            let index =
                |r: usize, c: usize| _mm512_add_epi32(lanes, _mm512_set1_epi32((r * w + c) as i32));
            let first = index(r0, c0);
            // SAFETY: every window of the 16 lies inside the plane, so
            // every gathered index is below `x.len()`.
            let (mut place, mut m) = (first, unsafe {
                _mm512_i32gather_ps::<4>(first, x.as_ptr())
            });
            for r in r0..r1 {
                for c in c0..c0 + p.k {
                    let i = index(r, c);
                    // SAFETY: as above.
                    let v = unsafe { _mm512_i32gather_ps::<4>(i, x.as_ptr()) };
                    let beats = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, m)
                        | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                    m = _mm512_mask_blend_ps(beats, m, v);
                    place = _mm512_mask_blend_epi32(beats, place, i);
                }
            }
            // SAFETY: 16 u32 values fit `at`.
            unsafe { _mm512_storeu_si512(at.as_mut_ptr().cast(), place) };
            for (&a, &g) in at.iter().zip(&g[j..j + 16]) {
                dx[a as usize] += g;
            }
            j += 16;
        }
    }
}

/// A contiguous Flex f32 tensor's values.
fn values(t: &FlexTensor) -> &[f32] {
    &t.storage::<f32>()[..t.layout().num_elements()]
}

/// `[batch, channels, h, w]` and the input's values of a Flex tensor.
fn planes(x: &FlexTensor) -> ([usize; 4], &[f32]) {
    let s = x.layout().shape();
    assert!(
        s.len() == 4 && x.dtype() == DType::F32,
        "pool: an f32 [batch, channels, h, w] tensor"
    );
    ([s[0], s[1], s[2], s[3]], values(x))
}

fn flex_forward(x: &FlexTensor, p: &Pool) -> FlexTensor {
    let ([n, c, h, w], values) = planes(x);
    tensor(forward(values, [h, w], p), vec![n, c, p.out(h), p.out(w)])
}

#[backend_extension(Flex, Autodiff)]
pub trait PoolKernels: Backend {
    /// The `k x k` max pool of an f32 `[batch, channels, h, w]` tensor,
    /// `stride` and `pad` ([`Pool`]) on both sides.
    fn max_pool(x: FloatTensor<Self>, k: usize, stride: usize, pad: usize) -> FloatTensor<Self>;
    /// The `k x k` average pool of an f32 `[batch, channels, h, w]`
    /// tensor ([`avg_forward`]).
    fn avg_pool(
        x: FloatTensor<Self>,
        k: usize,
        stride: usize,
        pad: usize,
        include_pad: bool,
    ) -> FloatTensor<Self>;
}

fn flex_avg(x: &FlexTensor, p: &Pool, include_pad: bool) -> FlexTensor {
    let ([n, c, h, w], values) = planes(x);
    tensor(
        avg_forward(values, [h, w], p, include_pad),
        vec![n, c, p.out(h), p.out(w)],
    )
}

impl PoolKernels for Flex {
    fn max_pool(x: FloatTensor<Self>, k: usize, stride: usize, pad: usize) -> FloatTensor<Self> {
        flex_forward(&activation::contiguous(x), &Pool { k, stride, pad })
    }

    fn avg_pool(
        x: FloatTensor<Self>,
        k: usize,
        stride: usize,
        pad: usize,
        include_pad: bool,
    ) -> FloatTensor<Self> {
        flex_avg(
            &activation::contiguous(x),
            &Pool { k, stride, pad },
            include_pad,
        )
    }
}

/// The backward of [`PoolKernels::avg_pool`]: keeps the input's shape.
#[derive(Debug)]
struct AvgPoolBackward;

impl Backward<Flex, 1> for AvgPoolBackward {
    type State = ([usize; 4], Pool, bool);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = activation::contiguous(grads.consume::<Flex>(&ops.node));
        let ([n, c, h, w], p, include_pad) = ops.state;
        let dx = tensor(
            avg_backward(values(&g), [h, w], &p, include_pad),
            vec![n, c, h, w],
        );
        register_each(grads, ops.parents.map(|p| p.map(|n| n.id)), [Some(dx)]);
    }
}

/// The backward of [`PoolKernels::max_pool`]: keeps the input.
#[derive(Debug)]
struct MaxPoolBackward;

impl Backward<Flex, 1> for MaxPoolBackward {
    type State = (FlexTensor, Pool);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = activation::contiguous(grads.consume::<Flex>(&ops.node));
        let (x, p) = ops.state;
        let ([_, _, h, w], xs) = planes(&x);
        let dx = backward(xs, values(&g), [h, w], &p);
        let dx = activation::from_vec(dx, &x);
        register_each(grads, ops.parents.map(|p| p.map(|n| n.id)), [Some(dx)]);
    }
}

impl<C: CheckpointStrategy> PoolKernels for Autodiff<Flex, C> {
    fn max_pool(x: FloatTensor<Self>, k: usize, stride: usize, pad: usize) -> FloatTensor<Self> {
        let prep = MaxPoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        let x = activation::contiguous(<Self as AutodiffBackend>::inner(x));
        let p = Pool { k, stride, pad };
        let out = flex_forward(&x, &p);
        match prep {
            OpsKind::Tracked(prep) => prep.finish((x, p), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn avg_pool(
        x: FloatTensor<Self>,
        k: usize,
        stride: usize,
        pad: usize,
        include_pad: bool,
    ) -> FloatTensor<Self> {
        let prep = AvgPoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        let x = activation::contiguous(<Self as AutodiffBackend>::inner(x));
        let p = Pool { k, stride, pad };
        let out = flex_avg(&x, &p, include_pad);
        match prep {
            OpsKind::Tracked(prep) => prep.finish((planes(&x).0, p, include_pad), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

/// Whether [`PoolKernels`] take this pool: an f32 tensor on the CPU,
/// `pad < k` and a window that fits the padded plane.
fn ours(x: &Tensor<4>, k: usize, pad: usize) -> bool {
    let [_, _, h, w] = x.dims();
    x.dtype() == DType::F32
        && super::is_flex(&x.device())
        && pad < k
        && h + 2 * pad >= k
        && w + 2 * pad >= k
}

/// The `k x k` max pool of `x` (`[batch, channels, h, w]`) with `stride`
/// and `pad` on every side (`pad < k`): [`PoolKernels::max_pool`] on the
/// CPU in f32, burn's `MaxPool2d` elsewhere.
#[allow(clippy::disallowed_methods)]
pub fn max_pool2d(x: Tensor<4>, k: usize, stride: usize, pad: usize) -> Tensor<4> {
    if !ours(&x, k, pad) {
        return MaxPool2dConfig::new([k, k])
            .with_strides([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .init()
            .forward(x);
    }
    Tensor::from_dispatch(<Dispatch as PoolKernels>::max_pool(
        x.into_dispatch(),
        k,
        stride,
        pad,
    ))
}

/// The `k x k` average pool of `x` (`[batch, channels, h, w]`) with
/// `stride` and `pad` on every side (`pad < k`), dividing by the window's
/// area (`include_pad`, PyTorch's `count_include_pad`) or by the values it
/// holds: [`PoolKernels::avg_pool`] on the CPU in f32, burn's `AvgPool2d`
/// elsewhere.
#[allow(clippy::disallowed_methods)]
pub fn avg_pool2d(
    x: Tensor<4>,
    k: usize,
    stride: usize,
    pad: usize,
    include_pad: bool,
) -> Tensor<4> {
    if !ours(&x, k, pad) {
        return AvgPool2dConfig::new([k, k])
            .with_strides([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_count_include_pad(include_pad)
            .init()
            .forward(x);
    }
    Tensor::from_dispatch(<Dispatch as PoolKernels>::avg_pool(
        x.into_dispatch(),
        k,
        stride,
        pad,
        include_pad,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{bits, on_threads, wave};
    use burn::tensor::{Device, TensorData};

    /// `ours` against `theirs` (burn's layer) under autodiff on an input
    /// of `[2, 3, h, w]` values `x`: the output and the input's gradient
    /// bit for bit, on 1 and 3 threads.
    fn same_as_burn(
        x: &[f32],
        [h, w]: [usize; 2],
        out: [usize; 2],
        ours: impl Fn(Tensor<4>) -> Tensor<4> + Sync,
        theirs: impl Fn(Tensor<4>) -> Tensor<4>,
        what: &str,
    ) {
        let device = Device::default().autodiff();
        let (shape, out) = ([2, 3, h, w], [2, 3, out[0], out[1]]);
        let up = wave(out.iter().product(), 0.29, 1.0, 0.1);
        let run = |pool: &dyn Fn(Tensor<4>) -> Tensor<4>| {
            let xt =
                Tensor::<4>::from_data(TensorData::new(x.to_vec(), shape), &device).require_grad();
            let y = pool(xt.clone());
            assert_eq!(y.dims(), out, "{what}");
            let dy = Tensor::<4>::from_data(TensorData::new(up.clone(), out), &device);
            let grads = (y.clone() * dy).sum().backward();
            (bits(y.inner()), bits(xt.grad(&grads).unwrap()))
        };
        let want = run(&theirs);
        assert_eq!(on_threads(1, || run(&ours)), want, "{what}, one thread");
        assert_eq!(on_threads(3, || run(&ours)), want, "{what}, three threads");
    }

    /// Against burn's `MaxPool2d`, for VGG's 2x2, ResNet's padded 3x3/2 and
    /// Inception's 3x3 stride 1 (padded) and 2, on planes with a ragged
    /// edge and on rows of more than 16 outputs (16 windows at a time on
    /// AVX-512); the values are rounded to a coarse grid so windows hold
    /// ties, and NaNs are planted.
    #[test]
    #[allow(clippy::disallowed_methods)]
    fn max_pool_gives_burns_outputs_and_gradients() {
        for (k, stride, pad, [h, w]) in [
            (2, 2, 0, [8, 8]),
            (2, 2, 0, [7, 9]),
            (3, 2, 1, [9, 10]),
            (3, 1, 1, [6, 5]),
            (3, 2, 0, [11, 8]),
            (3, 3, 1, [4, 4]),
            (3, 2, 1, [5, 70]),
            (2, 2, 0, [4, 67]),
            (3, 1, 1, [3, 40]),
        ] {
            let n = 2 * 3 * h * w;
            let mut x: Vec<f32> = wave(n, 0.37, 4.0, 0.5).iter().map(|v| v.round()).collect();
            x[n / 2] = f32::NAN;
            x[n / 3 + 1] = f32::NAN;
            x[n / 3 + 3] = f32::NAN;
            let p = Pool { k, stride, pad };
            let burns = MaxPool2dConfig::new([k, k])
                .with_strides([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .init();
            same_as_burn(
                &x,
                [h, w],
                [p.out(h), p.out(w)],
                |x| max_pool2d(x, k, stride, pad),
                |x| burns.forward(x),
                &format!("max pool {p:?} on {h}x{w}"),
            );
        }
    }

    /// Against burn's `AvgPool2d`, the padding counted and not, for
    /// Inception's 3x3 stride 1 (row by row: windows that keep the size,
    /// 5x5 too, on wide planes) and other windows on ragged planes.
    #[test]
    #[allow(clippy::disallowed_methods)]
    fn avg_pool_gives_burns_outputs_and_gradients() {
        for (k, stride, pad, [h, w]) in [
            (3, 1, 1, [7, 6]),
            (3, 1, 1, [5, 37]),
            (5, 1, 2, [6, 20]),
            (1, 1, 0, [3, 4]),
            (2, 2, 0, [7, 9]),
            (3, 2, 1, [9, 10]),
            (5, 3, 2, [11, 8]),
        ] {
            for include_pad in [true, false] {
                let p = Pool { k, stride, pad };
                let burns = AvgPool2dConfig::new([k, k])
                    .with_strides([stride, stride])
                    .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                    .with_count_include_pad(include_pad)
                    .init();
                same_as_burn(
                    &wave(2 * 3 * h * w, 0.37, 4.0, 0.5),
                    [h, w],
                    [p.out(h), p.out(w)],
                    |x| avg_pool2d(x, k, stride, pad, include_pad),
                    |x| burns.forward(x),
                    &format!("avg pool {p:?} on {h}x{w}, padding counted {include_pad}"),
                );
            }
        }
    }
}
