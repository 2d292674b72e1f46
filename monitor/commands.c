/* The monitor's commands: their arguments, checked before they run, and
 * what each does through struct monitor_ops. Pure: the machine is behind
 * the ops, so the table and the checks are unit-tested with a fake one. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "monitor/monitor.h"

static int fail(struct qmp_error *e, const char *cls, const char *desc)
{
    e->cls = cls;
    snprintf(e->desc, sizeof e->desc, "%s", desc);
    return -1;
}

/* A machine operation that failed: its words, or errno's. */
static int op_failed(struct qmp_error *e, int r, const char *err)
{
    e->cls = "GenericError";
    snprintf(e->desc, sizeof e->desc, "%s", err[0] ? err : strerror(-r));
    return -1;
}

static const char *type_name(enum qmp_type t)
{
    switch (t) {
    case QMP_INT: return "integer";
    case QMP_STR: return "string";
    case QMP_BOOL: return "boolean";
    case QMP_ARRAY: return "array";
    }
    return "?";
}

static bool type_ok(enum qmp_type t, json_t *v)
{
    switch (t) {
    case QMP_INT: return json_is_integer(v);
    case QMP_STR: return json_is_string(v);
    case QMP_BOOL: return json_is_boolean(v);
    case QMP_ARRAY: return json_is_array(v);
    }
    return false;
}

int qmp_check_args(const struct qmp_command *c, json_t *args, struct qmp_error *e)
{
    const char *key;
    json_t *v;
    e->cls = "GenericError";
    if (args) {
        json_object_foreach(args, key, v) {
            const struct qmp_arg *a = c->args;
            while (a && a->name && strcmp(a->name, key))
                a++;
            if (!a || !a->name) {
                snprintf(e->desc, sizeof e->desc, "Parameter '%.64s' is unexpected", key);
                return -1;
            }
            if (!type_ok(a->type, v)) {
                snprintf(e->desc, sizeof e->desc, "Invalid parameter type for '%s', expected: %s",
                         a->name, type_name(a->type));
                return -1;
            }
            if (a->type == QMP_INT &&
                (json_integer_value(v) < a->min || json_integer_value(v) > a->max)) {
                snprintf(e->desc, sizeof e->desc,
                         "Parameter '%s' expects a value from %lld to %lld", a->name,
                         (long long)a->min, (long long)a->max);
                return -1;
            }
        }
    }
    for (const struct qmp_arg *a = c->args; a && a->name; a++)
        if (a->required && !json_object_get(args, a->name)) {
            snprintf(e->desc, sizeof e->desc, "Parameter '%s' is missing", a->name);
            return -1;
        }
    return 0;
}

static int64_t arg_int(json_t *args, const char *name, int64_t dflt)
{
    json_t *v = json_object_get(args, name);
    return v ? (int64_t)json_integer_value(v) : dflt;
}

/* ---- the commands ---- */

static int c_capabilities(const struct monitor_ops *o, json_t *args, json_t **ret,
                          struct qmp_error *e)
{
    (void)o, (void)e;
    json_t *en = json_object_get(args, "enable");
    if (en && json_array_size(en))
        return fail(e, "GenericError", "amalgam offers no QMP capabilities to enable");
    *ret = json_object();
    return 0;
}

static int c_status(const struct monitor_ops *o, json_t *args, json_t **ret,
                    struct qmp_error *e)
{
    (void)args, (void)e;
    bool run = o->running(o->ctx);
    *ret = json_pack("{s:b,s:b,s:s}", "running", run, "singlestep", 0, "status",
                     run ? "running" : "paused");
    return 0;
}

static int c_stop(const struct monitor_ops *o, json_t *args, json_t **ret, struct qmp_error *e)
{
    char err[256] = "";
    (void)args;
    int r = o->stop(o->ctx, err, sizeof err);
    if (r < 0)
        return op_failed(e, r, err);
    *ret = json_object();
    return r > 0;
}

static int c_cont(const struct monitor_ops *o, json_t *args, json_t **ret, struct qmp_error *e)
{
    char err[256] = "";
    (void)args;
    int r = o->cont(o->ctx, err, sizeof err);
    if (r < 0)
        return op_failed(e, r, err);
    *ret = json_object();
    return r > 0;
}

static int c_powerdown(const struct monitor_ops *o, json_t *args, json_t **ret,
                       struct qmp_error *e)
{
    char err[256] = "";
    (void)args;
    int r = o->powerdown(o->ctx, err, sizeof err);
    if (r < 0)
        return op_failed(e, r, err);
    *ret = json_object();
    return 1; /* POWERDOWN follows */
}

/* quit's reply goes out first; the session's owner then ends the run
 * (QMP_AFTER_QUIT), so the client sees the reply and then SHUTDOWN. */
