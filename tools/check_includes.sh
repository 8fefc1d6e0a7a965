#!/usr/bin/env bash
# Dependency direction (STYLE.md): tools/ -> pipeline/ -> stages/ -> kernels/; stages never include each
# other (only stages/messages.hpp and stages/format/). Prints each violation; exit 1 if any.
set -u
cd "$(dirname "$0")/.."
bad=0
check() {  # check DIR PATTERN WHY
  local hits
  hits=$(grep -rnE "#include \"($2)" "$1" --include='*.hpp' --include='*.cpp' --include='*.cu' --include='*.cuh' || true)
  if [ -n "$hits" ]; then echo "$3:"; echo "$hits"; bad=1; fi
}
check kernels 'stages/|pipeline/|tools/' "kernels/ must not include upper layers"
check stages 'pipeline/|tools/' "stages/ must not include pipeline/ or tools/"
check pipeline 'tools/' "pipeline/ must not include tools/"
# A backend implements the primitives and never borrows another backend's code (the host backend is handed
# in by kernels/backend.cpp).
check kernels/cuda 'kernels/cpu/' "kernels/cuda/ must not include kernels/cpu/"
for f in stages/*.hpp stages/*.cpp; do
  own="stages/$(basename "${f%.*}").hpp"
  hits=$(grep -nE '#include "stages/[a-z_]+\.hpp"' "$f" | grep -v "\"$own\"" | grep -v '"stages/messages.hpp"' || true)
  if [ -n "$hits" ]; then echo "$f includes another stage:"; echo "$hits"; bad=1; fi
done
# Only kernels/backend.cpp may know whether CUDA exists.
hits=$(grep -rln "QF_HAVE_CUDA" --include='*.cpp' --include='*.hpp' kernels stages pipeline tools | grep -v '^kernels/backend.cpp$' || true)
if [ -n "$hits" ]; then echo "QF_HAVE_CUDA outside kernels/backend.cpp:"; echo "$hits"; bad=1; fi
# No CUDA type in any .hpp (STYLE convention 2): CUDA headers only in .cu / .cuh files.
hits=$(grep -rnE '#include <(cuda|cublas|cusolver)' --include='*.hpp' --include='*.cpp' kernels stages pipeline tools || true)
if [ -n "$hits" ]; then echo "CUDA header outside .cu/.cuh:"; echo "$hits"; bad=1; fi
if [ "$bad" -eq 0 ]; then echo "include check: 1 passed, 0 failed"; else echo "include check: 0 passed, 1 failed"; fi
exit "$bad"
