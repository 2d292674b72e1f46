/* Internal to dsm/ and the VMM: the coherence engine attached to real
 * memory and a real fabric.
 *
 * The region is a memfd mapped twice (see vmm/memory.h): the guest view is
 * registered with userfaultfd (MISSING | MINOR | WP) and is what guest and
 * VMM threads touch. Page contents move with pread/pwrite on the memfd (the
 * agent view serves only as an unregistered address for a start-up probe).
 * Access changes: invalidate = MADV_DONTNEED on
 * the guest view (the page stays in the memfd), downgrade =
 * UFFDIO_WRITEPROTECT, grant = UFFDIO_CONTINUE (with MODE_WP for read-only)
 * or write-unprotect; a copy given up (invalidated, evicted, written back)
 * is punched out of the memfd. A node's home pages are mapped writable
 * before the view is registered, so local work never faults into the DSM.
 *
 * One thread owns the engine: the node's message loop, which calls
 * dsm_host_poll (userfaultfd events -> dsm_fault) and hands DSM messages to
 * dsm_host_on_message (-> dsm_receive). A remote fault is then served by the
 * thread that will also receive the answer, with no hand-off between a
 * fault thread and a message thread (one context switch less per fault).
 * So nothing on that thread may touch the guest view: it would wait for
 * itself. Messages a node sends itself are queued and handled after the
 * current engine call, never recursively.
 */
#ifndef AMALGAM_DSM_HOST_H
#define AMALGAM_DSM_HOST_H

#include <stdbool.h>
#include <stdint.h>

#include "dsm/dsm.h"
#include "interconnect/interconnect.h"

#define DSM_LOCAL_QUEUE 256

struct dsm_local_msg {
    struct dsm_msg m;
    bool has_payload;
};

/* What a DATA_PULL carries: where the page can be read (ic_read), as the
 * home's exposed region and the page number of its first byte. 32 bytes,
 * little-endian on the wire (x86 only). */
struct dsm_pull_desc {
    struct {
        uint64_t addr, key, len;
    } region;
    uint64_t first_page;
};

#define DSM_HOST_THREADS 512 /* threads counted per node: vCPUs and the device thread */

struct dsm_host {
    struct dsm_node eng;
    uint8_t *guest_view, *agent_view;
    int memfd;
    uint64_t npages;
    int uffd;
    struct ic *ic;
    /* self-addressed messages, handled after the engine call that sent them */
    struct dsm_local_msg *local;
    unsigned local_head, local_count;
    /* pages whose waiters the engine woke, resolved after the engine call */
    uint64_t *woken;
    uint8_t *woken_flag; /* each page at most once in woken[] */
    unsigned nwoken;
    /* What the guest view maps per page (enum dsm_prot; only this thread's
     * CONTINUE calls create mappings: userfaultfd disables fault-around),
     * and whether the memfd holds the page. Both spare a syscall per fault. */
    uint8_t *pte, *filled;
    /* The kernel can map a page read-only on resolving a fault (Linux 6.4+).
     * Without it a node takes every page it faults on exclusive (M): still
     * coherent, but readers on several nodes take turns. */
    bool continue_wp;
    uint64_t uffd_events, resolve_errors, drop_errors, copy_errors;
    /* When this node last asked another for a page, and when its message
     * loop last handled a message or fault: see dsm_host_pace. */
    uint64_t last_request_ns, last_traffic_ns;
    /* ns until the next hold window ends, as of the last dsm_tick */
    uint64_t hold_wait_ns;
    /* How long an idle loop on a fabric without a wait fd sleeps (see
     * dsm_host_pace; AMALGAM_DSM_IDLE_SLEEP_US overrides). */
    uint64_t idle_sleep_ns;
    /* For the monitor (message loop only): the per-page counts at the
     * previous windowed hot-page query, and userfaultfd faults per thread
     * (open addressing on the thread id the kernel reports). */
    uint32_t *base_fetches, *base_losses;
    uint64_t window_start_ns;
    struct dsm_thread_faults *threads; /* DSM_HOST_THREADS of them */
    uint64_t prefetches; /* pages asked for by dsm_host_prefetch */
    /* One-sided pulls: the descriptor this node sends with DATA_PULL, and
     * the one that came with the DATA_PULL being handled (valid only
     * during that dsm_receive); pulls refused for a page outside it. */
    struct dsm_pull_desc pull_mine, pull_rx;
    bool pull_rx_valid;
    uint64_t pull_rejected;
    /* A page that arrived into a hole, kept aside for resolve()'s
     * UFFDIO_COPY (message loop only; see stash() in host.c); and whether
     * the home pages are mapped in the agent view too (read in place). */
    const uint8_t *stash;
    uint64_t stash_page;
    bool stashed, direct, home_mapped;
};

/* Per thread (a vCPU's thread on this node): its userfaultfd faults, by
 * the home node of the page, and its last DSM_HOST_RECENT faulted pages
 * (page << 1 | write), newest at recent[(nrecent - 1) % DSM_HOST_RECENT].
 * Counts wrap (readers take differences). */
