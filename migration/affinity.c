/* --migrate-policy affinity: see migration.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migration/migration.h"

int affinity_init(struct affinity *a, const struct affinity_cfg *cfg, int nr_vcpus, int nnodes)
{
    if (nr_vcpus < 1 || nr_vcpus > MIGRATION_MAX_VCPUS || nnodes < 1 ||
        nnodes > AFFINITY_MAX_NODES || !cfg->window_ms)
        return -EINVAL;
    memset(a, 0, sizeof *a);
    a->cfg = *cfg;
    a->nr_vcpus = nr_vcpus;
    a->nnodes = nnodes;
    for (int v = 0; v < nr_vcpus; v++)
        a->since_move[v] = cfg->dwell; /* the placement at start is not a move */
    return 0;
}

void affinity_add(struct affinity *a, int vcpu, const uint32_t *by_home)
{
    if (vcpu < 0 || vcpu >= a->nr_vcpus)
        return;
    for (int k = 0; k < a->nnodes; k++)
        a->f[vcpu][k] += by_home[k];
}

/* The gain of moving v from c to its best other node (*to), or 0 when the
 * evidence says stay. */
static uint64_t gain(const struct affinity *a, int v, int c, int *to)
{
    const uint64_t *f = a->f[v];
    uint64_t others = 0;
    int best = -1;
    for (int k = 0; k < a->nnodes; k++) {
        others += k != c ? f[k] : 0;
        if (k != c && (best < 0 || f[k] > f[best]))
            best = k;
    }
    if (best < 0 || f[best] < a->cfg.min_faults)
        return 0;
    /* what it would take at best: the learned cost of leaving c, and its
     * faults on the pages of the nodes that are neither */
    uint64_t there = (a->away[v][c] + 255) / 256 + (others - f[best]);
    if (f[best] * 100 < (uint64_t)a->cfg.ratio_pct * there || f[best] <= there)
        return 0;
    *to = best;
    return f[best] - there;
}

/* v ran on c this window: its faults on each other node's pages are what
 * being away from that node costs (averaged: half the old, half the new);
 * the cost of being away from c is not seen here and fades. */
static void learn(struct affinity *a, int v, int c)
{
    for (int n = 0; n < a->nnodes; n++)
        if (n != c)
            a->away[v][n] = (a->away[v][n] + a->f[v][n] * 256) / 2;
        else
            a->away[v][n] -= a->away[v][n] / 256;
}

int affinity_decide(struct affinity *a, const uint8_t *node_of, int *vcpu, int *to)
{
    uint64_t best_gain = 0;
    int bv = -1, bto = -1;
    for (int v = 0; v < a->nr_vcpus; v++) {
        int c = node_of[v], k = -1;
        if (c >= a->nnodes || a->since_move[v] < a->cfg.dwell)
            continue;
        uint64_t g = gain(a, v, c, &k);
        if (g > best_gain) {
            best_gain = g;
            bv = v;
            bto = k;
        }
    }
    for (int v = 0; v < a->nr_vcpus; v++) {
        if (node_of[v] < a->nnodes) /* reports from a node it left were not taken */
            learn(a, v, node_of[v]);
        memset(a->f[v], 0, sizeof a->f[v]);
        if (a->since_move[v] < UINT32_MAX)
            a->since_move[v]++;
    }
    if (bv < 0)
        return 0;
    a->since_move[bv] = 0;
    *vcpu = bv;
    *to = bto;
    return 1;
}

int affinity_parse(const char *opts, struct affinity_cfg *cfg, char *err, size_t n)
{
    *cfg = AFFINITY_DEFAULTS;
    const char *p = opts;
    while (p && *p) {
        const char *eq = strchr(p, '=');
        if (!eq) {
            snprintf(err, n, "'%s': expected key=value", p);
            return -EINVAL;
        }
        char *end;
        unsigned long long v = strtoull(eq + 1, &end, 10);
        size_t klen = (size_t)(eq - p);
        if (end == eq + 1 || (*end && *end != ',') || v > 1000000) {
            snprintf(err, n, "'%.*s': expected a number up to 1000000", (int)(end - p), p);
            return -EINVAL;
        }
        if (klen == 6 && !strncmp(p, "window", 6) && v >= 1)
            cfg->window_ms = v;
        else if (klen == 3 && !strncmp(p, "min", 3))
            cfg->min_faults = (uint32_t)v;
        else if (klen == 5 && !strncmp(p, "ratio", 5) && v >= 100)
            cfg->ratio_pct = (uint32_t)v;
        else if (klen == 5 && !strncmp(p, "dwell", 5))
            cfg->dwell = (uint32_t)v;
        else {
            snprintf(err, n, "'%.*s': expected window=MS (>= 1), min=FAULTS, ratio=PERCENT "
                     "(>= 100) or dwell=WINDOWS", (int)(end - p), p);
            return -EINVAL;
        }
        p = *end ? end + 1 : end;
    }
    return 0;
}
