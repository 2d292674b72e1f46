/* --migrate-plan's file (see migration.h). Pure. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migration/migration.h"

/* One line (comment cut off): 1 a step, 0 blank, -EINVAL. */
static int parse_line(const char *l, struct migration_step *st)
{
    char extra[2];
    unsigned long long t;
    int v, node;
    while (*l == ' ' || *l == '\t')
        l++;
    if (!*l || *l == '\n' || *l == '#')
        return 0;
    int k = sscanf(l, "%llu %d %d %1s", &t, &v, &node, extra);
    if ((k != 3 && !(k == 4 && extra[0] == '#')) || v < 0 || v >= MIGRATION_MAX_VCPUS ||
        node < 0 || node > 255 || t > 1000ULL * 3600 * 24 * 365)
        return -EINVAL;
    *st = (struct migration_step){t, v, node};
    return 1;
}

int migration_plan_parse(const char *text, struct migration_step **steps, size_t *n, char *err,
                         size_t errlen)
{
    size_t cap = 64, have = 0;
    struct migration_step *s = malloc(cap * sizeof *s);
    if (!s)
        return -ENOMEM;
    int line = 0;
    for (const char *p = text; *p; line++) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char buf[256];
        struct migration_step st;
        int r = len < sizeof buf ? 0 : -EINVAL;
        if (!r) {
            memcpy(buf, p, len);
            buf[len] = 0;
            r = parse_line(buf, &st);
        }
        if (r > 0 && have && st.t_ms < s[have - 1].t_ms)
            r = -EINVAL;
        if (r > 0 && have == MIGRATION_PLAN_MAX)
            r = -EINVAL;
        if (r < 0) {
            snprintf(err, errlen, "line %d: expected TIME_MS VCPU NODE, times not going back "
                     "(at most %d lines)", line + 1, MIGRATION_PLAN_MAX);
            free(s);
            return -EINVAL;
        }
        if (r > 0) {
            if (have == cap) {
                struct migration_step *q = realloc(s, 2 * cap * sizeof *q);
                if (!q) {
                    free(s);
                    return -ENOMEM;
                }
                s = q;
                cap *= 2;
            }
            s[have++] = st;
        }
        p = nl ? nl + 1 : p + len;
    }
    *steps = s;
    *n = have;
    return 0;
}
