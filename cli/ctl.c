/* `amalgam ctl`: a QMP client for a running machine's --monitor socket.
 * Sends one command and prints the reply (JSON, or a table with --human),
 * or, for `top`, redraws a live view every second. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/commands.h"
#include "clock/clock.h"
#include "monitor/monitor.h"

#define REPLY_TIMEOUT_MS 30000

static const char ctl_usage[] =
    "usage: amalgam ctl --monitor PATH [--human] COMMAND [key=value ...]\n"
    "       amalgam ctl --monitor PATH top [--iterations N] [--interval MS]\n"
    "\n"
    "Sends one QMP command to a running machine (amalgam run --monitor PATH)\n"
    "and prints its reply as JSON, or as a table with --human. Values are\n"
    "integers, true/false, or strings. Exits 0, 1 if the command failed or\n"
    "the machine did not answer, 2 on bad usage.\n"
    "\n"
    "  top    a live view, refreshed every second: per vCPU its node, state,\n"
    "         exits/s and remote faults/s; per node faults/s, bytes/s and\n"
    "         resident memory (--iterations N: N screens, then exit)\n"
    "\n"
    "Commands: qmp_capabilities is sent for you; then query-status, stop,\n"
    "cont, system_powerdown, quit, query-cpus-fast, query-nodes,\n"
    "query-dsm [top=N], query-version, query-commands (docs/monitor.md).\n";

struct conn {
    int fd;
    char buf[1 << 20];
    size_t len;
    int next_id;
};

static int conn_open(struct conn *c, const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path)
        return -ENAMETOOLONG;
    strcpy(a.sun_path, path);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -errno;
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0) {
        int e = errno;
        close(c->fd);
        return -e;
    }
    c->len = 0;
    c->next_id = 1;
    return 0;
}

/* The next JSON line from the monitor, or NULL (closed, deadline, junk). */
static json_t *conn_read(struct conn *c, uint64_t deadline)
{
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl) {
            json_t *v = json_loadb(c->buf, (size_t)(nl - c->buf), 0, NULL);
            size_t used = (size_t)(nl + 1 - c->buf);
            memmove(c->buf, nl + 1, c->len - used);
            c->len -= used;
            return v;
        }
        uint64_t now = clock_now_ns();
        if (c->len == sizeof c->buf || now >= deadline)
            return NULL;
        struct pollfd p = {c->fd, POLLIN, 0};
        if (poll(&p, 1, (int)((deadline - now) / 1000000ULL) + 1) <= 0)
            return NULL;
        ssize_t n = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
        if (n <= 0)
            return NULL;
        c->len += (size_t)n;
    }
}

/* MSG_NOSIGNAL: a machine that is gone is an error to report, not SIGPIPE. */
static bool send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Sends a command and returns its reply (events before it are skipped). */
static json_t *conn_call(struct conn *c, const char *name, json_t *args)
{
    int id = c->next_id++;
    json_t *req = json_pack("{s:s,s:i}", "execute", name, "id", id);
    if (args)
        json_object_set(req, "arguments", args);
    char *s = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!s)
        return NULL;
    /* One deadline for the whole call: events cannot keep it waiting. */
    uint64_t deadline = clock_now_ns() + REPLY_TIMEOUT_MS * 1000000ULL;
    bool ok = send_all(c->fd, s, strlen(s)) && send_all(c->fd, "\n", 1);
    free(s);
    if (!ok)
        return NULL;
    for (;;) {
        json_t *r = conn_read(c, deadline);
        if (!r || json_integer_value(json_object_get(r, "id")) == id)
            return r;
        json_decref(r);
    }
}

static int handshake(struct conn *c, const char *path)
{
    int r = conn_open(c, path);
    if (r < 0) {
        fprintf(stderr, "amalgam ctl: cannot connect to the monitor at %s: %s\n", path,
                strerror(-r));
        return -1;
    }
    json_t *g = conn_read(c, clock_now_ns() + REPLY_TIMEOUT_MS * 1000000ULL);
    json_t *ok = g && json_object_get(g, "QMP") ? conn_call(c, "qmp_capabilities", NULL) : NULL;
    bool good = ok && json_object_get(ok, "return");
    json_decref(g);
    json_decref(ok);
    if (!good) {
        fprintf(stderr, "amalgam ctl: %s does not speak QMP (no greeting or no capabilities)\n",
                path);
        close(c->fd);
        return -1;
    }
    return 0;
}

/* ---- --human tables ---- */

