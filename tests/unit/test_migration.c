/* Unit tests for migration/'s routing table: moves advance the epoch,
 * announcements apply once and in order whatever order they arrive in,
 * earlier epochs are answered from the history, bad ones are refused; and
 * for the affinity policy: it moves a vCPU to its data, once, learns what
 * a bad move cost and does not flap. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>

#include "migration/migration.h"
#include "tests/unit/unit.h"

START_TEST(moves_and_announcements)
{
    const uint8_t place[4] = {0, 1, 0, 1};
    struct vcpu_routes a, b;
    ck_assert_int_eq(routes_init(&a, 4, 2, place), 0);
    ck_assert_int_eq(routes_init(&b, 4, 2, place), 0);
    ck_assert_int_eq(routes_node_of(&a, 1), 1);
    int64_t e1 = routes_move(&a, 1, 0); /* node 0 moves vCPU 1 to node 0 */
    int64_t e2 = routes_move(&a, 1, 1); /* and back */
    ck_assert_int_eq(e1, 1);
    ck_assert_int_eq(e2, 2);
    /* b hears them out of order: the later waits for the earlier. */
    ck_assert_int_eq(routes_apply(&b, 2, 1, 1), -EAGAIN);
    ck_assert_uint_eq(b.epoch, 0);
    ck_assert_int_eq(routes_apply(&b, 1, 1, 0), 1);
    ck_assert_int_eq(routes_node_of(&b, 1), 0);
    ck_assert_int_eq(routes_apply(&b, 2, 1, 1), 1);
    ck_assert_int_eq(routes_node_of(&b, 1), 1);
    ck_assert_int_eq(routes_apply(&b, 2, 1, 1), 0); /* twice: once */
    ck_assert_uint_eq(b.epoch, 2);
    /* where vCPU 1 was at each epoch */
    ck_assert_int_eq(routes_node_at(&b, 1, 0), 1);
    ck_assert_int_eq(routes_node_at(&b, 1, 1), 0);
    ck_assert_int_eq(routes_node_at(&b, 1, 2), 1);
    ck_assert_int_eq(routes_node_at(&b, 1, 3), -EAGAIN);
    ck_assert_int_eq(routes_node_at(&b, 0, 2), 0); /* never moved */
}
END_TEST

START_TEST(history_is_bounded)
{
    const uint8_t place[2] = {0, 1};
    struct vcpu_routes r;
    ck_assert_int_eq(routes_init(&r, 2, 2, place), 0);
    for (int i = 0; i < 3 * ROUTES_HISTORY; i++)
        ck_assert_int_eq(routes_move(&r, 0, (i + 1) % 2), i + 1);
    ck_assert_int_eq(routes_node_at(&r, 0, r.epoch), 0); /* 48 moves: back on node 0 */
    ck_assert_int_eq(routes_node_at(&r, 0, r.epoch - 1), 1);
    ck_assert_int_eq(routes_node_at(&r, 0, r.epoch - ROUTES_HISTORY + 1), 1);
    ck_assert_int_eq(routes_node_at(&r, 0, 3), -ESTALE); /* beyond the history */
    ck_assert_int_eq(routes_node_at(&r, 1, 3), 1);
}
END_TEST

START_TEST(impossible_updates_are_refused)
{
    const uint8_t place[2] = {0, 1}, bad[2] = {0, 2};
    struct vcpu_routes r;
    ck_assert_int_eq(routes_init(&r, 2, 2, bad), -EINVAL);
    ck_assert_int_eq(routes_init(&r, 0, 2, place), -EINVAL);
    ck_assert_int_eq(routes_init(&r, 2, 2, place), 0);
    ck_assert_int_eq(routes_move(&r, 2, 0), -EINVAL);
    ck_assert_int_eq(routes_move(&r, 0, 2), -EINVAL);
    ck_assert_int_eq(routes_apply(&r, 0, 0, 1), -EINVAL); /* epoch 0 is the start */
    ck_assert_int_eq(routes_apply(&r, 5, 0, 9), -EINVAL);
    ck_assert_int_eq(routes_node_of(&r, 7), -EINVAL);
    ck_assert_uint_eq(r.epoch, 0);
}
END_TEST

