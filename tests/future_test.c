/* conc_future_t: the behaviours of CPython's test_concurrent_futures
 * test_future.py (states, cancel, result/exception with timeouts, done
 * callbacks, set_result / set_exception / set_running_or_notify_cancel and
 * InvalidStateError), plus what conc adds: then(), reference counting
 * (freeing a future before its task ran), and the failure hook for
 * callbacks that call conc_fail. Executors, wait and as_completed have their
 * own files. */
#include "test_util.h"

#define P(x) ((void *)(uintptr_t)(x))
#define U(p) ((uintptr_t)(p))

static conc_future_t *newf(void)
{
    conc_future_t *f = NULL;
    int rc = conc_future_new(&f);
    cr_assert_eq(rc, 0, "conc_future_new = %d", rc);
    cr_assert_not_null(f);
    return f;
}

static void freef(conc_future_t *f)
{
    int rc = conc_future_free(f);
    cr_assert_eq(rc, 0, "conc_future_free = %d", rc);
}

static conc_executor_t *mkpool(size_t max_workers)
{
    conc_thread_pool_opts_t o = {0};
    o.max_workers = max_workers;
    conc_executor_t *ex = NULL;
    int rc = conc_thread_pool_new(&ex, &o);
    cr_assert_eq(rc, 0, "conc_thread_pool_new = %d", rc);
    cr_assert_not_null(ex);
    return ex;
}

static void freepool(conc_executor_t *ex)
{
    int rc = conc_executor_free(ex);
    cr_assert_eq(rc, 0, "conc_executor_free = %d", rc);
}

/* A gate tasks poll (never forever: a broken test must not hang). */
static atomic_int gate;
static void gate_wait(void)
{
    double dl = tu_now() + 20;
    while (!atomic_load(&gate) && tu_now() < dl)
        tu_sleep(0.001);
}
static void *gate_task(void *arg)
{
    gate_wait();
    return arg;
}

/* ------------------------------------------------------------ bad input */

static void *ident_fn(void *r, void *a)
{
    (void)a;
    return r;
}

static void nop_cb(conc_future_t *f, void *a)
{
    (void)f;
    (void)a;
}

Test(future, null_arguments, .timeout = TU_TIMEOUT)
{
    conc_future_t *f = newf(), *g = NULL;
    void *r;
    int code;
    const char *msg;
    cr_assert_eq(conc_future_new(NULL), CONC_EINVAL);
    cr_assert_eq(conc_future_free(NULL), CONC_EINVAL);
    cr_assert_null(conc_future_ref(NULL));
    cr_assert_eq(conc_future_result(NULL, 0, &r), CONC_EINVAL);
    cr_assert_eq(conc_future_exception(NULL, 0, &code, &msg), CONC_EINVAL);
    cr_assert_not(conc_future_cancel(NULL));
    cr_assert_not(conc_future_cancelled(NULL));
    cr_assert_not(conc_future_running(NULL));
    cr_assert_not(conc_future_done(NULL));
    cr_assert_eq(conc_future_add_done_callback(NULL, nop_cb, NULL), CONC_EINVAL);
    cr_assert_eq(conc_future_add_done_callback(f, NULL, NULL), CONC_EINVAL);
    cr_assert_eq(conc_future_set_running_or_notify_cancel(NULL), CONC_EINVAL);
    cr_assert_eq(conc_future_set_result(NULL, P(1)), CONC_EINVAL);
    cr_assert_eq(conc_future_set_exception(NULL, CONC_EFAILED, "x"), CONC_EINVAL);
    cr_assert_eq(conc_future_then(NULL, &g, ident_fn, NULL), CONC_EINVAL);
    cr_assert_eq(conc_future_then(f, NULL, ident_fn, NULL), CONC_EINVAL);
    cr_assert_eq(conc_future_then(f, &g, NULL, NULL), CONC_EINVAL);
    cr_assert_null(g, "then() set *out although it failed");
    /* none of that touched f */
    cr_assert_eq(conc_future_state(f), CONC_FUTURE_PENDING);
    cr_assert_eq(conc_future_set_result(f, P(3)), 0);
    cr_assert_eq(conc_future_result(f, 0, &r), 0);
    cr_assert_eq(U(r), 3);
    freef(f);
}

Test(future, bad_timeouts_on_pending_future, .timeout = TU_TIMEOUT)
{
    conc_future_t *f = newf();
    void *r;
    int code;
    /* NaN is CONC_EINVAL; a negative timeout is already up (base.h) */
    cr_assert_eq(conc_future_result(f, NAN, &r), CONC_EINVAL);
    cr_assert_eq(conc_future_exception(f, NAN, &code, NULL), CONC_EINVAL);
    const double neg[] = {-0.5, -1.0, -2.0, -1e-9, -INFINITY};
    for (size_t i = 0; i < sizeof neg / sizeof neg[0]; i++) {
        cr_assert_eq(conc_future_result(f, neg[i], &r), CONC_ETIMEDOUT, "result(timeout %g)", neg[i]);
        cr_assert_eq(conc_future_exception(f, neg[i], &code, NULL), CONC_ETIMEDOUT, "exception(timeout %g)",
                     neg[i]);
    }
    cr_assert_eq(conc_future_state(f), CONC_FUTURE_PENDING);
    freef(f);
}

Test(future, bad_timeouts_on_done_future, .timeout = TU_TIMEOUT)
{
    /* base.h: NaN is CONC_EINVAL — also when the call would not have to
     * block; a negative timeout is already up (here: done, so 0). */
    conc_future_t *f = newf();
    cr_assert_eq(conc_future_set_result(f, P(5)), 0);
    void *r = NULL;
    int code;
    cr_assert_eq(conc_future_result(f, -0.5, &r), 0);
    cr_assert_eq(conc_future_result(f, NAN, &r), CONC_EINVAL);
    cr_assert_eq(conc_future_exception(f, -3, &code, NULL), 0);
    /* huge timeouts are fine */
    cr_assert_eq(conc_future_result(f, 1e300, &r), 0);
    cr_assert_eq(conc_future_result(f, INFINITY, &r), 0);
    cr_assert_eq(U(r), 5);
    freef(f);
}

/* ---------------------------------------------------------------- states */

static void assert_state(conc_future_t *f, conc_future_state_t st)
{
    cr_assert_eq(conc_future_state(f), st, "state %d, expected %d", (int)conc_future_state(f), (int)st);
    cr_assert_eq(conc_future_cancelled(f), st == CONC_FUTURE_CANCELLED);
    cr_assert_eq(conc_future_running(f), st == CONC_FUTURE_RUNNING);
    cr_assert_eq(conc_future_done(f), st == CONC_FUTURE_CANCELLED || st == CONC_FUTURE_FINISHED);
}

