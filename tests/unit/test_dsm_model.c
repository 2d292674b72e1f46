/* Model test of the DSM engine: no KVM, no network. Nodes exchange messages
 * through a simulated network that delivers them in random order; several
 * simulated vCPUs per node read and write a few pages concurrently. After
 * every step: at most one node maps a page writable, and then none maps it
 * readable; every read returns the latest write. At the end everything is
 * quiescent. The same runs again with each node's cache bounded to one or
 * two copies, so that clean copies are dropped silently, dirty ones written
 * back (crossing recalls and invalidations), and a dropped copy's memory is
 * poisoned. A failure prints its seed; replay it with
 *   DSM_MODEL_SEED=<seed> build/tests/test_dsm_model
 */
#include <check.h>
#include <errno.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dsm/dsm.h"

#define NODES 4
#define PAGES 6
#define VCPUS 3
#define MAXMSG 4096
/* Hold windows in the model clock's units (one step is 1..100). */
#define HOLD_MIN 200
#define HOLD_MAX 2000

struct netmsg {
    int from, to;
    struct dsm_msg m;
    bool has_payload;
    uint64_t pull_stamp; /* DATA_PULL: the home's page when it was sent */
    uint8_t payload[DSM_PAGE_SIZE];
};

struct vcpu {
    bool busy, ready;
    uint64_t page;
    bool write;
};

static uint64_t stamp_of(const uint8_t *page);

struct model;
struct nodectx {
    struct model *w;
    int id;
};

struct model {
    struct dsm_node node[NODES];
    struct nodectx ctx[NODES];
    struct netmsg *bag;
    int nbag;
    enum dsm_prot prot[NODES][PAGES];
    uint8_t data[NODES][PAGES][DSM_PAGE_SIZE];
    uint64_t truth[PAGES];
    struct vcpu cpu[NODES][VCPUS];
    uint64_t clock, seq, reads, writes, steps, drops;
    unsigned seed;
    bool block_homes; /* pages 0-1 homed on node 0, 2-3 on 1, 4-5 on 2 */
    const struct netmsg *delivering; /* for m_pull's check */
    uint64_t pulls;
    char err[256];
};

static int home_of(void *h, uint64_t page)
{
    const struct model *w = h;
    return w && w->block_homes ? (int)(page / 2) : (int)(page % NODES);
}

static int m_send(void *c, int dst, const struct dsm_msg *m, const void *payload)
{
    struct nodectx *x = c;
    struct model *w = x->w;
    ck_assert_int_lt(w->nbag, MAXMSG);
    struct netmsg *n = &w->bag[w->nbag++];
    n->from = x->id;
    n->to = dst;
    n->m = *m;
    n->has_payload = payload != NULL;
    if (m->type == DSM_DATA_PULL)
        memcpy(&n->pull_stamp, w->data[x->id][m->page], 8);
    if (payload && dst == x->id)
        memset(n->payload, 0xa5, DSM_PAGE_SIZE); /* a marker only: must never be read */
    else if (payload)
        memcpy(n->payload, payload, DSM_PAGE_SIZE); /* the network copies at send */
    return 0;
}

static int m_map(void *c, uint64_t page, enum dsm_prot prot)
{
    struct nodectx *x = c;
    x->w->prot[x->id][page] = prot;
    return 0;
}

static const uint8_t *m_read(void *c, uint64_t page, uint8_t *buf)
{
    struct nodectx *x = c;
    memcpy(buf, x->w->data[x->id][page], DSM_PAGE_SIZE);
    return buf;
}

static void m_write(void *c, uint64_t page, const uint8_t *data)
{
    struct nodectx *x = c;
    memcpy(x->w->data[x->id][page], data, DSM_PAGE_SIZE);
}

/* One-sided read of the home's copy, when the DATA_PULL is delivered: the
 * home's copy must be what it was when the home sent it (the page stays
 * busy until the puller's Unblock, so nobody may have written it). */
static int m_pull(void *c, int from, uint64_t page)
{
    struct nodectx *x = c;
    struct model *w = x->w;
    ck_assert_ptr_nonnull(w->delivering);
    ck_assert_int_eq(w->delivering->m.type, DSM_DATA_PULL);
    ck_assert_int_eq(home_of(w, page), from);
    ck_assert_msg(stamp_of(w->data[from][page]) == w->delivering->pull_stamp,
                  "seed %u step %llu: page %llu changed at its home between DATA_PULL and "
                  "the pull", w->seed, (unsigned long long)w->steps, (unsigned long long)page);
    memcpy(w->data[x->id][page], w->data[from][page], DSM_PAGE_SIZE);
    w->pulls++;
    return 0;
}

