/* The node's VM: creation, the main loop, stopping. Interrupt routing is
 * in irq.c, guest TSC in tsc.c. */
#include "platform/platform.h"
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <x86intrin.h>

#include "clock/clock.h"
#include "vmm/boot.h"
#include "vmm/cluster.h"
#include "vmm/emulate.h"
#include "vmm/control.h"
#include "vmm/migrate.h"
#include "vmm/event_loop.h"
#include "vmm/kvm.h"
#include "vmm/vm.h"
#include "vmm/x86_setup.h"

int vmm_parse_size(const char *s, uint64_t *out)
{
    char *end;
    if (!s || !*s || *s == '-')
        return -EINVAL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -EINVAL;
    unsigned shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    default: break;
    }
    if ((*end == 'i' || *end == 'I') && shift)
        end++;
    if ((*end == 'b' || *end == 'B') && shift)
        end++;
    if (*end || (shift && v > (~0ULL >> shift)))
        return -EINVAL;
    *out = v << shift;
    return 0;
}

void vm_stop_local(struct vm *vm, enum vm_exit_reason why, int status)
{
    int expected = 0;
    if (!atomic_compare_exchange_strong(&vm->stopping, &expected, 1))
        return;
    vm->exit_reason = why;
    vm->exit_status = status;
    for (int i = 0; i < vm->nr_vcpus; i++)
        vcpu_kick(&vm->vcpus[i]);
    pthread_mutex_lock(&vm->pause_lock); /* parked vCPUs leave too */
    pthread_cond_broadcast(&vm->pause_cond);
    pthread_mutex_unlock(&vm->pause_lock);
    uint64_t one = 1;
    if (write(vm->stop_efd, &one, sizeof one) < 0) {
        /* The eventfd counter cannot overflow from one write; nothing to do. */
    }
}

/* Threads that run vCPUs now. */
static int running_threads(struct vm *vm)
{
    int n = 0;
    for (int i = 0; i < vm->nr_vcpus; i++)
        n += atomic_load(&vm->vcpus[i].thread_started) && atomic_load(&vm->vcpus[i].kickable);
    return n;
}

int vm_pause(struct vm *vm, uint64_t timeout_ns)
{
    atomic_store(&vm->pause_req, true);
    for (int i = 0; i < vm->nr_vcpus; i++)
        vcpu_kick(&vm->vcpus[i]);
    uint64_t deadline = clock_now_ns() + timeout_ns;
    pthread_mutex_lock(&vm->pause_lock);
    while (vm->npaused < running_threads(vm) && !atomic_load(&vm->stopping)) {
        if (clock_now_ns() > deadline) {
            pthread_mutex_unlock(&vm->pause_lock);
            vm_resume(vm);
            return -ETIMEDOUT;
        }
        struct timespec ts = clock_realtime_after(10000000ULL);
        pthread_cond_timedwait(&vm->pause_cond, &vm->pause_lock, &ts);
    }
    pthread_mutex_unlock(&vm->pause_lock);
    return atomic_load(&vm->stopping) ? -ECANCELED : 0;
}

void vm_shutdown(struct vm *vm)
{
    vm_stop(vm, VM_EXIT_POWEROFF, 0);
}

void vm_resume(struct vm *vm)
{
    pthread_mutex_lock(&vm->pause_lock);
    atomic_store(&vm->pause_req, false);
    pthread_cond_broadcast(&vm->pause_cond);
    pthread_mutex_unlock(&vm->pause_lock);
}

void vm_stop(struct vm *vm, enum vm_exit_reason why, int status)
{
    if (atomic_load(&vm->stopping))
        return;
    vm_stop_local(vm, why, status);
    if (vm->cfg.ic)
        cluster_broadcast_stop(vm);
}

