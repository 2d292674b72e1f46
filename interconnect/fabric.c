/* The libfabric endpoint: open, send, poll, liveness (see interconnect.h).
 *
 * One RDM endpoint with separate transmit and receive completion queues, so
 * a sender can reap its own completions without dispatching receives. All
 * buffers are carved out of one region registered at open: NRX receive
 * slots always posted, NTX send slots on a free stack. */
#include <errno.h>
#include <pthread.h>
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_rma.h>
#include <rdma/fi_tagged.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include "clock/clock.h"
#include "interconnect/bootstrap.h"
#include "interconnect/interconnect.h"
#include "interconnect/transport.h"

/* Receives always posted. Messages beyond them take a provider's
 * unexpected-message path, and libfabric 1.17's shm provider was seen to
 * lose messages there under load (200 unpaced 4 KiB messages, both cores
 * busy: ~1 run in 5 lost some with 64 posted; none in 32 runs of up to
 * 2000 with 512). 512 slots cost ~2 MiB per node. */
#define NRX 512
#define NTX 64
#define SLOT_SIZE (sizeof(struct ic_hdr) + IC_MAX_PAYLOAD)
#define SEND_TIMEOUT_NS 5000000000ULL
#define LOG_EVERY_NS 1000000000ULL

/* Two framings on the wire. A message carrying exactly one page and no
 * arg1 travels as the bare 4096 bytes, its header folded into the tagged
 * interface's tag (arg0) and 64-bit remote CQ data; providers such as shm
 * send messages up to 4096 bytes inline, and a 32-byte header in front of a
 * page would push every page past that. Everything else travels as header
 * plus payload, with CQ data 0. CQ data layout of the compact form (which
 * needs flags 0 and arg1 < 256): bits 0-7 format (1), 8-15 version,
 * 16-23 type, 24-39 src, 40-55 dst, 56-63 arg1. */
#define WIRE_FULL 0
#define WIRE_PAGE 1

static bool compact(const struct ic_hdr *h)
{
    return h->payload_len == IC_MAX_PAYLOAD && h->arg1 < 256 && h->flags == 0;
}

static uint64_t pack_data(const struct ic_hdr *h)
{
    return WIRE_PAGE | (uint64_t)h->version << 8 | (uint64_t)h->type << 16 |
           (uint64_t)h->src_rank << 24 | (uint64_t)h->dst_rank << 40 | h->arg1 << 56;
}

/* Rebuilds the header of a compact message; false if the framing is bad. */
static bool unpack_data(uint64_t data, uint64_t tag, size_t len, struct ic_hdr *h)
{
    if ((data & 0xff) != WIRE_PAGE || len != IC_MAX_PAYLOAD)
        return false;
    *h = (struct ic_hdr){
        .magic = IC_MAGIC, .version = (uint8_t)(data >> 8), .type = (uint8_t)(data >> 16),
        .src_rank = (uint16_t)(data >> 24), .dst_rank = (uint16_t)(data >> 40),
        .arg1 = data >> 56, .payload_len = IC_MAX_PAYLOAD, .arg0 = tag,
    };
    return true;
}

struct slot {
    struct fi_context ctx; /* first: libfabric hands it back */
    uint8_t *buf;
    bool tx;
};

struct fabric {
    uint64_t dead_ns; /* a peer silent this long is dead */
    struct ic_config cfg;
    char prov_name[64];
    struct fi_info *info;
    struct fid_fabric *fabric;
    struct fid_domain *domain;
    struct fid_av *av;
    struct fid_cq *txcq, *rxcq;
    struct fid_ep *ep;
    struct fid_mr *mr;
    void *desc;
    uint8_t *region;
    /* One-sided reads (cfg.rma and the provider agreed): the region this
     * node exposes, and the one read in flight (under lock; its completion
     * comes on the send queue, told apart by its context). */
    bool rma;
    struct fid_mr *exposed;
    struct fi_context rd_ctx;
    uint8_t *rd_buf;   /* one page after the slots, registered with them */
    int rd_state;      /* 0 in flight, 1 done, -1 failed */
    bool rd_stuck;     /* a read timed out: its completion may still come */
    char rd_why[128];
    struct slot rx[NRX], tx[NTX];
    struct slot *free_tx[NTX];
    int nfree;
    fi_addr_t peer[IC_MAX_RANKS];
    pthread_mutex_t lock;
    int wait_fd;
    uint64_t last_heard[IC_MAX_RANKS];
    bool heard[IC_MAX_RANKS]; /* anything at all since the bootstrap */
    bool departed[IC_MAX_RANKS];
    uint64_t last_hb, last_log;
    int dead;
    struct ic_stats stats;
    struct ic_clock clock[IC_MAX_RANKS]; /* under lock */
};

