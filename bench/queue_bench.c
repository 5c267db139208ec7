/*
 * bench/queue_bench.c — the queue module's benchmark (issue 3): conc's
 * Queue, SimpleQueue and PriorityQueue against the queues a C, C++ or
 * Python programmer would otherwise use, in the same run.
 *
 * Rows (items/s, higher is better; pointer-sized items; see bench/README.md):
 *   queue.1p1c          1 producer, 1 consumer, 2M items, capacity 1024
 *                       conc moodycamel moodycamel_unbounded moodycamel_spsc
 *                       ck_spsc ck_mpmc gasyncqueue gasyncqueue_unbounded
 *                       tbb python
 *   queue.2p2c          2 producers, 2 consumers, 2M items in all
 *                       conc moodycamel moodycamel_unbounded ck_mpmc
 *                       gasyncqueue gasyncqueue_unbounded tbb python
 *   simplequeue.1p1c    unbounded, 1 producer, 1 consumer, 2M items
 *                       conc python
 *   priorityqueue.1p1c  capacity 1024, random priorities, 1M items
 *                       conc python
 *
 * The impls:
 *   conc         conc_queue_new(&q, CONC_FIFO, 1024), conc_queue_put /
 *                conc_queue_get with block=true, CONC_FOREVER (CONC_SIMPLE
 *                and CONC_PRIORITY with (void *)(uintptr_t)priority items
 *                for the other rows)
 *   moodycamel   moodycamel::BlockingConcurrentQueue (unbounded by nature)
 *                bounded to 1024 by moodycamel's own LightweightSemaphore
 *                counting free slots; see bench/queue_peers.cpp
 *   gasyncqueue  GLib's GAsyncQueue (unbounded by nature) bounded to 1024
 *                by a counting semaphore of free slots made of GLib parts:
 *                a g_atomic_int counter, and a GMutex + GCond only when a
 *                producer must sleep (see gbq_put below)
 *   tbb          tbb::concurrent_bounded_queue, set_capacity(1024), push/pop
 *
 * The peers at their best (issue 18): where an impl above adds something
 * to match conc's semantics (bounded, blocking), the unmodified peer runs
 * beside it and the targets take the faster of the two:
 *   moodycamel_unbounded  BlockingConcurrentQueue as documented: unbounded,
 *                producer/consumer tokens, enqueue / wait_dequeue
 *   moodycamel_spsc  moodycamel's BlockingReaderWriterCircularBuffer(1024),
 *                bounded single-producer single-consumer (1p1c only)
 *   ck_spsc      Concurrency Kit's ck_ring, ck_ring_enqueue_spsc /
 *                ck_ring_dequeue_spsc on a 1024-slot ring (1023 items):
 *                non-blocking, so a full or empty ring is waited out by
 *                spinning (pause; sched_yield every 64 spins) (1p1c only)
 *   ck_mpmc      the same ring with ck_ring_enqueue_mpmc / _dequeue_mpmc
 *   gasyncqueue_unbounded  a plain GAsyncQueue: g_async_queue_push / _pop
 *   python       bench/queue_python.py: queue.Queue(1024), queue.SimpleQueue,
 *                queue.PriorityQueue(1024) with CPython threads (1M items for
 *                the FIFO rows, fewer for the others; values are per second)
 *
 * Every run: the threads start behind a spinning gate; the time runs from
 * opening it to the last thread finishing. Producer p of P puts the values
 * p+1, p+1+P, p+1+2P, ... (never 0: GAsyncQueue refuses NULL); each
 * consumer takes exactly total/C items (it counts; no sentinel, no timing)
 * and adds up the values and their squares. A run passes only when those
 * sums equal what was put, every call returned success and, for the FIFO
 * rows, each consumer saw each producer's items in increasing order. A run
 * making no progress for 60 s (a lost item would leave a consumer waiting
 * forever) is reported and the program exits with status 1.
 *
 * Method as in sync_bench.c: one discarded warm-up run per impl (with a
 * quarter of the items), then the repetitions interleaved with the order
 * rotated each time; medians. Unlike sync_bench.c, the Python peer takes
 * part in the rotation: it is started once per repetition (each start warms
 * up on a tenth of the items, then measures one run), so load changes on a
 * shared machine hit it and the C impls alike.
 *
 * Usage: queue_bench [--reps N] [--scale F] [--only row,row] [--impls a,b] [--jsonl FILE]
 *                    [--python PYTHON --python-script queue_python.py] [--list]
 */
