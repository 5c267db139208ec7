/* conc_wait and conc_as_completed: the behaviours of CPython's
 * test_concurrent_futures test_wait.py and test_as_completed.py
 * (FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED, timeouts, duplicates,
 * already-done and cancelled futures, the pending-calls race; as_completed
 * order, timeouts, duplicates, references). As in CPython, a cancelled
 * future counts as done only once its executor was notified
 * (CANCELLED_AND_NOTIFIED); conc's choices: one deadline for the whole
 * call, an as_completed iterator that stays usable after CONC_ETIMEDOUT
 * and ends with CONC_EEOF. */
#include "test_util.h"

#define P(x) ((void *)(uintptr_t)(x))
#define U(p) ((uintptr_t)(p))

static conc_future_t *newf(void)
{
    conc_future_t *f = NULL;
    int rc = conc_future_new(&f);
    cr_assert_eq(rc, 0, "conc_future_new = %d", rc);
    return f;
}

static void freef(conc_future_t *f) { cr_assert_eq(conc_future_free(f), 0); }

/* Python's test futures */
static conc_future_t *successful(void)
{
    conc_future_t *f = newf();
    cr_assert_eq(conc_future_set_result(f, P(42)), 0);
    return f;
}
static conc_future_t *failed(void)
{
    conc_future_t *f = newf();
    cr_assert_eq(conc_future_set_exception(f, CONC_EFAILED, "an exception"), 0);
    return f;
}
static conc_future_t *cancelled(void)
{
    conc_future_t *f = newf();
    cr_assert(conc_future_cancel(f));
    return f;
}
static conc_future_t *cancelled_notified(void)
{
    conc_future_t *f = cancelled();
    cr_assert_eq(conc_future_set_running_or_notify_cancel(f), 0);
    return f;
}

static bool in_set(conc_future_t *const *s, size_t n, conc_future_t *f)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == f)
            return true;
    return false;
}

/* assert that set s (n entries, no repeats) equals the k futures in want */
static void assert_set(const char *what, conc_future_t *const *s, size_t n, conc_future_t *const *want, size_t k)
{
    cr_assert_eq(n, k, "%s has %zu futures, expected %zu", what, n, k);
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            cr_assert_neq(s[i], s[j], "%s lists a future twice", what);
    for (size_t i = 0; i < k; i++)
        cr_assert(in_set(s, n, want[i]), "%s misses future #%zu", what, i);
}

typedef struct {
    conc_future_t *done[16], *not_done[16];
    size_t nd, nn;
    int rc;
    double dt;
    double end; /* tu_now() when conc_wait returned */
} wres_t;

static void do_wait(wres_t *w, conc_future_t *const *fs, size_t n, double timeout, conc_return_when_t rw)
{
    memset(w, 0, sizeof *w);
    w->nd = w->nn = 999;
    double t = tu_now();
    w->rc = conc_wait(fs, n, timeout, rw, w->done, &w->nd, w->not_done, &w->nn);
    w->end = tu_now();
    w->dt = w->end - t;
}

/* complete futures from another thread after a delay */
typedef struct {
    conc_future_t *f[8];
    double at[8]; /* seconds after start */
    int code[8];  /* 0: set_result, <0: set_exception, 1: cancel and notify
                     (an executor dropping it), 2: cancel only */
    int n;
    double t0;
} completer_t;

static void completer_fn(void *p, int i)
{
    (void)i;
    completer_t *c = p;
    for (int k = 0; k < c->n; k++) {
        double wait = c->t0 + c->at[k] - tu_now();
        if (wait > 0)
            tu_sleep(wait);
        if (c->code[k] == 0)
            conc_future_set_result(c->f[k], P(k));
        else if (c->code[k] == 1)
            conc_future_cancel(c->f[k]), conc_future_set_running_or_notify_cancel(c->f[k]);
        else if (c->code[k] == 2)
            conc_future_cancel(c->f[k]);
        else
            conc_future_set_exception(c->f[k], c->code[k], "failed later");
    }
}

static void start_completer(tu_bunch_t *b, completer_t *c)
{
    c->t0 = tu_now();
    tu_bunch_start(b, 1, completer_fn, c);
}

/* ------------------------------------------------------------ bad input */

