/*
 * bench/deadlock_bench.c — the deadlock / GIL module's benchmark (issue 14):
 * conc's GIL against CPython's own, and the banker's cost per request.
 *
 * Rows (value = median over the repetitions):
 *   gil.convoy_p50   us  p50 of an I/O-bound thread's response time while a
 *                        CPU-bound thread runs under the GIL    conc python interval
 *   gil.convoy_p99   us  the same, p99                           conc python interval
 *   gil.handoff      ns  per forced hand-off between two CPU-bound threads,
 *                        switch interval 1 us                    conc python
 *   banker.request   ns  per granted request, 16 clients (threads), 4
 *                        resource types, aggregate               conc
 *
 * The convoy (Beazley's measurement of the GIL): one thread spins on CPU
 * work holding the GIL, calling conc_gil_check between small steps (as
 * CPython's eval loop checks its eval breaker between bytecodes); the
 * other does "I/O": releases the GIL around a 1 ms sleep and takes it
 * back. Its response time is how much later than 1 ms it runs again:
 * about one switch interval (it asks for the GIL after waiting a whole
 * interval, then the CPU-bound thread drops it at its next check). The
 * `interval` impl is the switch interval itself (5 ms, in us), so the
 * table reads "p99 vs the interval". Each repetition also prints (stderr)
 * where the time went: the sleep's overshoot, the wait for the GIL, and
 * how much of that wait the holder spent descheduled (wall time minus its
 * thread CPU time) — on a loaded machine that, not the algorithm, is the
 * tail. The Python peer
 * (bench/deadlock_python.py) runs the same two threads under CPython's
 * GIL (`while not stop: x += 1` and time.sleep(0.001)).
 *
 * The hand-off: two threads both spin and check, with the switch interval
 * at its floor (1 us; CPython: sys.setswitchinterval(1e-6)); every change
 * of holder is one forced hand-off (a drop request, the drop, the wake of
 * the waiter). ns per hand-off = run time / number of hand-offs.
 *
 * banker.request: 16 threads, each a client claiming (4,4,4,4) of totals
 * (16,16,16,16) — the claims together are 4x the totals, so the safety
 * check matters — loop: request a random small vector (blocking), release
 * it. ns per grant = run time / grants (all threads together).
 *
 * Method as in sync_bench: a warm-up run per impl, discarded; every run
 * checks its result; the Python peer does its own repetitions, except for
 * the convoy, where conc's and CPython's repetitions alternate (the tail
 * is the machine's load: both must see the same).
 *
 * Usage: deadlock_bench [--reps N] [--scale F] [--only row,row] [--jsonl FILE]
 *                       [--python PYTHON --python-script deadlock_python.py]
 */
#define _GNU_SOURCE
#include "bench_util.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "conc/banker.h"
#include "conc/base.h"
#include "conc/gil.h"

static int opt_reps = 7;
static double opt_scale = 1.0;
static const char *opt_only;
static const char *opt_jsonl;
static const char *opt_python;
static const char *opt_python_script;

static long scaled(long n)
{
    long v = (long)((double)n * opt_scale);
    return v < 1 ? 1 : v;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, int n, double p)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    int k = (int)(p / 100.0 * (n - 1) + 0.5);
    return v[k < 0 ? 0 : k >= n ? n - 1 : k];
}

/* --------------------------------------------------------------- convoy */

typedef struct {
    conc_gil_t g;
    atomic_int stop, started;
    atomic_int errors;
} cpu_t;

/* The CPU-bound thread: holds the GIL, checks between small steps. */
static void *cpu_bound(void *arg)
{
    cpu_t *c = arg;
    if (conc_gil_acquire(&c->g, CONC_FOREVER) != 0) {
        atomic_fetch_add(&c->errors, 1);
        return NULL;
    }
    atomic_store(&c->started, 1);
    unsigned long x = 0;
    while (!atomic_load_explicit(&c->stop, memory_order_relaxed)) {
        for (int k = 0; k < 64; k++) {
            x += (unsigned long)k * 2654435761u;
            BENCH_USE(x);
        }
        if (conc_gil_check(&c->g) < 0)
            atomic_fetch_add(&c->errors, 1);
    }
    conc_gil_release(&c->g);
    return NULL;
}

