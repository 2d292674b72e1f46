/* migration: moving a running vCPU from one node to another.
 *
 * The design is in ../shared/DESIGN.md ("vCPU state and migration"): every
 * node creates every vCPU at start, parked (vmm/vcpu_state.h: GONE); the
 * old node pauses the vCPU, saves its KVM state (vmm/kvm.h:
 * kvm_vcpu_save) and its LAPIC (vmm/state.h), and sends them; the new
 * node restores them and runs it; memory follows through the DSM.
 *
 * What every node must agree on is where each vCPU runs. The table changes
 * by epoch: one move is one epoch, node 0 alone hands them out, one move at
 * a time, and every node applies them in order (a later one that arrives
 * first waits, one that arrives twice changes nothing), so every node's
 * table is the same sequence of moves, some nodes further along. A message
 * for a vCPU carries its sender's epoch, and the node where the vCPU was
 * at that epoch answers for it: delivers it, forwards it on, or keeps it
 * until the vCPU arrives. So nothing is dropped or delivered twice however
 * the messages and the moves interleave (vmm/migrate.c, docs/migration.md).
 *
 * Pure: no locks, no I/O; the caller serialises.
 */
#ifndef AMALGAM_MIGRATION_MIGRATION_H
#define AMALGAM_MIGRATION_MIGRATION_H

#include <stdbool.h>
#include <stdint.h>

#define MIGRATION_MAX_VCPUS 255
#define ROUTES_HISTORY 16

struct vcpu_routes {
    uint64_t epoch;                       /* 0 before any move */
    int nr_vcpus, nnodes;
    uint8_t node[MIGRATION_MAX_VCPUS];    /* where each vCPU runs */
    uint64_t moved_at[MIGRATION_MAX_VCPUS]; /* the epoch of its last move */
    /* Each vCPU's last ROUTES_HISTORY moves, oldest overwritten first: where
     * it was at an earlier epoch (routes_node_at). */
    struct { uint64_t epoch; uint8_t node; } hist[MIGRATION_MAX_VCPUS][ROUTES_HISTORY];
    uint32_t nhist[MIGRATION_MAX_VCPUS]; /* moves so far */
    uint8_t start[MIGRATION_MAX_VCPUS];  /* the placement, epoch 0 */
};

/* The placement at start (placement[i] is vCPU i's node). -EINVAL for
 * counts or nodes out of range. */
int routes_init(struct vcpu_routes *r, int nr_vcpus, int nnodes, const uint8_t *placement);
/* Node 0 decides a move: the next epoch; returns it, or -EINVAL. */
int64_t routes_move(struct vcpu_routes *r, int vcpu, int node);
/* A move at an epoch: 1 if applied (it was the next one), 0 if this table
 * has it already, -EAGAIN if an earlier one is still missing (keep it and
 * apply it later), -EINVAL if impossible. */
int routes_apply(struct vcpu_routes *r, uint64_t epoch, int vcpu, int node);
/* Where vcpu was at an epoch this table has reached: its node; -EAGAIN for
 * an epoch not reached yet, -ESTALE for one older than the history. */
int routes_node_at(const struct vcpu_routes *r, int vcpu, uint64_t epoch);
/* Where to send something for vcpu (an IPI, its state): its node now. */
int routes_node_of(const struct vcpu_routes *r, int vcpu);

/* --migrate-plan FILE: a scripted schedule, one move a line:
 *     TIME_MS VCPU NODE        # after TIME_MS ms, move VCPU to NODE
 * '#' starts a comment; times must not go back. */
struct migration_step {
    uint64_t t_ms;
    int vcpu, node;
};
#define MIGRATION_PLAN_MAX 100000
/* Parses text; *steps is malloc'd. 0, or -EINVAL with "line N: why" in
 * err, or -ENOMEM. */
int migration_plan_parse(const char *text, struct migration_step **steps, size_t *n, char *err,
                         size_t errlen);

#endif
