/* Queue stress: N producers x M consumers on every discipline and storage
 * (bounded ring, tiny and big bounds, unbounded segments, stack, heap,
 * SimpleQueue), with blocking, timed and non-blocking calls mixed, ended by
 * shutdown (or sentinels for SimpleQueue). Every item must come out exactly
 * once (seen-bitmap, counts, sums), FIFO queues keep each producer's order
 * as seen by each consumer, and task_done/join totals must match.
 * Iterations scale with CONC_TEST_SCALE (sanitizer builds: 10%). */
#include "test_util.h"

#include <sched.h>

#define P(x) ((void *)(uintptr_t)(x))
#define U(p) ((uintptr_t)(p))
#define MAXT 8

typedef struct {
    conc_queue_t *q;
    conc_queue_kind_t kind;
    int np, nc;
    long per;            /* items per producer */
    bool sentinels;      /* end consumers with NULL items instead of shutdown */
    atomic_uchar *seen;  /* by value: 1 = got */
    atomic_uchar *putok; /* by value: 1 = put returned 0 */
    atomic_long got, got_sum, put_ok, put_sum, dup, bad, order, errors;
    atomic_int last_err;
    atomic_int producers_done;
    atomic_long timeouts, fulls, empties;
    bool stop_on_shutdown; /* producers: ESHUTDOWN ends them quietly */
} st_t;

static void st_err(st_t *s, int rc)
{
    atomic_store(&s->last_err, rc);
    atomic_fetch_add(&s->errors, 1);
}

static void producer(st_t *s, int p)
{
    for (long k = 0; k < s->per; k++) {
        uintptr_t v = (uintptr_t)p * (uintptr_t)s->per + (uintptr_t)k + 1;
        int rc;
        for (;;) {
            switch ((k + p) % 4) {
            case 0: rc = conc_queue_put(s->q, P(v), true, CONC_FOREVER); break;
            case 1: rc = conc_queue_put(s->q, P(v), true, 0.0005); break;
            case 2: rc = conc_queue_put_nowait(s->q, P(v)); break;
            default: rc = conc_queue_put(s->q, P(v), true, 20); break;
            }
            if (rc != CONC_EFULL)
                break;
            atomic_fetch_add(&s->fulls, 1);
            if ((k + p) % 4 == 2)
                sched_yield();
            if ((k + p) % 4 == 3) { /* 20 s timeout expired: something is stuck */
                st_err(s, rc);
                return;
            }
        }
        if (rc == CONC_ESHUTDOWN && s->stop_on_shutdown)
            break;
        if (rc != 0) {
            st_err(s, rc);
            break;
        }
        atomic_store(&s->putok[v], 1);
        atomic_fetch_add(&s->put_ok, 1);
        atomic_fetch_add(&s->put_sum, (long)v);
    }
    atomic_fetch_add(&s->producers_done, 1);
}

static void consumer(st_t *s, int c)
{
    long last[MAXT];
    for (int j = 0; j < MAXT; j++)
        last[j] = -1;
    bool ordered = s->kind == CONC_FIFO || s->kind == CONC_SIMPLE;
    uintptr_t maxv = (uintptr_t)s->np * (uintptr_t)s->per;
    for (long n = 0;; n++) {
        void *it = P(0xdead);
        int rc;
        switch ((c + n) % 3) {
        case 0: rc = conc_queue_get(s->q, &it, true, CONC_FOREVER); break;
        case 1: rc = conc_queue_get(s->q, &it, true, 0.001); break;
        default: rc = conc_queue_get_nowait(s->q, &it); break;
        }
        if (rc == CONC_EEMPTY) {
            atomic_fetch_add(&s->empties, 1);
            if ((c + n) % 3 == 2)
                sched_yield();
            continue;
        }
        if (rc == CONC_ESHUTDOWN)
            return;
        if (rc != 0) {
            st_err(s, rc);
            return;
        }
        uintptr_t v = U(it);
        if (v == 0 && s->sentinels)
            return;
        if (v == 0 || v > maxv) {
            atomic_fetch_add(&s->bad, 1);
            continue;
        }
        int p = (int)((v - 1) / (uintptr_t)s->per);
        long k = (long)((v - 1) % (uintptr_t)s->per);
        if (ordered) {
            if (k <= last[p])
                atomic_fetch_add(&s->order, 1);
            last[p] = k;
        }
        if (atomic_exchange(&s->seen[v], 1))
            atomic_fetch_add(&s->dup, 1);
        atomic_fetch_add(&s->got_sum, (long)v);
        atomic_fetch_add(&s->got, 1); /* before task_done: join must see it */
        if (s->kind != CONC_SIMPLE) {
            int r2 = conc_queue_task_done(s->q);
            if (r2 != 0)
                st_err(s, r2);
        }
    }
}

