"""Checks headstart's LoRA export against PEFT.

For each family written by the Rust test `writes_peft_round_trip_files`
(run it with HEADSTART_PEFT_OUT=DIR), loads the fixture base model with
transformers, applies DIR/<family>/adapter with PeftModel.from_pretrained,
and compares its outputs on the same ids with ours (adapted model) and with
the merged export DIR/<family>/merged loaded as a plain model.

    python3 -m venv /work/venv-lora
    /work/venv-lora/bin/pip install --no-deps -r scripts/requirements-lora.txt
    HEADSTART_PEFT_OUT=/tmp/peft cargo test --lib -- writes_peft a_lora_run
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


def run_cls(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.numpy().ravel()


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
    cls_dir = Path(root) / "bert-cls"
    if cls_dir.is_dir():
        # a classifier run: adapters plus the head as modules_to_save
        # (train::tests::a_lora_run_exports_the_merged_model_and_a_peft_adapter)
        from transformers import BertForSequenceClassification

        base_dir = (cls_dir / "base.txt").read_text()
        merged = BertForSequenceClassification.from_pretrained(cls_dir / "merged").eval()
        base = BertForSequenceClassification.from_pretrained(
            base_dir, num_labels=merged.config.num_labels
        ).eval()
        peft = PeftModel.from_pretrained(base, cls_dir / "adapter").eval()
        ids = torch.tensor([[2, 5, 7, 9, 3], [2, 11, 4, 6, 3]])
        a, m = run_cls(peft, ids), run_cls(merged, ids)
        d = np.abs(a - m).max()
        print(f"bert-cls: peft (adapter + modules_to_save) vs merged export {d:.2e}")
        worst_all = max(worst_all, d)
    assert worst_all < 1e-4, f"max difference {worst_all}"
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