void vm_fail(struct vm *vm, const char *fmt, ...)
{
    /* Only the first failure is reported: two threads failing at once
     * must not write the message over each other. */
    if (atomic_load(&vm->stopping) || atomic_exchange(&vm->error_taken, true))
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(vm->error, sizeof vm->error, fmt, ap);
    va_end(ap);
    vm_stop(vm, VM_EXIT_ERROR, 1);
}

static void console_out(void *ctx, uint8_t byte)
{
    struct vm *vm = ctx;
    while (write(vm->cfg.console_out, &byte, 1) < 0 && errno == EINTR)
        ;
}

static int check_config(const struct vm_config *c, char *err, size_t errlen)
{
    if (c->nr_vcpus < 1 || c->nr_vcpus > VMM_MAX_VCPUS) {
        snprintf(err, errlen, "--vcpus must be between 1 and %d", VMM_MAX_VCPUS);
        return -EINVAL;
    }
    if (c->mem_size < VMM_MIN_MEM) {
        snprintf(err, errlen, "--mem %lluM is too little: amalgam needs at least %lluM",
                 (unsigned long long)(c->mem_size >> 20),
                 (unsigned long long)(VMM_MIN_MEM >> 20));
        return -EINVAL;
    }
    if (c->mem_size % (2ULL << 20)) {
        snprintf(err, errlen, "--mem must be a multiple of 2M");
        return -EINVAL;
    }
    if (!c->kernel) {
        snprintf(err, errlen, "no --kernel given");
        return -EINVAL;
    }
    return 0;
}

static int create_memory(struct vm *vm, char *err, size_t errlen)
{
    int r = gmem_create(&vm->mem, vm->cfg.mem_size);
    if (r < 0)
        snprintf(err, errlen, "cannot allocate %lluM of guest memory: %s",
                 (unsigned long long)(vm->cfg.mem_size >> 20), strerror(-r));
    return r;
}

static int register_memory(struct vm *vm, char *err, size_t errlen)
{
    int r = kvm_set_memslot(vm->vm_fd, 0, 0, vm->mem.low_size, vm->mem.guest_view);
    if (!r && vm->mem.high_size)
        r = kvm_set_memslot(vm->vm_fd, 1, GMEM_HIGH_BASE, vm->mem.high_size,
                            vm->mem.guest_view + vm->mem.low_size);
    if (r < 0)
        snprintf(err, errlen, "KVM refused the guest memory: %s", strerror(-r));
    return r;
}

static int setup_vcpu(struct vm *vm, int id, char *err, size_t errlen)
{
    struct vcpu *v = &vm->vcpus[id];
    v->vm = vm;
    v->id = id;
    v->fd = -1;
    pthread_mutex_init(&v->lock, NULL);
    pthread_cond_init(&v->io_cond, NULL);
    int r = kvm_create_vcpu(vm->vm_fd, id, vm->run_size, &v->fd, &v->run);
    r = r ?: kvm_set_cpuid(vm->kvm_fd, v->fd, (uint32_t)id);
    if (r < 0) {
        snprintf(err, errlen, "cannot create vCPU %d: %s", id, strerror(-r));
        return r;
    }
    struct lapic_clock clk;
    (void)vcpu_tsc_clock(vm, v, &clk);
    lapic_init(&v->lapic, (uint32_t)id, id == 0, &clk);
    vcpu_sm_init(&v->sm, id == 0 ? VCPU_RUNNABLE : VCPU_WAIT_SIPI);
    return 0;
}

static int detect_cpl0(struct vm *vm)
{
    if (vm->cfg.cpl0 != CPL0_AUTO) {
        vm->cpl0_emulated = vm->cfg.cpl0 == CPL0_EMULATED;
        return 0;
    }
    double ns = 0;
    int r = emulate_probe_cpl0(vm->kvm_fd, &vm->cpl0_emulated, &ns);
    if (r < 0) {
        /* The fix-ups only act on exits that would otherwise be fatal. */
        fprintf(stderr, "amalgam: cannot time guest CPL0 (%s); assuming it is emulated\n",
                strerror(-r));
        vm->cpl0_emulated = true;
    } else if (vm->cfg.verbose) {
        fprintf(stderr, "amalgam: guest CPL0 %s (%.1f ns per loop iteration)\n",
                vm->cpl0_emulated ? "is emulated by this host's KVM" : "runs natively", ns);
    }
    return 0;
}