static double convoy_p[2]; /* the last run's p50, p99 */
/* Where the latency goes (the last run's p50, p99, us): the 1 ms sleep's
 * overshoot (the I/O thread waiting for a CPU after its timer), the wait
 * in end_allow for the GIL, and how much of that wait the CPU-bound
 * holder spent off the CPU (wall time minus its thread CPU time): a
 * holder that is descheduled while holding cannot reach its next check. */
static double convoy_over[2], convoy_wait[2], convoy_off[2];

static int convoy_run(char *why, size_t whylen)
{
    static cpu_t c;
    memset(&c, 0, sizeof c);
    int n = (int)scaled(300);
    if (n < 2)
        n = 2;
    double *lat = malloc((size_t)n * 4 * sizeof *lat);
    double *over = lat ? lat + n : NULL, *waitv = lat ? lat + 2 * n : NULL, *off = lat ? lat + 3 * n : NULL;
    pthread_t t;
    if (!lat || pthread_create(&t, NULL, cpu_bound, &c) != 0) {
        free(lat);
        snprintf(why, whylen, "cannot start the CPU-bound thread");
        return -1;
    }
    while (!atomic_load(&c.started) && !atomic_load(&c.errors))
        sched_yield();
    /* The I/O-bound thread (this one) runs under the GIL too. */
    int rc = conc_gil_acquire(&c.g, CONC_FOREVER);
    clockid_t hcpu;
    bool have_cpu = pthread_getcpuclockid(t, &hcpu) == 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        double t0 = bench_now();
        conc_gil_begin_allow(&c.g);
        sleep_s(0.001); /* the blocking call */
        double tw = bench_now();
        struct timespec c0 = {0, 0}, c1 = {0, 0};
        if (have_cpu)
            clock_gettime(hcpu, &c0);
        conc_gil_end_allow(&c.g);
        if (have_cpu)
            clock_gettime(hcpu, &c1);
        double ta = bench_now();
        lat[i] = (ta - t0 - 0.001) * 1e6;
        over[i] = (tw - t0 - 0.001) * 1e6;
        waitv[i] = (ta - tw) * 1e6;
        double cpu_us = ((double)(c1.tv_sec - c0.tv_sec) * 1e9 + (double)(c1.tv_nsec - c0.tv_nsec)) / 1e3;
        off[i] = have_cpu && waitv[i] > cpu_us ? waitv[i] - cpu_us : 0;
    }
    if (rc == 0)
        conc_gil_release(&c.g);
    atomic_store(&c.stop, 1);
    pthread_join(t, NULL);
    if (rc != 0 || atomic_load(&c.errors)) {
        free(lat);
        snprintf(why, whylen, "GIL calls failed (rc %d, %d errors)", rc, atomic_load(&c.errors));
        return -1;
    }
    convoy_p[0] = pct(lat, n, 50);
    convoy_p[1] = pct(lat, n, 99);
    convoy_over[0] = pct(over, n, 50), convoy_over[1] = pct(over, n, 99);
    convoy_wait[0] = pct(waitv, n, 50), convoy_wait[1] = pct(waitv, n, 99);
    convoy_off[0] = pct(off, n, 50), convoy_off[1] = pct(off, n, 99);
    free(lat);
    return 0;
}

/* -------------------------------------------------------------- handoff */

typedef struct {
    conc_gil_t g;
    atomic_int stop;
    pthread_barrier_t bar;
    atomic_int errors;
} hand_t;

static void *spinner(void *arg)
{
    hand_t *h = arg;
    pthread_barrier_wait(&h->bar);
    if (conc_gil_acquire(&h->g, CONC_FOREVER) != 0) {
        atomic_fetch_add(&h->errors, 1);
        return NULL;
    }
    unsigned long x = 0;
    while (!atomic_load_explicit(&h->stop, memory_order_relaxed)) {
        for (int k = 0; k < 16; k++) {
            x += (unsigned long)k;
            BENCH_USE(x);
        }
        if (conc_gil_check(&h->g) < 0)
            atomic_fetch_add(&h->errors, 1);
    }
    conc_gil_release(&h->g);
    return NULL;
}

