#!/usr/bin/env python3
"""Convolutional networks trained and exported by headstart, loaded by their
reference libraries with the same predictions.

For each family it trains a small run with the headstart binary (`--strategy
full --epochs 2 --lr 1e-3`, so BatchNorm's running statistics move and must be exported
too), then builds the reference model for the exported
`RUN/model/model.safetensors` and compares class probabilities with
`headstart predict --top-k <all>` on held-out images:

  mobilenet_v2       packaged torchvision ImageNet weights (`--model
                     mobilenet_v2`); reference
                     `torchvision.models.mobilenet_v2(num_classes=K)`
  vgg16              packaged Keras ImageNet conv base (`--model vgg16`,
                     Caffe-mode BGR input); reference `vgg16().features`,
                     global average pool, `classifier = Linear(512, K)`
  efficientnet_lite0 packaged weights (`--model efficientnet_lite0`);
                     reference `timm.create_model("tf_efficientnet_lite0",
                     num_classes=K)`
  inception_v3       no torchvision Inception weights are packaged: a
                     torchvision `inception_v3(aux_logits=False)` with its
                     own random init (seed 0) and BatchNorm statistics
                     measured on noise, saved as safetensors in the
                     work directory and loaded with `--arch inception_v3`;
                     reference `inception_v3(num_classes=K,
                     aux_logits=False)`. (The packaged FID port exports
                     torchvision's names but keeps its own pools, which
                     torchvision's class does not have.)

Checks per family: `load_state_dict` finds no missing keys (besides
BatchNorm's `num_batches_tracked` counters, which headstart does not write and
eval mode never reads) and no unexpected ones; max |probability difference|
<= --tol (1e-5) and max |logit difference| (logits up to a constant, from
log-probabilities) <= 1e-4 of their scale; the same predicted labels; config.json's id2label equal to
the run's labels.

The held-out images are made at the recipe's resize size (read from the
exported config.json), wider than tall, so neither side resamples them and
the comparison covers the centre crop (torchvision's offsets, halves rounded
to even: 73 -> 64 starts at 4), channel order, rescaling and normalisation.
The training images are 2 classes x 6 seeded noise PNGs.

Prints the numbers; exits 1 when a check fails. CI never runs this script.
Versions: scripts/requirements-efficientnet.txt (torch 2.15.0, torchvision
0.29.2, timm 1.0.31). The packaged weights must be in the asset cache:
`headstart data fetch mobilenet_v2 vgg16 efficientnet_lite0`.

Usage: python scripts/check_cnn_export.py [--bin target/release/headstart]
           [--families mobilenet_v2,vgg16,efficientnet_lite0,inception_v3]
           [--keep DIR]
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
import torchvision
from PIL import Image
from safetensors.torch import load_file, save_file
from torchvision.transforms.functional import center_crop

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["dark", "light"]
# family -> (crop size, --model argument or None for a generated checkpoint)
FAMILIES = {
    "mobilenet_v2": (64, "mobilenet_v2"),
    "vgg16": (64, "vgg16"),
    "efficientnet_lite0": (64, "efficientnet_lite0"),
    "inception_v3": (80, None),
}


def make_images(root: Path, per_class: int, size: tuple[int, int], seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for label, bias in zip(CLASSES, (70, 170)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = size
            px = np.clip(rng.normal(bias, 50, size=(h, w, 3)), 0, 255).astype(np.uint8)
            path = root / label / f"{i}.png"
            Image.fromarray(px).save(path)
            paths.append(path)
    return paths


def run(cmd: list[str]) -> str:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


class VggConvBase(torch.nn.Module):
    """Keras' VGG16(include_top=False) under torchvision's names, pooled
    globally, with the task's linear head: headstart's conv-base layout."""

    def __init__(self, k: int):
        super().__init__()
        self.features = torchvision.models.vgg16(weights=None).features
        self.classifier = torch.nn.Linear(512, k)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def reference(family: str, k: int) -> torch.nn.Module:
    if family == "mobilenet_v2":
        return torchvision.models.mobilenet_v2(weights=None, num_classes=k)
    if family == "vgg16":
        return VggConvBase(k)
    if family == "efficientnet_lite0":
        import timm

        return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=k)
    if family == "inception_v3":
        return torchvision.models.inception_v3(
            weights=None, num_classes=k, aux_logits=False, init_weights=False
        )
    raise ValueError(family)


def model_input(path: Path, prep: dict) -> torch.Tensor:
    img = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)
    h, w = img.shape[1:]
    assert min(h, w) == prep["resize"], (path, img.shape, prep)
    x = center_crop(img, [prep["crop"], prep["crop"]]).double()
    x = x * prep.get("rescale_factor", 1.0 / 255.0)
    if prep.get("channels", "rgb") == "bgr":
        x = x.flip(0)
    mean = torch.tensor(prep["mean"], dtype=torch.float64)[:, None, None]
    std = torch.tensor(prep["std"], dtype=torch.float64)[:, None, None]
    return ((x - mean) / std).float()


def check(binary: str, family: str, work: Path, tol: float) -> list[str]:
    crop, model = FAMILIES[family]
    work.mkdir(parents=True, exist_ok=True)
    if model is None:
        torch.manual_seed(0)
        source = torchvision.models.inception_v3(
            weights=None, aux_logits=False, init_weights=True
        )
        # running statistics measured on noise (cumulative average), so that
        # eval mode gives logits of a sane scale rather than the init's ~1e3
        bns = [m for m in source.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for m in bns:
            m.momentum = None
        source.train()
        with torch.no_grad():
            for _ in range(3):
                source(torch.randn(8, 3, crop, crop))
        for m in bns:
            m.momentum = 0.1
        model = str(work / "inception_v3_random.safetensors")
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, model)
        arch = ["--arch", "inception_v3"]
    else:
        arch = []
    train = work / "train"
    if not train.exists():
        make_images(train, 6, (crop + 20, crop + 20), seed=0)
    run_dir = work / "run"
    if not (run_dir / "model" / "model.safetensors").exists():
        run([binary, "train", "--task", "image-classification", "--model", model, *arch,
             "--train", str(train), "--image-size", str(crop), "--strategy", "full",
             "--epochs", "2", "--lr", "1e-3", "--batch-size", "4", "--seed", "0", "--out", str(run_dir)])
    model_dir = run_dir / "model"
    config = json.loads((model_dir / "config.json").read_text())
    prep = config["preprocessing"]
    held = make_images(work / "held", 3, (prep["resize"] + 7, prep["resize"]), seed=1)

    failures = []
    k = len(config["id2label"])
    labels = [config["id2label"][str(i)] for i in range(k)]
    if sorted(labels) != CLASSES:
        failures.append(f"id2label {labels}, expected {CLASSES}")
    net = reference(family, k)
    state = load_file(str(model_dir / "model.safetensors"))
    result = net.load_state_dict(state, strict=False)
    missing = [m for m in result.missing_keys if not m.endswith("num_batches_tracked")]
    print(f"{family}: {len(state)} tensors; {len(result.missing_keys)} missing "
          f"({len(missing)} besides num_batches_tracked), {len(result.unexpected_keys)} unexpected")
    if missing or result.unexpected_keys:
        failures.append(f"missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    net.eval()
    with torch.no_grad():
        logits = net(torch.stack([model_input(p, prep) for p in held]))
        theirs = torch.softmax(logits.double(), dim=-1).numpy()

    out = run([binary, "predict", "--model", str(model_dir), "--top-k", str(k)]
              + [str(p) for p in held])
    ours = {}
    for line in out.splitlines():
        row = json.loads(line)
        ours[row["image"]] = {t["label"]: t["probability"] for t in row["top_k"]}
    diff, ldiff, same = 0.0, 0.0, 0
    centred = logits.double() - logits.double().mean(dim=1, keepdim=True)
    for p, row, c in zip(held, theirs, centred.numpy()):
        mine = np.array([ours[str(p)][label] for label in labels])
        diff = max(diff, float(np.abs(mine - row).max()))
        # logits up to a constant, from the probabilities: log p - mean(log p)
        mine_c = np.log(mine) - np.log(mine).mean()
        ldiff = max(ldiff, float(np.abs(mine_c - c).max()))
        same += int(np.argmax(mine) == np.argmax(row))
    scale = float(centred.abs().max())
    print(f"{family}: {crop} px from {prep['resize']} px images, max |probability diff| "
          f"{diff:.3g}, max |centred logit diff| {ldiff:.3g} at scale {scale:.3g}, "
          f"same label {same}/{len(held)}")
    if diff > tol:
        failures.append(f"max |probability diff| {diff} over {tol}")
    if not np.isfinite(ldiff) or not np.isfinite(diff):
        failures.append("a probability is 0 or not finite: the logits cannot be compared")
    elif ldiff > 1e-4 * max(scale, 1.0):
        failures.append(f"max |centred logit diff| {ldiff} over 1e-4 x {max(scale, 1.0)}")
    if same != len(held):
        failures.append(f"predicted labels differ on {len(held) - same} image(s)")
    return [f"{family}: {f}" for f in failures]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    ap.add_argument("--bin", default=str(target / "release" / "headstart"))
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--keep", type=Path, help="work here instead of a temporary directory")
    args = ap.parse_args()
    torch.set_num_threads(2)
    work = args.keep or Path(tempfile.mkdtemp(prefix="cnn-export-"))
    failures = []
    for family in args.families.split(","):
        if family not in FAMILIES:
            sys.exit(f"unknown family {family}; known: {', '.join(FAMILIES)}")
        failures += check(args.bin, family, work / family, args.tol)
    for f in failures:
        print("FAIL:", f)
    print("ok" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
