#!/usr/bin/env bash
# Bounded memory, peak resident set = ru_maxrss of the child, mapped file pages included.
#  convert (README "Memory and speed"): convert a generated WAN 2.1 14B-shaped model of at least 3.0e9 bytes
#    with --memory-budget 256MiB; exit 0 and peak RSS below 1 GiB.
#  compare (issue 12 finding 2, "compare holds the whole model in memory": a 3.17 GB model and its 1.6 GB FP8
#    file peaked at 4.8 GB): convert a 1.17 GB WAN-shaped model (demo widths, 12 blocks) to FP8, then
#    `quantflow compare` the pair (1.78 GB mapped, 13x the budget) with --memory-budget 128MiB; exit 0, every
#    layer compared, peak RSS below 384 MiB (1.69 GB before the fix, ~120 MB streamed).
# Usage: tools/check_memory_bound.sh QUANTFLOW_BINARY TMPDIR [convert|compare]
# Works in a fresh subdirectory of TMPDIR that is always removed; skips (exit 0) with too little free space.
set -uo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 QUANTFLOW_BINARY TMPDIR [convert|compare]" >&2
  exit 2
fi
binary=$1
tmp_root=$2
mode=${3:-convert}
here=$(cd "$(dirname "$0")" && pwd)
case $mode in
  convert) limit_bytes=$((1024 * 1024 * 1024)); need_bytes=8000000000 ;;
  compare) limit_bytes=$((384 * 1024 * 1024)); need_bytes=4000000000 ;;
  *) echo "unknown mode '$mode'" >&2; exit 2 ;;
esac
min_model_bytes=3000000000

# Runs a command; writes "exit_code wall_seconds max_rss_bytes" to the file named first and the command's
# stdout to the file named second. ru_maxrss of RUSAGE_CHILDREN covers exactly the command.
measure_py='import resource, subprocess, sys, time
start = time.monotonic()
with open(sys.argv[2], "w") as out:
    code = subprocess.call(sys.argv[3:], stdout=out)
wall = time.monotonic() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
with open(sys.argv[1], "w") as f:
    f.write(f"{code} {wall:.2f} {rss}\n")
sys.exit(code)'

mkdir -p "$tmp_root" || { echo "cannot create $tmp_root"; echo "0 passed, 1 failed"; exit 1; }
free_bytes=$(df -P -B1 "$tmp_root" | awk 'NR == 2 { print $4 }')
if [ "${free_bytes:-0}" -lt "$need_bytes" ]; then
  echo "skipped: $tmp_root has $((${free_bytes:-0} / 1000000)) MB free, the check needs $((need_bytes / 1000000000)) GB"
  exit 0
fi

work=$(mktemp -d "$tmp_root/memory_$mode.XXXXXX") || { echo "0 passed, 1 failed"; exit 1; }
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
model=$work/model.safetensors
out=$work/out.safetensors

fail() {
  echo "FAILED: $*"
  echo "0 passed, 1 failed"
  exit 1
}

[ -x "$binary" ] || fail "quantflow binary '$binary' is missing or not executable"

if [ "$mode" = compare ]; then
  fp8=$work/model_fp8.safetensors
  python3 "$here/make_demo_model.py" --preset demo --blocks 12 -o "$model" >/dev/null || fail "model generation"
  "$binary" -i "$model" -o "$fp8" --comfy_quant --simple --progress none --manual_seed 0 >"$work/convert.log" 2>&1 ||
    fail "conversion to FP8: $(tail -n 1 "$work/convert.log")"
  mapped=$(( $(stat -c %s "$model") + $(stat -c %s "$fp8") ))
  [ "$mapped" -ge $((13 * 128 * 1024 * 1024)) ] || fail "the two files hold only $mapped bytes, not 13x the budget"
  python3 -c "$measure_py" "$work/measure" "$work/compare.txt" "$binary" compare "$model" "$fp8" --memory-budget 128MiB
  read -r code wall rss < "$work/measure" || fail "no measurement"
  echo "files:   $(stat -c %s "$model") + $(stat -c %s "$fp8") bytes (12 WAN blocks, dim 1536), budget 128 MiB"
else
  blocks=4
  size=$(python3 "$here/make_demo_model.py" --preset wan14b --blocks "$blocks" --size-only) || fail "make_demo_model.py"
  if [ "$size" -lt "$min_model_bytes" ]; then blocks=5; fi
  python3 "$here/make_demo_model.py" --preset wan14b --blocks "$blocks" -o "$model" || fail "model generation"
  size=$(stat -c %s "$model")
  [ "$size" -ge "$min_model_bytes" ] || fail "model is only $size bytes"
  python3 -c "$measure_py" "$work/measure" /dev/null "$binary" -i "$model" -o "$out" --comfy_quant --simple \
    --memory-budget 256MiB --progress none --manual_seed 0
  read -r code wall rss < "$work/measure" || fail "no measurement"
  echo "model:   $size bytes ($blocks WAN 2.1 14B blocks), output $(stat -c %s "$out" 2>/dev/null || echo '?') bytes"
fi
echo "time:    $wall s"
echo "max RSS: $rss bytes ($((rss / 1048576)) MiB; limit $((limit_bytes / 1048576)) MiB)"
[ "$code" -eq 0 ] || fail "quantflow $mode exited with $code"
if [ "$mode" = compare ]; then
  grep -q "^120 quantized layers (6 weights not quantized).*120 of 120 load in mainline ComfyUI" "$work/compare.txt" ||
    fail "compare did not report all 120 layers: $(tail -n 2 "$work/compare.txt" | head -n 1)"
fi
[ "$rss" -lt "$limit_bytes" ] || fail "peak RSS $rss bytes is not below $limit_bytes"
echo "1 passed, 0 failed"
