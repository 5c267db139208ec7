/*
 * event.c — threading.Event.
 *
 * state = generation << 2 | WAITERS << 1 | FLAG. set() on a clear event
 * bumps the generation and sets FLAG: with no waiters queued that is one
 * CAS; with WAITERS set it happens under the list guard, which also
 * detaches every queued waiter (they all return true). A waiter first
 * spins on the state word and returns true if FLAG is set or the
 * generation moved — so a waiter that was spinning when set() happened
 * also returns true even if clear() followed at once. Queuing re-checks
 * under the guard with a CAS, so set() cannot slip between the check and
 * the queueing.
 */
#include "sync/internal.h"

#define FLAG 1u
#define WAITERS 2u
#define GEN 4u

int conc_event_init(conc_event_t *e)
{
    if (!e)
        return CONC_EINVAL;
    *e = (conc_event_t)CONC_EVENT_INIT;
    return 0;
}

int conc_event_set(conc_event_t *e)
{
    if (!e)
        return CONC_EINVAL;
    unsigned s = conc__load(&e->state, RLX);
    for (;;) {
        if (s & FLAG)
            return 0;
        if (s & WAITERS)
            break;
        if (atomic_compare_exchange_weak_explicit(CONC__A(&e->state), &s, (s + GEN) | FLAG, REL, RLX))
            return 0;
    }
    conc__waitq_lock(&e->q);
    s = conc__load(&e->state, RLX);
    for (;;) {
        if (s & FLAG) {
            conc__waitq_unlock(&e->q);
            return 0;
        }
        if (atomic_compare_exchange_weak_explicit(CONC__A(&e->state), &s, ((s + GEN) | FLAG) & ~WAITERS,
                                                  REL, RLX))
            break;
    }
    conc__waiter_t *list = conc__waitq_take_all(&e->q);
    conc__waitq_unlock(&e->q);
    conc__unpark_list(list);
    return 0;
}

int conc_event_clear(conc_event_t *e)
{
    if (!e)
        return CONC_EINVAL;
    atomic_fetch_and_explicit(CONC__A(&e->state), ~FLAG, RLX);
    return 0;
}

bool conc_event_is_set(const conc_event_t *e)
{
    return e && (conc__load(&e->state, ACQ) & FLAG);
}

static inline bool conc__event_fired(unsigned s, unsigned gen0)
{
    return (s & FLAG) || (s >> 2) != gen0;
}

struct spin_arg {
    conc_event_t *e;
    unsigned gen0;
};

static bool spin_fired(void *p)
{
    struct spin_arg *a = p;
    return conc__event_fired(conc__load(&a->e->state, ACQ), a->gen0);
}

static void conc__event_clear_waiters(conc__waitq_t *q, void *arg)
{
    conc_event_t *e = arg;
    if (conc__waitq_empty(q))
        atomic_fetch_and_explicit(CONC__A(&e->state), ~WAITERS, RLX);
}

int conc_event_wait(conc_event_t *e, double timeout)
{
    if (!e)
        return CONC_EINVAL;
    unsigned s = conc__load(&e->state, ACQ);
    int64_t deadline = CONC__NO_DEADLINE;
    if (timeout != CONC_FOREVER) {
        int rc = conc__deadline(timeout, &deadline);
        if (rc)
            return rc;
    }
    if (s & FLAG)
        return 0;
    if (timeout <= 0) /* 0 polls; a negative timeout is already up */
        return CONC_ETIMEDOUT;
    unsigned gen0 = s >> 2;

    struct spin_arg a = {e, gen0};
    if (conc__spin_until(spin_fired, &a, deadline))
        return 0;

    conc__waiter_t w;
    conc__waiter_init(&w);
    w.spun = 1; /* we just spun on the primitive itself */
    w.obj = e;
    w.kind = CONC__WAIT_EVENT;
    conc__waitq_lock(&e->q);
    s = conc__load(&e->state, ACQ);
    for (;;) {
        if (conc__event_fired(s, gen0)) {
            conc__waitq_unlock(&e->q);
            return 0;
        }
        if ((s & WAITERS) ||
            atomic_compare_exchange_weak_explicit(CONC__A(&e->state), &s, s | WAITERS, ACQ, ACQ))
            break;
    }
    conc__waitq_push(&e->q, &w);
    conc__waitq_unlock(&e->q);
    return conc__wait_queued(&e->q, &w, deadline, conc__event_clear_waiters, e);
}
