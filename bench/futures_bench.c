/*
 * bench/futures_bench.c — the futures module's benchmark (issue 4): conc's
 * ThreadPoolExecutor against the task pools a C, C++ or Python programmer
 * would otherwise use, in the same run, with workers = cores.
 *
 * Rows (see bench/README.md):
 *   pool.throughput  tasks/s: submit 1M empty tasks, then wait for all
 *                    (Python 100k)          conc tbb openmp libuv glib python
 *   pool.latency     us per submit -> result round trip of one empty task,
 *                    50k round trips one after the other (Python 10k)
 *                                           conc glib libuv python
 *   pool.nested      ms per recursive fib(27) where every call with n > 15
 *                    submits both halves as tasks and waits for them (the
 *                    issue says "s"; ms keeps the JSON precise)
 *                                           conc tbb openmp
 *
 * The impls:
 *   conc    conc_thread_pool_new with max_workers = cores, created once per
 *           row (for pool.nested with .leapfrog = true, as docs/futures.md
 *           recommends for fork-join code); conc_submit per task (each has its own future), then
 *           conc_future_result on each (in submission order) and
 *           conc_future_free, all inside the clock
 *   tbb     tbb::task_group::run + wait() in a task_arena of `cores`
 *           threads (bench/futures_peers.cpp)
 *   openmp  #pragma omp task in a `single` of a parallel region of `cores`
 *           threads + taskwait (bench/futures_omp.c, libgomp)
 *   libuv   uv_queue_work with UV_THREADPOOL_SIZE = cores (set before libuv
 *           starts its pool); uv_run until every after_work callback ran.
 *           The uv_work_t requests are caller memory, one array allocated
 *           before the clock (libuv does no allocation per request)
 *   glib    GThreadPool with `cores` exclusive threads. Throughput: push
 *           every task, then g_thread_pool_free(pool, FALSE, TRUE), which
 *           returns once every queued task ran (a fresh pool per run, made
 *           before the clock). Latency: the task pushes its argument onto
 *           a reply GAsyncQueue that the submitter pops
 *   python  bench/futures_python.py: concurrent.futures.ThreadPoolExecutor
 *           (max_workers = cores), submit + result(), run with Debian's
 *           /usr/bin/python3, once per repetition inside the rotation
 *
 * Every task of every C impl is the same non-inlined function, fut_touch(p):
 * it adds 1 to its own byte of a slot array (cleared before the clock); a
 * run passes only when afterwards every byte is exactly 1 (each task ran
 * once), every call succeeded and conc's futures returned their task's
 * argument. pool.latency also checks each round trip's result; pool.nested
 * checks fib(27) = 196418 on every run. The leaves of fib are the same
 * plain recursive function (fut_fib_seq) for all impls.
 *
 * Every measurement runs on one long-lived runner thread (so libgomp and
 * TBB keep their teams between runs) while the main thread waits with a
 * deadline: a measurement that does not finish in time (a deadlock, e.g. a
 * pool whose waiting workers do not help with the nested row) is reported
 * as FAILED, its impl is skipped for the rest of the program, and the
 * program exits with _exit so process-exit hooks do not wait for it.
 *
 * Method as in queue_bench.c: one discarded warm-up run per impl, then the
 * repetitions interleaved, the order rotated each time; medians. The
 * warm-up does the full work (not a quarter): pools that keep memory
 * between runs (conc's recycled futures, libuv's request array, TBB's
 * allocator) would otherwise take their first page faults in the first
 * measured run. A 50 ms pause precedes every measurement (--settle).
 *
 * Usage: futures_bench [--reps N] [--scale F] [--only row,row] [--impls conc,tbb,...] [--settle MS]
 *                      [--jsonl FILE]
 *                      [--python PYTHON --python-script futures_python.py] [--list]
 */
#define _GNU_SOURCE
#include "bench_util.h"

#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>

#include "conc/base.h"

#include "conc/futures.h"

#include "futures_peers.h"

#ifdef CONC_BENCH_HAVE_GLIB
#include <glib.h>
#endif
#ifdef CONC_BENCH_HAVE_LIBUV
#include <uv.h>
#endif

/* --------------------------------------------- the tasks, shared by all */

