/* The freestanding SMP test guest (see tests/guest/README in docs/testing).
 *
 * CPL0 sets up (GDT/TSS/IDT per CPU, page tables giving user access to all
 * RAM, LAPIC, APs through INIT/SIPI); the tests run in CPL3, where this
 * host's KVM runs code natively. CPL3 enters CPL0 only through `ud2`
 * (#UD) with a service number in RAX, or through interrupts. */
#ifndef TESTGUEST_H
#define TESTGUEST_H

#define MAX_CPUS 64
#define KSTACK_SIZE 16384
#define ISTACK_SIZE 16384
#define FSTACK_SIZE 8192 /* IST stack for #DF, NMI and #MC */
#define USTACK_SIZE 65536
#define TRAMPOLINE 0x8000

/* POST codes (port 0x80): where a CPU got to in kernel mode. The VMM keeps
 * each vCPU's last few and prints them if the guest triple-faults, which
 * a breadcrumb in guest memory could not tell. */
#define POST_PORT 0x80
#define POST_BSP_START 0x01
#define POST_BSP_TABLES 0x02
#define POST_BSP_APS_UP 0x03
#define POST_AP_REAL 0x10   /* trampoline, real mode */
#define POST_AP_PAGING 0x11 /* PE and PG set */
#define POST_AP_LONG 0x12   /* 64-bit code */
#define POST_AP_STACK 0x13  /* own kernel stack */
#define POST_AP_TABLES 0x14 /* own GDT, TSS, IDT */
#define POST_AP_PARKED 0x15 /* online, waiting for the go IPI */
#define POST_USER 0x20      /* entering user mode (any CPU) */
#define POST_BACK 0x21      /* back from user mode */
#define POST_FATAL 0xee     /* an exception it cannot handle */

/* GDT selectors */
#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UDATA 0x18
#define SEL_UCODE 0x20
#define SEL_TSS0 0x28

/* ud2 services (RAX) */
#define SVC_DONE 1
#define SVC_WRMSR 2
#define SVC_RDMSR 3
#define SVC_PUTS 4      /* RDI: NUL-terminated string */
#define SVC_BENCH_OUT 5 /* RDI: count of OUTs to the bench port, from CPL0 */
#define SVC_UART_THRI 6 /* raise the UART's transmit-empty interrupt (IRQ 4) */
/* Port I/O for user mode (IOPL 3 is not honoured everywhere: PVM runs the
 * guest kernel outside ring 0). RDI: port | bytes << 16 (1, 2 or 4). */
#define SVC_PIO_IN 7    /* returns the value read */
#define SVC_PIO_OUT 8   /* RSI: the value */
#define SVC_HLT 9       /* if *rdi == rsi: sti; hlt, returning after the next interrupt */

/* Vectors */
#define VEC_TIMER 0x30
#define VEC_IPI_BASE 0x40 /* + sender cpu */
#define VEC_DEVICE 0x90   /* the UART's IRQ 4 through the IOAPIC (ioapic test) */
#define VEC_VIRTIO 0x91   /* a virtio device's pin through the IOAPIC (virtio irq=1) */
#define VEC_SPURIOUS 0xff

#ifndef __ASSEMBLY__
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct trap_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
    uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error;
    uint64_t rip, cs, rflags, rsp, ss;
};

struct percpu {
    uint32_t apic_id;
    volatile uint32_t online;
    volatile uint64_t ticks;
    volatile uint64_t ipi_from[MAX_CPUS];
    volatile uint64_t nmis;
    volatile uint64_t device_irqs;
    volatile uint64_t virtio_irqs;
    uint64_t saved_ksp; /* kernel rsp while the CPU is in user mode */
    /* Breadcrumbs, printed when a test fails or a CPU takes a fault it
     * cannot survive: how far each CPU got, and its last trap. */
    volatile uint32_t stage; /* enum stage */
    volatile uint64_t traps;
    volatile uint64_t last_vector, last_rip;
} __attribute__((aligned(64)));

