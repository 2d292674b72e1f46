/* `amalgam dsm-check`: the DSM end to end on real userfaultfd and a real
 * fabric, with host threads standing in for vCPUs. Every rank's threads do
 * `lock xadd` on one shared counter (home: rank 0) and plain increments on
 * their own word of one shared page (home: the last rank: false sharing);
 * rank 0 then checks the totals through its own guest view.
 * With --sweep, every rank instead writes a stamp into its share of all the
 * memory (pages homed everywhere), then reads and checks every page: with
 * --mem larger than a node may hold and a bounded --dsm-cache, this is the
 * large-memory check (each rank reports its peak resident memory). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock/clock.h"
#include "dsm/host.h"
#include "tools/tools.h"
#include "vmm/vmm.h"

#define T_DONE 0x10
#define T_FINISH 0x11
#define T_READY 0x12
#define T_GO 0x13
#define PAGES_PER_RANK 16

struct check {
    struct dsm_host host;
    struct ic *ic;
    int memfd;
    uint8_t *guest, *agent;
    uint64_t npages, iters, mem_bytes, cache_bytes;
    uint64_t per_rank;   /* pages in each rank's home slice */
    uint64_t peak_bytes; /* most of the memfd ever resident here */
    int threads, done, finish, ready, go, workers_done;
    int check_go;        /* phase 2: every rank finished phase 1 */
    uint64_t bad_pages;  /* found by the sweep's phase 2 */
    int verify_result;   /* the counter check's (rank 0) */
    int rank, size;
    bool sweep;
    bool pull; /* --dsm-pull on: homes answer with one-sided pulls */
    int bench_pages; /* --bench N: rank 1 times first touches of rank 0's pages */
    uint64_t bench_ns[3][4096];
    volatile bool stop;
    volatile bool broken; /* the DSM host failed (dsm_host_errors) */
    int dead;
};

static int home_of(void *hctx, uint64_t page)
{
    struct check *c = hctx;
    uint64_t h = page / c->per_rank;
    return h < (uint64_t)c->size ? (int)h : c->size - 1;
}

static void sample_resident(struct check *c)
{
    struct stat st;
    if (fstat(c->memfd, &st) == 0 && (uint64_t)st.st_blocks * 512 > c->peak_bytes)
        c->peak_bytes = (uint64_t)st.st_blocks * 512;
}

static void on_message(void *ctx, const struct ic_hdr *h, const void *payload)
{
    struct check *c = ctx;
    if (h->type == T_DONE)
        __atomic_add_fetch(&c->done, 1, __ATOMIC_SEQ_CST);
    else if (h->type == T_FINISH)
        __atomic_add_fetch(&c->finish, 1, __ATOMIC_SEQ_CST);
    else if (h->type == T_READY)
        __atomic_add_fetch(&c->ready, 1, __ATOMIC_SEQ_CST);
    else if (h->type == T_GO)
        __atomic_store_n(&c->go, 1, __ATOMIC_SEQ_CST);
    else
        dsm_host_on_message(&c->host, h, payload);
}

static void *progress(void *arg)
{
    struct check *c = arg;
    uint64_t last = 0;
    while (!c->stop) {
        int n = dsm_host_poll(&c->host) + ic_poll(c->ic, on_message, c, 64);
        uint64_t t = clock_now_ns();
        dsm_host_pace(&c->host, n, t);
        if (t - last > 50000000ULL) {
            last = t;
            sample_resident(c);
            if (dsm_host_errors(&c->host)) { /* a worker may wait for ever: stop */
                c->broken = true;
                c->stop = true;
            }
            if (ic_tick(c->ic, t) < 0) {
                c->dead = ic_dead_rank(c->ic);
                c->stop = true;
            }
        }
    }
    return NULL;
}

struct worker {
    struct check *c;
    int index;
};

static uint64_t *counter(struct check *c) { return (uint64_t *)c->guest; }
static volatile uint64_t *slot(struct check *c, int i)
{
    return (volatile uint64_t *)(c->guest + (c->npages - 1) * DSM_PAGE_SIZE) + i;
}

static uint64_t stamp(uint64_t page, int rank) { return page * 0x9E3779B97F4A7C15ULL ^ (uint64_t)rank; }

/* Sweep, phase 1: each worker of each rank writes the pages p with
 * p % (ranks x threads) == its index; phase 2 reads all of them back. */
