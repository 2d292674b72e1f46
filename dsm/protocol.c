/* The DSM coherence engine (see dsm.h): the cache side of every node and
 * the directory side of each page's home.
 *
 * A blocking directory: the home accepts one request per page at a time
 * and holds the page busy until the requester's Unblock. Because of that,
 * a cache never sees an invalidation or recall while its own request on the
 * page is between "data sent" and "data installed", which removes most of
 * the transient-state races of a non-blocking directory. What remains: a
 * sharer that asked to upgrade (SM) can be invalidated first by another
 * writer's transaction; it then waits as IM and the home, which no longer
 * counts it as a sharer, sends it the data instead of a grant.
 *
 * Eviction (a bounded cache): a clean copy is dropped silently, so the
 * home's sharer set may name nodes that no longer hold the page. Hence a
 * GetM says whether the requester still holds a copy (only then a grant
 * without data will do), and an invalidation of a copy already dropped is
 * simply acknowledged. A dirty copy goes home with PutM and stays
 * answerable (MI: unmapped, data kept) until the home's PutAck, because a
 * recall may have crossed it; a PutM reaching a busy home waits for the
 * transaction to end. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dsm/dsm.h"

enum cstate { C_I, C_S, C_M, C_IS, C_IM, C_SM, C_MI };
enum dstate { D_S, D_M }; /* D_S with no sharers = only the home's memory */

struct dsm_dir {
    /* since: when the current transaction started, and from its Unblock
     * on, when the holders got the page (the start of their hold window).
     * revoked: the nodes the last revoking transaction took the page from,
     * at revoked_at. */
    uint64_t since, revoked_at, revoked;
    uint64_t sharers;
    uint64_t want_s, want_m; /* queued requests: one per node at most */
    uint64_t want_m_copy;    /* ... of those GetMs, which said "I hold S" */
    uint64_t want_put;       /* PutMs that arrived while busy */
    uint8_t state, owner, busy, req, kind, acks, wb, recall_mode, req_copy;
    uint8_t held;      /* a request waits for the hold window to end */
    uint8_t hold_log2; /* this page's window: the base one times 2^hold_log2 */
    uint8_t push;      /* the transaction is a push (batching) */
};

static uint64_t bit(int n) { return 1ULL << n; }

int dsm_node_init(struct dsm_node *n, int self, int nnodes, uint64_t npages,
                  int (*home_of)(void *hctx, uint64_t page), void *hctx,
                  const struct dsm_ops *ops)
{
    memset(n, 0, sizeof *n);
    if (nnodes < 1 || nnodes > DSM_MAX_NODES || self < 0 || self >= nnodes)
        return -EINVAL;
    n->self = self;
    n->nnodes = nnodes;
    n->npages = npages;
    n->home_of = home_of;
    n->hctx = hctx;
    n->ops = *ops;
    n->cache = calloc(npages, 1);
    n->fault_t0 = calloc(npages, sizeof *n->fault_t0);
    n->dir = calloc(npages, sizeof *n->dir);
    n->ring = calloc(npages, sizeof *n->ring);
    n->in_ring = calloc(npages, 1);
    n->scratch = malloc(DSM_PAGE_SIZE);
    n->held = calloc(npages, sizeof *n->held);
    n->fetches = calloc(npages, sizeof *n->fetches);
    n->losses = calloc(npages, sizeof *n->losses);
    n->hold_min_ns = DSM_HOLD_MIN_NS;
    n->hold_max_ns = DSM_HOLD_MAX_NS;
    if (!n->cache || !n->fault_t0 || !n->dir || !n->ring || !n->in_ring || !n->scratch ||
        !n->held || !n->fetches || !n->losses) {
        dsm_node_free(n);
        return -ENOMEM;
    }
    for (uint64_t p = 0; p < npages; p++) {
        if (home_of(hctx, p) != self)
            continue;
        n->cache[p] = C_M;
        n->dir[p].state = D_M;
        n->dir[p].owner = (uint8_t)self;
    }
    return 0;
}

void dsm_node_free(struct dsm_node *n)
{
    free(n->cache);
    free(n->fault_t0);
    free(n->dir);
    free(n->ring);
    free(n->in_ring);
    free(n->scratch);
    free(n->held);
    free(n->fetches);
    free(n->losses);
    n->held = NULL;
    n->fetches = n->losses = NULL;
    n->scratch = NULL;
    n->cache = NULL;
    n->fault_t0 = NULL;
    n->dir = NULL;
    n->ring = NULL;
    n->in_ring = NULL;
}