__attribute__((noinline)) void *fut_touch(void *p)
{
    volatile unsigned char *b = p;
    *b = (unsigned char)(*b + 1);
    return p;
}

__attribute__((noinline)) long fut_fib_seq(int n)
{
    return n < 2 ? n : fut_fib_seq(n - 1) + fut_fib_seq(n - 2);
}

/* ----------------------------------------- stubs for peers not built in */

#ifndef CONC_BENCH_HAVE_FPEERS
int fpeer_tbb_available(char *why, size_t whylen)
{
    snprintf(why, whylen, "not built: CMake found no C++ compiler for bench/futures_peers.cpp");
    return 0;
}
double fpeer_tbb_throughput(long n, unsigned char *slots, int workers, char *why, size_t whylen)
{
    (void)n, (void)slots, (void)workers;
    fpeer_tbb_available(why, whylen);
    return -1;
}
double fpeer_tbb_parallel_for(long n, unsigned char *slots, int workers, char *why, size_t whylen)
{
    (void)n, (void)slots, (void)workers;
    fpeer_tbb_available(why, whylen);
    return -1;
}
double fpeer_tbb_fib(int n, int cutoff, int workers, long *value, char *why, size_t whylen)
{
    (void)n, (void)cutoff, (void)workers, (void)value;
    fpeer_tbb_available(why, whylen);
    return -1;
}
#endif

#ifndef CONC_BENCH_HAVE_OPENMP
int fomp_available(char *why, size_t whylen)
{
    snprintf(why, whylen, "not built: CMake found no OpenMP (find_package(OpenMP)) for bench/futures_omp.c");
    return 0;
}
double fomp_throughput(long n, unsigned char *slots, int workers, char *why, size_t whylen)
{
    (void)n, (void)slots, (void)workers;
    fomp_available(why, whylen);
    return -1;
}
double fomp_fib(int n, int cutoff, int workers, long *value, char *why, size_t whylen)
{
    (void)n, (void)cutoff, (void)workers, (void)value;
    fomp_available(why, whylen);
    return -1;
}
#endif

/* ----------------------------------------------------------- settings */

enum { IMPL_CONC, IMPL_TBB, IMPL_TBB_PFOR, IMPL_OPENMP, IMPL_LIBUV, IMPL_GLIB, IMPL_PYTHON, NIMPLS };
static const char *impl_names[] = {"conc", "tbb", "tbb_parallel_for", "openmp", "libuv", "glib", "python"};

#define THROUGHPUT_TASKS 1000000L
#define LATENCY_TRIPS 50000L
#define FIB_N 27
#define FIB_CUTOFF 15
#define FIB_VALUE 196418L
#define FIB_RUNS 20 /* fib(27)s per measurement (about 1 ms each): the value is their mean */

static int opt_reps = 7;
static double opt_scale = 1.0;
static const char *opt_only;
static const char *opt_impls; /* --impls conc,tbb: run only these */
static long opt_settle_ms = 50; /* --settle: pause before every measurement */
static const char *opt_jsonl;
static const char *opt_python;
static const char *opt_python_script;

static int g_workers = 2;     /* = online CPUs */
static bool g_warmup;         /* this is the discarded warm-up run (same work) */
static bool g_hung[NIMPLS];   /* an impl whose run never finished: not run again */
static bool g_abandoned;      /* some runner thread was left hanging: leave with _exit */

static long scaled(long n)
{
    long v = (long)((double)n * opt_scale);
    return v < 1 ? 1 : v;
}

#define FAIL(...) (snprintf(why, whylen, __VA_ARGS__), NAN)

/* The slot array: one byte per task, every byte must be 1 after a run. */
static unsigned char *g_slots;
static long g_nslots;

static unsigned char *slots_get(long n)
{
    if (n > g_nslots) {
        free(g_slots);
        g_slots = malloc((size_t)n);
        if (!g_slots) {
            fprintf(stderr, "futures_bench: out of memory\n");
            exit(1);
        }
        g_nslots = n;
    }
    memset(g_slots, 0, (size_t)n);
    return g_slots;
}

/* Number of slots in [0, n) that are not exactly 1. */
static long slots_bad(long n)
{
    long bad = 0;
    for (long i = 0; i < n; i++)
        bad += g_slots[i] != 1;
    return bad;
}

/* ------------------------------------------------------------------ conc */

