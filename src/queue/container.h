/*
 * container.h — the three item stores behind conc_queue_t (private).
 *
 *   ring   bounded FIFO: a multi-producer multi-consumer ring of
 *          sequence-numbered cells (no lock; one CAS per put or get);
 *   segq   unbounded FIFO (and SimpleQueue): a list of fixed-size segments
 *          with one spin lock for producers and one for consumers, so a
 *          producer and a consumer never contend with each other;
 *   heapq  LIFO stack or priority heap under one spin lock.
 *
 * Each store keeps monotonic counters read with seq_cst loads: `puts`
 * (items ever put) and the current item count. The queue's sleeping logic
 * (queue.c) relies on this: a store operation is a seq_cst read-modify-
 * write on a counter followed by a seq_cst load of the sleeper count, and a
 * sleeper does a seq_cst RMW on the sleeper count followed by a load of
 * the counters, so one of the two always sees the other (no lost wakeup,
 * no fence on the fast path).
 *
 * close() (Queue.shutdown) is done at each store's own serialisation point
 * (a bit in the ring's ticket counter, a flag under the producers' lock):
 * a put either lands before the close or fails, so once a consumer has
 * seen the queue's shutdown flag, "empty" means empty for good.
 */
#ifndef CONC_QUEUE_CONTAINER_H
#define CONC_QUEUE_CONTAINER_H

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conc/queue.h"
#include "core/park.h"

#define CONC__CACHELINE 64

/* A spin lock for very short critical sections (yields when it waits
 * long). Stamped with the fork generation like a wait list's guard
 * (core/park.h): one held by a thread that a fork left behind is taken
 * over in the child instead of spun on forever. */
typedef struct {
    atomic_uint v;
} conc__spin_t;
static inline void conc__spin_lock(conc__spin_t *s)
{
    unsigned n = 0, mine = conc__guard_stamp();
    for (;;) {
        unsigned v = atomic_load_explicit(&s->v, memory_order_relaxed);
        if (v == 0 || conc__guard_stale(v, mine)) {
            if (atomic_compare_exchange_weak_explicit(&s->v, &v, mine, memory_order_acquire,
                                                      memory_order_relaxed))
                return;
            continue;
        }
        if (++n < 64)
            conc__cpu_relax();
        else
            sched_yield();
    }
}
static inline void conc__spin_unlock(conc__spin_t *s)
{
    atomic_store_explicit(&s->v, 0, memory_order_release);
}

/* ------------------------------------------------------------------ ring */

/* Fetch a cell's line for writing before its sequence number is read: the
 * put or get that reads it then writes it, and a line read first (shared)
 * then written costs two trips from the other core's cache instead of
 * one — and on the CAS path the next operation's locked CAS waits for
 * that write to complete. (0F 0D /1: a no-op hint where unsupported.) */
#ifndef CONC__RING_PREFETCHW
#define CONC__RING_PREFETCHW 1
#endif
#if CONC__RING_PREFETCHW && (defined(__x86_64__) || defined(__i386__))
#define conc__prefetchw(p) __asm__ __volatile__("prefetchw %0" ::"m"(*(const char *)(p)))
#elif CONC__RING_PREFETCHW && defined(__GNUC__)
#define conc__prefetchw(p) __builtin_prefetch((p), 1, 3)
#else
#define conc__prefetchw(p) ((void)(p))
#endif

typedef struct {
    atomic_size_t seq;
    void *item;
} conc__cell_t;

/* Set in `enq` by close(): puts fail from then on, atomically with claims. */
#define CONC__RING_CLOSED ((size_t)1 << (sizeof(size_t) * 8 - 1))
/* Set in `enq` (`deq`) while the put (get) side is shared (ring.c): the
 * CAS path's ticket CAS expects it set, so it cannot succeed once a thread
 * claimed the side back (clearing it with an RMW) and stores the counter
 * without one; an owner's counter is plain (no bit to mask). */
#define CONC__RING_SHARED_BIT ((size_t)1 << (sizeof(size_t) * 8 - 2))
#define CONC__RING_FLAGS (CONC__RING_CLOSED | CONC__RING_SHARED_BIT)

/* A side's owner word (pown, cown): none yet, an owning thread's id
 * (ring.c: single-producer / single-consumer path), being revoked, or
 * shared for good (every operation takes its ticket with a CAS). */
