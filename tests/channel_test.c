/*
 * gevent.queue.Channel and Queue.peek (issue 17), ported from gevent's
 * test__queue.py: TestChannel.test_send / test_wait / test_zero_max_size
 * (a put waits until a getter took the item; a get waits for a putter),
 * Full / Empty when nobody comes, and TestQueue.test_peek_empty /
 * test_peek_multi_greenlet / test_peek_two_getters (peek waits like get,
 * takes nothing, and does not steal a getter's wakeup). Colorless: every
 * wait here is cut by a kill and by a Timeout scope, on a green thread
 * and on an OS thread.
 */
#include "test_util.h"

#define PTR(x) ((void *)(uintptr_t)(x))
#define INT(p) ((int)(uintptr_t)(p))

static conc_channel_t *ch;
static _Atomic int events[16];
static _Atomic int nev;

static void note(int e) { events[atomic_fetch_add(&nev, 1)] = e; }

static void *putter(void *arg)
{
    note(1);                                      /* before put */
    int rc = conc_channel_put(ch, arg, true, CONC_FOREVER);
    note(rc == 0 ? 2 : -1);                       /* returns after the getter took it */
    return NULL;
}

Test(channel, put_waits_for_a_getter, .timeout = TU_TIMEOUT)
{
    atomic_store(&nev, 0);
    cr_assert_eq(conc_channel_new(&ch), 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, putter, PTR(42)), 0);
    cr_assert_eq(conc_sleep(0.01), 0);
    cr_assert_eq(atomic_load(&nev), 1, "the putter waits: nobody took it");
    cr_assert_eq(conc_channel_balance(ch), 1);
    void *item = NULL;
    cr_assert_eq(conc_channel_get(ch, &item, true, 5), 0);
    cr_assert_eq(item, PTR(42));
    cr_assert_eq(conc_green_join(g, 5), 0);
    cr_assert_eq(events[1], 2);
    cr_assert_eq(conc_channel_balance(ch), 0);
    conc_green_free(g);
    cr_assert_eq(conc_channel_free(ch), 0);
}

static void *getter(void *arg)
{
    (void)arg;
    void *item = NULL;
    int rc = conc_channel_get(ch, &item, true, 5);
    return rc == 0 ? item : PTR(-1);
}

Test(channel, get_waits_for_a_putter, .timeout = TU_TIMEOUT)
{
    cr_assert_eq(conc_channel_new(&ch), 0);
    conc_green_t *a, *b;
    cr_assert_eq(conc_go(&a, getter, NULL), 0);
    cr_assert_eq(conc_go(&b, getter, NULL), 0);
    cr_assert_eq(conc_sleep(0.01), 0);
    cr_assert_eq(conc_channel_balance(ch), -2);
    cr_assert_eq(conc_channel_put(ch, PTR(1), false, 0), 0, "a getter waits: no block needed");
    cr_assert_eq(conc_channel_put(ch, PTR(2), true, 1), 0);
    cr_assert_eq(conc_channel_put(ch, PTR(3), false, 0), CONC_EFULL, "nobody left to take it");
    void *ra, *rb;
    cr_assert_eq(conc_green_get(a, 5, &ra), 0);
    cr_assert_eq(conc_green_get(b, 5, &rb), 0);
    cr_assert_eq(ra, PTR(1), "first come, first served");
    cr_assert_eq(rb, PTR(2));
    conc_green_free(a);
    conc_green_free(b);
    cr_assert_eq(conc_channel_free(ch), 0);
}

Test(channel, nobody_comes, .timeout = TU_TIMEOUT)
{
    cr_assert_eq(conc_channel_new(&ch), 0);
    void *item;
    cr_assert_eq(conc_channel_get(ch, &item, false, 0), CONC_EEMPTY);
    double t0 = tu_now();
    cr_assert_eq(conc_channel_get(ch, &item, true, 0.02), CONC_EEMPTY);
    tu_assert_timeout(tu_now() - t0, 0.02);
    t0 = tu_now();
    cr_assert_eq(conc_channel_put(ch, PTR(1), true, 0.02), CONC_EFULL);
    tu_assert_timeout(tu_now() - t0, 0.02);
    cr_assert_eq(conc_channel_put(ch, PTR(1), true, -1), CONC_EINVAL);
    cr_assert_eq(conc_channel_get(ch, &item, true, NAN), CONC_EINVAL);
    cr_assert_eq(conc_channel_get(ch, NULL, true, 1), CONC_EINVAL);
    cr_assert_eq(conc_channel_new(NULL), CONC_EINVAL);
    cr_assert_eq(conc_channel_free(NULL), CONC_EINVAL);
    /* a scope cut is not Full / Empty */
    conc_timeout_begin(0.01);
    cr_assert_eq(conc_channel_put(ch, PTR(1), true, CONC_FOREVER), CONC_ETIMEDOUT);
    cr_assert_eq(conc_timeout_end(), 1);
    conc_timeout_begin(0.01);
    cr_assert_eq(conc_channel_get(ch, &item, true, CONC_FOREVER), CONC_ETIMEDOUT);
    cr_assert_eq(conc_timeout_end(), 1);
    cr_assert_eq(conc_channel_balance(ch), 0, "the cut waits left");
    cr_assert_eq(conc_channel_free(ch), 0);
}

