/* Unit tests for the interconnect's pure parts: message validation, the
 * type registry, node flags and launcher environments, the join MAC. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "interconnect/interconnect.h"

static struct ic_types types;

static struct ic_hdr good(uint8_t type, uint32_t len)
{
    return (struct ic_hdr){.magic = IC_MAGIC, .version = IC_VERSION, .type = type,
                           .src_rank = 1, .dst_rank = 2, .payload_len = len};
}

static int check(const struct ic_hdr *h, size_t len, int from, enum ic_drop *why)
{
    uint8_t buf[sizeof *h + IC_MAX_PAYLOAD + 8] = {0};
    struct ic_hdr out;
    memcpy(buf, h, sizeof *h);
    return ic_validate(&types, buf, len, from, 2, 4, &out, why);
}

START_TEST(validation)
{
    enum ic_drop why;
    ic_types_init(&types);
    struct ic_hdr h = good(IC_T_CHECK, IC_MAX_PAYLOAD);
    ck_assert_int_eq(check(&h, sizeof h + IC_MAX_PAYLOAD, 1, &why), 0);
    ck_assert_int_eq(check(&h, sizeof h + IC_MAX_PAYLOAD, -1, &why), 0); /* source unknown */
    ck_assert_int_eq(check(&h, 10, 1, &why), -1);
    ck_assert_int_eq(why, IC_DROP_SHORT);
    ck_assert_int_eq(check(&h, sizeof h + 100, 1, &why), -1); /* length disagrees */
    ck_assert_int_eq(why, IC_DROP_LENGTH);
    h = good(IC_T_CHECK, 100); /* CHECK must carry exactly 4 KiB */
    ck_assert_int_eq(check(&h, sizeof h + 100, 1, &why), -1);
    ck_assert_int_eq(why, IC_DROP_LENGTH);
    h = good(IC_T_HEARTBEAT, 0);
    h.magic ^= 1;
    ck_assert_int_eq(check(&h, sizeof h, 1, &why), -1);
    ck_assert_int_eq(why, IC_DROP_MAGIC);
    h = good(IC_T_HEARTBEAT, 0);
    h.version = 9;
    ck_assert_int_eq(check(&h, sizeof h, 1, &why), -1);
    ck_assert_int_eq(why, IC_DROP_VERSION);
    h = good(0x77, 0);
    ck_assert_int_eq(check(&h, sizeof h, 1, &why), -1);
    ck_assert_int_eq(why, IC_DROP_TYPE);
    h = good(IC_T_HEARTBEAT, 0);
    ck_assert_int_eq(check(&h, sizeof h, 3, &why), -1); /* claims 1, fabric says 3 */
    ck_assert_int_eq(why, IC_DROP_SENDER);
    h.src_rank = 9; /* out of the cluster */
    ck_assert_int_eq(check(&h, sizeof h, -1, &why), -1);
    ck_assert_int_eq(why, IC_DROP_SENDER);
    h.src_rank = 2; /* ourselves */
    ck_assert_int_eq(check(&h, sizeof h, -1, &why), -1);
    h = good(IC_T_HEARTBEAT, 0);
    h.dst_rank = 3;
    ck_assert_int_eq(check(&h, sizeof h, 1, &why), -1);
    ck_assert_int_eq(why, IC_DROP_DEST);
    h = good(IC_T_PING, 0xffffffffu); /* absurd length claim */
    ck_assert_int_eq(check(&h, sizeof h, 1, &why), -1);
    ck_assert_int_eq(why, IC_DROP_LENGTH);
}
END_TEST

START_TEST(type_registry)
{
    ic_types_init(&types);
    ck_assert_int_eq(ic_types_add(&types, 0x20, 0, 0), 0);
    ck_assert_int_eq(ic_types_add(&types, 0x20, 0, 0), -EINVAL); /* twice */
    ck_assert_int_eq(ic_types_add(&types, 0x21, 10, 5), -EINVAL);
    ck_assert_int_eq(ic_types_add(&types, 0x22, 0, IC_MAX_PAYLOAD + 1), -EINVAL);
    ck_assert_int_eq(ic_types_add(&types, IC_T_PING, 0, 0), -EINVAL); /* built in */
}
END_TEST

START_TEST(hostport)
{
    char host[64];
    uint16_t port;
    ck_assert_int_eq(ic_parse_hostport("10.1.2.3:7000", host, sizeof host, &port), 0);
    ck_assert_str_eq(host, "10.1.2.3");
    ck_assert_uint_eq(port, 7000);
    ck_assert_int_eq(ic_parse_hostport("node-a.example:1", host, sizeof host, &port), 0);
    ck_assert_int_eq(ic_parse_hostport("::1:80", host, sizeof host, &port), 0);
    ck_assert_str_eq(host, "::1");
    ck_assert_int_eq(ic_parse_hostport("host", host, sizeof host, &port), -EINVAL);
    ck_assert_int_eq(ic_parse_hostport(":80", host, sizeof host, &port), -EINVAL);
    ck_assert_int_eq(ic_parse_hostport("h:0", host, sizeof host, &port), -EINVAL);
    ck_assert_int_eq(ic_parse_hostport("h:70000", host, sizeof host, &port), -EINVAL);
    ck_assert_int_eq(ic_parse_hostport("h:80x", host, sizeof host, &port), -EINVAL);
    ck_assert_int_eq(ic_parse_hostport(NULL, host, sizeof host, &port), -EINVAL);
}
END_TEST