static void st_fn(void *p, int i)
{
    st_t *s = p;
    if (i < s->np)
        producer(s, i);
    else
        consumer(s, i - s->np);
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

/* Run np producers and nc consumers over total items; check everything. */
static void run(conc_queue_kind_t kind, long cap, int np, int nc, long total)
{
    static st_t s;
    static tu_bunch_t b;
    memset(&s, 0, sizeof s);
    s.kind = kind;
    s.np = np;
    s.nc = nc;
    s.per = total / np;
    if (s.per < 1)
        s.per = 1;
    long n = s.per * np;
    s.sentinels = kind == CONC_SIMPLE;
    s.seen = calloc((size_t)n + 1, 1);
    s.putok = calloc((size_t)n + 1, 1);
    cr_assert(s.seen && s.putok);
    cr_assert_eq(conc_queue_new(&s.q, kind, cap), 0);
    TU_TRACE("run %s cap %ld %dx%d n %ld", kname(kind), cap, np, nc, n);
    tu_bunch_start(&b, np + nc, st_fn, &s);

    /* wait for the producers, then join: every item taken and done */
    bool pdone = TU_WAIT_UNTIL(atomic_load(&s.producers_done) == np || atomic_load(&s.errors), 50);
    if (kind != CONC_SIMPLE && pdone && !atomic_load(&s.errors)) {
        int jr = conc_queue_join(s.q, 30);
        long got_at_join = atomic_load(&s.got);
        cr_assert_eq(jr, 0, "%s cap %ld %dx%d: join = %d with %ld of %ld items got", kname(kind), cap, np,
                     nc, jr, got_at_join, n);
        cr_assert_eq(got_at_join, n, "%s cap %ld %dx%d: join returned after %ld of %ld items", kname(kind),
                     cap, np, nc, got_at_join, n);
        cr_assert_eq(conc_queue_unfinished_tasks(s.q), 0);
    }
    /* end the consumers */
    if (s.sentinels) {
        for (int i = 0; i < nc; i++)
            cr_assert_eq(conc_queue_put(s.q, NULL, true, CONC_FOREVER), 0);
    } else {
        cr_assert_eq(conc_queue_shutdown(s.q, false, NULL), 0);
    }
    tu_bunch_join(&b);
    cr_assert(pdone, "%s cap %ld %dx%d: producers did not finish", kname(kind), cap, np, nc);
    cr_assert_eq(atomic_load(&s.errors), 0, "%s cap %ld %dx%d: %ld errors, last %d", kname(kind), cap, np,
                 nc, atomic_load(&s.errors), atomic_load(&s.last_err));
    cr_assert_eq(atomic_load(&s.bad), 0, "%s cap %ld %dx%d: a value never put came out", kname(kind), cap,
                 np, nc);
    cr_assert_eq(atomic_load(&s.dup), 0, "%s cap %ld %dx%d: %ld items came out twice", kname(kind), cap,
                 np, nc, atomic_load(&s.dup));
    cr_assert_eq(atomic_load(&s.order), 0, "%s cap %ld %dx%d: %ld order violations", kname(kind), cap, np,
                 nc, atomic_load(&s.order));
    cr_assert_eq(atomic_load(&s.put_ok), n);
    cr_assert_eq(atomic_load(&s.got), n, "%s cap %ld %dx%d: %ld of %ld items came out", kname(kind), cap,
                 np, nc, atomic_load(&s.got), n);
    cr_assert_eq(atomic_load(&s.got_sum), (long)(n * (n + 1) / 2));
    for (long v = 1; v <= n; v++)
        cr_assert(atomic_load(&s.seen[v]), "item %ld lost", v);
    cr_assert_eq(conc_queue_qsize(s.q), 0);
    if (kind != CONC_SIMPLE) {
        cr_assert_eq(conc_queue_unfinished_tasks(s.q), 0);
        cr_assert_eq(conc_queue_join(s.q, 0), 0);
        cr_assert_eq(conc_queue_task_done(s.q), CONC_EINVAL);
    }
    TU_TRACE("  fulls %ld empties %ld", atomic_load(&s.fulls), atomic_load(&s.empties));
    cr_assert_eq(conc_queue_free(s.q, NULL), 0);
    free(s.seen);
    free(s.putok);
}

static const int SHAPES[][2] = {{1, 1}, {2, 2}, {4, 4}, {1, 4}, {4, 1}};

static void run_shapes(conc_queue_kind_t kind, long cap, long total)
{
    for (size_t i = 0; i < sizeof SHAPES / sizeof SHAPES[0]; i++)
        run(kind, cap, SHAPES[i][0], SHAPES[i][1], tu_iters(total * 3));
}

Test(queue_stress, fifo_bounded_1, .timeout = TU_TIMEOUT) { run_shapes(CONC_FIFO, 1, 20000); }
Test(queue_stress, fifo_bounded_2, .timeout = TU_TIMEOUT) { run_shapes(CONC_FIFO, 2, 30000); }
Test(queue_stress, fifo_bounded_4, .timeout = TU_TIMEOUT) { run_shapes(CONC_FIFO, 4, 60000); }
Test(queue_stress, fifo_bounded_1024, .timeout = TU_TIMEOUT) { run_shapes(CONC_FIFO, 1024, 200000); }
Test(queue_stress, fifo_bounded_100000, .timeout = TU_TIMEOUT) { run_shapes(CONC_FIFO, 100000, 200000); }
Test(queue_stress, fifo_bounded_segments, .timeout = TU_TIMEOUT)
{
    /* a bound above the ring's limit with a small-ish working set */
    run_shapes(CONC_FIFO, 70000, 100000);
}
Test(queue_stress, fifo_unbounded, .timeout = TU_TIMEOUT) { run_shapes(CONC_FIFO, 0, 200000); }
Test(queue_stress, lifo_bounded_4, .timeout = TU_TIMEOUT) { run_shapes(CONC_LIFO, 4, 40000); }
Test(queue_stress, lifo_unbounded, .timeout = TU_TIMEOUT) { run_shapes(CONC_LIFO, 0, 100000); }
Test(queue_stress, priority_bounded_16, .timeout = TU_TIMEOUT) { run_shapes(CONC_PRIORITY, 16, 40000); }
Test(queue_stress, priority_unbounded, .timeout = TU_TIMEOUT) { run_shapes(CONC_PRIORITY, 0, 100000); }
Test(queue_stress, simple, .timeout = TU_TIMEOUT) { run_shapes(CONC_SIMPLE, 0, 200000); }

/* Shutdown in the middle of the stream: producers stop at ESHUTDOWN,
 * consumers drain and stop at ESHUTDOWN (plain) or find the rest discarded
 * (immediate). Every successful put comes out exactly once: got or
 * discarded; nothing else comes out; nothing is left behind. */
static atomic_uchar *disc_seen;
static atomic_long disc_count, disc_dup;

static void discard(void *item)
{
    uintptr_t v = U(item);
    atomic_fetch_add(&disc_count, 1);
    if (atomic_exchange(&disc_seen[v], 1))
        atomic_fetch_add(&disc_dup, 1);
}

static void run_shutdown(conc_queue_kind_t kind, long cap, int np, int nc, bool immediate, long total)
{
    static st_t s;
    static tu_bunch_t b;
    memset(&s, 0, sizeof s);
    s.kind = kind;
    s.np = np;
    s.nc = nc;
    s.per = total / np;
    if (s.per < 1)
        s.per = 1;
    long n = s.per * np;
    s.stop_on_shutdown = true;
    s.seen = calloc((size_t)n + 1, 1);
    s.putok = calloc((size_t)n + 1, 1);
    disc_seen = calloc((size_t)n + 1, 1);
    cr_assert(s.seen && s.putok && disc_seen);
    atomic_store(&disc_count, 0);
    atomic_store(&disc_dup, 0);
    cr_assert_eq(conc_queue_new(&s.q, kind, cap), 0);
    tu_bunch_start(&b, np + nc, st_fn, &s);
    /* shut down when about half the items went through */
    TU_WAIT_UNTIL(atomic_load(&s.put_ok) >= n / 2 || atomic_load(&s.producers_done) == np, 30);
    cr_assert_eq(conc_queue_shutdown(s.q, immediate, discard), 0);
    tu_bunch_join(&b);
    const char *mode = immediate ? "immediate" : "plain";
    cr_assert_eq(atomic_load(&s.errors), 0, "%s cap %ld %dx%d %s: %ld errors, last %d", kname(kind), cap,
                 np, nc, mode, atomic_load(&s.errors), atomic_load(&s.last_err));
    cr_assert_eq(atomic_load(&s.bad), 0);
    cr_assert_eq(atomic_load(&s.dup), 0);
    cr_assert_eq(atomic_load(&disc_dup), 0);
    cr_assert_eq(atomic_load(&s.order), 0);
    if (!immediate)
        cr_assert_eq(atomic_load(&disc_count), 0);
    size_t left = conc_queue_qsize(s.q);
    cr_assert_eq(atomic_load(&s.put_ok), atomic_load(&s.got) + atomic_load(&disc_count),
                 "%s cap %ld %dx%d %s: put %ld = got %ld + discarded %ld fails (%zu left in the queue)",
                 kname(kind), cap, np, nc, mode, atomic_load(&s.put_ok), atomic_load(&s.got),
                 atomic_load(&disc_count), left);
    for (long v = 1; v <= n; v++) {
        int put = atomic_load(&s.putok[v]), out = atomic_load(&s.seen[v]) + atomic_load(&disc_seen[v]);
        cr_assert_eq(out, put, "%s cap %ld %dx%d %s: item %ld put %d, came out %d times", kname(kind), cap,
                     np, nc, mode, v, put, out);
    }
    cr_assert_eq(left, 0);
    if (kind != CONC_SIMPLE) {
        cr_assert_eq(conc_queue_unfinished_tasks(s.q), 0);
        cr_assert_eq(conc_queue_join(s.q, 0), 0);
    }
    cr_assert_eq(conc_queue_free(s.q, NULL), 0);
    free(s.seen);
    free(s.putok);
    free(disc_seen);
}

Test(queue_stress, shutdown_midstream, .timeout = TU_TIMEOUT)
{
    conc_queue_kind_t kinds[] = {CONC_FIFO, CONC_LIFO, CONC_PRIORITY};
    long caps[] = {4, 1024, 0};
    for (int k = 0; k < 3; k++)
        for (int c = 0; c < 3; c++)
            for (int imm = 0; imm < 2; imm++)
                for (int r = 0; r < 4; r++) {
                    if (r == 0) /* one producer, one consumer: a ring's owner paths; close revokes */
                        run_shutdown(kinds[k], caps[c], 1, 1, imm, tu_iters(20000));
                    run_shutdown(kinds[k], caps[c], 2, 2, imm, tu_iters(20000));
                    run_shutdown(kinds[k], caps[c], 4, 3, imm, tu_iters(20000));
                }
}

/* Python's SimpleQueue many-threads test: feeders that sometimes pause,
 * consumers that block, poll, or poll with tiny timeouts; the results are
 * the inputs, each once. (run() covers it; here with more threads than
 * cores and a sleepy feeder, as in test_queue.py.) */
typedef struct {
    conc_queue_t *q;
    long n;
    atomic_long next, got, sum;
    atomic_uchar *seen;
    atomic_long dup;
    int nc;
} feed_t;

static void feed_fn(void *p, int i)
{
    feed_t *f = p;
    if (i < 2) {
        unsigned seed = (unsigned)i * 77u + 1u;
        for (;;) {
            long v = atomic_fetch_add(&f->next, 1) + 1;
            if (v > f->n)
                break;
            conc_queue_put(f->q, P(v), true, CONC_FOREVER);
            seed = seed * 1103515245u + 12345u;
            if ((seed >> 16) % 2)
                tu_sleep((double)((seed >> 8) % 100) * 1e-6);
        }
        return;
    }
    for (long n = 0;; n++) {
        void *it;
        int rc = i % 3 == 0   ? conc_queue_get(f->q, &it, true, CONC_FOREVER)
                 : i % 3 == 1 ? conc_queue_get(f->q, &it, false, 0)
                              : conc_queue_get(f->q, &it, true, 1e-5);
        if (rc == CONC_EEMPTY) {
            if (i % 3 == 1)
                tu_sleep(1e-5);
            continue;
        }
        if (rc != 0 || it == NULL)
            return;
        if (atomic_exchange(&f->seen[U(it)], 1))
            atomic_fetch_add(&f->dup, 1);
        atomic_fetch_add(&f->got, 1);
        atomic_fetch_add(&f->sum, (long)U(it));
    }
}

Test(queue_stress, simplequeue_many_threads, .timeout = TU_TIMEOUT)
{
    static feed_t f;
    static tu_bunch_t b;
    memset(&f, 0, sizeof f);
    f.n = tu_iters(20000);
    f.nc = 6;
    f.seen = calloc((size_t)f.n + 1, 1);
    cr_assert_eq(conc_queue_new(&f.q, CONC_SIMPLE, 0), 0);
    tu_bunch_start(&b, 2 + f.nc, feed_fn, &f);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&f.got) == f.n, 50), "%ld of %ld items came out",
              atomic_load(&f.got), f.n);
    for (int i = 0; i < f.nc; i++)
        cr_assert_eq(conc_queue_put(f.q, NULL, true, CONC_FOREVER), 0);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&f.dup), 0);
    cr_assert_eq(atomic_load(&f.got), f.n);
    cr_assert_eq(atomic_load(&f.sum), f.n * (f.n + 1) / 2);
    cr_assert_eq(conc_queue_qsize(f.q), 0);
    cr_assert_eq(conc_queue_free(f.q, NULL), 0);
    free(f.seen);
}

