/* The virtio-mmio transport's registers (virtio.h; virtio 1.x, 4.2.2). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "virtio/virtio.h"

const char *const virtio_err_names[VIRTIO_ERR_COUNT] = {
    "register", "state", "ring", "index", "descriptor", "address", "layout", "request",
};

void virtio_mmio_init(struct virtio_mmio *t, const struct virtio_device *dev)
{
    memset(t, 0, sizeof *t);
    t->dev = *dev;
    t->dev.features |= VIRTIO_F_VERSION_1;
}

bool virtio_mmio_running(const struct virtio_mmio *t)
{
    return (t->status & VIRTIO_STATUS_DRIVER_OK) &&
           !(t->status & (VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED));
}

bool virtio_mmio_needs_reset(const struct virtio_mmio *t)
{
    return t->status & VIRTIO_STATUS_NEEDS_RESET;
}

/* The line follows the interrupt status: level-triggered, so a driver that
 * acknowledges only some bits keeps getting interrupts for the rest. */
static void sync_line(struct virtio_mmio *t, struct virtio_fx *fx)
{
    bool level = t->isr != 0;
    if (level != t->line) {
        t->line = level;
        fx->irq = level;
    }
}

void virtio_mmio_fail(struct virtio_mmio *t, enum virtio_err kind, const char *reason,
                      struct virtio_fx *fx)
{
    t->errors[kind]++;
    if (t->status & VIRTIO_STATUS_NEEDS_RESET)
        return;
    snprintf(t->reason, sizeof t->reason, "%s", reason);
    t->status |= VIRTIO_STATUS_NEEDS_RESET;
    t->isr |= VIRTIO_INT_CONFIG;
    sync_line(t, fx);
}

static void reset(struct virtio_mmio *t, struct virtio_fx *fx)
{
    struct virtio_device dev = t->dev;
    uint64_t errors[VIRTIO_ERR_COUNT];
    memcpy(errors, t->errors, sizeof errors);
    uint32_t gen = t->generation + 1;
    bool line = t->line;
    memset(t, 0, sizeof *t);
    t->dev = dev;
    memcpy(t->errors, errors, sizeof errors);
    t->generation = gen;
    t->line = line;
    sync_line(t, fx);
    fx->reset = true;
}

static bool power_of_two(uint32_t n)
{
    return n && !(n & (n - 1));
}

/* Resolves and checks a queue's rings as the driver set them up. */
static int ring_resolve(struct virtq *q, const struct virtio_mem *m, const char **why)
{
    uint32_t n = q->num;
    if (!power_of_two(n) || n > VIRTQ_MAX_SIZE) {
        *why = "queue size is not a power of two within the maximum";
        return -EINVAL;
    }
    if ((q->desc_gpa & 15) || (q->avail_gpa & 1) || (q->used_gpa & 3)) {
        *why = "ring address misaligned";
        return -EINVAL;
    }
    q->desc = m->map(m->ctx, q->desc_gpa, 16ULL * n);
    q->avail = m->map(m->ctx, q->avail_gpa, 6 + 2ULL * n);
    q->used = m->map(m->ctx, q->used_gpa, 6 + 8ULL * n);
    if (!q->desc || !q->avail || !q->used) {
        q->desc = NULL, q->avail = NULL, q->used = NULL;
        *why = "ring outside guest RAM";
        return -EFAULT;
    }
    return 0;
}

static uint32_t config_read(const struct virtio_mmio *t, uint64_t off, int size)
{
    uint32_t v = 0;
    memcpy(&v, t->dev.config + off, (size_t)size); /* little-endian host and guest */
    return v;
}

static struct virtq *sel_queue(struct virtio_mmio *t)
{
    return t->queue_sel < (uint32_t)t->dev.nqueues ? &t->q[t->queue_sel] : NULL;
}

uint32_t virtio_mmio_read(struct virtio_mmio *t, uint64_t off, int size)
{
    if (off >= VIRTIO_MMIO_CONFIG) {
        off -= VIRTIO_MMIO_CONFIG;
        if ((size == 1 || size == 2 || size == 4) && off + (uint64_t)size <= t->dev.config_len)
            return config_read(t, off, size);
        t->errors[VIRTIO_ERR_REGISTER]++;
        return 0;
    }
    if (size != 4 || (off & 3)) {
        t->errors[VIRTIO_ERR_REGISTER]++;
        return 0;
    }
    struct virtq *q = sel_queue(t);
    switch (off) {
    case VIRTIO_MMIO_MAGIC: return VIRTIO_MMIO_MAGIC_VALUE;
    case VIRTIO_MMIO_VERSION: return 2;
    case VIRTIO_MMIO_DEVICE_ID: return t->dev.id;
    case VIRTIO_MMIO_VENDOR_ID: return VIRTIO_MMIO_VENDOR;
    case VIRTIO_MMIO_DEVICE_FEATURES:
        return t->dev_features_sel < 2 ? (uint32_t)(t->dev.features >> (32 * t->dev_features_sel))
                                       : 0;
    case VIRTIO_MMIO_QUEUE_NUM_MAX: return q ? VIRTQ_MAX_SIZE : 0;
    case VIRTIO_MMIO_QUEUE_READY: return q ? q->ready : 0;
    case VIRTIO_MMIO_INTERRUPT_STATUS: return t->isr;
    case VIRTIO_MMIO_STATUS: return t->status;
    case VIRTIO_MMIO_CONFIG_GENERATION: return 0; /* config space never changes */
    default:
        t->errors[VIRTIO_ERR_REGISTER]++;
        return 0;
    }
}

