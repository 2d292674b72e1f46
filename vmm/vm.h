/* Internal to vmm/: the state shared between the node's vCPU threads, its
 * devices and its main loop. Lock order: vm->dev_lock before any vCPU lock;
 * never hold two vCPU locks at once. */
#ifndef AMALGAM_VMM_VM_H
#define AMALGAM_VMM_VM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "numa/numa.h"
#include "vmm/apic_bus.h"
#include "vmm/boot.h"
#include "vmm/bus.h"
#include "vmm/ioapic.h"
#include "vmm/lapic.h"
#include "vmm/memory.h"
#include "vmm/uart.h"
#include "vmm/vcpu_state.h"
#include "vmm/vmm.h"

/* The signal that kicks a vCPU thread out of KVM_RUN (and out of halt). It
 * is blocked outside KVM_RUN, so a kick sent at any time stays pending and
 * makes the next KVM_RUN return at once: kicks are never lost. */
#define SIGKICK SIGUSR1

#define VCPU_POST_CODES 8

struct vcpu {
    struct vm *vm;
    int id;
    int fd;
    struct kvm_run *run;
    pthread_t thread;
    _Atomic bool thread_started; /* by the creator: join it */
    /* By the thread itself, before it first looks at its LAPIC: from then
     * on an interrupt for it must wake it (vcpu_kick); before, it will see
     * the interrupt when it looks. Set by the creator after pthread_create
     * instead, a remote node's INIT/SIPI that arrived in between was never
     * signalled and the AP slept for ever in its wait for SIPI. */
    _Atomic bool kickable;
    pthread_t self;

    pthread_mutex_t lock; /* guards lapic and sm */
    struct lapic lapic;
    struct vcpu_sm sm;    /* what it is doing (vcpu_state.h) */

    timer_t timer;
    bool timer_created;
    uint64_t timer_armed_ns; /* deadline the host timer is set for, 0 none */

    /* Bench port timing (only when vm->bench is set). */
    uint64_t bench_last_exit_ns;

    /* The last POST codes (port 0x80 writes) of this vCPU, oldest first
     * from post_count % VCPU_POST_CODES: printed when the guest crashes,
     * since a triple fault on SVM resets the registers it would show.
     * Kept on the vCPU's own node, never forwarded. vCPU thread only. */
    uint8_t post_codes[VCPU_POST_CODES];
    unsigned post_count;

    _Atomic int64_t tid;     /* its host thread, once started (the monitor) */
    _Atomic bool sched_guest; /* under the guest's policy now (vcpu_set_guest_sched) */
    _Atomic int leave_to;    /* a move asked: the node to go to; -1 none (migrate.c) */
    uint64_t leave_epoch;
    _Atomic uint64_t exits;  /* KVM_RUN returns (the monitor) */
    bool halt_if;            /* HALTED: whether interrupts may wake it (IF) */
    bool local;              /* placed on this node: has a thread */
    pthread_cond_t io_cond;  /* a forwarded device access was answered */
    bool io_waiting, io_done;
    int io_owner;            /* the node the access went to */
    uint64_t io_value;
};

/* What a guest did that the machine ignores, as hardware would, or refuses
 * (docs/reliability.md): counted per kind; the first 3 of a kind and then
 * the 10th, 100th, ... are logged, and each node prints its counts at the
 * end of the run. A guest cannot crash the VMM or flood its log. */