static int c_quit(const struct monitor_ops *o, json_t *args, json_t **ret, struct qmp_error *e)
{
    (void)o, (void)args, (void)e;
    *ret = json_object();
    return 1;
}

static struct vm_status *query(const struct monitor_ops *o, unsigned top, struct qmp_error *e)
{
    struct vm_status *st = calloc(1, sizeof *st);
    char err[256] = "";
    if (!st) {
        fail(e, "GenericError", "out of memory");
        return NULL;
    }
    int r = o->query(o->ctx, top, st, err, sizeof err);
    if (r < 0) {
        op_failed(e, r, err);
        free(st);
        return NULL;
    }
    return st;
}

static const struct vm_status_node *node_of(const struct vm_status *st, int rank)
{
    for (int i = 0; i < st->nnodes; i++)
        if (st->node[i].rank == rank)
            return &st->node[i];
    return NULL;
}

static int c_cpus(const struct monitor_ops *o, json_t *args, json_t **ret, struct qmp_error *e)
{
    (void)args;
    struct vm_status *st = query(o, 0, e);
    if (!st)
        return -1;
    json_t *a = json_array();
    for (int i = 0; i < st->nr_vcpus; i++) {
        const struct vm_status_vcpu *c = &st->vcpu[i];
        const struct vm_status_node *n = node_of(st, c->node);
        char qom[64];
        snprintf(qom, sizeof qom, "/machine/unattached/device[%d]", c->index);
        /* One socket per node, as the guest's ACPI tables describe it. */
        json_array_append_new(
            a, json_pack("{s:i,s:s,s:I,s:s,s:{s:i,s:i,s:i,s:i},s:i,s:s,s:I,s:s,s:I,s:I}",
                         "cpu-index", c->index, "qom-path", qom, "thread-id", (json_int_t)c->tid,
                         "target", "x86_64", "props", "node-id", c->node, "socket-id", c->node,
                         "core-id", c->index, "thread-id", 0, "node", c->node, "host",
                         n ? n->host : "", "pid", (json_int_t)(n ? n->pid : 0), "state", c->state,
                         "exits", (json_int_t)c->exits, "remote-faults",
                         (json_int_t)c->remote_faults));
    }
    free(st);
    *ret = a;
    return 0;
}

static int c_nodes(const struct monitor_ops *o, json_t *args, json_t **ret, struct qmp_error *e)
{
    (void)args;
    struct vm_status *st = query(o, 0, e);
    if (!st)
        return -1;
    json_t *a = json_array();
    for (int i = 0; i < st->nnodes; i++) {
        const struct vm_status_node *n = &st->node[i];
        json_t *dist = json_array();
        for (int p = 0; p < st->nnodes; p++)
            json_array_append_new(dist, json_pack("{s:i,s:I}", "rank", p, "rtt-ns",
                                                  (json_int_t)n->rtt_ns[p]));
        json_array_append_new(
            a, json_pack("{s:i,s:s,s:I,s:s,s:{s:I,s:I},s:I,s:I,s:o,s:b}", "rank", n->rank,
                         "host", n->host, "pid", (json_int_t)n->pid, "fabric", n->fabric, "home",
                         "start", (json_int_t)n->home_start, "end", (json_int_t)n->home_end,
                         "resident-bytes", (json_int_t)n->resident, "cached-bytes",
                         (json_int_t)n->cached, "distance", dist, "paused", n->paused));
    }
    free(st);
    *ret = a;
    return 0;
}

static int c_dsm(const struct monitor_ops *o, json_t *args, json_t **ret, struct qmp_error *e)
{
    unsigned top = (unsigned)arg_int(args, "top", 10);
    struct vm_status *st = query(o, top, e);
    if (!st)
        return -1;
    json_t *nodes = json_array(), *total = json_object();
    uint64_t sum[VM_DSM_COUNTERS] = {0};
    for (int i = 0; i < st->nnodes; i++) {
        const struct vm_status_node *n = &st->node[i];
        json_t *cnt = json_object(), *hot = json_array();
        for (int k = 0; k < VM_DSM_COUNTERS; k++) {
            json_object_set_new(cnt, vm_dsm_counter_names[k], json_integer((json_int_t)n->dsm[k]));
            sum[k] += n->dsm[k];
        }
        for (int h = 0; h < n->nhot; h++)
            json_array_append_new(hot, json_pack("{s:I,s:i,s:i}", "gpa",
                                                 (json_int_t)n->hot[h].gpa, "fetched",
                                                 (int)n->hot[h].fetched, "lost",
                                                 (int)n->hot[h].lost));
        json_array_append_new(nodes, json_pack("{s:i,s:o,s:I,s:I,s:o}", "rank", n->rank,
                                               "counters", cnt, "hold-window-ns",
                                               (json_int_t)n->hold_window_ns, "window-ns",
                                               (json_int_t)n->window_ns, "hot-pages", hot));
    }
    for (int k = 0; k < VM_DSM_COUNTERS; k++)
        json_object_set_new(total, vm_dsm_counter_names[k], json_integer((json_int_t)sum[k]));
    free(st);
    *ret = json_pack("{s:o,s:o}", "nodes", nodes, "total", total);
    return 0;
}

