/* vmm: one node's KVM virtual machine.
 *
 * A node holds the whole guest-physical address space (one memfd, see
 * memory.h) and one KVM vCPU for every vCPU id of the machine, created up
 * front; only the vCPUs placed on this node run threads. The interrupt
 * controllers (a LAPIC per vCPU, the IOAPIC) live in user space, so every
 * interrupt is a struct apic_msg that can be routed to any vCPU.
 *
 * Invariants: a vCPU's LAPIC is only touched with that vCPU's lock held; a
 * kick (signal) sent to a vCPU thread at any moment makes its next or
 * current KVM_RUN return, so no interrupt set pending is ever left waiting.
 */
#ifndef AMALGAM_VMM_VMM_H
#define AMALGAM_VMM_VMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "migration/migration.h"
#include "platform/platform.h"

enum cpl0_mode { CPL0_AUTO = 0, CPL0_NATIVE, CPL0_EMULATED };

/* How vCPU threads are scheduled against the node's own service threads
 * (DSM progress, device thread, main loop). IDLE (the default): vCPU
 * threads run under SCHED_IDLE, so a service thread with a message to
 * answer always preempts a vCPU, even one spinning in the guest on a page
 * another node holds. On this 2-core host with the nodes sharing it, the
 * test guest's `tsc` test on 4 nodes took 31 s at NORMAL and 5.9 s at IDLE,
 * and `bench local --nodes 2 --vcpus 4` fell from 339x to 6.5x one node
 * (docs/architecture.md, "Threads"). NORMAL suits a host shared with other
 * heavy work, which would otherwise take every cycle from the guest. */
enum vcpu_sched { VCPU_SCHED_IDLE = 0, VCPU_SCHED_NORMAL };

#define VMM_MAX_VCPUS 255
#define VMM_MIN_MEM (32ULL << 20)

/* Debug-exit port: an 8-bit OUT of v ends the run with exit status v. */
#define VMM_PORT_DEBUG_EXIT PLATFORM_DEBUG_EXIT_PORT
/* Bench port: writes are only counted (and timed by `bench vmexit`). */
#define VMM_PORT_BENCH PLATFORM_BENCH_PORT

struct vm;
struct event_loop;

/* What happened to the machine, for whoever watches it (the monitor's
 * events). Delivered on the main thread of node 0 (or the only node). */
enum vm_event_type { VM_EVENT_SHUTDOWN, VM_EVENT_NODE_LOST };
struct vm_event {
    enum vm_event_type type;
    bool guest;          /* SHUTDOWN: the guest asked (power-off, reset, exit port) */
    const char *reason;  /* SHUTDOWN: guest-shutdown, host-signal, host-qmp-quit, host-error;
                          * NODE_LOST: what was seen */
    int rank;            /* NODE_LOST */
};

/* Hooks run by vm_run on its main thread: attach once the machine runs
 * (with the node's event loop, to watch more fds), event as they happen. */
struct vm_hooks {
    void *ctx;
    int (*attach)(void *ctx, struct vm *vm, struct event_loop *loop, char *err, size_t n);
    void (*event)(void *ctx, const struct vm_event *e);
    void (*detach)(void *ctx);
};

/* virtio devices (docs/devices.md), all run by node 0: --drive, --netdev
 * and --rng take the virtio-mmio slots in that order. */
#define VMM_MAX_VIRTIO PLATFORM_VIRTIO_MAX
struct vm_drive {
    const char *file;
    bool readonly;
    bool direct;   /* cache=none: O_DIRECT, the host's page cache bypassed */
};
struct vm_netdev {
    const char *ifname; /* an existing TAP interface */
    uint8_t mac[6];
    bool mac_set;       /* else derived from ifname */
};

