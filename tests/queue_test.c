/* conc_queue_t semantics: CPython's test_queue.py (BaseQueueTestMixin for
 * Queue, LifoQueue and PriorityQueue, the SimpleQueue tests), plus what conc
 * promises beyond Python (FIFO ties in PriorityQueue, unsigned default
 * priority, destructors on free, EPERM when freeing with waiters, argument
 * checks). Shutdown, select and stress have their own files. */
#include "test_util.h"

#include <limits.h>

#define P(x) ((void *)(uintptr_t)(x))
#define U(p) ((uintptr_t)(p))
#define QUEUE_SIZE 5

static conc_queue_t *mkq(conc_queue_kind_t kind, long maxsize)
{
    conc_queue_t *q = NULL;
    int rc = conc_queue_new(&q, kind, maxsize);
    cr_assert_eq(rc, 0, "conc_queue_new(kind %d, maxsize %ld) = %d", (int)kind, maxsize, rc);
    cr_assert_not_null(q);
    return q;
}

static void freeq(conc_queue_t *q)
{
    int rc = conc_queue_free(q, NULL);
    cr_assert_eq(rc, 0, "conc_queue_free = %d", rc);
}

static const char *kname(conc_queue_kind_t k)
{
    switch (k) {
    case CONC_FIFO: return "FIFO";
    case CONC_LIFO: return "LIFO";
    case CONC_PRIORITY: return "PRIORITY";
    case CONC_SIMPLE: return "SIMPLE";
    }
    return "?";
}

/* ------------------------------------------------------------ blockers
 * A bunch of threads each doing one possibly-blocking call; the test thread
 * waits until they all sleep in the kernel, acts, then checks outcomes. */

enum { OP_GET, OP_PUT, OP_JOIN };

typedef struct {
    int op;
    conc_queue_t *q;
    bool block;
    double timeout;
    uintptr_t put_base; /* thread i puts put_base + i */
    atomic_int rc[TU_MAX_BUNCH];
    atomic_uintptr_t got[TU_MAX_BUNCH];
    double dt[TU_MAX_BUNCH];
    atomic_int finished;
} blk_t;

static void blk_fn(void *p, int i)
{
    blk_t *x = p;
    void *item = P(0xdead);
    int rc = 99;
    double t0 = tu_now();
    switch (x->op) {
    case OP_GET:
        rc = conc_queue_get(x->q, &item, x->block, x->timeout);
        atomic_store(&x->got[i], U(item));
        break;
    case OP_PUT:
        rc = conc_queue_put(x->q, P(x->put_base + (uintptr_t)i), x->block, x->timeout);
        break;
    case OP_JOIN:
        rc = conc_queue_join(x->q, x->timeout);
        break;
    }
    x->dt[i] = tu_now() - t0;
    atomic_store(&x->rc[i], rc);
    atomic_fetch_add(&x->finished, 1);
}

static void blk_start(tu_bunch_t *b, blk_t *x, int n, int op, conc_queue_t *q, double timeout)
{
    x->op = op;
    x->q = q;
    x->block = true;
    x->timeout = timeout;
    atomic_store(&x->finished, 0);
    for (int i = 0; i < TU_MAX_BUNCH; i++) {
        atomic_store(&x->rc[i], 99);
        atomic_store(&x->got[i], 0xdead);
    }
    tu_bunch_start(b, n, blk_fn, x);
    cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(b), 10), "blockers did not go to sleep");
    cr_assert_eq(atomic_load(&x->finished), 0, "a blocking call (op %d) returned without blocking (rc %d)",
                 op, atomic_load(&x->rc[0]));
}

/* Python's do_blocking_test with one blocker: start it, see it sleep, act. */
static void one_blocker(tu_bunch_t *b, blk_t *x, int op, conc_queue_t *q, double timeout)
{
    blk_start(b, x, 1, op, q, timeout);
}

/* ---------------------------------------------------- basic_queue_test */

static void basic_queue_test(conc_queue_t *q, conc_queue_kind_t kind)
{
    static tu_bunch_t b;
    static blk_t x;
    void *it;
    size_t unfinished0 = conc_queue_unfinished_tasks(q);

    cr_assert_eq(conc_queue_qsize(q), 0);
    cr_assert(conc_queue_empty(q));
    cr_assert_not(conc_queue_full(q));
    cr_assert_eq(conc_queue_put(q, P(111), true, CONC_FOREVER), 0);
    cr_assert_eq(conc_queue_put(q, P(333), true, CONC_FOREVER), 0);
    cr_assert_eq(conc_queue_put(q, P(222), true, CONC_FOREVER), 0);
    uintptr_t want[3];
    if (kind == CONC_FIFO) {
        want[0] = 111, want[1] = 333, want[2] = 222;
    } else if (kind == CONC_LIFO) {
        want[0] = 222, want[1] = 333, want[2] = 111;
    } else {
        want[0] = 111, want[1] = 222, want[2] = 333;
    }
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), 0);
        cr_assert_eq(U(it), want[i], "%s: item %d is %lu, expected %lu", kname(kind), i,
                     (unsigned long)U(it), (unsigned long)want[i]);
    }
    for (int i = 0; i < QUEUE_SIZE - 1; i++) {
        cr_assert_eq(conc_queue_put(q, P(i), true, CONC_FOREVER), 0);
        cr_assert_eq(conc_queue_qsize(q), (size_t)i + 1);
        cr_assert_not(conc_queue_empty(q));
    }
    cr_assert_not(conc_queue_full(q), "queue should not be full");
    uintptr_t last = 2 * QUEUE_SIZE, full = 3 * 2 * QUEUE_SIZE;
    cr_assert_eq(conc_queue_put(q, P(last), true, CONC_FOREVER), 0);
    cr_assert_eq(conc_queue_qsize(q), QUEUE_SIZE);
    cr_assert(conc_queue_full(q), "queue should be full");
    cr_assert_not(conc_queue_empty(q));
    cr_assert_eq(conc_queue_put(q, P(full), false, CONC_FOREVER), CONC_EFULL);
    double t0 = tu_now();
    cr_assert_eq(conc_queue_put(q, P(full), true, 0.01), CONC_EFULL);
    tu_assert_timeout(tu_now() - t0, 0.01);
    cr_assert_eq(conc_queue_qsize(q), QUEUE_SIZE);

    /* a blocking put, released by a get; then the same with a timeout */
    double timeouts[2] = {CONC_FOREVER, 10};
    for (int k = 0; k < 2; k++) {
        x.put_base = full;
        one_blocker(&b, &x, OP_PUT, q, timeouts[k]);
        cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), 0);
        tu_bunch_join(&b);
        cr_assert_eq(atomic_load(&x.rc[0]), 0, "blocked put returned %d", atomic_load(&x.rc[0]));
        cr_assert_eq(conc_queue_qsize(q), QUEUE_SIZE);
    }
    for (int i = 0; i < QUEUE_SIZE; i++)
        cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_queue_qsize(q), 0, "queue should be empty");
    cr_assert(conc_queue_empty(q));
    cr_assert_eq(conc_queue_get(q, &it, false, CONC_FOREVER), CONC_EEMPTY);
    t0 = tu_now();
    cr_assert_eq(conc_queue_get(q, &it, true, 0.01), CONC_EEMPTY);
    tu_assert_timeout(tu_now() - t0, 0.01);

    /* a blocking get, released by a put */
    for (int k = 0; k < 2; k++) {
        one_blocker(&b, &x, OP_GET, q, timeouts[k]);
        cr_assert_eq(conc_queue_put(q, P(4242 + k), true, CONC_FOREVER), 0);
        tu_bunch_join(&b);
        cr_assert_eq(atomic_load(&x.rc[0]), 0);
        cr_assert_eq(atomic_load(&x.got[0]), 4242 + (uintptr_t)k);
    }
    cr_assert_eq(conc_queue_qsize(q), 0);
    /* 3 + 4 + 1 + 2 blocked puts + 2 puts for the getters */
    cr_assert_eq(conc_queue_unfinished_tasks(q), unfinished0 + 12);
}

static void basic_for(conc_queue_kind_t kind)
{
    conc_queue_t *q = mkq(kind, QUEUE_SIZE);
    cr_assert_eq(conc_queue_kind(q), kind);
    cr_assert_eq(conc_queue_maxsize(q), QUEUE_SIZE);
    basic_queue_test(q, kind); /* twice: the same instance reused */
    basic_queue_test(q, kind);
    freeq(q);
}

Test(queue, basic_fifo, .timeout = TU_TIMEOUT) { basic_for(CONC_FIFO); }
Test(queue, basic_lifo, .timeout = TU_TIMEOUT) { basic_for(CONC_LIFO); }
Test(queue, basic_priority, .timeout = TU_TIMEOUT) { basic_for(CONC_PRIORITY); }

/* ------------------------------------------------------- task_done/join */

typedef struct {
    conc_queue_t *q;
    atomic_long cum;
    atomic_int errors;
} join_ctx_t;

static void join_worker(void *p, int i)
{
    (void)i;
    join_ctx_t *x = p;
    for (;;) {
        void *it;
        int rc = conc_queue_get(x->q, &it, true, 30);
        if (rc != 0) {
            atomic_fetch_add(&x->errors, 1);
            return;
        }
        intptr_t v = (intptr_t)it;
        if (v < 0) {
            if (conc_queue_task_done(x->q) != 0)
                atomic_fetch_add(&x->errors, 1);
            return;
        }
        tu_sleep(v % 7 == 0 ? 0.0002 : 0); /* let join really wait */
        atomic_fetch_add(&x->cum, v);
        if (conc_queue_task_done(x->q) != 0)
            atomic_fetch_add(&x->errors, 1);
    }
}

