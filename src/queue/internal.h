/* internal.h — struct conc_queue and what queue.c shares with select.c. */
#ifndef CONC_QUEUE_INTERNAL_H
#define CONC_QUEUE_INTERNAL_H

#include "queue/container.h"

enum { IMPL_RING, IMPL_SEGQ, IMPL_HEAPQ };

/* SimpleQueue.put from a signal handler that interrupted a put on the
 * same queue in the same thread (queue.c): the nested put cannot take the
 * store's lock its own thread holds, so it parks the item in one of these
 * slots (claimed and published with atomic bit operations, no lock, no
 * malloc) and the interrupted put moves it into the store before it
 * returns. Only the thread that parked an item moves it (so one thread's
 * puts keep their order). */
#define CONC__REENT_SLOTS 64
typedef struct {
    _Atomic uint64_t claimed, ready;
    atomic_size_t seq;
    _Atomic uintptr_t owner[CONC__REENT_SLOTS]; /* the parking thread */
    void *item[CONC__REENT_SLOTS];
    size_t order[CONC__REENT_SLOTS];
} conc__reent_t;

struct conc_queue {
    conc_queue_kind_t kind;
    int impl;
    long maxsize;                  /* <= 0: unbounded */
    union {
        conc__ring_t ring;
        conc__segq_t segq;
        conc__heapq_t heapq;
    } s;
    /* Sleepers: counts are changed under their list's guard with seq_cst
     * RMWs and read without it by the fast paths (see container.h). */
    _Alignas(CONC__CACHELINE) atomic_uint gsleep; /* getters (and selects) queued */
    conc__waitq_t getq;
    atomic_size_t handoffs;        /* items handed straight to a getter (queue.c), under getq's guard */
    _Alignas(CONC__CACHELINE) atomic_uint psleep; /* putters queued */
    conc__waitq_t putq;
    _Alignas(CONC__CACHELINE) atomic_size_t dones; /* task_done calls */
    atomic_uint jsleep;                            /* joiners queued */
    conc__waitq_t joinq;
    atomic_int shutdown;                           /* 0, 1, 2 = immediate */
    conc__reent_t *reent;                          /* SimpleQueue only */
};

/* For a sleeper that counted itself in (getter: on getq; else putq):
 * whether the operations that would wake it may publish without an atomic
 * RMW (segq puts; a ring side owned by another thread, container.h), so
 * that it must pair its re-check with conc__fence_heavy (core/fence.h). */
static inline bool conc__queue_light_publish(conc_queue_t *q, bool getter)
{
    return q->impl == IMPL_SEGQ || (q->impl == IMPL_RING && conc__ring_sleep_fence(&q->s.ring, getter));
}

/* Try to take an item without blocking; wakes a sleeping putter on success. */
bool conc__queue_try_get(conc_queue_t *q, void **item);
/* Whether q holds an item (a seq_cst read, for the sleeping protocol). */
bool conc__queue_has_items(const conc_queue_t *q);
/* Wake one sleeper of the list (getq/putq) whose count is *cnt. */
void conc__queue_wake_one(conc__waitq_t *wq, atomic_uint *cnt);

#endif
