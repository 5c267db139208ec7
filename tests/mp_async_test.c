/*
 * multiprocessing.Pool's asynchronous calls and multiprocessing.pool.
 * ThreadPool (conc/pool.h), ported from CPython's
 * _test_multiprocessing.py _TestPool: test_starmap, test_starmap_async,
 * test_map_async, test_map_async_callbacks, test_async,
 * test_async_timeout, test_successful (successful() before ready is a
 * ValueError: CONC_EINVAL), test_async_error_callback, test_empty_iterable
 * — each run on a process Pool and on a ThreadPool (the same calls) — and
 * the waits are colorless (a green thread parks alone; kill and a Timeout
 * scope cut them).
 */
#include "test_util.h"

#include <conc/pool.h>

static void setup(void) { unsetenv("BXFI_MAP"); }
TestSuite(mp_async, .init = setup, .timeout = TU_TIMEOUT);

static int mul(const void *arg, size_t len, conc_pool_out_t *out)
{
    conc_buf_t a[2];
    size_t n;
    int rc = conc_pool_args(arg, len, a, 2, &n);
    if (rc)
        return rc;
    if (n != 2 || a[0].len != sizeof(int) || a[1].len != sizeof(int))
        return CONC_EINVAL;
    int x, y;
    memcpy(&x, a[0].data, sizeof x);
    memcpy(&y, a[1].data, sizeof y);
    int z = x * y;
    return conc_pool_return(out, &z, sizeof z);
}
CONC_POOL_REGISTER(mul);

static int sqr(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)len;
    int x;
    memcpy(&x, arg, sizeof x);
    if (x < 0) /* a negative item sleeps -x ms first */
        tu_sleep(-x / 1000.0), x = -x;
    int y = x * x;
    return conc_pool_return(out, &y, sizeof y);
}
CONC_POOL_REGISTER(sqr);

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

static conc_pool_t *mk(bool threads, size_t n)
{
    conc_pool_t *p = NULL;
    conc_pool_opts_t o = {.processes = n};
    cr_assert_eq(threads ? conc_threadpool_new(&p, &o) : conc_pool_new(&p, &o), 0);
    return p;
}

static int as_int(const void *d)
{
    int v;
    memcpy(&v, d, sizeof v);
    return v;
}

/* ------------------------------------------------------------ starmap */

