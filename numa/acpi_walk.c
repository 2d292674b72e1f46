/* Reading back the tables acpi_build() wrote (see numa.h): a bounded walk
 * that trusts no pointer or length in the buffer. */
#include <errno.h>
#include <string.h>

#include "numa/numa.h"

#define HDR_LEN 36
#define RSDP_LEN 36
#define FACS_MIN_LEN 64

struct walk {
    const uint8_t *buf;
    size_t len;
    uint64_t gpa;
    acpi_table_fn fn;
    void *ctx;
};

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static int sig_ok(const uint8_t *s)
{
    for (int i = 0; i < 4; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

/* The table at guest address addr, if its header and its whole claimed
 * length lie inside the buffer. */
static const uint8_t *table_at(const struct walk *w, uint64_t addr, size_t min_len,
                               size_t *tlen)
{
    if (addr < w->gpa || addr - w->gpa > w->len)
        return NULL;
    size_t off = (size_t)(addr - w->gpa), room = w->len - off;
    if (room < 8 || !sig_ok(w->buf + off))
        return NULL;
    uint32_t l = get32(w->buf + off + 4);
    if (l < min_len || l > room)
        return NULL;
    *tlen = l;
    return w->buf + off;
}

static int visit(const struct walk *w, uint64_t addr, size_t min_len, const char *want)
{
    size_t tlen;
    const uint8_t *t = table_at(w, addr, min_len, &tlen);
    if (!t || (want && memcmp(t, want, 4)))
        return -EINVAL;
    return w->fn(w->ctx, (const char *)t, t, tlen);
}

/* The FADT's DSDT and FACS: the 64-bit X_ fields when the FADT is long
 * enough to have them and they are set, else the 32-bit ones. */
static int visit_fadt_children(const struct walk *w, const uint8_t *f, size_t flen)
{
    uint64_t facs = flen >= 140 ? get64(f + 132) : 0;
    uint64_t dsdt = flen >= 148 ? get64(f + 140) : 0;
    if (!facs && flen >= 40)
        facs = get32(f + 36);
    if (!dsdt && flen >= 44)
        dsdt = get32(f + 40);
    int r = dsdt ? visit(w, dsdt, HDR_LEN, "DSDT") : 0;
    return r ? r : facs ? visit(w, facs, FACS_MIN_LEN, "FACS") : 0;
}

static int visit_xsdt(const struct walk *w, uint64_t addr)
{
    size_t xlen;
    const uint8_t *x = table_at(w, addr, HDR_LEN, &xlen);
    if (!x || memcmp(x, "XSDT", 4) || (xlen - HDR_LEN) % 8)
        return -EINVAL;
    int r = w->fn(w->ctx, "XSDT", x, xlen);
    for (size_t i = HDR_LEN; !r && i < xlen; i += 8) {
        size_t tlen;
        const uint8_t *t = table_at(w, get64(x + i), HDR_LEN, &tlen);
        if (!t)
            return -EINVAL;
        r = w->fn(w->ctx, (const char *)t, t, tlen);
        if (!r && !memcmp(t, "FACP", 4))
            r = visit_fadt_children(w, t, tlen);
    }
    return r;
}

int acpi_walk(const uint8_t *buf, size_t len, uint64_t buf_gpa, uint64_t rsdp_gpa,
              acpi_table_fn fn, void *ctx)
{
    struct walk w = {.buf = buf, .len = len, .gpa = buf_gpa, .fn = fn, .ctx = ctx};
    if (rsdp_gpa < buf_gpa || rsdp_gpa - buf_gpa > len || len - (rsdp_gpa - buf_gpa) < RSDP_LEN)
        return -EINVAL;
    const uint8_t *rsdp = buf + (rsdp_gpa - buf_gpa);
    if (memcmp(rsdp, "RSD PTR ", 8) || rsdp[15] < 2 || get32(rsdp + 20) != RSDP_LEN)
        return -EINVAL;
    int r = fn(ctx, "RSDP", rsdp, RSDP_LEN);
    return r ? r : visit_xsdt(&w, get64(rsdp + 24));
}

static uint8_t sum(const uint8_t *p, size_t n)
{
    uint8_t s = 0;
    while (n--)
        s += *p++;
    return s;
}

int acpi_checksum_ok(const char sig[4], const uint8_t *table, size_t len)
{
    if (!memcmp(sig, "FACS", 4))
        return 1;
    if (!memcmp(sig, "RSDP", 4))
        return len >= RSDP_LEN && sum(table, 20) == 0 && sum(table, RSDP_LEN) == 0;
    return sum(table, len) == 0;
}
