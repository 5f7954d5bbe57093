//! Dense convolutions vectorised over output channels, for the planes the
//! pitched kernel would pad most, on CPUs with AVX-512.
//!
//! [`super::direct`] vectorises over a plane's outputs at the phases'
//! pitch, so its tiles compute the padding columns too and throw them
//! away: a 14x14 plane under a 3x3 filter computes 224 values for the 196
//! it keeps, a 17x17 one under Inception's 1x7 filter 391 for 289. Here a
//! register tile is [`NV`] vectors of 16 output channels x [`P`] outputs:
//! for each filter tap and input channel it loads the [`NV`] vectors of
//! weights once and broadcasts each output's input value, 24 multiply-adds
//! per 10 loads. The [`P`] outputs are any outputs of the plane (each read
//! from its own base), so no padding column is computed. This is how
//! oneDNN's blocked kernels run, kept on the NCHW tensors the rest of the
//! model uses: the padded input is transposed to `[position, channel]` in
//! blocks of [`CI_BLOCK`] channels once per call, and each task's sums are
//! written back to the output planes when its channels are done.
//!
//! The sums of an output run over blocks of [`CI_BLOCK`] input channels,
//! then taps, then the block's channels, in an order fixed by the shapes,
//! so the bits do not depend on the threads. gemm has no kernel that reads
//! its operand at per-tap offsets of one buffer, and building the columns
//! for it is the copy these kernels avoid; hence a kernel of our own.

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
/// Tiles a task aims for (an item's plane in equal spans of about this).
const TILES_PER_TASK: usize = 16;
/// Outputs per plane from which this kernel runs (12x12 and up): on
/// smaller planes (Inception's 8x8, ResNet's 7x7) the per-call transposes
/// and a tile's few outputs per filter load cost more than the padding
/// the pitched kernel or the columns compute.
const MIN_PLANE: usize = 12 * 12;
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

/// The dense convolution of `x` (`[batch, cin, h, w]`) with `w` (`[cout,
/// cin, kh, kw]`), no bias: `shape` is `[batch, cin, cout]`. Call only
/// where [`super::direct::available`].
pub fn forward(x: &[f32], w: &[f32], shape: [usize; 3], d: &Window) -> Vec<f32> {
    let [batch, cin, cout] = shape;
    check_operands(x, w, shape, d);
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
    // filters packed [cout / CO][channel block][tap][channel][CO], zero
    // past the last output channel: a block's filters one contiguous run,
    // written in order
    let blocks = cout.div_ceil(CO);
    let mut packed = simd::uninit(blocks * taps * cin * CO);
    packed
        .par_chunks_mut(taps * cin * CO)
        .enumerate()
        .for_each(|(b, packed)| {
            let mut at = 0;
            for c0 in (0..cin).step_by(CI_BLOCK) {
                for t in 0..taps {
                    for ci in c0..(c0 + CI_BLOCK).min(cin) {
                        for (c, v) in packed[at..at + CO].iter_mut().enumerate() {
                            let o = b * CO + c;
                            *v = if o < cout {
                                w[(o * cin + ci) * taps + t]
                            } else {
                                0.0
                            };
                        }
                        at += CO;
                    }
                }
            }
        });
    // each output's position in the padded planes (the last tile's spare
    // outputs repeat the plane's last one)
    let tiles = op.div_ceil(P);
    let position = |i: usize| {
        let i = i.min(op - 1);
        (i / ow) * ph.pitch + i % ow
    };
    let spans = tiles.div_ceil(TILES_PER_TASK);
    let per = tiles.div_ceil(spans);
    let dst = Out(out.as_mut_ptr());
    (0..batch * spans)
        .into_par_iter()
        .for_each_init(Vec::new, |sums: &mut Vec<f32>, task| {
            let (n, first) = (task / spans, task % spans * per);
            let mine = first..(first + per).min(tiles);
            // the task's sums: [tile][block][P][CO]
            sums.resize(mine.len() * blocks * P * CO, 0.0);
            for c0 in (0..cin).step_by(CI_BLOCK) {
                let width = CI_BLOCK.min(cin - c0);
                let src = &xt[(n * cin + c0) * len..][..width * len];
                for b in 0..blocks {
                    let wb = &packed[(b * cin + c0) * taps * CO..][..taps * width * CO];
                    for (t, (&off, wt)) in
                        offsets.iter().zip(wb.chunks_exact(width * CO)).enumerate()
                    {
                        for (i, tile) in mine.clone().enumerate() {
                            let bases =
                                std::array::from_fn(|j| (position(tile * P + j) + off) * width);
                            let out = &mut sums[(i * blocks + b) * P * CO..][..P * CO];
                            // SAFETY: the CPU has AVX-512 (the caller checked
                            // `available`); every output's position plus a
                            // tap's offset lies in the item's planes
                            // (`Phases::len`), so `bases[j] + c` in `src` for
                            // every channel `c < width`; `wt` holds `width *
                            // CO` values.
                            let more = c0 > 0 || t > 0;
                            unsafe { tile_forward(src, width, bases, wt, more, out) };
                        }
                    }
                }
            }
            // the sums into the output planes
            for (i, tile) in mine.enumerate() {
                for j in 0..P.min(op - tile * P) {
                    let q = tile * P + j;
                    for o in 0..cout {
                        let v = sums[((i * blocks + o / CO) * P + j) * CO + o % CO];
                        // SAFETY: this task alone writes its tiles' outputs
                        // of item n's planes; the index lies inside `out`.
                        unsafe { *dst.at((n * cout + o) * op + q) = v };
                    }
                }
            }
        });
    out
}

