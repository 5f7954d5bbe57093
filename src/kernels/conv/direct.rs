//! Dense convolutions computed in place from [`super::Phases`], without
//! columns, on CPUs with AVX-512.
//!
//! The column route ([`super::dense`]) copies each input nine times for a
//! 3x3 layer and hands the copy to gemm, which packs it once more: on
//! VGG16's 224 px layers (64 channels, 50,176 outputs a plane) that traffic
//! held the forward to 55 GFLOP/s and the filter gradient to 34, against
//! oneDNN's 126-128 on the same machine. Here every filter tap of every
//! channel is a contiguous run of the padded plane from a fixed offset, so
//! a register tile reads the planes where they lie:
//! - forward: a tile of [`CO`] output channels x [`PX`] outputs (24 AVX-512
//!   accumulators) sums `w[co][c, t] * plane_c[q + offset_t]` over every
//!   channel and tap, the filters packed so the [`CO`] weights of a
//!   (channel, tap) are adjacent; a task is one item's band of output rows,
//!   whose planes stay in cache while every channel tile passes over them;
//! - input gradient (stride 1): the same kernel (or, where it suits,
//!   [`super::channels`]') over the output's gradient, padded by `k - 1 -
//!   pad`, with the filters flipped and transposed;
//! - filter gradient: a tile of [`GO`] output channels x [`GJ`] (channel,
//!   tap) rows sums `g[co][q] * plane_c[q + offset_t]` over
//!   [`DW_CHUNK`] outputs in 16 f32 lanes, each chunk's sum added in f64;
//!   the output channels are split among the threads, each summing its own
//!   rows over the items and chunks in order.
//!
//! The sums run in an order fixed by the shapes (the forward over
//! (channel, tap) in order; the filter gradient over items, then chunks),
//! so the bits do not depend on the threads. gemm has no entry point that
//! reads its right operand from nine offsets of one buffer, and packing it
//! there is the copy this module avoids; hence a kernel of our own.

use rayon::prelude::*;

use super::dense::check_operands;
use super::{Phases, Window};
use crate::kernels::simd;

/// Output channels of a forward register tile.
const CO: usize = 8;
/// Pitched outputs of a forward register tile (three AVX-512 vectors).
const PX: usize = 48;
/// Input values (channels x outputs) a forward task's block of channels
/// aims to keep in cache: 64K f32, a quarter of a Zen 4 core's L2.
const TASK_VALUES: usize = 64 << 10;
/// Input channels a forward task sums before the next block's (the
/// partial sums wait in the task's tile, the chain of multiply-adds
/// unchanged).
const CHANNELS_AT_ONCE: usize = 128;
/// Output channels of a filter-gradient register tile.
const GO: usize = 3;
/// (channel, tap) rows of a filter-gradient register tile.
const GJ: usize = 8;
/// Outputs per f32 partial sum of the filter gradient (64 vectors).
pub(super) const DW_CHUNK: usize = 1024;

/// Whether dense convolutions run through this module: on a CPU with
/// AVX-512, unless `HEADSTART_CONV_COLUMNS` is set (the column route of
/// [`super::dense`] then runs them, for comparisons in one binary).
pub fn available() -> bool {
    static CHOICE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| std::env::var_os("HEADSTART_CONV_COLUMNS").is_none() && avx512())
}

/// Share of the outputs a forward computes that it keeps, below which the
/// pitched kernel is slower than the column route or the channel kernel:
/// the tiles run over whole rows at the planes' pitch, so a 7x7 plane
/// computes 64 values (9 a row, rounded to a vector) for 49 (ResNet18's
/// last stage: 8% faster `full` step by columns), a 14x14 one 224 for 196
/// (VGG16's and ResNet's 14 px layers: faster than the columns).
const MIN_KEPT: f64 = 0.85;

/// The outputs of `d`'s plane, and those the pitched tiles compute for
/// them (whole rows at the phases' pitch).
pub(super) fn kept_of_computed(d: &Window) -> (usize, usize) {
    let [oh, ow] = d.output;
    (oh * ow, oh * Phases::of(d).pitch)
}

/// Whether the pitched kernel suits `d`: the outputs a tile computes at
/// the planes' pitch (rounded to a vector) are mostly kept ([`MIN_KEPT`]).
pub fn suits(d: &Window) -> bool {
    let (kept, computed) = kept_of_computed(d);
    let computed = computed.next_multiple_of(16);
    computed > 0 && kept as f64 >= MIN_KEPT * computed as f64
}

