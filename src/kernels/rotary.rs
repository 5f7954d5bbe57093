//! The rotary position embedding (transformers' `rotate_half` layout,
//! Llama's) as one op each way on every core.
//!
//! `y = x·cos + rotate_half(x)·sin` with `rotate_half([a, b]) = [-b, a]`
//! over the two halves of each head's row. Composed from burn's ops it is
//! two narrows, a negation, a concatenation, two broadcast products and a
//! sum, each a fresh tensor on one thread (burn-flex runs elementwise ops
//! in parallel only from 4M values; a SmolLM2 step's queries are 295,000),
//! and the backward runs the chain back; the queries and keys also arrive
//! as a transposed view of the projection's output, which the first op
//! copies. Here the forward reads that view in place and writes each row
//! once, and the backward writes the input's gradient straight into the
//! view's memory order, so the transpose before it needs no copy either.
//! Each value is computed with the same two products and one sum, in the
//! same order, as the composition: the same bits (tested).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, DType, Dispatch, Flex, backend_extension};
use burn::tensor::{Bytes, Tensor};
use rayon::prelude::*;

use super::activation;
use super::simd::multiversion;

/// Rows per rayon task.
const ROWS: usize = 32;

/// Where the rows of a `[batch, heads, n, dim]` tensor are: row `(b, h,
/// p)` starts at `start + b·strides[0] + h·strides[1] + p·strides[2]`,
/// its `dim` values adjacent.
#[derive(Clone, Debug, PartialEq)]
pub struct Rows {
    pub shape: [usize; 4],
    pub strides: [isize; 3],
    pub start: usize,
}

impl Rows {
    fn count(&self) -> usize {
        self.shape[0] * self.shape[1] * self.shape[2]
    }

    /// The offset of the `r`-th row in `[batch, heads, n]` order, and the
    /// row of the `[batch, n]` tables it takes (`tables_batch` 1 or batch).
    fn at(&self, r: usize, tables_batch: usize) -> (usize, usize) {
        let [_, heads, n, _] = self.shape;
        let (b, h, p) = (r / (heads * n), (r / n) % heads, r % n);
        let offset = self.start as isize
            + b as isize * self.strides[0]
            + h as isize * self.strides[1]
            + p as isize * self.strides[2];
        let table = if tables_batch == 1 { p } else { b * n + p };
        (offset as usize, table)
    }

    /// Whether the rows tile `0..len` exactly (a permutation of a dense
    /// layout, such as a transposed view of a contiguous tensor), so a
    /// buffer of that length can be written in the same order.
    fn dense(&self) -> bool {
        let [batch, heads, n, dim] = self.shape;
        let mut dims = [
            (self.strides[0], batch),
            (self.strides[1], heads),
            (self.strides[2], n),
        ];
        dims.sort_by_key(|&(s, _)| std::cmp::Reverse(s));
        let mut want = dim as isize;
        for &(stride, size) in dims.iter().rev() {
            if size != 1 && stride != want {
                return false;
            }
            want *= size as isize;
        }
        self.start == 0
    }
}

/// One row: `out[i] = x[i]·cos[i] - x[i + half]·sin[i]` for the first
/// half, `x[i]·cos[i] + x[i - half]·sin[i]` for the second.
#[inline(always)]
fn forward_row(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    let half = x.len() / 2;
    let (o1, o2) = out.split_at_mut(half);
    let (x1, x2) = x.split_at(half);
    for i in 0..half {
        o1[i] = x1[i] * cos[i] + -x2[i] * sin[i];
    }
    for i in 0..half {
        o2[i] = x2[i] * cos[half + i] + x1[i] * sin[half + i];
    }
}

/// One row of the input's gradient from the output's `g`: `g·cos` plus
/// `g[i + half]·sin[i + half]` for the first half and `-(g[i - half]·
/// sin[i - half])` for the second.
#[inline(always)]
fn backward_row(g: &[f32], cos: &[f32], sin: &[f32], dx: &mut [f32]) {
    let half = g.len() / 2;
    let (d1, d2) = dx.split_at_mut(half);
    let (g1, g2) = g.split_at(half);
    for i in 0..half {
        d1[i] = g1[i] * cos[i] + g2[i] * sin[half + i];
    }
    for i in 0..half {
        d2[i] = g2[i] * cos[half + i] + -(g1[i] * sin[i]);
    }
}

/// Raw output pointer shared by tasks writing disjoint rows.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every task writes its own rows (distinct offsets of a dense layout).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The pointer `offset` values in (a method, so closures capture the
    /// whole `Send` wrapper rather than its raw pointer field).
    fn add(self, offset: usize) -> *mut f32 {
        // SAFETY: the callers stay inside the buffer (see `backward`).
        unsafe { self.0.add(offset) }
    }
}

