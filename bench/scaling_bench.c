/*
 * bench/scaling_bench.c — how cost grows with threads, queues, green
 * threads, connections and processes (issue 18, `make bench BENCH=scaling`).
 * On a 2-core machine oversubscription is where designs collapse; every row
 * here is one point of a curve, named scaling.<what>.<n>:
 *
 *   scaling.lock.t{1,2,4,8,16,64}   ops/s, one Lock, t threads each doing
 *                                   acquire, counter++, release for the
 *                                   same 0.1 s window (all contend the
 *                                   whole time; ops that end after the
 *                                   window closes are counted too, at most
 *                                   one time slice's worth)
 *                                   impls conc pthread gmutex
 *   scaling.event.p{1,2,4,8,16}     round trips/s summed over p Event
 *                                   ping-pong pairs (two threads each)
 *                                   impls conc pthread (mutex+cond flag)
 *   scaling.queue.p{1,2,4,8,16}     items/s, N producers / N consumers on one
 *                                   bounded FIFO (capacity 1024): the queue
 *                                   bench's own code and peers
 *                                   (bench/scaling_queue.c); items per run
 *                                   sized from each impl's warm-up rate
 *                                   (about 0.1 s a run); ck_ring sits
 *                                   out when threads outnumber CPUs, SPSC
 *                                   impls above 1p1c (bench/scaling_queue.c)
 *   scaling.pool.s{1,2,4,8,16}      tasks/s, s threads submitting empty tasks
 *                                   to one ThreadPoolExecutor (default
 *                                   max_workers), each then waiting for its
 *                                   futures; gthreadpool: GLib's
 *                                   GThreadPool with as many threads, no
 *                                   futures, waited for with
 *                                   g_thread_pool_free        conc gthreadpool
 *   scaling.pool.w{2,4,8,16,64}     tasks/s, one submitter, max_workers w
 *   scaling.green_spawn.{1k,10k,100k,1m}  ns per spawn + run of an empty
 *                                   body + join, one after another, with N
 *                                   green threads alive (N - 1 parked in
 *                                   conc_event_wait beside it): the
 *                                   scheduler's cost as the population grows
 *   scaling.green_spawn_all.{1k,...,1m}  ns per green thread when all N are
 *                                   alive at once: spawn N (each runs,
 *                                   yields once, returns), join all; steady
 *                                   state (a warm-up round first; stacks
 *                                   pooled): the memory hierarchy's cost
 *                                   (N pages of stack touched per round)
 *   scaling.green_switch.{r2,r100k} ns per switch with 2 / 100k green
 *                                   threads ready, each yielding in a loop
 *   scaling.echo.c{10,100,1000,10000}  echo round trips/s (64 B, closed loop,
 *                                   127.0.0.1) with c connections: conc's
 *                                   green server (examples/io_models/green.c)
 *                                   against the plain epoll server
 *                                   (epoll.c) and libuv when built
 *   scaling.ppe.w{1,2,4,8}          tasks/s through a ProcessPoolExecutor
 *                                   (fork) with w workers: submit 20k
 *                                   trivial tasks, wait for all       conc
 *
 * Method: as the other benches (bench/README.md): one warm-up run per impl,
 * then the repetitions interleaved across impls, medians; every run checks
 * its result. The green rows run in a child process each (this program
 * re-run with --child), which does a warm-up round and then prints one
 * value per repetition, so a million stacks never stay in this process.
 * Echo servers are processes started fresh per measurement.
 *
 * Targets (issue 18): scaling.lock.t64 conc >= 0.8x conc at t2 and >= 2x
 * pthread at t64; scaling.queue.p16 conc >= 0.5x conc at p1;
 * scaling.green_spawn.1m <= 1.5x scaling.green_spawn.1k (and, reported
 * beside it, the same for scaling.green_spawn_all).
 *
 * Usage: scaling_bench [--quick] [--reps N] [--scale F] [--only prefix,...]
 *                      [--impls name,...] [--jsonl FILE] [--list]
 * --only takes row-name prefixes (scaling.lock, scaling.echo.c10000);
 * --impls runs only the named impls (e.g. conc alone, under perf).
 * --quick: 3 reps, a tenth of the work, and the largest points (1M green
 * threads, 10,000 connections) left out.
 */
#define _GNU_SOURCE
#include "bench_util.h"
#include "bench_gate.h"
#include "io_load.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

#include "conc/base.h"
#include "conc/futures.h"
#include "conc/green.h"
#include "conc/pool.h"
#include "conc/sync.h"

#ifdef CONC_BENCH_HAVE_GLIB
#include <glib.h>
#endif

#ifndef CONC_IO_MODELS_DIR
#define CONC_IO_MODELS_DIR ""
#endif
#ifndef CONC_BENCH_IO_UV
#define CONC_BENCH_IO_UV ""
#endif

/* bench/scaling_queue.c (queue_bench.c's code) */
int scq_nimpls(void);
const char *scq_impl_name(int i);
int scq_available(int i, char *why, size_t whylen);
const char *scq_skip(int i, int n);
double scq_run(int i, int n, long items, char *why, size_t whylen);

static int opt_reps = 7;
static double opt_scale = 1.0;
static bool opt_quick;
static const char *opt_only;
static const char *opt_impls; /* --impls conc,pthread: only these */
static const char *opt_jsonl;
static const char *g_self = "/proc/self/exe";

#define FAIL(...) (snprintf(why, whylen, __VA_ARGS__), NAN)

static long scaled(long n)
{
    long v = (long)((double)n * opt_scale);
    return v < 1 ? 1 : v;
}

