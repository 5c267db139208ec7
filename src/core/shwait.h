/*
 * shwait.h — colorless waits on process-shared futex words (private).
 *
 * conc__shared_wait(word, expect, deadline) sleeps while *word == expect
 * (a word in shared memory that another process changes and then wakes
 * with a shared FUTEX_WAKE), the way every conc wait sleeps:
 *   - an OS thread sleeps in futex(2) itself (shared, not private), its
 *     deadline cut to the earliest open timeout scope;
 *   - a green thread (or a hub's own context) hands the word to this
 *     process's waiter thread, which sleeps in futex_waitv(2) on every
 *     word green threads wait on, and parks through conc__park: its
 *     siblings keep running, and kill and Timeout scopes cut it short.
 * See shwait.c for the waiter threads and why no wakeup is lost.
 *
 * Like futex(2), a return says nothing for sure: the caller re-reads its
 * condition after every return and waits again if it still holds.
 */
#ifndef CONC_CORE_SHWAIT_H
#define CONC_CORE_SHWAIT_H

#include <stdbool.h>
#include <stdint.h>

#include "conc/base.h"
#include "core/park.h"

/* Sleep while *word == expect, until woken, the deadline (absolute
 * CLOCK_MONOTONIC ns; CONC__NO_DEADLINE: none) or an interruption.
 * Returns 0 (woken, the value differed, or spuriously), CONC_ETIMEDOUT
 * (the deadline, or a timeout scope: conc__is_cut tells them
 * apart right after the call), CONC_EKILLED (a green thread was killed)
 * or another interruption of conc__park. On every return the caller is
 * deregistered: nothing touches the wait afterwards. With ctx->nointr set
 * (conc's own uninterruptible waits) no scope or kill cuts it. */
int conc__shared_wait(uint32_t *word, uint32_t expect, int64_t deadline);

/* An interruption saved across conc's own uninterruptible waits (e.g. a
 * relock after a condition wait), which reset what conc__park_interrupted
 * reads. conc__cut_save(rc) right after the wait that returned rc;
 * .code is rc when it was an interruption, else 0. conc__cut_rearm: the
 * wait turned out satisfied after all: the caller reports success, and
 * the interruption is delivered at its next blocking call instead (as
 * conc__park_rearm). */
/* rc, just returned by a wait of the calling context (a park,
 * conc__shared_wait, conc__fd_wait...), is an interruption: a kill, a
 * LoopExit, or a Timeout scope's CONC_ETIMEDOUT — not the wait's own
 * deadline and not an error of the wait (unlike conc__park_interrupted,
 * which takes every nonzero park result but a timeout). */
static inline bool conc__is_cut(int rc)
{
    return rc == CONC_EKILLED || rc == CONC_ELOOPEXIT || (rc == CONC_ETIMEDOUT && conc__ctx()->cut_scope >= 0);
}

typedef struct conc__cut {
    int code;
    int8_t scope;
} conc__cut_t;
static inline conc__cut_t conc__cut_save(int rc)
{
    conc__cut_t c = {conc__is_cut(rc) ? rc : 0, conc__ctx()->cut_scope};
    return c;
}
void conc__cut_rearm(const conc__cut_t *c);

/* Tests: how many waiter threads run now. */
int conc__shared_waiters_running(void);

#endif
