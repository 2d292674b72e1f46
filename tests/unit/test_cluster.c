/* The cluster's message protocol between node processes, over the
 * interconnect's in-process loopback transport: no KVM, no fabric, but the
 * real handlers, the real device bus and device thread, and messages that
 * cross as validated wire bytes (delayed and reordered in one variant).
 * Covered: an IPI to a vCPU on another node, INIT/SIPI to a remote AP, a
 * forwarded port access and its reply, an EOI reaching the IOAPIC's owner,
 * a lost reply (deadline, named error) and a bad forwarded access. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "clock/clock.h"
#include "interconnect/interconnect.h"
#include "platform/platform.h"
#include "tests/unit/unit.h"
#include "vmm/cluster.h"
#include "vmm/vm.h"

#define NODES 2
#define VCPUS 2 /* vCPU i on node i */

struct world {
    struct ic *ic[NODES];
    struct vm *vm[NODES];
    pthread_t poller[NODES];
    _Atomic bool stop;
};

struct poll_arg {
    struct world *w;
    int node;
};
static struct poll_arg args[NODES];

/* Each node's message loop, as cluster.c's progress thread minus the DSM. */
static void *poll_loop(void *p)
{
    struct poll_arg *a = p;
    struct ic *ic = a->w->ic[a->node];
    while (!atomic_load(&a->w->stop))
        if (ic_poll_handlers(ic, 64) == 0)
            ic_wait_ns(ic, 1000000, -1);
    return NULL;
}

static void discard(void *ctx, uint8_t b)
{
    (void)ctx, (void)b;
}

static struct vm *node_vm(struct ic *ic, int node)
{
    struct vm *vm = calloc(1, sizeof *vm);
    vm->cfg.ic = ic;
    vm->node = node;
    vm->nnodes = NODES;
    vm->nr_vcpus = VCPUS;
    vm->stop_efd = eventfd(0, EFD_CLOEXEC);
    vm->vcpus = calloc(VCPUS, sizeof *vm->vcpus);
    pthread_mutex_init(&vm->dev_lock, NULL);
    bus_init(&vm->bus, node, NULL);
    ioapic_init(&vm->ioapic, platform_ioapic_id(VCPUS));
    uart_init(&vm->uart, discard, NULL);
    ck_assert_int_eq(vm_register_devices(vm), 0);
    struct lapic_clock clk = {.tsc_khz = 1000000, .ns_ref = clock_now_ns()};
    for (int i = 0; i < VCPUS; i++) {
        struct vcpu *v = &vm->vcpus[i];
        v->vm = vm;
        v->id = i;
        pthread_mutex_init(&v->lock, NULL);
        pthread_cond_init(&v->io_cond, NULL);
        lapic_init(&v->lapic, (uint32_t)i, i == 0, &clk);
        vm->machine.vcpu_node[i] = (uint8_t)i;
        v->local = i == node;
        vcpu_sm_init(&v->sm, v->local ? VCPU_RUNNABLE : VCPU_GONE);
    }
    ck_assert_int_eq(cluster_attach(vm), 0);
    return vm;
}

static struct world *world_new(const struct ic_loopback_opts *o)
{
    struct world *w = calloc(1, sizeof *w);
    struct ic_types t;
    ic_types_init(&t);
    ck_assert_int_eq(cluster_register_types(&t), 0);
    ck_assert_int_eq(ic_loopback_open(NODES, &t, o, w->ic), 0);
    for (int n = 0; n < NODES; n++) {
        w->vm[n] = node_vm(w->ic[n], n);
        args[n] = (struct poll_arg){w, n};
        ck_assert_int_eq(pthread_create(&w->poller[n], NULL, poll_loop, &args[n]), 0);
    }
    return w;
}

static void world_free(struct world *w)
{
    atomic_store(&w->stop, true);
    for (int n = 0; n < NODES; n++)
        pthread_join(w->poller[n], NULL);
    for (int n = 0; n < NODES; n++) {
        cluster_stop(w->vm[n]);
        close(w->vm[n]->stop_efd);
        free(w->vm[n]->vcpus);
        free(w->vm[n]);
        ic_close(w->ic[n]);
    }
    free(w);
}

/* Polls cond (under the vCPU's lock) for up to 2 s. */
#define EVENTUALLY(v, cond)                                                             \
    ({                                                                                  \
        bool ok_ = false;                                                               \
        for (uint64_t t0_ = clock_now_ns(); !ok_ && clock_now_ns() - t0_ < 2000000000ULL;) { \
            pthread_mutex_lock(&(v)->lock);                                             \
            ok_ = (cond);                                                               \
            pthread_mutex_unlock(&(v)->lock);                                           \
            if (!ok_)                                                                   \
                usleep(1000);                                                           \
        }                                                                               \
        ok_;                                                                            \
    })

