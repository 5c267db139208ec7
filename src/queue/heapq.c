/*
 * heapq.c — LifoQueue (a stack) and PriorityQueue (a binary min-heap), each
 * under one spin lock. Heap entries carry an insertion number that breaks
 * ties, so items that compare equal come out first-in first-out. `count`
 * and `puts` are updated with seq_cst RMWs inside the lock for the
 * sleeping protocol described in container.h.
 */
#include <stdlib.h>

#include "queue/container.h"

int conc__heapq_init(conc__heapq_t *h, bool lifo, conc_queue_cmp_fn cmp, size_t maxsize)
{
    atomic_init(&h->lock.v, 0);
    h->lifo = lifo;
    h->cmp = cmp;
    h->maxsize = maxsize;
    h->n = 0;
    h->cap = maxsize && maxsize < 64 ? maxsize : 64;
    h->seq = 0;
    h->closed = false;
    h->v = malloc(h->cap * sizeof *h->v);
    atomic_init(&h->count, 0);
    atomic_init(&h->puts, 0);
    return h->v ? 0 : CONC_ENOMEM;
}

void conc__heapq_destroy(conc__heapq_t *h)
{
    free(h->v);
    h->v = NULL;
}

/* a comes out before b */
static inline bool before(const conc__heapq_t *h, const conc__hent_t *a, const conc__hent_t *b)
{
    if (h->cmp) {
        int c = h->cmp(a->item, b->item);
        if (c)
            return c < 0;
    } else if (a->item != b->item) {
        return (uintptr_t)a->item < (uintptr_t)b->item;
    }
    return a->seq < b->seq;
}

int conc__heapq_put(conc__heapq_t *h, void *item)
{
    conc__spin_lock(&h->lock);
    if (h->closed) {
        conc__spin_unlock(&h->lock);
        return CONC_ESHUTDOWN;
    }
    if (h->maxsize && h->n >= h->maxsize) {
        conc__spin_unlock(&h->lock);
        return CONC_EFULL;
    }
    if (h->n == h->cap) {
        size_t ncap = h->cap * 2;
        conc__hent_t *nv = realloc(h->v, ncap * sizeof *nv);
        if (!nv) {
            conc__spin_unlock(&h->lock);
            return CONC_ENOMEM;
        }
        h->v = nv;
        h->cap = ncap;
    }
    conc__hent_t e = {item, h->seq++};
    size_t i = h->n++;
    if (!h->lifo) {
        while (i > 0) {
            size_t p = (i - 1) / 2;
            if (!before(h, &e, &h->v[p]))
                break;
            h->v[i] = h->v[p];
            i = p;
        }
    }
    h->v[i] = e;
    atomic_fetch_add_explicit(&h->puts, 1, memory_order_seq_cst);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_seq_cst);
    conc__spin_unlock(&h->lock);
    return 0;
}

void conc__heapq_close(conc__heapq_t *h)
{
    conc__spin_lock(&h->lock);
    h->closed = true;
    conc__spin_unlock(&h->lock);
}

bool conc__heapq_get(conc__heapq_t *h, void **item)
{
    if (atomic_load_explicit(&h->count, memory_order_relaxed) == 0)
        return false;
    conc__spin_lock(&h->lock);
    if (h->n == 0) {
        conc__spin_unlock(&h->lock);
        return false;
    }
    if (h->lifo) {
        *item = h->v[--h->n].item;
    } else {
        *item = h->v[0].item;
        conc__hent_t last = h->v[--h->n];
        size_t i = 0, n = h->n;
        for (;;) {
            size_t c = 2 * i + 1;
            if (c >= n)
                break;
            if (c + 1 < n && before(h, &h->v[c + 1], &h->v[c]))
                c++;
            if (!before(h, &h->v[c], &last))
                break;
            h->v[i] = h->v[c];
            i = c;
        }
        if (n)
            h->v[i] = last;
    }
    atomic_fetch_sub_explicit(&h->count, 1, memory_order_seq_cst);
    conc__spin_unlock(&h->lock);
    return true;
}

/* Queue.peek: what get would return next, left in place. */
bool conc__heapq_peek(conc__heapq_t *h, void **item)
{
    if (atomic_load_explicit(&h->count, memory_order_relaxed) == 0)
        return false;
    conc__spin_lock(&h->lock);
    bool ok = h->n > 0;
    if (ok)
        *item = h->lifo ? h->v[h->n - 1].item : h->v[0].item;
    conc__spin_unlock(&h->lock);
    return ok;
}
