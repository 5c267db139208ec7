/*
 * hub.c — the per-OS-thread scheduler of green threads, and the green kind
 * of park/unpark.
 *
 * A hub schedules three kinds of contexts (green/internal.h): green
 * threads, the OS thread's own context ("main") and its loop context. A
 * context that blocks switches straight to the next ready one (no detour
 * through the loop); only when nothing is ready — or every 64 switches, or
 * when another thread left work in the inbox — does it switch to the loop,
 * which moves remote wakeups and kill requests from the lock-free inboxes
 * to the ready queue, fires due timers (a binary heap), and polls its
 * poller — epoll, io_uring, poll or select behind one interface
 * (io/poller.h; the fd side is hub_io.c) — for the fds green threads wait
 * on and the operations they submitted, plus an eventfd other threads
 * write to wake it only when it sleeps.
 *
 * The park protocol (core/park.h) carries over: a parking green context
 * moves its waiter WAITING -> SLEEPING and switches away. Whoever moves it
 * out of SLEEPING owns its resumption: an unpark (-> NOTIFIED), its timer
 * (-> TIMEDOUT) or an interruption (-> INTERRUPTED: kill, LoopExit) — so
 * a context is made ready exactly once per park, from any thread. An
 * unpark from another OS thread pushes the context onto the hub's inbox
 * (a Treiber stack) and writes the eventfd only if the hub said it sleeps
 * (Dekker-style: both sides use sequentially consistent operations).
 *
 * LoopExit: when nothing is ready, no timer is pending, no fd is waited on
 * and no other thread conc knows of could wake it (conc__wakers: conc's
 * own threads, threads that used conc, registered helpers — not threads
 * conc never saw, such as a sanitizer's), nothing can ever wake the main
 * context, so its blocked call returns CONC_ELOOPEXIT.
 *
 * Hubs are never freed (a remote waker may touch one just after the
 * context it woke has run): an OS thread that exits leaves its hub on a
 * free list for the next one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "arch/switch.h"
#include "core/fdwait.h"
#include "core/time.h"
#include "green/internal.h"
#include "green/local.h"
#include "io/poller.h"
#include "trace/obs.h"

#ifdef CONC__ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef CONC__TSAN
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif

__thread conc__hub_t *conc__tl_hub __attribute__((tls_model("initial-exec")));

static pthread_mutex_t hubs_lock = PTHREAD_MUTEX_INITIALIZER;
static conc__hub_t *hubs_free;
static pthread_key_t hub_key;
static pthread_once_t hub_once = PTHREAD_ONCE_INIT;

#define LOOP_STACK ((size_t)64 * 1024)

/* ------------------------------------------------------------ switching */

static inline void after_switch(conc__hub_t *h)
{
    conc_green_t *d = h->dead;
    if (d) {
        h->dead = NULL;
        /* its "alive" reference: off its stack now. The usual case of
         * conc__green_off_stack inline: nothing pending, its handle held */
        if (__builtin_expect(!h->dead_pending && atomic_load_explicit(&d->refs, memory_order_acquire) != 1, 1))
            h->dead_pending = d;
        else
            conc__green_off_stack(h, d);
    }
}

#ifdef CONC__ASAN
static __thread conc__gs_t *asan_from;
static void asan_finish(conc__gs_t *self)
{
    const void *bottom;
    size_t size;
    __sanitizer_finish_switch_fiber(self ? self->asan_fake : NULL, &bottom, &size);
    if (asan_from && asan_from->kind == GS_MAIN) {
        asan_from->stack_lo = bottom;
        asan_from->stack_size = size;
    }
}
#endif

/* Switch from the running context `from` to `to`; returns when someone
 * switches back to `from` — for a retired green thread's stack, that is
 * when the stack is reused, maybe by another OS thread's hub, so the hub
 * is read again from `from`. The switcher makes `to` current (h->cur,
 * conc__cur) before it leaves: every way into a suspended context goes
 * through here (a fresh stack's conc__green_entry sets them itself), so
 * the resumed side has only the retired stack to release. */
static inline __attribute__((always_inline)) void switch_to(conc__hub_t *h, conc__gs_t *from, conc__gs_t *to)
{
    if (conc__obs_on(CONC__OBS_TRACE | CONC__OBS_STATS)) /* the loop's track is its OS thread's */
        conc__obs_switch_inline(from->kind == GS_LOOP ? h->os_ctx : from->ctx, from->kind == GS_LOOP,
                                to->kind == GS_LOOP ? h->os_ctx : to->ctx, to->kind == GS_LOOP);
    h->cur = to;
    conc__cur = to->ctx;
#ifdef CONC__ASAN
    asan_from = from;
    __sanitizer_start_switch_fiber(&from->asan_fake, to->stack_lo, to->stack_size);
#endif
#ifdef CONC__TSAN
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
    conc__switch(&from->sp, to->sp);
#ifdef CONC__ASAN
    asan_finish(from);
#endif
    h = from->hub;
    if (__builtin_expect(h->dead != NULL, 0))
        after_switch(h);
}

