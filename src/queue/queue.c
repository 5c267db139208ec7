/*
 * queue.c — conc_queue_t: Python's Queue, LifoQueue, PriorityQueue and
 * SimpleQueue over one of three stores (container.h), with blocking,
 * task accounting and shutdown.
 *
 * Blocking: a getter that finds the store empty spins briefly (adaptive),
 * then queues a waiter on getq, bumps gsleep (seq_cst RMW), re-checks the
 * store and parks. A putter, after its store operation (a seq_cst RMW),
 * reads gsleep and wakes one getter only if it is non-zero — so an
 * uncontended put or get never touches a wait list or makes a syscall.
 * Putters on a full bounded queue sleep the same way on putq/psleep
 * (their spin on a full ring waits for a batch of free cells: put_general).
 * A woken waiter retries: whoever gets there first takes the item, and
 * a waiter that loses simply waits again.
 *
 * Hub-local hand-off: a green getter records its hub in its waiter
 * (qwaiter_t). A put by a context of that same OS thread's hub that finds
 * such a getter first in line, the store empty and open, gives it the
 * item straight away under getq's guard (put and get take effect at that
 * instant: the queue was empty, so FIFO order holds) and makes it ready
 * with conc__unpark_local, without touching the store and without atomic
 * read-modify-writes beyond the guard. A getter dequeued so is satisfied
 * whatever happens to it before it runs (a kill, its timer, a Timeout
 * scope): its park returns 0 or, if cut, finds itself dequeued and
 * settles (park.h), and the get returns the item; the interruption stays
 * pending for the next blocking call — nothing is lost or duplicated.
 * Peekers, select nodes, OS threads and green threads of other hubs are
 * never handed to (they take the ordinary path), nor are SimpleQueues
 * (their reentrant put). Handed items count as puts for task_done/join
 * (`handoffs`, written under getq's guard).
 *
 * Tasks: unfinished = puts - dones, where puts is the store's own put
 * counter (no extra atomic on put) plus the hand-offs (below), and dones
 * counts task_done calls.
 * Joiners sleep on joinq/jsleep and are woken when dones catches up.
 *
 * Shutdown sets a flag, then wakes every getter and putter (and joiners);
 * each re-checks: putters fail with CONC_ESHUTDOWN, getters drain what is
 * left, then fail with CONC_ESHUTDOWN.
 *
 * SimpleQueue.put is reentrant (Python's is): a put marks the thread as
 * "putting to q" for its whole length; a put on q that finds the mark set
 * runs in a signal handler that interrupted that put, so it must not take
 * the store's lock (held by its own thread) nor a wait list's guard: it
 * parks the item in a lock-free side slot (conc__reent_t) and returns. The
 * interrupted put moves the items its thread parked into the store, in the
 * order they were parked, and wakes getters for them: after it dropped the
 * mark it looks once more (a handler that runs from then on puts the
 * ordinary way, and an ordinary put first moves its own thread's parked
 * items, so one thread's puts keep their order).
 */
#include <stdlib.h>
#include <string.h>

#include "core/fence.h"
#include "green/local.h"
#include "queue/internal.h"

/* ------------------------------------------------------------ the store */

/* 0, CONC_EFULL, CONC_ESHUTDOWN (closed) or CONC_ENOMEM. */
static int store_put_x(conc_queue_t *q, void *item, bool exact)
{
    switch (q->impl) {
    case IMPL_RING:
        return conc__ring_put(&q->s.ring, item, exact);
    case IMPL_SEGQ:
        return conc__segq_put(&q->s.segq, item);
    default:
        return conc__heapq_put(&q->s.heapq, item);
    }
}

static void store_close(conc_queue_t *q)
{
    switch (q->impl) {
    case IMPL_RING:
        conc__ring_close(&q->s.ring);
        break;
    case IMPL_SEGQ:
        conc__segq_close(&q->s.segq);
        break;
    default:
        conc__heapq_close(&q->s.heapq);
        break;
    }
}

static bool store_get_x(conc_queue_t *q, void **item, bool exact)
{
    switch (q->impl) {
    case IMPL_RING:
        return conc__ring_get(&q->s.ring, item, exact);
    case IMPL_SEGQ:
        return conc__segq_get(&q->s.segq, item);
    default:
        return conc__heapq_get(&q->s.heapq, item);
    }
}

/* Exact: fails only when really full / empty (see ring.c). */
static inline int store_put(conc_queue_t *q, void *item)
{
    return store_put_x(q, item, true);
}
static inline bool store_get(conc_queue_t *q, void **item)
{
    return store_get_x(q, item, true);
}

static size_t store_size(const conc_queue_t *q)
{
    switch (q->impl) {
    case IMPL_RING:
        return conc__ring_size(&q->s.ring);
    case IMPL_SEGQ:
        return conc__segq_size(&q->s.segq);
    default:
        return atomic_load((atomic_size_t *)&q->s.heapq.count);
    }
}

