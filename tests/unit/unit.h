/* Shared by the Check unit tests: run one suite, exit status for the runner. */
#ifndef AMALGAM_TESTS_UNIT_H
#define AMALGAM_TESTS_UNIT_H

#include <check.h>
#include <stdlib.h>

static inline int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
