/* One node of a multi-node machine (see cluster.h). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <x86intrin.h>

#include "clock/clock.h"
#include "dsm/host.h"
#include "vmm/cluster.h"
#include "vmm/vm.h"

int cluster_register_types(struct ic_types *t)
{
    int r = dsm_register_types(t);
    r = r ?: ic_types_add(t, VM_T_IPI, sizeof(struct apic_msg), sizeof(struct apic_msg));
    r = r ?: ic_types_add(t, VM_T_IO_REQ, sizeof(struct bus_access), sizeof(struct bus_access));
    r = r ?: ic_types_add(t, VM_T_IO_REPLY, 0, 0);
    r = r ?: ic_types_add(t, VM_T_TSC, 0, 0);
    r = r ?: ic_types_add(t, VM_T_EOI, 0, 0);
    return r ?: ic_types_add(t, VM_T_STOP, 0, 0);
}

/* DSM pages are memfd offsets; homes come from the NUMA slices of the
 * guest-physical addresses they back. */
static int home_of_page(void *hctx, uint64_t page)
{
    struct vm *vm = hctx;
    uint64_t off = page * DSM_PAGE_SIZE;
    uint64_t gpa = off < vm->mem.low_size ? off : GMEM_HIGH_BASE + (off - vm->mem.low_size);
    int n = numa_node_of_gpa(&vm->machine, gpa);
    return n < 0 ? 0 : n;
}

static bool valid_apic_msg(const struct apic_msg *m)
{
    return m->delivery != 3 && m->delivery <= APIC_DM_EXTINT && m->shorthand <= APIC_SH_OTHERS &&
           m->shorthand != APIC_SH_SELF && m->dest_logical <= 1 && m->x2apic <= 1;
}

/* A message the protocol does not allow (a bug or a hostile peer): counted,
 * reported once, then dropped. */
static void bad_message(struct vm *vm, const struct ic_hdr *h, const char *why)
{
    if (atomic_fetch_add(&vm->bad_msgs, 1) == 0)
        fprintf(stderr, "amalgam node %d: dropped a message from node %d: %s (further ones "
                "are counted in --stats)\n", vm->node, h->src_rank, why);
}

/* ---- devices: forwarded accesses --------------------------------------- */

/* On the owner, forwarded accesses are queued for the device thread: a
 * device may read guest memory through the DSM and wait for a page, which
 * the message loop must never do (it serves the DSM). Each remote vCPU has
 * at most one access in flight, so nr_vcpus entries always suffice; a peer
 * that sends more is misbehaving and is dropped. */
struct dev_req {
    int src;
    struct bus_access a;
};

struct dev_queue {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct dev_req *ring;
    unsigned head, count, cap;
    bool stop;
    pthread_t thread;
    bool started;
};

static void queue_io(struct vm *vm, const struct ic_hdr *h, const void *payload)
{
    struct dev_queue *q = vm->devq;
    struct bus_access a;
    memcpy(&a, payload, sizeof a);
    pthread_mutex_lock(&q->lock);
    bool full = q->count == q->cap;
    if (!full) {
        q->ring[(q->head + q->count++) % q->cap] = (struct dev_req){h->src_rank, a};
        pthread_cond_signal(&q->cond);
    }
    pthread_mutex_unlock(&q->lock);
    if (full)
        bad_message(vm, h, "more device accesses in flight than the peer has vCPUs");
}