static void do_switch(conc__hub_t *h, conc__gs_t *from, conc__gs_t *to)
{
    switch_to(h, from, to);
}

void conc__hub_unready(conc__hub_t *h, conc__gs_t *gs)
{
    if (gs->prev)
        gs->prev->next = gs->next;
    else
        h->ready_head = gs->next;
    if (gs->next)
        gs->next->prev = gs->prev;
    else
        h->ready_tail = gs->prev;
    gs->next = gs->prev = NULL;
}

static inline conc__gs_t *pop_ready(conc__hub_t *h)
{
    conc__gs_t *gs = h->ready_head;
    if (gs) {
        h->ready_head = gs->next;
        if (gs->next)
            gs->next->prev = NULL;
        else
            h->ready_tail = NULL;
    }
    return gs;
}

static bool inbox_pending(conc__hub_t *h)
{
    return atomic_load_explicit(&h->inbox, memory_order_relaxed) != NULL ||
           atomic_load_explicit(&h->kills, memory_order_relaxed) != NULL;
}

/* Every 64 switches the loop gets a turn even when contexts are ready, so
 * timers, I/O and wakeups from other threads are not starved by green
 * threads that keep yielding to each other (h->turns counts down: one
 * decrement and a sign test per switch). */
static inline bool loop_turn(conc__hub_t *h)
{
    if (__builtin_expect(--h->turns < 0, 0)) {
        h->turns = 63;
        return true;
    }
    return false;
}

/* Switch from the running context `from` to the next ready one (the
 * loop's on its turn or when none is). Inline in green_park: a call
 * through conc__hub_schedule and do_switch would save and restore the
 * callee-saved registers once more per park (measured: about 30
 * instructions less per hand-off in green.chan_pingpong). */
static inline __attribute__((always_inline)) void schedule_inline(conc__hub_t *h, conc__gs_t *from)
{
    conc__gs_t *to;
    if (loop_turn(h) || !(to = pop_ready(h)))
        to = &h->loop;
    if (__builtin_expect(to == from, 0)) /* it readied itself (no memory for its timer) */
        return;
    switch_to(h, from, to);
}

void conc__hub_schedule(conc__hub_t *h, conc__gs_t *from)
{
    conc__gs_t *to;
    if (loop_turn(h) || !(to = pop_ready(h)))
        to = &h->loop;
    if (to == from)
        return;
    do_switch(h, from, to);
}

int conc__hub_yield(conc__gs_t *gs)
{
    conc__hub_t *h = gs->hub; /* gs runs (not the loop: yield_slow refused it) */
    conc__hub_ready(h, gs);
    conc__hub_schedule(h, gs);
    int code = gs->interrupt;
    if (__builtin_expect(code != 0, 0))
        gs->interrupt = 0;
    return code;
}

/* conc_yield off the fast path: a plain OS thread, a pending interruption,
 * an open Timeout scope, nothing else ready or the loop's turn. */
static __attribute__((noinline, cold)) int yield_slow(conc__ctx_t *ctx)
{
    if (!ctx)
        ctx = conc__ctx_slow();
    if (!ctx->ops) {
        sched_yield();
        return 0;
    }
    if (ctx->ops != &conc__green_ops)
        return CONC_EPERM; /* the loop context (conc__loop_ops): it must not switch */
    conc__gs_t *gs = ctx->green;
    if (gs->interrupt != 0) {
        int code = gs->interrupt;
        gs->interrupt = 0;
        return code;
    }
    if (ctx->scope_dl != 0 && conc__now_ns() >= ctx->scope_dl)
        return conc__park_cut(ctx, CONC__NO_DEADLINE);
    return conc__hub_yield(gs);
}

/* gevent.sleep(0). The fast path — a context of a hub, nothing pending
 * for it, another one ready and no loop turn due — moves the caller from
 * the running slot to the ready queue's tail and switches straight to the
 * queue's head, inline: no detour through conc__hub_schedule or the loop. */
