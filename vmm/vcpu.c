/* The vCPU thread: KVM_RUN, exit dispatch, and interrupt delivery from the
 * user-space LAPIC.
 *
 * Why kicks cannot be lost: SIGKICK is blocked in every thread and only
 * unblocked inside KVM_RUN (KVM_SET_SIGNAL_MASK). A kick that lands while
 * the thread runs VMM code stays pending, so the next KVM_RUN returns EINTR
 * at once and the loop looks at the LAPIC again before re-entering. The
 * LAPIC timer is a POSIX timer that sends SIGKICK to this very thread. */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "clock/clock.h"
#include "vmm/emulate.h"
#include "vmm/kvm.h"
#include "vmm/migrate.h"
#include "vmm/vm.h"
#include "vmm/x86_setup.h"

void vcpu_kick(struct vcpu *v)
{
    if (atomic_load(&v->kickable))
        pthread_kill(v->self, SIGKICK);
}

static void kick_set(sigset_t *s)
{
    sigemptyset(s);
    sigaddset(s, SIGKICK);
}

static void consume_kicks(void)
{
    sigset_t s;
    struct timespec zero = {0, 0};
    kick_set(&s);
    while (sigtimedwait(&s, NULL, &zero) > 0)
        ;
}

static void wait_for_kick(void)
{
    sigset_t s;
    kick_set(&s);
    sigwaitinfo(&s, NULL);
}

static int setup_thread_signals(struct vcpu *v)
{
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    sigdelset(&cur, SIGKICK);
    /* The kernel's sigset is 8 bytes, not glibc's 128. */
    int r = kvm_set_signal_mask(v->fd, &cur);
    if (r < 0)
        return r;

    struct sigevent sev = {0};
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = SIGKICK;
    sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    if (timer_create(CLOCK_MONOTONIC, &sev, &v->timer) < 0)
        return -errno;
    v->timer_created = true;
    return 0;
}

static void arm_host_timer(struct vcpu *v, uint64_t deadline_ns)
{
    if (deadline_ns == v->timer_armed_ns)
        return;
    struct itimerspec its = {0};
    if (deadline_ns) {
        its.it_value.tv_sec = (time_t)(deadline_ns / 1000000000ULL);
        its.it_value.tv_nsec = (long)(deadline_ns % 1000000000ULL);
    }
    timer_settime(v->timer, TIMER_ABSTIME, &its, NULL);
    v->timer_armed_ns = deadline_ns;
}

/* Consumes INIT/SIPI; returns true if the vCPU may run now. Lock held. */
static bool process_init_sipi(struct vcpu *v)
{
    if (v->lapic.init_pending) {
        v->lapic.init_pending = false;
        if (v->id == 0) {
            /* Restarting the BSP would need firmware at the reset vector. */
            fprintf(stderr, "amalgam: INIT to the boot vCPU ignored\n");
        } else {
            lapic_init_reset(&v->lapic);
            vcpu_sm_step(&v->sm, VCPU_EV_INIT, 0);
        }
    }
    if (v->lapic.sipi_pending) {
        v->lapic.sipi_pending = false;
        if (v->sm.state == VCPU_WAIT_SIPI) {
            int r = x86_enter_sipi(v->fd, v->lapic.sipi_vector);
            if (r < 0)
                vm_fail(v->vm, "vCPU %d: cannot start at SIPI vector %#x: %s", v->id,
                        v->lapic.sipi_vector, strerror(-r));
            else
                vcpu_sm_step(&v->sm, VCPU_EV_SIPI, 0);
        }
    }
    return vcpu_sm_runs(&v->sm);
}

/* Before each KVM_RUN: fire due timers, deliver NMI, inject the highest
 * pending interrupt if the guest can take it now, else ask KVM to exit
 * when it can. */
