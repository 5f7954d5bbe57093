//! Matrix products and the linear layer on the CPU, with outputs written
//! once.
//!
//! burn-flex computes products with the same `gemm` crate, but allocates
//! each output through `FlexTensor::empty`: a zeroed `Vec<u8>` that
//! `Bytes::from_bytes_vec` then copies into a 16-byte aligned buffer, on the
//! calling thread. In a BERT training step that zeroing and copy were ~10%
//! of all CPU time, serial, while the other core waited. Here the output is
//! a `Vec<f32>` that gemm writes once; the linear layer's bias is written
//! into it first and gemm adds the product to it (no separate, serial
//! broadcast add), and the bias gradient is summed over fixed blocks of rows
//! on every core (the same bits on any thread count). Transposed and
//! strided operands (attention heads, `W^T` in the backward) are read in
//! place through their strides, as burn-flex does.
//!
//! Two shapes of product are taken: equal batch dimensions, and a right
//! operand whose batch dimensions are all 1 (its single matrix applied to
//! every row of the left operand). Other broadcasts go to burn's product.

use burn::backend::DType;
use burn::backend::flex::{FlexTensor, Layout};
use burn::tensor::{Bytes, Shape};
use rayon::prelude::*;

/// Products of at least this many multiply-adds split one matrix over the
/// threads (burn-flex's threshold).
const PARALLEL: usize = 192 * 192 * 192;
/// Batches of small products with at least this many multiply-adds in all
/// run one matrix per task.
const BATCH_PARALLEL: usize = 128 * 128 * 128;
/// Products of 2 to this many rows and at least `SKINNY_WORK`
/// multiply-adds split their columns over the threads (gemm keeps them on
/// one). Generating a batch of 4 with SmolLM2 this ran 1.38x faster; a
/// single row (batch 1) ran 4-8% slower split, even for the [576, 1536]
/// products alone, so one row stays on one thread.
const SKINNY_ROWS: usize = 16;
const SKINNY_WORK: usize = 1 << 16;
/// Rows per panel, at least, when a product of more than [`SKINNY_ROWS`]
/// rows below [`PARALLEL`] splits its rows over the threads: LoRA's
/// rank-8 products (`[512, 576] · [576, 8]`, `[512, 8] · [8, 576]`, ...),
/// which gemm keeps on the calling thread while the other core waits.
const PANEL_ROWS: usize = 32;
/// Rows per partial sum of the bias gradient.
const ROWS: usize = 64;

/// One matrix inside a buffer: its shape and strides in elements.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Mat {
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
}

impl Mat {
    fn t(self) -> Mat {
        Mat {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// A batch of matrices of one shape in one buffer: where each starts.
struct Batch<'a> {
    data: &'a [f32],
    starts: Vec<isize>,
    mat: Mat,
}

impl Batch<'_> {
    fn t(self) -> Self {
        Batch {
            mat: self.mat.t(),
            ..self
        }
    }
}

/// `t` (rank >= 2) as a batch of its last two dimensions.
fn batch(t: &FlexTensor) -> Batch<'_> {
    let layout = t.layout();
    let (shape, strides) = (layout.shape(), layout.strides());
    let r = shape.num_dims();
    let mut starts = vec![layout.start_offset() as isize];
    for d in 0..r - 2 {
        starts = starts
            .iter()
            .flat_map(|&s| (0..shape[d]).map(move |i| s + i as isize * strides[d]))
            .collect();
    }
    Batch {
        data: t.storage::<f32>(),
        starts,
        mat: Mat {
            rows: shape[r - 2],
            cols: shape[r - 1],
            rs: strides[r - 2],
            cs: strides[r - 1],
        },
    }
}

