/* The tests. Each `run` executes in CPL3 on every CPU at once and ends on
 * a barrier, so when the BSP is back in kernel mode every CPU is done. */
#include "guest.h"

#define LAPIC ((volatile uint32_t *)0xFEE00000UL)
#define L(reg) LAPIC[(reg) / 4]
#define MSR_TSC_DEADLINE 0x6E0

static uint64_t arg_or(const char *key, uint64_t dflt)
{
    static char buf[32];
    const char *s = cmdline_get(key, buf, sizeof buf);
    if (!s)
        return dflt;
    uint64_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++)
        v = v * 10 + (uint64_t)(*s - '0');
    return v;
}

/* ---- smp-counter ---------------------------------------------------------- */

static volatile uint64_t counter;
static uint64_t counter_iters;

static void counter_setup(void)
{
    counter_iters = arg_or("iters", 1000000);
}

static void counter_run(int cpu)
{
    for (uint64_t i = 0; i < counter_iters; i++)
        __atomic_fetch_add(&counter, 1, __ATOMIC_SEQ_CST); /* lock xadd */
    ubarrier();
    if (cpu == 0 && counter != counter_iters * (uint64_t)ncpus)
        ufail(cpu, "counter is %lu, expected %lu", counter, counter_iters * (uint64_t)ncpus);
}

/* ---- spinlock ------------------------------------------------------------- */

static volatile uint32_t lock_word, inside;
static volatile uint64_t protected_value;
static uint64_t lock_iters;

static void lock_setup(void)
{
    lock_iters = arg_or("iters", 20000);
}

/* Test-and-test-and-set (xchg). Not a ticket lock: with more vCPUs than
 * host cores, a FIFO lock waits for every preempted waiter in turn. */
