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
    /* virtio-mmio slots in use: 0..nr_virtio-1, each where platform.h
     * puts it (PLATFORM_VIRTIO_*), announced in the DSDT. */
    int nr_virtio;
};

/* placement: NULL/"round-robin", "block", or a list "0,0,1,1" of nodes.
 * distance: NULL (20), "N", or a matrix "10,20;20,10". */
int numa_desc_build(struct machine_desc *d, int nodes, int vcpus, uint64_t mem_bytes,
                    const char *placement, const char *distance, char *err, size_t errlen);
int numa_node_of_gpa(const struct machine_desc *d, uint64_t gpa);
int numa_node_of_vcpu(const struct machine_desc *d, int vcpu);

/* Writes RSDP (first), XSDT, FADT, DSDT, MADT, SRAT and SLIT into buf,
 * which the guest sees at buf_gpa. -ENOSPC if they do not fit, -EINVAL for
 * nr_virtio outside 0..PLATFORM_VIRTIO_MAX. */
int acpi_build(const struct machine_desc *d, uint8_t *buf, size_t len, uint64_t buf_gpa,
               uint64_t *rsdp_gpa);

/* Walks an acpi_build() buffer as a guest's firmware reader would: the
 * RSDP at rsdp_gpa (passed to fn as "RSDP"), the XSDT, every table the XSDT
 * lists, and the DSDT and FACS the FADT points at. Every address and
 * length is checked against the buffer and every signature must be four
 * of [A-Z0-9_]: -EINVAL otherwise. Checksums are not checked here, so that
 * a tool can still show a table whose checksum is wrong (acpi_checksum_ok).
 * Stops at, and returns, fn's first non-zero return. */
typedef int (*acpi_table_fn)(void *ctx, const char sig[4], const uint8_t *table, size_t len);
int acpi_walk(const uint8_t *buf, size_t len, uint64_t buf_gpa, uint64_t rsdp_gpa,
              acpi_table_fn fn, void *ctx);
/* Whether a table (or the RSDP, both of its checksums) sums to zero; the
 * FACS has no checksum and is always fine. */
int acpi_checksum_ok(const char sig[4], const uint8_t *table, size_t len);

/* The SLIT distance of a node whose memory takes remote_ns to reach where
 * local memory takes local_ns: 10 * remote / local, rounded, clamped to
 * 11..254 (ACPI: 10 is local, 255 unreachable). -EINVAL unless both are
 * positive and finite. */
int numa_distance_from_latency(double local_ns, double remote_ns);
/* Nanoseconds of one dependent load from memory that misses the caches:
 * the "local" latency for numa_distance_from_latency. */
int numa_measure_local_ns(double *ns);

#endif
