/* Internal to vmm/: architectural CPU states the VMM puts a vCPU in: the
 * Linux 64-bit boot-protocol entry for the BSP, and the real-mode state a
 * SIPI starts an AP in. */
#ifndef AMALGAM_VMM_X86_SETUP_H
#define AMALGAM_VMM_X86_SETUP_H

#include <stdint.h>

#include "vmm/memory.h"

/* Writes the boot GDT and an identity map of the first 4 GiB (2 MiB pages)
 * at the GPAs boot.h reserves for them. */
int x86_write_boot_tables(struct guest_mem *mem);
/* Long mode, CPL0, CS=0x10, DS/ES/SS=0x18, paging on, RIP=entry,
 * RSI=boot_params, interrupts off. */
int x86_enter_long_mode(int vcpu_fd, uint64_t entry, uint64_t boot_params);
/* Real mode at CS:IP = (vector << 8):0, as after INIT + SIPI. */
int x86_enter_sipi(int vcpu_fd, uint8_t vector);

#endif
