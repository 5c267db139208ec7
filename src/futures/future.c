/*
 * future.c — concurrent.futures.Future.
 *
 * The state word holds PENDING, RUNNING, CANCELLED or FINISHED plus a
 * HASW bit meaning "someone registered a waiter or a callback". Moves
 * between states are CASes on that word; the outcome fields are written
 * before the final CAS (release) and read after an acquire load, so a
 * future nobody waits on completes with one CAS and no lock. Waiters and
 * callbacks are registered under the wait list's guard with a CAS that
 * sets HASW while the state is still not final; a completer that sees
 * HASW takes the guard, detaches waiters and callbacks, wakes the waiters,
 * then runs the callbacks (in order, in its own context). Since the final
 * CAS happens before the completer takes the guard, a registrant that
 * takes the guard later sees the final state and does not register.
 *
 * CANCELLED_AND_NOTIFIED (CPython): cancel() wakes every waiter and runs
 * the done callbacks, but wait() and as_completed count a cancelled
 * future as done only once its executor notified it (NOTIFIED bit, set by
 * set_running_or_notify_cancel with a CAS like any other move). Their
 * waiters re-register after the cancel's wakeup, and their callbacks
 * ("waiter" callbacks) stay on the list until the notify runs them; the
 * same HASW-then-guard protocol keeps the notify from missing either.
 * Callbacks that have not run can be removed (remove_done_callback; an
 * as_completed iterator removes its own when freed).
 *
 * Futures come from a per-thread free list; they are reference counted
 * and go back to the list of whichever thread drops the last reference.
 * The count shares the state word (its upper half), so an executor that
 * runs a task can drop its own reference in the very CAS that publishes
 * the outcome (conc__future_run_owned; when nobody waits, else after the
 * wake-ups), and a holder whose reference is the last one (count 1: no
 * one else can change it) frees without an atomic RMW.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trace/obs.h"
#include "conc/thread.h"
#include "futures/internal.h"
#include "sync/internal.h"

/* -------------------------------------------------------------- memory */

/* Futures are recycled: each thread keeps a small cache, and caches trade
 * batches of BATCH futures with a global depot under one lock (so a burst
 * of a million futures is allocated once, not page-faulted in again for
 * every burst). A batch is an array of pointers (a batch_t), so moving
 * one touches none of its futures: a cache refilled from the depot does
 * not walk a chain of futures long out of the cache, one dependent miss
 * after another (a million futures alive at once is the usual burst). The
 * depot keeps at most DEPOT_MAX batches; past that, or when a batch_t
 * cannot be allocated, memory goes back to malloc. */

#define CACHE_MAX 256
#define BATCH 128
#define DEPOT_MAX 4096

typedef struct {
    conc_future_t *items[CACHE_MAX];
    unsigned n;
} fcache_t;

typedef struct batch {
    struct batch *next;
    conc_future_t *items[BATCH];
} batch_t;

static __thread fcache_t *tl_cache;
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static conc_lock_t depot_lock = CONC_LOCK_INIT;
static batch_t *depot;           /* full batches */
static size_t depot_chains;

/* items[0..BATCH) go to the depot (or back to malloc). */
static void depot_put(conc_future_t **items)
{
    batch_t *b = malloc(sizeof *b);
    if (b) {
        memcpy(b->items, items, sizeof b->items);
        conc__lock_hold(&depot_lock);
        if (depot_chains < DEPOT_MAX) {
            b->next = depot;
            depot = b;
            depot_chains++;
            b = NULL;
            items = NULL;
        }
        conc_lock_release(&depot_lock);
        free(b);
    }
    if (items)
        for (unsigned i = 0; i < BATCH; i++)
            free(items[i]);
}

/* Give the depot's memory back to malloc (the last pool went away). The
 * calling thread's cache is emptied too; other threads keep theirs (at
 * most CACHE_MAX futures each). */
void conc__futures_trim(void)
{
    fcache_t *c = tl_cache;
    if (c) {
        for (unsigned i = 0; i < c->n; i++)
            free(c->items[i]);
        c->n = 0;
    }
    conc__lock_hold(&depot_lock);
    batch_t *b = depot;
    depot = NULL;
    depot_chains = 0;
    conc_lock_release(&depot_lock);
    while (b) {
        batch_t *next = b->next;
        for (unsigned i = 0; i < BATCH; i++)
            free(b->items[i]);
        free(b);
        b = next;
    }
}

