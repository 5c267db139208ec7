/*
 * psync.c — process-shared Lock, RLock, Semaphore/BoundedSemaphore, Event.
 *
 * Each is a few 32-bit words in shared memory and nothing else: no
 * pointers, no wait lists. Blocking is a shared (not private) futex wait on
 * the word that changes, after a short adaptive spin. Every object counts
 * its sleepers in a second word (incremented before the futex wait; the
 * kernel orders that before its read of the word); a releaser changes the
 * word with a seq_cst store, reads the count (seq_cst) and calls futex_wake
 * only if it is nonzero. Either the sleeper's count is seen by the
 * releaser, or the sleeper's futex_wait sees the changed word and does not
 * sleep, so no wakeup is lost. A sleeper killed while asleep leaves the
 * count too high: that only costs extra wake calls.
 *
 * Lock word = holder pid, RLock word = owner thread id (0 free), each
 * beside a tag naming that incarnation of the id (the holder's pidfs
 * inode, else start time: common.c), the pair one 64-bit unit. Acquire is
 * one 64-bit CAS from 0. A waiter sleeps at most CONC__IPC_CHECK_NS at a
 * time; each time such a sleep runs out with the same pair, it asks
 * whether that holder still lives (pidfd_open + the inode + a poll for
 * exit; /proc on old kernels); if not (gone, zombie, or the id reused by
 * another process), it takes the lock over with a CAS from that exact pair
 * (so one waiter wins), counts the recovery and returns CONC_EOWNERDEAD.
 * So a takeover comes at most one period (50 ms) after the death, pid
 * reuse or not. The Lock stores a pid, not a thread id, because any
 * thread may release a Lock: only the death of the whole holding process
 * frees it. The words are shared with peers that may be hostile: each is
 * read once per decision, and no value of them can make a call touch
 * memory outside the object or spin without bound.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <stdio.h>

#include "ipc/internal.h"

#define SC memory_order_seq_cst
#define RLXO memory_order_relaxed
#define ACQO memory_order_acquire

/* --------------------------------------------------------- owner words
 * An owner word is the pair (id, tag) at &word, one aligned 64-bit unit:
 * the id half is the futex word, the tag tells that process (thread) from
 * a later one with the same id. It is taken and released as a whole. */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define OWNER(id, tag) ((uint64_t)(id) << 32 | (uint32_t)(tag))
#define OWNER_ID(v) ((uint32_t)((v) >> 32))
#define OWNER_TAG(v) ((uint32_t)(v))
#else
#define OWNER(id, tag) ((uint64_t)(tag) << 32 | (uint32_t)(id))
#define OWNER_ID(v) ((uint32_t)(v))
#define OWNER_TAG(v) ((uint32_t)((v) >> 32))
#endif
#define PAIR(word) ((_Atomic uint64_t *)(void *)(word))

_Static_assert(sizeof(conc_plock_t) == 16 && _Alignof(conc_plock_t) == 8, "plock layout");
_Static_assert(sizeof(conc_prlock_t) == 24 && _Alignof(conc_prlock_t) == 8, "prlock layout");

typedef struct {
    uint32_t *word;
    uint64_t me;
} conc__ptry_t;

static bool conc__ptry(void *arg)
{
    conc__ptry_t *t = arg;
    uint64_t exp = 0;
    if (atomic_load_explicit(CONC__IA(t->word), RLXO) != 0)
        return false;
    return atomic_compare_exchange_strong_explicit(PAIR(t->word), &exp, t->me, ACQO, RLXO);
}

/* Take the owner pair at word from free to me. Returns 0, CONC_EOWNERDEAD
 * (taken over from a holder that ended without releasing), CONC_ETIMEDOUT
 * or an interruption (CONC_EKILLED, a Timeout scope's CONC_ETIMEDOUT: the
 * lock if it is free by then, else nothing taken). thread: the ids are
 * thread ids (RLock). */
static int conc__pword_wait(uint32_t *word, uint32_t *sleepers, uint32_t *recoveries, uint64_t me,
                            bool thread, int64_t deadline);
