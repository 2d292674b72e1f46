#!/usr/bin/env bash
# Does this host's KVM give a guest's vCPUs one TSC, without amalgam?
#   scripts/tsc-probe.sh KERNEL [VCPUS] [SECONDS]
# Boots KERNEL (a bzImage, e.g. the small kernel) with VCPUS vCPUs (4)
# under QEMU with KVM, not amalgam, for at most SECONDS (300) or until its
# secondary CPUs are up and the clocksource is chosen, and reports whether
# Linux's own TSC synchronisation check found the vCPUs' TSCs apart. Meant
# for the nested L1 (scripts/nested-kvm.sh), where amalgam's Linux guests
# print "Marking TSC unstable": if QEMU's guest on the same KVM does too,
# the L1 is the cause, not amalgam. One line on stdout:
#   tsc-probe: qemu-kvm VCPUS vCPUs: unstable (LINE)
#   tsc-probe: qemu-kvm VCPUS vCPUs: synchronised
# Exit 0 with a verdict, 3 when there is no QEMU or no usable /dev/kvm, 1
# when the guest never got as far as the check.
set -uo pipefail
KERNEL=${1:?usage: $0 KERNEL [VCPUS] [SECONDS]}
VCPUS=${2:-4}
LIMIT=${3:-300}
command -v qemu-system-x86_64 >/dev/null || { echo "tsc-probe: no qemu-system-x86_64" >&2; exit 3; }
[ -r /dev/kvm ] && [ -w /dev/kvm ] || { echo "tsc-probe: no usable /dev/kvm" >&2; exit 3; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# -no-reboot and panic=-1: the run ends when the kernel finds no init.
timeout -k 5 "$LIMIT" qemu-system-x86_64 -enable-kvm -cpu host -smp "$VCPUS" -m 512M \
    -nographic -no-reboot -kernel "$KERNEL" \
    -append "console=ttyS0 loglevel=7 panic=-1" </dev/null >"$log" 2>&1 &
qpid=$!
# The check runs while the secondary CPUs come up; the clocksource choice
# comes after it: stop there.
while kill -0 $qpid 2>/dev/null; do
    grep -q -E 'clocksource: Switched to clocksource|Kernel panic' "$log" && break
    sleep 1
done
kill $qpid 2>/dev/null
wait $qpid 2>/dev/null
bad=$(grep -m1 -E 'Marking TSC unstable|TSC synchronization.*turning off|TSC warp' "$log" | tr -d '\r')
if [ -n "$bad" ]; then
    echo "tsc-probe: qemu-kvm $VCPUS vCPUs: unstable ($bad)"
elif grep -q -E 'smp: Brought up' "$log"; then
    echo "tsc-probe: qemu-kvm $VCPUS vCPUs: synchronised ($(grep -m1 -E 'smp: Brought up' "$log" | tr -d '\r'))"
else
    echo "tsc-probe: qemu-kvm $VCPUS vCPUs: the guest did not bring up its CPUs within ${LIMIT}s: $(tail -n 3 "$log" | tr '\r\n' '  ')" >&2
    exit 1
fi
