/*
 * conc/futures.h — concurrent.futures: Future, the Executor interface,
 * ThreadPoolExecutor, wait, as_completed, map — plus then() and a map with
 * a progress callback.
 *
 *     conc_executor_t *ex;
 *     conc_thread_pool_new(&ex, NULL);                 // ThreadPoolExecutor()
 *     conc_future_t *f;
 *     conc_submit(ex, &f, work, arg);                  // f = ex.submit(work, arg)
 *     void *r; conc_future_result(f, CONC_FOREVER, &r); // r = f.result()
 *     conc_future_free(f); conc_executor_free(ex);     // with ex: ...
 *
 * Threads or processes, one word: bytes tasks (conc/pool.h:
 * conc_submit_bytes, conc_map_bytes, conc_future_bytes) run the same on
 * a thread pool and on a process pool:
 *
 *     conc_thread_pool_new(&ex, NULL);   // or: conc_process_pool_new(&ex, NULL);
 *     conc_submit_bytes(ex, &f, square, &x, sizeof x);
 *     conc_future_bytes(f, CONC_FOREVER, &r, &n);
 *
 * Tasks have the pthread shape void *fn(void *arg). A task fails by
 * calling conc_fail(code, fmt, ...) (and returning): its future then holds
 * that code and message as its exception, and result() returns
 * CONC_EFAILED (the outcome rule of conc/base.h).
 *
 * Ownership: futures are reference counted. Every conc_future_t * you get
 * from conc_submit, conc_future_new, conc_future_then or conc_future_ref is
 * a reference you give back with conc_future_free exactly once — at any
 * time, even before the task ran (the executor keeps its own reference).
 * The futures conc_wait and conc_as_completed_next hand out are borrowed
 * (the ones you passed in). Results (void *) are never owned by the
 * future.
 *
 * Blocking calls (result, exception, wait, as_completed, shutdown(wait))
 * park the current context through conc's park layer. A pool worker that
 * waits without a timeout (result, exception, wait with ALL_COMPLETED,
 * map) on a future of its own pool runs that task itself if it has not
 * started — in a context of its own, as if on another worker — so tasks
 * that wait on their subtasks never deadlock the pool. If another worker
 * runs it already, the waiter runs nothing (Python's semantics) unless the
 * pool was made with conc_thread_pool_opts_t.leapfrog: then it may run,
 * meanwhile, subtasks that task (or its subtasks) queued (never an
 * unrelated task). Timed waits never run tasks (a
 * task could overrun the timeout): as in Python, a timed wait for work
 * queued behind busy workers just times out.
 *
 * Timeouts (the rule of conc/base.h): every wait here — result,
 * exception, wait, as_completed, map — treats a negative timeout as
 * "already up", as Python's do: it does not wait and reports its timeout
 * (as_completed still yields the futures already done first; wait returns
 * the two sets). CONC_FOREVER waits as long as it takes; NaN is
 * CONC_EINVAL.
 */
#ifndef CONC_FUTURES_H
#define CONC_FUTURES_H

#include "conc/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct conc_future conc_future_t;

typedef enum conc_future_state {
    CONC_FUTURE_PENDING = 0,
    CONC_FUTURE_RUNNING = 1,
    CONC_FUTURE_CANCELLED = 2,
    CONC_FUTURE_FINISHED = 3
} conc_future_state_t;

/* ------------------------------------------------------------- Future */

/* A new pending future (for people who write executors). Returns 0,
 * CONC_EINVAL, CONC_ENOMEM. */
CONC_API int conc_future_new(conc_future_t **out);
/* Take another reference (returns f). */
CONC_API conc_future_t *conc_future_ref(conc_future_t *f);
/* Give back one reference. Returns 0 or CONC_EINVAL. */
CONC_API int conc_future_free(conc_future_t *f);

/* Wait up to timeout for the outcome. Returns 0 and stores the result in
 * *result (may be NULL); CONC_EFAILED if the task failed, whatever code it
 * failed with (its code and message: conc_future_exception);
 * CONC_ETIMEDOUT only if this wait timed out (or a Timeout scope ended
 * it); CONC_ECANCELLED only if f itself was cancelled (cancelled() is
 * true); CONC_EKILLED if the waiting green thread was killed; CONC_EINVAL.
 * So `while (conc_future_result(f, 1.0, &r) == CONC_ETIMEDOUT)` ends. */
CONC_API int conc_future_result(conc_future_t *f, double timeout, void **result);
/* Wait up to timeout; returns 0 once done and stores the exception's code
 * (0 if the task succeeded) in *code and its message (owned by f, valid
 * while you hold f) in *msg (either may be NULL); CONC_ETIMEDOUT;
 * CONC_ECANCELLED. */
