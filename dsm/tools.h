/* Internal to dsm/ and cli/: the DSM's commands. */
#ifndef AMALGAM_DSM_TOOLS_H
#define AMALGAM_DSM_TOOLS_H

int dsm_check_main(int argc, char **argv);
int bench_dsm_main(int argc, char **argv);
int bench_local_main(int argc, char **argv);
/* This program's path, for benchmarks that run it. */
int dsm_bench_self(char *path, size_t len);
/* Runs `self ARGS` (stderr dropped) and copies the first stdout line that
 * contains key into line: 0, or -EIO if there was none or the run failed. */
int dsm_bench_run(const char *self, const char *args, const char *key, char *line, size_t len);
/* qsort comparator for uint64_t latencies (both commands take percentiles). */
int dsm_cmp_u64(const void *a, const void *b);

#endif