static void queue_join_test(conc_queue_t *q)
{
    static join_ctx_t x;
    static tu_bunch_t b;
    x.q = q;
    atomic_store(&x.cum, 0);
    atomic_store(&x.errors, 0);
    tu_bunch_start(&b, 2, join_worker, &x);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(conc_queue_put(q, P(i), true, CONC_FOREVER), 0);
    cr_assert_eq(conc_queue_join(q, CONC_FOREVER), 0);
    cr_assert_eq(atomic_load(&x.cum), 4950, "join returned before every task was done (cum %ld)",
                 atomic_load(&x.cum));
    cr_assert_eq(conc_queue_unfinished_tasks(q), 0);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(conc_queue_put(q, (void *)(intptr_t)-1, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_queue_join(q, CONC_FOREVER), 0); /* join twice */
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.errors), 0);
}

static void join_for(conc_queue_kind_t kind, long maxsize)
{
    conc_queue_t *q = mkq(kind, maxsize);
    queue_join_test(q);
    queue_join_test(q);
    cr_assert_eq(conc_queue_task_done(q), CONC_EINVAL, "task count went negative unnoticed");
    cr_assert_eq(conc_queue_unfinished_tasks(q), 0);
    freeq(q);
}

Test(queue, join_fifo, .timeout = TU_TIMEOUT) { join_for(CONC_FIFO, 0); join_for(CONC_FIFO, 3); }
Test(queue, join_lifo, .timeout = TU_TIMEOUT) { join_for(CONC_LIFO, 0); join_for(CONC_LIFO, 3); }
Test(queue, join_priority, .timeout = TU_TIMEOUT)
{
    join_for(CONC_PRIORITY, 0);
    join_for(CONC_PRIORITY, 3);
}

Test(queue, task_done_too_many, .timeout = TU_TIMEOUT)
{
    conc_queue_kind_t kinds[] = {CONC_FIFO, CONC_LIFO, CONC_PRIORITY};
    for (int k = 0; k < 3; k++) {
        for (long m = 0; m <= 2; m += 2) {
            conc_queue_t *q = mkq(kinds[k], m);
            void *it;
            cr_assert_eq(conc_queue_task_done(q), CONC_EINVAL);
            cr_assert_eq(conc_queue_unfinished_tasks(q), 0);
            cr_assert_eq(conc_queue_put(q, P(1), true, CONC_FOREVER), 0);
            cr_assert_eq(conc_queue_put(q, P(2), true, CONC_FOREVER), 0);
            cr_assert_eq(conc_queue_unfinished_tasks(q), 2);
            cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), 0);
            cr_assert_eq(conc_queue_task_done(q), 0);
            cr_assert_eq(conc_queue_unfinished_tasks(q), 1);
            /* task_done counts puts, not gets (as in Python) */
            cr_assert_eq(conc_queue_task_done(q), 0);
            cr_assert_eq(conc_queue_unfinished_tasks(q), 0);
            cr_assert_eq(conc_queue_task_done(q), CONC_EINVAL);
            cr_assert_eq(conc_queue_task_done(q), CONC_EINVAL);
            cr_assert_eq(conc_queue_unfinished_tasks(q), 0, "failed task_done changed the count");
            cr_assert_eq(conc_queue_join(q, 0), 0);
            /* the counter still works after the errors */
            cr_assert_eq(conc_queue_put(q, P(3), true, CONC_FOREVER), 0);
            cr_assert_eq(conc_queue_unfinished_tasks(q), 1);
            cr_assert_eq(conc_queue_join(q, 0), CONC_ETIMEDOUT);
            cr_assert_eq(conc_queue_task_done(q), 0);
            cr_assert_eq(conc_queue_join(q, 0), 0);
            conc_queue_free(q, NULL);
        }
    }
}

Test(queue, join_timeout, .timeout = TU_TIMEOUT)
{
    conc_queue_t *q = mkq(CONC_FIFO, 0);
    void *it;
    cr_assert_eq(conc_queue_join(q, CONC_FOREVER), 0, "join on a fresh queue blocked or failed");
    cr_assert_eq(conc_queue_join(q, 0), 0);
    cr_assert_eq(conc_queue_put(q, P(7), true, CONC_FOREVER), 0);
    cr_assert_eq(conc_queue_join(q, 0), CONC_ETIMEDOUT);
    double t0 = tu_now();
    cr_assert_eq(conc_queue_join(q, 0.1), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t0, 0.1);
    cr_assert_eq(conc_queue_join(q, -0.5), CONC_ETIMEDOUT); /* already up */
    cr_assert_eq(conc_queue_join(q, NAN), CONC_EINVAL);
    cr_assert_eq(conc_queue_join(q, -INFINITY), CONC_ETIMEDOUT);
    cr_assert_eq(conc_queue_get(q, &it, false, 0), 0);
    /* taken but not done still counts */
    cr_assert_eq(conc_queue_join(q, 0.02), CONC_ETIMEDOUT);
    cr_assert_eq(conc_queue_task_done(q), 0);
    cr_assert_eq(conc_queue_join(q, 0), 0);
    cr_assert_eq(conc_queue_join(q, 1e300), 0);
    cr_assert_eq(conc_queue_join(q, INFINITY), 0);
    cr_assert_eq(conc_queue_join(q, -0.5), 0, "a negative timeout is a poll");
    cr_assert_eq(conc_queue_join(q, NAN), CONC_EINVAL, "NaN accepted with nothing unfinished");
    freeq(q);
}

/* Several joiners sleep until the last task_done, not before. */
Test(queue, join_blocks_until_last_task_done, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static blk_t x;
    conc_queue_t *q = mkq(CONC_FIFO, 4);
    void *it;
    cr_assert_eq(conc_queue_put(q, P(1), true, CONC_FOREVER), 0);
    cr_assert_eq(conc_queue_put(q, P(2), true, CONC_FOREVER), 0);
    blk_start(&b, &x, 3, OP_JOIN, q, CONC_FOREVER);
    cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_queue_task_done(q), 0);
    cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10));
    tu_sleep(0.02);
    cr_assert_eq(atomic_load(&x.finished), 0, "join returned with a task still unfinished");
    cr_assert_eq(conc_queue_task_done(q), 0);
    tu_bunch_join(&b);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(atomic_load(&x.rc[i]), 0);
    /* timed joiners too */
    cr_assert_eq(conc_queue_put(q, P(3), true, CONC_FOREVER), 0);
    blk_start(&b, &x, 2, OP_JOIN, q, 30);
    cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_queue_task_done(q), 0);
    tu_bunch_join(&b);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(atomic_load(&x.rc[i]), 0);
        cr_assert_lt(x.dt[i], 20);
    }
    freeq(q);
}

/* ------------------------------------------------------------- nowait */

Test(queue, nowait, .timeout = TU_TIMEOUT)
{
    conc_queue_kind_t kinds[] = {CONC_FIFO, CONC_LIFO, CONC_PRIORITY};
    for (int k = 0; k < 3; k++) {
        conc_queue_t *q = mkq(kinds[k], QUEUE_SIZE);
        void *it;
        for (int i = 0; i < QUEUE_SIZE; i++)
            cr_assert_eq(conc_queue_put_nowait(q, P(1)), 0);
        cr_assert_eq(conc_queue_put_nowait(q, P(1)), CONC_EFULL, "%s", kname(kinds[k]));
        cr_assert_eq(conc_queue_qsize(q), QUEUE_SIZE);
        for (int i = 0; i < QUEUE_SIZE; i++)
            cr_assert_eq(conc_queue_get_nowait(q, &it), 0);
        cr_assert_eq(conc_queue_get_nowait(q, &it), CONC_EEMPTY);
        cr_assert_eq(conc_queue_unfinished_tasks(q), QUEUE_SIZE, "a failed put counted as a task");
        freeq(q);
    }
}

/* block=false ignores the timeout, even a bad one (Python does not look at
 * it); block=true rejects bad timeouts whether or not it would wait. */
