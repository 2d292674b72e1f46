/* Unit tests for vmm/state.c: every component's state survives encoding
 * and decoding (the LAPIC with its timer armed mid-count, onto another
 * host's clock), and decoders refuse what a real component could not hold
 * (a future version, wrong counts, out-of-range fields, garbage) without
 * touching the destination. */
#include <check.h>
#include <errno.h>
#include <string.h>

#include "proto/state.pb-c.h"
#include "tests/unit/unit.h"
#include "vmm/state.h"

#define T0 1000000000ULL

static void nop_out(void *ctx, uint8_t b)
{
    (void)ctx, (void)b;
}

static struct lapic mk(uint32_t id)
{
    struct lapic a;
    struct lapic_clock c = {.tsc_khz = 2000000, .tsc_ref = 0, .ns_ref = T0};
    lapic_init(&a, id, id == 0, &c);
    return a;
}

static void w(struct lapic *a, uint32_t off, uint32_t v, uint64_t now)
{
    struct lapic_effects fx;
    lapic_mmio_write(a, off, v, now, &fx);
}

static uint32_t r(struct lapic *a, uint32_t off, uint64_t now)
{
    uint32_t v = 0;
    lapic_mmio_read(a, off, &v, now);
    return v;
}

START_TEST(lapic_round_trip_with_timer_mid_count)
{
    struct lapic a = mk(3);
    w(&a, 0xF0, 0x1FF, T0);               /* software-enabled, spurious 0xff */
    w(&a, 0x3E0, 0xB, T0);                /* divide by 1 */
    w(&a, 0x320, 0x31 | (1u << 17), T0);  /* periodic, vector 0x31 */
    w(&a, 0x380, 1000000, T0);            /* 1 ms period */
    w(&a, 0x80, 0x20, T0);                /* TPR */
    a.irr[2] = 0x10, a.isr[1] = 0x4, a.tmr[2] = 0x10;
    a.nmi_pending = true, a.sipi_vector = 0x9a;
    const uint64_t at = T0 + 400000;      /* 40 % of the way */
    uint8_t buf[STATE_MAX_BYTES];
    int n = state_lapic_encode(&a, at, buf, sizeof buf);
    ck_assert_int_gt(n, 0);
    ck_assert_int_eq(state_lapic_encode(&a, at, buf, 8), -ENOSPC);

    struct lapic b = mk(3);
    b.clock.tsc_khz = 3000000; /* the destination keeps its own clock */
    const uint64_t there = 5 * T0 + 12345; /* another host's clock */
    ck_assert_int_eq(state_lapic_decode(&b, there, buf, (size_t)n), 0);
    ck_assert_uint_eq(b.clock.tsc_khz, 3000000);
    ck_assert_uint_eq(r(&b, 0x390, there), r(&a, 0x390, at)); /* current count goes on */
    ck_assert_uint_eq(b.timer_deadline_ns, there + 600000);
    ck_assert_uint_eq(r(&b, 0x320, there), r(&a, 0x320, at));
    ck_assert_uint_eq(r(&b, 0x80, there), 0x20);
    ck_assert_mem_eq(b.irr, a.irr, sizeof a.irr);
    ck_assert_mem_eq(b.isr, a.isr, sizeof a.isr);
    ck_assert_mem_eq(b.tmr, a.tmr, sizeof a.tmr);
    ck_assert(b.nmi_pending);
    ck_assert_uint_eq(b.sipi_vector, 0x9a);
    ck_assert_uint_eq(b.apic_base, a.apic_base);
    /* It fires when its period ends there, and reloads. */
    ck_assert_uint_eq(lapic_timer_poll(&b, there + 600000), there + 1600000);
    ck_assert(b.irr[0x31 / 32] & (1u << (0x31 % 32)));
}
END_TEST

/* A LAPIC message with one field changed, re-encoded. */
static int lapic_with(Amalgam__LapicState *m, uint8_t *buf, size_t len)
{
    ck_assert_uint_le(amalgam__lapic_state__get_packed_size(m), len);
    return (int)amalgam__lapic_state__pack(m, buf);
}

START_TEST(lapic_decode_refuses_impossible_states)
{
    struct lapic a = mk(1);
    uint8_t buf[STATE_MAX_BYTES];
    int n = state_lapic_encode(&a, T0, buf, sizeof buf);
    ck_assert_int_gt(n, 0);
    for (int k = 0; k < 6; k++) {
        Amalgam__LapicState *m = amalgam__lapic_state__unpack(NULL, (size_t)n, buf);
        ck_assert_ptr_nonnull(m);
        switch (k) {
        case 0: m->version = STATE_VERSION + 1; break;  /* from the future */
        case 1: m->n_lvt = 6; break;                    /* one LVT short */
        case 2: m->n_irr = 7; break;
        case 3: m->apic_base = 0xFEE00000ULL | 0x1; break; /* reserved bit */
        case 4: m->timer_divide = 0x4; break;           /* not a divide value */
        case 5: m->timer_remaining_ns = ~0ULL; break;   /* due in 584 years */
        }
        uint8_t bad[STATE_MAX_BYTES];
        int len = lapic_with(m, bad, sizeof bad);
        amalgam__lapic_state__free_unpacked(m, NULL);
        struct lapic b = mk(9), before = b;
        ck_assert_msg(state_lapic_decode(&b, T0, bad, (size_t)len) == -EINVAL, "case %d taken", k);
        ck_assert_msg(!memcmp(&b, &before, sizeof b), "case %d changed the LAPIC", k);
    }
    struct lapic b = mk(9);
    ck_assert_int_eq(state_lapic_decode(&b, T0, buf, (size_t)n - 3), -EINVAL); /* truncated */
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    ck_assert_int_eq(state_lapic_decode(&b, T0, junk, sizeof junk), -EINVAL);
}
END_TEST

