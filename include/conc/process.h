/*
 * conc/process.h — multiprocessing.Process: run a function in a child
 * process, with fork, spawn or a fork server.
 *
 *     static int work(const void *arg, size_t len) { ...; return 0; }
 *     CONC_REGISTER(work);                      // at file scope
 *     int main(int argc, char **argv) {
 *         CONC_PROCESS_MAIN(argc, argv);        // first line of main
 *         conc_process_t *p;
 *         conc_process_new(&p, work, "hi", 2, NULL);
 *         conc_process_start(p);
 *         conc_process_join(p, CONC_FOREVER);
 *         ...
 *     }
 *
 * Functions. A function that runs in a child has the shape
 * `int fn(const void *arg, size_t len)`: it gets a private copy of the
 * byte-buffer argument given at conc_process_new, and its return value is
 * the child's exit status (0..255, like main). When it records a failure
 * with conc_fail(), "Process NAME: ErrName: message" is printed on stderr
 * and the exit status is 1 (Python's uncaught exception).
 *
 * Registry. A pointer means nothing in a freshly executed program, so
 * functions that run under spawn or forkserver must be registered by name:
 * `CONC_REGISTER(fn);` at file scope adds fn under the name "fn" when the
 * program is loaded (a constructor), so the child — the same executable —
 * finds it again by name. fork does not need the registry, but registering
 * every process function costs nothing and keeps the start method a detail.
 * conc_registry_find() looks names up (process pools use it too).
 *
 * The guard. spawn starts a fresh copy of the program (/proc/self/exe) and
 * the fork server is such a copy too. Their main() must begin with
 * `CONC_PROCESS_MAIN(argc, argv);`: in a child started by conc it runs the
 * requested function (or the fork server) and exits, elsewhere it returns
 * at once. It plays the part of Python's `if __name__ == '__main__':`. A
 * spawned child whose main starts a process without having run the guard
 * gets CONC_EPERM (instead of starting children forever).
 *
 * Start methods (multiprocessing's set_start_method):
 *   CONC_FORK        fork(); the child runs the function at once and then
 *                    _exit()s (the parent's atexit handlers do not run in
 *                    it). Cheapest; unsafe after threads were started (a
 *                    lock held by another thread stays locked in the child).
 *   CONC_SPAWN       posix_spawn of /proc/self/exe; the child gets the
 *                    function's name and the argument over a socket and
 *                    ends with exit() (its own atexit handlers run).
 *   CONC_FORKSERVER  a server process, started by spawn on first use (so it
 *                    is single-threaded), forks each child on request. Its
 *                    socket lives in a private 0700 directory (removed as
 *                    soon as this process is connected) and accepts only
 *                    its own parent: SO_PEERCRED pid and a random token.
 *   CONC_START_DEFAULT  fork while this process has a single thread,
 *                    forkserver as soon as it has more (counted in
 *                    /proc/self/stat, so threads conc did not start count
 *                    too). The classic fork-after-threads deadlock therefore
 *                    cannot happen by default.
 * conc_set_start_method() changes what CONC_START_DEFAULT means.
 *
 * Ownership. conc_process_t is an opaque, reference-counted handle: the one
 * from conc_process_new and every one from conc_active_children is yours,
 * give it back with conc_process_free exactly once. Freeing the handle of a
 * running child does not stop it: conc keeps a reference until the child
 * is reaped. conc_current_process() and conc_parent_process() are borrowed
 * and live as long as the process.
 *
 * Exit. At normal exit (return from main, exit()) conc terminates (SIGTERM)
 * the daemon children still running and joins all children, as Python's
 * multiprocessing does; every child is reaped, none is left a zombie. The
 * fork server goes away with its parent (it exits when its connection
 * closes). A daemon process may not start children (CONC_EPERM).
 *
 * Errors (Python's exception in brackets):
 *   CONC_EINVAL  NULL handle or function, bad timeout, a closed handle
 *                (ValueError "process object is closed"), closing a
 *                process that is still running (ValueError), a function
 *                not in the registry for spawn/forkserver.
 *   CONC_EPERM   start twice, join/sentinel/terminate a process never
 *                started (AssertionError), a handle used from a process
 *                that did not create it, a daemon starting a child, changing
 *                the daemon flag after start, starting from an unguarded
 *                spawned child.
 *   CONC_ESYS    the kernel refused (fork/spawn failed; errno tells why).
 *
 * Waiting (join, and the exit sequence) polls the child's pidfd: an OS
 * thread sleeps in the kernel and is woken by the child's exit.
 */
