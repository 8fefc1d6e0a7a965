#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, with .gpu_bundle carried: the four compute-sanitizer tools
# over the GPU tests.
#
# initcheck once reported 235,604 uninitialised global-memory reads inside cuSOLVER's geqr2 kernels (under
# Xgesvdr -> Xgeqrf), from buffers quantflow handed over unwritten. The randomized SVD now runs on kernels of our
# own (kernels/cuda/svd.cu); cuSOLVER's gesvd serves only --full_matrix (kernels/cuda/exact_svd.cu), and every
# buffer it gets is written first.
#
# usage: bash tools/gpu_sanitize.sh [seconds per tool, default 150]
set -uo pipefail
bundle=$PWD/.gpu_bundle
export LD_LIBRARY_PATH="$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export QF_BINARY="$bundle/bin/quantflow" QF_FIXTURES="$bundle/fixtures"
limit=${1:-150}
cs=/usr/local/cuda/bin/compute-sanitizer
"$cs" --version | tail -1
summary() { grep -E "ERROR SUMMARY|test cases:|ERROR:|TEST CASE:|^========= [A-Z]|^=========     at|Timeout" | head -40; }
for tool in memcheck racecheck synccheck initcheck; do
  echo "== $tool over the GPU tests"
  timeout "$limit" "$cs" --tool "$tool" --print-limit 10 "$bundle/bin/qf_gpu_tests" -tce="gpu devices*" 2>&1 | summary
  echo "exit ${PIPESTATUS[0]} (124: stopped after $limit s)"
done
