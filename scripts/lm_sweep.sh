#!/usr/bin/env bash
# Trains the word-level language model (wrpn_lm) on the Jane Austen corpus over a grid of
# (weight bits / hidden bits) x width and writes a results table (CSV and Markdown: test and
# validation perplexity, parameters, bit-ops per token, weight storage, epochs, time) and a plot
# of test perplexity against bit-ops per token, one line per width (PNG, matplotlib).
#
#   scripts/lm_sweep.sh [--precisions fp32,4/4,2/2] [--widths 1,2] [--jobs N] [--out runs/lm]
#                       [--bin DIR] [-- extra wrpn_lm flags, e.g. --epochs 6 --hidden-size 128]
# Runs are named w<wb>h<hb>_x<width>. --jobs N: N runs at a time, each with --threads 1 (one per
# core). Finished runs are kept: re-running skips them and resumes interrupted ones.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PRECISIONS="fp32,4/4,2/2"
WIDTHS="1,2"
JOBS=1
OUT="runs/lm"
BIN=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --precisions) PRECISIONS="$2"; shift 2 ;;
    --widths) WIDTHS="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    *) echo "lm_sweep.sh: unknown argument '$1' (wrpn_lm flags go after --)" >&2; exit 2 ;;
  esac
done
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || { echo "lm_sweep.sh: --jobs must be a positive integer" >&2; exit 2; }
if [[ -z "$BIN" ]]; then
  scripts/setup.sh >/dev/null
  BIN="${WRPN_BUILD_DIR:-build}/examples"
fi
[[ -x "$BIN/wrpn_lm" ]] || { echo "lm_sweep.sh: no wrpn_lm in $BIN" >&2; exit 2; }
PY=.venv/bin/python
"$PY" -c "import matplotlib" 2>/dev/null || "$PY" -m pip install -q matplotlib
mkdir -p "$OUT"

run_one() {
  local p="$1" w="$2"; shift 2
  local wb hb
  if [[ "$p" == "fp32" ]]; then wb=32; hb=32; else wb="${p%/*}"; hb="${p#*/}"; fi
  local name="w${wb}h${hb}_x${w}" dir="$OUT/w${wb}h${hb}_x${w}"
  if [[ -f "$dir/summary.json" ]] && grep -q '"completed": true' "$dir/summary.json"; then
    echo "[lm_sweep] $name: done"; return 0
  fi
  local resume=()
  [[ -f "$dir/last.ckpt" ]] && resume=(--resume)
  echo "[lm_sweep] $name: training (log $dir.log)"
  "$BIN/wrpn_lm" --weight-bits "$wb" --hidden-bits "$hb" --width "$w" --run-dir "$dir" \
    --threads 1 "${resume[@]}" "$@" >"$dir.log" 2>&1 || { echo "[lm_sweep] $name failed: see $dir.log" >&2; return 1; }
}

IFS=',' read -r -a PS <<<"$PRECISIONS"
IFS=',' read -r -a WS <<<"$WIDTHS"
status=0
running=0
# Widest first: the longest runs start first.
for ((i = ${#WS[@]} - 1; i >= 0; i--)); do
  for p in "${PS[@]}"; do
    run_one "$p" "${WS[$i]}" "$@" &
    running=$((running + 1))
    if ((running >= JOBS)); then wait -n || status=1; running=$((running - 1)); fi
  done
done
while ((running > 0)); do wait -n || status=1; running=$((running - 1)); done
"$PY" scripts/lm_report.py "$OUT"
exit $status