struct vm_config {
    int nr_vcpus;
    uint64_t mem_size;
    const char *kernel;
    const char *initrd;  /* NULL: none */
    const char *cmdline; /* NULL: empty */
    enum cpl0_mode cpl0;
    bool verbose;
    bool stats;          /* print the DSM's per-node statistics at exit */
    int console_out;     /* fd the UART writes to */
    int console_in;      /* fd the UART reads host input from, -1: none */
    /* Several nodes: this node's opened interconnect (its rank is the node
     * id), vCPU placement and node distances. NULL: a one-node machine. */
    struct ic *ic;
    const char *placement;
    const char *distance;
    uint64_t dsm_cache; /* bytes of other nodes' pages cached here; 0: no limit */
    unsigned dsm_push;  /* batching: pages sent along with a read copy (dsm_set_push) */
    bool dsm_pull;      /* pages move by one-sided reads (dsm_host_set_pull); the ic
                         * must have been opened with ic_config.rma */
    enum vcpu_sched vcpu_sched;
    struct vm_hooks hooks; /* node 0 only; all NULL: none */
    /* --migrate every=MS[,vcpus=LIST]: node 0 moves a random vCPU of the
     * mask to a random other node every MS ms (0: never); --trace FILE:
     * one JSON line per move (migrate.c). */
    unsigned migrate_every_ms;
    uint64_t migrate_mask[4];   /* bit i: vCPU i may be moved; all zero: every vCPU */
    const struct migration_step *migrate_plan; /* --migrate-plan, in time order */
    size_t migrate_plan_n;
    /* --migrate-policy affinity[,...]: node 0 moves vCPUs towards the node
     * that serves most of their DSM faults (migration.h). */
    bool migrate_affinity;
    struct affinity_cfg affinity;
    /* --migrate-prefetch N: a vCPU's last N faulted pages (<= 64) go with
     * its state, and the new node asks for them as the state arrives. */
    unsigned migrate_prefetch;
    const char *trace;
    struct vm_drive drives[VMM_MAX_VIRTIO];
    int ndrives;
    struct vm_netdev netdevs[VMM_MAX_VIRTIO];
    int nnetdevs;
    bool rng;
};

struct vm;
struct ic;

/* virtio-mmio slots the configuration uses (--drive, --netdev, --rng). */
static inline int vm_virtio_slots(const struct vm_config *c)
{
    return c->ndrives + c->nnetdevs + (c->rng ? 1 : 0);
}

/* Why a run ended. */
enum vm_exit_reason {
    VM_EXIT_NONE = 0,
    VM_EXIT_DEBUG_PORT, /* guest wrote the debug-exit port: status = value */
    VM_EXIT_POWEROFF,   /* ACPI S5 */
    VM_EXIT_RESET,      /* guest asked for a reset */
    VM_EXIT_SIGNAL,     /* SIGINT/SIGTERM */
    VM_EXIT_QUIT,       /* the monitor's quit: status 0 */
    VM_EXIT_ERROR,      /* the VMM failed; vm_error() says why */
};

/* Creates the VM and loads the kernel. On failure returns a negative errno
 * and one line for the user in err; -ENOEXEC/-ENOENT/-EACCES/-EINVAL/-ENOMEM
 * are problems with the user's input (exit status 2). */
int vm_create(const struct vm_config *cfg, struct vm **out, char *err, size_t errlen);

/* Checks, without starting anything, what `vm_create` on each of nnodes
 * nodes would refuse: the configuration, the kernel and initrd (loaded into
 * scratch memory), /dev/kvm. A local launcher calls it once so that a user
 * error is reported once rather than by every node. */
int vm_preflight(const struct vm_config *cfg, int nnodes, char *err, size_t errlen);

/* Runs until the guest or a signal ends it; returns the process exit
 * status: the guest's debug-exit value, 0 for poweroff/reset, 128+signal,
 * 1 on a VMM failure (see vm_error). */
int vm_run(struct vm *vm);
enum vm_exit_reason vm_exit_reason(const struct vm *vm);
/* From another thread while vm_run runs: parks every vCPU thread where it
 * is (running, halted or waiting for SIPI) and returns once all have
 * parked: 0, -ETIMEDOUT (then nothing stays paused) or -ECANCELED (the
 * run ended). vm_resume lets them go on. */
int vm_pause(struct vm *vm, uint64_t timeout_ns);
void vm_resume(struct vm *vm);
/* Ends a run from another thread, as a power-off would. */
void vm_shutdown(struct vm *vm);

/* ---- the whole machine, from node 0's main thread (control.c) ---- */

#define VM_STATUS_MAX_NODES 64
#define VM_STATUS_MAX_HOT 64

enum vm_dsm_counter {
    VM_DSM_READ_FAULTS, VM_DSM_WRITE_FAULTS, VM_DSM_UPGRADES, VM_DSM_INV_SENT,
    VM_DSM_INV_RECEIVED, VM_DSM_RECALLS_SENT, VM_DSM_RECALLS_RECEIVED, VM_DSM_BYTES_MOVED,
    VM_DSM_EVICTIONS, VM_DSM_WRITEBACKS, VM_DSM_UFFD_EVENTS, VM_DSM_HELD, VM_DSM_PUSHED,
    VM_DSM_BAD_MESSAGES, VM_DSM_COUNTERS
};
extern const char *const vm_dsm_counter_names[VM_DSM_COUNTERS];

