//! The gated feed-forward's `silu(gate) · up` (Llama's SwiGLU) as one op
//! each way on every core.
//!
//! Composed, it is [`super::activation`]'s SiLU then burn's product: the
//! product runs on one thread below burn-flex's 4M-value threshold (a
//! SmolLM2 step's `[512, 1536]` is 786,000), and its backward makes two
//! more single-threaded products before the SiLU's backward pass. Here the
//! forward writes each value once, and the backward writes both gradients
//! in one pass, recomputing `silu(gate)` instead of keeping it. Each value
//! is the same expression, in the same order, as the composition: the
//! same bits (tested).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, DType, Dispatch, Flex, backend_extension};
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::activation::{self, Kind, backward_one, forward_one};
use super::register_each;
use super::simd::multiversion;

/// Values per rayon task.
const CHUNK: usize = 16 * 1024;

multiversion! {
    fn forward_chunk(g: &[f32], u: &[f32], out: &mut [f32]) {
        for i in 0..out.len() {
            out[i] = forward_one(Kind::Silu, g[i]) * u[i];
        }
    }
}

multiversion! {
    fn backward_chunk(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [f32], du: &mut [f32]) {
        for i in 0..dy.len() {
            dg[i] = backward_one(Kind::Silu, g[i], dy[i] * u[i]);
            du[i] = dy[i] * forward_one(Kind::Silu, g[i]);
        }
    }
}

/// `silu(g[i]) · u[i]`.
pub fn forward(g: &[f32], u: &[f32]) -> Vec<f32> {
    assert_eq!(g.len(), u.len(), "swiglu: gate and up differ in size");
    let mut out = super::simd::uninit(g.len());
    out.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
        .for_each(|(o, (g, u))| forward_chunk(g, u, o));
    out
}

/// The gradients of `g` and `u` from the output's `dy`:
/// `silu'(g)·(dy·u)` and `dy·silu(g)`.
pub fn backward(g: &[f32], u: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    assert!(
        g.len() == u.len() && u.len() == dy.len(),
        "swiglu backward: sizes differ"
    );
    let (mut dg, mut du) = (super::simd::uninit(g.len()), super::simd::uninit(g.len()));
    dg.par_chunks_mut(CHUNK)
        .zip(du.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
        .zip(dy.par_chunks(CHUNK))
        .for_each(|(((dg, du), (g, u)), dy)| backward_chunk(g, u, dy, dg, du));
    (dg, du)
}

fn values(t: &FlexTensor) -> &[f32] {
    &t.storage::<f32>()[..t.layout().num_elements()]
}

fn flex_forward(g: &FlexTensor, u: &FlexTensor) -> FlexTensor {
    assert_eq!(g.dtype(), DType::F32, "CPU kernels take f32 tensors");
    assert_eq!(
        g.layout().shape(),
        u.layout().shape(),
        "swiglu: gate and up differ in shape"
    );
    activation::from_vec(forward(values(g), values(u)), g)
}

#[backend_extension(Flex, Autodiff)]
pub trait GatedKernels: Backend {
    /// `silu(gate) · up`, elementwise, of two f32 tensors of one shape.
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl GatedKernels for Flex {
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        flex_forward(&activation::contiguous(gate), &activation::contiguous(up))
    }
}

/// The backward of [`GatedKernels::swiglu`]: keeps both inputs.
#[derive(Debug)]
struct SwigluBackward;

impl Backward<Flex, 2> for SwigluBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = activation::contiguous(grads.consume::<Flex>(&ops.node));
        let (g, u) = ops.state;
        let (dg, du) = backward(values(&g), values(&u), values(&dy));
        let [want_g, want_u] = ops.parents.each_ref().map(Option::is_some);
        let dg = want_g.then(|| activation::from_vec(dg, &g));
        let du = want_u.then(|| activation::from_vec(du, &u));
        register_each(grads, ops.parents.map(|p| p.map(|n| n.id)), [dg, du]);
    }
}

impl<C: CheckpointStrategy> GatedKernels for Autodiff<Flex, C> {
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = SwigluBackward
            .prepare::<C>([gate.node(), up.node()])
            .compute_bound()
            .stateful();
        let inner = <Self as AutodiffBackend>::inner;
        let g = activation::contiguous(inner(gate));
        let u = activation::contiguous(inner(up));
        let out = flex_forward(&g, &u);
        match prep {
            OpsKind::Tracked(prep) => prep.finish((g, u), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

/// `silu(gate) · up`: [`GatedKernels::swiglu`] on the CPU in f32 for two
/// tensors of one shape, the SiLU kernel and burn's product elsewhere.
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    let flex = gate.dtype() == DType::F32
        && up.dtype() == DType::F32
        && super::is_flex(&gate.device())
        && gate.dims() == up.dims();
    if !flex {
        return super::activation(Kind::Silu, gate) * up;
    }
    Tensor::from_dispatch(<Dispatch as GatedKernels>::swiglu(
        gate.into_dispatch(),
        up.into_dispatch(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{bits, on_threads, wave};
    use burn::tensor::{Device, TensorData};

    /// Against the SiLU kernel times burn's product, forward and both
    /// gradients, over more than one task's chunk and with gates far out
    /// on both sides: the same bits, on one thread and on three.
    #[test]
    fn swiglu_has_the_bits_of_the_composition_both_ways() {
        let device = Device::default().autodiff();
        let shape = [3, 7, 1601];
        let n = 3 * 7 * 1601;
        let g = wave(n, 0.011, 12.0, 0.5);
        let u = wave(n, 0.023, 2.0, -0.3);
        let up_grad = wave(n, 0.031, 1.0, 0.1);
        let run = |ours: bool| {
            let leaf = |v: &[f32]| {
                Tensor::<3>::from_data(TensorData::new(v.to_vec(), shape), &device).require_grad()
            };
            let (gt, ut) = (leaf(&g), leaf(&u));
            let y = if ours {
                swiglu(gt.clone(), ut.clone())
            } else {
                crate::kernels::activation(Kind::Silu, gt.clone()) * ut.clone()
            };
            let dy = Tensor::<3>::from_data(TensorData::new(up_grad.clone(), shape), &device);
            let grads = (y.clone() * dy).sum().backward();
            (
                bits(y.inner()),
                bits(gt.grad(&grads).unwrap()),
                bits(ut.grad(&grads).unwrap()),
            )
        };
        let want = run(false);
        assert_eq!(on_threads(1, || run(true)), want, "one thread");
        assert_eq!(on_threads(3, || run(true)), want, "three threads");
    }
}
