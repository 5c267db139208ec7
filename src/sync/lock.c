/*
 * lock.c — threading.Lock.
 *
 * state: bit 0 LOCKED, bit 1 WAITERS (the wait list may be non-empty).
 * Acquire is one CAS when free. Otherwise: spin a little (adaptive, bounded)
 * retrying the CAS, then take the list guard, set WAITERS with a CAS that
 * also proves the lock is still held, queue a waiter and park. Release is
 * one atomic AND; only if WAITERS was set does it take the guard and
 * unpark the oldest waiter, which then competes for the lock again
 * (barging, as pthread and Python allow: no convoys). A woken waiter that
 * loses re-queues at the front. WAITERS is cleared (under the guard) when
 * the list empties, so a set bit never means "nobody to wake" for long.
 * No lost wakeup: WAITERS is set only by a CAS that sees LOCKED, so the
 * holder's release sees it.
 */
#include "conc/sync.h"
#include "core/park.h"

#define LOCKED 1u
#define WAITERS 2u
#ifndef CONC__LOCK_BACKOFF_MAX
#define CONC__LOCK_BACKOFF_MAX 8u
#endif

int conc_lock_init(conc_lock_t *l)
{
    if (!l)
        return CONC_EINVAL;
    *l = (conc_lock_t)CONC_LOCK_INIT;
    return 0;
}

static inline bool conc__lock_try(conc_lock_t *l)
{
    unsigned s = conc__load(&l->state, RLX);
    while (!(s & LOCKED)) {
        if (atomic_compare_exchange_weak_explicit(CONC__A(&l->state), &s, s | LOCKED, ACQ, RLX))
            return true;
    }
    return false;
}

static bool conc__lock_spin(conc_lock_t *l, int64_t deadline)
{
    conc__spinner_t sp;
    conc__spin_begin(&sp, deadline);
    bool ok = false;
    unsigned backoff = 1; /* exponential: keeps the line with the holder */
    do {
        if (!(conc__load(&l->state, RLX) & LOCKED) && conc__lock_try(l)) {
            ok = true;
            break;
        }
        for (unsigned k = 1; k < backoff; k++)
            conc__cpu_relax();
        if (backoff < CONC__LOCK_BACKOFF_MAX)
            backoff <<= 1;
    } while (conc__spin_more(&sp));
    conc__spin_end(&sp, ok);
    return ok;
}

static void conc__lock_clear_waiters(conc__waitq_t *q, void *arg)
{
    conc_lock_t *l = arg;
    if (conc__waitq_empty(q))
        atomic_fetch_and_explicit(CONC__A(&l->state), ~WAITERS, RLX);
}

/* Returns 0 when acquired, CONC_ETIMEDOUT at the deadline. */
int conc__lock_acquire_slow(conc_lock_t *l, int64_t deadline)
{
    if (conc__lock_try(l))
        return 0;
    if (deadline == 0)
        return CONC_ETIMEDOUT;
    if (conc__lock_spin(l, deadline))
        return 0;
    conc__waiter_t w;
    conc__waiter_init(&w);
    w.spun = 1; /* we just spun on the primitive itself */
    bool requeue = false;
    for (;;) {
        conc__waitq_lock(&l->q);
        unsigned s = conc__load(&l->state, RLX);
        for (;;) {
            if (!(s & LOCKED)) {
                if (atomic_compare_exchange_weak_explicit(CONC__A(&l->state), &s, s | LOCKED, ACQ, RLX)) {
                    conc__waitq_unlock(&l->q);
                    return 0;
                }
            } else if ((s & WAITERS) ||
                       atomic_compare_exchange_weak_explicit(CONC__A(&l->state), &s, s | WAITERS, ACQ, RLX)) {
                break;
            }
        }
        w.state = CONC__W_WAITING;
        if (requeue)
            conc__waitq_push_front(&l->q, &w);
        else
            conc__waitq_push(&l->q, &w);
        conc__waitq_unlock(&l->q);
        int rc = conc__wait_queued(&l->q, &w, deadline, conc__lock_clear_waiters, l);
        if (rc != 0)
            return rc; /* CONC_ETIMEDOUT, or an interruption (green threads) */
        /* Woken by a release: compete for the lock. */
        if (conc__lock_spin(l, deadline))
            return 0;
        if (deadline != CONC__NO_DEADLINE && conc__now_ns() >= deadline)
            return CONC_ETIMEDOUT; /* it is held: its holder wakes the next */
        requeue = true;
    }
}

int(conc_lock_acquire)(conc_lock_t *l, bool blocking, double timeout)
{
    if (__builtin_expect(l != NULL && blocking && timeout == CONC_FOREVER, 1)) {
        unsigned exp = 0;
        if (atomic_compare_exchange_strong_explicit(CONC__A(&l->state), &exp, LOCKED, ACQ, RLX))
            return 0;
        return conc__lock_acquire_slow(l, CONC__NO_DEADLINE);
    }
    if (!l)
        return CONC_EINVAL;
    int64_t deadline;
    int r = conc__acquire_deadline(blocking, timeout, &deadline);
    if (r)
        return r;
    return conc__lock_acquire_slow(l, deadline);
}

void conc__lock_wake(conc_lock_t *l)
{
    conc__waitq_lock(&l->q);
    conc__waiter_t *w = conc__waitq_pop(&l->q);
    if (conc__waitq_empty(&l->q))
        atomic_fetch_and_explicit(CONC__A(&l->state), ~WAITERS, RLX);
    conc__waitq_unlock(&l->q);
    if (w)
        conc__unpark(w);
}

int(conc_lock_release)(conc_lock_t *l)
{
    if (!l)
        return CONC_EINVAL;
    unsigned old = LOCKED;
    if (__builtin_expect(atomic_compare_exchange_strong_explicit(CONC__A(&l->state), &old, 0u, REL, RLX), 1))
        return 0;
    old = atomic_fetch_and_explicit(CONC__A(&l->state), ~LOCKED, REL);
    if (!(old & LOCKED))
        return CONC_EPERM;
    conc__lock_wake(l);
    return 0;
}

bool conc_lock_locked(const conc_lock_t *l)
{
    return l && (conc__load(&l->state, RLX) & LOCKED);
}
