#!/usr/bin/env bash
# Integer inference against the fake-quantized model on real data: trains a few digits models
# (ResNet-20, 10 epochs, as scripts/run.sh; skipped when a run already finished), then evaluates
# every checkpoint with `wrpn_eval --engine int8 --compare` on its whole test split and writes
# results/int8_inference/agreement.{jsonl,md}. Extra checkpoints (e.g. the Fashion-MNIST sweep's
# runs/fashion_sweep/*/best.ckpt) can be passed as arguments.
# Environment: WRPN_BUILD_DIR (default build), WRPN_THREADS (default 1), OUT (default
# results/int8_inference), RUNS (default runs/int8_digits).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${WRPN_BUILD_DIR:-build}/examples"
THREADS="${WRPN_THREADS:-1}"
OUT="${OUT:-results/int8_inference}"
RUNS="${RUNS:-runs/int8_digits}"
mkdir -p "$OUT" "$RUNS"
COMMON=(--model resnet20 --dataset digits --epochs 10 --batch-size 64 --lr 0.1 --device cpu
        --threads "$THREADS")
cells=(
  "w4a4_x1|--weight-bits 4 --act-bits 4 --width 1"
  "w4a4_x2|--weight-bits 4 --act-bits 4 --width 2"
  "w2a2_x2|--weight-bits 2 --act-bits 2 --width 2"
  "w2a4_x2|--weight-bits 2 --act-bits 4 --width 2"
  "w1a4_x2|--weight-bits 1 --act-bits 4 --width 2"
  "w4a4_x2_qres|--weight-bits 4 --act-bits 4 --width 2 --quantized-residual"
  "w4a4_x2_qfirst_qlast|--weight-bits 4 --act-bits 4 --width 2 --quantize-first --quantize-last"
)
ckpts=()
for cell in "${cells[@]}"; do
  name="${cell%%|*}"
  read -r -a flags <<< "${cell#*|}"
  if [[ ! -f "$RUNS/$name/summary.json" ]]; then
    echo "== train digits $name"
    "$BIN/wrpn_train" "${COMMON[@]}" "${flags[@]}" --run-dir "$RUNS/$name" --auto-resume
  fi
  ckpts+=("$RUNS/$name/best.ckpt")
done
ckpts+=("$@")
: > "$OUT/agreement.jsonl"
for c in "${ckpts[@]}"; do
  echo "== $c"
  "$BIN/wrpn_eval" "$c" --engine int8 --compare --threads "$THREADS" --json "$OUT/eval.tmp.json"
  "${PYTHON:-.venv/bin/python}" - "$c" "$OUT/eval.tmp.json" >> "$OUT/agreement.jsonl" <<'PY'
import json, sys
j = json.load(open(sys.argv[2]))
j["checkpoint"] = sys.argv[1]
print(json.dumps(j))
PY
done
rm -f "$OUT/eval.tmp.json"
"${PYTHON:-.venv/bin/python}" - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = [json.loads(l) for l in open(f"{out}/agreement.jsonl")]
lines = ["| checkpoint | dataset | test images | int8 top-1 | top-1 differs from fake-quant | largest logit difference |",
         "|---|---|---|---|---|---|"]
for r in rows:
    lines.append(f"| {r['checkpoint']} | {r['dataset']} | {r['images']} | {100*r['top1']:.2f}% | "
                 f"{r['top1_disagreements']} | {r['max_logit_diff']:.3g} |")
open(f"{out}/agreement.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
