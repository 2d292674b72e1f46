/* Live vCPU migration and epoch-stamped interrupt routing (migrate.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock/clock.h"
#include "dsm/host.h"
#include "migration/migration.h"
#include "vmm/cluster.h"
#include "vmm/event_loop.h"
#include "vmm/kvm.h"
#include "vmm/migrate.h"
#include "vmm/state.h"
#include "vmm/vm.h"

#define MIG_PART MIGRATE_PART_BYTES
#define MIG_MAGIC 0x414d4d47u  /* "AMMG" */
#define MIG_VERSION 2
#define HELD_PER_VCPU 256      /* interrupts held for an arriving vCPU */
#define FUTURE_MAX 1024        /* messages from epochs not reached yet */
#define MIG_DONE_TIMEOUT_NS 10000000000ULL

/* What moves: this header, then the KVM state, then the LAPIC (protobuf). */
struct mig_header {
    uint32_t magic, version, vcpu, run_state; /* state it goes back to: enum vcpu_run_state */
    uint64_t epoch, t0_ns;                    /* t0: when it stopped on the old node */
    uint32_t kvm_len, lapic_len;
    uint32_t halt_if, nprefetch; /* then nprefetch pages (page << 1 | write) */
};

struct mig_done {
    uint32_t vcpu, from, to, pad;
    uint64_t downtime_ns, bytes;
};

/* After an arrival, the new node counts the vCPU thread's DSM faults for
 * 100 ms (the message loop, which owns the counts): what the move cost in
 * memory traffic. */
struct follow {
    bool active, based;
    uint64_t epoch, t0, f0, f10;
    int64_t tid;
};

/* Node 0: a trace line waiting for its fault counts (VM_T_MIG_FAULTS). */
struct pending_line {
    bool used;
    double t_ms;
    struct vm_migration_result res;
};
#define PENDING_LINES 1024
#define FOLLOW_MAX 256

struct arrival {
    uint8_t *buf;      /* the state being assembled */
    uint32_t total, got, nparts, next_part;
    uint64_t epoch;
    int from;
    bool ready;        /* complete: the vCPU's thread may restore it */
};

struct held_ipi {
    struct apic_msg m;
    uint64_t epoch;
    int target;        /* -1, or the one vCPU it was forwarded to */
};

struct vm_migration {
    pthread_rwlock_t lock;    /* routes, future, arrivals, vcpu->local */
    pthread_mutex_t held_lock; /* held[]: readers of lock add to it */
    struct vcpu_routes routes;
    struct arrival arr[VMM_MAX_VCPUS];
    struct apic_msg held[VMM_MAX_VCPUS][HELD_PER_VCPU];
    uint16_t nheld[VMM_MAX_VCPUS];
    struct held_ipi future[FUTURE_MAX];
    int nfuture;
    struct { uint64_t epoch; int vcpu, node; } future_routes[64];
    int nfuture_routes;
    size_t state_max;
    /* node 0: the move in flight */
    pthread_mutex_t done_lock;
    pthread_cond_t done_cond;
    uint64_t done_epoch;
    struct mig_done done;
    /* the new node: fault counts after arrivals (several at once: a vCPU
     * may come back within 100 ms, and each arrival has its own count) */
    pthread_mutex_t follow_lock;
    struct follow follow[FOLLOW_MAX];
    _Atomic int nfollow;
    /* --migrate-prefetch: pages an arrived vCPU touched last where it
     * was, asked for by the message loop once it runs here (follow_lock) */
    uint64_t prefetch[VMM_MAX_VCPUS][DSM_HOST_RECENT];
    uint32_t nprefetch[VMM_MAX_VCPUS];
    _Atomic int nprefetching; /* vCPUs with a list waiting */
    /* node 0: --trace, the downtimes so far, the --migrate schedule */
    pthread_mutex_t trace_lock;
    struct pending_line pending[PENDING_LINES];
    FILE *trace;
    uint64_t *down;
    size_t ndown, capdown;
    uint64_t t_start, last_progress, rng;
    size_t plan_next; /* --migrate-plan: the next step */
    /* --migrate-policy affinity: node 0's window (aff_lock: the message
     * loop adds, the main loop decides); every node's last counts per
     * vCPU, for the differences it reports (message loop only) */
    pthread_mutex_t aff_lock;
    struct affinity aff;
    uint32_t aff_prev[VMM_MAX_VCPUS][AFFINITY_MAX_NODES];
    uint64_t aff_next_report;
    uint64_t aff_moves;
    /* the MSRs every vCPU saves */
    uint32_t msr_idx[KVM_VCPU_STATE_MAX_MSRS];
    int nmsrs;
};

/* ---- interrupt routing ---- */

static void send_ipi(struct vm *vm, int node, uint64_t epoch, int target, const struct apic_msg *m)
{
    int e = ic_send(vm->cfg.ic, node, VM_T_IPI, epoch, (uint64_t)(target + 1), m, sizeof *m);
    if (e < 0) /* a lost interrupt hangs the guest later, far from here */
        vm_fail(vm, "node %d: cannot send an interrupt (vector %#x) to node %d: %s", vm->node,
                m->vector, node, strerror(-e));
}

static void hold(struct vm *vm, int v, const struct apic_msg *m)
{
    struct vm_migration *g = vm->mig;
    pthread_mutex_lock(&g->held_lock);
    if (g->nheld[v] < HELD_PER_VCPU)
        g->held[v][g->nheld[v]++] = *m;
    bool full = g->nheld[v] == HELD_PER_VCPU;
    pthread_mutex_unlock(&g->held_lock);
    if (full)
        vm_fail(vm, "node %d: %d interrupts for arriving vCPU %d: it does not come", vm->node,
                HELD_PER_VCPU, v);
}

/* m for vCPU v, which this node answers for; routes lock held (read or
 * write). matched: the sender's node already knows m addresses v. */
