/*
 * One word between threads and processes (conc/pool.h: conc_submit_bytes,
 * conc_map_bytes, conc_future_bytes, conc_results_*): the SAME test bodies
 * run against a ThreadPoolExecutor (suite pool_bytes_thread) and a
 * ProcessPoolExecutor (suite pool_bytes_process) — only the constructor
 * differs. The behaviours are CPython's test_concurrent_futures ones
 * (executor.py, test_future.py, test_shutdown.py): submit and result,
 * exceptions, map with chunksize (results in order, failures per item),
 * result and map timeouts, cancel, shutdown (wait, cancel_futures, submit
 * after shutdown) — plus conc's own: the argument is copied at submit,
 * results are bytes owned by the future, and conc_submit with a pointer on
 * a process pool is refused (CONC_ENOTSUP) while a thread pool takes it.
 *
 * Own main with CONC_PROCESS_MAIN: the fork server runs fresh copies of
 * this executable.
 */
#include "test_util.h"

#include <ctype.h>

#include <conc/pool.h>

static void setup(void) { unsetenv("BXFI_MAP"); }
TestSuite(pool_bytes_thread, .init = setup, .timeout = TU_TIMEOUT);
TestSuite(pool_bytes_process, .init = setup, .timeout = TU_TIMEOUT);

/* ------------------------------------------------------------ tasks */

static int square(const void *arg, size_t len, conc_pool_out_t *out)
{
    if (len != sizeof(long))
        return CONC_EINVAL;
    long x;
    memcpy(&x, arg, sizeof x);
    long y = x * x;
    return conc_pool_return(out, &y, sizeof y);
}
CONC_POOL_REGISTER(square);

/* Echo, written in two pieces (appended) and upper-cased. */
static int shout(const void *arg, size_t len, conc_pool_out_t *out)
{
    char buf[256];
    if (len > sizeof buf)
        return CONC_ERANGE;
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)toupper(((const unsigned char *)arg)[i]);
    size_t h = len / 2;
    int rc = conc_pool_return(out, buf, h);
    return rc ? rc : conc_pool_return(out, buf + h, len - h);
}
CONC_POOL_REGISTER(shout);

/* Fails its own way: "raise" (conc_fail), "neg" (returns a CONC_E*
 * code), "pos" (returns 5), anything else succeeds with no result. */
static int picky(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)out;
    if (len == 5 && !memcmp(arg, "raise", 5)) {
        conc_fail(CONC_ERANGE, "bad value %.*s", (int)len, (const char *)arg);
        return 0;
    }
    if (len == 3 && !memcmp(arg, "neg", 3))
        return CONC_EKEY;
    if (len == 3 && !memcmp(arg, "pos", 3))
        return 5;
    return 0;
}
CONC_POOL_REGISTER(picky);

/* Sleeps the given number of milliseconds, returns them. */
static int nap(const void *arg, size_t len, conc_pool_out_t *out)
{
    int ms;
    if (len != sizeof ms)
        return CONC_EINVAL;
    memcpy(&ms, arg, sizeof ms);
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
    return conc_pool_return(out, &ms, sizeof ms);
}
CONC_POOL_REGISTER(nap);

/* A result bigger than any small-buffer path: len bytes of arg[0]. */
static int big(const void *arg, size_t len, conc_pool_out_t *out)
{
    if (len != sizeof(size_t))
        return CONC_EINVAL;
    size_t n;
    memcpy(&n, arg, sizeof n);
    char *b = malloc(n);
    if (!b)
        return CONC_ENOMEM;
    for (size_t i = 0; i < n; i++)
        b[i] = (char)(i * 7);
    int rc = conc_pool_return(out, b, n);
    free(b);
    return rc;
}
CONC_POOL_REGISTER(big);

static void *word_sq(void *a)
{
    uintptr_t x = (uintptr_t)a;
    return (void *)(x * x);
}
CONC_REGISTER(word_sq);

/* ---------------------------------------------------- the two pools */

typedef conc_executor_t *(*maker_t)(size_t workers);

static conc_executor_t *threads(size_t workers)
{
    conc_executor_t *ex = NULL;
    conc_thread_pool_opts_t o = {.max_workers = workers};
    cr_assert_eq(conc_thread_pool_new(&ex, &o), 0);
    return ex;
}