#define CONC__RING_OWN_NONE ((uintptr_t)0)
#define CONC__RING_OWN_REVOKING ((uintptr_t)1)
#define CONC__RING_OWN_SHARED ((uintptr_t)2)

typedef struct {
    _Alignas(CONC__CACHELINE) atomic_size_t enq; /* = items ever put (| CLOSED | SHARED_BIT) */
    _Atomic uintptr_t pown;                      /* producer side's owner */
    atomic_uint pgen;                            /* conc__fork_gen at pown's claim */
    /* re-claiming a shared side (ring.c): the thread of the last CAS-path
     * put, how many in a row it made, how many make it claim the side,
     * and enq when it was last claimed */
    _Atomic uintptr_t plast;
    atomic_uint pstreak, preclaim;
    atomic_size_t pfrom;
    atomic_uint prgen;        /* conc__fork_gen when pown last went REVOKING */
    _Alignas(CONC__CACHELINE) atomic_size_t deq; /* = items ever taken (| SHARED_BIT) */
    _Atomic uintptr_t cown;                      /* consumer side's owner */
    atomic_uint cgen;                            /* conc__fork_gen at cown's claim */
    _Atomic uintptr_t clast;                     /* (as for the put side) */
    atomic_uint cstreak, creclaim;
    atomic_size_t cfrom;
    atomic_uint crgen;
    _Alignas(CONC__CACHELINE) size_t cap;
    size_t mask;                                 /* cap - 1 if a power of 2, else 0 */
    conc__cell_t *cells;
    /* sleepers only (conc__ring_sleep_fence): the other side's counter at
     * the last heavy fence, per side, and how many came too close */
    _Alignas(CONC__CACHELINE) atomic_size_t fence_mark[2];
    atomic_uint fence_strikes;
} conc__ring_t;

int conc__ring_init(conc__ring_t *r, size_t cap);
void conc__ring_destroy(conc__ring_t *r);
/* exact: tell a cell being filled (or emptied) by another thread from a
 * really empty (full) queue by reading the other side's counter; without
 * it a cell in mid-publication reports empty (full), which is cheaper:
 * the blocking paths re-check exactly before they sleep.
 * put returns 0, CONC_EFULL or CONC_ESHUTDOWN (closed). */
int conc__ring_put(conc__ring_t *r, void *item, bool exact);
/* After close, every put fails; a put either completed before (its item is
 * counted in enq) or fails. */
void conc__ring_close(conc__ring_t *r);
bool conc__ring_get(conc__ring_t *r, void **item, bool exact); /* false: empty */
bool conc__ring_peek(conc__ring_t *r, void **item);               /* left in place */
/* Cheap readiness hints for spinning: look only at the next cell, which
 * the other side is about to write anyway (not at the shared counters). */
static inline bool conc__ring_peek_get(const conc__ring_t *r)
{
    size_t pos = atomic_load_explicit((atomic_size_t *)&r->deq, memory_order_relaxed) & ~CONC__RING_SHARED_BIT;
    const conc__cell_t *c = &r->cells[r->mask ? (pos & r->mask) : (pos % r->cap)];
    return atomic_load_explicit((atomic_size_t *)&c->seq, memory_order_relaxed) == pos + 1;
}
static inline bool conc__ring_peek_put(const conc__ring_t *r)
{
    size_t pos = atomic_load_explicit((atomic_size_t *)&r->enq, memory_order_relaxed);
    if (pos & CONC__RING_CLOSED)
        return true; /* let put see it and fail */
    pos &= ~CONC__RING_SHARED_BIT;
    const conc__cell_t *c = &r->cells[r->mask ? (pos & r->mask) : (pos % r->cap)];
    return atomic_load_explicit((atomic_size_t *)&c->seq, memory_order_relaxed) == pos;
}
/* The same hint for the cell `ahead` places past the next free one (free
 * for this lap: ahead + 1 puts would fit now, if the consumers free cells
 * in order). A putter that found the ring full waits on this one most of
 * the time: the consumer is still taking the cells right after the next
 * one, and a poll of its cell's line (every item, when the ring stays
 * full) takes that line away from it in the middle of its get; waiting
 * for a batch of free cells leaves the consumer its lines and lets the
 * put and the next ones take the fast path. ahead < cap. */
