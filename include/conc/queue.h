/*
 * conc/queue.h — Python's queue module: Queue, LifoQueue, PriorityQueue,
 * SimpleQueue, with task_done/join and 3.13's shutdown; plus select over
 * several queues (Go's select on receive channels).
 *
 *     conc_queue_t *q;
 *     conc_queue_new(&q, CONC_FIFO, 1024);          // queue.Queue(1024)
 *     conc_queue_put(q, item, true, CONC_FOREVER);  // q.put(item)
 *     conc_queue_get(q, &item, true, CONC_FOREVER); // item = q.get()
 *     conc_queue_task_done(q);                      // q.task_done()
 *     conc_queue_free(q, NULL);
 *
 * Items are void *; the queue never owns what they point to (NULL is a
 * valid item). Blocking calls park the current context through conc's park
 * layer (a brief adaptive spin, then a sleep) and wake nobody unless
 * somebody actually sleeps.
 *
 * block/timeout as in Python (the rule of conc/base.h): block=false never
 * waits (the timeout is ignored); block=true waits up to timeout seconds
 * (CONC_FOREVER: no limit). A negative timeout on get, or on put to a
 * bounded queue, is CONC_EINVAL before anything changes (Python's
 * ValueError; -1.0 is not "forever"); a put on an unbounded queue ignores
 * its timeout, as Python's does. NaN is always CONC_EINVAL. join and
 * select treat a negative timeout as already up (a poll).
 */
#ifndef CONC_QUEUE_H
#define CONC_QUEUE_H

#include "conc/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct conc_queue conc_queue_t;

typedef enum conc_queue_kind {
    CONC_FIFO = 0,     /* queue.Queue                                     */
    CONC_LIFO = 1,     /* queue.LifoQueue                                 */
    CONC_PRIORITY = 2, /* queue.PriorityQueue: lowest first; ties FIFO    */
    CONC_SIMPLE = 3    /* queue.SimpleQueue: unbounded FIFO, no task_done */
} conc_queue_kind_t;

/* Priority order: negative when a must come out before b. */
typedef int (*conc_queue_cmp_fn)(const void *a, const void *b);

/* Create a queue. maxsize <= 0 means unbounded (CONC_SIMPLE ignores it).
 * A CONC_PRIORITY queue made here compares items as unsigned integers
 * ((uintptr_t)item, lowest first): put (void *)(uintptr_t)priority, or use
 * conc_priority_queue_new for a comparator. Returns 0 and a new queue in
 * *out (free it with conc_queue_free), CONC_EINVAL, CONC_ENOMEM. */
CONC_API int conc_queue_new(conc_queue_t **out, conc_queue_kind_t kind, long maxsize);
/* A PriorityQueue ordered by cmp (items comparing equal come out in the
 * order they were put: first in, first out — stronger than Python). */
CONC_API int conc_priority_queue_new(conc_queue_t **out, long maxsize, conc_queue_cmp_fn cmp);

/* Free q. Items still inside are passed to dtor (if not NULL). Returns 0;
 * CONC_EPERM if contexts are blocked on it (nothing is freed then);
 * CONC_EINVAL for NULL. */
CONC_API int conc_queue_free(conc_queue_t *q, void (*dtor)(void *item));

/* Put item. Returns 0; CONC_EFULL when block is false and the queue is
 * full, or when the timeout passed while it stayed full (queue.Full);
 * CONC_ESHUTDOWN after shutdown (also for a putter blocked when shutdown
 * happens); CONC_EINVAL. Blocks only on a full bounded queue.
 * A SimpleQueue's put is reentrant, as Python's: it may be called from a
 * signal handler that interrupted a put or a get on the same queue in the
 * same thread (the item is queued before the interrupted put returns; up to 64
 * such nested puts can be pending at once, past that CONC_ENOMEM). */
CONC_API int conc_queue_put(conc_queue_t *q, void *item, bool block, double timeout);
CONC_API int conc_queue_put_nowait(conc_queue_t *q, void *item);
/* Take the next item into *item. Returns 0; CONC_EEMPTY when block is
 * false and it is empty, or when the timeout passed (queue.Empty);
 * CONC_ESHUTDOWN once the queue is shut down and empty; CONC_EINVAL. */
