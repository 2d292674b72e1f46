/* `amalgam bench fabric` (ping-pong latency and streaming bandwidth between
 * ranks 0 and 1) and `amalgam fabric-check` (every rank exchanges a checked
 * 4 KiB message with every other, optionally staying up to watch its peers'
 * heartbeats). Both run as ranks of a cluster; started without a rank and
 * outside a launcher, they start their local ranks themselves. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock/clock.h"
#include "interconnect/interconnect.h"
#include "tools/tools.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Messages in flight at most while streaming, well within the receiver's
 * posted receives (see fabric.c: NRX). */
#define STREAM_WINDOW 32

/* ---- bench fabric -------------------------------------------------------------- */

struct bench {
    struct ic *ic;
    uint32_t size;
    uint8_t payload[IC_MAX_PAYLOAD];
    volatile uint64_t pongs, pings, streamed;
    uint64_t stream_n;
};

static void bench_handler(void *ctx, const struct ic_hdr *h, const void *p)
{
    struct bench *b = ctx;
    (void)p;
    if (h->type == IC_T_PONG) {
        b->pongs++;
    } else if (h->type == IC_T_PING && h->arg1 == 0) {
        b->pings++;
        ic_send(b->ic, h->src_rank, IC_T_PONG, h->arg0, 0, b->payload, b->size);
    } else if (h->type == IC_T_PING) {
        if (++b->streamed == h->arg1 || b->streamed % STREAM_WINDOW == 0)
            ic_send(b->ic, h->src_rank, IC_T_PONG, 0, 0, NULL, 0);
    }
}

/* Spins on the fabric until *counter reaches target; checks liveness, and
 * gives up when a live peer sends nothing for 10 s (a lost message). */
static int spin_until(struct bench *b, volatile uint64_t *counter, uint64_t target)
{
    uint64_t last_tick = 0, start = clock_now_ns(), seen = *counter + b->pings;
    while (*counter < target) {
        if (*counter + b->pings != seen) {
            seen = *counter + b->pings;
            start = clock_now_ns();
        } else if (clock_now_ns() - start > 10000000000ULL) {
            return -ETIMEDOUT;
        }
        int r = ic_poll(b->ic, bench_handler, b, 64);
        if (r < 0)
            return r;
        uint64_t t = clock_now_ns();
        if (t - last_tick > 50000000ULL) {
            last_tick = t;
            if (ic_tick(b->ic, t) < 0)
                return -EPIPE;
        }
    }
    return 0;
}

static int bench_rank0(struct bench *b, long iters, uint64_t *lat)
{
    const long warm = iters / 10 + 10;
    for (long i = 0; i < warm + iters; i++) {
        uint64_t t0 = clock_now_ns(), want = b->pongs + 1;
        int r = ic_send(b->ic, 1, IC_T_PING, (uint64_t)i, 0, b->payload, b->size);
        if (r < 0 || (r = spin_until(b, &b->pongs, want)) < 0)
            return r;
        if (i >= warm)
            lat[i - warm] = (clock_now_ns() - t0) / 2;
    }
    /* Streaming in windows acknowledged by the receiver: libfabric's shm
     * provider (1.17) was seen to lose messages when far more arrive than
     * the receiver has buffers posted. */
    uint64_t t0 = clock_now_ns();
    for (uint64_t i = 0; i < b->stream_n;) {
        uint64_t want = b->pongs + 1;
        for (uint64_t k = 0; k < STREAM_WINDOW && i < b->stream_n; k++, i++) {
            int r = ic_send(b->ic, 1, IC_T_PING, i, b->stream_n, b->payload, b->size);
            if (r < 0)
                return r;
        }
        int r = spin_until(b, &b->pongs, want);
        if (r < 0)
            return r;
    }
    double secs = (double)(clock_now_ns() - t0) / 1e9;
    qsort(lat, (size_t)iters, sizeof *lat, cmp_u64);
    printf("{\"bench\":\"fabric\",\"provider\":\"%s\",\"size\":%u,\"iters\":%ld,"
           "\"one_way_us\":{\"p50\":%.2f,\"p99\":%.2f},\"bandwidth_MBps\":%.1f}\n",
           ic_provider_name(b->ic), b->size, iters, (double)lat[iters / 2] / 1e3,
           (double)lat[(size_t)((double)iters * 0.99)] / 1e3,
           (double)b->stream_n * b->size / secs / 1e6);
    fflush(stdout);
    return 0;
}

