/* Queues between green threads of one hub: the hub-local direct hand-off
 * (a put that finds a green getter of its own hub asleep on an empty queue
 * gives it the item straight away, src/queue/queue.c) keeps every rule of
 * Python's queue.Queue: FIFO order among getters and items, task_done /
 * join counts, shutdown, nowait exactness, peekers and selects (never
 * handed to), OS threads and green threads mixed on one queue, and a
 * getter that is killed, times out or is cut by a Timeout scope after it
 * was handed an item but before it ran gets that item (no loss, no
 * duplicate) and sees the interruption at its next blocking call. */
#include "test_util.h"

#include "conc/green.h"
#include "conc/queue.h"

#include <sys/wait.h>

#define PTR(x) ((void *)(uintptr_t)(x))
#define INT(p) ((long)(uintptr_t)(p))

typedef struct {
    conc_queue_t *q;
    double timeout;
    int rc, rc2;
    void *item;
    atomic_int got;
} getter_t;

static void *getter_fn(void *arg)
{
    getter_t *g = arg;
    g->item = PTR(0xdead);
    g->rc = conc_queue_get(g->q, &g->item, true, g->timeout);
    atomic_store(&g->got, 1);
    return NULL;
}

/* get, then another get on the (empty) queue, which must report a
 * pending interruption at once instead of sleeping */
static void *getter_then_get_fn(void *arg)
{
    getter_t *g = arg;
    getter_fn(g);
    void *x;
    g->rc2 = conc_queue_get(g->q, &x, true, 0.5);
    return NULL;
}

static void join_free(conc_green_t *g)
{
    cr_assert_eq(conc_green_join(g, 10.0), 0);
    cr_assert_eq(conc_green_free(g), 0);
}

/* ------------------------------------------------------------ ordering */

Test(queue_green, handoff_serves_getters_in_order_and_counts_tasks, .timeout = TU_TIMEOUT)
{
    conc_queue_kind_t kinds[] = {CONC_FIFO, CONC_LIFO, CONC_PRIORITY, CONC_FIFO};
    long caps[] = {4, 0, 0, 0}; /* ring, heap, heap, segment list */
    for (int k = 0; k < 4; k++) {
        conc_queue_t *q;
        cr_assert_eq(conc_queue_new(&q, kinds[k], caps[k]), 0);
        getter_t g[3] = {{.q = q, .timeout = CONC_FOREVER}, {.q = q, .timeout = CONC_FOREVER},
                         {.q = q, .timeout = CONC_FOREVER}};
        conc_green_t *h[3];
        for (int i = 0; i < 3; i++)
            cr_assert_eq(conc_go(&h[i], getter_fn, &g[i]), 0);
        cr_assert_eq(conc_sleep(0), 0); /* all three park, in order */
        for (int i = 0; i < 3; i++)
            cr_assert_eq(conc_queue_put(q, PTR(i + 1), true, CONC_FOREVER), 0);
        cr_assert_eq(conc_queue_qsize(q), 0, "handed over, not stored");
        cr_assert_eq(conc_queue_unfinished_tasks(q), 3);
        for (int i = 0; i < 3; i++) {
            join_free(h[i]);
            cr_assert_eq(g[i].rc, 0);
            cr_assert_eq(INT(g[i].item), i + 1, "getter %d got %ld", i, INT(g[i].item));
        }
        cr_assert_eq(conc_queue_join(q, 0), CONC_ETIMEDOUT);
        for (int i = 0; i < 3; i++)
            cr_assert_eq(conc_queue_task_done(q), 0);
        cr_assert_eq(conc_queue_task_done(q), CONC_EINVAL);
        cr_assert_eq(conc_queue_join(q, 0), 0);
        cr_assert_eq(conc_queue_free(q, NULL), 0);
    }
}

typedef struct {
    conc_queue_t *q;
    long n;
} pp_t;

static void *pp_a(void *arg)
{
    pp_t *p = arg;
    for (long i = 0; i < p->n; i++) {
        if (conc_queue_put(p->q, PTR(i + 1), true, CONC_FOREVER) != 0)
            return PTR(1);
        if (conc_queue_put_nowait(p->q, PTR(-(i + 1))) != 0)
            return PTR(2);
        cr_assert_eq(conc_sleep(0), 0);
    }
    return NULL;
}

