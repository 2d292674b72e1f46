/* Internal to vmm/: one node of a multi-node machine. The guest's memory is
 * kept coherent by the DSM (dsm/host.h) over the node's interconnect;
 * interrupts for vCPUs on other nodes travel as APIC messages; an access
 * to a device another node owns is forwarded by the bus (bus.h) to that
 * node's device thread, and the vCPU waits for its answer, up to a
 * deadline; a stop anywhere stops all. */
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
    VM_T_IO_REQ = 0x61,   /* -> a device's owner: payload: struct bus_access */
    VM_T_IO_REPLY = 0x62, /* arg0: failed<<32 | vcpu; arg1: the value read */
    VM_T_STOP = 0x63,     /* arg0: reason; arg1: status */
    VM_T_TSC = 0x64,      /* node 0 -> all at start: arg0: host TSC reference; arg1: host boot tag */
    VM_T_EOI = 0x65,      /* -> the IOAPIC's owner: arg0: a level-triggered vector a LAPIC EOI'd */
};

int cluster_register_types(struct ic_types *t);
/* Registers the node's message handlers (one per type) with its
 * interconnect, points the device bus's proxies at it and starts the
 * device thread: everything of cluster_start but the DSM, the message
 * loop and the TSC (unit tests over the loopback transport use it alone).
 * cluster_stop undoes it. */
int cluster_attach(struct vm *vm);
/* Attaches the DSM to guest memory, starts the node's message loop and
 * makes guest TSC agree across nodes (node 0 picks the reference, the
 * others wait for it): called before any vCPU thread runs. */
int cluster_start(struct vm *vm, char *err, size_t errlen);
void cluster_stop(struct vm *vm);

/* Hands a level-triggered EOI to the IOAPIC's owner (it routes the
 * machine's interrupts), without waiting. */
void cluster_forward_eoi(struct vm *vm, uint8_t vector);
/* Tells every other node that the run ended. */
void cluster_broadcast_stop(struct vm *vm);

/* ---- between the cluster's files ---- */

struct bus_access;
/* A message the protocol does not allow: counted, reported once (cluster.c). */
void cluster_bad_message(struct vm *vm, const struct ic_hdr *h, const char *why);
/* cluster_io.c: the bus's forward op (waits for the owner's answer, up to
 * a deadline: -ETIMEDOUT), the owner's side (queue, device thread) and the
 * answer's arrival. */
int cluster_forward(void *ctx, void *who, int owner, struct bus_access *a);
int cluster_start_devices(struct vm *vm);
void cluster_stop_devices(struct vm *vm);
/* Both are the interconnect handlers (ctx: the vm) of VM_T_IO_REQ and
 * VM_T_IO_REPLY. */
void cluster_queue_io(void *ctx, const struct ic_hdr *h, const void *payload);
void cluster_io_answered(void *ctx, const struct ic_hdr *h, const void *payload);
/* cluster_tsc.c: makes guest TSC agree with node 0's before vCPUs run. */
int cluster_sync_tsc(struct vm *vm, char *err, size_t errlen);
/* cluster_stats.c: the --stats line. */
void cluster_print_stats(const struct vm *vm);

#endif
