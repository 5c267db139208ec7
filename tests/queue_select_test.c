/* conc_queue_select: get from whichever of several queues has an item (Go's
 * select over receive channels) — index and item, fairness between ready
 * queues, blocking until a put on any queue, timeouts, shutdown, and no
 * lost or stolen wakeups when plain getters share the queues. */
#include "test_util.h"

#define P(x) ((void *)(uintptr_t)(x))
#define U(p) ((uintptr_t)(p))
#define MAXQ 64

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

/* ------------------------------------------------------------ blockers */

enum { OP_SELECT, OP_GET };

typedef struct {
    conc_queue_t *qs[MAXQ];
    size_t n;
    double timeout;
    int ops[TU_MAX_BUNCH]; /* per thread: OP_SELECT or OP_GET (on qs[0]) */
    atomic_int rc[TU_MAX_BUNCH];
    atomic_uintptr_t got[TU_MAX_BUNCH];
    atomic_size_t idx[TU_MAX_BUNCH];
    double dt[TU_MAX_BUNCH];
    atomic_int finished;
} sel_t;

static void sel_fn(void *p, int i)
{
    sel_t *x = p;
    void *item = P(0xdead);
    size_t idx = 999;
    double t0 = tu_now();
    int rc = x->ops[i] == OP_GET ? conc_queue_get(x->qs[0], &item, true, x->timeout)
                                 : conc_queue_select(x->qs, x->n, &idx, &item, x->timeout);
    x->dt[i] = tu_now() - t0;
    atomic_store(&x->got[i], U(item));
    atomic_store(&x->idx[i], idx);
    atomic_store(&x->rc[i], rc);
    atomic_fetch_add(&x->finished, 1);
}

static void sel_start(tu_bunch_t *b, sel_t *x, int nthreads, double timeout)
{
    x->timeout = timeout;
    atomic_store(&x->finished, 0);
    for (int i = 0; i < TU_MAX_BUNCH; i++) {
        atomic_store(&x->rc[i], 99);
        atomic_store(&x->got[i], 0xdead);
        atomic_store(&x->idx[i], 999);
    }
    tu_bunch_start(b, nthreads, sel_fn, x);
    cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(b), 10),
              "waiters did not go to sleep (busy-waiting or stuck running)");
    cr_assert_eq(atomic_load(&x->finished), 0, "a select/get returned without blocking (rc %d)",
                 atomic_load(&x->rc[0]));
}

/* ------------------------------------------------------------- basics */

Test(queue_select, bad_arguments, .timeout = TU_TIMEOUT)
{
    conc_queue_t *q = mkq(CONC_FIFO, 0);
    conc_queue_t *qs[2] = {q, NULL};
    size_t idx = 7;
    void *it = P(5);
    cr_assert_eq(conc_queue_put(q, P(1), false, 0), 0);
    cr_assert_eq(conc_queue_select(NULL, 1, &idx, &it, 0), CONC_EINVAL);
    cr_assert_eq(conc_queue_select(qs, 0, &idx, &it, 0), CONC_EINVAL);
    cr_assert_eq(conc_queue_select(qs, 2, &idx, &it, 0), CONC_EINVAL, "NULL queue in the list");
    cr_assert_eq(conc_queue_select(qs, 1, NULL, &it, 0), CONC_EINVAL);
    cr_assert_eq(conc_queue_select(qs, 1, &idx, NULL, 0), CONC_EINVAL);
    cr_assert_eq(conc_queue_select(qs, 1, &idx, &it, NAN), CONC_EINVAL);
    cr_assert_eq(conc_queue_qsize(q), 1, "a refused select consumed the item");
    cr_assert_eq(idx, 7);
    cr_assert_eq(conc_queue_select(qs, 1, &idx, &it, 1e300), 0);
    cr_assert_eq(idx, 0);
    cr_assert_eq(U(it), 1);
    freeq(q);
}