static const char *prov_string(enum ic_provider p)
{
    return p == IC_PROV_SHM ? "shm" : p == IC_PROV_VERBS ? "verbs;ofi_rxm" : "tcp;ofi_rxm";
}

/* auto: RDMA hardware if there is any; shm when the bootstrap is on the
 * loopback (so every rank is on this host); tcp otherwise. Every rank
 * decides the same way from the same flags. */
static enum ic_provider pick_provider(const struct ic_config *c)
{
    if (c->provider != IC_PROV_AUTO)
        return c->provider;
    if (access("/dev/infiniband", F_OK) == 0)
        return IC_PROV_VERBS;
    if (!strncmp(c->bootstrap_host, "127.", 4) || !strcmp(c->bootstrap_host, "localhost") ||
        !strcmp(c->bootstrap_host, "::1"))
        return IC_PROV_SHM;
    return IC_PROV_TCP;
}

/* ofi_rxm sizes its completion queue on the core provider for every peer
 * it might ever have: (tx + rx size) x FI_UNIVERSE_SIZE, 256 by default,
 * so 65536 entries over verbs. Soft-RoCE (rxe) takes at most 32767 and
 * refuses the queue (fi_enable: "Invalid argument", and fi_pingpong's
 * "ctrl/read: no data" when its server died of it); real NICs take more,
 * but no rank has more peers than the cluster. So the universe is the
 * cluster, unless the user set it. Before the first fi_getinfo, which is
 * when libfabric reads its variables. */
static void size_universe(const struct ic_config *c)
{
    if (getenv("FI_UNIVERSE_SIZE"))
        return;
    char v[16];
    snprintf(v, sizeof v, "%d", c->size > 2 ? c->size : 2);
    setenv("FI_UNIVERSE_SIZE", v, 0);
}

static int get_info(struct fabric *ic, enum ic_provider p, char *err, size_t errlen)
{
    size_universe(&ic->cfg);
    struct fi_info *hints = fi_allocinfo();
    char ip[64] = "";
    if (!hints)
        return -ENOMEM;
    hints->caps = FI_TAGGED | FI_SOURCE;
    hints->mode = FI_CONTEXT;
    hints->ep_attr->type = FI_EP_RDM;
    hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
    hints->domain_attr->threading = FI_THREAD_DOMAIN;
    hints->fabric_attr->prov_name = strdup(prov_string(p));
    const char *node = NULL;
    uint64_t flags = 0;
    /* Bind where the cluster is reachable: for tcp the interface, for
     * verbs the RDMA device whose GID holds that address (a host may have
     * several, and with the kernel's shared RDMA namespaces every device
     * is listed in every network namespace). */
    if ((p == IC_PROV_TCP || p == IC_PROV_VERBS) &&
        bootstrap_local_ip(&ic->cfg, ip, sizeof ip) == 0) {
        node = ip;
        flags = FI_SOURCE;
    }
    int r = -FI_ENODATA;
    if (ic->cfg.rma) {
        /* With one-sided reads if the provider has them; else as without. */
        hints->caps |= FI_RMA | FI_READ | FI_REMOTE_READ;
        r = fi_getinfo(FI_VERSION(1, 9), node, NULL, flags, hints, &ic->info);
        ic->rma = r == 0;
        hints->caps &= ~(uint64_t)(FI_RMA | FI_READ | FI_REMOTE_READ);
    }
    if (!ic->rma)
        r = fi_getinfo(FI_VERSION(1, 9), node, NULL, flags, hints, &ic->info);
    fi_freeinfo(hints);
    if (r) {
        snprintf(err, errlen, "fabric provider '%s' is not usable here: %s%s", prov_string(p),
                 fi_strerror(-r), p == IC_PROV_VERBS ? " (is there an RDMA device?)" : "");
        return -ENODEV;
    }
    snprintf(ic->prov_name, sizeof ic->prov_name, "%s", ic->info->fabric_attr->prov_name);
    return 0;
}

