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
#include <stdio.h>

#include "sync/internal.h"

/* Lock debugging (conc/deadlock.h): while on, the inlined acquire of
 * conc/sync.h calls the function below, which records the acquirer's
 * serial in l->owner and tells lockdep.c; a lock taken with debugging
 * on carries TRACKED, so the inlined release (a CAS from exactly LOCKED)
 * fails and comes here too, lockdep hears of it and the owner word is
 * cleared — no test of a switch on the release path. TRACKED is what
 * makes the owner word trusted by the detector: a Lock taken with
 * debugging off (the inlined CAS) leaves a stale serial there. The slow
 * path records the serial always (one store, after a wait: the dump's
 * "held by", as far as known) and, with deadlock detection on, parks in
 * slices and checks the wait-for graph between them. */
CONC_API unsigned int conc__lock_hooks;

#define LOCKED 1u
#define WAITERS 2u
#define TRACKED 4u /* taken with lock debugging on: owner is the acquirer; release goes out of line */
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

static int lock_acquire_slow(conc_lock_t *l, int64_t deadline);

/* Returns 0 when acquired, CONC_ETIMEDOUT at the deadline (or
 * CONC_EDEADLK: detection found this wait closing a cycle). */
int conc__lock_acquire_slow(conc_lock_t *l, int64_t deadline)
{
    int rc = lock_acquire_slow(l, deadline);
#ifndef CONC_NO_OBSERVE
    if (rc == 0)
        conc__store(&l->owner, conc__ctx()->serial, RLX);
#endif
    return rc;
}

static int lock_acquire_slow(conc_lock_t *l, int64_t deadline)
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
    w.obj = l;
    w.kind = CONC__WAIT_LOCK;
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
        int64_t pdl = deadline;
#ifndef CONC_NO_OBSERVE
        /* Deadlock detection: park in slices, check the graph after each. */
        if (conc__obs_on(CONC__OBS_DEADLOCK) && !w.ctx->nointr)
            pdl = conc__deadlock_dl(conc__now_ns(), deadline);
#endif
        int rc = conc__wait_queued(&l->q, &w, pdl, conc__lock_clear_waiters, l);
        if (rc != 0) {
            if (pdl == deadline || conc__park_interrupted(rc))
                return rc; /* CONC_ETIMEDOUT, or an interruption (green threads) */
            rc = conc__deadlock_check(l, CONC__WAIT_LOCK);
            if (rc)
                return rc;
            requeue = true; /* first in line again */
            continue;
        }
        /* Woken by a release: compete for the lock. */
        if (conc__lock_spin(l, deadline))
            return 0;
        if (deadline != CONC__NO_DEADLINE && conc__now_ns() >= deadline)
            return CONC_ETIMEDOUT; /* it is held: its holder wakes the next */
        requeue = true;
    }
}

/* Test hook: called by the debug acquire just after it took the lock,
 * before the lock is marked TRACKED (tests/deadlock_test.c). */
void (*conc__lock_dbg_test_hook)(conc_lock_t *l);

/* The acquire with lock debugging on. */
static __attribute__((noinline)) int lock_acquire_dbg(conc_lock_t *l, int64_t deadline)
{
    conc__ctx_t *ctx = conc__ctx();
    if (conc__obs_on(CONC__OBS_DEADLOCK) && (conc__load(&l->state, ACQ) & (LOCKED | TRACKED)) == (LOCKED | TRACKED) &&
        conc__load(&l->owner, RLX) == ctx->serial && deadline != 0) {
        fprintf(stderr, "conc: deadlock: a Lock (%p) acquired again by its holder: CONC_EDEADLK\n", (void *)l);
        return CONC_EDEADLK;
    }
    bool order = conc__obs_on(CONC__OBS_LOCKORDER);
    unsigned exp = 0;
    int rc = 0;
    if (!atomic_compare_exchange_strong_explicit(CONC__A(&l->state), &exp, LOCKED, ACQ, RLX))
        rc = conc__lock_acquire_dl(l, deadline);
    if (rc == 0) {
        if (__builtin_expect(conc__lock_dbg_test_hook != NULL, 0))
            conc__lock_dbg_test_hook(l);
        /* TRACKED marks l->owner as meaningful (the out-of-line release
         * clears it): an owner left by an acquire made with debugging off
         * is stale and must not be taken for the holder. So the owner is
         * written first and TRACKED published after it (release): whoever
         * sees TRACKED (acquire) sees this owner, never the stale one. Not
         * if the lock was released meanwhile (any thread may release a
         * Lock): then it stays untracked. */
        conc__store(&l->owner, ctx->serial, RLX);
        unsigned s = conc__load(&l->state, RLX);
        while ((s & (LOCKED | TRACKED)) == LOCKED &&
               !atomic_compare_exchange_weak_explicit(CONC__A(&l->state), &s, s | TRACKED, REL, RLX)) {
        }
        if (order)
            conc__lockdep_acquired(l, CONC__WAIT_LOCK);
    }
    return rc;
}

int(conc_lock_acquire)(conc_lock_t *l, bool blocking, double timeout)
{
    if (__builtin_expect(l != NULL && blocking && timeout == CONC_FOREVER, 1)) {
        if (conc__obs_on(CONC__OBS_LOCKDBG))
            return lock_acquire_dbg(l, CONC__NO_DEADLINE);
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
    if (conc__obs_on(CONC__OBS_LOCKDBG))
        return lock_acquire_dbg(l, deadline);
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
    if (!(conc__load(&l->state, RLX) & TRACKED) &&
        __builtin_expect(atomic_compare_exchange_strong_explicit(CONC__A(&l->state), &old, 0u, REL, RLX), 1))
        return 0;
    if (conc__load(&l->state, RLX) & TRACKED)
        conc__store(&l->owner, 0u, RLX); /* no known holder once released */
    old = atomic_fetch_and_explicit(CONC__A(&l->state), ~(LOCKED | TRACKED), REL);
    if (!(old & LOCKED))
        return CONC_EPERM;
    if (old & TRACKED)
        conc__lockdep_released(l); /* only the releaser's own held stack */
    if (old & WAITERS)
        conc__lock_wake(l);
    return 0;
}

bool conc_lock_locked(const conc_lock_t *l)
{
    return l && (conc__load(&l->state, RLX) & LOCKED);
}