int conc_yield(void)
{
    conc__ctx_t *ctx = conc__cur;
    conc__gs_t *gs;
    /* ctx->green is set exactly while ctx->ops is (conc__hub_get,
     * maybe_detach, hub_thread_exit; green.c for green threads), and it
     * shares a cache line with scope_dl */
    if (__builtin_expect(!ctx || !(gs = ctx->green) || ctx->scope_dl != 0, 0))
        return yield_slow(ctx);
    conc__hub_t *h = gs->hub;
    conc__gs_t *to = h->ready_head;
    /* the loop context has a standing interruption (CONC__LOOP_REFUSES):
     * yield_slow refuses it */
    if (__builtin_expect(gs->interrupt != 0 || !to, 0))
        return yield_slow(ctx);
    if (__builtin_expect(loop_turn(h), 0)) {
        h->turns = 0; /* conc__hub_schedule takes the turn */
        return yield_slow(ctx);
    }
    /* to leaves the head, gs joins the tail */
    conc__gs_t *next = to->next;
    gs->next = NULL;
    if (next) {
        conc__gs_t *tail = h->ready_tail;
        next->prev = NULL;
        h->ready_head = next;
        tail->next = gs;
        gs->prev = tail;
    } else {
        h->ready_head = gs;
        gs->prev = NULL;
    }
    h->ready_tail = gs;
    switch_to(h, gs, to);
    int code = gs->interrupt;
    if (__builtin_expect(code != 0, 0))
        gs->interrupt = 0;
    return code;
}

/* ---------------------------------------------------------------- timers */

static void heap_swap(conc__hub_t *h, size_t a, size_t b)
{
    conc__gs_t *t = h->heap[a];
    h->heap[a] = h->heap[b];
    h->heap[b] = t;
    h->heap[a]->heap_idx = a;
    h->heap[b]->heap_idx = b;
}

static void heap_up(conc__hub_t *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->heap[p]->due <= h->heap[i]->due)
            break;
        heap_swap(h, i, p);
        i = p;
    }
}

static void heap_down(conc__hub_t *h, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->nheap && h->heap[l]->due < h->heap[m]->due)
            m = l;
        if (r < h->nheap && h->heap[r]->due < h->heap[m]->due)
            m = r;
        if (m == i)
            return;
        heap_swap(h, i, m);
        i = m;
    }
}

static bool heap_add(conc__hub_t *h, conc__gs_t *gs, int64_t due)
{
    if (h->nheap == h->cap_heap) {
        size_t cap = h->cap_heap ? h->cap_heap * 2 : 64;
        conc__gs_t **n = realloc(h->heap, cap * sizeof *n);
        if (!n)
            return false;
        h->heap = n;
        h->cap_heap = cap;
    }
    gs->due = due;
    gs->heap_idx = h->nheap;
    h->heap[h->nheap++] = gs;
    heap_up(h, gs->heap_idx);
    return true;
}

static void heap_remove(conc__hub_t *h, conc__gs_t *gs)
{
    size_t i = gs->heap_idx;
    gs->heap_idx = SIZE_MAX;
    size_t last = --h->nheap;
    if (i != last) {
        h->heap[i] = h->heap[last];
        h->heap[i]->heap_idx = i;
        heap_down(h, i);
        heap_up(h, i);
    }
}

/* ------------------------------------------------------ park and unpark */

/* Resume gs, parked on w, for `why` (TIMEDOUT / INTERRUPTED) unless
 * something else already owns its resumption. Hub thread only. */
static void resume_for(conc__hub_t *h, conc__gs_t *gs, conc__waiter_t *w, uint32_t why)
{
    uint32_t exp = CONC__W_SLEEPING;
    if (atomic_compare_exchange_strong_explicit(CONC__A(&w->state), &exp, why, memory_order_acq_rel,
                                                memory_order_relaxed))
        conc__hub_ready(h, gs);
}

void conc__hub_interrupt(conc__hub_t *h, conc__gs_t *gs, int code)
{
    if (gs->interrupt != CONC_EKILLED)
        gs->interrupt = code;
    /* Not while it holds on for conc's own lock: it gets the interruption
     * at its next blocking call. */
    if (gs->parked_w && !gs->ctx->nointr)
        resume_for(h, gs, gs->parked_w, CONC__W_INTERRUPTED);
}

static int take_interrupt(conc__gs_t *gs)
{
    int code = gs->interrupt;
    gs->interrupt = 0;
    gs->last_intr = code;
    return code;
}

/* Back to plain OS-thread parking once nothing green is left: a thread
 * that ran green threads once does not keep paying for the hub. Only
 * while main runs (none of its waiters is outstanding). Inline: a join of
 * the last green thread (spawn + join) comes here every time. */