/// Whether one of this module's kernels runs `d`: the channel-vectorised
/// one ([`super::channels::suits`]) or the pitched one ([`suits`]).
pub fn takes(d: &Window) -> bool {
    super::channels::suits(d) || suits(d)
}

/// The forward of `d` by the kernel that suits it: the
/// channel-vectorised one where it suits, else the pitched one ([`forward`]).
/// Call only when [`available`].
pub fn forward_suited(x: &[f32], w: &[f32], shape: [usize; 3], d: &Window) -> Vec<f32> {
    match super::channels::suits(d) {
        true => super::channels::forward(x, w, shape, d),
        false => forward(x, w, shape, d),
    }
}

fn avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// The padded planes of `x` (`planes` of `ip` values each) in `ph`'s
/// layout, one after another.
pub(super) fn all_planes(x: &[f32], ip: usize, ph: &Phases, d: &Window) -> Vec<f32> {
    let (runs, len) = (ph.runs(d), ph.len());
    let mut planes = simd::uninit(x.len() / ip.max(1) * len);
    planes
        .par_chunks_mut(len)
        .zip(x.par_chunks(ip.max(1)))
        .for_each(|(buf, x)| ph.fill_slice(x, &runs, buf));
    planes
}

/// Where each (channel, tap) row of an item's columns starts in its
/// planes: `c * len + offset_t`, channel-major.
fn row_starts(cin: usize, ph: &Phases, k: [usize; 2]) -> Vec<usize> {
    let offsets = ph.offsets(k);
    (0..cin)
        .flat_map(|c| offsets.iter().map(move |&o| c * ph.len() + o))
        .collect()
}

/// A pointer to the output that tasks write in disjoint parts.
#[derive(Clone, Copy)]
pub(super) struct Out(pub(super) *mut f32);
// SAFETY: every task writes a disjoint set of the output's values.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The output's value `i` (a method, so closures capture the whole
    /// `Out`, which is `Sync`).
    pub(super) fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// The dense convolution of `x` (`[batch, cin, h, w]`) with `w` (`[cout,
/// cin, kh, kw]`), no bias: `shape` is `[batch, cin, cout]`. Call only when
/// [`available`].
pub fn forward(x: &[f32], w: &[f32], shape: [usize; 3], d: &Window) -> Vec<f32> {
    let [batch, cin, cout] = shape;
    let ph = Phases::of(d);
    let kk = d.taps();
    let depth = cin * kk;
    let (ip, [oh, ow]) = (d.input[0] * d.input[1], d.output);
    let op = oh * ow;
    check_operands(x, w, shape, d);
    let mut out = simd::uninit(batch * cout * op);
    if out.is_empty() {
        return out;
    }
    if depth == 0 {
        out.fill(0.0);
        return out;
    }
    let planes = all_planes(x, ip, &ph, d);
    let starts = row_starts(cin, &ph, d.k);
    // filters packed [cout / CO][depth][CO], zero past the last channel
    let blocks = cout.div_ceil(CO);
    let mut packed = vec![0f32; blocks * depth * CO];
    for (o, filter) in w.chunks_exact(depth).enumerate() {
        let (b, c) = (o / CO, o % CO);
        for (j, &v) in filter.iter().enumerate() {
            packed[(b * depth + j) * CO + c] = v;
        }
    }
    let pitch = ph.pitch;
    // a task: an item's outputs q0..q0 + span at the phases' pitch (a whole
    // number of tiles; rows may end inside it), its channels in blocks
    // whose planes stay in cache while every filter tile passes over them
    let p = oh * pitch;
    let per_block = cin.min(CHANNELS_AT_ONCE);
    let span = (TASK_VALUES / per_block)
        .next_multiple_of(PX)
        .min(p.next_multiple_of(PX));
    let spans = p.div_ceil(span);
    let item_len = cin * ph.len();
    let dst = Out(out.as_mut_ptr());
    (0..batch * spans)
        .into_par_iter()
        .for_each_init(Vec::new, |tile: &mut Vec<f32>, task| {
            let (n, q0) = (task / spans, task % spans * span);
            // the last tile as narrow as its outputs allow: 1, 2 or 3 vectors
            let (len, width) = ((p - q0).min(span), (p - q0).min(span).next_multiple_of(16));
            tile.resize(blocks * CO * width, 0.0);
            let src = &planes[n * item_len..][..item_len];
            for c0 in (0..cin).step_by(per_block) {
                let js = c0 * kk..(c0 + per_block).min(cin) * kk;
                for b in 0..blocks {
                    let wb = &packed[(b * depth + js.start) * CO..][..js.len() * CO];
                    for q in (0..width).step_by(PX) {
                        let (rows, out) = (&starts[js.clone()], &mut tile[b * CO * width + q..]);
                        let more = c0 > 0;
                        // SAFETY: the CPU has AVX-512 (the caller checked
                        // `available`); every read lies in the item's
                        // planes (`Phases::len` leaves room past the last
                        // row for a tile's overrun) and the writes in `tile`.
                        unsafe {
                            match width - q {
                                16 => tile_forward::<1>(src, rows, wb, q0 + q, out, width, more),
                                32 => tile_forward::<2>(src, rows, wb, q0 + q, out, width, more),
                                _ => tile_forward::<3>(src, rows, wb, q0 + q, out, width, more),
                            }
                        };
                    }
                }
            }
            for o in 0..cout {
                let row = &tile[o * width..][..len];
                for r in q0 / pitch..(q0 + len).div_ceil(pitch) {
                    // the part of output row r in this task, cut to `ow`
                    let from = (r * pitch).max(q0);
                    let to = (r * pitch + ow).min(q0 + len);
                    if from >= to {
                        continue;
                    }
                    // SAFETY: this task alone writes outputs q0..q0 + len
                    // of item n's planes; the index lies inside `out`.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            row[from - q0..].as_ptr(),
                            dst.at((n * cout + o) * op + r * ow + from - r * pitch),
                            to - from,
                        )
                    };
                }
            }
        });
    out
}

