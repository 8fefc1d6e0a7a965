#!/usr/bin/env bash
# Installs what quantflow needs on Debian 12 (apt + pip) and builds it into build/ (Release).
# clang-14, libclang-rt-14-dev (libFuzzer) and llvm-14 (llvm-symbolizer) are for tools/fuzz.sh.
# Usage: tools/setup.sh [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
PACKAGES="cmake g++ make python3 python3-pip libtbb-dev libsimdjson-dev libboost-program-options-dev doctest-dev \
libopenblas-dev liblapacke-dev clang-14 libclang-rt-14-dev llvm-14"
missing=""
for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
if ! python3 -c "import safetensors, numpy" 2>/dev/null; then
  echo "setup: installing Python packages safetensors, numpy"
  python3 -m pip install --quiet safetensors numpy 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages safetensors numpy
fi
# comfy-kitchen (ComfyUI's kernel library) for the interop_kitchen test, with torch, both from PyPI (the only
# Python registry CI reaches; PyPI's Linux torch brings its CUDA libraries: measured 79 s and 5.6 GB installed on
# this machine). comfy-kitchen declares no dependencies; it imports packaging. QF_NO_KITCHEN=1 skips it (the test
# then reports itself skipped).
if [ "${QF_NO_KITCHEN:-0}" != 1 ] && ! python3 -c "import torch, comfy_kitchen" 2>/dev/null; then
  echo "setup: installing Python packages torch, comfy-kitchen, packaging (for the interop_kitchen test)"
  python3 -m pip install --quiet --progress-bar off torch comfy-kitchen packaging 2>/dev/null ||
    python3 -m pip install --quiet --progress-bar off --break-system-packages torch comfy-kitchen packaging
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DQF_WERROR=ON "$@" >/dev/null
cmake --build build -j"$(nproc)"
echo "setup: built build/quantflow"