static bool for_vcpu(struct vm *vm, int v, const struct apic_msg *m, bool matched)
{
    struct vm_migration *g = vm->mig;
    struct vcpu *c = &vm->vcpus[v];
    int now = g->routes.node[v];
    if (now == vm->node && !c->local) { /* arriving: matched when it is here */
        hold(vm, v, m);
        return true;
    }
    pthread_mutex_lock(&c->lock);
    /* A vCPU that left keeps its LAPIC here as it was: its logical ids
     * still tell whether m is for it. */
    bool hit = matched || lapic_match(&c->lapic, m);
    if (hit && now == vm->node)
        lapic_deliver(&c->lapic, m);
    pthread_mutex_unlock(&c->lock);
    if (!hit)
        return false;
    if (now == vm->node)
        vcpu_kick(c);
    else
        send_ipi(vm, now, g->routes.epoch, v, m);
    return true;
}

static bool physical(const struct apic_msg *m)
{
    return m->shorthand == APIC_SH_NONE && !m->dest_logical &&
           m->dest != (m->x2apic ? APIC_BROADCAST_X2 : APIC_BROADCAST_XAPIC);
}

/* Where v was at epoch: the node that answers for it. */
static int node_at(struct vm *vm, int v, uint64_t epoch)
{
    int n = routes_node_at(&vm->mig->routes, v, epoch);
    return n >= 0 ? n : vm->mig->routes.node[v]; /* -ESTALE: far behind; where it is now */
}

/* A message at an epoch this node has reached, for the vCPUs this node
 * answers for at that epoch. */
static void answer(struct vm *vm, uint64_t epoch, int target, const struct apic_msg *m)
{
    if (target >= 0) {
        for_vcpu(vm, target, m, true);
        return;
    }
    if (physical(m)) {
        if (m->dest < (uint32_t)vm->nr_vcpus && node_at(vm, (int)m->dest, epoch) == vm->node)
            for_vcpu(vm, (int)m->dest, m, false);
        return;
    }
    for (int v = 0; v < vm->nr_vcpus; v++)
        if (node_at(vm, v, epoch) == vm->node && for_vcpu(vm, v, m, false) &&
            m->delivery == APIC_DM_LOWEST)
            break; /* lowest priority: the first match takes it */
}

void migrate_deliver(struct vm *vm, const struct apic_msg *m)
{
    struct vm_migration *g = vm->mig;
    pthread_rwlock_rdlock(&g->lock);
    uint64_t epoch = g->routes.epoch;
    answer(vm, epoch, -1, m);
    if (m->shorthand != APIC_SH_SELF) {
        if (physical(m)) {
            int n = m->dest < (uint32_t)vm->nr_vcpus ? g->routes.node[m->dest] : -1;
            if (n >= 0 && n != vm->node)
                send_ipi(vm, n, epoch, -1, m);
        } else {
            for (int n = 0; n < vm->nnodes; n++)
                if (n != vm->node)
                    send_ipi(vm, n, epoch, -1, m);
        }
    }
    pthread_rwlock_unlock(&g->lock);
}

void migrate_on_ipi(struct vm *vm, const struct ic_hdr *h, const struct apic_msg *m)
{
    struct vm_migration *g = vm->mig;
    int target = (int)h->arg1 - 1;
    if (h->arg1 > (uint64_t)vm->nr_vcpus) {
        cluster_bad_message(vm, h, "an interrupt forwarded to a vCPU that does not exist");
        return;
    }
    /* Read, as a local delivery: the held lists have their own lock. Only a
     * message from a move this node has not heard of yet needs the write
     * lock, to wait in the future list (rechecked: a move may land between). */
    pthread_rwlock_rdlock(&g->lock);
    if (h->arg0 > g->routes.epoch) {
        pthread_rwlock_unlock(&g->lock);
        pthread_rwlock_wrlock(&g->lock);
    }
    if (h->arg0 > g->routes.epoch) {
        if (g->nfuture == FUTURE_MAX)
            vm_fail(vm, "node %d: more than %d interrupts wait for a vCPU move to be "
                    "announced here", vm->node, FUTURE_MAX);
        else
            g->future[g->nfuture++] = (struct held_ipi){*m, h->arg0, target};
    } else {
        answer(vm, h->arg0, target, m);
    }
    pthread_rwlock_unlock(&g->lock);
}

/* ---- moves, as every node applies them ---- */

/* A move just applied here (write lock held). */
static void applied(struct vm *vm, uint64_t epoch, int v, int node)
{
    struct vm_migration *g = vm->mig;
    int from = routes_node_at(&g->routes, v, epoch - 1);
    struct vcpu *c = &vm->vcpus[v];
    if (from == vm->node && node != vm->node) {
        c->leave_epoch = epoch;
        atomic_store(&c->leave_to, node);
        vcpu_set_guest_sched(c, false); /* its leaving is downtime */
        vcpu_kick(c);
    }
    if (node == vm->node) {
        g->nheld[v] = 0;
        struct arrival *a = &g->arr[v];
        if (a->ready && a->epoch == epoch)
            vcpu_kick(c); /* the state came before the announcement */
    }
}

static void apply_route(struct vm *vm, uint64_t epoch, int v, int node)
{
    struct vm_migration *g = vm->mig;
    pthread_rwlock_wrlock(&g->lock);
    int r = routes_apply(&g->routes, epoch, v, node);
    if (r == -EAGAIN && g->nfuture_routes < 64)
        g->future_routes[g->nfuture_routes++] = (typeof(g->future_routes[0])){epoch, v, node};
    else if (r == -EAGAIN)
        vm_fail(vm, "node %d: vCPU moves announced far out of order", vm->node);
    if (r == 1) {
        applied(vm, epoch, v, node);
        for (bool more = true; more;) { /* moves that waited for this one */
            more = false;
            for (int i = 0; i < g->nfuture_routes; i++)
                if (g->future_routes[i].epoch == g->routes.epoch + 1) {
                    typeof(g->future_routes[0]) f = g->future_routes[i];
                    g->future_routes[i] = g->future_routes[--g->nfuture_routes];
                    routes_apply(&g->routes, f.epoch, f.vcpu, f.node);
                    applied(vm, f.epoch, f.vcpu, f.node);
                    more = true;
                    break;
                }
        }
        for (int i = 0; i < g->nfuture;) { /* interrupts that waited for them */
            if (g->future[i].epoch <= g->routes.epoch) {
                struct held_ipi f = g->future[i];
                g->future[i] = g->future[--g->nfuture];
                answer(vm, f.epoch, f.target, &f.m);
            } else {
                i++;
            }
        }
    }
    pthread_rwlock_unlock(&g->lock);
}