static void *pp_b(void *arg)
{
    pp_t *p = arg;
    for (long i = 0; i < p->n; i++) {
        void *x, *y;
        if (conc_queue_get(p->q, &x, true, CONC_FOREVER) != 0 || conc_queue_get(p->q, &y, true, 5.0) != 0)
            return PTR(3);
        if (INT(x) != i + 1 || INT(y) != -(i + 1))
            return PTR(4);
    }
    return NULL;
}

Test(queue_green, handed_item_and_stored_item_keep_fifo, .timeout = TU_TIMEOUT)
{
    /* the first put of each pair is handed over, the second is stored: the
     * getter must see them in put order */
    conc_queue_t *q;
    cr_assert_eq(conc_queue_new(&q, CONC_FIFO, 2), 0);
    pp_t p = {q, tu_iters(2000)};
    conc_green_t *a, *b;
    cr_assert_eq(conc_go(&b, pp_b, &p), 0);
    cr_assert_eq(conc_go(&a, pp_a, &p), 0);
    cr_assert_eq(conc_green_join(a, 10.0), 0);
    cr_assert_eq(conc_green_join(b, 10.0), 0);
    cr_assert_null(conc_green_value(a));
    cr_assert_null(conc_green_value(b));
    conc_green_free(a);
    conc_green_free(b);
    cr_assert_eq(conc_queue_qsize(q), 0);
    cr_assert_eq(conc_queue_free(q, NULL), 0);
}

Test(queue_green, nowait_and_maxsize_with_a_handoff, .timeout = TU_TIMEOUT)
{
    conc_queue_t *q;
    cr_assert_eq(conc_queue_new(&q, CONC_FIFO, 1), 0);
    getter_t g = {.q = q, .timeout = CONC_FOREVER};
    conc_green_t *h;
    cr_assert_eq(conc_go(&h, getter_fn, &g), 0);
    cr_assert_eq(conc_sleep(0), 0);
    cr_assert_eq(conc_queue_put_nowait(q, PTR(7)), 0); /* handed over */
    cr_assert_eq(conc_queue_qsize(q), 0);
    void *x;
    cr_assert_eq(conc_queue_get_nowait(q, &x), CONC_EEMPTY, "the handed item is not in the queue");
    cr_assert_eq(conc_queue_put_nowait(q, PTR(8)), 0);
    cr_assert_eq(conc_queue_put_nowait(q, PTR(9)), CONC_EFULL);
    join_free(h);
    cr_assert_eq(g.rc, 0);
    cr_assert_eq(INT(g.item), 7);
    cr_assert_eq(conc_queue_get_nowait(q, &x), 0);
    cr_assert_eq(INT(x), 8);
    cr_assert_eq(conc_queue_free(q, NULL), 0);
}

/* -------------------------------------------------- not handed to these */

typedef struct {
    conc_queue_t *q;
    int rc;
    void *item;
} peeker_t;

static void *peeker_fn(void *arg)
{
    peeker_t *p = arg;
    p->rc = conc_queue_peek(p->q, &p->item, true, 5.0);
    return NULL;
}

Test(queue_green, a_peeker_first_in_line_is_not_handed_the_item, .timeout = TU_TIMEOUT)
{
    conc_queue_t *q;
    cr_assert_eq(conc_queue_new(&q, CONC_FIFO, 4), 0);
    peeker_t p = {.q = q};
    getter_t g = {.q = q, .timeout = 5.0};
    conc_green_t *hp, *hg;
    cr_assert_eq(conc_go(&hp, peeker_fn, &p), 0);
    cr_assert_eq(conc_go(&hg, getter_fn, &g), 0);
    cr_assert_eq(conc_sleep(0), 0);
    cr_assert_eq(conc_queue_put(q, PTR(5), true, CONC_FOREVER), 0);
    join_free(hp);
    join_free(hg);
    cr_assert_eq(p.rc, 0);
    cr_assert_eq(INT(p.item), 5);
    cr_assert_eq(g.rc, 0);
    cr_assert_eq(INT(g.item), 5);
    cr_assert_eq(conc_queue_qsize(q), 0);
    cr_assert_eq(conc_queue_free(q, NULL), 0);
}

