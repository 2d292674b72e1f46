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

/* ---- AML ------------------------------------------------------------------ */

#define AML_ZERO 0x00
#define AML_ONE 0x01
#define AML_NAME_OP 0x08
#define AML_BYTE_PREFIX 0x0A
#define AML_WORD_PREFIX 0x0B
#define AML_DWORD_PREFIX 0x0C
#define AML_STRING_PREFIX 0x0D
#define AML_SCOPE_OP 0x10
#define AML_BUFFER_OP 0x11
#define AML_PACKAGE_OP 0x12
#define AML_EXT_PREFIX 0x5B
#define AML_DEVICE_OP 0x82 /* after AML_EXT_PREFIX */
#define AML_ROOT_CHAR 0x5C

/* An AML byte stream. With p NULL nothing is written, only counted, so
 * that the DSDT can be measured before it is reserved. */
struct aml {
    uint8_t *p;
    size_t cap, pos;
    int err;
};

static void aml_bytes(struct aml *a, const void *src, size_t n)
{
    if (a->err || n > a->cap - a->pos) {
        a->err = -ENOSPC;
        return;
    }
    if (a->p)
        memcpy(a->p + a->pos, src, n);
    a->pos += n;
}

static void aml_byte(struct aml *a, uint8_t v)
{
    aml_bytes(a, &v, 1);
}

static void aml_le(struct aml *a, uint32_t v, int n)
{
    for (int i = 0; i < n; i++)
        aml_byte(a, (uint8_t)(v >> 8 * i));
}

/* A PkgLength counts its own bytes, and how many it needs depends on the
 * length: so a package is written first and its PkgLength slid in front of
 * it afterwards. aml_open() marks where it goes, aml_close() inserts it. */
static size_t aml_open(const struct aml *a)
{
    return a->pos;
}

static int pkg_length_bytes(size_t body)
{
    if (body + 1 <= 0x3F)
        return 1;
    if (body + 2 <= 0xFFF)
        return 2;
    if (body + 3 <= 0xFFFFF)
        return 3;
    return body + 4 <= 0xFFFFFFF ? 4 : -1;
}

static void aml_close(struct aml *a, size_t start)
{
    size_t body = a->pos - start;
    int n = pkg_length_bytes(body);
    if (a->err || n < 0 || (size_t)n > a->cap - a->pos) {
        a->err = a->err ?: -ENOSPC;
        return;
    }
    size_t v = body + (size_t)n;
    if (a->p) {
        uint8_t *q = a->p + start;
        memmove(q + n, q, body);
        /* One byte holds 6 bits; longer forms keep 4 in the lead byte, whose
         * top two bits say how many bytes follow. */
        q[0] = n == 1 ? (uint8_t)v : (uint8_t)((n - 1) << 6 | (v & 0xF));
        for (int i = 1; i < n; i++)
            q[i] = (uint8_t)(v >> (4 + 8 * (i - 1)));
    }
    a->pos += (size_t)n;
}

static void aml_integer(struct aml *a, uint32_t v)
{
    if (v <= 1) {
        aml_byte(a, v ? AML_ONE : AML_ZERO);
    } else if (v <= 0xFF) {
        aml_byte(a, AML_BYTE_PREFIX);
        aml_le(a, v, 1);
    } else if (v <= 0xFFFF) {
        aml_byte(a, AML_WORD_PREFIX);
        aml_le(a, v, 2);
    } else {
        aml_byte(a, AML_DWORD_PREFIX);
        aml_le(a, v, 4);
    }
}

static void aml_string(struct aml *a, const char *s)
{
    aml_byte(a, AML_STRING_PREFIX);
    aml_bytes(a, s, strlen(s) + 1);
}

/* Name (seg, ...): the value follows. seg is a full 4-character NameSeg. */
static void aml_name(struct aml *a, const char seg[4])
{
    aml_byte(a, AML_NAME_OP);
    aml_bytes(a, seg, 4);
}

static void aml_buffer(struct aml *a, const uint8_t *data, size_t n)
{
    aml_byte(a, AML_BUFFER_OP);
    size_t pkg = aml_open(a);
    aml_integer(a, (uint32_t)n);
    aml_bytes(a, data, n);
    aml_close(a, pkg);
}

/* Name (_S5_, Package (4) { 5, 5, 0, 0 }): lets the guest power off. */
static void aml_s5(struct aml *a)
{
    static const uint8_t vals[] = {5, 5, 0, 0};
    aml_name(a, "_S5_");
    aml_byte(a, AML_PACKAGE_OP);
    size_t pkg = aml_open(a);
    aml_byte(a, sizeof vals); /* NumElements */
    for (size_t i = 0; i < sizeof vals; i++)
        aml_integer(a, vals[i]);
    aml_close(a, pkg);
}

