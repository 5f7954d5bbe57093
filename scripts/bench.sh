#!/usr/bin/env bash
# Training samples/s of all-MiniLM-L6-v2 + a 2-class head, batch 16, sequence
# 128, f32, 2 threads: headstart and PyTorch (+ transformers) on this machine,
# in the same run, printed as the BENCHMARKS.md table.
#
# Usage: scripts/bench.sh [PYTHON]   (PYTHON has scripts/requirements-bench.txt installed)
# HEADSTART_BIN=path uses an already built binary instead of building --release;
# it must be a release build (`headstart bench` refuses a dev build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
STEPS=${STEPS:-5}
out=$(mktemp -d)
export RAYON_NUM_THREADS=2
BIN=${HEADSTART_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --quiet
  BIN=./target/release/headstart
fi
"$BIN" bench --strategies full,freeze:4,head --steps "$STEPS" --warmup 1 > "$out/headstart.jsonl"
for attn in sdpa eager; do
  "$PY" scripts/bench_pytorch.py --strategies full,freeze:4,head --steps "$STEPS" --threads 2 --attn $attn > "$out/torch-$attn.jsonl"
done
"$PY" - "$out" <<'PYEOF'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
load = lambda f: {d["strategy"]: d for d in map(json.loads, open(out / f))}
hs, sd, eg = load("headstart.jsonl"), load("torch-sdpa.jsonl"), load("torch-eager.jsonl")
builds = {d.get("build", "unknown") for d in hs.values()}
print(f"headstart build: {', '.join(sorted(builds))}")
if builds != {"release"}:
    print("WARNING: not a release build; these figures are not comparable with BENCHMARKS.md")
print("| strategy | headstart samples/s | MFU | PyTorch sdpa samples/s | PyTorch eager samples/s | headstart / PyTorch (best) |")
print("|---|---|---|---|---|---|")
for s in ["full", "freeze:4", "head"]:
    h, a, b = hs[s]["samples_per_s"], sd[s]["samples_per_s"], eg[s]["samples_per_s"]
    print(f"| {s} | {h:.2f} | {hs[s]['mfu']*100:.1f}% | {a:.2f} | {b:.2f} | {h/max(a,b):.2f} |")
PYEOF