Test(future, pending_state_and_zero_timeouts, .timeout = TU_TIMEOUT)
{
    conc_future_t *f = newf();
    assert_state(f, CONC_FUTURE_PENDING);
    void *r = P(77);
    int code = 99;
    cr_assert_eq(conc_future_result(f, 0, &r), CONC_ETIMEDOUT);
    cr_assert_eq(U(r), 77, "result() wrote *result on timeout");
    cr_assert_eq(conc_future_exception(f, 0, &code, NULL), CONC_ETIMEDOUT);
    double t = tu_now();
    cr_assert_eq(conc_future_result(f, 0.15, &r), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t, 0.15);
    t = tu_now();
    cr_assert_eq(conc_future_exception(f, 0.15, &code, NULL), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t, 0.15);
    assert_state(f, CONC_FUTURE_PENDING);
    freef(f);
}

Test(future, running_then_finished, .timeout = TU_TIMEOUT)
{
    conc_future_t *f = newf();
    cr_assert_eq(conc_future_set_running_or_notify_cancel(f), 1);
    assert_state(f, CONC_FUTURE_RUNNING);
    cr_assert_not(conc_future_cancel(f), "cancel() succeeded on a running future");
    assert_state(f, CONC_FUTURE_RUNNING);
    cr_assert_eq(conc_future_set_running_or_notify_cancel(f), CONC_EPERM);
    void *r;
    cr_assert_eq(conc_future_result(f, 0, &r), CONC_ETIMEDOUT);
    cr_assert_eq(conc_future_set_result(f, P(42)), 0);
    assert_state(f, CONC_FUTURE_FINISHED);
    cr_assert_eq(conc_future_result(f, 0, &r), 0);
    cr_assert_eq(U(r), 42);
    cr_assert_eq(conc_future_result(f, CONC_FOREVER, NULL), 0, "result with a NULL out-parameter");
    int code = 99;
    const char *msg = "junk";
    cr_assert_eq(conc_future_exception(f, CONC_FOREVER, &code, &msg), 0);
    cr_assert_eq(code, 0);
    cr_assert_eq(conc_future_exception(f, 0, NULL, NULL), 0);
    cr_assert_not(conc_future_cancel(f), "cancel() succeeded on a finished future");
    assert_state(f, CONC_FUTURE_FINISHED);
    cr_assert_eq(conc_future_set_running_or_notify_cancel(f), CONC_EPERM);
    freef(f);
}

Test(future, set_result_without_running, .timeout = TU_TIMEOUT)
{
    /* Python's set_result does not require RUNNING. */
    conc_future_t *f = newf();
    cr_assert_eq(conc_future_set_result(f, NULL), 0);
    assert_state(f, CONC_FUTURE_FINISHED);
    void *r = P(1);
    cr_assert_eq(conc_future_result(f, 0, &r), 0);
    cr_assert_null(r);
    freef(f);
}

Test(future, cancel_pending, .timeout = TU_TIMEOUT)
{
    conc_future_t *f = newf();
    cr_assert(conc_future_cancel(f));
    assert_state(f, CONC_FUTURE_CANCELLED);
    cr_assert(conc_future_cancel(f), "cancel() is idempotent");
    cr_assert(conc_future_cancel(f));
    assert_state(f, CONC_FUTURE_CANCELLED);
    void *r = P(7);
    cr_assert_eq(conc_future_result(f, 0, &r), CONC_ECANCELLED);
    cr_assert_eq(conc_future_result(f, CONC_FOREVER, &r), CONC_ECANCELLED);
    cr_assert_eq(conc_future_result(f, 1.0, &r), CONC_ECANCELLED);
    int code;
    cr_assert_eq(conc_future_exception(f, CONC_FOREVER, &code, NULL), CONC_ECANCELLED);
    cr_assert_eq(conc_future_set_running_or_notify_cancel(f), 0, "srnc on a cancelled future");
    assert_state(f, CONC_FUTURE_CANCELLED);
    cr_assert_eq(conc_future_set_result(f, P(1)), CONC_EPERM);
    cr_assert_eq(conc_future_set_exception(f, CONC_EFAILED, "x"), CONC_EPERM);
    assert_state(f, CONC_FUTURE_CANCELLED);
    cr_assert(conc_future_cancel(f));
    freef(f);
}

Test(future, cancel_failed_future, .timeout = TU_TIMEOUT)
{
    conc_future_t *f = newf();
    cr_assert_eq(conc_future_set_exception(f, CONC_ERANGE, "too big"), 0);
    cr_assert_not(conc_future_cancel(f));
    assert_state(f, CONC_FUTURE_FINISHED);
    cr_assert_eq(conc_future_result(f, 0, NULL), CONC_EFAILED);
    freef(f);
}

Test(future, set_exception_code_and_message, .timeout = TU_TIMEOUT)
{
    conc_future_t *f = newf();
    char buf[32];
    snprintf(buf, sizeof buf, "value %d out of range", 7);
    cr_assert_eq(conc_future_set_running_or_notify_cancel(f), 1);
    cr_assert_eq(conc_future_set_exception(f, CONC_ERANGE, buf), 0);
    memset(buf, 'x', sizeof buf - 1); /* the message was copied */
    assert_state(f, CONC_FUTURE_FINISHED);
    void *r = P(9);
    cr_assert_eq(conc_future_result(f, 0, &r), CONC_EFAILED);
    int code = 0;
    const char *msg = NULL;
    cr_assert_eq(conc_future_exception(f, 0, &code, &msg), 0);
    cr_assert_eq(code, CONC_ERANGE);
    cr_assert_not_null(msg);
    cr_assert_str_eq(msg, "value 7 out of range");
    cr_assert_eq(conc_future_exception(f, 0, &code, NULL), 0);
    cr_assert_eq(code, CONC_ERANGE);
    freef(f);
}

Test(future, set_exception_nonnegative_code_is_efailed, .timeout = TU_TIMEOUT)
{
    const int codes[] = {0, 1, 12345};
    for (size_t i = 0; i < 3; i++) {
        conc_future_t *f = newf();
        cr_assert_eq(conc_future_set_exception(f, codes[i], NULL), 0);
        cr_assert_eq(conc_future_result(f, 0, NULL), CONC_EFAILED, "code %d", codes[i]);
        int code = 0;
        cr_assert_eq(conc_future_exception(f, 0, &code, NULL), 0);
        cr_assert_eq(code, CONC_EFAILED);
        freef(f);
    }
}