static int open_cq(struct fabric *ic, struct fid_cq **cq, bool want_fd)
{
    struct fi_cq_attr a = {.format = FI_CQ_FORMAT_TAGGED, .size = NRX + NTX,
                           .wait_obj = want_fd ? FI_WAIT_FD : FI_WAIT_NONE};
    int r = fi_cq_open(ic->domain, &a, cq, NULL);
    if (r && want_fd) {
        a.wait_obj = FI_WAIT_NONE; /* some providers have no fd: poll instead */
        r = fi_cq_open(ic->domain, &a, cq, NULL);
    } else if (!r && want_fd && fi_control(&(*cq)->fid, FI_GETWAIT, &ic->wait_fd)) {
        ic->wait_fd = -1;
    }
    return r;
}

static int post_rx(struct fabric *ic, struct slot *s)
{
    int r;
    do {
        r = (int)fi_trecv(ic->ep, s->buf, SLOT_SIZE, ic->desc, FI_ADDR_UNSPEC, 0, ~0ULL, &s->ctx);
        if (r == -FI_EAGAIN)
            fi_cq_read(ic->rxcq, NULL, 0);
    } while (r == -FI_EAGAIN);
    return r;
}

static int setup_buffers(struct fabric *ic)
{
    size_t len = (size_t)(NRX + NTX) * SLOT_SIZE;
    len = ((len + 4095) & ~(size_t)4095) + IC_MAX_PAYLOAD; /* + the read page */
    ic->region = aligned_alloc(4096, len);
    if (!ic->region)
        return -ENOMEM;
    /* Touch every slot now: a first receive into an untouched slot page
     * took a page fault on the message path (~10 us on these hosts; half
     * the DSM's page transfers hit one before this). */
    memset(ic->region, 0, len);
    if (ic->info->domain_attr->mr_mode & FI_MR_LOCAL) {
        uint64_t access = FI_SEND | FI_RECV | (ic->rma ? FI_READ : 0);
        int r = fi_mr_reg(ic->domain, ic->region, len, access, 0, 0, 0, &ic->mr, NULL);
        if (r)
            return r;
        ic->desc = fi_mr_desc(ic->mr);
    }
    for (int i = 0; i < NRX; i++)
        ic->rx[i] = (struct slot){.buf = ic->region + (size_t)i * SLOT_SIZE};
    for (int i = 0; i < NTX; i++) {
        ic->tx[i] = (struct slot){.buf = ic->region + (size_t)(NRX + i) * SLOT_SIZE, .tx = true};
        ic->free_tx[i] = &ic->tx[i];
    }
    ic->nfree = NTX;
    ic->rd_buf = ic->region + len - IC_MAX_PAYLOAD;
    return 0;
}

/* Each step names itself in *step, so that a failure says which one: on
 * a new provider or device that is most of the diagnosis. */
static int open_endpoint(struct fabric *ic, const char **step)
{
    struct fi_av_attr ava = {.type = FI_AV_TABLE, .count = IC_MAX_RANKS};
    int r;
#define STEP(name, call) \
    if (!r) {            \
        *step = name;    \
        r = (call);      \
    }
    r = 0;
    STEP("fi_fabric", fi_fabric(ic->info->fabric_attr, &ic->fabric, NULL));
    STEP("fi_domain", fi_domain(ic->fabric, ic->info, &ic->domain, NULL));
    STEP("fi_av_open", fi_av_open(ic->domain, &ava, &ic->av, NULL));
    STEP("the send completion queue", open_cq(ic, &ic->txcq, false));
    STEP("the receive completion queue", open_cq(ic, &ic->rxcq, true));
    STEP("fi_endpoint", fi_endpoint(ic->domain, ic->info, &ic->ep, NULL));
    STEP("binding the address vector", fi_ep_bind(ic->ep, &ic->av->fid, 0));
    STEP("binding the send queue", fi_ep_bind(ic->ep, &ic->txcq->fid, FI_TRANSMIT));
    STEP("binding the receive queue", fi_ep_bind(ic->ep, &ic->rxcq->fid, FI_RECV));
    STEP("fi_enable", fi_enable(ic->ep));
    STEP("registering the message buffers", setup_buffers(ic));
#undef STEP
    if (!r)
        *step = "posting receives";
    for (int i = 0; i < NRX && !r; i++)
        r = post_rx(ic, &ic->rx[i]);
    return r;
}

