#!/usr/bin/env bash
# Fuzzes wrpn's readers of untrusted files with libFuzzer, ASan and UBSan: builds the targets
# (in scripts/sanitize.sh's build-sanitize/), writes their seed corpora, then runs each target
# for SECONDS (default 60) with one job, and prints executions, coverage and findings per target.
#   scripts/fuzz.sh [SECONDS] [TARGET...]    targets: checkpoint packed config digits cifar idx image
# Corpora grow in fuzz/corpus/<target> (ignored by git; kept between runs), crashes land in
# fuzz/artifacts/<target>/; a crash input belongs in tests/fuzz/regressions/<target>/ with its fix,
# where CTest replays it. The summary goes to fuzz/summary.jsonl (one line per target and run).
# Environment: WRPN_SANITIZE_DIR (default build-sanitize), WRPN_FUZZ_RSS_MB (default 2048).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECONDS_PER_TARGET="${1:-60}"
shift || true
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(checkpoint packed config digits cifar idx image)
DIR="${WRPN_SANITIZE_DIR:-build-sanitize}"
log() { printf '[fuzz] %s\n' "$*"; }

fuzz_targets=()
for t in "${TARGETS[@]}"; do fuzz_targets+=("wrpn_fuzz_$t"); done
if [[ ! -f "$DIR/CMakeCache.txt" ]]; then
  # Configure (and build everything) the sanitizer way once; later runs build only the targets.
  scripts/sanitize.sh -R '^fuzz\.' >/dev/null
fi
cmake --build "$DIR" -j "${WRPN_JOBS:-$(nproc)}" --target wrpn_fuzz_seeds "${fuzz_targets[@]}"
"$DIR/tests/fuzz/wrpn_fuzz_seeds" fuzz/seeds >/dev/null

export ASAN_OPTIONS="detect_leaks=1:detect_odr_violation=0:${ASAN_OPTIONS:-}"
export LSAN_OPTIONS="suppressions=$ROOT/scripts/sanitize/lsan.supp:print_suppressions=0:${LSAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
mkdir -p fuzz
status=0
for t in "${TARGETS[@]}"; do
  corpus="fuzz/corpus/$t" artifacts="fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  inputs=("$corpus" "fuzz/seeds/$t")
  [[ -d "tests/fuzz/regressions/$t" ]] && inputs+=("tests/fuzz/regressions/$t")
  log "$t: ${SECONDS_PER_TARGET}s"
  rc=0
  "$DIR/tests/fuzz/wrpn_fuzz_$t" -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 \
    -rss_limit_mb="${WRPN_FUZZ_RSS_MB:-2048}" -timeout=25 -max_len=262144 \
    -artifact_prefix="$artifacts/" "${inputs[@]}" >"fuzz/$t.log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "fuzz/$t.log" | tail -n1)
  last=$(grep -E '^#[0-9]+' "fuzz/$t.log" | tail -n1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  crashes=$(find "$artifacts" -type f | wc -l)
  printf '{"target": "%s", "seconds": %s, "executions": %s, "coverage_edges": %s, "features": %s, "corpus": %s, "artifacts": %s, "exit": %s, "date": "%s"}\n' \
    "$t" "$SECONDS_PER_TARGET" "${execs:-0}" "${cov:-0}" "${ft:-0}" "${corp:-0}" "$crashes" "$rc" \
    "$(date -u +%FT%TZ)" | tee -a fuzz/summary.jsonl
  if ((rc != 0)); then
    log "$t: FINDING (exit $rc), see fuzz/$t.log and $artifacts/"
    grep -m3 -E 'DEFECT|ERROR: |SUMMARY' "fuzz/$t.log" || true
    status=1
  fi
done
exit $status
