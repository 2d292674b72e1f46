/* The pure parts of the interconnect: header validation, the type
 * registry, launcher environment and flag parsing, the join MAC. */
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "interconnect/interconnect.h"

void ic_types_init(struct ic_types *t)
{
    memset(t, 0, sizeof *t);
    const struct {
        uint8_t type;
        uint32_t lo, hi;
    } builtin[] = {
        {IC_T_HEARTBEAT, 0, 0},
        {IC_T_PING, 0, IC_MAX_PAYLOAD},
        {IC_T_PONG, 0, IC_MAX_PAYLOAD},
        {IC_T_CHECK, IC_MAX_PAYLOAD, IC_MAX_PAYLOAD},
        {IC_T_BYE, 0, 0},
        {IC_T_CLOCK_REQ, 0, 0},
        {IC_T_CLOCK_REP, 0, 0},
    };
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++) {
        t->known[builtin[i].type] = true;
        t->min_len[builtin[i].type] = builtin[i].lo;
        t->max_len[builtin[i].type] = builtin[i].hi;
    }
}

int ic_types_add(struct ic_types *t, uint8_t type, uint32_t min_payload, uint32_t max_payload)
{
    if (min_payload > max_payload || max_payload > IC_MAX_PAYLOAD || t->known[type])
        return -EINVAL;
    t->known[type] = true;
    t->min_len[type] = min_payload;
    t->max_len[type] = max_payload;
    return 0;
}

static int drop(enum ic_drop *why, enum ic_drop w)
{
    *why = w;
    return -1;
}

int ic_validate(const struct ic_types *t, const void *buf, size_t len, int from_rank, int self,
                int size, struct ic_hdr *h, enum ic_drop *why)
{
    if (len < sizeof *h)
        return drop(why, IC_DROP_SHORT);
    memcpy(h, buf, sizeof *h);
    if (h->magic != IC_MAGIC)
        return drop(why, IC_DROP_MAGIC);
    if (h->version != IC_VERSION)
        return drop(why, IC_DROP_VERSION);
    if (!t->known[h->type])
        return drop(why, IC_DROP_TYPE);
    if (h->payload_len != len - sizeof *h || h->payload_len < t->min_len[h->type] ||
        h->payload_len > t->max_len[h->type])
        return drop(why, IC_DROP_LENGTH);
    if (h->src_rank >= size || h->src_rank == self ||
        (from_rank >= 0 && h->src_rank != from_rank))
        return drop(why, IC_DROP_SENDER);
    if (h->dst_rank != self)
        return drop(why, IC_DROP_DEST);
    return 0;
}

int ic_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port)
{
    const char *colon = s ? strrchr(s, ':') : NULL;
    if (!colon || colon == s || (size_t)(colon - s) >= hostlen)
        return -EINVAL;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || p < 1 || p > 65535)
        return -EINVAL;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    *port = (uint16_t)p;
    return 0;
}

static int env_int(const char *name, int *out)
{
    const char *v = getenv(name);
    char *end;
    if (!v || !*v)
        return -ENOENT;
    long x = strtol(v, &end, 10);
    if (*end || x < 0 || x > 1000000)
        return -EINVAL;
    *out = (int)x;
    return 0;
}

int ic_rank_from_env(int *rank, int *size, const char **launcher)
{
    static const struct {
        const char *rank, *size, *name;
    } l[] = {
        {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "Open MPI"},
        {"SLURM_PROCID", "SLURM_NTASKS", "Slurm"},
        {"PMI_RANK", "PMI_SIZE", "PMI"},
    };
    for (size_t i = 0; i < sizeof l / sizeof l[0]; i++) {
        if (env_int(l[i].rank, rank) == 0 && env_int(l[i].size, size) == 0) {
            if (launcher)
                *launcher = l[i].name;
            return 0;
        }
    }
    return -ENOENT;
}

void ic_join_mac(const uint8_t *secret, size_t slen, const uint8_t nonce[32], uint32_t rank,
                 uint32_t size, uint8_t mac[32])
{
    uint8_t msg[15 + 32 + 8];
    memcpy(msg, "amalgam-join-v1", 15);
    memcpy(msg + 15, nonce, 32);
    memcpy(msg + 47, &rank, 4);
    memcpy(msg + 51, &size, 4);
    unsigned int n = 32;
    HMAC(EVP_sha256(), secret, (int)slen, msg, sizeof msg, mac, &n);
}