/// `t` (rank >= 2) as one matrix: every dimension but the last folded into
/// the rows, or `None` when its strides do not allow that without a copy.
fn folded(t: &FlexTensor) -> Option<Batch<'_>> {
    let layout = t.layout();
    let (shape, strides) = (layout.shape(), layout.strides());
    let r = shape.num_dims();
    // the row dimensions, those of size 1 left out (their stride is free)
    let dims: Vec<usize> = (0..r - 1).filter(|&d| shape[d] != 1).collect();
    for pair in dims.windows(2) {
        if strides[pair[0]] != strides[pair[1]] * shape[pair[1]] as isize {
            return None;
        }
    }
    let rows: usize = (0..r - 1).map(|d| shape[d]).product();
    Some(Batch {
        data: t.storage::<f32>(),
        starts: vec![layout.start_offset() as isize],
        mat: Mat {
            rows,
            cols: shape[r - 1],
            rs: dims.last().map_or(shape[r - 1] as isize, |&d| strides[d]),
            cs: strides[r - 1],
        },
    })
}

/// `t` contiguous when [`folded`] cannot read it as it is.
pub fn foldable(t: FlexTensor) -> FlexTensor {
    if folded(&t).is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

/// Whether `b`'s batch dimensions are all 1 (one matrix for every row of the
/// left operand).
fn single(b: &FlexTensor) -> bool {
    let shape = b.layout().shape();
    (0..shape.num_dims() - 2).all(|d| shape[d] == 1)
}

/// A raw output pointer shared by the tasks of one product, each writing its
/// own matrices.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every task writes a disjoint range of the output (one matrix each).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// Where the output matrices go: matrix `i` starts at `start(i)`, its rows
/// `rs` apart, its columns adjacent.
#[derive(Clone, Copy)]
enum Place {
    /// `[count, m, n]`, contiguous.
    Stacked,
    /// `[batch, m, heads, n]` for matrix `i = batch_index * heads + head`:
    /// attention's heads merged back into the hidden dimension.
    Merged { heads: usize },
}

impl Place {
    fn start(self, i: usize, m: usize, n: usize) -> usize {
        match self {
            Place::Stacked => i * m * n,
            Place::Merged { heads } => (i / heads) * m * heads * n + (i % heads) * n,
        }
    }

    fn row_stride(self, n: usize) -> usize {
        match self {
            Place::Stacked => n,
            Place::Merged { heads } => heads * n,
        }
    }
}

/// `out[i] = a[i] · b[i]` (plus what `out[i]` holds when `accumulate`) for
/// each matrix `i` of the batches, placed in `out` as `place` says.
///
/// # Safety
/// `out` is valid for `count * m * n` writes (and reads when `accumulate`);
/// the batches' starts and strides stay inside their buffers.
unsafe fn products(out: *mut f32, a: &Batch, b: &Batch, accumulate: bool, place: Place) {
    let (m, k, n) = (a.mat.rows, a.mat.cols, b.mat.cols);
    assert_eq!(k, b.mat.rows, "matmul: inner dimensions differ");
    assert_eq!(a.starts.len(), b.starts.len(), "matmul: batch sizes differ");
    let count = a.starts.len();
    let per = m * n * k;
    let out = Out(out);
    // matrix i's rows i0..i0 + ni and columns j0..j0 + nj
    let block = move |i: usize, [i0, ni]: [usize; 2], [j0, nj]: [usize; 2], parallelism| {
        let out = out;
        // SAFETY: as the function's contract; matrix i of `out` (and a
        // row or column panel of it) is this call's alone.
        unsafe {
            gemm::gemm(
                ni,
                nj,
                k,
                out.0
                    .add(place.start(i, m, n) + i0 * place.row_stride(n) + j0),
                1,
                place.row_stride(n) as isize,
                accumulate,
                a.data.as_ptr().offset(a.starts[i] + i0 as isize * a.mat.rs),
                a.mat.cs,
                a.mat.rs,
                b.data.as_ptr().offset(b.starts[i] + j0 as isize * b.mat.cs),
                b.mat.cs,
                b.mat.rs,
                1.0f32,
                1.0f32,
                false,
                false,
                false,
                parallelism,
            )
        }
    };
    let part = move |i: usize, j0: usize, nj: usize, parallelism: gemm::Parallelism| {
        block(i, [0, m], [j0, nj], parallelism)
    };
    let one = move |i: usize, parallelism: gemm::Parallelism| part(i, 0, n, parallelism);
    let threads = rayon::current_num_threads();
    let batch_parallel = count >= 4 && count * per >= BATCH_PARALLEL;
    let skinny = (2..=SKINNY_ROWS).contains(&m) && (SKINNY_WORK..PARALLEL).contains(&per);
    if count == 1 && skinny && threads > 1 {
        // a few rows (a token's forward in batched generation): one column
        // panel per thread
        let panel = n.div_ceil(threads).next_multiple_of(16);
        (0..n.div_ceil(panel)).into_par_iter().for_each(|p| {
            let j0 = p * panel;
            part(0, j0, panel.min(n - j0), gemm::Parallelism::None)
        });
    } else if count == 1
        && m >= 2 * PANEL_ROWS
        && (SKINNY_WORK..PARALLEL).contains(&per)
        && threads > 1
    {
        // more rows, still too little work for gemm's own threads: one
        // panel of whole rows per thread (each output value computed as
        // unsplit, over the same k in the same order)
        let panel = m.div_ceil(threads).next_multiple_of(8).max(PANEL_ROWS);
        (0..m.div_ceil(panel)).into_par_iter().for_each(|p| {
            let i0 = p * panel;
            block(0, [i0, panel.min(m - i0)], [0, n], gemm::Parallelism::None)
        });
    } else if per >= PARALLEL && !batch_parallel {
        (0..count).for_each(|i| one(i, gemm::Parallelism::Rayon(0)));
    } else if batch_parallel || (count > 1 && count * per >= BATCH_PARALLEL) {
        (0..count)
            .into_par_iter()
            .for_each(|i| one(i, gemm::Parallelism::None));
    } else {
        (0..count).for_each(|i| one(i, gemm::Parallelism::None));
    }
}

/// Matrices read in place from a buffer: one at each of `starts`, each
/// `shape` (`[rows, cols]`) with `strides` (`[row, col]`, in elements).
pub(super) struct Strided<'a> {
    data: &'a [f32],
    starts: Vec<isize>,
    shape: [usize; 2],
    strides: [isize; 2],
}