static void m_wake(void *c, uint64_t page)
{
    struct nodectx *x = c;
    for (int v = 0; v < VCPUS; v++)
        if (x->w->cpu[x->id][v].busy && x->w->cpu[x->id][v].page == page)
            x->w->cpu[x->id][v].ready = true;
}

static uint64_t m_now(void *c)
{
    struct nodectx *x = c;
    return x->w->clock;
}

/* A dropped copy is freed by the host: poison it, so that a protocol that
 * still used it would be caught by the reads' check. */
static void m_drop(void *c, uint64_t page)
{
    struct nodectx *x = c;
    ck_assert_msg(home_of(x->w, page) != x->id, "seed %u: node %d dropped its own home page",
                  x->w->seed, x->id);
    ck_assert_int_eq(x->w->prot[x->id][page], DSM_PROT_NONE);
    memset(x->w->data[x->id][page], 0xdd, DSM_PAGE_SIZE);
    x->w->drops++;
}

static struct model *model_new_opts(unsigned seed, uint64_t cache_limit, unsigned push,
                                     bool pull)
{
    struct model *w = calloc(1, sizeof *w);
    w->bag = calloc(MAXMSG, sizeof *w->bag);
    w->seed = seed;
    w->block_homes = push > 0; /* so that a page's neighbour has the same home */
    w->clock = 1000000; /* as a host's clock: pages at rest since "long ago" */
    for (int i = 0; i < NODES; i++) {
        w->ctx[i] = (struct nodectx){w, i};
        struct dsm_ops ops = {&w->ctx[i], m_send, m_map,  m_read, m_write,
                              m_wake,     m_now,  m_drop, m_pull};
        ck_assert_int_eq(dsm_node_init(&w->node[i], i, NODES, PAGES, home_of, w, &ops), 0);
        dsm_set_cache_limit(&w->node[i], cache_limit);
        dsm_set_hold(&w->node[i], HOLD_MIN, HOLD_MAX);
        dsm_set_push(&w->node[i], push);
        dsm_set_pull(&w->node[i], pull);
        for (int p = 0; p < PAGES; p++)
            w->prot[i][p] = home_of(w, (uint64_t)p) == i ? DSM_PROT_WRITE : DSM_PROT_NONE;
    }
    return w;
}

static struct model *model_new_push(unsigned seed, uint64_t cache_limit, unsigned push)
{
    return model_new_opts(seed, cache_limit, push, false);
}

static struct model *model_new_cache(unsigned seed, uint64_t cache_limit)
{
    return model_new_push(seed, cache_limit, 0);
}

static struct model *model_new(unsigned seed)
{
    return model_new_cache(seed, 0);
}

static void model_free(struct model *w)
{
    for (int i = 0; i < NODES; i++)
        dsm_node_free(&w->node[i]);
    free(w->bag);
    free(w);
}

static void check_swmr(struct model *w)
{
    for (int p = 0; p < PAGES; p++) {
        int writers = 0, readers = 0;
        for (int i = 0; i < NODES; i++) {
            writers += w->prot[i][p] == DSM_PROT_WRITE;
            readers += w->prot[i][p] == DSM_PROT_READ;
        }
        ck_assert_msg(writers <= 1 && (writers == 0 || readers == 0),
                      "seed %u step %llu: page %d has %d writers and %d readers", w->seed,
                      (unsigned long long)w->steps, p, writers, readers);
    }
}

static uint64_t stamp_of(const uint8_t *page)
{
    uint64_t s;
    memcpy(&s, page, 8);
    return s;
}

