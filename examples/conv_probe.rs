//! Throughput of headstart's dense convolution (`kernels::conv`) on each
//! 3x3 layer of VGG16 at 224 px (or, with `inception`, Inception v3's 1x7,
//! 7x1, 1x3 and 3x1 layers at 299 px; with `stem`, its stem's and 35 px
//! blocks' 3x3 and 5x5 layers and its two stride-2 reductions; with
//! `resnet`, ResNet50's 3x3 layers at 224 px, stride 1 and 2), batch 8:
//! the forward, the input
//! gradient and the filter gradient apart, in GFLOP/s, so a step's time
//! can be laid to the layers and phases that lose it.
//! `scripts/conv_probe_pytorch.py` times the same convolutions in PyTorch.
//! `cargo run --release --example conv_probe [BATCH] [vgg16|inception|stem|resnet]`.
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
    // (input side, channels in, channels out, filter rows, columns,
    // stride), each distinct geometry once, padded by half the filter
    let vgg16 = [
        (224, 3, 64, 3, 3, 1),
        (224, 64, 64, 3, 3, 1),
        (112, 64, 128, 3, 3, 1),
        (112, 128, 128, 3, 3, 1),
        (56, 128, 256, 3, 3, 1),
        (56, 256, 256, 3, 3, 1),
        (28, 256, 512, 3, 3, 1),
        (28, 512, 512, 3, 3, 1),
        (14, 512, 512, 3, 3, 1),
    ];
    let inception = [
        (17, 128, 128, 1, 7, 1),
        (17, 128, 128, 7, 1, 1),
        (17, 160, 192, 7, 1, 1),
        (17, 192, 192, 1, 7, 1),
        (8, 384, 384, 1, 3, 1),
        (8, 384, 384, 3, 1, 1),
        (8, 448, 384, 3, 3, 1),
    ];
    let resnet = [
        (56, 64, 64, 3, 3, 1),
        (56, 128, 128, 3, 3, 2),
        (28, 128, 128, 3, 3, 1),
        (28, 256, 256, 3, 3, 2),
        (14, 256, 256, 3, 3, 1),
        (14, 512, 512, 3, 3, 2),
        (7, 512, 512, 3, 3, 1),
    ];
    let stem = [
        (149, 32, 32, 3, 3, 1),
        (147, 32, 64, 3, 3, 1),
        (73, 80, 192, 3, 3, 1),
        (35, 48, 64, 5, 5, 1),
        (35, 64, 96, 3, 3, 1),
        (35, 96, 96, 3, 3, 1),
        (35, 288, 384, 3, 3, 2),
        (17, 192, 320, 3, 3, 2),
    ];
    let layers: &[(usize, usize, usize, usize, usize, usize)] =
        match std::env::args().nth(2).as_deref() {
            None | Some("vgg16") => &vgg16,
            Some("inception") => &inception,
            Some("resnet") => &resnet,
            Some("stem") => &stem,
            Some(other) => panic!("unknown layer set {other:?}: vgg16, inception, stem or resnet"),
        };
    println!("layer | forward GFLOP/s | input grad | filter grad | ms fwd/dx/dw");
    for &(side, cin, cout, kh, kw, stride) in layers {
        let (pad, out) = ([kh / 2, kw / 2], (side - 1) / stride + 1);
        let d = Window {
            k: [kh, kw],
            stride,
            pad,
            input: [side, side],
            output: [out, out],
        };
        let x: Vec<f32> = (0..batch * cin * side * side)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let w: Vec<f32> = (0..cout * cin * kh * kw)
            .map(|i| ((i * 104_729) % 997) as f32 / 997.0 - 0.5)
            .collect();
        let g: Vec<f32> = (0..batch * cout * out * out)
            .map(|i| ((i * 31) % 101) as f32 / 101.0 - 0.5)
            .collect();
        let shape = [batch, cin, cout];
        let flop = 2.0 * (batch * cout * cin * kh * kw * out * out) as f64;
        let fwd = seconds(|| drop(dense_forward(&x, &w, shape, &d)));
        let dx = seconds(|| drop(dense_backward(&x, &w, &g, shape, &d, [true, false])));
        let dw = seconds(|| drop(dense_backward(&x, &w, &g, shape, &d, [false, true])));
        println!(
            "{side}px {cin}->{cout} {kh}x{kw}/{stride} | {:.1} | {:.1} | {:.1} | {:.1}/{:.1}/{:.1}",
            flop / fwd / 1e9,
            flop / dx / 1e9,
            flop / dw / 1e9,
            fwd * 1e3,
            dx * 1e3,
            dw * 1e3
        );
    }
}