impl<'a> Strided<'a> {
    pub(super) fn new(
        data: &'a [f32],
        starts: Vec<isize>,
        shape: [usize; 2],
        strides: [isize; 2],
    ) -> Self {
        Self {
            data,
            starts,
            shape,
            strides,
        }
    }

    /// As a batch, checked to lie inside its buffer.
    fn batch(self) -> Batch<'a> {
        let (shape, strides) = (self.shape, self.strides);
        let mat = Mat {
            rows: shape[0],
            cols: shape[1],
            rs: strides[0],
            cs: strides[1],
        };
        if mat.rows > 0 && mat.cols > 0 {
            for &s in &self.starts {
                let last = s + (mat.rows as isize - 1) * mat.rs + (mat.cols as isize - 1) * mat.cs;
                assert!(
                    s >= 0 && mat.rs >= 0 && mat.cs >= 0 && (last as usize) < self.data.len(),
                    "matmul: a {shape:?} matrix at {s} with strides {strides:?} outside {} values",
                    self.data.len()
                );
            }
        }
        Batch {
            data: self.data,
            starts: self.starts,
            mat,
        }
    }
}

/// The products `a_i · b_i` of matrices read in place, stacked `[count,
/// m, n]` in a fresh buffer: the batched products of the pointwise
/// convolution ([`super::conv`]), whose left operand is one weight matrix
/// for every item.
pub(super) fn strided_products(a: Strided, b: Strided) -> Vec<f32> {
    product_vec(&a.batch(), &b.batch(), None)
}

