/*
 * bench/pool_bench.c — the process pools' and the Manager's benchmark
 * (issue 6, multiprocessing part 2): conc's ProcessPoolExecutor, Pool and
 * Manager against CPython's, in the same run, 2 workers.
 *
 * Rows (see bench/README.md):
 *   ppe.throughput     tasks/s: submit 100k trivial tasks (Python 20k) to a
 *                      2-worker executor, then wait for every result
 *   ppe.latency        us per submit -> result of one trivial task (3000
 *                      one after the other; Python 500)
 *   pool.map_chunked   items/s: Pool(2).map squaring 1M longs with the
 *                      default chunksize, results copied out (Python: the
 *                      same 1M ints, Pool.map returns its list)
 *   ppe.broken_detect  ms from the SIGKILL of a worker busy with a task
 *                      until that task's future has failed (CONC_EBROKEN /
 *                      BrokenProcessPool)
 *   manager.dict_ops   set+get pairs/s on a Manager dict proxy, from a
 *                      forked child of the process that started the
 *                      manager (20k pairs; Python 2000)
 *   pool.bytes_throughput
 *                      tasks/s: submit 100k trivial tasks to a 2-worker
 *                      ThreadPoolExecutor, then wait for every result:
 *                      impl conc through the bytes path (conc_submit_bytes
 *                      of 8 bytes, conc_future_bytes: the call that runs
 *                      unchanged on a process pool), impl conc_submit
 *                      through the pthread-shaped one (conc_submit of a
 *                      word, conc_future_result) — the cost of the one-word
 *                      switch when the work stays in threads (no Python peer)
 *   manager.sem_ops    acquire+release pairs/s on a Manager Semaphore(1)
 *                      proxy, from the process that started the manager
 *                      (20k pairs; Python 2000)
 *
 * The impls:
 *   conc    ppe.*: conc_process_pool_new({.max_workers = 2, .method =
 *           CONC_FORK}), conc_process_pool_submit(ident, &i, 8) and
 *           conc_future_bytes (the result must be i back), futures freed
 *           inside the clock; pool.map_chunked: conc_pool_new({.processes
 *           = 2, CONC_FORK}), conc_pool_map(square, longs, 8, n, 0) +
 *           conc_results_copy into an array (every square checked after
 *           the clock) + conc_results_free; broken_detect: a task that
 *           spins (and writes its pid to shared memory first), kill(pid,
 *           SIGKILL), conc_future_bytes(f, 10 s) must return CONC_EBROKEN;
 *           manager.dict_ops: conc_manager_start (fork), conc_manager_dict,
 *           the proxy used by a conc_process child (CONC_FORK):
 *           conc_mdict_set + conc_mdict_get (value checked, freed)
 *   python  bench/pool_python.py with /usr/bin/python3: the same with
 *           ProcessPoolExecutor(2, fork context), Pool(2).map,
 *           BrokenProcessPool, Manager().dict() (fork context: Python
 *           3.11's default on Linux)
 *
 * Timing: pools and the manager are created and warmed up (every worker
 * has run tasks) before the clock, in C and in Python; their shutdown is
 * outside it. manager.dict_ops is timed inside the child, which makes its
 * first call (the proxy's reconnect after fork) and reports ready before
 * it waits on the gate.
 *
 * Method as in process_bench.c: one discarded warm-up run per C impl
 * (a quarter of the work), then the repetitions interleaved; medians. The
 * Python peer is run once per repetition (posix_spawn, its own process
 * group) and warms up on a fraction of the work each time. Every
 * measurement runs under a watchdog (alarm) that kills the pool's workers,
 * the manager's server, the children and the peer's process group, and
 * exits 1.
 *
 * Usage: pool_bench [--reps N] [--scale F] [--only row,row] [--impls a,b] [--settle MS]
 *                   [--jsonl FILE] [--python PYTHON --python-script pool_python.py] [--list]
 */
#define _GNU_SOURCE
#include "bench_util.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>

#include "conc/base.h"
#include "conc/futures.h"
#include "conc/pool.h"
#include "conc/process.h"

#if defined(__has_include)
#if __has_include("conc/manager.h")
#include "conc/manager.h"
#include "conc/manager_sync.h"
#define HAVE_MANAGER 1
#endif
#endif
#ifndef HAVE_MANAGER
#define HAVE_MANAGER 0
#endif

