/* Internal to vmm/: thin wrappers over the KVM ioctls, each returning 0 or
 * a negative errno. Nothing here knows about devices or guests. */
#ifndef AMALGAM_VMM_KVM_H
#define AMALGAM_VMM_KVM_H

#include <linux/kvm.h>
#include <stddef.h>
#include <stdint.h>

/* Opens /dev/kvm and checks the API version and every capability amalgam
 * relies on; on failure err says what is missing. */
int kvm_open_system(int *kvm_fd, size_t *run_size, char *err, size_t errlen);
int kvm_create_vm(int kvm_fd, int *vm_fd);
int kvm_set_memslot(int vm_fd, uint32_t slot, uint64_t gpa, uint64_t size, void *hva);
/* Routes the MSRs the user-space LAPIC owns (APIC_BASE, TSC_DEADLINE,
 * x2APIC 0x800-0x8ff) and unknown MSRs to user space. */
int kvm_route_msrs_to_user(int vm_fd);
int kvm_create_vcpu(int vm_fd, int id, size_t run_size, int *fd, struct kvm_run **run);
/* KVM's supported CPUID with this vCPU's APIC id filled in, each vCPU a
 * package of its own, and the features amalgam's user-space LAPIC models.
 * KVM uses the table for its own checks even where the guest sees the
 * host's CPUID. */
int kvm_set_cpuid(int kvm_fd, int vcpu_fd, uint32_t apic_id);
/* The change kvm_set_cpuid makes to one entry (pure; for tests). */
void kvm_cpuid_fix(struct kvm_cpuid_entry2 *e, uint32_t apic_id);
/* One vCPU ioctl each; 0 or -errno. */
int kvm_run(int vcpu_fd);
int kvm_get_regs(int vcpu_fd, struct kvm_regs *r);
int kvm_set_regs(int vcpu_fd, const struct kvm_regs *r);
int kvm_get_sregs(int vcpu_fd, struct kvm_sregs *s);
int kvm_set_sregs(int vcpu_fd, const struct kvm_sregs *s);
int kvm_get_fpu(int vcpu_fd, struct kvm_fpu *f);
int kvm_set_fpu(int vcpu_fd, const struct kvm_fpu *f);
int kvm_get_events(int vcpu_fd, struct kvm_vcpu_events *e);
int kvm_set_events(int vcpu_fd, const struct kvm_vcpu_events *e);
int kvm_nmi(int vcpu_fd);
int kvm_interrupt(int vcpu_fd, uint32_t vector);
/* The signals KVM_RUN unblocks (the kernel's 8-byte sigset). */
int kvm_set_signal_mask(int vcpu_fd, const void *sigset8);
/* The guest TSC frequency in kHz, or a negative errno. */
int kvm_tsc_khz(int vcpu_fd);
/* Guest TSC = host TSC + offset, exactly (KVM_VCPU_TSC_OFFSET, Linux 5.16+);
 * -ENOTSUP where KVM lacks the attribute. */
int kvm_set_tsc_offset(int vcpu_fd, int64_t offset);
/* Size of the kvm_run area to map per vCPU. */
int kvm_vcpu_mmap_size(int kvm_fd, size_t *size);
#define MSR_IA32_TSC 0x10

int kvm_get_msr(int vcpu_fd, uint32_t index, uint64_t *val);
int kvm_set_msr(int vcpu_fd, uint32_t index, uint64_t val);

/* ---- complete vCPU state (migration, checkpoint) ---- */

#define KVM_VCPU_STATE_VERSION 1
#define KVM_VCPU_STATE_MAX_MSRS 128

/* Everything KVM holds for one vCPU: registers, segment and control
 * registers, FPU/SSE/AVX (XSAVE, or the legacy FPU area where KVM has no
 * XSAVE), XCRs, pending exceptions/interrupts/NMI/SMI (vcpu events), debug
 * registers, the MP state and every MSR KVM reports as saveable that it
 * would read (TSC, TSC deadline, kvmclock, SYSCALL MSRs, GS bases, ...).
 * The user-space LAPIC is not in here (lapic.h has its own snapshot). */
struct kvm_vcpu_state {
    uint32_t version;
    uint32_t has_xsave, has_xcrs, nmsrs;
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    /* struct kvm_xsave's 4 KiB region (newer headers give the struct a
     * flexible tail, which cannot sit inside another struct) */
    uint32_t xsave[1024]; /* or, without has_xsave: */
    struct kvm_fpu fpu;
    struct kvm_xcrs xcrs;
    struct kvm_vcpu_events events;
    struct kvm_debugregs debugregs;
    struct kvm_mp_state mp_state;
    struct kvm_msr_entry msrs[KVM_VCPU_STATE_MAX_MSRS];
};

/* The MSRs worth saving: KVM_GET_MSR_INDEX_LIST, at most max of them (the
 * rest are left out and counted in *dropped). Returns how many. */
int kvm_saveable_msrs(int kvm_fd, uint32_t *idx, int max, int *dropped);
/* Reads the vCPU's whole state (the vCPU must not be running). MSRs in
 * idx[0..n) that KVM will not read on this host are skipped. */
int kvm_vcpu_save(int kvm_fd, int vcpu_fd, const uint32_t *idx, int n,
                  struct kvm_vcpu_state *s);
/* Loads a state saved by kvm_vcpu_save, possibly into another VM; -EINVAL
 * for a state of another version or with an impossible MSR count. */
int kvm_vcpu_restore(int vcpu_fd, const struct kvm_vcpu_state *s);

#endif
