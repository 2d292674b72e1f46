/* vcpu_state: what a vCPU is doing, as a pure state machine.
 *
 *   RUNNABLE --hlt--> HALTED --wake--> RUNNABLE
 *   RUNNABLE, HALTED --init--> WAIT_SIPI --sipi--> RUNNABLE
 *   RUNNABLE, HALTED, WAIT_SIPI --pause--> PAUSED --resume--> (as before)
 *   PAUSED --leave--> LEAVING --left--> GONE      (migrating away)
 *   GONE --arrive--> ARRIVING --arrived(S)--> S   (migrating here; S is
 *                                                  the state it left in)
 *
 * GONE is also where a vCPU placed on another node sits from the start:
 * created and parked, ready for a migration. An event a state does not
 * take is refused (-EINVAL) and changes nothing; a SIPI outside WAIT_SIPI
 * is ignored, as the SDM says; INIT and SIPI that arrive while PAUSED,
 * LEAVING or ARRIVING are refused with -EBUSY and stay latched in the
 * LAPIC until the vCPU runs again (or travel with it).
 *
 * Pure: the vCPU's lock serialises calls.
 */
#ifndef AMALGAM_VMM_VCPU_STATE_H
#define AMALGAM_VMM_VCPU_STATE_H

#include <stdbool.h>
#include <stdint.h>

enum vcpu_run_state {
    VCPU_RUNNABLE,
    VCPU_HALTED,
    VCPU_WAIT_SIPI, /* an AP after INIT: parked until a SIPI */
    VCPU_PAUSED,    /* stopped by the monitor or before a migration */
    VCPU_LEAVING,   /* its state is being saved and sent */
    VCPU_GONE,      /* runs on another node */
    VCPU_ARRIVING,  /* its state is being restored here */
    VCPU_STATE_COUNT
};

enum vcpu_event {
    VCPU_EV_HLT, VCPU_EV_WAKE, VCPU_EV_INIT, VCPU_EV_SIPI, VCPU_EV_PAUSE, VCPU_EV_RESUME,
    VCPU_EV_LEAVE, VCPU_EV_LEFT, VCPU_EV_ARRIVE, VCPU_EV_ARRIVED,
};

struct vcpu_sm {
    uint8_t state;
    uint8_t resume_to; /* PAUSED: where resume goes back to */
};

void vcpu_sm_init(struct vcpu_sm *s, enum vcpu_run_state initial);
/* arg: for VCPU_EV_ARRIVED, the state the vCPU left its old node in
 * (RUNNABLE, HALTED or WAIT_SIPI); ignored otherwise. 0, -EINVAL, -EBUSY. */
int vcpu_sm_step(struct vcpu_sm *s, enum vcpu_event e, enum vcpu_run_state arg);
/* Whether the vCPU thread may enter the guest. */
bool vcpu_sm_runs(const struct vcpu_sm *s);
const char *vcpu_state_name(enum vcpu_run_state s);

#endif
