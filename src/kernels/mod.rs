//! CPU kernels for the elementwise work burn's CPU backend does one element
//! at a time on one thread: activations ([`activation`]), dropout masks
//! ([`dropout`]), softmax under autodiff ([`softmax`]), LayerNorm under
//! autodiff ([`layer_norm`]), RMSNorm ([`rms_norm`]) and the AdamW update
//! ([`adamw`]), BatchNorm with running or batch statistics and its
//! activation ([`batch_norm`]), the log-probability of a target under a
//! softmax ([`log_prob`]); the matrix products and linear layer
//! ([`matmul`]), whose outputs burn-flex allocates twice on one thread; and
//! the 1x1 and depthwise convolutions ([`conv`]), whose weight gradients
//! burn computes through a generic fallback.
//!
//! The norms' and the convolutions' glue (Flex tensors in and out, the
//! backward, the tensor-level functions) lives in `norm_ops` and
//! `conv_ops`; this module declares the ops and holds the rest.
//!
//! Both are a backend extension (`#[backend_extension]`): an op
//! of the Flex backend, and of `Autodiff<Flex>` with its own backward, so
//! that both passes run the vectorised, parallel code. Tensors on any other
//! device (CUDA) and dtypes other than f32 take burn's own functions.

pub mod activation;
pub mod adamw;
pub mod batch_norm;
pub mod conv;
mod conv_ops;
pub mod dropout;
pub mod gated;
pub mod layer_norm;
pub mod log_prob;
pub mod matmul;
mod norm_ops;
pub mod philox;
pub mod pool;
pub mod rms_norm;
pub mod rotary;
pub mod simd;
pub mod softmax;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, DType, Dispatch, DispatchDevice, Flex, backend_extension,
};
use burn::tensor::{Device, Tensor};

pub use activation::Kind;
pub use conv_ops::{conv2d, conv2d_bn};
use conv_ops::{pointwise_flex, tracked_conv, window_flex, window_geometry};
use norm_ops::{
    BatchNormParams, batch_norm_flex, batch_norm_train_flex, batch_stats_flex, layer_norm_flex,
    rms_norm_flex,
};
pub use norm_ops::{
    batch_norm_act_tensor, batch_norm_train_tensor, batch_stats_tensor, layer_norm_tensor,
    rms_norm_tensor,
};

