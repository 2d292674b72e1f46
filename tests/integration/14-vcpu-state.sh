# A vCPU's complete KVM state (vmm/kvm.c: kvm_vcpu_save/kvm_vcpu_restore)
# moves into another VM and the vCPU runs on there: registers, segments,
# FPU/XSAVE, events, debug registers, MP state and the saveable MSRs come
# back the same, and the TSC does not restart. The groundwork for vCPU
# migration and checkpoints.
# kvm: all
source "$(dirname "$0")/common.bash"
need_kvm
if "$ROOT/build/tests/kvm_state" >"$TMP/out" 2>&1; then
    ok "kvm_state: $(grep -o '[0-9]*%: Checks.*' "$TMP/out")"
else
    fail "kvm_state: $(tr '\n' '|' <"$TMP/out" | cut -c1-600)"
fi
finish