static conc_executor_t *g_ex; /* the current row's pool */

/* leapfrog: the pool of the nested row (fork-join: docs/futures.md
 * recommends .leapfrog there); the other rows use the default pool. A
 * fresh pool is made per row, so the row's first call decides. */
static int conc_pool_for(bool leapfrog, char *why, size_t whylen)
{
    if (g_ex)
        return 0;
    conc_thread_pool_opts_t o = {0};
    o.max_workers = (size_t)g_workers;
    o.leapfrog = leapfrog;
    o.thread_name_prefix = "bench";
    int rc = conc_thread_pool_new(&g_ex, &o);
    if (rc != 0) {
        snprintf(why, whylen, "conc_thread_pool_new: %s", conc_errname(rc));
        g_ex = NULL;
    }
    return rc;
}

static void conc_pool_free(void)
{
    if (g_ex && !g_hung[IMPL_CONC]) { /* a hung pool would never shut down */
        int rc = conc_executor_free(g_ex);
        if (rc != 0)
            fprintf(stderr, "futures_bench: conc_executor_free: %s\n", conc_errname(rc));
    }
    g_ex = NULL;
}

static int conc_pool(char *why, size_t whylen)
{
    return conc_pool_for(false, why, whylen);
}

static conc_future_t **g_fs;
static long g_nfs;

static double conc_throughput(long n, unsigned char *slots, char *why, size_t whylen)
{
    if (conc_pool(why, whylen) != 0)
        return NAN;
    if (n > g_nfs) {
        free(g_fs);
        g_fs = malloc((size_t)n * sizeof *g_fs);
        if (!g_fs)
            return FAIL("out of memory");
        g_nfs = n;
    }
    conc_future_t **fs = g_fs;
    long submitted = 0, wrong = 0;
    int err = 0;
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        int rc = conc_submit(g_ex, &fs[i], fut_touch, slots + i);
        if (rc != 0) {
            err = rc;
            break;
        }
        submitted++;
    }
    for (long i = 0; i < submitted; i++) {
        void *r = NULL;
        int rc = conc_future_result(fs[i], CONC_FOREVER, &r);
        if (rc != 0 && !err)
            err = rc;
        wrong += r != slots + i;
        conc_future_free(fs[i]);
    }
    double t1 = bench_now();
    if (err)
        return FAIL("conc_submit/conc_future_result returned %s", conc_errname(err));
    if (wrong)
        return FAIL("%ld futures returned something other than their task's result", wrong);
    return t1 - t0;
}

static double conc_latency(long n, char *why, size_t whylen)
{
    if (conc_pool(why, whylen) != 0)
        return NAN;
    unsigned char *b = slots_get(1);
    long wrong = 0;
    int err = 0;
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        conc_future_t *f;
        void *r = NULL;
        int rc = conc_submit(g_ex, &f, fut_touch, b);
        if (rc == 0) {
            rc = conc_future_result(f, CONC_FOREVER, &r);
            conc_future_free(f);
        }
        if (rc != 0) {
            err = rc;
            break;
        }
        wrong += r != b;
    }
    double t1 = bench_now();
    if (err)
        return FAIL("conc_submit/conc_future_result returned %s", conc_errname(err));
    if (wrong || *b != (unsigned char)n)
        return FAIL("round trips returned the wrong result or did not run the task (%ld wrong)", wrong);
    return t1 - t0;
}

static atomic_int g_conc_fib_err;

static long conc_fib(int n);

static void *conc_fib_task(void *arg)
{
    return (void *)(intptr_t)conc_fib((int)(intptr_t)arg);
}

static long conc_fib(int n)
{
    if (n <= FIB_CUTOFF)
        return fut_fib_seq(n);
    conc_future_t *fa = NULL, *fb = NULL;
    void *ra = NULL, *rb = NULL;
    int rc = conc_submit(g_ex, &fa, conc_fib_task, (void *)(intptr_t)(n - 1));
    if (rc == 0)
        rc = conc_submit(g_ex, &fb, conc_fib_task, (void *)(intptr_t)(n - 2));
    if (rc == 0)
        rc = conc_future_result(fa, CONC_FOREVER, &ra);
    if (rc == 0)
        rc = conc_future_result(fb, CONC_FOREVER, &rb);
    if (fa)
        conc_future_free(fa);
    if (fb)
        conc_future_free(fb);
    if (rc != 0) {
        int zero = 0;
        atomic_compare_exchange_strong(&g_conc_fib_err, &zero, rc);
        return 0;
    }
    return (long)(intptr_t)ra + (long)(intptr_t)rb;
}