Test(future, second_set_is_invalid_state, .timeout = TU_TIMEOUT)
{
    /* test_multiple_set_result / test_multiple_set_exception */
    conc_future_t *f = newf();
    cr_assert_eq(conc_future_set_result(f, P(1)), 0);
    cr_assert_eq(conc_future_set_result(f, P(2)), CONC_EPERM);
    cr_assert_eq(conc_future_set_exception(f, CONC_EFAILED, "late"), CONC_EPERM);
    void *r;
    cr_assert_eq(conc_future_result(f, 0, &r), 0);
    cr_assert_eq(U(r), 1, "a refused set_result changed the result");
    assert_state(f, CONC_FUTURE_FINISHED);
    freef(f);

    f = newf();
    cr_assert_eq(conc_future_set_exception(f, CONC_EEOF, "first"), 0);
    cr_assert_eq(conc_future_set_exception(f, CONC_ERANGE, "second"), CONC_EPERM);
    cr_assert_eq(conc_future_set_result(f, P(2)), CONC_EPERM);
    int code;
    const char *msg;
    cr_assert_eq(conc_future_exception(f, 0, &code, &msg), 0);
    cr_assert_eq(code, CONC_EEOF);
    cr_assert_str_eq(msg, "first");
    freef(f);
}

/* --------------------------------------------------- blocking waiters */

enum { W_RESULT, W_EXCEPTION };

typedef struct {
    conc_future_t *f;
    int op;
    double timeout;
    atomic_int rc[TU_MAX_BUNCH];
    atomic_uintptr_t val[TU_MAX_BUNCH];
    atomic_int code[TU_MAX_BUNCH];
    double dt[TU_MAX_BUNCH];
} wx_t;

static void waiter_fn(void *p, int i)
{
    wx_t *x = p;
    double t = tu_now();
    if (x->op == W_RESULT) {
        void *r = P(0xdead);
        atomic_store(&x->rc[i], conc_future_result(x->f, x->timeout, &r));
        atomic_store(&x->val[i], U(r));
    } else {
        int code = 12345;
        atomic_store(&x->rc[i], conc_future_exception(x->f, x->timeout, &code, NULL));
        atomic_store(&x->code[i], code);
    }
    x->dt[i] = tu_now() - t;
}

static void start_waiters(tu_bunch_t *b, wx_t *x, int n, conc_future_t *f, int op, double timeout)
{
    memset(x, 0, sizeof *x);
    x->f = f;
    x->op = op;
    x->timeout = timeout;
    tu_bunch_start(b, n, waiter_fn, x);
    cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(b), 10), "waiters did not block");
    cr_assert_eq(atomic_load(&b->finished), 0, "a waiter returned from a pending future");
}

Test(future, result_wakes_all_waiters, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static wx_t x;
    conc_future_t *f = newf();
    start_waiters(&b, &x, 6, f, W_RESULT, CONC_FOREVER);
    cr_assert_eq(conc_future_set_result(f, P(1234)), 0);
    tu_bunch_join(&b);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(atomic_load(&x.rc[i]), 0);
        cr_assert_eq(atomic_load(&x.val[i]), 1234);
    }
    freef(f);
}

Test(future, timed_waiters_woken_before_timeout, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static wx_t x;
    conc_future_t *f = newf();
    start_waiters(&b, &x, 4, f, W_RESULT, 30.0);
    cr_assert_eq(conc_future_set_exception(f, CONC_EEOF, "closed"), 0);
    tu_bunch_join(&b);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(atomic_load(&x.rc[i]), CONC_EFAILED);
        cr_assert_lt(x.dt[i], 20.0);
    }
    freef(f);
}

Test(future, exception_waiters, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static wx_t x;
    conc_future_t *f = newf();
    start_waiters(&b, &x, 4, f, W_EXCEPTION, CONC_FOREVER);
    cr_assert_eq(conc_future_set_running_or_notify_cancel(f), 1);
    cr_assert_eq(atomic_load(&b.finished), 0, "running woke exception() waiters");
    cr_assert_eq(conc_future_set_exception(f, CONC_ERANGE, "no"), 0);
    tu_bunch_join(&b);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(atomic_load(&x.rc[i]), 0);
        cr_assert_eq(atomic_load(&x.code[i]), CONC_ERANGE);
    }
    freef(f);

    /* exception() of a successful future: 0 and code 0 */
    f = newf();
    start_waiters(&b, &x, 3, f, W_EXCEPTION, CONC_FOREVER);
    cr_assert_eq(conc_future_set_result(f, P(1)), 0);
    tu_bunch_join(&b);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(atomic_load(&x.rc[i]), 0);
        cr_assert_eq(atomic_load(&x.code[i]), 0);
    }
    freef(f);
}

Test(future, cancel_wakes_waiters, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b, b2;
    static wx_t x, x2;
    conc_future_t *f = newf();
    start_waiters(&b, &x, 4, f, W_RESULT, CONC_FOREVER);
    start_waiters(&b2, &x2, 2, f, W_EXCEPTION, 30.0);
    cr_assert(conc_future_cancel(f));
    tu_bunch_join(&b);
    tu_bunch_join(&b2);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(atomic_load(&x.rc[i]), CONC_ECANCELLED);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(atomic_load(&x2.rc[i]), CONC_ECANCELLED);
    freef(f);
}

Test(future, timed_waiters_time_out, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static wx_t x;
    conc_future_t *f = newf();
    memset(&x, 0, sizeof x);
    x.f = f;
    x.op = W_RESULT;
    x.timeout = 0.2;
    tu_bunch_start(&b, 4, waiter_fn, &x);
    tu_bunch_join(&b);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(atomic_load(&x.rc[i]), CONC_ETIMEDOUT);
        tu_assert_timeout(x.dt[i], 0.2);
    }
    /* still usable */
    cr_assert_eq(conc_future_set_result(f, P(3)), 0);
    cr_assert_eq(conc_future_result(f, 0.2, NULL), 0);
    freef(f);
}

/* ------------------------------------------------------------ callbacks */

#define MAXLOG 64
typedef struct {
    atomic_int n;      /* claimed slots */
    atomic_int filled; /* slots written (published after the fields) */
    int order[MAXLOG];
    conc_future_t *fs[MAXLOG];
    long tids[MAXLOG];
    int states[MAXLOG];
    int codes[MAXLOG];
} cblog_t;

static cblog_t cbl;

static void log_cb(conc_future_t *f, void *arg)
{
    int k = atomic_fetch_add(&cbl.n, 1);
    if (k >= MAXLOG)
        return;
    cbl.order[k] = (int)U(arg);
    cbl.fs[k] = f;
    cbl.tids[k] = tu_gettid();
    cbl.states[k] = (int)conc_future_state(f);
    int code = 777;
    /* the outcome is readable inside the callback (and does not block) */
    int rc = conc_future_exception(f, 0, &code, NULL);
    cbl.codes[k] = rc == 0 ? code : rc;
    atomic_fetch_add(&cbl.filled, 1);
}

