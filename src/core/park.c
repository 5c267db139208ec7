/*
 * park.c — contexts, adaptive spinning, and the OS-thread kind of
 * park/unpark (see park.h for the protocol and its invariants).
 *
 * An OS-thread waiter's state word goes WAITING -> NOTIFIED (woken while
 * still spinning or yielding: no futex call on either side) or WAITING ->
 * SLEEPING -> NOTIFIED (the waker sees SLEEPING and issues one FUTEX_WAKE).
 * Before sleeping a waiter spins (adaptive budget) and then yields a few
 * times, which on an oversubscribed machine hands the CPU to the waker.
 * Three corrections keep a pair of threads on two CPUs spinning (a hand-off
 * in ~100 ns instead of a yield or futex round trip of microseconds)
 * without spinning where the CPU is shared: quick yields that were
 * answered restore a budget that fell to 0; after a futex wake the next
 * spin covers the sleeper's wake-up (if this CPU looked unshared); and a
 * pair that hands one CPU back and forth with yields sleeps now and then,
 * so the scheduler can wake one of them on an idle CPU. The waker's
 * last access is the exchange plus, at most, a futex wake on the word's
 * address; a futex wake on memory that was reused is harmless.
 */
#include "core/park.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conc/base.h"
#include "conc/green.h"
#include "core/futex.h"
#include "core/sys.h"
#include "trace/obs.h"

#define CONC__SPIN_MIN_NS 500
#define CONC__SPIN_MAX_NS 50000
#define CONC__SPIN_INIT_NS 10000
#define CONC__PARK_YIELDS 4
/* A sched_yield that returns within this ran no other thread (~0.3 us
 * alone on this VM, >= 1.3 us when it switches to another and back). */
#define CONC__YIELD_QUICK_NS 1000
/* The spin after waking a sleeper: covers its wake-up latency. */
#define CONC__SPIN_WOKE_NS CONC__SPIN_MAX_NS
/* A yield that returns within this ran another thread for a moment only
 * (a partner answering, not another process's time slice). */
#define CONC__YIELD_SHARED_NS 30000

/* ------------------------------------------------------------ contexts */

__thread conc__ctx_t *conc__cur __attribute__((tls_model("initial-exec")));
static pthread_key_t conc__ctx_key;
static pthread_once_t conc__ctx_once = PTHREAD_ONCE_INIT;
static conc__ctx_t conc__emergency_ctx = {.spin_ns = CONC__SPIN_INIT_NS, .cut_scope = -1};

/* Set by the thread module: runs when a thread conc did not create ends. */
void (*conc__foreign_exit_hook)(conc__ctx_t *ctx);

static long conc__nwakers; /* atomic: see conc__wakers */

void conc__wakers_add(long delta)
{
    atomic_fetch_add_explicit(CONC__A(&conc__nwakers), delta, memory_order_seq_cst);
}

long conc__wakers(void)
{
    return atomic_load_explicit(CONC__A(&conc__nwakers), memory_order_seq_cst);
}

void conc__wakers_reset(long n)
{
    atomic_store_explicit(CONC__A(&conc__nwakers), n, memory_order_seq_cst);
}

static void conc__ctx_destroy(void *p)
{
    conc__ctx_t *ctx = p;
    conc__cur = ctx; /* the hook may still need the context */
    if (conc__foreign_exit_hook)
        conc__foreign_exit_hook(ctx);
    conc__reg_os_remove(ctx);
    if (ctx->lockdep)
        conc__lockdep_ctx_exit(ctx);
    conc__cur = NULL;
    free(ctx);
    conc__wakers_add(-1);
}

static void conc__ctx_key_init(void)
{
    pthread_key_create(&conc__ctx_key, conc__ctx_destroy);
}

void conc__ctx_init(conc__ctx_t *ctx)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->spin_ns = CONC__SPIN_INIT_NS;
    ctx->cut_scope = -1;
    ctx->serial = conc__serial_next();
}

/* Make ctx the calling OS thread's context (conc-created threads). */
void conc__ctx_bind(conc__ctx_t *ctx)
{
    conc__cur = ctx;
}

conc__ctx_t *conc__ctx_slow(void)
{
    pthread_once(&conc__ctx_once, conc__ctx_key_init);
    conc__ctx_t *ctx = malloc(sizeof *ctx);
    if (!ctx)
        return &conc__emergency_ctx;
    conc__ctx_init(ctx);
    conc__cur = ctx;
    pthread_setspecific(conc__ctx_key, ctx);
    conc__wakers_add(1);
    conc__reg_os_add(ctx);
    return ctx;
}