/* ----------------------------------------------------------- settings */

enum { IMPL_CONC, IMPL_PYTHON, IMPL_SUBMIT, NIMPLS };
static const char *impl_names[] = {"conc", "python", "conc_submit"};

/* Iterations per measurement at --scale 1 (the Python peer's counts are in
 * pool_python.py). */
#define THRU_N 100000L  /* tasks */
#define LAT_N 3000L     /* round trips */
#define MAP_N 1000000L  /* items */
#define DICT_N 20000L   /* set+get pairs */
#define WORKERS 2

static int opt_reps = 7;
static double opt_scale = 1.0;
static const char *opt_only;
static const char *opt_impls;
static long opt_settle_ms = 30;
static const char *opt_jsonl;
static const char *opt_python;
static const char *opt_python_script;

static bool g_warmup; /* the discarded warm-up run: a quarter of the work */

static long scaled(long n)
{
    double f = opt_scale * (g_warmup ? 0.25 : 1.0);
    long v = (long)((double)n * f);
    return v < 1 ? 1 : v;
}

#define FAIL(...) (snprintf(why, whylen, __VA_ARGS__), NAN)

/* ------------------------------------------------------------ watchdog */

#define MAX_KIDS 8
static volatile pid_t g_kids[MAX_KIDS];
static const char *volatile g_current = "";

static void kids_clear(void)
{
    for (int i = 0; i < MAX_KIDS; i++)
        g_kids[i] = 0;
}

static void kid_add(pid_t pid)
{
    for (int i = 0; i < MAX_KIDS; i++)
        if (g_kids[i] == 0) {
            g_kids[i] = pid;
            return;
        }
}

static void on_alarm(int sig)
{
    (void)sig;
    char msg[256];
    int n = snprintf(msg, sizeof msg,
                     "\npool_bench: %s did not finish in time (a deadlock or a lost wake-up); "
                     "its processes are killed, exiting with status 1\n",
                     g_current);
    if (n > 0)
        (void)!write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    for (int i = 0; i < MAX_KIDS; i++)
        if (g_kids[i] > 0)
            kill(g_kids[i], SIGKILL);
    if (bench_peer_pgid > 0)
        kill(-bench_peer_pgid, SIGKILL);
    _exit(1);
}

/* Note a pool's current workers for the watchdog. */
static void kids_from_pids(const int *pids, size_t n)
{
    for (size_t i = 0; i < n && i < 4; i++)
        kid_add(pids[i]);
}

/* ---------------------------------------------------- shared scratchpad */

/* Shared with the workers (fork) and the manager row's child. */
typedef struct scratch {
    _Atomic int busy_pid; /* the busy task's worker, once it runs */
    _Atomic int stop;     /* the busy task may end */
    double t0, t1;        /* the dict child's clock */
    long err;
} scratch_t;
static scratch_t *g_sh;

typedef struct gate {
    int ready[2], go[2];
} gate_t;

static int gate_open(gate_t *g)
{
    if (pipe2(g->ready, O_CLOEXEC) != 0)
        return -1;
    if (pipe2(g->go, O_CLOEXEC) != 0) {
        close(g->ready[0]);
        close(g->ready[1]);
        return -1;
    }
    return 0;
}

static void gate_close(gate_t *g)
{
    close(g->ready[0]);
    close(g->ready[1]);
    close(g->go[0]);
    close(g->go[1]);
}

static int full_rw(int fd, void *buf, size_t n, bool wr)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = wr ? write(fd, p, n) : read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* ------------------------------------------------------- worker tasks */

/* A trivial task: its 8-byte argument back. */
static int ident(const void *arg, size_t len, conc_pool_out_t *out)
{
    return conc_pool_return(out, arg, len);
}
CONC_POOL_REGISTER(ident);

static int square(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)len;
    long x;
    memcpy(&x, arg, sizeof x);
    long y = x * x;
    return conc_pool_return(out, &y, sizeof y);
}
CONC_POOL_REGISTER(square);