Test(wait, bad_arguments, .timeout = TU_TIMEOUT)
{
    conc_future_t *f = successful();
    conc_future_t *fs[2] = {f, NULL};
    conc_future_t *d[2], *nd[2];
    size_t a, b;
    cr_assert_eq(conc_wait(NULL, 1, 0, CONC_ALL_COMPLETED, d, &a, nd, &b), CONC_EINVAL);
    cr_assert_eq(conc_wait(fs, 2, 0, CONC_ALL_COMPLETED, d, &a, nd, &b), CONC_EINVAL, "a NULL future in fs");
    cr_assert_eq(conc_wait(fs, 1, NAN, CONC_ALL_COMPLETED, d, &a, nd, &b), CONC_EINVAL);
    cr_assert_eq(conc_wait(fs, 1, 0, (conc_return_when_t)3, d, &a, nd, &b), CONC_EINVAL);
    cr_assert_eq(conc_wait(fs, 1, 0, (conc_return_when_t)-1, d, &a, nd, &b), CONC_EINVAL);
    /* output sets are optional */
    cr_assert_eq(conc_wait(fs, 1, 0, CONC_ALL_COMPLETED, NULL, NULL, NULL, NULL), 0);
    cr_assert_eq(conc_wait(fs, 1, 0, CONC_ALL_COMPLETED, NULL, &a, NULL, &b), 0);
    cr_assert_eq(a, 1);
    cr_assert_eq(b, 0);

    conc_as_completed_t *it = NULL;
    conc_future_t *got;
    cr_assert_eq(conc_as_completed_new(NULL, fs, 1, 0), CONC_EINVAL);
    cr_assert_eq(conc_as_completed_new(&it, NULL, 1, 0), CONC_EINVAL);
    cr_assert_eq(conc_as_completed_new(&it, fs, 2, 0), CONC_EINVAL, "a NULL future in fs");
    cr_assert_eq(conc_as_completed_new(&it, fs, 1, NAN), CONC_EINVAL);
    cr_assert_null(it);
    cr_assert_eq(conc_as_completed_next(NULL, &got), CONC_EINVAL);
    cr_assert_eq(conc_as_completed_free(NULL), CONC_EINVAL);
    cr_assert_eq(conc_as_completed_new(&it, fs, 1, CONC_FOREVER), 0);
    cr_assert_eq(conc_as_completed_next(it, NULL), CONC_EINVAL);
    cr_assert_eq(conc_as_completed_next(it, &got), 0);
    cr_assert_eq(got, f);
    cr_assert_eq(conc_as_completed_free(it), 0);
    freef(f);
}

Test(wait, empty_sets, .timeout = TU_TIMEOUT)
{
    /* wait([]) returns two empty sets; as_completed([]) yields nothing */
    conc_future_t *d[1], *nd[1];
    size_t a = 7, b = 7;
    double t = tu_now();
    int rc = conc_wait(NULL, 0, CONC_FOREVER, CONC_ALL_COMPLETED, d, &a, nd, &b);
    cr_assert(rc == 0 || rc == CONC_EINVAL, "wait on 0 futures = %d", rc);
    if (rc == 0) {
        cr_assert_eq(a, 0);
        cr_assert_eq(b, 0);
    }
    rc = conc_wait(NULL, 0, CONC_FOREVER, CONC_FIRST_COMPLETED, d, &a, nd, &b);
    cr_assert(rc == 0 || rc == CONC_EINVAL, "wait on 0 futures = %d", rc);
    cr_assert_lt(tu_now() - t, 5.0, "wait on no futures blocked");
    conc_as_completed_t *it = NULL;
    rc = conc_as_completed_new(&it, NULL, 0, CONC_FOREVER);
    cr_assert(rc == 0 || rc == CONC_EINVAL, "as_completed of 0 futures = %d", rc);
    if (rc == 0) {
        conc_future_t *got;
        cr_assert_eq(conc_as_completed_next(it, &got), CONC_EEOF);
        cr_assert_eq(conc_as_completed_free(it), 0);
    }
    cr_assert_lt(tu_now() - t, 5.0);
}

/* ------------------------------------------------------------------ wait */

Test(wait, first_completed, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static completer_t c;
    conc_future_t *f1 = newf(), *f2 = newf();
    memset(&c, 0, sizeof c);
    c.f[0] = f1;
    c.at[0] = 0.1;
    c.n = 1;
    start_completer(&b, &c);
    conc_future_t *fs[2] = {f1, f2};
    wres_t w;
    do_wait(&w, fs, 2, CONC_FOREVER, CONC_FIRST_COMPLETED);
    tu_bunch_join(&b);
    cr_assert_eq(w.rc, 0);
    assert_set("done", w.done, w.nd, (conc_future_t *[]){f1}, 1);
    assert_set("not_done", w.not_done, w.nn, (conc_future_t *[]){f2}, 1);
    cr_assert_geq(w.end - c.t0, 0.1 - TU_EPS, "returned before anything completed");
    freef(f1);
    freef(f2);
}

