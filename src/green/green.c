/*
 * green.c — green threads: spawn, run, end, join, kill, links, sleep,
 * yield, offload (the scheduler itself is hub.c).
 *
 * A green thread's record sits at the top of its own stack (so an idle one
 * costs one page) and is reference counted: one reference for the handle
 * (none when detached), one for being alive — dropped by the hub only
 * after the green thread has switched off its stack for good — and one per
 * pending kill request from another OS thread. The last reference returns
 * the stack (and with it the record) to the stack pool.
 *
 * Ending, in order: status DEAD, the joiners on its hub and the `done`
 * event (joiners on other OS threads: set only if one began) wake, then the
 * links, on the ending green thread. A green thread killed before it
 * started ends at once, in the killer's context; the hub skips it when it
 * comes up in the ready queue.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arch/switch.h"
#include "conc/futures.h"
#include "core/time.h"
#include "green/internal.h"
#include "trace/obs.h"
#include "thread/internal.h"
#include "core/sanitize.h"
#ifdef CONC__ASAN
#include <sanitizer/asan_interface.h>
#endif


void conc__green_pool_member_done(conc_green_t *g);

static _Atomic unsigned long green_ids;

/* Ended green threads a hub keeps for reuse, records and stacks (beyond
 * that, their stacks go to the stack pool: stack.c). */
#define GFREE_MAX 256
/* Serials a hub takes at once for its green threads. */
#define SERIAL_BLOCK 64u

static conc_green_t *green_of(conc__gs_t *gs)
{
    return (conc_green_t *)((char *)gs - offsetof(conc_green_t, gs));
}

