/* The test guest's kernel mode: descriptor tables, paging, LAPIC, SMP
 * start-up, traps, console. Runs emulated on hosts without VT-x/AMD-V, so
 * it does as little as it can and leaves the work to user mode. */
#include <stdarg.h>

#include "guest.h"

#define LAPIC_BASE 0xFEE00000UL
#define COM1 0x3f8
#define UART_IER 1
#define UART_IIR 2
#define UART_MCR 4
#define UART_MCR_OUT2 0x08 /* gates the UART's interrupt line on PCs */
#define PORT_EXIT 0x501
#define VEC_GO 0x31

struct percpu cpus[MAX_CPUS];
int ncpus = 1;
uint8_t kstacks[MAX_CPUS][KSTACK_SIZE] __attribute__((aligned(16)));
uint8_t istacks[MAX_CPUS][ISTACK_SIZE] __attribute__((aligned(16)));
/* #DF, NMI and #MC switch to a stack of their own (IST 1): a fault on a
 * broken kernel stack then still reaches trap() and is printed, instead of
 * becoming a triple fault, which SVM reports only as a reset vCPU. */
static uint8_t fstacks[MAX_CPUS][FSTACK_SIZE] __attribute__((aligned(16)));
static uint8_t ustacks[MAX_CPUS][USTACK_SIZE] __attribute__((aligned(16)));
const char *test_name = "?";
uint64_t ram_top;
uint64_t guest_image_end;
extern char _end[];

struct tss {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3;
    uint16_t iomap_base;
} __attribute__((packed));

static uint64_t gdt[5 + 2 * MAX_CPUS] __attribute__((aligned(16)));
static struct tss tss[MAX_CPUS];
static uint64_t idt[512] __attribute__((aligned(16)));
static uint64_t pml4[512] __attribute__((aligned(4096)));
static uint64_t pdpt[512] __attribute__((aligned(4096)));
#define MAX_GIB 16
static uint64_t pds[MAX_GIB][512] __attribute__((aligned(4096)));
static char cmdline[1024];
static const struct test *current;
static volatile int go;
static volatile int print_lock;
static volatile int ap_online;

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port));
}

static void post(uint8_t code)
{
    outb(POST_PORT, code);
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

void putc_con(char c)
{
    outb(COM1, (uint8_t)c);
}

static void puts_con(const char *s)
{
    while (*s)
        putc_con(*s++);
}

static void lock_print(void)
{
    while (__atomic_exchange_n(&print_lock, 1, __ATOMIC_ACQUIRE))
        __asm__ volatile("pause");
}

static void unlock_print(void)
{
    __atomic_store_n(&print_lock, 0, __ATOMIC_RELEASE);
}

void printk(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lock_print();
    vformat(putc_con, fmt, ap);
    unlock_print();
    va_end(ap);
}

void guest_exit(int status)
{
    for (;;)
        outb(PORT_EXIT, (uint8_t)status);
}

void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lock_print();
    puts_con("TESTGUEST FAIL ");
    puts_con(test_name);
    puts_con(": ");
    vformat(putc_con, fmt, ap);
    putc_con('\n');
    va_end(ap);
    guest_exit(1);
}

uint32_t lapic_read(uint32_t reg)
{
    return *(volatile uint32_t *)(LAPIC_BASE + reg);
}

void lapic_write(uint32_t reg, uint32_t val)
{
    *(volatile uint32_t *)(LAPIC_BASE + reg) = val;
}

const char *cmdline_get(const char *key, char *buf, size_t len)
{
    size_t kl = strlen(key);
    const char *p = cmdline;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!strncmp(p, key, kl) && p[kl] == '=') {
            p += kl + 1;
            size_t n = 0;
            while (p[n] && p[n] != ' ' && n + 1 < len) {
                buf[n] = p[n];
                n++;
            }
            buf[n] = 0;
            return buf;
        }
        while (*p && *p != ' ')
            p++;
    }
    return NULL;
}

uint64_t arg_or(const char *key, uint64_t dflt)
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

/* ---- tables ----------------------------------------------------------- */