Test(queue, bad_timeouts, .timeout = TU_TIMEOUT)
{
    conc_queue_kind_t kinds[] = {CONC_FIFO, CONC_LIFO, CONC_PRIORITY};
    double bad[] = {-0.5, -1.0, -2.0, -1e-9, NAN, -INFINITY};
    for (int k = 0; k < 3; k++) {
        conc_queue_t *q = mkq(kinds[k], QUEUE_SIZE);
        void *it = P(0xdead);
        for (size_t j = 0; j < sizeof bad / sizeof bad[0]; j++) {
            cr_assert_eq(conc_queue_put(q, P(1), true, bad[j]), CONC_EINVAL, "%s put timeout %g",
                         kname(kinds[k]), bad[j]);
            cr_assert_eq(conc_queue_get(q, &it, true, bad[j]), CONC_EINVAL, "%s get timeout %g",
                         kname(kinds[k]), bad[j]);
        }
        cr_assert_eq(conc_queue_qsize(q), 0);
        cr_assert_eq(conc_queue_unfinished_tasks(q), 0);
        cr_assert_eq(conc_queue_put(q, P(5), true, 0), 0);
        /* a non-empty queue still rejects them and keeps its item */
        for (size_t j = 0; j < sizeof bad / sizeof bad[0]; j++) {
            cr_assert_eq(conc_queue_get(q, &it, true, bad[j]), CONC_EINVAL, "%s get timeout %g",
                         kname(kinds[k]), bad[j]);
            cr_assert_eq(conc_queue_put(q, P(1), true, bad[j]), CONC_EINVAL);
        }
        cr_assert_eq(conc_queue_qsize(q), 1);
        /* block=false: the timeout is ignored */
        cr_assert_eq(conc_queue_put(q, P(6), false, -0.5), 0);
        cr_assert_eq(conc_queue_put(q, P(7), false, NAN), 0);
        cr_assert_eq(conc_queue_qsize(q), 3);
        cr_assert_eq(conc_queue_get(q, &it, false, -0.5), 0);
        cr_assert_eq(conc_queue_get(q, &it, false, NAN), 0);
        cr_assert_eq(conc_queue_get(q, &it, false, -3), 0);
        cr_assert_eq(conc_queue_get(q, &it, false, -3), CONC_EEMPTY);
        /* timeout 0 with block=true: do not wait */
        cr_assert_eq(conc_queue_get(q, &it, true, 0), CONC_EEMPTY);
        /* huge timeouts are valid */
        cr_assert_eq(conc_queue_put(q, P(8), true, 1e300), 0);
        cr_assert_eq(conc_queue_put(q, P(9), true, INFINITY), 0);
        cr_assert_eq(conc_queue_get(q, &it, true, 1e300), 0);
        cr_assert_eq(conc_queue_get(q, &it, true, INFINITY), 0);
        freeq(q);
    }
}

Test(queue, timeouts_are_honoured, .timeout = TU_TIMEOUT)
{
    conc_queue_kind_t kinds[] = {CONC_FIFO, CONC_LIFO, CONC_PRIORITY, CONC_SIMPLE};
    for (int k = 0; k < 4; k++) {
        conc_queue_t *q = mkq(kinds[k], 1);
        void *it;
        double t0 = tu_now();
        cr_assert_eq(conc_queue_get(q, &it, true, 0.15), CONC_EEMPTY, "%s", kname(kinds[k]));
        tu_assert_timeout(tu_now() - t0, 0.15);
        if (kinds[k] != CONC_SIMPLE) {
            cr_assert_eq(conc_queue_put(q, P(1), true, 0.15), 0);
            t0 = tu_now();
            cr_assert_eq(conc_queue_put(q, P(2), true, 0.15), CONC_EFULL, "%s", kname(kinds[k]));
            tu_assert_timeout(tu_now() - t0, 0.15);
            cr_assert_eq(conc_queue_qsize(q), 1);
        }
        freeq(q);
    }
}

/* Huge timeouts wait like forever, and are woken like forever. */
Test(queue, huge_timeouts_block_until_woken, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static blk_t x;
    double ts[] = {1e300, INFINITY, 1e9};
    conc_queue_t *q = mkq(CONC_FIFO, 2);
    for (int k = 0; k < 3; k++) {
        one_blocker(&b, &x, OP_GET, q, ts[k]);
        cr_assert_eq(conc_queue_put(q, P(10 + k), true, CONC_FOREVER), 0);
        tu_bunch_join(&b);
        cr_assert_eq(atomic_load(&x.rc[0]), 0, "timeout %g: rc %d", ts[k], atomic_load(&x.rc[0]));
        cr_assert_eq(atomic_load(&x.got[0]), 10 + (uintptr_t)k);
        cr_assert_eq(conc_queue_put(q, P(1), true, CONC_FOREVER), 0);
        cr_assert_eq(conc_queue_put(q, P(2), true, CONC_FOREVER), 0);
        x.put_base = 99;
        one_blocker(&b, &x, OP_PUT, q, ts[k]);
        void *it;
        cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), 0);
        cr_assert_eq(U(it), 1);
        tu_bunch_join(&b);
        cr_assert_eq(atomic_load(&x.rc[0]), 0);
        cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), 0);
        cr_assert_eq(U(it), 2);
        cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), 0);
        cr_assert_eq(U(it), 99);
    }
    freeq(q);
}

/* A timed get that is fed before its timeout returns the item, quickly. */
Test(queue, timed_get_and_put_woken_early, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static blk_t x;
    conc_queue_t *q = mkq(CONC_LIFO, 2);
    one_blocker(&b, &x, OP_GET, q, 20);
    cr_assert_eq(conc_queue_put(q, P(77), true, CONC_FOREVER), 0);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.rc[0]), 0);
    cr_assert_eq(atomic_load(&x.got[0]), 77);
    cr_assert_lt(x.dt[0], 10);
    cr_assert_eq(conc_queue_put(q, P(1), true, 0), 0);
    cr_assert_eq(conc_queue_put(q, P(2), true, 0), 0);
    x.put_base = 3;
    one_blocker(&b, &x, OP_PUT, q, 20);
    void *it;
    cr_assert_eq(conc_queue_get(q, &it, true, 0), 0);
    cr_assert_eq(U(it), 2);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.rc[0]), 0);
    cr_assert_lt(x.dt[0], 10);
    cr_assert_eq(conc_queue_get(q, &it, true, 0), 0);
    cr_assert_eq(U(it), 3);
    cr_assert_eq(conc_queue_get(q, &it, true, 0), 0);
    cr_assert_eq(U(it), 1);
    freeq(q);
}

/* N sleeping getters: k puts release exactly k of them, each with its own
 * item; N sleeping putters on a full queue: k gets release exactly k. */
Test(queue, each_put_wakes_one_getter, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static blk_t x;
    const int N = 5;
    conc_queue_kind_t kinds[] = {CONC_FIFO, CONC_LIFO, CONC_PRIORITY, CONC_SIMPLE};
    for (int k = 0; k < 4; k++) {
        conc_queue_t *q = mkq(kinds[k], 2);
        blk_start(&b, &x, N, OP_GET, q, k & 1 ? 30 : CONC_FOREVER);
        for (int j = 1; j <= N; j++) {
            cr_assert_eq(conc_queue_put(q, P(100 + j), true, CONC_FOREVER), 0);
            cr_assert(TU_WAIT_UNTIL(atomic_load(&x.finished) >= j, 10), "%s: put %d woke nobody",
                      kname(kinds[k]), j);
            cr_assert_eq(atomic_load(&x.finished), j, "%s: one put woke %d getters", kname(kinds[k]),
                         atomic_load(&x.finished) - j + 1);
            cr_assert_eq(conc_queue_qsize(q), 0);
        }
        tu_bunch_join(&b);
        unsigned seen = 0;
        for (int i = 0; i < N; i++) {
            cr_assert_eq(atomic_load(&x.rc[i]), 0);
            uintptr_t g = atomic_load(&x.got[i]);
            cr_assert(g >= 101 && g <= 100 + (uintptr_t)N, "getter %d got %lu", i, (unsigned long)g);
            cr_assert_not(seen & (1u << (g - 100)), "item %lu delivered twice", (unsigned long)g);
            seen |= 1u << (g - 100);
        }
        freeq(q);
    }
}

Test(queue, each_get_wakes_one_putter, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static blk_t x;
    const int N = 5;
    conc_queue_kind_t kinds[] = {CONC_FIFO, CONC_LIFO, CONC_PRIORITY};
    for (int k = 0; k < 3; k++) {
        conc_queue_t *q = mkq(kinds[k], 2);
        void *it;
        cr_assert_eq(conc_queue_put(q, P(1), true, CONC_FOREVER), 0);
        cr_assert_eq(conc_queue_put(q, P(2), true, CONC_FOREVER), 0);
        x.put_base = 200;
        blk_start(&b, &x, N, OP_PUT, q, k & 1 ? 30 : CONC_FOREVER);
        unsigned seen = 0; /* bit 1, 2: the first items; bit 10+i: putter i */
        for (int j = 1; j <= N + 2; j++) {
            cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), 0);
            unsigned bit = U(it) >= 200 ? 10 + (unsigned)(U(it) - 200) : (unsigned)U(it);
            cr_assert(bit < 10 + (unsigned)N && !(seen & (1u << bit)), "%s: bad or repeated item %lu",
                      kname(kinds[k]), (unsigned long)U(it));
            seen |= 1u << bit;
            if (j > N)
                continue;
            cr_assert(TU_WAIT_UNTIL(atomic_load(&x.finished) >= j, 10), "%s: get %d woke nobody",
                      kname(kinds[k]), j);
            cr_assert_eq(atomic_load(&x.finished), j, "%s: one get woke %d putters", kname(kinds[k]),
                         atomic_load(&x.finished) - j + 1);
            cr_assert_eq(conc_queue_qsize(q), 2);
            cr_assert(conc_queue_full(q));
        }
        tu_bunch_join(&b);
        for (int i = 0; i < N; i++)
            cr_assert_eq(atomic_load(&x.rc[i]), 0);
        cr_assert_eq(__builtin_popcount(seen), 2 + N);
        cr_assert(conc_queue_empty(q));
        cr_assert_eq(conc_queue_unfinished_tasks(q), 2 + (size_t)N);
        freeq(q);
    }
}

/* ---------------------------------------------------------- unbounded */