Test(future, callback_runs_on_completion_in_completing_thread, .timeout = TU_TIMEOUT)
{
    memset(&cbl, 0, sizeof cbl);
    conc_future_t *f = newf();
    cr_assert_eq(conc_future_add_done_callback(f, log_cb, P(5)), 0);
    cr_assert_eq(atomic_load(&cbl.n), 0, "callback ran on a pending future");
    cr_assert_eq(conc_future_set_running_or_notify_cancel(f), 1);
    cr_assert_eq(atomic_load(&cbl.n), 0, "callback ran when the future started");
    cr_assert_eq(conc_future_set_result(f, P(8)), 0);
    cr_assert_eq(atomic_load(&cbl.n), 1, "callback did not run (once) by the time set_result returned");
    cr_assert_eq(cbl.order[0], 5);
    cr_assert_eq(cbl.fs[0], f);
    cr_assert_eq(cbl.tids[0], tu_gettid());
    cr_assert_eq(cbl.states[0], CONC_FUTURE_FINISHED);
    cr_assert_eq(cbl.codes[0], 0);
    /* a refused second set does not run it again */
    cr_assert_eq(conc_future_set_result(f, P(9)), CONC_EPERM);
    cr_assert_eq(conc_future_cancel(f), false);
    cr_assert_eq(atomic_load(&cbl.n), 1);
    freef(f);
}

Test(future, callback_with_exception_and_with_cancel, .timeout = TU_TIMEOUT)
{
    memset(&cbl, 0, sizeof cbl);
    conc_future_t *f = newf();
    cr_assert_eq(conc_future_add_done_callback(f, log_cb, P(1)), 0);
    cr_assert_eq(conc_future_set_exception(f, CONC_EEOF, "eof"), 0);
    cr_assert_eq(atomic_load(&cbl.n), 1);
    cr_assert_eq(cbl.codes[0], CONC_EEOF);
    freef(f);

    memset(&cbl, 0, sizeof cbl);
    f = newf();
    cr_assert_eq(conc_future_add_done_callback(f, log_cb, P(2)), 0);
    cr_assert(conc_future_cancel(f));
    cr_assert_eq(atomic_load(&cbl.n), 1, "cancel() did not run the callback");
    cr_assert_eq(cbl.states[0], CONC_FUTURE_CANCELLED);
    cr_assert_eq(cbl.codes[0], CONC_ECANCELLED);
    cr_assert(conc_future_cancel(f));
    cr_assert_eq(conc_future_set_running_or_notify_cancel(f), 0);
    cr_assert_eq(atomic_load(&cbl.n), 1, "callback ran more than once on a cancelled future");
    freef(f);
}

Test(future, callback_on_done_future_runs_at_once, .timeout = TU_TIMEOUT)
{
    conc_future_t *fs[3];
    fs[0] = newf();
    cr_assert_eq(conc_future_set_result(fs[0], P(1)), 0);
    fs[1] = newf();
    cr_assert_eq(conc_future_set_exception(fs[1], CONC_ERANGE, "r"), 0);
    fs[2] = newf();
    cr_assert(conc_future_cancel(fs[2]));
    const int want[3] = {0, CONC_ERANGE, CONC_ECANCELLED};
    for (int i = 0; i < 3; i++) {
        memset(&cbl, 0, sizeof cbl);
        cr_assert_eq(conc_future_add_done_callback(fs[i], log_cb, P(i)), 0);
        cr_assert_eq(atomic_load(&cbl.n), 1, "future %d: callback not run before add returned", i);
        cr_assert_eq(cbl.tids[0], tu_gettid());
        cr_assert_eq(cbl.fs[0], fs[i]);
        cr_assert_eq(cbl.codes[0], want[i]);
    }
    for (int i = 0; i < 3; i++)
        freef(fs[i]);
}

Test(future, callbacks_run_in_order_added, .timeout = TU_TIMEOUT)
{
    memset(&cbl, 0, sizeof cbl);
    conc_future_t *f = newf();
    for (int i = 0; i < 20; i++)
        cr_assert_eq(conc_future_add_done_callback(f, log_cb, P(i)), 0);
    /* the same callback and arg twice is two callbacks */
    cr_assert_eq(conc_future_add_done_callback(f, log_cb, P(20)), 0);
    cr_assert_eq(conc_future_add_done_callback(f, log_cb, P(20)), 0);
    cr_assert_eq(conc_future_set_result(f, NULL), 0);
    cr_assert_eq(atomic_load(&cbl.n), 22);
    for (int i = 0; i < 22; i++)
        cr_assert_eq(cbl.order[i], i < 20 ? i : 20, "callback %d ran at position %d", cbl.order[i], i);
    cr_assert_eq(conc_future_add_done_callback(f, log_cb, P(99)), 0);
    cr_assert_eq(atomic_load(&cbl.n), 23);
    cr_assert_eq(cbl.order[22], 99);
    freef(f);
}

Test(future, callback_from_another_thread_completion, .timeout = TU_TIMEOUT)
{
    /* f completed on a pool worker: the callback runs there, once */
    memset(&cbl, 0, sizeof cbl);
    conc_executor_t *ex = mkpool(1);
    atomic_store(&gate, 0);
    conc_future_t *f;
    cr_assert_eq(conc_submit(ex, &f, gate_task, P(3)), 0);
    cr_assert_eq(conc_future_add_done_callback(f, log_cb, P(1)), 0);
    cr_assert(TU_WAIT_UNTIL(conc_future_running(f), 10), "the worker never started the task");
    atomic_store(&gate, 1);
    void *r;
    cr_assert_eq(conc_future_result(f, 20, &r), 0);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&cbl.filled) == 1, 10));
    cr_assert_neq(cbl.tids[0], tu_gettid(), "callback ran in the waiting thread, not the worker");
    cr_assert_eq(cbl.states[0], CONC_FUTURE_FINISHED);
    freef(f);
    freepool(ex);
    cr_assert_eq(atomic_load(&cbl.n), 1);
}

/* The callback runs after the waiters were woken: a waiter blocked in
 * result() must be able to return while the callback still runs. */
static atomic_int waiter_back;
static atomic_int seen_waiter_back;
static void wait_for_waiter_cb(conc_future_t *f, void *arg)
{
    (void)f;
    (void)arg;
    atomic_store(&seen_waiter_back, TU_WAIT_UNTIL(atomic_load(&waiter_back), 10) ? 1 : 2);
}

static void blocked_waiter(void *p, int i)
{
    (void)i;
    void *r = NULL;
    int rc = conc_future_result((conc_future_t *)p, CONC_FOREVER, &r);
    if (rc == 0 && U(r) == 11)
        atomic_store(&waiter_back, 1);
    else
        atomic_store(&waiter_back, 100 + rc);
}

Test(future, callbacks_run_after_waiters_are_woken, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    atomic_store(&waiter_back, 0);
    atomic_store(&seen_waiter_back, 0);
    conc_future_t *f = newf();
    cr_assert_eq(conc_future_add_done_callback(f, wait_for_waiter_cb, NULL), 0);
    tu_bunch_start(&b, 1, blocked_waiter, f);
    cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10));
    cr_assert_eq(conc_future_set_result(f, P(11)), 0);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&waiter_back), 1, "waiter got a wrong outcome");
    cr_assert_eq(atomic_load(&seen_waiter_back), 1,
                 "the waiter could not return from result() while the callback ran");
    freef(f);
}

