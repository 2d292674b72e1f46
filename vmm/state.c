/* Component state <-> protobuf (see state.h). */
#include <errno.h>
#include <string.h>

#include "proto/state.pb-c.h"
#include "vmm/state.h"

#define PACK(type, msg, buf, len)                                                        \
    do {                                                                                 \
        size_t need_ = amalgam__##type##__get_packed_size(msg);                          \
        if (need_ > (len))                                                               \
            return -ENOSPC;                                                              \
        return (int)amalgam__##type##__pack(msg, buf);                                   \
    } while (0)

/* ---- LAPIC ---------------------------------------------------------------- */

int state_lapic_encode(const struct lapic *a, uint64_t now_ns, uint8_t *buf, size_t len)
{
    struct lapic_snapshot s;
    lapic_save(a, now_ns, &s);
    const struct lapic *r = &s.regs;
    uint32_t lvt[LVT_COUNT], irr[8], isr[8], tmr[8];
    memcpy(lvt, r->lvt, sizeof lvt);
    memcpy(irr, r->irr, sizeof irr);
    memcpy(isr, r->isr, sizeof isr);
    memcpy(tmr, r->tmr, sizeof tmr);
    Amalgam__LapicState m = AMALGAM__LAPIC_STATE__INIT;
    m.version = STATE_VERSION;
    m.id = r->id;
    m.apic_base = r->apic_base;
    m.tpr = r->tpr, m.ldr = r->ldr, m.dfr = r->dfr, m.svr = r->svr;
    m.esr = r->esr, m.esr_pending = r->esr_pending;
    m.icr_lo = r->icr_lo, m.icr_hi = r->icr_hi;
    m.n_lvt = LVT_COUNT, m.lvt = lvt;
    m.timer_initial = r->timer_initial, m.timer_divide = r->timer_divide;
    m.n_irr = 8, m.irr = irr;
    m.n_isr = 8, m.isr = isr;
    m.n_tmr = 8, m.tmr = tmr;
    m.timer_remaining_ns = s.timer_remaining_ns;
    m.timer_elapsed_ns = s.timer_elapsed_ns;
    m.tsc_deadline = r->tsc_deadline;
    m.nmi_pending = r->nmi_pending, m.init_pending = r->init_pending;
    m.sipi_pending = r->sipi_pending, m.sipi_vector = r->sipi_vector;
    PACK(lapic_state, &m, buf, len);
}

/* What a real LAPIC could hold: an APIC base that is page-aligned below
 * 2^52 with only the BSP/EXTD/EN flags, an 8-bit TPR, a TDCR with only its
 * divide bits, 8-bit vectors, a timer that is not due beyond a day. */
static bool lapic_state_ok(const Amalgam__LapicState *m)
{
    const uint64_t flags = APICBASE_BSP | APICBASE_EXTD | APICBASE_EN;
    const uint64_t day = 86400ULL * 1000000000ULL;
    return m->version == STATE_VERSION && m->n_lvt == LVT_COUNT && m->n_irr == 8 &&
           m->n_isr == 8 && m->n_tmr == 8 && !(m->apic_base & 0xfff & ~flags) &&
           m->apic_base >> 52 == 0 && m->tpr <= 0xff && !(m->timer_divide & ~0xbu) &&
           m->sipi_vector <= 0xff && m->timer_remaining_ns <= day && m->timer_elapsed_ns <= day;
}

int state_lapic_decode(struct lapic *a, uint64_t now_ns, const uint8_t *buf, size_t len)
{
    Amalgam__LapicState *m = amalgam__lapic_state__unpack(NULL, len, buf);
    if (!m)
        return -EINVAL;
    if (!lapic_state_ok(m)) {
        amalgam__lapic_state__free_unpacked(m, NULL);
        return -EINVAL;
    }
    struct lapic_snapshot s;
    memset(&s, 0, sizeof s);
    struct lapic *r = &s.regs;
    r->id = m->id;
    r->apic_base = m->apic_base;
    r->tpr = m->tpr, r->ldr = m->ldr, r->dfr = m->dfr, r->svr = m->svr;
    r->esr = m->esr, r->esr_pending = m->esr_pending;
    r->icr_lo = m->icr_lo, r->icr_hi = m->icr_hi;
    memcpy(r->lvt, m->lvt, sizeof r->lvt);
    r->timer_initial = m->timer_initial, r->timer_divide = m->timer_divide;
    memcpy(r->irr, m->irr, sizeof r->irr);
    memcpy(r->isr, m->isr, sizeof r->isr);
    memcpy(r->tmr, m->tmr, sizeof r->tmr);
    r->tsc_deadline = m->tsc_deadline;
    r->nmi_pending = m->nmi_pending, r->init_pending = m->init_pending;
    r->sipi_pending = m->sipi_pending, r->sipi_vector = (uint8_t)m->sipi_vector;
    s.timer_remaining_ns = m->timer_remaining_ns;
    s.timer_elapsed_ns = m->timer_elapsed_ns;
    amalgam__lapic_state__free_unpacked(m, NULL);
    lapic_restore(a, &s, now_ns);
    return 0;
}

