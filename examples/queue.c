/* queue.c — queue.Queue, LifoQueue, PriorityQueue and SimpleQueue: put/get,
 * Full and Empty, timeouts, task_done/join, and freeing with a destructor. */
#include <conc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ITEM(n) ((void *)(intptr_t)(n)) /* items are void *: small ints fit */

int main(void)
{
    conc_queue_t *q;
    conc_queue_new(&q, CONC_FIFO, 2);                     /* q = queue.Queue(maxsize=2) */
    conc_queue_put(q, ITEM(1), true, CONC_FOREVER);       /* q.put(1) */
    conc_queue_put_nowait(q, ITEM(2));                    /* q.put_nowait(2) */
    int full = conc_queue_put(q, ITEM(3), true, 0.01);    /* q.put(3, timeout=0.01) */
    printf("qsize=%zu full()=%d, third put: %s\n", conc_queue_qsize(q), conc_queue_full(q),
           conc_errname(full));                           /* queue.Full */

    void *item;
    long sum = 0;
    while (conc_queue_get_nowait(q, &item) == 0) {        /* until queue.Empty */
        sum += (intptr_t)item;
        conc_queue_task_done(q);                          /* q.task_done() */
    }
    int joined = conc_queue_join(q, CONC_FOREVER);        /* q.join(): all done */
    printf("sum=%ld, join: %s, one more task_done: %s\n", sum, conc_errname(joined),
           conc_errname(conc_queue_task_done(q)));        /* ValueError */
    conc_queue_free(q, NULL);

    conc_queue_t *lifo, *prio;
    conc_queue_new(&lifo, CONC_LIFO, 0);                  /* queue.LifoQueue() */
    conc_queue_new(&prio, CONC_PRIORITY, 0);              /* queue.PriorityQueue() */
    for (int i = 0; i < 5; i++) {
        conc_queue_put(lifo, ITEM(i), true, CONC_FOREVER);
        conc_queue_put(prio, ITEM((i * 3) % 5), true, CONC_FOREVER); /* 0 3 1 4 2 */
    }
    printf("lifo:");
    while (conc_queue_get_nowait(lifo, &item) == 0)
        printf(" %ld", (long)(intptr_t)item);             /* 4 3 2 1 0 */
    printf("\npriority:");
    while (conc_queue_get_nowait(prio, &item) == 0)
        printf(" %ld", (long)(intptr_t)item);             /* 0 1 2 3 4 */
    printf("\n");
    conc_queue_free(lifo, NULL);
    conc_queue_free(prio, NULL);

    conc_queue_t *sq;                                     /* queue.SimpleQueue() */
    conc_queue_new(&sq, CONC_SIMPLE, 0);
    conc_queue_put(sq, strdup("left behind"), true, CONC_FOREVER);
    int got = conc_queue_get(sq, &item, true, 0.0);       /* gets the string */
    free(item);
    conc_queue_put(sq, strdup("freed by conc_queue_free"), true, CONC_FOREVER);
    conc_queue_free(sq, free);                            /* items left go to free() */
    return full == CONC_EFULL && sum == 3 && joined == 0 && got == 0 ? 0 : 1;
}
