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