/* ------------------------------------------------------------ lock */

enum { L_CONC, L_PTHREAD, L_GMUTEX };

static struct {
    bench_gate_t gate;
    int impl;
    atomic_int stop;
    conc_lock_t cl;
    pthread_mutex_t pm;
#ifdef CONC_BENCH_HAVE_GLIB
    GMutex gm;
#endif
    long counter;
    atomic_int err;
    long done[64];
} LK;

/* Acquire, counter++, release until told to stop (checked every 64 ops,
 * the same for every impl): every thread contends for the whole window. */
#define LOCK_LOOP(ACQ, REL)                                                              \
    do {                                                                                 \
        while (!atomic_load_explicit(&LK.stop, memory_order_relaxed)) {                  \
            for (int k_ = 0; k_ < 64; k_++) {                                            \
                err |= (ACQ);                                                            \
                LK.counter++;                                                            \
                err |= (REL);                                                            \
            }                                                                            \
            ops += 64;                                                                   \
        }                                                                                \
    } while (0)

static void *lock_worker(void *arg)
{
    int id = (int)(intptr_t)arg, err = 0;
    long ops = 0;
    bench_gate_arrive(&LK.gate, true);
    switch (LK.impl) {
    case L_CONC:
        LOCK_LOOP(conc_lock_acquire(&LK.cl, true, CONC_FOREVER), conc_lock_release(&LK.cl));
        break;
    case L_PTHREAD:
        LOCK_LOOP(pthread_mutex_lock(&LK.pm), pthread_mutex_unlock(&LK.pm));
        break;
#ifdef CONC_BENCH_HAVE_GLIB
    case L_GMUTEX:
        LOCK_LOOP((g_mutex_lock(&LK.gm), 0), (g_mutex_unlock(&LK.gm), 0));
        break;
#endif
    }
    LK.done[id] = ops;
    if (err)
        atomic_store(&LK.err, err);
    return NULL;
}

/* ops/s over a fixed window (0.1 s x scale) with nt threads contending. */
static double run_lock(int impl, int nt, char *why, size_t whylen)
{
    pthread_t th[64];
    LK.impl = impl;
    LK.counter = 0;
    atomic_store(&LK.stop, 0);
    atomic_store(&LK.err, 0);
    bench_gate_reset(&LK.gate);
    conc_lock_init(&LK.cl);
    pthread_mutex_init(&LK.pm, NULL);
#ifdef CONC_BENCH_HAVE_GLIB
    g_mutex_init(&LK.gm);
#endif
    for (int i = 0; i < nt; i++)
        if (pthread_create(&th[i], NULL, lock_worker, (void *)(intptr_t)i) != 0) {
            fprintf(stderr, "scaling_bench: pthread_create failed\n");
            exit(1);
        }
    double window = 0.1 * opt_scale < 0.05 ? 0.05 : 0.1 * opt_scale;
    double t0 = bench_gate_open(&LK.gate, nt);
    struct timespec ts = {(time_t)window, (long)((window - (double)(time_t)window) * 1e9)};
    nanosleep(&ts, NULL);
    atomic_store(&LK.stop, 1);
    double t1 = bench_now();
    long total = 0;
    for (int i = 0; i < nt; i++) {
        pthread_join(th[i], NULL);
        total += LK.done[i];
    }
#ifdef CONC_BENCH_HAVE_GLIB
    g_mutex_clear(&LK.gm);
#endif
    pthread_mutex_destroy(&LK.pm);
    if (atomic_load(&LK.err))
        return FAIL("acquire/release returned an error (%d)", atomic_load(&LK.err));
    if (LK.counter != total)
        return FAIL("lost updates: %ld, expected %ld", LK.counter, total);
    return (double)total / (t1 - t0);
}

/* ---------------------------------------------------- event ping-pong */

enum { E_CONC, E_PTHREAD };

/* The event a C programmer writes by hand: a flag under a mutex + cond. */
typedef struct pevent {
    pthread_mutex_t m;
    pthread_cond_t c;
    int flag;
} pevent_t;

static void pevent_init(pevent_t *e)
{
    pthread_mutex_init(&e->m, NULL);
    pthread_cond_init(&e->c, NULL);
    e->flag = 0;
}

static void pevent_destroy(pevent_t *e)
{
    pthread_cond_destroy(&e->c);
    pthread_mutex_destroy(&e->m);
}

static int pevent_set(pevent_t *e)
{
    pthread_mutex_lock(&e->m);
    e->flag = 1;
    pthread_cond_broadcast(&e->c);
    return pthread_mutex_unlock(&e->m);
}

/* wait for the flag and clear it (the ping-pong's wait + clear) */
static int pevent_take(pevent_t *e)
{
    pthread_mutex_lock(&e->m);
    while (!e->flag)
        pthread_cond_wait(&e->c, &e->m);
    e->flag = 0;
    return pthread_mutex_unlock(&e->m);
}

typedef struct pair {
    conc_event_t ce[2];
    pevent_t pe[2];
    long rounds[2];
    int err;
} pair_t;

static struct {
    bench_gate_t gate;
    int impl;
    long n;
    pair_t *pairs;
    double end[32];
} EV;

