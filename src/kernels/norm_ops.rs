//! The norms' ops on Flex tensors and under autodiff (BatchNorm with
//! running or batch statistics, LayerNorm, RMSNorm): the glue between
//! [`super::CpuKernels`] and the kernels of [`super::batch_norm`],
//! [`super::layer_norm`] and [`super::rms_norm`], with each op's backward,
//! and the tensor-level functions the models call.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Dispatch, Flex};
use burn::tensor::Tensor;

use super::{CpuKernels, activation, batch_norm, layer_norm, matmul, register_each, rms_norm};

type Ad<C> = Autodiff<Flex, C>;

/// [`batch_norm::forward`] of a Flex f32 tensor: the output and the
/// per-channel scale.
pub(super) fn batch_norm_flex(
    x: FlexTensor,
    scale: &FlexTensor,
    shift: &FlexTensor,
    act: u32,
) -> (FlexTensor, Vec<f32>) {
    let (plane, c) = plane_and_channels(&x);
    let (scale, shift) = (
        activation::contiguous(scale.clone()),
        activation::contiguous(shift.clone()),
    );
    let scale = scale.storage::<f32>()[..c].to_vec();
    let shift = &shift.storage::<f32>()[..c];
    let act = batch_norm::Act::from_code(act);
    let out = activation::map_flex(x, |values| {
        batch_norm::forward(values, plane, &scale, shift, act)
    });
    (out, scale)
}

/// The length of a channel's plane (the dimensions after the first two)
/// and the channels of `x`.
fn plane_and_channels(x: &FlexTensor) -> (usize, usize) {
    let dims: Vec<usize> = x.layout().shape().iter().copied().collect();
    (dims[2..].iter().product(), dims[1])
}

/// [`batch_norm::batch_stats`] of a contiguous Flex f32 tensor, `[2, channels]`.
pub(super) fn batch_stats_flex(x: &FlexTensor) -> FlexTensor {
    let (plane, c) = plane_and_channels(x);
    let n = x.layout().num_elements();
    let (mut mean, var) = batch_norm::batch_stats(&x.storage::<f32>()[..n], plane, c);
    mean.extend(var);
    matmul::tensor(mean, vec![2, c])
}

/// A training BatchNorm's parameters and batch statistics, read once.
#[derive(Clone, Debug)]
pub(super) struct BatchNormParams {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
    eps: f32,
    act: batch_norm::Act,
}

impl BatchNormParams {
    pub(super) fn new(
        gamma: &FlexTensor,
        beta: &FlexTensor,
        stats: &FlexTensor,
        eps: f64,
        act: u32,
    ) -> Self {
        let values = |t: &FlexTensor| {
            let t = activation::contiguous(t.clone());
            let n = t.layout().num_elements();
            t.storage::<f32>()[..n].to_vec()
        };
        let gamma = values(gamma);
        let mut mean = values(stats);
        assert_eq!(
            mean.len(),
            2 * gamma.len(),
            "batch norm: statistics of {} values for {} channels",
            mean.len(),
            gamma.len()
        );
        let var = mean.split_off(gamma.len());
        Self {
            gamma,
            beta: values(beta),
            mean,
            var,
            eps: eps as f32,
            act: batch_norm::Act::from_code(act),
        }
    }
}

/// The training BatchNorm's output ([`batch_norm::forward_into`] with the
/// folded batch statistics) of a contiguous Flex f32 tensor.
pub(super) fn batch_norm_train_flex(x: &FlexTensor, p: &BatchNormParams) -> FlexTensor {
    let (plane, c) = plane_and_channels(x);
    assert_eq!(
        c,
        p.gamma.len(),
        "batch norm: {c} channels, {} parameters",
        p.gamma.len()
    );
    let (scale, shift) = batch_norm::fold(&p.gamma, &p.beta, &p.mean, &p.var, p.eps);
    let n = x.layout().num_elements();
    let y = batch_norm::forward_into(&x.storage::<f32>()[..n], plane, &scale, &shift, p.act);
    activation::from_vec(y, x)
}

/// [`rms_norm::forward`] of Flex f32 tensors.
pub(super) fn rms_norm_flex(x: &FlexTensor, weight: &FlexTensor, eps: f64) -> FlexTensor {
    let (n, d) = (x.layout().num_elements(), weight.layout().num_elements());
    let y = rms_norm::forward(
        &x.storage::<f32>()[..n],
        &weight.storage::<f32>()[..d],
        eps as f32,
    );
    activation::from_vec(y, x)
}

/// [`layer_norm::forward`] of contiguous Flex f32 tensors.
pub(super) fn layer_norm_flex(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: FlexTensor,
    eps: f64,
) -> FlexTensor {
    let beta = activation::contiguous(beta);
    let (n, d) = (x.layout().num_elements(), gamma.layout().num_elements());
    let y = layer_norm::forward(
        &x.storage::<f32>()[..n],
        &gamma.storage::<f32>()[..d],
        &beta.storage::<f32>()[..d],
        eps as f32,
    );
    activation::from_vec(y, x)
}

