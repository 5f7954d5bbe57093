//! Dense convolutions vectorised over output channels, for the planes the
//! pitched kernel would pad most, on CPUs with AVX-512: the forward, and
//! the input gradient at stride 1 as the forward of the output's gradient
//! by the flipped filters.
//!
//! [`super::direct`] vectorises over a plane's outputs at the phases'
//! pitch, so its tiles compute the padding columns too and throw them
//! away: a 14x14 plane under a 3x3 filter computes 224 values for the 196
//! it keeps, a 17x17 one under Inception's 1x7 filter 391 for 289, a 7x7
//! one 64 for 49. Here a register tile is [`NV`] vectors of 16 output
//! channels x [`P`] outputs: for each filter tap and input channel it
//! loads the [`NV`] vectors of weights once and broadcasts each output's
//! input value, 24 multiply-adds per 10 loads. The [`P`] outputs are any
//! outputs of the batch (each read from its own base), so no padding
//! column is computed and a 7x7 plane's 49 outputs share their last tile
//! with the next item's. This is how oneDNN's blocked kernels run, kept
//! on the NCHW tensors the rest of the model uses: the padded input is
//! transposed to `[position, channel]` in blocks of [`CI_BLOCK`] channels
//! once per call; a task (64 output channels x a group of outputs) packs
//! its filters block by block as it goes, so on small planes, where the
//! filters outweigh the inputs, they are read from memory once per group
//! rather than once per item, and no whole packed copy is written.
//!
//! The sums of an output run over blocks of [`CI_BLOCK`] input channels,
//! then taps, then the block's channels, in an order fixed by the shapes,
//! so the bits do not depend on the threads (nor on how the outputs are
//! grouped). gemm has no kernel that reads its operand at per-tap offsets
//! of one buffer, and building the columns for it is the copy these
//! kernels avoid; hence a kernel of our own.

use rayon::prelude::*;

use super::dense::check_operands;
use super::direct::{Out, all_planes};
use super::{Phases, Window};
use crate::kernels::simd;

/// Outputs of a register tile.
const P: usize = 6;
/// Vectors of 16 output channels of a register tile.
const NV: usize = 4;
/// Output channels of a register tile.
const CO: usize = NV * 16;
/// Input channels a task sums for every tile before the next block's (a
/// block's filters for [`CO`] outputs, 9 taps x 64 channels x 64 outputs,
/// stay in L2 while the task's tiles pass over them).
const CI_BLOCK: usize = 64;
/// Outputs per plane from which this kernel runs (ResNet's 7x7 and up).
const MIN_PLANE: usize = 7 * 7;
/// Outputs per plane from which the filter gradient runs on this
/// kernel's planes ([`suits_filter_grad`]): on 7x7 and 8x8 planes the
/// column route's products are faster.
const FILTER_GRAD_MIN_PLANE: usize = 12 * 12;
/// Share of its computed outputs the pitched kernel of [`super::direct`]
/// keeps from which that kernel runs instead (90%): a 28x28 plane under
/// a 3x3 filter keeps 93% (the same speed either way), a 14x14 one 87.5%
/// and a 17x17 one under a 1x7 filter 74% (faster here).
const PITCHED_KEEPS: f64 = 0.9;

/// Whether the channel-vectorised kernel suits `d`: planes of at least
/// [`MIN_PLANE`] outputs of which the pitched kernel would keep less than
/// [`PITCHED_KEEPS`], unless `HEADSTART_CONV_PITCHED` is set (the pitched
/// kernel or the columns then run them, for comparisons in one binary).
/// Call only where [`super::direct::available`].
pub fn suits(d: &Window) -> bool {
    static CHOICE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let on = *CHOICE.get_or_init(|| std::env::var_os("HEADSTART_CONV_PITCHED").is_none());
    let (op, computed) = super::direct::kept_of_computed(d);
    on && op >= MIN_PLANE && (op as f64) < PITCHED_KEEPS * computed as f64
}

/// Whether the filter gradient of `d` runs on the channel kernel's
/// planes: where it [`suits`] and the plane has at least
/// [`FILTER_GRAD_MIN_PLANE`] outputs.
pub fn suits_filter_grad(d: &Window) -> bool {
    suits(d) && d.output[0] * d.output[1] >= FILTER_GRAD_MIN_PLANE
}

/// The dense convolution of `x` (`[batch, cin, h, w]`) with `w` (`[cout,
/// cin, kh, kw]`), no bias: `shape` is `[batch, cin, cout]`. Call only
/// where [`super::direct::available`].
pub fn forward(x: &[f32], w: &[f32], shape: [usize; 3], d: &Window) -> Vec<f32> {
    check_operands(x, w, shape, d);
    run(x, Filters::Forward(w), shape, d)
}

