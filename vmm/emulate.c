/* Emulated-CPL0 hosts: the start-up probe and the instruction fix-ups. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "clock/clock.h"
#include "vmm/emulate.h"
#include "vmm/kvm.h"
#include "vmm/vm.h"
#include "vmm/x86_setup.h"

#define PROBE_ITERS 20000u
#define PROBE_EMULATED_NS 50.0

static const char *const kind_name[EMUL_KIND_COUNT] = {
    [EMUL_INT3] = "int3", [EMUL_FWAIT] = "fwait", [EMUL_CLAC] = "clac",
    [EMUL_STAC] = "stac", [EMUL_LDMXCSR] = "ldmxcsr", [EMUL_STMXCSR] = "stmxcsr",
};

static int probe_run(int vm_fd, int vcpu_fd, struct kvm_run *run, double *ns)
{
    int r = x86_enter_sipi(vcpu_fd, 0);
    if (r < 0)
        return r;
    uint64_t t0 = clock_now_ns();
    do {
        r = kvm_run(vcpu_fd);
    } while (r == -EINTR);
    uint64_t t1 = clock_now_ns();
    (void)vm_fd;
    if (r < 0)
        return r;
    if (run->exit_reason != KVM_EXIT_HLT)
        return -EIO;
    *ns = (double)(t1 - t0) / PROBE_ITERS;
    return 0;
}

int emulate_probe_cpl0(int kvm_fd, bool *emulated, double *ns_per_iter)
{
    /* mov ecx, PROBE_ITERS; 1: dec ecx; jnz 1b; hlt  (16-bit code) */
    const uint8_t code[] = {0x66, 0xb9, PROBE_ITERS & 0xff, (PROBE_ITERS >> 8) & 0xff,
                            (PROBE_ITERS >> 16) & 0xff, PROBE_ITERS >> 24,
                            0x66, 0x49, 0x75, 0xfc, 0xf4};
    int vm_fd = -1, vcpu_fd = -1, r;
    struct kvm_run *run = NULL;
    size_t run_size = 0;
    r = kvm_vcpu_mmap_size(kvm_fd, &run_size);
    if (r < 0)
        return r;
    void *mem = mmap(NULL, 0x10000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return -errno;
    memcpy(mem, code, sizeof code);
    r = kvm_create_vm(kvm_fd, &vm_fd);
    r = r ?: kvm_set_memslot(vm_fd, 0, 0, 0x10000, mem);
    r = r ?: kvm_create_vcpu(vm_fd, 0, run_size, &vcpu_fd, &run);
    /* The first run pays for shadow-page set-up: time the second. */
    r = r ?: probe_run(vm_fd, vcpu_fd, run, ns_per_iter);
    r = r ?: probe_run(vm_fd, vcpu_fd, run, ns_per_iter);
    if (r == 0)
        *emulated = *ns_per_iter > PROBE_EMULATED_NS;
    if (run)
        munmap(run, run_size);
    if (vcpu_fd >= 0)
        close(vcpu_fd);
    if (vm_fd >= 0)
        close(vm_fd);
    munmap(mem, 0x10000);
    return r;
}

/* ---- decoding ---------------------------------------------------------- */

static int decode_modrm(const uint8_t *b, size_t n, size_t i, int rex, struct fixup_mem *m,
                        int *reg)
{
    if (i >= n)
        return -1;
    uint8_t modrm = b[i++];
    int mod = modrm >> 6, rm = modrm & 7;
    *reg = (modrm >> 3) & 7;
    if (mod == 3)
        return -1; /* ld/stmxcsr take memory operands only */
    m->base = rm | ((rex & 1) << 3);
    m->index = -1;
    m->scale = 1;
    m->disp = 0;
    if (rm == 4) {
        if (i >= n)
            return -1;
        uint8_t sib = b[i++];
        int idx = ((sib >> 3) & 7) | ((rex & 2) << 2);
        m->scale = 1 << (sib >> 6);
        m->index = idx == 4 ? -1 : idx;
        m->base = (sib & 7) | ((rex & 1) << 3);
        if ((sib & 7) == 5 && mod == 0) {
            m->base = -1;
            mod = 2; /* disp32 follows */
        }
    } else if (rm == 5 && mod == 0) {
        m->base = 16; /* RIP-relative */
        mod = 2;
    }
    if (mod == 1) {
        if (i + 1 > n)
            return -1;
        m->disp = (int8_t)b[i++];
    } else if (mod == 2) {
        if (i + 4 > n)
            return -1;
        int32_t d;
        memcpy(&d, b + i, 4);
        m->disp = d;
        i += 4;
    }
    return (int)i;
}