static void on_route(void *ctx, const struct ic_hdr *h, const void *payload)
{
    struct vm *vm = ctx;
    (void)payload;
    int v = (int)(h->arg1 >> 8), node = (int)(h->arg1 & 0xff);
    if (h->src_rank != 0 || v >= vm->nr_vcpus || node >= vm->nnodes || h->arg0 == 0)
        return cluster_bad_message(vm, h, "a vCPU move that is not one");
    apply_route(vm, h->arg0, v, node);
}

/* ---- leaving (old node, the vCPU's own thread) ---- */

static int send_state(struct vm *vm, int to, uint64_t epoch, int v, const uint8_t *buf,
                      uint32_t len)
{
    uint32_t nparts = (len + MIG_PART - 1) / MIG_PART;
    for (uint32_t p = 0; p < nparts; p++) {
        uint32_t off = p * MIG_PART, n = len - off < MIG_PART ? len - off : MIG_PART;
        uint64_t arg1 = (uint64_t)v | (uint64_t)p << 8 | (uint64_t)nparts << 16 |
                        (uint64_t)len << 32;
        int e = ic_send(vm->cfg.ic, to, VM_T_MIG_STATE, epoch, arg1, buf + off, n);
        if (e < 0)
            return e;
    }
    return 0;
}

/* --migrate-prefetch: the vCPU's last n distinct faulted pages here,
 * newest first. Its thread is stopped, so no fault of its own is being
 * counted; the message loop may be counting a fault it took just before
 * (the kick ended its wait): the ring is read with atomic loads, and a
 * page missed or seen twice costs one fault or one request, no more. */
static uint32_t recent_pages(struct vcpu *v, uint64_t *out, unsigned n)
{
    const struct dsm_thread_faults *t = v->vm->dsm && n ?
        dsm_host_thread(v->vm->dsm, atomic_load(&v->tid)) : NULL;
    if (!t)
        return 0;
    uint64_t end = __atomic_load_n(&t->nrecent, __ATOMIC_ACQUIRE);
    uint32_t k = 0;
    for (uint64_t i = 0; i < DSM_HOST_RECENT && i < end && k < n; i++) {
        uint64_t e = __atomic_load_n(&t->recent[(end - 1 - i) % DSM_HOST_RECENT], __ATOMIC_RELAXED);
        bool seen = false;
        for (uint32_t j = 0; j < k && !seen; j++)
            seen = out[j] >> 1 == e >> 1;
        if (!seen)
            out[k++] = e;
    }
    return k;
}

int migrate_leave_if_asked(struct vcpu *v)
{
    struct vm *vm = v->vm;
    struct vm_migration *g = vm->mig;
    int to = atomic_load(&v->leave_to);
    if (to < 0)
        return 1;
    uint64_t t0 = clock_now_ns();
    vcpu_finish_exit(v, "moving");
    size_t len = sizeof(struct mig_header) + sizeof(struct kvm_vcpu_state) + STATE_MAX_BYTES +
                 DSM_HOST_RECENT * sizeof(uint64_t);
    uint8_t *buf = calloc(1, len);
    if (!buf) {
        vm_fail(vm, "vCPU %d: no memory to migrate it", v->id);
        return -ENOMEM;
    }
    struct mig_header *hd = (struct mig_header *)buf;
    struct kvm_vcpu_state *ks = (struct kvm_vcpu_state *)(hd + 1);
    uint8_t *lp = (uint8_t *)(ks + 1);
    pthread_mutex_lock(&v->lock);
    enum vcpu_run_state back = (enum vcpu_run_state)v->sm.state;
    int r = kvm_vcpu_save(vm->kvm_fd, v->fd, g->msr_idx, g->nmsrs, ks);
    /* An interrupt given to KVM (KVM_INTERRUPT) that the guest has not
     * taken yet (the kick stopped KVM_RUN first) goes back to the LAPIC's
     * request register, and the new node injects it as any other: trusted
     * to KVM's saved events instead, a timer tick was lost now and then
     * (the halt test under --migrate every=2: a CPU halted for good in
     * about half the runs). */
    if (r == 0 && ks->events.interrupt.injected && !ks->events.interrupt.soft &&
        lapic_irq_uninject(&v->lapic, ks->events.interrupt.nr))
        ks->events.interrupt.injected = 0;
    int ll = r < 0 ? r : state_lapic_encode(&v->lapic, clock_now_ns(), lp, STATE_MAX_BYTES);
    if (ll >= 0) {
        vcpu_sm_step(&v->sm, VCPU_EV_PAUSE, 0);
        vcpu_sm_step(&v->sm, VCPU_EV_LEAVE, 0);
        vcpu_sm_step(&v->sm, VCPU_EV_LEFT, 0);
        v->local = false;
    }
    uint32_t npf = ll < 0 ? 0 : recent_pages(v, (uint64_t *)(lp + ll), vm->cfg.migrate_prefetch);
    *hd = (struct mig_header){MIG_MAGIC, MIG_VERSION, (uint32_t)v->id, back, v->leave_epoch, t0,
                              sizeof *ks, ll < 0 ? 0 : (uint32_t)ll, v->halt_if, npf};
    pthread_mutex_unlock(&v->lock);
    atomic_store(&v->leave_to, -1);
    if (ll < 0) {
        free(buf);
        vm_fail(vm, "vCPU %d: cannot save its state to move it: %s", v->id, strerror(-ll));
        return ll;
    }
    v->timer_armed_ns = 0;
    struct itimerspec off = {0};
    timer_settime(v->timer, 0, &off, NULL); /* its timer goes with its LAPIC */
    r = send_state(vm, to, hd->epoch, v->id, buf,
                   (uint32_t)(sizeof *hd + sizeof *ks + (size_t)ll + npf * sizeof(uint64_t)));
    free(buf);
    if (r < 0)
        vm_fail(vm, "vCPU %d: cannot send its state to node %d: %s", v->id, to, strerror(-r));
    return r < 0 ? r : 0;
}

/* ---- arriving (new node) ---- */