/// `sum_i a_i · b_i` as one `[m, n]` matrix, the products accumulated in
/// order.
pub(super) fn accumulated_products(a: Strided, b: Strided) -> Vec<f32> {
    let (a, b) = (a.batch(), b.batch());
    let (m, k, n) = (a.mat.rows, a.mat.cols, b.mat.cols);
    assert_eq!(k, b.mat.rows, "matmul: inner dimensions differ");
    assert_eq!(a.starts.len(), b.starts.len(), "matmul: batch sizes differ");
    let mut out = vec![0f32; m * n];
    if k == 0 || m * n == 0 {
        return out;
    }
    for (i, (&sa, &sb)) in a.starts.iter().zip(&b.starts).enumerate() {
        fn one<'a>(t: &Batch<'a>, start: isize) -> Batch<'a> {
            Batch {
                data: t.data,
                starts: vec![start],
                mat: t.mat,
            }
        }
        // SAFETY: `out` holds the one m x n product; both matrices were
        // checked to lie inside their buffers.
        unsafe {
            products(
                out.as_mut_ptr(),
                &one(&a, sa),
                &one(&b, sb),
                i > 0,
                Place::Stacked,
            )
        };
    }
    out
}

/// The products of two batches as a fresh buffer (`bias`, repeated over
/// the rows, added when given).
fn product_vec(a: &Batch, b: &Batch, bias: Option<&[f32]>) -> Vec<f32> {
    product_placed(a, b, bias, Place::Stacked)
}

fn product_placed(a: &Batch, b: &Batch, bias: Option<&[f32]>, place: Place) -> Vec<f32> {
    let (m, k, n) = (a.mat.rows, a.mat.cols, b.mat.cols);
    let len = a.starts.len() * m * n;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    if let Some(bias) = bias {
        assert_eq!(
            bias.len(),
            n,
            "linear: bias of {} for {n} outputs",
            bias.len()
        );
        if n > 0 {
            out.spare_capacity_mut()[..len]
                .par_chunks_mut(n * ROWS)
                .for_each(|rows| {
                    for row in rows.chunks_mut(n) {
                        for (o, &v) in row.iter_mut().zip(bias) {
                            o.write(v);
                        }
                    }
                });
        }
    } else if k == 0 {
        out.resize(len, 0.0);
        return out;
    }
    if len > 0 && k > 0 {
        // SAFETY: `out` has capacity `len`; gemm writes all of it, reading
        // it only where the bias was written first.
        unsafe { products(out.as_mut_ptr(), a, b, bias.is_some(), place) };
    }
    // SAFETY: every one of the `len` values was written above (by the bias,
    // by gemm, or both).
    unsafe { out.set_len(len) };
    out
}

pub(super) fn tensor(values: Vec<f32>, dims: Vec<usize>) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(Shape::from(dims)),
        DType::F32,
    )
}

fn dims(t: &FlexTensor) -> Vec<usize> {
    t.layout().shape().iter().copied().collect()
}

fn check_f32(ts: &[&FlexTensor]) {
    for t in ts {
        assert_eq!(t.dtype(), DType::F32, "CPU kernels take f32 tensors");
    }
}

/// Whether [`product`] takes `a · b` of these shapes (equal batch
/// dimensions, or a single right matrix) rather than burn's product.
pub fn takes(a: &[usize], b: &[usize]) -> bool {
    let r = a.len();
    r >= 2
        && b.len() == r
        && a[r - 1] == b[r - 2]
        && (a[..r - 2] == b[..r - 2] || b[..r - 2].iter().all(|&d| d == 1))
}

/// Prepared operands: the right one with batch dimensions all 1 makes the
/// left one a single matrix of all its rows.
pub fn operands(a: FlexTensor, b: FlexTensor) -> (FlexTensor, FlexTensor) {
    check_f32(&[&a, &b]);
    assert!(
        takes(&dims(&a), &dims(&b)),
        "matmul: shapes {:?} and {:?}",
        dims(&a),
        dims(&b)
    );
    if single(&b) { (foldable(a), b) } else { (a, b) }
}

