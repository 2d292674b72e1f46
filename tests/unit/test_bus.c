/* Unit tests for the device bus (vmm/bus.c) and the platform devices on
 * it (vmm/devices.c): registration, dispatch, the proxy that forwards an
 * access to the owning node (two buses joined in-process the way the
 * interconnect joins them: the access crosses as bytes), the owner's
 * checks on what arrives, and save/reset/restore of each device. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/unit.h"
#include "vmm/bus.h"
#include "vmm/vm.h"

/* A device with one 64-bit register per 8 bytes, remembering who wrote. */
struct regs {
    uint64_t r[4];
    void *last_who;
    int reads, writes;
};

static uint64_t regs_read(void *ctx, void *who, uint64_t addr, int size)
{
    struct regs *d = ctx;
    (void)size;
    d->reads++;
    d->last_who = who;
    return d->r[(addr & 0x1f) / 8];
}

static void regs_write(void *ctx, void *who, uint64_t addr, int size, uint64_t val)
{
    struct regs *d = ctx;
    (void)size;
    d->writes++;
    d->last_who = who;
    d->r[(addr & 0x1f) / 8] = val;
}

static const struct bus_dev_ops regs_ops = {regs_read, regs_write, NULL, NULL, NULL};

#define TESTDEV_BASE 0xFED00000ULL /* an MMIO device that is not the IOAPIC */

/* Node 0 and node 1, each with the same devices in the same order. */
struct pair {
    struct bus bus[2];
    struct regs dev[2], each[2];
    int forwards, fail_forward;
};

/* The interconnect's part: the access crosses as bytes to the owner's
 * bus_serve, the value read comes back. */
static int forward_to(void *ctx, void *who, int owner, struct bus_access *a)
{
    struct pair *p = ctx;
    (void)who;
    p->forwards++;
    if (p->fail_forward)
        return -ETIMEDOUT;
    uint8_t wire[sizeof *a];
    struct bus_access there;
    memcpy(wire, a, sizeof wire);
    memcpy(&there, wire, sizeof there);
    int r = bus_serve(&p->bus[owner], &there);
    if (r < 0)
        return r;
    a->data = there.data;
    return 0;
}

static void pair_init(struct pair *p)
{
    memset(p, 0, sizeof *p);
    for (int n = 0; n < 2; n++) {
        struct bus_forward_ops f = {p, forward_to};
        bus_init(&p->bus[n], n, &f);
        struct bus_dev d = {"testdev", 0, BUS_MMIO, 0xf, TESTDEV_BASE, 0x20, &regs_ops,
                            &p->dev[n]};
        ck_assert_int_eq(bus_add(&p->bus[n], &d), 0);
        struct bus_dev e = {"per-node", BUS_OWNER_EACH_NODE, BUS_PIO, 0x1, 0x80, 4, &regs_ops,
                            &p->each[n]};
        ck_assert_int_eq(bus_add(&p->bus[n], &e), 1);
    }
}

START_TEST(register_rejects_overlaps_and_bad_ranges)
{
    struct bus b;
    struct regs r = {0};
    bus_init(&b, 0, NULL);
    struct bus_dev d = {"a", 0, BUS_PIO, 0x1, 0x3f8, 8, &regs_ops, &r};
    ck_assert_int_eq(bus_add(&b, &d), 0);
    d.base = 0x3ff; /* overlaps the last port */
    ck_assert_int_eq(bus_add(&b, &d), -EEXIST);
    d.space = BUS_MMIO; /* the same numbers in the other space do not */
    ck_assert_int_eq(bus_add(&b, &d), 1);
    struct bus_dev bad = d;
    bad.base = 0x1000, bad.len = 0;
    ck_assert_int_eq(bus_add(&b, &bad), -EINVAL);
    bad.len = 1, bad.sizes = 0;
    ck_assert_int_eq(bus_add(&b, &bad), -EINVAL);
    bad.sizes = 1, bad.space = BUS_PIO, bad.base = 0xffff, bad.len = 2; /* past port 0xffff */
    ck_assert_int_eq(bus_add(&b, &bad), -EINVAL);
    bad.base = ~0ULL - 1, bad.space = BUS_MMIO, bad.len = 4; /* wraps */
    ck_assert_int_eq(bus_add(&b, &bad), -EINVAL);
    for (int i = 2; i < BUS_MAX_DEVICES; i++) {
        struct bus_dev x = {"x", 0, BUS_PIO, 1, 0x1000 + (uint64_t)i, 1, &regs_ops, &r};
        ck_assert_int_eq(bus_add(&b, &x), i);
    }
    struct bus_dev more = {"more", 0, BUS_PIO, 1, 0x2000, 1, &regs_ops, &r};
    ck_assert_int_eq(bus_add(&b, &more), -ENOSPC);
}
END_TEST

