/* Internal to vmm/: the host side of a virtio device (virtio/virtio.h has
 * its pure model). A device lives on node 0: there its registers are a bus
 * device, its backend (a disk image, a TAP, getrandom) is open and one
 * worker thread does its I/O; on the other nodes it is only a bus entry
 * that forwards accesses (bus.h).
 *
 * The worker waits on an eventfd that register writes kick (a queue
 * notify, DRIVER_OK, a reset) and on its backend's fds; it reads and
 * writes the rings and buffers through the guest view, so on a multi-node
 * machine a buffer homed elsewhere is fetched by the DSM as for a vCPU.
 *
 * Locking: vdev->lock guards the transport and the backend's queue state;
 * the interrupt line is driven with it held (vdev->lock before dev_lock),
 * so line changes reach the IOAPIC in the order they were decided.
 */
#ifndef AMALGAM_VMM_VIRTIO_HOST_H
#define AMALGAM_VMM_VIRTIO_HOST_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "virtio/virtio.h"

struct vm;
struct vdev;

/* What a backend does for its device, on the worker thread. */
struct vdev_backend {
    const char *kind;                      /* "blk", "net", "rng" */
    int (*fds)(struct vdev *d, int *fds, short *events, int max); /* extra fds to wait on */
    void (*run)(struct vdev *d, uint32_t notified, bool started, bool reset); /* kicked */
    void (*ready)(struct vdev *d, int fd);  /* one of its fds is ready */
    void (*report)(struct vdev *d, char *buf, size_t n); /* --stats line */
    void (*close)(struct vdev *d);
};

struct vdev {
    struct vm *vm;
    char name[16];          /* blk0, net0, rng0 */
    int slot, gsi;
    uint64_t base;
    bool local;             /* runs here (node 0) */
    pthread_mutex_t lock;
    struct virtio_mmio t;
    struct virtio_mem mem;
    int kick_efd;
    _Atomic uint32_t notified; /* queues notified since the worker last looked */
    _Atomic bool start_req, reset_req, stop;
    pthread_t thread;
    bool thread_started;
    const struct vdev_backend *be;
    void *be_ctx;
};

/* With d->lock held: carries out a transport call's effects that must stay
 * under the lock (the interrupt line, a NEEDS_RESET log line). */
void vdev_apply_locked(struct vdev *d, const struct virtio_fx *fx, bool was_broken);
/* The device found the driver broke the rules (lock held): NEEDS_RESET,
 * counted, logged once. */
void vdev_fail(struct vdev *d, enum virtio_err kind, const char *why);
/* Pops the next chain of queue q (lock held): 1, 0 none, <0 broken ring. */
int vdev_pop(struct vdev *d, int q, struct virtq_chain *c);
/* Pushes a chain back as used (lock held). */
void vdev_push(struct vdev *d, int q, const struct virtq_chain *c, uint32_t written);

/* The backends. open: 0 or -errno with err filled in. */
int vdev_disk_open(struct vdev *d, const char *file, bool readonly, bool direct,
                   struct virtio_device *model, char *err, size_t n);
int vdev_tap_open(struct vdev *d, const char *ifname, const uint8_t mac[6],
                  struct virtio_device *model, char *err, size_t n);
int vdev_rng_open(struct vdev *d, struct virtio_device *model, char *err, size_t n);

#endif
