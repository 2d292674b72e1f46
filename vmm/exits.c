/* Port I/O, MMIO and MSR exits: the node's platform devices.
 *
 * Ports: COM1 UART 0x3f8-0x3ff, debug-exit 0x501, bench 0x502, ACPI PM1a
 * event 0x600-0x603, PM1a control 0x604-0x605, PM timer 0x608-0x60b, reset
 * control 0xcf9 and the 8042 reset command (0xfe to port 0x64).
 * MMIO: each vCPU's own xAPIC page at its APIC base, the IOAPIC page.
 * Anything else reads as all-ones and ignores writes, as an empty bus does;
 * with --verbose the first access to each unknown port is logged. */
#include "platform/platform.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "clock/clock.h"
#include "vmm/cluster.h"
#include "vmm/vm.h"

#define PM1A_EVT PLATFORM_PM1A_EVT_PORT
#define PM1A_CNT PLATFORM_PM1A_CNT_PORT
#define PM_TMR PLATFORM_PM_TMR_PORT
#define PM1_CNT_SCI_EN 0x0001
#define PM1_CNT_SLP_EN 0x2000
#define PM_TIMER_HZ PLATFORM_PM_TIMER_HZ
#define PORT_RESET_CTL PLATFORM_RESET_PORT
#define PORT_KBD_CMD 0x64
#define PORT_POST 0x80

/* After a UART access: drive IRQ 4 if the line changed. dev_lock held. */
static void uart_sync_irq(struct vm *vm, struct ioapic_out *out)
{
    bool line = uart_irq_line(&vm->uart);
    if (line != vm->uart_irq) {
        vm->uart_irq = line;
        ioapic_set_irq(&vm->ioapic, UART_COM1_IRQ, line, out);
    }
}

static void deliver_all(struct vm *vm, const struct ioapic_out *out)
{
    for (int i = 0; i < out->n; i++)
        vm_deliver(vm, &out->msg[i]);
}

static uint32_t uart_io(struct vm *vm, uint16_t port, bool write, uint32_t val)
{
    struct ioapic_out out = {0};
    uint32_t r = 0;
    pthread_mutex_lock(&vm->dev_lock);
    if (write)
        uart_write(&vm->uart, port - UART_COM1_PORT, (uint8_t)val);
    else
        r = uart_read(&vm->uart, port - UART_COM1_PORT);
    uart_sync_irq(vm, &out);
    pthread_mutex_unlock(&vm->dev_lock);
    deliver_all(vm, &out);
    return r;
}

static void log_unknown_port(struct vm *vm, uint16_t port, bool write)
{
    if (!vm->cfg.verbose)
        return;
    /* Only the first few, to keep a chatty guest from flooding stderr. */
    if (atomic_fetch_add(&vm->unknown_port_logged, 1) < 32)
        fprintf(stderr, "amalgam: guest %s unassigned port %#x\n", write ? "wrote" : "read",
                port);
}

static uint32_t pm_io(struct vm *vm, uint16_t port, int size, bool write, uint32_t val)
{
    if (port >= PM_TMR && port < PM_TMR + 4) {
        uint64_t ticks = (clock_now_ns() - vm->pm_timer_base_ns) * PM_TIMER_HZ / 1000000000ULL;
        return (uint32_t)(ticks & 0xffffff) >> (8 * (port - PM_TMR));
    }
    if (port == PM1A_CNT || port == PM1A_CNT + 1) {
        uint32_t v = port == PM1A_CNT ? val : val << 8;
        if (write && (v & PM1_CNT_SLP_EN))
            vm_stop(vm, VM_EXIT_POWEROFF, 0);
        return port == PM1A_CNT ? PM1_CNT_SCI_EN : 0;
    }
    if (port == PM1A_EVT + 2 || port == PM1A_EVT + 3) {
        /* PM1 enable keeps what is written, though nothing ever raises an
         * ACPI event: ACPICA tells whether the global lock exists by
         * whether GBL_EN sticks, and printed two "ACPI Error" lines on
         * every boot when it did not. No firmware ever holds the lock. */
        int shift = 8 * (port - (PM1A_EVT + 2));
        if (write) {
            uint16_t mask = (uint16_t)((size == 1 ? 0xff : 0xffff) << shift);
            vm->pm1_enable = (uint16_t)((vm->pm1_enable & ~mask) | ((val << shift) & mask));
        }
        return vm->pm1_enable >> shift;
    }
    return 0; /* PM1 status: nothing ever raises an ACPI event */
}

