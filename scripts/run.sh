#!/usr/bin/env bash
# The main job: set up, train a 2x-wide ResNet-20 with 4-bit weights and 4-bit activations on the
# built-in digits data (CPU), evaluate it (fake-quantized, then on integer kernels), and print it
# beside an fp32 width-1 baseline trained the same way. Flags pass through to both wrpn_train runs (the baseline keeps width 1 and fp32),
# e.g. scripts/run.sh --model resnet32 --width 3 --weight-bits 2 --epochs 20.
# Environment: WRPN_RUN_DIR (default runs/main), WRPN_BUILD_DIR (default build), WRPN_RESUME=1
# to continue interrupted runs from their last checkpoints instead of starting afresh (by default
# each run replaces the one an earlier invocation left in WRPN_RUN_DIR: --overwrite).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
BIN="${WRPN_BUILD_DIR:-build}/examples"
RUN="${WRPN_RUN_DIR:-runs/main}"
COMMON=(--model resnet20 --dataset digits --epochs 10 --batch-size 64 --lr 0.1 --device cpu)
RESUME=(--overwrite)
[[ "${WRPN_RESUME:-0}" == 1 ]] && RESUME=(--auto-resume)

echo "== 1/4  wide low-precision model: 2x width, 4-bit weights, 4-bit activations"
"$BIN/wrpn_train" "${COMMON[@]}" --width 2 --weight-bits 4 --act-bits 4 "$@" \
  --run-dir "$RUN/wrpn" "${RESUME[@]}"
echo "== 2/4  evaluate its best checkpoint"
"$BIN/wrpn_eval" "$RUN/wrpn/best.ckpt" --json "$RUN/wrpn/eval.json"
echo "== 3/4  the same checkpoint on integer kernels (wrpn::deploy), against the fake-quantized model"
"$BIN/wrpn_eval" "$RUN/wrpn/best.ckpt" --engine int8 --compare --json "$RUN/wrpn/eval_int8.json"
echo "== 4/4  baseline: fp32, width 1, same recipe"
"$BIN/wrpn_train" "${COMMON[@]}" "$@" --width 1 --weight-bits 32 --act-bits 32 \
  --run-dir "$RUN/fp32" "${RESUME[@]}"

"${PYTHON:-.venv/bin/python}" - "$RUN" <<'PY'
import json, sys
run = sys.argv[1]
rows = [("WRPN", json.load(open(f"{run}/wrpn/summary.json"))),
        ("baseline", json.load(open(f"{run}/fp32/summary.json")))]
ev = json.load(open(f"{run}/wrpn/eval.json"))
ei = json.load(open(f"{run}/wrpn/eval_int8.json"))
print()
print(f"{'run':<9} {'model':<9} {'precision':<12} {'best top-1':>10} {'final top-1':>11} "
      f"{'params':>9} {'bit-ops':>10} {'weights':>9} {'minutes':>7}")
for name, s in rows:
    print(f"{name:<9} {s['model']:<9} {s['precision_name']:<12} {100*s['best_top1']:>9.2f}% "
          f"{100*s['final_top1']:>10.2f}% {s['parameters']:>9,} {s['bit_ops']/1e9:>8.2f} G "
          f"{s['weight_storage_bytes']/1024:>6.0f} KiB {s['wall_seconds']/60:>7.1f}")
print(f"\nwrpn_eval on {run}/wrpn/best.ckpt: top-1 {100*ev['top1']:.2f}%, "
      f"top-5 {100*ev['top5']:.2f}%, {ev['images_per_second']:.0f} images/s")
print(f"on integer kernels (--engine int8): top-1 {100*ei['top1']:.2f}%, "
      f"{ei['top1_disagreements']} of {ei['images']} answers differ from the fake-quantized model")
print(f"run directories: {run}/wrpn and {run}/fp32 (metrics.jsonl, summary.json, checkpoints)")
PY
