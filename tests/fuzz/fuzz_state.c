/* libFuzzer target: the component-state decoders (vmm/state.c) on
 * arbitrary bytes. What one accepts must be a state the component can
 * hold, and must encode again. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "vmm/state.h"

static void nop(void *ctx, uint8_t b)
{
    (void)ctx, (void)b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t out[STATE_MAX_BYTES];
    struct lapic a;
    struct lapic_clock c = {.tsc_khz = 1000000};
    lapic_init(&a, 0, true, &c);
    if (state_lapic_decode(&a, 1000000000ULL, data, size) == 0 &&
        state_lapic_encode(&a, 1000000000ULL, out, sizeof out) <= 0)
        __builtin_trap();
    struct ioapic io;
    ioapic_init(&io, 0);
    if (state_ioapic_decode(&io, data, size) == 0 &&
        (io.id > 0xf || io.pin_level >> IOAPIC_PINS || state_ioapic_encode(&io, out, sizeof out) <= 0))
        __builtin_trap();
    struct uart u;
    bool irq;
    uart_init(&u, nop, NULL);
    if (state_uart_decode(&u, &irq, data, size) == 0) {
        if (u.rx_count > UART_RX_FIFO)
            __builtin_trap();
        while (u.rx_count) /* reading the FIFO dry must stay inside it */
            uart_read(&u, 0);
    }
    uint64_t t;
    uint16_t e;
    state_pm_decode(&t, &e, data, size);
    return 0;
}
