/* conc_barrier_t: CPython's lock_tests.BarrierTests, plus indices over many
 * cycles, the action, a failing action, default timeouts and bad inputs. */
#include "test_util.h"
#include <limits.h>

#define N 5

typedef struct {
    conc_barrier_t b, b2;
    atomic_int r0, r1, r2, r3;
    atomic_int errors;
    atomic_int first_error;
    atomic_int action_runs;
    atomic_int fail_at; /* cycle whose action fails, -1 none */
    long passes;
    double timeout;
    double times[TU_MAX_BUNCH];
    atomic_int res[TU_MAX_BUNCH];
    atomic_uint *masks;
} ctx_t;

static void err(ctx_t *x, int what)
{
    if (atomic_fetch_add(&x->errors, 1) == 0)
        atomic_store(&x->first_error, what);
}

static void reset_ctx(ctx_t *x)
{
    memset(x, 0, sizeof *x);
    atomic_store(&x->fail_at, -1);
}

#define ASSERT_NO_ERRORS(x)                                                              \
    cr_assert_eq(atomic_load(&(x)->errors), 0, "%d errors in threads, first: %d",         \
                 atomic_load(&(x)->errors), atomic_load(&(x)->first_error))

Test(barrier, bad_inputs, .timeout = TU_TIMEOUT)
{
    conc_barrier_t b;
    cr_assert_eq(conc_barrier_init(NULL, 2, NULL, NULL, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc_barrier_init(&b, 0, NULL, NULL, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc_barrier_init(&b, -1, NULL, NULL, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc_barrier_init(&b, INT_MIN, NULL, NULL, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc_barrier_init(&b, 2, NULL, NULL, NAN), CONC_EINVAL);
    cr_assert_eq(conc_barrier_wait(NULL, CONC_FOREVER, NULL), CONC_EINVAL);
    cr_assert_eq(conc_barrier_reset(NULL), CONC_EINVAL);
    cr_assert_eq(conc_barrier_abort(NULL), CONC_EINVAL);
    cr_assert_not(conc_barrier_broken(NULL));

    cr_assert_eq(conc_barrier_init(&b, 2, NULL, NULL, CONC_FOREVER), 0);
    cr_assert_eq(conc_barrier_parties(&b), 2);
    int idx = 77;
    cr_assert_eq(conc_barrier_wait(&b, NAN, &idx), CONC_EINVAL);
    cr_assert_eq(idx, 77);
    cr_assert_eq(conc_barrier_n_waiting(&b), 0, "an invalid wait was counted");
    cr_assert_not(conc_barrier_broken(&b), "an invalid wait broke the barrier");
    cr_assert_eq(conc_barrier_init(&b, 1, NULL, NULL, 1e300), 0); /* huge default clamps */
    cr_assert_eq(conc_barrier_wait(&b, CONC_BARRIER_DEFAULT, NULL), 0);
}

Test(barrier, single_thread, .timeout = TU_TIMEOUT)
{
    conc_barrier_t b;
    cr_assert_eq(conc_barrier_init(&b, 1, NULL, NULL, CONC_FOREVER), 0);
    int idx = -1;
    cr_assert_eq(conc_barrier_wait(&b, CONC_FOREVER, &idx), 0);
    cr_assert_eq(idx, 0);
    idx = -1;
    cr_assert_eq(conc_barrier_wait(&b, 0, &idx), 0);
    cr_assert_eq(idx, 0);
    cr_assert_eq(conc_barrier_wait(&b, CONC_BARRIER_DEFAULT, NULL), 0);
    cr_assert_eq(conc_barrier_n_waiting(&b), 0);
    cr_assert_not(conc_barrier_broken(&b));
}

/* ---- lockstep passes (test_barrier / test_barrier_10) */

static void multipass_fn(void *p, int i)
{
    (void)i;
    ctx_t *x = p;
    for (long k = 0; k < x->passes; k++) {
        atomic_fetch_add(&x->r0, 1);
        if (atomic_load(&x->r1) != k * N)
            err(x, 1);
        if (conc_barrier_wait(&x->b, CONC_BARRIER_DEFAULT, NULL) != 0)
            err(x, 2);
        atomic_fetch_add(&x->r1, 1);
        if (atomic_load(&x->r0) != (k + 1) * N)
            err(x, 3);
        if (conc_barrier_wait(&x->b, CONC_BARRIER_DEFAULT, NULL) != 0)
            err(x, 4);
    }
}

Test(barrier, lockstep, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    long passes[] = {1, 10, 200};
    for (int k = 0; k < 3; k++) {
        reset_ctx(&x);
        x.passes = passes[k];
        cr_assert_eq(conc_barrier_init(&x.b, N, NULL, NULL, 10.0), 0);
        cr_assert_eq(conc_barrier_parties(&x.b), N);
        tu_run_threads(N, multipass_fn, &x);
        ASSERT_NO_ERRORS(&x);
        cr_assert_eq(conc_barrier_n_waiting(&x.b), 0);
        cr_assert_not(conc_barrier_broken(&x.b));
    }
}

/* ---- unique indices 0..N-1 in every cycle, and the action once per cycle */

static void action_fn(void *p)
{
    ctx_t *x = p;
    int run = atomic_fetch_add(&x->action_runs, 1);
    if (run == atomic_load(&x->fail_at))
        conc_fail(CONC_EINVAL, "action failed in cycle %d", run);
}

static void indices_fn(void *p, int i)
{
    (void)i;
    ctx_t *x = p;
    for (long c = 0; c < x->passes; c++) {
        int idx = -1;
        int rc = conc_barrier_wait(&x->b, CONC_FOREVER, &idx);
        if (rc != 0) {
            err(x, 10 + rc);
            return;
        }
        if (idx < 0 || idx >= N) {
            err(x, 20);
            continue;
        }
        unsigned old = atomic_fetch_or(&x->masks[c], 1u << idx);
        if (old & (1u << idx))
            err(x, 21); /* two threads got the same index this cycle */
        /* the action ran exactly once for this cycle, before the release */
        if (atomic_load(&x->action_runs) != c + 1)
            err(x, 22);
    }
}

Test(barrier, unique_indices_and_action_each_cycle, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    reset_ctx(&x);
    x.passes = tu_iters(3000);
    x.masks = calloc((size_t)x.passes, sizeof *x.masks);
    cr_assert_not_null(x.masks);
    cr_assert_eq(conc_barrier_init(&x.b, N, action_fn, &x, CONC_FOREVER), 0);
    tu_run_threads(N, indices_fn, &x);
    ASSERT_NO_ERRORS(&x);
    cr_assert_eq(atomic_load(&x.action_runs), x.passes);
    for (long c = 0; c < x.passes; c++)
        cr_assert_eq(atomic_load(&x.masks[c]), (1u << N) - 1, "cycle %ld: indices %#x", c,
                     atomic_load(&x.masks[c]));
    free(x.masks);
}

static void wait_return_fn(void *p, int i)
{
    ctx_t *x = p;
    int idx = -1;
    atomic_store(&x->res[i], conc_barrier_wait(&x->b, CONC_BARRIER_DEFAULT, &idx));
    atomic_fetch_add(&x->r0, idx);
}

Test(barrier, wait_return_sum, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    reset_ctx(&x);
    cr_assert_eq(conc_barrier_init(&x.b, N, NULL, NULL, 2.0), 0);
    tu_run_threads(N, wait_return_fn, &x);
    for (int i = 0; i < N; i++)
        cr_assert_eq(atomic_load(&x.res[i]), 0);
    cr_assert_eq(atomic_load(&x.r0), N * (N - 1) / 2);
}

/* ---- a failing action breaks the barrier for everyone */

static void fail_action_fn(void *p, int i)
{
    ctx_t *x = p;
    int rc = 0;
    long c;
    for (c = 0; c < x->passes && rc == 0; c++)
        rc = conc_barrier_wait(&x->b, 10.0, NULL);
    atomic_store(&x->res[i], rc);
    x->times[i] = (double)c;
    conc_fail_clear();
}

Test(barrier, failing_action_breaks_it, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    reset_ctx(&x);
    x.passes = 10;
    atomic_store(&x.fail_at, 3); /* the 4th cycle's action fails */
    cr_assert_eq(conc_barrier_init(&x.b, N, action_fn, &x, CONC_FOREVER), 0);
    tu_run_threads(N, fail_action_fn, &x);
    cr_assert_eq(atomic_load(&x.action_runs), 4);
    int broken = 0, action_code = 0;
    for (int i = 0; i < N; i++) {
        int rc = atomic_load(&x.res[i]);
        broken += rc == CONC_EBROKEN;
        action_code += rc == CONC_EINVAL;
        cr_assert_eq(x.times[i], 4.0, "thread %d stopped in cycle %g", i, x.times[i]);
    }
    /* Everyone gets BrokenBarrierError; the thread that ran the action may
     * get the action's own failure instead (as Python re-raises it there). */
    cr_assert(broken == N || (broken == N - 1 && action_code == 1), "broken=%d action=%d", broken,
              action_code);
    cr_assert(conc_barrier_broken(&x.b));
    cr_assert_eq(conc_barrier_wait(&x.b, 1.0, NULL), CONC_EBROKEN);
    cr_assert_eq(conc_barrier_reset(&x.b), 0);
    cr_assert_not(conc_barrier_broken(&x.b));
}

/* ---- abort */

static void abort_fn(void *p, int i)
{
    (void)i;
    ctx_t *x = p;
    int idx = -1;
    int rc = conc_barrier_wait(&x->b, CONC_BARRIER_DEFAULT, &idx);
    if (rc == CONC_EBROKEN) {
        atomic_fetch_add(&x->r2, 1);
        return;
    }
    if (rc != 0) {
        err(x, rc);
        return;
    }
    if (idx == N / 2) { /* "raise RuntimeError" */
        conc_barrier_abort(&x->b);
        return;
    }
    rc = conc_barrier_wait(&x->b, CONC_BARRIER_DEFAULT, NULL);
    if (rc == 0)
        atomic_fetch_add(&x->r1, 1);
    else if (rc == CONC_EBROKEN)
        atomic_fetch_add(&x->r2, 1);
    else
        err(x, rc);
}

Test(barrier, abort, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    reset_ctx(&x);
    cr_assert_eq(conc_barrier_init(&x.b, N, NULL, NULL, 10.0), 0);
    tu_run_threads(N, abort_fn, &x);
    ASSERT_NO_ERRORS(&x);
    cr_assert_eq(atomic_load(&x.r1), 0);
    cr_assert_eq(atomic_load(&x.r2), N - 1);
    cr_assert(conc_barrier_broken(&x.b));
    double t = tu_now();
    cr_assert_eq(conc_barrier_wait(&x.b, CONC_FOREVER, NULL), CONC_EBROKEN);
    cr_assert_lt(tu_now() - t, 1.0);
}

/* abort wakes the contexts waiting now */
static void plain_wait_fn(void *p, int i)
{
    ctx_t *x = p;
    atomic_store(&x->res[i], conc_barrier_wait(&x->b, x->timeout, NULL));
}

Test(barrier, abort_wakes_waiters, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t bn;
    reset_ctx(&x);
    x.timeout = CONC_FOREVER;
    cr_assert_eq(conc_barrier_init(&x.b, 3, NULL, NULL, CONC_FOREVER), 0);
    tu_bunch_start(&bn, 2, plain_wait_fn, &x);
    cr_assert(TU_WAIT_UNTIL(conc_barrier_n_waiting(&x.b) == 2, 10));
    cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&bn), 10));
    cr_assert_eq(conc_barrier_abort(&x.b), 0);
    tu_bunch_join(&bn);
    cr_assert_eq(atomic_load(&x.res[0]), CONC_EBROKEN);
    cr_assert_eq(atomic_load(&x.res[1]), CONC_EBROKEN);
    cr_assert(conc_barrier_broken(&x.b));
    cr_assert_eq(conc_barrier_abort(&x.b), 0); /* twice: harmless */
    cr_assert_eq(conc_barrier_reset(&x.b), 0);
    cr_assert_not(conc_barrier_broken(&x.b));
    /* usable again */
    tu_bunch_start(&bn, 2, plain_wait_fn, &x);
    cr_assert_eq(conc_barrier_wait(&x.b, 10.0, NULL), 0);
    tu_bunch_join(&bn);
    cr_assert_eq(atomic_load(&x.res[0]), 0);
    cr_assert_eq(atomic_load(&x.res[1]), 0);
}

/* ---- reset */

static void reset_fn(void *p, int i)
{
    (void)i;
    ctx_t *x = p;
    int idx = -1;
    int rc = conc_barrier_wait(&x->b, CONC_BARRIER_DEFAULT, &idx);
    if (rc != 0) {
        err(x, 30 + rc);
        return;
    }
    if (idx == N / 2) {
        if (!TU_WAIT_UNTIL(conc_barrier_n_waiting(&x->b) == N - 1, 10))
            err(x, 40);
        conc_barrier_reset(&x->b);
    } else {
        rc = conc_barrier_wait(&x->b, CONC_BARRIER_DEFAULT, NULL);
        if (rc == 0)
            atomic_fetch_add(&x->r1, 1);
        else if (rc == CONC_EBROKEN)
            atomic_fetch_add(&x->r2, 1);
        else
            err(x, 50 + rc);
    }
    /* pass the barrier again */
    rc = conc_barrier_wait(&x->b, CONC_BARRIER_DEFAULT, NULL);
    if (rc == 0)
        atomic_fetch_add(&x->r3, 1);
    else
        err(x, 60 + rc);
}

Test(barrier, reset, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    reset_ctx(&x);
    cr_assert_eq(conc_barrier_init(&x.b, N, NULL, NULL, 10.0), 0);
    tu_run_threads(N, reset_fn, &x);
    ASSERT_NO_ERRORS(&x);
    cr_assert_eq(atomic_load(&x.r1), 0);
    cr_assert_eq(atomic_load(&x.r2), N - 1);
    cr_assert_eq(atomic_load(&x.r3), N);
    cr_assert_not(conc_barrier_broken(&x.b));
}

static void abort_and_reset_fn(void *p, int i)
{
    (void)i;
    ctx_t *x = p;
    int idx = -1;
    int rc = conc_barrier_wait(&x->b, CONC_BARRIER_DEFAULT, &idx);
    if (rc == 0 && idx == N / 2) {
        conc_barrier_abort(&x->b);
    } else if (rc == 0) {
        rc = conc_barrier_wait(&x->b, CONC_BARRIER_DEFAULT, NULL);
        if (rc == 0)
            atomic_fetch_add(&x->r1, 1);
        else if (rc == CONC_EBROKEN)
            atomic_fetch_add(&x->r2, 1);
        else
            err(x, rc);
    } else if (rc == CONC_EBROKEN) {
        /* the abort can come before this waiter left the first wait */
        atomic_fetch_add(&x->r2, 1);
    } else {
        err(x, 70 + rc);
    }
    /* synchronise, reset, synchronise, pass again */
    idx = -1;
    if (conc_barrier_wait(&x->b2, 10.0, &idx) != 0)
        err(x, 80);
    if (idx == N / 2)
        conc_barrier_reset(&x->b);
    if (conc_barrier_wait(&x->b2, 10.0, NULL) != 0)
        err(x, 81);
    if (conc_barrier_wait(&x->b, CONC_BARRIER_DEFAULT, NULL) == 0)
        atomic_fetch_add(&x->r3, 1);
    else
        err(x, 82);
}

Test(barrier, abort_and_reset, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    reset_ctx(&x);
    cr_assert_eq(conc_barrier_init(&x.b, N, NULL, NULL, 10.0), 0);
    cr_assert_eq(conc_barrier_init(&x.b2, N, NULL, NULL, CONC_FOREVER), 0);
    tu_run_threads(N, abort_and_reset_fn, &x);
    ASSERT_NO_ERRORS(&x);
    cr_assert_eq(atomic_load(&x.r1), 0);
    cr_assert_eq(atomic_load(&x.r2), N - 1);
    cr_assert_eq(atomic_load(&x.r3), N);
}

/* ---- timeouts */

static void late_fn(void *p, int i)
{
    ctx_t *x = p;
    int idx = -1;
    if (conc_barrier_wait(&x->b, 10.0, &idx) != 0) { /* start together */
        err(x, 90);
        return;
    }
    if (idx == N / 2) {
        tu_sleep(1.0); /* one thread is late */
        x->times[i] = -1;
    }
    double t = tu_now();
    atomic_store(&x->res[i], conc_barrier_wait(&x->b, x->timeout, NULL));
    if (x->times[i] == 0)
        x->times[i] = tu_now() - t;
}

static void check_late(ctx_t *x, double expect_timeout, int expect_rc)
{
    ASSERT_NO_ERRORS(x);
    double maxdt = 0;
    for (int i = 0; i < N; i++) {
        cr_assert_eq(atomic_load(&x->res[i]), expect_rc, "thread %d got %d", i,
                     atomic_load(&x->res[i]));
        if (x->times[i] > maxdt)
            maxdt = x->times[i];
        if (x->times[i] >= 0)
            cr_assert_lt(x->times[i], expect_timeout + TU_SLACK);
    }
    if (expect_rc == CONC_EBROKEN) /* the waiter whose timeout passed waited it all */
        cr_assert_geq(maxdt, expect_timeout - TU_EPS, "longest wait %.3f", maxdt);
}

/* N late waiters with per-call timeout on a barrier whose default is
 * dflt: check_late(expect_timeout, expect_rc), and the barrier is broken
 * exactly when they got CONC_EBROKEN. */
static void run_late(double timeout, double dflt, double expect_timeout, int expect_rc)
{
    static ctx_t x;
    reset_ctx(&x);
    x.timeout = timeout;
    cr_assert_eq(conc_barrier_init(&x.b, N, NULL, NULL, dflt), 0);
    tu_run_threads(N, late_fn, &x);
    check_late(&x, expect_timeout, expect_rc);
    cr_assert_eq(conc_barrier_broken(&x.b), expect_rc == CONC_EBROKEN);
}

Test(barrier, timeout_breaks_it_for_everyone, .timeout = TU_TIMEOUT)
{
    run_late(0.2, 5.0, 0.2, CONC_EBROKEN); /* shorter than the default and than the lateness */
}

Test(barrier, default_timeout, .timeout = TU_TIMEOUT)
{
    run_late(CONC_BARRIER_DEFAULT, 0.2, 0.2, CONC_EBROKEN);
}

Test(barrier, explicit_forever_overrides_default, .timeout = TU_TIMEOUT)
{
    run_late(CONC_FOREVER, 0.1, 1.0, 0);
}

Test(barrier, explicit_timeout_longer_than_default, .timeout = TU_TIMEOUT)
{
    run_late(10.0, 0.1, 1.0, 0);
}

Test(barrier, lone_waiter_times_out, .timeout = TU_TIMEOUT)
{
    conc_barrier_t b;
    cr_assert_eq(conc_barrier_init(&b, 2, NULL, NULL, CONC_FOREVER), 0);
    double t = tu_now();
    cr_assert_eq(conc_barrier_wait(&b, 0.2, NULL), CONC_EBROKEN);
    tu_assert_timeout(tu_now() - t, 0.2);
    cr_assert(conc_barrier_broken(&b));
    cr_assert_eq(conc_barrier_n_waiting(&b), 0);
    cr_assert_eq(conc_barrier_wait(&b, 0.2, NULL), CONC_EBROKEN);
    cr_assert_eq(conc_barrier_reset(&b), 0);
    cr_assert_not(conc_barrier_broken(&b));
    /* zero timeout: do not block -> breaks at once */
    t = tu_now();
    cr_assert_eq(conc_barrier_wait(&b, 0, NULL), CONC_EBROKEN);
    cr_assert_lt(tu_now() - t, 1.0);
}

/* ---- n_waiting */

Test(barrier, n_waiting, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t bn;
    reset_ctx(&x);
    x.timeout = 10.0;
    cr_assert_eq(conc_barrier_init(&x.b, 4, NULL, NULL, CONC_FOREVER), 0);
    cr_assert_eq(conc_barrier_n_waiting(&x.b), 0);
    tu_bunch_start(&bn, 3, plain_wait_fn, &x);
    cr_assert(TU_WAIT_UNTIL(conc_barrier_n_waiting(&x.b) == 3, 10), "n_waiting %d",
              conc_barrier_n_waiting(&x.b));
    cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&bn), 10));
    cr_assert_eq(conc_barrier_n_waiting(&x.b), 3);
    cr_assert_eq(atomic_load(&bn.finished), 0);
    cr_assert_not(conc_barrier_broken(&x.b));
    cr_assert_eq(conc_barrier_wait(&x.b, 10.0, NULL), 0);
    tu_bunch_join(&bn);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(atomic_load(&x.res[i]), 0);
    cr_assert_eq(conc_barrier_n_waiting(&x.b), 0);
}

/* ---- reset while nobody waits, and reuse with different thread counts */

Test(barrier, reset_idle_is_harmless, .timeout = TU_TIMEOUT)
{
    conc_barrier_t b;
    cr_assert_eq(conc_barrier_init(&b, 1, NULL, NULL, CONC_FOREVER), 0);
    cr_assert_eq(conc_barrier_reset(&b), 0);
    cr_assert_eq(conc_barrier_reset(&b), 0);
    cr_assert_not(conc_barrier_broken(&b));
    int idx = -1;
    cr_assert_eq(conc_barrier_wait(&b, CONC_FOREVER, &idx), 0);
    cr_assert_eq(idx, 0);
}