START_TEST(plans)
{
    struct migration_step *st;
    size_t n;
    char err[128];
    ck_assert_int_eq(migration_plan_parse("# a plan\n0 0 1\n\n  250 1 0   # back\n250 2 1", &st,
                                          &n, err, sizeof err), 0);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(st[1].t_ms, 250);
    ck_assert_int_eq(st[1].vcpu, 1);
    ck_assert_int_eq(st[2].node, 1);
    free(st);
    ck_assert_int_eq(migration_plan_parse("10 0 1\n5 0 0\n", &st, &n, err, sizeof err), -EINVAL);
    ck_assert_str_eq(err, "line 2: expected TIME_MS VCPU NODE, times not going back (at most "
                          "100000 lines)");
    ck_assert_int_eq(migration_plan_parse("10 0\n", &st, &n, err, sizeof err), -EINVAL);
    ck_assert_int_eq(migration_plan_parse("10 0 1 9\n", &st, &n, err, sizeof err), -EINVAL);
    ck_assert_int_eq(migration_plan_parse("10 -1 1\n", &st, &n, err, sizeof err), -EINVAL);
    ck_assert_int_eq(migration_plan_parse("", &st, &n, err, sizeof err), 0);
    ck_assert_uint_eq(n, 0);
    free(st);
}
END_TEST

/* One window: each vCPU's faults by home node (2 nodes), then the
 * decision, with the move carried out on node_of. */
static int window(struct affinity *a, uint8_t *node_of, const uint32_t (*f)[2], int *v, int *to)
{
    for (int i = 0; i < a->nr_vcpus; i++)
        affinity_add(a, i, f[i]);
    int r = affinity_decide(a, node_of, v, to);
    if (r == 1)
        node_of[*v] = (uint8_t)*to;
    return r;
}

START_TEST(affinity_moves_a_vcpu_to_its_data)
{
    struct affinity *a = malloc(sizeof *a);
    struct affinity_cfg c = AFFINITY_DEFAULTS;
    ck_assert_int_eq(affinity_init(a, &c, 2, 2), 0);
    uint8_t node_of[2] = {1, 0}; /* each placed away from its data */
    const uint32_t f[2][2] = {{3000, 0}, {0, 2000}};
    int v = -1, to = -1;
    ck_assert_int_eq(window(a, node_of, f, &v, &to), 1);
    ck_assert_int_eq(v, 0); /* the larger gain first, one move a window */
    ck_assert_int_eq(to, 0);
    ck_assert_int_eq(window(a, node_of, (const uint32_t[2][2]){{0, 0}, {0, 2000}}, &v, &to), 1);
    ck_assert_int_eq(v, 1);
    ck_assert_int_eq(to, 1);
    int moves = 0;
    for (int w = 0; w < 1000; w++) /* settled: a little sharing on node 0's pages */
        moves += window(a, node_of, (const uint32_t[2][2]){{0, 0}, {10, 0}}, &v, &to);
    ck_assert_int_eq(moves, 0);
    ck_assert_int_eq(node_of[0], 0);
    ck_assert_int_eq(node_of[1], 1);
    free(a);
}
END_TEST

START_TEST(affinity_learns_a_bad_move)
{
    struct affinity *a = malloc(sizeof *a);
    struct affinity_cfg c = AFFINITY_DEFAULTS;
    ck_assert_int_eq(affinity_init(a, &c, 1, 2), 0);
    uint8_t node_of[1] = {1};
    int v, to, moves = 0;
    /* On node 1, working on node 1's pages (unseen) and faulting 40 a
     * window on node 0's: it moves, finds 3000 a window on node 1's pages
     * from there, goes back, and stays for a long time. */
    for (int w = 0; w < 300; w++) {
        uint32_t f[1][2] = {{node_of[0] == 1 ? 40 : 0, node_of[0] == 0 ? 3000 : 0}};
        moves += window(a, node_of, (const uint32_t(*)[2])f, &v, &to);
    }
    ck_assert_int_eq(node_of[0], 1);
    ck_assert_int_eq(moves, 2);
    free(a);
}
END_TEST