static void *blocked_put(void *arg)
{
    (void)arg;
    return PTR(conc_channel_put(ch, PTR(9), true, CONC_FOREVER));
}

Test(channel, kill_cuts_a_wait, .timeout = TU_TIMEOUT)
{
    cr_assert_eq(conc_channel_new(&ch), 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, blocked_put, NULL), 0);
    cr_assert_eq(conc_sleep(0.01), 0);
    cr_assert_eq(conc_channel_free(ch), CONC_EPERM, "someone waits");
    cr_assert_eq(conc_green_kill(g, true, 5), 0);
    cr_assert_eq(conc_channel_balance(ch), 0);
    void *item;
    cr_assert_eq(conc_channel_get(ch, &item, false, 0), CONC_EEMPTY, "a killed put gave nothing");
    conc_green_free(g);
    cr_assert_eq(conc_channel_free(ch), 0);
}

static void *thread_getter(void *arg)
{
    (void)arg;
    void *sum = 0;
    for (int i = 0; i < 1000; i++) {
        void *item;
        if (conc_channel_get(ch, &item, true, 10) != 0)
            return PTR(-1);
        sum = PTR(INT(sum) + INT(item));
    }
    return sum;
}

Test(channel, across_os_threads, .timeout = TU_TIMEOUT)
{
    cr_assert_eq(conc_channel_new(&ch), 0);
    conc_thread_t *t;
    cr_assert_eq(conc_thread_spawn(&t, thread_getter, NULL, NULL), 0);
    for (int i = 1; i <= 1000; i++)
        cr_assert_eq(conc_channel_put(ch, PTR(i), true, 10), 0);
    void *sum;
    cr_assert_eq(conc_thread_join(t, 10, &sum), 0);
    conc_thread_free(t);
    cr_assert_eq(INT(sum), 500500);
    cr_assert_eq(conc_channel_free(ch), 0);
}

/* --------------------------------------------------------------- peek */

Test(queue_peek, empty_and_order, .timeout = TU_TIMEOUT)
{
    conc_queue_kind_t kinds[3] = {CONC_FIFO, CONC_LIFO, CONC_PRIORITY};
    long sizes[2] = {0, 4};
    for (int k = 0; k < 3; k++)
        for (int s = 0; s < 2; s++) {
            conc_queue_t *q;
            cr_assert_eq(conc_queue_new(&q, kinds[k], sizes[s]), 0);
            void *item = PTR(99);
            cr_assert_eq(conc_queue_peek(q, &item, false, 0), CONC_EEMPTY);
            cr_assert_eq(conc_queue_peek(q, &item, true, 0.01), CONC_EEMPTY);
            cr_assert_eq(conc_queue_peek(q, &item, true, -1), CONC_EINVAL);
            cr_assert_eq(conc_queue_peek(NULL, &item, true, 1), CONC_EINVAL);
            cr_assert_eq(conc_queue_put(q, PTR(3), true, 1), 0);
            cr_assert_eq(conc_queue_put(q, PTR(1), true, 1), 0);
            cr_assert_eq(conc_queue_put(q, PTR(2), true, 1), 0);
            void *want = kinds[k] == CONC_FIFO ? PTR(3) : kinds[k] == CONC_LIFO ? PTR(2) : PTR(1);
            cr_assert_eq(conc_queue_peek(q, &item, false, 0), 0);
            cr_assert_eq(item, want, "what get would return (kind %d)", k);
            cr_assert_eq(conc_queue_peek(q, &item, true, 1), 0);
            cr_assert_eq(item, want, "and it stays");
            cr_assert_eq(conc_queue_qsize(q), 3);
            void *got;
            cr_assert_eq(conc_queue_get(q, &got, false, 0), 0);
            cr_assert_eq(got, want);
            cr_assert_eq(conc_queue_free(q, NULL), 0);
        }
    /* across a FIFO's segment boundary */
    conc_queue_t *q;
    cr_assert_eq(conc_queue_new(&q, CONC_FIFO, 0), 0);
    for (int i = 0; i < 600; i++)
        cr_assert_eq(conc_queue_put(q, PTR(i), false, 0), 0);
    for (int i = 0; i < 600; i++) {
        void *p, *g;
        cr_assert_eq(conc_queue_peek(q, &p, false, 0), 0);
        cr_assert_eq(conc_queue_get(q, &g, false, 0), 0);
        cr_assert_eq(p, g);
        cr_assert_eq(g, PTR(i));
    }
    cr_assert_eq(conc_queue_free(q, NULL), 0);
}

static conc_queue_t *pq;
static void *peeker(void *arg)
{
    (void)arg;
    void *item = NULL;
    int rc = conc_queue_peek(pq, &item, true, 5);
    return rc == 0 ? item : PTR(-1);
}
static void *taker(void *arg)
{
    (void)arg;
    void *item = NULL;
    int rc = conc_queue_get(pq, &item, true, 5);
    return rc == 0 ? item : PTR(-1);
}

