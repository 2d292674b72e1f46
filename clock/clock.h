/* clock: the one monotonic clock every layer measures with.
 *
 * CLOCK_MONOTONIC in nanoseconds: it never steps back and keeps counting
 * while a process is descheduled, which is what time-outs, hold windows,
 * heartbeats and benchmarks need. Header-only: it is on the DSM's fault
 * path, where a call into another object file is measurable.
 */
#ifndef AMALGAM_CLOCK_CLOCK_H
#define AMALGAM_CLOCK_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t clock_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* ns from now on CLOCK_REALTIME, the clock pthread_cond_timedwait's
 * deadline is read on (a condition variable's default). */
static inline struct timespec clock_realtime_after(uint64_t ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t n = (uint64_t)ts.tv_nsec + ns;
    ts.tv_sec += (time_t)(n / 1000000000ULL);
    ts.tv_nsec = (long)(n % 1000000000ULL);
    return ts;
}

#endif
