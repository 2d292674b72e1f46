/* Internal to interconnect/ and cli/: the interconnect's commands. */
#ifndef AMALGAM_INTERCONNECT_TOOLS_H
#define AMALGAM_INTERCONNECT_TOOLS_H

#include <stddef.h>
#include <stdint.h>

#include "interconnect/interconnect.h"

int bench_fabric_main(int argc, char **argv);
int fabric_check_main(int argc, char **argv);
/* Runs `amalgam [cmd] argv... --rank i --ranks n --bootstrap ... --secret-file ...`
 * for i in 0..n-1 on this host with a fresh secret; 0 if every rank exits 0. */
int ic_spawn_local(const char *cmd, int argc, char **argv, int nranks,
                   const struct ic_config *parent);
int ic_bench_ranked(const struct ic_config *c, long iters, uint32_t size);
/* p50 one-way time (ns) of `amalgam bench fabric --size size` between two
 * local ranks over fabric (NULL: the default), run as a child that is ended
 * if it has not finished in 30 s. */
int ic_bench_p50_ns(const char *fabric, uint32_t size, double *ns, char *err, size_t errlen);
/* Round-trip time of a small message between two local ranks over the
 * default local fabric: runs `amalgam bench fabric` (which starts its own
 * two ranks) and takes twice its median one-way latency. */
int ic_measure_local_rtt_ns(double *ns, char *err, size_t errlen);

#endif
