/* dsm: guest memory kept coherent across the nodes, page by page.
 *
 * Home-based MSI with write-invalidate. Every 4 KiB page has a home (the
 * node whose NUMA slice holds it); the home's directory knows who holds the
 * page and serialises every transaction on it: a page is busy from the
 * request it accepts until the requester's Unblock, and requests arriving
 * meanwhile wait in a queue. Each node also caches pages: I (no access),
 * S (read-only), M (read-write).
 *
 * Invariants: at any moment, for every page, either one node maps it
 * read-write and none read-only, or none maps it read-write (single writer,
 * many readers); an invalidation or downgrade is acknowledged only after the
 * local mapping is gone (ops->map returned); a dirty copy is freed only
 * once its home has acknowledged the write-back; a node's own home pages start
 * M at home, so a workload that stays local takes no DSM fault; nothing is
 * allocated after dsm_node_init().
 *
 * The engine is pure: it never blocks and does no I/O itself. The host
 * (VMM node or the model test) gives it faults and received messages and
 * carries out what it asks through struct dsm_ops. Not thread-safe: the
 * host serialises calls per node.
 */
#ifndef AMALGAM_DSM_DSM_H
#define AMALGAM_DSM_DSM_H

#include <stdbool.h>
#include <stdint.h>

#define DSM_PAGE_SIZE 4096
#define DSM_MAX_NODES 64

/* The hold window (dsm_set_hold): a page taken from nodes that got it less
 * than a window ago waits for the window to end. The window follows the
 * measured transaction time, within these bounds; per page it doubles up
 * to 2^DSM_HOLD_LOG2_MAX times while the page ping-pongs. */
#define DSM_HOLD_MIN_NS 20000ULL    /* ~ one remote fault on an idle host */
#define DSM_HOLD_MAX_NS 50000000ULL /* a vCPU thread woken in the nested L1 */
#define DSM_HOLD_LOG2_MAX 3

/* Message types: the interconnect reserves 0x20-0x5f for the DSM. */
enum dsm_msg_type {
    DSM_GETS = 0x20,    /* cache -> home: read copy wanted */
    DSM_GETM = 0x21,    /* cache -> home: write copy wanted */
    DSM_DATA = 0x22,    /* home -> cache: page contents, mode S or M */
    DSM_GRANT = 0x23,   /* home -> cache: upgrade a copy it holds to M, no data */
    DSM_INV = 0x24,     /* home -> sharer: drop your copy */
    DSM_INV_ACK = 0x25, /* sharer -> home: dropped */
    DSM_RECALL = 0x26,  /* home -> owner: write back, keep S (mode S) or drop (mode I) */
    DSM_WB_DATA = 0x27, /* owner -> home: the page, after downgrading/dropping */
    DSM_UNBLOCK = 0x28, /* cache -> home: transaction complete */
    DSM_PUTM = 0x29,    /* cache -> home: evicting my modified copy, here it is */
    DSM_PUT_ACK = 0x2a, /* home -> cache: the home has it; free your copy */
    DSM_PUSH = 0x2b,    /* home -> cache: a read copy nobody asked for (batching);
                         * answered by Unblock, mode S if kept, I if declined */
    DSM_DATA_PULL = 0x2c, /* home -> cache: as DATA, but the page stays in the home's
                           * memory: the cache reads it one-sided (ops.pull), then
                           * Unblocks. The home's copy cannot change meanwhile: the
                           * page is busy until that Unblock (dsm_set_pull). */
    DSM_MSG_FIRST = DSM_GETS,
    DSM_MSG_LAST = DSM_DATA_PULL,
};

enum dsm_mode { DSM_MODE_I = 0, DSM_MODE_S = 1, DSM_MODE_M = 2 };

/* Whether messages of this type carry a page (4 KiB) and no others do. */
bool dsm_carries_data(uint8_t type);

struct dsm_msg {
    uint8_t type;
    uint8_t mode; /* DATA, RECALL: the mode granted/kept; GETM: S if the
                   * requester holds a read copy it means to upgrade */
    uint16_t src;
    uint32_t pad;
    uint64_t page;
};

