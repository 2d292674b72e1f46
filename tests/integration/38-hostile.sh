# A hostile guest (the test guest's `hostile`): random writes to device
# ports and to ports without a device, to reserved and read-only LAPIC
# registers, IPIs with illegal vectors, reserved delivery modes and to APIC
# ids nobody has, an NMI flood, nonsense in the IOAPIC. The machine must
# keep running, count every kind, log only a few lines of each, print the
# counts at the end, and then pass smp-counter in the same guest; on one
# node and on two.
# kvm: all
source "$(dirname "$0")/common.bash"
need_kvm
for n in 1 2; do
    run_guest hostile 0 --nodes $n --vcpus 4 --mem 256M --append "test=hostile rounds=200 iters=200000"
    grep '^hostile:' "$TMP/out" || true
    summary=$(grep -m1 'amalgam node 0: guest accesses ignored:' "$TMP/err")
    logged=$(grep -c 'amalgam node 0: the guest ' "$TMP/err")
    missing=""
    for kind in lapic-register ipi-vector ipi-mode ipi-nobody ioapic no-device; do
        echo "$summary" | grep -Eq "$kind [1-9][0-9]*" || missing="$missing $kind"
    done
    # 3 lines a kind, then one at the 10th, 100th, 1000th, ...: a few dozen at most
    if [ -z "$missing" ] && [ "$logged" -le 50 ] &&
       [ "$(grep -c 'guest accesses ignored' "$TMP/err")" -eq "$n" ]; then
        ok "--nodes $n: every kind counted, $logged lines logged on node 0: ${summary#amalgam node 0: }"
    else
        fail "--nodes $n: kinds not counted:${missing:- none}; $logged lines logged; $(grep 'guest accesses ignored' "$TMP/err" | tr '\n' '|')"
    fi
done
run_guest hostile 1 --nodes 2 --vcpus 2 --append "test=hostile rounds=20 iters=1000 inject=1"
finish
