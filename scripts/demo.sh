#!/usr/bin/env bash
# Quick start 1: install what is missing, build, and run the main job (`automodel demo` for now).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
"$ROOT/scripts/build.sh"
exec "$ROOT/build/automodel" demo "$@"