static double handoff_run(char *why, size_t whylen)
{
    static hand_t h;
    memset(&h, 0, sizeof h);
    conc_gil_setswitchinterval(&h.g, 1e-6);
    pthread_barrier_init(&h.bar, NULL, 3);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        if (pthread_create(&t[i], NULL, spinner, &h) != 0) {
            snprintf(why, whylen, "cannot start a thread");
            return NAN;
        }
    pthread_barrier_wait(&h.bar);
    double secs = 0.3 * opt_scale < 0.05 ? 0.05 : 0.3 * opt_scale;
    sleep_s(0.01); /* both running */
    unsigned long s0 = conc_gil_switches(&h.g);
    double t0 = bench_now();
    sleep_s(secs);
    unsigned long s1 = conc_gil_switches(&h.g);
    double t1 = bench_now();
    atomic_store(&h.stop, 1);
    pthread_join(t[0], NULL);
    pthread_join(t[1], NULL);
    pthread_barrier_destroy(&h.bar);
    if (atomic_load(&h.errors) || s1 - s0 < 2) {
        snprintf(why, whylen, "%d errors, %lu hand-offs", atomic_load(&h.errors), s1 - s0);
        return NAN;
    }
    return (t1 - t0) * 1e9 / (double)(s1 - s0);
}

/* ------------------------------------------------------- banker.request */

#define BK_CLIENTS 16
#define BK_TYPES 4

typedef struct {
    conc_banker_t *b;
    conc_banker_client_t *c[BK_CLIENTS];
    long iters;
    pthread_barrier_t bar;
    atomic_long grants;
    atomic_int errors;
} bk_t;

typedef struct {
    bk_t *bk;
    int idx;
} bk_arg_t;

static void *bk_client(void *arg)
{
    bk_arg_t *a = arg;
    bk_t *bk = a->bk;
    conc_banker_client_t *c = bk->c[a->idx];
    unsigned seed = 0x9e3779b9u * (unsigned)(a->idx + 1);
    long req[BK_TYPES];
    pthread_barrier_wait(&bk->bar);
    long grants = 0;
    for (long i = 0; i < bk->iters; i++) {
        for (int k = 0; k < BK_TYPES; k++) {
            seed = seed * 1103515245u + 12345u;
            req[k] = (long)((seed >> 16) % 5u); /* 0..4 of each type */
        }
        int rc = conc_banker_request(c, req, 30.0);
        if (rc != 0) {
            atomic_fetch_add(&bk->errors, 1);
            break;
        }
        grants++;
        if (conc_banker_release(c, req) != 0)
            atomic_fetch_add(&bk->errors, 1);
    }
    atomic_fetch_add(&bk->grants, grants);
    return NULL;
}

static double banker_run(char *why, size_t whylen)
{
    static bk_t bk;
    memset(&bk, 0, sizeof bk);
    long tot[BK_TYPES] = {16, 16, 16, 16}, max[BK_TYPES] = {4, 4, 4, 4};
    if (conc_banker_new(&bk.b, BK_TYPES, tot) != 0) {
        snprintf(why, whylen, "conc_banker_new failed");
        return NAN;
    }
    for (int i = 0; i < BK_CLIENTS; i++)
        conc_banker_claim(bk.b, max, &bk.c[i]);
    bk.iters = scaled(20000);
    pthread_barrier_init(&bk.bar, NULL, BK_CLIENTS + 1);
    pthread_t t[BK_CLIENTS];
    bk_arg_t args[BK_CLIENTS];
    for (int i = 0; i < BK_CLIENTS; i++) {
        args[i] = (bk_arg_t){&bk, i};
        pthread_create(&t[i], NULL, bk_client, &args[i]);
    }
    pthread_barrier_wait(&bk.bar);
    double t0 = bench_now();
    for (int i = 0; i < BK_CLIENTS; i++)
        pthread_join(t[i], NULL);
    double t1 = bench_now();
    pthread_barrier_destroy(&bk.bar);
    long grants = atomic_load(&bk.grants);
    int errors = atomic_load(&bk.errors);
    long avail[BK_TYPES];
    size_t n;
    conc_banker_snapshot(bk.b, avail, 0, NULL, NULL, NULL, &n);
    for (int i = 0; i < BK_CLIENTS; i++)
        conc_banker_unclaim(bk.c[i]);
    conc_banker_free(bk.b);
    for (int k = 0; k < BK_TYPES; k++)
        if (avail[k] != tot[k])
            errors++;
    if (errors || grants != BK_CLIENTS * bk.iters) {
        snprintf(why, whylen, "%d errors, %ld grants of %ld", errors, grants, BK_CLIENTS * bk.iters);
        return NAN;
    }
    return (t1 - t0) * 1e9 / (double)grants;
}