/// `out[c * stride + l] = sum_j w[j * CO + c] * src[starts[j] + q + l]` for
/// `c < CO`, `l < 16 V` (added to what `out` holds when `more`, continuing
/// the same chain of multiply-adds): one forward register tile of `V`
/// vectors ([`PX`] outputs at `V = 3`), the rows `j` in order.
///
/// # Safety
/// The CPU has AVX-512F; `src` holds `starts[j] + q + 16 V` values for
/// every `j`, `w` `starts.len() * CO`, `out` `(CO - 1) * stride + 16 V`.
#[target_feature(enable = "avx512f")]
unsafe fn tile_forward<const V: usize>(
    src: &[f32],
    starts: &[usize],
    w: &[f32],
    q: usize,
    out: &mut [f32],
    stride: usize,
    more: bool,
) {
    use std::arch::x86_64::*;
    debug_assert!(w.len() >= starts.len() * CO && out.len() >= (CO - 1) * stride + 16 * V);
    let o = out.as_mut_ptr();
    let mut acc = [[_mm512_setzero_ps(); V]; CO];
    if more {
        for (c, acc) in acc.iter_mut().enumerate() {
            for (v, a) in acc.iter_mut().enumerate() {
                // SAFETY: as the function's contract.
                *a = unsafe { _mm512_loadu_ps(o.add(c * stride + v * 16)) };
            }
        }
    }
    let (s, wp) = (src.as_ptr(), w.as_ptr());
    for (j, &start) in starts.iter().enumerate() {
        debug_assert!(start + q + 16 * V <= src.len());
        // SAFETY: as the function's contract.
        unsafe {
            let p = s.add(start + q);
            let x: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(p.add(16 * v)));
            let wj = wp.add(j * CO);
            for (c, acc) in acc.iter_mut().enumerate() {
                let v = _mm512_set1_ps(*wj.add(c));
                for (a, &x) in acc.iter_mut().zip(&x) {
                    *a = _mm512_fmadd_ps(v, x, *a);
                }
            }
        }
    }
    for (c, acc) in acc.iter().enumerate() {
        for (v, &a) in acc.iter().enumerate() {
            // SAFETY: as the function's contract.
            unsafe { _mm512_storeu_ps(o.add(c * stride + v * 16), a) };
        }
    }
}

