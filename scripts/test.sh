#!/usr/bin/env bash
# Quick start 2: install what is missing (packages, the oracle venv, Slurm for the cluster tests), build, run every
# test: GoogleTest units and checks through ctest, then the pytest oracle and end-to-end tests.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh" --oracle --cluster
"$ROOT/scripts/build.sh"
status=0
(cd "$ROOT/build" && ctest --output-on-failure -j"$(nproc)") || status=1
AUTOMODEL_BUILD_DIR="$ROOT/build" "$ROOT/.venv/bin/python" -m pytest -q -p no:cacheprovider "$ROOT/tests" || status=1
exit $status