/* a failing callback goes to the excepthook */
static pthread_mutex_t hook_mu = PTHREAD_MUTEX_INITIALIZER;
static int hook_calls, hook_code;
static char hook_msg[256];
static void hook(conc_thread_t *t, int code, const char *msg, void *arg)
{
    (void)t;
    (void)arg;
    pthread_mutex_lock(&hook_mu);
    hook_calls++;
    hook_code = code;
    snprintf(hook_msg, sizeof hook_msg, "%s", msg ? msg : "(null)");
    pthread_mutex_unlock(&hook_mu);
}

static atomic_int good_cb_calls;
static void failing_cb(conc_future_t *f, void *arg)
{
    (void)f;
    conc_fail(CONC_ERANGE, "callback %d failed", (int)U(arg));
}
static void good_cb(conc_future_t *f, void *arg)
{
    (void)f;
    (void)arg;
    atomic_fetch_add(&good_cb_calls, 1);
}

Test(future, failing_callback_reported_through_excepthook, .timeout = TU_TIMEOUT)
{
    conc_set_excepthook(hook, NULL);
    atomic_store(&good_cb_calls, 0);
    conc_future_t *f = newf();
    cr_assert_eq(conc_future_add_done_callback(f, good_cb, NULL), 0);
    cr_assert_eq(conc_future_add_done_callback(f, failing_cb, P(1)), 0);
    cr_assert_eq(conc_future_add_done_callback(f, good_cb, NULL), 0);
    conc_fail_clear();
    cr_assert_eq(conc_future_set_result(f, P(21)), 0, "a failing callback changed set_result's return");
    cr_assert_eq(atomic_load(&good_cb_calls), 2, "a failing callback stopped the later ones");
    pthread_mutex_lock(&hook_mu);
    int calls = hook_calls, code = hook_code;
    char msg[256];
    memcpy(msg, hook_msg, sizeof msg);
    pthread_mutex_unlock(&hook_mu);
    cr_assert_eq(calls, 1, "excepthook called %d times", calls);
    cr_assert_eq(code, CONC_ERANGE);
    cr_assert_str_eq(msg, "callback 1 failed");
    cr_assert_eq(conc_failure(NULL), 0, "the callback's failure leaked into the completing thread");
    void *r;
    cr_assert_eq(conc_future_result(f, 0, &r), 0);
    cr_assert_eq(U(r), 21);
    assert_state(f, CONC_FUTURE_FINISHED);

    /* on an already-done future: reported at once, add still succeeds */
    cr_assert_eq(conc_future_add_done_callback(f, failing_cb, P(2)), 0);
    cr_assert_eq(conc_future_add_done_callback(f, good_cb, NULL), 0);
    pthread_mutex_lock(&hook_mu);
    calls = hook_calls;
    memcpy(msg, hook_msg, sizeof msg);
    pthread_mutex_unlock(&hook_mu);
    cr_assert_eq(calls, 2);
    cr_assert_str_eq(msg, "callback 2 failed");
    cr_assert_eq(atomic_load(&good_cb_calls), 3);
    cr_assert_eq(conc_failure(NULL), 0);
    cr_assert_eq(conc_future_result(f, 0, &r), 0);
    cr_assert_eq(U(r), 21);
    freef(f);
    conc_set_excepthook(NULL, NULL);
}

Test(future, failing_callback_on_worker_does_not_fail_next_task, .timeout = TU_TIMEOUT)
{
    /* The worker that completes f runs its failing callback; the worker's
     * next task must not inherit that failure. */
    conc_set_excepthook(hook, NULL);
    conc_executor_t *ex = mkpool(1);
    atomic_store(&gate, 0);
    conc_future_t *f, *g;
    cr_assert_eq(conc_submit(ex, &f, gate_task, P(1)), 0);
    cr_assert_eq(conc_future_add_done_callback(f, failing_cb, P(3)), 0);
    cr_assert_eq(conc_submit(ex, &g, gate_task, P(2)), 0);
    atomic_store(&gate, 1);
    void *r;
    cr_assert_eq(conc_future_result(f, 20, &r), 0);
    cr_assert_eq(conc_future_result(g, 20, &r), 0, "the next task failed with the callback's failure");
    cr_assert_eq(U(r), 2);
    freef(f);
    freef(g);
    freepool(ex);
    pthread_mutex_lock(&hook_mu);
    int calls = hook_calls;
    pthread_mutex_unlock(&hook_mu);
    cr_assert_eq(calls, 1);
    conc_set_excepthook(NULL, NULL);
}

/* callbacks that use the future: read it, add another callback, drop a ref */
static atomic_int inner_calls;
static void inner_cb(conc_future_t *f, void *arg)
{
    (void)f;
    (void)arg;
    atomic_fetch_add(&inner_calls, 1);
}
static atomic_int reentrant_ok;
static void reentrant_cb(conc_future_t *f, void *arg)
{
    (void)arg;
    void *r = NULL;
    int ok = conc_future_result(f, 0, &r) == 0 && U(r) == 4 && conc_future_done(f);
    ok = ok && conc_future_add_done_callback(f, inner_cb, NULL) == 0;
    ok = ok && atomic_load(&inner_calls) == 1; /* ran at once: f is done */
    ok = ok && !conc_future_cancel(f) && conc_future_set_result(f, NULL) == CONC_EPERM;
    atomic_store(&reentrant_ok, ok ? 1 : 2);
}
static void free_ref_cb(conc_future_t *f, void *arg)
{
    (void)f;
    conc_future_free((conc_future_t *)arg);
}

Test(future, callbacks_may_use_the_future, .timeout = TU_TIMEOUT)
{
    atomic_store(&inner_calls, 0);
    atomic_store(&reentrant_ok, 0);
    conc_future_t *f = newf();
    cr_assert_eq(conc_future_add_done_callback(f, reentrant_cb, NULL), 0);
    conc_future_t *extra = conc_future_ref(f);
    cr_assert_eq(extra, f);
    cr_assert_eq(conc_future_add_done_callback(f, free_ref_cb, extra), 0);
    cr_assert_eq(conc_future_set_result(f, P(4)), 0);
    cr_assert_eq(atomic_load(&reentrant_ok), 1, "a callback could not use its future");
    cr_assert_eq(atomic_load(&inner_calls), 1);
    freef(f);
}

static atomic_int fired;
static void free_and_count_cb(conc_future_t *f, void *arg)
{
    (void)arg;
    int ok = conc_future_done(f);
    conc_future_free(f); /* the user's reference, handed to the callback */
    atomic_fetch_add(&fired, ok ? 1 : 1000);
}

