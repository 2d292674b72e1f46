/* ACPI tables from the machine description (see numa.h). Layouts follow
 * the ACPI 6.x specification; every table carries a correct checksum. */
#include <errno.h>
#include <string.h>

#include "numa/numa.h"
#include "platform/platform.h"

#define LAPIC_ADDR ((uint32_t)PLATFORM_LAPIC_BASE)
#define IOAPIC_ADDR ((uint32_t)PLATFORM_IOAPIC_BASE)
#define SCI_IRQ PLATFORM_SCI_IRQ
#define PM1A_EVT PLATFORM_PM1A_EVT_PORT
#define PM1A_CNT PLATFORM_PM1A_CNT_PORT
#define PM_TMR PLATFORM_PM_TMR_PORT
#define RESET_PORT PLATFORM_RESET_PORT

struct builder {
    uint8_t *buf;
    size_t len, pos;
    uint64_t gpa;
    int err;
};

static void put8(uint8_t *p, uint8_t v) { *p = v; }
static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static uint8_t checksum(const uint8_t *p, size_t n)
{
    uint8_t s = 0;
    while (n--)
        s += *p++;
    return (uint8_t)(0 - s);
}

/* Reserves n zeroed bytes aligned to align; returns NULL once out of room. */
static uint8_t *reserve(struct builder *b, size_t n, size_t align)
{
    size_t at = (b->pos + align - 1) & ~(align - 1);
    if (b->err || at + n > b->len) {
        b->err = -ENOSPC;
        return NULL;
    }
    b->pos = at + n;
    memset(b->buf + at, 0, n);
    return b->buf + at;
}

static uint64_t gpa_of(const struct builder *b, const uint8_t *p)
{
    return b->gpa + (uint64_t)(p - b->buf);
}

static void header(uint8_t *t, const char *sig, uint32_t len, uint8_t rev)
{
    memcpy(t, sig, 4);
    put32(t + 4, len);
    put8(t + 8, rev);
    memcpy(t + 10, "AMALGM", 6);
    memcpy(t + 16, "AMALGAM ", 8);
    put32(t + 24, 1);
    memcpy(t + 28, "AMLG", 4);
    put32(t + 32, 1);
}

static void seal(uint8_t *t)
{
    uint32_t len;
    memcpy(&len, t + 4, 4);
    t[9] = 0;
    t[9] = checksum(t, len);
}

/* Generic Address Structure for a system-I/O register. */
static void gas_io(uint8_t *p, uint8_t bits, uint16_t port)
{
    put8(p, 1);
    put8(p + 1, bits);
    put8(p + 3, bits == 8 ? 1 : bits == 16 ? 2 : 3);
    put64(p + 4, port);
}

static uint8_t *build_dsdt(struct builder *b)
{
    /* Name (_S5_, Package (4) { 5, 5, 0, 0 }): lets the guest power off. */
    static const uint8_t aml[] = {0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04,
                                  0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00};
    uint8_t *t = reserve(b, 36 + sizeof aml, 16);
    if (!t)
        return NULL;
    header(t, "DSDT", 36 + sizeof aml, 2);
    memcpy(t + 36, aml, sizeof aml);
    seal(t);
    return t;
}

static uint8_t *build_facs(struct builder *b)
{
    uint8_t *t = reserve(b, 64, 64);
    if (!t)
        return NULL;
    memcpy(t, "FACS", 4);
    put32(t + 4, 64);
    put8(t + 32, 2); /* version */
    return t;
}

static uint8_t *build_fadt(struct builder *b, const uint8_t *dsdt, const uint8_t *facs)
{
    uint8_t *t = reserve(b, 276, 16);
    if (!t || !dsdt || !facs)
        return NULL;
    header(t, "FACP", 276, 6);
    /* FACS only through X_FIRMWARE_CTRL: setting both lists it twice. */
    put32(t + 40, (uint32_t)gpa_of(b, dsdt));
    put16(t + 46, SCI_IRQ);
    put32(t + 56, PM1A_EVT);
    put32(t + 64, PM1A_CNT);
    put32(t + 76, PM_TMR);
    put8(t + 88, 4);
    put8(t + 89, 2);
    put8(t + 91, 4);
    put16(t + 96, 101);  /* no C2 */
    put16(t + 98, 1001); /* no C3 */
    /* IAPC_BOOT_ARCH: no 8042, no VGA, no CMOS RTC. */
    put16(t + 109, (1u << 2) | (1u << 5));
    /* WBINVD, PROC_C1, SLP_BUTTON absent, RESET_REG_SUP; PWR_BUTTON clear:
     * the power button is the fixed one in PM1 (the monitor's
     * system_powerdown). */
    put32(t + 112, (1u << 0) | (1u << 2) | (1u << 5) | (1u << 10));
    gas_io(t + 116, 8, RESET_PORT);
    put8(t + 128, 0x06);
    put8(t + 131, 4);
    put64(t + 132, gpa_of(b, facs));
    put64(t + 140, gpa_of(b, dsdt));
    gas_io(t + 148, 32, PM1A_EVT);
    gas_io(t + 172, 16, PM1A_CNT);
    gas_io(t + 208, 32, PM_TMR);
    memcpy(t + 268, "AMALGAM\0", 8);
    seal(t);
    return t;
}

