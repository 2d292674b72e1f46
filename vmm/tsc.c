/* Guest TSC: one timeline for every vCPU of the machine. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <x86intrin.h>

#include "clock/clock.h"
#include "vmm/kvm.h"
#include "vmm/vm.h"

/* Guest TSC across node processes. KVM starts each VM's TSC at 0 when its
 * first vCPU is created and keeps the vCPUs of one VM in step, but every
 * node process has its own VM, created at its own moment: left alone, a
 * vCPU on node 1 would read a TSC some milliseconds behind one on node 0,
 * and a TSC value handed from one to the other would step backwards. So
 * every node sets guest TSC = host TSC - ref, with one ref (node 0's host
 * TSC when it starts the run, sent in VM_T_TSC), before any vCPU runs.
 * The offset is set exactly through the vCPU attribute KVM_VCPU_TSC_OFFSET
 * (Linux 5.16+); otherwise by writing IA32_TSC from the host, which is off
 * by the ioctl's latency (KVM then gives the VM's other vCPUs the same
 * offset). The node processes on one host read the same host TSC, so they
 * agree exactly; hosts' TSCs are unrelated, so across hosts this needs an
 * offset estimated over the interconnect (not done yet). */
int vcpu_tsc_clock(const struct vm *vm, const struct vcpu *v, struct lapic_clock *clk)
{
    *clk = (struct lapic_clock){.tsc_khz = vm->tsc_khz, .ns_ref = clock_now_ns()};
    return kvm_get_msr(v->fd, MSR_IA32_TSC, &clk->tsc_ref);
}

int vm_set_tsc_reference(struct vm *vm, uint64_t ref, char *err, size_t errlen)
{
    for (int i = 0; i < vm->nr_vcpus; i++) {
        struct vcpu *v = &vm->vcpus[i];
        int r = 0;
        if (kvm_set_tsc_offset(v->fd, -(int64_t)ref) < 0)
            r = kvm_set_msr(v->fd, MSR_IA32_TSC, __rdtsc() - ref);
        struct lapic_clock clk;
        r = r ?: vcpu_tsc_clock(vm, v, &clk);
        if (r < 0) {
            snprintf(err, errlen, "cannot set vCPU %d's TSC: %s", i, strerror(-r));
            return r;
        }
        pthread_mutex_lock(&v->lock);
        v->lapic.clock = clk;
        pthread_mutex_unlock(&v->lock);
    }
    /* The PM timer follows the guest TSC from now on, from 0 at its 0, on
     * every node alike (before any vCPU runs). */
    if (vm->tsc_khz) {
        vm->pm.timer_tsc_khz = vm->tsc_khz;
        atomic_store(&vm->pm.timer_offset_ns, 0);
        atomic_store(&vm->pm.timer_tsc_ref, ref);
    }
    return 0;
}