/* Spins (a busy worker) until told to stop or 20 s pass. */
static int busy(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len, (void)out;
    atomic_store(&g_sh->busy_pid, (int)getpid());
    double end = bench_now() + 20;
    while (!atomic_load_explicit(&g_sh->stop, memory_order_relaxed) && bench_now() < end)
        BENCH_CLOBBER();
    return 0;
}
CONC_POOL_REGISTER(busy);

/* ------------------------------------------------------ executor rows */

static int ppe_make(conc_executor_t **ex, char *why, size_t whylen)
{
    conc_process_pool_opts_t o = {0};
    o.max_workers = WORKERS;
    o.method = CONC_FORK;
    int rc = conc_process_pool_new(ex, &o);
    if (rc != 0) {
        snprintf(why, whylen, "conc_process_pool_new: %s", conc_errname(rc));
        return rc;
    }
    int pids[WORKERS];
    size_t np = conc_process_pool_pids(*ex, pids, WORKERS);
    kids_from_pids(pids, np);
    return 0;
}

/* Submit n ident tasks (args base..base+n-1), wait for all, check them. */
static int ppe_batch(conc_executor_t *ex, conc_future_t **fs, long n, long base, char *why, size_t whylen)
{
    int rc = 0;
    long i;
    for (i = 0; i < n; i++) {
        long v = base + i;
        if ((rc = conc_process_pool_submit(ex, &fs[i], ident, &v, sizeof v)) != 0) {
            snprintf(why, whylen, "conc_process_pool_submit: %s", conc_errname(rc));
            break;
        }
    }
    long nsub = i;
    for (long k = 0; k < nsub; k++) {
        const void *d;
        size_t len;
        int r2 = conc_future_bytes(fs[k], CONC_FOREVER, &d, &len);
        long v;
        if (rc == 0 && r2 != 0) {
            snprintf(why, whylen, "task %ld: conc_future_bytes: %s", k, conc_errname(r2));
            rc = r2;
        } else if (rc == 0 && (len != sizeof v || (memcpy(&v, d, sizeof v), v != base + k))) {
            snprintf(why, whylen, "task %ld: wrong result (%zu bytes)", k, len);
            rc = CONC_EFAILED;
        }
        conc_future_free(fs[k]);
    }
    return rc;
}

/* Every worker runs tasks before the clock starts (and the pool learns
 * how long the tasks take). */
static int ppe_warm(conc_executor_t *ex, char *why, size_t whylen)
{
    conc_future_t *fs[256];
    for (int k = 0; k < 4; k++) {
        int rc = ppe_batch(ex, fs, 256, 0, why, whylen);
        if (rc)
            return rc;
    }
    return 0;
}

static double row_throughput(int impl, char *why, size_t whylen)
{
    (void)impl;
    long n = scaled(THRU_N);
    conc_future_t **fs = malloc((size_t)n * sizeof *fs);
    if (!fs)
        return FAIL("out of memory");
    conc_executor_t *ex;
    double res = NAN;
    if (ppe_make(&ex, why, whylen) != 0) {
        free(fs);
        return NAN;
    }
    if (ppe_warm(ex, why, whylen) == 0) {
        double t0 = bench_now();
        if (ppe_batch(ex, fs, n, 1000, why, whylen) == 0)
            res = (double)n / (bench_now() - t0);
    }
    conc_executor_free(ex);
    free(fs);
    return res;
}

/* ----------------------------------------- thread pool: bytes vs words */

static void *ident_word(void *arg) { return arg; }

/* Submit n ident tasks to the thread pool ex (bytes path, or conc_submit
 * for impl IMPL_SUBMIT), wait for all, check them. */
