//! The two convolutions of the mobile networks, each way: pointwise (1x1,
//! stride 1, no padding) and depthwise (one kh x kw filter per channel);
//! dense kh x kw convolutions (VGG16's and ResNet's 3x3, Inception's 1x7,
//! 7x1, 1x3 and 3x1 too) build their columns from the same phase layout as
//! the depthwise ones ([`dense_forward`], [`dense_backward`]).
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
//! - depthwise: one (item, channel) plane per task on every core. The
//!   plane is padded and split into `stride x stride` phases (`Phases`):
//!   phase `(a, b)` holds the padded input's rows `a, a + stride, ...` and
//!   columns `b, b + stride, ...`, all phases with one row pitch. An output
//!   at flat index `q = row * pitch + col` then reads filter tap `(i, j)`
//!   at `q` plus a fixed offset, so each tap is one contiguous run over the
//!   whole plane rather than a run per output row: a 7x7 or 14x14 plane
//!   (half of MobileNetV2's depthwise layers) no longer pays a loop per
//!   7-value row, and a block of 64 outputs sums all its taps in registers
//!   before it is stored once. The columns past the output's width are
//!   computed and dropped (2 of 9 at 7x7). The input's gradient runs the
//!   same way backwards (each phase gathers the taps that land on it), the
//!   filter's gradient as one dot product per tap over the plane.
//!
//! Every sum runs in an order fixed by the shapes, so the bits do not
//! depend on the threads.

use rayon::prelude::*;

use super::matmul::{self, Strided};
use super::simd::{self, multiversion};

#[cfg(target_arch = "x86_64")]
mod channels;
mod dense;
#[cfg(target_arch = "x86_64")]
mod direct;
pub use dense::{dense_backward, dense_forward};

/// A depthwise or dense convolution's geometry: filters of `k` (rows,
/// columns), `stride` along both, the padding before the rows and columns
/// (`pad`), the input's and output's plane sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub k: [usize; 2],
    pub stride: usize,
    pub pad: [usize; 2],
    pub input: [usize; 2],
    pub output: [usize; 2],
}

impl Window {
    /// Values per filter plane: `kh * kw`.
    pub fn taps(&self) -> usize {
        self.k[0] * self.k[1]
    }
}

/// Outputs a depthwise kernel sums in registers at a time (four AVX-512
/// vectors).
const BLOCK: usize = 64;

/// The layout of one plane padded and split into `stride x stride` phases:
/// the padded plane is the `(oh - 1) * stride + kh` rows and `(ow - 1) *
/// stride + kw` columns the outputs read; each phase has `rows` rows of
/// `pitch` values (a phase's rows past the padded plane are zero).
#[derive(Clone, Copy, Debug)]
struct Phases {
    stride: usize,
    pitch: usize,
    rows: usize,
}

impl Phases {
    fn of(d: &Window) -> Self {
        let s = d.stride;
        let padded = |out: usize, k: usize| (out.max(1) - 1) * s + k;
        Self {
            stride: s,
            pitch: padded(d.output[1], d.k[1]).div_ceil(s),
            rows: padded(d.output[0], d.k[0]).div_ceil(s),
        }
    }

    /// Values per phase, a whole number of [`BLOCK`]s.
    fn plane(&self) -> usize {
        (self.rows * self.pitch).div_ceil(BLOCK) * BLOCK
    }

    /// Values of a buffer of all phases, with room for a last block's reads.
    fn len(&self) -> usize {
        self.stride * self.stride * self.plane() + 2 * BLOCK
    }

    /// The offset of tap `(i, j)` from an output's flat index, in the
    /// buffer of all phases: its phase, then its row and column in it.
    fn offset(&self, i: usize, j: usize) -> usize {
        let s = self.stride;
        ((i % s) * s + j % s) * self.plane() + (i / s) * self.pitch + j / s
    }

    /// Every tap's offset, row by row of the filter (the order of the sums).
    fn offsets(&self, [kh, kw]: [usize; 2]) -> Vec<usize> {
        (0..kh * kw).map(|t| self.offset(t / kw, t % kw)).collect()
    }