/// Ops on plain (not autodiff) CPU tensors.
#[backend_extension(Flex)]
pub trait PlainKernels: Backend {
    /// One AdamW update ([`adamw::update`]): the new parameter and moments.
    #[allow(clippy::too_many_arguments)]
    fn adamw(
        p: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        grad_scale: f32,
        beta1: f32,
        beta2: f32,
        one_minus_beta1: f32,
        one_minus_beta2: f32,
        eps: f32,
        decay: f32,
        sqrt_bc2: f32,
        step_size: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// The sum of the squares of an f32 tensor's values as a one-value
    /// tensor ([`simd::sum_squares`]: the same bits on any thread count).
    fn sum_squares(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl PlainKernels for Flex {
    fn sum_squares(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let x = activation::contiguous(x);
        let n = x.layout().num_elements();
        let total = simd::sum_squares(&x.storage::<f32>()[..n]);
        matmul::tensor(vec![total as f32], vec![1])
    }

    fn adamw(
        p: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        grad_scale: f32,
        beta1: f32,
        beta2: f32,
        one_minus_beta1: f32,
        one_minus_beta2: f32,
        eps: f32,
        decay: f32,
        sqrt_bc2: f32,
        step_size: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let hyper = adamw::Hyper {
            grad_scale,
            beta1,
            beta2,
            one_minus_beta1,
            one_minus_beta2,
            eps,
            decay,
            sqrt_bc2,
            step_size,
        };
        let g = activation::contiguous(g);
        let (mut p, mut m, mut v) = (
            activation::contiguous(p),
            activation::contiguous(m),
            activation::contiguous(v),
        );
        let n = p.layout().num_elements();
        adamw::update(
            &mut p.storage_mut::<f32>()[..n],
            &g.storage::<f32>()[..n],
            &mut m.storage_mut::<f32>()[..n],
            &mut v.storage_mut::<f32>()[..n],
            hyper,
        );
        (p, m, v)
    }
}

/// Whether `device` (with or without autodiff) is the Flex CPU backend.
pub fn is_flex(device: &Device) -> bool {
    matches!(
        device.clone().without_autodiff().as_dispatch(),
        DispatchDevice::Flex(_)
    )
}

#[backend_extension(Flex, Autodiff)]
pub trait CpuKernels: Backend {
    /// The activation `kind` ([`Kind::code`]) of an f32 tensor.
    fn activation(x: FloatTensor<Self>, kind: u32) -> FloatTensor<Self>;
    /// `x` times the dropout mask of `stream` under `seed` ([`dropout::apply_mask`]).
    fn dropout(x: FloatTensor<Self>, keep: f64, seed: u64, stream: u64) -> FloatTensor<Self>;
    /// Softmax over the last dimension of an f32 tensor.
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Softmax over the last dimension of `scale * x + bias`, `bias`
    /// broadcast ([`softmax::forward_biased`]) and constant (no gradient).
    fn softmax_biased(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self>;
    /// LayerNorm over the last dimension ([`layer_norm`]).
    fn layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;
    /// RMSNorm over the last dimension ([`rms_norm`]).
    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f64) -> FloatTensor<Self>;
    /// `act(x * scale[c] + shift[c])` over the channels (dimension 1) of
    /// `x` ([`batch_norm`]; `act` is [`batch_norm::Act::code`]); `scale` and
    /// `shift` take no gradient.
    fn batch_norm_act(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        act: u32,
    ) -> FloatTensor<Self>;
    /// The batch's mean and biased variance per channel (dimension 1) of
    /// `x` as `[2, channels]` ([`batch_norm::batch_stats`]); a constant
    /// (no gradient flows through it: [`CpuKernels::batch_norm_train`]
    /// differentiates through the statistics itself).
    fn batch_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `act((x - mean) / sqrt(var + eps) * gamma + beta)` with the batch's
    /// own statistics `stats` (from [`CpuKernels::batch_stats`] of the same
    /// `x`), differentiated through them ([`batch_norm::train_backward`]).
    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        eps: f64,
        act: u32,
    ) -> FloatTensor<Self>;
    /// The 1x1 convolution (stride 1, no padding, no bias) of `x`
    /// (`[batch, cin, h, w]`) with `w` (`[cout, cin, 1, 1]`) ([`conv`]).
    fn pointwise_conv(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The kh x kw convolution (no bias) of `x` (`[batch, c, h, w]`), depthwise
    /// with `w` `[c, 1, kh, kw]`, else dense `[cout, c, kh, kw]`: `stride`,
    /// padding before rows and columns, output `out_h x out_w` ([`conv::Window`]).
    fn window_conv(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        stride: usize,
        pad_h: usize,
        pad_w: usize,
        out_h: usize,
        out_w: usize,
    ) -> FloatTensor<Self>;
    /// [`CpuKernels::window_conv`] followed by
    /// [`CpuKernels::batch_norm_act`], each plane's affine map and
    /// activation applied as soon as it is computed; one pass over the
    /// output instead of two when nothing takes a gradient (under autodiff
    /// with a tracked input or filter: the two ops).
    #[allow(clippy::too_many_arguments)]
    fn depthwise_conv_affine(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        stride: usize,
        pad: [usize; 2],
        out: [usize; 2],
        act: u32,
    ) -> FloatTensor<Self>;
    /// `log_softmax(x)[target]` per row of the last dimension
    /// ([`log_prob`]); `targets` holds the ids as f32 (exact below 2^24).
    fn log_prob(x: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `a · b` over the last two dimensions ([`matmul::product`]).
    fn product(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `a · b` with the heads merged ([`matmul::product_merged`]).
    fn product_merged(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `x · w + bias` ([`matmul::linear`]).
    fn linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

impl CpuKernels for Flex {
    fn activation(x: FloatTensor<Self>, kind: u32) -> FloatTensor<Self> {
        activation::flex_forward(Kind::from_code(kind), x)
    }

    fn dropout(x: FloatTensor<Self>, keep: f64, seed: u64, stream: u64) -> FloatTensor<Self> {
        dropout::flex_apply(x, keep, seed, stream)
    }

    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        softmax_flex(x)
    }

    fn softmax_biased(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        softmax_biased_flex(x, bias, scale)
    }

    fn layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        layer_norm_flex(
            &activation::contiguous(x),
            &activation::contiguous(gamma),
            beta,
            eps,
        )
    }

    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        rms_norm_flex(
            &activation::contiguous(x),
            &activation::contiguous(weight),
            eps,
        )
    }

    fn log_prob(x: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self> {
        log_prob_flex(&activation::contiguous(x), targets).0
    }

    fn batch_norm_act(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        act: u32,
    ) -> FloatTensor<Self> {
        batch_norm_flex(x, &scale, &shift, act).0
    }

    fn batch_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        batch_stats_flex(&activation::contiguous(x))
    }

    fn pointwise_conv(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        pointwise_flex(&activation::contiguous(x), &activation::contiguous(w))
    }

    fn window_conv(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        stride: usize,
        pad_h: usize,
        pad_w: usize,
        out_h: usize,
        out_w: usize,
    ) -> FloatTensor<Self> {
        let x = activation::contiguous(x);
        let d = window_geometry(&x, &w, stride, [pad_h, pad_w], [out_h, out_w]);
        window_flex(&x, &activation::contiguous(w), &d)
    }

    fn depthwise_conv_affine(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        stride: usize,
        pad: [usize; 2],
        out: [usize; 2],
        act: u32,
    ) -> FloatTensor<Self> {
        let x = activation::contiguous(x);
        let d = window_geometry(&x, &w, stride, pad, out);
        conv_ops::depthwise_affine_flex(
            &x,
            &activation::contiguous(w),
            &scale,
            &shift,
            &d,
            batch_norm::Act::from_code(act),
        )
    }

    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        eps: f64,
        act: u32,
    ) -> FloatTensor<Self> {
        let p = BatchNormParams::new(&gamma, &beta, &stats, eps, act);
        batch_norm_train_flex(&activation::contiguous(x), &p)
    }

    fn product(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        matmul::product(a, b)
    }

    fn product_merged(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        matmul::product_merged(a, b)
    }

    fn linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        matmul::linear(x, &w, &bias)
    }
}

/// [`log_prob::forward`] of a contiguous Flex f32 tensor: the
/// log-probabilities (shaped as `x` without its last dimension), the
/// checked targets and each row's logsumexp.
fn log_prob_flex(x: &FlexTensor, targets: FlexTensor) -> (FlexTensor, Vec<usize>, Vec<f32>) {
    let n = last_dim(x);
    let targets = activation::contiguous(targets);
    let rows = targets.layout().num_elements();
    let t = log_prob::targets(&targets.storage::<f32>()[..rows], n);
    let (out, lse) = log_prob::forward(&x.storage::<f32>()[..rows * n], &t, n);
    let out = activation::from_vec(out, &targets);
    (out, t, lse)
}

fn last_dim(x: &FlexTensor) -> usize {
    x.layout().shape().last().copied().unwrap_or(1)
}

fn softmax_flex(x: FlexTensor) -> FlexTensor {
    let n = last_dim(&x);
    activation::map_flex(x, |values| softmax::forward(values, n))
}

/// [`softmax::forward_biased`] of Flex f32 tensors.
fn softmax_biased_flex(x: FlexTensor, bias: FlexTensor, scale: f64) -> FlexTensor {
    let n = last_dim(&x);
    let bias = activation::contiguous(bias);
    let dims: Vec<usize> = x.layout().shape().iter().copied().collect();
    let bias_dims: Vec<usize> = bias.layout().shape().iter().copied().collect();
    let rows = softmax::BiasRows::new(&dims, &bias_dims)
        .unwrap_or_else(|| panic!("softmax: a bias of {bias_dims:?} on scores of {dims:?}"));
    let count = bias.layout().num_elements();
    let b = &bias.storage::<f32>()[..count];
    activation::map_flex(x, |values| {
        softmax::forward_biased(values, n, b, &rows, scale as f32)
    })
}

/// The backward of [`CpuKernels::softmax_last`] and
/// [`CpuKernels::softmax_biased`] (with its scale): keeps the output.
#[derive(Debug)]
struct SoftmaxBackward(f32);

impl Backward<Flex, 1> for SoftmaxBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let output = activation::contiguous(ops.state);
        let n = last_dim(&output);
        let scale = self.0;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let count = output.layout().num_elements();
            let ys = &output.storage::<f32>()[..count];
            activation::map_flex(grad, |g| softmax::backward_scaled(ys, g, n, scale))
        });
    }
}

