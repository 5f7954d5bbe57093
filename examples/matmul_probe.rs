//! Throughput of the CPU backend's matrix product on the shapes of a
//! MiniLM training step (batch 16 x 128 tokens): the ceiling any BERT step
//! on this backend can reach. `cargo run --example matmul_probe`.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};

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
        let _ = a.clone().matmul(b.clone()).into_data();
        let reps = 10;
        let t = Instant::now();
        for _ in 0..reps {
            let _ = a.clone().matmul(b.clone()).into_data();
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "{m}x{k} @ {k}x{n}: {:.1} ms, {:.1} GFLOP/s",
            s * 1e3,
            2.0 * (m * k * n) as f64 / s / 1e9
        );
    }
    let (b, h, s, d) = (16, 12, 128, 32);
    let q = Tensor::<4>::random([b, h, s, d], Distribution::Default, &device);
    let kt = Tensor::<4>::random([b, h, d, s], Distribution::Default, &device);
    let _ = q.clone().matmul(kt.clone()).into_data();
    let t = Instant::now();
    for _ in 0..10 {
        let _ = q.clone().matmul(kt.clone()).into_data();
    }
    let sec = t.elapsed().as_secs_f64() / 10.0;
    println!(
        "attention scores {b}x{h}x{s}x{d}: {:.1} ms, {:.1} GFLOP/s",
        sec * 1e3,
        2.0 * (b * h * s * s * d) as f64 / sec / 1e9
    );
}
