/* The block device's backend: a raw image file, read and written with
 * io_uring (liburing), several requests in flight, straight into the
 * guest's buffers. Where the kernel refuses io_uring (disabled by sysctl
 * or a seccomp filter), the worker does each request itself with
 * preadv/pwritev, one at a time. */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/virtio_host.h"

/* A request in flight: its chain, what it asks, and how far it got. */
struct disk_req {
    bool busy;
    struct virtq_chain chain;
    struct virtio_blk_req r;
};

struct disk {
    int fd;
    bool readonly, direct;
    uint64_t capacity;
    char serial[VIRTIO_BLK_ID_BYTES + 1];
    bool uring;
    struct io_uring ring;
    int ring_efd;     /* completions arrive: the worker wakes */
    unsigned inflight;
    struct disk_req req[VIRTQ_MAX_SIZE];
    uint64_t reads, writes, flushes, bytes_read, bytes_written, io_errors, refused;
    uint64_t max_inflight;
};

static struct disk_req *free_slot(struct disk *k)
{
    for (int i = 0; i < VIRTQ_MAX_SIZE; i++)
        if (!k->req[i].busy)
            return &k->req[i];
    return NULL;
}

static void count(struct disk *k, const struct virtio_blk_req *r, uint8_t st)
{
    if (st != VIRTIO_BLK_S_OK) {
        k->io_errors++;
        return;
    }
    if (r->type == VIRTIO_BLK_T_IN)
        k->reads++, k->bytes_read += r->len;
    else if (r->type == VIRTIO_BLK_T_OUT)
        k->writes++, k->bytes_written += r->len;
    else if (r->type == VIRTIO_BLK_T_FLUSH)
        k->flushes++;
}

/* With d->lock held: the request is over. */
static void finish(struct vdev *d, struct disk_req *q, uint8_t st)
{
    struct disk *k = d->be_ctx;
    count(k, &q->r, st);
    *q->r.status = st;
    vdev_push(d, 0, &q->chain, virtio_blk_written(&q->r, st));
    q->busy = false;
}

/* The rest of a transfer that io_uring did only in part, done here: rare
 * (a signal, a huge request), so the simple way. */
static int finish_sync(struct disk *k, struct virtio_blk_req *r, uint64_t done)
{
    while (done < r->len) {
        struct iovec iov[VIRTIO_BLK_MAX_IOV];
        int n = 0;
        uint64_t skip = done;
        for (int i = 0; i < r->niov; i++) {
            if (skip >= r->iov[i].iov_len) {
                skip -= r->iov[i].iov_len;
                continue;
            }
            iov[n++] = (struct iovec){(uint8_t *)r->iov[i].iov_base + skip,
                                      r->iov[i].iov_len - skip};
            skip = 0;
        }
        off_t at = (off_t)(r->offset + done);
        ssize_t got = r->type == VIRTIO_BLK_T_IN ? preadv(k->fd, iov, n, at)
                                                 : pwritev(k->fd, iov, n, at);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -EIO;
        done += (uint64_t)got;
    }
    return 0;
}

static uint8_t do_sync(struct disk *k, struct virtio_blk_req *r)
{
    if (r->type == VIRTIO_BLK_T_FLUSH)
        return fdatasync(k->fd) == 0 ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
    return finish_sync(k, r, 0) == 0 ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
}

static void submit(struct disk *k, struct disk_req *q)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&k->ring);
    if (!sqe) { /* the ring is as large as the queue: cannot happen */
        q->busy = false;
        return;
    }
    struct virtio_blk_req *r = &q->r;
    if (r->type == VIRTIO_BLK_T_FLUSH)
        io_uring_prep_fsync(sqe, k->fd, IORING_FSYNC_DATASYNC);
    else if (r->type == VIRTIO_BLK_T_IN)
        io_uring_prep_readv(sqe, k->fd, r->iov, (unsigned)r->niov, r->offset);
    else
        io_uring_prep_writev(sqe, k->fd, r->iov, (unsigned)r->niov, r->offset);
    io_uring_sqe_set_data(sqe, q);
    k->inflight++;
    if (k->inflight > k->max_inflight)
        k->max_inflight = k->inflight;
}

/* Takes every request the driver made available, while slots last. */
static void disk_run(struct vdev *d, uint32_t notified, bool started, bool reset)
{
    struct disk *k = d->be_ctx;
    (void)notified, (void)started, (void)reset;
    pthread_mutex_lock(&d->lock);
    bool queued = false;
    for (struct disk_req *q; (q = free_slot(k));) {
        if (vdev_pop(d, 0, &q->chain) <= 0)
            break;
        const char *why = "";
        int p = virtio_blk_parse(&q->chain, k->capacity, k->readonly, k->serial, &q->r, &why);
        q->busy = true;
        if (p < 0) {
            vdev_fail(d, VIRTIO_ERR_REQUEST, why);
            q->busy = false;
            break;
        }
        if (p == 1) { /* answered by the model */
            k->refused += *q->r.status != VIRTIO_BLK_S_OK;
            vdev_push(d, 0, &q->chain, virtio_blk_written(&q->r, *q->r.status));
            q->busy = false;
        } else if (k->uring) {
            submit(k, q);
            queued = true;
        } else {
            finish(d, q, do_sync(k, &q->r));
        }
    }
    pthread_mutex_unlock(&d->lock);
    if (queued)
        io_uring_submit(&k->ring);
}