/// The backward of [`CpuKernels::activation`]: keeps the input.
#[derive(Debug)]
struct ActivationBackward(Kind);

impl Backward<Flex, 1> for ActivationBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let kind = self.0;
        let input = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            activation::flex_backward(kind, input, grad)
        });
    }
}

/// The backward of [`CpuKernels::dropout`]: the gradient times the same
/// mask, drawn again.
#[derive(Debug)]
struct DropoutBackward;

impl Backward<Flex, 1> for DropoutBackward {
    /// (keep, seed, stream)
    type State = (f64, u64, u64);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (keep, seed, stream) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            dropout::flex_apply(grad, keep, seed, stream)
        });
    }
}

/// Registers each output as the gradient of its parent, where the parent
/// takes one (the parents of an op are `None` where no gradient flows).
pub(super) fn register_each<const N: usize>(
    grads: &mut Gradients,
    parents: [Option<NodeId>; N],
    outs: [Option<FlexTensor>; N],
) {
    for (id, out) in parents.into_iter().zip(outs) {
        if let (Some(id), Some(out)) = (id, out) {
            grads.register::<Flex>(id, out);
        }
    }
}

/// The backward of [`CpuKernels::product`] and, with `merged`,
/// [`CpuKernels::product_merged`]: keeps both operands.
#[derive(Debug)]
struct ProductBackward {
    merged: bool,
}

