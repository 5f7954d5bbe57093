use super::*;

/// References in f64 through libm.
fn reference(kind: Kind, x: f64) -> (f64, f64) {
    match kind {
        Kind::Gelu => {
            let cdf = 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            (x * cdf, cdf + x * pdf)
        }
        Kind::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let u = c * (x + 0.044715 * x * x * x);
            let t = u.tanh();
            let du = c * (1.0 + 3.0 * 0.044715 * x * x);
            (
                0.5 * x * (1.0 + t),
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du,
            )
        }
        Kind::Silu => {
            let s = 1.0 / (1.0 + (-x).exp());
            (x * s, s * (1.0 + x * (1.0 - s)))
        }
    }
}

/// Every 1/1024 over [-12, 12].
fn grid() -> Vec<f32> {
    (-12 * 1024..=12 * 1024)
        .map(|i| i as f32 / 1024.0)
        .collect()
}

fn worst(kind: Kind) -> (f64, f64) {
    let xs = grid();
    let mut fwd = xs.clone();
    forward_slice(kind, &mut fwd);
    let mut bwd = vec![1.0f32; xs.len()];
    backward_slice(kind, &xs, &mut bwd);
    let (mut ef, mut eb) = (0f64, 0f64);
    for ((&x, &f), &b) in xs.iter().zip(&fwd).zip(&bwd) {
        let (rf, rb) = reference(kind, x as f64);
        // absolute error where the value is below 1, relative above
        ef = ef.max((f as f64 - rf).abs() / rf.abs().max(1.0));
        eb = eb.max((b as f64 - rb).abs() / rb.abs().max(1.0));
    }
    eprintln!("{kind:?}: forward {ef:e}, backward {eb:e}");
    (ef, eb)
}

#[test]
fn gelu_matches_libm() {
    let (f, b) = worst(Kind::Gelu);
    assert!(f < 3e-7, "forward {f:e}");
    assert!(b < 3e-7, "backward {b:e}");
}

#[test]
fn gelu_tanh_matches_libm() {
    let (f, b) = worst(Kind::GeluTanh);
    assert!(f < 2e-7, "forward {f:e}");
    assert!(b < 2e-7, "backward {b:e}");
}

#[test]
fn silu_matches_libm() {
    let (f, b) = worst(Kind::Silu);
    assert!(f < 2e-7, "forward {f:e}");
    assert!(b < 2.5e-7, "backward {b:e}");
}

#[test]
fn infinities_and_nan() {
    for kind in [Kind::Gelu, Kind::GeluTanh, Kind::Silu] {
        let mut v = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -100.0, 100.0];
        forward_slice(kind, &mut v);
        assert_eq!(v[0], f32::INFINITY, "{kind:?}");
        assert!(v[2].is_nan(), "{kind:?}");
        assert_eq!(v[3], 0.0, "{kind:?}");
        assert_eq!(v[4], 100.0, "{kind:?}");
        let xs = [f32::NAN, -100.0, 100.0];
        let mut g = [1.0f32; 3];
        backward_slice(kind, &xs, &mut g);
        assert!(g[0].is_nan(), "{kind:?}");
        assert_eq!(g[1], 0.0, "{kind:?}");
        assert_eq!(g[2], 1.0, "{kind:?}");
    }
}

#[test]
fn split_over_threads_does_not_change_bits() {
    let xs: Vec<f32> = (0..3 * CHUNK + 17)
        .map(|i| (i as f32 * 0.37).sin() * 6.0)
        .collect();
    let mut whole = xs.clone();
    forward_slice(Kind::Gelu, &mut whole);
    let one_by_one: Vec<f32> = xs.iter().map(|&x| forward_one(Kind::Gelu, x)).collect();
    assert_eq!(whole, one_by_one);
}
