/* The DSM engine on real userfaultfd and a real fabric (see host.h). */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "clock/clock.h"
#include "dsm/host.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older glibc headers lack it */
#endif

/* Newer than Debian 12's 6.1 headers. */
#ifndef UFFDIO_CONTINUE_MODE_WP
#define UFFDIO_CONTINUE_MODE_WP ((__u64)1 << 1)
#endif

int dsm_register_types(struct ic_types *t)
{
    for (int type = DSM_MSG_FIRST; type <= DSM_MSG_LAST; type++) {
        bool data = dsm_carries_data((uint8_t)type);
        uint32_t len = data ? DSM_PAGE_SIZE : type == DSM_DATA_PULL ? sizeof(struct dsm_pull_desc) : 0;
        int r = ic_types_add(t, (uint8_t)type, len, len);
        if (r < 0)
            return r;
    }
    return 0;
}

/* ---- engine ops ----------------------------------------------------------- */

/* AMALGAM_DSM_TRACE=1: one stderr line per DSM event, for debugging. */
static int trace_on = -1;
#define TRACE(h, ...)                                                                   \
    do {                                                                                \
        if (trace_on < 0)                                                               \
            trace_on = getenv("AMALGAM_DSM_TRACE") != NULL;                             \
        if (trace_on) {                                                                 \
            fprintf(stderr, "[dsm %d] ", (h)->eng.self);                                \
            fprintf(stderr, __VA_ARGS__);                                               \
            fputc('\n', stderr);                                                       \
        }                                                                               \
    } while (0)

static int op_send(void *ctx, int dst, const struct dsm_msg *m, const void *payload)
{
    struct dsm_host *h = ctx;
    TRACE(h, "send %#x mode %u page %llu -> %d%s", m->type, m->mode, (unsigned long long)m->page,
          dst, payload ? " +data" : "");
    if (dst == h->eng.self) {
        if (h->local_count == DSM_LOCAL_QUEUE)
            return -ENOSPC;
        struct dsm_local_msg *l = &h->local[(h->local_head + h->local_count++) % DSM_LOCAL_QUEUE];
        l->m = *m;
        l->has_payload = payload != NULL; /* only a marker: see dsm_ops.send */
        return 0;
    }
    if (m->type == DSM_DATA_PULL) /* where to read it: our exposed home pages */
        return ic_send(h->ic, dst, m->type, m->page, m->mode, &h->pull_mine, sizeof h->pull_mine);
    return ic_send(h->ic, dst, m->type, m->page, m->mode, payload, payload ? DSM_PAGE_SIZE : 0);
}