Test(queue_select, takes_from_the_ready_queue, .timeout = TU_TIMEOUT)
{
    conc_queue_kind_t kinds[] = {CONC_FIFO, CONC_LIFO, CONC_PRIORITY, CONC_SIMPLE};
    conc_queue_t *qs[4];
    for (int k = 0; k < 4; k++)
        qs[k] = mkq(kinds[k], k == 0 ? 8 : 0);
    for (size_t j = 0; j < 4; j++) {
        for (size_t n = j + 1; n <= 4; n++) {
            size_t idx = 999;
            void *it = P(0xdead);
            cr_assert_eq(conc_queue_put(qs[j], P(100 + j), false, 0), 0);
            double ts[] = {0, 10, CONC_FOREVER};
            cr_assert_eq(conc_queue_select(qs, n, &idx, &it, ts[(j + n) % 3]), 0);
            cr_assert_eq(idx, j, "item in queue %zu of %zu, select said %zu", j, n, idx);
            cr_assert_eq(U(it), 100 + j);
            for (int k = 0; k < 4; k++)
                cr_assert_eq(conc_queue_qsize(qs[k]), 0);
        }
    }
    /* each queue keeps its discipline under select */
    for (int v = 1; v <= 3; v++) {
        cr_assert_eq(conc_queue_put(qs[1], P(v), false, 0), 0);
        cr_assert_eq(conc_queue_put(qs[2], P(4 - v), false, 0), 0);
    }
    conc_queue_t *lp[2] = {qs[1], qs[2]};
    uintptr_t lifo_next = 3, prio_next = 1;
    for (int r = 0; r < 6; r++) {
        size_t idx;
        void *it;
        cr_assert_eq(conc_queue_select(lp, 2, &idx, &it, 0), 0);
        if (idx == 0)
            cr_assert_eq(U(it), lifo_next--);
        else
            cr_assert_eq(U(it), prio_next++);
    }
    cr_assert_eq(lifo_next, 0);
    cr_assert_eq(prio_next, 4);
    /* NULL item through select */
    cr_assert_eq(conc_queue_put(qs[3], NULL, false, 0), 0);
    size_t idx;
    void *it = P(1);
    cr_assert_eq(conc_queue_select(qs, 4, &idx, &it, 0), 0);
    cr_assert_eq(idx, 3);
    cr_assert_null(it);
    for (int k = 0; k < 4; k++)
        freeq(qs[k]);
}

Test(queue_select, many_queues, .timeout = TU_TIMEOUT)
{
    conc_queue_t *qs[MAXQ];
    for (int i = 0; i < MAXQ; i++)
        qs[i] = mkq(i % 2 ? CONC_FIFO : CONC_LIFO, i % 3 ? 0 : 4);
    for (int j = MAXQ - 1; j >= 0; j -= 7) {
        size_t idx;
        void *it;
        cr_assert_eq(conc_queue_put(qs[j], P(j + 1), false, 0), 0);
        cr_assert_eq(conc_queue_select(qs, MAXQ, &idx, &it, 0), 0);
        cr_assert_eq(idx, (size_t)j);
        cr_assert_eq(U(it), (uintptr_t)j + 1);
    }
    /* blocking over 64 queues (more than fit in any small fixed array) */
    static tu_bunch_t b;
    static sel_t x;
    memcpy(x.qs, qs, sizeof qs);
    x.n = MAXQ;
    x.ops[0] = OP_SELECT;
    sel_start(&b, &x, 1, CONC_FOREVER);
    cr_assert_eq(conc_queue_put(qs[MAXQ - 1], P(4242), false, 0), 0);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.rc[0]), 0);
    cr_assert_eq(atomic_load(&x.idx[0]), MAXQ - 1);
    cr_assert_eq(atomic_load(&x.got[0]), 4242);
    for (int i = 0; i < MAXQ; i++)
        freeq(qs[i]);
}

