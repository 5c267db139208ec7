/* producer_consumer.c — producers and consumers that never talk directly,
 * only through a bounded queue.Queue: put() blocks while it is full (the
 * slow consumers set the pace), task_done()/join() tell when every job is
 * finished, shutdown() stops the consumers (their get() raises ShutDown). */
#include <conc.h>
#include <stdio.h>
#include <stdlib.h>

enum { PRODUCERS = 2, CONSUMERS = 3, JOBS_EACH = 6 };

struct job { int producer, n; };

static conc_queue_t *q; /* the only thing producers and consumers share */

static void *produce(void *arg)
{
    int id = (int)(long)arg;
    for (int n = 1; n <= JOBS_EACH; n++) {
        struct job *j = malloc(sizeof *j);
        *j = (struct job){id, n};
        conc_queue_put(q, j, true, CONC_FOREVER); /* blocks while q is full */
    }
    return NULL;
}

static void *consume(void *arg)
{
    (void)arg;
    long done = 0;
    void *item;
    while (conc_queue_get(q, &item, true, CONC_FOREVER) == 0) { /* until ShutDown */
        struct job *j = item;
        conc_sleep_thread(0.01);                  /* slow work */
        printf("%s: job %d.%d (qsize %zu)\n", conc_thread_name(conc_current_thread()),
               j->producer, j->n, conc_queue_qsize(q));
        free(j);                                  /* the consumer owns the item now */
        done++;
        conc_queue_task_done(q);
    }
    return (void *)done;                          /* jobs this consumer did */
}

int main(void)
{
    conc_queue_new(&q, CONC_FIFO, 4);             /* q = queue.Queue(maxsize=4) */
    conc_thread_t *p[PRODUCERS], *c[CONSUMERS];
    for (int i = 0; i < CONSUMERS; i++) {
        char name[32];
        snprintf(name, sizeof name, "consumer-%d", i + 1);
        conc_thread_opts_t opts = {.name = name};
        conc_thread_spawn(&c[i], consume, NULL, &opts);
    }
    for (long i = 0; i < PRODUCERS; i++)
        conc_thread_spawn(&p[i], produce, (void *)(i + 1), NULL);
    for (int i = 0; i < PRODUCERS; i++) {
        conc_thread_join(p[i], CONC_FOREVER, NULL);
        conc_thread_free(p[i]);
    }
    conc_queue_join(q, CONC_FOREVER);             /* q.join(): every job task_done() */
    conc_queue_shutdown(q, false, NULL);          /* q.shutdown(): consumers stop */
    long total = 0;
    for (int i = 0; i < CONSUMERS; i++) {
        void *done;
        conc_thread_join(c[i], CONC_FOREVER, &done);
        conc_thread_free(c[i]);
        total += (long)done;
    }
    printf("%ld jobs done by %d consumers\n", total, CONSUMERS);
    conc_queue_free(q, free);
    return total == PRODUCERS * JOBS_EACH ? 0 : 1;
}
