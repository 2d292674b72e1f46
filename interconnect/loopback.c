/* The loopback transport (see interconnect.h: ic_loopback_open): the nodes
 * of one process exchange messages through per-node queues, as bytes in
 * wire format, validated on receipt exactly like the fabric's. For unit
 * tests of the protocols above the interconnect; delays, reordering and
 * losses are drawn from a seeded generator so a failing run repeats. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "clock/clock.h"
#include "interconnect/transport.h"

#define LB_MAX_MSG (sizeof(struct ic_hdr) + IC_MAX_PAYLOAD)

struct lb_msg {
    uint64_t due;
    int from;
    uint32_t len;
    uint8_t buf[LB_MAX_MSG];
};

struct lb_shared;

struct lb_node {
    struct lb_shared *sh;
    int rank, efd;
    struct lb_msg **q; /* inbox, in delivery order */
    size_t n, cap;
    int drop[256];     /* per type sent: >0 lose that many more, -1 lose all */
    struct ic_stats stats;
    /* One-sided reads: the region this node exposed (its key plays the
     * provider's part: a read naming another key or reaching past the
     * region fails as a NIC would fail it), and where reads land. */
    uint8_t *exposed;
    size_t exposed_len;
    uint64_t key;
    uint8_t rd_buf[IC_MAX_PAYLOAD];
};

struct lb_shared {
    pthread_mutex_t lock;
    int n, open;
    struct ic_types types;
    struct ic_loopback_opts o;
    unsigned rng;
    struct lb_node *node[IC_MAX_RANKS];
};

static const struct ic_transport loopback_transport;

static unsigned roll(struct lb_shared *sh) /* 0..99; lock held */
{
    sh->rng = sh->rng * 1103515245u + 12345u;
    return (sh->rng >> 16) % 100;
}

static bool lose(struct lb_node *me, uint8_t type)
{
    struct lb_shared *sh = me->sh;
    if (me->drop[type] < 0)
        return true;
    if (me->drop[type] > 0) {
        me->drop[type]--;
        return true;
    }
    return sh->o.drop_pct > 0 && roll(sh) < (unsigned)sh->o.drop_pct;
}

static int enqueue(struct lb_node *to, struct lb_msg *m)
{
    if (to->n == to->cap) {
        size_t cap = to->cap ? 2 * to->cap : 64;
        struct lb_msg **q = realloc(to->q, cap * sizeof *q);
        if (!q)
            return -ENOMEM;
        to->q = q;
        to->cap = cap;
    }
    size_t at = to->n;
    struct lb_shared *sh = to->sh;
    /* Overtake the message before it (the fabric promises no order). */
    if (at > 0 && sh->o.reorder_pct > 0 && roll(sh) < (unsigned)sh->o.reorder_pct) {
        to->q[at] = to->q[at - 1];
        at--;
        if (m->due < to->q[at + 1]->due)
            m->due = to->q[at + 1]->due;
    }
    to->q[at] = m;
    to->n++;
    return 0;
}

static int lb_send(void *t, int dst, uint8_t type, uint64_t arg0, uint64_t arg1,
                   const void *payload, uint32_t len)
{
    struct lb_node *me = t;
    struct lb_shared *sh = me->sh;
    if (dst < 0 || dst >= sh->n || len > IC_MAX_PAYLOAD || (len && !payload))
        return -EINVAL;
    struct lb_msg *m = malloc(sizeof *m);
    if (!m)
        return -ENOMEM;
    struct ic_hdr h = {.magic = IC_MAGIC, .version = IC_VERSION, .type = type,
                       .src_rank = (uint16_t)me->rank, .dst_rank = (uint16_t)dst,
                       .payload_len = len, .arg0 = arg0, .arg1 = arg1};
    memcpy(m->buf, &h, sizeof h);
    if (len)
        memcpy(m->buf + sizeof h, payload, len);
    m->len = (uint32_t)sizeof h + len;
    m->from = me->rank;
    m->due = clock_now_ns() + sh->o.delay_ns;
    pthread_mutex_lock(&sh->lock);
    me->stats.sent++;
    me->stats.bytes_sent += len;
    struct lb_node *to = sh->node[dst];
    int r = 0;
    if (!to || lose(me, type))
        free(m); /* lost, as on a fabric that drops: the sender never knows */
    else if ((r = enqueue(to, m)) < 0)
        free(m);
    pthread_mutex_unlock(&sh->lock);
    if (to && r == 0) {
        uint64_t one = 1;
        if (write(to->efd, &one, sizeof one) < 0) {
            /* the counter is saturated: the reader wakes anyway */
        }
    }
    return r;
}