/* Local access the host must set up for a page. */
enum dsm_prot { DSM_PROT_NONE = 0, DSM_PROT_READ = 1, DSM_PROT_WRITE = 2 };

struct dsm_ops {
    void *ctx;
    /* Sends m to node dst; payload is NULL or 4 KiB. When dst is this node
     * (the home talking to its own cache side) the data is already in
     * place: payload is then a non-NULL marker that must not be read. */
    int (*send)(void *ctx, int dst, const struct dsm_msg *m, const void *payload);
    /* Sets the guest's access to the page; returns once it is in force.
     * A failure leaves the guest with more access than the protocol allows:
     * the engine counts it (map_errors) and the host must treat it as fatal. */
    int (*map)(void *ctx, uint64_t page, enum dsm_prot prot);
    /* Reads this node's copy of the page (4 KiB) into buf and returns it,
     * or returns the copy itself where that costs nothing. Never faults. */
    const uint8_t *(*page_read)(void *ctx, uint64_t page, uint8_t *buf);
    /* Replaces this node's copy of the page with data. Never faults. */
    void (*page_write)(void *ctx, uint64_t page, const uint8_t *data);
    /* Faulters waiting on the page may retry. */
    void (*wake)(void *ctx, uint64_t page);
    uint64_t (*now_ns)(void *ctx);
    /* Optional: this node's copy of a page it is not home of is no longer
     * needed; the host may free its memory (the next install rewrites it). */
    void (*drop)(void *ctx, uint64_t page);
    /* Optional (needed where DATA_PULL may arrive): replaces this node's
     * copy of the page with the home's (node `from`), read one-sided from
     * the home's memory. 0, or a negative errno: the engine counts it
     * (pull_errors) and leaves the request waiting; the host must treat it
     * as fatal, as it does a map error. */
    int (*pull)(void *ctx, int from, uint64_t page);
};

#define DSM_HIST_BUCKETS 32
enum dsm_drop { DSM_DROP_TYPE, DSM_DROP_PAGE, DSM_DROP_SRC, DSM_DROP_PAYLOAD, DSM_DROP_STATE,
                DSM_DROP_COUNT };

struct dsm_stats {
    uint64_t read_faults, write_faults, upgrades;
    uint64_t inv_sent, inv_received, recalls_sent, recalls_received;
    uint64_t bytes_moved;
    uint64_t evictions, writebacks; /* copies dropped for room; of those, dirty */
    uint64_t map_errors;
    uint64_t holds; /* requests that waited for a page's hold window */
    uint64_t pushes_sent, pushes_kept, pushes_declined; /* batching (dsm_set_push) */
    uint64_t pulls, pull_errors; /* pages read one-sided from their home (dsm_set_pull) */
    uint64_t dropped[DSM_DROP_COUNT];
    uint64_t service_ns_log2[DSM_HIST_BUCKETS]; /* fault-to-access time histogram */
};

struct dsm_dir;

struct dsm_node {
    int self, nnodes;
    uint64_t npages;
    int (*home_of)(void *hctx, uint64_t page);
    void *hctx;
    struct dsm_ops ops;
    uint8_t *cache;       /* enum dsm_cstate per page */
    uint64_t *fault_t0;   /* when the outstanding request started */
    struct dsm_dir *dir;  /* per page; used where this node is home */
    /* Copies of other nodes' pages: at most cache_limit (0: no limit) are
     * kept; the oldest installed is evicted first (FIFO ring). */
    uint64_t cache_limit, cached, writing_back; /* writing_back: in MI */
    uint64_t *ring;
    uint8_t *in_ring;
    uint64_t ring_head, ring_count;
    uint8_t *scratch; /* one page: data read for sending (no allocation then) */
    /* Hold windows: pages (homed here) with a request waiting for one to
     * end; the bounds; a moving average of transaction times here. */
    uint64_t *held, nheld;
    /* Per page, for finding hot pages: copies this node fetched (faults
     * that went to the home) and copies it had taken away (invalidations
     * and recalls received). Saturating. */
    uint32_t *fetches, *losses;
    uint64_t hold_min_ns, hold_max_ns, txn_avg_ns;
    unsigned push; /* batching: read copies sent along with one asked for */
    bool pull;     /* answer other nodes with DATA_PULL instead of DATA */
    struct dsm_stats stats;
};

