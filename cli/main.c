/* amalgam: command-line entry. Dispatches to the subcommands; every
 * subcommand returns an exit status and reports its own errors once. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "tools/tools.h"

static const struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"run", cmd_run, "start a guest (with --nodes K: over K node processes here)"},
    {"node", cmd_node, "one node of a machine, under mpirun, srun or ssh"},
    {"ctl", cmd_ctl, "talk to a running machine's --monitor socket (QMP), 'ctl ... top'"},
    {"bench", cmd_bench, "benchmarks: vmexit, fabric, dsm (one JSON line each)"},
    {"fabric-check", fabric_check_main, "check a cluster's interconnect end to end"},
    {"topology", topology_main, "the NUMA machine and ACPI tables a guest would see"},
    {"restore-check", restore_check_main, "pause a guest, save it, restore it into a new VM"},
    {"dsm-check", dsm_check_main, "check the DSM end to end (userfaultfd + fabric, host threads)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: amalgam COMMAND [ARGS...]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-13s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n'amalgam COMMAND --help' describes each command's flags.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "amalgam: unknown command '%s' (try 'amalgam --help')\n", argv[1]);
    return 2;
}
