/* Internal to dsm/ (and, next, the VMM): the coherence engine attached to
 * real memory and a real fabric.
 *
 * The region is a memfd mapped twice (see vmm/memory.h): the guest view is
 * registered with userfaultfd (MISSING | MINOR | WP) and is what guest and
 * VMM threads touch; the agent view is where the DSM reads and writes page
 * contents without faulting. A fault thread turns userfaultfd events into
 * dsm_fault() calls; messages from the interconnect go to dsm_receive().
 * Access changes: invalidate = MADV_DONTNEED on the guest view (the page
 * stays in the memfd), downgrade = UFFDIO_WRITEPROTECT, grant =
 * UFFDIO_CONTINUE (with MODE_WP for read-only) or write-unprotect; a copy
 * given up (invalidated, evicted, written back) is punched out of the memfd.
 * One mutex serialises the engine; messages a node sends itself are queued
 * and handled after the current engine call, never recursively.
 */
#ifndef AMALGAM_DSM_HOST_H
#define AMALGAM_DSM_HOST_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "dsm/dsm.h"
#include "interconnect/interconnect.h"

#define DSM_LOCAL_QUEUE 256

struct dsm_local_msg {
    struct dsm_msg m;
    bool has_payload;
    uint8_t payload[DSM_PAGE_SIZE];
};

struct dsm_host {
    pthread_mutex_t lock;
    struct dsm_node eng;
    uint8_t *guest_view, *agent_view;
    int memfd;
    uint64_t npages;
    int uffd, stop_efd;
    pthread_t fault_thread;
    bool fault_thread_started;
    struct ic *ic;
    /* self-addressed messages, handled after the engine call that sent them */
    struct dsm_local_msg *local;
    unsigned local_head, local_count;
    /* pages whose waiters the engine woke, resolved after the engine call */
    uint64_t *woken;
    uint8_t *woken_flag; /* each page at most once in woken[] */
    unsigned nwoken;
    uint64_t uffd_events, resolve_errors, drop_errors;
    /* When this node last asked another for a page (fault thread), and when
     * its message loop last handled a message (that loop only): see
     * dsm_host_pace. */
    _Atomic uint64_t last_request_ns;
    uint64_t last_traffic_ns;
};

/* Registers the 0x20-0x28 DSM message types with an interconnect config. */
int dsm_register_types(struct ic_types *t);

/* Attaches the engine to [guest_view, +npages pages) of memfd (mapped at
 * agent_view too), with homes from home_of, keeping at most cache_pages
 * copies of other nodes' pages (0: no limit). Frees this node's memfd pages
 * of other nodes' ranges, then starts the fault thread. */
int dsm_host_start(struct dsm_host *h, struct ic *ic, int memfd, uint8_t *guest_view,
                   uint8_t *agent_view, uint64_t npages, uint64_t cache_pages,
                   int (*home_of)(void *hctx, uint64_t page), void *hctx);
void dsm_host_stop(struct dsm_host *h);

/* Paces the node's message loop after one poll that handled `handled`
 * messages at `now`: polls again at once (yielding the CPU) while traffic
 * is recent or this node awaits a page, else sleeps in ic_wait. Sleeping
 * costs a wake-up on every hop of a page transfer; spinning for ever
 * starves the fault and vCPU threads on a small host. */
void dsm_host_pace(struct dsm_host *h, int handled, uint64_t now);

/* Interconnect handler for DSM messages (ctx = the host). */
void dsm_host_on_message(void *ctx, const struct ic_hdr *hdr, const void *payload);

#endif