static conc_executor_t *processes(size_t workers)
{
    conc_executor_t *ex = NULL;
    conc_process_pool_opts_t o = {.max_workers = workers};
    cr_assert_eq(conc_process_pool_new(&ex, &o), 0);
    return ex;
}

/* BOTH(name): one body, a test in each suite. */
#define BOTH(name)                                                                                     \
    static void name(maker_t make);                                                                    \
    Test(pool_bytes_thread, name) { name(threads); }                                                   \
    Test(pool_bytes_process, name) { name(processes); }                                                \
    static void name(maker_t make)

static long long_of(conc_future_t *f)
{
    const void *d;
    size_t n;
    cr_assert_eq(conc_future_bytes(f, 30, &d, &n), 0);
    cr_assert_eq(n, sizeof(long));
    long v;
    memcpy(&v, d, sizeof v);
    return v;
}

/* ----------------------------------------------------------- submit */

BOTH(submit_result)
{
    conc_executor_t *ex = make(2);
    conc_future_t *f;
    long x = 7;
    cr_assert_eq(conc_submit_bytes(ex, &f, square, &x, sizeof x), 0);
    x = 1000; /* the argument was copied: reusing the buffer at once is fine */
    cr_assert_eq(long_of(f), 49);
    cr_assert(conc_future_done(f));
    cr_assert_not(conc_future_cancelled(f));
    int code = -1;
    const char *msg = "x";
    cr_assert_eq(conc_future_exception(f, 0, &code, &msg), 0);
    cr_assert_eq(code, 0);
    cr_assert_null(msg);
    conc_future_free(f);

    /* pieces are appended; an empty result is an empty result */
    cr_assert_eq(conc_submit_bytes(ex, &f, shout, "hello", 5), 0);
    const void *d;
    size_t n;
    cr_assert_eq(conc_future_bytes(f, 30, &d, &n), 0);
    cr_assert_eq(n, 5);
    cr_assert_eq(memcmp(d, "HELLO", 5), 0);
    conc_future_free(f);
    cr_assert_eq(conc_submit_bytes(ex, &f, picky, NULL, 0), 0);
    cr_assert_eq(conc_future_bytes(f, 30, &d, &n), 0);
    cr_assert_eq(n, 0);
    conc_future_free(f);

    /* a longer argument (not a small block) */
    char longarg[200];
    for (int i = 0; i < 200; i++)
        longarg[i] = (char)('a' + i % 26);
    cr_assert_eq(conc_submit_bytes(ex, &f, shout, longarg, sizeof longarg), 0);
    memset(longarg, 0, sizeof longarg);
    cr_assert_eq(conc_future_bytes(f, 30, &d, &n), 0);
    cr_assert_eq(n, 200);
    for (int i = 0; i < 200; i++)
        cr_assert_eq(((const char *)d)[i], (char)('A' + i % 26));
    conc_future_free(f);

    /* a big result */
    size_t want = 300000;
    cr_assert_eq(conc_submit_bytes(ex, &f, big, &want, sizeof want), 0);
    cr_assert_eq(conc_future_bytes(f, 30, &d, &n), 0);
    cr_assert_eq(n, want);
    for (size_t i = 0; i < n; i += 4999)
        cr_assert_eq(((const char *)d)[i], (char)(i * 7));
    conc_future_free(f);

    /* the old name is the same call */
    x = 9;
    cr_assert_eq(conc_process_pool_submit(ex, &f, square, &x, sizeof x), 0);
    cr_assert_eq(long_of(f), 81);
    conc_future_free(f);
    conc_executor_free(ex);
}

BOTH(many_submits_in_order)
{
    conc_executor_t *ex = make(2);
    enum { N = 200 };
    conc_future_t *fs[N];
    for (long i = 0; i < N; i++)
        cr_assert_eq(conc_submit_bytes(ex, &fs[i], square, &i, sizeof i), 0);
    for (long i = 0; i < N; i++) {
        cr_assert_eq(long_of(fs[i]), i * i);
        conc_future_free(fs[i]);
    }
    conc_executor_free(ex);
}

/* test_future.py / executor.py: an exception in the task is the future's
 * exception; result() raises it (CONC_EFAILED). */
