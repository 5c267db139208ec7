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
#define SPIN 8u    /* a contender is active (spinning, or woken and not run yet): a release wakes nobody */
#ifndef CONC__LOCK_BACKOFF_MAX
#define CONC__LOCK_BACKOFF_MAX 64u
#endif
#ifndef CONC__LOCK_SPIN_POLLS
#define CONC__LOCK_SPIN_POLLS 16u
#endif
/* In a child forked while threads ran, a SPIN bit may belong to a thread
 * that is gone: waiters there sleep in slices of this and clear it. */
#define CONC__LOCK_ORPHAN_SLICE_NS 20000000

int conc_lock_init(conc_lock_t *l)
{
    if (!l)
        return CONC_EINVAL;
    *l = (conc_lock_t)CONC_LOCK_INIT;
    return 0;
}

/* Take the lock if it is free; the SPIN owner (own) gives SPIN up in the
 * same CAS. */
static inline bool conc__lock_try_as(conc_lock_t *l, bool own)
{
    unsigned s = conc__load(&l->state, RLX), keep = own ? ~SPIN : ~0u;
    while (!(s & LOCKED)) {
        if (atomic_compare_exchange_weak_explicit(CONC__A(&l->state), &s, (s | LOCKED) & keep, ACQ, RLX))
            return true;
    }
    return false;
}

static inline bool conc__lock_try(conc_lock_t *l)
{
    return conc__lock_try_as(l, false);
}

/* Give SPIN up without the lock (a timeout, an error): if waiters are
 * queued and nobody holds the lock, nobody else would wake one. */
static void conc__lock_spin_drop(conc_lock_t *l)
{
    unsigned old = atomic_fetch_and_explicit(CONC__A(&l->state), ~SPIN, memory_order_acq_rel);
    if ((old & (WAITERS | LOCKED)) == WAITERS)
        conc__lock_wake(l);
}

/* Spin for the lock. Only one contender spins at a time: it owns SPIN
 * (*own; a woken waiter is handed it by the release). A newcomer that
 * finds SPIN taken does not spin (returns false with *own unset: it
 * sleeps at once). The spin polls with reads that back off, so the
 * holder keeps its cache line between them. Returns true with the lock
 * held and SPIN given up. */