/* "Green-<n>" without printf (spawn is on the hot path). */
static void default_name(char *buf, unsigned long n)
{
    char digits[24];
    int k = 0;
    do {
        digits[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    memcpy(buf, "Green-", 6);
    int i = 6;
    while (k)
        buf[i++] = digits[--k];
    buf[i] = 0;
}

/* A new record for a green thread of h, on a stack of `size` usable bytes
 * from the stack pool: the fields that depend only on the stack and the
 * hub, and those every ended green thread leaves as a new one needs them
 * (see conc__green_make), are set here once; a kept record (h->gfree)
 * has them still right. NULL: out of memory. */
static __attribute__((noinline)) conc_green_t *fresh_record(conc__hub_t *h, size_t size)
{
    conc__stack_t st;
    if (conc__stack_get(h, size, &st) != 0)
        return NULL;
    conc_green_t *g = conc__stack_record(st.hi);
#ifdef CONC__ASAN
    ASAN_UNPOISON_MEMORY_REGION(g, sizeof *g); /* poisoned when its last owner freed it */
#endif
    g->ctx.ops = &conc__green_ops;
    g->ctx.green = &g->gs;
    g->ctx.is_green = 1;
    g->ctx.nointr = 0;
    /* never changed on a green context: it never spins (conc__spin_begin),
     * is never on the OS threads' registry, and a pool sets its links when
     * it takes it in (green/pool.c member_join) */
    g->ctx.spin_ns = 0;
    g->ctx.spin_skips = 0;
    g->ctx.registered = 0;
    g->pool_next = g->pool_prev = NULL;
    g->gs.hub = h;
    g->gs.ctx = &g->ctx;
    g->gs.kind = GS_GREEN;
    g->gs.stack_lo = st.lo;
    g->gs.stack_size = (size_t)(st.hi - st.lo);
#ifdef CONC__TSAN
    g->gs.tsan_fiber = st.tsan_fiber;
#endif
    atomic_store_explicit(&g->gs.inbox_next, NULL, memory_order_relaxed);
    g->gs.parked_w = NULL;
    g->gs.heap_idx = SIZE_MAX;
    atomic_store_explicit(&g->kill_next, NULL, memory_order_relaxed);
    memset(&g->done, 0, sizeof g->done); /* a pooled stack's last record may have used it */
    atomic_store_explicit(&g->remote_joins, 0, memory_order_relaxed);
    atomic_store_explicit(&g->foreign_links, 0, memory_order_relaxed);
    memset(&g->joinq, 0, sizeof g->joinq);
    g->stack = st;
    /* A stack that ran green threads before is suspended in
     * conc__green_entry's loop: resume it there; a fresh one gets a frame.
     * (A kept record's gs.sp is where its last green thread left it, in
     * that loop; record_init stores the spawner's FP control words there.) */
    g->gs.sp = st.resume_sp ? st.resume_sp : conc__switch_frame(g, &g->gs);
    return g;
}

/* The slow parts of a spawn: options, a stack of another size, a hub to
 * make. Returns the record, or NULL with *rc set. */
static __attribute__((noinline)) conc_green_t *make_slow(conc__hub_t **hp, const conc_green_opts_t *opts, int *rc)
{
    size_t size = CONC__GREEN_STACK_DEFAULT;
    if (opts && opts->stack_size) {
        if (opts->stack_size < CONC__GREEN_STACK_MIN || opts->stack_size > ((size_t)1 << 40)) {
            *rc = CONC_EINVAL;
            return NULL;
        }
        size_t pg = (size_t)sysconf(_SC_PAGESIZE);
        size = (opts->stack_size + pg - 1) & ~(pg - 1);
    }
    *rc = CONC_ENOMEM;
    conc__hub_t *h = conc__hub_get();
    if (!h)
        return NULL;
    if (__builtin_expect(h->serial_next == h->serial_end, 0)) {
        h->serial_next = conc__serial_take(SERIAL_BLOCK);
        h->serial_end = h->serial_next + SERIAL_BLOCK; /* 0 if the block ends at UINT32_MAX */
    }
    *hp = h;
    conc_green_t *g = h->gfree;
    if (g && size == CONC__GREEN_STACK_DEFAULT) {
#ifdef CONC__ASAN
        ASAN_UNPOISON_MEMORY_REGION(g, sizeof *g); /* poisoned while kept */
#endif
        h->gfree = g->all_next;
        h->ngfree--;
        return g;
    }
    return fresh_record(h, size);
}

/* Set up record g (a kept one or fresh_record's) for a new green thread of
 * h: field by field (spawn is on the hot path), and only those a green
 * thread's run may have changed. What every end leaves as a new one needs
 * it — not parked (parked_w NULL, heap_idx SIZE_MAX), no joiner queued
 * (joinq empty), no link or unlink from another thread under way
 * (foreign_links 0), inbox_next / kill_next written before each use,
 * nointr back to 0, gs.sp where the stack's next green thread starts —
 * was set once by fresh_record. The failure message and the scope slots
 * need no clearing; `done` and remote_joins only if a remote join touched
 * them. The caller has a serial ready (h->serial_next != serial_end). No
 * calls: the usual spawn (conc_go) saves no registers. */
static inline __attribute__((always_inline)) void record_init(conc__hub_t *h, conc_green_t *g,
                                                             void *(*fn)(void *), void *arg, bool handle)
{
    g->ctx.fail_code = 0;
    g->ctx.fail_msg[0] = 0;
    g->ctx.thread = NULL; /* a dummy thread record, if it asked (conc__thread_self) */
    g->ctx.locals = NULL;
    g->ctx.scope_dl = 0;
    g->ctx.nscopes = 0;
    g->ctx.fired = 0;
    g->ctx.cut_scope = -1;
    g->ctx.trace_id = 0;
    g->ctx.trace_gen = 0;
    g->ctx.serial = h->serial_next++;
    g->ctx.blocked = 0;
    g->ctx.wait_kind = 0;
    g->ctx.lockdep = NULL;
    g->ctx.lbl_kind = 0;
    g->gs.interrupt = 0;
    g->gs.last_intr = 0;
    conc__switch_inherit_fp(g->gs.sp); /* it starts with its spawner's FP control words */
#ifdef CONC__ASAN
    g->gs.asan_fake = NULL;
#endif
    g->fn = fn;
    g->arg = arg;
    g->result = NULL;
    atomic_store_explicit(&g->status, G_NEW, memory_order_relaxed);
    atomic_store_explicit(&g->refs, handle ? 2 : 1, memory_order_relaxed);
    g->killed = false;
    atomic_store_explicit(&g->ran, false, memory_order_relaxed);
    g->detached = !handle;
    atomic_store_explicit(&g->kill_queued, false, memory_order_relaxed);
    if (__builtin_expect(atomic_load_explicit(&g->remote_joins, memory_order_relaxed) != 0, 0)) {
        memset(&g->done, 0, sizeof g->done); /* else `done` was never touched */
        atomic_store_explicit(&g->remote_joins, 0, memory_order_relaxed);
    }
    atomic_store_explicit(&g->links, NULL, memory_order_relaxed);
    g->pool = NULL;
    g->start_dl = 0;
    atomic_store_explicit(&g->name_state, 0, memory_order_relaxed); /* "Green-<n>" on demand */
    h->nalive++;
}

/* Put g on h's list of live ones (the dump's); the caller announced
 * itself (conc__hub_all_wlock). */
static inline __attribute__((always_inline)) void all_insert(conc__hub_t *h, conc_green_t *g)
{
    conc_green_t *first = h->all;
    g->all_prev = NULL;
    g->all_next = first;
    if (first)
        first->all_prev = g;
    h->all = g;
}

int conc__green_make(conc_green_t **out, const conc_green_opts_t *opts, void *(*fn)(void *), void *arg,
                     bool schedule);
int conc__green_make(conc_green_t **out, const conc_green_opts_t *opts, void *(*fn)(void *), void *arg,
                     bool schedule)
{
    if (!fn)
        return CONC_EINVAL;
    conc__hub_t *h;
    int rc;
    conc_green_t *g = make_slow(&h, opts, &rc);
    if (!g)
        return rc;
    record_init(h, g, fn, arg, out != NULL);
    g->unscheduled = !schedule;
    if (opts && opts->name) {
        strncpy(g->name, opts->name, sizeof g->name - 1);
        g->name[sizeof g->name - 1] = 0;
        atomic_store_explicit(&g->name_state, 2, memory_order_relaxed);
    }
    conc__hub_all_wlock(h);
    all_insert(h, g);
    conc__hub_all_wunlock(h);
    if (schedule)
        conc__hub_ready(h, &g->gs);
    else
        g->gs.next = g->gs.prev = NULL;
    if (conc__obs_on(CONC__OBS_TRACE))
        conc__trace_spawn(&g->ctx, opts && opts->name ? g->name : NULL);
    if (out)
        *out = g;
    return 0;
}

int conc_go_opts(conc_green_t **out, const conc_green_opts_t *opts, void *(*fn)(void *), void *arg)
{
    return conc__green_make(out, opts, fn, arg, true);
}

/* conc_go's end when a reader holds h->all (the dump): wait for it. */
static __attribute__((noinline)) int go_finish_slow(conc__hub_t *h, conc_green_t *g, conc_green_t **out)
{
    conc__hub_all_wlock_slow(h);
    all_insert(h, g);
    conc__hub_all_wunlock(h);
    conc__hub_ready(h, &g->gs);
    if (out)
        *out = g;
    return 0;
}

int conc_go(conc_green_t **out, void *(*fn)(void *), void *arg)
{
    /* The usual spawn, a leaf: this thread's hub attached (or attached
     * again: maybe_detach), a kept record (green_release) that sits on
     * its stack with the per-stack fields right, serials at hand, no
     * trace. Anything else: conc__green_make. */
    conc__hub_t *h = conc__tl_hub;
    conc__ctx_t *me = conc__cur;
    conc_green_t *g;
    if (__builtin_expect(!fn || !h || !me || !(g = h->gfree) || h->serial_next == h->serial_end ||
                             conc__obs_on(CONC__OBS_TRACE),
                         0))
        return conc__green_make(out, NULL, fn, arg, true);
#ifdef CONC__ASAN
    ASAN_UNPOISON_MEMORY_REGION(g, sizeof *g); /* poisoned while kept */
#endif
    if (__builtin_expect(me->ops == NULL, 0))
        conc__hub_attach(h, me);
    h->gfree = g->all_next;
    h->ngfree--;
    record_init(h, g, fn, arg, out != NULL);
    g->unscheduled = false;
    conc__store(&h->all_wbusy, 1u, RLX); /* conc__hub_all_wlock, its slow side out of line */
    conc__fence_light();
    if (__builtin_expect(conc__load(&h->all_guard, ACQ) != 0, 0))
        return go_finish_slow(h, g, out);
    all_insert(h, g);
    conc__hub_all_wunlock(h);
    conc__hub_ready(h, &g->gs);
    if (out)
        *out = g;
    return 0;
}

static void green_release_slow(conc__hub_t *h, conc_green_t *g);

/* The last reference to g went (h: the calling thread's hub): keep g for
 * h's next spawn, or give its stack back. */
static inline void green_release(conc__hub_t *h, conc_green_t *g)
{
    if (__builtin_expect(h == g->gs.hub && h->ngfree < GFREE_MAX &&
                         g->gs.stack_size == CONC__GREEN_STACK_DEFAULT, 1)) {
        /* Kept whole for this hub's next spawn (conc__green_make); its
         * gs.sp stays where its next green thread starts. */
        g->all_next = h->gfree;
        h->gfree = g;
        h->ngfree++;
#ifdef CONC__ASAN
        /* kept, not live: a reader that kept a pointer to it (the dump,
         * the deadlock detector) is reported as a use after free */
        ASAN_POISON_MEMORY_REGION(g, sizeof *g);
#endif
        return;
    }
    green_release_slow(h, g);
}

void conc__green_unref(conc_green_t *g)
{
    /* The last reference cannot gain company (taking one needs one), so
     * it goes without the atomic read-modify-write. */
    if (atomic_load_explicit(&g->refs, memory_order_acquire) != 1 &&
        atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) != 1)
        return;
    green_release(conc__tl_hub, g);
}

static __attribute__((noinline)) void green_release_slow(conc__hub_t *h, conc_green_t *g)
{
    conc__stack_t st = g->stack; /* g lives on it */
    st.resume_sp = g->gs.sp;      /* where its next green thread starts */
    bool own = h == g->gs.hub;
#ifdef CONC__ASAN
    /* g is freed: a reader that kept a pointer to it (the dump, the
     * deadlock detector) is reported as a use after free, not a silent
     * read of whichever green thread reuses the stack. */
    ASAN_POISON_MEMORY_REGION(g, sizeof *g);
#endif
    conc__stack_put(own ? h : NULL, &st);
}

/* d ended and its hub has switched off its stack: its "alive" reference
 * goes. While its handle is still held, the hub keeps that reference
 * pending instead (one green thread at a time): the handle's free on this
 * hub, the usual end of a join, then drops both at once with no atomic
 * read-modify-write (conc_green_free); the next ended one, or the
 * thread's exit, drops it otherwise. */
void conc__green_off_stack(conc__hub_t *h, conc_green_t *d)
{
    conc_green_t *p = h->dead_pending;
    if (p) {
        h->dead_pending = NULL;
        conc__green_unref(p);
    }
    if (atomic_load_explicit(&d->refs, memory_order_acquire) == 1) /* the last: recycled now */
        conc__green_unref(d);
    else
        h->dead_pending = d;
}

/* Run one link callback in the calling context (usually the ended green
 * thread itself, so the link sees its outcome). A callback that fails
 * (conc_fail) changes nothing — not g's outcome, not the caller's own
 * failure state — and is reported on stderr, as gevent's hub reports an
 * exception raised in a link (and conc a failing future callback). */
static void run_link(conc_green_t *g, void (*cb)(conc_green_t *g, void *arg), void *arg);
void conc__green_run_link(conc_green_t *g, const conc__link_t *l)
{
    bool ok = g->killed || g->ctx.fail_code == 0; /* successful(): a kill counts */
    if (l->kind == CONC__LINK_ANY || (l->kind == CONC__LINK_VALUE) == ok)
        run_link(g, l->cb, l->arg);
}

static void run_link(conc_green_t *g, void (*cb)(conc_green_t *g, void *arg), void *arg)
{
    conc__ctx_t *c = conc__ctx();
    int saved = c->fail_code;
    char saved_msg[sizeof c->fail_msg];
    memcpy(saved_msg, c->fail_msg, sizeof saved_msg);
    cb(g, arg);
    if (c->fail_code == saved && strcmp(c->fail_msg, saved_msg) == 0)
        return;
    if (c->fail_code)
        fprintf(stderr, "Exception in a link of green thread %s: %s%s%s\n", conc_green_name(g),
                conc_errname(c->fail_code), c->fail_msg[0] ? ": " : "", c->fail_msg);
    c->fail_code = saved;
    memcpy(c->fail_msg, saved_msg, sizeof saved_msg);
}

/* g's joinq holds joiners on g's own hub only (conc_green_join), and
 * every waker of such a waiter — g's end, the hub's timers, kills — runs
 * on that hub's thread: their state word needs no atomic exchange, and
 * the list no guard (park.h's protocol, without the cross-thread race);
 * conc_green_join pushes with conc__waitq_push and no guard. */

/* Wake every joiner of g, in join order (on g's hub). */
static __attribute__((noinline)) void wake_joiners(conc__hub_t *h, conc_green_t *g)
{
    conc__waiter_t *w = g->joinq.head;
    g->joinq.head = g->joinq.tail = NULL;
    bool traced = conc__obs_on(CONC__OBS_TRACE);
    while (w) {
        conc__waiter_t *n = w->next;
        w->queued = 0;
        w->next = w->prev = NULL;
        if (traced) {
            conc__unpark(w); /* the traced unpark (trace/) */
        } else {
            /* green_unpark (hub.c) on the waiter's own hub: whoever moves
             * it out of SLEEPING readies it, exactly once */
            uint32_t old = conc__load(&w->state, RLX);
            conc__store(&w->state, (uint32_t)CONC__W_NOTIFIED, RLX);
            if (old == CONC__W_SLEEPING)
                conc__hub_ready(h, w->ctx->green);
        }
        w = n;
    }
}

/* end_green's links closed while a link or unlink from another thread is
 * under way: against it, with a CAS. Returns the links to run. */
static __attribute__((noinline)) conc__link_t *close_links_slow(conc_green_t *g, conc__link_t *list)
{
    for (;;) {
        if (__builtin_expect(list == CONC__LINKS_BUSY, 0)) { /* an unlink edits it: it puts it back */
            sched_yield();
            list = atomic_load_explicit(&g->links, memory_order_acquire);
            continue;
        }
        if (atomic_compare_exchange_weak_explicit(&g->links, &list, CONC__LINKS_CLOSED, memory_order_acq_rel,
                                                  memory_order_acquire))
            return list;
    }
}

/* end_green's tail when g is in a pool, has links or a remote joiner:
 * the pool, the joiners, `done`, then the links, in that order. */
static __attribute__((noinline)) void end_tell_slow(conc__hub_t *h, conc_green_t *g, conc__link_t *list,
                                                    bool remote)
{
    if (g->pool)
        conc__green_pool_member_done(g);
    if (!conc__waitq_empty(&g->joinq))
        wake_joiners(h, g);
    if (remote)
        conc_event_set(&g->done);
    conc__link_t *rev = NULL; /* added newest first: run in link order */
    while (list) {
        conc__link_t *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    while (rev) {
        conc__link_t *n = rev->next;
        conc__green_run_link(g, rev);
        free(rev);
        rev = n;
    }
}

static __attribute__((noinline)) void end_trace(conc_green_t *g)
{
    conc__trace_end(&g->ctx);
}

/* wake_joiners for the usual joiner: alone, untraced. direct: g ends on
 * its own stack (conc__green_run) and switches away right after — with
 * nothing else ready, the joiner is handed to that switch (h->handoff)
 * instead of going through the ready queue (hub.c conc__green_entry). */
static inline __attribute__((always_inline)) void wake_one_joiner(conc__hub_t *h, conc_green_t *g, bool direct)
{
    conc__waiter_t *w = g->joinq.head;
    if (__builtin_expect(w->next != NULL || conc__obs_on(CONC__OBS_TRACE), 0)) {
        wake_joiners(h, g);
        return;
    }
    g->joinq.head = g->joinq.tail = NULL;
    w->queued = 0;
    w->prev = NULL;
    uint32_t old = conc__load(&w->state, RLX); /* green_unpark on its own hub (see wake_joiners) */
    conc__store(&w->state, (uint32_t)CONC__W_NOTIFIED, RLX);
    if (old == CONC__W_SLEEPING) {
        if (direct && !h->ready_head)
            h->handoff = w->ctx->green;
        else
            conc__hub_ready(h, w->ctx->green);
    }
}

/* Mark g ended and tell everyone: joiners, links, its pool. The rare
 * parts out of line (every green thread's end comes here). */
static inline __attribute__((always_inline)) void end_green_inline(conc_green_t *g, bool direct)
{
    conc__hub_t *h = g->gs.hub;
    if (conc__obs_on(CONC__OBS_TRACE))
        end_trace(g);
    h->nalive--;
    if (__builtin_expect(g->ctx.lockdep != NULL, 0))
        conc__lockdep_ctx_exit(&g->ctx);
    /* One light fence for two asymmetric guards (core/fence.h): after it
     * we look at h->all's readers (conc__hub_all_wlock: we announced
     * ourselves in all_wbusy), and at the other OS threads that link,
     * unlink or join g — they announce themselves, pass a heavy fence
     * (membarrier) and then look at the status; we wrote the status, pass
     * the light one and look at their counts: one of the two sees the
     * other. (A reader of h->all may see g DEAD there a moment before it
     * leaves the list: it only ever reads the record.) No link or unlink
     * from another thread under way: nobody else touches the links now
     * (one that comes later sees DEAD and keeps off), so they close with
     * plain stores; else with a CAS against them. A remote joiner that
     * began gets the `done` event. */
    atomic_store_explicit(&g->status, G_DEAD, memory_order_release);
    conc__store(&h->all_wbusy, 1u, RLX);
    conc__fence_light();
    if (__builtin_expect(conc__load(&h->all_guard, ACQ) != 0, 0))
        conc__hub_all_wlock_slow(h);
    conc_green_t *prev = g->all_prev, *next = g->all_next;
    if (prev)
        prev->all_next = next;
    else
        h->all = next;
    if (next)
        next->all_prev = prev;
    conc__hub_all_wunlock(h);
    bool foreign = atomic_load_explicit(&g->foreign_links, memory_order_acquire) != 0;
    bool remote = atomic_load_explicit(&g->remote_joins, memory_order_relaxed) != 0;
    conc__link_t *list = atomic_load_explicit(&g->links, memory_order_acquire);
    if (__builtin_expect(!foreign && list != CONC__LINKS_BUSY, 1))
        atomic_store_explicit(&g->links, CONC__LINKS_CLOSED, memory_order_release);
    else
        list = close_links_slow(g, list);
    if (__builtin_expect(g->pool || list || remote, 0))
        end_tell_slow(h, g, list, remote);
    else if (!conc__waitq_empty(&g->joinq))
        wake_one_joiner(h, g, direct);
}

static __attribute__((noinline)) void end_green(conc_green_t *g)
{
    end_green_inline(g, false);
}

/* g's own end, on its stack: it switches away next (conc__green_entry). */
static __attribute__((noinline)) void end_green_own(conc_green_t *g)
{
    end_green_inline(g, true);
}

/* Run g's function and end it; the caller then retires the stack. */
void conc__green_run(conc_green_t *g);
void conc__green_run(conc_green_t *g)
{
    atomic_store_explicit(&g->status, G_RUNNING, memory_order_relaxed);
    if (__builtin_expect(g->start_dl != 0, 0) && !g->killed) { /* start_later: wait out the delay (a kill ends it unrun) */
        conc__waiter_t w;
        conc__waiter_init(&w);
        w.spun = 1;
        w.kind = CONC__WAIT_SLEEP;
        if (conc__park(&w, g->start_dl) == CONC_EKILLED)
            g->killed = true;
    }
    if (!g->killed) { /* killed before it started: it never runs */
        atomic_store_explicit(&g->ran, true, memory_order_release);
        bool traced = g->pool && conc__obs_on(CONC__OBS_TRACE);
        if (traced)
            conc__trace_task(CONC__TASK_START, g->fn, g->arg);
        g->result = g->fn(g->arg);
        if (traced)
            conc__trace_task(CONC__TASK_FINISH, g->fn, g->arg);
    }
    if (g->gs.interrupt == CONC_EKILLED || g->gs.last_intr == CONC_EKILLED)
        g->killed = true;
    if (g->ctx.locals)
        conc__locals_ctx_exit(&g->ctx); /* destructors run on g, before joiners wake */
    /* Out of line, on purpose: with the end inline in this frame, the
     * frames of the green thread's function sat deeper on its stack and
     * green.switch (two green threads yielding, the same instructions)
     * took 9.0 ns instead of 7.3 on the reference machine — a stack
     * placement effect, measured, not understood further. */
    end_green_own(g);
    g->gs.hub->dead = g; /* its alive reference goes once we are off this stack */
}

void conc__green_do_kill(conc_green_t *g)
{
    int st = atomic_load_explicit(&g->status, memory_order_acquire);
    if (st == G_DEAD)
        return;
    g->killed = true;
    if (st == G_NEW) {
        if (g->unscheduled) { /* made, never started: it is on no queue */
            g->unscheduled = false;
            if (g->gs.hub->cur == &g->gs.hub->loop) {
                conc__hub_ready(g->gs.hub, &g->gs); /* ends on its own stack, unrun */
                return;
            }
            end_green(g);
            conc__green_unref(g);
            return;
        }
        if (g->gs.hub->cur == &g->gs.hub->loop)
            return; /* a remote kill, handled in the hub's loop: links may
                       block, so it ends on its own stack when its turn comes
                       (conc__green_run skips the function) */
        /* Never ran and never will: it ends now, off the ready queue, and
         * its alive reference goes (its stack holds no running frame). */
        conc__hub_unready(g->gs.hub, &g->gs);
        end_green(g);
        conc__green_unref(g);
        return;
    }
    conc__hub_interrupt(g->gs.hub, &g->gs, CONC_EKILLED);
}

/* ----------------------------------------------------------------- API */

conc_green_t *conc_green_current(void)
{
    conc__ctx_t *ctx = conc__cur;
    if (!ctx || !ctx->green)
        return NULL;
    conc__gs_t *gs = ctx->green;
    return gs->kind == GS_GREEN ? green_of(gs) : NULL;
}

static int join_park(conc_green_t *g, int64_t dl);

int conc_green_join(conc_green_t *g, double timeout)
{
    if (!g)
        return CONC_EINVAL;
    conc__ctx_t *me = conc__cur;
    if (&g->ctx == me) /* g == conc_green_current(), without the lookup */
        return CONC_EPERM;
    if (__builtin_expect(timeout == CONC_FOREVER, 1) && g->gs.hub == conc__tl_hub && me && me->ops) {
        /* The usual join: no deadline (no clock read), from g's own hub. */
        if (atomic_load_explicit(&g->status, memory_order_acquire) == G_DEAD)
            return 0;
        conc__gs_t *mgs = me->green;
        if (me->nscopes == 0 && !me->nointr && !mgs->interrupt &&
            !conc__obs_on(CONC__OBS_PARKS | CONC__OBS_DEADLOCK)) {
            /* conc__park's steps for this case, with the hub-local park
             * (hub.c): a plain list, no atomics */
            conc__waiter_t w = {.state = CONC__W_WAITING, .ctx = me, .obj = g, .kind = CONC__WAIT_GREEN_JOIN};
            conc__waitq_push(&g->joinq, &w);
            me->cut_scope = -1;
            conc__obs_block(me, g, CONC__WAIT_GREEN_JOIN, CONC__NO_DEADLINE);
            int rc = conc__hub_park_local(mgs, &w);
            conc__obs_unblock(me);
            if (__builtin_expect(rc != 0, 0) && w.queued) /* interrupted: g's end would have notified it (rc 0) */
                conc__waitq_remove(&g->joinq, &w);
            return rc;
        }
        return join_park(g, CONC__NO_DEADLINE);
    }
    int64_t dl = CONC__NO_DEADLINE; /* CONC_FOREVER, the usual join: no clock read */
    if (timeout != CONC_FOREVER && conc__deadline(timeout, &dl))
        return CONC_EINVAL;
    if (atomic_load_explicit(&g->status, memory_order_acquire) == G_DEAD)
        return 0;
    if (g->gs.hub != conc__tl_hub || conc__ctx()->ops == NULL) { /* from another OS thread */
        /* g's end sets `done` only if it sees this count (end_green) */
        atomic_fetch_add_explicit(&g->remote_joins, 1, memory_order_relaxed);
        conc__fence_heavy();
        if (atomic_load_explicit(&g->status, memory_order_acquire) == G_DEAD)
            return 0;
        return conc__deadlock_event_wait(&g->done, dl, g, CONC__WAIT_GREEN_JOIN);
    }
    /* A joiner on g's own hub: a plain list, no atomics (hub-local). A
     * wait whose time is already up is a pure poll: it never switches (so
     * a green thread that has not run yet is not run by it). */
    if (dl != CONC__NO_DEADLINE && dl <= conc__now_ns())
        return CONC_ETIMEDOUT;
    return join_park(g, dl);
}

/* A join on g's own hub through conc__park: a deadline, a timeout scope,
 * a pending interruption, nointr, or observation that wraps parks. */
static int join_park(conc_green_t *g, int64_t dl)
{
    for (;;) {
        conc__waiter_t w;
        conc__waiter_init(&w);
        w.obj = g;
        w.kind = CONC__WAIT_GREEN_JOIN;
        int64_t pdl = dl;
        if (conc__obs_on(CONC__OBS_DEADLOCK)) /* detection: park in slices */
            pdl = conc__deadlock_dl(conc__now_ns(), dl);
        conc__waitq_push(&g->joinq, &w);
        int rc = conc__park(&w, pdl);
        if (rc != 0) {
            if (w.queued) {
                conc__waitq_remove(&g->joinq, &w);
            } else {
                conc__park_settle(&w); /* g ended while our park was cut short */
                conc__park_rearm(&w);
                rc = 0;
            }
        }
        if (rc == CONC_ETIMEDOUT && pdl != dl && !conc__park_interrupted(rc)) {
            if ((rc = conc__deadlock_check(g, CONC__WAIT_GREEN_JOIN)) != 0)
                return rc;
            continue;
        }
        return rc;
    }
}

int conc_green_get(conc_green_t *g, double timeout, void **result)
{
    int rc = conc_green_join(g, timeout);
    if (rc)
        return rc;
    if (g->killed) {
        if (result)
            *result = NULL;
        return 0;
    }
    if (g->ctx.fail_code)
        return CONC_EFAILED; /* its own code and message: conc_green_exception */
    if (result)
        *result = g->result;
    return 0;
}

int conc_green_exception(const conc_green_t *g, const char **msg)
{
    if (!g)
        return CONC_EINVAL;
    if (atomic_load_explicit(&g->status, memory_order_acquire) != G_DEAD || g->killed || !g->ctx.fail_code) {
        if (msg)
            *msg = NULL;
        return 0;
    }
    if (msg)
        *msg = g->ctx.fail_msg;
    return g->ctx.fail_code;
}

int conc_green_kill(conc_green_t *g, bool block, double timeout)
{
    if (!g)
        return CONC_EINVAL;
    int64_t dl;
    if (block && conc__deadline(timeout, &dl))
        return CONC_EINVAL;
    if (g == conc_green_current()) {
        /* Killing yourself. gevent raises GreenletExit in the caller: with
         * block, this call delivers the kill — it returns CONC_EKILLED and
         * the kill is not delivered again; without block, the kill is
         * pending and the next blocking call returns CONC_EKILLED. Either
         * way g ends as killed once it returns. */
        conc__green_do_kill(g);
        if (!block)
            return 0;
        if (g->gs.interrupt == CONC_EKILLED)
            g->gs.interrupt = 0;
        return CONC_EKILLED;
    }
    if (atomic_load_explicit(&g->status, memory_order_acquire) != G_DEAD) {
        if (g->gs.hub == conc__tl_hub)
            conc__green_do_kill(g);
        else
            conc__hub_kill_remote(g->gs.hub, g);
    }
    if (!block)
        return 0;
    return conc_green_join(g, timeout);
}

int conc_green_free(conc_green_t *g)
{
    if (!g || g->detached)
        return CONC_EINVAL;
    conc__hub_t *h = conc__tl_hub;
    if (h && h->dead_pending == g) {
        /* Its hub kept its alive reference (conc__green_off_stack): both
         * go now. Nothing else may change refs meanwhile — a remote kill
         * takes one only from a live g; a pending kill's is dropped by
         * this thread — so 2 means these two are the last. */
        h->dead_pending = NULL;
        if (atomic_load_explicit(&g->refs, memory_order_acquire) == 2) {
            green_release(h, g);
            return 0;
        }
        g->detached = true;
        conc__green_unref(g); /* pending kills hold it too */
        conc__green_unref(g);
        return 0;
    }
    if (g->unscheduled) { /* never started: it never will (as gevent drops it) */
        if (g->gs.hub == conc__tl_hub)
            conc__green_do_kill(g);
        else
            conc__hub_kill_remote(g->gs.hub, g);
    }
    g->detached = true;
    conc__green_unref(g);
    return 0;
}

bool conc_green_dead(const conc_green_t *g)
{
    return g && atomic_load_explicit(&g->status, memory_order_acquire) == G_DEAD;
}

bool conc_green_started(const conc_green_t *g)
{
    return g && atomic_load_explicit(&g->ran, memory_order_acquire);
}

bool conc_green_successful(const conc_green_t *g)
{
    return conc_green_dead(g) && (g->killed || g->ctx.fail_code == 0);
}

bool conc_green_killed(const conc_green_t *g)
{
    return conc_green_dead(g) && g->killed;
}

const char *conc_green_name(const conc_green_t *g)
{
    if (!g)
        return NULL;
    /* Default names are made when first asked for (spawn is hot): one
     * caller writes it, concurrent ones wait for it. */
    conc_green_t *m = (conc_green_t *)g;
    int st = atomic_load_explicit(&m->name_state, memory_order_acquire);
    if (st == 0 && atomic_compare_exchange_strong_explicit(&m->name_state, &st, 1, memory_order_acq_rel,
                                                           memory_order_acquire)) {
        default_name(m->name, atomic_fetch_add_explicit(&green_ids, 1, memory_order_relaxed) + 1);
        atomic_store_explicit(&m->name_state, 2, memory_order_release);
        return g->name;
    }
    while (atomic_load_explicit(&m->name_state, memory_order_acquire) != 2)
        sched_yield();
    return g->name;
}

int conc_green_joinall(conc_green_t *const *gs, size_t n, double timeout)
{
    int64_t dl;
    if ((!gs && n) || conc__deadline(timeout, &dl))
        return CONC_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (!gs[i])
            continue;
        double left = CONC_FOREVER;
        if (dl != CONC__NO_DEADLINE) {
            int64_t ns = dl - conc__now_ns();
            left = ns > 0 ? (double)ns / 1e9 : 0;
        }
        int rc = conc_green_join(gs[i], left);
        if (rc)
            return rc;
    }
    return 0;
}

int conc__green_link_kind(conc_green_t *g, void (*cb)(conc_green_t *g, void *arg), void *arg, int kind);
int conc__green_link_kind(conc_green_t *g, void (*cb)(conc_green_t *g, void *arg), void *arg, int kind)
{
    if (!g || !cb)
        return CONC_EINVAL;
    conc__link_t *l = malloc(sizeof *l);
    if (!l)
        return CONC_ENOMEM;
    l->cb = cb;
    l->arg = arg;
    l->kind = kind;
    bool foreign = g->gs.hub != conc__tl_hub;
    if (foreign && !conc__links_foreign_enter(g)) {
        /* ended: its end closes the links (or did) and runs those it had */
        while (atomic_load_explicit(&g->links, memory_order_acquire) != CONC__LINKS_CLOSED)
            sched_yield();
        conc__green_run_link(g, l);
        free(l);
        return 0;
    }
    conc__link_t *head = atomic_load_explicit(&g->links, memory_order_acquire);
    do {
        while (head == CONC__LINKS_BUSY) { /* an unlink edits the list */
            sched_yield();
            head = atomic_load_explicit(&g->links, memory_order_acquire);
        }
        if (head == CONC__LINKS_CLOSED) { /* already ended */
            if (foreign)
                conc__links_foreign_leave(g);
            conc__green_run_link(g, l);
            free(l);
            return 0;
        }
        l->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&g->links, &head, l, memory_order_acq_rel,
                                                    memory_order_acquire));
    if (foreign)
        conc__links_foreign_leave(g);
    return 0;
}