/* ---- IOAPIC ----------------------------------------------------------------- */

int state_ioapic_encode(const struct ioapic *io, uint8_t *buf, size_t len)
{
    uint64_t redir[IOAPIC_PINS];
    memcpy(redir, io->redir, sizeof redir);
    Amalgam__IoapicState m = AMALGAM__IOAPIC_STATE__INIT;
    m.version = STATE_VERSION;
    m.id = io->id, m.ioregsel = io->ioregsel;
    m.n_redir = IOAPIC_PINS, m.redir = redir;
    m.pin_level = io->pin_level, m.remote_irr = io->remote_irr;
    PACK(ioapic_state, &m, buf, len);
}

int state_ioapic_decode(struct ioapic *io, const uint8_t *buf, size_t len)
{
    Amalgam__IoapicState *m = amalgam__ioapic_state__unpack(NULL, len, buf);
    if (!m)
        return -EINVAL;
    int r = -EINVAL;
    if (m->version == STATE_VERSION && m->n_redir == IOAPIC_PINS && m->id <= 0xf &&
        m->ioregsel <= 0xff && !(m->pin_level >> IOAPIC_PINS) && !(m->remote_irr >> IOAPIC_PINS)) {
        io->id = m->id, io->ioregsel = m->ioregsel;
        memcpy(io->redir, m->redir, sizeof io->redir);
        io->pin_level = m->pin_level, io->remote_irr = m->remote_irr;
        r = 0;
    }
    amalgam__ioapic_state__free_unpacked(m, NULL);
    return r;
}

/* ---- UART ------------------------------------------------------------------- */

#define UART_REGS 9

int state_uart_encode(const struct uart *u, bool irq_line, uint8_t *buf, size_t len)
{
    uint8_t regs[UART_REGS] = {u->ier, u->lcr, u->mcr, u->lsr, u->msr,
                               u->scr, u->dll, u->dlm, u->fcr};
    uint8_t rx[UART_RX_FIFO];
    unsigned n = u->rx_count <= UART_RX_FIFO ? u->rx_count : UART_RX_FIFO;
    for (unsigned i = 0; i < n; i++)
        rx[i] = u->rx[(u->rx_head + i) % UART_RX_FIFO];
    Amalgam__UartState m = AMALGAM__UART_STATE__INIT;
    m.version = STATE_VERSION;
    m.regs = (ProtobufCBinaryData){UART_REGS, regs};
    m.thri_pending = u->thri_pending;
    m.irq_line = irq_line;
    m.rx = (ProtobufCBinaryData){n, rx};
    PACK(uart_state, &m, buf, len);
}

int state_uart_decode(struct uart *u, bool *irq_line, const uint8_t *buf, size_t len)
{
    Amalgam__UartState *m = amalgam__uart_state__unpack(NULL, len, buf);
    if (!m)
        return -EINVAL;
    int r = -EINVAL;
    if (m->version == STATE_VERSION && m->regs.len == UART_REGS && m->rx.len <= UART_RX_FIFO) {
        const uint8_t *g = m->regs.data;
        u->ier = g[0], u->lcr = g[1], u->mcr = g[2], u->lsr = g[3], u->msr = g[4];
        u->scr = g[5], u->dll = g[6], u->dlm = g[7], u->fcr = g[8];
        u->thri_pending = m->thri_pending;
        memcpy(u->rx, m->rx.data, m->rx.len);
        u->rx_head = 0;
        u->rx_count = (unsigned)m->rx.len;
        *irq_line = m->irq_line;
        r = 0;
    }
    amalgam__uart_state__free_unpacked(m, NULL);
    return r;
}

/* ---- ACPI PM ---------------------------------------------------------------- */

int state_pm_encode(uint64_t timer_ns, uint16_t pm1_enable, uint8_t *buf, size_t len)
{
    Amalgam__PmState m = AMALGAM__PM_STATE__INIT;
    m.version = STATE_VERSION;
    m.timer_ns = timer_ns;
    m.pm1_enable = pm1_enable;
    PACK(pm_state, &m, buf, len);
}

int state_pm_decode(uint64_t *timer_ns, uint16_t *pm1_enable, const uint8_t *buf, size_t len)
{
    Amalgam__PmState *m = amalgam__pm_state__unpack(NULL, len, buf);
    if (!m)
        return -EINVAL;
    int r = -EINVAL;
    if (m->version == STATE_VERSION && m->pm1_enable <= 0xffff) {
        *timer_ns = m->timer_ns;
        *pm1_enable = (uint16_t)m->pm1_enable;
        r = 0;
    }
    amalgam__pm_state__free_unpacked(m, NULL);
    return r;
}
