#!/usr/bin/env bash
# Installs the Debian 12 packages amalgam builds and tests with: every
# tool that a build, the demo or a test calls, so that a new Debian 12
# machine with a compiler and make (debootstrap --variant=buildd) needs
# nothing else; `make test-fresh` proves it. Does nothing (quickly) when
# they are all present already.
set -euo pipefail
PKGS=(build-essential clang pkg-config
      libfabric-dev libfabric-bin libibverbs-dev rdma-core
      libprotobuf-c-dev protobuf-c-compiler
      check openmpi-bin libopenmpi-dev acpica-tools
      liblzma-dev zlib1g-dev libzstd-dev liblz4-dev libssl-dev
      busybox-static cpio iproute2 numactl libclang-rt-14-dev
      procps util-linux file xz-utils zstd ca-certificates
      git qemu-system-x86 debootstrap libjansson-dev socat python3 gnuplot-nox
      liburing-dev e2fsprogs fio)
# qemu-system-x86: scripts/nested-kvm.sh, the guest tests and the demo
# where /dev/kvm is missing; debootstrap: make test-fresh; procps (pgrep,
# pkill), file, xz-utils and zstd (kernel modules): tests
# and scripts; git: make test-fresh and a test clone the repository;
# libjansson-dev: the monitor's JSON; socat and python3: the monitor tests
# talk to it as other clients would; gnuplot-nox: scripts/plot-migration.sh;
# liburing-dev: the virtio disk's io_uring; e2fsprogs: the virtio test's
# ext4 image (mkfs.ext4, debugfs, e2fsck); fio: `amalgam bench blk`'s peer.
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
