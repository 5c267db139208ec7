/*
 * lock.c — threading.Lock.
 *
 * state (the word the inlined fast paths CAS: 0 -> LOCKED, LOCKED -> 0):
 * LOCKED, ACT (a release must come here: someone to wake or hand the lock
 * to), TRACKED (lock debugging), RESERVED (free, but handed to one
 * waiter). Sleeping waiters leave no bit in it: ACT is set only while
 * waiters sleep with nobody in flight for them, so a running holder takes
 * and drops the lock at full speed beside any number of sleepers. The
 * waiters' bits live in q.reserved (ctl), read and written only under the
 * wait list's guard, and ACT is recomputed from them with every change:
 *   WAITERS  the list is not empty;
 *   CAND     one contender is "in flight": spinning on the lock, or woken
 *            by a release and about to run. At most one at a time, so a
 *            release wakes nobody while one is on its way (no wake storm);
 *   HANDOFF  the list holds a waiter that asks to be handed the lock;
 *   ACT  =   (WAITERS and not CAND) or HANDOFF.
 * No lost wakeup: ACT is set by a CAS on state that sees the lock held (a
 * CAS that finds it free takes it instead, or wakes), so the holder's
 * release CAS fails and comes here. While CAND is set the candidate itself
 * takes the lock, or, giving up, clears CAND (which sets ACT) the same way.
 *
 * Acquire: a CAS; then the slow path. A contender that finds no candidate
 * becomes it (OS threads on SMP): it polls the lock with exponential
 * backoff (one poll every ~1-2 us at most: the holder keeps its cache
 * line) for a bounded time, taking the lock when it sees it free
 * (barging: the running thread wins, as with pthread, no convoys). Every
 * other contender queues and sleeps at once (no spin, no yields: with
 * dozens of threads on a few CPUs they only steal the holder's time). A
 * candidate that runs out of time queues at the tail and sleeps. A release
 * with ACT pops the oldest waiter, makes it the candidate and unparks it
 * (a futex wake at most once per candidate's time, not per release); it
 * does nothing if the lock was taken again meanwhile (that holder's
 * release finds ACT in turn). Single-CPU machines never spin: a woken
 * candidate tries once. A green thread is never the candidate: woken, it
 * tries once on its own while ACT stays (its hub may be busy, even with
 * this lock, and could not run it: it must not hold the others back).
 *
 * Fairness: a candidate (or a woken green thread) that gives up FAIR_NS
 * or more after its first failed turn (OS threads: after a full spin of
 * its own, so at most one handoff per candidate's time), with nobody else
 * asking, queues at the head with HANDOFF instead; the next release sets
 * state to RESERVED, which no other acquire takes, pops it and unparks
 * it; it turns RESERVED into LOCKED. An asker that is the candidate keeps
 * CAND until then. A timed-out waiter takes itself off the list under the
 * guard (clearing HANDOFF and CAND if it had asked); one the release had
 * already dequeued treats the wait as satisfied, as park.h says.
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
#define ACT 2u      /* a release must come here (see above) */
#define TRACKED 4u  /* taken with lock debugging on: owner is the acquirer; release goes out of line */
#define RESERVED 8u /* free, handed to the waiter that asked (HANDOFF) */
#define HELD (LOCKED | RESERVED)
/* Bits 8-31 of state while RESERVED: the fork generation of the handoff
 * (GEN_SHIFT below). A fork that left the waiter it was handed to behind
 * leaves a stale RESERVED: the lock is free in the child (Python: only the
 * forking thread survives; a lock merely promised to another is nobody's),
 * which the slow path's entry makes true (reserved_drop_stale). */
#define RGEN_BITS 0xffffff00u

/* ctl (q.reserved, under the guard) */
#define WAITERS 1u
#define CAND 2u
#define HANDOFF 4u
#define CTL(l) ((l)->q.reserved)
/* Bits 8-31 of ctl: the fork generation (core/park.h) CAND and HANDOFF
 * were set in; of a waiter's data: the one it queued in. A fork that left
 * threads behind leaves their CAND / HANDOFF / waiters behind too: stale
 * ones count as absent (a ghost in the list is skipped, not woken), so a
 * child's waiters are not left waiting on a candidate that never runs. */
