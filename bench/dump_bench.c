/*
 * bench/dump_bench.c — the cost of the dump and of the deadlock tools
 * (issues 13 and 14). Rows:
 *   dump.10k            ms to conc_dump (to /dev/null) 10,000 green threads
 *                       (one hub, all blocked) and 100 OS threads (blocked
 *                       on an Event), backtraces included; target <= 100 ms
 *   deadlock.detect     ms from an ABBA cycle of two threads forming (both
 *                       hold their first lock and wait for the other's) to
 *                       CONC_EDEADLK, detection delay 100 ms (the default)
 *   lockorder.overhead  ns per Lock acquire+release (a second lock held, so
 *                       every acquire looks up one edge) with lock-order
 *                       checking on; impl conc_off: the same with it off
 * Only conc: there is no peer doing the same work.
 */
#include "bench_util.h"

#include <pthread.h>

#include <conc.h>

static int opt_reps = 7;
static double opt_scale = 1;
static const char *opt_jsonl;
static const char *opt_only;

static bool want_row(const char *name) { return !opt_only || strstr(opt_only, name); }

/* ------------------------------------------------------------ dump.10k */

static conc_event_t stop;
static int ngreen = 10000;

static void *blocked_thread(void *arg)
{
    (void)arg;
    conc_event_wait(&stop, CONC_FOREVER);
    return NULL;
}

static conc_event_t greens_up;
static void *green_body(void *arg)
{
    (void)arg;
    conc_event_wait(&stop, CONC_FOREVER);
    return NULL;
}

static void *hub_thread(void *arg)
{
    (void)arg;
    conc_green_pool_t *p = NULL;
    conc_green_t **gs = calloc((size_t)ngreen, sizeof *gs);
    for (int i = 0; i < ngreen; i++)
        conc_go(&gs[i], green_body, NULL);
    conc_yield(); /* each runs once and blocks */
    conc_event_set(&greens_up);
    conc_green_joinall(gs, (size_t)ngreen, CONC_FOREVER);
    for (int i = 0; i < ngreen; i++)
        conc_green_free(gs[i]);
    free(gs);
    (void)p;
    return NULL;
}

static void row_dump(void)
{
    bench_row_t *r = bench_row_new("dump.10k", "ms", true);
    bench_impl_t *im = bench_impl_add(r, "conc");
    ngreen = (int)(10000 * opt_scale);
    if (ngreen < 10)
        ngreen = 10;
    conc_event_init(&stop);
    conc_event_init(&greens_up);
    conc_thread_t *ts[100];
    for (int i = 0; i < 99; i++) {
        conc_thread_new(&ts[i], blocked_thread, NULL, NULL);
        conc_thread_start(ts[i]);
    }
    conc_thread_new(&ts[99], hub_thread, NULL, NULL); /* the 100th thread: the hub */
    conc_thread_start(ts[99]);
    conc_event_wait(&greens_up, 60);

    struct timespec ts_ = {0, 200000000};
    nanosleep(&ts_, NULL); /* let every thread reach its park */
    FILE *f = fopen("/dev/null", "w");
    for (int rep = 0; rep < opt_reps; rep++) {
        double t0 = bench_now();
        conc_dump(f);
        bench_impl_record(im, (bench_now() - t0) * 1e3);
    }
    fclose(f);
    conc_event_set(&stop);
    for (int i = 0; i < 100; i++) {
        conc_thread_join(ts[i], CONC_FOREVER, NULL);
        conc_thread_free(ts[i]);
    }
}

/* ------------------------------------------------------ deadlock.detect */

typedef struct {
    conc_lock_t *first, *second;
    conc_barrier_t *bar;
    double t_formed, t_edeadlk;
    int rc;
} dl_arg_t;

static void *dl_thread(void *arg)
{
    dl_arg_t *a = arg;
    conc_lock_acquire(a->first, true, CONC_FOREVER);
    conc_barrier_wait(a->bar, 10, NULL);
    a->t_formed = bench_now(); /* both hold their first lock: the cycle forms now */
    a->rc = conc_lock_acquire(a->second, true, 10);
    if (a->rc == 0)
        conc_lock_release(a->second);
    else
        a->t_edeadlk = bench_now();
    conc_lock_release(a->first);
    return NULL;
}

