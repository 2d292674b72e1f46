/* platform: the guest machine's fixed layout, in one place.
 *
 * The VMM (vmm/) emulates what sits at these addresses and ports, and the
 * ACPI tables (numa/) describe the same things to the guest; both take
 * them from here, so that the tables cannot promise the guest something
 * the devices do not do. Nothing here depends on the host.
 *
 * Invariant: every value is what the guest sees; changing one changes the
 * machine's ABI (the tables, the test guest and Linux follow it).
 */
#ifndef AMALGAM_PLATFORM_PLATFORM_H
#define AMALGAM_PLATFORM_PLATFORM_H

#include <stdint.h>

/* Memory map: RAM from 0 up to 3 GiB, the MMIO hole (LAPIC, IOAPIC) up to
 * 4 GiB, and the rest of RAM from 4 GiB. */
#define PLATFORM_LOW_RAM_LIMIT 0xC0000000ULL
#define PLATFORM_HIGH_RAM_BASE 0x100000000ULL
#define PLATFORM_PAGE_SIZE 4096ULL

/* Interrupt controllers. Each vCPU's APIC id is its index. */
#define PLATFORM_LAPIC_BASE 0xFEE00000ULL
#define PLATFORM_LAPIC_SIZE 0x1000ULL
#define PLATFORM_IOAPIC_BASE 0xFEC00000ULL
#define PLATFORM_IOAPIC_SIZE 0x1000ULL
#define PLATFORM_IOAPIC_PINS 24

/* The IOAPIC's id: the first after the vCPUs', within its 4-bit field. The
 * MADT and the device both use this (they once disagreed at 16 vCPUs). */
static inline uint32_t platform_ioapic_id(int nr_vcpus)
{
    return nr_vcpus < 15 ? (uint32_t)nr_vcpus : 15;
}

/* I/O ports and their interrupts. */
#define PLATFORM_COM1_PORT 0x3F8
#define PLATFORM_COM1_IRQ 4
#define PLATFORM_DEBUG_EXIT_PORT 0x501 /* the test guest's exit status */
#define PLATFORM_BENCH_PORT 0x502      /* the vm-exit benchmark's no-op port */
#define PLATFORM_PM1A_EVT_PORT 0x600   /* ACPI PM1a event block, 4 bytes */
#define PLATFORM_PM1A_CNT_PORT 0x604   /* ACPI PM1a control block, 2 bytes */
#define PLATFORM_PM_TMR_PORT 0x608     /* ACPI PM timer, 4 bytes */
#define PLATFORM_PM_TIMER_HZ 3579545ULL
#define PLATFORM_RESET_PORT 0xCF9      /* FADT reset register */
#define PLATFORM_SCI_IRQ 9             /* ACPI SCI: level, active high */

/* virtio-mmio devices (docs/devices.md): slot i has its registers at
 * PLATFORM_VIRTIO_BASE + i * PLATFORM_VIRTIO_STRIDE (PLATFORM_VIRTIO_SIZE
 * bytes: the virtio 1.x MMIO layout, config space from 0x100) and raises
 * IOAPIC pin PLATFORM_VIRTIO_GSI_BASE + i, level-triggered, active high.
 * The DSDT announces each slot in use as an LNRO0005 device. Below the
 * IOAPIC, in the MMIO hole, where nothing else lives. */
#define PLATFORM_VIRTIO_BASE 0xFEB00000ULL
#define PLATFORM_VIRTIO_STRIDE 0x1000ULL
#define PLATFORM_VIRTIO_SIZE 0x200ULL
#define PLATFORM_VIRTIO_GSI_BASE 16
#define PLATFORM_VIRTIO_MAX 8 /* GSIs 16-23: the IOAPIC's last pins */

#endif