#define GEN_SHIFT 8
static inline unsigned gen_now(void) { return conc__load(&conc__fork_gen, RLX) & 0xffffffu; }
/* Guard held: forget a stale CAND / HANDOFF. */
static inline void ctl_clean(conc_lock_t *l)
{
    if ((CTL(l) & (CAND | HANDOFF)) && (CTL(l) >> GEN_SHIFT) != gen_now())
        CTL(l) &= ~(CAND | HANDOFF);
}
static inline void ctl_set(conc_lock_t *l, unsigned bits)
{
    CTL(l) = (CTL(l) & 0xffu) | bits | (gen_now() << GEN_SHIFT);
}
static inline bool waiter_stale(const conc__waiter_t *w) { return (w->data >> GEN_SHIFT) != gen_now(); }
/* A RESERVED state of an older fork generation: nobody here will take it. */
static inline bool reserved_stale(unsigned s) { return (s & RESERVED) && (s >> GEN_SHIFT) != gen_now(); }
/* Free a lock a fork left reserved for a thread that is gone (cold: only
 * in such a child, once; nothing sets a stale RESERVED again). */
static __attribute__((noinline, cold)) void reserved_drop_stale(conc_lock_t *l)
{
    unsigned s = conc__load(&l->state, RLX);
    while (reserved_stale(s) &&
           !atomic_compare_exchange_weak_explicit(CONC__A(&l->state), &s, s & ~(RESERVED | RGEN_BITS), RLX, RLX)) {
    }
}

/* How long a candidate polls before it sleeps (it is the only one). */
#ifndef CONC__LOCK_CAND_NS
#define CONC__LOCK_CAND_NS 50000
#endif
/* Most pauses between two polls of a candidate. */
#ifndef CONC__LOCK_BACKOFF_MAX
#define CONC__LOCK_BACKOFF_MAX 64u
#endif
/* A waiter that waited this long asks for a handoff. */
#ifndef CONC__LOCK_FAIR_NS
#define CONC__LOCK_FAIR_NS 1000000
#endif

/* w->data of a lock waiter: it asked for a handoff / was handed the lock /
 * holds CAND (an asker that was the candidate; a woken waiter the release
 * made the candidate) / an OS thread's (set by the waiter itself). */
enum { W_ASKS = 4, W_GRANTED = 8, W_CAND = 16, W_OS = 32 /* an OS thread's */ };

int conc_lock_init(conc_lock_t *l)
{
    if (!l)
        return CONC_EINVAL;
    *l = (conc_lock_t)CONC_LOCK_INIT;
    return 0;
}

static inline unsigned act_of(unsigned ctl)
{
    return (((ctl & WAITERS) && !(ctl & CAND)) || (ctl & HANDOFF)) ? ACT : 0;
}

/* Guard held: make ACT agree with ctl. Returns the state it replaced. */
static unsigned act_sync(conc_lock_t *l)
{
    unsigned want = act_of(CTL(l));
    unsigned s = conc__load(&l->state, RLX);
    while ((s & ACT) != want &&
           !atomic_compare_exchange_weak_explicit(CONC__A(&l->state), &s, (s & ~ACT) | want, memory_order_acq_rel, RLX)) {
    }
    return s;
}

static inline void ctl_waiters(conc_lock_t *l)
{
    if (conc__waitq_empty(&l->q))
        CTL(l) &= ~WAITERS;
    else
        CTL(l) |= WAITERS;
}

/* Take the lock if it is free, whatever ACT says. */
static inline bool lock_take(conc_lock_t *l)
{
    unsigned s = conc__load(&l->state, RLX);
    while (!(s & HELD)) {
        if (atomic_compare_exchange_weak_explicit(CONC__A(&l->state), &s, s | LOCKED, ACQ, RLX))
            return true;
    }
    return false;
}

/* The candidate polls until it takes the lock (true) or its time, the
 * deadline or an open timeout scope's is up (false). */