enum guest_error {
    GERR_LAPIC_REG,  /* a write to a reserved or read-only LAPIC register (#GP for MSRs) */
    GERR_IPI_VECTOR, /* an IPI with vector 0-15 (the LAPIC's "send illegal vector") */
    GERR_IPI_MODE,   /* an IPI with a reserved delivery mode: dropped */
    GERR_IPI_NOBODY, /* an interrupt to an APIC id no vCPU has: dropped */
    GERR_IOAPIC,     /* an IOAPIC register that does not exist or is read-only, or an entry with vector 0-15 */
    GERR_NO_DEVICE,  /* a port or MMIO access no device claims (reads all-ones; logged with -v) */
    GERR_VIRTIO,     /* a virtio driver broke the rules: the device went to NEEDS_RESET */
    GERR_COUNT
};
struct vm;
/* Counts one of the kind; returns how many so far. */
uint64_t vm_guest_count(struct vm *vm, enum guest_error kind);
/* Counts it and logs it, rate-limited as above. */
void vm_guest_error(struct vm *vm, enum guest_error kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The ACPI PM block (devices.c). The PM timer counts guest time plus
 * timer_offset_ns. Guest time is the guest TSC, one timeline on every node
 * (tsc.c), once the machine's TSC reference is set (timer_tsc_ref: this
 * host's TSC at guest TSC 0), so every node reads the timer itself,
 * consistently and without a round trip to node 0 (on 2 nodes Linux had
 * found forwarded reads "inconsistent" in the nested L1: two reads 60 ms
 * apart). On one node, without a reference, it is the host's monotonic
 * clock. */
struct acpi_pm {
    _Atomic int64_t timer_offset_ns;
    _Atomic uint64_t timer_tsc_ref; /* 0: not set */
    uint64_t timer_tsc_khz;
    _Atomic uint16_t enable; /* PM1 enable, as written */
    uint16_t status;         /* PM1 status: the power button (under dev_lock) */
};

/* Emulated-CPL0 fix-ups, counted per kind (see emulate.h). */
enum emul_kind {
    EMUL_INT3, EMUL_FWAIT, EMUL_CLAC, EMUL_STAC, EMUL_LDMXCSR, EMUL_STMXCSR,
    EMUL_KIND_COUNT
};

struct vm {
    struct vm_config cfg;
    int kvm_fd;
    int vm_fd;
    size_t run_size;
    struct guest_mem mem;
    bool cpl0_emulated;
    uint64_t tsc_khz;
    uint64_t rsdp_gpa;
    struct boot_info boot; /* where the kernel landed */
    struct machine_desc machine;

    int nr_vcpus;
    struct vcpu *vcpus;

    struct bus bus;           /* every device, local or a proxy (bus.h) */
    int ioapic_dev;           /* the IOAPIC's id on it */
    pthread_mutex_t dev_lock; /* guards the devices below */
    struct ioapic ioapic;
    struct uart uart;
    struct acpi_pm pm;

    /* vm_pause: every running vCPU thread parks (npaused counts them). */
    _Atomic bool pause_req;
    pthread_mutex_t pause_lock;
    pthread_cond_t pause_cond;
    int npaused;

    _Atomic int stopping;
    int exit_status;
    enum vm_exit_reason exit_reason;
    char error[256];              /* written once, by the first vm_fail */
    _Atomic bool error_taken;
    int stop_efd; /* eventfd the main loop waits on */

    _Atomic uint64_t emul_count[EMUL_KIND_COUNT];
    _Atomic uint32_t unknown_port_logged;
    _Atomic uint64_t guest_errors[GERR_COUNT]; /* vm_guest_error */

    struct vm_bench_samples *bench;

    /* Several nodes (cfg.ic set): */
    int node, nnodes;
    struct dsm_host *dsm;
    struct dev_queue *devq;       /* forwarded accesses for the device thread */
    pthread_t progress;           /* the message loop; it also serves DSM faults */
    bool progress_started;
    _Atomic bool vcpus_joined;    /* the loop serves faults until then */
    uint64_t tsc_ref;             /* node 0's host TSC reference (VM_T_TSC) */
    uint64_t tsc_ref_host;        /* node 0's host boot tag, with it */
    _Atomic bool tsc_ref_known;
    _Atomic uint64_t bad_msgs;    /* VMM messages dropped as invalid */
    struct vm_control *ctl;       /* machine-wide pause and status (control.c) */
    struct vm_migration *mig;     /* vCPU routes and moves, several nodes (migrate.c) */
    _Atomic int lost_rank;        /* a node that stopped answering; -1: none */
    struct vm_virtio *virtio;     /* the virtio devices (virtio_devices.c) */
};

/* Ends the run (first caller wins): records why and with which status,
 * wakes every vCPU and the main loop. Safe from any thread. */
void vm_stop(struct vm *vm, enum vm_exit_reason why, int status);
/* Like vm_stop(VM_EXIT_ERROR, 1) with a message for the user. */
void vm_fail(struct vm *vm, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Delivers an APIC bus message to every vCPU it addresses, and kicks them. */
void vm_deliver(struct vm *vm, const struct apic_msg *m);
/* Every message an IOAPIC call produced (after dropping dev_lock). */
void vm_deliver_all(struct vm *vm, const struct ioapic_out *out);
/* Only to this node's vCPUs (an IPI that arrived from another node). */
void vm_deliver_local(struct vm *vm, const struct apic_msg *m);
/* Like vm_stop, for a stop another node announced (not re-broadcast). */
void vm_stop_local(struct vm *vm, enum vm_exit_reason why, int status);
/* Puts the platform devices on vm->bus (devices.c): 0 or -errno. */
int vm_register_devices(struct vm *vm);
/* The virtio devices of cfg (virtio_devices.c): vm_virtio_create puts
 * them on the bus (every node, same order) and, on their owner, opens
 * their backends (files, TAPs); start runs their worker threads once the
 * DSM is attached; stop ends them (before the DSM goes); free closes the
 * rest. -errno with err filled in. */
int vm_virtio_create(struct vm *vm, char *err, size_t n);
int vm_virtio_start(struct vm *vm);
void vm_virtio_stop(struct vm *vm);
void vm_virtio_free(struct vm *vm);
/* Checks what a launcher can check once for all nodes: the files exist
 * and open as asked. */
int vm_virtio_preflight(const struct vm_config *cfg, char *err, size_t n);

/* Drives an IOAPIC pin (takes dev_lock). */
void vm_set_irq(struct vm *vm, int pin, int level);
/* A level-triggered EOI from a LAPIC, for the IOAPIC (takes dev_lock). */
void vm_eoi(struct vm *vm, uint8_t vector);

/* The vCPU's LAPIC clock now: its guest TSC (from KVM) at this host
 * instant, at the VM's TSC rate (tsc.c). 0 or -errno. */
int vcpu_tsc_clock(const struct vm *vm, const struct vcpu *v, struct lapic_clock *clk);
/* Sets every vCPU's TSC to (host TSC - ref) and re-bases the LAPIC clocks;
 * before the vCPU threads start. 0, or -errno with err filled in. */
int vm_set_tsc_reference(struct vm *vm, uint64_t ref, char *err, size_t errlen);
/* The PM timer's time in ns (devices.c; see struct acpi_pm). */
uint64_t vm_pm_time_ns(struct vm *vm);

void vcpu_kick(struct vcpu *v);
/* --vcpu-sched idle: a vCPU thread runs the guest under SCHED_IDLE, but
 * leaves and arrives (a move is downtime) and waits parked at the normal
 * policy; under SCHED_IDLE its thread waited for a free core at both ends
 * of a move. Any thread may call it for any vCPU. */
void vcpu_set_guest_sched(struct vcpu *v, bool guest);
/* In the vCPU's thread, before its state is saved (a pause, a move): a
 * running vCPU's last exit is completed; before: "pausing", "moving". */
void vcpu_finish_exit(struct vcpu *v, const char *before);
/* The vCPU thread body. */
void *vcpu_thread(void *arg);

/* Exit handlers (exits.c): return 0 to continue, <0 if the VM failed. */
int handle_io(struct vcpu *v);
int handle_mmio(struct vcpu *v);
int handle_rdmsr(struct vcpu *v);
int handle_wrmsr(struct vcpu *v);

#endif
