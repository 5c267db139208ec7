/*
 * conc/pool.h — process pools: concurrent.futures.ProcessPoolExecutor and
 * multiprocessing.Pool.
 *
 *     static int square(const void *arg, size_t len, conc_pool_out_t *out)
 *     {
 *         int x = *(const int *)arg, y = x * x;
 *         return conc_pool_return(out, &y, sizeof y);
 *     }
 *     CONC_POOL_REGISTER(square);                         // file scope
 *
 *     int main(int argc, char **argv) {
 *         CONC_PROCESS_MAIN(argc, argv);                  // see conc/process.h
 *         conc_executor_t *ex;
 *         conc_process_pool_new(&ex, NULL);               // ProcessPoolExecutor()
 *         conc_future_t *f; int x = 7;
 *         conc_process_pool_submit(ex, &f, square, &x, sizeof x);
 *         const void *r; size_t n;
 *         conc_future_bytes(f, CONC_FOREVER, &r, &n);     // *(int *)r == 49
 *         conc_future_free(f); conc_executor_free(ex);
 *     }
 *
 * Tasks. A pool task runs in a worker process and has the shape
 * conc_pool_fn: it gets a private copy of its byte-buffer argument and
 * hands back its result bytes with conc_pool_return (called any number of
 * times: the pieces are appended; none means an empty result). It fails
 * by calling conc_fail(code, fmt, ...) — the caller's wait then returns
 * CONC_EFAILED and the exception getters give that code and message — or
 * by returning a nonzero value (a negative CONC_E* code is kept, anything
 * else becomes CONC_EFAILED).
 *
 * Outcomes (the rule of conc/base.h): every wait or read of a task's
 * outcome — conc_future_bytes / conc_future_result (AsyncResult.get),
 * conc_results_item, conc_pool_iter_next, the maps, conc_pool_apply —
 * returns CONC_EFAILED when the task (or item) failed, whatever code it
 * failed with; CONC_ETIMEDOUT only for the wait's own timeout;
 * CONC_ECANCELLED only for a cancelled task. The failure's own code and
 * message: conc_future_exception, conc_results_exception,
 * conc_pool_iter_exception. Task functions must be
 * registered: CONC_POOL_REGISTER(fn) at file scope (CONC_REGISTER works
 * too; see conc/process.h for why functions are named through a registry).
 *
 * Results. The future of a bytes task (conc_process_pool_submit,
 * conc_pool_apply_async) holds conc-owned result bytes: read them with
 * conc_future_bytes; they live as long as the future (freed with its last
 * reference). map-like calls return a conc_results_t (one result or
 * failure per item) that the caller frees.
 *
 * Timeouts (the rule of conc/base.h): every wait here — future bytes,
 * map, the iterators' next, AsyncResult waits, Pool join — treats a
 * negative timeout as already up (AsyncResult.get waits on an Event in
 * Python); NaN is CONC_EINVAL.
 *
 * Items. map, imap and imap_unordered take their inputs as
 * (items, item_size, n): n items of item_size bytes each, one after the
 * other; or, when item_size is 0, items points at n conc_buf_t (items of
 * any size). Inputs are copied before the call returns.
 *
 * One word between threads and processes. conc_submit_bytes and
 * conc_map_bytes take the bytes task above on ANY executor: on a process
 * pool (or an MPI executor, conc/mpi.h) it runs in a worker process; on a
 * ThreadPoolExecutor (conc_thread_pool_new) or any other executor that
 * runs tasks in this process it runs in one of its threads — with the
 * same private copy of the argument (the caller may reuse its buffer at
 * once), the same conc_pool_return, the same futures and result getters
 * (conc_future_bytes, conc_results_*), the same failures and
 * cancellation. So switching is one word:
 *
 *     conc_thread_pool_new(&ex, NULL);   // or: conc_process_pool_new(&ex, NULL);
 *     conc_submit_bytes(ex, &f, square, &x, sizeof x);
 *     conc_future_bytes(f, CONC_FOREVER, &r, &n);
 *     conc_map_bytes(ex, square, xs, sizeof *xs, 100, 10, CONC_FOREVER, &res);
 *
 * Register the task once (CONC_POOL_REGISTER, file scope): a process pool
 * needs it (a spawned or fork-server worker finds fn by its name); a
 * thread pool does not look, so the same code runs on both.
 * conc_process_pool_submit / conc_process_pool_map are the same two calls
 * under their older names.
 *
 * The Executor interface. A process pool is a conc_executor_t:
 * conc_executor_shutdown and conc_executor_free work on it. conc_submit,
 * conc_map and conc_map_iter_new (the pthread-shaped void *fn(void *))
 * are refused on it with CONC_ENOTSUP: their void * would reach the worker
 * as a bare number, and a pointer means nothing in another process
 * (earlier versions sent it by value, silently). The by-value "word" tasks
 * remain, asked for by name: conc_process_pool_submit_word and
 * conc_process_pool_map_word (fn registered with CONC_REGISTER; the
 * argument and the result travel as integers, uintptr_t-sized).
 *
 * Workers. max_workers processes, started when the pool is created (each
 * with the start method asked for; CONC_START_DEFAULT is fork while the
 * process has a single thread, the fork server afterwards — replacements
 * for retired or dead workers, started once the pool's own threads run,
 * therefore come from the fork server). Each worker has its own
 * shared-memory task queue (conc_mpqueue_t) and all share one result
 * queue; short tasks travel in batches sized from their measured run
 * time, so a busy pool makes no system call per task. A parent thread
 * watches every worker's pidfd and notices a death at once.
 *
 * Dead workers. ProcessPoolExecutor: a worker that dies (signal, _exit, a
 * crash in a task) breaks the pool (BrokenProcessPool): every pending and
 * running future fails (result: CONC_EFAILED) with exception code
 * CONC_EBROKEN and a message that starts "BrokenProcessPool:" and names
 * the worker's pid and how it ended, later submits fail with CONC_EBROKEN, the other
 * workers are killed and everything is reaped. Pool: the dead worker is
 * replaced and only the tasks it had taken and not yet reported fail with
 * CONC_EBROKEN (the one it was running — and, since results travel in
 * batches, possibly some it had finished within the last 50 µs); tasks
 * still queued for it go to its replacement. Python's Pool hangs there.
 *
 * Initializer (both): runs once in each worker before any task; if it
 * fails (conc_fail or a nonzero return) the pool is broken as above.
 *
 * Limits: a task's argument (or a map chunk's items) must fit in half a
 * task queue (queue_capacity / 2, default 2 MiB); a larger one is refused
 * with CONC_ERANGE at submit. One item's result must fit in a quarter of
 * the result queue (default 2 MiB); a larger one makes that item fail with
 * CONC_ERANGE. Raise queue_capacity for bigger messages.
 *
 * Exit. At normal exit a ProcessPoolExecutor still alive is shut down with
 * wait (Python joins its manager at exit); a Pool is terminated. Worker
 * processes never outlive their pool; none is left a zombie. A worker
 * exits by itself if the process that owns the pool goes away.
 */