/* Refill c from the depot; false if it is empty. */
static bool depot_take(fcache_t *c)
{
    conc__lock_hold(&depot_lock);
    batch_t *b = depot;
    if (b) {
        depot = b->next;
        depot_chains--;
    }
    conc_lock_release(&depot_lock);
    if (!b)
        return false;
    memcpy(&c->items[c->n], b->items, sizeof b->items); /* only called with c->n == 0 */
    c->n += BATCH;
    free(b);
    return true;
}

static void cache_destroy(void *p)
{
    fcache_t *c = p;
    while (c->n >= BATCH) {
        depot_put(&c->items[c->n - BATCH]);
        c->n -= BATCH;
    }
    while (c->n) /* a partial batch */
        free(c->items[--c->n]);
    free(c);
    tl_cache = NULL;
}

static void depot_atfork_child(void)
{
    conc_lock_init(&depot_lock);
}

static void cache_key_init(void)
{
    pthread_key_create(&cache_key, cache_destroy);
    pthread_atfork(NULL, NULL, depot_atfork_child);
}

static fcache_t *cache_get(void)
{
    fcache_t *c = tl_cache;
    if (c)
        return c;
    pthread_once(&cache_once, cache_key_init);
    c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    tl_cache = c;
    pthread_setspecific(cache_key, c);
    return c;
}

conc_future_t *conc__future_alloc(void)
{
    fcache_t *c = cache_get();
    conc_future_t *f;
    if (c && (c->n || depot_take(c))) {
        f = c->items[--c->n];
        /* The next one is handed out soon: start fetching it (a recycled
         * future is usually out of the cache by now). */
        if (c->n)
            __builtin_prefetch(c->items[c->n - 1], 1);
    } else if (!(f = malloc(sizeof *f))) {
        return NULL;
    }
    f->sw = FS_REF | CONC_FUTURE_PENDING;
    f->q = (conc__waitq_t){0};
    f->cbs = NULL;
    f->cbs_tail = &f->cbs;
    f->result = NULL;
    f->code = 0;
    f->msg = NULL;
    f->owned = NULL;
    f->owned_free = NULL;
    f->fn = NULL;
    f->arg = NULL;
    f->owner = NULL;
    return f;
}

static void future_release(conc_future_t *f)
{
    /* A future dropped before it completed still has its callbacks: they
     * will never run; free them (and a then() step's state and future). */
    for (conc__cb_t *cb = f->cbs, *next; cb; cb = next) {
        next = cb->next;
        if (cb->discard)
            cb->discard(cb->arg);
        free(cb);
    }
    if (f->msg) /* (tested here: most futures have neither) */
        free(f->msg);
    if (f->owned_free)
        f->owned_free(f->owned);
    else if (f->owned)
        free(f->owned);
    fcache_t *c = cache_get();
    if (!c) {
        free(f);
        return;
    }
    if (c->n == CACHE_MAX) { /* full: hand the older half to the depot */
        depot_put(&c->items[0]);
        memmove(&c->items[0], &c->items[BATCH], (CACHE_MAX - BATCH) * sizeof c->items[0]);
        c->n -= BATCH;
    }
    c->items[c->n++] = f;
}

int conc_future_new(conc_future_t **out)
{
    if (!out)
        return CONC_EINVAL;
    conc_future_t *f = conc__future_alloc();
    if (!f)
        return CONC_ENOMEM;
    *out = f;
    return 0;
}

conc_future_t *conc_future_ref(conc_future_t *f)
{
    if (f)
        atomic_fetch_add_explicit(CONC__A(&f->sw), FS_REF, RLX);
    return f;
}

