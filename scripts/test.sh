#!/usr/bin/env bash
# Installs what is missing, builds (release, debug, ASan+UBSan) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh release
# Test-only npm references (tokenizers, chat templates) into build/npm.
bash scripts/install-npm-deps.sh
# The default corpus (seconds to build) so that its loader test runs on the real data too.
bash scripts/build-corpus.sh > /dev/null
export SWITCHYARD_CORPUS_DIR="$PWD/data/corpus"
ctest --preset release --timeout 900
# Debug (no inlining): catches what optimisation hides, such as two classes sharing a mangled name.
if [ "${SWITCHYARD_SKIP_DEBUG:-0}" != 1 ]; then
  bash scripts/build.sh debug
  ctest --preset debug --timeout 900 -LE slow
fi
if [ "${SWITCHYARD_SKIP_ASAN:-0}" != 1 ]; then
  bash scripts/build.sh asan
  # mpi: OpenMPI's own allocations at MPI_Init read as leaks under ASan (tests/dist/dist.cmake).
  ctest --preset asan --timeout 900 -LE "slow|mpi"
fi