static inline void maybe_detach(conc__hub_t *h)
{
    if ((h->nalive | h->nheap | h->nfdwait | h->nacq) == 0 && !h->ready_head && !h->dead &&
        !inbox_pending(h) && h->main.ctx && !h->main.interrupt) {
        /* Detached, a conc_close would not reach the hub: forget every fd
         * now, or a reused fd number would look watched already. */
        if (__builtin_expect(h->nwatched != 0, 0)) /* (nacq is 0 here) */
            conc__hub_io_detach(h);
        h->main.ctx->ops = NULL;
        __atomic_store_n(&h->main.ctx->green, NULL, __ATOMIC_RELEASE); /* the dump reads it */
    }
}

/* The main context's fd waits when nothing green is alive (hub_io.c): it
 * stayed attached after the join of the last green thread
 * (conc__hub_park_local), and an fd wait is where it detaches — no waiter
 * of its own is outstanding at that point — so that it waits with poll(2)
 * as a plain thread and the hub learns no fd it would never forget. True:
 * detached (redo the wait as a plain thread). */
bool conc__hub_main_idle_detach(conc__hub_t *h)
{
    if (h->cur != &h->main)
        return false;
    maybe_detach(h);
    return h->main.ctx == NULL || h->main.ctx->ops == NULL;
}

static int green_park(conc__waiter_t *w, int64_t deadline)
{
    conc__gs_t *gs = w->ctx->green;
    conc__hub_t *h = gs->hub;
    if (w->spun == CONC__SPUN_ASLEEP) {
        /* conc__park_presleep: SLEEPING since before it was queued, and
         * maybe already taken out of it by a waker on another thread that
         * is making it ready (the inbox): switch away whatever the state,
         * whoever took it out of SLEEPING resumes it. */
        w->spun = 1;
        goto asleep;
    }
    uint32_t s = conc__load(&w->state, ACQ);
    if (s == CONC__W_NOTIFIED)
        return 0;
    if (s != CONC__W_WAITING) {
        /* Settling after a cut-short park: the unpark is imminent (its
         * waker is on another thread, or already done). Let others run. */
        while (conc__load(&w->state, ACQ) != CONC__W_NOTIFIED) {
            conc__hub_ready(h, gs);
            conc__hub_schedule(h, gs);
        }
        return 0;
    }
    /* conc's own uninterruptible waits (nointr) keep what the last
     * interrupted park reported: a caller that finds that wait satisfied
     * after them still rearms it (core/shwait.h conc__cut_rearm). */
    if (!gs->ctx->nointr)
        gs->last_intr = 0;
    if (gs->interrupt && !gs->ctx->nointr)
        return take_interrupt(gs);
    uint32_t exp = CONC__W_WAITING;
    if (!atomic_compare_exchange_strong_explicit(CONC__A(&w->state), &exp, CONC__W_SLEEPING,
                                                 memory_order_acq_rel, memory_order_acquire))
        return 0; /* notified meanwhile */
asleep:
    gs->parked_w = w;
    if (deadline != CONC__NO_DEADLINE && !heap_add(h, gs, deadline))
        resume_for(h, gs, w, CONC__W_TIMEDOUT); /* no memory for a timer: time out now */
    schedule_inline(h, gs);
    gs->parked_w = NULL;
    if (gs->heap_idx != SIZE_MAX)
        heap_remove(h, gs);
    s = conc__load(&w->state, ACQ);
    if (s == CONC__W_NOTIFIED) {
        if (gs->kind == GS_MAIN)
            maybe_detach(h);
        return 0;
    }
    if (s == CONC__W_TIMEDOUT)
        return CONC_ETIMEDOUT;
    return take_interrupt(gs);
}

/* green_park for a join of a green thread of this hub (green.c): its
 * waiter is on that green thread's joinq, which only this hub's thread
 * touches, and every waker — the end, a kill, LoopExit — runs on this
 * thread, so the WAITING -> SLEEPING step needs no atomic exchange. The
 * caller checked: no deadline, no timeout scope, nothing pending, not
 * nointr, no observation that wraps parks. */
int conc__hub_park_local(conc__gs_t *gs, conc__waiter_t *w)
{
    conc__hub_t *h = gs->hub; /* gs runs: the loop context (its standing interruption) parks through conc__park */
    gs->last_intr = 0;
    conc__store(&w->state, (uint32_t)CONC__W_SLEEPING, RLX);
    gs->parked_w = w;
    /* conc__hub_schedule, inline (gs runs: it is not the ready queue's) */
    conc__gs_t *to;
    if (loop_turn(h) || !(to = pop_ready(h)))
        to = &h->loop;
    switch_to(h, gs, to);
    gs->parked_w = NULL;
    /* No maybe_detach for the main context here (the usual spawn + join
     * would detach and attach again every time): it stays attached while
     * idle. conc_context_kind reports it as a plain thread (nalive 0); its
     * fd waits detach it first (conc__hub_main_idle_detach); its other
     * parks go through the hub as a plain thread's would — no LoopExit
     * while nothing green is alive (poll_once) — and detach it when
     * notified (green_park). */
    if (conc__load(&w->state, RLX) == CONC__W_NOTIFIED)
        return 0;
    return take_interrupt(gs); /* INTERRUPTED: no timer was set */
}