/// `a · b` over the last two dimensions (shapes as [`takes`]).
pub fn product(a: FlexTensor, b: FlexTensor) -> FlexTensor {
    let (a, b) = operands(a, b);
    product_of_operands(a, b)
}

/// [`product`] of operands [`operands`] has already prepared.
pub fn product_of_operands(a: FlexTensor, b: FlexTensor) -> FlexTensor {
    let mut out_dims = dims(&a);
    let r = out_dims.len();
    out_dims[r - 1] = b.layout().shape()[r - 1];
    let values = if single(&b) {
        product_vec(
            &folded(&a).expect("foldable"),
            &folded(&b).expect("one matrix"),
            None,
        )
    } else {
        product_vec(&batch(&a), &batch(&b), None)
    };
    tensor(values, out_dims)
}

/// The gradients of [`product`]'s operands from the output's gradient `g`:
/// `(g · b^T, a^T · g)`, each only when asked for.
pub fn product_backward(
    a: &FlexTensor,
    b: &FlexTensor,
    g: &FlexTensor,
    want_a: bool,
    want_b: bool,
) -> (Option<FlexTensor>, Option<FlexTensor>) {
    if single(b) {
        let (fa, fb) = (folded(a).expect("foldable"), folded(b).expect("one matrix"));
        let fg = folded(g).expect("a contiguous gradient");
        let da = want_a.then(|| tensor(product_vec(&fg, &fb.t(), None), dims(a)));
        let db = want_b.then(|| {
            let fg = folded(g).expect("a contiguous gradient");
            tensor(product_vec(&fa.t(), &fg, None), dims(b))
        });
        (da, db)
    } else {
        let da = want_a.then(|| tensor(product_vec(&batch(g), &batch(b).t(), None), dims(a)));
        let db = want_b.then(|| tensor(product_vec(&batch(a).t(), &batch(g), None), dims(b)));
        (da, db)
    }
}

/// Whether [`product_merged`] takes `a · b` of these shapes: rank 4 with
/// equal batch and head dimensions.
pub fn takes_merged(a: &[usize], b: &[usize]) -> bool {
    a.len() == 4 && takes(a, b) && a[..2] == b[..2]
}

/// Attention's context with the heads merged: `a · b` of `[batch, heads,
/// m, k]` and `[batch, heads, k, n]` written as `[batch, m, heads * n]`,
/// each head's product straight into its columns (no transposed copy).
pub fn product_merged(a: FlexTensor, b: FlexTensor) -> FlexTensor {
    check_f32(&[&a, &b]);
    let (da, db) = (dims(&a), dims(&b));
    assert!(takes_merged(&da, &db), "matmul: shapes {da:?} and {db:?}");
    let heads = da[1];
    let values = product_placed(&batch(&a), &batch(&b), None, Place::Merged { heads });
    tensor(values, vec![da[0], da[2], heads * db[3]])
}

/// The gradients of [`product_merged`]'s operands from the output's
/// gradient `g` (`[batch, m, heads * n]`, contiguous), read per head in
/// place.
pub fn product_merged_backward(
    a: &FlexTensor,
    b: &FlexTensor,
    g: FlexTensor,
    want_a: bool,
    want_b: bool,
) -> (Option<FlexTensor>, Option<FlexTensor>) {
    let (da, db) = (dims(a), dims(b));
    let (batch_size, heads, m, n) = (da[0], da[1], da[2], db[3]);
    let strides = vec![
        (m * heads * n) as isize,
        n as isize,
        (heads * n) as isize,
        1,
    ];
    let g = g.with_layout(Layout::new(
        Shape::from(vec![batch_size, heads, m, n]),
        strides,
        0,
    ));
    product_backward(a, b, &g, want_a, want_b)
}

/// burn's linear layer run through [`super::linear`]: `Linear::forward`
/// goes to burn-flex's product, whose backward allocates the weight's
/// gradient zeroed and copies it to realign it on one core (411 MB a step
/// for VGG16's fc6, a fifth of its `full` step spent faulting pages in).
pub trait LinearExt {
    /// `x · weight + bias` over `x`'s last dimension.
    fn apply<const D: usize>(&self, x: burn::tensor::Tensor<D>) -> burn::tensor::Tensor<D>;
}