void dsm_set_cache_limit(struct dsm_node *n, uint64_t pages)
{
    n->cache_limit = pages;
}

void dsm_set_hold(struct dsm_node *n, uint64_t min_ns, uint64_t max_ns)
{
    n->hold_min_ns = min_ns;
    n->hold_max_ns = max_ns < min_ns ? min_ns : max_ns;
}

void dsm_set_pull(struct dsm_node *n, bool on)
{
    n->pull = on;
}

void dsm_set_push(struct dsm_node *n, unsigned pages)
{
    n->push = pages > DSM_PUSH_MAX ? DSM_PUSH_MAX : pages;
}

int dsm_hot_pages(const struct dsm_node *n, struct dsm_hot_page *out, int k)
{
    int have = 0;
    k = k < 0 ? 0 : k > 64 ? 64 : k;
    for (uint64_t p = 0; p < n->npages; p++) {
        uint64_t heat = (uint64_t)n->fetches[p] + n->losses[p];
        if (!heat || (have == k && heat <= (uint64_t)out[k - 1].fetches + out[k - 1].losses))
            continue;
        int i = have < k ? have++ : k - 1; /* insert, dropping the coolest */
        for (; i > 0 && (uint64_t)out[i - 1].fetches + out[i - 1].losses < heat; i--)
            out[i] = out[i - 1];
        out[i] = (struct dsm_hot_page){p, n->fetches[p], n->losses[p]};
    }
    return have;
}

enum dsm_prot dsm_access(const struct dsm_node *n, uint64_t page)
{
    switch (n->cache[page]) {
    case C_M: return DSM_PROT_WRITE;
    case C_S: case C_SM: return DSM_PROT_READ;
    default: return DSM_PROT_NONE;
    }
}

bool dsm_quiescent(const struct dsm_node *n)
{
    for (uint64_t p = 0; p < n->npages; p++)
        if (n->cache[p] >= C_IS || n->dir[p].busy || n->dir[p].want_s || n->dir[p].want_m ||
            n->dir[p].want_put)
            return false;
    return true;
}

enum { NO_DATA, WITH_DATA };

/* with_data: the message carries this node's copy of the page. To itself
 * it carries only the marker (see dsm_ops.send): the home's data is its
 * memory already. */
static int send(struct dsm_node *n, int dst, uint8_t type, uint8_t mode, uint64_t page,
                int with_data)
{
    struct dsm_msg m = {.type = type, .mode = mode, .src = (uint16_t)n->self, .page = page};
    const void *payload = NULL;
    if (type == DSM_DATA && dst != n->self && n->pull) {
        m.type = DSM_DATA_PULL; /* the requester reads it from our memory */
    } else if (with_data && dst == n->self) {
        payload = n->scratch;
    } else if (with_data) {
        payload = n->ops.page_read(n->ops.ctx, page, n->scratch);
        n->stats.bytes_moved += DSM_PAGE_SIZE;
    }
    return n->ops.send(n->ops.ctx, dst, &m, payload);
}

/* ---- cache side --------------------------------------------------------- */

static bool holds_copy(uint8_t st)
{
    return st == C_S || st == C_M || st == C_SM || st == C_MI;
}

/* Every cache-state change goes through here, so that the count of copies
 * of other nodes' pages stays exact and a copy given up is freed. The
 * caller has sent whatever data the copy still owed. */
static void set_cstate(struct dsm_node *n, uint64_t page, uint8_t st)
{
    uint8_t old = n->cache[page];
    n->cache[page] = st;
    if (n->home_of(n->hctx, page) == n->self || holds_copy(old) == holds_copy(st))
        return;
    if (holds_copy(st)) {
        n->cached++;
        if (!n->in_ring[page]) {
            n->in_ring[page] = 1;
            n->ring[(n->ring_head + n->ring_count++) % n->npages] = page;
        }
    } else {
        n->cached--;
        if (n->ops.drop)
            n->ops.drop(n->ops.ctx, page);
    }
}

static void bump(uint32_t *c)
{
    if (*c != UINT32_MAX)
        (*c)++;
}