static void *device_thread(void *arg)
{
    struct vm *vm = arg;
    struct dev_queue *q = vm->devq;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_mutex_lock(&q->lock);
    while (!q->stop) {
        if (!q->count) {
            pthread_cond_wait(&q->cond, &q->lock);
            continue;
        }
        struct dev_req r = q->ring[q->head];
        q->head = (q->head + 1) % q->cap;
        q->count--;
        pthread_mutex_unlock(&q->lock);
        int st = bus_serve(&vm->bus, &r.a);
        if (st < 0) {
            struct ic_hdr h = {.src_rank = (uint16_t)r.src};
            bad_message(vm, &h, "a device access with a bad device, address or size");
            r.a.data = ~0ULL;
        }
        int e = ic_send(vm->cfg.ic, r.src, VM_T_IO_REPLY, r.a.vcpu | (uint64_t)(st < 0) << 32,
                        r.a.data, NULL, 0);
        if (e < 0) /* its vCPU would wait for the reply until its deadline */
            vm_fail(vm, "node %d: cannot answer node %d's device access: %s", vm->node, r.src,
                    strerror(-e));
        pthread_mutex_lock(&q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

static int start_device_thread(struct vm *vm)
{
    struct dev_queue *q = calloc(1, sizeof *q);
    if (!q)
        return -ENOMEM;
    vm->devq = q;
    q->cap = (unsigned)vm->nr_vcpus;
    q->ring = calloc(q->cap, sizeof *q->ring);
    if (!q->ring)
        return -ENOMEM;
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->cond, NULL);
    if (pthread_create(&q->thread, NULL, device_thread, vm))
        return -EAGAIN;
    q->started = true;
    return 0;
}

static void stop_device_thread(struct vm *vm)
{
    struct dev_queue *q = vm->devq;
    if (!q)
        return;
    if (q->started) {
        pthread_mutex_lock(&q->lock);
        q->stop = true;
        pthread_cond_signal(&q->cond);
        pthread_mutex_unlock(&q->lock);
        pthread_join(q->thread, NULL);
    }
    free(q->ring);
    free(q);
    vm->devq = NULL;
}

static void io_answered(struct vm *vm, const struct ic_hdr *h)
{
    uint64_t id = h->arg0 & 0xffffffffu;
    struct vcpu *v = id < (uint64_t)vm->nr_vcpus ? &vm->vcpus[id] : NULL;
    if (!v || !v->local || (h->arg0 >> 32) > 1) {
        bad_message(vm, h, "a device answer for no vCPU of this node");
        return;
    }
    pthread_mutex_lock(&v->lock);
    bool expected = v->io_waiting && h->src_rank == v->io_owner;
    if (expected) {
        v->io_value = h->arg1;
        v->io_done = true;
        v->io_waiting = false;
        pthread_cond_signal(&v->io_cond);
    }
    pthread_mutex_unlock(&v->lock);
    if (!expected)
        bad_message(vm, h, "a device answer nobody waits for, or from the wrong node");
}

/* How long a vCPU waits for the owner of a device to answer. In the
 * emulated L1 a node's threads can wait seconds for a CPU. */
static uint64_t io_deadline_ns(void)
{
    const char *e = getenv("AMALGAM_IO_DEADLINE_MS");
    long ms = e ? atol(e) : 0;
    return (ms > 0 ? (uint64_t)ms : 60000ULL) * 1000000ULL;
}

/* The bus's forward op: the access goes to the owner's device thread. */
static int forward(void *ctx, void *who, int owner, struct bus_access *a)
{
    struct vm *vm = ctx;
    struct vcpu *v = who;
    if (!v)
        return -EINVAL;
    pthread_mutex_lock(&v->lock);
    v->io_done = false;
    v->io_waiting = true;
    v->io_owner = owner;
    pthread_mutex_unlock(&v->lock);
    int e = ic_send(vm->cfg.ic, owner, VM_T_IO_REQ, 0, 0, a, sizeof *a);
    if (e < 0) {
        pthread_mutex_lock(&v->lock);
        v->io_waiting = false;
        pthread_mutex_unlock(&v->lock);
        return e;
    }
    uint64_t deadline = clock_now_ns() + io_deadline_ns();
    pthread_mutex_lock(&v->lock);
    while (!v->io_done && !atomic_load(&vm->stopping) && clock_now_ns() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&v->io_cond, &v->lock, &ts);
    }
    bool done = v->io_done;
    v->io_waiting = false;
    a->data = v->io_value;
    pthread_mutex_unlock(&v->lock);
    if (done)
        return 0;
    return atomic_load(&vm->stopping) ? -ECANCELED : -ETIMEDOUT;
}

static void on_message(void *ctx, const struct ic_hdr *h, const void *payload)
{
    struct vm *vm = ctx;
    struct apic_msg m;
    switch (h->type) {
    case VM_T_IPI:
        memcpy(&m, payload, sizeof m);
        if (valid_apic_msg(&m))
            vm_deliver_local(vm, &m);
        else
            bad_message(vm, h, "an interrupt message with invalid fields");
        break;
    case VM_T_EOI:
        /* Vectors 0-15 are exceptions: no interrupt ever had one. */
        if (bus_is_local(&vm->bus, vm->ioapic_dev) && h->arg0 >= 16 && h->arg0 <= 255)
            vm_eoi(vm, (uint8_t)h->arg0);
        else
            bad_message(vm, h, "an EOI not for this node's IOAPIC, or of an invalid vector");
        break;
    case VM_T_IO_REQ:
        queue_io(vm, h, payload);
        break;
    case VM_T_IO_REPLY:
        io_answered(vm, h);
        break;
    case VM_T_TSC:
        if (h->src_rank == 0 && vm->node != 0 && !atomic_load(&vm->tsc_ref_known)) {
            vm->tsc_ref = h->arg0;
            vm->tsc_ref_host = h->arg1;
            atomic_store(&vm->tsc_ref_known, true);
        }
        break;
    case VM_T_STOP:
        if (h->arg0 == VM_EXIT_ERROR && !atomic_exchange(&vm->error_taken, true))
            snprintf(vm->error, sizeof vm->error, "node %d failed (its message is above)",
                     h->src_rank);
        if (h->arg0 >= VM_EXIT_DEBUG_PORT && h->arg0 <= VM_EXIT_ERROR)
            vm_stop_local(vm, (enum vm_exit_reason)h->arg0, (int)(h->arg1 & 0xff));
        break;
    default:
        dsm_host_on_message(vm->dsm, h, payload);
        break;
    }
}

static void *progress(void *arg)
{
    struct vm *vm = arg;
    uint64_t last = 0;
    /* Signals go to the main loop and the vCPU threads, not here. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    while (!atomic_load(&vm->stopping)) {
        int n = dsm_host_poll(vm->dsm) + ic_poll(vm->cfg.ic, on_message, vm, 64);
        uint64_t t = clock_now_ns();
        if (t - last > 50000000ULL) {
            last = t;
            if (dsm_host_errors(vm->dsm)) {
                vm_fail(vm, "node %d: the DSM could not copy or protect guest pages (%llu "
                        "failures); stopping rather than run on wrong memory", vm->node,
                        (unsigned long long)dsm_host_errors(vm->dsm));
                break;
            }
            if (ic_tick(vm->cfg.ic, t) < 0) {
                vm_fail(vm, "node %d stopped answering (no heartbeat for %.1f s)",
                        ic_dead_rank(vm->cfg.ic), ic_dead_after_ns(vm->cfg.ic) / 1e9);
                break;
            }
        }
        dsm_host_pace(vm->dsm, n, t);
    }
    /* Drain a little longer so that a stop we sent reaches the others, and
     * serve faults until the vCPU threads are gone (one may be leaving
     * KVM_RUN through a page this loop must map), for at most 2 s. */
    uint64_t t0 = clock_now_ns(), t;
    while ((t = clock_now_ns()) - t0 < 200000000ULL ||
           (!atomic_load(&vm->vcpus_joined) && t - t0 < 2000000000ULL))
        if (dsm_host_poll(vm->dsm) + ic_poll(vm->cfg.ic, on_message, vm, 64) == 0)
            ic_wait(vm->cfg.ic, 5, vm->dsm->uffd);
    if (!atomic_load(&vm->vcpus_joined))
        dsm_host_release(vm->dsm); /* a vCPU still waits for a page: let it go */
    return NULL;
}

#define TSC_WAIT_NS 30000000000ULL
#define TSC_PROBES 32
#define TSC_PROBE_WAIT_NS 200000000ULL

/* The first 64 bits of this boot's random id (0: unknown). Equal on two
 * nodes means one kernel, so one TSC: node processes on one host, or in
 * network namespaces of one host. */
static uint64_t host_boot_tag(void)
{
    char s[64] = "";
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        if (!fgets(s, sizeof s, f))
            s[0] = 0;
        fclose(f);
    }
    uint64_t v = 0;
    int n = 0;
    for (const char *p = s; *p && n < 16; p++)
        if (isxdigit((unsigned char)*p)) {
            v = v << 4 | (uint64_t)(isdigit((unsigned char)*p) ? *p - '0' : (tolower(*p) - 'a' + 10));
            n++;
        }
    return n == 16 ? v : 0;
}

