/*
 * ring.c — bounded MPMC FIFO: an array of cells, each with a sequence
 * number saying whose turn it is (after D. Vyukov's bounded queue).
 *
 * Cell i starts with seq = i. A producer holding ticket p (from `enq`) may
 * fill cell p % cap when its seq == p, then sets seq = p + 1; a consumer
 * with ticket d may empty cell d % cap when seq == d + 1, then sets
 * seq = d + cap (the producer one lap later). Tickets are taken with a CAS
 * only when the cell is ready, so `enq - deq` never exceeds cap and the
 * counters double as the queue's put/get totals. Any capacity works
 * (modulo; a mask when it is a power of two).
 *
 * A cell can be "claimed but not yet published" for a few instructions.
 * In exact mode put/get then spin instead of reporting full/empty, so
 * put_nowait fails only when the queue really holds cap items (and
 * get_nowait only when it holds none); the blocking fast paths skip that
 * check (it reads the other side's counter, a cache line the other side
 * writes on every operation) and re-check exactly before sleeping.
 *
 * After a raw fork() the claiming thread may not exist: its cell stays
 * claimed for good. So in a process forked while other threads ran (or
 * descended from one: conc__fork_orphans, core/park.h) a spin that lasts
 * ~16k rounds gives up and answers full/empty; the caller's blocking path
 * then waits with its own deadline instead of spinning forever. (There a
 * preempted claimer can cause such an answer too; blocking callers
 * re-check, so only the _nowait calls can see a spurious Full/Empty. A
 * child forked from a single thread — every fork-server child — stays
 * exact.)
 *
 * Owner paths (one producer, one consumer). A ticket CAS is a locked
 * instruction: it drains the store buffer, so every put/get waits for the
 * cache line of the cell it just wrote to come back from the other core.
 * Most rings have one producing and one consuming thread, so each side
 * has an owner word (pown, cown): the first thread to put (get) claims
 * its side, and while it owns it, it takes tickets with a plain load and
 * store of enq (deq) — the same steps as the CAS path (claim, then fill
 * or empty the cell, then publish its seq), so a half-done owner step
 * looks like a claimed, unpublished cell to everybody else. The owner
 * brackets each operation with a busy flag, stored without a fence and
 * followed by a re-read of the owner word. Another thread that wants the
 * side (or close()) revokes it for good: owner word -> REVOKING,
 * membarrier(2) (conc__fence_heavy: every running thread of the process
 * executes a full barrier, so either the owner's re-read sees REVOKING or
 * the revoker sees busy), waits for busy == 0, then SHARED: from then on
 * everybody uses the CAS path. Only a process where membarrier works
 * claims sides (conc__membarrier_init); a revocation in a child that a
 * fork left without the owner stops waiting as a stuck claim does — only
 * for a side claimed before that fork (pgen/cgen: the fork generation of
 * the claim); an owner claimed in this process is alive and waited for.
 *
 * Sleeping (queue.c): the owner's wake-up check (a load of the sleeper
 * count after the publishing stores) has no RMW before it, so a sleeper
 * waiting on a side owned by another thread pairs its re-check with a
 * heavy fence, as with segq (conc__ring_sleep_fence; not when the owner
 * is its own thread, e.g. green threads of one hub). Where sleeps come
 * every few items (hand-offs between threads), those membarriers would
 * cost more than the owner path saves, so after a run of such close
 * sleeps the side is made shared. FIFO puts and gets are not async-signal-safe
 * (Python's are not either): a handler that puts to a ring its thread owns
 * while that thread is mid-put would take the same ticket.
 */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

#include "core/fence.h"
#include "queue/container.h"

/* This thread's id as a side owner (never 0, 1 or 2). */
__thread char conc__ring_self __attribute__((tls_model("initial-exec")));
static inline uintptr_t self_id(void)
{
    return (uintptr_t)&conc__ring_self;
}

