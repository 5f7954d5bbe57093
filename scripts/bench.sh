#!/usr/bin/env bash
# Training samples/s of all-MiniLM-L6-v2 + a 2-class head, batch 16, sequence
# 128, f32, 2 threads: headstart and PyTorch (+ transformers, sdpa and eager
# attention) on this machine, in the same run, ROUNDS rounds interleaved,
# printed as the BENCHMARKS.md table (medians, ranges in brackets).
#
# Usage: scripts/bench.sh [PYTHON]   (PYTHON has scripts/requirements-bench.txt installed)
# HEADSTART_BIN=path uses an already built binary instead of building --release;
# it must be a release build (`headstart bench` refuses a dev build).
# STEPS (default 5) timed steps per run, ROUNDS (default 2), STRATEGIES
# (default full,freeze:4,head).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
STEPS=${STEPS:-5}
ROUNDS=${ROUNDS:-2}
STRATEGIES=${STRATEGIES:-full,freeze:4,head}
out=$(mktemp -d)
export RAYON_NUM_THREADS=2
BIN=${HEADSTART_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --quiet
  BIN=./target/release/headstart
fi
for round in $(seq "$ROUNDS"); do
  "$BIN" bench --strategies "$STRATEGIES" --steps "$STEPS" --warmup 1 >> "$out/headstart.jsonl"
  for attn in sdpa eager; do
    "$PY" scripts/bench_pytorch.py --strategies "$STRATEGIES" --steps "$STEPS" --threads 2 --attn $attn >> "$out/torch-$attn.jsonl"
  done
done
"$PY" - "$out" "$STRATEGIES" <<'PYEOF'
import json, statistics, sys, pathlib
out, strategies = pathlib.Path(sys.argv[1]), sys.argv[2].split(",")
def load(f):
    runs = {}
    for d in map(json.loads, open(out / f)):
        runs.setdefault(d["strategy"], []).append(d)
    return runs
hs, sd, eg = load("headstart.jsonl"), load("torch-sdpa.jsonl"), load("torch-eager.jsonl")
builds = {d.get("build", "unknown") for runs in hs.values() for d in runs}
print(f"headstart build: {', '.join(sorted(builds))}")
if builds != {"release"}:
    print("WARNING: not a release build; these figures are not comparable with BENCHMARKS.md")
first = hs[strategies[0]][0]
peak = first["achieved_flops_per_s"] / first["mfu"]
print(f"peak used for MFU: {peak / 1e9:.1f} GFLOP/s; allocator: {first.get('allocator', '?')}")
def fmt(runs, key, scale=1.0, digits=2):
    v = [r[key] * scale for r in runs]
    m = statistics.median(v)
    return m, f"{m:.{digits}f} ({min(v):.{digits}f}-{max(v):.{digits}f})" if len(v) > 1 else f"{m:.{digits}f}"
print("| strategy | headstart samples/s | MFU | CPUs used | PyTorch sdpa samples/s | PyTorch eager samples/s | PyTorch MFU (best) | PyTorch CPUs used | headstart / PyTorch (best) |")
print("|---|---|---|---|---|---|---|---|---|")
for s in strategies:
    h, htxt = fmt(hs[s], "samples_per_s")
    a, atxt = fmt(sd[s], "samples_per_s")
    b, btxt = fmt(eg[s], "samples_per_s")
    best = sd[s] if a >= b else eg[s]
    flops = hs[s][0]["flops_per_step"]
    torch_mfu = max(a, b) / hs[s][0]["batch"] * flops / peak
    cpus = statistics.median(r["cpus_used"] for r in hs[s])
    tcpus = statistics.median(r.get("cpus_used", float("nan")) for r in best)
    mfu = statistics.median(r["mfu"] for r in hs[s])
    print(f"| {s} | {htxt} | {mfu*100:.1f}% | {cpus:.2f} | {atxt} | {btxt} | {torch_mfu*100:.1f}% | {tcpus:.2f} | {h/max(a,b):.2f} |")
PYEOF