/* Node 0's TSC minus ours, estimated over the interconnect (ic_clock_*):
 * the probes' answers are taken by this node's message thread. */
static int estimate_tsc_offset(struct vm *vm, int64_t *offset, char *err, size_t errlen)
{
    int64_t off = 0;
    uint64_t rtt = 0, n = 0;
    if (ic_clock_measure(vm->cfg.ic, 0, TSC_PROBES, TSC_PROBE_WAIT_NS, NULL, NULL, &vm->stopping,
                         &off, &rtt, &n) < 0) {
        snprintf(err, errlen, "node 0 answered none of %d clock probes", TSC_PROBES);
        return -ETIMEDOUT;
    }
    fprintf(stderr, "amalgam node %d: on another host than node 0: TSC offset %+lld cycles "
            "(+-%llu, best of %llu round trips)\n", vm->node, (long long)off,
            (unsigned long long)(rtt / 2), (unsigned long long)n);
    *offset = off;
    return 0;
}

/* One guest TSC for all nodes (see vm_set_tsc_reference): node 0 picks the
 * reference now and sends it with its host's boot id; the others wait for
 * it (the message thread runs meanwhile, so DSM requests from node 0's
 * running vCPUs are served). A node on another host (another boot id, or
 * AMALGAM_TSC_ESTIMATE=1) first estimates how far its TSC is from node
 * 0's and shifts the reference by that much. */