static double conc_nested(long *value, char *why, size_t whylen)
{
    if (conc_pool_for(true, why, whylen) != 0)
        return NAN;
    atomic_store(&g_conc_fib_err, 0);
    double t0 = bench_now();
    *value = conc_fib(FIB_N);
    double t1 = bench_now();
    int err = atomic_load(&g_conc_fib_err);
    if (err)
        return FAIL("conc_submit/conc_future_result returned %s", conc_errname(err));
    return t1 - t0;
}

/* ----------------------------------------------------------------- libuv */

#ifdef CONC_BENCH_HAVE_LIBUV
static uv_loop_t g_loop;
static bool g_loop_ready;
static long g_uv_after, g_uv_errors;
static uv_work_t *g_reqs;
static long g_nreqs;

static void uv_touch(uv_work_t *req)
{
    fut_touch(req->data);
}

static void uv_after(uv_work_t *req, int status)
{
    (void)req;
    g_uv_after++;
    g_uv_errors += status != 0;
}

static int uv_ready(char *why, size_t whylen)
{
    if (!g_loop_ready) {
        int rc = uv_loop_init(&g_loop);
        if (rc != 0) {
            snprintf(why, whylen, "uv_loop_init: %s", uv_strerror(rc));
            return rc;
        }
        g_loop_ready = true;
    }
    return 0;
}

static double uv_throughput(long n, unsigned char *slots, char *why, size_t whylen)
{
    if (uv_ready(why, whylen) != 0)
        return NAN;
    if (n > g_nreqs) {
        free(g_reqs);
        g_reqs = calloc((size_t)n, sizeof *g_reqs);
        if (!g_reqs)
            return FAIL("out of memory");
        g_nreqs = n;
    }
    g_uv_after = g_uv_errors = 0;
    int err = 0;
    long queued = 0;
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        g_reqs[i].data = slots + i;
        int rc = uv_queue_work(&g_loop, &g_reqs[i], uv_touch, uv_after);
        if (rc != 0) {
            err = rc;
            break;
        }
        queued++;
    }
    uv_run(&g_loop, UV_RUN_DEFAULT);
    double t1 = bench_now();
    if (err)
        return FAIL("uv_queue_work: %s", uv_strerror(err));
    if (g_uv_after != queued || g_uv_errors)
        return FAIL("%ld of %ld after_work callbacks ran, %ld with an error", g_uv_after, queued, g_uv_errors);
    return t1 - t0;
}

static double uv_latency(long n, char *why, size_t whylen)
{
    if (uv_ready(why, whylen) != 0)
        return NAN;
    unsigned char *b = slots_get(1);
    uv_work_t req;
    memset(&req, 0, sizeof req);
    req.data = b;
    g_uv_after = g_uv_errors = 0;
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        int rc = uv_queue_work(&g_loop, &req, uv_touch, uv_after);
        if (rc != 0)
            return FAIL("uv_queue_work: %s", uv_strerror(rc));
        uv_run(&g_loop, UV_RUN_DEFAULT);
    }
    double t1 = bench_now();
    if (g_uv_after != n || g_uv_errors || *b != (unsigned char)n)
        return FAIL("%ld of %ld round trips completed (%ld errors)", g_uv_after, n, g_uv_errors);
    return t1 - t0;
}
#endif

/* ------------------------------------------------------------------ GLib */

#ifdef CONC_BENCH_HAVE_GLIB
static void glib_touch(gpointer data, gpointer user_data)
{
    (void)user_data;
    fut_touch(data);
}

static double glib_throughput(long n, unsigned char *slots, char *why, size_t whylen)
{
    GError *gerr = NULL;
    GThreadPool *pool = g_thread_pool_new(glib_touch, NULL, g_workers, TRUE, &gerr);
    if (!pool) {
        double r = FAIL("g_thread_pool_new: %s", gerr ? gerr->message : "?");
        g_clear_error(&gerr);
        return r;
    }
    bool ok = true;
    double t0 = bench_now();
    for (long i = 0; i < n; i++)
        ok &= g_thread_pool_push(pool, slots + i, NULL);
    g_thread_pool_free(pool, FALSE, TRUE); /* returns once every queued task ran */
    double t1 = bench_now();
    if (!ok)
        return FAIL("g_thread_pool_push failed");
    return t1 - t0;
}

