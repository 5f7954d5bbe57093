//! Dense convolutions (one group, kh x kw filters, any stride and
//! padding, no dilation) as columns built from [`super::Phases`]: each
//! tap of each channel is one contiguous copy of the padded plane, and one
//! product per batch item (or per band of an item's output rows) does the
//! rest. burn's own convolution runs a product per 512-pixel tile with its
//! column building on one core per tile, and its filter gradient is a
//! generic fallback; here every part runs on every core in an order fixed
//! by the shapes.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::direct;
use super::{Phases, Run, Window, starts};
use crate::kernels::matmul::{self, Strided};
use crate::kernels::simd::{self, add_into};

/// Column values a dense convolution builds at a time (64 MB): as many
/// whole batch items as fit, or one item's output rows in bands that fit
/// (VGG16's second layer takes 29M values per 224 px image, in 2 bands).
const COLUMNS_AT_ONCE: usize = 16 << 20;

/// A dense convolution's geometry: the window, the channels in, and the
/// phase layout its columns are built from.
struct Dense {
    d: Window,
    cin: usize,
    ph: Phases,
    offsets: Vec<usize>,
    runs: Vec<Run>,
}

/// Batch items and output rows whose columns are built at once.
#[derive(Clone, Debug)]
struct Tile {
    items: std::ops::Range<usize>,
    rows: std::ops::Range<usize>,
}

impl Dense {
    fn new(d: &Window, cin: usize) -> Self {
        let ph = Phases::of(d);
        Self {
            d: *d,
            cin,
            offsets: ph.offsets(d.k),
            runs: ph.runs(d),
            ph,
        }
    }

    /// Values per output plane at the phases' pitch.
    fn pitched_len(&self) -> usize {
        self.d.output[0] * self.ph.pitch
    }

    /// Rows of an item's column matrix: one per input channel and tap.
    fn depth(&self) -> usize {
        self.cin * self.offsets.len()
    }

    /// The batch in tiles whose columns fit `budget` values, in order:
    /// groups of whole items, or an item's rows in bands.
    fn tiles(&self, batch: usize, budget: usize) -> Vec<Tile> {
        let oh = self.d.output[0];
        let per_row = (self.depth() * self.ph.pitch).max(1);
        if per_row * oh <= budget {
            let per = (budget / (per_row * oh).max(1)).max(1);
            return (0..batch)
                .step_by(per)
                .map(|n| Tile {
                    items: n..(n + per).min(batch),
                    rows: 0..oh,
                })
                .collect();
        }
        let band = (budget / per_row).max(1);
        (0..batch)
            .flat_map(|n| {
                (0..oh).step_by(band).map(move |r| Tile {
                    items: n..n + 1,
                    rows: r..(r + band).min(oh),
                })
            })
            .collect()
    }

    /// Values per row of a tile's column matrices (its output rows at the
    /// phases' pitch).
    fn width(&self, tile: &Tile) -> usize {
        tile.rows.len() * self.ph.pitch
    }

    /// The column matrices (`[depth, width]` each) of `tile` of `x`: row
    /// `(c, t)` holds channel `c`'s input under tap `t` of every output.
    fn columns(&self, x: &[f32], tile: &Tile) -> Vec<f32> {
        let (ip, kk, len) = (
            self.d.input[0] * self.d.input[1],
            self.offsets.len(),
            self.width(tile),
        );
        let (first, from) = (tile.items.start * self.cin, tile.rows.start * self.ph.pitch);
        let mut cols = simd::uninit(tile.items.len() * self.depth() * len);
        cols.par_chunks_mut(kk * len)
            .enumerate()
            .for_each_init(Vec::new, |buf, (i, rows)| {
                self.ph.fill(&x[(first + i) * ip..][..ip], &self.runs, buf);
                for (row, &off) in rows.chunks_exact_mut(len).zip(&self.offsets) {
                    row.copy_from_slice(&buf[off + from..][..len]);
                }
            });
        cols
    }
}

