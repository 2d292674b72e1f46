/* libFuzzer target: the monitor's command decoder (monitor/qmp.c and the
 * command table) on arbitrary client bytes, against a fake machine. Every
 * line it sends must be one JSON object ending in a newline, and the
 * session's buffer must never overflow. The input is fed in two pieces,
 * split by its first byte, so values cut across reads are covered. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "monitor/monitor.h"

static bool f_running(void *ctx) { (void)ctx; return true; }
static int f_ok(void *ctx, char *err, size_t n) { (void)ctx, (void)err, (void)n; return 0; }
static void f_quit(void *ctx) { (void)ctx; }
static int f_query(void *ctx, unsigned top, struct vm_status *st, char *err, size_t n)
{
    (void)ctx, (void)err, (void)n;
    st->nnodes = 2;
    st->nr_vcpus = 2;
    st->node[1].rank = 1;
    st->node[0].nhot = top > 2 ? 2 : (int)top;
    for (int i = 0; i < 2; i++)
        st->vcpu[i] = (struct vm_status_vcpu){i, i, 100 + i, "running", 1, 2};
    return 0;
}

static int f_migrate(void *ctx, int v, int node, struct vm_migration_result *res, char *err,
                     size_t n)
{
    (void)ctx, (void)err, (void)n;
    *res = (struct vm_migration_result){v, 0, node, 1, 1000, 7000};
    return 1;
}

static bool out(void *ctx, const char *line, size_t len)
{
    (void)ctx;
    if (!len || line[len - 1] != '\n' || memchr(line, '\n', len - 1))
        __builtin_trap();
    json_t *v = json_loadb(line, len, 0, NULL);
    if (!json_is_object(v))
        __builtin_trap();
    json_decref(v);
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct qmp_session s;
    struct qmp_stats st = {0};
    struct monitor_ops ops = {NULL, f_running, f_ok, f_ok, f_ok, f_quit, f_query, f_migrate};
    qmp_session_init(&s, &st);
    size_t cut = size ? data[0] % (size + 1) : 0;
    qmp_session_feed(&s, (const char *)data, cut, &ops, out, NULL, NULL);
    qmp_session_feed(&s, (const char *)data + cut, size - cut, &ops, out, NULL, NULL);
    if (s.len > sizeof s.buf)
        __builtin_trap();
    return 0;
}