static int sync_tsc(struct vm *vm, char *err, size_t errlen)
{
    if (vm->node == 0) {
        uint64_t ref = __rdtsc(), tag = host_boot_tag();
        for (int n = 1; n < vm->nnodes; n++)
            if (ic_send(vm->cfg.ic, n, VM_T_TSC, ref, tag, NULL, 0) < 0) {
                snprintf(err, errlen, "cannot send the TSC reference to node %d", n);
                return -EIO;
            }
        return vm_set_tsc_reference(vm, ref, err, errlen);
    }
    uint64_t t0 = clock_now_ns();
    while (!atomic_load(&vm->tsc_ref_known)) {
        if (atomic_load(&vm->stopping))
            return 0; /* the run is over already; its reason is recorded */
        if (clock_now_ns() - t0 > TSC_WAIT_NS) {
            snprintf(err, errlen, "node 0 sent no TSC reference within %llu s",
                     TSC_WAIT_NS / 1000000000ULL);
            return -ETIMEDOUT;
        }
        usleep(1000);
    }
    int64_t offset = 0;
    uint64_t tag = host_boot_tag();
    if (!tag || tag != vm->tsc_ref_host || getenv("AMALGAM_TSC_ESTIMATE")) {
        int r = estimate_tsc_offset(vm, &offset, err, errlen);
        if (r < 0)
            return r;
    }
    /* Node 0's TSC is ours plus offset: its reference, in our TSC. */
    return vm_set_tsc_reference(vm, vm->tsc_ref - (uint64_t)offset, err, errlen);
}