static int conc__pword_lock(uint32_t *word, uint32_t *sleepers, uint32_t *recoveries, uint64_t me,
                            bool thread, int64_t deadline)
{
    conc__ptry_t t = {word, me};
    if (conc__ptry(&t))
        return 0;
    if (deadline == 0)
        return CONC_ETIMEDOUT;
    if (conc__ipc_spin(conc__ptry, &t, deadline))
        return 0;
#ifndef CONC_NO_OBSERVE
    /* the dump and the detector say "shared Lock" / "shared RLock" */
    conc__wait_label(word, thread ? CONC__WAIT_SHARED_RLOCK : CONC__WAIT_SHARED_LOCK);
    int rc = conc__pword_wait(word, sleepers, recoveries, me, thread, deadline);
    conc__wait_label(NULL, 0);
    return rc;
#else
    return conc__pword_wait(word, sleepers, recoveries, me, thread, deadline);
#endif
}

static int conc__pword_wait(uint32_t *word, uint32_t *sleepers, uint32_t *recoveries, uint64_t me,
                            bool thread, int64_t deadline)
{
    conc__ptry_t t = {word, me};
#ifndef CONC_NO_OBSERVE
    int64_t dchk = 0; /* deadlock detection: the next check (0: none yet) */
#endif
    for (;;) {
        /* One read of the pair; only the copy is used below. */
        uint64_t v = atomic_load_explicit(PAIR(word), RLXO);
        if (OWNER_ID(v) == 0) { /* free (or a peer left a stray tag: free too) */
            if (atomic_compare_exchange_strong_explicit(PAIR(word), &v, me, ACQO, RLXO))
                return 0;
            continue;
        }
        uint32_t s = OWNER_ID(v);
        int64_t now = conc__now_ns();
        if (deadline != CONC__NO_DEADLINE && now >= deadline)
            return CONC_ETIMEDOUT;
        int64_t wake = now + CONC__IPC_CHECK_NS;
#ifndef CONC_NO_OBSERVE
        /* Detection on: sleep in slices, and check the wait-for graph
         * after each (a holder of this process is found in shlock.c's
         * side table, never through the shared word alone). */
        if (conc__obs_on(CONC__OBS_DEADLOCK) && !conc__ctx()->nointr) {
            if (dchk && now >= dchk) {
                int d = conc__deadlock_check(word, thread ? CONC__WAIT_SHARED_RLOCK : CONC__WAIT_SHARED_LOCK);
                if (d)
                    return d;
                dchk = 0;
            }
            if (!dchk)
                dchk = now + conc__deadlock_slice();
            if (dchk < wake)
                wake = dchk;
        }
#endif
        bool check = wake < deadline;
        int r = conc__pwait(word, sleepers, s, check ? wake : deadline);
        if (conc__is_cut(r)) {
            /* A kill or a Timeout scope: the lock if it is free now, else
             * the interruption. */
            conc__cut_t cut = conc__cut_save(r);
            if (conc__ptry(&t)) {
                conc__cut_rearm(&cut);
                return 0;
            }
            return r;
        }
        if (r == CONC_ETIMEDOUT && atomic_load_explicit(PAIR(word), RLXO) == v &&
            !conc__ipc_holder_alive((pid_t)s, OWNER_TAG(v), UINT32_MAX, thread)) {
            /* The holder ended without releasing (or its id names another
             * process now): take over from that exact pair, so one waiter
             * wins. */
            if (atomic_compare_exchange_strong_explicit(PAIR(word), &v, me, ACQO, RLXO)) {
                atomic_fetch_add_explicit(CONC__IA(recoveries), 1u, RLXO);
                return CONC_EOWNERDEAD;
            }
        }
    }
}

static void conc__pword_unlock(uint32_t *word, uint32_t *sleepers)
{
    atomic_store_explicit(PAIR(word), (uint64_t)0, SC);
    conc__pwake(word, sleepers, 1);
}

static inline uint64_t conc__plock_me(void)
{
    return OWNER((uint32_t)conc__ipc_pid(), conc__ipc_my_tag(false));
}

static inline uint64_t conc__prlock_me(void)
{
    return OWNER((uint32_t)conc__ipc_tid(), conc__ipc_my_tag(true));
}

/* ---------------------------------------------------------------- Lock */