bool conc__links_foreign_enter(conc_green_t *g)
{
    atomic_fetch_add_explicit(&g->foreign_links, 1, memory_order_relaxed);
    conc__fence_heavy(); /* against end_green's light fence */
    if (atomic_load_explicit(&g->status, memory_order_acquire) != G_DEAD)
        return true;
    conc__links_foreign_leave(g);
    return false;
}

void conc__links_foreign_leave(conc_green_t *g)
{
    atomic_fetch_sub_explicit(&g->foreign_links, 1, memory_order_release);
}

int conc_green_link(conc_green_t *g, void (*cb)(conc_green_t *g, void *arg), void *arg)
{
    return conc__green_link_kind(g, cb, arg, CONC__LINK_ANY);
}

/* ------------------------------------------------------ sleep and yield */

/* conc_yield: hub.c (its fast path switches inline). */

int conc_sleep(double seconds)
{
    int64_t dl;
    if (conc__deadline(seconds, &dl))
        return CONC_EINVAL;
    conc__ctx_t *ctx = conc__ctx();
    if (seconds <= 0) /* gevent.sleep(-1) is sleep(0): a yield */
        return conc_yield();
    if (!ctx->ops && ctx->scope_dl == 0) {
        if (conc__obs_on(CONC__OBS_TRACE))
            return conc__trace_sleep(seconds, conc_sleep_thread);
        return conc_sleep_thread(seconds);
    }
    conc__waiter_t w;
    conc__waiter_init(&w);
    w.spun = 1;
    w.kind = CONC__WAIT_SLEEP;
    int rc = conc__park(&w, dl);
    if (rc == CONC_ETIMEDOUT && !conc__park_interrupted(rc))
        return 0;
    return rc;
}