/* The thread that made the last fork (in a child: its only thread, still
 * the owner of the sides it owned before the fork). */
static uintptr_t fork_survivor;
static void ring_atfork_child(void)
{
    atomic_store_explicit((_Atomic uintptr_t *)&fork_survivor, self_id(), memory_order_relaxed);
}
__attribute__((constructor)) static void ring_fork_init(void)
{
    pthread_atfork(NULL, NULL, ring_atfork_child);
}

int conc__ring_init(conc__ring_t *r, size_t cap)
{
    r->cells = malloc(cap * sizeof *r->cells);
    if (!r->cells)
        return CONC_ENOMEM;
    for (size_t i = 0; i < cap; i++) {
        atomic_init(&r->cells[i].seq, i);
        r->cells[i].item = NULL;
    }
    r->cap = cap;
    r->mask = (cap & (cap - 1)) == 0 ? cap - 1 : 0;
    atomic_init(&r->enq, 0);
    atomic_init(&r->deq, 0);
    atomic_init(&r->pown, CONC__RING_OWN_NONE);
    atomic_init(&r->cown, CONC__RING_OWN_NONE);
    atomic_init(&r->pbusy, 0);
    atomic_init(&r->cbusy, 0);
    atomic_init(&r->pgen, 0);
    atomic_init(&r->cgen, 0);
    atomic_init(&r->fence_mark[0], 0);
    atomic_init(&r->fence_mark[1], 0);
    atomic_init(&r->fence_strikes, 0);
    conc__membarrier_init(); /* once per process: sides may be claimed */
    return 0;
}

void conc__ring_destroy(conc__ring_t *r)
{
    free(r->cells);
    r->cells = NULL;
}

static inline conc__cell_t *cell_at(conc__ring_t *r, size_t pos)
{
    return &r->cells[r->mask ? (pos & r->mask) : (pos % r->cap)];
}

/* A claimed cell still unpublished after many rounds, in a child that a
 * fork may have left with a dead claimer. */
static bool stuck_since_fork(unsigned *spins)
{
    return ++*spins > (1u << 14) && conc__load(&conc__fork_orphans, RLX);
}

/* Wait a round for a cell another thread claimed but has not published
 * yet (true: give up, see stuck_since_fork). Its claimer is normally a few
 * instructions from done, but it may have been preempted there: with more
 * threads than CPUs it then waits in a run queue, behind the very threads
 * spinning for it, so after a short spin each round yields the CPU. */
static bool mid_way_wait(unsigned *spins)
{
    if (stuck_since_fork(spins))
        return true;
    if ((*spins & 63) != 0)
        conc__cpu_relax();
    else
        sched_yield();
    return false;
}

/* The calling thread does not own the side: claim it if nobody has yet
 * and may_claim (returns true: the caller owns it now), else make it
 * shared for good (returns false: use the CAS path). gen: the fork
 * generation the side was claimed in. Only an owner claimed in an older
 * generation (a thread of an ancestor process, left behind by a fork) may
 * be given up on while busy, unless it is the thread that forked (alive
 * here); an owner of this process is alive and its operation ends,
 * however long it is preempted. */
