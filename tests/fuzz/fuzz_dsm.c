/* libFuzzer target: the DSM engine fed arbitrary messages from arbitrary
 * peers, interleaved with local faults, on a node with a tiny cache (so that
 * eviction and write-back paths are reachable). Whatever arrives, the engine
 * must not crash, must keep its copy count within bounds, and must never
 * leave a page writable and readable at once on this node's own view of it
 * (the host's mapping follows ops->map). Each input is its own node. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dsm/dsm.h"

#define NODES 4
#define PAGES 8
#define SELF 1

struct fz {
    enum dsm_prot prot[PAGES];
    uint8_t data[PAGES][DSM_PAGE_SIZE];
    uint64_t sent;
};

static int home_of(void *h, uint64_t page)
{
    (void)h;
    return (int)(page % NODES);
}

static int f_send(void *c, int dst, const struct dsm_msg *m, const void *payload)
{
    struct fz *f = c;
    if (dst < 0 || dst >= NODES || m->page >= PAGES)
        __builtin_trap(); /* the engine only ever addresses real nodes and pages */
    (void)payload;
    f->sent++;
    return 0;
}

static int f_map(void *c, uint64_t page, enum dsm_prot prot)
{
    struct fz *f = c;
    if (page >= PAGES)
        __builtin_trap();
    f->prot[page] = prot;
    return 0;
}

static const uint8_t *f_read(void *c, uint64_t page, uint8_t *buf)
{
    struct fz *f = c;
    if (page >= PAGES || !buf)
        __builtin_trap();
    return f->data[page];
}

static void f_write(void *c, uint64_t page, const uint8_t *data)
{
    struct fz *f = c;
    if (page >= PAGES || !data)
        __builtin_trap();
    memcpy(f->data[page], data, sizeof f->data[page]);
}

static void f_wake(void *c, uint64_t page)
{
    (void)c;
    if (page >= PAGES)
        __builtin_trap();
}

static uint64_t f_now(void *c)
{
    (void)c;
    return 0;
}

static void f_drop(void *c, uint64_t page)
{
    struct fz *f = c;
    if (page >= PAGES || home_of(NULL, page) == SELF || f->prot[page] != DSM_PROT_NONE)
        __builtin_trap(); /* never a home page, never a mapped one */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct fz f;
    static uint8_t payload[DSM_PAGE_SIZE];
    memset(&f, 0, sizeof f);
    struct dsm_ops ops = {&f, f_send, f_map, f_read, f_write, f_wake, f_now, f_drop};
    struct dsm_node n;
    if (dsm_node_init(&n, SELF, NODES, PAGES, home_of, NULL, &ops) < 0)
        return 0;
    dsm_set_cache_limit(&n, 1);
    for (int p = 0; p < PAGES; p++)
        f.prot[p] = home_of(NULL, (uint64_t)p) == SELF ? DSM_PROT_WRITE : DSM_PROT_NONE;
    /* 4 bytes a step: op, from, type/page, mode/flags. */
    for (size_t i = 0; i + 4 <= size; i += 4) {
        const uint8_t *s = data + i;
        if (s[0] & 1) {
            dsm_fault(&n, s[2] % (PAGES + 1), s[3] & 1); /* PAGES: out of range */
        } else {
            struct dsm_msg m = {.type = (uint8_t)(DSM_MSG_FIRST + s[2] % 12),
                                .mode = s[3] % 4,
                                .src = (uint16_t)(s[1] % (NODES + 1)),
                                .page = (uint64_t)(s[2] >> 4) % (PAGES + 1)};
            int from = (s[3] & 0x80) ? m.src : s[1] % NODES;
            dsm_receive(&n, from, &m, (s[3] & 0x40) ? payload : NULL);
        }
        if (n.cached > PAGES)
            __builtin_trap();
    }
    dsm_node_free(&n);
    return 0;
}
