/* Port I/O, MMIO and MSR exits. Ports and MMIO go to the device bus
 * (bus.h, devices.c), which runs the access here or forwards it to the
 * node that owns the device; MSRs and each vCPU's own xAPIC page (at its
 * APIC base) are the vCPU's LAPIC. Anything no device claims reads as
 * all-ones and ignores writes, as an empty bus does; with --verbose the
 * first accesses to unknown ports and addresses are logged. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "clock/clock.h"
#include "vmm/bus.h"
#include "vmm/vm.h"

static void log_unclaimed(struct vm *vm, const struct bus_access *a)
{
    if (!vm->cfg.verbose)
        return;
    /* Only the first few, to keep a chatty guest from flooding stderr. */
    if (atomic_fetch_add(&vm->unknown_port_logged, 1) < 32)
        fprintf(stderr, "amalgam: guest %s unassigned %s %#llx\n", a->write ? "wrote" : "read",
                a->space == BUS_PIO ? "port" : "MMIO", (unsigned long long)a->addr);
}

/* One access through the bus; false if the VM failed (the owner of the
 * device could not be reached). */
static bool bus_run(struct vcpu *v, struct bus_access *a)
{
    int r = bus_access(&v->vm->bus, v, a);
    if (r == BUS_UNCLAIMED) { /* Linux probes legacy ports: logged only with -v */
        vm_guest_count(v->vm, GERR_NO_DEVICE);
        log_unclaimed(v->vm, a);
    }
    if (r >= 0)
        return true;
    const struct bus_dev *d = &v->vm->bus.dev[a->dev];
    vm_fail(v->vm, "vCPU %d: node %d did not answer an access to its %s (%s %#llx): %s", v->id,
            d->owner, d->name, a->space == BUS_PIO ? "port" : "address",
            (unsigned long long)a->addr, r == -ETIMEDOUT ? "timed out" : strerror(-r));
    return false;
}

int handle_io(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    int size = run->io.size;
    bool write = run->io.direction == KVM_EXIT_IO_OUT;
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    if (size != 1 && size != 2 && size != 4)
        return 0;
    for (uint32_t i = 0; i < run->io.count; i++, data += size) {
        struct bus_access a = {.space = BUS_PIO, .size = (uint8_t)size, .write = write,
                               .vcpu = (uint16_t)v->id, .addr = run->io.port};
        if (write)
            memcpy(&a.data, data, (size_t)size);
        if (!bus_run(v, &a))
            return -EIO;
        if (!write)
            memcpy(data, &a.data, (size_t)size);
    }
    return 0;
}

static void apply_lapic_effects(struct vcpu *v, const struct lapic_effects *fx)
{
    if (fx->bad_vector)
        vm_guest_error(v->vm, GERR_IPI_VECTOR, "sent an IPI with vector %u (0-15 are illegal)",
                       fx->msg.vector);
    if (fx->bad_mode)
        vm_guest_error(v->vm, GERR_IPI_MODE, "sent an IPI with reserved delivery mode %u",
                       fx->msg.delivery);
    if (fx->send)
        vm_deliver(v->vm, &fx->msg);
    if (fx->eoi_vector >= 0)
        vm_eoi(v->vm, (uint8_t)fx->eoi_vector);
}

static bool in_page(uint64_t addr, uint64_t base)
{
    return (addr & ~0xfffULL) == (base & ~0xfffULL);
}

static int lapic_mmio(struct vcpu *v, uint64_t off, bool write, uint8_t *data, int len)
{
    struct lapic_effects fx = {.eoi_vector = -1};
    uint32_t val = 0;
    if (len != 4)
        return 0; /* the SDM leaves other sizes undefined: ignore */
    pthread_mutex_lock(&v->lock);
    if (write) {
        memcpy(&val, data, 4);
        if (lapic_mmio_write(&v->lapic, off, val, clock_now_ns(), &fx) < 0)
            vm_guest_error(v->vm, GERR_LAPIC_REG, "wrote %#x to LAPIC register %#llx, which is "
                           "reserved or read-only", val, (unsigned long long)off);
    } else {
        lapic_mmio_read(&v->lapic, off, &val, clock_now_ns());
        memcpy(data, &val, 4);
    }
    pthread_mutex_unlock(&v->lock);
    apply_lapic_effects(v, &fx);
    return 0;
}

int handle_mmio(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    uint64_t addr = run->mmio.phys_addr;
    int len = (int)run->mmio.len;
    bool write = run->mmio.is_write;
    uint64_t base = v->lapic.apic_base; /* only this thread changes it */
    if ((base & APICBASE_EN) && !(base & APICBASE_EXTD) && in_page(addr, base))
        return lapic_mmio(v, addr & 0xfff, write, run->mmio.data, len);
    if (len != 1 && len != 2 && len != 4 && len != 8) {
        if (!write)
            memset(run->mmio.data, 0xff, sizeof run->mmio.data);
        return 0;
    }
    struct bus_access a = {.space = BUS_MMIO, .size = (uint8_t)len, .write = write,
                           .vcpu = (uint16_t)v->id, .addr = addr};
    if (write)
        memcpy(&a.data, run->mmio.data, (size_t)len);
    if (!bus_run(v, &a))
        return -EIO;
    if (!write)
        memcpy(run->mmio.data, &a.data, (size_t)len);
    return 0;
}

int handle_rdmsr(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    uint64_t val = 0;
    int r = -EINVAL;
    if (lapic_handles_msr(run->msr.index)) {
        pthread_mutex_lock(&v->lock);
        r = lapic_msr_read(&v->lapic, run->msr.index, &val, clock_now_ns());
        pthread_mutex_unlock(&v->lock);
    }
    run->msr.data = val;
    run->msr.error = r < 0; /* KVM injects #GP */
    return 0;
}

int handle_wrmsr(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    struct lapic_effects fx = {.eoi_vector = -1};
    int r = -EINVAL;
    if (lapic_handles_msr(run->msr.index)) {
        pthread_mutex_lock(&v->lock);
        r = lapic_msr_write(&v->lapic, run->msr.index, run->msr.data, clock_now_ns(), &fx);
        pthread_mutex_unlock(&v->lock);
    }
    run->msr.error = r < 0;
    if (r < 0)
        vm_guest_error(v->vm, GERR_LAPIC_REG, "wrote %#llx to MSR %#x: #GP",
                       (unsigned long long)run->msr.data, run->msr.index);
    if (r == 0)
        apply_lapic_effects(v, &fx);
    return 0;
}