static size_t store_puts_only(const conc_queue_t *q)
{
    switch (q->impl) {
    case IMPL_RING:
        return atomic_load((atomic_size_t *)&q->s.ring.enq) & ~CONC__RING_FLAGS;
    case IMPL_SEGQ:
        return atomic_load((atomic_size_t *)&q->s.segq.puts);
    default:
        return atomic_load((atomic_size_t *)&q->s.heapq.puts);
    }
}

/* Items ever put: into the store, or handed straight to a getter. */
static size_t store_puts(const conc_queue_t *q)
{
    return store_puts_only(q) + atomic_load((atomic_size_t *)&q->handoffs);
}

static bool store_closed(conc_queue_t *q);

/* Empty, and not closed by shutdown (a put would land). */
static bool store_empty_open(conc_queue_t *q)
{
    if (q->impl == IMPL_RING) {
        size_t e = atomic_load_explicit(&q->s.ring.enq, memory_order_seq_cst);
        return !(e & CONC__RING_CLOSED) && ((atomic_load_explicit(&q->s.ring.deq, memory_order_seq_cst) ^ e) &
                                            ~CONC__RING_FLAGS) == 0;
    }
    return store_size(q) == 0 && !store_closed(q);
}

/* Closed by shutdown: a put from now on fails. */
static bool store_closed(conc_queue_t *q)
{
    switch (q->impl) {
    case IMPL_RING:
        return (atomic_load_explicit(&q->s.ring.enq, memory_order_seq_cst) & CONC__RING_CLOSED) != 0;
    case IMPL_SEGQ:
        return atomic_load_explicit(&q->s.segq.closed, memory_order_seq_cst);
    default:
        conc__spin_lock(&q->s.heapq.lock);
        bool c = q->s.heapq.closed;
        conc__spin_unlock(&q->s.heapq.lock);
        return c;
    }
}

bool conc__queue_has_items(const conc_queue_t *q)
{
    return store_size(q) > 0;
}

static bool has_room(const conc_queue_t *q);

/* Spinning hints: likely worth a try now (may be wrong either way). */
static inline bool peek_get(const conc_queue_t *q)
{
    return q->impl == IMPL_RING ? conc__ring_peek_get(&q->s.ring) : store_size(q) > 0;
}

static inline bool peek_put(const conc_queue_t *q)
{
    return q->impl == IMPL_RING ? conc__ring_peek_put(&q->s.ring) : has_room(q);
}

static bool has_room(const conc_queue_t *q)
{
    return q->maxsize <= 0 || store_size(q) < (size_t)q->maxsize;
}

/* ------------------------------------------------------------- sleepers */

/* A getter's waiter (sleep_until): w.data == QW_TAKES marks one that
 * takes a hub-local hand-off (a plain get by a green context). */
typedef struct {
    conc__waiter_t w; /* first: the list holds &qw->w */
    struct conc__hub *hub; /* the getter's hub */
    void *item;            /* handed to it (handed) */
    bool handed;
} qwaiter_t;
#define QW_TAKES ((uintptr_t)0x9e7)
#define QW_HANDED 1 /* sleep_until: the item came by hand-off */

/* conc__waitq_lock with its uncontended case inline. */
static inline void wq_lock(conc__waitq_t *wq)
{
    unsigned free_ = 0;
    if (__builtin_expect(!atomic_compare_exchange_strong_explicit(CONC__A(&wq->guard), &free_, conc__guard_stamp(),
                                                                  memory_order_acquire, memory_order_relaxed),
                         0))
        conc__waitq_lock(wq);
}

/* A waiter the calling thread may wake with conc__unpark_local (see
 * park.h): a getter of a green context of this thread's hub, not the
 * caller. Under the list's guard. */
static inline bool qw_local(const conc__waiter_t *w)
{
    return w->data == QW_TAKES && ((const qwaiter_t *)w)->hub == conc__tl_hub && w->ctx != conc__cur;
}

/* The sleeper counts change only under their list's guard (a plain
 * decrement will do); the increments stay read-modify-writes, which
 * order them before the sleeper's re-check (no lost wakeup). */
static inline void cnt_dec(atomic_uint *cnt)
{
    atomic_store_explicit(cnt, atomic_load_explicit(cnt, memory_order_relaxed) - 1, memory_order_relaxed);
}

void conc__queue_wake_one(conc__waitq_t *wq, atomic_uint *cnt)
{
    wq_lock(wq);
    conc__waiter_t *w = conc__waitq_pop(wq);
    bool local = false;
    if (w) {
        cnt_dec(cnt);
        local = qw_local(w);
    }
    conc__waitq_unlock(wq);
    if (local)
        conc__unpark_local_inline(w);
    else if (w)
        conc__unpark(w);
}

