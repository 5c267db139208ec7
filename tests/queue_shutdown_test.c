/* Queue.shutdown (Python 3.13): the behaviours of test_queue.py's shutdown
 * tests, for Queue, LifoQueue and PriorityQueue — put after shutdown, get
 * draining then failing, immediate shutdown discarding items and reducing
 * unfinished tasks, and the outcome of every kind of blocked caller. */
#include "test_util.h"

#define P(x) ((void *)(uintptr_t)(x))
#define U(p) ((uintptr_t)(p))

static const conc_queue_kind_t KINDS[3] = {CONC_FIFO, CONC_LIFO, CONC_PRIORITY};

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

/* discard callback: counts and remembers every item it is given */
static atomic_long disc_count, disc_sum;
static atomic_int disc_dup;
static unsigned char disc_seen[1 << 16];

static void discard(void *item)
{
    uintptr_t v = U(item);
    atomic_fetch_add(&disc_count, 1);
    atomic_fetch_add(&disc_sum, (long)v);
    if (v < sizeof disc_seen) {
        if (disc_seen[v])
            atomic_fetch_add(&disc_dup, 1);
        disc_seen[v] = 1;
    }
}

static void disc_reset(void)
{
    atomic_store(&disc_count, 0);
    atomic_store(&disc_sum, 0);
    atomic_store(&disc_dup, 0);
    memset(disc_seen, 0, sizeof disc_seen);
}

/* ------------------------------------------------------------ blockers */

enum { OP_GET, OP_PUT, OP_JOIN };

typedef struct {
    int op;
    conc_queue_t *q;
    double timeout;
    uintptr_t put_base;
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
        rc = conc_queue_get(x->q, &item, true, x->timeout);
        atomic_store(&x->got[i], U(item));
        break;
    case OP_PUT:
        rc = conc_queue_put(x->q, P(x->put_base + (uintptr_t)i), true, x->timeout);
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

/* ------------------------------------------------- single-thread cases */

Test(queue_shutdown, empty, .timeout = TU_TIMEOUT)
{
    for (int k = 0; k < 3; k++) {
        for (int imm = 0; imm < 2; imm++) {
            conc_queue_t *q = mkq(KINDS[k], k == 1 ? 0 : 4);
            void *it = P(0xdead);
            cr_assert_not(conc_queue_is_shutdown(q));
            cr_assert_eq(conc_queue_shutdown(q, imm, NULL), 0);
            cr_assert(conc_queue_is_shutdown(q));
            cr_assert_eq(conc_queue_put(q, P(1), true, CONC_FOREVER), CONC_ESHUTDOWN);
            cr_assert_eq(conc_queue_put(q, P(1), true, 5), CONC_ESHUTDOWN);
            cr_assert_eq(conc_queue_put(q, P(1), false, 0), CONC_ESHUTDOWN);
            cr_assert_eq(conc_queue_put_nowait(q, P(1)), CONC_ESHUTDOWN);
            double t0 = tu_now();
            /* a blocking get on a shut-down empty queue fails at once */
            cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), CONC_ESHUTDOWN, "%s imm %d",
                         kname(KINDS[k]), imm);
            cr_assert_eq(conc_queue_get(q, &it, true, 30), CONC_ESHUTDOWN);
            cr_assert_lt(tu_now() - t0, 10, "get waited on a shut-down queue");
            cr_assert_eq(conc_queue_get(q, &it, false, 0), CONC_ESHUTDOWN, "ShutDown, not Empty");
            cr_assert_eq(conc_queue_get_nowait(q, &it), CONC_ESHUTDOWN);
            cr_assert_eq(conc_queue_qsize(q), 0);
            cr_assert_eq(conc_queue_unfinished_tasks(q), 0, "a refused put counted as a task");
            cr_assert_eq(conc_queue_join(q, 0), 0);
            cr_assert_eq(conc_queue_task_done(q), CONC_EINVAL);
            freeq(q);
        }
    }
}

