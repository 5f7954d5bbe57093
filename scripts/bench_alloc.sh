#!/usr/bin/env bash
# Allocator A/B of the training step (all-MiniLM-L6-v2, batch 16 x 128, 2
# threads): the same source built with mimalloc (the default) and with the
# system allocator (`--no-default-features`), the latter also with glibc told
# to keep freed memory, the former also with mimalloc's default purging of
# freed memory (after 1 s; the binary turns it off) back on. Runs are interleaved (the order rotates each round), one
# process per strategy and variant under /usr/bin/time -v, and the medians and
# ranges printed as the BENCHMARKS.md table.
#
# Usage: scripts/bench_alloc.sh MIMALLOC_BIN SYSTEM_BIN [ROUNDS]
#   build each with `cargo build --release [--no-default-features]` and copy
#   target/release/headstart aside; STEPS (default 5) timed steps per run.
set -euo pipefail
cd "$(dirname "$0")/.."
MI=${1:?MIMALLOC_BIN}
SYS=${2:?SYSTEM_BIN}
ROUNDS=${3:-3}
STEPS=${STEPS:-5}
TUNED=${TUNED:-glibc.malloc.trim_threshold=4294967296:glibc.malloc.mmap_threshold=33554432}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
export RAYON_NUM_THREADS=2
variants=(mimalloc mimalloc-purge glibc glibc-tuned)
run() { # variant strategy round
  local v=$1 s=$2 r=$3 bin=$SYS env=()
  case $v in
    mimalloc) bin=$MI ;;
    mimalloc-purge) bin=$MI env=(MIMALLOC_PURGE_DELAY=1000) ;;
    glibc-tuned) env=(GLIBC_TUNABLES="$TUNED") ;;
  esac
  local f="$out/$v-${s//:/_}-$r"
  env "${env[@]}" /usr/bin/time -v "$bin" bench --strategies "$s" --batch 16 --seq 128 \
    --steps "$STEPS" --warmup 1 > "$f.json" 2> "$f.time"
  echo "round $r $s $v: $(grep -o '"samples_per_s":[0-9.]*' "$f.json")" >&2
}
for r in $(seq 1 "$ROUNDS"); do
  for s in head full; do
    n=${#variants[@]}
    for i in $(seq 0 $((n - 1))); do
      run "${variants[$(((i + r) % n))]}" "$s" "$r"
    done
  done
done
python3 - "$out" <<'PYEOF'
import json, pathlib, re, statistics, sys
out = pathlib.Path(sys.argv[1])
rows = {}
for f in sorted(out.glob("*.json")):
    v, s, r = re.match(r"(.+)-(head|full)-(\d+)$", f.stem).groups()
    d = json.loads(f.read_text().splitlines()[0])
    t = f.with_suffix(".time").read_text()
    num = lambda key: float(re.search(re.escape(key) + r"\s*(\S+)", t).group(1))
    wall = t.split("Elapsed (wall clock) time (h:mm:ss or m:ss):")[1].split()[0].split(":")
    wall = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall)))
    user, sys_ = num("User time (seconds):"), num("System time (seconds):")
    rows.setdefault((s, v), []).append({
        "samples/s": d["samples_per_s"], "CPUs in steps": d["cpus_used"],
        "faults/step": d["page_faults_per_step"],
        "peak RSS MB": num("Maximum resident set size (kbytes):") / 1024,
        "process faults": num("Minor (reclaiming a frame) page faults:") + num("Major (requiring I/O) page faults:"),
        "sys s": sys_, "CPUs (process)": (user + sys_) / wall,
    })
    assert d["allocator"] == ("mimalloc" if v.startswith("mimalloc") else "system"), (f, d["allocator"])
    assert d["build"] == "release", f
(out / "summary.json").write_text(json.dumps({f"{s} {v}": r for (s, v), r in rows.items()}, indent=1))
keys = ["samples/s", "CPUs in steps", "faults/step", "peak RSS MB", "process faults", "sys s", "CPUs (process)"]
print("| strategy | allocator | " + " | ".join(keys) + " |")
print("|---|---|" + "---|" * len(keys))
for (s, v), rs in sorted(rows.items()):
    cell = lambda k: f"{statistics.median(x[k] for x in rs):.3g} ({min(x[k] for x in rs):.3g}-{max(x[k] for x in rs):.3g})"
    print(f"| {s} | {v} | " + " | ".join(cell(k) for k in keys) + " |")
print()
for s in ["head", "full"]:
    base = statistics.median(x["samples/s"] for x in rows[(s, "glibc")])
    for v in ["mimalloc", "mimalloc-purge", "glibc-tuned"]:
        m = statistics.median(x["samples/s"] for x in rows[(s, v)])
        print(f"{s}: {v} / glibc samples/s = {m / base:.2f}")
PYEOF
echo "runs in $out" >&2
