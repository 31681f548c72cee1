#!/usr/bin/env bash
# The main job: installs what is missing, builds, builds the multi-domain corpus from Debian
# packages, and compares the default set of routers at matched active compute. Writes
# runs/compare/report/index.html and runs/compare/report/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh release
bash scripts/build-corpus.sh
./build/release/switchyard compare --config configs/compare.json "$@"
echo "report: $(pwd)/runs/compare/report/index.html"