enum stage { STAGE_OFF, STAGE_TABLES, STAGE_ONLINE, STAGE_PARKED, STAGE_USER, STAGE_BACK };

extern struct percpu cpus[MAX_CPUS];
extern int ncpus;
extern uint8_t kstacks[MAX_CPUS][KSTACK_SIZE];
extern uint8_t istacks[MAX_CPUS][ISTACK_SIZE];

/* entry.S */
void enter_user(uint64_t *saved_ksp, void (*fn)(int), int cpu, uint64_t ustack_top);
void leave_user(uint64_t saved_ksp) __attribute__((noreturn));
extern char trampoline_start[], trampoline_end[], trampoline_pml4[];
extern uint64_t isr_table[256];

/* kernel.c */
void putc_con(char c);
void printk(const char *fmt, ...);
void guest_exit(int status) __attribute__((noreturn));
void fail(const char *fmt, ...) __attribute__((noreturn));
void print_breadcrumbs(void);
uint32_t lapic_read(uint32_t reg);
void lapic_write(uint32_t reg, uint32_t val);
const char *cmdline_get(const char *key, char *buf, size_t len);
/* KEY=N on the command line as a number, else dflt. */
uint64_t arg_or(const char *key, uint64_t dflt);
extern const char *test_name;
extern uint64_t ram_top;        /* end of the highest RAM range */
extern uint64_t guest_image_end;

/* user-mode helpers (user.c) */
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}
/* rdtsc after every earlier instruction has completed, so after earlier
 * loads have taken their values (LFENCE; RDTSC, as the SDM suggests): a
 * TSC read that must come after seeing another CPU's store. */
static inline uint64_t rdtsc_ordered(void)
{
    uint32_t lo, hi;
    __asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) :: "memory");
    return ((uint64_t)hi << 32) | lo;
}
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
static inline uint64_t svc(uint64_t nr, uint64_t a, uint64_t b)
{
    uint64_t ret;
    __asm__ volatile("ud2" : "=a"(ret) : "a"(nr), "D"(a), "S"(b) : "memory");
    return ret;
}
/* Port I/O from user mode, through the kernel's service (1, 2 or 4 bytes). */
static inline uint64_t upio_in(uint16_t port, int bytes)
{
    return svc(SVC_PIO_IN, port | (uint64_t)bytes << 16, 0);
}
static inline void upio_out(uint16_t port, int bytes, uint64_t v)
{
    svc(SVC_PIO_OUT, port | (uint64_t)bytes << 16, v);
}
void ubarrier(void);
void ufail(int cpu, const char *fmt, ...);
void uprint(const char *fmt, ...);
bool timed_out(uint64_t start, uint64_t gcycles);
extern uint64_t timeout_scale; /* slow=K on the command line */
/* inject=1 on the command line: each test's final check expects one more
 * than the right answer (a litmus test forbids the outcome seen most), so
 * that a run shows the check and the harness around it really fail. */
extern uint64_t inject;
extern volatile int test_failed;
extern char fail_reason[160];

/* tests.c */
typedef void (*test_fn)(int cpu);
struct test {
    const char *name;
    test_fn run;
    void (*setup)(void); /* CPL0, on the BSP before user mode; may be NULL */
};
extern const struct test tests[];
/* virtio.c */
/* The registers of the virtio device whose interrupt VEC_VIRTIO is: its
 * handler acknowledges what the interrupt status shows (0: none). */
extern volatile uint64_t virtio_irq_base;
void virtio_setup(void);
void virtio_run(int cpu);
void blkbench_setup(void);
void blkbench_run(int cpu);
extern const struct test litmus_tests[];
extern const struct test bench_tests[];

/* shared by kernel.c and tests.c */
void vformat(void (*out)(char), const char *fmt, __builtin_va_list ap);
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
#endif
#endif
