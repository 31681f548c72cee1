#!/usr/bin/env bash
# Installs the Debian packages switchyard needs, only those that are missing.
# With arguments, installs those packages instead (scripts/build-corpus.sh uses this).
set -euo pipefail
packages=(g++ cmake ninja-build libopenblas-dev libgtest-dev libbenchmark-dev nlohmann-json3-dev
  libcli11-dev libfmt-dev libcpp-httplib-dev pkg-config python3 python3-numpy python3-torch
  python3-sklearn wrk clang-format chromium openssl libpcre2-dev libutf8proc-dev libopenmpi-dev
  openmpi-bin)
[ $# -gt 0 ] && packages=("$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "switchyard: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
