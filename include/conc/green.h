/*
 * conc/green.h — green threads (gevent's greenlets in C): spawn, join, kill,
 * sleep, yield, timeout scopes, links, a green Pool, and offloading to the
 * thread pool.
 *
 * A green thread is a function running on its own small stack, scheduled
 * cooperatively by the hub of the OS thread that spawned it: it runs until
 * it blocks, yields or returns, then the hub runs the next ready one. There
 * is one hub per OS thread, created by the first conc_go on that thread; a
 * green thread never moves to another OS thread.
 *
 * Blocking without color: every conc blocking call — Lock, RLock (owned per
 * green thread), Condition, Semaphore, Event, Barrier, Queue, Future, Thread
 * join, green join, conc_sleep, the cooperative I/O of conc/io.h — parks
 * only the calling green thread when called from one, and the OS thread
 * that owns a hub is itself just one more context of that hub (gevent's
 * "main greenlet"): when it blocks in a conc call, its green threads run.
 * Other OS threads can wake, join and kill green threads. A plain blocking
 * syscall (read(2) on a blocking fd, pthread_mutex_lock...) still blocks the
 * whole OS thread and every green thread on it.
 *
 * Green-thread-local storage (gevent.local): a conc_local_t (conc/thread.h)
 * holds one value per green thread when used from green threads, apart
 * from its OS thread's value; a green thread's values are destroyed (the
 * local's destructor) when it ends.
 *
 * An OS thread that exits while it still has live green threads abandons
 * them: they never run again. Join them before the thread ends (the main
 * thread's are dropped at process exit, as in gevent).
 *
 * Timeouts (the rule of conc/base.h; gevent arms a timer with the value,
 * so a negative one is already up): join, get, joinall, kill(block), the
 * pool's spawn / join / kill and Timeout scopes treat a negative timeout
 * as already up (they do not wait and report the timeout); conc_sleep of
 * a negative value yields like conc_sleep(0), as gevent.sleep(-1) does
 * (unlike time.sleep: see conc_sleep_thread). NaN is CONC_EINVAL.
 *
 * Ownership: conc_go returns a handle that you give back with
 * conc_green_free exactly once (before or after the green thread ended;
 * freeing does not stop it). Pass out = NULL to conc_go for a detached
 * green thread (freed when it ends).
 *
 * Stacks are mmap'd, committed lazily (an idle green thread costs about one
 * page of memory), pooled and reused, with a guard page below each while
 * the kernel's map-count budget (vm.max_map_count) allows; an overflow into
 * the guard page prints which green thread overflowed, then the process
 * dies of SIGSEGV. Past that budget (a quarter of vm.max_map_count, which
 * is 65530 by default: about 16k guarded stacks), stacks have no guard
 * page; raise vm.max_map_count to guard more.
 */
#ifndef CONC_GREEN_H
#define CONC_GREEN_H

#include "conc/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct conc_green conc_green_t;

/* Options for conc_go_opts; NULL or zero fields mean the defaults. */
typedef struct conc_green_opts {
    const char *name;  /* copied (first 31 bytes); default "Green-N" */
    size_t stack_size; /* bytes of stack; 0 = 128 KiB; at least 16 KiB, rounded up to pages;
                          a process may use up to 30 distinct sizes (then CONC_ENOMEM) */
} conc_green_opts_t;

/* gevent.spawn: create a green thread running fn(arg) on the calling OS
 * thread's hub, scheduled to start at the caller's next blocking point or
 * yield. Stores the handle in *out (NULL out: detached). Returns 0,
 * CONC_EINVAL (NULL fn, bad stack size), CONC_ENOMEM. Never blocks. */
CONC_API int conc_go(conc_green_t **out, void *(*fn)(void *), void *arg);
CONC_API int conc_go_opts(conc_green_t **out, const conc_green_opts_t *opts, void *(*fn)(void *), void *arg);

/* Greenlet.join: wait up to timeout for g to end (returned, failed, or was
 * killed). Returns 0 once it ended, whatever its outcome (gevent's join
 * returns None regardless; get reports the outcome), CONC_ETIMEDOUT
 * (the timeout, or a timeout scope of the caller), CONC_EKILLED (the
 * caller was killed), CONC_ELOOPEXIT, CONC_EPERM when joining yourself,
 * CONC_EINVAL. Blocks the calling context only (any kind, any OS thread).
 * A timeout of 0 is a pure poll: it never switches to another green
 * thread (one that has not run yet is not run by it). */