static int tpe_batch(int impl, conc_executor_t *ex, conc_future_t **fs, long n, long base, char *why,
                     size_t whylen)
{
    int rc = 0;
    long i;
    for (i = 0; i < n; i++) {
        long v = base + i;
        rc = impl == IMPL_SUBMIT ? conc_submit(ex, &fs[i], ident_word, (void *)(intptr_t)v)
                                 : conc_submit_bytes(ex, &fs[i], ident, &v, sizeof v);
        if (rc) {
            snprintf(why, whylen, "submit: %s", conc_errname(rc));
            break;
        }
    }
    long nsub = i;
    for (long k = 0; k < nsub; k++) {
        long v = -1;
        int r2;
        if (impl == IMPL_SUBMIT) {
            void *r = NULL;
            r2 = conc_future_result(fs[k], CONC_FOREVER, &r);
            v = (long)(intptr_t)r;
        } else {
            const void *d;
            size_t len = 0;
            r2 = conc_future_bytes(fs[k], CONC_FOREVER, &d, &len);
            if (r2 == 0 && len == sizeof v)
                memcpy(&v, d, sizeof v);
        }
        if (rc == 0 && r2 != 0) {
            snprintf(why, whylen, "task %ld: %s", k, conc_errname(r2));
            rc = r2;
        } else if (rc == 0 && v != base + k) {
            snprintf(why, whylen, "task %ld: wrong result", k);
            rc = CONC_EFAILED;
        }
        conc_future_free(fs[k]);
    }
    return rc;
}

static double row_bytes_throughput(int impl, char *why, size_t whylen)
{
    long n = scaled(THRU_N);
    conc_future_t **fs = malloc((size_t)n * sizeof *fs);
    if (!fs)
        return FAIL("out of memory");
    conc_executor_t *ex;
    conc_thread_pool_opts_t o = {.max_workers = WORKERS};
    int rc = conc_thread_pool_new(&ex, &o);
    if (rc) {
        free(fs);
        snprintf(why, whylen, "conc_thread_pool_new: %s", conc_errname(rc));
        return NAN;
    }
    double res = NAN;
    if (tpe_batch(impl, ex, fs, n < 4096 ? n : 4096, 0, why, whylen) == 0) {
        double t0 = bench_now();
        if (tpe_batch(impl, ex, fs, n, 1000, why, whylen) == 0)
            res = (double)n / (bench_now() - t0);
    }
    conc_executor_free(ex);
    free(fs);
    return res;
}

static double row_latency(int impl, char *why, size_t whylen)
{
    (void)impl;
    long n = scaled(LAT_N);
    conc_executor_t *ex;
    double res = NAN;
    if (ppe_make(&ex, why, whylen) != 0)
        return NAN;
    if (ppe_warm(ex, why, whylen) == 0) {
        conc_future_t *f;
        double t0 = bench_now();
        long i;
        for (i = 0; i < n; i++)
            if (ppe_batch(ex, &f, 1, i, why, whylen) != 0)
                break;
        if (i == n)
            res = (bench_now() - t0) / (double)n * 1e6;
    }
    conc_executor_free(ex);
    return res;
}

static double row_broken(int impl, char *why, size_t whylen)
{
    (void)impl;
    conc_executor_t *ex;
    double res = NAN;
    atomic_store(&g_sh->busy_pid, 0);
    atomic_store(&g_sh->stop, 0);
    if (ppe_make(&ex, why, whylen) != 0)
        return NAN;
    conc_future_t *f = NULL;
    int rc;
    if (ppe_warm(ex, why, whylen) != 0)
        goto out;
    if ((rc = conc_process_pool_submit(ex, &f, busy, NULL, 0)) != 0) {
        res = FAIL("conc_process_pool_submit: %s", conc_errname(rc));
        goto out;
    }
    while (atomic_load(&g_sh->busy_pid) == 0)
        usleep(200);
    pid_t pid = atomic_load(&g_sh->busy_pid);
    usleep(2000); /* it is well into its spin */
    double t0 = bench_now();
    kill(pid, SIGKILL);
    const void *d;
    size_t len;
    rc = conc_future_bytes(f, 10.0, &d, &len);
    double t1 = bench_now();
    if (rc != CONC_EBROKEN) {
        res = FAIL("the busy task's future gave %s, not CONC_EBROKEN", conc_errname(rc));
        goto out;
    }
    res = (t1 - t0) * 1e3;
out:
    atomic_store(&g_sh->stop, 1);
    if (f)
        conc_future_free(f);
    conc_executor_free(ex);
    return res;
}

/* ------------------------------------------------------ pool.map_chunked */