Test(queue, maxsize_zero_or_negative_is_unbounded, .timeout = TU_TIMEOUT)
{
    conc_queue_kind_t kinds[] = {CONC_FIFO, CONC_LIFO, CONC_PRIORITY};
    long sizes[] = {0, -1, -5, LONG_MIN};
    const long N = 20000;
    for (int k = 0; k < 3; k++) {
        for (int s = 0; s < 4; s++) {
            conc_queue_t *q = mkq(kinds[k], sizes[s]);
            cr_assert_leq(conc_queue_maxsize(q), 0, "maxsize %ld reads back as %ld", sizes[s],
                          conc_queue_maxsize(q));
            double t0 = tu_now();
            for (long i = 0; i < N; i++) {
                int rc = (i % 3 == 0)   ? conc_queue_put(q, P(i), true, CONC_FOREVER)
                         : (i % 3 == 1) ? conc_queue_put_nowait(q, P(i))
                                        : conc_queue_put(q, P(i), true, 0);
                cr_assert_eq(rc, 0, "%s maxsize %ld: put %ld = %d", kname(kinds[k]), sizes[s], i, rc);
                if (i % 4096 == 0)
                    cr_assert_not(conc_queue_full(q));
            }
            cr_assert_lt(tu_now() - t0, 20, "unbounded puts blocked");
            cr_assert_eq(conc_queue_qsize(q), (size_t)N);
            cr_assert_not(conc_queue_full(q));
            cr_assert_eq(conc_queue_unfinished_tasks(q), (size_t)N);
            for (long i = 0; i < N; i++) {
                void *it;
                cr_assert_eq(conc_queue_get_nowait(q, &it), 0);
                long want = kinds[k] == CONC_LIFO ? N - 1 - i : i;
                cr_assert_eq((long)U(it), want, "%s: item %ld is %ld", kname(kinds[k]), i, (long)U(it));
            }
            cr_assert(conc_queue_empty(q));
            freeq(q);
        }
    }
}

Test(queue, qsize_empty_full_maxsize_kind, .timeout = TU_TIMEOUT)
{
    conc_queue_kind_t kinds[] = {CONC_FIFO, CONC_LIFO, CONC_PRIORITY};
    for (int k = 0; k < 3; k++) {
        for (long m = 1; m <= 3; m++) {
            conc_queue_t *q = mkq(kinds[k], m);
            void *it;
            cr_assert_eq(conc_queue_kind(q), kinds[k]);
            cr_assert_eq(conc_queue_maxsize(q), m);
            for (long r = 0; r < 3; r++) { /* across wrap-around */
                for (long i = 0; i < m; i++) {
                    cr_assert_eq(conc_queue_qsize(q), (size_t)i);
                    cr_assert_eq(conc_queue_empty(q), i == 0);
                    cr_assert_not(conc_queue_full(q));
                    cr_assert_eq(conc_queue_put(q, P(i), false, 0), 0);
                }
                cr_assert_eq(conc_queue_qsize(q), (size_t)m);
                cr_assert(conc_queue_full(q));
                cr_assert_not(conc_queue_empty(q));
                cr_assert_eq(conc_queue_put(q, P(9), false, 0), CONC_EFULL);
                for (long i = m; i > 0; i--) {
                    cr_assert_eq(conc_queue_get(q, &it, false, 0), 0);
                    cr_assert_eq(conc_queue_qsize(q), (size_t)i - 1);
                    cr_assert_not(conc_queue_full(q));
                }
                cr_assert(conc_queue_empty(q));
            }
            freeq(q);
        }
    }
}

/* A bounded FIFO that wraps around many times keeps order; a LIFO keeps
 * stack order across interleaved pushes and pops. */
Test(queue, order_across_wraparound, .timeout = TU_TIMEOUT)
{
    conc_queue_t *q = mkq(CONC_FIFO, 4);
    uintptr_t next_in = 0, next_out = 0;
    long rounds = tu_iters(20000);
    for (long r = 0; r < rounds; r++) {
        int n = 1 + (int)(r % 4);
        for (int i = 0; i < n; i++)
            cr_assert_eq(conc_queue_put(q, P(next_in++), false, 0), 0);
        for (int i = 0; i < n; i++) {
            void *it;
            cr_assert_eq(conc_queue_get(q, &it, false, 0), 0);
            cr_assert_eq(U(it), next_out, "FIFO out of order: %lu, expected %lu",
                         (unsigned long)U(it), (unsigned long)next_out);
            next_out++;
        }
    }
    freeq(q);

    q = mkq(CONC_LIFO, 0);
    uintptr_t stack[256];
    int sp = 0;
    unsigned seed = 1;
    for (long r = 0; r < rounds * 4; r++) {
        seed = seed * 1103515245u + 12345u;
        bool push = sp == 0 || (sp < 256 && ((seed >> 16) & 1));
        void *it;
        if (push) {
            stack[sp++] = (uintptr_t)r;
            cr_assert_eq(conc_queue_put(q, P(r), false, 0), 0);
        } else {
            cr_assert_eq(conc_queue_get(q, &it, false, 0), 0);
            cr_assert_eq(U(it), stack[--sp]);
        }
        cr_assert_eq(conc_queue_qsize(q), (size_t)sp);
    }
    freeq(q);
}

/* ------------------------------------------------------- PriorityQueue */

Test(queue, priority_default_is_unsigned_uintptr, .timeout = TU_TIMEOUT)
{
    conc_queue_t *q = mkq(CONC_PRIORITY, 0);
    uintptr_t in[] = {5, 1, UINTPTR_MAX, 0, 3, (uintptr_t)INTPTR_MAX + 1, 3, UINTPTR_MAX - 1, 2};
    uintptr_t out[] = {0, 1, 2, 3, 3, 5, (uintptr_t)INTPTR_MAX + 1, UINTPTR_MAX - 1, UINTPTR_MAX};
    size_t n = sizeof in / sizeof in[0];
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(conc_queue_put(q, P(in[i]), true, CONC_FOREVER), 0);
    for (size_t i = 0; i < n; i++) {
        void *it;
        cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), 0);
        cr_assert_eq(U(it), out[i], "position %zu: %#lx, expected %#lx", i, (unsigned long)U(it),
                     (unsigned long)out[i]);
    }
    freeq(q);

    /* many random priorities, interleaved with gets */
    q = mkq(CONC_PRIORITY, 0);
    unsigned seed = 7;
    long n2 = tu_iters(20000);
    uintptr_t last = 0;
    size_t inq = 0;
    for (long i = 0; i < n2; i++) {
        seed = seed * 1103515245u + 12345u;
        cr_assert_eq(conc_queue_put(q, P(seed), false, 0), 0);
        inq++;
    }
    for (long i = 0; i < n2; i++) {
        void *it;
        cr_assert_eq(conc_queue_get(q, &it, false, 0), 0);
        cr_assert_geq(U(it), last, "priority order broken at %ld", i);
        last = U(it);
        inq--;
    }
    cr_assert_eq(conc_queue_qsize(q), inq);
    freeq(q);
}

typedef struct {
    int prio;
    int seq;
} pitem_t;

static atomic_long cmp_calls;

static int cmp_prio(const void *a, const void *b)
{
    atomic_fetch_add(&cmp_calls, 1);
    const pitem_t *x = a, *y = b;
    return (x->prio > y->prio) - (x->prio < y->prio);
}

/* Items of equal priority come out first in, first out — also when puts
 * and gets interleave, and with a bounded queue. */
Test(queue, priority_ties_are_fifo, .timeout = TU_TIMEOUT)
{
    const int N = (int)tu_iters(20000);
    pitem_t *items = calloc((size_t)N, sizeof *items);
    cr_assert_not_null(items);
    long caps[] = {0, 64};
    for (int c = 0; c < 2; c++) {
        conc_queue_t *q = NULL;
        cr_assert_eq(conc_priority_queue_new(&q, caps[c], cmp_prio), 0);
        cr_assert_not_null(q);
        cr_assert_eq(conc_queue_kind(q), CONC_PRIORITY);
        cr_assert_eq(conc_queue_maxsize(q), caps[c]);
        unsigned seed = 99;
        int last_seq[8];
        int last_prio = -1;
        for (int i = 0; i < 8; i++)
            last_seq[i] = -1;
        int put = 0, got = 0;
        atomic_store(&cmp_calls, 0);
        while (got < N) {
            seed = seed * 1103515245u + 12345u;
            /* phases: fill a burst, then drain part of it */
            int burst = 1 + (int)((seed >> 8) % 48);
            for (int i = 0; i < burst && put < N; i++) {
                seed = seed * 1103515245u + 12345u;
                items[put].prio = (int)((seed >> 16) % 8);
                items[put].seq = put;
                int rc = conc_queue_put(q, &items[put], false, 0);
                if (rc == CONC_EFULL && caps[c] > 0)
                    break;
                cr_assert_eq(rc, 0);
                put++;
            }
            int drain = put == N ? N : (int)((seed >> 4) % 40);
            last_prio = -1;
            for (int i = 0; i < drain && got < put; i++) {
                void *it;
                cr_assert_eq(conc_queue_get(q, &it, false, 0), 0);
                pitem_t *p = it;
                cr_assert(p >= items && p < items + N);
                cr_assert_geq(p->prio, last_prio, "lower priority came out first");
                last_prio = p->prio;
                cr_assert_gt(p->seq, last_seq[p->prio], "prio %d: seq %d after seq %d (ties not FIFO)",
                             p->prio, p->seq, last_seq[p->prio]);
                last_seq[p->prio] = p->seq;
                got++;
            }
        }
        cr_assert_eq(conc_queue_qsize(q), 0);
        cr_assert_gt(atomic_load(&cmp_calls), 0, "the comparator was never called");
        freeq(q);
    }

    /* all equal: pure FIFO */
    conc_queue_t *q = NULL;
    cr_assert_eq(conc_priority_queue_new(&q, 0, cmp_prio), 0);
    for (int i = 0; i < N; i++) {
        items[i].prio = 3;
        items[i].seq = i;
        cr_assert_eq(conc_queue_put(q, &items[i], true, CONC_FOREVER), 0);
    }
    for (int i = 0; i < N; i++) {
        void *it;
        cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), 0);
        cr_assert_eq(it, &items[i], "equal priorities: got seq %d at %d", ((pitem_t *)it)->seq, i);
    }
    freeq(q);
    /* ties with the default comparator too */
    q = mkq(CONC_PRIORITY, 0);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(conc_queue_put(q, P(i % 2 ? 9 : 4), true, CONC_FOREVER), 0);
    for (int i = 0; i < 100; i++) {
        void *it;
        cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), 0);
        cr_assert_eq(U(it), i < 50 ? 4u : 9u);
    }
    freeq(q);
    free(items);
}

