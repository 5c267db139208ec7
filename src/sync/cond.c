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

int conc_cond_init(conc_cond_t *c, conc_lock_t *lock)
{
    if (!c)
        return CONC_EINVAL;
    *c = (conc_cond_t)CONC_COND_INIT;
    if (lock) {
        c->lock = lock;
        c->kind = KIND_LOCK;
    }
    return 0;
}

int conc_cond_init_rlock(conc_cond_t *c, conc_rlock_t *rlock)
{
    if (!c)
        return CONC_EINVAL;
    *c = (conc_cond_t)CONC_COND_INIT;
    if (rlock) {
        c->lock = rlock;
        c->kind = KIND_RLOCK;
    }
    return 0;
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

static int conc__cond_wait_dl(conc_cond_t *c, int64_t deadline)
{
    conc__waiter_t w;
    conc__waiter_init(&w);
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

    /* Re-acquire on every path (Python's _acquire_restore). */
    if (c->kind == KIND_LOCK) {
        conc__lock_acquire_dl(c->lock, CONC__NO_DEADLINE);
    } else {
        conc__lock_acquire_dl(&r->lock, CONC__NO_DEADLINE);
        conc__store(&r->owner, conc__ctx_id(), RLX);
        r->count = level;
    }
    return rc;
}

int conc_cond_wait(conc_cond_t *c, double timeout)
{
    if (!c)
        return CONC_EINVAL;
    int64_t deadline;
    int rc = conc__deadline(timeout, &deadline);
    if (rc)
        return rc;
    if (!conc__cond_owned(c))
        return CONC_EPERM;
    return conc__cond_wait_dl(c, deadline);
}

int conc_cond_wait_for(conc_cond_t *c, bool (*pred)(void *arg), void *arg, double timeout)
{
    if (!c || !pred)
        return CONC_EINVAL;
    int64_t deadline;
    int rc = conc__deadline(timeout, &deadline);
    if (rc)
        return rc;
    if (!conc__cond_owned(c))
        return CONC_EPERM;
    while (!pred(arg)) {
        if (deadline != CONC__NO_DEADLINE && conc__now_ns() >= deadline)
            return CONC_ETIMEDOUT;
        conc__cond_wait_dl(c, deadline);
    }
    return 0;
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
    conc__unpark_list(list);
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
    conc__unpark_list(list);
    return 0;
}