static int64_t geti(json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static const char *gets(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static void human_cpus(json_t *a)
{
    size_t i;
    json_t *v;
    printf("%-5s %-5s %-16s %-8s %-10s %-12s %s\n", "CPU", "NODE", "HOST", "PID", "THREAD",
           "STATE", "EXITS/FAULTS");
    json_array_foreach(a, i, v)
        printf("%-5" PRId64 " %-5" PRId64 " %-16.16s %-8" PRId64 " %-10" PRId64 " %-12s %" PRId64
               "/%" PRId64 "\n", geti(v, "cpu-index"), geti(v, "node"), gets(v, "host"),
               geti(v, "pid"), geti(v, "thread-id"), gets(v, "state"), geti(v, "exits"),
               geti(v, "remote-faults"));
}

static void human_nodes(json_t *a)
{
    size_t i, j;
    json_t *v, *d;
    printf("%-5s %-16s %-8s %-6s %-25s %-10s %-10s %s\n", "RANK", "HOST", "PID", "FABRIC",
           "HOME (GPA)", "RESIDENT", "CACHED", "RTT TO EACH RANK (us)");
    json_array_foreach(a, i, v) {
        json_t *h = json_object_get(v, "home");
        char home[40];
        snprintf(home, sizeof home, "%#" PRIx64 "-%#" PRIx64, geti(h, "start"), geti(h, "end"));
        printf("%-5" PRId64 " %-16.16s %-8" PRId64 " %-6s %-25s %-10" PRId64 " %-10" PRId64 " ",
               geti(v, "rank"), gets(v, "host"), geti(v, "pid"), gets(v, "fabric"), home,
               geti(v, "resident-bytes") >> 20, geti(v, "cached-bytes") >> 20);
        json_array_foreach(json_object_get(v, "distance"), j, d)
            printf("%s%.0f", j ? " " : "", (double)geti(d, "rtt-ns") / 1e3);
        printf("\n");
    }
    printf("(resident and cached in MiB)\n");
}

static void human_dsm(json_t *o)
{
    size_t i, j;
    json_t *n, *h;
    json_array_foreach(json_object_get(o, "nodes"), i, n) {
        json_t *c = json_object_get(n, "counters");
        printf("node %" PRId64 ": %" PRId64 " read faults, %" PRId64 " write faults, %" PRId64
               " KiB moved, %" PRId64 " requests held (window %.0f us)\n", geti(n, "rank"),
               geti(c, "read-faults"), geti(c, "write-faults"), geti(c, "bytes-moved") >> 10,
               geti(c, "requests-held"), (double)geti(n, "hold-window-ns") / 1e3);
        json_array_foreach(json_object_get(n, "hot-pages"), j, h)
            printf("    %#12" PRIx64 "  fetched %" PRId64 ", lost %" PRId64 "\n",
                   geti(h, "gpa"), geti(h, "fetched"), geti(h, "lost"));
    }
}

static void print_reply(const char *name, json_t *ret, bool human)
{
    if (human && !strcmp(name, "query-cpus-fast"))
        return human_cpus(ret);
    if (human && !strcmp(name, "query-nodes"))
        return human_nodes(ret);
    if (human && !strcmp(name, "query-dsm"))
        return human_dsm(ret);
    if (human && !strcmp(name, "query-status"))
        return (void)printf("%s\n", gets(ret, "status"));
    char *s = json_dumps(ret, JSON_INDENT(human ? 2 : 0) | JSON_ENCODE_ANY | JSON_COMPACT);
    printf("%s\n", s ? s : "null");
    free(s);
}

/* ---- top ---- */

struct sample {
    json_t *cpus, *dsm, *nodes;
    uint64_t t;
};

static bool take(struct conn *c, struct sample *s)
{
    json_t *args = json_pack("{s:i}", "top", 5);
    json_t *a = conn_call(c, "query-cpus-fast", NULL), *b = conn_call(c, "query-dsm", args),
           *d = conn_call(c, "query-nodes", NULL);
    json_decref(args);
    s->t = clock_now_ns();
    s->cpus = json_incref(json_object_get(a, "return"));
    s->dsm = json_incref(json_object_get(b, "return"));
    s->nodes = json_incref(json_object_get(d, "return"));
    json_decref(a);
    json_decref(b);
    json_decref(d);
    return s->cpus && s->dsm && s->nodes;
}

static void drop_sample(struct sample *s)
{
    json_decref(s->cpus);
    json_decref(s->dsm);
    json_decref(s->nodes);
    memset(s, 0, sizeof *s);
}

static int64_t node_counter(json_t *dsm, int64_t rank, const char *k)
{
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(dsm, "nodes"), i, n)
        if (geti(n, "rank") == rank)
            return geti(json_object_get(n, "counters"), k);
    return 0;
}

static void draw(const struct sample *p, const struct sample *s, bool tty)
{
    double dt = (double)(s->t - p->t) / 1e9;
    size_t i;
    json_t *v;
    if (tty)
        printf("\033[H\033[2J");
    printf("amalgam top: %zu vCPUs on %zu nodes (every %.1f s)\n\n", json_array_size(s->cpus),
           json_array_size(s->nodes), dt);
    printf("%-5s %-5s %-12s %12s %16s\n", "CPU", "NODE", "STATE", "EXITS/s", "REMOTE FAULTS/s");
    json_array_foreach(s->cpus, i, v) {
        json_t *o = json_array_get(p->cpus, i);
        printf("%-5" PRId64 " %-5" PRId64 " %-12s %12.0f %16.0f\n", geti(v, "cpu-index"),
               geti(v, "node"), gets(v, "state"), (double)(geti(v, "exits") - geti(o, "exits")) / dt,
               (double)(geti(v, "remote-faults") - geti(o, "remote-faults")) / dt);
    }
    printf("\n%-5s %-16s %12s %14s %14s %s\n", "NODE", "HOST", "FAULTS/s", "KiB MOVED/s",
           "RESIDENT MiB", "HOTTEST PAGE (fetched/lost)");
    json_array_foreach(s->nodes, i, v) {
        int64_t r = geti(v, "rank");
        int64_t f = node_counter(s->dsm, r, "read-faults") + node_counter(s->dsm, r, "write-faults") -
                    node_counter(p->dsm, r, "read-faults") - node_counter(p->dsm, r, "write-faults");
        int64_t b = node_counter(s->dsm, r, "bytes-moved") - node_counter(p->dsm, r, "bytes-moved");
        json_t *hot = json_object_get(json_array_get(json_object_get(s->dsm, "nodes"), i), "hot-pages");
        json_t *h0 = json_array_get(hot, 0);
        char hs[64] = "-";
        if (h0)
            snprintf(hs, sizeof hs, "%#" PRIx64 " (%" PRId64 "/%" PRId64 ")", geti(h0, "gpa"),
                     geti(h0, "fetched"), geti(h0, "lost"));
        printf("%-5" PRId64 " %-16.16s %12.0f %14.0f %14" PRId64 " %s\n", r, gets(v, "host"),
               (double)f / dt, (double)b / 1024 / dt, geti(v, "resident-bytes") >> 20, hs);
    }
    fflush(stdout);
}

static int run_top(struct conn *c, long iterations, long interval_ms)
{
    struct sample prev = {0}, cur = {0};
    bool tty = isatty(1);
    if (!take(c, &prev)) {
        fprintf(stderr, "amalgam ctl top: the monitor did not answer\n");
        return 1;
    }
    for (long k = 0; iterations <= 0 || k < iterations; k++) {
        struct timespec ts = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        if (!take(c, &cur)) {
            drop_sample(&prev);
            drop_sample(&cur);
            fprintf(stderr, "amalgam ctl top: the machine is gone\n");
            return 1;
        }
        draw(&prev, &cur, tty);
        drop_sample(&prev);
        prev = cur;
        memset(&cur, 0, sizeof cur);
    }
    drop_sample(&prev);
    return 0;
}

int cmd_ctl(int argc, char **argv)
{
    const char *path = NULL, *name = NULL;
    bool human = false;
    long iterations = 0, interval = 1000;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(ctl_usage, stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--human"))
            human = true;
        else if (!strcmp(argv[i], "--monitor") && i + 1 < argc)
            path = argv[++i];
        else if (!strncmp(argv[i], "--monitor=", 10))
            path = argv[i] + 10;
        else {
            fprintf(stderr, "amalgam ctl: unknown flag '%s' (see 'amalgam ctl --help')\n", argv[i]);
            return 2;
        }
    }
    if (!path || i >= argc) {
        fprintf(stderr, "amalgam ctl: %s (see 'amalgam ctl --help')\n",
                !path ? "--monitor PATH is required" : "which command?");
        return 2;
    }
    name = argv[i++];
    bool top = !strcmp(name, "top");
    for (int k = i; top && k < argc; k += 2) {
        bool iters = !strcmp(argv[k], "--iterations"), ival = !strcmp(argv[k], "--interval");
        char *end = NULL;
        long v = k + 1 < argc ? strtol(argv[k + 1], &end, 10) : 0;
        if ((!iters && !ival) || !end || *end || v < (iters ? 1 : 100)) {
            fprintf(stderr, "amalgam ctl top: expected --iterations N (>= 1) or --interval MS "
                    "(>= 100), got '%s'\n", argv[k]);
            return 2;
        }
        *(iters ? &iterations : &interval) = v;
    }
    char err[256];
    json_t *args = top ? NULL : qmp_args_from_kv(argc - i, argv + i, err, sizeof err);
    if (!top && !args) {
        fprintf(stderr, "amalgam ctl: %s\n", err);
        return 2;
    }
    static struct conn c;
    if (handshake(&c, path) < 0) {
        json_decref(args);
        return 1;
    }
    int status;
    if (top) {
        status = run_top(&c, iterations, interval);
    } else {
        json_t *r = conn_call(&c, name, json_object_size(args) ? args : NULL);
        json_t *ret = json_object_get(r, "return"), *e = json_object_get(r, "error");
        status = 1;
        if (ret) {
            print_reply(name, ret, human);
            status = 0;
        } else if (e) {
            fprintf(stderr, "amalgam ctl: %s: %s (%s)\n", name, gets(e, "desc"), gets(e, "class"));
        } else {
            fprintf(stderr, "amalgam ctl: %s: no answer from the monitor\n", name);
        }
        json_decref(r);
    }
    json_decref(args);
    close(c.fd);
    return status;
}