static inline bool conc__ring_peek_put_ahead(const conc__ring_t *r, size_t ahead)
{
    size_t pos = atomic_load_explicit((atomic_size_t *)&r->enq, memory_order_relaxed);
    if (pos & CONC__RING_CLOSED)
        return true;
    pos = (pos & ~CONC__RING_SHARED_BIT) + ahead;
    const conc__cell_t *c = &r->cells[r->mask ? (pos & r->mask) : (pos % r->cap)];
    return (intptr_t)(atomic_load_explicit((atomic_size_t *)&c->seq, memory_order_relaxed) - pos) >= 0;
}
/* A thread that may own ring sides (ring.c): its id is this record's
 * address, and `busy` brackets its owner-path operations on any ring (a
 * nesting count: a signal handler's operation on another ring restores
 * it). Records are never freed (a revoker may read the busy flag of an
 * owner that exited); an exited thread's record goes to the next thread
 * that claims a side, with the sides it owned (nobody else uses them). */
typedef struct conc__ring_thr {
    _Alignas(CONC__CACHELINE) atomic_uint busy;
    struct conc__ring_thr *next_free;
} conc__ring_thr_t;
/* The calling thread's record (conc__ring_nothr until it first claims). */
extern __thread conc__ring_thr_t *conc__ring_me __attribute__((tls_model("initial-exec")));
extern conc__ring_thr_t conc__ring_nothr;
static inline atomic_uint *conc__ring_busy(uintptr_t owner)
{
    return &((conc__ring_thr_t *)owner)->busy;
}

/* Blocking put/get fast path, inline (queue.c): if the calling thread owns
 * the side, one non-exact attempt (as conc__ring_put/get with exact =
 * false); returns 1 (put) / -1 (get) when it does not own it: call the
 * general function then. Put: 0, CONC_EFULL or 1. Get: 1 = got, 0 =
 * empty, -1 = not owner. The same steps as ring.c's owner_put/owner_get. */