#ifndef CONC_POOL_H
#define CONC_POOL_H

#include "conc/base.h"
#include "conc/futures.h"
#include "conc/process.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where a task writes its result (opaque; valid during the call only). */
typedef struct conc_pool_out conc_pool_out_t;

/* A pool task (see the top of this file). */
typedef int (*conc_pool_fn)(const void *arg, size_t len, conc_pool_out_t *out);

/* Registry tag of pool tasks. */
#define CONC_SIG_POOL 3
/* Register a pool task under its own name (file scope). */
#define CONC_POOL_REGISTER(fn) CONC_REGISTER_AS(fn, #fn, CONC_SIG_POOL)

/* In a task: append len bytes at data to its result. Returns 0,
 * CONC_EINVAL (NULL out, NULL data with len > 0), CONC_ENOMEM. */
CONC_API int conc_pool_return(conc_pool_out_t *out, const void *data, size_t len);

/* A byte buffer (items of any size, when item_size is 0). */
typedef struct conc_buf {
    const void *data;
    size_t len;
} conc_buf_t;

/* ------------------------------------------------------------ Results */

/* The results of a map: one outcome per item, in item order. */
typedef struct conc_results conc_results_t;

/* Number of items. 0 for NULL. */
CONC_API size_t conc_results_len(const conc_results_t *r);
/* Item i: returns 0 and its result bytes in *data, *len (owned by r);
 * CONC_EFAILED when the item failed (whatever its code; read it with
 * conc_results_exception) or CONC_ECANCELLED when it was cancelled, with
 * the message (NUL-terminated, owned by r) in *data and its length in
 * *len; CONC_EINVAL (NULL r, i out of range). data and len may be NULL. */