/* A ring's sides handed over mid-stream (ring.c, owner paths): producer A
 * and consumer C run alone (each owns its side, plain ticket stores), then
 * producer B and consumer D join while A and C keep going (each revokes a
 * side: membarrier, wait for the owner's operation, CAS path from then
 * on). Blocking, timed and nowait calls mixed; every item comes out once,
 * each producer's items in order for each consumer, nothing left over. */
typedef struct {
    conc_queue_t *q;
    long per;
    atomic_long put_a, got_c, got, sum, bad, errors;
    atomic_int producers_done;
} ho_t;

static int ho_put(ho_t *h, uintptr_t v, long k)
{
    for (;;) {
        int rc = (k & 3) == 0   ? conc_queue_put_nowait(h->q, P(v))
                 : (k & 3) == 1 ? conc_queue_put(h->q, P(v), true, 0.0005)
                                : conc_queue_put(h->q, P(v), true, 20);
        if (rc != CONC_EFULL || (k & 3) == 3)
            return rc;
        if ((k & 3) == 0)
            sched_yield();
    }
}

static void ho_fn(void *arg, int i)
{
    ho_t *h = arg;
    if (i < 2) { /* producers: 0 = A, 1 = B (starts when A is halfway) */
        if (i == 1)
            while (atomic_load(&h->put_a) < h->per / 2)
                sched_yield();
        for (long k = 0; k < h->per; k++) {
            if (ho_put(h, ((uintptr_t)i << 32) | (uintptr_t)(k + 1), k) != 0) {
                atomic_fetch_add(&h->errors, 1);
                break;
            }
            if (i == 0)
                atomic_fetch_add(&h->put_a, 1);
        }
        atomic_fetch_add(&h->producers_done, 1);
        return;
    }
    /* consumers: 2 = C, 3 = D (starts when C took a quarter) */
    if (i == 3)
        while (atomic_load(&h->got_c) < h->per / 4 && atomic_load(&h->producers_done) < 2)
            sched_yield();
    uintptr_t last[2] = {0, 0};
    for (long k = 0;; k++) {
        void *it;
        int rc = (k & 3) == 0   ? conc_queue_get_nowait(h->q, &it)
                 : (k & 3) == 1 ? conc_queue_get(h->q, &it, true, 0.0005)
                                : conc_queue_get(h->q, &it, true, 20);
        if (rc == CONC_EEMPTY && (k & 3) != 3)
            continue;
        if (rc == CONC_ESHUTDOWN)
            return;
        if (rc != 0) {
            atomic_fetch_add(&h->errors, 1);
            return;
        }
        uintptr_t v = U(it), p = v >> 32, n = v & 0xffffffffu;
        if (p > 1 || n <= last[p])
            atomic_fetch_add(&h->bad, 1);
        else
            last[p] = n;
        atomic_fetch_add(&h->sum, (long)n);
        atomic_fetch_add(&h->got, 1);
        if (i == 2)
            atomic_fetch_add(&h->got_c, 1);
    }
}

