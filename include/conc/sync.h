/*
 * conc/sync.h — threading's synchronisation primitives:
 * Lock, RLock, Condition, Semaphore, BoundedSemaphore, Event, Barrier.
 *
 * All of them are small values you embed anywhere; the *_INIT macros (or
 * zero-initialisation) give a ready object, so no malloc and no destroy is
 * needed. They may be freed/reused once no thread is using them. Do not
 * copy one that is in use.
 *
 * Blocking calls park the current execution context through conc's
 * park/unpark layer (a brief adaptive spin, then a futex sleep), so the same
 * objects will serve green threads. Uncontended fast paths are one atomic
 * operation, with no syscall and no wait-list access.
 *
 * The acquire family follows Python: acquire(blocking, timeout).
 *   - blocking=true,  timeout=CONC_FOREVER: wait as long as it takes.
 *   - blocking=true,  timeout>=0: wait at most timeout seconds.
 *   - blocking=true,  timeout<0: Lock, RLock and Condition acquire return
 *     CONC_EINVAL (Python's ValueError; -1.0 is not "forever"), touching
 *     nothing; Semaphore acquire tries once (Python computes its timeout
 *     as time left, so negative means "already up").
 *   - blocking=false, timeout=CONC_FOREVER: try once.
 *   - blocking=false with any other timeout: CONC_EINVAL (Python's
 *     "can't specify a timeout for a non-blocking call").
 * They return 0 when acquired and CONC_ETIMEDOUT when not (Python's False).
 * Waits (the rule of conc/base.h): a negative timeout on Condition.wait /
 * wait_for, Event.wait and Barrier.wait means "already up": Event.wait
 * returns CONC_ETIMEDOUT unless set; Condition.wait releases and
 * re-acquires the lock and returns CONC_ETIMEDOUT (wait_for: unless pred
 * holds); Barrier.wait breaks the barrier (CONC_EBROKEN) unless the caller
 * is the last party. NaN is CONC_EINVAL everywhere.
 */
#ifndef CONC_SYNC_H
#define CONC_SYNC_H

#include "conc/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A wait list (private: use it through the primitives). */
struct conc__waiter;
typedef struct conc__waitq {
    unsigned int guard; /* spin lock protecting head/tail (atomic) */
    unsigned int reserved; /* the primitive's, under the guard (a Lock: its waiters' bits) */
    struct conc__waiter *head, *tail;
} conc__waitq_t;

/* ---------------------------------------------------------------- Lock */

/* threading.Lock: not owned; any thread may release it. */
typedef struct conc_lock {
    unsigned int state; /* bit 0 locked, bit 1 a release must go out of line
                           (waiters to wake), bit 2 tracked by lock-order
                           checking, bit 3 reserved for a waiter, with
                           the fork generation in bits 8-31 (atomic) */
    unsigned int owner; /* private: serial of its last acquirer, as far as
                           known (lock debugging, conc/deadlock.h) (atomic) */
    conc__waitq_t q;
} conc_lock_t;
#define CONC_LOCK_INIT {0}

/* (Re)initialise an unlocked lock. Returns 0, or CONC_EINVAL for NULL. */
CONC_API int conc_lock_init(conc_lock_t *l);
/* Acquire (see the acquire family above). Returns 0, CONC_ETIMEDOUT or
 * CONC_EINVAL. Blocks per blocking/timeout. */
CONC_API int conc_lock_acquire(conc_lock_t *l, bool blocking, double timeout);
/* Release. Returns 0, or CONC_EPERM if the lock is not locked (Python's
 * RuntimeError). Never blocks. Any thread may release. */
CONC_API int conc_lock_release(conc_lock_t *l);
/* True while locked (a snapshot). */
CONC_API bool conc_lock_locked(const conc_lock_t *l);

/* The uncontended paths of acquire/release are inlined into the caller (one
 * compare-and-swap each, no call); anything else goes to the functions
 * above. Define CONC_NO_INLINE before including conc headers to always
 * call the functions; (conc_lock_acquire)(...) also calls them. */
#if !defined(CONC_NO_INLINE) && (defined(__GNUC__) || defined(__clang__))
/* Private: nonzero while lock debugging (conc/deadlock.h) is on; then
 * every acquire takes the function's path (and a lock it marks makes the
 * release's CAS fail, so the release does too). A library built with
 * -DCONC_OBSERVE=OFF defines CONC_NO_OBSERVE for its users too. */