BOTH(exception)
{
    conc_executor_t *ex = make(2);
    const char *in[] = {"raise", "neg", "pos"};
    const int codes[] = {CONC_ERANGE, CONC_EKEY, CONC_EFAILED};
    for (int k = 0; k < 3; k++) {
        conc_future_t *f;
        cr_assert_eq(conc_submit_bytes(ex, &f, picky, in[k], strlen(in[k])), 0);
        cr_assert_eq(conc_future_bytes(f, 30, NULL, NULL), CONC_EFAILED);
        void *r;
        cr_assert_eq(conc_future_result(f, 0, &r), CONC_EFAILED);
        int code = 0;
        const char *msg = NULL;
        cr_assert_eq(conc_future_exception(f, 0, &code, &msg), 0);
        cr_assert_eq(code, codes[k], "%s: %d", in[k], code);
        cr_assert_not_null(msg);
        if (k == 0)
            cr_assert_str_eq(msg, "bad value raise");
        bool ok = true;
        cr_assert_eq(conc_async_successful(f, &ok), 0);
        cr_assert_not(ok);
        conc_future_free(f);
    }
    conc_executor_free(ex);
}

BOTH(misuse)
{
    conc_executor_t *ex = make(1);
    conc_future_t *f = NULL;
    long x = 1;
    cr_assert_eq(conc_submit_bytes(NULL, &f, square, &x, sizeof x), CONC_EINVAL);
    cr_assert_eq(conc_submit_bytes(ex, NULL, square, &x, sizeof x), CONC_EINVAL);
    cr_assert_eq(conc_submit_bytes(ex, &f, NULL, &x, sizeof x), CONC_EINVAL);
    cr_assert_eq(conc_submit_bytes(ex, &f, square, NULL, 8), CONC_EINVAL);
    conc_results_t *r = (conc_results_t *)&x;
    cr_assert_eq(conc_map_bytes(ex, square, &x, sizeof x, 1, 1, NAN, &r), CONC_EINVAL);
    cr_assert_eq(conc_map_bytes(ex, NULL, &x, sizeof x, 1, 1, 1, &r), CONC_EINVAL);
    cr_assert_eq(conc_map_bytes(ex, square, NULL, sizeof x, 1, 1, 1, &r), CONC_EINVAL);
    /* a word future holds no bytes */
    conc_executor_t *tp = threads(1);
    cr_assert_eq(conc_submit(tp, &f, word_sq, (void *)3), 0);
    cr_assert_eq(conc_future_bytes(f, 30, NULL, NULL), CONC_EINVAL);
    conc_future_free(f);
    conc_executor_free(tp);
    conc_executor_free(ex);
}

/* ---------------------------------------------------------------- map */

static void check_map(maker_t make, size_t chunksize)
{
    conc_executor_t *ex = make(2);
    enum { N = 101 };
    long xs[N];
    for (long i = 0; i < N; i++)
        xs[i] = i - 50;
    conc_results_t *r = NULL;
    cr_assert_eq(conc_map_bytes(ex, square, xs, sizeof *xs, N, chunksize, 30, &r), 0);
    for (long i = 0; i < N; i++)
        xs[i] = -1; /* copied: no longer looked at */
    cr_assert_eq(conc_results_len(r), N);
    long out[N];
    cr_assert_eq(conc_results_copy(r, out, sizeof *out), 0);
    for (long i = 0; i < N; i++)
        cr_assert_eq(out[i], (i - 50) * (i - 50), "item %ld", i);
    const void *d;
    size_t n;
    cr_assert_eq(conc_results_item(r, 3, &d, &n), 0);
    cr_assert_eq(n, sizeof(long));
    conc_results_free(r);
    conc_executor_free(ex);
}

BOTH(map_chunksize_1) { check_map(make, 1); }
BOTH(map_chunksize_7) { check_map(make, 7); }
BOTH(map_chunksize_all) { check_map(make, 1000); }

