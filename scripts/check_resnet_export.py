#!/usr/bin/env python3
"""A ResNet trained and exported by headstart, loaded by transformers.

Trains the narrow torchvision-named fixture
tests/fixtures/vision/resnet_basic_random.safetensors (`--arch resnet18`;
its sizes come from its tensor names) on a generated two-class image folder
(24 seeded noise PNGs, 64x64) with the headstart binary, `--strategy full
--epochs 2 --image-size 64`, then:

  * loads the exported RUN/model/ with
    `transformers.ResNetForImageClassification.from_pretrained`: no missing
    or unexpected keys besides BatchNorm's `num_batches_tracked` counters,
    which headstart does not write (eval mode never reads them);
  * runs the ignored Rust test `logits_of_an_exported_directory`, which
    loads the same directory as `headstart eval`/`predict` do and writes its
    logits on the deterministic input of scripts/make_resnet_fixtures.py
    at the run's crop size;
  * compares them with transformers' logits: max |diff| <= 1e-4 relative
    to the logits' scale, the same argmax, and config.json's id2label equal
    to the run's labels.

Prints the numbers; exits 1 when a check fails. CI never runs this script.
Versions used:
    pip install -r scripts/requirements-resnet.txt

Usage: python scripts/check_resnet_export.py [--bin target/debug/headstart] [--keep DIR]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import ResNetForImageClassification

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "vision" / "resnet_basic_random.safetensors"
SIZE = 64


def sine_input(side: int) -> torch.Tensor:
    n, c, h, w = np.meshgrid(
        np.arange(2), np.arange(3), np.arange(side), np.arange(side), indexing="ij"
    )
    x = np.sin(0.1 * (n + 1) * (h + 1) + 0.07 * (c + 1) * (w + 1))
    return torch.from_numpy(x.astype(np.float32))


def make_images(root: Path) -> None:
    rng = np.random.default_rng(0)
    for label, bias in [("dark", 60), ("light", 180)]:
        (root / label).mkdir(parents=True)
        for i in range(12):
            px = np.clip(rng.normal(bias, 40, size=(SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / label / f"{i}.png")


def run(cmd: list[str], env=None) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    ap.add_argument("--bin", type=Path, default=target / "debug" / "headstart")
    ap.add_argument("--keep", type=Path, help="work here instead of a temporary directory")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="resnet-export-"))
    work.mkdir(parents=True, exist_ok=True)
    images, run_dir = work / "images", work / "run"
    if not images.exists():
        make_images(images)
    if not (run_dir / "model" / "model.safetensors").exists():
        run([
            str(args.bin), "train", "--task", "image-classification",
            "--model", str(FIXTURE), "--arch", "resnet18", "--train", str(images),
            "--image-size", str(SIZE), "--strategy", "full", "--epochs", "2",
            "--batch-size", "8", "--seed", "0", "--out", str(run_dir),
        ])
    model_dir = run_dir / "model"
    logits_file = work / "headstart_logits.json"
    env = dict(os.environ, HEADSTART_RESNET_EXPORT=str(model_dir),
               HEADSTART_RESNET_LOGITS=str(logits_file))
    run(["cargo", "test", "--lib", "models::resnet::tests::logits_of_an_exported_directory",
         "--", "--ignored", "--exact"], env=env)
    ours = json.loads(logits_file.read_text())

    model, info = ResNetForImageClassification.from_pretrained(
        str(model_dir), output_loading_info=True
    )
    model.eval()
    failures = []
    missing = [k for k in info["missing_keys"] if not k.endswith("num_batches_tracked")]
    unexpected = list(info["unexpected_keys"])
    print(f"transformers: {len(info['missing_keys'])} missing keys "
          f"({len(missing)} besides num_batches_tracked), {len(unexpected)} unexpected")
    if missing or unexpected or info.get("mismatched_keys"):
        failures.append(f"loading: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                        f"mismatched {info.get('mismatched_keys')}")
    with torch.no_grad():
        theirs = model(pixel_values=sine_input(ours["side"])).logits
    mine = torch.tensor(ours["logits"])
    diff = (mine - theirs).abs().max().item()
    scale = theirs.abs().max().item()
    print(f"logits {list(theirs.shape)} at {ours['side']} px: max |diff| {diff:.3g}, "
          f"scale {scale:.3g}, relative {diff / max(scale, 1.0):.3g}")
    print("transformers:", [[round(v, 5) for v in row] for row in theirs.tolist()])
    print("headstart:   ", [[round(v, 5) for v in row] for row in mine.tolist()])
    if diff > 1e-4 * max(scale, 1.0):
        failures.append(f"max |logit diff| {diff} over 1e-4 x {max(scale, 1.0)}")
    if not torch.equal(mine.argmax(1), theirs.argmax(1)):
        failures.append("argmax differs")
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if labels != ["dark", "light"]:
        failures.append(f"id2label {labels}, expected ['dark', 'light']")
    for f in failures:
        print("FAIL:", f)
    print("ok" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
