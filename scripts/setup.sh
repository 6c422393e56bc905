#!/usr/bin/env bash
# Installs what building automodel needs when it is missing (Debian 12 packages); with --oracle also the Python venv
# (.venv) holding the reference libraries the oracle tests compare with, with --fuzz clang and its libFuzzer, with
# --cluster Slurm, munge and the tools the multi-process tests start (tests/e2e/cluster.py). Flags combine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

APT_PACKAGES=(build-essential cmake pkg-config libopenblas-openmp-dev libdnnl-dev nlohmann-json3-dev libpcre2-dev libyaml-cpp-dev libicu-dev
              zlib1g-dev libzstd-dev
              libjpeg62-turbo-dev libpng-dev libwebp-dev
              libopenmpi-dev openmpi-bin
              libgtest-dev libbenchmark-dev)

oracle=0
for flag in "$@"; do
  case "$flag" in
    # clang with libFuzzer and the sanitizer runtimes (scripts/fuzz.sh).
    --fuzz) APT_PACKAGES+=(clang libclang-rt-14-dev) ;;
    --oracle) oracle=1 ;;
    # One-node Slurm with munge; slurm-wlm-basic-plugins carries mpi_pmix (`srun --mpi=pmix`), libpmix2 the
    # runtime it loads; iproute2 gives `ip netns` for the two-namespace mpirun tests.
    --cluster) APT_PACKAGES+=(slurmctld slurmd slurm-client slurm-wlm-basic-plugins munge libpmix2 libpmix-dev
                              iproute2) ;;
    *) echo "setup: unknown flag $flag (known: --oracle --fuzz --cluster)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root apt-get update -q
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q "${missing[@]}"
fi

if [ "$oracle" = 1 ]; then
  REQ="$ROOT/tests/oracle/requirements.txt"
  DATA_REQ="$ROOT/tests/oracle/requirements-data.txt"
  VENV="$ROOT/.venv"
  STAMP="$VENV/.requirements.sha256"
  want="$(cat "$REQ" "$DATA_REQ" | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
    # Debian's python3 needs python3-venv for ensurepip; other Pythons carry it.
    python3 -c "import ensurepip" 2>/dev/null || DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q python3-venv
    echo "setup: creating the oracle venv in $VENV (torch and friends; a few minutes the first time)"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -r "$REQ"
    "$VENV/bin/pip" install -q --no-deps -r "$DATA_REQ"
    echo "$want" > "$STAMP"
  fi
fi