static int prepare_entry(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    pthread_mutex_lock(&v->lock);
    uint64_t deadline = lapic_timer_poll(&v->lapic, clock_now_ns());
    if (v->lapic.nmi_pending) {
        /* Kept pending if KVM is busy with one (EBUSY) or interrupted. */
        int r = kvm_nmi(v->fd);
        if (r == 0) {
            v->lapic.nmi_pending = false;
        } else if (r != -EBUSY && r != -EINTR && r != -EAGAIN) {
            int e = -r;
            v->lapic.nmi_pending = false;
            pthread_mutex_unlock(&v->lock);
            vm_fail(v->vm, "vCPU %d: KVM refused to inject an NMI: %s", v->id, strerror(e));
            return -EIO;
        }
    }
    int vec = lapic_pending_irq(&v->lapic);
    run->request_interrupt_window = 0;
    if (vec >= 0) {
        if (run->ready_for_interrupt_injection && run->if_flag) {
            if (kvm_interrupt(v->fd, (uint32_t)vec) == 0)
                lapic_irq_injected(&v->lapic, vec);
            else
                run->request_interrupt_window = 1;
        } else {
            run->request_interrupt_window = 1;
        }
    }
    run->cr8 = lapic_get_cr8(&v->lapic);
    pthread_mutex_unlock(&v->lock);
    arm_host_timer(v, deadline);
    return 0;
}

/* HLT: sleep until something can wake the vCPU. With IF=0 only NMI and
 * INIT do, as on hardware. */
static void halt(struct vcpu *v)
{
    pthread_mutex_lock(&v->lock);
    v->halt_if = v->run->if_flag;
    vcpu_sm_step(&v->sm, VCPU_EV_HLT, 0);
    pthread_mutex_unlock(&v->lock);
}

/* A halted vCPU sleeps here until something wakes it, or a pause. */
static void halted_wait(struct vcpu *v)
{
    while (!atomic_load(&v->vm->stopping) && !atomic_load(&v->vm->pause_req) &&
           atomic_load(&v->leave_to) < 0) {
        pthread_mutex_lock(&v->lock);
        uint64_t deadline = lapic_timer_poll(&v->lapic, clock_now_ns());
        bool wake = v->lapic.nmi_pending || v->lapic.init_pending ||
                    (v->halt_if && lapic_pending_irq(&v->lapic) >= 0);
        if (wake)
            vcpu_sm_step(&v->sm, VCPU_EV_WAKE, 0);
        pthread_mutex_unlock(&v->lock);
        arm_host_timer(v, deadline);
        if (wake)
            return;
        wait_for_kick();
    }
}

/* Parked AP: wait for INIT + SIPI. */
static void wait_for_sipi(struct vcpu *v)
{
    while (!atomic_load(&v->vm->stopping) && !atomic_load(&v->vm->pause_req) &&
           atomic_load(&v->leave_to) < 0) {
        pthread_mutex_lock(&v->lock);
        bool go = process_init_sipi(v);
        pthread_mutex_unlock(&v->lock);
        if (go)
            return;
        wait_for_kick();
    }
}

static int handle_internal_error(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    if (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION && v->vm->cpl0_emulated) {
        int r = emulate_fixup(v);
        if (r == 0)
            return 0;
    }
    char insn[64] = "";
    emulate_describe_insn(v, insn, sizeof insn);
    vm_fail(v->vm, "vCPU %d: KVM could not emulate an instruction (internal error "
            "suberror %u) %s", v->id, run->internal.suberror, insn);
    return -EIO;
}

/* The vCPU's last POST codes as "10 11 12", or "none". */
static const char *format_post_codes(const struct vcpu *v, char *buf, size_t len)
{
    unsigned n = v->post_count < VCPU_POST_CODES ? v->post_count : VCPU_POST_CODES;
    size_t o = 0;
    buf[0] = 0;
    for (unsigned i = v->post_count - n; i != v->post_count && o + 4 <= len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%02x", o ? " " : "",
                              v->post_codes[i % VCPU_POST_CODES]);
    return n ? buf : "none";
}