CONC_API int conc_results_item(const conc_results_t *r, size_t i, const void **data, size_t *len);
/* Item i's exception: returns 0 and stores its own failure code in *code
 * (0 if it succeeded, CONC_ECANCELLED if it was cancelled) and its message
 * (owned by r; NULL if it succeeded) in *msg; CONC_EINVAL. */
CONC_API int conc_results_exception(const conc_results_t *r, size_t i, int *code, const char **msg);
/* Copy every result into dst[i * item_size]. Returns 0; CONC_EFAILED (or
 * CONC_ECANCELLED) at the first item that failed; CONC_ERANGE when a
 * result is not exactly item_size bytes (copying stops there);
 * CONC_EINVAL. */
CONC_API int conc_results_copy(const conc_results_t *r, void *dst, size_t item_size);
/* Free r (NULL is a no-op). */
CONC_API void conc_results_free(conc_results_t *r);

/* Result bytes of a future of a bytes task (AsyncResult.get): waits up to
 * timeout, then returns 0 with *data, *len (owned by the future, valid
 * while you hold a reference); CONC_ETIMEDOUT; CONC_ECANCELLED;
 * CONC_EFAILED if the task failed (its code and message:
 * conc_future_exception); CONC_EINVAL (NULL f, bad timeout, a
 * future that does not hold result bytes). */
CONC_API int conc_future_bytes(conc_future_t *f, double timeout, const void **data, size_t *len);

/* ------------------------------------------------ ProcessPoolExecutor */

/* Options; NULL or zero fields mean the defaults. */
typedef struct conc_process_pool_opts {
    size_t max_workers;             /* 0: conc_cpu_count() */
    conc_start_method_t method;     /* mp_context */
    conc_process_fn initializer;    /* registered; NULL: none */
    const void *initarg;            /* copied; its argument */
    size_t initarg_len;
    unsigned max_tasks_per_child;   /* 0: no limit; not with method CONC_FORK (replacement
                                       workers would be forks of a threaded parent): that
                                       is CONC_EINVAL; with CONC_START_DEFAULT while the
                                       default is fork, the pool uses the fork server */
    size_t queue_capacity;          /* bytes per task queue, 0: 4 MiB;
                                       the result queue has twice that */
} conc_process_pool_opts_t;

/* ProcessPoolExecutor(...). Starts the workers and returns 0 and a new
 * executor in *out (free with conc_executor_free); CONC_EINVAL (NULL out,
 * unregistered initializer for spawn/forkserver, max_workers > 1024,
 * max_tasks_per_child with method CONC_FORK: Python's ValueError);
 * CONC_ENOMEM; CONC_ESYS (a worker could not be started). */
CONC_API int conc_process_pool_new(conc_executor_t **out, const conc_process_pool_opts_t *opts);

/* Executor.submit(fn, arg): the older name of conc_submit_bytes (below),
 * and the same call: arg (len bytes) is copied. Returns 0 and a new
 * future in *out (results: conc_future_bytes); CONC_ESHUTDOWN after
 * shutdown; CONC_EBROKEN when the pool is broken; CONC_EINVAL (NULL, fn
 * not registered); CONC_ERANGE (arg too large); CONC_ENOMEM. Never
 * blocks on the workers. */
