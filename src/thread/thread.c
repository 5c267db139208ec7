/*
 * thread.c — threading.Thread and the module functions.
 *
 * Each thread conc knows has a record (struct conc_thread): threads conc
 * starts, the main thread (recorded by a constructor at load time) and
 * "dummy" records made on demand for threads conc did not create (freed by
 * the context's key destructor when such a thread ends). Live records sit
 * in one registry list under `reg_lock`; that list is what enumerate() and
 * active_count() read and what exit-time joining walks.
 *
 * Records are reference counted: the user's handle holds one, a running
 * thread holds one for itself, enumerate hands out more. Lifecycle:
 * NEW -> RUNNING (start) -> DONE (function returned; `done` event set, so
 * join is an Event wait through the park layer, so any number of contexts
 * can join, with timeouts). The OS thread is joinable: the first join that
 * sees DONE reaps it with pthread_join (it is already on its way out), so
 * its stack is recycled at once; if nobody joins, the last reference
 * detaches it. `reaped` makes sure exactly one of the two happens.
 *
 * Exit: an exit handler marks the main thread finished, then runs the
 * modules' exit hooks (pools, timers) and joins every live non-daemon
 * thread, until neither finds anything (Python's threading._shutdown). It
 * is registered lazily and again at each thread start (exit_arm), so it
 * runs before the program's earlier atexit handlers. A thread that leaves
 * through pthread_exit finishes in a cleanup handler. Fork: pthread_atfork handlers keep the registry
 * consistent; in the child every other thread is marked DONE and the
 * forking thread becomes the main thread, as in CPython.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "trace/obs.h"
#include "sync/internal.h"
#include "thread/internal.h"

#define CONC__MIN_STACK (16 * 1024)

static conc_lock_t reg_lock = CONC_LOCK_INIT;
static conc_thread_t *reg_head;
static size_t reg_count;
static unsigned long name_counter;   /* atomic */
static unsigned long dummy_counter;  /* atomic */
static conc_thread_t main_record;
static conc_thread_t *main_thread;
static __thread conc_thread_t *self_record __attribute__((tls_model("initial-exec")));

extern void (*conc__foreign_exit_hook)(conc__ctx_t *ctx);
static void exit_arm(void);
static void main_finish(conc_thread_t *m);

static void default_hook(conc_thread_t *t, int code, const char *msg, void *arg);
static conc_excepthook_fn hook_fn = default_hook; /* under hook_lock */
static void *hook_arg;
static conc_lock_t hook_lock = CONC_LOCK_INIT;

/* ------------------------------------------------------------ registry */

static void reg_add_locked(conc_thread_t *t)
{
    t->prev = NULL;
    t->next = reg_head;
    if (reg_head)
        reg_head->prev = t;
    reg_head = t;
    reg_count++;
}

static void reg_remove_locked(conc_thread_t *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else if (reg_head == t)
        reg_head = t->next;
    else
        return; /* not registered */
    if (t->next)
        t->next->prev = t->prev;
    t->next = t->prev = NULL;
    reg_count--;
}

static void reg_lock_acquire(void) { conc__lock_hold(&reg_lock); }
static void reg_lock_release(void) { conc_lock_release(&reg_lock); }

void conc__thread_foreach(void (*fn)(conc_thread_t *t, void *arg), void *arg)
{
    reg_lock_acquire();
    for (conc_thread_t *t = reg_head; t; t = t->next)
        fn(t, arg);
    reg_lock_release();
}

/* ------------------------------------------------------------- records */

static void thread_ref(conc_thread_t *t)
{
    atomic_fetch_add_explicit(CONC__A(&t->refs), 1, RLX);
}

