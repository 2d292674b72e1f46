/* The whole machine from node 0's main thread, for the monitor: pause and
 * resume every node, ask every node for its status.
 *
 * Threads. Node 0's main thread asks (vm_pause_all, vm_query) and waits,
 * up to CTL_TIMEOUT_NS, for every node's answer; answers arrive on the
 * message loop, which hands them over under ctl->lock. A node pauses its
 * vCPUs on its main thread, never on its message loop: a vCPU being
 * paused may be waiting for a page that only the message loop can bring.
 * A node's status is built on its message loop, which owns the DSM
 * engine; node 0's own is built there too (ctl->self_query), not sent. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "clock/clock.h"
#include "dsm/host.h"
#include "proto/control.pb-c.h"
#include "vmm/cluster.h"
#include "vmm/control.h"
#include "vmm/event_loop.h"
#include "vmm/vm.h"

#define CTL_TIMEOUT_NS 10000000000ULL /* a node's pause or status answer */
#define PAUSE_TIMEOUT_NS 5000000000ULL
#define VCPUS_PER_PART 64

const char *const vm_dsm_counter_names[VM_DSM_COUNTERS] = {
    "read-faults", "write-faults", "upgrades", "invalidations-sent", "invalidations-received",
    "recalls-sent", "recalls-received", "bytes-moved", "evictions", "writebacks",
    "userfaultfd-events", "requests-held", "pages-pushed", "bad-messages",
};

enum { CTL_PAUSE = 1, CTL_RESUME = 2 };

struct vm_control {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* node 0: the operation in flight */
    uint64_t seq;
    int acks, ack_err;          /* pause/resume: ranks that answered, the first failure */
    bool acked[VM_STATUS_MAX_NODES];
    struct vm_status *st;       /* the query being filled */
    int next_part[VM_STATUS_MAX_NODES]; /* per node: the part expected; -1 done */
    int done_nodes;
    bool bad_answer;
    char why[160];
    _Atomic uint64_t self_query; /* seq<<8 | top for this node's loop; 0: none */
    /* every node: a pause/resume asked of this node's main thread */
    int efd;
    _Atomic uint64_t req;        /* seq<<2 | op; 0: none */
    _Atomic bool paused;
};

/* ---- a node's status, built on its message loop ---- */

static void fill_counters(const struct vm *vm, Amalgam__DsmCounters *c)
{
    struct dsm_host_report rep;
    dsm_host_report(vm->dsm, &rep);
    const struct dsm_stats *s = &rep.stats;
    c->read_faults = s->read_faults;
    c->write_faults = s->write_faults;
    c->upgrades = s->upgrades;
    c->invalidations_sent = s->inv_sent;
    c->invalidations_received = s->inv_received;
    c->recalls_sent = s->recalls_sent;
    c->recalls_received = s->recalls_received;
    c->bytes_moved = s->bytes_moved;
    c->evictions = s->evictions;
    c->writebacks = s->writebacks;
    c->userfaultfd_events = rep.uffd_events;
    c->requests_held = s->holds;
    c->hold_window_ns = rep.hold_window_ns;
    c->pages_pushed = s->pushes_sent;
    c->bad_messages = atomic_load(&vm->bad_msgs);
}

/* From the first byte of a node's first range to the end of its last (the
 * PCI hole may split it in two). */
static void home_span(const struct vm *vm, int node, uint64_t *start, uint64_t *end)
{
    int n = vm->machine.node_nr_ranges[node];
    const struct numa_range *r = vm->machine.node_ranges[node];
    *start = n ? r[0].start : 0;
    *end = n ? r[n - 1].start + r[n - 1].size : 0;
}

