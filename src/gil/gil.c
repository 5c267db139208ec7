/*
 * gil.c — conc_gil_t: CPython's "new GIL" (3.2+) on conc's park layer.
 *
 * State, all under the wait list's guard (g->q.guard) except the relaxed
 * reads of the fast paths:
 *   holder        the holding context's id (conc__ctx_id), 0 when free;
 *   switches      bumped on every change of holder (CPython's
 *                 switch_number);
 *   drop_request  set by a waiter that waited a whole interval without
 *                 seeing a switch; cleared on every hand-off and release;
 *   asked_ns      since when the oldest waiter has been asking, counted
 *                 from its arrival or from the last switch, whichever is
 *                 later (the interval restarts at a switch, as CPython's
 *                 waiters restart theirs when switch_number moved); 0 when
 *                 nobody waits. The holder's check compares it with the
 *                 clock itself (every 16th check while someone waits), so
 *                 a hand-off needs one wake-up (the new holder's), not two
 *                 (the waiter's timer, then the hand-off) as in CPython.
 * Invariant: holder == 0 implies the list is empty (a release with
 * waiters hands the GIL to the oldest instead of freeing it), so a taker
 * that finds holder == 0 under the guard may take it without barging past
 * anyone.
 *
 * Waiting: queue a waiter (FIFO) and park in steps of one switch interval.
 * Woken by a release, the waiter already is the holder (direct hand-off:
 * the releaser wrote holder = waiter's context before unparking it). A
 * step that times out with the waiter still queued compares `switches`
 * with the value it saw at the step's start: unchanged means the holder
 * kept the GIL for a whole interval while we asked, so it sets
 * drop_request (CPython's SET_GIL_DROP_REQUEST) and from then on sleeps
 * until handed the GIL (the holder's check also follows asked_ns, which
 * restarts at each switch, so no further ticks are needed); changed
 * means someone else got it meanwhile: another step.
 * The wait's own deadline, a kill or a Timeout scope removes the waiter;
 * if a releaser dequeued it first, the GIL is ours and the wait succeeds
 * (the interruption is re-armed for the next blocking call, as every park
 * user does).
 *
 * conc_gil_check is the eval breaker: relaxed loads of drop_request and
 * asked_ns (and the holder, to refuse a non-holder); when the request is
 * set, or asked_ns is an interval old (the clock is read on every 16th
 * check while someone waits), release (to the oldest waiter) and take
 * again from the tail.
 * Because the hand-off is direct, the dropping thread cannot win the GIL
 * back before the requester ran: CPython's FORCE_SWITCHING, for free.
 */
#include "conc/gil.h"

#include <math.h>

#include "core/observe.h"
#include "core/park.h"

#define GIL_DEFAULT_NS 5000000
#define GIL_MIN_NS 1000

int conc_gil_init(conc_gil_t *g)
{
    if (!g)
        return CONC_EINVAL;
    *g = (conc_gil_t)CONC_GIL_INIT;
    return 0;
}

static int64_t gil_interval(const conc_gil_t *g)
{
    int64_t ns = conc__load(&g->interval_ns, RLX);
    return ns > 0 ? ns : GIL_DEFAULT_NS;
}

/* Take g for the calling context `me` by `deadline` (0: try once). */
static int gil_take(conc_gil_t *g, uintptr_t me, int64_t deadline)
{
    if (conc__load(&g->holder, RLX) == me)
        return CONC_EDEADLK;
    conc__waitq_lock(&g->q);
    if (g->holder == 0) {
        conc__store(&g->holder, me, RLX);
        conc__store(&g->switches, g->switches + 1, RLX);
        conc__store(&g->drop_request, 0u, RLX);
        conc__waitq_unlock(&g->q);
        return 0;
    }
    if (deadline == 0) {
        conc__waitq_unlock(&g->q);
        return CONC_ETIMEDOUT;
    }
    conc__waiter_t w;
    conc__waiter_init(&w);
    w.spun = 1; /* waits last about an interval: do not burn a CPU on them */
    /* ... nor yield it: an OS thread sleeps on the futex at once (the state
     * machine of park.c: SLEEPING means the waker issues a futex wake). A
     * thread that sits in sched_yield when the GIL is handed to it is
     * runnable but not running, and on a loaded machine may wait a whole
     * time slice for a CPU; a futex wake-up gets the scheduler's wake-up
     * preference instead. Green threads park through their hub as usual. */
    bool sleep_now = w.ctx->ops == NULL;
    if (sleep_now)
        w.state = CONC__W_SLEEPING;
    w.obj = g;
    w.kind = CONC__WAIT_OTHER;
    if (conc__waitq_empty(&g->q))
        conc__store(&g->asked_ns, conc__now_ns(), RLX);
    conc__waitq_push(&g->q, &w);
    unsigned long seen = g->switches;
    conc__waitq_unlock(&g->q);

    /* One interval, then set the drop request and sleep until handed the
     * GIL (or the deadline): the holder's check follows asked_ns itself,
     * so ticking on (CPython's waiters wake every interval) would only
     * take CPU from the holder. */
    int64_t interval = gil_interval(g);
    bool asked = false;
    for (;;) {
        int64_t step = asked ? deadline : conc__now_ns() + interval;
        if (step > deadline)
            step = deadline;
        int rc = conc__park(&w, step);
        if (rc == 0)
            return 0; /* handed over: holder == me */
        bool intr = conc__park_interrupted(rc);
        conc__waitq_lock(&g->q);
        if (!w.queued) {
            /* A release dequeued us first: the GIL is ours. */
            conc__waitq_unlock(&g->q);
            conc__park_settle(&w);
            conc__park_rearm(&w);
            return 0;
        }
        if (intr || (deadline != CONC__NO_DEADLINE && conc__now_ns() >= deadline)) {
            conc__waitq_remove(&g->q, &w);
            if (conc__waitq_empty(&g->q))
                conc__store(&g->asked_ns, (int64_t)0, RLX);
            conc__waitq_unlock(&g->q);
            return rc;
        }
        /* A whole interval without a switch: ask the holder to drop. */
        if (g->switches == seen) {
            conc__store(&g->drop_request, 1u, RLX);
            asked = true;
        }
        seen = g->switches;
        /* still queued: nobody else touched it */
        w.state = sleep_now ? CONC__W_SLEEPING : CONC__W_WAITING;
        conc__waitq_unlock(&g->q);
    }
}

