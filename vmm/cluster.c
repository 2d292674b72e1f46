/* One node of a multi-node machine (see cluster.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock/clock.h"
#include "dsm/host.h"
#include "vmm/cluster.h"
#include "vmm/control.h"
#include "vmm/migrate.h"
#include "vmm/vm.h"

int cluster_register_types(struct ic_types *t)
{
    int r = dsm_register_types(t);
    r = r ?: ic_types_add(t, VM_T_IPI, sizeof(struct apic_msg), sizeof(struct apic_msg));
    r = r ?: ic_types_add(t, VM_T_IO_REQ, sizeof(struct bus_access), sizeof(struct bus_access));
    r = r ?: ic_types_add(t, VM_T_IO_REPLY, 0, 0);
    r = r ?: ic_types_add(t, VM_T_TSC, 0, 0);
    r = r ?: ic_types_add(t, VM_T_EOI, 0, 0);
    r = r ?: control_register_types(t);
    r = r ?: migrate_register_types(t);
    return r ?: ic_types_add(t, VM_T_STOP, 0, 0);
}

/* DSM pages are memfd offsets; homes come from the NUMA slices of the
 * guest-physical addresses they back. */
static int home_of_page(void *hctx, uint64_t page)
{
    struct vm *vm = hctx;
    int n = numa_node_of_gpa(&vm->machine, gmem_gpa(&vm->mem, page * DSM_PAGE_SIZE));
    return n < 0 ? 0 : n;
}

static bool valid_apic_msg(const struct apic_msg *m)
{
    return m->delivery != 3 && m->delivery <= APIC_DM_EXTINT && m->shorthand <= APIC_SH_OTHERS &&
           m->shorthand != APIC_SH_SELF && m->dest_logical <= 1 && m->x2apic <= 1;
}

/* A message the protocol does not allow (a bug or a hostile peer): counted,
 * reported once, then dropped. */
void cluster_bad_message(struct vm *vm, const struct ic_hdr *h, const char *why)
{
    if (atomic_fetch_add(&vm->bad_msgs, 1) == 0)
        fprintf(stderr, "amalgam node %d: dropped a message from node %d: %s (further ones "
                "are counted in --stats)\n", vm->node, h->src_rank, why);
}

/* ---- one handler per message type (registered in cluster_attach) ---- */

static void on_ipi(void *ctx, const struct ic_hdr *h, const void *payload)
{
    struct vm *vm = ctx;
    struct apic_msg m;
    memcpy(&m, payload, sizeof m);
    if (valid_apic_msg(&m))
        migrate_on_ipi(vm, h, &m);
    else
        cluster_bad_message(vm, h, "an interrupt message with invalid fields");
}

static void on_eoi(void *ctx, const struct ic_hdr *h, const void *payload)
{
    struct vm *vm = ctx;
    (void)payload;
    /* Vectors 0-15 are exceptions: no interrupt ever had one. */
    if (bus_is_local(&vm->bus, vm->ioapic_dev) && h->arg0 >= 16 && h->arg0 <= 255)
        vm_eoi(vm, (uint8_t)h->arg0);
    else
        cluster_bad_message(vm, h, "an EOI not for this node's IOAPIC, or of an invalid vector");
}

static void on_tsc(void *ctx, const struct ic_hdr *h, const void *payload)
{
    struct vm *vm = ctx;
    (void)payload;
    if (h->src_rank == 0 && vm->node != 0 && !atomic_load(&vm->tsc_ref_known)) {
        vm->tsc_ref = h->arg0;
        vm->tsc_ref_host = h->arg1;
        atomic_store(&vm->tsc_ref_known, true);
    }
}