/* -------------------------------------------------------- SimpleQueue */

Test(simplequeue, basic, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static blk_t x;
    conc_queue_t *q = mkq(CONC_SIMPLE, 0);
    void *it;
    cr_assert_eq(conc_queue_kind(q), CONC_SIMPLE);
    cr_assert(conc_queue_empty(q));
    cr_assert_eq(conc_queue_qsize(q), 0);
    cr_assert_eq(conc_queue_put(q, P(111), true, CONC_FOREVER), 0);
    cr_assert_eq(conc_queue_put(q, P(333), true, CONC_FOREVER), 0);
    cr_assert_eq(conc_queue_put_nowait(q, P(222)), 0);
    cr_assert_eq(conc_queue_qsize(q), 3);
    cr_assert_not(conc_queue_empty(q));
    uintptr_t want[] = {111, 333, 222};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), 0);
        cr_assert_eq(U(it), want[i]);
    }
    cr_assert_eq(conc_queue_get(q, &it, false, 0), CONC_EEMPTY);
    cr_assert_eq(conc_queue_get_nowait(q, &it), CONC_EEMPTY);
    double t0 = tu_now();
    cr_assert_eq(conc_queue_get(q, &it, true, 0.05), CONC_EEMPTY);
    tu_assert_timeout(tu_now() - t0, 0.05);
    cr_assert_eq(conc_queue_get(q, &it, true, -0.5), CONC_EINVAL);
    cr_assert_eq(conc_queue_get(q, &it, true, NAN), CONC_EINVAL);
    /* blocking get released by a put */
    one_blocker(&b, &x, OP_GET, q, CONC_FOREVER);
    cr_assert_eq(conc_queue_put(q, P(5), true, CONC_FOREVER), 0);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.rc[0]), 0);
    cr_assert_eq(atomic_load(&x.got[0]), 5);
    one_blocker(&b, &x, OP_GET, q, 10);
    cr_assert_eq(conc_queue_put(q, P(6), false, 0), 0);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.rc[0]), 0);
    cr_assert_eq(atomic_load(&x.got[0]), 6);
    freeq(q);
}

Test(simplequeue, put_never_blocks_and_ignores_maxsize, .timeout = TU_TIMEOUT)
{
    long sizes[] = {0, 1, 3, -4};
    const long N = tu_iters(100000);
    for (int s = 0; s < 4; s++) {
        conc_queue_t *q = mkq(CONC_SIMPLE, sizes[s]);
        double t0 = tu_now();
        for (long i = 0; i < N; i++) {
            int rc = (i & 1) ? conc_queue_put(q, P(i), true, CONC_FOREVER)
                             : conc_queue_put(q, P(i), false, 0);
            cr_assert_eq(rc, 0, "maxsize %ld: put %ld = %d", sizes[s], i, rc);
        }
        cr_assert_lt(tu_now() - t0, 20);
        cr_assert_not(conc_queue_full(q), "a SimpleQueue is never full");
        cr_assert_eq(conc_queue_qsize(q), (size_t)N);
        for (long i = 0; i < N; i++) {
            void *it;
            cr_assert_eq(conc_queue_get(q, &it, false, 0), 0);
            cr_assert_eq((long)U(it), i);
        }
        cr_assert(conc_queue_empty(q));
        freeq(q);
    }
}

Test(simplequeue, no_task_done_or_join, .timeout = TU_TIMEOUT)
{
    conc_queue_t *q = mkq(CONC_SIMPLE, 0);
    void *it;
    cr_assert_eq(conc_queue_task_done(q), CONC_EINVAL);
    cr_assert_eq(conc_queue_join(q, 0), CONC_EINVAL);
    cr_assert_eq(conc_queue_join(q, CONC_FOREVER), CONC_EINVAL, "join on a SimpleQueue");
    cr_assert_eq(conc_queue_put(q, P(1), true, CONC_FOREVER), 0);
    cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_queue_task_done(q), CONC_EINVAL);
    cr_assert_eq(conc_queue_put(q, P(2), true, CONC_FOREVER), 0);
    cr_assert_eq(conc_queue_join(q, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc_queue_unfinished_tasks(q), 0);
    cr_assert_eq(conc_queue_qsize(q), 1);
    freeq(q);
}

/* ------------------------------------------------------------ NULL item */

Test(queue, null_is_a_valid_item, .timeout = TU_TIMEOUT)
{
    conc_queue_kind_t kinds[] = {CONC_FIFO, CONC_LIFO, CONC_PRIORITY, CONC_SIMPLE};
    for (int k = 0; k < 4; k++) {
        conc_queue_t *q = mkq(kinds[k], 3);
        void *it = P(0xdead);
        cr_assert_eq(conc_queue_put(q, NULL, true, CONC_FOREVER), 0);
        cr_assert_eq(conc_queue_qsize(q), 1, "%s: NULL not stored", kname(kinds[k]));
        cr_assert_not(conc_queue_empty(q));
        cr_assert_eq(conc_queue_get(q, &it, false, 0), 0);
        cr_assert_null(it, "%s", kname(kinds[k]));
        cr_assert(conc_queue_empty(q));
        /* mixed with other items: order kept */
        cr_assert_eq(conc_queue_put(q, P(2), false, 0), 0);
        cr_assert_eq(conc_queue_put_nowait(q, NULL), 0);
        cr_assert_eq(conc_queue_put(q, P(1), false, 0), 0);
        void *want[3];
        if (kinds[k] == CONC_LIFO)
            want[0] = P(1), want[1] = NULL, want[2] = P(2);
        else if (kinds[k] == CONC_PRIORITY)
            want[0] = NULL, want[1] = P(1), want[2] = P(2);
        else
            want[0] = P(2), want[1] = NULL, want[2] = P(1);
        for (int i = 0; i < 3; i++) {
            it = P(0xdead);
            cr_assert_eq(conc_queue_get_nowait(q, &it), 0);
            cr_assert_eq(it, want[i], "%s position %d", kname(kinds[k]), i);
        }
        cr_assert_eq(conc_queue_get_nowait(q, &it), CONC_EEMPTY);
        freeq(q);
    }
}

/* --------------------------------------------------------- bad input */

static int never_cmp(const void *a, const void *b)
{
    (void)a;
    (void)b;
    return 0;
}

