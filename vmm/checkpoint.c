/* A paused VM's complete state, kept in this process, and put into a new
 * VM (see vmm.h: vm_checkpoint_save). Memory is copied through the memfd;
 * each vCPU's KVM state through kvm.c, its LAPIC and the devices as the
 * protobuf encodings of state.c. The groundwork for checkpoints to disk
 * and for vCPU migration, which send the same pieces elsewhere. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock/clock.h"
#include "vmm/kvm.h"
#include "vmm/state.h"
#include "vmm/vm.h"

struct vcpu_saved {
    struct kvm_vcpu_state kvm;
    uint8_t lapic[STATE_MAX_BYTES];
    int lapic_len;
    uint8_t run_state; /* enum vcpu_run_state before the pause */
    bool halt_if;
};

struct vm_checkpoint {
    int nr_vcpus;
    uint64_t mem_size;
    uint8_t *mem;
    struct vcpu_saved *vcpu;
    uint8_t dev[BUS_MAX_DEVICES][STATE_MAX_BYTES];
    int dev_len[BUS_MAX_DEVICES]; /* 0: nothing saved */
    int ndev;
};

void vm_checkpoint_free(struct vm_checkpoint *cp)
{
    if (!cp)
        return;
    free(cp->mem);
    free(cp->vcpu);
    free(cp);
}

static int copy_memory(int fd, uint8_t *buf, uint64_t size, bool write)
{
    for (uint64_t off = 0; off < size;) {
        size_t chunk = size - off > (64u << 20) ? (64u << 20) : (size_t)(size - off);
        ssize_t n = write ? pwrite(fd, buf + off, chunk, (off_t)off)
                          : pread(fd, buf + off, chunk, (off_t)off);
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        off += (uint64_t)n;
    }
    return 0;
}

int vm_checkpoint_save(struct vm *vm, struct vm_checkpoint **out, char *err, size_t errlen)
{
    if (vm->cfg.ic) {
        snprintf(err, errlen, "checkpoints of a machine over several nodes are not supported yet");
        return -ENOTSUP;
    }
    struct vm_checkpoint *cp = calloc(1, sizeof *cp);
    if (!cp)
        return -ENOMEM;
    cp->nr_vcpus = vm->nr_vcpus;
    cp->mem_size = vm->mem.size;
    cp->mem = malloc(vm->mem.size);
    cp->vcpu = calloc((size_t)vm->nr_vcpus, sizeof *cp->vcpu);
    int r = cp->mem && cp->vcpu ? 0 : -ENOMEM;
    r = r ?: copy_memory(vm->mem.fd, cp->mem, vm->mem.size, false);
    uint32_t idx[KVM_VCPU_STATE_MAX_MSRS];
    int dropped = 0, n = r ? 0 : kvm_saveable_msrs(vm->kvm_fd, idx, KVM_VCPU_STATE_MAX_MSRS, &dropped);
    if (!r && n < 0)
        r = n;
    uint64_t now = clock_now_ns();
    for (int i = 0; i < vm->nr_vcpus && !r; i++) {
        struct vcpu *v = &vm->vcpus[i];
        struct vcpu_saved *s = &cp->vcpu[i];
        r = kvm_vcpu_save(vm->kvm_fd, v->fd, idx, n, &s->kvm);
        pthread_mutex_lock(&v->lock);
        if (!r) {
            s->lapic_len = state_lapic_encode(&v->lapic, now, s->lapic, sizeof s->lapic);
            r = s->lapic_len < 0 ? s->lapic_len : 0;
        }
        /* A parked vCPU goes back to the state it parked from. */
        s->run_state = v->sm.state == VCPU_PAUSED ? v->sm.resume_to : v->sm.state;
        s->halt_if = v->halt_if;
        pthread_mutex_unlock(&v->lock);
    }
    cp->ndev = vm->bus.ndev;
    for (int i = 0; i < vm->bus.ndev && !r; i++) {
        const struct bus_dev *d = &vm->bus.dev[i];
        if (!d->ops->save || !bus_is_local(&vm->bus, i))
            continue;
        cp->dev_len[i] = d->ops->save(d->ctx, cp->dev[i], sizeof cp->dev[i]);
        r = cp->dev_len[i] < 0 ? cp->dev_len[i] : 0;
    }
    if (r < 0) {
        snprintf(err, errlen, "cannot save the VM's state: %s", strerror(-r));
        vm_checkpoint_free(cp);
        return r;
    }
    if (dropped)
        fprintf(stderr, "amalgam: KVM lists %d more MSRs than a checkpoint holds; left out\n",
                dropped);
    *out = cp;
    return 0;
}

int vm_checkpoint_restore(struct vm *vm, const struct vm_checkpoint *cp, char *err, size_t errlen)
{
    if (cp->nr_vcpus != vm->nr_vcpus || cp->mem_size != vm->mem.size || cp->ndev != vm->bus.ndev) {
        snprintf(err, errlen, "the checkpoint is of another machine (%d vCPUs, %llu MiB, %d "
                 "devices)", cp->nr_vcpus, (unsigned long long)(cp->mem_size >> 20), cp->ndev);
        return -EINVAL;
    }
    int r = copy_memory(vm->mem.fd, cp->mem, cp->mem_size, true);
    uint64_t now = clock_now_ns();
    for (int i = 0; i < vm->nr_vcpus && !r; i++) {
        struct vcpu *v = &vm->vcpus[i];
        const struct vcpu_saved *s = &cp->vcpu[i];
        r = kvm_vcpu_restore(v->fd, &s->kvm);
        pthread_mutex_lock(&v->lock);
        if (!r)
            r = state_lapic_decode(&v->lapic, now, s->lapic, (size_t)s->lapic_len);
        if (!r) {
            /* This VM's TSC now runs on from the saved value: re-anchor the
             * LAPIC's clock (guest TSC <-> host ns) to it. */
            r = vcpu_tsc_clock(vm, v, &v->lapic.clock);
        }
        if (!r && v->local)
            vcpu_sm_init(&v->sm, (enum vcpu_run_state)s->run_state);
        v->halt_if = s->halt_if;
        pthread_mutex_unlock(&v->lock);
    }
    for (int i = 0; i < vm->bus.ndev && !r; i++) {
        const struct bus_dev *d = &vm->bus.dev[i];
        if (cp->dev_len[i] > 0 && d->ops->restore)
            r = d->ops->restore(d->ctx, cp->dev[i], (size_t)cp->dev_len[i]);
    }
    if (r < 0)
        snprintf(err, errlen, "cannot restore the VM's state: %s", strerror(-r));
    return r;
}
