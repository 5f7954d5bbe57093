#!/usr/bin/env bash
# Image-training speed of MobileNetV2 and the VGG16 conv base (global
# average pool + linear head, as Keras' include_top=False base is tuned),
# f32, 2 threads: headstart and PyTorch (torchvision) on this machine in the
# same run, printed as the BENCHMARKS.md tables.
#
# 1. Training step images/s at SIZE (224) px, batch BATCH (16), for full,
#    freeze:N and head (no feature cache: every step runs the frozen part),
#    ROUNDS rounds interleaved, medians. freeze:N is headstart's (the stem
#    and N groups above it frozen): MobileNetV2 freeze:10 is torchvision's
#    features[:11], VGG16 freeze:3 (blocks 1-4) is features[:24].
# 2. `head` end to end for EPOCHS (10) epochs on TRAIN_DIR with validation
#    on VAL_DIR after every epoch: `headstart train` (feature cache on, cold)
#    against the plain PyTorch loop (decode, resize, crop, frozen forward and
#    head step every epoch). PyTorch's epochs are all alike, so it is timed
#    over BASE_EPOCHS (2) and its mean epoch scaled to EPOCHS; setup time is
#    added once. headstart starts from the packaged ImageNet weights, the
#    PyTorch loop from torchvision's random init (speed does not depend on
#    the values; its accuracy is not compared).
#
# Usage: scripts/bench_vision.sh TRAIN_DIR VAL_DIR [PYTHON] [ROUNDS]
#   TRAIN_DIR, VAL_DIR: image folders, e.g. from
#   `headstart data fetch fashion-mnist --train-per-class 40 --test-per-class 10`.
#   PYTHON has scripts/requirements-vision.txt installed.
#   HEADSTART_BIN=path uses an already built release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
TRAIN=$1
VAL=$2
PY=${3:-python3}
ROUNDS=${4:-2}
SIZE=${SIZE:-224} BATCH=${BATCH:-16} STEPS=${STEPS:-3}
EPOCHS=${EPOCHS:-10} BASE_EPOCHS=${BASE_EPOCHS:-2}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
export RAYON_NUM_THREADS=2 OMP_NUM_THREADS=2
BIN=${HEADSTART_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --quiet
  BIN=./target/release/headstart
fi
"$BIN" data fetch mobilenet_v2 vgg16 >&2
mkdir -p "$out/vgg16-conv-base"
echo '{"model_type": "vgg16", "include_top": false}' > "$out/vgg16-conv-base/config.json"
# torchvision's random conv base (the step's speed does not depend on the values)
"$PY" - "$out/vgg16-conv-base/model.safetensors" <<'PYEOF'
import sys, torch, torchvision
from safetensors.torch import save_file
torch.manual_seed(0)
save_file({"features." + k: v.contiguous() for k, v in torchvision.models.vgg16().features.state_dict().items()}, sys.argv[1])
PYEOF

for r in $(seq 1 "$ROUNDS"); do
  echo "round $r of $ROUNDS" >&2
  "$BIN" bench --arch mobilenet_v2 --image-size "$SIZE" --strategies full,freeze:10,head \
    --batch "$BATCH" --steps "$STEPS" --warmup 1 >> "$out/headstart-mobilenet_v2.jsonl"
  "$PY" scripts/bench_vision_pytorch.py --models mobilenet_v2 --strategies full,freeze:11,head \
    --size "$SIZE" --batch "$BATCH" --steps "$STEPS" >> "$out/torch-steps.jsonl"
  "$BIN" bench --arch vgg16 --model "$out/vgg16-conv-base" --image-size "$SIZE" \
    --strategies full,freeze:3,head --batch "$BATCH" --steps "$STEPS" --warmup 1 >> "$out/headstart-vgg16.jsonl"
  "$PY" scripts/bench_vision_pytorch.py --models vgg16 --strategies full,freeze:24,head \
    --size "$SIZE" --batch "$BATCH" --steps "$STEPS" >> "$out/torch-steps.jsonl"
done

for m in mobilenet_v2 vgg16; do
  "$BIN" train --task image-classification --model "$m" --train "$TRAIN" --val "$VAL" \
    --image-size "$SIZE" --strategy head --epochs "$EPOCHS" --batch-size "$BATCH" \
    --feature-cache auto --cache-dir "$out/cache" --out "$out/e2e-$m" --quiet
  "$PY" scripts/bench_vision_pytorch.py --models "$m" --folder "$TRAIN" --val-folder "$VAL" \
    --epochs "$BASE_EPOCHS" --size "$SIZE" --batch "$BATCH" >> "$out/torch-e2e.jsonl"
done
echo "raw results: $out" >&2

"$PY" - "$out" "$EPOCHS" <<'PYEOF'
import json, sys, pathlib, statistics
out, epochs = pathlib.Path(sys.argv[1]), int(sys.argv[2])
rows = lambda f: [json.loads(l) for l in open(out / f) if l.strip()]
hs = {m: rows(f"headstart-{m}.jsonl") for m in ["mobilenet_v2", "vgg16"]}
pt = rows("torch-steps.jsonl")
builds = {r.get("build") for rs in hs.values() for r in rs}
print(f"headstart build: {', '.join(sorted(map(str, builds)))}; torch {pt[0]['torch']}, torchvision {pt[0]['torchvision']}")
if builds != {"release"}:
    print("WARNING: not a release build; these figures are not comparable with BENCHMARKS.md")
def med(rs, key, **match):
    v = [r[key] for r in rs if all(r.get(k) == x for k, x in match.items())]
    return statistics.median(v), min(v), max(v)
torch_name = {("mobilenet_v2", "freeze:10"): "freeze:11", ("vgg16", "freeze:3"): "freeze:24"}
print(f"\nTraining step, batch {pt[0]['batch']} at {pt[0]['size']} px (median of the rounds, range in brackets)\n")
print("| model | strategy | headstart images/s | MFU | CPUs used | PyTorch images/s | headstart / PyTorch |")
print("|---|---|---|---|---|---|---|")
for m in ["mobilenet_v2", "vgg16"]:
    for st in ["full", "freeze:10" if m == "mobilenet_v2" else "freeze:3", "head"]:
        h = med(hs[m], "samples_per_s", strategy=st)
        p = med(pt, "samples_per_s", model=m, strategy=torch_name.get((m, st), st))
        mfu = med(hs[m], "mfu", strategy=st)[0]
        cpus = med(hs[m], "cpus_used", strategy=st)[0]
        print(f"| {m} | {st} | {h[0]:.2f} ({h[1]:.2f}-{h[2]:.2f}) | {mfu*100:.1f}% | {cpus:.2f} | {p[0]:.2f} ({p[1]:.2f}-{p[2]:.2f}) | {h[0]/p[0]:.2f} |")
print(f"\n`head` end to end, {epochs} epochs (headstart: feature cache, cold; PyTorch: plain loop)\n")
print(f"| model | train / val images | headstart (s) | of which epochs 2-{epochs} (s) | PyTorch (s) | headstart vs PyTorch |")
print("|---|---|---|---|---|---|")
for r in rows("torch-e2e.jsonl"):
    m = r["model"]
    hs_s = json.load(open(out / f"e2e-{m}" / "cost.json"))["seconds"]
    evals = [x for x in rows(f"e2e-{m}/metrics.jsonl") if "eval" in x]
    ep = r["epoch_seconds"]
    torch_s = r["seconds"] - sum(ep) + statistics.mean(ep) * epochs
    later = evals[-1]["elapsed"]["seconds"] - evals[0]["elapsed"]["seconds"]
    print(f"| {m} | {r['train_images']} / {r['val_images']} | {hs_s:.1f} | {later:.2f} | {torch_s:.0f} | {torch_s/hs_s:.1f}x faster |")
PYEOF
