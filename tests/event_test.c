/* conc_event_t: CPython's lock_tests.EventTests, and the set/clear race. */
#include "test_util.h"

Test(event, null_and_bad_timeouts, .timeout = TU_TIMEOUT)
{
    cr_assert_eq(conc_event_init(NULL), CONC_EINVAL);
    cr_assert_eq(conc_event_set(NULL), CONC_EINVAL);
    cr_assert_eq(conc_event_clear(NULL), CONC_EINVAL);
    cr_assert_eq(conc_event_wait(NULL, 0), CONC_EINVAL);
    cr_assert_not(conc_event_is_set(NULL));
    conc_event_t e = CONC_EVENT_INIT;
    /* a negative timeout is already up (Python's Event.wait(-1) is False) */
    cr_assert_eq(conc_event_wait(&e, -0.5), CONC_ETIMEDOUT);
    cr_assert_eq(conc_event_wait(&e, -1.0), CONC_ETIMEDOUT);
    cr_assert_eq(conc_event_wait(&e, -2), CONC_ETIMEDOUT);
    cr_assert_eq(conc_event_wait(&e, NAN), CONC_EINVAL);
    cr_assert_eq(conc_event_wait(&e, -INFINITY), CONC_ETIMEDOUT);
    cr_assert_eq(conc_event_set(&e), 0);
    cr_assert_eq(conc_event_wait(&e, -0.5), 0, "a set event is a set event");
    cr_assert_eq(conc_event_wait(&e, NAN), CONC_EINVAL, "NaN accepted when set");
    cr_assert_eq(conc_event_wait(&e, 1e300), 0);
    cr_assert_eq(conc_event_wait(&e, INFINITY), 0);
}

Test(event, is_set, .timeout = TU_TIMEOUT)
{
    conc_event_t e = CONC_EVENT_INIT;
    cr_assert_not(conc_event_is_set(&e));
    cr_assert_eq(conc_event_set(&e), 0);
    cr_assert(conc_event_is_set(&e));
    cr_assert_eq(conc_event_set(&e), 0);
    cr_assert(conc_event_is_set(&e));
    cr_assert_eq(conc_event_clear(&e), 0);
    cr_assert_not(conc_event_is_set(&e));
    cr_assert_eq(conc_event_clear(&e), 0);
    cr_assert_not(conc_event_is_set(&e));

    conc_event_t g;
    memset(&g, 0x77, sizeof g);
    cr_assert_eq(conc_event_init(&g), 0);
    cr_assert_not(conc_event_is_set(&g));
    conc_event_t z;
    memset(&z, 0, sizeof z);
    cr_assert_not(conc_event_is_set(&z));
    cr_assert_eq(conc_event_wait(&z, 0), CONC_ETIMEDOUT);
}

typedef struct {
    conc_event_t e;
    atomic_int r1[TU_MAX_BUNCH], r2[TU_MAX_BUNCH];
    double times[TU_MAX_BUNCH];
    atomic_int count;
    atomic_int stop;
    long rounds;
    double timeout;
} ctx_t;

static void wait_twice_fn(void *p, int i)
{
    ctx_t *x = p;
    atomic_store(&x->r1[i], conc_event_wait(&x->e, CONC_FOREVER));
    atomic_fetch_add(&x->count, 1);
    atomic_store(&x->r2[i], conc_event_wait(&x->e, CONC_FOREVER));
}

static void check_notify(ctx_t *x)
{
    static tu_bunch_t b;
    const int N = 5;
    atomic_store(&x->count, 0);
    for (int i = 0; i < N; i++)
        x->r1[i] = x->r2[i] = 99;
    tu_bunch_start(&b, N, wait_twice_fn, x);
    cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10));
    cr_assert_eq(atomic_load(&x->count), 0, "wait returned on a clear event");
    cr_assert_eq(conc_event_set(&x->e), 0);
    tu_bunch_join(&b);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(atomic_load(&x->r1[i]), 0);
        cr_assert_eq(atomic_load(&x->r2[i]), 0);
    }
}

Test(event, notify_all_waiters, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    cr_assert_eq(conc_event_init(&x.e), 0);
    check_notify(&x);
    /* again, after an explicit clear */
    cr_assert_eq(conc_event_set(&x.e), 0);
    cr_assert_eq(conc_event_clear(&x.e), 0);
    check_notify(&x);
}

static void timeout_fn(void *p, int i)
{
    ctx_t *x = p;
    atomic_store(&x->r1[i], conc_event_wait(&x->e, 0.0));
    double t = tu_now();
    atomic_store(&x->r2[i], conc_event_wait(&x->e, x->timeout));
    x->times[i] = tu_now() - t;
}

