/* Internal to vmm/: hosts where guest CPL0 is emulated (kvm_pvm without
 * VT-x/AMD-V, see HOSTFACTS.md). There KVM's instruction emulator refuses a
 * few instructions real kernels use and stops the vCPU with an emulation
 * failure; the VMM carries them out itself. Each kind is logged once.
 * None of this is active where CPL0 runs natively. */
#ifndef AMALGAM_VMM_EMULATE_H
#define AMALGAM_VMM_EMULATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vcpu;

/* Times a short real-mode loop in a scratch VM: CPL0 counts as emulated
 * when an iteration costs more than 50 ns (native: ~1 ns; emulated here:
 * ~1 us). */
int emulate_probe_cpl0(int kvm_fd, bool *emulated, double *ns_per_iter);

/* Carries out the instruction KVM failed to emulate: 0 if done (RIP
 * advanced, effects applied), -ENOTSUP if it is not one we know. */
int emulate_fixup(struct vcpu *v);

/* "at RIP 0x... (bytes 0f ae 10 ...)" for error messages. */
void emulate_describe_insn(struct vcpu *v, char *buf, size_t len);

/* Pure decoder, exposed for tests: classifies the instruction in bytes[]
 * (64-bit mode). Returns its length, or -1 if it is not a fix-up kind.
 * For ld/stmxcsr also returns the ModRM memory operand's pieces. */
enum fixup_op { FIX_NONE, FIX_INT3, FIX_FWAIT, FIX_CLAC, FIX_STAC, FIX_LDMXCSR, FIX_STMXCSR };
struct fixup_mem {
    int base;      /* register number 0-15, -1 none, 16 = RIP-relative */
    int index;     /* register number 0-15, -1 none */
    int scale;     /* 1, 2, 4, 8 */
    int64_t disp;
    int seg;       /* 0 none, 4 FS, 5 GS */
    bool addr32;   /* 0x67 prefix */
};
int emulate_decode(const uint8_t *bytes, size_t n, enum fixup_op *op, struct fixup_mem *mem);

#endif