static void disk_reap(struct vdev *d, int fd)
{
    struct disk *k = d->be_ctx;
    uint64_t v;
    if (read(fd, &v, sizeof v) < 0) {
        /* spurious: nothing to reap yet */
    }
    struct io_uring_cqe *cqe;
    pthread_mutex_lock(&d->lock);
    while (io_uring_peek_cqe(&k->ring, &cqe) == 0) {
        struct disk_req *q = io_uring_cqe_get_data(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&k->ring, cqe);
        k->inflight--;
        uint8_t st = VIRTIO_BLK_S_OK;
        if (res < 0)
            st = VIRTIO_BLK_S_IOERR;
        else if (q->r.type != VIRTIO_BLK_T_FLUSH && (uint64_t)res < q->r.len)
            st = finish_sync(k, &q->r, (uint64_t)res) == 0 ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR;
        finish(d, q, st);
    }
    pthread_mutex_unlock(&d->lock);
    disk_run(d, 0, false, false); /* slots came free: more may be waiting */
}

static int disk_fds(struct vdev *d, int *fds, short *events, int max)
{
    struct disk *k = d->be_ctx;
    if (!k->uring || max < 1)
        return 0;
    fds[0] = k->ring_efd;
    events[0] = POLLIN;
    return 1;
}

static void disk_report(struct vdev *d, char *buf, size_t n)
{
    struct disk *k = d->be_ctx;
    snprintf(buf, n, "%llu reads (%llu MiB), %llu writes (%llu MiB), %llu flushes, %llu I/O "
             "errors, %llu refused, at most %llu in flight (%s)",
             (unsigned long long)k->reads, (unsigned long long)(k->bytes_read >> 20),
             (unsigned long long)k->writes, (unsigned long long)(k->bytes_written >> 20),
             (unsigned long long)k->flushes, (unsigned long long)k->io_errors,
             (unsigned long long)k->refused, (unsigned long long)k->max_inflight,
             k->uring ? "io_uring" : "synchronous");
}

static void disk_close(struct vdev *d)
{
    struct disk *k = d->be_ctx;
    if (!k)
        return;
    if (k->uring) {
        /* Requests still in flight write into guest memory that is about
         * to go: wait for them. */
        struct io_uring_cqe *cqe;
        while (k->inflight && io_uring_wait_cqe(&k->ring, &cqe) == 0) {
            io_uring_cqe_seen(&k->ring, cqe);
            k->inflight--;
        }
        io_uring_queue_exit(&k->ring);
        close(k->ring_efd);
    }
    if (k->fd >= 0)
        close(k->fd);
    free(k);
    d->be_ctx = NULL;
}

static const struct vdev_backend disk_backend = {"blk", disk_fds, disk_run, disk_reap,
                                                 disk_report, disk_close};

static int open_image(struct disk *k, const char *file, char *err, size_t n)
{
    int flags = (k->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | (k->direct ? O_DIRECT : 0);
    k->fd = open(file, flags);
    if (k->fd < 0) {
        int e = errno;
        if (e == EINVAL && k->direct)
            snprintf(err, n, "--drive file=%s,cache=none: this file system does not take "
                     "O_DIRECT; use cache=writeback", file);
        else
            snprintf(err, n, "--drive file=%s: %s", file, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(k->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, n, "--drive file=%s: not a regular file (a raw image is expected)", file);
        return -EINVAL;
    }
    if (st.st_size < VIRTIO_BLK_SECTOR) {
        snprintf(err, n, "--drive file=%s: %lld bytes, less than one 512-byte sector", file,
                 (long long)st.st_size);
        return -EINVAL;
    }
    /* A tail shorter than a sector is not part of the disk. */
    k->capacity = (uint64_t)st.st_size / VIRTIO_BLK_SECTOR * VIRTIO_BLK_SECTOR;
    return 0;
}

static void start_uring(struct disk *k)
{
    if (getenv("AMALGAM_NO_IO_URING")) /* the fallback, on purpose (tests, bench) */
        return;
    if (io_uring_queue_init(VIRTQ_MAX_SIZE, &k->ring, 0) < 0)
        return;
    k->ring_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (k->ring_efd < 0 || io_uring_register_eventfd(&k->ring, k->ring_efd) < 0) {
        if (k->ring_efd >= 0)
            close(k->ring_efd);
        io_uring_queue_exit(&k->ring);
        return;
    }
    k->uring = true;
}

int vdev_disk_open(struct vdev *d, const char *file, bool readonly, bool direct,
                   struct virtio_device *model, char *err, size_t n)
{
    struct disk *k = calloc(1, sizeof *k);
    if (!k) {
        snprintf(err, n, "--drive file=%s: out of memory", file);
        return -ENOMEM;
    }
    k->fd = -1;
    k->readonly = readonly;
    k->direct = direct;
    d->be_ctx = k;
    d->be = &disk_backend;
    int r = open_image(k, file, err, n);
    if (r < 0)
        return r;
    snprintf(k->serial, sizeof k->serial, "amalgam-%.12s", d->name);
    start_uring(k);
    virtio_blk_device(model, k->capacity, readonly);
    return 0;
}