Test(queue, null_and_bad_arguments, .timeout = TU_TIMEOUT)
{
    conc_queue_t *q = P(0x1);
    void *it = NULL;
    size_t idx;
    cr_assert_eq(conc_queue_new(NULL, CONC_FIFO, 0), CONC_EINVAL);
    cr_assert_eq(conc_queue_new(NULL, CONC_SIMPLE, 0), CONC_EINVAL);
    cr_assert_eq(conc_queue_new(&q, (conc_queue_kind_t)4, 0), CONC_EINVAL);
    cr_assert_eq(conc_queue_new(&q, (conc_queue_kind_t)-1, 0), CONC_EINVAL);
    cr_assert_eq(conc_queue_new(&q, (conc_queue_kind_t)1000, 10), CONC_EINVAL);
    cr_assert_eq(conc_priority_queue_new(NULL, 0, never_cmp), CONC_EINVAL);
    cr_assert_eq(conc_queue_free(NULL, NULL), CONC_EINVAL);
    cr_assert_eq(conc_queue_put(NULL, P(1), true, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc_queue_put(NULL, P(1), false, 0), CONC_EINVAL);
    cr_assert_eq(conc_queue_put_nowait(NULL, P(1)), CONC_EINVAL);
    cr_assert_eq(conc_queue_get(NULL, &it, true, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc_queue_get(NULL, &it, false, 0), CONC_EINVAL);
    cr_assert_eq(conc_queue_get_nowait(NULL, &it), CONC_EINVAL);
    cr_assert_eq(conc_queue_task_done(NULL), CONC_EINVAL);
    cr_assert_eq(conc_queue_join(NULL, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc_queue_join(NULL, 0), CONC_EINVAL);
    cr_assert_eq(conc_queue_shutdown(NULL, false, NULL), CONC_EINVAL);
    cr_assert_eq(conc_queue_shutdown(NULL, true, NULL), CONC_EINVAL);
    cr_assert_eq(conc_queue_select(NULL, 1, &idx, &it, 0), CONC_EINVAL);
    /* queries on NULL do not crash and report an empty, unbounded nothing */
    cr_assert_eq(conc_queue_qsize(NULL), 0);
    cr_assert_not(conc_queue_full(NULL));
    cr_assert_not(conc_queue_is_shutdown(NULL));
    cr_assert_eq(conc_queue_unfinished_tasks(NULL), 0);
    (void)conc_queue_empty(NULL);
    (void)conc_queue_maxsize(NULL);
    (void)conc_queue_kind(NULL);

    /* NULL out-pointer for get: EINVAL, and nothing is consumed */
    conc_queue_kind_t kinds[] = {CONC_FIFO, CONC_LIFO, CONC_PRIORITY, CONC_SIMPLE};
    for (int k = 0; k < 4; k++) {
        q = mkq(kinds[k], 2);
        cr_assert_eq(conc_queue_get(q, NULL, false, 0), CONC_EINVAL);
        cr_assert_eq(conc_queue_get(q, NULL, true, 0.01), CONC_EINVAL);
        cr_assert_eq(conc_queue_put(q, P(4), false, 0), 0);
        cr_assert_eq(conc_queue_get(q, NULL, true, CONC_FOREVER), CONC_EINVAL, "%s", kname(kinds[k]));
        cr_assert_eq(conc_queue_get_nowait(q, NULL), CONC_EINVAL);
        cr_assert_eq(conc_queue_get(q, NULL, false, 0), CONC_EINVAL);
        cr_assert_eq(conc_queue_qsize(q), 1, "%s: a get into NULL consumed the item", kname(kinds[k]));
        cr_assert_eq(conc_queue_get(q, &it, false, 0), 0);
        cr_assert_eq(U(it), 4);
        freeq(q);
    }
}

/* A NULL comparator is either refused or means the default order. */
Test(queue, priority_null_comparator, .timeout = TU_TIMEOUT)
{
    conc_queue_t *q = NULL;
    int rc = conc_priority_queue_new(&q, 0, NULL);
    cr_assert(rc == 0 || rc == CONC_EINVAL, "rc %d", rc);
    if (rc == 0) {
        cr_assert_not_null(q);
        cr_assert_eq(conc_queue_kind(q), CONC_PRIORITY);
        cr_assert_eq(conc_queue_put(q, P(3), false, 0), 0);
        cr_assert_eq(conc_queue_put(q, P(1), false, 0), 0);
        cr_assert_eq(conc_queue_put(q, P(2), false, 0), 0);
        for (uintptr_t i = 1; i <= 3; i++) {
            void *it;
            cr_assert_eq(conc_queue_get(q, &it, false, 0), 0);
            cr_assert_eq(U(it), i);
        }
        freeq(q);
    }
}

/* ------------------------------------------------------------- free */

static atomic_long dtor_count, dtor_sum;
static unsigned char dtor_seen[4096];
static atomic_int dtor_dup;

static void dtor(void *item)
{
    uintptr_t v = U(item);
    atomic_fetch_add(&dtor_count, 1);
    atomic_fetch_add(&dtor_sum, (long)v);
    if (v < sizeof dtor_seen) {
        if (dtor_seen[v])
            atomic_fetch_add(&dtor_dup, 1);
        dtor_seen[v] = 1;
    }
}

static void dtor_reset(void)
{
    atomic_store(&dtor_count, 0);
    atomic_store(&dtor_sum, 0);
    atomic_store(&dtor_dup, 0);
    memset(dtor_seen, 0, sizeof dtor_seen);
}

Test(queue, free_passes_items_to_dtor, .timeout = TU_TIMEOUT)
{
    conc_queue_kind_t kinds[] = {CONC_FIFO, CONC_LIFO, CONC_PRIORITY, CONC_SIMPLE};
    long caps[] = {0, 7, 1000};
    for (int k = 0; k < 4; k++) {
        for (int c = 0; c < 3; c++) {
            for (int n = 0; n <= 7; n += 7) {
                conc_queue_t *q = mkq(kinds[k], caps[c]);
                void *it;
                /* move the ring's indices first, so items straddle the wrap */
                for (int i = 0; i < 5; i++) {
                    cr_assert_eq(conc_queue_put(q, P(3000 + i), false, 0), 0);
                    cr_assert_eq(conc_queue_get(q, &it, false, 0), 0);
                }
                long sum = 0;
                for (int i = 1; i <= n; i++) {
                    cr_assert_eq(conc_queue_put(q, P(i * 3), false, 0), 0);
                    sum += i * 3;
                }
                dtor_reset();
                cr_assert_eq(conc_queue_free(q, dtor), 0);
                cr_assert_eq(atomic_load(&dtor_count), n, "%s cap %ld: dtor called %ld times for %d items",
                             kname(kinds[k]), caps[c], atomic_load(&dtor_count), n);
                cr_assert_eq(atomic_load(&dtor_sum), sum);
                cr_assert_eq(atomic_load(&dtor_dup), 0);
                for (int i = 1; i <= n; i++)
                    cr_assert(dtor_seen[i * 3]);
            }
        }
    }
    /* a big unbounded queue (several segments) with a real destructor */
    conc_queue_t *q = mkq(CONC_FIFO, 0);
    for (int i = 0; i < 3000; i++)
        cr_assert_eq(conc_queue_put(q, P(i), false, 0), 0);
    for (int i = 0; i < 1000; i++) {
        void *it;
        cr_assert_eq(conc_queue_get(q, &it, false, 0), 0);
    }
    dtor_reset();
    cr_assert_eq(conc_queue_free(q, dtor), 0);
    cr_assert_eq(atomic_load(&dtor_count), 2000);
    cr_assert_eq(atomic_load(&dtor_dup), 0);
    for (int i = 1000; i < 3000; i++)
        cr_assert(dtor_seen[i], "item %d not passed to the destructor", i);
    /* heap items and free as the destructor (ASan checks the leaks) */
    q = mkq(CONC_LIFO, 0);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(conc_queue_put(q, malloc(16), false, 0), 0);
    cr_assert_eq(conc_queue_free(q, free), 0);
    /* NULL dtor with items: fine */
    q = mkq(CONC_PRIORITY, 4);
    cr_assert_eq(conc_queue_put(q, P(1), false, 0), 0);
    cr_assert_eq(conc_queue_free(q, NULL), 0);
}

/* Freeing a queue somebody waits on is refused (EPERM), leaves the queue
 * working, and succeeds once the waiter has left. */
static void free_refused_while(int op, conc_queue_kind_t kind)
{
    static tu_bunch_t b;
    static blk_t x;
    conc_queue_t *q = mkq(kind, 2);
    void *it;
    if (op == OP_PUT) {
        cr_assert_eq(conc_queue_put(q, P(1), false, 0), 0);
        cr_assert_eq(conc_queue_put(q, P(3), false, 0), 0);
    }
    if (op == OP_JOIN)
        cr_assert_eq(conc_queue_put(q, P(1), false, 0), 0);
    x.put_base = 2;
    one_blocker(&b, &x, op, q, op == OP_GET ? CONC_FOREVER : 30);
    dtor_reset();
    cr_assert_eq(conc_queue_free(q, dtor), CONC_EPERM, "%s op %d: free with a waiter", kname(kind), op);
    cr_assert_eq(atomic_load(&dtor_count), 0, "a refused free destroyed items");
    cr_assert_eq(conc_queue_free(q, NULL), CONC_EPERM);
    /* still works: release the waiter through the queue */
    switch (op) {
    case OP_GET:
        cr_assert_eq(conc_queue_put(q, P(9), false, 0), 0);
        break;
    case OP_PUT:
        cr_assert_eq(conc_queue_get(q, &it, false, 0), 0);
        cr_assert(U(it) == 1 || U(it) == 3);
        break;
    case OP_JOIN:
        cr_assert_eq(conc_queue_get(q, &it, false, 0), 0);
        cr_assert_eq(conc_queue_task_done(q), 0);
        break;
    }
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.rc[0]), 0, "waiter rc %d after a refused free", atomic_load(&x.rc[0]));
    if (op == OP_GET)
        cr_assert_eq(atomic_load(&x.got[0]), 9);
    if (op == OP_PUT) {
        uintptr_t sum = 0;
        for (int i = 0; i < 2; i++) {
            cr_assert_eq(conc_queue_get(q, &it, false, 0), 0);
            sum += U(it);
        }
        cr_assert(sum == 3 || sum == 5, "the blocked putter's item is missing");
    }
    cr_assert_eq(conc_queue_put(q, P(5), false, 0), 0);
    dtor_reset();
    cr_assert_eq(conc_queue_free(q, dtor), 0);
    cr_assert_eq(atomic_load(&dtor_count), 1);
}

Test(queue, free_with_blocked_getter_is_eperm, .timeout = TU_TIMEOUT)
{
    free_refused_while(OP_GET, CONC_FIFO);
    free_refused_while(OP_GET, CONC_LIFO);
    free_refused_while(OP_GET, CONC_PRIORITY);
    free_refused_while(OP_GET, CONC_SIMPLE);
}

Test(queue, free_with_blocked_putter_is_eperm, .timeout = TU_TIMEOUT)
{
    free_refused_while(OP_PUT, CONC_FIFO);
    free_refused_while(OP_PUT, CONC_LIFO);
    free_refused_while(OP_PUT, CONC_PRIORITY);
}

Test(queue, free_with_blocked_joiner_is_eperm, .timeout = TU_TIMEOUT)
{
    free_refused_while(OP_JOIN, CONC_FIFO);
    free_refused_while(OP_JOIN, CONC_PRIORITY);
}

/* Queue(1): exactly one item fits, in every discipline. */
Test(queue, maxsize_one, .timeout = TU_TIMEOUT)
{
    conc_queue_kind_t kinds[] = {CONC_FIFO, CONC_LIFO, CONC_PRIORITY};
    for (int k = 0; k < 3; k++) {
        conc_queue_t *q = mkq(kinds[k], 1);
        void *it;
        for (int r = 0; r < 5; r++) {
            cr_assert_eq(conc_queue_put_nowait(q, P(10 + r)), 0);
            cr_assert(conc_queue_full(q));
            cr_assert_eq(conc_queue_put_nowait(q, P(99)), CONC_EFULL,
                         "%s: Queue(1) took a second item", kname(kinds[k]));
            cr_assert_eq(conc_queue_put(q, P(99), true, 0.01), CONC_EFULL);
            cr_assert_eq(conc_queue_qsize(q), 1);
            cr_assert_eq(conc_queue_get_nowait(q, &it), 0);
            cr_assert_eq(U(it), 10 + (uintptr_t)r);
            cr_assert_eq(conc_queue_get_nowait(q, &it), CONC_EEMPTY);
        }
        freeq(q);
    }
}

/* A waiter that timed out is gone: free succeeds right after. */
Test(queue, free_after_timed_out_waiters, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static blk_t x;
    conc_queue_t *q = mkq(CONC_FIFO, 1);
    blk_start(&b, &x, 4, OP_GET, q, 0.1);
    tu_bunch_join(&b);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(atomic_load(&x.rc[i]), CONC_EEMPTY);
    cr_assert_eq(conc_queue_free(q, NULL), 0, "free refused after every waiter timed out");
}

/* ------------------------------------------------- simple ping-pong
 * Two threads, two queues; checks the wake-up path end to end many times. */
typedef struct {
    conc_queue_t *a, *b;
    long rounds;
    atomic_int errors;
} pp_t;

static void pong_fn(void *p, int i)
{
    (void)i;
    pp_t *x = p;
    for (long r = 0; r < x->rounds; r++) {
        void *it;
        if (conc_queue_get(x->a, &it, true, 30) != 0 || U(it) != (uintptr_t)r) {
            atomic_fetch_add(&x->errors, 1);
            return;
        }
        if (conc_queue_put(x->b, P(r + 1), true, 30) != 0) {
            atomic_fetch_add(&x->errors, 1);
            return;
        }
    }
}

Test(queue, ping_pong, .timeout = TU_TIMEOUT)
{
    static pp_t x;
    static tu_bunch_t b;
    conc_queue_kind_t kinds[] = {CONC_FIFO, CONC_LIFO, CONC_PRIORITY, CONC_SIMPLE};
    for (int k = 0; k < 4; k++) {
        x.a = mkq(kinds[k], 1);
        x.b = mkq(kinds[k], k == 0 ? 0 : 1);
        x.rounds = tu_iters(20000);
        atomic_store(&x.errors, 0);
        tu_bunch_start(&b, 1, pong_fn, &x);
        for (long r = 0; r < x.rounds; r++) {
            void *it;
            cr_assert_eq(conc_queue_put(x.a, P(r), true, 30), 0);
            cr_assert_eq(conc_queue_get(x.b, &it, true, 30), 0, "%s round %ld", kname(kinds[k]), r);
            cr_assert_eq(U(it), (uintptr_t)r + 1);
        }
        tu_bunch_join(&b);
        cr_assert_eq(atomic_load(&x.errors), 0);
        freeq(x.a);
        freeq(x.b);
    }
}

/* ------------------------------------------- SimpleQueue.put is reentrant
 * (issue 12 section 5; CPython's test_queue CSimpleQueueTest
 * test_reentrancy: a put from a signal handler / __del__ that interrupted a
 * put on the same queue). A timer signal aimed at this thread fires every
 * 50 microseconds while it puts in a loop; the handler puts too. Before
 * the fix a handler that landed inside put spun forever on the lock its own
 * thread held. */
#include <signal.h>

#define HANDLER_TAG ((uintptr_t)1 << 40)
static conc_queue_t *reent_q;
static volatile sig_atomic_t reent_handler_puts, reent_handler_fails;

static void reent_handler(int sig)
{
    (void)sig;
    int saved = errno;
    if (conc_queue_put_nowait(reent_q, (void *)(HANDLER_TAG + (uintptr_t)reent_handler_puts)) == 0)
        reent_handler_puts = reent_handler_puts + 1;
    else
        reent_handler_fails = reent_handler_fails + 1;
    errno = saved;
}

Test(queue, simple_put_reentrant_from_signal_handler, .timeout = TU_TIMEOUT)
{
    cr_assert_eq(conc_queue_new(&reent_q, CONC_SIMPLE, 0), 0);
    reent_handler_puts = reent_handler_fails = 0;
    struct sigaction sa = {0}, old;
    sa.sa_handler = reent_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGALRM, &sa, &old), 0);
    struct sigevent sev = {0};
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = SIGALRM;
    sev._sigev_un._tid = (pid_t)tu_gettid();
    timer_t tm;
    cr_assert_eq(timer_create(CLOCK_MONOTONIC, &sev, &tm), 0);
    struct itimerspec its = {{0, 50000}, {0, 50000}}; /* every 50 µs */
    cr_assert_eq(timer_settime(tm, 0, &its, NULL), 0);

    uintptr_t put_main = 0, next_main = 0, next_handler = 0;
    long put_fail = 0, bad_order = 0;
    double end = tu_now() + (TU_SANITIZED ? 0.5 : 1.0);
    while (tu_now() < end || reent_handler_puts < 100) {
        for (int k = 0; k < 64; k++)
            if (conc_queue_put(reent_q, (void *)put_main, true, CONC_FOREVER) == 0)
                put_main++;
            else
                put_fail++;
        void *it;
        while (conc_queue_get_nowait(reent_q, &it) == 0) {
            uintptr_t v = (uintptr_t)it;
            if (v >= HANDLER_TAG)
                bad_order += v - HANDLER_TAG != next_handler++;
            else
                bad_order += v != next_main++;
        }
        if (tu_now() > end + 20)
            break;
    }
    its = (struct itimerspec){{0, 0}, {0, 0}};
    timer_settime(tm, 0, &its, NULL);
    void *it;
    while (conc_queue_get_nowait(reent_q, &it) == 0) {
        uintptr_t v = (uintptr_t)it;
        if (v >= HANDLER_TAG)
            bad_order += v - HANDLER_TAG != next_handler++;
        else
            bad_order += v != next_main++;
    }
    TU_TRACE("reentrant put: %lu main puts, %d handler puts", (unsigned long)put_main, (int)reent_handler_puts);
    cr_assert_eq(put_fail, 0);
    cr_assert_eq(reent_handler_fails, 0);
    cr_assert_geq(reent_handler_puts, 100, "only %d signals were handled", (int)reent_handler_puts);
    cr_assert_eq(next_main, put_main, "%lu of %lu main puts came out", (unsigned long)next_main,
                 (unsigned long)put_main);
    cr_assert_eq(next_handler, (uintptr_t)reent_handler_puts, "%lu of %d handler puts came out",
                 (unsigned long)next_handler, (int)reent_handler_puts);
    cr_assert_eq(bad_order, 0, "items out of order");
    timer_delete(tm);
    sigaction(SIGALRM, &old, NULL);
    conc_queue_free(reent_q, NULL);
}