/* Release g held by me: to the oldest waiter if any. Returns 1 when it
 * was handed to someone, 0 when freed, CONC_EPERM. */
static int gil_give(conc_gil_t *g, uintptr_t me)
{
    conc__waitq_lock(&g->q);
    if (g->holder != me) {
        conc__waitq_unlock(&g->q);
        return CONC_EPERM;
    }
    conc__waiter_t *w = conc__waitq_pop(&g->q);
    conc__store(&g->holder, w ? (uintptr_t)w->ctx : (uintptr_t)0, RLX);
    if (w)
        conc__store(&g->switches, g->switches + 1, RLX);
    conc__store(&g->drop_request, 0u, RLX);
    /* the next waiter's interval starts now (or nobody waits) */
    conc__store(&g->asked_ns, conc__waitq_empty(&g->q) ? (int64_t)0 : conc__now_ns(), RLX);
    conc__waitq_unlock(&g->q);
    if (w)
        conc__unpark(w); /* it wakes as the holder */
    return w != NULL;
}

/* Take g whatever happens: no deadline, not cut short (conc's own hold). */
static int gil_take_hold(conc_gil_t *g, uintptr_t me)
{
    conc__ctx_t *ctx = conc__ctx();
    ctx->nointr++;
    int rc = gil_take(g, me, CONC__NO_DEADLINE);
    ctx->nointr--;
    return rc;
}

int conc_gil_acquire(conc_gil_t *g, double timeout)
{
    if (!g)
        return CONC_EINVAL;
    int64_t deadline = CONC__NO_DEADLINE;
    if (timeout != CONC_FOREVER) {
        int rc = conc__deadline_strict(timeout, &deadline);
        if (rc)
            return rc;
    }
    return gil_take(g, conc__ctx_id(), deadline);
}

int conc_gil_release(conc_gil_t *g)
{
    if (!g)
        return CONC_EINVAL;
    int rc = gil_give(g, conc__ctx_id());
    return rc < 0 ? rc : 0;
}

int conc_gil_check(conc_gil_t *g)
{
    if (!g)
        return CONC_EINVAL;
    uintptr_t me = conc__ctx_id();
    if (__builtin_expect(!conc__load(&g->drop_request, RLX), 1)) {
        int64_t asked = conc__load(&g->asked_ns, RLX);
        if (__builtin_expect(asked == 0, 1))
            return conc__load(&g->holder, RLX) == me ? 0 : CONC_EPERM;
        if (conc__load(&g->holder, RLX) != me)
            return CONC_EPERM;
        unsigned t = conc__load(&g->ticks, RLX) + 1;
        conc__store(&g->ticks, t, RLX);
        if ((t & 15) != 0 || conc__now_ns() - asked < gil_interval(g))
            return 0;
    }
    int handed = gil_give(g, me);
    if (handed < 0)
        return handed;
    gil_take_hold(g, me);
    return handed;
}

int conc_gil_begin_allow(conc_gil_t *g)
{
    return conc_gil_release(g);
}

int conc_gil_end_allow(conc_gil_t *g)
{
    if (!g)
        return CONC_EINVAL;
    return gil_take_hold(g, conc__ctx_id());
}

int conc_gil_setswitchinterval(conc_gil_t *g, double seconds)
{
    if (!g || !(seconds > 0) || isinf(seconds))
        return CONC_EINVAL;
    double ns = seconds * 1e9;
    int64_t v = ns < GIL_MIN_NS ? GIL_MIN_NS : ns > 1e17 ? (int64_t)1e17 : (int64_t)ns;
    conc__store(&g->interval_ns, v, RLX);
    return 0;
}

double conc_gil_getswitchinterval(const conc_gil_t *g)
{
    if (!g)
        return NAN;
    return (double)gil_interval(g) * 1e-9;
}

bool conc_gil_held(const conc_gil_t *g)
{
    return g && conc__load(&g->holder, RLX) == conc__ctx_id();
}

unsigned long conc_gil_switches(const conc_gil_t *g)
{
    return g ? conc__load(&g->switches, RLX) : 0;
}
