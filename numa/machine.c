/* The machine description from the command line (see numa.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "numa/numa.h"
#include "platform/platform.h"

#define SLICE_ALIGN (2ULL << 20)

static int parse_list(const char *s, int *out, int max, int *n)
{
    *n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > 255 || *n >= max)
            return -EINVAL;
        out[(*n)++] = (int)v;
        s = end;
        if (*s == ',' || *s == ';')
            s++;
        else if (*s)
            return -EINVAL;
    }
    return 0;
}

static int place_vcpus(struct machine_desc *d, const char *placement, char *err, size_t errlen)
{
    if (!placement || !strcmp(placement, "round-robin")) {
        for (int i = 0; i < d->nr_vcpus; i++)
            d->vcpu_node[i] = (uint8_t)(i % d->nr_nodes);
        return 0;
    }
    if (!strcmp(placement, "block")) {
        for (int i = 0; i < d->nr_vcpus; i++)
            d->vcpu_node[i] = (uint8_t)((long)i * d->nr_nodes / d->nr_vcpus);
        return 0;
    }
    int list[NUMA_MAX_VCPUS], n;
    if (parse_list(placement, list, NUMA_MAX_VCPUS, &n) < 0 || n != d->nr_vcpus) {
        snprintf(err, errlen, "--placement '%s': expected round-robin, block, or %d node "
                 "numbers separated by commas", placement, d->nr_vcpus);
        return -EINVAL;
    }
    for (int i = 0; i < n; i++) {
        if (list[i] >= d->nr_nodes) {
            snprintf(err, errlen, "--placement: vCPU %d on node %d, but there are only %d nodes",
                     i, list[i], d->nr_nodes);
            return -EINVAL;
        }
        d->vcpu_node[i] = (uint8_t)list[i];
    }
    return 0;
}

static int set_distances(struct machine_desc *d, const char *spec, char *err, size_t errlen)
{
    int n = d->nr_nodes, vals[NUMA_MAX_NODES * NUMA_MAX_NODES], cnt = 0;
    if (spec && parse_list(spec, vals, n * n, &cnt) < 0)
        cnt = -1;
    if (spec && cnt != 1 && cnt != n * n) {
        snprintf(err, errlen, "--distance '%s': expected one number or a %dx%d matrix", spec, n, n);
        return -EINVAL;
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            int v = i == j ? 10 : 20;
            if (spec)
                v = cnt == 1 ? (i == j ? 10 : vals[0]) : vals[i * n + j];
            d->distance[i][j] = (uint8_t)v;
        }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            int v = d->distance[i][j];
            if ((i == j && v != 10) || (i != j && (v < 11 || v > 254)) ||
                v != d->distance[j][i]) {
                snprintf(err, errlen, "--distance: distances must be 10 to self, 11-254 to "
                         "others, and symmetric (node %d to %d is %d)", i, j, v);
                return -EINVAL;
            }
        }
    return 0;
}

/* Node k's slice of the flat RAM offset space [k*slice, ...) mapped back to
 * guest-physical ranges around the MMIO hole. */
static void slice_memory(struct machine_desc *d)
{
    uint64_t low = d->mem_size < PLATFORM_LOW_RAM_LIMIT ? d->mem_size : PLATFORM_LOW_RAM_LIMIT;
    uint64_t slice = d->mem_size / (uint64_t)d->nr_nodes / SLICE_ALIGN * SLICE_ALIGN;
    for (int k = 0; k < d->nr_nodes; k++) {
        uint64_t a = (uint64_t)k * slice;
        uint64_t b = k == d->nr_nodes - 1 ? d->mem_size : a + slice;
        int r = 0;
        if (a < low) {
            uint64_t e = b < low ? b : low;
            d->node_ranges[k][r++] = (struct numa_range){a, e - a};
        }
        if (b > low) {
            uint64_t s = a > low ? a : low;
            d->node_ranges[k][r++] = (struct numa_range){PLATFORM_HIGH_RAM_BASE + (s - low), b - s};
        }
        d->node_nr_ranges[k] = r;
    }
}

int numa_desc_build(struct machine_desc *d, int nodes, int vcpus, uint64_t mem_bytes,
                    const char *placement, const char *distance, char *err, size_t errlen)
{
    memset(d, 0, sizeof *d);
    if (nodes < 1 || nodes > NUMA_MAX_NODES) {
        snprintf(err, errlen, "--nodes must be between 1 and %d", NUMA_MAX_NODES);
        return -EINVAL;
    }
    if (vcpus < 1 || vcpus > NUMA_MAX_VCPUS) {
        snprintf(err, errlen, "--vcpus must be between 1 and %d", NUMA_MAX_VCPUS);
        return -EINVAL;
    }
    if (mem_bytes % SLICE_ALIGN || mem_bytes / (uint64_t)nodes < SLICE_ALIGN) {
        snprintf(err, errlen, "--mem must be a multiple of 2M with at least 2M per node");
        return -EINVAL;
    }
    d->nr_nodes = nodes;
    d->nr_vcpus = vcpus;
    d->mem_size = mem_bytes;
    d->ioapic_id = platform_ioapic_id(vcpus);
    int r = place_vcpus(d, placement, err, errlen);
    r = r ?: set_distances(d, distance, err, errlen);
    if (r == 0)
        slice_memory(d);
    return r;
}

int numa_node_of_gpa(const struct machine_desc *d, uint64_t gpa)
{
    for (int k = 0; k < d->nr_nodes; k++)
        for (int r = 0; r < d->node_nr_ranges[k]; r++) {
            const struct numa_range *x = &d->node_ranges[k][r];
            if (gpa >= x->start && gpa - x->start < x->size)
                return k;
        }
    return -1;
}

int numa_node_of_vcpu(const struct machine_desc *d, int vcpu)
{
    return vcpu >= 0 && vcpu < d->nr_vcpus ? d->vcpu_node[vcpu] : -1;
}