static void wake_all(conc__waitq_t *wq, atomic_uint *cnt)
{
    conc__waitq_lock(wq);
    conc__waiter_t *list = conc__waitq_take_all(wq);
    atomic_store_explicit(cnt, 0, memory_order_seq_cst);
    conc__waitq_unlock(wq);
    conc__unpark_list(list);
}

static inline void after_put(conc_queue_t *q)
{
    /* heapq and a shared ring side publish with an atomic RMW, which
     * already orders the load below; segq and a ring side's owner with
     * plain stores, paired with the sleeper's heavy fence (core/fence.h;
     * the owner path exists only where membarrier works). */
    if (q->impl == IMPL_SEGQ)
        conc__fence_light();
    else
        atomic_signal_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&q->gsleep, memory_order_seq_cst))
        conc__queue_wake_one(&q->getq, &q->gsleep);
}

static inline void after_get(conc_queue_t *q)
{
    atomic_signal_fence(memory_order_seq_cst); /* see after_put */
    if (atomic_load_explicit(&q->psleep, memory_order_seq_cst))
        conc__queue_wake_one(&q->putq, &q->psleep);
}

typedef struct {
    atomic_uint *cnt;
} sleep_arg_t;

/* The SimpleQueue the calling thread is putting to, or holding the get
 * wait list's guard of (a put that finds it set parks its item). */
static __thread conc_queue_t *tl_putting;

/* Who parked an item: the address of this thread's mark (signal-safe). */
static inline uintptr_t self_id(void)
{
    return (uintptr_t)&tl_putting;
}

/* A nested put (a signal handler interrupted a put on q in this thread):
 * park item in a side slot. Async-signal-safe: atomics only. */
static int reent_park(conc_queue_t *q, void *item)
{
    conc__reent_t *r = q->reent;
    if (atomic_load_explicit(&q->shutdown, memory_order_acquire))
        return CONC_ESHUTDOWN;
    uint64_t c = atomic_load_explicit(&r->claimed, memory_order_relaxed);
    int b;
    do {
        if (c == ~(uint64_t)0)
            return CONC_ENOMEM; /* 64 puts parked at once: out of side slots */
        b = __builtin_ctzll(~c);
    } while (!atomic_compare_exchange_weak_explicit(&r->claimed, &c, c | ((uint64_t)1 << b), memory_order_acquire,
                                                    memory_order_relaxed));
    r->item[b] = item;
    r->order[b] = atomic_fetch_add_explicit(&r->seq, 1, memory_order_relaxed);
    atomic_store_explicit(&r->owner[b], self_id(), memory_order_relaxed);
    atomic_fetch_or_explicit(&r->ready, (uint64_t)1 << b, memory_order_release);
    return 0;
}

/* The parked items of the calling thread. */
static uint64_t reent_mine(conc__reent_t *r)
{
    uint64_t ready = atomic_load_explicit(&r->ready, memory_order_acquire), mine = 0;
    for (uint64_t m = ready; m; m &= m - 1) {
        int b = __builtin_ctzll(m);
        if (atomic_load_explicit(&r->owner[b], memory_order_relaxed) == self_id())
            mine |= (uint64_t)1 << b;
    }
    return mine;
}

/* Move the calling thread's parked items into the store, oldest first.
 * The calling put holds the mark, so puts nested in it park too (picked
 * up next round). Returns false if the store refused one (it stays
 * parked). */
static bool reent_drain(conc_queue_t *q)
{
    conc__reent_t *r = q->reent;
    uint64_t ready = reent_mine(r);
    while (ready) {
        int best = -1;
        for (uint64_t m = ready; m; m &= m - 1) {
            int b = __builtin_ctzll(m);
            if (best < 0 || (long)(r->order[b] - r->order[best]) < 0)
                best = b;
        }
        uint64_t bit = (uint64_t)1 << best;
        ready &= ~bit;
        if (store_put(q, r->item[best]) != 0)
            return false; /* no memory: it stays parked */
        atomic_fetch_and_explicit(&r->ready, ~bit, memory_order_relaxed);
        atomic_fetch_and_explicit(&r->claimed, ~bit, memory_order_release);
        after_put(q);
    }
    return true;
}

/* Set the mark for q (a reentrant SimpleQueue; no-op otherwise); returns
 * what leave() restores. */
static inline conc_queue_t *reent_enter(conc_queue_t *q)
{
    conc_queue_t *outer = tl_putting;
    if (q->reent) {
        tl_putting = q;
        atomic_signal_fence(memory_order_seq_cst);
    }
    return outer;
}

/* Drop the mark for q, then move what handlers parked while it was set
 * (a handler that runs from then on puts the ordinary way). Returns false
 * if the store refused an item (no memory: it stays parked). Call it
 * holding no lock of q's. */
