#!/usr/bin/env python3
"""PyTorch side of `cargo run --release --example conv_probe`: VGG16's 3x3
convolutions at 224 px (or, with `--layers inception`, Inception v3's 1x7,
7x1, 1x3 and 3x1 ones at 299 px; with `--layers stem`, its stem's and 35 px
blocks' 3x3 and 5x5 ones and its two stride-2 reductions; with `--layers
resnet`, ResNet50's 3x3 ones at stride 1 and 2), each distinct geometry once, the forward, the input
gradient and the filter gradient timed apart, best of three calls after a
warm-up, in GFLOP/s (2 FLOPs per multiply-add, the same count as the Rust
probe).

Versions: pip install -r scripts/requirements-vision.txt
Usage: python scripts/conv_probe_pytorch.py [BATCH] [--threads 2] [--layers vgg16|inception|stem|resnet]
"""

import argparse
import time

import torch
import torch.nn.functional as F

# (side, channels in, channels out, filter rows, columns, stride), padded by half the filter
LAYERS = {
    "vgg16": [
        (224, 3, 64, 3, 3, 1),
        (224, 64, 64, 3, 3, 1),
        (112, 64, 128, 3, 3, 1),
        (112, 128, 128, 3, 3, 1),
        (56, 128, 256, 3, 3, 1),
        (56, 256, 256, 3, 3, 1),
        (28, 256, 512, 3, 3, 1),
        (28, 512, 512, 3, 3, 1),
        (14, 512, 512, 3, 3, 1),
    ],
    "inception": [
        (17, 128, 128, 1, 7, 1),
        (17, 128, 128, 7, 1, 1),
        (17, 160, 192, 7, 1, 1),
        (17, 192, 192, 1, 7, 1),
        (8, 384, 384, 1, 3, 1),
        (8, 384, 384, 3, 1, 1),
        (8, 448, 384, 3, 3, 1),
    ],
    "resnet": [
        (56, 64, 64, 3, 3, 1),
        (56, 128, 128, 3, 3, 2),
        (28, 128, 128, 3, 3, 1),
        (28, 256, 256, 3, 3, 2),
        (14, 256, 256, 3, 3, 1),
        (14, 512, 512, 3, 3, 2),
        (7, 512, 512, 3, 3, 1),
    ],
    "stem": [
        (149, 32, 32, 3, 3, 1),
        (147, 32, 64, 3, 3, 1),
        (73, 80, 192, 3, 3, 1),
        (35, 48, 64, 5, 5, 1),
        (35, 64, 96, 3, 3, 1),
        (35, 96, 96, 3, 3, 1),
        (35, 288, 384, 3, 3, 2),
        (17, 192, 320, 3, 3, 2),
    ],
}


def seconds(f):
    f()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("batch", nargs="?", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", choices=sorted(LAYERS), default="vgg16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b = args.batch
    print("layer | forward GFLOP/s | input grad | filter grad | ms fwd/dx/dw")
    with torch.no_grad():
        for side, cin, cout, kh, kw, stride in LAYERS[args.layers]:
            pad, out = (kh // 2, kw // 2), (side - 1) // stride + 1
            x = torch.randn(b, cin, side, side)
            w = torch.randn(cout, cin, kh, kw)
            g = torch.randn(b, cout, out, out)
            flop = 2.0 * b * cout * cin * kh * kw * out * out
            fwd = seconds(lambda: F.conv2d(x, w, padding=pad, stride=stride))
            dx = seconds(
                lambda: torch.nn.grad.conv2d_input(x.shape, w, g, padding=pad, stride=stride)
            )
            dw = seconds(
                lambda: torch.nn.grad.conv2d_weight(x, w.shape, g, padding=pad, stride=stride)
            )
            print(
                f"{side}px {cin}->{cout} {kh}x{kw}/{stride} | {flop / fwd / 1e9:.1f} | {flop / dx / 1e9:.1f} | "
                f"{flop / dw / 1e9:.1f} | {fwd * 1e3:.1f}/{dx * 1e3:.1f}/{dw * 1e3:.1f}"
            )


if __name__ == "__main__":
    main()