#define _GNU_SOURCE
#include "bench_util.h"
#include "bench_gate.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

#include "conc/base.h"
#include "conc/queue.h"

#include "queue_peers.h"
#ifndef CONC_BENCH_HAVE_QPEERS
/* bench/queue_peers.cpp was not built (no C++ compiler): the C++ peers
 * report themselves unavailable and are skipped. */
int qpeer_available(int kind, char *why, size_t whylen)
{
    (void)kind;
    snprintf(why, whylen, "not built: CMake found no C++ compiler for bench/queue_peers.cpp");
    return 0;
}
qpeer_t *qpeer_new(int kind, long capacity, char *why, size_t whylen)
{
    (void)capacity;
    qpeer_available(kind, why, whylen);
    return NULL;
}
void qpeer_free(qpeer_t *q) { (void)q; }
int qpeer_produce(qpeer_t *q, uintptr_t first, uintptr_t stride, long n)
{
    (void)q, (void)first, (void)stride, (void)n;
    return -1;
}
int qpeer_consume(qpeer_t *q, long n, int nprod, uint64_t *sum, uint64_t *sumsq, long *progress)
{
    (void)q, (void)n, (void)nprod, (void)sum, (void)sumsq, (void)progress;
    return -1;
}
#endif

#ifdef CONC_BENCH_HAVE_GLIB
#include <glib.h>
#endif
#ifdef CONC_BENCH_HAVE_CK
#include <ck_ring.h>
#endif

enum {
    IMPL_CONC,
    IMPL_MOODYCAMEL,
    IMPL_MOODY_UNB,
    IMPL_MOODY_SPSC,
    IMPL_CK_SPSC,
    IMPL_CK_MPMC,
    IMPL_GASYNC,
    IMPL_GASYNC_UNB,
    IMPL_TBB,
    IMPL_PYTHON,
    NIMPLS
};
static const char *impl_names[] = {"conc",    "moodycamel", "moodycamel_unbounded", "moodycamel_spsc",
                                   "ck_spsc", "ck_mpmc",    "gasyncqueue",          "gasyncqueue_unbounded",
                                   "tbb",     "python"};

/* the qpeer kind (bench/queue_peers.h) of a C++ impl, or -1 */
static int qpeer_kind(int impl)
{
    switch (impl) {
    case IMPL_MOODYCAMEL:
        return QPEER_MOODYCAMEL;
    case IMPL_MOODY_UNB:
        return QPEER_MOODYCAMEL_UNBOUNDED;
    case IMPL_MOODY_SPSC:
        return QPEER_MOODYCAMEL_SPSC;
    case IMPL_TBB:
        return QPEER_TBB;
    }
    return -1;
}

#define CAPACITY 1024
#define MAX_THREADS 32 /* bench/scaling_queue.c runs up to 16p16c through run_queue */
#define STALL_SECONDS 60.0
/* Items per run. Issue 3 says 10M; 2M keeps a full run (7 reps + warm-up,
 * four impls, two rows, plus the Python peer) near 3 minutes on a loaded
 * 2-core machine, where the slowest peers move 0.7-1.5M items/s (4M took
 * 264 s at load average 5-11). Every value is per second, so only the
 * noise changes; --scale 5 does the 10M. */
#define QUEUE_ITEMS 2000000L
#define PRIORITY_ITEMS 1000000L

static int opt_reps = 7;
static double opt_scale = 1.0;
static const char *opt_only;
static const char *opt_impls; /* --impls a,b: only these (e.g. to profile one) */
static const char *opt_jsonl;
static const char *opt_python;
static const char *opt_python_script;

static bool g_warmup; /* the discarded warm-up run does a quarter of the work */