static void on_state(void *ctx, const struct ic_hdr *h, const void *payload)
{
    struct vm *vm = ctx;
    struct vm_migration *g = vm->mig;
    int v = (int)(h->arg1 & 0xff);
    uint32_t part = (h->arg1 >> 8) & 0xff, nparts = (h->arg1 >> 16) & 0xff,
             total = (uint32_t)(h->arg1 >> 32);
    if (v >= vm->nr_vcpus || !nparts || part >= nparts || total > g->state_max ||
        total < sizeof(struct mig_header) || nparts != (total + MIG_PART - 1) / MIG_PART ||
        h->payload_len != (part + 1 < nparts ? MIG_PART : total - part * MIG_PART))
        return cluster_bad_message(vm, h, "a vCPU's state in parts that do not fit");
    pthread_rwlock_wrlock(&g->lock);
    struct arrival *a = &g->arr[v];
    if (part == 0) {
        free(a->buf);
        *a = (struct arrival){.buf = malloc(total), .total = total, .nparts = nparts,
                              .epoch = h->arg0, .from = h->src_rank};
    }
    if (!a->buf || a->epoch != h->arg0 || a->from != h->src_rank || a->next_part != part ||
        a->total != total) {
        pthread_rwlock_unlock(&g->lock);
        return cluster_bad_message(vm, h, "a part of a vCPU's state out of order");
    }
    memcpy(a->buf + part * MIG_PART, payload, h->payload_len);
    a->got += h->payload_len;
    a->next_part++;
    if (a->next_part == nparts) {
        a->ready = true;
        if (g->routes.node[v] == vm->node && g->routes.moved_at[v] == a->epoch)
            vcpu_kick(&vm->vcpus[v]);
    }
    pthread_rwlock_unlock(&g->lock);
}

/* The state, checked: 0, or -EINVAL (then the vCPU cannot run anywhere:
 * the machine stops). */
static int restore(struct vcpu *v, const struct arrival *a, struct mig_header *hd)
{
    struct vm_migration *g = v->vm->mig;
    memcpy(hd, a->buf, sizeof *hd);
    if (hd->magic != MIG_MAGIC || hd->version != MIG_VERSION || hd->vcpu != (uint32_t)v->id ||
        hd->kvm_len != sizeof(struct kvm_vcpu_state) || hd->lapic_len > STATE_MAX_BYTES ||
        hd->nprefetch > DSM_HOST_RECENT ||
        a->total != sizeof *hd + hd->kvm_len + hd->lapic_len + hd->nprefetch * sizeof(uint64_t) ||
        hd->epoch != a->epoch ||
        (hd->run_state != VCPU_RUNNABLE && hd->run_state != VCPU_HALTED &&
         hd->run_state != VCPU_WAIT_SIPI))
        return -EINVAL;
    struct kvm_vcpu_state *ks = malloc(sizeof *ks);
    if (!ks)
        return -ENOMEM;
    memcpy(ks, a->buf + sizeof *hd, sizeof *ks);
    /* Guest TSC is one clock on every node of a host (tsc.c): the new node's
     * vCPU has it already; the old value would step time back. */
    uint32_t k = 0;
    for (uint32_t i = 0; i < ks->nmsrs && i < KVM_VCPU_STATE_MAX_MSRS; i++)
        if (ks->msrs[i].index != MSR_IA32_TSC)
            ks->msrs[k++] = ks->msrs[i];
    ks->nmsrs = k;
    int r = kvm_vcpu_restore(v->fd, ks);
    free(ks);
    if (r < 0)
        return r;
    /* kvm_run's IF and injection-window fields still describe this vCPU
     * as it last ran here, long ago: trusted, they let prepare_entry inject
     * an interrupt with the guest's IF clear (seen: the test guest took
     * its UART interrupt inside the code that holds its print lock, and
     * hung). Cleared, the first entry asks KVM for a window instead. */
    v->run->ready_for_interrupt_injection = 0;
    v->run->if_flag = 0;
    pthread_mutex_lock(&v->lock);
    r = state_lapic_decode(&v->lapic, clock_now_ns(), a->buf + sizeof *hd + hd->kvm_len,
                           hd->lapic_len);
    if (r == 0 && hd->nprefetch) {
        pthread_mutex_lock(&g->follow_lock);
        memcpy(g->prefetch[v->id], a->buf + sizeof *hd + hd->kvm_len + hd->lapic_len,
               hd->nprefetch * sizeof(uint64_t));
        if (!g->nprefetch[v->id])
            atomic_fetch_add(&g->nprefetching, 1);
        g->nprefetch[v->id] = hd->nprefetch;
        pthread_mutex_unlock(&g->follow_lock);
    }
    if (r == 0) {
        v->halt_if = hd->halt_if != 0;
        vcpu_sm_step(&v->sm, VCPU_EV_ARRIVE, 0);
        vcpu_sm_step(&v->sm, VCPU_EV_ARRIVED, (enum vcpu_run_state)hd->run_state);
    }
    pthread_mutex_unlock(&v->lock);
    return r;
}

int migrate_wait_arrival(struct vcpu *v)
{
    struct vm *vm = v->vm;
    struct vm_migration *g = vm->mig;
    while (!atomic_load(&vm->stopping) && !atomic_load(&vm->pause_req)) {
        pthread_rwlock_rdlock(&g->lock);
        struct arrival *a = &g->arr[v->id];
        bool go = a->ready && g->routes.node[v->id] == vm->node &&
                  g->routes.moved_at[v->id] == a->epoch;
        pthread_rwlock_unlock(&g->lock);
        if (!go) {
            struct timespec ts = {0, 50000000};
            sigset_t s;
            sigemptyset(&s);
            sigaddset(&s, SIGKICK);
            sigtimedwait(&s, NULL, &ts);
            continue;
        }
        struct mig_header hd;
        int r = restore(v, a, &hd);
        if (r < 0) {
            vm_fail(vm, "vCPU %d: the state node %d sent cannot be restored: %s", v->id, a->from,
                    strerror(-r));
            return 1;
        }
        /* Here from now on: the interrupts held for it go in first. */
        pthread_rwlock_wrlock(&g->lock);
        v->local = true;
        for (int i = 0; i < g->nheld[v->id]; i++)
            for_vcpu(vm, v->id, &g->held[v->id][i], false);
        g->nheld[v->id] = 0;
        struct mig_done d = {(uint32_t)v->id, (uint32_t)a->from, (uint32_t)vm->node, 0,
                             clock_now_ns() - hd.t0_ns, a->total};
        uint64_t epoch = a->epoch;
        free(a->buf);
        *a = (struct arrival){0};
        pthread_rwlock_unlock(&g->lock);
        pthread_mutex_lock(&g->follow_lock);
        for (int i = 0; i < FOLLOW_MAX; i++) /* none free: this move's counts stay null */
            if (!g->follow[i].active) {
                g->follow[i] = (struct follow){true, false, epoch, clock_now_ns(), 0, UINT64_MAX,
                                               atomic_load(&v->tid)};
                atomic_fetch_add(&g->nfollow, 1);
                break;
            }
        pthread_mutex_unlock(&g->follow_lock);
        if (vm->node == 0)
            migrate_take_done(vm, epoch, &d);
        else
            ic_send(vm->cfg.ic, 0, VM_T_MIG_DONE, epoch, 0, &d, sizeof d);
        return 0;
    }
    return 1;
}