static int insert_peers(struct fabric *ic, const struct ic_addr *table)
{
    for (int i = 0; i < ic->cfg.size; i++) {
        if (fi_av_insert(ic->av, table[i].bytes, 1, &ic->peer[i], 0, NULL) != 1)
            return -EINVAL;
    }
    return 0;
}

static int fabric_open(const struct ic_config *c, struct fabric **out, char *err, size_t errlen);
static void fabric_close(void *t);

int ic_fabric_open(const struct ic_config *c, void **out, char *err, size_t errlen)
{
    struct fabric *f = NULL;
    int r = fabric_open(c, &f, err, errlen);
    *out = f;
    return r;
}

static int fabric_open(const struct ic_config *c, struct fabric **out, char *err, size_t errlen)
{
    int r = ic_config_check(c, err, errlen);
    if (r < 0)
        return r;
    struct fabric *ic = calloc(1, sizeof *ic);
    if (!ic)
        return -ENOMEM;
    ic->cfg = *c;
    ic->wait_fd = -1;
    ic->dead = -1;
    ic->dead_ns = ic_dead_after_env_ns();
    pthread_mutex_init(&ic->lock, NULL);
    r = get_info(ic, pick_provider(c), err, errlen);
    if (r < 0)
        goto fail;
    const char *step = "";
    r = open_endpoint(ic, &step);
    if (r) {
        snprintf(err, errlen, "cannot open a '%s' endpoint on %s: %s: %s", ic->prov_name,
                 ic->info->domain_attr->name ? ic->info->domain_attr->name : "?", step,
                 fi_strerror(-r));
        r = -EIO;
        goto fail;
    }
    struct ic_addr mine = {.len = IC_ADDR_MAX}, table[IC_MAX_RANKS];
    if (fi_getname(&ic->ep->fid, mine.bytes, &mine.len)) {
        snprintf(err, errlen, "cannot read this endpoint's address");
        r = -EIO;
        goto fail;
    }
    r = bootstrap_exchange(c, ic->prov_name, &mine, table, err, errlen);
    if (r < 0)
        goto fail;
    if (insert_peers(ic, table) < 0) {
        snprintf(err, errlen, "the fabric refused a peer's address");
        r = -EIO;
        goto fail;
    }
    uint64_t t = clock_now_ns();
    for (int i = 0; i < c->size; i++)
        ic->last_heard[i] = t;
    ic->last_hb = t;
    *out = ic;
    return 0;
fail:
    fabric_close(ic);
    return r;
}

/* ---- sending ---------------------------------------------------------------- */

static void reap_tx(struct fabric *ic)
{
    struct fi_cq_tagged_entry e[16];
    ssize_t n;
    while ((n = fi_cq_read(ic->txcq, e, 16)) > 0)
        for (ssize_t i = 0; i < n; i++) {
            if (e[i].op_context == &ic->rd_ctx)
                ic->rd_state = 1;
            else
                ic->free_tx[ic->nfree++] = (struct slot *)e[i].op_context;
        }
    if (n == -FI_EAVAIL) {
        struct fi_cq_err_entry ee = {0};
        if (fi_cq_readerr(ic->txcq, &ee, 0) > 0 && ee.op_context == &ic->rd_ctx) {
            ic->rd_state = -1;
            snprintf(ic->rd_why, sizeof ic->rd_why, "%s",
                     fi_cq_strerror(ic->txcq, ee.prov_errno, ee.err_data, NULL, 0));
        } else if (ee.op_context) {
            ic->free_tx[ic->nfree++] = (struct slot *)ee.op_context;
        }
    }
}

/* A header from this rank, without payload. */
static struct ic_hdr make_hdr(const struct fabric *ic, int dst, uint8_t type, uint64_t arg0,
                              uint64_t arg1)
{
    return (struct ic_hdr){.magic = IC_MAGIC, .version = IC_VERSION, .type = type,
                           .src_rank = (uint16_t)ic->cfg.rank, .dst_rank = (uint16_t)dst,
                           .arg0 = arg0, .arg1 = arg1};
}