Test(wait, first_completed_some_already_completed, .timeout = TU_TIMEOUT)
{
    conc_future_t *cn = cancelled_notified(), *ok = successful(), *c = cancelled(), *p = newf();
    conc_future_t *fs[4] = {cn, ok, c, p};
    wres_t w;
    do_wait(&w, fs, 4, CONC_FOREVER, CONC_FIRST_COMPLETED);
    cr_assert_eq(w.rc, 0);
    cr_assert_lt(w.dt, 5.0);
    /* cancelled but not notified: not done yet (CPython's CANCELLED) */
    assert_set("done", w.done, w.nd, (conc_future_t *[]){cn, ok}, 2);
    assert_set("not_done", w.not_done, w.nn, (conc_future_t *[]){c, p}, 2);
    for (int i = 0; i < 4; i++)
        freef(fs[i]);
}

Test(wait, cancellation_completes_first_completed, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static completer_t c;
    conc_future_t *f1 = newf(), *f2 = newf();
    memset(&c, 0, sizeof c);
    c.f[0] = f2;
    c.at[0] = 0.1;
    c.code[0] = 1; /* cancel */
    c.n = 1;
    start_completer(&b, &c);
    conc_future_t *fs[2] = {f1, f2};
    wres_t w;
    do_wait(&w, fs, 2, 30, CONC_FIRST_COMPLETED);
    tu_bunch_join(&b);
    cr_assert_eq(w.rc, 0);
    cr_assert_lt(w.dt, 20.0, "a cancellation did not wake wait(FIRST_COMPLETED)");
    assert_set("done", w.done, w.nd, (conc_future_t *[]){f2}, 1);
    assert_set("not_done", w.not_done, w.nn, (conc_future_t *[]){f1}, 1);
    freef(f1);
    freef(f2);
}

/* CPython: cancel() alone wakes result() but not wait()/as_completed; the
 * executor's set_running_or_notify_cancel does (CANCELLED_AND_NOTIFIED). */
Test(wait, cancel_without_notify_is_not_done, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static completer_t c;
    conc_future_t *f1 = newf(), *f2 = newf();
    memset(&c, 0, sizeof c);
    c.f[0] = f2;
    c.at[0] = 0.05;
    c.code[0] = 2; /* cancel only */
    c.n = 1;
    start_completer(&b, &c);
    conc_future_t *fs[2] = {f1, f2};
    wres_t w;
    do_wait(&w, fs, 2, 0.3, CONC_FIRST_COMPLETED);
    tu_bunch_join(&b);
    cr_assert_eq(w.rc, 0);
    tu_assert_timeout(w.dt, 0.3);
    cr_assert(conc_future_cancelled(f2) && conc_future_done(f2), "cancelled() and done() are true");
    assert_set("not_done", w.not_done, w.nn, (conc_future_t *[]){f1, f2}, 2);
    do_wait(&w, fs, 2, 0.1, CONC_ALL_COMPLETED);
    cr_assert_eq(w.nn, 2, "ALL_COMPLETED counted a cancelled, not notified future");
    /* result() sees the cancellation at once */
    cr_assert_eq(conc_future_result(f2, 0, NULL), CONC_ECANCELLED);
    /* the executor's notification makes it done for wait() */
    cr_assert_eq(conc_future_set_running_or_notify_cancel(f2), 0);
    cr_assert_eq(conc_future_set_running_or_notify_cancel(f2), CONC_EPERM,
                 "a second set_running_or_notify_cancel on a cancelled future");
    do_wait(&w, fs, 2, 5, CONC_FIRST_COMPLETED);
    assert_set("done", w.done, w.nd, (conc_future_t *[]){f2}, 1);
    /* as_completed: cancelled-not-notified is yielded only once notified */
    conc_future_t *f3 = newf();
    cr_assert(conc_future_cancel(f3));
    conc_as_completed_t *it;
    cr_assert_eq(conc_as_completed_new(&it, &f3, 1, 0.1), 0);
    conc_future_t *got = NULL;
    cr_assert_eq(conc_as_completed_next(it, &got), CONC_ETIMEDOUT, "yielded a cancelled, not notified future");
    conc_as_completed_free(it);
    cr_assert_eq(conc_as_completed_new(&it, &f3, 1, 5), 0);
    cr_assert_eq(conc_future_set_running_or_notify_cancel(f3), 0);
    cr_assert_eq(conc_as_completed_next(it, &got), 0);
    cr_assert_eq(got, f3);
    cr_assert_eq(conc_as_completed_next(it, &got), CONC_EEOF);
    conc_as_completed_free(it);
    freef(f1);
    freef(f2);
    freef(f3);
}