/* ---- node 0: deciding moves ---- */

void migrate_take_done(struct vm *vm, uint64_t epoch, const struct mig_done *d)
{
    struct vm_migration *g = vm->mig;
    pthread_mutex_lock(&g->done_lock);
    if (epoch > g->done_epoch) {
        g->done_epoch = epoch;
        g->done = *d;
        pthread_cond_broadcast(&g->done_cond);
    }
    pthread_mutex_unlock(&g->done_lock);
}

static void on_done(void *ctx, const struct ic_hdr *h, const void *payload)
{
    struct vm *vm = ctx;
    struct mig_done d;
    if (vm->node != 0 || h->payload_len != sizeof d)
        return cluster_bad_message(vm, h, "a migration report that is not one");
    memcpy(&d, payload, sizeof d);
    if (d.vcpu >= (uint32_t)vm->nr_vcpus || d.to != h->src_rank || d.from >= (uint32_t)vm->nnodes)
        return cluster_bad_message(vm, h, "a migration report with impossible fields");
    migrate_take_done(vm, h->arg0, &d);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* p50 and p99 of the downtimes so far, in ns. */
static void percentiles(struct vm_migration *g, uint64_t *p50, uint64_t *p99)
{
    *p50 = *p99 = 0;
    if (!g->ndown)
        return;
    uint64_t *s = malloc(g->ndown * sizeof *s);
    if (!s)
        return;
    memcpy(s, g->down, g->ndown * sizeof *s);
    qsort(s, g->ndown, sizeof *s, cmp_u64);
    *p50 = s[g->ndown / 2];
    *p99 = s[(g->ndown * 99) / 100 < g->ndown ? (g->ndown * 99) / 100 : g->ndown - 1];
    free(s);
}

static void write_line(FILE *f, const struct pending_line *p, const uint64_t *f10,
                       const uint64_t *f100)
{
    char a[24] = "null", b[24] = "null";
    if (f10)
        snprintf(a, sizeof a, "%llu", (unsigned long long)*f10);
    if (f100)
        snprintf(b, sizeof b, "%llu", (unsigned long long)*f100);
    fprintf(f, "{\"t_ms\":%.3f,\"vcpu\":%d,\"from\":%d,\"to\":%d,\"downtime_us\":%.1f,"
            "\"bytes\":%llu,\"epoch\":%llu,\"faults_10ms\":%s,\"faults_100ms\":%s}\n", p->t_ms,
            p->res.vcpu, p->res.from, p->res.to, (double)p->res.downtime_ns / 1e3,
            (unsigned long long)p->res.bytes, (unsigned long long)p->res.epoch, a, b);
    fflush(f);
}

/* Node 0, after each move: the downtime kept; the trace line waits for
 * the new node's fault counts (written without them if they never come). */
static void record_move(struct vm *vm, const struct vm_migration_result *res)
{
    struct vm_migration *g = vm->mig;
    uint64_t now = clock_now_ns();
    pthread_mutex_lock(&g->trace_lock);
    if (g->trace) {
        struct pending_line *p = &g->pending[res->epoch % PENDING_LINES];
        if (p->used)
            write_line(g->trace, p, NULL, NULL);
        *p = (struct pending_line){true, (double)(now - g->t_start) / 1e6, *res};
    }
    pthread_mutex_unlock(&g->trace_lock);
    if (g->ndown == g->capdown) {
        size_t cap = g->capdown ? 2 * g->capdown : 1024;
        uint64_t *q = realloc(g->down, cap * sizeof *q);
        if (!q)
            return;
        g->down = q;
        g->capdown = cap;
    }
    g->down[g->ndown++] = res->downtime_ns;
}

static void take_faults(struct vm *vm, uint64_t epoch, uint64_t f10, uint64_t f100)
{
    struct vm_migration *g = vm->mig;
    pthread_mutex_lock(&g->trace_lock);
    struct pending_line *p = &g->pending[epoch % PENDING_LINES];
    if (g->trace && p->used && p->res.epoch == epoch) {
        write_line(g->trace, p, &f10, &f100);
        p->used = false;
    }
    pthread_mutex_unlock(&g->trace_lock);
}

static void on_faults(void *ctx, const struct ic_hdr *h, const void *payload)
{
    struct vm *vm = ctx;
    (void)payload;
    if (vm->node != 0)
        return cluster_bad_message(vm, h, "a migration's fault counts reached a node other than 0");
    take_faults(vm, h->arg0, h->arg1 & 0xffffffffu, h->arg1 >> 32);
}

/* ---- --migrate-policy affinity ---- */

/* A window's counts for v from node src, if v still runs there. */
static void take_affinity(struct vm *vm, int src, int v, const uint32_t *by_home)
{
    struct vm_migration *g = vm->mig;
    pthread_rwlock_rdlock(&g->lock);
    bool there = g->routes.node[v] == src;
    pthread_rwlock_unlock(&g->lock);
    if (!there)
        return; /* it moved since: the counts describe a node it left */
    pthread_mutex_lock(&g->aff_lock);
    affinity_add(&g->aff, v, by_home);
    pthread_mutex_unlock(&g->aff_lock);
}

static void on_affinity(void *ctx, const struct ic_hdr *h, const void *payload)
{
    struct vm *vm = ctx;
    uint32_t by_home[AFFINITY_MAX_NODES];
    if (vm->node != 0 || !vm->cfg.migrate_affinity || h->arg0 >= (uint64_t)vm->nr_vcpus ||
        h->payload_len != (uint32_t)vm->nnodes * sizeof by_home[0])
        return cluster_bad_message(vm, h, "an affinity report that is not one");
    memcpy(by_home, payload, h->payload_len);
    take_affinity(vm, h->src_rank, (int)h->arg0, by_home);
}

/* Every node, once a window (message loop, which owns the DSM's counts):
 * each vCPU running here, its faults by home since the last report. */
static void affinity_report(struct vm *vm)
{
    struct vm_migration *g = vm->mig;
    uint64_t now = clock_now_ns();
    if (now < g->aff_next_report || !vm->dsm)
        return;
    g->aff_next_report = now + vm->cfg.affinity.window_ms * 1000000ULL;
    bool here[VMM_MAX_VCPUS];
    pthread_rwlock_rdlock(&g->lock);
    for (int v = 0; v < vm->nr_vcpus; v++)
        here[v] = g->routes.node[v] == vm->node;
    pthread_rwlock_unlock(&g->lock);
    for (int v = 0; v < vm->nr_vcpus; v++) {
        const struct dsm_thread_faults *t =
            dsm_host_thread(vm->dsm, atomic_load(&vm->vcpus[v].tid));
        uint32_t d[AFFINITY_MAX_NODES];
        bool any = false;
        for (int k = 0; k < vm->nnodes; k++) {
            uint32_t c = t ? t->by_home[k] : 0;
            d[k] = c - g->aff_prev[v][k]; /* the counts wrap */
            g->aff_prev[v][k] = c;
            any = any || d[k];
        }
        if (!here[v] || !any)
            continue;
        if (vm->node == 0)
            take_affinity(vm, 0, v, d);
        else
            ic_send(vm->cfg.ic, 0, VM_T_MIG_AFFINITY, (uint64_t)v, 0, d,
                    (uint32_t)vm->nnodes * sizeof d[0]);
    }
}

static bool movable(const struct vm *vm, int v);

/* Node 0's main loop, at the end of each window: at most one move. */
static void on_affinity_window(void *ctx, int fd, uint32_t events)
{
    struct vm *vm = ctx;
    struct vm_migration *g = vm->mig;
    (void)fd, (void)events;
    if (atomic_load(&vm->stopping))
        return;
    uint8_t node_of[MIGRATION_MAX_VCPUS];
    pthread_rwlock_rdlock(&g->lock);
    memcpy(node_of, g->routes.node, sizeof node_of);
    pthread_rwlock_unlock(&g->lock);
    for (int v = 0; v < vm->nr_vcpus; v++)
        if (!movable(vm, v))
            node_of[v] = UINT8_MAX; /* not a candidate (--migrate ...,vcpus=LIST) */
    int v, to;
    pthread_mutex_lock(&g->aff_lock);
    int r = affinity_decide(&g->aff, node_of, &v, &to);
    pthread_mutex_unlock(&g->aff_lock);
    if (r != 1)
        return;
    struct vm_migration_result res;
    char err[256];
    if (vm_migrate_vcpu(vm, v, to, &res, err, sizeof err) < 0 && !atomic_load(&vm->stopping))
        vm_fail(vm, "--migrate-policy affinity could not move vCPU %d to node %d: %s", v, to, err);
    else
        g->aff_moves++;
}

/* The message loop, every turn: the fault counts of recent arrivals, and
 * the affinity policy's reports. */
void migrate_poll(struct vm *vm)
{
    struct vm_migration *g = vm->mig;
    if (!g)
        return;
    if (vm->cfg.migrate_affinity)
        affinity_report(vm);
    if (!atomic_load(&g->nfollow) && !atomic_load(&g->nprefetching))
        return;
    uint64_t now = clock_now_ns();
    pthread_mutex_lock(&g->follow_lock);
    for (int v = 0; v < vm->nr_vcpus; v++)
        if (g->nprefetch[v]) {
            if (vm->dsm)
                dsm_host_prefetch(vm->dsm, g->prefetch[v], (int)g->nprefetch[v]);
            g->nprefetch[v] = 0;
            atomic_fetch_sub(&g->nprefetching, 1);
        }
    for (int i = 0; i < FOLLOW_MAX; i++) {
        struct follow *f = &g->follow[i];
        if (!f->active)
            continue;
        uint64_t c = dsm_host_thread_faults(vm->dsm, f->tid);
        if (!f->based) {
            f->f0 = c;
            f->based = true;
        }
        if (now - f->t0 >= 10000000ULL && f->f10 == UINT64_MAX)
            f->f10 = c - f->f0;
        if (now - f->t0 < 100000000ULL)
            continue;
        uint64_t f100 = c - f->f0, f10 = f->f10 == UINT64_MAX ? f100 : f->f10;
        f10 = f10 > 0xffffffffu ? 0xffffffffu : f10;
        f100 = f100 > 0xffffffffu ? 0xffffffffu : f100;
        f->active = false;
        atomic_fetch_sub(&g->nfollow, 1);
        if (vm->node == 0)
            take_faults(vm, f->epoch, f10, f100);
        else
            ic_send(vm->cfg.ic, 0, VM_T_MIG_FAULTS, f->epoch, f10 | f100 << 32, NULL, 0);
    }
    pthread_mutex_unlock(&g->follow_lock);
}

int vm_migrate_vcpu(struct vm *vm, int v, int node, struct vm_migration_result *res, char *err,
                    size_t n)
{
    struct vm_migration *g = vm->mig;
    if (!vm->cfg.ic || vm->node != 0) {
        snprintf(err, n, "vCPUs move between the nodes of a multi-node machine, from node 0");
        return -EINVAL;
    }
    if (v < 0 || v >= vm->nr_vcpus) {
        snprintf(err, n, "there is no vCPU %d (the machine has %d)", v, vm->nr_vcpus);
        return -EINVAL;
    }
    if (node < 0 || node >= vm->nnodes) {
        snprintf(err, n, "there is no node %d (the machine has %d)", node, vm->nnodes);
        return -EINVAL;
    }
    if (ic_dead_rank(vm->cfg.ic) == node) {
        snprintf(err, n, "node %d does not answer", node);
        return -EHOSTDOWN;
    }
    pthread_rwlock_rdlock(&g->lock);
    int from = g->routes.node[v];
    uint64_t epoch = g->routes.epoch + 1;
    pthread_rwlock_unlock(&g->lock);
    *res = (struct vm_migration_result){.vcpu = v, .from = from, .to = node, .epoch = epoch};
    if (from == node)
        return 0; /* there already */
    uint64_t arg1 = (uint64_t)v << 8 | (uint64_t)node;
    for (int r = 1; r < vm->nnodes; r++) {
        int e = ic_send(vm->cfg.ic, r, VM_T_ROUTE, epoch, arg1, NULL, 0);
        if (e < 0) {
            snprintf(err, n, "cannot announce the move to node %d: %s", r, strerror(-e));
            return e; /* nodes that heard it wait for the rest: the machine stops */
        }
    }
    apply_route(vm, epoch, v, node);
    uint64_t deadline = clock_now_ns() + MIG_DONE_TIMEOUT_NS;
    pthread_mutex_lock(&g->done_lock);
    while (g->done_epoch < epoch && !atomic_load(&vm->stopping) && clock_now_ns() < deadline) {
        struct timespec ts = clock_realtime_after(10000000ULL);
        pthread_cond_timedwait(&g->done_cond, &g->done_lock, &ts);
    }
    bool done = g->done_epoch >= epoch;
    struct mig_done d = g->done;
    pthread_mutex_unlock(&g->done_lock);
    if (!done) {
        snprintf(err, n, "vCPU %d did not arrive on node %d within %llu s", v, node,
                 (unsigned long long)(MIG_DONE_TIMEOUT_NS / 1000000000ULL));
        vm_fail(vm, "vCPU %d was lost moving from node %d to node %d", v, from, node);
        return -ETIMEDOUT;
    }
    res->downtime_ns = d.downtime_ns;
    res->bytes = d.bytes;
    record_move(vm, res);
    return 1;
}

int vm_vcpu_node(struct vm *vm, int v)
{
    if (!vm->mig)
        return 0;
    pthread_rwlock_rdlock(&vm->mig->lock);
    int n = routes_node_of(&vm->mig->routes, v);
    pthread_rwlock_unlock(&vm->mig->lock);
    return n;
}

/* ---- node 0: --migrate every=MS ---- */

static uint64_t next_rand(struct vm_migration *g)
{
    g->rng ^= g->rng << 13;
    g->rng ^= g->rng >> 7;
    g->rng ^= g->rng << 17;
    return g->rng;
}

static bool movable(const struct vm *vm, int v)
{
    const uint64_t *m = vm->cfg.migrate_mask;
    return !(m[0] | m[1] | m[2] | m[3]) || (m[v / 64] >> (v % 64) & 1);
}

static void on_schedule(void *ctx, int fd, uint32_t events)
{
    struct vm *vm = ctx;
    struct vm_migration *g = vm->mig;
    (void)fd, (void)events; /* the loop has read the timer */
    if (atomic_load(&vm->stopping))
        return;
    int cand[VMM_MAX_VCPUS], nc = 0;
    for (int v = 0; v < vm->nr_vcpus; v++)
        if (movable(vm, v))
            cand[nc++] = v;
    if (!nc)
        return;
    int v = cand[next_rand(g) % (uint64_t)nc];
    int from = vm_vcpu_node(vm, v);
    int to = (int)(next_rand(g) % (uint64_t)(vm->nnodes - 1));
    if (to >= from)
        to++;
    struct vm_migration_result res;
    char err[256];
    if (vm_migrate_vcpu(vm, v, to, &res, err, sizeof err) < 0 && !atomic_load(&vm->stopping))
        vm_fail(vm, "the --migrate schedule could not move vCPU %d: %s", v, err);
    uint64_t now = clock_now_ns();
    if (now - g->last_progress > 5000000000ULL) {
        uint64_t p50, p99;
        percentiles(g, &p50, &p99);
        fprintf(stderr, "amalgam: %zu vCPU moves so far, downtime p50 %.0f us, p99 %.0f us\n",
                g->ndown, p50 / 1e3, p99 / 1e3);
        g->last_progress = now;
    }
}

static void on_plan(void *ctx, int fd, uint32_t events)
{
    struct vm *vm = ctx;
    struct vm_migration *g = vm->mig;
    (void)fd, (void)events;
    uint64_t now_ms = (clock_now_ns() - g->t_start) / 1000000ULL;
    while (g->plan_next < vm->cfg.migrate_plan_n && !atomic_load(&vm->stopping) &&
           vm->cfg.migrate_plan[g->plan_next].t_ms <= now_ms) {
        const struct migration_step *st = &vm->cfg.migrate_plan[g->plan_next++];
        struct vm_migration_result res;
        char err[256];
        if (vm_migrate_vcpu(vm, st->vcpu, st->node, &res, err, sizeof err) < 0 &&
            !atomic_load(&vm->stopping))
            vm_fail(vm, "--migrate-plan, step %zu (vCPU %d to node %d): %s", g->plan_next,
                    st->vcpu, st->node, err);
    }
}

int migrate_start(struct vm *vm, struct event_loop *loop, char *err, size_t n)
{
    struct vm_migration *g = vm->mig;
    g->t_start = g->last_progress = clock_now_ns();
    g->rng = g->t_start | 1;
    if (vm->cfg.trace && !(g->trace = fopen(vm->cfg.trace, "w"))) {
        snprintf(err, n, "--trace %s: %s", vm->cfg.trace, strerror(errno));
        return -errno;
    }
    for (size_t i = 0; i < vm->cfg.migrate_plan_n; i++)
        if (vm->cfg.migrate_plan[i].vcpu >= vm->nr_vcpus ||
            vm->cfg.migrate_plan[i].node >= vm->nnodes) {
            snprintf(err, n, "--migrate-plan, step %zu: vCPU %d to node %d, but the machine has "
                     "%d vCPUs on %d nodes", i + 1, vm->cfg.migrate_plan[i].vcpu,
                     vm->cfg.migrate_plan[i].node, vm->nr_vcpus, vm->nnodes);
            return -EINVAL;
        }
    if (vm->cfg.migrate_plan_n) {
        int r = event_loop_add_timer(loop, 1000000ULL, on_plan, vm); /* 1 ms resolution */
        if (r < 0) {
            snprintf(err, n, "cannot start the --migrate-plan schedule: %s", strerror(-r));
            return r;
        }
    }
    if (vm->cfg.migrate_affinity) {
        if (vm->nnodes < 2) {
            snprintf(err, n, "--migrate-policy needs --nodes 2 or more");
            return -EINVAL;
        }
        int r = event_loop_add_timer(loop, vm->cfg.affinity.window_ms * 1000000ULL,
                                     on_affinity_window, vm);
        if (r < 0) {
            snprintf(err, n, "cannot start the affinity policy: %s", strerror(-r));
            return r;
        }
    }
    if (!vm->cfg.migrate_every_ms)
        return 0;
    if (vm->nnodes < 2) {
        snprintf(err, n, "--migrate needs --nodes 2 or more");
        return -EINVAL;
    }
    int r = event_loop_add_timer(loop, vm->cfg.migrate_every_ms * 1000000ULL, on_schedule, vm);
    if (r < 0)
        snprintf(err, n, "cannot start the --migrate schedule: %s", strerror(-r));
    return r < 0 ? r : 0;
}

void migrate_end(struct vm *vm)
{
    struct vm_migration *g = vm->mig;
    if (!g)
        return;
    if (g->ndown && vm->cfg.migrate_every_ms) {
        uint64_t p50, p99;
        percentiles(g, &p50, &p99);
        fprintf(stderr, "amalgam: %zu vCPU moves, downtime p50 %.0f us, p99 %.0f us\n", g->ndown,
                p50 / 1e3, p99 / 1e3);
    }
    if (vm->cfg.migrate_affinity && vm->node == 0)
        fprintf(stderr, "amalgam: the affinity policy moved vCPUs %llu times\n",
                (unsigned long long)g->aff_moves);
    pthread_mutex_lock(&g->trace_lock);
    for (uint64_t e = 0; g->trace && e < PENDING_LINES; e++) /* in epoch order */
        for (int i = 0; i < PENDING_LINES; i++)
            if (g->pending[i].used && g->pending[i].res.epoch % PENDING_LINES == e) {
                write_line(g->trace, &g->pending[i], NULL, NULL);
                g->pending[i].used = false;
            }
    if (g->trace)
        fclose(g->trace);
    g->trace = NULL;
    pthread_mutex_unlock(&g->trace_lock);
}

/* ---- set-up ---- */

int migrate_register_types(struct ic_types *t)
{
    int r = ic_types_add(t, VM_T_ROUTE, 0, 0);
    r = r ?: ic_types_add(t, VM_T_MIG_STATE, 1, MIG_PART);
    r = r ?: ic_types_add(t, VM_T_MIG_FAULTS, 0, 0);
    r = r ?: ic_types_add(t, VM_T_MIG_AFFINITY, sizeof(uint32_t),
                          AFFINITY_MAX_NODES * sizeof(uint32_t));
    return r ?: ic_types_add(t, VM_T_MIG_DONE, sizeof(struct mig_done), sizeof(struct mig_done));
}

int migrate_attach(struct vm *vm)
{
    struct ic *ic = vm->cfg.ic;
    int r = ic_on(ic, VM_T_ROUTE, VM_T_ROUTE, on_route, vm);
    r = r ?: ic_on(ic, VM_T_MIG_STATE, VM_T_MIG_STATE, on_state, vm);
    r = r ?: ic_on(ic, VM_T_MIG_FAULTS, VM_T_MIG_FAULTS, on_faults, vm);
    r = r ?: ic_on(ic, VM_T_MIG_AFFINITY, VM_T_MIG_AFFINITY, on_affinity, vm);
    return r ?: ic_on(ic, VM_T_MIG_DONE, VM_T_MIG_DONE, on_done, vm);
}

int migrate_init(struct vm *vm)
{
    struct vm_migration *g = calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    int r = routes_init(&g->routes, vm->nr_vcpus, vm->nnodes, vm->machine.vcpu_node);
    if (r < 0) {
        free(g);
        return r;
    }
    pthread_rwlock_init(&g->lock, NULL);
    pthread_mutex_init(&g->held_lock, NULL);
    pthread_mutex_init(&g->follow_lock, NULL);
    pthread_mutex_init(&g->trace_lock, NULL);
    pthread_mutex_init(&g->done_lock, NULL);
    pthread_mutex_init(&g->aff_lock, NULL);
    if (vm->cfg.migrate_affinity &&
        affinity_init(&g->aff, &vm->cfg.affinity, vm->nr_vcpus, vm->nnodes) < 0) {
        free(g);
        return -EINVAL; /* more nodes than the policy counts */
    }
    pthread_cond_init(&g->done_cond, NULL);
    g->state_max = sizeof(struct mig_header) + sizeof(struct kvm_vcpu_state) + STATE_MAX_BYTES +
                   DSM_HOST_RECENT * sizeof(uint64_t);
    int dropped = 0;
    g->nmsrs = kvm_saveable_msrs(vm->kvm_fd, g->msr_idx, KVM_VCPU_STATE_MAX_MSRS, &dropped);
    if (g->nmsrs < 0)
        g->nmsrs = 0;
    for (int i = 0; i < vm->nr_vcpus; i++)
        atomic_store(&vm->vcpus[i].leave_to, -1);
    vm->mig = g;
    return 0;
}

void migrate_free(struct vm *vm)
{
    struct vm_migration *g = vm->mig;
    if (!g)
        return;
    for (int i = 0; i < VMM_MAX_VCPUS; i++)
        free(g->arr[i].buf);
    pthread_rwlock_destroy(&g->lock);
    free(g->down);
    if (g->trace)
        fclose(g->trace);
    free(g);
    vm->mig = NULL;
}
