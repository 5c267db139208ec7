/*
 * park.h — the one layer under every blocking call in conc (private).
 *
 * A blocking primitive (Lock, Event, Queue...) keeps a wait list
 * (conc__waitq_t, a doubly linked list of conc__waiter_t guarded by a tiny
 * spin lock). To block, a context puts a waiter on the list, drops the
 * guard and calls conc__park(). Whoever satisfies it takes the waiter off
 * the list under the guard, then — after dropping the guard — calls
 * conc__unpark(). Invariants:
 *   - a waiter is on at most one list; w->queued says whether it is, and is
 *     only read or written under that list's guard;
 *   - conc__unpark() is called exactly once per dequeue, never under a
 *     guard, and is the last access to the waiter by the waker (the waiter
 *     lives on the parked context's stack and may vanish right after);
 *   - when conc__park() times out, the waiter takes the guard: if still
 *     queued it removes itself (a real timeout); if not, a waker dequeued it
 *     and its unpark is imminent, so it waits for that (conc__park_settle)
 *     and treats the wait as satisfied.
 *
 * Two kinds of contexts park: OS threads (an adaptive bounded spin on the
 * waiter's state word, then a futex sleep) and — later — green threads,
 * which switch to their hub. The kind is found through the context's ops
 * table, so primitives never know which kind they serve.
 */
#ifndef CONC_CORE_PARK_H
#define CONC_CORE_PARK_H

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "conc/sync.h"
#include "core/observe.h"
#include "core/time.h"

#if defined(__x86_64__) || defined(__i386__)
#define conc__cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define conc__cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define conc__cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif

#define CONC__A(p) ((_Atomic __typeof__(*(p)) *)(p))
#define conc__load(p, mo) atomic_load_explicit(CONC__A(p), mo)
#define conc__store(p, v, mo) atomic_store_explicit(CONC__A(p), v, mo)
#define conc__cas(p, exp, des) \
    atomic_compare_exchange_weak_explicit(CONC__A(p), exp, des, memory_order_acq_rel, memory_order_relaxed)
#define RLX memory_order_relaxed
#define ACQ memory_order_acquire
#define REL memory_order_release

struct conc__waiter;
struct conc__fdop;

/* How one kind of context blocks and is woken. */
typedef struct conc__park_ops {
    /* Block until unparked or the deadline; 0 or CONC_ETIMEDOUT. */
    int (*park)(struct conc__waiter *w, int64_t deadline);
    /* Wake a parked (or about to park) waiter. */
    void (*unpark)(struct conc__waiter *w);
    const char *kind;
    /* The wait in w was cut short (kill, timeout scope) but turned out
     * satisfied: deliver the interruption at the next blocking point. */
    void (*rearm)(struct conc__waiter *w);
    /* conc__fd_wait for this kind (NULL: poll). */
    int (*fd_wait)(int fd, int events, int64_t deadline);
    void (*fd_forget)(int fd);
    bool (*fd_maybe_ready)(int fd, int events);
    void (*fd_short)(int fd, int events);
    /* conc__fd_op (core/fdwait.h) for this kind (NULL: CONC_ENOTSUP). */
    ssize_t (*fd_op)(const struct conc__fdop *op, int64_t deadline);
    /* conc__fd_io (core/fdwait.h) for this kind (NULL: CONC__FD_IO_SLOW). */
    ssize_t (*fd_io)(int fd, bool wr, void *buf, size_t n, int flags, int64_t deadline);
} conc__park_ops_t;

#define CONC__MAX_SCOPES 8

