/*
 * conc/manager_sync.h — the Manager's Event, Semaphore, BoundedSemaphore,
 * Condition and Barrier proxies (SyncManager.Event() ... Barrier()): one
 * object in the manager's server process (conc/manager.h), used by any
 * process that can connect to it.
 *
 *     conc_mevent_t *e;
 *     conc_manager_event(m, "ready", &e);      // e = m.Event()
 *     ... another process: conc_mevent_wait(e2, 5.0) -> 0 once set
 *     conc_mevent_set(e);                      // e.set()
 *     conc_mevent_free(e);
 *
 * Semantics are threading's (conc/sync.h states them): the same timeouts
 * (CONC_FOREVER waits for good; NaN is CONC_EINVAL), the same results.
 * Each proxy has its own connection; the server serves it on its own
 * thread and waits there without polling, so a blocked wait holds up no
 * other client. Every call that blocks parks only the calling green
 * thread, and a kill (CONC_EKILLED) or a Timeout scope (CONC_ETIMEDOUT,
 * conc/green.h) cuts it short, on OS threads too; the proxy stays usable.
 * A cut call never loses anything on the server: a Semaphore permit
 * handed to a cut acquire goes to the next waiter, a notification sent to
 * a cut Condition.wait to the next waiter; a cut Barrier.wait breaks the
 * barrier (as an exception inside threading.Barrier.wait does).
 *
 * Ownership of a Condition's lock belongs to the proxy's connection (as a
 * thread owns it in Python's manager): a cut Condition.acquire or wait
 * reports the interruption and leaves the lock not held (the connection
 * closed; the server released it). A holder whose process dies releases
 * it too (beyond Python, as for the Manager's Lock).
 *
 * Errors: those of conc/manager.h (CONC_EINVAL, CONC_EBROKEN for a dead
 * server, CONC_ESHUTDOWN, CONC_EKILLED, CONC_ETIMEDOUT, CONC_ENOMEM ...),
 * and the object's own, listed per call. Barrier's BrokenBarrierError is
 * CONC_EBROKEN as in conc/sync.h; conc_mbarrier_broken tells it from a
 * dead server (which makes that call fail too).
 *
 * Pool (m.Pool(n)): apply, map, apply_async and map_async run registered
 * task functions in a process pool of the server's (the Pool section).
 *
 * Names: as for conc_manager_dict: NULL makes an anonymous object; a name
 * finds or creates one (the creating call's value/parties/timeout count);
 * a name taken by another type is CONC_EINVAL. Free each proxy once.
 */
#ifndef CONC_MANAGER_SYNC_H
#define CONC_MANAGER_SYNC_H

#include <stdbool.h>

#include "conc/base.h"
#include "conc/manager.h"
#include "conc/pool.h"
#include "conc/sync.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct conc_mevent conc_mevent_t;     /* EventProxy */
typedef struct conc_msem conc_msem_t;         /* AcquirerProxy of a (Bounded)Semaphore */
typedef struct conc_mcond conc_mcond_t;       /* ConditionProxy */
typedef struct conc_mbarrier conc_mbarrier_t; /* BarrierProxy */

/* --------------------------------------------------------------- Event */

/* m.Event(). 0, or the errors of conc_manager_dict. */
CONC_API int conc_manager_event(conc_manager_t *m, const char *name, conc_mevent_t **out);
/* e.set(): every process waiting at that moment returns 0 from its wait. */
CONC_API int conc_mevent_set(conc_mevent_t *e);
CONC_API int conc_mevent_clear(conc_mevent_t *e);
CONC_API int conc_mevent_is_set(conc_mevent_t *e, bool *out);
/* e.wait(timeout): 0 (True) once set, CONC_ETIMEDOUT (False); a negative
 * timeout only looks. Blocks on the server. */
CONC_API int conc_mevent_wait(conc_mevent_t *e, double timeout);
CONC_API int conc_mevent_free(conc_mevent_t *e);

/* ------------------------------------------- Semaphore / BoundedSemaphore */

/* m.Semaphore(value) / m.BoundedSemaphore(value): value from 0 to
 * CONC_SEMAPHORE_MAX, else CONC_EINVAL. */
CONC_API int conc_manager_semaphore(conc_manager_t *m, const char *name, long value,
                                    conc_msem_t **out);
