/* The vCPU routing table (see migration.h). */
#include <errno.h>
#include <string.h>

#include "migration/migration.h"

int routes_init(struct vcpu_routes *r, int nr_vcpus, int nnodes, const uint8_t *placement)
{
    if (nr_vcpus < 1 || nr_vcpus > MIGRATION_MAX_VCPUS || nnodes < 1 || nnodes > 256)
        return -EINVAL;
    for (int i = 0; i < nr_vcpus; i++)
        if (placement[i] >= nnodes)
            return -EINVAL;
    memset(r, 0, sizeof *r);
    r->nr_vcpus = nr_vcpus;
    r->nnodes = nnodes;
    memcpy(r->node, placement, (size_t)nr_vcpus);
    memcpy(r->start, placement, (size_t)nr_vcpus);
    return 0;
}

static bool valid(const struct vcpu_routes *r, int vcpu, int node)
{
    return vcpu >= 0 && vcpu < r->nr_vcpus && node >= 0 && node < r->nnodes;
}

static void record(struct vcpu_routes *r, int vcpu, int node)
{
    r->epoch++;
    r->node[vcpu] = (uint8_t)node;
    r->moved_at[vcpu] = r->epoch;
    uint32_t k = r->nhist[vcpu]++ % ROUTES_HISTORY;
    r->hist[vcpu][k].epoch = r->epoch;
    r->hist[vcpu][k].node = (uint8_t)node;
}

int64_t routes_move(struct vcpu_routes *r, int vcpu, int node)
{
    if (!valid(r, vcpu, node))
        return -EINVAL;
    record(r, vcpu, node);
    return (int64_t)r->epoch;
}

int routes_apply(struct vcpu_routes *r, uint64_t epoch, int vcpu, int node)
{
    if (!valid(r, vcpu, node) || epoch == 0)
        return -EINVAL;
    if (epoch <= r->epoch)
        return 0; /* old news */
    if (epoch > r->epoch + 1)
        return -EAGAIN; /* a move before it has not arrived yet */
    record(r, vcpu, node);
    return 1;
}

int routes_node_at(const struct vcpu_routes *r, int vcpu, uint64_t epoch)
{
    if (vcpu < 0 || vcpu >= r->nr_vcpus)
        return -EINVAL;
    if (epoch > r->epoch)
        return -EAGAIN;
    if (epoch >= r->moved_at[vcpu])
        return r->node[vcpu];
    uint32_t n = r->nhist[vcpu];
    /* newest first: the last move at or before epoch */
    for (uint32_t i = 0; i < n && i < ROUTES_HISTORY; i++) {
        uint32_t k = (n - 1 - i) % ROUTES_HISTORY;
        if (r->hist[vcpu][k].epoch <= epoch)
            return r->hist[vcpu][k].node;
    }
    return n <= ROUTES_HISTORY ? r->start[vcpu] : -ESTALE;
}

int routes_node_of(const struct vcpu_routes *r, int vcpu)
{
    return vcpu >= 0 && vcpu < r->nr_vcpus ? r->node[vcpu] : -EINVAL;
}