struct vm_status_node {
    int rank;
    char host[64];
    int64_t pid;
    char fabric[16];
    uint64_t home_start, home_end;  /* guest-physical, end exclusive */
    uint64_t resident, cached;      /* bytes */
    uint64_t rtt_ns[VM_STATUS_MAX_NODES]; /* measured round trip to each rank; 0: self/unknown */
    uint64_t dsm[VM_DSM_COUNTERS];
    uint64_t hold_window_ns;
    int nhot;
    struct { uint64_t gpa; uint32_t fetched, lost; } hot[VM_STATUS_MAX_HOT];
    uint64_t window_ns; /* what hot[] covers: since the node's previous query for hot pages */
    bool paused;
};

struct vm_status_vcpu {
    int index, node;
    int64_t tid;        /* 0: not known */
    const char *state;  /* vcpu_state_name() */
    uint64_t exits, remote_faults;
};

struct vm_status {
    bool running;       /* false: paused by vm_pause_all */
    int nnodes, nr_vcpus;
    struct vm_status_node node[VM_STATUS_MAX_NODES];
    struct vm_status_vcpu vcpu[VMM_MAX_VCPUS];
};

/* Every node's status and its top hottest pages (<= VM_STATUS_MAX_HOT),
 * asked over the interconnect; 0, -ETIMEDOUT (a node did not answer in
 * time) or another -errno, with err filled in. */
int vm_query(struct vm *vm, unsigned top, struct vm_status *st, char *err, size_t n);
/* Pauses every vCPU on every node; returns when all have stopped: 1, or
 * 0 if the machine was paused already, or -errno. vm_resume_all likewise. */
int vm_pause_all(struct vm *vm, char *err, size_t n);
int vm_resume_all(struct vm *vm, char *err, size_t n);
bool vm_running(const struct vm *vm);
/* Presses the ACPI power button (the PM1 fixed event): a guest that
 * enabled it gets an SCI and may shut down. */
int vm_powerdown(struct vm *vm, char *err, size_t n);
/* Ends the run as the monitor's quit. */
void vm_quit(struct vm *vm);

/* Moves vCPU v to node, live (migrate.c); returns once it runs there: 1
 * with res filled in, 0 if it was there already, or -errno with err (a
 * vCPU or node that does not exist, a node that does not answer). One
 * move at a time; node 0's main thread only. */
struct vm_migration_result {
    int vcpu, from, to;
    uint64_t epoch, downtime_ns, bytes;
};
int vm_migrate_vcpu(struct vm *vm, int v, int node, struct vm_migration_result *res, char *err,
                    size_t n);
/* The node vCPU v runs on now. */
int vm_vcpu_node(struct vm *vm, int v);

/* A paused VM's complete state (guest memory, every vCPU's KVM state and
 * LAPIC, every device), held in this process (checkpoint.c). Restored into
 * a VM made by vm_create with the same configuration, before vm_run, the
 * guest goes on where it was paused. One node only, for now. */
struct vm_checkpoint;
int vm_checkpoint_save(struct vm *vm, struct vm_checkpoint **out, char *err, size_t errlen);
int vm_checkpoint_restore(struct vm *vm, const struct vm_checkpoint *cp, char *err, size_t errlen);
void vm_checkpoint_free(struct vm_checkpoint *cp);
const char *vm_error(const struct vm *vm);
bool vm_cpl0_emulated(const struct vm *vm);
void vm_destroy(struct vm *vm);

/* Benchmark hook: record up to cap round-trip times (ns) between
 * consecutive writes to VMM_PORT_BENCH, plus the time spent in the VMM's
 * own exit handling for them. Call before vm_run. */
struct vm_bench_samples {
    uint64_t *round_trip_ns;
    uint64_t *dispatch_ns;
    size_t cap;
    size_t n;
};
void vm_set_bench(struct vm *vm, struct vm_bench_samples *s);

/* Parses sizes such as 256M, 1G, 4096K, 1048576: -EINVAL if malformed. */
int vmm_parse_size(const char *s, uint64_t *out);


#endif
