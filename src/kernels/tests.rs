use super::*;
use burn::tensor::activation as burn_act;

fn sample(device: &Device) -> Tensor<2> {
    let values: Vec<f32> = (0..40 * 700)
        .map(|i| ((i as f32) * 0.013).sin() * 5.0)
        .collect();
    Tensor::from_data(burn::tensor::TensorData::new(values, [40, 700]), device)
}

fn max_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
    (a - b).abs().max().into_scalar()
}

/// Largest differences of the forward and of the input gradient between
/// `ours` and `theirs`, through autodiff, with a non-uniform upstream
/// gradient, on `sample` or (`transposed`) its non-contiguous transpose.
fn compare_through_autodiff(
    ours: impl Fn(Tensor<2>) -> Tensor<2>,
    theirs: impl Fn(Tensor<2>) -> Tensor<2>,
    transposed: bool,
) -> (f32, f32) {
    let device = Device::flex().autodiff();
    let layout = |t: Tensor<2>| if transposed { t.transpose() } else { t };
    let base = layout(sample(&device));
    let ours_in = base.clone().detach().require_grad();
    let theirs_in = base.detach().require_grad();
    let a = ours(ours_in.clone());
    let b = theirs(theirs_in.clone());
    let forward = max_diff(a.clone().inner(), b.clone().inner());
    let weights = layout(sample(&device).detach());
    let g_ours = (a * weights.clone()).sum().backward();
    let g_theirs = (b * weights).sum().backward();
    let backward = max_diff(
        ours_in.grad(&g_ours).unwrap(),
        theirs_in.grad(&g_theirs).unwrap(),
    );
    (forward, backward)
}

/// Each activation kernel against burn's own function.
#[test]
fn kernels_match_burn_through_autodiff() {
    type Reference = fn(Tensor<2>) -> Tensor<2>;
    let cases: [(Kind, Reference); 3] = [
        (Kind::Gelu, burn_act::gelu),
        (Kind::GeluTanh, burn_act::gelu_approximate),
        (Kind::Silu, burn_act::silu),
    ];
    for (kind, theirs) in cases {
        for transposed in [false, true] {
            let (f, b) = compare_through_autodiff(|x| activation(kind, x), theirs, transposed);
            assert!(f < 1e-6, "{kind:?} transposed={transposed}: forward {f}");
            assert!(b < 5e-6, "{kind:?} transposed={transposed}: gradient {b}");
        }
    }
}

/// Without autodiff the kernel runs in place on a uniquely held tensor and
/// leaves a shared one alone.
#[test]
fn inference_keeps_shared_inputs() {
    let device = Device::flex();
    let x = sample(&device);
    let kept = x.clone();
    let y = activation(Kind::Gelu, x);
    assert!(max_diff(y, burn_act::gelu(kept.clone())) < 1e-6);
    assert_eq!(kept.into_data(), sample(&device).into_data());
}

/// The forward multiplies by the mask and the backward by the same mask,
/// drawn again.
#[test]
fn dropout_gradient_is_the_forward_mask() {
    let device = Device::flex().autodiff();
    let x = sample(&device).require_grad();
    let y = dropout_tensor(x.clone(), 0.7, 3, 4);
    let grads = (y.clone() * 2.0).sum().backward();
    let grad = x
        .grad(&grads)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let mask = dropout::mask(40 * 700, 0.7, 3, 4);
    let twice: Vec<f32> = mask.iter().map(|m| 2.0 * m).collect();
    assert_eq!(grad, twice);
    let xs = sample(&Device::flex())
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let ys = y.inner().into_data().try_to_vec::<f32>().unwrap();
    let expected: Vec<f32> = xs.iter().zip(&mask).map(|(x, m)| x * m).collect();
    assert_eq!(ys, expected);
    let dropped = mask.iter().filter(|&&m| m == 0.0).count() as f64 / mask.len() as f64;
    assert!((dropped - 0.3).abs() < 0.02, "{dropped}");
}

/// The softmax kernel against burn's `softmax` over the last dimension.
#[test]
fn softmax_matches_burn_through_autodiff() {
    for transposed in [false, true] {
        let theirs = |x: Tensor<2>| burn_act::softmax(x, 1);
        let (f, b) = compare_through_autodiff(softmax_last, theirs, transposed);
        assert!(f < 1e-6, "transposed={transposed}: forward {f}");
        assert!(b < 1e-6, "transposed={transposed}: gradient {b}");
    }
}