CONC_API int conc_green_join(conc_green_t *g, double timeout);

/* Greenlet.get: join, then hand over the outcome (the outcomes rule of
 * conc/base.h). Returns 0 and stores fn's return value in *result;
 * CONC_EFAILED when g's function failed (conc_fail), whatever code it
 * failed with — read the code and message with conc_green_exception;
 * the wait's own outcomes as for join: CONC_ETIMEDOUT, CONC_EKILLED (the
 * caller was killed), CONC_ELOOPEXIT, CONC_EPERM (yourself), CONC_EINVAL.
 * *result is only written on success. A green thread that was killed ends
 * cleanly, like gevent's GreenletExit: 0 with *result set to NULL,
 * whatever its function returned after seeing CONC_EKILLED. */
CONC_API int conc_green_get(conc_green_t *g, double timeout, void **result);

/* Greenlet.exception: the failure g ended with — its own code, as given
 * to conc_fail (0 if none, killed, or still running) and, if msg is not
 * NULL, its message (valid while the handle is). */
CONC_API int conc_green_exception(const conc_green_t *g, const char **msg);

/* Greenlet.kill: make g's next (or current) blocking call return
 * CONC_EKILLED, once — g should then return; if it ignores it and blocks
 * again, it blocks normally. A green thread killed before it started
 * never runs (it ends at once; its links still run). Killing an ended one
 * does nothing. Works from any OS thread. With block, waits up to timeout
 * for g to end. Returns 0, CONC_ETIMEDOUT (block only), CONC_EKILLED,
 * CONC_EINVAL.
 * Killing yourself (g is the caller), as gevent raises GreenletExit in the
 * caller at once: with block, this call delivers the kill — it returns
 * CONC_EKILLED, and no later call sees it again; without block it returns
 * 0 and your next blocking call returns CONC_EKILLED. Either way you end
 * as killed (conc_green_killed) once you return. */
CONC_API int conc_green_kill(conc_green_t *g, bool block, double timeout);

/* Give back the handle (see Ownership). Returns 0 or CONC_EINVAL. */
CONC_API int conc_green_free(conc_green_t *g);

/* Greenlet.dead / ready(): true once g ended. started: true once it ran. */
CONC_API bool conc_green_dead(const conc_green_t *g);
CONC_API bool conc_green_started(const conc_green_t *g);
/* Greenlet.successful(): ended by returning without a failure (a kill
 * counts as successful, as in gevent). */
CONC_API bool conc_green_successful(const conc_green_t *g);
/* True if g ended because it was killed (before or during its run). */
CONC_API bool conc_green_killed(const conc_green_t *g);
/* The name (conc-owned, valid while the handle is); NULL for NULL. */
CONC_API const char *conc_green_name(const conc_green_t *g);

/* gevent.getcurrent(): the calling green thread, borrowed; NULL when the
 * caller is an OS thread's own context. */
CONC_API conc_green_t *conc_green_current(void);

/* Which kind of context the caller is, for code that must act differently
 * on a green thread without touching conc's objects — interposers such as
 * libconc_patch.so (docs/patch.md): CONC_CTX_THREAD (an OS thread's own
 * context, no hub attached), CONC_CTX_MAIN (an OS thread's own context
 * while its hub runs green threads: gevent's main greenlet),
 * CONC_CTX_GREEN (a green thread, as conc_green_current() != NULL),
 * CONC_CTX_HUB (a hub's scheduler loop: conc's own code, e.g. its
 * epoll_wait). Never blocks: a thread-local read (and, for an OS
 * thread's own context attached to its hub, the hub's count of live green
 * threads), no allocation, async-signal-safe. */
enum { CONC_CTX_THREAD = 0, CONC_CTX_GREEN = 1, CONC_CTX_HUB = 2, CONC_CTX_MAIN = 3 };
CONC_API int conc_context_kind(void);

/* gevent.joinall: wait for all n to end (NULL entries are skipped).
 * Returns 0, CONC_ETIMEDOUT, or whatever interrupted the wait
 * (CONC_EKILLED...). */
CONC_API int conc_green_joinall(conc_green_t *const *gs, size_t n, double timeout);

