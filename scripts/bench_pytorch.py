#!/usr/bin/env python3
"""PyTorch side of headstart's training-speed benchmark.

Trains all-MiniLM-L6-v2 (6-layer BERT, hidden 384) with a 2-class
BertForSequenceClassification head on CPU, float32, and reports training
samples/s for each fine-tuning strategy:

  full      everything trains
  freeze:K  embeddings and encoder layers 0..K-1 frozen (requires_grad False
            and in eval mode, so no dropout there); layers K.., pooler and
            classifier train
  head      only the pooler and the classifier train

Each strategy starts from a freshly loaded model and a fresh AdamW (lr 5e-5,
weight_decay 0.01) over the trainable parameters only, runs 2 warm-up steps,
then times --steps steps of forward + loss + backward + optimizer.step +
zero_grad on one fixed batch: seeded random token ids in [1000, 30000) with
[CLS]=101 first and [SEP]=102 last, filling exactly --seq tokens, attention
mask all ones, random labels.

Model FLOPs per training step (matmuls only; the Rust side uses the same
formulas to report model FLOPs utilisation). Hidden h, FFN f, seq s, batch b,
L layers, 2 labels:
  encoder layer forward  2*b*s*(4*h*h + 2*h*f)   Q, K, V, output, FFN in/out
                         + 2*2*b*s*s*h            attention scores and context
  embeddings             ~0 (lookups), forward and backward
  pooler forward         2*b*h*h                  [CLS] token only
  classifier forward     2*b*h*2
  forward total          L*layer + pooler + classifier
  backward, per module   2x its forward if it trains (weight and input grads);
                         1x if frozen but some module below it trains (input
                         grads only); 0 if nothing below it trains. Frozen
                         modules here are always a prefix, so they cost 0.
  flops_per_step         forward + backward

Prints one JSON line per strategy; --out FILE also writes them as a JSON array.
Versions used: pip install -r scripts/requirements-bench.txt

Usage: python scripts/bench_pytorch.py [--model DIR] [--strategies full,freeze:4,head]
           [--steps 10] [--threads 2] [--batch 16] [--seq 128] [--attn eager|sdpa]
           [--out FILE]
(DIR defaults to $HEADSTART_HOME or ~/.cache/headstart, models/all-MiniLM-L6-v2)
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch
import transformers
from transformers import BertForSequenceClassification

from procmem import peak_rss_mib, reset_peak_rss

SEED = 0
WARMUP_STEPS = 2
NUM_LABELS = 2
CLS_ID, SEP_ID = 101, 102


def default_model() -> Path:
    home = os.environ.get("HEADSTART_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache", "headstart"
    )
    return Path(home) / "models" / "all-MiniLM-L6-v2"


def frozen_layers(strategy: str, num_layers: int) -> int:
    """How many encoder layers (after the embeddings) the strategy freezes."""
    if strategy == "full":
        return 0
    if strategy == "head":
        return num_layers
    if strategy.startswith("freeze:"):
        k = int(strategy.split(":", 1)[1])
        if 0 <= k <= num_layers:
            return k
    raise SystemExit(f"unknown strategy {strategy!r} (full, freeze:K, head)")


def flops_per_step(cfg, batch: int, seq: int, frozen: int) -> int:
    """Analytic matmul FLOPs of one training step (see the module docstring)."""
    b, s, h, f = batch, seq, cfg.hidden_size, cfg.intermediate_size
    layer = 2 * b * s * (4 * h * h + 2 * h * f) + 2 * 2 * b * s * s * h
    # Modules bottom to top with (forward FLOPs, trains?); embeddings cost ~0.
    modules = [(layer, i >= frozen) for i in range(cfg.num_hidden_layers)]
    modules += [(2 * b * h * h, True), (2 * b * h * NUM_LABELS, True)]
    total, below_trains = 0, frozen == 0  # embeddings train only under `full`
    for fwd, trains in modules:
        backward = 2 * fwd if trains else (fwd if below_trains else 0)
        total += fwd + backward
        below_trains = below_trains or trains
    return total


def load_model(model_dir: Path, attn: str, frozen: int):
    torch.manual_seed(SEED)  # the classifier is freshly initialised
    model = BertForSequenceClassification.from_pretrained(
        model_dir, num_labels=NUM_LABELS, attn_implementation=attn, dtype=torch.float32
    )
    model.train()
    bert = model.bert
    if frozen > 0:
        for module in [bert.embeddings, *bert.encoder.layer[:frozen]]:
            module.requires_grad_(False)
            module.eval()  # no dropout in the frozen part
    return model


def make_batch(batch: int, seq: int):
    g = torch.Generator().manual_seed(SEED)
    ids = torch.randint(1000, 30000, (batch, seq), generator=g)
    ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
    labels = torch.randint(0, NUM_LABELS, (batch,), generator=g)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
        "labels": labels,
    }


def bench(args, strategy: str) -> dict:
    cfg = transformers.AutoConfig.from_pretrained(args.model)
    frozen = frozen_layers(strategy, cfg.num_hidden_layers)
    model = load_model(args.model, args.attn, frozen)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-5, weight_decay=0.01)
    inputs = make_batch(args.batch, args.seq)

    def step():
        loss = model(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    for _ in range(WARMUP_STEPS):
        step()
    start = time.perf_counter()
    cpu_start = time.process_time()  # all of the process's threads
    for _ in range(args.steps):
        step()
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    seconds = wall / args.steps

    return {
        "framework": "pytorch",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "strategy": strategy,
        "batch": args.batch,
        "seq": args.seq,
        "threads": args.threads,
        "steps": args.steps,
        "seconds_per_step": seconds,
        "samples_per_s": args.batch / seconds,
        "cpus_used": cpu / wall,
        "attn": args.attn,
        "flops_per_step": flops_per_step(cfg, args.batch, args.seq, frozen),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=default_model())
    ap.add_argument("--strategies", default="full,freeze:4,head")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--attn", choices=["eager", "sdpa"], default="sdpa")
    ap.add_argument("--out", type=Path, help="also write the results as a JSON array")
    args = ap.parse_args()
    if args.steps < 1 or args.batch < 1 or args.seq < 2:
        ap.error("--steps and --batch must be >= 1, --seq >= 2")

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()  # "newly initialized classifier" notice
    transformers.logging.disable_progress_bar()

    results = []
    for strategy in args.strategies.split(","):
        reset = reset_peak_rss()
        result = bench(args, strategy.strip())
        result["peak_rss_mib"] = peak_rss_mib(reset)
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