Test(future, fire_and_forget_callback_frees_future, .timeout = TU_TIMEOUT)
{
    /* submit, give the reference to a callback, never touch f again: the
     * executor's own reference keeps f alive while it completes */
    conc_executor_t *ex = mkpool(2);
    atomic_store(&gate, 0);
    atomic_store(&fired, 0);
    for (int i = 0; i < 20; i++) {
        conc_future_t *f;
        cr_assert_eq(conc_submit(ex, &f, gate_task, P(i)), 0);
        cr_assert_eq(conc_future_add_done_callback(f, free_and_count_cb, NULL), 0);
        if (i == 10)
            atomic_store(&gate, 1);
    }
    cr_assert(TU_WAIT_UNTIL(atomic_load(&fired) >= 20, 20));
    freepool(ex);
    cr_assert_eq(atomic_load(&fired), 20);
}

/* ------------------------------------------------------------------ then */

static atomic_int then_calls;
static atomic_long then_tid;
static void *plus_fn(void *r, void *a)
{
    atomic_fetch_add(&then_calls, 1);
    atomic_store(&then_tid, tu_gettid());
    return P(U(r) + U(a));
}
static void *failing_fn(void *r, void *a)
{
    (void)a;
    atomic_fetch_add(&then_calls, 1);
    return conc_fail(CONC_EEOF, "then fn saw %d", (int)U(r));
}

Test(future, then_on_pending_future, .timeout = TU_TIMEOUT)
{
    atomic_store(&then_calls, 0);
    conc_future_t *f = newf(), *g = NULL;
    cr_assert_eq(conc_future_then(f, &g, plus_fn, P(100)), 0);
    cr_assert_not_null(g);
    cr_assert_neq(g, f);
    cr_assert_eq(conc_future_state(g), CONC_FUTURE_PENDING);
    cr_assert_eq(atomic_load(&then_calls), 0);
    cr_assert_eq(conc_future_result(g, 0.05, NULL), CONC_ETIMEDOUT);
    cr_assert_eq(conc_future_set_result(f, P(5)), 0);
    cr_assert_eq(atomic_load(&then_calls), 1, "fn did not run in the completing call");
    cr_assert_eq(atomic_load(&then_tid), tu_gettid());
    void *r;
    cr_assert_eq(conc_future_result(g, 5, &r), 0);
    cr_assert_eq(U(r), 105);
    cr_assert_eq(conc_future_state(g), CONC_FUTURE_FINISHED);
    freef(f);
    freef(g);
    cr_assert_eq(atomic_load(&then_calls), 1);
}

Test(future, then_on_done_future_runs_at_once, .timeout = TU_TIMEOUT)
{
    atomic_store(&then_calls, 0);
    conc_future_t *f = newf(), *g = NULL;
    cr_assert_eq(conc_future_set_result(f, P(1)), 0);
    cr_assert_eq(conc_future_then(f, &g, plus_fn, P(2)), 0);
    cr_assert_eq(atomic_load(&then_calls), 1);
    cr_assert_eq(atomic_load(&then_tid), tu_gettid());
    cr_assert(conc_future_done(g));
    void *r;
    cr_assert_eq(conc_future_result(g, 0, &r), 0);
    cr_assert_eq(U(r), 3);
    freef(g);
    freef(f);
}

Test(future, then_propagates_failure, .timeout = TU_TIMEOUT)
{
    atomic_store(&then_calls, 0);
    conc_future_t *f = newf(), *g, *g2;
    cr_assert_eq(conc_future_then(f, &g, plus_fn, P(1)), 0);
    cr_assert_eq(conc_future_set_exception(f, CONC_ERANGE, "upstream"), 0);
    cr_assert_eq(conc_future_then(f, &g2, plus_fn, P(1)), 0); /* already failed */
    cr_assert_eq(atomic_load(&then_calls), 0, "fn ran although f failed");
    conc_future_t *gs[2] = {g, g2};
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(conc_future_result(gs[i], 5, NULL), CONC_EFAILED);
        int code;
        const char *msg;
        cr_assert_eq(conc_future_exception(gs[i], 0, &code, &msg), 0);
        cr_assert_eq(code, CONC_ERANGE);
        cr_assert_not_null(msg);
        cr_assert_str_eq(msg, "upstream");
        cr_assert_not(conc_future_cancelled(gs[i]));
        freef(gs[i]);
    }
    freef(f);
}

Test(future, then_propagates_cancel, .timeout = TU_TIMEOUT)
{
    atomic_store(&then_calls, 0);
    conc_future_t *f = newf(), *g, *g2;
    cr_assert_eq(conc_future_then(f, &g, plus_fn, P(1)), 0);
    cr_assert(conc_future_cancel(f));
    cr_assert_eq(conc_future_then(f, &g2, plus_fn, P(1)), 0);
    cr_assert_eq(atomic_load(&then_calls), 0);
    cr_assert(conc_future_cancelled(g), "then-future of a cancelled future is not cancelled");
    cr_assert(conc_future_cancelled(g2));
    cr_assert_eq(conc_future_result(g, 5, NULL), CONC_ECANCELLED);
    cr_assert_eq(conc_future_result(g2, 5, NULL), CONC_ECANCELLED);
    freef(g);
    freef(g2);
    freef(f);
}

Test(future, then_fn_failure, .timeout = TU_TIMEOUT)
{
    atomic_store(&then_calls, 0);
    conc_future_t *f = newf(), *g;
    cr_assert_eq(conc_future_then(f, &g, failing_fn, NULL), 0);
    conc_fail_clear();
    cr_assert_eq(conc_future_set_result(f, P(6)), 0);
    cr_assert_eq(atomic_load(&then_calls), 1);
    cr_assert_eq(conc_future_result(g, 5, NULL), CONC_EFAILED);
    int code;
    const char *msg;
    cr_assert_eq(conc_future_exception(g, 0, &code, &msg), 0);
    cr_assert_eq(code, CONC_EEOF);
    cr_assert_str_eq(msg, "then fn saw 6");
    /* f itself is untouched, and the completing thread carries no failure */
    void *r;
    cr_assert_eq(conc_future_result(f, 0, &r), 0);
    cr_assert_eq(U(r), 6);
    cr_assert_eq(conc_failure(NULL), 0, "then fn's failure leaked into the completing thread");
    freef(g);

    /* the same on an already-done future */
    cr_assert_eq(conc_future_then(f, &g, failing_fn, NULL), 0);
    cr_assert_eq(conc_future_result(g, 5, NULL), CONC_EFAILED);
    cr_assert_eq(conc_failure(NULL), 0);
    freef(g);
    freef(f);
}

