#!/usr/bin/env bash
# Installs what courier needs to build and test on Debian 12, only what is missing.
# Usage: scripts/setup.sh [--bench]   (--bench adds gRPC and Cap'n Proto, the benchmark's peers)
set -euo pipefail
pkgs=(build-essential cmake pkg-config libasio-dev libprotobuf-dev libprotoc-dev protobuf-compiler
      libabsl-dev libgtest-dev libgmock-dev prometheus-cpp-dev libssl-dev curl)
if [[ "${1:-}" == "--bench" ]]; then
  pkgs+=(libbenchmark-dev libgrpc++-dev protobuf-compiler-grpc libcapnp-dev capnproto)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