int conc_plock_init(conc_plock_t *l)
{
    if (!l)
        return CONC_EINVAL;
    *l = (conc_plock_t)CONC_PLOCK_INIT;
    return 0;
}

int conc_plock_new(conc_plock_t **out)
{
    if (!out)
        return CONC_EINVAL;
    return conc_shared_alloc(sizeof(conc_plock_t), (void **)out);
}

/* The acquire with lock debugging on: a second acquire by the context
 * that holds it is CONC_EDEADLK at once (detection on), and the holder
 * goes into this process's side table (observe/shlock.c). */
static __attribute__((noinline)) int plock_acquire_dbg(conc_plock_t *l, int64_t deadline)
{
    uint64_t me = conc__plock_me();
    if (conc__obs_on(CONC__OBS_DEADLOCK) && deadline != 0 && conc__shlock_mine(l, me)) {
        fprintf(stderr, "conc: deadlock: a shared Lock (%p) acquired again by its holder: CONC_EDEADLK\n",
                (void *)l);
        return CONC_EDEADLK;
    }
    int rc = conc__pword_lock(&l->word, &l->sleepers, &l->recoveries, me, false, deadline);
    if (rc == 0 || rc == CONC_EOWNERDEAD)
        conc__shlock_acquired(l, CONC__WAIT_SHARED_LOCK, me);
    return rc;
}

int conc_plock_acquire(conc_plock_t *l, bool blocking, double timeout)
{
    if (!l || ((uintptr_t)l & 7))
        return CONC_EINVAL;
    int64_t deadline;
    int rc = conc__acquire_deadline_lenient(blocking, timeout, &deadline); /* SemLock: negative is 0 */
    if (rc)
        return rc;
    if (conc__obs_on(CONC__OBS_LOCKDBG))
        return plock_acquire_dbg(l, deadline);
    return conc__pword_lock(&l->word, &l->sleepers, &l->recoveries, conc__plock_me(), false, deadline);
}

int conc_plock_release(conc_plock_t *l)
{
    if (!l || ((uintptr_t)l & 7))
        return CONC_EINVAL;
    if (conc__obs_on(CONC__OBS_LOCKDBG))
        conc__shlock_released(l); /* before the word is free for another acquirer */
    uint64_t old = atomic_exchange_explicit(PAIR(&l->word), (uint64_t)0, SC);
    if (OWNER_ID(old) == 0)
        return CONC_EPERM;
    conc__pwake(&l->word, &l->sleepers, 1);
    return 0;
}

bool conc_plock_locked(const conc_plock_t *l)
{
    return l && atomic_load_explicit(CONC__IA(&l->word), RLXO) != 0;
}

unsigned conc_plock_recoveries(const conc_plock_t *l)
{
    return l ? atomic_load_explicit(CONC__IA(&l->recoveries), RLXO) : 0;
}

/* --------------------------------------------------------------- RLock */

int conc_prlock_init(conc_prlock_t *r)
{
    if (!r)
        return CONC_EINVAL;
    *r = (conc_prlock_t)CONC_PRLOCK_INIT;
    return 0;
}

int conc_prlock_new(conc_prlock_t **out)
{
    if (!out)
        return CONC_EINVAL;
    return conc_shared_alloc(sizeof(conc_prlock_t), (void **)out);
}

static inline bool conc__prlock_mine(const conc_prlock_t *r, uint64_t me)
{
    return atomic_load_explicit(PAIR(&((conc_prlock_t *)r)->word), RLXO) == me;
}

int conc_prlock_acquire(conc_prlock_t *r, bool blocking, double timeout)
{
    if (!r || ((uintptr_t)r & 7))
        return CONC_EINVAL;
    int64_t deadline;
    int rc = conc__acquire_deadline_lenient(blocking, timeout, &deadline); /* SemLock: negative is 0 */
    if (rc)
        return rc;
    uint64_t me = conc__prlock_me();
    if (conc__prlock_mine(r, me)) {
        uint32_t n = atomic_load_explicit(CONC__IA(&r->count), RLXO);
        if (n == UINT32_MAX)
            return CONC_ERANGE;
        atomic_store_explicit(CONC__IA(&r->count), n + 1, RLXO);
        return 0;
    }
    rc = conc__pword_lock(&r->word, &r->sleepers, &r->recoveries, me, true, deadline);
    if (rc == 0 || rc == CONC_EOWNERDEAD) {
        atomic_store_explicit(CONC__IA(&r->count), 1u, RLXO);
        if (conc__obs_on(CONC__OBS_LOCKDBG))
            conc__shlock_acquired(r, CONC__WAIT_SHARED_RLOCK, me);
    }
    return rc;
}

