#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job (for now: the layer demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh release
./build/release/switchyard demo "$@"
