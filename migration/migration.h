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

/* --migrate-policy affinity: move a vCPU to the node that serves most of
 * its remote faults. Each node reports, once a window, how many DSM faults
 * each vCPU running there took, by the home node of the page; node 0 adds
 * them up here and, at the end of the window, moves at most one vCPU.
 *
 * A page's home stands for "where the page lives": at its home a page is
 * mapped from the start and costs no fault unless another node took it.
 * So a vCPU's accesses to its own node's pages are invisible here: moving
 * v from node c to node k saves its faults on pages homed at k, f[k], but
 * costs the accesses to c's pages it will make from k, which nobody has
 * counted. The policy learns that cost: while v runs away from a node n,
 * its faults on n's pages are that cost, averaged per window in away[v][n];
 * the estimate for the node it is on fades slowly (half-life ~180
 * windows), so a move that was once bad is tried again some time later.
 * A move c -> k is made when f[k] >= min_faults, and f[k] >= ratio_pct/100
 * x (away[v][c] + its faults on every other node's pages); of the vCPUs
 * that qualify, the one with the largest gain moves. A moved vCPU stays
 * `dwell` windows. (Measured in docs/migration.md: a vCPU placed away from
 * its data moves once; one placed well and faulting a little on shared
 * pages moves once at most, and comes back for good.) Pure. */
#define AFFINITY_MAX_NODES 64
struct affinity_cfg {
    uint64_t window_ms;  /* how often nodes report and node 0 decides */
    uint32_t min_faults; /* in one window, on the target's pages */
    uint32_t ratio_pct;  /* f[k] >= ratio_pct/100 x (faults it would take there) */
    uint32_t dwell;      /* windows a vCPU stays after a move */
};
#define AFFINITY_DEFAULTS ((struct affinity_cfg){100, 16, 200, 2})

struct affinity {
    struct affinity_cfg cfg;
    int nr_vcpus, nnodes;
    uint64_t f[MIGRATION_MAX_VCPUS][AFFINITY_MAX_NODES];    /* this window, by home */
    uint64_t away[MIGRATION_MAX_VCPUS][AFFINITY_MAX_NODES]; /* learned, x 256 */
    uint32_t since_move[MIGRATION_MAX_VCPUS];               /* windows */
};

/* -EINVAL for counts out of range or a zero window. */
int affinity_init(struct affinity *a, const struct affinity_cfg *cfg, int nr_vcpus, int nnodes);
/* A node's report for vcpu: faults by home node (nnodes counts). */
void affinity_add(struct affinity *a, int vcpu, const uint32_t *by_home);
/* The window is over: given where each vCPU runs now (a node out of range:
 * not a candidate), the move to make (1, *vcpu and *to set) or none (0).
 * Learns from the window and starts the next. */
int affinity_decide(struct affinity *a, const uint8_t *node_of, int *vcpu, int *to);
/* "key=value,..." after "affinity": window=MS, min=N, ratio=PCT,
 * dwell=WINDOWS. 0, or -EINVAL with the reason in err. */
int affinity_parse(const char *opts, struct affinity_cfg *cfg, char *err, size_t n);

#endif
