/* `amalgam fabric-check`: proves a cluster's interconnect end to end. Every
 * rank sends every other rank one 4 KiB message whose bytes depend on
 * (sender, receiver), checks that it got exactly one correct message from
 * each peer, then (with --hold S) stays up S seconds exchanging heartbeats,
 * failing as soon as a peer stops answering. Before that every rank but 0
 * estimates its TSC's offset to rank 0's (ic_clock_probe) and prints it;
 * with --same-clock (every rank on one host, one TSC) an estimate further
 * from 0 than half its round trip fails the check. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock/clock.h"
#include "tools/tools.h"

struct check {
    int rank;
    int got[IC_MAX_RANKS];
    int bad;
};

static uint8_t pattern(int src, int dst, int i)
{
    return (uint8_t)(src * 31 + dst * 7 + i * 13);
}

static void on_msg(void *ctx, const struct ic_hdr *h, const void *p)
{
    struct check *c = ctx;
    const uint8_t *b = p;
    if (h->type != IC_T_CHECK)
        return;
    c->got[h->src_rank]++;
    for (int i = 0; i < IC_MAX_PAYLOAD; i++)
        if (b[i] != pattern(h->src_rank, c->rank, i) || h->arg0 != h->src_rank) {
            c->bad++;
            break;
        }
}

/* Polls until done() or the deadline, ticking liveness. */
static int run_until(struct ic *ic, struct check *c, uint64_t deadline, bool (*done)(struct check *, int))
{
    while (!done(c, ic_size(ic))) {
        if (ic_poll(ic, on_msg, c, 64) < 0 || ic_tick(ic, clock_now_ns()) < 0)
            return -EPIPE;
        if (clock_now_ns() > deadline)
            return -ETIMEDOUT;
        ic_wait(ic, 10, -1);
    }
    return 0;
}

static bool all_arrived(struct check *c, int size)
{
    for (int r = 0; r < size; r++)
        if (r != c->rank && c->got[r] < 1)
            return false;
    return true;
}

static bool never(struct check *c, int size)
{
    (void)c, (void)size;
    return false;
}

#define CLOCK_PROBES 32

/* Rank 0 answers inside its own polling, which lasts until every rank's
 * 4 KiB message (sent after this) has arrived. */
static int clock_to_rank0(struct ic *ic, struct check *c, bool same_clock)
{
    int64_t off = 0;
    uint64_t rtt = 0, n = 0;
    int r = ic_clock_measure(ic, 0, CLOCK_PROBES, 1000000000ULL, on_msg, c, NULL, &off, &rtt, &n);
    if (r == -EPIPE)
        return r;
    if (r < 0) {
        fprintf(stderr, "amalgam fabric-check: rank %d: rank 0 answered no clock probe\n", c->rank);
        return -ETIMEDOUT;
    }
    printf("fabric-check: rank %d: TSC offset to rank 0: %+lld cycles, +-%llu (best of %llu "
           "round trips)\n", c->rank, (long long)off, (unsigned long long)(rtt / 2),
           (unsigned long long)n);
    if (same_clock && (uint64_t)(off < 0 ? -off : off) > rtt / 2 + 1) {
        fprintf(stderr, "amalgam fabric-check: rank %d: one host, one TSC, yet the estimate is "
                "%+lld cycles, beyond half the round trip (%llu)\n", c->rank, (long long)off,
                (unsigned long long)(rtt / 2));
        c->bad++;
    }
    return 0;
}

static int exchange(struct ic *ic, struct check *c, int hold_s, bool same_clock)
{
    if (c->rank != 0) {
        int r = clock_to_rank0(ic, c, same_clock);
        if (r < 0)
            return r;
    }
    uint8_t buf[IC_MAX_PAYLOAD];
    for (int dst = 0; dst < ic_size(ic); dst++) {
        if (dst == c->rank)
            continue;
        for (int i = 0; i < IC_MAX_PAYLOAD; i++)
            buf[i] = pattern(c->rank, dst, i);
        int r = ic_send(ic, dst, IC_T_CHECK, (uint64_t)c->rank, 0, buf, sizeof buf);
        if (r < 0)
            return r;
    }
    int r = run_until(ic, c, clock_now_ns() + 20000000000ULL, all_arrived);
    if (r == 0 && hold_s > 0) {
        printf("fabric-check: rank %d: exchanged with every peer; holding %d s\n", c->rank, hold_s);
        fflush(stdout);
        r = run_until(ic, c, clock_now_ns() + (uint64_t)hold_s * 1000000000ULL, never);
        if (r == -ETIMEDOUT)
            r = 0;
    }
    return r;
}

int fabric_check_main(int argc, char **argv)
{
    struct ic_config cfg;
    char err[512];
    int hold = 0;
    bool same_clock = false;
    if (ic_parse_node_flags(&argc, argv, &cfg, err, sizeof err) < 0) {
        fprintf(stderr, "amalgam fabric-check: %s\n", err);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--hold") && i + 1 < argc) {
            hold = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--same-clock")) {
            same_clock = true;
        } else if (!strcmp(argv[i], "--local") && i + 1 < argc && cfg.rank < 0) {
            int n = atoi(argv[++i]);
            /* The ranks get every flag but this one. */
            memmove(&argv[i - 1], &argv[i + 1], (size_t)(argc - i - 1) * sizeof *argv);
            return ic_spawn_local(NULL, argc - 2, argv, n < 2 ? 2 : n, &cfg) ? 1 : 0;
        } else {
            fprintf(stderr, "amalgam fabric-check: unknown flag '%s'\n", argv[i]);
            return 2;
        }
    }
    struct ic *ic;
    if (ic_open(&cfg, &ic, err, sizeof err) < 0) {
        fprintf(stderr, "amalgam fabric-check: rank %d: %s\n", cfg.rank, err);
        return 1;
    }
    struct check c = {.rank = cfg.rank};
    int r = exchange(ic, &c, hold, same_clock);
    int status = 0;
    if (r == -EPIPE) {
        fprintf(stderr, "amalgam fabric-check: rank %d: peer rank %d stopped answering "
                "(no heartbeat for %.1f s)\n", cfg.rank, ic_dead_rank(ic), ic_dead_after_ns(ic) / 1e9);
        status = 3;
    } else if (r < 0 || c.bad) {
        fprintf(stderr, "amalgam fabric-check: rank %d: %s\n", cfg.rank,
                c.bad ? "a message arrived with wrong contents, or a clock estimate was wrong"
                      : strerror(-r));
        status = 1;
    } else {
        for (int p = 0; p < cfg.size; p++)
            if (p != cfg.rank && c.got[p] != 1) {
                fprintf(stderr, "amalgam fabric-check: rank %d: %d messages from rank %d\n",
                        cfg.rank, c.got[p], p);
                status = 1;
            }
    }
    if (!status)
        printf("fabric-check: rank %d of %d: exchanged 4 KiB with %d peers over %s\n", cfg.rank,
               cfg.size, cfg.size - 1, ic_provider_name(ic));
    ic_close(ic);
    return status;
}
