/* 16550A UART model (the guest's console, COM1 at 0x3f8, IRQ 4).
 * Pure state machine: the caller serialises access, feeds host input with
 * uart_receive() and, after every call, compares uart_irq_line() with the
 * previous level to drive the IOAPIC pin.
 */
#ifndef AMALGAM_VMM_UART_H
#define AMALGAM_VMM_UART_H

#include "platform/platform.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UART_COM1_PORT PLATFORM_COM1_PORT
#define UART_COM1_IRQ PLATFORM_COM1_IRQ
#define UART_RX_FIFO 64

typedef void (*uart_output_fn)(void *ctx, uint8_t byte);

struct uart {
    uint8_t ier, lcr, mcr, lsr, msr, scr, dll, dlm, fcr;
    bool thri_pending;      /* THR-empty interrupt raised and not yet read via IIR */
    uint8_t rx[UART_RX_FIFO];
    unsigned rx_head, rx_count;
    bool line;  /* the level the caller last drove on the IOAPIC pin */
    uart_output_fn out;
    void *out_ctx;
};

void uart_init(struct uart *u, uart_output_fn out, void *ctx);
/* off: 0..7 from the base port. */
uint8_t uart_read(struct uart *u, unsigned off);
void uart_write(struct uart *u, unsigned off, uint8_t val);
/* Host input (console keyboard): returns how many bytes were queued. */
size_t uart_receive(struct uart *u, const uint8_t *buf, size_t len);
/* Current level of the interrupt line (OUT2 gates it, as on a PC). */
bool uart_irq_line(const struct uart *u);

#endif