static int op_map(void *ctx, uint64_t page, enum dsm_prot prot)
{
    struct dsm_host *h = ctx;
    uint8_t *addr = h->guest_view + page * DSM_PAGE_SIZE;
    TRACE(h, "map page %llu prot %d", (unsigned long long)page, prot);
    if (prot == DSM_PROT_NONE) {
        /* Always, whatever pte says: a mapping left behind here would be a
         * stale copy the guest keeps reading. */
        h->pte[page] = DSM_PROT_NONE;
        return madvise(addr, DSM_PAGE_SIZE, MADV_DONTNEED) < 0 ? -errno : 0;
    }
    if (prot == DSM_PROT_READ && h->pte[page] == DSM_PROT_WRITE) {
        /* A downgrade from M: the PTE stays, writes now fault. Without a
         * writable PTE there is nothing to do: the fault's resolution
         * maps the page read-only (a write-protect call here cost ~2 us
         * on every remote read). */
        /* (The kernel refuses MODE_WP together with MODE_DONTWAKE.) */
        struct uffdio_writeprotect wp = {
            .range = {(uint64_t)(uintptr_t)addr, DSM_PAGE_SIZE},
            .mode = UFFDIO_WRITEPROTECT_MODE_WP,
        };
        if (ioctl(h->uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
            return -errno;
        h->pte[page] = DSM_PROT_READ;
    }
    return 0; /* granting access happens when the waiting fault is resolved */
}

/* Page contents move with pread/pwrite on the memfd rather than through a
 * mapping: no page table of this process changes, so no fault and no TLB
 * work (a first touch through the agent view cost ~10 us on these hosts),
 * and reading a hole (a page nobody wrote) allocates nothing. A failure
 * would give the guest wrong data: counted, and fatal to the node. */
static void flush_stash(struct dsm_host *h);

static const uint8_t *op_page_read(void *ctx, uint64_t page, uint8_t *buf)
{
    struct dsm_host *h = ctx;
    if (h->stashed && h->stash_page == page)
        flush_stash(h);
    if (h->home_mapped && h->eng.home_of(h->eng.hctx, page) == h->eng.self)
        return h->agent_view + page * DSM_PAGE_SIZE; /* mapped at start: no fault */
    if (pread(h->memfd, buf, DSM_PAGE_SIZE, (off_t)(page * DSM_PAGE_SIZE)) != DSM_PAGE_SIZE)
        h->copy_errors++;
    return buf;
}

/* A page arriving into a hole of the memfd, with the guest view unmapped,
 * is kept aside until the fault is resolved: then one UFFDIO_COPY fills
 * the hole and maps it, where pwrite and UFFDIO_CONTINUE took two
 * syscalls. The data is the message's buffer, which lives until the
 * message's engine call and settle() are over; settle() writes back
 * whatever no resolve took. */
static bool stash(struct dsm_host *h, uint64_t page, const uint8_t *data)
{
    if (!h->direct || h->filled[page] || h->pte[page] != DSM_PROT_NONE)
        return false;
    flush_stash(h);
    h->stash = data;
    h->stash_page = page;
    h->stashed = true;
    return true;
}

static void write_page(struct dsm_host *h, uint64_t page, const uint8_t *data)
{
    if (pwrite(h->memfd, data, DSM_PAGE_SIZE, (off_t)(page * DSM_PAGE_SIZE)) != DSM_PAGE_SIZE)
        h->copy_errors++;
    else
        h->filled[page] = 1;
}

static void flush_stash(struct dsm_host *h)
{
    if (h->stashed) {
        h->stashed = false;
        write_page(h, h->stash_page, h->stash);
    }
}

static void op_page_write(void *ctx, uint64_t page, const uint8_t *data)
{
    struct dsm_host *h = ctx;
    if (h->stashed && h->stash_page == page)
        h->stashed = false; /* superseded */
    if (stash(h, page, data))
        return;
    if (pwrite(h->memfd, data, DSM_PAGE_SIZE, (off_t)(page * DSM_PAGE_SIZE)) != DSM_PAGE_SIZE)
        h->copy_errors++;
    else
        h->filled[page] = 1;
}

/* A home answered with DATA_PULL: read the page from its memory, where the
 * descriptor that came with the message says it is. The descriptor is the
 * peer's word: a page outside the range it describes is refused here, and
 * a key or address its provider refuses fails the read. Either is fatal to
 * the node (the engine counts pull_errors); the log names the peer. */
static int op_pull(void *ctx, int from, uint64_t page)
{
    struct dsm_host *h = ctx;
    const struct dsm_pull_desc *d = &h->pull_rx;
    const void *data = NULL;
    int r = -EPROTO;
    if (h->pull_rx_valid && page >= d->first_page && page - d->first_page < d->region.len / DSM_PAGE_SIZE) {
        struct ic_region rg = {d->region.addr, d->region.key, d->region.len};
        r = ic_read(h->ic, from, &rg, (page - d->first_page) * DSM_PAGE_SIZE, DSM_PAGE_SIZE, &data);
    } else {
        h->pull_rejected++;
    }
    if (r < 0) {
        fprintf(stderr, "amalgam node %d: cannot read page %#llx from node %d one-sided: %s\n",
                h->eng.self, (unsigned long long)(page * DSM_PAGE_SIZE), from,
                r == -EPROTO ? "its descriptor does not cover that page (a faulty peer?)"
                : r == -ERANGE ? "the read lies outside the region node described"
                : r == -ETIMEDOUT ? "no completion (is the peer alive?)"
                : r == -ENOTSUP ? "this fabric has no one-sided reads"
                : "the provider refused or failed it (a wrong key or address, or a dead peer)");
        return r;
    }
    op_page_write(h, page, data);
    return 0;
}

static void op_wake(void *ctx, uint64_t page)
{
    struct dsm_host *h = ctx;
    if (!h->woken_flag[page]) {
        h->woken_flag[page] = 1;
        h->woken[h->nwoken++] = page;
    }
}

/* Gives [page, page + n) of the memfd back to the host, which is what keeps
 * a node's resident guest memory near its home slice plus its cache. */
static void punch(struct dsm_host *h, uint64_t page, uint64_t n)
{
    /* Punching unmaps the pages from every view too. */
    memset(h->pte + page, DSM_PROT_NONE, n);
    memset(h->filled + page, 0, n);
    if (fallocate(h->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  (off_t)(page * DSM_PAGE_SIZE), (off_t)(n * DSM_PAGE_SIZE)) < 0)
        h->drop_errors++;
}

/* A copy given up. */
static void op_drop(void *ctx, uint64_t page)
{
    struct dsm_host *h = ctx;
    if (h->stashed && h->stash_page == page)
        h->stashed = false; /* the copy is given up before it was ever mapped */
    punch(ctx, page, 1);
}

static uint64_t op_now(void *ctx)
{
    (void)ctx;
    return clock_now_ns();
}

/* ---- resolving faults ----------------------------------------------------- */

static int uffd_ioctl(struct dsm_host *h, unsigned long req, void *arg)
{
    return ioctl(h->uffd, req, arg) < 0 ? -errno : 0;
}

/* Makes the guest view match the engine's verdict and wakes the faulters. */
static void resolve(struct dsm_host *h, uint64_t page)
{
    uint64_t addr = (uint64_t)(uintptr_t)(h->guest_view + page * DSM_PAGE_SIZE);
    struct uffdio_range range = {addr, DSM_PAGE_SIZE};
    enum dsm_prot prot = dsm_access(&h->eng, page);
    int r = 0;
    if (h->stashed && h->stash_page == page && prot != DSM_PROT_NONE &&
        (prot == DSM_PROT_WRITE || h->continue_wp)) {
        struct uffdio_copy c = {.dst = addr, .src = (uint64_t)(uintptr_t)h->stash,
                                .len = DSM_PAGE_SIZE,
                                .mode = prot == DSM_PROT_READ ? UFFDIO_COPY_MODE_WP : 0};
        if (uffd_ioctl(h, UFFDIO_COPY, &c) == 0) {
            h->stashed = false;
            h->filled[page] = 1;
            h->pte[page] = (uint8_t)prot;
            return;
        }
        flush_stash(h); /* and map it the usual way below */
    }
    if (h->stashed && h->stash_page == page)
        flush_stash(h);
    if (prot == DSM_PROT_READ && !h->continue_wp) {
        /* Cannot map it read-only here (see continue_wp): the faulter
         * retries, faults again and asks for the page exclusive. */
        r = uffd_ioctl(h, UFFDIO_WAKE, &range);
    } else if (prot != DSM_PROT_NONE) {
        /* CONTINUE maps a page that is in the memfd; a never-touched one
         * is not, so allocate it (once: a syscall on every fault cost
         * ~1.5 us). */
        if (!h->filled[page])
            fallocate(h->memfd, FALLOC_FL_KEEP_SIZE, (off_t)(page * DSM_PAGE_SIZE), DSM_PAGE_SIZE);
        h->filled[page] = 1;
        struct uffdio_continue c = {.range = range,
                                    .mode = prot == DSM_PROT_READ ? UFFDIO_CONTINUE_MODE_WP : 0};
        r = uffd_ioctl(h, UFFDIO_CONTINUE, &c);
        if (r == -EEXIST && (prot == DSM_PROT_WRITE || h->pte[page] == DSM_PROT_NONE)) {
            /* A PTE exists: make it exactly prot (this also wakes). A PTE
             * we did not know of is made read-only rather than trusted. */
            struct uffdio_writeprotect wp = {
                .range = range, .mode = prot == DSM_PROT_READ ? UFFDIO_WRITEPROTECT_MODE_WP : 0};
            r = uffd_ioctl(h, UFFDIO_WRITEPROTECT, &wp);
        } else if (r == -EEXIST) {
            r = uffd_ioctl(h, UFFDIO_WAKE, &range); /* read-only already */
        }
        if (r == 0)
            h->pte[page] = (uint8_t)prot;
    } else {
        r = uffd_ioctl(h, UFFDIO_WAKE, &range); /* it faults again and asks again */
    }
    TRACE(h, "resolve page %llu prot %d -> %d", (unsigned long long)page, prot, r);
    if (r < 0 && r != -EAGAIN)
        h->resolve_errors++;
}

/* After any engine call: handle self-addressed messages, then resolve the
 * pages the engine woke. */
static void settle(struct dsm_host *h)
{
    while (h->local_count) {
        struct dsm_local_msg *l = &h->local[h->local_head];
        h->local_head = (h->local_head + 1) % DSM_LOCAL_QUEUE;
        h->local_count--;
        struct dsm_local_msg copy = *l; /* the slot may be reused by the call */
        dsm_receive(&h->eng, h->eng.self, &copy.m, copy.has_payload ? &copy : NULL);
    }
    for (unsigned i = 0; i < h->nwoken; i++) {
        h->woken_flag[h->woken[i]] = 0;
        resolve(h, h->woken[i]);
    }
    h->nwoken = 0;
    flush_stash(h); /* the buffer is the message's: it goes after this */
}

void dsm_host_on_message(void *ctx, const struct ic_hdr *hdr, const void *payload)
{
    struct dsm_host *h = ctx;
    struct dsm_msg m = {.type = hdr->type, .mode = (uint8_t)hdr->arg1,
                        .src = hdr->src_rank, .page = hdr->arg0};
    if (hdr->type < DSM_MSG_FIRST || hdr->type > DSM_MSG_LAST || hdr->arg1 > DSM_MODE_M)
        return;
    TRACE(h, "recv %#x mode %u page %llu from %d", m.type, m.mode, (unsigned long long)m.page,
          m.src);
    if (m.type == DSM_DATA_PULL) { /* the descriptor is for op_pull, not the engine */
        memcpy(&h->pull_rx, payload, sizeof h->pull_rx);
        h->pull_rx_valid = true;
        payload = NULL;
    }
    dsm_receive(&h->eng, hdr->src_rank, &m, payload);
    h->pull_rx_valid = false;
    settle(h);
}

/* The thread's slot (open addressing on its id), claimed if `add`. */
static struct dsm_thread_faults *thread_slot(const struct dsm_host *h, int64_t tid, bool add)
{
    if (tid <= 0 || !h->threads)
        return NULL;
    for (unsigned i = 0, at = (unsigned)tid % DSM_HOST_THREADS; i < DSM_HOST_THREADS;
         i++, at = (at + 1) % DSM_HOST_THREADS) {
        struct dsm_thread_faults *t = &h->threads[at];
        if (t->tid == tid)
            return t;
        if (!t->tid) {
            if (!add)
                return NULL;
            t->tid = tid;
            return t;
        }
    }
    return NULL;
}

static void count_thread_fault(struct dsm_host *h, int64_t tid, uint64_t page, bool write)
{
    struct dsm_thread_faults *t = thread_slot(h, tid, true);
    if (!t)
        return;
    t->faults++;
    int home = h->eng.home_of(h->eng.hctx, page);
    if (home >= 0 && home < DSM_MAX_NODES)
        t->by_home[home]++;
    /* read by a vCPU thread leaving this node (vmm/migrate.c) */
    __atomic_store_n(&t->recent[t->nrecent % DSM_HOST_RECENT], page << 1 | (write ? 1 : 0),
                     __ATOMIC_RELAXED);
    __atomic_store_n(&t->nrecent, t->nrecent + 1, __ATOMIC_RELEASE);
}

uint64_t dsm_host_thread_faults(const struct dsm_host *h, int64_t tid)
{
    const struct dsm_thread_faults *t = thread_slot(h, tid, false);
    return t ? t->faults : 0;
}

const struct dsm_thread_faults *dsm_host_thread(const struct dsm_host *h, int64_t tid)
{
    return thread_slot(h, tid, false);
}

int dsm_host_prefetch(struct dsm_host *h, const uint64_t *pages, int n)
{
    int sent = 0;
    for (int i = 0; i < n; i++) {
        uint64_t page = pages[i] >> 1;
        bool write = !h->continue_wp || (pages[i] & 1); /* as on_fault */
        if (page >= h->npages)
            continue;
        int r = dsm_fault(&h->eng, page, write);
        if (r == 1) {
            h->last_request_ns = op_now(h);
            sent++;
        }
    }
    h->prefetches += (uint64_t)sent;
    settle(h);
    return sent;
}

static void on_fault(struct dsm_host *h, const struct uffd_msg *msg)
{
    uint64_t addr = msg->arg.pagefault.address & ~(uint64_t)(DSM_PAGE_SIZE - 1);
    uint64_t base = (uint64_t)(uintptr_t)h->guest_view;
    if (addr < base || addr >= base + h->npages * DSM_PAGE_SIZE)
        return;
    uint64_t page = (addr - base) / DSM_PAGE_SIZE;
    bool write = msg->arg.pagefault.flags & (UFFD_PAGEFAULT_FLAG_WRITE | UFFD_PAGEFAULT_FLAG_WP);
    if (!h->continue_wp)
        write = true; /* no read-only mapping possible: take the page exclusive */
    h->uffd_events++;
    count_thread_fault(h, (int64_t)msg->arg.pagefault.feat.ptid, page, write);
    TRACE(h, "fault page %llu flags %#llx", (unsigned long long)page,
          (unsigned long long)msg->arg.pagefault.flags);
    if (dsm_fault(&h->eng, page, write) == 0)
        resolve(h, page);
    else
        h->last_request_ns = op_now(h);
    settle(h);
}

void dsm_host_release(struct dsm_host *h)
{
    struct uffdio_range all = {(uint64_t)(uintptr_t)h->guest_view, h->npages * DSM_PAGE_SIZE};
    ioctl(h->uffd, UFFDIO_UNREGISTER, &all);
}

uint64_t dsm_host_errors(const struct dsm_host *h)
{
    return h->copy_errors + h->eng.stats.map_errors + h->eng.stats.pull_errors;
}

int dsm_host_poll(struct dsm_host *h)
{
    if (h->eng.nheld) { /* requests waiting for a hold window to end */
        h->hold_wait_ns = dsm_tick(&h->eng);
        settle(h);
    }
    struct uffd_msg msgs[16];
    ssize_t n = read(h->uffd, msgs, sizeof msgs);
    int handled = 0;
    for (ssize_t i = 0; i < n / (ssize_t)sizeof msgs[0]; i++)
        if (msgs[i].event == UFFD_EVENT_PAGEFAULT) {
            on_fault(h, &msgs[i]);
            handled++;
        }
    return handled;
}

/* How long a message loop polls without sleeping after traffic or a
 * request. On a 2-core host with two nodes, never spinning cost two sleeps
 * per remote fault (~270 us) and always spinning starved the vCPU threads
 * (~280 us); 500 us gave ~60 us (bench dsm --host). */
#define SPIN_NS 500000ULL

/* After this long without traffic a loop whose fabric cannot wake it (shm
 * has no wait fd) polls every IDLE_SLEEP_NS instead of every 50 us: on a
 * node whose guest works on its own memory, a wake-up every 50 us (~7000
 * a second per node, each ~145 us of real sleep with the timer slack)
 * took CPU time from the vCPUs; in the nested L1 `bench local` measured
 * 2 nodes at 1.65x one node. The first request after a quiet spell waits
 * up to IDLE_SLEEP_NS longer; a local fault wakes the loop at once. */
#define IDLE_NS 20000000ULL
#define IDLE_SLEEP_NS 1000000ULL

void dsm_host_pace(struct dsm_host *h, int handled, uint64_t now)
{
    if (handled > 0) {
        h->last_traffic_ns = now;
        return;
    }
    uint64_t recent = h->last_request_ns;
    if (recent < h->last_traffic_ns)
        recent = h->last_traffic_ns;
    if (h->eng.nheld && h->hold_wait_ns < 1000000)
        sched_yield(); /* a hold window ends within the sleep's 1 ms */
    else if (now - recent > IDLE_NS)
        ic_wait_ns(h->ic, h->idle_sleep_ns, h->uffd); /* a fault or a message ends the sleep */
    else if (now - recent > SPIN_NS)
        ic_wait(h->ic, 1, h->uffd);
    else
        sched_yield();
}

static int open_uffd(struct dsm_host *h)
{
    h->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (h->uffd < 0)
        return -errno;
    struct uffdio_api api = {
        .api = UFFD_API,
        .features = UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM |
                    UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_THREAD_ID,
    };
    if (ioctl(h->uffd, UFFDIO_API, &api) < 0)
        return -errno;
    struct uffdio_register reg = {
        .range = {(uint64_t)(uintptr_t)h->guest_view, h->npages * DSM_PAGE_SIZE},
        .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR |
                UFFDIO_REGISTER_MODE_WP,
    };
    if (ioctl(h->uffd, UFFDIO_REGISTER, &reg) < 0)
        return -errno;
    /* UFFDIO_CONTINUE_MODE_WP is Linux 6.4's; 6.1 (Debian 12's own
     * kernel) rejects the mode with EINVAL before looking at the range,
     * while 6.4+ answers ENOENT for this range, which is not registered. */
    struct uffdio_continue probe = {
        .range = {(uint64_t)(uintptr_t)h->agent_view, DSM_PAGE_SIZE},
        .mode = UFFDIO_CONTINUE_MODE_WP | UFFDIO_CONTINUE_MODE_DONTWAKE,
    };
    h->continue_wp = ioctl(h->uffd, UFFDIO_CONTINUE, &probe) == 0 || errno != EINVAL;
    if (getenv("AMALGAM_DSM_NO_CONTINUE_WP")) /* to test the fallback on a new kernel */
        h->continue_wp = false;
    return 0;
}

/* Maps [page, page + n) of the guest view writable, allocating what the
 * memfd does not hold yet. */
static int populate(struct dsm_host *h, uint64_t page, uint64_t n)
{
    uint8_t *addr = h->guest_view + page * DSM_PAGE_SIZE;
    size_t len = n * DSM_PAGE_SIZE;
    if (fallocate(h->memfd, FALLOC_FL_KEEP_SIZE, (off_t)(page * DSM_PAGE_SIZE), (off_t)len) < 0)
        return -errno;
    if (madvise(addr, len, MADV_POPULATE_WRITE) < 0) {
        if (errno != EINVAL)
            return -errno;
        for (size_t o = 0; o < len; o += DSM_PAGE_SIZE) /* a kernel before 5.14 */
            addr[o] = *(volatile uint8_t *)(addr + o);
    }
    memset(h->pte + page, DSM_PROT_WRITE, n);
    memset(h->filled + page, 1, n);
    /* The agent view too, so that serving these pages to other nodes reads
     * them in place, with neither a syscall nor a first-touch fault. */
    if (madvise(h->agent_view + page * DSM_PAGE_SIZE, len, MADV_POPULATE_READ) < 0)
        h->home_mapped = false;
    return 0;
}

/* A node's home pages start M (dsm.h): they are mapped writable before the
 * view is registered with userfaultfd, so that work on a node's own memory
 * never takes a userfaultfd round trip through the message loop, not even
 * on a first touch (that round trip was ~20 us on an idle host and ~ms in
 * the nested L1, per page; Linux's memory set-up touches every page). The
 * price is the home slice resident from the start, as a guest started
 * with preallocated memory. Only a transfer to another node unmaps a home
 * page again. */
static int map_home_pages(struct dsm_host *h)
{
    uint64_t run = 0;
    h->home_mapped = !getenv("AMALGAM_DSM_NO_DIRECT");
    for (uint64_t p = 0; p <= h->npages; p++) {
        if (p < h->npages && h->eng.home_of(h->eng.hctx, p) == h->eng.self) {
            run++;
            continue;
        }
        if (run) {
            int r = populate(h, p - run, run);
            if (r < 0)
                return r;
        }
        run = 0;
    }
    return 0;
}

/* Whatever this node wrote into pages homed elsewhere before the DSM took
 * over (every node loads the same kernel) is the home's to keep. */
static void free_foreign_pages(struct dsm_host *h)
{
    uint64_t run = 0;
    for (uint64_t p = 0; p <= h->npages; p++) {
        bool foreign = p < h->npages && h->eng.home_of(h->eng.hctx, p) != h->eng.self;
        if (foreign) {
            run++;
            continue;
        }
        if (run)
            punch(h, p - run, run);
        run = 0;
    }
}

int dsm_host_start(struct dsm_host *h, struct ic *ic, int memfd, uint8_t *guest_view,
                   uint8_t *agent_view, uint64_t npages, uint64_t cache_pages,
                   int (*home_of)(void *hctx, uint64_t page), void *hctx)
{
    memset(h, 0, sizeof *h);
    h->uffd = -1;
    h->ic = ic;
    h->memfd = memfd;
    h->guest_view = guest_view;
    h->agent_view = agent_view;
    h->npages = npages;
    h->local = calloc(DSM_LOCAL_QUEUE, sizeof *h->local);
    h->woken = calloc(npages, sizeof *h->woken);
    h->woken_flag = calloc(npages, 1);
    h->pte = calloc(npages, 1);
    h->filled = calloc(npages, 1);
    h->threads = calloc(DSM_HOST_THREADS, sizeof *h->threads);
    const char *idle = getenv("AMALGAM_DSM_IDLE_SLEEP_US"); /* for measuring the trade-off */
    h->idle_sleep_ns = idle && atoi(idle) > 0 ? (uint64_t)atoi(idle) * 1000ULL : IDLE_SLEEP_NS;
    /* AMALGAM_DSM_NO_DIRECT=1: page data through pread/pwrite and
     * UFFDIO_CONTINUE only (see stash()), to measure against. */
    h->direct = !getenv("AMALGAM_DSM_NO_DIRECT");
    if (!h->local || !h->woken || !h->woken_flag || !h->pte || !h->filled || !h->threads)
        return -ENOMEM;
    /* Pages not at home must not be mapped before the DSM governs them. */
    madvise(guest_view, npages * DSM_PAGE_SIZE, MADV_DONTNEED);
    struct dsm_ops ops = {h,       op_send, op_map,  op_page_read, op_page_write,
                          op_wake, op_now,  op_drop, op_pull};
    int r = dsm_node_init(&h->eng, ic_rank(ic), ic_size(ic), npages, home_of, hctx, &ops);
    /* AMALGAM_DSM_LAZY_HOME=1: home pages fault in on first touch instead
     * (the old behaviour), to compare against. */
    if (!getenv("AMALGAM_DSM_LAZY_HOME"))
        r = r ?: map_home_pages(h);
    r = r ?: open_uffd(h);
    if (r < 0)
        return r;
    dsm_set_cache_limit(&h->eng, cache_pages);
    free_foreign_pages(h);
    h->window_start_ns = op_now(h);
    return 0;
}

void dsm_host_stop(struct dsm_host *h)
{
    if (h->uffd >= 0)
        close(h->uffd);
    dsm_node_free(&h->eng);
    free(h->local);
    free(h->woken);
    free(h->woken_flag);
    free(h->pte);
    free(h->filled);
    free(h->threads);
    free(h->base_fetches);
    free(h->base_losses);
}

/* ---- accessors ---------------------------------------------------------- */

void dsm_host_report(const struct dsm_host *h, struct dsm_host_report *r)
{
    r->stats = h->eng.stats;
    r->cached = h->eng.cached;
    r->uffd_events = h->uffd_events;
    r->prefetches = h->prefetches;
    r->hold_window_ns = dsm_hold_base_ns(&h->eng);
    r->read_only_sharing = h->continue_wp;
    r->pulling = h->eng.pull;
}

int dsm_host_hot_pages(const struct dsm_host *h, struct dsm_hot_page *out, int k)
{
    return dsm_hot_pages(&h->eng, out, k);
}

int dsm_host_hot_window(struct dsm_host *h, struct dsm_hot_page *out, int k, uint64_t *window_ns)
{
    const struct dsm_node *n = &h->eng;
    if (!h->base_fetches) {
        h->base_fetches = calloc(h->npages, sizeof *h->base_fetches);
        h->base_losses = calloc(h->npages, sizeof *h->base_losses);
        if (!h->base_fetches || !h->base_losses) {
            free(h->base_fetches);
            free(h->base_losses);
            h->base_fetches = h->base_losses = NULL;
            return -ENOMEM;
        }
    }
    uint64_t now = op_now(h);
    *window_ns = now - h->window_start_ns;
    h->window_start_ns = now;
    int have = 0;
    k = k < 0 ? 0 : k > 64 ? 64 : k;
    for (uint64_t p = 0; p < h->npages; p++) {
        uint32_t f = n->fetches[p] - h->base_fetches[p], l = n->losses[p] - h->base_losses[p];
        h->base_fetches[p] = n->fetches[p];
        h->base_losses[p] = n->losses[p];
        uint64_t heat = (uint64_t)f + l;
        if (!k || !heat || (have == k && heat <= (uint64_t)out[k - 1].fetches + out[k - 1].losses))
            continue;
        int i = have < k ? have++ : k - 1; /* insert, dropping the coolest */
        for (; i > 0 && (uint64_t)out[i - 1].fetches + out[i - 1].losses < heat; i--)
            out[i] = out[i - 1];
        out[i] = (struct dsm_hot_page){p, f, l};
    }
    return have;
}

/* The span of this node's home pages: what it exposes. */
static void home_span(const struct dsm_host *h, uint64_t *lo, uint64_t *hi)
{
    *lo = h->npages;
    *hi = 0;
    for (uint64_t p = 0; p < h->npages; p++)
        if (h->eng.home_of(h->eng.hctx, p) == h->eng.self) {
            *lo = p < *lo ? p : *lo;
            *hi = p + 1;
        }
}

const char *dsm_pull_error(int r)
{
    return r == -ENOTSUP   ? "the fabric provider has no one-sided reads"
           : r == -ENOMEM  ? "the home pages could not be registered for remote reads "
                             "(not enough lockable memory: see ulimit -l / RLIMIT_MEMLOCK)"
                           : strerror(-r);
}

/* AMALGAM_TEST_PULL_FAULT=key|addr|cover: this home describes its pages
 * wrongly, as a faulty peer would (a key its provider refuses, an address
 * outside what it registered, a range without the page asked for): the
 * puller must refuse or fail the read, say so and stop, never hang. */
static void test_fault(struct dsm_pull_desc *d)
{
    const char *f = getenv("AMALGAM_TEST_PULL_FAULT");
    if (!f)
        return;
    if (!strcmp(f, "key"))
        d->region.key ^= 0x5a5a5a5aULL;
    else if (!strcmp(f, "addr"))
        d->region.addr += d->region.len + (1ULL << 30);
    else if (!strcmp(f, "cover"))
        d->first_page += d->region.len / DSM_PAGE_SIZE;
}

int dsm_host_set_pull(struct dsm_host *h, bool on)
{
    dsm_set_pull(&h->eng, false);
    if (!on)
        return 0;
    uint64_t lo, hi;
    home_span(h, &lo, &hi);
    if (hi <= lo)
        return 0; /* home of nothing: nobody will ask */
    struct ic_region rg;
    int r = ic_expose(h->ic, h->agent_view + lo * DSM_PAGE_SIZE, (hi - lo) * DSM_PAGE_SIZE, &rg);
    if (r < 0)
        return r;
    h->pull_mine = (struct dsm_pull_desc){{rg.addr, rg.key, rg.len}, lo};
    test_fault(&h->pull_mine);
    dsm_set_pull(&h->eng, true);
    return 0;
}

void dsm_host_set_push(struct dsm_host *h, unsigned pages)
{
    dsm_set_push(&h->eng, pages);
}

int dsm_host_fd(const struct dsm_host *h)
{
    return h->uffd;
}
