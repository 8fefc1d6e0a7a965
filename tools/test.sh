#!/usr/bin/env bash
# The README's second command: set up, build, run every test. In order:
#   build/       unit, end-to-end, Python interop, 3 GB bounded-memory run (ctest; arguments go to this ctest)
#   build-asan/  unit and end-to-end tests under ASan + UBSan     (tools/sanitize.sh asan)
#   build-tsan/  flow-graph, byte-budget and batch tests under TSan (tools/sanitize.sh tsan)
#   build-fuzz/  every fuzz target over its seed corpus once       (tools/fuzz.sh 0)
# QF_TESTS=normal runs only the first.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
(cd build && ctest --output-on-failure --timeout 1800 "$@")
if [ "${QF_TESTS:-all}" = all ]; then
  tools/sanitize.sh asan tsan
  tools/fuzz.sh 0
fi