Test(queue_shutdown, nonempty_drains_then_fails, .timeout = TU_TIMEOUT)
{
    for (int k = 0; k < 3; k++) {
        conc_queue_t *q = mkq(KINDS[k], 8);
        void *it;
        for (uintptr_t i = 1; i <= 5; i++)
            cr_assert_eq(conc_queue_put(q, P(i * 10), false, 0), 0);
        disc_reset();
        cr_assert_eq(conc_queue_shutdown(q, false, discard), 0);
        cr_assert_eq(atomic_load(&disc_count), 0, "a plain shutdown discarded items");
        cr_assert_eq(conc_queue_qsize(q), 5);
        cr_assert_eq(conc_queue_put(q, P(60), false, 0), CONC_ESHUTDOWN);
        cr_assert_eq(conc_queue_qsize(q), 5);
        /* the order of the discipline still holds */
        for (uintptr_t i = 1; i <= 5; i++) {
            uintptr_t want = KINDS[k] == CONC_LIFO ? (6 - i) * 10 : i * 10;
            int rc = (i & 1) ? conc_queue_get(q, &it, true, CONC_FOREVER) : conc_queue_get_nowait(q, &it);
            cr_assert_eq(rc, 0, "%s: get %lu after shutdown = %d", kname(KINDS[k]), (unsigned long)i, rc);
            cr_assert_eq(U(it), want);
        }
        cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), CONC_ESHUTDOWN);
        cr_assert_eq(conc_queue_get(q, &it, true, 1), CONC_ESHUTDOWN);
        cr_assert_eq(conc_queue_get_nowait(q, &it), CONC_ESHUTDOWN);
        /* task accounting goes on after shutdown */
        cr_assert_eq(conc_queue_unfinished_tasks(q), 5);
        for (int i = 0; i < 5; i++)
            cr_assert_eq(conc_queue_task_done(q), 0);
        cr_assert_eq(conc_queue_task_done(q), CONC_EINVAL);
        cr_assert_eq(conc_queue_join(q, 0), 0);
        freeq(q);
    }
}

Test(queue_shutdown, immediate_discards_and_reduces_tasks, .timeout = TU_TIMEOUT)
{
    for (int k = 0; k < 3; k++) {
        for (long cap = 0; cap <= 16; cap += 16) {
            conc_queue_t *q = mkq(KINDS[k], cap);
            void *it;
            long sum = 0;
            for (uintptr_t i = 1; i <= 12; i++)
                cr_assert_eq(conc_queue_put(q, P(i), false, 0), 0);
            /* two taken and not done, one taken and done */
            uintptr_t taken = 0;
            for (int i = 0; i < 3; i++) {
                cr_assert_eq(conc_queue_get(q, &it, false, 0), 0);
                taken += U(it);
            }
            cr_assert_eq(conc_queue_task_done(q), 0);
            sum = 78 - (long)taken;
            cr_assert_eq(conc_queue_unfinished_tasks(q), 11);
            disc_reset();
            cr_assert_eq(conc_queue_shutdown(q, true, discard), 0);
            cr_assert(conc_queue_is_shutdown(q));
            cr_assert_eq(atomic_load(&disc_count), 9, "%s cap %ld: %ld items discarded, 9 expected",
                         kname(KINDS[k]), cap, atomic_load(&disc_count));
            cr_assert_eq(atomic_load(&disc_sum), sum);
            cr_assert_eq(atomic_load(&disc_dup), 0, "an item was discarded twice");
            cr_assert_eq(conc_queue_qsize(q), 0);
            cr_assert(conc_queue_empty(q));
            cr_assert_eq(conc_queue_unfinished_tasks(q), 2, "unfinished tasks %zu, expected 2",
                         conc_queue_unfinished_tasks(q));
            cr_assert_eq(conc_queue_get_nowait(q, &it), CONC_ESHUTDOWN);
            cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), CONC_ESHUTDOWN);
            cr_assert_eq(conc_queue_put(q, P(1), true, CONC_FOREVER), CONC_ESHUTDOWN);
            double t0 = tu_now();
            cr_assert_eq(conc_queue_join(q, 0.05), CONC_ETIMEDOUT, "join ignored the tasks taken and not done");
            tu_assert_timeout(tu_now() - t0, 0.05);
            cr_assert_eq(conc_queue_task_done(q), 0);
            cr_assert_eq(conc_queue_task_done(q), 0);
            cr_assert_eq(conc_queue_join(q, 0), 0);
            cr_assert_eq(conc_queue_task_done(q), CONC_EINVAL);
            /* a second immediate shutdown has nothing to discard */
            cr_assert_eq(conc_queue_shutdown(q, true, discard), 0);
            cr_assert_eq(atomic_load(&disc_count), 9);
            freeq(q);
        }
    }
    /* many items (several segments, a full ring), NULL discard callback */
    long caps[] = {0, 1024};
    for (int c = 0; c < 2; c++) {
        conc_queue_t *q = mkq(CONC_FIFO, caps[c]);
        for (int i = 0; i < 1024; i++)
            cr_assert_eq(conc_queue_put(q, P(i), false, 0), 0);
        cr_assert_eq(conc_queue_shutdown(q, true, NULL), 0);
        cr_assert_eq(conc_queue_qsize(q), 0);
        cr_assert_eq(conc_queue_unfinished_tasks(q), 0);
        cr_assert_eq(conc_queue_join(q, CONC_FOREVER), 0);
        freeq(q);
    }
}

