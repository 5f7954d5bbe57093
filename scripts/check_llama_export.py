#!/usr/bin/env python3
"""Checks that transformers reads headstart's Llama export as it was meant.

Versions: scripts/requirements-llama.txt (torch 2.15.0, transformers 5.24.0,
safetensors 0.8.0, numpy 2.4.6; Python 3.11, CPU).

    python3 -m venv /tmp/venv-llama
    /tmp/venv-llama/bin/pip install -r scripts/requirements-llama.txt
    /tmp/venv-llama/bin/python scripts/check_llama_export.py

Runs the ignored test `models::llama::tests::write_exports_for_transformers`
(cargo), which writes, for each fixture architecture of
tests/fixtures/llama (tied with grouped-query attention; untied with llama3
rope scaling and biases), a model initialised from scratch by headstart:
`config.json` from `hf_config`, `model.safetensors` from the state export,
and `logits.json`, headstart's logits on the fixture's right-padded batch.
Then, for each, loads the directory with `LlamaForCausalLM.from_pretrained`
(no missing, unexpected or mismatched keys; tied embeddings tied), and
compares transformers' logits at real positions with headstart's:
max |difference| <= --tol (1e-4) of the logits' scale.

Prints the differences; exits 1 when a check fails. CI never runs this
script.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from transformers import LlamaForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def check(directory, tol):
    model, info = LlamaForCausalLM.from_pretrained(
        directory, output_loading_info=True, attn_implementation="eager"
    )
    model.eval()
    ok = True
    if info["missing_keys"] or info["unexpected_keys"] or info.get("mismatched_keys"):
        print("loading info:", info)
        ok = False
    tied = model.config.tie_word_embeddings
    if tied and model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        print("tie_word_embeddings is set but lm_head is not the embedding matrix")
        ok = False
    ours = json.load(open(os.path.join(directory, "logits.json")))
    ids = torch.tensor(ours["input_ids"])
    mask = torch.tensor(ours["attention_mask"])
    with torch.no_grad():
        theirs = model(input_ids=ids, attention_mask=mask).logits
    mine = torch.tensor(ours["logits"]).reshape(ours["shape"])
    real = mask.bool()
    diff = float((mine[real] - theirs[real]).abs().max())
    scale = float(theirs[real].abs().max())
    name = os.path.basename(directory)
    print(
        f"{name}: tied {tied}, rope {model.config.rope_parameters}, "
        f"max |logit diff| {diff:.3g} (scale {scale:.3g})"
    )
    return ok and diff <= tol * max(scale, 1.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as work:
        cmd = [
            "cargo", "test", "--lib", "models::llama::tests::write_exports_for_transformers",
            "--", "--ignored", "--exact",
        ]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "HEADSTART_LLAMA_EXPORT": work})
        for name in sorted(os.listdir(work)):
            ok = check(os.path.join(work, name), args.tol) and ok
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
