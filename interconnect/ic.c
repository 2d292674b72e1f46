/* The interconnect's API over a transport (see interconnect.h and
 * transport.h): rank and size, the handlers registered per message type,
 * and the calls every transport answers the same way. */
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "clock/clock.h"
#include "interconnect/interconnect.h"
#include "interconnect/transport.h"

struct ic {
    const struct ic_transport *ops;
    void *t;
    int rank, size;
    struct {
        ic_handler fn;
        void *ctx;
    } on[256];
    _Atomic uint64_t unhandled; /* valid messages of a type nobody registered */
};

int ic_wrap(const struct ic_transport *ops, void *t, int rank, int size, struct ic **out)
{
    struct ic *ic = calloc(1, sizeof *ic);
    if (!ic) {
        ops->close(t);
        return -ENOMEM;
    }
    ic->ops = ops;
    ic->t = t;
    ic->rank = rank;
    ic->size = size;
    *out = ic;
    return 0;
}

int ic_open(const struct ic_config *c, struct ic **out, char *err, size_t errlen)
{
    void *t = NULL;
    int r = ic_fabric_open(c, &t, err, errlen);
    return r < 0 ? r : ic_wrap(&ic_fabric_transport, t, c->rank, c->size, out);
}

void ic_close(struct ic *ic)
{
    if (!ic)
        return;
    ic->ops->close(ic->t);
    free(ic);
}

void *ic_transport_of(struct ic *ic, const struct ic_transport *ops)
{
    return ic->ops == ops ? ic->t : NULL;
}

int ic_rank(const struct ic *ic) { return ic->rank; }
int ic_size(const struct ic *ic) { return ic->size; }
const char *ic_provider_name(const struct ic *ic) { return ic->ops->provider_name(ic->t); }
const char *ic_transport_name(const struct ic *ic) { return ic->ops->name; }

int ic_send(struct ic *ic, int dst, uint8_t type, uint64_t arg0, uint64_t arg1,
            const void *payload, uint32_t len)
{
    return ic->ops->send(ic->t, dst, type, arg0, arg1, payload, len);
}

int ic_poll(struct ic *ic, ic_handler fn, void *ctx, int max)
{
    return ic->ops->poll(ic->t, fn, ctx, max);
}

int ic_on(struct ic *ic, uint8_t first, uint8_t last, ic_handler fn, void *ctx)
{
    if (first > last || !fn)
        return -EINVAL;
    for (int t = first; t <= last; t++)
        if (ic->on[t].fn)
            return -EEXIST;
    for (int t = first; t <= last; t++) {
        ic->on[t].fn = fn;
        ic->on[t].ctx = ctx;
    }
    return 0;
}

static void dispatch(void *ctx, const struct ic_hdr *h, const void *payload)
{
    struct ic *ic = ctx;
    if (ic->on[h->type].fn)
        ic->on[h->type].fn(ic->on[h->type].ctx, h, payload);
    else
        atomic_fetch_add(&ic->unhandled, 1);
}

int ic_poll_handlers(struct ic *ic, int max)
{
    return ic->ops->poll(ic->t, dispatch, ic, max);
}

uint64_t ic_unhandled(const struct ic *ic)
{
    return atomic_load(&ic->unhandled);
}

int ic_tick(struct ic *ic, uint64_t now_ns) { return ic->ops->tick(ic->t, now_ns); }
int ic_dead_rank(const struct ic *ic) { return ic->ops->dead_rank(ic->t); }
uint64_t ic_dead_after_ns(const struct ic *ic) { return ic->ops->dead_after_ns(ic->t); }

uint64_t ic_dead_after_env_ns(void)
{
    const char *d = getenv("AMALGAM_DEAD_AFTER_MS");
    return d && strtoull(d, NULL, 10) >= 500 ? strtoull(d, NULL, 10) * 1000000ULL : IC_DEAD_NS;
}
int ic_fd(struct ic *ic) { return ic->ops->fd(ic->t); }
const struct ic_stats *ic_stats(const struct ic *ic) { return ic->ops->stats(ic->t); }

void ic_wait_ns(struct ic *ic, uint64_t max_ns, int also_fd)
{
    ic->ops->wait_ns(ic->t, max_ns, also_fd);
}

void ic_wait(struct ic *ic, int timeout_ms, int also_fd)
{
    uint64_t ns = (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ULL;
    /* Without a wait fd (shm) look again after 50 us. */
    ic_wait_ns(ic, ic_fd(ic) >= 0 || ns < 50000 ? ns : 50000, also_fd);
}

int ic_clock_probe(struct ic *ic, int peer)
{
    return ic->ops->clock_probe ? ic->ops->clock_probe(ic->t, peer) : -ENOTSUP;
}

int ic_clock_offset(struct ic *ic, int peer, int64_t *offset, uint64_t *rtt, uint64_t *samples)
{
    return ic->ops->clock_offset ? ic->ops->clock_offset(ic->t, peer, offset, rtt, samples)
                                 : -ENOTSUP;
}

int ic_expose(struct ic *ic, void *base, size_t len, struct ic_region *out)
{
    if (!base || !len)
        return -EINVAL;
    return ic->ops->expose ? ic->ops->expose(ic->t, base, len, out) : -ENOTSUP;
}

int ic_read(struct ic *ic, int peer, const struct ic_region *r, uint64_t offset, size_t len,
            const void **data)
{
    if (peer < 0 || peer >= ic->size || peer == ic->rank || len == 0 || len > IC_MAX_PAYLOAD)
        return -EINVAL;
    return ic->ops->read ? ic->ops->read(ic->t, peer, r, offset, len, data) : -ENOTSUP;
}

/* The one check every transport makes of a descriptor from the network. */
bool ic_region_holds(const struct ic_region *r, uint64_t offset, size_t len)
{
    return offset <= r->len && len <= r->len - offset;
}

int ic_clock_measure(struct ic *ic, int peer, int probes, uint64_t wait_ns, ic_handler fn,
                     void *ctx, const _Atomic int *cancel, int64_t *offset, uint64_t *rtt,
                     uint64_t *samples)
{
    for (int i = 0; i < probes && !(cancel && atomic_load(cancel)); i++) {
        uint64_t before = 0, n = 0, t0 = clock_now_ns();
        ic_clock_offset(ic, peer, offset, rtt, &before);
        int r = ic_clock_probe(ic, peer);
        if (r == -ENOTSUP)
            return r;
        if (r < 0)
            break;
        do {
            if (fn && ic_poll(ic, fn, ctx, 64) < 0)
                return -EPIPE;
            if (!fn)
                usleep(20);
            ic_clock_offset(ic, peer, offset, rtt, &n);
        } while (n == before && clock_now_ns() - t0 < wait_ns);
    }
    return ic_clock_offset(ic, peer, offset, rtt, samples);
}