/// The input gradient of the dense convolution `d` (stride 1, `pad < k`,
/// [`super::direct::transposed`] gives `t`) from the output's gradient
/// `g`: the forward of `g` over `t` with the filters `w` flipped and
/// transposed, packed straight from `w`. `shape` is the forward's
/// `[batch, cin, cout]`.
pub fn input_grad(g: &[f32], w: &[f32], shape: [usize; 3], t: &Window) -> Vec<f32> {
    let [batch, cin, cout] = shape;
    assert_eq!(
        w.len(),
        cout * cin * t.taps(),
        "conv input gradient: filter size"
    );
    // the transposed convolution's output channel `c` is the forward's
    // input channel, its input channel `o` the forward's output channel
    run(g, Filters::Flipped(w), [batch, cout, cin], t)
}

/// The filters a kernel runs, as laid out in memory.
#[derive(Clone, Copy)]
enum Filters<'a> {
    /// `[cout, cin, taps]`: the forward's.
    Forward(&'a [f32]),
    /// `[cin, cout, taps]` read taps last to first: the forward's filters
    /// flipped and transposed, for the input gradient.
    Flipped(&'a [f32]),
}

/// Input channels (with their taps) or output channels a square of
/// [`Filters::pack`] holds.
const SQUARE: usize = 16;

impl Filters<'_> {
    /// Output channels `first..first + CO` (zero past `cout`) of input
    /// channels `c0..c0 + width` into `block`, `[tap][channel][CO]`, for
    /// a kernel of `cin` inputs, `cout` outputs and `taps` taps. Each 16
    /// output channels go through `buf`, one output channel's taps for
    /// 16 input channels (or one input channel's, flipped) a row, then
    /// transposed 16 x 16 in registers and stored a cache line at a time.
    /// Reading or writing the filters in the other's order touches lines
    /// a multiple of 4 KB apart (512 channels x 9 taps), which share L1
    /// sets and evict each other.
    fn pack(
        self,
        [cin, cout, taps]: [usize; 3],
        first: usize,
        [c0, width]: [usize; 2],
        buf: &mut Vec<f32>,
        block: &mut [f32],
    ) {
        for l0 in (0..CO).step_by(SQUARE) {
            let lanes = cout.saturating_sub(first + l0).min(SQUARE);
            for i0 in (c0..c0 + width).step_by(SQUARE) {
                let inputs = SQUARE.min(c0 + width - i0);
                // rows of `pitch` values, one per output channel, of
                // which `cols` are read; `rounds` squares per 16 inputs
                let (pitch, cols, rounds) = match self {
                    Filters::Forward(_) => (SQUARE * taps, inputs * taps, 1),
                    Filters::Flipped(_) => (taps, taps, inputs),
                };
                // rows past the last output channel stay zero; columns
                // past `cols` (and the slack after the last row) are read
                // into lanes that are not stored
                buf.resize(SQUARE * pitch + SQUARE, 0.0);
                buf[lanes * pitch..SQUARE * pitch].fill(0.0);
                for round in 0..rounds {
                    match self {
                        Filters::Forward(w) => {
                            for lane in 0..lanes {
                                let from = ((first + l0 + lane) * cin + i0) * taps;
                                buf[lane * pitch..][..cols].copy_from_slice(&w[from..][..cols]);
                            }
                        }
                        Filters::Flipped(w) if lanes > 0 => {
                            let from = ((i0 + round) * cout + first + l0) * taps;
                            buf[..lanes * taps].copy_from_slice(&w[from..][..lanes * taps]);
                        }
                        Filters::Flipped(_) => {}
                    }
                    // where column `j` of the rows goes in `block`
                    let at = |j: usize| {
                        let (i, t) = match self {
                            Filters::Forward(_) => (j / taps, j % taps),
                            Filters::Flipped(_) => (round, taps - 1 - j),
                        };
                        (t * width + i0 + i - c0) * CO + l0
                    };
                    for k in (0..cols).step_by(SQUARE) {
                        let n = SQUARE.min(cols - k);
                        let dst = std::array::from_fn(|j| at(k + j.min(n - 1)));
                        // SAFETY: the CPU has AVX-512 (the callers checked
                        // `available`); `buf` holds `15 * pitch + k + 16`
                        // values (`k < cols <= pitch`); every `dst[j] + 16`
                        // lies in `block` (a tap and channel of the block,
                        // 16 lanes from `l0 <= CO - 16`).
                        unsafe { transpose16(&buf[k..], pitch, n, block, dst) };
                    }
                }
            }
        }
    }
}