/* This node's own fields: part 0. */
static void fill_node(struct vm *vm, unsigned top, Amalgam__NodeStatus *m,
                      Amalgam__DsmCounters *c, Amalgam__HotPage *hp, Amalgam__HotPage **hpp,
                      uint64_t *rtt, char *host, size_t hostlen)
{
    m->rank = (uint32_t)vm->node;
    gethostname(host, hostlen);
    host[hostlen - 1] = 0;
    m->host = host;
    m->pid = getpid();
    m->fabric = (char *)ic_provider_name(vm->cfg.ic);
    home_span(vm, vm->node, &m->home_start, &m->home_end);
    uint64_t home = 0;
    for (int i = 0; i < vm->machine.node_nr_ranges[vm->node]; i++)
        home += vm->machine.node_ranges[vm->node][i].size;
    struct dsm_host_report rep;
    dsm_host_report(vm->dsm, &rep);
    m->cached_bytes = rep.cached * DSM_PAGE_SIZE;
    m->resident_bytes = home + m->cached_bytes;
    fill_counters(vm, c);
    m->dsm = c;
    struct dsm_hot_page hot[VM_STATUS_MAX_HOT];
    /* Only a query that wants hot pages starts a new window: the others
     * (query-cpus-fast, query-nodes) leave it to the next query-dsm. */
    int n = top ? dsm_host_hot_window(vm->dsm, hot, (int)top, &m->window_ns) : 0;
    for (int i = 0; i < n; i++) {
        amalgam__hot_page__init(&hp[i]);
        hp[i].gpa = gmem_gpa(&vm->mem, hot[i].page * DSM_PAGE_SIZE);
        hp[i].fetched = hot[i].fetches;
        hp[i].lost = hot[i].losses;
        hpp[i] = &hp[i];
    }
    m->n_hot = n > 0 ? (size_t)n : 0;
    m->hot = hpp;
    for (int p = 0; p < vm->nnodes; p++) {
        int64_t off;
        uint64_t samples;
        rtt[p] = 0;
        if (p == vm->node)
            continue;
        if (ic_clock_offset(vm->cfg.ic, p, &off, &rtt[p], &samples) < 0)
            rtt[p] = 0;
        ic_clock_probe(vm->cfg.ic, p); /* the next query sees a fresh round trip */
    }
    m->n_rtt_ns = (size_t)vm->nnodes;
    m->rtt_ns = rtt;
    m->paused = atomic_load(&vm->ctl->paused);
}

static void fill_vcpu(struct vm *vm, struct vcpu *v, Amalgam__VcpuStatus *s)
{
    amalgam__vcpu_status__init(s);
    s->index = (uint32_t)v->id;
    s->tid = atomic_load(&v->tid);
    pthread_mutex_lock(&v->lock);
    s->state = (uint32_t)v->sm.state;
    pthread_mutex_unlock(&v->lock);
    if (atomic_load(&vm->ctl->paused) && s->state != VCPU_GONE)
        s->state = VCPU_PAUSED;
    s->exits = atomic_load(&v->exits);
    s->remote_faults = dsm_host_thread_faults(vm->dsm, s->tid);
}

/* Packs m and hands it to deliver (node 0's own answer) or sends it. */
static void emit(struct vm *vm, uint64_t seq, Amalgam__NodeStatus *m)
{
    uint8_t buf[IC_MAX_PAYLOAD];
    size_t len = amalgam__node_status__get_packed_size(m);
    if (len > sizeof buf)
        return; /* cannot happen with the part sizes used; node 0 times out */
    amalgam__node_status__pack(m, buf);
    if (vm->node == 0)
        control_take_status(vm, 0, seq, buf, len);
    else
        ic_send(vm->cfg.ic, 0, VM_T_STATUS, seq, 0, buf, (uint32_t)len);
}

static void answer_query(struct vm *vm, uint64_t seq, unsigned top)
{
    Amalgam__NodeStatus m = AMALGAM__NODE_STATUS__INIT;
    Amalgam__DsmCounters c = AMALGAM__DSM_COUNTERS__INIT;
    Amalgam__HotPage hp[VM_STATUS_MAX_HOT], *hpp[VM_STATUS_MAX_HOT];
    uint64_t rtt[VM_STATUS_MAX_NODES];
    char host[64];
    if (top > VM_STATUS_MAX_HOT)
        top = VM_STATUS_MAX_HOT;
    m.version = 1;
    fill_node(vm, top, &m, &c, hp, hpp, rtt, host, sizeof host);
    int local[VMM_MAX_VCPUS], nl = 0;
    for (int i = 0; i < vm->nr_vcpus; i++)
        if (vm->vcpus[i].local)
            local[nl++] = i;
    m.last = nl == 0;
    emit(vm, seq, &m);
    for (int at = 0, part = 1; at < nl; part++) {
        Amalgam__NodeStatus p = AMALGAM__NODE_STATUS__INIT;
        Amalgam__VcpuStatus vs[VCPUS_PER_PART], *vsp[VCPUS_PER_PART];
        p.version = 1;
        p.rank = (uint32_t)vm->node;
        p.part = (uint32_t)part;
        int n = 0;
        for (; n < VCPUS_PER_PART && at < nl; n++, at++) {
            fill_vcpu(vm, &vm->vcpus[local[at]], &vs[n]);
            vsp[n] = &vs[n];
        }
        p.n_vcpus = (size_t)n;
        p.vcpus = vsp;
        p.last = at == nl;
        emit(vm, seq, &p);
    }
}