static int request(struct dsm_node *n, uint64_t page, uint8_t next, uint8_t type)
{
    uint8_t had = n->cache[page];
    bump(&n->fetches[page]);
    set_cstate(n, page, next);
    n->fault_t0[page] = n->ops.now_ns(n->ops.ctx);
    send(n, n->home_of(n->hctx, page), type, had == C_S ? DSM_MODE_S : DSM_MODE_I, page, NO_DATA);
    return 1;
}

int dsm_fault(struct dsm_node *n, uint64_t page, bool write)
{
    if (page >= n->npages)
        return -EINVAL;
    uint8_t st = n->cache[page];
    if (st >= C_IS)
        return st == C_SM && !write ? 0 : 1; /* one request in flight per page */
    if (!write)
        return st == C_I ? (n->stats.read_faults++, request(n, page, C_IS, DSM_GETS)) : 0;
    if (st == C_M)
        return 0;
    n->stats.write_faults++;
    if (st == C_S)
        n->stats.upgrades++;
    return request(n, page, st == C_S ? C_SM : C_IM, DSM_GETM);
}

static void set_map(struct dsm_node *n, uint64_t page, enum dsm_prot prot)
{
    if (n->ops.map(n->ops.ctx, page, prot) < 0)
        n->stats.map_errors++;
}

/* Makes room for one more copy: the oldest stable copy other than `keep`
 * goes. Pages in transit are passed over (and stay in the ring). */
static void evict_one(struct dsm_node *n, uint64_t keep)
{
    for (uint64_t k = n->ring_count; k > 0; k--) {
        uint64_t p = n->ring[n->ring_head];
        n->ring_head = (n->ring_head + 1) % n->npages;
        n->ring_count--;
        uint8_t st = n->cache[p];
        if (p == keep || st == C_SM || st == C_MI) {
            n->ring[(n->ring_head + n->ring_count++) % n->npages] = p;
            continue;
        }
        n->in_ring[p] = 0;
        if (st != C_S && st != C_M)
            continue; /* already gone; it rejoins the ring when installed */
        set_map(n, p, DSM_PROT_NONE);
        n->stats.evictions++;
        if (st == C_S) {
            set_cstate(n, p, C_I);
        } else {
            n->stats.writebacks++;
            set_cstate(n, p, C_MI); /* still holds the data: not freed yet */
            n->writing_back++;
            send(n, n->home_of(n->hctx, p), DSM_PUTM, 0, p, WITH_DATA);
        }
        return;
    }
}

static void make_room(struct dsm_node *n, uint64_t keep)
{
    uint64_t stable = n->ring_count;
    while (n->cache_limit && n->cached - n->writing_back > n->cache_limit && stable--)
        evict_one(n, keep);
}

static void completed(struct dsm_node *n, uint64_t page, uint8_t state, enum dsm_prot prot)
{
    set_map(n, page, prot);
    set_cstate(n, page, state);
    uint64_t dt = n->ops.now_ns(n->ops.ctx) - n->fault_t0[page];
    int b = dt ? 63 - __builtin_clzll(dt) : 0;
    n->stats.service_ns_log2[b < DSM_HIST_BUCKETS ? b : DSM_HIST_BUCKETS - 1]++;
    send(n, n->home_of(n->hctx, page), DSM_UNBLOCK, 0, page, NO_DATA);
    n->ops.wake(n->ops.ctx, page);
    make_room(n, page);
}

static void install(struct dsm_node *n, int from, uint64_t page, const void *payload)
{
    if (from != n->self) /* at home, the data is our own memory already */
        n->ops.page_write(n->ops.ctx, page, payload);
}

