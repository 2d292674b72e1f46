/* Unit tests for numa/: the machine description (placements, distances,
 * memory slices around the MMIO hole, node_of_gpa), the ACPI tables built
 * from it (read back through acpi_walk, checksums), and distances from
 * latencies. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <string.h>

#include "numa/numa.h"
#include "tests/unit/unit.h"
#include "platform/platform.h"
#include "vmm/ioapic.h"
#include "vmm/memory.h"

#define MIB (1ULL << 20)
#define GIB (1ULL << 30)

static struct machine_desc d;
static char err[256];

static int build(int nodes, int vcpus, uint64_t mem, const char *placement, const char *dist)
{
    err[0] = 0;
    return numa_desc_build(&d, nodes, vcpus, mem, placement, dist, err, sizeof err);
}

static uint64_t node_bytes(int k)
{
    uint64_t s = 0;
    for (int r = 0; r < d.node_nr_ranges[k]; r++)
        s += d.node_ranges[k][r].size;
    return s;
}

/* ---- placements ------------------------------------------------------------- */

START_TEST(placement_round_robin)
{
    ck_assert_int_eq(build(3, 7, 768 * MIB, NULL, NULL), 0);
    for (int i = 0; i < 7; i++)
        ck_assert_int_eq(numa_node_of_vcpu(&d, i), i % 3);
    ck_assert_int_eq(build(3, 7, 768 * MIB, "round-robin", NULL), 0);
    ck_assert_int_eq(numa_node_of_vcpu(&d, 4), 1);
    ck_assert_int_eq(numa_node_of_vcpu(&d, 7), -1);
    ck_assert_int_eq(numa_node_of_vcpu(&d, -1), -1);
}
END_TEST

START_TEST(placement_block)
{
    static const int want[] = {0, 0, 1, 1, 2, 2, 3, 3};
    ck_assert_int_eq(build(4, 8, 4 * GIB, "block", NULL), 0);
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(d.vcpu_node[i], want[i]);
    /* Fewer vCPUs than nodes: each still lands on a valid node. */
    ck_assert_int_eq(build(4, 2, 256 * MIB, "block", NULL), 0);
    ck_assert_int_eq(d.vcpu_node[0], 0);
    ck_assert_int_eq(d.vcpu_node[1], 2);
}
END_TEST

START_TEST(placement_list)
{
    ck_assert_int_eq(build(2, 4, 256 * MIB, "1,1,0,1", NULL), 0);
    ck_assert_int_eq(d.vcpu_node[0], 1);
    ck_assert_int_eq(d.vcpu_node[2], 0);
    ck_assert_int_eq(build(2, 4, 256 * MIB, "1,1,0", NULL), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "--placement"));
    ck_assert_int_eq(build(2, 2, 256 * MIB, "0,2", NULL), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "only 2 nodes"));
    ck_assert_int_eq(build(2, 2, 256 * MIB, "0,x", NULL), -EINVAL);
    ck_assert_int_eq(build(2, 2, 256 * MIB, "0,-1", NULL), -EINVAL);
    ck_assert_int_eq(build(2, 2, 256 * MIB, "striped", NULL), -EINVAL);
}
END_TEST

/* ---- distances --------------------------------------------------------------- */

START_TEST(distance_default_and_number)
{
    ck_assert_int_eq(build(3, 3, 192 * MIB, NULL, NULL), 0);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            ck_assert_int_eq(d.distance[i][j], i == j ? 10 : 20);
    ck_assert_int_eq(build(3, 3, 192 * MIB, NULL, "31"), 0);
    ck_assert_int_eq(d.distance[0][2], 31);
    ck_assert_int_eq(d.distance[1][1], 10);
}
END_TEST

START_TEST(distance_matrix)
{
    ck_assert_int_eq(build(3, 3, 192 * MIB, NULL, "10,15,30;15,10,25;30,25,10"), 0);
    ck_assert_int_eq(d.distance[0][1], 15);
    ck_assert_int_eq(d.distance[2][0], 30);
    ck_assert_int_eq(d.distance[1][2], 25);
}
END_TEST