static int send_locked(struct fabric *ic, int dst, const struct ic_hdr *h, const void *payload)
{
    uint64_t start = 0;
    while (ic->nfree == 0) {
        reap_tx(ic);
        if (!start)
            start = clock_now_ns();
        else if (clock_now_ns() - start > SEND_TIMEOUT_NS)
            return -ETIMEDOUT;
    }
    struct slot *s = ic->free_tx[--ic->nfree];
    bool page = compact(h);
    size_t len = page ? IC_MAX_PAYLOAD : sizeof *h + h->payload_len;
    if (page) {
        memcpy(s->buf, payload, IC_MAX_PAYLOAD);
    } else {
        memcpy(s->buf, h, sizeof *h);
        if (h->payload_len)
            memcpy(s->buf + sizeof *h, payload, h->payload_len);
    }
    uint64_t data = page ? pack_data(h) : WIRE_FULL, tag = page ? h->arg0 : 0;
    for (;;) {
        ssize_t r = fi_tsenddata(ic->ep, s->buf, len, ic->desc, data, ic->peer[dst], tag, &s->ctx);
        if (r == 0)
            break;
        if (r != -FI_EAGAIN || (start && clock_now_ns() - start > SEND_TIMEOUT_NS)) {
            ic->free_tx[ic->nfree++] = s;
            return r == -FI_EAGAIN ? -ETIMEDOUT : -EIO;
        }
        if (!start)
            start = clock_now_ns();
        reap_tx(ic);
        fi_cq_read(ic->rxcq, NULL, 0); /* some providers progress only here */
    }
    ic->stats.sent++;
    ic->stats.bytes_sent += len;
    return 0;
}

static int fabric_send(void *t, int dst, uint8_t type, uint64_t arg0, uint64_t arg1,
                       const void *payload, uint32_t len)
{
    struct fabric *ic = t;
    if (dst < 0 || dst >= ic->cfg.size || dst == ic->cfg.rank || len > IC_MAX_PAYLOAD ||
        !ic->cfg.types.known[type])
        return -EINVAL;
    struct ic_hdr h = make_hdr(ic, dst, type, arg0, arg1);
    h.payload_len = len;
    pthread_mutex_lock(&ic->lock);
    int r = send_locked(ic, dst, &h, payload);
    pthread_mutex_unlock(&ic->lock);
    return r;
}

/* ---- receiving ---------------------------------------------------------------- */

static const char *const drop_name[IC_DROP_COUNT] = {
    "too short", "bad magic", "unsupported version", "unknown type", "bad payload length",
    "wrong sender rank", "not addressed to us",
};

static void note_drop(struct fabric *ic, enum ic_drop why, int from)
{
    ic->stats.dropped[why]++;
    uint64_t t = clock_now_ns();
    if (t - ic->last_log < LOG_EVERY_NS)
        return;
    ic->last_log = t;
    fprintf(stderr, "amalgam: dropped a message from %s%d: %s (%llu dropped so far)\n",
            from >= 0 ? "rank " : "unknown peer ", from, drop_name[why],
            (unsigned long long)(ic->stats.dropped[why]));
}

static int peer_of(const struct fabric *ic, fi_addr_t a)
{
    if (a == FI_ADDR_NOTAVAIL || a == FI_ADDR_UNSPEC)
        return -1;
    for (int i = 0; i < ic->cfg.size; i++)
        if (ic->peer[i] == a)
            return i;
    return -2; /* not a member of the cluster */
}

/* Lock held. The TSC is read as late as it can be: the answer's error
 * bound holds for any reading between the probe's arrival and the send. */
static void clock_reply(struct fabric *ic, int to, uint64_t t0)
{
    struct ic_hdr h = make_hdr(ic, to, IC_T_CLOCK_REP, t0, __rdtsc());
    send_locked(ic, to, &h, NULL);
}

bool ic_clock_take(struct ic_clock *c, uint64_t t0, uint64_t t1, uint64_t t2)
{
    if (!c->pending_t0 || t0 != c->pending_t0 || t2 < t0)
        return false;
    c->pending_t0 = 0;
    uint64_t rtt = t2 - t0;
    if (c->samples++ == 0 || rtt < c->best_rtt) {
        c->best_rtt = rtt;
        c->best_offset = (int64_t)(t1 - t0) - (int64_t)(rtt / 2);
    }
    return true;
}

static void clock_answer(struct fabric *ic, int from, uint64_t t0, uint64_t t1)
{
    uint64_t t2 = __rdtsc();
    ic_clock_take(&ic->clock[from], t0, t1, t2);
}