static long scaled(long n)
{
    long v = (long)((double)n * opt_scale * (g_warmup ? 0.25 : 1.0));
    return v < 1 ? 1 : v;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("pause");
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#define FAIL(...) (snprintf(why, whylen, __VA_ARGS__), NAN)

/* ck_ring never blocks: a full or empty ring is waited out here. */
static inline void spin_wait(unsigned *k)
{
    if (++*k < 64) {
        cpu_relax();
    } else {
        *k = 0;
        sched_yield();
    }
}

/* ------------------------------------------- GAsyncQueue, bounded to 1024 */

#ifdef CONC_BENCH_HAVE_GLIB
/* A counting semaphore of free slots around an unbounded GAsyncQueue.
 * `free` counts free slots; below zero it counts producers that are (or
 * are about to be) asleep. A producer takes a slot with one atomic
 * decrement; only when there was none does it sleep on the GCond until a
 * consumer hands it a token. A consumer gives a slot back with one atomic
 * increment and takes the mutex only when someone waits for it. */
typedef struct gbq {
    GAsyncQueue *q;
    gint free;
    GMutex m;
    GCond c;
    long tokens;
} gbq_t;

static void gbq_init(gbq_t *b, int capacity)
{
    b->q = g_async_queue_new();
    b->free = capacity;
    g_mutex_init(&b->m);
    g_cond_init(&b->c);
    b->tokens = 0;
}

static void gbq_clear(gbq_t *b)
{
    g_async_queue_unref(b->q);
    g_mutex_clear(&b->m);
    g_cond_clear(&b->c);
}

static inline void gbq_put(gbq_t *b, void *item)
{
    if (g_atomic_int_add(&b->free, -1) <= 0) {
        g_mutex_lock(&b->m);
        while (b->tokens == 0)
            g_cond_wait(&b->c, &b->m);
        b->tokens--;
        g_mutex_unlock(&b->m);
    }
    g_async_queue_push(b->q, item);
}

static inline void *gbq_get(gbq_t *b)
{
    void *item = g_async_queue_pop(b->q);
    if (g_atomic_int_add(&b->free, 1) < 0) {
        g_mutex_lock(&b->m);
        b->tokens++;
        g_cond_signal(&b->c);
        g_mutex_unlock(&b->m);
    }
    return item;
}
#endif

/* ------------------------------------------------------- one measured run */

enum row_kind { ROW_FIFO, ROW_SIMPLE, ROW_PRIORITY };

/* Priorities for priorityqueue.1p1c: xorshift64*, 31-bit values + 1. */
static inline uint64_t prio_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return ((x * 0x2545F4914F6CDD1DULL) >> 33) + 1;
}

static uint64_t prio_seed(int producer)
{
    return 0x9E3779B97F4A7C15ULL * (uint64_t)(producer + 1) ^ 0xD1B54A32D192ED03ULL;
}

static struct {
    bench_gate_t gate;
    int impl;
    enum row_kind kind;
    int nprod, ncons;
    long per_prod, per_cons;
    conc_queue_t *cq;
    qpeer_t *pq;
#ifdef CONC_BENCH_HAVE_GLIB
    gbq_t gq;
#endif
#ifdef CONC_BENCH_HAVE_CK
    ck_ring_t ck;
    ck_ring_buffer_t ckbuf[CAPACITY];
#endif
    atomic_uint_least64_t sum, sumsq;
    atomic_int finished;
    long progress;        /* bumped (__atomic) by consumers every 64k items: stall check */
    atomic_int err;       /* first error code seen (nonzero) */
    atomic_int disorder;  /* a consumer saw a producer's items out of order */
    double end[MAX_THREADS];
} R;

static void note_err(int code)
{
    int zero = 0;
    atomic_compare_exchange_strong(&R.err, &zero, code ? code : -9999);
}

/* The C peers' producer loop: PUT(v) puts the next item v (a blocking put,
 * or a spin until the ring takes it). */
#define PRODUCE_EACH(PUT)                                                                \
    for (long i = 0; i < n; i++, v += stride)                                            \
        PUT