/// The geometry of the input gradient as a forward convolution of the
/// output's gradient (stride 1 and padding below the filter's size along
/// each axis only): padding `k - 1 - pad` per axis, the output's size in,
/// the input's out.
pub fn transposed(d: &Window) -> Option<Window> {
    (d.stride == 1 && (0..2).all(|a| d.pad[a] < d.k[a])).then(|| Window {
        k: d.k,
        stride: 1,
        pad: [0, 1].map(|a| d.k[a] - 1 - d.pad[a]),
        input: d.output,
        output: d.input,
    })
}

/// The input gradient of [`forward`] from the output's gradient `g`, for a
/// geometry [`transposed`] takes: the forward of `g` with the filters
/// flipped and transposed (`[cin, cout, kh, kw]`).
pub fn input_grad(g: &[f32], w: &[f32], shape: [usize; 3], d: &Window) -> Vec<f32> {
    let [batch, cin, cout] = shape;
    let t = transposed(d).expect("input_grad: stride 1 and pad < k");
    if super::channels::suits(&t) {
        return super::channels::input_grad(g, w, shape, &t);
    }
    let kk = d.taps();
    let mut flipped = simd::uninit(w.len());
    flipped
        .par_chunks_mut((cout * kk).max(1))
        .enumerate()
        .for_each(|(c, rows)| {
            for (o, row) in rows.chunks_exact_mut(kk).enumerate() {
                for (tap, v) in row.iter_mut().rev().enumerate() {
                    *v = w[(o * cin + c) * kk + tap];
                }
            }
        });
    forward_suited(g, &flipped, [batch, cout, cin], &t)
}

/// The filter gradient (`[cout, cin, kh, kw]`) from the input `x` and the
/// output's gradient `g`. Call only when [`available`].
pub fn filter_grad(x: &[f32], g: &[f32], shape: [usize; 3], d: &Window) -> Vec<f32> {
    if vectorised_over_channels(shape[1]) {
        filter_grad_channels(x, g, shape, d)
    } else {
        filter_grad_lanes(x, g, shape, d)
    }
}

/// Whether [`filter_grad`] of `cin` input channels vectorises over them
/// (reading only the outputs a plane keeps), else over outputs at the
/// pitch.
fn vectorised_over_channels(cin: usize) -> bool {
    cin >= VC / 4
}

/// Whether [`filter_grad`] suits `d` with `cin` input channels: where the
/// forward's tiles keep most of what they compute ([`suits`]), or on the
/// small planes of [`super::channels`] when it skips the pitch's padding.
pub fn filter_grad_suits(d: &Window, cin: usize) -> bool {
    suits(d) || (vectorised_over_channels(cin) && super::channels::suits_filter_grad(d))
}

/// The gradient at the phases' pitch (`[batch * cout, plen]`, `plen` at
/// least `oh * pitch`), zero past each row's outputs and past the last row.
fn pitched_grad(g: &[f32], ph: &Phases, d: &Window, plen: usize) -> Vec<f32> {
    let op = d.output[0] * d.output[1];
    let mut gp = vec![0f32; g.len() / op.max(1) * plen];
    gp.par_chunks_mut(plen)
        .zip(g.par_chunks(op.max(1)))
        .for_each(|(gp, g)| ph.pitch_into(g, d.output[1], gp));
    gp
}

/// Input channels of a channel-vectorised filter-gradient tile at most
/// (four AVX-512 vectors).
const VC: usize = 64;
/// Output channels of that widest tile.
const GC: usize = 6;