START_TEST(ioapic_round_trip_and_checks)
{
    struct ioapic io, back;
    ioapic_init(&io, 5);
    io.ioregsel = 0x12;
    io.redir[3] = 0x1a035ULL | (2ULL << 56);
    io.pin_level = 1u << 3;
    io.remote_irr = 1u << 9;
    uint8_t buf[STATE_MAX_BYTES];
    int n = state_ioapic_encode(&io, buf, sizeof buf);
    ck_assert_int_gt(n, 0);
    ioapic_init(&back, 0);
    ck_assert_int_eq(state_ioapic_decode(&back, buf, (size_t)n), 0);
    ck_assert_mem_eq(&back, &io, sizeof io);
    Amalgam__IoapicState *m = amalgam__ioapic_state__unpack(NULL, (size_t)n, buf);
    m->pin_level = 1u << 24; /* a 25th pin */
    uint8_t bad[STATE_MAX_BYTES];
    size_t len = amalgam__ioapic_state__pack(m, bad);
    m->pin_level = 0, m->n_redir = 23;
    uint8_t bad2[STATE_MAX_BYTES];
    size_t len2 = amalgam__ioapic_state__pack(m, bad2);
    amalgam__ioapic_state__free_unpacked(m, NULL);
    ck_assert_int_eq(state_ioapic_decode(&back, bad, len), -EINVAL);
    ck_assert_int_eq(state_ioapic_decode(&back, bad2, len2), -EINVAL);
}
END_TEST

START_TEST(uart_round_trip_keeps_fifo_order)
{
    struct uart u, back;
    uart_init(&u, nop_out, NULL);
    uart_write(&u, 3, 0x03); /* LCR */
    uart_write(&u, 7, 0x5a); /* scratch */
    uart_write(&u, 1, 0x01); /* IER: receive interrupts */
    /* A FIFO that wraps: 60 bytes in, 58 read, 10 more in. */
    uint8_t in[70];
    for (int i = 0; i < 70; i++)
        in[i] = (uint8_t)(i + 1);
    uart_receive(&u, in, 60);
    for (int i = 0; i < 58; i++)
        uart_read(&u, 0);
    uart_receive(&u, in + 60, 10);
    uint8_t buf[STATE_MAX_BYTES];
    int n = state_uart_encode(&u, true, buf, sizeof buf);
    ck_assert_int_gt(n, 0);
    uart_init(&back, nop_out, NULL);
    bool irq = false;
    ck_assert_int_eq(state_uart_decode(&back, &irq, buf, (size_t)n), 0);
    ck_assert(irq);
    ck_assert_uint_eq(uart_read(&back, 7), 0x5a);
    ck_assert_uint_eq(uart_read(&back, 3), 0x03);
    ck_assert_ptr_eq(back.out, nop_out);
    for (int i = 58; i < 70; i++)
        ck_assert_uint_eq(uart_read(&back, 0), in[i]);
    ck_assert_uint_eq(back.rx_count, 0);
}
END_TEST

START_TEST(pm_round_trip_and_garbage)
{
    uint8_t buf[STATE_MAX_BYTES];
    int n = state_pm_encode(123456789, 0x0120, buf, sizeof buf);
    ck_assert_int_gt(n, 0);
    uint64_t t = 0;
    uint16_t e = 0;
    ck_assert_int_eq(state_pm_decode(&t, &e, buf, (size_t)n), 0);
    ck_assert_uint_eq(t, 123456789);
    ck_assert_uint_eq(e, 0x0120);
    Amalgam__PmState m = AMALGAM__PM_STATE__INIT;
    m.version = STATE_VERSION;
    m.pm1_enable = 0x10000;
    n = (int)amalgam__pm_state__pack(&m, buf);
    ck_assert_int_eq(state_pm_decode(&t, &e, buf, (size_t)n), -EINVAL);
    ck_assert_uint_eq(e, 0x0120);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("state");
    TCase *t = tcase_create("state");
    tcase_add_test(t, lapic_round_trip_with_timer_mid_count);
    tcase_add_test(t, lapic_decode_refuses_impossible_states);
    tcase_add_test(t, ioapic_round_trip_and_checks);
    tcase_add_test(t, uart_round_trip_keeps_fifo_order);
    tcase_add_test(t, pm_round_trip_and_garbage);
    suite_add_tcase(s, t);
    return run_suite(s);
}