CONC_API int conc_process_pool_submit(conc_executor_t *ex, conc_future_t **out, conc_pool_fn fn,
                                      const void *arg, size_t len);

/* Executor.map(fn, items, timeout, chunksize) — the older name of
 * conc_map_bytes, the same call: runs fn on every item
 * (chunksize items per task; 0 means 1, as in Python) and waits for all.
 * Returns 0 when every item succeeded, otherwise CONC_EFAILED (or
 * CONC_ECANCELLED, for items cancelled by a shutdown) — in both cases *out
 * holds all outcomes (free it; conc_results_exception gives each failed
 * item's code and message); CONC_ETIMEDOUT when timeout (seconds, for the whole call)
 * passed first: what has not started is cancelled and *out is NULL;
 * CONC_EBROKEN / CONC_ESHUTDOWN / CONC_EINVAL / CONC_ERANGE as for submit
 * (*out NULL). */
CONC_API int conc_process_pool_map(conc_executor_t *ex, conc_pool_fn fn, const void *items,
                                   size_t item_size, size_t n, size_t chunksize, double timeout,
                                   conc_results_t **out);

/* Executor.submit(fn, arg) for a bytes task on any executor (see "One
 * word between threads and processes" above): arg (len bytes) is copied
 * before the call returns. Returns 0 and a new future in *out (results:
 * conc_future_bytes; exception: conc_future_exception); CONC_ESHUTDOWN
 * after shutdown; CONC_EBROKEN when the pool is broken; CONC_EINVAL (NULL
 * ex/out/fn, arg NULL with len > 0, fn not registered for a process
 * pool); CONC_ERANGE (arg too large for a process pool's queue);
 * CONC_ENOMEM. Never blocks on the workers. */
CONC_API int conc_submit_bytes(conc_executor_t *ex, conc_future_t **out, conc_pool_fn fn, const void *arg,
                               size_t len);

/* Executor.map(fn, items, timeout, chunksize) for a bytes task on any
 * executor: returns as conc_process_pool_map (which it is). On a thread
 * pool the items are copied too, and chunksize batches them as on a
 * process pool (Python's ThreadPoolExecutor ignores chunksize: same
 * results, fewer tasks). */
CONC_API int conc_map_bytes(conc_executor_t *ex, conc_pool_fn fn, const void *items, size_t item_size, size_t n,
                            size_t chunksize, double timeout, conc_results_t **out);

/* Word tasks on a process pool (or an MPI executor), by name: fn is a
 * pthread-shaped task registered with CONC_REGISTER; word is sent BY VALUE
 * (as a uintptr_t: never a pointer into this process) and the task's
 * return value comes back the same way (conc_future_result gives it as a
 * void *). Returns as conc_submit, plus CONC_EINVAL when ex is not a
 * process pool or fn is not registered. */
CONC_API int conc_process_pool_submit_word(conc_executor_t *ex, conc_future_t **out, void *(*fn)(void *),
                                           void *word);
/* conc_map with word tasks on a process pool: words[i] sent by value,
 * results[i] the returned words. Returns as conc_map; CONC_EINVAL when ex
 * is not a process pool (or fn not registered: the first submit fails). */
CONC_API int conc_process_pool_map_word(conc_executor_t *ex, void *(*fn)(void *), void *const *words, size_t n,
                                        void **results, const conc_map_opts_t *opts);

/* ProcessPoolExecutor.terminate_workers() / kill_workers() (Python 3.14):
 * shut the executor down at once — futures not yet sent to a worker are
 * cancelled (shutdown(wait=False, cancel_futures=True)) — and send SIGTERM
 * / SIGKILL to every worker still alive. The pool is then broken, as
 * CPython's manager thread finds it: futures a worker had taken fail with
 * CONC_EBROKEN ("BrokenProcessPool: A child process terminated abruptly
 * (terminate_workers)"), later submits return CONC_EBROKEN (a
 * RuntimeError in Python too). Never blocks; conc_executor_free still
 * reaps the workers. Calling it again, or after a shutdown, signals
 * whichever workers are left. Returns 0 or CONC_EINVAL (NULL, not a
 * process pool). */