/// Outputs' sums a task keeps at a time, values (64K: 256 KB, in L2 with
/// a block's packed filters and its inputs).
const SUMS: usize = 64 << 10;

/// The forward of `x` over `d` with `filters`; `shape` is `[batch, cin,
/// cout]`. The work runs in tasks of [`CO`] output channels x a group of
/// outputs (the batch's planes one after another, so a 7x7 plane's 49
/// outputs share tiles with the next item's): a task packs its output
/// channels' filters block by block of input channels (in L2 while every
/// tile of its group passes over them) and keeps its group's sums until
/// the last block, so the filters are read once per group rather than
/// once per item, as they must be on small planes where they outweigh
/// the inputs (512 x 512 x 9 filters against 8 x 512 x 7 x 7 inputs).
fn run(x: &[f32], filters: Filters, shape: [usize; 3], d: &Window) -> Vec<f32> {
    let [batch, cin, cout] = shape;
    let ph = Phases::of(d);
    let (taps, offsets) = (d.taps(), ph.offsets(d.k));
    let (ip, [oh, ow]) = (d.input[0] * d.input[1], d.output);
    let op = oh * ow;
    let mut out = simd::uninit(batch * cout * op);
    if out.is_empty() {
        return out;
    }
    if cin * taps == 0 {
        out.fill(0.0);
        return out;
    }
    // each item's padded planes in blocks of [`CI_BLOCK`] channels, each
    // block `[position, channel]` (the last block narrower); only the
    // positions a tap reads (each phase's rows) are written
    let len = ph.len();
    let read = ph.rows * ph.pitch;
    let planes = all_planes(x, ip, &ph, d);
    let mut xt = simd::uninit(batch * len * cin);
    xt.par_chunks_mut(cin * len)
        .zip(planes.par_chunks(cin * len))
        .for_each(|(xt, planes)| {
            for c0 in (0..cin).step_by(CI_BLOCK) {
                let width = CI_BLOCK.min(cin - c0);
                let (block, first) = (&mut xt[c0 * len..][..width * len], &planes[c0 * len..]);
                for phase in 0..ph.stride * ph.stride {
                    for p in phase * ph.plane()..phase * ph.plane() + read {
                        let row = &mut block[p * width..][..width];
                        for (c, v) in row.iter_mut().enumerate() {
                            *v = first[c * len + p];
                        }
                    }
                }
            }
        });
    drop(planes);
    // the batch's outputs in groups of whole tiles: as many as [`SUMS`]
    // holds, at least two tasks a thread, and tasks a multiple of the
    // threads where the outputs allow (9 equal tasks on 2 threads take
    // as long as 10)
    let (blocks, outputs) = (cout.div_ceil(CO), batch * op);
    let threads = rayon::current_num_threads().max(1);
    let mut groups = outputs
        .div_ceil(SUMS / CO)
        .max((2 * threads).div_ceil(blocks));
    while (blocks * groups) % threads != 0 && groups < outputs.div_ceil(P) {
        groups += 1;
    }
    let group = outputs
        .div_ceil(groups.min(outputs.div_ceil(P)))
        .next_multiple_of(P);
    let groups = outputs.div_ceil(group);
    // output `g`'s place in `xt` (item, then position) for block `c0`;
    // a last tile's spare outputs repeat the batch's last output
    let base = |g: usize, c0: usize| {
        let (n, q) = (g.min(outputs - 1) / op, g.min(outputs - 1) % op);
        (n * cin + c0) * len + ((q / ow) * ph.pitch + q % ow) * CI_BLOCK.min(cin - c0)
    };
    let dst = Out(out.as_mut_ptr());
    (0..blocks * groups).into_par_iter().for_each_init(
        || (Vec::new(), Vec::new(), Vec::new()),
        |(sums, packed, buf): &mut (Vec<f32>, Vec<f32>, Vec<f32>), task| {
            let (b, from) = (task / groups, task % groups * group);
            let mine = from..(from + group).min(outputs);
            // the group's sums: [tile][P][CO]
            sums.resize(mine.len().div_ceil(P) * P * CO, 0.0);
            for c0 in (0..cin).step_by(CI_BLOCK) {
                let width = CI_BLOCK.min(cin - c0);
                packed.resize(taps * width * CO, 0.0);
                filters.pack([cin, cout, taps], b * CO, [c0, width], buf, packed);
                for (tile, out) in sums.chunks_exact_mut(P * CO).enumerate() {
                    let bases = std::array::from_fn(|j| base(mine.start + tile * P + j, c0));
                    // SAFETY: the CPU has AVX-512 (the caller checked
                    // `available`); every output's position plus a tap's
                    // offset lies in its item's planes (`Phases::len`),
                    // so `bases[j] + off * width + c` in `xt` for every
                    // offset and channel `c < width`; `packed` holds
                    // `taps * width * CO` values.
                    unsafe { tile_forward(&xt, width, bases, &offsets, packed, c0 > 0, out) };
                }
            }
            // the sums into the output planes
            for (i, g) in mine.enumerate() {
                let (n, q) = (g / op, g % op);
                for (lane, &v) in sums[i * CO..][..CO].iter().enumerate() {
                    let o = b * CO + lane;
                    if o < cout {
                        // SAFETY: this task alone writes these output
                        // channels of its group's outputs; the index
                        // lies inside `out`.
                        unsafe { *dst.at((n * cout + o) * op + q) = v };
                    }
                }
            }
        },
    );
    out
}

