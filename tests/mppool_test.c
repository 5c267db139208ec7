/*
 * multiprocessing.Pool (conc/pool.h): the behaviours of CPython's
 * _test_multiprocessing.py _TestPool — apply, apply_async with callbacks,
 * map (default chunking, chunksize), imap, imap_unordered (with
 * timeouts), close/join, terminate, initializer, maxtasksperchild — and
 * conc's addition: a worker that dies is replaced and only its task fails
 * with CONC_EBROKEN.
 *
 * Own main with CONC_PROCESS_MAIN (see tests/process_test.c).
 */
#include "test_util.h"

#include <signal.h>

#include <conc/pool.h>

static void setup(void) { unsetenv("BXFI_MAP"); }
TestSuite(mppool, .init = setup, .timeout = TU_TIMEOUT);

static int sqr(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)len;
    int x;
    memcpy(&x, arg, sizeof x);
    int y = x * x;
    return conc_pool_return(out, &y, sizeof y);
}
CONC_POOL_REGISTER(sqr);

/* arg: int x, double delay */
typedef struct {
    int x;
    double delay;
} slow_t;

static int slow_sqr(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)len;
    slow_t s;
    memcpy(&s, arg, sizeof s);
    tu_sleep(s.delay);
    int y = s.x * s.x;
    return conc_pool_return(out, &y, sizeof y);
}
CONC_POOL_REGISTER(slow_sqr);

static int fail_on_5(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)len;
    int x;
    memcpy(&x, arg, sizeof x);
    if (x == 5) {
        conc_fail(CONC_EINVAL, "five");
        return 0;
    }
    return conc_pool_return(out, &x, sizeof x);
}
CONC_POOL_REGISTER(fail_on_5);

static int pid_task(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len;
    int p = getpid();
    return conc_pool_return(out, &p, sizeof p);
}
CONC_POOL_REGISTER(pid_task);

static int die_task(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len, (void)out;
    raise(SIGKILL);
    return 0;
}
CONC_POOL_REGISTER(die_task);

static int init_global;
static int init_set(const void *arg, size_t len)
{
    if (len == sizeof init_global)
        memcpy(&init_global, arg, len);
    return 0;
}
CONC_REGISTER(init_set);

static int init_bad(const void *arg, size_t len)
{
    (void)arg, (void)len;
    return 7;
}
CONC_REGISTER(init_bad);

static int read_global(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len;
    return conc_pool_return(out, &init_global, sizeof init_global);
}
CONC_POOL_REGISTER(read_global);

static conc_pool_t *new_pool(size_t n)
{
    conc_pool_t *p = NULL;
    conc_pool_opts_t o = {.processes = n};
    cr_assert_eq(conc_pool_new(&p, &o), 0);
    return p;
}

static int as_int(const void *d)
{
    int v;
    memcpy(&v, d, sizeof v);
    return v;
}

Test(mppool, apply)
{
    conc_pool_t *p = new_pool(2);
    int x = 5;
    void *d;
    size_t n;
    cr_assert_eq(conc_pool_apply(p, sqr, &x, sizeof x, &d, &n), 0);
    cr_assert_eq(n, sizeof(int));
    cr_assert_eq(as_int(d), 25);
    free(d);
    /* a task failing with CONC_EINVAL is not a bad argument: CONC_EFAILED */
    cr_assert_eq(conc_pool_apply(p, fail_on_5, &x, sizeof x, &d, &n), CONC_EFAILED);
    cr_assert_eq(conc_pool_apply(NULL, sqr, &x, sizeof x, &d, &n), CONC_EINVAL);
    cr_assert_eq(conc_pool_free(p), 0);
}

static int not_a_pool_task(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len, (void)out;
    return 0;
}