/* Python's test_shutdown_allowed_transitions, and repeated calls. */
Test(queue_shutdown, transitions, .timeout = TU_TIMEOUT)
{
    for (int k = 0; k < 3; k++) {
        conc_queue_t *q = mkq(KINDS[k], 0);
        void *it;
        cr_assert_not(conc_queue_is_shutdown(q));
        cr_assert_eq(conc_queue_put(q, P(1), false, 0), 0);
        cr_assert_eq(conc_queue_put(q, P(2), false, 0), 0);
        cr_assert_eq(conc_queue_shutdown(q, false, discard), 0);
        cr_assert(conc_queue_is_shutdown(q));
        cr_assert_eq(conc_queue_shutdown(q, false, discard), 0);
        cr_assert(conc_queue_is_shutdown(q));
        cr_assert_eq(conc_queue_qsize(q), 2);
        /* then immediate: drops what was left */
        disc_reset();
        cr_assert_eq(conc_queue_shutdown(q, true, discard), 0);
        cr_assert(conc_queue_is_shutdown(q));
        cr_assert_eq(atomic_load(&disc_count), 2);
        cr_assert_eq(conc_queue_qsize(q), 0);
        cr_assert_eq(conc_queue_unfinished_tasks(q), 0);
        /* and back to a plain shutdown: still shut down, nothing changes */
        cr_assert_eq(conc_queue_shutdown(q, false, discard), 0);
        cr_assert(conc_queue_is_shutdown(q));
        cr_assert_eq(conc_queue_get_nowait(q, &it), CONC_ESHUTDOWN);
        cr_assert_eq(conc_queue_put_nowait(q, P(3)), CONC_ESHUTDOWN);
        cr_assert_eq(atomic_load(&disc_count), 2);
        freeq(q);
    }
}

/* Python's _shutdown_all_methods_in_one_thread, for both modes. */
static void all_methods_one_thread(conc_queue_kind_t kind, bool immediate)
{
    conc_queue_t *q = mkq(kind, 2);
    void *it;
    cr_assert_eq(conc_queue_put(q, P(20), true, CONC_FOREVER), 0); /* "L" */
    cr_assert_eq(conc_queue_put_nowait(q, P(10)), 0);              /* "O" */
    cr_assert(conc_queue_full(q));
    cr_assert_eq(conc_queue_shutdown(q, immediate, NULL), 0);
    /* full and shut down: ShutDown wins over Full */
    cr_assert_eq(conc_queue_put(q, P(30), true, CONC_FOREVER), CONC_ESHUTDOWN);
    cr_assert_eq(conc_queue_put(q, P(30), true, 0.01), CONC_ESHUTDOWN);
    cr_assert_eq(conc_queue_put_nowait(q, P(40)), CONC_ESHUTDOWN, "%s: Full instead of ShutDown",
                 kname(kind));
    if (immediate) {
        cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), CONC_ESHUTDOWN);
        cr_assert_eq(conc_queue_get_nowait(q, &it), CONC_ESHUTDOWN);
        /* the two items were dropped, so no task is left to mark done */
        cr_assert_eq(conc_queue_task_done(q), CONC_EINVAL);
        cr_assert_eq(conc_queue_join(q, CONC_FOREVER), 0);
    } else {
        uintptr_t first = kind == CONC_FIFO ? 20 : 10; /* LIFO: last in; PRIORITY: lowest */
        cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), 0);
        cr_assert_eq(U(it), first);
        cr_assert_eq(conc_queue_get_nowait(q, &it), 0);
        cr_assert_eq(U(it), 30 - first);
        cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), CONC_ESHUTDOWN);
        cr_assert_eq(conc_queue_get_nowait(q, &it), CONC_ESHUTDOWN);
        cr_assert_eq(conc_queue_join(q, 0), CONC_ETIMEDOUT);
        cr_assert_eq(conc_queue_task_done(q), 0);
        cr_assert_eq(conc_queue_task_done(q), 0);
        cr_assert_eq(conc_queue_task_done(q), CONC_EINVAL);
        cr_assert_eq(conc_queue_join(q, CONC_FOREVER), 0);
    }
    freeq(q);
}