static void setup_gdt_idt(void)
{
    gdt[1] = 0x00af9a000000ffffULL; /* kernel code64 */
    gdt[2] = 0x00cf92000000ffffULL; /* kernel data */
    gdt[3] = 0x00cff2000000ffffULL; /* user data, DPL3 */
    gdt[4] = 0x00affa000000ffffULL; /* user code64, DPL3 */
    for (int i = 0; i < MAX_CPUS; i++) {
        uint64_t base = (uint64_t)&tss[i], limit = sizeof(struct tss) - 1;
        tss[i].rsp[0] = (uint64_t)&istacks[i][ISTACK_SIZE];
        tss[i].ist[0] = (uint64_t)&fstacks[i][FSTACK_SIZE];
        tss[i].iomap_base = sizeof(struct tss);
        gdt[5 + 2 * i] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ULL << 40) |
                         (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
        gdt[6 + 2 * i] = base >> 32;
    }
    for (int v = 0; v < 256; v++) {
        uint64_t off = isr_table[v];
        uint64_t attr = v == 3 ? 0xEE : 0x8E; /* int3 may come from CPL3 */
        uint64_t ist = v == 2 || v == 8 || v == 18 ? 1 : 0;
        idt[2 * v] = (off & 0xffff) | ((uint64_t)SEL_KCODE << 16) | (ist << 32) | (attr << 40) |
                     (((off >> 16) & 0xffff) << 48);
        idt[2 * v + 1] = off >> 32;
    }
}

static void load_tables(int cpu)
{
    struct __attribute__((packed)) {
        uint16_t limit;
        uint64_t base;
    } g = {sizeof gdt - 1, (uint64_t)gdt}, i = {sizeof idt - 1, (uint64_t)idt};
    __asm__ volatile("lgdt %0" ::"m"(g));
    __asm__ volatile("pushq %0; lea 1f(%%rip), %%rax; pushq %%rax; lretq; 1:"
                     ::"i"(SEL_KCODE) : "rax", "memory");
    __asm__ volatile("mov %0, %%ds; mov %0, %%es; mov %0, %%ss; mov %1, %%fs; mov %1, %%gs"
                     ::"r"(SEL_KDATA), "r"(0));
    __asm__ volatile("ltr %0" ::"r"((uint16_t)(SEL_TSS0 + 16 * cpu)));
    __asm__ volatile("lidt %0" ::"m"(i));
}

/* Every byte of RAM (and the LAPIC page) is user-accessible: the tests
 * run in CPL3 and touch guest memory and the LAPIC directly. */
static void setup_paging(void)
{
    uint64_t gib = (ram_top + (1ULL << 30) - 1) >> 30;
    if (gib < 4)
        gib = 4;
    if (gib > MAX_GIB)
        gib = MAX_GIB;
    for (uint64_t g = 0; g < gib; g++) {
        pdpt[g] = (uint64_t)pds[g] | 7;
        for (uint64_t j = 0; j < 512; j++)
            pds[g][j] = ((g << 30) | (j << 21)) | 0x87;
    }
    pml4[0] = (uint64_t)pdpt | 7;
    __asm__ volatile("mov %0, %%cr3" ::"r"(pml4) : "memory");
}

/* ---- boot data -------------------------------------------------------- */

static void read_boot_params(const uint8_t *bp)
{
    const char *cl = (const char *)(uint64_t) * (const uint32_t *)(bp + 0x228);
    size_t i = 0;
    if (cl)
        for (; cl[i] && i + 1 < sizeof cmdline; i++)
            cmdline[i] = cl[i];
    cmdline[i] = 0;
    int n = bp[0x1e8];
    for (int e = 0; e < n && e < 128; e++) {
        const uint8_t *ent = bp + 0x2d0 + 20 * e;
        uint64_t addr = *(const uint64_t *)ent, size = *(const uint64_t *)(ent + 8);
        if (*(const uint32_t *)(ent + 16) == 1 && addr + size > ram_top)
            ram_top = addr + size;
    }
}

static bool sum_ok(const uint8_t *p, uint32_t len)
{
    uint8_t s = 0;
    for (uint32_t i = 0; i < len; i++)
        s += p[i];
    return s == 0;
}