/* An execution context: an OS thread now, a green thread later. */
typedef struct conc__ctx {
    const conc__park_ops_t *ops; /* NULL: OS thread */
    int fail_code;
    char fail_msg[256];
    uint32_t spin_ns;            /* adaptive spin budget before sleeping */
    uint32_t spin_skips;         /* waits since the budget fell to 0 */
    uint8_t spin_shared;         /* next park sleeps without yielding (park.c) */
    uint8_t spin_woke;           /* woke a sleeper since its last spin */
    uint8_t spin_alone;          /* its last yields ran no other thread */
    uint8_t spin_shared_n;       /* waits answered by a thread on its own CPU, mod 256 */
    void *thread;                /* the conc_thread_t for OS threads, if known */
    void *green;                 /* scheduling state when a hub runs this context */
    void *locals;                /* a green thread's local values (thread/local.c) */
    uint8_t is_green;            /* a green thread (not an OS thread's own context) */
    int64_t scope_dl;            /* earliest unfired timeout scope; 0 = none */
    int64_t scopes[CONC__MAX_SCOPES]; /* open timeout scopes, innermost last */
    uint8_t nscopes;
    uint8_t fired;               /* bit i: scope i fired */
    int8_t cut_scope;            /* the scope the last park fired, or -1 */
    uint8_t nointr;              /* > 0: parks are not cut short (conc's own lock holds) */
    uint8_t scope_reported;      /* debug: bit i: scope i was reported as leaked */
    uintptr_t scope_cfa[CONC__MAX_SCOPES]; /* debug: where each scope's opener sits (scope_debug.c) */
    void *scope_fn[CONC__MAX_SCOPES];      /* debug: the function that opened it */
    uint32_t trace_id;           /* its track in traces (src/trace), 0 until first traced */
    uint32_t trace_gen;          /* the trace that last named that track */
    uint32_t scope_id[CONC__MAX_SCOPES];   /* a conc_timeout_t's id; 0: a begin/end scope */
    int scope_code[CONC__MAX_SCOPES];      /* what a cut by it returns; 0: CONC_ETIMEDOUT */
    /* Observability (core/registry.c, dump.c, lockdep.c, deadlock.c). The
     * wait_* copy of the waiter's obj/kind is written by conc__park for
     * the time of each park (blocked = 1), so other threads read only
     * this context, never the waiter on its stack. */
    struct conc__ctx *reg_next, *reg_prev; /* OS-thread contexts: the registry */
    uint32_t serial;             /* unique, nonzero (a Lock's last acquirer) */
    uint8_t blocked;             /* atomic: parked now */
    uint8_t wait_kind;           /* atomic: enum conc__wait_kind */
    uint8_t registered;          /* on the registry's list (OS threads) */
    const void *wait_obj;        /* atomic */
    int64_t wait_since;          /* atomic: conc__obs_tick() */
    int64_t wait_deadline;       /* atomic */
    unsigned long pt;            /* OS threads: pthread_self() */
    long tid;                    /* OS threads: gettid() */
    void *lockdep;               /* held-lock stack (lockdep.c), made on first use */
    const void *lbl_obj;         /* conc__wait_label: replaces the waiter's obj/kind */
    uint8_t lbl_kind;
} conc__ctx_t;

/* Debug check of timeout scopes that outlive their function
 * (scope_debug.c): on without NDEBUG or with CONC_DEBUG=1. note: called
 * by conc_timeout_begin for scope i; check: at a park with scopes open. */
bool conc__scope_debug_on(void);
__attribute__((noinline)) void conc__scope_note(conc__ctx_t *ctx, int i);
void conc__scope_check(conc__ctx_t *ctx);

enum { CONC__W_WAITING = 0, CONC__W_NOTIFIED = 1, CONC__W_SLEEPING = 2 };

typedef struct conc__waiter {
    uint32_t state;             /* CONC__W_* (atomic) */
    uint32_t queued;            /* under the list's guard */
    struct conc__waiter *next, *prev;
    conc__ctx_t *ctx;
    uintptr_t data;             /* primitive-specific payload */
    uint32_t spun;              /* the primitive already spun: sleep at once */
    struct conc__waiter *group; /* select: unpark this one instead (see below) */
    const void *obj;            /* what it waits on (observe.h), for dumps and */
    uint8_t kind;               /* the deadlock detector: enum conc__wait_kind */
} conc__waiter_t;

/*
 * Waiting on several lists at once (select): put one "node" waiter on each
 * list, all with group = &g, and park on g. conc__unpark(node) unparks g,
 * then marks the node NOTIFIED as its very last access. Before the nodes
 * go away, the selecting context removes each node still queued and, for
 * each one a waker took, waits until it is marked (conc__node_settle), so
 * no waker touches g or a node after the select returns. Unparking g more
 * than once per park must be harmless for every kind of context.
 */
static inline void conc__node_settle(conc__waiter_t *node)
{
    unsigned n = 0;
    while (conc__load(&node->state, ACQ) != CONC__W_NOTIFIED) {
        if (++n < 128)
            conc__cpu_relax();
        else
            sched_yield();
    }
}