Test(wait, first_exception, .timeout = TU_TIMEOUT)
{
    /* f1 succeeds, then f2 fails; f3 never completes */
    static tu_bunch_t b;
    static completer_t c;
    conc_future_t *f1 = newf(), *f2 = newf(), *f3 = newf();
    memset(&c, 0, sizeof c);
    c.f[0] = f1;
    c.at[0] = 0.05;
    c.f[1] = f2;
    c.at[1] = 0.15;
    c.code[1] = CONC_EEOF;
    c.n = 2;
    start_completer(&b, &c);
    conc_future_t *fs[3] = {f1, f2, f3};
    wres_t w;
    do_wait(&w, fs, 3, 30, CONC_FIRST_EXCEPTION);
    tu_bunch_join(&b);
    cr_assert_eq(w.rc, 0);
    cr_assert_lt(w.dt, 20.0, "wait(FIRST_EXCEPTION) not woken by a failure");
    cr_assert_geq(w.end - c.t0, 0.15 - TU_EPS, "wait(FIRST_EXCEPTION) returned at the first success");
    assert_set("done", w.done, w.nd, (conc_future_t *[]){f1, f2}, 2);
    assert_set("not_done", w.not_done, w.nn, (conc_future_t *[]){f3}, 1);
    freef(f1);
    freef(f2);
    freef(f3);
}

Test(wait, first_exception_some_already_complete, .timeout = TU_TIMEOUT)
{
    conc_future_t *ok = successful(), *c = cancelled(), *cn = cancelled_notified(), *bad = failed(),
                  *p = newf();
    conc_future_t *fs[5] = {ok, c, cn, bad, p};
    wres_t w;
    do_wait(&w, fs, 5, CONC_FOREVER, CONC_FIRST_EXCEPTION);
    cr_assert_eq(w.rc, 0);
    cr_assert_lt(w.dt, 5.0);
    assert_set("done", w.done, w.nd, (conc_future_t *[]){ok, cn, bad}, 3);
    assert_set("not_done", w.not_done, w.nn, (conc_future_t *[]){c, p}, 2);
    for (int i = 0; i < 5; i++)
        freef(fs[i]);
}

Test(wait, first_exception_not_ended_by_success_or_cancel, .timeout = TU_TIMEOUT)
{
    /* FIRST_EXCEPTION returns on a future that "finishes by raising"; a
     * success or a cancellation does not end it (CancelledError is not the
     * future's exception in Python's wait) */
    conc_future_t *ok = successful(), *c = cancelled_notified(), *p = newf();
    conc_future_t *fs[3] = {ok, c, p};
    wres_t w;
    do_wait(&w, fs, 3, 0.2, CONC_FIRST_EXCEPTION);
    cr_assert_eq(w.rc, 0, "a timed-out wait returns 0 with the two sets");
    tu_assert_timeout(w.dt, 0.2);
    assert_set("done", w.done, w.nd, (conc_future_t *[]){ok, c}, 2);
    assert_set("not_done", w.not_done, w.nn, (conc_future_t *[]){p}, 1);
    /* with no failure at all it is ALL_COMPLETED */
    cr_assert_eq(conc_future_set_result(p, NULL), 0);
    do_wait(&w, fs, 3, 5, CONC_FIRST_EXCEPTION);
    cr_assert_eq(w.rc, 0);
    cr_assert_eq(w.nd, 3);
    cr_assert_eq(w.nn, 0);
    for (int i = 0; i < 3; i++)
        freef(fs[i]);
}

