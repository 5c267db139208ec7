/*
 * pool.c — ThreadPoolExecutor with work stealing.
 *
 * Every worker owns a Chase-Lev deque; so does every outside thread that
 * submits (a deque per (pool, thread), registered on first submit and kept
 * until the pool is freed), so submitting is a store into the submitter's
 * own deque — no lock, no shared counter. Workers pop their own deque
 * (LIFO: a task submitted from inside a task runs next, on the same
 * thread, while it is hot) and otherwise steal (FIFO) from the other
 * deques, starting at a rotating victim. Outside deques beyond the fixed
 * table share one locked overflow deque.
 *
 * Sleeping: an idle worker spins briefly, yields a while, then bumps
 * `idle`, issues a heavy fence (membarrier: every thread of the process
 * runs a full barrier), re-checks every deque and parks; a submit is a
 * plain release store of the deque's bottom, a compiler-only fence and a
 * load of `idle` (core/fence.h) — so a worker is woken only when one
 * sleeps, never missed, and submitting costs no atomic RMW or fence. Workers start lazily: a submit that finds no
 * idle worker starts one while fewer than max_workers exist.
 *
 * Waiting helps: a worker that waits on a future (result, wait...) runs
 * queued tasks of its pool meanwhile (conc__pool_help_one), so tasks that
 * wait on subtasks cannot deadlock the pool.
 *
 * Shutdown: submits fail from then on; with cancel_futures every queued
 * future is cancelled; workers drain what is left and exit; wait joins
 * them. A failing initializer breaks the pool: queued futures fail with
 * CONC_EBROKEN and so do later submits. At process exit, live pools are
 * shut down and joined (an atexit handler), as Python does.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conc/sync.h"
#include "conc/thread.h"
#include "core/fence.h"
#include "futures/deque.h"
#include "futures/internal.h"
#include "sync/internal.h"

#define EXT_MAX 64
#define DEQUE_SIZE 256
#define BATCH 32
#define IDLE_YIELDS 16

typedef struct pool pool_t;

typedef struct worker {
    conc__deque_t dq;
    pool_t *pool;
    conc_thread_t *thread;
    unsigned id;
    unsigned victim;
} worker_t;

struct pool {
    conc_executor_t base;
    unsigned long gen;            /* tells pools at the same address apart */
    size_t max_workers;
    char prefix[64];
    void (*initializer)(void *);
    void *initarg;

    conc_lock_t lock;             /* workers[], ext registration, shutdown */
    worker_t **workers;           /* max_workers slots */
    atomic_size_t nworkers;
    conc__deque_t *ext[EXT_MAX];  /* outside submitters' deques */
    atomic_size_t next_;          /* how many ext slots are used */
    conc_lock_t overflow_lock;
    conc__deque_t overflow;       /* shared by outside threads past EXT_MAX */

    _Alignas(64) atomic_uint idle;
    conc__waitq_t idleq;
    atomic_int shutdown;
    atomic_int broken;
    bool freed;
    struct pool *all_next;        /* registry of live pools (atexit) */
};

static __thread worker_t *tl_worker;

/* Per-thread cache: which deque this thread uses for which pool. */
#define TL_SLOTS 4
static __thread struct {
    pool_t *pool;
    unsigned long gen;
    conc__deque_t *dq;
} tl_ext[TL_SLOTS];
static __thread unsigned tl_ext_next;

static atomic_ulong pool_gen;
static conc_lock_t registry_lock = CONC_LOCK_INIT;
static pool_t *registry;
static pthread_once_t atexit_once = PTHREAD_ONCE_INIT;

/* -------------------------------------------------------------- helpers */

static size_t cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        return (size_t)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (size_t)n : 1;
}

static bool any_work(pool_t *p)
{
    size_t n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        if (conc__deque_nonempty(&p->workers[i]->dq))
            return true;
    size_t e = atomic_load_explicit(&p->next_, memory_order_acquire);
    for (size_t i = 0; i < e; i++)
        if (conc__deque_nonempty(p->ext[i]))
            return true;
    return conc__deque_nonempty(&p->overflow);
}

