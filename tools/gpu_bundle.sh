#!/usr/bin/env bash
# Builds quantflow with the CUDA backend here (Release, sm_90 by default) and bundles what the GPU machine
# needs into .gpu_bundle/ (git-ignored, carried by the device tool): the binary, the GPU and unit test
# executables, the skinny-product benchmark (qf_bench_skinny), every non-CUDA shared library they load (the
# GPU machine has no Debian libraries; the CUDA libraries come from its own toolkit), the reference fixtures
# and the bench scripts.
#
# usage: tools/gpu_bundle.sh [--archs "90"]        then, on the GPU machine: bash .gpu_bundle/gpu_run.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
archs=90
while [ $# -gt 0 ]; do
  case $1 in
    --archs) archs=${2:?}; shift 2 ;;
    *) echo "gpu_bundle: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
build=$root/build-gpu
bundle=$root/.gpu_bundle
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DQF_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$archs" >/dev/null
cmake --build "$build" -j"$(nproc)" --target quantflow qf_gpu_tests qf_bench_skinny qf_bench_svd
rm -rf "$bundle" && mkdir -p "$bundle/bin" "$bundle/lib" "$bundle/fixtures"
cp "$build/quantflow" "$build/tests/qf_gpu_tests" "$build/qf_bench_skinny" "$build/qf_bench_svd" "$bundle/bin/"
strip "$bundle"/bin/*
# Shared libraries outside the C library and the CUDA toolkit.
for exe in "$bundle"/bin/*; do ldd "$exe"; done | awk '/=> \// {print $3}' | sort -u | while read -r lib; do
  case $(basename "$lib") in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libcuda.so*|libcusolver*|libcublas*|libcusparse*|libnvJitLink*|libcudart*) ;;
    *) cp -L "$lib" "$bundle/lib/" ;;
  esac
done
fixtures=$root/../shared/fixtures/reference
cp "$fixtures/small_model.safetensors" "$fixtures/runs.json" "$bundle/fixtures/"
cp "$root/tools/gpu_run.sh" "$root/tools/make_demo_model.py" "$root/tools/bench_gpu.py" "$root/tools/bench_rounding.py" \
   "$root/tools/bench_reference_rounding.py" "$root/tools/bench_multi_gpu.py" "$root/tools/gpu_sanitize.sh" \
   "$root/tools/bench_quality.py" "$root/tools/make_structured_model.py" \
   "$root/tools/bench_svd_accuracy.py" "$bundle/"
strip "$bundle"/lib/*.so* 2>/dev/null || true
du -sh "$bundle"
