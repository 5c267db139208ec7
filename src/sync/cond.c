/*
 * cond.c — threading.Condition over a Lock or an RLock.
 *
 * wait() queues a waiter on the condition's own list *before* releasing the
 * user's lock, so a notify() that follows the release can never miss it;
 * then parks, and re-acquires the lock on every path (an RLock gets back
 * its full recursion level). notify(n) detaches up to n waiters, oldest
 * first, under the list guard and unparks them after dropping it. A waiter
 * whose timeout fires removes itself if still queued; if a notify already
 * took it, the wait counts as notified (so notify(n) wakes exactly n).
 */
#include <math.h>

#include "sync/internal.h"

enum { KIND_OWN = 0, KIND_LOCK = 1, KIND_RLOCK = 2 };

static int cond_init(conc_cond_t *c, void *lock, int kind)
{
    if (!c)
        return CONC_EINVAL;
    *c = (conc_cond_t)CONC_COND_INIT;
    if (lock) {
        c->lock = lock;
        c->kind = kind;
    }
    return 0;
}

int conc_cond_init(conc_cond_t *c, conc_lock_t *lock)
{
    return cond_init(c, lock, KIND_LOCK);
}

int conc_cond_init_rlock(conc_cond_t *c, conc_rlock_t *rlock)
{
    return cond_init(c, rlock, KIND_RLOCK);
}

static conc_rlock_t *conc__cond_rlock(conc_cond_t *c)
{
    return c->kind == KIND_RLOCK ? (conc_rlock_t *)c->lock : &c->own;
}

int conc_cond_acquire(conc_cond_t *c, bool blocking, double timeout)
{
    if (!c)
        return CONC_EINVAL;
    if (c->kind == KIND_LOCK)
        return conc_lock_acquire(c->lock, blocking, timeout);
    return conc_rlock_acquire(conc__cond_rlock(c), blocking, timeout);
}

int conc_cond_release(conc_cond_t *c)
{
    if (!c)
        return CONC_EINVAL;
    if (c->kind == KIND_LOCK)
        return conc_lock_release(c->lock);
    return conc_rlock_release(conc__cond_rlock(c));
}

static bool conc__cond_owned(conc_cond_t *c)
{
    if (c->kind == KIND_LOCK)
        return conc_lock_locked(c->lock);
    return conc_rlock_is_owned(conc__cond_rlock(c));
}

static int conc__cond_wait_dl(conc_cond_t *c, int64_t deadline, bool *intr)
{
    conc__waiter_t w;
    conc__waiter_init(&w);
    w.obj = c;
    w.kind = CONC__WAIT_COND;
    /* May be moved to the lock's list by a notify (wait morphing) — only a
     * wait nothing can cut short: no deadline, no open timeout scope, not
     * a green context (kills). A cut-short wait must find itself on the
     * condition's list. */
    w.data = deadline == CONC__NO_DEADLINE && !w.ctx->ops && !w.ctx->scope_dl;
    conc__waitq_lock(&c->q);
    conc__waitq_push(&c->q, &w);
    conc__waitq_unlock(&c->q);

    /* Release the lock completely (Python's _release_save). */
    unsigned long level = 0;
    conc_rlock_t *r = NULL;
    if (c->kind == KIND_LOCK) {
        conc_lock_release(c->lock);
    } else {
        r = conc__cond_rlock(c);
        level = r->count;
        r->count = 0;
        conc__store(&r->owner, (uintptr_t)0, RLX);
        conc_lock_release(&r->lock);
    }

    int rc = conc__wait_queued(&c->q, &w, deadline, NULL, NULL);
    if (intr)
        *intr = conc__park_interrupted(rc); /* before the relock parks again */

    /* Re-acquire on every path (Python's _acquire_restore). */
    if (c->kind == KIND_LOCK) {
        conc__lock_hold(c->lock);
    } else {
        conc__lock_hold(&r->lock);
        conc__store(&r->owner, conc__ctx_id(), RLX);
        r->count = level;
    }
    if (conc__obs_on(CONC__OBS_LOCKDBG)) {
        conc_lock_t *l = c->kind == KIND_LOCK ? (conc_lock_t *)c->lock : &r->lock;
        if (c->kind == KIND_LOCK)
            conc__lock_track(l, conc__ctx()->serial); /* not if released meanwhile */
        else
            conc__store(&l->owner, conc__ctx()->serial, RLX);
        if (conc__obs_on(CONC__OBS_LOCKORDER))
            conc__lockdep_acquired(c->kind == KIND_LOCK ? (void *)l : (void *)r,
                                   c->kind == KIND_LOCK ? CONC__WAIT_LOCK : CONC__WAIT_RLOCK);
    }
    return rc;
}

