#!/usr/bin/env bash
# The tests under sanitizers, each in its own build directory (CUDA off; only the targets that run are built).
#   asan  unit and end-to-end tests (all but the 3 GB memory-bound run) under AddressSanitizer + UBSan: build-asan/
#   tsan  the flow-graph, byte-budget and batch tests (tests/CMakeLists.txt: qf_tsan_tests) under ThreadSanitizer:
#         build-tsan/, with tools/tsan.supp
# Usage: tools/sanitize.sh [asan] [tsan]   (default: both). Any report fails the run (-fno-sanitize-recover).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${QF_JOBS:-$(nproc)}
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(asan tsan)

build() {  # build DIR SANITIZERS TARGET...
  local dir=$1 sanitizers=$2
  shift 2
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DQF_CUDA=OFF -DQF_SANITIZE="$sanitizers" >/dev/null
  if ! cmake --build "$dir" -j"$jobs" --target "$@" >"$dir/build.log" 2>&1; then
    tail -50 "$dir/build.log"
    return 1
  fi
}

export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for run in "${runs[@]}"; do
  start=$SECONDS
  case $run in
    asan)
      build build-asan address,undefined quantflow qf_unit_tests qf_e2e_tests
      ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1 \
        ctest --test-dir build-asan --output-on-failure --timeout 1800 -L 'unit|e2e' -LE slow ;;
    tsan)
      build build-tsan thread qf_tsan_tests
      TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tools/tsan.supp" build-tsan/tests/qf_tsan_tests ;;
    *) echo "sanitize: unknown run '$run' (asan, tsan)"; exit 2 ;;
  esac
  echo "sanitize: $run passed in $((SECONDS - start)) s"
done
