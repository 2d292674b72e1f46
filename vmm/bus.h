/* bus: the machine's devices, reached the same way from every node.
 *
 * Every device registers its port or MMIO range here with an ops table
 * (read, write, save, restore, reset) and the node that owns it. A vCPU
 * exit on any node goes through bus_access(): on the owner the device's
 * ops run; on any other node the entry is a proxy that hands the whole
 * access (device id, full address, size, data) to the forward op, which
 * carries it to the owner, whose bus_serve() checks it again and runs it.
 * So no code outside the bus asks which node it is on to reach a device.
 *
 * Invariants: ranges of one space never overlap; device ids are the
 * registration order and are the same on every node (every node registers
 * the same devices in the same order, so an id in a forwarded access
 * names the same device everywhere); an access handed to a device lies
 * inside its range and has a size the device accepts. A forwarded access
 * is untrusted: bus_serve() rejects and counts what breaks the above.
 *
 * The bus itself holds no lock: it is filled before any vCPU runs and
 * only read afterwards; devices lock what they share.
 */
#ifndef AMALGAM_VMM_BUS_H
#define AMALGAM_VMM_BUS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define BUS_MAX_DEVICES 32
#define BUS_OWNER_EACH_NODE (-1) /* per-node devices: every node runs its own */

enum bus_space { BUS_PIO = 0, BUS_MMIO = 1 };

/* One access, as a vCPU made it and as it crosses to the owner. */
struct bus_access {
    uint8_t space;  /* enum bus_space */
    uint8_t size;   /* 1, 2, 4 or 8 bytes */
    uint8_t write;
    uint8_t pad;
    uint16_t dev;   /* filled in by the bus */
    uint16_t vcpu;  /* who made it (for replies and error messages) */
    uint64_t addr;  /* the full port number or guest-physical address */
    uint64_t data;  /* written value, or the value read */
};

struct bus_dev_ops {
    /* addr is the full address, inside the device's range. `who` is the
     * vCPU making the access on this node, or NULL for one forwarded from
     * another node. */
    uint64_t (*read)(void *ctx, void *who, uint64_t addr, int size);
    void (*write)(void *ctx, void *who, uint64_t addr, int size, uint64_t val);
    /* Optional (NULL: the device has no state to carry). save returns the
     * bytes written to buf or a negative errno (-ENOSPC: too small);
     * restore returns 0 or a negative errno for state it cannot take. */
    int (*save)(void *ctx, void *buf, size_t len);
    int (*restore)(void *ctx, const void *buf, size_t len);
    void (*reset)(void *ctx);
};

struct bus_dev {
    const char *name;
    int owner; /* node id, or BUS_OWNER_EACH_NODE */
    uint8_t space;
    uint8_t sizes; /* accepted access sizes: bit n set for 2^n bytes */
    uint64_t base, len;
    const struct bus_dev_ops *ops;
    void *ctx;
};

/* Carries an access for a device owned by another node to that node and
 * waits for the answer (a->data for a read). Returns 0, or a negative
 * errno when the owner could not be reached in time (the caller fails the
 * VM; the bus reports nothing itself). */
struct bus_forward_ops {
    void *ctx;
    int (*forward)(void *ctx, void *who, int owner, struct bus_access *a);
};

struct bus {
    struct bus_dev dev[BUS_MAX_DEVICES];
    int ndev;
    int self; /* this node's id */
    struct bus_forward_ops fwd;
    _Atomic uint64_t unclaimed;   /* accesses no device claims */
    _Atomic uint64_t bad_remote;  /* forwarded accesses rejected by bus_serve */
};

/* self: this node; fwd may be NULL on a one-node machine. */
void bus_init(struct bus *b, int self, const struct bus_forward_ops *fwd);

/* Registers a device; returns its id, -EINVAL for a bad range or size
 * mask, -EEXIST if it overlaps another, -ENOSPC if the bus is full. */
int bus_add(struct bus *b, const struct bus_dev *d);

/* The device whose range holds [addr, addr + size), or -1. */
int bus_find(const struct bus *b, enum bus_space space, uint64_t addr, int size);

/* Whether device id runs here (owned by this node, or per-node). */
int bus_is_local(const struct bus *b, int id);

enum bus_result {
    BUS_DONE = 0,        /* a device took it; a->data holds what a read gave */
    BUS_UNCLAIMED = 1,   /* no device there: reads give all-ones, writes vanish */
    BUS_BAD_SIZE = 2,    /* the device does not take this size: ignored likewise */
};

/* A vCPU's access on this node: runs it here or forwards it to the owner.
 * Returns an enum bus_result, or the forward op's negative errno. For
 * anything but BUS_DONE, a->data is all-ones (a read from an empty bus). */
int bus_access(struct bus *b, void *who, struct bus_access *a);

/* An access forwarded from another node, on the owner: checked (device
 * id, ownership, range, size) and run. 0, or -EINVAL (counted). */
int bus_serve(struct bus *b, struct bus_access *a);

/* Resets every device that runs here. */
void bus_reset(struct bus *b);

#endif
