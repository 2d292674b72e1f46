/* libFuzzer target: the virtio models against an arbitrary driver. The
 * input is both guest RAM (rings, descriptors, requests, as a hostile
 * guest could write them) and a list of register writes; each device
 * model (block, network, entropy) then takes every chain it can and does
 * its part on it. RAM is a heap block of exactly its size, so a read or
 * write outside guest RAM is an AddressSanitizer report. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "virtio/virtio.h"

#define RAM (64u << 10)

static uint8_t *ram;

static void *map_ram(void *ctx, uint64_t gpa, uint64_t len)
{
    (void)ctx;
    if (!len || gpa >= RAM || len > RAM - gpa)
        return NULL;
    return ram + gpa;
}

static uint32_t take32(const uint8_t **p, size_t *n)
{
    uint32_t v = 0;
    size_t k = *n < 4 ? *n : 4;
    memcpy(&v, *p, k);
    *p += k, *n -= k;
    return v;
}

/* What the device does with each chain, as the host side would. */
static void serve(struct virtio_mmio *t, const struct virtio_mem *m, int q)
{
    static struct virtq_chain c;
    static struct virtio_blk_req r;
    static uint8_t frame[VIRTIO_NET_FRAME_MAX];
    struct virtio_fx fx = {.irq = -1};
    for (int i = 0; i < 64 && virtio_pop(t, q, m, &c, &fx) == 1; i++) {
        uint32_t written = 0;
        if (c.in_len + c.out_len == 0 && c.nseg)
            __builtin_trap(); /* segments are never empty */
        if (t->dev.id == VIRTIO_ID_BLOCK) {
            const char *why;
            int p = virtio_blk_parse(&c, 1 << 20, false, "fuzz", &r, &why);
            if (p == 0) {
                for (int k = 0; k < r.niov; k++) /* the backend touches each buffer */
                    memset(r.iov[k].iov_base, 0x11, r.iov[k].iov_len);
                *r.status = VIRTIO_BLK_S_OK;
            }
            if (p >= 0)
                written = virtio_blk_written(&r, *r.status);
        } else if (t->dev.id == VIRTIO_ID_NET && q == VIRTIO_NET_TXQ) {
            struct iovec iov[16];
            size_t len;
            int n = virtio_net_tx_frame(&c, iov, 16, &len);
            for (int k = 0; k < n; k++)
                memcpy(frame, iov[k].iov_base, iov[k].iov_len < sizeof frame ? iov[k].iov_len : sizeof frame);
        } else if (t->dev.id == VIRTIO_ID_NET) {
            int w = virtio_net_rx_frame(&c, frame, 60);
            written = w > 0 ? (uint32_t)w : 0;
        } else {
            written = (uint32_t)virtq_scatter(&c, 0, frame, sizeof frame);
            virtq_gather(&c, 0, frame, sizeof frame);
        }
        virtio_push(t, q, &c, written, &fx);
    }
}

static void drive(const struct virtio_device *d, const uint8_t *data, size_t size)
{
    static struct virtio_mmio t;
    struct virtio_mem m = {NULL, map_ram};
    virtio_mmio_init(&t, d);
    /* First a well-behaved set-up with ring addresses from the input (so
     * the rings are where the fuzzer's bytes are), then its register
     * writes, then the device serves its queues. */
    static const uint32_t boot[] = {0, 1, 3};
    struct virtio_fx fx = {.irq = -1};
    for (unsigned i = 0; i < 3; i++)
        virtio_mmio_write(&t, &m, VIRTIO_MMIO_STATUS, 4, boot[i], &fx);
    virtio_mmio_write(&t, &m, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 4, 1, &fx);
    virtio_mmio_write(&t, &m, VIRTIO_MMIO_DRIVER_FEATURES, 4, 1, &fx);
    virtio_mmio_write(&t, &m, VIRTIO_MMIO_STATUS, 4, 11, &fx);
    for (int q = 0; q < d->nqueues; q++) {
        uint32_t base = take32(&data, &size) % RAM;
        virtio_mmio_write(&t, &m, VIRTIO_MMIO_QUEUE_SEL, 4, (uint32_t)q, &fx);
        virtio_mmio_write(&t, &m, VIRTIO_MMIO_QUEUE_NUM, 4, 1u << (base % 9), &fx);
        virtio_mmio_write(&t, &m, VIRTIO_MMIO_QUEUE_DESC_LOW, 4, base & ~15u, &fx);
        virtio_mmio_write(&t, &m, VIRTIO_MMIO_QUEUE_DRIVER_LOW, 4, (base + 0x1000) & ~1u, &fx);
        virtio_mmio_write(&t, &m, VIRTIO_MMIO_QUEUE_DEVICE_LOW, 4, (base + 0x2000) & ~3u, &fx);
        virtio_mmio_write(&t, &m, VIRTIO_MMIO_QUEUE_READY, 4, 1, &fx);
    }
    virtio_mmio_write(&t, &m, VIRTIO_MMIO_STATUS, 4, 15, &fx);
    unsigned writes = size ? data[0] % 8 : 0;
    for (unsigned i = 0; i < writes && size >= 8; i++) {
        uint32_t off = take32(&data, &size) % 0x200, val = take32(&data, &size);
        if (off & 1)
            virtio_mmio_read(&t, off & ~1u, (int)(1u << (val % 4)));
        else
            virtio_mmio_write(&t, &m, off & ~3u, 4, val, &fx);
    }
    for (int q = 0; q < d->nqueues; q++)
        serve(&t, &m, q);
    uint8_t snap[VIRTIO_MMIO_STATE_MAX];
    int n = virtio_mmio_save(&t, snap, sizeof snap);
    if (n > 0 && size >= (size_t)n) /* a restore of the fuzzer's bytes must be refused or sane */
        virtio_mmio_restore(&t, &m, data, (size_t)n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ram)
        ram = malloc(RAM);
    memset(ram, 0, RAM);
    memcpy(ram, data, size < RAM ? size : RAM);
    struct virtio_device d;
    const uint8_t mac[6] = {0x52, 0x54, 0, 0, 0, 1};
    virtio_blk_device(&d, 1 << 20, false);
    drive(&d, data, size);
    virtio_net_device(&d, mac);
    drive(&d, data, size);
    virtio_rng_device(&d);
    drive(&d, data, size);
    return 0;
}