static void glib_touch_reply(gpointer data, gpointer user_data)
{
    fut_touch(data);
    g_async_queue_push((GAsyncQueue *)user_data, data);
}

static double glib_latency(long n, char *why, size_t whylen)
{
    unsigned char *b = slots_get(1);
    GAsyncQueue *reply = g_async_queue_new();
    GError *gerr = NULL;
    GThreadPool *pool = g_thread_pool_new(glib_touch_reply, reply, g_workers, TRUE, &gerr);
    if (!pool) {
        double r = FAIL("g_thread_pool_new: %s", gerr ? gerr->message : "?");
        g_clear_error(&gerr);
        g_async_queue_unref(reply);
        return r;
    }
    long wrong = 0;
    bool ok = true;
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        ok &= g_thread_pool_push(pool, b, NULL);
        wrong += g_async_queue_pop(reply) != (gpointer)b;
    }
    double t1 = bench_now();
    g_thread_pool_free(pool, FALSE, TRUE);
    g_async_queue_unref(reply);
    if (!ok)
        return FAIL("g_thread_pool_push failed");
    if (wrong || *b != (unsigned char)n)
        return FAIL("round trips returned the wrong result or did not run the task (%ld wrong)", wrong);
    return t1 - t0;
}
#endif

/* ------------------------------------------------------------------ rows */

static double pool_throughput(int impl, char *why, size_t whylen)
{
    long n = scaled(THROUGHPUT_TASKS);
    unsigned char *slots = slots_get(n);
    double secs = NAN;
    switch (impl) {
    case IMPL_CONC:
        secs = conc_throughput(n, slots, why, whylen);
        break;
    case IMPL_TBB:
        secs = fpeer_tbb_throughput(n, slots, g_workers, why, whylen);
        break;
    case IMPL_TBB_PFOR:
        secs = fpeer_tbb_parallel_for(n, slots, g_workers, why, whylen);
        break;
    case IMPL_OPENMP:
        secs = fomp_throughput(n, slots, g_workers, why, whylen);
        break;
#ifdef CONC_BENCH_HAVE_LIBUV
    case IMPL_LIBUV:
        secs = uv_throughput(n, slots, why, whylen);
        break;
#endif
#ifdef CONC_BENCH_HAVE_GLIB
    case IMPL_GLIB:
        secs = glib_throughput(n, slots, why, whylen);
        break;
#endif
    default:
        return FAIL("impl not built in");
    }
    if (isnan(secs) || secs < 0)
        return NAN;
    long bad = slots_bad(n);
    if (bad)
        return FAIL("%ld of %ld tasks did not run exactly once", bad, n);
    return (double)n / secs;
}

static double pool_latency(int impl, char *why, size_t whylen)
{
    long n = scaled(LATENCY_TRIPS);
    double secs;
    switch (impl) {
    case IMPL_CONC:
        secs = conc_latency(n, why, whylen);
        break;
#ifdef CONC_BENCH_HAVE_LIBUV
    case IMPL_LIBUV:
        secs = uv_latency(n, why, whylen);
        break;
#endif
#ifdef CONC_BENCH_HAVE_GLIB
    case IMPL_GLIB:
        secs = glib_latency(n, why, whylen);
        break;
#endif
    default:
        return FAIL("impl not built in");
    }
    return isnan(secs) ? NAN : secs / (double)n * 1e6;
}

static double pool_nested(int impl, char *why, size_t whylen)
{
    int runs = FIB_RUNS;
    double total = 0;
    for (int k = 0; k < runs; k++) {
        long v = -1;
        double secs;
        switch (impl) {
        case IMPL_CONC:
            secs = conc_nested(&v, why, whylen);
            break;
        case IMPL_TBB:
            secs = fpeer_tbb_fib(FIB_N, FIB_CUTOFF, g_workers, &v, why, whylen);
            break;
        case IMPL_OPENMP:
            secs = fomp_fib(FIB_N, FIB_CUTOFF, g_workers, &v, why, whylen);
            break;
        default:
            return FAIL("impl not built in");
        }
        if (isnan(secs) || secs < 0)
            return NAN;
        if (v != FIB_VALUE)
            return FAIL("fib(%d) came out as %ld, not %ld", FIB_N, v, FIB_VALUE);
        total += secs;
    }
    return total / runs * 1e3;
}