/* The calling context (never NULL). Inline: it sits on every RLock op. */
extern __thread conc__ctx_t *conc__cur __attribute__((tls_model("initial-exec")));
conc__ctx_t *conc__ctx_slow(void);
static inline conc__ctx_t *conc__ctx(void)
{
    conc__ctx_t *c = conc__cur;
    return __builtin_expect(c != NULL, 1) ? c : conc__ctx_slow();
}
/* Reset ctx to a fresh OS-thread context / make it the calling thread's
 * current one (NULL: back to the thread's own, created on demand). */
void conc__ctx_init(conc__ctx_t *ctx);
void conc__ctx_bind(conc__ctx_t *ctx);
/* A unique id of the calling context, nonzero (RLock owners). */
static inline uintptr_t conc__ctx_id(void) { return (uintptr_t)conc__ctx(); }

/* Prepare w for a wait by the calling context. */
static inline void conc__waiter_init(conc__waiter_t *w)
{
    w->state = CONC__W_WAITING;
    w->queued = 0;
    w->next = w->prev = 0;
    w->ctx = conc__ctx();
    w->data = 0;
    w->spun = 0;
    w->group = 0;
    w->obj = 0;
    w->kind = 0;
}

/* Mark ctx blocked on obj (kind) until unblock: conc__park does it; waits
 * that do not park (an OS thread's sleep, futex or poll) call it around
 * their wait, so the dump and the deadlock detector see them. "Since
 * when" costs a read of the CPU's counter: only while some observation
 * is on (a dump was asked for or can be, by a signal; tracing, stats,
 * profiles, lock debugging); else 0, "not known" (the dump leaves the
 * "for 2.1 s" out). With everything off a park only stores. */
static inline void conc__obs_block(conc__ctx_t *ctx, const void *obj, int kind, int64_t deadline)
{
#ifndef CONC_NO_OBSERVE
    if (ctx->lbl_kind) {
        obj = ctx->lbl_obj;
        kind = ctx->lbl_kind;
    }
    conc__store(&ctx->wait_obj, obj, RLX);
    conc__store(&ctx->wait_kind, (uint8_t)kind, RLX);
    conc__store(&ctx->wait_deadline, deadline, RLX);
    int64_t since = __atomic_load_n(&conc__obs_flags, __ATOMIC_RELAXED) ? conc__obs_tick() : 0;
    conc__store(&ctx->wait_since, since, RLX);
    conc__store(&ctx->blocked, (uint8_t)1, REL);
#else
    (void)ctx, (void)obj, (void)kind, (void)deadline;
#endif
}
static inline void conc__obs_unblock(conc__ctx_t *ctx)
{
#ifndef CONC_NO_OBSERVE
    conc__store(&ctx->blocked, (uint8_t)0, RLX);
#else
    (void)ctx;
#endif
}

/* Block until unparked (0) or the deadline (CONC_ETIMEDOUT); green
 * contexts may also return an interruption (CONC_EKILLED,
 * CONC_ELOOPEXIT), and an open timeout scope may end the wait early with
 * CONC_ETIMEDOUT. Callers treat any nonzero result as "stop waiting":
 * dequeue, then return that code (or, when it turns out the wait was
 * satisfied after all, succeed and call conc__park_rearm). */
int conc__park(conc__waiter_t *w, int64_t deadline);
/* True when rc, just returned by a park of the calling context (before
 * any other park), means "interrupted": a kill, a LoopExit or a timeout
 * scope — not the wait's own deadline. */
static inline bool conc__park_interrupted(int rc)
{
    return rc != 0 && (rc != CONC_ETIMEDOUT || conc__ctx()->cut_scope >= 0);
}
/* See conc__park: the interruption that ended the last park is not lost. */
void conc__park_rearm(conc__waiter_t *w);

/* Timeout scopes: the deadline a wait of ctx really has (its own or the
 * earliest open scope's), and what to return once that passed: marks the
 * scope fired when it was the scope's; CONC_ETIMEDOUT either way. */
static inline int64_t conc__park_deadline(const conc__ctx_t *ctx, int64_t deadline)
{
    int64_t s = ctx->scope_dl;
    return (s && s < deadline) ? s : deadline;
}
int conc__park_cut(conc__ctx_t *ctx, int64_t deadline);
/* Timeout objects (timeout_obj.c): open a scope with an id and a code at
 * the top; find one by id (-1: gone); remove slot i wherever it sits
 * (returns whether it had fired). */