/* Tries the vCPU's access; true if it completed. */
static bool try_access(struct model *w, int node, struct vcpu *c)
{
    enum dsm_prot need = c->write ? DSM_PROT_WRITE : DSM_PROT_READ;
    for (int tries = 0; tries < 2; tries++) {
        if (w->prot[node][c->page] >= need) {
            uint8_t *d = w->data[node][c->page];
            if (c->write) {
                uint64_t s = ((uint64_t)node << 48) | ++w->seq;
                memcpy(d, &s, 8);
                memset(d + 8, (int)(s & 0xff), 64); /* more than the first word moves */
                w->truth[c->page] = s;
                w->writes++;
            } else {
                ck_assert_msg(stamp_of(d) == w->truth[c->page] && d[8 + 63] == (uint8_t)(w->truth[c->page] & 0xff),
                              "seed %u step %llu: node %d read %llx from page %llu, latest write %llx",
                              w->seed, (unsigned long long)w->steps, node,
                              (unsigned long long)stamp_of(d), (unsigned long long)c->page,
                              (unsigned long long)w->truth[c->page]);
                w->reads++;
            }
            c->busy = c->ready = false;
            return true;
        }
        int r = dsm_fault(&w->node[node], c->page, c->write);
        ck_assert_int_ge(r, 0);
        if (r == 1) {
            c->ready = false;
            return false;
        }
    }
    ck_abort_msg("seed %u: dsm_fault said the access is allowed but it is not", w->seed);
    return false;
}

static void deliver(struct model *w, int i)
{
    struct netmsg n = w->bag[i];
    w->bag[i] = w->bag[--w->nbag]; /* random order: any message may go next */
    w->delivering = &n;
    int r = dsm_receive(&w->node[n.to], n.from, &n.m, n.has_payload ? n.payload : NULL);
    w->delivering = NULL;
    ck_assert_msg(r == 0, "seed %u step %llu: node %d rejected message %#x page %llu from %d",
                  w->seed, (unsigned long long)w->steps, n.to, n.m.type,
                  (unsigned long long)n.m.page, n.from);
}

static bool all_idle(struct model *w)
{
    for (int i = 0; i < NODES; i++)
        for (int v = 0; v < VCPUS; v++)
            if (w->cpu[i][v].busy)
                return false;
    return true;
}

static bool any_held(struct model *w)
{
    for (int i = 0; i < NODES; i++)
        if (w->node[i].nheld)
            return true;
    return false;
}

static void tick_all(struct model *w)
{
    for (int i = 0; i < NODES; i++)
        dsm_tick(&w->node[i]);
}

static void run_random(struct model *w, uint64_t ops)
{
    uint64_t started = 0;
    srand(w->seed);
    while (started < ops || w->nbag || !all_idle(w) || any_held(w)) {
        w->steps++;
        w->clock += 1 + (uint64_t)(rand() % 100);
        ck_assert_msg(w->steps < ops * 200, "seed %u: no progress (livelock?)", w->seed);
        tick_all(w);
        if (w->nbag && (rand() % 100 < 55 || started >= ops)) {
            deliver(w, rand() % w->nbag);
        } else {
            int node = rand() % NODES, v = rand() % VCPUS;
            struct vcpu *c = &w->cpu[node][v];
            if (!c->busy && started < ops) {
                *c = (struct vcpu){.busy = true, .page = (uint64_t)(rand() % PAGES),
                                   .write = rand() % 100 < 40};
                started++;
                try_access(w, node, c);
            } else if (c->busy && c->ready) {
                try_access(w, node, c);
            }
        }
        check_swmr(w);
        if (!w->nbag) /* nothing in flight: every woken vCPU must make progress */
            for (int i = 0; i < NODES; i++)
                for (int k = 0; k < VCPUS; k++)
                    if (w->cpu[i][k].busy && w->cpu[i][k].ready)
                        try_access(w, i, &w->cpu[i][k]);
    }
    for (int i = 0; i < NODES; i++)
        ck_assert_msg(dsm_quiescent(&w->node[i]), "seed %u: node %d not quiescent", w->seed, i);
}

static unsigned pick_seed(void)
{
    const char *s = getenv("DSM_MODEL_SEED");
    return s ? (unsigned)strtoul(s, NULL, 0) : (unsigned)time(NULL) ^ (unsigned)getpid();
}