Test(mppool, unregistered_task_is_named)
{
    conc_pool_t *p = new_pool(1);
    int x = 5;
    void *d;
    size_t n;
    conc_fail_clear();
    cr_assert_eq(conc_pool_apply(p, not_a_pool_task, &x, sizeof x, &d, &n), CONC_EINVAL);
    const char *msg = NULL;
    cr_assert_eq(conc_failure(&msg), CONC_EINVAL);
    cr_assert(strstr(msg, "not_a_pool_task") && strstr(msg, "CONC_POOL_REGISTER(not_a_pool_task)"),
              "message: %s", msg);
    cr_assert_eq(conc_pool_free(p), 0);
}

Test(mppool, map)
{
    conc_pool_t *p = new_pool(4);
    int xs[100], ys[100];
    for (int i = 0; i < 100; i++)
        xs[i] = i;
    size_t chunks[3] = {0, 1, 7};
    for (int k = 0; k < 3; k++) {
        conc_results_t *r;
        cr_assert_eq(conc_pool_map(p, sqr, xs, sizeof xs[0], 100, chunks[k], &r), 0);
        cr_assert_eq(conc_results_copy(r, ys, sizeof ys[0]), 0);
        for (int i = 0; i < 100; i++)
            cr_assert_eq(ys[i], i * i);
        conc_results_free(r);
    }
    conc_results_t *r;
    cr_assert_eq(conc_pool_map(p, sqr, NULL, sizeof(int), 0, 0, &r), 0);
    cr_assert_eq(conc_results_len(r), 0);
    conc_results_free(r);
    /* a failing item: map reports it, the rest are there */
    cr_assert_eq(conc_pool_map(p, fail_on_5, xs, sizeof xs[0], 10, 3, &r), CONC_EFAILED);
    const void *d;
    size_t n;
    cr_assert_eq(conc_results_item(r, 5, &d, &n), CONC_EFAILED);
    cr_assert_str_eq(d, "five");
    int code = 0;
    cr_assert_eq(conc_results_exception(r, 5, &code, NULL), 0);
    cr_assert_eq(code, CONC_EINVAL);
    cr_assert_eq(conc_results_item(r, 9, &d, &n), 0);
    cr_assert_eq(as_int(d), 9);
    conc_results_free(r);
    conc_pool_free(p);
}

Test(mppool, imap)
{
    conc_pool_t *p = new_pool(4);
    int xs[1000];
    for (int i = 0; i < 1000; i++)
        xs[i] = i;
    size_t chunks[2] = {0, 100};
    for (int k = 0; k < 2; k++) {
        conc_pool_iter_t *it;
        cr_assert_eq(conc_pool_imap(p, sqr, xs, sizeof xs[0], 1000, chunks[k], &it), 0);
        for (int i = 0; i < 1000; i++) {
            const void *d;
            size_t idx;
            cr_assert_eq(conc_pool_iter_next(it, 10, &d, NULL, &idx), 0);
            cr_assert_eq(idx, (size_t)i);
            cr_assert_eq(as_int(d), i * i);
        }
        cr_assert_eq(conc_pool_iter_next(it, 10, NULL, NULL, NULL), CONC_EEOF);
        conc_pool_iter_free(it);
    }
    /* a failing item comes out in its place */
    conc_pool_iter_t *it;
    cr_assert_eq(conc_pool_imap(p, fail_on_5, xs, sizeof xs[0], 10, 1, &it), 0);
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(conc_pool_iter_next(it, 10, NULL, NULL, NULL), i == 5 ? CONC_EFAILED : 0);
        int code = 1;
        const char *msg = NULL;
        cr_assert_eq(conc_pool_iter_exception(it, &code, &msg), 0);
        cr_assert_eq(code, i == 5 ? CONC_EINVAL : 0);
        if (i == 5)
            cr_assert_str_eq(msg, "five");
    }
    cr_assert_eq(conc_pool_iter_exception(NULL, NULL, NULL), CONC_EINVAL);
    conc_pool_iter_free(it);
    conc_pool_free(p);
}

