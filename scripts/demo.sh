#!/usr/bin/env bash
# The demo: one guest spread over two node processes on this host. First
# the NUMA machine the guest is given (what its ACPI SRAT/SLIT say, as
# `numactl --hardware` would show it inside); then the guest: vCPU 1 lives
# on node 1, its memory is kept coherent by the DSM over the shm fabric, and
# both vCPUs hammer one shared counter with lock xadd.
set -euo pipefail
cd "$(dirname "$0")/.."
MACHINE=(--nodes 2 --vcpus 2 --mem 256M)
set -x
build/amalgam topology "${MACHINE[@]}"
{ set +x; } 2>/dev/null
if [ ! -e /dev/kvm ]; then
    # Without KVM no guest can run; show what does not need one instead
    # (the DSM across two node processes, driven by host threads).
    echo "demo: this host has no /dev/kvm, so no guest can run here; showing the DSM alone" >&2
    set -x
    build/amalgam dsm-check --local 2
    exit 0
fi
set -x
build/amalgam run "${MACHINE[@]}" --kernel build/guest/testguest.elf --append test=smp-counter