/* ---------------------------------------------------------- the driver */

static bool selected(const char *name)
{
    return bench_in_list(opt_only, name);
}

/* Run the Python peer for row (one value per line; `stride` values per
 * repetition). Fills ims[0..stride-1]. */
static void run_python_n(const char *row, bench_impl_t **ims, int stride, int nreps);
static void run_python(const char *row, bench_impl_t **ims, int stride)
{
    run_python_n(row, ims, stride, opt_reps);
}

/* nreps repetitions of the Python peer's row (one process). */
static void run_python_n(const char *row, bench_impl_t **ims, int stride, int nreps)
{
    char why[200] = "";
    if (!opt_python || !opt_python_script || access(opt_python, X_OK) != 0) {
        for (int s = 0; s < stride; s++)
            bench_impl_note(ims[s], BENCH_SKIPPED, "%s", opt_python ? "interpreter not found"
                                                                    : "no Python interpreter given (--python)");
        return;
    }
    char reps[32], scale[32];
    snprintf(reps, sizeof reps, "%d", nreps);
    snprintf(scale, sizeof scale, "%g", opt_scale);
    char *argv[] = {(char *)opt_python, (char *)opt_python_script, "--reps", reps, "--scale", scale,
                    (char *)row, NULL};
    double vals[BENCH_MAX_REPS * 2];
    int n = bench_run_peer(argv, vals, BENCH_MAX_REPS * 2, why, sizeof why);
    if (n < nreps * stride) {
        for (int s = 0; s < stride; s++)
            bench_impl_note(ims[s], BENCH_FAILED, "%s", n < 0 ? why : "python peer printed too few values");
        return;
    }
    for (int i = 0; i < nreps; i++)
        for (int s = 0; s < stride; s++)
            bench_impl_record(ims[s], vals[i * stride + s]);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: deadlock_bench [--reps N] [--scale F] [--only row,row] [--jsonl FILE]\n"
               "                      [--python PYTHON --python-script deadlock_python.py] [--list]\n");
}

static const char *const rownames[] = {"gil.convoy_p50", "gil.convoy_p99", "gil.handoff", "banker.request"};

static void list_rows(void)
{
    for (size_t k = 0; k < sizeof rownames / sizeof *rownames; k++)
        printf("%s\n", rownames[k]);
}