/* Sets up a node; its home pages start M (mapped read-write by the host
 * beforehand), all others I. 0 or -ENOMEM. */
int dsm_node_init(struct dsm_node *n, int self, int nnodes, uint64_t npages,
                  int (*home_of)(void *hctx, uint64_t page), void *hctx,
                  const struct dsm_ops *ops);
void dsm_node_free(struct dsm_node *n);

/* Bounds how many copies of other nodes' pages this node keeps (0: no
 * bound). Clean copies are dropped silently, dirty ones written back home
 * (PUTM), oldest first; a node's own home pages are never evicted. This is
 * what lets a guest's memory exceed what one node can hold. */
void dsm_set_cache_limit(struct dsm_node *n, uint64_t pages);

/* Bounds the hold window (defaults DSM_HOLD_MIN_NS, DSM_HOLD_MAX_NS; a
 * model test uses its own clock's units). min 0 and max 0: no window. */
void dsm_set_hold(struct dsm_node *n, uint64_t min_ns, uint64_t max_ns);

/* Batching: when another node asks this home for a read copy of a page,
 * the home also sends it read copies of up to `pages` (<= DSM_PUSH_MAX) of
 * the following pages homed here that it has no copy of and that nobody
 * else holds writable or is waiting for. Each is a transaction of its own
 * (the page is busy until the receiver's Unblock), so an invalidation can
 * never overtake it; a receiver that asked for the page meanwhile declines
 * it and its own request is served next. 0 (the default): none. The home
 * gives up write access to a page it pushes, so a page it writes later
 * costs it an upgrade: measured in docs/dsm.md. */
#define DSM_PUSH_MAX 64
#define DSM_PUSH_DEFAULT 0 /* amalgam run's --dsm-push: measured in docs/dsm.md */
void dsm_set_push(struct dsm_node *n, unsigned pages);

/* One-sided pulls: this home answers another node's request with
 * DATA_PULL (no page on the wire; the requester reads the page from this
 * node's memory) instead of DATA. Every node that may receive one needs
 * ops.pull. Write-backs, evictions and pushes still carry their page: the
 * sender frees or may change its copy right after sending. Off by default;
 * which wins per provider is measured in docs/interconnect.md. */
void dsm_set_pull(struct dsm_node *n, bool on);

/* The hold window now, before a page's own doubling (for statistics). */
uint64_t dsm_hold_base_ns(const struct dsm_node *n);

/* Starts the requests whose hold window is over. The host calls it from
 * the loop that owns the engine; returns the ns until the next window ends
 * (UINT64_MAX: none waits). */
uint64_t dsm_tick(struct dsm_node *n);

/* A local access faulted. Returns 0 when the page already allows it (retry
 * at once), 1 when the faulter must wait for ops->wake, or -EINVAL. */
int dsm_fault(struct dsm_node *n, uint64_t page, bool write);

/* A message arrived from node `from` (as the interconnect attests). Bad or
 * impossible messages are dropped and counted: returns -EPROTO then. */
int dsm_receive(struct dsm_node *n, int from, const struct dsm_msg *m, const void *payload);

/* The k pages (k <= 64) with the most fetches + losses at this node, most
 * first, into out[]; returns how many (pages never touched are left out). */
struct dsm_hot_page {
    uint64_t page;
    uint32_t fetches, losses;
};
int dsm_hot_pages(const struct dsm_node *n, struct dsm_hot_page *out, int k);

/* What the guest may do with the page here now (for checks and tests). */
enum dsm_prot dsm_access(const struct dsm_node *n, uint64_t page);
/* True if no transaction is in flight on any page this node touches. */
bool dsm_quiescent(const struct dsm_node *n);

#endif