static void spin_lock(void)
{
    while (__atomic_exchange_n(&lock_word, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(&lock_word, __ATOMIC_RELAXED))
            cpu_relax();
}

static void spin_unlock(void)
{
    __atomic_store_n(&lock_word, 0, __ATOMIC_RELEASE);
}

static void lock_run(int cpu)
{
    for (uint64_t i = 0; i < lock_iters && !test_failed; i++) {
        spin_lock();
        if (__atomic_add_fetch(&inside, 1, __ATOMIC_SEQ_CST) != 1)
            ufail(cpu, "two CPUs inside the critical section");
        uint64_t v = protected_value; /* a deliberately non-atomic update */
        for (volatile int d = 0; d < 20; d++)
            ;
        protected_value = v + 1;
        __atomic_sub_fetch(&inside, 1, __ATOMIC_SEQ_CST);
        spin_unlock();
    }
    ubarrier();
    if (cpu == 0 && protected_value != lock_iters * (uint64_t)ncpus)
        ufail(cpu, "value is %lu, expected %lu (mutual exclusion broken)", protected_value,
              lock_iters * (uint64_t)ncpus);
}

/* ---- ipi ------------------------------------------------------------------ */

static uint64_t ipi_rounds;

static void ipi_setup(void)
{
    ipi_rounds = arg_or("rounds", 50);
}

static void send_ipi(int dst, uint8_t vector)
{
    L(0x310) = cpus[dst].apic_id << 24;
    L(0x300) = vector; /* fixed, physical, edge */
}

/* Each sender uses its own vector, and waits for the previous IPI to a
 * CPU to arrive before sending the next: two of one vector pending at once
 * legitimately merge into one in IRR. */
static void ipi_run(int cpu)
{
    for (uint64_t r = 1; r <= ipi_rounds && !test_failed; r++) {
        for (int dst = 0; dst < ncpus; dst++) {
            uint64_t t0 = rdtsc();
            while (cpus[dst].ipi_from[cpu] != r - 1) {
                cpu_relax();
                if (timed_out(t0, 30)) {
                    ufail(cpu, "IPI %lu to cpu %d never arrived", r - 1, dst);
                    break;
                }
            }
            send_ipi(dst, (uint8_t)(VEC_IPI_BASE + cpu));
        }
    }
    uint64_t t0 = rdtsc();
    for (int src = 0; src < ncpus && !test_failed; src++)
        while (cpus[cpu].ipi_from[src] < ipi_rounds && !timed_out(t0, 30))
            cpu_relax();
    ubarrier();
    /* One NMI IPI to the next CPU: each must see exactly one. */
    int next = (cpu + 1) % ncpus;
    L(0x310) = cpus[next].apic_id << 24;
    L(0x300) = 0x400; /* delivery mode NMI */
    t0 = rdtsc();
    while (cpus[cpu].nmis < 1 && !timed_out(t0, 30))
        cpu_relax();
    ubarrier();
    if (cpus[cpu].nmis != 1)
        ufail(cpu, "received %lu NMIs, expected 1", cpus[cpu].nmis);
    for (int src = 0; src < ncpus; src++)
        if (cpus[cpu].ipi_from[src] != ipi_rounds)
            ufail(cpu, "received %lu IPIs from cpu %d, expected %lu", cpus[cpu].ipi_from[src],
                  src, ipi_rounds);
    ubarrier();
}

/* ---- timer ---------------------------------------------------------------- */

static bool wait_ticks(int cpu, uint64_t target, const char *mode)
{
    uint64_t t0 = rdtsc();
    while (cpus[cpu].ticks < target) {
        cpu_relax();
        if (timed_out(t0, 20)) {
            ufail(cpu, "%s timer: %lu ticks, expected %lu", mode, cpus[cpu].ticks, target);
            return false;
        }
    }
    return true;
}

static void timer_run(int cpu)
{
    /* periodic, 1 ms at 1 GHz / divide-by-1 */
    L(0x3E0) = 0xB;
    L(0x320) = VEC_TIMER | (1u << 17);
    L(0x380) = 1000000;
    bool ok = wait_ticks(cpu, 20, "periodic");
    L(0x380) = 0;
    uint64_t base = cpus[cpu].ticks;
    /* one-shot: exactly one tick */
    L(0x320) = VEC_TIMER;
    L(0x380) = 2000000;
    ok = ok && wait_ticks(cpu, base + 1, "one-shot");
    uint64_t t0 = rdtsc();
    while (!timed_out(t0, 0) && rdtsc() - t0 < 50000000ULL)
        cpu_relax();
    if (ok && cpus[cpu].ticks != base + 1)
        ufail(cpu, "one-shot timer fired %lu times", cpus[cpu].ticks - base);
    /* TSC-deadline, if the CPU has it (CPUID.1:ECX[24]) */
    uint32_t a = 1, b, c = 0, d;
    __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
    if (ok && (c & (1u << 24))) {
        base = cpus[cpu].ticks;
        L(0x320) = VEC_TIMER | (2u << 17);
        svc(SVC_WRMSR, MSR_TSC_DEADLINE, rdtsc() + 3000000);
        wait_ticks(cpu, base + 1, "TSC-deadline");
        L(0x320) = 1u << 16;
    }
    ubarrier();
}

/* ---- mem ------------------------------------------------------------------ */

static uint64_t mem_lo, mem_hi;
static volatile uint64_t mem_bytes;

static void mem_setup(void)
{
    mem_lo = (guest_image_end + (2ULL << 20) - 1) & ~((2ULL << 20) - 1);
    mem_hi = ram_top < 0xC0000000ULL ? ram_top : 0xC0000000ULL;
}

static inline uint64_t pattern(uint64_t addr)
{
    return (addr * 0x9E3779B97F4A7C15ULL) ^ (addr >> 17) ^ 0x5a5a5a5a5a5a5a5aULL;
}

/* Chunk i is written by CPU i % n and checked by CPU (i + 1) % n, so every
 * CPU reads what another wrote. */
static void mem_run(int cpu)
{
    const uint64_t chunk = 2ULL << 20;
    uint64_t nchunks = (mem_hi - mem_lo) / chunk;
    for (uint64_t i = (uint64_t)cpu; i < nchunks; i += (uint64_t)ncpus)
        for (uint64_t *p = (uint64_t *)(mem_lo + i * chunk);
             p < (uint64_t *)(mem_lo + (i + 1) * chunk); p++)
            *p = pattern((uint64_t)p);
    ubarrier();
    uint64_t checked = 0;
    for (uint64_t i = (uint64_t)(cpu + 1) % (uint64_t)ncpus; i < nchunks && !test_failed;
         i += (uint64_t)ncpus) {
        for (uint64_t *p = (uint64_t *)(mem_lo + i * chunk);
             p < (uint64_t *)(mem_lo + (i + 1) * chunk); p++) {
            if (*p != pattern((uint64_t)p)) {
                ufail(cpu, "memory at %lx reads %lx, expected %lx", (uint64_t)p, *p,
                      pattern((uint64_t)p));
                break;
            }
        }
        checked += chunk;
    }
    __atomic_add_fetch(&mem_bytes, checked, __ATOMIC_SEQ_CST);
    ubarrier();
    if (cpu == 0 && !test_failed)
        uprint("mem: verified %lu MiB at %lx-%lx on %d CPUs\n", mem_bytes >> 20, mem_lo,
               mem_hi, ncpus);
}

/* ---- bench-vmexit ------------------------------------------------------------ */

static uint64_t bench_iters;

static void bench_setup(void)
{
    bench_iters = arg_or("iters", 100000);
}

static void bench_run(int cpu)
{
    if (cpu == 0)
        svc(SVC_BENCH_OUT, bench_iters, 0);
    ubarrier();
}

const struct test tests[] = {
    {"smp-counter", counter_run, counter_setup},
    {"spinlock", lock_run, lock_setup},
    {"ipi", ipi_run, ipi_setup},
    {"timer", timer_run, NULL},
    {"mem", mem_run, mem_setup},
    {"bench-vmexit", bench_run, bench_setup},
    {NULL, NULL, NULL},
};
