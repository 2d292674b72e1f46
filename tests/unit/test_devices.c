/* Unit tests for the pure device models: LAPIC, IOAPIC, 16550A UART. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/ioapic.h"
#include "vmm/lapic.h"
#include "vmm/uart.h"

#define T0 1000000000ULL /* an arbitrary "now" */

static struct lapic mk(uint32_t id)
{
    struct lapic a;
    struct lapic_clock clk = {.tsc_khz = 2000000, .tsc_ref = 0, .ns_ref = T0};
    lapic_init(&a, id, id == 0, &clk);
    return a;
}

static void w(struct lapic *a, uint32_t off, uint32_t v, struct lapic_effects *fx)
{
    ck_assert_int_eq(lapic_mmio_write(a, off, v, T0, fx), 0);
}

static uint32_t r(struct lapic *a, uint32_t off, uint64_t now)
{
    uint32_t v;
    lapic_mmio_read(a, off, &v, now);
    return v;
}

static struct apic_msg fixed(uint8_t vec, uint32_t dest)
{
    return (struct apic_msg){.vector = vec, .delivery = APIC_DM_FIXED, .dest = dest, .level = 1};
}

START_TEST(lapic_reset_state)
{
    struct lapic a = mk(3);
    ck_assert_uint_eq(r(&a, 0x20, T0), 3u << 24);
    ck_assert_uint_eq(r(&a, 0x30, T0) & 0xff, 0x14);
    ck_assert_uint_eq(r(&a, 0xF0, T0), 0xFF); /* software-disabled */
    ck_assert(r(&a, 0x320, T0) & (1u << 16));  /* LVTs masked */
    ck_assert_uint_eq(a.apic_base & ~0xfffULL, LAPIC_DEFAULT_BASE);
    ck_assert(!(a.apic_base & APICBASE_BSP));
    struct lapic b = mk(0);
    ck_assert(b.apic_base & APICBASE_BSP);
}
END_TEST

START_TEST(lapic_priority_and_eoi)
{
    struct lapic a = mk(0);
    struct lapic_effects fx;
    w(&a, 0xF0, 0x1FF, &fx);
    struct apic_msg m1 = fixed(0x41, 0), m2 = fixed(0x81, 0);
    lapic_deliver(&a, &m1);
    lapic_deliver(&a, &m2);
    ck_assert_int_eq(lapic_pending_irq(&a), 0x81);
    lapic_irq_injected(&a, 0x81);
    /* 0x41 is in a lower class than the one in service: held back */
    ck_assert_int_eq(lapic_pending_irq(&a), -1);
    ck_assert_uint_eq(r(&a, 0xA0, T0), 0x80); /* PPR */
    w(&a, 0xB0, 0, &fx);
    ck_assert_int_eq(fx.eoi_vector, -1); /* edge: no IOAPIC EOI */
    ck_assert_int_eq(lapic_pending_irq(&a), 0x41);
    /* TPR masks a class */
    w(&a, 0x80, 0x50, &fx);
    ck_assert_int_eq(lapic_pending_irq(&a), -1);
    lapic_set_cr8(&a, 0);
    ck_assert_int_eq(lapic_pending_irq(&a), 0x41);
    /* a level-triggered vector reports its EOI for the IOAPIC */
    lapic_irq_injected(&a, 0x41);
    w(&a, 0xB0, 0, &fx);
    struct apic_msg lv = fixed(0x55, 0);
    lv.trigger_level = 1;
    lapic_deliver(&a, &lv);
    lapic_irq_injected(&a, 0x55);
    w(&a, 0xB0, 0, &fx);
    ck_assert_int_eq(fx.eoi_vector, 0x55);
    /* illegal vectors are refused and latched in ESR */
    struct apic_msg bad = fixed(7, 0);
    lapic_deliver(&a, &bad);
    ck_assert_int_eq(lapic_pending_irq(&a), -1);
    w(&a, 0x280, 0, &fx);
    ck_assert_uint_eq(r(&a, 0x280, T0), 1u << 6);
}
END_TEST

