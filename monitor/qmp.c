/* One client's QMP session: framing, capabilities negotiation, dispatch.
 * Pure: bytes in, lines out through a callback (see monitor.h). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "monitor/monitor.h"

#define QMP_VERSION_MAJOR 0
#define QMP_VERSION_MINOR 1

void qmp_session_init(struct qmp_session *s, struct qmp_stats *stats)
{
    s->negotiated = false;
    s->discarding = false;
    s->gone = false;
    s->len = 0;
    s->stats = stats;
}

/* One compact JSON line, "\n" included; NULL if out of memory. */
static char *line_of(json_t *v)
{
    char *body = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!body)
        return NULL;
    size_t n = strlen(body);
    char *l = realloc(body, n + 2);
    if (!l) {
        free(body);
        return NULL;
    }
    l[n] = '\n';
    l[n + 1] = 0;
    return l;
}

static void send_json(struct qmp_session *s, json_t *v, qmp_out_fn out, void *ctx)
{
    char *l = line_of(v);
    if (l && !out(ctx, l, strlen(l)))
        s->gone = true;
    free(l);
    json_decref(v);
}

/* Descriptions quote what a client sent, cut to a length: cut inside a
 * multi-byte character they are not UTF-8, which jansson refuses (and the
 * command would get no answer). Control and non-ASCII bytes become '?'. */
static void ascii_only(char *d)
{
    for (; *d; d++)
        if ((unsigned char)*d < 0x20 || (unsigned char)*d >= 0x7f)
            *d = '?';
}

char *qmp_greeting(void)
{
    json_t *g = json_pack("{s:{s:{s:{s:i,s:i,s:i},s:s},s:[]}}", "QMP", "version", "qemu",
                          "major", QMP_VERSION_MAJOR, "minor", QMP_VERSION_MINOR, "micro", 0,
                          "package", "amalgam", "capabilities");
    char *l = g ? line_of(g) : NULL;
    json_decref(g);
    return l;
}

char *qmp_event_line(const char *name, json_t *data)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    json_t *e = json_pack("{s:s,s:{s:I,s:I}}", "event", name, "timestamp", "seconds",
                          (json_int_t)ts.tv_sec, "microseconds", (json_int_t)(ts.tv_nsec / 1000));
    if (!e) {
        json_decref(data);
        return NULL;
    }
    if (data)
        json_object_set_new(e, "data", data);
    char *l = line_of(e);
    json_decref(e);
    return l;
}

#define COUNT(s, field)            \
    do {                           \
        if ((s)->stats)            \
            (s)->stats->field++;   \
    } while (0)

static void send_error(struct qmp_session *s, json_t *id, const char *cls, const char *desc,
                       qmp_out_fn out, void *ctx)
{
    char d[256];
    COUNT(s, errors);
    snprintf(d, sizeof d, "%s", desc);
    ascii_only(d);
    json_t *r = json_pack("{s:{s:s,s:s}}", "error", "class", cls, "desc", d);
    if (r && id)
        json_object_set(r, "id", id);
    if (r)
        send_json(s, r, out, ctx);
}