Test(queue_shutdown, all_methods_in_one_thread, .timeout = TU_TIMEOUT)
{
    for (int k = 0; k < 3; k++) {
        all_methods_one_thread(KINDS[k], false);
        all_methods_one_thread(KINDS[k], true);
    }
}

/* --------------------------------------------------- blocked callers */

/* Getters blocked on an empty queue fail with ESHUTDOWN in both modes,
 * whatever their timeout, and soon. */
Test(queue_shutdown, wakes_blocked_getters, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static blk_t x;
    const int N = 4;
    for (int k = 0; k < 3; k++) {
        for (int imm = 0; imm < 2; imm++) {
            for (int t = 0; t < 2; t++) {
                conc_queue_t *q = mkq(KINDS[k], t ? 0 : 3);
                blk_start(&b, &x, N, OP_GET, q, t ? 30.0 : CONC_FOREVER);
                cr_assert_eq(conc_queue_shutdown(q, imm, NULL), 0);
                tu_bunch_join(&b);
                for (int i = 0; i < N; i++) {
                    cr_assert_eq(atomic_load(&x.rc[i]), CONC_ESHUTDOWN, "%s imm %d: getter %d rc %d",
                                 kname(KINDS[k]), imm, i, atomic_load(&x.rc[i]));
                    cr_assert_lt(x.dt[i], 20);
                }
                freeq(q);
            }
        }
    }
}

/* Putters blocked on a full queue fail with ESHUTDOWN in both modes. With
 * a plain shutdown the items already inside stay and can be got; with
 * immediate they are discarded (the putters' items never went in). */
Test(queue_shutdown, wakes_blocked_putters, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static blk_t x;
    const int N = 4;
    for (int k = 0; k < 3; k++) {
        for (int imm = 0; imm < 2; imm++) {
            for (int t = 0; t < 2; t++) {
                conc_queue_t *q = mkq(KINDS[k], 2);
                void *it;
                cr_assert_eq(conc_queue_put(q, P(1), false, 0), 0);
                cr_assert_eq(conc_queue_put(q, P(2), false, 0), 0);
                x.put_base = 100;
                blk_start(&b, &x, N, OP_PUT, q, t ? 30.0 : CONC_FOREVER);
                disc_reset();
                cr_assert_eq(conc_queue_shutdown(q, imm, discard), 0);
                tu_bunch_join(&b);
                for (int i = 0; i < N; i++) {
                    cr_assert_eq(atomic_load(&x.rc[i]), CONC_ESHUTDOWN, "%s imm %d: putter %d rc %d",
                                 kname(KINDS[k]), imm, i, atomic_load(&x.rc[i]));
                    cr_assert_lt(x.dt[i], 20);
                }
                if (imm) {
                    cr_assert_eq(atomic_load(&disc_count), 2);
                    cr_assert(disc_seen[1] && disc_seen[2], "discarded the wrong items");
                    cr_assert_eq(conc_queue_qsize(q), 0);
                    cr_assert_eq(conc_queue_unfinished_tasks(q), 0);
                } else {
                    cr_assert_eq(atomic_load(&disc_count), 0);
                    cr_assert_eq(conc_queue_qsize(q), 2, "a blocked putter's item went in after shutdown");
                    uintptr_t s = 0;
                    for (int i = 0; i < 2; i++) {
                        cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), 0);
                        s += U(it);
                    }
                    cr_assert_eq(s, 3);
                    cr_assert_eq(conc_queue_unfinished_tasks(q), 2);
                }
                cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), CONC_ESHUTDOWN);
                freeq(q);
            }
        }
    }
}

/* Joiners: an immediate shutdown of a queue whose items were never taken
 * leaves nothing unfinished, so they are released; a plain shutdown does
 * not release them — the tasks must still be done. */