static bool cand_spin(conc_lock_t *l, conc__ctx_t *ctx, int64_t deadline)
{
    int64_t end = conc__now_ns() + CONC__LOCK_CAND_NS;
    if (!ctx->nointr)
        deadline = conc__park_deadline(ctx, deadline);
    if (end > deadline)
        end = deadline;
    unsigned backoff = 1, n = 0;
    for (;;) {
        if (!(conc__load(&l->state, RLX) & HELD) && lock_take(l))
            return true;
        for (unsigned k = 0; k < backoff; k++)
            conc__cpu_relax();
        if (backoff < CONC__LOCK_BACKOFF_MAX)
            backoff <<= 1;
        if ((++n & 3) == 0 && conc__now_ns() >= end)
            return false;
    }
}

/* Become the candidate if there is none. */
static bool cand_claim(conc_lock_t *l)
{
    conc__waitq_lock(&l->q);
    ctl_clean(l);
    bool ok = !(CTL(l) & CAND);
    if (ok) {
        ctl_set(l, CAND);
        act_sync(l);
    }
    conc__waitq_unlock(&l->q);
    return ok;
}

/* The candidate stops being one (it took the lock, or it leaves at its
 * deadline); the next release wakes a new one. */
static void cand_drop(conc_lock_t *l)
{
    conc__waitq_lock(&l->q);
    ctl_clean(l);
    CTL(l) &= ~CAND;
    unsigned s = act_sync(l);
    conc__waitq_unlock(&l->q);
    if (!(s & HELD) && (conc__load(&l->state, RLX) & ACT))
        conc__lock_wake(l); /* it is free: nobody else would see ACT */
}

typedef struct {
    conc_lock_t *l;
    conc__waiter_t *w;
} lock_wait_t;