CONC_API int conc_process_pool_terminate_workers(conc_executor_t *ex);
CONC_API int conc_process_pool_kill_workers(conc_executor_t *ex);

/* ---------------------------------------------------- multiprocessing.Pool */

typedef struct conc_pool conc_pool_t;

/* Options; NULL or zero fields mean the defaults. */
typedef struct conc_pool_opts {
    size_t processes;               /* 0: conc_cpu_count() */
    conc_process_fn initializer;    /* registered; NULL: none */
    const void *initarg;            /* copied */
    size_t initarg_len;
    unsigned maxtasksperchild;      /* 0: no limit */
    conc_start_method_t method;     /* context */
    size_t queue_capacity;          /* as for the executor */
} conc_pool_opts_t;

/* Pool(...): start the workers. Returns 0 and a new pool in *out (give it
 * back with conc_pool_free); CONC_EINVAL, CONC_ENOMEM, CONC_ESYS. */
CONC_API int conc_pool_new(conc_pool_t **out, const conc_pool_opts_t *opts);

/* Pool.apply_async(fn, arg, callback, error_callback): returns 0 and a new
 * future in *out (the AsyncResult: get = conc_future_bytes, ready =
 * conc_future_done, wait = conc_future_exception with a timeout; out may
 * be NULL if you do not want it). callback(data, len, cbarg) runs on
 * success, error_callback(code, msg, cbarg) on failure — either may be
 * NULL — in the pool's result thread (as in Python: keep them short, do
 * not wait on the pool there). Returns CONC_EINVAL (NULL, unregistered fn,
 * pool closed: Python's ValueError "Pool not running"), CONC_EBROKEN (the
 * initializer failed), CONC_ERANGE, CONC_ENOMEM. */
typedef void (*conc_pool_callback)(const void *data, size_t len, void *cbarg);
typedef void (*conc_pool_error_callback)(int code, const char *msg, void *cbarg);
CONC_API int conc_pool_apply_async(conc_pool_t *p, conc_pool_fn fn, const void *arg, size_t len,
                                   conc_pool_callback callback, conc_pool_error_callback error_callback,
                                   void *cbarg, conc_future_t **out);

/* Pool.apply: apply_async and wait. Returns 0 with a malloc'd copy of the
 * result in *data (free it; never NULL on success) and its length in *len;
 * CONC_EFAILED if the task failed (to read its code and message, use
 * conc_pool_apply_async and conc_future_exception); or an error of
 * apply_async. */
CONC_API int conc_pool_apply(conc_pool_t *p, conc_pool_fn fn, const void *arg, size_t len, void **data,
                             size_t *rlen);

/* Pool.map: chunksize 0 means Python's default (n / (4 * processes),
 * rounded up). Returns as conc_process_pool_map (no timeout). */
CONC_API int conc_pool_map(conc_pool_t *p, conc_pool_fn fn, const void *items, size_t item_size, size_t n,
                           size_t chunksize, conc_results_t **out);

/* Pool.imap / Pool.imap_unordered: an iterator over the results, yielding
 * each as soon as it (and, for imap, every one before it) is done.
 * chunksize 0 means 1. Returns 0 and a new iterator in *out (free it), or
 * an error as for apply_async. */
typedef struct conc_pool_iter conc_pool_iter_t;
CONC_API int conc_pool_imap(conc_pool_t *p, conc_pool_fn fn, const void *items, size_t item_size, size_t n,
                            size_t chunksize, conc_pool_iter_t **out);
CONC_API int conc_pool_imap_unordered(conc_pool_t *p, conc_pool_fn fn, const void *items, size_t item_size,
                                      size_t n, size_t chunksize, conc_pool_iter_t **out);