static void thread_unref(conc_thread_t *t)
{
    if (atomic_fetch_sub_explicit(CONC__A(&t->refs), 1, memory_order_acq_rel) != 1)
        return;
    if (t->is_main)
        return; /* static */
    if (!t->dummy && conc__load(&t->status, ACQ) != CONC__T_NEW) {
        /* Nobody pthread-joined it: let the system reclaim it. */
        int exp = 0;
        if (atomic_compare_exchange_strong_explicit(CONC__A(&t->reaped), &exp, 1, memory_order_acq_rel, RLX))
            pthread_detach(t->pt);
    }
    if (t->name != t->name_buf)
        free(t->name);
    free(t->locals.slots);
    free(t);
}

static char *name_dup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* Name t: a copy of name, or prefix + n; short names live inline. */
static int name_set_initial(conc_thread_t *t, const char *name, const char *prefix, unsigned long n)
{
    if (name) {
        size_t len = strlen(name);
        if (len < sizeof t->name_buf) {
            memcpy(t->name_buf, name, len + 1);
            t->name = t->name_buf;
        } else if (!(t->name = name_dup(name))) {
            return CONC_ENOMEM;
        }
        return 0;
    }
    char digits[24];
    int nd = 0;
    do {
        digits[nd++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    size_t pl = strlen(prefix);
    memcpy(t->name_buf, prefix, pl);
    while (nd)
        t->name_buf[pl++] = digits[--nd];
    t->name_buf[pl] = 0;
    t->name = t->name_buf;
    return 0;
}

static void os_name(const char *name)
{
    char buf[16];
    strncpy(buf, name, sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    pthread_setname_np(pthread_self(), buf);
}

/* ----------------------------------------------------------- lifecycle */

/* Call the excepthook for (t, code, msg) in the calling context. A hook
 * that fails itself (conc_fail) is reported on stderr, as Python prints
 * "Exception in threading.excepthook:"; the caller's own failure state is
 * left as it was. */
static void call_excepthook(conc_thread_t *t, int code, const char *msg)
{
    conc__lock_hold(&hook_lock);
    conc_excepthook_fn fn = hook_fn;
    void *arg = hook_arg;
    conc_lock_release(&hook_lock);
    conc__ctx_t *c = conc__ctx();
    char copy[sizeof c->fail_msg];
    snprintf(copy, sizeof copy, "%s", msg ? msg : "");
    int saved = c->fail_code;
    char saved_msg[sizeof c->fail_msg];
    memcpy(saved_msg, c->fail_msg, sizeof saved_msg);
    c->fail_code = 0;
    c->fail_msg[0] = 0;
    fn(t, code, copy, arg);
    if (c->fail_code)
        fprintf(stderr, "Exception in threading.excepthook: %s%s%s\n", conc_errname(c->fail_code),
                c->fail_msg[0] ? ": " : "", c->fail_msg);
    c->fail_code = saved;
    memcpy(c->fail_msg, saved_msg, sizeof saved_msg);
}

void conc__thread_report_failure(conc_thread_t *t)
{
    if (!t)
        return;
    conc__ctx_t *c = t->ctx;
    if (!c || c->fail_code == 0)
        return;
    call_excepthook(t, c->fail_code, c->fail_msg);
}

/* The end of a thread's life, in that thread: hook, locals, registry, done. */
static void thread_finish(conc_thread_t *t)
{
    conc__thread_report_failure(t);
    conc__locals_thread_exit(t);
    reg_lock_acquire();
    reg_remove_locked(t);
    reg_lock_release();
    conc__store(&t->status, CONC__T_DONE, REL);
    conc_event_set(&t->done);
}

/* The thread is over, however it ended: its function returned, or it
 * called pthread_exit() (C's SystemExit) or was cancelled — a cleanup
 * handler, so every way out marks it finished (join, enumerate, exit). */
static void thread_over(void *p)
{
    conc_thread_t *t = p;
    if (conc__obs_on(CONC__OBS_TRACE))
        conc__trace_thread_end();
    thread_finish(t);
    conc__reg_os_remove(t->ctx);
    if (t->ctx->lockdep)
        conc__lockdep_ctx_exit(t->ctx);
    self_record = NULL;
    conc__ctx_bind(NULL);
    conc__wakers_add(-1);
    thread_unref(t); /* the running thread's own reference */
}

static void *trampoline(void *p)
{
    conc_thread_t *t = p;
    /* Ident and native id first: valid from the thread's first instruction
     * of user code (the creator also stores the ident once pthread_create
     * returned: the same value). */
    conc__store(&t->ident, (unsigned long)pthread_self(), RLX);
    t->pt = pthread_self();
    self_record = t;
    conc__ctx_bind(t->ctx);
    conc__reg_os_add(t->ctx);
    conc__store(&t->native_id, (long)syscall(SYS_gettid), RLX);
    conc_event_set(&t->started);
    if (strncmp(t->name, "Thread-", 7) != 0)
        os_name(t->name);
    if (conc__obs_on(CONC__OBS_TRACE))
        conc__trace_thread_start(t->name);
    pthread_cleanup_push(thread_over, t);
    t->result = t->fn(t->arg);
    pthread_cleanup_pop(1);
    return NULL;
}

static conc_thread_t *record_new(void)
{
    conc_thread_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->refs = 1;
    conc__ctx_init(&t->own_ctx);
    t->own_ctx.thread = t;
    t->ctx = &t->own_ctx;
    return t;
}

int conc_thread_new(conc_thread_t **out, void *(*fn)(void *), void *arg, const conc_thread_opts_t *opts)
{
    if (!out || !fn)
        return CONC_EINVAL;
    conc_thread_opts_t o = {0};
    if (opts)
        o = *opts;
    if (o.stack_size != 0 && o.stack_size < CONC__MIN_STACK)
        return CONC_EINVAL;
    if (o.stack_size == 0)
        o.stack_size = conc__thread_default_stack(); /* threading.stack_size() */
    conc_thread_t *t = record_new();
    if (!t)
        return CONC_ENOMEM;
    t->fn = fn;
    t->arg = arg;
    t->stack_size = o.stack_size;
    if (o.inherit_daemon) {
        conc_thread_t *me = conc__thread_self();
        t->daemon = me ? me->daemon : false;
    } else {
        t->daemon = o.daemon;
    }
    if (o.name && !*o.name)
        o.name = NULL; /* Python: Thread(name="") gets the default name */
    if (name_set_initial(t, o.name, "Thread-",
                         o.name ? 0 : atomic_fetch_add_explicit(CONC__A(&name_counter), 1, RLX) + 1)) {
        free(t);
        return CONC_ENOMEM;
    }
    *out = t;
    return 0;
}

int conc_thread_start(conc_thread_t *t)
{
    if (!t)
        return CONC_EINVAL;
    int exp = CONC__T_NEW;
    if (t->dummy || t->is_main ||
        !atomic_compare_exchange_strong_explicit(CONC__A(&t->status), &exp, CONC__T_RUNNING,
                                                 memory_order_acq_rel, RLX))
        return CONC_EPERM;
    thread_ref(t); /* the running thread's */
    conc__wakers_add(1); /* from now on it could wake someone (LoopExit) */
    reg_lock_acquire();
    reg_add_locked(t);
    reg_lock_release();

    pthread_t pt;
    int err;
    if (t->stack_size) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, t->stack_size);
        err = pthread_create(&pt, &attr, trampoline, t);
        pthread_attr_destroy(&attr);
    } else {
        err = pthread_create(&pt, NULL, trampoline, t);
    }
    if (err) {
        reg_lock_acquire();
        reg_remove_locked(t);
        reg_lock_release();
        conc__store(&t->status, CONC__T_NEW, REL);
        conc__wakers_add(-1);
        thread_unref(t);
        return err == EINVAL ? CONC_EINVAL : CONC_EAGAIN;
    }
    conc__store(&t->ident, (unsigned long)pt, RLX);
    t->pt_start = pt;
    conc__store(&t->pt_known, 1, REL);
    exit_arm();
    return 0;
}

int conc_thread_spawn(conc_thread_t **out, void *(*fn)(void *), void *arg, const conc_thread_opts_t *opts)
{
    if (!out)
        return CONC_EINVAL;
    conc_thread_t *t;
    int rc = conc_thread_new(&t, fn, arg, opts);
    if (rc)
        return rc;
    rc = conc_thread_start(t);
    if (rc) {
        thread_unref(t);
        return rc;
    }
    *out = t;
    return 0;
}

int conc_thread_join(conc_thread_t *t, double timeout, void **result)
{
    if (!t)
        return CONC_EINVAL;
    int64_t deadline;
    int rc = conc__deadline(timeout, &deadline);
    if (rc)
        return rc;
    if (conc__load(&t->status, ACQ) == CONC__T_NEW)
        return CONC_EPERM;
    if (t == self_record || t->dummy)
        return CONC_EPERM; /* yourself; a foreign thread (Python: cannot join a dummy thread) */
    int exp = 0;
    if (deadline == CONC__NO_DEADLINE && !t->dummy && !t->is_main && conc__ctx()->ops == NULL &&
        conc__load(&t->pt_known, ACQ) && conc__load(&t->reaped, RLX) == 0 &&
        !conc__obs_on(CONC__OBS_DEADLOCK)) {
        /* An OS thread joining for as long as it takes: wait for the
         * thread's full exit in one step with pthread_join (the kernel's
         * exit wakeup; no extra handshake). Only one caller may do that. */
        if (atomic_compare_exchange_strong_explicit(CONC__A(&t->reaped), &exp, 1, memory_order_acq_rel, RLX)) {
            conc__ctx_t *me = conc__ctx();
            conc__obs_block(me, t, CONC__WAIT_THREAD_JOIN, CONC__NO_DEADLINE);
            pthread_join(t->pt_start, NULL);
            conc__obs_unblock(me);
            if (result)
                *result = t->result;
            return 0;
        }
    }
    rc = conc__deadlock_event_wait(&t->done, deadline, t, CONC__WAIT_THREAD_JOIN);
    if (rc)
        return rc;
    /* The first joiner reaps the OS thread (it is on its way out), so its
     * stack goes back to the system's cache before the next start. */
    exp = 0;
    if (!t->dummy && !t->is_main &&
        atomic_compare_exchange_strong_explicit(CONC__A(&t->reaped), &exp, 1, memory_order_acq_rel, RLX))
        pthread_join(t->pt, NULL);
    if (result)
        *result = t->result;
    return 0;
}

int conc_thread_free(conc_thread_t *t)
{
    if (!t)
        return CONC_EINVAL;
    thread_unref(t);
    return 0;
}

bool conc_thread_is_alive(const conc_thread_t *t)
{
    return t && conc__load(&t->status, ACQ) == CONC__T_RUNNING;
}

const char *conc_thread_name(const conc_thread_t *t)
{
    return t ? t->name : NULL;
}

int conc_thread_set_name(conc_thread_t *t, const char *name)
{
    if (!t || !name)
        return CONC_EINVAL;
    char *n = name_dup(name);
    if (!n)
        return CONC_ENOMEM;
    char *old = t->name;
    t->name = n;
    if (old != t->name_buf)
        free(old);
    if (t == self_record) {
        os_name(n);
    } else if (!t->dummy && !t->is_main && conc__load(&t->status, ACQ) == CONC__T_RUNNING &&
               conc__load(&t->pt_known, ACQ) && conc__load(&t->reaped, ACQ) == 0) {
        char buf[16];
        strncpy(buf, n, sizeof buf - 1);
        buf[sizeof buf - 1] = 0;
        pthread_setname_np(t->pt_start, buf); /* joinable and unreaped: pt is valid */
    }
    return 0;
}

bool conc_thread_daemon(const conc_thread_t *t)
{
    return t && t->daemon;
}

int conc_thread_set_daemon(conc_thread_t *t, bool daemon)
{
    if (!t)
        return CONC_EINVAL;
    if (conc__load(&t->status, ACQ) != CONC__T_NEW || t->dummy || t->is_main)
        return CONC_EPERM;
    t->daemon = daemon;
    return 0;
}

unsigned long conc_thread_ident(const conc_thread_t *t)
{
    return t ? conc__load(&t->ident, RLX) : 0;
}

long conc_thread_native_id(const conc_thread_t *t)
{
    if (!t || conc__load(&t->status, ACQ) == CONC__T_NEW)
        return 0;
    conc_event_wait((conc_event_t *)&t->started, CONC_FOREVER);
    return conc__load(&t->native_id, RLX);
}

/* ------------------------------------------------ current / dummy / main */

static void foreign_exit(conc__ctx_t *ctx)
{
    conc_thread_t *t = ctx->thread;
    if (t && t->is_main && t == main_thread) {
        /* The main thread left through pthread_exit() (the process lives
         * on until its last thread ends): it is over, as Python's main
         * thread is once _shutdown marked it; threads joining it return. */
        main_finish(t);
        return;
    }
    if (!t || t->is_main)
        return;
    thread_finish(t);
    self_record = NULL;
    ctx->thread = NULL;
    t->ctx = NULL;
    thread_unref(t);
}

conc_thread_t *conc__thread_self(void)
{
    conc_thread_t *t = self_record;
    if (t)
        return t;
    conc__ctx_t *ctx = conc__ctx();
    /* Asked from a green thread or from the hub's loop (a signal handler
     * that lands while it polls): the record is the OS thread's, kept on
     * its own context, whose end frees it (foreign_exit). */
    conc__ctx_t *os = ctx->green && conc__reg_green_os ? conc__reg_green_os(ctx) : NULL;
    if (os)
        ctx = os;
    if (ctx->thread) {
        self_record = ctx->thread;
        return ctx->thread;
    }
    t = record_new();
    if (!t)
        return NULL;
    name_set_initial(t, NULL, "Dummy-", atomic_fetch_add_explicit(CONC__A(&dummy_counter), 1, RLX) + 1);
    t->dummy = true;
    t->daemon = true;
    t->status = CONC__T_RUNNING;
    t->ctx = ctx;
    ctx->thread = t;
    t->ident = (unsigned long)pthread_self();
    t->native_id = (long)syscall(SYS_gettid);
    conc_event_set(&t->started);
    reg_lock_acquire();
    reg_add_locked(t);
    reg_lock_release();
    self_record = t;
    return t;
}

conc_thread_t *conc_current_thread(void)
{
    return conc__thread_self();
}

conc_thread_t *conc_main_thread(void)
{
    return main_thread;
}

unsigned long conc_get_ident(void)
{
    return (unsigned long)pthread_self();
}

long conc_get_native_id(void)
{
    return (long)syscall(SYS_gettid);
}

size_t conc_active_count(void)
{
    reg_lock_acquire();
    size_t n = reg_count;
    reg_lock_release();
    return n;
}

size_t conc_thread_enumerate(conc_thread_t **out, size_t cap)
{
    if (!out)
        cap = 0;
    reg_lock_acquire();
    size_t i = 0;
    for (conc_thread_t *t = reg_head; t; t = t->next, i++) {
        if (i < cap) {
            thread_ref(t);
            out[i] = t;
        }
    }
    reg_lock_release();
    return i;
}

/* ----------------------------------------------------------- excepthook */

static void default_hook(conc_thread_t *t, int code, const char *msg, void *arg)
{
    (void)arg;
    char name[32];
    const char *n = t && t->name ? t->name : NULL;
    if (!n) {
        /* Called without a thread: name the calling one (its ident when
         * there is no record), as Python's excepthook does. */
        conc_thread_t *me = conc__thread_self();
        if (me && me->name) {
            n = me->name;
        } else {
            snprintf(name, sizeof name, "%lu", conc_get_ident());
            n = name;
        }
    }
    fprintf(stderr, "Exception in thread %s: %s%s%s\n", n, conc_errname(code), msg && *msg ? ": " : "",
            msg ? msg : "");
}

conc_excepthook_fn conc_set_excepthook(conc_excepthook_fn hook, void *arg)
{
    conc__lock_hold(&hook_lock);
    conc_excepthook_fn old = hook_fn;
    hook_fn = hook ? hook : default_hook;
    hook_arg = hook ? arg : NULL;
    conc_lock_release(&hook_lock);
    return old;
}

/* ------------------------------------------------------- exit and fork */

#define EXIT_HOOKS 8
static bool (*exit_hooks[EXIT_HOOKS])(void); /* under reg_lock */
static int n_exit_hooks;
static int exit_done;                        /* atomic: the exit step ran */

void conc__at_exit(bool (*hook)(void))
{
    reg_lock_acquire();
    if (n_exit_hooks < EXIT_HOOKS)
        exit_hooks[n_exit_hooks++] = hook;
    reg_lock_release();
    exit_arm();
}

bool conc__exit_done(void)
{
    return conc__load(&exit_done, ACQ) != 0;
}

/* Join every live non-daemon thread but the caller; true if it joined any. */
static bool join_round(void)
{
    bool joined = false;
    for (;;) {
        conc_thread_t *victim = NULL;
        reg_lock_acquire();
        for (conc_thread_t *t = reg_head; t; t = t->next) {
            if (!t->daemon && !t->dummy && !t->is_main && t != self_record &&
                conc__load(&t->status, ACQ) == CONC__T_RUNNING) {
                victim = t;
                thread_ref(t);
                break;
            }
        }
        reg_lock_release();
        if (!victim)
            return joined;
        conc_thread_join(victim, CONC_FOREVER, NULL); /* also reaps the OS thread */
        thread_unref(victim);
        joined = true;
    }
}

/* The main thread is over (Python's _shutdown marks it first): threads
 * joining it return, it leaves enumerate. Its record stays (static). */
static void main_finish(conc_thread_t *m)
{
    if (conc__load(&m->status, ACQ) != CONC__T_RUNNING)
        return;
    reg_lock_acquire();
    reg_remove_locked(m);
    reg_lock_release();
    conc__store(&m->status, CONC__T_DONE, REL);
    conc_event_set(&m->done);
}

static void main_over(void)
{
    conc_thread_t *m = main_thread;
    if (m && m == self_record)
        main_finish(m);
}

/* Python's threading._shutdown: the main thread is marked finished, then
 * the module hooks (pools shut down, timers drained) and the joins
 * alternate until nothing is left to wait for. */
static void exit_sequence(void)
{
    main_over();
    bool progress;
    do {
        progress = false;
        reg_lock_acquire();
        int n = n_exit_hooks;
        bool (*hooks[EXIT_HOOKS])(void);
        for (int i = 0; i < n; i++)
            hooks[i] = exit_hooks[i];
        reg_lock_release();
        for (int i = 0; i < n; i++)
            progress |= hooks[i]();
        progress |= join_round();
    } while (progress);
    conc__store(&exit_done, 1, REL);
}

/*
 * When the exit step runs. Python joins its threads before it runs any
 * atexit handler; C runs atexit handlers newest first, so conc's step must
 * be the newest registration when exit begins. It is registered lazily,
 * not from a constructor, and registered again each time a conc thread
 * starts (and when a module first needs an exit hook): a handler the
 * program registered before its threads started therefore runs after the
 * threads were joined, as in Python.
 *
 * Re-registering must not grow the handler list: with glibc, the old
 * registration is first taken back with __cxa_finalize on a handle of our
 * own (it calls our function once, which does nothing while
 * `tl_unregistering` is set, and frees the slot; a free slot at the top
 * of the list is reused by the next registration). So the list grows only
 * by the registrations the program made in between.
 */
extern int __cxa_atexit(void (*fn)(void *), void *arg, void *dso);
extern void __cxa_finalize(void *dso);
static char exit_handle; /* the "DSO handle" of conc's registrations */
static __thread bool tl_unregistering;
static conc_lock_t arm_lock = CONC_LOCK_INIT;
static bool armed; /* under arm_lock */

static void exit_step(void *arg)
{
    (void)arg;
    if (tl_unregistering)
        return;
    exit_sequence();
}

/* At dlclose of a shared conc, take the registration back: it would point
 * into unmapped code (at process exit this runs after the handlers, and
 * finds nothing left). */
__attribute__((destructor)) static void exit_disarm(void)
{
#ifdef __GLIBC__
    tl_unregistering = true;
    __cxa_finalize(&exit_handle);
    tl_unregistering = false;
#endif
}

static void exit_arm(void)
{
    conc__lock_hold(&arm_lock);
#ifdef __GLIBC__
    if (armed) {
        tl_unregistering = true;
        __cxa_finalize(&exit_handle);
        tl_unregistering = false;
    }
    armed = __cxa_atexit(exit_step, NULL, &exit_handle) == 0;
#else
    if (!armed)
        armed = __cxa_atexit(exit_step, NULL, &exit_handle) == 0;
#endif
    conc_lock_release(&arm_lock);
}

static void atfork_prepare(void)
{
    conc__locals_atfork_prepare();
    reg_lock_acquire();
}

static void atfork_parent(void)
{
    reg_lock_release();
    conc__locals_atfork_parent();
}

static void atfork_child(void)
{
    conc_thread_t *me = self_record;
    if (!me && conc__cur)
        me = conc__cur->thread; /* a record not cached in self_record yet */
    conc_lock_init(&reg_lock);
    conc_thread_t *t = reg_head;
    reg_head = NULL;
    reg_count = 0;
    while (t) {
        conc_thread_t *next = t->next;
        t->next = t->prev = NULL;
        if (t != me) {
            /* That thread does not exist here: it is over. */
            conc__store(&t->status, CONC__T_DONE, RLX);
            t->reaped = 1;
            conc_event_init(&t->done);
            conc_event_set(&t->done);
            conc_event_init(&t->started);
            conc_event_set(&t->started);
            conc_lock_init(&t->locals.lock);
        }
        t = next;
    }
    if (!me && (me = record_new())) {
        /* fork() from a thread conc never saw: it becomes the main thread
         * (Python's _after_fork makes a new _MainThread for it). */
        conc__ctx_t *ctx = conc__ctx();
        me->status = CONC__T_RUNNING;
        me->is_main = true;
        me->ctx = ctx;
        ctx->thread = me;
        name_set_initial(me, "MainThread", NULL, 0);
        conc_event_set(&me->started);
        self_record = me;
    } else if (me && me->dummy) {
        /* A foreign thread known through its dummy record: the record
         * turns into the main thread's, as in Python. */
        me->is_main = true;
        me->dummy = false;
        me->daemon = false;
        if (me->name != me->name_buf)
            free(me->name);
        name_set_initial(me, "MainThread", NULL, 0);
        self_record = me;
    }
    if (me) {
        reg_add_locked(me);
        me->native_id = (long)syscall(SYS_gettid);
        me->ident = (unsigned long)pthread_self();
        conc_lock_init(&me->locals.lock);
        main_thread = me;
    } else if (main_thread) {
        main_thread = NULL;
    }
    conc_lock_init(&hook_lock);
    conc_lock_init(&arm_lock);
    conc__wakers_reset(1); /* the forking thread is the only one left */
    conc__locals_atfork_child();
}

__attribute__((constructor)) static void conc__thread_init(void)
{
    conc_thread_t *t = &main_record;
    t->refs = 1;
    t->is_main = true;
    t->status = CONC__T_RUNNING;
    name_set_initial(t, "MainThread", NULL, 0);
    t->ctx = conc__ctx();
    t->ctx->thread = t;
    t->ident = (unsigned long)pthread_self();
    t->native_id = (long)syscall(SYS_gettid);
    conc_event_set(&t->started);
    self_record = t;
    main_thread = t;
    reg_add_locked(t);
    conc__foreign_exit_hook = foreign_exit;
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    /* The exit step is registered lazily (exit_arm), not here. */
}
