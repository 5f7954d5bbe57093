"""Checks headstart's LoRA export against PEFT.

For each family written by the Rust test `writes_peft_round_trip_files`
(run it with HEADSTART_PEFT_OUT=DIR), loads the fixture base model with
transformers, applies DIR/<family>/adapter with PeftModel.from_pretrained,
and compares its outputs on the same ids with ours (adapted model) and with
the merged export DIR/<family>/merged loaded as a plain model.

    python3 -m venv /work/venv-lora
    /work/venv-lora/bin/pip install --no-deps -r scripts/requirements-lora.txt
    HEADSTART_PEFT_OUT=/tmp/peft cargo test --lib lora::tests::writes_peft
    PYTHONPATH=/work/venv-vit/lib/python3.11/site-packages \\
        /work/venv-lora/bin/python scripts/check_lora_peft.py /tmp/peft
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from transformers import BertModel, GPT2LMHeadModel, LlamaForCausalLM

CLASSES = {"gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM, "bert": BertModel}


def run(model, ids):
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    t = out.pooler_output if hasattr(out, "pooler_output") else out.logits
    return t.float().numpy().ravel()


def main(root):
    worst_all = 0.0
    for family, cls in CLASSES.items():
        d = Path(root) / family
        if not d.is_dir():
            print(f"{family}: not written, skipped")
            continue
        ours = json.loads((d / "ours.json").read_text())
        ids = torch.tensor(ours["ids"])
        base = cls.from_pretrained(ours["base"]).eval()
        peft = PeftModel.from_pretrained(base, d / "adapter").eval()
        with_adapter = run(peft, ids)
        merged = run(cls.from_pretrained(d / "merged").eval(), ids)
        unadapted = run(cls.from_pretrained(ours["base"]).eval(), ids)
        a = np.array(ours["ours"], dtype=np.float32)
        m = np.array(ours["ours_merged"], dtype=np.float32)
        diffs = {
            "peft vs ours": np.abs(with_adapter - a).max(),
            "merged export vs ours": np.abs(merged - a).max(),
            "ours merged vs ours": np.abs(m - a).max(),
        }
        moved = np.abs(unadapted - a).max()
        print(f"{family}: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())
              + f" (the adapter moves outputs by {moved:.2e})")
        assert moved > 1e-3, "the adapter must change the outputs for the check to mean anything"
        worst_all = max(worst_all, *diffs.values())
    assert worst_all < 1e-4, f"max difference {worst_all}"
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
