#!/usr/bin/env bash
# The demo: one guest spread over two node processes on this host. First
# the NUMA machine the guest is given (what its ACPI SRAT/SLIT say, as
# `numactl --hardware` would show it inside); then the guest: vCPU 1 lives
# on node 1, its memory is kept coherent by the DSM over the shm fabric, and
# both vCPUs hammer one shared counter with lock xadd.
set -euo pipefail
cd "$(dirname "$0")/.."
MACHINE=(--nodes 2 --vcpus 2 --mem 256M)
if [ "${1:-}" != --guest-only ]; then
    set -x
    build/amalgam topology "${MACHINE[@]}"
    { set +x; } 2>/dev/null
fi
if [ ! -e /dev/kvm ] && [ -z "${AMALGAM_IN_NESTED:-}" ]; then
    # No KVM on this host: the same guest runs in scripts/nested-kvm.sh's
    # L1, a VM that QEMU emulates in software and whose own kernel has KVM.
    echo "demo: this host has no /dev/kvm; running the same guest inside an emulated" \
         "machine that has KVM (scripts/nested-kvm.sh; about 1-2 minutes here, ~10-50x" \
         "slower than on hardware)" >&2
    rc=0
    NESTED_TCG=${NESTED_TCG:-single} scripts/nested-kvm.sh env AMALGAM_IN_NESTED=1 \
        AMALGAM_DEAD_AFTER_MS=300000 scripts/demo.sh --guest-only || rc=$?
    [ $rc -eq 3 ] || exit $rc
    # Only where the L1 cannot be had: the DSM alone, across two node
    # processes driven by host threads.
    echo "demo: the emulated machine could not be started (above), so no guest can run" \
         "here; showing the DSM alone" >&2
    set -x
    build/amalgam dsm-check --local 2
    exit 0
fi
set -x
# In the emulated L1 the guest's own time-outs are 5 times longer.
build/amalgam run "${MACHINE[@]}" --kernel build/guest/testguest.elf --append "test=smp-counter${AMALGAM_IN_NESTED:+ slow=5}"
