/*
 * deque.h — a work-stealing deque (Chase & Lev; the C11 formulation of Lê
 * et al.) holding future pointers (private).
 *
 * One owner pushes and pops at the bottom (LIFO, no atomic RMW except when
 * racing a thief for the last item); any thread steals from the top with a
 * CAS (FIFO). The array grows by doubling; old arrays stay allocated until
 * the deque is destroyed, since a thief may still be reading one.
 */
#ifndef CONC_FUTURES_DEQUE_H
#define CONC_FUTURES_DEQUE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conc/futures.h"

typedef struct conc__darray {
    size_t size; /* power of two */
    struct conc__darray *prev; /* retired arrays, freed at destroy */
    _Atomic(conc_future_t *) slot[];
} conc__darray_t;

typedef struct conc__deque {
    _Alignas(64) atomic_size_t top;
    _Alignas(64) atomic_size_t bottom;
    _Atomic(conc__darray_t *) array;
    uintptr_t owner;            /* context id of the owner (external deques) */
    struct conc__deque *next;   /* in the pool's list */
} conc__deque_t;

int conc__deque_init(conc__deque_t *d, size_t size);
void conc__deque_destroy(conc__deque_t *d);
/* Owner only. false: out of memory. The push is a release store; the
 * pool pairs it with sleepers through the asymmetric fences of fence.h. */
bool conc__deque_push(conc__deque_t *d, conc_future_t *f);
conc_future_t *conc__deque_pop(conc__deque_t *d);   /* owner only; NULL: empty */
conc_future_t *conc__deque_steal(conc__deque_t *d); /* anyone; NULL: empty or lost a race */
/* Owner only: the item a pop would return now, without taking it (NULL:
 * empty). A thief may still take it before the owner's pop. */
conc_future_t *conc__deque_peek(conc__deque_t *d);
/* Steal up to max items at once (about half of what is there) into out[];
 * returns how many. Only for deques whose owner never pops (outside
 * submitters' deques): an owner pop could race for the same items. */
size_t conc__deque_steal_batch(conc__deque_t *d, conc_future_t **out, size_t max);
/* How many items it holds (a snapshot). */
static inline size_t conc__deque_size(conc__deque_t *d)
{
    size_t t = atomic_load_explicit(&d->top, memory_order_acquire);
    size_t b = atomic_load_explicit(&d->bottom, memory_order_acquire);
    return (intptr_t)(b - t) > 0 ? b - t : 0;
}
static inline bool conc__deque_nonempty(conc__deque_t *d)
{
    size_t t = atomic_load_explicit(&d->top, memory_order_seq_cst);
    size_t b = atomic_load_explicit(&d->bottom, memory_order_seq_cst);
    return (intptr_t)(b - t) > 0;
}

#endif