static void *producer(void *arg)
{
    int p = (int)(intptr_t)arg, id = p;
    long n = R.per_prod;
    uintptr_t stride = (uintptr_t)R.nprod, v = (uintptr_t)p + 1;
    int err = 0;
    bench_gate_arrive(&R.gate, false);
    switch (R.impl) {
    case IMPL_CONC:
        if (R.kind == ROW_PRIORITY) {
            uint64_t s = prio_seed(p);
            for (long i = 0; i < n; i++) {
                err = conc_queue_put(R.cq, (void *)(uintptr_t)prio_next(&s), true, CONC_FOREVER);
                if (err)
                    break;
            }
        } else {
            for (long i = 0; i < n; i++, v += stride) {
                err = conc_queue_put(R.cq, (void *)v, true, CONC_FOREVER);
                if (err)
                    break;
            }
        }
        break;
    case IMPL_MOODYCAMEL:
    case IMPL_MOODY_UNB:
    case IMPL_MOODY_SPSC:
    case IMPL_TBB:
        err = qpeer_produce(R.pq, v, stride, n);
        break;
#ifdef CONC_BENCH_HAVE_CK
    case IMPL_CK_SPSC:
        PRODUCE_EACH(for (unsigned k = 0; !ck_ring_enqueue_spsc(&R.ck, R.ckbuf, (void *)v);)
                         spin_wait(&k));
        break;
    case IMPL_CK_MPMC:
        PRODUCE_EACH(for (unsigned k = 0; !ck_ring_enqueue_mpmc(&R.ck, R.ckbuf, (void *)v);)
                         spin_wait(&k));
        break;
#endif
#ifdef CONC_BENCH_HAVE_GLIB
    case IMPL_GASYNC:
        PRODUCE_EACH(gbq_put(&R.gq, (void *)v));
        break;
    case IMPL_GASYNC_UNB:
        PRODUCE_EACH(g_async_queue_push(R.gq.q, (void *)v));
        break;
#endif
    default:
        err = -9998;
    }
    R.end[id] = bench_now();
    if (err)
        note_err(err);
    atomic_fetch_add(&R.finished, 1);
    return NULL;
}

/* The consumer's per-item check, kept identical for the C impls. */
#define SEE(x)                                                                           \
    do {                                                                                 \
        uintptr_t x_ = (uintptr_t)(x);                                                   \
        sum += x_;                                                                       \
        sumsq += (uint64_t)x_ * x_;                                                      \
        if (order) {                                                                     \
            uintptr_t *l_ = &last[x_ % (uintptr_t)nprod];                                \
            bad |= x_ <= *l_;                                                            \
            *l_ = x_;                                                                    \
        }                                                                                \
    } while (0)

/* The C peers' consumer loop: GET stores the next item in `item`; each is
 * seen (SEE) and progress is bumped every 64k items. */
#define CONSUME_EACH(GET)                                                                \
    for (long i = 0; i < n; i++) {                                                       \
        GET;                                                                             \
        SEE(item);                                                                       \
        if ((i & 0xffff) == 0)                                                           \
            __atomic_fetch_add(&R.progress, 1, __ATOMIC_RELAXED);                        \
    }

static void *consumer(void *arg)
{
    int c = (int)(intptr_t)arg, id = R.nprod + c;
    long n = R.per_cons;
    int nprod = R.nprod, err = 0, bad = 0;
    bool order = R.kind != ROW_PRIORITY;
    uintptr_t last[MAX_THREADS] = {0};
    uint64_t sum = 0, sumsq = 0;
    void *item;
    bench_gate_arrive(&R.gate, false);
    switch (R.impl) {
    case IMPL_CONC:
        for (long i = 0; i < n; i++) {
            err = conc_queue_get(R.cq, &item, true, CONC_FOREVER);
            if (err)
                break;
            SEE(item);
            if ((i & 0xffff) == 0)
                __atomic_fetch_add(&R.progress, 1, __ATOMIC_RELAXED);
        }
        break;
    case IMPL_MOODYCAMEL:
    case IMPL_MOODY_UNB:
    case IMPL_MOODY_SPSC:
    case IMPL_TBB:
        /* the C++ loop checks the order itself (nprod > 0) */
        err = qpeer_consume(R.pq, n, order ? nprod : 0, &sum, &sumsq, &R.progress);
        if (err == -2) {
            bad = 1;
            err = 0;
        }
        break;
#ifdef CONC_BENCH_HAVE_CK
    case IMPL_CK_SPSC:
    case IMPL_CK_MPMC: {
        bool sp = R.impl == IMPL_CK_SPSC;
        CONSUME_EACH(for (unsigned k = 0; !(sp ? ck_ring_dequeue_spsc(&R.ck, R.ckbuf, &item)
                                               : ck_ring_dequeue_mpmc(&R.ck, R.ckbuf, &item));)
                         spin_wait(&k));
        break;
    }
#endif
#ifdef CONC_BENCH_HAVE_GLIB
    case IMPL_GASYNC:
        CONSUME_EACH(item = gbq_get(&R.gq));
        break;
    case IMPL_GASYNC_UNB:
        CONSUME_EACH(item = g_async_queue_pop(R.gq.q));
        break;
#endif
    default:
        err = -9998;
    }
    R.end[id] = bench_now();
    atomic_fetch_add(&R.sum, sum);
    atomic_fetch_add(&R.sumsq, sumsq);
    if (bad)
        atomic_store(&R.disorder, 1);
    if (err)
        note_err(err);
    atomic_fetch_add(&R.finished, 1);
    return NULL;
}