Test(queue_select, timeout, .timeout = TU_TIMEOUT)
{
    conc_queue_t *qs[3] = {mkq(CONC_FIFO, 0), mkq(CONC_PRIORITY, 2), mkq(CONC_SIMPLE, 0)};
    size_t idx = 999;
    void *it = P(0xdead);
    double t0 = tu_now();
    cr_assert_eq(conc_queue_select(qs, 3, &idx, &it, 0), CONC_EEMPTY);
    cr_assert_lt(tu_now() - t0, 1.0, "timeout 0 waited");
    t0 = tu_now();
    cr_assert_eq(conc_queue_select(qs, 3, &idx, &it, 0.15), CONC_EEMPTY);
    tu_assert_timeout(tu_now() - t0, 0.15);
    cr_assert_eq(idx, 999, "index written on timeout");
    /* a timed select fed before its timeout */
    static tu_bunch_t b;
    static sel_t x;
    memcpy(x.qs, qs, sizeof qs);
    x.n = 3;
    x.ops[0] = OP_SELECT;
    sel_start(&b, &x, 1, 20);
    cr_assert_eq(conc_queue_put(qs[1], P(9), false, 0), 0);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.rc[0]), 0);
    cr_assert_eq(atomic_load(&x.idx[0]), 1);
    cr_assert_lt(x.dt[0], 10);
    /* timed-out selects leave nothing behind: free works, puts are not lost */
    sel_start(&b, &x, 3, 0.1);
    tu_bunch_join(&b);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(atomic_load(&x.rc[i]), CONC_EEMPTY);
    cr_assert_eq(conc_queue_put(qs[0], P(1), false, 0), 0);
    cr_assert_eq(conc_queue_get(qs[0], &it, false, 0), 0);
    for (int i = 0; i < 3; i++)
        freeq(qs[i]);
}

/* Blocks until a put on any of the queues, from another thread. */
Test(queue_select, blocks_until_put_on_any, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static sel_t x;
    conc_queue_kind_t kinds[] = {CONC_FIFO, CONC_LIFO, CONC_PRIORITY, CONC_SIMPLE};
    for (int k = 0; k < 4; k++)
        x.qs[k] = mkq(kinds[k], k == 0 ? 2 : 0);
    x.n = 4;
    x.ops[0] = OP_SELECT;
    for (int round = 0; round < 3; round++) {
        for (size_t j = 0; j < 4; j++) {
            sel_start(&b, &x, 1, round == 1 ? 30.0 : round == 2 ? INFINITY : CONC_FOREVER);
            cr_assert_eq(conc_queue_put(x.qs[j], P(10 + j), true, CONC_FOREVER), 0);
            tu_bunch_join(&b);
            cr_assert_eq(atomic_load(&x.rc[0]), 0);
            cr_assert_eq(atomic_load(&x.idx[0]), j);
            cr_assert_eq(atomic_load(&x.got[0]), 10 + j);
            for (int k = 0; k < 4; k++)
                cr_assert_eq(conc_queue_qsize(x.qs[k]), 0);
        }
    }
    for (int k = 0; k < 4; k++)
        freeq(x.qs[k]);
}

/* With several ready queues, select serves them in turn. */
Test(queue_select, fair_between_ready_queues, .timeout = TU_TIMEOUT)
{
    for (size_t n = 2; n <= 4; n++) {
        conc_queue_t *qs[4];
        for (size_t i = 0; i < n; i++) {
            qs[i] = mkq(i == 1 ? CONC_SIMPLE : CONC_FIFO, 0);
            for (int k = 0; k < 1100; k++)
                cr_assert_eq(conc_queue_put(qs[i], P(k), false, 0), 0);
        }
        long count[4] = {0};
        uintptr_t next[4] = {0};
        for (int s = 0; s < 1000; s++) {
            size_t idx;
            void *it;
            cr_assert_eq(conc_queue_select(qs, n, &idx, &it, s % 2 ? 0 : CONC_FOREVER), 0);
            cr_assert_lt(idx, n);
            cr_assert_eq(U(it), next[idx], "queue %zu out of order", idx);
            next[idx]++;
            count[idx]++;
        }
        for (size_t i = 0; i < n; i++) {
            long share = 1000 / (long)n;
            cr_assert_geq(count[i], share / 2, "n=%zu: queue %zu served %ld times of 1000", n, i, count[i]);
            freeq(qs[i]);
        }
    }
    /* one queue always ready, the other refilled after each turn: the
     * refilled one is not starved either */
    conc_queue_t *qs[2] = {mkq(CONC_FIFO, 0), mkq(CONC_FIFO, 0)};
    for (int k = 0; k < 1000; k++)
        cr_assert_eq(conc_queue_put(qs[0], P(k), false, 0), 0);
    cr_assert_eq(conc_queue_put(qs[1], P(0), false, 0), 0);
    long c1 = 0;
    for (int s = 0; s < 1000; s++) {
        size_t idx;
        void *it;
        cr_assert_eq(conc_queue_select(qs, 2, &idx, &it, 0), 0);
        if (idx == 1) {
            c1++;
            cr_assert_eq(conc_queue_put(qs[1], P(0), false, 0), 0);
        }
    }
    cr_assert_geq(c1, 250, "refilled queue served %ld of 1000", c1);
    freeq(qs[0]);
    freeq(qs[1]);
}

