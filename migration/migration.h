/* migration: moving a running vCPU from one node to another.
 *
 * The design is in ../shared/DESIGN.md ("vCPU state and migration"): every
 * node creates every vCPU at start, parked (vmm/vcpu_state.h: GONE); the
 * old node pauses the vCPU, saves its KVM state (vmm/kvm.h:
 * kvm_vcpu_save) and its LAPIC (vmm/state.h), and sends them; the new
 * node restores them and runs it; memory follows through the DSM.
 *
 * What is here so far is the part every node must agree on: where each
 * vCPU runs. The table changes by epoch: a move is one new epoch, and a
 * node applies an update only if it is newer than what it has, so updates
 * that arrive late or twice change nothing. An interrupt that reaches a
 * node the vCPU has left is forwarded by that node along its own newer
 * table, never dropped (the moving itself is issue 15).
 *
 * Pure: no locks, no I/O; the caller serialises.
 */
#ifndef AMALGAM_MIGRATION_MIGRATION_H
#define AMALGAM_MIGRATION_MIGRATION_H

#include <stdbool.h>
#include <stdint.h>

#define MIGRATION_MAX_VCPUS 255

struct vcpu_routes {
    uint64_t epoch;                       /* 0 before any move */
    int nr_vcpus, nnodes;
    uint8_t node[MIGRATION_MAX_VCPUS];    /* where each vCPU runs */
    uint64_t moved_at[MIGRATION_MAX_VCPUS]; /* the epoch of its last move */
};

/* The placement at start (placement[i] is vCPU i's node). -EINVAL for
 * counts or nodes out of range. */
int routes_init(struct vcpu_routes *r, int nr_vcpus, int nnodes, const uint8_t *placement);
/* This node decides a move: a new epoch; returns it, or -EINVAL. */
int64_t routes_move(struct vcpu_routes *r, int vcpu, int node);
/* A move another node announced, at its epoch. 1 if applied, 0 if this
 * table knew of it already (a stale or repeated update), -EINVAL if the
 * update is impossible. */
int routes_apply(struct vcpu_routes *r, uint64_t epoch, int vcpu, int node);
/* Where to send something for vcpu (an IPI, its state): its node now. */
int routes_node_of(const struct vcpu_routes *r, int vcpu);

#endif
