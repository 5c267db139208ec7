/*
 * conc/thread.h — threading.Thread, threading.local, threading.Timer and the
 * module-level functions (current_thread, enumerate, excepthook...).
 *
 * Ownership: conc_thread_t and conc_timer_t are opaque, reference-counted
 * handles. Every handle you get from *_new, *_spawn, *_start or
 * conc_thread_enumerate is yours and must be given back with the matching
 * *_free exactly once; freeing a running thread's handle does not stop it
 * (like dropping a Python reference). conc_current_thread() and
 * conc_main_thread() return borrowed pointers: valid while that thread runs
 * (the main thread's for the whole process).
 *
 * Exit: at normal process exit (return from main, exit()), conc first
 * marks the main thread finished (threads joining it return), then joins
 * every non-daemon thread still running, shuts down its thread pools and
 * waits for pending (not cancelled) timers, as Python's threading._shutdown
 * does. Daemon threads are abandoned. As in Python, this happens before
 * the program's own atexit handlers run: conc (re-)registers its exit step
 * each time a conc thread starts, so every handler registered before the
 * last thread start runs after the joins (a handler registered after that
 * runs first: C runs atexit handlers newest first). Work submitted to any
 * executor after the exit step (from a later atexit handler) fails with
 * CONC_ESHUTDOWN.
 *
 * A conc thread that ends with pthread_exit() (or is cancelled) ends like
 * one whose function returned NULL: join returns, it leaves enumerate.
 * So does the main thread when it calls pthread_exit() (threads joining
 * it return; the process lives until its last thread ends).
 */
#ifndef CONC_THREAD_H
#define CONC_THREAD_H

#include "conc/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct conc_thread conc_thread_t;

/* Options for conc_thread_new; NULL means all defaults. Zero fields mean
 * the default: name "Thread-N", non-daemon (or inherit the creator's daemon
 * flag, as Python does, when inherit_daemon is set), the system stack size. */
typedef struct conc_thread_opts {
    const char *name;  /* copied */
    bool daemon;
    bool inherit_daemon; /* take the creating thread's daemon flag instead */
    size_t stack_size; /* bytes; 0 = default; else >= 16 KiB */
} conc_thread_opts_t;

/* Create a thread that will run fn(arg) once started (Thread(target=...)).
 * A NULL or empty name gives the default "Thread-N".
 * Returns 0 and stores a new handle in *out, or CONC_EINVAL (NULL out/fn,
 * stack size too small), CONC_ENOMEM. Does not start it. */
CONC_API int conc_thread_new(conc_thread_t **out, void *(*fn)(void *), void *arg,
                             const conc_thread_opts_t *opts);
/* Start it. Returns 0; CONC_EPERM if it was already started; CONC_EAGAIN
 * if the system cannot create another thread. */
CONC_API int conc_thread_start(conc_thread_t *t);
/* conc_thread_new + conc_thread_start in one call; on failure *out is not
 * set and nothing is left behind. */
CONC_API int conc_thread_spawn(conc_thread_t **out, void *(*fn)(void *), void *arg,
                               const conc_thread_opts_t *opts);
/* Wait until the thread's function has returned. Returns 0 and stores the
 * function's return value in *result (if result is not NULL);
 * CONC_ETIMEDOUT if timeout passed first (a negative timeout is already
 * up: a poll, as Python's join(max(timeout, 0))); CONC_EPERM at once when
 * joining yourself, a thread never started, or a thread conc did not
 * create (a "dummy" record, as Python's dummy threads cannot be joined);
 * CONC_EINVAL (NaN). Any number of contexts may join. The main thread can
 * be joined: it counts as finished once the process exits normally. */
CONC_API int conc_thread_join(conc_thread_t *t, double timeout, void **result);
/* Give back your handle (see Ownership). Returns 0 or CONC_EINVAL. */
CONC_API int conc_thread_free(conc_thread_t *t);

/* True between start and the moment the function returned. */
CONC_API bool conc_thread_is_alive(const conc_thread_t *t);
/* The name; conc-owned, valid until the next set_name or the handle's free. */
CONC_API const char *conc_thread_name(const conc_thread_t *t);
/* Rename (copied). Also names the OS thread (first 15 bytes) for debuggers. */
CONC_API int conc_thread_set_name(conc_thread_t *t, const char *name);
CONC_API bool conc_thread_daemon(const conc_thread_t *t);
/* Change the daemon flag; CONC_EPERM once started (Python's RuntimeError). */
CONC_API int conc_thread_set_daemon(conc_thread_t *t, bool daemon);
/* Thread.ident: the pthread_t as an integer; 0 before start, set from the
 * thread's first instruction on (and in the creator once start returned).
 * Stays set after the thread ended. */
CONC_API unsigned long conc_thread_ident(const conc_thread_t *t);
/* Thread.native_id: the kernel's thread id (gettid); 0 before start. */
CONC_API long conc_thread_native_id(const conc_thread_t *t);

/* threading.current_thread(): the calling thread's handle, borrowed. Also
 * works for threads conc did not create (a "dummy" record, kept while that
 * thread lives). NULL only if memory ran out. */
CONC_API conc_thread_t *conc_current_thread(void);
/* threading.main_thread(): borrowed, valid for the whole process. In a
 * child made by fork(), the thread that forked (even one conc never saw:
 * it gets a record named "MainThread"). */
