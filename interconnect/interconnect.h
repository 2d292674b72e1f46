/* interconnect: messages between the node processes of one cluster.
 *
 * A node opens one libfabric reliable-datagram (RDM) endpoint (provider
 * tcp, shm or verbs, chosen at run time), joins the cluster through a TCP
 * bootstrap at rank 0 (authenticated by an HMAC over a fresh challenge with
 * the cluster's shared secret), and learns every peer's fabric address.
 * Then any rank sends any rank a message: a fixed 32-byte binary header and
 * an optional payload of at most 4 KiB (a guest page).
 *
 * Invariants: nothing is allocated on the send/receive path (buffers are
 * registered once at open); every received message is validated (magic,
 * version, registered type, payload length for that type, sender rank
 * against the fabric's own source address) before any handler sees it, and
 * a bad one is dropped and counted; a peer silent for longer than the
 * liveness time-out (1.5 s; heartbeats every 250 ms) is reported dead.
 * Threads: ic_send() may be called from any thread; ic_poll()/ic_tick()
 * from one thread at a time.
 *
 * Transports: the same API runs over libfabric (ic_open) or over an
 * in-process loopback between the nodes of one process (ic_loopback_open),
 * which can delay, reorder and drop messages: the cluster's protocol is
 * unit-tested over it. Handlers are registered per message type (ic_on)
 * and ic_poll_handlers hands each message to its type's handler.
 */
#ifndef AMALGAM_INTERCONNECT_INTERCONNECT_H
#define AMALGAM_INTERCONNECT_INTERCONNECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IC_MAGIC 0x474C4D41u /* "AMLG" little-endian */
#define IC_VERSION 1
#define IC_MAX_PAYLOAD 4096
#define IC_MAX_RANKS 64
#define IC_HEARTBEAT_NS 250000000ULL
#define IC_DEAD_NS 1500000000ULL /* default; AMALGAM_DEAD_AFTER_MS overrides */
#define IC_START_NS 60000000000ULL /* for a peer not heard from since the bootstrap */

/* Message types: 0x00-0x1f interconnect, 0x20-0x5f DSM, 0x60-0x7f vCPU,
 * IPI and I/O forwarding, 0x80-0x9f migration. */
enum ic_type {
    IC_T_HEARTBEAT = 0x01,
    IC_T_PING = 0x02,
    IC_T_PONG = 0x03,
    IC_T_CHECK = 0x04,
    IC_T_BYE = 0x05,
    IC_T_CLOCK_REQ = 0x06, /* arg0: the sender's TSC; answered inside ic_poll */
    IC_T_CLOCK_REP = 0x07, /* arg0: that TSC, echoed; arg1: the answerer's TSC */
};

/* The wire header, little-endian, 32 bytes. */
struct ic_hdr {
    uint32_t magic;
    uint8_t version;
    uint8_t type;
    uint16_t src_rank;
    uint16_t dst_rank;
    uint16_t flags;
    uint32_t payload_len;
    uint64_t arg0;
    uint64_t arg1;
};

/* Registered payload bounds of each type. Every node must register the
 * same types; a message of an unregistered type is dropped. */
struct ic_types {
    bool known[256];
    uint32_t min_len[256], max_len[256];
};
/* The interconnect's own types only. */
void ic_types_init(struct ic_types *t);
int ic_types_add(struct ic_types *t, uint8_t type, uint32_t min_payload, uint32_t max_payload);

enum ic_provider { IC_PROV_AUTO, IC_PROV_TCP, IC_PROV_SHM, IC_PROV_VERBS };

struct ic_config {
    enum ic_provider provider;
    int rank, size;
    char bootstrap_host[256];
    uint16_t bootstrap_port;
    uint8_t secret[256];
    size_t secret_len;      /* 0: no secret */
    int join_timeout_ms;
    struct ic_types types;
    /* ic_spawn_local only: give each local rank its own share of this
     * process's CPUs (stable timings when several nodes share a host). */
    bool pin_local;
    /* Ask the provider for one-sided reads (FI_RMA) too, for ic_expose and
     * ic_read. A provider that refuses them is opened without; ic_expose
     * then says -ENOTSUP. Off, the endpoint is opened as before. */
    bool rma;
};

/* Why a message was dropped; counters in struct ic_stats. */
enum ic_drop {
    IC_DROP_SHORT, IC_DROP_MAGIC, IC_DROP_VERSION, IC_DROP_TYPE, IC_DROP_LENGTH,
    IC_DROP_SENDER, IC_DROP_DEST, IC_DROP_COUNT
};

struct ic_stats {
    uint64_t sent, received, bytes_sent, bytes_received;
    uint64_t dropped[IC_DROP_COUNT];
    /* One-sided reads: done, refused before they left (a descriptor or
     * offset outside the region a peer described), and completed in error
     * (the peer's provider refused the key or address, or it died). */
    uint64_t reads, read_rejected, read_errors;
};

