/* internal.h — what the sync files share (private). */
#ifndef CONC_SYNC_INTERNAL_H
#define CONC_SYNC_INTERNAL_H

#include "conc/sync.h"
#include "core/park.h"

int conc__lock_acquire_slow(conc_lock_t *l, int64_t deadline);
/* Test hook (lock.c): the debug acquire calls it once it holds l, before
 * l is marked TRACKED. NULL: none. */
extern void (*conc__lock_dbg_test_hook)(conc_lock_t *l);
/* Acquire with a deadline (CONC__NO_DEADLINE, 0 = try once). */
static inline int conc__lock_acquire_dl(conc_lock_t *l, int64_t deadline)
{
    unsigned char exp = 0;
    if (atomic_compare_exchange_strong_explicit(CONC__A(&l->state), &exp, (unsigned char)1, ACQ, RLX))
        return 0;
    return conc__lock_acquire_slow(l, deadline);
}
/* Take l for conc's own bookkeeping (a condition's relock, a table
 * guard): never cut short by a kill or a timeout scope — those stay
 * pending for the caller's next blocking call. */
static inline void conc__lock_hold(conc_lock_t *l)
{
    unsigned char exp = 0;
    if (atomic_compare_exchange_strong_explicit(CONC__A(&l->state), &exp, (unsigned char)1, ACQ, RLX))
        return;
    conc__ctx_t *ctx = conc__ctx();
    ctx->nointr++;
    conc__lock_acquire_slow(l, CONC__NO_DEADLINE);
    ctx->nointr--;
}
/* conc__lock_wake (conc/sync.h): what a release that finds the ctl byte's
 * ACT bit calls; also called when the lock may be free with waiters
 * queued (it checks). conc__lock_queued: under l->q's guard, after
 * pushing waiters onto l->q from outside lock.c (cond.c). */
void conc__lock_queued(conc_lock_t *l);
int conc__rlock_acquire_dl(conc_rlock_t *r, int64_t deadline);

#endif
