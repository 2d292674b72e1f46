/* Local APIC register model (see lapic.h). Intel SDM vol. 3, ch. 11. */
#include <errno.h>
#include <string.h>

#include "vmm/lapic.h"

#define REG_ID 0x20
#define REG_VERSION 0x30
#define REG_TPR 0x80
#define REG_APR 0x90
#define REG_PPR 0xA0
#define REG_EOI 0xB0
#define REG_RRD 0xC0
#define REG_LDR 0xD0
#define REG_DFR 0xE0
#define REG_SVR 0xF0
#define REG_ISR 0x100
#define REG_TMR 0x180
#define REG_IRR 0x200
#define REG_ESR 0x280
#define REG_LVT_CMCI 0x2F0
#define REG_ICR_LO 0x300
#define REG_ICR_HI 0x310
#define REG_LVT_TIMER 0x320
#define REG_LVT_ERROR 0x370
#define REG_TMICT 0x380
#define REG_TMCCT 0x390
#define REG_TDCR 0x3E0
#define REG_SELF_IPI 0x3F0

#define LVT_MASKED (1u << 16)
#define SVR_ENABLE (1u << 8)
#define ESR_RECV_ILLEGAL (1u << 6)
#define ESR_SEND_ILLEGAL (1u << 5)
/* Version 0x14 (integrated APIC), max LVT entry index 6 (CMCI included). */
#define LAPIC_VERSION (0x14u | (6u << 16))

static const uint32_t lvt_valid_mask[LVT_COUNT] = {
    [LVT_CMCI] = 0x000117FF,   [LVT_TIMER] = 0x000710FF, [LVT_THERMAL] = 0x000117FF,
    [LVT_PERF] = 0x000117FF,   [LVT_LINT0] = 0x0001F7FF, [LVT_LINT1] = 0x0001F7FF,
    [LVT_ERROR] = 0x000110FF,
};

static bool x2apic(const struct lapic *a) { return a->apic_base & APICBASE_EXTD; }
static bool hw_enabled(const struct lapic *a) { return a->apic_base & APICBASE_EN; }
static bool sw_enabled(const struct lapic *a) { return a->svr & SVR_ENABLE; }

static bool test_bit(const uint32_t *v, int n) { return v[n >> 5] & (1u << (n & 31)); }
static void set_bit(uint32_t *v, int n) { v[n >> 5] |= 1u << (n & 31); }
static void clear_bit(uint32_t *v, int n) { v[n >> 5] &= ~(1u << (n & 31)); }

static int highest_bit(const uint32_t *v)
{
    for (int i = 7; i >= 0; i--)
        if (v[i])
            return i * 32 + 31 - __builtin_clz(v[i]);
    return -1;
}

static uint32_t ppr(const struct lapic *a)
{
    int isr = highest_bit(a->isr);
    uint32_t isrv = isr < 0 ? 0 : (uint32_t)isr;
    return (a->tpr & 0xf0) >= (isrv & 0xf0) ? a->tpr & 0xff : isrv & 0xf0;
}

static enum lapic_timer_mode timer_mode(const struct lapic *a)
{
    return (enum lapic_timer_mode)((a->lvt[LVT_TIMER] >> 17) & 3);
}

static uint64_t divisor(const struct lapic *a)
{
    uint32_t d = (a->timer_divide & 3) | ((a->timer_divide >> 1) & 4);
    return d == 7 ? 1 : 2ULL << d;
}

static uint64_t period_ns(const struct lapic *a)
{
    return (uint64_t)a->timer_initial * divisor(a) * 1000000000ULL / LAPIC_TIMER_FREQ_HZ;
}

static uint64_t tsc_to_ns(const struct lapic *a, uint64_t tsc)
{
    const struct lapic_clock *c = &a->clock;
    if (!c->tsc_khz)
        return c->ns_ref;
    if (tsc <= c->tsc_ref)
        return c->ns_ref ? c->ns_ref : 1;
    return c->ns_ref + (uint64_t)((unsigned __int128)(tsc - c->tsc_ref) * 1000000ULL / c->tsc_khz);
}