START_TEST(unclaimed_and_bad_sizes_read_all_ones)
{
    struct pair p;
    pair_init(&p);
    struct bus_access a = {.space = BUS_PIO, .size = 2, .addr = 0x1234};
    ck_assert_int_eq(bus_access(&p.bus[0], NULL, &a), BUS_UNCLAIMED);
    ck_assert_uint_eq(a.data, 0xffff);
    ck_assert_uint_eq(p.bus[0].unclaimed, 1);
    a = (struct bus_access){.space = BUS_PIO, .size = 4, .addr = 0x80}; /* takes bytes only */
    ck_assert_int_eq(bus_access(&p.bus[0], NULL, &a), BUS_BAD_SIZE);
    ck_assert_uint_eq(a.data, 0xffffffffu);
    /* An access that runs past the end of a range is no device's. */
    a = (struct bus_access){.space = BUS_MMIO, .size = 8, .addr = TESTDEV_BASE + 0x1c};
    ck_assert_int_eq(bus_access(&p.bus[0], NULL, &a), BUS_UNCLAIMED);
    ck_assert_int_eq(p.dev[0].reads, 0);
}
END_TEST

START_TEST(owner_runs_its_device_locally)
{
    struct pair p;
    pair_init(&p);
    int who;
    struct bus_access a = {.space = BUS_MMIO, .size = 8, .write = 1,
                           .addr = TESTDEV_BASE + 8, .data = 0x1122334455667788ULL};
    ck_assert_int_eq(bus_access(&p.bus[0], &who, &a), BUS_DONE);
    ck_assert_uint_eq(p.dev[0].r[1], 0x1122334455667788ULL);
    ck_assert_ptr_eq(p.dev[0].last_who, &who);
    ck_assert_int_eq(p.forwards, 0);
}
END_TEST

/* The acceptance case: a vCPU on node 1 reads and writes an MMIO device
 * (not the IOAPIC) that node 0 owns, with its full address and size. */
START_TEST(remote_mmio_reaches_the_owner)
{
    struct pair p;
    pair_init(&p);
    int who;
    struct bus_access a = {.space = BUS_MMIO, .size = 8, .write = 1, .vcpu = 3,
                           .addr = TESTDEV_BASE + 0x10, .data = 0xdeadbeefcafef00dULL};
    ck_assert_int_eq(bus_access(&p.bus[1], &who, &a), BUS_DONE);
    ck_assert_int_eq(p.forwards, 1);
    ck_assert_uint_eq(p.dev[0].r[2], 0xdeadbeefcafef00dULL); /* node 0's device */
    ck_assert_int_eq(p.dev[1].writes, 0);                    /* not node 1's copy */
    ck_assert_ptr_null(p.dev[0].last_who);                   /* a remote caller */
    a = (struct bus_access){.space = BUS_MMIO, .size = 4, .addr = TESTDEV_BASE + 0x10};
    ck_assert_int_eq(bus_access(&p.bus[1], &who, &a), BUS_DONE);
    ck_assert_uint_eq(a.data, 0xcafef00dULL); /* cut to the access size */
    /* A per-node device never crosses. */
    a = (struct bus_access){.space = BUS_PIO, .size = 1, .write = 1, .addr = 0x80, .data = 7};
    ck_assert_int_eq(bus_access(&p.bus[1], &who, &a), BUS_DONE);
    ck_assert_int_eq(p.forwards, 2);
    ck_assert_uint_eq(p.each[1].r[0], 7);
    ck_assert_int_eq(p.each[0].writes, 0);
}
END_TEST