Test(queue_shutdown, joiners_released_by_immediate, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static blk_t x;
    for (int k = 0; k < 3; k++) {
        conc_queue_t *q = mkq(KINDS[k], k == 0 ? 0 : 8);
        for (int i = 0; i < 5; i++)
            cr_assert_eq(conc_queue_put(q, P(i), false, 0), 0);
        blk_start(&b, &x, 3, OP_JOIN, q, k == 1 ? 30.0 : CONC_FOREVER);
        cr_assert_eq(conc_queue_shutdown(q, true, NULL), 0);
        tu_bunch_join(&b);
        for (int i = 0; i < 3; i++)
            cr_assert_eq(atomic_load(&x.rc[i]), 0, "%s: joiner %d rc %d", kname(KINDS[k]), i,
                         atomic_load(&x.rc[i]));
        freeq(q);
    }
}

Test(queue_shutdown, joiners_wait_for_taken_tasks, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static blk_t x;
    for (int k = 0; k < 3; k++) {
        for (int imm = 0; imm < 2; imm++) {
            conc_queue_t *q = mkq(KINDS[k], 8);
            void *it;
            for (int i = 0; i < 5; i++)
                cr_assert_eq(conc_queue_put(q, P(i), false, 0), 0);
            cr_assert_eq(conc_queue_get(q, &it, false, 0), 0); /* taken, not done */
            blk_start(&b, &x, 2, OP_JOIN, q, CONC_FOREVER);
            cr_assert_eq(conc_queue_shutdown(q, imm, NULL), 0);
            tu_sleep(0.05);
            cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10));
            cr_assert_eq(atomic_load(&x.finished), 0, "%s imm %d: join returned with work unfinished",
                         kname(KINDS[k]), imm);
            if (!imm) {
                /* drain and finish what is left */
                for (int i = 0; i < 4; i++) {
                    cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), 0);
                    cr_assert_eq(conc_queue_task_done(q), 0);
                }
                cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), CONC_ESHUTDOWN);
                tu_sleep(0.02);
                cr_assert_eq(atomic_load(&x.finished), 0, "join returned with one task unfinished");
            } else {
                cr_assert_eq(conc_queue_unfinished_tasks(q), 1);
            }
            cr_assert_eq(conc_queue_task_done(q), 0);
            tu_bunch_join(&b);
            for (int i = 0; i < 2; i++)
                cr_assert_eq(atomic_load(&x.rc[i]), 0);
            cr_assert_eq(conc_queue_task_done(q), CONC_EINVAL);
            freeq(q);
        }
    }
}

/* Python's _shutdown_put_join: a putter blocked on a full queue and a
 * joiner; shutdown; the putter fails; the joiner is released by immediate
 * at once, or by a plain shutdown once the items are got and done. */
Test(queue_shutdown, put_join, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t bp, bj;
    static blk_t xp, xj;
    for (int k = 0; k < 3; k++) {
        for (int imm = 0; imm < 2; imm++) {
            conc_queue_t *q = mkq(KINDS[k], 2);
            void *it;
            cr_assert_eq(conc_queue_put(q, P(1), false, 0), 0);
            cr_assert_eq(conc_queue_put(q, P(2), false, 0), 0);
            xp.put_base = 50;
            blk_start(&bp, &xp, 1, OP_PUT, q, CONC_FOREVER);
            blk_start(&bj, &xj, 1, OP_JOIN, q, CONC_FOREVER);
            cr_assert_eq(conc_queue_shutdown(q, imm, NULL), 0);
            tu_bunch_join(&bp);
            cr_assert_eq(atomic_load(&xp.rc[0]), CONC_ESHUTDOWN);
            if (!imm) {
                cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&bj), 10));
                cr_assert_eq(atomic_load(&xj.finished), 0);
                for (int i = 0; i < 2; i++) {
                    cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), 0);
                    cr_assert_eq(conc_queue_task_done(q), 0);
                }
            }
            tu_bunch_join(&bj);
            cr_assert_eq(atomic_load(&xj.rc[0]), 0, "%s imm %d: joiner rc %d", kname(KINDS[k]), imm,
                         atomic_load(&xj.rc[0]));
            cr_assert_eq(conc_queue_unfinished_tasks(q), 0);
            freeq(q);
        }
    }
}