Test(queue_stress, ring_owner_handover_midstream, .timeout = TU_TIMEOUT)
{
    static ho_t h;
    static tu_bunch_t b;
    long caps[] = {2, 3, 64};
    int rounds = TU_SANITIZED ? 3 : 12;
    for (int r = 0; r < rounds; r++) {
        long cap = caps[r % 3];
        memset(&h, 0, sizeof h);
        h.per = tu_iters(20000);
        cr_assert_eq(conc_queue_new(&h.q, CONC_FIFO, cap), 0);
        tu_bunch_start(&b, 4, ho_fn, &h);
        cr_assert(TU_WAIT_UNTIL(atomic_load(&h.producers_done) == 2, 30), "producers stuck (cap %ld)", cap);
        cr_assert(TU_WAIT_UNTIL(atomic_load(&h.got) == 2 * h.per || atomic_load(&h.errors), 30),
                  "cap %ld: %ld of %ld items came out", cap, atomic_load(&h.got), 2 * h.per);
        cr_assert_eq(conc_queue_shutdown(h.q, false, NULL), 0);
        tu_bunch_join(&b);
        cr_assert_eq(atomic_load(&h.errors), 0, "cap %ld", cap);
        cr_assert_eq(atomic_load(&h.bad), 0, "cap %ld: out of order", cap);
        cr_assert_eq(atomic_load(&h.got), 2 * h.per);
        cr_assert_eq(atomic_load(&h.sum), h.per * (h.per + 1));
        cr_assert_eq(conc_queue_qsize(h.q), 0);
        cr_assert_eq(conc_queue_unfinished_tasks(h.q), (size_t)(2 * h.per));
        cr_assert_eq(conc_queue_free(h.q, NULL), 0);
    }
}