#ifndef CONC_NO_OBSERVE
CONC_API extern unsigned int conc__lock_hooks;
#define CONC__LOCK_UNHOOKED() (__builtin_expect(__atomic_load_n(&conc__lock_hooks, __ATOMIC_RELAXED) == 0, 1))
#else
#define CONC__LOCK_UNHOOKED() 1
#endif
static inline int conc__lock_acquire_inline(conc_lock_t *l, bool blocking, double timeout)
{
    unsigned exp = 0;
    if (l && blocking && timeout == CONC_FOREVER && CONC__LOCK_UNHOOKED() &&
        __atomic_compare_exchange_n(&l->state, &exp, 1u, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return 0;
    return (conc_lock_acquire)(l, blocking, timeout);
}
static inline int conc__lock_release_inline(conc_lock_t *l)
{
    unsigned exp = 1u;
    if (l && __atomic_compare_exchange_n(&l->state, &exp, 0u, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        return 0;
    return (conc_lock_release)(l);
}
#define conc_lock_acquire(l, blocking, timeout) conc__lock_acquire_inline((l), (blocking), (timeout))
#define conc_lock_release(l) conc__lock_release_inline((l))
#endif

/* --------------------------------------------------------------- RLock */

/* threading.RLock: owned by one thread (later: one green thread), which may
 * acquire it again; it is free once released as often as acquired. */
typedef struct conc_rlock {
    conc_lock_t lock;
    uintptr_t owner;    /* id of the owning context, 0 when free (atomic) */
    unsigned long count;
} conc_rlock_t;
#define CONC_RLOCK_INIT {CONC_LOCK_INIT, 0, 0}

/* (Re)initialise an unlocked RLock. Returns 0, or CONC_EINVAL for NULL. */
CONC_API int conc_rlock_init(conc_rlock_t *r);
/* Acquire; re-entrant for the owner. Returns 0, CONC_ETIMEDOUT, CONC_EINVAL,
 * or CONC_ERANGE if the recursion count would overflow. */
CONC_API int conc_rlock_acquire(conc_rlock_t *r, bool blocking, double timeout);
/* Release one level. Returns 0, or CONC_EPERM when the caller does not own
 * it (including when it is not locked at all). */
CONC_API int conc_rlock_release(conc_rlock_t *r);
/* True if the calling context owns r (RLock._is_owned). */
CONC_API bool conc_rlock_is_owned(const conc_rlock_t *r);
/* The caller's recursion level (0 when the caller does not own it). */
CONC_API unsigned long conc_rlock_level(const conc_rlock_t *r);
/* RLock.locked() (Python 3.14): true while any context holds r (a
 * snapshot), not only the caller; false for NULL. */
CONC_API bool conc_rlock_locked(const conc_rlock_t *r);

/* ----------------------------------------------------------- Condition */

/* threading.Condition over a Lock or an RLock. A zero-initialised condition
 * (CONC_COND_INIT) owns its own RLock, like Condition() in Python. */
typedef struct conc_cond {
    conc__waitq_t q;
    void *lock;         /* user's lock, or NULL for the embedded one */
    int kind;           /* 0 embedded RLock, 1 Lock, 2 RLock */
    conc_rlock_t own;
} conc_cond_t;
#define CONC_COND_INIT {{0, 0, 0, 0}, 0, 0, CONC_RLOCK_INIT}

/* Use lock (borrowed: it must outlive the condition). NULL lock -> an
 * embedded RLock. Returns 0 or CONC_EINVAL (c NULL). */
CONC_API int conc_cond_init(conc_cond_t *c, conc_lock_t *lock);
CONC_API int conc_cond_init_rlock(conc_cond_t *c, conc_rlock_t *rlock);
/* Acquire / release the underlying lock (the "with cond:" of Python). */
CONC_API int conc_cond_acquire(conc_cond_t *c, bool blocking, double timeout);
CONC_API int conc_cond_release(conc_cond_t *c);
/* Release the lock, wait until notified or timeout, re-acquire the lock
 * (always, on every path; an RLock gets its full recursion level back).
 * Returns 0 when notified, CONC_ETIMEDOUT when the timeout passed,
 * CONC_EPERM when the caller does not hold the lock, CONC_EINVAL. */
CONC_API int conc_cond_wait(conc_cond_t *c, double timeout);
/* Wait until pred(arg) returns true, re-checking after each wakeup, with one
 * overall deadline. Returns 0 when pred became true, CONC_ETIMEDOUT when the
 * deadline passed with pred still false, CONC_EPERM, CONC_EINVAL. pred is
 * called with the lock held. */
CONC_API int conc_cond_wait_for(conc_cond_t *c, bool (*pred)(void *arg), void *arg,
                                double timeout);
/* Wake at most n waiters (n >= 0), oldest first. Returns 0, CONC_EPERM when
 * the caller does not hold the lock, CONC_EINVAL for n < 0. */
CONC_API int conc_cond_notify(conc_cond_t *c, int n);
/* Wake every waiter. Returns 0 or CONC_EPERM. */
CONC_API int conc_cond_notify_all(conc_cond_t *c);

/* ------------------------------------------- Semaphore / BoundedSemaphore */

typedef struct conc_semaphore {
    unsigned int state; /* value << 1 | waiters bit (atomic) */
    unsigned int bound; /* 0: unbounded; else BoundedSemaphore's initial value + 1 */
    conc__waitq_t q;
} conc_semaphore_t;
#define CONC_SEMAPHORE_MAX 0x7fffffffu
#define CONC_SEMAPHORE_INIT(n) {(unsigned)(n) << 1, 0, {0, 0, 0, 0}}
#define CONC_BOUNDED_SEMAPHORE_INIT(n) {(unsigned)(n) << 1, (unsigned)(n) + 1, {0, 0, 0, 0}}

/* Initialise with value (0..CONC_SEMAPHORE_MAX). Returns 0, or CONC_EINVAL
 * for a negative or too large value. */
CONC_API int conc_semaphore_init(conc_semaphore_t *s, long value);
/* As above for a BoundedSemaphore: releasing above value is an error. */
CONC_API int conc_bounded_semaphore_init(conc_semaphore_t *s, long value);
/* Take one unit (see the acquire family). Returns 0, CONC_ETIMEDOUT,
 * CONC_EINVAL. Waiters are served first come, first served. */
CONC_API int conc_semaphore_acquire(conc_semaphore_t *s, bool blocking, double timeout);
/* Add n units (n >= 1), waking up to n waiters. Returns 0; CONC_EINVAL for
 * n < 1 or when a BoundedSemaphore would exceed its initial value (nothing
 * is released then: Python's ValueError); CONC_ERANGE past
 * CONC_SEMAPHORE_MAX. Never blocks. */
CONC_API int conc_semaphore_release(conc_semaphore_t *s, long n);
/* Current value (a snapshot). */
CONC_API long conc_semaphore_value(const conc_semaphore_t *s);

/* --------------------------------------------------------------- Event */

typedef struct conc_event {
    unsigned int state; /* generation << 2 | waiters << 1 | flag (atomic) */
    conc__waitq_t q;
} conc_event_t;
#define CONC_EVENT_INIT {0}

/* (Re)initialise an Event whose flag is clear. Returns 0, or CONC_EINVAL
 * for NULL. */
CONC_API int conc_event_init(conc_event_t *e);
/* Set the flag and wake every waiter. Every context already waiting when
 * set() happens returns 0 from its wait, even if clear() follows at once.
 * Returns 0 or CONC_EINVAL. Never blocks. */
CONC_API int conc_event_set(conc_event_t *e);
CONC_API int conc_event_clear(conc_event_t *e);
CONC_API bool conc_event_is_set(const conc_event_t *e);
/* Wait until the flag is set. Returns 0 (Python's True), CONC_ETIMEDOUT
 * (False), CONC_EINVAL. */
CONC_API int conc_event_wait(conc_event_t *e, double timeout);

/* ------------------------------------------------------------- Barrier */

typedef struct conc_barrier {
    conc_lock_t lock;
    conc__waitq_t q;
    int parties;
    int count;             /* contexts waiting in this cycle */
    int state;             /* 0 filling, 1 draining, -1 resetting, -2 broken */
    void (*action)(void *arg);
    void *arg;
    double timeout;
} conc_barrier_t;

/* Python's wait(timeout=None): use the barrier's default timeout. It is
 * -INFINITY, which no remaining time computed from a finite deadline can
 * equal (every other negative timeout is "already up"). */
#define CONC_BARRIER_DEFAULT (-(double)INFINITY)

/* parties >= 1; action (may be NULL) runs in one of the waiting contexts
 * once all arrived, before any is released; timeout is the default for
 * wait() (CONC_FOREVER for none; negative: every wait is already up, as
 * Python accepts it). Returns 0 or CONC_EINVAL (NaN timeout). */
CONC_API int conc_barrier_init(conc_barrier_t *b, int parties, void (*action)(void *),
                               void *arg, double timeout);
/* Wait for all parties. On success returns 0 and, if index is not NULL,
 * stores a unique 0..parties-1 for this cycle. Returns CONC_EBROKEN if the
 * barrier is or becomes broken while waiting (abort, reset, another
 * waiter's timeout, a failing action — one that called conc_fail). A
 * waiter whose timeout passes breaks the barrier and gets CONC_EBROKEN too
 * (as Python raises BrokenBarrierError). */
CONC_API int conc_barrier_wait(conc_barrier_t *b, double timeout, int *index);
/* Put it back to the empty state; current waiters get CONC_EBROKEN. */
CONC_API int conc_barrier_reset(conc_barrier_t *b);
/* Break it: current and future waiters get CONC_EBROKEN until reset. */
CONC_API int conc_barrier_abort(conc_barrier_t *b);
CONC_API bool conc_barrier_broken(conc_barrier_t *b);
CONC_API int conc_barrier_n_waiting(conc_barrier_t *b);
CONC_API int conc_barrier_parties(const conc_barrier_t *b);

/* ----------------------------------------------------------- with lock: */

#if (defined(__GNUC__) || defined(__clang__)) && !defined(__cplusplus)
/* Python's `with lock:` for the rest of the enclosing block:
 *
 *     {
 *         CONC_WITH(&lock);          // lock.acquire()
 *         if (bad) return -1;        // released here...
 *         ...
 *     }                              // ...and here, and on break / goto out
 *
 * Works with a conc_lock_t *, conc_rlock_t *, conc_semaphore_t * (one
 * unit) or conc_cond_t * (its lock). The acquire blocks without a timeout,
 * so it can only fail when cut short (CONC_EKILLED, CONC_ETIMEDOUT from a
 * Timeout scope): then nothing is released at the end. CONC_WITH_RC(&lock,
 * rc) also declares `const int rc`, the acquire's result (0 when held) —
 * check it where a kill or a scope can interrupt the wait, as Python's
 * `with` would raise there. One per line; release order is the reverse of
 * acquire order, as nested `with` statements. */
typedef struct conc__held {
    int (*release)(void *obj);
    void *obj; /* NULL: not held */
    int rc;
} conc__held_t;
static inline int conc__held_lock_rel(void *o) { return conc_lock_release((conc_lock_t *)o); }
static inline int conc__held_rlock_rel(void *o) { return conc_rlock_release((conc_rlock_t *)o); }
static inline int conc__held_sem_rel(void *o) { return conc_semaphore_release((conc_semaphore_t *)o, 1); }
static inline int conc__held_cond_rel(void *o) { return conc_cond_release((conc_cond_t *)o); }
static inline conc__held_t conc__held_mk(int (*rel)(void *), void *obj, int rc)
{
    conc__held_t h = {rel, rc == 0 ? obj : (void *)0, rc};
    return h;
}
static inline conc__held_t conc__held_lock(conc_lock_t *l)
{
    return conc__held_mk(conc__held_lock_rel, l, l ? conc_lock_acquire(l, true, CONC_FOREVER) : CONC_EINVAL);
}
static inline conc__held_t conc__held_rlock(conc_rlock_t *r)
{
    return conc__held_mk(conc__held_rlock_rel, r, conc_rlock_acquire(r, true, CONC_FOREVER));
}
static inline conc__held_t conc__held_sem(conc_semaphore_t *s)
{
    return conc__held_mk(conc__held_sem_rel, s, conc_semaphore_acquire(s, true, CONC_FOREVER));
}
static inline conc__held_t conc__held_cond(conc_cond_t *c)
{
    return conc__held_mk(conc__held_cond_rel, c, conc_cond_acquire(c, true, CONC_FOREVER));
}
static inline void conc__held_leave(conc__held_t *h)
{
    if (h->obj)
        h->release(h->obj);
}
#define conc__held_take(x)                                                                            \
    _Generic((x), conc_lock_t *: conc__held_lock, conc_rlock_t *: conc__held_rlock,                  \
             conc_semaphore_t *: conc__held_sem, conc_cond_t *: conc__held_cond)(x)
#define CONC__WITH_CAT2(a, b) a##b
#define CONC__WITH_CAT(a, b) CONC__WITH_CAT2(a, b)
#define CONC_WITH_RC(lockp, rcvar)                                                                       \
    conc__held_t CONC__WITH_CAT(conc__held_, __LINE__) __attribute__((cleanup(conc__held_leave))) =  \
        conc__held_take(lockp);                                                                       \
    const int rcvar __attribute__((unused)) = CONC__WITH_CAT(conc__held_, __LINE__).rc
#define CONC_WITH(lockp) CONC_WITH_RC(lockp, CONC__WITH_CAT(conc__with_rc_, __LINE__))
#endif

#ifdef __cplusplus
}
#endif
#endif /* CONC_SYNC_H */