typedef struct {
    conc_queue_t *q;
    atomic_int rc, done;
} putter_ctx_t;

static void put_fn(void *p, int i)
{
    (void)i;
    putter_ctx_t *c = p;
    atomic_store(&c->rc, conc_queue_put(c->q, P(77), true, 30));
    atomic_store(&c->done, 1);
}

/* Select counts as a get: task_done/join see it, and a putter blocked on
 * a full queue is woken when select makes room. */
Test(queue_select, counts_as_get, .timeout = TU_TIMEOUT)
{
    conc_queue_t *qs[2] = {mkq(CONC_FIFO, 2), mkq(CONC_PRIORITY, 1)};
    size_t idx;
    void *it;
    cr_assert_eq(conc_queue_put(qs[1], P(3), false, 0), 0);
    cr_assert_eq(conc_queue_unfinished_tasks(qs[1]), 1);
    cr_assert_eq(conc_queue_select(qs, 2, &idx, &it, 0), 0);
    cr_assert_eq(idx, 1);
    cr_assert_eq(conc_queue_join(qs[1], 0), CONC_ETIMEDOUT);
    cr_assert_eq(conc_queue_task_done(qs[1]), 0);
    cr_assert_eq(conc_queue_join(qs[1], 0), 0);
    cr_assert_eq(conc_queue_task_done(qs[1]), CONC_EINVAL);

    /* a blocked putter released by select */
    cr_assert_eq(conc_queue_put(qs[0], P(1), false, 0), 0);
    cr_assert_eq(conc_queue_put(qs[0], P(2), false, 0), 0);
    static putter_ctx_t pt;
    static tu_bunch_t b;
    pt.q = qs[0];
    atomic_store(&pt.rc, 99);
    atomic_store(&pt.done, 0);
    tu_bunch_start(&b, 1, put_fn, &pt);
    cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10));
    cr_assert_eq(atomic_load(&pt.done), 0);
    cr_assert_eq(conc_queue_select(qs, 2, &idx, &it, CONC_FOREVER), 0);
    cr_assert_eq(idx, 0);
    cr_assert_eq(U(it), 1);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&pt.rc), 0, "putter not released by select's get");
    cr_assert_eq(conc_queue_qsize(qs[0]), 2);
    freeq(qs[0]);
    freeq(qs[1]);
}

/* ----------------------------------------------------------- shutdown */