static int fabric_clock_probe(void *t, int peer)
{
    struct fabric *ic = t;
    if (peer < 0 || peer >= ic->cfg.size || peer == ic->cfg.rank)
        return -EINVAL;
    pthread_mutex_lock(&ic->lock);
    uint64_t t0 = __rdtsc();
    ic->clock[peer].pending_t0 = t0 ? t0 : 1;
    struct ic_hdr h = make_hdr(ic, peer, IC_T_CLOCK_REQ, ic->clock[peer].pending_t0, 0);
    int r = send_locked(ic, peer, &h, NULL);
    pthread_mutex_unlock(&ic->lock);
    return r;
}

static int fabric_clock_offset(void *t, int peer, int64_t *offset, uint64_t *rtt,
                               uint64_t *samples)
{
    struct fabric *ic = t;
    if (peer < 0 || peer >= ic->cfg.size)
        return -EINVAL;
    pthread_mutex_lock(&ic->lock);
    struct ic_clock c = ic->clock[peer];
    pthread_mutex_unlock(&ic->lock);
    *offset = c.best_offset;
    *rtt = c.best_rtt;
    *samples = c.samples;
    return c.samples ? 0 : -EAGAIN;
}


static int handle_rx(struct fabric *ic, struct slot *s, const struct fi_cq_tagged_entry *e,
                     fi_addr_t src, ic_handler fn, void *ctx)
{
    struct ic_hdr h, page_hdr = {0};
    enum ic_drop why;
    int from = peer_of(ic, src), handed = 0;
    uint64_t data = (e->flags & FI_REMOTE_CQ_DATA) ? e->data : WIRE_FULL;
    /* Validation reads a header and a length: for a compact message, the
     * rebuilt header stands in front of the page. */
    const void *wire = s->buf;
    size_t len = e->len;
    const uint8_t *body = s->buf + sizeof h;
    if (data != WIRE_FULL) {
        /* An unknown framing leaves page_hdr zero: dropped as a bad magic. */
        unpack_data(data, e->tag, e->len, &page_hdr);
        wire = &page_hdr;
        len = sizeof page_hdr + e->len;
        body = s->buf;
    }
    if (from == -2) {
        note_drop(ic, IC_DROP_SENDER, -1);
    } else if (ic_validate(&ic->cfg.types, wire, len, from, ic->cfg.rank, ic->cfg.size, &h,
                           &why) < 0) {
        note_drop(ic, why, from);
    } else {
        ic->stats.received++;
        ic->stats.bytes_received += len;
        ic->last_heard[h.src_rank] = clock_now_ns();
        ic->heard[h.src_rank] = true;
        if (h.type == IC_T_BYE)
            ic->departed[h.src_rank] = true;
        else if (h.type == IC_T_CLOCK_REQ)
            clock_reply(ic, h.src_rank, h.arg0);
        else if (h.type == IC_T_CLOCK_REP)
            clock_answer(ic, h.src_rank, h.arg0, h.arg1);
        else if (h.type != IC_T_HEARTBEAT && fn) {
            /* The handler may send, which takes the lock. The slot stays
             * ours until it is posted again below. */
            pthread_mutex_unlock(&ic->lock);
            fn(ctx, &h, h.payload_len ? body : NULL);
            pthread_mutex_lock(&ic->lock);
            handed = 1;
        }
    }
    post_rx(ic, s);
    return handed;
}

static int fabric_poll(void *t, ic_handler fn, void *ctx, int max)
{
    struct fabric *ic = t;
    struct fi_cq_tagged_entry e[16];
    fi_addr_t src[16];
    int handed = 0;
    pthread_mutex_lock(&ic->lock);
    reap_tx(ic);
    while (handed < max) {
        ssize_t n = fi_cq_readfrom(ic->rxcq, e, 16, src);
        if (n == -FI_EAVAIL) {
            struct fi_cq_err_entry ee = {0};
            if (fi_cq_readerr(ic->rxcq, &ee, 0) > 0 && ee.op_context)
                post_rx(ic, (struct slot *)ee.op_context);
            continue;
        }
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            handed += handle_rx(ic, (struct slot *)e[i].op_context, &e[i], src[i], fn, ctx);
    }
    pthread_mutex_unlock(&ic->lock);
    return handed;
}

/* One attempt, no waiting: a heartbeat that cannot leave now (a dead or
 * congested peer) is simply skipped; missing ones are what we detect. */