static bool reent_leave_slow(conc_queue_t *q, conc_queue_t *outer)
{
    for (;;) {
        if (!reent_mine(q->reent))
            return true;
        tl_putting = q;
        atomic_signal_fence(memory_order_seq_cst);
        if (!reent_drain(q)) {
            tl_putting = outer;
            return false;
        }
        atomic_signal_fence(memory_order_seq_cst);
        tl_putting = outer;
        atomic_signal_fence(memory_order_seq_cst);
        if (!atomic_load_explicit(&q->reent->ready, memory_order_relaxed))
            return true;
    }
}

static inline bool reent_leave(conc_queue_t *q, conc_queue_t *outer)
{
    if (!q->reent)
        return true;
    atomic_signal_fence(memory_order_seq_cst);
    tl_putting = outer;
    atomic_signal_fence(memory_order_seq_cst);
    if (outer == q) /* nested in a put on q: that put moves them */
        return true;
    if (__builtin_expect(!atomic_load_explicit(&q->reent->ready, memory_order_relaxed), 1))
        return true;
    return reent_leave_slow(q, outer);
}

static void on_timeout_dec(conc__waitq_t *wq, void *arg)
{
    (void)wq;
    atomic_fetch_sub_explicit(((sleep_arg_t *)arg)->cnt, 1, memory_order_seq_cst);
}

/* Queue w on wq (cnt++), re-check `ready`, park. Returns 0 when woken or
 * when ready turned true before sleeping, CONC_ETIMEDOUT at the deadline.
 *
 * While it holds wq's guard, a SimpleQueue getter sets the reentrancy
 * mark: a signal handler that interrupts it there and puts on q must not
 * wake a getter (that takes the guard its own thread holds), so its put
 * parks the item, and reent_leave moves it once the guard is released
 * (Python: a get may be interrupted by a put in the same thread). The
 * park itself runs unmarked: a handler's put while it sleeps is ordinary
 * and wakes it. conc__wait_queued, inlined, to mark its guarded part. */
static inline __attribute__((always_inline)) int sleep_until(conc_queue_t *q, conc__waitq_t *wq, atomic_uint *cnt,
                                                            bool (*ready)(const conc_queue_t *), int64_t deadline,
                                                            void **handed)
{
    if (deadline != CONC__NO_DEADLINE && conc__now_ns() >= deadline)
        return CONC_ETIMEDOUT;
    /* handed: a get, which takes a hub-local hand-off if it is green
     * (returns QW_HANDED with the item in *handed). */
    qwaiter_t qw;
    conc__waiter_t *wp = &qw.w;
    conc__waiter_init(wp);
    wp->spun = 1;
    wp->obj = q;
    wp->kind = wq == &q->getq ? CONC__WAIT_QUEUE_GET : CONC__WAIT_QUEUE_PUT;
    qw.handed = false;
    qw.hub = conc__local_hub();
    if (qw.hub && handed)
        wp->data = QW_TAKES;
    conc_queue_t *outer = reent_enter(q);
    wq_lock(wq);
    atomic_fetch_add_explicit(cnt, 1, memory_order_seq_cst);
    if (conc__queue_light_publish(q, wq == &q->getq))
        conc__fence_heavy(); /* segq puts, ring owners publish without an RMW */
    if (ready(q) || atomic_load_explicit(&q->shutdown, memory_order_seq_cst)) {
        cnt_dec(cnt);
        conc__waitq_unlock(wq);
        reent_leave(q, outer);
        return 0;
    }
    if (qw.hub && !q->reent) /* (a SimpleQueue's reent_leave below may wake us) */
        conc__park_presleep_inline(wp);
    conc__waitq_push(wq, wp);
    conc__waitq_unlock(wq);
    reent_leave(q, outer); /* a parked item's wake may be our own: park returns at once */
    int rc = conc__park(wp, deadline);
    if (rc == 0)
        goto woken;
    outer = reent_enter(q);
    conc__waitq_lock(wq);
    if (wp->queued) {
        conc__waitq_remove(wq, wp);
        cnt_dec(cnt);
        conc__waitq_unlock(wq);
        reent_leave(q, outer);
        return rc;
    }
    conc__waitq_unlock(wq);
    reent_leave(q, outer);
    conc__park_settle(wp);
    conc__park_rearm(wp);
woken:
    if (qw.handed) {
        *handed = qw.item;
        return QW_HANDED;
    }
    return 0;
}

/* The hub-local hand-off (see the top): 0 when item went straight to a
 * green getter of this thread's hub, 1 when it must be put the ordinary
 * way. The caller saw a sleeping getter and is a context of a hub. */
