/* Internal to interconnect/: what a transport (a backend under the
 * interconnect's API) provides. fabric.c is libfabric; loopback.c moves
 * messages between nodes of one process, for tests. ic.c holds the part
 * every transport shares (rank, size, the handlers registered per message
 * type) and calls the transport through this table. */
#ifndef AMALGAM_INTERCONNECT_TRANSPORT_H
#define AMALGAM_INTERCONNECT_TRANSPORT_H

#include "interconnect/interconnect.h"

struct ic_transport {
    const char *name;
    int (*send)(void *t, int dst, uint8_t type, uint64_t arg0, uint64_t arg1,
                const void *payload, uint32_t len);
    /* Hands up to max valid messages to fn; their count or -errno. */
    int (*poll)(void *t, ic_handler fn, void *ctx, int max);
    int (*tick)(void *t, uint64_t now_ns);
    int (*dead_rank)(const void *t);
    uint64_t (*dead_after_ns)(const void *t);
    int (*fd)(void *t);
    void (*wait_ns)(void *t, uint64_t max_ns, int also_fd);
    const struct ic_stats *(*stats)(const void *t);
    const char *(*provider_name)(const void *t);
    /* Optional (NULL: -ENOTSUP): clock probes between hosts. */
    int (*clock_probe)(void *t, int peer);
    int (*clock_offset)(void *t, int peer, int64_t *offset, uint64_t *rtt, uint64_t *samples);
    void (*close)(void *t);
    /* Optional (NULL: -ENOTSUP): one-sided reads (ic_expose, ic_read). */
    int (*expose)(void *t, void *base, size_t len, struct ic_region *out);
    int (*read)(void *t, int peer, const struct ic_region *r, uint64_t offset, size_t len,
                const void **data);
};

/* Wraps an opened transport in a struct ic: 0 or -ENOMEM (then the
 * transport is closed). */
int ic_wrap(const struct ic_transport *ops, void *t, int rank, int size, struct ic **out);

/* The transport behind ic, if it is of this kind; else NULL. */
void *ic_transport_of(struct ic *ic, const struct ic_transport *ops);

/* offset and len lie inside r (which came from the network). */
bool ic_region_holds(const struct ic_region *r, uint64_t offset, size_t len);

/* fabric.c */
int ic_fabric_open(const struct ic_config *c, void **out, char *err, size_t errlen);
extern const struct ic_transport ic_fabric_transport;

#endif