/* The context if one exists, without creating it. */
conc__ctx_t *conc__ctx_peek(void)
{
    return conc__cur;
}

/* ------------------------------------------------------------ spinning */

static int conc__ncpu;

bool conc__smp(void)
{
    int n = conc__load(&conc__ncpu, RLX);
    if (n == 0) {
        long v = sysconf(_SC_NPROCESSORS_ONLN);
        n = v > 0 ? (int)v : 1;
        conc__store(&conc__ncpu, n, RLX);
    }
    return n > 1;
}

void conc__spin_begin(conc__spinner_t *sp, int64_t deadline)
{
    conc__ctx_t *c = sp->ctx = conc__ctx();
    sp->n = 0;
    sp->boosted = false;
    int64_t budget = 0;
    /* Green threads never spin: the waker may be a sibling on this hub. */
    if (!c->ops && conc__smp()) {
        budget = c->spin_ns;
        if (c->spin_woke) {
            /* It woke a sleeper since its last spin: what it waits for now
             * is likely that thread's answer, which comes after its
             * wake-up latency (an idle CPU's: ~15-50 us on a VM). Spin long
             * enough to catch it, so a pair that fell asleep gets back to
             * spinning instead of halving both budgets to 0 — but only if
             * its last yields showed this CPU to itself (the sleeper is
             * not queued behind this spin). */
            c->spin_woke = 0;
            if (budget < CONC__SPIN_WOKE_NS && c->spin_alone) {
                budget = CONC__SPIN_WOKE_NS;
                sp->boosted = true;
            }
        }
        /* With no budget left, probe now and then: conditions change. */
        if (budget == 0 && (++c->spin_skips & 15) == 0)
            budget = CONC__SPIN_MIN_NS;
    }
    if (budget == 0) {
        sp->start = sp->end = 0; /* no spin, and no clock read for it */
        return;
    }
    sp->start = conc__now_ns();
    sp->end = sp->start + budget;
    /* Callers pass the wait's own deadline: an open Timeout scope that
     * ends first ends the spin too (the park after it delivers the scope),
     * except in conc's own uninterruptible holds. */
    if (!c->nointr)
        deadline = conc__park_deadline(c, deadline);
    if (sp->end > deadline)
        sp->end = deadline;
}

void conc__spin_end(conc__spinner_t *sp, bool success)
{
    if (sp->end == 0)
        return; /* did not spin */
    conc__ctx_t *c = sp->ctx;
    uint32_t b = c->spin_ns;
    if (success)
        CONC__STAT(CONC__ST_SPIN_WON);
    if (success) {
        if (sp->boosted && b < CONC__SPIN_INIT_NS)
            b = CONC__SPIN_INIT_NS; /* the partner answers fast again */
        b = b + b / 2 + CONC__SPIN_MIN_NS;
        if (b > CONC__SPIN_MAX_NS)
            b = CONC__SPIN_MAX_NS;
    } else {
        /* Spinning did not pay: shrink; below the floor, stop spinning
         * (an oversubscribed machine needs the CPU for the waker). */
        b /= 2;
        if (b < CONC__SPIN_MIN_NS)
            b = 0;
    }
    c->spin_ns = b;
}

/* ------------------------------------------------- OS thread park/unpark */

