#!/usr/bin/env bash
# Installs the test-only npm references (tests/npm/package.json) into build/npm, once: the
# tokenizer and chat-template tests compare against them. Nothing here is used at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
# Node.js from Debian where the machine has none (some images bring their own node and npm).
if ! command -v npm > /dev/null; then
  bash scripts/install-deps.sh nodejs npm
fi
dest=build/npm
mkdir -p "$dest"
if [ -f "$dest/package.json" ] && cmp -s tests/npm/package.json "$dest/package.json" &&
   [ -d "$dest/node_modules" ]; then
  exit 0
fi
cp tests/npm/package.json "$dest/package.json"
# node-llama-cpp: only its prebuilt CPU binary (@node-llama-cpp/linux-x64, a direct dependency
# so --omit=optional keeps it while dropping the GPU builds); its postinstall never downloads or
# compiles llama.cpp.
(cd "$dest" && NODE_LLAMA_CPP_SKIP_DOWNLOAD=true NODE_LLAMA_CPP_POSTINSTALL=skip \
  npm install --omit=optional --no-audit --no-fund --loglevel=error)