BOTH(map_items_of_any_size_and_failures)
{
    conc_executor_t *ex = make(2);
    conc_buf_t items[] = {{"ab", 2}, {"raise", 5}, {"", 0}, {"xyz", 3}, {"neg", 3}};
    for (size_t cs = 1; cs <= 5; cs += 2) {
        conc_results_t *r = NULL;
        cr_assert_eq(conc_map_bytes(ex, shout, items, 0, 5, cs, 30, &r), 0);
        const void *d;
        size_t n;
        cr_assert_eq(conc_results_item(r, 0, &d, &n), 0);
        cr_assert_eq(n, 2);
        cr_assert_eq(memcmp(d, "AB", 2), 0);
        cr_assert_eq(conc_results_item(r, 2, &d, &n), 0);
        cr_assert_eq(n, 0);
        cr_assert_eq(conc_results_item(r, 3, &d, &n), 0);
        cr_assert_eq(memcmp(d, "XYZ", 3), 0);
        conc_results_free(r);
        /* per-item failures: the map says CONC_EFAILED, each item its own */
        r = NULL;
        cr_assert_eq(conc_map_bytes(ex, picky, items, 0, 5, cs, 30, &r), CONC_EFAILED, "chunksize %zu", cs);
        cr_assert_not_null(r);
        int code = -1;
        const char *msg = NULL;
        cr_assert_eq(conc_results_item(r, 0, NULL, NULL), 0);
        cr_assert_eq(conc_results_item(r, 1, &d, NULL), CONC_EFAILED);
        cr_assert_str_eq((const char *)d, "bad value raise");
        cr_assert_eq(conc_results_exception(r, 1, &code, &msg), 0);
        cr_assert_eq(code, CONC_ERANGE);
        cr_assert_str_eq(msg, "bad value raise");
        cr_assert_eq(conc_results_exception(r, 4, &code, NULL), 0);
        cr_assert_eq(code, CONC_EKEY);
        cr_assert_eq(conc_results_exception(r, 3, &code, &msg), 0);
        cr_assert_eq(code, 0);
        cr_assert_null(msg);
        conc_results_free(r);
    }
    /* an empty map */
    conc_results_t *r = NULL;
    cr_assert_eq(conc_map_bytes(ex, square, NULL, sizeof(long), 0, 1, 30, &r), 0);
    cr_assert_eq(conc_results_len(r), 0);
    conc_results_free(r);
    conc_executor_free(ex);
}

/* executor.py test_map_timeout: the timeout is for the whole map; what has
 * not started is cancelled. */
BOTH(map_timeout)
{
    conc_executor_t *ex = make(1);
    int ms[] = {0, 0, 600, 600, 600};
    conc_results_t *r = (conc_results_t *)ms;
    double t0 = conc_monotonic();
    cr_assert_eq(conc_map_bytes(ex, nap, ms, sizeof *ms, 5, 1, 0.2, &r), CONC_ETIMEDOUT);
    cr_assert_null(r);
    cr_assert(conc_monotonic() - t0 < 0.6 * TU_SLACK + 0.5);
    conc_executor_free(ex);
}

/* ----------------------------------------------------- result timeout */

BOTH(result_timeout)
{
    conc_executor_t *ex = make(1);
    int ms = 300;
    conc_future_t *f;
    cr_assert_eq(conc_submit_bytes(ex, &f, nap, &ms, sizeof ms), 0);
    const void *d;
    size_t n;
    cr_assert_eq(conc_future_bytes(f, 0.02, &d, &n), CONC_ETIMEDOUT);
    cr_assert_eq(conc_future_bytes(f, -1, &d, &n), CONC_ETIMEDOUT); /* negative: already up */
    cr_assert_eq(conc_future_bytes(f, NAN, &d, &n), CONC_EINVAL);
    cr_assert_eq(conc_future_bytes(f, CONC_FOREVER, &d, &n), 0);
    cr_assert_eq(n, sizeof ms);
    conc_future_free(f);
    conc_executor_free(ex);
}

/* --------------------------------------------------------------- cancel */

/* test_future.py / executor.py: a pending future can be cancelled (its
 * result then says so), a running or finished one cannot. */