CONC_API conc_thread_t *conc_main_thread(void);
/* threading.get_ident() / get_native_id() of the caller. */
CONC_API unsigned long conc_get_ident(void);
CONC_API long conc_get_native_id(void);
/* threading.active_count(): threads alive now (main + started-and-running +
 * known foreign threads). */
CONC_API size_t conc_active_count(void);
/* threading.enumerate(): stores up to cap new handles (free each with
 * conc_thread_free) of the threads alive now, and returns how many are
 * alive (which may be more than cap). */
CONC_API size_t conc_thread_enumerate(conc_thread_t **out, size_t cap);

/* threading.excepthook: called in a thread whose function returned after
 * conc_fail(). code/msg are the failure; t is the thread. The default hook
 * prints "Exception in thread NAME: ErrName: message" on stderr (called
 * with t NULL, it names the calling thread). A hook that fails itself
 * (calls conc_fail) is reported on stderr as "Exception in
 * threading.excepthook: ErrName: message". */
typedef void (*conc_excepthook_fn)(conc_thread_t *t, int code, const char *msg, void *arg);
/* Install hook (NULL restores the default). Returns the previous hook. */
CONC_API conc_excepthook_fn conc_set_excepthook(conc_excepthook_fn hook, void *arg);

/* threading.stack_size(size): the stack size of threads created from now
 * on whose options leave stack_size at 0 (conc_thread_new, conc's thread
 * pools, timers...). 0 means the system default. Stores the previous
 * setting (0 = default) in *old (may be NULL), as Python returns it.
 * Returns 0, or CONC_EINVAL — and changes nothing — for a size below
 * 32 KiB (CPython's minimum, its ValueError) or one the system refuses
 * (pthread_attr_setstacksize: not a valid size). As in Python, calling it
 * with 0 resets the default; conc_stack_size_get only reads. */
CONC_API int conc_stack_size(size_t size, size_t *old);
CONC_API size_t conc_stack_size_get(void);

/* --------------------------------------------------------------- local */

/* threading.local: one value per thread — and per green thread, used from
 * one (gevent.local; see conc/green.h). A thread sees NULL until it sets a
 * value. When a thread ends, its non-NULL value is passed to dtor (if any)
 * in that thread. conc_local_free passes every remaining value to dtor. */
typedef struct conc_local conc_local_t;

/* data = threading.local(): a new local in *out (free it with
 * conc_local_free). Returns 0, CONC_EINVAL, CONC_ENOMEM. */
CONC_API int conc_local_new(conc_local_t **out, void (*dtor)(void *value));
/* The calling thread's value, or NULL. Never blocks. */
CONC_API void *conc_local_get(conc_local_t *l);
/* Set the calling thread's value (the old one is NOT passed to dtor: it is
 * returned to you through *old if old is not NULL). Returns 0, CONC_EINVAL,
 * CONC_ENOMEM. */
CONC_API int conc_local_set(conc_local_t *l, void *value, void **old);
CONC_API int conc_local_free(conc_local_t *l);
/* A subclass of threading.local with an __init__: init(arg) runs in each
 * context (thread, or green thread) the first time it calls conc_local_get
 * without having set a value, and its result becomes that context's value
 * (destroyed by dtor like any other; conc_local_set replaces it as usual;
 * a value set to NULL stays NULL). init runs with no conc lock held and
 * may use conc. NULL init is conc_local_new. Returns 0, CONC_EINVAL,
 * CONC_ENOMEM. */
CONC_API int conc_local_new_init(conc_local_t **out, void *(*init)(void *arg), void *arg,
                                 void (*dtor)(void *value));

/* --------------------------------------------------------------- Timer */

/* threading.Timer: fn(arg) runs once, interval seconds from now, unless
 * cancelled first. All timers share one timer thread and a heap; timers
 * due at the same time fire in the order they were started. fn runs on the
 * timer thread: keep it short, or hand longer work to a thread. */
typedef struct conc_timer conc_timer_t;

/* Arm a timer. interval: seconds; negative fires at once (Python's Timer
 * waits with it as a timeout: already up), CONC_FOREVER never fires (only
 * cancel ends it). Returns 0 and a new handle in *out (free it with
 * conc_timer_free; freeing does not cancel), or CONC_EINVAL (NaN, NULL),
 * CONC_ENOMEM, CONC_EAGAIN (no timer thread). */
CONC_API int conc_timer_start(conc_timer_t **out, double interval, void (*fn)(void *),
                              void *arg);
/* Stop it if it has not fired yet. Harmless after it fired or was
 * cancelled. Returns 0 or CONC_EINVAL. If fn is running now, cancel does
 * not wait for it (use join). */
CONC_API int conc_timer_cancel(conc_timer_t *t);
/* Wait until the timer has fired (fn returned) or was cancelled (timeout
 * as Thread.join: negative is already up). Returns 0, CONC_ETIMEDOUT, CONC_EINVAL, or CONC_EPERM when called from
 * fn itself (it would wait for itself). */
CONC_API int conc_timer_join(conc_timer_t *t, double timeout);
/* True while the timer is pending or its fn is running. */
CONC_API bool conc_timer_is_alive(const conc_timer_t *t);
/* True when it ran fn (false if it was cancelled or is pending). */
CONC_API bool conc_timer_fired(const conc_timer_t *t);
CONC_API int conc_timer_free(conc_timer_t *t);

#ifdef __cplusplus
}
#endif
#endif /* CONC_THREAD_H */
