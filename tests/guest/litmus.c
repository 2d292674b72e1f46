/* Memory-model tests across vCPUs (and so across nodes): false sharing and
 * the litmus tests mp, sb (with mfence), lb, iriw and 2+2w. Iteration i
 * uses its own locations X[i] and Y[i], so millions of iterations run with
 * no barrier between them (as litmus7 does); X and Y lie in different
 * halves of RAM, which on a multi-node machine have different homes. The
 * outcome histogram is printed; an outcome that x86-TSO forbids fails the
 * test. Roles go to CPUs 0..k-1 (round-robin placement puts them on
 * different nodes); any other CPUs only wait at the barriers. */
#include "guest.h"

#define MAX_ROLES 4
#define CB() __asm__ volatile("" ::: "memory")

static uint64_t iters;
static volatile uint8_t *X, *Y, *R[MAX_ROLES];
static volatile uint64_t *words, *progress;
#define CHUNK 256

static uint64_t arg_u64(const char *key, uint64_t dflt)
{
    static char buf[32];
    const char *s = cmdline_get(key, buf, sizeof buf);
    uint64_t v = 0;
    if (!s)
        return dflt;
    for (; *s >= '0' && *s <= '9'; s++)
        v = v * 10 + (uint64_t)(*s - '0');
    return v;
}

/* CPL0 set-up (before user mode): where the arrays live. */
static void place(uint64_t dflt)
{
    const uint64_t two_mib = 2ULL << 20;
    uint64_t lo = (guest_image_end + two_mib - 1) & ~(two_mib - 1);
    uint64_t top = ram_top < 0xC0000000ULL ? ram_top : 0xC0000000ULL;
    uint64_t half = (top / 2) & ~(two_mib - 1);
    iters = arg_u64("iters", dflt);
    uint64_t need = iters * 3;
    if (half < lo || top - half < need || half - lo < need)
        fail("not enough memory for %lu iterations", iters);
    X = (volatile uint8_t *)lo;
    R[0] = X + iters;
    R[1] = R[0] + iters;
    Y = (volatile uint8_t *)half;
    R[2] = Y + iters;
    R[3] = R[2] + iters;
    words = (volatile uint64_t *)(half - 4096);
    progress = (volatile uint64_t *)(half - 8192);
}

static void litmus_setup(void) { place(2000000); }
static void sharing_setup(void) { place(1); }

static void zero(int cpu)
{
    if (cpu == 0) {
        for (uint64_t i = 0; i < iters; i++) {
            X[i] = Y[i] = 0;
            for (int r = 0; r < MAX_ROLES; r++)
                R[r][i] = 0;
        }
        for (int k = 0; k < MAX_ROLES; k++)
            progress[k] = 0;
    }
    ubarrier();
}

/* Every CHUNK iterations the roles wait for each other, so that they run
 * the same iterations at about the same time: without it one role tends
 * to run far ahead and the interesting outcomes never get a chance. */
static void lockstep(int cpu, int n, uint64_t i)
{
    if (i % CHUNK)
        return;
    progress[cpu] = i + 1;
    uint64_t t0 = rdtsc();
    for (int k = 0; k < n; k++)
        while (progress[k] < i + 1 && !test_failed) {
            cpu_relax();
            if (timed_out(t0, 30)) {
                ufail(cpu, "role %d stopped at iteration %lu", k, progress[k]);
                return;
            }
        }
}

static bool have_roles(int cpu, int n)
{
    if (ncpus < n && cpu == 0)
        ufail(cpu, "needs at least %d vCPUs", n);
    return ncpus >= n && cpu < n;
}

