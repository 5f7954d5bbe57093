#!/usr/bin/env python3
"""Reference outputs from transformers for headstart's ViT parity tests.

Versions: scripts/requirements-vit.txt (torch 2.15.0, transformers 5.24.0,
safetensors 0.8.0, numpy 2.4.6; Python 3.11, CPU):

    python3 -m venv /tmp/venv-vit
    /tmp/venv-vit/bin/pip install -r scripts/requirements-vit.txt
    /tmp/venv-vit/bin/python scripts/make_vit_fixtures.py

Writes tests/fixtures/vision/vit_random/, a Hugging Face model directory:
  config.json               `ViTForImageClassification`, hidden 64, 2 layers,
                            4 heads, intermediate 128, patch 8, image 32,
                            10 labels (seeded random weights)
  model.safetensors         its state dict under the classic hub names
                            (`vit.encoder.layer.N.attention.attention.query.weight`,
                            ...), whatever names this transformers holds
                            them under, float32
  preprocessor_config.json  a `ViTImageProcessor` (resize straight to 32x32,
                            bilinear, rescale 1/255, mean and std 0.5)
and tests/fixtures/vision/vit_random.json: the deterministic input's
checksum, the eval-mode logits (2x10) at 32 pixels, the logits at 48 pixels
with `interpolate_pos_encoding=True` (position grid 4x4 -> 6x6, bicubic),
that resampled position table's checksum, and the processor's output on a
small synthetic image (its first values and sum), from transformers'
torchvision-backed `ViTImageProcessor` and from its PIL twin.

Deterministic input (batch 2, 3 x side x side, NCHW), computed in float64
and then rounded to float32:
    x[n, c, h, w] = sin(0.1 * (n + 1) * (h + 1) + 0.07 * (c + 1) * (w + 1))
"""

import json
import os
import re

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor, ViTImageProcessorPil

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "vision")
OUT = os.path.join(ROOT, "vit_random")

# transformers 5 holds ViT as `layers.N.attention.q_proj`, `mlp.fc1`, ...;
# hub checkpoints (and headstart) use the classic names below, which
# transformers maps back on load.
CLASSIC = [
    (r"\.layers\.(\d+)\.", r".encoder.layer.\1."),
    (r"\.attention\.q_proj\.", ".attention.attention.query."),
    (r"\.attention\.k_proj\.", ".attention.attention.key."),
    (r"\.attention\.v_proj\.", ".attention.attention.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
]


def classic(name):
    for pat, rep in CLASSIC:
        name = re.sub(pat, rep, name)
    return name


def sine_input(n, side):
    b, c, h, w = np.meshgrid(np.arange(n), np.arange(3), np.arange(side), np.arange(side), indexing="ij")
    x = np.sin(0.1 * (b + 1) * (h + 1) + 0.07 * (c + 1) * (w + 1))
    return torch.from_numpy(x.astype(np.float32))


def main():
    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        image_size=32,
        patch_size=8,
        num_labels=10,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        qkv_bias=True,
    )
    model = ViTForImageClassification(config).eval()
    # larger than the init's std 0.02, so that every part moves the logits
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p) if name.endswith("weight") else 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
    state = {classic(k): v.contiguous() for k, v in model.state_dict().items()}
    os.makedirs(OUT, exist_ok=True)
    save_file(state, os.path.join(OUT, "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(OUT)
    settings = dict(
        do_resize=True,
        size={"height": 32, "width": 32},
        resample=2,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = ViTImageProcessor(**settings)
    processor.save_pretrained(OUT)

    # the directory loads back with every key used
    again, info = ViTForImageClassification.from_pretrained(OUT, output_loading_info=True)
    again.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"], info

    x32 = sine_input(2, 32)
    x48 = sine_input(2, 48)
    with torch.no_grad():
        logits = again(pixel_values=x32).logits
        logits48 = again(pixel_values=x48, interpolate_pos_encoding=True).logits
        emb = again.vit.embeddings
        grid = emb.interpolate_pos_encoding(torch.zeros(1, 37, 64), 48, 48)
        assert torch.equal(logits, model(pixel_values=x32).logits)

    # the processor on a 40x24 gradient image (width 40, height 24)
    from PIL import Image

    w, h = 40, 24
    pix = np.zeros((h, w, 3), dtype=np.uint8)
    for yy in range(h):
        for xx in range(w):
            pix[yy, xx] = [(xx * 6) % 256, (yy * 10) % 256, (xx * yy) % 256]
    image = Image.fromarray(pix)
    processed = processor(images=image, return_tensors="np")["pixel_values"][0]
    processed_pil = ViTImageProcessorPil(**settings)(images=image, return_tensors="np")["pixel_values"][0]
    reference = {
        "config": {"hidden_size": 64, "num_hidden_layers": 2, "patch_size": 8, "image_size": 32},
        "input32_sum": float(x32.double().sum()),
        "input48_sum": float(x48.double().sum()),
        "logits": logits.tolist(),
        "logits48_interpolated": logits48.tolist(),
        "position_embeddings48": {
            "shape": list(grid.shape),
            "sum": float(grid.double().sum()),
            "sum_sq": float((grid.double() ** 2).sum()),
            "first_patch": grid[0, 1, :8].tolist(),
            "last_patch": grid[0, -1, :8].tolist(),
        },
        "processor": {
            "image": "40x24 RGB, pixel (x, y) = ((6x) % 256, (10y) % 256, (xy) % 256)",
            "shape": list(processed.shape),
            "sum": float(processed.astype(np.float64).sum()),
            "first": processed.reshape(-1)[:16].tolist(),
            "pil_sum": float(processed_pil.astype(np.float64).sum()),
            "pil_first": processed_pil.reshape(-1)[:16].tolist(),
            "torchvision_vs_pil_max_diff": float(np.abs(processed - processed_pil).max()),
        },
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
    }
    with open(os.path.join(ROOT, "vit_random.json"), "w") as f:
        json.dump(reference, f, indent=1)
        f.write("\n")
    print("keys:", len(state), "sample:", sorted(state)[:3])
    print("logits[0][:4]", logits[0, :4].tolist())
    print("logits48[0][:4]", logits48[0, :4].tolist())


if __name__ == "__main__":
    main()