Test(mppool, imap_unordered)
{
    conc_pool_t *p = new_pool(4);
    int xs[1000];
    for (int i = 0; i < 1000; i++)
        xs[i] = i;
    size_t chunks[2] = {0, 53};
    for (int k = 0; k < 2; k++) {
        conc_pool_iter_t *it;
        cr_assert_eq(conc_pool_imap_unordered(p, sqr, xs, sizeof xs[0], 1000, chunks[k], &it), 0);
        static bool seen[1000];
        memset(seen, 0, sizeof seen);
        for (int i = 0; i < 1000; i++) {
            const void *d;
            size_t idx;
            cr_assert_eq(conc_pool_iter_next(it, 10, &d, NULL, &idx), 0);
            cr_assert(idx < 1000 && !seen[idx]);
            seen[idx] = true;
            cr_assert_eq(as_int(d), (int)(idx * idx));
        }
        cr_assert_eq(conc_pool_iter_next(it, 10, NULL, NULL, NULL), CONC_EEOF);
        conc_pool_iter_free(it);
    }
    /* a slow first item does not hold back the others */
    slow_t s[4] = {{1, 1.0}, {2, 0}, {3, 0}, {4, 0}};
    conc_pool_iter_t *it;
    cr_assert_eq(conc_pool_imap_unordered(p, slow_sqr, s, sizeof s[0], 4, 1, &it), 0);
    size_t idx;
    cr_assert_eq(conc_pool_iter_next(it, 5, NULL, NULL, &idx), 0);
    cr_assert_neq(idx, 0);
    conc_pool_iter_free(it); /* freed with work still running */
    conc_pool_free(p);
}

Test(mppool, imap_timeout)
{
    conc_pool_t *p = new_pool(2);
    slow_t s[3] = {{1, 0}, {2, 0.5}, {3, 0}};
    for (int unordered = 0; unordered < 2; unordered++) {
        conc_pool_iter_t *it;
        int rc = unordered ? conc_pool_imap_unordered(p, slow_sqr, s, sizeof s[0], 3, 1, &it)
                           : conc_pool_imap(p, slow_sqr, s, sizeof s[0], 3, 1, &it);
        cr_assert_eq(rc, 0);
        const void *d;
        cr_assert_eq(conc_pool_iter_next(it, 5, &d, NULL, NULL), 0);
        if (!unordered) {
            double t0 = tu_now();
            cr_assert_eq(conc_pool_iter_next(it, 0.1, &d, NULL, NULL), CONC_ETIMEDOUT);
            cr_assert(tu_now() - t0 >= 0.1 - TU_EPS);
        }
        cr_assert_eq(conc_pool_iter_next(it, 5, &d, NULL, NULL), 0);
        cr_assert_eq(conc_pool_iter_next(it, 5, &d, NULL, NULL), 0);
        cr_assert_eq(conc_pool_iter_next(it, 5, &d, NULL, NULL), CONC_EEOF);
        conc_pool_iter_free(it);
    }
    conc_pool_free(p);
}

static atomic_int cb_sum, cb_errs, cb_calls;
static char cb_msg[64];
static void on_ok(const void *d, size_t n, void *arg)
{
    if (n != sizeof(int)) /* runs in the result thread: record only */
        return;
    atomic_fetch_add(&cb_sum, as_int(d) + (int)(intptr_t)arg);
    atomic_fetch_add(&cb_calls, 1);
}
static void on_err(int code, const char *msg, void *arg)
{
    (void)arg;
    if (code == CONC_EINVAL)
        snprintf(cb_msg, sizeof cb_msg, "%s", msg);
    atomic_fetch_add(&cb_errs, 1);
    atomic_fetch_add(&cb_calls, 1);
}

