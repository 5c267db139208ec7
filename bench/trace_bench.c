/*
 * bench/trace_bench.c — what the observability hooks cost (issue 13).
 *
 * Rows:
 *   lock.uncontended  ns per acquire+release, 10M         conc conc_notrace
 *   queue.1p1c        items/s, 1 producer 1 consumer      conc conc_notrace
 *                     (threads), capacity 1024, 2M items
 *   green.switch      ns per switch: two green threads    conc conc_notrace conc_traced
 *                     yield to each other, 1M times each
 *   pool.throughput   tasks/s: submit 200k empty tasks to conc conc_notrace
 *                     a thread pool, then wait for all
 *   trace.event       ns per recorded transition with     conc
 *                     tracing on (a task start / finish
 *                     record through the pool hook)
 *
 * The impls:
 *   conc          libconc as shipped: every hook compiled in, all off
 *   conc_notrace  the same sources compiled with -DCONC_NO_OBSERVE (no
 *                 hooks at all): the second program trace_bench_notrace
 *   conc_traced   conc with a trace running (conc_trace_start)
 * Both builds are measured the same way: each repetition runs this program
 * and trace_bench_notrace as children (`--child`), alternating which goes
 * first, so drifts in machine load hit both alike; each child warms up,
 * then measures each row once and prints the values. conc_traced and
 * trace.event run in this process (the trace is written to /dev/null after
 * the timed part).
 *
 * Targets: conc within 2 % of conc_notrace on the four rows; trace.event
 * <= 100 ns; green.switch conc_traced <= 3x conc.
 */
/* each of the two programs uses a part of bench_util.h */
#pragma GCC diagnostic ignored "-Wunused-function"
#include "bench_util.h"

#include <pthread.h>
#include <stdatomic.h>

#include <conc.h>

/* a private hook of libconc: one recorded transition (trace/obs.h) */
void conc__trace_task(int what, void *(*fn)(void *), void *arg);

#define FAIL(...) (snprintf(why, whylen, __VA_ARGS__), NAN)

/* Single-threaded rows are timed in the thread's CPU time: on a machine
 * shared with other work a wall clock also counts the time the thread
 * waited for a CPU, which swamps a 2 % difference. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double opt_scale = 1;
static long scaled(long n)
{
    long v = (long)((double)n * opt_scale);
    return v < 1000 ? 1000 : v;
}

/* ------------------------------------------------------------- the rows */

static long g_counter;

static double row_lock(char *why, size_t whylen)
{
    static conc_lock_t l = CONC_LOCK_INIT;
    long n = scaled(10000000);
    int err = 0;
    double t0 = cpu_now();
    for (long i = 0; i < n; i++) {
        err |= conc_lock_acquire(&l, true, CONC_FOREVER);
        g_counter++;
        err |= conc_lock_release(&l);
        BENCH_CLOBBER();
    }
    double t1 = cpu_now();
    if (err)
        return FAIL("lock error %d", err);
    return (t1 - t0) * 1e9 / (double)n;
}

typedef struct qrun {
    conc_queue_t *q;
    long n;
    _Atomic long sum;
    _Atomic int err;
} qrun_t;

static void *q_prod(void *arg)
{
    qrun_t *r = arg;
    for (long i = 1; i <= r->n; i++) {
        int rc = conc_queue_put(r->q, (void *)(intptr_t)i, true, CONC_FOREVER);
        if (rc)
            atomic_store(&r->err, rc);
    }
    return NULL;
}

static void *q_cons(void *arg)
{
    qrun_t *r = arg;
    long s = 0;
    for (long i = 0; i < r->n; i++) {
        void *x;
        int rc = conc_queue_get(r->q, &x, true, CONC_FOREVER);
        if (rc)
            atomic_store(&r->err, rc);
        s += (long)(intptr_t)x;
    }
    atomic_store(&r->sum, s);
    return NULL;
}

static double row_queue(char *why, size_t whylen)
{
    qrun_t r = {.n = scaled(2000000)};
    if (conc_queue_new(&r.q, CONC_FIFO, 1024) != 0)
        return FAIL("conc_queue_new");
    pthread_t p, c;
    double t0 = bench_now();
    pthread_create(&c, NULL, q_cons, &r);
    pthread_create(&p, NULL, q_prod, &r);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    double t1 = bench_now();
    conc_queue_free(r.q, NULL);
    if (atomic_load(&r.err) || atomic_load(&r.sum) != r.n * (r.n + 1) / 2)
        return FAIL("queue lost or broke items");
    return (double)r.n / (t1 - t0);
}

typedef struct pp {
    long n, turn;
    int err;
} pp_t;

static void *pp_body(void *arg)
{
    pp_t *p = arg;
    for (long i = 0; i < p->n; i++) {
        ++p->turn;
        int rc = conc_yield();
        if (rc)
            p->err = rc;
    }
    return NULL;
}