static bool conc__lock_spin(conc_lock_t *l, int64_t deadline, bool *own)
{
    conc__spinner_t sp;
    conc__spin_begin(&sp, deadline);
    if (sp.end == 0) /* no budget (a green thread, one CPU, spinning did not pay) */
        return conc__lock_try_as(l, *own);
    if (!*own) {
        unsigned s = conc__load(&l->state, RLX);
        for (;;) {
            if (!(s & LOCKED)) {
                if (atomic_compare_exchange_weak_explicit(CONC__A(&l->state), &s, s | LOCKED, ACQ, RLX))
                    return true;
            } else if (s & SPIN) {
                return false; /* someone spins already */
            } else if (atomic_compare_exchange_weak_explicit(CONC__A(&l->state), &s, s | SPIN, RLX, RLX)) {
                break;
            }
        }
        *own = true;
    }
    bool ok = false;
    unsigned backoff = 1, polls = 0;
    do {
        if (!(conc__load(&l->state, RLX) & LOCKED) && conc__lock_try_as(l, true)) {
            ok = true;
            break;
        }
        for (unsigned k = 1; k < backoff; k++)
            conc__cpu_relax();
        if (backoff < CONC__LOCK_BACKOFF_MAX)
            backoff <<= 1;
        if (++polls >= CONC__LOCK_SPIN_POLLS)
            break;
    } while (conc__spin_more(&sp));
    conc__spin_end(&sp, ok);
    if (ok)
        *own = false;
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
    bool own = false; /* this context owns SPIN */
    if (conc__lock_spin(l, deadline, &own))
        return 0;
    conc__waiter_t w;
    conc__waiter_init(&w);
    w.spun = 2; /* it spun, or another spins: sleep at once, no yields */
    w.obj = l;
    w.kind = CONC__WAIT_LOCK;
    bool requeue = false;
    for (;;) {
        conc__waitq_lock(&l->q);
        unsigned s = conc__load(&l->state, RLX), keep = own ? ~SPIN : ~0u;
        for (;;) {
            if (!(s & LOCKED)) {
                if (atomic_compare_exchange_weak_explicit(CONC__A(&l->state), &s, (s | LOCKED) & keep, ACQ, RLX)) {
                    conc__waitq_unlock(&l->q);
                    return 0;
                }
            } else if (((s | WAITERS) & keep) == s ||
                       atomic_compare_exchange_weak_explicit(CONC__A(&l->state), &s, (s | WAITERS) & keep, ACQ, RLX)) {
                break; /* queued with the lock held: its release wakes us (SPIN given up with it) */
            }
        }
        own = false;
        w.state = CONC__W_WAITING;
        w.data = 0;
        if (requeue)
            conc__waitq_push_front(&l->q, &w);
        else
            conc__waitq_push(&l->q, &w);
        conc__waitq_unlock(&l->q);
        int64_t pdl = deadline;
        bool orphans = conc__load(&conc__fork_orphans, RLX);
        if (__builtin_expect(orphans, 0)) {
            int64_t sl = conc__now_ns() + CONC__LOCK_ORPHAN_SLICE_NS;
            if (sl < pdl)
                pdl = sl;
        }
#ifndef CONC_NO_OBSERVE
        /* Deadlock detection: park in slices, check the graph after each. */
        if (conc__obs_on(CONC__OBS_DEADLOCK) && !w.ctx->nointr) {
            int64_t d = conc__deadlock_dl(conc__now_ns(), deadline);
            if (d < pdl)
                pdl = d;
        }
#endif
        int rc = conc__wait_queued(&l->q, &w, pdl, conc__lock_clear_waiters, l);
        if (rc != 0) {
            if (pdl == deadline || conc__park_interrupted(rc))
                return rc; /* CONC_ETIMEDOUT, or an interruption (green threads) */
            if (orphans) {
                /* A slice ran out: a SPIN left by a thread the fork did
                 * not copy would keep every release from waking us. */
                conc__lock_spin_drop(l);
                if (conc__lock_try(l))
                    return 0;
            }
#ifndef CONC_NO_OBSERVE
            if (conc__obs_on(CONC__OBS_DEADLOCK) && !w.ctx->nointr) {
                rc = conc__deadlock_check(l, CONC__WAIT_LOCK);
                if (rc)
                    return rc;
            }
#endif
            requeue = true; /* first in line again */
            continue;
        }
        /* Woken by a release, which handed us SPIN (w.data): compete. */
        own = w.data != 0;
        if (conc__lock_spin(l, deadline, &own))
            return 0;
        if (deadline != CONC__NO_DEADLINE && conc__now_ns() >= deadline) {
            if (own)
                conc__lock_spin_drop(l);
            return CONC_ETIMEDOUT; /* it is held: its holder wakes the next */
        }
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
        if (conc__lock_try(l))
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

/* Wake the first waiter, unless the lock is held (its release will) or a
 * contender owns SPIN (it takes the lock, whose release wakes, or queues
 * itself seeing it held). A lock waiter woken here is handed SPIN, so no
 * other release wakes another until it has run. */
void conc__lock_wake(conc_lock_t *l)
{
    conc__waitq_lock(&l->q);
    conc__waiter_t *w = NULL;
    unsigned s = conc__load(&l->state, ACQ);
    for (;;) {
        if (s & (LOCKED | SPIN))
            break;
        if (conc__waitq_empty(&l->q)) {
            if (s & WAITERS)
                atomic_fetch_and_explicit(CONC__A(&l->state), ~WAITERS, RLX);
            break;
        }
        conc__waiter_t *h = l->q.head;
        bool mine = h->kind == CONC__WAIT_LOCK && h->obj == l; /* not a condition's morphed waiter */
        unsigned n = s | (mine ? SPIN : 0u);
        if (h->next == NULL)
            n &= ~WAITERS;
        if (n == s || atomic_compare_exchange_weak_explicit(CONC__A(&l->state), &s, n, memory_order_acq_rel, ACQ)) {
            w = conc__waitq_pop(&l->q);
            w->data = mine;
            break;
        }
    }
    conc__waitq_unlock(&l->q);
    if (w)
        conc__unpark(w);
}

int(conc_lock_release)(conc_lock_t *l)
{
    if (!l)
        return CONC_EINVAL;
    if (conc__load(&l->state, RLX) & TRACKED)
        conc__store(&l->owner, 0u, RLX); /* no known holder once released */
    unsigned old = atomic_fetch_and_explicit(CONC__A(&l->state), ~(LOCKED | TRACKED), REL);
    if (!(old & LOCKED))
        return CONC_EPERM;
    if (old & TRACKED)
        conc__lockdep_released(l); /* only the releaser's own held stack */
    if ((old & (WAITERS | SPIN)) == WAITERS)
        conc__lock_wake(l);
    return 0;
}

bool conc_lock_locked(const conc_lock_t *l)
{
    return l && (conc__load(&l->state, RLX) & LOCKED);
}