int cluster_start(struct vm *vm, char *err, size_t errlen)
{
    vm->bus.fwd = (struct bus_forward_ops){vm, forward};
    if (start_device_thread(vm) < 0) {
        snprintf(err, errlen, "cannot start the node's device thread");
        return -EAGAIN;
    }
    vm->dsm = calloc(1, sizeof *vm->dsm);
    if (!vm->dsm)
        return -ENOMEM;
    uint64_t pages = vm->mem.size / DSM_PAGE_SIZE;
    int r = dsm_host_start(vm->dsm, vm->cfg.ic, vm->mem.fd, vm->mem.guest_view,
                           vm->mem.agent_view, pages, vm->cfg.dsm_cache / DSM_PAGE_SIZE,
                           home_of_page, vm);
    if (r < 0) {
        snprintf(err, errlen, "cannot attach the DSM to guest memory: %s", strerror(-r));
        return r;
    }
    dsm_set_push(&vm->dsm->eng, vm->cfg.dsm_push);
    if (!vm->dsm->continue_wp)
        fprintf(stderr, "amalgam node %d: this kernel cannot map a guest page read-only on a "
                "fault (needs Linux 6.4): every page this node touches is taken exclusive, "
                "which is slower where nodes share read-only data\n", vm->node);
    if (pthread_create(&vm->progress, NULL, progress, vm)) {
        snprintf(err, errlen, "cannot start the node's message thread");
        return -EAGAIN;
    }
    vm->progress_started = true;
    return sync_tsc(vm, err, errlen);
}

/* The guest-physical address of a DSM page. */
static uint64_t gpa_of_page(const struct vm *vm, uint64_t page)
{
    uint64_t off = page * DSM_PAGE_SIZE;
    return off < vm->mem.low_size ? off : GMEM_HIGH_BASE + (off - vm->mem.low_size);
}

/* "; hottest pages (gpa fetched/lost): ..." for the stats line: where a
 * slow workload's pages ping-pong. */
static int format_hot_pages(const struct vm *vm, char *buf, size_t len)
{
    struct dsm_hot_page hot[10];
    int n = dsm_hot_pages(&vm->dsm->eng, hot, 10), o = 0;
    if (!n || !len)
        return 0;
    o = snprintf(buf, len, "; hottest pages (gpa fetched/lost):");
    for (int i = 0; i < n && o > 0 && (size_t)o < len; i++)
        o += snprintf(buf + o, len - (size_t)o, " %#llx %u/%u",
                      (unsigned long long)gpa_of_page(vm, hot[i].page), hot[i].fetches,
                      hot[i].losses);
    return o > 0 && (size_t)o < len ? o : (int)len - 1;
}