CONC_API int conc_future_exception(conc_future_t *f, double timeout, int *code, const char **msg);

/* Cancel if still pending: returns true if it is (now) cancelled, false if
 * it is running or finished. Idempotent. Wakes waiters, runs callbacks. */
CONC_API bool conc_future_cancel(conc_future_t *f);
CONC_API bool conc_future_cancelled(const conc_future_t *f);
CONC_API bool conc_future_running(const conc_future_t *f);
/* Finished or cancelled. */
CONC_API bool conc_future_done(const conc_future_t *f);
CONC_API conc_future_state_t conc_future_state(const conc_future_t *f);

/* Call fn(f, arg) once f is done: at once in the caller if it already is,
 * otherwise in the context that completes it, after its waiters are woken.
 * Callbacks run in the order they were added. A callback that calls
 * conc_fail is reported through the excepthook (conc_set_excepthook) and
 * does not affect the future or the other callbacks. Returns 0,
 * CONC_EINVAL, CONC_ENOMEM. */
typedef void (*conc_future_cb)(conc_future_t *f, void *arg);
CONC_API int conc_future_add_done_callback(conc_future_t *f, conc_future_cb fn, void *arg);
/* Remove every callback added with this fn and arg that f has not taken
 * to run yet (gevent's unlink, asyncio's remove_done_callback). Returns
 * how many were removed, or CONC_EINVAL. 0 when none is left: they never
 * were added, or f completed and took them (they run, or ran, once each,
 * perhaps right now in the completing context: not waited for). */
CONC_API int conc_future_remove_done_callback(conc_future_t *f, conc_future_cb fn, void *arg);

/* For executors. set_running_or_notify_cancel returns 1 when f moved to
 * RUNNING (run the task); 0 when it was cancelled (do not run it): f is
 * then "cancelled and notified" (CPython's CANCELLED_AND_NOTIFIED) and
 * conc_wait / conc_as_completed count it as done from now on — until
 * then they count a cancelled future as not done; CONC_EPERM when it is
 * already running or done, or was notified once already. Executors call
 * it (or drop a cancelled future) exactly once per future; conc's own
 * executors do, also for futures cancelled by shutdown(cancel_futures). */
CONC_API int conc_future_set_running_or_notify_cancel(conc_future_t *f);
/* Complete f. Return 0, or CONC_EPERM when it is already finished or
 * cancelled (InvalidStateError). code < 0 (else CONC_EFAILED); msg may be
 * NULL. */
CONC_API int conc_future_set_result(conc_future_t *f, void *result);
CONC_API int conc_future_set_exception(conc_future_t *f, int code, const char *msg);

/* Beyond Python: a new future that completes with fn(result, arg) once f
 * finishes successfully; fn runs in the context that completes f (or at
 * once if f is done). If f fails or is cancelled, the new future gets the
 * same exception (or is cancelled) and fn does not run; if fn calls
 * conc_fail, the new future holds that failure. Returns 0 and a new
 * reference in *out, CONC_EINVAL, CONC_ENOMEM. */
CONC_API int conc_future_then(conc_future_t *f, conc_future_t **out,
                              void *(*fn)(void *result, void *arg), void *arg);

/* ----------------------------------------------------------- Executor */

typedef struct conc_executor conc_executor_t;

/* The interface every executor implements (thread pool now; process,
 * green and MPI pools later). Embed conc_executor_t first in your struct. */
typedef struct conc_executor_ops {
    const char *name;
    /* Schedule fn(arg); store a new future reference in *out. */
    int (*submit)(conc_executor_t *ex, conc_future_t **out, void *(*fn)(void *), void *arg);
    int (*shutdown)(conc_executor_t *ex, bool wait, bool cancel_futures);
    /* Free everything (called by conc_executor_free after shutdown(wait)). */
    void (*destroy)(conc_executor_t *ex);
} conc_executor_ops_t;

struct conc_executor {
    const conc_executor_ops_t *ops;
};

/* Executor.submit. Returns 0 and a new future in *out; CONC_ESHUTDOWN after
 * shutdown, or for any executor once conc's exit step ran (from a later
 * atexit handler: conc/thread.h); CONC_EBROKEN when the executor is broken (e.g. its initializer
 * failed); CONC_EINVAL; CONC_ENOMEM; CONC_ENOTSUP on a process pool or an
 * MPI executor (arg would reach another process as a bare number: use the
 * bytes tasks of conc/pool.h — conc_submit_bytes runs the same task on a
 * thread pool and on a process pool, so switching is one word — or, for
 * a value that is no pointer, conc_process_pool_submit_word). conc_map and
 * conc_map_iter_new submit through it and return the same. */
