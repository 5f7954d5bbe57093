#!/usr/bin/env python3
"""Reference outputs from `transformers` for headstart's BERT parity tests.

Writes, under tests/fixtures/:
  minilm_reference.json / .safetensors
      all-MiniLM-L6-v2 (the real model, fetched by `headstart data fetch`):
      token ids, masks, BertModel last hidden states and pooler output for a
      batch of varied sentences, and sentence-transformers' embeddings.
  tiny-bert/        a tiny randomly initialised BertModel (safetensors, no key
                    prefix) with its own vocab.txt, and reference.safetensors
  tiny-bert-pt/     the same kind of model as BertForMaskedLM saved with
                    torch.save (pytorch_model.bin, keys prefixed `bert.`, a
                    `cls.*` head, no pooler), and reference.safetensors

The tests read these files; CI never runs this script. Versions used:
    pip install torch==2.15.0 transformers==5.24.0 sentence-transformers==6.2.0 safetensors==0.8.0

Usage: python scripts/make_bert_fixtures.py [--minilm DIR]
(DIR defaults to $HEADSTART_HOME or ~/.cache/headstart, models/all-MiniLM-L6-v2)
"""

import argparse
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

SENTENCES = [
    "The lungs are clear.",
    "Heart size is normal. No pleural effusion or pneumothorax; the mediastinal "
    "contours are unremarkable, and there is no focal airspace consolidation.",
    "Café au lait — naïve façade in Zürich: 東京 und München!",
    "ok",
    "Stable bibasilar atelectasis (compared with 2012-03-04), unchanged... ?!",
    # Longer than 128 and than 256 word pieces: exercises truncation.
    " ".join(
        ["Interval increase in the right-sided pleural effusion with adjacent "
         "compressive atelectasis; cannot exclude superimposed pneumonia."] * 16
    ),
]
HIDDEN_MAX_LENGTH = 128


def default_minilm() -> Path:
    home = os.environ.get("HEADSTART_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache", "headstart"
    )
    return Path(home) / "models" / "all-MiniLM-L6-v2"


def minilm(model_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    enc = tok(
        SENTENCES,
        padding=True,
        truncation=True,
        max_length=HIDDEN_MAX_LENGTH,
        return_tensors="pt",
    )
    with torch.no_grad():
        out = model(**enc)
    st = SentenceTransformer(str(model_dir), device="cpu")
    emb = st.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=True)
    tensors = {
        "input_ids": enc["input_ids"].contiguous(),
        "attention_mask": enc["attention_mask"].contiguous(),
        "token_type_ids": enc["token_type_ids"].contiguous(),
        "last_hidden_state": out.last_hidden_state.contiguous(),
        "pooler_output": out.pooler_output.contiguous(),
        "st_embeddings": emb.cpu().contiguous(),
    }
    save_file(tensors, str(FIXTURES / "minilm_reference.safetensors"))
    meta = {
        "sentences": SENTENCES,
        "hidden_max_length": HIDDEN_MAX_LENGTH,
        "st_max_seq_length": st.max_seq_length,
        "versions": {
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "sentence_transformers": __import__("sentence_transformers").__version__,
        },
    }
    (FIXTURES / "minilm_reference.json").write_text(
        json.dumps(meta, indent=2, ensure_ascii=False) + "\n"
    )


TINY_VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + list(".,;:!?()-'")
    + "the lung lungs are is clear no normal heart size pleural effusion "
    "pneumothorax focal consolidation mild stable right left base atelectasis "
    "with of and in there".split()
    + ["##s", "##ed", "##al", "##ing", "##ly", "##e", "##a", "##i", "##o", "##n"]
    + list("abcdefghijklmnopqrstuvwxyz")
    + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
)
TINY_TEXTS = [
    "The lungs are clear.",
    "No focal consolidation, pleural effusion or pneumothorax; heart size is normal.",
    "Mild bibasilar atelectasis!",
    "ok",
]


def tiny_config():
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(TINY_VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        hidden_act="gelu",
    )


def write_tiny_tokenizer(out: Path) -> None:
    (out / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    (out / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "model_max_length": 64}) + "\n"
    )


def tiny_reference(model, out: Path) -> None:
    from transformers import BertTokenizer

    tok = BertTokenizer(str(out / "vocab.txt"), do_lower_case=True)
    enc = tok(TINY_TEXTS, padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        hidden = model(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            token_type_ids=enc["token_type_ids"],
        ).last_hidden_state
    tensors = {
        "input_ids": enc["input_ids"].contiguous(),
        "attention_mask": enc["attention_mask"].contiguous(),
        "token_type_ids": enc["token_type_ids"].contiguous(),
        "last_hidden_state": hidden.contiguous(),
    }
    if getattr(model, "pooler", None) is not None:
        with torch.no_grad():
            tensors["pooler_output"] = model.pooler(hidden).contiguous()
    save_file(tensors, str(out / "reference.safetensors"))
    (out / "reference.json").write_text(
        json.dumps({"texts": TINY_TEXTS, "max_length": 16}, indent=2) + "\n"
    )


def tiny() -> None:
    from transformers import BertForMaskedLM, BertModel

    torch.manual_seed(20261128)
    out = FIXTURES / "tiny-bert"
    out.mkdir(parents=True, exist_ok=True)
    model = BertModel(tiny_config()).eval()
    # Non-trivial LayerNorm parameters, so a swapped weight/bias cannot pass.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(out, safe_serialization=True)
    write_tiny_tokenizer(out)
    tiny_reference(model, out)

    torch.manual_seed(7)
    out = FIXTURES / "tiny-bert-pt"
    out.mkdir(parents=True, exist_ok=True)
    mlm = BertForMaskedLM(tiny_config()).eval()
    mlm.config.save_pretrained(out)
    torch.save(mlm.state_dict(), out / "pytorch_model.bin")
    write_tiny_tokenizer(out)
    tiny_reference(mlm.bert, out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minilm", type=Path, default=default_minilm())
    ap.add_argument("--skip-minilm", action="store_true")
    args = ap.parse_args()
    FIXTURES.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    tiny()
    if not args.skip_minilm:
        minilm(args.minilm)


if __name__ == "__main__":
    main()
