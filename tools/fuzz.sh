#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang 14, ASan + UBSan) into build-fuzz/ and runs each one.
# Usage: tools/fuzz.sh [SECONDS] [TARGET...]     targets: header comfy_quant profiles manifest convert (default: all)
#   SECONDS > 0  fuzz each target that long, one after another; new inputs go to build-fuzz/corpus/TARGET, crashes
#                to build-fuzz/findings/ (turn each into a regression test, then add it to fuzz/corpus/TARGET)
#   SECONDS = 0  replay fuzz/corpus/TARGET once through each target (CI: seconds, not minutes)
# Prints one line per target: executions, coverage (libFuzzer's cov: edges, ft: features), corpus size, result.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(header comfy_quant profiles manifest convert)

cxx=$(command -v clang++-14 || command -v clang++ || true)
[ -n "$cxx" ] || { echo "fuzz: needs clang++ (Debian: apt-get install clang-14 libclang-rt-14-dev)"; exit 1; }
if [ ! -f build-fuzz/CMakeCache.txt ]; then
  CC=${cxx/clang++/clang} CXX=$cxx cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQF_CUDA=OFF \
    -DQF_BUILD_TESTS=OFF -DQF_FUZZ=ON >/dev/null
fi
cmake --build build-fuzz -j"${QF_JOBS:-$(nproc)}" --target "${targets[@]/#/fuzz_}" >/dev/null

# The targets write their scratch files under $TMPDIR; on tmpfs the converter's fsyncs cost nothing.
[ -d /dev/shm ] && [ -w /dev/shm ] && export TMPDIR=${TMPDIR:-/dev/shm}
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p build-fuzz/findings build-fuzz/logs
status=0
for t in "${targets[@]}"; do
  log=build-fuzz/logs/$t.log
  args=(-dict=fuzz/quantflow.dict -timeout=20 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix=build-fuzz/findings/$t-)
  if [ "$seconds" -eq 0 ]; then
    args+=(-runs=0 fuzz/corpus/"$t")
  else
    mkdir -p build-fuzz/corpus/"$t"
    args+=(-max_total_time="$seconds" build-fuzz/corpus/"$t" fuzz/corpus/"$t")
  fi
  if build-fuzz/fuzz/fuzz_"$t" "${args[@]}" >"$log" 2>&1; then result=ok; else result="FAILED (see $log)"; status=1; fi
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1 || echo "cov: ?")
  printf 'fuzz %-12s %10s execs  %s  %s\n' "$t" "$execs" "$cov" "$result"
  [ "$result" = ok ] || tail -40 "$log"
done
exit "$status"