static int read_secret(const char *path, struct ic_config *c, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "--secret-file '%s': %s", path, strerror(errno));
        return -errno;
    }
    size_t n = fread(c->secret, 1, sizeof c->secret, f);
    int more = fgetc(f);
    fclose(f);
    while (n && (c->secret[n - 1] == '\n' || c->secret[n - 1] == '\r'))
        n--;
    if (n < 16 || more != EOF) {
        snprintf(err, errlen, "--secret-file '%s': the secret must be 16 to 256 bytes", path);
        return -EINVAL;
    }
    c->secret_len = n;
    return 0;
}

static int parse_provider(const char *v, struct ic_config *c, char *err, size_t errlen)
{
    static const char *const names[] = {"auto", "tcp", "shm", "verbs"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(v, names[i])) {
            c->provider = (enum ic_provider)i;
            return 0;
        }
    snprintf(err, errlen, "--fabric '%s': expected tcp, shm, verbs or auto", v);
    return -EINVAL;
}

static int parse_count(const char *flag, const char *v, int lo, int hi, int *out, char *err,
                       size_t errlen)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || end == v || x < lo || x > hi) {
        snprintf(err, errlen, "%s '%s': expected a number from %d to %d", flag, v, lo, hi);
        return -EINVAL;
    }
    *out = (int)x;
    return 0;
}

/* Takes one recognised flag at argv[*i] (with its value); 1 if taken. */
static int take_flag(char **argv, int argc, int *i, struct ic_config *c, char *err,
                     size_t errlen)
{
    static const char *const flags[] = {"--fabric", "--rank", "--size", "--bootstrap",
                                        "--secret-file", "--join-timeout", "--ranks"};
    const char *a = argv[*i];
    for (int f = 0; f < 7; f++) {
        size_t fl = strlen(flags[f]);
        if (strncmp(a, flags[f], fl) || (a[fl] && a[fl] != '='))
            continue;
        const char *v = a[fl] == '=' ? a + fl + 1 : (*i + 1 < argc ? argv[++*i] : NULL);
        if (!v) {
            snprintf(err, errlen, "%s needs a value", flags[f]);
            return -EINVAL;
        }
        switch (f) {
        case 0: return parse_provider(v, c, err, errlen) ?: 1;
        case 1: return parse_count("--rank", v, 0, IC_MAX_RANKS - 1, &c->rank, err, errlen) ?: 1;
        case 2:
        case 6: return parse_count(flags[f], v, 1, IC_MAX_RANKS, &c->size, err, errlen) ?: 1;
        case 3:
            if (ic_parse_hostport(v, c->bootstrap_host, sizeof c->bootstrap_host,
                                  &c->bootstrap_port) < 0) {
                snprintf(err, errlen, "--bootstrap '%s': expected HOST:PORT", v);
                return -EINVAL;
            }
            return 1;
        case 4: return read_secret(v, c, err, errlen) ?: 1;
        case 5:
            return parse_count("--join-timeout", v, 1, 3600, &c->join_timeout_ms, err, errlen)
                       ?: (c->join_timeout_ms *= 1000, 1);
        }
        return 0;
    }
    return 0;
}

int ic_parse_node_flags(int *argc, char **argv, struct ic_config *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->rank = c->size = -1;
    c->join_timeout_ms = 30000;
    snprintf(c->bootstrap_host, sizeof c->bootstrap_host, "127.0.0.1");
    c->bootstrap_port = 17420;
    ic_types_init(&c->types);
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        int r = take_flag(argv, *argc, &i, c, err, errlen);
        if (r < 0)
            return r;
        if (r == 0)
            argv[out++] = argv[i];
    }
    *argc = out;
    if (c->rank < 0 || c->size < 0) {
        int r, s;
        if (ic_rank_from_env(&r, &s, NULL) == 0) {
            if (c->rank < 0)
                c->rank = r;
            if (c->size < 0)
                c->size = s;
        }
    }
    return 0;
}

int ic_config_check(const struct ic_config *c, char *err, size_t errlen)
{
    if (c->rank < 0 || c->size < 1) {
        snprintf(err, errlen, "no rank and size: give --rank and --size, or start under "
                 "mpirun, srun or another PMI launcher");
        return -EINVAL;
    }
    if (c->rank >= c->size || c->size > IC_MAX_RANKS) {
        snprintf(err, errlen, "rank %d does not fit a cluster of %d (at most %d ranks)", c->rank,
                 c->size, IC_MAX_RANKS);
        return -EINVAL;
    }
    return 0;
}