/* gevent.joinall(greenlets, timeout, raise_error, count): wait until
 * count of gs have ended (0: all; NULL entries are skipped and not
 * counted), up to timeout. done_idx (capacity n) receives the indices of
 * the ended ones in the order they ended (those ended already first, in
 * input order), *ndone their number — fewer than asked when the timeout
 * passed (0 is returned then, as gevent returns the list). With
 * raise_error, the first one seen to fail (conc_fail) stops the wait: it
 * is the last entry of done_idx and the call returns CONC_EFAILED (its
 * code: conc_green_exception). Otherwise 0, an interruption of the caller
 * (CONC_EKILLED, CONC_ETIMEDOUT from a scope), CONC_EINVAL, CONC_ENOMEM. */
CONC_API int conc_green_joinall_ex(conc_green_t *const *gs, size_t n, double timeout, size_t count,
                                   bool raise_error, size_t *done_idx, size_t *ndone);

/* gevent.wait(objects, timeout, count) / iwait over mixed waitables. */
typedef enum conc_waitable_kind {
    CONC_WAITABLE_GREEN = 1, /* obj: conc_green_t * — ready once it ended */
    CONC_WAITABLE_EVENT,     /* obj: conc_event_t * — ready while set */
    CONC_WAITABLE_FUTURE,    /* obj: conc_future_t * — ready once done (or cancelled) */
    CONC_WAITABLE_QUEUE,     /* obj: conc_queue_t * — ready while it holds an item, or shut down */
    CONC_WAITABLE_FD,        /* fd, events — readable (or writable: CONC_WAITABLE_WRITE) */
    CONC_WAITABLE_PROCESS,   /* obj: conc_process_t * — ready once it exited (it is joined) */
} conc_waitable_kind_t;
#define CONC_WAITABLE_WRITE 2 /* events for CONC_WAITABLE_FD; 0 = readable */
typedef struct conc_waitable {
    conc_waitable_kind_t kind;
    void *obj; /* NULL (except for fds): skipped */
    int fd;
    int events;
} conc_waitable_t;
/* Wait until count of objs are ready (0: all of them), up to timeout.
 * ready (capacity n) receives their indices — the ones ready at once
 * first, in input order, then in the order they became ready — and
 * *nready how many (fewer when the timeout passed: still 0 returned, as
 * gevent.wait returns the list). Nothing is consumed (a queue item stays,
 * an event stays set). Each object not ready at once is watched by a
 * helper green thread on the caller's hub, killed before this returns.
 * Returns 0, an interruption of the caller (CONC_EKILLED, CONC_ETIMEDOUT
 * from a scope; *nready still set), CONC_EINVAL (bad kind, NaN), CONC_ENOMEM,
 * or the error of an object's own wait that failed (a closed fd: what
 * conc_wait_read says, e.g. CONC_ESYS) — it could never become ready. */
CONC_API int conc_green_wait(const conc_waitable_t *objs, size_t n, size_t count, double timeout, size_t *ready,
                             size_t *nready);

/* Greenlet.link / rawlink: call cb(g, arg) once g has ended (right away,
 * on the caller, if it already has). The callback runs on the ending green
 * thread after its end is visible to joiners (so conc_green_join(g) inside
 * it is a join of yourself: CONC_EPERM); it must not block for long.
 * A callback that fails (conc_fail) changes nothing — g's outcome as seen
 * by get, exception and later links stays as it was, and so does the
 * caller's own failure state — and is reported on stderr ("Exception in a
 * link of green thread NAME: ..."), as gevent's hub reports it.
 * Returns 0, CONC_EINVAL, CONC_ENOMEM. */
CONC_API int conc_green_link(conc_green_t *g, void (*cb)(conc_green_t *g, void *arg), void *arg);

/* Greenlet.link_value / link_exception: as conc_green_link, but cb runs
 * only if g ends successfully (a kill counts as success, as GreenletExit
 * does in gevent) / only if it fails (conc_fail). Returns as link. */
CONC_API int conc_green_link_value(conc_green_t *g, void (*cb)(conc_green_t *g, void *arg), void *arg);
CONC_API int conc_green_link_exception(conc_green_t *g, void (*cb)(conc_green_t *g, void *arg), void *arg);
/* Greenlet.unlink: remove one link (of any kind) made with this cb and
 * arg that has not run — the earliest made, as gevent removes the first.
 * Returns 1 if one was removed, 0 if none was left (never linked, or g
 * ended and its links ran or are running now), CONC_EINVAL.
 * unlink_all removes every link not yet run and returns how many. Both
 * work from any OS thread. */
