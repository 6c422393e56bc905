#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/, clang, AUTOMODEL_FUZZ=ON) into build-fuzz/ and runs each for a while on
# its seed corpus (tests/fuzz/corpus/<target>/ and the past findings in tests/fuzz/regressions/<target>/, read only)
# and dictionary; inputs that add coverage go to
# build-fuzz/corpus/<target>/ and are reused by the next run. A finding is anything but an automodel::Error: a crash,
# a sanitizer report, another exception, a leak, an input slower than --timeout seconds or one that needs more than
# --rss-mb MB. After fuzzing, every corpus input runs once more under LeakSanitizer (libFuzzer itself checks only
# inputs that add coverage). Findings are written to build-fuzz/findings/<target>/ (crash-*, timeout-*, oom-*,
# leak-*, replay-*.log for a failed replay; the target's log in fuzz.log); the script exits non-zero when a run
# left any.
#
# usage: scripts/fuzz.sh [--seconds N] [--jobs J] [--timeout S] [--rss-mb M] [--no-build] [target...]
#   --seconds N  run each target N seconds (default 60)
#   --jobs J     J parallel fuzzing processes per target that go on past findings (libFuzzer's -fork=J);
#                without it one process stops at its first finding
#   targets      default: all of them (the names of tests/fuzz/*_fuzz.cpp without _fuzz.cpp)
# Reproduce a finding: build-fuzz/tests/fuzz/<target>_fuzz build-fuzz/findings/<target>/crash-...
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/build-fuzz"
seconds=60
jobs=0
timeout=10
rss_mb=2048
build=1
targets=()
usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}
while (($#)); do
  case "$1" in
    --seconds) seconds="$2"; shift ;;
    --jobs) jobs="$2"; shift ;;
    --timeout) timeout="$2"; shift ;;
    --rss-mb) rss_mb="$2"; shift ;;
    --no-build) build=0 ;;
    -h|--help) usage ;;
    -*) usage ;;
    *) targets+=("$1") ;;
  esac
  shift
done
if ((${#targets[@]} == 0)); then
  for f in "$ROOT"/tests/fuzz/*_fuzz.cpp; do
    name="$(basename "$f")"
    targets+=("${name%_fuzz.cpp}")
  done
fi

if ((build)); then
  "$ROOT/scripts/setup.sh" --fuzz
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="${CXX:-clang++}" \
    -DAUTOMODEL_FUZZ=ON "${launcher[@]}" >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" --target "${targets[@]/%/_fuzz}"
fi

# Leaks are findings too (libFuzzer checks each input); UBSan stops at its first report (the build sets
# -fno-sanitize-recover), printing the stack.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:check_initialization_order=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
status=0
for t in "${targets[@]}"; do
  bin="$BUILD/tests/fuzz/${t}_fuzz"
  [[ -x "$bin" ]] || { echo "fuzz.sh: no target '$t' ($bin)" >&2; exit 2; }
  findings="$BUILD/findings/$t"
  corpus="$BUILD/corpus/$t"
  mkdir -p "$findings" "$corpus"
  list_findings() { find "$findings" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' \
    -o -name 'leak-*' -o -name 'replay-*' \) -printf '%f\n' | sort; }
  before="$(list_findings)"
  args=(-max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb="$rss_mb" -malloc_limit_mb="$rss_mb"
        -artifact_prefix="$findings/" -print_final_stats=1)
  [[ -f "$ROOT/tests/fuzz/$t.dict" ]] && args+=(-dict="$ROOT/tests/fuzz/$t.dict")
  ((jobs > 0)) && args+=(-fork="$jobs" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  echo "== $t: ${seconds}s"
  seeds=("$ROOT/tests/fuzz/corpus/$t")
  # Inputs that once crashed a target (tests/fuzz/regressions/<target>/) run first on every run.
  [[ -d "$ROOT/tests/fuzz/regressions/$t" ]] && seeds+=("$ROOT/tests/fuzz/regressions/$t")
  (cd "$findings" && "$bin" "${args[@]}" "$corpus" "${seeds[@]}" >"$findings/fuzz.log" 2>&1) || true
  # libFuzzer looks for leaks only on inputs that add coverage, so a leak in a construct the corpus already covers
  # is never reported while fuzzing. Every input of the corpus once more, LeakSanitizer checking at each exit:
  if ! find "$corpus" "${seeds[@]}" -type f -print0 |
    xargs -0 -r -n 256 "$bin" -timeout="$timeout" -rss_limit_mb="$rss_mb" >"$findings/replay.log" 2>&1; then
    cp "$findings/replay.log" "$findings/replay-$(date +%Y%m%d-%H%M%S).log"
  fi
  new="$(comm -13 <(echo "$before") <(list_findings) | sed '/^$/d')"
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)" "$findings/fuzz.log" | tr '\n' ' ' || true
  echo
  if [[ -n "$new" ]]; then
    status=1
    echo "   new findings in $findings (log: $findings/fuzz.log):"
    sed 's/^/     /' <<<"$new"
  fi
done
exit $status
