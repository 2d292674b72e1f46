/* The monitor's pure layers: a QMP session's framing and negotiation, the
 * command table's argument checks, ctl's key=value words, and what the
 * commands make of the machine, against a fake one. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "monitor/monitor.h"

/* ---- a fake machine and a session that records what it sends ---- */

struct fake {
    bool running;
    int stops, conts, powerdowns, quits, queries;
    int fail_stop;
    unsigned last_top;
};

static bool f_running(void *ctx) { return ((struct fake *)ctx)->running; }
static int f_stop(void *ctx, char *err, size_t n)
{
    struct fake *f = ctx;
    if (f->fail_stop) {
        snprintf(err, n, "node 1 did not pause: Connection timed out");
        return -ETIMEDOUT;
    }
    f->stops++;
    bool changed = f->running;
    f->running = false;
    return changed;
}
static int f_cont(void *ctx, char *err, size_t n)
{
    (void)err, (void)n;
    struct fake *f = ctx;
    f->conts++;
    bool changed = !f->running;
    f->running = true;
    return changed;
}
static int f_power(void *ctx, char *err, size_t n)
{
    (void)err, (void)n;
    ((struct fake *)ctx)->powerdowns++;
    return 0;
}
static void f_quit(void *ctx) { ((struct fake *)ctx)->quits++; }
static int f_query(void *ctx, unsigned top, struct vm_status *st, char *err, size_t n)
{
    struct fake *f = ctx;
    (void)err, (void)n;
    f->queries++;
    f->last_top = top;
    st->running = f->running;
    st->nnodes = 2;
    st->nr_vcpus = 3;
    for (int r = 0; r < 2; r++) {
        st->node[r].rank = r;
        snprintf(st->node[r].host, sizeof st->node[r].host, "host%d", r);
        st->node[r].pid = 1000 + r;
        st->node[r].dsm[VM_DSM_READ_FAULTS] = 10 + (uint64_t)r;
        st->node[r].rtt_ns[1 - r] = 5000;
    }
    st->node[1].nhot = 1;
    st->node[1].hot[0].gpa = 0x7c5000;
    st->node[1].hot[0].fetched = 7;
    int place[3] = {0, 1, 1};
    for (int i = 0; i < 3; i++)
        st->vcpu[i] = (struct vm_status_vcpu){i, place[i], 200 + i, "running", 5, 6};
    return 0;
}

static int f_migrate(void *ctx, int v, int node, struct vm_migration_result *res, char *err,
                     size_t n)
{
    (void)ctx;
    if (node == 5) {
        snprintf(err, n, "node 5 does not answer");
        return -EHOSTDOWN;
    }
    *res = (struct vm_migration_result){v, 0, node, 7, 123000, 7748};
    return node != 0; /* node 0: there already */
}

static struct fake fk;
static struct monitor_ops ops = {&fk, f_running, f_stop, f_cont, f_power, f_quit, f_query,
                                 f_migrate};
static struct qmp_session sess;
static struct qmp_stats stats;
static char outbuf[1 << 16];
static size_t outlen;
static int afters[6];

static bool out(void *ctx, const char *line, size_t len)
{
    (void)ctx;
    ck_assert_uint_lt(outlen + len, sizeof outbuf);
    ck_assert_int_eq(line[len - 1], '\n');
    memcpy(outbuf + outlen, line, len);
    outlen += len;
    outbuf[outlen] = 0;
    return true;
}

static void after(void *ctx, enum qmp_after a, json_t *ret)
{
    (void)ctx, (void)ret;
    afters[a]++;
}

static void setup(void)
{
    memset(&fk, 0, sizeof fk);
    fk.running = true;
    memset(&stats, 0, sizeof stats);
    memset(afters, 0, sizeof afters);
    qmp_session_init(&sess, &stats);
    outlen = 0;
    outbuf[0] = 0;
}

static void feed(const char *s)
{
    qmp_session_feed(&sess, s, strlen(s), &ops, out, after, NULL);
}

/* The k-th line sent (0-based), parsed; the caller decrefs. */
static json_t *line(int k)
{
    const char *p = outbuf;
    for (int i = 0; i < k; i++) {
        p = strchr(p, '\n');
        ck_assert_ptr_nonnull(p);
        p++;
    }
    const char *e = strchr(p, '\n');
    ck_assert_ptr_nonnull(e);
    json_t *v = json_loadb(p, (size_t)(e - p), 0, NULL);
    ck_assert_ptr_nonnull(v);
    return v;
}

static int nlines(void)
{
    int n = 0;
    for (const char *p = outbuf; (p = strchr(p, '\n')); p++)
        n++;
    return n;
}

static const char *err_class(json_t *v)
{
    return json_string_value(json_object_get(json_object_get(v, "error"), "class"));
}