/// How many batch items the `tables` values of cos (or sin) cover: 1
/// (shared) or every one, checked against `rows`.
fn tables_batch(rows: &Rows, tables: usize) -> usize {
    let [batch, _, n, dim] = rows.shape;
    assert!(dim % 2 == 0, "rotary: head dimension {dim} is odd");
    assert!(
        tables == n * dim || tables == batch * n * dim,
        "rotary: tables of {tables} values for {batch} x {n} positions of {dim}"
    );
    tables / (n * dim).max(1)
}

multiversion! {
    fn forward_rows(x: &[f32], rows: &Rows, cos: &[f32], sin: &[f32], tb: usize, first: usize, out: &mut [f32]) {
        let dim = rows.shape[3];
        for (k, o) in out.chunks_exact_mut(dim).enumerate() {
            let (at, t) = rows.at(first + k, tb);
            let t = t * dim;
            forward_row(&x[at..at + dim], &cos[t..t + dim], &sin[t..t + dim], o);
        }
    }
}

/// The rotary embedding of the rows of `x`, written contiguous `[batch,
/// heads, n, dim]`; `cos` and `sin` are `[batch or 1, n, dim]`.
pub fn forward(x: &[f32], rows: &Rows, cos: &[f32], sin: &[f32]) -> Vec<f32> {
    let tb = tables_batch(rows, cos.len());
    assert_eq!(cos.len(), sin.len(), "rotary: cos and sin tables differ");
    let dim = rows.shape[3];
    if rows.count() > 0 {
        let (last, _) = rows.at(rows.count() - 1, 1);
        assert!(last + dim <= x.len(), "rotary: rows outside the input");
    }
    let mut out = super::simd::uninit(rows.count() * dim);
    out.par_chunks_mut(ROWS * dim.max(1))
        .enumerate()
        .for_each(|(c, block)| forward_rows(x, rows, cos, sin, tb, c * ROWS, block));
    out
}

/// The input's gradient from the output's `g` (contiguous `[batch, heads,
/// n, dim]`), written in `rows`' own memory order when it is dense (the
/// returned layout's strides are then `rows`'), contiguous otherwise.
pub fn backward(g: &[f32], rows: &Rows, cos: &[f32], sin: &[f32]) -> (Vec<f32>, Rows) {
    let dim = rows.shape[3];
    let tb = tables_batch(rows, cos.len());
    let target = if rows.dense() {
        rows.clone()
    } else {
        let [_, heads, n, dim] = rows.shape;
        Rows {
            shape: rows.shape,
            strides: [(heads * n * dim) as isize, (n * dim) as isize, dim as isize],
            start: 0,
        }
    };
    let mut dx = super::simd::uninit(rows.count() * dim);
    let out = Out(dx.as_mut_ptr());
    let count = rows.count();
    (0..count.div_ceil(ROWS)).into_par_iter().for_each(|c| {
        for r in c * ROWS..((c + 1) * ROWS).min(count) {
            let (at, t) = target.at(r, tb);
            let t = t * dim;
            // SAFETY: `target` is dense over `dx`, so each row's `dim`
            // values are inside it and no other row's.
            let d = unsafe { std::slice::from_raw_parts_mut(out.add(at), dim) };
            backward_row(
                &g[r * dim..(r + 1) * dim],
                &cos[t..t + dim],
                &sin[t..t + dim],
                d,
            );
        }
    });
    (dx, target)
}

/// The rows of a rank-4 Flex tensor.
fn rows_of(x: &FlexTensor) -> Rows {
    let layout = x.layout();
    let s = layout.shape();
    let st = layout.strides();
    assert!(
        s.num_dims() == 4 && (s[3] <= 1 || st[3] == 1),
        "rotary: a [batch, heads, n, dim] tensor with adjacent dim values"
    );
    Rows {
        shape: [s[0], s[1], s[2], s[3]],
        strides: [st[0], st[1], st[2]],
        start: layout.start_offset(),
    }
}

fn values(t: &FlexTensor) -> &[f32] {
    &t.storage::<f32>()[..t.layout().num_elements()]
}

fn flex_forward(x: &FlexTensor, cos: &FlexTensor, sin: &FlexTensor) -> FlexTensor {
    assert_eq!(x.dtype(), DType::F32, "CPU kernels take f32 tensors");
    let rows = rows_of(x);
    let out = forward(x.storage::<f32>(), &rows, values(cos), values(sin));
    FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(x.layout().shape().clone()),
        DType::F32,
    )
}

#[backend_extension(Flex, Autodiff)]
pub trait RotaryKernels: Backend {
    /// `x·cos + rotate_half(x)·sin` of `x` `[batch, heads, n, dim]` (any
    /// strides, its last dimension adjacent) with `cos`, `sin` `[batch or
    /// 1, 1, n, dim]` (constants: no gradient flows to them).
    fn rotary(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

impl RotaryKernels for Flex {
    fn rotary(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        flex_forward(
            &x,
            &activation::contiguous(cos),
            &activation::contiguous(sin),
        )
    }
}

/// The backward of [`RotaryKernels::rotary`]: keeps the tables and where
/// the input's rows were.
#[derive(Debug)]
struct RotaryBackward;

impl Backward<Flex, 1> for RotaryBackward {
    type State = (FlexTensor, FlexTensor, Rows);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (cos, sin, rows) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let grad = activation::contiguous(grad);
            let (dx, target) = backward(values(&grad), &rows, values(&cos), values(&sin));
            let shape = grad.layout().shape().clone();
            let strides = vec![target.strides[0], target.strides[1], target.strides[2], 1];
            FlexTensor::new(
                Bytes::from_elems(dx),
                Layout::new(shape, strides, 0),
                DType::F32,
            )
        });
    }
}