/* SimpleQueue.get interrupted by a put in the same thread (Python's docs:
 * "a put() or get() call can be interrupted by another put() call in the
 * same thread without deadlocking"). A getter blocks in get; another
 * thread signals it again and again; its handler puts on the same queue.
 * Before the fix a handler that landed while the getter held its wait
 * list's guard (sleep_until) spun forever waiting for that guard. */
static conc_queue_t *greent_q;
static atomic_long greent_puts, greent_got;
static atomic_int greent_stop;

static void greent_handler(int sig)
{
    (void)sig;
    int saved = errno;
    if (conc_queue_put_nowait(greent_q, (void *)(uintptr_t)1) == 0)
        atomic_fetch_add(&greent_puts, 1);
    errno = saved;
}

static void *greent_getter(void *arg)
{
    (void)arg;
    void *it;
    while (!atomic_load(&greent_stop))
        if (conc_queue_get(greent_q, &it, true, 0.02) == 0)
            atomic_fetch_add(&greent_got, 1);
    return NULL;
}

Test(queue, simple_get_interrupted_by_a_put_in_a_signal_handler, .timeout = TU_TIMEOUT)
{
    /* The handler's put is not nested in a put, so it takes the ordinary
     * path, which may allocate a segment; TSan reports any malloc inside a
     * signal handler (the interrupted code here is a get, never malloc). */
    if (TU_TSAN)
        cr_skip_test("TSan reports the handler's segment allocation");
    cr_assert_eq(conc_queue_new(&greent_q, CONC_SIMPLE, 0), 0);
    atomic_store(&greent_puts, 0);
    atomic_store(&greent_got, 0);
    atomic_store(&greent_stop, 0);
    struct sigaction sa = {0}, old;
    sa.sa_handler = greent_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR2, &sa, &old), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, greent_getter, NULL), 0);
    double end = tu_now() + (TU_SANITIZED ? 1.0 : 2.0);
    long rounds = 0;
    bool stuck = false;
    while (tu_now() < end && !stuck) {
        long want = atomic_load(&greent_puts) + 1;
        pthread_kill(th, SIGUSR2);
        /* The handler ran and its item came out (signals may merge: send
         * again while waiting). */
        double give_up = tu_now() + 5.0;
        while (atomic_load(&greent_got) < want) {
            if (tu_now() > give_up) {
                stuck = true;
                break;
            }
            if (atomic_load(&greent_puts) < want)
                pthread_kill(th, SIGUSR2);
            for (volatile int k = 0; k < 200; k++) {
            }
        }
        rounds++;
    }
    cr_assert_not(stuck, "the getter hung after %ld rounds (%ld puts, %ld got)", rounds, atomic_load(&greent_puts),
                  atomic_load(&greent_got));
    atomic_store(&greent_stop, 1);
    pthread_join(th, NULL);
    void *it;
    while (conc_queue_get_nowait(greent_q, &it) == 0)
        atomic_fetch_add(&greent_got, 1);
    cr_assert_eq(atomic_load(&greent_got), atomic_load(&greent_puts));
    TU_TRACE("get interrupted by put: %ld rounds", rounds);
    sigaction(SIGUSR2, &old, NULL);
    conc_queue_free(greent_q, NULL);
}

