/* The tests. Each `run` executes in CPL3 on every CPU at once and ends on
 * a barrier, so when the BSP is back in kernel mode every CPU is done. */
#include "guest.h"

#define LAPIC ((volatile uint32_t *)0xFEE00000UL)
#define L(reg) LAPIC[(reg) / 4]
#define MSR_TSC_DEADLINE 0x6E0

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
    uint64_t want = counter_iters * (uint64_t)ncpus + inject;
    if (cpu == 0 && counter != want)
        ufail(cpu, "counter is %lu, expected %lu", counter, want);
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
    uint64_t want = lock_iters * (uint64_t)ncpus + inject;
    if (cpu == 0 && protected_value != want)
        ufail(cpu, "value is %lu, expected %lu (mutual exclusion broken)", protected_value, want);
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
        if (cpus[cpu].ipi_from[src] != ipi_rounds + inject)
            ufail(cpu, "received %lu IPIs from cpu %d, expected %lu", cpus[cpu].ipi_from[src],
                  src, ipi_rounds + inject);
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
    while (rdtsc() - t0 < 50000000ULL * timeout_scale) /* room for a wrong second tick */
        cpu_relax();
    if (ok && cpus[cpu].ticks != base + 1 + inject)
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

/* ---- halt ----------------------------------------------------------------- */
/* Each CPU, `rounds` times: a one-shot LAPIC timer of ~2 ms, then HLT until
 * it fires. The tick must come exactly once per round. A vCPU is halted
 * most of the time here, so a migration moves it halted and with its timer
 * mid-count (tests/integration/36-migration.sh). */
static uint64_t halt_rounds;

static void halt_setup(void)
{
    halt_rounds = arg_or("rounds", 50);
}

static void halt_run(int cpu)
{
    uint64_t start = cpus[cpu].ticks;
    L(0x3E0) = 0xB; /* divide by 1 */
    for (uint64_t r = 0; r < halt_rounds && !test_failed; r++) {
        uint64_t base = cpus[cpu].ticks, t0 = rdtsc();
        L(0x320) = VEC_TIMER; /* one-shot */
        L(0x380) = 2000000;
        while (cpus[cpu].ticks == base && !timed_out(t0, 20))
            svc(SVC_HLT, (uint64_t)&cpus[cpu].ticks, base);
        if (cpus[cpu].ticks != base + 1) {
            ufail(cpu, "halt round %lu: %lu timer ticks, expected 1", r, cpus[cpu].ticks - base);
            return;
        }
    }
    uint64_t t0 = rdtsc();
    while (rdtsc() - t0 < 20000000ULL * timeout_scale) /* room for a late extra tick */
        cpu_relax();
    if (cpus[cpu].ticks - start != halt_rounds + inject)
        ufail(cpu, "%lu timer ticks over %lu halts", cpus[cpu].ticks - start, halt_rounds);
    L(0x320) = 1u << 16;
    ubarrier();
}

/* ---- ioapic --------------------------------------------------------------- */
/* The UART's IRQ 4, routed level-triggered by the IOAPIC to each CPU in
 * turn, is raised `rounds` times per CPU and must arrive exactly as often.
 * On several nodes the UART and the IOAPIC live on node 0: the raise is a
 * forwarded port write, the interrupt a message to the CPU's node, and each
 * EOI must reach node 0's IOAPIC, or Remote IRR stays set there and the
 * second interrupt never comes. */
#define IOAPIC ((volatile uint32_t *)0xFEC00000UL)
#define IOAPIC_UART_PIN 4

static uint64_t ioapic_rounds;

static void ioapic_setup(void)
{
    ioapic_rounds = arg_or("rounds", 20);
}

static void ioapic_route(uint32_t apic_id, bool masked)
{
    IOAPIC[0] = 0x11 + 2 * IOAPIC_UART_PIN; /* IOREGSEL: high half, destination */
    IOAPIC[4] = apic_id << 24;              /* IOWIN */
    IOAPIC[0] = 0x10 + 2 * IOAPIC_UART_PIN; /* low half: fixed, physical, active high */
    IOAPIC[4] = VEC_DEVICE | (1u << 15) | (masked ? 1u << 16 : 0); /* level */
}