typedef struct {
    conc_queue_t *qs[2];
    size_t idx;
    void *item;
    int rc;
} sel_t;

static void *sel_fn(void *arg)
{
    sel_t *s = arg;
    s->rc = conc_queue_select(s->qs, 2, &s->idx, &s->item, 5.0);
    return NULL;
}

Test(queue_green, a_select_is_not_handed_the_item, .timeout = TU_TIMEOUT)
{
    sel_t s = {0};
    cr_assert_eq(conc_queue_new(&s.qs[0], CONC_FIFO, 4), 0);
    cr_assert_eq(conc_queue_new(&s.qs[1], CONC_FIFO, 4), 0);
    conc_green_t *h;
    cr_assert_eq(conc_go(&h, sel_fn, &s), 0);
    cr_assert_eq(conc_sleep(0), 0);
    cr_assert_eq(conc_queue_put(s.qs[1], PTR(3), true, CONC_FOREVER), 0);
    join_free(h);
    cr_assert_eq(s.rc, 0);
    cr_assert_eq(s.idx, 1);
    cr_assert_eq(INT(s.item), 3);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(conc_queue_qsize(s.qs[i]), 0);
        cr_assert_eq(conc_queue_free(s.qs[i], NULL), 0);
    }
}

/* ----------------------------------------------------- shutdown, counts */

Test(queue_green, shutdown_after_a_handoff_keeps_the_item_and_its_task, .timeout = TU_TIMEOUT)
{
    for (int immediate = 0; immediate < 2; immediate++) {
        conc_queue_t *q;
        cr_assert_eq(conc_queue_new(&q, CONC_FIFO, 4), 0);
        getter_t g = {.q = q, .timeout = CONC_FOREVER}, g2 = {.q = q, .timeout = CONC_FOREVER};
        conc_green_t *h, *h2;
        cr_assert_eq(conc_go(&h, getter_fn, &g), 0);
        cr_assert_eq(conc_go(&h2, getter_fn, &g2), 0);
        cr_assert_eq(conc_sleep(0), 0);
        cr_assert_eq(conc_queue_put(q, PTR(11), true, CONC_FOREVER), 0);
        cr_assert_eq(conc_queue_shutdown(q, immediate, NULL), 0);
        cr_assert_eq(conc_queue_put(q, PTR(12), true, CONC_FOREVER), CONC_ESHUTDOWN);
        join_free(h);
        join_free(h2);
        cr_assert_eq(g.rc, 0);
        cr_assert_eq(INT(g.item), 11);
        cr_assert_eq(g2.rc, CONC_ESHUTDOWN);
        cr_assert_eq(conc_queue_unfinished_tasks(q), 1);
        cr_assert_eq(conc_queue_task_done(q), 0);
        cr_assert_eq(conc_queue_join(q, 0), 0);
        cr_assert_eq(conc_queue_free(q, NULL), 0);
    }
}

/* ------------------------------------------ cut after the hand-off */

typedef struct {
    conc_queue_t *q;
    conc_green_t *victim;
    int how; /* 0: kill after the put, 1: kill before the put */
} killer_t;

static void *killer_fn(void *arg)
{
    killer_t *k = arg;
    if (k->how == 1)
        cr_assert_eq(conc_green_kill(k->victim, false, 0), 0);
    cr_assert_eq(conc_queue_put(k->q, PTR(21), true, CONC_FOREVER), 0);
    if (k->how == 0)
        cr_assert_eq(conc_green_kill(k->victim, false, 0), 0);
    return NULL;
}

