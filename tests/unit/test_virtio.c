/* Unit tests for the virtio models (virtio/): the MMIO transport driven as
 * Linux's virtio_mmio driver drives it, split queues over a fake guest RAM
 * written as a driver writes it, the block, network and entropy models,
 * and what a broken or hostile driver gets (NEEDS_RESET, counted, nothing
 * touched outside RAM). */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/unit.h"
#include "virtio/virtio.h"

#define RAM_SIZE (1u << 20)
static uint8_t *ram;

static void *map_ram(void *ctx, uint64_t gpa, uint64_t len)
{
    (void)ctx;
    if (!len || gpa >= RAM_SIZE || len > RAM_SIZE - gpa)
        return NULL;
    return ram + gpa;
}
static const struct virtio_mem mem = {NULL, map_ram};

static void setup(void)
{
    ram = calloc(1, RAM_SIZE);
}
static void teardown(void)
{
    free(ram);
}

/* A tiny driver: rings at fixed addresses, chains built from (gpa, len,
 * writable) triples. */
#define DESC 0x1000
#define AVAIL 0x2000
#define USED 0x3000
#define QSIZE 8

static struct virtio_fx fx;
static void wr(struct virtio_mmio *t, uint64_t off, uint32_t v)
{
    fx = (struct virtio_fx){.irq = -1};
    virtio_mmio_write(t, &mem, off, 4, v, &fx);
}
static uint32_t rd(struct virtio_mmio *t, uint64_t off)
{
    return virtio_mmio_read(t, off, 4);
}