START_TEST(lapic_icr_and_matching)
{
    struct lapic a = mk(1), b = mk(2);
    struct lapic_effects fx;
    w(&a, 0x310, 2u << 24, &fx);
    w(&a, 0x300, 0x4031, &fx); /* fixed 0x31, assert, physical */
    ck_assert(fx.send);
    ck_assert_uint_eq(fx.msg.dest, 2);
    ck_assert_uint_eq(fx.msg.vector, 0x31);
    ck_assert_uint_eq(fx.msg.src_id, 1);
    ck_assert(lapic_match(&b, &fx.msg));
    ck_assert(!lapic_match(&a, &fx.msg));
    /* shorthands */
    w(&a, 0x300, 0xC4500, &fx); /* INIT, all excluding self */
    ck_assert_uint_eq(fx.msg.shorthand, APIC_SH_OTHERS);
    ck_assert(!lapic_match(&a, &fx.msg) && lapic_match(&b, &fx.msg));
    lapic_deliver(&b, &fx.msg);
    ck_assert(b.init_pending);
    w(&a, 0x300, 0xC4608, &fx); /* SIPI vector 8 */
    lapic_deliver(&b, &fx.msg);
    ck_assert(b.sipi_pending && b.sipi_vector == 8);
    lapic_init_reset(&b);
    ck_assert(b.sipi_pending); /* a SIPI after the INIT survives its reset */
    /* logical flat */
    w(&b, 0xD0, 0x04000000, &fx);
    struct apic_msg lm = fixed(0x40, 0x04);
    lm.dest_logical = 1;
    ck_assert(lapic_match(&b, &lm));
    lm.dest = 0x08;
    ck_assert(!lapic_match(&b, &lm));
    /* logical cluster: DFR 0x0..., cluster 1 member bit 1 */
    w(&b, 0xE0, 0x0FFFFFFF, &fx);
    w(&b, 0xD0, 0x12000000, &fx);
    lm.dest = 0x12;
    ck_assert(lapic_match(&b, &lm));
    lm.dest = 0x22;
    ck_assert(!lapic_match(&b, &lm));
    /* broadcast */
    struct apic_msg bc = fixed(0x40, 0xff);
    ck_assert(lapic_match(&a, &bc) && lapic_match(&b, &bc));
    /* vector < 16 is not sent */
    w(&a, 0x300, 0x4005, &fx);
    ck_assert(!fx.send);
}
END_TEST

START_TEST(lapic_x2apic_msrs)
{
    struct lapic a = mk(0x21);
    struct lapic_effects fx;
    uint64_t v;
    ck_assert_int_eq(lapic_msr_read(&a, 0x802, &v, T0), -EINVAL); /* not in x2APIC mode */
    ck_assert_int_eq(lapic_msr_write(&a, MSR_IA32_APICBASE, a.apic_base | APICBASE_EXTD, T0, &fx), 0);
    ck_assert_int_eq(lapic_msr_read(&a, 0x802, &v, T0), 0);
    ck_assert_uint_eq(v, 0x21);
    ck_assert_int_eq(lapic_msr_read(&a, 0x80D, &v, T0), 0); /* LDR derived from id */
    ck_assert_uint_eq(v, (2u << 16) | (1u << 1));
    ck_assert_int_eq(lapic_msr_write(&a, 0x80D, 0, T0, &fx), -EINVAL); /* read-only */
    ck_assert_int_eq(lapic_msr_write(&a, 0x830, (7ULL << 32) | 0x4044, T0, &fx), 0);
    ck_assert(fx.send && fx.msg.x2apic && fx.msg.dest == 7 && fx.msg.vector == 0x44);
    ck_assert_int_eq(lapic_msr_write(&a, 0x83F, 0x45, T0, &fx), 0); /* SELF IPI */
    ck_assert(fx.send && fx.msg.shorthand == APIC_SH_SELF && fx.msg.vector == 0x45);
    ck_assert_int_eq(lapic_msr_write(&a, 0x80B, 1, T0, &fx), -EINVAL); /* EOI must be 0 */
    /* x2APIC straight back to xAPIC is illegal; via disabled is fine */
    ck_assert_int_eq(lapic_msr_write(&a, MSR_IA32_APICBASE, LAPIC_DEFAULT_BASE | APICBASE_EN, T0, &fx), -EINVAL);
    ck_assert_int_eq(lapic_msr_write(&a, MSR_IA32_APICBASE, LAPIC_DEFAULT_BASE, T0, &fx), 0);
    ck_assert_int_eq(lapic_msr_write(&a, MSR_IA32_APICBASE, 1ULL << 63, T0, &fx), -EINVAL);
    /* MMIO is dead in x2APIC mode */
    ck_assert(!lapic_handles_msr(0x10) && lapic_handles_msr(0x6E0) && lapic_handles_msr(0x8FF));
}
END_TEST

