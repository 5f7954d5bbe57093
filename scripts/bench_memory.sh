#!/usr/bin/env bash
# Peak resident memory of one training step per strategy, headstart beside
# PyTorch, each strategy in a process of its own (so that neither side
# carries memory kept from an earlier strategy): MiniLM (batch 16 x 128,
# PyTorch sdpa), MobileNetV2 (batch 16, 224 px) and SmolLM2-135M (batch 4 x
# 128; skipped with LM=0). `peak_rss_mib` of `headstart bench` and of the
# PyTorch scripts: VmHWM from the strategy's start, weights included.
#
# Usage: scripts/bench_memory.sh [PYTHON]   (PYTHON as for bench.sh,
# bench_vision.sh and bench_lm.sh); HEADSTART_BIN=path as there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
out=$(mktemp -d)
export RAYON_NUM_THREADS=2 OMP_NUM_THREADS=2
BIN=${HEADSTART_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --quiet
  BIN=./target/release/headstart
fi
row() { # model strategy headstart-json pytorch-json
  "$PY" - "$@" <<'PYEOF'
import json, sys
model, strategy, h, t = sys.argv[1:5]
h, t = json.loads(h.splitlines()[-1]), json.loads(t.splitlines()[-1])
a, b = h.get("peak_rss_mib"), t.get("peak_rss_mib")
ratio = f"{a / b:.2f}" if a and b else "n/a"
print(f"| {model} | {strategy} | {a:.0f} | {b:.0f} | {ratio} |")
PYEOF
}
echo "| model | strategy | headstart peak RSS (MiB) | PyTorch peak RSS (MiB) | headstart / PyTorch |"
echo "|---|---|---|---|---|"
for s in full freeze:4 head; do
  h=$("$BIN" bench --strategies "$s" --steps 2 --warmup 1)
  t=$("$PY" scripts/bench_pytorch.py --strategies "$s" --steps 2 --threads 2 --attn sdpa)
  row MiniLM "$s" "$h" "$t"
done
for pair in full:full freeze:10:freeze:11 head:head; do
  hs=${pair%:*} ts=${pair##*:}
  [ "$pair" = freeze:10:freeze:11 ] && hs=freeze:10 ts=freeze:11
  h=$("$BIN" bench --arch mobilenet_v2 --image-size 224 --batch 16 --strategies "$hs" --steps 2 --warmup 1)
  t=$("$PY" scripts/bench_vision_pytorch.py --models mobilenet_v2 --size 224 --batch 16 --strategies "$ts" --steps 2 | grep '^{')
  row MobileNetV2 "$hs" "$h" "$t"
done
if [ "${LM:-1}" != 0 ]; then
  "$BIN" data fetch smollm2-135m-instruct >&2
  MODEL=$("$BIN" inspect smollm2-135m-instruct --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["path"])')
  for s in full lora; do
    h=$("$BIN" bench --model "$MODEL" --strategies "$s" --batch 4 --seq 128 --steps 2 --warmup 1)
    t=$("$PY" scripts/bench_lm_pytorch.py --model "$MODEL" --strategies "$s" --batch 4 --seq 128 --steps 2 --warmup 1)
    row SmolLM2-135M "$s" "$h" "$t"
  done
fi