/* ------------------------------------------------ the runner thread */

typedef double (*measure_fn)(int impl, char *why, size_t whylen);

typedef struct runner {
    pthread_mutex_t m;
    pthread_cond_t c;
    int state; /* 0 idle, 1 job posted, 2 job done */
    measure_fn fn;
    int impl;
    bool warmup;
    double val;
    char why[200];
} runner_t;

static runner_t *g_runner;

static void *runner_main(void *arg)
{
    runner_t *r = arg;
    pthread_mutex_lock(&r->m);
    for (;;) {
        while (r->state != 1)
            pthread_cond_wait(&r->c, &r->m);
        pthread_mutex_unlock(&r->m);
        g_warmup = r->warmup;
        r->why[0] = 0;
        double v = r->fn(r->impl, r->why, sizeof r->why);
        pthread_mutex_lock(&r->m);
        r->val = v;
        r->state = 2;
        pthread_cond_broadcast(&r->c);
    }
    return NULL;
}

static runner_t *runner_new(void)
{
    runner_t *r = calloc(1, sizeof *r);
    pthread_condattr_t ca;
    pthread_t th;
    if (!r)
        return NULL;
    pthread_mutex_init(&r->m, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->c, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&th, NULL, runner_main, r) != 0) {
        free(r);
        return NULL;
    }
    pthread_detach(th);
    return r;
}

/* Run fn(impl) on the runner thread; wait at most `timeout` seconds. */
static double run_job(measure_fn fn, int impl, bool warmup, double timeout, char *why, size_t whylen)
{
    if (!g_runner && !(g_runner = runner_new()))
        return FAIL("cannot start the runner thread");
    runner_t *r = g_runner;
    pthread_mutex_lock(&r->m);
    r->fn = fn;
    r->impl = impl;
    r->warmup = warmup;
    r->state = 1;
    pthread_cond_broadcast(&r->c);
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += (time_t)timeout;
    int rc = 0;
    while (r->state != 2 && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&r->c, &r->m, &dl);
    if (r->state != 2) {
        pthread_mutex_unlock(&r->m);
        g_runner = NULL; /* leave it hanging; the next job gets a new runner */
        g_hung[impl] = true;
        g_abandoned = true;
        return FAIL("did not finish within %.0f s: deadlock or lost wake-up (abandoned; %s not run again)",
                    timeout, impl_names[impl]);
    }
    r->state = 0;
    double v = r->val;
    if (isnan(v))
        snprintf(why, whylen, "%s", r->why);
    pthread_mutex_unlock(&r->m);
    return v;
}

/* ------------------------------------------------------------- driver */

typedef struct rowdef {
    const char *name;
    const char *unit;
    bool lower_better;
    measure_fn fn;
    double timeout; /* per measurement, seconds */
    int impls[NIMPLS];
    int nimpls;
} rowdef_t;

static const rowdef_t rowdefs[] = {
    {"pool.throughput", "tasks/s", false, pool_throughput, 120,
     {IMPL_CONC, IMPL_TBB, IMPL_TBB_PFOR, IMPL_OPENMP, IMPL_LIBUV, IMPL_GLIB, IMPL_PYTHON}, 7},
    {"pool.latency", "us", true, pool_latency, 60, {IMPL_CONC, IMPL_GLIB, IMPL_LIBUV, IMPL_PYTHON}, 4},
    {"pool.nested", "ms", true, pool_nested, 30, {IMPL_CONC, IMPL_TBB, IMPL_OPENMP}, 3},
};
#define NROWDEFS ((int)(sizeof rowdefs / sizeof rowdefs[0]))

static bool selected(const char *name)
{
    return bench_in_list(opt_only, name);
}

