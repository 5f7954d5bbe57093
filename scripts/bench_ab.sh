#!/usr/bin/env bash
# Before/after: `headstart bench` of several release binaries, interleaved
# (the order rotates each round), printed as a table of medians (ranges)
# with each binary's ratio to the first.
#
# Usage: scripts/bench_ab.sh ROUNDS LABEL=BINARY [LABEL=BINARY ...]
# STEPS (default 5) and STRATEGIES (default full,freeze:4,head) as in bench.sh;
# extra `headstart bench` flags in BENCH_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=$1
shift
STEPS=${STEPS:-5}
STRATEGIES=${STRATEGIES:-full,freeze:4,head}
out=$(mktemp -d)
export RAYON_NUM_THREADS=2
variants=("$@")
n=${#variants[@]}
for round in $(seq 0 $((ROUNDS - 1))); do
  for i in $(seq 0 $((n - 1))); do
    v=${variants[$(((i + round) % n))]}
    label=${v%%=*}
    bin=${v#*=}
    # shellcheck disable=SC2086
    "$bin" bench --strategies "$STRATEGIES" --steps "$STEPS" --warmup 1 ${BENCH_ARGS:-} \
      | sed "s/^{/{\"label\":\"$label\",/" >> "$out/runs.jsonl"
  done
done
python3 - "$out/runs.jsonl" "$STRATEGIES" "${variants[@]%%=*}" <<'PYEOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
strategies, labels = sys.argv[2].split(","), sys.argv[3:]
builds = {r.get("build") for r in runs}
if builds != {"release"}:
    print(f"WARNING: builds {builds}; benchmarks need release builds")
print("| strategy | " + " | ".join(f"{l} samples/s" for l in labels) + " | " + " | ".join(f"{l} / {labels[0]}" for l in labels[1:]) + " | CPUs used (" + ", ".join(labels) + ") |")
print("|---" * (1 + 2 * len(labels)) + "|")
for s in strategies:
    cells, meds, cpus = [], [], []
    for l in labels:
        v = [r["samples_per_s"] for r in runs if r["label"] == l and r["strategy"] == s]
        m = statistics.median(v)
        meds.append(m)
        cells.append(f"{m:.2f} ({min(v):.2f}-{max(v):.2f})")
        cpus.append(statistics.median(r["cpus_used"] for r in runs if r["label"] == l and r["strategy"] == s))
    ratios = [f"{m / meds[0]:.2f}" for m in meds[1:]]
    print(f"| {s} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " | " + ", ".join(f"{c:.2f}" for c in cpus) + " |")
PYEOF