struct ic;
typedef void (*ic_handler)(void *ctx, const struct ic_hdr *h, const void *payload);

/* Parses the node flags shared by every multi-node command: --fabric,
 * --rank, --size, --bootstrap HOST:PORT, --secret-file, --join-timeout.
 * Unknown flags are left for the caller: argv is compacted to them and
 * *argc updated. Rank and size fall back on the launcher's environment
 * (Open MPI, Slurm, PMI). */
int ic_parse_node_flags(int *argc, char **argv, struct ic_config *c, char *err, size_t errlen);
/* -EINVAL (with err) unless rank and size are known and consistent. */
int ic_config_check(const struct ic_config *c, char *err, size_t errlen);

/* Opens the endpoint and joins the cluster (blocks until every rank has
 * joined, or the time-out; err names the ranks that never arrived). */
int ic_open(const struct ic_config *c, struct ic **out, char *err, size_t errlen);
void ic_close(struct ic *ic);

int ic_rank(const struct ic *ic);
int ic_size(const struct ic *ic);
const char *ic_provider_name(const struct ic *ic);
const char *ic_transport_name(const struct ic *ic); /* "libfabric", "loopback" */

/* Handlers per message type: fn(ctx, ...) gets every valid message of the
 * types first..last. -EEXIST if one of them has a handler already. */
int ic_on(struct ic *ic, uint8_t first, uint8_t last, ic_handler fn, void *ctx);
/* As ic_poll, handing each message to its type's handler; messages of a
 * type nobody registered are counted (ic_unhandled) and dropped. */
int ic_poll_handlers(struct ic *ic, int max);
uint64_t ic_unhandled(const struct ic *ic);

/* In-process loopback: n nodes in this process, ranks 0..n-1 (out[i]).
 * Every message goes through the same validation as on the wire (ic_types).
 * delay_ns: a message becomes visible that long after it is sent;
 * reorder_pct: the share of messages that may overtake the one before;
 * drop_pct: the share silently lost; seed makes both repeatable. Each
 * node is closed with ic_close; the shared state goes with the last. */
struct ic_loopback_opts {
    uint64_t delay_ns;
    int reorder_pct, drop_pct;
    unsigned seed;
};
int ic_loopback_open(int n, const struct ic_types *types, const struct ic_loopback_opts *o,
                     struct ic **out);
/* Loses the next `count` messages of `type` that this node sends (-1: all
 * from now on; 0: none again): for tests of lost replies. */
void ic_loopback_drop(struct ic *ic, uint8_t type, int count);

/* Sends to rank dst; payload may be NULL when len is 0. Blocks only while
 * every send buffer is in flight. */
int ic_send(struct ic *ic, int dst, uint8_t type, uint64_t arg0, uint64_t arg1,
            const void *payload, uint32_t len);
/* Progresses the fabric and hands up to max valid messages to fn. Returns
 * how many were handed, or a negative errno (-EPIPE: a peer died). */
int ic_poll(struct ic *ic, ic_handler fn, void *ctx, int max);
/* Heartbeats and liveness: call at least every 100 ms. -EPIPE once a peer
 * has been silent too long; ic_dead_rank() says which. */
int ic_tick(struct ic *ic, uint64_t now_ns);
int ic_dead_rank(const struct ic *ic);
/* How long a silent peer is given (IC_DEAD_NS, or the environment's
 * AMALGAM_DEAD_AFTER_MS: for hosts so slow, e.g. emulated, that a live
 * peer can be silent longer). */
uint64_t ic_dead_after_ns(const struct ic *ic);
/* The same, as this process's environment sets it (no ic needed: the
 * launcher, which waits for nodes, reads it too). */
uint64_t ic_dead_after_env_ns(void);
/* Clock offsets between hosts, Cristian's way, on the TSC: a probe asks a
 * peer for its TSC; an answer that left the peer at its TSC t1, for a
 * probe sent at local t0 and answered at local t2, says the peer's TSC
 * minus ours was t1 - (t0 + t2) / 2, within half the round trip t2 - t0.
 * The answer with the shortest round trip wins. Probes are answered and
 * answers recorded inside ic_poll, by whichever thread polls; an answer
 * that does not echo this node's latest probe to that peer is ignored. */