static int conc__thread_park(conc__waiter_t *w, int64_t deadline)
{
    uint32_t s = conc__load(&w->state, ACQ);
    if (s == CONC__W_NOTIFIED)
        return 0;
    if (s == CONC__W_WAITING && !w->spun) {
        conc__spinner_t sp;
        conc__spin_begin(&sp, deadline);
        bool ok = false;
        while (conc__spin_more(&sp)) {
            if (conc__load(&w->state, ACQ) == CONC__W_NOTIFIED) {
                ok = true;
                break;
            }
        }
        conc__spin_end(&sp, ok);
        if (ok)
            return 0;
    }
    conc__ctx_t *c = w->ctx;
    if (s == CONC__W_WAITING && w->spun != CONC__SPUN_SLEEP && conc__smp() && !c->spin_shared) {
        /* A few yields before sleeping: on an oversubscribed machine the
         * waker may be waiting for this very CPU (or was just woken onto
         * it); on an idle one a yield returns at once. Cheaper than a futex
         * sleep + wake either way. Timed, to learn where the waker runs. */
        int64_t t = conc__now_ns();
        for (int y = 0; y < CONC__PARK_YIELDS; y++) {
            if (t >= deadline)
                break;
            sched_yield();
            int64_t t2 = conc__now_ns(), took = t2 - t;
            t = t2;
            c->spin_alone = took < CONC__YIELD_QUICK_NS;
            if (conc__load(&w->state, ACQ) == CONC__W_NOTIFIED) {
                if (took < CONC__YIELD_QUICK_NS) {
                    /* Nobody else wanted this CPU, so the waker runs on
                     * another and answered within microseconds: a spin
                     * would have caught it for free. A budget that fell
                     * to 0 (a pair knocked out of spinning) starts again. */
                    if (c->spin_ns < CONC__SPIN_INIT_NS)
                        c->spin_ns = CONC__SPIN_INIT_NS;
                } else if (took < CONC__YIELD_SHARED_NS) {
                    /* The yield ran a thread briefly, and the answer came
                     * in it: the waker shares this CPU. Two threads that
                     * hand the CPU to each other with yields stay on one
                     * CPU forever (both always runnable: the scheduler
                     * never moves either). Now and then (a sleep costs
                     * more than a yield when no CPU is idle) the next
                     * wait sleeps instead, which lets the scheduler wake
                     * it on an idle CPU; from there the pair's quick
                     * yields (above) bring it back to spinning. */
                    if (++c->spin_shared_n == 0)
                        c->spin_shared = 1;
                }
                return 0;
            }
        }
    }
    c->spin_shared = 0;
    if (s == CONC__W_WAITING) {
        uint32_t exp = CONC__W_WAITING;
        if (!atomic_compare_exchange_strong_explicit(CONC__A(&w->state), &exp, CONC__W_SLEEPING,
                                                     memory_order_acq_rel, memory_order_acquire)) {
            if (exp == CONC__W_NOTIFIED)
                return 0;
        }
    }
    CONC__STAT(CONC__ST_FUTEX_SLEEP);
    for (;;) {
        int r = conc__futex_wait(&w->state, CONC__W_SLEEPING, deadline, 0);
        if (conc__load(&w->state, ACQ) == CONC__W_NOTIFIED)
            return 0;
        if (r == CONC_ETIMEDOUT || (deadline != CONC__NO_DEADLINE && conc__now_ns() >= deadline))
            return CONC_ETIMEDOUT;
    }
}

static void conc__thread_unpark(conc__waiter_t *w)
{
    uint32_t *word = &w->state;
    uint32_t old = atomic_exchange_explicit(CONC__A(word), CONC__W_NOTIFIED, memory_order_acq_rel);
    if (old == CONC__W_SLEEPING) {
        conc__futex_wake(word, 1, 0);
        conc__ctx_t *me = conc__cur;
        if (me)
            me->spin_woke = 1; /* see conc__spin_begin */
    }
}

/* ------------------------------------------------------ timeout scopes */

static void scope_recompute(conc__ctx_t *ctx)
{
    int64_t m = 0;
    for (int i = 0; i < ctx->nscopes; i++)
        if (!(ctx->fired & (1u << i)) && (m == 0 || ctx->scopes[i] < m))
            m = ctx->scopes[i];
    ctx->scope_dl = m;
}

int conc__park_cut(conc__ctx_t *ctx, int64_t deadline)
{
    int64_t s = ctx->scope_dl;
    if (s && s < deadline) {
        /* The earliest unfired scope fired: mark it (and any other with
         * the same deadline: one interruption covers them). */
        for (int i = 0; i < ctx->nscopes; i++)
            if (!(ctx->fired & (1u << i)) && ctx->scopes[i] == s) {
                ctx->fired |= (uint8_t)(1u << i);
                ctx->cut_scope = (int8_t)i;
            }
        scope_recompute(ctx);
        int code = ctx->cut_scope >= 0 ? ctx->scope_code[ctx->cut_scope] : 0;
        if (__builtin_expect(code != 0, 0))
            return code; /* a Timeout object's own exception */
    }
    return CONC_ETIMEDOUT;
}

int conc__scope_push(conc__ctx_t *ctx, int64_t dl, uint32_t id, int code)
{
    if (ctx->nscopes >= CONC__MAX_SCOPES)
        return CONC_ERANGE;
    if (dl == 0)
        dl = 1; /* 0 means "no scope" in scope_dl: already passed anyway */
    int i = ctx->nscopes++;
    ctx->scopes[i] = dl;
    ctx->scope_id[i] = id;
    ctx->scope_code[i] = code;
    ctx->fired &= (uint8_t)~(1u << i);
    ctx->scope_cfa[i] = 0;
    if (dl != CONC__NO_DEADLINE && (ctx->scope_dl == 0 || dl < ctx->scope_dl))
        ctx->scope_dl = dl;
    return i;
}