/* side 0: set e0, wait e1, clear e1; side 1: wait e0, clear e0, set e1 */
static void *event_worker(void *arg)
{
    int id = (int)(intptr_t)arg, side = id & 1, err = 0;
    pair_t *p = &EV.pairs[id / 2];
    long n = EV.n, r = 0;
    bench_gate_arrive(&EV.gate, true);
    for (long i = 0; i < n; i++, r++) {
        if (EV.impl == E_CONC) {
            if (side == 0) {
                err |= conc_event_set(&p->ce[0]);
                err |= conc_event_wait(&p->ce[1], CONC_FOREVER);
                err |= conc_event_clear(&p->ce[1]);
            } else {
                err |= conc_event_wait(&p->ce[0], CONC_FOREVER);
                err |= conc_event_clear(&p->ce[0]);
                err |= conc_event_set(&p->ce[1]);
            }
        } else {
            if (side == 0) {
                err |= pevent_set(&p->pe[0]);
                err |= pevent_take(&p->pe[1]);
            } else {
                err |= pevent_take(&p->pe[0]);
                err |= pevent_set(&p->pe[1]);
            }
        }
    }
    p->rounds[side] = r;
    if (err)
        p->err = err;
    EV.end[id] = bench_now();
    return NULL;
}

static double run_event(int impl, int np, char *why, size_t whylen)
{
    pthread_t th[32];
    pair_t pairs[16];
    memset(pairs, 0, sizeof pairs);
    EV.impl = impl;
    EV.n = scaled(40000) / np;
    if (EV.n < 1)
        EV.n = 1;
    EV.pairs = pairs;
    bench_gate_reset(&EV.gate);
    for (int i = 0; i < np; i++) {
        conc_event_init(&pairs[i].ce[0]);
        conc_event_init(&pairs[i].ce[1]);
        pevent_init(&pairs[i].pe[0]);
        pevent_init(&pairs[i].pe[1]);
    }
    for (int i = 0; i < 2 * np; i++)
        if (pthread_create(&th[i], NULL, event_worker, (void *)(intptr_t)i) != 0) {
            fprintf(stderr, "scaling_bench: pthread_create failed\n");
            exit(1);
        }
    double t0 = bench_gate_open(&EV.gate, 2 * np), t1 = 0;
    for (int i = 0; i < 2 * np; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 2 * np; i++)
        if (EV.end[i] > t1)
            t1 = EV.end[i];
    int err = 0;
    long bad = 0;
    for (int i = 0; i < np; i++) {
        pevent_destroy(&pairs[i].pe[0]);
        pevent_destroy(&pairs[i].pe[1]);
        err |= pairs[i].err;
        bad += pairs[i].rounds[0] != EV.n || pairs[i].rounds[1] != EV.n;
    }
    if (err)
        return FAIL("set/wait/clear returned an error (%d)", err);
    if (bad)
        return FAIL("%ld pairs did not finish their %ld round trips", bad, EV.n);
    return (double)(EV.n * np) / (t1 - t0);
}

/* ------------------------------------------------- ThreadPoolExecutor */

static void *empty_task(void *arg)
{
    return arg;
}

static struct {
    bench_gate_t gate;
    conc_executor_t *ex;
    long per;
    atomic_int err;
    atomic_long bad;
    double end[16];
} PL;

static void *pool_submitter(void *arg)
{
    int id = (int)(intptr_t)arg;
    long n = PL.per;
    conc_future_t **fs = malloc((size_t)n * sizeof *fs);
    if (!fs) {
        atomic_store(&PL.err, CONC_ENOMEM);
        bench_gate_arrive(&PL.gate, true);
        PL.end[id] = bench_now();
        return NULL;
    }
    bench_gate_arrive(&PL.gate, true);
    long k = 0, bad = 0;
    int rc = 0;
    for (; k < n; k++)
        if ((rc = conc_submit(PL.ex, &fs[k], empty_task, (void *)(intptr_t)(k + 1))) != 0)
            break;
    for (long i = 0; i < k; i++) {
        void *res = NULL;
        int r2 = conc_future_result(fs[i], CONC_FOREVER, &res);
        bad += r2 != 0 || res != (void *)(intptr_t)(i + 1);
        conc_future_free(fs[i]);
    }
    PL.end[id] = bench_now();
    free(fs);
    if (rc)
        atomic_store(&PL.err, rc);
    atomic_fetch_add(&PL.bad, bad);
    return NULL;
}

static double run_pool(int submitters, int workers, char *why, size_t whylen)
{
    pthread_t th[16];
    conc_thread_pool_opts_t o = {0};
    o.max_workers = (size_t)workers; /* 0: Python's default */
    int rc = conc_thread_pool_new(&PL.ex, &o);
    if (rc != 0)
        return FAIL("conc_thread_pool_new: %s", conc_errname(rc));
    PL.per = scaled(100000) / submitters;
    if (PL.per < 1)
        PL.per = 1;
    atomic_store(&PL.err, 0);
    atomic_store(&PL.bad, 0);
    bench_gate_reset(&PL.gate);
    for (int i = 0; i < submitters; i++)
        if (pthread_create(&th[i], NULL, pool_submitter, (void *)(intptr_t)i) != 0) {
            fprintf(stderr, "scaling_bench: pthread_create failed\n");
            exit(1);
        }
    double t0 = bench_gate_open(&PL.gate, submitters), t1 = 0;
    for (int i = 0; i < submitters; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < submitters; i++)
        if (PL.end[i] > t1)
            t1 = PL.end[i];
    conc_executor_shutdown(PL.ex, true, false);
    conc_executor_free(PL.ex);
    if (atomic_load(&PL.err))
        return FAIL("conc_submit: %s", conc_errname(atomic_load(&PL.err)));
    if (atomic_load(&PL.bad))
        return FAIL("%ld tasks came back wrong", atomic_load(&PL.bad));
    return (double)(PL.per * submitters) / (t1 - t0);
}

