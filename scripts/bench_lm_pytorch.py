#!/usr/bin/env python3
"""PyTorch side of headstart's causal-LM speed benchmark (scripts/bench_lm.sh).

Loads a Llama- or GPT-2-family HF directory (by default SmolLM2-135M-Instruct
as headstart converts it from its GGUF file: the same f32 weights headstart
trains) with transformers on CPU, float32, and reports

  training   tokens/s of forward + next-token loss + backward + AdamW step +
             zero_grad on one fixed batch of --batch rows of --seq seeded
             random token ids (every position a real token, as in a packed
             corpus; labels = inputs, shifted inside the model), for
               full  every parameter trains
               lora  peft LoRA r=--lora-r, alpha=--lora-alpha, dropout 0 on
                     the attention's query and value projections (q_proj,
                     v_proj for Llama, c_attn for GPT-2); the rest frozen
             each from a freshly loaded model and a fresh AdamW (lr 2e-4)
             over the trainable parameters, --warmup untimed steps first;
  generation new tokens/s of greedy `generate` with the KV cache: --batch
             seeded random prompts of --seq tokens, exactly --generate new
             tokens each (min_new_tokens = max_new_tokens: no early stop),
             --steps timed runs after --warmup untimed ones.

Prints one JSON line per measurement.
Versions used: torch==2.15.0 transformers==5.24.0 (scripts/requirements-bench.txt)
and peft==0.21.2 (scripts/requirements-lora.txt).

Usage: python scripts/bench_lm_pytorch.py --model DIR [--strategies full,lora]
           [--batch 4] [--seq 128] [--steps 3] [--warmup 1] [--threads 2]
           [--attn sdpa|eager] [--generate N]
"""

import argparse
import json
import time

import torch
import transformers
from transformers import AutoModelForCausalLM

from procmem import peak_rss_mib, reset_peak_rss

SEED = 0


def random_ids(batch: int, length: int, vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=g)


def load(model_dir: str, attn: str):
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation=attn
    )
    model.config.use_cache = False
    return model


def lora_targets(model_type: str) -> list:
    return {"llama": ["q_proj", "v_proj"], "gpt2": ["c_attn"]}[model_type]


def train(args, strategy: str) -> dict:
    torch.manual_seed(SEED)
    model = load(args.model, args.attn)
    if strategy == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=0.0,
            target_modules=lora_targets(model.config.model_type),
        )
        model = get_peft_model(model, config)
    elif strategy != "full":
        raise SystemExit(f"unknown strategy {strategy!r} (full, lora)")
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0)
    ids = random_ids(args.batch, args.seq, model.config.vocab_size, SEED)
    timed = 0.0
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= args.warmup:
            timed += time.perf_counter() - t0
    per_step = timed / args.steps
    return {
        "framework": "pytorch",
        "attn": args.attn,
        "strategy": strategy,
        "batch": args.batch,
        "seq": args.seq,
        "steps": args.steps,
        "seconds_per_step": per_step,
        "tokens_per_s": args.batch * args.seq / per_step,
        "trainable_params": sum(p.numel() for p in params),
    }


def generation(args) -> dict:
    model = load(args.model, args.attn)
    model.eval()
    ids = random_ids(args.batch, args.seq, model.config.vocab_size, 1)
    mask = torch.ones_like(ids)
    n = args.generate
    eos = model.generation_config.eos_token_id
    pad = eos[0] if isinstance(eos, list) else eos
    timed = 0.0
    with torch.inference_mode():
        for i in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                use_cache=True,
                pad_token_id=pad,
            )
            seconds = time.perf_counter() - t0
            assert out.shape[1] == args.seq + n, out.shape
            if i >= args.warmup:
                timed += seconds
    seconds = timed / args.steps
    return {
        "framework": "pytorch",
        "attn": args.attn,
        "batch": args.batch,
        "prompt_tokens": args.seq,
        "new_tokens": n,
        "runs": args.steps,
        "seconds": seconds,
        "new_tokens_per_s": args.batch * n / seconds,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--strategies", default="full,lora")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--generate", type=int, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    if args.generate:
        print(json.dumps({**generation(args), **versions}), flush=True)
        return
    for s in args.strategies.split(","):
        reset = reset_peak_rss()
        result = train(args, s)
        result["peak_rss_mib"] = peak_rss_mib(reset)
        print(json.dumps({**result, **versions}), flush=True)


if __name__ == "__main__":
    main()