/// [`filter_grad`] vectorised over input channels (`cin >= 16`): each
/// item's planes transposed to `[position, channel]`, channels padded to
/// a multiple of 16, so that for one tap a tile of [`GC`] output channels
/// x [`VC`] input channels adds `g[co][q] * x[q + offset_t][c..c + VC]` (a
/// broadcast and four aligned loads per 24 multiply-adds, no horizontal
/// sums) over [`DW_CHUNK`] outputs in f32, each chunk's sums added in f64.
/// A last block of fewer channels runs narrower tiles of as many output
/// channels more (3 vectors x 8, 2 x 12, 1 x 24): channels padded to 64
/// left Inception's 32- and 80-channel stem layers half and a third
/// zeros. Planes of fewer outputs are summed in f32 several items at a
/// time, up to a chunk (a 14x14 plane, 224 at the pitch, four items), so
/// the f64 additions, 384 a tile, stay few next to the multiply-adds (on
/// 7x7 planes, one per item, they took as long).
fn filter_grad_channels(x: &[f32], g: &[f32], shape: [usize; 3], d: &Window) -> Vec<f32> {
    let [batch, cin, cout] = shape;
    let ph = Phases::of(d);
    let offsets = ph.offsets(d.k);
    let kk = offsets.len();
    let (ip, [oh, _]) = (d.input[0] * d.input[1], d.output);
    let op = d.output[0] * d.output[1];
    assert_eq!(g.len(), batch * cout * op, "conv backward: gradient size");
    if op == 0 || cin == 0 || cout == 0 {
        return vec![0.0; cout * cin * kk];
    }
    let (len, cp) = (ph.len(), cin.next_multiple_of(16));
    // each item's planes as [position, channel], channels padded with
    // zeros, in blocks of 64 positions (`len` is a whole number of them)
    let planes = all_planes(x, ip, &ph, d);
    let mut xt = simd::uninit(batch * len * cp);
    const POS: usize = 64;
    xt.par_chunks_mut(POS * cp)
        .enumerate()
        .for_each(|(b, block)| {
            let (n, p0) = (b / (len / POS), b % (len / POS) * POS);
            if cp > cin {
                block.fill(0.0);
            }
            for c in 0..cin {
                let plane = &planes[(n * cin + c) * len + p0..][..POS];
                for (i, &v) in plane.iter().enumerate() {
                    block[i * cp + c] = v;
                }
            }
        });
    drop(planes);
    let p = oh * ph.pitch;
    let gp = pitched_grad(g, &ph, d, p);
    let blocks = cout.div_ceil(GC);
    let parts = rayon::current_num_threads().clamp(1, blocks);
    let per = blocks.div_ceil(parts);
    // items whose planes are summed in f32 together (small planes: as many
    // as fill a chunk of [`DW_CHUNK`] positions), so each f64 addition
    // follows as many multiply-adds as on a large plane
    let group = (DW_CHUNK / p.max(1)).clamp(1, batch);
    // [cout][tap][cp] in f64, each part summing its own output channels
    let mut acc = vec![0f64; cout * kk * cp];
    acc.par_chunks_mut(per * GC * kk * cp)
        .enumerate()
        .for_each(|(part, acc)| {
            let first = part * per * GC;
            let mine = acc.len() / (kk * cp);
            for n0 in (0..batch).step_by(group) {
                let items = group.min(batch - n0);
                let src = &xt[n0 * len * cp..][..items * len * cp];
                let at = Items {
                    count: items,
                    src: len * cp,
                    g: cout * p,
                    pitch: ph.pitch,
                    ow: d.output[1],
                };
                for q0 in (0..p).step_by(DW_CHUNK) {
                    let q1 = (q0 + DW_CHUNK).min(p);
                    for c0 in (0..cp).step_by(VC) {
                        for (t, &off) in offsets.iter().enumerate() {
                            let block = DwBlock {
                                src: &src[c0..],
                                cp,
                                off,
                                gp: &gp,
                                row0: (n0 * cout + first) * p,
                                p,
                                mine,
                                qs: q0..q1,
                                at,
                            };
                            let acc = &mut acc[t * cp + c0..];
                            // as many vectors of channels as are left (of
                            // four), the output channels to fill 24 sums
                            match ((cp - c0) / 16).min(VC / 16) {
                                4 => block.sum::<4, 6>(kk * cp, acc),
                                3 => block.sum::<3, 8>(kk * cp, acc),
                                2 => block.sum::<2, 12>(kk * cp, acc),
                                _ => block.sum::<1, 24>(kk * cp, acc),
                            }
                        }
                    }
                }
            }
        });
    let mut dw = vec![0f32; cout * cin * kk];
    for o in 0..cout {
        for c in 0..cin {
            for t in 0..kk {
                dw[(o * cin + c) * kk + t] = acc[(o * kk + t) * cp + c] as f32;
            }
        }
    }
    dw
}

/// What one filter-gradient tile sums over: `count` items, each `src`
/// values after the last in the planes and `g` in the gradient, and the
/// outputs of each row at the phases' `pitch`, of which the first `ow`
/// are kept (the padding columns after them, where the gradient is zero,
/// are skipped).
#[derive(Clone, Copy)]
struct Items {
    count: usize,
    src: usize,
    g: usize,
    pitch: usize,
    ow: usize,
}

