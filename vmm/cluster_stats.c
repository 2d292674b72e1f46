/* --stats: each node's DSM statistics at exit, one line per node. */
#include <stdio.h>
#include <unistd.h>

#include "dsm/host.h"
#include "vmm/cluster.h"
#include "vmm/vm.h"

/* "; hottest pages (gpa fetched/lost): ..." for the stats line: where a
 * slow workload's pages ping-pong. */
static int format_hot_pages(const struct vm *vm, char *buf, size_t len)
{
    struct dsm_hot_page hot[10];
    int n = dsm_host_hot_pages(vm->dsm, hot, 10), o = 0;
    if (!n || !len)
        return 0;
    o = snprintf(buf, len, "; hottest pages (gpa fetched/lost):");
    for (int i = 0; i < n && o > 0 && (size_t)o < len; i++)
        o += snprintf(buf + o, len - (size_t)o, " %#llx %u/%u",
                      (unsigned long long)gmem_gpa(&vm->mem, hot[i].page * DSM_PAGE_SIZE), hot[i].fetches,
                      hot[i].losses);
    return o > 0 && (size_t)o < len ? o : (int)len - 1;
}

/* One write per node, so that the nodes' lines do not interleave. */
void cluster_print_stats(const struct vm *vm)
{
    struct dsm_host_report rep;
    dsm_host_report(vm->dsm, &rep);
    const struct dsm_stats *s = &rep.stats;
    char buf[4096];
    int o = snprintf(buf, sizeof buf,
                     "amalgam node %d: dsm: %llu read faults, %llu write faults (%llu upgrades), "
                     "%llu invalidations sent, %llu received, %llu recalls sent, %llu received, "
                     "%llu KiB moved, %llu evictions (%llu written back), %llu pages cached, "
                     "%llu userfaultfd events, %llu bad messages, %llu requests held (window "
                     "%.0f us), %llu pages pushed, %llu kept (%llu declined), %llu prefetched, "
                     "%llu pulled one-sided (this home %s), read-only sharing %s; "
                     "fault service time in us:",
                     vm->node, (unsigned long long)s->read_faults,
                     (unsigned long long)s->write_faults, (unsigned long long)s->upgrades,
                     (unsigned long long)s->inv_sent, (unsigned long long)s->inv_received,
                     (unsigned long long)s->recalls_sent, (unsigned long long)s->recalls_received,
                     (unsigned long long)(s->bytes_moved >> 10),
                     (unsigned long long)s->evictions, (unsigned long long)s->writebacks,
                     (unsigned long long)rep.cached, (unsigned long long)rep.uffd_events,
                     (unsigned long long)atomic_load(&vm->bad_msgs),
                     (unsigned long long)s->holds, rep.hold_window_ns / 1e3,
                     (unsigned long long)s->pushes_sent, (unsigned long long)s->pushes_kept,
                     (unsigned long long)s->pushes_declined, (unsigned long long)rep.prefetches,
                     (unsigned long long)s->pulls, rep.pulling ? "answers with pulls" : "sends pages",
                     rep.read_only_sharing ? "on" : "off (kernel before 6.4)");
    for (int b = 0; b < DSM_HIST_BUCKETS && o > 0 && (size_t)o < sizeof buf; b++)
        if (s->service_ns_log2[b])
            o += snprintf(buf + o, sizeof buf - (size_t)o, " [%.1f,%.1f):%llu",
                          (double)(1ULL << b) / 1e3, (double)(2ULL << b) / 1e3,
                          (unsigned long long)s->service_ns_log2[b]);
    o += format_hot_pages(vm, buf + o, o > 0 && (size_t)o < sizeof buf ? sizeof buf - (size_t)o : 0);
    if (o > 0 && (size_t)o < sizeof buf - 1) {
        buf[o++] = '\n';
        if (write(2, buf, (size_t)o) < 0) {
            /* stderr is gone: nothing better to do */
        }
    }
}