static int append_u64(char *s, uint64_t v)
{
    char t[24];
    int n = 0, o = 0;
    do {
        t[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        s[o++] = t[--n];
    return o;
}

/* Counts outcomes (nbits bits each) and fails on the forbidden one. */
static void judge(int cpu, const char *name, int (*outcome)(uint64_t), int forbidden, int nbits)
{
    ubarrier();
    if (cpu != 0)
        return;
    uint64_t hist[16] = {0};
    for (uint64_t i = 0; i < iters; i++)
        hist[outcome(i) & 15]++;
    char line[256];
    int o = 0;
    for (int k = 0; k < (1 << nbits); k++) {
        line[o++] = ' ';
        for (int b = nbits - 1; b >= 0; b--)
            line[o++] = (char)('0' + ((k >> b) & 1));
        line[o++] = '=';
        o += append_u64(line + o, hist[k]);
    }
    line[o] = 0;
    if (inject) /* the outcome seen most, which is certainly there */
        for (int k = 0; k < (1 << nbits); k++)
            if (hist[k] > hist[forbidden])
                forbidden = k;
    uprint("litmus %s: %lu iterations; outcomes%s; forbidden %d\n", name, iters, line, forbidden);
    if (hist[forbidden])
        ufail(cpu, "%s: the forbidden outcome appeared %lu times", name, hist[forbidden]);
}

/* Results are stored as value + 1, so 0 means "never ran". */
static int r(int k, uint64_t i) { return R[k][i] - 1; }

/* mp: W x=1; W y=1 || R y; R x. Forbidden y=1, x=0 (10). */
static int mp_out(uint64_t i) { return r(0, i) << 1 | r(1, i); }
static void mp_run(int cpu)
{
    zero(cpu);
    if (have_roles(cpu, 2))
        for (uint64_t i = 0; i < iters; i++) {
            lockstep(cpu, 2, i);
            if (cpu == 0) {
                X[i] = 1; CB(); Y[i] = 1;
            } else {
                uint8_t a = Y[i]; CB(); uint8_t b = X[i];
                R[0][i] = a + 1, R[1][i] = b + 1;
            }
        }
    judge(cpu, "mp", mp_out, 2, 2);
}

/* sb+mfences: W x; mfence; R y || W y; mfence; R x. Forbidden 0, 0 (00). */
static int sb_out(uint64_t i) { return r(0, i) << 1 | r(1, i); }
static void sb_run(int cpu)
{
    zero(cpu);
    if (have_roles(cpu, 2)) {
        volatile uint8_t *mine = cpu ? Y : X, *other = cpu ? X : Y;
        for (uint64_t i = 0; i < iters; i++) {
            lockstep(cpu, 2, i);
            mine[i] = 1;
            __asm__ volatile("mfence" ::: "memory");
            R[cpu][i] = (uint8_t)(other[i] + 1);
        }
    }
    judge(cpu, "sb+mfences", sb_out, 0, 2);
}

/* lb: R x; W y=1 || R y; W x=1. Forbidden 1, 1 (11). */
static int lb_out(uint64_t i) { return r(0, i) << 1 | r(1, i); }
static void lb_run(int cpu)
{
    zero(cpu);
    if (have_roles(cpu, 2)) {
        volatile uint8_t *from = cpu ? Y : X, *to = cpu ? X : Y;
        for (uint64_t i = 0; i < iters; i++) {
            lockstep(cpu, 2, i);
            uint8_t a = from[i]; CB(); to[i] = 1;
            R[cpu][i] = a + 1;
        }
    }
    judge(cpu, "lb", lb_out, 3, 2);
}

/* iriw: W x || W y || R x; R y || R y; R x. Forbidden 1,0,1,0 (1010):
 * the two readers may not see the writes in opposite orders. */
static int iriw_out(uint64_t i) { return r(0, i) << 3 | r(1, i) << 2 | r(2, i) << 1 | r(3, i); }
static void iriw_run(int cpu)
{
    zero(cpu);
    if (have_roles(cpu, 4))
        for (uint64_t i = 0; i < iters; i++) {
            lockstep(cpu, 4, i);
            if (cpu == 0) {
                X[i] = 1;
            } else if (cpu == 1) {
                Y[i] = 1;
            } else {
                volatile uint8_t *first = cpu == 2 ? X : Y, *second = cpu == 2 ? Y : X;
                uint8_t a = first[i]; CB(); uint8_t b = second[i];
                R[cpu == 2 ? 0 : 2][i] = a + 1;
                R[cpu == 2 ? 1 : 3][i] = b + 1;
            }
        }
    judge(cpu, "iriw", iriw_out, 10, 4);
}

/* 2+2w: W x=1; W y=2 || W y=1; W x=2. Forbidden final x=1, y=1: the
 * coherence orders of x and y would form a cycle. Outcome bits: x==2, y==2. */
static int w22_out(uint64_t i) { return (X[i] == 2) << 1 | (Y[i] == 2); }
static void w22_run(int cpu)
{
    zero(cpu);
    if (have_roles(cpu, 2))
        for (uint64_t i = 0; i < iters; i++) {
            lockstep(cpu, 2, i);
            if (cpu == 0) {
                X[i] = 1; CB(); Y[i] = 2;
            } else {
                Y[i] = 1; CB(); X[i] = 2;
            }
        }
    judge(cpu, "2+2w", w22_out, 0, 2);
}

/* false-sharing: every CPU increments its own word of one page, not
 * atomically; only coherence keeps every count exact. */
static void sharing_run(int cpu)
{
    uint64_t n = arg_u64("iters", 1000000);
    if (cpu == 0)
        for (int k = 0; k < ncpus; k++)
            words[k] = 0;
    ubarrier();
    for (uint64_t i = 0; i < n; i++)
        words[cpu]++;
    ubarrier();
    if (cpu == 0)
        for (int k = 0; k < ncpus; k++)
            if (words[k] != n + inject)
                ufail(cpu, "word of cpu %d is %lu, expected %lu", k, words[k], n + inject);
}

const struct test litmus_tests[] = {
    {"mp", mp_run, litmus_setup},
    {"sb", sb_run, litmus_setup},
    {"lb", lb_run, litmus_setup},
    {"iriw", iriw_run, litmus_setup},
    {"2+2w", w22_run, litmus_setup},
    {"false-sharing", sharing_run, sharing_setup},
    {NULL, NULL, NULL},
};

/* bench-dsm: CPU 1 (on another node than CPU 0 under round-robin
 * placement) touches pages that live at CPU 0's node and nobody touched
 * yet, timing each first read and each first write with rdtsc. The VMM's
 * `bench dsm` turns the cycles into time. */
#define BENCH_PAGES_MAX 4096

static void sort_u64(uint64_t *v, int n)
{
    for (int i = 1; i < n; i++) {
        uint64_t x = v[i];
        int j = i - 1;
        while (j >= 0 && v[j] > x) {
            v[j + 1] = v[j];
            j--;
        }
        v[j + 1] = x;
    }
}

static void bench_dsm_run(int cpu)
{
    static uint64_t t[3][BENCH_PAGES_MAX]; /* written by CPU 1 only: warmed below */
    int n = (int)arg_u64("pages", 1000);
    if (n > BENCH_PAGES_MAX)
        n = BENCH_PAGES_MAX;
    volatile uint8_t *rd = X + (8ULL << 20), *wr = rd + (32ULL << 20);
    /* Pages homed at CPU 1's own node (the upper half): mapped from the
     * start, so a first touch costs KVM's share of a fault only (part of
     * the floor). */
    volatile uint8_t *local = Y + (8ULL << 20);
    if (cpu == 1) {
        for (int k = 0; k < 3; k++)
            for (int i = 0; i < n; i++)
                t[k][i] = 0; /* fault the result pages in before timing */
        for (int i = 0; i < n; i++) {
            uint64_t t0 = rdtsc();
            (void)rd[(uint64_t)i * 4096];
            t[0][i] = rdtsc() - t0;
        }
        for (int i = 0; i < n; i++) {
            uint64_t t0 = rdtsc();
            wr[(uint64_t)i * 4096] = 1;
            t[1][i] = rdtsc() - t0;
        }
        for (int i = 0; i < n; i++) {
            uint64_t t0 = rdtsc();
            (void)local[(uint64_t)i * 4096];
            t[2][i] = rdtsc() - t0;
        }
        for (int k = 0; k < 3; k++)
            sort_u64(t[k], n);
        uprint("bench-dsm: pages %d read_p50 %lu read_p99 %lu write_p50 %lu write_p99 %lu "
               "local_p50 %lu cycles\n", n, t[0][n / 2], t[0][n * 99 / 100], t[1][n / 2],
               t[1][n * 99 / 100], t[2][n / 2]);
    }
    ubarrier();
}

static void bench_dsm_setup(void)
{
    place(1);
    if (ncpus < 2)
        fail("needs 2 vCPUs on different nodes");
    if ((uint64_t)X + (48ULL << 20) > ram_top / 2 || (uint64_t)Y + (24ULL << 20) > ram_top)
        fail("needs at least 128M of guest memory");
}

const struct test bench_tests[] = {
    {"bench-dsm", bench_dsm_run, bench_dsm_setup},
    {NULL, NULL, NULL},
};
