/*
 * barrier.c — threading.Barrier, the same state machine as CPython's:
 *   FILLING (0)    arrivals take index = count++; the last one runs the
 *                  action and flips to DRAINING, waking the others;
 *   DRAINING (1)   waiters leave; the last one out flips back to FILLING;
 *   RESETTING (-1) reset() while waiters were inside: they leave with
 *                  CONC_EBROKEN, the last one out flips back to FILLING;
 *   BROKEN (-2)    abort(), a waiter's timeout or a failing action: every
 *                  wait returns CONC_EBROKEN until reset().
 * New arrivals wait while the barrier drains or resets. Everything runs
 * under b->lock; waiting is a condition wait on b->q (queued before the
 * lock is dropped, so no wakeup is lost).
 */
#include <math.h>
#include <string.h>

#include "sync/internal.h"

enum { FILLING = 0, DRAINING = 1, RESETTING = -1, BROKEN = -2 };

int conc_barrier_init(conc_barrier_t *b, int parties, void (*action)(void *), void *arg, double timeout)
{
    if (!b || parties <= 0)
        return CONC_EINVAL;
    if (isnan(timeout)) /* a negative default: every wait is already up */
        return CONC_EINVAL;
    memset(b, 0, sizeof *b);
    b->parties = parties;
    b->action = action;
    b->arg = arg;
    b->timeout = timeout;
    return 0;
}

/* Interruptions come back from conc__barrier_sleep shifted below every
 * CONC_E* code, so the callers can tell them from the wait's timeout. */
#define CONC__BARRIER_INTR(code) (-1000 + (code))

/* Condition wait on b->q with b->lock held. */
static int conc__barrier_sleep(conc_barrier_t *b, int64_t deadline)
{
    conc__waiter_t w;
    conc__waiter_init(&w);
    w.obj = b;
    w.kind = CONC__WAIT_BARRIER;
    conc__waitq_lock(&b->q);
    conc__waitq_push(&b->q, &w);
    conc__waitq_unlock(&b->q);
    conc_lock_release(&b->lock);
    int rc = conc__wait_queued(&b->q, &w, deadline, NULL, NULL);
    /* An interruption (kill, timeout scope) is told apart from the wait's
     * own timeout now, before the relock can park again. */
    int intr = conc__park_interrupted(rc) ? rc : 0;
    conc__lock_hold(&b->lock);
    return intr ? CONC__BARRIER_INTR(intr) : rc;
}

static void conc__barrier_wake_all(conc_barrier_t *b)
{
    conc__waitq_lock(&b->q);
    conc__waiter_t *list = conc__waitq_take_all(&b->q);
    conc__waitq_unlock(&b->q);
    conc__unpark_list(list);
}

static void conc__barrier_break(conc_barrier_t *b)
{
    b->state = BROKEN;
    conc__barrier_wake_all(b);
}

/* The last one out of a drain or reset lets the next cycle fill. */
static void conc__barrier_exit(conc_barrier_t *b)
{
    if (b->count == 0 && (b->state == RESETTING || b->state == DRAINING)) {
        b->state = FILLING;
        conc__barrier_wake_all(b);
    }
}

int conc_barrier_wait(conc_barrier_t *b, double timeout, int *index)
{
    if (!b || b->parties <= 0)
        return CONC_EINVAL;
    if (timeout == CONC_BARRIER_DEFAULT)
        timeout = b->timeout;
    int64_t deadline;
    int rc = conc__deadline(timeout, &deadline);
    if (rc)
        return rc;

    conc__lock_hold(&b->lock);
    while (b->state == DRAINING || b->state == RESETTING) {
        int s = conc__barrier_sleep(b, CONC__NO_DEADLINE);
        if (s <= CONC__BARRIER_INTR(0)) {
            conc_lock_release(&b->lock);
            return s - CONC__BARRIER_INTR(0);
        }
    }
    if (b->state < 0) {
        conc_lock_release(&b->lock);
        return CONC_EBROKEN;
    }
    int idx = b->count++;
    rc = 0;
    int intr = 0;
    if (idx + 1 == b->parties) {
        /* Last to arrive: run the action, then release everyone. */
        if (b->action) {
            const char *m;
            int saved = conc_failure(&m);
            char saved_msg[256];
            strncpy(saved_msg, m, sizeof saved_msg - 1);
            saved_msg[sizeof saved_msg - 1] = 0;
            conc_fail_clear();
            b->action(b->arg);
            if (conc_failure(NULL) != 0) {
                conc__barrier_break(b);
                rc = CONC_EBROKEN;
            } else if (saved) {
                conc_fail(saved, "%s", saved_msg);
            }
        }
        if (rc == 0) {
            b->state = DRAINING;
            conc__barrier_wake_all(b);
        }
    } else {
        for (;;) {
            if (b->state != FILLING)
                break;
            int s = conc__barrier_sleep(b, deadline);
            if (s != 0 && b->state == FILLING) {
                /* A timeout breaks the barrier (Python); so does an
                 * interruption, which is what this call reports. */
                conc__barrier_break(b);
                if (s <= CONC__BARRIER_INTR(0))
                    intr = s - CONC__BARRIER_INTR(0);
                break;
            }
        }
        if (b->state < 0)
            rc = intr ? intr : CONC_EBROKEN;
    }
    b->count--;
    conc__barrier_exit(b);
    conc_lock_release(&b->lock);
    if (rc == 0 && index)
        *index = idx;
    return rc;
}

int conc_barrier_reset(conc_barrier_t *b)
{
    if (!b || b->parties <= 0)
        return CONC_EINVAL;
    conc__lock_hold(&b->lock);
    if (b->count > 0) {
        if (b->state == FILLING || b->state == BROKEN)
            b->state = RESETTING;
        /* DRAINING: let it finish draining; new arrivals wait. */
    } else {
        b->state = FILLING;
    }
    conc__barrier_wake_all(b);
    conc_lock_release(&b->lock);
    return 0;
}

int conc_barrier_abort(conc_barrier_t *b)
{
    if (!b || b->parties <= 0)
        return CONC_EINVAL;
    conc__lock_hold(&b->lock);
    conc__barrier_break(b);
    conc_lock_release(&b->lock);
    return 0;
}

bool conc_barrier_broken(conc_barrier_t *b)
{
    if (!b || b->parties <= 0)
        return false;
    conc__lock_hold(&b->lock);
    bool r = b->state == BROKEN;
    conc_lock_release(&b->lock);
    return r;
}

int conc_barrier_n_waiting(conc_barrier_t *b)
{
    if (!b || b->parties <= 0)
        return 0;
    conc__lock_hold(&b->lock);
    int n = b->state == FILLING ? b->count : 0;
    conc_lock_release(&b->lock);
    return n;
}

int conc_barrier_parties(const conc_barrier_t *b)
{
    return b ? b->parties : 0;
}