Test(wait, all_completed, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static completer_t c;
    conc_future_t *ok = successful(), *cn = cancelled_notified(), *bad = failed();
    conc_future_t *f1 = newf(), *f2 = newf();
    memset(&c, 0, sizeof c);
    c.f[0] = f1;
    c.at[0] = 0.05;
    c.code[0] = CONC_ERANGE;
    c.f[1] = f2;
    c.at[1] = 0.15;
    c.n = 2;
    start_completer(&b, &c);
    conc_future_t *fs[5] = {ok, cn, bad, f1, f2};
    wres_t w;
    do_wait(&w, fs, 5, CONC_FOREVER, CONC_ALL_COMPLETED);
    cr_assert(conc_future_done(f2), "ALL_COMPLETED returned before the last future was done");
    tu_bunch_join(&b);
    cr_assert_eq(w.rc, 0);
    assert_set("done", w.done, w.nd, fs, 5);
    cr_assert_eq(w.nn, 0);
    for (int i = 0; i < 5; i++)
        freef(fs[i]);
}

Test(wait, timeout_returns_both_sets, .timeout = TU_TIMEOUT)
{
    conc_future_t *cn = cancelled_notified(), *bad = failed(), *ok = successful(), *p = newf();
    conc_future_t *fs[4] = {cn, bad, ok, p};
    wres_t w;
    do_wait(&w, fs, 4, 0.2, CONC_ALL_COMPLETED);
    cr_assert_eq(w.rc, 0);
    tu_assert_timeout(w.dt, 0.2);
    assert_set("done", w.done, w.nd, (conc_future_t *[]){cn, bad, ok}, 3);
    assert_set("not_done", w.not_done, w.nn, (conc_future_t *[]){p}, 1);
    /* FIRST_COMPLETED over pending futures only, with a timeout */
    conc_future_t *q = newf();
    conc_future_t *ps[2] = {p, q};
    do_wait(&w, ps, 2, 0.15, CONC_FIRST_COMPLETED);
    cr_assert_eq(w.rc, 0);
    tu_assert_timeout(w.dt, 0.15);
    cr_assert_eq(w.nd, 0);
    assert_set("not_done", w.not_done, w.nn, ps, 2);
    /* timeout 0 does not block */
    do_wait(&w, fs, 4, 0, CONC_ALL_COMPLETED);
    cr_assert_eq(w.rc, 0);
    cr_assert_lt(w.dt, 1.0);
    cr_assert_eq(w.nd, 3);
    cr_assert_eq(w.nn, 1);
    freef(q);
    for (int i = 0; i < 4; i++)
        freef(fs[i]);
}

Test(wait, one_deadline_for_the_whole_call, .timeout = TU_TIMEOUT)
{
    /* completions keep arriving before the timeout; the call must still
     * end at the original deadline, not restart its timeout each time */
    static tu_bunch_t b;
    static completer_t c;
    conc_future_t *fs[4];
    memset(&c, 0, sizeof c);
    for (int i = 0; i < 4; i++)
        fs[i] = newf();
    for (int i = 0; i < 3; i++) {
        c.f[i] = fs[i];
        c.at[i] = 0.5 * (i + 1); /* 0.5, 1.0, 1.5 */
    }
    c.n = 3;
    start_completer(&b, &c);
    wres_t w;
    do_wait(&w, fs, 4, 2.0, CONC_ALL_COMPLETED);
    tu_bunch_join(&b);
    cr_assert_eq(w.rc, 0);
    cr_assert_geq(w.dt, 2.0 - TU_EPS);
    cr_assert_lt(w.dt, 3.3, "wait took %.2fs for a 2s timeout: the timeout restarted", w.dt);
    cr_assert_eq(w.nd, 3);
    assert_set("not_done", w.not_done, w.nn, (conc_future_t *[]){fs[3]}, 1);
    for (int i = 0; i < 4; i++)
        freef(fs[i]);
}

Test(wait, duplicates_collapse, .timeout = TU_TIMEOUT)
{
    /* bpo-20369 */
    conc_future_t *f = successful(), *p = newf();
    conc_future_t *fs[5] = {f, f, p, f, p};
    wres_t w;
    do_wait(&w, fs, 2, CONC_FOREVER, CONC_ALL_COMPLETED);
    cr_assert_eq(w.rc, 0);
    assert_set("done", w.done, w.nd, (conc_future_t *[]){f}, 1);
    cr_assert_eq(w.nn, 0);
    do_wait(&w, fs, 5, 0.05, CONC_ALL_COMPLETED);
    cr_assert_eq(w.rc, 0);
    assert_set("done", w.done, w.nd, (conc_future_t *[]){f}, 1);
    assert_set("not_done", w.not_done, w.nn, (conc_future_t *[]){p}, 1);
    do_wait(&w, fs, 5, 0, CONC_FIRST_COMPLETED);
    assert_set("done", w.done, w.nd, (conc_future_t *[]){f}, 1);
    assert_set("not_done", w.not_done, w.nn, (conc_future_t *[]){p}, 1);
    freef(f);
    freef(p);
}