static bool side_take(_Atomic uintptr_t *own, atomic_uint *busy, atomic_uint *gen, uintptr_t me,
                      bool may_claim)
{
    uintptr_t o = atomic_load_explicit(own, memory_order_acquire);
    for (;;) {
        if (o == CONC__RING_OWN_SHARED)
            return false;
        if (o == CONC__RING_OWN_REVOKING) {
            /* another thread is handing it over: wait for SHARED */
            for (unsigned n = 0; (o = atomic_load_explicit(own, memory_order_acquire)) ==
                                 CONC__RING_OWN_REVOKING;)
                if (++n < 64)
                    conc__cpu_relax();
                else
                    sched_yield();
            continue;
        }
        if (o == CONC__RING_OWN_NONE) {
            uintptr_t want = may_claim && conc__membarrier_init() ? me : CONC__RING_OWN_SHARED;
            /* (racing claimers of one process store the same value) */
            atomic_store_explicit(gen, conc__load(&conc__fork_gen, RLX), memory_order_relaxed);
            if (atomic_compare_exchange_strong_explicit(own, &o, want, memory_order_seq_cst,
                                                        memory_order_acquire))
                return want == me;
            continue;
        }
        if (o == me)
            return true;
        if (!atomic_compare_exchange_strong_explicit(own, &o, CONC__RING_OWN_REVOKING, memory_order_seq_cst,
                                                     memory_order_acquire))
            continue;
        /* Either the owner's re-read of `own` sees REVOKING, or we see its
         * busy flag: wait until its operation is over. */
        conc__fence_heavy();
        unsigned spins = 0;
        /* (claimed before a fork, by another thread than the forking one) */
        bool left_behind = atomic_load_explicit(gen, memory_order_relaxed) != conc__load(&conc__fork_gen, RLX) &&
                           o != atomic_load_explicit((_Atomic uintptr_t *)&fork_survivor, memory_order_relaxed);
        while (atomic_load_explicit(busy, memory_order_acquire)) {
            if (left_behind ? stuck_since_fork(&spins) : (++spins, false))
                break;
            if ((spins & 63) != 63)
                conc__cpu_relax();
            else
                sched_yield();
        }
        atomic_store_explicit(own, CONC__RING_OWN_SHARED, memory_order_seq_cst);
        return false;
    }
}

/* Enter the owner path: true if the calling thread owns the side (busy is
 * set then; the caller clears it with side_leave). */
static inline bool side_enter(_Atomic uintptr_t *own, atomic_uint *busy, uintptr_t me)
{
    if (atomic_load_explicit(own, memory_order_relaxed) != me)
        return false;
    atomic_store_explicit(busy, 1, memory_order_relaxed);
    /* no hardware fence: the revoker's membarrier stands in for it */
    atomic_signal_fence(memory_order_seq_cst);
    if (__builtin_expect(atomic_load_explicit(own, memory_order_relaxed) == me, 1))
        return true;
    atomic_store_explicit(busy, 0, memory_order_release);
    return false;
}

static inline void side_leave(atomic_uint *busy)
{
    atomic_store_explicit(busy, 0, memory_order_release);
}

/* Sleeps closer than this many items apart are strikes; this many strikes
 * make the side shared. */
#define FENCE_NEAR 256
#define FENCE_STRIKES 16

bool conc__ring_sleep_fence_slow(conc__ring_t *r, bool getter)
{
    _Atomic uintptr_t *own = getter ? &r->pown : &r->cown;
    atomic_uint *busy = getter ? &r->pbusy : &r->cbusy;
    atomic_uint *gen = getter ? &r->pgen : &r->cgen;
    uintptr_t o = atomic_load(own);
    if (o == CONC__RING_OWN_NONE || o == CONC__RING_OWN_SHARED || o == self_id())
        return false;
    if (o != CONC__RING_OWN_REVOKING) {
        size_t now = atomic_load_explicit(getter ? &r->enq : &r->deq, memory_order_relaxed) & ~CONC__RING_CLOSED;
        size_t last = atomic_exchange_explicit(&r->fence_mark[getter], now, memory_order_relaxed);
        if (now - last >= FENCE_NEAR) {
            atomic_store_explicit(&r->fence_strikes, 0, memory_order_relaxed);
            return true;
        }
        if (atomic_fetch_add_explicit(&r->fence_strikes, 1, memory_order_relaxed) + 1 < FENCE_STRIKES)
            return true;
    }
    /* hand the side over (its own heavy fence orders the owner's last
     * operations before our re-check); from now on its puts use the RMW */
    side_take(own, busy, gen, CONC__RING_OWN_NONE, false);
    return false;
}

