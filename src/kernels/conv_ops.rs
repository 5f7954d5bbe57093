//! The convolutions' ops on Flex tensors and under autodiff: the glue
//! between [`super::CpuKernels`] and the kernels of [`super::conv`], the
//! backward, and [`conv2d`], which picks them for a layer.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, DType, Dispatch, Flex};
use burn::tensor::Tensor;

use super::{CpuKernels, activation, conv, is_flex, matmul, register_each};

type Ad<C> = Autodiff<Flex, C>;

/// The four dimensions of a rank-4 tensor.
fn dims4(t: &FlexTensor) -> [usize; 4] {
    let shape = t.layout().shape();
    assert_eq!(shape.num_dims(), 4, "conv: a rank-4 tensor, got {shape:?}");
    [shape[0], shape[1], shape[2], shape[3]]
}

/// [`conv::pointwise_forward`] of contiguous Flex f32 tensors.
pub(super) fn pointwise_flex(x: &FlexTensor, w: &FlexTensor) -> FlexTensor {
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

/// Whether filters of shape `w` on `c` channels are depthwise (one per
/// channel); otherwise dense.
fn is_depthwise(c: usize, w: [usize; 4]) -> bool {
    w[1] == 1 && w[0] == c
}

/// A depthwise or dense convolution's geometry from its input and filters.
pub(super) fn window_geometry(
    x: &FlexTensor,
    w: &FlexTensor,
    stride: usize,
    pad: [usize; 2],
    output: [usize; 2],
) -> conv::Window {
    let [_, c, h, wd] = dims4(x);
    let [wc, one, kh, kw] = dims4(w);
    assert!(
        is_depthwise(c, [wc, one, kh, kw]) || one == c,
        "conv: filters {:?} for {c} channels (one per channel or {c} per output)",
        [wc, one, kh, kw]
    );
    conv::Window {
        k: [kh, kw],
        stride,
        pad,
        input: [h, wd],
        output,
    }
}

/// [`conv::depthwise_forward`] or [`conv::dense_forward`] of contiguous
/// Flex f32 tensors.
pub(super) fn window_flex(x: &FlexTensor, w: &FlexTensor, d: &conv::Window) -> FlexTensor {
    let [batch, c, h, wd] = dims4(x);
    let wdims = dims4(w);
    let (xs, ws) = (
        &x.storage::<f32>()[..batch * c * h * wd],
        &w.storage::<f32>()[..wdims.iter().product::<usize>()],
    );
    let (y, cout) = if is_depthwise(c, wdims) {
        (conv::depthwise_forward(xs, ws, c, d), c)
    } else {
        (
            conv::dense_forward(xs, ws, [batch, c, wdims[0]], d),
            wdims[0],
        )
    };
    matmul::tensor(y, vec![batch, cout, d.output[0], d.output[1]])
}

/// [`conv::depthwise_forward_affine`] of contiguous Flex f32 tensors.
pub(super) fn depthwise_affine_flex(
    x: &FlexTensor,
    w: &FlexTensor,
    scale: &FlexTensor,
    shift: &FlexTensor,
    d: &conv::Window,
    act: super::batch_norm::Act,
) -> FlexTensor {
    let [batch, c, h, wd] = dims4(x);
    let (scale, shift) = (
        activation::contiguous(scale.clone()),
        activation::contiguous(shift.clone()),
    );
    let y = conv::depthwise_forward_affine(
        &x.storage::<f32>()[..batch * c * h * wd],
        &w.storage::<f32>()[..c * d.taps()],
        c,
        d,
        Some((
            &scale.storage::<f32>()[..c],
            &shift.storage::<f32>()[..c],
            act,
        )),
    );
    matmul::tensor(y, vec![batch, c, d.output[0], d.output[1]])
}

/// The backward of [`CpuKernels::pointwise_conv`] and
/// [`CpuKernels::window_conv`] (with its geometry): keeps the input and
/// the filters.
#[derive(Debug)]
struct ConvBackward(Option<conv::Window>);

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
        let wdims = dims4(&w);
        let cout = wdims[0];
        let (dx, dw) = match &self.0 {
            Some(d) if is_depthwise(cin, wdims) => {
                conv::depthwise_backward(xs, ws, gs, cin, d, want_dx, want_dw)
            }
            Some(d) => conv::dense_backward(xs, ws, gs, [batch, cin, cout], d, [want_dx, want_dw]),
            None => conv::pointwise_backward(xs, ws, gs, batch, cin, cout, want_dx, want_dw),
        };
        let outs = [
            dx.map(|v| matmul::tensor(v, vec![batch, cin, h, wd])),
            dw.map(|v| activation::from_vec(v, &w)),
        ];
        register_each(grads, ops.parents.map(|p| p.map(|n| n.id)), outs);
    }
}