static void reset_registers(struct lapic *a)
{
    a->tpr = 0;
    a->ldr = 0;
    a->dfr = 0xFFFFFFFFu;
    a->svr = 0xFF;
    a->esr = a->esr_pending = 0;
    a->icr_lo = a->icr_hi = 0;
    for (int i = 0; i < LVT_COUNT; i++)
        a->lvt[i] = LVT_MASKED;
    a->timer_initial = a->timer_divide = 0;
    memset(a->irr, 0, sizeof a->irr);
    memset(a->isr, 0, sizeof a->isr);
    memset(a->tmr, 0, sizeof a->tmr);
    a->timer_start_ns = a->timer_deadline_ns = 0;
    a->tsc_deadline = 0;
    /* A SIPI that came after the INIT being processed must survive it. */
    a->nmi_pending = a->init_pending = false;
    if (x2apic(a))
        a->ldr = ((a->id >> 4) << 16) | (1u << (a->id & 0xf));
}

void lapic_init(struct lapic *a, uint32_t apic_id, bool bsp, const struct lapic_clock *clk)
{
    memset(a, 0, sizeof *a);
    a->id = apic_id;
    a->apic_base = LAPIC_DEFAULT_BASE | APICBASE_EN | (bsp ? APICBASE_BSP : 0);
    if (clk)
        a->clock = *clk;
    reset_registers(a);
}

void lapic_init_reset(struct lapic *a)
{
    reset_registers(a);
}

/* ---- timer ------------------------------------------------------------- */

static void timer_disarm(struct lapic *a, struct lapic_effects *fx)
{
    a->timer_deadline_ns = 0;
    if (fx)
        fx->timer_changed = true;
}

static void timer_load(struct lapic *a, uint64_t now, struct lapic_effects *fx)
{
    a->timer_start_ns = now;
    uint64_t p = period_ns(a);
    a->timer_deadline_ns = a->timer_initial ? now + (p ? p : 1) : 0;
    if (fx)
        fx->timer_changed = true;
}

static uint32_t current_count(const struct lapic *a, uint64_t now)
{
    if (!a->timer_initial || timer_mode(a) == TIMER_TSC_DEADLINE)
        return 0;
    uint64_t ticks_per = divisor(a);
    uint64_t elapsed_ticks = (now - a->timer_start_ns) * LAPIC_TIMER_FREQ_HZ / 1000000000ULL / ticks_per;
    if (timer_mode(a) == TIMER_PERIODIC)
        return a->timer_initial - (uint32_t)(elapsed_ticks % a->timer_initial);
    if (!a->timer_deadline_ns || elapsed_ticks >= a->timer_initial)
        return 0;
    return a->timer_initial - (uint32_t)elapsed_ticks;
}

static void fire(struct lapic *a)
{
    uint32_t lvt = a->lvt[LVT_TIMER];
    if (!(lvt & LVT_MASKED) && sw_enabled(a) && (lvt & 0xff) >= 16)
        set_bit(a->irr, lvt & 0xff);
}

uint64_t lapic_timer_poll(struct lapic *a, uint64_t now)
{
    if (!a->timer_deadline_ns || now < a->timer_deadline_ns)
        return a->timer_deadline_ns;
    fire(a);
    if (timer_mode(a) == TIMER_PERIODIC && a->timer_initial) {
        uint64_t p = period_ns(a);
        if (!p)
            p = 1;
        uint64_t next = a->timer_deadline_ns + p;
        if (next <= now) /* far behind: skip the missed periods, no burst */
            next = now + p - (now - a->timer_deadline_ns) % p;
        a->timer_start_ns = next - p;
        a->timer_deadline_ns = next;
    } else {
        a->timer_deadline_ns = 0;
        if (timer_mode(a) == TIMER_TSC_DEADLINE)
            a->tsc_deadline = 0;
    }
    return a->timer_deadline_ns;
}

