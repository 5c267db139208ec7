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
 */
#include <stdlib.h>

#include "queue/container.h"

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

void conc__ring_close(conc__ring_t *r)
{
    atomic_fetch_or_explicit(&r->enq, CONC__RING_CLOSED, memory_order_seq_cst);
}

/* A claimed cell still unpublished after many rounds, in a child that a
 * fork may have left with a dead claimer. */
static bool stuck_since_fork(unsigned *spins)
{
    return ++*spins > (1u << 14) && conc__load(&conc__fork_orphans, RLX);
}

int conc__ring_put(conc__ring_t *r, void *item, bool exact)
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
            if (pos - deq >= r->cap || stuck_since_fork(&spins))
                return CONC_EFULL;
            conc__cpu_relax();
            pos = atomic_load_explicit(&r->enq, memory_order_relaxed);
        } else {
            pos = atomic_load_explicit(&r->enq, memory_order_relaxed);
        }
    }
}

bool conc__ring_get(conc__ring_t *r, void **item, bool exact)
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
            if (enq == pos || stuck_since_fork(&spins))
                return false;
            conc__cpu_relax();
            pos = atomic_load_explicit(&r->deq, memory_order_relaxed);
        } else {
            pos = atomic_load_explicit(&r->deq, memory_order_relaxed);
        }
    }
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