Test(queue_peek, peek_waits_and_leaves_it_for_the_getter, .timeout = TU_TIMEOUT)
{
    /* test_peek_multi_greenlet / test_peek_two_getters: peekers and a
     * getter wait; one put wakes them all in turn: each peeker sees it,
     * the getter takes it */
    cr_assert_eq(conc_queue_new(&pq, CONC_FIFO, 0), 0);
    conc_green_t *p1, *p2, *g;
    cr_assert_eq(conc_go(&p1, peeker, NULL), 0);
    cr_assert_eq(conc_go(&p2, peeker, NULL), 0);
    cr_assert_eq(conc_go(&g, taker, NULL), 0);
    cr_assert_eq(conc_sleep(0.01), 0);
    cr_assert_eq(conc_queue_put(pq, PTR(5), true, 1), 0);
    void *r1, *r2, *rg;
    cr_assert_eq(conc_green_get(p1, 5, &r1), 0);
    cr_assert_eq(conc_green_get(p2, 5, &r2), 0);
    cr_assert_eq(conc_green_get(g, 5, &rg), 0);
    cr_assert_eq(r1, PTR(5));
    cr_assert_eq(r2, PTR(5));
    cr_assert_eq(rg, PTR(5), "the getter was not robbed of its wakeup");
    cr_assert_eq(conc_queue_qsize(pq), 0);
    conc_green_free(p1);
    conc_green_free(p2);
    conc_green_free(g);
    cr_assert_eq(conc_queue_free(pq, NULL), 0);
}

static void *thread_peeker(void *arg)
{
    (void)arg;
    void *item = NULL;
    conc_timeout_begin(0.02);
    int rc = conc_queue_peek(pq, &item, true, CONC_FOREVER);
    conc_timeout_end();
    return PTR(rc);
}

Test(queue_peek, colorless, .timeout = TU_TIMEOUT)
{
    cr_assert_eq(conc_queue_new(&pq, CONC_LIFO, 2), 0);
    /* a scope cuts it on an OS thread and on a green thread */
    conc_thread_t *t;
    void *rc;
    cr_assert_eq(conc_thread_spawn(&t, thread_peeker, NULL, NULL), 0);
    cr_assert_eq(conc_thread_join(t, 10, &rc), 0);
    conc_thread_free(t);
    cr_assert_eq(INT(rc), CONC_ETIMEDOUT);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, thread_peeker, NULL), 0);
    cr_assert_eq(conc_green_get(g, 5, &rc), 0);
    cr_assert_eq(INT(rc), CONC_ETIMEDOUT);
    conc_green_free(g);
    /* a kill cuts it */
    cr_assert_eq(conc_go(&g, peeker, NULL), 0);
    cr_assert_eq(conc_sleep(0.01), 0);
    cr_assert_eq(conc_green_kill(g, true, 5), 0);
    conc_green_free(g);
    /* shut down and empty */
    cr_assert_eq(conc_queue_shutdown(pq, false, NULL), 0);
    void *item;
    cr_assert_eq(conc_queue_peek(pq, &item, true, 1), CONC_ESHUTDOWN);
    cr_assert_eq(conc_queue_free(pq, NULL), 0);
}

/* peek on a bounded FIFO (the lock-free ring) while another thread gets
 * and puts: a peek may read a cell the next lap's put is writing. Under
 * TSan this was a data race (the put stored the item plainly); a peek
 * must also only ever see an item that was put. */
static _Atomic int peek_stop;

static void *ring_churn(void *arg)
{
    (void)arg;
    for (int i = 1; i <= 20000; i++) {
        void *it;
        if (conc_queue_put(pq, PTR(i), true, 5) != 0 || conc_queue_get(pq, &it, true, 5) != 0)
            return PTR(1);
    }
    atomic_store(&peek_stop, 1);
    return NULL;
}

Test(queue_peek, ring_peek_races_get_and_put, .timeout = TU_TIMEOUT)
{
    cr_assert_eq(conc_queue_new(&pq, CONC_FIFO, 2), 0);
    cr_assert_eq(conc_queue_put(pq, PTR(1 << 20), true, 1), 0);
    atomic_store(&peek_stop, 0);
    conc_thread_t *t;
    void *rc;
    cr_assert_eq(conc_thread_spawn(&t, ring_churn, NULL, NULL), 0);
    long peeks = 0;
    while (!atomic_load(&peek_stop) && peeks < 5000000) {
        void *item = NULL;
        if (conc_queue_peek(pq, &item, false, 0) == 0)
            cr_assert(INT(item) > 0 && INT(item) <= (1 << 20), "peek saw %d", INT(item));
        peeks++;
    }
    cr_assert_eq(conc_thread_join(t, 30, &rc), 0);
    conc_thread_free(t);
    cr_assert_null(rc);
    cr_assert_eq(conc_queue_free(pq, NULL), 0);
}