static const uint8_t *find_rsdp(uint64_t hint)
{
    if (hint && !strncmp((const char *)hint, "RSD PTR ", 8))
        return (const uint8_t *)hint;
    for (uint64_t a = 0xE0000; a < 0x100000; a += 16)
        if (!strncmp((const char *)a, "RSD PTR ", 8) && sum_ok((const uint8_t *)a, 20))
            return (const uint8_t *)a;
    return NULL;
}

/* CPUs from the MADT: Processor Local APIC (type 0) and x2APIC (type 9). */
static int parse_madt(uint64_t rsdp_hint)
{
    const uint8_t *rsdp = find_rsdp(rsdp_hint);
    if (!rsdp)
        return 0;
    const uint8_t *xsdt = (const uint8_t *)*(const uint64_t *)(rsdp + 24);
    uint32_t xlen = *(const uint32_t *)(xsdt + 4);
    if (strncmp((const char *)xsdt, "XSDT", 4) || !sum_ok(xsdt, xlen))
        fail("XSDT missing or has a bad checksum");
    for (uint32_t off = 36; off + 8 <= xlen; off += 8) {
        const uint8_t *t = (const uint8_t *)*(const uint64_t *)(xsdt + off);
        if (strncmp((const char *)t, "APIC", 4))
            continue;
        uint32_t len = *(const uint32_t *)(t + 4);
        if (!sum_ok(t, len))
            fail("MADT has a bad checksum");
        int n = 0;
        for (uint32_t p = 44; p + 2 <= len && t[p + 1] >= 2; p += t[p + 1]) {
            uint32_t id, flags;
            if (t[p] == 0) {
                id = t[p + 3];
                flags = *(const uint32_t *)(t + p + 4);
            } else if (t[p] == 9) {
                id = *(const uint32_t *)(t + p + 4);
                flags = *(const uint32_t *)(t + p + 8);
            } else {
                continue;
            }
            if ((flags & 1) && n < MAX_CPUS)
                n++;
            (void)id;
        }
        return n;
    }
    fail("no MADT in the ACPI tables");
}

/* ---- traps ------------------------------------------------------------ */

static int current_cpu(uint64_t rsp)
{
    uint64_t ib = (uint64_t)istacks, kb = (uint64_t)kstacks, fb = (uint64_t)fstacks;
    if (rsp >= ib && rsp < ib + sizeof istacks)
        return (int)((rsp - ib) / ISTACK_SIZE);
    if (rsp >= fb && rsp < fb + sizeof fstacks)
        return (int)((rsp - fb) / FSTACK_SIZE);
    if (rsp >= kb && rsp < kb + sizeof kstacks)
        return (int)((rsp - kb) / KSTACK_SIZE);
    return 0;
}

static uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}

static void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