    /// Where each input row's values go in the buffer of all phases: per
    /// row and column phase, the input columns `first, first + stride, ...`
    /// (`count` of them) land on consecutive values from `at`. Input rows
    /// and columns that no output reads have no run.
    fn runs(&self, d: &Window) -> Vec<Run> {
        let s = self.stride;
        let [ih, iw] = d.input;
        let mut runs = Vec::new();
        for y in 0..ih {
            let py = y + d.pad[0];
            if py / s >= self.rows {
                break;
            }
            for b in 0..s {
                let first = (b + s - d.pad[1] % s) % s;
                let v = (first + d.pad[1]) / s;
                let count = (iw.saturating_sub(first))
                    .div_ceil(s)
                    .min(self.pitch.saturating_sub(v));
                if count > 0 {
                    runs.push(Run {
                        row: y * iw + first,
                        at: ((py % s) * s + b) * self.plane() + (py / s) * self.pitch + v,
                        count,
                    });
                }
            }
        }
        runs
    }

    /// The input plane `x` padded and split into phases, into `buf`.
    fn fill(&self, x: &[f32], runs: &[Run], buf: &mut Vec<f32>) {
        buf.clear();
        buf.resize(self.len(), 0.0);
        self.fill_slice(x, runs, buf);
    }

    /// [`Phases::fill`] into `buf` of [`Phases::len`] values.
    fn fill_slice(&self, x: &[f32], runs: &[Run], buf: &mut [f32]) {
        buf.fill(0.0);
        for r in runs {
            strided_copy(&x[r.row..], self.stride, &mut buf[r.at..][..r.count], 1);
        }
    }

    /// A plane in phase layout (`flat`) back to the input's layout, into
    /// `x` (zero where no output reads).
    fn unfill(&self, flat: &[f32], runs: &[Run], x: &mut [f32]) {
        x.fill(0.0);
        for r in runs {
            strided_copy(&flat[r.at..][..r.count], 1, &mut x[r.row..], self.stride);
        }
    }

    /// A plane of `ow`-wide rows (`values`) at this pitch, after `front`
    /// zeros, into `buf` (zero between the rows and after them).
    fn pitched(&self, values: &[f32], ow: usize, front: usize, buf: &mut Vec<f32>) {
        buf.clear();
        buf.resize(front + self.plane() + 2 * BLOCK, 0.0);
        self.pitch_into(values, ow, &mut buf[front..]);
    }

    /// The `ow`-wide rows of `values` into `out` at this pitch (what lies
    /// between the rows is left as it is).
    fn pitch_into(&self, values: &[f32], ow: usize, out: &mut [f32]) {
        for (r, row) in values.chunks_exact(ow).enumerate() {
            out[r * self.pitch..][..ow].copy_from_slice(row);
        }
    }

    /// The rows of `pitched`, at this pitch, cut to `ow` values each and
    /// packed into `out`.
    fn unpitch(&self, pitched: &[f32], ow: usize, out: &mut [f32]) {
        for (r, row) in out.chunks_exact_mut(ow).enumerate() {
            row.copy_from_slice(&pitched[r * self.pitch..][..ow]);
        }
    }
}

/// Input values `row, row + stride, ...` (`count` of them, `row` a flat
/// index in the plane) and where they go in the buffer of all phases.
#[derive(Clone, Copy, Debug)]
struct Run {
    row: usize,
    at: usize,
    count: usize,
}

multiversion! {
    /// `dst[m * dst_step] = src[m * src_step]` for the `m` both hold.
    fn strided_copy(src: &[f32], src_step: usize, dst: &mut [f32], dst_step: usize) {
        if src_step == 1 && dst_step == 1 {
            let n = src.len().min(dst.len());
            dst[..n].copy_from_slice(&src[..n]);
        } else if src_step == 2 && dst_step == 1 {
            // pairs vectorise (a shuffle per vector); step_by does not
            let pairs = src.chunks_exact(2);
            let last = pairs.remainder().first().copied();
            let n = pairs.len().min(dst.len());
            for (d, p) in dst.iter_mut().zip(pairs) {
                *d = p[0];
            }
            if let (Some(v), Some(d)) = (last, dst.get_mut(n)) {
                *d = v;
            }
        } else if src_step == 1 && dst_step == 2 {
            let pairs = dst.chunks_exact_mut(2);
            let n = pairs.len().min(src.len());
            for (p, s) in pairs.zip(src) {
                p[0] = *s;
            }
            let rest = dst.len() % 2 == 1 && n < src.len();
            if rest {
                let end = dst.len() - 1;
                dst[end] = src[n];
            }
        } else {
            for (d, s) in dst.iter_mut().step_by(dst_step).zip(src.iter().step_by(src_step)) {
                *d = *s;
            }
        }
    }
}