static void run(pool_t *p, conc_future_t *f);

static conc_future_t *steal_any(pool_t *p, worker_t *self)
{
    size_t n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
    size_t e = atomic_load_explicit(&p->next_, memory_order_acquire);
    size_t total = n + e + 1;
    unsigned start = self ? self->victim++ : 0;
    for (size_t k = 0; k < total; k++) {
        size_t i = (start + k) % total;
        conc__deque_t *d;
        if (i < n) {
            if (self && p->workers[i] == self)
                continue;
            d = &p->workers[i]->dq;
        } else if (i < n + e) {
            d = p->ext[i - n];
            if (self) {
                /* Outside deques are never popped by their owner: take a
                 * batch, run one, keep the rest in our own deque. */
                conc_future_t *batch[BATCH];
                size_t k = 0;
                for (int tries = 0; tries < 4 && !k && conc__deque_nonempty(d); tries++)
                    k = conc__deque_steal_batch(d, batch, BATCH);
                if (k) {
                    /* Pushed newest first, so our LIFO pops take them in
                     * submission order (Python's pool starts work FIFO). */
                    for (size_t j = k; j-- > 1;)
                        if (!conc__deque_push(&self->dq, batch[j]))
                            run(p, batch[j]); /* no memory to queue it: run it now */
                    return batch[0];
                }
                continue;
            }
        } else {
            d = &p->overflow;
        }
        /* A steal can lose a race with a non-empty deque: retry a little. */
        for (int tries = 0; tries < 4 && conc__deque_nonempty(d); tries++) {
            conc_future_t *f = conc__deque_steal(d);
            if (f)
                return f;
        }
    }
    return NULL;
}

static void wake_one_worker(pool_t *p)
{
    conc__waitq_lock(&p->idleq);
    conc__waiter_t *w = conc__waitq_pop(&p->idleq);
    if (w)
        atomic_fetch_sub_explicit(&p->idle, 1, memory_order_seq_cst);
    conc__waitq_unlock(&p->idleq);
    if (w)
        conc__unpark(w);
}

static void wake_all_workers(pool_t *p)
{
    conc__waitq_lock(&p->idleq);
    conc__waiter_t *list = conc__waitq_take_all(&p->idleq);
    atomic_store_explicit(&p->idle, 0, memory_order_seq_cst);
    conc__waitq_unlock(&p->idleq);
    conc__unpark_list(list);
}

/* Run f's task and drop the pool's reference. */
static void run(pool_t *p, conc_future_t *f)
{
    if (atomic_load_explicit(&p->broken, memory_order_acquire))
        conc__future_fail_now(f, CONC_EBROKEN, "a thread initializer failed, the pool is not usable anymore");
    else
        conc__future_run(f);
    conc_future_free(f);
}

bool conc__pool_run_inline(conc_future_t *f)
{
    worker_t *w = tl_worker;
    if (!w || f->owner != (void *)w->pool)
        return false;
    if (atomic_load_explicit(&w->pool->broken, memory_order_acquire))
        return false;
    return conc__future_run(f); /* claims it; the queue entry is skipped later */
}

bool conc__pool_help_one(void)
{
    worker_t *w = tl_worker;
    if (!w)
        return false;
    conc_future_t *f = conc__deque_pop(&w->dq);
    if (!f)
        f = steal_any(w->pool, w);
    if (!f)
        return false;
    run(w->pool, f);
    return true;
}

/* ------------------------------------------------------------- workers */