/* ------------------------------------------------------------- offload */

static conc_executor_t *offload_pool;
static pthread_once_t offload_once = PTHREAD_ONCE_INIT;

static void offload_init(void)
{
    conc_thread_pool_opts_t o = {0};
    o.thread_name_prefix = "conc-offload";
    if (conc_thread_pool_new(&offload_pool, &o) != 0)
        offload_pool = NULL;
}

int conc_green_offload(void *(*fn)(void *), void *arg, void **result)
{
    if (!fn)
        return CONC_EINVAL;
    pthread_once(&offload_once, offload_init);
    if (!offload_pool)
        return CONC_ENOMEM;
    conc_future_t *f;
    int rc = conc_submit(offload_pool, &f, fn, arg);
    if (rc)
        return rc;
    void *r = NULL;
    rc = conc_future_result(f, CONC_FOREVER, &r);
    if (rc != 0 && rc != CONC_EKILLED && rc != CONC_ETIMEDOUT && rc != CONC_ELOOPEXIT) {
        int code = 0;
        if (conc_future_exception(f, 0, &code, NULL) == 0 && code != 0)
            rc = CONC_EFAILED; /* fn failed (outcomes rule: conc/base.h) */
    }
    conc_future_free(f);
    if (rc == 0 && result)
        *result = r;
    return rc;
}