impl<C: CheckpointStrategy> RotaryKernels for Autodiff<Flex, C> {
    fn rotary(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let prep = RotaryBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        let inner = <Self as AutodiffBackend>::inner;
        let (x, cos, sin) = (
            inner(x),
            activation::contiguous(inner(cos)),
            activation::contiguous(inner(sin)),
        );
        let out = flex_forward(&x, &cos, &sin);
        match prep {
            OpsKind::Tracked(prep) => prep.finish((cos, sin, rows_of(&x)), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

/// The rotary embedding composed from burn's ops (any backend).
fn composed(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
    let half = x.dims()[3] / 2;
    let first = x.clone().narrow(3, 0, half);
    let second = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![second.neg(), first], 3);
    x * cos + rotated * sin
}

/// `x·cos + rotate_half(x)·sin` (`x` `[batch, heads, n, dim]`, the tables
/// `[batch or 1, 1, n, dim]`, constants): [`RotaryKernels::rotary`] on the
/// CPU in f32, burn's ops elsewhere.
pub fn rotary(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
    let flex = x.dtype() == DType::F32 && super::is_flex(&x.device());
    let [batch, _, n, dim] = x.dims();
    let [tb, one, tn, td] = cos.dims();
    if !flex || one != 1 || tn != n || td != dim || (tb != batch && tb != 1) || dim % 2 != 0 {
        return composed(x, cos, sin);
    }
    Tensor::from_dispatch(<Dispatch as RotaryKernels>::rotary(
        x.into_dispatch(),
        cos.detach().into_dispatch(),
        sin.detach().into_dispatch(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{bits, on_threads, wave};
    use burn::tensor::{Device, TensorData};

    /// The op against burn's composition, forward and backward, on a
    /// transposed view (as the attention makes it) and a contiguous input,
    /// with tables per batch item and shared: the same bits, on one
    /// thread and on three.
    #[test]
    fn rotary_has_the_bits_of_the_composition_both_ways() {
        let device = Device::default().autodiff();
        let (batch, n, heads, dim) = (2, 37, 3, 8);
        for tables_batch in [1, batch] {
            let cos = wave(tables_batch * n * dim, 0.13, 1.0, 0.0);
            let sin = wave(tables_batch * n * dim, 0.29, 1.0, 0.0);
            let table = |v: &[f32]| {
                Tensor::<4>::from_data(
                    TensorData::new(v.to_vec(), [tables_batch, 1, n, dim]),
                    &device,
                )
            };
            let raw = wave(batch * n * heads * dim, 0.37, 2.0, 0.1);
            let up = wave(batch * heads * n * dim, 0.53, 1.0, -0.2);
            for transposed in [true, false] {
                let run = |ours: bool| {
                    let leaf = if transposed {
                        Tensor::<4>::from_data(
                            TensorData::new(raw.clone(), [batch, n, heads, dim]),
                            &device,
                        )
                    } else {
                        Tensor::<4>::from_data(
                            TensorData::new(raw.clone(), [batch, heads, n, dim]),
                            &device,
                        )
                    }
                    .require_grad();
                    let x = if transposed {
                        leaf.clone().swap_dims(1, 2)
                    } else {
                        leaf.clone()
                    };
                    let y = if ours {
                        rotary(x, table(&cos), table(&sin))
                    } else {
                        composed(x, table(&cos), table(&sin))
                    };
                    let g = Tensor::<4>::from_data(
                        TensorData::new(up.clone(), [batch, heads, n, dim]),
                        &device,
                    );
                    let grads = (y.clone() * g).sum().backward();
                    (bits(y.inner()), bits(leaf.grad(&grads).unwrap()))
                };
                let want = run(false);
                assert_eq!(
                    on_threads(1, || run(true)),
                    want,
                    "transposed {transposed}, one thread"
                );
                assert_eq!(
                    on_threads(3, || run(true)),
                    want,
                    "transposed {transposed}, three threads"
                );
            }
        }
    }

    #[test]
    fn dense_layouts_are_recognised() {
        let rows = |strides: [isize; 3], start: usize| Rows {
            shape: [2, 3, 5, 4],
            strides,
            start,
        };
        // contiguous, and the transposed view of a contiguous [2, 5, 3, 4]
        assert!(rows([60, 20, 4], 0).dense() && rows([60, 4, 12], 0).dense());
        // every other batch item, and an offset start
        assert!(!rows([120, 20, 4], 0).dense() && !rows([60, 20, 4], 4).dense());
    }
}