Test(queue_select, shutdown, .timeout = TU_TIMEOUT)
{
    conc_queue_t *qs[3] = {mkq(CONC_FIFO, 4), mkq(CONC_LIFO, 0), mkq(CONC_PRIORITY, 0)};
    size_t idx;
    void *it;
    /* some shut down and empty, one live: not over — it times out */
    cr_assert_eq(conc_queue_shutdown(qs[0], false, NULL), 0);
    cr_assert_eq(conc_queue_shutdown(qs[2], true, NULL), 0);
    cr_assert_eq(conc_queue_select(qs, 3, &idx, &it, 0), CONC_EEMPTY);
    double t0 = tu_now();
    cr_assert_eq(conc_queue_select(qs, 3, &idx, &it, 0.1), CONC_EEMPTY);
    tu_assert_timeout(tu_now() - t0, 0.1);
    /* the live one still delivers */
    cr_assert_eq(conc_queue_put(qs[1], P(5), false, 0), 0);
    cr_assert_eq(conc_queue_select(qs, 3, &idx, &it, 0), 0);
    cr_assert_eq(idx, 1);
    cr_assert_eq(U(it), 5);
    /* shut down with items: they are drained first, then ESHUTDOWN */
    cr_assert_eq(conc_queue_put(qs[1], P(6), false, 0), 0);
    cr_assert_eq(conc_queue_put(qs[1], P(7), false, 0), 0);
    cr_assert_eq(conc_queue_shutdown(qs[1], false, NULL), 0);
    cr_assert_eq(conc_queue_select(qs, 3, &idx, &it, CONC_FOREVER), 0);
    cr_assert_eq(idx, 1);
    cr_assert_eq(U(it), 7);
    cr_assert_eq(conc_queue_select(qs, 3, &idx, &it, 0), 0);
    cr_assert_eq(U(it), 6);
    /* all shut down and empty */
    t0 = tu_now();
    cr_assert_eq(conc_queue_select(qs, 3, &idx, &it, CONC_FOREVER), CONC_ESHUTDOWN);
    cr_assert_eq(conc_queue_select(qs, 3, &idx, &it, 0), CONC_ESHUTDOWN, "ShutDown, not Empty");
    cr_assert_eq(conc_queue_select(qs, 1, &idx, &it, 5), CONC_ESHUTDOWN);
    cr_assert_lt(tu_now() - t0, 4.0);
    for (int i = 0; i < 3; i++)
        freeq(qs[i]);
}

/* A select sleeping while one of its queues is already shut down and empty
 * really sleeps (no busy loop), and wakes for a put on a live queue. */
Test(queue_select, sleeps_beside_a_shut_down_queue, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static sel_t x;
    x.qs[0] = mkq(CONC_FIFO, 0);
    x.qs[1] = mkq(CONC_FIFO, 0);
    x.n = 2;
    x.ops[0] = OP_SELECT;
    cr_assert_eq(conc_queue_shutdown(x.qs[0], false, NULL), 0);
    sel_start(&b, &x, 1, 30);
    cr_assert_eq(conc_queue_put(x.qs[1], P(3), false, 0), 0);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.rc[0]), 0);
    cr_assert_eq(atomic_load(&x.idx[0]), 1);
    freeq(x.qs[0]);
    freeq(x.qs[1]);
}

/* Blocked selects: shutting down some of the queues does not end them;
 * shutting down the last one does (ESHUTDOWN), in both modes. */
Test(queue_select, blocked_select_and_shutdown, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static sel_t x;
    for (int imm = 0; imm < 2; imm++) {
        x.qs[0] = mkq(CONC_FIFO, 2);
        x.qs[1] = mkq(CONC_LIFO, 0);
        x.n = 2;
        x.ops[0] = x.ops[1] = x.ops[2] = OP_SELECT;
        sel_start(&b, &x, 3, CONC_FOREVER);
        cr_assert_eq(conc_queue_shutdown(x.qs[0], imm, NULL), 0);
        tu_sleep(0.02);
        cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10));
        cr_assert_eq(atomic_load(&x.finished), 0, "select ended with a live queue left");
        cr_assert_eq(conc_queue_shutdown(x.qs[1], imm, NULL), 0);
        tu_bunch_join(&b);
        for (int i = 0; i < 3; i++)
            cr_assert_eq(atomic_load(&x.rc[i]), CONC_ESHUTDOWN, "imm %d: select %d rc %d", imm, i,
                         atomic_load(&x.rc[i]));
        for (int i = 0; i < 2; i++)
            freeq(x.qs[i]);
    }
}

