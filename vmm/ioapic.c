/* IOAPIC model (see ioapic.h). */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "vmm/ioapic.h"

#define REDIR_MASKED (1ULL << 16)
#define REDIR_LEVEL (1ULL << 15)
#define REDIR_REMOTE_IRR (1ULL << 14)
#define REDIR_ACTIVE_LOW (1ULL << 13)
#define REDIR_STATUS (1ULL << 12)
#define REDIR_LOGICAL (1ULL << 11)
#define REDIR_WRITABLE 0xFF0000000001AFFFULL /* RO: status, remote IRR */

void ioapic_init(struct ioapic *io, uint32_t id)
{
    memset(io, 0, sizeof *io);
    io->id = id & 0xf;
    for (int i = 0; i < IOAPIC_PINS; i++)
        io->redir[i] = REDIR_MASKED;
}

static bool asserted(const struct ioapic *io, int pin)
{
    bool line = io->pin_level & (1u << pin);
    return (io->redir[pin] & REDIR_ACTIVE_LOW) ? !line : line;
}

static void emit(struct ioapic *io, int pin, struct ioapic_out *out)
{
    uint64_t r = io->redir[pin];
    if (r & REDIR_MASKED)
        return;
    if ((r & REDIR_LEVEL) && (io->remote_irr & (1u << pin)))
        return;
    struct apic_msg *m = &out->msg[out->n++];
    memset(m, 0, sizeof *m);
    m->vector = r & 0xff;
    m->delivery = (r >> 8) & 7;
    m->dest_logical = (r & REDIR_LOGICAL) != 0;
    m->trigger_level = (r & REDIR_LEVEL) != 0;
    m->level = 1;
    m->dest = (uint32_t)(r >> 56);
    m->src_id = 0xffffffffu;
    if (r & REDIR_LEVEL)
        io->remote_irr |= 1u << pin;
}

int ioapic_mmio_read(struct ioapic *io, uint64_t offset, uint32_t *val)
{
    *val = 0;
    if (offset == 0x00) {
        *val = io->ioregsel;
        return 0;
    }
    if (offset != 0x10)
        return 0;
    uint32_t reg = io->ioregsel & 0xff;
    if (reg == 0x00)
        *val = io->id << 24;
    else if (reg == 0x01)
        *val = ((IOAPIC_PINS - 1) << 16) | 0x11;
    else if (reg == 0x02)
        *val = io->id << 24;
    else if (reg >= 0x10 && reg < 0x10 + 2 * IOAPIC_PINS) {
        int pin = (int)(reg - 0x10) / 2;
        uint64_t r = io->redir[pin] & ~REDIR_REMOTE_IRR;
        if (io->remote_irr & (1u << pin))
            r |= REDIR_REMOTE_IRR;
        *val = (reg & 1) ? (uint32_t)(r >> 32) : (uint32_t)r;
    }
    return 0;
}

int ioapic_mmio_write(struct ioapic *io, uint64_t offset, uint32_t val, struct ioapic_out *out)
{
    out->n = 0;
    if (offset == 0x00) {
        io->ioregsel = val;
        return 0;
    }
    if (offset != 0x10)
        return -EINVAL;
    uint32_t reg = io->ioregsel & 0xff;
    int r = 0;
    if (reg == 0x00) {
        io->id = (val >> 24) & 0xf;
    } else if (reg >= 0x10 && reg < 0x10 + 2 * IOAPIC_PINS) {
        int pin = (int)(reg - 0x10) / 2;
        uint64_t r = io->redir[pin];
        if (reg & 1)
            r = (r & 0xffffffffULL) | ((uint64_t)val << 32);
        else
            r = (r & ~0xffffffffULL) | val;
        io->redir[pin] = r & REDIR_WRITABLE;
        if (!(r & REDIR_LEVEL))
            io->remote_irr &= ~(1u << pin);
        /* Unmasking a still-asserted level pin delivers it now. */
        if ((r & REDIR_LEVEL) && asserted(io, pin))
            emit(io, pin, out);
        /* kept, as hardware would (the receiving LAPIC refuses it), but noted */
        if (!(io->redir[pin] & REDIR_MASKED) && (io->redir[pin] & 0xff) < 16)
            return -ERANGE;
    } else {
        r = -EINVAL; /* read-only (version, arbitration) or no such register */
    }
    return r;
}

int ioapic_set_irq(struct ioapic *io, int pin, int level, struct ioapic_out *out)
{
    out->n = 0;
    if (pin < 0 || pin >= IOAPIC_PINS)
        return -EINVAL;
    bool was = asserted(io, pin);
    if (level)
        io->pin_level |= 1u << pin;
    else
        io->pin_level &= ~(1u << pin);
    bool now = asserted(io, pin);
    if (io->redir[pin] & REDIR_LEVEL) {
        if (now)
            emit(io, pin, out);
    } else if (now && !was) {
        emit(io, pin, out);
    }
    return 0;
}

void ioapic_eoi(struct ioapic *io, uint8_t vector, struct ioapic_out *out)
{
    out->n = 0;
    for (int pin = 0; pin < IOAPIC_PINS; pin++) {
        if ((io->redir[pin] & 0xff) != vector || !(io->remote_irr & (1u << pin)))
            continue;
        io->remote_irr &= ~(1u << pin);
        if ((io->redir[pin] & REDIR_LEVEL) && asserted(io, pin))
            emit(io, pin, out);
    }
}
