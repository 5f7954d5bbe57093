#!/usr/bin/env python3
"""PEFT LoRA adapters, written by peft itself, for headstart's adapter tests.

Versions: scripts/requirements-lora.txt (peft 0.21.2, accelerate 1.15.0,
psutil 7.1.3, installed with --no-deps) on top of torch 2.15.0,
transformers 5.24.0, safetensors 0.8.0 and numpy 2.4.6
(scripts/requirements-llama.txt; Python 3.11, CPU):

    python3 -m venv /tmp/venv-peft
    /tmp/venv-peft/bin/pip install -r scripts/requirements-llama.txt
    /tmp/venv-peft/bin/pip install --no-deps -r scripts/requirements-lora.txt
    /tmp/venv-peft/bin/python scripts/make_peft_fixtures.py

Run from the repository root: each adapter's `base_model_name_or_path` is
the base fixture's path relative to it (as a user's adapter names its base).

For each base fixture, `peft.get_peft_model` wraps the model with a seeded
LoRA adapter whose B is not zero (`init_lora_weights=False` keeps
PyTorch's default Kaiming-uniform init for both A and B, so the adapter
changes the outputs), `save_pretrained` writes it (peft's model card
README.md is removed), and the adapted model's eval-mode logits on fixed
input ids go to `reference.json` beside it:

  tests/fixtures/peft/gpt2/   on tests/fixtures/gpt2/tied (GPT2LMHeadModel,
      CAUSAL_LM): r 4, alpha 8, targets c_attn, c_proj (attention and MLP),
      c_fc; fan_in_fan_out (GPT-2's Conv1D weights are [in, out]).
  tests/fixtures/peft/llama/  on tests/fixtures/llama/tied_gqa
      (LlamaForCausalLM, CAUSAL_LM): r 4, alpha 16, every projection
      (q, k, v, o, gate, up, down).
  tests/fixtures/peft/bert-cls/ on tests/fixtures/tiny-bert-cls
      (BertForSequenceClassification, SEQ_CLS): r 2, alpha 4, query, value
      and the layer output dense, `modules_to_save=["classifier"]`; the
      saved copy of the classifier is perturbed, so that it differs from
      the base's and must be read from the adapter.

reference.json: {"input_ids": [[...]], "logits": [...] (flattened, float32
values), "shape": [...], "base_logits": [...] (the base without adapter, to
show the adapter matters)}.
"""

import json
import os
import shutil

import torch
from peft import LoraConfig, get_peft_model
from transformers import BertForSequenceClassification, GPT2LMHeadModel, LlamaForCausalLM

FIXTURES = os.path.join("tests", "fixtures")

CASES = {
    "gpt2": dict(
        cls=GPT2LMHeadModel,
        base=os.path.join(FIXTURES, "gpt2", "tied"),
        config=dict(
            task_type="CAUSAL_LM",
            r=4,
            lora_alpha=8,
            target_modules=["c_attn", "c_proj", "c_fc"],
            fan_in_fan_out=True,
        ),
        ids=[[1, 5, 7, 2, 3, 9], [4, 8, 15, 16, 23, 42]],
    ),
    "llama": dict(
        cls=LlamaForCausalLM,
        base=os.path.join(FIXTURES, "llama", "tied_gqa"),
        config=dict(
            task_type="CAUSAL_LM",
            r=4,
            lora_alpha=16,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ),
        ids=[[1, 5, 7, 2, 3, 9], [4, 8, 15, 16, 23, 42]],
    ),
    "bert-cls": dict(
        cls=BertForSequenceClassification,
        base=os.path.join(FIXTURES, "tiny-bert-cls"),
        config=dict(
            task_type="SEQ_CLS",
            r=2,
            lora_alpha=4,
            target_modules=["query", "value", "output.dense"],
            modules_to_save=["classifier"],
        ),
        ids=[[2, 5, 7, 9, 3], [2, 11, 4, 6, 3]],
    ),
}


def logits(model, ids):
    ids = torch.tensor(ids)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return out.logits.float()


def main():
    for i, (name, case) in enumerate(CASES.items()):
        torch.manual_seed(100 + i)
        base = case["cls"].from_pretrained(case["base"]).eval()
        before = logits(base, case["ids"])
        config = LoraConfig(lora_dropout=0.0, init_lora_weights=False, **case["config"])
        model = get_peft_model(base, config).eval()
        if "modules_to_save" in case["config"]:
            # the trained head: other values than the base's
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if "modules_to_save" in n:
                        p.add_(torch.randn_like(p) * 0.5)
        after = logits(model, case["ids"])
        assert (after - before).abs().max() > 1e-2, f"{name}: the adapter must change the logits"
        out = os.path.join(FIXTURES, "peft", name)
        shutil.rmtree(out, ignore_errors=True)
        model.save_pretrained(out)
        readme = os.path.join(out, "README.md")
        if os.path.exists(readme):
            os.remove(readme)
        ref = {
            "input_ids": case["ids"],
            "shape": list(after.shape),
            "logits": after.flatten().tolist(),
            "base_logits": before.flatten().tolist(),
        }
        with open(os.path.join(out, "reference.json"), "w") as f:
            json.dump(ref, f)
        print(f"{name}: {out}, logits moved by {(after - before).abs().max():.3f}")


if __name__ == "__main__":
    main()
