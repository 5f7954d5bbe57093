#!/usr/bin/env bash
# Where a training step's CPU time goes: `perf record` of `headstart bench`
# (release build), the load before the first timed step left out, samples
# grouped into matrix products, elementwise ops, copies, allocation and the
# rest, and per thread (the command runs on one of rayon's workers, which
# also takes its share of every parallel op; the main thread only waits).
#
# Usage: scripts/profile_step.sh [STRATEGY] [STEPS]   (default full 12)
# HEADSTART_BIN=path profiles an already built release binary; BENCH_ARGS adds
# `headstart bench` flags (e.g. "--model DIR --batch 4 --seq 128" for a causal LM);
# TOP=N also lists the N hottest functions outside the matrix products.
set -euo pipefail
cd "$(dirname "$0")/.."
STRATEGY=${1:-full}
STEPS=${2:-12}
BIN=${HEADSTART_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --quiet
  BIN=./target/release/headstart
fi
out=$(mktemp -d)
export RAYON_NUM_THREADS=2
perf record -F 999 -g -o "$out/perf.data" -- "$BIN" bench --strategies "$STRATEGY" --steps "$STEPS" --warmup 1 ${BENCH_ARGS:-} \
  > "$out/bench.jsonl" 2> "$out/bench.err"
cat "$out/bench.jsonl"
perf script -i "$out/perf.data" -F tid,time,ip,sym 2>/dev/null | python3 -c '
import os, re, sys, collections
samples = []  # (time, tid, leaf symbol)
tid = t = None
for line in sys.stdin:
    head = re.match(r"^\s*(\d+)\s+([\d.]+):\s*$", line)
    if head:
        tid, t, leaf = int(head.group(1)), float(head.group(2)), None
        continue
    if tid is not None and line.strip():
        parts = line.split(None, 1)
        samples.append((t, tid, parts[1].strip() if len(parts) > 1 else "?"))
        tid = None
if not samples:
    sys.exit("no samples")
# the load: until the process first spends a whole 0.5 s in matrix products
samples.sort()
main_tid = min(s[1] for s in samples)
start = samples[0][0]
window = collections.defaultdict(lambda: [0, 0])
for t, _, sym in samples:
    w = window[int((t - start) * 2)]
    w[0] += 1
    w[1] += "gemm" in sym
steady = next((k for k in sorted(window) if window[k][1] > 0.4 * window[k][0]), 0) / 2 + start
steady += 2.0  # and the warm-up step
def kind(sym):
    if "gemm" in sym: return "matrix products (gemm)"
    if "headstart::kernels" in sym: return "elementwise: headstart kernels"
    if re.search(r"burn_flex::(ops|zip|simd)|macerator|expf|erff|ElementRandom|chacha|sampler", sym): return "elementwise: burn-flex ops"
    if re.search(r"memmove|memcpy|copy_2d|into_contiguous|copy_contiguous", sym): return "copies (memmove, transposes)"
    if re.search(r"^mi_|_mi_|memset|clear_page|page_fault|filled_typed|alloc", sym): return "allocation and zeroing"
    if re.search(r"schedule|task_switch|spin|futex|yield|rayon_core|softirq", sym): return "threads (scheduling, waiting)"
    return "other"
counts = collections.Counter()
by_thread = collections.Counter()
for t, tid, sym in samples:
    if t < steady: continue
    k = kind(sym)
    counts[k] += 1
    by_thread[tid] += 1
total = sum(counts.values())
print(f"{total} samples after {steady - start:.1f} s of load and warm-up")
print("| share of CPU time | % |")
print("|---|---|")
for k, n in counts.most_common():
    print(f"| {k} | {100 * n / total:.1f} |")
for k in sorted(by_thread):
    name = "main thread" if k == main_tid else f"thread {k}"
    print(f"| on the {name} | {100 * by_thread[k] / total:.1f} |")
top = int(os.environ.get("TOP", "0"))
if top:
    hot = collections.Counter(sym for t, tid, sym in samples if t >= steady and "gemm" not in sym)
    print(f"\n{top} hottest functions outside the matrix products (% of all samples):")
    for sym, n in hot.most_common(top):
        print(f"{100 * n / total:5.1f}  {sym[:150]}")
'