/* Python's _shutdown_get_task_done_join: consumers take and finish items
 * while the queue is shut down under them; join returns when all is done.*/
typedef struct {
    conc_queue_t *q;
    atomic_long got, got_sum, shut, errors;
} consumer_t;

static void consumer_fn(void *p, int i)
{
    (void)i;
    consumer_t *c = p;
    for (;;) {
        void *it;
        int rc = conc_queue_get(c->q, &it, true, CONC_FOREVER);
        if (rc == CONC_ESHUTDOWN) {
            atomic_fetch_add(&c->shut, 1);
            return;
        }
        if (rc != 0) {
            atomic_fetch_add(&c->errors, 1);
            return;
        }
        atomic_fetch_add(&c->got, 1);
        atomic_fetch_add(&c->got_sum, (long)U(it));
        if (U(it) % 5 == 0)
            tu_sleep(0.0002);
        if (conc_queue_task_done(c->q) != 0)
            atomic_fetch_add(&c->errors, 1);
    }
}

Test(queue_shutdown, get_task_done_join, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static consumer_t c;
    const int NC = 3;
    for (int k = 0; k < 3; k++) {
        for (int imm = 0; imm < 2; imm++) {
            memset(&c, 0, sizeof c);
            c.q = mkq(KINDS[k], 16);
            long n = tu_iters(2000), put_sum = 0;
            tu_bunch_start(&b, NC, consumer_fn, &c);
            for (long i = 1; i <= n; i++) {
                cr_assert_eq(conc_queue_put(c.q, P(i), true, 30), 0);
                put_sum += i;
            }
            disc_reset();
            cr_assert_eq(conc_queue_shutdown(c.q, imm, discard), 0);
            cr_assert_eq(conc_queue_join(c.q, 30), 0, "join after shutdown did not return");
            tu_bunch_join(&b);
            cr_assert_eq(atomic_load(&c.errors), 0);
            cr_assert_eq(atomic_load(&c.shut), NC, "every consumer ends with ShutDown");
            cr_assert_eq(atomic_load(&c.got) + atomic_load(&disc_count), n,
                         "%s imm %d: got %ld + discarded %ld != put %ld", kname(KINDS[k]), imm,
                         atomic_load(&c.got), atomic_load(&disc_count), n);
            cr_assert_eq(atomic_load(&c.got_sum) + atomic_load(&disc_sum), put_sum);
            cr_assert_eq(atomic_load(&disc_dup), 0);
            if (!imm)
                cr_assert_eq(atomic_load(&disc_count), 0);
            cr_assert_eq(conc_queue_unfinished_tasks(c.q), 0);
            freeq(c.q);
        }
    }
}

/* Python's _shutdown_all_methods_in_many_threads: producers, consumers and
 * joiners running while the queue is shut down; every thread ends, each
 * call returns a legal code, and items are conserved:
 * put successfully = got + discarded. */
typedef struct {
    conc_queue_t *q;
    atomic_long put_ok, put_sum, got, got_sum, errors, seq;
    atomic_int last_err, last_err_role;
    atomic_int stop;
} many_t;

static void many_err(many_t *m, int role, int rc)
{
    atomic_store(&m->last_err, rc);
    atomic_store(&m->last_err_role, role);
    atomic_fetch_add(&m->errors, 1);
}

static void many_fn(void *p, int i)
{
    many_t *m = p;
    void *it;
    switch (i % 3) {
    case 0: /* producer */
        for (;;) {
            uintptr_t v = (uintptr_t)atomic_fetch_add(&m->seq, 1) + 1;
            int rc = (v & 1) ? conc_queue_put(m->q, P(v), true, CONC_FOREVER)
                             : conc_queue_put(m->q, P(v), true, 0.001);
            if (rc == 0) {
                atomic_fetch_add(&m->put_ok, 1);
                atomic_fetch_add(&m->put_sum, (long)v);
            } else if (rc == CONC_ESHUTDOWN) {
                return;
            } else if (rc != CONC_EFULL) {
                many_err(m, 0, rc);
                return;
            }
        }
    case 1: /* consumer */
        for (;;) {
            int rc = (i & 2) ? conc_queue_get(m->q, &it, true, CONC_FOREVER)
                             : conc_queue_get(m->q, &it, true, 0.001);
            if (rc == 0) {
                atomic_fetch_add(&m->got, 1);
                atomic_fetch_add(&m->got_sum, (long)U(it));
                int r2 = conc_queue_task_done(m->q);
                if (r2 != 0)
                    many_err(m, 3, r2);
            } else if (rc == CONC_ESHUTDOWN) {
                return;
            } else if (rc != CONC_EEMPTY) {
                many_err(m, 1, rc);
                return;
            }
        }
    default: /* joiner: returns once shut down and finished */
        while (!atomic_load(&m->stop)) {
            int rc = conc_queue_join(m->q, 0.01);
            if (rc != 0 && rc != CONC_ETIMEDOUT) {
                many_err(m, 2, rc);
                return;
            }
        }
        int rc = conc_queue_join(m->q, 10);
        if (rc != 0)
            many_err(m, 4, rc);
    }
}