static void *go_task(void *arg)
{
    atomic_int *go = arg;
    double dl = tu_now() + 20;
    while (!atomic_load(go) && tu_now() < dl)
        tu_sleep(0.0005);
    return NULL;
}

Test(wait, on_pool_futures, .timeout = TU_TIMEOUT)
{
    /* test_pending_calls_race: 100 futures released at once, ALL_COMPLETED */
    conc_executor_t *ex;
    conc_thread_pool_opts_t o = {.max_workers = 4};
    cr_assert_eq(conc_thread_pool_new(&ex, &o), 0);
    enum { N = 100 };
    conc_future_t *fs[N];
    static atomic_int go;
    atomic_store(&go, 0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(conc_submit(ex, &fs[i], go_task, &go), 0);
    atomic_store(&go, 1);
    static conc_future_t *done[N], *nd[N];
    size_t a, b;
    cr_assert_eq(conc_wait(fs, N, 30, CONC_ALL_COMPLETED, done, &a, nd, &b), 0);
    cr_assert_eq(a, N);
    cr_assert_eq(b, 0);
    for (int i = 0; i < N; i++) {
        cr_assert(conc_future_done(fs[i]));
        freef(fs[i]);
    }
    cr_assert_eq(conc_executor_free(ex), 0);
}

/* ---------------------------------------------------------- as_completed */

static conc_as_completed_t *ac_new(conc_future_t *const *fs, size_t n, double timeout)
{
    conc_as_completed_t *it = NULL;
    int rc = conc_as_completed_new(&it, fs, n, timeout);
    cr_assert_eq(rc, 0, "conc_as_completed_new = %d", rc);
    cr_assert_not_null(it);
    return it;
}

Test(as_completed, already_done_first_then_in_completion_order, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static completer_t c;
    conc_future_t *p0 = newf(), *p1 = newf(), *p2 = newf();
    conc_future_t *ok = successful(), *bad = failed(), *cn = cancelled_notified();
    conc_future_t *fs[6] = {p0, ok, p1, bad, p2, cn};
    conc_as_completed_t *it = ac_new(fs, 6, CONC_FOREVER);
    conc_future_t *got[6];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_as_completed_next(it, &got[i]), 0);
    assert_set("first three yielded", got, 3, (conc_future_t *[]){ok, bad, cn}, 3);
    /* the rest in the order they complete: p2, p0, p1 */
    memset(&c, 0, sizeof c);
    c.f[0] = p2;
    c.at[0] = 0.05;
    c.f[1] = p0;
    c.at[1] = 0.25;
    c.code[1] = CONC_EEOF;
    c.f[2] = p1;
    c.at[2] = 0.45;
    c.code[2] = 1;
    c.n = 3;
    start_completer(&b, &c);
    for (int i = 3; i < 6; i++)
        cr_assert_eq(conc_as_completed_next(it, &got[i]), 0);
    tu_bunch_join(&b);
    cr_assert_eq(got[3], p2);
    cr_assert_eq(got[4], p0);
    cr_assert_eq(got[5], p1);
    conc_future_t *x = P(1);
    cr_assert_eq(conc_as_completed_next(it, &x), CONC_EEOF);
    cr_assert_eq(conc_as_completed_next(it, &x), CONC_EEOF, "EEOF is not sticky");
    cr_assert_eq(conc_as_completed_free(it), 0);
    for (int i = 0; i < 6; i++)
        freef(fs[i]);
}

