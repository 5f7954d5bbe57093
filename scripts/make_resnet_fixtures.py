#!/usr/bin/env python3
"""Reference outputs for headstart's ResNet parity tests.

Writes, under tests/fixtures/vision/:
  resnet_basic_random.safetensors, resnet_basic_random.json
      a narrow torchvision ResNet of BasicBlocks: torchvision's own
      `ResNet`, `BasicBlock` and `ResNet._make_layer`, with a 16-channel stem,
      stages of 16/32/48/64 channels and 2/1/2/1 blocks, 10 classes.
      torchvision names (`conv1.weight`, `layer2.0.downsample.0.weight`,
      `fc.bias`, ...).
  resnet_bottleneck_random.safetensors, resnet_bottleneck_random.json
      the same with Bottlenecks: stem 16, planes 8/16/24/32 (outputs
      32/64/96/128), 1/2/1/1 blocks.
  resnet_hf_random/ (config.json, model.safetensors), resnet_hf_random.json
      a transformers `ResNetForImageClassification` saved by
      `save_pretrained`: `ResNetConfig(embedding_size=16,
      hidden_sizes=[32, 64, 96, 128], depths=[1, 2, 1, 1],
      layer_type="bottleneck", downsample_in_bottleneck=True)`, 10 labels.

Each model has seeded random weights, random BatchNorm affine parameters
and running statistics gathered from training-mode passes over random
images (so that a mix-up of BN tensors shows), a classifier drawn wider
than the default init; then eval mode. The JSON holds the configuration,
the input's checksum, the eval-mode logits (2x10) and the first values of
the pooled features. The full-size models are far over the few MB a
fixture may take (resnet18: 11.7 M parameters, 47 MB), hence the narrow
widths; the code paths (stem, strides, downsample shortcuts, block counts
read from the names) are the same.

The script also checks that timm's `resnet18` and `resnet50` have exactly
torchvision's parameter names and shapes (recorded as `timm_names_equal`),
which is why no timm fixture exists.

Deterministic input (batch 2, 3x64x64, NCHW), computed in float64 and then
rounded to float32:
    x[n, c, h, w] = sin(0.1 * (n + 1) * (h + 1) + 0.07 * (c + 1) * (w + 1))

The tests read the fixtures; CI never runs this script. Versions used:
    pip install -r scripts/requirements-resnet.txt

Usage: python scripts/make_resnet_fixtures.py
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import timm
import torch
import torchvision
import transformers
from safetensors.torch import save_file
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from transformers import ResNetConfig, ResNetForImageClassification

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "vision"

SEED = 0
BATCH, CHANNELS, SIZE = 2, 3, 64
NUM_CLASSES = 10
INPUT_FORMULA = (
    "x[n,c,h,w] = sin(0.1*(n+1)*(h+1) + 0.07*(c+1)*(w+1)), "
    "computed in float64 then rounded to float32; shape [2,3,64,64] NCHW"
)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    tmp.replace(path)


def floats(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.detach().to(torch.float32).reshape(-1).tolist()]


def versions() -> dict:
    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "transformers": transformers.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
    }


def deterministic_input() -> torch.Tensor:
    n, c, h, w = np.meshgrid(
        np.arange(BATCH), np.arange(CHANNELS), np.arange(SIZE), np.arange(SIZE), indexing="ij"
    )
    x = np.sin(0.1 * (n + 1) * (h + 1) + 0.07 * (c + 1) * (w + 1))
    return torch.from_numpy(x.astype(np.float32))


def input_info(x: torch.Tensor) -> dict:
    return {"formula": INPUT_FORMULA, "shape": list(x.shape), "sum": float(x.double().sum())}


def narrow_torchvision(block, layers: list[int], stem: int, planes: list[int]) -> ResNet:
    """torchvision's ResNet with other widths, rebuilt by its own _make_layer."""
    model = ResNet(block, layers, num_classes=NUM_CLASSES)
    model.inplanes = stem
    model.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = model._norm_layer(stem)
    model.layer1 = model._make_layer(block, planes[0], layers[0])
    model.layer2 = model._make_layer(block, planes[1], layers[1], stride=2)
    model.layer3 = model._make_layer(block, planes[2], layers[2], stride=2)
    model.layer4 = model._make_layer(block, planes[3], layers[3], stride=2)
    model.fc = nn.Linear(planes[3] * block.expansion, NUM_CLASSES)
    # torchvision's init, as ResNet.__init__ applies it
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return model