Test(mppool, apply_async_callbacks)
{
    conc_pool_t *p = new_pool(2);
    atomic_store(&cb_sum, 0);
    atomic_store(&cb_errs, 0);
    atomic_store(&cb_calls, 0);
    conc_future_t *fs[10];
    for (int i = 0; i < 10; i++)
        cr_assert_eq(conc_pool_apply_async(p, fail_on_5, &i, sizeof i, on_ok, on_err, (void *)100, &fs[i]), 0);
    for (int i = 0; i < 10; i++) {
        const void *d;
        int rc = conc_future_bytes(fs[i], 10, &d, NULL);
        cr_assert_eq(rc, i == 5 ? CONC_EFAILED : 0); /* AsyncResult.get: the outcome rule */
        conc_future_free(fs[i]);
    }
    TU_WAIT_UNTIL(atomic_load(&cb_calls) == 10, 5);
    cr_assert_eq(atomic_load(&cb_errs), 1);
    cr_assert_eq(atomic_load(&cb_sum), 45 - 5 + 9 * 100);
    cr_assert_str_eq(cb_msg, "five");
    /* without a future handle */
    int x = 3;
    cr_assert_eq(conc_pool_apply_async(p, sqr, &x, sizeof x, on_ok, NULL, NULL, NULL), 0);
    TU_WAIT_UNTIL(atomic_load(&cb_calls) == 11, 5);
    cr_assert_eq(atomic_load(&cb_sum), 45 - 5 + 900 + 9);
    conc_pool_free(p);
}

Test(mppool, close_join)
{
    conc_pool_t *p = new_pool(2);
    cr_assert_eq(conc_pool_join(p, 1), CONC_EINVAL); /* still running */
    conc_future_t *fs[4];
    slow_t s = {3, 0.1};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(conc_pool_apply_async(p, slow_sqr, &s, sizeof s, NULL, NULL, NULL, &fs[i]), 0);
    int pids[2];
    cr_assert_eq(conc_pool_pids(p, pids, 2), 2);
    cr_assert_eq(conc_pool_close(p), 0);
    int x = 1;
    cr_assert_eq(conc_pool_apply_async(p, sqr, &x, sizeof x, NULL, NULL, NULL, NULL), CONC_EINVAL);
    conc_results_t *r;
    cr_assert_eq(conc_pool_map(p, sqr, &x, sizeof x, 1, 0, &r), CONC_EINVAL);
    cr_assert_eq(conc_pool_join(p, 10), 0);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(conc_future_bytes(fs[i], 0, NULL, NULL), 0);
        conc_future_free(fs[i]);
    }
    for (int i = 0; i < 2; i++)
        cr_assert(kill(pids[i], 0) < 0 && errno == ESRCH);
    conc_pool_free(p);
}

Test(mppool, terminate)
{
    conc_pool_t *p = new_pool(2);
    conc_future_t *fs[6];
    slow_t s = {3, 10.0};
    for (int i = 0; i < 6; i++)
        cr_assert_eq(conc_pool_apply_async(p, slow_sqr, &s, sizeof s, NULL, NULL, NULL, &fs[i]), 0);
    tu_sleep(0.1);
    double t0 = tu_now();
    cr_assert_eq(conc_pool_terminate(p), 0);
    cr_assert_eq(conc_pool_join(p, 10), 0);
    cr_assert(tu_now() - t0 < 5.0);
    for (int i = 0; i < 6; i++) {
        int rc = conc_future_bytes(fs[i], 1, NULL, NULL);
        cr_assert(rc == CONC_EFAILED || rc == CONC_ECANCELLED, "rc=%d", rc);
        if (rc == CONC_EFAILED) { /* running ones fail with ShutDown ("pool terminated") */
            int code = 0;
            cr_assert_eq(conc_future_exception(fs[i], 0, &code, NULL), 0);
            cr_assert_eq(code, CONC_ESHUTDOWN);
        }
        conc_future_free(fs[i]);
    }
    conc_pool_free(p);
}