#ifndef CONC_PROCESS_H
#define CONC_PROCESS_H

#include "conc/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The function a child process runs (see the top of this file). */
typedef int (*conc_process_fn)(const void *arg, size_t len);

typedef enum conc_start_method {
    CONC_START_DEFAULT = 0,
    CONC_FORK = 1,
    CONC_SPAWN = 2,
    CONC_FORKSERVER = 3
} conc_start_method_t;

/* ----------------------------------------------------------- registry */

/* Signature tags: what kind of function a registry entry holds. */
enum {
    CONC_SIG_OTHER = 0,   /* any other function type (cast before calling) */
    CONC_SIG_PROCESS = 1, /* conc_process_fn */
    CONC_SIG_TASK = 2     /* void *(*)(void *) */
};

typedef struct conc_registration {
    const char *name;
    void (*fn)(void);                       /* cast back by signature tag */
    int sig;                                /* CONC_SIG_* or a user tag */
    struct conc_registration *next;         /* conc-owned */
} conc_registration_t;

/* Add r (static storage, never freed) to the registry. Returns 0 or
 * CONC_EINVAL (NULL r, name or fn). Used by CONC_REGISTER; call it yourself
 * only before starting children, identically in every copy of the program. */
CONC_API int conc_register(conc_registration_t *r);

/* The entry registered under name (the first one added, if a name was
 * registered twice), or NULL. Never blocks. */
CONC_API const conc_registration_t *conc_registry_find(const char *name);

/* The entry registered for function pointer fn, or NULL. */
CONC_API const conc_registration_t *conc_registry_find_fn(void (*fn)(void));

#ifdef __cplusplus
} /* extern "C" */
/* constexpr: CONC_REGISTER's entry is then initialised statically, before
 * any constructor registers it (a dynamic initialiser may run after the
 * constructor: clang++ registered an empty entry). Since C++17 noexcept is
 * part of a function's type: a noexcept function has the same tag. */