void conc__ring_close(conc__ring_t *r)
{
    /* The CLOSED bit is set with an RMW, so no owner may store enq. */
    side_take(&r->pown, &r->pbusy, &r->pgen, CONC__RING_OWN_NONE, false);
    atomic_fetch_or_explicit(&r->enq, CONC__RING_CLOSED, memory_order_seq_cst);
}

/* The owner's put: only it stores enq (close revokes first). */
static inline int owner_put(conc__ring_t *r, void *item, bool exact)
{
    unsigned spins = 0;
    size_t pos = atomic_load_explicit(&r->enq, memory_order_relaxed);
    conc__cell_t *c = cell_at(r, pos);
    for (;;) {
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        if (seq == pos) {
            atomic_store_explicit(&r->enq, pos + 1, memory_order_relaxed);
            atomic_store_explicit((void *_Atomic *)&c->item, item, memory_order_relaxed);
            atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
            return 0;
        }
        /* Full by this cell. Really full, or a consumer is mid-way? */
        if (!exact)
            return CONC_EFULL;
        size_t deq = atomic_load_explicit(&r->deq, memory_order_acquire);
        if (pos - deq >= r->cap || mid_way_wait(&spins))
            return CONC_EFULL;
    }
}

/* The owner's get: only it stores deq. */
static inline bool owner_get(conc__ring_t *r, void **item, bool exact)
{
    unsigned spins = 0;
    size_t pos = atomic_load_explicit(&r->deq, memory_order_relaxed);
    conc__cell_t *c = cell_at(r, pos);
    for (;;) {
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        if (seq == pos + 1) {
            atomic_store_explicit(&r->deq, pos + 1, memory_order_relaxed);
            *item = c->item;
            atomic_store_explicit(&c->seq, pos + r->cap, memory_order_release);
            return true;
        }
        /* Empty by this cell. Really empty, or a producer is mid-way? */
        if (!exact)
            return false;
        size_t enq = atomic_load_explicit(&r->enq, memory_order_acquire) & ~CONC__RING_CLOSED;
        if (enq == pos || mid_way_wait(&spins))
            return false;
    }
}

/* The CAS path (a shared side). */
static __attribute__((noinline)) int shared_put(conc__ring_t *r, void *item, bool exact)
{
    unsigned spins = 0;
    size_t pos = atomic_load_explicit(&r->enq, memory_order_relaxed);
    for (;;) {
        if (pos & CONC__RING_CLOSED)
            return CONC_ESHUTDOWN;
        conc__cell_t *c = cell_at(r, pos);
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)pos;
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&r->enq, &pos, pos + 1, memory_order_seq_cst,
                                                      memory_order_relaxed)) {
                /* atomic (relaxed: a plain mov): conc__ring_peek may read
                 * this cell while the next lap's put writes it */
                atomic_store_explicit((void *_Atomic *)&c->item, item, memory_order_relaxed);
                atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
                return 0;
            }
        } else if (dif < 0) {
            /* Full by this cell. Really full, or a consumer is mid-way? */
            if (!exact)
                return CONC_EFULL;
            size_t deq = atomic_load_explicit(&r->deq, memory_order_acquire);
            if (pos - deq >= r->cap || mid_way_wait(&spins))
                return CONC_EFULL;
            pos = atomic_load_explicit(&r->enq, memory_order_relaxed);
        } else {
            pos = atomic_load_explicit(&r->enq, memory_order_relaxed);
        }
    }
}

/* A side nobody owns yet, or being handed over: claim it or share it. */
static __attribute__((noinline)) int claim_put(conc__ring_t *r, void *item, bool exact)
{
    uintptr_t me = self_id();
    if (side_take(&r->pown, &r->pbusy, &r->pgen, me, true) && side_enter(&r->pown, &r->pbusy, me)) {
        int rc = owner_put(r, item, exact);
        side_leave(&r->pbusy);
        return rc;
    }
    return shared_put(r, item, exact);
}