static const char *err_name(int impl, int code)
{
    static char buf[64];
    if (code == -9999 || code == -9998)
        return "internal error";
    if (impl == IMPL_CONC)
        return conc_errname(code);
    snprintf(buf, sizeof buf, "error %d", code);
    return buf;
}

/* One run of `total` items through nprod producers and ncons consumers.
 * Returns items/s, or NAN with the reason in why. */
static double run_queue(int impl, enum row_kind kind, int nprod, int ncons, long total, char *why,
                        size_t whylen)
{
    pthread_t th[MAX_THREADS];
    int nth = nprod + ncons, started = 0;
    long unit = (long)nprod * ncons;
    total = total / unit * unit;
    if (total < unit)
        total = unit;

    memset(R.end, 0, sizeof R.end);
    R.impl = impl;
    R.kind = kind;
    R.nprod = nprod;
    R.ncons = ncons;
    R.per_prod = total / nprod;
    R.per_cons = total / ncons;
    R.cq = NULL;
    R.pq = NULL;
    atomic_store(&R.sum, 0);
    atomic_store(&R.sumsq, 0);
    atomic_store(&R.finished, 0);
    __atomic_store_n(&R.progress, 0, __ATOMIC_RELAXED);
    atomic_store(&R.err, 0);
    atomic_store(&R.disorder, 0);
    bench_gate_reset(&R.gate);

    /* what the consumers must add up to */
    uint64_t want_sum = 0, want_sumsq = 0;
    for (int p = 0; p < nprod; p++) {
        uint64_t s = prio_seed(p);
        uintptr_t v = (uintptr_t)p + 1;
        for (long i = 0; i < R.per_prod; i++, v += (uintptr_t)nprod) {
            uint64_t x = kind == ROW_PRIORITY ? prio_next(&s) : (uint64_t)v;
            want_sum += x;
            want_sumsq += x * x;
        }
    }

    switch (impl) {
    case IMPL_CONC: {
        int rc = kind == ROW_PRIORITY ? conc_queue_new(&R.cq, CONC_PRIORITY, CAPACITY)
                 : kind == ROW_SIMPLE ? conc_queue_new(&R.cq, CONC_SIMPLE, 0)
                                      : conc_queue_new(&R.cq, CONC_FIFO, CAPACITY);
        if (rc != 0)
            return FAIL("conc_queue_new: %s", conc_errname(rc));
        break;
    }
    case IMPL_MOODYCAMEL:
    case IMPL_MOODY_UNB:
    case IMPL_MOODY_SPSC:
    case IMPL_TBB:
        R.pq = qpeer_new(qpeer_kind(impl), CAPACITY, why, whylen);
        if (!R.pq)
            return NAN;
        break;
#ifdef CONC_BENCH_HAVE_CK
    case IMPL_CK_SPSC:
    case IMPL_CK_MPMC:
        memset(R.ckbuf, 0, sizeof R.ckbuf);
        ck_ring_init(&R.ck, CAPACITY);
        break;
#endif
#ifdef CONC_BENCH_HAVE_GLIB
    case IMPL_GASYNC:
    case IMPL_GASYNC_UNB:
        gbq_init(&R.gq, CAPACITY);
        break;
#endif
    default:
        return FAIL("impl not built in");
    }

    for (int i = 0; i < nth; i++) {
        void *(*fn)(void *) = i < nprod ? producer : consumer;
        intptr_t arg = i < nprod ? i : i - nprod;
        if (pthread_create(&th[i], NULL, fn, (void *)arg) != 0) {
            /* cannot happen in practice; the started threads would wait
             * at the gate forever, so give up on the whole program */
            fprintf(stderr, "queue_bench: pthread_create failed\n");
            exit(1);
        }
        started++;
    }
    double t0 = bench_gate_open(&R.gate, started);

    /* Wait for the workers; they time themselves, so polling is cheap.
     * A queue that lost an item would leave a consumer waiting forever. */
    long seen = -1;
    double last_move = bench_now();
    while (atomic_load(&R.finished) < nth) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
        long pr = __atomic_load_n(&R.progress, __ATOMIC_RELAXED) + 1000000L * atomic_load(&R.finished);
        double now = bench_now();
        if (pr != seen) {
            seen = pr;
            last_move = now;
        } else if (now - last_move > STALL_SECONDS) {
            fflush(stdout);
            fprintf(stderr,
                    "queue_bench: %s with %d producer(s) / %d consumer(s), %ld items: no progress for "
                    "%.0f s (%d of %d threads finished; an item lost or a waiter never woken?). "
                    "Giving up.\n",
                    impl_names[impl], nprod, ncons, total, STALL_SECONDS, atomic_load(&R.finished), nth);
            if (impl == IMPL_CONC && R.cq)
                fprintf(stderr, "queue_bench: conc_queue_qsize says %zu\n", conc_queue_qsize(R.cq));
            _exit(1);
        }
    }
    for (int i = 0; i < nth; i++)
        pthread_join(th[i], NULL);
    double t1 = 0;
    for (int i = 0; i < nth; i++)
        if (R.end[i] > t1)
            t1 = R.end[i];

    int leftover = 0;
    switch (impl) {
    case IMPL_CONC: {
        void *x;
        leftover = conc_queue_get_nowait(R.cq, &x) == 0;
        int rc = conc_queue_free(R.cq, NULL);
        if (rc != 0 && !atomic_load(&R.err))
            note_err(rc);
        break;
    }
    case IMPL_MOODYCAMEL:
    case IMPL_MOODY_UNB:
    case IMPL_MOODY_SPSC:
    case IMPL_TBB:
        qpeer_free(R.pq);
        break;
#ifdef CONC_BENCH_HAVE_CK
    case IMPL_CK_SPSC:
    case IMPL_CK_MPMC: {
        void *x;
        leftover = ck_ring_dequeue_mpmc(&R.ck, R.ckbuf, &x);
        break;
    }
#endif
#ifdef CONC_BENCH_HAVE_GLIB
    case IMPL_GASYNC:
    case IMPL_GASYNC_UNB:
        leftover = g_async_queue_length(R.gq.q) != 0;
        gbq_clear(&R.gq);
        break;
#endif
    }

    int err = atomic_load(&R.err);
    if (err)
        return FAIL("a put/get returned %s", err_name(impl, err));
    if (atomic_load(&R.sum) != want_sum || atomic_load(&R.sumsq) != want_sumsq)
        return FAIL("checksum mismatch: got sum %llu, put %llu (items lost, duplicated or corrupted)",
                    (unsigned long long)atomic_load(&R.sum), (unsigned long long)want_sum);
    if (atomic_load(&R.disorder))
        return FAIL("a consumer got a producer's items out of FIFO order");
    if (leftover)
        return FAIL("items left in the queue after every item was consumed");
    return (double)total / (t1 - t0);
}