BOTH(cancel)
{
    conc_executor_t *ex = make(1);
    int slow = 300, quick = 0;
    enum { Q = 8 };
    conc_future_t *a, *q[Q];
    cr_assert_eq(conc_submit_bytes(ex, &a, nap, &slow, sizeof slow), 0);
    TU_WAIT_UNTIL(conc_future_running(a) || conc_future_done(a), 10);
    for (int i = 0; i < Q; i++)
        cr_assert_eq(conc_submit_bytes(ex, &q[i], nap, &quick, sizeof quick), 0);
    /* the last one is still queued (a process pool may already have sent
     * the first few to its worker, as CPython's call queue holds some) */
    conc_future_t *b = q[Q - 1];
    cr_assert(conc_future_cancel(b));
    cr_assert(conc_future_cancel(b)); /* idempotent */
    cr_assert(conc_future_cancelled(b));
    cr_assert_not(conc_future_cancel(a)); /* running */
    cr_assert_eq(conc_future_bytes(b, 30, NULL, NULL), CONC_ECANCELLED);
    cr_assert_eq(conc_future_bytes(a, 30, NULL, NULL), 0);
    cr_assert_not(conc_future_cancel(a)); /* finished */
    for (int i = 0; i < Q - 1; i++) {
        cr_assert_eq(conc_future_bytes(q[i], 30, NULL, NULL), 0);
        cr_assert_not(conc_future_cancel(q[i]));
        conc_future_free(q[i]);
    }
    conc_future_free(a);
    conc_future_free(b);
    conc_executor_free(ex);
}

/* ------------------------------------------------------------- shutdown */

/* test_shutdown.py: shutdown(wait) lets queued work finish; submits
 * after it fail; shutdown twice is fine. */
BOTH(shutdown_wait)
{
    conc_executor_t *ex = make(2);
    int ms = 50;
    conc_future_t *fs[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(conc_submit_bytes(ex, &fs[i], nap, &ms, sizeof ms), 0);
    cr_assert_eq(conc_executor_shutdown(ex, true, false), 0);
    for (int i = 0; i < 4; i++) {
        cr_assert(conc_future_done(fs[i]));
        cr_assert_eq(conc_future_bytes(fs[i], 0, NULL, NULL), 0);
        conc_future_free(fs[i]);
    }
    conc_future_t *f;
    cr_assert_eq(conc_submit_bytes(ex, &f, nap, &ms, sizeof ms), CONC_ESHUTDOWN);
    conc_results_t *r;
    cr_assert_eq(conc_map_bytes(ex, nap, &ms, sizeof ms, 1, 1, 30, &r), CONC_ESHUTDOWN);
    cr_assert_eq(conc_executor_shutdown(ex, true, false), 0);
    conc_executor_free(ex);
}

/* test_shutdown.py test_cancel_futures: queued work is cancelled, the
 * running task finishes. */
BOTH(shutdown_cancel_futures)
{
    conc_executor_t *ex = make(1);
    int slow = 200, quick = 0;
    conc_future_t *a, *q[5];
    cr_assert_eq(conc_submit_bytes(ex, &a, nap, &slow, sizeof slow), 0);
    TU_WAIT_UNTIL(conc_future_running(a) || conc_future_done(a), 10);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(conc_submit_bytes(ex, &q[i], nap, &quick, sizeof quick), 0);
    cr_assert_eq(conc_executor_shutdown(ex, true, true), 0);
    cr_assert_eq(conc_future_bytes(a, 0, NULL, NULL), 0);
    size_t cancelled = 0;
    for (int i = 0; i < 5; i++) {
        cr_assert(conc_future_done(q[i]));
        cancelled += conc_future_cancelled(q[i]);
        conc_future_free(q[i]);
    }
    /* a process pool may have sent a batch to its worker already */
    cr_assert(cancelled >= 3, "%zu cancelled", cancelled);
    conc_future_free(a);
    conc_executor_free(ex);
}

/* The futures are ordinary futures: wait and as_completed work on them. */
BOTH(wait_and_as_completed)
{
    conc_executor_t *ex = make(2);
    int ms[3] = {150, 0, 20};
    conc_future_t *fs[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_submit_bytes(ex, &fs[i], nap, &ms[i], sizeof ms[i]), 0);
    conc_future_t *done[3], *nd[3];
    size_t ndone, nnd;
    cr_assert_eq(conc_wait(fs, 3, 30, CONC_FIRST_COMPLETED, done, &ndone, nd, &nnd), 0);
    cr_assert(ndone >= 1);
    cr_assert_eq(conc_wait(fs, 3, 30, CONC_ALL_COMPLETED, done, &ndone, nd, &nnd), 0);
    cr_assert_eq(ndone, 3);
    conc_as_completed_t *it;
    cr_assert_eq(conc_as_completed_new(&it, fs, 3, 30), 0);
    conc_future_t *f;
    int k = 0;
    while (conc_as_completed_next(it, &f) == 0)
        k++;
    cr_assert_eq(k, 3);
    conc_as_completed_free(it);
    for (int i = 0; i < 3; i++)
        conc_future_free(fs[i]);
    conc_executor_free(ex);
}

/* ------------------------------------------------------ colorless waits */

/* A green thread waiting on a bytes future or a map parks only itself
 * (another green thread ticks meanwhile); a Timeout scope and a kill cut
 * the waits short. */
static conc_executor_t *g_ex;
static atomic_int ticks;

static void *ticker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5; i++) {
        conc_sleep(0.01);
        atomic_fetch_add(&ticks, 1);
    }
    return NULL;
}

