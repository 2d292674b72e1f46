/* monitor: the running machine's control socket, speaking QEMU's QMP
 * (JSON over a unix socket), so that QMP scripts and clients work against
 * amalgam.
 *
 * Three layers, the first two pure (no sockets, no machine):
 * - a session (qmp.c): one client's bytes in, JSON lines out. The greeting,
 *   `qmp_capabilities` before any other command, `{"execute", "arguments",
 *   "id"}` answered by `{"return"}` or `{"error": {"class", "desc"}}` with
 *   the same id. Input is a stream of JSON values (newlines optional);
 *   a malformed or over-long value gets an error and the input is resynced
 *   at the next newline.
 * - the command table (commands.c): each command's arguments with their
 *   types, checked before the command runs, and the command itself, which
 *   reaches the machine only through struct monitor_ops.
 * - the server (server.c): the socket (mode 0600), up to MONITOR_MAX_CLIENTS
 *   clients at once, events to every negotiated client; all of it on one
 *   epoll fd that the node's event loop watches, so a client never runs on
 *   a vCPU's or the DSM's thread and never holds a lock they need.
 *
 * Invariants: every reply and event is one line ending in "\n"; nothing a
 * client sends can make the monitor read past its buffer, allocate more
 * than MONITOR_MAX_LINE per client for input or MONITOR_MAX_OUT for
 * output (a client that does not read its replies is dropped), or reach
 * the machine before its arguments were checked. Every refusal is counted.
 */
#ifndef AMALGAM_MONITOR_MONITOR_H
#define AMALGAM_MONITOR_MONITOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "vmm/vmm.h"

#define MONITOR_MAX_LINE (64 * 1024) /* one command, in bytes */
#define MONITOR_MAX_OUT (4 * 1024 * 1024)
#define MONITOR_MAX_CLIENTS 64
#define MONITOR_MAX_TOP 64 /* query-dsm top=N */

/* The machine, as the commands see it. Each returns 0 or a negative errno
 * with one line for the user in err; stop and cont return 1 when they
 * changed the run state (0: it was so already). stop returns only once
 * every vCPU on every node has stopped; query fills st for the whole
 * machine. */
struct monitor_ops {
    void *ctx;
    bool (*running)(void *ctx);
    int (*stop)(void *ctx, char *err, size_t n);
    int (*cont)(void *ctx, char *err, size_t n);
    int (*powerdown)(void *ctx, char *err, size_t n);
    void (*quit)(void *ctx);
    int (*query)(void *ctx, unsigned top, struct vm_status *st, char *err, size_t n);
    /* Moves a vCPU live: 1 moved, 0 it was there already, or -errno. */
    int (*migrate)(void *ctx, int vcpu, int node, struct vm_migration_result *res, char *err,
                   size_t n);
};

/* ---- the command table (commands.c) ---- */

enum qmp_type { QMP_INT, QMP_STR, QMP_BOOL, QMP_ARRAY };

struct qmp_arg {
    const char *name;
    enum qmp_type type;
    bool required;
    int64_t min, max; /* QMP_INT only */
};

/* A command's failure: a QMP error class and a description. */
struct qmp_error {
    const char *cls;
    char desc[256];
};

struct qmp_command {
    const char *name;
    const struct qmp_arg *args; /* ends with a NULL name */
    /* 0 with *ret set (a new reference), 1 the same when the command
     * changed the machine's run state (its event follows), or -1 with e
     * filled in. */
    int (*run)(const struct monitor_ops *ops, json_t *args, json_t **ret, struct qmp_error *e);
    const char *help;
};

extern const struct qmp_command qmp_commands[];
const struct qmp_command *qmp_find(const char *name);
/* Checks args (an object, or NULL for none) against c's table: unknown
 * names, missing required ones, wrong types, integers out of range.
 * 0, or -1 with e filled in the way QEMU words it. */
int qmp_check_args(const struct qmp_command *c, json_t *args, struct qmp_error *e);

/* `amalgam ctl`'s key=value words as a QMP arguments object: a value is
 * an integer if it reads as one, a boolean if true/false, else a string.
 * NULL with err filled in on a word without '=' or a key given twice. */
json_t *qmp_args_from_kv(int n, char **kv, char *err, size_t errlen);

/* ---- one client's session (qmp.c) ---- */

struct qmp_stats {
    uint64_t commands, errors, bad_json, too_long, unknown;
};

/* What a session asks of whoever owns it, after a reply went out. */
enum qmp_after {
    QMP_AFTER_NONE = 0, QMP_AFTER_QUIT, QMP_AFTER_STOPPED, QMP_AFTER_RESUMED, QMP_AFTER_POWERDOWN,
    QMP_AFTER_MIGRATED
};

struct qmp_session {
    bool negotiated;
    bool discarding; /* after a bad value: dropping input up to a newline */
    bool gone;       /* the output side refused a line: the client is closed */
    size_t len;
    char buf[MONITOR_MAX_LINE];
    struct qmp_stats *stats; /* shared by the server's sessions; may be NULL */
};

/* Called with each line to send ("\n" included); false if the client is
 * gone, and then the session reads nothing more of what it was fed. */
typedef bool (*qmp_out_fn)(void *ctx, const char *line, size_t len);
/* ret: the command's return value (borrowed), for an event's data. */
typedef void (*qmp_after_fn)(void *ctx, enum qmp_after what, json_t *ret);

void qmp_session_init(struct qmp_session *s, struct qmp_stats *stats);
/* The greeting line, malloc'd ("\n" included). */
char *qmp_greeting(void);
/* Feeds bytes from the client; every complete value is answered through
 * out (and, for quit, stop and cont, after). */
void qmp_session_feed(struct qmp_session *s, const char *data, size_t n,
                      const struct monitor_ops *ops, qmp_out_fn out, qmp_after_fn after,
                      void *ctx);
/* An event line, malloc'd: {"event", "data", "timestamp"}. Takes data's
 * reference (may be NULL). */
char *qmp_event_line(const char *name, json_t *data);

/* ---- the server (server.c) ---- */

struct monitor;

/* Listens on path (mode 0600). -EADDRINUSE if a live monitor already
 * answers there; a stale socket file is replaced; anything else at path
 * is refused (-EEXIST). */
int monitor_open(const char *path, const struct monitor_ops *ops, struct monitor **out,
                 char *err, size_t errlen);
/* The fd to watch for input (an epoll fd); then call monitor_dispatch. */
int monitor_fd(const struct monitor *m);
void monitor_dispatch(struct monitor *m);
/* Sends an event to every client past capabilities negotiation. */
void monitor_event(struct monitor *m, const char *name, json_t *data);
const struct qmp_stats *monitor_stats(const struct monitor *m);
/* Flushes what is queued (briefly), closes every client, removes the socket. */
void monitor_close(struct monitor *m);

/* Attaches a monitor at path to the machine vm runs (node 0): the
 * vm_config hook that vm_run calls with its event loop (control.c). */
struct monitor_attach {
    const char *path;
    struct monitor *m;
    struct vm *vm;
};
int monitor_attach_hook(void *ctx, struct vm *vm, struct event_loop *loop, char *err, size_t n);
void monitor_event_hook(void *ctx, const struct vm_event *e);
void monitor_detach_hook(void *ctx);

/* Is there a live monitor at path? (amalgam run checks before starting.) */
bool monitor_path_live(const char *path);

#endif
