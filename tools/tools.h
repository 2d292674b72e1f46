/* tools: amalgam's checks and benchmarks, the commands other than run and
 * node (cli/main.c dispatches to them).
 *
 * They sit above every module so that the modules need not know of them:
 * interconnect/, dsm/ and numa/ include nothing from vmm/, cli/ or here.
 * Each *_main takes its command's argv (argv[0] is the command's name),
 * reports errors itself in words a user understands, and returns the
 * process's exit status; a benchmark prints one JSON line on stdout.
 */
#ifndef AMALGAM_TOOLS_TOOLS_H
#define AMALGAM_TOOLS_TOOLS_H

#include <stddef.h>
#include <stdint.h>

#include "interconnect/interconnect.h"

/* ---- commands ---- */
int dsm_check_main(int argc, char **argv);     /* amalgam dsm-check */
int bench_dsm_main(int argc, char **argv);     /* amalgam bench dsm */
int bench_local_main(int argc, char **argv);   /* amalgam bench local */
int bench_migrate_main(int argc, char **argv); /* amalgam bench migrate */
int bench_fabric_main(int argc, char **argv);  /* amalgam bench fabric */
int fabric_check_main(int argc, char **argv);  /* amalgam fabric-check */
int bench_vmexit_main(int argc, char **argv);  /* amalgam bench vmexit */
int bench_blk_main(int argc, char **argv);     /* amalgam bench blk */
int restore_check_main(int argc, char **argv); /* amalgam restore-check */
/* `amalgam topology`: the NUMA machine a guest would see, and its ACPI
 * tables as files. argv[0] is "topology". */
int topology_main(int argc, char **argv);

/* ---- shared by the commands, and by `run --distance measured` ---- */

/* This program's path, for benchmarks that run it. */
int dsm_bench_self(char *path, size_t len);
/* Runs `self ARGS` (stderr dropped) and copies the first stdout line that
 * contains key into line: 0, or -EIO if there was none or the run failed. */
int dsm_bench_run(const char *self, const char *args, const char *key, char *line, size_t len);
/* qsort comparator for uint64_t latencies (commands take percentiles). */
int dsm_cmp_u64(const void *a, const void *b);

/* One rank's part of `bench fabric`. */
int ic_bench_ranked(const struct ic_config *c, long iters, uint32_t size);
/* p50 one-way time (ns) of `amalgam bench fabric --size size` between two
 * local ranks over fabric (NULL: the default), run as a child that is ended
 * if it has not finished in 30 s. */
int ic_bench_p50_ns(const char *fabric, uint32_t size, double *ns, char *err, size_t errlen);
/* Round-trip time of a small message between two local ranks over the
 * default local fabric: runs `amalgam bench fabric` (which starts its own
 * two ranks) and takes twice its median one-way latency. */
int ic_measure_local_rtt_ns(double *ns, char *err, size_t errlen);

/* --distance measured: the SLIT distance for remote memory, 10 x remote /
 * local, measuring whichever of *local_ns (a cache-missing load here) and
 * *remote_ns (the fabric round trip between two local ranks, as `amalgam
 * bench fabric` times it) is 0. Returns the distance, or a negative errno
 * with one line in err. Takes a second or two. */
int numa_measured_distance(double *local_ns, double *remote_ns, char *err, size_t errlen);

#endif