static double row_map(int impl, char *why, size_t whylen)
{
    (void)impl;
    long n = scaled(MAP_N);
    long *xs = malloc((size_t)n * sizeof *xs), *ys = malloc((size_t)n * sizeof *ys);
    if (!xs || !ys) {
        free(xs);
        free(ys);
        return FAIL("out of memory");
    }
    for (long i = 0; i < n; i++)
        xs[i] = i;
    conc_pool_t *p;
    conc_pool_opts_t o = {0};
    o.processes = WORKERS;
    o.method = CONC_FORK;
    int rc = conc_pool_new(&p, &o);
    double res = NAN;
    if (rc != 0) {
        res = FAIL("conc_pool_new: %s", conc_errname(rc));
        goto out0;
    }
    {
        int pids[WORKERS];
        size_t np = conc_pool_pids(p, pids, WORKERS);
        kids_from_pids(pids, np);
    }
    /* The output array is touched before the clock (as a caller's array
     * would be) and after the workers were forked: pages present at a fork
     * are copy-on-write, and every first write would copy one. */
    memset(ys, 0, (size_t)n * sizeof *ys);
    conc_results_t *r;
    /* warm up: every worker runs a chunk */
    if ((rc = conc_pool_map(p, square, xs, sizeof *xs, n < 4096 ? n : 4096, 0, &r)) != 0) {
        res = FAIL("conc_pool_map (warm-up): %s", conc_errname(rc));
        conc_results_free(r);
        goto out;
    }
    conc_results_free(r);
    double t0 = bench_now();
    rc = conc_pool_map(p, square, xs, sizeof *xs, (size_t)n, 0, &r);
    int rc2 = rc == 0 ? conc_results_copy(r, ys, sizeof *ys) : rc;
    conc_results_free(r);
    double t1 = bench_now();
    if (rc != 0 || rc2 != 0) {
        res = FAIL("conc_pool_map: %s, conc_results_copy: %s", conc_errname(rc), conc_errname(rc2));
        goto out;
    }
    for (long i = 0; i < n; i++)
        if (ys[i] != i * i) {
            res = FAIL("item %ld: %ld, not %ld", i, ys[i], i * i);
            goto out;
        }
    res = (double)n / (t1 - t0);
out:
    conc_pool_free(p);
out0:
    free(xs);
    free(ys);
    return res;
}

/* ------------------------------------------------------ manager.dict_ops */

#if HAVE_MANAGER
static conc_mdict_t *g_dict;
static gate_t g_gate;

#define DICT_KEYS 64
#define DICT_VAL 16

static void dict_key(char *k, size_t *klen, long i)
{
    *klen = (size_t)snprintf(k, 32, "key%ld", i % DICT_KEYS);
}

static void dict_val(unsigned char *v, long i)
{
    memcpy(v, &i, sizeof i);
    memset(v + sizeof i, 'v', DICT_VAL - sizeof i);
}

typedef struct darg {
    long n;
} darg_t;

static int dict_child(const void *arg, size_t len)
{
    (void)len;
    long n = ((const darg_t *)arg)->n;
    char k[32];
    size_t klen;
    unsigned char v[DICT_VAL];
    void *got;
    size_t glen;
    /* the proxy reconnects here, before the gate */
    int rc = conc_mdict_set(g_dict, "warm", 4, "up", 2);
    if (rc != 0) {
        g_sh->err = rc;
        return 2;
    }
    char c = 'r';
    if (full_rw(g_gate.ready[1], &c, 1, true) != 0 || full_rw(g_gate.go[0], &c, 1, false) != 0)
        return 3;
    g_sh->t0 = bench_now();
    for (long i = 0; i < n; i++) {
        dict_key(k, &klen, i);
        dict_val(v, i);
        if ((rc = conc_mdict_set(g_dict, k, klen, v, sizeof v)) != 0) {
            g_sh->err = rc;
            return 4;
        }
        if ((rc = conc_mdict_get(g_dict, k, klen, &got, &glen)) != 0) {
            g_sh->err = rc;
            return 5;
        }
        bool ok = glen == sizeof v && memcmp(got, v, sizeof v) == 0;
        free(got);
        if (!ok) {
            g_sh->err = CONC_EFAILED;
            return 6;
        }
    }
    g_sh->t1 = bench_now();
    return 0;
}
CONC_REGISTER(dict_child);