static int cache_msg(struct dsm_node *n, int from, const struct dsm_msg *m, const void *payload)
{
    uint64_t p = m->page;
    uint8_t st = n->cache[p];
    switch (m->type) {
    case DSM_DATA:
    case DSM_DATA_PULL: {
        bool s = m->mode == DSM_MODE_S && st == C_IS;
        if (!s && !(m->mode == DSM_MODE_M && (st == C_IM || st == C_SM)))
            return -EPROTO;
        if (m->type == DSM_DATA) {
            install(n, from, p, payload);
        } else if (!n->ops.pull || from == n->self) {
            return -EPROTO;
        } else if (n->ops.pull(n->ops.ctx, from, p) < 0) {
            n->stats.pull_errors++; /* the host stops the node: see dsm_ops.pull */
            return 0;
        } else {
            n->stats.pulls++;
            n->stats.bytes_moved += DSM_PAGE_SIZE;
        }
        completed(n, p, s ? C_S : C_M, s ? DSM_PROT_READ : DSM_PROT_WRITE);
        return 0;
    }
    case DSM_GRANT:
        if (st != C_SM)
            return -EPROTO;
        completed(n, p, C_M, DSM_PROT_WRITE);
        return 0;
    case DSM_INV:
        if (st == C_M)
            return -EPROTO; /* the home sends INV to sharers only */
        /* Acknowledge only once the mapping is gone. A copy dropped since
         * the home listed us (evicted, IS/IM/MI) is acknowledged as is. */
        if (st == C_S || st == C_SM) {
            bump(&n->losses[p]);
            set_map(n, p, DSM_PROT_NONE);
            set_cstate(n, p, st == C_S ? C_I : C_IM);
        }
        n->stats.inv_received++;
        send(n, from, DSM_INV_ACK, 0, p, NO_DATA);
        return 0;
    case DSM_RECALL:
        if ((st != C_M && st != C_MI) || (m->mode != DSM_MODE_S && m->mode != DSM_MODE_I))
            return -EPROTO;
        n->stats.recalls_received++;
        bump(&n->losses[p]);
        if (st == C_MI) { /* crossed our PutM: answer it, the PutAck frees */
            send(n, from, DSM_WB_DATA, 0, p, WITH_DATA);
            return 0;
        }
        set_map(n, p, m->mode == DSM_MODE_S ? DSM_PROT_READ : DSM_PROT_NONE);
        send(n, from, DSM_WB_DATA, 0, p, WITH_DATA);
        set_cstate(n, p, m->mode == DSM_MODE_S ? C_S : C_I);
        return 0;
    case DSM_PUSH:
        if (m->mode != DSM_MODE_S)
            return -EPROTO;
        if (st != C_I) {
            /* We asked for it meanwhile (our request waits at the home
             * behind this push) or are writing our copy back: not ours to
             * take now. */
            n->stats.pushes_declined++;
            send(n, from, DSM_UNBLOCK, DSM_MODE_I, p, NO_DATA);
            return 0;
        }
        n->stats.pushes_kept++;
        install(n, from, p, payload);
        set_map(n, p, DSM_PROT_READ);
        set_cstate(n, p, C_S);
        send(n, from, DSM_UNBLOCK, DSM_MODE_S, p, NO_DATA);
        n->ops.wake(n->ops.ctx, p); /* the host maps it now: no fault later */
        make_room(n, p);
        return 0;
    case DSM_PUT_ACK:
        if (st != C_MI)
            return -EPROTO;
        n->writing_back--;
        set_cstate(n, p, C_I);
        n->ops.wake(n->ops.ctx, p); /* a vCPU may be waiting to fault it back */
        return 0;
    default:
        return -EPROTO;
    }
}

/* ---- directory side -------------------------------------------------------- */

static void grant_m(struct dsm_node *n, uint64_t p)
{
    struct dsm_dir *d = &n->dir[p];
    /* Both must hold: the requester may have evicted a copy we still list,
     * or been invalidated after asking to upgrade. */
    bool keeps_copy = (d->sharers & bit(d->req)) && d->req_copy;
    d->state = D_M;
    d->owner = d->req;
    d->sharers = 0;
    if (keeps_copy)
        send(n, d->req, DSM_GRANT, DSM_MODE_M, p, NO_DATA);
    else
        send(n, d->req, DSM_DATA, DSM_MODE_M, p, WITH_DATA);
}

/* ---- batching ---------------------------------------------------------- */

/* A page the home may push to node r: homed here, at rest, nobody waiting
 * for it, r without a copy, and its latest data in the home's memory (the
 * home owns it, or it is read-shared). */
static bool pushable(const struct dsm_node *n, uint64_t q, int r)
{
    if (q >= n->npages || n->home_of(n->hctx, q) != n->self)
        return false;
    const struct dsm_dir *d = &n->dir[q];
    if (d->busy || d->held || d->want_s || d->want_m || d->want_put)
        return false;
    if (d->state == D_M)
        return d->owner == n->self && n->cache[q] == C_M;
    return !(d->sharers & bit(r));
}