static void clear_env(void)
{
    const char *v[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "SLURM_PROCID",
                       "SLURM_NTASKS", "PMI_RANK", "PMI_SIZE"};
    for (int i = 0; i < 6; i++)
        unsetenv(v[i]);
}

START_TEST(launchers)
{
    int r, s;
    const char *who;
    clear_env();
    ck_assert_int_eq(ic_rank_from_env(&r, &s, &who), -ENOENT);
    setenv("SLURM_PROCID", "3", 1);
    setenv("SLURM_NTASKS", "8", 1);
    ck_assert_int_eq(ic_rank_from_env(&r, &s, &who), 0);
    ck_assert_int_eq(r, 3);
    ck_assert_int_eq(s, 8);
    ck_assert_str_eq(who, "Slurm");
    setenv("OMPI_COMM_WORLD_RANK", "1", 1); /* Open MPI wins when both are set */
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    ck_assert_int_eq(ic_rank_from_env(&r, &s, &who), 0);
    ck_assert_str_eq(who, "Open MPI");
    clear_env();
    setenv("PMI_RANK", "x", 1);
    setenv("PMI_SIZE", "2", 1);
    ck_assert_int_eq(ic_rank_from_env(&r, &s, &who), -ENOENT);
    clear_env();
}
END_TEST

START_TEST(node_flags)
{
    struct ic_config c;
    char err[256];
    char *argv[] = {"x", "--fabric", "tcp", "--rank=2", "--ranks", "4", "--bootstrap",
                    "10.0.0.1:9000", "--iters", "5", NULL};
    int argc = 10;
    clear_env();
    ck_assert_int_eq(ic_parse_node_flags(&argc, argv, &c, err, sizeof err), 0);
    ck_assert_int_eq(c.provider, IC_PROV_TCP);
    ck_assert_int_eq(c.rank, 2);
    ck_assert_int_eq(c.size, 4);
    ck_assert_str_eq(c.bootstrap_host, "10.0.0.1");
    ck_assert_int_eq(c.bootstrap_port, 9000);
    ck_assert_int_eq(argc, 3); /* the rest is left for the command */
    ck_assert_str_eq(argv[1], "--iters");
    ck_assert_int_eq(ic_config_check(&c, err, sizeof err), 0);
    char *bad1[] = {"x", "--fabric", "carrier-pigeon"};
    argc = 3;
    ck_assert_int_eq(ic_parse_node_flags(&argc, bad1, &c, err, sizeof err), -EINVAL);
    char *bad2[] = {"x", "--rank", "5", "--size", "4"};
    argc = 5;
    ck_assert_int_eq(ic_parse_node_flags(&argc, bad2, &c, err, sizeof err), 0);
    ck_assert_int_eq(ic_config_check(&c, err, sizeof err), -EINVAL);
    char *bad3[] = {"x", "--secret-file", "/nonexistent/secret"};
    argc = 3;
    ck_assert_int_eq(ic_parse_node_flags(&argc, bad3, &c, err, sizeof err), -ENOENT);
    char *none[] = {"x"};
    argc = 1;
    ck_assert_int_eq(ic_parse_node_flags(&argc, none, &c, err, sizeof err), 0);
    ck_assert_int_eq(ic_config_check(&c, err, sizeof err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "mpirun"));
}
END_TEST

START_TEST(join_mac)
{
    uint8_t nonce[32] = {1, 2, 3}, a[32], b[32];
    const uint8_t *s1 = (const uint8_t *)"correct horse battery staple";
    ic_join_mac(s1, 28, nonce, 1, 4, a);
    ic_join_mac(s1, 28, nonce, 1, 4, b);
    ck_assert(!memcmp(a, b, 32));
    ic_join_mac(s1, 28, nonce, 2, 4, b); /* another rank */
    ck_assert(memcmp(a, b, 32));
    ic_join_mac((const uint8_t *)"correct horse battery stapler", 29, nonce, 1, 4, b);
    ck_assert(memcmp(a, b, 32));
    nonce[31] ^= 1; /* a replayed proof does not fit a fresh challenge */
    ic_join_mac(s1, 28, nonce, 1, 4, b);
    ck_assert(memcmp(a, b, 32));
}
END_TEST

/* A peer whose TSC is 1,000,000 ahead, one-way delays out 300 and back
 * 100 (so the estimate is off by +100, within half the round trip): the
 * answer with the shortest round trip wins; stray and repeated answers are
 * not taken. */