static uint8_t *build_madt(struct builder *b, const struct machine_desc *d)
{
    size_t len = 44 + 8 * (size_t)d->nr_vcpus + 12 + 10 * 2 + 6;
    uint8_t *t = reserve(b, len, 16);
    if (!t)
        return NULL;
    header(t, "APIC", (uint32_t)len, 5);
    put32(t + 36, LAPIC_ADDR);
    put32(t + 40, 0); /* no dual 8259 */
    uint8_t *p = t + 44;
    for (int i = 0; i < d->nr_vcpus; i++, p += 8) {
        put8(p, 0);
        put8(p + 1, 8);
        put8(p + 2, (uint8_t)i);
        put8(p + 3, (uint8_t)i); /* APIC id = vCPU index */
        put32(p + 4, 1);
    }
    put8(p, 1);
    put8(p + 1, 12);
    put8(p + 2, (uint8_t)d->ioapic_id);
    put32(p + 4, IOAPIC_ADDR);
    put32(p + 8, 0);
    p += 12;
    const struct {
        uint8_t irq;
        uint32_t gsi;
        uint16_t flags;
    } iso[2] = {{0, 2, 0}, {SCI_IRQ, SCI_IRQ, 0x000D /* level, active high */}};
    for (int i = 0; i < 2; i++, p += 10) {
        put8(p, 2);
        put8(p + 1, 10);
        put8(p + 3, iso[i].irq);
        put32(p + 4, iso[i].gsi);
        put16(p + 8, iso[i].flags);
    }
    put8(p, 4); /* LINT1 is NMI on every processor */
    put8(p + 1, 6);
    put8(p + 2, 0xFF);
    put8(p + 5, 1);
    seal(t);
    return t;
}

static uint8_t *build_srat(struct builder *b, const struct machine_desc *d)
{
    int ranges = 0;
    for (int k = 0; k < d->nr_nodes; k++)
        ranges += d->node_nr_ranges[k];
    size_t len = 48 + 16 * (size_t)d->nr_vcpus + 40 * (size_t)ranges;
    uint8_t *t = reserve(b, len, 16);
    if (!t)
        return NULL;
    header(t, "SRAT", (uint32_t)len, 3);
    put32(t + 36, 1);
    uint8_t *p = t + 48;
    for (int i = 0; i < d->nr_vcpus; i++, p += 16) {
        put8(p, 0);
        put8(p + 1, 16);
        put8(p + 2, d->vcpu_node[i]);
        put8(p + 3, (uint8_t)i);
        put32(p + 4, 1);
    }
    for (int k = 0; k < d->nr_nodes; k++)
        for (int r = 0; r < d->node_nr_ranges[k]; r++, p += 40) {
            const struct numa_range *x = &d->node_ranges[k][r];
            put8(p, 1);
            put8(p + 1, 40);
            put32(p + 2, (uint32_t)k);
            put64(p + 8, x->start);
            put64(p + 16, x->size);
            put32(p + 28, 1);
        }
    seal(t);
    return t;
}

static uint8_t *build_slit(struct builder *b, const struct machine_desc *d)
{
    size_t n = (size_t)d->nr_nodes, len = 44 + n * n;
    uint8_t *t = reserve(b, len, 16);
    if (!t)
        return NULL;
    header(t, "SLIT", (uint32_t)len, 1);
    put64(t + 36, n);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            t[44 + i * n + j] = d->distance[i][j];
    seal(t);
    return t;
}

int acpi_build(const struct machine_desc *d, uint8_t *buf, size_t len, uint64_t buf_gpa,
               uint64_t *rsdp_gpa)
{
    struct builder b = {.buf = buf, .len = len, .gpa = buf_gpa};
    uint8_t *rsdp = reserve(&b, 36, 16);
    uint8_t *dsdt = build_dsdt(&b), *facs = build_facs(&b);
    uint8_t *tables[] = {build_fadt(&b, dsdt, facs), build_madt(&b, d), build_srat(&b, d),
                         build_slit(&b, d)};
    const size_t nt = sizeof tables / sizeof tables[0];
    uint8_t *xsdt = reserve(&b, 36 + 8 * nt, 16);
    if (b.err || !rsdp)
        return -ENOSPC;
    header(xsdt, "XSDT", (uint32_t)(36 + 8 * nt), 1);
    for (size_t i = 0; i < nt; i++)
        put64(xsdt + 36 + 8 * i, gpa_of(&b, tables[i]));
    seal(xsdt);

    memcpy(rsdp, "RSD PTR ", 8);
    memcpy(rsdp + 9, "AMALGM", 6);
    put8(rsdp + 15, 2);
    put32(rsdp + 20, 36);
    put64(rsdp + 24, gpa_of(&b, xsdt));
    rsdp[8] = checksum(rsdp, 20);
    rsdp[32] = checksum(rsdp, 36);
    *rsdp_gpa = buf_gpa;
    return 0;
}