/* ------------------------------------------------------------------ rows */

static double queue_1p1c(int impl, char *why, size_t whylen)
{
    return run_queue(impl, ROW_FIFO, 1, 1, scaled(QUEUE_ITEMS), why, whylen);
}

static double queue_2p2c(int impl, char *why, size_t whylen)
{
    return run_queue(impl, ROW_FIFO, 2, 2, scaled(QUEUE_ITEMS), why, whylen);
}

static double simplequeue_1p1c(int impl, char *why, size_t whylen)
{
    return run_queue(impl, ROW_SIMPLE, 1, 1, scaled(QUEUE_ITEMS), why, whylen);
}

static double priorityqueue_1p1c(int impl, char *why, size_t whylen)
{
    return run_queue(impl, ROW_PRIORITY, 1, 1, scaled(PRIORITY_ITEMS), why, whylen);
}

/* ------------------------------------------------------------- driver */

typedef double (*measure_fn)(int impl, char *why, size_t whylen);

typedef struct rowdef {
    const char *name;
    measure_fn fn;
    int impls[NIMPLS];
    int nimpls;
} rowdef_t;

static const rowdef_t rowdefs[] = {
    {"queue.1p1c",
     queue_1p1c,
     {IMPL_CONC, IMPL_MOODYCAMEL, IMPL_MOODY_UNB, IMPL_MOODY_SPSC, IMPL_CK_SPSC, IMPL_CK_MPMC, IMPL_GASYNC,
      IMPL_GASYNC_UNB, IMPL_TBB, IMPL_PYTHON},
     10},
    {"queue.2p2c",
     queue_2p2c,
     {IMPL_CONC, IMPL_MOODYCAMEL, IMPL_MOODY_UNB, IMPL_CK_MPMC, IMPL_GASYNC, IMPL_GASYNC_UNB, IMPL_TBB, IMPL_PYTHON},
     8},
    {"simplequeue.1p1c", simplequeue_1p1c, {IMPL_CONC, IMPL_PYTHON}, 2},
    {"priorityqueue.1p1c", priorityqueue_1p1c, {IMPL_CONC, IMPL_PYTHON}, 2},
};
#define NROWDEFS ((int)(sizeof rowdefs / sizeof rowdefs[0]))

