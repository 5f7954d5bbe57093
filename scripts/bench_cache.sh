#!/usr/bin/env bash
# Feature-cache benchmark: 10 epochs of `head` and of `freeze:4` on 1,000 IU
# training reports (validation on the 343 of val.csv after every epoch), with
# the feature cache, without it, and PyTorch's plain loop for the same work,
# on this machine in the same run; prints the BENCHMARKS.md table.
#
# Without a cache every epoch does the same work, so the no-cache and PyTorch
# runs are timed over BASE_EPOCHS (default 3) epochs and their mean epoch is
# scaled to EPOCHS (default 10); set BASE_EPOCHS=10 to time all ten.
#
# Usage: scripts/bench_cache.sh TRAIN.csv VAL.csv [PYTHON]
#   TRAIN.csv, VAL.csv: `headstart data iu-reports` output (findings,label);
#   the benchmark used the first 1,000 rows of train.csv.
#   PYTHON has scripts/requirements-bench.txt installed.
# HEADSTART_BIN=path uses an already built binary instead of building --release.
set -euo pipefail
cd "$(dirname "$0")/.."
TRAIN=$1
VAL=$2
PY=${3:-python3}
EPOCHS=${EPOCHS:-10}
BASE_EPOCHS=${BASE_EPOCHS:-3}
export RAYON_NUM_THREADS=2
BIN=${HEADSTART_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --quiet
  BIN=./target/release/headstart
fi
out=$(mktemp -d)
for cache in auto off; do
  n=$EPOCHS
  [ "$cache" = off ] && n=$BASE_EPOCHS
  for s in head freeze:4; do
    "$BIN" train --model all-MiniLM-L6-v2 --train "$TRAIN" --val "$VAL" --text-column findings \
      --strategy "$s" --epochs "$n" --feature-cache "$cache" --cache-dir "$out/cache" \
      --out "$out/$cache-${s/:/-}" --quiet
  done
done
"$PY" scripts/bench_cache_pytorch.py --train "$TRAIN" --val "$VAL" --epochs "$BASE_EPOCHS" \
  --strategies head,freeze:4 --threads 2 > "$out/torch.jsonl"
"$PY" - "$out" "$EPOCHS" "$BASE_EPOCHS" <<'PYEOF'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
E, B = int(sys.argv[2]), int(sys.argv[3])
def epochs(run):
    # elapsed seconds at each end-of-epoch validation; epoch 1 includes loading and the cache build
    t = [json.loads(l)["elapsed"]["seconds"] for l in open(out / run / "metrics.jsonl") if '"eval"' in l]
    return [t[0]] + [b - a for a, b in zip(t, t[1:])]
def total(run):
    return json.load(open(out / run / "cost.json"))["seconds"]
torch = {}
for l in open(out / "torch.jsonl"):
    d = json.loads(l)
    if "total_seconds" in d:
        torch[d["strategy"]] = d["total_seconds"] / B * E
print(f"| strategy | headstart with cache: epoch 1 (s) | epochs 2-{E} (s) | 2-{E} / 1 | {E} epochs (s) | headstart without cache, {E} epochs (s) | PyTorch plain loop, {E} epochs (s) | speed-up of the cache | headstart with cache / PyTorch |")
print("|---|---|---|---|---|---|---|---|---|")
for s in ["head", "freeze:4"]:
    name = s.replace(":", "-")
    e = epochs(f"auto-{name}")
    a = total(f"auto-{name}")
    off = total(f"off-{name}") / B * E
    print(f"| {s} | {e[0]:.1f} | {sum(e[1:]):.1f} | {100*sum(e[1:])/e[0]:.1f}% | {a:.1f} | {off:.0f} | {torch[s]:.0f} | {off/a:.1f}x | {torch[s]/a:.2f}x faster |")
print(f"(runs in {out})")
PYEOF
