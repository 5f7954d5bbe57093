//! CPU kernels for the elementwise work burn's CPU backend does one element
//! at a time on one thread: activations ([`activation`]), dropout masks
//! ([`dropout`]), softmax under autodiff ([`softmax`]), LayerNorm under
//! autodiff ([`layer_norm`]), RMSNorm ([`rms_norm`]) and the AdamW update
//! ([`adamw`]), BatchNorm with running statistics and its activation
//! ([`batch_norm`]), the log-probability of a target under a softmax
//! ([`log_prob`]); and the matrix products and linear layer ([`matmul`]),
//! whose outputs burn-flex allocates twice on one thread.
//!
//! Both are a backend extension (`#[backend_extension]`): an op
//! of the Flex backend, and of `Autodiff<Flex>` with its own backward, so
//! that both passes run the vectorised, parallel code. Tensors on any other
//! device (CUDA) and dtypes other than f32 take burn's own functions.

pub mod activation;
pub mod adamw;
pub mod batch_norm;
pub mod conv;
pub mod dropout;
pub mod layer_norm;
pub mod log_prob;
pub mod matmul;
pub mod philox;
pub mod rms_norm;
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
}

impl PlainKernels for Flex {
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
    /// The depthwise convolution (no bias) of `x` (`[batch, c, h, w]`) with
    /// `w` (`[c, 1, k, k]`): `stride`, padding `pad` before the rows and
    /// columns, output planes `out_h x out_w` ([`conv::Depthwise`]).
    fn depthwise_conv(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        stride: usize,
        pad_h: usize,
        pad_w: usize,
        out_h: usize,
        out_w: usize,
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

    fn depthwise_conv(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        stride: usize,
        pad_h: usize,
        pad_w: usize,
        out_h: usize,
        out_w: usize,
    ) -> FloatTensor<Self> {
        let x = activation::contiguous(x);
        let d = depthwise_geometry(&x, &w, stride, [pad_h, pad_w], [out_h, out_w]);
        depthwise_flex(&x, &activation::contiguous(w), &d)
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

/// [`batch_norm::forward`] of a Flex f32 tensor: the output and the
/// per-channel scale.
fn batch_norm_flex(
    x: FlexTensor,
    scale: &FlexTensor,
    shift: &FlexTensor,
    act: u32,
) -> (FlexTensor, Vec<f32>) {
    let dims: Vec<usize> = x.layout().shape().iter().copied().collect();
    let plane: usize = dims[2..].iter().product();
    let (scale, shift) = (
        activation::contiguous(scale.clone()),
        activation::contiguous(shift.clone()),
    );
    let c = dims[1];
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
fn batch_stats_flex(x: &FlexTensor) -> FlexTensor {
    let (plane, c) = plane_and_channels(x);
    let n = x.layout().num_elements();
    let (mut mean, var) = batch_norm::batch_stats(&x.storage::<f32>()[..n], plane, c);
    mean.extend(var);
    matmul::tensor(mean, vec![2, c])
}

/// The four dimensions of a rank-4 tensor.
fn dims4(t: &FlexTensor) -> [usize; 4] {
    let shape = t.layout().shape();
    assert_eq!(shape.num_dims(), 4, "conv: a rank-4 tensor, got {shape:?}");
    [shape[0], shape[1], shape[2], shape[3]]
}

/// [`conv::pointwise_forward`] of contiguous Flex f32 tensors.
fn pointwise_flex(x: &FlexTensor, w: &FlexTensor) -> FlexTensor {
    let [batch, cin, h, wd] = dims4(x);
    let cout = dims4(w)[0];
    let y = conv::pointwise_forward(
        &x.storage::<f32>()[..batch * cin * h * wd],
        &w.storage::<f32>()[..cout * cin],
        batch,
        cin,
        cout,
    );
    matmul::tensor(y, vec![batch, cout, h, wd])
}

/// A depthwise convolution's geometry from its input and filters.
fn depthwise_geometry(
    x: &FlexTensor,
    w: &FlexTensor,
    stride: usize,
    pad: [usize; 2],
    output: [usize; 2],
) -> conv::Depthwise {
    let [_, c, h, wd] = dims4(x);
    let [wc, one, k, k2] = dims4(w);
    assert!(
        wc == c && one == 1 && k == k2,
        "depthwise conv: filters {:?} for {c} channels",
        [wc, one, k, k2]
    );
    conv::Depthwise {
        k,
        stride,
        pad,
        input: [h, wd],
        output,
    }
}

/// [`conv::depthwise_forward`] of contiguous Flex f32 tensors.
fn depthwise_flex(x: &FlexTensor, w: &FlexTensor, d: &conv::Depthwise) -> FlexTensor {
    let [batch, c, h, wd] = dims4(x);
    let y = conv::depthwise_forward(
        &x.storage::<f32>()[..batch * c * h * wd],
        &w.storage::<f32>()[..c * d.k * d.k],
        c,
        d,
    );
    matmul::tensor(y, vec![batch, c, d.output[0], d.output[1]])
}

/// The backward of [`CpuKernels::pointwise_conv`] and
/// [`CpuKernels::depthwise_conv`] (with its geometry): keeps the input and
/// the filters.
#[derive(Debug)]
struct ConvBackward(Option<conv::Depthwise>);

impl Backward<Flex, 2> for ConvBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = activation::contiguous(grads.consume::<Flex>(&ops.node));
        let (x, w) = ops.state;
        let [want_dx, want_dw] = ops.parents.each_ref().map(Option::is_some);
        let [batch, cin, h, wd] = dims4(&x);
        let (nx, nw, ng) = (
            x.layout().num_elements(),
            w.layout().num_elements(),
            grad.layout().num_elements(),
        );
        let (xs, ws, gs) = (
            &x.storage::<f32>()[..nx],
            &w.storage::<f32>()[..nw],
            &grad.storage::<f32>()[..ng],
        );
        let (dx, dw) = match &self.0 {
            Some(d) => conv::depthwise_backward(xs, ws, gs, cin, d, want_dx, want_dw),
            None => {
                let cout = dims4(&w)[0];
                conv::pointwise_backward(xs, ws, gs, batch, cin, cout, want_dx, want_dw)
            }
        };
        let outs = [
            dx.map(|v| matmul::tensor(v, vec![batch, cin, h, wd])),
            dw.map(|v| activation::from_vec(v, &w)),
        ];
        register_each(grads, ops.parents.map(|p| p.map(|n| n.id)), outs);
    }
}

/// A convolution under autodiff: `forward` on the inner tensors, with
/// [`ConvBackward`] of `depthwise` when tracked.
fn tracked_conv<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<Flex, C>>,
    w: FloatTensor<Autodiff<Flex, C>>,
    depthwise: Option<(usize, [usize; 2], [usize; 2])>,
) -> FloatTensor<Autodiff<Flex, C>> {
    let x_inner = activation::contiguous(<Autodiff<Flex, C> as AutodiffBackend>::inner(x.clone()));
    let w_inner = activation::contiguous(<Autodiff<Flex, C> as AutodiffBackend>::inner(w.clone()));
    let geometry = depthwise
        .map(|(stride, pad, out)| depthwise_geometry(&x_inner, &w_inner, stride, pad, out));
    let prep = ConvBackward(geometry)
        .prepare::<C>([x.node(), w.node()])
        .compute_bound()
        .stateful();
    let out = match &geometry {
        Some(d) => depthwise_flex(&x_inner, &w_inner, d),
        None => pointwise_flex(&x_inner, &w_inner),
    };
    match prep {
        OpsKind::Tracked(prep) => prep.finish((x_inner, w_inner), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// A training BatchNorm's parameters and batch statistics, read once.
#[derive(Clone, Debug)]
struct BatchNormParams {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
    eps: f32,
    act: batch_norm::Act,
}

impl BatchNormParams {
    fn new(gamma: &FlexTensor, beta: &FlexTensor, stats: &FlexTensor, eps: f64, act: u32) -> Self {
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
fn batch_norm_train_flex(x: &FlexTensor, p: &BatchNormParams) -> FlexTensor {
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

/// [`rms_norm::forward`] of Flex f32 tensors.
fn rms_norm_flex(x: &FlexTensor, weight: &FlexTensor, eps: f64) -> FlexTensor {
    let (n, d) = (x.layout().num_elements(), weight.layout().num_elements());
    let y = rms_norm::forward(
        &x.storage::<f32>()[..n],
        &weight.storage::<f32>()[..d],
        eps as f32,
    );
    activation::from_vec(y, x)
}

/// [`layer_norm::forward`] of contiguous Flex f32 tensors.
fn layer_norm_flex(x: &FlexTensor, gamma: &FlexTensor, beta: FlexTensor, eps: f64) -> FlexTensor {
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
fn register_each<const N: usize>(
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
            let dims: Vec<usize> = y.layout().shape().iter().copied().collect();
            let plane: usize = dims[2..].iter().product();
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
        let prep = BatchNormActBackward(act)
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        let (out, scale) = batch_norm_flex(
            <Self as AutodiffBackend>::inner(x),
            &<Self as AutodiffBackend>::inner(scale),
            &<Self as AutodiffBackend>::inner(shift),
            act,
        );
        match prep {
            OpsKind::Tracked(prep) => prep.finish((out.clone(), scale), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn pointwise_conv(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked_conv::<C>(x, w, None)
    }

    fn depthwise_conv(
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

    fn batch_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let x = activation::contiguous(<Self as AutodiffBackend>::inner(x));
        <Self as AutodiffBackend>::from_inner(batch_stats_flex(&x))
    }

    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        eps: f64,
        act: u32,
    ) -> FloatTensor<Self> {
        let prep = BatchNormTrainBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let p = BatchNormParams::new(
            &<Self as AutodiffBackend>::inner(gamma),
            &<Self as AutodiffBackend>::inner(beta),
            &<Self as AutodiffBackend>::inner(stats),
            eps,
            act,
        );
        let x = activation::contiguous(<Self as AutodiffBackend>::inner(x));
        let out = batch_norm_train_flex(&x, &p);
        match prep {
            OpsKind::Tracked(prep) => prep.finish((x, p), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
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
        let prep = RmsNormBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful();
        let x = activation::contiguous(<Self as AutodiffBackend>::inner(x));
        let weight = activation::contiguous(<Self as AutodiffBackend>::inner(weight));
        let out = rms_norm_flex(&x, &weight, eps);
        match prep {
            OpsKind::Tracked(prep) => prep.finish((x, weight, eps), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let prep = LayerNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let x = activation::contiguous(<Self as AutodiffBackend>::inner(x));
        let gamma = activation::contiguous(<Self as AutodiffBackend>::inner(gamma));
        let beta = <Self as AutodiffBackend>::inner(beta);
        let out = layer_norm_flex(&x, &gamma, beta, eps);
        match prep {
            OpsKind::Tracked(prep) => prep.finish((x, gamma, eps), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
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

/// `conv.forward(x)`: on the CPU in f32, a bias-free 1x1 convolution
/// (stride 1, no padding, one group) or depthwise convolution (one filter
/// per channel, square, any stride and padding, no dilation) through
/// [`conv`]; burn's convolution otherwise.
pub fn conv2d(conv: &burn::nn::conv::Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [_, cin, h, w] = x.dims();
    let [cout, per_group, kh, kw] = conv.weight.dims();
    let cpu = x.dtype() == DType::F32 && conv.weight.dtype() == DType::F32 && is_flex(&x.device());
    if !cpu || conv.bias.is_some() || conv.dilation != [1, 1] || cin != per_group * conv.groups {
        return conv.forward(x);
    }
    use burn::nn::PaddingConfig2d;
    let ((top, bottom), (left, right)) = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => ((top, bottom), (left, right)),
        PaddingConfig2d::Valid => ((0, 0), (0, 0)),
        // burn's "same" (possibly asymmetric) padding: its own convolution
        PaddingConfig2d::Same => return conv.forward(x),
    };
    let pointwise = [kh, kw] == [1, 1]
        && conv.stride == [1, 1]
        && [top, bottom, left, right] == [0; 4]
        && conv.groups == 1;
    let stride = conv.stride[0];
    let depthwise = conv.groups == cin
        && cout == cin
        && per_group == 1
        && kh == kw
        && conv.stride[1] == stride
        && stride > 0
        && h + top + bottom >= kh
        && w + left + right >= kw;
    if pointwise {
        return Tensor::from_dispatch(<Dispatch as CpuKernels>::pointwise_conv(
            x.into_dispatch(),
            conv.weight.val().into_dispatch(),
        ));
    }
    if depthwise {
        let out_h = (h + top + bottom - kh) / stride + 1;
        let out_w = (w + left + right - kw) / stride + 1;
        return Tensor::from_dispatch(<Dispatch as CpuKernels>::depthwise_conv(
            x.into_dispatch(),
            conv.weight.val().into_dispatch(),
            stride,
            top,
            left,
            out_h,
            out_w,
        ));
    }
    conv.forward(x)
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
}
