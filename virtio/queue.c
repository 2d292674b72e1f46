/* Split virtqueues (virtio.h; virtio 1.x, 2.7): taking chains from the
 * available ring and returning them on the used ring. The rings live in
 * guest memory that the driver writes concurrently: every index and
 * descriptor is read once into a local copy and checked before use. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "virtio/virtio.h"

static struct virtq *running_queue(struct virtio_mmio *t, int q)
{
    if (q < 0 || q >= t->dev.nqueues || !virtio_mmio_running(t) || !t->q[q].ready)
        return NULL;
    return &t->q[q];
}

static int broken(struct virtio_mmio *t, enum virtio_err kind, int q, const char *what,
                  struct virtio_fx *fx)
{
    char r[128];
    snprintf(r, sizeof r, "queue %d: %s", q, what);
    virtio_mmio_fail(t, kind, r, fx);
    return -EIO;
}

/* Follows the chain from head into c. 0, or the error kind with *what. */
static int walk(struct virtq *vq, const struct virtio_mem *m, uint16_t head,
                struct virtq_chain *c, const char **what)
{
    uint16_t i = head;
    c->head = head;
    c->nseg = c->nout = 0;
    c->out_len = c->in_len = 0;
    for (unsigned n = 0;; n++) {
        if (n >= vq->num) {
            *what = "descriptor chain loops or is longer than the queue";
            return VIRTIO_ERR_DESC;
        }
        struct virtq_desc d;
        memcpy(&d, &vq->desc[i], sizeof d); /* one read: the guest may change it */
        if (d.flags & VIRTQ_DESC_F_INDIRECT) {
            *what = "indirect descriptor (not offered)";
            return VIRTIO_ERR_LAYOUT;
        }
        bool w = d.flags & VIRTQ_DESC_F_WRITE;
        if (!w && c->nseg > c->nout) {
            *what = "device-readable descriptor after a device-writable one";
            return VIRTIO_ERR_LAYOUT;
        }
        if (d.len) { /* an empty buffer carries nothing: skipped */
            uint8_t *p = m->map(m->ctx, d.addr, d.len);
            if (!p) {
                *what = "buffer outside guest RAM";
                return VIRTIO_ERR_ADDR;
            }
            c->seg[c->nseg++] = (struct virtq_seg){p, d.len, w};
            if (w)
                c->in_len += d.len;
            else
                c->out_len += d.len, c->nout++;
        }
        if (!(d.flags & VIRTQ_DESC_F_NEXT))
            return 0;
        i = d.next;
        if (i >= vq->num) {
            *what = "descriptor index out of range";
            return VIRTIO_ERR_DESC;
        }
    }
}

int virtio_pop(struct virtio_mmio *t, int q, const struct virtio_mem *m, struct virtq_chain *c,
               struct virtio_fx *fx)
{
    struct virtq *vq = running_queue(t, q);
    if (!vq)
        return 0;
    /* Acquire: the ring entry and descriptors the index covers were
     * written before it. */
    uint16_t avail_idx = __atomic_load_n(&vq->avail[1], __ATOMIC_ACQUIRE);
    uint16_t pending = (uint16_t)(avail_idx - vq->last_avail);
    if (!pending)
        return 0;
    if (pending > vq->num)
        return broken(t, VIRTIO_ERR_INDEX, q, "available index runs ahead of the ring", fx);
    uint16_t head = __atomic_load_n(&vq->avail[2 + vq->last_avail % vq->num], __ATOMIC_RELAXED);
    if (head >= vq->num)
        return broken(t, VIRTIO_ERR_DESC, q, "chain head out of range", fx);
    const char *what = "";
    int kind = walk(vq, m, head, c, &what);
    if (kind)
        return broken(t, (enum virtio_err)kind, q, what, fx);
    vq->last_avail++;
    c->generation = t->generation;
    return 1;
}

int virtio_push(struct virtio_mmio *t, int q, const struct virtq_chain *c, uint32_t written,
                struct virtio_fx *fx)
{
    struct virtq *vq = running_queue(t, q);
    if (!vq || c->generation != t->generation)
        return 0;
    uint8_t *e = vq->used + 4 + 8 * (vq->used_idx % vq->num);
    uint32_t id = c->head;
    memcpy(e, &id, 4);
    memcpy(e + 4, &written, 4);
    vq->used_idx++;
    /* Release: the element (and the buffer contents) before the index. */
    __atomic_store_n((uint16_t *)(vq->used + 2), vq->used_idx, __ATOMIC_RELEASE);
    /* The index before the driver's suppression flag is read, or a driver
     * that just re-enabled interrupts and saw no new entry would sleep. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint16_t flags = __atomic_load_n(&vq->avail[0], __ATOMIC_RELAXED);
    if (!(flags & VIRTQ_AVAIL_F_NO_INTERRUPT)) {
        t->isr |= VIRTIO_INT_USED;
        if (!t->line) {
            t->line = true;
            fx->irq = 1;
        }
    }
    return 1;
}

/* Walks the readable or writable segments from `skip` on, calling fn on
 * each piece up to len bytes; returns the bytes covered. */
static size_t each_piece(const struct virtq_chain *c, bool writable, size_t skip, size_t len,
                         void (*fn)(void *ctx, uint8_t *p, size_t n), void *ctx)
{
    size_t done = 0;
    for (unsigned i = 0; i < c->nseg && done < len; i++) {
        const struct virtq_seg *s = &c->seg[i];
        if (s->write != writable)
            continue;
        if (skip >= s->len) {
            skip -= s->len;
            continue;
        }
        size_t n = s->len - skip;
        if (n > len - done)
            n = len - done;
        fn(ctx, s->p + skip, n);
        done += n;
        skip = 0;
    }
    return done;
}

struct copy_ctx {
    uint8_t *buf;
    bool to_guest;
};

static void copy_piece(void *ctx, uint8_t *p, size_t n)
{
    struct copy_ctx *cc = ctx;
    if (cc->to_guest)
        memcpy(p, cc->buf, n);
    else
        memcpy(cc->buf, p, n);
    cc->buf += n;
}

size_t virtq_gather(const struct virtq_chain *c, size_t skip, void *dst, size_t len)
{
    struct copy_ctx cc = {dst, false};
    return each_piece(c, false, skip, len, copy_piece, &cc);
}

size_t virtq_scatter(const struct virtq_chain *c, size_t skip, const void *src, size_t len)
{
    struct copy_ctx cc = {(uint8_t *)src, true};
    return each_piece(c, true, skip, len, copy_piece, &cc);
}

struct iov_ctx {
    struct iovec *iov;
    int n, max;
};

static void iov_piece(void *ctx, uint8_t *p, size_t n)
{
    struct iov_ctx *ic = ctx;
    if (ic->n < ic->max)
        ic->iov[ic->n] = (struct iovec){p, n};
    ic->n++;
}

int virtq_iov(const struct virtq_chain *c, bool writable, size_t skip, size_t len,
              struct iovec *iov, int max)
{
    struct iov_ctx ic = {iov, 0, max};
    each_piece(c, writable, skip, len, iov_piece, &ic);
    return ic.n > max ? -E2BIG : ic.n;
}