/// The fused AdamW pass gives the tensor form's bits (`train::optim` on
/// other backends), over more than one chunk, with decay and clipping.
#[test]
fn adamw_matches_the_tensor_form_bit_for_bit() {
    let device = Device::flex();
    let n = 3 * (1 << 14) + 123;
    let wave = |scale: f32, phase: f32| -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32) * 0.0137 + phase).sin() * scale)
            .collect()
    };
    let tensor =
        |v: Vec<f32>| Tensor::<1>::from_data(burn::tensor::TensorData::new(v, [n]), &device);
    let (p0, g, m0) = (wave(0.5, 0.0), wave(0.01, 1.0), wave(0.001, 2.0));
    let v0: Vec<f32> = wave(1e-4, 3.0).iter().map(|x| x * x).collect();
    let (beta1, beta2, eps, lr, wd, step, clip) =
        (0.9f64, 0.999f64, 1e-8f64, 3e-4f64, 0.01f64, 7, 0.37f64);
    let bc1 = 1.0 - beta1.powi(step);
    let bc2 = 1.0 - beta2.powi(step);
    let decay = 1.0 - lr * wd;
    let hyper = adamw::Hyper {
        grad_scale: clip as f32,
        beta1: beta1 as f32,
        beta2: beta2 as f32,
        one_minus_beta1: (1.0 - beta1) as f32,
        one_minus_beta2: (1.0 - beta2) as f32,
        eps: eps as f32,
        decay: decay as f32,
        sqrt_bc2: bc2.sqrt() as f32,
        step_size: (lr / bc1) as f32,
    };
    let (p, m, v) = adamw_tensors(
        tensor(p0.clone()),
        tensor(g.clone()),
        tensor(m0.clone()),
        tensor(v0.clone()),
        hyper,
    );
    // the tensor form, op for op
    let gs = tensor(g) * clip;
    let m_ref = tensor(m0) * beta1 + gs.clone() * (1.0 - beta1);
    let v_ref = tensor(v0) * beta2 + gs.powi_scalar(2) * (1.0 - beta2);
    let denom = v_ref.clone().sqrt() / bc2.sqrt() + eps;
    let p_ref = tensor(p0) * decay - m_ref.clone() / denom * (lr / bc1);
    for (name, ours, theirs) in [("p", p, p_ref), ("m", m, m_ref), ("v", v, v_ref)] {
        let ours = ours.into_data().try_into_vec::<f32>().unwrap();
        let theirs = theirs.into_data().try_into_vec::<f32>().unwrap();
        let differ = ours
            .iter()
            .zip(&theirs)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(differ, 0, "{name}: {differ} of {n} values differ");
    }
}

fn wave_tensor<const D: usize>(dims: [usize; D], f: f32, device: &Device) -> Tensor<D> {
    let n = dims.iter().product();
    let values = testutil::wave(n, f, 1.0, 0.1);
    Tensor::from_data(burn::tensor::TensorData::new(values, dims), device)
}

fn max_diff_any<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    (a - b).abs().max().into_scalar()
}