static int c_migrate(const struct monitor_ops *o, json_t *args, json_t **ret,
                     struct qmp_error *e)
{
    char err[256] = "";
    struct vm_migration_result res;
    if (!o->migrate)
        return fail(e, "GenericError", "this machine cannot move vCPUs");
    int r = o->migrate(o->ctx, (int)arg_int(args, "cpu-index", 0), (int)arg_int(args, "node", 0),
                       &res, err, sizeof err);
    if (r < 0)
        return op_failed(e, r, err);
    *ret = json_pack("{s:i,s:i,s:i,s:I,s:I,s:I}", "cpu-index", res.vcpu, "from", res.from, "to",
                     res.to, "epoch", (json_int_t)res.epoch, "downtime-ns",
                     (json_int_t)res.downtime_ns, "bytes", (json_int_t)res.bytes);
    return r > 0; /* VCPU_MIGRATED follows a move, not a vCPU already there */
}

static int c_version(const struct monitor_ops *o, json_t *args, json_t **ret,
                     struct qmp_error *e)
{
    (void)o, (void)args, (void)e;
    *ret = json_pack("{s:{s:i,s:i,s:i},s:s}", "qemu", "major", 0, "minor", 1, "micro", 0,
                     "package", "amalgam");
    return 0;
}

static int c_commands(const struct monitor_ops *o, json_t *args, json_t **ret,
                      struct qmp_error *e)
{
    (void)o, (void)args, (void)e;
    json_t *a = json_array();
    for (const struct qmp_command *c = qmp_commands; c->name; c++)
        json_array_append_new(a, json_pack("{s:s}", "name", c->name));
    *ret = a;
    return 0;
}

static const struct qmp_arg caps_args[] = {{"enable", QMP_ARRAY, false, 0, 0}, {0}};
static const struct qmp_arg dsm_args[] = {{"top", QMP_INT, false, 0, MONITOR_MAX_TOP}, {0}};
static const struct qmp_arg no_args[] = {{0}};
static const struct qmp_arg migrate_args[] = {{"cpu-index", QMP_INT, true, 0, VMM_MAX_VCPUS - 1},
                                              {"node", QMP_INT, true, 0, VM_STATUS_MAX_NODES - 1},
                                              {0}};

const struct qmp_command qmp_commands[] = {
    {"qmp_capabilities", caps_args, c_capabilities, "leave negotiation mode (first command)"},
    {"query-status", no_args, c_status, "running or paused"},
    {"stop", no_args, c_stop, "pause every vCPU on every node"},
    {"cont", no_args, c_cont, "resume every vCPU"},
    {"system_powerdown", no_args, c_powerdown, "press the ACPI power button"},
    {"quit", no_args, c_quit, "end the machine now"},
    {"query-cpus-fast", no_args, c_cpus, "every vCPU: node, host thread, state"},
    {"query-nodes", no_args, c_nodes, "every node: host, pid, memory, distances"},
    {"query-dsm", dsm_args, c_dsm, "every node's DSM counters and hottest pages"},
    {"migrate-vcpu", migrate_args, c_migrate, "move a vCPU to another node, live"},
    {"query-version", no_args, c_version, "the monitor's version"},
    {"query-commands", no_args, c_commands, "the commands here"},
    {0},
};

json_t *qmp_args_from_kv(int n, char **kv, char *err, size_t errlen)
{
    json_t *o = json_object();
    for (int i = 0; o && i < n; i++) {
        const char *eq = strchr(kv[i], '=');
        if (!eq || eq == kv[i]) {
            snprintf(err, errlen, "'%s': expected key=value", kv[i]);
            json_decref(o);
            return NULL;
        }
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)(eq - kv[i]), kv[i]);
        if (json_object_get(o, key)) {
            snprintf(err, errlen, "'%s' given twice", key);
            json_decref(o);
            return NULL;
        }
        const char *v = eq + 1;
        char *end;
        errno = 0;
        long long x = strtoll(v, &end, 0);
        json_t *val = *v && !*end && !errno ? json_integer(x)
                      : !strcmp(v, "true")  ? json_true()
                      : !strcmp(v, "false") ? json_false()
                                            : json_string(v);
        json_object_set_new(o, key, val);
    }
    return o;
}

const struct qmp_command *qmp_find(const char *name)
{
    for (const struct qmp_command *c = qmp_commands; c->name; c++)
        if (!strcmp(c->name, name))
            return c;
    return NULL;
}