static void write_status(struct virtio_mmio *t, uint32_t val, struct virtio_fx *fx)
{
    if (val == 0) {
        reset(t, fx);
        return;
    }
    uint32_t added = val & ~t->status;
    if (t->status & ~val) { /* only a reset clears status bits */
        t->errors[VIRTIO_ERR_STATE]++;
        return;
    }
    if (added & VIRTIO_STATUS_FEATURES_OK) {
        /* Only what was offered, and the modern interface: otherwise the
         * bit stays clear and the driver, reading it back, gives up. */
        uint64_t extra = t->driver_features & ~t->dev.features;
        if (extra || !(t->driver_features & VIRTIO_F_VERSION_1)) {
            t->errors[VIRTIO_ERR_STATE]++;
            val &= ~VIRTIO_STATUS_FEATURES_OK;
            added &= ~VIRTIO_STATUS_FEATURES_OK;
        }
    }
    if ((added & VIRTIO_STATUS_DRIVER_OK) && !(val & VIRTIO_STATUS_FEATURES_OK)) {
        t->errors[VIRTIO_ERR_STATE]++;
        val &= ~VIRTIO_STATUS_DRIVER_OK;
        added &= ~VIRTIO_STATUS_DRIVER_OK;
    }
    /* The device's own bit: a driver cannot set it. */
    val = (val & ~VIRTIO_STATUS_NEEDS_RESET) | (t->status & VIRTIO_STATUS_NEEDS_RESET);
    t->status = val;
    if ((added & VIRTIO_STATUS_DRIVER_OK) && virtio_mmio_running(t))
        fx->start = true;
}

static void set_half(uint64_t *v, int high, uint32_t val)
{
    int sh = high ? 32 : 0;
    *v = (*v & ~(0xffffffffULL << sh)) | ((uint64_t)val << sh);
}

/* Queue registers may change only while the queue is not ready. */
static void write_queue(struct virtio_mmio *t, const struct virtio_mem *m, uint64_t off,
                        uint32_t val, struct virtio_fx *fx)
{
    struct virtq *q = sel_queue(t);
    if (!q || (q->ready && off != VIRTIO_MMIO_QUEUE_READY)) {
        t->errors[VIRTIO_ERR_STATE]++;
        return;
    }
    switch (off) {
    case VIRTIO_MMIO_QUEUE_NUM: q->num = val <= VIRTQ_MAX_SIZE ? (uint16_t)val : 0; break;
    case VIRTIO_MMIO_QUEUE_DESC_LOW: set_half(&q->desc_gpa, 0, val); break;
    case VIRTIO_MMIO_QUEUE_DESC_HIGH: set_half(&q->desc_gpa, 1, val); break;
    case VIRTIO_MMIO_QUEUE_DRIVER_LOW: set_half(&q->avail_gpa, 0, val); break;
    case VIRTIO_MMIO_QUEUE_DRIVER_HIGH: set_half(&q->avail_gpa, 1, val); break;
    case VIRTIO_MMIO_QUEUE_DEVICE_LOW: set_half(&q->used_gpa, 0, val); break;
    case VIRTIO_MMIO_QUEUE_DEVICE_HIGH: set_half(&q->used_gpa, 1, val); break;
    case VIRTIO_MMIO_QUEUE_READY:
        if (!(val & 1)) {
            q->ready = false;
            break;
        }
        if (q->ready)
            break;
        const char *why = "";
        if (ring_resolve(q, m, &why) < 0) {
            char r[128];
            snprintf(r, sizeof r, "queue %u: %s", t->queue_sel, why);
            virtio_mmio_fail(t, VIRTIO_ERR_RING, r, fx);
            break;
        }
        q->ready = true;
        q->last_avail = 0;
        q->used_idx = 0;
        break;
    }
}