int conc__scope_push(conc__ctx_t *ctx, int64_t dl, uint32_t id, int code);
int conc__scope_find(const conc__ctx_t *ctx, uint32_t id);
int conc__scope_remove(conc__ctx_t *ctx, int i);
/* After a timed-out park found w already dequeued: wait for the imminent
 * unpark, so the waker's last touch happens before w's memory goes. */
void conc__park_settle(conc__waiter_t *w);
/* Wake w (exactly once per dequeue, never under a guard). */
void conc__unpark(conc__waiter_t *w);

/* Bounded adaptive spinning before a sleep:
 *     conc__spinner_t sp; conc__spin_begin(&sp, deadline);
 *     while (!ready) { if (!conc__spin_more(&sp)) break; }
 *     conc__spin_end(&sp, ready);
 * The budget (ns) is per context: it grows when spinning paid off and
 * shrinks when the wait ended in a sleep anyway, within fixed bounds, so
 * short waits never pay a futex round trip and long ones burn little CPU.
 * On a single CPU it does not spin at all. */
typedef struct conc__spinner {
    conc__ctx_t *ctx;
    int64_t end;      /* stop spinning at this time */
    int64_t start;
    unsigned n;
    bool boosted;     /* a longer spin after waking a sleeper (park.c) */
} conc__spinner_t;
void conc__spin_begin(conc__spinner_t *sp, int64_t deadline);
static inline bool conc__spin_more(conc__spinner_t *sp)
{
    if (sp->end == 0)
        return false; /* no budget */
    conc__cpu_relax();
    if ((++sp->n & 7) != 0)
        return true;
    return conc__now_ns() < sp->end;
}
void conc__spin_end(conc__spinner_t *sp, bool success);

/* The whole pattern: spin until ready(arg) holds (true) or the budget or
 * the deadline runs out (false). Inlined, so ready is too. */
static inline bool conc__spin_until(bool (*ready)(void *), void *arg, int64_t deadline)
{
    conc__spinner_t sp;
    conc__spin_begin(&sp, deadline);
    bool ok = false;
    while (conc__spin_more(&sp))
        if ((ok = ready(arg)))
            break;
    conc__spin_end(&sp, ok);
    return ok;
}

/* Fork safety of internal spin locks (the wait lists' guards, the queue
 * stores' locks). A raw fork() from a threaded program copies a guard that
 * another thread held at that moment; that thread does not exist in the
 * child, so the guard would never be released and the next call in the
 * child would spin forever, whatever its timeout. So a holder stamps the
 * guard with the fork generation it took it in (conc__fork_gen, bumped in
 * every forked child before any other conc atfork handler runs; the
 * thread that forks holds no guard, they are never held across a call
 * out). A waiter that finds a stamp of an older generation takes the
 * guard over. In the parent the generation never changes, so this costs
 * one load on the way in. What the dead holder was doing under the guard
 * is lost (a waiter it was queueing may stay on the list as a ghost: the
 * next wake may go to it, which only matters to waits without a timeout —
 * as after any fork of a threaded program, the child should exec or use
 * conc with timeouts). */
extern unsigned conc__fork_gen;
/* A fork in this memory's history left threads behind (it was made while
 * other threads ran): only then can something be stuck since the fork. */
extern bool conc__fork_orphans;
static inline unsigned conc__guard_stamp(void)
{
    return ((conc__load(&conc__fork_gen, RLX) & 0x7fffffffu) << 1) | 1u;
}
/* v (nonzero) was stamped in an older generation than mine. */
static inline bool conc__guard_stale(unsigned v, unsigned mine) { return v && v != mine && (v & 1u); }

/* Wait-list operations; everything but lock/unlock needs the guard held. */
void conc__waitq_lock(conc__waitq_t *q);
static inline void conc__waitq_unlock(conc__waitq_t *q) { conc__store(&q->guard, 0u, REL); }
/* At the tail (the caller holds the list's guard, or owns the list alone:
 * green.c's hub-local join list). Inline: queue.c's wait path and the join
 * take it on their fast paths. */