static double switch_n(long n, char *why, size_t whylen)
{
    pp_t p = {n, 0, 0};
    conc_green_t *a, *b;
    double t0 = cpu_now(); /* the green threads run on this OS thread */
    if (conc_go(&a, pp_body, &p) || conc_go(&b, pp_body, &p))
        return FAIL("conc_go");
    int ra = conc_green_join(a, CONC_FOREVER), rb = conc_green_join(b, CONC_FOREVER);
    double t1 = cpu_now();
    conc_green_free(a);
    conc_green_free(b);
    if (ra || rb || p.err || p.turn != 2 * n)
        return FAIL("green switch run broke");
    return (t1 - t0) * 1e9 / (double)(2 * n);
}

static double row_switch(char *why, size_t whylen) { return switch_n(scaled(1000000), why, whylen); }

static void *empty_task(void *arg) { return arg; }

static double row_pool(char *why, size_t whylen)
{
    static conc_executor_t *ex;
    if (!ex && conc_thread_pool_new(&ex, NULL) != 0)
        return FAIL("conc_thread_pool_new");
    long n = scaled(200000);
    conc_future_t **fs = malloc((size_t)n * sizeof *fs);
    if (!fs)
        return FAIL("out of memory");
    int err = 0;
    long wrong = 0;
    double t0 = bench_now();
    for (long i = 0; i < n; i++)
        err |= conc_submit(ex, &fs[i], empty_task, (void *)(intptr_t)i);
    for (long i = 0; i < n; i++) {
        void *r = NULL;
        err |= conc_future_result(fs[i], CONC_FOREVER, &r);
        wrong += r != (void *)(intptr_t)i;
        conc_future_free(fs[i]);
    }
    double t1 = bench_now();
    free(fs);
    if (err || wrong)
        return FAIL("pool run broke");
    return (double)n / (t1 - t0);
}

typedef double (*rowfn)(char *, size_t);
static const struct {
    const char *name, *unit;
    bool lower;
    rowfn fn;
} base_rows[] = {
    {"lock.uncontended", "ns", true, row_lock},
    {"queue.1p1c", "ops/s", false, row_queue},
    {"green.switch", "ns", true, row_switch},
    {"pool.throughput", "ops/s", false, row_pool},
};
#define NBASE 4

/* --child: warm up, then one measurement per base row, one line each
 * (nan when a row failed; the reason goes to stderr). */
static int child_main(void)
{
    char why[160];
    double save = opt_scale;
    opt_scale = save / 10;
    for (int i = 0; i < NBASE; i++)
        base_rows[i].fn(why, sizeof why);
    opt_scale = save;
    for (int i = 0; i < NBASE; i++) {
        why[0] = 0;
        double v = base_rows[i].fn(why, sizeof why);
        if (isnan(v))
            fprintf(stderr, "%s: %s\n", base_rows[i].name, why);
        printf("%.6f\n", v);
    }
    fflush(stdout);
    return 0;
}

#ifndef TRACE_BENCH_NOTRACE
/* ------------------------------------------------------- traced rows */

static double traced_switch(char *why, size_t whylen)
{
    long n = scaled(200000);
    conc_trace_opts_t o = {.buffer_events = (size_t)(2 * n + 65536)};
    int rc = conc_trace_start_opts("/dev/null", &o);
    if (rc)
        return FAIL("conc_trace_start: %s", conc_errname(rc));
    double v = switch_n(n, why, whylen);
    rc = conc_trace_stop();
    if (rc)
        return FAIL("conc_trace_stop: %s", conc_errname(rc));
    return v;
}

static double trace_event(char *why, size_t whylen)
{
    long n = scaled(200000);
    conc_trace_opts_t o = {.buffer_events = (size_t)(n + 4096)};
    int rc = conc_trace_start_opts("/dev/null", &o);
    if (rc)
        return FAIL("conc_trace_start: %s", conc_errname(rc));
    conc__trace_task(1, empty_task, NULL); /* the buffer is made here */
    conc__trace_task(2, empty_task, NULL);
    double t0 = cpu_now();
    for (long i = 0; i < n; i += 2) {
        conc__trace_task(1, empty_task, (void *)(intptr_t)i); /* start */
        conc__trace_task(2, empty_task, (void *)(intptr_t)i); /* finish */
    }
    double t1 = cpu_now();
    rc = conc_trace_stop();
    if (rc)
        return FAIL("conc_trace_stop: %s", conc_errname(rc));
    return (t1 - t0) * 1e9 / (double)n;
}

