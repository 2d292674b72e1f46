/* Flags of `amalgam run`, parsed into a plain struct (pure: no I/O, so the
 * parser is unit-tested directly). */
#ifndef AMALGAM_CLI_RUN_ARGS_H
#define AMALGAM_CLI_RUN_ARGS_H

#include <stdbool.h>
#include <stddef.h>

#include "vmm/vmm.h"

struct run_args {
    struct vm_config vm;
    int nodes;          /* node processes to start on this host */
    const char *fabric; /* their interconnect provider, NULL: auto */
    bool pin;           /* give each local node process its own CPUs */
    const char *monitor; /* QMP socket path (node 0), NULL: none */
    bool help;
};

/* argv[0] is "run". Returns 0, or -EINVAL with one line for the user in err. */
int run_parse_args(int argc, char **argv, struct run_args *a, char *err, size_t errlen);
extern const char run_usage[];

#endif
