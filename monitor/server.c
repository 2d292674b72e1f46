/* The monitor's unix socket: clients, their output queues, events. One
 * epoll fd holds the listening socket and every client, and the node's
 * event loop watches that one fd (monitor.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "clock/clock.h"
#include "monitor/monitor.h"

struct client {
    int fd;              /* -1: free slot */
    struct qmp_session s;
    char *out;           /* queued bytes not yet written */
    size_t out_len, out_cap;
};

struct monitor {
    int lfd, epfd;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    struct monitor_ops ops;
    struct qmp_stats stats;
    uint64_t refused; /* connections beyond MONITOR_MAX_CLIENTS or descriptors */
    bool listening;   /* lfd is in epfd */
    struct client c[MONITOR_MAX_CLIENTS];
};

static int fill_addr(const char *path, struct sockaddr_un *a)
{
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof a->sun_path)
        return -ENAMETOOLONG;
    strcpy(a->sun_path, path);
    return 0;
}

bool monitor_path_live(const char *path)
{
    struct sockaddr_un a;
    if (fill_addr(path, &a) < 0)
        return false;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool live = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return live;
}

static void drop(struct monitor *m, struct client *c)
{
    epoll_ctl(m->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    if (!m->listening) { /* a descriptor is free again (accept_clients) */
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = m};
        m->listening = epoll_ctl(m->epfd, EPOLL_CTL_ADD, m->lfd, &ev) == 0;
    }
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_cap = 0;
}

/* Writes what the socket takes now; EPOLLOUT is watched while some stays. */
static void flush(struct monitor *m, struct client *c)
{
    if (c->fd < 0)
        return;
    while (c->out_len) {
        ssize_t w = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (w <= 0) {
            drop(m, c);
            return;
        }
        memmove(c->out, c->out + w, c->out_len - (size_t)w);
        c->out_len -= (size_t)w;
    }
    struct epoll_event ev = {.events = EPOLLIN | (c->out_len ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(m->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Queues a line; a client whose queue would pass MONITOR_MAX_OUT does not
 * read what it asked for, and is dropped rather than kept without bound. */
static void queue(struct monitor *m, struct client *c, const char *line, size_t len)
{
    if (c->fd < 0)
        return;
    if (c->out_len + len > MONITOR_MAX_OUT) {
        drop(m, c);
        return;
    }
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + len)
            cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p) {
            drop(m, c);
            return;
        }
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, line, len);
    c->out_len += len;
}

struct feed_ctx {
    struct monitor *m;
    struct client *c;
};

/* Each reply goes out as it is made, so a client that reads its replies
 * never nears MONITOR_MAX_OUT however much it pipelines. */
static bool out_line(void *ctx, const char *line, size_t len)
{
    struct feed_ctx *f = ctx;
    queue(f->m, f->c, line, len);
    flush(f->m, f->c);
    return f->c->fd >= 0;
}

/* Right after the command's reply was queued, so every client sees events
 * in the order of the commands that caused them. */
static void after_reply(void *ctx, enum qmp_after what, json_t *ret)
{
    struct monitor *m = ((struct feed_ctx *)ctx)->m;
    switch (what) {
    case QMP_AFTER_STOPPED:
        monitor_event(m, "STOP", NULL);
        break;
    case QMP_AFTER_RESUMED:
        monitor_event(m, "RESUME", NULL);
        break;
    case QMP_AFTER_POWERDOWN:
        monitor_event(m, "POWERDOWN", NULL);
        break;
    case QMP_AFTER_MIGRATED:
        monitor_event(m, "VCPU_MIGRATED", json_deep_copy(ret));
        break;
    case QMP_AFTER_QUIT:
        m->ops.quit(m->ops.ctx);
        break;
    case QMP_AFTER_NONE:
        break;
    }
}

static void accept_clients(struct monitor *m)
{
    for (;;) {
        int fd = accept4(m->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
            /* Out of descriptors: the connection waits in the backlog, and
             * the level-triggered listener would wake the loop at once for
             * ever; it is watched again when a client leaves. */
            m->refused++;
            epoll_ctl(m->epfd, EPOLL_CTL_DEL, m->lfd, NULL);
            m->listening = false;
            return;
        }
        if (fd < 0)
            return;
        struct client *c = NULL;
        for (int i = 0; i < MONITOR_MAX_CLIENTS && !c; i++)
            if (m->c[i].fd < 0)
                c = &m->c[i];
        if (!c) {
            static const char full[] = "{\"error\": {\"class\": \"GenericError\", \"desc\": "
                                       "\"too many monitor clients\"}}\n";
            m->refused++;
            if (send(fd, full, sizeof full - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
                /* it is closed either way */
            }
            close(fd);
            continue;
        }
        c->fd = fd;
        qmp_session_init(&c->s, &m->stats);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(m->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            c->fd = -1;
            continue;
        }
        char *g = qmp_greeting();
        if (g)
            queue(m, c, g, strlen(g));
        free(g);
        flush(m, c);
    }
}

static void read_client(struct monitor *m, struct client *c)
{
    char buf[8192];
    ssize_t n = recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        drop(m, c); /* gone, perhaps mid-command: nothing was half-done */
        return;
    }
    if (n < 0)
        return;
    struct feed_ctx f = {m, c};
    qmp_session_feed(&c->s, buf, (size_t)n, &m->ops, out_line, after_reply, &f);
    if (c->fd >= 0)
        flush(m, c);
}

void monitor_dispatch(struct monitor *m)
{
    struct epoll_event ev[16];
    int n = epoll_wait(m->epfd, ev, 16, 0);
    for (int i = 0; i < n; i++) {
        if (ev[i].data.ptr == m) {
            accept_clients(m);
            continue;
        }
        struct client *c = ev[i].data.ptr;
        if (c->fd < 0)
            continue;
        if (ev[i].events & EPOLLOUT)
            flush(m, c);
        if (c->fd >= 0 && (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
            read_client(m, c);
    }
}

void monitor_event(struct monitor *m, const char *name, json_t *data)
{
    char *l = qmp_event_line(name, data);
    if (!l)
        return;
    size_t len = strlen(l);
    for (int i = 0; i < MONITOR_MAX_CLIENTS; i++) {
        struct client *c = &m->c[i];
        if (c->fd >= 0 && c->s.negotiated) {
            queue(m, c, l, len);
            if (c->fd >= 0)
                flush(m, c);
        }
    }
    free(l);
}

int monitor_fd(const struct monitor *m)
{
    return m->epfd;
}

const struct qmp_stats *monitor_stats(const struct monitor *m)
{
    return &m->stats;
}

/* A path that exists: a live monitor refuses, a stale socket is removed,
 * anything else is left alone and refused. */
static int claim_path(const char *path, char *err, size_t n)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return 0;
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, n, "--monitor %s: the path exists and is not a socket", path);
        return -EEXIST;
    }
    if (monitor_path_live(path)) {
        snprintf(err, n, "--monitor %s: another monitor is live there", path);
        return -EADDRINUSE;
    }
    unlink(path);
    return 0;
}