int conc_timeout_begin(double seconds)
{
    int64_t dl;
    if (conc__deadline(seconds, &dl))
        return CONC_EINVAL;
    conc__ctx_t *ctx = conc__ctx();
    int i = conc__scope_push(ctx, dl, 0, 0);
    if (i < 0)
        return i;
    if (__builtin_expect(conc__scope_debug_on(), 0))
        conc__scope_note(ctx, i);
    return 0;
}

int conc__scope_find(const conc__ctx_t *ctx, uint32_t id)
{
    for (int i = ctx->nscopes - 1; i >= 0; i--)
        if (ctx->scope_id[i] == id)
            return i;
    return -1;
}

/* Take slot i out, wherever it sits: the ones above move down one. */
int conc__scope_remove(conc__ctx_t *ctx, int i)
{
    int fired = (ctx->fired >> i) & 1;
    int n = ctx->nscopes;
    for (int k = i; k + 1 < n; k++) {
        ctx->scopes[k] = ctx->scopes[k + 1];
        ctx->scope_id[k] = ctx->scope_id[k + 1];
        ctx->scope_code[k] = ctx->scope_code[k + 1];
        ctx->scope_cfa[k] = ctx->scope_cfa[k + 1];
        ctx->scope_fn[k] = ctx->scope_fn[k + 1];
    }
    /* the bit sets: keep bits below i, shift the ones above down */
    uint8_t low = (uint8_t)((1u << i) - 1);
    ctx->fired = (uint8_t)((ctx->fired & low) | ((ctx->fired >> 1) & ~low));
    ctx->scope_reported = (uint8_t)((ctx->scope_reported & low) | ((ctx->scope_reported >> 1) & ~low));
    ctx->nscopes = (uint8_t)(n - 1);
    if (ctx->cut_scope == i)
        ctx->cut_scope = -1;
    else if (ctx->cut_scope > i)
        ctx->cut_scope--;
    scope_recompute(ctx);
    return fired;
}

int conc_timeout_end(void)
{
    conc__ctx_t *ctx = conc__ctx();
    if (ctx->nscopes == 0)
        return CONC_EPERM;
    int i = ctx->nscopes - 1;
    if (__builtin_expect(ctx->scope_id[i] != 0, 0)) {
        /* Timeout objects sit above: end the innermost begin/end scope */
        i = conc__scope_find(ctx, 0);
        if (i < 0)
            return CONC_EPERM;
        return conc__scope_remove(ctx, i);
    }
    ctx->nscopes = (uint8_t)i;
    int fired = (ctx->fired >> i) & 1;
    ctx->fired &= (uint8_t)~(1u << i);
    if (ctx->cut_scope >= i)
        ctx->cut_scope = -1;
    scope_recompute(ctx);
    return fired;
}

/* ------------------------------------------------------- park dispatch */

int conc__park(conc__waiter_t *w, int64_t deadline)
{
    if (conc__obs_on(CONC__OBS_PARKS))
        return conc__obs_park(w, deadline); /* src/trace: around the plain park */
    return conc__park_plain(w, deadline);
}

int conc__park_plain(conc__waiter_t *w, int64_t deadline)
{
    conc__ctx_t *ctx = w->ctx;
    const conc__park_ops_t *ops = ctx->ops;
    ctx->cut_scope = -1;
    if (__builtin_expect(ctx->nscopes != 0, 0) && conc__scope_debug_on())
        conc__scope_check(ctx);
    int64_t dl = ctx->nointr ? deadline : conc__park_deadline(ctx, deadline);
    /* What it waits on, for the dump and the deadlock detector: a copy in
     * the context (the waiter may vanish under a reader). */
    conc__obs_block(ctx, w->obj, w->kind, deadline);
    int rc = ops ? ops->park(w, dl) : conc__thread_park(w, dl);
    conc__obs_unblock(ctx);
    if (__builtin_expect(rc == CONC_ETIMEDOUT && dl != deadline, 0))
        return conc__park_cut(ctx, deadline);
    return rc;
}

void conc__park_rearm(conc__waiter_t *w)
{
    conc__ctx_t *ctx = w->ctx;
    if (ctx->cut_scope >= 0) {
        /* The scope's deadline has passed: the next wait ends at once. */
        ctx->fired &= (uint8_t)~(1u << ctx->cut_scope);
        ctx->cut_scope = -1;
        scope_recompute(ctx);
    }
    if (ctx->ops && ctx->ops->rearm)
        ctx->ops->rearm(w);
}