static void row_detect(void)
{
    bench_row_t *r = bench_row_new("deadlock.detect", "ms", true);
    bench_impl_t *im = bench_impl_add(r, "conc");
    conc_debug_enable(CONC_DEBUG_DEADLOCK);
    fflush(stderr);
    int saved = dup(2), devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 2); /* the cycle reports */
    for (int rep = 0; rep < opt_reps; rep++) {
        conc_lock_t a = CONC_LOCK_INIT, b = CONC_LOCK_INIT;
        conc_barrier_t bar;
        conc_barrier_init(&bar, 2, NULL, NULL, 10);
        dl_arg_t x = {&a, &b, &bar, 0, 0, -1}, y = {&b, &a, &bar, 0, 0, -1};
        conc_thread_t *t1, *t2;
        conc_thread_new(&t1, dl_thread, &x, NULL);
        conc_thread_new(&t2, dl_thread, &y, NULL);
        conc_thread_start(t1);
        conc_thread_start(t2);
        conc_thread_join(t1, CONC_FOREVER, NULL);
        conc_thread_join(t2, CONC_FOREVER, NULL);
        conc_thread_free(t1);
        conc_thread_free(t2);
        double formed = x.t_formed > y.t_formed ? x.t_formed : y.t_formed;
        double found = x.rc == CONC_EDEADLK ? x.t_edeadlk : y.rc == CONC_EDEADLK ? y.t_edeadlk : 0;
        if (found > 0)
            bench_impl_record(im, (found - formed) * 1e3);
        else
            bench_impl_note(im, BENCH_FAILED, "no CONC_EDEADLK");
    }
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(devnull);
    conc_debug_disable(CONC_DEBUG_DEADLOCK);
}

/* --------------------------------------------------- lockorder.overhead */

static double lockorder_ns(bool on)
{
    static conc_lock_t a = CONC_LOCK_INIT, b = CONC_LOCK_INIT;
    if (on)
        conc_debug_enable(CONC_DEBUG_LOCKORDER);
    long n = (long)(2000000 * opt_scale);
    conc_lock_acquire(&a, true, CONC_FOREVER);
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        conc_lock_acquire(&b, true, CONC_FOREVER);
        conc_lock_release(&b);
        BENCH_CLOBBER();
    }
    double t = bench_now() - t0;
    conc_lock_release(&a);
    if (on)
        conc_debug_disable(CONC_DEBUG_LOCKORDER);
    return t / (double)n * 1e9;
}

static void row_lockorder(void)
{
    bench_row_t *r = bench_row_new("lockorder.overhead", "ns", true);
    bench_impl_t *on = bench_impl_add(r, "conc"), *off = bench_impl_add(r, "conc_off");
    for (int rep = 0; rep < opt_reps; rep++) {
        bench_impl_record(on, lockorder_ns(true));
        bench_impl_record(off, lockorder_ns(false));
    }
}

static void *empty_thread(void *arg) { return arg; }

int main(int argc, char **argv)
{
    /* --python, --python-script: accepted, no Python peer here */
    static const bench_args_t args = {
        .prog = "dump_bench", .reps = &opt_reps, .scale = &opt_scale, .only = &opt_only, .jsonl = &opt_jsonl};
    int st = bench_parse_args(argc, argv, &args);
    if (st >= 0)
        return st;
    (void)bench_run_peer;       /* no external peer here */
    (void)bench_python_targets; /* no Python peer here */
    pthread_t t; /* measure in a multi-threaded process, as sync_bench does */
    pthread_create(&t, NULL, empty_thread, NULL);
    pthread_join(t, NULL);
    bench_note_load();
    double t_start = bench_now();
    bench_print_header("dump", opt_reps);
    if (want_row("lockorder.overhead"))
        row_lockorder();
    if (want_row("deadlock.detect"))
        row_detect();
    if (want_row("dump.10k"))
        row_dump();
    for (int i = 0; i < bench_nrows; i++)
        bench_print_row(&bench_rows[i]);
    bench_tally_t tally = {0};
    bench_row_t *d = bench_row_find("dump.10k");
    if (d && d->nimpl && bench_impl_ok(&d->impl[0])) {
        double m = bench_impl_median(&d->impl[0]);
        bool ok = m <= 100;
        printf("  target dump.10k <= 100 ms: %.1f ms: %s\n", m, ok ? "met" : "MISSED");
        ok ? tally.met++ : tally.missed++;
    }
    return bench_finish("dump", &tally, opt_jsonl, t_start);
}
