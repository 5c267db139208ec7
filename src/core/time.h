/* time.h — monotonic clock and deadlines (private).
 *
 * A deadline is an absolute CLOCK_MONOTONIC time in nanoseconds;
 * CONC__NO_DEADLINE (INT64_MAX) means forever. */
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

/* Validate a Python-style timeout and turn it into a deadline.
 * timeout: CONC_FOREVER, or >= 0 seconds; NaN and other negatives are
 * CONC_EINVAL; values past ~100 years clamp to forever. Returns 0 or
 * CONC_EINVAL. */
int conc__deadline(double timeout, int64_t *deadline);

/* The acquire(blocking, timeout) convention of Python's locks: validates
 * and sets *deadline (0 = try once, i.e. already passed). */
int conc__acquire_deadline(bool blocking, double timeout, int64_t *deadline);

#endif