impl Backward<Flex, 2> for ProductBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = activation::contiguous(grads.consume::<Flex>(&ops.node));
        let (a, b) = ops.state;
        let [want_a, want_b] = ops.parents.each_ref().map(Option::is_some);
        let (da, db) = if self.merged {
            matmul::product_merged_backward(&a, &b, grad, want_a, want_b)
        } else {
            matmul::product_backward(&a, &b, &grad, want_a, want_b)
        };
        register_each(grads, ops.parents.map(|p| p.map(|n| n.id)), [da, db]);
    }
}

/// The backward of [`CpuKernels::log_prob`]: keeps the logits, the
/// targets and each row's logsumexp.
#[derive(Debug)]
struct LogProbBackward;

impl Backward<Flex, 1> for LogProbBackward {
    type State = (FlexTensor, Vec<usize>, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, targets, lse) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            let grad = activation::contiguous(grad);
            let n = last_dim(&x);
            let rows = targets.len();
            let dx = log_prob::backward(
                &x.storage::<f32>()[..rows * n],
                &targets,
                &lse,
                &grad.storage::<f32>()[..rows],
                n,
            );
            activation::from_vec(dx, &x)
        });
    }
}

/// [`matmul::product`] (or, `merged`, [`matmul::product_merged`]) under
/// autodiff.
fn tracked_product<C: CheckpointStrategy>(
    a: FloatTensor<Autodiff<Flex, C>>,
    b: FloatTensor<Autodiff<Flex, C>>,
    merged: bool,
) -> FloatTensor<Autodiff<Flex, C>> {
    let prep = ProductBackward { merged }
        .prepare::<C>([a.node(), b.node()])
        .compute_bound()
        .stateful();
    let (a, b) = matmul::operands(
        <Autodiff<Flex, C> as AutodiffBackend>::inner(a),
        <Autodiff<Flex, C> as AutodiffBackend>::inner(b),
    );
    let product = if merged {
        matmul::product_merged
    } else {
        matmul::product_of_operands
    };
    match prep {
        OpsKind::Tracked(prep) => {
            let out = product(a.clone(), b.clone());
            prep.finish((a, b), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(product(a, b)),
    }
}

/// The backward of [`CpuKernels::linear`]: keeps the input and the weight.
#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = activation::contiguous(grads.consume::<Flex>(&ops.node));
        let (x, w) = ops.state;
        let want = ops.parents.each_ref().map(|node| node.is_some());
        let outs = matmul::linear_backward(&x, &w, &grad, want);
        register_each(grads, ops.parents.map(|p| p.map(|n| n.id)), outs);
    }
}

impl<C: CheckpointStrategy> CpuKernels for Autodiff<Flex, C> {
    fn batch_norm_act(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        act: u32,
    ) -> FloatTensor<Self> {
        norm_ops::tracked_batch_norm_act::<C>(x, scale, shift, act)
    }