static bool irr(const struct lapic *a, int vec)
{
    return a->irr[vec / 32] & (1u << (vec % 32));
}

static void ipi_crosses(const struct ic_loopback_opts *o)
{
    struct world *w = world_new(o);
    struct apic_msg m = {.vector = 0x40, .delivery = APIC_DM_FIXED, .dest = 1};
    vm_deliver(w->vm[0], &m); /* vCPU 0 on node 0 -> APIC id 1, on node 1 */
    struct vcpu *v1 = &w->vm[1]->vcpus[1];
    ck_assert(EVENTUALLY(v1, irr(&v1->lapic, 0x40)));
    /* A broadcast reaches both nodes' vCPUs. */
    struct apic_msg b = {.vector = 0x41, .delivery = APIC_DM_FIXED, .dest = 0xff,
                         .shorthand = APIC_SH_ALL};
    vm_deliver(w->vm[1], &b);
    struct vcpu *v0 = &w->vm[0]->vcpus[0];
    ck_assert(EVENTUALLY(v0, irr(&v0->lapic, 0x41)));
    ck_assert(EVENTUALLY(v1, irr(&v1->lapic, 0x41)));
    /* Node 0's copy of vCPU 1 (gone: it runs on node 1) took nothing. */
    ck_assert(!irr(&w->vm[0]->vcpus[1].lapic, 0x40));
    world_free(w);
}

START_TEST(ipi_to_a_vcpu_on_another_node) { ipi_crosses(NULL); }
END_TEST

START_TEST(ipi_with_delays_and_reordering)
{
    struct ic_loopback_opts o = {.delay_ns = 2000000, .reorder_pct = 50, .seed = 7};
    ipi_crosses(&o);
}
END_TEST

START_TEST(init_and_sipi_reach_a_remote_ap)
{
    struct world *w = world_new(NULL);
    struct apic_msg init = {.delivery = APIC_DM_INIT, .dest = 1, .level = 1};
    struct apic_msg sipi = {.vector = 0x9a, .delivery = APIC_DM_SIPI, .dest = 1};
    vm_deliver(w->vm[0], &init);
    vm_deliver(w->vm[0], &sipi);
    struct vcpu *v1 = &w->vm[1]->vcpus[1];
    ck_assert(EVENTUALLY(v1, v1->lapic.init_pending && v1->lapic.sipi_pending));
    ck_assert_uint_eq(v1->lapic.sipi_vector, 0x9a);
    world_free(w);
}
END_TEST

START_TEST(port_access_forwarded_and_answered)
{
    struct world *w = world_new(NULL);
    struct vcpu *v1 = &w->vm[1]->vcpus[1];
    struct bus_access a = {.space = BUS_PIO, .size = 1, .write = 1, .vcpu = 1,
                           .addr = PLATFORM_COM1_PORT + 7, .data = 0x77};
    ck_assert_int_eq(bus_access(&w->vm[1]->bus, v1, &a), BUS_DONE);
    ck_assert_uint_eq(w->vm[0]->uart.scr, 0x77); /* node 0's UART, */
    ck_assert_uint_eq(w->vm[1]->uart.scr, 0);    /* not node 1's copy */
    a = (struct bus_access){.space = BUS_PIO, .size = 1, .vcpu = 1,
                            .addr = PLATFORM_COM1_PORT + 7};
    ck_assert_int_eq(bus_access(&w->vm[1]->bus, v1, &a), BUS_DONE);
    ck_assert_uint_eq(a.data, 0x77);
    /* MMIO too: the IOAPIC's version register, read from node 1. */
    a = (struct bus_access){.space = BUS_MMIO, .size = 4, .write = 1, .vcpu = 1,
                            .addr = PLATFORM_IOAPIC_BASE, .data = 1};
    ck_assert_int_eq(bus_access(&w->vm[1]->bus, v1, &a), BUS_DONE);
    a = (struct bus_access){.space = BUS_MMIO, .size = 4, .vcpu = 1,
                            .addr = PLATFORM_IOAPIC_BASE + 0x10};
    ck_assert_int_eq(bus_access(&w->vm[1]->bus, v1, &a), BUS_DONE);
    ck_assert_uint_eq(a.data, ((PLATFORM_IOAPIC_PINS - 1) << 16) | 0x11);
    world_free(w);
}
END_TEST

