/* The machine's virtio devices on the bus (virtio_host.h): slots, register
 * accesses, the worker threads, and the entropy backend. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "platform/platform.h"
#include "vmm/virtio_host.h"
#include "vmm/vm.h"

struct vm_virtio {
    int n;
    struct vdev dev[VMM_MAX_VIRTIO];
};

/* ---- guest memory, as the device reaches it ---- */

static void *map_guest(void *ctx, uint64_t gpa, uint64_t len)
{
    struct vm *vm = ctx;
    return gmem_guest_ptr(&vm->mem, gpa, len);
}

/* ---- transport effects ---- */

void vdev_apply_locked(struct vdev *d, const struct virtio_fx *fx, bool was_broken)
{
    if (fx->irq >= 0)
        vm_set_irq(d->vm, d->gsi, fx->irq);
    if (!was_broken && virtio_mmio_needs_reset(&d->t))
        vm_guest_error(d->vm, GERR_VIRTIO, "broke virtio %s's rules (%s), so the device "
                       "waits for a reset and its queues are", d->name, d->t.reason);
}

void vdev_fail(struct vdev *d, enum virtio_err kind, const char *why)
{
    struct virtio_fx fx = {.irq = -1};
    bool was = virtio_mmio_needs_reset(&d->t);
    virtio_mmio_fail(&d->t, kind, why, &fx);
    vdev_apply_locked(d, &fx, was);
}

int vdev_pop(struct vdev *d, int q, struct virtq_chain *c)
{
    struct virtio_fx fx = {.irq = -1};
    bool was = virtio_mmio_needs_reset(&d->t);
    int r = virtio_pop(&d->t, q, &d->mem, c, &fx);
    vdev_apply_locked(d, &fx, was);
    return r;
}

void vdev_push(struct vdev *d, int q, const struct virtq_chain *c, uint32_t written)
{
    struct virtio_fx fx = {.irq = -1};
    virtio_push(&d->t, q, c, written, &fx);
    vdev_apply_locked(d, &fx, true);
}

static void kick(struct vdev *d)
{
    uint64_t one = 1;
    if (write(d->kick_efd, &one, sizeof one) < 0) {
        /* the counter cannot overflow in practice; a kick is never lost
         * while the worker has one unread */
    }
}

/* ---- registers (the bus ops) ---- */

static uint64_t vdev_read(void *ctx, void *who, uint64_t addr, int size)
{
    struct vdev *d = ctx;
    (void)who;
    pthread_mutex_lock(&d->lock);
    uint32_t v = virtio_mmio_read(&d->t, addr - d->base, size);
    pthread_mutex_unlock(&d->lock);
    return v;
}

static void vdev_write(void *ctx, void *who, uint64_t addr, int size, uint64_t val)
{
    struct vdev *d = ctx;
    struct virtio_fx fx = {.irq = -1};
    (void)who;
    pthread_mutex_lock(&d->lock);
    bool was = virtio_mmio_needs_reset(&d->t);
    virtio_mmio_write(&d->t, &d->mem, addr - d->base, size, (uint32_t)val, &fx);
    vdev_apply_locked(d, &fx, was);
    pthread_mutex_unlock(&d->lock);
    if (fx.notify)
        atomic_fetch_or(&d->notified, fx.notify);
    if (fx.start)
        atomic_store(&d->start_req, true);
    if (fx.reset)
        atomic_store(&d->reset_req, true);
    if (fx.notify || fx.start || fx.reset)
        kick(d);
}

static int vdev_save(void *ctx, void *buf, size_t len)
{
    struct vdev *d = ctx;
    pthread_mutex_lock(&d->lock);
    int r = virtio_mmio_save(&d->t, buf, len);
    pthread_mutex_unlock(&d->lock);
    return r;
}

static int vdev_restore(void *ctx, const void *buf, size_t len)
{
    struct vdev *d = ctx;
    pthread_mutex_lock(&d->lock);
    int r = virtio_mmio_restore(&d->t, &d->mem, buf, len);
    pthread_mutex_unlock(&d->lock);
    if (r == 0) { /* the worker looks at every queue again */
        atomic_store(&d->start_req, true);
        kick(d);
    }
    return r;
}

static void vdev_reset(void *ctx)
{
    struct vdev *d = ctx;
    vdev_write(d, NULL, d->base + VIRTIO_MMIO_STATUS, 4, 0);
}

static const struct bus_dev_ops vdev_ops = {vdev_read, vdev_write, vdev_save, vdev_restore,
                                            vdev_reset};

