#!/usr/bin/env bash
# The README's first command: set up, generate the built-in WAN-like demo model, convert it to FP8.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
mkdir -p demo
[ -f demo/wan_demo.safetensors ] || python3 tools/make_demo_model.py -o demo/wan_demo.safetensors
build/quantflow inspect demo/wan_demo.safetensors | head -n 3
build/quantflow -i demo/wan_demo.safetensors -o demo/wan_demo_fp8.safetensors --comfy_quant --simple --wan \
  --manual_seed 0 --overwrite
build/quantflow inspect demo/wan_demo_fp8.safetensors | head -n 5