/* ---- interrupts -------------------------------------------------------- */

int lapic_pending_irq(const struct lapic *a)
{
    if (!hw_enabled(a))
        return -1;
    int v = highest_bit(a->irr);
    if (v < 0)
        return -1;
    return (uint32_t)(v & 0xf0) > (ppr(a) & 0xf0) ? v : -1;
}

void lapic_irq_injected(struct lapic *a, int vector)
{
    clear_bit(a->irr, vector);
    set_bit(a->isr, vector);
}

bool lapic_irq_uninject(struct lapic *a, int vector)
{
    if (vector < 0 || vector > 255 || !test_bit(a->isr, vector))
        return false;
    clear_bit(a->isr, vector);
    set_bit(a->irr, vector);
    return true;
}

static void eoi(struct lapic *a, struct lapic_effects *fx)
{
    int v = highest_bit(a->isr);
    if (v < 0)
        return;
    clear_bit(a->isr, v);
    if (test_bit(a->tmr, v)) {
        clear_bit(a->tmr, v);
        fx->eoi_vector = v;
    }
}

void lapic_deliver(struct lapic *a, const struct apic_msg *m)
{
    if (!hw_enabled(a))
        return;
    switch (m->delivery) {
    case APIC_DM_FIXED:
    case APIC_DM_LOWEST:
        if (m->vector < 16) {
            a->esr_pending |= ESR_RECV_ILLEGAL;
            return;
        }
        set_bit(a->irr, m->vector);
        if (m->trigger_level)
            set_bit(a->tmr, m->vector);
        else
            clear_bit(a->tmr, m->vector);
        break;
    case APIC_DM_NMI:
        a->nmi_pending = true;
        break;
    case APIC_DM_INIT:
        if (m->level || !m->trigger_level)
            a->init_pending = true;
        break;
    case APIC_DM_SIPI:
        a->sipi_pending = true;
        a->sipi_vector = m->vector;
        break;
    default:
        break; /* SMI, ExtINT: no such sources here */
    }
}

static bool match_logical(const struct lapic *a, uint32_t dest, bool x2)
{
    if (x2 || x2apic(a)) {
        uint32_t ldr = ((a->id >> 4) << 16) | (1u << (a->id & 0xf));
        if (dest == APIC_BROADCAST_X2)
            return true;
        return (dest >> 16) == (ldr >> 16) && (dest & ldr & 0xffff);
    }
    uint8_t d = (uint8_t)dest, l = (uint8_t)(a->ldr >> 24);
    if (d == 0xff)
        return true;
    if ((a->dfr >> 28) == 0xf) /* flat */
        return d & l;
    return (d >> 4) == (l >> 4) && (d & l & 0xf); /* cluster */
}

bool lapic_match(const struct lapic *a, const struct apic_msg *m)
{
    switch (m->shorthand) {
    case APIC_SH_SELF:
        return a->id == m->src_id;
    case APIC_SH_ALL:
        return true;
    case APIC_SH_OTHERS:
        return a->id != m->src_id;
    default:
        break;
    }
    if (m->dest_logical)
        return match_logical(a, m->dest, m->x2apic);
    if (m->x2apic)
        return m->dest == APIC_BROADCAST_X2 || m->dest == a->id;
    return (m->dest & 0xff) == APIC_BROADCAST_XAPIC || (m->dest & 0xff) == (a->id & 0xff);
}