/* The ACPI tables go in the reserved area below 1 MiB, where the guest
 * also finds the RSDP by the legacy scan. */
static int build_firmware_tables(struct vm *vm, char *err, size_t errlen)
{
    int r = numa_desc_build(&vm->machine, vm->nnodes, vm->nr_vcpus, vm->cfg.mem_size,
                            vm->cfg.placement, vm->cfg.distance, err, errlen);
    if (r < 0)
        return r;
    vm->machine.nr_virtio = vm_virtio_slots(&vm->cfg);
    uint8_t *area = gmem_agent_ptr(&vm->mem, BOOT_ACPI_GPA, BOOT_ACPI_SIZE);
    r = area ? acpi_build(&vm->machine, area, BOOT_ACPI_SIZE, BOOT_ACPI_GPA, &vm->rsdp_gpa)
             : -ENOSPC;
    if (r == -EINVAL)
        snprintf(err, errlen, "%d virtio devices: at most %d", vm->machine.nr_virtio,
                 PLATFORM_VIRTIO_MAX);
    else if (r < 0)
        snprintf(err, errlen, "the ACPI tables for %d vCPUs do not fit in %llu KiB",
                 vm->nr_vcpus, (unsigned long long)(BOOT_ACPI_SIZE >> 10));
    return r;
}

/* Where guest CPL0 is emulated, KVM's emulator refuses instructions a stock
 * Linux uses unless told not to (HOSTFACTS.md): no XSAVE, and no cx16,
 * movbe, popcnt, rdrand, bmi1, bmi2, rdseed, smap (clearcpuid bits). */
#define LINUX_EMULATED_CPL0_ARGS "noxsave clearcpuid=141,150,151,154,158,291,296,306,308"

static const char *guest_cmdline(struct vm *vm, char *buf, size_t len)
{
    const char *user = vm->cfg.cmdline ? vm->cfg.cmdline : "";
    if (!vm->cpl0_emulated || !boot_is_linux(vm->cfg.kernel))
        return vm->cfg.cmdline;
    snprintf(buf, len, "%s%s%s", user, *user ? " " : "", LINUX_EMULATED_CPL0_ARGS);
    fprintf(stderr, "amalgam: guest kernel mode is emulated on this host: appending '%s' "
            "to the kernel command line\n", LINUX_EMULATED_CPL0_ARGS);
    return buf;
}

/* Loads the kernel before KVM is opened, so that a bad --kernel or --initrd
 * is reported as such on any host, with the user's command line; the
 * emulated-CPL0 arguments are appended once KVM has been probed. */
static int load_guest(struct vm *vm, char *err, size_t errlen)
{
    struct boot_spec spec = {
        .kernel_path = vm->cfg.kernel,
        .initrd_path = vm->cfg.initrd,
        .cmdline = vm->cfg.cmdline,
        .acpi_rsdp_gpa = vm->rsdp_gpa,
    };
    int r = x86_write_boot_tables(&vm->mem);
    if (r < 0) {
        snprintf(err, errlen, "cannot write the boot page tables: %s", strerror(-r));
        return r;
    }
    return boot_load(&spec, &vm->mem, &vm->boot, err, errlen);
}

