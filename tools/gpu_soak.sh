#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, with .gpu_bundle carried: converts one generated WAN-shaped
# model RUNS times with the same flags and checks that every run exits 0 and writes the same bytes as the first.
# A failing run prints its exit code and the tail of its stderr. Meant for rare failures (issue 13: one crash in
# 15 AdamW runs on two GPUs), so it reports the count, never stops early.
#
# usage: bash tools/gpu_soak.sh RUNS BLOCKS [quantflow flags...]
#   e.g. bash tools/gpu_soak.sh 40 4 --optimizer adamw --devices all
set -uo pipefail
runs=${1:?runs}
blocks=${2:?blocks}
shift 2
bundle=$PWD/.gpu_bundle
export LD_LIBRARY_PATH="$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
work=$(mktemp -d /tmp/qf_soak.XXXXXX)
trap 'rm -rf "$work"' EXIT
model=$work/model.safetensors
python3 tools/make_demo_model.py --preset wan14b --blocks "$blocks" -o "$model" >/dev/null || exit 1
flags=(--comfy_quant --manual_seed 7 "$@")  # one seed: every run must write the same bytes
echo "soak: $runs runs of: quantflow -i <wan14b, $blocks blocks, $(($(stat -c %s "$model") >> 20)) MiB> ${flags[*]}"
first="" failed=0 differ=0
for ((i = 1; i <= runs; i++)); do
  start=$(date +%s%N)
  "$bundle/bin/quantflow" -i "$model" -o "$work/out.safetensors" --overwrite --progress none "${flags[@]}" \
    >"$work/stdout" 2>"$work/stderr"
  rc=$?
  ms=$((($(date +%s%N) - start) / 1000000))
  if [ $rc -ne 0 ]; then
    failed=$((failed + 1))
    echo "run $i: exit $rc after ${ms} ms"
    tail -5 "$work/stderr" | sed 's/^/    /'
    continue
  fi
  sum=$(sha256sum "$work/out.safetensors" | cut -c1-16)
  [ -z "$first" ] && first=$sum
  note=""
  [ "$sum" != "$first" ] && differ=$((differ + 1)) && note=" (differs from run 1: $first)"
  echo "run $i: ${ms} ms $sum$note"
done
echo "soak: $runs runs, $failed failed, $differ with other bytes"
[ $failed -eq 0 ] && [ $differ -eq 0 ]
