#!/usr/bin/env python3
"""Beam-search outputs of transformers for headstart's beam search
(tests/fixtures/gpt2/beam_reference.json).

Loads the random GPT-2 fixture tests/fixtures/gpt2/tied (written by
scripts/make_gpt2_fixtures.py) with `GPT2LMHeadModel` and runs
`generate(num_beams=B, do_sample=False, max_new_tokens=N,
length_penalty=L, no_repeat_ngram_size=K, early_stopping=False)` on token
prompts (one at a time: no padding) and on input embeddings (`inputs_embeds`
of [batch, positions, 48] seeded normal vectors, the way a captioner feeds
an image prefix). The end-of-sequence token of each case is chosen so that
some beams end early: the token greedy decoding emits third.

Records the new token ids of the best beam per prompt or prefix row.

Versions: scripts/requirements-gpt2.txt (torch 2.15.0, transformers 5.24.0).
Usage: python scripts/make_beam_reference.py
"""

import json
import os
import tempfile
from pathlib import Path

import torch
from transformers import GPT2LMHeadModel

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "gpt2" / "tied"
OUT = ROOT / "tests" / "fixtures" / "gpt2" / "beam_reference.json"

SETTINGS = [
    # beams, max_new, length_penalty, no_repeat_ngram_size
    (3, 10, 1.0, 0),
    (4, 12, 0.6, 2),
    (2, 8, 2.0, 3),
    (5, 9, -0.5, 0),
]
PROMPTS = [[5, 9, 3, 7, 11, 2], [4, 8], [1, 30, 6, 30, 6]]


def main() -> None:
    torch.manual_seed(0)
    model = GPT2LMHeadModel.from_pretrained(FIXTURE)
    model.eval()
    embeds = torch.randn(2, 3, model.config.n_embd, generator=torch.Generator().manual_seed(1)) * 0.5
    cases = []
    with torch.no_grad():
        for beams, max_new, lp, ngram in SETTINGS:
            for prompt in PROMPTS:
                ids = torch.tensor([prompt])
                greedy = model.generate(ids, do_sample=False, max_new_tokens=3, eos_token_id=None,
                                        pad_token_id=0)[0, len(prompt):].tolist()
                eos = greedy[2]
                out = model.generate(ids, do_sample=False, num_beams=beams, max_new_tokens=max_new,
                                     length_penalty=lp, no_repeat_ngram_size=ngram,
                                     early_stopping=False, eos_token_id=eos, pad_token_id=0)
                cases.append({"prompt": prompt, "beams": beams, "max_new": max_new,
                              "length_penalty": lp, "no_repeat_ngram_size": ngram, "eos": eos,
                              "new_tokens": out[0, len(prompt):].tolist()})
            greedy = model.generate(inputs_embeds=embeds[:1], do_sample=False, max_new_tokens=3,
                                    eos_token_id=None, pad_token_id=0)[0].tolist()
            eos = greedy[2]
            out = model.generate(inputs_embeds=embeds, do_sample=False, num_beams=beams,
                                 max_new_tokens=max_new, length_penalty=lp,
                                 no_repeat_ngram_size=ngram, early_stopping=False,
                                 eos_token_id=eos, pad_token_id=eos)
            cases.append({"prefix_rows": 2, "beams": beams, "max_new": max_new,
                          "length_penalty": lp, "no_repeat_ngram_size": ngram, "eos": eos,
                          "new_tokens_per_row": out.tolist()})
    data = {
        "source": "transformers 5.24.0 GPT2LMHeadModel.generate on tests/fixtures/gpt2/tied; "
                  "scripts/make_beam_reference.py",
        "prefix": {"shape": list(embeds.shape), "values": embeds.flatten().tolist()},
        "cases": cases,
    }
    fd, tmp = tempfile.mkstemp(dir=OUT.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
        f.write("\n")
    os.replace(tmp, OUT)
    for c in cases:
        print(c)


if __name__ == "__main__":
    main()