int conc_prlock_release(conc_prlock_t *r)
{
    if (!r || ((uintptr_t)r & 7))
        return CONC_EINVAL;
    uint32_t n = atomic_load_explicit(CONC__IA(&r->count), RLXO);
    if (!conc__prlock_mine(r, conc__prlock_me()) || n == 0)
        return CONC_EPERM;
    atomic_store_explicit(CONC__IA(&r->count), n - 1, RLXO);
    if (n == 1) {
        if (conc__obs_on(CONC__OBS_LOCKDBG))
            conc__shlock_released(r);
        conc__pword_unlock(&r->word, &r->sleepers);
    }
    return 0;
}

bool conc_prlock_is_owned(const conc_prlock_t *r)
{
    return r && !((uintptr_t)r & 7) && conc__prlock_mine(r, conc__prlock_me());
}

unsigned long conc_prlock_level(const conc_prlock_t *r)
{
    return conc_prlock_is_owned(r) ? atomic_load_explicit(CONC__IA(&((conc_prlock_t *)r)->count), RLXO) : 0;
}

unsigned conc_prlock_recoveries(const conc_prlock_t *r)
{
    return r ? atomic_load_explicit(CONC__IA(&r->recoveries), RLXO) : 0;
}

/* Used by the condition: drop all levels / take them back (0, or
 * CONC_EOWNERDEAD when taken over from a dead holder). */
uint32_t conc__prlock_release_all(conc_prlock_t *r)
{
    uint32_t n = atomic_load_explicit(CONC__IA(&r->count), RLXO);
    atomic_store_explicit(CONC__IA(&r->count), 0u, RLXO);
    if (conc__obs_on(CONC__OBS_LOCKDBG))
        conc__shlock_released(r);
    conc__pword_unlock(&r->word, &r->sleepers);
    return n ? n : 1; /* a peer may have zeroed it: we held one level at least */
}

/* conc's own holds (a condition's relock, the barrier's bookkeeping):
 * never cut short; a kill or a scope waits for the caller's next call. */
int conc__prlock_restore(conc_prlock_t *r, uint32_t n)
{
    conc__ctx_t *ctx = conc__ctx();
    ctx->nointr++;
    uint64_t me = conc__prlock_me();
    int rc = conc__pword_lock(&r->word, &r->sleepers, &r->recoveries, me, true, CONC__NO_DEADLINE);
    ctx->nointr--;
    atomic_store_explicit(CONC__IA(&r->count), n, RLXO);
    if (conc__obs_on(CONC__OBS_LOCKDBG))
        conc__shlock_acquired(r, CONC__WAIT_SHARED_RLOCK, me);
    return rc;
}

int conc__plock_lock_forever(conc_plock_t *l)
{
    conc__ctx_t *ctx = conc__ctx();
    ctx->nointr++;
    uint64_t me = conc__plock_me();
    int rc = conc__pword_lock(&l->word, &l->sleepers, &l->recoveries, me, false, CONC__NO_DEADLINE);
    ctx->nointr--;
    if (conc__obs_on(CONC__OBS_LOCKDBG))
        conc__shlock_acquired(l, CONC__WAIT_SHARED_LOCK, me);
    return rc;
}

/* ----------------------------------------------------------- Semaphore */

#define SEM_MAX 0x7fffffffu

static int conc__psem_init(conc_psemaphore_t *s, long value, bool bounded)
{
    if (!s || value < 0 || value > (long)SEM_MAX)
        return CONC_EINVAL;
    *s = (conc_psemaphore_t)CONC_PSEMAPHORE_INIT(value);
    s->bound = bounded ? (uint32_t)value + 1 : 0;
    return 0;
}

int conc_psemaphore_init(conc_psemaphore_t *s, long value) { return conc__psem_init(s, value, false); }
int conc_pbounded_semaphore_init(conc_psemaphore_t *s, long value) { return conc__psem_init(s, value, true); }

