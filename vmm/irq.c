/* Interrupt routing: APIC messages to the vCPUs they address, here and on
 * other nodes; IOAPIC pins and EOIs at the IOAPIC's owner. */
#include "vmm/cluster.h"
#include "vmm/migrate.h"
#include "vmm/vm.h"

void vm_deliver_local(struct vm *vm, const struct apic_msg *m)
{
    bool lowest = m->delivery == APIC_DM_LOWEST;
    for (int i = 0; i < vm->nr_vcpus; i++) {
        struct vcpu *v = &vm->vcpus[i];
        if (!v->local)
            continue;
        pthread_mutex_lock(&v->lock);
        bool hit = lapic_match(&v->lapic, m);
        if (hit)
            lapic_deliver(&v->lapic, m);
        pthread_mutex_unlock(&v->lock);
        if (hit) {
            vcpu_kick(v);
            if (lowest)
                break; /* lowest priority: the first match takes it */
        }
    }
}

/* A physical destination that is no vCPU's APIC id (ids are the vCPU
 * numbers, numa/machine.c) and not the broadcast one. */
static bool addresses_nobody(const struct vm *vm, const struct apic_msg *m)
{
    if (m->shorthand != APIC_SH_NONE || m->dest_logical)
        return false;
    uint32_t d = m->x2apic ? m->dest : m->dest & 0xff;
    return d >= (uint32_t)vm->nr_vcpus &&
           d != (m->x2apic ? APIC_BROADCAST_X2 : APIC_BROADCAST_XAPIC);
}

void vm_deliver(struct vm *vm, const struct apic_msg *m)
{
    if (addresses_nobody(vm, m)) {
        vm_guest_error(vm, GERR_IPI_NOBODY, "sent an interrupt (vector %u) to APIC id %u, "
                       "which no vCPU has", m->vector, m->dest);
        return;
    }
    if (vm->mig)
        migrate_deliver(vm, m); /* several nodes: routed by epoch */
    else
        vm_deliver_local(vm, m);
}

void vm_deliver_all(struct vm *vm, const struct ioapic_out *out)
{
    for (int i = 0; i < out->n; i++)
        vm_deliver(vm, &out->msg[i]);
}

void vm_set_irq(struct vm *vm, int pin, int level)
{
    struct ioapic_out out = {0};
    pthread_mutex_lock(&vm->dev_lock);
    ioapic_set_irq(&vm->ioapic, pin, level, &out);
    pthread_mutex_unlock(&vm->dev_lock);
    vm_deliver_all(vm, &out);
}

void vm_eoi(struct vm *vm, uint8_t vector)
{
    /* Only the owner's IOAPIC routes interrupts (the others' copies never
     * see a pin change): an EOI elsewhere would leave Remote IRR set there
     * and the line masked for good. It goes without waiting for an answer,
     * unlike a register access. */
    if (!bus_is_local(&vm->bus, vm->ioapic_dev)) {
        cluster_forward_eoi(vm, vector);
        return;
    }
    struct ioapic_out out = {0};
    pthread_mutex_lock(&vm->dev_lock);
    ioapic_eoi(&vm->ioapic, vector, &out);
    pthread_mutex_unlock(&vm->dev_lock);
    vm_deliver_all(vm, &out);
}