START_TEST(distance_errors)
{
    static const char *const bad[] = {
        "10,20;20",             /* not n*n */
        "10,20;30,10",          /* not symmetric */
        "11,20;20,10",          /* self is not 10 */
        "10",                   /* to others below 11 */
        "255",                  /* 255 means unreachable */
        "10,256;256,10",        /* out of a byte */
        "ten",                  /* not a number */
        "10,,20;20,10",         /* empty field */
        "10 20;20 10",          /* wrong separator */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(build(2, 2, 256 * MIB, NULL, bad[i]) == -EINVAL, "accepted '%s'", bad[i]);
        ck_assert_ptr_nonnull(strstr(err, "--distance"));
    }
}
END_TEST

START_TEST(shape_errors)
{
    ck_assert_int_eq(build(0, 1, 256 * MIB, NULL, NULL), -EINVAL);
    ck_assert_int_eq(build(NUMA_MAX_NODES + 1, 1, 256 * MIB, NULL, NULL), -EINVAL);
    ck_assert_int_eq(build(1, 0, 256 * MIB, NULL, NULL), -EINVAL);
    ck_assert_int_eq(build(1, NUMA_MAX_VCPUS + 1, 256 * MIB, NULL, NULL), -EINVAL);
    ck_assert_int_eq(build(1, 1, 255 * MIB, NULL, NULL), -EINVAL); /* not 2M aligned */
    ck_assert_int_eq(build(64, 1, 64 * MIB, NULL, NULL), -EINVAL); /* < 2M per node */
    ck_assert_ptr_nonnull(strstr(err, "--mem"));
}
END_TEST

/* ---- memory slices ------------------------------------------------------------- */

/* Slices are 2M aligned, disjoint, never in the hole, and add up to RAM. */
static void check_slices(void)
{
    uint64_t total = 0;
    for (int k = 0; k < d.nr_nodes; k++) {
        ck_assert_int_ge(d.node_nr_ranges[k], 1);
        for (int r = 0; r < d.node_nr_ranges[k]; r++) {
            const struct numa_range *x = &d.node_ranges[k][r];
            ck_assert_uint_eq(x->start % (2 * MIB), 0);
            ck_assert_uint_gt(x->size, 0);
            ck_assert(x->start + x->size <= GMEM_LOW_LIMIT || x->start >= GMEM_HIGH_BASE);
            ck_assert_int_eq(numa_node_of_gpa(&d, x->start), k);
            ck_assert_int_eq(numa_node_of_gpa(&d, x->start + x->size - 1), k);
            total += x->size;
        }
    }
    ck_assert_uint_eq(total, d.mem_size);
}

START_TEST(slices_below_hole)
{
    ck_assert_int_eq(build(2, 2, 256 * MIB, NULL, NULL), 0);
    check_slices();
    ck_assert_uint_eq(d.node_ranges[1][0].start, 128 * MIB);
    ck_assert_int_eq(numa_node_of_gpa(&d, 128 * MIB - 1), 0);
    ck_assert_int_eq(numa_node_of_gpa(&d, 128 * MIB), 1);
    ck_assert_int_eq(numa_node_of_gpa(&d, 256 * MIB), -1);
}
END_TEST

START_TEST(slices_straddle_hole)
{
    /* 5G over 4: node 2 is [2.5G, 3G) and [4G, 4.75G). */
    ck_assert_int_eq(build(4, 8, 5 * GIB, "block", NULL), 0);
    check_slices();
    ck_assert_int_eq(d.node_nr_ranges[2], 2);
    ck_assert_uint_eq(d.node_ranges[2][0].start, 0xA0000000ULL);
    ck_assert_uint_eq(d.node_ranges[2][0].size, 512 * MIB);
    ck_assert_uint_eq(d.node_ranges[2][1].start, GMEM_HIGH_BASE);
    ck_assert_uint_eq(d.node_ranges[2][1].size, 768 * MIB);
    ck_assert_uint_eq(d.node_ranges[3][0].start, GMEM_HIGH_BASE + 768 * MIB);
    ck_assert_int_eq(numa_node_of_gpa(&d, GMEM_LOW_LIMIT - 1), 2);
    ck_assert_int_eq(numa_node_of_gpa(&d, GMEM_LOW_LIMIT), -1);   /* the hole */
    ck_assert_int_eq(numa_node_of_gpa(&d, 0xFEE00000ULL), -1);    /* the LAPIC */
    ck_assert_int_eq(numa_node_of_gpa(&d, GMEM_HIGH_BASE), 2);
    ck_assert_int_eq(numa_node_of_gpa(&d, GMEM_HIGH_BASE + 2 * GIB - 1), 3);
    ck_assert_int_eq(numa_node_of_gpa(&d, GMEM_HIGH_BASE + 2 * GIB), -1);
}
END_TEST

