/* 16550A UART model (see uart.h). */
#include <string.h>

#include "vmm/uart.h"

#define IER_RDI 0x01  /* received data available */
#define IER_THRI 0x02 /* transmitter holding register empty */
#define IER_RLSI 0x04
#define IER_MSI 0x08
#define IIR_NONE 0x01
#define IIR_MSI 0x00
#define IIR_THRI 0x02
#define IIR_RDI 0x04
#define IIR_RLSI 0x06
#define IIR_FIFO 0xC0
#define LCR_DLAB 0x80
#define LSR_DR 0x01
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
#define FCR_ENABLE 0x01
#define FCR_CLEAR_RX 0x02

void uart_init(struct uart *u, uart_output_fn out, void *ctx)
{
    memset(u, 0, sizeof *u);
    u->lsr = LSR_THRE | LSR_TEMT;
    u->out = out;
    u->out_ctx = ctx;
}

static uint8_t iir(const struct uart *u)
{
    uint8_t fifo = (u->fcr & FCR_ENABLE) ? IIR_FIFO : 0;
    if ((u->ier & IER_RDI) && u->rx_count)
        return IIR_RDI | fifo;
    if ((u->ier & IER_THRI) && u->thri_pending)
        return IIR_THRI | fifo;
    return IIR_NONE | fifo;
}

bool uart_irq_line(const struct uart *u)
{
    return (u->mcr & MCR_OUT2) && !(iir(u) & IIR_NONE);
}

static uint8_t rx_pop(struct uart *u)
{
    if (!u->rx_count)
        return 0;
    uint8_t c = u->rx[u->rx_head];
    u->rx_head = (u->rx_head + 1) % UART_RX_FIFO;
    u->rx_count--;
    return c;
}

size_t uart_receive(struct uart *u, const uint8_t *buf, size_t len)
{
    size_t n = 0;
    while (n < len && u->rx_count < UART_RX_FIFO) {
        u->rx[(u->rx_head + u->rx_count) % UART_RX_FIFO] = buf[n++];
        u->rx_count++;
    }
    return n;
}

uint8_t uart_read(struct uart *u, unsigned off)
{
    bool dlab = u->lcr & LCR_DLAB;
    switch (off & 7) {
    case 0:
        return dlab ? u->dll : rx_pop(u);
    case 1:
        return dlab ? u->dlm : u->ier;
    case 2: {
        uint8_t v = iir(u);
        if ((v & 0x0f) == IIR_THRI)
            u->thri_pending = false; /* reading IIR clears a THRE interrupt */
        return v;
    }
    case 3:
        return u->lcr;
    case 4:
        return u->mcr;
    case 5:
        return (uint8_t)(u->lsr | (u->rx_count ? LSR_DR : 0));
    case 6:
        /* Loopback reflects MCR outputs; otherwise CTS, DSR, DCD asserted. */
        return (u->mcr & MCR_LOOP) ? (uint8_t)((u->mcr & 0x0f) << 4) : 0xb0;
    default:
        return u->scr;
    }
}

void uart_write(struct uart *u, unsigned off, uint8_t val)
{
    bool dlab = u->lcr & LCR_DLAB;
    switch (off & 7) {
    case 0:
        if (dlab) {
            u->dll = val;
        } else if (u->mcr & MCR_LOOP) {
            uart_receive(u, &val, 1);
        } else {
            if (u->out)
                u->out(u->out_ctx, val);
            u->thri_pending = true; /* transmission is instant */
        }
        break;
    case 1:
        if (dlab) {
            u->dlm = val;
        } else {
            /* Enabling THRI while THR is empty raises it at once; Linux's
             * 8250 driver relies on that. */
            if ((val & IER_THRI) && !(u->ier & IER_THRI))
                u->thri_pending = true;
            u->ier = val & 0x0f;
        }
        break;
    case 2:
        u->fcr = val & 0xc9;
        if (val & FCR_CLEAR_RX)
            u->rx_count = 0;
        break;
    case 3:
        u->lcr = val;
        break;
    case 4:
        u->mcr = val & 0x1f;
        break;
    case 7:
        u->scr = val;
        break;
    default:
        break; /* LSR and MSR are read-only */
    }
}