/// The linear layer and the products of attention (transposed, strided
/// heads) give burn's values and gradients for every operand, under
/// autodiff and outside it.
#[test]
#[allow(clippy::disallowed_methods)]
fn products_match_burn_through_autodiff() {
    let device = Device::flex().autodiff();
    let x = wave_tensor([3, 40, 24], 0.11, &device);
    let w = wave_tensor([24, 18], 0.37, &device);
    let bias = wave_tensor([18], 0.9, &device);
    let upstream = wave_tensor([3, 40, 18], 0.23, &device).detach();
    let run = |ours: bool, with_bias: bool| {
        let (x, w, bias) = (
            x.clone().detach().require_grad(),
            w.clone().detach().require_grad(),
            bias.clone().detach().require_grad(),
        );
        let b = with_bias.then(|| bias.clone());
        let y = if ours {
            linear(x.clone(), w.clone(), b)
        } else {
            burn::tensor::module::linear(x.clone(), w.clone(), b)
        };
        let grads = (y.clone() * upstream.clone()).sum().backward();
        let db = with_bias.then(|| bias.grad(&grads).unwrap());
        (
            y.inner(),
            x.grad(&grads).unwrap(),
            w.grad(&grads).unwrap(),
            db,
        )
    };
    for with_bias in [true, false] {
        let (y1, dx1, dw1, db1) = run(true, with_bias);
        let (y2, dx2, dw2, db2) = run(false, with_bias);
        assert!(max_diff_any(y1, y2) < 1e-5, "linear forward");
        assert!(max_diff_any(dx1, dx2) < 1e-5, "linear dx");
        assert!(max_diff_any(dw1, dw2) < 1e-4, "linear dw");
        if let (Some(a), Some(b)) = (db1, db2) {
            assert!(max_diff_any(a, b) < 1e-4, "linear bias gradient");
        }
    }

    // heads split from [batch, seq, heads, dim] as attention does
    let split = |t: Tensor<2>| t.reshape([2, 16, 4, 8]).swap_dims(1, 2);
    let q0 = wave_tensor([32, 32], 0.19, &device);
    let k0 = wave_tensor([32, 32], 0.53, &device);
    let up = wave_tensor([2, 4, 16, 16], 0.31, &device).detach();
    let run = |ours: bool| {
        let (q, k) = (
            q0.clone().detach().require_grad(),
            k0.clone().detach().require_grad(),
        );
        let (qh, kt) = (split(q.clone()), split(k.clone()).transpose());
        let s = if ours { matmul(qh, kt) } else { qh.matmul(kt) };
        let grads = (s.clone() * up.clone()).sum().backward();
        (s.inner(), q.grad(&grads).unwrap(), k.grad(&grads).unwrap())
    };
    let (s1, dq1, dk1) = run(true);
    let (s2, dq2, dk2) = run(false);
    assert!(max_diff_any(s1, s2) < 1e-5, "scores");
    assert!(max_diff_any(dq1, dq2) < 1e-5, "query gradient");
    assert!(max_diff_any(dk1, dk2) < 1e-5, "key gradient");

    // outside autodiff, a broadcast burn's product keeps
    let plain = Device::flex();
    let a = wave_tensor([2, 3, 5, 4], 0.7, &plain);
    let b = wave_tensor([2, 1, 4, 6], 0.3, &plain);
    assert!(!matmul::takes(&a.dims(), &b.dims()));
    assert!(max_diff_any(matmul(a.clone(), b.clone()), a.matmul(b)) == 0.0);
}

/// The context product with the heads merged gives the product, transpose
/// and reshape's values and gradients.
#[test]
#[allow(clippy::disallowed_methods)]
fn merged_heads_match_the_transposed_product_through_autodiff() {
    let device = Device::flex().autodiff();
    let p0 = wave_tensor([2, 3, 5, 7], 0.21, &device);
    let v0 = wave_tensor([2, 3, 7, 4], 0.67, &device);
    let up = wave_tensor([2, 5, 12], 0.43, &device).detach();
    let run = |ours: bool| {
        let (p, v) = (
            p0.clone().detach().require_grad(),
            v0.clone().detach().require_grad(),
        );
        // v read through a transpose, as attention's heads are
        let v_view = v.clone().swap_dims(2, 3).swap_dims(2, 3);
        let c = if ours {
            matmul_merge_heads(p.clone(), v_view)
        } else {
            p.clone().matmul(v_view).swap_dims(1, 2).reshape([2, 5, 12])
        };
        let grads = (c.clone() * up.clone()).sum().backward();
        (c.inner(), p.grad(&grads).unwrap(), v.grad(&grads).unwrap())
    };
    let (c1, dp1, dv1) = run(true);
    let (c2, dp2, dv2) = run(false);
    assert_eq!(c1.dims(), [2, 5, 12]);
    assert!(max_diff_any(c1, c2) < 1e-5, "context");
    assert!(max_diff_any(dp1, dp2) < 1e-5, "probability gradient");
    assert!(max_diff_any(dv1, dv2) < 1e-5, "value gradient");
}

/// The targets' log-probabilities and the logits' gradient agree with
/// burn's `log_softmax` and `gather`.
#[test]
fn log_prob_matches_burn_through_autodiff() {
    let device = Device::flex().autodiff();
    let logits = wave_tensor([2, 3, 50], 0.77, &device) * 4.0;
    let ids: Vec<i64> = vec![0, 49, 7, 13, 25, 1];
    let targets = Tensor::<2, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(ids, [2, 3]),
        &device,
    );
    let up = wave_tensor([2, 3], 0.5, &device).detach();
    let run = |ours: bool| {
        let x = logits.clone().detach().require_grad();
        let p = if ours {
            log_prob(x.clone(), targets.clone())
        } else {
            burn::tensor::activation::log_softmax(x.clone(), 2)
                .gather(2, targets.clone().reshape([2, 3, 1]))
                .reshape([2, 3])
        };
        let grads = (p.clone() * up.clone()).sum().backward();
        (p.inner(), x.grad(&grads).unwrap())
    };
    let (p1, g1) = run(true);
    let (p2, g2) = run(false);
    assert!(max_diff_any(p1, p2) < 1e-5, "log-probabilities");
    assert!(max_diff_any(g1, g2) < 1e-6, "logit gradients");
}