int conc_psemaphore_new(long value, bool bounded, conc_psemaphore_t **out)
{
    if (!out)
        return CONC_EINVAL;
    *out = NULL;
    if (value < 0 || value > (long)SEM_MAX)
        return CONC_EINVAL;
    int rc = conc_shared_alloc(sizeof(conc_psemaphore_t), (void **)out);
    if (rc == 0)
        conc__psem_init(*out, value, bounded);
    return rc;
}

static bool conc__psem_try(void *arg)
{
    conc_psemaphore_t *s = arg;
    uint32_t v = atomic_load_explicit(CONC__IA(&s->value), RLXO);
    while (v > 0)
        if (atomic_compare_exchange_weak_explicit(CONC__IA(&s->value), &v, v - 1, ACQO, RLXO))
            return true;
    return false;
}

/* A BoundedSemaphore(1) is a lock by another name: with lock debugging on
 * it is tracked like one (observe/shlock.c). bound is read once, and only
 * decides what this process records about its own acquisitions. */
#define PSEM_IS_LOCK(bound) ((bound) == 2u)

/* The acquire of a shared BoundedSemaphore(1) with lock debugging on: the
 * wait goes in slices of the detection delay with a wait-for graph check
 * after each, and the acquisition goes into the side table and the
 * lock-order graph. */
static __attribute__((noinline, unused)) int psem_acquire_dbg(conc_psemaphore_t *s, int64_t deadline)
{
    int rc = 0;
    int64_t dchk = 0;
    conc__wait_label(s, CONC__WAIT_SHARED_SEM);
    for (;;) {
        if (conc__psem_try(s))
            break;
        int64_t now = conc__now_ns();
        if (deadline != CONC__NO_DEADLINE && now >= deadline) {
            rc = CONC_ETIMEDOUT;
            break;
        }
        int64_t wake = deadline;
        if (conc__obs_on(CONC__OBS_DEADLOCK) && !conc__ctx()->nointr) {
            if (dchk && now >= dchk) {
                if ((rc = conc__deadlock_check(s, CONC__WAIT_SHARED_SEM)) != 0)
                    break;
                dchk = 0;
            }
            if (!dchk)
                dchk = now + conc__deadlock_slice();
            if (dchk < wake)
                wake = dchk;
        }
        int r = conc__pwait(&s->value, &s->sleepers, 0, wake);
        if (conc__is_cut(r)) {
            conc__cut_t cut = conc__cut_save(r);
            if (conc__psem_try(s)) {
                conc__cut_rearm(&cut);
                break;
            }
            rc = r;
            break;
        }
    }
    conc__wait_label(NULL, 0);
    if (rc == 0)
        conc__shlock_acquired(s, CONC__WAIT_SHARED_SEM, 0);
    return rc;
}

int conc_psemaphore_acquire(conc_psemaphore_t *s, bool blocking, double timeout)
{
    if (!s)
        return CONC_EINVAL;
    int64_t deadline;
    int rc = conc__acquire_deadline_lenient(blocking, timeout, &deadline); /* SemLock: negative is 0 */
    if (rc)
        return rc;
#ifndef CONC_NO_OBSERVE
    if (conc__obs_on(CONC__OBS_LOCKDBG) && PSEM_IS_LOCK(atomic_load_explicit(CONC__IA(&s->bound), RLXO)))
        return psem_acquire_dbg(s, deadline);
#endif
    if (conc__psem_try(s))
        return 0;
    if (deadline == 0)
        return CONC_ETIMEDOUT;
    if (conc__ipc_spin(conc__psem_try, s, deadline))
        return 0;
    for (;;) {
        if (conc__psem_try(s))
            return 0;
        if (deadline != CONC__NO_DEADLINE && conc__now_ns() >= deadline)
            return CONC_ETIMEDOUT;
        int r = conc__pwait(&s->value, &s->sleepers, 0, deadline);
        if (conc__is_cut(r)) {
            conc__cut_t cut = conc__cut_save(r);
            if (conc__psem_try(s)) {
                conc__cut_rearm(&cut);
                return 0;
            }
            return r;
        }
    }
}