Test(as_completed, timeout_at_the_deadline_and_iterator_usable, .timeout = TU_TIMEOUT)
{
    conc_future_t *ok = successful(), *p = newf(), *q = newf();
    conc_future_t *fs[3] = {ok, p, q};
    double t0 = tu_now();
    conc_as_completed_t *it = ac_new(fs, 3, 0.3);
    conc_future_t *got = NULL;
    tu_sleep(0.1);
    cr_assert_eq(conc_as_completed_next(it, &got), 0);
    cr_assert_eq(got, ok);
    /* one deadline from the call that made the iterator */
    cr_assert_eq(conc_as_completed_next(it, &got), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t0, 0.3);
    /* past the deadline: still ETIMEDOUT without blocking */
    double t = tu_now();
    cr_assert_eq(conc_as_completed_next(it, &got), CONC_ETIMEDOUT);
    cr_assert_lt(tu_now() - t, 1.0);
    /* the iterator stays usable: futures done by now are still yielded */
    cr_assert_eq(conc_future_set_result(q, NULL), 0);
    cr_assert_eq(conc_as_completed_next(it, &got), 0, "a done future was not yielded after a timeout");
    cr_assert_eq(got, q);
    cr_assert_eq(conc_as_completed_next(it, &got), CONC_ETIMEDOUT);
    cr_assert_eq(conc_future_set_result(p, NULL), 0);
    cr_assert_eq(conc_as_completed_next(it, &got), 0);
    cr_assert_eq(got, p);
    cr_assert_eq(conc_as_completed_next(it, &got), CONC_EEOF);
    cr_assert_eq(conc_as_completed_free(it), 0);
    for (int i = 0; i < 3; i++)
        freef(fs[i]);
}

Test(as_completed, zero_timeout, .timeout = TU_TIMEOUT)
{
    conc_future_t *ok = successful(), *p = newf();
    conc_future_t *fs[2] = {p, ok};
    conc_as_completed_t *it = ac_new(fs, 2, 0);
    conc_future_t *got;
    double t = tu_now();
    cr_assert_eq(conc_as_completed_next(it, &got), 0);
    cr_assert_eq(got, ok);
    cr_assert_eq(conc_as_completed_next(it, &got), CONC_ETIMEDOUT);
    cr_assert_lt(tu_now() - t, 1.0);
    cr_assert_eq(conc_as_completed_free(it), 0);
    freef(p);
    freef(ok);
}

Test(as_completed, duplicates_yielded_once, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static completer_t c;
    conc_future_t *ok = successful(), *p = newf();
    conc_future_t *fs[6] = {ok, p, ok, p, p, ok};
    conc_as_completed_t *it = ac_new(fs, 6, 30);
    memset(&c, 0, sizeof c);
    c.f[0] = p;
    c.at[0] = 0.05;
    c.n = 1;
    start_completer(&b, &c);
    conc_future_t *got[2];
    cr_assert_eq(conc_as_completed_next(it, &got[0]), 0);
    cr_assert_eq(conc_as_completed_next(it, &got[1]), 0);
    tu_bunch_join(&b);
    cr_assert_eq(got[0], ok);
    cr_assert_eq(got[1], p);
    conc_future_t *x;
    cr_assert_eq(conc_as_completed_next(it, &x), CONC_EEOF, "a duplicate was yielded twice");
    cr_assert_eq(conc_as_completed_free(it), 0);
    freef(ok);
    freef(p);
}

Test(as_completed, free_iterator_early, .timeout = TU_TIMEOUT)
{
    /* dropping the iterator with futures still pending, then completing
     * them, must not touch the freed iterator */
    conc_future_t *fs[4];
    for (int i = 0; i < 4; i++)
        fs[i] = newf();
    conc_as_completed_t *it = ac_new(fs, 4, CONC_FOREVER);
    cr_assert_eq(conc_future_set_result(fs[0], NULL), 0);
    conc_future_t *got;
    cr_assert_eq(conc_as_completed_next(it, &got), 0);
    cr_assert_eq(conc_as_completed_free(it), 0);
    cr_assert_eq(conc_future_set_result(fs[1], NULL), 0);
    cr_assert(conc_future_cancel(fs[2]));
    cr_assert_eq(conc_future_set_exception(fs[3], CONC_EEOF, NULL), 0);
    /* and a wait after a timed-out wait */
    conc_future_t *p = newf();
    conc_future_t *ps[1] = {p};
    cr_assert_eq(conc_wait(ps, 1, 0.01, CONC_ALL_COMPLETED, NULL, NULL, NULL, NULL), 0);
    cr_assert_eq(conc_future_set_result(p, NULL), 0);
    freef(p);
    for (int i = 0; i < 4; i++)
        freef(fs[i]);
}

static void *ident_task(void *arg) { return arg; }