static void sweep_write(struct check *c, int index)
{
    uint64_t stride = (uint64_t)c->size * (uint64_t)c->threads;
    for (uint64_t p = (uint64_t)index; p < c->npages; p += stride) {
        volatile uint64_t *w = (volatile uint64_t *)(c->guest + p * DSM_PAGE_SIZE);
        w[0] = stamp(p, index);
        w[DSM_PAGE_SIZE / 8 - 1] = ~stamp(p, index);
    }
}

/* Phase 2 of the sweep, thread `part` of `parts`: its share of every page. */
static uint64_t sweep_verify(struct check *c, int part, int parts)
{
    uint64_t stride = (uint64_t)c->size * (uint64_t)c->threads, bad = 0;
    for (uint64_t p = (uint64_t)part; p < c->npages; p += (uint64_t)parts) {
        volatile uint64_t *w = (volatile uint64_t *)(c->guest + p * DSM_PAGE_SIZE);
        int index = (int)(p % stride);
        if (w[0] != stamp(p, index) || w[DSM_PAGE_SIZE / 8 - 1] != ~stamp(p, index)) {
            if (!bad)
                fprintf(stderr, "dsm-check: rank %d: page %llu holds %#llx, expected %#llx\n",
                        c->rank, (unsigned long long)p, (unsigned long long)w[0],
                        (unsigned long long)stamp(p, index));
            bad++;
        }
    }
    return bad;
}

/* --bench: rank 1 reads N of rank 0's pages once each (GetS), then writes
 * N others (GetM from I), then reads N of its own pages (mapped from the
 * start: no DSM fault, only what a first touch costs the host),
 * timing every first touch: a host thread's remote fault service time,
 * without KVM's share, and its local floor. */
static void bench_faults(struct check *c)
{
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < c->bench_pages; i++) {
            uint64_t p = 1 + (uint64_t)(k % 2) * (uint64_t)c->bench_pages + (uint64_t)i;
            if (k == 2)
                p += c->per_rank; /* rank 1's home */
            volatile uint64_t *w = (volatile uint64_t *)(c->guest + p * DSM_PAGE_SIZE);
            uint64_t t0 = clock_now_ns();
            if (k == 1)
                *w = p;
            else
                (void)*w;
            c->bench_ns[k][i] = clock_now_ns() - t0;
        }
}

static void bench_report(struct check *c)
{
    size_t n = (size_t)c->bench_pages;
    uint64_t p50[3], p99[3];
    for (int k = 0; k < 3; k++) {
        qsort(c->bench_ns[k], n, sizeof c->bench_ns[k][0], dsm_cmp_u64);
        p50[k] = c->bench_ns[k][n / 2];
        p99[k] = c->bench_ns[k][n * 99 / 100];
    }
    printf("dsm-bench: pages %zu read_p50 %llu read_p99 %llu write_p50 %llu write_p99 %llu "
           "local_p50 %llu local_p99 %llu ns\n", n, (unsigned long long)p50[0],
           (unsigned long long)p99[0], (unsigned long long)p50[1], (unsigned long long)p99[1],
           (unsigned long long)p50[2], (unsigned long long)p99[2]);
}

static int verify(struct check *c, int size);

static void phase1(struct check *c, int index)
{
    if (c->bench_pages) {
        if (index == c->threads) /* rank 1's first thread */
            bench_faults(c);
        return;
    }
    if (c->sweep) {
        sweep_write(c, index);
        return;
    }
    for (uint64_t i = 0; i < c->iters; i++) {
        __atomic_fetch_add(counter(c), 1, __ATOMIC_SEQ_CST);
        (*slot(c, index))++; /* not atomic: coherence alone keeps it exact */
    }
}

/* Phase 2 checks what came out. It runs here, not on the main thread: a
 * page from a peer that died never arrives, and the main thread must stay
 * free to notice that and report it. */
static void phase2(struct check *c, int part)
{
    if (c->sweep)
        __atomic_add_fetch(&c->bad_pages, sweep_verify(c, part, c->threads), __ATOMIC_SEQ_CST);
    else if (!c->bench_pages && c->rank == 0 && part == 0)
        c->verify_result = verify(c, c->size);
}