Test(mppool, initializer)
{
    int v = 77;
    conc_pool_opts_t o = {.processes = 2, .initializer = init_set, .initarg = &v, .initarg_len = sizeof v};
    conc_pool_t *p;
    cr_assert_eq(conc_pool_new(&p, &o), 0);
    void *d;
    size_t n;
    cr_assert_eq(conc_pool_apply(p, read_global, NULL, 0, &d, &n), 0);
    cr_assert_eq(as_int(d), 77);
    free(d);
    conc_pool_free(p);
    o.initializer = init_bad;
    cr_assert_eq(conc_pool_new(&p, &o), 0);
    /* refused at submit once broken (CONC_EBROKEN), or accepted first and
     * then failed by the breakage (CONC_EFAILED, exception CONC_EBROKEN) */
    int rc = conc_pool_apply(p, read_global, NULL, 0, &d, &n);
    cr_assert(rc == CONC_EBROKEN || rc == CONC_EFAILED, "rc=%d", rc);
    conc_pool_free(p);
}

Test(mppool, maxtasksperchild)
{
    conc_pool_opts_t o = {.processes = 2, .maxtasksperchild = 10};
    conc_pool_t *p;
    cr_assert_eq(conc_pool_new(&p, &o), 0);
    char dummy[100] = {0};
    conc_results_t *r;
    cr_assert_eq(conc_pool_map(p, pid_task, dummy, 1, 100, 1, &r), 0);
    int pids[100], distinct = 0;
    cr_assert_eq(conc_results_copy(r, pids, sizeof pids[0]), 0);
    for (int i = 0; i < 100; i++) {
        int k = 0;
        while (k < i && pids[k] != pids[i])
            k++;
        distinct += k == i;
    }
    cr_assert(distinct >= 10, "distinct=%d", distinct);
    conc_results_free(r);
    conc_pool_close(p);
    cr_assert_eq(conc_pool_join(p, 10), 0);
    conc_pool_free(p);
}

Test(mppool, dead_worker_is_replaced)
{
    conc_pool_t *p = new_pool(2);
    int before[2];
    cr_assert_eq(conc_pool_pids(p, before, 2), 2);
    void *d;
    size_t n;
    cr_assert_eq(conc_pool_apply(p, die_task, NULL, 0, &d, &n), CONC_EFAILED);
    conc_future_t *f;
    cr_assert_eq(conc_pool_apply_async(p, die_task, NULL, 0, NULL, NULL, NULL, &f), 0);
    int code;
    const char *msg;
    cr_assert_eq(conc_future_exception(f, 10, &code, &msg), 0);
    cr_assert_eq(code, CONC_EBROKEN);
    cr_assert(strstr(msg, "signal 9"), "msg: %s", msg);
    conc_future_free(f);
    /* the pool goes on with new workers */
    int xs[50], ys[50];
    for (int i = 0; i < 50; i++)
        xs[i] = i;
    conc_results_t *r;
    cr_assert_eq(conc_pool_map(p, sqr, xs, sizeof xs[0], 50, 0, &r), 0);
    cr_assert_eq(conc_results_copy(r, ys, sizeof ys[0]), 0);
    cr_assert_eq(ys[49], 49 * 49);
    conc_results_free(r);
    int after[2];
    TU_WAIT_UNTIL(conc_pool_pids(p, after, 2) == 2, 5);
    cr_assert_eq(conc_pool_pids(p, after, 2), 2);
    conc_pool_free(p);
}

/* x -> 3x as 8 bytes, except: 4 bytes at x == 4500, a failure at 12345. */
static int mixed(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)len;
    int x;
    memcpy(&x, arg, sizeof x);
    if (x == 12345) {
        conc_fail(CONC_EINVAL, "bad %d", x);
        return 0;
    }
    long y = 3L * x;
    if (x == 4500) {
        int z = x;
        return conc_pool_return(out, &z, sizeof z);
    }
    /* in two calls: the pieces are appended */
    int rc = conc_pool_return(out, &y, 4);
    return rc ? rc : conc_pool_return(out, (char *)&y + 4, 4);
}
CONC_POOL_REGISTER(mixed);

/* Results of fixed size travel without a per-item table; a chunk whose
 * results change size or fail part-way, or whose results need several
 * messages (a small result queue), still comes back item for item. */
