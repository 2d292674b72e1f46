/* Flag parsing shared by the subcommands: a table of flags, each applied to
 * the command's own struct, accepting "--flag value" and "--flag=value";
 * plus the value parsers of the flags that shape the machine (--nodes,
 * --vcpus, --mem), so that `run` and `topology` read them identically.
 * Pure: no I/O; every error is one line for the user in err. */
#ifndef AMALGAM_CLI_FLAGS_H
#define AMALGAM_CLI_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct flag {
    const char *name;
    bool takes_value;
    int (*apply)(void *ctx, const char *val, char *err, size_t errlen);
};

/* Applies argv[1..argc) to ctx through tab; cmd names the command in the
 * "unknown flag" message. Returns 0 or the first -EINVAL. */
int flags_parse(const struct flag *tab, size_t n, int argc, char **argv, void *ctx,
                const char *cmd, char *err, size_t errlen);

int flag_parse_nodes(const char *v, int *out, char *err, size_t errlen);
int flag_parse_vcpus(const char *v, int *out, char *err, size_t errlen);
/* A size such as 256M or 2G, at least VMM_MIN_MEM. */
int flag_parse_mem(const char *v, uint64_t *out, char *err, size_t errlen);

#endif