static int handle_exit(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        return handle_io(v);
    case KVM_EXIT_MMIO:
        return handle_mmio(v);
    case KVM_EXIT_X86_RDMSR:
        return handle_rdmsr(v);
    case KVM_EXIT_X86_WRMSR:
        return handle_wrmsr(v);
    case KVM_EXIT_HLT:
        halt(v);
        return 0;
    case KVM_EXIT_IRQ_WINDOW_OPEN:
    case KVM_EXIT_INTR:
        return 0;
    case KVM_EXIT_SHUTDOWN: {
        struct kvm_regs r;
        char post[3 * VCPU_POST_CODES + 1], rip[32] = "unknown";
        if (kvm_get_regs(v->fd, &r) == 0)
            snprintf(rip, sizeof rip, "%#llx", (unsigned long long)r.rip);
        vm_fail(v->vm, "vCPU %d: the guest triple-faulted (RIP %s): it crashed; "
                "its last POST codes (port 0x80, oldest first): %s",
                v->id, rip, format_post_codes(v, post, sizeof post));
        return -EIO;
    }
    case KVM_EXIT_INTERNAL_ERROR:
        return handle_internal_error(v);
    case KVM_EXIT_FAIL_ENTRY:
        vm_fail(v->vm, "vCPU %d: KVM refused to enter the guest (hardware reason %#llx)",
                v->id, (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        return -EIO;
    default:
        vm_fail(v->vm, "vCPU %d: unexpected KVM exit reason %u", v->id, run->exit_reason);
        return -EIO;
    }
}

static void bench_after_entry(struct vcpu *v, uint64_t exit_ns)
{
    struct vm_bench_samples *b = v->vm->bench;
    if (!b || v->run->exit_reason != KVM_EXIT_IO || v->run->io.port != VMM_PORT_BENCH)
        return;
    if (v->bench_last_exit_ns && b->n < b->cap)
        b->round_trip_ns[b->n] = exit_ns - v->bench_last_exit_ns;
    v->bench_last_exit_ns = exit_ns;
}

static void bench_before_entry(struct vcpu *v, uint64_t exit_ns)
{
    struct vm_bench_samples *b = v->vm->bench;
    if (!b || !exit_ns || v->run->exit_reason != KVM_EXIT_IO ||
        v->run->io.port != VMM_PORT_BENCH || b->n >= b->cap)
        return;
    if (b->round_trip_ns[b->n]) {
        b->dispatch_ns[b->n] = clock_now_ns() - exit_ns;
        b->n++;
    }
}

/* vm_pause asked every vCPU to stop where it is: park until vm_resume.
 * The state it parks from (running, halted, waiting for SIPI) is where
 * it goes back to. */
void vcpu_finish_exit(struct vcpu *v, const char *before)
{
    if (v->sm.state != VCPU_RUNNABLE)
        return;
    /* An exit's result (an IN or an MMIO read) reaches the registers only
     * on the next KVM_RUN: one that returns at once completes it, so the
     * registers a checkpoint or a move saves are whole. */
    v->run->immediate_exit = 1;
    int r = kvm_run(v->fd);
    v->run->immediate_exit = 0;
    consume_kicks();
    if (r < 0 && r != -EINTR && r != -EAGAIN)
        vm_fail(v->vm, "vCPU %d: cannot complete its last exit before %s: %s", v->id, before,
                strerror(-r));
}

static void park(struct vcpu *v)
{
    struct vm *vm = v->vm;
    vcpu_finish_exit(v, "pausing");
    pthread_mutex_lock(&v->lock);
    vcpu_sm_step(&v->sm, VCPU_EV_PAUSE, 0);
    pthread_mutex_unlock(&v->lock);
    pthread_mutex_lock(&vm->pause_lock);
    vm->npaused++;
    pthread_cond_broadcast(&vm->pause_cond);
    while (atomic_load(&vm->pause_req) && !atomic_load(&vm->stopping))
        pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
    vm->npaused--;
    pthread_mutex_unlock(&vm->pause_lock);
    pthread_mutex_lock(&v->lock);
    vcpu_sm_step(&v->sm, VCPU_EV_RESUME, 0);
    pthread_mutex_unlock(&v->lock);
}

static void run_loop(struct vcpu *v)
{
    struct vm *vm = v->vm;
    uint64_t exit_ns = 0;
    while (!atomic_load(&vm->stopping)) {
        if (atomic_load(&vm->pause_req)) {
            park(v);
            continue;
        }
        if (vm->mig && atomic_load(&v->leave_to) >= 0) { /* a move: at this safe point */
            if (migrate_leave_if_asked(v) < 0)
                return;
            continue;
        }
        if (vm->mig && v->sm.state == VCPU_GONE) { /* runs elsewhere: wait until it comes */
            vcpu_set_guest_sched(v, false);
            if (migrate_wait_arrival(v) == 0)
                vcpu_set_guest_sched(v, true);
            continue;
        }
        if (v->sm.state == VCPU_WAIT_SIPI) {
            wait_for_sipi(v);
            continue;
        }
        if (v->sm.state == VCPU_HALTED) {
            halted_wait(v);
            continue;
        }
        pthread_mutex_lock(&v->lock);
        bool runnable = process_init_sipi(v);
        pthread_mutex_unlock(&v->lock);
        if (!runnable)
            continue;
        if (prepare_entry(v) < 0)
            return;
        bench_before_entry(v, exit_ns);
        int r = kvm_run(v->fd);
        atomic_fetch_add_explicit(&v->exits, 1, memory_order_relaxed);
        if (vm->bench)
            exit_ns = clock_now_ns();
        if (r < 0) {
            if (r == -EINTR || r == -EAGAIN) {
                consume_kicks();
                exit_ns = 0;
                continue;
            }
            vm_fail(vm, "vCPU %d: KVM_RUN failed: %s", v->id, strerror(-r));
            return;
        }
        pthread_mutex_lock(&v->lock);
        lapic_set_cr8(&v->lapic, v->run->cr8);
        pthread_mutex_unlock(&v->lock);
        bench_after_entry(v, exit_ns);
        if (handle_exit(v) < 0)
            return;
    }
}

/* See enum vcpu_sched. Lowering a thread's own policy needs no privilege;
 * if the kernel refuses anyway the vCPU runs at the normal policy, slower
 * when nodes share cores but correct, so that is reported and not fatal. */
static void apply_sched(struct vcpu *v)
{
    if (v->vm->cfg.vcpu_sched != VCPU_SCHED_IDLE)
        return;
    struct sched_param sp = {0};
    if (sched_setscheduler(0, SCHED_IDLE, &sp) < 0 && v->id == 0)
        fprintf(stderr, "amalgam: vCPU threads keep the normal scheduling policy (SCHED_IDLE "
                "refused: %s); nodes sharing cores will be slower\n", strerror(errno));
    else
        atomic_store(&v->sched_guest, true);
}

void vcpu_set_guest_sched(struct vcpu *v, bool guest)
{
    int64_t tid = atomic_load(&v->tid);
    if (v->vm->cfg.vcpu_sched != VCPU_SCHED_IDLE || tid <= 0 ||
        atomic_exchange(&v->sched_guest, guest) == guest)
        return;
    struct sched_param sp = {0};
    sched_setscheduler((pid_t)tid, guest ? SCHED_IDLE : SCHED_OTHER, &sp); /* best effort */
}

void *vcpu_thread(void *arg)
{
    struct vcpu *v = arg;
    v->self = pthread_self();
    atomic_store(&v->kickable, true);
    atomic_store(&v->tid, (int64_t)gettid());
    char name[16];
    snprintf(name, sizeof name, "amalgam-vcpu%d", v->id);
    pthread_setname_np(pthread_self(), name); /* top -H, ps -L */
    apply_sched(v);
    int r = setup_thread_signals(v);
    if (r < 0) {
        vm_fail(v->vm, "vCPU %d: cannot set up signals/timer: %s", v->id, strerror(-r));
        return NULL;
    }
    run_loop(v);
    return NULL;
}