Test(queue_green, kill_around_the_handoff_loses_nothing, .timeout = TU_TIMEOUT)
{
    for (int how = 0; how < 2; how++) {
        conc_queue_t *q;
        cr_assert_eq(conc_queue_new(&q, CONC_FIFO, 2), 0);
        getter_t g = {.q = q, .timeout = CONC_FOREVER};
        conc_green_t *h, *hk;
        cr_assert_eq(conc_go(&h, getter_then_get_fn, &g), 0);
        cr_assert_eq(conc_sleep(0), 0); /* the getter parks */
        killer_t k = {q, h, how};
        cr_assert_eq(conc_go(&hk, killer_fn, &k), 0);
        join_free(hk);
        cr_assert_eq(conc_green_join(h, 10.0), 0);
        cr_assert(conc_green_killed(h));
        cr_assert_eq(conc_green_free(h), 0);
        /* the item went to the getter (the wake won the race) exactly
         * once, and the kill came at its next blocking call */
        cr_assert_eq(g.rc, 0, "how %d: get returned %d", how, g.rc);
        cr_assert_eq(INT(g.item), 21);
        cr_assert_eq(g.rc2, CONC_EKILLED);
        void *x;
        cr_assert_eq(conc_queue_get_nowait(q, &x), CONC_EEMPTY);
        cr_assert_eq(conc_queue_unfinished_tasks(q), 1);
        cr_assert_eq(conc_queue_free(q, NULL), 0);
    }
}

static double spin_until(double t)
{
    double now;
    while ((now = tu_now()) < t) {
    }
    return now;
}

typedef struct {
    conc_queue_t *q;
    double sleep;
} late_putter_t;

static void *late_putter_fn(void *arg)
{
    late_putter_t *p = arg;
    cr_assert_eq(conc_sleep(p->sleep), 0);
    cr_assert_eq(conc_queue_put(p->q, PTR(31), true, CONC_FOREVER), 0);
    return NULL;
}

static void *hog_fn(void *arg)
{
    spin_until(tu_now() + *(double *)arg); /* holds the hub: both timers expire */
    return NULL;
}

typedef struct {
    conc_queue_t *q;
    int rc, end;
    void *item;
} scoped_t;

static void *scoped_getter_fn(void *arg)
{
    scoped_t *s = arg;
    cr_assert_eq(conc_timeout_begin(0.02), 0);
    s->rc = conc_queue_get(s->q, &s->item, true, CONC_FOREVER);
    s->end = conc_timeout_end();
    return NULL;
}

/* The getter's timer (its own timeout, or a Timeout scope) fires in the
 * same hub turn as the putter's, the putter first: the putter finds the
 * timed-out getter still first in line and hands it the item. The get
 * succeeds with it; nothing stays behind in the queue. */
Test(queue_green, timeout_around_the_handoff_loses_nothing, .timeout = TU_TIMEOUT)
{
    for (int scoped = 0; scoped < 2; scoped++) {
        conc_queue_t *q;
        cr_assert_eq(conc_queue_new(&q, CONC_FIFO, 2), 0);
        getter_t g = {.q = q, .timeout = 0.02};
        scoped_t s = {.q = q};
        late_putter_t p = {q, 0.005};
        double hog = 0.08;
        conc_green_t *hg, *hp, *hh;
        cr_assert_eq(scoped ? conc_go(&hg, scoped_getter_fn, &s) : conc_go(&hg, getter_fn, &g), 0);
        cr_assert_eq(conc_go(&hp, late_putter_fn, &p), 0);
        cr_assert_eq(conc_go(&hh, hog_fn, &hog), 0);
        join_free(hh);
        join_free(hp);
        join_free(hg);
        int rc = scoped ? s.rc : g.rc;
        void *item = scoped ? s.item : g.item;
        void *x;
        if (rc == 0) {
            cr_assert_eq(INT(item), 31);
            cr_assert_eq(conc_queue_get_nowait(q, &x), CONC_EEMPTY);
        } else {
            /* the machine let the loop run between the timers: then the
             * getter timed out and the item must be in the queue */
            cr_assert_eq(rc, CONC_ETIMEDOUT);
            cr_assert_eq(conc_queue_get_nowait(q, &x), 0);
            cr_assert_eq(INT(x), 31);
        }
        cr_assert_eq(conc_queue_qsize(q), 0);
        cr_assert_eq(conc_queue_free(q, NULL), 0);
    }
}

/* ----------------------------------- OS threads and green threads mixed */

#define MIX_PRODUCERS 4 /* 2 OS threads, 2 green threads (one hub) */
#define MIX_CONSUMERS 4 /* 2 OS threads, 2 green threads */

typedef struct {
    conc_queue_t *q;
    long n; /* items per producer */
    atomic_long seen[MIX_PRODUCERS];
    atomic_long total;
    atomic_int bad;
} mix_t;