impl LinearExt for burn::nn::Linear {
    fn apply<const D: usize>(&self, x: burn::tensor::Tensor<D>) -> burn::tensor::Tensor<D> {
        super::linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()))
    }
}

/// `x · w + bias` over `x`'s last dimension: `w` is `[in, out]`, `bias`
/// `[out]`.
pub fn linear(x: FlexTensor, w: &FlexTensor, bias: &FlexTensor) -> FlexTensor {
    check_f32(&[&x, w, bias]);
    let x = foldable(x);
    let mut out_dims = dims(&x);
    let r = out_dims.len();
    out_dims[r - 1] = w.layout().shape()[1];
    let bias = super::activation::contiguous(bias.clone());
    let n = bias.layout().num_elements();
    let values = product_vec(
        &folded(&x).expect("foldable"),
        &batch(w),
        Some(&bias.storage::<f32>()[..n]),
    );
    tensor(values, out_dims)
}

/// The sums of the columns of `g` (`[rows, n]` contiguous), per fixed
/// block of rows and the blocks in order.
pub fn column_sums(g: &[f32], n: usize) -> Vec<f32> {
    if n == 0 {
        return Vec::new();
    }
    let partials: Vec<Vec<f32>> = g
        .par_chunks(n * ROWS)
        .map(|rows| {
            let mut acc = vec![0f32; n];
            for row in rows.chunks_exact(n) {
                super::simd::add_into(&mut acc, row);
            }
            acc
        })
        .collect();
    super::simd::sum_in_order(&partials, n)
}

