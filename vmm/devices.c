/* The machine's platform devices on the bus (see bus.h): what each port
 * and MMIO range does, and which node runs it.
 *
 * Owned by node 0 (forwarded from the others): COM1 UART 0x3f8-0x3ff, the
 * ACPI PM block (PM1a event 0x600-0x603, control 0x604-0x605, PM timer
 * 0x608-0x60b), debug-exit 0x501, reset control 0xcf9 and the 8042's
 * reset command (0xfe to port 0x64), and the IOAPIC page.
 * On every node, each its own: the bench port 0x502 (it times vm exits,
 * which forwarding would hide) and the POST port 0x80 (per vCPU: see
 * struct vcpu).
 *
 * The UART and the IOAPIC are pure models (uart.c, ioapic.c) under
 * vm->dev_lock; the interrupts they raise are delivered after the lock is
 * dropped. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <x86intrin.h>

#include "clock/clock.h"
#include "platform/platform.h"
#include "vmm/bus.h"
#include "vmm/state.h"
#include "vmm/vm.h"

#define PM1A_EVT PLATFORM_PM1A_EVT_PORT
#define PM1A_CNT PLATFORM_PM1A_CNT_PORT
#define PM_TMR PLATFORM_PM_TMR_PORT
#define PM1_CNT_SCI_EN 0x0001
#define PM1_CNT_SLP_EN 0x2000
#define PM1_PWRBTN 0x0100 /* PM1 status and enable: the fixed power button */
#define PORT_KBD_CMD 0x64
#define PORT_POST 0x80

#define SIZES_ANY 0x7 /* 1, 2 and 4 bytes */
#define SIZE_4 0x4

/* ---- UART --------------------------------------------------------------- */

/* After a UART access: drive IRQ 4 if the line changed. dev_lock held. */
static void uart_sync_irq(struct vm *vm, struct ioapic_out *out)
{
    bool line = uart_irq_line(&vm->uart);
    if (line != vm->uart.line) {
        vm->uart.line = line;
        ioapic_set_irq(&vm->ioapic, UART_COM1_IRQ, line, out);
    }
}

static uint64_t uart_dev_read(void *ctx, void *who, uint64_t port, int size)
{
    struct vm *vm = ctx;
    struct ioapic_out out = {0};
    (void)who, (void)size;
    pthread_mutex_lock(&vm->dev_lock);
    uint32_t r = uart_read(&vm->uart, (unsigned)(port - UART_COM1_PORT));
    uart_sync_irq(vm, &out);
    pthread_mutex_unlock(&vm->dev_lock);
    vm_deliver_all(vm, &out);
    return r;
}

static void uart_dev_write(void *ctx, void *who, uint64_t port, int size, uint64_t val)
{
    struct vm *vm = ctx;
    struct ioapic_out out = {0};
    (void)who, (void)size;
    pthread_mutex_lock(&vm->dev_lock);
    uart_write(&vm->uart, (unsigned)(port - UART_COM1_PORT), (uint8_t)val);
    uart_sync_irq(vm, &out);
    pthread_mutex_unlock(&vm->dev_lock);
    vm_deliver_all(vm, &out);
}

/* Saved state is the protobuf encoding of vmm/state.h: versioned, and
 * checked field by field before anything is applied. */
static int uart_dev_save(void *ctx, void *buf, size_t len)
{
    struct vm *vm = ctx;
    pthread_mutex_lock(&vm->dev_lock);
    int r = state_uart_encode(&vm->uart, vm->uart.line, buf, len);
    pthread_mutex_unlock(&vm->dev_lock);
    return r;
}

static int uart_dev_restore(void *ctx, const void *buf, size_t len)
{
    struct vm *vm = ctx;
    pthread_mutex_lock(&vm->dev_lock);
    int r = state_uart_decode(&vm->uart, &vm->uart.line, buf, len);
    pthread_mutex_unlock(&vm->dev_lock);
    return r;
}

static void uart_dev_reset(void *ctx)
{
    struct vm *vm = ctx;
    pthread_mutex_lock(&vm->dev_lock);
    uart_init(&vm->uart, vm->uart.out, vm->uart.out_ctx);
    vm->uart.line = false;
    pthread_mutex_unlock(&vm->dev_lock);
}

static const struct bus_dev_ops uart_ops = {uart_dev_read, uart_dev_write, uart_dev_save,
                                            uart_dev_restore, uart_dev_reset};

/* ---- ACPI PM block -------------------------------------------------------- */