static void starmap_case(bool threads)
{
    conc_pool_t *p = mk(threads, 2);
    enum { N = 10 };
    int xs[N], ys[N];
    conc_buf_t args[N * 2];
    for (int i = 0; i < N; i++) {
        xs[i] = i;
        ys[i] = i + 1;
        args[2 * i] = (conc_buf_t){&xs[i], sizeof(int)};
        args[2 * i + 1] = (conc_buf_t){&ys[i], sizeof(int)};
    }
    conc_results_t *r;
    cr_assert_eq(conc_pool_starmap(p, mul, args, 2, N, 0, &r), 0);
    int got[N];
    cr_assert_eq(conc_results_copy(r, got, sizeof(int)), 0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(got[i], i * (i + 1));
    conc_results_free(r);
    /* starmap_async, chunksize 3 */
    conc_map_result_t *m;
    cr_assert_eq(conc_pool_starmap_async(p, mul, args, 2, N, 3, NULL, NULL, NULL, &m), 0);
    const conc_results_t *cr;
    cr_assert_eq(conc_map_result_get(m, 10, &cr), 0);
    cr_assert_eq(conc_results_copy(cr, got, sizeof(int)), 0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(got[i], i * (i + 1));
    conc_map_result_free(m);
    /* wrong arity: the task sees one argument and fails */
    cr_assert_eq(conc_pool_starmap(p, mul, args, 1, 2, 0, &r), CONC_EFAILED);
    conc_results_free(r);
    cr_assert_eq(conc_pool_starmap(p, mul, NULL, 2, 1, 0, &r), CONC_EINVAL);
    conc_pool_free(p);
}
Test(mp_async, starmap_process) { starmap_case(false); }
Test(mp_async, starmap_thread) { starmap_case(true); }

Test(mp_async, args_unpack_checks_bytes)
{
    conc_buf_t a[4];
    size_t n = 99;
    unsigned char b[32] = {0};
    cr_assert_eq(conc_pool_args(b, 3, a, 4, &n), CONC_EINVAL); /* too short */
    uint32_t h[3] = {2, 1, 1};
    memcpy(b, h, sizeof h);
    b[12] = 'x', b[13] = 'y';
    cr_assert_eq(conc_pool_args(b, 14, a, 4, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert_eq(*(const char *)a[1].data, 'y');
    cr_assert_eq(conc_pool_args(b, 13, a, 4, &n), CONC_EINVAL); /* truncated */
    cr_assert_eq(conc_pool_args(b, 15, a, 4, &n), CONC_EINVAL); /* trailing */
    cr_assert_eq(conc_pool_args(b, 14, a, 1, &n), CONC_ERANGE);
    cr_assert_eq(n, 2);
    h[0] = 0x40000000u; /* a huge count */
    memcpy(b, h, 4);
    cr_assert_eq(conc_pool_args(b, 14, a, 4, &n), CONC_EINVAL);
    h[0] = 2, h[1] = 0xffffffffu; /* lengths that overflow */
    memcpy(b, h, sizeof h);
    cr_assert_eq(conc_pool_args(b, 14, a, 4, &n), CONC_EINVAL);
}

/* ------------------------------------------------------------ map_async */

typedef struct {
    _Atomic int called, ecalled;
    int sum, code;
    char msg[64];
    pthread_t thread;
} cbrec_t;

static void map_cb(const conc_results_t *r, void *arg)
{
    cbrec_t *c = arg;
    c->thread = pthread_self();
    for (size_t i = 0; i < conc_results_len(r); i++) {
        const void *d;
        if (conc_results_item(r, i, &d, NULL) == 0)
            c->sum += as_int(d);
    }
    atomic_fetch_add(&c->called, 1);
}

static void err_cb(int code, const char *msg, void *arg)
{
    cbrec_t *c = arg;
    c->thread = pthread_self();
    c->code = code;
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    atomic_fetch_add(&c->ecalled, 1);
}

static void map_async_case(bool threads)
{
    conc_pool_t *p = mk(threads, 2);
    enum { N = 20 };
    int xs[N], want = 0;
    for (int i = 0; i < N; i++)
        xs[i] = i, want += i * i;
    cbrec_t c = {0};
    conc_map_result_t *m;
    cr_assert_eq(conc_pool_map_async(p, sqr, xs, sizeof(int), N, 0, map_cb, err_cb, &c, &m), 0);
    cr_assert_eq(conc_map_result_wait(m, 10), 0);
    cr_assert(conc_map_result_ready(m));
    /* ready() implies the callback ran (CPython: callback before the event) */
    cr_assert_eq(atomic_load(&c.called), 1);
    cr_assert_eq(atomic_load(&c.ecalled), 0);
    cr_assert_eq(c.sum, want);
    bool ok = false;
    cr_assert_eq(conc_map_result_successful(m, &ok), 0);
    cr_assert(ok);
    const conc_results_t *r;
    cr_assert_eq(conc_map_result_get(m, 0, &r), 0);
    cr_assert_eq(conc_results_len(r), N);
    conc_map_result_free(m);

    /* a failing item: error_callback with the first exception, get fails */
    cbrec_t e = {0};
    cr_assert_eq(conc_pool_map_async(p, fail_on_5, xs, sizeof(int), N, 2, map_cb, err_cb, &e, &m), 0);
    cr_assert_eq(conc_map_result_get(m, 10, &r), CONC_EFAILED);
    cr_assert_eq(atomic_load(&e.called), 0);
    cr_assert_eq(atomic_load(&e.ecalled), 1);
    cr_assert_eq(e.code, CONC_EINVAL);
    cr_assert_str_eq(e.msg, "five");
    cr_assert_eq(conc_map_result_successful(m, &ok), 0);
    cr_assert_not(ok);
    int code = 0;
    const char *msg = NULL;
    cr_assert_eq(conc_map_result_exception(m, &code, &msg), 0);
    cr_assert_eq(code, CONC_EINVAL);
    cr_assert_str_eq(msg, "five");
    const void *d;
    cr_assert_eq(conc_results_item(r, 4, &d, NULL), 0);
    cr_assert_eq(as_int(d), 4);
    cr_assert_eq(conc_results_item(r, 5, NULL, NULL), CONC_EFAILED);
    conc_map_result_free(m);

    /* test_empty_iterable: an empty map is ready at once, callback with [] */
    cbrec_t z = {0};
    cr_assert_eq(conc_pool_map_async(p, sqr, NULL, sizeof(int), 0, 0, map_cb, err_cb, &z, &m), 0);
    cr_assert_eq(conc_map_result_get(m, 5, &r), 0);
    cr_assert_eq(conc_results_len(r), 0);
    cr_assert_eq(atomic_load(&z.called), 1);
    conc_map_result_free(m);

    /* not ready: successful / exception are ValueError; get times out */
    int slow[2] = {-400, -400};
    cr_assert_eq(conc_pool_map_async(p, sqr, slow, sizeof(int), 2, 1, NULL, NULL, NULL, &m), 0);
    cr_assert_not(conc_map_result_ready(m));
    cr_assert_eq(conc_map_result_successful(m, &ok), CONC_EINVAL);
    cr_assert_eq(conc_map_result_exception(m, &code, NULL), CONC_EINVAL);
    double t0 = tu_now();
    cr_assert_eq(conc_map_result_get(m, 0.05, &r), CONC_ETIMEDOUT);
    cr_assert_lt(tu_now() - t0, 0.3);
    cr_assert_eq(conc_map_result_wait(m, NAN), CONC_EINVAL);
    cr_assert_eq(conc_map_result_get(m, 10, &r), 0);
    conc_map_result_free(m);
    /* map_async without a handle; a closed pool refuses (ValueError) */
    cr_assert_eq(conc_pool_map_async(p, sqr, xs, sizeof(int), N, 0, NULL, NULL, NULL, NULL), 0);
    conc_pool_close(p);
    cr_assert_eq(conc_pool_map_async(p, sqr, xs, sizeof(int), N, 0, NULL, NULL, NULL, &m), CONC_EINVAL);
    cr_assert_eq(conc_pool_join(p, 10), 0);
    conc_pool_free(p);
}
Test(mp_async, map_async_process) { map_async_case(false); }
Test(mp_async, map_async_thread) { map_async_case(true); }

/* ---------------------------------------------------------- AsyncResult */

typedef struct {
    _Atomic int n;
    int value, code;
    pthread_t thread;
} acb_t;

static void a_cb(const void *d, size_t len, void *arg)
{
    acb_t *a = arg;
    a->thread = pthread_self();
    a->value = len == sizeof(int) ? as_int(d) : -1;
    atomic_fetch_add(&a->n, 1);
}

static void a_ecb(int code, const char *msg, void *arg)
{
    (void)msg;
    acb_t *a = arg;
    a->thread = pthread_self();
    a->code = code;
    atomic_fetch_add(&a->n, 1);
}

static void async_case(bool threads)
{
    conc_pool_t *p = mk(threads, 2);
    /* test_async / test_async_timeout */
    int x = -300;
    conc_future_t *f;
    acb_t a = {0};
    cr_assert_eq(conc_pool_apply_async(p, sqr, &x, sizeof x, a_cb, a_ecb, &a, &f), 0);
    bool ok;
    cr_assert_eq(conc_async_successful(f, &ok), CONC_EINVAL); /* not ready */
    cr_assert_not(conc_future_done(f));
    cr_assert_eq(conc_async_wait(f, 0.02), CONC_ETIMEDOUT);
    cr_assert_eq(conc_future_bytes(f, 0.02, NULL, NULL), CONC_ETIMEDOUT);
    cr_assert_eq(conc_async_wait(f, 10), 0);
    cr_assert(conc_future_done(f));
    cr_assert_eq(conc_async_successful(f, &ok), 0);
    cr_assert(ok);
    const void *d;
    cr_assert_eq(conc_future_bytes(f, 0, &d, NULL), 0);
    cr_assert_eq(as_int(d), 90000);
    TU_WAIT_UNTIL(atomic_load(&a.n) == 1, 5);
    cr_assert_eq(a.value, 90000);
    /* the callback ran in the pool's result-handling thread, not here */
    cr_assert_not(pthread_equal(a.thread, pthread_self()));
    conc_future_free(f);
    /* test_async_error_callback / test_successful */
    x = 5;
    acb_t e = {0};
    cr_assert_eq(conc_pool_apply_async(p, fail_on_5, &x, sizeof x, a_cb, a_ecb, &e, &f), 0);
    cr_assert_eq(conc_async_wait(f, 10), 0); /* a failed task is ready too */
    cr_assert_eq(conc_async_successful(f, &ok), 0);
    cr_assert_not(ok);
    cr_assert_eq(conc_future_bytes(f, 0, NULL, NULL), CONC_EFAILED);
    TU_WAIT_UNTIL(atomic_load(&e.n) == 1, 5);
    cr_assert_eq(e.code, CONC_EINVAL);
    conc_future_free(f);
    cr_assert_eq(conc_async_wait(NULL, 1), CONC_EINVAL);
    cr_assert_eq(conc_async_successful(NULL, &ok), CONC_EINVAL);
    conc_pool_free(p);
}
Test(mp_async, async_process) { async_case(false); }
Test(mp_async, async_thread) { async_case(true); }

/* ------------------------------------------------------------ ThreadPool */

static int unregistered_double(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)len;
    int y = 2 * as_int(arg);
    return conc_pool_return(out, &y, sizeof y);
}

Test(mp_async, threadpool_runs_here)
{
    conc_pool_t *p = mk(true, 3);
    void *d;
    size_t n;
    cr_assert_eq(conc_pool_apply(p, pid_task, NULL, 0, &d, &n), 0);
    cr_assert_eq(as_int(d), getpid());
    free(d);
    /* any function: no registry needed for threads */
    int x = 21;
    cr_assert_eq(conc_pool_apply(p, unregistered_double, &x, sizeof x, &d, &n), 0);
    cr_assert_eq(as_int(d), 42);
    free(d);
    cr_assert_eq(conc_pool_pids(p, NULL, 0), 0);
    /* map with Python's default chunking, imap, imap_unordered */
    enum { N = 50 };
    int xs[N], got[N];
    for (int i = 0; i < N; i++)
        xs[i] = i;
    conc_results_t *r;
    cr_assert_eq(conc_pool_map(p, sqr, xs, sizeof(int), N, 0, &r), 0);
    cr_assert_eq(conc_results_copy(r, got, sizeof(int)), 0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(got[i], i * i);
    conc_results_free(r);
    conc_pool_iter_t *it;
    cr_assert_eq(conc_pool_imap_unordered(p, sqr, xs, sizeof(int), N, 4, &it), 0);
    long sum = 0;
    const void *dd;
    int k = 0;
    while (conc_pool_iter_next(it, 10, &dd, NULL, NULL) == 0)
        sum += as_int(dd), k++;
    cr_assert_eq(k, N);
    cr_assert_eq(sum, 40425);
    conc_pool_iter_free(it);
    cr_assert_eq(conc_pool_join(p, 1), CONC_EINVAL); /* still running */
    cr_assert_eq(conc_pool_close(p), 0);
    cr_assert_eq(conc_pool_join(p, 10), 0);
    cr_assert_eq(conc_pool_free(p), 0);
}

/* CPython's ThreadPool runs callback / error_callback on its result-handler
 * thread: a slow callback holds up no worker. One worker: while the first
 * task's callback sleeps, a second task still runs and finishes; the
 * callback runs on neither the worker nor the caller; join waits for it. */
static int tid_task(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len;
    pthread_t me = pthread_self();
    return conc_pool_return(out, &me, sizeof me);
}

typedef struct {
    _Atomic int started, finished;
    pthread_t thread, worker;
} slowcb_t;

static void slow_cb(const void *d, size_t len, void *arg)
{
    slowcb_t *s = arg;
    s->thread = pthread_self();
    if (len == sizeof(pthread_t))
        memcpy(&s->worker, d, sizeof s->worker);
    atomic_store(&s->started, 1);
    tu_sleep(0.5);
    atomic_store(&s->finished, 1);
}

static void slow_ecb(int code, const char *msg, void *arg)
{
    (void)code, (void)msg;
    slow_cb(NULL, 0, arg);
}

Test(mp_async, threadpool_slow_callback_holds_no_worker)
{
    conc_pool_t *p = mk(true, 1);
    slowcb_t s = {0};
    cr_assert_eq(conc_pool_apply_async(p, tid_task, NULL, 0, slow_cb, NULL, &s, NULL), 0);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&s.started), 5));
    double t0 = tu_now();
    void *d;
    size_t n;
    cr_assert_eq(conc_pool_apply(p, tid_task, NULL, 0, &d, &n), 0); /* the one worker is free */
    cr_assert_lt(tu_now() - t0, 0.4);
    cr_assert_not(atomic_load(&s.finished), "the second task waited for the callback");
    pthread_t worker;
    memcpy(&worker, d, sizeof worker);
    free(d);
    cr_assert(pthread_equal(worker, s.worker));
    cr_assert_not(pthread_equal(s.thread, worker), "the callback ran on the worker");
    cr_assert_not(pthread_equal(s.thread, pthread_self()));
    /* map_async's callback and an error_callback: the same thread */
    slowcb_t m = {0};
    int xs[3] = {1, 2, 3};
    conc_map_result_t *mr;
    cr_assert_eq(conc_pool_map_async(p, sqr, xs, sizeof(int), 3, 1, NULL, slow_ecb, &m, &mr), 0);
    conc_map_result_free(mr);
    slowcb_t e = {0};
    int five = 5;
    cr_assert_eq(conc_pool_apply_async(p, fail_on_5, &five, sizeof five, NULL, slow_ecb, &e, NULL), 0);
    cr_assert_eq(conc_pool_close(p), 0);
    cr_assert_eq(conc_pool_join(p, 10), 0); /* waits for the callbacks too */
    cr_assert(atomic_load(&s.finished));
    cr_assert(atomic_load(&e.finished));
    cr_assert_not(atomic_load(&m.started)); /* no failure: no error_callback */
    cr_assert(pthread_equal(e.thread, s.thread));
    conc_pool_free(p);
}

static int tl_init_value;
static __thread int tl_value;
static int tinit(const void *arg, size_t len)
{
    if (len != sizeof(int))
        return CONC_EINVAL;
    memcpy(&tl_value, arg, sizeof(int));
    return 0;
}
CONC_REGISTER(tinit);

static int read_tl(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len;
    return conc_pool_return(out, &tl_value, sizeof tl_value);
}

static int tinit_bad(const void *arg, size_t len)
{
    (void)arg, (void)len;
    return 7;
}
CONC_REGISTER(tinit_bad);

Test(mp_async, threadpool_initializer)
{
    tl_init_value = 77;
    conc_pool_opts_t o = {.processes = 2, .initializer = tinit, .initarg = &tl_init_value,
                          .initarg_len = sizeof tl_init_value};
    conc_pool_t *p;
    cr_assert_eq(conc_threadpool_new(&p, &o), 0);
    void *d;
    size_t n;
    cr_assert_eq(conc_pool_apply(p, read_tl, NULL, 0, &d, &n), 0);
    cr_assert_eq(as_int(d), 77); /* ran in the pool thread first */
    free(d);
    conc_pool_free(p);
    /* a failing initializer breaks the pool: tasks fail with CONC_EBROKEN */
    o.initializer = tinit_bad;
    cr_assert_eq(conc_threadpool_new(&p, &o), 0);
    conc_future_t *f;
    cr_assert_eq(conc_pool_apply_async(p, read_tl, NULL, 0, NULL, NULL, NULL, &f), 0);
    cr_assert_eq(conc_future_bytes(f, 10, NULL, NULL), CONC_EFAILED);
    int code = 0;
    conc_future_exception(f, 0, &code, NULL);
    cr_assert_eq(code, CONC_EBROKEN);
    conc_future_free(f);
    conc_pool_free(p);
    cr_assert_eq(conc_threadpool_new(NULL, NULL), CONC_EINVAL);
}

Test(mp_async, threadpool_terminate_cancels_queued)
{
    conc_pool_t *p = mk(true, 1);
    int slow = -300, x = 3;
    conc_future_t *a, *b;
    cr_assert_eq(conc_pool_apply_async(p, sqr, &slow, sizeof slow, NULL, NULL, NULL, &a), 0);
    TU_WAIT_UNTIL(conc_future_running(a), 5);
    cr_assert_eq(conc_pool_apply_async(p, sqr, &x, sizeof x, NULL, NULL, NULL, &b), 0);
    cr_assert_eq(conc_pool_terminate(p), 0);
    cr_assert_eq(conc_future_bytes(b, 5, NULL, NULL), CONC_ECANCELLED);
    cr_assert_eq(conc_pool_join(p, 10), 0);
    /* the running one could not be stopped: it finished */
    cr_assert_eq(conc_future_bytes(a, 5, NULL, NULL), 0);
    cr_assert_eq(conc_pool_apply_async(p, sqr, &x, sizeof x, NULL, NULL, NULL, &b), CONC_EINVAL);
    conc_future_free(a);
    conc_future_free(b);
    conc_pool_free(p);
}

/* ------------------------------------------------------------ colorless */

typedef struct {
    conc_map_result_t *m;
    conc_future_t *f;
    double scope;
    int rc, fired;
} gw_t;

static void *wait_map(void *arg)
{
    gw_t *w = arg;
    if (w->scope > 0)
        conc_timeout_begin(w->scope);
    w->rc = w->m ? conc_map_result_wait(w->m, CONC_FOREVER) : conc_async_wait(w->f, CONC_FOREVER);
    if (w->scope > 0)
        w->fired = conc_timeout_end();
    return NULL;
}

typedef struct {
    _Atomic int stop;
    int ticks;
} ticker_t;

static void *tick(void *arg)
{
    ticker_t *t = arg;
    while (!atomic_load(&t->stop)) {
        conc_sleep(0.002);
        t->ticks++;
    }
    return NULL;
}

static void colorless_case(bool threads, bool use_future)
{
    conc_pool_t *p = mk(threads, 1);
    int slow = -500;
    gw_t w = {0};
    if (use_future)
        cr_assert_eq(conc_pool_apply_async(p, sqr, &slow, sizeof slow, NULL, NULL, NULL, &w.f), 0);
    else
        cr_assert_eq(conc_pool_map_async(p, sqr, &slow, sizeof slow, 1, 1, NULL, NULL, NULL, &w.m), 0);
    /* (a) parks only itself: the ticker on the same hub runs */
    ticker_t tk = {0};
    conc_green_t *gt, *gw;
    cr_assert_eq(conc_go(&gt, tick, &tk), 0);
    cr_assert_eq(conc_go(&gw, wait_map, &w), 0);
    cr_assert_eq(conc_green_join(gw, 10), 0);
    atomic_store(&tk.stop, 1);
    cr_assert_eq(conc_green_join(gt, 5), 0);
    cr_assert_eq(w.rc, 0);
    cr_assert_geq(tk.ticks, 20, "ticker stopped: %d ticks", tk.ticks);
    conc_green_free(gt);
    conc_green_free(gw);
    if (use_future)
        conc_future_free(w.f);
    else
        conc_map_result_free(w.m);
    /* (b) kill cuts it */
    gw_t k = {0};
    if (use_future)
        cr_assert_eq(conc_pool_apply_async(p, sqr, &slow, sizeof slow, NULL, NULL, NULL, &k.f), 0);
    else
        cr_assert_eq(conc_pool_map_async(p, sqr, &slow, sizeof slow, 1, 1, NULL, NULL, NULL, &k.m), 0);
    cr_assert_eq(conc_go(&gw, wait_map, &k), 0);
    conc_sleep(0.05);
    double t0 = tu_now();
    cr_assert_eq(conc_green_kill(gw, true, 5), 0);
    cr_assert_lt(tu_now() - t0, TU_SANITIZED ? 2.0 : 0.3);
    cr_assert_eq(k.rc, CONC_EKILLED, "%s", conc_strerror(k.rc));
    conc_green_free(gw);
    /* (c) a Timeout scope cuts it, on a green thread and on this thread */
    gw_t s = k;
    s.scope = 0.05;
    cr_assert_eq(conc_go(&gw, wait_map, &s), 0);
    cr_assert_eq(conc_green_join(gw, 5), 0);
    cr_assert_eq(s.rc, CONC_ETIMEDOUT);
    cr_assert_eq(s.fired, 1);
    conc_green_free(gw);
    gw_t o = k;
    o.scope = 0.05;
    wait_map(&o);
    cr_assert_eq(o.rc, CONC_ETIMEDOUT);
    cr_assert_eq(o.fired, 1);
    /* and the result still arrives */
    o.scope = 0;
    wait_map(&o);
    cr_assert_eq(o.rc, 0);
    if (use_future)
        conc_future_free(k.f);
    else
        conc_map_result_free(k.m);
    conc_pool_free(p);
}
Test(mp_async, colorless_map_result_process) { colorless_case(false, false); }
Test(mp_async, colorless_async_result_thread) { colorless_case(true, true); }
Test(mp_async, colorless_map_result_thread) { colorless_case(true, false); }

TU_MAIN_WITH_PROCESS_GUARD()