/// A BatchNorm in training (batch statistics) with its activation: the
/// output and the gradients of the input, gamma and beta are burn's
/// `batch_norm_train` and activation's; the running mean moves as burn's
/// does and the running variance towards the unbiased batch variance.
#[test]
#[allow(clippy::disallowed_methods)] // burn's BatchNorm is the reference
fn training_batch_norm_matches_burn_through_autodiff() {
    use batch_norm::Act;
    use burn::module::Param;
    use burn::nn::BatchNormConfig;
    let device = Device::flex().autodiff();
    let dims = [4, 3, 5, 6];
    let count = (4 * 5 * 6) as f32;
    for act in [Act::None, Act::Relu, Act::Relu6] {
        // two modules: a clone would share its running statistics
        let layer = || {
            let mut bn = BatchNormConfig::new(3).init(&device);
            bn.gamma = Param::from_tensor(Tensor::from_floats([1.5, -0.7, 9.0], &device));
            bn.beta = Param::from_tensor(Tensor::from_floats([0.2, 1.0, 3.0], &device));
            bn
        };
        let (bn, theirs_bn) = (layer(), layer());
        let x = wave_tensor(dims, 0.37, &device) * 3.0 + 0.5;
        let ours_in = x.clone().detach().require_grad();
        let theirs_in = x.detach().require_grad();
        let ours = batch_norm::apply(&bn, ours_in.clone(), act);
        let plain = theirs_bn.forward(theirs_in.clone());
        let theirs = match act {
            Act::None => plain,
            Act::Relu => burn_act::relu(plain),
            Act::Relu6 => burn_act::relu6(plain),
        };
        let forward = max_diff_any(ours.clone().inner(), theirs.clone().inner());
        assert!(forward < 2e-5, "{act:?}: forward {forward}");
        let weights = wave_tensor(dims, 0.11, &device).detach();
        let g_ours = (ours * weights.clone()).sum().backward();
        let g_theirs = (theirs * weights).sum().backward();
        let dx = max_diff_any(
            ours_in.grad(&g_ours).unwrap(),
            theirs_in.grad(&g_theirs).unwrap(),
        );
        assert!(dx < 2e-5, "{act:?}: input gradient {dx}");
        for (name, a, b) in [
            ("gamma", &bn.gamma, &theirs_bn.gamma),
            ("beta", &bn.beta, &theirs_bn.beta),
        ] {
            let d = max_diff_any(a.grad(&g_ours).unwrap(), b.grad(&g_theirs).unwrap());
            assert!(d < 1e-4, "{act:?}: {name} gradient {d}");
        }
        let mean = max_diff_any(
            bn.running_mean.value_sync().inner(),
            theirs_bn.running_mean.value_sync().inner(),
        );
        assert!(mean < 1e-6, "{act:?}: running mean {mean}");
        // burn keeps 0.9 + 0.1 * biased; PyTorch's rule 0.9 + 0.1 * unbiased
        let unbiased =
            (theirs_bn.running_var.value_sync().inner() - 0.9) * (count / (count - 1.0)) + 0.9;
        let var = max_diff_any(bn.running_var.value_sync().inner(), unbiased);
        assert!(var < 1e-5, "{act:?}: running variance {var}");
    }
}