static void send_icr(struct lapic *a, uint32_t lo, uint32_t dest, struct lapic_effects *fx)
{
    struct apic_msg *m = &fx->msg;
    memset(m, 0, sizeof *m);
    m->vector = lo & 0xff;
    m->delivery = (lo >> 8) & 7;
    m->dest_logical = (lo >> 11) & 1;
    m->level = (lo >> 14) & 1;
    m->trigger_level = (lo >> 15) & 1;
    m->shorthand = (lo >> 18) & 3;
    m->dest = dest;
    m->src_id = a->id;
    m->x2apic = x2apic(a);
    if ((m->delivery == APIC_DM_FIXED || m->delivery == APIC_DM_LOWEST) && m->vector < 16) {
        a->esr_pending |= ESR_SEND_ILLEGAL;
        fx->bad_vector = true;
        return;
    }
    if (m->delivery == 3 || m->delivery == 7) { /* reserved; ExtINT is not for IPIs */
        fx->bad_mode = true;
        return;
    }
    fx->send = true;
}

/* ---- register file ----------------------------------------------------- */

static int read_reg(struct lapic *a, uint32_t off, uint64_t *val, uint64_t now)
{
    if (off >= REG_ISR && off < REG_ISR + 0x80) {
        *val = a->isr[(off - REG_ISR) >> 4];
        return 0;
    }
    if (off >= REG_TMR && off < REG_TMR + 0x80) {
        *val = a->tmr[(off - REG_TMR) >> 4];
        return 0;
    }
    if (off >= REG_IRR && off < REG_IRR + 0x80) {
        *val = a->irr[(off - REG_IRR) >> 4];
        return 0;
    }
    if (off >= REG_LVT_TIMER && off <= REG_LVT_ERROR) {
        *val = a->lvt[LVT_TIMER + ((off - REG_LVT_TIMER) >> 4)];
        return 0;
    }
    switch (off) {
    case REG_ID: *val = x2apic(a) ? a->id : a->id << 24; return 0;
    case REG_VERSION: *val = LAPIC_VERSION; return 0;
    case REG_TPR: *val = a->tpr; return 0;
    case REG_APR: *val = 0; return 0;
    case REG_PPR: *val = ppr(a); return 0;
    case REG_LDR: *val = a->ldr; return 0;
    case REG_DFR: *val = a->dfr; return x2apic(a) ? -EINVAL : 0;
    case REG_SVR: *val = a->svr; return 0;
    case REG_ESR: *val = a->esr; return 0;
    case REG_LVT_CMCI: *val = a->lvt[LVT_CMCI]; return 0;
    case REG_ICR_LO: *val = x2apic(a) ? a->icr_lo | ((uint64_t)a->icr_hi << 32) : a->icr_lo;
        return 0;
    case REG_ICR_HI: *val = a->icr_hi; return x2apic(a) ? -EINVAL : 0;
    case REG_TMICT: *val = a->timer_initial; return 0;
    case REG_TMCCT: *val = current_count(a, now); return 0;
    case REG_TDCR: *val = a->timer_divide; return 0;
    case REG_EOI: *val = 0; return x2apic(a) ? -EINVAL : 0;
    case REG_SELF_IPI: *val = 0; return -EINVAL;
    default: *val = 0; return -EINVAL;
    }
}

static void write_lvt(struct lapic *a, int idx, uint32_t val, uint64_t now,
                      struct lapic_effects *fx)
{
    uint32_t v = val & lvt_valid_mask[idx];
    if (!sw_enabled(a))
        v |= LVT_MASKED;
    if (idx == LVT_TIMER && ((v >> 17) & 3) != ((a->lvt[LVT_TIMER] >> 17) & 3)) {
        a->lvt[idx] = v;
        a->tsc_deadline = 0;
        timer_disarm(a, fx);
        (void)now;
        return;
    }
    a->lvt[idx] = v;
}