CONC_API int conc_submit(conc_executor_t *ex, conc_future_t **out, void *(*fn)(void *), void *arg);
/* Executor.shutdown(wait, cancel_futures): no new submits; with
 * cancel_futures, work not yet started is cancelled; with wait, blocks
 * until running work is done and the workers are gone. Returns 0 or
 * CONC_EINVAL. Harmless to call twice. */
CONC_API int conc_executor_shutdown(conc_executor_t *ex, bool wait, bool cancel_futures);
/* shutdown(wait=true) then free. Returns 0, CONC_EINVAL, or CONC_EPERM
 * when called from one of the executor's own workers. */
CONC_API int conc_executor_free(conc_executor_t *ex);

/* Options for conc_map; NULL or a zero struct means Python's defaults:
 * no timeout, no progress. */
typedef struct conc_map_opts {
    /* Overall, seconds (the rule of conc/base.h: negative is already up).
     * Used when nonzero or when has_timeout is set; 0 alone means none
     * (Python's timeout=None), so {.progress = cb} waits as long as it
     * takes. A timeout of 0 (poll once): {.timeout = 0, .has_timeout = true}. */
    double timeout;
    /* Called (in the mapping thread) each time another item is done. */
    void (*progress)(size_t done, size_t total, void *arg);
    void *progress_arg;
    size_t *failed_index;  /* if set: which item failed or timed out */
    /* If set: on CONC_EFAILED, a new reference to the future of the item
     * that failed (its code and message: conc_future_exception; free it). */
    conc_future_t **failed_future;
    bool has_timeout;      /* use timeout even when it is 0 */
    /* Items per task (0 or 1: one each). Python's ThreadPoolExecutor
     * ignores chunksize; conc batches on any executor that runs tasks in
     * this process, which only saves per-task overhead (same results,
     * same order). A chunk fails at its first failing item. */
    size_t chunksize;
    /* 3.14's buffersize, for conc_map_iter_new: at most this many tasks
     * submitted ahead of the consumer (0: Python's None, all at once). */
    size_t buffersize;
} conc_map_opts_t;

/* Executor.map: run fn(args[i]) for i < n and store the results, in order,
 * in results[i]. Returns 0 when all succeeded; CONC_EFAILED when an item
 * failed (the first, in submission order; whatever code it failed with:
 * see failed_future); CONC_ETIMEDOUT only when the overall timeout passed;
 * CONC_ECANCELLED when an item was cancelled (shutdown with
 * cancel_futures) — and in all three cases everything not yet started is
 * cancelled. CONC_EINVAL, CONC_ESHUTDOWN, CONC_EBROKEN as for submit. */
CONC_API int conc_map(conc_executor_t *ex, void *(*fn)(void *), void *const *args, size_t n,
                      void **results, const conc_map_opts_t *opts);

/* Executor.map's lazy result iterator (`for r in ex.map(fn, args, timeout,
 * chunksize, buffersize)`): results come out in input order, each as soon
 * as it (and the ones before it) are done. opts: timeout (one deadline
 * from _new for the whole iteration), chunksize, buffersize; progress and
 * failed_* are not used here. args must stay valid until free. Returns 0,
 * or what a submit returned (CONC_ESHUTDOWN, CONC_EBROKEN...; nothing is
 * left running then), CONC_EINVAL, CONC_ENOMEM. */
typedef struct conc_map_iter conc_map_iter_t;
CONC_API int conc_map_iter_new(conc_map_iter_t **out, conc_executor_t *ex, void *(*fn)(void *), void *const *args,
                               size_t n, const conc_map_opts_t *opts);
/* The next result: 0, it in *result and its input index in *index (either
 * may be NULL); CONC_EEOF after the last. As Python's generator raises
 * and ends: CONC_EFAILED (item *index failed: conc_map_iter_exception),
 * CONC_ECANCELLED (an item was cancelled, e.g. by shutdown) or
 * CONC_ETIMEDOUT (the overall timeout passed) cancel everything not
 * started, and every later call returns CONC_EEOF. An interruption of the
 * caller (CONC_EKILLED; CONC_ETIMEDOUT from a Timeout scope) leaves it
 * usable. Blocks the calling context only. */
CONC_API int conc_map_iter_next(conc_map_iter_t *it, void **result, size_t *index);
/* The failed item's code and message (valid until free), 0 if none. */
CONC_API int conc_map_iter_exception(const conc_map_iter_t *it, int *code, const char **msg);
/* Cancel what has not started and free. Waits for chunk tasks already
 * running (chunksize > 1: they write into the iterator); single-item
 * tasks running on are left to finish alone. Returns 0 or CONC_EINVAL. */
