#!/usr/bin/env bash
# Quick start 1: install what is missing, build, and run the main job: fine-tune the embedded tiny Llama
# (assets/tiny-llama) on the embedded SQuAD-shaped data (assets/tiny-squad) with
# examples/llm_finetune/tiny_llama_squad.yaml. Extra arguments are recipe overrides (--section.key value) or
# --threads N; checkpoints and training.jsonl / validation.jsonl go to checkpoints/tiny_llama_squad/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
"$ROOT/scripts/build.sh"
cd "$ROOT"
exec "$ROOT/build/automodel" finetune llm -c examples/llm_finetune/tiny_llama_squad.yaml "$@"
