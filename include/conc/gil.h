/*
 * conc/gil.h — a global interpreter lock (全局解释器锁) as a primitive:
 * CPython's GIL algorithm (the "new GIL" of 3.2, Python/ceval_gil.c) for
 * serialising code that is not thread-safe — an embedded interpreter, a
 * non-reentrant library — while bounding how long anyone waits for it.
 *
 * How it behaves (the CPython rules, and where conc differs):
 *   - One holder at a time. The holder runs until it releases the GIL,
 *     releases it around a blocking call (conc_gil_begin_allow /
 *     conc_gil_end_allow, Py_BEGIN_ALLOW_THREADS / Py_END_ALLOW_THREADS),
 *     or is asked to drop it.
 *   - A context that wants the GIL waits for the switch interval (5 ms by
 *     default, sys.getswitchinterval()). If no switch happened meanwhile it
 *     sets the drop request (CPython's gil_drop_request) and keeps waiting.
 *   - The holder calls conc_gil_check at safe points (CPython's eval
 *     breaker, between bytecodes): three relaxed loads when nobody waits; when
 *     the drop request is set — or, checked on every 16th call while
 *     someone waits, the oldest wait has lasted a whole interval (so the
 *     hand-off does not also wait for the waiter's timer to wake it) — it
 *     drops the GIL and queues to take it again.
 *   - Forced switching with FIFO hand-off: a release hands the GIL directly
 *     to the oldest waiter (it is the holder when it wakes), so the dropping
 *     thread cannot take it straight back (CPython's FORCE_SWITCHING waits
 *     for the switch instead), and waiters get it in arrival order (CPython
 *     lets the woken threads race for it). Hence an I/O-bound thread waits
 *     about one interval for a CPU-bound holder that calls check — not the
 *     unbounded convoy of the old GIL that Beazley measured.
 *
 * Holders are execution contexts: an OS thread, or a green thread (each
 * green thread is a holder of its own). CPython under gevent ties the GIL
 * to the OS thread, so greenlets of one thread share its hold; conc does
 * not, because that would let two green threads of one hub interleave
 * inside the code the GIL protects whenever one of them blocks. What stays
 * as under gevent: a green thread running with the GIL blocks its hub's
 * other green threads while it runs (it is cooperative: they run when it
 * blocks or yields), and waiting for the GIL parks only the waiting green
 * thread (its siblings keep running). A green thread that blocks while
 * holding the GIL keeps it (like C code that sleeps without
 * Py_BEGIN_ALLOW_THREADS); release it around the blocking call.
 *
 * Object: a small value, zero-initialised or CONC_GIL_INIT = unlocked,
 * switch interval 5 ms; no destroy. It must outlive every use.
 *
 * Timeouts (conc/base.h): conc_gil_acquire follows Lock.acquire: 0 tries
 * once, CONC_FOREVER waits as long as it takes, a negative or NaN timeout
 * is CONC_EINVAL.
 *
 *     conc_gil_t gil = CONC_GIL_INIT;
 *     conc_gil_acquire(&gil, CONC_FOREVER);
 *     for (...) { step(); conc_gil_check(&gil); }    // a CPU-bound loop
 *     conc_gil_begin_allow(&gil); read(fd, ...); conc_gil_end_allow(&gil);
 *     conc_gil_release(&gil);
 */
#ifndef CONC_GIL_H
#define CONC_GIL_H

#include "conc/sync.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct conc_gil {
    conc__waitq_t q;       /* waiters, FIFO (private) */
    uintptr_t holder;      /* the holding context's id; 0 = free (atomic) */
    unsigned long switches; /* changes of holder (atomic) */
    unsigned int drop_request; /* a waiter asked the holder to drop (atomic) */
    unsigned int ticks;    /* the holder's checks (atomic, holder only) */
    int64_t interval_ns;   /* 0 = the default, 5 ms */
    int64_t asked_ns;      /* since when someone waits (monotonic ns); 0 = nobody (atomic) */
} conc_gil_t;
#define CONC_GIL_INIT {{0, 0, 0, 0}, 0, 0, 0, 0, 0, 0}

/* The default switch interval, seconds (sys.getswitchinterval()). */
#define CONC_GIL_DEFAULT_INTERVAL 0.005

/* Reset g to unlocked with the default interval. 0, or CONC_EINVAL (NULL).
 * Only while nobody uses it. */
CONC_API int conc_gil_init(conc_gil_t *g);

/* Take the GIL (PyEval_AcquireThread). Waits in FIFO order; after each
 * switch interval without a switch it sets the drop request. Returns 0
 * (held), CONC_ETIMEDOUT (the timeout passed, or a Timeout scope ended the
 * wait), CONC_EKILLED (the waiting green thread was killed), CONC_EDEADLK
 * (the caller already holds it: the GIL is not reentrant), CONC_EINVAL (g
 * NULL, negative or NaN timeout). Parks only the calling context. */
CONC_API int conc_gil_acquire(conc_gil_t *g, double timeout);

/* Give the GIL up (PyEval_ReleaseThread): to the oldest waiter, if any.
 * Returns 0, CONC_EPERM (the caller does not hold it) or CONC_EINVAL.
 * Never blocks. */
CONC_API int conc_gil_release(conc_gil_t *g);

/* A safe point for the holder (the eval breaker). When another context has
 * asked for the GIL for longer than the switch interval, drops it (to the
 * oldest waiter) and takes it again behind the waiters already queued.
 * Returns 0 (nobody asked: costs three relaxed loads, no clock read), 1 (it switched: other holders
 * ran in between), CONC_EPERM (the caller does not hold it), CONC_EINVAL.
 * The re-take is not cut short by kills or Timeout scopes (they stay
 * pending for the caller's next blocking call): on return the caller
 * holds the GIL. */
CONC_API int conc_gil_check(conc_gil_t *g);

/* Py_BEGIN_ALLOW_THREADS / Py_END_ALLOW_THREADS around a blocking call:
 * begin releases the GIL (returns as conc_gil_release); end takes it back,
 * waiting as long as it takes and not cut short by kills or Timeout scopes,
 * so it returns 0 holding the GIL (CONC_EDEADLK if the caller holds it
 * already, CONC_EINVAL for NULL). */
CONC_API int conc_gil_begin_allow(conc_gil_t *g);
CONC_API int conc_gil_end_allow(conc_gil_t *g);
#define CONC_GIL_BEGIN_ALLOW_THREADS(g) { conc_gil_begin_allow(g);
#define CONC_GIL_END_ALLOW_THREADS(g) conc_gil_end_allow(g); }

/* sys.setswitchinterval / sys.getswitchinterval, per GIL: seconds.
 * set: 0, or CONC_EINVAL for NULL, NaN, infinite or a value <= 0 (Python's
 * ValueError); values below 1 µs are taken as 1 µs. Takes effect for
 * waits that start afterwards. get: the interval, or NaN for NULL. */
CONC_API int conc_gil_setswitchinterval(conc_gil_t *g, double seconds);
CONC_API double conc_gil_getswitchinterval(const conc_gil_t *g);

/* True when the calling context holds g. */
CONC_API bool conc_gil_held(const conc_gil_t *g);
/* How many times the GIL changed hands (a counter for tests and benches). */
CONC_API unsigned long conc_gil_switches(const conc_gil_t *g);

#ifdef __cplusplus
}
#endif

#endif
