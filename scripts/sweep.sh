#!/usr/bin/env bash
# Trains a grid of (weight bits / activation bits) x width on a dataset and writes a results
# table (CSV and Markdown: accuracy, parameters, bit-ops, weight storage) and a plot of accuracy
# against bit-ops, one line per width (PNG, matplotlib).
#
#   scripts/sweep.sh [--precisions fp32,4/4,2/4,2/2] [--widths 1,2,3] [--out runs/sweep]
#                    [--bin DIR] [-- extra wrpn_train flags, e.g. --epochs 10 --dataset cifar10]
# --bin DIR: use the wrpn_train in DIR (e.g. an installed bin/) instead of setting up and
# building ${WRPN_BUILD_DIR:-build}.
# Finished runs are kept: re-running the sweep skips them and resumes interrupted ones.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PRECISIONS="fp32,4/4,2/4,2/2"
WIDTHS="1,2,3"
OUT="runs/sweep"
BIN=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --precisions) PRECISIONS="$2"; shift 2 ;;
    --widths) WIDTHS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n 2,11p "$0"; exit 0 ;;
    *) echo "sweep.sh: unknown argument '$1' (wrpn_train flags go after --)" >&2; exit 2 ;;
  esac
done
if [[ -z "$BIN" ]]; then
  scripts/setup.sh >/dev/null
  BIN="${WRPN_BUILD_DIR:-build}/examples"
fi
[[ -x "$BIN/wrpn_train" ]] || { echo "sweep.sh: no wrpn_train in $BIN" >&2; exit 2; }
PY=.venv/bin/python
"$PY" -c "import matplotlib" 2>/dev/null || "$PY" -m pip install -q matplotlib
mkdir -p "$OUT"

IFS=, read -ra PS <<<"$PRECISIONS"
IFS=, read -ra WS <<<"$WIDTHS"
for p in "${PS[@]}"; do
  if [[ "$p" == fp32 ]]; then wb=32; ab=32; else wb="${p%/*}"; ab="${p#*/}"; fi
  for w in "${WS[@]}"; do
    dir="$OUT/w${wb}a${ab}_x${w}"
    if [[ -f "$dir/summary.json" ]] && grep -q '"completed": true' "$dir/summary.json"; then
      echo "== $dir: done, kept"
      continue
    fi
    echo "== $dir"
    "$BIN/wrpn_train" --model resnet20 --dataset digits --epochs 10 --device cpu --quiet "$@" \
      --weight-bits "$wb" --act-bits "$ab" --width "$w" --run-dir "$dir" --resume >"$dir.log" 2>&1 \
      || { echo "   failed; see $dir.log" >&2; tail -5 "$dir.log" >&2; exit 1; }
    grep -o '"best_top1": [0-9.]*' "$dir/summary.json" | sed 's/^/   /'
  done
done
"$PY" scripts/sweep_report.py "$OUT"