#ifdef CONC_BENCH_HAVE_GLIB
/* The GLib peer: GThreadPool with the same number of threads (conc's
 * default max_workers, min(32, CPUs + 4), when workers is 0), s threads
 * pushing, then g_thread_pool_free(wait) until every task ran. No futures:
 * each task only counts itself. */
static atomic_long g_gtp_done;
static GThreadPool *g_gtp;
static atomic_int g_gtp_fail;

static void gtp_task(gpointer data, gpointer user)
{
    (void)data, (void)user;
    atomic_fetch_add_explicit(&g_gtp_done, 1, memory_order_relaxed);
}

static void *gtp_submitter(void *arg)
{
    (void)arg;
    long n = PL.per;
    bench_gate_arrive(&PL.gate, true);
    for (long k = 0; k < n; k++)
        if (!g_thread_pool_push(g_gtp, (gpointer)(intptr_t)(k + 1), NULL))
            atomic_store(&g_gtp_fail, 1);
    return NULL;
}

static double run_gthreadpool(int submitters, int workers, char *why, size_t whylen)
{
    pthread_t th[16];
    if (workers == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN) + 4;
        workers = c > 32 ? 32 : (int)c;
    }
    GError *gerr = NULL;
    g_gtp = g_thread_pool_new(gtp_task, NULL, workers, TRUE, &gerr);
    if (!g_gtp) {
        double r = FAIL("g_thread_pool_new: %s", gerr ? gerr->message : "?");
        g_clear_error(&gerr);
        return r;
    }
    PL.per = scaled(100000) / submitters;
    if (PL.per < 1)
        PL.per = 1;
    atomic_store(&g_gtp_done, 0);
    atomic_store(&g_gtp_fail, 0);
    bench_gate_reset(&PL.gate);
    for (int i = 0; i < submitters; i++)
        if (pthread_create(&th[i], NULL, gtp_submitter, (void *)(intptr_t)i) != 0) {
            fprintf(stderr, "scaling_bench: pthread_create failed\n");
            exit(1);
        }
    double t0 = bench_gate_open(&PL.gate, submitters);
    for (int i = 0; i < submitters; i++)
        pthread_join(th[i], NULL);
    g_thread_pool_free(g_gtp, FALSE, TRUE); /* returns once every queued task ran */
    double t1 = bench_now();
    if (atomic_load(&g_gtp_fail))
        return FAIL("g_thread_pool_push failed");
    if (atomic_load(&g_gtp_done) != PL.per * submitters)
        return FAIL("%ld of %ld tasks ran", atomic_load(&g_gtp_done), PL.per * submitters);
    return (double)(PL.per * submitters) / (t1 - t0);
}
#endif

/* ------------------------------------------------------- green threads */

static long g_ran;

static void *spawn_body(void *arg)
{
    (void)arg;
    g_ran++;
    conc_yield(); /* every green thread of the round is alive (and has its stack) at once */
    return NULL;
}

/* One round: spawn n, join them all. ns per green thread, or NAN. */
static double green_spawn_round(conc_green_t **gs, long n)
{
    g_ran = 0;
    double t0 = bench_now();
    for (long i = 0; i < n; i++)
        if (conc_go(&gs[i], spawn_body, NULL) != 0) {
            fprintf(stderr, "scaling_bench: conc_go #%ld of %ld failed\n", i, n);
            return NAN;
        }
    long bad = 0;
    for (long i = 0; i < n; i++) {
        bad += conc_green_join(gs[i], CONC_FOREVER) != 0;
        conc_green_free(gs[i]);
    }
    double t1 = bench_now();
    if (bad || g_ran != n) {
        fprintf(stderr, "scaling_bench: %ld joins failed, %ld of %ld bodies ran\n", bad, g_ran, n);
        return NAN;
    }
    return (t1 - t0) * 1e9 / (double)n;
}

static long g_switch_rounds;
static long g_switch_done;

static void *switch_body(void *arg)
{
    (void)arg;
    for (long i = 0; i < g_switch_rounds; i++)
        if (conc_yield() != 0)
            return (void *)1;
    g_switch_done++;
    return NULL;
}

static double green_switch_round(conc_green_t **gs, long n, long total)
{
    g_switch_rounds = total / n < 1 ? 1 : total / n;
    g_switch_done = 0;
    for (long i = 0; i < n; i++)
        if (conc_go(&gs[i], switch_body, NULL) != 0)
            return NAN;
    /* let every one start (and reach its first yield) before the clock */
    conc_yield();
    double t0 = bench_now();
    long bad = 0;
    for (long i = 0; i < n; i++) {
        bad += conc_green_join(gs[i], CONC_FOREVER) != 0;
        conc_green_free(gs[i]);
    }
    double t1 = bench_now();
    if (bad || g_switch_done != n)
        return NAN;
    return (t1 - t0) * 1e9 / (double)(g_switch_rounds * n);
}

static conc_event_t g_idle_ev;
static long g_idle_started;

static void *idle_body(void *arg)
{
    (void)arg;
    g_idle_started++;
    return (void *)(intptr_t)(conc_event_wait(&g_idle_ev, CONC_FOREVER) == 0 ? 1 : 2);
}

static void *empty_body(void *arg)
{
    ++*(long *)arg;
    return NULL;
}

/* One spawn + run of an empty body + join after another, total times, with
 * the n - 1 green threads of spawn_alive_setup parked beside. ns each. */