    fn pointwise_conv(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked_conv::<C>(x, w, None)
    }

    fn window_conv(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        stride: usize,
        pad_h: usize,
        pad_w: usize,
        out_h: usize,
        out_w: usize,
    ) -> FloatTensor<Self> {
        tracked_conv::<C>(x, w, Some((stride, [pad_h, pad_w], [out_h, out_w])))
    }

    fn depthwise_conv_affine(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        stride: usize,
        pad: [usize; 2],
        out: [usize; 2],
        act: u32,
    ) -> FloatTensor<Self> {
        if !x.is_tracked() && !w.is_tracked() {
            let inner = <Self as AutodiffBackend>::inner;
            return <Self as AutodiffBackend>::from_inner(
                <Flex as CpuKernels>::depthwise_conv_affine(
                    inner(x),
                    inner(w),
                    inner(scale),
                    inner(shift),
                    stride,
                    pad,
                    out,
                    act,
                ),
            );
        }
        let y = Self::window_conv(x, w, stride, pad[0], pad[1], out[0], out[1]);
        Self::batch_norm_act(y, scale, shift, act)
    }

    fn batch_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        norm_ops::tracked_batch_stats::<C>(x)
    }

    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        eps: f64,
        act: u32,
    ) -> FloatTensor<Self> {
        norm_ops::tracked_batch_norm_train::<C>(x, gamma, beta, stats, eps, act)
    }

    fn log_prob(x: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = LogProbBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        let x = activation::contiguous(<Self as AutodiffBackend>::inner(x));
        let (out, t, lse) = log_prob_flex(&x, <Self as AutodiffBackend>::inner(targets));
        match prep {
            OpsKind::Tracked(prep) => prep.finish((x, t, lse), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn product(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked_product::<C>(a, b, false)
    }

    fn product_merged(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked_product::<C>(a, b, true)
    }

    fn linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let prep = LinearBackward
            .prepare::<C>([x.node(), w.node(), bias.node()])
            .compute_bound()
            .stateful();
        let x = <Self as AutodiffBackend>::inner(x);
        let w = <Self as AutodiffBackend>::inner(w);
        let bias = <Self as AutodiffBackend>::inner(bias);
        match prep {
            OpsKind::Tracked(prep) => {
                let x = matmul::foldable(x);
                let out = matmul::linear(x.clone(), &w, &bias);
                prep.finish((x, w), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(matmul::linear(x, &w, &bias)),
        }
    }

    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        norm_ops::tracked_rms_norm::<C>(x, weight, eps)
    }

    fn layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        norm_ops::tracked_layer_norm::<C>(x, gamma, beta, eps)
    }

    fn softmax_biased(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        let prep = SoftmaxBackward(scale as f32)
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        let out = softmax_biased_flex(
            <Self as AutodiffBackend>::inner(x),
            <Self as AutodiffBackend>::inner(bias),
            scale,
        );
        match prep {
            OpsKind::Tracked(prep) => prep.finish(out.clone(), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = SoftmaxBackward(1.0)
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        let out = softmax_flex(<Self as AutodiffBackend>::inner(x));
        match prep {
            OpsKind::Tracked(prep) => prep.finish(out.clone(), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn dropout(x: FloatTensor<Self>, keep: f64, seed: u64, stream: u64) -> FloatTensor<Self> {
        let prep = DropoutBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        let input = <Self as AutodiffBackend>::inner(x);
        let out = dropout::flex_apply(input, keep, seed, stream);
        match prep {
            OpsKind::Tracked(prep) => prep.finish((keep, seed, stream), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn activation(x: FloatTensor<Self>, kind: u32) -> FloatTensor<Self> {
        let kind = Kind::from_code(kind);
        let prep = ActivationBackward(kind)
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        let input = <Self as AutodiffBackend>::inner(x);
        match prep {
            OpsKind::Tracked(prep) => {
                let out = activation::flex_forward(kind, input.clone());
                prep.finish(input, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(activation::flex_forward(kind, input)),
        }
    }
}

/// `kind` applied to `x`: the kernels of this module on the CPU in f32,
/// burn's functions elsewhere.
pub fn activation<const D: usize>(kind: Kind, x: Tensor<D>) -> Tensor<D> {
    use burn::tensor::activation as burn_act;
    if x.dtype() != DType::F32 || !is_flex(&x.device()) {
        return match kind {
            Kind::Gelu => burn_act::gelu(x),
            Kind::GeluTanh => burn_act::gelu_approximate(x),
            Kind::Silu => burn_act::silu(x),
        };
    }
    let out = <Dispatch as CpuKernels>::activation(x.into_dispatch(), kind.code());
    Tensor::from_dispatch(out)
}

/// `x` times a dropout mask ([`dropout::apply_mask`]); `x` is an f32
/// tensor on the CPU (the caller checks).
pub fn dropout_tensor<const D: usize>(
    x: Tensor<D>,
    keep: f64,
    seed: u64,
    stream: u64,
) -> Tensor<D> {
    let out = <Dispatch as CpuKernels>::dropout(x.into_dispatch(), keep, seed, stream);
    Tensor::from_dispatch(out)
}

/// [`adamw::update`] on 1-D f32 CPU tensors (the caller checks): the new
/// parameter, first and second moments.
pub fn adamw_tensors(
    p: Tensor<1>,
    g: Tensor<1>,
    m: Tensor<1>,
    v: Tensor<1>,
    h: adamw::Hyper,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let (p, m, v) = <Dispatch as PlainKernels>::adamw(
        p.into_dispatch(),
        g.into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        h.grad_scale,
        h.beta1,
        h.beta2,
        h.one_minus_beta1,
        h.one_minus_beta2,
        h.eps,
        h.decay,
        h.sqrt_bc2,
        h.step_size,
    );
    (
        Tensor::from_dispatch(p),
        Tensor::from_dispatch(m),
        Tensor::from_dispatch(v),
    )
}

/// The sum of the squares of `x`'s values as a one-value tensor: on the
/// CPU in f32 over fixed blocks summed in order ([`simd::sum_squares`]),
/// so a gradient's norm and the clipping it sets have the same bits from
/// run to run (burn's full sum adds its parallel chunks in whatever order
/// the threads finish them, from 4M values up); burn's elsewhere.
pub fn sum_squares<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    if x.dtype() == DType::F32 && is_flex(&x.device()) {
        let x = x.inner();
        let n = x.shape().num_elements();
        return Tensor::from_dispatch(<Dispatch as PlainKernels>::sum_squares(
            x.reshape([n]).into_dispatch(),
        ));
    }
    x.powi_scalar(2).sum()
}

/// `a · b` over the last two dimensions: [`matmul::product`] on the CPU
/// in f32 for equal batch dimensions or a single right matrix, burn's
/// product otherwise.
#[allow(clippy::disallowed_methods)]
pub fn matmul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    if a.dtype() != DType::F32
        || b.dtype() != DType::F32
        || !is_flex(&a.device())
        || !matmul::takes(&a.dims(), &b.dims())
    {
        return a.matmul(b);
    }
    Tensor::from_dispatch(<Dispatch as CpuKernels>::product(
        a.into_dispatch(),
        b.into_dispatch(),
    ))
}

/// `log_softmax(logits)[target]` over the last dimension of `logits`
/// (rank `D`) for each of `targets` (rank `E = D - 1`): the language-model
/// loss's log-probabilities. One pass each way on the CPU in f32
/// ([`log_prob`]); burn's `log_softmax` and `gather` elsewhere. A target
/// outside the classes panics, naming it.
pub fn log_prob<const D: usize, const E: usize>(
    logits: Tensor<D>,
    targets: Tensor<E, burn::tensor::Int>,
) -> Tensor<E> {
    assert_eq!(
        E + 1,
        D,
        "log_prob: targets of rank {E} for logits of rank {D}"
    );
    let classes = logits.dims()[D - 1];
    if logits.dtype() != DType::F32 || !is_flex(&logits.device()) || classes >= 1 << 24 {
        let dims = targets.dims();
        return burn::tensor::activation::log_softmax(logits, D - 1)
            .gather(D - 1, targets.unsqueeze_dim::<D>(E))
            .reshape(dims);
    }
    let targets = targets.float();
    Tensor::from_dispatch(<Dispatch as CpuKernels>::log_prob(
        logits.into_dispatch(),
        targets.into_dispatch(),
    ))
}

/// Attention's context `probs · v` (`[batch, heads, queries, keys]` and
/// `[batch, heads, keys, dim]`) with the heads merged: `[batch, queries,
/// heads * dim]`. On the CPU in f32 each head's product is written into its
/// columns ([`matmul::product_merged`]); elsewhere the product, a transpose
/// and a reshape.
pub fn matmul_merge_heads(probs: Tensor<4>, v: Tensor<4>) -> Tensor<3> {
    let [batch, heads, queries, _] = probs.dims();
    let dim = v.dims()[3];
    if probs.dtype() != DType::F32
        || v.dtype() != DType::F32
        || !is_flex(&probs.device())
        || !matmul::takes_merged(&probs.dims(), &v.dims())
    {
        return matmul(probs, v)
            .swap_dims(1, 2)
            .reshape([batch, queries, heads * dim]);
    }
    Tensor::from_dispatch(<Dispatch as CpuKernels>::product_merged(
        probs.into_dispatch(),
        v.into_dispatch(),
    ))
}

/// `x · weight (+ bias)` over `x`'s last dimension, `weight` `[in, out]`:
/// [`matmul::linear`] on the CPU in f32, burn's `linear` elsewhere.
#[allow(clippy::disallowed_methods)]
pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    if D < 2
        || x.dtype() != DType::F32
        || weight.dtype() != DType::F32
        || !is_flex(&x.device())
        || x.dims()[D - 1] != weight.dims()[0]
    {
        return burn::tensor::module::linear(x, weight, bias);
    }
    match bias {
        Some(bias) => Tensor::from_dispatch(<Dispatch as CpuKernels>::linear(
            x.into_dispatch(),
            weight.into_dispatch(),
            bias.into_dispatch(),
        )),
        None => matmul(x, weight.unsqueeze::<D>()),
    }
}

/// Softmax over the last dimension of `scale * x + bias`: one pass of this
/// module's kernel on the CPU in f32 when `bias` (a constant such as an
/// attention mask, no gradient) broadcasts to `x` dimension by dimension;
/// burn's ops otherwise.
pub fn softmax_biased<const D: usize>(
    x: Tensor<D>,
    scale: f64,
    bias: Option<Tensor<D>>,
) -> Tensor<D> {
    let fits = bias.as_ref().is_none_or(|b| {
        b.dtype() == DType::F32
            && !b.is_require_grad()
            && softmax::BiasRows::new(&x.dims(), &b.dims()).is_some()
    });
    if x.dtype() != DType::F32 || !is_flex(&x.device()) || !fits {
        let x = if scale == 1.0 { x } else { x * scale };
        let x = match bias {
            Some(b) => x + b,
            None => x,
        };
        return burn::tensor::activation::softmax(x, D - 1);
    }
    let bias = match bias {
        Some(b) => b,
        None => {
            let mut dims = [1; D];
            dims[D - 1] = x.dims()[D - 1];
            Tensor::zeros(dims, &x.device())
        }
    };
    let out =
        <Dispatch as CpuKernels>::softmax_biased(x.into_dispatch(), bias.into_dispatch(), scale);
    Tensor::from_dispatch(out)
}

/// Softmax over the last dimension: this module's kernel on the CPU in
/// f32, burn's `softmax` elsewhere.
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() != DType::F32 || !is_flex(&x.device()) {
        return burn::tensor::activation::softmax(x, D - 1);
    }
    let out = <Dispatch as CpuKernels>::softmax_last(x.into_dispatch());
    Tensor::from_dispatch(out)
}

#[cfg(test)]
mod tests;

/// Inputs and thread pools the kernels' tests share.
#[cfg(test)]
pub(crate) mod testutil {
    /// `sin(i f) * scale + offset` for `i` in `0..n`: smooth, signed,
    /// off-centre values.
    pub fn wave(n: usize, f: f32, scale: f32, offset: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32) * f).sin() * scale + offset)
            .collect()
    }

    /// `run` on a rayon pool of `threads` threads.
    pub fn on_threads<T: Send>(threads: usize, run: impl FnOnce() -> T + Send) -> T {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool")
            .install(run)
    }

    /// A tensor's values as bits, to compare exactly.
    pub fn bits<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<u32> {
        let (_, v) = crate::models::params::host(&t);
        v.iter().map(|v| v.to_bits()).collect()
    }
}