/* ---- the worker ---- */

#define WORKER_FDS 4

static void *worker(void *arg)
{
    struct vdev *d = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    while (!atomic_load(&d->stop)) {
        struct pollfd p[1 + WORKER_FDS];
        short ev[WORKER_FDS];
        int fds[WORKER_FDS];
        int n = d->be->fds ? d->be->fds(d, fds, ev, WORKER_FDS) : 0;
        p[0] = (struct pollfd){d->kick_efd, POLLIN, 0};
        for (int i = 0; i < n; i++)
            p[1 + i] = (struct pollfd){fds[i], ev[i], 0};
        if (poll(p, (nfds_t)(1 + n), -1) < 0)
            continue; /* EINTR */
        if (p[0].revents) {
            uint64_t v;
            if (read(d->kick_efd, &v, sizeof v) < 0) {
                /* nothing to read: another wake-up took it */
            }
            bool reset = atomic_exchange(&d->reset_req, false);
            bool start = atomic_exchange(&d->start_req, false);
            uint32_t q = atomic_exchange(&d->notified, 0);
            if (!atomic_load(&d->stop))
                d->be->run(d, q, start, reset);
        }
        for (int i = 0; i < n; i++)
            if (p[1 + i].revents && !atomic_load(&d->stop))
                d->be->ready(d, p[1 + i].fd);
    }
    return NULL;
}

/* ---- life cycle ---- */

static int open_backend(struct vm *vm, struct vdev *d, int i, struct virtio_device *model,
                        char *err, size_t n)
{
    const struct vm_config *c = &vm->cfg;
    if (i < c->ndrives) {
        const struct vm_drive *dr = &c->drives[i];
        snprintf(d->name, sizeof d->name, "blk%d", i);
        return vdev_disk_open(d, dr->file, dr->readonly, dr->direct, model, err, n);
    }
    i -= c->ndrives;
    if (i < c->nnetdevs) {
        snprintf(d->name, sizeof d->name, "net%d", i);
        return vdev_tap_open(d, c->netdevs[i].ifname, c->netdevs[i].mac, model, err, n);
    }
    snprintf(d->name, sizeof d->name, "rng0");
    return vdev_rng_open(d, model, err, n);
}

int vm_virtio_create(struct vm *vm, char *err, size_t n)
{
    int count = vm_virtio_slots(&vm->cfg);
    if (!count)
        return 0;
    if (count > VMM_MAX_VIRTIO) {
        snprintf(err, n, "%d virtio devices asked for (--drive, --netdev, --rng): at most %d",
                 count, VMM_MAX_VIRTIO);
        return -EINVAL;
    }
    struct vm_virtio *vv = calloc(1, sizeof *vv);
    if (!vv)
        return -ENOMEM;
    vm->virtio = vv;
    for (int i = 0; i < count; i++) {
        struct vdev *d = &vv->dev[i];
        d->vm = vm;
        d->slot = i;
        d->gsi = PLATFORM_VIRTIO_GSI_BASE + i;
        d->base = PLATFORM_VIRTIO_BASE + (uint64_t)i * PLATFORM_VIRTIO_STRIDE;
        d->local = vm->node == 0;
        d->kick_efd = -1;
        d->mem = (struct virtio_mem){vm, map_guest};
        pthread_mutex_init(&d->lock, NULL);
        vv->n++;
        struct virtio_device model = {0};
        if (d->local) {
            int r = open_backend(vm, d, i, &model, err, n);
            if (r < 0)
                return r;
            d->kick_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
            if (d->kick_efd < 0) {
                snprintf(err, n, "virtio %s: eventfd: %s", d->name, strerror(errno));
                return -errno;
            }
        } else {
            snprintf(d->name, sizeof d->name, "virtio%d", i);
        }
        virtio_mmio_init(&d->t, &model);
        struct bus_dev bd = {d->name, 0, BUS_MMIO, 0x7, d->base, PLATFORM_VIRTIO_SIZE, &vdev_ops,
                             d};
        int r = bus_add(&vm->bus, &bd);
        if (r < 0) {
            snprintf(err, n, "virtio %s: cannot put it on the bus: %s", d->name, strerror(-r));
            return r;
        }
    }
    return 0;
}

int vm_virtio_start(struct vm *vm)
{
    struct vm_virtio *vv = vm->virtio;
    for (int i = 0; vv && i < vv->n; i++) {
        struct vdev *d = &vv->dev[i];
        if (!d->local)
            continue;
        int r = pthread_create(&d->thread, NULL, worker, d);
        if (r)
            return -r;
        char name[16];
        snprintf(name, sizeof name, "amalgam-%s", d->name);
        pthread_setname_np(d->thread, name);
        d->thread_started = true;
    }
    return 0;
}

