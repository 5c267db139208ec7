/* futex.h — thin wrappers over the Linux futex syscall (private, 32-bit words). */
#ifndef CONC_CORE_FUTEX_H
#define CONC_CORE_FUTEX_H

#include <stdint.h>

/* Sleep while *word == expect, until woken or the absolute CLOCK_MONOTONIC
 * deadline (ns; INT64_MAX = none). Returns 0 when woken or the value
 * differed, CONC_ETIMEDOUT at the deadline. Spurious returns are possible. */
int conc__futex_wait(const void *word, uint32_t expect, int64_t deadline_ns, int shared);
/* Wake up to n sleepers on word. Returns how many woke. */
int conc__futex_wake(const void *word, int n, int shared);

#endif
