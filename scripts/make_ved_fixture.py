#!/usr/bin/env python3
"""A random-initialised VisionEncoderDecoderModel (ViT encoder, GPT-2
decoder with cross-attention) and its logits, for headstart's
encoder-decoder captioner parity test.

Versions: scripts/requirements-vision.txt plus transformers==5.24.0
(Python 3.11, CPU):

    /work/venv-vision/bin/python scripts/make_ved_fixture.py

Writes tests/fixtures/ved_random/ (`save_pretrained`: config.json,
model.safetensors; ViT hidden 48, 2 layers, 4 heads, patch 8, image 32;
GPT-2 n_embd 48, 2 layers, 4 heads, inner 80, 32 positions, vocab 64,
add_cross_attention, tied embeddings; seeded) and
tests/fixtures/ved_random.json: eval-mode logits (2 x 5 x 64) for the
deterministic pixels

    x[n, c, h, w] = sin(0.1 * (n + 1) * (h + 1) + 0.07 * (c + 1) * (w + 1))

(computed in float64, rounded to float32) and decoder ids below, the
encoder's last hidden state checksum, and 6 greedy tokens after BOS.

`--check DIR` instead loads DIR (headstart's export) with transformers and
prints the largest logit difference to the fixture's logits.
"""

import json
import os
import sys

import numpy as np
import torch
from transformers import GPT2Config, ViTConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
OUT = os.path.join(ROOT, "ved_random")
IDS = [[62, 5, 17, 33, 2], [62, 40, 41, 9, 9]]


def pixels():
    n, c, h, w = np.meshgrid(np.arange(2), np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    x = np.sin(0.1 * (n + 1) * (h + 1) + 0.07 * (c + 1) * (w + 1))
    return torch.from_numpy(x.astype(np.float32))


def logits(model):
    with torch.no_grad():
        out = model(pixel_values=pixels(), decoder_input_ids=torch.tensor(IDS))
    return out.logits


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        model = VisionEncoderDecoderModel.from_pretrained(sys.argv[2]).eval()
        ref = json.load(open(os.path.join(ROOT, "ved_random.json")))
        diff = (logits(model) - torch.tensor(ref["logits"])).abs().max().item()
        print(f"max abs logit difference: {diff:.3g}")
        return
    torch.manual_seed(7)
    enc = ViTConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=96, patch_size=8, image_size=32)
    dec = GPT2Config(n_embd=48, n_layer=2, n_head=4, n_inner=80, n_positions=32, vocab_size=64,
                     add_cross_attention=True, is_decoder=True, bos_token_id=62, eos_token_id=63)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    config.decoder_start_token_id = 62
    config.pad_token_id = 63
    config.eos_token_id = 63
    model = VisionEncoderDecoderModel(config).eval()
    model.save_pretrained(OUT)
    with torch.no_grad():
        hidden = model.encoder(pixel_values=pixels()).last_hidden_state
        greedy = model.generate(pixel_values=pixels(), max_new_tokens=6, do_sample=False,
                                num_beams=1, min_new_tokens=6)
    json.dump({
        "ids": IDS,
        "logits": logits(model).tolist(),
        "encoder_hidden_sum": hidden.sum().item(),
        "encoder_hidden_shape": list(hidden.shape),
        "greedy": greedy.tolist(),
    }, open(os.path.join(ROOT, "ved_random.json"), "w"))


if __name__ == "__main__":
    main()