Test(event, timeout, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    const int N = 5;
    cr_assert_eq(conc_event_init(&x.e), 0);
    x.timeout = 0.2;
    tu_bunch_start(&b, N, timeout_fn, &x);
    tu_bunch_join(&b);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(atomic_load(&x.r1[i]), CONC_ETIMEDOUT);
        cr_assert_eq(atomic_load(&x.r2[i]), CONC_ETIMEDOUT);
        tu_assert_timeout(x.times[i], 0.2);
    }
    cr_assert_eq(conc_event_set(&x.e), 0);
    x.timeout = 5.0;
    tu_bunch_start(&b, N, timeout_fn, &x);
    tu_bunch_join(&b);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(atomic_load(&x.r1[i]), 0);
        cr_assert_eq(atomic_load(&x.r2[i]), 0);
        cr_assert_lt(x.times[i], 2.5, "wait on a set event blocked");
    }
}

static void set_later_fn(void *p, int i)
{
    (void)i;
    ctx_t *x = p;
    tu_sleep(0.1);
    atomic_store(&x->count, 1);
    conc_event_set(&x->e);
}

Test(event, timed_wait_returns_when_set, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    double timeouts[] = {10.0, 1e300, INFINITY};
    for (size_t k = 0; k < 3; k++) {
        cr_assert_eq(conc_event_init(&x.e), 0);
        atomic_store(&x.count, 0);
        tu_bunch_start(&b, 1, set_later_fn, &x);
        double t = tu_now();
        cr_assert_eq(conc_event_wait(&x.e, timeouts[k]), 0, "timeout %g", timeouts[k]);
        cr_assert_eq(atomic_load(&x.count), 1, "timeout %g: returned before set", timeouts[k]);
        cr_assert_lt(tu_now() - t, 5.0);
        tu_bunch_join(&b);
    }
}

/* Issue #13502: wait() returns true even when the event is cleared right
 * after set, before the waiter wakes. Many waiters, many rounds; each round
 * they are all parked in the kernel when set() happens. */
static void race_waiter_fn(void *p, int i)
{
    ctx_t *x = p;
    atomic_store(&x->r1[i], conc_event_wait(&x->e, x->rounds > 0 ? 30.0 : CONC_FOREVER));
    atomic_fetch_add(&x->count, 1);
}

Test(event, set_and_clear_race, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    const int N = 8;
    long rounds = tu_iters(500);
    cr_assert_eq(conc_event_init(&x.e), 0);
    for (long r = 0; r < rounds; r++) {
        x.rounds = r & 1; /* alternate forever / timed waits */
        atomic_store(&x.count, 0);
        for (int i = 0; i < N; i++)
            x.r1[i] = 99;
        tu_bunch_start(&b, N, race_waiter_fn, &x);
        cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10));
        cr_assert_eq(atomic_load(&x.count), 0);
        cr_assert_eq(conc_event_set(&x.e), 0);
        cr_assert_eq(conc_event_clear(&x.e), 0);
        /* Every waiter must come back with 0 on its own: no rescue set(). */
        bool all = TU_WAIT_UNTIL(atomic_load(&x.count) == N, 10);
        if (!all)
            conc_event_set(&x.e); /* let the stuck ones go, then fail */
        tu_bunch_join(&b);
        cr_assert(all, "round %ld: %d of %d waiters missed a set() followed by clear()", r,
                  N - atomic_load(&x.count), N);
        for (int i = 0; i < N; i++)
            cr_assert_eq(atomic_load(&x.r1[i]), 0, "round %ld waiter %d got %d", r, i,
                         atomic_load(&x.r1[i]));
        cr_assert_not(conc_event_is_set(&x.e));
    }
}

/* The same race without waiting for the waiters to park: some are spinning,
 * some parked, some just arriving. Waiters that arrive after the clear() may
 * block, so the test sets the event again afterwards; what it checks is
 * that every wait that returns gives 0 (never a timeout, never an error) and
 * that the set/clear storm leaves no waiter behind. */
static void storm_waiter_fn(void *p, int i)
{
    ctx_t *x = p;
    while (!atomic_load(&x->stop)) {
        int rc = conc_event_wait(&x->e, CONC_FOREVER);
        if (rc != 0)
            atomic_store(&x->r1[i], rc);
        atomic_fetch_add(&x->count, 1);
    }
}

Test(event, set_clear_storm, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    const int N = 6;
    memset(&x, 0, sizeof x);
    cr_assert_eq(conc_event_init(&x.e), 0);
    tu_bunch_start(&b, N, storm_waiter_fn, &x);
    cr_assert(tu_bunch_wait_started(&b, 10));
    long rounds = tu_iters(20000);
    for (long r = 0; r < rounds; r++) {
        conc_event_set(&x.e);
        conc_event_clear(&x.e);
    }
    atomic_store(&x.stop, 1);
    conc_event_set(&x.e);
    tu_bunch_join(&b);
    /* (a hang in join would mean a waiter missed the final set) */
    for (int i = 0; i < N; i++)
        cr_assert_eq(atomic_load(&x.r1[i]), 0);
}

Test(event, wait_zero_does_not_block, .timeout = TU_TIMEOUT)
{
    conc_event_t e = CONC_EVENT_INIT;
    double t = tu_now();
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(conc_event_wait(&e, 0), CONC_ETIMEDOUT);
    cr_assert_lt(tu_now() - t, 1.0);
}