static double row_dict(int impl, char *why, size_t whylen)
{
    (void)impl;
    long n = scaled(DICT_N);
    conc_manager_t *m;
    conc_manager_opts_t mo = {0};
    mo.method = CONC_FORK;
    int rc = conc_manager_start(&m, &mo);
    if (rc != 0)
        return FAIL("conc_manager_start: %s", conc_errname(rc));
    if (conc_manager_pid(m) > 0)
        kid_add(conc_manager_pid(m));
    double res = NAN;
    conc_process_t *kid = NULL;
    bool gate = false;
    if ((rc = conc_manager_dict(m, NULL, &g_dict)) != 0) {
        res = FAIL("conc_manager_dict: %s", conc_errname(rc));
        goto out;
    }
    if (gate_open(&g_gate) != 0) {
        res = FAIL("pipe: %s", strerror(errno));
        goto out;
    }
    gate = true;
    memset(g_sh, 0, sizeof *g_sh);
    darg_t a = {n};
    conc_process_opts_t o = {0};
    o.method = CONC_FORK;
    if ((rc = conc_process_new(&kid, dict_child, &a, sizeof a, &o)) != 0 || (rc = conc_process_start(kid)) != 0) {
        if (kid)
            conc_process_free(kid);
        kid = NULL;
        res = FAIL("starting the child: %s", conc_errname(rc));
        goto out;
    }
    kid_add(conc_process_pid(kid));
    char c;
    if (full_rw(g_gate.ready[0], &c, 1, false) != 0) {
        res = FAIL("the child did not start (error %s)", conc_errname((int)g_sh->err));
        goto out;
    }
    c = 'g';
    full_rw(g_gate.go[1], &c, 1, true);
    int code = -999;
    rc = conc_process_join(kid, CONC_FOREVER);
    if (rc == 0)
        rc = conc_process_exitcode(kid, &code);
    if (rc != 0 || code != 0) {
        res = FAIL("the child ended with %s, code %d (error %s)", conc_errname(rc), code,
                   conc_errname((int)g_sh->err));
        goto out;
    }
    res = (double)n / (g_sh->t1 - g_sh->t0);
out:
    if (kid) {
        if (isnan(res))
            conc_process_kill(kid);
        conc_process_join(kid, CONC_FOREVER);
        conc_process_free(kid);
    }
    if (gate)
        gate_close(&g_gate);
    if (g_dict)
        conc_mdict_free(g_dict);
    g_dict = NULL;
    conc_manager_free(m);
    return res;
}

/* ------------------------------------------------------- manager.sem_ops */

static double row_sem(int impl, char *why, size_t whylen)
{
    (void)impl;
    long n = scaled(DICT_N);
    conc_manager_t *m;
    conc_manager_opts_t mo = {0};
    mo.method = CONC_FORK;
    int rc = conc_manager_start(&m, &mo);
    if (rc != 0)
        return FAIL("conc_manager_start: %s", conc_errname(rc));
    if (conc_manager_pid(m) > 0)
        kid_add(conc_manager_pid(m));
    double res = NAN;
    conc_msem_t *s = NULL;
    if ((rc = conc_manager_semaphore(m, NULL, 1, &s)) != 0) {
        res = FAIL("conc_manager_semaphore: %s", conc_errname(rc));
        goto out;
    }
    for (int i = 0; i < 100; i++) /* warm up */
        if ((rc = conc_msem_acquire(s, true, CONC_FOREVER)) != 0 || (rc = conc_msem_release(s, 1)) != 0) {
            res = FAIL("warm-up: %s", conc_errname(rc));
            goto out;
        }
    double t0 = bench_now();
    for (long i = 0; i < n; i++)
        if ((rc = conc_msem_acquire(s, true, CONC_FOREVER)) != 0 || (rc = conc_msem_release(s, 1)) != 0) {
            res = FAIL("acquire/release: %s", conc_errname(rc));
            goto out;
        }
    res = (double)n / (bench_now() - t0);
out:
    if (s)
        conc_msem_free(s);
    conc_manager_free(m);
    return res;
}
#else
static double row_dict(int impl, char *why, size_t whylen)
{
    (void)impl;
    return FAIL("manager not built");
}
static double row_sem(int impl, char *why, size_t whylen)
{
    (void)impl;
    return FAIL("manager not built");
}
#endif

