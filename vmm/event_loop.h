/* event_loop: one epoll loop per node, that file descriptors register
 * with: the stop eventfd, signals (signalfd), the console, timers
 * (timerfd), and next the monitor's socket. A handler runs on the loop's
 * thread, one at a time, so handlers share state without locks.
 *
 * The DSM's own loop (cluster.c's progress thread) is not in it: it spins
 * on the fabric while pages are in flight (a wake-up per hop cost more
 * than the hop, see dsm/host.h: dsm_host_pace) and must never wait behind
 * a slow handler here.
 *
 * Invariants: at most EVENT_LOOP_MAX descriptors at once; a handler may
 * remove any descriptor, its own included, and add new ones; removing a
 * descriptor closes nothing (its owner closes it); timers and signal sets
 * the loop creates are the loop's and close with it.
 */
#ifndef AMALGAM_VMM_EVENT_LOOP_H
#define AMALGAM_VMM_EVENT_LOOP_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#define EVENT_LOOP_MAX 32

/* events: what epoll reported (EPOLLIN, EPOLLHUP, ...). */
typedef void (*event_fn)(void *ctx, int fd, uint32_t events);
typedef void (*signal_fn)(void *ctx, int signo);

struct event_loop {
    int epfd;
    struct {
        int fd;       /* -1: free slot */
        bool owned;   /* a timerfd or signalfd the loop made */
        event_fn fn;
        signal_fn sig;
        void *ctx;
    } h[EVENT_LOOP_MAX];
};

int event_loop_init(struct event_loop *l);
void event_loop_free(struct event_loop *l);
/* 0, -EEXIST (fd already in), -ENOSPC (full) or epoll's errno. */
int event_loop_add(struct event_loop *l, int fd, uint32_t events, event_fn fn, void *ctx);
int event_loop_remove(struct event_loop *l, int fd);
/* fn every period_ns (first after period_ns); returns the timer's fd. */
int event_loop_add_timer(struct event_loop *l, uint64_t period_ns, event_fn fn, void *ctx);
/* The signals in set are blocked in the calling thread and delivered to
 * fn through a signalfd; returns its fd. */
int event_loop_add_signals(struct event_loop *l, const sigset_t *set, signal_fn fn, void *ctx);
/* Waits up to timeout_ms (-1: for ever) and runs the handlers of what is
 * ready; returns how many ran, or a negative errno. */
int event_loop_run_once(struct event_loop *l, int timeout_ms);

#endif