/// One block of a channel-vectorised filter gradient: its channels'
/// planes from `src` (`cp` values a position), one tap's `off`, the
/// gradient `gp` (rows of `p` at the pitch, the part's first output
/// channel's at `row0`), the part's `mine` output channels, the positions
/// `qs` of the items `at`.
struct DwBlock<'a> {
    src: &'a [f32],
    cp: usize,
    off: usize,
    gp: &'a [f32],
    row0: usize,
    p: usize,
    mine: usize,
    qs: std::ops::Range<usize>,
    at: Items,
}

impl DwBlock<'_> {
    /// Adds, for every output channel `o < mine`, its sums over the block
    /// to `acc[o * stride..][..16 * V]` in f64, [`tile_channels`] of `G`
    /// output channels x `V` vectors of channels at a time.
    fn sum<const V: usize, const G: usize>(&self, stride: usize, acc: &mut [f64]) {
        let mut sums = [0f32; VC * GC];
        for o0 in (0..self.mine).step_by(G) {
            let rows: [usize; G] =
                std::array::from_fn(|i| self.row0 + (o0 + i).min(self.mine - 1) * self.p);
            // SAFETY: the CPU has AVX-512; positions `q + off` for `q < p`
            // lie in each item's planes (`Phases::len` leaves room past
            // the last row), rows + q of each item in `gp`; `sums` holds
            // `G * 16 * V` (at most 24 vectors).
            unsafe {
                tile_channels::<V, G>(self, rows, &mut sums);
            }
            for (i, sums) in sums.chunks_exact(16 * V).enumerate().take(self.mine - o0) {
                let row = &mut acc[(o0 + i) * stride..][..16 * V];
                for (a, &s) in row.iter_mut().zip(sums) {
                    *a += s as f64;
                }
            }
        }
    }
}

