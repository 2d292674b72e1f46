/* Internal to numa/ and cli/: the NUMA module's command. */
#ifndef AMALGAM_NUMA_TOOLS_H
#define AMALGAM_NUMA_TOOLS_H

/* `amalgam topology`: the NUMA machine a guest would see, and its ACPI
 * tables as files. argv[0] is "topology". */
int topology_main(int argc, char **argv);

#endif
