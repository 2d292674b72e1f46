/* state: the components' state as bytes and back (protobuf-c messages of
 * proto/state.proto), for vCPU migration, checkpoints and device save.
 *
 * Encoders take the live struct and the current time; decoders check the
 * version, every repeated field's count and every field's range before
 * they touch the destination, so a bad or hostile buffer changes nothing
 * and gets -EINVAL. Timers travel as "ns left" and "ns elapsed", so the
 * receiving host's clock may differ. Pure: no locks, no I/O.
 */
#ifndef AMALGAM_VMM_STATE_H
#define AMALGAM_VMM_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/ioapic.h"
#include "vmm/lapic.h"
#include "vmm/uart.h"

#define STATE_VERSION 1
#define STATE_MAX_BYTES 1024 /* room for any one component */

/* Each encoder returns the bytes written, or -ENOSPC if len is too small. */
int state_lapic_encode(const struct lapic *a, uint64_t now_ns, uint8_t *buf, size_t len);
/* The LAPIC's clock (host to guest TSC mapping) stays the destination's. */
int state_lapic_decode(struct lapic *a, uint64_t now_ns, const uint8_t *buf, size_t len);

int state_ioapic_encode(const struct ioapic *io, uint8_t *buf, size_t len);
int state_ioapic_decode(struct ioapic *io, const uint8_t *buf, size_t len);

/* irq_line: the level the UART last drove on its IOAPIC pin. The output
 * callback stays the destination's. */
int state_uart_encode(const struct uart *u, bool irq_line, uint8_t *buf, size_t len);
int state_uart_decode(struct uart *u, bool *irq_line, const uint8_t *buf, size_t len);

int state_pm_encode(uint64_t timer_ns, uint16_t pm1_enable, uint8_t *buf, size_t len);
int state_pm_decode(uint64_t *timer_ns, uint16_t *pm1_enable, const uint8_t *buf, size_t len);

#endif
