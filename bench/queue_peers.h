/*
 * bench/queue_peers.h — the C++ peers of the queue benchmark, behind a C
 * interface (bench/queue_peers.cpp). queue_bench.c owns the threads, the
 * start gate, the clock and the checks; each peer only supplies a whole
 * producer loop and a whole consumer loop, compiled in C++ with the
 * library's own calls inlined, so no impl pays an indirect call per item.
 *
 *   QPEER_MOODYCAMEL  moodycamel::BlockingConcurrentQueue<void *>, bounded
 *                     to `capacity` items by moodycamel's own
 *                     LightweightSemaphore holding one count per free slot
 *                     (put: wait for a slot, enqueue; get: wait_dequeue,
 *                     signal the slot). Producer and consumer tokens.
 *   QPEER_TBB         tbb::concurrent_bounded_queue<void *> with
 *                     set_capacity(capacity); push / pop.
 *   QPEER_MOODYCAMEL_UNBOUNDED  moodycamel::BlockingConcurrentQueue<void *>
 *                     as its authors intend it: unbounded (capacity is
 *                     only the initial size), producer and consumer
 *                     tokens, enqueue / wait_dequeue.
 *   QPEER_MOODYCAMEL_SPSC  moodycamel::BlockingReaderWriterCircularBuffer
 *                     <void *>(capacity), one producer and one consumer
 *                     only: wait_enqueue / wait_dequeue.
 *
 * Items are the values first, first + stride, first + 2 * stride, ...
 * cast to void *; never 0.
 */
#ifndef CONC_BENCH_QUEUE_PEERS_H
#define CONC_BENCH_QUEUE_PEERS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { QPEER_MOODYCAMEL = 0, QPEER_TBB = 1, QPEER_MOODYCAMEL_UNBOUNDED = 2, QPEER_MOODYCAMEL_SPSC = 3 };

typedef struct qpeer qpeer_t;

/* 1 when the peer was compiled in; else 0 with the reason in why. */
int qpeer_available(int kind, char *why, size_t whylen);
/* A new queue of that kind (bounded to capacity but for _UNBOUNDED), or NULL (reason in why). */
qpeer_t *qpeer_new(int kind, long capacity, char *why, size_t whylen);
void qpeer_free(qpeer_t *q);
/* Put n items: first, first + stride, ... Returns 0, or -1 on an error. */
int qpeer_produce(qpeer_t *q, uintptr_t first, uintptr_t stride, long n);
/* Get exactly n items, adding each to *sum and its square to *sumsq (mod
 * 2^64). With nprod > 0, also check that the items of each producer p
 * (item % nprod == (p + 1) % nprod, as queue_bench.c numbers them) come
 * out in increasing order. Returns 0; -1 on an error; -2 when the order
 * check failed. Every 64k items, *progress is bumped atomically (the
 * driver's stall check). */
int qpeer_consume(qpeer_t *q, long n, int nprod, uint64_t *sum, uint64_t *sumsq, long *progress);

#ifdef __cplusplus
}
#endif
#endif /* CONC_BENCH_QUEUE_PEERS_H */