CONC_API int conc_manager_bounded_semaphore(conc_manager_t *m, const char *name, long value,
                                            conc_msem_t **out);
/* acquire(blocking, timeout) as conc_semaphore_acquire: 0, CONC_ETIMEDOUT
 * (False; a negative timeout tries once), CONC_EINVAL (a timeout with
 * blocking=false, NaN). Waiters are served first come, first served. */
CONC_API int conc_msem_acquire(conc_msem_t *s, bool blocking, double timeout);
/* release(n), n >= 1: CONC_EINVAL for n < 1 or when a BoundedSemaphore
 * would pass its initial value (ValueError; nothing released);
 * CONC_ERANGE past CONC_SEMAPHORE_MAX. */
CONC_API int conc_msem_release(conc_msem_t *s, long n);
/* The value now (get_value(); Python's proxy lacks it). */
CONC_API int conc_msem_value(conc_msem_t *s, long *out);
CONC_API int conc_msem_free(conc_msem_t *s);

/* ----------------------------------------------------------- Condition */

/* m.Condition(): over its own RLock, owned per proxy. */
CONC_API int conc_manager_condition(conc_manager_t *m, const char *name, conc_mcond_t **out);
/* acquire(blocking, timeout) of the RLock (re-entrant): 0, CONC_ETIMEDOUT,
 * CONC_EINVAL (negative timeout: ValueError), CONC_ERANGE. */
CONC_API int conc_mcond_acquire(conc_mcond_t *c, bool blocking, double timeout);
/* release(): CONC_EPERM when this proxy does not hold it. */
CONC_API int conc_mcond_release(conc_mcond_t *c);
/* wait(timeout): release the lock (every level), wait for a notify, take
 * it back: 0 (notified), CONC_ETIMEDOUT (a negative timeout: at once),
 * CONC_EPERM (not held). Cut short: CONC_EKILLED/CONC_ETIMEDOUT with the
 * lock not held (see above). */
CONC_API int conc_mcond_wait(conc_mcond_t *c, double timeout);
/* wait_for(predicate, timeout): as conc_cond_wait_for; pred runs here,
 * with the lock held, after each wakeup; one overall deadline. 0 when
 * pred held, CONC_ETIMEDOUT when it still does not, CONC_EPERM. */
CONC_API int conc_mcond_wait_for(conc_mcond_t *c, bool (*pred)(void *arg), void *arg,
                                 double timeout);
/* notify(n) (n >= 0, oldest waiters first) / notify_all(): CONC_EPERM
 * when not held, CONC_EINVAL for n < 0. */
CONC_API int conc_mcond_notify(conc_mcond_t *c, long n);
CONC_API int conc_mcond_notify_all(conc_mcond_t *c);
CONC_API int conc_mcond_free(conc_mcond_t *c);

/* ------------------------------------------------------------- Barrier */

/* m.Barrier(parties, timeout=None): parties >= 1 (else CONC_EINVAL);
 * timeout: the default for wait (CONC_FOREVER: none). No action: a
 * function cannot cross processes (run it in the process that got index
 * 0). */
CONC_API int conc_manager_barrier(conc_manager_t *m, const char *name, int parties,
                                  double timeout, conc_mbarrier_t **out);
/* wait(timeout) (CONC_BARRIER_DEFAULT: the barrier's own): 0 and *index
 * (0..parties-1; may be NULL); CONC_EBROKEN when it is or becomes broken
 * (abort, reset, another waiter's timeout or cut); a waiter whose timeout
 * passes breaks it and gets CONC_EBROKEN. */
CONC_API int conc_mbarrier_wait(conc_mbarrier_t *b, double timeout, int *index);
CONC_API int conc_mbarrier_reset(conc_mbarrier_t *b);
CONC_API int conc_mbarrier_abort(conc_mbarrier_t *b);
CONC_API int conc_mbarrier_broken(conc_mbarrier_t *b, bool *out);
CONC_API int conc_mbarrier_n_waiting(conc_mbarrier_t *b, int *out);
CONC_API int conc_mbarrier_parties(conc_mbarrier_t *b, int *out);
CONC_API int conc_mbarrier_free(conc_mbarrier_t *b);

/* ---------------------------------------------------------------- Pool */