static bool selected(const char *name)
{
    return bench_in_list(opt_only, name);
}

static bool impl_available(int impl, char *why, size_t whylen)
{
    if (!bench_in_list(opt_impls, impl_names[impl])) {
        snprintf(why, whylen, "not in --impls");
        return false;
    }
    switch (impl) {
    case IMPL_MOODYCAMEL:
    case IMPL_MOODY_UNB:
    case IMPL_MOODY_SPSC:
    case IMPL_TBB:
        return qpeer_available(qpeer_kind(impl), why, whylen);
    case IMPL_CK_SPSC:
    case IMPL_CK_MPMC:
#ifndef CONC_BENCH_HAVE_CK
        snprintf(why, whylen, "Concurrency Kit (pkg-config ck, Debian libck-dev) was not found when the bench was built");
        return false;
#else
        return true;
#endif
    case IMPL_GASYNC:
    case IMPL_GASYNC_UNB:
#ifndef CONC_BENCH_HAVE_GLIB
        snprintf(why, whylen, "GLib (pkg-config glib-2.0) was not found when the bench was built");
        return false;
#else
        return true;
#endif
    case IMPL_PYTHON:
        if (!opt_python || !opt_python_script) {
            snprintf(why, whylen, "no Python interpreter given (--python)");
            return false;
        }
        if (access(opt_python, X_OK) != 0) {
            snprintf(why, whylen, "%s not found", opt_python);
            return false;
        }
        return true;
    default:
        return true;
    }
}

/* One Python measurement: the peer script does its own (small) warm-up,
 * then one measured run, and prints its value. Run once per repetition, in
 * the same rotation as the C impls, so a change in machine load hits the
 * Python peer alike. */
static double python_once(const char *row, char *why, size_t whylen)
{
    char scale[32];
    snprintf(scale, sizeof scale, "%g", opt_scale);
    char *argv[] = {(char *)opt_python, (char *)opt_python_script, "--reps", "1", "--scale", scale,
                    (char *)row, NULL};
    double val;
    int n = bench_run_peer(argv, &val, 1, why, whylen);
    if (n < 0)
        return NAN;
    if (n < 1)
        return FAIL("python peer printed no value");
    return val;
}

static double measure(const rowdef_t *d, int impl, char *why, size_t whylen)
{
    return impl == IMPL_PYTHON ? python_once(d->name, why, whylen) : d->fn(impl, why, whylen);
}