/// `sums[i * 16 V + l] = sum_n sum_q g[n * at.g + rows[i] + q] * src[n *
/// at.src + (q + off) * cp + l]` over the items `n < at.count` and the
/// `q` in `qs` whose column `q % at.pitch` is below `at.ow`, `l < 16 V`:
/// one channel-vectorised filter-gradient tile of `G` output channels x
/// `V` vectors of input channels, the items and positions in order.
///
/// # Safety
/// The CPU has AVX-512F; `b.src` holds `(at.count - 1) * at.src +
/// (qs.end - 1 + off) * cp + 16 V` values; `b.gp` holds
/// `(at.count - 1) * at.g + rows[i] + qs.end`; `sums` `G * 16 V`.
#[target_feature(enable = "avx512f")]
unsafe fn tile_channels<const V: usize, const G: usize>(
    b: &DwBlock,
    rows: [usize; G],
    sums: &mut [f32],
) {
    use std::arch::x86_64::*;
    let (at, qs, cp, off) = (b.at, b.qs.clone(), b.cp, b.off);
    let last = at.count.max(1) - 1;
    debug_assert!(qs.is_empty() || last * at.src + (qs.end - 1 + off) * cp + 16 * V <= b.src.len());
    debug_assert!(rows.iter().all(|&r| last * at.g + r + qs.end <= b.gp.len()));
    debug_assert!(sums.len() >= G * 16 * V);
    let mut acc = [[_mm512_setzero_ps(); V]; G];
    // each item's row segments of `qs` that hold outputs
    let (pitch, ow) = (at.pitch.max(1), at.ow);
    for n in 0..at.count {
        let (s, gp) = (
            b.src.as_ptr().wrapping_add(n * at.src),
            b.gp.as_ptr().wrapping_add(n * at.g),
        );
        for row in qs.start / pitch..qs.end.div_ceil(pitch) {
            let (from, to) = ((row * pitch).max(qs.start), (row * pitch + ow).min(qs.end));
            for q in from..to {
                // SAFETY: as the function's contract.
                unsafe {
                    let p = s.add((q + off) * cp);
                    let x: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(p.add(16 * v)));
                    for (acc, &r) in acc.iter_mut().zip(&rows) {
                        let v = _mm512_set1_ps(*gp.add(r + q));
                        for (a, &x) in acc.iter_mut().zip(&x) {
                            *a = _mm512_fmadd_ps(v, x, *a);
                        }
                    }
                }
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        for (v, &a) in acc.iter().enumerate() {
            // SAFETY: `sums` holds `G * 16 V` values.
            unsafe { _mm512_storeu_ps(sums.as_mut_ptr().add((i * V + v) * 16), a) };
        }
    }
}

/// [`filter_grad`] vectorised over outputs, for few input channels: a
/// tile of [`GO`] output channels x [`GJ`] (channel, tap) rows in 16 f32
/// lanes summed at the end of each chunk.
fn filter_grad_lanes(x: &[f32], g: &[f32], shape: [usize; 3], d: &Window) -> Vec<f32> {
    let [batch, cin, cout] = shape;
    let ph = Phases::of(d);
    let kk = d.taps();
    let depth = cin * kk;
    let (ip, [oh, ow]) = (d.input[0] * d.input[1], d.output);
    let op = oh * ow;
    assert_eq!(g.len(), batch * cout * op, "conv backward: gradient size");
    if op == 0 || depth == 0 || cout == 0 {
        return vec![0.0; cout * depth];
    }
    let planes = all_planes(x, ip, &ph, d);
    let starts = row_starts(cin, &ph, d.k);
    let item_len = cin * ph.len();
    // the gradient at the phases' pitch, zero past each row's outputs and
    // past the last row to a whole number of vectors
    let p = oh * ph.pitch;
    let plen = p.next_multiple_of(16);
    let gp = pitched_grad(g, &ph, d, plen);
    let zeros = vec![0f32; plen];
    let blocks = cout.div_ceil(GO);
    let parts = rayon::current_num_threads().clamp(1, blocks);
    let per = blocks.div_ceil(parts);
    let mut dw = vec![0f64; cout * depth];
    dw.par_chunks_mut(per * GO * depth)
        .enumerate()
        .for_each(|(part, dw)| {
            let first = part * per;
            let mine = dw.len() / depth;
            for n in 0..batch {
                let src = &planes[n * item_len..][..item_len];
                let gn = &gp[n * cout * plen..][..cout * plen];
                for q in (0..p).step_by(DW_CHUNK) {
                    let vectors = (p - q).min(DW_CHUNK).div_ceil(16);
                    for b in 0..mine.div_ceil(GO) {
                        let o0 = (first + b) * GO;
                        let rows: [&[f32]; GO] = std::array::from_fn(|c| {
                            if o0 + c < cout {
                                &gn[(o0 + c) * plen..][..plen]
                            } else {
                                &zeros[..]
                            }
                        });
                        for j0 in (0..depth).step_by(GJ) {
                            let js: [usize; GJ] =
                                std::array::from_fn(|i| starts[(j0 + i).min(depth - 1)]);
                            // SAFETY: the CPU has AVX-512; every read lies in
                            // the item's planes or gradient rows (both hold
                            // `q + 16 * vectors` past each start).
                            let sums = unsafe { tile_filter(src, &js, rows, q, vectors) };
                            for c in 0..GO.min(cout - o0) {
                                let row = &mut dw[(b * GO + c) * depth..][..depth];
                                for (i, &s) in sums[c].iter().enumerate().take(depth - j0) {
                                    row[j0 + i] += s as f64;
                                }
                            }
                        }
                    }
                }
            }
        });
    dw.into_iter().map(|v| v as f32).collect()
}

/// `sums[c][i] = sum_l g[c][q + l] * src[starts[i] + q + l]` over `l <
/// 16 * vectors`, in 16 f32 lanes added at the end: one filter-gradient
/// register tile.
///
/// # Safety
/// The CPU has AVX-512F; `src` holds `starts[i] + q + 16 * vectors` values
/// for every `i`, each row of `g` `q + 16 * vectors`.
#[target_feature(enable = "avx512f")]
unsafe fn tile_filter(
    src: &[f32],
    starts: &[usize; GJ],
    g: [&[f32]; GO],
    q: usize,
    vectors: usize,
) -> [[f32; GJ]; GO] {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); GJ]; GO];
    let s = src.as_ptr();
    let gp = g.map(|r| r.as_ptr());
    for v in 0..vectors {
        let at = q + v * 16;
        debug_assert!(starts.iter().all(|&st| st + at + 16 <= src.len()));
        debug_assert!(g.iter().all(|r| at + 16 <= r.len()));
        // SAFETY: as the function's contract.
        unsafe {
            let gv = gp.map(|r| _mm512_loadu_ps(r.add(at)));
            for (i, &st) in starts.iter().enumerate() {
                let x = _mm512_loadu_ps(s.add(st + at));
                for (acc, &g) in acc.iter_mut().zip(&gv) {
                    acc[i] = _mm512_fmadd_ps(g, x, acc[i]);
                }
            }
        }
    }
    acc.map(|row| row.map(|a| _mm512_reduce_add_ps(a)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::dense::tests::{definition, operands};
    use crate::kernels::conv::tests::{check, rect, window};

    /// 3x3 padded layers: the direct route from 14x14 up (196 of 224
    /// computed outputs kept), the column route for 7x7 (49 of 64) and
    /// for a single output.
    #[test]
    fn the_direct_route_takes_planes_whose_computed_outputs_are_mostly_kept() {
        for (side, direct) in [(224, true), (28, true), (14, true), (7, false), (1, false)] {
            assert_eq!(
                suits(&window(3, 1, [1, 1], [side, side])),
                direct,
                "{side}x{side}"
            );
        }
    }

    #[test]
    fn direct_matches_the_definition_and_its_bits_do_not_depend_on_threads() {
        if !avx512() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        // stride 1, 2 and 3, k = 1, 3, 5, 7, padding 0 to k - 1 and
        // asymmetric; few channels (the filter gradient in lanes) and 16 or
        // more (over channels in blocks of four vectors, 16, 20 and 70
        // ending in a block of one or two, 300 of three), output
        // channels around the tiles' 8 and 6, planes of one value to more
        // than a task and a chunk (and of 360 pitched outputs, whose
        // filter gradient sums two items' planes in f32, then one); 300
        // input channels sum in three blocks;
        // rectangles (Inception's 1x7, 7x1, 1x3, 3x1)
        for (k, stride, pad, input, cin, cout) in [
            ([3, 3], 1, [1, 1], [5, 7], 2, 3),
            ([3, 3], 1, [1, 1], [9, 8], 16, 9),
            ([3, 3], 1, [1, 1], [6, 5], 70, 13),
            ([3, 3], 1, [0, 0], [3, 3], 1, 2),
            ([3, 3], 1, [2, 2], [4, 6], 17, 8),
            ([3, 3], 1, [1, 1], [1, 1], 20, 7),
            ([1, 1], 1, [0, 0], [4, 5], 19, 6),
            ([5, 5], 1, [2, 1], [10, 9], 2, 12),
            ([7, 7], 1, [3, 3], [11, 12], 3, 2),
            ([3, 3], 2, [1, 1], [9, 8], 3, 4),
            ([3, 3], 2, [1, 1], [12, 11], 24, 17),
            ([5, 5], 3, [2, 1], [10, 9], 2, 2),
            ([1, 1], 2, [0, 0], [7, 8], 18, 4),
            ([3, 3], 1, [1, 1], [120, 30], 20, 3),
            ([3, 3], 1, [1, 1], [20, 16], 20, 7),
            ([3, 3], 1, [1, 1], [4, 3], 300, 9),
            ([1, 7], 1, [0, 3], [9, 10], 20, 7),
            ([7, 1], 1, [3, 0], [10, 9], 3, 5),
            ([1, 3], 1, [0, 1], [8, 8], 17, 9),
            ([3, 1], 2, [1, 0], [9, 8], 3, 4),
        ] {
            let d = rect(k, stride, pad, input);
            let batch = 3;
            let shape = [batch, cin, cout];
            let (mut x, w, g) = operands(&d, batch, cin, cout);
            // the 120 x 30 planes' sums reach 95 from terms of 1.5: scaled
            // so f32's rounding stays inside the check's tolerance
            x.iter_mut().for_each(|v| *v *= 0.25);
            let [y, mut dx, dw] = definition(&x, &w, &g, shape, &d);
            let strided = transposed(&d).is_none();
            if strided {
                dx = vec![0.0; x.len()];
            }
            let run = || {
                let gx = match strided {
                    true => vec![0.0; x.len()],
                    false => input_grad(&g, &w, shape, &d),
                };
                [
                    forward(&x, &w, shape, &d),
                    gx,
                    filter_grad(&x, &g, shape, &d),
                ]
            };
            check(run, Some([y, dx, dw]));
        }
    }
}
