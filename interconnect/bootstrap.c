/* The TCP bootstrap (see bootstrap.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock/clock.h"
#include "interconnect/bootstrap.h"
#include "proto/bootstrap.pb-c.h"

#define FRAME_MAX 65536
#define PER_PEER_MS 5000

static uint64_t now_ms(void)
{
    return clock_now_ns() / 1000000;
}

static int resolve(const struct ic_config *c, struct sockaddr_storage *sa, socklen_t *len)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    char port[8];
    snprintf(port, sizeof port, "%u", c->bootstrap_port);
    if (getaddrinfo(c->bootstrap_host, port, &hints, &res) != 0)
        return -EHOSTUNREACH;
    memcpy(sa, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int bootstrap_local_ip(const struct ic_config *c, char *ip, size_t len)
{
    struct sockaddr_storage sa, me;
    socklen_t sl, ml = sizeof me;
    int r = resolve(c, &sa, &sl);
    if (r < 0)
        return r;
    int fd = socket(sa.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /* A UDP connect sends nothing; it only picks the route and source. */
    if (connect(fd, (struct sockaddr *)&sa, sl) < 0 || getsockname(fd, (struct sockaddr *)&me, &ml) < 0) {
        r = -errno;
        close(fd);
        return r;
    }
    close(fd);
    const void *a = me.ss_family == AF_INET ? (void *)&((struct sockaddr_in *)&me)->sin_addr
                                            : (void *)&((struct sockaddr_in6 *)&me)->sin6_addr;
    return inet_ntop(me.ss_family, a, ip, (socklen_t)len) ? 0 : -EINVAL;
}

/* ---- framing ------------------------------------------------------------ */

static int wait_fd(int fd, short ev, uint64_t deadline)
{
    for (;;) {
        uint64_t t = now_ms();
        if (t >= deadline)
            return -ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = ev};
        int r = poll(&p, 1, (int)(deadline - t));
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -errno;
    }
}

static int io_all(int fd, void *buf, size_t n, bool wr, uint64_t deadline)
{
    uint8_t *p = buf;
    while (n) {
        int r = wait_fd(fd, wr ? POLLOUT : POLLIN, deadline);
        if (r < 0)
            return r;
        ssize_t k = wr ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if (k == 0)
            return -ECONNRESET;
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -errno;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int send_ctl(int fd, const Amalgam__Ctl *m, uint64_t deadline)
{
    uint8_t buf[FRAME_MAX];
    size_t n = amalgam__ctl__get_packed_size(m);
    if (n > sizeof buf - 4)
        return -EMSGSIZE;
    uint32_t len = (uint32_t)n;
    memcpy(buf, &len, 4);
    amalgam__ctl__pack(m, buf + 4);
    return io_all(fd, buf, n + 4, true, deadline);
}

/* Receives one Ctl whose body is `want`; anything else is an error. */
static int recv_ctl(int fd, Amalgam__Ctl__BodyCase want, Amalgam__Ctl **out, uint64_t deadline)
{
    uint8_t buf[FRAME_MAX];
    uint32_t len;
    int r = io_all(fd, &len, 4, false, deadline);
    if (r < 0)
        return r;
    if (len == 0 || len > FRAME_MAX)
        return -EBADMSG;
    r = io_all(fd, buf, len, false, deadline);
    if (r < 0)
        return r;
    Amalgam__Ctl *m = amalgam__ctl__unpack(NULL, len, buf);
    if (!m)
        return -EBADMSG;
    if (m->body_case != want) {
        amalgam__ctl__free_unpacked(m, NULL);
        return -EPROTO;
    }
    *out = m;
    return 0;
}

/* ---- rank 0 --------------------------------------------------------------- */

static int listen_on(const struct ic_config *c, char *err, size_t errlen)
{
    struct sockaddr_storage sa;
    socklen_t sl;
    if (resolve(c, &sa, &sl) < 0) {
        snprintf(err, errlen, "cannot resolve bootstrap host '%s'", c->bootstrap_host);
        return -EHOSTUNREACH;
    }
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0)
        return -errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sl) < 0 || listen(fd, IC_MAX_RANKS) < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot listen on %s:%u for the bootstrap: %s", c->bootstrap_host,
                 c->bootstrap_port, strerror(e));
        close(fd);
        return -e;
    }
    return fd;
}

