/* Device accesses that cross nodes (see cluster.h): the bus's forward op
 * on the requesting node, and the owner's device thread. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock/clock.h"
#include "vmm/cluster.h"
#include "vmm/vm.h"

/* On the owner, forwarded accesses are queued for the device thread: a
 * device may read guest memory through the DSM and wait for a page, which
 * the message loop must never do (it serves the DSM). Each remote vCPU has
 * at most one access in flight, so nr_vcpus entries always suffice; a peer
 * that sends more is misbehaving and is dropped. */
struct dev_req {
    int src;
    struct bus_access a;
};

struct dev_queue {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct dev_req *ring;
    unsigned head, count, cap;
    bool stop;
    pthread_t thread;
    bool started;
    uint64_t deadline_ns; /* how long this node's vCPUs wait for an answer */
};

void cluster_queue_io(void *ctx, const struct ic_hdr *h, const void *payload)
{
    struct vm *vm = ctx;
    struct dev_queue *q = vm->devq;
    struct bus_access a;
    memcpy(&a, payload, sizeof a);
    pthread_mutex_lock(&q->lock);
    bool full = q->count == q->cap;
    if (!full) {
        q->ring[(q->head + q->count++) % q->cap] = (struct dev_req){h->src_rank, a};
        pthread_cond_signal(&q->cond);
    }
    pthread_mutex_unlock(&q->lock);
    if (full)
        cluster_bad_message(vm, h, "more device accesses in flight than the peer has vCPUs");
}

static void *device_thread(void *arg)
{
    struct vm *vm = arg;
    struct dev_queue *q = vm->devq;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_mutex_lock(&q->lock);
    while (!q->stop) {
        if (!q->count) {
            pthread_cond_wait(&q->cond, &q->lock);
            continue;
        }
        struct dev_req r = q->ring[q->head];
        q->head = (q->head + 1) % q->cap;
        q->count--;
        pthread_mutex_unlock(&q->lock);
        int st = bus_serve(&vm->bus, &r.a);
        if (st < 0) {
            struct ic_hdr h = {.src_rank = (uint16_t)r.src};
            cluster_bad_message(vm, &h, "a device access with a bad device, address or size");
            r.a.data = ~0ULL;
        }
        int e = ic_send(vm->cfg.ic, r.src, VM_T_IO_REPLY, r.a.vcpu | (uint64_t)(st < 0) << 32,
                        r.a.data, NULL, 0);
        if (e < 0) /* its vCPU would wait for the reply until its deadline */
            vm_fail(vm, "node %d: cannot answer node %d's device access: %s", vm->node, r.src,
                    strerror(-e));
        pthread_mutex_lock(&q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

/* How long a vCPU waits for the owner of a device to answer. In the
 * emulated L1 a node's threads can wait seconds for a CPU. */
static uint64_t io_deadline_ns(void)
{
    const char *e = getenv("AMALGAM_IO_DEADLINE_MS");
    long ms = e ? atol(e) : 0;
    return (ms > 0 ? (uint64_t)ms : 60000ULL) * 1000000ULL;
}

int cluster_start_devices(struct vm *vm)
{
    struct dev_queue *q = calloc(1, sizeof *q);
    if (!q)
        return -ENOMEM;
    vm->devq = q;
    q->deadline_ns = io_deadline_ns();
    q->cap = (unsigned)vm->nr_vcpus;
    q->ring = calloc(q->cap, sizeof *q->ring);
    if (!q->ring)
        return -ENOMEM;
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->cond, NULL);
    if (pthread_create(&q->thread, NULL, device_thread, vm))
        return -EAGAIN;
    pthread_setname_np(q->thread, "amalgam-devices");
    q->started = true;
    return 0;
}

void cluster_stop_devices(struct vm *vm)
{
    struct dev_queue *q = vm->devq;
    if (!q)
        return;
    if (q->started) {
        pthread_mutex_lock(&q->lock);
        q->stop = true;
        pthread_cond_signal(&q->cond);
        pthread_mutex_unlock(&q->lock);
        pthread_join(q->thread, NULL);
    }
    free(q->ring);
    free(q);
    vm->devq = NULL;
}

void cluster_io_answered(void *ctx, const struct ic_hdr *h, const void *payload)
{
    struct vm *vm = ctx;
    (void)payload;
    uint64_t id = h->arg0 & 0xffffffffu;
    struct vcpu *v = id < (uint64_t)vm->nr_vcpus ? &vm->vcpus[id] : NULL;
    if (!v || !v->local || (h->arg0 >> 32) > 1) {
        cluster_bad_message(vm, h, "a device answer for no vCPU of this node");
        return;
    }
    pthread_mutex_lock(&v->lock);
    bool expected = v->io_waiting && h->src_rank == v->io_owner;
    if (expected) {
        v->io_value = h->arg1;
        v->io_done = true;
        v->io_waiting = false;
        pthread_cond_signal(&v->io_cond);
    }
    pthread_mutex_unlock(&v->lock);
    if (!expected)
        cluster_bad_message(vm, h, "a device answer nobody waits for, or from the wrong node");
}

/* The bus's forward op: the access goes to the owner's device thread. */
int cluster_forward(void *ctx, void *who, int owner, struct bus_access *a)
{
    struct vm *vm = ctx;
    struct vcpu *v = who;
    if (!v)
        return -EINVAL;
    pthread_mutex_lock(&v->lock);
    v->io_done = false;
    v->io_waiting = true;
    v->io_owner = owner;
    pthread_mutex_unlock(&v->lock);
    int e = ic_send(vm->cfg.ic, owner, VM_T_IO_REQ, 0, 0, a, sizeof *a);
    if (e < 0) {
        pthread_mutex_lock(&v->lock);
        v->io_waiting = false;
        pthread_mutex_unlock(&v->lock);
        return e;
    }
    uint64_t deadline = clock_now_ns() + vm->devq->deadline_ns;
    pthread_mutex_lock(&v->lock);
    while (!v->io_done && !atomic_load(&vm->stopping) && clock_now_ns() < deadline) {
        struct timespec ts = clock_realtime_after(100000000ULL);
        pthread_cond_timedwait(&v->io_cond, &v->lock, &ts);
    }
    bool done = v->io_done;
    v->io_waiting = false;
    a->data = v->io_value;
    pthread_mutex_unlock(&v->lock);
    if (done)
        return 0;
    return atomic_load(&vm->stopping) ? -ECANCELED : -ETIMEDOUT;
}