static void remote_wake(conc__hub_t *h)
{
    if (atomic_load_explicit(&h->sleeping, memory_order_seq_cst) &&
        atomic_exchange_explicit(&h->sleeping, 0, memory_order_seq_cst)) {
        uint64_t one = 1;
        ssize_t r = write(h->evfd, &one, sizeof one);
        (void)r;
    }
}

static void green_unpark(conc__waiter_t *w)
{
    /* Read the context only after winning its resumption: until then it
     * may be running (and the OS thread's own context may even go back to
     * plain parking, clearing ctx->green). */
    conc__ctx_t *ctx = w->ctx;
    uint32_t old = atomic_exchange_explicit(CONC__A(&w->state), CONC__W_NOTIFIED, memory_order_acq_rel);
    if (old != CONC__W_SLEEPING)
        return; /* it did not sleep, or its timer / an interruption resumed it */
    conc__gs_t *gs = ctx->green;
    conc__hub_t *h = gs->hub;
    if (h == conc__tl_hub) {
        conc__hub_ready(h, gs);
        return;
    }
    conc__gs_t *head = atomic_load_explicit(&h->inbox, memory_order_relaxed);
    do {
        atomic_store_explicit(&gs->inbox_next, head, memory_order_relaxed);
    } while (!atomic_compare_exchange_weak_explicit(&h->inbox, &head, gs, memory_order_seq_cst,
                                                    memory_order_relaxed));
    remote_wake(h);
}

/* park.h (green/local.h) */
bool conc__park_presleep(conc__waiter_t *w)
{
    return conc__park_presleep_inline(w);
}

void conc__unpark_local(conc__waiter_t *w)
{
    conc__unpark_local_inline(w);
}

/* park.h: conc__hub_yield without taking the interruption. */
bool conc__hub_pause(void)
{
    conc__ctx_t *ctx = conc__cur;
    conc__gs_t *gs;
    if (!ctx || ctx->ops != &conc__green_ops || !(gs = ctx->green))
        return false; /* an OS thread, or the loop context (conc__loop_ops: it must not switch) */
    conc__hub_ready(gs->hub, gs);
    conc__hub_schedule(gs->hub, gs);
    return true;
}

void conc__hub_kill_remote(conc__hub_t *h, conc_green_t *g)
{
    if (atomic_exchange_explicit(&g->kill_queued, true, memory_order_acq_rel))
        return; /* one request is enough */
    atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    void *head = atomic_load_explicit(&h->kills, memory_order_relaxed);
    do {
        atomic_store_explicit(&g->kill_next, head, memory_order_relaxed);
    } while (!atomic_compare_exchange_weak_explicit(&h->kills, &head, (void *)g, memory_order_seq_cst,
                                                    memory_order_relaxed));
    remote_wake(h);
}

static void green_rearm(conc__waiter_t *w)
{
    conc__gs_t *gs = w->ctx->green;
    if (gs->last_intr && !gs->interrupt)
        gs->interrupt = gs->last_intr;
    gs->last_intr = 0;
}

const conc__park_ops_t conc__green_ops = {
    .park = green_park,
    .unpark = green_unpark,
    .kind = "green",
    .rearm = green_rearm,
    .fd_wait = conc__green_fd_wait,
    .fd_forget = conc__green_fd_forget,
    .fd_maybe_ready = conc__green_fd_maybe_ready,
    .fd_short = conc__green_fd_short,
    .fd_op = conc__green_fd_op,
    .fd_io = conc__green_fd_io,
};

/* The loop context's park ops: it must never block or switch away (it is
 * what runs everything else), so every park and fd wait reached from it —
 * code it runs itself, e.g. a signal handler that lands while it polls —
 * returns CONC_EPERM at once and changes nothing (a waiter already
 * notified is simply done: conc__park_settle). Closing an fd still tells
 * the hub. */
static int loop_park(conc__waiter_t *w, int64_t deadline)
{
    (void)deadline;
    return conc__load(&w->state, ACQ) == CONC__W_NOTIFIED ? 0 : CONC_EPERM;
}

static void loop_unpark(conc__waiter_t *w)
{
    conc__store(&w->state, (uint32_t)CONC__W_NOTIFIED, REL); /* it never sleeps */
}

static int loop_fd_wait(int fd, int events, int64_t deadline)
{
    (void)fd, (void)events, (void)deadline;
    return CONC_EPERM;
}