/// The backward of [`CpuKernels::layer_norm`]: keeps the input and gamma.
#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    /// (input, gamma, epsilon)
    type State = (FlexTensor, FlexTensor, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = activation::contiguous(grads.consume::<Flex>(&ops.node));
        let (x, gamma, eps) = ops.state;
        let (x, gamma) = (activation::contiguous(x), activation::contiguous(gamma));
        let n = x.layout().num_elements();
        let d = gamma.layout().num_elements();
        let (dx, dgamma, dbeta) = layer_norm::backward(
            &x.storage::<f32>()[..n],
            &gamma.storage::<f32>()[..d],
            &grad.storage::<f32>()[..n],
            d,
            eps as f32,
        );
        let outs = [
            activation::from_vec(dx, &x),
            activation::from_vec(dgamma, &gamma),
            activation::from_vec(dbeta, &gamma),
        ];
        register_each(grads, ops.parents.map(|p| p.map(|n| n.id)), outs.map(Some));
    }
}

/// The backward of [`CpuKernels::rms_norm`]: keeps the input and weight.
#[derive(Debug)]
struct RmsNormBackward;

impl Backward<Flex, 2> for RmsNormBackward {
    /// (input, weight, epsilon)
    type State = (FlexTensor, FlexTensor, f64);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = activation::contiguous(grads.consume::<Flex>(&ops.node));
        let (x, weight, eps) = ops.state;
        let n = x.layout().num_elements();
        let d = weight.layout().num_elements();
        let (dx, dw) = rms_norm::backward(
            &x.storage::<f32>()[..n],
            &weight.storage::<f32>()[..d],
            &grad.storage::<f32>()[..n],
            eps as f32,
        );
        let outs = [
            activation::from_vec(dx, &x),
            activation::from_vec(dw, &weight),
        ];
        register_each(grads, ops.parents.map(|p| p.map(|n| n.id)), outs.map(Some));
    }
}

/// The backward of [`CpuKernels::batch_norm_act`]: keeps the output and
/// the scale.
#[derive(Debug)]
struct BatchNormActBackward(u32);

impl Backward<Flex, 1> for BatchNormActBackward {
    type State = (FlexTensor, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (y, scale) = ops.state;
        let act = batch_norm::Act::from_code(self.0);
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let y = activation::contiguous(y);
            let (plane, _) = plane_and_channels(&y);
            let n = y.layout().num_elements();
            let ys = &y.storage::<f32>()[..n];
            activation::map_flex(grad, |g| batch_norm::backward(ys, g, plane, &scale, act))
        });
    }
}

/// The backward of [`CpuKernels::batch_norm_train`]: keeps the input,
/// the parameters and the batch statistics.
#[derive(Debug)]
struct BatchNormTrainBackward;

impl Backward<Flex, 3> for BatchNormTrainBackward {
    type State = (FlexTensor, BatchNormParams);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, p) = ops.state;
        let (plane, c) = plane_and_channels(&x);
        let n = x.layout().num_elements();
        let want_dx = ops.parents[0].is_some();
        let mut sums = None;
        let dx = activation::map_flex(grad, |dy| {
            sums = Some(batch_norm::train_backward(
                &x.storage::<f32>()[..n],
                dy,
                plane,
                &p.gamma,
                &p.beta,
                &p.mean,
                &p.var,
                p.eps,
                p.act,
                want_dx,
            ));
        });
        let (dgamma, dbeta) = sums.expect("the backward ran");
        let outs = [
            want_dx.then_some(dx),
            Some(matmul::tensor(dgamma, vec![c])),
            Some(matmul::tensor(dbeta, vec![c])),
        ];
        register_each(grads, ops.parents.map(|p| p.map(|n| n.id)), outs);
    }
}

/// [`CpuKernels::layer_norm`] of CPU f32 tensors (the caller checks).
pub fn layer_norm_tensor<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    let out = <Dispatch as CpuKernels>::layer_norm(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        eps,
    );
    Tensor::from_dispatch(out)
}

/// [`CpuKernels::rms_norm`] of CPU f32 tensors (the caller checks).
pub fn rms_norm_tensor<const D: usize>(x: Tensor<D>, weight: Tensor<1>, eps: f64) -> Tensor<D> {
    let out = <Dispatch as CpuKernels>::rms_norm(x.into_dispatch(), weight.into_dispatch(), eps);
    Tensor::from_dispatch(out)
}

/// [`CpuKernels::batch_norm_act`] of CPU f32 tensors (the caller checks).
pub fn batch_norm_act_tensor<const D: usize>(
    x: Tensor<D>,
    scale: Tensor<1>,
    shift: Tensor<1>,
    act: batch_norm::Act,
) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as CpuKernels>::batch_norm_act(
        x.into_dispatch(),
        scale.into_dispatch(),
        shift.into_dispatch(),
        act.code(),
    ))
}