/* Checks one joining node; returns its rank, or -1 with reason filled. */
static int vet_join(const struct ic_config *c, const char *provider, const uint8_t nonce[32],
                    const Amalgam__Join *j, const bool *joined, char *reason, size_t rlen)
{
    uint8_t mac[32];
    if (j->version != IC_VERSION)
        snprintf(reason, rlen, "protocol version %u, rank 0 speaks %u", j->version, IC_VERSION);
    else if (j->size != (uint32_t)c->size)
        snprintf(reason, rlen, "cluster size %u, rank 0 expects %d", j->size, c->size);
    else if (j->rank == 0 || j->rank >= (uint32_t)c->size)
        snprintf(reason, rlen, "rank %u is out of range 1..%d", j->rank, c->size - 1);
    else if (joined[j->rank])
        snprintf(reason, rlen, "rank %u has joined already", j->rank);
    else if (strcmp(j->provider, provider))
        snprintf(reason, rlen, "fabric provider '%s', rank 0 uses '%s'", j->provider, provider);
    else if (j->fabric_addr.len == 0 || j->fabric_addr.len > IC_ADDR_MAX)
        snprintf(reason, rlen, "bad fabric address length %zu", j->fabric_addr.len);
    else if (j->mac.len == 0)
        snprintf(reason, rlen, "no shared secret given (--secret-file)");
    else {
        ic_join_mac(c->secret, c->secret_len, nonce, j->rank, j->size, mac);
        if (j->mac.len != 32 || CRYPTO_memcmp(mac, j->mac.data, 32))
            snprintf(reason, rlen, "wrong shared secret");
        else
            return (int)j->rank;
    }
    return -1;
}

static int admit_one(int lfd, const struct ic_config *c, const char *provider, bool *joined,
                     int *fds, struct ic_addr *table)
{
    struct sockaddr_storage peer;
    socklen_t pl = sizeof peer;
    int fd = accept4(lfd, (struct sockaddr *)&peer, &pl, SOCK_CLOEXEC);
    if (fd < 0)
        return 0;
    uint64_t deadline = now_ms() + PER_PEER_MS;
    uint8_t nonce[32];
    RAND_bytes(nonce, sizeof nonce);
    Amalgam__Challenge ch = AMALGAM__CHALLENGE__INIT;
    ch.version = IC_VERSION;
    ch.nonce = (ProtobufCBinaryData){sizeof nonce, nonce};
    ch.size = (uint32_t)c->size;
    Amalgam__Ctl m = AMALGAM__CTL__INIT, *in = NULL;
    m.body_case = AMALGAM__CTL__BODY_CHALLENGE;
    m.challenge = &ch;
    if (send_ctl(fd, &m, deadline) < 0 || recv_ctl(fd, AMALGAM__CTL__BODY_JOIN, &in, deadline) < 0) {
        close(fd);
        return 0;
    }
    char reason[160] = "";
    int rank = vet_join(c, provider, nonce, in->join, joined, reason, sizeof reason);
    Amalgam__JoinReply rep = AMALGAM__JOIN_REPLY__INIT;
    rep.accepted = rank > 0;
    rep.reason = reason;
    m.body_case = AMALGAM__CTL__BODY_REPLY;
    m.reply = &rep;
    send_ctl(fd, &m, deadline);
    if (rank < 0) {
        char host[64] = "?";
        getnameinfo((struct sockaddr *)&peer, pl, host, sizeof host, NULL, 0, NI_NUMERICHOST);
        fprintf(stderr, "amalgam: refused a node from %s claiming rank %u: %s\n", host,
                in->join->rank, reason);
        close(fd);
    } else {
        joined[rank] = true;
        fds[rank] = fd;
        memcpy(table[rank].bytes, in->join->fabric_addr.data, in->join->fabric_addr.len);
        table[rank].len = in->join->fabric_addr.len;
    }
    amalgam__ctl__free_unpacked(in, NULL);
    return rank > 0;
}

static void name_missing(const bool *joined, int size, char *buf, size_t len)
{
    size_t o = 0;
    for (int r = 1; r < size && o < len; r++)
        if (!joined[r])
            o += (size_t)snprintf(buf + o, len - o, "%s%d", o ? ", " : "", r);
}

static int gather(const struct ic_config *c, const char *provider, struct ic_addr *table,
                  char *err, size_t errlen)
{
    bool joined[IC_MAX_RANKS] = {true};
    int fds[IC_MAX_RANKS], n = 1, r = 0;
    int lfd = listen_on(c, err, errlen);
    if (lfd < 0)
        return lfd;
    uint64_t deadline = now_ms() + (uint64_t)c->join_timeout_ms;
    while (n < c->size) {
        if (wait_fd(lfd, POLLIN, deadline) < 0) {
            char missing[256] = "";
            name_missing(joined, c->size, missing, sizeof missing);
            snprintf(err, errlen, "rank%s %s never joined within %d s", strchr(missing, ',') ? "s" : "",
                     missing, c->join_timeout_ms / 1000);
            r = -ETIMEDOUT;
            goto out;
        }
        n += admit_one(lfd, c, provider, joined, fds, table);
    }
    Amalgam__AddressTable t = AMALGAM__ADDRESS_TABLE__INIT;
    ProtobufCBinaryData addrs[IC_MAX_RANKS];
    for (int i = 0; i < c->size; i++)
        addrs[i] = (ProtobufCBinaryData){table[i].len, table[i].bytes};
    t.n_addrs = (size_t)c->size;
    t.addrs = addrs;
    Amalgam__Ctl m = AMALGAM__CTL__INIT;
    m.body_case = AMALGAM__CTL__BODY_TABLE;
    m.table = &t;
    for (int i = 1; i < c->size; i++)
        if (send_ctl(fds[i], &m, now_ms() + PER_PEER_MS) < 0 && r == 0) {
            snprintf(err, errlen, "rank %d left during the bootstrap", i);
            r = -ECONNRESET;
        }
out:
    for (int i = 1; i < c->size; i++)
        if (joined[i])
            close(fds[i]);
    close(lfd);
    return r;
}

