//! Throughput of the CPU matrix product on the shapes of a MiniLM training
//! step (batch 16 x 128 tokens), burn's product beside headstart's
//! (`kernels::matmul`, the same gemm with the output written once): the
//! ceiling any BERT step on this backend can reach.
//! `cargo run --release --example matmul_probe`.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use headstart::kernels;

/// Seconds per call of `f`, the best of three rounds of ten calls.
fn seconds(mut f: impl FnMut()) -> f64 {
    f();
    (0..3)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..10 {
                f();
            }
            t.elapsed().as_secs_f64() / 10.0
        })
        .fold(f64::INFINITY, f64::min)
}

fn report<const D: usize>(name: &str, flop: f64, a: Tensor<D>, b: Tensor<D>) {
    #[allow(clippy::disallowed_methods)]
    let burn = seconds(|| drop(a.clone().matmul(b.clone())));
    let ours = seconds(|| drop(kernels::matmul(a.clone(), b.clone())));
    println!(
        "{name}: burn {:.2} ms ({:.1} GFLOP/s), headstart {:.2} ms ({:.1} GFLOP/s)",
        burn * 1e3,
        flop / burn / 1e9,
        ours * 1e3,
        flop / ours / 1e9
    );
}

fn main() {
    let device = Device::default();
    for (m, k, n) in [
        (2048, 384, 384),
        (2048, 384, 1536),
        (2048, 1536, 384),
        (384, 2048, 1536),
    ] {
        let a = Tensor::<2>::random([m, k], Distribution::Default, &device);
        let b = Tensor::<2>::random([k, n], Distribution::Default, &device);
        report(
            &format!("{m}x{k} @ {k}x{n}"),
            2.0 * (m * k * n) as f64,
            a,
            b,
        );
    }
    let (b, h, s, d) = (16, 12, 128, 32);
    let q = Tensor::<4>::random([b, h, s, d], Distribution::Default, &device);
    let kt = Tensor::<4>::random([b, h, d, s], Distribution::Default, &device);
    report(
        &format!("attention scores {b}x{h}x{s}x{d}"),
        2.0 * (b * h * s * s * d) as f64,
        q,
        kt,
    );
}
