#!/usr/bin/env bash
# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer: builds build-asan/ (AUTOMODEL_SANITIZE=ON,
# RelWithDebInfo, no benchmarks) and runs ctest and the pytest end-to-end tests against it. Sanitizer reports go to
# build-asan/sanitizer-logs/ (the e2e tests capture the binary's stderr) and are listed at the end; any report, or
# any failing test, fails the run.
#
# usage: scripts/sanitize.sh [--oracle] [--no-build] [-- pytest args...]
#   --oracle    also run the pytest oracle tests (tests/oracle; slow under the sanitizers)
#   --no-build  reuse build-asan/ as it is
#   CXX=clang++ scripts/sanitize.sh builds with clang instead of the system c++ (g++ 12).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/build-asan"
LOGS="$BUILD/sanitizer-logs"
oracle=0
build=1
pytest_args=()
while (($#)); do
  case "$1" in
    --oracle) oracle=1 ;;
    --no-build) build=0 ;;
    --) shift; pytest_args=("$@"); break ;;
    *) echo "usage: $0 [--oracle] [--no-build] [-- pytest args...]" >&2; exit 2 ;;
  esac
  shift
done

# exitcode 66: a sanitizer report must not pass for automodel's own error exit (1), which tests expect.
# detect_leaks: on; nothing of ours or of the third-party libraries leaks today, so there is no suppression file.
export ASAN_OPTIONS="detect_leaks=1:check_initialization_order=1:strict_init_order=1:exitcode=66:log_path=$LOGS/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=66:log_path=$LOGS/ubsan"

start=$(date +%s)
"$ROOT/scripts/setup.sh" --oracle
if ((build)); then
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAUTOMODEL_SANITIZE=ON -DAUTOMODEL_BUILD_BENCH=OFF \
    "${launcher[@]}" >/dev/null
  mkdir -p "$LOGS"  # the build runs the unit test binary to list its tests
  cmake --build "$BUILD" -j"$(nproc)"
fi
built=$(date +%s)
rm -rf "$LOGS"
mkdir -p "$LOGS"

status=0
(cd "$BUILD" && ctest --output-on-failure -j"$(nproc)") || status=1
tested=$(date +%s)
suites=("$ROOT/tests/e2e")
((oracle)) && suites+=("$ROOT/tests/oracle")
AUTOMODEL_BUILD_DIR="$BUILD" "$ROOT/.venv/bin/python" -m pytest -q -p no:cacheprovider "${suites[@]}" \
  "${pytest_args[@]}" || status=1
done_at=$(date +%s)

echo "sanitize.sh: build $((built - start)) s, ctest $((tested - built)) s, pytest $((done_at - tested)) s," \
  "total $((done_at - start)) s"
reports=("$LOGS"/*)
if [[ -e "${reports[0]}" ]]; then
  status=1
  echo "sanitizer reports (${#reports[@]}), in $LOGS:"
  for f in "${reports[@]}"; do
    echo "== $f"
    grep -m1 -E "ERROR: |runtime error|SUMMARY" "$f" || true
    grep -m4 -E "^ +#[0-9]+ .* (/|\.\./)" "$f" | grep -v -E "libasan|libubsan|compiler-rt" || true
  done
fi
exit $status