START_TEST(random_interleavings)
{
    unsigned seed = pick_seed();
    struct model *w = model_new(seed);
    run_random(w, 120000);
    printf("dsm model: seed %u, %llu reads, %llu writes, %llu steps\n", seed,
           (unsigned long long)w->reads, (unsigned long long)w->writes,
           (unsigned long long)w->steps);
    ck_assert_uint_ge(w->reads + w->writes, 100000);
    uint64_t inv = 0, rec = 0;
    for (int i = 0; i < NODES; i++) {
        inv += w->node[i].stats.inv_received;
        rec += w->node[i].stats.recalls_received;
        for (int d = 0; d < DSM_DROP_COUNT; d++)
            ck_assert_uint_eq(w->node[i].stats.dropped[d], 0);
    }
    uint64_t holds = 0;
    for (int i = 0; i < NODES; i++)
        holds += w->node[i].stats.holds;
    printf("dsm model: %llu requests waited for a hold window\n", (unsigned long long)holds);
    ck_assert_uint_gt(holds, 100); /* windows were in force throughout */
    for (int i = 0; i < NODES; i++) { /* hot pages: the hottest first, counts as kept */
        struct dsm_hot_page hot[3];
        int k = dsm_hot_pages(&w->node[i], hot, 3);
        ck_assert_int_eq(k, 3);
        for (int j = 0; j < k; j++) {
            ck_assert_uint_eq(hot[j].fetches, w->node[i].fetches[hot[j].page]);
            ck_assert_uint_eq(hot[j].losses, w->node[i].losses[hot[j].page]);
            if (j)
                ck_assert_uint_ge(hot[j - 1].fetches + hot[j - 1].losses,
                                  hot[j].fetches + hot[j].losses);
        }
        for (uint64_t p = 0; p < PAGES; p++) /* and no page left out is hotter */
            if (p != hot[0].page && p != hot[1].page && p != hot[2].page)
                ck_assert_uint_le((uint64_t)w->node[i].fetches[p] + w->node[i].losses[p],
                                  (uint64_t)hot[2].fetches + hot[2].losses);
    }
    ck_assert_uint_gt(inv, 100); /* the races were really exercised */
    ck_assert_uint_gt(rec, 100);
    model_free(w);
}
END_TEST

static void bounded_run(uint64_t limit)
{
    unsigned seed = pick_seed();
    struct model *w = model_new_cache(seed, limit);
    run_random(w, 120000);
    uint64_t ev = 0, wb = 0, inv = 0, rec = 0;
    for (int i = 0; i < NODES; i++) {
        const struct dsm_node *n = &w->node[i];
        ev += n->stats.evictions;
        wb += n->stats.writebacks;
        inv += n->stats.inv_received;
        rec += n->stats.recalls_received;
        for (int d = 0; d < DSM_DROP_COUNT; d++)
            ck_assert_uint_eq(n->stats.dropped[d], 0);
        ck_assert_msg(n->cached <= limit, "seed %u: node %d holds %llu copies, limit %llu", seed,
                      i, (unsigned long long)n->cached, (unsigned long long)limit);
    }
    printf("dsm model, cache limit %llu: seed %u, %llu reads, %llu writes, %llu evictions "
           "(%llu written back), %llu copies freed\n", (unsigned long long)limit, seed,
           (unsigned long long)w->reads, (unsigned long long)w->writes, (unsigned long long)ev,
           (unsigned long long)wb, (unsigned long long)w->drops);
    ck_assert_uint_ge(w->reads + w->writes, 100000);
    ck_assert_uint_gt(ev, 1000); /* evictions really happened, clean and dirty, */
    ck_assert_uint_gt(wb, 100);
    ck_assert_uint_gt(inv, 100); /* alongside the usual races */
    ck_assert_uint_gt(rec, 100);
    model_free(w);
}

/* Batching: homes push the next page with every read copy they serve.
 * Pushes race requests for the same page (declined), invalidations and
 * recalls that follow them, and evictions; coherence must hold throughout
 * (run_random checks every read and the single-writer rule). */
static void push_run(uint64_t limit)
{
    unsigned seed = pick_seed();
    struct model *w = model_new_push(seed, limit, 1);
    run_random(w, 120000);
    uint64_t sent = 0, kept = 0, declined = 0, inv = 0;
    for (int i = 0; i < NODES; i++) {
        const struct dsm_node *n = &w->node[i];
        sent += n->stats.pushes_sent;
        kept += n->stats.pushes_kept;
        declined += n->stats.pushes_declined;
        inv += n->stats.inv_received;
        for (int d = 0; d < DSM_DROP_COUNT; d++)
            ck_assert_uint_eq(n->stats.dropped[d], 0);
    }
    printf("dsm model, push 1, cache limit %llu: seed %u, %llu reads, %llu writes, %llu pushes "
           "(%llu kept, %llu declined)\n", (unsigned long long)limit, seed,
           (unsigned long long)w->reads, (unsigned long long)w->writes, (unsigned long long)sent,
           (unsigned long long)kept, (unsigned long long)declined);
    ck_assert_uint_ge(w->reads + w->writes, 100000);
    ck_assert_uint_eq(sent, kept + declined); /* every push answered */
    ck_assert_uint_gt(kept, 1000);            /* the race paths really ran */
    ck_assert_uint_gt(declined, 10);
    ck_assert_uint_gt(inv, 100);
    model_free(w);
}

