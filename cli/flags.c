/* Flag tables and the machine-shape value parsers (see flags.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/flags.h"
#include "numa/numa.h"
#include "vmm/vmm.h"

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -EINVAL;
    *out = v;
    return 0;
}

/* A count flag such as --nodes: a whole number from 1 to max. */
static int parse_count(const char *flag, const char *v, int max, int *out, char *err,
                       size_t errlen)
{
    long x;
    if (parse_int(v, 1, max, &x) < 0) {
        snprintf(err, errlen, "%s '%s': expected a number from 1 to %d", flag, v, max);
        return -EINVAL;
    }
    *out = (int)x;
    return 0;
}

int flag_parse_nodes(const char *v, int *out, char *err, size_t errlen)
{
    return parse_count("--nodes", v, NUMA_MAX_NODES, out, err, errlen);
}

int flag_parse_vcpus(const char *v, int *out, char *err, size_t errlen)
{
    return parse_count("--vcpus", v, VMM_MAX_VCPUS, out, err, errlen);
}

int flag_parse_mem(const char *v, uint64_t *out, char *err, size_t errlen)
{
    uint64_t x;
    if (vmm_parse_size(v, &x) < 0) {
        snprintf(err, errlen, "--mem '%s': expected a size such as 256M or 2G", v);
        return -EINVAL;
    }
    if (x < VMM_MIN_MEM) {
        snprintf(err, errlen, "--mem %lluM is too little: amalgam needs at least %lluM",
                 (unsigned long long)(x >> 20), (unsigned long long)(VMM_MIN_MEM >> 20));
        return -EINVAL;
    }
    *out = x;
    return 0;
}

static const struct flag *find_flag(const struct flag *tab, size_t n, const char *arg,
                                    const char **inline_val)
{
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    for (size_t i = 0; i < n; i++) {
        if (strlen(tab[i].name) == len && !strncmp(arg, tab[i].name, len)) {
            *inline_val = eq ? eq + 1 : NULL;
            return &tab[i];
        }
    }
    return NULL;
}

int flags_parse(const struct flag *tab, size_t n, int argc, char **argv, void *ctx,
                const char *cmd, char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *val = NULL;
        const struct flag *f = find_flag(tab, n, argv[i], &val);
        if (!f) {
            snprintf(err, errlen, "unknown flag '%s' (see 'amalgam %s --help')", argv[i], cmd);
            return -EINVAL;
        }
        if (f->takes_value && !val) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "%s needs a value", f->name);
                return -EINVAL;
            }
            val = argv[++i];
        } else if (!f->takes_value && val) {
            snprintf(err, errlen, "%s takes no value", f->name);
            return -EINVAL;
        }
        int r = f->apply(ctx, val, err, errlen);
        if (r < 0)
            return r;
    }
    return 0;
}