static void produce(mix_t *m, int who)
{
    for (long i = 0; i < m->n; i++)
        if (conc_queue_put(m->q, PTR(((long)who << 32) | (i + 1)), true, 10.0) != 0)
            atomic_store(&m->bad, 1);
}

/* Each consumer checks that every producer's items reach it in order. */
static void consume(mix_t *m)
{
    long last[MIX_PRODUCERS] = {0};
    for (;;) {
        void *x;
        int rc = conc_queue_get(m->q, &x, true, 10.0);
        if (rc != 0) {
            atomic_store(&m->bad, 2);
            return;
        }
        if (x == NULL)
            return; /* sentinel */
        long who = INT(x) >> 32, seq = INT(x) & 0xffffffff;
        if (who < 0 || who >= MIX_PRODUCERS || seq <= last[who])
            atomic_store(&m->bad, 3);
        else
            last[who] = seq;
        atomic_fetch_add(&m->seen[who < MIX_PRODUCERS && who >= 0 ? who : 0], 1);
        atomic_fetch_add(&m->total, 1);
        conc_queue_task_done(m->q);
    }
}

static mix_t mix;

static void mix_os(void *arg, int idx)
{
    (void)arg;
    if (idx < 2)
        produce(&mix, idx);
    else
        consume(&mix);
}

static void *mix_green_produce(void *arg)
{
    produce(&mix, (int)(intptr_t)arg);
    return NULL;
}

static void *mix_green_consume(void *arg)
{
    (void)arg;
    consume(&mix);
    return NULL;
}

Test(queue_green, os_and_green_producers_and_consumers_on_one_queue, .timeout = TU_TIMEOUT)
{
    long caps[] = {2, 0, 1};
    for (int c = 0; c < 3; c++) {
        memset(&mix, 0, sizeof mix);
        cr_assert_eq(conc_queue_new(&mix.q, CONC_FIFO, caps[c]), 0);
        mix.n = tu_iters(3000);
        static tu_bunch_t b;
        tu_bunch_start(&b, 4, mix_os, NULL); /* 0,1 produce; 2,3 consume */
        conc_green_t *gp[2], *gc[2];
        for (int i = 0; i < 2; i++) {
            cr_assert_eq(conc_go(&gc[i], mix_green_consume, NULL), 0);
            cr_assert_eq(conc_go(&gp[i], mix_green_produce, (void *)(intptr_t)(2 + i)), 0);
        }
        for (int i = 0; i < 2; i++)
            join_free(gp[i]);
        /* wait for every item (parking only main: the green consumers
         * run meanwhile), then stop the consumers */
        double dl = tu_now() + 20.0;
        while (atomic_load(&mix.total) < MIX_PRODUCERS * mix.n && !atomic_load(&mix.bad) && tu_now() < dl)
            cr_assert_eq(conc_sleep(0.001), 0);
        for (int i = 0; i < MIX_CONSUMERS; i++)
            cr_assert_eq(conc_queue_put(mix.q, NULL, true, 10.0), 0);
        for (int i = 0; i < 2; i++)
            join_free(gc[i]);
        tu_bunch_join(&b);
        cr_assert_eq(atomic_load(&mix.bad), 0, "cap %ld: bad %d", caps[c], atomic_load(&mix.bad));
        cr_assert_eq(atomic_load(&mix.total), MIX_PRODUCERS * mix.n);
        for (int i = 0; i < MIX_PRODUCERS; i++)
            cr_assert_eq(atomic_load(&mix.seen[i]), mix.n);
        /* the sentinels are tasks too */
        cr_assert_eq(conc_queue_unfinished_tasks(mix.q), MIX_CONSUMERS);
        for (int i = 0; i < MIX_CONSUMERS; i++)
            cr_assert_eq(conc_queue_task_done(mix.q), 0);
        cr_assert_eq(conc_queue_join(mix.q, 0), 0);
        cr_assert_eq(conc_queue_qsize(mix.q), 0);
        cr_assert_eq(conc_queue_free(mix.q, NULL), 0);
    }
}

/* An OS thread asleep first in line is served before a green getter the
 * putter could hand to: each getter gets one item, none twice. */
static conc_queue_t *osfirst_q;
static void *osfirst_item;
static int osfirst_rc;