/* One-sided pulls: every home answers other nodes with DATA_PULL, and the
 * requester copies the home's page when that message arrives, whatever
 * happened in between (m_pull checks the home's copy did not change).
 * With a bounded cache (write-backs crossing pulls) and with pushes. */
static void pull_run(uint64_t limit, unsigned push)
{
    unsigned seed = pick_seed();
    struct model *w = model_new_opts(seed, limit, push, true);
    run_random(w, 120000);
    uint64_t pulls = 0, data_bytes = 0, inv = 0, rec = 0;
    for (int i = 0; i < NODES; i++) {
        const struct dsm_node *n = &w->node[i];
        pulls += n->stats.pulls;
        data_bytes += n->stats.bytes_moved;
        inv += n->stats.inv_received;
        rec += n->stats.recalls_received;
        ck_assert_uint_eq(n->stats.pull_errors, 0);
        for (int d = 0; d < DSM_DROP_COUNT; d++)
            ck_assert_uint_eq(n->stats.dropped[d], 0);
    }
    printf("dsm model, pull, cache limit %llu, push %u: seed %u, %llu reads, %llu writes, "
           "%llu pulls\n", (unsigned long long)limit, push, seed, (unsigned long long)w->reads,
           (unsigned long long)w->writes, (unsigned long long)pulls);
    ck_assert_uint_ge(w->reads + w->writes, 100000);
    ck_assert_uint_eq(pulls, w->pulls);
    ck_assert_uint_gt(pulls, 1000);
    ck_assert_uint_gt(inv, 100);
    ck_assert_uint_gt(rec, 100);
    model_free(w);
}

START_TEST(random_interleavings_pull) { pull_run(0, 0); }
END_TEST

START_TEST(random_interleavings_pull_cache_1) { pull_run(1, 0); }
END_TEST

START_TEST(random_interleavings_pull_push) { pull_run(1, 1); }
END_TEST

START_TEST(random_interleavings_push) { push_run(0); }
END_TEST

START_TEST(random_interleavings_push_cache_1) { push_run(1); }
END_TEST

START_TEST(random_interleavings_cache_1) { bounded_run(1); }
END_TEST

START_TEST(random_interleavings_cache_2) { bounded_run(2); }
END_TEST

/* Helpers for the scripted scenarios. */
static struct vcpu *op(struct model *w, int node, int v, uint64_t page, bool write)
{
    struct vcpu *c = &w->cpu[node][v];
    *c = (struct vcpu){.busy = true, .page = page, .write = write};
    try_access(w, node, c);
    return c;
}

static int find_msg(struct model *w, uint8_t type, int to)
{
    for (int i = 0; i < w->nbag; i++)
        if (w->bag[i].m.type == type && w->bag[i].to == to)
            return i;
    return -1;
}

static void drain(struct model *w)
{
    while (w->nbag || !all_idle(w)) {
        w->clock += 10;
        tick_all(w);
        if (w->nbag)
            deliver(w, w->nbag - 1);
        for (int i = 0; i < NODES; i++)
            for (int k = 0; k < VCPUS; k++)
                if (w->cpu[i][k].busy && w->cpu[i][k].ready)
                    try_access(w, i, &w->cpu[i][k]);
        check_swmr(w);
    }
}

/* A node that reads a page finds the next one already mapped: no fault,
 * no request. And the home, having given up write access to the pushed
 * page, upgrades before it writes it. */