/* Guest time, before the PM timer's offset (see struct acpi_pm). */
static uint64_t pm_raw_ns(struct vm *vm)
{
    uint64_t ref = atomic_load(&vm->pm.timer_tsc_ref);
    if (!ref)
        return clock_now_ns();
    uint64_t tsc = __rdtsc();
    return tsc > ref ? (uint64_t)((unsigned __int128)(tsc - ref) * 1000000ULL /
                                  vm->pm.timer_tsc_khz) : 0;
}

uint64_t vm_pm_time_ns(struct vm *vm)
{
    return pm_raw_ns(vm) + (uint64_t)atomic_load(&vm->pm.timer_offset_ns);
}

/* Every node answers it itself: no state but the time. */
static uint64_t pm_timer_read(void *ctx, void *who, uint64_t port, int size)
{
    (void)who, (void)size;
    uint64_t ticks = (uint64_t)((unsigned __int128)vm_pm_time_ns(ctx) * PLATFORM_PM_TIMER_HZ /
                                1000000000ULL);
    return (uint32_t)(ticks & 0xffffff) >> (8 * (port - PM_TMR));
}

static void pm_timer_write(void *ctx, void *who, uint64_t port, int size, uint64_t val)
{
    (void)ctx, (void)who, (void)port, (void)size, (void)val; /* read-only */
}

static const struct bus_dev_ops pm_timer_ops = {pm_timer_read, pm_timer_write, NULL, NULL, NULL};

static uint64_t pm_read(void *ctx, void *who, uint64_t port, int size)
{
    struct vm *vm = ctx;
    (void)who, (void)size;
    if (port == PM1A_CNT || port == PM1A_CNT + 1)
        return port == PM1A_CNT ? PM1_CNT_SCI_EN : 0;
    if (port == PM1A_EVT + 2 || port == PM1A_EVT + 3)
        return atomic_load(&vm->pm.enable) >> (8 * (port - (PM1A_EVT + 2)));
    pthread_mutex_lock(&vm->dev_lock);
    uint16_t st = vm->pm.status; /* PM1 status: only the power button is ever raised */
    pthread_mutex_unlock(&vm->dev_lock);
    return (uint64_t)(st >> (8 * (port - PM1A_EVT))) & (size == 1 ? 0xff : 0xffff);
}

/* The SCI is level-triggered: up while an enabled event's status is set.
 * Called with dev_lock held; the IOAPIC's messages go out after. */
static void pm_update_sci(struct vm *vm, struct ioapic_out *out)
{
    bool level = vm->pm.status & atomic_load(&vm->pm.enable) & PM1_PWRBTN;
    ioapic_set_irq(&vm->ioapic, PLATFORM_SCI_IRQ, level, out);
}

int vm_powerdown(struct vm *vm, char *err, size_t n)
{
    struct ioapic_out out = {0};
    if (vm->node != 0) {
        snprintf(err, n, "the power button is node 0's");
        return -EINVAL;
    }
    pthread_mutex_lock(&vm->dev_lock);
    vm->pm.status |= PM1_PWRBTN;
    pm_update_sci(vm, &out);
    pthread_mutex_unlock(&vm->dev_lock);
    vm_deliver_all(vm, &out);
    return 0;
}

static void pm_write(void *ctx, void *who, uint64_t port, int size, uint64_t val)
{
    struct vm *vm = ctx;
    (void)who;
    if (port == PM1A_EVT || port == PM1A_EVT + 1) { /* status: a 1 clears */
        struct ioapic_out out = {0};
        int shift = 8 * (int)(port - PM1A_EVT);
        pthread_mutex_lock(&vm->dev_lock);
        vm->pm.status &= (uint16_t)~((val & (size == 1 ? 0xff : 0xffff)) << shift);
        pm_update_sci(vm, &out);
        pthread_mutex_unlock(&vm->dev_lock);
        vm_deliver_all(vm, &out);
        return;
    }
    if (port == PM1A_CNT || port == PM1A_CNT + 1) {
        uint64_t v = port == PM1A_CNT ? val : val << 8;
        if (v & PM1_CNT_SLP_EN)
            vm_stop(vm, VM_EXIT_POWEROFF, 0);
    } else if (port == PM1A_EVT + 2 || port == PM1A_EVT + 3) {
        /* PM1 enable keeps what is written: the power button's enable
         * gates the SCI, and ACPICA tells whether the global lock exists
         * by whether GBL_EN sticks (it printed two "ACPI Error" lines on
         * every boot when it did not). No firmware ever holds the lock. */
        struct ioapic_out out = {0};
        int shift = 8 * (int)(port - (PM1A_EVT + 2));
        uint16_t mask = (uint16_t)((size == 1 ? 0xff : 0xffff) << shift);
        pthread_mutex_lock(&vm->dev_lock);
        uint16_t e = atomic_load(&vm->pm.enable);
        atomic_store(&vm->pm.enable, (uint16_t)((e & ~mask) | ((val << shift) & mask)));
        pm_update_sci(vm, &out);
        pthread_mutex_unlock(&vm->dev_lock);
        vm_deliver_all(vm, &out);
    }
}

