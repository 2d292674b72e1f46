/* Thin KVM ioctl wrappers (see kvm.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vmm/kvm.h"
#include "vmm/lapic.h"


static const struct {
    int cap;
    const char *what;
} required_caps[] = {
    {KVM_CAP_X86_USER_SPACE_MSR, "user-space MSR exits"},
    {KVM_CAP_X86_MSR_FILTER, "MSR filters"},
    {KVM_CAP_VCPU_EVENTS, "vCPU events"},
    {KVM_CAP_GET_TSC_KHZ, "TSC frequency query"},
    {KVM_CAP_EXT_CPUID, "CPUID tables"},
    {KVM_CAP_IMMEDIATE_EXIT, "immediate exits (to complete an exit before a pause)"},
};

int kvm_open_system(int *kvm_fd, size_t *run_size, char *err, size_t errlen)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT)
            snprintf(err, errlen, "/dev/kvm does not exist: this host has no KVM "
                     "(load kvm_intel or kvm_amd, or use a host with virtualisation)");
        else if (e == EACCES || e == EPERM)
            snprintf(err, errlen, "cannot open /dev/kvm: permission denied "
                     "(run as root or add yourself to the 'kvm' group)");
        else
            snprintf(err, errlen, "cannot open /dev/kvm: %s", strerror(e));
        return -e;
    }
    int ver = ioctl(fd, KVM_GET_API_VERSION, 0);
    if (ver != KVM_API_VERSION) {
        snprintf(err, errlen, "/dev/kvm speaks API version %d, amalgam needs %d", ver,
                 KVM_API_VERSION);
        close(fd);
        return -ENOTSUP;
    }
    for (size_t i = 0; i < sizeof required_caps / sizeof required_caps[0]; i++) {
        if (ioctl(fd, KVM_CHECK_EXTENSION, required_caps[i].cap) <= 0) {
            snprintf(err, errlen, "this host's KVM lacks %s, which amalgam needs",
                     required_caps[i].what);
            close(fd);
            return -ENOTSUP;
        }
    }
    int sz = ioctl(fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (sz <= 0) {
        snprintf(err, errlen, "KVM_GET_VCPU_MMAP_SIZE failed: %s", strerror(errno));
        close(fd);
        return -EIO;
    }
    *kvm_fd = fd;
    *run_size = (size_t)sz;
    return 0;
}

int kvm_create_vm(int kvm_fd, int *vm_fd)
{
    int fd;
    do {
        fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -errno;
    /* Needed by VMX for real mode; harmless elsewhere. Placed just below
     * the top of the 32-bit space, inside the MMIO hole. */
    ioctl(fd, KVM_SET_TSS_ADDR, 0xfffbd000UL);
    uint64_t idmap = 0xfffbc000ULL;
    ioctl(fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap);
    *vm_fd = fd;
    return 0;
}

int kvm_set_memslot(int vm_fd, uint32_t slot, uint64_t gpa, uint64_t size, void *hva)
{
    struct kvm_userspace_memory_region r = {
        .slot = slot,
        .guest_phys_addr = gpa,
        .memory_size = size,
        .userspace_addr = (uint64_t)(uintptr_t)hva,
    };
    return ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0 ? -errno : 0;
}