Test(future, then_chain_on_pool, .timeout = TU_TIMEOUT)
{
    atomic_store(&then_calls, 0);
    conc_executor_t *ex = mkpool(2);
    atomic_store(&gate, 0);
    conc_future_t *f, *g, *h;
    cr_assert_eq(conc_submit(ex, &f, gate_task, P(10)), 0);
    cr_assert_eq(conc_future_then(f, &g, plus_fn, P(1)), 0);
    cr_assert_eq(conc_future_then(g, &h, plus_fn, P(100)), 0);
    cr_assert_not(conc_future_done(h));
    atomic_store(&gate, 1);
    void *r;
    cr_assert_eq(conc_future_result(h, 20, &r), 0);
    cr_assert_eq(U(r), 111);
    cr_assert_eq(conc_future_result(g, 0, &r), 0);
    cr_assert_eq(U(r), 11);
    cr_assert_eq(atomic_load(&then_calls), 2);
    freef(h);
    freef(g);
    freef(f);
    freepool(ex);
}

Test(future, then_future_freed_or_cancelled_early, .timeout = TU_TIMEOUT)
{
    atomic_store(&then_calls, 0);
    conc_future_t *f = newf(), *g, *g2;
    cr_assert_eq(conc_future_then(f, &g, plus_fn, P(1)), 0);
    cr_assert_eq(conc_future_then(f, &g2, plus_fn, P(2)), 0);
    freef(g);                           /* nobody wants this one any more */
    cr_assert(conc_future_cancel(g2));  /* and this one was cancelled */
    cr_assert_eq(conc_future_set_result(f, P(1)), 0);
    cr_assert(conc_future_cancelled(g2), "a cancelled then-future was completed");
    cr_assert_eq(conc_future_result(g2, 0, NULL), CONC_ECANCELLED);
    void *r;
    cr_assert_eq(conc_future_result(f, 0, &r), 0);
    cr_assert_eq(U(r), 1);
    freef(g2);
    freef(f);
}

/* ------------------------------------------------------ reference counts */

Test(future, ref_and_free, .timeout = TU_TIMEOUT)
{
    conc_future_t *f = newf();
    cr_assert_eq(conc_future_ref(f), f);
    cr_assert_eq(conc_future_ref(f), f);
    freef(f);
    freef(f);
    cr_assert_eq(conc_future_set_result(f, P(2)), 0);
    void *r;
    cr_assert_eq(conc_future_result(f, 0, &r), 0);
    cr_assert_eq(U(r), 2);
    freef(f);
    /* a pending future nobody completes can be dropped */
    f = newf();
    cr_assert_eq(conc_future_add_done_callback(f, nop_cb, NULL), 0);
    freef(f);
}

static atomic_int ran_after_free;
static void *mark_task(void *arg)
{
    atomic_fetch_add(&ran_after_free, (int)U(arg));
    return arg;
}
static atomic_int freed_cb_calls;
static void count_cb(conc_future_t *f, void *arg)
{
    (void)arg;
    if (conc_future_done(f))
        atomic_fetch_add(&freed_cb_calls, 1);
}

Test(future, free_before_task_ran, .timeout = TU_TIMEOUT)
{
    conc_executor_t *ex = mkpool(1);
    atomic_store(&gate, 0);
    atomic_store(&ran_after_free, 0);
    atomic_store(&freed_cb_calls, 0);
    conc_future_t *blocker, *f;
    cr_assert_eq(conc_submit(ex, &blocker, gate_task, NULL), 0);
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(conc_submit(ex, &f, mark_task, P(1)), 0);
        cr_assert_eq(conc_future_add_done_callback(f, count_cb, NULL), 0);
        freef(f); /* the executor keeps its own reference */
    }
    cr_assert_eq(atomic_load(&ran_after_free), 0);
    atomic_store(&gate, 1);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&ran_after_free) == 10 && atomic_load(&freed_cb_calls) == 10, 20),
              "ran %d, callbacks %d", atomic_load(&ran_after_free), atomic_load(&freed_cb_calls));
    freef(blocker);
    freepool(ex);
    cr_assert_eq(atomic_load(&ran_after_free), 10);
    cr_assert_eq(atomic_load(&freed_cb_calls), 10);
}

Test(future, free_while_running_and_after, .timeout = TU_TIMEOUT)
{
    conc_executor_t *ex = mkpool(2);
    atomic_store(&gate, 0);
    conc_future_t *f, *g;
    cr_assert_eq(conc_submit(ex, &f, gate_task, P(1)), 0);
    cr_assert(TU_WAIT_UNTIL(conc_future_running(f), 10));
    freef(f); /* while it runs */
    cr_assert_eq(conc_submit(ex, &g, mark_task, P(0)), 0);
    cr_assert_eq(conc_future_result(g, 20, NULL), 0);
    atomic_store(&gate, 1);
    freef(g); /* after it finished */
    freepool(ex); /* waits for f's task */
}

/* ------------------------------------------- outcomes a caller can tell apart
 * (issue 12 section 4; the rule in conc/base.h): result() returns
 * CONC_EFAILED for a failed task whatever its code, so the wait's own
 * CONC_ETIMEDOUT and CONC_ECANCELLED mean what they say. */

static void *fails_with(void *arg)
{
    int code = (int)(intptr_t)arg;
    return conc_fail(code, "task failed with %s", conc_errname(code));
}

Test(future, task_failing_with_timeout_is_not_a_timed_out_wait, .timeout = TU_TIMEOUT)
{
    conc_executor_t *ex = mkpool(2);
    conc_future_t *f;
    cr_assert_eq(conc_submit(ex, &f, fails_with, (void *)(intptr_t)CONC_ETIMEDOUT), 0);
    void *r;
    int rc, loops = 0;
    /* the loop of the issue: it must end */
    while ((rc = conc_future_result(f, 1.0, &r)) == CONC_ETIMEDOUT && ++loops < 30) {
    }
    cr_assert_eq(rc, CONC_EFAILED, "result = %d after %d timed-out waits", rc, loops);
    int code = 0;
    const char *msg = NULL;
    cr_assert_eq(conc_future_exception(f, 0, &code, &msg), 0);
    cr_assert_eq(code, CONC_ETIMEDOUT);
    cr_assert_str_eq(msg, "task failed with TimeoutError");
    freef(f);
    freepool(ex);
}

