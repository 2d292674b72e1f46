/* `amalgam run`: one node, the whole guest on this host. */
#include <errno.h>
#include <stdio.h>

#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "monitor/monitor.h"
#include "cli/run_args.h"
#include "tools/tools.h"
#include "vmm/cluster.h"

/* Errors in what the user gave us (flags, kernel file) exit 2; the VMM or
 * host failing exits 1. */
static int status_for(int err)
{
    switch (-err) {
    case EINVAL: case ENOENT: case EACCES: case ENOEXEC: case EISDIR: case ENOMEM:
        return 2;
    default:
        return 1;
    }
}

static bool distance_measured(const struct run_args *a)
{
    return a->vm.distance && !strcmp(a->vm.distance, "measured");
}

/* --distance measured: the local nodes all get the one distance measured
 * here, as a number. */
static int resolve_measured(struct run_args *a, char *buf, size_t len)
{
    double local_ns = 0, remote_ns = 0;
    char err[256] = "";
    int d = numa_measured_distance(&local_ns, &remote_ns, err, sizeof err);
    if (d < 0) {
        fprintf(stderr, "amalgam run: --distance measured: %s\n", err[0] ? err : strerror(-d));
        return d;
    }
    if (a->vm.verbose)
        fprintf(stderr, "amalgam: local memory %.0f ns, fabric round trip %.0f ns: "
                "SLIT distance %d\n", local_ns, remote_ns, d);
    snprintf(buf, len, "%d", d);
    a->vm.distance = buf;
    return 0;
}

/* --monitor: node 0 listens once the machine runs (monitor.h). */
static void use_monitor(struct run_args *a, struct monitor_attach *ma)
{
    if (!a->monitor)
        return;
    *ma = (struct monitor_attach){.path = a->monitor};
    a->vm.hooks = (struct vm_hooks){ma, monitor_attach_hook, monitor_event_hook,
                                    monitor_detach_hook};
}

/* A live monitor at the path is a user error, found before anything starts. */
static int monitor_free(const struct run_args *a, const char *cmd)
{
    if (a->monitor && monitor_path_live(a->monitor)) {
        fprintf(stderr, "amalgam %s: --monitor %s: another monitor is live there\n", cmd,
                a->monitor);
        return -EADDRINUSE;
    }
    return 0;
}

/* --nodes K: K `amalgam node` processes on this host, wired through the
 * interconnect exactly as a launcher would wire them; node 0 has the
 * console and its exit status is ours. */
static int run_cluster(int argc, char **argv, struct run_args *a)
{
    /* Preflight first, so that a user error is not preceded by a measurement. */
    struct vm_config pre = a->vm;
    char err[512] = "", dist[16];
    if (distance_measured(a))
        pre.distance = NULL;
    int r = vm_preflight(&pre, a->nodes, err, sizeof err);
    if (r < 0) {
        fprintf(stderr, "amalgam run: %s\n", err[0] ? err : strerror(-r));
        return status_for(r);
    }
    if (distance_measured(a) && resolve_measured(a, dist, sizeof dist) < 0)
        return 1;
    char **args = calloc((size_t)argc + 2, sizeof *args);
    int n = 0;
    if (!args)
        return 1;
    /* The nodes get --distance as resolved here, so that all build the
     * same SLIT. */
    for (int i = 1; i < argc; i++) {
        bool pair = !strcmp(argv[i], "--nodes") || !strcmp(argv[i], "--fabric") ||
                    !strcmp(argv[i], "--distance");
        if (pair)
            i++;
        else if (strncmp(argv[i], "--nodes=", 8) && strncmp(argv[i], "--fabric=", 9) &&
                 strncmp(argv[i], "--distance=", 11))
            args[n++] = argv[i];
    }
    if (a->vm.distance) {
        args[n++] = "--distance";
        args[n++] = (char *)a->vm.distance;
    }
    struct ic_config c = {.provider = IC_PROV_SHM, .pin_local = a->pin};
    if (a->fabric)
        c.provider = !strcmp(a->fabric, "tcp") ? IC_PROV_TCP
                     : !strcmp(a->fabric, "verbs") ? IC_PROV_VERBS
                     : !strcmp(a->fabric, "auto") ? IC_PROV_AUTO : IC_PROV_SHM;
    r = ic_spawn_local("node", n, args, a->nodes, &c);
    free(args);
    return r;
}

int cmd_run(int argc, char **argv)
{
    struct run_args a;
    char err[512] = "";
    if (run_parse_args(argc, argv, &a, err, sizeof err) < 0) {
        fprintf(stderr, "amalgam run: %s\n", err);
        return 2;
    }
    if (a.help) {
        fputs(run_usage, stdout);
        return 0;
    }
    if (monitor_free(&a, "run") < 0)
        return 2;
    if (a.nodes > 1)
        return run_cluster(argc, argv, &a);
    struct monitor_attach ma;
    use_monitor(&a, &ma);
    if (distance_measured(&a))
        a.vm.distance = NULL; /* one node: no distances to measure */
    struct vm *vm;
    int r = vm_create(&a.vm, &vm, err, sizeof err);
    if (r < 0) {
        fprintf(stderr, "amalgam run: %s\n", err[0] ? err : "cannot create the VM");
        return status_for(r);
    }
    int status = vm_run(vm);
    if (vm_exit_reason(vm) == VM_EXIT_ERROR)
        fprintf(stderr, "amalgam run: %s\n", vm_error(vm));
    vm_destroy(vm);
    return status;
}

/* `amalgam node`: one node of a multi-node machine, started by `amalgam run
 * --nodes`, mpirun, srun or ssh. Node flags (--rank, --ranks, --bootstrap,
 * --secret-file, --fabric) plus the flags of `amalgam run`. */
int cmd_node(int argc, char **argv)
{
    struct ic_config c;
    struct run_args a;
    char err[512] = "";
    if (ic_parse_node_flags(&argc, argv, &c, err, sizeof err) < 0 ||
        cluster_register_types(&c.types) < 0 || run_parse_args(argc, argv, &a, err, sizeof err) < 0) {
        fprintf(stderr, "amalgam node: %s\n", err);
        return 2;
    }
    if (a.help) {
        fputs(run_usage, stdout);
        return 0;
    }
    if (distance_measured(&a)) {
        /* Nodes measuring on their own could each build a different SLIT. */
        fprintf(stderr, "amalgam node: --distance measured needs one place to measure: give "
                "the number 'amalgam topology --nodes 2 --distance measured' prints\n");
        return 2;
    }
    struct monitor_attach ma;
    if (c.rank == 0) {
        if (monitor_free(&a, "node") < 0)
            return 2;
        use_monitor(&a, &ma);
    }
    struct ic *ic;
    c.rma = a.vm.dsm_pull;
    if (ic_open(&c, &ic, err, sizeof err) < 0) {
        fprintf(stderr, "amalgam node %d: %s\n", c.rank, err);
        return 1;
    }
    a.vm.ic = ic;
    if (c.rank != 0)
        a.vm.console_in = -1; /* the console is node 0's */
    struct vm *vm;
    int r = vm_create(&a.vm, &vm, err, sizeof err), status;
    if (r < 0) {
        fprintf(stderr, "amalgam node %d: %s\n", c.rank, err[0] ? err : "cannot create the VM");
        status = status_for(r);
    } else {
        status = vm_run(vm);
        if (vm_exit_reason(vm) == VM_EXIT_ERROR && vm_error(vm)[0])
            fprintf(stderr, "amalgam node %d: %s\n", c.rank, vm_error(vm));
        vm_destroy(vm);
    }
    ic_close(ic);
    return status;
}