static double green_spawn_alive_round(long total)
{
    long ran = 0;
    double t0 = bench_now();
    for (long i = 0; i < total; i++) {
        conc_green_t *g;
        if (conc_go(&g, empty_body, &ran) != 0)
            return NAN;
        int rc = conc_green_join(g, CONC_FOREVER);
        conc_green_free(g);
        if (rc != 0)
            return NAN;
    }
    double t1 = bench_now();
    return ran == total ? (t1 - t0) * 1e9 / (double)total : NAN;
}

/* scaling_bench --child spawn|spawnall|switch N reps total: print reps
 * values. spawn: N - 1 green threads parked in conc_event_wait, then
 * rounds of `total` spawn+join of one more; spawnall: rounds of N spawned
 * at once, all joined; switch: N green threads yielding, total switches. */
static int child_main(const char *what, long n, int reps, long total)
{
    conc_green_t **gs = malloc((size_t)n * sizeof *gs);
    if (!gs)
        return 1;
    memset(gs, 0xff, (size_t)n * sizeof *gs);
    bool sw = strcmp(what, "switch") == 0, alive = strcmp(what, "spawn") == 0;
    if (alive) {
        conc_event_init(&g_idle_ev);
        for (long i = 0; i < n - 1; i++)
            if (conc_go(&gs[i], idle_body, NULL) != 0) {
                fprintf(stderr, "scaling_bench: conc_go #%ld of %ld failed\n", i, n - 1);
                return 1;
            }
        while (g_idle_started < n - 1)
            conc_yield();
    }
    for (int r = -1; r < reps; r++) { /* round -1: warm-up (stacks, hub, handle pool) */
        double v = sw ? green_switch_round(gs, n, total)
                   : alive ? green_spawn_alive_round(total)
                           : green_spawn_round(gs, n);
        if (isnan(v))
            return 1;
        if (r >= 0) {
            printf("%.3f\n", v);
            fflush(stdout);
        }
    }
    if (alive) {
        conc_event_set(&g_idle_ev);
        long bad = 0;
        for (long i = 0; i < n - 1; i++) {
            void *res = NULL;
            bad += conc_green_get(gs[i], 60, &res) != 0 || res != (void *)1;
            conc_green_free(gs[i]);
        }
        if (bad) {
            fprintf(stderr, "scaling_bench: %ld parked green threads did not end cleanly\n", bad);
            return 1;
        }
    }
    return 0;
}

static int child_values(const char *what, long n, long total, int reps, double *out, char *why,
                        size_t whylen)
{
    char nb[32], rb[16], tb[32];
    snprintf(nb, sizeof nb, "%ld", n);
    snprintf(rb, sizeof rb, "%d", reps);
    snprintf(tb, sizeof tb, "%ld", total);
    char *argv[] = {(char *)g_self, "--child", (char *)what, nb, rb, tb, NULL};
    int got = bench_run_peer(argv, out, reps, why, whylen);
    if (got >= 0 && got < reps) {
        snprintf(why, whylen, "the child printed %d of %d values", got, reps);
        return -1;
    }
    return got;
}

/* ------------------------------------------------------------- echo */

enum { X_CONC, X_EPOLL, X_LIBUV };

static double run_echo(int impl, int conns, char *why, size_t whylen, bool *skipped)
{
    char path[600];
    char *argv[4] = {path, "0", NULL, NULL};
    *skipped = false;
    if (impl == X_LIBUV) {
        if (!CONC_BENCH_IO_UV[0] || access(CONC_BENCH_IO_UV, X_OK) != 0) {
            *skipped = true;
            return FAIL("libuv peer not built (libuv1-dev missing?)");
        }
        snprintf(path, sizeof path, "%s", CONC_BENCH_IO_UV);
    } else {
        if (!CONC_IO_MODELS_DIR[0]) {
            *skipped = true;
            return FAIL("examples/io_models not built");
        }
        snprintf(path, sizeof path, "%s/io_model_%s", CONC_IO_MODELS_DIR, impl == X_CONC ? "green" : "epoll");
        if (access(path, X_OK) != 0) {
            *skipped = true;
            return FAIL("%.180s not built", path);
        }
    }
    long need = (long)conns + 64; /* the client's fds here, the server's in its process */
    if (io_raise_nofile(need) < need) {
        *skipped = true;
        return FAIL("RLIMIT_NOFILE cannot be raised to %ld (not root?)", need);
    }
    io_server_t s;
    int rc = io_server_start(argv, NULL, 0, 20.0, &s, why, whylen);
    if (rc != 0) {
        *skipped = rc == 1;
        return NAN;
    }
    double secs = 0.5 * opt_scale;
    io_load_opts_t o = {.port = s.port, .conns = conns, .warm = conns >= 1000 ? 0.3 : 0.15,
                        .secs = secs < 0.25 ? 0.25 : secs, .stall = 10};
    io_load_result_t r;
    rc = io_load_run(&o, &r, why, whylen);
    io_server_stop(&s);
    return rc == 0 ? r.rate : NAN;
}

/* ------------------------------------------------- ProcessPoolExecutor */

static int ppe_ident(const void *arg, size_t len, conc_pool_out_t *out)
{
    return conc_pool_return(out, arg, len);
}
CONC_POOL_REGISTER(ppe_ident);