/// The dense convolution (one group, no bias) of `x` (`[batch, cin, h, w]`)
/// with `w` (`[cout, cin, kh, kw]`): per tile of items or output rows, the
/// columns of `Phases` (each tap of each channel a contiguous copy of
/// the padded plane) and one product `W [cout, cin k k] x columns` per
/// item, whose rows at the phases' pitch are cut to the output's width.
/// burn's own convolution runs a product per 512-pixel tile, with its own
/// column building on one core per tile; a 3-channel stem there spent
/// more time building columns than multiplying.
///
/// On CPUs with AVX-512, the direct kernel at the phases' pitch
/// ([`direct`]) runs the planes where it keeps most of what it computes,
/// the kernel vectorised over output channels ([`channels`]) those of
/// 7x7 and up where the pitch's padding would cost more; the columns run
/// the rest.
///
/// `shape` is `[batch, cin, cout]`.
pub fn dense_forward(x: &[f32], w: &[f32], shape: [usize; 3], d: &Window) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if direct::available() && direct::takes(d) {
        return direct::forward_suited(x, w, shape, d);
    }
    dense_forward_in(x, w, shape, d, COLUMNS_AT_ONCE)
}

/// Panics unless `x` holds `batch` items of `cin` planes of `d.input`
/// and `w` `cout` filters of `cin` x `kh` x `kw` (`shape` is `[batch, cin,
/// cout]`).
pub(super) fn check_operands(x: &[f32], w: &[f32], [batch, cin, cout]: [usize; 3], d: &Window) {
    assert!(
        x.len() == batch * cin * d.input[0] * d.input[1] && w.len() == cout * cin * d.taps(),
        "conv: {} values for {batch} x {cin} planes of {:?}, {} filter values for {cout} x {cin} x {}x{}",
        x.len(),
        d.input,
        w.len(),
        d.k[0],
        d.k[1]
    );
}

/// [`dense_forward`] in tiles of at most `budget` column values.
fn dense_forward_in(
    x: &[f32],
    w: &[f32],
    shape: [usize; 3],
    d: &Window,
    budget: usize,
) -> Vec<f32> {
    let [batch, cin, cout] = shape;
    let dense = Dense::new(d, cin);
    let [oh, ow] = d.output;
    let (op, depth) = (oh * ow, dense.depth());
    check_operands(x, w, shape, d);
    let mut out = simd::uninit(batch * cout * op);
    if op == 0 {
        return out;
    }
    for tile in dense.tiles(batch, budget) {
        let (cols, len) = (dense.columns(x, &tile), dense.width(&tile));
        let y = matmul::strided_products(
            Strided::new(
                w,
                vec![0; tile.items.len()],
                [cout, depth],
                [depth as isize, 1],
            ),
            Strided::new(
                &cols,
                starts(tile.items.len(), depth * len),
                [depth, len],
                [len as isize, 1],
            ),
        );
        let band = tile.rows.start * ow..tile.rows.end * ow;
        out[tile.items.start * cout * op..tile.items.end * cout * op]
            .par_chunks_mut(op)
            .zip(y.par_chunks(len))
            .for_each(|(o, y)| dense.ph.unpitch(y, ow, &mut o[band.clone()]));
    }
    out
}

/// The dense convolution's gradients from its input `x`, filters `w` and
/// the output's gradient `g`: the input's (when `want_dx`: `W^T g` per
/// tile, each row added onto its channel's padded plane at its tap's
/// offset) and the filters' (when `want_dw`: `sum g columns^T` over the
/// tiles in order, the columns built again). On CPUs with AVX-512 the
/// input's gradient at stride 1 is the forward of `g` by the flipped
/// filters where [`dense_forward`] would not take the columns, and the
/// filters' gradient runs direct where [`direct::filter_grad_suits`].
///
/// `shape` is `[batch, cin, cout]`, `want` `[want_dx, want_dw]`.
pub fn dense_backward(
    x: &[f32],
    w: &[f32],
    g: &[f32],
    shape: [usize; 3],
    d: &Window,
    want: [bool; 2],
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    #[cfg(target_arch = "x86_64")]
    if direct::available() && direct::takes(d) {
        let [want_dx, want_dw] = want;
        let direct_dx = want_dx && direct::transposed(d).is_some();
        let direct_dw = want_dw && direct::filter_grad_suits(d, shape[1]);
        // what the direct kernels leave to the columns, in one call (the
        // pitched gradient built once)
        let (dx, dw) = match [want_dx && !direct_dx, want_dw && !direct_dw] {
            [false, false] => (None, None),
            rest => dense_backward_in([x, w, g], shape, d, rest, COLUMNS_AT_ONCE),
        };
        return (
            dx.or_else(|| direct_dx.then(|| direct::input_grad(g, w, shape, d))),
            dw.or_else(|| direct_dw.then(|| direct::filter_grad(x, g, shape, d))),
        );
    }
    dense_backward_in([x, w, g], shape, d, want, COLUMNS_AT_ONCE)
}