CONC_API int conc_green_unlink(conc_green_t *g, void (*cb)(conc_green_t *g, void *arg), void *arg);
CONC_API int conc_green_unlink_all(conc_green_t *g);
/* Greenlet.has_links(): true while links wait for g's end. */
CONC_API bool conc_green_has_links(const conc_green_t *g);
/* The hub's loop context (conc_context_kind() == CONC_CTX_HUB: code the
 * scheduler runs itself, e.g. a signal handler that lands while it polls)
 * must never block or switch away, as gevent refuses a blocking call in
 * the event loop (BlockingSwitchOutError): conc_yield, conc_sleep,
 * conc_green_join, Event / Queue / lock waits, fd waits and every other
 * call that would park return CONC_EPERM from there at once, and change
 * nothing. (Links themselves run on the ending green thread, not there.) */
/* Greenlet.value: what g's function returned, once g ended successfully;
 * NULL until then, and if it failed or was killed. Never blocks — use it
 * in a link callback, where conc_green_get would join yourself. */
CONC_API void *conc_green_value(const conc_green_t *g);

/* Greenlet(fn, arg) without start: make a green thread on the calling OS
 * thread's hub that does not run until conc_green_start (or
 * conc_green_start_later). *out must not be NULL. A handle freed before it
 * was started ends it unrun (killed: its links run). Returns as conc_go. */
CONC_API int conc_green_new(conc_green_t **out, const conc_green_opts_t *opts, void *(*fn)(void *), void *arg);
/* Greenlet.start(): schedule it. start_later(seconds): schedule it to
 * begin after seconds (0 or less: as start); a kill meanwhile ends it
 * without running fn (conc_green_started stays false). Only on the hub's
 * OS thread. Returns 0; CONC_EPERM if it was started already (or made by
 * conc_go, or killed), or the caller is another OS thread; CONC_EINVAL
 * (NULL, NaN or CONC_FOREVER seconds). Never blocks. */
CONC_API int conc_green_start(conc_green_t *g);
CONC_API int conc_green_start_later(conc_green_t *g, double seconds);
/* gevent.spawn_later: conc_green_new + start_later. NULL out: detached.
 * Returns 0, CONC_EINVAL, CONC_ENOMEM. */
CONC_API int conc_green_spawn_later(conc_green_t **out, double seconds, void *(*fn)(void *), void *arg);
/* hub.loop.run_callback(fn, arg): call fn(arg) soon on the calling OS
 * thread's hub — after the caller's next blocking point or yield, in
 * order with the green threads already ready — without a handle to keep.
 * It runs in a detached green thread of its own (so, unlike gevent's
 * loop callbacks, one that blocks parks only itself). Returns 0,
 * CONC_EINVAL, CONC_ENOMEM. Never blocks. */
CONC_API int conc_green_run_callback(void (*fn)(void *arg), void *arg);
/* gevent.killall(greenlets, block, timeout): kill every one of gs (NULL
 * entries and the caller itself are skipped) — all the kills first, so
 * none that has not started ever runs — then, with block, wait up to
 * timeout for all to end. Returns 0, CONC_ETIMEDOUT (block: some still
 * run), CONC_EKILLED / CONC_ETIMEDOUT (the caller was killed or its scope
 * fired while it waited), CONC_EPERM (block, and the caller is among gs),
 * CONC_EINVAL. */
CONC_API int conc_green_killall(conc_green_t *const *gs, size_t n, bool block, double timeout);

/* gevent.sleep: green threads park for seconds; OS threads sleep. 0 yields
 * to the other ready green threads (on an OS thread without a hub, to the
 * OS scheduler), and so does a negative value (gevent.sleep(-1)).
 * CONC_FOREVER sleeps until killed or cut by a scope. Returns 0,
 * CONC_EINVAL (NaN), or the
 * interruption that cut it short: CONC_EKILLED, CONC_ETIMEDOUT (a timeout
 * scope ran out). */
CONC_API int conc_sleep(double seconds);
/* conc_sleep(0). */
CONC_API int conc_yield(void);

