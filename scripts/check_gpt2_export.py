#!/usr/bin/env python3
"""transformers reads back a GPT-2 that headstart exported.

Versions: scripts/requirements-gpt2.txt (torch 2.15.0, transformers 5.24.0,
safetensors 0.8.0; Python 3.11, CPU).

    python3 -m venv /tmp/venv-gpt2
    /tmp/venv-gpt2/bin/pip install -r scripts/requirements-gpt2.txt
    HEADSTART_GPT2_EXPORT_TO=/tmp/gpt2-export \\
        cargo test --lib models::gpt2::tests::export_round_trips
    /tmp/venv-gpt2/bin/python scripts/check_gpt2_export.py /tmp/gpt2-export

The test exports both fixtures (tests/fixtures/gpt2/untied and tied, every
weight moved so that the export is not the fixture file) as headstart
writes a model directory: `hf_config()` as config.json and the state under
transformers' keys as model.safetensors, plus `headstart_logits.json`, the
logits headstart computes for the fixtures' input (batch 2, row 1
right-padded). For each directory this script loads it with
`GPT2LMHeadModel.from_pretrained` (no missing, unexpected or mismatched
keys; the class config.json names), runs the same input and compares the
logits at the real positions: max |difference| <= --tol (1e-4 of the
logits' scale). Exits 1 when a check fails. CI never runs this script.
"""

import argparse
import json
import os
import sys

import torch
from transformers import AutoConfig, GPT2LMHeadModel


def check(path, tol):
    ok = True
    config = AutoConfig.from_pretrained(path)
    if config.architectures != ["GPT2LMHeadModel"] or config.model_type != "gpt2":
        print(f"{path}: config.json says {config.architectures} / {config.model_type}")
        ok = False
    model, info = GPT2LMHeadModel.from_pretrained(path, output_loading_info=True)
    model.eval()
    if any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")):
        print(f"{path}: loading info {info}")
        ok = False
    ref = json.load(open(os.path.join(path, "headstart_logits.json")))
    ids = torch.tensor(ref["input_ids"]).reshape(2, -1)
    mask = torch.tensor(ref["attention_mask"]).reshape(2, -1)
    ours = torch.tensor(ref["logits"]).reshape(ref["shape"])
    with torch.no_grad():
        theirs = model(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    diff = float((ours[real] - theirs[real]).abs().max())
    scale = float(theirs[real].abs().max())
    tied = model.lm_head.weight is model.transformer.wte.weight
    print(
        f"{os.path.basename(path)}: tie_word_embeddings {config.tie_word_embeddings} "
        f"(lm_head is wte: {tied}), n_embd {config.n_embd}, n_layer {config.n_layer}, "
        f"max |logit diff| {diff:.3g} (scale {scale:.3g})"
    )
    if tied != config.tie_word_embeddings or diff > tol * max(scale, 1.0):
        ok = False
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("export_dir")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    ok = True
    for name in ("untied", "tied"):
        ok = check(os.path.join(args.export_dir, name), args.tol) and ok
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