START_TEST(slices_exactly_at_hole)
{
    /* 4G over 4: node 2 ends exactly at 3G, node 3 is all high. */
    ck_assert_int_eq(build(4, 4, 4 * GIB, NULL, NULL), 0);
    check_slices();
    ck_assert_int_eq(d.node_nr_ranges[2], 1);
    ck_assert_uint_eq(d.node_ranges[2][0].start + d.node_ranges[2][0].size, GMEM_LOW_LIMIT);
    ck_assert_int_eq(d.node_nr_ranges[3], 1);
    ck_assert_uint_eq(d.node_ranges[3][0].start, GMEM_HIGH_BASE);
}
END_TEST

START_TEST(slices_uneven)
{
    /* The last node takes what the 2M-aligned equal slices leave. */
    ck_assert_int_eq(build(3, 3, 4 * GIB, NULL, NULL), 0);
    check_slices();
    ck_assert_uint_eq(node_bytes(0), 1364 * MIB);
    ck_assert_uint_eq(node_bytes(1), 1364 * MIB);
    ck_assert_uint_eq(node_bytes(2), 1368 * MIB);
    ck_assert_int_eq(build(1, 1, 6 * GIB, NULL, NULL), 0);
    check_slices();
    ck_assert_int_eq(d.node_nr_ranges[0], 2);
}
END_TEST

/* ---- ACPI tables ------------------------------------------------------------------ */

#define ACPI_GPA 0xE0000ULL
static uint8_t acpi[0x20000];

struct seen {
    char sigs[16][5];
    int n, bad_sum;
    const uint8_t *srat, *slit, *madt, *dsdt;
    size_t srat_len, slit_len, madt_len, dsdt_len;
};

static int note_table(void *ctx, const char sig[4], const uint8_t *t, size_t len)
{
    struct seen *s = ctx;
    ck_assert_int_lt(s->n, 16);
    memcpy(s->sigs[s->n++], sig, 4);
    s->bad_sum += !acpi_checksum_ok(sig, t, len);
    if (!memcmp(sig, "SRAT", 4))
        s->srat = t, s->srat_len = len;
    if (!memcmp(sig, "SLIT", 4))
        s->slit = t, s->slit_len = len;
    if (!memcmp(sig, "APIC", 4))
        s->madt = t, s->madt_len = len;
    if (!memcmp(sig, "DSDT", 4))
        s->dsdt = t, s->dsdt_len = len;
    return 0;
}

static void walk(struct seen *s)
{
    uint64_t rsdp;
    memset(s, 0, sizeof *s);
    ck_assert_int_eq(acpi_build(&d, acpi, sizeof acpi, ACPI_GPA, &rsdp), 0);
    ck_assert_uint_eq(rsdp, ACPI_GPA);
    ck_assert_int_eq(acpi_walk(acpi, sizeof acpi, ACPI_GPA, rsdp, note_table, s), 0);
}

START_TEST(acpi_tables_and_checksums)
{
    static const char *const want[] = {"RSDP", "XSDT", "FACP", "DSDT", "FACS",
                                       "APIC", "SRAT", "SLIT"};
    struct seen s;
    ck_assert_int_eq(build(4, 8, 5 * GIB, "block", "10,15,20,25;15,10,15,20;20,15,10,15;"
                                                   "25,20,15,10"), 0);
    walk(&s);
    ck_assert_int_eq(s.n, 8);
    for (int i = 0; i < 8; i++)
        ck_assert_str_eq(s.sigs[i], want[i]);
    ck_assert_int_eq(s.bad_sum, 0);
}
END_TEST

