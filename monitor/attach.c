/* The monitor on a running machine: its ops are the machine's own
 * operations (vmm.h), and it lives on node 0's event loop. */
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>

#include "monitor/monitor.h"
#include "vmm/event_loop.h"

static bool op_running(void *ctx)
{
    return vm_running(ctx);
}

static int op_stop(void *ctx, char *err, size_t n)
{
    return vm_pause_all(ctx, err, n);
}

static int op_cont(void *ctx, char *err, size_t n)
{
    return vm_resume_all(ctx, err, n);
}

static int op_powerdown(void *ctx, char *err, size_t n)
{
    return vm_powerdown(ctx, err, n);
}

static void op_quit(void *ctx)
{
    vm_quit(ctx);
}

static int op_query(void *ctx, unsigned top, struct vm_status *st, char *err, size_t n)
{
    return vm_query(ctx, top, st, err, n);
}

static int op_migrate(void *ctx, int vcpu, int node, struct vm_migration_result *res, char *err,
                      size_t n)
{
    return vm_migrate_vcpu(ctx, vcpu, node, res, err, n);
}

static void on_monitor(void *ctx, int fd, uint32_t events)
{
    (void)fd, (void)events;
    monitor_dispatch(ctx);
}

int monitor_attach_hook(void *ctx, struct vm *vm, struct event_loop *loop, char *err, size_t n)
{
    struct monitor_attach *a = ctx;
    struct monitor_ops ops = {vm,      op_running, op_stop,  op_cont,
                              op_powerdown, op_quit, op_query, op_migrate};
    int r = monitor_open(a->path, &ops, &a->m, err, n);
    if (r < 0)
        return r;
    a->vm = vm;
    r = event_loop_add(loop, monitor_fd(a->m), EPOLLIN, on_monitor, a->m);
    if (r < 0) {
        snprintf(err, n, "cannot watch the monitor socket: %s", strerror(-r));
        monitor_close(a->m);
        a->m = NULL;
    }
    return r;
}

void monitor_event_hook(void *ctx, const struct vm_event *e)
{
    struct monitor_attach *a = ctx;
    if (!a->m)
        return;
    if (e->type == VM_EVENT_SHUTDOWN)
        monitor_event(a->m, "SHUTDOWN",
                      json_pack("{s:b,s:s}", "guest", e->guest, "reason", e->reason));
    else if (e->type == VM_EVENT_NODE_LOST)
        monitor_event(a->m, "NODE_LOST",
                      json_pack("{s:i,s:s}", "rank", e->rank, "reason", e->reason));
}

void monitor_detach_hook(void *ctx)
{
    struct monitor_attach *a = ctx;
    monitor_close(a->m);
    a->m = NULL;
}
