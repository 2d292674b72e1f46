/* The vCPU state machine (see vcpu_state.h). */
#include <errno.h>

#include "vmm/vcpu_state.h"

void vcpu_sm_init(struct vcpu_sm *s, enum vcpu_run_state initial)
{
    s->state = (uint8_t)initial;
    s->resume_to = (uint8_t)initial;
}

static bool settled(uint8_t st)
{
    return st == VCPU_RUNNABLE || st == VCPU_HALTED || st == VCPU_WAIT_SIPI;
}

int vcpu_sm_step(struct vcpu_sm *s, enum vcpu_event e, enum vcpu_run_state arg)
{
    uint8_t st = s->state, next = st;
    switch (e) {
    case VCPU_EV_HLT:
        if (st != VCPU_RUNNABLE)
            return -EINVAL;
        next = VCPU_HALTED;
        break;
    case VCPU_EV_WAKE:
        if (st != VCPU_HALTED)
            return -EINVAL;
        next = VCPU_RUNNABLE;
        break;
    case VCPU_EV_INIT:
        if (!settled(st))
            return st == VCPU_GONE ? -EINVAL : -EBUSY;
        next = VCPU_WAIT_SIPI;
        break;
    case VCPU_EV_SIPI:
        if (!settled(st))
            return st == VCPU_GONE ? -EINVAL : -EBUSY;
        if (st == VCPU_WAIT_SIPI)
            next = VCPU_RUNNABLE; /* elsewhere ignored, as on hardware */
        break;
    case VCPU_EV_PAUSE:
        if (st == VCPU_PAUSED)
            return 0;
        if (!settled(st))
            return -EINVAL;
        s->resume_to = st;
        next = VCPU_PAUSED;
        break;
    case VCPU_EV_RESUME:
        if (st != VCPU_PAUSED)
            return -EINVAL;
        next = s->resume_to;
        break;
    case VCPU_EV_LEAVE:
        if (st != VCPU_PAUSED)
            return -EINVAL;
        next = VCPU_LEAVING;
        break;
    case VCPU_EV_LEFT:
        if (st != VCPU_LEAVING)
            return -EINVAL;
        next = VCPU_GONE;
        break;
    case VCPU_EV_ARRIVE:
        if (st != VCPU_GONE)
            return -EINVAL;
        next = VCPU_ARRIVING;
        break;
    case VCPU_EV_ARRIVED:
        if (st != VCPU_ARRIVING || !settled((uint8_t)arg))
            return -EINVAL;
        next = (uint8_t)arg;
        break;
    default:
        return -EINVAL;
    }
    s->state = next;
    return 0;
}

bool vcpu_sm_runs(const struct vcpu_sm *s)
{
    return s->state == VCPU_RUNNABLE;
}

const char *vcpu_state_name(enum vcpu_run_state s)
{
    static const char *const names[VCPU_STATE_COUNT] = {
        "running", "halted", "waiting for SIPI", "paused", "leaving", "gone", "arriving"};
    return (unsigned)s < VCPU_STATE_COUNT ? names[s] : "invalid";
}
