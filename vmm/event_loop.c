/* The node's event loop (see event_loop.h). */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "vmm/event_loop.h"

int event_loop_init(struct event_loop *l)
{
    memset(l, 0, sizeof *l);
    for (int i = 0; i < EVENT_LOOP_MAX; i++)
        l->h[i].fd = -1;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    return l->epfd < 0 ? -errno : 0;
}

void event_loop_free(struct event_loop *l)
{
    for (int i = 0; i < EVENT_LOOP_MAX; i++)
        if (l->h[i].fd >= 0 && l->h[i].owned)
            close(l->h[i].fd);
    if (l->epfd >= 0)
        close(l->epfd);
    l->epfd = -1;
}

static int slot_of(const struct event_loop *l, int fd)
{
    for (int i = 0; i < EVENT_LOOP_MAX; i++)
        if (l->h[i].fd == fd)
            return i;
    return -1;
}

static int add(struct event_loop *l, int fd, uint32_t events, bool owned, event_fn fn,
               signal_fn sig, void *ctx)
{
    if (fd < 0)
        return -EBADF;
    if (slot_of(l, fd) >= 0)
        return -EEXIST;
    int i = slot_of(l, -1);
    if (i < 0)
        return -ENOSPC;
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)i};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return -errno;
    l->h[i].fd = fd;
    l->h[i].owned = owned;
    l->h[i].fn = fn;
    l->h[i].sig = sig;
    l->h[i].ctx = ctx;
    return fd;
}

int event_loop_add(struct event_loop *l, int fd, uint32_t events, event_fn fn, void *ctx)
{
    int r = add(l, fd, events, false, fn, NULL, ctx);
    return r < 0 ? r : 0;
}

int event_loop_remove(struct event_loop *l, int fd)
{
    int i = slot_of(l, fd);
    if (i < 0 || fd < 0)
        return -ENOENT;
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
    if (l->h[i].owned)
        close(fd);
    l->h[i].fd = -1;
    return 0;
}

static void timer_fired(void *ctx, int fd, uint32_t events)
{
    (void)ctx, (void)events;
    uint64_t n;
    if (read(fd, &n, sizeof n) < 0) {
        /* spurious: nothing expired */
    }
}

int event_loop_add_timer(struct event_loop *l, uint64_t period_ns, event_fn fn, void *ctx)
{
    if (!period_ns)
        return -EINVAL;
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct timespec p = {(time_t)(period_ns / 1000000000ULL), (long)(period_ns % 1000000000ULL)};
    struct itimerspec its = {.it_interval = p, .it_value = p};
    int r = timerfd_settime(fd, 0, &its, NULL) < 0 ? -errno : 0;
    r = r ?: add(l, fd, EPOLLIN, true, fn, NULL, ctx);
    if (r < 0)
        close(fd);
    return r;
}

int event_loop_add_signals(struct event_loop *l, const sigset_t *set, signal_fn fn, void *ctx)
{
    pthread_sigmask(SIG_BLOCK, set, NULL);
    int fd = signalfd(-1, set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = add(l, fd, EPOLLIN, true, NULL, fn, ctx);
    if (r < 0)
        close(fd);
    return r;
}

static void run(struct event_loop *l, int i, uint32_t events)
{
    int fd = l->h[i].fd;
    if (l->h[i].sig) {
        struct signalfd_siginfo si;
        while (l->h[i].fd == fd && read(fd, &si, sizeof si) == sizeof si)
            l->h[i].sig(l->h[i].ctx, (int)si.ssi_signo);
        return;
    }
    if (l->h[i].owned) /* a timer: consume its count first */
        timer_fired(NULL, fd, events);
    if (l->h[i].fn)
        l->h[i].fn(l->h[i].ctx, fd, events);
}

int event_loop_run_once(struct event_loop *l, int timeout_ms)
{
    struct epoll_event ev[EVENT_LOOP_MAX];
    int n = epoll_wait(l->epfd, ev, EVENT_LOOP_MAX, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    int ran = 0;
    for (int k = 0; k < n; k++) {
        uint32_t i = ev[k].data.u32;
        if (i >= EVENT_LOOP_MAX || l->h[i].fd < 0)
            continue; /* removed by an earlier handler in this round */
        run(l, (int)i, ev[k].events);
        ran++;
    }
    return ran;
}