static void service(struct trap_frame *f, int cpu)
{
    switch (f->rax) {
    case SVC_DONE:
        leave_user(cpus[cpu].saved_ksp);
    case SVC_WRMSR:
        wrmsr((uint32_t)f->rdi, f->rsi);
        break;
    case SVC_RDMSR:
        f->rax = rdmsr((uint32_t)f->rdi);
        break;
    case SVC_PUTS:
        lock_print();
        puts_con((const char *)f->rdi);
        unlock_print();
        break;
    case SVC_BENCH_OUT:
        /* Port I/O from CPL3 raises #GP on this host even with IOPL=3, so
         * the benchmark's OUT loop runs here. */
        for (uint64_t i = f->rdi; i; i--)
            outb(0x502, 0);
        break;
    case SVC_PIO_IN: case SVC_PIO_OUT: {
        uint16_t port = (uint16_t)f->rdi;
        uint64_t bytes = f->rdi >> 16, v = f->rsi;
        bool in = f->rax == SVC_PIO_IN;
        if (bytes == 1 && in)
            __asm__ volatile("inb %w1, %b0" : "=a"(v) : "Nd"(port));
        else if (bytes == 2 && in)
            __asm__ volatile("inw %w1, %w0" : "=a"(v) : "Nd"(port));
        else if (bytes == 4 && in)
            __asm__ volatile("inl %w1, %k0" : "=a"(v) : "Nd"(port));
        else if (bytes == 1)
            __asm__ volatile("outb %b0, %w1" ::"a"(v), "Nd"(port));
        else if (bytes == 2)
            __asm__ volatile("outw %w0, %w1" ::"a"(v), "Nd"(port));
        else if (bytes == 4)
            __asm__ volatile("outl %k0, %w1" ::"a"(v), "Nd"(port));
        else
            fail("cpu %d: port I/O of %lu bytes", cpu, bytes);
        if (in)
            f->rax = bytes == 1 ? (uint8_t)v : bytes == 2 ? (uint16_t)v : (uint32_t)v;
        break;
    }
    case SVC_HLT:
        /* The caller's condition is checked here, with interrupts off, and
         * STI's one-instruction shadow makes "check, then halt" atomic: an
         * interrupt that lands between a check in user mode and this
         * service would be taken before the halt, and nothing would be left
         * to wake it (seen under migration, where the vCPU waits for pages
         * right there). The interrupt that ends the halt is taken nested in
         * this service, and the service returns after it. */
        if (*(volatile uint64_t *)f->rdi == f->rsi)
            __asm__ volatile("sti; hlt; cli" ::: "memory");
        break;
    case SVC_UART_THRI:
        /* Enabling THRI with an empty transmitter raises the interrupt. */
        lock_print();
        outb(COM1 + UART_MCR, 0x03 | UART_MCR_OUT2);
        outb(COM1 + UART_IER, 0);
        outb(COM1 + UART_IER, 0x02);
        unlock_print();
        break;
    default:
        fail("cpu %d: unknown service %lu", cpu, f->rax);
    }
    f->rip += 2;
}

static const char *const stage_names[] = {"not started", "tables loaded", "online",
                                          "parked",      "in user mode",  "back in kernel"};

void print_breadcrumbs(void)
{
    for (int c = 0; c < ncpus; c++) {
        struct percpu *p = &cpus[c];
        printk("breadcrumbs: cpu %d (APIC id %u): %s, %lu traps, last vector %lu at RIP %lx\n",
               c, p->apic_id, p->stage < 6 ? stage_names[p->stage] : "?", p->traps,
               p->last_vector, p->last_rip);
    }
}

void trap(struct trap_frame *f)
{
    int cpu = current_cpu((uint64_t)f);
    uint64_t v = f->vector;
    cpus[cpu].traps++;
    cpus[cpu].last_vector = v;
    cpus[cpu].last_rip = f->rip;
    if (v == 6 && (f->cs & 3) == 3) {
        service(f, cpu);
        return;
    }
    if (v == 2) { /* NMI: counted, and no EOI */
        cpus[cpu].nmis++;
        return;
    }
    if (v == VEC_TIMER) {
        cpus[cpu].ticks++;
    } else if (v == VEC_DEVICE) {
        /* Reading IIR and turning THRI off lowers the line before the EOI,
         * as a level-triggered handler must. */
        lock_print();
        (void)inb(COM1 + UART_IIR);
        outb(COM1 + UART_IER, 0);
        unlock_print();
        cpus[cpu].device_irqs++;
    } else if (v == VEC_VIRTIO) {
        /* Acknowledging the status lowers the level-triggered line before
         * the EOI. */
        if (virtio_irq_base) {
            volatile uint32_t *r = (volatile uint32_t *)virtio_irq_base;
            r[0x64 / 4] = r[0x60 / 4];
        }
        cpus[cpu].virtio_irqs++;
    } else if (v >= VEC_IPI_BASE && v < VEC_IPI_BASE + MAX_CPUS) {
        cpus[cpu].ipi_from[v - VEC_IPI_BASE]++;
    } else if (v == VEC_SPURIOUS) {
        return;
    } else if (v != VEC_GO) {
        uint64_t cr2;
        __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
        post(POST_FATAL);
        print_breadcrumbs();
        fail("cpu %d: unexpected exception %lu at RIP %lx (CS %lx, error %lx, CR2 %lx)", cpu,
             v, f->rip, f->cs, f->error, cr2);
    }
    lapic_write(0xB0, 0);
}