/* The members a request may have. */
static int check_request(json_t *req, const char **name, json_t **args, struct qmp_error *e)
{
    e->cls = "GenericError";
    if (!json_is_object(req)) {
        snprintf(e->desc, sizeof e->desc, "QMP input must be a JSON object");
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach(req, key, v) {
        if (strcmp(key, "execute") && strcmp(key, "arguments") && strcmp(key, "id")) {
            snprintf(e->desc, sizeof e->desc, "QMP input member '%.64s' is unexpected", key);
            return -1;
        }
    }
    json_t *ex = json_object_get(req, "execute");
    if (!ex) {
        snprintf(e->desc, sizeof e->desc, "QMP input lacks member 'execute'");
        return -1;
    }
    if (!json_is_string(ex)) {
        snprintf(e->desc, sizeof e->desc, "QMP input member 'execute' must be a string");
        return -1;
    }
    *args = json_object_get(req, "arguments");
    if (*args && !json_is_object(*args)) {
        snprintf(e->desc, sizeof e->desc, "QMP input member 'arguments' must be an object");
        return -1;
    }
    *name = json_string_value(ex);
    return 0;
}

static enum qmp_after after_of(const char *name)
{
    if (!strcmp(name, "quit"))
        return QMP_AFTER_QUIT;
    if (!strcmp(name, "stop"))
        return QMP_AFTER_STOPPED;
    if (!strcmp(name, "cont"))
        return QMP_AFTER_RESUMED;
    if (!strcmp(name, "system_powerdown"))
        return QMP_AFTER_POWERDOWN;
    if (!strcmp(name, "migrate-vcpu"))
        return QMP_AFTER_MIGRATED;
    return QMP_AFTER_NONE;
}

static void execute(struct qmp_session *s, json_t *req, const struct monitor_ops *ops,
                    qmp_out_fn out, qmp_after_fn after, void *ctx)
{
    const char *name;
    json_t *args = NULL, *id = json_object_get(req, "id");
    struct qmp_error e = {"GenericError", ""};
    COUNT(s, commands);
    if (check_request(req, &name, &args, &e) < 0) {
        send_error(s, json_is_object(req) ? id : NULL, e.cls, e.desc, out, ctx);
        return;
    }
    bool caps = !strcmp(name, "qmp_capabilities");
    if (!s->negotiated && !caps) {
        send_error(s, id, "CommandNotFound",
                   "Expecting capabilities negotiation with 'qmp_capabilities'", out, ctx);
        return;
    }
    if (s->negotiated && caps) {
        send_error(s, id, "CommandNotFound",
                   "Capabilities negotiation is already complete, command ignored", out, ctx);
        return;
    }
    const struct qmp_command *c = qmp_find(name);
    if (!c) {
        COUNT(s, unknown);
        snprintf(e.desc, sizeof e.desc, "The command %.64s has not been found", name);
        send_error(s, id, "CommandNotFound", e.desc, out, ctx);
        return;
    }
    json_t *ret = NULL;
    int rr = qmp_check_args(c, args, &e);
    if (rr == 0)
        rr = c->run(ops, args, &ret, &e);
    if (rr < 0) {
        send_error(s, id, e.cls, e.desc, out, ctx);
        return;
    }
    if (caps)
        s->negotiated = true;
    json_t *r = json_object();
    if (!ret)
        ret = json_object();
    json_object_set(r, "return", ret);
    if (id)
        json_object_set(r, "id", id);
    send_json(s, r, out, ctx);
    enum qmp_after a = after_of(name);
    if (rr > 0 && a && after && !s->gone) /* a run-state change, a move, quit */
        after(ctx, a, ret);
    json_decref(ret);
}

static bool blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n')
            return false;
    return true;
}

/* Drops input up to and including the first newline; true if one came. */
static bool resync(struct qmp_session *s)
{
    char *nl = memchr(s->buf, '\n', s->len);
    if (!nl) {
        s->len = 0;
        return false;
    }
    size_t keep = s->len - (size_t)(nl + 1 - s->buf);
    memmove(s->buf, nl + 1, keep);
    s->len = keep;
    return true;
}

/* Parses and answers every complete value at the front of the buffer. */
static void drain(struct qmp_session *s, const struct monitor_ops *ops, qmp_out_fn out,
                  qmp_after_fn after, void *ctx)
{
    while (s->len && !s->gone) {
        if (s->discarding) {
            if (!resync(s))
                return;
            s->discarding = false;
            continue;
        }
        if (blank(s->buf, s->len)) {
            s->len = 0;
            return;
        }
        json_error_t err;
        json_t *v = json_loadb(s->buf, s->len,
                               JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
                               &err);
        if (!v) {
            if (json_error_code(&err) == json_error_premature_end_of_input)
                return; /* wait for the rest */
            COUNT(s, bad_json);
            char desc[256];
            snprintf(desc, sizeof desc, "JSON parse error, %.160s", err.text);
            send_error(s, NULL, "GenericError", desc, out, ctx);
            s->discarding = true;
            continue;
        }
        size_t used = (size_t)err.position;
        if (used > s->len)
            used = s->len;
        memmove(s->buf, s->buf + used, s->len - used);
        s->len -= used;
        execute(s, v, ops, out, after, ctx);
        json_decref(v);
    }
}

void qmp_session_feed(struct qmp_session *s, const char *data, size_t n,
                      const struct monitor_ops *ops, qmp_out_fn out, qmp_after_fn after,
                      void *ctx)
{
    while (n && !s->gone) {
        size_t room = sizeof s->buf - s->len;
        size_t take = n < room ? n : room;
        memcpy(s->buf + s->len, data, take);
        s->len += take;
        data += take;
        n -= take;
        drain(s, ops, out, after, ctx);
        if (s->len == sizeof s->buf) {
            /* A whole buffer and still no complete value. */
            COUNT(s, too_long);
            send_error(s, NULL, "GenericError", "JSON input too long (more than 65536 bytes "
                       "in one value)", out, ctx);
            s->discarding = true;
            if (resync(s)) {
                s->discarding = false;
                drain(s, ops, out, after, ctx);
            }
        }
    }
}
