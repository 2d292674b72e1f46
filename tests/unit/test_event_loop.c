/* Unit tests for the node's event loop (vmm/event_loop.c): descriptors,
 * timers and signals reach their handlers; a handler may remove itself;
 * duplicates and a full table are refused. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "clock/clock.h"
#include "tests/unit/unit.h"
#include "vmm/event_loop.h"

struct seen {
    struct event_loop *l;
    int reads, ticks, signo, removed;
};

static void on_read(void *ctx, int fd, uint32_t ev)
{
    struct seen *s = ctx;
    char c;
    (void)ev;
    if (read(fd, &c, 1) == 1)
        s->reads++;
}

static void on_tick(void *ctx, int fd, uint32_t ev)
{
    (void)fd, (void)ev;
    ((struct seen *)ctx)->ticks++;
}

static void on_sig(void *ctx, int signo)
{
    ((struct seen *)ctx)->signo = signo;
}

static void remove_self(void *ctx, int fd, uint32_t ev)
{
    struct seen *s = ctx;
    (void)ev;
    s->removed += event_loop_remove(s->l, fd) == 0;
}

START_TEST(descriptors_timers_and_signals)
{
    struct event_loop l;
    struct seen s = {.l = &l};
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(event_loop_init(&l), 0);
    ck_assert_int_eq(event_loop_add(&l, p[0], EPOLLIN, on_read, &s), 0);
    ck_assert_int_eq(event_loop_add(&l, p[0], EPOLLIN, on_read, &s), -EEXIST);
    ck_assert_int_eq(event_loop_run_once(&l, 0), 0); /* nothing yet */
    ck_assert_int_eq(write(p[1], "ab", 2), 2);
    ck_assert_int_eq(event_loop_run_once(&l, 1000), 1);
    ck_assert_int_eq(event_loop_run_once(&l, 1000), 1);
    ck_assert_int_eq(s.reads, 2);

    ck_assert_int_ge(event_loop_add_timer(&l, 10000000, on_tick, &s), 0);
    uint64_t t0 = clock_now_ns();
    while (s.ticks < 3 && clock_now_ns() - t0 < 2000000000ULL)
        event_loop_run_once(&l, 100);
    ck_assert_int_ge(s.ticks, 3);
    ck_assert_uint_ge(clock_now_ns() - t0, 25000000ULL); /* not faster than 10 ms each */

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    ck_assert_int_ge(event_loop_add_signals(&l, &set, on_sig, &s), 0);
    raise(SIGUSR2); /* blocked: waits in the signalfd */
    t0 = clock_now_ns();
    while (!s.signo && clock_now_ns() - t0 < 2000000000ULL)
        event_loop_run_once(&l, 100);
    ck_assert_int_eq(s.signo, SIGUSR2);
    event_loop_free(&l);
    close(p[0]);
    close(p[1]);
}
END_TEST

START_TEST(a_handler_removes_itself_and_the_table_fills)
{
    struct event_loop l;
    struct seen s = {.l = &l};
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(event_loop_init(&l), 0);
    ck_assert_int_eq(event_loop_add(&l, p[0], EPOLLIN, remove_self, &s), 0);
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    ck_assert_int_eq(event_loop_run_once(&l, 1000), 1);
    ck_assert_int_eq(event_loop_run_once(&l, 0), 0); /* gone, though still readable */
    ck_assert_int_eq(s.removed, 1);
    ck_assert_int_eq(event_loop_remove(&l, p[0]), -ENOENT);
    int fds[EVENT_LOOP_MAX + 1][2];
    int added = 0, r = 0;
    for (int i = 0; i <= EVENT_LOOP_MAX && r == 0; i++) {
        ck_assert_int_eq(pipe(fds[i]), 0);
        r = event_loop_add(&l, fds[i][0], EPOLLIN, on_read, &s);
        added += r == 0;
    }
    ck_assert_int_eq(r, -ENOSPC);
    ck_assert_int_eq(added, EVENT_LOOP_MAX);
    event_loop_free(&l);
    for (int i = 0; i <= EVENT_LOOP_MAX; i++)
        close(fds[i][0]), close(fds[i][1]);
    close(p[0]);
    close(p[1]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("event_loop");
    TCase *t = tcase_create("event_loop");
    tcase_add_test(t, descriptors_timers_and_signals);
    tcase_add_test(t, a_handler_removes_itself_and_the_table_fills);
    suite_add_tcase(s, t);
    return run_suite(s);
}