/* The checks both waits start with: 0 and the deadline, or the error. */
static int wait_start(conc_cond_t *c, double timeout, int64_t *deadline)
{
    if (!c)
        return CONC_EINVAL;
    int rc = conc__deadline(timeout, deadline);
    if (rc)
        return rc;
    return conc__cond_owned(c) ? 0 : CONC_EPERM;
}

int conc_cond_wait(conc_cond_t *c, double timeout)
{
    int64_t deadline;
    int rc = wait_start(c, timeout, &deadline);
    return rc ? rc : conc__cond_wait_dl(c, deadline, NULL);
}

int conc_cond_wait_for(conc_cond_t *c, bool (*pred)(void *arg), void *arg, double timeout)
{
    if (!pred)
        return CONC_EINVAL;
    int64_t deadline;
    int rc = wait_start(c, timeout, &deadline);
    if (rc)
        return rc;
    while (!pred(arg)) {
        if (deadline != CONC__NO_DEADLINE && conc__now_ns() >= deadline)
            return CONC_ETIMEDOUT;
        bool intr = false;
        rc = conc__cond_wait_dl(c, deadline, &intr);
        if (intr)
            return pred(arg) ? 0 : rc; /* a kill or a timeout scope */
    }
    return 0;
}

/* Wake the notified waiters. A waiter with no deadline would only wake to
 * find the lock held by the notifier, so a sleeping one is moved onto the
 * lock's own wait list instead ("wait morphing"): the lock's release wakes
 * it, and it returns from wait as notified. One still spinning is simply
 * unparked (no syscall) and competes for the lock itself. Waiters with a deadline are woken
 * directly (their timeout path only knows the condition's list). */
static void conc__cond_hand_over(conc_cond_t *c, conc__waiter_t *list)
{
    conc_lock_t *l = c->kind == KIND_LOCK ? (conc_lock_t *)c->lock : &conc__cond_rlock(c)->lock;
    conc__waiter_t *wake = NULL, **wake_tail = &wake;
    bool moved = false;
    while (list) {
        conc__waiter_t *w = list, *next = w->next;
        if (w->data && conc__load(&w->state, RLX) == CONC__W_SLEEPING) {
            if (!moved) {
                conc__waitq_lock(&l->q);
                moved = true;
            }
            conc__waitq_push(&l->q, w);
        } else {
            w->next = NULL;
            *wake_tail = w;
            wake_tail = &w->next;
        }
        list = next;
    }
    if (moved) {
        conc__lock_queued(l);
        conc__waitq_unlock(&l->q);
        conc__lock_wake(l); /* if released meanwhile: nobody else would wake them */
    }
    conc__unpark_list(wake);
}

int conc_cond_notify(conc_cond_t *c, int n)
{
    if (!c || n < 0)
        return CONC_EINVAL;
    if (!conc__cond_owned(c))
        return CONC_EPERM;
    if (n == 0)
        return 0;
    conc__waiter_t *list = NULL, **tail = &list;
    conc__waitq_lock(&c->q);
    while (n-- > 0) {
        conc__waiter_t *w = conc__waitq_pop(&c->q);
        if (!w)
            break;
        *tail = w;
        tail = &w->next;
    }
    conc__waitq_unlock(&c->q);
    conc__cond_hand_over(c, list);
    return 0;
}

int conc_cond_notify_all(conc_cond_t *c)
{
    if (!c)
        return CONC_EINVAL;
    if (!conc__cond_owned(c))
        return CONC_EPERM;
    conc__waitq_lock(&c->q);
    conc__waiter_t *list = conc__waitq_take_all(&c->q);
    conc__waitq_unlock(&c->q);
    conc__cond_hand_over(c, list);
    return 0;
}