@torch.no_grad()
def randomise(model: nn.Module, fc: nn.Linear, seed: int) -> None:
    """Random BN affine parameters and running statistics, a wider classifier."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_((torch.rand(m.bias.shape, generator=g) - 0.5) * 0.4)
            m.momentum = None  # cumulative average over the passes below
    fc.weight.copy_(torch.randn(fc.weight.shape, generator=g) * 0.1)
    fc.bias.copy_(torch.randn(fc.bias.shape, generator=g) * 0.1)
    model.train()
    for _ in range(4):
        model(torch.randn(8, CHANNELS, SIZE, SIZE, generator=g) * 1.5 + 0.1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    model.eval()


def state_of(model: nn.Module) -> dict:
    return {
        k: v.detach().clone().contiguous()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }


def save_state(path: Path, state: dict) -> None:
    assert all(v.dtype == torch.float32 for v in state.values())
    tmp = path.with_suffix(".safetensors.tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)


def timm_names_equal() -> bool:
    for name in ["resnet18", "resnet50"]:
        t = timm.create_model(name, pretrained=False).state_dict()
        v = getattr(torchvision.models, name)().state_dict()
        if set(t) != set(v) or any(t[k].shape != v[k].shape for k in t):
            return False
    return True


@torch.no_grad()
def make_torchvision(x, name, block, layers, stem, planes, timm_same) -> None:
    torch.manual_seed(SEED)
    model = narrow_torchvision(block, layers, stem, planes)
    randomise(model, model.fc, SEED + 1)
    state = state_of(model)
    path = FIXTURES / f"{name}.safetensors"
    save_state(path, state)
    logits = model(x)
    h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    for layer in [model.layer1, model.layer2, model.layer3, model.layer4]:
        h = layer(h)
    pooled = torch.flatten(model.avgpool(h), 1)
    write_json(
        FIXTURES / f"{name}.json",
        {
            "description": "narrow torchvision ResNet, seeded random weights and BN stats, eval mode",
            "versions": versions(),
            "config": {
                "block": block.__name__,
                "layers": layers,
                "stem": stem,
                "planes": planes,
                "hidden_sizes": [p * block.expansion for p in planes],
                "num_classes": NUM_CLASSES,
                "bn_eps": 1e-5,
            },
            "timm_names_equal": timm_same,
            "weights_file": path.name,
            "num_tensors": len(state),
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "input": input_info(x),
            "logits": [floats(row) for row in logits],
            "pooled_first8": [floats(row[:8]) for row in pooled],
        },
    )
    print(f"{path}: {path.stat().st_size} bytes", flush=True)


@torch.no_grad()
def make_hf(x) -> None:
    torch.manual_seed(SEED)
    config = ResNetConfig(
        embedding_size=16,
        hidden_sizes=[32, 64, 96, 128],
        depths=[1, 2, 1, 1],
        layer_type="bottleneck",
        downsample_in_bottleneck=True,
        num_labels=NUM_CLASSES,
    )
    model = ResNetForImageClassification(config)
    randomise(model, model.classifier[1], SEED + 2)
    out = FIXTURES / "resnet_hf_random"
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(str(out), safe_serialization=True)
    logits = model(pixel_values=x).logits
    pooled = model.resnet(pixel_values=x).pooler_output.flatten(1)
    write_json(
        FIXTURES / "resnet_hf_random.json",
        {
            "description": "transformers ResNetForImageClassification, seeded random weights "
            "and BN stats, eval mode, saved with save_pretrained",
            "versions": versions(),
            "config": config.to_dict(),
            "input": input_info(x),
            "logits": [floats(row) for row in logits],
            "pooled_first8": [floats(row[:8]) for row in pooled],
        },
    )
    print(f"{out}: {sum(f.stat().st_size for f in out.iterdir())} bytes", flush=True)


def main() -> None:
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    torch.use_deterministic_algorithms(True)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    x = deterministic_input()
    same = timm_names_equal()
    if not same:
        raise SystemExit("timm's resnet18/resnet50 names differ from torchvision's: add a mapping")
    make_torchvision(x, "resnet_basic_random", BasicBlock, [2, 1, 2, 1], 16, [16, 32, 48, 64], same)
    make_torchvision(x, "resnet_bottleneck_random", Bottleneck, [1, 2, 1, 1], 16, [8, 16, 24, 32], same)
    make_hf(x)
    print(f"wrote {FIXTURES}")


if __name__ == "__main__":
    main()