Test(queue_shutdown, all_methods_in_many_threads, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static many_t m;
    for (int k = 0; k < 3; k++) {
        for (int imm = 0; imm < 2; imm++) {
            long caps[] = {4, 0};
            for (int c = 0; c < 2; c++) {
                memset(&m, 0, sizeof m);
                m.q = mkq(KINDS[k], caps[c]);
                tu_bunch_start(&b, 9, many_fn, &m);
                tu_sleep(TU_SANITIZED ? 0.1 : 0.05);
                disc_reset();
                cr_assert_eq(conc_queue_shutdown(m.q, imm, discard), 0);
                atomic_store(&m.stop, 1);
                tu_bunch_join(&b);
                cr_assert_eq(atomic_load(&m.errors), 0,
                             "%s imm %d cap %ld: %ld errors, last %d in role %d (0 put, 1 get, 2 timed "
                             "join, 3 task_done, 4 final join); unfinished %zu, qsize %zu, put %ld, got %ld",
                             kname(KINDS[k]), imm, caps[c], atomic_load(&m.errors), atomic_load(&m.last_err),
                             atomic_load(&m.last_err_role), conc_queue_unfinished_tasks(m.q),
                             conc_queue_qsize(m.q), atomic_load(&m.put_ok), atomic_load(&m.got));
                /* consumers left with ShutDown: the queue is empty */
                cr_assert_eq(conc_queue_qsize(m.q), 0);
                cr_assert_eq(atomic_load(&m.put_ok), atomic_load(&m.got) + atomic_load(&disc_count),
                             "%s imm %d cap %ld: put %ld, got %ld, discarded %ld", kname(KINDS[k]), imm,
                             caps[c], atomic_load(&m.put_ok), atomic_load(&m.got), atomic_load(&disc_count));
                cr_assert_eq(atomic_load(&m.put_sum), atomic_load(&m.got_sum) + atomic_load(&disc_sum));
                cr_assert_eq(conc_queue_unfinished_tasks(m.q), 0);
                cr_assert_eq(conc_queue_join(m.q, 0), 0);
                cr_assert_gt(atomic_load(&m.put_ok), 0, "nothing happened before shutdown");
                freeq(m.q);
            }
        }
    }
}

/* A put that races with an immediate shutdown either fails with
 * ESHUTDOWN or succeeds before the shutdown — and then its item was
 * discarded. No item may be left in the queue afterwards, and every
 * successful put is accounted for (discarded or got before). */
typedef struct {
    conc_queue_t *q;
    atomic_long put_ok, put_sum, seq;
    atomic_int go, errors;
} race_t;

static void race_put_fn(void *p, int i)
{
    race_t *r = p;
    while (!atomic_load(&r->go)) {
    }
    for (;;) {
        uintptr_t v = (uintptr_t)atomic_fetch_add(&r->seq, 1) + 1;
        int rc = (i & 1) ? conc_queue_put(r->q, P(v), true, CONC_FOREVER) : conc_queue_put_nowait(r->q, P(v));
        if (rc == 0) {
            atomic_fetch_add(&r->put_ok, 1);
            atomic_fetch_add(&r->put_sum, (long)v);
        } else if (rc == CONC_ESHUTDOWN) {
            return;
        } else if (rc != CONC_EFULL) {
            atomic_fetch_add(&r->errors, 1);
            return;
        }
    }
}

