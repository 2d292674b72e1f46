/* The virtual APIC bus: what an ICR write, an IOAPIC redirection entry or an
 * MSI puts on the wire. A message is a plain value so that it can cross
 * nodes unchanged: an IPI to a vCPU on another node is just this struct in
 * a network message.
 */
#ifndef AMALGAM_VMM_APIC_BUS_H
#define AMALGAM_VMM_APIC_BUS_H

#include <stdint.h>

enum apic_delivery {
    APIC_DM_FIXED = 0,
    APIC_DM_LOWEST = 1,
    APIC_DM_SMI = 2,
    APIC_DM_NMI = 4,
    APIC_DM_INIT = 5,
    APIC_DM_SIPI = 6,
    APIC_DM_EXTINT = 7,
};

enum apic_shorthand {
    APIC_SH_NONE = 0,
    APIC_SH_SELF = 1,
    APIC_SH_ALL = 2,      /* all including self */
    APIC_SH_OTHERS = 3,   /* all excluding self */
};

#define APIC_BROADCAST_X2 0xFFFFFFFFu
#define APIC_BROADCAST_XAPIC 0xFFu

struct apic_msg {
    uint32_t dest;         /* physical APIC id or logical mask */
    uint32_t src_id;       /* sender's APIC id, for the shorthands */
    uint8_t vector;
    uint8_t delivery;      /* enum apic_delivery */
    uint8_t dest_logical;  /* 1: logical destination mode */
    uint8_t shorthand;     /* enum apic_shorthand */
    uint8_t level;         /* 1 assert, 0 de-assert (INIT level de-assert) */
    uint8_t trigger_level; /* 1 level-triggered, 0 edge */
    uint8_t x2apic;        /* 1: dest uses x2APIC (32-bit) format */
    uint8_t pad;
};

#endif
