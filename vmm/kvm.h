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
int kvm_get_msr(int vcpu_fd, uint32_t index, uint64_t *val);
int kvm_set_msr(int vcpu_fd, uint32_t index, uint64_t val);

#endif