int main(int argc, char **argv)
{
    static const bench_args_t args = {
        .prog = "deadlock_bench", .usage = usage, .list = list_rows, .reps = &opt_reps, .scale = &opt_scale,
        .only = &opt_only, .jsonl = &opt_jsonl, .python = &opt_python, .python_script = &opt_python_script};
    int st = bench_parse_args(argc, argv, &args);
    if (st >= 0)
        return st;
    if (!opt_python)
        fprintf(stderr, "note: python peer skipped (no --python given)\n");
    bench_note_load();
    double t_start = bench_now();
    char why[200];
    double interval_us = CONC_GIL_DEFAULT_INTERVAL * 1e6;

    bool want_convoy = selected("gil.convoy_p50") || selected("gil.convoy_p99");
    if (want_convoy) {
        fprintf(stderr, "running gil.convoy ...\n");
        bench_row_t *r50 = bench_row_new("gil.convoy_p50", "us", true);
        bench_row_t *r99 = bench_row_new("gil.convoy_p99", "us", true);
        bench_impl_t *c[2] = {bench_impl_add(r50, "conc"), bench_impl_add(r99, "conc")};
        bench_impl_t *py[2] = {bench_impl_add(r50, "python"), bench_impl_add(r99, "python")};
        why[0] = 0;
        if (convoy_run(why, sizeof why) != 0) { /* warm-up */
            bench_impl_note(c[0], BENCH_FAILED, "%s", why);
            bench_impl_note(c[1], BENCH_FAILED, "%s", why);
        }
        for (int rep = 0; rep < opt_reps && c[0]->status == BENCH_OK; rep++) {
            if (convoy_run(why, sizeof why) != 0) {
                bench_impl_note(c[0], BENCH_FAILED, "%s", why);
                bench_impl_note(c[1], BENCH_FAILED, "%s", why);
                break;
            }
            bench_impl_record(c[0], convoy_p[0]);
            bench_impl_record(c[1], convoy_p[1]);
            fprintf(stderr,
                    "  conc convoy rep %d (us, p50/p99): response %.0f/%.0f = sleep overshoot %.0f/%.0f"
                    " + GIL wait %.0f/%.0f, of which the holder was off the CPU %.0f/%.0f\n",
                    rep, convoy_p[0], convoy_p[1], convoy_over[0], convoy_over[1], convoy_wait[0],
                    convoy_wait[1], convoy_off[0], convoy_off[1]);
            /* CPython's run right after, one repetition at a time: on a
             * machine whose load drifts, both see the same load */
            if (py[0]->status == BENCH_OK)
                run_python_n("gil.convoy", py, 2, 1);
        }
        if (c[0]->status != BENCH_OK && py[0]->status == BENCH_OK)
            run_python("gil.convoy", py, 2);
        bench_impl_t *iv[2] = {bench_impl_add(r50, "interval"), bench_impl_add(r99, "interval")};
        for (int s = 0; s < 2; s++)
            for (int rep = 0; rep < opt_reps; rep++)
                bench_impl_record(iv[s], interval_us);
    }
    if (selected("gil.handoff")) {
        fprintf(stderr, "running gil.handoff ...\n");
        bench_row_t *r = bench_row_new("gil.handoff", "ns", true);
        bench_impl_t *c = bench_impl_add(r, "conc");
        why[0] = 0;
        if (isnan(handoff_run(why, sizeof why)))
            bench_impl_note(c, BENCH_FAILED, "%s", why);
        for (int rep = 0; rep < opt_reps && c->status == BENCH_OK; rep++) {
            double v = handoff_run(why, sizeof why);
            if (isnan(v))
                bench_impl_note(c, BENCH_FAILED, "%s", why);
            else
                bench_impl_record(c, v);
        }
        bench_impl_t *py = bench_impl_add(r, "python");
        run_python("gil.handoff", &py, 1);
    }
    if (selected("banker.request")) {
        fprintf(stderr, "running banker.request ...\n");
        bench_row_t *r = bench_row_new("banker.request", "ns", true);
        bench_impl_t *c = bench_impl_add(r, "conc");
        why[0] = 0;
        if (isnan(banker_run(why, sizeof why)))
            bench_impl_note(c, BENCH_FAILED, "%s", why);
        for (int rep = 0; rep < opt_reps && c->status == BENCH_OK; rep++) {
            double v = banker_run(why, sizeof why);
            if (isnan(v))
                bench_impl_note(c, BENCH_FAILED, "%s", why);
            else
                bench_impl_record(c, v);
        }
    }
    if (bench_nrows == 0) {
        fprintf(stderr, "deadlock_bench: no row matches --only %s\n", opt_only);
        return 2;
    }

    bench_print_header("deadlock", opt_reps);
    for (int i = 0; i < bench_nrows; i++)
        bench_print_row(&bench_rows[i]);

    printf("\ntargets (issue 14), as ratios of medians:\n");
    bench_tally_t tally = {0, 0};
    (void)bench_python_targets; /* the python targets here are the two below */
    bench_target_tally(&tally, "gil.convoy_p99", "interval", 1.0 / 1.5,
                       "gil.convoy_p99: conc <= 1.5x the switch interval");
    bench_target_tally(&tally, "gil.convoy_p99", "python", 1.0, "gil.convoy_p99: conc <= 1.0x python");
    return bench_finish("deadlock", &tally, opt_jsonl, t_start);
}
