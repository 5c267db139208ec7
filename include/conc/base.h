/*
 * conc/base.h — error codes, timeouts and task failure.
 *
 * Every conc call that can fail returns an int: 0 on success, or a negative
 * CONC_E* code that names the Python exception it stands for. Results come
 * back through out-parameters. conc_strerror() names each code.
 *
 * Timeouts (the one rule; each header lists its calls' behaviour):
 *   - double seconds, as in Python. CONC_FOREVER (INFINITY) is Python's
 *     None: wait forever. So does any value too large to represent (past
 *     ~100 years it is clamped, never overflows). 0 means "do not block"
 *     (one try).
 *   - NaN is CONC_EINVAL wherever a timeout is looked at (a queue call
 *     with block=false ignores its timeout altogether, as Python's does).
 *     -1.0 is not special anywhere: it is a negative timeout like any
 *     other.
 *   - A negative timeout follows the Python original of each call:
 *       "time is already up" — the call does not wait and reports its
 *       timeout (CONC_ETIMEDOUT, or what the call returns on timeout):
 *       Event.wait, Condition.wait / wait_for, Barrier.wait,
 *       Semaphore.acquire, Thread.join, Future.result / exception,
 *       futures wait / as_completed / map, green join / get / wait,
 *       gevent.sleep (conc_sleep: a yield), Timer intervals, Timeout
 *       scopes, cooperative I/O waits, and in multiprocessing (whose
 *       SemLock clamps a negative timeout to 0) Process.join, the
 *       process-shared Lock / RLock / Semaphore / Condition / Event /
 *       Barrier, the cross-process Queue, Connection.poll and pool
 *       results;
 *       CONC_EINVAL before touching any state (Python's ValueError):
 *       Lock / RLock / Condition acquire (in-process, and through a
 *       Manager proxy), queue.Queue put / get where the timeout applies
 *       (a put on an unbounded queue ignores it, as Python's does),
 *       time.sleep (conc_sleep_thread).
 *   - blocking=false takes no timeout: only CONC_FOREVER (Python's
 *     default) is allowed with it; any other value is CONC_EINVAL
 *     (Python's "can't specify a timeout for a non-blocking call").
 *   - So a remaining time computed as `deadline - conc_monotonic()` never
 *     means "forever" once it went negative: a lenient call reports its
 *     timeout at once, a strict one CONC_EINVAL (pass fmax(left, 0) to a
 *     strict call to get its timeout instead).
 * Internally every wait turns its timeout into an absolute
 * CLOCK_MONOTONIC deadline once, at entry, so a call that sleeps and
 * retries never waits longer in total than its timeout.
 */
#ifndef CONC_BASE_H
#define CONC_BASE_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define CONC_API __attribute__((visibility("default")))
#define CONC_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CONC_API
#define CONC_PRINTF(f, a)
#endif

/* Error codes. 0 is success; each negative code names a Python exception. */
enum {
    CONC_OK = 0,
    CONC_EINVAL = -1,     /* ValueError/TypeError: bad argument, NULL, misuse   */
    CONC_ETIMEDOUT = -2,  /* acquire()/wait() returned False; TimeoutError      */
    CONC_EPERM = -3,      /* RuntimeError: release of an unowned lock, joining
                             yourself, starting twice, joining an unstarted one */
    CONC_ENOMEM = -4,     /* MemoryError                                        */
    CONC_EBROKEN = -5,    /* BrokenBarrierError, BrokenExecutor, dead Manager   */
    CONC_EEMPTY = -6,     /* queue.Empty                                        */
    CONC_EFULL = -7,      /* queue.Full                                         */
    CONC_ESHUTDOWN = -8,  /* queue.ShutDown, submit after shutdown              */
    CONC_ECANCELLED = -9, /* CancelledError                                     */
    CONC_EKILLED = -10,   /* GreenletExit: a green thread was killed            */
    CONC_EEOF = -11,      /* EOFError: the peer closed                          */
    CONC_EFAILED = -12,   /* the task waited on failed (see "Outcomes" below)   */
    CONC_ESYS = -13,      /* OSError: the kernel refused (see errno)            */
    CONC_EAGAIN = -14,    /* resource temporarily unavailable (e.g. threads)    */
    CONC_EDEADLK = -15,   /* a deadlock was detected / would occur              */
    CONC_ELOOPEXIT = -16, /* gevent LoopExit: nothing could ever wake the waiter*/
    CONC_ENOTSUP = -17,   /* NotImplementedError / not supported here           */
    CONC_ERANGE = -18,    /* OverflowError: value out of range                  */
    CONC_EOWNERDEAD = -19, /* robust-mutex EOWNERDEAD: the lock is yours now, but
                             its previous holder died holding it; repair the
                             data it protected (process-shared locks only)    */
    CONC_EKEY = -20,      /* KeyError: no such key / key already present
                             (selectors: fd registered twice, or not at all) */
    CONC_EATTR = -21      /* AttributeError: no such attribute (a Manager
                             Namespace), or a method not exposed by a
                             Manager's registered type */
};

