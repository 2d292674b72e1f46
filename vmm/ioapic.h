/* IOAPIC model (82093AA-style, 24 pins, MMIO at 0xFEC00000), on the node
 * that owns the devices. Pure state machine like the LAPIC: the caller
 * serialises access and routes the APIC messages it produces to whichever
 * vCPU (on whichever node) they address.
 * Invariant: a level-triggered pin with Remote IRR set is not re-delivered
 * until the matching EOI arrives.
 */
#ifndef AMALGAM_VMM_IOAPIC_H
#define AMALGAM_VMM_IOAPIC_H

#include "platform/platform.h"
#include <stdint.h>

#include "vmm/apic_bus.h"

#define IOAPIC_DEFAULT_BASE PLATFORM_IOAPIC_BASE
#define IOAPIC_MMIO_SIZE PLATFORM_IOAPIC_SIZE
#define IOAPIC_PINS PLATFORM_IOAPIC_PINS

struct ioapic {
    uint32_t id;
    uint32_t ioregsel;
    uint64_t redir[IOAPIC_PINS];
    uint32_t pin_level;   /* bit per pin: current input line level */
    uint32_t remote_irr;  /* bit per pin (level-triggered in service) */
};

/* Messages produced by one call (at most one per pin). */
struct ioapic_out {
    int n;
    struct apic_msg msg[IOAPIC_PINS];
};

void ioapic_init(struct ioapic *io, uint32_t id);
/* offset: 0x00 IOREGSEL, 0x10 IOWIN; 32-bit accesses. A write returns
 * -EINVAL when it was ignored (no such register, or a read-only one) and
 * -ERANGE when it left an unmasked entry with vector 0-15 (kept, as on
 * hardware, where the receiving LAPIC refuses it), else 0. */
int ioapic_mmio_read(struct ioapic *io, uint64_t offset, uint32_t *val);
int ioapic_mmio_write(struct ioapic *io, uint64_t offset, uint32_t val, struct ioapic_out *out);
/* A device drives a pin; an edge pin delivers on 0->1, a level pin while high
 * (and not Remote-IRR). -EINVAL for a pin out of range. */
int ioapic_set_irq(struct ioapic *io, int pin, int level, struct ioapic_out *out);
/* A LAPIC EOI'd a level-triggered vector: clear Remote IRR on matching
 * pins, re-deliver those still asserted. */
void ioapic_eoi(struct ioapic *io, uint8_t vector, struct ioapic_out *out);

#endif
