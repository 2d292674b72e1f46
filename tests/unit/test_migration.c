/* Unit tests for migration/'s routing table: moves advance the epoch,
 * announcements apply once and in order whatever order they arrive in,
 * earlier epochs are answered from the history, bad ones are refused. */
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

int main(void)
{
    Suite *s = suite_create("migration");
    TCase *t = tcase_create("routes");
    tcase_add_test(t, moves_and_announcements);
    tcase_add_test(t, impossible_updates_are_refused);
    tcase_add_test(t, history_is_bounded);
    tcase_add_test(t, plans);
    suite_add_tcase(s, t);
    return run_suite(s);
}
