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
 * idle worker starts one while fewer than max_workers exist. "Idle" is
 * Python 3.8's _idle_semaphore: a worker that finished a task adds a
 * token (before it publishes the outcome, so the caller woken by that
 * outcome sees it), a submit that finds no sleeping worker takes one
 * instead of starting a thread — so submit().result() in a loop uses one
 * worker. Tokens are kept only while the pool can still grow.
 *
 * Waiting runs the awaited task: a worker that waits without a timeout
 * on a not-yet-started future of its own pool runs it on the spot, in a
 * context of its own (conc__pool_run_inline), so tasks that wait on their
 * subtasks cannot deadlock the pool. If another worker (a thief) runs it
 * already, a pool made with .leapfrog runs that task's subtasks from the
 * thief's deque meanwhile (leapfrogging, conc__pool_wait_running), never an unrelated
 * task (which could need a lock the waiter holds). When the task
 * is one of the two newest entries of the worker's own deque (fork-join:
 * submit a, submit b, wait a), the wait takes it out (popping b first and
 * pushing it back, where thieves find it), so no stale entry is left and
 * the run costs no tidying pop afterwards.
 *
 * Shutdown: submits fail from then on; with cancel_futures every queued
 * future is cancelled (one in flight between a pop and its put-back,
 * which the drain missed, where it would start: cancel_if_cancelling);
 * workers drain what is left and exit; wait joins them. A failing
 * initializer is reported on stderr and breaks the pool:
 * queued futures fail with CONC_EBROKEN and a message naming the
 * initializer's failure (BrokenThreadPool); later submits fail with
 * CONC_EBROKEN. Cancelled futures the pool drops are notified
 * (CANCELLED_AND_NOTIFIED), whether a worker or shutdown drops them. At process exit, live pools are
 * shut down and joined (an exit hook of the thread module), as Python does.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trace/obs.h"
#include "conc/sync.h"
#include "conc/thread.h"
#include "core/fence.h"
#include "futures/deque.h"
#include "futures/internal.h"
#include "sync/internal.h"
#include "thread/internal.h"

#define EXT_MAX 64
#define DEQUE_SIZE 256
#define BATCH 32
#define BATCH_MIN (2 * BATCH) /* shorter outside deques: one at a time */
#define IDLE_YIELDS 16
#define IDLE_SPIN_NS 20000
#define IDLE_SPIN_YIELD_EVERY 16 /* polls of the idle spin between two yields */
#define IDLE_SPIN_PURE 128        /* polls before the first yield */
#define WAIT_RUNNING_NS 200000 /* conc__pool_wait_running: how long at most */
#define LF_POLL_EVERY 16 /* conc__pool_wait_running: polls of f between two leapfrog tries */
#define INL_CACHE 32 /* inline-run contexts a worker keeps (one per nesting depth) */

typedef struct pool pool_t;

typedef struct worker {
    conc__deque_t dq;
    pool_t *pool;
    conc_thread_t *thread;
    unsigned victim;
    size_t index;                 /* its slot in workers[] */
    unsigned inl_depth;           /* inline runs (conc__pool_run_inline) open now */
    unsigned long seen_cancels;   /* conc__queued_cancels when a drop_stale last emptied its deque */
    conc__ctx_t *inl[INL_CACHE];  /* their contexts, one per depth, kept for reuse */
    /* Leapfrogging (see conc__pool_wait_running): the task this worker
     * runs whose subtasks are every entry of its deque at index lf_base
     * and above (NULL: none), under a sequence count (odd while it
     * changes), so a waiter can tell that nothing changed between reading
     * the record and a steal. Written by the owner only. */
    atomic_ulong lf_seq;
    _Atomic(conc_future_t *) lf;
    atomic_size_t lf_base;
} worker_t;

struct pool {
    conc_executor_t base;
    unsigned long gen;            /* tells pools at the same address apart */
    size_t max_workers;
    char prefix[64];
    void (*initializer)(void *);
    void *initarg;
    bool leapfrog;

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
    atomic_int cancelling;        /* shutdown(cancel_futures): no pending task starts */
    atomic_size_t tokens;         /* idle tokens (Python's _idle_semaphore) */
    char broken_msg[384];         /* why, once broken is set */
    struct pool *all_next;        /* registry of live pools (exit hook) */
};

static __thread worker_t *tl_worker __attribute__((tls_model("initial-exec")));

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

/* A steal can lose a race with a non-empty deque: retry a little. */
static conc_future_t *steal_from(conc__deque_t *d)
{
    for (int tries = 0; tries < 4 && conc__deque_nonempty(d); tries++) {
        conc_future_t *f = conc__deque_steal(d);
        if (f)
            return f;
    }
    return NULL;
}