/// The gradients of [`linear`]'s `x`, `w` and `bias` from the output's
/// gradient `g` (contiguous), each only when asked for.
pub fn linear_backward(
    x: &FlexTensor,
    w: &FlexTensor,
    g: &FlexTensor,
    want: [bool; 3],
) -> [Option<FlexTensor>; 3] {
    let fg = folded(g).expect("a contiguous gradient");
    let dx = want[0].then(|| tensor(product_vec(&fg, &batch(w).t(), None), dims(x)));
    let dw = want[1].then(|| {
        let fx = folded(x).expect("foldable");
        tensor(product_vec(&fx.t(), &fg, None), dims(w))
    });
    let db = want[2].then(|| {
        let n = fg.mat.cols;
        let count = g.layout().num_elements();
        tensor(column_sums(&g.storage::<f32>()[..count], n), vec![n])
    });
    [dx, dw, db]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{on_threads, wave};

    fn flex(values: Vec<f32>, dims: &[usize]) -> FlexTensor {
        tensor(values, dims.to_vec())
    }

    fn values(t: &FlexTensor) -> Vec<f32> {
        let t = t.to_contiguous();
        let n = t.layout().num_elements();
        t.storage::<f32>()[..n].to_vec()
    }

    /// `a · b` of row-major `[m, k]` and `[k, n]` in f64.
    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|l| a[i * k + l] as f64 * b[l * n + j] as f64)
                    .sum();
            }
        }
        out
    }

    /// The transpose of row-major rows of `cols` values.
    fn transpose(m: &[f32], cols: usize) -> Vec<f32> {
        (0..cols)
            .flat_map(|c| m.iter().skip(c).step_by(cols).copied())
            .collect()
    }

    fn assert_close(got: &[f32], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (*g as f64 - w).abs() <= tol * (1.0 + w.abs()),
                "value {i}: {g} against {w}"
            );
        }
    }

    #[test]
    fn takes_equal_batches_and_a_single_right_matrix_only() {
        assert!(takes(&[4, 5], &[5, 3]));
        assert!(takes(&[2, 3, 4, 5], &[2, 3, 5, 6]));
        assert!(takes(&[2, 3, 4, 5], &[1, 1, 5, 6]));
        assert!(!takes(&[2, 3, 4, 5], &[2, 1, 5, 6]), "a partial broadcast");
        assert!(!takes(&[4, 5], &[4, 3]), "inner dimensions differ");
        assert!(!takes(&[5], &[5]), "rank 1");
    }

    #[test]
    fn batched_products_of_transposed_views_match_a_reference() {
        // a [2, 3, 5, 4] read as [2, 3, 4, 5] through swapped strides, like
        // an attention head's keys
        let (bt, h, m, k, n) = (2, 3, 4, 5, 6);
        let a_stored = wave(bt * h * k * m, 0.37, 1.0, 0.1);
        let b_vals = wave(bt * h * k * n, 0.91, 0.5, -0.2);
        let a = flex(a_stored.clone(), &[bt, h, k, m]);
        let a_t = FlexTensor::new(
            Bytes::from_elems(a_stored.clone()),
            a.layout().transpose(2, 3),
            DType::F32,
        );
        let got = values(&product(a_t, flex(b_vals.clone(), &[bt, h, k, n])));
        let mut want = Vec::new();
        for i in 0..bt * h {
            let block = &a_stored[i * k * m..(i + 1) * k * m];
            let a_rows: Vec<f32> = (0..m)
                .flat_map(|r| (0..k).map(move |c| block[c * m + r]))
                .collect();
            want.extend(reference(
                &a_rows,
                &b_vals[i * k * n..(i + 1) * k * n],
                m,
                k,
                n,
            ));
        }
        assert_close(&got, &want, 1e-6);
    }

    #[test]
    fn linear_adds_the_bias_and_its_gradients_match_a_reference() {
        let (rows, d_in, d_out) = (70, 9, 11);
        let x = wave(rows * d_in, 0.13, 1.0, 0.0);
        let w = wave(d_in * d_out, 0.71, 0.3, 0.05);
        let b = wave(d_out, 1.3, 0.5, 0.0);
        let g = wave(rows * d_out, 0.29, 1.0, -0.1);
        let xt = flex(x.clone(), &[2, 35, d_in]);
        let wt = flex(w.clone(), &[d_in, d_out]);
        let y = linear(xt.clone(), &wt, &flex(b.clone(), &[d_out]));
        assert_eq!(dims(&y), vec![2, 35, d_out]);
        let mut want = reference(&x, &w, rows, d_in, d_out);
        for (i, v) in want.iter_mut().enumerate() {
            *v += b[i % d_out] as f64;
        }
        assert_close(&values(&y), &want, 1e-6);

        let [dx, dw, db] = linear_backward(&xt, &wt, &flex(g.clone(), &[2, 35, d_out]), [true; 3]);
        let w_t = transpose(&w, d_out);
        assert_close(
            &values(&dx.unwrap()),
            &reference(&g, &w_t, rows, d_out, d_in),
            1e-6,
        );
        let x_t = transpose(&x, d_in);
        assert_close(
            &values(&dw.unwrap()),
            &reference(&x_t, &g, d_in, rows, d_out),
            1e-5,
        );
        let sums: Vec<f64> = (0..d_out)
            .map(|o| g.iter().skip(o).step_by(d_out).map(|&v| v as f64).sum())
            .collect();
        assert_close(&values(&db.unwrap()), &sums, 1e-6);
    }

    #[test]
    fn product_backward_of_a_single_right_matrix_sums_over_the_batch() {
        let (bt, m, k, n) = (3, 4, 5, 2);
        let a = wave(bt * m * k, 0.41, 1.0, 0.0);
        let b = wave(k * n, 0.83, 1.0, 0.3);
        let g = wave(bt * m * n, 0.17, 1.0, 0.0);
        let (at, btn) = (flex(a.clone(), &[bt, m, k]), flex(b.clone(), &[1, k, n]));
        let y = product(at.clone(), btn.clone());
        assert_close(&values(&y), &reference(&a, &b, bt * m, k, n), 1e-6);
        let (da, db) = product_backward(&at, &btn, &flex(g.clone(), &[bt, m, n]), true, true);
        let (da, db) = (da.unwrap(), db.unwrap());
        assert_eq!((dims(&da), dims(&db)), (vec![bt, m, k], vec![1, k, n]));
        let a_t = transpose(&a, k);
        assert_close(&values(&db), &reference(&a_t, &g, k, bt * m, n), 1e-6);
    }

    #[test]
    fn a_few_rows_split_into_column_panels_match_a_reference_and_one_thread() {
        // 4 x 300 x 100: over SKINNY_WORK, so split (panels 0..64, 64..100
        // on two threads), with a bias
        let (m, k, n) = (4, 300, 100);
        let a = wave(m * k, 0.31, 1.0, 0.0);
        let b = wave(k * n, 0.57, 1.0, 0.1);
        let bias = wave(n, 0.9, 1.0, 0.0);
        let run = || {
            let y = linear(
                flex(a.clone(), &[m, k]),
                &flex(b.clone(), &[k, n]),
                &flex(bias.clone(), &[n]),
            );
            values(&y)
        };
        let (two, one) = (on_threads(2, run), on_threads(1, run));
        let mut want = reference(&a, &b, m, k, n);
        for (i, v) in want.iter_mut().enumerate() {
            *v += bias[i % n] as f64;
        }
        assert_close(&two, &want, 1e-5);
        assert_eq!(two, one, "the same bits split or not");
    }

    #[test]
    fn mid_size_products_split_into_row_panels_match_a_reference_and_one_thread() {
        // LoRA's shapes, scaled down: [200, 96] · [96, 8] and its
        // backward's [200, 8] · [8, 96] and [96, 200] · [200, 8], each over
        // SKINNY_WORK and under PARALLEL, so split into row panels
        for (m, k, n) in [(200, 96, 8), (200, 8, 96), (96, 200, 8), (70, 300, 5)] {
            let a = wave(m * k, 0.31, 1.0, 0.0);
            let b = wave(k * n, 0.57, 1.0, 0.1);
            let run = || values(&product(flex(a.clone(), &[m, k]), flex(b.clone(), &[k, n])));
            let (two, three, one) = (on_threads(2, run), on_threads(3, run), on_threads(1, run));
            assert_close(&two, &reference(&a, &b, m, k, n), 1e-5);
            assert_eq!(two, one, "{m}x{k}x{n}: the same bits split or not");
            assert_eq!(three, one, "{m}x{k}x{n}: the same bits on three threads");
        }
        // a transposed left operand (the weight gradient's x^T) reads its
        // panels through the strides
        let (m, k, n) = (96, 200, 8);
        let x = wave(k * m, 0.23, 1.0, -0.2);
        let g = wave(k * n, 0.41, 1.0, 0.3);
        let run = || {
            let (_, dw) = product_backward(
                &flex(x.clone(), &[k, m]),
                &flex(vec![0.0; m * n], &[m, n]),
                &flex(g.clone(), &[k, n]),
                false,
                true,
            );
            values(&dw.unwrap())
        };
        let (two, one) = (on_threads(2, run), on_threads(1, run));
        assert_close(&two, &reference(&transpose(&x, m), &g, m, k, n), 1e-5);
        assert_eq!(two, one);
    }

    #[test]
    fn the_bias_gradient_has_the_same_bits_on_one_and_two_threads() {
        let g = wave(1000 * 7, 0.37, 1.0, 0.2);
        let one = on_threads(1, || column_sums(&g, 7));
        let two = on_threads(2, || column_sums(&g, 7));
        assert_eq!(one, two);
    }

    #[test]
    fn empty_inner_dimensions_give_zeros_or_the_bias() {
        let a = flex(vec![], &[3, 0]);
        let b = flex(vec![], &[0, 2]);
        assert_eq!(values(&product(a.clone(), b.clone())), vec![0.0; 6]);
        let y = linear(a, &b, &flex(vec![1.0, 2.0], &[2]));
        assert_eq!(values(&y), vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
    }
}