/// The batch statistics and the training backward give the same bits on
/// one thread and on three.
#[test]
fn training_batch_norm_bits_do_not_depend_on_threads() {
    use batch_norm::{Act, batch_stats, train_backward};
    let (plane, channels) = (7 * 7, 5);
    let x = testutil::wave(6 * channels * plane, 0.29, 2.0, 0.3);
    let dy = testutil::wave(x.len(), 0.17, 1.0, -0.1);
    let gamma = [0.9, 1.2, -0.4, 2.0, 0.05];
    let beta = [0.0, 0.5, -1.0, 2.5, 0.1];
    let run = || {
        let (mean, var) = batch_stats(&x, plane, channels);
        let mut dx = dy.clone();
        let (dg, db) = train_backward(
            &x,
            &mut dx,
            plane,
            &gamma,
            &beta,
            &mean,
            &var,
            1e-5,
            Act::Relu6,
            true,
        );
        [mean, var, dx, dg, db]
    };
    let one = testutil::on_threads(1, run);
    let three = testutil::on_threads(3, run);
    for (i, (a, b)) in one.iter().zip(&three).enumerate() {
        let same = a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "output {i} differs between 1 and 3 threads");
    }
}

/// The pointwise, depthwise and rectangular dense convolutions give
/// burn's values and gradients (input and filters) through autodiff, and
/// layers they do not take (grouped, "same" padding) stay burn's.
#[test]
#[allow(clippy::disallowed_methods)] // burn's convolution is the reference
fn convolutions_match_burn_through_autodiff() {
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    let device = Device::flex().autodiff();
    let layers = [
        // pointwise
        Conv2dConfig::new([6, 10], [1, 1]).with_bias(false),
        // depthwise 3x3 stride 1 and 2, 5x5 stride 2 with asymmetric padding
        Conv2dConfig::new([6, 6], [3, 3])
            .with_groups(6)
            .with_bias(false)
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
        Conv2dConfig::new([6, 6], [3, 3])
            .with_groups(6)
            .with_stride([2, 2])
            .with_bias(false)
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
        Conv2dConfig::new([6, 6], [5, 5])
            .with_groups(6)
            .with_stride([2, 2])
            .with_bias(false)
            .with_padding(PaddingConfig2d::Explicit(1, 2, 2, 1)),
        // dense rectangles (Inception's 1x7 and 7x1), biased and not
        Conv2dConfig::new([6, 5], [1, 7]).with_padding(PaddingConfig2d::Explicit(0, 3, 0, 3)),
        Conv2dConfig::new([6, 5], [7, 1])
            .with_bias(false)
            .with_padding(PaddingConfig2d::Explicit(3, 0, 3, 0)),
        // burn's own: grouped, biased, "same"
        Conv2dConfig::new([6, 4], [3, 3]).with_groups(2),
        Conv2dConfig::new([6, 6], [3, 3])
            .with_groups(6)
            .with_padding(PaddingConfig2d::Same),
    ];
    for (i, config) in layers.iter().enumerate() {
        let conv = config.init(&device);
        let x = wave_tensor([3, 6, 9, 11], 0.29, &device);
        let ours_in = x.clone().detach().require_grad();
        let theirs_in = x.detach().require_grad();
        let ours = conv2d(&conv, ours_in.clone());
        let theirs = conv.forward(theirs_in.clone());
        assert_eq!(ours.dims(), theirs.dims(), "layer {i}: shape");
        let forward = max_diff_any(ours.clone().inner(), theirs.clone().inner());
        assert!(forward < 1e-5, "layer {i}: forward {forward}");
        let weights = wave_tensor(theirs.dims(), 0.13, &device).detach();
        let g_ours = (ours * weights.clone()).sum().backward();
        let g_theirs = (theirs * weights).sum().backward();
        let dx = max_diff_any(
            ours_in.grad(&g_ours).unwrap(),
            theirs_in.grad(&g_theirs).unwrap(),
        );
        assert!(dx < 1e-5, "layer {i}: input gradient {dx}");
        let dw = max_diff_any(
            conv.weight.grad(&g_ours).unwrap(),
            conv.weight.grad(&g_theirs).unwrap(),
        );
        assert!(dw < 1e-4, "layer {i}: filter gradient {dw}");
    }
}