/// `out[j * CO + l] (+)= sum_c w[c * CO + l] * src[bases[j] + c]` over
/// the channels `c < width` of a block, for the [`P`] outputs `j` and the
/// [`CO`] output channels `l`: one register tile under one tap, the
/// channels in order, continuing from what `out` holds when `more`.
///
/// # Safety
/// The CPU has AVX-512F; `src` holds `bases[j] + width` values for every
/// `j`; `w` holds `width * CO`, `out` `P * CO`.
#[target_feature(enable = "avx512f")]
unsafe fn tile_forward(
    src: &[f32],
    width: usize,
    bases: [usize; P],
    w: &[f32],
    more: bool,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    debug_assert!(w.len() >= width * CO && out.len() >= P * CO);
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
    let (s, wp) = (src.as_ptr(), w.as_ptr());
    debug_assert!(bases.iter().all(|&b| b + width <= src.len()));
    let rows: [*const f32; P] = std::array::from_fn(|j| s.wrapping_add(bases[j]));
    for c in 0..width {
        // SAFETY: as the function's contract.
        unsafe {
            let wv: [__m512; NV] =
                std::array::from_fn(|v| _mm512_loadu_ps(wp.add(c * CO + v * 16)));
            for (acc, row) in acc.iter_mut().zip(&rows) {
                let x = _mm512_set1_ps(*row.add(c));
                for (a, &wv) in acc.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(x, wv, *a);
                }
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

    /// 3x3 planes of 14x14 (the pitched kernel keeps 87.5%) take this
    /// kernel, 28x28 (93%), 8x8 and 7x7 (too small) not; a 17x17 plane
    /// under a 1x7 filter (74%) does, under 7x1 (95%) not.
    #[test]
    fn planes_the_pitched_kernel_would_pad_take_the_channel_vectorised_kernel() {
        for (k, pad, side, takes) in [
            ([3, 3], [1, 1], 28, false),
            ([3, 3], [1, 1], 14, true),
            ([3, 3], [1, 1], 8, false),
            ([3, 3], [1, 1], 7, false),
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
        // output, of a part tile (7x7: 49 outputs) and of several tasks
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
        ] {
            let d = rect(k, stride, pad, input);
            let batch = 3;
            let shape = [batch, cin, cout];
            let (x, w, g) = operands(&d, batch, cin, cout);
            let [y, _, _] = definition(&x, &w, &g, shape, &d);
            let run = || [forward(&x, &w, shape, &d), Vec::new(), Vec::new()];
            check(run, Some([y, Vec::new(), Vec::new()]));
        }
    }
}
