/* The block device model (virtio.h; virtio 1.x, 5.2): a request is a
 * 16-byte header the driver wrote, data, and a status byte (the chain's
 * last writable byte) the device writes when it is done. */
#include <errno.h>
#include <string.h>

#include "virtio/virtio.h"

/* Segments per request the driver may use: two requests of the largest
 * size still fit in the ring together (no indirect descriptors). */
#define BLK_SEG_MAX (VIRTQ_MAX_SIZE / 2 - 2)

void virtio_blk_device(struct virtio_device *d, uint64_t capacity_bytes, bool readonly)
{
    memset(d, 0, sizeof *d);
    d->id = VIRTIO_ID_BLOCK;
    d->nqueues = 1;
    d->features = VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_BLK_SIZE | VIRTIO_BLK_F_FLUSH |
                  (readonly ? VIRTIO_BLK_F_RO : 0);
    uint64_t sectors = capacity_bytes / VIRTIO_BLK_SECTOR;
    uint32_t seg_max = BLK_SEG_MAX, blk_size = VIRTIO_BLK_SECTOR;
    memcpy(d->config + 0, &sectors, 8);   /* capacity */
    memcpy(d->config + 12, &seg_max, 4);  /* seg_max */
    memcpy(d->config + 20, &blk_size, 4); /* blk_size */
    d->config_len = 24;
}

/* The status byte: the last byte of the writable part. */
static uint8_t *status_byte(const struct virtq_chain *c)
{
    for (int i = c->nseg - 1; i >= 0; i--)
        if (c->seg[i].write)
            return c->seg[i].p + c->seg[i].len - 1;
    return NULL;
}

static int answer(struct virtio_blk_req *r, uint8_t status)
{
    *r->status = status;
    return 1;
}

/* Data of an IN or OUT request: whole sectors inside the disk. */
static bool in_disk(uint64_t sector, uint64_t len, uint64_t capacity)
{
    if (len % VIRTIO_BLK_SECTOR || sector > capacity / VIRTIO_BLK_SECTOR)
        return false;
    return len <= capacity - sector * VIRTIO_BLK_SECTOR;
}

int virtio_blk_parse(const struct virtq_chain *c, uint64_t capacity_bytes, bool readonly,
                     const char *serial, struct virtio_blk_req *r, const char **why)
{
    memset(r, 0, offsetof(struct virtio_blk_req, iov));
    r->status = status_byte(c);
    struct { uint32_t type, reserved; uint64_t sector; } h;
    if (!r->status || c->out_len < sizeof h) {
        *why = "block request without a header or a status byte";
        return -EINVAL;
    }
    virtq_gather(c, 0, &h, sizeof h);
    r->type = h.type;
    bool in = h.type == VIRTIO_BLK_T_IN;
    switch (h.type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT:
        r->len = in ? c->in_len - 1 : c->out_len - sizeof h;
        if (!in && readonly)
            return answer(r, VIRTIO_BLK_S_IOERR);
        if (!in_disk(h.sector, r->len, capacity_bytes))
            return answer(r, VIRTIO_BLK_S_IOERR);
        if (!r->len)
            return answer(r, VIRTIO_BLK_S_OK);
        r->offset = h.sector * VIRTIO_BLK_SECTOR;
        r->niov = virtq_iov(c, in, in ? 0 : sizeof h, r->len, r->iov, VIRTIO_BLK_MAX_IOV);
        if (r->niov < 0) /* cannot happen: a chain has at most that many segments */
            return answer(r, VIRTIO_BLK_S_IOERR);
        return 0;
    case VIRTIO_BLK_T_FLUSH:
        return 0;
    case VIRTIO_BLK_T_GET_ID: {
        char id[VIRTIO_BLK_ID_BYTES] = {0};
        strncpy(id, serial ? serial : "", sizeof id); /* not NUL-terminated when full, as specified */
        size_t room = c->in_len - 1;
        r->len = virtq_scatter(c, 0, id, room < sizeof id ? room : sizeof id);
        return answer(r, VIRTIO_BLK_S_OK);
    }
    default:
        return answer(r, VIRTIO_BLK_S_UNSUPP);
    }
}

uint32_t virtio_blk_written(const struct virtio_blk_req *r, uint8_t status)
{
    bool data = (r->type == VIRTIO_BLK_T_IN || r->type == VIRTIO_BLK_T_GET_ID) &&
                status == VIRTIO_BLK_S_OK;
    return (uint32_t)(data ? r->len : 0) + 1;
}