CONC_API int conc_queue_get(conc_queue_t *q, void **item, bool block, double timeout);
CONC_API int conc_queue_get_nowait(conc_queue_t *q, void **item);
/* gevent's Queue.peek(block, timeout): the item get would return next,
 * left in the queue; waits as get does (block/timeout rules as get).
 * Returns 0, CONC_EEMPTY, CONC_ESHUTDOWN (shut down and empty), an
 * interruption (CONC_EKILLED, CONC_ETIMEDOUT from a scope), CONC_EINVAL.
 * Another context may take the item right after: peek is a snapshot. */
CONC_API int conc_queue_peek(conc_queue_t *q, void **item, bool block, double timeout);

/* Approximate size, as in Python (exact when nothing runs concurrently). */
CONC_API size_t conc_queue_qsize(const conc_queue_t *q);
CONC_API bool conc_queue_empty(const conc_queue_t *q);
CONC_API bool conc_queue_full(const conc_queue_t *q);
CONC_API long conc_queue_maxsize(const conc_queue_t *q);
CONC_API conc_queue_kind_t conc_queue_kind(const conc_queue_t *q);

/* Mark one item taken with get as processed. Returns 0; CONC_EINVAL when
 * called more times than items were put (ValueError) or for a SimpleQueue. */
CONC_API int conc_queue_task_done(conc_queue_t *q);
/* Wait until every item ever put has been marked done (Queue.join; Python
 * has no timeout, CONC_FOREVER gives its behaviour; negative: already up,
 * a poll). Returns 0,
 * CONC_ETIMEDOUT, CONC_EINVAL (also for a SimpleQueue). */
CONC_API int conc_queue_join(conc_queue_t *q, double timeout);
/* Number of items put and not yet marked done. */
CONC_API size_t conc_queue_unfinished_tasks(const conc_queue_t *q);

/* Queue.shutdown (3.13): later puts return CONC_ESHUTDOWN; gets return
 * what is left, then CONC_ESHUTDOWN; blocked putters get CONC_ESHUTDOWN,
 * blocked getters re-check. With immediate, the items left are removed
 * (each passed to discard if not NULL), unfinished tasks drop by as many,
 * and joiners are released once nothing is unfinished. Returns 0 or
 * CONC_EINVAL. Calling it again is harmless. */
CONC_API int conc_queue_shutdown(conc_queue_t *q, bool immediate, void (*discard)(void *item));
CONC_API bool conc_queue_is_shutdown(const conc_queue_t *q);

/* Wait until any of qs[0..n) yields an item: get it into *item and its
 * position into *index. Ready queues are served fairly (the scan starts
 * where the last select of this thread left off). Returns 0;
 * CONC_EEMPTY when timeout passed (0 or negative: do not block); CONC_ESHUTDOWN when
 * every queue is shut down and empty; CONC_EINVAL (NULL, n == 0, a NULL
 * queue). Counts as a get for task_done purposes. */
CONC_API int conc_queue_select(conc_queue_t *const *qs, size_t n, size_t *index, void **item,
                               double timeout);

/* ------------------------------------------------------------- Channel */

/* gevent.queue.Channel: a queue of size 0 (Go's unbuffered channel). put
 * hands its item straight to a getter: it waits until one takes it; get
 * waits until a putter offers one. Items are void * (NULL is valid).
 * block/timeout as for conc_queue_put/get (a negative timeout with block
 * is CONC_EINVAL). Both park only the calling context (green thread or OS
 * thread) and are cut by kill and Timeout scopes. */
typedef struct conc_channel conc_channel_t;
/* Returns 0 and a new channel in *out, CONC_EINVAL, CONC_ENOMEM. */
CONC_API int conc_channel_new(conc_channel_t **out);
/* Free it: CONC_EPERM while contexts wait on it (nothing is freed), 0. */
CONC_API int conc_channel_free(conc_channel_t *c);
/* Channel.put: 0 once a getter took the item; CONC_EFULL when no getter
 * came (not blocking, or the timeout passed: queue.Full); an interruption
 * (the item was not taken then); CONC_EINVAL. */
CONC_API int conc_channel_put(conc_channel_t *c, void *item, bool block, double timeout);
/* Channel.get: 0 and the item in *item; CONC_EEMPTY when no putter came;
 * an interruption; CONC_EINVAL. */
CONC_API int conc_channel_get(conc_channel_t *c, void **item, bool block, double timeout);
/* Channel.balance: waiting putters minus waiting getters (a snapshot). */
CONC_API long conc_channel_balance(const conc_channel_t *c);

#ifdef __cplusplus
}
#endif
#endif /* CONC_QUEUE_H */