static void send_nowait(struct fabric *ic, int dst, uint8_t type)
{
    pthread_mutex_lock(&ic->lock);
    reap_tx(ic);
    if (ic->nfree > 0) {
        struct slot *s = ic->free_tx[--ic->nfree];
        struct ic_hdr h = make_hdr(ic, dst, type, 0, 0);
        memcpy(s->buf, &h, sizeof h);
        if (fi_tsenddata(ic->ep, s->buf, sizeof h, ic->desc, WIRE_FULL, ic->peer[dst], 0,
                         &s->ctx) == 0)
            ic->stats.sent++;
        else
            ic->free_tx[ic->nfree++] = s;
    }
    pthread_mutex_unlock(&ic->lock);
}

static int fabric_tick(void *t, uint64_t now)
{
    struct fabric *ic = t;
    for (int r = 0; r < ic->cfg.size; r++) {
        if (r == ic->cfg.rank || ic->departed[r])
            continue;
        /* A peer still starting (loading a kernel, mapping its memory:
         * seconds for a large guest, or in the nested L1) has not sent its
         * first heartbeat yet: it gets IC_START_NS, not the dead time. */
        uint64_t limit = ic->heard[r] || ic->dead_ns > IC_START_NS ? ic->dead_ns : IC_START_NS;
        if (now > ic->last_heard[r] && now - ic->last_heard[r] > limit) {
            ic->dead = r;
            return -EPIPE;
        }
    }
    if (now - ic->last_hb >= IC_HEARTBEAT_NS) {
        ic->last_hb = now;
        for (int r = 0; r < ic->cfg.size; r++)
            if (r != ic->cfg.rank && !ic->departed[r])
                send_nowait(ic, r, IC_T_HEARTBEAT);
    }
    return 0;
}

static int fabric_dead_rank(const void *t)
{
    return ((const struct fabric *)t)->dead;
}

static const char *fabric_provider_name(const void *t)
{
    return ((const struct fabric *)t)->prov_name;
}

static int fabric_fd(void *t)
{
    return ((struct fabric *)t)->wait_fd;
}

static uint64_t fabric_dead_after_ns(const void *t)
{
    return ((const struct fabric *)t)->dead_ns;
}

static const struct ic_stats *fabric_stats(const void *t)
{
    return &((const struct fabric *)t)->stats;
}

static void fabric_wait_ns(void *t, uint64_t max_ns, int also_fd)
{
    struct fabric *ic = t;
    struct fid *f = &ic->rxcq->fid;
    struct pollfd p[2] = {{.fd = also_fd, .events = POLLIN}, {.fd = ic->wait_fd, .events = POLLIN}};
    if (ic->wait_fd >= 0) {
        if (fi_trywait(ic->fabric, &f, 1) == FI_SUCCESS)
            poll(p, 2, (int)((max_ns + 999999) / 1000000)); /* a negative fd is ignored */
        return;
    }
    struct timespec ts = {(time_t)(max_ns / 1000000000ULL), (long)(max_ns % 1000000000ULL)};
    if (also_fd >= 0)
        ppoll(p, 1, &ts, NULL);
    else
        nanosleep(&ts, NULL);
}


/* ---- one-sided reads ----------------------------------------------------- */

static int fabric_expose(void *t, void *base, size_t len, struct ic_region *out)
{
    struct fabric *ic = t;
    if (!ic->rma)
        return -ENOTSUP;
    if (ic->exposed)
        return -EBUSY;
    uint64_t mode = ic->info->domain_attr->mr_mode;
    /* Key 1: the message buffers took 0 where the caller picks keys. */
    int r = fi_mr_reg(ic->domain, base, len, FI_REMOTE_READ, 0, 1, 0, &ic->exposed, NULL);
    if (r) {
        ic->exposed = NULL;
        return r == -FI_ENOMEM || r == -FI_EAGAIN ? -ENOMEM : r < 0 ? r : -EIO;
    }
    *out = (struct ic_region){.addr = (mode & FI_MR_VIRT_ADDR) ? (uint64_t)(uintptr_t)base : 0,
                              .key = fi_mr_key(ic->exposed), .len = len};
    return 0;
}

static void read_failed(struct fabric *ic, int peer, const char *why)
{
    ic->stats.read_errors++;
    uint64_t t = clock_now_ns();
    if (t - ic->last_log < LOG_EVERY_NS)
        return;
    ic->last_log = t;
    fprintf(stderr, "amalgam: a one-sided read from rank %d failed: %s (%llu so far)\n", peer,
            why, (unsigned long long)ic->stats.read_errors);
}