static int lb_poll(void *t, ic_handler fn, void *ctx, int max)
{
    struct lb_node *me = t;
    struct lb_shared *sh = me->sh;
    struct lb_msg *got[64];
    int k = 0;
    uint64_t now = clock_now_ns();
    if (max > 64)
        max = 64;
    pthread_mutex_lock(&sh->lock);
    while (k < max && me->n && me->q[0]->due <= now) {
        got[k++] = me->q[0];
        memmove(me->q, me->q + 1, (me->n - 1) * sizeof *me->q);
        me->n--;
    }
    pthread_mutex_unlock(&sh->lock);
    uint64_t drain;
    if (read(me->efd, &drain, sizeof drain) < 0) {
        /* nothing was signalled: fine */
    }
    int handed = 0;
    for (int i = 0; i < k; i++) {
        struct ic_hdr h;
        enum ic_drop why;
        if (ic_validate(&sh->types, got[i]->buf, got[i]->len, got[i]->from, me->rank, sh->n, &h,
                        &why) < 0) {
            me->stats.dropped[why]++;
        } else {
            me->stats.received++;
            me->stats.bytes_received += h.payload_len;
            fn(ctx, &h, h.payload_len ? got[i]->buf + sizeof h : NULL);
            handed++;
        }
        free(got[i]);
    }
    if (k == max)
        return handed; /* more may be due: the caller polls again */
    pthread_mutex_lock(&sh->lock);
    bool more = me->n > 0;
    pthread_mutex_unlock(&sh->lock);
    if (more) { /* not due yet: make sure a waiter looks again */
        uint64_t one = 1;
        if (write(me->efd, &one, sizeof one) < 0) {
        }
    }
    return handed;
}

static int lb_tick(void *t, uint64_t now) { (void)t, (void)now; return 0; }
static int lb_dead_rank(const void *t) { (void)t; return -1; }
static uint64_t lb_dead_after(const void *t) { (void)t; return IC_DEAD_NS; }
static int lb_fd(void *t) { return ((struct lb_node *)t)->efd; }

static void lb_wait_ns(void *t, uint64_t max_ns, int also_fd)
{
    struct lb_node *me = t;
    struct lb_shared *sh = me->sh;
    /* Messages already queued but not yet due: sleep until the first is. */
    pthread_mutex_lock(&sh->lock);
    uint64_t now = clock_now_ns();
    if (me->n && me->q[0]->due > now && me->q[0]->due - now < max_ns)
        max_ns = me->q[0]->due - now;
    bool due = me->n && me->q[0]->due <= now;
    pthread_mutex_unlock(&sh->lock);
    if (due)
        return;
    struct pollfd p[2] = {{.fd = me->efd, .events = POLLIN}, {.fd = also_fd, .events = POLLIN}};
    struct timespec ts = {(time_t)(max_ns / 1000000000ULL), (long)(max_ns % 1000000000ULL)};
    ppoll(p, 2, &ts, NULL);
}

static const struct ic_stats *lb_stats(const void *t) { return &((const struct lb_node *)t)->stats; }
static const char *lb_name(const void *t) { (void)t; return "loopback"; }

static int lb_expose(void *t, void *base, size_t len, struct ic_region *out)
{
    struct lb_node *me = t;
    pthread_mutex_lock(&me->sh->lock);
    int r = me->exposed ? -EBUSY : 0;
    if (!r) {
        me->exposed = base;
        me->exposed_len = len;
        me->key = 0x10000u + (uint64_t)me->rank * 7919u; /* any value a peer could get wrong */
        *out = (struct ic_region){.addr = 0, .key = me->key, .len = len};
    }
    pthread_mutex_unlock(&me->sh->lock);
    return r;
}