static void on_stop(void *ctx, const struct ic_hdr *h, const void *payload)
{
    struct vm *vm = ctx;
    (void)payload;
    /* arg1: the guest's status, and 1 + the node the sender lost (0: none) */
    int lost = (int)((h->arg1 >> 8) & 0xff) - 1;
    if (lost >= 0 && lost < vm->nnodes && lost != vm->node && vm->lost_rank < 0)
        vm->lost_rank = lost; /* the monitor's NODE_LOST, on node 0 too */
    if (h->arg0 == VM_EXIT_ERROR && !atomic_exchange(&vm->error_taken, true)) {
        if (lost >= 0 && lost < vm->nnodes)
            snprintf(vm->error, sizeof vm->error,
                     "node %d stopped answering (node %d noticed: no heartbeat for %.1f s)", lost,
                     h->src_rank, ic_dead_after_ns(vm->cfg.ic) / 1e9);
        else
            snprintf(vm->error, sizeof vm->error, "node %d failed (its message is above)",
                     h->src_rank);
    }
    if (h->arg0 >= VM_EXIT_DEBUG_PORT && h->arg0 <= VM_EXIT_ERROR)
        vm_stop_local(vm, (enum vm_exit_reason)h->arg0, (int)(h->arg1 & 0xff));
}

int cluster_attach(struct vm *vm)
{
    struct ic *ic = vm->cfg.ic;
    int r = ic_on(ic, VM_T_IPI, VM_T_IPI, on_ipi, vm);
    r = r ?: ic_on(ic, VM_T_IO_REQ, VM_T_IO_REQ, cluster_queue_io, vm);
    r = r ?: ic_on(ic, VM_T_IO_REPLY, VM_T_IO_REPLY, cluster_io_answered, vm);
    r = r ?: ic_on(ic, VM_T_STOP, VM_T_STOP, on_stop, vm);
    r = r ?: ic_on(ic, VM_T_TSC, VM_T_TSC, on_tsc, vm);
    r = r ?: ic_on(ic, VM_T_EOI, VM_T_EOI, on_eoi, vm);
    r = r ?: control_attach(vm);
    r = r ?: (vm->mig ? 0 : migrate_init(vm)); /* the routing table, from the placement */
    r = r ?: migrate_attach(vm);
    if (r < 0)
        return r;
    vm->bus.fwd = (struct bus_forward_ops){vm, cluster_forward};
    return cluster_start_devices(vm);
}

static void *progress(void *arg)
{
    struct vm *vm = arg;
    uint64_t last = 0;
    /* Signals go to the main loop and the vCPU threads, not here. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    while (!atomic_load(&vm->stopping)) {
        int n = dsm_host_poll(vm->dsm) + ic_poll_handlers(vm->cfg.ic, 64);
        control_poll(vm);
        migrate_poll(vm);
        uint64_t t = clock_now_ns();
        if (t - last > 50000000ULL) {
            last = t;
            if (dsm_host_errors(vm->dsm)) {
                vm_fail(vm, "node %d: the DSM could not copy, protect or pull guest pages (%llu "
                        "failures); stopping rather than run on wrong memory", vm->node,
                        (unsigned long long)dsm_host_errors(vm->dsm));
                break;
            }
            if (ic_tick(vm->cfg.ic, t) < 0) {
                vm->lost_rank = ic_dead_rank(vm->cfg.ic); /* before vm_fail wakes the main loop */
                vm_fail(vm, "node %d stopped answering (no heartbeat for %.1f s)",
                        ic_dead_rank(vm->cfg.ic), ic_dead_after_ns(vm->cfg.ic) / 1e9);
                break;
            }
        }
        dsm_host_pace(vm->dsm, n, t);
    }
    /* Drain a little longer so that a stop we sent reaches the others, and
     * serve faults until the vCPU threads are gone (one may be leaving
     * KVM_RUN through a page this loop must map), for at most 2 s. */
    uint64_t t0 = clock_now_ns(), t;
    while ((t = clock_now_ns()) - t0 < 200000000ULL ||
           (!atomic_load(&vm->vcpus_joined) && t - t0 < 2000000000ULL))
        if (dsm_host_poll(vm->dsm) + ic_poll_handlers(vm->cfg.ic, 64) == 0)
            ic_wait(vm->cfg.ic, 5, dsm_host_fd(vm->dsm));
    if (!atomic_load(&vm->vcpus_joined))
        dsm_host_release(vm->dsm); /* a vCPU still waits for a page: let it go */
    return NULL;
}