static int enter_guest(struct vm *vm, char *err, size_t errlen)
{
    char cmdline[BOOT_CMDLINE_MAX + 1];
    const char *full = guest_cmdline(vm, cmdline, sizeof cmdline);
    int r = full == vm->cfg.cmdline ? 0 : boot_set_cmdline(&vm->mem, full);
    if (r < 0) {
        snprintf(err, errlen, "the kernel command line with the emulated-CPL0 arguments is "
                 "longer than %d bytes", BOOT_CMDLINE_MAX);
        return r;
    }
    r = x86_enter_long_mode(vm->vcpus[0].fd, vm->boot.entry_gpa, vm->boot.boot_params_gpa);
    if (r < 0)
        snprintf(err, errlen, "cannot set the boot vCPU's registers: %s", strerror(-r));
    return r;
}

static int vm_alloc(const struct vm_config *cfg, struct vm **out, char *err, size_t errlen)
{
    int r = check_config(cfg, err, errlen);
    if (r < 0)
        return r;
    struct vm *vm = calloc(1, sizeof *vm);
    if (!vm)
        return -ENOMEM;
    vm->cfg = *cfg;
    vm->kvm_fd = vm->vm_fd = vm->stop_efd = -1;
    vm->mem.fd = -1;
    vm->nr_vcpus = cfg->nr_vcpus;
    vm->node = cfg->ic ? ic_rank(cfg->ic) : 0;
    vm->nnodes = cfg->ic ? ic_size(cfg->ic) : 1;
    bus_init(&vm->bus, vm->node, NULL); /* forwarding: cluster_start */
    vm->lost_rank = -1;
    if (control_init(vm) < 0) {
        free(vm);
        return -ENOMEM;
    }
    pthread_mutex_init(&vm->dev_lock, NULL);
    pthread_mutex_init(&vm->pause_lock, NULL);
    pthread_cond_init(&vm->pause_cond, NULL);
    atomic_store(&vm->pm.timer_offset_ns, -(int64_t)clock_now_ns()); /* counts from 0 */
    vm->stop_efd = eventfd(0, EFD_CLOEXEC);
    vm->vcpus = calloc((size_t)vm->nr_vcpus, sizeof *vm->vcpus);
    *out = vm;
    if (vm->stop_efd < 0 || !vm->vcpus) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    for (int i = 0; i < vm->nr_vcpus; i++)
        vm->vcpus[i].fd = -1;
    return 0;
}

/* Everything that needs no KVM: guest memory, firmware tables, the kernel. */
static int prepare_guest(struct vm *vm, char *err, size_t errlen)
{
    int r = create_memory(vm, err, errlen);
    r = r ?: build_firmware_tables(vm, err, errlen);
    return r ?: load_guest(vm, err, errlen);
}

int vm_preflight(const struct vm_config *cfg, int nnodes, char *err, size_t errlen)
{
    struct vm *vm = NULL;
    int r = vm_alloc(cfg, &vm, err, errlen);
    if (vm)
        vm->nnodes = nnodes;
    r = r ?: prepare_guest(vm, err, errlen);
    r = r ?: vm_virtio_preflight(cfg, err, errlen);
    r = r ?: kvm_open_system(&vm->kvm_fd, &vm->run_size, err, errlen);
    vm_destroy(vm);
    return r;
}