/// A convolution under autodiff: `forward` on the inner tensors, with
/// [`ConvBackward`] of the `window` geometry (none: pointwise) when tracked.
pub(super) fn tracked_conv<C: CheckpointStrategy>(
    x: FloatTensor<Ad<C>>,
    w: FloatTensor<Ad<C>>,
    window: Option<(usize, [usize; 2], [usize; 2])>,
) -> FloatTensor<Ad<C>> {
    let x_inner = activation::contiguous(<Ad<C> as AutodiffBackend>::inner(x.clone()));
    let w_inner = activation::contiguous(<Ad<C> as AutodiffBackend>::inner(w.clone()));
    let geometry =
        window.map(|(stride, pad, out)| window_geometry(&x_inner, &w_inner, stride, pad, out));
    let prep = ConvBackward(geometry)
        .prepare::<C>([x.node(), w.node()])
        .compute_bound()
        .stateful();
    let out = match &geometry {
        Some(d) => window_flex(&x_inner, &w_inner, d),
        None => pointwise_flex(&x_inner, &w_inner),
    };
    match prep {
        OpsKind::Tracked(prep) => prep.finish((x_inner, w_inner), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// How [`conv2d`] runs a layer on its input.
enum Route {
    Pointwise,
    /// A depthwise (one filter per channel) or dense (one group) kh x kw
    /// convolution.
    Window {
        depthwise: bool,
        stride: usize,
        pad: [usize; 2],
        out: [usize; 2],
    },
    /// burn's convolution.
    Burn,
}

/// The route of `conv` for an input of `x`'s shape, device and dtype.
fn route(conv: &burn::nn::conv::Conv2d, x: &Tensor<4>) -> Route {
    let [_, cin, h, w] = x.dims();
    let [cout, per_group, kh, kw] = conv.weight.dims();
    let cpu = x.dtype() == DType::F32 && conv.weight.dtype() == DType::F32 && is_flex(&x.device());
    if !cpu || conv.dilation != [1, 1] || cin != per_group * conv.groups {
        return Route::Burn;
    }
    // a bias is added after a dense convolution; the others take none
    let bias = conv.bias.is_some();
    use burn::nn::PaddingConfig2d;
    let ((top, bottom), (left, right)) = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => ((top, bottom), (left, right)),
        PaddingConfig2d::Valid => ((0, 0), (0, 0)),
        // burn's "same" (possibly asymmetric) padding: its own convolution
        PaddingConfig2d::Same => return Route::Burn,
    };
    let stride = conv.stride[0];
    if [kh, kw] == [1, 1]
        && !bias
        && conv.stride == [1, 1]
        && [top, bottom, left, right] == [0; 4]
        && conv.groups == 1
    {
        Route::Pointwise
    } else if conv.stride[1] == stride
        && stride > 0
        && h + top + bottom >= kh
        && w + left + right >= kw
    {
        let out = [
            (h + top + bottom - kh) / stride + 1,
            (w + left + right - kw) / stride + 1,
        ];
        let depthwise = conv.groups == cin && cout == cin && per_group == 1 && !bias;
        if depthwise || conv.groups == 1 {
            Route::Window {
                depthwise,
                stride,
                pad: [top, left],
                out,
            }
        } else {
            Route::Burn
        }
    } else {
        Route::Burn
    }
}

/// `conv.forward(x)`: on the CPU in f32, a bias-free 1x1 convolution
/// (stride 1, no padding, one group), a depthwise convolution (one filter
/// per channel, any kh x kw, stride (the same along both axes) and
/// padding, no dilation) or a dense one (one group, no dilation; its bias,
/// if any, added after) through [`conv`]; burn's convolution otherwise.
#[allow(clippy::disallowed_methods)] // burn's convolution for the routes this module does not take
pub fn conv2d(conv: &burn::nn::conv::Conv2d, x: Tensor<4>) -> Tensor<4> {
    match route(conv, &x) {
        Route::Pointwise => Tensor::from_dispatch(<Dispatch as CpuKernels>::pointwise_conv(
            x.into_dispatch(),
            conv.weight.val().into_dispatch(),
        )),
        Route::Window {
            stride, pad, out, ..
        } => {
            let y = Tensor::from_dispatch(<Dispatch as CpuKernels>::window_conv(
                x.into_dispatch(),
                conv.weight.val().into_dispatch(),
                stride,
                pad[0],
                pad[1],
                out[0],
                out[1],
            ));
            match &conv.bias {
                Some(b) => y + b.val().reshape([1, -1, 1, 1]),
                None => y,
            }
        }
        Route::Burn => conv.forward(x),
    }
}

/// `act(bn(conv(x)))`: a depthwise convolution whose BatchNorm runs on its
/// running statistics with parameters that take no gradient (a frozen or
/// evaluated layer) maps each output plane through the BatchNorm and the
/// activation as soon as the plane is computed
/// ([`CpuKernels::depthwise_conv_affine`]); otherwise [`conv2d`] then
/// [`super::batch_norm::apply`].
pub fn conv2d_bn(
    conv: &burn::nn::conv::Conv2d,
    bn: &burn::nn::BatchNorm,
    x: Tensor<4>,
    act: super::batch_norm::Act,
) -> Tensor<4> {
    if let Route::Window {
        depthwise: true,
        stride,
        pad,
        out,
    } = route(conv, &x)
        && let Some((scale, shift)) = super::batch_norm::inference_affine(bn, &x)
    {
        return Tensor::from_dispatch(<Dispatch as CpuKernels>::depthwise_conv_affine(
            x.into_dispatch(),
            conv.weight.val().into_dispatch(),
            scale.into_dispatch(),
            shift.into_dispatch(),
            stride,
            pad,
            out,
            act.code(),
        ));
    }
    super::batch_norm::apply(bn, conv2d(conv, x), act)
}