/*
 * Timeouts as scopes (gevent.Timeout as a context manager):
 *
 *     conc_timeout_begin(0.5);
 *     rc = conc_queue_get(q, &item, true, CONC_FOREVER);  // CONC_ETIMEDOUT after 0.5 s
 *     conc_timeout_end();
 *
 * Inside a scope, the first blocking call that is still blocked when the
 * deadline passes returns CONC_ETIMEDOUT (once, like gevent raising
 * Timeout once); a call whose own timeout is shorter is not affected.
 * Scopes nest (the earliest deadline wins), up to 8 deep per context; end
 * them in reverse order. A call cut by a scope returns CONC_ETIMEDOUT even
 * where its own timeout reports something else (a Queue get cut by a scope
 * returns CONC_ETIMEDOUT, not CONC_EEMPTY; a Barrier wait breaks the
 * barrier and returns CONC_ETIMEDOUT), so the two can be told apart. Works on green threads and OS threads alike.
 * begin returns 0, CONC_EINVAL (NaN seconds; a negative value opens a
 * scope that has already fired, as gevent.Timeout(-1) does; CONC_FOREVER
 * opens a scope that never fires), CONC_ERANGE (nested too deep). end returns 1 if
 * this scope fired, 0 if not, CONC_EPERM if no scope is open.
 *
 * The rule: a scope belongs to the function that opened it, and must be
 * ended by that function before it returns — on every path, early returns
 * and error paths included. A scope left open stays on the context and cuts
 * some later, unrelated wait. CONC_TIMEOUT_SCOPE(seconds) (GCC, Clang)
 * opens a scope that ends by itself when the enclosing block is left, by
 * any path. Debug builds (no NDEBUG), or any build run with CONC_DEBUG=1,
 * report on stderr a scope still open after its function returned, at
 * the next wait of that context ("conc: a timeout scope opened in F ...").
 */
CONC_API int conc_timeout_begin(double seconds);
CONC_API int conc_timeout_end(void);

#if defined(__GNUC__) || defined(__clang__)
static inline void conc__timeout_scope_leave(int *begun)
{
    if (*begun == 0)
        conc_timeout_end();
}
#define CONC__SCOPE_CAT2(a, b) a##b
#define CONC__SCOPE_CAT(a, b) CONC__SCOPE_CAT2(a, b)
/* A timeout scope for the rest of the enclosing block: ended when the
 * block is left by any path (return, break, goto). Use at most one per
 * line. A wait it cuts returns CONC_ETIMEDOUT as with begin/end. */
#define CONC_TIMEOUT_SCOPE(seconds)                                                              int CONC__SCOPE_CAT(conc__scope_, __LINE__)                                                      __attribute__((cleanup(conc__timeout_scope_leave), unused)) = conc_timeout_begin(seconds)
#endif

/*
 * Timeout as an object (gevent.Timeout(seconds, exception)):
 *
 *     conc_timeout_t t;
 *     conc_timeout_init(&t, 0.5, 0);        // Timeout(0.5)
 *     conc_timeout_start(&t);               // t.start()
 *     rc = conc_queue_get(q, &item, true, CONC_FOREVER); // CONC_ETIMEDOUT after 0.5 s
 *     conc_timeout_cancel(&t);              // t.cancel()
 *
 * A started object is a timeout scope of the context that started it (the
 * same rules: it cuts the first wait still blocked at its deadline, once),
 * but objects can be cancelled in any order — an outer one while inner
 * ones (objects or begin/end scopes) are open — and restarted. A custom
 * code (a negative CONC_E*; 0 = CONC_ETIMEDOUT) is what the wait it cuts
 * returns, as gevent raises the Timeout's exception; the wait's own
 * timeout still returns its usual code. Each takes one of the 8 scope
 * slots of its context while started; conc_timeout_end ends the
 * innermost begin/end scope, leaving objects open.
 * A started object must be cancelled on its own context before that
 * context ends; a green thread's open objects vanish with it.
 */
typedef struct conc_timeout {
    double seconds; /* CONC_FOREVER: never fires (gevent's Timeout(None)) */
    int code;       /* what a cut wait returns; 0: CONC_ETIMEDOUT */
    uint32_t id;    /* private: the running scope, 0 when not started */
    void *ctx;      /* private: the context that started it */
    bool fired;     /* private: it fired (kept by cancel) */
} conc_timeout_t;
#define CONC_TIMEOUT_INIT(seconds, code) {(seconds), (code), 0, 0, 0}

/* Timeout(seconds, exception): 0, CONC_EINVAL (NULL, NaN seconds, code > 0).
 * Negative seconds: fires at once when started. Does not start it. */