static void run_row(const rowdef_t *d)
{
    bench_row_t *r = bench_row_new(d->name, "items/s", false);
    bench_impl_t *ims[NIMPLS];
    char why[200];
    fprintf(stderr, "running %s ...\n", d->name);
    for (int i = 0; i < d->nimpls; i++) {
        ims[i] = bench_impl_add(r, impl_names[d->impls[i]]);
        why[0] = 0;
        if (!impl_available(d->impls[i], why, sizeof why)) {
            bench_impl_note(ims[i], BENCH_SKIPPED, "%s", why);
            continue;
        }
        if (d->impls[i] == IMPL_PYTHON)
            continue; /* the script warms up on every run */
        g_warmup = true; /* warm-up, discarded */
        double v = d->fn(d->impls[i], why, sizeof why);
        g_warmup = false;
        if (isnan(v))
            bench_impl_note(ims[i], BENCH_FAILED, "%s", why);
    }
    for (int rep = 0; rep < opt_reps; rep++) {
        for (int j = 0; j < d->nimpls; j++) {
            int i = (j + rep) % d->nimpls;
            if (ims[i]->status != BENCH_OK)
                continue;
            why[0] = 0;
            double v = measure(d, d->impls[i], why, sizeof why);
            if (isnan(v))
                bench_impl_note(ims[i], BENCH_FAILED, "%s", why);
            else
                bench_impl_record(ims[i], v);
        }
    }
    for (int i = 0; i < r->nimpl; i++)
        if (r->impl[i].status != BENCH_OK)
            fprintf(stderr, "note: %s: %s %s: %s\n", d->name, r->impl[i].name,
                    r->impl[i].status == BENCH_FAILED ? "FAILED" : "skipped", r->impl[i].note);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: queue_bench [--reps N] [--scale F] [--only row,row] [--impls a,b] [--jsonl FILE]\n"
               "                   [--python PYTHON --python-script queue_python.py] [--list]\n");
}

static void list_rows(void)
{
    for (int k = 0; k < NROWDEFS; k++)
        printf("%s\n", rowdefs[k].name);
}

int main(int argc, char **argv)
{
    static const bench_args_t args = {
        .prog = "queue_bench", .usage = usage, .list = list_rows, .reps = &opt_reps, .scale = &opt_scale,
        .only = &opt_only, .impls = &opt_impls, .jsonl = &opt_jsonl, .python = &opt_python,
        .python_script = &opt_python_script};
    int st = bench_parse_args(argc, argv, &args);
    if (st >= 0)
        return st;
    if (!opt_python)
        fprintf(stderr, "note: python peer skipped (no --python given)\n");
    else if (access(opt_python, X_OK) != 0)
        fprintf(stderr, "note: python peer skipped: %s not found\n", opt_python);
    {
        char why[200];
        for (int k = IMPL_MOODYCAMEL; k < IMPL_PYTHON; k++)
            if (!impl_available(k, why, sizeof why))
                fprintf(stderr, "note: %s peer skipped: %s\n", impl_names[k], why);
    }

    bench_note_load();
    double t_start = bench_now();
    for (int k = 0; k < NROWDEFS; k++)
        if (selected(rowdefs[k].name))
            run_row(&rowdefs[k]);
    if (bench_nrows == 0) {
        fprintf(stderr, "queue_bench: no row matches --only %s\n", opt_only);
        return 2;
    }

    bench_print_header("queue", opt_reps);
    for (int i = 0; i < bench_nrows; i++)
        bench_print_row(&bench_rows[i]);

    printf("\ntargets (issue 3, 2-core machine), as ratios of medians:\n");
    bench_tally_t tally = {0, 0};
    bench_target_tally(&tally, "queue.1p1c", "moodycamel", 1.5, "queue.1p1c: conc >= 1.5x moodycamel");
    bench_target_tally(&tally, "queue.2p2c", "moodycamel", 1.0, "queue.2p2c: conc >= 1.0x moodycamel");
    printf("targets (issue 18: each peer at its best; against the faster of its variants):\n");
    static const char *const moody[] = {"moodycamel", "moodycamel_unbounded", "moodycamel_spsc", NULL};
    static const char *const ckspsc[] = {"ck_spsc", NULL};
    bench_target_best(&tally, "queue.1p1c", ckspsc, 1.0, "queue.1p1c: conc >= 1.0x ck_ring SPSC");
    bench_target_best(&tally, "queue.1p1c", moody, 3.0, "queue.1p1c: conc >= 3x the best moodycamel");
    bench_target_best(&tally, "queue.2p2c", moody, 3.0, "queue.2p2c: conc >= 3x the best moodycamel");
    printf("  (where conc's time goes on the missed ones: bench/README.md, \"Issue 18\")\n");
    bench_python_targets(&tally, 50.0);
    return bench_finish("queue", &tally, opt_jsonl, t_start);
}