static constexpr inline int conc__sig_of(conc_process_fn) { return CONC_SIG_PROCESS; }
static constexpr inline int conc__sig_of(void *(*)(void *)) { return CONC_SIG_TASK; }
#if defined(__cpp_noexcept_function_type)
static constexpr inline int conc__sig_of(int (*)(const void *, size_t) noexcept) { return CONC_SIG_PROCESS; }
static constexpr inline int conc__sig_of(void *(*)(void *) noexcept) { return CONC_SIG_TASK; }
#endif
template <class F> static constexpr inline int conc__sig_of(F) { return CONC_SIG_OTHER; }
#define CONC__SIG_OF(fn) conc__sig_of(fn)
extern "C" {
#else
#define CONC__SIG_OF(fn)                                                      \
    _Generic((fn), conc_process_fn: CONC_SIG_PROCESS,                         \
             void *(*)(void *): CONC_SIG_TASK, default: CONC_SIG_OTHER)
#endif

/* Register fn under its own name (at file scope; fn declared before it). */
#define CONC_REGISTER(fn) CONC_REGISTER_AS(fn, #fn, CONC__SIG_OF(&fn))

/* Register fn under name with signature tag sig (file scope). The name must
 * be unique in the program; tags >= 100 are free for users. */
#define CONC_REGISTER_AS(fn, name, sig)                                       \
    static conc_registration_t conc__reg_##fn = {name, (void (*)(void))(fn), \
                                                 sig, 0};                     \
    __attribute__((constructor)) static void conc__reg_ctor_##fn(void)        \
    {                                                                         \
        conc_register(&conc__reg_##fn);                                       \
    }                                                                         \
    struct conc__reg_semicolon_##fn

/* -------------------------------------------------------------- guard */

/* In a child started by conc's spawn (or in the fork server), runs what it
 * was started for and exits; never returns there. Anywhere else returns 0
 * at once. Call it first thing in main. */
CONC_API int conc_process_main(int argc, char **argv);
#define CONC_PROCESS_MAIN(argc, argv) ((void)conc_process_main((argc), (argv)))

/* ------------------------------------------------------------ Process */

typedef struct conc_process conc_process_t;

/* Options for conc_process_new; NULL means all defaults: name
 * "Process-N" (N counts the processes this process created, prefixed with
 * the creator's own numbers in a child: "Process-2:1"), not a daemon, the
 * default start method. */
typedef struct conc_process_opts {
    const char *name;             /* copied */
    bool daemon;
    conc_start_method_t method;
} conc_process_opts_t;

/* Create a process that will run fn(arg, len) once started
 * (Process(target=fn, args=...)). arg is copied (len bytes; arg may be NULL
 * when len is 0). Returns 0 and a new handle in *out, or CONC_EINVAL (NULL
 * out/fn, NULL arg with len > 0, unknown method), CONC_ENOMEM. For spawn
 * and forkserver fn must be registered (checked at start). */
CONC_API int conc_process_new(conc_process_t **out, conc_process_fn fn, const void *arg,
                              size_t len, const conc_process_opts_t *opts);

/* Start the child (fork, spawn, or a request to the fork server). Returns
 * once the child exists (its pid is known); does not wait for it to run.
 * Returns 0, CONC_EPERM (started before, daemon parent, not this process's
 * handle, unguarded spawned child), CONC_EINVAL (closed; fn not registered
 * for spawn/forkserver), CONC_ENOMEM, CONC_ESYS (errno set). */
CONC_API int conc_process_start(conc_process_t *p);

/* Wait until the child has ended (and reap it). A negative timeout is
 * already up (one check), as multiprocessing's join waits with
 * connection.wait. Returns 0 (the exit code is
 * then available), CONC_ETIMEDOUT, CONC_EPERM (never started, or not this
 * process's child), CONC_EINVAL (NULL, closed, NaN timeout). Any number of
 * threads may join the same process. */
CONC_API int conc_process_join(conc_process_t *p, double timeout);

/* True between start and the moment the child is seen to have ended (a
 * child that ended is reaped here). False for NULL, never-started, closed
 * handles and handles of another process's children. conc_current_process() is always alive; the parent record is
 * alive until the parent ends. */
CONC_API bool conc_process_is_alive(conc_process_t *p);

/* Process.exitcode: returns 0 and stores in *code the child's exit status,
 * -signum when a signal ended it, 1 when its function failed with
 * conc_fail(), 255 when it cannot be known (someone else reaped the child;
 * the fork server died). CONC_EAGAIN when there is no exit code (yet): not
 * started or still running (Python's None). CONC_EINVAL: NULL, closed. */
CONC_API int conc_process_exitcode(conc_process_t *p, int *code);

/* Process.pid: the child's pid (> 0), 0 before start, CONC_EINVAL if p is
 * NULL or closed. */
CONC_API int conc_process_pid(const conc_process_t *p);

/* Process.sentinel: a pidfd that becomes readable (POLLIN) when the child
 * ends; owned by the handle (valid until close/free). Returns the fd,
 * CONC_EPERM before start, CONC_EINVAL when NULL/closed. */
CONC_API int conc_process_sentinel(const conc_process_t *p);

/* Send SIGTERM (terminate) / SIGKILL (kill). Returns 0 (also when the
 * child has already ended), CONC_EPERM before start or for another
 * process's handle, CONC_EINVAL when NULL/closed, CONC_ESYS. */
CONC_API int conc_process_terminate(conc_process_t *p);
CONC_API int conc_process_kill(conc_process_t *p);

/* Process.close: release the pidfd; afterwards every call but name,
 * daemon, close and free returns CONC_EINVAL. Returns 0 (also when never
 * started or already closed), CONC_EINVAL when the child is still running
 * (Python's ValueError) or p is NULL. */
CONC_API int conc_process_close(conc_process_t *p);

/* Give back your handle (see Ownership at the top). 0 or CONC_EINVAL. */
CONC_API int conc_process_free(conc_process_t *p);

/* The name; conc-owned, valid until the next set_name or the handle's free. */
CONC_API const char *conc_process_name(const conc_process_t *p);
/* Rename (copied). 0, CONC_EINVAL, CONC_ENOMEM. */
CONC_API int conc_process_set_name(conc_process_t *p, const char *name);
CONC_API bool conc_process_daemon(const conc_process_t *p);
/* Change the daemon flag; CONC_EPERM once started (AssertionError). */
CONC_API int conc_process_set_daemon(conc_process_t *p, bool daemon);
/* The start method this handle uses (CONC_START_DEFAULT until started;
 * then the method that was actually used). For conc_current_process() in
 * a child: the method it was started with (CONC_START_DEFAULT in the
 * original program). */
CONC_API conc_start_method_t conc_process_method(const conc_process_t *p);

/* ---------------------------------------------------- module functions */

/* multiprocessing.current_process(): borrowed. Name "MainProcess" in the
 * original program, the Process's name in a child; pid is getpid(). */
CONC_API conc_process_t *conc_current_process(void);

/* Process.authkey: the bytes Managers and Listeners prove to each other
 * (HMAC). The main process's is 32 random bytes (os.urandom(32)), made
 * at first use; a new Process copies its creator's current key and the
 * child starts with it as its own (every start method), so a family of
 * processes shares one key unless told otherwise. The parent record
 * (conc_parent_process) reports this process's key, as Python does.
 * Returns the key (owned by p; valid until it is set again or p freed)
 * and its length in *len (len may be NULL); NULL for NULL p. */
CONC_API const void *conc_process_authkey(conc_process_t *p, size_t *len);
/* Set p's authkey (copied): the current process's, or a child's before it
 * starts. Returns 0; CONC_EINVAL (NULL, len 0 — an empty key would let
 * anybody in — len > 256, the parent record); CONC_EPERM (the child has
 * started). Not synchronised with concurrent readers of the same key. */
CONC_API int conc_process_set_authkey(conc_process_t *p, const void *key, size_t len);

/* multiprocessing.parent_process(): borrowed, NULL in the original
 * program. In a child started by conc: the process that started it (for a
 * fork-server child too), with its name and pid; is_alive, join and
 * sentinel work (exitcode does not: CONC_EAGAIN). */
CONC_API conc_process_t *conc_parent_process(void);

/* multiprocessing.active_children(): reaps the children of this process
 * that have ended, stores up to cap new handles (free each) of those still
 * running and returns how many there are (may be more than cap). out may
 * be NULL when cap is 0. */
CONC_API size_t conc_active_children(conc_process_t **out, size_t cap);

/* The number of CPUs this process may run on (sched_getaffinity), >= 1. */
CONC_API int conc_cpu_count(void);

/* multiprocessing.set_start_method / get_start_method: what
 * CONC_START_DEFAULT means for processes started from now on. m may be
 * CONC_START_DEFAULT (the fork-or-forkserver rule above). Returns 0 or
 * CONC_EINVAL. */
CONC_API int conc_set_start_method(conc_start_method_t m);
CONC_API conc_start_method_t conc_get_start_method(void);

/* "fork", "spawn", "forkserver" or "default". */
CONC_API const char *conc_start_method_name(conc_start_method_t m);

#ifdef __cplusplus
}
#endif
#endif /* CONC_PROCESS_H */