static bool impl_available(int impl, char *why, size_t whylen)
{
    if (!bench_in_list(opt_impls, impl_names[impl])) {
        snprintf(why, whylen, "not selected (--impls %s)", opt_impls);
        return false;
    }
    switch (impl) {
    case IMPL_CONC:
        return true;
    case IMPL_TBB:
    case IMPL_TBB_PFOR:
        return fpeer_tbb_available(why, whylen);
    case IMPL_OPENMP:
        return fomp_available(why, whylen);
    case IMPL_LIBUV:
#ifdef CONC_BENCH_HAVE_LIBUV
        return true;
#else
        snprintf(why, whylen, "libuv (pkg-config libuv, Debian libuv1-dev) was not found when the bench was built");
        return false;
#endif
    case IMPL_GLIB:
#ifdef CONC_BENCH_HAVE_GLIB
        return true;
#else
        snprintf(why, whylen, "GLib (pkg-config glib-2.0) was not found when the bench was built");
        return false;
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
        return false;
    }
}

/* One Python measurement (the script warms up on a tenth of the work, then
 * measures one run), in the same rotation as the C impls. */
static const char *g_python_row;

static double python_once(int impl, char *why, size_t whylen)
{
    (void)impl;
    char scale[32], workers[16];
    snprintf(scale, sizeof scale, "%g", opt_scale);
    snprintf(workers, sizeof workers, "%d", g_workers);
    char *argv[] = {(char *)opt_python, (char *)opt_python_script, "--reps", "1", "--scale", scale,
                    "--workers", workers, (char *)g_python_row, NULL};
    double val;
    int n = bench_run_peer(argv, &val, 1, why, whylen);
    if (n < 0)
        return NAN;
    if (n < 1)
        return FAIL("python peer printed no value");
    return val;
}