multiversion! {
    /// `out[q] = sum_t w[t] * buf[q + offsets[t]]` for every `q` of `out`
    /// (a whole number of [`BLOCK`]s), the taps in order.
    fn gather(buf: &[f32], w: &[f32], offsets: &[usize], out: &mut [f32]) {
        for (b, block) in out.chunks_exact_mut(BLOCK).enumerate() {
            let mut acc = [0f32; BLOCK];
            for (&off, &w) in offsets.iter().zip(w) {
                let src = &buf[b * BLOCK + off..][..BLOCK];
                for l in 0..BLOCK {
                    acc[l] += w * src[l];
                }
            }
            block.copy_from_slice(&acc);
        }
    }
}

/// Blocks per partial sum of a filter gradient's tap: each partial sum
/// runs in f32 over [`BLOCK`] lanes, and the partial sums add up in f64.
const CHUNK: usize = 16;

/// The sum of a block of lanes, halving it pairwise.
#[inline(always)]
fn lanes_sum(mut acc: [f32; BLOCK]) -> f32 {
    let mut n = BLOCK;
    while n > 1 {
        n /= 2;
        for l in 0..n {
            acc[l] += acc[l + n];
        }
    }
    acc[0]
}

multiversion! {
    /// `dw[t] += sum_q g[q] * buf[q + offsets[t]]` over `q` in `0..n`
    /// rounded up to a [`BLOCK`] (`g` is zero past the outputs), in partial
    /// sums of [`CHUNK`] blocks.
    fn dots(buf: &[f32], g: &[f32], offsets: &[usize], n: usize, dw: &mut [f64]) {
        let blocks = n.div_ceil(BLOCK);
        for start in (0..blocks).step_by(CHUNK) {
            let (from, to) = (start * BLOCK, (start + CHUNK).min(blocks) * BLOCK);
            let g = &g[from..to];
            for (&off, dw) in offsets.iter().zip(dw.iter_mut()) {
                let src = &buf[from + off..][..g.len()];
                let mut acc = [0f32; BLOCK];
                for (g, x) in g.chunks_exact(BLOCK).zip(src.chunks_exact(BLOCK)) {
                    for l in 0..BLOCK {
                        acc[l] += g[l] * x[l];
                    }
                }
                *dw += lanes_sum(acc) as f64;
            }
        }
    }
}

/// Scratch buffers of one task.
type Scratch = (Vec<f32>, Vec<f32>);

/// One depthwise output plane `out` from its input plane `x` and filter `w`.
fn forward_plane(
    x: &[f32],
    w: &[f32],
    out: &mut [f32],
    d: &Window,
    ph: &Phases,
    taps: (&[usize], &[Run]),
    scratch: &mut Scratch,
) {
    let (offsets, runs) = taps;
    let (buf, flat) = scratch;
    ph.fill(x, runs, buf);
    let [oh, ow] = d.output;
    flat.resize((oh * ph.pitch).div_ceil(BLOCK) * BLOCK, 0.0);
    gather(buf, w, offsets, flat);
    ph.unpitch(flat, ow, out);
}

/// The depthwise convolution of `[batch, channels, h, w]` values `x` with
/// filters `w` (`[channels, kh, kw]`), one (item, channel) plane per task.
pub fn depthwise_forward(x: &[f32], w: &[f32], channels: usize, d: &Window) -> Vec<f32> {
    depthwise_forward_affine(x, w, channels, d, None)
}