/* The iterator's next(timeout): returns 0 with the next result in
 * *data, *len (owned by the iterator, valid until it is freed) and its item
 * index in *index (any of the three may be NULL); CONC_EFAILED when that
 * item failed (CONC_ECANCELLED: cancelled), with its message in *data as
 * conc_results_item (its code: conc_pool_iter_exception); CONC_ETIMEDOUT
 * only when this wait timed out (the iterator stays usable); CONC_EEOF
 * after the last item; CONC_EINVAL. */
CONC_API int conc_pool_iter_next(conc_pool_iter_t *it, double timeout, const void **data, size_t *len,
                                 size_t *index);
/* The exception of the item the last conc_pool_iter_next returned: 0 and
 * its own failure code in *code (0 if it succeeded) and message (owned by
 * the iterator; NULL if it succeeded) in *msg; CONC_EINVAL. */
CONC_API int conc_pool_iter_exception(const conc_pool_iter_t *it, int *code, const char **msg);
/* Free the iterator (waits for nothing: unfinished chunks still run). */
CONC_API void conc_pool_iter_free(conc_pool_iter_t *it);

/* AsyncResult of apply_async (a future): ready() is conc_future_done,
 * get(timeout) is conc_future_bytes. */
/* AsyncResult.successful(): returns 0 and *ok (true: the task succeeded);
 * CONC_EINVAL when it is not ready yet (Python's ValueError) or f/ok is
 * NULL. Never blocks. */
CONC_API int conc_async_successful(conc_future_t *f, bool *ok);
/* AsyncResult.wait(timeout): wait until f is ready. Returns 0 (ready,
 * whatever its outcome), CONC_ETIMEDOUT, CONC_EKILLED (the calling green
 * thread was killed), CONC_EINVAL (NULL, NaN). Colorless: parks only the
 * calling green thread; a Timeout scope cuts it short. */
CONC_API int conc_async_wait(conc_future_t *f, double timeout);

/* Pool.starmap: each item is a tuple of nargs byte buffers —
 * args[i * nargs + k] is argument k of item i — that the task unpacks
 * with conc_pool_args. Returns as conc_pool_map. */
CONC_API int conc_pool_starmap(conc_pool_t *p, conc_pool_fn fn, const conc_buf_t *args, size_t nargs,
                               size_t n, size_t chunksize, conc_results_t **out);
/* In a starmap task: unpack the argument tuple in (arg, len) into argv
 * (up to cap entries; pointers into arg) and its size in *argc. Returns
 * 0; CONC_ERANGE when the tuple has more than cap arguments (*argc says
 * how many); CONC_EINVAL (NULL, bytes that are not a tuple: checked). */
CONC_API int conc_pool_args(const void *arg, size_t len, conc_buf_t *argv, size_t cap, size_t *argc);

/* MapResult: Pool.map_async / starmap_async. */
typedef struct conc_map_result conc_map_result_t;
/* callback(results, cbarg) when every item succeeded; error_callback(code,
 * msg, cbarg) with the first failure (in the order the chunks finished)
 * otherwise. Either runs once, after the last chunk finished, in the
 * thread that finished it: the pool's result thread (Pool) or a pool
 * thread (ThreadPool) — or in the caller of map_async if every chunk was
 * done before it returned. Keep them short; do not wait on the pool. */
typedef void (*conc_pool_map_callback)(const conc_results_t *r, void *cbarg);
/* Pool.map_async(fn, items, chunksize, callback, error_callback): as
 * conc_pool_map but returns at once with a new MapResult in *out (free
 * it with conc_map_result_free; out may be NULL). Items are copied.
 * Returns 0; CONC_EINVAL (NULL, unregistered fn, pool closed), CONC_ERANGE,
 * CONC_ENOMEM, CONC_EBROKEN. */
CONC_API int conc_pool_map_async(conc_pool_t *p, conc_pool_fn fn, const void *items, size_t item_size,
                                 size_t n, size_t chunksize, conc_pool_map_callback callback,
                                 conc_pool_error_callback error_callback, void *cbarg,
                                 conc_map_result_t **out);