/* ------------------------------------------------------------- driver */

typedef double (*measure_fn)(int impl, char *why, size_t whylen);

typedef struct rowdef {
    const char *name;
    const char *unit;
    bool lower_better;
    measure_fn fn;
    unsigned timeout; /* seconds per measurement (at scale 1; grows with --scale) */
} rowdef_t;

static const rowdef_t rowdefs[] = {
    {"ppe.throughput", "tasks/s", false, row_throughput, 60},
    {"ppe.latency", "us", true, row_latency, 60},
    {"pool.map_chunked", "items/s", false, row_map, 60},
    {"ppe.broken_detect", "ms", true, row_broken, 60},
    {"manager.dict_ops", "pairs/s", false, row_dict, 60},
    {"pool.bytes_throughput", "tasks/s", false, row_bytes_throughput, 60},
    {"manager.sem_ops", "pairs/s", false, row_sem, 60},
};
#define NROWDEFS ((int)(sizeof rowdefs / sizeof rowdefs[0]))

static bool impl_available(const rowdef_t *d, int impl, char *why, size_t whylen)
{
    if (!bench_in_list(opt_impls, impl_names[impl])) {
        snprintf(why, whylen, "not selected (--impls %s)", opt_impls);
        return false;
    }
    if (!HAVE_MANAGER && strncmp(d->name, "manager.", 8) == 0) {
        snprintf(why, whylen, "manager not built");
        return false;
    }
    if (impl != IMPL_PYTHON)
        return true;
    if (!opt_python || !opt_python_script) {
        snprintf(why, whylen, "no Python interpreter given (--python)");
        return false;
    }
    if (access(opt_python, X_OK) != 0) {
        snprintf(why, whylen, "%s not found", opt_python);
        return false;
    }
    return true;
}

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
    if (opt_settle_ms > 0) {
        struct timespec ts = {(time_t)(opt_settle_ms / 1000), (long)(opt_settle_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    g_current = d->name;
    unsigned t = (unsigned)((double)d->timeout * (opt_scale > 1 ? opt_scale : 1)) + (impl == IMPL_PYTHON ? 60 : 0);
    kids_clear();
    alarm(t);
    double v = impl == IMPL_PYTHON ? python_once(d->name, why, whylen) : d->fn(impl, why, whylen);
    alarm(0);
    kids_clear();
    return v;
}

static void run_row(const rowdef_t *d)
{
    bench_row_t *r = bench_row_new(d->name, d->unit, d->lower_better);
    bench_impl_t *ims[NIMPLS];
    char why[200];
    fprintf(stderr, "running %s ...\n", d->name);
    bool bytes_row = strcmp(d->name, "pool.bytes_throughput") == 0;
    for (int i = 0; i < NIMPLS; i++) {
        ims[i] = NULL;
        if (bytes_row ? i == IMPL_PYTHON : i == IMPL_SUBMIT)
            continue; /* conc_submit only on the bytes row; no python there */
        ims[i] = bench_impl_add(r, impl_names[i]);
        why[0] = 0;
        if (!impl_available(d, i, why, sizeof why)) {
            bench_impl_note(ims[i], BENCH_SKIPPED, "%s", why);
            continue;
        }
        if (i == IMPL_PYTHON)
            continue; /* the script warms up on every run */
        g_warmup = true;
        double v = measure(d, i, why, sizeof why); /* discarded */
        g_warmup = false;
        if (isnan(v))
            bench_impl_note(ims[i], BENCH_FAILED, "%s", why);
    }
    for (int rep = 0; rep < opt_reps; rep++) {
        for (int j = 0; j < NIMPLS; j++) {
            int i = (j + rep) % NIMPLS;
            if (!ims[i] || ims[i]->status != BENCH_OK)
                continue;
            why[0] = 0;
            double v = measure(d, i, why, sizeof why);
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

/* Target "conc's time <= k x python's" on a time row. */
static void time_target(bench_tally_t *t, const char *row, double k)
{
    bench_row_t *r = bench_row_find(row);
    if (!r)
        return;
    char text[96];
    snprintf(text, sizeof text, "%s: conc time <= %gx python", row, k);
    double s = bench_speedup(r, "python"); /* python / conc */
    if (isnan(s)) {
        printf("  [ n/a ] %-52s (no valid measurement)\n", text);
        return;
    }
    int met = 1 / s <= k;
    printf("  [%s] %-52s conc takes %.3fx python\n", met ? " MET " : "MISSED", text, 1 / s);
    t->met += met;
    t->missed += !met;
}

/* Target "conc's median <= limit" (absolute). */
static void abs_target(bench_tally_t *t, const char *row, double limit)
{
    bench_row_t *r = bench_row_find(row);
    if (!r)
        return;
    char text[96];
    snprintf(text, sizeof text, "%s: conc <= %g %s", row, limit, r->unit);
    bench_impl_t *c = bench_impl_find(r, "conc");
    if (!bench_impl_ok(c)) {
        printf("  [ n/a ] %-52s (no valid measurement)\n", text);
        return;
    }
    double v = bench_impl_median(c);
    int met = v <= limit;
    printf("  [%s] %-52s conc takes %.3g %s\n", met ? " MET " : "MISSED", text, v, r->unit);
    t->met += met;
    t->missed += !met;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: pool_bench [--reps N] [--scale F] [--only row,row] [--impls conc,python,conc_submit] [--settle MS]\n"
               "                  [--jsonl FILE] [--python PYTHON --python-script pool_python.py] [--list]\n");
}

static void list_rows(void)
{
    for (int k = 0; k < NROWDEFS; k++)
        printf("%s\n", rowdefs[k].name);
}

int main(int argc, char **argv)
{
    CONC_PROCESS_MAIN(argc, argv); /* spawned and fork-server children stop here */

    static const bench_args_t args = {
        .prog = "pool_bench", .usage = usage, .list = list_rows, .reps = &opt_reps, .scale = &opt_scale,
        .only = &opt_only, .impls = &opt_impls, .jsonl = &opt_jsonl, .python = &opt_python,
        .python_script = &opt_python_script, .settle_ms = &opt_settle_ms};
    int st = bench_parse_args(argc, argv, &args);
    if (st >= 0)
        return st;
    (void)bench_python_targets; /* the targets differ per row (see the end of main) */

    g_sh = mmap(NULL, sizeof *g_sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_sh == MAP_FAILED) {
        fprintf(stderr, "pool_bench: mmap: %s\n", strerror(errno));
        return 1;
    }
    signal(SIGALRM, on_alarm);
    signal(SIGPIPE, SIG_IGN);
    if (!opt_python || !opt_python_script || access(opt_python, X_OK) != 0)
        fprintf(stderr, "note: python peers skipped: %s\n",
                opt_python ? "interpreter not found" : "no Python interpreter given (--python)");

    bench_note_load();
    double t_start = bench_now();
    for (int k = 0; k < NROWDEFS; k++)
        if (bench_in_list(opt_only, rowdefs[k].name))
            run_row(&rowdefs[k]);
    if (bench_nrows == 0) {
        fprintf(stderr, "pool_bench: no row matches --only %s\n", opt_only);
        return 2;
    }

    bench_print_header("pool", opt_reps);
    printf("(2 workers, fork start method in conc and Python; pools and the manager are created and warmed up "
           "outside the clock)\n");
    for (int k = 0; k < bench_nrows; k++)
        bench_print_row(&bench_rows[k]);

    printf("\ntargets (issue 6, 2-core machine), as ratios of medians:\n");
    bench_tally_t tally = {0, 0};
    bench_target_tally(&tally, "ppe.throughput", "python", 20.0, "ppe.throughput: conc >= 20x python");
    time_target(&tally, "ppe.latency", 0.2);
    bench_target_tally(&tally, "pool.map_chunked", "python", 5.0, "pool.map_chunked: conc >= 5x python");
    abs_target(&tally, "ppe.broken_detect", 10.0);
    bench_target_tally(&tally, "manager.dict_ops", "python", 10.0, "manager.dict_ops: conc >= 10x python");
    bench_target_tally(&tally, "pool.bytes_throughput", "conc_submit", 0.95,
                       "pool.bytes_throughput: bytes >= 0.95x conc_submit");
    int status = bench_finish("pool", &tally, opt_jsonl, t_start);
    munmap(g_sh, sizeof *g_sh);
    return status;
}