static void break_pool(pool_t *p)
{
    atomic_store_explicit(&p->broken, 1, memory_order_release);
    /* Fail everything queued now; later arrivals fail in run(). */
    conc_future_t *f;
    while ((f = steal_any(p, NULL)) != NULL) {
        conc__future_fail_now(f, CONC_EBROKEN, "a thread initializer failed, the pool is not usable anymore");
        conc_future_free(f);
    }
    wake_all_workers(p);
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    pool_t *p = w->pool;
    tl_worker = w;
    if (p->initializer) {
        conc_fail_clear();
        p->initializer(p->initarg);
        if (conc_failure(NULL)) {
            conc_fail_clear();
            break_pool(p);
        }
    }
    for (;;) {
        conc_future_t *f = conc__deque_pop(&w->dq);
        if (!f)
            f = steal_any(p, w);
        if (f) {
            run(p, f);
            continue;
        }
        if (atomic_load_explicit(&p->broken, memory_order_acquire))
            break;
        /* Nothing to do: spin a little, then sleep. */
        conc__spinner_t sp;
        conc__spin_begin(&sp, CONC__NO_DEADLINE);
        bool found = false;
        while (conc__spin_more(&sp))
            if ((found = any_work(p)))
                break;
        conc__spin_end(&sp, found);
        if (found)
            continue;
        if (atomic_load_explicit(&p->shutdown, memory_order_acquire) && !any_work(p))
            break;
        /* Then yield for a while before sleeping: on a busy machine the
         * submitter may just need our CPU, and a sleeping worker costs it
         * a wake-up syscall per task burst. */
        for (int y = 0; y < IDLE_YIELDS && !found; y++) {
            sched_yield();
            found = any_work(p);
        }
        if (found)
            continue;
        conc__waiter_t wt;
        conc__waiter_init(&wt);
        wt.spun = 1;
        conc__waitq_lock(&p->idleq);
        atomic_fetch_add_explicit(&p->idle, 1, memory_order_seq_cst);
        /* Pairs with the submitters' light fence: after this, a push that
         * our check below misses is one whose submitter sees idle > 0. */
        conc__fence_heavy();
        if (any_work(p) || atomic_load_explicit(&p->shutdown, memory_order_seq_cst)) {
            atomic_fetch_sub_explicit(&p->idle, 1, memory_order_seq_cst);
            conc__waitq_unlock(&p->idleq);
            continue;
        }
        conc__waitq_push(&p->idleq, &wt);
        conc__waitq_unlock(&p->idleq);
        conc__wait_queued(&p->idleq, &wt, CONC__NO_DEADLINE, NULL, NULL);
    }
    tl_worker = NULL;
    return NULL;
}

/* Start one more worker if allowed; under p->lock. */
static int start_worker_locked(pool_t *p)
{
    size_t n = atomic_load_explicit(&p->nworkers, memory_order_relaxed);
    if (n >= p->max_workers)
        return 0;
    worker_t *w = calloc(1, sizeof *w);
    if (!w)
        return CONC_ENOMEM;
    if (conc__deque_init(&w->dq, DEQUE_SIZE)) {
        free(w);
        return CONC_ENOMEM;
    }
    w->pool = p;
    w->id = (unsigned)n;
    w->victim = (unsigned)n + 1;
    char name[96];
    snprintf(name, sizeof name, "%s_%zu", p->prefix, n);
    conc_thread_opts_t o = {.name = name};
    p->workers[n] = w;
    atomic_store_explicit(&p->nworkers, n + 1, memory_order_release);
    int rc = conc_thread_spawn(&w->thread, worker_main, w, &o);
    if (rc) {
        atomic_store_explicit(&p->nworkers, n, memory_order_release);
        p->workers[n] = NULL;
        conc__deque_destroy(&w->dq);
        free(w);
        return n == 0 ? rc : 0; /* with some workers, carry on */
    }
    return 0;
}

/* -------------------------------------------------------------- submit */

static conc__deque_t *outside_deque(pool_t *p)
{
    for (unsigned i = 0; i < TL_SLOTS; i++)
        if (tl_ext[i].pool == p && tl_ext[i].gen == p->gen)
            return tl_ext[i].dq;
    uintptr_t me = conc__ctx_id();
    conc__deque_t *d = NULL;
    conc__lock_acquire_dl(&p->lock, CONC__NO_DEADLINE);
    size_t e = atomic_load_explicit(&p->next_, memory_order_relaxed);
    for (size_t i = 0; i < e; i++)
        if (p->ext[i]->owner == me)
            d = p->ext[i];
    if (!d && e < EXT_MAX) {
        d = malloc(sizeof *d);
        if (d && conc__deque_init(d, DEQUE_SIZE) == 0) {
            d->owner = me;
            p->ext[e] = d;
            atomic_store_explicit(&p->next_, e + 1, memory_order_release);
        } else {
            free(d);
            d = NULL;
        }
    }
    conc_lock_release(&p->lock);
    if (d) {
        unsigned s = tl_ext_next++ % TL_SLOTS;
        tl_ext[s].pool = p;
        tl_ext[s].gen = p->gen;
        tl_ext[s].dq = d;
    }
    return d; /* NULL: use the overflow deque */
}

