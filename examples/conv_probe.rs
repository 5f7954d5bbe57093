//! Throughput of headstart's dense convolution (`kernels::conv`) on each
//! 3x3 layer of VGG16 at 224 px, batch 8: the forward, the input gradient
//! and the filter gradient apart, in GFLOP/s, so a step's time can be laid
//! to the layers and phases that lose it. `scripts/conv_probe_pytorch.py`
//! times the same convolutions in PyTorch.
//! `cargo run --release --example conv_probe [BATCH]`.
//!
//! It runs on the `headstart` binary's allocator (mimalloc, freed memory
//! kept), as a training step does: on glibc's, each call's fresh output
//! of up to 100 MB is faulted in again, which PyTorch's caching allocator
//! does not pay either.

#[cfg(feature = "mimalloc")]
#[path = "../src/alloc.rs"]
mod alloc;

use std::time::Instant;

use headstart::kernels::conv::{Window, dense_backward, dense_forward};

/// Seconds per call of `f`, the best of three calls after one warm-up.
fn seconds(mut f: impl FnMut()) -> f64 {
    f();
    (0..3)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    #[cfg(feature = "mimalloc")]
    alloc::keep_freed_memory();
    let batch: usize = std::env::args()
        .nth(1)
        .map(|b| b.parse().expect("BATCH is a whole number"))
        .unwrap_or(8);
    // (input side, channels in, channels out) of VGG16's 3x3 convolutions,
    // each distinct geometry once
    let layers = [
        (224, 3, 64),
        (224, 64, 64),
        (112, 64, 128),
        (112, 128, 128),
        (56, 128, 256),
        (56, 256, 256),
        (28, 256, 512),
        (28, 512, 512),
        (14, 512, 512),
    ];
    println!("layer | forward GFLOP/s | input grad | filter grad | ms fwd/dx/dw");
    for (side, cin, cout) in layers {
        let d = Window {
            k: 3,
            stride: 1,
            pad: [1, 1],
            input: [side, side],
            output: [side, side],
        };
        let x: Vec<f32> = (0..batch * cin * side * side)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let w: Vec<f32> = (0..cout * cin * 9)
            .map(|i| ((i * 104_729) % 997) as f32 / 997.0 - 0.5)
            .collect();
        let g: Vec<f32> = (0..batch * cout * side * side)
            .map(|i| ((i * 31) % 101) as f32 / 101.0 - 0.5)
            .collect();
        let shape = [batch, cin, cout];
        let flop = 2.0 * (batch * cout * cin * 9 * side * side) as f64;
        let fwd = seconds(|| drop(dense_forward(&x, &w, shape, &d)));
        let dx = seconds(|| drop(dense_backward(&x, &w, &g, shape, &d, [true, false])));
        let dw = seconds(|| drop(dense_backward(&x, &w, &g, shape, &d, [false, true])));
        println!(
            "{side}px {cin}->{cout} | {:.1} | {:.1} | {:.1} | {:.1}/{:.1}/{:.1}",
            flop / fwd / 1e9,
            flop / dx / 1e9,
            flop / dw / 1e9,
            fwd * 1e3,
            dx * 1e3,
            dw * 1e3
        );
    }
}