/* ---- SMP -------------------------------------------------------------- */

static void lapic_enable(void)
{
    lapic_write(0xF0, 0x100 | VEC_SPURIOUS);
}

static uint64_t ustack_top(int cpu)
{
    return (uint64_t)&ustacks[cpu][USTACK_SIZE];
}

static void run_user(int cpu)
{
    cpus[cpu].stage = STAGE_USER;
    post(POST_USER);
    enter_user(&cpus[cpu].saved_ksp, current->run, cpu, ustack_top(cpu));
    post(POST_BACK);
    cpus[cpu].stage = STAGE_BACK;
}

void kmain_ap(int slot)
{
    load_tables(slot);
    post(POST_AP_TABLES);
    cpus[slot].stage = STAGE_TABLES;
    lapic_enable();
    /* Slots follow arrival order, not APIC ids: each CPU says who it is. */
    cpus[slot].apic_id = lapic_read(0x20) >> 24;
    cpus[slot].online = 1;
    cpus[slot].stage = STAGE_ONLINE;
    __atomic_add_fetch(&ap_online, 1, __ATOMIC_SEQ_CST);
    cpus[slot].stage = STAGE_PARKED;
    post(POST_AP_PARKED);
    while (!go)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    run_user(slot);
    for (;;)
        __asm__ volatile("cli; hlt");
}

static void start_aps(void)
{
    if (ncpus <= 1)
        return;
    memcpy((void *)TRAMPOLINE, trampoline_start, (size_t)(trampoline_end - trampoline_start));
    *(volatile uint32_t *)(TRAMPOLINE + (trampoline_pml4 - trampoline_start)) =
        (uint32_t)(uint64_t)pml4;
    lapic_write(0x310, 0);
    lapic_write(0x300, 0x000C4500);                          /* INIT, all but self */
    lapic_write(0x300, 0x000C4600 | (TRAMPOLINE >> 12)); /* SIPI */
    uint64_t t0 = rdtsc();
    while (ap_online < ncpus - 1) {
        __asm__ volatile("pause");
        if (rdtsc() - t0 > 60000000000ULL * timeout_scale) {
            print_breadcrumbs();
            fail("only %d of %d application processors started", ap_online, ncpus - 1);
        }
    }
}

void kmain_bsp(const uint8_t *bp)
{
    post(POST_BSP_START);
    guest_image_end = (uint64_t)_end;
    read_boot_params(bp);
    char name[64];
    test_name = cmdline_get("test", name, sizeof name);
    if (!test_name) {
        test_name = "(none)";
        fail("no test=NAME on the command line");
    }
    for (const struct test *t = tests; t->name; t++)
        if (!strcmp(t->name, test_name))
            current = t;
    for (const struct test *t = litmus_tests; t->name; t++)
        if (!strcmp(t->name, test_name))
            current = t;
    for (const struct test *t = bench_tests; t->name; t++)
        if (!strcmp(t->name, test_name))
            current = t;
    if (!current)
        fail("unknown test");
    uint64_t slow = arg_or("slow", 1);
    timeout_scale = slow == 0 ? 1 : slow > 1000 ? 1000 : slow; /* no overflow below */
    inject = arg_or("inject", 0) ? 1 : 0;
    setup_paging();
    setup_gdt_idt();
    load_tables(0);
    post(POST_BSP_TABLES);
    lapic_enable();
    int n = parse_madt(*(const uint64_t *)(bp + 0x70));
    ncpus = n > 0 ? n : 1;
    cpus[0].apic_id = lapic_read(0x20) >> 24;
    cpus[0].online = 1;
    cpus[0].stage = STAGE_ONLINE;
    start_aps();
    post(POST_BSP_APS_UP);
    if (current->setup)
        current->setup();
    go = 1;
    lapic_write(0x300, 0x000C4000 | VEC_GO); /* wake the parked APs */
    run_user(0);
    if (test_failed) {
        print_breadcrumbs();
        fail("%s", fail_reason);
    }
    printk("TESTGUEST PASS %s\n", test_name);
    guest_exit(0);
}