/* ---- ranks > 0 ------------------------------------------------------------ */

static int connect_retry(const struct ic_config *c, uint64_t deadline, char *err, size_t errlen)
{
    struct sockaddr_storage sa;
    socklen_t sl;
    if (resolve(c, &sa, &sl) < 0) {
        snprintf(err, errlen, "cannot resolve bootstrap host '%s'", c->bootstrap_host);
        return -EHOSTUNREACH;
    }
    while (now_ms() < deadline) {
        int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -errno;
        if (connect(fd, (struct sockaddr *)&sa, sl) == 0)
            return fd;
        close(fd);
        usleep(50000); /* rank 0 may not be listening yet */
    }
    snprintf(err, errlen, "rank 0 at %s:%u did not answer within %d s", c->bootstrap_host,
             c->bootstrap_port, c->join_timeout_ms / 1000);
    return -ETIMEDOUT;
}

static int join(const struct ic_config *c, const char *provider, const struct ic_addr *mine,
                struct ic_addr *table, char *err, size_t errlen)
{
    uint64_t deadline = now_ms() + (uint64_t)c->join_timeout_ms;
    int fd = connect_retry(c, deadline, err, errlen), r;
    if (fd < 0)
        return fd;
    Amalgam__Ctl *in = NULL, m = AMALGAM__CTL__INIT;
    r = recv_ctl(fd, AMALGAM__CTL__BODY_CHALLENGE, &in, deadline);
    if (r < 0 || in->challenge->nonce.len != 32) {
        snprintf(err, errlen, "bad or no challenge from rank 0 (%s)", strerror(r < 0 ? -r : EPROTO));
        goto fail;
    }
    uint8_t mac[32];
    Amalgam__Join j = AMALGAM__JOIN__INIT;
    j.version = IC_VERSION;
    j.rank = (uint32_t)c->rank;
    j.size = (uint32_t)c->size;
    j.provider = (char *)provider;
    j.fabric_addr = (ProtobufCBinaryData){mine->len, (uint8_t *)mine->bytes};
    if (c->secret_len) {
        ic_join_mac(c->secret, c->secret_len, in->challenge->nonce.data, j.rank, j.size, mac);
        j.mac = (ProtobufCBinaryData){32, mac};
    }
    amalgam__ctl__free_unpacked(in, NULL);
    in = NULL;
    m.body_case = AMALGAM__CTL__BODY_JOIN;
    m.join = &j;
    if ((r = send_ctl(fd, &m, deadline)) < 0 ||
        (r = recv_ctl(fd, AMALGAM__CTL__BODY_REPLY, &in, deadline)) < 0) {
        snprintf(err, errlen, "rank 0 hung up during the join (%s)", strerror(-r));
        goto fail;
    }
    if (!in->reply->accepted) {
        snprintf(err, errlen, "rank 0 refused to let rank %d join: %s", c->rank, in->reply->reason);
        r = -EACCES;
        goto fail;
    }
    amalgam__ctl__free_unpacked(in, NULL);
    in = NULL;
    if ((r = recv_ctl(fd, AMALGAM__CTL__BODY_TABLE, &in, deadline)) < 0 ||
        in->table->n_addrs != (size_t)c->size) {
        snprintf(err, errlen, "no address table from rank 0 (%s)", r < 0 ? strerror(-r) : "wrong size");
        r = r < 0 ? r : -EPROTO;
        goto fail;
    }
    for (int i = 0; i < c->size; i++) {
        if (in->table->addrs[i].len == 0 || in->table->addrs[i].len > IC_ADDR_MAX) {
            snprintf(err, errlen, "bad address for rank %d from rank 0", i);
            r = -EPROTO;
            goto fail;
        }
        memcpy(table[i].bytes, in->table->addrs[i].data, in->table->addrs[i].len);
        table[i].len = in->table->addrs[i].len;
    }
    r = 0;
fail:
    if (in)
        amalgam__ctl__free_unpacked(in, NULL);
    close(fd);
    return r;
}

int bootstrap_exchange(const struct ic_config *c, const char *provider, const struct ic_addr *mine,
                       struct ic_addr *table, char *err, size_t errlen)
{
    err[0] = 0;
    table[c->rank] = *mine;
    if (c->size == 1)
        return 0;
    if (c->rank == 0) {
        if (!c->secret_len) {
            snprintf(err, errlen, "rank 0 needs the cluster's shared secret (--secret-file)");
            return -EACCES;
        }
        return gather(c, provider, table, err, errlen);
    }
    int r = join(c, provider, mine, table, err, errlen);
    return r < 0 ? r : (err[0] ? -EPROTO : 0);
}