static const char *err_desc(json_t *v)
{
    return json_string_value(json_object_get(json_object_get(v, "error"), "desc"));
}

static void negotiate(void)
{
    feed("{\"execute\":\"qmp_capabilities\"}\n");
    outlen = 0;
    outbuf[0] = 0;
}

/* ---- tests ---- */

START_TEST(greeting_is_qmp)
{
    char *g = qmp_greeting();
    json_t *v = json_loads(g, 0, NULL);
    ck_assert(json_is_array(json_object_get(json_object_get(v, "QMP"), "capabilities")));
    ck_assert(json_is_object(json_object_get(json_object_get(v, "QMP"), "version")));
    ck_assert_int_eq(g[strlen(g) - 1], '\n');
    json_decref(v);
    free(g);
}
END_TEST

START_TEST(capabilities_first)
{
    feed("{\"execute\":\"stop\",\"id\":7}\n");
    json_t *v = line(0);
    ck_assert_str_eq(err_class(v), "CommandNotFound");
    ck_assert_int_eq(json_integer_value(json_object_get(v, "id")), 7);
    ck_assert_int_eq(fk.stops, 0); /* never reached the machine */
    json_decref(v);
    feed("{\"execute\":\"qmp_capabilities\",\"id\":\"a\"}");
    v = line(1);
    ck_assert(json_is_object(json_object_get(v, "return")));
    ck_assert_str_eq(json_string_value(json_object_get(v, "id")), "a");
    json_decref(v);
    feed("{\"execute\":\"qmp_capabilities\"}");
    v = line(2);
    ck_assert_str_eq(err_class(v), "CommandNotFound"); /* negotiation is over */
    json_decref(v);
}
END_TEST

START_TEST(stop_cont_and_status)
{
    negotiate();
    feed("{\"execute\":\"stop\",\"id\":{\"x\":[1,2]}}\n{\"execute\":\"query-status\"}\n");
    ck_assert_int_eq(fk.stops, 1);
    ck_assert_int_eq(afters[QMP_AFTER_STOPPED], 1);
    json_t *v = line(0);
    ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(json_object_get(v, "id"), "x"), 1)), 2);
    json_decref(v);
    v = line(1);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(v, "return"), "status")), "paused");
    json_decref(v);
    feed("{\"execute\":\"cont\"}{\"execute\":\"query-status\"}");
    ck_assert_int_eq(afters[QMP_AFTER_RESUMED], 1);
    feed("{\"execute\":\"cont\"}"); /* running already: no second RESUME */
    ck_assert_int_eq(afters[QMP_AFTER_RESUMED], 1);
    v = line(3);
    ck_assert(json_is_true(json_object_get(json_object_get(v, "return"), "running")));
    json_decref(v);
    fk.fail_stop = 1;
    feed("{\"execute\":\"stop\"}");
    v = line(5);
    ck_assert_str_eq(err_class(v), "GenericError");
    ck_assert_ptr_nonnull(strstr(err_desc(v), "node 1 did not pause"));
    ck_assert_int_eq(afters[QMP_AFTER_STOPPED], 1); /* no STOP for a failed stop */
    json_decref(v);
}
END_TEST

START_TEST(quit_and_powerdown)
{
    negotiate();
    feed("{\"execute\":\"system_powerdown\"}{\"execute\":\"quit\"}");
    ck_assert_int_eq(fk.powerdowns, 1);
    ck_assert_int_eq(afters[QMP_AFTER_POWERDOWN], 1);
    ck_assert_int_eq(afters[QMP_AFTER_QUIT], 1);
    ck_assert_int_eq(nlines(), 2);
}
END_TEST

START_TEST(bad_json_resyncs)
{
    negotiate();
    feed("{\"execute\": oops}\n{\"execute\":\"query-status\"}\n");
    json_t *v = line(0);
    ck_assert_str_eq(err_class(v), "GenericError");
    ck_assert_ptr_nonnull(strstr(err_desc(v), "JSON parse error"));
    json_decref(v);
    v = line(1);
    ck_assert(json_is_object(json_object_get(v, "return"))); /* the next line works */
    json_decref(v);
    ck_assert_uint_eq(stats.bad_json, 1);
    feed("[1,2]\n\"x\"\n{\"exec\":\"stop\"}\n{\"execute\":5}\n{\"execute\":\"stop\",\"arguments\":[]}\n");
    for (int i = 2; i < 7; i++) {
        v = line(i);
        ck_assert_str_eq(err_class(v), "GenericError");
        json_decref(v);
    }
    ck_assert_int_eq(fk.stops, 0);
    /* duplicate keys are refused, not silently merged */
    feed("{\"execute\":\"stop\",\"execute\":\"cont\"}\n");
    v = line(7);
    ck_assert_str_eq(err_class(v), "GenericError");
    json_decref(v);
}
END_TEST

