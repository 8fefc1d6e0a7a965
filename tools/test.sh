#!/usr/bin/env bash
# The README's second command: set up, build, run every test (unit, end-to-end, interop, memory bound).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cd build
ctest --output-on-failure --timeout 1800 "$@"