static const char bench_usage[] =
    "usage: amalgam bench fabric [--fabric tcp|shm|verbs|auto] [--size BYTES] [--iters N]\n"
    "                            [--rank R --ranks N | under mpirun/srun]\n"
    "Ping-pong between ranks 0 and 1: one JSON line with the p50/p99 one-way latency\n"
    "and the streaming bandwidth. Without a rank and outside a launcher it starts\n"
    "two local ranks itself. Node flags: --rank --ranks --bootstrap HOST:PORT\n"
    "--secret-file FILE (as for every multi-node command).\n";

/* Here --size is the message size (the cluster size is --ranks), so it is
 * renamed before the node flags are parsed. */
static void rename_size_flag(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--size"))
            argv[i] = "--msg-size";
}

int bench_fabric_main(int argc, char **argv)
{
    struct ic_config c;
    char err[512];
    long iters = 1000, size = 4096;
    if (argc >= 2 && !strcmp(argv[1], "--help")) {
        fputs(bench_usage, stdout);
        return 0;
    }
    rename_size_flag(argc, argv);
    if (ic_parse_node_flags(&argc, argv, &c, err, sizeof err) < 0) {
        fprintf(stderr, "amalgam bench fabric: %s\n", err);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        char *end = (char *)"";
        if (!strcmp(argv[i], "--iters") && i + 1 < argc)
            iters = strtol(argv[++i], &end, 10);
        else if (!strcmp(argv[i], "--msg-size") && i + 1 < argc)
            size = strtol(argv[++i], &end, 10);
        else {
            fprintf(stderr, "amalgam bench fabric: unknown flag '%s'\n%s", argv[i], bench_usage);
            return 2;
        }
        if (*end || iters < 10 || iters > 10000000 || size < 0 || size > IC_MAX_PAYLOAD) {
            fprintf(stderr, "amalgam bench fabric: --iters 10..10000000, --size 0..%d\n",
                    IC_MAX_PAYLOAD);
            return 2;
        }
    }
    if (c.rank < 0) {
        /* Re-run ourselves as ranks 0 and 1 of a local cluster. */
        return ic_spawn_local("bench", argc, argv, 2, &c) ? 1 : 0;
    }
    return ic_bench_ranked(&c, iters, (uint32_t)size);
}

int ic_bench_ranked(const struct ic_config *c, long iters, uint32_t size)
{
    char err[512];
    if (c->size < 2) {
        fprintf(stderr, "amalgam bench fabric: needs at least 2 ranks\n");
        return 2;
    }
    static struct bench b;
    b.size = size;
    b.stream_n = (uint64_t)iters;
    for (uint32_t i = 0; i < size; i++)
        b.payload[i] = (uint8_t)i;
    int r = ic_open(c, &b.ic, err, sizeof err);
    if (r < 0) {
        fprintf(stderr, "amalgam bench fabric: rank %d: %s\n", c->rank, err);
        return 1;
    }
    uint64_t *lat = calloc((size_t)iters, sizeof *lat);
    if (c->rank == 0)
        r = lat ? bench_rank0(&b, iters, lat) : -ENOMEM;
    else if (c->rank == 1)
        r = spin_until(&b, &b.streamed, b.stream_n);
    if (r == -EPIPE)
        fprintf(stderr, "amalgam bench fabric: rank %d: peer rank %d stopped answering\n",
                c->rank, ic_dead_rank(b.ic));
    else if (r == -ETIMEDOUT)
        fprintf(stderr, "amalgam bench fabric: rank %d: no answer for 10 s from a live peer: "
                "a message was lost by the fabric provider\n", c->rank);
    else if (r < 0)
        fprintf(stderr, "amalgam bench fabric: rank %d: %s\n", c->rank, strerror(-r));
    free(lat);
    ic_close(b.ic);
    return r < 0 ? 1 : 0;
}

