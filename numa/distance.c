/* Distances from latencies (see numa.h). */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "clock/clock.h"
#include "numa/numa.h"

int numa_distance_from_latency(double local_ns, double remote_ns)
{
    if (!isfinite(local_ns) || !isfinite(remote_ns) || local_ns <= 0 || remote_ns <= 0)
        return -EINVAL;
    double d = round(10.0 * remote_ns / local_ns);
    return d < 11 ? 11 : d > 254 ? 254 : (int)d;
}

#define CHASE_BYTES (64u << 20) /* well beyond any last-level cache */
#define CHASE_STEPS 2000000

/* One random cycle through every slot (Sattolo's shuffle), so that each
 * load depends on the last and the prefetchers cannot guess the next. */
static void make_cycle(size_t *next, size_t n)
{
    for (size_t i = 0; i < n; i++)
        next[i] = i;
    unsigned seed = 12345;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)rand_r(&seed) % i;
        size_t t = next[i];
        next[i] = next[j];
        next[j] = t;
    }
}

int numa_measure_local_ns(double *ns)
{
    /* One slot per cache line, so that every step is a miss. */
    const size_t stride = 64 / sizeof(size_t), n = CHASE_BYTES / 64;
    size_t *mem = malloc(CHASE_BYTES), *cyc = malloc(n * sizeof *cyc);
    if (!mem || !cyc) {
        free(mem);
        free(cyc);
        return -ENOMEM;
    }
    make_cycle(cyc, n);
    for (size_t i = 0; i < n; i++)
        mem[i * stride] = cyc[i] * stride;
    free(cyc);
    size_t q = 0;
    uint64_t t0 = clock_now_ns();
    for (int i = 0; i < CHASE_STEPS; i++)
        q = mem[q];
    uint64_t t1 = clock_now_ns();
    /* Storing the end of the chain keeps the compiler from dropping it. */
    volatile size_t sink = q;
    (void)sink;
    *ns = (double)(t1 - t0) / CHASE_STEPS;
    free(mem);
    return 0;
}