static int write_reg(struct lapic *a, uint32_t off, uint64_t val, uint64_t now,
                     struct lapic_effects *fx)
{
    uint32_t v = (uint32_t)val;
    if (off >= REG_LVT_TIMER && off <= REG_LVT_ERROR) {
        write_lvt(a, LVT_TIMER + (int)((off - REG_LVT_TIMER) >> 4), v, now, fx);
        return 0;
    }
    switch (off) {
    case REG_ID:
        if (x2apic(a))
            return -EINVAL;
        return 0; /* read-only here: ids are global and fixed */
    case REG_TPR: a->tpr = v & 0xff; return 0;
    case REG_EOI: eoi(a, fx); return 0;
    case REG_LDR:
        if (x2apic(a))
            return -EINVAL;
        a->ldr = v & 0xff000000u;
        return 0;
    case REG_DFR:
        if (x2apic(a))
            return -EINVAL;
        a->dfr = v | 0x0fffffffu;
        return 0;
    case REG_SVR:
        a->svr = v & 0x13ff;
        if (!sw_enabled(a))
            for (int i = 0; i < LVT_COUNT; i++)
                a->lvt[i] |= LVT_MASKED;
        return 0;
    case REG_ESR:
        if (x2apic(a) && val)
            return -EINVAL;
        a->esr = a->esr_pending;
        a->esr_pending = 0;
        return 0;
    case REG_LVT_CMCI: write_lvt(a, LVT_CMCI, v, now, fx); return 0;
    case REG_ICR_LO:
        if (x2apic(a)) {
            a->icr_lo = v & ~(1u << 12);
            a->icr_hi = (uint32_t)(val >> 32);
            send_icr(a, a->icr_lo, a->icr_hi, fx);
        } else {
            a->icr_lo = v & ~(1u << 12);
            send_icr(a, a->icr_lo, a->icr_hi >> 24, fx);
        }
        return 0;
    case REG_ICR_HI:
        if (x2apic(a))
            return -EINVAL;
        a->icr_hi = v & 0xff000000u;
        return 0;
    case REG_TMICT:
        if (timer_mode(a) == TIMER_TSC_DEADLINE)
            return 0;
        a->timer_initial = v;
        timer_load(a, now, fx);
        return 0;
    case REG_TDCR: a->timer_divide = v & 0xb; return 0;
    case REG_SELF_IPI:
        if (!x2apic(a))
            return -EINVAL;
        send_icr(a, v & 0xff, a->id, fx);
        fx->msg.shorthand = APIC_SH_SELF;
        return 0;
    default:
        return -EINVAL; /* read-only or reserved */
    }
}

int lapic_mmio_read(struct lapic *a, uint64_t offset, uint32_t *val, uint64_t now_ns)
{
    uint64_t v = 0;
    *val = 0;
    if (x2apic(a) || (offset & 0xf))
        return 0;
    if (read_reg(a, (uint32_t)offset, &v, now_ns) == 0 || offset == REG_DFR ||
        offset == REG_ICR_HI || offset == REG_EOI)
        *val = (uint32_t)v;
    return 0;
}

int lapic_mmio_write(struct lapic *a, uint64_t offset, uint32_t val, uint64_t now_ns,
                     struct lapic_effects *fx)
{
    fx->send = false;
    fx->eoi_vector = -1;
    fx->timer_changed = false;
    fx->bad_vector = fx->bad_mode = false;
    if (x2apic(a) || (offset & 0xf) || offset == REG_SELF_IPI)
        return -EINVAL;
    return write_reg(a, (uint32_t)offset, val, now_ns, fx);
}

bool lapic_handles_msr(uint32_t msr)
{
    return msr == MSR_IA32_APICBASE || msr == MSR_IA32_TSC_DEADLINE ||
           (msr >= MSR_X2APIC_FIRST && msr <= MSR_X2APIC_LAST);
}