/* --------------------------------------------------- lost wakeups */

/* One plain getter and one select sleep on the same queue; two puts: both
 * must get an item (a wakeup taken by the select and not used must reach
 * the getter). Many rounds, both orders of arrival. */
Test(queue_select, getter_and_select_share_a_queue, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static sel_t x;
    long rounds = tu_iters(200);
    conc_queue_kind_t kinds[] = {CONC_FIFO, CONC_SIMPLE, CONC_PRIORITY};
    for (int k = 0; k < 3; k++) {
        x.qs[0] = mkq(kinds[k], k == 0 ? 4 : 0);
        x.qs[1] = mkq(CONC_FIFO, 0);
        for (long r = 0; r < rounds; r++) {
            x.n = r % 2 ? 2 : 1; /* select on the shared queue alone, or with another */
            x.ops[0] = r % 4 < 2 ? OP_GET : OP_SELECT;
            x.ops[1] = r % 4 < 2 ? OP_SELECT : OP_GET;
            sel_start(&b, &x, 2, r % 3 == 0 ? 30.0 : CONC_FOREVER);
            if (r % 5 == 0) {
                cr_assert_eq(conc_queue_put(x.qs[0], P(1), false, 0), 0);
                cr_assert_eq(conc_queue_put(x.qs[0], P(2), false, 0), 0);
            } else {
                cr_assert_eq(conc_queue_put(x.qs[0], P(1), false, 0), 0);
                if (r % 5 == 1)
                    tu_sleep(0.0005);
                cr_assert_eq(conc_queue_put(x.qs[0], P(2), true, CONC_FOREVER), 0);
            }
            bool all = TU_WAIT_UNTIL(atomic_load(&x.finished) == 2, 10);
            if (!all) /* rescue the stuck one, then fail */
                conc_queue_put(x.qs[0], P(3), false, 0);
            tu_bunch_join(&b);
            cr_assert(all, "kind %d round %ld: a waiter missed its wakeup (rc %d/%d)", kinds[k], r,
                      atomic_load(&x.rc[0]), atomic_load(&x.rc[1]));
            uintptr_t sum = 0;
            for (int i = 0; i < 2; i++) {
                cr_assert_eq(atomic_load(&x.rc[i]), 0);
                sum += atomic_load(&x.got[i]);
                if (x.ops[i] == OP_SELECT)
                    cr_assert_eq(atomic_load(&x.idx[i]), 0);
            }
            cr_assert_eq(sum, 3, "items delivered twice or lost");
            cr_assert_eq(conc_queue_qsize(x.qs[0]), 0);
        }
        freeq(x.qs[0]);
        freeq(x.qs[1]);
    }
}

/* Several selects and getters on overlapping queues, items put one at a
 * time: each put wakes somebody; in the end every waiter has exactly one
 * item and no item is left or duplicated. */
Test(queue_select, mixed_waiters_each_get_one, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static sel_t x;
    const int N = 6;
    long rounds = tu_iters(60);
    x.qs[0] = mkq(CONC_FIFO, 0);
    x.qs[1] = mkq(CONC_FIFO, 3);
    x.qs[2] = mkq(CONC_LIFO, 0);
    x.n = 3;
    for (long r = 0; r < rounds; r++) {
        for (int i = 0; i < N; i++)
            x.ops[i] = r % 4 != 3 && (i + r) % 3 == 0 ? OP_GET : OP_SELECT;
        int ngetters = 0;
        for (int i = 0; i < N; i++)
            ngetters += x.ops[i] == OP_GET;
        sel_start(&b, &x, N, CONC_FOREVER);
        /* plain getters only read qs[0] and a select may beat them to it,
         * so with getters about every item goes to qs[0]; with selects
         * alone the items are spread over the three queues */
        for (int j = 0; j < N; j++) {
            size_t qi = ngetters ? 0 : (size_t)((j + r) % 3);
            cr_assert_eq(conc_queue_put(x.qs[qi], P(1u << j), true, 10), 0);
        }
        bool all = TU_WAIT_UNTIL(atomic_load(&x.finished) == N, 10);
        if (!all)
            for (int j = 0; j < N; j++)
                conc_queue_put(x.qs[0], P(1u << 20), false, 0);
        tu_bunch_join(&b);
        cr_assert(all, "round %ld: %d of %d waiters never woke", r, N - atomic_load(&x.finished), N);
        uintptr_t mask = 0;
        for (int i = 0; i < N; i++) {
            cr_assert_eq(atomic_load(&x.rc[i]), 0);
            uintptr_t g = atomic_load(&x.got[i]);
            cr_assert_eq(mask & g, 0, "item %#lx delivered twice", (unsigned long)g);
            mask |= g;
        }
        cr_assert_eq(mask, (1u << N) - 1);
        for (int q = 0; q < 3; q++)
            cr_assert_eq(conc_queue_qsize(x.qs[q]), 0);
    }
    for (int q = 0; q < 3; q++)
        freeq(x.qs[q]);
}