/* Lock held. Progress comes from reading the queues, as for sends. */
static int read_locked(struct fabric *ic, int peer, uint64_t addr, uint64_t key, size_t len)
{
    uint64_t start = clock_now_ns();
    ic->rd_state = 0;
    for (;;) {
        ssize_t r = fi_read(ic->ep, ic->rd_buf, len, ic->desc, ic->peer[peer], addr, key,
                            &ic->rd_ctx);
        if (r == 0)
            break;
        if (r != -FI_EAGAIN) {
            snprintf(ic->rd_why, sizeof ic->rd_why, "the provider refused it: %s",
                     fi_strerror((int)-r));
            return -EIO;
        }
        if (clock_now_ns() - start > ic->dead_ns)
            return -ETIMEDOUT;
        reap_tx(ic);
        fi_cq_read(ic->rxcq, NULL, 0);
    }
    while (ic->rd_state == 0) {
        reap_tx(ic);
        if (ic->rd_state)
            break;
        fi_cq_read(ic->rxcq, NULL, 0);
        if (clock_now_ns() - start > ic->dead_ns) {
            ic->rd_stuck = true; /* its completion may still land in rd_buf */
            return -ETIMEDOUT;
        }
    }
    return ic->rd_state > 0 ? 0 : -EIO;
}

static int fabric_read(void *t, int peer, const struct ic_region *rg, uint64_t offset,
                       size_t len, const void **data)
{
    struct fabric *ic = t;
    if (!ic->rma)
        return -ENOTSUP;
    pthread_mutex_lock(&ic->lock);
    int r;
    if (!ic_region_holds(rg, offset, len) || rg->addr + offset < rg->addr) {
        ic->stats.read_rejected++;
        r = -ERANGE;
    } else if (ic->rd_stuck) {
        r = -EIO; /* the buffer is not ours again until that read ends */
        read_failed(ic, peer, "an earlier read never completed");
    } else {
        r = read_locked(ic, peer, rg->addr + offset, rg->key, len);
        if (r == 0) {
            ic->stats.reads++;
            *data = ic->rd_buf;
        } else {
            read_failed(ic, peer, r == -ETIMEDOUT ? "no completion within the liveness time-out"
                                                  : ic->rd_why);
        }
    }
    pthread_mutex_unlock(&ic->lock);
    return r;
}

static void fabric_close(void *t)
{
    struct fabric *ic = t;
    if (!ic)
        return;
    if (ic->ep) {
        for (int r = 0; r < ic->cfg.size && ic->info; r++)
            if (r != ic->cfg.rank && !ic->departed[r] && r != ic->dead && ic->last_hb)
                send_nowait(ic, r, IC_T_BYE);
        /* Let the goodbyes leave before the endpoint goes. Only once the
         * peers are known (last_hb set): the shm provider crashed reading
         * the queue of an endpoint whose bootstrap had failed. */
        uint64_t t = clock_now_ns();
        while (ic->last_hb && ic->nfree < NTX && clock_now_ns() - t < 200000000ULL)
            reap_tx(ic);
        fi_close(&ic->ep->fid);
    }
    if (ic->exposed)
        fi_close(&ic->exposed->fid);
    if (ic->mr)
        fi_close(&ic->mr->fid);
    if (ic->txcq)
        fi_close(&ic->txcq->fid);
    if (ic->rxcq)
        fi_close(&ic->rxcq->fid);
    if (ic->av)
        fi_close(&ic->av->fid);
    if (ic->domain)
        fi_close(&ic->domain->fid);
    if (ic->fabric)
        fi_close(&ic->fabric->fid);
    if (ic->info)
        fi_freeinfo(ic->info);
    free(ic->region);
    pthread_mutex_destroy(&ic->lock);
    free(ic);
}

/* ---- the transport table (transport.h) ------------------------------------ */

const struct ic_transport ic_fabric_transport = {
    "libfabric", fabric_send, fabric_poll, fabric_tick, fabric_dead_rank, fabric_dead_after_ns,
    fabric_fd, fabric_wait_ns, fabric_stats, fabric_provider_name, fabric_clock_probe,
    fabric_clock_offset, fabric_close, fabric_expose, fabric_read,
};