START_TEST(lapic_timers)
{
    struct lapic a = mk(0);
    struct lapic_effects fx;
    w(&a, 0xF0, 0x1FF, &fx);
    /* periodic, divide by 2, 1000 ticks = 2000 ns */
    w(&a, 0x3E0, 0x0, &fx);
    w(&a, 0x320, 0x30 | (1u << 17), &fx);
    w(&a, 0x380, 1000, &fx);
    ck_assert(fx.timer_changed);
    ck_assert_uint_eq(r(&a, 0x390, T0 + 500), 750);
    ck_assert_uint_eq(lapic_timer_poll(&a, T0 + 1999), T0 + 2000);
    ck_assert_int_eq(lapic_pending_irq(&a), -1);
    ck_assert_uint_eq(lapic_timer_poll(&a, T0 + 2000), T0 + 4000); /* no drift */
    ck_assert_int_eq(lapic_pending_irq(&a), 0x30);
    /* far behind: missed periods are skipped, not burst */
    ck_assert_uint_eq(lapic_timer_poll(&a, T0 + 100500), T0 + 102000);
    /* one-shot fires once */
    w(&a, 0x320, 0x31, &fx);
    w(&a, 0x380, 100, &fx); /* 200 ns */
    ck_assert_uint_eq(lapic_timer_poll(&a, T0 + 200), 0);
    ck_assert_uint_eq(r(&a, 0x390, T0 + 300), 0);
    /* TSC-deadline: 2 GHz TSC, deadline 4000 cycles = 2000 ns after ref */
    w(&a, 0x320, 0x32 | (2u << 17), &fx);
    ck_assert_int_eq(lapic_msr_write(&a, MSR_IA32_TSC_DEADLINE, 4000, T0, &fx), 0);
    ck_assert_uint_eq(a.timer_deadline_ns, T0 + 2000);
    ck_assert_uint_eq(lapic_timer_poll(&a, T0 + 2000), 0);
    uint64_t v;
    lapic_msr_read(&a, MSR_IA32_TSC_DEADLINE, &v, T0);
    ck_assert_uint_eq(v, 0); /* disarmed after firing */
    /* masked timer sets nothing */
    memset(a.irr, 0, sizeof a.irr);
    w(&a, 0x320, 0x33 | (1u << 16), &fx);
    w(&a, 0x380, 10, &fx);
    lapic_timer_poll(&a, T0 + 1000);
    ck_assert_int_eq(lapic_pending_irq(&a), -1);
}
END_TEST

START_TEST(lapic_snapshot_rebases_timer)
{
    struct lapic a = mk(0), b = mk(0);
    struct lapic_effects fx;
    struct lapic_snapshot s;
    w(&a, 0xF0, 0x1FF, &fx);
    w(&a, 0x3E0, 0xB, &fx);
    w(&a, 0x320, 0x30, &fx);
    w(&a, 0x380, 10000, &fx); /* 10 us one-shot */
    lapic_save(&a, T0 + 4000, &s);
    const uint64_t later = T0 + 777777777ULL; /* another host's clock */
    lapic_restore(&b, &s, later);
    ck_assert_uint_eq(r(&b, 0x390, later), r(&a, 0x390, T0 + 4000));
    ck_assert_uint_eq(b.timer_deadline_ns, later + 6000);
    ck_assert_uint_eq(r(&b, 0xF0, later), 0x1FF);
}
END_TEST