int conc_future_free(conc_future_t *f)
{
    if (!f)
        return CONC_EINVAL;
    /* The only reference left is ours: nobody else can take or drop one
     * now, so no atomic RMW is needed (the usual end of a pool task's
     * future: the pool dropped its reference when the task finished). The
     * acquire pairs with the release of the decrement that left one. */
    if (FS_REFS(conc__load(&f->sw, ACQ)) == 1 ||
        FS_REFS(atomic_fetch_sub_explicit(CONC__A(&f->sw), FS_REF, memory_order_acq_rel)) == 1)
        future_release(f);
    return 0;
}

/* -------------------------------------------------------------- states */

static inline unsigned fstate(const conc_future_t *f)
{
    return (unsigned)(conc__load(&f->sw, ACQ) & FS_MASK);
}

static inline bool final_state(uint64_t s)
{
    s &= FS_MASK;
    return s == CONC_FUTURE_CANCELLED || s == CONC_FUTURE_FINISHED;
}

conc_future_state_t conc_future_state(const conc_future_t *f)
{
    return f ? (conc_future_state_t)fstate(f) : CONC_FUTURE_PENDING;
}

bool conc_future_cancelled(const conc_future_t *f)
{
    return f && fstate(f) == CONC_FUTURE_CANCELLED;
}

bool conc_future_running(const conc_future_t *f)
{
    return f && fstate(f) == CONC_FUTURE_RUNNING;
}

bool conc_future_done(const conc_future_t *f)
{
    return f && final_state(fstate(f));
}

/* Done as wait() and as_completed see it (CPython's FINISHED or
 * CANCELLED_AND_NOTIFIED); notified=false: done as result() sees it. */
static inline bool done_as(uint64_t s, bool notified)
{
    switch (s & FS_MASK) {
    case CONC_FUTURE_FINISHED: return true;
    case CONC_FUTURE_CANCELLED: return !notified || (s & FS_NOTIFIED);
    default: return false;
    }
}

bool conc__future_done_notified(const conc_future_t *f)
{
    return done_as(conc__load(&f->sw, ACQ), true);
}

static void run_callbacks(conc_future_t *f, conc__cb_t *cb);

__thread bool conc__future_woke_sleeper;
atomic_ulong conc__queued_cancels;

/* After the CAS that made f final (or notified it): wake every waiter,
 * run the callbacks. A cancel (keep_waiters) runs only the done
 * callbacks: wait()/as_completed ones stay until the executor notifies.
 * The waiters woken by a cancel include wait()'s, which re-check and
 * register again. */
static void complete_slow(conc_future_t *f, bool keep_waiters)
{
    conc__waitq_lock(&f->q);
    conc__waiter_t *list = conc__waitq_take_all(&f->q);
    conc__cb_t *cbs = f->cbs, *run = NULL, **run_tail = &run;
    f->cbs = NULL;
    f->cbs_tail = &f->cbs;
    if (keep_waiters) {
        for (conc__cb_t *cb = cbs, *next; cb; cb = next) {
            next = cb->next;
            cb->next = NULL;
            if (cb->waiter) {
                *f->cbs_tail = cb;
                f->cbs_tail = &cb->next;
            } else {
                *run_tail = cb;
                run_tail = &cb->next;
            }
        }
        cbs = run;
    }
    conc__waitq_unlock(&f->q);
    /* Note whether this wakes a thread asleep in the kernel (a pool worker
     * then lets it have its CPU: conc__future_woke_sleeper). The waiters
     * stay valid until unparked. */
    for (conc__waiter_t *w = list; w; w = w->next) {
        conc__waiter_t *t = w->group ? w->group : w;
        if (conc__load(&t->state, RLX) == CONC__W_SLEEPING) {
            conc__future_woke_sleeper = true;
            break;
        }
    }
    conc__unpark_list(list);
    run_callbacks(f, cbs);
}

/* Move f from one of `from` (a bit set of states) to `to`. Returns the
 * previous state word, or NOT_MOVED if f was not in `from`. */
#define NOT_MOVED UINT64_MAX
static uint64_t transition(conc_future_t *f, unsigned from_mask, unsigned to)
{
    uint64_t s = conc__load(&f->sw, RLX);
    for (;;) {
        if ((s & FS_COMPLETING) || !((1u << (s & FS_MASK)) & from_mask))
            return NOT_MOVED;
        if (atomic_compare_exchange_weak_explicit(CONC__A(&f->sw), &s, (s & FS_KEEP) | to,
                                                  memory_order_acq_rel, RLX))
            return s;
    }
}

