/* Internal to vmm/: live vCPU migration between nodes (migrate.c), and the
 * interrupt routing that goes with it.
 *
 * A move: node 0 hands out the next epoch and announces (vcpu, node,
 * epoch) to every node (VM_T_ROUTE); every node applies the moves in
 * epoch order (migration/migration.h). The node the vCPU was on (A), on
 * applying it, asks the vCPU's thread to leave: at its next safe point
 * the thread finishes its exit, saves its KVM state and LAPIC, and sends
 * them (VM_T_MIG_STATE, in parts). The new node (B) holds every interrupt
 * for the vCPU from the moment it applies the move until the state has
 * arrived; then the vCPU's thread there (created at start, parked)
 * restores it, takes the held interrupts and runs, and B tells node 0
 * (VM_T_MIG_DONE). Node 0 starts the next move only after that.
 *
 * Interrupts: an APIC message carries its sender's epoch; at a node, a
 * vCPU is answered for by the node where it was at that epoch, which
 * delivers it (the vCPU is here), forwards it to where the vCPU is now
 * (it left), or holds it (it is arriving). A message from an epoch this
 * node has not reached waits until it has. Invariant: each message
 * reaches each vCPU it addresses exactly once.
 *
 * Lock order: vm->routes_lock, then a vCPU's lock. */
#ifndef AMALGAM_VMM_MIGRATE_H
#define AMALGAM_VMM_MIGRATE_H

#include <stdint.h>

#include "interconnect/interconnect.h"
#include "vmm/apic_bus.h"

struct vm;
struct vcpu;

/* State bytes per VM_T_MIG_STATE message (IC_MAX_PAYLOAD is 4096). */
#define MIGRATE_PART_BYTES 3584

enum migrate_msg_type {
    VM_T_ROUTE = 0x6a,     /* node 0 -> all: arg0 epoch; arg1 vcpu << 8 | node */
    VM_T_MIG_STATE = 0x6b, /* old node -> new: arg0 epoch; arg1 see migrate.c; payload a part */
    VM_T_MIG_DONE = 0x6c,  /* new node -> node 0: arg0 epoch; payload struct mig_done */
    VM_T_MIG_FAULTS = 0x6d, /* new node -> node 0, 100 ms later: arg0 epoch; arg1 f10 | f100 << 32 */
    VM_T_MIG_AFFINITY = 0x6e, /* node -> node 0, each window: arg0 vcpu; payload its DSM
                               * faults by home node there (uint32 x nodes) */
};

int migrate_register_types(struct ic_types *t);
int migrate_init(struct vm *vm);   /* cluster_attach: the routing table from the placement */
void migrate_free(struct vm *vm);
int migrate_attach(struct vm *vm); /* cluster_attach: the handlers */

/* An APIC message from this node (a vCPU or the IOAPIC here): delivered
 * to the vCPUs here it addresses, sent on to the nodes of the others. */
void migrate_deliver(struct vm *vm, const struct apic_msg *m);
/* VM_T_IPI from another node (arg0: its epoch; arg1: 0, or 1 + the one
 * vCPU it is forwarded to). */
void migrate_on_ipi(struct vm *vm, const struct ic_hdr *h, const struct apic_msg *m);

/* In the vCPU's thread, at a safe point: leave for the node asked (0), or
 * nothing to do (1). */
int migrate_leave_if_asked(struct vcpu *v);
/* In a vCPU thread whose vCPU is elsewhere: waits for it to arrive (then
 * restores it: 0) or for a pause or the end of the run (1). */
int migrate_wait_arrival(struct vcpu *v);
struct mig_done;
struct event_loop;
/* Node 0, in vm_run: --trace and the --migrate schedule on its loop. */
int migrate_start(struct vm *vm, struct event_loop *loop, char *err, size_t n);
/* On the message loop, every turn: fault counts after arrivals, and the
 * affinity policy's reports. */
void migrate_poll(struct vm *vm);
/* The downtime summary; closes the trace. */
void migrate_end(struct vm *vm);
/* Node 0: a move completed (from VM_T_MIG_DONE, or its own arrival). */
void migrate_take_done(struct vm *vm, uint64_t epoch, const struct mig_done *d);

#endif
