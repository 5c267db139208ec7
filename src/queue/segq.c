/*
 * segq.c — unbounded FIFO: a linked list of segments of CONC__SEG_ITEMS
 * slots. Producers serialise on tail_lock and consumers on head_lock (two
 * locks: a producer and a consumer never wait for each other). `puts`
 * counts items ever put and is written with a seq_cst RMW after the slot
 * (and any new segment link) is written, so a consumer that sees
 * gets < puts will find the item, following `next` into a new segment if
 * needed. A consumer that leaves a segment keeps one as a spare for the
 * producers, so a steady queue does not call malloc. With a bound (big
 * bounded queues, where a ring would allocate every slot up front) a
 * producer compares puts - gets with it; gets is stored seq_cst so a
 * sleeping producer's re-check and the consumer's wake check pair up.
 */
#include <stdlib.h>

#include "queue/container.h"

static conc__seg_t *seg_new(conc__segq_t *q)
{
    conc__seg_t *s = atomic_exchange_explicit(&q->spare, NULL, memory_order_acquire);
    if (!s && !(s = malloc(sizeof *s)))
        return NULL;
    atomic_store_explicit(&s->next, NULL, memory_order_relaxed);
    return s;
}

void conc__segq_close(conc__segq_t *q)
{
    conc__spin_lock(&q->tail_lock);
    atomic_store_explicit(&q->closed, true, memory_order_seq_cst);
    conc__spin_unlock(&q->tail_lock);
}

int conc__segq_init(conc__segq_t *q, size_t bound)
{
    q->bound = bound;
    atomic_init(&q->closed, false);
    atomic_init(&q->spare, NULL);
    conc__seg_t *s = seg_new(q);
    if (!s)
        return CONC_ENOMEM;
    atomic_init(&q->tail_lock.v, 0);
    atomic_init(&q->head_lock.v, 0);
    q->head = q->tail = s;
    q->head_i = q->tail_i = 0;
    atomic_init(&q->puts, 0);
    atomic_init(&q->gets, 0);
    return 0;
}

void conc__segq_destroy(conc__segq_t *q)
{
    conc__seg_t *s = q->head;
    while (s) {
        conc__seg_t *n = atomic_load_explicit(&s->next, memory_order_relaxed);
        free(s);
        s = n;
    }
    free(atomic_load_explicit(&q->spare, memory_order_relaxed));
    q->head = q->tail = NULL;
}

int conc__segq_put(conc__segq_t *q, void *item)
{
    conc__spin_lock(&q->tail_lock);
    if (atomic_load_explicit(&q->closed, memory_order_relaxed)) {
        conc__spin_unlock(&q->tail_lock);
        return CONC_ESHUTDOWN;
    }
    if (q->bound && atomic_load_explicit(&q->puts, memory_order_relaxed) -
                            atomic_load_explicit(&q->gets, memory_order_seq_cst) >=
                        q->bound) {
        conc__spin_unlock(&q->tail_lock);
        return CONC_EFULL;
    }
    if (q->tail_i == CONC__SEG_ITEMS) {
        conc__seg_t *s = seg_new(q);
        if (!s) {
            conc__spin_unlock(&q->tail_lock);
            return CONC_ENOMEM;
        }
        atomic_store_explicit(&q->tail->next, s, memory_order_release);
        q->tail = s;
        q->tail_i = 0;
    }
    q->tail->items[q->tail_i++] = item;
    atomic_fetch_add_explicit(&q->puts, 1, memory_order_seq_cst); /* publishes the slot */
    conc__spin_unlock(&q->tail_lock);
    return 0;
}

bool conc__segq_get(conc__segq_t *q, void **item)
{
    /* Cheap emptiness check before touching the consumer lock. */
    if (atomic_load_explicit(&q->gets, memory_order_relaxed) ==
        atomic_load_explicit(&q->puts, memory_order_acquire))
        return false;
    conc__spin_lock(&q->head_lock);
    size_t g = atomic_load_explicit(&q->gets, memory_order_relaxed);
    if (g == atomic_load_explicit(&q->puts, memory_order_acquire)) {
        conc__spin_unlock(&q->head_lock);
        return false;
    }
    if (q->head_i == CONC__SEG_ITEMS) {
        conc__seg_t *old = q->head;
        q->head = atomic_load_explicit(&old->next, memory_order_acquire);
        q->head_i = 0;
        conc__seg_t *prev = atomic_exchange_explicit(&q->spare, old, memory_order_acq_rel);
        free(prev);
    }
    *item = q->head->items[q->head_i++];
    atomic_store_explicit(&q->gets, g + 1, memory_order_seq_cst);
    conc__spin_unlock(&q->head_lock);
    return true;
}