static double measure(const rowdef_t *d, int impl, bool warmup, char *why, size_t whylen)
{
    /* Let the previous impl's threads go to sleep first: pools spin (or
     * yield) for a while after their work runs out, and on 2 cores a
     * spinning thread of the last impl takes a CPU from the next one. */
    if (opt_settle_ms > 0) {
        struct timespec ts = {(time_t)(opt_settle_ms / 1000), (long)(opt_settle_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (impl == IMPL_PYTHON) {
        g_python_row = d->name;
        return run_job(python_once, impl, false, d->timeout + 60, why, whylen);
    }
    return run_job(d->fn, impl, warmup, d->timeout, why, whylen);
}

static void run_row(const rowdef_t *d)
{
    bench_row_t *r = bench_row_new(d->name, d->unit, d->lower_better);
    bench_impl_t *ims[NIMPLS];
    char why[200];
    fprintf(stderr, "running %s ...\n", d->name);
    for (int i = 0; i < d->nimpls; i++) {
        int impl = d->impls[i];
        ims[i] = bench_impl_add(r, impl_names[impl]);
        why[0] = 0;
        if (!impl_available(impl, why, sizeof why)) {
            bench_impl_note(ims[i], BENCH_SKIPPED, "%s", why);
            continue;
        }
        if (g_hung[impl]) {
            bench_impl_note(ims[i], BENCH_FAILED, "not run: an earlier run of %s never finished",
                            impl_names[impl]);
            continue;
        }
        if (impl == IMPL_PYTHON)
            continue; /* the script warms up on every run */
        double v = measure(d, impl, true, why, sizeof why); /* warm-up, discarded */
        if (isnan(v))
            bench_impl_note(ims[i], BENCH_FAILED, "%s", why);
    }
    for (int rep = 0; rep < opt_reps; rep++) {
        for (int j = 0; j < d->nimpls; j++) {
            int i = (j + rep) % d->nimpls;
            if (ims[i]->status != BENCH_OK)
                continue;
            why[0] = 0;
            double v = measure(d, d->impls[i], false, why, sizeof why);
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
    conc_pool_free(); /* a fresh pool per row */
}

static void usage(FILE *f)
{
    fprintf(f, "usage: futures_bench [--reps N] [--scale F] [--only row,row] [--impls impl,impl] [--settle MS] [--jsonl FILE]\n"
               "                     [--python PYTHON --python-script futures_python.py] [--list]\n");
}

static void list_rows(void)
{
    for (int k = 0; k < NROWDEFS; k++)
        printf("%s\n", rowdefs[k].name);
}

int main(int argc, char **argv)
{
    static const bench_args_t args = {
        .prog = "futures_bench", .usage = usage, .list = list_rows, .reps = &opt_reps, .scale = &opt_scale,
        .only = &opt_only, .impls = &opt_impls, .jsonl = &opt_jsonl, .python = &opt_python,
        .python_script = &opt_python_script, .settle_ms = &opt_settle_ms};
    int st = bench_parse_args(argc, argv, &args);
    if (st >= 0)
        return st;

#ifdef CONC_BENCH_HAVE_OPENMP
    /* libgomp reads OMP_WAIT_POLICY when it is loaded, before main: set it
     * and start again. With the default policy its threads spin at the end
     * of a parallel region, and on a machine shared with other work every
     * region then costs a scheduler tick (about 8 ms per pool.nested run
     * here, against 0.8 ms passive): that measures the machine, not
     * OpenMP. Passive is OpenMP at its best here; set OMP_WAIT_POLICY
     * yourself to measure another policy. */
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv);
        fprintf(stderr, "note: could not restart with OMP_WAIT_POLICY=passive (%s); openmp runs with "
                        "libgomp's default policy\n", strerror(errno));
    }
#endif

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    g_workers = ncpu > 0 ? (int)ncpu : 2;
    {
        /* libuv sizes its (process-wide) pool from this when it first starts it */
        char w[16];
        snprintf(w, sizeof w, "%d", g_workers);
        setenv("UV_THREADPOOL_SIZE", w, 1);
    }

    {
        char why[200];
        for (int k = 0; k < NIMPLS; k++)
            if (!impl_available(k, why, sizeof why))
                fprintf(stderr, "note: %s skipped: %s\n", impl_names[k], why);
    }

    bench_note_load();
    double t_start = bench_now();
    for (int k = 0; k < NROWDEFS; k++)
        if (selected(rowdefs[k].name))
            run_row(&rowdefs[k]);
    if (bench_nrows == 0) {
        fprintf(stderr, "futures_bench: no row matches --only %s\n", opt_only);
        return 2;
    }

    bench_print_header("futures", opt_reps);
    printf("(workers = %d for every pool; pool.nested is fib(%d) with tasks above n = %d, mean of %d runs; "
           "OMP_WAIT_POLICY=%s)\n",
           g_workers, FIB_N, FIB_CUTOFF, FIB_RUNS, getenv("OMP_WAIT_POLICY") ? getenv("OMP_WAIT_POLICY") : "unset");
    for (int i = 0; i < bench_nrows; i++)
        bench_print_row(&bench_rows[i]);

    printf("\ntargets (issue 4, 2-core machine), as ratios of medians:\n");
    bench_tally_t tally = {0, 0};
    bench_target_tally(&tally, "pool.throughput", "tbb", 2.0, "pool.throughput: conc >= 2.0x tbb");
    /* times: "conc <= k x peer" is "peer/conc >= 1/k" */
    bench_target_tally(&tally, "pool.latency", "glib", 1 / 0.2, "pool.latency: conc time <= 0.2x glib");
    bench_target_tally(&tally, "pool.nested", "tbb", 1 / 1.5, "pool.nested: conc time <= 1.5x tbb");
    bench_python_targets(&tally, 100.0);
    printf("targets (issue 18: each peer at its best):\n");
    bench_target_tally(&tally, "pool.throughput", "tbb", 2.0, "pool.throughput: conc >= 2.0x tbb task_group");
    bench_target_tally(&tally, "pool.nested", "tbb", 1.0, "pool.nested: conc time <= 1.0x tbb");
    printf("  (where conc's time goes on the missed ones: bench/README.md, \"Issue 18\")\n");
    {
        /* the ceiling: no per-task submission at all (informational) */
        bench_row_t *r = bench_row_find("pool.throughput");
        double s = r ? bench_speedup(r, "tbb_parallel_for") : NAN;
        if (!isnan(s))
            printf("  (info) pool.throughput: conc is %.3gx tbb_parallel_for, the \"submitter helps\" ceiling\n", s);
    }
    int status = bench_finish("futures", &tally, opt_jsonl, t_start);
    fflush(stdout);
    fflush(stderr);
    if (g_abandoned)
        _exit(status); /* a hung pool would block the exit-time shutdown */
    return status;
}