static void push_one(struct dsm_node *n, uint64_t q, int r)
{
    struct dsm_dir *d = &n->dir[q];
    if (d->state == D_M) { /* the home's own write access goes first */
        set_map(n, q, DSM_PROT_READ);
        set_cstate(n, q, C_S);
        d->state = D_S;
        d->sharers = bit(n->self);
    }
    d->busy = d->push = 1;
    d->since = n->ops.now_ns(n->ops.ctx);
    d->req = (uint8_t)r;
    d->kind = DSM_GETS;
    d->req_copy = 0;
    d->acks = d->wb = 0;
    d->sharers |= bit(r);
    n->stats.pushes_sent++;
    send(n, r, DSM_PUSH, DSM_MODE_S, q, WITH_DATA);
}

/* Node r asked for a read copy of page p: the pages after it are likely
 * next (code, a scan, page structures). */
static void push_after(struct dsm_node *n, uint64_t p, int r)
{
    for (uint64_t q = p + 1; q <= p + n->push; q++)
        if (pushable(n, q, r))
            push_one(n, q, r);
}

static void start(struct dsm_node *n, uint64_t p, int req, uint8_t kind, bool has_copy)
{
    struct dsm_dir *d = &n->dir[p];
    if (kind == DSM_GETS && req != n->self && n->push)
        push_after(n, p, req);
    d->busy = 1;
    d->since = n->ops.now_ns(n->ops.ctx);
    d->req = (uint8_t)req;
    d->kind = kind;
    d->req_copy = has_copy;
    d->acks = d->wb = 0;
    if (d->state == D_M) {
        /* The owner writes the page back first; for a read it keeps S. */
        d->wb = 1;
        d->recall_mode = kind == DSM_GETS ? DSM_MODE_S : DSM_MODE_I;
        n->stats.recalls_sent++;
        send(n, d->owner, DSM_RECALL, d->recall_mode, p, NO_DATA);
        return;
    }
    if (kind == DSM_GETS) {
        d->sharers |= bit(req);
        send(n, req, DSM_DATA, DSM_MODE_S, p, WITH_DATA);
        return;
    }
    uint64_t others = d->sharers & ~bit(req);
    for (int i = 0; i < n->nnodes; i++)
        if (others & bit(i)) {
            d->acks++;
            n->stats.inv_sent++;
            send(n, i, DSM_INV, 0, p, NO_DATA);
        }
    d->sharers &= ~others;
    if (!d->acks)
        grant_m(n, p);
}

/* A PutM, when the page is not busy. If `from` still owns the page its
 * data (already copied in) is the latest; otherwise a transaction that
 * crossed the PutM took the page from it and the PutM only needs its ack. */
static void finish_put(struct dsm_node *n, uint64_t p, int from)
{
    struct dsm_dir *d = &n->dir[p];
    if (d->state == D_M && d->owner == from) {
        d->state = D_S;
        d->sharers = 0;
    } else {
        d->sharers &= ~bit(from);
    }
    send(n, from, DSM_PUT_ACK, 0, p, NO_DATA);
}

/* ---- hold window (Mirage's delta) ----------------------------------------- */

/* Whether starting this request takes the page away from a node that has
 * it: a recall from the owner, or invalidations of other sharers. Adding a
 * reader takes nothing away and never waits. */
static bool revokes(const struct dsm_dir *d, int req, uint8_t kind)
{
    if (d->state == D_M)
        return d->owner != req;
    return kind == DSM_GETM && (d->sharers & ~bit(req));
}

static uint64_t holders(const struct dsm_dir *d)
{
    return d->state == D_M ? bit(d->owner) : d->sharers;
}

/* The window: as long as a transaction takes here (its moving average),
 * so that a contended page is in use at least half the time and in
 * transit at most half, whatever the fabric and host; doubled per step of
 * hold_log2; within [hold_min_ns, hold_max_ns]. */
static uint64_t hold_ns(const struct dsm_node *n, const struct dsm_dir *d)
{
    uint64_t base = n->txn_avg_ns < n->hold_min_ns ? n->hold_min_ns : n->txn_avg_ns;
    uint64_t h = base << d->hold_log2;
    return h > n->hold_max_ns ? n->hold_max_ns : h;
}