/* A select woken by puts on two queues at once takes one item; the other
 * stays in its queue (not swallowed). */
typedef struct {
    conc_queue_t *q;
    atomic_int go;
    uintptr_t v;
} racer_t;

static racer_t racers[2];

static void racer_fn(void *p, int i)
{
    (void)p;
    while (!atomic_load(&racers[i].go)) {
    }
    conc_queue_put(racers[i].q, P(racers[i].v), false, 0);
}

Test(queue_select, simultaneous_puts_one_taken, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b, bp;
    static sel_t x;
    long rounds = tu_iters(200);
    x.qs[0] = mkq(CONC_FIFO, 0);
    x.qs[1] = mkq(CONC_SIMPLE, 0);
    x.n = 2;
    x.ops[0] = OP_SELECT;
    for (long r = 0; r < rounds; r++) {
        sel_start(&b, &x, 1, CONC_FOREVER);
        for (int i = 0; i < 2; i++) {
            racers[i].q = x.qs[i];
            racers[i].v = 10 + (uintptr_t)i;
            atomic_store(&racers[i].go, 0);
        }
        tu_bunch_start(&bp, 2, racer_fn, NULL);
        cr_assert(tu_bunch_wait_started(&bp, 10));
        atomic_store(&racers[0].go, 1);
        atomic_store(&racers[1].go, 1);
        tu_bunch_join(&bp);
        tu_bunch_join(&b);
        cr_assert_eq(atomic_load(&x.rc[0]), 0);
        size_t idx = atomic_load(&x.idx[0]);
        cr_assert_lt(idx, 2);
        cr_assert_eq(atomic_load(&x.got[0]), 10 + idx);
        cr_assert_eq(conc_queue_qsize(x.qs[idx]), 0);
        cr_assert_eq(conc_queue_qsize(x.qs[1 - idx]), 1, "round %ld: the other item vanished", r);
        void *it;
        cr_assert_eq(conc_queue_get_nowait(x.qs[1 - idx], &it), 0);
        cr_assert_eq(U(it), 10 + (1 - idx));
    }
    freeq(x.qs[0]);
    freeq(x.qs[1]);
}

/* ------------------------------------------------------------- free */

Test(queue_select, free_with_blocked_select_is_eperm, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static sel_t x;
    x.qs[0] = mkq(CONC_FIFO, 0);
    x.qs[1] = mkq(CONC_PRIORITY, 0);
    x.n = 2;
    x.ops[0] = OP_SELECT;
    sel_start(&b, &x, 1, CONC_FOREVER);
    cr_assert_eq(conc_queue_free(x.qs[0], NULL), CONC_EPERM);
    cr_assert_eq(conc_queue_free(x.qs[1], NULL), CONC_EPERM);
    cr_assert_eq(conc_queue_put(x.qs[1], P(8), false, 0), 0);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.rc[0]), 0);
    cr_assert_eq(atomic_load(&x.idx[0]), 1);
    cr_assert_eq(atomic_load(&x.got[0]), 8);
    freeq(x.qs[0]);
    freeq(x.qs[1]);
}