static ssize_t loop_fd_op(const struct conc__fdop *d, int64_t deadline)
{
    (void)d, (void)deadline;
    return CONC_EPERM;
}

const conc__park_ops_t conc__loop_ops = {
    .park = loop_park,
    .unpark = loop_unpark,
    .kind = "hub",
    .fd_wait = loop_fd_wait,
    .fd_forget = conc__green_fd_forget,
    .fd_maybe_ready = conc__green_fd_maybe_ready,
    .fd_short = conc__green_fd_short,
    .fd_op = loop_fd_op,
};

/* ------------------------------------------------------------- the loop */

static void drain_inboxes(conc__hub_t *h)
{
    /* Plain loads first: the fairness turns (every 64 switches) mostly
     * find both empty, and an exchange is a locked instruction. A push
     * that lands after the look is seen by the next turn, or by
     * poll_once's check after it says it sleeps. */
    if (!inbox_pending(h))
        return;
    void *k = atomic_exchange_explicit(&h->kills, NULL, memory_order_acquire);
    while (k) {
        conc_green_t *g = k;
        k = atomic_load_explicit(&g->kill_next, memory_order_relaxed);
        atomic_store_explicit(&g->kill_queued, false, memory_order_release);
        conc__green_do_kill(g);
        conc__green_unref(g);
    }
    conc__gs_t *list = atomic_exchange_explicit(&h->inbox, NULL, memory_order_acquire);
    conc__gs_t *rev = NULL; /* pushed newest first: restore arrival order */
    while (list) {
        conc__gs_t *next = atomic_load_explicit(&list->inbox_next, memory_order_relaxed);
        list->next = rev;
        rev = list;
        list = next;
    }
    while (rev) {
        conc__gs_t *next = rev->next;
        conc__hub_ready(h, rev);
        rev = next;
    }
}

static void fire_timers(conc__hub_t *h, int64_t now)
{
    while (h->nheap && h->heap[0]->due <= now) {
        conc__gs_t *gs = h->heap[0];
        heap_remove(h, gs);
        CONC__STAT(CONC__ST_TIMER_FIRE);
        if (gs->parked_w)
            resume_for(h, gs, gs->parked_w, CONC__W_TIMEDOUT);
    }
}

/* One pass: inboxes, timers, I/O. block: nothing is ready, so sleep in
 * the poller until something happens (or deliver LoopExit). */
static void poll_once(conc__hub_t *h, bool block)
{
    drain_inboxes(h);
    int64_t now = 0;
    if (h->nheap) {
        now = conc__now_ns();
        fire_timers(h, now);
    }
    int64_t timeout = 0;
    if (block && !h->ready_head) {
        if (h->nheap) {
            timeout = h->heap[0]->due - now;
            if (timeout < 0)
                timeout = 0;
        } else {
            timeout = -1;
            /* (main attached while nothing green is alive — idle after a
             * join — blocks as a detached thread would: no LoopExit) */
            if (h->nfdwait == 0 && h->main.parked_w && h->nalive != 0 && conc__wakers() <= 1) {
                conc__hub_interrupt(h, &h->main, CONC_ELOOPEXIT);
                return;
            }
        }
        atomic_store_explicit(&h->sleeping, 1, memory_order_seq_cst);
        if (inbox_pending(h)) {
            atomic_store_explicit(&h->sleeping, 0, memory_order_seq_cst);
            return;
        }
    } else if (h->nfdwait == 0) {
        return;
    }
    bool traced = timeout != 0 && conc__obs_on(CONC__OBS_TRACE);
    if (traced)
        conc__trace_hub(CONC__HUB_IO_B);
    conc__hub_io_poll(h, timeout);
    if (traced)
        conc__trace_hub(CONC__HUB_IO_E);
    if (timeout != 0)
        atomic_store_explicit(&h->sleeping, 0, memory_order_seq_cst);
    if (h->nheap)
        fire_timers(h, conc__now_ns());
}

static void hub_loop(conc__hub_t *h) __attribute__((noreturn));
static void hub_loop(conc__hub_t *h)
{
    for (;;) {
        /* One pass per turn, one poller call at most: a quick look when
         * contexts are ready (the periodic fairness turn), a sleep when
         * none is. */
        /* traced: the turns that may wait (the periodic fairness turns
         * show as the loop's running slices) */
        bool idle = h->ready_head == NULL;
        bool traced = idle && conc__obs_on(CONC__OBS_TRACE);
        if (traced)
            conc__trace_hub(CONC__HUB_TURN_B);
        poll_once(h, idle);
        if (traced)
            conc__trace_hub(CONC__HUB_TURN_E);
        conc__gs_t *to = pop_ready(h);
        if (to)
            do_switch(h, &h->loop, to);
    }
}