/* Find a task for `self` (NULL: any thread draining the pool). Other
 * workers' deques come first: what sits there was taken from outside
 * deques earlier, so it is older than anything still outside (Python's
 * pool starts work first in, first out). From a long outside deque a
 * worker takes a batch, runs the oldest and keeps the rest in its own
 * deque, where other workers can steal them; short ones are taken one
 * item at a time, so a few queued tasks go to as many workers. */
static conc_future_t *steal_any(pool_t *p, worker_t *self, bool *from_worker)
{
    size_t n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
    size_t e = atomic_load_explicit(&p->next_, memory_order_acquire);
    unsigned start = self ? self->victim++ : 0;
    conc_future_t *f;
    for (size_t k = 0; k < n; k++) {
        worker_t *w = p->workers[(start + k) % n];
        if (w && w != self && (f = steal_from(&w->dq))) {
            CONC__STAT(CONC__ST_STEAL);
            if (from_worker)
                *from_worker = true;
            return f;
        }
    }
    for (size_t k = 0; k <= e; k++) {
        size_t i = (start + k) % (e + 1);
        conc__deque_t *d = i < e ? p->ext[i] : &p->overflow;
        if (self && i < e && conc__deque_size(d) >= BATCH_MIN) {
            conc_future_t *batch[BATCH];
            size_t got = conc__deque_steal_batch(d, batch, BATCH);
            if (got) {
                /* Pushed newest first, so our LIFO pops take them in
                 * submission order. */
                for (size_t j = got; j-- > 1;)
                    if (!conc__deque_push(&self->dq, batch[j]))
                        run(p, batch[j]); /* no memory to queue it: run it now */
                return batch[0];
            }
        }
        if ((f = steal_from(d)))
            return f;
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

/* Fail f because the pool is broken (broken_msg is set before broken). */
static void fail_broken(pool_t *p, conc_future_t *f)
{
    conc__future_notify_cancel(f); /* a cancelled one is just dropped */
    conc__future_fail_now(f, CONC_EBROKEN, p->broken_msg);
}

/* Before a worker publishes a task's outcome: it is idle again. */
static void add_token(void *arg)
{
    pool_t *p = arg;
    size_t n = atomic_load_explicit(&p->nworkers, memory_order_relaxed);
    if (n >= p->max_workers)
        return; /* the pool cannot grow: nobody asks */
    worker_t *w = tl_worker;
    if (w && w->pool == p && w->index >= n)
        n = w->index + 1; /* its starter has not published it yet */
    size_t t = atomic_load_explicit(&p->tokens, memory_order_relaxed);
    while (t < n && !atomic_compare_exchange_weak_explicit(&p->tokens, &t, t + 1, memory_order_release,
                                                           memory_order_relaxed)) {
    }
}

static bool take_token(pool_t *p)
{
    size_t t = atomic_load_explicit(&p->tokens, memory_order_relaxed);
    while (t && !atomic_compare_exchange_weak_explicit(&p->tokens, &t, t - 1, memory_order_acquire,
                                                       memory_order_relaxed)) {
    }
    return t != 0;
}

/* After shutdown(cancel_futures) no pending task starts: one that missed
 * the drain (taken out of a deque and put back meanwhile, by a leapfrog
 * requeue, a fork-join wait's pop of the two newest, a tidy-up, a batch
 * steal) is cancelled where it would start (its callbacks run, and the run
 * that follows drops and notifies it). The shutdown sets the flag and
 * issues a heavy fence before its drain, so a thread that takes such an
 * entry after the drain missed it sees the flag. */
static inline void cancel_if_cancelling(pool_t *p, conc_future_t *f)
{
    if (__builtin_expect(atomic_load_explicit(&p->cancelling, memory_order_relaxed), 0))
        conc_future_cancel(f);
}

/* Run f's task and drop the pool's reference. */
static void run(pool_t *p, conc_future_t *f)
{
    if (atomic_load_explicit(&p->broken, memory_order_acquire)) {
        fail_broken(p, f);
        conc_future_free(f);
    } else {
        cancel_if_cancelling(p, f);
        /* The reference goes after the outcome is out, not in the CAS
         * that publishes it (conc__future_run_owned, which inline runs
         * use): measured, pool.throughput (a million tasks whose caller
         * is another thread) ran ~30% slower that way, with fewer
         * instructions — a cache effect not pinned down yet. */
        conc__future_run_hook(f, add_token, p);
        conc_future_free(f);
    }
}

/* The context an inline run at depth d uses: a worker keeps one per
 * depth, made on first use, so a run costs no context set-up (a fresh one
 * zeroes a kilobyte and takes a serial from a counter every worker
 * bumps). Reusing it is what a worker thread does with its own context
 * across tasks; the fields a wait leaves behind are reset. NULL: past the
 * cache, or no memory (the caller uses one on its stack). */
static conc__ctx_t *inline_ctx(worker_t *w, unsigned d)
{
    if (d >= INL_CACHE)
        return NULL;
    conc__ctx_t *c = w->inl[d];
    if (!c) {
        if (!(c = malloc(sizeof *c)))
            return NULL;
        conc__ctx_init(c);
        w->inl[d] = c;
        return c;
    }
    c->fail_code = 0;
    c->fail_msg[0] = 0;
    c->scope_dl = 0;
    c->nscopes = 0;
    c->fired = 0;
    c->cut_scope = -1;
    c->nointr = 0;
    c->scope_reported = 0;
    c->lbl_obj = NULL;
    c->lbl_kind = 0;
    return c;
}

void (*conc__pool_put_back_hook)(conc_future_t *f);

/* Set w's leapfrog record (owner only; a seqlock write). */
static inline void lf_set(worker_t *w, conc_future_t *f, size_t base)
{
    /* (Release stores, not fences, which ThreadSanitizer does not model:
     * a waiter that reads the new record sees the count go odd.) */
    unsigned long q = atomic_load_explicit(&w->lf_seq, memory_order_relaxed);
    atomic_store_explicit(&w->lf_seq, q + 1, memory_order_relaxed);
    atomic_store_explicit(&w->lf_base, base, memory_order_release);
    atomic_store_explicit(&w->lf, f, memory_order_release);
    atomic_store_explicit(&w->lf_seq, q + 2, memory_order_release);
    /* The count before any later push's slot store: a waiter that reads
     * such a slot (a relaxed load, maybe with an older bottom) and then
     * fences (lf_try) sees the count change. Free on x86 (TSO). (Not under
     * TSan, which does not model fences and warns about them.) */
#ifndef CONC__TSAN
    atomic_thread_fence(memory_order_release);
#endif
}

/* Before a worker publishes a task's outcome: it is idle again, and the
 * task's leapfrog record goes (before the outcome is out: once it is, the
 * future may be freed and reused). */
static void worker_done(void *arg)
{
    worker_t *w = arg;
    if (atomic_load_explicit(&w->lf, memory_order_relaxed))
        lf_set(w, NULL, 0);
    add_token(w->pool);
}

/* A worker runs f, which it stole from another worker's deque with its
 * own deque empty: run() with a leapfrog record for f (its subtasks are
 * what the worker pushes from now on). Only such tasks get one: a waiter
 * on a task a thief runs is usually the task that submitted it, on the
 * worker it was stolen from (fork-join); tasks taken from outside
 * submitters' deques (pool.throughput's) cost nothing more. */
static void run_recorded(worker_t *w, conc_future_t *f)
{
    pool_t *p = w->pool;
    if (atomic_load_explicit(&p->broken, memory_order_acquire)) {
        fail_broken(p, f);
        conc_future_free(f);
        return;
    }
    cancel_if_cancelling(p, f);
    lf_set(w, f, conc__deque_bottom(&w->dq));
    conc__future_run_hook(f, worker_done, w);
    if (atomic_load_explicit(&w->lf, memory_order_relaxed))
        lf_set(w, NULL, 0); /* cancelled: the hook did not run */
    conc_future_free(f);
}

/* Push f, which w just popped, back onto w's own deque. Cannot fail: the
 * slot was just freed (a deque's array never shrinks), or lf_try reserved
 * it before its steal — so a waiter never runs an unrelated task because
 * memory ran out. A worker that looked meanwhile may have gone to
 * sleep: wake it as a submit would (see pool_submit and fence.h). */
static void put_back(worker_t *w, conc_future_t *f)
{
    if (__builtin_expect(conc__pool_put_back_hook != NULL, 0))
        conc__pool_put_back_hook(f);
    bool ok = conc__deque_push(&w->dq, f);
    (void)ok;
    assert(ok);
    conc__fence_light();
    if (atomic_load_explicit(&w->pool->idle, memory_order_relaxed))
        wake_one_worker(w->pool);
}

/* Drop the entries at the bottom of w's own deque whose futures have
 * started (run inline by a wait), finished or been cancelled: what the
 * worker's loop would skip later, done now while they are in cache, so
 * thieves find runnable tasks at the top instead of stale entries. Stops
 * at the first pending one (it is not ours to run here). */
static void drop_stale(worker_t *w)
{
    /* The cancels counted so far are all seen only if the deque ends up
     * empty: stopped at a pending entry, a cancelled one below it is still
     * there, and the next inline run must look again (even if no future
     * was cancelled since). Only we push, so once the deque is empty every
     * cancel of a future that gets into it later is counted later. */
    unsigned long cancels = atomic_load_explicit(&conc__queued_cancels, memory_order_relaxed);
    /* Popped before it is looked at: a peeked entry could be stolen and
     * its future released meanwhile. */
    conc_future_t *f;
    while ((f = conc__deque_pop(&w->dq)) != NULL) {
        if ((conc__load(&f->sw, RLX) & FS_MASK) == CONC_FUTURE_PENDING) {
            put_back(w, f);
            return;
        }
        run(w->pool, f); /* drops it (notifies a cancelled one) */
    }
    w->seen_cancels = cancels;
}

bool conc__pool_run_inline(conc_future_t *f)
{
    worker_t *w = tl_worker;
    if (!w || f->owner != (void *)w->pool)
        return false;
    if (atomic_load_explicit(&w->pool->broken, memory_order_acquire))
        return false;
    /* Started on another worker: nothing to run (conc__future_run would
     * find that out too, after the set-up). A cancelled one still goes
     * through conc__future_run, which notifies it. */
    if ((conc__load(&f->sw, RLX) & FS_MASK) == CONC_FUTURE_RUNNING)
        return false;
    /* Run it as if on another worker: a context of its own, so it has its
     * own failure record and RLock identity (the waiting task may hold an
     * RLock; the subtask must not silently re-enter it). */
    conc__ctx_t *caller = conc__ctx();
    conc__ctx_t stack_ctx;
    /* (A green thread of a hub on this worker gets a fresh one: green
     * threads interleave, so their inline runs do not nest like calls.) */
    conc__ctx_t *tmp = caller->is_green ? NULL : inline_ctx(w, w->inl_depth);
    if (!tmp) {
        conc__ctx_init(&stack_ctx);
        tmp = &stack_ctx;
    }
    tmp->thread = caller->thread;
    tmp->spin_ns = caller->spin_ns;
    /* Take f out of our own deque, so no stale entry is left for a pop or
     * a thief to skip later: it is the newest entry (the task submitted
     * last, waited on first) or the one below it (two subtasks submitted,
     * the first waited on first: the newer one is taken off, f popped and
     * the newer one put back, where thieves still find it). Deeper, it
     * stays (run() skips it later) and drop_stale tidies up after the run. */
    bool popped = false, tidy = false;
    size_t b0 = conc__deque_bottom(&w->dq); /* f's index: b0 - 1, or b0 - 2 */
    conc_future_t *above = conc__deque_peek(&w->dq);
    if (above == f) {
        popped = conc__deque_pop(&w->dq) == f; /* NULL if a thief took it */
    } else if (above && conc__deque_peek_at(&w->dq, 2) == f) {
        above = conc__deque_pop(&w->dq); /* the newer one; NULL if thieves took both */
        if (above) {
            conc_future_t *g = conc__deque_pop(&w->dq); /* f, or NULL if a thief took it */
            popped = g == f;
            if (g && g != f) /* (cannot happen: only we push) */
                put_back(w, g);
            put_back(w, above);
        }
    } else {
        tidy = above != NULL; /* f deeper in our deque, or in another one */
    }
    /* Not from the top of our deque, or from below the record's base (a
     * future a foreign run left there), f need not be a subtask of the
     * task our leapfrog record names: what f pushes must not count as one.
     * A green thread's run may outlive the task (green threads interleave,
     * their inline runs do not nest like calls): it clears the record and
     * leaves it cleared. */
    conc_future_t *rec = atomic_load_explicit(&w->lf, memory_order_relaxed);
    if (rec && popped &&
        (intptr_t)(b0 - (above == f ? 1 : 2) - atomic_load_explicit(&w->lf_base, memory_order_relaxed)) >= 0)
        rec = NULL; /* a subtask: its pushes are the task's too */
    if (rec)
        lf_set(w, NULL, 0);
    if (caller->is_green)
        rec = NULL;
    conc__ctx_bind(tmp);
    bool cached = tmp != &stack_ctx;
    w->inl_depth += cached;
    /* Claims it (a queue entry left is skipped later); popped, the run
     * drops the pool's reference, which the entry held. */
    cancel_if_cancelling(w->pool, f);
    bool ran = popped ? conc__future_run_owned(f, NULL, NULL) : conc__future_run(f);
    w->inl_depth -= cached;
    conc__ctx_bind(caller);
    if (rec) /* what f left in our deque stays below the record's base */
        lf_set(w, rec, conc__deque_bottom(&w->dq));
    if (!cached)
        conc__lockdep_ctx_exit(&stack_ctx);
    /* A cancelled entry below is dropped (and notified, so wait() counts
     * it) now rather than when the loop reaches it: only if some queued
     * future was cancelled since a tidy-up last emptied our deque, so the
     * usual run costs no pop here. */
    if (tidy || atomic_load_explicit(&conc__queued_cancels, memory_order_relaxed) != w->seen_cancels)
        drop_stale(w);
    return ran;
}

/* ---------------------------------------------------------- leapfrog
 *
 * A worker that waits on f while another worker, the thief, runs it may
 * run f's subtasks meanwhile, taken from the thief's deque (Wagner &
 * Calder's leapfrogging): what f submitted, or its subtasks did — in
 * fork-join code work f's result depends on — never an unrelated task.
 * Only in pools that ask for it (conc_thread_pool_opts_t.leapfrog; off
 * by default, as Python's waits run nothing): the one hazard, a subtask f
 * does not wait for that blocks until the waiter goes on, docs/futures.md.) What
 * tells them apart is the thief's leapfrog record (lf, lf_base, lf_seq):
 * a worker that starts a task it stole from another worker's deque (its
 * own is empty then), or leapfrogs one with its own deque empty, records
 * it with the deque's bottom, so every entry at that index or above was
 * pushed while the task ran, by the task or by tasks it ran
 * on that thread (its subtasks, theirs, ...). The record goes before the
 * task's outcome is published, is cleared while the worker runs a task
 * that need not belong to it (a foreign inline run: of a future found
 * elsewhere than at the top of its deque, or below the record's base),
 * and comes back with a base above whatever such a run left behind
 * (not after a green thread's run, which may outlive the task). The waiter reads the
 * record, steals at or above the base, and re-reads the sequence count:
 * unchanged, the entry was pushed under the record (a push after a change
 * would have made the change visible with it); changed, the entry goes
 * back into the pool through the waiter's own deque, below its own
 * record's base. */

/* The worker whose record names f, or NULL. */
static worker_t *lf_find(pool_t *p, worker_t *self, conc_future_t *f)
{
    size_t n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        worker_t *x = p->workers[i];
        if (x != self && atomic_load_explicit(&x->lf, memory_order_relaxed) == f)
            return x;
    }
    return NULL;
}

/* g was stolen but is not provably f's: queue it again on w's own deque,
 * below the base of w's own record (it is not a subtask of that either). */
static void lf_requeue(worker_t *w, conc_future_t *g)
{
    conc_future_t *rec = atomic_load_explicit(&w->lf, memory_order_relaxed);
    if (rec)
        lf_set(w, rec, conc__deque_bottom(&w->dq) + 1);
    put_back(w, g);
}

typedef struct {
    worker_t *w;
    conc_future_t *rec; /* w's record before the run */
    bool done;
} lf_restore_t;

/* Before a leapfrogged task's outcome is out: w's record is the one it had
 * before, based above what the task left in w's deque. */
static void lf_restore(void *arg)
{
    lf_restore_t *r = arg;
    worker_t *w = r->w;
    if (r->rec || atomic_load_explicit(&w->lf, memory_order_relaxed))
        lf_set(w, r->rec, conc__deque_bottom(&w->dq));
    r->done = true;
}

/* Run g, stolen from f's thief, in a context of its own (as an inline run;
 * it dropped the pool's reference with its outcome). */
static void lf_run(worker_t *w, conc_future_t *g)
{
    lf_restore_t r = {w, atomic_load_explicit(&w->lf, memory_order_relaxed), false};
    size_t b = conc__deque_bottom(&w->dq);
    if (atomic_load_explicit(&w->dq.top, memory_order_relaxed) == b)
        lf_set(w, g, b); /* our deque is empty: g's subtasks are what we push now */
    else if (r.rec)
        lf_set(w, NULL, 0);
    conc__ctx_t *caller = conc__ctx();
    conc__ctx_t stack_ctx;
    conc__ctx_t *tmp = inline_ctx(w, w->inl_depth);
    if (!tmp) {
        conc__ctx_init(&stack_ctx);
        tmp = &stack_ctx;
    }
    tmp->thread = caller->thread;
    tmp->spin_ns = caller->spin_ns;
    conc__ctx_bind(tmp);
    bool cached = tmp != &stack_ctx;
    w->inl_depth += cached;
    cancel_if_cancelling(w->pool, g);
    conc__future_run_owned(g, lf_restore, &r);
    w->inl_depth -= cached;
    conc__ctx_bind(caller);
    if (!cached)
        conc__lockdep_ctx_exit(&stack_ctx);
    if (!r.done) /* cancelled: it did not run */
        lf_restore(&r);
}

/* One try: take a subtask of f from x's deque and run it. True if
 * something was taken (run, or queued again). */
static bool lf_try(worker_t *w, worker_t *x, conc_future_t *f)
{
    unsigned long q = atomic_load_explicit(&x->lf_seq, memory_order_acquire);
    conc_future_t *rec = atomic_load_explicit(&x->lf, memory_order_acquire);
    size_t base = atomic_load_explicit(&x->lf_base, memory_order_acquire);
    if ((q & 1) || rec != f)
        return false;
    /* A look before the steal's fence: usually there is nothing. */
    size_t t = atomic_load_explicit(&x->dq.top, memory_order_relaxed);
    if ((intptr_t)(t - base) < 0 ||
        (intptr_t)(atomic_load_explicit(&x->dq.bottom, memory_order_relaxed) - t) <= 0)
        return false;
    /* A slot for a put-back (lf_requeue) before the steal: no memory, no
     * steal (the waiter just waits). */
    if (!conc__deque_reserve(&w->dq, 1))
        return false;
    conc_future_t *g = conc__deque_steal_min(&x->dq, base);
    if (!g)
        return false;
    /* Pairs with lf_set's closing fence: g's slot, if pushed after a
     * change of the record, makes the change visible here. */
#ifndef CONC__TSAN
    atomic_thread_fence(memory_order_acquire);
#endif
    if (atomic_load_explicit(&x->lf_seq, memory_order_seq_cst) != q) {
        lf_requeue(w, g);
        return true;
    }
    CONC__STAT(CONC__ST_STEAL);
    lf_run(w, g);
    return true;
}

/* A worker waits without a timeout on f, which another worker of the
 * pool runs now. While f's thief has f's subtasks queued, run them
 * (leapfrogging, above); otherwise keep this CPU awake for a while
 * instead of sleeping in the kernel at once — spinning, and yielding it
 * to any other runnable thread every few microseconds. Such waits (a
 * subtask that a thief took) are usually short, and a sleeping thread's
 * wake-up costs the waker a futex call and the sleeper the time its CPU
 * takes to come out of its halt (on a virtual machine an interrupt
 * through the host: tens of us). Only for a worker's own OS-thread
 * context with no timeout scope open: nothing but f's end can end such a
 * wait. True: f finished meanwhile. */
bool conc__pool_wait_running(conc_future_t *f)
{
    worker_t *w = tl_worker;
    if (!w || f->owner != (void *)w->pool || !conc__smp())
        return false;
    conc__ctx_t *c = conc__ctx();
    if (c->ops || c->nscopes)
        return false;
    pool_t *p = w->pool;
    worker_t *thief = NULL;
    int64_t end = conc__now_ns() + WAIT_RUNNING_NS;
    for (unsigned k = 1;; k++) {
        uint64_t s = conc__load(&f->sw, ACQ);
        if ((s & FS_MASK) != CONC_FUTURE_RUNNING || (s & FS_COMPLETING) == 0)
            return (s & FS_MASK) == CONC_FUTURE_FINISHED; /* finished, or not a plain run */
        /* Every few polls only: the thief's deque and record are on lines
         * it writes all the time. */
        if (k % LF_POLL_EVERY == 1 && p->leapfrog && (thief || (thief = lf_find(p, w, f))) &&
            !atomic_load_explicit(&p->broken, memory_order_relaxed)) {
            if (lf_try(w, thief, f)) {
                end = conc__now_ns() + WAIT_RUNNING_NS;
                k = 0; /* look again at once */
                continue;
            }
            if (atomic_load_explicit(&thief->lf, memory_order_relaxed) != f)
                thief = NULL;
        }
        conc__cpu_relax();
        if (k % 64 == 0) {
            sched_yield();
            if (conc__now_ns() > end)
                return false;
        }
    }
}

/* A worker's thread ends: free its inline-run contexts. */
static void inline_ctx_free(worker_t *w)
{
    for (unsigned d = 0; d < INL_CACHE; d++)
        if (w->inl[d]) {
            conc__lockdep_ctx_exit(w->inl[d]);
            free(w->inl[d]);
            w->inl[d] = NULL;
        }
}

/* ------------------------------------------------------------- workers */

/* The initializer failed with code and msg: report it (Python logs
 * "Exception in initializer:" with the traceback) and break the pool. */
static void break_pool(pool_t *p, int code, const char *msg)
{
    char why[384];
    snprintf(why, sizeof why,
             "BrokenThreadPool: a thread initializer failed, the thread pool is not usable anymore (%s: %s)",
             conc_errname(code), msg && *msg ? msg : conc_strerror(code));
    fprintf(stderr, "Exception in initializer:\n%s: %s\n", conc_errname(code),
            msg && *msg ? msg : conc_strerror(code));
    fflush(stderr);
    conc__lock_hold(&p->lock);
    if (!atomic_load_explicit(&p->broken, memory_order_relaxed)) {
        memcpy(p->broken_msg, why, sizeof why);
        atomic_store_explicit(&p->broken, 1, memory_order_seq_cst);
    }
    conc_lock_release(&p->lock);
    /* Fail everything queued now; later arrivals fail in run(). */
    conc_future_t *f;
    while ((f = steal_any(p, NULL, NULL)) != NULL) {
        fail_broken(p, f);
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
        const char *msg;
        int code = conc_failure(&msg);
        if (code) {
            break_pool(p, code, msg);
            conc_fail_clear();
        }
    }
    for (;;) {
        conc_future_t *f = conc__deque_pop(&w->dq);
        bool from_worker = false;
        if (!f)
            f = steal_any(p, w, &from_worker); /* our deque is empty */
        if (f) {
            if (from_worker && p->leapfrog) /* only such pools read records */
                run_recorded(w, f);
            else
                run(p, f);
            if (conc__future_woke_sleeper) {
                /* Its outcome woke a thread that slept in the kernel (a
                 * caller in result()): let it have this CPU at once.
                 * Woken onto a CPU that idles, it would wait for that
                 * CPU to come out of its halt first — on a virtual
                 * machine an interrupt to the host, tens of us — while
                 * this worker spun here looking for work. */
                conc__future_woke_sleeper = false;
                sched_yield();
            }
            continue;
        }
        if (atomic_load_explicit(&p->broken, memory_order_acquire) && !any_work(p))
            break; /* run() fails whatever is still queued */
        /* Nothing to do: spin a little (a fixed floor on top of the
         * adaptive budget: work tends to arrive in streams, and a worker
         * that falls asleep costs the submitter a wake-up), then sleep.
         * After the first polls (a submit().result() loop's next task
         * comes within a microsecond or so), the spin yields the CPU every
         * few polls: a thread just woken
         * onto this CPU (the caller of result() whose task ended) would
         * otherwise wait for the whole spin before the scheduler lets it
         * preempt us. */
        conc__spinner_t sp;
        conc__spin_begin(&sp, CONC__NO_DEADLINE);
        if (conc__smp() && sp.end < sp.start + IDLE_SPIN_NS) {
            if (sp.end == 0) /* no adaptive budget: the floor alone */
                sp.start = conc__now_ns();
            sp.end = sp.start + IDLE_SPIN_NS;
        }
        bool found = false;
        for (unsigned k = 1; conc__spin_more(&sp); k++) {
            if ((found = any_work(p)))
                break;
            if (k >= IDLE_SPIN_PURE && k % IDLE_SPIN_YIELD_EVERY == 0)
                sched_yield();
        }
        conc__spin_end(&sp, found);
        if (found)
            continue;
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
        if (any_work(p)) {
            atomic_fetch_sub_explicit(&p->idle, 1, memory_order_seq_cst);
            conc__waitq_unlock(&p->idleq);
            continue;
        }
        /* Exit only here, after the heavy fence: a submit that passed its
         * own shutdown check has its push visible to any_work above. */
        if (atomic_load_explicit(&p->shutdown, memory_order_seq_cst)) {
            atomic_fetch_sub_explicit(&p->idle, 1, memory_order_seq_cst);
            conc__waitq_unlock(&p->idleq);
            break;
        }
        conc__waitq_push(&p->idleq, &wt);
        conc__waitq_unlock(&p->idleq);
        conc__wait_queued(&p->idleq, &wt, CONC__NO_DEADLINE, NULL, NULL);
    }
    inline_ctx_free(w);
    tl_worker = NULL;
    return NULL;
}

/* Start one more worker if allowed; under p->lock. The worker is published
 * in workers[] only once its thread exists (stealers read the table
 * without the lock). Workers are daemon threads: the pool's exit hook
 * shuts pools down and joins them (thread/internal.h). */
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
    w->victim = (unsigned)n + 1;
    w->index = n;
    char name[96];
    snprintf(name, sizeof name, "%s_%zu", p->prefix, n);
    conc_thread_opts_t o = {.name = name, .daemon = true};
    int rc = conc_thread_spawn(&w->thread, worker_main, w, &o);
    if (rc) {
        conc__deque_destroy(&w->dq);
        free(w);
        return n == 0 ? rc : 0; /* with some workers, carry on */
    }
    p->workers[n] = w;
    atomic_store_explicit(&p->nworkers, n + 1, memory_order_release);
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
    conc__lock_hold(&p->lock);
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
    f->sw = 2 * FS_REF | CONC_FUTURE_PENDING; /* the caller's reference and the pool's */

    worker_t *w = tl_worker;
    bool ok;
    conc__deque_t *d;
    if (w && w->pool == p) {
        /* A worker thread with a hub runs green threads and hub callbacks
         * between its task's steps, and they may outlive the task: what
         * they push is not provably the task's, so the leapfrog record
         * goes first (a push from such a thread never counts). */
        if (__builtin_expect(atomic_load_explicit(&w->lf, memory_order_relaxed) != NULL, 0) && conc__tl_hub)
            lf_set(w, NULL, 0);
        ok = conc__deque_push(&w->dq, f); /* we drain it ourselves, even at shutdown */
    } else {
        d = outside_deque(p);
        if (d) {
            ok = conc__deque_push(d, f);
        } else {
            conc__lock_hold(&p->overflow_lock);
            ok = conc__deque_push(&p->overflow, f);
            conc_lock_release(&p->overflow_lock);
        }
    }
    if (!ok) {
        conc_future_free(f);
        conc_future_free(f);
        return CONC_ENOMEM;
    }
    conc__fence_light(); /* the push before the shutdown and idle checks; see fence.h */
    if (atomic_load_explicit(&p->broken, memory_order_seq_cst)) {
        /* The initializer failed meanwhile and the workers may be gone. */
        fail_broken(p, f);
        conc_future_free(f);
        return CONC_EBROKEN;
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
    if (atomic_load_explicit(&p->idle, memory_order_relaxed)) {
        /* A sleeping worker takes it: it was idle, so use up its token
         * (Python's submit acquires the idle semaphore either way). */
        if (atomic_load_explicit(&p->nworkers, memory_order_relaxed) < p->max_workers)
            take_token(p);
        wake_one_worker(p);
    } else if (atomic_load_explicit(&p->nworkers, memory_order_relaxed) < p->max_workers && !take_token(p)) {
        conc__lock_hold(&p->lock);
        bool shut = atomic_load_explicit(&p->shutdown, memory_order_relaxed);
        int rc = shut ? 0 : start_worker_locked(p);
        size_t nw = atomic_load_explicit(&p->nworkers, memory_order_relaxed);
        conc_lock_release(&p->lock);
        if (nw == 0) {
            /* Nobody will ever run it: shut down before a first worker
             * existed, or no thread could be started at all. */
            if (shut && conc_future_cancel(f)) {
                conc_future_free(f);
                return CONC_ESHUTDOWN;
            }
            if (rc)
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
    conc__lock_hold(&p->lock);
    atomic_store_explicit(&p->shutdown, 1, memory_order_seq_cst);
    conc_lock_release(&p->lock);
    if (cancel_futures) {
        /* Before the drain: an entry it misses (in flight between a pop
         * and a put-back) is cancelled where it would start. */
        atomic_store_explicit(&p->cancelling, 1, memory_order_seq_cst);
        conc__fence_heavy();
        conc_future_t *f;
        while ((f = steal_any(p, NULL, NULL)) != NULL) {
            conc_future_cancel(f);
            conc__future_notify_cancel(f); /* dropped: wait() may count it */
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

/* Returns true if no pool is left. */
static bool registry_remove(pool_t *p)
{
    conc__lock_hold(&registry_lock);
    for (pool_t **pp = &registry; *pp; pp = &(*pp)->all_next)
        if (*pp == p) {
            *pp = p->all_next;
            break;
        }
    bool last = registry == NULL;
    conc_lock_release(&registry_lock);
    return last;
}

static void pool_destroy(conc_executor_t *ex)
{
    pool_t *p = (pool_t *)ex;
    bool last = registry_remove(p);
    /* Anything left (submitted after the workers were gone) is cancelled. */
    conc_future_t *f;
    while ((f = steal_any(p, NULL, NULL)) != NULL) {
        conc_future_cancel(f);
        conc__future_notify_cancel(f);
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
    if (last)
        conc__futures_trim(); /* no pool left: give recycled futures back */
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

/* Exit hook (thread/internal.h): shut down and join every live pool, as
 * Python does at interpreter exit; true if there was one. */
static bool pools_exit_hook(void)
{
    bool any = false;
    for (;;) {
        conc__lock_hold(&registry_lock);
        pool_t *p = registry;
        if (p)
            registry = p->all_next;
        conc_lock_release(&registry_lock);
        if (!p)
            return any;
        any = true;
        if (!tl_worker || tl_worker->pool != p)
            pool_shutdown(&p->base, true, false);
    }
}

/* The dump (observe/dump.c): one line per live pool with its pending
 * work items (a snapshot of its deques' sizes). */
void conc__pools_dump(FILE *f)
{
    conc__lock_hold(&registry_lock);
    for (pool_t *p = registry; p; p = p->all_next) {
        size_t pending = 0;
        conc_lock_acquire(&p->lock, true, CONC_FOREVER);
        size_t n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
        for (size_t i = 0; i < n; i++)
            pending += conc__deque_size(&p->workers[i]->dq);
        size_t e = atomic_load_explicit(&p->next_, memory_order_acquire);
        for (size_t i = 0; i < e; i++)
            pending += conc__deque_size(p->ext[i]);
        conc_lock_release(&p->lock);
        pending += conc__deque_size(&p->overflow);
        fprintf(f, "Executor ThreadPoolExecutor %p \"%s\": %zu of %zu workers, %zu pending work items%s\n", (void *)p,
                p->prefix, n, p->max_workers, pending, atomic_load(&p->shutdown) ? ", shut down" : "");
    }
    conc_lock_release(&registry_lock);
}

static void atexit_init(void)
{
    conc__at_exit(pools_exit_hook);
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
    p->leapfrog = o.leapfrog;
    pthread_once(&atexit_once, atexit_init);
    conc__membarrier_init();
    conc__lock_hold(&registry_lock);
    p->all_next = registry;
    registry = p;
    conc_lock_release(&registry_lock);
    *out = &p->base;
    return 0;
}