#define FROM(st) (1u << (st))

/* Write the outcome of a future we hold COMPLETING on, then publish it.
 * With drop, the caller's reference goes too: in the publishing CAS when
 * nobody waits (then f may be gone on return), after waking the waiters
 * and running the callbacks otherwise. */
static inline void publish(conc_future_t *f, void *result, int code, const char *msg, bool drop)
{
    f->result = result;
    f->code = code;
    if (code && msg && *msg) {
        size_t n = strlen(msg) + 1;
        f->msg = malloc(n);
        if (f->msg)
            memcpy(f->msg, msg, n);
    }
    uint64_t s = conc__load(&f->sw, RLX), n;
    do {
        n = (s & FS_KEEP) | CONC_FUTURE_FINISHED;
        if (drop && !(s & FS_HASW))
            n -= FS_REF;
    } while (!atomic_compare_exchange_weak_explicit(CONC__A(&f->sw), &s, n, memory_order_acq_rel, RLX));
    if (s & FS_HASW) {
        complete_slow(f, false);
        if (drop)
            conc_future_free(f);
    } else if (drop && FS_REFS(n) == 0) {
        future_release(f); /* the other holders let go meanwhile */
    }
}

static void finish_claimed(conc_future_t *f, void *result, int code, const char *msg)
{
    publish(f, result, code, msg, false);
}

static int finish(conc_future_t *f, void *result, int code, const char *msg)
{
    /* Claim the outcome (COMPLETING) so only one completer writes it, and
     * cancel/set_running cannot slip in meanwhile. */
    uint64_t s = conc__load(&f->sw, RLX);
    for (;;) {
        if ((s & FS_COMPLETING) || final_state(s))
            return CONC_EPERM;
        if (atomic_compare_exchange_weak_explicit(CONC__A(&f->sw), &s, s | FS_COMPLETING,
                                                  memory_order_acq_rel, RLX))
            break;
    }
    finish_claimed(f, result, code, msg);
    return 0;
}

int conc_future_set_result(conc_future_t *f, void *result)
{
    if (!f)
        return CONC_EINVAL;
    if (final_state(conc__load(&f->sw, ACQ)))
        return CONC_EPERM;
    return finish(f, result, 0, NULL);
}

int conc_future_set_exception(conc_future_t *f, int code, const char *msg)
{
    if (!f)
        return CONC_EINVAL;
    if (final_state(conc__load(&f->sw, ACQ)))
        return CONC_EPERM;
    return finish(f, NULL, code < 0 ? code : CONC_EFAILED, msg);
}

/* CANCELLED -> CANCELLED_AND_NOTIFIED: true if this call did it. */
static bool notify_cancel(conc_future_t *f)
{
    uint64_t s = conc__load(&f->sw, RLX);
    for (;;) {
        if ((s & FS_MASK) != CONC_FUTURE_CANCELLED || (s & FS_NOTIFIED))
            return false;
        if (atomic_compare_exchange_weak_explicit(CONC__A(&f->sw), &s, s | FS_NOTIFIED, memory_order_acq_rel,
                                                  RLX))
            break;
    }
    if (s & FS_HASW)
        complete_slow(f, false); /* wait()'s waiters and callbacks */
    return true;
}

void conc__future_notify_cancel(conc_future_t *f)
{
    notify_cancel(f);
}

int conc_future_set_running_or_notify_cancel(conc_future_t *f)
{
    if (!f)
        return CONC_EINVAL;
    uint64_t s = transition(f, FROM(CONC_FUTURE_PENDING), CONC_FUTURE_RUNNING);
    if (s != NOT_MOVED)
        return 1;
    if (notify_cancel(f))
        return 0; /* result() waiters were woken by cancel() already */
    return CONC_EPERM; /* running, finished, or notified once already */
}

