#!/usr/bin/env python3
"""Round trip of a headstart-trained ViT through `transformers`.

Versions: scripts/requirements-vit.txt (torch 2.15.0, transformers 5.24.0,
torchvision 0.29.2, pillow 13.0.0; Python 3.11, CPU).

    python3 -m venv /tmp/venv-vit
    /tmp/venv-vit/bin/pip install -r scripts/requirements-vit.txt
    cargo build --release
    /tmp/venv-vit/bin/python scripts/check_vit_export.py [--bin target/release/headstart]

For each input size (the fixture's 32 pixels, and 48 pixels, where headstart
resamples the 4x4 position grid to 6x6 at load time) it:

  * writes a small image folder (3 classes of striped 32x32 or 48x48 PNGs:
    already at the model's size, so neither side resamples them);
  * trains tests/fixtures/vision/vit_random (a random ViT, hidden 64) on it
    with `headstart train --task image-classification --strategy full`;
  * loads RUN/model with `ViTForImageClassification.from_pretrained` (no
    missing or unexpected keys) and its `preprocessor_config.json` with
    `ViTImageProcessor` (the torchvision-backed one) and `ViTImageProcessorPil`;
  * compares transformers' class probabilities on held-out images with
    `headstart predict --top-k <all>`: max |difference| <= --tol (1e-5),
    the same predicted labels, and config.json's id2label equal to the run's.

Prints the differences; exits 1 when a check fails. CI never runs this
script.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from PIL import Image
from transformers import ViTForImageClassification, ViTImageProcessor, ViTImageProcessorPil

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "vision", "vit_random")
CLASSES = ["horizontal", "vertical", "checker"]


def picture(kind, side, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side]
    period = 4 + seed % 5
    if kind == "horizontal":
        v = (y // period) % 2
    elif kind == "vertical":
        v = (x // period) % 2
    else:
        v = ((x // period) + (y // period)) % 2
    base = rng.integers(0, 256, size=3)
    img = np.where(v[..., None] == 1, base, 255 - base) + rng.integers(-20, 21, size=(side, side, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def folder(root, side, per_class, offset):
    for c, kind in enumerate(CLASSES):
        os.makedirs(os.path.join(root, kind), exist_ok=True)
        for i in range(per_class):
            picture(kind, side, offset + 100 * c + i).save(os.path.join(root, kind, f"{i:03d}.png"))


def check(binary, side, tol, work):
    data = os.path.join(work, f"train{side}")
    held = os.path.join(work, f"held{side}")
    folder(data, side, 16, 0)
    folder(held, side, 4, 5000)
    run = os.path.join(work, f"run{side}")
    cmd = [
        binary, "train", "--task", "image-classification", "--model", FIXTURE,
        "--train", data, "--out", run, "--strategy", "full", "--epochs", "3",
        "--lr", "1e-3", "--batch-size", "8", "--image-size", str(side),
    ]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    model_dir = os.path.join(run, "model")
    model, info = ViTForImageClassification.from_pretrained(model_dir, output_loading_info=True)
    model.eval()
    ok = True
    if info["missing_keys"] or info["unexpected_keys"] or info.get("mismatched_keys"):
        print("loading info:", info)
        ok = False
    labels = [model.config.id2label[i] for i in range(len(model.config.id2label))]
    images = sorted(
        os.path.join(held, k, f) for k in CLASSES for f in os.listdir(os.path.join(held, k))
    )
    out = subprocess.run(
        [binary, "predict", "--model", run, "--top-k", str(len(labels))] + images,
        check=True, capture_output=True, text=True,
    ).stdout
    ours = {}
    for line in out.splitlines():
        row = json.loads(line)
        ours[row["image"]] = {t["label"]: t["probability"] for t in row["top_k"]}
    worst = {}
    for name, proc in [("torchvision", ViTImageProcessor), ("pil", ViTImageProcessorPil)]:
        processor = proc.from_pretrained(model_dir)
        pixels = processor(images=[Image.open(p).convert("RGB") for p in images], return_tensors="pt")["pixel_values"]
        assert tuple(pixels.shape[-2:]) == (side, side), pixels.shape
        with torch.no_grad():
            probs = torch.softmax(model(pixel_values=pixels).logits.double(), dim=-1).numpy()
        diff, same = 0.0, 0
        for p, row in zip(images, probs):
            mine = np.array([ours[p][l] for l in labels])
            diff = max(diff, float(np.abs(mine - row).max()))
            same += int(np.argmax(mine) == np.argmax(row))
        worst[name] = diff
        print(f"{side}px, {name} processor: max |probability diff| {diff:.3g}, "
              f"same label {same}/{len(images)}")
        if diff > tol or same != len(images):
            ok = False
    config = json.load(open(os.path.join(model_dir, "config.json")))
    print(f"{side}px: image_size {config['image_size']}, position_embeddings "
          f"{tuple(model.vit.embeddings.position_embeddings.shape)}, labels {labels}")
    if config["image_size"] != side or sorted(labels) != sorted(CLASSES):
        ok = False
    return ok, worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "headstart"))
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as work:
        for side in (32, 48):
            good, _ = check(args.bin, side, args.tol, work)
            ok = ok and good
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