/* One write per node, so that the nodes' lines do not interleave. */
static void print_stats(const struct vm *vm)
{
    const struct dsm_stats *s = &vm->dsm->eng.stats;
    char buf[4096];
    int o = snprintf(buf, sizeof buf,
                     "amalgam node %d: dsm: %llu read faults, %llu write faults (%llu upgrades), "
                     "%llu invalidations sent, %llu received, %llu recalls sent, %llu received, "
                     "%llu KiB moved, %llu evictions (%llu written back), %llu pages cached, "
                     "%llu userfaultfd events, %llu bad messages, %llu requests held (window "
                     "%.0f us), %llu pages pushed, %llu kept (%llu declined), read-only sharing %s; "
                     "fault service time in us:",
                     vm->node, (unsigned long long)s->read_faults,
                     (unsigned long long)s->write_faults, (unsigned long long)s->upgrades,
                     (unsigned long long)s->inv_sent, (unsigned long long)s->inv_received,
                     (unsigned long long)s->recalls_sent, (unsigned long long)s->recalls_received,
                     (unsigned long long)(s->bytes_moved >> 10),
                     (unsigned long long)s->evictions, (unsigned long long)s->writebacks,
                     (unsigned long long)vm->dsm->eng.cached,
                     (unsigned long long)vm->dsm->uffd_events,
                     (unsigned long long)atomic_load(&vm->bad_msgs),
                     (unsigned long long)s->holds, dsm_hold_base_ns(&vm->dsm->eng) / 1e3,
                     (unsigned long long)s->pushes_sent, (unsigned long long)s->pushes_kept,
                     (unsigned long long)s->pushes_declined,
                     vm->dsm->continue_wp ? "on" : "off (kernel before 6.4)");
    for (int b = 0; b < DSM_HIST_BUCKETS && o > 0 && (size_t)o < sizeof buf; b++)
        if (s->service_ns_log2[b])
            o += snprintf(buf + o, sizeof buf - (size_t)o, " [%.1f,%.1f):%llu",
                          (double)(1ULL << b) / 1e3, (double)(2ULL << b) / 1e3,
                          (unsigned long long)s->service_ns_log2[b]);
    o += format_hot_pages(vm, buf + o, o > 0 && (size_t)o < sizeof buf ? sizeof buf - (size_t)o : 0);
    if (o > 0 && (size_t)o < sizeof buf - 1) {
        buf[o++] = '\n';
        if (write(2, buf, (size_t)o) < 0) {
            /* stderr is gone: nothing better to do */
        }
    }
}

void cluster_stop(struct vm *vm)
{
    if (vm->progress_started)
        pthread_join(vm->progress, NULL);
    vm->progress_started = false;
    stop_device_thread(vm); /* after the loop: nothing queues accesses now */
    if (vm->dsm && vm->cfg.stats)
        print_stats(vm);
    if (vm->dsm) {
        dsm_host_stop(vm->dsm);
        free(vm->dsm);
        vm->dsm = NULL;
    }
}

void cluster_send_ipi(struct vm *vm, const struct apic_msg *m)
{
    bool to[IC_MAX_RANKS] = {false};
    if (m->shorthand == APIC_SH_SELF)
        return;
    bool physical = m->shorthand == APIC_SH_NONE && !m->dest_logical &&
                    m->dest != (m->x2apic ? APIC_BROADCAST_X2 : APIC_BROADCAST_XAPIC);
    if (physical) {
        /* APIC id = vCPU index: only the node that has it. */
        if (m->dest < (uint32_t)vm->nr_vcpus)
            to[vm->machine.vcpu_node[m->dest]] = true;
    } else {
        for (int n = 0; n < vm->nnodes; n++)
            to[n] = true; /* each node matches its own vCPUs' logical ids */
    }
    for (int n = 0; n < vm->nnodes; n++) {
        if (!to[n] || n == vm->node)
            continue;
        int e = ic_send(vm->cfg.ic, n, VM_T_IPI, 0, 0, m, sizeof *m);
        if (e < 0) { /* a lost IPI hangs the guest later, far from here */
            vm_fail(vm, "node %d: cannot send an interprocessor interrupt (vector %#x) to node "
                    "%d: %s", vm->node, m->vector, n, strerror(-e));
            return;
        }
    }
}

void cluster_forward_eoi(struct vm *vm, uint8_t vector)
{
    int owner = vm->bus.dev[vm->ioapic_dev].owner;
    if (ic_send(vm->cfg.ic, owner, VM_T_EOI, vector, 0, NULL, 0) < 0)
        vm_fail(vm, "node %d: cannot reach node %d to end a level-triggered interrupt",
                vm->node, owner);
}

void cluster_broadcast_stop(struct vm *vm)
{
    for (int n = 0; n < vm->nnodes; n++)
        if (n != vm->node)
            ic_send(vm->cfg.ic, n, VM_T_STOP, (uint64_t)vm->exit_reason,
                    (uint64_t)(vm->exit_status & 0xff), NULL, 0);
}