START_TEST(push_saves_the_next_fault)
{
    struct model *w = model_new_push(1, 0, 1);
    struct vcpu *c = op(w, 3, 0, 0, false); /* node 3 reads page 0 (home 0) */
    drain(w);
    ck_assert(!c->busy);
    ck_assert_int_eq(w->prot[3][1], DSM_PROT_READ); /* page 1 came along */
    ck_assert_int_eq(w->prot[0][1], DSM_PROT_READ);
    ck_assert_uint_eq(w->node[0].stats.pushes_sent, 1);
    ck_assert_uint_eq(w->node[3].stats.pushes_kept, 1);
    c = op(w, 3, 0, 1, false);
    ck_assert(!c->busy); /* no fault */
    ck_assert_uint_eq(w->node[3].stats.read_faults, 1);
    ck_assert_int_eq(memcmp(w->data[3][1], w->data[0][1], DSM_PAGE_SIZE), 0);
    c = op(w, 0, 0, 1, true); /* the home writes it: node 3's copy goes */
    drain(w);
    ck_assert(!c->busy);
    ck_assert_int_eq(w->prot[3][1], DSM_PROT_NONE);
    ck_assert_uint_eq(w->node[0].stats.upgrades, 1);
    model_free(w);
}
END_TEST

START_TEST(local_faults_coalesce)
{
    struct model *w = model_new(1);
    /* page 4's home is node 0; two vCPUs of node 1 fault on it at once */
    op(w, 1, 0, 4, false);
    op(w, 1, 1, 4, false);
    ck_assert_int_eq(w->nbag, 1); /* one GetS, not two */
    drain(w);
    ck_assert_uint_eq(w->reads, 2);
    ck_assert_uint_eq(w->node[1].stats.read_faults, 1);
    model_free(w);
}
END_TEST

START_TEST(invalidation_races_upgrade)
{
    struct model *w = model_new(2);
    op(w, 1, 0, 4, false);
    op(w, 2, 0, 4, false);
    drain(w); /* nodes 1 and 2 share page 4 */
    op(w, 1, 0, 4, true);
    op(w, 2, 0, 4, true); /* both upgrade: one will be invalidated first */
    ck_assert_int_eq(w->nbag, 2);
    drain(w);
    ck_assert_uint_eq(w->writes, 2);
    ck_assert_uint_eq(w->node[1].stats.upgrades + w->node[2].stats.upgrades, 2);
    ck_assert_uint_ge(w->node[1].stats.inv_received + w->node[2].stats.inv_received, 1);
    model_free(w);
}
END_TEST

START_TEST(request_for_page_in_transit)
{
    struct model *w = model_new(3);
    op(w, 1, 0, 4, true); /* GetM to home 0, which first recalls it from itself */
    while (find_msg(w, DSM_DATA, 1) < 0)
        deliver(w, w->nbag - 1);
    /* the page is now in transit to node 1 */
    op(w, 2, 0, 4, false);            /* node 2 wants it meanwhile */
    deliver(w, find_msg(w, DSM_GETS, 0));
    ck_assert_int_eq(find_msg(w, DSM_RECALL, 1), -1); /* queued, not racing */
    drain(w);
    ck_assert_uint_eq(w->writes, 1);
    ck_assert_uint_eq(w->reads, 1);
    ck_assert_uint_eq(w->node[1].stats.recalls_received, 1);
    model_free(w);
}
END_TEST

START_TEST(home_takes_its_page_back)
{
    struct model *w = model_new(4);
    op(w, 1, 0, 4, true);
    drain(w);
    ck_assert_int_eq(w->prot[0][4], DSM_PROT_NONE);
    op(w, 0, 0, 4, true); /* home's own vCPU writes */
    drain(w);
    ck_assert_int_eq(w->prot[0][4], DSM_PROT_WRITE);
    ck_assert_int_eq(w->prot[1][4], DSM_PROT_NONE);
    op(w, 1, 0, 4, false); /* and node 1 sees the home's write */
    drain(w);
    ck_assert_uint_eq(w->reads, 1);
    model_free(w);
}
END_TEST

START_TEST(local_work_takes_no_fault)
{
    struct model *w = model_new(5);
    for (int k = 0; k < 100; k++)
        op(w, 2, 0, 2, k % 2); /* page 2's home is node 2 */
    ck_assert_int_eq(w->nbag, 0);
    ck_assert_uint_eq(w->node[2].stats.read_faults + w->node[2].stats.write_faults, 0);
    model_free(w);
}
END_TEST

