/* One guest TSC across the nodes (see cluster.h: cluster_sync_tsc). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <x86intrin.h>

#include "clock/clock.h"
#include "vmm/cluster.h"
#include "vmm/vm.h"

#define TSC_WAIT_NS 30000000000ULL
#define TSC_PROBES 32
#define TSC_PROBE_WAIT_NS 200000000ULL

/* The first 64 bits of this boot's random id (0: unknown). Equal on two
 * nodes means one kernel, so one TSC: node processes on one host, or in
 * network namespaces of one host. */
static uint64_t host_boot_tag(void)
{
    char s[64] = "";
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        if (!fgets(s, sizeof s, f))
            s[0] = 0;
        fclose(f);
    }
    uint64_t v = 0;
    int n = 0;
    for (const char *p = s; *p && n < 16; p++)
        if (isxdigit((unsigned char)*p)) {
            v = v << 4 | (uint64_t)(isdigit((unsigned char)*p) ? *p - '0' : (tolower(*p) - 'a' + 10));
            n++;
        }
    return n == 16 ? v : 0;
}

/* Node 0's TSC minus ours, estimated over the interconnect (ic_clock_*):
 * the probes' answers are taken by this node's message thread. */
static int estimate_tsc_offset(struct vm *vm, int64_t *offset, char *err, size_t errlen)
{
    int64_t off = 0;
    uint64_t rtt = 0, n = 0;
    if (ic_clock_measure(vm->cfg.ic, 0, TSC_PROBES, TSC_PROBE_WAIT_NS, NULL, NULL, &vm->stopping,
                         &off, &rtt, &n) < 0) {
        snprintf(err, errlen, "node 0 answered none of %d clock probes", TSC_PROBES);
        return -ETIMEDOUT;
    }
    fprintf(stderr, "amalgam node %d: on another host than node 0: TSC offset %+lld cycles "
            "(+-%llu, best of %llu round trips)\n", vm->node, (long long)off,
            (unsigned long long)(rtt / 2), (unsigned long long)n);
    *offset = off;
    return 0;
}

/* One guest TSC for all nodes (see vm_set_tsc_reference): node 0 picks the
 * reference now and sends it with its host's boot id; the others wait for
 * it (the message thread runs meanwhile, so DSM requests from node 0's
 * running vCPUs are served). A node on another host (another boot id, or
 * AMALGAM_TSC_ESTIMATE=1) first estimates how far its TSC is from node
 * 0's and shifts the reference by that much. */
int cluster_sync_tsc(struct vm *vm, char *err, size_t errlen)
{
    if (vm->node == 0) {
        uint64_t ref = __rdtsc(), tag = host_boot_tag();
        for (int n = 1; n < vm->nnodes; n++)
            if (ic_send(vm->cfg.ic, n, VM_T_TSC, ref, tag, NULL, 0) < 0) {
                snprintf(err, errlen, "cannot send the TSC reference to node %d", n);
                return -EIO;
            }
        return vm_set_tsc_reference(vm, ref, err, errlen);
    }
    uint64_t t0 = clock_now_ns();
    while (!atomic_load(&vm->tsc_ref_known)) {
        if (atomic_load(&vm->stopping))
            return 0; /* the run is over already; its reason is recorded */
        if (clock_now_ns() - t0 > TSC_WAIT_NS) {
            snprintf(err, errlen, "node 0 sent no TSC reference within %llu s",
                     TSC_WAIT_NS / 1000000000ULL);
            return -ETIMEDOUT;
        }
        usleep(1000);
    }
    int64_t offset = 0;
    uint64_t tag = host_boot_tag();
    if (!tag || tag != vm->tsc_ref_host || getenv("AMALGAM_TSC_ESTIMATE")) {
        int r = estimate_tsc_offset(vm, &offset, err, errlen);
        if (r < 0)
            return r;
    }
    /* Node 0's TSC is ours plus offset: its reference, in our TSC. */
    return vm_set_tsc_reference(vm, vm->tsc_ref - (uint64_t)offset, err, errlen);
}