int kvm_route_msrs_to_user(int vm_fd)
{
    struct kvm_enable_cap cap = {
        .cap = KVM_CAP_X86_USER_SPACE_MSR,
        .args[0] = KVM_MSR_EXIT_REASON_FILTER | KVM_MSR_EXIT_REASON_UNKNOWN |
                   KVM_MSR_EXIT_REASON_INVAL,
    };
    if (ioctl(vm_fd, KVM_ENABLE_CAP, &cap) < 0)
        return -errno;

    /* A zero bitmap bit denies the access, and a denied access exits to
     * user space because of KVM_MSR_EXIT_REASON_FILTER. */
    static uint8_t deny[256 / 8];
    struct kvm_msr_filter f = {.flags = KVM_MSR_FILTER_DEFAULT_ALLOW};
    const struct {
        uint32_t base, n;
    } owned[] = {
        {MSR_IA32_APICBASE, 1},
        {MSR_IA32_TSC_DEADLINE, 1},
        {MSR_X2APIC_FIRST, MSR_X2APIC_LAST - MSR_X2APIC_FIRST + 1},
    };
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++) {
        f.ranges[i].flags = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE;
        f.ranges[i].base = owned[i].base;
        f.ranges[i].nmsrs = owned[i].n;
        f.ranges[i].bitmap = deny;
    }
    return ioctl(vm_fd, KVM_X86_SET_MSR_FILTER, &f) < 0 ? -errno : 0;
}

int kvm_create_vcpu(int vm_fd, int id, size_t run_size, int *fd, struct kvm_run **run)
{
    int vfd = ioctl(vm_fd, KVM_CREATE_VCPU, (unsigned long)id);
    if (vfd < 0)
        return -errno;
    void *p = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vfd, 0);
    if (p == MAP_FAILED) {
        int e = -errno;
        close(vfd);
        return e;
    }
    *fd = vfd;
    *run = p;
    return 0;
}

/* Topology: every vCPU is a package of its own (one core, one thread), as
 * QEMU's default "-smp N" is. The host's values would put all vCPUs in one
 * package (or in the host's packages) while the SRAT puts them on different
 * NUMA nodes, and Linux then warns that a package spans nodes ("sched: CPU
 * #1's llc-sibling CPU #0 is not on the same node") and builds scheduling
 * domains that contradict the NUMA ones. One package per vCPU is true on
 * every node placement, including a vCPU that later migrates. */
static void cpuid_one_package(struct kvm_cpuid_entry2 *e, uint32_t apic_id)
{
    switch (e->function) {
    case 1:
        e->ebx = (e->ebx & 0x0000ffffu) | (apic_id << 24) | (1u << 16);
        e->edx &= ~(1u << 28); /* HTT: one logical processor per package */
        break;
    case 4: /* Intel caches: no core or thread shares a cache with another */
    case 0x8000001d: /* AMD's equivalent */
        e->eax &= 0x00003fffu; /* keep type and level; sharing counts 1 */
        break;
    case 0xb:
    case 0x1f:
        /* Level 0 (SMT) and level 1 (core), each one wide with a zero
         * APIC-id shift; the package is the whole APIC id. */
        e->eax = 0;
        e->ebx = e->index <= 1 ? 1 : 0;
        e->ecx = e->index | (e->index <= 1 ? (e->index + 1) << 8 : 0);
        e->edx = apic_id;
        break;
    case 0x80000001:
        e->ecx &= ~(1u << 1); /* CmpLegacy: not a multi-core package */
        break;
    case 0x80000008:
        e->ecx &= ~0xf0ffu; /* one core (NC = 0), no core bits in the APIC id */
        break;
    case 0x80000026:
        /* AMD's extended topology leaf, which Linux reads before 0xb:
         * empty, so that it falls back to the leaves above. */
        e->eax = e->ebx = e->ecx = e->edx = 0;
        break;
    case 0x8000001e:
        e->eax = apic_id;
        e->ebx = 0; /* compute unit 0, one thread in it */
        e->ecx = 0; /* node 0 of one node in the package */
        break;
    default:
        break;
    }
}