/* Returns a static, human readable description of code ("queue.Empty: ...").
 * Never NULL; unknown codes give "unknown error". */
CONC_API const char *conc_strerror(int code);

/* Returns the Python exception name that code stands for ("TimeoutError"),
 * or "OK" for 0. Static string, never NULL. CONC_EBROKEN stands for
 * several Python exceptions and is named "BrokenError"; the failure's
 * message names what broke ("BrokenProcessPool: ...", "BrokenThreadPool:
 * ...", "manager server died" ...). */
CONC_API const char *conc_errname(int code);

/*
 * Outcomes: a caller can always tell "the wait ended" from "the task
 * failed".
 *
 * Every wait on a task's outcome — conc_future_result, conc_future_bytes
 * (AsyncResult.get), conc_pool_apply, conc_map, conc_process_pool_map /
 * conc_pool_map and their results and iterators, conc_green_get,
 * conc_green_offload — returns CONC_EFAILED when the task failed,
 * whatever code the task failed with (even CONC_ETIMEDOUT or
 * CONC_ECANCELLED). The task's own code and
 * message are read separately: conc_future_exception,
 * conc_results_exception, conc_pool_iter_exception, conc_green_exception.
 * The wait's own outcomes keep their codes:
 *   CONC_ETIMEDOUT   this wait's timeout passed (or a Timeout scope ended it);
 *   CONC_ECANCELLED  the future itself was cancelled (cancelled() is true);
 *   CONC_EKILLED     the waiting green thread was killed.
 * A broken pool fails its futures: their exception code is CONC_EBROKEN,
 * with a message naming what broke, and result() returns CONC_EFAILED for
 * them like any failure; submitting to a broken pool returns CONC_EBROKEN.
 */

/* Python's None as a timeout: wait forever (the timeout rule at the top). */
#define CONC_FOREVER ((double)INFINITY)

/* Seconds on the monotonic clock (time.monotonic()). */
CONC_API double conc_monotonic(void);

/* Sleep the calling thread for seconds (time.sleep). Returns 0, or
 * CONC_EINVAL for a negative or NaN value (time.sleep(-1) is ValueError).
 * CONC_FOREVER sleeps 100 years. */
CONC_API int conc_sleep_thread(double seconds);

/*
 * Task failure: Python's "raise" for C tasks.
 *
 * A task function (void *fn(void *)) reports failure by calling conc_fail()
 * and returning; it returns NULL so `return conc_fail(CONC_EINVAL, "x=%d",
 * x);` reads naturally. The failure is recorded on the current execution
 * context (thread now, green thread later). When a Thread's function
 * returns with a recorded failure, the failure hook (threading.excepthook)
 * is called; Futures store it as their exception().
 *
 * code: a negative CONC_E* code; 0 or a positive value becomes CONC_EFAILED.
 * The message is formatted into conc-owned storage (truncated at 255 bytes).
 */
CONC_API void *conc_fail(int code, const char *fmt, ...) CONC_PRINTF(2, 3);

/* Reads the failure recorded on the current context, if any: returns its
 * code (0 if none) and, when msg is not NULL, points *msg at the message
 * (owned by conc, valid until the next conc_fail/conc_fail_clear on this
 * context). */
CONC_API int conc_failure(const char **msg);

/* Forgets the failure recorded on the current context (Python's "except:"). */
CONC_API void conc_fail_clear(void);

#ifdef __cplusplus
}
#endif
#endif /* CONC_BASE_H */
