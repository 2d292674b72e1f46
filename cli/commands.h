/* The amalgam subcommands. Each takes argv with argv[0] = its own name and
 * returns the process exit status: 0 success, 2 bad usage or unusable input
 * (flags, kernel file), 1 a runtime failure; `run` returns the guest's own
 * status when the guest reports one. */
#ifndef AMALGAM_CLI_COMMANDS_H
#define AMALGAM_CLI_COMMANDS_H

int cmd_run(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_node(int argc, char **argv);
int cmd_ctl(int argc, char **argv);

#endif