static int pm_save(void *ctx, void *buf, size_t len)
{
    struct vm *vm = ctx;
    return state_pm_encode(vm_pm_time_ns(vm), atomic_load(&vm->pm.enable), buf, len);
}

static int pm_restore(void *ctx, const void *buf, size_t len)
{
    struct vm *vm = ctx;
    uint64_t timer_ns;
    uint16_t enable;
    int r = state_pm_decode(&timer_ns, &enable, buf, len);
    if (r < 0)
        return r;
    atomic_store(&vm->pm.timer_offset_ns, (int64_t)(timer_ns - pm_raw_ns(vm)));
    atomic_store(&vm->pm.enable, enable);
    return 0;
}

static void pm_reset(void *ctx)
{
    struct vm *vm = ctx; /* the PM timer runs on, as on hardware */
    pthread_mutex_lock(&vm->dev_lock);
    vm->pm.status = 0;
    pthread_mutex_unlock(&vm->dev_lock);
    atomic_store(&vm->pm.enable, 0);
}

static const struct bus_dev_ops pm_ops = {pm_read, pm_write, pm_save, pm_restore, pm_reset};

/* ---- stateless ports ---------------------------------------------------- */

static uint64_t read_zero(void *ctx, void *who, uint64_t port, int size)
{
    (void)ctx, (void)who, (void)port, (void)size;
    return 0;
}

static uint64_t read_ones(void *ctx, void *who, uint64_t port, int size)
{
    (void)ctx, (void)who, (void)port, (void)size;
    return ~0ULL;
}

static void ignore(void *ctx, void *who, uint64_t port, int size, uint64_t val)
{
    (void)ctx, (void)who, (void)port, (void)size, (void)val;
}

static void debug_exit_write(void *ctx, void *who, uint64_t port, int size, uint64_t val)
{
    (void)who, (void)port, (void)size;
    vm_stop(ctx, VM_EXIT_DEBUG_PORT, (int)(val & 0xff));
}

static void reset_ctl_write(void *ctx, void *who, uint64_t port, int size, uint64_t val)
{
    (void)who, (void)port, (void)size;
    if (val & 0x4)
        vm_stop(ctx, VM_EXIT_RESET, 0);
}

static void kbd_cmd_write(void *ctx, void *who, uint64_t port, int size, uint64_t val)
{
    (void)who, (void)port, (void)size;
    if ((val & 0xff) == 0xfe)
        vm_stop(ctx, VM_EXIT_RESET, 0);
}

/* POST codes stay with the vCPU that wrote them (who). */
static void post_write(void *ctx, void *who, uint64_t port, int size, uint64_t val)
{
    struct vcpu *v = who;
    (void)ctx, (void)port, (void)size;
    if (v)
        v->post_codes[v->post_count++ % VCPU_POST_CODES] = (uint8_t)val;
}

static const struct bus_dev_ops debug_exit_ops = {read_zero, debug_exit_write, NULL, NULL, NULL};
static const struct bus_dev_ops bench_ops = {read_zero, ignore, NULL, NULL, NULL};
static const struct bus_dev_ops reset_ctl_ops = {read_zero, reset_ctl_write, NULL, NULL, NULL};
static const struct bus_dev_ops kbd_ops = {read_ones, kbd_cmd_write, NULL, NULL, NULL};
static const struct bus_dev_ops post_ops = {read_ones, post_write, NULL, NULL, NULL};

/* ---- IOAPIC ----------------------------------------------------------------- */

static uint64_t ioapic_dev_read(void *ctx, void *who, uint64_t addr, int size)
{
    struct vm *vm = ctx;
    uint32_t r = 0;
    (void)who, (void)size;
    pthread_mutex_lock(&vm->dev_lock);
    ioapic_mmio_read(&vm->ioapic, addr - IOAPIC_DEFAULT_BASE, &r);
    pthread_mutex_unlock(&vm->dev_lock);
    return r;
}