static void *work(void *arg)
{
    struct worker *w = arg;
    struct check *c = w->c;
    phase1(c, w->index);
    __atomic_add_fetch(&c->workers_done, 1, __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&c->check_go, __ATOMIC_SEQ_CST) && !c->stop)
        usleep(1000);
    if (!c->stop)
        phase2(c, w->index - c->rank * c->threads);
    __atomic_add_fetch(&c->workers_done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static int wait_flag(struct check *c, int *flag, int want, int seconds)
{
    uint64_t end = clock_now_ns() + (uint64_t)seconds * 1000000000ULL;
    while (__atomic_load_n(flag, __ATOMIC_SEQ_CST) < want) {
        if (c->stop || clock_now_ns() > end)
            return c->broken ? -EIO : c->dead >= 0 ? -EPIPE : -ETIMEDOUT;
        usleep(1000);
    }
    return 0;
}

/* All ranks get here before any goes on: rank 0 counts the others' DONE
 * and answers with FINISH. k: the how-manieth barrier of the run. */
static int barrier(struct check *c, int k)
{
    if (c->rank != 0) {
        ic_send(c->ic, 0, T_DONE, 0, 0, NULL, 0);
        return wait_flag(c, &c->finish, k, 300);
    }
    int r = wait_flag(c, &c->done, k * (c->size - 1), 300);
    for (int p = 1; p < c->size && r == 0; p++)
        ic_send(c->ic, p, T_FINISH, 0, 0, NULL, 0);
    return r;
}

static int verify(struct check *c, int size)
{
    if (c->sweep || c->bench_pages)
        return 0; /* every rank checks the sweep itself */
    uint64_t want = c->iters * (uint64_t)c->threads * (uint64_t)size, got = *counter(c);
    int bad = got != want;
    if (bad)
        fprintf(stderr, "dsm-check: counter is %llu, expected %llu\n", (unsigned long long)got,
                (unsigned long long)want);
    for (int i = 0; i < c->threads * size; i++)
        if (*slot(c, i) != c->iters) {
            fprintf(stderr, "dsm-check: word %d is %llu, expected %llu\n", i,
                    (unsigned long long)*slot(c, i), (unsigned long long)c->iters);
            bad = 1;
        }
    return bad ? -EIO : 0;
}

static int run(struct check *c, const struct ic_config *cfg)
{
    char err[512];
    struct ic_config with_rma = *cfg;
    with_rma.rma = c->pull;
    cfg = &with_rma;
    int r = ic_open(cfg, &c->ic, err, sizeof err);
    if (r < 0) {
        fprintf(stderr, "amalgam dsm-check: rank %d: %s\n", cfg->rank, err);
        return r;
    }
    c->rank = cfg->rank;
    c->size = cfg->size;
    c->npages = c->mem_bytes ? c->mem_bytes / DSM_PAGE_SIZE : (uint64_t)cfg->size * PAGES_PER_RANK;
    if (c->bench_pages)
        c->npages = (uint64_t)cfg->size * (2 * (uint64_t)c->bench_pages + 2);
    if (c->npages < (uint64_t)cfg->size * 2) {
        fprintf(stderr, "amalgam dsm-check: --mem is too small for %d ranks\n", cfg->size);
        return -EINVAL;
    }
    c->per_rank = c->npages / (uint64_t)cfg->size;
    size_t len = c->npages * DSM_PAGE_SIZE;
    c->memfd = memfd_create("amalgam-dsm-check", MFD_CLOEXEC);
    if (c->memfd < 0 || ftruncate(c->memfd, (off_t)len) < 0)
        return -errno;
    c->guest = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, c->memfd, 0);
    c->agent = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, c->memfd, 0);
    if (c->guest == MAP_FAILED || c->agent == MAP_FAILED)
        return -errno;
    r = dsm_host_start(&c->host, c->ic, c->memfd, c->guest, c->agent, c->npages,
                       c->cache_bytes / DSM_PAGE_SIZE, home_of, c);
    if (r < 0) {
        fprintf(stderr, "amalgam dsm-check: cannot attach the DSM: %s\n", strerror(-r));
        return r;
    }
    r = dsm_host_set_pull(&c->host, c->pull);
    if (r < 0) { /* asked to check pulls, it cannot: that is a failure here */
        fprintf(stderr, "amalgam dsm-check: rank %d: no one-sided pulls over '%s': %s\n",
                cfg->rank, ic_provider_name(c->ic), dsm_pull_error(r));
        return r;
    }
    pthread_t prog, thr[64];
    struct worker w[64];
    pthread_create(&prog, NULL, progress, c);
    /* Start together, so that the ranks really contend for the pages. */
    if (cfg->rank == 0) {
        __atomic_add_fetch(&c->ready, 1, __ATOMIC_SEQ_CST);
        r = wait_flag(c, &c->ready, cfg->size, 60);
        for (int p = 1; p < cfg->size && r == 0; p++)
            ic_send(c->ic, p, T_GO, 0, 0, NULL, 0);
    } else {
        ic_send(c->ic, 0, T_READY, 0, 0, NULL, 0);
        r = wait_flag(c, &c->go, 1, 60);
    }
    uint64_t t0 = clock_now_ns();
    for (int i = 0; i < c->threads; i++) {
        w[i] = (struct worker){c, cfg->rank * c->threads + i};
        pthread_create(&thr[i], NULL, work, &w[i]);
    }
    /* A worker waiting for a page from a dead peer never returns: stop
     * without it (the process exit ends it) rather than hang. */
    r = r ?: wait_flag(c, &c->workers_done, c->threads, 3600);
    r = r ?: barrier(c, 1);
    if (r == 0)
        __atomic_store_n(&c->check_go, 1, __ATOMIC_SEQ_CST);
    r = r ?: wait_flag(c, &c->workers_done, 2 * c->threads, 3600);
    if (r == -EPIPE)
        fprintf(stderr, "amalgam dsm-check: rank %d: peer rank %d stopped answering\n",
                cfg->rank, c->dead);
    else if (c->broken)
        fprintf(stderr, "amalgam dsm-check: rank %d: the DSM could not copy, protect or pull "
                "pages (%llu failures); stopping\n", cfg->rank,
                (unsigned long long)dsm_host_errors(&c->host));
    else if (r < 0)
        fprintf(stderr, "amalgam dsm-check: rank %d: %s\n", cfg->rank, strerror(-r));
    if (r < 0)
        return r;
    for (int i = 0; i < c->threads; i++)
        pthread_join(thr[i], NULL);
    uint64_t bad = c->bad_pages;
    r = c->verify_result;
    double secs = (double)(clock_now_ns() - t0) / 1e9;
    int r2 = barrier(c, 2); /* nobody leaves while another still reads */
    r = r ?: r2;
    if (r == 0 && bad)
        r = -EIO;
    if (r == 0 && c->bench_pages && cfg->rank == 1)
        bench_report(c);
    sample_resident(c);
    const struct dsm_stats *s = &c->host.eng.stats;
    if (r == 0 && (dsm_host_errors(&c->host) || c->host.resolve_errors))
        r = -EIO; /* the guest view was not what the protocol said */
    if (r == 0)
        printf("dsm-check: rank %d of %d: ok in %.2f s; %llu read faults, %llu write faults "
               "(%llu upgrades), %llu invalidations, %llu recalls, %llu userfaultfd events, "
               "%llu resolve errors, %llu map errors; %llu evictions (%llu written back), "
               "%llu pulled one-sided; peak resident %llu of %llu KiB\n", cfg->rank, cfg->size, secs,
               (unsigned long long)s->read_faults, (unsigned long long)s->write_faults,
               (unsigned long long)s->upgrades, (unsigned long long)s->inv_received,
               (unsigned long long)s->recalls_received,
               (unsigned long long)c->host.uffd_events, (unsigned long long)c->host.resolve_errors,
               (unsigned long long)s->map_errors, (unsigned long long)s->evictions,
               (unsigned long long)s->writebacks, (unsigned long long)s->pulls,
               (unsigned long long)(c->peak_bytes >> 10),
               (unsigned long long)(len >> 10));
    else if (r == -EPIPE)
        fprintf(stderr, "amalgam dsm-check: rank %d: peer rank %d stopped answering\n",
                cfg->rank, c->dead);
    else
        fprintf(stderr, "amalgam dsm-check: rank %d: %s\n", cfg->rank, strerror(-r));
    usleep(200000); /* let the last messages leave before the endpoint closes */
    c->stop = true;
    pthread_join(prog, NULL);
    dsm_host_stop(&c->host);
    ic_close(c->ic);
    return r;
}

