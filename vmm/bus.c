/* The device bus (see bus.h). */
#include <errno.h>
#include <string.h>

#include "vmm/bus.h"

void bus_init(struct bus *b, int self, const struct bus_forward_ops *fwd)
{
    memset(b, 0, sizeof *b);
    b->self = self;
    if (fwd)
        b->fwd = *fwd;
}

static int overlaps(const struct bus_dev *x, const struct bus_dev *y)
{
    return x->space == y->space && x->base < y->base + y->len && y->base < x->base + x->len;
}

int bus_add(struct bus *b, const struct bus_dev *d)
{
    if (!d->ops || !d->ops->read || !d->ops->write || !d->len || d->base + d->len < d->base ||
        !d->sizes || (d->sizes & ~0xfu) || d->space > BUS_MMIO ||
        (d->space == BUS_PIO && d->base + d->len > 0x10000) || d->owner < BUS_OWNER_EACH_NODE)
        return -EINVAL;
    for (int i = 0; i < b->ndev; i++)
        if (overlaps(&b->dev[i], d))
            return -EEXIST;
    if (b->ndev == BUS_MAX_DEVICES)
        return -ENOSPC;
    b->dev[b->ndev] = *d;
    return b->ndev++;
}

int bus_find(const struct bus *b, enum bus_space space, uint64_t addr, int size)
{
    for (int i = 0; i < b->ndev; i++) {
        const struct bus_dev *d = &b->dev[i];
        if (d->space == space && addr >= d->base && addr - d->base < d->len &&
            (uint64_t)size <= d->len - (addr - d->base))
            return i;
    }
    return -1;
}

int bus_is_local(const struct bus *b, int id)
{
    int owner = b->dev[id].owner;
    return owner == BUS_OWNER_EACH_NODE || owner == b->self;
}

static int size_ok(const struct bus_dev *d, int size)
{
    return (size == 1 || size == 2 || size == 4 || size == 8) &&
           (d->sizes & (1u << __builtin_ctz((unsigned)size)));
}

static uint64_t all_ones(int size)
{
    return size >= 8 ? ~0ULL : (1ULL << (8 * size)) - 1;
}

static void run(const struct bus_dev *d, void *who, struct bus_access *a)
{
    if (a->write)
        d->ops->write(d->ctx, who, a->addr, a->size, a->data);
    else
        a->data = d->ops->read(d->ctx, who, a->addr, a->size) & all_ones(a->size);
}

int bus_access(struct bus *b, void *who, struct bus_access *a)
{
    int id = bus_find(b, a->space, a->addr, a->size);
    if (id < 0) {
        atomic_fetch_add(&b->unclaimed, 1);
        a->data = all_ones(a->size);
        return BUS_UNCLAIMED;
    }
    const struct bus_dev *d = &b->dev[id];
    if (!size_ok(d, a->size)) {
        a->data = all_ones(a->size);
        return BUS_BAD_SIZE;
    }
    a->dev = (uint16_t)id;
    if (bus_is_local(b, id)) {
        run(d, who, a);
        return BUS_DONE;
    }
    if (!b->fwd.forward) {
        a->data = all_ones(a->size);
        return -EHOSTUNREACH;
    }
    int r = b->fwd.forward(b->fwd.ctx, who, d->owner, a);
    if (r < 0)
        a->data = all_ones(a->size);
    return r < 0 ? r : BUS_DONE;
}

int bus_serve(struct bus *b, struct bus_access *a)
{
    const struct bus_dev *d = a->dev < b->ndev ? &b->dev[a->dev] : NULL;
    if (!d || d->owner != b->self || a->space != d->space || a->write > 1 ||
        a->addr < d->base || a->addr - d->base >= d->len ||
        (uint64_t)a->size > d->len - (a->addr - d->base) || !size_ok(d, a->size)) {
        atomic_fetch_add(&b->bad_remote, 1);
        return -EINVAL;
    }
    run(d, NULL, a);
    return 0;
}

void bus_reset(struct bus *b)
{
    for (int i = 0; i < b->ndev; i++)
        if (bus_is_local(b, i) && b->dev[i].ops->reset)
            b->dev[i].ops->reset(b->dev[i].ctx);
}