static int handoff(conc_queue_t *q, void *item)
{
    wq_lock(&q->getq);
    conc__waiter_t *w = q->getq.head;
    if (!w || !qw_local(w) || !store_empty_open(q)) {
        conc__waitq_unlock(&q->getq);
        return 1;
    }
    /* conc__waitq_pop, w being the head */
    conc__waiter_t *next = w->next;
    q->getq.head = next;
    if (next)
        next->prev = NULL;
    else
        q->getq.tail = NULL;
    w->next = NULL;
    w->queued = 0;
    cnt_dec(&q->gsleep);
    atomic_store_explicit(&q->handoffs, atomic_load_explicit(&q->handoffs, memory_order_relaxed) + 1,
                          memory_order_release);
    qwaiter_t *qw = (qwaiter_t *)w;
    qw->item = item;
    qw->handed = true;
    conc__waitq_unlock(&q->getq);
    conc__unpark_local_inline(w);
    return 0;
}

/* ------------------------------------------------------------ lifecycle */

/* Bounded FIFOs up to this size use the ring (all slots allocated up
 * front); bigger ones use the segment list with a bound. */
#define CONC__RING_MAX (1L << 16)

static int queue_new(conc_queue_t **out, conc_queue_kind_t kind, long maxsize, conc_queue_cmp_fn cmp)
{
    if (!out || (unsigned)kind > CONC_SIMPLE)
        return CONC_EINVAL;
    conc_queue_t *q = aligned_alloc(CONC__CACHELINE, (sizeof *q + CONC__CACHELINE - 1) &
                                                         ~(size_t)(CONC__CACHELINE - 1));
    if (!q)
        return CONC_ENOMEM;
    memset(q, 0, sizeof *q);
    q->kind = kind;
    q->maxsize = kind == CONC_SIMPLE || maxsize < 0 ? 0 : maxsize;
    int rc;
    /* The ring needs two cells at least (a filled cell's sequence number
     * must differ from the next lap's); a FIFO of one item is also a stack. */
    if (kind == CONC_FIFO && q->maxsize > 1 && q->maxsize <= CONC__RING_MAX) {
        q->impl = IMPL_RING;
        rc = conc__ring_init(&q->s.ring, (size_t)q->maxsize);
    } else if ((kind == CONC_FIFO && q->maxsize != 1) || kind == CONC_SIMPLE) {
        q->impl = IMPL_SEGQ;
        rc = conc__segq_init(&q->s.segq, (size_t)q->maxsize);
    } else {
        q->impl = IMPL_HEAPQ;
        rc = conc__heapq_init(&q->s.heapq, kind != CONC_PRIORITY, cmp, (size_t)q->maxsize);
    }
    if (rc == 0 && kind == CONC_SIMPLE && !(q->reent = calloc(1, sizeof *q->reent))) {
        conc__segq_destroy(&q->s.segq);
        rc = CONC_ENOMEM;
    }
    if (rc) {
        free(q);
        return rc;
    }
    *out = q;
    return 0;
}

int conc_queue_new(conc_queue_t **out, conc_queue_kind_t kind, long maxsize)
{
    return queue_new(out, kind, maxsize, NULL);
}

int conc_priority_queue_new(conc_queue_t **out, long maxsize, conc_queue_cmp_fn cmp)
{
    return queue_new(out, CONC_PRIORITY, maxsize, cmp);
}

int conc_queue_free(conc_queue_t *q, void (*dtor)(void *item))
{
    if (!q)
        return CONC_EINVAL;
    if (atomic_load(&q->gsleep) || atomic_load(&q->psleep) || atomic_load(&q->jsleep))
        return CONC_EPERM;
    if (dtor) {
        void *item;
        while (store_get(q, &item))
            dtor(item);
    }
    switch (q->impl) {
    case IMPL_RING:
        conc__ring_destroy(&q->s.ring);
        break;
    case IMPL_SEGQ:
        conc__segq_destroy(&q->s.segq);
        break;
    default:
        conc__heapq_destroy(&q->s.heapq);
        break;
    }
    free(q->reent);
    free(q);
    return 0;
}

/* ------------------------------------------------------------- put / get */

static int simple_put(conc_queue_t *q, void *item)
{
    if (tl_putting == q)
        return reent_park(q, item);
    conc_queue_t *outer = tl_putting; /* a put on another queue we interrupted */
    tl_putting = q;
    atomic_signal_fence(memory_order_seq_cst);
    /* Items parked by a handler that interrupted an earlier put (it may be
     * this one's own handler, running between that put's last look and its
     * return) go first: a handler's puts keep their order. */
    if (__builtin_expect(atomic_load_explicit(&q->reent->ready, memory_order_relaxed) != 0, 0))
        reent_drain(q);
    int rc = store_put(q, item);
    if (rc == 0)
        after_put(q);
    /* Anything parked while the mark was set is moved now (a handler that
     * runs from then on puts the ordinary way); an item the store refuses
     * (no memory) stays parked. */
    reent_leave(q, outer);
    return rc;
}