CONC_API int conc_timeout_init(conc_timeout_t *t, double seconds, int code);
/* Timeout.start(): arm from now on the calling context. Returns 0,
 * CONC_EPERM (pending already: cancel first), CONC_ERANGE (8 scopes open),
 * CONC_EINVAL. A fired one may be started again. start_new: init + start
 * (Timeout.start_new). */
CONC_API int conc_timeout_start(conc_timeout_t *t);
CONC_API int conc_timeout_start_new(conc_timeout_t *t, double seconds, int code);
/* Timeout.cancel(): disarm (its slot goes, whichever it is). Idempotent:
 * 0, also when not started; CONC_EPERM from another context than the one
 * that started it; CONC_EINVAL. */
CONC_API int conc_timeout_cancel(conc_timeout_t *t);
/* Timeout.pending: started here and not yet fired or cancelled. fired:
 * it cut a wait (or its deadline passed in one), even after cancel. Both
 * read the calling context: false elsewhere. */
CONC_API bool conc_timeout_pending(const conc_timeout_t *t);
CONC_API bool conc_timeout_fired(const conc_timeout_t *t);
/* gevent.with_timeout(seconds, fn, arg, timeout_value=...): call fn(arg)
 * under a Timeout. Returns 0 with fn's result in *result (may be NULL);
 * CONC_ETIMEDOUT with timeout_value in *result when this timeout fired
 * (fn saw CONC_ETIMEDOUT from the wait it cut, and returned); CONC_EFAILED
 * if fn failed (conc_fail: the caller's failure now); CONC_ERANGE,
 * CONC_EINVAL. Other scopes' cuts reach fn as usual. */
CONC_API int conc_with_timeout(double seconds, void *(*fn)(void *), void *arg, void *timeout_value, void **result);

/*
 * LoopExit: when a green thread's hub has nothing that could ever wake
 * the OS thread's own context — no ready green thread, no timer, no I/O
 * being waited on, and no other thread conc knows of — the blocked call
 * of that context returns CONC_ELOOPEXIT instead of hanging. The threads
 * conc knows of are the ones it started (conc_thread_*, its thread pools
 * and offload workers, the timer thread) and foreign threads that have
 * used conc; while one lives it could wake the context, so it waits. A
 * thread conc never saw (a sanitizer's, a library's, a raw pthread that
 * never called conc) does not count: it holds no conc waiter. Once the
 * last green thread of a hub has ended, the OS thread's context parks as
 * a plain thread again, and LoopExit no longer applies.
 */

/* gevent's threadpool.spawn(...).get(): run fn(arg) on conc's default
 * thread pool and park the caller (only this green thread) until it is
 * done. Returns 0 and stores fn's result in *result; CONC_EFAILED if fn
 * failed (conc_fail; submit to a pool yourself to read its code and
 * message from the future); CONC_EKILLED / CONC_ETIMEDOUT if the wait was
 * interrupted (fn keeps running); CONC_ESHUTDOWN after the exit step. */
CONC_API int conc_green_offload(void *(*fn)(void *), void *arg, void **result);

/*
 * Hub backends: how a hub waits for I/O (docs/green.md, "Hub backends").
 * Every backend runs every conc call the same way; they differ in speed
 * and limits:
 *   CONC_HUB_EPOLL   edge-triggered epoll (readiness; no fd limit)
 *   CONC_HUB_URING   io_uring: cooperative recv/send/read/write on
 *                    sockets, accept and connect are submitted to the
 *                    kernel as operations (one io_uring_enter per hub
 *                    turn), other waits are IORING_OP_POLL_ADD
 *   CONC_HUB_POLL    poll(2) over the fds being waited on
 *   CONC_HUB_SELECT  select(2): fds >= FD_SETSIZE (1024) cannot be waited
 *                    on (the call that would wait returns CONC_ERANGE)
 *   CONC_HUB_DEFAULT (zero) the process default: CONC_HUB_BACKEND from the
 *                    environment (epoll|uring|poll|select), else the best
 *                    this kernel allows (see docs/green.md for which).
 */
typedef enum conc_hub_backend {
    CONC_HUB_DEFAULT = 0,
    CONC_HUB_EPOLL = 1,
    CONC_HUB_URING = 2,
    CONC_HUB_POLL = 3,
    CONC_HUB_SELECT = 4,
} conc_hub_backend_t;

/* Options of a hub; zero means the defaults. */
typedef struct conc_hub_opts {
    conc_hub_backend_t backend;
} conc_hub_opts_t;