/* ---- the fabric's latency, for NUMA distances -------------------------------- */

/* The p50 one-way latency (us) from the bench's JSON line. */
static int parse_p50_us(const char *line, double *us)
{
    const char *p = strstr(line, "\"p50\":");
    char *end;
    if (!p)
        return -EINVAL;
    double v = strtod(p + 6, &end);
    if (end == p + 6 || !(v > 0) || v > 1e9)
        return -EINVAL;
    *us = v;
    return 0;
}

#define MEASURE_TIMEOUT_MS 30000

/* Reads the child's stdout until EOF or the deadline. */
static int read_until(int fd, char *out, size_t outlen, uint64_t deadline_ns)
{
    size_t n = 0;
    for (;;) {
        uint64_t now = clock_now_ns();
        if (now >= deadline_ns)
            return -ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)((deadline_ns - now) / 1000000 + 1));
        if (r < 0 && errno != EINTR)
            return -errno;
        if (r <= 0)
            continue;
        ssize_t k = read(fd, out + n, outlen - 1 - n);
        if (k <= 0 || (n += (size_t)k) + 1 >= outlen)
            break;
    }
    out[n] = 0;
    return 0;
}

/* Runs `amalgam bench fabric [--fabric P] --size S --iters 2000`, its stdout
 * into out. The bench and its two ranks get a process group of their own,
 * so that a bench that hangs is ended whole. */
static int run_bench_child(const char *fabric, uint32_t size, char *out, size_t outlen)
{
    char sz[16];
    snprintf(sz, sizeof sz, "%u", size);
    int fd[2];
    if (pipe2(fd, O_CLOEXEC) < 0)
        return -errno;
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return -errno;
    }
    if (pid == 0) {
        setpgid(0, 0);
        dup2(fd[1], 1);
        char *av[] = {"/proc/self/exe", "bench", "fabric", "--size", sz, "--iters", "2000",
                      fabric ? "--fabric" : NULL, (char *)fabric, NULL};
        execv(av[0], av);
        _exit(127);
    }
    setpgid(pid, pid);
    close(fd[1]);
    int r = read_until(fd[0], out, outlen, clock_now_ns() + MEASURE_TIMEOUT_MS * 1000000ULL);
    close(fd[0]);
    if (r == -ETIMEDOUT)
        kill(-pid, SIGKILL);
    int st;
    if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
        return r ? r : -EIO;
    return r;
}

int ic_bench_p50_ns(const char *fabric, uint32_t size, double *ns, char *err, size_t errlen)
{
    char out[4096];
    double us;
    int r = run_bench_child(fabric, size, out, sizeof out);
    if (r == -ETIMEDOUT)
        snprintf(err, errlen, "the fabric ping-pong between two local ranks did not finish "
                 "in %d s", MEASURE_TIMEOUT_MS / 1000);
    else if (r < 0)
        snprintf(err, errlen, "the fabric ping-pong between two local ranks failed");
    if (r < 0)
        return r;
    if (parse_p50_us(out, &us) < 0) {
        snprintf(err, errlen, "the fabric ping-pong printed no latency");
        return -EINVAL;
    }
    *ns = us * 1e3;
    return 0;
}

int ic_measure_local_rtt_ns(double *ns, char *err, size_t errlen)
{
    int r = ic_bench_p50_ns(NULL, 64, ns, err, errlen);
    if (r == 0)
        *ns *= 2; /* a request and its answer */
    return r;
}