int vm_create(const struct vm_config *cfg, struct vm **out, char *err, size_t errlen)
{
    struct vm *vm = NULL;
    int r = vm_alloc(cfg, &vm, err, errlen);
    if (r < 0)
        goto fail;
    r = prepare_guest(vm, err, errlen);
    if (r < 0)
        goto fail;
    r = kvm_open_system(&vm->kvm_fd, &vm->run_size, err, errlen);
    if (r < 0)
        goto fail;
    r = detect_cpl0(vm);
    r = r ?: kvm_create_vm(vm->kvm_fd, &vm->vm_fd);
    if (r < 0) {
        snprintf(err, errlen, "cannot create a KVM virtual machine: %s", strerror(-r));
        goto fail;
    }
    r = kvm_route_msrs_to_user(vm->vm_fd);
    if (r < 0) {
        snprintf(err, errlen, "cannot route APIC MSRs to user space: %s", strerror(-r));
        goto fail;
    }
    r = register_memory(vm, err, errlen);
    if (r < 0)
        goto fail;
    vm->tsc_khz = 0;
    for (int i = 0; i < vm->nr_vcpus && r == 0; i++) {
        r = setup_vcpu(vm, i, err, errlen);
        if (r == 0 && i == 0) {
            int khz = kvm_tsc_khz(vm->vcpus[0].fd);
            vm->tsc_khz = khz > 0 ? (uint64_t)khz : 1000000;
            vm->vcpus[0].lapic.clock.tsc_khz = vm->tsc_khz;
        }
    }
    r = r ?: enter_guest(vm, err, errlen);
    if (r < 0)
        goto fail;
    for (int i = 0; i < vm->nr_vcpus; i++) {
        vm->vcpus[i].local = vm->machine.vcpu_node[i] == vm->node;
        if (!vm->vcpus[i].local) /* created and parked: it runs elsewhere */
            vcpu_sm_init(&vm->vcpus[i].sm, VCPU_GONE);
    }
    for (int i = 0; i < vm->nr_vcpus; i++)
        atomic_store(&vm->vcpus[i].leave_to, -1);
    ioapic_init(&vm->ioapic, platform_ioapic_id(vm->nr_vcpus));
    uart_init(&vm->uart, console_out, vm);
    r = vm_register_devices(vm);
    if (r < 0) {
        snprintf(err, errlen, "cannot put the platform devices on the bus: %s", strerror(-r));
        goto fail;
    }
    r = vm_virtio_create(vm, err, errlen);
    if (r < 0)
        goto fail;
    *out = vm;
    return 0;
fail:
    vm_destroy(vm);
    return r;
}

static void kick_handler(int sig)
{
    (void)sig;
}

static int start_threads(struct vm *vm)
{
    struct sigaction sa = {.sa_handler = kick_handler};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGKICK, &sa, NULL);
    /* APs first, so every thread id exists before the BSP can send IPIs.
     * On several nodes every vCPU gets a thread: those placed elsewhere
     * wait, parked, for a migration to bring them here (migrate.c). */
    for (int i = vm->nr_vcpus - 1; i >= 0; i--) {
        struct vcpu *v = &vm->vcpus[i];
        if (!v->local && !vm->mig)
            continue;
        int r = pthread_create(&v->thread, NULL, vcpu_thread, v);
        if (r) {
            vm_fail(vm, "cannot start a thread for vCPU %d: %s", i, strerror(r));
            return -r;
        }
        atomic_store(&v->thread_started, true);
    }
    return 0;
}

/* ---- the main thread's event loop (event_loop.h) ---- */

struct main_ctx {
    struct vm *vm;
    struct event_loop loop;
};

static void feed_console(void *ctx, int fd, uint32_t events)
{
    struct main_ctx *m = ctx;
    struct vm *vm = m->vm;
    uint8_t buf[UART_RX_FIFO];
    (void)events;
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) {
        if (n == 0 || (errno != EINTR && errno != EAGAIN))
            event_loop_remove(&m->loop, fd); /* EOF or error: stop watching the input */
        return;
    }
    struct ioapic_out out = {0};
    pthread_mutex_lock(&vm->dev_lock);
    uart_receive(&vm->uart, buf, (size_t)n);
    bool line = uart_irq_line(&vm->uart);
    if (line != vm->uart.line) {
        vm->uart.line = line;
        ioapic_set_irq(&vm->ioapic, UART_COM1_IRQ, line, &out);
    }
    pthread_mutex_unlock(&vm->dev_lock);
    vm_deliver_all(vm, &out);
}

static void on_signal(void *ctx, int signo)
{
    struct main_ctx *m = ctx;
    vm_stop(m->vm, VM_EXIT_SIGNAL, 128 + signo);
}

