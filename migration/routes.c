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
    return 0;
}

static bool valid(const struct vcpu_routes *r, int vcpu, int node)
{
    return vcpu >= 0 && vcpu < r->nr_vcpus && node >= 0 && node < r->nnodes;
}

int64_t routes_move(struct vcpu_routes *r, int vcpu, int node)
{
    if (!valid(r, vcpu, node))
        return -EINVAL;
    r->epoch++;
    r->node[vcpu] = (uint8_t)node;
    r->moved_at[vcpu] = r->epoch;
    return (int64_t)r->epoch;
}

int routes_apply(struct vcpu_routes *r, uint64_t epoch, int vcpu, int node)
{
    if (!valid(r, vcpu, node) || epoch == 0)
        return -EINVAL;
    /* Epochs order moves across the whole machine: one of this vCPU that
     * is not newer than the one the table has is old news. */
    if (epoch <= r->moved_at[vcpu])
        return 0;
    r->node[vcpu] = (uint8_t)node;
    r->moved_at[vcpu] = epoch;
    if (epoch > r->epoch)
        r->epoch = epoch;
    return 1;
}

int routes_node_of(const struct vcpu_routes *r, int vcpu)
{
    return vcpu >= 0 && vcpu < r->nr_vcpus ? r->node[vcpu] : -EINVAL;
}