/* ------------------------------------------------------------ stress */

/* Producers on several queues, consumers all selecting over them: every
 * item comes out exactly once, in per-producer order per queue (FIFO). */
#define SP 3
#define SC 3
typedef struct {
    conc_queue_t *qs[SP];
    long per;
    atomic_uchar *seen;
    atomic_long got, dup, bad, order;
    atomic_int errors;
} sstress_t;

static void sstress_fn(void *p, int i)
{
    sstress_t *s = p;
    if (i < SP) {
        for (long k = 0; k < s->per; k++) {
            uintptr_t v = (uintptr_t)i * (uintptr_t)s->per + (uintptr_t)k + 1;
            int rc;
            do
                rc = conc_queue_put(s->qs[i], P(v), true, k % 3 ? CONC_FOREVER : 0.001);
            while (rc == CONC_EFULL);
            if (rc != 0)
                atomic_fetch_add(&s->errors, 1);
        }
        return;
    }
    long last[SP];
    for (int j = 0; j < SP; j++)
        last[j] = -1;
    for (;;) {
        size_t idx;
        void *it;
        int rc = conc_queue_select(s->qs, SP, &idx, &it, i % 2 ? CONC_FOREVER : 0.002);
        if (rc == CONC_ESHUTDOWN)
            return;
        if (rc == CONC_EEMPTY)
            continue;
        if (rc != 0 || idx >= SP) {
            atomic_fetch_add(&s->errors, 1);
            return;
        }
        uintptr_t v = U(it);
        if (v == 0 || v > (uintptr_t)SP * (uintptr_t)s->per || (v - 1) / (uintptr_t)s->per != idx) {
            atomic_fetch_add(&s->bad, 1);
            continue;
        }
        long k = (long)((v - 1) % (uintptr_t)s->per);
        if (k <= last[idx])
            atomic_fetch_add(&s->order, 1);
        last[idx] = k;
        if (atomic_exchange(&s->seen[v], 1))
            atomic_fetch_add(&s->dup, 1);
        atomic_fetch_add(&s->got, 1);
        conc_queue_task_done(s->qs[idx]);
    }
}

Test(queue_select, stress_exactly_once, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static sstress_t s;
    long caps[] = {0, 4, 64};
    for (int c = 0; c < 3; c++) {
        memset(&s, 0, sizeof s);
        s.per = tu_iters(30000);
        s.seen = calloc((size_t)(SP * s.per + 1), 1);
        cr_assert_not_null(s.seen);
        for (int j = 0; j < SP; j++)
            s.qs[j] = mkq(CONC_FIFO, caps[c]);
        tu_bunch_start(&b, SP + SC, sstress_fn, &s);
        cr_assert(TU_WAIT_UNTIL(atomic_load(&s.got) == SP * s.per || atomic_load(&s.errors), 50),
                  "cap %ld: only %ld of %ld items came out", caps[c], atomic_load(&s.got), SP * s.per);
        for (int j = 0; j < SP; j++)
            cr_assert_eq(conc_queue_join(s.qs[j], 10), 0);
        /* consumers end with ESHUTDOWN once every queue is shut down and empty */
        for (int j = 0; j < SP; j++)
            cr_assert_eq(conc_queue_shutdown(s.qs[j], false, NULL), 0);
        tu_bunch_join(&b);
        cr_assert_eq(atomic_load(&s.errors), 0);
        cr_assert_eq(atomic_load(&s.bad), 0, "an item came with the wrong index");
        cr_assert_eq(atomic_load(&s.dup), 0, "an item came out twice");
        cr_assert_eq(atomic_load(&s.order), 0, "a consumer saw a queue's items out of order");
        cr_assert_eq(atomic_load(&s.got), SP * s.per);
        for (long v = 1; v <= SP * s.per; v++)
            cr_assert(atomic_load(&s.seen[v]), "item %ld never came out", v);
        for (int j = 0; j < SP; j++)
            freeq(s.qs[j]);
        free(s.seen);
    }
}