/* os's hub context, read from another thread (published with release by
 * conc__hub_get; a hub's record is never freed; a stale one is walked
 * under its guard). */
static conc__gs_t *conc__racy_green(conc__ctx_t *os)
{
    return __atomic_load_n(&os->green, __ATOMIC_ACQUIRE);
}

/* A reader holds h->all (internal.h): step back so it can finish, wait,
 * then announce again, with a full fence this time. */
void conc__hub_all_wlock_slow(conc__hub_t *h)
{
    for (;;) {
        conc__store(&h->all_wbusy, 0u, REL);
        while (conc__load(&h->all_guard, ACQ))
            conc__cpu_relax();
        conc__store(&h->all_wbusy, 1u, RLX);
        conc__fence_full();
        if (!conc__load(&h->all_guard, ACQ))
            return;
    }
}

/* The registry's walk of a hub's green threads (core/registry.c): the
 * live ones of the hub that OS context os runs, under the list's guard. */
static void green_walk(conc__ctx_t *os, bool (*fn)(conc__ctx_t *, void *), void *arg)
{
    conc__gs_t *gs = conc__racy_green(os);
    if (!gs)
        return;
    conc__hub_t *h = gs->hub;
    bool held = h == conc__hub_all_held; /* the caller holds the guard already */
    if (!held)
        conc__hub_all_lock(h);
    for (conc_green_t *g = h->all; g; g = g->all_next)
        if (!fn(&g->ctx, arg))
            break;
    if (!held)
        conc__hub_all_unlock(h);
}

__thread conc__hub_t *conc__hub_all_held;

/* The OS context that runs green context c's hub (registry.c, in a child
 * forked from a green thread: only c's own thread calls it). */
static conc__ctx_t *green_os(conc__ctx_t *c)
{
    conc__gs_t *gs = c->green;
    conc__hub_t *h = gs ? gs->hub : NULL;
    if (!h)
        return NULL;
    return h->main.ctx ? h->main.ctx : h->os_ctx;
}

__attribute__((constructor)) static void green_walk_init(void)
{
    conc__reg_green_walk = green_walk;
    conc__reg_green_os = green_os;
}