void kvm_cpuid_fix(struct kvm_cpuid_entry2 *e, uint32_t apic_id)
{
    cpuid_one_package(e, apic_id);
    switch (e->function) {
    case 1:
        e->ecx |= 1u << 21; /* x2APIC: modelled in user space */
        e->ecx |= 1u << 24; /* TSC-deadline timer: modelled in user space */
        /* "Running under a hypervisor": without it Linux never looks at
         * the KVM leaves below, has no kvm-clock, and must calibrate the
         * TSC against the PIT, which under nested or loaded hosts failed
         * ("could not calculate TSC khz") and left the boot waiting for a
         * timer tick that never came. */
        e->ecx |= 1u << 31;
        break;
    case 0x40000001:
        /* Of KVM's paravirtual features only kvm-clock: the others (PV EOI,
         * PV IPIs, PV TLB flush, async page faults, steal time) need KVM's
         * in-kernel LAPIC, and amalgam's LAPIC lives in user space. */
        e->eax &= (1u << 0) | (1u << 3) | (1u << 24); /* CLOCKSOURCE, CLOCKSOURCE2, STABLE */
        e->edx = 0;
        break;
    default:
        break;
    }
}

int kvm_set_cpuid(int kvm_fd, int vcpu_fd, uint32_t apic_id)
{
    int n = 256;
    struct kvm_cpuid2 *c = calloc(1, sizeof *c + n * sizeof(struct kvm_cpuid_entry2));
    if (!c)
        return -ENOMEM;
    c->nent = n;
    if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) < 0) {
        int e = -errno;
        free(c);
        return e;
    }
    for (uint32_t i = 0; i < c->nent; i++)
        kvm_cpuid_fix(&c->entries[i], apic_id);
    int r = ioctl(vcpu_fd, KVM_SET_CPUID2, c) < 0 ? -errno : 0;
    free(c);
    return r;
}

static int io(int fd, unsigned long req, const void *arg)
{
    return ioctl(fd, req, arg) < 0 ? -errno : 0;
}

int kvm_run(int vcpu_fd) { return io(vcpu_fd, KVM_RUN, NULL); }
int kvm_get_regs(int vcpu_fd, struct kvm_regs *r) { return io(vcpu_fd, KVM_GET_REGS, r); }
int kvm_set_regs(int vcpu_fd, const struct kvm_regs *r) { return io(vcpu_fd, KVM_SET_REGS, r); }
int kvm_get_sregs(int vcpu_fd, struct kvm_sregs *s) { return io(vcpu_fd, KVM_GET_SREGS, s); }
int kvm_set_sregs(int vcpu_fd, const struct kvm_sregs *s) { return io(vcpu_fd, KVM_SET_SREGS, s); }
int kvm_get_fpu(int vcpu_fd, struct kvm_fpu *f) { return io(vcpu_fd, KVM_GET_FPU, f); }
int kvm_set_fpu(int vcpu_fd, const struct kvm_fpu *f) { return io(vcpu_fd, KVM_SET_FPU, f); }
int kvm_get_events(int vcpu_fd, struct kvm_vcpu_events *e)
{
    return io(vcpu_fd, KVM_GET_VCPU_EVENTS, e);
}
int kvm_set_events(int vcpu_fd, const struct kvm_vcpu_events *e)
{
    return io(vcpu_fd, KVM_SET_VCPU_EVENTS, e);
}
int kvm_nmi(int vcpu_fd) { return io(vcpu_fd, KVM_NMI, NULL); }

int kvm_interrupt(int vcpu_fd, uint32_t vector)
{
    struct kvm_interrupt irq = {.irq = vector};
    return io(vcpu_fd, KVM_INTERRUPT, &irq);
}

int kvm_set_signal_mask(int vcpu_fd, const void *sigset8)
{
    uint32_t buf[(sizeof(struct kvm_signal_mask) + 8) / 4] = {0};
    struct kvm_signal_mask *km = (struct kvm_signal_mask *)buf;
    km->len = 8;
    memcpy(km->sigset, sigset8, 8);
    return io(vcpu_fd, KVM_SET_SIGNAL_MASK, km);
}

int kvm_tsc_khz(int vcpu_fd)
{
    int khz = ioctl(vcpu_fd, KVM_GET_TSC_KHZ, 0);
    return khz < 0 ? -errno : khz;
}