static double run_ppe(int workers, char *why, size_t whylen)
{
    conc_process_pool_opts_t o = {0};
    o.max_workers = (size_t)workers;
    o.method = CONC_FORK;
    conc_executor_t *ex;
    int rc = conc_process_pool_new(&ex, &o);
    if (rc != 0)
        return FAIL("conc_process_pool_new: %s", conc_errname(rc));
    long n = scaled(20000);
    conc_future_t **fs = malloc((size_t)n * sizeof *fs);
    double res = NAN;
    if (!fs) {
        conc_executor_free(ex);
        return FAIL("out of memory");
    }
    for (int pass = 0; pass < 2; pass++) { /* pass 0: warm-up, every worker started */
        long m = pass == 0 ? (n < 512 ? n : 512) : n, k = 0, bad = 0;
        double t0 = bench_now();
        for (; k < m; k++)
            if ((rc = conc_process_pool_submit(ex, &fs[k], ppe_ident, &k, sizeof k)) != 0)
                break;
        for (long i = 0; i < k; i++) {
            const void *d;
            size_t len;
            long v = -1;
            if (conc_future_bytes(fs[i], CONC_FOREVER, &d, &len) != 0 || len != sizeof v)
                bad++;
            else if (memcpy(&v, d, sizeof v), v != i)
                bad++;
            conc_future_free(fs[i]);
        }
        double t1 = bench_now();
        if (rc != 0) {
            snprintf(why, whylen, "conc_process_pool_submit: %s", conc_errname(rc));
            break;
        }
        if (bad) {
            snprintf(why, whylen, "%ld tasks came back wrong", bad);
            break;
        }
        if (pass == 1)
            res = (double)m / (t1 - t0);
    }
    free(fs);
    conc_executor_free(ex);
    return res;
}

/* ------------------------------------------------------------ driver */

enum group { G_LOCK, G_EVENT, G_QUEUE, G_POOL_S, G_POOL_W, G_SPAWN, G_SPAWN_ALL, G_SWITCH, G_ECHO, G_PPE };

typedef struct point {
    const char *name;
    enum group g;
    long n;       /* threads, pairs, N, submitters, workers, green threads, conns */
    bool big;     /* left out by --quick */
} point_t;

static const point_t points[] = {
    {"scaling.lock.t1", G_LOCK, 1, 0},         {"scaling.lock.t2", G_LOCK, 2, 0},
    {"scaling.lock.t4", G_LOCK, 4, 0},         {"scaling.lock.t8", G_LOCK, 8, 0},
    {"scaling.lock.t16", G_LOCK, 16, 0},       {"scaling.lock.t64", G_LOCK, 64, 0},
    {"scaling.event.p1", G_EVENT, 1, 0},       {"scaling.event.p2", G_EVENT, 2, 0},
    {"scaling.event.p4", G_EVENT, 4, 0},       {"scaling.event.p8", G_EVENT, 8, 0},
    {"scaling.event.p16", G_EVENT, 16, 0},     {"scaling.queue.p1", G_QUEUE, 1, 0},
    {"scaling.queue.p2", G_QUEUE, 2, 0},       {"scaling.queue.p4", G_QUEUE, 4, 0},
    {"scaling.queue.p8", G_QUEUE, 8, 0},       {"scaling.queue.p16", G_QUEUE, 16, 0},
    {"scaling.pool.s1", G_POOL_S, 1, 0},       {"scaling.pool.s2", G_POOL_S, 2, 0},
    {"scaling.pool.s4", G_POOL_S, 4, 0},       {"scaling.pool.s8", G_POOL_S, 8, 0},
    {"scaling.pool.s16", G_POOL_S, 16, 0},     {"scaling.pool.w2", G_POOL_W, 2, 0},
    {"scaling.pool.w4", G_POOL_W, 4, 0},       {"scaling.pool.w8", G_POOL_W, 8, 0},
    {"scaling.pool.w16", G_POOL_W, 16, 0},     {"scaling.pool.w64", G_POOL_W, 64, 0},
    {"scaling.green_spawn.1k", G_SPAWN, 1000, 0},
    {"scaling.green_spawn.10k", G_SPAWN, 10000, 0},
    {"scaling.green_spawn.100k", G_SPAWN, 100000, 0},
    {"scaling.green_spawn.1m", G_SPAWN, 1000000, 1},
    {"scaling.green_spawn_all.1k", G_SPAWN_ALL, 1000, 0},
    {"scaling.green_spawn_all.10k", G_SPAWN_ALL, 10000, 0},
    {"scaling.green_spawn_all.100k", G_SPAWN_ALL, 100000, 0},
    {"scaling.green_spawn_all.1m", G_SPAWN_ALL, 1000000, 1},
    {"scaling.green_switch.r2", G_SWITCH, 2, 0},
    {"scaling.green_switch.r100k", G_SWITCH, 100000, 0},
    {"scaling.echo.c10", G_ECHO, 10, 0},       {"scaling.echo.c100", G_ECHO, 100, 0},
    {"scaling.echo.c1000", G_ECHO, 1000, 0},   {"scaling.echo.c10000", G_ECHO, 10000, 1},
    {"scaling.ppe.w1", G_PPE, 1, 0},           {"scaling.ppe.w2", G_PPE, 2, 0},
    {"scaling.ppe.w4", G_PPE, 4, 0},           {"scaling.ppe.w8", G_PPE, 8, 0},
};
#define NPOINTS ((int)(sizeof points / sizeof points[0]))

static bool selected(const point_t *p)
{
    if (opt_quick && p->big)
        return false;
    if (!opt_only)
        return true;
    for (const char *s = opt_only; *s;) {
        const char *e = strchr(s, ',');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        if (l > 0 && strncmp(p->name, s, l) == 0)
            return true;
        if (!e)
            break;
        s = e + 1;
    }
    return false;
}

