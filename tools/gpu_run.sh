#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, with .gpu_bundle carried: the GPU tests, the skinny-product
# benchmark (qf_bench_skinny: cuBLASLt vs project_rows), then the GPU benchmark (tools/bench_gpu.py).
# Everything it prints is also written to $OUT/gpu_run.log when $OUT is set.
set -uo pipefail
bundle=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH="$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export QF_BINARY="$bundle/bin/quantflow" QF_FIXTURES="$bundle/fixtures"
log=${OUT:-/tmp}/gpu_run.log
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$bundle/bin/quantflow" --version
  echo "== GPU tests"
  "$bundle/bin/qf_gpu_tests"
  echo "gpu tests exit: $?"
  echo "== skinny products (cuBLASLt vs own kernel)"
  "$bundle/bin/qf_bench_skinny"
  echo "skinny bench exit: $?"
  if [ "${1:-}" != "--tests-only" ]; then
    echo "== GPU benchmark"
    python3 "$bundle/bench_gpu.py" --binary "$bundle/bin/quantflow" --workdir /tmp "${@:2}"
  fi
} 2>&1 | tee "$log"