START_TEST(unreachable_owner_is_an_error)
{
    struct pair p;
    pair_init(&p);
    p.fail_forward = 1;
    struct bus_access a = {.space = BUS_MMIO, .size = 4, .addr = TESTDEV_BASE};
    ck_assert_int_eq(bus_access(&p.bus[1], NULL, &a), -ETIMEDOUT);
    ck_assert_uint_eq(a.data, 0xffffffffu);
}
END_TEST

/* What arrives from another node is checked again, whatever the sender
 * claims: each bad field is refused and counted, and no device runs. */
START_TEST(owner_rejects_bad_forwarded_accesses)
{
    struct pair p;
    pair_init(&p);
    const struct bus_access good = {.space = BUS_MMIO, .size = 4, .dev = 0,
                                    .addr = TESTDEV_BASE + 4};
    struct bus_access a = good;
    ck_assert_int_eq(bus_serve(&p.bus[0], &a), 0);
    struct bus_access bad[] = {good, good, good, good, good, good, good, good};
    bad[0].dev = 2;                      /* no such device */
    bad[1].dev = 1;                      /* per-node: not served for others */
    bad[2].addr = TESTDEV_BASE + 0x20;   /* past the range */
    bad[3].addr = TESTDEV_BASE - 4;      /* before it */
    bad[4].size = 3;                     /* no such size */
    bad[5].space = BUS_PIO;              /* the wrong space */
    bad[6].addr = TESTDEV_BASE + 0x1c, bad[6].size = 8; /* runs past the end */
    bad[7].write = 2;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(bus_serve(&p.bus[0], &bad[i]) == -EINVAL, "bad access %zu was served", i);
    ck_assert_uint_eq(p.bus[0].bad_remote, sizeof bad / sizeof bad[0]);
    ck_assert_int_eq(p.dev[0].reads + p.dev[0].writes, 1);
    a = good; /* node 1 does not own the device: it refuses too */
    ck_assert_int_eq(bus_serve(&p.bus[1], &a), -EINVAL);
}
END_TEST

/* ---- the platform devices ------------------------------------------------- */

static void discard(void *ctx, uint8_t b)
{
    (void)ctx, (void)b;
}

static struct vm *device_vm(void)
{
    struct vm *vm = calloc(1, sizeof *vm);
    pthread_mutex_init(&vm->dev_lock, NULL);
    bus_init(&vm->bus, 0, NULL);
    ioapic_init(&vm->ioapic, 1);
    uart_init(&vm->uart, discard, NULL);
    ck_assert_int_eq(vm_register_devices(vm), 0);
    return vm;
}

static uint64_t io(struct vm *vm, int space, uint64_t addr, int size, int write, uint64_t v)
{
    struct bus_access a = {.space = (uint8_t)space, .size = (uint8_t)size,
                           .write = (uint8_t)write, .addr = addr, .data = v};
    ck_assert_int_eq(bus_access(&vm->bus, NULL, &a), BUS_DONE);
    return a.data;
}

/* Each device's state survives save, reset and restore; a blob of the
 * wrong length or version is refused. */