/* A blocking put that finds a ring of PUT_BATCH_MIN_CAP cells or more full
 * spins until a batch of cells is free (PUT_BATCH, at most a quarter of
 * the ring), looking at the next cell only every PUT_NEAR_EVERY rounds and
 * once more when the spin runs out. When the consumer is the slower side
 * the ring stays full and every put waits; polling the next cell then
 * reads the line the consumer is taking items from, once per item (that
 * halved 1p1c's throughput); waiting for a batch keeps the producer a
 * quarter of a ring away, after which a run of puts takes the fast path.
 * It only changes which cell the spin looks at: the put itself and the
 * exact re-check before a sleep are as before. (Getters do not batch: a
 * getter cannot tell a stream from a hand-off, which would pay the wait.) */
#define PUT_BATCH 256
#define PUT_BATCH_DIV 4
#define PUT_BATCH_MIN_CAP 64 /* smaller rings: few lines, little to gain */
#define PUT_NEAR_EVERY 64    /* a power of 2 */

/* tried: the fast path already made the first (non-exact) attempt. */
static __attribute__((noinline)) int put_general(conc_queue_t *q, void *item, bool block, double timeout,
                                                 bool tried)
{
    if (!q)
        return CONC_EINVAL;
    int64_t deadline = CONC__NO_DEADLINE;
    /* Python checks the timeout only where it applies (a bounded queue);
     * an unbounded put ignores it (NaN is still a bug). */
    if (block && timeout != CONC_FOREVER &&
        (q->maxsize > 0 ? conc__deadline_strict(timeout, &deadline) : isnan(timeout) ? CONC_EINVAL : 0))
        return CONC_EINVAL;
    if (q->reent)
        return simple_put(q, item); /* unbounded, reentrant */
    /* A getter sleeps and a hub runs the caller: maybe hand item to it. */
    if (!tried && atomic_load_explicit(&q->gsleep, memory_order_relaxed) && conc__local_hub() &&
        handoff(q, item) == 0)
        return 0;
    int rc = tried ? CONC_EFULL : store_put_x(q, item, !block);
    if (__builtin_expect(rc == 0, 1)) {
        after_put(q);
        return 0;
    }
    if (rc != CONC_EFULL || !block)
        return rc;

    conc__spinner_t sp;
    conc__spin_begin(&sp, deadline);
    /* A full ring: wait for a batch of free cells (conc__ring_peek_put_ahead),
     * looking at the next cell itself only every few rounds. */
    size_t ahead = q->impl == IMPL_RING && q->s.ring.cap >= PUT_BATCH_MIN_CAP ? q->s.ring.cap / PUT_BATCH_DIV : 0;
    if (ahead > PUT_BATCH)
        ahead = PUT_BATCH;
    for (unsigned n = 0; conc__spin_more(&sp); n++) {
        bool near = !ahead || (n & (PUT_NEAR_EVERY - 1)) == PUT_NEAR_EVERY - 1;
        if ((near ? peek_put(q) : conc__ring_peek_put_ahead(&q->s.ring, ahead)) &&
            (rc = store_put_x(q, item, false)) != CONC_EFULL)
            break;
    }
    /* (a spin that ran out while it waited for the batch: the next cell
     * may have been free all along) */
    if (ahead && rc == CONC_EFULL && sp.end != 0)
        rc = store_put_x(q, item, false);
    conc__spin_end(&sp, rc == 0);
    for (;;) {
        if (rc == 0) {
            after_put(q);
            return 0;
        }
        if (rc != CONC_EFULL)
            return rc; /* CONC_ESHUTDOWN, CONC_ENOMEM */
        int src = sleep_until(q, &q->putq, &q->psleep, has_room, deadline, NULL);
        if (src != 0) {
            bool intr = conc__park_interrupted(src);
            rc = store_put(q, item);
            if (rc == 0)
                after_put(q);
            return (rc == CONC_EFULL && intr) ? src : rc;
        }
        rc = store_put(q, item);
    }
}

/* The fast path: a blocking put without a deadline on a ring side this
 * thread owns (container.h), in a small frame; anything else, or a full
 * ring, goes the general way (which tries again). */
int conc_queue_put(conc_queue_t *q, void *item, bool block, double timeout)
{
    /* (a sleeping getter: the general path, which may hand item over) */
    if (!q || q->impl != IMPL_RING || atomic_load_explicit(&q->gsleep, memory_order_relaxed))
        return put_general(q, item, block, timeout, false);
    int rc = 1;
    if (__builtin_expect(block && timeout == CONC_FOREVER, 1) &&
        (rc = conc__ring_put_owned(&q->s.ring, item)) == 0) {
        after_put(q);
        return 0;
    }
    return put_general(q, item, block, timeout, rc == CONC_EFULL);
}

