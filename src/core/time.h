/* time.h — monotonic clock and deadlines (private).
 *
 * A deadline is an absolute CLOCK_MONOTONIC time in nanoseconds;
 * CONC__NO_DEADLINE (INT64_MAX) means forever and 0 means "already
 * passed" (a poll).
 *
 * The timeout rule of conc/base.h lives here, in two helpers, so that no
 * call site compares a timeout with a sentinel of its own:
 *   conc__deadline         Python's "negative = time is already up"
 *                          (Event.wait, join, result, Semaphore.acquire...)
 *   conc__deadline_strict  Python's ValueError for a negative timeout
 *                          (Lock/RLock/Condition acquire, Queue put/get)
 * Both: CONC_FOREVER (+inf) and anything too large to represent (past
 * ~100 years) wait forever; NaN is CONC_EINVAL. */
#ifndef CONC_CORE_TIME_H
#define CONC_CORE_TIME_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define CONC__NO_DEADLINE INT64_MAX

static inline int64_t conc__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Lenient: a negative timeout (-inf included) gives *deadline = 0
 * (already passed: the call does not wait and reports its timeout).
 * Returns 0, or CONC_EINVAL for NaN. */
int conc__deadline(double timeout, int64_t *deadline);

/* Strict: NaN and every negative timeout (-inf included) are CONC_EINVAL;
 * the caller returns it before touching any state. */
int conc__deadline_strict(double timeout, int64_t *deadline);

/* Python's Lock.acquire(blocking, timeout): blocking=false takes no
 * timeout (only CONC_FOREVER, Python's default -1, is allowed; anything
 * else is CONC_EINVAL) and gives *deadline = 0 (try once); blocking=true
 * goes through conc__deadline_strict. */
int conc__acquire_deadline(bool blocking, double timeout, int64_t *deadline);

/* The same for the calls whose Python original treats a negative timeout
 * as "already up" (threading.Semaphore, multiprocessing's SemLock-based
 * primitives): blocking=true goes through conc__deadline. */
int conc__acquire_deadline_lenient(bool blocking, double timeout, int64_t *deadline);

#endif
