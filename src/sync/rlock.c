/*
 * rlock.c — threading.RLock: a Lock plus an owner id and a recursion count.
 *
 * owner is the id of the owning context (an OS thread now, a green thread
 * later), written only by the owner while it holds the inner lock; other
 * contexts may read it racily but can never see their own id there, so
 * "owner == me" is exact. count is touched only by the owner.
 */
#include "sync/internal.h"

int conc_rlock_init(conc_rlock_t *r)
{
    if (!r)
        return CONC_EINVAL;
    *r = (conc_rlock_t)CONC_RLOCK_INIT;
    return 0;
}

int conc__rlock_acquire_dl(conc_rlock_t *r, int64_t deadline)
{
    uintptr_t me = conc__ctx_id();
    if (conc__load(&r->owner, RLX) == me) {
        if (r->count == (unsigned long)-1)
            return CONC_ERANGE;
        r->count++;
        return 0;
    }
    int rc = conc__lock_acquire_dl(&r->lock, deadline);
    if (rc)
        return rc;
    conc__store(&r->owner, me, RLX);
    r->count = 1;
    if (conc__obs_on(CONC__OBS_LOCKDBG)) {
        conc__store(&r->lock.owner, conc__ctx()->serial, RLX);
        if (conc__obs_on(CONC__OBS_LOCKORDER))
            conc__lockdep_acquired(r, CONC__WAIT_RLOCK);
    }
    return 0;
}

int conc_rlock_acquire(conc_rlock_t *r, bool blocking, double timeout)
{
    if (!r)
        return CONC_EINVAL;
    if (__builtin_expect(blocking && timeout == CONC_FOREVER, 1))
        return conc__rlock_acquire_dl(r, CONC__NO_DEADLINE); /* inlined: same file */
    int64_t deadline = CONC__NO_DEADLINE;
    if (!(blocking && timeout == CONC_FOREVER)) {
        int rc = conc__acquire_deadline(blocking, timeout, &deadline);
        if (rc)
            return rc;
    }
    return conc__rlock_acquire_dl(r, deadline);
}

int conc_rlock_release(conc_rlock_t *r)
{
    if (!r)
        return CONC_EINVAL;
    if (conc__load(&r->owner, RLX) != conc__ctx_id())
        return CONC_EPERM;
    if (--r->count == 0) {
        if (conc__obs_on(CONC__OBS_LOCKORDER))
            conc__lockdep_released(r);
        conc__store(&r->owner, (uintptr_t)0, RLX);
        return conc_lock_release(&r->lock);
    }
    return 0;
}

bool conc_rlock_is_owned(const conc_rlock_t *r)
{
    return r && conc__load(&r->owner, RLX) == conc__ctx_id();
}

unsigned long conc_rlock_level(const conc_rlock_t *r)
{
    return conc_rlock_is_owned(r) ? r->count : 0;
}

bool conc_rlock_locked(const conc_rlock_t *r)
{
    return r && conc_lock_locked(&r->lock);
}