/* the impls of a group, their names and one measurement */
static int group_impls(enum group g, const char **names, int max)
{
    switch (g) {
    case G_LOCK:
        names[0] = "conc", names[1] = "pthread", names[2] = "gmutex";
        return 3;
    case G_EVENT:
        names[0] = "conc", names[1] = "pthread";
        return 2;
    case G_QUEUE: {
        int n = scq_nimpls();
        for (int i = 0; i < n && i < max; i++)
            names[i] = scq_impl_name(i);
        return n < max ? n : max;
    }
    case G_ECHO:
        names[0] = "conc", names[1] = "epoll", names[2] = "libuv";
        return 3;
    case G_POOL_S:
    case G_POOL_W:
        names[0] = "conc", names[1] = "gthreadpool";
        return 2;
    default:
        names[0] = "conc";
        return 1;
    }
}

static bool impl_available(enum group g, int i, char *why, size_t whylen)
{
    if (g == G_LOCK && i == L_GMUTEX) {
#ifndef CONC_BENCH_HAVE_GLIB
        snprintf(why, whylen, "GLib (pkg-config glib-2.0) was not found when the bench was built");
        return false;
#endif
    }
    if ((g == G_POOL_S || g == G_POOL_W) && i == 1) {
#ifndef CONC_BENCH_HAVE_GLIB
        snprintf(why, whylen, "GLib (pkg-config glib-2.0) was not found when the bench was built");
        return false;
#endif
    }
    if (g == G_QUEUE)
        return scq_available(i, why, whylen);
    return true;
}

/* Items per queue run, per impl: sized from the warm-up's rate so that a
 * run takes about 0.1 s x scale (peers that collapse at 8p8c move 0.3M
 * items/s, TBB 25k at 16p16c; conc 30M), between 4k and 3M items. */
static long g_queue_items[BENCH_MAX_IMPLS];

static double measure(const point_t *p, int impl, char *why, size_t whylen, bool *skipped)
{
    *skipped = false;
    switch (p->g) {
    case G_LOCK:
        return run_lock(impl, (int)p->n, why, whylen);
    case G_EVENT:
        return run_event(impl, (int)p->n, why, whylen);
    case G_QUEUE:
        return scq_run(impl, (int)p->n, g_queue_items[impl], why, whylen);
    case G_POOL_S:
    case G_POOL_W: {
        int subs = p->g == G_POOL_S ? (int)p->n : 1, workers = p->g == G_POOL_W ? (int)p->n : 0;
#ifdef CONC_BENCH_HAVE_GLIB
        if (impl == 1)
            return run_gthreadpool(subs, workers, why, whylen);
#endif
        return run_pool(subs, workers, why, whylen);
    }
    case G_ECHO:
        return run_echo(impl, (int)p->n, why, whylen, skipped);
    case G_PPE:
        return run_ppe((int)p->n, why, whylen);
    default:
        return FAIL("no such group");
    }
}

static int reps_for(enum group g)
{
    int cap = g == G_ECHO ? 3 : g == G_PPE || g == G_QUEUE ? 5 : opt_reps; /* ~3 min in all */
    return opt_reps < cap ? opt_reps : cap;
}

static void run_point(const point_t *p)
{
    bool lower = p->g == G_SPAWN || p->g == G_SPAWN_ALL || p->g == G_SWITCH;
    const char *unit = p->g == G_LOCK    ? "ops/s"
                       : p->g == G_EVENT ? "trips/s"
                       : p->g == G_QUEUE ? "items/s"
                       : p->g == G_ECHO  ? "trips/s"
                       : lower           ? "ns"
                                         : "tasks/s";
    bench_row_t *r = bench_row_new(p->name, unit, lower);
    const char *names[BENCH_MAX_IMPLS];
    int ni = group_impls(p->g, names, BENCH_MAX_IMPLS);
    bench_impl_t *ims[BENCH_MAX_IMPLS];
    char why[200];
    double t0 = bench_now();
    fprintf(stderr, "running %s ...", p->name);
    if (lower) { /* green rows: a child process each */
        ims[0] = bench_impl_add(r, "conc");
        double vals[BENCH_MAX_REPS];
        int reps = opt_reps < 5 ? opt_reps : 5;
        if (p->n >= 1000000 && reps > 3)
            reps = 3; /* a round of a million green threads takes seconds */
        long total = p->g == G_SWITCH ? scaled(p->n > 1000 ? 500000 : 2000000)
                     : p->g == G_SPAWN ? scaled(300000)
                                       : 0;
        const char *what = p->g == G_SWITCH ? "switch" : p->g == G_SPAWN ? "spawn" : "spawnall";
        why[0] = 0;
        int got = child_values(what, p->n, total, reps, vals, why, sizeof why);
        if (got < 0)
            bench_impl_note(ims[0], BENCH_FAILED, "%s", why);
        for (int i = 0; i < got; i++)
            bench_impl_record(ims[0], vals[i]);
        fprintf(stderr, " %.1f s\n", bench_now() - t0);
        return;
    }
    for (int i = 0; i < ni; i++) {
        ims[i] = bench_impl_add(r, names[i]);
        why[0] = 0;
        if (!bench_in_list(opt_impls, names[i])) {
            bench_impl_note(ims[i], BENCH_SKIPPED, "not in --impls");
            continue;
        }
        const char *skip = p->g == G_QUEUE ? scq_skip(i, (int)p->n) : NULL;
        if (skip) {
            bench_impl_note(ims[i], BENCH_SKIPPED, "%s", skip);
            continue;
        }
        if (!impl_available(p->g, i, why, sizeof why)) {
            bench_impl_note(ims[i], BENCH_SKIPPED, "%s", why);
            continue;
        }
        if (p->g == G_ECHO || p->g == G_PPE)
            continue; /* these warm up inside each measurement */
        bool sk;
        if (p->g == G_QUEUE)
            g_queue_items[i] = 16384; /* the warm-up: 16k items */
        double v = measure(p, i, why, sizeof why, &sk); /* warm-up, discarded */
        if (isnan(v))
            bench_impl_note(ims[i], sk ? BENCH_SKIPPED : BENCH_FAILED, "%s", why);
        else if (p->g == G_QUEUE) {
            double want = v * 0.1 * opt_scale;
            g_queue_items[i] = want < 4096 ? 4096 : want > 3e6 ? 3000000 : (long)want;
        }
    }
    int reps = reps_for(p->g);
    for (int rep = 0; rep < reps; rep++)
        for (int j = 0; j < ni; j++) {
            int i = (j + rep) % ni;
            if (ims[i]->status != BENCH_OK)
                continue;
            why[0] = 0;
            bool sk;
            double v = measure(p, i, why, sizeof why, &sk);
            if (isnan(v))
                bench_impl_note(ims[i], sk ? BENCH_SKIPPED : BENCH_FAILED, "%s", why);
            else
                bench_impl_record(ims[i], v);
        }
    fprintf(stderr, " %.1f s\n", bench_now() - t0);
}