static int lb_read(void *t, int peer, const struct ic_region *rg, uint64_t offset, size_t len,
                   const void **data)
{
    struct lb_node *me = t;
    struct lb_shared *sh = me->sh;
    pthread_mutex_lock(&sh->lock);
    struct lb_node *p = sh->node[peer];
    int r = 0;
    if (!ic_region_holds(rg, offset, len) || rg->addr + offset < rg->addr) {
        me->stats.read_rejected++;
        r = -ERANGE;
    } else if (!p || !p->exposed || rg->key != p->key || rg->addr + offset > p->exposed_len ||
               len > p->exposed_len - (rg->addr + offset)) {
        me->stats.read_errors++; /* what the owner's NIC would refuse */
        r = p ? -EIO : -EPIPE;
    } else {
        memcpy(me->rd_buf, p->exposed + rg->addr + offset, len);
        me->stats.reads++;
        *data = me->rd_buf;
    }
    pthread_mutex_unlock(&sh->lock);
    return r;
}

static void drop_ref(struct lb_shared *sh)
{
    pthread_mutex_lock(&sh->lock);
    int left = --sh->open;
    pthread_mutex_unlock(&sh->lock);
    if (!left) {
        pthread_mutex_destroy(&sh->lock);
        free(sh);
    }
}

static void lb_close(void *t)
{
    struct lb_node *me = t;
    struct lb_shared *sh = me->sh;
    pthread_mutex_lock(&sh->lock);
    sh->node[me->rank] = NULL;
    pthread_mutex_unlock(&sh->lock);
    for (size_t i = 0; i < me->n; i++)
        free(me->q[i]);
    free(me->q);
    close(me->efd);
    free(me);
    drop_ref(sh);
}

static const struct ic_transport loopback_transport = {
    "loopback", lb_send, lb_poll, lb_tick, lb_dead_rank, lb_dead_after, lb_fd, lb_wait_ns,
    lb_stats, lb_name, NULL, NULL, lb_close, lb_expose, lb_read,
};

int ic_loopback_open(int n, const struct ic_types *types, const struct ic_loopback_opts *o,
                     struct ic **out)
{
    if (n < 1 || n > IC_MAX_RANKS || !types)
        return -EINVAL;
    struct lb_shared *sh = calloc(1, sizeof *sh);
    if (!sh)
        return -ENOMEM;
    pthread_mutex_init(&sh->lock, NULL);
    sh->n = n;
    sh->types = *types;
    if (o)
        sh->o = *o;
    sh->rng = sh->o.seed ? sh->o.seed : 1;
    sh->open = 1; /* this function's own reference, dropped at the end */
    for (int i = 0; i < n; i++)
        out[i] = NULL;
    for (int i = 0; i < n; i++) {
        struct lb_node *me = calloc(1, sizeof *me);
        int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (!me || efd < 0) {
            free(me);
            if (efd >= 0)
                close(efd);
            goto fail;
        }
        me->sh = sh;
        me->rank = i;
        me->efd = efd;
        sh->node[i] = me;
        sh->open++;
        if (ic_wrap(&loopback_transport, me, i, n, &out[i]) < 0)
            goto fail;
    }
    drop_ref(sh);
    return 0;
fail:
    for (int i = 0; i < n; i++)
        if (out[i]) {
            ic_close(out[i]);
            out[i] = NULL;
        }
    drop_ref(sh);
    return -ENOMEM;
}

void ic_loopback_drop(struct ic *ic, uint8_t type, int count)
{
    struct lb_node *me = ic_transport_of(ic, &loopback_transport);
    if (!me)
        return;
    pthread_mutex_lock(&me->sh->lock);
    me->drop[type] = count;
    pthread_mutex_unlock(&me->sh->lock);
}
