/* Internal to dsm/ and cli/: the DSM's commands. */
#ifndef AMALGAM_DSM_TOOLS_H
#define AMALGAM_DSM_TOOLS_H

int dsm_check_main(int argc, char **argv);
int bench_dsm_main(int argc, char **argv);
/* qsort comparator for uint64_t latencies (both commands take percentiles). */
int dsm_cmp_u64(const void *a, const void *b);

#endif