#define DSM_HOST_RECENT 64
struct dsm_thread_faults {
    int64_t tid;
    uint64_t faults;
    uint32_t by_home[DSM_MAX_NODES];
    uint64_t nrecent;
    uint64_t recent[DSM_HOST_RECENT];
};

/* Registers the 0x20-0x28 DSM message types with an interconnect config. */
int dsm_register_types(struct ic_types *t);

/* Attaches the engine to [guest_view, +npages pages) of memfd (mapped at
 * agent_view too), with homes from home_of, keeping at most cache_pages
 * copies of other nodes' pages (0: no limit). Frees this node's memfd pages
 * of other nodes' ranges. Faults wait until the message loop calls
 * dsm_host_poll. */
int dsm_host_start(struct dsm_host *h, struct ic *ic, int memfd, uint8_t *guest_view,
                   uint8_t *agent_view, uint64_t npages, uint64_t cache_pages,
                   int (*home_of)(void *hctx, uint64_t page), void *hctx);
void dsm_host_stop(struct dsm_host *h);

/* Serves the userfaultfd events that are waiting (never blocks); returns
 * how many. */
int dsm_host_poll(struct dsm_host *h);

/* Paces the node's message loop after one round that handled `handled`
 * messages and faults at `now`: polls again at once (yielding the CPU)
 * while traffic is recent or this node awaits a page, else sleeps until a
 * message or a fault arrives (or 1 ms). Sleeping costs a wake-up on every
 * hop of a page transfer; spinning for ever starves the vCPU threads on a
 * small host. */
void dsm_host_pace(struct dsm_host *h, int handled, uint64_t now);

/* The run is over: stops governing the guest view, which wakes every
 * thread still waiting for a page (it then sees this node's memfd, which
 * no longer matters). Without it a vCPU waiting for a page that will never
 * come could not be joined. */
void dsm_host_release(struct dsm_host *h);

/* Non-zero once the host failed to do what the engine asked (copy page
 * contents, change a mapping): the guest may then see wrong data, so the
 * node must stop. */
uint64_t dsm_host_errors(const struct dsm_host *h);

/* ---- what the node's own code may read or set (instead of the fields) ---- */

/* A snapshot of this node's DSM for --stats and the monitor. */
struct dsm_host_report {
    struct dsm_stats stats;
    uint64_t cached;        /* copies of other nodes' pages held */
    uint64_t uffd_events;
    uint64_t prefetches; /* pages asked for by dsm_host_prefetch */
    uint64_t hold_window_ns;
    bool read_only_sharing; /* see continue_wp */
    bool pulling;           /* this home answers with DATA_PULL (dsm_host_set_pull) */
};
void dsm_host_report(const struct dsm_host *h, struct dsm_host_report *r);
/* The k pages (<= 64) most fetched and lost here, most first (dsm.h). */
int dsm_host_hot_pages(const struct dsm_host *h, struct dsm_hot_page *out, int k);
/* The k (<= 64) pages most fetched and lost since the previous call (the
 * first call: since start), and how long that was. Message loop only. */
int dsm_host_hot_window(struct dsm_host *h, struct dsm_hot_page *out, int k, uint64_t *window_ns);
/* userfaultfd faults taken by thread tid (home pages are mapped at start,
 * so each is a page of another node's or a shared page to take back). */
uint64_t dsm_host_thread_faults(const struct dsm_host *h, int64_t tid);
/* The same thread's counts by home node and recent pages, or NULL if it
 * never faulted here. Message loop only (the loop updates them). */
const struct dsm_thread_faults *dsm_host_thread(const struct dsm_host *h, int64_t tid);
/* Asks for copies of pages this node expects to touch soon (a vCPU that
 * just arrived: the pages it faulted on where it was), each as a read or
 * write fault would, without a faulter waiting: `pages` holds page << 1 |
 * write. Pages out of range are skipped. Message loop only; returns how
 * many requests went out. */
int dsm_host_prefetch(struct dsm_host *h, const uint64_t *pages, int n);
/* One-sided pulls (dsm_set_pull): exposes this node's home pages through
 * ic_expose and answers other nodes with DATA_PULL. Before the message
 * loop starts. 0, or ic_expose's error (-ENOTSUP: the fabric cannot;
 * -ENOMEM: the memory could not be registered, typically RLIMIT_MEMLOCK),
 * and then this home keeps sending pages. Any node may receive DATA_PULL
 * from a home that could, whatever its own answer was. */
int dsm_host_set_pull(struct dsm_host *h, bool on);
/* Words for dsm_host_set_pull's error. */
const char *dsm_pull_error(int r);
/* Batching: see dsm_set_push. Before the message loop starts. */
void dsm_host_set_push(struct dsm_host *h, unsigned pages);
/* The userfaultfd, for the message loop's wait. */
int dsm_host_fd(const struct dsm_host *h);

/* Interconnect handler for DSM messages (ctx = the host). */
void dsm_host_on_message(void *ctx, const struct ic_hdr *hdr, const void *payload);

#endif