static void on_stop(void *ctx, int fd, uint32_t events)
{
    uint64_t n;
    (void)ctx, (void)events;
    if (read(fd, &n, sizeof n) < 0) {
        /* the loop looks at vm->stopping anyway */
    }
}

/* The monitor (or whoever set cfg.hooks) joins the loop once the machine
 * runs; failing to, the run ends: the user asked for it. */
static int attach_hooks(struct vm *vm, struct main_ctx *m)
{
    char err[256] = "";
    if (!vm->cfg.hooks.attach)
        return 0;
    int r = vm->cfg.hooks.attach(vm->cfg.hooks.ctx, vm, &m->loop, err, sizeof err);
    if (r < 0)
        vm_fail(vm, "%s", err[0] ? err : strerror(-r));
    return r;
}

static const char *shutdown_reason(enum vm_exit_reason r)
{
    switch (r) {
    case VM_EXIT_DEBUG_PORT: case VM_EXIT_POWEROFF: return "guest-shutdown";
    case VM_EXIT_RESET: return "guest-reset";
    case VM_EXIT_SIGNAL: return "host-signal";
    case VM_EXIT_QUIT: return "host-qmp-quit";
    case VM_EXIT_ERROR: return "host-error";
    case VM_EXIT_NONE: break;
    }
    return "host-error";
}

/* NODE_LOST (if a node stopped answering) and SHUTDOWN, to the hooks. */
static void announce_end(struct vm *vm)
{
    if (!vm->cfg.hooks.event)
        return;
    if (vm->lost_rank >= 0) {
        struct vm_event e = {.type = VM_EVENT_NODE_LOST, .rank = vm->lost_rank,
                             .reason = vm->error};
        vm->cfg.hooks.event(vm->cfg.hooks.ctx, &e);
    }
    enum vm_exit_reason r = vm->exit_reason;
    struct vm_event e = {.type = VM_EVENT_SHUTDOWN, .reason = shutdown_reason(r),
                         .guest = r == VM_EXIT_DEBUG_PORT || r == VM_EXIT_POWEROFF ||
                                  r == VM_EXIT_RESET};
    vm->cfg.hooks.event(vm->cfg.hooks.ctx, &e);
}

/* The main thread waits for the end of the run, a stop signal, or console
 * input. */
static void main_loop(struct vm *vm, struct main_ctx *m)
{
    while (!atomic_load(&vm->stopping))
        if (event_loop_run_once(&m->loop, -1) < 0)
            break;
}

static const char *const gerr_names[GERR_COUNT] = {
    "lapic-register", "ipi-vector", "ipi-mode", "ipi-nobody", "ioapic", "no-device", "virtio"};

uint64_t vm_guest_count(struct vm *vm, enum guest_error kind)
{
    return atomic_fetch_add(&vm->guest_errors[kind], 1) + 1;
}

void vm_guest_error(struct vm *vm, enum guest_error kind, const char *fmt, ...)
{
    uint64_t n = vm_guest_count(vm, kind);
    uint64_t p = 10;
    while (p < n && p <= UINT64_MAX / 10)
        p *= 10;
    if (n > 3 && n != p)
        return;
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fprintf(stderr, "amalgam node %d: the guest %s: ignored (%s #%llu)\n", vm->node, what,
            gerr_names[kind], (unsigned long long)n);
}

/* One line at the end of the run, if the guest did anything of the kind. */
static void report_guest_errors(struct vm *vm)
{
    char line[256] = "";
    size_t len = 0;
    for (int k = 0; k < GERR_COUNT; k++) {
        uint64_t n = atomic_load(&vm->guest_errors[k]);
        if (n && len < sizeof line)
            len += (size_t)snprintf(line + len, sizeof line - len, "%s%s %llu", len ? ", " : "",
                                    gerr_names[k], (unsigned long long)n);
    }
    if (len)
        fprintf(stderr, "amalgam node %d: guest accesses ignored: %s\n", vm->node, line);
}