START_TEST(malformed_messages_dropped)
{
    struct model *w = model_new(6);
    struct dsm_node *n = &w->node[0];
    uint8_t page[DSM_PAGE_SIZE] = {0};
    struct dsm_msg m = {.type = 0x99, .src = 1, .page = 0};
    ck_assert_int_eq(dsm_receive(n, 1, &m, NULL), -EPROTO);
    m = (struct dsm_msg){.type = DSM_GETS, .src = 1, .page = PAGES};
    ck_assert_int_eq(dsm_receive(n, 1, &m, NULL), -EPROTO);
    m = (struct dsm_msg){.type = DSM_GETS, .src = 2, .page = 0}; /* lies about its sender */
    ck_assert_int_eq(dsm_receive(n, 1, &m, NULL), -EPROTO);
    m = (struct dsm_msg){.type = DSM_GETS, .src = 9, .page = 0};
    ck_assert_int_eq(dsm_receive(n, 9, &m, NULL), -EPROTO);
    m = (struct dsm_msg){.type = DSM_GETS, .src = 1, .page = 0};
    ck_assert_int_eq(dsm_receive(n, 1, &m, page), -EPROTO); /* no payload on a GetS */
    m = (struct dsm_msg){.type = DSM_DATA, .mode = DSM_MODE_M, .src = 1, .page = 0};
    ck_assert_int_eq(dsm_receive(n, 1, &m, NULL), -EPROTO); /* data without data */
    ck_assert_int_eq(dsm_receive(n, 1, &m, page), -EPROTO); /* nobody asked; 1 is not home */
    m = (struct dsm_msg){.type = DSM_UNBLOCK, .src = 1, .page = 0};
    ck_assert_int_eq(dsm_receive(n, 1, &m, NULL), -EPROTO); /* nothing to unblock */
    m = (struct dsm_msg){.type = DSM_INV, .src = 0, .page = 1};
    ck_assert_int_eq(dsm_receive(&w->node[2], 0, &m, NULL), -EPROTO); /* 0 is not page 1's home */
    ck_assert_uint_eq(n->stats.dropped[DSM_DROP_TYPE], 1);
    ck_assert_uint_eq(n->stats.dropped[DSM_DROP_PAGE], 1);
    ck_assert_uint_eq(n->stats.dropped[DSM_DROP_SRC], 2);
    ck_assert_uint_eq(n->stats.dropped[DSM_DROP_PAYLOAD], 2);
    ck_assert_uint_eq(n->stats.dropped[DSM_DROP_STATE], 2);
    ck_assert_int_eq(w->nbag, 0); /* and nothing was acted upon */
    ck_assert_int_eq(w->prot[0][0], DSM_PROT_WRITE);
    model_free(w);
}
END_TEST

/* Every node's vCPU writes one page over and over (lock-prefixed writes in
 * a guest), with messages in order and a fixed latency, and a woken vCPU
 * that runs WAKE_DELAY after its wake-up: slower than the messages that
 * could take the page away again. With hold windows: every grant is used
 * before the page goes (no write faults twice on one access), every
 * access completes within a bound, and every node finishes. Without them
 * (min = max = 0) the same scenario wastes grants, which shows it is the
 * windows that give the guarantee: it livelocks, so that run stops after
 * `steps`. Returns the wasted grants. */
#define CONTEND_WRITES 300
#define WAKE_DELAY 150
#define LATENCY 20