/* Make the calling OS thread's hub now, with opts (NULL: defaults),
 * instead of at the first conc_go; or switch an existing hub that waits on
 * no fd and has no I/O in flight to another backend. Does not block.
 * Returns 0; CONC_ENOTSUP when the backend asked for explicitly cannot be
 * used here (io_uring disabled by /proc/sys/kernel/io_uring_disabled or a
 * seccomp filter, or too old a kernel); CONC_EPERM when the hub is busy
 * with I/O; CONC_EINVAL (an unknown backend); CONC_ENOMEM. */
CONC_API int conc_hub_init(const conc_hub_opts_t *opts);

/* The backend of the calling OS thread's hub, or CONC_HUB_DEFAULT when
 * it has none yet. */
CONC_API conc_hub_backend_t conc_hub_backend(void);

/* "epoll", "uring", "poll", "select", "default"; NULL for anything else. */
CONC_API const char *conc_hub_backend_name(conc_hub_backend_t b);

/*
 * Green Pool (gevent.pool.Pool): at most size green threads of the pool
 * run at once; spawn blocks (the calling context) until a slot is free.
 * Members are green threads of the caller's hub: add, start and discard
 * only on that OS thread. PoolFull is CONC_EFULL: a spawn / add that
 * found no slot — not blocking, or its own timeout passed (gevent raises
 * PoolFull for both) — while CONC_ETIMEDOUT means a Timeout scope cut it.
 */
typedef struct conc_green_pool conc_green_pool_t;

/* gevent's Pool(None): no limit (free_count is always 1, full never). */
#define CONC_GREEN_POOL_UNBOUNDED ((size_t)-1)

/* Pool(size). size 0 is allowed, as in gevent: a pool nothing can join
 * (spawn waits until its timeout; useful with wait_available and a
 * timeout). Returns 0 and a new pool in *out; CONC_EINVAL (NULL out, size
 * above CONC_SEMAPHORE_MAX and not CONC_GREEN_POOL_UNBOUNDED), CONC_ENOMEM. */
CONC_API int conc_green_pool_new(conc_green_pool_t **out, size_t size);
/* Wait for a free slot (up to timeout; 0: do not wait), then conc_go into
 * the pool. *out (may be NULL) receives a handle you must free. Returns 0,
 * CONC_EFULL (no slot in time: PoolFull), CONC_EINVAL, CONC_ENOMEM, or an
 * interruption (CONC_EKILLED, CONC_ETIMEDOUT from a scope). */
CONC_API int conc_green_pool_spawn(conc_green_pool_t *p, conc_green_t **out, void *(*fn)(void *), void *arg,
                                   double timeout);
/* Pool.add(greenlet, blocking, timeout): track g (best made with
 * conc_green_new and not started, so it cannot end before it is counted),
 * taking a slot — waiting for one if blocking, up to timeout. Adding one
 * already in p, or one that has ended, does nothing. Returns 0, CONC_EFULL,
 * an interruption, CONC_EPERM (g is in another pool, or the caller is not
 * on g's hub's OS thread), CONC_EINVAL. Pool.start: add, then
 * conc_green_start (CONC_EPERM if g was started already). */
CONC_API int conc_green_pool_add(conc_green_pool_t *p, conc_green_t *g, bool blocking, double timeout);
CONC_API int conc_green_pool_start(conc_green_pool_t *p, conc_green_t *g, bool blocking, double timeout);
/* Pool.discard: stop tracking g (its slot is free again; g runs on).
 * Returns 0 (also when g was not in p), CONC_EPERM (not g's hub's OS
 * thread), CONC_EINVAL. contains: g is a live member of p. */
CONC_API int conc_green_pool_discard(conc_green_pool_t *p, conc_green_t *g);
CONC_API bool conc_green_pool_contains(const conc_green_pool_t *p, const conc_green_t *g);
/* Wait until no green thread of the pool runs. 0 or CONC_ETIMEDOUT. */
CONC_API int conc_green_pool_join(conc_green_pool_t *p, double timeout);
/* Kill every member; with block, wait up to timeout for them to end. */
CONC_API int conc_green_pool_kill(conc_green_pool_t *p, bool block, double timeout);
/* Members running now / free slots (Pool.free_count: 1 for an unbounded
 * pool) / no free slot (Pool.full). */