struct ic_clock {
    uint64_t pending_t0;  /* the probe awaiting an answer; 0: none */
    uint64_t samples;     /* answers taken */
    uint64_t best_rtt;    /* shortest round trip so far, in TSC cycles */
    int64_t best_offset;  /* the peer's TSC minus ours, from that answer */
};
/* Takes one answer (pure; exposed for tests): false if it is not one. */
bool ic_clock_take(struct ic_clock *c, uint64_t t0, uint64_t t1, uint64_t t2);
/* Sends a probe to peer (a probe still unanswered is superseded). */
int ic_clock_probe(struct ic *ic, int peer);
/* The estimate so far: 0, or -EAGAIN before any answer. */
int ic_clock_offset(struct ic *ic, int peer, int64_t *offset, uint64_t *rtt, uint64_t *samples);
/* Up to `probes` probes, one after another, each given wait_ns for its
 * answer, then as ic_clock_offset. With fn, this thread polls meanwhile
 * (other messages go to fn; -EPIPE if a peer died); without, another
 * thread must be polling. Stops early when *cancel (if given) is set. */
int ic_clock_measure(struct ic *ic, int peer, int probes, uint64_t wait_ns, ic_handler fn,
                     void *ctx, const _Atomic int *cancel, int64_t *offset, uint64_t *rtt,
                     uint64_t *samples);

/* ---- one-sided reads (RMA) ----
 * A node exposes one region of its memory once (the DSM: its home pages)
 * and sends the region's descriptor to whoever may read it; a peer then
 * reads from the region without the owner's CPU taking part. The
 * descriptor comes from the network, so it is untrusted: ic_read refuses
 * an offset or length outside it (-ERANGE, counted in read_rejected), and
 * a key or address the owner's provider refuses completes in error (-EIO,
 * counted in read_errors). The owner keeps the region's contents stable
 * for as long as its protocol says a read may be in flight. */
struct ic_region {
    uint64_t addr; /* what the provider wants as the remote address of byte 0 */
    uint64_t key;
    uint64_t len;
};
/* Registers [base, base + len) for remote reads. Once per ic; -ENOTSUP
 * where the transport or provider has no one-sided reads (or the config
 * did not ask for them), -ENOMEM where registration failed for lack of
 * lockable memory (RLIMIT_MEMLOCK), else 0 or a negative errno. */
int ic_expose(struct ic *ic, void *base, size_t len, struct ic_region *out);
/* Reads len (<= IC_MAX_PAYLOAD) bytes at offset in peer's region r. On
 * success *data points at them, in a buffer of the transport's that stays
 * valid until the next ic_read on this ic. Blocks until the read completes
 * (a few microseconds), or -ETIMEDOUT after the liveness time-out. */
int ic_read(struct ic *ic, int peer, const struct ic_region *r, uint64_t offset, size_t len,
            const void **data);

/* A file descriptor that becomes readable when ic_poll() has work, for
 * epoll loops (-1 if the provider has none: poll instead). */
int ic_fd(struct ic *ic);
/* Waits up to timeout_ms for work (uses ic_fd when there is one), or until
 * also_fd (-1: none) is readable. A provider without a wait fd (shm) is
 * polled again after 50 us. */
void ic_wait(struct ic *ic, int timeout_ms, int also_fd);
/* The same, but a provider without a wait fd sleeps the whole max_ns too
 * (a provider with one rounds it up to a millisecond): for a loop that has
 * been idle long enough that a wake-up every 50 us costs more than a late
 * answer. */
void ic_wait_ns(struct ic *ic, uint64_t max_ns, int also_fd);
const struct ic_stats *ic_stats(const struct ic *ic);

/* Runs `amalgam [cmd] argv... --rank i --ranks n --bootstrap ... --secret-file ...`
 * for i in 0..n-1 on this host with a fresh secret (interconnect/spawn.c);
 * returns rank 0's exit status if it failed, else 1 if another rank did,
 * else 0. SIGINT, SIGTERM and SIGHUP are passed on to the ranks (killed
 * 2 s later if still there), and then the status is 128+N; the ranks get
 * SIGTERM if this process dies, even by SIGKILL. */
int ic_spawn_local(const char *cmd, int argc, char **argv, int nranks,
                   const struct ic_config *parent);

/* ---- pure pieces, exposed for tests and fuzzing ---- */

/* Validates a received buffer claimed to come from from_rank (-1 unknown)
 * at a node of rank self in a cluster of size. Returns -1 and *why on a bad
 * message, else 0 with *h decoded. */
int ic_validate(const struct ic_types *t, const void *buf, size_t len, int from_rank, int self,
                int size, struct ic_hdr *h, enum ic_drop *why);
/* "host:port" -> parts; -EINVAL if malformed. */
int ic_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port);
/* Rank/size from the launcher's environment: 0 if found, -ENOENT if none. */
int ic_rank_from_env(int *rank, int *size, const char **launcher);
/* HMAC-SHA256 join proof. */
void ic_join_mac(const uint8_t *secret, size_t slen, const uint8_t nonce[32], uint32_t rank,
                 uint32_t size, uint8_t mac[32]);

#endif
