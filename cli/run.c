/* `amalgam run`: one node, the whole guest on this host. */
#include <errno.h>
#include <stdio.h>

#include "cli/commands.h"
#include "cli/run_args.h"

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