START_TEST(devices_save_reset_restore)
{
    struct vm *vm = device_vm();
    const uint64_t sel = PLATFORM_IOAPIC_BASE, win = PLATFORM_IOAPIC_BASE + 0x10;
    io(vm, BUS_PIO, PLATFORM_COM1_PORT + 7, 1, 1, 0x5a);      /* UART scratch */
    io(vm, BUS_PIO, PLATFORM_COM1_PORT + 3, 1, 1, 0x03);      /* line control */
    io(vm, BUS_PIO, PLATFORM_PM1A_EVT_PORT + 2, 2, 1, 0x20); /* PM1 enable */
    io(vm, BUS_MMIO, sel, 4, 1, 0x10 + 2 * 5);                /* pin 5's entry */
    io(vm, BUS_MMIO, win, 4, 1, 0x1a035);
    uint8_t blob[BUS_MAX_DEVICES][512];
    int len[BUS_MAX_DEVICES] = {0};
    for (int i = 0; i < vm->bus.ndev; i++) {
        const struct bus_dev *d = &vm->bus.dev[i];
        if (!d->ops->save)
            continue;
        len[i] = d->ops->save(d->ctx, blob[i], sizeof blob[i]);
        ck_assert_int_gt(len[i], 0);
        ck_assert_int_eq(d->ops->save(d->ctx, blob[i], 4), -ENOSPC);
        ck_assert_int_eq(d->ops->restore(d->ctx, blob[i], (size_t)len[i] - 1), -EINVAL);
        uint8_t bad[512];
        memcpy(bad, blob[i], (size_t)len[i]);
        bad[0] ^= 0xff; /* a corrupted first field */
        ck_assert_int_eq(d->ops->restore(d->ctx, bad, (size_t)len[i]), -EINVAL);
    }
    bus_reset(&vm->bus);
    ck_assert_uint_eq(io(vm, BUS_PIO, PLATFORM_COM1_PORT + 7, 1, 0, 0), 0);
    ck_assert_uint_eq(io(vm, BUS_PIO, PLATFORM_PM1A_EVT_PORT + 2, 2, 0, 0), 0);
    for (int i = 0; i < vm->bus.ndev; i++)
        if (len[i])
            ck_assert_int_eq(vm->bus.dev[i].ops->restore(vm->bus.dev[i].ctx, blob[i],
                                                         (size_t)len[i]), 0);
    ck_assert_uint_eq(io(vm, BUS_PIO, PLATFORM_COM1_PORT + 7, 1, 0, 0), 0x5a);
    ck_assert_uint_eq(io(vm, BUS_PIO, PLATFORM_COM1_PORT + 3, 1, 0, 0), 0x03);
    ck_assert_uint_eq(io(vm, BUS_PIO, PLATFORM_PM1A_EVT_PORT + 2, 2, 0, 0), 0x20);
    io(vm, BUS_MMIO, sel, 4, 1, 0x10 + 2 * 5);
    ck_assert_uint_eq(io(vm, BUS_MMIO, win, 4, 0, 0) & 0x1ffff, 0x1a035);
    free(vm);
}
END_TEST

START_TEST(ioapic_takes_only_32_bit_accesses)
{
    struct vm *vm = device_vm();
    struct bus_access a = {.space = BUS_MMIO, .size = 1, .addr = PLATFORM_IOAPIC_BASE};
    ck_assert_int_eq(bus_access(&vm->bus, NULL, &a), BUS_BAD_SIZE);
    ck_assert_uint_eq(a.data, 0xff);
    free(vm);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("bus");
    TCase *t = tcase_create("bus");
    tcase_add_test(t, register_rejects_overlaps_and_bad_ranges);
    tcase_add_test(t, unclaimed_and_bad_sizes_read_all_ones);
    tcase_add_test(t, owner_runs_its_device_locally);
    tcase_add_test(t, remote_mmio_reaches_the_owner);
    tcase_add_test(t, unreachable_owner_is_an_error);
    tcase_add_test(t, owner_rejects_bad_forwarded_accesses);
    tcase_add_test(t, devices_save_reset_restore);
    tcase_add_test(t, ioapic_takes_only_32_bit_accesses);
    suite_add_tcase(s, t);
    return run_suite(s);
}