/* Pool.starmap_async: starmap's items, map_async's result. */
CONC_API int conc_pool_starmap_async(conc_pool_t *p, conc_pool_fn fn, const conc_buf_t *args, size_t nargs,
                                     size_t n, size_t chunksize, conc_pool_map_callback callback,
                                     conc_pool_error_callback error_callback, void *cbarg,
                                     conc_map_result_t **out);
/* ready(): every chunk is done (and the callback has run). */
CONC_API bool conc_map_result_ready(conc_map_result_t *r);
/* successful(): 0 and *ok; CONC_EINVAL when not ready (ValueError). */
CONC_API int conc_map_result_successful(conc_map_result_t *r, bool *ok);
/* wait(timeout): 0 when ready, CONC_ETIMEDOUT, CONC_EKILLED, CONC_EINVAL.
 * Colorless (as conc_async_wait). */
CONC_API int conc_map_result_wait(conc_map_result_t *r, double timeout);
/* get(timeout): wait, then 0 and the results in *out (owned by r: valid
 * until conc_map_result_free); CONC_EFAILED when an item failed (*out
 * still holds every outcome; the first failure: conc_map_result_exception);
 * CONC_ETIMEDOUT (the map goes on), CONC_EKILLED, CONC_EINVAL. */
CONC_API int conc_map_result_get(conc_map_result_t *r, double timeout, const conc_results_t **out);
/* The first failure's code and message (owned by r): 0, and *code 0 when
 * none failed; CONC_EINVAL when not ready. */
CONC_API int conc_map_result_exception(conc_map_result_t *r, int *code, const char **msg);
/* Drop the MapResult (the map goes on; callbacks still run). */
CONC_API void conc_map_result_free(conc_map_result_t *r);

/* multiprocessing.pool.ThreadPool(processes, initializer, initargs): a
 * conc_pool_t whose tasks run in threads of this process; every conc_pool_*
 * call above works on it the same way (one word to switch). Differences:
 * task functions need not be registered; opts->method, maxtasksperchild
 * and queue_capacity are ignored; conc_pool_pids gives 0; terminate cancels tasks not
 * yet started but cannot stop running ones (threads cannot be killed).
 * Callbacks (apply_async's, map_async's) run, one at a time in the order
 * the tasks finished, on the pool's result-handler thread (started with the
 * first callback), as in CPython: never on a worker, so a slow callback
 * holds up later callbacks but no task; join waits for them too.
 * The initializer (conc_process_fn) runs in each thread; if it fails the
 * pool is broken (tasks fail with CONC_EBROKEN). Returns 0 and the pool in
 * *out (conc_pool_free); CONC_EINVAL, CONC_ENOMEM. */
CONC_API int conc_threadpool_new(conc_pool_t **out, const conc_pool_opts_t *opts);

/* Pool.close: no more tasks; the workers exit once the queued ones are
 * done. Returns 0 or CONC_EINVAL. */
CONC_API int conc_pool_close(conc_pool_t *p);
/* Pool.terminate: stop the workers now (SIGTERM). Unstarted tasks are
 * cancelled, running ones fail with CONC_ESHUTDOWN ("pool terminated").
 * Returns 0 or CONC_EINVAL. */
CONC_API int conc_pool_terminate(conc_pool_t *p);
/* Pool.join: wait until every worker has exited (after close or
 * terminate). Returns 0, CONC_ETIMEDOUT, CONC_EINVAL (NULL, bad timeout,
 * pool still running: Python's ValueError). */
CONC_API int conc_pool_join(conc_pool_t *p, double timeout);
/* Terminate (if still running), join and free (with Pool(...) as p). */
CONC_API int conc_pool_free(conc_pool_t *p);

/* The pids of the current workers (up to cap) and how many there are. */
CONC_API size_t conc_pool_pids(conc_pool_t *p, int *pids, size_t cap);
CONC_API size_t conc_process_pool_pids(conc_executor_t *ex, int *pids, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* CONC_POOL_H */