/// A depthwise convolution followed by a BatchNorm on its running
/// statistics with frozen parameters (`conv2d_bn`) gives the bits of the
/// two ops one after the other, plain and under autodiff with nothing
/// tracked (the fused pass); with a tracked input it takes the two ops,
/// so the input's gradient is theirs.
#[test]
fn a_frozen_depthwise_convolution_and_batch_norm_fuse_to_the_same_bits() {
    use batch_norm::Act;
    use burn::module::{Module, Param};
    use burn::nn::conv::Conv2dConfig;
    use burn::nn::{BatchNormConfig, PaddingConfig2d};
    for device in [Device::flex(), Device::flex().autodiff()] {
        for stride in [1, 2] {
            let conv = Conv2dConfig::new([6, 6], [3, 3])
                .with_groups(6)
                .with_stride([stride, stride])
                .with_bias(false)
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(&device)
                .no_grad();
            let mut bn = BatchNormConfig::new(6).init(&device);
            bn.gamma = Param::from_tensor(Tensor::from_floats(
                [1.5, -0.7, 9.0, 0.3, 2.0, 1.0],
                &device,
            ));
            bn.beta = Param::from_tensor(Tensor::from_floats(
                [0.2, 1.0, 3.0, -1.0, 0.0, 0.5],
                &device,
            ));
            bn.running_mean = burn::module::RunningState::new(Tensor::from_floats(
                [0.1, -0.2, 0.3, 0.0, 0.5, -0.5],
                &device,
            ));
            bn.running_var = burn::module::RunningState::new(Tensor::from_floats(
                [1.0, 0.5, 2.0, 0.1, 3.0, 1.5],
                &device,
            ));
            let bn = bn.freeze();
            assert!(
                !bn.training.is_enabled(),
                "a frozen BatchNorm runs on its running statistics"
            );
            assert!(batch_norm::inference_affine(&bn, &conv.weight.val()).is_some());
            let x = wave_tensor([3, 6, 9, 11], 0.29, &device) * 2.0;
            let small = wave_tensor([2, 6, 2, 2], 0.41, &device) * 3.0;
            for act in [Act::None, Act::Relu6] {
                let fused = conv2d_bn(&conv, &bn, small.clone(), act);
                let apart = batch_norm::apply(&bn, conv2d(&conv, small.clone()), act);
                assert_eq!(
                    fused.into_data(),
                    apart.into_data(),
                    "2x2 planes, stride {stride}"
                );
            }
            for act in [Act::None, Act::Relu6] {
                let fused = conv2d_bn(&conv, &bn, x.clone(), act);
                let apart = batch_norm::apply(&bn, conv2d(&conv, x.clone()), act);
                let (a, b) = (fused.into_data(), apart.into_data());
                assert_eq!(a, b, "stride {stride}, {act:?}");
            }
            if device.is_autodiff() {
                let ours_in = x.clone().detach().require_grad();
                let theirs_in = x.clone().detach().require_grad();
                let ours = conv2d_bn(&conv, &bn, ours_in.clone(), Act::Relu6);
                let theirs = batch_norm::apply(&bn, conv2d(&conv, theirs_in.clone()), Act::Relu6);
                let g_ours = ours.sum().backward();
                let g_theirs = theirs.sum().backward();
                let d = max_diff_any(
                    ours_in.grad(&g_ours).unwrap(),
                    theirs_in.grad(&g_theirs).unwrap(),
                );
                assert_eq!(d, 0.0, "stride {stride}: input gradient");
            }
        }
    }
}

fn sum_squares_f64<const D: usize>(t: Tensor<D>) -> f64 {
    crate::models::params::host(&sum_squares(t)).1[0] as f64
}

/// A gradient's sum of squares (what clipping by global norm reads) has
/// the same bits on one, two and three threads and from call to call, at
/// a size where burn's own full sum goes parallel (4M values and up), and
/// is the f64 sum to f32 rounding.
#[test]
fn sum_of_squares_is_the_same_on_any_thread_count() {
    let values = testutil::wave(5_000_003, 0.0137, 3.0, -0.2);
    let device = Device::default();
    let t = Tensor::<1>::from_data(
        burn::tensor::TensorData::new(values.clone(), [values.len()]),
        &device,
    );
    let want: f64 = values.iter().map(|&v| v as f64 * v as f64).sum();
    let one = testutil::on_threads(1, || sum_squares_f64(t.clone()));
    assert!((one - want).abs() <= 1e-6 * want, "{one} against {want}");
    for threads in [2, 3, 2, 3] {
        let again = testutil::on_threads(threads, || sum_squares_f64(t.clone()));
        assert_eq!(one.to_bits(), again.to_bits(), "{threads} threads");
    }
    // a non-contiguous (transposed) view reads the same values
    let square = Tensor::<1>::from_data(
        burn::tensor::TensorData::new(values[..1_000_000].to_vec(), [1_000_000]),
        &device,
    )
    .reshape([1000, 1000]);
    let direct = sum_squares_f64(square.clone());
    let transposed = sum_squares_f64(square.transpose());
    assert!((direct - transposed).abs() <= 1e-6 * direct);
}