START_TEST(ioapic_edge_level)
{
    struct ioapic io;
    struct ioapic_out out;
    uint32_t v;
    ioapic_init(&io, 4);
    ioapic_mmio_write(&io, 0, 1, &out);
    ioapic_mmio_read(&io, 0x10, &v);
    ck_assert_uint_eq(v, 0x170011);
    /* pin 4: edge, vector 0x24, dest 1 */
    ioapic_mmio_write(&io, 0, 0x10 + 8, &out);
    ioapic_mmio_write(&io, 0x10, 0x24, &out);
    ioapic_mmio_write(&io, 0, 0x10 + 9, &out);
    ioapic_mmio_write(&io, 0x10, 1u << 24, &out);
    ioapic_set_irq(&io, 4, 1, &out);
    ck_assert_int_eq(out.n, 1);
    ck_assert_uint_eq(out.msg[0].vector, 0x24);
    ck_assert_uint_eq(out.msg[0].dest, 1);
    ioapic_set_irq(&io, 4, 1, &out);
    ck_assert_int_eq(out.n, 0); /* no new edge */
    ioapic_set_irq(&io, 4, 0, &out);
    ioapic_set_irq(&io, 4, 1, &out);
    ck_assert_int_eq(out.n, 1);
    /* pin 9: level; remote IRR holds it until EOI */
    ioapic_mmio_write(&io, 0, 0x10 + 18, &out);
    ioapic_mmio_write(&io, 0x10, 0x39 | (1u << 15) | (1u << 16), &out); /* masked */
    ioapic_set_irq(&io, 9, 1, &out);
    ck_assert_int_eq(out.n, 0);
    ioapic_mmio_write(&io, 0x10, 0x39 | (1u << 15), &out); /* unmask: delivers */
    ck_assert_int_eq(out.n, 1);
    ck_assert(out.msg[0].trigger_level);
    ioapic_mmio_read(&io, 0x10, &v);
    ck_assert(v & (1u << 14));
    ioapic_set_irq(&io, 9, 1, &out);
    ck_assert_int_eq(out.n, 0);
    ioapic_eoi(&io, 0x39, &out); /* still asserted: again */
    ck_assert_int_eq(out.n, 1);
    ioapic_set_irq(&io, 9, 0, &out);
    ioapic_eoi(&io, 0x39, &out);
    ck_assert_int_eq(out.n, 0);
    ck_assert_int_eq(ioapic_set_irq(&io, 24, 1, &out), -EINVAL);
}
END_TEST

static char outbuf[64];
static size_t outlen;
static void capture(void *ctx, uint8_t b)
{
    (void)ctx;
    if (outlen < sizeof outbuf)
        outbuf[outlen++] = (char)b;
}

START_TEST(uart_8250)
{
    struct uart u;
    outlen = 0;
    uart_init(&u, capture, NULL);
    /* Linux's autoconfig: scratch register, FIFO detection */
    uart_write(&u, 7, 0xA5);
    ck_assert_uint_eq(uart_read(&u, 7), 0xA5);
    uart_write(&u, 2, 0x01);
    ck_assert_uint_eq(uart_read(&u, 2) & 0xC0, 0xC0);
    ck_assert_uint_eq(uart_read(&u, 5) & 0x60, 0x60);
    /* divisor latch */
    uart_write(&u, 3, 0x80);
    uart_write(&u, 0, 0x01);
    uart_write(&u, 3, 0x03);
    ck_assert(outlen == 0);
    uart_write(&u, 0, 'h');
    uart_write(&u, 0, 'i');
    ck_assert_int_eq(outlen, 2);
    ck_assert(!memcmp(outbuf, "hi", 2));
    /* THRE interrupt: needs OUT2, raised by enabling ETBEI, cleared by IIR */
    ck_assert(!uart_irq_line(&u));
    uart_write(&u, 4, 0x08);
    uart_write(&u, 1, 0x02);
    ck_assert(uart_irq_line(&u));
    ck_assert_uint_eq(uart_read(&u, 2) & 0x0f, 0x02);
    ck_assert(!uart_irq_line(&u));
    /* receive: RX data available outranks THRE */
    uart_write(&u, 1, 0x03);
    ck_assert_uint_eq(uart_receive(&u, (const uint8_t *)"ok", 2), 2);
    ck_assert_uint_eq(uart_read(&u, 2) & 0x0f, 0x04);
    ck_assert(uart_read(&u, 5) & 1);
    ck_assert_uint_eq(uart_read(&u, 0), 'o');
    ck_assert_uint_eq(uart_read(&u, 0), 'k');
    ck_assert(!(uart_read(&u, 5) & 1));
    /* loopback does not reach the host */
    uart_write(&u, 4, 0x18);
    uart_write(&u, 0, 'x');
    ck_assert_int_eq(outlen, 2);
    ck_assert_uint_eq(uart_read(&u, 0), 'x');
}
END_TEST

#include "tests/unit/unit.h"

int main(void)
{
    Suite *s = suite_create("devices");
    TCase *t = tcase_create("devices");
    tcase_add_test(t, lapic_reset_state);
    tcase_add_test(t, lapic_priority_and_eoi);
    tcase_add_test(t, lapic_icr_and_matching);
    tcase_add_test(t, lapic_x2apic_msrs);
    tcase_add_test(t, lapic_timers);
    tcase_add_test(t, lapic_snapshot_rebases_timer);
    tcase_add_test(t, ioapic_edge_level);
    tcase_add_test(t, uart_8250);
    suite_add_tcase(s, t);
    return run_suite(s);
}