static int pool_submit(conc_executor_t *ex, conc_future_t **out, void *(*fn)(void *), void *arg)
{
    pool_t *p = (pool_t *)ex;
    if (atomic_load_explicit(&p->broken, memory_order_acquire))
        return CONC_EBROKEN;
    if (atomic_load_explicit(&p->shutdown, memory_order_acquire))
        return CONC_ESHUTDOWN;
    conc_future_t *f = conc__future_alloc();
    if (!f)
        return CONC_ENOMEM;
    f->fn = fn;
    f->arg = arg;
    f->owner = p;
    f->refs = 2; /* the caller's and the pool's */

    worker_t *w = tl_worker;
    bool ok;
    conc__deque_t *d;
    if (w && w->pool == p) {
        ok = conc__deque_push(&w->dq, f); /* we drain it ourselves, even at shutdown */
    } else {
        d = outside_deque(p);
        if (d) {
            ok = conc__deque_push(d, f);
        } else {
            conc__lock_acquire_dl(&p->overflow_lock, CONC__NO_DEADLINE);
            ok = conc__deque_push(&p->overflow, f);
            conc_lock_release(&p->overflow_lock);
        }
    }
    if (!ok) {
        conc_future_free(f);
        conc_future_free(f);
        return CONC_ENOMEM;
    }
    if (!(w && w->pool == p) && atomic_load_explicit(&p->shutdown, memory_order_seq_cst)) {
        /* Shutdown raced with this submit (Python serialises the two with a
         * lock). Seeing the flag only now, our push may have come after the
         * workers' last look: take the future back unless one took it. */
        if (conc_future_cancel(f)) {
            /* Not started: it stays cancelled in the deque, where a worker
             * (or the pool's destroy) drops the pool's reference. */
            conc_future_free(f);
            return CONC_ESHUTDOWN;
        }
    }
    conc__fence_light(); /* the push before the idle check; see fence.h */
    if (atomic_load_explicit(&p->idle, memory_order_relaxed)) {
        wake_one_worker(p);
    } else if (atomic_load_explicit(&p->nworkers, memory_order_relaxed) < p->max_workers) {
        conc__lock_acquire_dl(&p->lock, CONC__NO_DEADLINE);
        int rc = atomic_load_explicit(&p->shutdown, memory_order_relaxed) ? 0 : start_worker_locked(p);
        conc_lock_release(&p->lock);
        if (rc && atomic_load_explicit(&p->nworkers, memory_order_relaxed) == 0) {
            /* No worker could start at all: do not leave it queued forever. */
            conc__future_fail_now(f, rc, "could not start a worker thread");
        }
    }
    *out = f;
    return 0;
}

/* ------------------------------------------------------------ shutdown */

static int pool_shutdown(conc_executor_t *ex, bool wait, bool cancel_futures)
{
    pool_t *p = (pool_t *)ex;
    conc__lock_acquire_dl(&p->lock, CONC__NO_DEADLINE);
    atomic_store_explicit(&p->shutdown, 1, memory_order_seq_cst);
    conc_lock_release(&p->lock);
    if (cancel_futures) {
        conc_future_t *f;
        while ((f = steal_any(p, NULL)) != NULL) {
            conc_future_cancel(f);
            conc_future_free(f);
        }
    }
    wake_all_workers(p);
    if (wait) {
        size_t n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
        for (size_t i = 0; i < n; i++) {
            worker_t *w = p->workers[i];
            if (w != tl_worker)
                conc_thread_join(w->thread, CONC_FOREVER, NULL);
        }
    }
    return 0;
}

