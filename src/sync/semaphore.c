/*
 * semaphore.c — threading.Semaphore and BoundedSemaphore.
 *
 * state = value << 1 | WAITERS. Acquire takes a unit with a CAS while value
 * > 0; otherwise spins briefly, then, under the list guard, sets WAITERS
 * with a CAS that proves value is still 0 and queues a waiter. Release adds
 * n with one atomic op; only if WAITERS was set does it take the guard and
 * hand units directly to the oldest waiters (each waiter woken already
 * owns its unit: no retry, and a waiter that times out after being handed
 * one keeps it and reports success). bound != 0 marks a BoundedSemaphore
 * (bound = initial value + 1).
 */
#include "sync/internal.h"

#define WAITERS 1u
#define UNIT 2u

static int conc__sem_init(conc_semaphore_t *s, long value, bool bounded)
{
    if (!s || value < 0 || value > (long)CONC_SEMAPHORE_MAX)
        return CONC_EINVAL;
    *s = (conc_semaphore_t)CONC_SEMAPHORE_INIT(0);
    s->state = (unsigned)value << 1;
    s->bound = bounded ? (unsigned)value + 1 : 0;
    return 0;
}

int conc_semaphore_init(conc_semaphore_t *s, long value)
{
    return conc__sem_init(s, value, false);
}

int conc_bounded_semaphore_init(conc_semaphore_t *s, long value)
{
    return conc__sem_init(s, value, true);
}

static inline bool conc__sem_try(conc_semaphore_t *s)
{
    unsigned v = conc__load(&s->state, RLX);
    while (v >= UNIT) {
        if (atomic_compare_exchange_weak_explicit(CONC__A(&s->state), &v, v - UNIT, ACQ, RLX))
            return true;
    }
    return false;
}

static bool spin_take(void *p)
{
    conc_semaphore_t *s = p;
    return conc__load(&s->state, RLX) >= UNIT && conc__sem_try(s);
}

static void conc__sem_clear_waiters(conc__waitq_t *q, void *arg)
{
    conc_semaphore_t *s = arg;
    if (conc__waitq_empty(q))
        atomic_fetch_and_explicit(CONC__A(&s->state), ~WAITERS, RLX);
}

static int sem_acquire(conc_semaphore_t *s, bool blocking, double timeout);

/* A BoundedSemaphore(1) is a lock by another name: lock-order checking
 * (conc/deadlock.h) tracks it like one. */
#define CONC__SEM_IS_LOCK(s) ((s)->bound == 2u)

int conc_semaphore_acquire(conc_semaphore_t *s, bool blocking, double timeout)
{
    int rc = sem_acquire(s, blocking, timeout);
    if (rc == 0 && conc__obs_on(CONC__OBS_LOCKORDER) && CONC__SEM_IS_LOCK(s))
        conc__lockdep_acquired(s, CONC__WAIT_SEM);
    return rc;
}

static int sem_acquire(conc_semaphore_t *s, bool blocking, double timeout)
{
    if (!s)
        return CONC_EINVAL;
    int64_t deadline = CONC__NO_DEADLINE;
    if (!(blocking && timeout == CONC_FOREVER)) {
        int rc = conc__acquire_deadline_lenient(blocking, timeout, &deadline);
        if (rc)
            return rc;
    }
    if (conc__sem_try(s))
        return 0;
    if (deadline == 0)
        return CONC_ETIMEDOUT;

    if (conc__spin_until(spin_take, s, deadline))
        return 0;

    conc__waiter_t w;
    conc__waiter_init(&w);
    w.spun = 1; /* we just spun on the primitive itself */
    w.obj = s;
    w.kind = CONC__WAIT_SEM;
    conc__waitq_lock(&s->q);
    unsigned v = conc__load(&s->state, RLX);
    for (;;) {
        if (v >= UNIT) {
            if (atomic_compare_exchange_weak_explicit(CONC__A(&s->state), &v, v - UNIT, ACQ, RLX)) {
                conc__waitq_unlock(&s->q);
                return 0;
            }
        } else if ((v & WAITERS) ||
                   atomic_compare_exchange_weak_explicit(CONC__A(&s->state), &v, v | WAITERS, ACQ, RLX)) {
            break;
        }
    }
    conc__waitq_push(&s->q, &w);
    conc__waitq_unlock(&s->q);
    return conc__wait_queued(&s->q, &w, deadline, conc__sem_clear_waiters, s);
}

int conc_semaphore_release(conc_semaphore_t *s, long n)
{
    if (!s || n < 1)
        return CONC_EINVAL;
    if (n > (long)CONC_SEMAPHORE_MAX)
        return CONC_ERANGE;
    if (conc__obs_on(CONC__OBS_LOCKORDER) && CONC__SEM_IS_LOCK(s) && (conc__load(&s->state, RLX) >> 1) == 0)
        conc__lockdep_released(s);
    unsigned add = (unsigned)n;
    unsigned v = conc__load(&s->state, RLX);
    for (;;) {
        unsigned val = v >> 1;
        if (s->bound && (unsigned long)val + add > s->bound - 1)
            return CONC_EINVAL;
        if ((unsigned long)val + add > CONC_SEMAPHORE_MAX)
            return CONC_ERANGE;
        if (atomic_compare_exchange_weak_explicit(CONC__A(&s->state), &v, v + add * UNIT, REL, RLX))
            break;
    }
    if (!(v & WAITERS))
        return 0;

    /* Hand units to queued waiters, oldest first. */
    conc__waiter_t *list = NULL, **tail = &list;
    conc__waitq_lock(&s->q);
    for (;;) {
        if (conc__waitq_empty(&s->q))
            break;
        unsigned cur = conc__load(&s->state, RLX);
        if (cur < UNIT)
            break;
        if (!atomic_compare_exchange_weak_explicit(CONC__A(&s->state), &cur, cur - UNIT, ACQ, RLX))
            continue;
        conc__waiter_t *w = conc__waitq_pop(&s->q);
        *tail = w;
        tail = &w->next;
    }
    if (conc__waitq_empty(&s->q))
        atomic_fetch_and_explicit(CONC__A(&s->state), ~WAITERS, RLX);
    conc__waitq_unlock(&s->q);
    conc__unpark_list(list);
    return 0;
}

long conc_semaphore_value(const conc_semaphore_t *s)
{
    return s ? (long)(conc__load(&s->state, RLX) >> 1) : 0;
}