bool conc_future_cancel(conc_future_t *f)
{
    if (!f)
        return false;
    uint64_t s = transition(f, FROM(CONC_FUTURE_PENDING), CONC_FUTURE_CANCELLED);
    if (s == NOT_MOVED)
        return fstate(f) == CONC_FUTURE_CANCELLED;
    if (f->owner)
        atomic_fetch_add_explicit(&conc__queued_cancels, 1, RLX);
    if (s & FS_HASW)
        complete_slow(f, true);
    return true;
}

void conc__future_fail_now(conc_future_t *f, int code, const char *msg)
{
    finish(f, NULL, code, msg);
}

/* Run f's task; drop: the caller's reference goes too (see publish). */
static inline bool run_task(conc_future_t *f, void (*before_publish)(void *), void *hook_arg, bool drop)
{
    /* RUNNING and COMPLETING at once: the runner owns the outcome (so it
     * saves a CAS at the end); set_result by anyone else meanwhile is
     * refused with CONC_EPERM, as for a finished future. */
    if (transition(f, FROM(CONC_FUTURE_PENDING), CONC_FUTURE_RUNNING | FS_COMPLETING) == NOT_MOVED) {
        notify_cancel(f); /* cancelled: the executor drops it (CPython's notify) */
        if (drop)
            conc_future_free(f);
        return false;
    }
    conc__ctx_t *c = conc__ctx();
    c->fail_code = 0;
    bool traced = conc__obs_on(CONC__OBS_TRACE);
    if (traced)
        conc__trace_task(CONC__TASK_START, f->fn, f->arg);
    void *r = f->fn(f->arg);
    if (traced)
        conc__trace_task(CONC__TASK_FINISH, f->fn, f->arg);
    if (before_publish)
        before_publish(hook_arg);
    if (c->fail_code) {
        publish(f, NULL, c->fail_code, c->fail_msg, drop);
        c->fail_code = 0;
        c->fail_msg[0] = 0;
    } else {
        publish(f, r, 0, NULL, drop);
    }
    return true;
}

bool conc__future_run(conc_future_t *f)
{
    return run_task(f, NULL, NULL, false);
}

bool conc__future_run_hook(conc_future_t *f, void (*before_publish)(void *), void *hook_arg)
{
    return run_task(f, before_publish, hook_arg, false);
}

bool conc__future_run_owned(conc_future_t *f, void (*before_publish)(void *), void *hook_arg)
{
    return run_task(f, before_publish, hook_arg, true);
}

/* ----------------------------------------------------------- callbacks */

static void run_callbacks(conc_future_t *f, conc__cb_t *cb)
{
    if (!cb)
        return;
    conc__ctx_t *c = conc__ctx();
    int saved = c->fail_code;
    char saved_msg[sizeof c->fail_msg];
    if (saved)
        memcpy(saved_msg, c->fail_msg, sizeof saved_msg);
    while (cb) {
        conc__cb_t *next = cb->next;
        c->fail_code = 0;
        cb->fn(f, cb->arg);
        if (c->fail_code) {
            /* "exception calling callback": report, never break f */
            conc_thread_t *t = conc_current_thread();
            extern void conc__thread_report_failure(conc_thread_t * t);
            conc__thread_report_failure(t);
            c->fail_code = 0;
        }
        free(cb);
        cb = next;
    }
    c->fail_code = saved;
    if (saved)
        memcpy(c->fail_msg, saved_msg, sizeof saved_msg);
}

/* Take f's guard and set HASW, unless f is done (as result() sees it, or
 * with notified as wait() sees it): then return false with the guard
 * released and the outcome visible. Completers (and the notifier) that
 * see HASW take the guard, so what we add under it is never missed. */
static bool lock_unless_done(conc_future_t *f, bool notified)
{
    conc__waitq_lock(&f->q);
    uint64_t s = conc__load(&f->sw, ACQ);
    while (!done_as(s, notified) &&
           !atomic_compare_exchange_weak_explicit(CONC__A(&f->sw), &s, s | FS_HASW, memory_order_acq_rel,
                                                  ACQ)) {
    }
    if (done_as(s, notified)) {
        conc__waitq_unlock(&f->q);
        return false;
    }
    return true;
}

int conc_future_add_done_callback(conc_future_t *f, conc_future_cb fn, void *arg)
{
    return conc__future_add_callback(f, fn, arg, NULL);
}