int cluster_start(struct vm *vm, char *err, size_t errlen)
{
    if (cluster_attach(vm) < 0) {
        snprintf(err, errlen, "cannot start the node's device thread");
        return -EAGAIN;
    }
    vm->dsm = calloc(1, sizeof *vm->dsm);
    if (!vm->dsm)
        return -ENOMEM;
    uint64_t pages = vm->mem.size / DSM_PAGE_SIZE;
    int r = dsm_host_start(vm->dsm, vm->cfg.ic, vm->mem.fd, vm->mem.guest_view,
                           vm->mem.agent_view, pages, vm->cfg.dsm_cache / DSM_PAGE_SIZE,
                           home_of_page, vm);
    if (r < 0) {
        snprintf(err, errlen, "cannot attach the DSM to guest memory: %s", strerror(-r));
        return r;
    }
    r = ic_on(vm->cfg.ic, DSM_MSG_FIRST, DSM_MSG_LAST, dsm_host_on_message, vm->dsm);
    if (r < 0) {
        snprintf(err, errlen, "cannot register the DSM's messages: %s", strerror(-r));
        return r;
    }
    dsm_host_set_push(vm->dsm, vm->cfg.dsm_push);
    r = dsm_host_set_pull(vm->dsm, vm->cfg.dsm_pull);
    if (r < 0) /* this home sends pages in its replies, as without the flag */
        fprintf(stderr, "amalgam node %d: --dsm-pull on: %s; this node sends its pages "
                "instead\n", vm->node, dsm_pull_error(r));
    struct dsm_host_report rep;
    dsm_host_report(vm->dsm, &rep);
    if (!rep.read_only_sharing)
        fprintf(stderr, "amalgam node %d: this kernel cannot map a guest page read-only on a "
                "fault (needs Linux 6.4): every page this node touches is taken exclusive, "
                "which is slower where nodes share read-only data\n", vm->node);
    if (pthread_create(&vm->progress, NULL, progress, vm)) {
        snprintf(err, errlen, "cannot start the node's message thread");
        return -EAGAIN;
    }
    pthread_setname_np(vm->progress, "amalgam-dsm"); /* top -H, ps -L */
    vm->progress_started = true;
    r = cluster_sync_tsc(vm, err, errlen);
    if (r == 0)
        control_probe_peers(vm);
    return r;
}

/* The guest-physical address of a DSM page. */
void cluster_stop(struct vm *vm)
{
    if (vm->progress_started)
        pthread_join(vm->progress, NULL);
    vm->progress_started = false;
    cluster_stop_devices(vm); /* after the loop: nothing queues accesses now */
    if (vm->dsm && vm->cfg.stats)
        cluster_print_stats(vm);
    if (vm->dsm) {
        dsm_host_stop(vm->dsm);
        free(vm->dsm);
        vm->dsm = NULL;
    }
}

void cluster_forward_eoi(struct vm *vm, uint8_t vector)
{
    int owner = vm->bus.dev[vm->ioapic_dev].owner;
    if (ic_send(vm->cfg.ic, owner, VM_T_EOI, vector, 0, NULL, 0) < 0)
        vm_fail(vm, "node %d: cannot reach node %d to end a level-triggered interrupt",
                vm->node, owner);
}

void cluster_broadcast_stop(struct vm *vm)
{
    for (int n = 0; n < vm->nnodes; n++)
        if (n != vm->node)
            ic_send(vm->cfg.ic, n, VM_T_STOP, (uint64_t)vm->exit_reason,
                    (uint64_t)(vm->exit_status & 0xff) |
                        (uint64_t)(vm->lost_rank >= 0 ? vm->lost_rank + 1 : 0) << 8,
                    NULL, 0);
}
