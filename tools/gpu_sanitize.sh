#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, with .gpu_bundle carried: the four compute-sanitizer tools
# over the GPU tests, and initcheck over tools/initcheck_gesvdr.cu (bundled as bin/initcheck_gesvdr), a
# minimal cusolverDnXgesvdr call on fully initialised buffers.
#
# initcheck once reported 235,604 uninitialised global-memory reads inside cuSOLVER's geqr2 kernels (under
# Xgesvdr -> Xgeqrf). The minimal program, with every buffer written before the call, reports none (H200,
# compute-sanitizer 2025.3.1): the reads were of buffers quantflow handed over unwritten, so svd.cu now zeroes
# the workspace and the outputs first, and nothing is suppressed.
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
echo "== initcheck, minimal Xgesvdr on initialised buffers (all kernels)"
"$cs" --tool initcheck --print-limit 3 "$bundle/bin/initcheck_gesvdr" 2>&1 | grep -E "gesvdr|ERROR SUMMARY|Uninitialized|in .*geqr2|^=========     at" | head -8
for tool in memcheck racecheck synccheck initcheck; do
  echo "== $tool over the GPU tests"
  timeout "$limit" "$cs" --tool "$tool" --print-limit 10 "$bundle/bin/qf_gpu_tests" -tce="gpu devices*" 2>&1 | summary
  echo "exit ${PIPESTATUS[0]} (124: stopped after $limit s)"
done
