/* Unit tests for migration/'s routing table: moves advance the epoch,
 * announcements apply once whatever their order, bad ones are refused. */
#include <check.h>
#include <errno.h>

#include "migration/migration.h"
#include "tests/unit/unit.h"

START_TEST(moves_and_announcements)
{
    const uint8_t place[4] = {0, 1, 0, 1};
    struct vcpu_routes a, b;
    ck_assert_int_eq(routes_init(&a, 4, 2, place), 0);
    ck_assert_int_eq(routes_init(&b, 4, 2, place), 0);
    ck_assert_int_eq(routes_node_of(&a, 1), 1);
    int64_t e1 = routes_move(&a, 1, 0); /* node a moves vCPU 1 to node 0 */
    int64_t e2 = routes_move(&a, 1, 1); /* and back */
    ck_assert_int_eq(e1, 1);
    ck_assert_int_eq(e2, 2);
    /* b hears them out of order: the newer wins, the older is old news. */
    ck_assert_int_eq(routes_apply(&b, 2, 1, 1), 1);
    ck_assert_int_eq(routes_apply(&b, 1, 1, 0), 0);
    ck_assert_int_eq(routes_node_of(&b, 1), 1);
    ck_assert_int_eq(routes_apply(&b, 2, 1, 1), 0); /* twice: once */
    ck_assert_uint_eq(b.epoch, 2);
    /* A move of another vCPU at a later epoch applies. */
    ck_assert_int_eq(routes_apply(&b, 3, 2, 1), 1);
    ck_assert_int_eq(routes_node_of(&b, 2), 1);
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

int main(void)
{
    Suite *s = suite_create("migration");
    TCase *t = tcase_create("routes");
    tcase_add_test(t, moves_and_announcements);
    tcase_add_test(t, impossible_updates_are_refused);
    suite_add_tcase(s, t);
    return run_suite(s);
}