static const char check_usage[] =
    "usage: amalgam dsm-check [--local K [--pin]] [node flags] [--threads N] [--iters N]\n"
    "                         [--sweep --mem SIZE [--dsm-cache SIZE]] [--bench PAGES]\n"
    "                         [--dsm-pull on|off]\n"
    "The DSM end to end with host threads standing in for vCPUs (no KVM needed).\n"
    "Default: every thread of every rank does lock xadd on one shared counter and\n"
    "plain increments on its own word of one shared page; the totals must be exact.\n"
    "  --local K          start K ranks on this host (--pin: each on its own CPUs)\n"
    "  --threads N        threads per rank (default 2)\n"
    "  --iters N          increments per thread (default 100000)\n"
    "  --sweep            instead, every rank writes its share of all pages, then\n"
    "                     reads back every page; reports peak resident memory\n"
    "  --mem SIZE         shared memory size for --sweep (e.g. 96M)\n"
    "  --dsm-cache SIZE   bound on other ranks' pages cached per rank\n"
    "  --bench PAGES      rank 1 times first reads and writes of rank 0's pages\n"
    "  --dsm-pull on|off  pages move by one-sided reads from their home (default off)\n"
    "Node flags (--rank --ranks --bootstrap --secret-file --fabric) as for every\n"
    "multi-node command; rank and size also come from mpirun/srun.\n";