int conc_psemaphore_release(conc_psemaphore_t *s, long n)
{
    if (!s || n < 1)
        return CONC_EINVAL;
    uint32_t v = atomic_load_explicit(CONC__IA(&s->value), RLXO);
    uint32_t bound = atomic_load_explicit(CONC__IA(&s->bound), RLXO); /* once */
#ifndef CONC_NO_OBSERVE
    if (conc__obs_on(CONC__OBS_LOCKDBG) && PSEM_IS_LOCK(bound) && v == 0)
        conc__shlock_released(s); /* before the unit is there for another acquirer */
#endif
    for (;;) {
        if (bound && (uint64_t)v + (uint64_t)n > (uint64_t)bound - 1)
            return CONC_EINVAL;
        if ((uint64_t)v + (uint64_t)n > SEM_MAX)
            return CONC_ERANGE;
        if (atomic_compare_exchange_weak_explicit(CONC__IA(&s->value), &v, v + (uint32_t)n, SC, RLXO))
            break;
    }
    conc__pwake(&s->value, &s->sleepers, n > INT_MAX ? INT_MAX : (int)n);
    return 0;
}

long conc_psemaphore_value(const conc_psemaphore_t *s)
{
    return s ? (long)atomic_load_explicit(CONC__IA(&s->value), RLXO) : 0;
}

/* --------------------------------------------------------------- Event */

int conc_pevent_init(conc_pevent_t *e)
{
    if (!e)
        return CONC_EINVAL;
    *e = (conc_pevent_t)CONC_PEVENT_INIT;
    return 0;
}

int conc_pevent_new(conc_pevent_t **out)
{
    if (!out)
        return CONC_EINVAL;
    return conc_shared_alloc(sizeof(conc_pevent_t), (void **)out);
}

int conc_pevent_set(conc_pevent_t *e)
{
    if (!e)
        return CONC_EINVAL;
    uint32_t s = atomic_load_explicit(CONC__IA(&e->state), RLXO);
    do {
        if (s & 1u)
            return 0;
    } while (!atomic_compare_exchange_weak_explicit(CONC__IA(&e->state), &s, (s + 2u) | 1u, SC, RLXO));
    conc__pwake(&e->state, &e->sleepers, INT_MAX);
    return 0;
}

int conc_pevent_clear(conc_pevent_t *e)
{
    if (!e)
        return CONC_EINVAL;
    atomic_fetch_and_explicit(CONC__IA(&e->state), ~1u, memory_order_release);
    return 0;
}

bool conc_pevent_is_set(const conc_pevent_t *e)
{
    return e && (atomic_load_explicit(CONC__IA(&e->state), ACQO) & 1u);
}

typedef struct {
    uint32_t *state;
    uint32_t seen;
} conc__pevent_spin_t;

static bool conc__pevent_changed(void *arg)
{
    conc__pevent_spin_t *p = arg;
    return atomic_load_explicit(CONC__IA(p->state), ACQO) != p->seen;
}

int conc_pevent_wait(conc_pevent_t *e, double timeout)
{
    if (!e)
        return CONC_EINVAL;
    int64_t deadline;
    int rc = conc__deadline(timeout, &deadline);
    if (rc)
        return rc;
    uint32_t s = atomic_load_explicit(CONC__IA(&e->state), ACQO);
    if (s & 1u)
        return 0;
    /* Only a set() changes the word while the flag is clear. */
    conc__pevent_spin_t sp = {&e->state, s};
    if (deadline != 0 && conc__ipc_spin(conc__pevent_changed, &sp, deadline))
        return 0;
    for (;;) {
        if (atomic_load_explicit(CONC__IA(&e->state), ACQO) != s)
            return 0;
        if (deadline != CONC__NO_DEADLINE && conc__now_ns() >= deadline)
            return CONC_ETIMEDOUT;
        int r = conc__pwait(&e->state, &e->sleepers, s, deadline);
        if (conc__is_cut(r)) {
            conc__cut_t cut = conc__cut_save(r);
            if (atomic_load_explicit(CONC__IA(&e->state), ACQO) != s) {
                conc__cut_rearm(&cut);
                return 0;
            }
            return r;
        }
    }
}
