/* Internal to vmm/: one node of a multi-node machine. The guest's memory is
 * kept coherent by the DSM (dsm/host.h) over the node's interconnect;
 * interrupts for vCPUs on other nodes travel as APIC messages; port and
 * IOAPIC accesses from vCPUs not on node 0 are forwarded to node 0, which
 * owns the devices, and wait for its answer; a stop anywhere stops all. */
#ifndef AMALGAM_VMM_CLUSTER_H
#define AMALGAM_VMM_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#include "interconnect/interconnect.h"
#include "vmm/apic_bus.h"

struct vm;
struct vcpu;

/* Message types of the VMM (0x60-0x7f). */
enum vm_msg_type {
    VM_T_IPI = 0x60,      /* payload: struct apic_msg */
    VM_T_IO_REQ = 0x61,   /* arg0: vcpu<<32 | mmio<<25 | write<<24 | size<<16 | port; arg1: value or MMIO address<<32|value */
    VM_T_IO_REPLY = 0x62, /* arg0: vcpu; arg1: value */
    VM_T_STOP = 0x63,     /* arg0: reason; arg1: status */
    VM_T_TSC = 0x64,      /* node 0 -> all at start: arg0: host TSC reference; arg1: host boot tag */
    VM_T_EOI = 0x65,      /* -> node 0: arg0: a level-triggered vector a LAPIC EOI'd */
};

int cluster_register_types(struct ic_types *t);
/* Attaches the DSM to guest memory, starts the node's message loop and
 * makes guest TSC agree across nodes (node 0 picks the reference, the
 * others wait for it): called before any vCPU thread runs. */
int cluster_start(struct vm *vm, char *err, size_t errlen);
void cluster_stop(struct vm *vm);

/* Sends m to the other nodes whose vCPUs it may address. */
void cluster_send_ipi(struct vm *vm, const struct apic_msg *m);
/* Runs a device access on node 0 and waits for the result. */
uint32_t cluster_forward_io(struct vcpu *v, uint16_t port, int size, bool write, uint32_t val);
uint32_t cluster_forward_mmio(struct vcpu *v, uint64_t addr, bool write, uint32_t val);
/* Hands a level-triggered EOI to node 0, whose IOAPIC is the machine's. */
void cluster_forward_eoi(struct vm *vm, uint8_t vector);
/* Tells every other node that the run ended. */
void cluster_broadcast_stop(struct vm *vm);

#endif
