/*
 * segq.c — unbounded FIFO: a linked list of segments of CONC__SEG_ITEMS
 * slots. Producers serialise on tail_lock and consumers on head_lock (two
 * locks: a producer and a consumer never wait for each other). A slot is
 * published by a release store of its `full` flag, so a consumer looks at
 * the next slot, not at a counter the producers write — the hot path
 * shares no cache line between the two sides but the slots themselves.
 * `puts` and `gets` are plain counters (each written by one side, under
 * its lock) for qsize and task accounting. The sleeping protocol pairs a
 * producer's compiler-only fence with the sleeper's membarrier
 * (core/fence.h) instead of an atomic RMW per put. A consumer that leaves
 * a segment keeps one as a spare for the producers, so a steady queue does
 * not call malloc. With a bound (big bounded queues, where a ring would
 * allocate every slot up front) a producer compares puts - gets with it.
 */
#include <stdlib.h>

#include "core/fence.h"
#include "queue/container.h"

static conc__seg_t *seg_new(conc__segq_t *q)
{
    conc__seg_t *s = atomic_exchange_explicit(&q->spare, NULL, memory_order_acquire);
    if (!s && !(s = malloc(sizeof *s)))
        return NULL;
    atomic_store_explicit(&s->next, NULL, memory_order_relaxed);
    for (size_t i = 0; i < CONC__SEG_ITEMS; i++)
        atomic_store_explicit(&s->slots[i].full, 0, memory_order_relaxed);
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
    conc__membarrier_init();
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
    size_t p = atomic_load_explicit(&q->puts, memory_order_relaxed);
    if (q->bound && p - atomic_load_explicit(&q->gets, memory_order_seq_cst) >= q->bound) {
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
    conc__slot_t *sl = &q->tail->slots[q->tail_i++];
    sl->item = item;
    /* Count it before publishing it: whoever takes it (and calls
     * task_done) must already see it counted. */
    atomic_store_explicit(&q->puts, p + 1, memory_order_relaxed);
    atomic_store_explicit(&sl->full, 1, memory_order_release);
    conc__spin_unlock(&q->tail_lock);
    return 0;
}

bool conc__segq_get(conc__segq_t *q, void **item)
{
    conc__spin_lock(&q->head_lock);
    if (q->head_i == CONC__SEG_ITEMS) {
        conc__seg_t *next = atomic_load_explicit(&q->head->next, memory_order_acquire);
        if (!next) {
            conc__spin_unlock(&q->head_lock);
            return false;
        }
        conc__seg_t *old = q->head;
        q->head = next;
        q->head_i = 0;
        conc__seg_t *prev = atomic_exchange_explicit(&q->spare, old, memory_order_acq_rel);
        free(prev);
    }
    conc__slot_t *sl = &q->head->slots[q->head_i];
    if (!atomic_load_explicit(&sl->full, memory_order_acquire)) {
        conc__spin_unlock(&q->head_lock);
        return false;
    }
    *item = sl->item;
    q->head_i++;
    size_t g = atomic_load_explicit(&q->gets, memory_order_relaxed) + 1;
    if (q->bound) /* a full producer's sleeping protocol reads it */
        atomic_store_explicit(&q->gets, g, memory_order_seq_cst);
    else
        atomic_store_explicit(&q->gets, g, memory_order_release);
    conc__spin_unlock(&q->head_lock);
    return true;
}

/* Queue.peek: the head item, left in place (under the consumers' lock). */
bool conc__segq_peek(conc__segq_t *q, void **item)
{
    conc__spin_lock(&q->head_lock);
    conc__seg_t *seg = q->head;
    size_t i = q->head_i;
    if (i == CONC__SEG_ITEMS) {
        seg = atomic_load_explicit(&seg->next, memory_order_acquire);
        i = 0;
    }
    bool ok = seg && atomic_load_explicit(&seg->slots[i].full, memory_order_acquire);
    if (ok)
        *item = seg->slots[i].item;
    conc__spin_unlock(&q->head_lock);
    return ok;
}