static int write_apic_base(struct lapic *a, uint64_t val)
{
    const uint64_t reserved = ~(0x000ffffffffff000ULL | APICBASE_EN | APICBASE_EXTD |
                                APICBASE_BSP);
    if (val & reserved)
        return -EINVAL;
    if ((val & APICBASE_EXTD) && !(val & APICBASE_EN))
        return -EINVAL; /* x2APIC without enable is an invalid state */
    bool was_x2 = x2apic(a), was_en = hw_enabled(a);
    if (was_x2 && (val & APICBASE_EN) && !(val & APICBASE_EXTD))
        return -EINVAL; /* x2APIC -> xAPIC must go through disabled */
    val = (val & ~APICBASE_BSP) | (a->apic_base & APICBASE_BSP);
    a->apic_base = val;
    if (was_en && !(val & APICBASE_EN)) {
        uint64_t base = a->apic_base;
        reset_registers(a);
        a->apic_base = base;
    } else if (!was_x2 && (val & APICBASE_EXTD)) {
        a->ldr = ((a->id >> 4) << 16) | (1u << (a->id & 0xf));
    }
    return 0;
}

int lapic_msr_read(struct lapic *a, uint32_t msr, uint64_t *val, uint64_t now_ns)
{
    *val = 0;
    if (msr == MSR_IA32_APICBASE) {
        *val = a->apic_base;
        return 0;
    }
    if (msr == MSR_IA32_TSC_DEADLINE) {
        *val = timer_mode(a) == TIMER_TSC_DEADLINE ? a->tsc_deadline : 0;
        return 0;
    }
    if (!x2apic(a))
        return -EINVAL;
    uint32_t off = (msr - MSR_X2APIC_FIRST) << 4;
    if (off == REG_ICR_HI || off == REG_DFR || off == REG_SELF_IPI || off == REG_EOI)
        return -EINVAL;
    return read_reg(a, off, val, now_ns);
}

int lapic_msr_write(struct lapic *a, uint32_t msr, uint64_t val, uint64_t now_ns,
                    struct lapic_effects *fx)
{
    fx->send = false;
    fx->eoi_vector = -1;
    fx->timer_changed = false;
    fx->bad_vector = fx->bad_mode = false;
    if (msr == MSR_IA32_APICBASE)
        return write_apic_base(a, val);
    if (msr == MSR_IA32_TSC_DEADLINE) {
        if (timer_mode(a) != TIMER_TSC_DEADLINE)
            return 0;
        a->tsc_deadline = val;
        a->timer_deadline_ns = val ? tsc_to_ns(a, val) : 0;
        fx->timer_changed = true;
        return 0;
    }
    if (!x2apic(a))
        return -EINVAL;
    uint32_t off = (msr - MSR_X2APIC_FIRST) << 4;
    if (off != REG_ICR_LO && (val >> 32))
        return -EINVAL;
    if (off == REG_EOI && val)
        return -EINVAL;
    return write_reg(a, off, val, now_ns, fx);
}

void lapic_set_cr8(struct lapic *a, uint64_t cr8)
{
    a->tpr = (uint32_t)(cr8 & 0xf) << 4;
}

uint64_t lapic_get_cr8(const struct lapic *a)
{
    return (a->tpr >> 4) & 0xf;
}

void lapic_save(const struct lapic *a, uint64_t now_ns, struct lapic_snapshot *s)
{
    memset(s, 0, sizeof *s);
    s->regs = *a;
    if (a->timer_deadline_ns)
        s->timer_remaining_ns = a->timer_deadline_ns > now_ns ? a->timer_deadline_ns - now_ns : 1;
    s->timer_elapsed_ns = a->timer_start_ns && now_ns > a->timer_start_ns ? now_ns - a->timer_start_ns : 0;
    s->regs.timer_deadline_ns = 0;
    s->regs.timer_start_ns = 0;
}

void lapic_restore(struct lapic *a, const struct lapic_snapshot *s, uint64_t now_ns)
{
    struct lapic_clock clk = a->clock; /* the destination host's clock stays */
    *a = s->regs;
    a->clock = clk;
    a->timer_deadline_ns = s->timer_remaining_ns ? now_ns + s->timer_remaining_ns : 0;
    a->timer_start_ns = now_ns - s->timer_elapsed_ns;
}
