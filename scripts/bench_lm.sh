#!/usr/bin/env bash
# Causal-LM speed of SmolLM2-135M-Instruct (the f32 weights headstart converts
# from its GGUF file), 2 threads, f32: training tokens/s for `full` and `lora`
# (r 8, alpha 16, q_proj + v_proj) on batch x seq packed rows, and greedy
# generation new tokens/s with the KV cache; headstart and transformers on
# this machine, interleaved round by round, medians printed as the
# BENCHMARKS.md table.
#
# Usage: scripts/bench_lm.sh [PYTHON] [ROUNDS]
#   PYTHON has scripts/requirements-bench.txt and scripts/requirements-lora.txt
#   installed. HEADSTART_BIN=path uses an already built release binary instead
#   of building one. BATCH (4), SEQ (128), STEPS (3) shape the training step;
#   GEN (64) new tokens after PROMPT (16) prompt tokens, batch 1 and GEN_BATCH (4).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
ROUNDS=${2:-2}
BATCH=${BATCH:-4} SEQ=${SEQ:-128} STEPS=${STEPS:-3}
GEN=${GEN:-64} PROMPT=${PROMPT:-16} GEN_BATCH=${GEN_BATCH:-4}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
export RAYON_NUM_THREADS=2 OMP_NUM_THREADS=2
BIN=${HEADSTART_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --quiet
  BIN=./target/release/headstart
fi
"$BIN" data fetch smollm2-135m-instruct >&2
# the converted HF directory (f32 safetensors) both sides load
MODEL=$("$BIN" inspect smollm2-135m-instruct --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["path"])')
echo "model: $MODEL" >&2
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r of $ROUNDS" >&2
  "$BIN" bench --model "$MODEL" --strategies full,lora --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" --warmup 1 >> "$out/headstart-train.jsonl"
  "$PY" scripts/bench_lm_pytorch.py --model "$MODEL" --strategies full,lora --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" --warmup 1 >> "$out/torch-train.jsonl"
  for b in 1 "$GEN_BATCH"; do
    "$BIN" bench --model "$MODEL" --generate "$GEN" --batch "$b" --seq "$PROMPT" --steps 2 --warmup 1 >> "$out/headstart-gen.jsonl"
    "$PY" scripts/bench_lm_pytorch.py --model "$MODEL" --generate "$GEN" --batch "$b" --seq "$PROMPT" --steps 2 --warmup 1 >> "$out/torch-gen.jsonl"
  done
done
echo "raw results: $out" >&2
"$PY" - "$out" <<'PYEOF'
import json, sys, pathlib, statistics
out = pathlib.Path(sys.argv[1])
rows = lambda f: [json.loads(l) for l in open(out / f)]
def med(rs, key, **match):
    v = [r[key] for r in rs if all(r.get(k) == x for k, x in match.items())]
    return statistics.median(v), min(v), max(v)
ht, pt = rows("headstart-train.jsonl"), rows("torch-train.jsonl")
hg, pg = rows("headstart-gen.jsonl"), rows("torch-gen.jsonl")
builds = {r.get("build") for r in ht + hg}
print(f"headstart build: {', '.join(sorted(map(str, builds)))}; torch {pt[0]['torch']}, transformers {pt[0]['transformers']}")
if builds != {"release"}:
    print("WARNING: not a release build; these figures are not comparable with BENCHMARKS.md")
b, s = ht[0]["batch"], ht[0]["seq"]
print(f"\nTraining step, batch {b} x {s} tokens (median of {len(ht)//2} rounds, range in brackets)\n")
print("| strategy | headstart tokens/s | MFU | CPUs used | transformers tokens/s | headstart / transformers |")
print("|---|---|---|---|---|---|")
for st in ["full", "lora"]:
    h, p = med(ht, "tokens_per_s", strategy=st), med(pt, "tokens_per_s", strategy=st)
    mfu = med(ht, "mfu", strategy=st)[0]
    cpus = med(ht, "cpus_used", strategy=st)[0]
    print(f"| {st} | {h[0]:.0f} ({h[1]:.0f}-{h[2]:.0f}) | {mfu*100:.1f}% | {cpus:.2f} | {p[0]:.0f} ({p[1]:.0f}-{p[2]:.0f}) | {h[0]/p[0]:.2f} |")
g = hg[0]
print(f"\nGreedy generation, {g['prompt_tokens']}-token prompts, {g['new_tokens']} new tokens (KV cache)\n")
print("| batch | headstart new tokens/s | transformers new tokens/s | headstart / transformers |")
print("|---|---|---|---|")
for bb in sorted({r["batch"] for r in hg}):
    h, p = med(hg, "new_tokens_per_s", batch=bb), med(pg, "new_tokens_per_s", batch=bb)
    print(f"| {bb} | {h[0]:.1f} ({h[1]:.1f}-{h[2]:.1f}) | {p[0]:.1f} ({p[1]:.1f}-{p[2]:.1f}) | {h[0]/p[0]:.2f} |")
PYEOF
