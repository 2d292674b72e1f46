/* numa: the machine the guest sees, and the ACPI tables that describe it.
 *
 * A machine description says which node each vCPU lives on, which guest-
 * physical ranges each node is home of, and how far nodes are from each
 * other. From it come the ACPI tables (MADT for the CPUs, SRAT for the
 * placement, SLIT for the distances) and, for the DSM, the home node of
 * every page. Invariants: node memory slices are 2 MiB aligned, disjoint
 * and together cover exactly the guest's RAM; distances are 10 on the
 * diagonal, symmetric, and within 11..254 elsewhere.
 */
#ifndef AMALGAM_NUMA_NUMA_H
#define AMALGAM_NUMA_NUMA_H

#include <stddef.h>
#include <stdint.h>

#define NUMA_MAX_NODES 64
#define NUMA_MAX_VCPUS 255
#define NUMA_MAX_RANGES 2 /* a node's slice may be split by the MMIO hole */

struct numa_range {
    uint64_t start, size;
};

struct machine_desc {
    int nr_nodes;
    int nr_vcpus;
    uint64_t mem_size;
    uint8_t vcpu_node[NUMA_MAX_VCPUS];
    int node_nr_ranges[NUMA_MAX_NODES];
    struct numa_range node_ranges[NUMA_MAX_NODES][NUMA_MAX_RANGES];
    uint8_t distance[NUMA_MAX_NODES][NUMA_MAX_NODES];
    uint32_t ioapic_id;
};

/* placement: NULL/"round-robin", "block", or a list "0,0,1,1" of nodes.
 * distance: NULL (20), "N", or a matrix "10,20;20,10". */
int numa_desc_build(struct machine_desc *d, int nodes, int vcpus, uint64_t mem_bytes,
                    const char *placement, const char *distance, char *err, size_t errlen);
int numa_node_of_gpa(const struct machine_desc *d, uint64_t gpa);
int numa_node_of_vcpu(const struct machine_desc *d, int vcpu);

/* Writes RSDP (first), XSDT, FADT, DSDT, MADT, SRAT and SLIT into buf,
 * which the guest sees at buf_gpa. -ENOSPC if they do not fit. */
int acpi_build(const struct machine_desc *d, uint8_t *buf, size_t len, uint64_t buf_gpa,
               uint64_t *rsdp_gpa);

#endif