void conc__park_settle(conc__waiter_t *w)
{
    /* No scopes here: the unpark is imminent and must be waited for. */
    const conc__park_ops_t *ops = w->ctx->ops;
    while ((ops ? ops->park(w, CONC__NO_DEADLINE) : conc__thread_park(w, CONC__NO_DEADLINE)) != 0) {
    }
}

void conc__unpark(conc__waiter_t *w)
{
    if (w->group) {
        conc__unpark(w->group);
        conc__store(&w->state, (uint32_t)CONC__W_NOTIFIED, REL); /* last touch */
        return;
    }
    if (conc__obs_on(CONC__OBS_TRACE))
        conc__obs_unpark(w);
    const conc__park_ops_t *ops = w->ctx->ops;
    if (ops)
        ops->unpark(w);
    else
        conc__thread_unpark(w);
}

/* ------------------------------------------------------------ wait lists */

/* Forks survived by this process's memory (see park.h). Bumped by the
 * first atfork child handler conc registers: the constructor runs before
 * every other conc constructor (priority), and child handlers run in
 * registration order, so no later handler meets a stale guard. */
unsigned conc__fork_gen;
/* Some fork in this memory's history was made while other threads ran
 * (sticky: their half-done work is inherited by every later fork). */
bool conc__fork_orphans;
static bool fork_saw_threads; /* set by prepare, read by the child */

/* Prepare handlers run in reverse registration order: this one, the
 * first registered, runs last, right before the fork. Another thread can
 * start one only if another thread runs: one thread now means none left
 * behind. (/proc unreadable: 0, counted as threaded.) */
static void fork_gen_atfork_prepare(void)
{
    conc__store(&fork_saw_threads, conc__process_threads() != 1, RLX);
}

static void fork_gen_atfork_child(void)
{
    conc__store(&conc__fork_gen, conc__load(&conc__fork_gen, RLX) + 1, RLX);
    if (conc__load(&fork_saw_threads, RLX))
        conc__store(&conc__fork_orphans, true, RLX);
}

__attribute__((constructor(101))) static void fork_gen_init(void)
{
    pthread_atfork(fork_gen_atfork_prepare, NULL, fork_gen_atfork_child);
}

void conc__waitq_lock(conc__waitq_t *q)
{
    unsigned spins = 0, mine = conc__guard_stamp();
    for (;;) {
        unsigned v = conc__load(&q->guard, RLX);
        if (v == 0 || conc__guard_stale(v, mine)) { /* free, or its holder died in a fork */
            if (atomic_compare_exchange_weak_explicit(CONC__A(&q->guard), &v, mine, ACQ, RLX))
                return;
            continue;
        }
        if (++spins < 128)
            conc__cpu_relax();
        else
            sched_yield();
    }
}

void conc__waitq_push_front(conc__waitq_t *q, conc__waiter_t *w)
{
    w->prev = NULL;
    w->next = q->head;
    if (q->head)
        q->head->prev = w;
    else
        q->tail = w;
    q->head = w;
    w->queued = 1;
}

void conc__waitq_remove(conc__waitq_t *q, conc__waiter_t *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
    w->next = w->prev = NULL;
    w->queued = 0;
}

conc__waiter_t *conc__waitq_pop(conc__waitq_t *q)
{
    conc__waiter_t *w = q->head;
    if (w)
        conc__waitq_remove(q, w);
    return w;
}

conc__waiter_t *conc__waitq_take_all(conc__waitq_t *q)
{
    conc__waiter_t *list = q->head;
    for (conc__waiter_t *w = list; w; w = w->next)
        w->queued = 0;
    q->head = q->tail = NULL;
    return list;
}

void conc__unpark_list(conc__waiter_t *list)
{
    while (list) {
        conc__waiter_t *next = list->next; /* read before the waiter may vanish */
        conc__unpark(list);
        list = next;
    }
}

int conc__wait_queued(conc__waitq_t *q, conc__waiter_t *w, int64_t deadline,
                      void (*on_timeout_locked)(conc__waitq_t *q, void *arg), void *arg)
{
    int rc = conc__park(w, deadline);
    if (rc == 0)
        return 0;
    conc__waitq_lock(q);
    if (w->queued) {
        conc__waitq_remove(q, w);
        if (on_timeout_locked)
            on_timeout_locked(q, arg);
        conc__waitq_unlock(q);
        return rc;
    }
    conc__waitq_unlock(q);
    conc__park_settle(w);
    conc__park_rearm(w);
    return 0;
}