/* One port access of `size` bytes; returns the value read. */
uint32_t vm_port_access(struct vm *vm, uint16_t port, int size, bool write, uint32_t val)
{
    if (port >= UART_COM1_PORT && port < UART_COM1_PORT + 8)
        return uart_io(vm, port, write, val);
    if (port >= PM1A_EVT && port < PM_TMR + 4)
        return pm_io(vm, port, size, write, val);
    switch (port) {
    case VMM_PORT_DEBUG_EXIT:
        if (write)
            vm_stop(vm, VM_EXIT_DEBUG_PORT, (int)(val & 0xff));
        return 0;
    case VMM_PORT_BENCH:
        return 0;
    case PORT_RESET_CTL:
        if (write && (val & 0x4))
            vm_stop(vm, VM_EXIT_RESET, 0);
        return 0;
    case PORT_KBD_CMD:
        if (write && (val & 0xff) == 0xfe)
            vm_stop(vm, VM_EXIT_RESET, 0);
        return 0xff;
    default:
        log_unknown_port(vm, port, write);
        return size == 4 ? 0xffffffffu : size == 2 ? 0xffffu : 0xffu;
    }
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
        uint32_t val = 0;
        if (write)
            memcpy(&val, data, (size_t)size);
        if (run->io.port == PORT_POST) { /* per vCPU: see struct vcpu */
            if (write)
                v->post_codes[v->post_count++ % VCPU_POST_CODES] = (uint8_t)val;
            else
                memset(data, 0xff, (size_t)size);
            continue;
        }
        /* Devices live on node 0; elsewhere their ports are forwarded. */
        uint32_t r = v->vm->cfg.ic && v->vm->node != 0
                         ? cluster_forward_io(v, run->io.port, size, write, val)
                         : vm_port_access(v->vm, run->io.port, size, write, val);
        if (!write)
            memcpy(data, &r, (size_t)size);
    }
    return 0;
}

static void apply_lapic_effects(struct vcpu *v, const struct lapic_effects *fx)
{
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
        lapic_mmio_write(&v->lapic, off, val, clock_now_ns(), &fx);
    } else {
        lapic_mmio_read(&v->lapic, off, &val, clock_now_ns());
        memcpy(data, &val, 4);
    }
    pthread_mutex_unlock(&v->lock);
    apply_lapic_effects(v, &fx);
    return 0;
}

uint32_t vm_ioapic_access(struct vm *vm, uint64_t offset, bool write, uint32_t val)
{
    struct ioapic_out out = {0};
    uint32_t r = 0;
    pthread_mutex_lock(&vm->dev_lock);
    if (write)
        ioapic_mmio_write(&vm->ioapic, offset, val, &out);
    else
        ioapic_mmio_read(&vm->ioapic, offset, &r);
    pthread_mutex_unlock(&vm->dev_lock);
    deliver_all(vm, &out);
    return r;
}

static int ioapic_mmio(struct vcpu *v, uint64_t addr, bool write, uint8_t *data, int len)
{
    uint32_t val = 0;
    if (len != 4)
        return 0;
    if (write)
        memcpy(&val, data, 4);
    uint32_t r = v->vm->cfg.ic && v->vm->node != 0
                     ? cluster_forward_mmio(v, addr, write, val)
                     : vm_ioapic_access(v->vm, addr & 0xfff, write, val);
    if (!write)
        memcpy(data, &r, 4);
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
    if (in_page(addr, IOAPIC_DEFAULT_BASE))
        return ioapic_mmio(v, addr, write, run->mmio.data, len);
    if (!write)
        memset(run->mmio.data, 0xff, sizeof run->mmio.data);
    if (v->vm->cfg.verbose && atomic_fetch_add(&v->vm->unknown_port_logged, 1) < 32)
        fprintf(stderr, "amalgam: guest %s unassigned MMIO %#llx\n", write ? "wrote" : "read",
                (unsigned long long)addr);
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
    if (r == 0)
        apply_lapic_effects(v, &fx);
    return 0;
}