static void osfirst_get(void *arg, int idx)
{
    (void)arg, (void)idx;
    osfirst_rc = conc_queue_get(osfirst_q, &osfirst_item, true, 10.0);
}

static void *two_puts(void *arg)
{
    (void)arg;
    cr_assert_eq(conc_queue_put(osfirst_q, PTR(1), true, CONC_FOREVER), 0);
    cr_assert_eq(conc_queue_put(osfirst_q, PTR(2), true, CONC_FOREVER), 0);
    return NULL;
}

Test(queue_green, an_os_thread_first_in_line_keeps_its_turn, .timeout = TU_TIMEOUT)
{
    cr_assert_eq(conc_queue_new(&osfirst_q, CONC_FIFO, 4), 0);
    static tu_bunch_t b;
    tu_bunch_start(&b, 1, osfirst_get, NULL);
    cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10.0));
    getter_t g = {.q = osfirst_q, .timeout = 10.0};
    conc_green_t *hg, *hp;
    cr_assert_eq(conc_go(&hg, getter_fn, &g), 0);
    cr_assert_eq(conc_sleep(0), 0);
    cr_assert_eq(conc_go(&hp, two_puts, NULL), 0);
    join_free(hp);
    join_free(hg);
    tu_bunch_join(&b);
    cr_assert_eq(osfirst_rc, 0);
    cr_assert_eq(g.rc, 0);
    long a = INT(osfirst_item), c = INT(g.item);
    cr_assert((a == 1 && c == 2) || (a == 2 && c == 1), "os got %ld, green got %ld", a, c);
    cr_assert_eq(conc_queue_qsize(osfirst_q), 0);
    cr_assert_eq(conc_queue_free(osfirst_q, NULL), 0);
}

/* ------------------- several hubs, OS threads, timeouts and scopes */

/* Green producers and consumers on two hubs (two OS threads) and on the
 * main hub, an OS producer and an OS consumer, all on one queue; the
 * consumers get with short timeouts or short Timeout scopes, so timers
 * keep firing around the hand-offs (same hub) and the ordinary wakes
 * (other hubs, OS threads). Every item arrives exactly once, and each
 * producer's items reach each consumer in order (FIFO kinds). */
#define MH_PROD 5 /* 2 per hub thread, 1 OS thread */
typedef struct {
    conc_queue_t *q;
    long n;
    bool fifo;
    atomic_uchar *seen; /* MH_PROD * n */
    atomic_long total;
    atomic_int bad;
} mh_t;

static mh_t mh;

static void mh_produce(int who, bool green)
{
    for (long i = 0; i < mh.n; i++) {
        if (conc_queue_put(mh.q, PTR(((long)who << 32) | (i + 1)), true, 10.0) != 0)
            atomic_store(&mh.bad, 1);
        if ((i & 7) == 0 && green)
            conc_sleep(0);
    }
}

static void mh_consume(int style)
{
    long last[MH_PROD] = {0};
    while (atomic_load(&mh.total) < MH_PROD * mh.n && !atomic_load(&mh.bad)) {
        void *x = NULL;
        int rc;
        if (style) {
            conc_timeout_begin(0.0005);
            rc = conc_queue_get(mh.q, &x, true, CONC_FOREVER);
            conc_timeout_end();
        } else {
            rc = conc_queue_get(mh.q, &x, true, 0.0007);
        }
        if (rc == (style ? CONC_ETIMEDOUT : CONC_EEMPTY))
            continue;
        if (rc != 0) {
            atomic_store(&mh.bad, 1000 * style - rc);
            return;
        }
        long who = INT(x) >> 32, seq = INT(x) & 0xffffffff;
        if (who < 0 || who >= MH_PROD || seq < 1 || seq > mh.n) {
            atomic_store(&mh.bad, 3);
            return;
        }
        if (atomic_fetch_add(&mh.seen[who * mh.n + seq - 1], 1) != 0)
            atomic_store(&mh.bad, 4); /* taken twice */
        if (mh.fifo && seq <= last[who])
            atomic_store(&mh.bad, 5);
        last[who] = seq;
        atomic_fetch_add(&mh.total, 1);
        conc_queue_task_done(mh.q);
    }
}