Test(future, task_failing_with_cancelled_is_not_cancelled, .timeout = TU_TIMEOUT)
{
    conc_executor_t *ex = mkpool(2);
    conc_future_t *f;
    cr_assert_eq(conc_submit(ex, &f, fails_with, (void *)(intptr_t)CONC_ECANCELLED), 0);
    cr_assert_eq(conc_future_result(f, 20, NULL), CONC_EFAILED);
    cr_assert_not(conc_future_cancelled(f), "a task that failed with CancelledError is not cancelled()");
    assert_state(f, CONC_FUTURE_FINISHED);
    int code = 0;
    cr_assert_eq(conc_future_exception(f, 0, &code, NULL), 0);
    cr_assert_eq(code, CONC_ECANCELLED);
    /* a really cancelled future says CONC_ECANCELLED */
    conc_future_t *g = newf();
    cr_assert(conc_future_cancel(g));
    cr_assert_eq(conc_future_result(g, 0, NULL), CONC_ECANCELLED);
    cr_assert(conc_future_cancelled(g));
    freef(g);
    /* set_exception with any code: the same */
    int codes[] = {CONC_ETIMEDOUT, CONC_ECANCELLED, CONC_EKILLED, CONC_EBROKEN, CONC_EINVAL, CONC_EFAILED};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        conc_future_t *h = newf();
        cr_assert_eq(conc_future_set_exception(h, codes[i], "x"), 0);
        cr_assert_eq(conc_future_result(h, 0, NULL), CONC_EFAILED, "code %d", codes[i]);
        cr_assert_eq(conc_future_exception(h, 0, &code, NULL), 0);
        cr_assert_eq(code, codes[i]);
        freef(h);
    }
    freef(f);
    freepool(ex);
}

Test(future, then_chain_failure_is_failed, .timeout = TU_TIMEOUT)
{
    conc_future_t *f = newf(), *g, *h;
    cr_assert_eq(conc_future_then(f, &g, plus_fn, P(1)), 0);
    cr_assert_eq(conc_future_then(g, &h, plus_fn, P(1)), 0);
    cr_assert_eq(conc_future_set_exception(f, CONC_ETIMEDOUT, "upstream timed out"), 0);
    cr_assert_eq(conc_future_result(h, 5, NULL), CONC_EFAILED);
    int code = 0;
    const char *msg = NULL;
    cr_assert_eq(conc_future_exception(h, 0, &code, &msg), 0);
    cr_assert_eq(code, CONC_ETIMEDOUT);
    cr_assert_str_eq(msg, "upstream timed out");
    freef(h);
    freef(g);
    freef(f);
}

/* ------------------------------------------------ CANCELLED_AND_NOTIFIED */

Test(future, set_running_or_notify_cancel_twice, .timeout = TU_TIMEOUT)
{
    /* CPython test_future: a cancelled future notified once is
     * CANCELLED_AND_NOTIFIED; a second call is a RuntimeError */
    conc_future_t *f = newf();
    cr_assert(conc_future_cancel(f));
    cr_assert_eq(conc_future_set_running_or_notify_cancel(f), 0);
    cr_assert_eq(conc_future_set_running_or_notify_cancel(f), CONC_EPERM);
    cr_assert(conc_future_cancelled(f));
    cr_assert(conc_future_done(f));
    cr_assert(conc_future_cancel(f), "cancel() of a cancelled-and-notified future is true");
    cr_assert_eq(conc_future_result(f, 0, NULL), CONC_ECANCELLED);
    assert_state(f, CONC_FUTURE_CANCELLED);
    freef(f);
    /* running, then finished: both refuse */
    f = newf();
    cr_assert_eq(conc_future_set_running_or_notify_cancel(f), 1);
    cr_assert_eq(conc_future_set_running_or_notify_cancel(f), CONC_EPERM);
    cr_assert_eq(conc_future_set_result(f, NULL), 0);
    cr_assert_eq(conc_future_set_running_or_notify_cancel(f), CONC_EPERM);
    freef(f);
}

/* --------------------------------------------------- removable callbacks */

static atomic_int removed_calls;
static void removed_cb(conc_future_t *f, void *arg)
{
    (void)f;
    atomic_fetch_add(&removed_calls, (int)(intptr_t)arg);
}

Test(future, remove_done_callback, .timeout = TU_TIMEOUT)
{
    atomic_store(&removed_calls, 0);
    conc_future_t *f = newf();
    cr_assert_eq(conc_future_add_done_callback(f, removed_cb, P(1)), 0);
    cr_assert_eq(conc_future_add_done_callback(f, removed_cb, P(10)), 0);
    cr_assert_eq(conc_future_add_done_callback(f, removed_cb, P(1)), 0);
    cr_assert_eq(conc_future_add_done_callback(f, removed_cb, P(100)), 0);
    cr_assert_eq(conc_future_remove_done_callback(f, removed_cb, P(1)), 2, "both (fn, arg) matches go");
    cr_assert_eq(conc_future_remove_done_callback(f, removed_cb, P(1)), 0);
    cr_assert_eq(conc_future_remove_done_callback(f, removed_cb, P(100)), 1, "the last one (the list's tail)");
    /* adding after removing the tail appends correctly */
    cr_assert_eq(conc_future_add_done_callback(f, removed_cb, P(1000)), 0);
    cr_assert_eq(conc_future_remove_done_callback(NULL, removed_cb, NULL), CONC_EINVAL);
    cr_assert_eq(conc_future_remove_done_callback(f, NULL, NULL), CONC_EINVAL);
    cr_assert_eq(conc_future_set_result(f, NULL), 0);
    cr_assert_eq(atomic_load(&removed_calls), 1010, "calls %d", atomic_load(&removed_calls));
    cr_assert_eq(conc_future_remove_done_callback(f, removed_cb, P(10)), 0, "ran already");
    freef(f);
}

/* Futures are recycled through per-thread caches and a shared depot of
 * batches: thousands alive at once, freed by another thread (whose cache
 * overflows into the depot and is handed back when the thread ends, a
 * partial batch included), come back as fresh futures. */
#define RECYCLE_N 3001
static conc_future_t *recycle_fs[RECYCLE_N];

static void *free_odd(void *arg)
{
    (void)arg;
    for (int i = 1; i < RECYCLE_N; i += 2)
        conc_future_free(recycle_fs[i]);
    return NULL;
}

Test(future, recycled_through_the_depot)
{
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < RECYCLE_N; i++) {
            conc_future_t *f;
            cr_assert_eq(conc_future_new(&f), 0);
            cr_assert_eq(conc_future_state(f), CONC_FUTURE_PENDING);
            cr_assert_not(conc_future_done(f));
            void *r = P(99);
            cr_assert_eq(conc_future_result(f, 0, &r), CONC_ETIMEDOUT);
            if (i % 3 == 0)
                cr_assert_eq(conc_future_set_exception(f, CONC_EBROKEN, "bad"), 0);
            else
                cr_assert_eq(conc_future_set_result(f, P(i + 1)), 0);
            recycle_fs[i] = f;
        }
        for (int i = 0; i < RECYCLE_N; i++) {
            void *r = NULL;
            int rc = conc_future_result(recycle_fs[i], CONC_FOREVER, &r);
            if (i % 3 == 0) {
                cr_assert_eq(rc, CONC_EFAILED);
            } else {
                cr_assert_eq(rc, 0);
                cr_assert_eq(r, P(i + 1));
            }
        }
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, free_odd, NULL), 0);
        cr_assert_eq(pthread_join(t, NULL), 0);
        for (int i = 0; i < RECYCLE_N; i += 2)
            conc_future_free(recycle_fs[i]);
    }
}