static void registry_remove(pool_t *p)
{
    conc__lock_acquire_dl(&registry_lock, CONC__NO_DEADLINE);
    for (pool_t **pp = &registry; *pp; pp = &(*pp)->all_next)
        if (*pp == p) {
            *pp = p->all_next;
            break;
        }
    conc_lock_release(&registry_lock);
}

static void pool_destroy(conc_executor_t *ex)
{
    pool_t *p = (pool_t *)ex;
    registry_remove(p);
    /* Anything left (submitted after the workers were gone) is cancelled. */
    conc_future_t *f;
    while ((f = steal_any(p, NULL)) != NULL) {
        conc_future_cancel(f);
        conc_future_free(f);
    }
    size_t n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        worker_t *w = p->workers[i];
        conc_thread_join(w->thread, CONC_FOREVER, NULL);
        conc_thread_free(w->thread);
        conc__deque_destroy(&w->dq);
        free(w);
    }
    size_t e = atomic_load_explicit(&p->next_, memory_order_acquire);
    for (size_t i = 0; i < e; i++) {
        conc__deque_destroy(p->ext[i]);
        free(p->ext[i]);
    }
    conc__deque_destroy(&p->overflow);
    free(p->workers);
    p->gen = 0;
    free(p);
}

static const conc_executor_ops_t pool_ops = {
    .name = "ThreadPoolExecutor",
    .submit = pool_submit,
    .shutdown = pool_shutdown,
    .destroy = pool_destroy,
};

/* Workers of this pool may not free it (they would join themselves). */
bool conc__executor_is_own_worker(conc_executor_t *ex)
{
    return ex->ops == &pool_ops && tl_worker && tl_worker->pool == (pool_t *)ex;
}

static void pools_atexit(void)
{
    for (;;) {
        conc__lock_acquire_dl(&registry_lock, CONC__NO_DEADLINE);
        pool_t *p = registry;
        if (p)
            registry = p->all_next;
        conc_lock_release(&registry_lock);
        if (!p)
            return;
        if (!tl_worker || tl_worker->pool != p)
            pool_shutdown(&p->base, true, false);
    }
}

static void atexit_init(void)
{
    atexit(pools_atexit);
}

int conc_thread_pool_new(conc_executor_t **out, const conc_thread_pool_opts_t *opts)
{
    if (!out)
        return CONC_EINVAL;
    conc_thread_pool_opts_t o = {0};
    if (opts)
        o = *opts;
    if (o.max_workers == 0) {
        size_t n = cpu_count() + 4;
        o.max_workers = n < 32 ? n : 32;
    }
    if (o.max_workers > 4096)
        return CONC_EINVAL;
    pool_t *p = aligned_alloc(64, (sizeof *p + 63) & ~(size_t)63);
    if (!p)
        return CONC_ENOMEM;
    memset(p, 0, sizeof *p);
    p->workers = calloc(o.max_workers, sizeof *p->workers);
    if (!p->workers || conc__deque_init(&p->overflow, DEQUE_SIZE)) {
        free(p->workers);
        free(p);
        return CONC_ENOMEM;
    }
    p->base.ops = &pool_ops;
    p->gen = atomic_fetch_add(&pool_gen, 1) + 1;
    p->max_workers = o.max_workers;
    if (o.thread_name_prefix)
        snprintf(p->prefix, sizeof p->prefix, "%s", o.thread_name_prefix);
    else
        snprintf(p->prefix, sizeof p->prefix, "ThreadPoolExecutor-%lu", p->gen - 1);
    p->initializer = o.initializer;
    p->initarg = o.initarg;
    pthread_once(&atexit_once, atexit_init);
    conc__membarrier_init();
    conc__lock_acquire_dl(&registry_lock, CONC__NO_DEADLINE);
    p->all_next = registry;
    registry = p;
    conc_lock_release(&registry_lock);
    *out = &p->base;
    return 0;
}