uint64_t dsm_hold_base_ns(const struct dsm_node *n)
{
    return n->txn_avg_ns < n->hold_min_ns ? n->hold_min_ns
           : n->txn_avg_ns > n->hold_max_ns ? n->hold_max_ns : n->txn_avg_ns;
}

/* Called where a revoking transaction is about to start. A node that asks
 * again for a page within two windows of losing it was probably robbed of
 * it before it could use it, or is fighting for it: the page's window
 * doubles (up to 8x). A page that sat still for 8 windows halves it. */
static void adapt_hold(struct dsm_node *n, struct dsm_dir *d, int req, uint64_t now)
{
    uint64_t h = hold_ns(n, d);
    if ((d->revoked & bit(req)) && now - d->revoked_at < 2 * h) {
        if (d->hold_log2 < DSM_HOLD_LOG2_MAX)
            d->hold_log2++;
    } else if (now - d->since > 8 * h && d->hold_log2) {
        d->hold_log2--;
    }
    d->revoked = holders(d) & ~bit(req);
    d->revoked_at = now;
}

static void start(struct dsm_node *n, uint64_t p, int req, uint8_t kind, bool has_copy);

/* Starts the request unless it would take the page from nodes that got it
 * less than a window ago: then it waits (queued like a request on a busy
 * page) until dsm_tick sees the window end. So a node granted a page keeps
 * it long enough to finish the access it faulted on, even when every vCPU
 * spins with locked writes on that page. Returns false if it waits. */
static bool try_start(struct dsm_node *n, uint64_t p, int req, uint8_t kind, bool has_copy)
{
    struct dsm_dir *d = &n->dir[p];
    if (revokes(d, req, kind)) {
        uint64_t now = n->ops.now_ns(n->ops.ctx);
        if (now - d->since < hold_ns(n, d)) {
            if (kind == DSM_GETS) {
                d->want_s |= bit(req);
            } else {
                d->want_m |= bit(req);
                if (has_copy)
                    d->want_m_copy |= bit(req);
            }
            n->stats.holds++;
            if (!d->held) {
                d->held = 1;
                n->held[n->nheld++] = p;
            }
            return false;
        }
        adapt_hold(n, d, req, now);
    }
    start(n, p, req, kind, has_copy);
    return true;
}

/* Round-robin from the last requester, so that no node starves. Waiting
 * PutMs go first: they start no transaction. */
static void next_request(struct dsm_node *n, uint64_t p)
{
    struct dsm_dir *d = &n->dir[p];
    for (int i = 0; d->want_put && i < n->nnodes; i++)
        if (d->want_put & bit(i)) {
            d->want_put &= ~bit(i);
            finish_put(n, p, i);
        }
    for (int k = 1; k <= n->nnodes; k++) {
        int i = (d->req + k) % n->nnodes;
        if (d->want_m & bit(i)) {
            bool copy = d->want_m_copy & bit(i);
            d->want_m &= ~bit(i);
            d->want_m_copy &= ~bit(i);
            try_start(n, p, i, DSM_GETM, copy);
            return; /* started, or waits for the window: either way, in order */
        }
        if (d->want_s & bit(i)) {
            d->want_s &= ~bit(i);
            try_start(n, p, i, DSM_GETS, false);
            return;
        }
    }
}