/* ------------------------------------------- a full ring's blocked puts
 * A blocking put that finds the ring full spins for a batch of free cells
 * (queue.c, put_general) but looks at the next cell now and then, so one
 * get lets exactly one blocked put through, whichever way it waits (spin,
 * then sleep), with the put side owned by the producer (it filled the
 * ring) or shared by two producers; and shutdown ends the wait. */

typedef struct {
    conc_queue_t *q;
    long cap;
    int extra;           /* blocked puts per producer after the fill */
    uintptr_t base;      /* producer i puts base * (i + 1) + k */
    bool fill;           /* producer 0 fills the ring first */
    atomic_int filled;   /* producer 0 is done filling */
    atomic_int done;     /* blocked puts that returned 0 */
    atomic_int rc_other; /* first other answer */
} fullput_t;

static void fullput_fn(void *p, int i)
{
    fullput_t *x = p;
    uintptr_t b = x->base * (uintptr_t)(i + 1);
    if (x->fill && i == 0) {
        for (long k = 0; k < x->cap; k++) {
            int rc = conc_queue_put(x->q, P(k + 1), true, CONC_FOREVER);
            if (rc)
                atomic_store(&x->rc_other, rc);
        }
        atomic_store(&x->filled, 1);
    }
    for (int k = 0; k < x->extra; k++) {
        /* blocking forever, and with a timeout (the deadline path spins too) */
        int rc = conc_queue_put(x->q, P(b + (uintptr_t)k), true, k & 1 ? 30.0 : CONC_FOREVER);
        if (rc == 0)
            atomic_fetch_add(&x->done, 1);
        else {
            int zero = 0;
            atomic_compare_exchange_strong(&x->rc_other, &zero, rc);
            return;
        }
    }
}

Test(queue, full_ring_one_get_lets_one_blocked_put_through, .timeout = TU_TIMEOUT)
{
    static const long caps[] = {2, 5, 16, 64, 1000, 1024};
    for (size_t ci = 0; ci < sizeof caps / sizeof caps[0]; ci++) {
        for (int np = 1; np <= 2; np++) {
            long cap = caps[ci];
            static fullput_t x;
            static tu_bunch_t b;
            memset(&x, 0, sizeof x);
            x.q = mkq(CONC_FIFO, cap);
            x.cap = cap;
            x.extra = 3;
            x.base = 1000000;
            x.fill = true;
            tu_bunch_start(&b, 1, fullput_fn, &x);
            cr_assert(TU_WAIT_UNTIL(atomic_load(&x.filled), 10), "cap %ld: fill", cap);
            if (np == 2) { /* a second producer: the put side becomes shared */
                static tu_bunch_t b2;
                static fullput_t y;
                memset(&y, 0, sizeof y);
                y.q = x.q;
                y.extra = 3;
                y.base = 2000000;
                tu_bunch_start(&b2, 1, fullput_fn, &y);
                void *it;
                uintptr_t nf = 1, nx = 1000000, ny = 2000000; /* next of each sequence */
#define FULLPUT_SEE(v)                                                                                   \
    do {                                                                                                 \
        uintptr_t v_ = (v);                                                                              \
        uintptr_t *n_ = v_ < 1000000 ? &nf : v_ < 2000000 ? &nx : &ny;                                   \
        cr_assert_eq(v_, *n_, "cap %ld, 2 producers: got %lu, want %lu", cap, (unsigned long)v_,         \
                     (unsigned long)*n_);                                                                \
        ++*n_;                                                                                           \
    } while (0)
                /* 6 gets, each lets one of the 6 blocked puts through: the
                 * ring stays full, never over-full */
                for (int j = 1; j <= 6; j++) {
                    if (j & 1)
                        tu_sleep(0.002); /* now in its spin, now asleep */
                    cr_assert_eq(conc_queue_get(x.q, &it, true, CONC_FOREVER), 0);
                    FULLPUT_SEE(U(it));
                    cr_assert(TU_WAIT_UNTIL(atomic_load(&x.done) + atomic_load(&y.done) >= j, 10),
                              "cap %ld, 2 producers: get %d let no put through", cap, j);
                    cr_assert_eq(conc_queue_qsize(x.q), (size_t)cap, "cap %ld: qsize %zu", cap,
                                 conc_queue_qsize(x.q));
                }
                tu_bunch_join(&b2);
                cr_assert_eq(atomic_load(&y.rc_other), 0);
                tu_bunch_join(&b);
                cr_assert_eq(atomic_load(&x.rc_other), 0);
                for (long k = 0; k < cap; k++) {
                    cr_assert_eq(conc_queue_get_nowait(x.q, &it), 0);
                    FULLPUT_SEE(U(it));
                }
#undef FULLPUT_SEE
                cr_assert_eq(nf, (uintptr_t)cap + 1);
                cr_assert_eq(nx, 1000003);
                cr_assert_eq(ny, 2000003);
                cr_assert(conc_queue_empty(x.q));
                freeq(x.q);
                continue;
            }
            void *it;
            uintptr_t nf = 1, nx = 1000000;
            for (int j = 1; j <= 3 + (int)cap; j++) {
                if (j == 2)
                    tu_sleep(0.002);
                cr_assert_eq(j <= 3 ? conc_queue_get(x.q, &it, true, CONC_FOREVER) : conc_queue_get_nowait(x.q, &it),
                             0);
                uintptr_t *n = U(it) < 1000000 ? &nf : &nx;
                cr_assert_eq(U(it), *n, "cap %ld: got %lu, want %lu", cap, (unsigned long)U(it), (unsigned long)*n);
                ++*n;
                if (j > 3)
                    continue;
                cr_assert(TU_WAIT_UNTIL(atomic_load(&x.done) >= j, 10), "cap %ld: get %d let no put through",
                          cap, j);
                cr_assert_eq(conc_queue_qsize(x.q), (size_t)cap);
                /* exact _nowait answers around the blocked puts */
                cr_assert_eq(conc_queue_put_nowait(x.q, P(7)), CONC_EFULL);
                if (j == 3) {
                    tu_bunch_join(&b);
                    cr_assert_eq(atomic_load(&x.rc_other), 0);
                }
            }
            cr_assert_eq(nf, (uintptr_t)cap + 1);
            cr_assert_eq(nx, 1000003);
            cr_assert_eq(conc_queue_get_nowait(x.q, &it), CONC_EEMPTY);
            freeq(x.q);
        }
    }
}

Test(queue, full_ring_blocked_put_ends_on_shutdown, .timeout = TU_TIMEOUT)
{
    static const long caps[] = {4, 1024};
    for (size_t ci = 0; ci < 2; ci++) {
        static fullput_t x;
        static tu_bunch_t b;
        memset(&x, 0, sizeof x);
        x.q = mkq(CONC_FIFO, caps[ci]);
        x.cap = caps[ci];
        x.extra = 1;
        x.base = 1000000;
        x.fill = true;
        tu_bunch_start(&b, 1, fullput_fn, &x);
        cr_assert(TU_WAIT_UNTIL(atomic_load(&x.filled), 10));
        if (ci)
            tu_sleep(0.002);
        cr_assert_eq(conc_queue_shutdown(x.q, false, NULL), 0);
        tu_bunch_join(&b);
        cr_assert_eq(atomic_load(&x.rc_other), CONC_ESHUTDOWN);
        cr_assert_eq(atomic_load(&x.done), 0);
        cr_assert_eq(conc_queue_qsize(x.q), (size_t)caps[ci]);
        freeq(x.q);
    }
}
