#!/usr/bin/env bash
# Installs the Debian 12 packages amalgam builds and tests with.
# Does nothing (quickly) when they are all present already.
set -euo pipefail
PKGS=(build-essential clang pkg-config
      libfabric-dev libfabric-bin libibverbs-dev rdma-core
      libprotobuf-c-dev protobuf-c-compiler
      check openmpi-bin libopenmpi-dev acpica-tools
      liblzma-dev zlib1g-dev libzstd-dev liblz4-dev libssl-dev
      busybox-static cpio iproute2 numactl libclang-rt-14-dev)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