int kvm_set_tsc_offset(int vcpu_fd, int64_t offset)
{
    struct kvm_device_attr attr = {
        .group = KVM_VCPU_TSC_CTRL,
        .attr = KVM_VCPU_TSC_OFFSET,
        .addr = (uint64_t)(uintptr_t)&offset,
    };
    if (ioctl(vcpu_fd, KVM_HAS_DEVICE_ATTR, &attr) < 0)
        return -ENOTSUP;
    return io(vcpu_fd, KVM_SET_DEVICE_ATTR, &attr);
}

int kvm_vcpu_mmap_size(int kvm_fd, size_t *size)
{
    int sz = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (sz <= 0)
        return sz < 0 ? -errno : -EIO;
    *size = (size_t)sz;
    return 0;
}

int kvm_get_msr(int vcpu_fd, uint32_t index, uint64_t *val)
{
    uint64_t buf[(sizeof(struct kvm_msrs) + sizeof(struct kvm_msr_entry)) / 8 + 1] = {0};
    struct kvm_msrs *m = (struct kvm_msrs *)buf;
    m->nmsrs = 1;
    m->entries[0].index = index;
    if (ioctl(vcpu_fd, KVM_GET_MSRS, m) != 1)
        return -EIO;
    *val = m->entries[0].data;
    return 0;
}

int kvm_set_msr(int vcpu_fd, uint32_t index, uint64_t val)
{
    uint64_t buf[(sizeof(struct kvm_msrs) + sizeof(struct kvm_msr_entry)) / 8 + 1] = {0};
    struct kvm_msrs *m = (struct kvm_msrs *)buf;
    m->nmsrs = 1;
    m->entries[0].index = index;
    m->entries[0].data = val;
    return ioctl(vcpu_fd, KVM_SET_MSRS, m) == 1 ? 0 : -EIO;
}

/* ---- complete vCPU state ------------------------------------------------ */

int kvm_saveable_msrs(int kvm_fd, uint32_t *idx, int max, int *dropped)
{
    struct kvm_msr_list probe = {.nmsrs = 0};
    *dropped = 0;
    /* The first call fails with E2BIG and says how many there are. */
    if (ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
        return -errno;
    struct kvm_msr_list *l = calloc(1, sizeof *l + probe.nmsrs * sizeof l->indices[0]);
    if (!l)
        return -ENOMEM;
    l->nmsrs = probe.nmsrs;
    if (ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, l) < 0) {
        int e = errno;
        free(l);
        return -e;
    }
    int n = 0;
    for (uint32_t i = 0; i < l->nmsrs; i++) {
        if (n == max) {
            (*dropped)++;
            continue;
        }
        idx[n++] = l->indices[i];
    }
    free(l);
    return n;
}

/* KVM_GET_MSRS stops at the first MSR it will not read and returns how
 * many it read: skip that one and go on with the rest. */
static int save_msrs(int vcpu_fd, const uint32_t *idx, int n, struct kvm_vcpu_state *s)
{
    uint64_t buf[(sizeof(struct kvm_msrs) +
                  KVM_VCPU_STATE_MAX_MSRS * sizeof(struct kvm_msr_entry)) / 8 + 1];
    struct kvm_msrs *b = (struct kvm_msrs *)buf;
    s->nmsrs = 0;
    int i = 0;
    while (i < n && i < KVM_VCPU_STATE_MAX_MSRS) {
        int k = 0;
        memset(buf, 0, sizeof buf);
        for (int j = i; j < n && k < KVM_VCPU_STATE_MAX_MSRS; j++)
            b->entries[k++].index = idx[j];
        b->nmsrs = (uint32_t)k;
        int got = ioctl(vcpu_fd, KVM_GET_MSRS, b);
        if (got < 0)
            return -errno;
        for (int j = 0; j < got; j++)
            s->msrs[s->nmsrs++] = b->entries[j];
        i += got + 1; /* past the one it refused */
    }
    return 0;
}

