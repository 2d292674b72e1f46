/* The network device's backend: an existing TAP interface (no offloads,
 * one frame per read or write). Receive never drops silently: a frame
 * waits in this worker while the guest has no buffer posted (and the TAP
 * holds the next ones, counting what overflows in its own statistics), and
 * a frame larger than the guest's buffer is dropped and counted here. */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "vmm/virtio_host.h"

#define NET_TX_IOV 64
#define NET_BUF 65536 /* the largest frame a TAP hands over */

struct tap {
    int fd;
    char ifname[IFNAMSIZ];
    uint8_t frame[NET_BUF];
    size_t frame_len;   /* a received frame waiting for a guest buffer; 0: none */
    struct virtq_chain chain;
    uint64_t rx_frames, rx_bytes, rx_dropped_big, rx_waits;
    uint64_t tx_frames, tx_bytes, tx_dropped_bad, tx_errors;
};

/* With d->lock held: hands the waiting frame to the guest if it has a
 * buffer. Returns whether it went (or was dropped as too large). */
static bool deliver(struct vdev *d, struct tap *t)
{
    if (vdev_pop(d, VIRTIO_NET_RXQ, &t->chain) <= 0)
        return false;
    int w = virtio_net_rx_frame(&t->chain, t->frame, t->frame_len);
    if (w < 0) {
        t->rx_dropped_big++;
        vdev_push(d, VIRTIO_NET_RXQ, &t->chain, 0);
    } else {
        t->rx_frames++;
        t->rx_bytes += t->frame_len;
        vdev_push(d, VIRTIO_NET_RXQ, &t->chain, (uint32_t)w);
    }
    t->frame_len = 0;
    return true;
}

/* Reads frames from the TAP while the guest has buffers for them. */
static void receive(struct vdev *d, struct tap *t)
{
    pthread_mutex_lock(&d->lock);
    for (;;) {
        if (t->frame_len && !deliver(d, t)) {
            t->rx_waits++;
            break; /* no guest buffer: wait for the driver to post some */
        }
        ssize_t n = read(t->fd, t->frame, sizeof t->frame);
        if (n <= 0)
            break; /* EAGAIN: nothing more now */
        t->frame_len = (size_t)n;
    }
    pthread_mutex_unlock(&d->lock);
}

static void transmit(struct vdev *d, struct tap *t)
{
    pthread_mutex_lock(&d->lock);
    while (vdev_pop(d, VIRTIO_NET_TXQ, &t->chain) > 0) {
        struct iovec iov[NET_TX_IOV];
        size_t len = 0;
        int n = virtio_net_tx_frame(&t->chain, iov, NET_TX_IOV, &len);
        if (n < 0) {
            t->tx_dropped_bad++;
        } else if (writev(t->fd, iov, n) < 0) {
            t->tx_errors++; /* the TAP is down or full: the frame is lost, as on a wire */
        } else {
            t->tx_frames++;
            t->tx_bytes += len;
        }
        vdev_push(d, VIRTIO_NET_TXQ, &t->chain, 0);
    }
    pthread_mutex_unlock(&d->lock);
}

static void net_run(struct vdev *d, uint32_t notified, bool started, bool reset)
{
    struct tap *t = d->be_ctx;
    if (reset) {
        pthread_mutex_lock(&d->lock);
        t->frame_len = 0; /* the guest will not see it: counted as a wait */
        pthread_mutex_unlock(&d->lock);
    }
    if (started || (notified & (1u << VIRTIO_NET_TXQ)))
        transmit(d, t);
    if (started || (notified & (1u << VIRTIO_NET_RXQ)))
        receive(d, t);
}

static void net_ready(struct vdev *d, int fd)
{
    (void)fd;
    receive(d, d->be_ctx);
}

/* The TAP is watched only while a frame could go somewhere: with one
 * waiting for a guest buffer, the next notify on the receive queue
 * resumes it instead. */
static int net_fds(struct vdev *d, int *fds, short *events, int max)
{
    struct tap *t = d->be_ctx;
    pthread_mutex_lock(&d->lock);
    bool waiting = t->frame_len != 0 || !virtio_mmio_running(&d->t);
    pthread_mutex_unlock(&d->lock);
    if (waiting || max < 1)
        return 0;
    fds[0] = t->fd;
    events[0] = POLLIN;
    return 1;
}

static void net_report(struct vdev *d, char *buf, size_t n)
{
    struct tap *t = d->be_ctx;
    snprintf(buf, n, "%s: received %llu frames (%llu bytes), dropped %llu too large for the "
             "guest's buffers, waited %llu times for buffers; sent %llu frames (%llu bytes), "
             "%llu malformed, %llu not taken by the TAP",
             t->ifname, (unsigned long long)t->rx_frames, (unsigned long long)t->rx_bytes,
             (unsigned long long)t->rx_dropped_big, (unsigned long long)t->rx_waits,
             (unsigned long long)t->tx_frames, (unsigned long long)t->tx_bytes,
             (unsigned long long)t->tx_dropped_bad, (unsigned long long)t->tx_errors);
}

static void net_close(struct vdev *d)
{
    struct tap *t = d->be_ctx;
    if (!t)
        return;
    if (t->fd >= 0)
        close(t->fd);
    free(t);
    d->be_ctx = NULL;
}

static const struct vdev_backend net_backend = {"net", net_fds, net_run, net_ready, net_report,
                                                net_close};

int vdev_tap_open(struct vdev *d, const char *ifname, const uint8_t mac[6],
                  struct virtio_device *model, char *err, size_t n)
{
    struct tap *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, n, "--netdev tap,ifname=%s: out of memory", ifname);
        return -ENOMEM;
    }
    t->fd = -1;
    d->be_ctx = t;
    d->be = &net_backend;
    if (strlen(ifname) >= IFNAMSIZ) {
        snprintf(err, n, "--netdev tap,ifname=%s: an interface name has at most %d characters",
                 ifname, IFNAMSIZ - 1);
        return -EINVAL;
    }
    snprintf(t->ifname, sizeof t->ifname, "%s", ifname);
    t->fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (t->fd < 0) {
        int e = errno;
        snprintf(err, n, "--netdev tap,ifname=%s: cannot open /dev/net/tun: %s%s", ifname,
                 strerror(e), e == ENOENT ? " (load the tun module: modprobe tun)" : "");
        return -e;
    }
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    if (ioctl(t->fd, TUNSETIFF, &ifr) < 0) {
        int e = errno;
        snprintf(err, n, "--netdev tap,ifname=%s: cannot attach to the TAP: %s%s", ifname,
                 strerror(e),
                 e == EPERM ? " (create it for this user: ip tuntap add dev NAME mode tap user "
                              "$USER, or run with CAP_NET_ADMIN)"
                 : e == EINVAL || e == EBUSY ? " (is it a TAP, and not in use by another process?)"
                                             : "");
        return -e;
    }
    virtio_net_device(model, mac);
    return 0;
}