START_TEST(eoi_reaches_the_ioapic_owner)
{
    struct world *w = world_new(NULL);
    struct vm *vm0 = w->vm[0];
    /* Pin 9: level-triggered, vector 0x39, to APIC id 1 (on node 1). */
    struct ioapic_out out = {0};
    pthread_mutex_lock(&vm0->dev_lock);
    ioapic_mmio_write(&vm0->ioapic, 0, 0x10 + 2 * 9, &out);
    ioapic_mmio_write(&vm0->ioapic, 0x10, 0x39 | (1u << 15), &out);
    ioapic_mmio_write(&vm0->ioapic, 0, 0x10 + 2 * 9 + 1, &out);
    ioapic_mmio_write(&vm0->ioapic, 0x10, 1u << 24, &out);
    pthread_mutex_unlock(&vm0->dev_lock);
    vm_set_irq(vm0, 9, 1);
    struct vcpu *v1 = &w->vm[1]->vcpus[1];
    ck_assert(EVENTUALLY(v1, irr(&v1->lapic, 0x39)));
    ck_assert(vm0->ioapic.remote_irr & (1u << 9));
    vm_set_irq(vm0, 9, 0);
    vm_eoi(w->vm[1], 0x39); /* node 1's LAPIC ends it */
    struct vcpu *v0 = &vm0->vcpus[0];
    ck_assert(EVENTUALLY(v0, !(vm0->ioapic.remote_irr & (1u << 9))));
    world_free(w);
}
END_TEST

START_TEST(a_lost_reply_meets_its_deadline)
{
    setenv("AMALGAM_IO_DEADLINE_MS", "300", 1);
    struct world *w = world_new(NULL);
    struct vcpu *v1 = &w->vm[1]->vcpus[1];
    ic_loopback_drop(w->ic[0], VM_T_IO_REPLY, 1); /* node 0's next answer is lost */
    struct bus_access a = {.space = BUS_PIO, .size = 1, .vcpu = 1, .addr = PLATFORM_COM1_PORT + 7};
    uint64_t t0 = clock_now_ns();
    ck_assert_int_eq(bus_access(&w->vm[1]->bus, v1, &a), -ETIMEDOUT);
    uint64_t waited = clock_now_ns() - t0;
    ck_assert_uint_ge(waited, 300000000ULL);
    ck_assert_uint_lt(waited, 2000000000ULL);
    ck_assert_uint_eq(a.data, 0xff);
    /* The next one is answered. */
    a = (struct bus_access){.space = BUS_PIO, .size = 1, .vcpu = 1, .addr = PLATFORM_COM1_PORT + 7};
    ck_assert_int_eq(bus_access(&w->vm[1]->bus, v1, &a), BUS_DONE);
    world_free(w);
    unsetenv("AMALGAM_IO_DEADLINE_MS");
}
END_TEST

START_TEST(bad_forwarded_access_is_refused_and_counted)
{
    struct world *w = world_new(NULL);
    struct bus_access a = {.space = BUS_PIO, .size = 1, .dev = 99, .vcpu = 1, .addr = 0x3f8};
    ck_assert_int_eq(ic_send(w->ic[1], 0, VM_T_IO_REQ, 0, 0, &a, sizeof a), 0);
    struct vcpu *v0 = &w->vm[0]->vcpus[0];
    ck_assert(EVENTUALLY(v0, atomic_load(&w->vm[0]->bus.bad_remote) == 1));
    /* Short payloads never reach the handler: the wire check drops them. */
    ck_assert_int_eq(ic_send(w->ic[1], 0, VM_T_IO_REQ, 0, 0, &a, 4), 0);
    ck_assert(EVENTUALLY(v0, ic_stats(w->ic[0])->dropped[IC_DROP_LENGTH] == 1));
    world_free(w);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster");
    TCase *t = tcase_create("cluster");
    tcase_set_timeout(t, 30);
    tcase_add_test(t, ipi_to_a_vcpu_on_another_node);
    tcase_add_test(t, ipi_with_delays_and_reordering);
    tcase_add_test(t, init_and_sipi_reach_a_remote_ap);
    tcase_add_test(t, port_access_forwarded_and_answered);
    tcase_add_test(t, eoi_reaches_the_ioapic_owner);
    tcase_add_test(t, a_lost_reply_meets_its_deadline);
    tcase_add_test(t, bad_forwarded_access_is_refused_and_counted);
    suite_add_tcase(s, t);
    return run_suite(s);
}
