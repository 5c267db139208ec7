/*
 * green/local.h — the hub-local park helpers, inline (private). core/park.h
 * declares their contract (conc__park_presleep, conc__unpark_local); the
 * queue's hand-off path (queue.c) includes this to inline them, hub.c
 * exports them for everyone else.
 */
#ifndef CONC_GREEN_LOCAL_H
#define CONC_GREEN_LOCAL_H

#include "green/internal.h"
#include "trace/obs.h"

/* The caller, a green context, is about to queue w after its last
 * re-check. Nothing runs on this thread but the caller until its park
 * switches away, and interruptions are only posted by this thread (a
 * remote kill goes through the loop), so checking for one now is as good
 * as in the park, and the state can move to SLEEPING with a plain store
 * before w is visible to any waker. */
static inline bool conc__park_presleep_inline(conc__waiter_t *w)
{
    conc__ctx_t *ctx = w->ctx;
    if (!ctx->ops)
        return false;
    conc__gs_t *gs = ctx->green;
    if (gs->interrupt && !ctx->nointr)
        return false; /* the park delivers it (the loop context's standing one: CONC_EPERM) at once */
    if (!ctx->nointr)
        gs->last_intr = 0;
    conc__store(&w->state, (uint32_t)CONC__W_SLEEPING, RLX);
    w->spun = CONC__SPUN_ASLEEP;
    return true;
}

/* w is parked (or resumed by its timer or a kill, not yet run) by a green
 * context of this thread's hub other than the caller's. Nobody else can
 * touch its state word now: plain loads and stores do. */
static inline void conc__unpark_local_inline(conc__waiter_t *w)
{
    if (conc__obs_on(CONC__OBS_TRACE))
        conc__obs_unpark(w);
    conc__gs_t *gs = w->ctx->green;
    uint32_t old = conc__load(&w->state, RLX);
    conc__store(&w->state, (uint32_t)CONC__W_NOTIFIED, RLX);
    if (old == CONC__W_SLEEPING)
        conc__hub_ready(gs->hub, gs);
}

#endif
