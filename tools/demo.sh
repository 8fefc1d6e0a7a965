#!/usr/bin/env bash
# The README's first command: set up, generate the built-in WAN-like demo model, convert it to FP8 with
# learned rounding, show the file and its per-layer quality.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
mkdir -p demo
[ -f demo/wan_demo.safetensors ] || python3 tools/make_demo_model.py -o demo/wan_demo.safetensors
build/quantflow inspect demo/wan_demo.safetensors | sed -n '1,3p'
# The main job: FP8 with learned rounding (the reference's default, --optimizer original) and the WAN filter.
build/quantflow -i demo/wan_demo.safetensors -o demo/wan_demo_fp8.safetensors --comfy_quant --wan \
  --manual_seed 0 --overwrite --report demo/report.json
build/quantflow inspect demo/wan_demo_fp8.safetensors | sed -n '1,5p'
# Per-layer quality and what ComfyUI will make of it.
build/quantflow compare demo/wan_demo.safetensors demo/wan_demo_fp8.safetensors | tail -n 4