START_TEST(clock_estimate)
{
    struct ic_clock c = {0};
    ck_assert(!ic_clock_take(&c, 1000, 0, 2000)); /* no probe out */
    c.pending_t0 = 1000;
    ck_assert(!ic_clock_take(&c, 999, 0, 2000)); /* not our probe */
    ck_assert(ic_clock_take(&c, 1000, 1000 + 300 + 1000000, 1000 + 400));
    ck_assert(!ic_clock_take(&c, 1000, 0, 1500)); /* answered already */
    ck_assert_uint_eq(c.samples, 1);
    ck_assert_uint_eq(c.best_rtt, 400);
    ck_assert_int_eq(c.best_offset, 1000000 + 100);
    c.pending_t0 = 5000; /* slower: round trip 5000, does not replace */
    ck_assert(ic_clock_take(&c, 5000, 5000 + 4000 + 1000000, 10000));
    ck_assert_uint_eq(c.best_rtt, 400);
    ck_assert_int_eq(c.best_offset, 1000000 + 100);
    c.pending_t0 = 20000; /* faster and symmetric: exact */
    ck_assert(ic_clock_take(&c, 20000, 20000 + 50 + 1000000, 20100));
    ck_assert_uint_eq(c.samples, 3);
    ck_assert_uint_eq(c.best_rtt, 100);
    ck_assert_int_eq(c.best_offset, 1000000);
    c.pending_t0 = 30000; /* a peer behind us: negative offsets */
    ck_assert(ic_clock_take(&c, 30000, 10, 30010));
    ck_assert_int_eq(c.best_offset, 10 - 30000 - 5);
    c.pending_t0 = 40000; /* an answer "before" its probe is not one */
    ck_assert(!ic_clock_take(&c, 40000, 0, 39999));
}
END_TEST

/* One-sided reads over the loopback: a read inside the region the peer
 * exposed returns its bytes; a descriptor that does not hold the offset is
 * refused before anything is read, and a key or address the owner never
 * registered fails as a NIC would fail it. Each is counted. */
START_TEST(one_sided_reads)
{
    struct ic_types t;
    ic_types_init(&t);
    struct ic *ic[2];
    ck_assert_int_eq(ic_loopback_open(2, &t, NULL, ic), 0);
    static uint8_t mem[3 * 4096];
    for (size_t i = 0; i < sizeof mem; i++)
        mem[i] = (uint8_t)(i * 7 + 3);
    struct ic_region rg, other;
    const void *data = NULL;
    struct ic_region none = {0, 0, 4096};
    ck_assert_int_eq(ic_read(ic[1], 0, &none, 0, 4096, &data), -EIO); /* nothing exposed yet */
    ck_assert_int_eq(ic_expose(ic[0], mem, sizeof mem, &rg), 0);
    ck_assert_int_eq(ic_expose(ic[0], mem, sizeof mem, &other), -EBUSY);
    ck_assert_int_eq(ic_read(ic[1], 0, &rg, 4096, 4096, &data), 0);
    ck_assert_mem_eq(data, mem + 4096, 4096);
    ck_assert_int_eq(ic_read(ic[1], 0, &rg, 2 * 4096 + 1, 4096, &data), -ERANGE);
    ck_assert_int_eq(ic_read(ic[1], 0, &rg, UINT64_MAX - 10, 4096, &data), -ERANGE);
    ck_assert_int_eq(ic_read(ic[1], 0, &rg, 0, 4097, &data), -EINVAL); /* over a page */
    ck_assert_int_eq(ic_read(ic[1], 1, &rg, 0, 4096, &data), -EINVAL); /* from itself */
    struct ic_region bad = rg;
    bad.key ^= 1;
    ck_assert_int_eq(ic_read(ic[1], 0, &bad, 0, 4096, &data), -EIO);
    bad = rg;
    bad.addr += sizeof mem; /* the descriptor's own bounds hold; the owner's do not */
    ck_assert_int_eq(ic_read(ic[1], 0, &bad, 0, 4096, &data), -EIO);
    const struct ic_stats *st = ic_stats(ic[1]);
    ck_assert_uint_eq(st->reads, 1);
    ck_assert_uint_eq(st->read_rejected, 2);
    ck_assert_uint_eq(st->read_errors, 3);
    ic_close(ic[0]);
    ic_close(ic[1]);
}
END_TEST

#include "tests/unit/unit.h"

int main(void)
{
    Suite *s = suite_create("interconnect");
    TCase *t = tcase_create("pure");
    tcase_add_test(t, validation);
    tcase_add_test(t, type_registry);
    tcase_add_test(t, hostport);
    tcase_add_test(t, launchers);
    tcase_add_test(t, node_flags);
    tcase_add_test(t, join_mac);
    tcase_add_test(t, clock_estimate);
    tcase_add_test(t, one_sided_reads);
    suite_add_tcase(s, t);
    return run_suite(s);
}