/// [`depthwise_forward`] with each output plane of channel `c` mapped to
/// `act(y * scale[c] + shift[c])` as soon as it is computed (an inference
/// BatchNorm and its activation, while the plane is still in cache).
pub fn depthwise_forward_affine(
    x: &[f32],
    w: &[f32],
    channels: usize,
    d: &Window,
    affine: Option<(&[f32], &[f32], super::batch_norm::Act)>,
) -> Vec<f32> {
    let (ip, op) = (d.input[0] * d.input[1], d.output[0] * d.output[1]);
    let kk = d.taps();
    assert!(
        ip > 0 && x.len().is_multiple_of(ip * channels) && w.len() == channels * kk,
        "depthwise conv: {} values in planes of {:?}, {} filter values for {channels} channels of {}x{}",
        x.len(),
        d.input,
        w.len(),
        d.k[0],
        d.k[1]
    );
    let planes = x.len() / ip;
    let mut out = simd::uninit(planes * op);
    if op == 0 {
        return out;
    }
    let ph = Phases::of(d);
    let (offsets, runs) = (ph.offsets(d.k), ph.runs(d));
    out.par_chunks_mut(op)
        .zip(x.par_chunks(ip))
        .enumerate()
        .for_each_init(Scratch::default, |scratch, (p, (o, x))| {
            let c = p % channels;
            forward_plane(x, &w[c * kk..][..kk], o, d, &ph, (&offsets, &runs), scratch);
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
    d: &Window,
    want_dx: bool,
    want_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (ip, op) = (d.input[0] * d.input[1], d.output[0] * d.output[1]);
    let kk = d.taps();
    let planes = x.len() / ip.max(1);
    assert_eq!(
        g.len(),
        planes * op,
        "depthwise conv backward: gradient size"
    );
    let ph = Phases::of(d);
    let (offsets, runs) = (ph.offsets(d.k), ph.runs(d));
    // the input's gradient in phase layout: each phase position gathers
    // the gradient of the outputs whose taps land on it, from the pitched
    // gradient shifted by the largest offset inside a phase
    let front = offsets.iter().map(|o| o % ph.plane()).max().unwrap_or(0);
    // per phase: the offsets back into the pitched gradient of the taps
    // that land on it, and those taps' filter values, channel by channel
    let by_phase: Vec<(Vec<usize>, Vec<f32>)> = (0..ph.stride * ph.stride)
        .map(|phase| {
            let taps: Vec<usize> = (0..kk)
                .filter(|&t| offsets[t] / ph.plane() == phase)
                .collect();
            let back = taps
                .iter()
                .map(|&t| front - offsets[t] % ph.plane())
                .collect();
            let wts = (0..channels)
                .flat_map(|c| taps.iter().map(move |&t| w[c * kk + t]))
                .collect();
            (back, wts)
        })
        .collect();
    let dx = want_dx.then(|| {
        let mut dx = simd::uninit(x.len());
        if ip > 0 && op > 0 {
            dx.par_chunks_mut(ip)
                .zip(g.par_chunks(op))
                .enumerate()
                .for_each_init(Scratch::default, |(gbuf, flat), (p, (dx, g))| {
                    let c = p % channels;
                    ph.pitched(g, d.output[1], front, gbuf);
                    flat.resize(by_phase.len() * ph.plane(), 0.0);
                    let phases = flat.chunks_exact_mut(ph.plane());
                    for ((back, wts), out) in by_phase.iter().zip(phases) {
                        let taps = back.len();
                        gather(gbuf, &wts[c * taps..][..taps], back, out);
                    }
                    ph.unfill(flat, &runs, dx);
                });
        } else {
            dx.fill(0.0);
        }
        dx
    });
    let dw = want_dw.then(|| {
        let batch = planes / channels.max(1);
        let n = d.output[0] * ph.pitch;
        let per_channel: Vec<Vec<f32>> = (0..channels)
            .into_par_iter()
            .map_init(Scratch::default, |(xbuf, gbuf), c| {
                let mut acc = vec![0f64; kk];
                for item in 0..batch {
                    let p = item * channels + c;
                    ph.fill(&x[p * ip..][..ip], &runs, xbuf);
                    ph.pitched(&g[p * op..][..op], d.output[1].max(1), 0, gbuf);
                    dots(xbuf, gbuf, &offsets, n, &mut acc);
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
    fn reference(x: &[f32], w: &[f32], g: &[f32], c: usize, d: &Window) -> [Vec<f64>; 3] {
        let ([ih, iw], [oh, ow], [kh, kw]) = (d.input, d.output, d.k);
        let planes = x.len() / (ih * iw);
        let mut y = vec![0f64; planes * oh * ow];
        let mut dx = vec![0f64; x.len()];
        let mut dw = vec![0f64; w.len()];
        for p in 0..planes {
            let ch = p % c;
            for r in 0..oh {
                for s in 0..ow {
                    for i in 0..kh {
                        for j in 0..kw {
                            let (a, b) = (
                                (r * d.stride + i) as isize - d.pad[0] as isize,
                                (s * d.stride + j) as isize - d.pad[1] as isize,
                            );
                            if a < 0 || b < 0 || a >= ih as isize || b >= iw as isize {
                                continue;
                            }
                            let xi = p * ih * iw + a as usize * iw + b as usize;
                            let oi = p * oh * ow + r * ow + s;
                            let wi = ch * kh * kw + i * kw + j;
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

    /// The geometry of a `k x k` window with `pad` on both sides.
    pub(super) fn window(k: usize, stride: usize, pad: [usize; 2], input: [usize; 2]) -> Window {
        rect([k, k], stride, pad, input)
    }

    /// The geometry of a `kh x kw` window with `pad` on both sides.
    pub(super) fn rect(k: [usize; 2], stride: usize, pad: [usize; 2], input: [usize; 2]) -> Window {
        let output = [0, 1].map(|a| (input[a] + 2 * pad[a] - k[a]) / stride + 1);
        Window {
            k,
            stride,
            pad,
            input,
            output,
        }
    }

    /// `run`'s output and its input and filter gradients against `want`
    /// (when given), and the same bits on 1 and 3 threads.
    pub(super) fn check(run: impl Fn() -> [Vec<f32>; 3] + Sync, want: Option<[Vec<f64>; 3]>) {
        let one = on_threads(1, &run);
        for (name, (got, want)) in ["output", "input gradient", "filter gradient"]
            .into_iter()
            .zip(one.iter().zip(want.iter().flatten()))
        {
            close(name, got, want, 1e-5);
        }
        let three = on_threads(3, &run);
        for (a, b) in one.iter().zip(&three) {
            assert!(a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
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
        // mobile networks use it and asymmetric ("same" at stride 2),
        // rectangles
        for (k, stride, pad, input) in [
            ([3, 3], 1, [1, 1], [7, 9]),
            ([3, 3], 2, [1, 1], [8, 7]),
            ([5, 5], 1, [2, 2], [6, 11]),
            ([5, 5], 2, [1, 2], [9, 10]),
            ([3, 3], 2, [0, 0], [7, 7]),
            ([3, 3], 1, [1, 1], [1, 1]),
            ([3, 3], 2, [1, 1], [2, 2]),
            ([5, 5], 3, [2, 1], [11, 13]),
            ([7, 7], 1, [3, 3], [9, 9]),
            ([1, 7], 1, [0, 3], [6, 9]),
            ([3, 1], 2, [1, 0], [9, 7]),
        ] {
            let d = rect(k, stride, pad, input);
            let output = d.output;
            let c = 3;
            let x = wave(2 * c * input[0] * input[1], 0.37, 1.5, 0.2);
            let w = wave(c * d.taps(), 0.71, 1.0, -0.1);
            let g = wave(2 * c * output[0] * output[1], 0.23, 1.0, 0.05);
            let [y, dx, dw] = reference(&x, &w, &g, c, &d);
            close("forward", &depthwise_forward(&x, &w, c, &d), &y, 1e-5);
            let (gx, gw) = depthwise_backward(&x, &w, &g, c, &d, true, true);
            close("input gradient", &gx.unwrap(), &dx, 1e-5);
            close("filter gradient", &gw.unwrap(), &dw, 1e-5);
        }
    }

    #[test]
    fn strided_copies_move_every_value_both_hold_at_any_length() {
        let reference = |src: &[f32], a: usize, dst_len: usize, b: usize| {
            let mut dst = vec![-1f32; dst_len];
            for (d, s) in dst.iter_mut().step_by(b).zip(src.iter().step_by(a)) {
                *d = *s;
            }
            dst
        };
        for (a, b) in [(1, 1), (2, 1), (1, 2), (3, 1), (1, 3)] {
            for src_len in 0..9 {
                for dst_len in 0..9 {
                    let src: Vec<f32> = (0..src_len).map(|v| v as f32).collect();
                    let mut dst = vec![-1f32; dst_len];
                    strided_copy(&src, a, &mut dst, b);
                    assert_eq!(
                        dst,
                        reference(&src, a, dst_len, b),
                        "steps {a}, {b}; lengths {src_len}, {dst_len}"
                    );
                }
            }
        }
    }

    #[test]
    fn depthwise_bits_do_not_depend_on_threads() {
        let d = window(3, 2, [1, 1], [15, 15]);
        let c = 5;
        let x = wave(4 * c * 15 * 15, 0.41, 1.0, 0.1);
        let w = wave(c * 9, 0.67, 1.0, 0.0);
        let g = wave(4 * c * 64, 0.29, 1.0, -0.1);
        let run = || {
            let (gx, gw) = depthwise_backward(&x, &w, &g, c, &d, true, true);
            [depthwise_forward(&x, &w, c, &d), gx.unwrap(), gw.unwrap()]
        };
        check(run, None);
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
        check(run, Some([y, dx, dw]));
    }
}