CONC_API size_t conc_green_pool_size(const conc_green_pool_t *p);
CONC_API size_t conc_green_pool_free_count(const conc_green_pool_t *p);
CONC_API bool conc_green_pool_full(const conc_green_pool_t *p);
/* Pool.wait_available(timeout): wait until a spawn would not block,
 * without taking the slot; stores free_count in *free_out (may be NULL;
 * 0 unless it returns 0). Returns 0, CONC_ETIMEDOUT (gevent returns 0
 * free there: a Pool(0) always ends so), an interruption, CONC_EINVAL. */
CONC_API int conc_green_pool_wait_available(conc_green_pool_t *p, double timeout, size_t *free_out);
/* Free an empty pool: CONC_EPERM while members run, else 0. */
CONC_API int conc_green_pool_free(conc_green_pool_t *p);

/* Pool.apply(fn, arg): run fn(arg) in a member and wait for it; called
 * from a member of p itself, fn runs right there (no slot taken: a member
 * waiting for its own full pool would deadlock), as gevent does. Returns 0
 * and fn's result in *result (may be NULL); CONC_EFAILED when fn failed —
 * its code and message are passed on to the caller (conc_fail), as get
 * re-raises; an interruption (the member is then killed); CONC_EINVAL. */
CONC_API int conc_green_pool_apply(conc_green_pool_t *p, void *(*fn)(void *), void *arg, void **result);
/* Pool.apply_async(fn, arg, callback): never blocks. With room, spawns fn
 * in the pool; when full, returns a helper green thread outside the pool
 * that waits for a slot and ends with the member's outcome (value or
 * failure), so conc_green_get on *out gives fn's outcome either way.
 * callback (may be NULL) gets fn's result on success, run on the ending
 * green thread (a link). *out may be NULL (detached). Returns 0,
 * CONC_EINVAL, CONC_ENOMEM. */
CONC_API int conc_green_pool_apply_async(conc_green_pool_t *p, conc_green_t **out, void *(*fn)(void *), void *arg,
                                         void (*callback)(void *result, void *arg), void *cb_arg);
/* Pool.map: fn(args[i]) for i < n, at most the pool's size at once;
 * results[i] in input order once all ended. Returns 0; CONC_EFAILED if an
 * item failed — the first in input order, index in *failed_index (may be
 * NULL), its code and message passed on to the caller (conc_fail) — the
 * others still ran; an interruption of the caller (then the items still
 * running are killed and waited for); CONC_EINVAL. */
CONC_API int conc_green_pool_map(conc_green_pool_t *p, void *(*fn)(void *), void *const *args, size_t n,
                                 void **results, size_t *failed_index);

/* Pool.imap / imap_unordered: a lazy iterator over the results. A feeder
 * green thread (on the caller's hub, outside the pool) spawns the items
 * in order as slots free up; conc_green_imap_next hands the results out
 * in input order (imap) or as they finish (unordered). */
typedef struct conc_green_imap conc_green_imap_t;
typedef struct conc_green_imap_opts {
    bool unordered; /* imap_unordered */
    size_t maxsize; /* gevent's maxsize: at most this many finished results
                       wait unconsumed (the feeder pauses); 0: no limit */
} conc_green_imap_opts_t;
/* args must stay valid until conc_green_imap_free. Returns 0, CONC_EINVAL,
 * CONC_ENOMEM. opts NULL = imap with no maxsize. */
CONC_API int conc_green_pool_imap(conc_green_imap_t **out, conc_green_pool_t *p, void *(*fn)(void *),
                                  void *const *args, size_t n, const conc_green_imap_opts_t *opts);
/* The next result: 0 with it in *result and its input index in *index
 * (either may be NULL); CONC_EFAILED when that item failed (read its code
 * with conc_green_imap_exception; the iteration goes on with the next);
 * CONC_EEOF after the last; an interruption of the wait (kill, scope —
 * the iterator stays usable); the error that stopped the feeder
 * (CONC_ENOMEM). Blocks the calling context only. */
CONC_API int conc_green_imap_next(conc_green_imap_t *it, void **result, size_t *index);
/* The failure code (0: none) and message (valid until free) of item index. */
CONC_API int conc_green_imap_exception(conc_green_imap_t *it, size_t index, const char **msg);
/* Stop: items not spawned yet never run, running ones are killed and
 * waited for. Returns 0 or CONC_EINVAL. */
CONC_API int conc_green_imap_free(conc_green_imap_t *it);

#ifdef __cplusplus
}
#endif
#endif /* CONC_GREEN_H */