int kvm_vcpu_save(int kvm_fd, int vcpu_fd, const uint32_t *idx, int n,
                  struct kvm_vcpu_state *s)
{
    memset(s, 0, sizeof *s);
    s->version = KVM_VCPU_STATE_VERSION;
    s->has_xsave = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0;
    s->has_xcrs = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0;
    int r = kvm_get_regs(vcpu_fd, &s->regs);
    r = r ?: kvm_get_sregs(vcpu_fd, &s->sregs);
    r = r ?: (s->has_xsave ? io(vcpu_fd, KVM_GET_XSAVE, s->xsave) : kvm_get_fpu(vcpu_fd, &s->fpu));
    r = r ?: (s->has_xcrs ? io(vcpu_fd, KVM_GET_XCRS, &s->xcrs) : 0);
    r = r ?: kvm_get_events(vcpu_fd, &s->events);
    r = r ?: io(vcpu_fd, KVM_GET_DEBUGREGS, &s->debugregs);
    r = r ?: io(vcpu_fd, KVM_GET_MP_STATE, &s->mp_state);
    if (r < 0)
        return r;
    return save_msrs(vcpu_fd, idx, n, s);
}

/* KVM_SET_MSRS stops at the first MSR it refuses. KVM lists some MSRs as
 * saveable that it then refuses to set where the guest lacks the feature
 * (MSR_KVM_ASYNC_PF_INT at 0, seen on kvm_pvm): a refused MSR that already
 * holds the saved value loses nothing; any other is an error. */
static int restore_msrs(int vcpu_fd, const struct kvm_vcpu_state *s)
{
    uint64_t buf[(sizeof(struct kvm_msrs) +
                  KVM_VCPU_STATE_MAX_MSRS * sizeof(struct kvm_msr_entry)) / 8 + 1];
    struct kvm_msrs *b = (struct kvm_msrs *)buf;
    uint32_t i = 0;
    while (i < s->nmsrs) {
        memset(buf, 0, sizeof buf);
        b->nmsrs = s->nmsrs - i;
        memcpy(b->entries, s->msrs + i, b->nmsrs * sizeof b->entries[0]);
        int r = ioctl(vcpu_fd, KVM_SET_MSRS, b);
        if (r < 0)
            return -errno;
        i += (uint32_t)r;
        if (i == s->nmsrs)
            break;
        uint64_t now;
        if (kvm_get_msr(vcpu_fd, s->msrs[i].index, &now) < 0 || now != s->msrs[i].data)
            return -EIO;
        i++;
    }
    return 0;
}

int kvm_vcpu_restore(int vcpu_fd, const struct kvm_vcpu_state *s)
{
    if (s->version != KVM_VCPU_STATE_VERSION || s->nmsrs > KVM_VCPU_STATE_MAX_MSRS ||
        s->has_xsave > 1 || s->has_xcrs > 1)
        return -EINVAL;
    /* QEMU's order: registers, FPU state, XCRs, special registers, MSRs,
     * then MP state, events and debug registers, which depend on them. */
    int r = kvm_set_regs(vcpu_fd, &s->regs);
    r = r ?: (s->has_xsave ? io(vcpu_fd, KVM_SET_XSAVE, s->xsave) : kvm_set_fpu(vcpu_fd, &s->fpu));
    r = r ?: (s->has_xcrs ? io(vcpu_fd, KVM_SET_XCRS, &s->xcrs) : 0);
    r = r ?: kvm_set_sregs(vcpu_fd, &s->sregs);
    r = r ?: restore_msrs(vcpu_fd, s);
    r = r ?: io(vcpu_fd, KVM_SET_MP_STATE, &s->mp_state);
    r = r ?: kvm_set_events(vcpu_fd, &s->events);
    return r ?: io(vcpu_fd, KVM_SET_DEBUGREGS, &s->debugregs);
}
