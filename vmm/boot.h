/* Boot path: puts a Linux x86-64 boot-protocol kernel into guest RAM.
 *
 * Accepts a 64-bit ELF (vmlinux, or the freestanding test guest) or a
 * bzImage, whose compressed payload (gzip, xz, zstd, lz4, lzma, bzip2 as the
 * kernel was built) is decompressed on the host, because the kernel's own
 * decompressor would run in emulated CPL0 on hosts without VT-x/AMD-V.
 * Everything read from the kernel and initrd files is untrusted: every
 * offset, size and address is range-checked before use.
 *
 * Fixed low-memory layout written by the VMM (all page-aligned GPAs):
 */
#ifndef AMALGAM_VMM_BOOT_H
#define AMALGAM_VMM_BOOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/memory.h"

#define BOOT_GDT_GPA 0x1000ULL         /* boot GDT: 0x10 code64, 0x18 data */
#define BOOT_PML4_GPA 0x2000ULL        /* identity map of the first 4 GiB */
#define BOOT_PDPT_GPA 0x3000ULL
#define BOOT_PD_GPA 0x4000ULL          /* 4 pages of 2 MiB entries */
#define BOOT_TRAMPOLINE_GPA 0x8000ULL  /* free for the guest's AP start code */
#define BOOT_PARAMS_GPA 0x9000ULL      /* struct boot_params ("zero page") */
#define BOOT_CMDLINE_GPA 0xA000ULL
#define BOOT_CMDLINE_MAX 4095
#define BOOT_EBDA_GPA 0x9FC00ULL       /* [EBDA, 1 MiB) is reserved in e820 */
#define BOOT_ACPI_GPA 0xE0000ULL       /* ACPI tables, RSDP first; 128 KiB */
#define BOOT_ACPI_SIZE 0x20000ULL
#define BOOT_KERNEL_MIN_GPA 0x100000ULL /* kernels load at or above 1 MiB */

enum kernel_format { KERNEL_ELF64 = 1, KERNEL_BZIMAGE = 2 };

struct boot_spec {
    const char *kernel_path;
    const char *initrd_path; /* NULL: none */
    const char *cmdline;     /* NULL: empty */
    uint64_t acpi_rsdp_gpa;  /* 0: no ACPI tables */
};

struct boot_info {
    enum kernel_format format;
    char compression[8];    /* bzImage payload: "gzip", "xz", ...; "" for ELF */
    uint64_t entry_gpa;     /* 64-bit entry point, guest-physical */
    uint64_t kernel_start;  /* lowest GPA the kernel image occupies */
    uint64_t kernel_end;    /* one past the highest (incl. bss / init_size) */
    uint64_t initrd_gpa;
    uint64_t initrd_size;
    uint64_t boot_params_gpa;
};

/* Loads kernel (+initrd), writes boot_params with the e820 map and the
 * command line. On failure returns a negative errno (-ENOENT, -EACCES,
 * -ENOEXEC for a malformed or unsupported image, -ENOMEM when it does not
 * fit in guest RAM, -EINVAL for a too-long command line) and writes one
 * line for a user into err (no trailing newline). */
int boot_load(const struct boot_spec *spec, struct guest_mem *mem,
              struct boot_info *out, char *err, size_t errlen);

/* Replaces the command line boot_load wrote (same place, same pointer in
 * boot_params); -EINVAL if it is longer than BOOT_CMDLINE_MAX. */
int boot_set_cmdline(struct guest_mem *mem, const char *cmdline);

/* True for a Linux kernel: a bzImage, or an ELF entered in the kernel's
 * high half (vmlinux). False for anything else or an unreadable file. */
bool boot_is_linux(const char *path);

/* One e820 entry, as the guest sees it. */
struct e820_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type; /* 1 RAM, 2 reserved, 3 ACPI */
} __attribute__((packed));

/* Builds the e820 map for this memory layout (RAM below the EBDA, reserved
 * EBDA..1 MiB, RAM from 1 MiB to low_size, high RAM if any). Returns the
 * number of entries written (at most max), or -ENOSPC. */
int boot_build_e820(const struct guest_mem *mem, struct e820_entry *out, int max);

#endif