void virtio_mmio_write(struct virtio_mmio *t, const struct virtio_mem *m, uint64_t off, int size,
                       uint32_t val, struct virtio_fx *fx)
{
    if (off >= VIRTIO_MMIO_CONFIG || size != 4 || (off & 3)) {
        t->errors[VIRTIO_ERR_REGISTER]++; /* config space is read-only here */
        return;
    }
    bool features_open = (t->status & VIRTIO_STATUS_DRIVER) &&
                         !(t->status & VIRTIO_STATUS_FEATURES_OK);
    switch (off) {
    case VIRTIO_MMIO_DEVICE_FEATURES_SEL: t->dev_features_sel = val; break;
    case VIRTIO_MMIO_DRIVER_FEATURES_SEL: t->drv_features_sel = val; break;
    case VIRTIO_MMIO_DRIVER_FEATURES:
        if (!features_open || t->drv_features_sel > 1)
            t->errors[VIRTIO_ERR_STATE]++;
        else
            set_half(&t->driver_features, (int)t->drv_features_sel, val);
        break;
    case VIRTIO_MMIO_QUEUE_SEL: t->queue_sel = val; break;
    case VIRTIO_MMIO_QUEUE_NUM:
    case VIRTIO_MMIO_QUEUE_READY:
    case VIRTIO_MMIO_QUEUE_DESC_LOW:
    case VIRTIO_MMIO_QUEUE_DESC_HIGH:
    case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
    case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
    case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
    case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
        write_queue(t, m, off, val, fx);
        break;
    case VIRTIO_MMIO_QUEUE_NOTIFY:
        if (val < (uint32_t)t->dev.nqueues)
            fx->notify |= 1u << val;
        else
            t->errors[VIRTIO_ERR_STATE]++;
        break;
    case VIRTIO_MMIO_INTERRUPT_ACK:
        t->isr &= ~val;
        sync_line(t, fx);
        break;
    case VIRTIO_MMIO_STATUS: write_status(t, val, fx); break;
    default: t->errors[VIRTIO_ERR_REGISTER]++; break;
    }
}

/* ---- snapshot ---- */

#define STATE_VERSION 1
struct state_queue {
    uint16_t num, last_avail, used_idx;
    uint8_t ready, pad;
    uint64_t desc, avail, used;
};
struct state {
    uint32_t version, device_id;
    uint32_t status, dev_features_sel, drv_features_sel, queue_sel;
    uint64_t driver_features;
    uint32_t isr, line;
    uint32_t nqueues, pad;
    struct state_queue q[VIRTIO_MAX_QUEUES];
};
_Static_assert(sizeof(struct state) <= VIRTIO_MMIO_STATE_MAX, "snapshot grew");

int virtio_mmio_save(const struct virtio_mmio *t, void *buf, size_t len)
{
    struct state s = {STATE_VERSION, t->dev.id, t->status, t->dev_features_sel,
                      t->drv_features_sel, t->queue_sel, t->driver_features, t->isr, t->line,
                      (uint32_t)t->dev.nqueues, 0, {{0}}};
    for (int i = 0; i < t->dev.nqueues; i++) {
        const struct virtq *q = &t->q[i];
        s.q[i] = (struct state_queue){q->num, q->last_avail, q->used_idx, q->ready, 0,
                                      q->desc_gpa, q->avail_gpa, q->used_gpa};
    }
    if (len < sizeof s)
        return -ENOSPC;
    memcpy(buf, &s, sizeof s);
    return (int)sizeof s;
}

int virtio_mmio_restore(struct virtio_mmio *t, const struct virtio_mem *m, const void *buf,
                        size_t len)
{
    struct state s;
    if (len != sizeof s)
        return -EINVAL;
    memcpy(&s, buf, sizeof s);
    if (s.version != STATE_VERSION || s.device_id != t->dev.id ||
        s.nqueues != (uint32_t)t->dev.nqueues || s.line > 1 ||
        (s.driver_features & ~t->dev.features))
        return -EINVAL;
    struct virtio_mmio n = *t;
    n.status = s.status;
    n.dev_features_sel = s.dev_features_sel;
    n.drv_features_sel = s.drv_features_sel;
    n.queue_sel = s.queue_sel;
    n.driver_features = s.driver_features;
    n.isr = s.isr & (VIRTIO_INT_USED | VIRTIO_INT_CONFIG);
    n.line = s.line;
    for (int i = 0; i < t->dev.nqueues; i++) {
        struct virtq *q = &n.q[i];
        *q = (struct virtq){s.q[i].num, false, s.q[i].desc, s.q[i].avail, s.q[i].used,
                            s.q[i].last_avail, s.q[i].used_idx, NULL, NULL, NULL};
        const char *why;
        if (s.q[i].ready > 1 || (s.q[i].ready && ring_resolve(q, m, &why) < 0))
            return -EINVAL;
        q->ready = s.q[i].ready;
    }
    n.generation = t->generation + 1;
    *t = n;
    return 0;
}