/* Under the guard, after a timed-out waiter took itself off the list. */
static void lock_unqueued(conc__waitq_t *q, void *arg)
{
    lock_wait_t *lw = arg;
    (void)q;
    ctl_clean(lw->l);
    if (lw->w->data & W_ASKS)
        CTL(lw->l) &= ~(HANDOFF | ((lw->w->data & W_CAND) ? CAND : 0u));
    lw->w->data = 0;
    ctl_waiters(lw->l);
    act_sync(lw->l);
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
    if (__builtin_expect(conc__load(&l->state, RLX) & RESERVED, 0))
        reserved_drop_stale(l);
    if (lock_take(l))
        return 0;
    if (deadline == 0)
        return CONC_ETIMEDOUT;
    conc__ctx_t *ctx = conc__ctx();
    bool spin = !ctx->ops && conc__smp();
    bool cand = spin && cand_claim(l); /* holds CAND */
    bool woken = false;                 /* woken by a release without CAND (a green thread) */
    bool front = false;
    int64_t since = 0; /* the end of its first failed turn (FAIR_NS); no clock read before */
    conc__waiter_t w;
    conc__waiter_init(&w);
    w.obj = l;
    w.kind = CONC__WAIT_LOCK;
    lock_wait_t lw = {l, &w};
    for (;;) {
        bool ask = false;
        if (cand || woken) {
            if (cand && spin ? cand_spin(l, ctx, deadline) : lock_take(l)) {
                if (cand)
                    cand_drop(l);
                return 0;
            }
            int64_t now = conc__now_ns();
            if (deadline != CONC__NO_DEADLINE && now >= deadline) {
                if (cand)
                    cand_drop(l);
                else if ((conc__load(&l->state, ACQ) & (ACT | HELD)) == ACT)
                    conc__lock_wake(l); /* free, others waiting: pass the wake on */
                return CONC_ETIMEDOUT;
            }
            if (since == 0)
                since = now;
            ask = now - since >= CONC__LOCK_FAIR_NS;
        }
        conc__waitq_lock(&l->q);
        ctl_clean(l);
        if (ask && (CTL(l) & HANDOFF))
            ask = false; /* one asker at a time (a green one need not be the candidate) */
        w.state = CONC__W_WAITING;
        w.data = (ask ? W_ASKS : 0) | (ask && cand ? W_CAND : 0) | (ctx->ops ? 0 : W_OS) | (gen_now() << GEN_SHIFT);
        /* Asking, or first in line again (a deadlock-detection slice):
         * the head. Else the tail, a candidate too: it had its turn. */
        if (ask || front)
            conc__waitq_push_front(&l->q, &w);
        else
            conc__waitq_push(&l->q, &w);
        CTL(l) |= WAITERS;
        if (ask)
            ctl_set(l, HANDOFF); /* an asker that is the candidate stays it until handed the lock */
        else if (cand)
            CTL(l) &= ~CAND;
        /* Publish ACT with a CAS that sees the lock held; if it is free,
         * take it instead. */
        unsigned want = act_of(CTL(l)), s = conc__load(&l->state, RLX);
        bool took = false;
        for (;;) {
            if (!(s & HELD)) {
                if (atomic_compare_exchange_weak_explicit(CONC__A(&l->state), &s, s | LOCKED, ACQ, RLX)) {
                    took = true;
                    break;
                }
            } else if ((s & ACT) == want ||
                       atomic_compare_exchange_weak_explicit(CONC__A(&l->state), &s, (s & ~ACT) | want, memory_order_acq_rel, RLX)) {
                break;
            }
        }
        if (took) {
            conc__waitq_remove(&l->q, &w);
            lock_unqueued(&l->q, &lw);
            conc__waitq_unlock(&l->q);
            return 0;
        }
        conc__waitq_unlock(&l->q);
        bool asked_cand = ask && cand;
        cand = false;
        woken = false;
        front = false;
        /* A sleeper is woken only to be the candidate or to be handed the
         * lock: no spin and no yields before the futex (see park.c). An
         * asker waits for the release of a running holder: park's spin. */
        w.spun = ask ? 0 : CONC__SPUN_SLEEP;
        int64_t pdl = deadline;
#ifndef CONC_NO_OBSERVE
        /* Deadlock detection: park in slices, check the graph after each. */
        if (conc__obs_on(CONC__OBS_DEADLOCK) && !w.ctx->nointr)
            pdl = conc__deadlock_dl(conc__now_ns(), deadline);
#endif
        int rc = conc__wait_queued(&l->q, &w, pdl, lock_unqueued, &lw);
        if (rc != 0) {
            /* It left the list (and maybe CAND): if the lock is free with
             * others waiting, someone must see it. */
            if ((conc__load(&l->state, ACQ) & (ACT | HELD)) == ACT)
                conc__lock_wake(l);
            if (pdl == deadline || conc__park_interrupted(rc))
                return rc; /* CONC_ETIMEDOUT, or an interruption (green threads) */
            rc = conc__deadlock_check(l, CONC__WAIT_LOCK);
            if (rc)
                return rc;
            front = true; /* first in line again */
            continue;
        }
        if (w.data & W_GRANTED) {
            /* Handed over: RESERVED is ours alone; CAND too if it asked as the candidate. */
            conc__waitq_lock(&l->q);
            ctl_clean(l);
            if (asked_cand)
                CTL(l) &= ~CAND;
            unsigned want2 = act_of(CTL(l)), s2 = conc__load(&l->state, RLX);
            while (!atomic_compare_exchange_weak_explicit(CONC__A(&l->state), &s2,
                                                          (s2 & ~(RESERVED | RGEN_BITS | ACT)) | LOCKED | want2,
                                                          memory_order_acq_rel, RLX)) {
            }
            conc__waitq_unlock(&l->q);
            return 0;
        }
        /* Woken by a release: as the candidate (OS threads), or to try
         * once on its own (green threads). */
        cand = (w.data & W_CAND) != 0;
        woken = !cand;
    }
}

/* Test hook: called by the debug acquire just after it took the lock,
 * before the lock is marked TRACKED (tests/deadlock_test.c). */
void (*conc__lock_dbg_test_hook)(conc_lock_t *l);

