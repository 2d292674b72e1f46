/* A vCPU's complete KVM state survives kvm_vcpu_save and kvm_vcpu_restore
 * into another VM: registers, segments, FPU/XSAVE, XCRs, events, debug
 * registers, MP state and the saveable MSRs read back the same, the TSC
 * goes on from where it was, and the restored vCPU runs the guest code on
 * from the saved point with the saved registers. Needs /dev/kvm (run by
 * tests/integration/14-vcpu-state.sh, in the nested L1 where there is
 * none). */
#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tests/unit/unit.h"
#include "vmm/kvm.h"

#define MEM (64 << 10)
#define CODE 0x1000
#define MSR_STAR 0xC0000081
#define MSR_KERNEL_GS_BASE 0xC0000102
#define MSR_IA32_SYSENTER_ESP 0x175

struct machine {
    int kvm, vm, vcpu;
    size_t run_size;
    struct kvm_run *run;
    uint8_t *mem;
};

static void machine_new(struct machine *m)
{
    char err[256];
    ck_assert_msg(kvm_open_system(&m->kvm, &m->run_size, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(kvm_create_vm(m->kvm, &m->vm), 0);
    m->mem = mmap(NULL, MEM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(m->mem, MAP_FAILED);
    ck_assert_int_eq(kvm_set_memslot(m->vm, 0, 0, MEM, m->mem), 0);
    ck_assert_int_eq(kvm_create_vcpu(m->vm, 0, m->run_size, &m->vcpu, &m->run), 0);
    ck_assert_int_eq(kvm_set_cpuid(m->kvm, m->vcpu, 0), 0);
}

static void machine_free(struct machine *m)
{
    munmap(m->run, m->run_size);
    close(m->vcpu);
    close(m->vm);
    close(m->kvm);
    munmap(m->mem, MEM);
}

/* MSRs that change while the vCPU does not run are clocks (the TSC, and
 * in the nested L1 Hyper-V's counters 0x40000010 and 0x40000020, which
 * count the VM's time since it was made: the new VM's clock carries those,
 * KVM_SET_CLOCK with kvmclock in the migration issue, not the vCPU state).
 * Found by saving twice, 2 ms apart. */
static bool is_clock(const struct kvm_vcpu_state *a, const struct kvm_vcpu_state *b,
                     uint32_t index)
{
    for (uint32_t i = 0; i < a->nmsrs && i < b->nmsrs; i++)
        if (a->msrs[i].index == index)
            return b->msrs[i].index != index || b->msrs[i].data != a->msrs[i].data;
    return false;
}

static uint64_t msr_of(const struct kvm_vcpu_state *s, uint32_t index)
{
    for (uint32_t i = 0; i < s->nmsrs; i++)
        if (s->msrs[i].index == index)
            return s->msrs[i].data;
    ck_abort_msg("MSR %#x was not saved", index);
    return 0;
}

START_TEST(state_moves_to_another_vm_and_runs_there)
{
    struct machine a, b;
    machine_new(&a);
    /* Real mode at 0:CODE: add eax, ebx; hlt. */
    static const uint8_t code[] = {0x66, 0x01, 0xd8, 0xf4};
    memcpy(a.mem + CODE, code, sizeof code);
    struct kvm_sregs sr;
    ck_assert_int_eq(ioctl(a.vcpu, KVM_GET_SREGS, &sr), 0);
    sr.cs.base = 0, sr.cs.selector = 0;
    ck_assert_int_eq(ioctl(a.vcpu, KVM_SET_SREGS, &sr), 0);
    struct kvm_regs r = {.rip = CODE, .rflags = 2, .rax = 40, .rbx = 2, .r15 = 0x1234567890ULL};
    ck_assert_int_eq(ioctl(a.vcpu, KVM_SET_REGS, &r), 0);
    ck_assert_int_eq(kvm_set_msr(a.vcpu, MSR_STAR, 0x0023001000000000ULL), 0);
    ck_assert_int_eq(kvm_set_msr(a.vcpu, MSR_KERNEL_GS_BASE, 0xffff888012345000ULL), 0);
    ck_assert_int_eq(kvm_set_msr(a.vcpu, MSR_IA32_SYSENTER_ESP, 0xabcdef00ULL), 0);
    struct kvm_debugregs dr;
    ck_assert_int_eq(ioctl(a.vcpu, KVM_GET_DEBUGREGS, &dr), 0);
    dr.db[0] = 0x5000;
    ck_assert_int_eq(ioctl(a.vcpu, KVM_SET_DEBUGREGS, &dr), 0);

    uint32_t idx[KVM_VCPU_STATE_MAX_MSRS];
    int dropped, n = kvm_saveable_msrs(a.kvm, idx, KVM_VCPU_STATE_MAX_MSRS, &dropped);
    ck_assert_int_gt(n, 10);
    static struct kvm_vcpu_state s, t, early;
    ck_assert_int_eq(kvm_vcpu_save(a.kvm, a.vcpu, idx, n, &early), 0);
    usleep(2000);
    ck_assert_int_eq(kvm_vcpu_save(a.kvm, a.vcpu, idx, n, &s), 0);
    ck_assert(is_clock(&early, &s, MSR_IA32_TSC));
    ck_assert_uint_gt(s.nmsrs, 10);
    ck_assert_uint_eq(msr_of(&s, MSR_STAR), 0x0023001000000000ULL);
    ck_assert_uint_eq(msr_of(&s, MSR_KERNEL_GS_BASE), 0xffff888012345000ULL);
    uint64_t tsc = msr_of(&s, MSR_IA32_TSC);

    /* Another VM, as on another node: memory carried over (the DSM's job
     * in a real migration), vCPU state restored. */
    machine_new(&b);
    memcpy(b.mem, a.mem, MEM);
    ck_assert_int_eq(kvm_vcpu_restore(b.vcpu, &s), 0);
    ck_assert_int_eq(kvm_vcpu_save(b.kvm, b.vcpu, idx, n, &t), 0);
    ck_assert_mem_eq(&t.regs, &s.regs, sizeof s.regs);
    ck_assert_uint_eq(t.sregs.cr0, s.sregs.cr0);
    ck_assert_uint_eq(t.sregs.efer, s.sregs.efer);
    ck_assert_mem_eq(&t.sregs.cs, &s.sregs.cs, sizeof s.sregs.cs);
    ck_assert_uint_eq(t.debugregs.db[0], 0x5000);
    ck_assert_uint_eq(t.mp_state.mp_state, s.mp_state.mp_state);
    if (s.has_xsave)
        ck_assert_mem_eq(t.xsave, s.xsave, sizeof s.xsave);
    ck_assert_uint_eq(t.nmsrs, s.nmsrs);
    for (uint32_t i = 0; i < s.nmsrs; i++) {
        ck_assert_uint_eq(t.msrs[i].index, s.msrs[i].index);
        if (s.msrs[i].index == MSR_IA32_TSC)
            ck_assert_uint_ge(t.msrs[i].data, s.msrs[i].data);
        else if (!is_clock(&early, &s, s.msrs[i].index))
            ck_assert_msg(t.msrs[i].data == s.msrs[i].data, "MSR %#x: %#llx after, %#llx before",
                          s.msrs[i].index, (unsigned long long)t.msrs[i].data,
                          (unsigned long long)s.msrs[i].data);
    }
    uint64_t tsc2 = msr_of(&t, MSR_IA32_TSC); /* on from where it was, not from 0 */
    ck_assert_uint_ge(tsc2, tsc);

    /* It runs on: the saved eax and ebx, added, then hlt. */
    ck_assert_int_eq(ioctl(b.vcpu, KVM_RUN, 0), 0);
    ck_assert_int_eq(b.run->exit_reason, KVM_EXIT_HLT);
    struct kvm_regs after;
    ck_assert_int_eq(ioctl(b.vcpu, KVM_GET_REGS, &after), 0);
    ck_assert_uint_eq(after.rax & 0xffffffff, 42);
    ck_assert_uint_eq(after.r15, 0x1234567890ULL);
    machine_free(&a);
    machine_free(&b);
}
END_TEST

START_TEST(bad_states_are_refused)
{
    struct machine a;
    machine_new(&a);
    static struct kvm_vcpu_state s;
    uint32_t idx[KVM_VCPU_STATE_MAX_MSRS];
    int dropped, n = kvm_saveable_msrs(a.kvm, idx, KVM_VCPU_STATE_MAX_MSRS, &dropped);
    ck_assert_int_eq(kvm_vcpu_save(a.kvm, a.vcpu, idx, n, &s), 0);
    s.version++;
    ck_assert_int_eq(kvm_vcpu_restore(a.vcpu, &s), -EINVAL);
    s.version--;
    s.nmsrs = KVM_VCPU_STATE_MAX_MSRS + 1;
    ck_assert_int_eq(kvm_vcpu_restore(a.vcpu, &s), -EINVAL);
    machine_free(&a);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kvm_state");
    TCase *t = tcase_create("kvm_state");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, state_moves_to_another_vm_and_runs_there);
    tcase_add_test(t, bad_states_are_refused);
    suite_add_tcase(s, t);
    return run_suite(s);
}
