#!/usr/bin/env bash
# The demo: one guest spread over two node processes on this host. vCPU 1
# lives on node 1, its memory is kept coherent by the DSM over the shm
# fabric, and both vCPUs hammer one shared counter with lock xadd.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -e /dev/kvm ]; then
    # Without KVM no guest can run; show what does not need one instead
    # (the DSM across two node processes, driven by host threads).
    echo "demo: this host has no /dev/kvm, so no guest can run here; showing the DSM alone" >&2
    set -x
    build/amalgam dsm-check --local 2
    exit 0
fi
set -x
build/amalgam run --nodes 2 --vcpus 2 --mem 256M --kernel build/guest/testguest.elf --append test=smp-counter