CONC_API int conc_map_iter_free(conc_map_iter_t *it);

/* ThreadPoolExecutor options; NULL or zero fields mean the defaults. */
typedef struct conc_thread_pool_opts {
    size_t max_workers;            /* 0: min(32, cpu_count + 4) */
    const char *thread_name_prefix; /* "ThreadPoolExecutor-N" by default */
    /* Runs once in each worker before any task; if it calls conc_fail the
     * failure is reported on stderr ("Exception in initializer:", as
     * Python logs it) and the pool is broken (BrokenThreadPool): pending
     * futures fail with code CONC_EBROKEN and a message that carries the
     * initializer's code and message; later submits return CONC_EBROKEN. */
    void (*initializer)(void *arg);
    void *initarg;
    /* true: a worker waiting (without a timeout) on a task that another
     * worker runs may run that task's subtasks meanwhile (leapfrogging,
     * docs/futures.md): faster recursive fork-join, where every task waits
     * for the subtasks it submits. Off by default (Python's waits run
     * nothing): with it, a subtask its parent does not wait for, which
     * blocks until the waiting task goes on after its wait, deadlocks. */
    bool leapfrog;
} conc_thread_pool_opts_t;

/* A ThreadPoolExecutor. Workers start lazily (one per submit while fewer
 * than max_workers exist and none is idle, as Python 3.8+: a worker that
 * finished its task counts as idle, so back-to-back submit/result pairs
 * use one thread) and are reused. Returns 0 and
 * a new executor in *out (free with conc_executor_free), CONC_EINVAL,
 * CONC_ENOMEM. At process exit, pools still alive are shut down and their
 * workers joined (Python's behaviour). */
CONC_API int conc_thread_pool_new(conc_executor_t **out, const conc_thread_pool_opts_t *opts);

/* ----------------------------------------------------- wait, as_completed */

typedef enum conc_return_when {
    CONC_FIRST_COMPLETED = 0,
    CONC_FIRST_EXCEPTION = 1,
    CONC_ALL_COMPLETED = 2
} conc_return_when_t;

/* concurrent.futures.wait: wait until return_when holds or the timeout
 * passes (one deadline for the whole call). Done means finished, or
 * cancelled and notified (see set_running_or_notify_cancel). Duplicates in fs count once.
 * Fills done[] / not_done[] (each of capacity n, either may be NULL) with
 * borrowed pointers (no new references) and their counts. Returns 0 (also
 * on timeout, as Python returns the two sets), CONC_EINVAL, or — with the
 * sets still filled — the interruption that cut the wait short: a kill of
 * the calling green thread (CONC_EKILLED) or an expired timeout scope
 * (CONC_ETIMEDOUT; see conc/green.h). */
CONC_API int conc_wait(conc_future_t *const *fs, size_t n, double timeout, conc_return_when_t return_when,
                       conc_future_t **done, size_t *ndone, conc_future_t **not_done, size_t *nnot_done);

/* concurrent.futures.as_completed: an iterator over fs (duplicates once)
 * yielding each future as it finishes (those already done first). As for
 * conc_wait, a cancelled future counts as done once its executor was
 * notified (conc_future_set_running_or_notify_cancel). */
typedef struct conc_as_completed conc_as_completed_t;
/* timeout: one deadline for the whole iteration (CONC_FOREVER: none). */
CONC_API int conc_as_completed_new(conc_as_completed_t **out, conc_future_t *const *fs, size_t n,
                                   double timeout);
/* Next finished future: returns 0 and a borrowed pointer in *f (valid while
 * the iterator lives); CONC_ETIMEDOUT when the deadline passes first (the
 * iterator stays usable); CONC_EEOF when every future has been yielded. */
CONC_API int conc_as_completed_next(conc_as_completed_t *it, conc_future_t **f);
/* How many of the iterator's distinct futures have not finished (yet): the
 * count in CPython's TimeoutError "%d (of %d) futures unfinished", read
 * after conc_as_completed_next returned CONC_ETIMEDOUT; *total (may be
 * NULL) gets the "of" part, the number of distinct futures. 0 for NULL. */
CONC_API size_t conc_as_completed_unfinished(conc_as_completed_t *it, size_t *total);
/* Free the iterator (at any time): the callbacks it left on futures not
 * yet done are removed, so nothing stays behind on a long-lived future. */
CONC_API int conc_as_completed_free(conc_as_completed_t *it);

#ifdef __cplusplus
}
#endif
#endif /* CONC_FUTURES_H */