/* A name cut inside a multi-byte character in the error text: the
 * command still gets its answer. */
START_TEST(every_command_answered)
{
    negotiate();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "{\"execute\":\"%s\xc3\xa9\",\"id\":1}\n",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    feed(cmd);
    ck_assert_int_eq(nlines(), 1);
    json_t *v = line(0);
    ck_assert_str_eq(err_class(v), "CommandNotFound");
    ck_assert_int_eq(json_integer_value(json_object_get(v, "id")), 1);
    json_decref(v);
}
END_TEST

START_TEST(split_and_joined_values)
{
    negotiate();
    const char *cmd = "{\"execute\":\"query-status\",\"id\":1}";
    for (size_t i = 0; cmd[i]; i++)
        qmp_session_feed(&sess, cmd + i, 1, &ops, out, after, NULL);
    ck_assert_int_eq(nlines(), 1);
    feed("  \r\n\t{\"execute\":\"query-status\"}{\"execute\":\"query-status\"}");
    ck_assert_int_eq(nlines(), 3);
}
END_TEST

START_TEST(too_long_is_refused)
{
    negotiate();
    size_t n = MONITOR_MAX_LINE + 1000;
    char *big = malloc(n + 64);
    strcpy(big, "{\"execute\":\"query-status\",\"id\":\"");
    size_t at = strlen(big);
    memset(big + at, 'a', n - at);
    strcpy(big + n, "\"}\n{\"execute\":\"query-status\"}\n");
    feed(big);
    free(big);
    json_t *v = line(0);
    ck_assert_ptr_nonnull(strstr(err_desc(v), "too long"));
    json_decref(v);
    ck_assert_uint_eq(stats.too_long, 1);
    v = line(nlines() - 1);
    ck_assert(json_is_object(json_object_get(v, "return"))); /* served after the newline */
    json_decref(v);
    ck_assert_uint_le(sess.len, sizeof sess.buf);
}
END_TEST

START_TEST(argument_checks)
{
    negotiate();
    feed("{\"execute\":\"query-dsm\",\"arguments\":{\"top\":\"5\"}}\n");
    json_t *v = line(0);
    ck_assert_str_eq(err_desc(v), "Invalid parameter type for 'top', expected: integer");
    json_decref(v);
    feed("{\"execute\":\"query-dsm\",\"arguments\":{\"top\":65}}\n");
    v = line(1);
    ck_assert_ptr_nonnull(strstr(err_desc(v), "from 0 to 64"));
    json_decref(v);
    feed("{\"execute\":\"stop\",\"arguments\":{\"now\":true}}\n");
    v = line(2);
    ck_assert_str_eq(err_desc(v), "Parameter 'now' is unexpected");
    json_decref(v);
    feed("{\"execute\":\"no-such\"}\n");
    v = line(3);
    ck_assert_str_eq(err_class(v), "CommandNotFound");
    json_decref(v);
    ck_assert_int_eq(fk.queries + fk.stops, 0);
    /* a required argument, on a table entry of the test's own */
    static const struct qmp_arg req[] = {{"cpu-index", QMP_INT, true, 0, 254}, {0}};
    struct qmp_command c = {"x", req, NULL, ""};
    struct qmp_error e;
    ck_assert_int_eq(qmp_check_args(&c, NULL, &e), -1);
    ck_assert_str_eq(e.desc, "Parameter 'cpu-index' is missing");
    json_t *a = json_pack("{s:i}", "cpu-index", 3);
    ck_assert_int_eq(qmp_check_args(&c, a, &e), 0);
    json_decref(a);
}
END_TEST

START_TEST(queries_have_qemu_shape)
{
    negotiate();
    feed("{\"execute\":\"query-cpus-fast\"}\n");
    json_t *v = line(0), *a = json_object_get(v, "return");
    ck_assert_uint_eq(json_array_size(a), 3);
    json_t *c2 = json_array_get(a, 2);
    ck_assert_int_eq(json_integer_value(json_object_get(c2, "cpu-index")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(c2, "thread-id")), 202);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(c2, "props"), "node-id")), 1);
    ck_assert_str_eq(json_string_value(json_object_get(c2, "host")), "host1");
    ck_assert_int_eq(json_integer_value(json_object_get(c2, "pid")), 1001);
    json_decref(v);
    feed("{\"execute\":\"query-dsm\",\"arguments\":{\"top\":4}}\n");
    ck_assert_uint_eq(fk.last_top, 4);
    v = line(1);
    json_t *r = json_object_get(v, "return");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(r, "total"), "read-faults")), 21);
    json_t *n1 = json_array_get(json_object_get(r, "nodes"), 1);
    json_t *h = json_array_get(json_object_get(n1, "hot-pages"), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(h, "gpa")), 0x7c5000);
    json_decref(v);
    feed("{\"execute\":\"query-nodes\"}\n");
    v = line(2);
    json_t *d = json_object_get(json_array_get(json_object_get(v, "return"), 0), "distance");
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(d, 1), "rtt-ns")), 5000);
    json_decref(v);
}
END_TEST