static void ioapic_dev_write(void *ctx, void *who, uint64_t addr, int size, uint64_t val)
{
    struct vm *vm = ctx;
    struct ioapic_out out = {0};
    (void)who, (void)size;
    pthread_mutex_lock(&vm->dev_lock);
    uint32_t sel = vm->ioapic.ioregsel;
    int r = ioapic_mmio_write(&vm->ioapic, addr - IOAPIC_DEFAULT_BASE, (uint32_t)val, &out);
    pthread_mutex_unlock(&vm->dev_lock);
    if (r == -EINVAL)
        vm_guest_error(vm, GERR_IOAPIC, "wrote %#llx to IOAPIC register %#x (window %#llx), "
                       "which does not exist or is read-only", (unsigned long long)val, sel,
                       (unsigned long long)(addr - IOAPIC_DEFAULT_BASE));
    else if (r == -ERANGE)
        vm_guest_error(vm, GERR_IOAPIC, "left IOAPIC entry %u unmasked with vector %llu (0-15 "
                       "are illegal)", (sel - 0x10) / 2, (unsigned long long)(val & 0xff));
    vm_deliver_all(vm, &out);
}

static int ioapic_dev_save(void *ctx, void *buf, size_t len)
{
    struct vm *vm = ctx;
    pthread_mutex_lock(&vm->dev_lock);
    int r = state_ioapic_encode(&vm->ioapic, buf, len);
    pthread_mutex_unlock(&vm->dev_lock);
    return r;
}

static int ioapic_dev_restore(void *ctx, const void *buf, size_t len)
{
    struct vm *vm = ctx;
    pthread_mutex_lock(&vm->dev_lock);
    int r = state_ioapic_decode(&vm->ioapic, buf, len);
    pthread_mutex_unlock(&vm->dev_lock);
    return r;
}

static void ioapic_dev_reset(void *ctx)
{
    struct vm *vm = ctx;
    pthread_mutex_lock(&vm->dev_lock);
    ioapic_init(&vm->ioapic, platform_ioapic_id(vm->nr_vcpus));
    pthread_mutex_unlock(&vm->dev_lock);
}

static const struct bus_dev_ops ioapic_ops = {ioapic_dev_read, ioapic_dev_write, ioapic_dev_save,
                                              ioapic_dev_restore, ioapic_dev_reset};

/* ---- registration ------------------------------------------------------- */

int vm_register_devices(struct vm *vm)
{
    /* The same list, in the same order, on every node: a device's id is its
     * place here (bus.h). */
    const struct bus_dev devs[] = {
        {"uart", 0, BUS_PIO, SIZES_ANY, UART_COM1_PORT, 8, &uart_ops, vm},
        {"acpi-pm", 0, BUS_PIO, SIZES_ANY, PM1A_EVT, PM_TMR - PM1A_EVT, &pm_ops, vm},
        {"pm-timer", BUS_OWNER_EACH_NODE, BUS_PIO, SIZES_ANY, PM_TMR, 4, &pm_timer_ops, vm},
        {"debug-exit", 0, BUS_PIO, SIZES_ANY, PLATFORM_DEBUG_EXIT_PORT, 1, &debug_exit_ops, vm},
        {"bench", BUS_OWNER_EACH_NODE, BUS_PIO, SIZES_ANY, PLATFORM_BENCH_PORT, 1, &bench_ops, vm},
        {"reset", 0, BUS_PIO, SIZES_ANY, PLATFORM_RESET_PORT, 1, &reset_ctl_ops, vm},
        {"i8042", 0, BUS_PIO, SIZES_ANY, PORT_KBD_CMD, 1, &kbd_ops, vm},
        {"post", BUS_OWNER_EACH_NODE, BUS_PIO, SIZES_ANY, PORT_POST, 1, &post_ops, vm},
        {"ioapic", 0, BUS_MMIO, SIZE_4, IOAPIC_DEFAULT_BASE, IOAPIC_MMIO_SIZE, &ioapic_ops, vm},
    };
    for (size_t i = 0; i < sizeof devs / sizeof devs[0]; i++) {
        int r = bus_add(&vm->bus, &devs[i]);
        if (r < 0)
            return r;
        if (!strcmp(devs[i].name, "ioapic"))
            vm->ioapic_dev = r;
    }
    return 0;
}
