/* The network device model (virtio.h; virtio 1.x, 5.1): frames behind a
 * 12-byte virtio-net header, no offloads (none are offered, so the
 * header's fields mean nothing and are ignored on transmit and zero on
 * receive). */
#include <errno.h>
#include <string.h>

#include "virtio/virtio.h"

#define NET_S_LINK_UP 1

void virtio_net_device(struct virtio_device *d, const uint8_t mac[6])
{
    memset(d, 0, sizeof *d);
    d->id = VIRTIO_ID_NET;
    d->nqueues = 2; /* receive, transmit */
    d->features = VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS | VIRTIO_NET_F_MTU;
    uint16_t status = NET_S_LINK_UP, pairs = 1, mtu = VIRTIO_NET_MTU;
    memcpy(d->config + 0, mac, 6);
    memcpy(d->config + 6, &status, 2);
    memcpy(d->config + 8, &pairs, 2);
    memcpy(d->config + 10, &mtu, 2);
    d->config_len = 12;
}

int virtio_net_tx_frame(const struct virtq_chain *c, struct iovec *iov, int max, size_t *len)
{
    if (c->in_len || c->out_len <= VIRTIO_NET_HDR_LEN ||
        c->out_len - VIRTIO_NET_HDR_LEN > VIRTIO_NET_FRAME_MAX)
        return -EINVAL;
    *len = c->out_len - VIRTIO_NET_HDR_LEN;
    int n = virtq_iov(c, false, VIRTIO_NET_HDR_LEN, *len, iov, max);
    return n < 0 ? -EINVAL : n;
}

int virtio_net_rx_frame(const struct virtq_chain *c, const void *frame, size_t len)
{
    if (c->in_len < VIRTIO_NET_HDR_LEN + (uint64_t)len)
        return -EMSGSIZE;
    uint8_t hdr[VIRTIO_NET_HDR_LEN] = {0};
    hdr[10] = 1; /* num_buffers, little-endian */
    virtq_scatter(c, 0, hdr, sizeof hdr);
    virtq_scatter(c, sizeof hdr, frame, len);
    return (int)(sizeof hdr + len);
}