static void *scoped_waits(void *arg)
{
    (void)arg;
    int ms = 400;
    conc_future_t *f;
    if (conc_submit_bytes(g_ex, &f, nap, &ms, sizeof ms) != 0)
        return (void *)1;
    conc_timeout_begin(0.1);
    int rc = conc_future_bytes(f, CONC_FOREVER, NULL, NULL);
    conc_timeout_end();
    bool ok = rc == CONC_ETIMEDOUT && atomic_load(&ticks) >= 3;
    conc_future_free(f);
    int mss[2] = {400, 400};
    conc_results_t *r = NULL;
    conc_timeout_begin(0.05);
    rc = conc_map_bytes(g_ex, nap, mss, sizeof *mss, 2, 1, CONC_FOREVER, &r);
    conc_timeout_end();
    ok = ok && rc == CONC_ETIMEDOUT && r == NULL;
    return ok ? NULL : (void *)2;
}

static void *killed_wait(void *arg)
{
    conc_future_t *f = arg;
    return (void *)(intptr_t)conc_future_bytes(f, CONC_FOREVER, NULL, NULL);
}

BOTH(green_waits_are_colorless)
{
    g_ex = make(2);
    atomic_store(&ticks, 0);
    conc_green_t *g[2];
    cr_assert_eq(conc_go(&g[0], scoped_waits, NULL), 0);
    cr_assert_eq(conc_go(&g[1], ticker, NULL), 0);
    void *r = (void *)9;
    cr_assert_eq(conc_green_get(g[0], 30, &r), 0);
    cr_assert_null(r, "%p", r);
    cr_assert_eq(conc_green_join(g[1], 30), 0);
    conc_green_free(g[0]);
    conc_green_free(g[1]);

    int ms = 300;
    conc_future_t *f;
    cr_assert_eq(conc_submit_bytes(g_ex, &f, nap, &ms, sizeof ms), 0);
    conc_green_t *k;
    cr_assert_eq(conc_go(&k, killed_wait, f), 0);
    conc_sleep(0.02); /* k starts and waits */
    double t0 = conc_monotonic();
    cr_assert_eq(conc_green_kill(k, true, 30), 0);
    cr_assert(conc_monotonic() - t0 < 0.25, "the kill cut the wait short");
    cr_assert(conc_green_killed(k));
    cr_assert_eq(conc_future_bytes(f, 30, NULL, NULL), 0); /* the task itself went on */
    conc_green_free(k);
    conc_future_free(f);
    conc_executor_free(g_ex);
}

/* ------------------------------------------- conc_submit with a pointer */

/* A process pool refuses conc_submit (a pointer would reach the worker as
 * a bare number); a thread pool takes it, as before. */
Test(pool_bytes_process, conc_submit_refused)
{
    conc_executor_t *ex = processes(1);
    conc_future_t *f = NULL;
    long x = 5;
    cr_assert_eq(conc_submit(ex, &f, word_sq, &x), CONC_ENOTSUP);
    cr_assert_null(f);
    cr_assert_str_eq(conc_strerror(CONC_ENOTSUP), "NotImplementedError: not supported");
    cr_assert_eq(conc_process_pool_submit_word(ex, &f, word_sq, (void *)5), 0);
    void *r;
    cr_assert_eq(conc_future_result(f, 30, &r), 0);
    cr_assert_eq((uintptr_t)r, 25);
    conc_future_free(f);
    conc_executor_free(ex);
}