static inline int conc__ring_put_owned(conc__ring_t *r, void *item)
{
    conc__ring_thr_t *t = conc__ring_me;
    uintptr_t me = (uintptr_t)t;
    if (atomic_load_explicit(&r->pown, memory_order_relaxed) != me)
        return 1;
    unsigned b = atomic_load_explicit(&t->busy, memory_order_relaxed);
    atomic_store_explicit(&t->busy, b + 1, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst); /* the revoker's membarrier is the fence */
    int rc = 1;
    if (__builtin_expect(atomic_load_explicit(&r->pown, memory_order_relaxed) == me, 1)) {
        size_t pos = atomic_load_explicit(&r->enq, memory_order_relaxed);
        conc__cell_t *c = &r->cells[r->mask ? (pos & r->mask) : (pos % r->cap)];
        rc = CONC_EFULL;
        conc__prefetchw(c);
        if (atomic_load_explicit(&c->seq, memory_order_acquire) == pos) {
            atomic_store_explicit(&r->enq, pos + 1, memory_order_relaxed);
            atomic_store_explicit((void *_Atomic *)&c->item, item, memory_order_relaxed);
            atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
            rc = 0;
        }
    }
    atomic_store_explicit(&t->busy, b, memory_order_release);
    return rc;
}
static inline int conc__ring_get_owned(conc__ring_t *r, void **item)
{
    conc__ring_thr_t *t = conc__ring_me;
    uintptr_t me = (uintptr_t)t;
    if (atomic_load_explicit(&r->cown, memory_order_relaxed) != me)
        return -1;
    unsigned b = atomic_load_explicit(&t->busy, memory_order_relaxed);
    atomic_store_explicit(&t->busy, b + 1, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
    int rc = -1;
    if (__builtin_expect(atomic_load_explicit(&r->cown, memory_order_relaxed) == me, 1)) {
        size_t pos = atomic_load_explicit(&r->deq, memory_order_relaxed);
        conc__cell_t *c = &r->cells[r->mask ? (pos & r->mask) : (pos % r->cap)];
        rc = 0;
        conc__prefetchw(c);
        if (atomic_load_explicit(&c->seq, memory_order_acquire) == pos + 1) {
            atomic_store_explicit(&r->deq, pos + 1, memory_order_relaxed);
            *item = c->item;
            atomic_store_explicit(&c->seq, pos + r->cap, memory_order_release);
            rc = 1;
        }
    }
    atomic_store_explicit(&t->busy, b, memory_order_release);
    return rc;
}

/* For a sleeper (a getter: getter = true; a putter: false) that has
 * counted itself in (a seq_cst RMW) and is about to re-check: whether it
 * must pair that re-check with conc__fence_heavy, because the side that
 * would wake it (the put side for a getter) is owned by another thread,
 * whose wake-up check follows only a compiler fence. Not needed when the
 * side is unowned (a later claim is a seq_cst CAS), shared (its owner
 * operations, if any, were handed over), or owned by this very thread
 * (green threads of one hub: program order). When such sleeps come often
 * (few items between them), a membarrier each costs more than the owner
 * path saves: the side is then made shared instead. */
bool conc__ring_sleep_fence_slow(conc__ring_t *r, bool getter);
static inline bool conc__ring_sleep_fence(conc__ring_t *r, bool getter)
{
    uintptr_t o = atomic_load(getter ? &r->pown : &r->cown);
    if (o == CONC__RING_OWN_NONE || o == CONC__RING_OWN_SHARED || o == (uintptr_t)conc__ring_me)
        return false;
    return conc__ring_sleep_fence_slow(r, getter);
}
static inline size_t conc__ring_size(const conc__ring_t *r)
{
    size_t d = atomic_load((atomic_size_t *)&r->deq) & ~CONC__RING_SHARED_BIT;
    size_t e = atomic_load((atomic_size_t *)&r->enq) & ~CONC__RING_FLAGS;
    return e > d ? (e - d > r->cap ? r->cap : e - d) : 0;
}

/* ------------------------------------------------------------------ segq */

#define CONC__SEG_ITEMS 255

typedef struct {
    void *item;
    atomic_uint full; /* published by the producer (release) */
} conc__slot_t;

typedef struct conc__seg {
    struct conc__seg *_Atomic next;
    conc__slot_t slots[CONC__SEG_ITEMS];
} conc__seg_t;

typedef struct {
    _Alignas(CONC__CACHELINE) conc__spin_t tail_lock;
    conc__seg_t *tail;
    size_t tail_i;
    atomic_size_t puts;
    _Alignas(CONC__CACHELINE) conc__spin_t head_lock;
    conc__seg_t *head;
    size_t head_i;
    atomic_size_t gets;
    _Alignas(CONC__CACHELINE) conc__seg_t *_Atomic spare; /* one recycled segment */
    size_t bound;                                          /* 0: unbounded */
    atomic_bool closed;                                    /* set under tail_lock */
} conc__segq_t;

int conc__segq_init(conc__segq_t *q, size_t bound);
void conc__segq_destroy(conc__segq_t *q);
/* 0, CONC_EFULL (bounded), CONC_ESHUTDOWN (closed) or CONC_ENOMEM */
int conc__segq_put(conc__segq_t *q, void *item);
void conc__segq_close(conc__segq_t *q);
bool conc__segq_get(conc__segq_t *q, void **item);
bool conc__segq_peek(conc__segq_t *q, void **item);
static inline size_t conc__segq_size(const conc__segq_t *q)
{
    size_t g = atomic_load((atomic_size_t *)&q->gets);
    size_t p = atomic_load((atomic_size_t *)&q->puts);
    return p > g ? p - g : 0;
}

/* ----------------------------------------------------------------- heapq */

typedef struct {
    void *item;
    uint64_t seq; /* insertion order: ties come out first-in first-out */
} conc__hent_t;

typedef struct {
    conc__spin_t lock;
    bool lifo;
    conc_queue_cmp_fn cmp;     /* NULL: compare (uintptr_t)item */
    conc__hent_t *v;
    size_t n, cap;
    size_t maxsize;            /* 0: unbounded */
    uint64_t seq;
    atomic_size_t count;
    atomic_size_t puts;
    bool closed;               /* under lock */
} conc__heapq_t;

int conc__heapq_init(conc__heapq_t *h, bool lifo, conc_queue_cmp_fn cmp, size_t maxsize);
void conc__heapq_destroy(conc__heapq_t *h);
/* 0, CONC_EFULL, CONC_ESHUTDOWN (closed) or CONC_ENOMEM */
int conc__heapq_put(conc__heapq_t *h, void *item);
void conc__heapq_close(conc__heapq_t *h);
bool conc__heapq_get(conc__heapq_t *h, void **item);
bool conc__heapq_peek(conc__heapq_t *h, void **item);

#endif