static int dir_msg(struct dsm_node *n, int from, const struct dsm_msg *m, const void *payload)
{
    uint64_t p = m->page;
    struct dsm_dir *d = &n->dir[p];
    switch (m->type) {
    case DSM_GETS:
    case DSM_GETM:
        /* A node has one request per page at a time, and owners do not ask.
         * The current requester's next request may overtake its Unblock (the
         * network does not keep order): it is queued like any other. */
        if (((d->want_s | d->want_m | d->want_put) & bit(from)) ||
            (!d->busy && d->state == D_M && d->owner == from) || m->mode > DSM_MODE_S)
            return -EPROTO;
        if (!d->busy && !d->held) {
            try_start(n, p, from, m->type, m->mode == DSM_MODE_S);
        } else if (m->type == DSM_GETS) {
            d->want_s |= bit(from);
        } else {
            d->want_m |= bit(from);
            if (m->mode == DSM_MODE_S)
                d->want_m_copy |= bit(from);
        }
        return 0;
    case DSM_PUTM:
        /* One PutM per node and page until acked. The owner's data is the
         * latest even while a recall to it is in flight (it cannot write in
         * MI), so take it now; the state changes when the page is free. */
        if (d->want_put & bit(from))
            return -EPROTO;
        if (d->state == D_M && d->owner == from && from != n->self)
            n->ops.page_write(n->ops.ctx, p, payload);
        if (d->busy)
            d->want_put |= bit(from);
        else
            finish_put(n, p, from);
        return 0;
    case DSM_INV_ACK:
        if (!d->busy || d->kind != DSM_GETM || !d->acks)
            return -EPROTO;
        if (--d->acks == 0)
            grant_m(n, p);
        return 0;
    case DSM_WB_DATA:
        if (!d->busy || !d->wb || from != d->owner)
            return -EPROTO;
        d->wb = 0;
        if (from != n->self)
            n->ops.page_write(n->ops.ctx, p, payload);
        if (d->kind == DSM_GETS) {
            d->state = D_S;
            d->sharers = bit(d->owner) | bit(d->req);
            send(n, d->req, DSM_DATA, DSM_MODE_S, p, WITH_DATA);
        } else {
            d->sharers = 0;
            grant_m(n, p);
        }
        return 0;
    case DSM_UNBLOCK:
        if (!d->busy || d->req != from || d->acks || d->wb)
            return -EPROTO;
        d->busy = 0;
        if (d->push) {
            /* Not a transaction anyone waited for: no effect on the
             * average, and no hold window for a copy nobody used yet. */
            d->push = 0;
            if (m->mode != DSM_MODE_S)
                d->sharers &= ~bit(from);
            d->since = 0;
        } else {
            uint64_t now = n->ops.now_ns(n->ops.ctx), dt = now - d->since;
            /* Moving average over ~8 transactions (see hold_ns). */
            n->txn_avg_ns = n->txn_avg_ns ? n->txn_avg_ns - n->txn_avg_ns / 8 + dt / 8 : dt;
            d->since = now;
        }
        next_request(n, p);
        return 0;
    default:
        return -EPROTO;
    }
}

uint64_t dsm_tick(struct dsm_node *n)
{
    uint64_t now = n->ops.now_ns(n->ops.ctx), next = UINT64_MAX;
    for (uint64_t k = 0; k < n->nheld;) {
        uint64_t p = n->held[k];
        struct dsm_dir *d = &n->dir[p];
        uint64_t end = d->since + hold_ns(n, d);
        if (!d->busy && now < end) {
            next = end - now < next ? end - now : next;
            k++;
            continue;
        }
        /* The window is over (or a transaction runs, which will pick the
         * next request itself when it ends). */
        n->held[k] = n->held[--n->nheld];
        d->held = 0;
        if (!d->busy)
            next_request(n, p);
        if (d->held && !d->busy) /* waits again: for a window that began just now */
            next = 0;
    }
    return next;
}

static bool to_directory(uint8_t type)
{
    return type == DSM_GETS || type == DSM_GETM || type == DSM_INV_ACK || type == DSM_WB_DATA ||
           type == DSM_UNBLOCK || type == DSM_PUTM;
}

bool dsm_carries_data(uint8_t type)
{
    return type == DSM_DATA || type == DSM_WB_DATA || type == DSM_PUTM || type == DSM_PUSH;
}

static int drop(struct dsm_node *n, enum dsm_drop why)
{
    n->stats.dropped[why]++;
    return -EPROTO;
}

int dsm_receive(struct dsm_node *n, int from, const struct dsm_msg *m, const void *payload)
{
    if (m->type < DSM_MSG_FIRST || m->type > DSM_MSG_LAST)
        return drop(n, DSM_DROP_TYPE);
    if (m->page >= n->npages)
        return drop(n, DSM_DROP_PAGE);
    if (from < 0 || from >= n->nnodes || m->src != from)
        return drop(n, DSM_DROP_SRC);
    if (!payload != !dsm_carries_data(m->type))
        return drop(n, DSM_DROP_PAYLOAD);
    int home = n->home_of(n->hctx, m->page);
    int r;
    if (to_directory(m->type))
        r = home == n->self ? dir_msg(n, from, m, payload) : -EPROTO;
    else
        r = home == from ? cache_msg(n, from, m, payload) : -EPROTO;
    return r < 0 ? drop(n, DSM_DROP_STATE) : 0;
}
