#!/usr/bin/env bash
# Data-parallel scaling on one machine: training images/s of 2 processes x 1 thread (torchrun,
# Gloo) against 1 process x 1 thread, and against 1 process x 2 threads, on the same model and
# global batch, measured in the same run, repeated and paired (each repetition runs the three
# back to back, in a rotating order). Writes <out>/scaling.json and <out>/scaling.md.
#
#   scripts/bench_dist.sh [--width 2] [--bits 4] [--model resnet20] [--batch-size 64]
#                         [--epochs 2] [--reps 5] [--dataset digits] [--out results/dist_scaling]
#
# The images/s of a run is its last epoch's (summary.json train_images_per_second): the first
# epoch warms the allocator and oneDNN's kernel cache. Run it on an otherwise idle machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WIDTH=2 BITS=4 MODEL=resnet20 BATCH=64 EPOCHS=2 REPS=5 DATASET=digits OUT=results/dist_scaling
BIN="${WRPN_BIN:-build/examples}"
while (($#)); do
  case "$1" in
    --width) WIDTH="$2"; shift 2 ;;
    --bits) BITS="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --batch-size) BATCH="$2"; shift 2 ;;
    --epochs) EPOCHS="$2"; shift 2 ;;
    --reps) REPS="$2"; shift 2 ;;
    --dataset) DATASET="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) echo "bench_dist.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
TORCHRUN="${TORCHRUN:-.venv/bin/torchrun}"
[[ -x "$BIN/wrpn_train" ]] || { echo "bench_dist.sh: $BIN/wrpn_train not built (scripts/setup.sh)" >&2; exit 1; }
[[ -x "$TORCHRUN" ]] || { echo "bench_dist.sh: $TORCHRUN not found (scripts/setup.sh creates .venv)" >&2; exit 1; }
mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
COMMON=(--model "$MODEL" --dataset "$DATASET" --width "$WIDTH" --weight-bits "$BITS" --act-bits "$BITS"
        --epochs "$EPOCHS" --batch-size "$BATCH" --device cpu --quiet)

run_one() {  # run_one <config> <rep>
  local cfg="$1" rep="$2" dir="$WORK/$1_$2"
  case "$cfg" in
    p1t1) "$BIN/wrpn_train" "${COMMON[@]}" --threads 1 --run-dir "$dir" >/dev/null 2>"$dir.err" ;;
    p1t2) "$BIN/wrpn_train" "${COMMON[@]}" --threads 2 --run-dir "$dir" >/dev/null 2>"$dir.err" ;;
    p2t1) "$TORCHRUN" --standalone --nproc-per-node 2 --no-python "$BIN/wrpn_train" "${COMMON[@]}" \
            --threads 1 --run-dir "$dir" >/dev/null 2>"$dir.err" ;;
  esac || { cat "$dir.err" >&2; echo "bench_dist.sh: $cfg rep $rep failed" >&2; exit 1; }
  cp "$dir/summary.json" "$OUT/summary_${cfg}_rep${rep}.json"
  echo "[bench_dist] rep $rep $cfg: $(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['train_images_per_second'], 1))" "$dir/summary.json") images/s" >&2
}

CONFIGS=(p1t1 p2t1 p1t2)
for ((rep = 1; rep <= REPS; rep++)); do
  for ((k = 0; k < 3; k++)); do
    run_one "${CONFIGS[$(((rep + k) % 3))]}" "$rep"
  done
done

python3 - "$OUT" "$REPS" "$MODEL" "$WIDTH" "$BITS" "$BATCH" "$DATASET" <<'EOF'
import json, statistics, sys, os, platform
out, reps, model, width, bits, batch, dataset = sys.argv[1:8]
reps = int(reps)
ips = {c: [json.load(open(f"{out}/summary_{c}_rep{r}.json"))["train_images_per_second"]
           for r in range(1, reps + 1)] for c in ("p1t1", "p2t1", "p1t2")}
def stats(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "values": xs}
ratio_dp = [a / b for a, b in zip(ips["p2t1"], ips["p1t1"])]
ratio_thr = [a / b for a, b in zip(ips["p1t2"], ips["p1t1"])]
ratio_dp_thr = [a / b for a, b in zip(ips["p2t1"], ips["p1t2"])]
cpu = "unknown"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except OSError:
    pass
res = {"model": model, "width": float(width), "bits": int(bits), "global_batch": int(batch),
       "dataset": dataset, "reps": reps, "cpu": cpu, "cores": os.cpu_count(),
       "images_per_second": {k: stats(v) for k, v in ips.items()},
       "ratio_2proc_1thread_vs_1proc_1thread": stats(ratio_dp),
       "ratio_1proc_2threads_vs_1proc_1thread": stats(ratio_thr),
       "ratio_2proc_1thread_vs_1proc_2threads": stats(ratio_dp_thr)}
json.dump(res, open(f"{out}/scaling.json", "w"), indent=2)
f = lambda s: f"{s['median']:.2f} (min {s['min']:.2f}, max {s['max']:.2f})"
g = lambda s: f"{s['median']:.1f} (min {s['min']:.1f}, max {s['max']:.1f})"
md = [f"# Data-parallel scaling: {model} {width}x {bits}/{bits}, global batch {batch}, {dataset}",
      "", f"{cpu}, {os.cpu_count()} cores, {reps} paired repetitions; images/s of the last epoch.", "",
      "| configuration | train images/s, median (min, max) |", "|---|---|",
      f"| 1 process x 1 thread | {g(res['images_per_second']['p1t1'])} |",
      f"| 1 process x 2 threads | {g(res['images_per_second']['p1t2'])} |",
      f"| 2 processes x 1 thread (torchrun, Gloo) | {g(res['images_per_second']['p2t1'])} |", "",
      "| ratio (paired per repetition) | median (min, max) |", "|---|---|",
      f"| 2 processes x 1 thread / 1 process x 1 thread | {f(res['ratio_2proc_1thread_vs_1proc_1thread'])} |",
      f"| 1 process x 2 threads / 1 process x 1 thread | {f(res['ratio_1proc_2threads_vs_1proc_1thread'])} |",
      f"| 2 processes x 1 thread / 1 process x 2 threads | {f(res['ratio_2proc_1thread_vs_1proc_2threads'])} |"]
open(f"{out}/scaling.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
EOF