START_TEST(acpi_srat_slit_madt_contents)
{
    struct seen s;
    ck_assert_int_eq(build(3, 5, 4 * GIB, "2,0,1,1,0", "10,15,30;15,10,25;30,25,10"), 0);
    walk(&s);
    /* SRAT: 48-byte header, 16-byte CPU entries, 40-byte memory entries. */
    ck_assert_uint_eq(s.srat_len, 48 + 5 * 16 + 4 * 40);
    for (int i = 0; i < 5; i++) {
        const uint8_t *e = s.srat + 48 + 16 * i;
        ck_assert_int_eq(e[0], 0);
        ck_assert_int_eq(e[2], d.vcpu_node[i]);
        ck_assert_int_eq(e[3], i);
    }
    const uint8_t *m = s.srat + 48 + 5 * 16 + 3 * 40; /* node 2's high range */
    uint32_t dom;
    uint64_t base, len;
    memcpy(&dom, m + 2, 4);
    memcpy(&base, m + 8, 8);
    memcpy(&len, m + 16, 8);
    ck_assert_int_eq(m[0], 1);
    ck_assert_uint_eq(dom, 2);
    ck_assert_uint_eq(base, GMEM_HIGH_BASE);
    ck_assert_uint_eq(len, GIB);
    /* SLIT: the matrix after the 8-byte locality count. */
    ck_assert_uint_eq(s.slit_len, 44 + 9);
    ck_assert_int_eq(s.slit[36], 3);
    ck_assert_int_eq(s.slit[44 + 0 * 3 + 2], 30);
    ck_assert_int_eq(s.slit[44 + 2 * 3 + 1], 25);
    /* MADT: one Local APIC entry per vCPU, APIC id = index. */
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(s.madt[44 + 8 * i], 0);
        ck_assert_int_eq(s.madt[44 + 8 * i + 3], i);
    }
}
END_TEST

/* The MADT's IOAPIC entry and the IOAPIC device give the same id at every
 * vCPU count (they once differed from 16 vCPUs on: min(n, 15) against
 * n & 0xf). */
START_TEST(madt_ioapic_id_matches_the_device)
{
    static const int counts[] = {1, 2, 14, 15, 16, 17, 32, 255};
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        int n = counts[k];
        struct seen s;
        ck_assert_int_eq(build(1, n, 64 * MIB, NULL, NULL), 0);
        walk(&s);
        const uint8_t *e = s.madt + 44 + 8 * n; /* after the Local APIC entries */
        ck_assert_int_eq(e[0], 1);             /* I/O APIC */
        uint32_t addr;
        memcpy(&addr, e + 4, 4);
        ck_assert_uint_eq(addr, PLATFORM_IOAPIC_BASE);
        struct ioapic io;
        struct ioapic_out out;
        uint32_t id;
        ioapic_init(&io, platform_ioapic_id(n));
        ioapic_mmio_write(&io, 0, 0, &out); /* IOREGSEL = 0: the ID register */
        ioapic_mmio_read(&io, 0x10, &id);
        ck_assert_msg(e[2] == ((id >> 24) & 0xf), "%d vCPUs: MADT says IOAPIC id %u, device %u",
                      n, e[2], (id >> 24) & 0xf);
    }
}
END_TEST

START_TEST(acpi_max_vcpus_fit)
{
    struct seen s;
    ck_assert_int_eq(build(NUMA_MAX_NODES, NUMA_MAX_VCPUS, 64 * 64 * MIB, NULL, NULL), 0);
    walk(&s);
    ck_assert_int_eq(s.bad_sum, 0);
    uint64_t rsdp;
    ck_assert_int_eq(acpi_build(&d, acpi, 256, ACPI_GPA, &rsdp), -ENOSPC);
}
END_TEST

static int count_in(const uint8_t *p, size_t len, const void *what, size_t n)
{
    int c = 0;
    for (size_t i = 0; i + n <= len; i++)
        c += !memcmp(p + i, what, n);
    return c;
}

/* Each virtio slot in use is an LNRO0005 device in the DSDT with its own
 * window; none without slots; too many slots is refused. */
