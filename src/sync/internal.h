/* internal.h — what the sync files share (private). */
#ifndef CONC_SYNC_INTERNAL_H
#define CONC_SYNC_INTERNAL_H

#include "conc/sync.h"
#include "core/park.h"

int conc__lock_acquire_slow(conc_lock_t *l, int64_t deadline);
/* Test hook (lock.c): the debug acquire (and a condition's relock) calls
 * it once it holds l, before l is marked TRACKED. NULL: none. */
extern void (*conc__lock_dbg_test_hook)(conc_lock_t *l);
/* Lock debugging, once the caller took l: record serial as its holder and
 * mark l TRACKED — unless l was released meanwhile (any thread may release
 * a Lock): a free lock never carries TRACKED (lock.c). */
void conc__lock_track(conc_lock_t *l, unsigned serial);
/* Acquire with a deadline (CONC__NO_DEADLINE, 0 = try once). */
static inline int conc__lock_acquire_dl(conc_lock_t *l, int64_t deadline)
{
    unsigned exp = 0;
    if (atomic_compare_exchange_strong_explicit(CONC__A(&l->state), &exp, 1u, ACQ, RLX))
        return 0;
    return conc__lock_acquire_slow(l, deadline);
}
/* Take l for conc's own bookkeeping (a condition's relock, a table
 * guard): never cut short by a kill or a timeout scope — those stay
 * pending for the caller's next blocking call. */
static inline void conc__lock_hold(conc_lock_t *l)
{
    unsigned exp = 0;
    if (atomic_compare_exchange_strong_explicit(CONC__A(&l->state), &exp, 1u, ACQ, RLX))
        return;
    conc__ctx_t *ctx = conc__ctx();
    ctx->nointr++;
    conc__lock_acquire_slow(l, CONC__NO_DEADLINE);
    ctx->nointr--;
}
/* After a release found ACT (or whenever l may be free with waiters
 * queued: it checks): hand l to the waiter that asked, or wake the oldest
 * waiter as the candidate (lock.c). */
void conc__lock_wake(conc_lock_t *l);
/* Under l->q's guard, after pushing waiters onto l->q from outside
 * lock.c (cond.c's wait morphing); afterwards call conc__lock_wake. */
void conc__lock_queued(conc_lock_t *l);
int conc__rlock_acquire_dl(conc_rlock_t *r, int64_t deadline);

#endif