/// `dst[at[j] + l] = src[l * pitch + j]` for 16 rows `l` and the first
/// `n` of 16 columns `j`: a 16 x 16 square transposed in registers
/// (32-bit, 64-bit, then two 128-bit interleaves).
///
/// # Safety
/// The CPU has AVX-512F; `src` holds `15 * pitch + 16` values, `dst`
/// `at[j] + 16` for every `j < n`.
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(src: &[f32], pitch: usize, n: usize, dst: &mut [f32], at: [usize; 16]) {
    use std::arch::x86_64::*;
    debug_assert!(src.len() >= 15 * pitch + 16 && at[..n].iter().all(|&a| a + 16 <= dst.len()));
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    // SAFETY: as the function's contract.
    let r: [__m512; 16] = std::array::from_fn(|l| unsafe { _mm512_loadu_ps(s.add(l * pitch)) });
    // rows 2m and 2m + 1 interleaved by 32 bits
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
        match i % 2 {
            0 => _mm512_unpacklo_ps(a, b),
            _ => _mm512_unpackhi_ps(a, b),
        }
    });
    // r[4g + m]'s 128-bit lane L: column 4L + m of rows 4g..4g + 4
    let r: [__m512; 16] = std::array::from_fn(|i| {
        let (g, m) = (i / 4, i % 4);
        let (a, b) = (
            _mm512_castps_pd(t[4 * g + m / 2]),
            _mm512_castps_pd(t[4 * g + m / 2 + 2]),
        );
        _mm512_castpd_ps(match m % 2 {
            0 => _mm512_unpacklo_pd(a, b),
            _ => _mm512_unpackhi_pd(a, b),
        })
    });
    // t[h * 8 + e * 4 + m]: columns m + 4e and m + 4e + 8 of rows 8h..8h + 8
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (h, e, m) = (i / 8, i / 4 % 2, i % 4);
        let (a, b) = (r[8 * h + m], r[8 * h + m + 4]);
        match e {
            0 => _mm512_shuffle_f32x4::<0x88>(a, b),
            _ => _mm512_shuffle_f32x4::<0xdd>(a, b),
        }
    });
    for j in 0..n.min(16) {
        let (a, b) = (t[j % 8], t[j % 8 + 8]);
        let column = match j / 8 {
            0 => _mm512_shuffle_f32x4::<0x88>(a, b),
            _ => _mm512_shuffle_f32x4::<0xdd>(a, b),
        };
        // SAFETY: as the function's contract.
        unsafe { _mm512_storeu_ps(d.add(at[j]), column) };
    }
}

