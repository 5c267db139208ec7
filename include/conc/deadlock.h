/*
 * conc/deadlock.h — deadlock tools to keep switched on in tests:
 * lock-order checking (before any deadlock happens) and runtime deadlock
 * detection (when one happens). Both are off until asked for, by a call
 * or by the environment, parsed once at load time:
 *
 *     CONC_DEBUG=lockorder            lock-order checking
 *     CONC_DEBUG=deadlock             runtime deadlock detection
 *     CONC_DEBUG=lockorder,abort      ...and abort() after the first report
 *     CONC_DEBUG=1                    (the timeout-scope check, conc/green.h)
 *
 * (a comma list; the words may be combined: CONC_DEBUG=1,deadlock).
 *
 * Lock-order checking: every acquire of a Lock, an RLock (its first
 * level), a Condition's lock (also its re-acquire after a wait), a
 * BoundedSemaphore of 1 (a lock by another name) by any
 * context (OS thread or green thread) records "held A, then took B" edges
 * between the locks the context holds and the new one. The first acquire
 * whose edge closes a cycle in that graph is reported on stderr — the
 * cycle's locks (names, see conc_set_name, or addresses), the threads and
 * the backtrace of every acquisition on it — once per edge, then the
 * program goes on (or aborts, CONC_DEBUG_ABORT). Nothing has to deadlock
 * for the report: ABBA on two threads one after the other is reported.
 * Process-shared Locks, RLocks and BoundedSemaphores of 1 (conc/ipc.h)
 * are tracked by their address in this process's mapping, this process's
 * acquires only; reports call them "shared Lock", "shared RLock",
 * "shared Semaphore" (with their conc_set_name name, if any).
 * Not tracked: other Semaphores (any context may release one: no owner to
 * hold it), conc's own internal locks.
 *
 * Runtime deadlock detection: a blocking Lock / RLock / Condition-lock
 * acquire, thread join or green-thread join that has waited for the
 * detection delay (100 ms by default) checks the wait-for graph: whom
 * does the lock's holder (the last acquirer of a Lock, the owner of an
 * RLock) or the joined thread wait for, and so on. When the chain comes
 * back to the caller, the caller's wait returns CONC_EDEADLK and the cycle
 * is printed on stderr; the others in the cycle go on waiting (so the one
 * that got CONC_EDEADLK can back off: release what it holds, and the rest
 * proceed). It checks again after every further delay. A Lock acquired a
 * second time by the context that holds it returns CONC_EDEADLK at once
 * (a Lock has no owner in Python; with detection on its last acquirer is
 * taken as the holder; the same for a shared Lock). A process-shared
 * Lock, RLock or BoundedSemaphore of 1 (conc/ipc.h) is in the graph while
 * a context of this process holds it (a process-local side table; nothing is written to shared
 * memory); holders in other processes are not (their waits are not
 * visible here). Waits on Events, Queues, Futures, Semaphores and the
 * other process-shared objects have no single holder and are not judged.
 *
 * Cost: with both off, a Lock's uncontended acquire and release test one
 * global word more (the inlined fast path, conc/sync.h); a library built
 * with -DCONC_OBSERVE=OFF has no hook at all.
 */
#ifndef CONC_DEADLOCK_H
#define CONC_DEADLOCK_H

#include "conc/base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CONC_DEBUG_LOCKORDER 0x1u /* lock-order checking */
#define CONC_DEBUG_DEADLOCK 0x2u  /* runtime deadlock detection */
#define CONC_DEBUG_ABORT 0x4u     /* abort() after the first report */

/* Switch the tools in flags on / off (at any time; locks taken while
 * lock-order checking was off are not in the graph). Returns 0, or
 * CONC_EINVAL for unknown bits or a library built without them
 * (-DCONC_OBSERVE=OFF). */
CONC_API int conc_debug_enable(unsigned flags);
CONC_API int conc_debug_disable(unsigned flags);
/* The CONC_DEBUG_* bits now on. */
CONC_API unsigned conc_debug_flags(void);

/* How long a blocking wait waits before it checks the wait-for graph
 * (and between checks): seconds > 0, default 0.1. Returns 0 or
 * CONC_EINVAL (<= 0, NaN, more than an hour). */
CONC_API int conc_debug_set_delay(double seconds);

/* Name obj (a lock, a queue... any address) in reports and dumps; the
 * name is copied (63 bytes kept). NULL name forgets it. Returns 0,
 * CONC_EINVAL (obj NULL) or CONC_ENOMEM. */
CONC_API int conc_set_name(const void *obj, const char *name);

/* obj (a lock about to be freed or reused) leaves the lock-order graph:
 * its edges and its name go. conc's Lock/RLock/Condition are plain
 * values without a destroy function, so call this before freeing memory
 * that held a lock while lock-order checking was on; a lock that is never
 * freed (a static one) needs nothing. Returns 0 (also when unknown). */
CONC_API int conc_debug_forget(const void *obj);

#ifdef __cplusplus
}
#endif
#endif