int emulate_decode(const uint8_t *b, size_t n, enum fixup_op *op, struct fixup_mem *mem)
{
    size_t i = 0;
    int rex = 0;
    memset(mem, 0, sizeof *mem);
    *op = FIX_NONE;
    for (; i < n && i < 14; i++) {
        uint8_t p = b[i];
        if (p == 0x64 || p == 0x65)
            mem->seg = p - 0x60;
        else if (p == 0x67)
            mem->addr32 = true;
        else if (p == 0x66 || p == 0xf2 || p == 0xf3 || p == 0x2e || p == 0x36 ||
                 p == 0x3e || p == 0x26 || p == 0xf0)
            continue;
        else
            break;
    }
    if (i < n && (b[i] & 0xf0) == 0x40)
        rex = b[i++] & 0xf;
    if (i >= n)
        return -1;
    if (b[i] == 0xcc) {
        *op = FIX_INT3;
        return (int)i + 1;
    }
    if (b[i] == 0x9b) {
        *op = FIX_FWAIT;
        return (int)i + 1;
    }
    if (b[i] != 0x0f || i + 2 >= n)
        return -1;
    if (b[i + 1] == 0x01 && (b[i + 2] == 0xca || b[i + 2] == 0xcb)) {
        *op = b[i + 2] == 0xca ? FIX_CLAC : FIX_STAC;
        return (int)i + 3;
    }
    if (b[i + 1] == 0xae) {
        int reg, len = decode_modrm(b, n, i + 2, rex, mem, &reg);
        if (len < 0 || (reg != 2 && reg != 3))
            return -1;
        *op = reg == 2 ? FIX_LDMXCSR : FIX_STMXCSR;
        return len;
    }
    return -1;
}

/* ---- guest memory by linear address ------------------------------------ */

static uint64_t reg_value(const struct kvm_regs *r, int n)
{
    const uint64_t v[16] = {r->rax, r->rcx, r->rdx, r->rbx, r->rsp, r->rbp, r->rsi, r->rdi,
                            r->r8,  r->r9,  r->r10, r->r11, r->r12, r->r13, r->r14, r->r15};
    return v[n & 15];
}

/* 4-level walk (and flat translation without paging) through the guest
 * view, so that on several nodes the tables read are the coherent ones;
 * -EFAULT on a non-present entry or a non-RAM table. */
static int linear_to_gpa(struct vm *vm, const struct kvm_sregs *s, uint64_t la, uint64_t *gpa)
{
    if (!(s->cr0 & (1ULL << 31))) {
        *gpa = la;
        return 0;
    }
    if (!(s->efer & (1ULL << 10)))
        return -ENOTSUP; /* 32-bit paging: no guest we fix up uses it */
    uint64_t table = s->cr3 & 0x000ffffffffff000ULL;
    for (int level = 3; level >= 0; level--) {
        uint64_t e;
        int shift = 12 + 9 * level;
        if (gmem_guest_read(&vm->mem, table + ((la >> shift) & 511) * 8, &e, 8) < 0 || !(e & 1))
            return -EFAULT;
        if (level == 0 || (level <= 2 && (e & 0x80))) {
            uint64_t mask = (1ULL << shift) - 1;
            *gpa = (e & 0x000ffffffffff000ULL & ~mask) | (la & mask);
            return 0;
        }
        table = e & 0x000ffffffffff000ULL;
    }
    return -EFAULT;
}

static int read_linear(struct vm *vm, const struct kvm_sregs *s, uint64_t la, void *buf,
                       size_t len)
{
    uint8_t *p = buf;
    while (len) {
        uint64_t gpa;
        size_t chunk = 4096 - (la & 4095);
        if (chunk > len)
            chunk = len;
        int r = linear_to_gpa(vm, s, la, &gpa);
        if (r < 0)
            return r;
        if (gmem_guest_read(&vm->mem, gpa, p, chunk) < 0)
            return -EFAULT;
        p += chunk, la += chunk, len -= chunk;
    }
    return 0;
}

static int write_linear(struct vm *vm, const struct kvm_sregs *s, uint64_t la,
                        const void *buf, size_t len)
{
    uint64_t gpa;
    if ((la & 4095) + len > 4096)
        return -EFAULT; /* only 4-byte operands come here; a split is not worth it */
    int r = linear_to_gpa(vm, s, la, &gpa);
    return r < 0 ? r : gmem_guest_write(&vm->mem, gpa, buf, len);
}

static int fetch_insn(struct vcpu *v, const struct kvm_regs *r, const struct kvm_sregs *s,
                      uint8_t *buf, size_t *n)
{
    struct kvm_run *run = v->run;
    if ((run->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) &&
        run->emulation_failure.insn_size > 0 && run->emulation_failure.insn_size <= 15) {
        *n = run->emulation_failure.insn_size;
        memcpy(buf, run->emulation_failure.insn_bytes, *n);
        return 0;
    }
    *n = 15;
    return read_linear(v->vm, s, s->cs.base + r->rip, buf, 15);
}

