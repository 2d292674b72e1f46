# A running test guest is paused, its whole state saved (guest memory,
# every vCPU's KVM state and LAPIC, the devices), the VM ended, the state
# restored into a new VM, and the guest completes its test there
# (`amalgam restore-check`, vmm/checkpoint.c). smp-counter's exact count
# needs both memory and the vCPUs' registers to continue; timer and ioapic
# need the LAPIC timers and the IOAPIC's state; the pause catches vCPUs
# running, halted or waiting for SIPI.
# kvm: all
source "$(dirname "$0")/common.bash"
need_kvm
restore() { # NAME AFTER_MS APPEND
    local name=$1 after=$2 t0=$SECONDS
    guest_args "$SLOW" --append "$3"
    timeout $((120 * SLOW)) "$AMALGAM" restore-check --after "$after" --vcpus 2 --mem 64M \
        --kernel "$GUEST" "${GUEST_ARGS[@]}" >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    if [ $rc -eq 0 ] && grep -q "^TESTGUEST PASS $name" "$TMP/out" &&
        grep -q "restored into a new VM" "$TMP/err"; then
        ok "$name: $(grep -o 'paused after [0-9]* ms' "$TMP/err"), restored, passed ($((SECONDS - t0)) s)"
    else
        fail "$name (restore-check --after $after, status $rc): $(tr '\n' '|' <"$TMP/out" "$TMP/err" | cut -c1-400)"
    fi
}
restore smp-counter 200 "test=smp-counter iters=300000000"
restore timer 30 "test=timer"
restore ioapic 100 "test=ioapic rounds=2000"
restore ipi 5 "test=ipi rounds=2000"
# A guest that ends before the pause is reported, not passed.
"$AMALGAM" restore-check --after 600000 --vcpus 1 --mem 64M --kernel "$GUEST" \
    --append test=tsc >"$TMP/out" 2>"$TMP/err"
rc=$?
if [ $rc -eq 1 ] && grep -q "nothing was saved" "$TMP/err"; then
    ok "a guest that ends before the pause: status 1, 'nothing was saved'"
else
    fail "a guest that ended before the pause gave status $rc: $(tr '\n' '|' <"$TMP/err")"
fi
finish