/// `out[j * CO + l] (+)= sum_t sum_c w[(t * width + c) * CO + l] *
/// src[bases[j] + offsets[t] * width + c]` over the taps `t` and the
/// channels `c < width` of a block, for the [`P`] outputs `j` and the
/// [`CO`] output channels `l`: one register tile, the taps in order and
/// each tap's channels in order, continuing from what `out` holds when
/// `more`.
///
/// # Safety
/// The CPU has AVX-512F; `src` holds `bases[j] + offsets[t] * width +
/// width` values for every `j` and `t`; `w` holds `offsets.len() * width *
/// CO`, `out` `P * CO`.
#[target_feature(enable = "avx512f")]
unsafe fn tile_forward(
    src: &[f32],
    width: usize,
    bases: [usize; P],
    offsets: &[usize],
    w: &[f32],
    more: bool,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    debug_assert!(w.len() >= offsets.len() * width * CO && out.len() >= P * CO);
    let o = out.as_mut_ptr();
    let mut acc = [[_mm512_setzero_ps(); NV]; P];
    if more {
        for (j, acc) in acc.iter_mut().enumerate() {
            for (v, a) in acc.iter_mut().enumerate() {
                // SAFETY: as the function's contract.
                *a = unsafe { _mm512_loadu_ps(o.add(j * CO + v * 16)) };
            }
        }
    }
    let s = src.as_ptr();
    let mut wp = w.as_ptr();
    for &off in offsets {
        debug_assert!(bases.iter().all(|&b| b + (off + 1) * width <= src.len()));
        let rows: [*const f32; P] = std::array::from_fn(|j| s.wrapping_add(bases[j] + off * width));
        for c in 0..width {
            // SAFETY: as the function's contract.
            unsafe {
                let wv: [__m512; NV] = std::array::from_fn(|v| _mm512_loadu_ps(wp.add(v * 16)));
                for (acc, row) in acc.iter_mut().zip(&rows) {
                    let x = _mm512_set1_ps(*row.add(c));
                    for (a, &wv) in acc.iter_mut().zip(&wv) {
                        *a = _mm512_fmadd_ps(x, wv, *a);
                    }
                }
                wp = wp.add(CO);
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        for (v, &a) in acc.iter().enumerate() {
            // SAFETY: as the function's contract.
            unsafe { _mm512_storeu_ps(o.add(j * CO + v * 16), a) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::dense::tests::{definition, operands};
    use crate::kernels::conv::tests::{check, rect};

    /// 3x3 planes of 14x14 (the pitched kernel keeps 87.5%), 8x8 and 7x7
    /// take this kernel, 28x28 (93%) and 6x6 (too small) not; a 17x17 plane
    /// under a 1x7 filter (74%) does, under 7x1 (95%) not.
    #[test]
    fn planes_the_pitched_kernel_would_pad_take_the_channel_vectorised_kernel() {
        for (k, pad, side, takes) in [
            ([3, 3], [1, 1], 28, false),
            ([3, 3], [1, 1], 14, true),
            ([3, 3], [1, 1], 8, true),
            ([3, 3], [1, 1], 7, true),
            ([3, 3], [1, 1], 6, false),
            ([1, 7], [0, 3], 17, true),
            ([7, 1], [3, 0], 17, false),
        ] {
            let d = rect(k, 1, pad, [side, side]);
            assert_eq!(suits(&d), takes, "{k:?} on {side}x{side}");
        }
    }

    #[test]
    fn matches_the_definition_and_its_bits_do_not_depend_on_threads() {
        if !super::super::direct::available() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        // 3x3 at stride 1 and 2, 1x1, 5x5, Inception's rectangles; output
        // channels below, at and past a tile's 64 (a block of zeros); 70
        // and 130 input channels in two and three blocks; planes of one
        // output, of a part tile (7x7: 49 outputs) and of several tasks;
        // a 7x7 filter's 49 flipped taps a row of four squares
        for (k, stride, pad, input, cin, cout) in [
            ([3, 3], 1, [1, 1], [7, 7], 3, 5),
            ([3, 3], 1, [1, 1], [6, 5], 70, 64),
            ([3, 3], 1, [1, 1], [12, 11], 20, 70),
            ([3, 3], 1, [0, 0], [3, 3], 1, 2),
            ([3, 3], 2, [1, 1], [9, 8], 24, 17),
            ([3, 3], 1, [1, 1], [1, 1], 20, 7),
            ([1, 1], 1, [0, 0], [4, 5], 19, 6),
            ([5, 5], 1, [2, 1], [10, 9], 2, 12),
            ([1, 7], 1, [0, 3], [17, 17], 9, 130),
            ([7, 1], 1, [3, 0], [10, 9], 130, 5),
            ([1, 3], 1, [0, 1], [8, 8], 17, 9),
            ([3, 1], 2, [1, 0], [9, 8], 3, 4),
            ([7, 7], 1, [3, 2], [9, 8], 5, 20),
        ] {
            let d = rect(k, stride, pad, input);
            let batch = 3;
            let shape = [batch, cin, cout];
            let (x, w, g) = operands(&d, batch, cin, cout);
            let [y, dx, _] = definition(&x, &w, &g, shape, &d);
            // the input gradient where the forward's transpose is a
            // convolution (stride 1)
            let t = super::super::direct::transposed(&d);
            let run = || {
                let dx = t.map_or(Vec::new(), |t| input_grad(&g, &w, shape, &t));
                [forward(&x, &w, shape, &d), dx, Vec::new()]
            };
            let dx = if t.is_some() { dx } else { Vec::new() };
            check(run, Some([y, dx, Vec::new()]));
        }
    }
}
