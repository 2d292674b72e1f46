/* `amalgam restore-check --after MS RUN-FLAGS...`: runs a guest as `amalgam
 * run` would, pauses it after MS milliseconds, saves its whole state (guest
 * memory, every vCPU's KVM state and LAPIC, the devices), ends that VM,
 * restores the state into a new VM and runs that to the end. The guest
 * must not notice: a test guest's PASS line then comes from the second VM.
 * Exit status: the guest's, as `amalgam run`; 1 if the guest ended before
 * the pause (nothing was checked) or saving or restoring failed. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/run_args.h"
#include "clock/clock.h"
#include "tools/tools.h"
#include "vmm/vmm.h"

struct runner {
    struct vm *vm;
    int status;
    _Atomic bool done;
};

static void *run_thread(void *p)
{
    struct runner *r = p;
    r->status = vm_run(r->vm);
    atomic_store(&r->done, true);
    return NULL;
}

static int make_vm(const struct vm_config *cfg, struct vm **vm)
{
    char err[512] = "";
    int r = vm_create(cfg, vm, err, sizeof err);
    if (r < 0)
        fprintf(stderr, "amalgam restore-check: %s\n", err);
    return r;
}

int restore_check_main(int argc, char **argv)
{
    long after_ms = -1;
    char *rest[128];
    int n = 0;
    rest[n++] = "run";
    for (int i = 1; i < argc && n < 127; i++) {
        if (!strcmp(argv[i], "--after") && i + 1 < argc)
            after_ms = atol(argv[++i]);
        else
            rest[n++] = argv[i];
    }
    struct run_args a;
    char err[512] = "";
    if (after_ms < 0 || run_parse_args(n, rest, &a, err, sizeof err) < 0 || a.help ||
        a.nodes != 1) {
        fprintf(stderr, "usage: amalgam restore-check --after MS [amalgam run flags, one node]"
                "%s%s\n", err[0] ? ": " : "", err);
        return 2;
    }
    struct runner first = {0};
    if (make_vm(&a.vm, &first.vm) < 0)
        return 2;
    pthread_t t;
    if (pthread_create(&t, NULL, run_thread, &first)) {
        vm_destroy(first.vm);
        return 1;
    }
    uint64_t t0 = clock_now_ns();
    while (!atomic_load(&first.done) && clock_now_ns() - t0 < (uint64_t)after_ms * 1000000ULL)
        usleep(1000);
    struct vm_checkpoint *cp = NULL;
    int r = atomic_load(&first.done) ? -ECANCELED : vm_pause(first.vm, 30000000000ULL);
    uint64_t paused_ns = clock_now_ns() - t0;
    if (!r)
        r = vm_checkpoint_save(first.vm, &cp, err, sizeof err);
    vm_shutdown(first.vm);
    pthread_join(t, NULL);
    vm_destroy(first.vm);
    if (r == -ECANCELED) {
        fprintf(stderr, "amalgam restore-check: the guest ended (status %d) before %ld ms: "
                "nothing was saved; give a longer test or a shorter --after\n", first.status,
                after_ms);
        return 1;
    }
    if (r < 0) {
        fprintf(stderr, "amalgam restore-check: %s\n", err[0] ? err : strerror(-r));
        return 1;
    }
    struct vm *second;
    if (make_vm(&a.vm, &second) < 0) {
        vm_checkpoint_free(cp);
        return 1;
    }
    r = vm_checkpoint_restore(second, cp, err, sizeof err);
    vm_checkpoint_free(cp);
    if (r < 0) {
        fprintf(stderr, "amalgam restore-check: %s\n", err);
        vm_destroy(second);
        return 1;
    }
    fprintf(stderr, "amalgam restore-check: paused after %.0f ms, saved, restored into a new "
            "VM; running it\n", paused_ns / 1e6);
    int status = vm_run(second);
    if (vm_exit_reason(second) == VM_EXIT_ERROR)
        fprintf(stderr, "amalgam restore-check: %s\n", vm_error(second));
    vm_destroy(second);
    return status;
}