int conc__ring_put(conc__ring_t *r, void *item, bool exact)
{
    if (side_enter(&r->pown, &r->pbusy, self_id())) {
        int rc = owner_put(r, item, exact);
        side_leave(&r->pbusy);
        return rc;
    }
    /* acquire: pairs with the revoker's SHARED store, so the former owner's
     * last ticket store is before our CAS (C11; x86 and ARMv8 order it anyway) */
    if (atomic_load_explicit(&r->pown, memory_order_acquire) == CONC__RING_OWN_SHARED)
        return shared_put(r, item, exact);
    return claim_put(r, item, exact);
}

/* The CAS path (a shared side). */
static __attribute__((noinline)) bool shared_get(conc__ring_t *r, void **item, bool exact)
{
    unsigned spins = 0;
    size_t pos = atomic_load_explicit(&r->deq, memory_order_relaxed);
    for (;;) {
        conc__cell_t *c = cell_at(r, pos);
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)(pos + 1);
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&r->deq, &pos, pos + 1, memory_order_seq_cst,
                                                      memory_order_relaxed)) {
                *item = c->item;
                atomic_store_explicit(&c->seq, pos + r->cap, memory_order_release);
                return true;
            }
        } else if (dif < 0) {
            /* Empty by this cell. Really empty, or a producer is mid-way? */
            if (!exact)
                return false;
            size_t enq = atomic_load_explicit(&r->enq, memory_order_acquire) & ~CONC__RING_CLOSED;
            if (enq == pos || mid_way_wait(&spins))
                return false;
            pos = atomic_load_explicit(&r->deq, memory_order_relaxed);
        } else {
            pos = atomic_load_explicit(&r->deq, memory_order_relaxed);
        }
    }
}

/* A side nobody owns yet, or being handed over: claim it or share it. */
static __attribute__((noinline)) bool claim_get(conc__ring_t *r, void **item, bool exact)
{
    uintptr_t me = self_id();
    if (side_take(&r->cown, &r->cbusy, &r->cgen, me, true) && side_enter(&r->cown, &r->cbusy, me)) {
        bool ok = owner_get(r, item, exact);
        side_leave(&r->cbusy);
        return ok;
    }
    return shared_get(r, item, exact);
}

bool conc__ring_get(conc__ring_t *r, void **item, bool exact)
{
    if (side_enter(&r->cown, &r->cbusy, self_id())) {
        bool ok = owner_get(r, item, exact);
        side_leave(&r->cbusy);
        return ok;
    }
    /* acquire: pairs with the revoker's SHARED store, so the former owner's
     * last ticket store is before our CAS (C11; x86 and ARMv8 order it anyway) */
    if (atomic_load_explicit(&r->cown, memory_order_acquire) == CONC__RING_OWN_SHARED)
        return shared_get(r, item, exact);
    return claim_get(r, item, exact);
}

/* Queue.peek: the next item, left in place. A cell's item is read only
 * while its sequence says "full, not taken", then both counters are read
 * again: if a consumer took it meanwhile (and a producer of the next lap
 * may be rewriting it), the read is thrown away and retried — a seqlock. */
bool conc__ring_peek(conc__ring_t *r, void **item)
{
    for (;;) {
        size_t pos = atomic_load_explicit(&r->deq, memory_order_acquire);
        conc__cell_t *c = &r->cells[r->mask ? (pos & r->mask) : (pos % r->cap)];
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        if (seq != pos + 1) {
            if ((intptr_t)(seq - (pos + 1)) < 0)
                return false; /* empty (or its item is still being written) */
            continue;         /* taken meanwhile: look again */
        }
        void *it = atomic_load_explicit((void *_Atomic *)&c->item, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&c->seq, memory_order_relaxed) == seq &&
            atomic_load_explicit(&r->deq, memory_order_relaxed) == pos) {
            *item = it;
            return true;
        }
    }
}