static double conc_median(const char *row)
{
    bench_row_t *r = bench_row_find(row);
    bench_impl_t *c = r ? bench_impl_find(r, "conc") : NULL;
    return bench_impl_ok(c) ? bench_impl_median(c) : NAN;
}

/* conc on row a against conc on row b: a/b (oriented by the row's better)
 * at least want. */
static void self_target(bench_tally_t *t, const char *a, const char *b, double want, const char *text)
{
    double va = conc_median(a), vb = conc_median(b);
    if (!bench_row_find(a) || !bench_row_find(b))
        return;
    if (isnan(va) || isnan(vb) || !(va > 0) || !(vb > 0)) {
        printf("  [ n/a ] %-52s (no valid measurement)\n", text);
        return;
    }
    bool lower = bench_row_find(a)->lower_better;
    double ratio = va / vb;
    int met = lower ? ratio <= want : ratio >= want;
    printf("  [%s] %-52s conc %s is %.2fx conc %s\n", met ? " MET " : "MISSED", text, a, ratio, b);
    t->met += met;
    t->missed += !met;
}

static void list_rows(void)
{
    for (int k = 0; k < NPOINTS; k++)
        printf("%s\n", points[k].name);
}

static int extra_arg(const char *opt, const char *val)
{
    (void)val;
    if (strcmp(opt, "--quick") == 0) {
        opt_quick = true;
        return 1;
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: scaling_bench [--quick] [--reps N] [--scale F] [--only prefix,prefix] [--jsonl FILE]\n"
               "                     [--impls conc,pthread,...] [--list]\n");
}

int main(int argc, char **argv)
{
    if (argc >= 6 && strcmp(argv[1], "--child") == 0)
        return child_main(argv[2], atol(argv[3]), atoi(argv[4]), atol(argv[5]));
    bench_args_t args = {.prog = "scaling_bench", .usage = usage, .list = list_rows, .extra = extra_arg,
                         .reps = &opt_reps, .scale = &opt_scale, .only = &opt_only, .impls = &opt_impls,
                         .jsonl = &opt_jsonl};
    int st = bench_parse_args(argc, argv, &args); /* --python / --python-script: ignored */
    if (st >= 0)
        return st;
    if (opt_quick) {
        if (opt_reps > 3)
            opt_reps = 3;
        opt_scale *= 0.1;
    }
    (void)bench_python_targets; /* no Python peer here */
    static char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl > 0) {
        self[sl] = 0;
        g_self = self;
    }

    bench_note_load();
    double t_start = bench_now();
    for (int k = 0; k < NPOINTS; k++)
        if (selected(&points[k]))
            run_point(&points[k]);
    if (bench_nrows == 0) {
        fprintf(stderr, "scaling_bench: no row matches --only %s\n", opt_only ? opt_only : "");
        return 2;
    }

    bench_print_header("scaling", opt_reps);
    for (int i = 0; i < bench_nrows; i++)
        bench_print_row(&bench_rows[i]);

    printf("\ntargets (issue 18), as ratios of medians:\n");
    bench_tally_t tally = {0, 0};
    self_target(&tally, "scaling.lock.t64", "scaling.lock.t2", 0.8, "lock: conc at 64 threads >= 0.8x conc at 2");
    bench_target_tally(&tally, "scaling.lock.t64", "pthread", 2.0, "lock: conc at 64 threads >= 2x pthread");
    self_target(&tally, "scaling.queue.p16", "scaling.queue.p1", 0.5, "queue: conc 16p16c >= 0.5x conc 1p1c");
    self_target(&tally, "scaling.green_spawn.1m", "scaling.green_spawn.1k", 1.5,
                "green spawn+join: 1M alive <= 1.5x 1k alive");
    self_target(&tally, "scaling.green_spawn_all.1m", "scaling.green_spawn_all.1k", 1.5,
                "green spawn all, join all: 1M <= 1.5x 1k");
    return bench_finish("scaling", &tally, opt_jsonl, t_start);
}
