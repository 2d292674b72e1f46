/* Internal to numa/ and cli/: the NUMA module's command. */
#ifndef AMALGAM_NUMA_TOOLS_H
#define AMALGAM_NUMA_TOOLS_H

/* `amalgam topology`: the NUMA machine a guest would see, and its ACPI
 * tables as files. argv[0] is "topology". */
int topology_main(int argc, char **argv);

/* --distance measured: the SLIT distance for remote memory, 10 x remote /
 * local, measuring whichever of *local_ns (a cache-missing load here) and
 * *remote_ns (the fabric round trip between two local ranks, as `amalgam
 * bench fabric` times it) is 0. Returns the distance, or a negative errno
 * with one line in err. Takes a second or two. */
int numa_measured_distance(double *local_ns, double *remote_ns, char *err, size_t errlen);

#endif