int dsm_check_main(int argc, char **argv)
{
    struct ic_config cfg;
    char err[512];
    static struct check c;
    c.threads = 2;
    c.iters = 100000;
    c.dead = -1;
    if (ic_parse_node_flags(&argc, argv, &cfg, err, sizeof err) < 0 ||
        dsm_register_types(&cfg.types) < 0 || ic_types_add(&cfg.types, T_DONE, 0, 0) < 0 ||
        ic_types_add(&cfg.types, T_FINISH, 0, 0) < 0 || ic_types_add(&cfg.types, T_READY, 0, 0) < 0 ||
        ic_types_add(&cfg.types, T_GO, 0, 0) < 0) {
        fprintf(stderr, "amalgam dsm-check: %s\n", err);
        return 2;
    }
    for (int i = 1; i < argc; i++) /* wherever it stands relative to --local */
        cfg.pin_local |= !strcmp(argv[i], "--pin");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            c.threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--bench") && i + 1 < argc) {
            c.bench_pages = atoi(argv[++i]);
            if (c.bench_pages < 10 || c.bench_pages > 4096) {
                fprintf(stderr, "amalgam dsm-check: --bench 10..4096 pages\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--pin")) {
            /* taken above, for --local; a rank itself ignores it */
        } else if (!strcmp(argv[i], "--dsm-pull") && i + 1 < argc) {
            i++;
            if (strcmp(argv[i], "on") && strcmp(argv[i], "off")) {
                fprintf(stderr, "amalgam dsm-check: --dsm-pull on|off\n");
                return 2;
            }
            c.pull = !strcmp(argv[i], "on");
        } else if (!strcmp(argv[i], "--sweep")) {
            c.sweep = true;
        } else if (!strcmp(argv[i], "--mem") && i + 1 < argc) {
            if (vmm_parse_size(argv[++i], &c.mem_bytes) < 0 || c.mem_bytes % DSM_PAGE_SIZE) {
                fprintf(stderr, "amalgam dsm-check: --mem '%s': expected a size such as 256M\n",
                        argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--dsm-cache") && i + 1 < argc) {
            if (vmm_parse_size(argv[++i], &c.cache_bytes) < 0 || c.cache_bytes < DSM_PAGE_SIZE) {
                fprintf(stderr, "amalgam dsm-check: --dsm-cache '%s': expected a size of at "
                        "least 4K\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--iters") && i + 1 < argc) {
            c.iters = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--local") && i + 1 < argc && cfg.rank < 0) {
            int n = atoi(argv[++i]);
            /* The ranks get every flag but this one. */
            memmove(&argv[i - 1], &argv[i + 1], (size_t)(argc - i - 1) * sizeof *argv);
            return ic_spawn_local(NULL, argc - 2, argv, n < 2 ? 2 : n, &cfg) ? 1 : 0;
        } else if (!strcmp(argv[i], "--help")) {
            fputs(check_usage, stdout);
            return 0;
        } else {
            fprintf(stderr, "amalgam dsm-check: unknown flag '%s'\n%s", argv[i], check_usage);
            return 2;
        }
    }
    if (c.threads < 1 || c.threads > 64 || c.iters < 1 ||
        c.threads * (cfg.size > 0 ? cfg.size : 1) * 8 > DSM_PAGE_SIZE) {
        fprintf(stderr, "amalgam dsm-check: --threads 1..64 (and threads x ranks <= 512)\n");
        return 2;
    }
    return run(&c, &cfg) < 0 ? 1 : 0;
}
