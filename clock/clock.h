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

#endif
