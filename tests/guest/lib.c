/* Freestanding library: string functions, formatting, and the user-mode
 * helpers the tests share (barrier, failure reporting, time-outs). */
#include <stdarg.h>

#include "guest.h"

volatile int test_failed;
char fail_reason[160];

void *memset(void *d, int c, size_t n)
{
    uint8_t *p = d;
    while (n--)
        *p++ = (uint8_t)c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    uint8_t *p = d;
    const uint8_t *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int strcmp(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return (uint8_t)*a - (uint8_t)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
    for (; n; n--, a++, b++) {
        if (*a != *b)
            return (uint8_t)*a - (uint8_t)*b;
        if (!*a)
            return 0;
    }
    return 0;
}

static void put_num(void (*out)(char), uint64_t v, unsigned base, bool neg)
{
    char buf[24];
    int n = 0;
    do {
        buf[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (neg)
        out('-');
    while (n)
        out(buf[--n]);
}

/* %s %c %d %u %x with an optional l; enough for test messages. */
void vformat(void (*out)(char), const char *fmt, va_list ap)
{
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            out(*fmt);
            continue;
        }
        bool lng = false;
        if (*++fmt == 'l')
            lng = true, fmt++;
        switch (*fmt) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            while (s && *s)
                out(*s++);
            break;
        }
        case 'c':
            out((char)va_arg(ap, int));
            break;
        case 'd': {
            int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
            put_num(out, v < 0 ? (uint64_t)-v : (uint64_t)v, 10, v < 0);
            break;
        }
        case 'u':
            put_num(out, lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, false);
            break;
        case 'x':
            put_num(out, lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, false);
            break;
        case '%':
            out('%');
            break;
        default:
            out('?');
            break;
        }
    }
}

/* ---- user mode ---------------------------------------------------------- */

static char *reason_pos;
static void reason_out(char c)
{
    if (reason_pos < fail_reason + sizeof fail_reason - 1)
        *reason_pos++ = c;
}

/* The first failure wins; the BSP prints it once every CPU is back. */
void ufail(int cpu, const char *fmt, ...)
{
    if (__atomic_exchange_n(&test_failed, 1, __ATOMIC_SEQ_CST))
        return;
    va_list ap;
    va_start(ap, fmt);
    reason_pos = fail_reason;
    if (cpu >= 0) {
        vformat(reason_out, "cpu ", ap);
        put_num(reason_out, (uint64_t)cpu, 10, false);
        vformat(reason_out, ": ", ap);
    }
    vformat(reason_out, fmt, ap);
    *reason_pos = 0;
    va_end(ap);
}

/* Port I/O from CPL3 faults on this host whatever IOPL says, so user mode
 * formats into a buffer and asks kernel mode to print it. */
static char ubuf[MAX_CPUS][256];
static char *upos[MAX_CPUS];
static int ucpu;

static void ubuf_out(char c)
{
    if (upos[ucpu] < ubuf[ucpu] + sizeof ubuf[ucpu] - 1)
        *upos[ucpu]++ = c;
}

static volatile int uprint_lock;
void uprint(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    while (__atomic_exchange_n(&uprint_lock, 1, __ATOMIC_ACQUIRE))
        cpu_relax();
    ucpu = 0;
    upos[0] = ubuf[0];
    vformat(ubuf_out, fmt, ap);
    *upos[0] = 0;
    svc(SVC_PUTS, (uint64_t)ubuf[0], 0);
    __atomic_store_n(&uprint_lock, 0, __ATOMIC_RELEASE);
    va_end(ap);
}

/* The TSC rate is unknown but at least 1 GHz here, so N giga-cycles is at
 * most N seconds on a slow clock and less on a fast one; slow=K on the
 * command line gives K times longer, for hosts that emulate the CPU under
 * KVM (scripts/nested-kvm.sh), where a vCPU may wait seconds for its turn. */
uint64_t timeout_scale = 1;
uint64_t inject;

bool timed_out(uint64_t start, uint64_t gcycles)
{
    return rdtsc() - start > gcycles * timeout_scale * 1000000000ULL;
}

static volatile uint32_t bar_count, bar_sense;

/* Sense-reversing barrier over all CPUs; gives up (and fails the test)
 * after ~60 s so that a lost CPU cannot hang the run. */
void ubarrier(void)
{
    uint32_t sense = __atomic_load_n(&bar_sense, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&bar_count, 1, __ATOMIC_ACQ_REL) == (uint32_t)ncpus) {
        bar_count = 0;
        __atomic_store_n(&bar_sense, sense ^ 1, __ATOMIC_RELEASE);
        return;
    }
    uint64_t t0 = rdtsc();
    while (__atomic_load_n(&bar_sense, __ATOMIC_ACQUIRE) == sense) {
        cpu_relax();
        if (timed_out(t0, 60)) {
            ufail(-1, "barrier time-out: a CPU never arrived");
            return;
        }
    }
}