START_TEST(migrate_vcpu)
{
    negotiate();
    feed("{\"execute\":\"migrate-vcpu\",\"arguments\":{\"cpu-index\":1}}\n");
    json_t *v = line(0);
    ck_assert_str_eq(err_desc(v), "Parameter 'node' is missing");
    json_decref(v);
    feed("{\"execute\":\"migrate-vcpu\",\"arguments\":{\"cpu-index\":300,\"node\":1}}\n");
    v = line(1);
    ck_assert_ptr_nonnull(strstr(err_desc(v), "from 0 to 254"));
    json_decref(v);
    feed("{\"execute\":\"migrate-vcpu\",\"arguments\":{\"cpu-index\":1,\"node\":5}}\n");
    v = line(2);
    ck_assert_str_eq(err_desc(v), "node 5 does not answer");
    json_decref(v);
    ck_assert_int_eq(afters[QMP_AFTER_MIGRATED], 0);
    feed("{\"execute\":\"migrate-vcpu\",\"arguments\":{\"cpu-index\":1,\"node\":1}}\n");
    v = line(3);
    json_t *r = json_object_get(v, "return");
    ck_assert_int_eq(json_integer_value(json_object_get(r, "to")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(r, "downtime-ns")), 123000);
    json_decref(v);
    ck_assert_int_eq(afters[QMP_AFTER_MIGRATED], 1);
    feed("{\"execute\":\"migrate-vcpu\",\"arguments\":{\"cpu-index\":1,\"node\":0}}\n");
    ck_assert_int_eq(afters[QMP_AFTER_MIGRATED], 1); /* there already: no event */
}
END_TEST

START_TEST(kv_words)
{
    char err[128];
    char *w[] = {"cpu-index=3", "node=0x1", "force=true", "name=a=b", "neg=-4"};
    json_t *o = qmp_args_from_kv(5, w, err, sizeof err);
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(json_integer_value(json_object_get(o, "cpu-index")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(o, "node")), 1);
    ck_assert(json_is_true(json_object_get(o, "force")));
    ck_assert_str_eq(json_string_value(json_object_get(o, "name")), "a=b");
    ck_assert_int_eq(json_integer_value(json_object_get(o, "neg")), -4);
    json_decref(o);
    char *bad[] = {"novalue"};
    ck_assert_ptr_null(qmp_args_from_kv(1, bad, err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "key=value"));
    char *twice[] = {"a=1", "a=2"};
    ck_assert_ptr_null(qmp_args_from_kv(2, twice, err, sizeof err));
}
END_TEST

START_TEST(event_line)
{
    char *l = qmp_event_line("NODE_LOST", json_pack("{s:i,s:s}", "rank", 1, "reason", "x"));
    json_t *v = json_loads(l, 0, NULL);
    ck_assert_str_eq(json_string_value(json_object_get(v, "event")), "NODE_LOST");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(v, "data"), "rank")), 1);
    ck_assert(json_is_integer(json_object_get(json_object_get(v, "timestamp"), "microseconds")));
    json_decref(v);
    free(l);
}
END_TEST

START_TEST(every_command_listed)
{
    for (const struct qmp_command *c = qmp_commands; c->name; c++) {
        ck_assert_ptr_eq(qmp_find(c->name), c);
        ck_assert_ptr_nonnull(c->run);
        ck_assert_ptr_nonnull(c->args);
    }
    ck_assert_ptr_null(qmp_find("migrate"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("monitor");
    TCase *t = tcase_create("qmp");
    tcase_add_checked_fixture(t, setup, NULL);
    tcase_add_test(t, greeting_is_qmp);
    tcase_add_test(t, capabilities_first);
    tcase_add_test(t, stop_cont_and_status);
    tcase_add_test(t, quit_and_powerdown);
    tcase_add_test(t, bad_json_resyncs);
    tcase_add_test(t, split_and_joined_values);
    tcase_add_test(t, every_command_answered);
    tcase_add_test(t, too_long_is_refused);
    tcase_add_test(t, argument_checks);
    tcase_add_test(t, queries_have_qemu_shape);
    tcase_add_test(t, kv_words);
    tcase_add_test(t, migrate_vcpu);
    tcase_add_test(t, event_line);
    tcase_add_test(t, every_command_listed);
    suite_add_tcase(s, t);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