/* ---- carrying instructions out ----------------------------------------- */

static void note_kind(struct vm *vm, enum emul_kind k)
{
    if (atomic_fetch_add(&vm->emul_count[k], 1) == 0)
        fprintf(stderr, "amalgam: guest kernel uses '%s', which this host's KVM cannot "
                "emulate: the VMM carries it out (logged once)\n", kind_name[k]);
}

static int inject_bp(struct vcpu *v)
{
    struct kvm_vcpu_events ev;
    if (kvm_get_events(v->fd, &ev) < 0)
        return -errno;
    ev.exception.injected = 1;
    ev.exception.nr = 3;
    ev.exception.has_error_code = 0;
    ev.flags = 0;
    return kvm_set_events(v->fd, &ev);
}

static int mxcsr_op(struct vcpu *v, const struct kvm_regs *r, const struct kvm_sregs *s,
                    const struct fixup_mem *m, int len, bool load)
{
    uint64_t la = m->disp;
    if (m->base == 16)
        la += r->rip + (uint64_t)len;
    else if (m->base >= 0)
        la += reg_value(r, m->base);
    if (m->index >= 0)
        la += reg_value(r, m->index) * (uint64_t)m->scale;
    if (m->addr32)
        la &= 0xffffffffULL;
    if (m->seg == 4)
        la += s->fs.base;
    else if (m->seg == 5)
        la += s->gs.base;

    struct kvm_fpu fpu;
    if (kvm_get_fpu(v->fd, &fpu) < 0)
        return -errno;
    if (load) {
        uint32_t val;
        int e = read_linear(v->vm, s, la, &val, 4);
        if (e < 0)
            return e;
        fpu.mxcsr = val & 0xffff;
        return kvm_set_fpu(v->fd, &fpu);
    }
    return write_linear(v->vm, s, la, &fpu.mxcsr, 4);
}

int emulate_fixup(struct vcpu *v)
{
    struct kvm_regs r;
    struct kvm_sregs s;
    uint8_t insn[15];
    size_t n;
    enum fixup_op op;
    struct fixup_mem m;
    if (kvm_get_regs(v->fd, &r) < 0 || kvm_get_sregs(v->fd, &s) < 0)
        return -errno;
    if (fetch_insn(v, &r, &s, insn, &n) < 0)
        return -EFAULT;
    int len = emulate_decode(insn, n, &op, &m);
    if (len < 0)
        return -ENOTSUP;
    int e = 0;
    switch (op) {
    case FIX_INT3:
        note_kind(v->vm, EMUL_INT3);
        r.rip += (uint64_t)len;
        if (kvm_set_regs(v->fd, &r) < 0)
            return -errno;
        return inject_bp(v);
    case FIX_FWAIT:
        note_kind(v->vm, EMUL_FWAIT);
        break;
    case FIX_CLAC:
        note_kind(v->vm, EMUL_CLAC);
        r.rflags &= ~(1ULL << 18);
        break;
    case FIX_STAC:
        note_kind(v->vm, EMUL_STAC);
        r.rflags |= 1ULL << 18;
        break;
    case FIX_LDMXCSR:
    case FIX_STMXCSR:
        note_kind(v->vm, op == FIX_LDMXCSR ? EMUL_LDMXCSR : EMUL_STMXCSR);
        e = mxcsr_op(v, &r, &s, &m, len, op == FIX_LDMXCSR);
        break;
    case FIX_NONE:
        return -ENOTSUP;
    }
    if (e < 0)
        return e;
    r.rip += (uint64_t)len;
    return kvm_set_regs(v->fd, &r);
}

void emulate_describe_insn(struct vcpu *v, char *buf, size_t len)
{
    struct kvm_regs r;
    struct kvm_sregs s;
    uint8_t insn[15];
    size_t n = 0;
    if (kvm_get_regs(v->fd, &r) < 0 || kvm_get_sregs(v->fd, &s) < 0) {
        snprintf(buf, len, "(registers unavailable)");
        return;
    }
    int off = snprintf(buf, len, "at RIP %#llx", (unsigned long long)r.rip);
    if (fetch_insn(v, &r, &s, insn, &n) < 0 || off < 0)
        return;
    off += snprintf(buf + off, len - (size_t)off, " (bytes");
    for (size_t i = 0; i < n && i < 8 && (size_t)off < len; i++)
        off += snprintf(buf + off, len - (size_t)off, " %02x", insn[i]);
    if ((size_t)off < len)
        snprintf(buf + off, len - (size_t)off, ")");
}