START_TEST(affinity_hysteresis)
{
    struct affinity *a = malloc(sizeof *a);
    struct affinity_cfg c = AFFINITY_DEFAULTS;
    ck_assert_int_eq(affinity_init(a, &c, 1, 3), 0);
    uint8_t node_of[1] = {0};
    int v, to;
    /* below min_faults */
    affinity_add(a, 0, (const uint32_t[3]){0, 15, 0});
    ck_assert_int_eq(affinity_decide(a, node_of, &v, &to), 0);
    /* node 1 serves 100, node 2 serves 80 that it would still fault on */
    affinity_add(a, 0, (const uint32_t[3]){0, 100, 80});
    ck_assert_int_eq(affinity_decide(a, node_of, &v, &to), 0);
    affinity_add(a, 0, (const uint32_t[3]){0, 200, 80});
    ck_assert_int_eq(affinity_decide(a, node_of, &v, &to), 1);
    ck_assert_int_eq(to, 1);
    node_of[0] = 1;
    /* dwell: not again for 2 windows, however strong the case */
    for (int w = 0; w < 2; w++) {
        affinity_add(a, 0, (const uint32_t[3]){0, 0, 5000});
        ck_assert_int_eq(affinity_decide(a, node_of, &v, &to), 0);
    }
    affinity_add(a, 0, (const uint32_t[3]){0, 0, 5000});
    ck_assert_int_eq(affinity_decide(a, node_of, &v, &to), 1);
    ck_assert_int_eq(to, 2);
    /* a vCPU the caller rules out (node out of range) never moves */
    node_of[0] = 255;
    for (int w = 0; w < 10; w++) {
        affinity_add(a, 0, (const uint32_t[3]){5000, 0, 0});
        ck_assert_int_eq(affinity_decide(a, node_of, &v, &to), 0);
    }
    ck_assert_int_eq(affinity_init(a, &c, 0, 2), -EINVAL);
    ck_assert_int_eq(affinity_init(a, &c, 2, AFFINITY_MAX_NODES + 1), -EINVAL);
    free(a);
}
END_TEST

START_TEST(affinity_options)
{
    struct affinity_cfg c;
    char err[200];
    ck_assert_int_eq(affinity_parse("", &c, err, sizeof err), 0);
    ck_assert_uint_eq(c.window_ms, 100);
    ck_assert_int_eq(affinity_parse("window=50,min=8,ratio=300,dwell=4", &c, err, sizeof err), 0);
    ck_assert_uint_eq(c.window_ms, 50);
    ck_assert_uint_eq(c.min_faults, 8);
    ck_assert_uint_eq(c.ratio_pct, 300);
    ck_assert_uint_eq(c.dwell, 4);
    const char *bad[] = {"window=0", "ratio=50", "speed=3", "min", "min=x", "min=5x",
                         "window=99999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_int_eq(affinity_parse(bad[i], &c, err, sizeof err), -EINVAL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("migration");
    TCase *t = tcase_create("routes");
    tcase_add_test(t, moves_and_announcements);
    tcase_add_test(t, impossible_updates_are_refused);
    tcase_add_test(t, history_is_bounded);
    tcase_add_test(t, plans);
    suite_add_tcase(s, t);
    TCase *p = tcase_create("affinity");
    tcase_add_test(p, affinity_moves_a_vcpu_to_its_data);
    tcase_add_test(p, affinity_learns_a_bad_move);
    tcase_add_test(p, affinity_hysteresis);
    tcase_add_test(p, affinity_options);
    suite_add_tcase(s, p);
    return run_suite(s);
}