static void report(struct vdev *d)
{
    char line[256] = "";
    if (d->be->report)
        d->be->report(d, line, sizeof line);
    char errs[160] = "";
    size_t len = 0;
    for (int k = 0; k < VIRTIO_ERR_COUNT; k++)
        if (d->t.errors[k] && len < sizeof errs)
            len += (size_t)snprintf(errs + len, sizeof errs - len, " %s %llu",
                                    virtio_err_names[k], (unsigned long long)d->t.errors[k]);
    fprintf(stderr, "amalgam: virtio %s: %s%s%s\n", d->name, line, len ? "; driver errors:" : "",
            errs);
}

void vm_virtio_stop(struct vm *vm)
{
    struct vm_virtio *vv = vm->virtio;
    for (int i = 0; vv && i < vv->n; i++) {
        struct vdev *d = &vv->dev[i];
        if (!d->thread_started)
            continue;
        atomic_store(&d->stop, true);
        kick(d);
        pthread_join(d->thread, NULL);
        d->thread_started = false;
        if (vm->cfg.stats || vm->cfg.verbose)
            report(d);
    }
}

void vm_virtio_free(struct vm *vm)
{
    struct vm_virtio *vv = vm->virtio;
    if (!vv)
        return;
    for (int i = 0; i < vv->n; i++) {
        struct vdev *d = &vv->dev[i];
        if (d->be && d->be->close)
            d->be->close(d);
        if (d->kick_efd >= 0)
            close(d->kick_efd);
        pthread_mutex_destroy(&d->lock);
    }
    free(vv);
    vm->virtio = NULL;
}

int vm_virtio_preflight(const struct vm_config *cfg, char *err, size_t n)
{
    for (int i = 0; i < cfg->ndrives; i++) {
        const struct vm_drive *dr = &cfg->drives[i];
        if (access(dr->file, dr->readonly ? R_OK : R_OK | W_OK) < 0) {
            snprintf(err, n, "--drive file=%s: %s", dr->file, strerror(errno));
            return -errno;
        }
    }
    return 0; /* too many devices: build_firmware_tables refused them already */
}

/* ---- entropy: the host's getrandom ---- */

#define RNG_MAX_REQUEST (64u << 10)

struct rng {
    uint64_t requests, bytes;
};

static void rng_run(struct vdev *d, uint32_t notified, bool started, bool reset)
{
    struct rng *r = d->be_ctx;
    static __thread struct virtq_chain c;
    (void)reset;
    if (!notified && !started)
        return;
    pthread_mutex_lock(&d->lock);
    while (vdev_pop(d, 0, &c) > 0) {
        /* The device may fill less than offered: a guest handing over a
         * huge buffer gets RNG_MAX_REQUEST bytes, not a stalled device. */
        uint32_t written = 0;
        for (unsigned i = 0; i < c.nseg && written < RNG_MAX_REQUEST; i++) {
            struct virtq_seg *s = &c.seg[i];
            uint32_t want = s->len < RNG_MAX_REQUEST - written ? s->len : RNG_MAX_REQUEST - written;
            for (uint32_t off = 0; s->write && off < want;) {
                ssize_t k = getrandom(s->p + off, want - off, 0);
                if (k <= 0)
                    break;
                off += (uint32_t)k;
                written += (uint32_t)k;
            }
        }
        r->requests++;
        r->bytes += written;
        vdev_push(d, 0, &c, written);
    }
    pthread_mutex_unlock(&d->lock);
}

static void rng_report(struct vdev *d, char *buf, size_t n)
{
    struct rng *r = d->be_ctx;
    snprintf(buf, n, "%llu requests, %llu bytes", (unsigned long long)r->requests,
             (unsigned long long)r->bytes);
}

static void rng_close(struct vdev *d)
{
    free(d->be_ctx);
    d->be_ctx = NULL;
}

static const struct vdev_backend rng_backend = {"rng", NULL, rng_run, NULL, rng_report, rng_close};

int vdev_rng_open(struct vdev *d, struct virtio_device *model, char *err, size_t n)
{
    d->be_ctx = calloc(1, sizeof(struct rng));
    if (!d->be_ctx) {
        snprintf(err, n, "virtio rng: out of memory");
        return -ENOMEM;
    }
    d->be = &rng_backend;
    virtio_rng_device(model);
    return 0;
}
