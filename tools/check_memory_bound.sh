#!/usr/bin/env bash
# Bounded memory (README "Memory and speed"): convert a generated WAN 2.1 14B-shaped model of at least
# 3.0e9 bytes with --memory-budget 256MiB and require exit 0 and a peak resident set (ru_maxrss of the
# child, mapped file pages included) below 1 GiB.
# Usage: tools/check_memory_bound.sh QUANTFLOW_BINARY TMPDIR
# Works in a fresh subdirectory of TMPDIR that is always removed; skips (exit 0) with < 8 GB free there.
set -uo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 QUANTFLOW_BINARY TMPDIR" >&2
  exit 2
fi
binary=$1
tmp_root=$2
here=$(cd "$(dirname "$0")" && pwd)
limit_bytes=$((1024 * 1024 * 1024))
min_model_bytes=3000000000

# Runs a command; writes "exit_code wall_seconds max_rss_bytes" to the file named first. ru_maxrss of
# RUSAGE_CHILDREN covers exactly the children this wrapper waited for: the command.
measure_py='import resource, subprocess, sys, time
start = time.monotonic()
code = subprocess.call(sys.argv[2:])
wall = time.monotonic() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
with open(sys.argv[1], "w") as f:
    f.write(f"{code} {wall:.2f} {rss}\n")
sys.exit(code)'

mkdir -p "$tmp_root" || { echo "cannot create $tmp_root"; echo "0 passed, 1 failed"; exit 1; }
free_bytes=$(df -P -B1 "$tmp_root" | awk 'NR == 2 { print $4 }')
if [ "${free_bytes:-0}" -lt 8000000000 ]; then
  echo "skipped: $tmp_root has $((${free_bytes:-0} / 1000000)) MB free, the check needs 8 GB"
  exit 0
fi

work=$(mktemp -d "$tmp_root/memory_bound.XXXXXX") || { echo "0 passed, 1 failed"; exit 1; }
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

blocks=4
size=$(python3 "$here/make_demo_model.py" --preset wan14b --blocks "$blocks" --size-only) || fail "make_demo_model.py"
if [ "$size" -lt "$min_model_bytes" ]; then blocks=5; fi
python3 "$here/make_demo_model.py" --preset wan14b --blocks "$blocks" -o "$model" || fail "model generation"
size=$(stat -c %s "$model")
[ "$size" -ge "$min_model_bytes" ] || fail "model is only $size bytes"

python3 -c "$measure_py" "$work/measure" "$binary" -i "$model" -o "$out" --comfy_quant --simple \
  --memory-budget 256MiB --progress none --manual_seed 0
read -r code wall rss < "$work/measure" || fail "no measurement"

echo "model:   $size bytes ($blocks WAN 2.1 14B blocks), output $(stat -c %s "$out" 2>/dev/null || echo '?') bytes"
echo "time:    $wall s"
echo "max RSS: $rss bytes ($((rss / 1048576)) MiB; limit $((limit_bytes / 1048576)) MiB)"
[ "$code" -eq 0 ] || fail "quantflow exited with $code"
[ "$rss" -lt "$limit_bytes" ] || fail "peak RSS $rss bytes is not below $limit_bytes"
echo "1 passed, 0 failed"