static inline void conc__waitq_push(conc__waitq_t *q, conc__waiter_t *w)
{
    w->next = NULL;
    w->prev = q->tail;
    if (q->tail)
        q->tail->next = w;
    else
        q->head = w;
    q->tail = w;
    w->queued = 1;
}
void conc__waitq_push_front(conc__waitq_t *q, conc__waiter_t *w);
void conc__waitq_remove(conc__waitq_t *q, conc__waiter_t *w);
conc__waiter_t *conc__waitq_pop(conc__waitq_t *q);                 /* head or NULL */
static inline bool conc__waitq_empty(const conc__waitq_t *q) { return q->head == 0; }

/* Unpark every waiter in a list detached with conc__waitq_take_all. */
conc__waiter_t *conc__waitq_take_all(conc__waitq_t *q);
void conc__unpark_list(conc__waiter_t *list);

/* A ready-made wait: w must be queued on q by the caller (guard dropped).
 * Parks until unparked or the deadline; on timeout removes w if still
 * queued (returns CONC_ETIMEDOUT, with on_timeout_locked(q, arg) called
 * under the guard after the removal, if given), else settles and
 * returns 0. */
int conc__wait_queued(conc__waitq_t *q, conc__waiter_t *w, int64_t deadline,
                      void (*on_timeout_locked)(conc__waitq_t *q, void *arg), void *arg);

/* OS threads that could wake a parked context from outside its own
 * thread, as far as conc knows: the threads conc started (counted from
 * start until they end), threads that have a conc context (they used
 * conc), and helper threads registered with conc__wakers_add by the code
 * that starts them. A thread conc never saw (a sanitizer's, a library's)
 * is not counted: it cannot hold a conc waiter. LoopExit (green/hub.c)
 * reads it; conc__wakers_reset is for fork children. */
void conc__wakers_add(long delta);
long conc__wakers(void);
void conc__wakers_reset(long n);

/* True when more than one CPU is online: spinning is worth it. */
bool conc__smp(void);

/* Hub-local wakes (green/hub.c; used by queue.c's direct hand-off). A
 * waker on the OS thread that runs a hub may wake a green context of that
 * same hub (one that is not the caller) without the atomic protocol: the
 * parked context cannot run until this thread switches to it, and
 * everything else that may resume it (its timer, a kill) runs on this
 * thread too. conc__tl_hub is the calling thread's hub (NULL: none);
 * conc__local_hub() the hub that schedules the calling context (NULL: a
 * plain OS-thread context). A waiter records the latter when it waits; a
 * waker that finds it equal to its own conc__tl_hub, with w->ctx not its
 * own context, may call conc__unpark_local(w) (under the rules of
 * conc__unpark: exactly once per dequeue, after dropping the guard). */
struct conc__hub;
extern __thread struct conc__hub *conc__tl_hub __attribute__((tls_model("initial-exec")));
static inline struct conc__hub *conc__local_hub(void)
{
    return conc__ctx()->ops ? conc__tl_hub : 0;
}
void conc__unpark_local(conc__waiter_t *w);
/* A green context about to queue w (guard held, its last re-check done)
 * may mark it asleep already: its park then skips the atomic WAITING ->
 * SLEEPING step. false (nothing done): not a green context, or its park
 * would return at once (a pending interruption). After true the caller
 * must queue w and call conc__park(w, ...) next — no other park, no
 * switch in between: a waker may move it out of SLEEPING from then on,
 * and whoever does so resumes it. */
#define CONC__SPUN_ASLEEP 2u /* w->spun: marked by conc__park_presleep */
/* w->spun: an OS thread sleeps at once, without the yields (a Lock's
 * queued waiters: woken only when their turn comes, see sync/lock.c). */
#define CONC__SPUN_SLEEP 3u
bool conc__park_presleep(conc__waiter_t *w);
/* For conc's own waits on another OS thread that are not parks (a queue
 * ring's revoker waiting for the side's owner to finish its operation):
 * on a green context (not the hub's loop), switch to the other ready
 * green threads of its hub and come back, leaving any interruption that
 * arrives meanwhile (a kill, a Timeout scope) pending for the caller's
 * next blocking call; returns true. On an OS-thread context (or the
 * loop's) it does nothing and returns false (the caller may
 * sched_yield). Never call it holding a guard or lock that another green
 * thread of the hub may take (green/hub.c). */
bool conc__hub_pause(void);

#endif
