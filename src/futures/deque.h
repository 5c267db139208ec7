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
#include "core/fence.h"

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
/* The array is full: double it (owner only; false: out of memory). */
bool conc__deque_grow(conc__deque_t *d, size_t b, size_t t);

/* Owner only. false: out of memory. The push is a release store; the
 * pool pairs it with sleepers through the asymmetric fences of fence.h.
 * Push, pop and peek are inline: a nested task pays one of each. */
static inline bool conc__deque_push(conc__deque_t *d, conc_future_t *f)
{
    size_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    size_t t = atomic_load_explicit(&d->top, memory_order_acquire);
    conc__darray_t *a = atomic_load_explicit(&d->array, memory_order_relaxed);
    if (__builtin_expect(b - t >= a->size, 0)) {
        if (!conc__deque_grow(d, b, t))
            return false;
        a = atomic_load_explicit(&d->array, memory_order_relaxed);
    }
    atomic_store_explicit(&a->slot[b & (a->size - 1)], f, memory_order_relaxed);
    atomic_store_explicit(&d->bottom, b + 1, memory_order_release);
    return true;
}

/* Owner only: make room for n more pushes (they cannot fail then, as
 * thieves only take items). false: out of memory. */
static inline bool conc__deque_reserve(conc__deque_t *d, size_t n)
{
    size_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    size_t t = atomic_load_explicit(&d->top, memory_order_acquire);
    conc__darray_t *a = atomic_load_explicit(&d->array, memory_order_relaxed);
    return __builtin_expect(b - t + n <= a->size, 1) || conc__deque_grow(d, b, t);
}

/* Owner only; NULL: empty (or a thief took the last item). */
static inline conc_future_t *conc__deque_pop(conc__deque_t *d)
{
    size_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed) - 1;
    conc__darray_t *a = atomic_load_explicit(&d->array, memory_order_relaxed);
    atomic_store_explicit(&d->bottom, b, memory_order_relaxed);
    conc__fence_full();
    size_t t = atomic_load_explicit(&d->top, memory_order_relaxed);
    if ((intptr_t)(b - t) < 0) {
        atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
        return NULL;
    }
    conc_future_t *f = atomic_load_explicit(&a->slot[b & (a->size - 1)], memory_order_relaxed);
    if (b == t) {
        /* The last item: race the thieves for it. */
        if (!atomic_compare_exchange_strong_explicit(&d->top, &t, t + 1, memory_order_seq_cst,
                                                     memory_order_relaxed))
            f = NULL;
        atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
    }
    return f;
}

/* Owner only: the item k pops would return now (k = 1: the next pop's),
 * without taking it (NULL: fewer items). A thief may still take it before
 * the owner's pops; only the pointer is read, never the future. */
static inline conc_future_t *conc__deque_peek_at(conc__deque_t *d, size_t k)
{
    size_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    size_t t = atomic_load_explicit(&d->top, memory_order_acquire);
    if ((intptr_t)(b - t) < (intptr_t)k)
        return NULL;
    conc__darray_t *a = atomic_load_explicit(&d->array, memory_order_relaxed);
    return atomic_load_explicit(&a->slot[(b - k) & (a->size - 1)], memory_order_relaxed);
}
static inline conc_future_t *conc__deque_peek(conc__deque_t *d)
{
    return conc__deque_peek_at(d, 1);
}

conc_future_t *conc__deque_steal(conc__deque_t *d); /* anyone; NULL: empty or lost a race */
/* The same, but only an item at index min or above (pushed when bottom
 * was min or more): NULL also when the top is below min. */
conc_future_t *conc__deque_steal_min(conc__deque_t *d, size_t min);
/* Owner only: the index the next push uses. */
static inline size_t conc__deque_bottom(conc__deque_t *d)
{
    return atomic_load_explicit(&d->bottom, memory_order_relaxed);
}
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
