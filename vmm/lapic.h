/* Local APIC model: one per vCPU, entirely in user space (no in-kernel
 * irqchip), so that an IPI to a vCPU on another node is only a message.
 *
 * This is a pure state machine: it never blocks, takes no locks, reads no
 * clock. The caller (the vCPU loop) holds the vCPU's lock, passes the
 * current CLOCK_MONOTONIC time in ns, and carries out the effects a call
 * reports (send an APIC message, forward an EOI, re-arm the host timer).
 * Both xAPIC (MMIO at apic_base) and x2APIC (MSRs 0x800-0x8ff) are modelled;
 * IA32_APIC_BASE (0x1b) and IA32_TSC_DEADLINE (0x6e0) too.
 *
 * The whole state is plain data: lapic_save()/lapic_restore() turn it into a
 * snapshot with timers expressed relative to "now", so a vCPU can move to
 * another host whose clock differs.
 *
 * Invariants: a vector is in at most one of IRR (pending) and ISR (in
 * service) at a time for edge interrupts; vectors 0-15 are never accepted
 * (they set the ESR illegal-vector bit instead); the timer fires only while
 * its LVT entry is unmasked and the APIC is software-enabled.
 */
#ifndef AMALGAM_VMM_LAPIC_H
#define AMALGAM_VMM_LAPIC_H

#include "platform/platform.h"
#include <stdbool.h>
#include <stdint.h>

#include "vmm/apic_bus.h"

#define LAPIC_DEFAULT_BASE PLATFORM_LAPIC_BASE
#define LAPIC_MMIO_SIZE PLATFORM_LAPIC_SIZE
/* Timer input clock before the divider: one tick per nanosecond. */
#define LAPIC_TIMER_FREQ_HZ 1000000000ULL

#define MSR_IA32_APICBASE 0x1B
#define MSR_IA32_TSC_DEADLINE 0x6E0
#define MSR_X2APIC_FIRST 0x800
#define MSR_X2APIC_LAST 0x8FF

#define APICBASE_BSP (1ULL << 8)
#define APICBASE_EXTD (1ULL << 10) /* x2APIC mode */
#define APICBASE_EN (1ULL << 11)

enum lapic_lvt {
    LVT_CMCI, LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1,
    LVT_ERROR, LVT_COUNT
};

enum lapic_timer_mode { TIMER_ONESHOT = 0, TIMER_PERIODIC = 1, TIMER_TSC_DEADLINE = 2 };

/* Maps guest TSC to host monotonic ns: tsc = tsc_ref + (ns - ns_ref) * tsc_khz / 1e6. */
struct lapic_clock {
    uint64_t tsc_khz;
    uint64_t tsc_ref;
    uint64_t ns_ref;
};

struct lapic {
    uint32_t id;           /* APIC id (x2APIC id; xAPIC shows id & 0xff) */
    uint64_t apic_base;    /* IA32_APIC_BASE value */
    uint32_t tpr;
    uint32_t ldr, dfr, svr, esr, esr_pending;
    uint32_t icr_lo, icr_hi;
    uint32_t lvt[LVT_COUNT];
    uint32_t timer_initial; /* TMICT */
    uint32_t timer_divide;  /* TDCR as written */
    uint32_t irr[8], isr[8], tmr[8];
    uint64_t timer_start_ns;    /* when TMICT was (re)loaded */
    uint64_t timer_deadline_ns; /* 0: timer not armed */
    uint64_t tsc_deadline;      /* TSC-deadline mode value, 0 = disarmed */
    struct lapic_clock clock;
    /* Events that are not vectors; the vCPU loop consumes them. */
    bool nmi_pending;
    bool init_pending;
    bool sipi_pending;
    uint8_t sipi_vector;
};

/* What a register write asks the caller to do. */
struct lapic_effects {
    bool send;              /* msg is an IPI to route (ICR write) */
    struct apic_msg msg;
    int eoi_vector;         /* >= 0: EOI of a level-triggered vector, for the IOAPIC */
    bool timer_changed;     /* the deadline changed: re-arm the host timer */
    bool bad_vector;        /* an IPI with vector 0-15: not sent (ESR set) */
    bool bad_mode;          /* an IPI with a reserved delivery mode: not sent */
};

/* Power-on state. bsp sets APICBASE_BSP. */
void lapic_init(struct lapic *a, uint32_t apic_id, bool bsp, const struct lapic_clock *clk);
/* INIT: registers to their INIT values; id, apic_base and clock are kept. */
void lapic_init_reset(struct lapic *a);

/* xAPIC MMIO; offset within the 4 KiB page. Only 32-bit aligned accesses
 * are defined; others read 0 / are ignored. A write returns -EINVAL when
 * it was ignored (a reserved or read-only register, misaligned, or xAPIC
 * MMIO in x2APIC mode), else 0. */
int lapic_mmio_read(struct lapic *a, uint64_t offset, uint32_t *val, uint64_t now_ns);
int lapic_mmio_write(struct lapic *a, uint64_t offset, uint32_t val, uint64_t now_ns,
                     struct lapic_effects *fx);

/* MSRs for which lapic_handles_msr() is true. -EINVAL means the guest must
 * get #GP (x2APIC MSR while not in x2APIC mode, read-only or reserved
 * register, reserved bits set, illegal APIC_BASE transition). */
bool lapic_handles_msr(uint32_t msr);
int lapic_msr_read(struct lapic *a, uint32_t msr, uint64_t *val, uint64_t now_ns);
int lapic_msr_write(struct lapic *a, uint32_t msr, uint64_t val, uint64_t now_ns,
                    struct lapic_effects *fx);

/* Is this APIC a destination of msg (destination mode, logical
 * flat/cluster or x2APIC cluster, broadcast, shorthands)? */
bool lapic_match(const struct lapic *a, const struct apic_msg *m);
/* Accepts a message addressed to this APIC: FIXED/LOWEST set IRR (and TMR
 * for level), NMI/INIT/SIPI set the flags above. An INIT level de-assert
 * is ignored. A message to a hardware-disabled APIC is dropped. */
void lapic_deliver(struct lapic *a, const struct apic_msg *m);

/* Highest pending vector that may be injected now (above the processor
 * priority), or -1. */
int lapic_pending_irq(const struct lapic *a);
/* The vCPU loop injected vector: IRR -> ISR. */
void lapic_irq_injected(struct lapic *a, int vector);
/* The reverse, for an interrupt handed to KVM that the guest never took
 * (a vCPU saved to move): back from in-service to requested. False if
 * the vector is not in service. */
bool lapic_irq_uninject(struct lapic *a, int vector);

/* Fires the timer if its deadline is at or before now (sets IRR, reloads a
 * periodic timer). Returns the next deadline in ns, 0 when disarmed. */
uint64_t lapic_timer_poll(struct lapic *a, uint64_t now_ns);

/* CR8 is TPR[7:4]; KVM reports it in kvm_run without an in-kernel APIC. */
void lapic_set_cr8(struct lapic *a, uint64_t cr8);
uint64_t lapic_get_cr8(const struct lapic *a);

/* Snapshot with timer state relative to now_ns; restore re-bases it. */
struct lapic_snapshot {
    struct lapic regs;          /* timer_* absolute fields are unused here */
    uint64_t timer_remaining_ns; /* 0: disarmed */
    uint64_t timer_elapsed_ns;   /* since TMICT load, for the current count */
};
void lapic_save(const struct lapic *a, uint64_t now_ns, struct lapic_snapshot *s);
void lapic_restore(struct lapic *a, const struct lapic_snapshot *s, uint64_t now_ns);

#endif