void conc__green_run(conc_green_t *g);

void conc__green_entry(void *arg)
{
    conc__gs_t *gs = arg;
    conc__hub_t *h = gs->hub;
#ifdef CONC__ASAN
    asan_finish(NULL);
#endif
    h->cur = gs;
    conc__cur = gs->ctx;
    after_switch(h);
    if (gs->kind == GS_LOOP)
        hub_loop(h);
    /* One green thread after another on this stack: g's record sits at the
     * same place (the stack's top) for each of them. */
    conc_green_t *g = (conc_green_t *)((char *)gs - offsetof(conc_green_t, gs));
    for (;;) {
        conc__green_run(g);
        /* Ended: switch away. The stack stays suspended here until a new
         * green thread reuses it and switches to it (so stacks are never
         * unwound or re-entered: sanitizers see every frame return). The
         * switch is inline: its registers are saved once per stack, at
         * this loop's entry, and every call on this stack keeps its ret. */
        h = gs->hub;
        conc__gs_t *to = h->handoff; /* its one joiner, nothing else ready (green.c wake_one_joiner) */
        if (to)
            h->handoff = NULL;
        else if (!(to = pop_ready(h)))
            to = &h->loop;
        switch_to(h, gs, to);
    }
}

/* --------------------------------------------------------------- the hub */

void conc__gs_init(conc__gs_t *gs, conc__hub_t *h, conc__ctx_t *ctx, int kind)
{
    memset(gs, 0, sizeof *gs);
    gs->hub = h;
    gs->ctx = ctx;
    gs->kind = (uint8_t)kind;
    gs->heap_idx = SIZE_MAX;
}

static void hub_thread_exit(void *p)
{
    conc__hub_t *h = p;
    if (conc__tl_hub != h)
        return;
    /* Its fd table would go with it to the free list (the main context
     * may have stayed attached, idle, since the join of its last green
     * thread: no detach forgot the fds): forget them now, or a number
     * closed and reused meanwhile would look watched to the next thread. */
    if (h->nalive == 0 && (h->nwatched | h->nacq) != 0)
        conc__hub_io_detach(h); /* (needs conc__tl_hub) */
    conc__tl_hub = NULL;
    conc__stack_overflow_handler_thread_exit();
    if (conc__cur && conc__cur == h->main.ctx) {
        h->main.ctx->ops = NULL;
        __atomic_store_n(&h->main.ctx->green, NULL, __ATOMIC_RELEASE); /* the dump reads it */
    }
    h->main.ctx = NULL;
    conc_green_t *pend = h->dead_pending; /* its handle's free would have dropped it */
    h->dead_pending = NULL;
    if (pend)
        conc__green_unref(pend);
    if (h->nalive != 0)
        return; /* its green threads are abandoned with it (documented) */
    pthread_mutex_lock(&hubs_lock);
    h->free_next = hubs_free;
    hubs_free = h;
    pthread_mutex_unlock(&hubs_lock);
}

/* hubs_lock across fork: held by the forking thread, so no other thread
 * can be inside it when the child is made (a child would otherwise block
 * forever on the first hub it creates or retires). */
static void hub_atfork_prepare(void) { pthread_mutex_lock(&hubs_lock); }
static void hub_atfork_parent(void) { pthread_mutex_unlock(&hubs_lock); }

/* After fork, in the child: h gets a poller and an eventfd of its own
 * (the inherited ones are the parent's open files: sharing them, the
 * parent's hub could reap the child's edge-triggered events, completions
 * and wake-ups, or the other way round), watching what h watched. false:
 * out of fds (h is then unusable). */
static bool hub_own_fds(conc__hub_t *h)
{
    const conc__poller_ops_t *ops = h->pops;
    conc__hub_io_forked(h);
    close(h->evfd);
    h->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    atomic_store(&h->sleeping, 0);
    if (h->evfd < 0)
        return false;
    if (conc__hub_io_start(h, ops))
        return true;
    return conc__hub_io_start(h, &conc__poll_epoll);
}

static void hub_atfork_child(void)
{
    pthread_mutex_unlock(&hubs_lock);
    /* Retired hubs wait on the free list for the next thread that wants
     * one; the parent may hand its copy of the same record to one of its
     * threads. Each keeps the epoll instance it had: give the child's
     * copies their own (one that cannot get them is left off the list). */
    conc__hub_t **pp = &hubs_free;
    while (*pp) {
        if (hub_own_fds(*pp))
            pp = &(*pp)->free_next;
        else
            *pp = (*pp)->free_next;
    }
    conc__hub_t *h = conc__tl_hub;
    if (h)
        hub_own_fds(h);
}

