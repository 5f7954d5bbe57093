#!/usr/bin/env python3
"""PyTorch side of the feature-cache benchmark: the plain training loop that
`headstart train --strategy head|freeze:4` runs, with nothing cached.

all-MiniLM-L6-v2 with a 2-class BertForSequenceClassification head, CPU,
float32, --threads threads. The same work as headstart's run: the examples of
--train (all of them, in a seeded shuffled order each epoch), batch 16,
dynamic padding to the longest of the batch, max length 128; AdamW over the
trainable parameters only (weight decay 0.01, none on biases and LayerNorm),
linear decay without warmup for head (lr 1e-3) and with 10% warmup for
freeze:4 (lr 1e-4), gradient clipping at 1.0; frozen modules have
requires_grad False and stay in eval mode (no dropout); validation on --val
at the end of every epoch (no_grad, eval mode).

Prints one JSON line per epoch ({"strategy", "epoch", "seconds", "val_accuracy"})
and one summary line per strategy. Versions: scripts/requirements-bench.txt.

Usage: python scripts/bench_cache_pytorch.py --train train.csv --val val.csv
           [--text-column findings] [--epochs 10] [--strategies head,freeze:4]
           [--threads 2] [--model DIR]
"""

import argparse
import csv
import json
import os
import random
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertForSequenceClassification

BATCH = 16
MAX_LEN = 128


def read(path, text_col, label_col):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r[text_col] for r in rows], [r[label_col] for r in rows]


def batches(enc, labels, order):
    for i in range(0, len(order), BATCH):
        idx = order[i : i + BATCH]
        items = [enc[j] for j in idx]
        n = max(len(x) for x in items)
        ids = torch.zeros(len(idx), n, dtype=torch.long)
        mask = torch.zeros(len(idx), n, dtype=torch.long)
        for r, x in enumerate(items):
            ids[r, : len(x)] = torch.tensor(x)
            mask[r, : len(x)] = 1
        yield ids, mask, torch.tensor([labels[j] for j in idx])


def setup(model, strategy):
    """Freezes the prefix; returns the trainable parameters and the lr, warmup."""
    if strategy == "head":
        frozen = [model.bert.embeddings, *model.bert.encoder.layer]
        lr, warmup = 1e-3, 0.0
    else:
        k = int(strategy.split(":")[1])
        frozen = [model.bert.embeddings, *model.bert.encoder.layer[:k]]
        lr, warmup = 1e-4, 0.1
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)
    return frozen, lr, warmup


def main():
    ap = argparse.ArgumentParser()
    home = Path(os.environ.get("HEADSTART_HOME", Path.home() / ".cache" / "headstart"))
    ap.add_argument("--model", default=str(home / "models" / "all-MiniLM-L6-v2"))
    ap.add_argument("--train", required=True)
    ap.add_argument("--val", required=True)
    ap.add_argument("--text-column", default="findings")
    ap.add_argument("--label-column", default="label")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--strategies", default="head,freeze:4")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tok = AutoTokenizer.from_pretrained(args.model)
    tx, ty = read(args.train, args.text_column, args.label_column)
    vx, vy = read(args.val, args.text_column, args.label_column)
    names = sorted(set(ty))
    ty = [names.index(y) for y in ty]
    vy = [names.index(y) for y in vy]
    enc = tok(tx, truncation=True, max_length=MAX_LEN)["input_ids"]
    venc = tok(vx, truncation=True, max_length=MAX_LEN)["input_ids"]

    for strategy in args.strategies.split(","):
        torch.manual_seed(42)
        random.seed(42)
        model = BertForSequenceClassification.from_pretrained(args.model, num_labels=len(names))
        frozen, lr, warmup = setup(model, strategy)
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        decay = [p for n, p in params if not (n.endswith("bias") or "LayerNorm" in n)]
        no_decay = [p for n, p in params if n.endswith("bias") or "LayerNorm" in n]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
            lr=lr,
        )
        steps = args.epochs * ((len(enc) + BATCH - 1) // BATCH)
        warm = round(warmup * steps)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm)),
        )
        total = 0.0
        for epoch in range(args.epochs):
            t0 = time.perf_counter()
            model.train()
            for m in frozen:
                m.eval()
            order = list(range(len(enc)))
            random.shuffle(order)
            for ids, mask, y in batches(enc, ty, order):
                loss = model(input_ids=ids, attention_mask=mask, labels=y).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
                opt.step()
                sched.step()
                opt.zero_grad()
            model.eval()
            correct = 0
            with torch.no_grad():
                for ids, mask, y in batches(venc, vy, list(range(len(venc)))):
                    correct += (model(input_ids=ids, attention_mask=mask).logits.argmax(-1) == y).sum().item()
            secs = time.perf_counter() - t0
            total += secs
            print(json.dumps({"strategy": strategy, "epoch": epoch + 1, "seconds": round(secs, 2),
                              "val_accuracy": round(correct / len(venc), 4)}), flush=True)
        print(json.dumps({"strategy": strategy, "epochs": args.epochs, "total_seconds": round(total, 2),
                          "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