static void *mh_green(void *arg)
{
    int r = (int)(intptr_t)arg;
    if (r >= 0)
        mh_produce(r, true);
    else
        mh_consume(-r - 1);
    return NULL;
}

static void mh_thread(void *arg, int idx)
{
    (void)arg;
    if (idx == 2) {
        mh_produce(4, false);
        return;
    }
    if (idx == 3) {
        mh_consume(idx & 1);
        return;
    }
    conc_green_t *g[4];
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(conc_go(&g[2 * i], mh_green, (void *)(intptr_t)(-1 - i)), 0);
        cr_assert_eq(conc_go(&g[2 * i + 1], mh_green, (void *)(intptr_t)(2 * idx + i)), 0);
    }
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(conc_green_join(g[i], 30.0), 0);
        conc_green_free(g[i]);
    }
}

Test(queue_green, several_hubs_os_threads_timeouts_lose_nothing, .timeout = TU_TIMEOUT)
{
    conc_queue_kind_t kinds[] = {CONC_FIFO, CONC_FIFO, CONC_PRIORITY, CONC_LIFO};
    long caps[] = {0, 3, 0, 0};
    for (int k = 0; k < 4; k++) {
        memset(&mh, 0, sizeof mh);
        mh.n = tu_iters(1500);
        mh.fifo = kinds[k] == CONC_FIFO;
        mh.seen = calloc((size_t)(MH_PROD * mh.n), 1);
        cr_assert_not_null(mh.seen);
        cr_assert_eq(conc_queue_new(&mh.q, kinds[k], caps[k]), 0);
        static tu_bunch_t b;
        tu_bunch_start(&b, 4, mh_thread, NULL);
        conc_green_t *g[2];
        for (int i = 0; i < 2; i++)
            cr_assert_eq(conc_go(&g[i], mh_green, (void *)(intptr_t)(-1 - i)), 0);
        for (int i = 0; i < 2; i++) {
            cr_assert_eq(conc_green_join(g[i], 30.0), 0);
            conc_green_free(g[i]);
        }
        tu_bunch_join(&b);
        cr_assert_eq(atomic_load(&mh.bad), 0, "kind %d: bad %d", k, atomic_load(&mh.bad));
        cr_assert_eq(atomic_load(&mh.total), MH_PROD * mh.n);
        cr_assert_eq(conc_queue_qsize(mh.q), 0);
        cr_assert_eq(conc_queue_unfinished_tasks(mh.q), 0);
        cr_assert_eq(conc_queue_join(mh.q, 0), 0);
        cr_assert_eq(conc_queue_free(mh.q, NULL), 0);
        free(mh.seen);
    }
}

/* fork() with a green getter asleep on the queue: in the child (a copy of
 * the hub, the queue and the getter) a put hands the item to the child's
 * copy of the getter; the parent's getter gets the parent's item. */
Test(queue_green, handoff_in_a_forked_child, .timeout = TU_TIMEOUT)
{
    /* In the child TSan reports its own fiber bookkeeping (every switch
     * between the copied contexts, hand-off or not; see green_fork_test). */
    if (TU_TSAN)
        cr_skip_test("fork with green threads: TSan reports its own fiber bookkeeping in the child");
    conc_queue_t *q;
    cr_assert_eq(conc_queue_new(&q, CONC_FIFO, 0), 0);
    getter_t g = {.q = q, .timeout = 10.0};
    conc_green_t *h;
    cr_assert_eq(conc_go(&h, getter_fn, &g), 0);
    cr_assert_eq(conc_sleep(0), 0); /* it parks */
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int bad = conc_queue_put(q, PTR(41), true, CONC_FOREVER) != 0;
        bad |= (conc_queue_qsize(q) != 0) << 1;
        bad |= (conc_green_join(h, 10.0) != 0) << 2;
        bad |= (g.rc != 0 || INT(g.item) != 41) << 3;
        bad |= (conc_queue_unfinished_tasks(q) != 1) << 4;
        _exit(bad);
    }
    cr_assert_eq(conc_queue_put(q, PTR(42), true, CONC_FOREVER), 0);
    join_free(h);
    cr_assert_eq(g.rc, 0);
    cr_assert_eq(INT(g.item), 42);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
    cr_assert_eq(conc_queue_free(q, NULL), 0);
}