static int add_callback(conc_future_t *f, conc_future_cb fn, void *arg, void (*discard)(void *), bool waiter)
{
    if (!f || !fn)
        return CONC_EINVAL;
    conc__cb_t *cb = malloc(sizeof *cb);
    if (!cb)
        return CONC_ENOMEM;
    cb->fn = fn;
    cb->arg = arg;
    cb->discard = discard;
    cb->waiter = waiter;
    cb->next = NULL;
    if (!lock_unless_done(f, waiter)) {
        run_callbacks(f, cb); /* the outcome is visible: read with acquire */
        return 0;
    }
    *f->cbs_tail = cb;
    f->cbs_tail = &cb->next;
    conc__waitq_unlock(&f->q);
    return 0;
}

int conc__future_add_callback(conc_future_t *f, conc_future_cb fn, void *arg, void (*discard)(void *))
{
    return add_callback(f, fn, arg, discard, false);
}

int conc__future_add_waiter_callback(conc_future_t *f, conc_future_cb fn, void *arg, void (*discard)(void *))
{
    return add_callback(f, fn, arg, discard, true);
}

int conc__future_remove_callback(conc_future_t *f, conc_future_cb fn, void *arg)
{
    conc__cb_t *gone = NULL;
    int n = 0;
    conc__waitq_lock(&f->q);
    f->cbs_tail = &f->cbs;
    for (conc__cb_t **pp = &f->cbs; *pp;) {
        conc__cb_t *cb = *pp;
        if (cb->fn == fn && cb->arg == arg) {
            *pp = cb->next;
            cb->next = gone;
            gone = cb;
            n++;
        } else {
            pp = &cb->next;
            f->cbs_tail = pp;
        }
    }
    conc__waitq_unlock(&f->q);
    while (gone) {
        conc__cb_t *next = gone->next;
        free(gone);
        gone = next;
    }
    return n;
}

int conc_future_remove_done_callback(conc_future_t *f, conc_future_cb fn, void *arg)
{
    if (!f || !fn)
        return CONC_EINVAL;
    return conc__future_remove_callback(f, fn, arg);
}

/* ------------------------------------------------------------- waiting */

bool conc__future_register(conc_future_t *f, conc__waiter_t *w, bool notified)
{
    if (!lock_unless_done(f, notified))
        return false;
    conc__waitq_push(&f->q, w);
    conc__waitq_unlock(&f->q);
    return true;
}

static bool spin_done(void *p)
{
    return final_state(conc__load(&((conc_future_t *)p)->sw, ACQ));
}

static bool spin_notified(void *p)
{
    return done_as(conc__load(&((conc_future_t *)p)->sw, ACQ), true);
}

int conc__future_wait_notified(conc_future_t *f, int64_t deadline)
{
    if (done_as(conc__load(&f->sw, ACQ), true))
        return 0;
    if (deadline == CONC__NO_DEADLINE && f->owner && conc__pool_run_inline(f))
        return 0; /* ran it here (finished), or it was cancelled: notified */
    if (deadline == 0)
        return CONC_ETIMEDOUT;
    if (conc__spin_until(spin_notified, f, deadline))
        return 0;
    /* A cancel wakes this waiter before the notify: wait again. */
    for (;;) {
        conc__waiter_t w;
        conc__waiter_init(&w);
        w.spun = 1;
        w.obj = f;
        w.kind = CONC__WAIT_FUTURE;
        if (!conc__future_register(f, &w, true))
            return 0;
        int rc = conc__wait_queued(&f->q, &w, deadline, NULL, NULL);
        if (rc)
            return rc;
        if (done_as(conc__load(&f->sw, ACQ), true))
            return 0;
    }
}

