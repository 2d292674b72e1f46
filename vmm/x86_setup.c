/* vCPU entry states (see x86_setup.h). */
#include <errno.h>
#include <linux/kvm.h>
#include <string.h>

#include "vmm/boot.h"
#include "vmm/kvm.h"
#include "vmm/x86_setup.h"

#define CR0_PE (1ULL << 0)
#define CR0_MP (1ULL << 1)
#define CR0_ET (1ULL << 4)
#define CR0_NE (1ULL << 5)
#define CR0_WP (1ULL << 16)
#define CR0_PG (1ULL << 31)
#define CR4_PAE (1ULL << 5)
#define EFER_LME (1ULL << 8)
#define EFER_LMA (1ULL << 10)
#define PTE_P 1ULL
#define PTE_RW 2ULL
#define PTE_PS (1ULL << 7)

int x86_write_boot_tables(struct guest_mem *mem)
{
    static const uint64_t gdt[4] = {
        0, 0,
        0x00af9b000000ffffULL, /* 0x10: 64-bit code, DPL0 */
        0x00cf93000000ffffULL, /* 0x18: data, DPL0 */
    };
    uint64_t pml4[512] = {0}, pdpt[512] = {0}, pd[512];
    int r = gmem_write(mem, BOOT_GDT_GPA, gdt, sizeof gdt);
    pml4[0] = BOOT_PDPT_GPA | PTE_P | PTE_RW;
    for (int i = 0; i < 4; i++)
        pdpt[i] = (BOOT_PD_GPA + i * 4096ULL) | PTE_P | PTE_RW;
    r = r ?: gmem_write(mem, BOOT_PML4_GPA, pml4, sizeof pml4);
    r = r ?: gmem_write(mem, BOOT_PDPT_GPA, pdpt, sizeof pdpt);
    for (int i = 0; i < 4 && !r; i++) {
        for (int j = 0; j < 512; j++)
            pd[j] = (((uint64_t)i << 30) + ((uint64_t)j << 21)) | PTE_P | PTE_RW | PTE_PS;
        r = gmem_write(mem, BOOT_PD_GPA + i * 4096ULL, pd, sizeof pd);
    }
    return r;
}

static struct kvm_segment seg(uint16_t sel, uint8_t type, int l, int db)
{
    return (struct kvm_segment){
        .base = 0, .limit = 0xffffffff, .selector = sel, .type = type,
        .present = 1, .dpl = 0, .db = db, .s = 1, .l = l, .g = 1,
    };
}

int x86_enter_long_mode(int vcpu_fd, uint64_t entry, uint64_t boot_params)
{
    struct kvm_sregs s;
    if (kvm_get_sregs(vcpu_fd, &s) < 0)
        return -errno;
    s.cs = seg(0x10, 11, 1, 0);
    s.ds = s.es = s.fs = s.gs = s.ss = seg(0x18, 3, 0, 1);
    s.tr = (struct kvm_segment){.base = 0, .limit = 0x67, .selector = 0, .type = 11,
                                .present = 1};
    s.ldt = (struct kvm_segment){.type = 2, .present = 1, .limit = 0xffff};
    s.gdt.base = BOOT_GDT_GPA;
    s.gdt.limit = 4 * 8 - 1;
    s.idt.base = 0;
    s.idt.limit = 0;
    s.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    s.cr3 = BOOT_PML4_GPA;
    s.cr4 = CR4_PAE;
    s.efer = EFER_LME | EFER_LMA;
    if (kvm_set_sregs(vcpu_fd, &s) < 0)
        return -errno;

    struct kvm_regs r;
    memset(&r, 0, sizeof r);
    r.rip = entry;
    r.rsi = boot_params;
    r.rflags = 0x2;
    return kvm_set_regs(vcpu_fd, &r);
}

static struct kvm_segment real_seg(uint16_t sel, uint8_t type)
{
    return (struct kvm_segment){
        .base = (uint64_t)sel << 4, .limit = 0xffff, .selector = sel, .type = type,
        .present = 1, .s = 1,
    };
}

int x86_enter_sipi(int vcpu_fd, uint8_t vector)
{
    struct kvm_sregs s;
    if (kvm_get_sregs(vcpu_fd, &s) < 0)
        return -errno;
    s.cs = real_seg((uint16_t)vector << 8, 11);
    s.ds = s.es = s.fs = s.gs = s.ss = real_seg(0, 3);
    s.tr = (struct kvm_segment){.limit = 0xffff, .type = 11, .present = 1};
    s.ldt = (struct kvm_segment){.limit = 0xffff, .type = 2, .present = 1};
    s.gdt.base = 0;
    s.gdt.limit = 0xffff;
    s.idt.base = 0;
    s.idt.limit = 0xffff;
    s.cr0 = CR0_ET;
    s.cr2 = s.cr3 = s.cr4 = 0;
    s.efer = 0;
    if (kvm_set_sregs(vcpu_fd, &s) < 0)
        return -errno;
    struct kvm_regs r;
    memset(&r, 0, sizeof r);
    r.rip = 0;
    r.rflags = 0x2;
    r.rdx = 0x600; /* family 6 reset signature */
    return kvm_set_regs(vcpu_fd, &r);
}