int conc_queue_put_nowait(conc_queue_t *q, void *item)
{
    return conc_queue_put(q, item, false, CONC_FOREVER);
}

bool conc__queue_try_get(conc_queue_t *q, void **item)
{
    if (!store_get(q, item))
        return false;
    after_get(q);
    return true;
}

/* tried: the fast path already made the first (non-exact) attempt. */
static __attribute__((noinline)) int get_general(conc_queue_t *q, void **item, bool block, double timeout,
                                                 bool tried)
{
    if (!q || !item)
        return CONC_EINVAL;
    int64_t deadline = CONC__NO_DEADLINE;
    if (block && timeout != CONC_FOREVER && conc__deadline_strict(timeout, &deadline))
        return CONC_EINVAL;
    if (!tried && __builtin_expect(store_get_x(q, item, !block), 1)) {
        after_get(q);
        return 0;
    }
    if (atomic_load_explicit(&q->shutdown, memory_order_acquire))
        return conc__queue_try_get(q, item) ? 0 : CONC_ESHUTDOWN;
    if (!block)
        return CONC_EEMPTY;

    bool ok = false;
    if (!conc__ctx()->ops) { /* green contexts never spin (conc__spin_begin) */
        conc__spinner_t sp;
        conc__spin_begin(&sp, deadline);
        while (conc__spin_more(&sp)) {
            if (peek_get(q) && store_get_x(q, item, false)) {
                ok = true;
                break;
            }
            if (atomic_load_explicit(&q->shutdown, memory_order_relaxed))
                break;
        }
        conc__spin_end(&sp, ok);
    }
    for (;;) {
        if (ok) {
            after_get(q);
            return 0;
        }
        if (atomic_load_explicit(&q->shutdown, memory_order_acquire))
            return conc__queue_try_get(q, item) ? 0 : CONC_ESHUTDOWN;
        void *got = NULL;
        int src = sleep_until(q, &q->getq, &q->gsleep, conc__queue_has_items, deadline, &got);
        if (src == QW_HANDED) {
            *item = got;
            return 0;
        }
        if (src != 0) {
            bool intr = conc__park_interrupted(src);
            if (conc__queue_try_get(q, item))
                return 0;
            if (atomic_load_explicit(&q->shutdown, memory_order_acquire))
                return CONC_ESHUTDOWN;
            return intr ? src : CONC_EEMPTY;
        }
        ok = store_get(q, item);
    }
}

/* The fast path, as for put. */
int conc_queue_get(conc_queue_t *q, void **item, bool block, double timeout)
{
    if (!q || q->impl != IMPL_RING)
        return get_general(q, item, block, timeout, false);
    int got = -1;
    if (__builtin_expect(item && block && timeout == CONC_FOREVER, 1) &&
        (got = conc__ring_get_owned(&q->s.ring, item)) > 0) {
        after_get(q);
        return 0;
    }
    return get_general(q, item, block, timeout, got == 0);
}

int conc_queue_get_nowait(conc_queue_t *q, void **item)
{
    return conc_queue_get(q, item, false, CONC_FOREVER);
}

/* ----------------------------------------------------------------- peek */

static bool store_peek(conc_queue_t *q, void **item)
{
    switch (q->impl) {
    case IMPL_RING:
        return conc__ring_peek(&q->s.ring, item);
    case IMPL_SEGQ:
        return conc__segq_peek(&q->s.segq, item);
    default:
        return conc__heapq_peek(&q->s.heapq, item);
    }
}

/* gevent's Queue.peek: wait as get does, take nothing. A peeker sleeps
 * among the getters, so a put's single wakeup may reach it instead of a
 * getter: once it saw an item it passes that wakeup on (after_put). */
int conc_queue_peek(conc_queue_t *q, void **item, bool block, double timeout)
{
    if (!q || !item)
        return CONC_EINVAL;
    int64_t deadline = CONC__NO_DEADLINE;
    if (block && timeout != CONC_FOREVER && conc__deadline_strict(timeout, &deadline))
        return CONC_EINVAL;
    bool slept = false;
    for (;;) {
        if (store_peek(q, item)) {
            if (slept)
                after_put(q);
            return 0;
        }
        if (atomic_load_explicit(&q->shutdown, memory_order_acquire))
            return store_peek(q, item) ? 0 : CONC_ESHUTDOWN;
        if (!block)
            return CONC_EEMPTY;
        int src = sleep_until(q, &q->getq, &q->gsleep, conc__queue_has_items, deadline, NULL);
        slept = true;
        if (src != 0) {
            bool intr = conc__park_interrupted(src);
            if (store_peek(q, item)) {
                after_put(q);
                return 0;
            }
            if (atomic_load_explicit(&q->shutdown, memory_order_acquire))
                return CONC_ESHUTDOWN;
            return intr ? src : CONC_EEMPTY;
        }
    }
}