/// [`dense_backward`] in tiles of at most `budget` column values.
fn dense_backward_in(
    [x, w, g]: [&[f32]; 3],
    shape: [usize; 3],
    d: &Window,
    want: [bool; 2],
    budget: usize,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let ([batch, cin, cout], [want_dx, want_dw]) = (shape, want);
    let dense = Dense::new(d, cin);
    let (ip, op) = (d.input[0] * d.input[1], d.output[0] * d.output[1]);
    let (p, depth, kk) = (dense.pitched_len(), dense.depth(), dense.offsets.len());
    assert_eq!(g.len(), batch * cout * op, "conv backward: gradient size");
    if op == 0 {
        return (
            want_dx.then(|| vec![0.0; x.len()]),
            want_dw.then(|| vec![0.0; w.len()]),
        );
    }
    // the gradient at the phases' pitch, zero past each row's outputs
    let mut gp = vec![0f32; batch * cout * p];
    gp.par_chunks_mut(p)
        .zip(g.par_chunks(op))
        .for_each(|(gp, g)| dense.ph.pitch_into(g, d.output[1], gp));
    // a tile's gradient matrices: `[cout, width]` views of `gp`
    let grads = |tile: &Tile| {
        let from = tile.rows.start * dense.ph.pitch;
        Strided::new(
            &gp,
            tile.items
                .clone()
                .map(|n| (n * cout * p + from) as isize)
                .collect(),
            [cout, dense.width(tile)],
            [p as isize, 1],
        )
    };
    let tiles = dense.tiles(batch, budget);
    let dx = want_dx.then(|| {
        let mut dx = simd::uninit(x.len());
        // each (item, channel)'s padded plane, until its last rows are in
        let mut planes: Vec<f32> = Vec::new();
        for tile in &tiles {
            let len = dense.width(tile);
            let dcols = matmul::strided_products(
                Strided::new(
                    w,
                    vec![0; tile.items.len()],
                    [depth, cout],
                    [1, depth as isize],
                ),
                grads(tile),
            );
            if tile.rows.start == 0 {
                planes.clear();
                planes.resize(tile.items.len() * cin * dense.ph.len(), 0.0);
            }
            let from = tile.rows.start * dense.ph.pitch;
            planes
                .par_chunks_mut(dense.ph.len())
                .zip(dcols.par_chunks(kk * len))
                .for_each(|(plane, rows)| {
                    for (row, &off) in rows.chunks_exact(len).zip(&dense.offsets) {
                        add_into(&mut plane[off + from..][..len], row);
                    }
                });
            if tile.rows.end == d.output[0] {
                dx[tile.items.start * cin * ip..tile.items.end * cin * ip]
                    .par_chunks_mut(ip.max(1))
                    .zip(planes.par_chunks(dense.ph.len()))
                    .for_each(|(dx, plane)| dense.ph.unfill(plane, &dense.runs, dx));
            }
        }
        dx
    });
    let dw = want_dw.then(|| {
        let mut dw = vec![0f32; cout * depth];
        for tile in &tiles {
            let (cols, len) = (dense.columns(x, tile), dense.width(tile));
            let part = matmul::accumulated_products(
                grads(tile),
                Strided::new(
                    &cols,
                    starts(tile.items.len(), depth * len),
                    [len, depth],
                    [1, len as isize],
                ),
            );
            add_into(&mut dw, &part);
        }
        dw
    });
    (dx, dw)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::kernels::conv::tests::{check, rect};
    use crate::kernels::testutil::wave;

    /// Seeded input, filters and output gradient of a dense convolution.
    pub(in crate::kernels::conv) fn operands(
        d: &Window,
        batch: usize,
        cin: usize,
        cout: usize,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (ip, op) = (d.input[0] * d.input[1], d.output[0] * d.output[1]);
        (
            wave(batch * cin * ip, 0.37, 1.5, 0.2),
            wave(cout * cin * d.taps(), 0.71, 1.0, -0.1),
            wave(batch * cout * op, 0.23, 1.0, 0.05),
        )
    }

    /// A dense convolution's output and its input and filter gradients from
    /// the definition, in f64.
    pub(in crate::kernels::conv) fn definition(
        x: &[f32],
        w: &[f32],
        g: &[f32],
        [batch, cin, cout]: [usize; 3],
        d: &Window,
    ) -> [Vec<f64>; 3] {
        let (kw, stride, pad, input, output) = (d.k[1], d.stride, d.pad, d.input, d.output);
        let (ip, op, kk) = (input[0] * input[1], output[0] * output[1], d.taps());
        let mut y = vec![0f64; g.len()];
        let mut dx = vec![0f64; x.len()];
        let mut dw = vec![0f64; w.len()];
        for n in 0..batch {
            for o in 0..cout {
                for c in 0..cin {
                    for r in 0..output[0] {
                        for s in 0..output[1] {
                            for t in 0..kk {
                                let (a, b) = (
                                    (r * stride + t / kw) as isize - pad[0] as isize,
                                    (s * stride + t % kw) as isize - pad[1] as isize,
                                );
                                if a < 0
                                    || b < 0
                                    || a >= input[0] as isize
                                    || b >= input[1] as isize
                                {
                                    continue;
                                }
                                let xi = (n * cin + c) * ip + a as usize * input[1] + b as usize;
                                let yi = (n * cout + o) * op + r * output[1] + s;
                                let wi = (o * cin + c) * kk + t;
                                y[yi] += w[wi] as f64 * x[xi] as f64;
                                dx[xi] += w[wi] as f64 * g[yi] as f64;
                                dw[wi] += g[yi] as f64 * x[xi] as f64;
                            }
                        }
                    }
                }
            }
        }
        [y, dx, dw]
    }

    #[test]
    fn dense_matches_the_definition_and_its_bits_do_not_depend_on_threads() {
        // square and rectangular (Inception's 1x7, 7x1, 1x3 and 3x1)
        for (k, stride, pad, input, cin, cout) in [
            ([3, 3], 2, [1, 1], [9, 8], 3, 4),
            ([3, 3], 1, [1, 1], [5, 7], 2, 3),
            ([7, 7], 2, [3, 3], [11, 12], 3, 2),
            ([3, 3], 1, [0, 0], [3, 3], 1, 2),
            ([5, 5], 3, [2, 1], [10, 9], 2, 2),
            ([1, 1], 2, [0, 0], [7, 8], 3, 4),
            ([1, 1], 1, [0, 0], [4, 5], 2, 3),
            ([1, 7], 1, [0, 3], [6, 9], 3, 4),
            ([7, 1], 1, [3, 0], [9, 6], 2, 3),
            ([1, 3], 2, [0, 1], [7, 8], 3, 2),
        ] {
            let d = rect(k, stride, pad, input);
            let output = d.output;
            let batch = 3;
            let (x, w, g) = operands(&d, batch, cin, cout);
            let [y, dx, dw] = definition(&x, &w, &g, [batch, cin, cout], &d);
            // whole batch at once, an item at a time, bands of 2 rows and of 1
            let per_row = cin * d.taps() * Phases::of(&d).pitch;
            for budget in [COLUMNS_AT_ONCE, per_row * output[0], 2 * per_row, 1] {
                let shape = [batch, cin, cout];
                let run = || {
                    let (gx, gw) = dense_backward_in([&x, &w, &g], shape, &d, [true; 2], budget);
                    let y = dense_forward_in(&x, &w, shape, &d, budget);
                    [y, gx.unwrap(), gw.unwrap()]
                };
                check(run, Some([y.clone(), dx.clone(), dw.clone()]));
            }
        }
    }
}