START_TEST(acpi_dsdt_virtio_devices)
{
    struct seen s;
    ck_assert_int_eq(build(2, 2, 256 * MIB, NULL, NULL), 0);
    ck_assert_int_eq(d.nr_virtio, 0); /* numa_desc_build leaves it to the caller */
    walk(&s);
    ck_assert_ptr_nonnull(s.dsdt);
    ck_assert_int_eq(count_in(s.dsdt, s.dsdt_len, "LNRO0005", 8), 0);
    size_t bare = s.dsdt_len;

    d.nr_virtio = 2;
    walk(&s);
    ck_assert_int_eq(s.bad_sum, 0);
    ck_assert(acpi_checksum_ok("DSDT", s.dsdt, s.dsdt_len));
    ck_assert_uint_gt(s.dsdt_len, bare);
    ck_assert_int_eq(count_in(s.dsdt, s.dsdt_len, "LNRO0005", 8), 2);
    /* Memory32Fixed, read-write, slot 1's base, then its size. */
    uint32_t base = (uint32_t)(PLATFORM_VIRTIO_BASE + PLATFORM_VIRTIO_STRIDE);
    uint32_t size = (uint32_t)PLATFORM_VIRTIO_SIZE;
    uint8_t mem32[12] = {0x86, 9, 0, 1};
    memcpy(mem32 + 4, &base, 4);
    memcpy(mem32 + 8, &size, 4);
    ck_assert_int_eq(count_in(s.dsdt, s.dsdt_len, mem32, sizeof mem32), 1);
    /* Its interrupt: consumer, level, active high, exclusive; one GSI. */
    const uint8_t irq[] = {0x89, 6, 0, 0x01, 1, PLATFORM_VIRTIO_GSI_BASE + 1, 0, 0, 0};
    ck_assert_int_eq(count_in(s.dsdt, s.dsdt_len, irq, sizeof irq), 1);

    uint64_t rsdp;
    d.nr_virtio = PLATFORM_VIRTIO_MAX;
    walk(&s);
    ck_assert_int_eq(s.bad_sum, 0);
    ck_assert_int_eq(count_in(s.dsdt, s.dsdt_len, "LNRO0005", 8), PLATFORM_VIRTIO_MAX);
    d.nr_virtio = PLATFORM_VIRTIO_MAX + 1;
    ck_assert_int_eq(acpi_build(&d, acpi, sizeof acpi, ACPI_GPA, &rsdp), -EINVAL);
    d.nr_virtio = -1;
    ck_assert_int_eq(acpi_build(&d, acpi, sizeof acpi, ACPI_GPA, &rsdp), -EINVAL);
}
END_TEST

/* The DSDT is reserved at its grown size: a buffer that ends one byte
 * short of it is refused, not overrun. */
START_TEST(acpi_dsdt_growth_is_reserved)
{
    struct seen s;
    uint64_t rsdp;
    ck_assert_int_eq(build(1, 1, 64 * MIB, NULL, NULL), 0);
    d.nr_virtio = PLATFORM_VIRTIO_MAX;
    walk(&s);
    size_t end = (size_t)(s.dsdt - acpi) + s.dsdt_len;
    ck_assert_int_eq(acpi_build(&d, acpi, end - 1, ACPI_GPA, &rsdp), -ENOSPC);
}
END_TEST

static int count_tables(void *ctx, const char sig[4], const uint8_t *t, size_t len)
{
    (void)sig, (void)t, (void)len;
    ++*(int *)ctx;
    return 0;
}

START_TEST(acpi_walk_rejects_bad_pointers)
{
    uint64_t rsdp, xsdt;
    int n = 0;
    ck_assert_int_eq(build(2, 2, 256 * MIB, NULL, NULL), 0);
    ck_assert_int_eq(acpi_build(&d, acpi, sizeof acpi, ACPI_GPA, &rsdp), 0);
    /* An RSDP outside the buffer, or a truncated buffer. */
    ck_assert_int_eq(acpi_walk(acpi, sizeof acpi, ACPI_GPA, ACPI_GPA - 16, count_tables, &n),
                     -EINVAL);
    ck_assert_int_eq(acpi_walk(acpi, 20, ACPI_GPA, rsdp, count_tables, &n), -EINVAL);
    /* An XSDT pointer past the end. */
    memcpy(&xsdt, acpi + 24, 8);
    uint64_t far = ACPI_GPA + sizeof acpi - 4;
    memcpy(acpi + 24, &far, 8);
    ck_assert_int_eq(acpi_walk(acpi, sizeof acpi, ACPI_GPA, rsdp, count_tables, &n), -EINVAL);
    memcpy(acpi + 24, &xsdt, 8);
    /* A table whose length runs off the end of the buffer. */
    uint8_t *x = acpi + (xsdt - ACPI_GPA);
    uint32_t huge = 0x7fffffff;
    memcpy(x + 4, &huge, 4);
    ck_assert_int_eq(acpi_walk(acpi, sizeof acpi, ACPI_GPA, rsdp, count_tables, &n), -EINVAL);
}
END_TEST

