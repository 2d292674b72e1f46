/* `amalgam run`: placeholder until the VMM lands. */
#include <stdio.h>

#include "cli/commands.h"

int cmd_run(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "amalgam run: not built yet\n");
    return 1;
}