/* ---- node 0: collecting answers ---- */

static void bad(struct vm_control *c, const char *fmt, int a, int b)
{
    if (!c->bad_answer)
        snprintf(c->why, sizeof c->why, fmt, a, b);
    c->bad_answer = true;
}

/* Printable ASCII only: the names go into JSON, which wants UTF-8, and
 * onto a terminal. */
static bool str_ok(const char *s, size_t max)
{
    if (!s || strnlen(s, max) >= max)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

/* Merges part m of rank's answer into ctl->st; under ctl->lock. */
static void merge(struct vm *vm, int rank, const Amalgam__NodeStatus *m)
{
    struct vm_control *c = vm->ctl;
    struct vm_status *st = c->st;
    if (m->version != 1 || (int)m->rank != rank || (int)m->part != c->next_part[rank])
        return bad(c, "node %d sent an answer out of order (part %d)", rank, (int)m->part);
    struct vm_status_node *n = &st->node[rank];
    if (m->part == 0) {
        if (!str_ok(m->host, sizeof n->host) || !str_ok(m->fabric, sizeof n->fabric) ||
            m->n_hot > VM_STATUS_MAX_HOT || m->n_rtt_ns > (size_t)vm->nnodes || !m->dsm ||
            m->home_end < m->home_start)
            return bad(c, "node %d sent a malformed status (%d)", rank, 0);
        n->rank = rank;
        snprintf(n->host, sizeof n->host, "%s", m->host);
        snprintf(n->fabric, sizeof n->fabric, "%s", m->fabric);
        n->pid = m->pid;
        n->home_start = m->home_start;
        n->home_end = m->home_end;
        n->resident = m->resident_bytes;
        n->cached = m->cached_bytes;
        for (size_t p = 0; p < m->n_rtt_ns; p++)
            n->rtt_ns[p] = m->rtt_ns[p];
        const Amalgam__DsmCounters *d = m->dsm;
        uint64_t v[VM_DSM_COUNTERS] = {
            d->read_faults, d->write_faults, d->upgrades, d->invalidations_sent,
            d->invalidations_received, d->recalls_sent, d->recalls_received, d->bytes_moved,
            d->evictions, d->writebacks, d->userfaultfd_events, d->requests_held,
            d->pages_pushed, d->bad_messages};
        memcpy(n->dsm, v, sizeof v);
        n->hold_window_ns = d->hold_window_ns;
        n->nhot = (int)m->n_hot;
        for (size_t h = 0; h < m->n_hot; h++) {
            n->hot[h].gpa = m->hot[h]->gpa;
            n->hot[h].fetched = m->hot[h]->fetched;
            n->hot[h].lost = m->hot[h]->lost;
        }
        n->window_ns = m->window_ns;
        n->paused = m->paused;
    }
    if (m->n_vcpus > VCPUS_PER_PART)
        return bad(c, "node %d sent %d vCPUs in one part", rank, (int)m->n_vcpus);
    for (size_t i = 0; i < m->n_vcpus; i++) {
        const Amalgam__VcpuStatus *s = m->vcpus[i];
        if (s->index >= (uint32_t)vm->nr_vcpus || s->state >= VCPU_STATE_COUNT ||
            st->vcpu[s->index].node >= 0)
            return bad(c, "node %d reported vCPU %d, which does not exist or came twice",
                       rank, (int)s->index);
        struct vm_status_vcpu *v = &st->vcpu[s->index];
        v->index = (int)s->index;
        v->node = rank;
        v->tid = s->tid;
        v->state = vcpu_state_name((enum vcpu_run_state)s->state);
        v->exits = s->exits;
        v->remote_faults = s->remote_faults;
    }
    c->next_part[rank] = m->last ? -1 : c->next_part[rank] + 1;
    if (m->last)
        c->done_nodes++;
}

void control_take_status(struct vm *vm, int rank, uint64_t seq, const void *buf, size_t len)
{
    struct vm_control *c = vm->ctl;
    Amalgam__NodeStatus *m = amalgam__node_status__unpack(NULL, len, buf);
    pthread_mutex_lock(&c->lock);
    if (seq != c->seq || !c->st || rank < 0 || rank >= vm->nnodes || c->next_part[rank] < 0) {
        pthread_mutex_unlock(&c->lock); /* late: an answer to a query given up on */
    } else {
        if (!m)
            bad(c, "node %d sent a status that does not decode (%d bytes)", rank, (int)len);
        else
            merge(vm, rank, m);
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
    }
    if (m)
        amalgam__node_status__free_unpacked(m, NULL);
}

static void on_status(void *ctx, const struct ic_hdr *h, const void *payload)
{
    struct vm *vm = ctx;
    if (vm->node != 0)
        return cluster_bad_message(vm, h, "a status answer reached a node other than 0");
    control_take_status(vm, h->src_rank, h->arg0, payload, h->payload_len);
}

static void on_query(void *ctx, const struct ic_hdr *h, const void *payload)
{
    struct vm *vm = ctx;
    (void)payload;
    if (h->src_rank != 0)
        return cluster_bad_message(vm, h, "a status query from a node other than 0");
    answer_query(vm, h->arg0, (unsigned)(h->arg1 > VM_STATUS_MAX_HOT ? VM_STATUS_MAX_HOT : h->arg1));
}

void control_poll(struct vm *vm)
{
    uint64_t q = atomic_exchange(&vm->ctl->self_query, 0);
    if (q)
        answer_query(vm, q >> 8, (unsigned)(q & 0xff));
}

/* Waits (ctl->lock held) until done() or the time-out; false on time-out. */
static bool wait_until(struct vm *vm, bool (*done)(struct vm_control *, int), uint64_t deadline)
{
    struct vm_control *c = vm->ctl;
    while (!done(c, vm->nnodes) && !c->bad_answer && !atomic_load(&vm->stopping)) {
        if (clock_now_ns() > deadline)
            return false;
        struct timespec ts = clock_realtime_after(10000000ULL);
        pthread_cond_timedwait(&c->cond, &c->lock, &ts);
    }
    return done(c, vm->nnodes);
}

static bool all_answered(struct vm_control *c, int nnodes)
{
    return c->done_nodes == nnodes;
}

static bool all_acked(struct vm_control *c, int nnodes)
{
    return c->acks == nnodes - 1;
}

int vm_query(struct vm *vm, unsigned top, struct vm_status *st, char *err, size_t n)
{
    struct vm_control *c = vm->ctl;
    memset(st, 0, sizeof *st);
    st->nnodes = vm->nnodes;
    st->nr_vcpus = vm->nr_vcpus;
    st->running = !atomic_load(&c->paused);
    for (int i = 0; i < vm->nr_vcpus; i++)
        st->vcpu[i] = (struct vm_status_vcpu){i, -1, 0, "unknown", 0, 0};
    if (top > VM_STATUS_MAX_HOT)
        top = VM_STATUS_MAX_HOT;
    if (!vm->cfg.ic) { /* one node, no DSM: the vCPUs only */
        snprintf(st->node[0].host, sizeof st->node[0].host, "%s", "localhost");
        gethostname(st->node[0].host, sizeof st->node[0].host - 1);
        st->node[0].pid = getpid();
        snprintf(st->node[0].fabric, sizeof st->node[0].fabric, "none");
        home_span(vm, 0, &st->node[0].home_start, &st->node[0].home_end);
        st->node[0].resident = vm->mem.size;
        st->node[0].paused = !st->running;
        for (int i = 0; i < vm->nr_vcpus; i++) {
            struct vcpu *v = &vm->vcpus[i];
            pthread_mutex_lock(&v->lock);
            enum vcpu_run_state s = v->sm.state;
            pthread_mutex_unlock(&v->lock);
            st->vcpu[i] = (struct vm_status_vcpu){i, 0, atomic_load(&v->tid),
                vcpu_state_name(st->running ? s : VCPU_PAUSED), atomic_load(&v->exits), 0};
        }
        return 0;
    }
    pthread_mutex_lock(&c->lock);
    uint64_t seq = ++c->seq;
    c->st = st;
    c->done_nodes = 0;
    c->bad_answer = false;
    for (int r = 0; r < vm->nnodes; r++)
        c->next_part[r] = 0;
    pthread_mutex_unlock(&c->lock);
    for (int r = 1; r < vm->nnodes; r++)
        ic_send(vm->cfg.ic, r, VM_T_QUERY, seq, top, NULL, 0);
    atomic_store(&c->self_query, seq << 8 | top);
    pthread_mutex_lock(&c->lock);
    bool ok = wait_until(vm, all_answered, clock_now_ns() + CTL_TIMEOUT_NS);
    int missing = -1;
    for (int r = 0; r < vm->nnodes && missing < 0; r++)
        if (c->next_part[r] >= 0)
            missing = r;
    c->st = NULL;
    c->seq++; /* late answers to this query are dropped */
    bool badans = c->bad_answer;
    pthread_mutex_unlock(&c->lock);
    if (badans) {
        snprintf(err, n, "%s", c->why);
        return -EPROTO;
    }
    if (!ok) {
        snprintf(err, n, "node %d did not answer the status query within %llu s", missing,
                 (unsigned long long)(CTL_TIMEOUT_NS / 1000000000ULL));
        return -ETIMEDOUT;
    }
    return 0;
}

/* ---- pause and resume ---- */

static int local_op(struct vm *vm, int op)
{
    if (op == CTL_RESUME) {
        vm_resume(vm);
        return 0;
    }
    return vm_pause(vm, PAUSE_TIMEOUT_NS);
}

/* A node's main thread: the pause or resume node 0 asked for. */
static void on_request_ready(void *ctx, int fd, uint32_t events)
{
    struct vm *vm = ctx;
    uint64_t n;
    (void)events;
    if (read(fd, &n, sizeof n) < 0)
        return;
    uint64_t req = atomic_exchange(&vm->ctl->req, 0);
    if (!req)
        return;
    int op = (int)(req & 3);
    int r = local_op(vm, op);
    if (r == 0)
        atomic_store(&vm->ctl->paused, op == CTL_PAUSE);
    ic_send(vm->cfg.ic, 0, VM_T_CTL_ACK, req >> 2, (uint64_t)(uint32_t)-r, NULL, 0);
}

static void on_ctl(void *ctx, const struct ic_hdr *h, const void *payload)
{
    struct vm *vm = ctx;
    (void)payload;
    if (h->src_rank != 0 || vm->node == 0 || (h->arg0 != CTL_PAUSE && h->arg0 != CTL_RESUME))
        return cluster_bad_message(vm, h, "a pause or resume request that is not one");
    atomic_store(&vm->ctl->req, h->arg1 << 2 | h->arg0);
    uint64_t one = 1;
    if (write(vm->ctl->efd, &one, sizeof one) < 0) {
        /* the counter cannot overflow here; nothing else can fail */
    }
}

static void on_ctl_ack(void *ctx, const struct ic_hdr *h, const void *payload)
{
    struct vm *vm = ctx;
    struct vm_control *c = vm->ctl;
    (void)payload;
    if (vm->node != 0)
        return cluster_bad_message(vm, h, "a pause or resume answer reached a node other than 0");
    if (h->src_rank == 0 || h->src_rank >= vm->nnodes || h->arg1 > 4095)
        return cluster_bad_message(vm, h, "a pause or resume answer that is not one");
    pthread_mutex_lock(&c->lock);
    if (h->arg0 == c->seq && !c->acked[h->src_rank]) { /* a repeat counts once */
        c->acked[h->src_rank] = true;
        c->acks++;
        if (h->arg1 && !c->ack_err)
            c->ack_err = -(int)h->arg1;
        pthread_cond_broadcast(&c->cond);
    }
    pthread_mutex_unlock(&c->lock);
}

/* Sends op to every other node and does it here; waits for all. */
static int all_nodes(struct vm *vm, int op, char *err, size_t n)
{
    struct vm_control *c = vm->ctl;
    pthread_mutex_lock(&c->lock);
    uint64_t seq = ++c->seq;
    c->acks = 0;
    c->ack_err = 0;
    c->bad_answer = false;
    memset(c->acked, 0, sizeof c->acked);
    pthread_mutex_unlock(&c->lock);
    for (int r = 1; r < vm->nnodes; r++) {
        int e = ic_send(vm->cfg.ic, r, VM_T_CTL, op, seq, NULL, 0);
        if (e < 0) { /* no point waiting for an answer that cannot come */
            snprintf(err, n, "node %d cannot be reached: %s", r, strerror(-e));
            return e;
        }
    }
    int here = local_op(vm, op);
    pthread_mutex_lock(&c->lock);
    bool ok = vm->nnodes == 1 || wait_until(vm, all_acked, clock_now_ns() + CTL_TIMEOUT_NS);
    int remote = c->ack_err;
    c->seq++;
    pthread_mutex_unlock(&c->lock);
    if (here < 0 || remote < 0 || !ok) {
        snprintf(err, n, "%s did not %s: %s", here < 0 ? "node 0" : "a node",
                 op == CTL_PAUSE ? "pause" : "resume",
                 !ok ? "no answer within 10 s" : strerror(here < 0 ? -here : -remote));
        return here < 0 ? here : remote < 0 ? remote : -ETIMEDOUT;
    }
    return 0;
}

int vm_pause_all(struct vm *vm, char *err, size_t n)
{
    if (atomic_load(&vm->ctl->paused))
        return 0;
    int r = all_nodes(vm, CTL_PAUSE, err, n);
    if (r < 0) {
        char why[128];
        if (all_nodes(vm, CTL_RESUME, why, sizeof why) < 0) { /* nothing stays half paused */
            size_t l = strlen(err);
            snprintf(err + l, n - l, "; undoing the pause failed too (%s): some vCPUs may "
                     "stay paused, try cont", why);
            atomic_store(&vm->ctl->paused, true); /* so that cont is not a no-op */
        }
        return r;
    }
    atomic_store(&vm->ctl->paused, true);
    return 1;
}

int vm_resume_all(struct vm *vm, char *err, size_t n)
{
    if (!atomic_load(&vm->ctl->paused))
        return 0;
    int r = all_nodes(vm, CTL_RESUME, err, n);
    if (r < 0)
        return r;
    atomic_store(&vm->ctl->paused, false);
    return 1;
}

bool vm_running(const struct vm *vm)
{
    return !atomic_load(&vm->ctl->paused);
}

void vm_quit(struct vm *vm)
{
    vm_stop(vm, VM_EXIT_QUIT, 0);
}

/* ---- set-up ---- */

int control_register_types(struct ic_types *t)
{
    int r = ic_types_add(t, VM_T_CTL, 0, 0);
    r = r ?: ic_types_add(t, VM_T_CTL_ACK, 0, 0);
    r = r ?: ic_types_add(t, VM_T_QUERY, 0, 0);
    return r ?: ic_types_add(t, VM_T_STATUS, 1, IC_MAX_PAYLOAD);
}

void control_probe_peers(struct vm *vm)
{
    for (int p = 0; p < vm->nnodes; p++)
        if (p != vm->node)
            ic_clock_probe(vm->cfg.ic, p);
}

int control_attach(struct vm *vm)
{
    struct ic *ic = vm->cfg.ic;
    int r = ic_on(ic, VM_T_CTL, VM_T_CTL, on_ctl, vm);
    r = r ?: ic_on(ic, VM_T_CTL_ACK, VM_T_CTL_ACK, on_ctl_ack, vm);
    r = r ?: ic_on(ic, VM_T_QUERY, VM_T_QUERY, on_query, vm);
    return r ?: ic_on(ic, VM_T_STATUS, VM_T_STATUS, on_status, vm);
}

int control_init(struct vm *vm)
{
    struct vm_control *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    c->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->efd < 0) {
        free(c);
        return -errno;
    }
    vm->ctl = c;
    return 0;
}

int control_watch(struct vm *vm, struct event_loop *loop)
{
    return event_loop_add(loop, vm->ctl->efd, EPOLLIN, on_request_ready, vm);
}

void control_free(struct vm *vm)
{
    struct vm_control *c = vm->ctl;
    if (!c)
        return;
    close(c->efd);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    free(c);
    vm->ctl = NULL;
}