Test(pool_bytes_thread, conc_submit_still_works)
{
    conc_executor_t *ex = threads(1);
    conc_future_t *f;
    cr_assert_eq(conc_submit(ex, &f, word_sq, (void *)5), 0);
    void *r;
    cr_assert_eq(conc_future_result(f, 30, &r), 0);
    cr_assert_eq((uintptr_t)r, 25);
    conc_future_free(f);
    conc_executor_free(ex);
}

/* Bytes tasks on a thread pool need no registration (a process pool's
 * spawned workers need it to find fn by name; a thread calls it). */
static int unregistered_twice(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)len;
    int v = *(const int *)arg * 2;
    return conc_pool_return(out, &v, sizeof v);
}

Test(pool_bytes_thread, unregistered_fn_runs)
{
    conc_executor_t *ex = threads(1);
    conc_future_t *f;
    int x = 21;
    cr_assert_eq(conc_submit_bytes(ex, &f, unregistered_twice, &x, sizeof x), 0);
    const void *d;
    size_t n;
    cr_assert_eq(conc_future_bytes(f, 30, &d, &n), 0);
    cr_assert_eq(*(const int *)d, 42);
    conc_future_free(f);
    conc_executor_free(ex);
}

Test(pool_bytes_process, unregistered_fn_refused)
{
    conc_executor_t *ex = processes(1);
    conc_future_t *f;
    int x = 21;
    cr_assert_eq(conc_submit_bytes(ex, &f, unregistered_twice, &x, sizeof x), CONC_EINVAL);
    conc_executor_free(ex);
}

/* A task that submits to its own thread pool and waits runs the subtask
 * itself if no worker is free (no deadlock with one worker). */
static conc_executor_t *nest_ex;
static int nested(const void *arg, size_t len, conc_pool_out_t *out)
{
    conc_future_t *f;
    int rc = conc_submit_bytes(nest_ex, &f, square, arg, len);
    if (rc)
        return rc;
    const void *d;
    size_t n;
    rc = conc_future_bytes(f, CONC_FOREVER, &d, &n);
    if (rc == 0)
        rc = conc_pool_return(out, d, n);
    conc_future_free(f);
    return rc;
}

Test(pool_bytes_thread, nested_submit_one_worker)
{
    nest_ex = threads(1);
    conc_future_t *f;
    long x = 12;
    cr_assert_eq(conc_submit_bytes(nest_ex, &f, nested, &x, sizeof x), 0);
    cr_assert_eq(long_of(f), 144);
    conc_future_free(f);
    conc_executor_free(nest_ex);
}

/* Many short tasks from several threads at once, futures freed early or
 * late: the ownership hand-off between submitter and worker (bytes.c). */
static conc_executor_t *race_ex;
static long race_n; /* tu_iters is not for threads: read once by the test */
static void *race_submitter(void *arg)
{
    (void)arg;
    long n = race_n;
    for (long i = 0; i < n; i++) {
        conc_future_t *f;
        if (conc_submit_bytes(race_ex, &f, square, &i, sizeof i) != 0)
            return (void *)1;
        if (i % 3 == 0) {
            conc_future_free(f); /* never read */
            continue;
        }
        const void *d;
        size_t len;
        if (conc_future_bytes(f, 30, &d, &len) != 0 || len != sizeof(long) || *(const long *)d != i * i)
            return (void *)2;
        conc_future_free(f);
    }
    return NULL;
}

Test(pool_bytes_thread, handoff_race)
{
    race_ex = threads(3);
    race_n = tu_iters(3000);
    conc_thread_t *t[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_thread_spawn(&t[i], race_submitter, NULL, NULL), 0);
    for (int i = 0; i < 3; i++) {
        void *r = (void *)9;
        cr_assert_eq(conc_thread_join(t[i], CONC_FOREVER, &r), 0);
        cr_assert_null(r);
        conc_thread_free(t[i]);
    }
    conc_executor_free(race_ex);
}

TU_MAIN_WITH_PROCESS_GUARD()
