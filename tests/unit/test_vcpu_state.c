/* Unit tests for the vCPU state machine (vmm/vcpu_state.c): every event in
 * every state against the table in vcpu_state.h, and the paths a vCPU
 * takes (boot of an AP, halt, pause, a migration out and back in). */
#include <check.h>
#include <errno.h>

#include "tests/unit/unit.h"
#include "vmm/vcpu_state.h"

#define R VCPU_RUNNABLE
#define H VCPU_HALTED
#define W VCPU_WAIT_SIPI
#define P VCPU_PAUSED
#define L VCPU_LEAVING
#define G VCPU_GONE
#define A VCPU_ARRIVING
#define NO (-EINVAL)
#define BUSY (-EBUSY)
#define NEVENTS 10

/* expect[state][event]: the state after it, or NO / BUSY. */
static const int expect[VCPU_STATE_COUNT][NEVENTS] = {
    /*        HLT WAKE INIT  SIPI  PAUSE RESUME LEAVE LEFT ARRIVE ARRIVED(R) */
    [R] = {H, NO, W, R, P, NO, NO, NO, NO, NO},
    [H] = {NO, R, W, H, P, NO, NO, NO, NO, NO},
    [W] = {NO, NO, W, R, P, NO, NO, NO, NO, NO},
    [P] = {NO, NO, BUSY, BUSY, P, 0 /* resume_to */, L, NO, NO, NO},
    [L] = {NO, NO, BUSY, BUSY, NO, NO, NO, G, NO, NO},
    [G] = {NO, NO, NO, NO, NO, NO, NO, NO, A, NO},
    [A] = {NO, NO, BUSY, BUSY, NO, NO, NO, NO, NO, R},
};

START_TEST(every_event_in_every_state)
{
    for (int st = 0; st < VCPU_STATE_COUNT; st++)
        for (int e = 0; e < NEVENTS; e++) {
            struct vcpu_sm s;
            vcpu_sm_init(&s, (enum vcpu_run_state)st);
            s.resume_to = VCPU_HALTED;
            int r = vcpu_sm_step(&s, (enum vcpu_event)e, VCPU_RUNNABLE);
            int want = st == P && e == VCPU_EV_RESUME ? H : expect[st][e];
            if (want < 0) {
                ck_assert_msg(r == want && s.state == st, "%s + event %d: got %d, state %s",
                              vcpu_state_name(st), e, r, vcpu_state_name(s.state));
            } else {
                ck_assert_msg(r == 0 && s.state == want, "%s + event %d: got %d, state %s",
                              vcpu_state_name(st), e, r, vcpu_state_name(s.state));
            }
        }
}
END_TEST

START_TEST(an_ap_boots_halts_and_migrates)
{
    struct vcpu_sm s;
    vcpu_sm_init(&s, VCPU_WAIT_SIPI);
    ck_assert(!vcpu_sm_runs(&s));
    ck_assert_int_eq(vcpu_sm_step(&s, VCPU_EV_SIPI, 0), 0);
    ck_assert(vcpu_sm_runs(&s));
    ck_assert_int_eq(vcpu_sm_step(&s, VCPU_EV_HLT, 0), 0);
    ck_assert_int_eq(vcpu_sm_step(&s, VCPU_EV_PAUSE, 0), 0);
    ck_assert_int_eq(vcpu_sm_step(&s, VCPU_EV_LEAVE, 0), 0);
    ck_assert_int_eq(vcpu_sm_step(&s, VCPU_EV_LEFT, 0), 0);
    ck_assert_str_eq(vcpu_state_name(s.state), "gone");
    /* ... and comes back halted, as it left. */
    ck_assert_int_eq(vcpu_sm_step(&s, VCPU_EV_ARRIVE, 0), 0);
    ck_assert_int_eq(vcpu_sm_step(&s, VCPU_EV_ARRIVED, VCPU_PAUSED), -EINVAL);
    ck_assert_int_eq(vcpu_sm_step(&s, VCPU_EV_ARRIVED, VCPU_HALTED), 0);
    ck_assert_int_eq(s.state, VCPU_HALTED);
    ck_assert_int_eq(vcpu_sm_step(&s, VCPU_EV_WAKE, 0), 0);
    ck_assert(vcpu_sm_runs(&s));
    ck_assert_str_eq(vcpu_state_name(VCPU_STATE_COUNT), "invalid");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("vcpu_state");
    TCase *t = tcase_create("vcpu_state");
    tcase_add_test(t, every_event_in_every_state);
    tcase_add_test(t, an_ap_boots_halts_and_migrates);
    suite_add_tcase(s, t);
    return run_suite(s);
}