static void hub_once_init(void)
{
    pthread_key_create(&hub_key, hub_thread_exit);
    pthread_atfork(hub_atfork_prepare, hub_atfork_parent, hub_atfork_child);
}

/* The backend the next hub of this thread gets (conc_hub_init). */
static __thread const conc__poller_ops_t *tl_want;

static conc__hub_t *hub_create(void)
{
    const conc__poller_ops_t *ops = tl_want ? tl_want : conc__poller_choose(CONC_HUB_DEFAULT);
    pthread_mutex_lock(&hubs_lock);
    conc__hub_t *h = hubs_free;
    if (h)
        hubs_free = h->free_next;
    pthread_mutex_unlock(&hubs_lock);
    if (h) {
        /* A recycled hub: the backend this thread wants, and a ring of its
         * own (an io_uring ring may belong to the thread that made it). */
        if (h->pops != ops || h->pops->completion)
            conc__hub_io_switch(h, ops, true);
        return h;
    }
    h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    conc__membarrier_init(); /* the light side of h->all's guard (internal.h) */
    h->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (h->evfd < 0 || !(conc__hub_io_start(h, ops) || conc__hub_io_start(h, &conc__poll_epoll)) ||
        conc__stack_get(NULL, LOOP_STACK, &h->loop_stack) != 0) {
        if (h->poller)
            h->pops->destroy(h->poller);
        if (h->evfd >= 0)
            close(h->evfd);
        free(h);
        return NULL;
    }
    h->loop_ctx.ops = &conc__loop_ops;
    h->loop_ctx.green = &h->loop;
    h->loop_ctx.cut_scope = -1;
    h->loop_ctx.serial = conc__serial_take(1);
    conc__gs_init(&h->loop, h, &h->loop_ctx, GS_LOOP);
    h->loop.interrupt = CONC__LOOP_REFUSES; /* standing: see internal.h */
    h->loop.stack_lo = h->loop_stack.lo;
    h->loop.stack_size = (size_t)(h->loop_stack.hi - h->loop_stack.lo);
#ifdef CONC__TSAN
    h->loop.tsan_fiber = h->loop_stack.tsan_fiber;
#endif
    h->loop.sp = conc__switch_frame(h->loop_stack.hi, &h->loop);
    return h;
}

/* The calling thread's hub, made if need be, without attaching its
 * context (it keeps parking as a plain thread until a green thread runs). */
static conc__hub_t *hub_ensure(conc__ctx_t *ctx)
{
    conc__hub_t *h = conc__tl_hub;
    if (!h) {
        pthread_once(&hub_once, hub_once_init);
        if (!(h = hub_create()))
            return NULL;
        conc__gs_init(&h->main, h, ctx, GS_MAIN);
#ifdef CONC__TSAN
        h->main.tsan_fiber = __tsan_get_current_fiber();
#endif
        h->os_ctx = ctx;
        h->cur = &h->main;
        conc__tl_hub = h;
        pthread_setspecific(hub_key, h);
        conc__stack_overflow_handler_install();
    }
    return h;
}

conc__hub_t *conc__hub_get(void)
{
    conc__ctx_t *ctx = conc__ctx();
    conc__hub_t *h = conc__tl_hub;
    if (!h && !(h = hub_ensure(ctx)))
        return NULL;
    if (ctx->ops == NULL)
        conc__hub_attach(h, ctx); /* this thread's context now parks through the hub */
    return h;
}

/* ------------------------------------------------------------ backends */

int conc_hub_init(const conc_hub_opts_t *opts)
{
    conc_hub_backend_t b = opts ? opts->backend : CONC_HUB_DEFAULT;
    if ((unsigned)b > CONC_HUB_SELECT)
        return CONC_EINVAL;
    const conc__poller_ops_t *ops = conc__poller_choose(b);
    if (!ops)
        return CONC_ENOTSUP;
    conc__hub_t *h = conc__tl_hub;
    if (!h) {
        tl_want = ops;
        h = hub_ensure(conc__ctx());
        tl_want = NULL;
        if (!h)
            return CONC_ENOMEM;
        if (h->pops == ops)
            return 0;
    }
    if (h->cur != &h->main)
        return CONC_EPERM; /* from a green thread: its hub is running */
    return conc__hub_io_switch(h, ops, false);
}

conc_hub_backend_t conc_hub_backend(void)
{
    conc__hub_t *h = conc__tl_hub;
    return h ? h->pops->backend : CONC_HUB_DEFAULT;
}

const char *conc_hub_backend_name(conc_hub_backend_t b)
{
    static const char *const names[] = {"default", "epoll", "uring", "poll", "select"};
    return (unsigned)b < sizeof names / sizeof names[0] ? names[b] : NULL;
}