Test(queue_shutdown, put_racing_immediate_shutdown, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static race_t r;
    long rounds = tu_iters(150);
    long caps[] = {0, 8, 1000, 100000};
    for (int k = 0; k < 3; k++) {
        for (int c = 0; c < 4; c++) {
            for (long round = 0; round < rounds / 3 + 1; round++) {
                memset(&r, 0, sizeof r);
                r.q = mkq(KINDS[k], caps[c]);
                tu_bunch_start(&b, 2, race_put_fn, &r);
                atomic_store(&r.go, 1);
                /* let the producers run a little, then shut down under them */
                for (volatile long spin = 0; spin < (round % 7) * 2000; spin++) {
                }
                disc_reset();
                cr_assert_eq(conc_queue_shutdown(r.q, true, discard), 0);
                tu_bunch_join(&b);
                cr_assert_eq(atomic_load(&r.errors), 0);
                size_t left = conc_queue_qsize(r.q);
                void *it;
                int rc = conc_queue_get_nowait(r.q, &it);
                cr_assert(left == 0 && rc == CONC_ESHUTDOWN,
                          "%s cap %ld round %ld: a put that succeeded during an immediate shutdown left "
                          "%zu item(s) in the queue (get: %d); put %ld, discarded %ld",
                          kname(KINDS[k]), caps[c], round, left, rc, atomic_load(&r.put_ok),
                          atomic_load(&disc_count));
                cr_assert_eq(atomic_load(&r.put_ok), atomic_load(&disc_count));
                cr_assert_eq(atomic_load(&r.put_sum), atomic_load(&disc_sum));
                cr_assert_eq(conc_queue_unfinished_tasks(r.q), 0);
                freeq(r.q);
            }
        }
    }
}

/* Freeing after shutdown: items left by a plain shutdown go to the dtor;
 * waiters woken by shutdown have left, so free is allowed. */
Test(queue_shutdown, free_after_shutdown, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static blk_t x;
    for (int k = 0; k < 3; k++) {
        conc_queue_t *q = mkq(KINDS[k], 4);
        for (int i = 1; i <= 3; i++)
            cr_assert_eq(conc_queue_put(q, P(i), false, 0), 0);
        cr_assert_eq(conc_queue_shutdown(q, false, NULL), 0);
        disc_reset();
        cr_assert_eq(conc_queue_free(q, discard), 0);
        cr_assert_eq(atomic_load(&disc_count), 3);
        cr_assert_eq(atomic_load(&disc_sum), 6);

        q = mkq(KINDS[k], 1);
        blk_start(&b, &x, 3, OP_GET, q, CONC_FOREVER);
        cr_assert_eq(conc_queue_shutdown(q, k == 1, NULL), 0);
        tu_bunch_join(&b);
        cr_assert_eq(conc_queue_free(q, NULL), 0, "free refused after the woken waiters left");
    }
}

/* SimpleQueue has no shutdown in Python; conc may refuse it (EINVAL) or
 * give it Queue's meaning — either way consistently. */
Test(queue_shutdown, simplequeue, .timeout = TU_TIMEOUT)
{
    conc_queue_t *q = mkq(CONC_SIMPLE, 0);
    void *it;
    cr_assert_eq(conc_queue_put(q, P(1), false, 0), 0);
    cr_assert_eq(conc_queue_put(q, P(2), false, 0), 0);
    int rc = conc_queue_shutdown(q, false, NULL);
    cr_assert(rc == 0 || rc == CONC_EINVAL, "rc %d", rc);
    if (rc == CONC_EINVAL) {
        cr_assert_not(conc_queue_is_shutdown(q));
        cr_assert_eq(conc_queue_shutdown(q, true, discard), CONC_EINVAL);
        cr_assert_eq(conc_queue_qsize(q), 2);
        cr_assert_eq(conc_queue_put(q, P(3), false, 0), 0);
    } else {
        cr_assert(conc_queue_is_shutdown(q));
        cr_assert_eq(conc_queue_put(q, P(3), false, 0), CONC_ESHUTDOWN);
        cr_assert_eq(conc_queue_get(q, &it, false, 0), 0);
        cr_assert_eq(U(it), 1);
        disc_reset();
        cr_assert_eq(conc_queue_shutdown(q, true, discard), 0);
        cr_assert_eq(atomic_load(&disc_count), 1);
        cr_assert_eq(conc_queue_get(q, &it, true, CONC_FOREVER), CONC_ESHUTDOWN);
    }
    freeq(q);
}