static void negotiate(struct virtio_mmio *t)
{
    wr(t, VIRTIO_MMIO_STATUS, 0);
    wr(t, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
    wr(t, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    wr(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    wr(t, VIRTIO_MMIO_DRIVER_FEATURES, 1); /* VERSION_1 */
    wr(t, VIRTIO_MMIO_STATUS, 1 | 2 | VIRTIO_STATUS_FEATURES_OK);
}

static void queue(struct virtio_mmio *t, int q, uint64_t desc, uint64_t avail, uint64_t used)
{
    wr(t, VIRTIO_MMIO_QUEUE_SEL, (uint32_t)q);
    wr(t, VIRTIO_MMIO_QUEUE_NUM, QSIZE);
    wr(t, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc);
    wr(t, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)avail);
    wr(t, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)used);
    wr(t, VIRTIO_MMIO_QUEUE_READY, 1);
}

/* What a driver does after a reset (the transport keeps its device). */
static void bring_up(struct virtio_mmio *t, const struct virtio_device *d)
{
    negotiate(t);
    for (int q = 0; q < d->nqueues; q++)
        queue(t, q, DESC + 0x400 * (uint64_t)q, AVAIL + 0x100 * (uint64_t)q, USED + 0x100 * (uint64_t)q);
    wr(t, VIRTIO_MMIO_STATUS, 1 | 2 | 8 | VIRTIO_STATUS_DRIVER_OK);
}

static void start(struct virtio_mmio *t, const struct virtio_device *d)
{
    virtio_mmio_init(t, d);
    bring_up(t, d);
}

struct seg { uint64_t gpa; uint32_t len; bool write; };
static uint16_t next_desc, avail_idx;

/* Puts a chain in queue 0's ring and makes it available. */
static void post(const struct seg *s, int n)
{
    struct virtq_desc *d = (struct virtq_desc *)(ram + DESC);
    uint16_t head = next_desc;
    for (int i = 0; i < n; i++) {
        uint16_t k = (uint16_t)((next_desc + i) % QSIZE);
        d[k] = (struct virtq_desc){s[i].gpa, s[i].len,
                                   (uint16_t)((s[i].write ? VIRTQ_DESC_F_WRITE : 0) |
                                              (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0)),
                                   (uint16_t)((k + 1) % QSIZE)};
    }
    next_desc = (uint16_t)((next_desc + n) % QSIZE);
    uint16_t *a = (uint16_t *)(ram + AVAIL);
    a[2 + avail_idx % QSIZE] = head;
    a[1] = ++avail_idx;
}

static uint16_t used_idx(void)
{
    return *(uint16_t *)(ram + USED + 2);
}
static uint32_t used_len(int i)
{
    uint32_t l;
    memcpy(&l, ram + USED + 4 + 8 * i + 4, 4);
    return l;
}

static void reset_driver(void)
{
    next_desc = avail_idx = 0;
}

START_TEST(transport_identity_and_features)
{
    struct virtio_device d;
    struct virtio_mmio t;
    virtio_rng_device(&d);
    virtio_mmio_init(&t, &d);
    ck_assert_uint_eq(rd(&t, VIRTIO_MMIO_MAGIC), VIRTIO_MMIO_MAGIC_VALUE);
    ck_assert_uint_eq(rd(&t, VIRTIO_MMIO_VERSION), 2);
    ck_assert_uint_eq(rd(&t, VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_RNG);
    wr(&t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    ck_assert_uint_eq(rd(&t, VIRTIO_MMIO_DEVICE_FEATURES), 1); /* VERSION_1 */
    /* A legacy driver (no VERSION_1) is refused: FEATURES_OK stays clear. */
    wr(&t, VIRTIO_MMIO_STATUS, 1);
    wr(&t, VIRTIO_MMIO_STATUS, 3);
    wr(&t, VIRTIO_MMIO_STATUS, 3 | VIRTIO_STATUS_FEATURES_OK);
    ck_assert_uint_eq(rd(&t, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK, 0);
    /* A feature not offered is refused likewise. */
    negotiate(&t);
    ck_assert_uint_ne(rd(&t, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK, 0);
    wr(&t, VIRTIO_MMIO_STATUS, 0);
    wr(&t, VIRTIO_MMIO_STATUS, 3);
    wr(&t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    wr(&t, VIRTIO_MMIO_DRIVER_FEATURES, 1u << 28);
    wr(&t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    wr(&t, VIRTIO_MMIO_DRIVER_FEATURES, 1);
    wr(&t, VIRTIO_MMIO_STATUS, 3 | VIRTIO_STATUS_FEATURES_OK);
    ck_assert_uint_eq(rd(&t, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK, 0);
    /* Non-32-bit access to a register: ignored and counted. */
    ck_assert_uint_eq(virtio_mmio_read(&t, VIRTIO_MMIO_MAGIC, 2), 0);
    ck_assert_uint_ge(t.errors[VIRTIO_ERR_REGISTER], 1);
}
END_TEST

START_TEST(start_reports_effects)
{
    struct virtio_device d;
    struct virtio_mmio t;
    virtio_rng_device(&d);
    virtio_mmio_init(&t, &d);
    negotiate(&t);
    queue(&t, 0, DESC, AVAIL, USED);
    ck_assert(t.q[0].ready);
    wr(&t, VIRTIO_MMIO_STATUS, 1 | 2 | 8 | 4);
    ck_assert(fx.start);
    ck_assert(virtio_mmio_running(&t));
    wr(&t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    ck_assert_uint_eq(fx.notify, 1);
    wr(&t, VIRTIO_MMIO_QUEUE_NOTIFY, 5); /* no such queue */
    ck_assert_uint_eq(fx.notify, 0);
    uint32_t gen = t.generation;
    wr(&t, VIRTIO_MMIO_STATUS, 0);
    ck_assert(fx.reset);
    ck_assert_uint_eq(t.generation, gen + 1);
    ck_assert(!t.q[0].ready);
}
END_TEST

START_TEST(rng_round_trip_and_interrupts)
{
    struct virtio_device d;
    struct virtio_mmio t;
    virtio_rng_device(&d);
    start(&t, &d);
    reset_driver();
    post((struct seg[]){{0x8000, 16, true}, {0x9000, 32, true}}, 2);
    struct virtq_chain c;
    fx = (struct virtio_fx){.irq = -1};
    ck_assert_int_eq(virtio_pop(&t, 0, &mem, &c, &fx), 1);
    ck_assert_uint_eq(c.nseg, 2);
    ck_assert_uint_eq(c.in_len, 48);
    ck_assert_uint_eq(c.out_len, 0);
    ck_assert_ptr_eq(c.seg[1].p, ram + 0x9000);
    ck_assert_int_eq(virtio_pop(&t, 0, &mem, &c, &fx), 0);
    uint8_t bytes[48];
    memset(bytes, 0xab, sizeof bytes);
    ck_assert_uint_eq(virtq_scatter(&c, 0, bytes, sizeof bytes), 48);
    ck_assert_uint_eq(ram[0x9000 + 31], 0xab);
    ck_assert_int_eq(virtio_push(&t, 0, &c, 48, &fx), 1);
    ck_assert_uint_eq(used_idx(), 1);
    ck_assert_uint_eq(used_len(0), 48);
    ck_assert_int_eq(fx.irq, 1);
    ck_assert_uint_eq(rd(&t, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_INT_USED);
    wr(&t, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_INT_USED);
    ck_assert_int_eq(fx.irq, 0);
    /* The driver asked for no interrupts: none raised. */
    *(uint16_t *)(ram + AVAIL) = VIRTQ_AVAIL_F_NO_INTERRUPT;
    post((struct seg[]){{0x8000, 16, true}}, 1);
    fx = (struct virtio_fx){.irq = -1};
    ck_assert_int_eq(virtio_pop(&t, 0, &mem, &c, &fx), 1);
    ck_assert_int_eq(virtio_push(&t, 0, &c, 16, &fx), 1);
    ck_assert_int_eq(fx.irq, -1);
    ck_assert_uint_eq(t.isr, 0);
    /* A chain popped before a reset is not pushed after it. */
    post((struct seg[]){{0x8000, 16, true}}, 1);
    ck_assert_int_eq(virtio_pop(&t, 0, &mem, &c, &fx), 1);
    wr(&t, VIRTIO_MMIO_STATUS, 0);
    bring_up(&t, &d);
    ck_assert(virtio_mmio_running(&t));
    ck_assert_int_eq(virtio_push(&t, 0, &c, 16, &fx), 0);
}
END_TEST

/* Each broken ring: -EIO, NEEDS_RESET, the kind counted, a config
 * interrupt; nothing outside RAM touched (map refuses it). */
static void expect_broken(struct virtio_mmio *t, enum virtio_err kind)
{
    struct virtq_chain c;
    fx = (struct virtio_fx){.irq = -1};
    ck_assert_int_eq(virtio_pop(t, 0, &mem, &c, &fx), -EIO);
    ck_assert(virtio_mmio_needs_reset(t));
    ck_assert_uint_eq(t->errors[kind], 1);
    ck_assert_int_eq(fx.irq, 1);
    ck_assert_uint_ne(rd(t, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET, 0);
    ck_assert_uint_ne(rd(t, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_INT_CONFIG, 0);
    /* Stopped until reset. */
    ck_assert_int_eq(virtio_pop(t, 0, &mem, &c, &fx), 0);
}

static void fresh(struct virtio_mmio *t)
{
    struct virtio_device d;
    virtio_rng_device(&d);
    memset(ram, 0, RAM_SIZE);
    reset_driver();
    start(t, &d);
}

START_TEST(hostile_rings)
{
    struct virtio_mmio t;
    struct virtq_desc *desc = (struct virtq_desc *)(ram + DESC);
    uint16_t *a = (uint16_t *)(ram + AVAIL);

    fresh(&t); /* a loop */
    desc[0] = (struct virtq_desc){0x8000, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1};
    desc[1] = (struct virtq_desc){0x8000, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 0};
    a[2] = 0, a[1] = 1;
    expect_broken(&t, VIRTIO_ERR_DESC);

    fresh(&t); /* next out of range */
    desc[0] = (struct virtq_desc){0x8000, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 200};
    a[2] = 0, a[1] = 1;
    expect_broken(&t, VIRTIO_ERR_DESC);

    fresh(&t); /* head out of range */
    a[2] = QSIZE, a[1] = 1;
    expect_broken(&t, VIRTIO_ERR_DESC);

    fresh(&t); /* the index far ahead */
    a[1] = QSIZE + 1;
    expect_broken(&t, VIRTIO_ERR_INDEX);

    fresh(&t); /* a buffer outside RAM, and one wrapping the address space */
    desc[0] = (struct virtq_desc){RAM_SIZE - 8, 16, VIRTQ_DESC_F_WRITE, 0};
    a[2] = 0, a[1] = 1;
    expect_broken(&t, VIRTIO_ERR_ADDR);
    fresh(&t);
    desc[0] = (struct virtq_desc){~0ULL - 4, 16, VIRTQ_DESC_F_WRITE, 0};
    a[2] = 0, a[1] = 1;
    expect_broken(&t, VIRTIO_ERR_ADDR);

    fresh(&t); /* readable after writable */
    desc[0] = (struct virtq_desc){0x8000, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1};
    desc[1] = (struct virtq_desc){0x9000, 16, 0, 0};
    a[2] = 0, a[1] = 1;
    expect_broken(&t, VIRTIO_ERR_LAYOUT);

    fresh(&t); /* indirect, not offered */
    desc[0] = (struct virtq_desc){0x8000, 16, VIRTQ_DESC_F_INDIRECT, 0};
    a[2] = 0, a[1] = 1;
    expect_broken(&t, VIRTIO_ERR_LAYOUT);

    /* A reset clears NEEDS_RESET; the count stays. */
    wr(&t, VIRTIO_MMIO_STATUS, 0);
    ck_assert(!virtio_mmio_needs_reset(&t));
    ck_assert_uint_eq(t.errors[VIRTIO_ERR_LAYOUT], 1);
}
END_TEST

START_TEST(rings_outside_ram_refused)
{
    struct virtio_device d;
    struct virtio_mmio t;
    virtio_rng_device(&d);
    virtio_mmio_init(&t, &d);
    negotiate(&t);
    queue(&t, 0, RAM_SIZE - 16, AVAIL, USED);
    ck_assert(!t.q[0].ready);
    ck_assert(virtio_mmio_needs_reset(&t));
    ck_assert_uint_eq(t.errors[VIRTIO_ERR_RING], 1);
    virtio_mmio_init(&t, &d);
    negotiate(&t);
    wr(&t, VIRTIO_MMIO_QUEUE_NUM, 6); /* not a power of two */
    wr(&t, VIRTIO_MMIO_QUEUE_DESC_LOW, DESC);
    wr(&t, VIRTIO_MMIO_QUEUE_DRIVER_LOW, AVAIL);
    wr(&t, VIRTIO_MMIO_QUEUE_DEVICE_LOW, USED);
    wr(&t, VIRTIO_MMIO_QUEUE_READY, 1);
    ck_assert(!t.q[0].ready);
    ck_assert_uint_eq(t.errors[VIRTIO_ERR_RING], 1);
}
END_TEST

static const uint64_t DISK = 1 << 20;

static int blk(struct virtio_mmio *t, const struct seg *s, int n, bool ro, struct virtio_blk_req *r)
{
    post(s, n);
    struct virtq_chain c;
    fx = (struct virtio_fx){.irq = -1};
    ck_assert_int_eq(virtio_pop(t, 0, &mem, &c, &fx), 1);
    const char *why = "";
    return virtio_blk_parse(&c, DISK, ro, "serial-123", r, &why);
}

static void header(uint64_t gpa, uint32_t type, uint64_t sector)
{
    memcpy(ram + gpa, &type, 4);
    memset(ram + gpa + 4, 0, 4);
    memcpy(ram + gpa + 8, &sector, 8);
}

START_TEST(blk_requests)
{
    struct virtio_device d;
    struct virtio_mmio t;
    virtio_blk_device(&d, DISK, false);
    uint64_t cap;
    memcpy(&cap, d.config, 8);
    ck_assert_uint_eq(cap, DISK / 512);
    start(&t, &d);
    ck_assert_uint_eq(virtio_mmio_read(&t, VIRTIO_MMIO_CONFIG, 4), DISK / 512);
    ck_assert_uint_eq(virtio_mmio_read(&t, VIRTIO_MMIO_CONFIG + 0x100, 4), 0); /* past config */
    reset_driver();
    static struct virtio_blk_req r;

    /* A read of 2 sectors into two buffers, the header split in two. */
    header(0x8000, VIRTIO_BLK_T_IN, 3);
    ck_assert_int_eq(blk(&t, (struct seg[]){{0x8000, 8, false}, {0x8008, 8, false},
                                            {0xa000, 512, true}, {0xb000, 512, true},
                                            {0xc000, 1, true}}, 5, false, &r), 0);
    ck_assert_uint_eq(r.type, VIRTIO_BLK_T_IN);
    ck_assert_uint_eq(r.offset, 3 * 512);
    ck_assert_uint_eq(r.len, 1024);
    ck_assert_int_eq(r.niov, 2);
    ck_assert_ptr_eq(r.status, ram + 0xc000);
    ck_assert_uint_eq(virtio_blk_written(&r, VIRTIO_BLK_S_OK), 1025);

    /* A write: data follows the header in the same buffer. */
    header(0x8000, VIRTIO_BLK_T_OUT, 0);
    ck_assert_int_eq(blk(&t, (struct seg[]){{0x8000, 16 + 512, false}, {0xc000, 1, true}}, 2,
                         false, &r), 0);
    ck_assert_uint_eq(r.len, 512);
    ck_assert_ptr_eq(r.iov[0].iov_base, ram + 0x8010);

    /* Refused here with a status: write to a read-only disk, past the
     * end, a part sector, an unknown type. */
    header(0x8000, VIRTIO_BLK_T_OUT, 0);
    ck_assert_int_eq(blk(&t, (struct seg[]){{0x8000, 16 + 512, false}, {0xc000, 1, true}}, 2,
                         true, &r), 1);
    ck_assert_uint_eq(ram[0xc000], VIRTIO_BLK_S_IOERR);
    header(0x8000, VIRTIO_BLK_T_IN, DISK / 512 - 1);
    ck_assert_int_eq(blk(&t, (struct seg[]){{0x8000, 16, false}, {0xa000, 1024, true},
                                            {0xc000, 1, true}}, 3, false, &r), 1);
    ck_assert_uint_eq(ram[0xc000], VIRTIO_BLK_S_IOERR);
    header(0x8000, VIRTIO_BLK_T_IN, ~0ULL / 256); /* sector * 512 overflows */
    ck_assert_int_eq(blk(&t, (struct seg[]){{0x8000, 16, false}, {0xa000, 512, true},
                                            {0xc000, 1, true}}, 3, false, &r), 1);
    ck_assert_uint_eq(ram[0xc000], VIRTIO_BLK_S_IOERR);
    header(0x8000, VIRTIO_BLK_T_IN, 0);
    ck_assert_int_eq(blk(&t, (struct seg[]){{0x8000, 16, false}, {0xa000, 100, true},
                                            {0xc000, 1, true}}, 3, false, &r), 1);
    ck_assert_uint_eq(ram[0xc000], VIRTIO_BLK_S_IOERR);
    header(0x8000, 77, 0);
    ck_assert_int_eq(blk(&t, (struct seg[]){{0x8000, 16, false}, {0xc000, 1, true}}, 2, false,
                         &r), 1);
    ck_assert_uint_eq(ram[0xc000], VIRTIO_BLK_S_UNSUPP);

    /* GET_ID: the serial, then the status. */
    header(0x8000, VIRTIO_BLK_T_GET_ID, 0);
    ck_assert_int_eq(blk(&t, (struct seg[]){{0x8000, 16, false}, {0xa000, 21, true}}, 2, false,
                         &r), 1);
    ck_assert_str_eq((char *)ram + 0xa000, "serial-123");
    ck_assert_uint_eq(ram[0xa000 + 20], VIRTIO_BLK_S_OK);
    ck_assert_uint_eq(virtio_blk_written(&r, VIRTIO_BLK_S_OK), 21);

    /* No status byte, or no header: the device must go to NEEDS_RESET. */
    header(0x8000, VIRTIO_BLK_T_IN, 0);
    ck_assert_int_eq(blk(&t, (struct seg[]){{0x8000, 16, false}}, 1, false, &r), -EINVAL);
    ck_assert_int_eq(blk(&t, (struct seg[]){{0x8000, 8, false}, {0xc000, 1, true}}, 2, false, &r),
                     -EINVAL);
}
END_TEST

START_TEST(net_frames)
{
    struct virtio_device d;
    struct virtio_mmio t;
    const uint8_t mac[6] = {0x52, 0x54, 0, 1, 2, 3};
    virtio_net_device(&d, mac);
    ck_assert_uint_eq(d.nqueues, 2);
    start(&t, &d);
    ck_assert_uint_eq(virtio_mmio_read(&t, VIRTIO_MMIO_CONFIG + 5, 1), 3);
    reset_driver();
    struct virtq_chain c;
    struct iovec iov[4];
    size_t len;

    /* Transmit: header and frame in one buffer, or apart. */
    post((struct seg[]){{0x8000, 12 + 60, false}}, 1);
    ck_assert_int_eq(virtio_pop(&t, 0, &mem, &c, &fx), 1);
    ck_assert_int_eq(virtio_net_tx_frame(&c, iov, 4, &len), 1);
    ck_assert_uint_eq(len, 60);
    ck_assert_ptr_eq(iov[0].iov_base, ram + 0x8000 + 12);
    post((struct seg[]){{0x8000, 12, false}, {0x9000, 60, false}}, 2);
    ck_assert_int_eq(virtio_pop(&t, 0, &mem, &c, &fx), 1);
    ck_assert_int_eq(virtio_net_tx_frame(&c, iov, 4, &len), 1);
    ck_assert_ptr_eq(iov[0].iov_base, ram + 0x9000);
    /* A header alone, or a frame longer than the MTU allows: dropped. */
    post((struct seg[]){{0x8000, 12, false}}, 1);
    ck_assert_int_eq(virtio_pop(&t, 0, &mem, &c, &fx), 1);
    ck_assert_int_eq(virtio_net_tx_frame(&c, iov, 4, &len), -EINVAL);
    post((struct seg[]){{0x8000, 12 + VIRTIO_NET_FRAME_MAX + 1, false}}, 1);
    ck_assert_int_eq(virtio_pop(&t, 0, &mem, &c, &fx), 1);
    ck_assert_int_eq(virtio_net_tx_frame(&c, iov, 4, &len), -EINVAL);

    /* Receive: a zeroed header with num_buffers 1, then the frame. */
    uint8_t frame[64];
    memset(frame, 0x5a, sizeof frame);
    memset(ram + 0xa000, 0xff, 12);
    post((struct seg[]){{0xa000, 12 + 1514, true}}, 1);
    ck_assert_int_eq(virtio_pop(&t, 0, &mem, &c, &fx), 1);
    ck_assert_int_eq(virtio_net_rx_frame(&c, frame, sizeof frame), 12 + 64);
    ck_assert_uint_eq(ram[0xa000], 0);
    ck_assert_uint_eq(ram[0xa000 + 10], 1);
    ck_assert_uint_eq(ram[0xa000 + 12 + 63], 0x5a);
    post((struct seg[]){{0xa000, 40, true}}, 1);
    ck_assert_int_eq(virtio_pop(&t, 0, &mem, &c, &fx), 1);
    ck_assert_int_eq(virtio_net_rx_frame(&c, frame, sizeof frame), -EMSGSIZE);
}
END_TEST

START_TEST(snapshot_round_trip)
{
    struct virtio_device d;
    struct virtio_mmio t, u;
    virtio_rng_device(&d);
    start(&t, &d);
    reset_driver();
    post((struct seg[]){{0x8000, 16, true}}, 1);
    struct virtq_chain c;
    ck_assert_int_eq(virtio_pop(&t, 0, &mem, &c, &fx), 1);
    uint8_t buf[VIRTIO_MMIO_STATE_MAX];
    int n = virtio_mmio_save(&t, buf, sizeof buf);
    ck_assert_int_gt(n, 0);
    ck_assert_int_eq(virtio_mmio_save(&t, buf, 8), -ENOSPC);
    virtio_mmio_init(&u, &d);
    ck_assert_int_eq(virtio_mmio_restore(&u, &mem, buf, (size_t)n), 0);
    ck_assert(virtio_mmio_running(&u));
    ck_assert(u.q[0].ready);
    ck_assert_uint_eq(u.q[0].last_avail, 1);
    ck_assert_ptr_eq(u.q[0].desc, (void *)(ram + DESC));
    /* The next chain comes from where the saved device left off. */
    post((struct seg[]){{0x9000, 16, true}}, 1);
    ck_assert_int_eq(virtio_pop(&u, 0, &mem, &c, &fx), 1);
    ck_assert_ptr_eq(c.seg[0].p, ram + 0x9000);
    /* Bad snapshots are refused and leave the device as it was. */
    uint8_t bad[VIRTIO_MMIO_STATE_MAX];
    memcpy(bad, buf, (size_t)n);
    bad[0] = 99; /* version */
    ck_assert_int_eq(virtio_mmio_restore(&u, &mem, bad, (size_t)n), -EINVAL);
    ck_assert_int_eq(virtio_mmio_restore(&u, &mem, buf, (size_t)n - 1), -EINVAL);
    struct virtio_device b;
    virtio_blk_device(&b, DISK, false);
    struct virtio_mmio w;
    virtio_mmio_init(&w, &b);
    ck_assert_int_eq(virtio_mmio_restore(&w, &mem, buf, (size_t)n), -EINVAL); /* another device */
    ck_assert(u.q[0].ready);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("virtio");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, transport_identity_and_features);
    tcase_add_test(tc, start_reports_effects);
    tcase_add_test(tc, rng_round_trip_and_interrupts);
    tcase_add_test(tc, hostile_rings);
    tcase_add_test(tc, rings_outside_ram_refused);
    tcase_add_test(tc, blk_requests);
    tcase_add_test(tc, net_frames);
    tcase_add_test(tc, snapshot_round_trip);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
