#!/usr/bin/env bash
# Bounded memory (issue 2): convert a generated WAN 2.1 14B-shaped model of at least 3 GB with
# --memory-budget 256MiB and require peak resident memory (file pages included) below 1 GiB.
# Usage: tools/check_memory_bound.sh QUANTFLOW_BINARY WORKDIR
set -u
bin=$1
work=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"
trap 'rm -f "$work"/model.safetensors "$work"/out.safetensors "$work"/log' EXIT
free_kb=$(df -Pk "$work" | awk 'NR==2 {print $4}')
if [ "$free_kb" -lt 8000000 ]; then
  echo "skipped: less than 8 GB free in $work"; echo "0 passed, 0 failed, 1 skipped"; exit 0
fi
python3 "$here/make_demo_model.py" --preset wan14b --blocks 4 -o "$work/model.safetensors" || exit 1
size=$(stat -c %s "$work/model.safetensors")
python3 "$here/peak_rss.py" "$bin" -i "$work/model.safetensors" -o "$work/out.safetensors" --comfy_quant --simple \
  --memory-budget 256MiB --progress none --manual_seed 0 --overwrite 2> "$work/log"
rc=$?
cat "$work/log"
peak=$(sed -n 's/.*peak_rss_bytes=\([0-9]*\).*/\1/p' "$work/log")
limit=$((1024 * 1024 * 1024))
echo "model $size bytes, peak RSS ${peak:-?} bytes (limit $limit)"
if [ "$rc" -eq 0 ] && [ "$size" -ge 3000000000 ] && [ -n "$peak" ] && [ "$peak" -lt "$limit" ]; then
  echo "1 passed, 0 failed"; exit 0
fi
echo "0 passed, 1 failed"; exit 1