static void ioapic_raise_and_wait(int cpu)
{
    for (uint64_t r = 1; r <= ioapic_rounds && !test_failed; r++) {
        uint64_t base = cpus[cpu].device_irqs;
        svc(SVC_UART_THRI, 0, 0);
        uint64_t t0 = rdtsc();
        while (cpus[cpu].device_irqs == base && !timed_out(t0, 10))
            cpu_relax();
        if (cpus[cpu].device_irqs != base + 1)
            ufail(cpu, "UART interrupt %lu of %lu to APIC id %u: %lu arrived", r, ioapic_rounds,
                  cpus[cpu].apic_id, cpus[cpu].device_irqs - base);
    }
}

static void ioapic_run(int cpu)
{
    for (int t = 0; t < ncpus && !test_failed; t++) {
        if (cpu == 0)
            ioapic_route(cpus[t].apic_id, false);
        ubarrier();
        if (cpu == t)
            ioapic_raise_and_wait(cpu);
        ubarrier();
    }
    if (cpu != 0)
        return;
    ioapic_route(0, true);
    for (int c = 0; c < ncpus; c++)
        if (cpus[c].device_irqs != ioapic_rounds + inject)
            ufail(cpu, "CPU %d (APIC id %u) took %lu UART interrupts, expected %lu", c,
                  cpus[c].apic_id, cpus[c].device_irqs, ioapic_rounds + inject);
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
            if (*p != pattern((uint64_t)p) + inject) {
                ufail(cpu, "memory at %lx reads %lx, expected %lx", (uint64_t)p, *p,
                      pattern((uint64_t)p) + inject);
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

/* ---- tsc ------------------------------------------------------------------ */

/* TSC handed from CPU to CPU: for every pair of CPUs (on a multi-node
 * machine, often on different node processes), a ping-pong of `rounds`
 * hand-offs through one mailbox. The sender reads its TSC, stores it, then
 * stores the hand-off's sequence number (release); the receiver waits for
 * that number (acquire), then reads its own TSC with rdtsc_ordered() so
 * that the read cannot run ahead of the load that saw the number. The
 * receiver's reading happened after the sender's, so it must not be
 * smaller: every backward step is counted and the worst one reported. */
struct tsc_mbox {
    volatile uint64_t seq; /* last hand-off published, counting from 1 */
    volatile uint64_t tsc; /* the sender's TSC for it */
} __attribute__((aligned(4096)));

struct tsc_result {
    uint64_t handoffs, backwards, worst, worst_pub, worst_read, min_fwd;
    int worst_from;
} __attribute__((aligned(64)));

static struct tsc_mbox tsc_box;
static struct tsc_result tsc_res[MAX_CPUS];
static uint64_t tsc_rounds;

static void tsc_setup(void)
{
    tsc_rounds = arg_or("rounds", 500);
    if (tsc_rounds < 2)
        tsc_rounds = 2;
}

/* One pair's ping-pong; hand-off k goes from a to b when k is even, from
 * b to a when odd, and carries sequence number base + k + 1. */
static void tsc_pair(int cpu, int a, int b, uint64_t base, struct tsc_result *r)
{
    int other = cpu == a ? b : a;
    for (uint64_t k = 0; k < tsc_rounds && !test_failed; k++) {
        uint64_t v = base + k + 1;
        bool send = (k % 2 == 0) == (cpu == a);
        if (send) {
            /* The value is stored before the sequence number, and x86
             * stores become visible in order. */
            uint64_t t = rdtsc();
            tsc_box.tsc = t;
            __atomic_store_n(&tsc_box.seq, v, __ATOMIC_RELEASE);
            continue;
        }
        uint64_t t0 = rdtsc(), s;
        while ((s = __atomic_load_n(&tsc_box.seq, __ATOMIC_ACQUIRE)) < v) {
            cpu_relax();
            if (test_failed)
                return;
            if (timed_out(t0, 20)) {
                ufail(cpu, "hand-off %lu from cpu %d never arrived (mailbox holds %lu)",
                      k, other, s - base);
                return;
            }
        }
        uint64_t now = rdtsc_ordered();
        uint64_t pub = tsc_box.tsc;
        if (s != v) {
            ufail(cpu, "mailbox holds hand-off %lu, expected %lu", s - base, k + 1);
            return;
        }
        r->handoffs++;
        if (now < pub) {
            r->backwards++;
            if (pub - now > r->worst) {
                r->worst = pub - now;
                r->worst_pub = pub;
                r->worst_read = now;
                r->worst_from = other;
            }
        } else if (now - pub < r->min_fwd) {
            r->min_fwd = now - pub;
        }
    }
}

static void tsc_run(int cpu)
{
    struct tsc_result r = {.min_fwd = ~0ULL};
    uint64_t base = 0;
    for (int a = 0; a < ncpus; a++)
        for (int b = a + 1; b < ncpus; b++) {
            if (cpu == a || cpu == b)
                tsc_pair(cpu, a, b, base, &r);
            base += tsc_rounds;
            ubarrier(); /* the next pair starts from a quiet mailbox */
        }
    tsc_res[cpu] = r;
    ubarrier();
    if (cpu != 0 || test_failed)
        return;
    struct tsc_result all = {.min_fwd = ~0ULL};
    int worst_cpu = -1;
    for (int c = 0; c < ncpus; c++) {
        all.handoffs += tsc_res[c].handoffs;
        all.backwards += tsc_res[c].backwards;
        if (tsc_res[c].min_fwd < all.min_fwd)
            all.min_fwd = tsc_res[c].min_fwd;
        if (tsc_res[c].backwards && tsc_res[c].worst >= all.worst) {
            all.worst = tsc_res[c].worst;
            worst_cpu = c;
        }
    }
    uint64_t want = (uint64_t)ncpus * (uint64_t)(ncpus - 1) / 2 * tsc_rounds + inject;
    uprint("tsc: %d CPUs, %lu hand-offs, %lu backwards, worst backward step %lu cycles, "
           "smallest forward step %lu cycles\n", ncpus, all.handoffs, all.backwards, all.worst,
           all.min_fwd == ~0ULL ? 0 : all.min_fwd);
    if (all.handoffs != want)
        ufail(-1, "%lu hand-offs checked, expected %lu", all.handoffs, want);
    else if (worst_cpu >= 0)
        ufail(-1, "TSC went backwards in %lu of %lu hand-offs; worst backward step %lu cycles "
              "(cpu %d published %lu, then cpu %d read %lu)", all.backwards, all.handoffs,
              all.worst, tsc_res[worst_cpu].worst_from, tsc_res[worst_cpu].worst_pub, worst_cpu,
              tsc_res[worst_cpu].worst_read);
}

/* ---- contend -------------------------------------------------------------- */

/* Every CPU hammers one page with lock-prefixed operations: a CAS-loop
 * increment of a shared word, a locked increment of its own word beside it,
 * and every `every` iterations a barrier whose waiters spin with locked
 * reads (lock xadd 0), so that a waiter wants the page exclusive all the
 * time. Across nodes this is the DSM's worst case: unless a node that is
 * granted the page keeps it long enough to finish the faulting
 * instruction, the page bounces and nobody gets anywhere. */
static volatile uint64_t contend_page[512] __attribute__((aligned(4096)));
static uint64_t contend_iters, contend_every;
#define C_SHARED 0
#define C_ARRIVED 1
#define C_GEN 2
#define C_OWN 8

static void contend_setup(void)
{
    contend_iters = arg_or("iters", 20000);
    contend_every = arg_or("every", 100);
    if (!contend_every)
        contend_every = 1;
}

static uint64_t locked_read(volatile uint64_t *w)
{
    return __atomic_fetch_add(w, 0, __ATOMIC_SEQ_CST); /* lock xadd: a write for the DSM */
}

static void locked_barrier(int cpu)
{
    uint64_t gen = locked_read(&contend_page[C_GEN]);
    if (__atomic_add_fetch(&contend_page[C_ARRIVED], 1, __ATOMIC_SEQ_CST) == (uint64_t)ncpus) {
        __atomic_exchange_n(&contend_page[C_ARRIVED], 0, __ATOMIC_SEQ_CST);
        __atomic_fetch_add(&contend_page[C_GEN], 1, __ATOMIC_SEQ_CST);
        return;
    }
    uint64_t t0 = rdtsc();
    while (locked_read(&contend_page[C_GEN]) == gen && !test_failed)
        if (timed_out(t0, 60))
            ufail(cpu, "contend: locked barrier time-out");
}

static void contend_run(int cpu)
{
    uint64_t t0 = rdtsc();
    for (uint64_t i = 0; i < contend_iters && !test_failed; i++) {
        uint64_t v = contend_page[C_SHARED];
        while (!__atomic_compare_exchange_n(&contend_page[C_SHARED], &v, v + 1, false,
                                            __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            ;
        __atomic_fetch_add(&contend_page[C_OWN + cpu], 1, __ATOMIC_SEQ_CST);
        if (i % contend_every == contend_every - 1)
            locked_barrier(cpu);
    }
    uint64_t dt = rdtsc() - t0;
    ubarrier();
    if (cpu != 0 || test_failed)
        return;
    uint64_t want = contend_iters * (uint64_t)ncpus + inject;
    if (contend_page[C_SHARED] != want)
        ufail(cpu, "contend: shared word is %lu, expected %lu", contend_page[C_SHARED], want);
    for (int c = 0; c < ncpus && !test_failed; c++)
        if (contend_page[C_OWN + c] != contend_iters)
            ufail(cpu, "contend: CPU %d's word is %lu, expected %lu", c, contend_page[C_OWN + c],
                  contend_iters);
    if (!test_failed)
        uprint("contend: %lu locked iterations per CPU on one page, %d CPUs, %lu cycles "
               "(CPU 0)\n", contend_iters, ncpus, dt);
}

/* ---- local ---------------------------------------------------------------- */

/* Each CPU works on memory homed at its own node: with nodes=K (the
 * machine's node count; `bench local` passes the same K to a one-node run so
 * that both do the same work) and round-robin placement, CPU c is on node
 * c % K, whose slice is the K-th part of RAM (numa/machine.c). The CPU
 * writes then reads back every cache line of `mb` MiB there, `passes`
 * times, the first pass being the first touch. CPU 0 prints the slowest
 * CPU's cycles, which the benchmark compares between a 1-node and a K-node
 * run. */
static uint64_t local_nodes, local_bytes, local_passes;
static volatile uint64_t local_cycles[MAX_CPUS], local_first[MAX_CPUS];

static void local_setup(void)
{
    local_nodes = arg_or("nodes", 1);
    local_bytes = arg_or("mb", 8) << 20;
    local_passes = arg_or("passes", 4);
    if (!local_nodes || local_nodes > (uint64_t)ncpus)
        fail("local: nodes=%lu, but %d CPUs", local_nodes, ncpus);
}

static uint64_t local_base(int cpu)
{
    const uint64_t two_mib = 2ULL << 20;
    uint64_t top = ram_top < 0xC0000000ULL ? ram_top : 0xC0000000ULL;
    uint64_t slice = top / local_nodes / two_mib * two_mib;
    uint64_t node = (uint64_t)cpu % local_nodes, nth = (uint64_t)cpu / local_nodes;
    uint64_t lo = node * slice, end = node + 1 == local_nodes ? top : lo + slice;
    uint64_t image = (guest_image_end + two_mib - 1) & ~(two_mib - 1);
    if (lo < image)
        lo = image;
    uint64_t base = lo + nth * ((local_bytes + two_mib - 1) & ~(two_mib - 1));
    return base + local_bytes <= end ? base : 0;
}

static void local_run(int cpu)
{
    volatile uint64_t *p = (volatile uint64_t *)local_base(cpu);
    uint64_t words = local_bytes / 8, sum = 0, t0;
    if (!p)
        ufail(cpu, "local: no room for %lu MiB per CPU in its node's slice", local_bytes >> 20);
    ubarrier();
    t0 = rdtsc();
    for (uint64_t k = 0; p && k < local_passes; k++) {
        for (uint64_t i = 0; i < words; i += 8)
            p[i] = i + k;
        for (uint64_t i = 0; i < words; i += 8)
            sum += p[i] - (i + k);
        if (k == 0)
            local_first[cpu] = rdtsc() - t0;
    }
    local_cycles[cpu] = rdtsc() - t0;
    if (sum + inject)
        ufail(cpu, "local: read back %lu differences", sum + inject);
    ubarrier();
    if (cpu != 0 || test_failed)
        return;
    uint64_t worst = 0;
    for (int c = 0; c < ncpus; c++)
        worst = local_cycles[c] > worst ? local_cycles[c] : worst;
    uprint("local: cpus %d nodes %lu mb %lu passes %lu cycles %lu\n", ncpus, local_nodes,
           local_bytes >> 20, local_passes, worst);
    for (int c = 0; c < ncpus; c++)
        uprint("local: cpu %d first pass %lu cycles, all %lu\n", c, local_first[c],
               local_cycles[c]);
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

/* ---- heartbeat ------------------------------------------------------------ */

/* For the monitor's tests: CPU 0 prints "heartbeat N" every ~100 ms of real
 * time (the ACPI PM timer, 3.58 MHz, 24 bits) while every CPU spins; a
 * paused machine prints nothing, so a watcher sees the count stop and
 * resume; the other CPUs read the beat count, so each beat moves a page
 * between nodes and the DSM's counters grow. It ends after seconds=S (default 30), or when the ACPI power
 * button is pressed (the monitor's system_powerdown): it enables the
 * button in PM1, watches PM1 status, then powers off through PM1 control
 * (S5) as an OS would. */
#define HB_PM1_EVT 0x600 /* platform/platform.h */
#define HB_PM1_CNT 0x604
#define HB_PM_TMR 0x608
#define HB_PWRBTN 0x0100

/* The ACPI PM timer's 24 bits. */
static uint32_t pm_timer(void)
{
    return (uint32_t)upio_in(HB_PM_TMR, 4) & 0xffffff;
}
/* Whether a 24-bit PM-timer reading is behind an earlier one: a wrap is
 * forward by less than half the period. */
static bool pm_behind(uint32_t now, uint32_t before)
{
    return ((now - before) & 0xffffff) >= 0x800000;
}

static uint64_t hb_seconds;
static volatile int hb_done;
static volatile uint64_t hb_beat; /* read by every CPU: each beat moves its page */

static void heartbeat_setup(void)
{
    hb_seconds = arg_or("seconds", 30);
}

static void heartbeat_run(int cpu)
{
    if (cpu != 0) {
        uint64_t seen = 0;
        while (!hb_done)
            if (hb_beat != seen)
                seen = hb_beat;
            else
                cpu_relax();
        return;
    }
    upio_out(HB_PM1_EVT + 2, 2, HB_PWRBTN); /* PM1 enable: the power button */
    uint32_t last = pm_timer();
    uint64_t ticks = 0, next = 0, beats = 0;
    bool button = false;
    while (ticks < hb_seconds * 3579545ULL) {
        uint32_t now = pm_timer();
        ticks += (now - last) & 0xffffff;
        last = now;
        if (ticks >= next) {
            uprint("heartbeat %lu\n", beats++);
            hb_beat = beats;
            next += 357954; /* 100 ms */
        }
        if (upio_in(HB_PM1_EVT, 2) & HB_PWRBTN) {
            upio_out(HB_PM1_EVT, 2, HB_PWRBTN); /* a 1 clears the status */
            button = true;
            break;
        }
    }
    hb_done = 1;
    if (button) {
        uprint("heartbeat: power button pressed after %lu beats: powering off\n", beats);
        upio_out(HB_PM1_CNT, 2, (5 << 10) | 0x2000); /* SLP_TYP 5 (S5), SLP_EN */
    }
    uprint("heartbeat: %lu beats in %lu s\n", beats, hb_seconds);
}

/* ---- pmtimer ---------------------------------------------------------------- */
/* The ACPI PM timer read as Linux checks it (drivers/clocksource/acpi_pm.c):
 * of two reads in a row the second must not be behind the first. Linux
 * allows a lower second value only below 0xfff (a wrap just past); here a
 * wrap is told from a step back by the distance instead (forward less than
 * half the 24-bit period), because a vCPU thread may lose its core for a
 * few ms between two reads on this 2-core host, and a wrap then lands
 * beyond 0xfff (counted, "late wraps"). And across CPUs: a CPU that has
 * seen another's reading (through memory) reads a value not behind it.
 * Every node answers the reads itself, so this holds across nodes only if
 * they share one time base. */
static uint64_t pm_reads, pm_rounds;
static volatile uint64_t pm_seq; /* hand-offs so far; turn k is CPU k % ncpus's */
static volatile uint32_t pm_val; /* what the CPU before read */
static volatile uint64_t pm_back[MAX_CPUS], pm_late[MAX_CPUS];

static void pmtimer_setup(void)
{
    pm_reads = arg_or("reads", 20000);
    pm_rounds = arg_or("rounds", 200);
}

static void pmtimer_run(int cpu)
{
    uint64_t bad = 0, late = 0;
    uint32_t b1 = 0, b2 = 0;
    for (uint64_t i = 0; i < pm_reads; i++) {
        uint32_t v1 = pm_timer(), v2 = pm_timer();
        if (pm_behind(v2, v1) && !bad++) {
            b1 = v1;
            b2 = v2;
        }
        late += v2 < v1 && v2 >= 0xfff;
    }
    pm_late[cpu] = late;
    if (bad)
        ufail(cpu, "pmtimer: behind the read before in %lu of %lu read pairs (first %lx, then "
              "%lx)", bad, pm_reads, (uint64_t)b1, (uint64_t)b2);
    ubarrier();
    uint64_t total = pm_rounds * (uint64_t)ncpus, back = 0;
    for (uint64_t k = (uint64_t)cpu; k < total && !test_failed; k += (uint64_t)ncpus) {
        uint64_t t0 = rdtsc();
        while (pm_seq != k) {
            if (timed_out(t0, 20)) {
                ufail(cpu, "pmtimer: hand-off %lu never came", k);
                break;
            }
            cpu_relax();
        }
        uint32_t now = pm_timer();
        if (k > 0 && pm_behind(now, pm_val))
            back++;
        pm_val = now;
        pm_seq = k + 1;
    }
    pm_back[cpu] = back;
    ubarrier();
    if (cpu != 0 || test_failed)
        return;
    uint64_t all = 0, lates = 0;
    for (int c = 0; c < ncpus; c++)
        all += pm_back[c], lates += pm_late[c];
    uprint("pmtimer: %d CPUs, %lu read pairs each (%lu late wraps), %lu hand-offs, %lu behind "
           "the CPU before\n", ncpus, pm_reads, lates, total, all);
    if (all != inject)
        ufail(-1, "pmtimer: %lu of %lu hand-offs read a PM timer behind the one before", all,
              total);
}

/* ---- hostile ---------------------------------------------------------------- */
/* What a buggy or malicious guest may do to the machine's devices and
 * APICs (docs/reliability.md): every CPU writes random values to the
 * device ports (but not to the power, reset and exit controls, which do
 * what they should) and to ports no device has, to reserved and read-only
 * LAPIC registers and misaligned ones, sends IPIs with illegal vectors,
 * reserved delivery modes and to APIC ids nobody has, floods NMIs and
 * IPIs, and fills the IOAPIC with nonsense (active high on pins no device
 * drives, so nothing fires, and pin 4, the UART's, masked). The machine
 * must keep going, count each kind and print the counts; then the same
 * guest runs smp-counter, which must pass. */
static uint64_t hostile_rounds;

static void hostile_setup(void)
{
    hostile_rounds = arg_or("rounds", 200);
    counter_setup();
}

static uint64_t hrand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void hostile_ports(uint64_t *s)
{
    static const uint16_t uart_regs[] = {1, 2, 7}; /* IER, FCR, scratch */
    for (uint64_t r = 0; r < hostile_rounds; r++) {
        int bytes = 1 << (hrand(s) % 3);
        uint16_t port = (uint16_t)(0x100 + hrand(s) % 0x400); /* below 0x501 (exit): no device */
        if (port < 0x3f8 || port > 0x3ff) {
            upio_out(port, bytes, hrand(s));
            (void)upio_in(port, bytes);
        }
        upio_out(0x3f8 + uart_regs[hrand(s) % 3], 1, hrand(s) & 0xff);
        upio_out(0x600 + (uint16_t)(hrand(s) % 4), 1, hrand(s) & 0xff); /* PM1 status, enable */
        upio_out(0x605, 1, hrand(s) & 0xdf & ~0x1c); /* PM1 control, no SLP_EN or sleep type */
        upio_out(0x608 + (uint16_t)(hrand(s) % 4), 1, hrand(s)); /* PM timer: read-only */
        upio_out(0x80, 1, hrand(s)); /* POST */
    }
    upio_out(0x3f9, 1, 0); /* the UART as lib.c left it: no interrupts */
    upio_out(0x602, 2, 0); /* PM1 enable: nothing */
}

static void hostile_lapic(int cpu, uint64_t *s)
{
    static const uint16_t ro[] = {0x000, 0x010, 0x030, 0x040, 0x050, 0x060, 0x070, 0x090,
                                  0x0a0, 0x0c0, 0x100, 0x180, 0x200, 0x270, 0x390, 0x3a0,
                                  0x3b0, 0x3c0, 0x3d0, 0x3f0};
    for (uint64_t r = 0; r < hostile_rounds; r++) {
        L(ro[hrand(s) % (sizeof ro / sizeof ro[0])]) = (uint32_t)hrand(s);
        *(volatile uint32_t *)((uintptr_t)LAPIC + 0x304 + 4 * (hrand(s) % 3)) =
            (uint32_t)hrand(s); /* misaligned: ignored */
        uint32_t nobody = (uint32_t)ncpus + (uint32_t)(hrand(s) % (0xfe - (uint64_t)ncpus));
        L(0x310) = nobody << 24; /* fixed, to an APIC id nobody has */
        L(0x300) = 0x50;
        L(0x310) = cpus[(cpu + 1) % ncpus].apic_id << 24;
        L(0x300) = (uint32_t)(hrand(s) % 16); /* fixed, illegal vector */
        L(0x300) = 0x50 | (hrand(s) % 2 ? 3u : 7u) << 8; /* reserved, ExtINT */
        L(0x300) = 4u << 8 | 3u << 18; /* NMI to all but self: counted by them */
    }
    L(0x280) = 0; /* ESR: takes the illegal-vector bits and clears them */
}

static void hostile_ioapic(uint64_t *s)
{
    for (uint64_t r = 0; r < hostile_rounds; r++) {
        uint32_t pin = (uint32_t)(hrand(s) % 24);
        uint32_t lo = (uint32_t)hrand(s) & ~(1u << 13); /* active high: undriven pins stay low */
        if (pin == IOAPIC_UART_PIN)
            lo |= 1u << 16;
        IOAPIC[0] = 0x11 + 2 * pin;
        IOAPIC[4] = (uint32_t)hrand(s);
        IOAPIC[0] = 0x10 + 2 * pin;
        IOAPIC[4] = lo;
        IOAPIC[0] = (uint32_t)hrand(s) & 0xff; /* any register, most of them none */
        IOAPIC[4] = (uint32_t)hrand(s);
        IOAPIC[(hrand(s) % 4) + 1] = (uint32_t)hrand(s); /* beside the two windows */
    }
}

static void hostile_run(int cpu)
{
    uint64_t s = 0x9e3779b97f4a7c15ULL * (uint64_t)(cpu + 1);
    hostile_ports(&s);
    hostile_lapic(cpu, &s);
    if (cpu == 0)
        hostile_ioapic(&s);
    ubarrier();
    if (cpu == 0) { /* every entry masked again: the machine as it was */
        for (uint32_t pin = 0; pin < 24; pin++) {
            IOAPIC[0] = 0x10 + 2 * pin;
            IOAPIC[4] = 1u << 16;
        }
        uprint("hostile: %lu rounds a CPU; %lu NMIs taken by CPU 1\n", hostile_rounds,
               ncpus > 1 ? cpus[1].nmis : 0);
    }
    ubarrier();
    counter_run(cpu);
}

const struct test tests[] = {
    {"smp-counter", counter_run, counter_setup},
    {"spinlock", lock_run, lock_setup},
    {"ipi", ipi_run, ipi_setup},
    {"timer", timer_run, NULL},
    {"mem", mem_run, mem_setup},
    {"tsc", tsc_run, tsc_setup},
    {"ioapic", ioapic_run, ioapic_setup},
    {"contend", contend_run, contend_setup},
    {"local", local_run, local_setup},
    {"bench-vmexit", bench_run, bench_setup},
    {"heartbeat", heartbeat_run, heartbeat_setup},
    {"halt", halt_run, halt_setup},
    {"pmtimer", pmtimer_run, pmtimer_setup},
    {"hostile", hostile_run, hostile_setup},
    {"virtio", virtio_run, virtio_setup},
    {"blkbench", blkbench_run, blkbench_setup},
    {NULL, NULL, NULL},
};