int vm_run(struct vm *vm)
{
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGKICK);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, NULL);
    sigset_t stop_sigs;
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGINT);
    sigaddset(&stop_sigs, SIGTERM);
    struct main_ctx m = {.vm = vm};
    char err[256] = "";
    int r = event_loop_init(&m.loop);
    r = r ?: event_loop_add_signals(&m.loop, &stop_sigs, on_signal, &m) < 0 ? -EIO : 0;
    r = r ?: event_loop_add(&m.loop, vm->stop_efd, EPOLLIN, on_stop, &m);
    if (!r && vm->cfg.console_in >= 0) {
        r = event_loop_add(&m.loop, vm->cfg.console_in, EPOLLIN, feed_console, &m);
        if (r == -EPERM) /* /dev/null or a regular file: no waiting, it is all there */
            r = 0;
    }
    if (r < 0)
        vm_fail(vm, "cannot set up the node's event loop: %s", strerror(-r));
    else if ((r = control_watch(vm, &m.loop)) < 0)
        vm_fail(vm, "cannot set up the node's event loop: %s", strerror(-r));
    else if (vm->cfg.ic && cluster_start(vm, err, sizeof err) < 0)
        vm_fail(vm, "%s", err);
    else if (vm->mig && vm->node == 0 && migrate_start(vm, &m.loop, err, sizeof err) < 0)
        vm_fail(vm, "%s", err);
    else if ((r = vm_virtio_start(vm)) < 0)
        vm_fail(vm, "cannot start the virtio devices' threads: %s", strerror(-r));
    else if (attach_hooks(vm, &m) == 0 && start_threads(vm) == 0)
        main_loop(vm, &m);
    if (vm->mig && vm->node == 0)
        migrate_end(vm);
    announce_end(vm);
    for (int i = 0; i < vm->nr_vcpus; i++) {
        atomic_store(&vm->vcpus[i].kickable, false);
        if (atomic_load(&vm->vcpus[i].thread_started))
            pthread_join(vm->vcpus[i].thread, NULL);
        atomic_store(&vm->vcpus[i].thread_started, false);
    }
    /* Before the DSM stops serving faults: a device thread may be waiting
     * for a page (cluster.c's loop serves them until vcpus_joined). */
    vm_virtio_stop(vm);
    atomic_store(&vm->vcpus_joined, true);
    report_guest_errors(vm);
    if (vm->cfg.ic)
        cluster_stop(vm);
    if (vm->cfg.hooks.detach)
        vm->cfg.hooks.detach(vm->cfg.hooks.ctx);
    event_loop_free(&m.loop);
    return vm->exit_status;
}

enum vm_exit_reason vm_exit_reason(const struct vm *vm)
{
    return vm->exit_reason;
}

const char *vm_error(const struct vm *vm)
{
    return vm->error;
}

bool vm_cpl0_emulated(const struct vm *vm)
{
    return vm->cpl0_emulated;
}

void vm_set_bench(struct vm *vm, struct vm_bench_samples *s)
{
    vm->bench = s;
}

void vm_destroy(struct vm *vm)
{
    if (!vm)
        return;
    control_free(vm);
    migrate_free(vm);
    vm_virtio_free(vm);
    for (int i = 0; vm->vcpus && i < vm->nr_vcpus; i++) {
        struct vcpu *v = &vm->vcpus[i];
        if (v->timer_created)
            timer_delete(v->timer);
        if (v->run)
            munmap(v->run, vm->run_size);
        if (v->fd >= 0)
            close(v->fd);
        pthread_mutex_destroy(&v->lock);
        pthread_cond_destroy(&v->io_cond);
    }
    free(vm->vcpus);
    gmem_destroy(&vm->mem);
    if (vm->vm_fd >= 0)
        close(vm->vm_fd);
    if (vm->kvm_fd >= 0)
        close(vm->kvm_fd);
    if (vm->stop_efd >= 0)
        close(vm->stop_efd);
    free(vm);
}
