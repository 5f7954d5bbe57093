#!/usr/bin/env python3
"""PyTorch side of `cargo run --release --example conv_probe`: VGG16's 3x3
convolutions at 224 px (each distinct geometry once), the forward, the input
gradient and the filter gradient timed apart, best of three calls after a
warm-up, in GFLOP/s (2 FLOPs per multiply-add, the same count as the Rust
probe).

Versions: pip install -r scripts/requirements-vision.txt
Usage: python scripts/conv_probe_pytorch.py [BATCH] [--threads 2]
"""

import argparse
import time

import torch
import torch.nn.functional as F

LAYERS = [
    (224, 3, 64),
    (224, 64, 64),
    (112, 64, 128),
    (112, 128, 128),
    (56, 128, 256),
    (56, 256, 256),
    (28, 256, 512),
    (28, 512, 512),
    (14, 512, 512),
]


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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b = args.batch
    print("layer | forward GFLOP/s | input grad | filter grad | ms fwd/dx/dw")
    with torch.no_grad():
        for side, cin, cout in LAYERS:
            x = torch.randn(b, cin, side, side)
            w = torch.randn(cout, cin, 3, 3)
            g = torch.randn(b, cout, side, side)
            flop = 2.0 * b * cout * cin * 9 * side * side
            fwd = seconds(lambda: F.conv2d(x, w, padding=1))
            dx = seconds(lambda: torch.nn.grad.conv2d_input(x.shape, w, g, padding=1))
            dw = seconds(lambda: torch.nn.grad.conv2d_weight(x, w.shape, g, padding=1))
            print(
                f"{side}px {cin}->{cout} | {flop / fwd / 1e9:.1f} | {flop / dx / 1e9:.1f} | "
                f"{flop / dw / 1e9:.1f} | {fwd * 1e3:.1f}/{dx * 1e3:.1f}/{dw * 1e3:.1f}"
            )


if __name__ == "__main__":
    main()