/// The batch's mean and biased variance per channel of a CPU f32 tensor
/// (the caller checks) as `[2, channels]`, without a gradient.
pub fn batch_stats_tensor<const D: usize>(x: Tensor<D>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as CpuKernels>::batch_stats(x.into_dispatch()))
}

/// [`CpuKernels::batch_norm_train`] of CPU f32 tensors (the caller checks).
pub fn batch_norm_train_tensor<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    stats: Tensor<2>,
    eps: f64,
    act: batch_norm::Act,
) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as CpuKernels>::batch_norm_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        stats.into_dispatch(),
        eps,
        act.code(),
    ))
}

/// [`CpuKernels::batch_norm_act`] under autodiff.
pub(super) fn tracked_batch_norm_act<C: CheckpointStrategy>(
    x: FloatTensor<Ad<C>>,
    scale: FloatTensor<Ad<C>>,
    shift: FloatTensor<Ad<C>>,
    act: u32,
) -> FloatTensor<Ad<C>> {
    let prep = BatchNormActBackward(act)
        .prepare::<C>([x.node()])
        .compute_bound()
        .stateful();
    let (out, scale) = batch_norm_flex(
        <Ad<C> as AutodiffBackend>::inner(x),
        &<Ad<C> as AutodiffBackend>::inner(scale),
        &<Ad<C> as AutodiffBackend>::inner(shift),
        act,
    );
    match prep {
        OpsKind::Tracked(prep) => prep.finish((out.clone(), scale), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// [`CpuKernels::batch_stats`] under autodiff.
pub(super) fn tracked_batch_stats<C: CheckpointStrategy>(
    x: FloatTensor<Ad<C>>,
) -> FloatTensor<Ad<C>> {
    let x = activation::contiguous(<Ad<C> as AutodiffBackend>::inner(x));
    <Ad<C> as AutodiffBackend>::from_inner(batch_stats_flex(&x))
}

/// [`CpuKernels::batch_norm_train`] under autodiff.
pub(super) fn tracked_batch_norm_train<C: CheckpointStrategy>(
    x: FloatTensor<Ad<C>>,
    gamma: FloatTensor<Ad<C>>,
    beta: FloatTensor<Ad<C>>,
    stats: FloatTensor<Ad<C>>,
    eps: f64,
    act: u32,
) -> FloatTensor<Ad<C>> {
    let prep = BatchNormTrainBackward
        .prepare::<C>([x.node(), gamma.node(), beta.node()])
        .compute_bound()
        .stateful();
    let p = BatchNormParams::new(
        &<Ad<C> as AutodiffBackend>::inner(gamma),
        &<Ad<C> as AutodiffBackend>::inner(beta),
        &<Ad<C> as AutodiffBackend>::inner(stats),
        eps,
        act,
    );
    let x = activation::contiguous(<Ad<C> as AutodiffBackend>::inner(x));
    let out = batch_norm_train_flex(&x, &p);
    match prep {
        OpsKind::Tracked(prep) => prep.finish((x, p), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// [`CpuKernels::rms_norm`] under autodiff.
pub(super) fn tracked_rms_norm<C: CheckpointStrategy>(
    x: FloatTensor<Ad<C>>,
    weight: FloatTensor<Ad<C>>,
    eps: f64,
) -> FloatTensor<Ad<C>> {
    let prep = RmsNormBackward
        .prepare::<C>([x.node(), weight.node()])
        .compute_bound()
        .stateful();
    let x = activation::contiguous(<Ad<C> as AutodiffBackend>::inner(x));
    let weight = activation::contiguous(<Ad<C> as AutodiffBackend>::inner(weight));
    let out = rms_norm_flex(&x, &weight, eps);
    match prep {
        OpsKind::Tracked(prep) => prep.finish((x, weight, eps), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// [`CpuKernels::layer_norm`] under autodiff.
pub(super) fn tracked_layer_norm<C: CheckpointStrategy>(
    x: FloatTensor<Ad<C>>,
    gamma: FloatTensor<Ad<C>>,
    beta: FloatTensor<Ad<C>>,
    eps: f64,
) -> FloatTensor<Ad<C>> {
    let prep = LayerNormBackward
        .prepare::<C>([x.node(), gamma.node(), beta.node()])
        .compute_bound()
        .stateful();
    let x = activation::contiguous(<Ad<C> as AutodiffBackend>::inner(x));
    let gamma = activation::contiguous(<Ad<C> as AutodiffBackend>::inner(gamma));
    let beta = <Ad<C> as AutodiffBackend>::inner(beta);
    let out = layer_norm_flex(&x, &gamma, beta, eps);
    match prep {
        OpsKind::Tracked(prep) => prep.finish((x, gamma, eps), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}