static void run_child(const char *path, bench_row_t **rows, const char *impl)
{
    char sc[32];
    snprintf(sc, sizeof sc, "%g", opt_scale);
    char *argv[] = {(char *)path, "--child", "--scale", sc, NULL};
    double v[NBASE];
    char why[200] = "";
    int got = bench_run_peer(argv, v, NBASE, why, sizeof why);
    for (int i = 0; i < NBASE; i++) {
        bench_impl_t *im = bench_impl_find(rows[i], impl);
        if (got != NBASE)
            bench_impl_note(im, BENCH_FAILED, "%s", why[0] ? why : "the child printed too few values");
        else if (isnan(v[i]))
            bench_impl_note(im, BENCH_FAILED, "see stderr");
        else
            bench_impl_record(im, v[i]);
    }
}
#endif

static bool child; /* --child: the measuring child (run by the parent) */

static int child_flag(const char *opt, const char *val)
{
    (void)val;
    if (strcmp(opt, "--child") != 0)
        return 0;
    child = true;
    return 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: trace_bench [--reps N] [--scale X] [--jsonl FILE]\n");
}

int main(int argc, char **argv)
{
    int reps = 7;
    const char *jsonl = NULL;
    /* --python, --python-script, --only: accepted, no Python peer here */
    const bench_args_t args = {.prog = "trace_bench", .usage = usage, .extra = child_flag, .reps = &reps,
                               .scale = &opt_scale, .jsonl = &jsonl};
    int st = bench_parse_args(argc, argv, &args);
    if (st >= 0)
        return st;
    if (child)
        return child_main();
#ifdef TRACE_BENCH_NOTRACE
    (void)reps;
    (void)jsonl;
    fprintf(stderr, "trace_bench_notrace: run by trace_bench (--child)\n");
    return 2;
#else
    if (reps < 1 || reps > BENCH_MAX_REPS)
        return 2;
    bench_note_load();
    double t_start = bench_now();
    /* the compiled-out twin sits next to this program */
    char self[4096], twin[4200];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0)
        return 1;
    self[len] = 0;
    snprintf(twin, sizeof twin, "%s_notrace", self);

    bench_row_t *rows[NBASE];
    for (int i = 0; i < NBASE; i++) {
        rows[i] = bench_row_new(base_rows[i].name, base_rows[i].unit, base_rows[i].lower);
        bench_impl_add(rows[i], "conc");
        bench_impl_add(rows[i], "conc_notrace");
    }
    bench_impl_t *traced = bench_impl_add(rows[2], "conc_traced");
    bench_row_t *ev_row = bench_row_new("trace.event", "ns", true);
    bench_impl_t *ev = bench_impl_add(ev_row, "conc");
    if (access(twin, X_OK) != 0)
        for (int i = 0; i < NBASE; i++)
            bench_impl_note(bench_impl_find(rows[i], "conc_notrace"), BENCH_SKIPPED, "%s not built", twin);
    char why[200];
    /* warm-up of the in-process rows */
    double save = opt_scale;
    opt_scale = save / 10;
    traced_switch(why, sizeof why);
    trace_event(why, sizeof why);
    opt_scale = save;
    for (int r = 0; r < reps; r++) {
        bool twin_ok = access(twin, X_OK) == 0;
        if (r & 1) {
            if (twin_ok)
                run_child(twin, rows, "conc_notrace");
            run_child(self, rows, "conc");
        } else {
            run_child(self, rows, "conc");
            if (twin_ok)
                run_child(twin, rows, "conc_notrace");
        }
        why[0] = 0;
        double v = traced_switch(why, sizeof why);
        if (isnan(v))
            bench_impl_note(traced, BENCH_FAILED, "%s", why);
        else
            bench_impl_record(traced, v);
        v = trace_event(why, sizeof why);
        if (isnan(v))
            bench_impl_note(ev, BENCH_FAILED, "%s", why);
        else
            bench_impl_record(ev, v);
    }
    bench_print_header("trace", reps);
    for (int i = 0; i < bench_nrows; i++)
        bench_print_row(&bench_rows[i]);
    printf("\ntargets (issue 13):\n");
    bench_tally_t t = {0, 0};
    for (int i = 0; i < NBASE; i++) {
        char text[96];
        snprintf(text, sizeof text, "%s: hooks off within 2%% of compiled out", base_rows[i].name);
        bench_target_tally(&t, base_rows[i].name, "conc_notrace", 0.98, text);
    }
    if (bench_impl_ok(ev)) {
        double m = bench_impl_median(ev);
        int met = m <= 100;
        printf("  [%s] %-52s %.1f ns\n", met ? " MET " : "MISSED", "trace.event <= 100 ns", m);
        t.met += met;
        t.missed += !met;
    }
    bench_impl_t *off = bench_impl_find(rows[2], "conc");
    if (bench_impl_ok(traced) && bench_impl_ok(off)) {
        double ratio = bench_impl_median(traced) / bench_impl_median(off);
        int met = ratio <= 3;
        printf("  [%s] %-52s %.2fx\n", met ? " MET " : "MISSED", "green.switch traced <= 3x off", ratio);
        t.met += met;
        t.missed += !met;
    }
    return bench_finish("trace", &t, jsonl, t_start);
#endif
}