void conc__lock_track(conc_lock_t *l, unsigned serial)
{
    if (__builtin_expect(conc__lock_dbg_test_hook != NULL, 0))
        conc__lock_dbg_test_hook(l);
    /* TRACKED marks l->owner as meaningful (the out-of-line release
     * clears it): an owner left by an acquire made with debugging off
     * is stale and must not be taken for the holder. So the owner is
     * written first and TRACKED published after it (release): whoever
     * sees TRACKED (acquire) sees this owner, never the stale one. Not
     * if the lock was released meanwhile (any thread may release a
     * Lock): then it stays untracked. */
    conc__store(&l->owner, serial, RLX);
    unsigned s = conc__load(&l->state, RLX);
    while ((s & (LOCKED | TRACKED)) == LOCKED &&
           !atomic_compare_exchange_weak_explicit(CONC__A(&l->state), &s, s | TRACKED, REL, RLX)) {
    }
}

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
    int rc = 0;
    if (!lock_take(l))
        rc = conc__lock_acquire_slow(l, deadline);
    if (rc == 0) {
        conc__lock_track(l, ctx->serial);
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
        if (lock_take(l))
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

/* A release found ACT (or a waiter found the lock free with ACT): hand
 * the lock to the asker, or wake the oldest waiter as the candidate. */
void conc__lock_wake(conc_lock_t *l)
{
    if ((conc__load(&l->state, RLX) & (ACT | HELD)) != ACT)
        return; /* nothing to do, or taken again: that holder's release finds ACT */
    conc__waitq_lock(&l->q);
    ctl_clean(l);
    conc__waiter_t *w = NULL;
    unsigned s = conc__load(&l->state, RLX);
    if (CTL(l) & HANDOFF) {
        for (w = l->q.head; w && !((w->data & W_ASKS) && w->obj == l && !waiter_stale(w)); w = w->next) {
        }
        if (w) {
            /* Reserve the lock for it, unless taken again meanwhile. */
            unsigned keep = CTL(l);
            conc__waitq_remove(&l->q, w);
            CTL(l) &= ~HANDOFF;
            ctl_waiters(l);
            unsigned want = act_of(CTL(l));
            bool ok = false;
            while (!(s & HELD)) {
                if (atomic_compare_exchange_weak_explicit(CONC__A(&l->state), &s,
                                                          (s & ~ACT) | RESERVED | want | (gen_now() << GEN_SHIFT),
                                                          memory_order_acq_rel, RLX)) {
                    ok = true;
                    break;
                }
            }
            if (ok) {
                w->data = W_GRANTED | (gen_now() << GEN_SHIFT);
            } else {
                conc__waitq_push_front(&l->q, w); /* back where it was: the holder's release hands it over */
                CTL(l) = keep;
                w = NULL;
            }
        } else {
            CTL(l) &= ~HANDOFF; /* nobody asks any more (never expected): wake as usual */
            act_sync(l);
            s = conc__load(&l->state, RLX);
        }
    }
    if (!(CTL(l) & HANDOFF) && !w && (s & ACT) && !(s & HELD)) {
        bool mine = false;
        while ((w = conc__waitq_pop(&l->q)) && (mine = w->obj == l && w->kind == CONC__WAIT_LOCK) && waiter_stale(w)) {
        } /* a ghost: its thread did not survive a fork */
        ctl_waiters(l);
        /* An OS thread becomes the one candidate in flight. A green thread
         * does not: its hub may be busy (even taking and dropping this
         * lock without parking), so it could not run to take its turn, and
         * ACT stays while others wait: the next release wakes the next one
         * (that green thread tries once and queues again). A condition's
         * waiter moved here competes on its own too. */
        if (w && mine && (w->data & W_OS)) {
            ctl_set(l, CAND);
            w->data |= W_CAND;
        }
        act_sync(l);
    }
    conc__waitq_unlock(&l->q);
    if (w)
        conc__unpark(w);
}

/* Under l->q's guard, after waiters were pushed (cond.c's wait morphing). */
void conc__lock_queued(conc_lock_t *l)
{
    ctl_clean(l);
    ctl_waiters(l);
    act_sync(l);
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
    old = atomic_fetch_and_explicit(CONC__A(&l->state), ~(LOCKED | TRACKED), memory_order_acq_rel);
    if (!(old & LOCKED))
        return CONC_EPERM;
    if (old & TRACKED)
        conc__lockdep_released(l); /* only the releaser's own held stack */
    if (old & ACT)
        conc__lock_wake(l);
    return 0;
}

bool conc_lock_locked(const conc_lock_t *l)
{
    if (!l)
        return false;
    unsigned s = conc__load(&l->state, RLX);
    return (s & HELD) && !reserved_stale(s);
}