/* ---- resource descriptors (ACPI spec 6.4) ------------------------------------- */

static void res_memory32_fixed(struct aml *r, uint32_t base, uint32_t len)
{
    aml_byte(r, 0x86);
    aml_le(r, 9, 2);
    aml_byte(r, 1); /* read-write */
    aml_le(r, base, 4);
    aml_le(r, len, 4);
}

/* One GSI, as the IOAPIC pins of platform.h are wired: level, active high. */
static void res_interrupt(struct aml *r, uint32_t gsi)
{
    aml_byte(r, 0x89);
    aml_le(r, 6, 2);
    aml_byte(r, 1 << 0); /* consumer; level, active high, exclusive: 0 bits */
    aml_byte(r, 1);      /* one interrupt */
    aml_le(r, gsi, 4);
}

/* The end tag's checksum makes the whole template sum to zero; r must be
 * writing (p set). */
static void res_end(struct aml *r)
{
    aml_byte(r, 0x79);
    if (!r->err)
        aml_byte(r, checksum(r->p, r->pos));
}

/* ---- the DSDT ------------------------------------------------------------------ */

static void aml_virtio_crs(struct aml *a, int slot)
{
    uint8_t tmpl[32];
    struct aml r = {.p = tmpl, .cap = sizeof tmpl};
    res_memory32_fixed(&r, (uint32_t)(PLATFORM_VIRTIO_BASE + (uint64_t)slot *
                                                               PLATFORM_VIRTIO_STRIDE),
                       (uint32_t)PLATFORM_VIRTIO_SIZE);
    res_interrupt(&r, (uint32_t)(PLATFORM_VIRTIO_GSI_BASE + slot));
    res_end(&r);
    if (r.err) {
        a->err = r.err;
        return;
    }
    aml_name(a, "_CRS");
    aml_buffer(a, tmpl, r.pos);
}

/* Device (VRnn): what Linux's virtio_mmio driver binds to through ACPI. */
static void aml_virtio_device(struct aml *a, int slot)
{
    const char seg[4] = {'V', 'R', (char)('0' + slot / 10 % 10), (char)('0' + slot % 10)};
    aml_byte(a, AML_EXT_PREFIX);
    aml_byte(a, AML_DEVICE_OP);
    size_t pkg = aml_open(a);
    aml_bytes(a, seg, 4);
    aml_name(a, "_HID");
    aml_string(a, "LNRO0005");
    aml_name(a, "_UID");
    aml_integer(a, (uint32_t)slot);
    /* Coherent DMA. An x86 OSPM assumes it without _CCA (ACPI spec 6.2.17;
     * Linux requires _CCA only on arm64), but it is true here (device models
     * reach guest memory through the guest view, which the DSM keeps
     * coherent like a vCPU's), costs six bytes, and is what QEMU's microvm
     * and arm virt machines say for the same device. */
    aml_name(a, "_CCA");
    aml_integer(a, 1);
    aml_virtio_crs(a, slot);
    aml_close(a, pkg);
}

static void dsdt_aml(struct aml *a, const struct machine_desc *d)
{
    aml_s5(a);
    if (d->nr_virtio == 0)
        return;
    aml_byte(a, AML_SCOPE_OP);
    size_t pkg = aml_open(a);
    aml_bytes(a, (const uint8_t[]){AML_ROOT_CHAR, '_', 'S', 'B', '_'}, 5);
    for (int i = 0; i < d->nr_virtio; i++)
        aml_virtio_device(a, i);
    aml_close(a, pkg);
}

static uint8_t *build_dsdt(struct builder *b, const struct machine_desc *d)
{
    struct aml count = {.cap = SIZE_MAX};
    dsdt_aml(&count, d);
    if (count.err) {
        b->err = count.err;
        return NULL;
    }
    uint8_t *t = reserve(b, 36 + count.pos, 16);
    if (!t)
        return NULL;
    struct aml out = {.p = t + 36, .cap = count.pos};
    dsdt_aml(&out, d);
    if (out.err) {
        b->err = out.err;
        return NULL;
    }
    header(t, "DSDT", (uint32_t)(36 + out.pos), 2);
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
    if (d->nr_virtio < 0 || d->nr_virtio > PLATFORM_VIRTIO_MAX)
        return -EINVAL;
    struct builder b = {.buf = buf, .len = len, .gpa = buf_gpa};
    uint8_t *rsdp = reserve(&b, 36, 16);
    uint8_t *dsdt = build_dsdt(&b, d), *facs = build_facs(&b);
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