int conc__future_wait_done(conc_future_t *f, int64_t deadline)
{
    if (final_state(conc__load(&f->sw, ACQ)))
        return 0;
    /* Waiting without a timeout, a worker of the pool that queued f runs f
     * itself if it has not started yet (its queue entry is skipped later),
     * so tasks waiting on their subtasks cannot deadlock the pool, even
     * with one worker; if another worker runs f, the waiter may run f's
     * own subtasks meanwhile (leapfrogging, pool.c). It does not run
     * unrelated tasks: one could need a lock the waiting task holds. Timed
     * waits keep Python's semantics and never run a task, which could
     * overrun the timeout. */
    if (deadline == CONC__NO_DEADLINE && f->owner && (conc__pool_run_inline(f) || conc__pool_wait_running(f)))
        return 0;
    if (deadline == 0)
        return CONC_ETIMEDOUT;
    if (conc__spin_until(spin_done, f, deadline))
        return 0;
    conc__waiter_t w;
    conc__waiter_init(&w);
    w.spun = 1;
    w.obj = f;
    w.kind = CONC__WAIT_FUTURE;
    if (!conc__future_register(f, &w, false))
        return 0;
    return conc__wait_queued(&f->q, &w, deadline, NULL, NULL);
}

/* Wait up to timeout for f to be done: 0 once it finished (the outcome is
 * visible), CONC_ECANCELLED, CONC_ETIMEDOUT, CONC_EINVAL. */
static int wait_finished(conc_future_t *f, double timeout)
{
    int64_t deadline = CONC__NO_DEADLINE; /* CONC_FOREVER, the usual wait: no clock read */
    if (!f || (timeout != CONC_FOREVER && conc__deadline(timeout, &deadline)))
        return CONC_EINVAL;
    int rc = conc__future_wait_done(f, deadline); /* ends with an acquire load */
    if (rc)
        return rc;
    return fstate(f) == CONC_FUTURE_CANCELLED ? CONC_ECANCELLED : 0;
}

int conc_future_result(conc_future_t *f, double timeout, void **result)
{
    int rc = wait_finished(f, timeout);
    if (rc)
        return rc;
    if (f->code)
        return CONC_EFAILED; /* the task failed: conc_future_exception says how */
    if (result)
        *result = f->result;
    return 0;
}

int conc_future_exception(conc_future_t *f, double timeout, int *code, const char **msg)
{
    int rc = wait_finished(f, timeout);
    if (rc)
        return rc;
    if (code)
        *code = f->code;
    if (msg)
        *msg = f->code ? (f->msg ? f->msg : "") : NULL;
    return 0;
}

/* ---------------------------------------------------------------- then */

typedef struct {
    conc_future_t *out;
    void *(*fn)(void *result, void *arg);
    void *arg;
} then_t;

static void then_cb(conc_future_t *f, void *p)
{
    then_t *t = p;
    conc_future_t *out = t->out;
    unsigned s = fstate(f);
    if (s == CONC_FUTURE_CANCELLED) {
        conc_future_cancel(out);
        notify_cancel(out); /* no executor will ever see it */
    } else if (f->code) {
        finish(out, NULL, f->code, f->msg);
    } else if (transition(out, FROM(CONC_FUTURE_PENDING), CONC_FUTURE_RUNNING) != NOT_MOVED) {
        conc__ctx_t *c = conc__ctx();
        int saved = c->fail_code;
        c->fail_code = 0;
        void *r = t->fn(f->result, t->arg);
        if (c->fail_code)
            finish(out, NULL, c->fail_code, c->fail_msg);
        else
            finish(out, r, 0, NULL);
        c->fail_code = saved;
    }
    conc_future_free(out);
    free(t);
}

static void then_discard(void *p)
{
    then_t *t = p;
    conc_future_free(t->out);
    free(t);
}

int conc_future_then(conc_future_t *f, conc_future_t **out, void *(*fn)(void *result, void *arg), void *arg)
{
    if (!f || !out || !fn)
        return CONC_EINVAL;
    then_t *t = malloc(sizeof *t);
    conc_future_t *o = conc__future_alloc();
    if (!t || !o) {
        free(t);
        if (o)
            conc_future_free(o);
        return CONC_ENOMEM;
    }
    t->out = conc_future_ref(o); /* the callback's reference */
    t->fn = fn;
    t->arg = arg;
    int rc = conc__future_add_callback(f, then_cb, t, then_discard);
    if (rc) {
        conc_future_free(o);
        conc_future_free(o);
        free(t);
        return rc;
    }
    *out = o;
    return 0;
}
