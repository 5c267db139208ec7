/* deque.c — see deque.h. */
#include "futures/deque.h"

#include "core/fence.h"

#include <stdlib.h>

static conc__darray_t *darray_new(size_t size)
{
    conc__darray_t *a = malloc(sizeof *a + size * sizeof a->slot[0]);
    if (!a)
        return NULL;
    a->size = size;
    a->prev = NULL;
    for (size_t i = 0; i < size; i++)
        atomic_init(&a->slot[i], NULL);
    return a;
}

int conc__deque_init(conc__deque_t *d, size_t size)
{
    conc__darray_t *a = darray_new(size);
    if (!a)
        return CONC_ENOMEM;
    atomic_init(&d->top, 1);
    atomic_init(&d->bottom, 1);
    atomic_init(&d->array, a);
    d->owner = 0;
    d->next = NULL;
    return 0;
}

void conc__deque_destroy(conc__deque_t *d)
{
    conc__darray_t *a = atomic_load_explicit(&d->array, memory_order_relaxed);
    while (a) {
        conc__darray_t *p = a->prev;
        free(a);
        a = p;
    }
}

bool conc__deque_grow(conc__deque_t *d, size_t b, size_t t)
{
    conc__darray_t *a = atomic_load_explicit(&d->array, memory_order_relaxed);
    conc__darray_t *n = darray_new(a->size * 2);
    if (!n)
        return false;
    for (size_t i = t; i < b; i++)
        atomic_store_explicit(&n->slot[i & (n->size - 1)],
                              atomic_load_explicit(&a->slot[i & (a->size - 1)], memory_order_relaxed),
                              memory_order_relaxed);
    n->prev = a;
    atomic_store_explicit(&d->array, n, memory_order_release);
    return true;
}

/* One steal: the oldest entry, if there is one (and, when bounded, its
 * index is min or above). */
static inline conc_future_t *steal_one(conc__deque_t *d, bool bounded, size_t min)
{
    size_t t = atomic_load_explicit(&d->top, memory_order_acquire);
    if (bounded && (intptr_t)(t - min) < 0)
        return NULL;
    conc__fence_full();
    size_t b = atomic_load_explicit(&d->bottom, memory_order_acquire);
    if ((intptr_t)(b - t) <= 0)
        return NULL;
    conc__darray_t *a = atomic_load_explicit(&d->array, memory_order_consume);
    conc_future_t *f = atomic_load_explicit(&a->slot[t & (a->size - 1)], memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(&d->top, &t, t + 1, memory_order_seq_cst,
                                                 memory_order_relaxed))
        return NULL;
    return f;
}

conc_future_t *conc__deque_steal(conc__deque_t *d)
{
    return steal_one(d, false, 0);
}

conc_future_t *conc__deque_steal_min(conc__deque_t *d, size_t min)
{
    return steal_one(d, true, min);
}

size_t conc__deque_steal_batch(conc__deque_t *d, conc_future_t **out, size_t max)
{
    size_t t = atomic_load_explicit(&d->top, memory_order_acquire);
    conc__fence_full();
    size_t b = atomic_load_explicit(&d->bottom, memory_order_acquire);
    if ((intptr_t)(b - t) <= 0)
        return 0;
    size_t k = (b - t + 1) / 2;
    if (k > max)
        k = max;
    conc__darray_t *a = atomic_load_explicit(&d->array, memory_order_consume);
    for (size_t i = 0; i < k; i++)
        out[i] = atomic_load_explicit(&a->slot[(t + i) & (a->size - 1)], memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(&d->top, &t, t + k, memory_order_seq_cst,
                                                 memory_order_relaxed))
        return 0;
    return k;
}