/* m.Pool(processes): a multiprocessing Pool (conc/pool.h) in the manager's
 * server process, shared by every process that connects. Task functions
 * cross by name, as Python pickles a function by its qualified name: fn
 * must be registered (CONC_POOL_REGISTER) in this program, and the server
 * runs the function registered under the same name in its own program
 * (the same executable when this process started the manager). processes
 * 0 means the server's CPU count; at most 1024. The pool starts with the
 * first task (conc_pool_new in the server process, which has threads: its
 * workers come from a forkserver, so the program needs CONC_PROCESS_MAIN
 * in main, conc/process.h) and ends with the object (the last proxy of an unnamed one,
 * or the server). Errors as for the other proxies; CONC_EINVAL for a bad
 * count or a name over 4096 bytes. */
typedef struct conc_mpool conc_mpool_t;
CONC_API int conc_manager_pool(conc_manager_t *m, const char *name, size_t processes,
                               conc_mpool_t **out);
/* pool.apply(fn, (arg,)): 0 with a malloc'd copy of the result in *data
 * (free it) and its length in *len; CONC_EFAILED when the task failed
 * (its code and message: conc_mpool_exception); CONC_EINVAL (fn not
 * registered here or in the server; NULL arguments); CONC_ERANGE (arg too
 * large for one message). Blocks until the task is done; a kill or a
 * Timeout scope cuts the wait (the task still runs to its end). */
CONC_API int conc_mpool_apply(conc_mpool_t *p, conc_pool_fn fn, const void *arg, size_t len,
                              void **data, size_t *rlen);
/* pool.map(fn, items, chunksize): n items of item_size bytes each (or,
 * with item_size 0, items is an array of n conc_buf_t); chunksize 0 is
 * Python's default. 0 with *results: one malloc'd block (free it once),
 * an array of n conc_mbytes_t followed by their bytes, in item order;
 * CONC_EFAILED when an item failed (the first failure:
 * conc_mpool_exception; Python's map raises it); CONC_ERANGE when the
 * items or the results exceed one message (16 MiB). */
CONC_API int conc_mpool_map(conc_mpool_t *p, conc_pool_fn fn, const void *items, size_t item_size,
                            size_t n, size_t chunksize, conc_mbytes_t **results);
/* The failure of this proxy's last call that returned CONC_EFAILED: *code
 * and *msg (proxy-owned, valid until the next call on p that fails, or
 * conc_mpool_free). 0, or CONC_EINVAL (no failure yet; NULL p). */
CONC_API int conc_mpool_exception(conc_mpool_t *p, int *code, const char **msg);
CONC_API int conc_mpool_free(conc_mpool_t *p);

/* pool.apply_async(fn, (arg,)) / pool.map_async(fn, items, chunksize):
 * submit and return at once with a handle of the result in *out (an
 * AsyncResult proxy; it is kept by the server until conc_masync_free, at
 * most 65536 per pool: then CONC_EAGAIN). Arguments and errors as for
 * conc_mpool_apply / conc_mpool_map. No callbacks (a function pointer
 * cannot cross processes). The handle uses p's connection: free it before
 * p. */
typedef struct conc_masync conc_masync_t;
CONC_API int conc_mpool_apply_async(conc_mpool_t *p, conc_pool_fn fn, const void *arg, size_t len,
                                    conc_masync_t **out);
CONC_API int conc_mpool_map_async(conc_mpool_t *p, conc_pool_fn fn, const void *items,
                                  size_t item_size, size_t n, size_t chunksize,
                                  conc_masync_t **out);
/* AsyncResult.ready() -> *out. */
CONC_API int conc_masync_ready(conc_masync_t *r, bool *out);
/* AsyncResult.get(timeout) of an apply_async: as conc_mpool_apply, or
 * CONC_ETIMEDOUT when not done within timeout (a negative one only
 * looks); CONC_EINVAL for a map_async's handle. Get may be called again. */
CONC_API int conc_masync_get(conc_masync_t *r, double timeout, void **data, size_t *len);
/* The same for a map_async: as conc_mpool_map. */
CONC_API int conc_masync_get_map(conc_masync_t *r, double timeout, conc_mbytes_t **results);
/* Drop the handle and the server's copy of the result (the task runs on
 * if it has not finished). 0 or CONC_EINVAL. */
CONC_API int conc_masync_free(conc_masync_t *r);

#ifdef __cplusplus
}
#endif
#endif /* CONC_MANAGER_SYNC_H */