/* --------------------------------------------------------------- queries */

size_t conc_queue_qsize(const conc_queue_t *q)
{
    return q ? store_size(q) : 0;
}

bool conc_queue_empty(const conc_queue_t *q)
{
    return !q || store_size(q) == 0;
}

bool conc_queue_full(const conc_queue_t *q)
{
    return q && q->maxsize > 0 && store_size(q) >= (size_t)q->maxsize;
}

long conc_queue_maxsize(const conc_queue_t *q)
{
    return q ? q->maxsize : 0;
}

conc_queue_kind_t conc_queue_kind(const conc_queue_t *q)
{
    return q ? q->kind : CONC_FIFO;
}

bool conc_queue_is_shutdown(const conc_queue_t *q)
{
    return q && atomic_load((atomic_int *)&q->shutdown);
}

/* ----------------------------------------------------------------- tasks */

static size_t unfinished(const conc_queue_t *q)
{
    size_t d = atomic_load((atomic_size_t *)&q->dones);
    size_t p = store_puts(q);
    return p > d ? p - d : 0;
}

size_t conc_queue_unfinished_tasks(const conc_queue_t *q)
{
    return q && q->kind != CONC_SIMPLE ? unfinished(q) : 0;
}

int conc_queue_task_done(conc_queue_t *q)
{
    if (!q || q->kind == CONC_SIMPLE)
        return CONC_EINVAL;
    size_t d = atomic_load_explicit(&q->dones, memory_order_relaxed);
    for (;;) {
        if (d >= store_puts(q))
            return CONC_EINVAL; /* task_done() called too many times */
        if (atomic_compare_exchange_weak_explicit(&q->dones, &d, d + 1, memory_order_seq_cst,
                                                  memory_order_relaxed))
            break;
    }
    if (atomic_load_explicit(&q->jsleep, memory_order_seq_cst) && unfinished(q) == 0)
        wake_all(&q->joinq, &q->jsleep);
    return 0;
}

static bool all_done(const conc_queue_t *q)
{
    return unfinished(q) == 0;
}

int conc_queue_join(conc_queue_t *q, double timeout)
{
    if (!q || q->kind == CONC_SIMPLE)
        return CONC_EINVAL;
    int64_t deadline;
    if (conc__deadline(timeout, &deadline))
        return CONC_EINVAL;
    while (!all_done(q)) {
        /* sleep_until also returns early on shutdown; joiners do not care
         * about shutdown itself, only about the count, so wait properly. */
        conc__waiter_t w;
        conc__waiter_init(&w);
        w.obj = q;
        w.kind = CONC__WAIT_QUEUE_JOIN;
        if (deadline != CONC__NO_DEADLINE && conc__now_ns() >= deadline)
            return CONC_ETIMEDOUT;
        conc__waitq_lock(&q->joinq);
        atomic_fetch_add_explicit(&q->jsleep, 1, memory_order_seq_cst);
        if (all_done(q)) {
            atomic_fetch_sub_explicit(&q->jsleep, 1, memory_order_seq_cst);
            conc__waitq_unlock(&q->joinq);
            return 0;
        }
        conc__waitq_push(&q->joinq, &w);
        conc__waitq_unlock(&q->joinq);
        sleep_arg_t a = {&q->jsleep};
        int rc = conc__wait_queued(&q->joinq, &w, deadline, on_timeout_dec, &a);
        if (rc != 0)
            return all_done(q) ? 0 : rc;
    }
    return 0;
}

/* -------------------------------------------------------------- shutdown */

int conc_queue_shutdown(conc_queue_t *q, bool immediate, void (*discard)(void *item))
{
    if (!q)
        return CONC_EINVAL;
    /* Close the store first: from here a put either has landed or fails,
     * so a getter that sees the flag can trust "empty". */
    store_close(q);
    int exp = 0;
    atomic_compare_exchange_strong(&q->shutdown, &exp, immediate ? 2 : 1);
    if (immediate) {
        atomic_store(&q->shutdown, 2);
        void *item;
        while (store_get(q, &item)) {
            if (q->kind != CONC_SIMPLE) {
                /* unfinished_tasks -= 1, never below 0 */
                size_t d = atomic_load(&q->dones);
                while (d < store_puts(q) && !atomic_compare_exchange_weak(&q->dones, &d, d + 1)) {
                }
            }
            if (discard)
                discard(item);
        }
        wake_all(&q->joinq, &q->jsleep);
    }
    wake_all(&q->getq, &q->gsleep);
    wake_all(&q->putq, &q->psleep);
    return 0;
}
