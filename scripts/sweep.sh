#!/usr/bin/env bash
# Trains a grid of (weight bits / activation bits) x width on a dataset and writes a results
# table (CSV and Markdown: accuracy, parameters, bit-ops, weight storage, time per epoch) and a
# plot of accuracy against bit-ops, one line per width (PNG, matplotlib).
#
#   scripts/sweep.sh [--precisions fp32,4/4,2/4,2/2] [--widths 1,2,3] [--seeds 0]
#                    [--cells P:W:S,...] [--jobs N] [--model resnet20] [--out runs/sweep]
#                    [--bin DIR] [-- extra wrpn_train flags, e.g. --epochs 10 --dataset cifar10]
# --cells adds single runs to the grid (P:W:S = precision:width:seed, e.g. 4/4:2:1 for a second
# seed of the 2x 4/4 cell); --precisions '' --cells ... runs only those. Runs are named
# w<wb>a<ab>_x<width> for seed 0 and w<wb>a<ab>_x<width>_s<seed> otherwise.
# --jobs N: N runs at a time, each with --threads 1 (one per core; OpenMP threads that share
# cores spin and crawl), in the order given, longest first being the best packing.
# --bin DIR: use the wrpn_train in DIR (e.g. an installed bin/) instead of setting up and
# building ${WRPN_BUILD_DIR:-build}.
# Finished runs are kept: re-running the sweep skips them and resumes interrupted ones.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PRECISIONS="fp32,4/4,2/4,2/2"
WIDTHS="1,2,3"
SEEDS="0"
CELLS=""
JOBS=1
MODEL="resnet20"
OUT="runs/sweep"
BIN=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --precisions) PRECISIONS="$2"; shift 2 ;;
    --widths) WIDTHS="$2"; shift 2 ;;
    --seeds) SEEDS="$2"; shift 2 ;;
    --cells) CELLS="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --bin) BIN="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n 2,16p "$0"; exit 0 ;;
    *) echo "sweep.sh: unknown argument '$1' (wrpn_train flags go after --)" >&2; exit 2 ;;
  esac
done
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || { echo "sweep.sh: --jobs must be a positive integer" >&2; exit 2; }
if [[ -z "$BIN" ]]; then
  scripts/setup.sh >/dev/null
  BIN="${WRPN_BUILD_DIR:-build}/examples"
fi
[[ -x "$BIN/wrpn_train" ]] || { echo "sweep.sh: no wrpn_train in $BIN" >&2; exit 2; }
PY=.venv/bin/python
"$PY" -c "import matplotlib" 2>/dev/null || "$PY" -m pip install -q matplotlib
mkdir -p "$OUT"

# The run list, one "precision width seed" line each: the grid, then --cells.
LIST=()
IFS=, read -ra PS <<<"$PRECISIONS"
IFS=, read -ra WS <<<"$WIDTHS"
IFS=, read -ra SS <<<"$SEEDS"
for p in "${PS[@]}"; do
  for w in "${WS[@]}"; do
    for s in "${SS[@]}"; do LIST+=("$p $w $s"); done
  done
done
IFS=, read -ra CS <<<"$CELLS"
for c in "${CS[@]}"; do
  IFS=: read -r p w s <<<"$c"
  [[ -n "$p" && -n "$w" && -n "$s" ]] || { echo "sweep.sh: bad cell '$c' (expected P:W:S)" >&2; exit 2; }
  LIST+=("$p $w $s")
done
[[ ${#LIST[@]} -gt 0 ]] || { echo "sweep.sh: nothing to run" >&2; exit 2; }

THREADS=()
[[ "$JOBS" -gt 1 ]] && THREADS=(--threads 1)

# run_one <precision> <width> <seed> [wrpn_train flags]: trains one cell (or keeps it when done).
run_one() {
  local p="$1" w="$2" s="$3" wb ab dir
  shift 3
  if [[ "$p" == fp32 ]]; then wb=32; ab=32; else wb="${p%/*}"; ab="${p#*/}"; fi
  dir="$OUT/w${wb}a${ab}_x${w}"
  [[ "$s" != 0 ]] && dir="${dir}_s${s}"
  if [[ -f "$dir/summary.json" ]] && grep -q '"completed": true' "$dir/summary.json"; then
    echo "== $dir: done, kept"
    return 0
  fi
  echo "== $dir: started $(date -u +%H:%M:%S)"
  if ! "$BIN/wrpn_train" --model "$MODEL" --dataset digits --epochs 10 --device cpu --quiet \
      "${THREADS[@]}" "$@" --weight-bits "$wb" --act-bits "$ab" --width "$w" --seed "$s" \
      --run-dir "$dir" --auto-resume >"$dir.log" 2>&1; then
    echo "   $dir failed; see $dir.log" >&2
    tail -5 "$dir.log" >&2
    return 1
  fi
  echo "== $dir: $(grep -o '"best_top1": [0-9.]*' "$dir/summary.json"), finished $(date -u +%H:%M:%S)"
}

# N workers take the runs in order; a failed run fails the sweep after the others finish.
FAILED="$OUT/.failed"
rm -f "$FAILED"
NEXT="$OUT/.next"
echo 0 >"$NEXT"
worker() {
  local i
  while true; do
    i="$(flock "$NEXT" bash -c 'i=$(cat "$1"); echo $((i + 1)) >"$1"; echo "$i"' _ "$NEXT")"
    [[ "$i" -lt ${#LIST[@]} ]] || return 0
    # shellcheck disable=SC2086
    run_one ${LIST[$i]} "$@" || touch "$FAILED"
  done
}
for ((j = 0; j < JOBS; ++j)); do worker "$@" & done
wait
rm -f "$NEXT"
[[ ! -e "$FAILED" ]] || { rm -f "$FAILED"; echo "sweep.sh: some runs failed" >&2; exit 1; }
"$PY" scripts/sweep_report.py "$OUT"