Test(as_completed, iterator_keeps_yielded_futures_alive, .timeout = TU_TIMEOUT)
{
    /* the caller drops its references after making the iterator; the
     * futures handed out stay valid while the iterator lives */
    conc_executor_t *ex;
    conc_thread_pool_opts_t o = {.max_workers = 2};
    cr_assert_eq(conc_thread_pool_new(&ex, &o), 0);
    enum { N = 20 };
    conc_future_t *fs[N];
    for (int i = 0; i < N; i++)
        cr_assert_eq(conc_submit(ex, &fs[i], ident_task, P(i + 1)), 0);
    conc_as_completed_t *it = ac_new(fs, N, 30);
    for (int i = 0; i < N; i++)
        freef(fs[i]);
    bool seen[N + 1] = {false};
    for (int i = 0; i < N; i++) {
        conc_future_t *got;
        cr_assert_eq(conc_as_completed_next(it, &got), 0);
        void *r = NULL;
        cr_assert_eq(conc_future_result(got, 0, &r), 0);
        cr_assert(U(r) >= 1 && U(r) <= N);
        cr_assert_not(seen[U(r)], "future %lu yielded twice", (unsigned long)U(r));
        seen[U(r)] = true;
    }
    conc_future_t *got;
    cr_assert_eq(conc_as_completed_next(it, &got), CONC_EEOF);
    cr_assert_eq(conc_as_completed_free(it), 0);
    cr_assert_eq(conc_executor_free(ex), 0);
}

Test(as_completed, free_iterator_then_drop_pending_future, .timeout = TU_TIMEOUT)
{
    /* give up on a future that never completes: free the iterator, then
     * the future; nothing may leak (checked by LeakSanitizer) */
    conc_future_t *p = newf();
    conc_future_t *fs[1] = {p};
    conc_as_completed_t *it = ac_new(fs, 1, 0.01);
    conc_future_t *got;
    cr_assert_eq(conc_as_completed_next(it, &got), CONC_ETIMEDOUT);
    cr_assert_eq(conc_as_completed_free(it), 0);
    freef(p);
}

/* Issue 12: an as_completed iterator freed before its futures complete
 * removes its callbacks. 100,000 abandoned iterators on one long-lived
 * future leave no memory behind, and completing it afterwards runs only
 * the callbacks still registered. */
#include <malloc.h>
#if TU_SANITIZED
/* the sanitizers' allocator (freed memory sits in quarantine: not counted) */
size_t __sanitizer_get_current_allocated_bytes(void);
static size_t heap_in_use(void) { return __sanitizer_get_current_allocated_bytes(); }
#else
static size_t heap_in_use(void) { return mallinfo2().uordblks; }
#endif

static atomic_int late_calls;
static void late_cb(conc_future_t *f, void *arg)
{
    (void)f;
    (void)arg;
    atomic_fetch_add(&late_calls, 1);
}

Test(as_completed, abandoned_iterators_leave_nothing, .timeout = TU_TIMEOUT)
{
    conc_future_t *lived = newf(), *other = successful();
    conc_future_t *fs[2] = {lived, other};
    /* warm up (caches, the first iterator's allocations) */
    for (int i = 0; i < 100; i++) {
        conc_as_completed_t *it = ac_new(fs, 2, CONC_FOREVER);
        cr_assert_eq(conc_as_completed_free(it), 0);
    }
    size_t before = heap_in_use();
    enum { N = 100000 };
    for (int i = 0; i < N; i++) {
        conc_as_completed_t *it = ac_new(fs, 2, CONC_FOREVER);
        if (i % 2) { /* some take what is done first */
            conc_future_t *got;
            cr_assert_eq(conc_as_completed_next(it, &got), 0);
        }
        cr_assert_eq(conc_as_completed_free(it), 0);
    }
    size_t after = heap_in_use();
    long grew = (long)after - (long)before;
    cr_assert_lt(grew, 256 * 1024, "100,000 abandoned iterators kept %ld bytes", grew);
    /* the future still works, and its own callbacks still run */
    atomic_store(&late_calls, 0);
    cr_assert_eq(conc_future_add_done_callback(lived, late_cb, NULL), 0);
    conc_as_completed_t *live = ac_new(fs, 2, 10);
    cr_assert_eq(conc_future_set_result(lived, P(7)), 0);
    cr_assert_eq(atomic_load(&late_calls), 1);
    conc_future_t *got[2];
    cr_assert_eq(conc_as_completed_next(live, &got[0]), 0);
    cr_assert_eq(conc_as_completed_next(live, &got[1]), 0);
    cr_assert(got[0] != got[1]);
    cr_assert_eq(conc_as_completed_free(live), 0);
    freef(lived);
    freef(other);
}