START_TEST(acpi_checksum_detects_a_flip)
{
    uint64_t rsdp;
    struct seen s;
    ck_assert_int_eq(build(2, 2, 256 * MIB, NULL, NULL), 0);
    walk(&s);
    uint8_t *slit = acpi + (s.slit - acpi);
    ck_assert(acpi_checksum_ok("SLIT", slit, s.slit_len));
    slit[45] ^= 1;
    ck_assert(!acpi_checksum_ok("SLIT", slit, s.slit_len));
    ck_assert_int_eq(acpi_build(&d, acpi, sizeof acpi, ACPI_GPA, &rsdp), 0);
    acpi[16] ^= 1; /* inside the RSDP's first 20 bytes: both sums break */
    ck_assert(!acpi_checksum_ok("RSDP", acpi, 36));
}
END_TEST

/* ---- distances from latencies ------------------------------------------------------- */

START_TEST(distance_from_latency)
{
    ck_assert_int_eq(numa_distance_from_latency(100, 200), 20);
    ck_assert_int_eq(numa_distance_from_latency(100, 300), 30);
    ck_assert_int_eq(numa_distance_from_latency(80, 210), 26);   /* 26.25 rounds down */
    ck_assert_int_eq(numa_distance_from_latency(80, 214), 27);   /* 26.75 rounds up */
    ck_assert_int_eq(numa_distance_from_latency(100, 100), 11);  /* never local */
    ck_assert_int_eq(numa_distance_from_latency(100, 50), 11);
    ck_assert_int_eq(numa_distance_from_latency(100, 2540), 254);
    ck_assert_int_eq(numa_distance_from_latency(90, 2000), 222);
    ck_assert_int_eq(numa_distance_from_latency(100, 1e6), 254); /* never unreachable */
    ck_assert_int_eq(numa_distance_from_latency(0, 100), -EINVAL);
    ck_assert_int_eq(numa_distance_from_latency(100, 0), -EINVAL);
    ck_assert_int_eq(numa_distance_from_latency(-5, 100), -EINVAL);
    ck_assert_int_eq(numa_distance_from_latency(NAN, 100), -EINVAL);
    ck_assert_int_eq(numa_distance_from_latency(100, INFINITY), -EINVAL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("numa");
    TCase *t = tcase_create("numa");
    tcase_add_test(t, placement_round_robin);
    tcase_add_test(t, placement_block);
    tcase_add_test(t, placement_list);
    tcase_add_test(t, distance_default_and_number);
    tcase_add_test(t, distance_matrix);
    tcase_add_test(t, distance_errors);
    tcase_add_test(t, shape_errors);
    tcase_add_test(t, slices_below_hole);
    tcase_add_test(t, slices_straddle_hole);
    tcase_add_test(t, slices_exactly_at_hole);
    tcase_add_test(t, slices_uneven);
    tcase_add_test(t, acpi_tables_and_checksums);
    tcase_add_test(t, acpi_srat_slit_madt_contents);
    tcase_add_test(t, acpi_max_vcpus_fit);
    tcase_add_test(t, madt_ioapic_id_matches_the_device);
    tcase_add_test(t, acpi_walk_rejects_bad_pointers);
    tcase_add_test(t, acpi_checksum_detects_a_flip);
    tcase_add_test(t, acpi_dsdt_virtio_devices);
    tcase_add_test(t, acpi_dsdt_growth_is_reserved);
    tcase_add_test(t, distance_from_latency);
    suite_add_tcase(s, t);
    return run_suite(s);
}