Test(mppool, map_result_layouts)
{
    conc_pool_t *p = NULL;
    conc_pool_opts_t o = {.processes = 2, .queue_capacity = 1 << 16};
    cr_assert_eq(conc_pool_new(&p, &o), 0);
    enum { N = 20000 };
    int *xs = malloc(N * sizeof *xs);
    long *ys = malloc(N * sizeof *ys);
    for (int i = 0; i < N; i++)
        xs[i] = i;
    conc_results_t *r;
    cr_assert_eq(conc_pool_map(p, mixed, xs, sizeof *xs, N, 5000, &r), CONC_EFAILED);
    for (int i = 0; i < N; i++) {
        const void *d;
        size_t n;
        int rc = conc_results_item(r, (size_t)i, &d, &n);
        if (i == 12345) {
            cr_assert_eq(rc, CONC_EFAILED);
            cr_assert_str_eq(d, "bad 12345");
        } else if (i == 4500) {
            cr_assert_eq(rc, 0);
            cr_assert_eq(n, 4);
            cr_assert_eq(as_int(d), 4500);
        } else {
            cr_assert_eq(rc, 0, "item %d: %d", i, rc);
            cr_assert_eq(n, 8, "item %d: %zu bytes", i, n);
            long v;
            memcpy(&v, d, sizeof v);
            cr_assert_eq(v, 3L * i, "item %d: %ld", i, v);
        }
    }
    cr_assert_eq(conc_results_copy(r, ys, sizeof *ys), CONC_ERANGE); /* item 4500 */
    conc_results_free(r);
    /* all of one size: copied out whole */
    cr_assert_eq(conc_pool_map(p, mixed, xs + 5000, sizeof *xs, 5000, 0, &r), 0);
    memset(ys, 0, N * sizeof *ys);
    cr_assert_eq(conc_results_copy(r, ys, sizeof *ys), 0);
    for (int i = 0; i < 5000; i++)
        cr_assert_eq(ys[i], 3L * (i + 5000));
    conc_results_free(r);
    free(xs);
    free(ys);
    conc_pool_free(p);
}

/* Issue 12 section 4: AsyncResult.get and imap say CONC_EFAILED for a task
 * that failed with CONC_ETIMEDOUT; CONC_ETIMEDOUT stays the wait's own. */
static int fails_timed_out(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg;
    (void)len;
    (void)out;
    conc_fail(CONC_ETIMEDOUT, "the task's own timeout");
    return 0;
}
CONC_POOL_REGISTER(fails_timed_out);

Test(mppool, task_timeout_is_not_wait_timeout)
{
    conc_pool_t *p = new_pool(2);
    conc_future_t *f;
    cr_assert_eq(conc_pool_apply_async(p, fails_timed_out, NULL, 0, NULL, NULL, NULL, &f), 0);
    cr_assert_eq(conc_future_bytes(f, 10, NULL, NULL), CONC_EFAILED);
    int code = 0;
    cr_assert_eq(conc_future_exception(f, 0, &code, NULL), 0);
    cr_assert_eq(code, CONC_ETIMEDOUT);
    conc_future_free(f);
    void *d = NULL;
    size_t n = 0;
    cr_assert_eq(conc_pool_apply(p, fails_timed_out, NULL, 0, &d, &n), CONC_EFAILED);
    char items[3] = {0};
    conc_pool_iter_t *it;
    cr_assert_eq(conc_pool_imap(p, fails_timed_out, items, 1, 3, 1, &it), 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(conc_pool_iter_next(it, 10, NULL, NULL, NULL), CONC_EFAILED);
        cr_assert_eq(conc_pool_iter_exception(it, &code, NULL), 0);
        cr_assert_eq(code, CONC_ETIMEDOUT);
    }
    cr_assert_eq(conc_pool_iter_next(it, 10, NULL, NULL, NULL), CONC_EEOF);
    conc_pool_iter_free(it);
    conc_pool_free(p);
}

TU_MAIN_WITH_PROCESS_GUARD()