static uint64_t contend(uint64_t hold_min, uint64_t hold_max, uint64_t steps,
                        uint64_t *worst_wait)
{
    struct model *w = model_new(7);
    uint64_t woken_at[NODES] = {0}, started_at[NODES] = {0}, done[NODES] = {0}, wasted = 0;
    uint64_t sent_at[MAXMSG];
    int nsent = 0;
    *worst_wait = 0;
    for (int i = 0; i < NODES; i++)
        dsm_set_hold(&w->node[i], hold_min, hold_max);
    for (uint64_t step = 0;; step++) {
        if (steps && step == steps) {
            model_free(w);
            return wasted;
        }
        ck_assert_msg(step < 2000000, "contend: no progress after %llu steps (done %llu %llu "
                      "%llu %llu)", (unsigned long long)step, (unsigned long long)done[0],
                      (unsigned long long)done[1], (unsigned long long)done[2],
                      (unsigned long long)done[3]);
        w->clock += 1;
        tick_all(w);
        /* In order: the oldest message, once it is LATENCY old. */
        for (; nsent < w->nbag; nsent++)
            sent_at[nsent] = w->clock;
        if (w->nbag && w->clock - sent_at[0] >= LATENCY) {
            struct netmsg n = w->bag[0];
            memmove(w->bag, w->bag + 1, (size_t)(w->nbag - 1) * sizeof *w->bag);
            memmove(sent_at, sent_at + 1, (size_t)(w->nbag - 1) * sizeof *sent_at);
            w->nbag--;
            nsent--;
            ck_assert_int_eq(dsm_receive(&w->node[n.to], n.from, &n.m,
                                         n.has_payload ? n.payload : NULL), 0);
            for (; nsent < w->nbag; nsent++)
                sent_at[nsent] = w->clock;
        }
        bool all_done = true;
        for (int i = 0; i < NODES; i++) {
            struct vcpu *c = &w->cpu[i][0];
            if (done[i] == CONTEND_WRITES)
                continue;
            all_done = false;
            if (!c->busy) {
                *c = (struct vcpu){.busy = true, .page = 0, .write = true};
                started_at[i] = w->clock;
                if (try_access(w, i, c))
                    goto completed;
                continue;
            }
            if (!c->ready)
                continue;
            if (!woken_at[i])
                woken_at[i] = w->clock;
            if (w->clock - woken_at[i] < WAKE_DELAY)
                continue;
            woken_at[i] = 0;
            if (!try_access(w, i, c)) {
                wasted++; /* woken for a grant that was gone again */
                continue;
            }
        completed:
            done[i]++;
            if (w->clock - started_at[i] > *worst_wait)
                *worst_wait = w->clock - started_at[i];
        }
        check_swmr(w);
        if (all_done && !w->nbag && !any_held(w))
            break;
    }
    ck_assert_uint_eq(w->truth[0] & 0xffffffffffffULL, (uint64_t)NODES * CONTEND_WRITES);
    model_free(w);
    return wasted;
}

START_TEST(contended_page_makes_progress)
{
    uint64_t worst = 0, worst_none = 0;
    uint64_t wasted = contend(HOLD_MIN, HOLD_MAX, 0, &worst);
    /* A request waits for at most every other node's window and transfer
     * (round-robin), each at most HOLD_MAX plus a few message latencies. */
    uint64_t bound = (uint64_t)NODES * (HOLD_MAX + 8 * LATENCY + WAKE_DELAY);
    uint64_t wasted_none = contend(0, 0, 200000, &worst_none);
    printf("dsm model, contended page: with windows %llu wasted grants, worst wait %llu "
           "(bound %llu); without, in 200000 steps: %llu wasted, worst completed wait %llu\n", (unsigned long long)wasted,
           (unsigned long long)worst, (unsigned long long)bound, (unsigned long long)wasted_none,
           (unsigned long long)worst_none);
    ck_assert_uint_eq(wasted, 0);
    ck_assert_uint_le(worst, bound);
    ck_assert_uint_gt(wasted_none, 0);
}
END_TEST

#include "tests/unit/unit.h"

int main(void)
{
    Suite *s = suite_create("dsm_model");
    TCase *t = tcase_create("model");
    tcase_set_timeout(t, 600); /* three 120k-op runs; slow when the host is busy */
    tcase_add_test(t, random_interleavings);
    tcase_add_test(t, random_interleavings_cache_1);
    tcase_add_test(t, random_interleavings_cache_2);
    tcase_add_test(t, random_interleavings_push);
    tcase_add_test(t, random_interleavings_push_cache_1);
    tcase_add_test(t, random_interleavings_pull);
    tcase_add_test(t, random_interleavings_pull_cache_1);
    tcase_add_test(t, random_interleavings_pull_push);
    tcase_add_test(t, push_saves_the_next_fault);
    tcase_add_test(t, contended_page_makes_progress);
    tcase_add_test(t, local_faults_coalesce);
    tcase_add_test(t, invalidation_races_upgrade);
    tcase_add_test(t, request_for_page_in_transit);
    tcase_add_test(t, home_takes_its_page_back);
    tcase_add_test(t, local_work_takes_no_fault);
    tcase_add_test(t, malformed_messages_dropped);
    suite_add_tcase(s, t);
    return run_suite(s);
}
