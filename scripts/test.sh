#!/usr/bin/env bash
# Installs what is missing, builds (release and ASan+UBSan) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh release
ctest --preset release --timeout 900
if [ "${SWITCHYARD_SKIP_ASAN:-0}" != 1 ]; then
  bash scripts/build.sh asan
  ctest --preset asan --timeout 900 -LE slow
fi