static int listen_on(struct monitor *m, const char *path, char *err, size_t n)
{
    struct sockaddr_un a;
    if (fill_addr(path, &a) < 0) {
        snprintf(err, n, "--monitor %s: path too long for a unix socket", path);
        return -ENAMETOOLONG;
    }
    int r = claim_path(path, err, n);
    if (r < 0)
        return r;
    m->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (m->lfd < 0)
        return -errno;
    /* 0600 from the start: no moment where others could connect. umask is
     * the process's, but no other thread of it is creating files now:
     * vm_run attaches the monitor before the vCPU threads start. */
    mode_t old = umask(0177);
    r = bind(m->lfd, (struct sockaddr *)&a, sizeof a);
    int e = errno;
    umask(old);
    if (r < 0) {
        snprintf(err, n, "--monitor %s: %s", path, strerror(e));
        return -e;
    }
    snprintf(m->path, sizeof m->path, "%s", path); /* from here, ours to remove */
    if (listen(m->lfd, MONITOR_MAX_CLIENTS) < 0) {
        e = errno;
        snprintf(err, n, "--monitor %s: %s", path, strerror(e));
        return -e;
    }
    return 0;
}

int monitor_open(const char *path, const struct monitor_ops *ops, struct monitor **out,
                 char *err, size_t errlen)
{
    struct monitor *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->ops = *ops;
    m->lfd = -1;
    for (int i = 0; i < MONITOR_MAX_CLIENTS; i++)
        m->c[i].fd = -1;
    m->epfd = epoll_create1(EPOLL_CLOEXEC);
    int r = m->epfd < 0 ? -errno : listen_on(m, path, err, errlen);
    if (r == 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = m};
        if (epoll_ctl(m->epfd, EPOLL_CTL_ADD, m->lfd, &ev) < 0)
            r = -errno;
        m->listening = r == 0;
    }
    if (r < 0) {
        if (!err[0])
            snprintf(err, errlen, "--monitor %s: %s", path, strerror(-r));
        if (m->lfd >= 0) {
            close(m->lfd);
            if (m->path[0])
                unlink(m->path);
        }
        if (m->epfd >= 0)
            close(m->epfd);
        free(m);
        return r;
    }
    *out = m;
    return 0;
}

void monitor_close(struct monitor *m)
{
    if (!m)
        return;
    /* Up to 200 ms for the last replies and SHUTDOWN to reach clients. */
    uint64_t t0 = clock_now_ns();
    for (;;) {
        bool pending = false;
        for (int i = 0; i < MONITOR_MAX_CLIENTS; i++)
            if (m->c[i].fd >= 0 && m->c[i].out_len) {
                flush(m, &m->c[i]);
                pending |= m->c[i].fd >= 0 && m->c[i].out_len;
            }
        if (!pending || clock_now_ns() - t0 > 200000000ULL)
            break;
        usleep(1000);
    }
    for (int i = 0; i < MONITOR_MAX_CLIENTS; i++)
        if (m->c[i].fd >= 0)
            drop(m, &m->c[i]);
    close(m->lfd);
    close(m->epfd);
    unlink(m->path);
    free(m);
}
