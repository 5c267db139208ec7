/* conc_semaphore_t: CPython's lock_tests.BaseSemaphoreTests, SemaphoreTests
 * and BoundedSemaphoreTests, plus release(n) and FIFO service. */
#include "test_util.h"
#include <limits.h>

typedef int (*init_fn)(conc_semaphore_t *, long);
static init_fn inits[2] = {conc_semaphore_init, conc_bounded_semaphore_init};
static const char *names[2] = {"Semaphore", "BoundedSemaphore"};

Test(semaphore, constructor_and_null, .timeout = TU_TIMEOUT)
{
    conc_semaphore_t s;
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(inits[k](NULL, 1), CONC_EINVAL, "%s", names[k]);
        cr_assert_eq(inits[k](&s, -1), CONC_EINVAL, "%s", names[k]);
        cr_assert_eq(inits[k](&s, LONG_MIN), CONC_EINVAL, "%s", names[k]);
        cr_assert_eq(inits[k](&s, -LONG_MAX), CONC_EINVAL, "%s", names[k]);
        cr_assert_eq(inits[k](&s, (long)CONC_SEMAPHORE_MAX + 1), CONC_EINVAL, "%s", names[k]);
        cr_assert_eq(inits[k](&s, LONG_MAX), CONC_EINVAL, "%s", names[k]);
        cr_assert_eq(inits[k](&s, 0), 0);
        cr_assert_eq(conc_semaphore_value(&s), 0);
        cr_assert_eq(inits[k](&s, (long)CONC_SEMAPHORE_MAX), 0);
        cr_assert_eq(conc_semaphore_value(&s), (long)CONC_SEMAPHORE_MAX);
        cr_assert_eq(inits[k](&s, 3), 0);
        cr_assert_eq(conc_semaphore_value(&s), 3);
    }
    cr_assert_eq(conc_semaphore_acquire(NULL, true, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc_semaphore_release(NULL, 1), CONC_EINVAL);
}

Test(semaphore, static_initialisers, .timeout = TU_TIMEOUT)
{
    conc_semaphore_t s = CONC_SEMAPHORE_INIT(2);
    conc_semaphore_t b = CONC_BOUNDED_SEMAPHORE_INIT(1);
    cr_assert_eq(conc_semaphore_value(&s), 2);
    cr_assert_eq(conc_semaphore_value(&b), 1);
    cr_assert_eq(conc_semaphore_acquire(&s, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_semaphore_acquire(&s, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_semaphore_acquire(&s, false, CONC_FOREVER), CONC_ETIMEDOUT);
    cr_assert_eq(conc_semaphore_release(&b, 1), CONC_EINVAL);
    cr_assert_eq(conc_semaphore_acquire(&b, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_semaphore_release(&b, 1), 0);
    cr_assert_eq(conc_semaphore_release(&b, 1), CONC_EINVAL);
    cr_assert_eq(conc_semaphore_value(&b), 1);
}

Test(semaphore, acquire_release, .timeout = TU_TIMEOUT)
{
    conc_semaphore_t s;
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(inits[k](&s, 1), 0);
        cr_assert_eq(conc_semaphore_acquire(&s, true, CONC_FOREVER), 0);
        cr_assert_eq(conc_semaphore_value(&s), 0);
        cr_assert_eq(conc_semaphore_release(&s, 1), 0);
        cr_assert_eq(conc_semaphore_value(&s), 1);
        cr_assert_eq(inits[k](&s, 2), 0);
        cr_assert_eq(conc_semaphore_acquire(&s, true, CONC_FOREVER), 0);
        cr_assert_eq(conc_semaphore_acquire(&s, true, CONC_FOREVER), 0);
        cr_assert_eq(conc_semaphore_release(&s, 1), 0);
        cr_assert_eq(conc_semaphore_release(&s, 1), 0);
        cr_assert_eq(conc_semaphore_value(&s), 2);
    }
}

Test(semaphore, try_acquire, .timeout = TU_TIMEOUT)
{
    conc_semaphore_t s;
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(inits[k](&s, 2), 0);
        cr_assert_eq(conc_semaphore_acquire(&s, false, CONC_FOREVER), 0);
        cr_assert_eq(conc_semaphore_acquire(&s, false, CONC_FOREVER), 0);
        cr_assert_eq(conc_semaphore_acquire(&s, false, CONC_FOREVER), CONC_ETIMEDOUT);
        cr_assert_eq(conc_semaphore_acquire(&s, true, 0), CONC_ETIMEDOUT);
        cr_assert_eq(conc_semaphore_value(&s), 0);
        cr_assert_eq(conc_semaphore_release(&s, 1), 0);
        cr_assert_eq(conc_semaphore_acquire(&s, false, CONC_FOREVER), 0);
    }
}

Test(semaphore, bad_timeouts_and_counts, .timeout = TU_TIMEOUT)
{
    conc_semaphore_t s;
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(inits[k](&s, 2), 0);
        cr_assert_eq(conc_semaphore_acquire(&s, false, 1.0), CONC_EINVAL);
        cr_assert_eq(conc_semaphore_acquire(&s, false, 0.0), CONC_EINVAL);
        cr_assert_eq(conc_semaphore_acquire(&s, true, NAN), CONC_EINVAL);
        cr_assert_eq(conc_semaphore_value(&s), 2, "an invalid acquire took a unit");
        cr_assert_eq(conc_semaphore_acquire(&s, true, 1e300), 0);
        cr_assert_eq(conc_semaphore_release(&s, 0), CONC_EINVAL);
        cr_assert_eq(conc_semaphore_release(&s, -1), CONC_EINVAL);
        cr_assert_eq(conc_semaphore_release(&s, LONG_MIN), CONC_EINVAL);
        cr_assert_eq(conc_semaphore_value(&s), 1);
    }
}

Test(semaphore, acquire_timeout, .timeout = TU_TIMEOUT)
{
    conc_semaphore_t s;
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(inits[k](&s, 2), 0);
        cr_assert_eq(conc_semaphore_acquire(&s, true, 0.005), 0);
        cr_assert_eq(conc_semaphore_acquire(&s, true, 0.005), 0);
        cr_assert_eq(conc_semaphore_acquire(&s, true, 0.005), CONC_ETIMEDOUT);
        cr_assert_eq(conc_semaphore_release(&s, 1), 0);
        cr_assert_eq(conc_semaphore_acquire(&s, true, 0.005), 0);
        double t = tu_now();
        cr_assert_eq(conc_semaphore_acquire(&s, true, 0.2), CONC_ETIMEDOUT);
        tu_assert_timeout(tu_now() - t, 0.2);
        cr_assert_eq(conc_semaphore_value(&s), 0);
    }
}

Test(semaphore, unbounded_release_unacquired, .timeout = TU_TIMEOUT)
{
    conc_semaphore_t s;
    cr_assert_eq(conc_semaphore_init(&s, 1), 0);
    cr_assert_eq(conc_semaphore_release(&s, 1), 0);
    cr_assert_eq(conc_semaphore_value(&s), 2);
    cr_assert_eq(conc_semaphore_acquire(&s, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_semaphore_acquire(&s, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_semaphore_release(&s, 5), 0);
    cr_assert_eq(conc_semaphore_value(&s), 5);
}

Test(semaphore, bounded_over_release, .timeout = TU_TIMEOUT)
{
    conc_semaphore_t s;
    cr_assert_eq(conc_bounded_semaphore_init(&s, 1), 0);
    cr_assert_eq(conc_semaphore_release(&s, 1), CONC_EINVAL);
    cr_assert_eq(conc_semaphore_value(&s), 1);
    cr_assert_eq(conc_semaphore_acquire(&s, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_semaphore_release(&s, 1), 0);
    cr_assert_eq(conc_semaphore_release(&s, 1), CONC_EINVAL);
    cr_assert_eq(conc_semaphore_value(&s), 1);

    cr_assert_eq(conc_bounded_semaphore_init(&s, 3), 0);
    cr_assert_eq(conc_semaphore_acquire(&s, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_semaphore_release(&s, 2), CONC_EINVAL, "release(2) with room for 1");
    cr_assert_eq(conc_semaphore_value(&s), 2, "a refused release changed the value");
    cr_assert_eq(conc_semaphore_acquire(&s, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_semaphore_release(&s, 2), 0);
    cr_assert_eq(conc_semaphore_value(&s), 3);
    cr_assert_eq(conc_semaphore_release(&s, 1), CONC_EINVAL);

    cr_assert_eq(conc_bounded_semaphore_init(&s, 0), 0);
    cr_assert_eq(conc_semaphore_release(&s, 1), CONC_EINVAL);
    cr_assert_eq(conc_semaphore_value(&s), 0);
}

Test(semaphore, release_past_max_is_erange, .timeout = TU_TIMEOUT)
{
    conc_semaphore_t s;
    cr_assert_eq(conc_semaphore_init(&s, (long)CONC_SEMAPHORE_MAX - 1), 0);
    cr_assert_eq(conc_semaphore_release(&s, 1), 0, "release up to CONC_SEMAPHORE_MAX");
    cr_assert_eq(conc_semaphore_value(&s), (long)CONC_SEMAPHORE_MAX);
    cr_assert_eq(conc_semaphore_release(&s, 1), CONC_ERANGE);
    cr_assert_eq(conc_semaphore_value(&s), (long)CONC_SEMAPHORE_MAX);
    cr_assert_eq(conc_semaphore_init(&s, 5), 0);
    cr_assert_eq(conc_semaphore_release(&s, (long)CONC_SEMAPHORE_MAX), CONC_ERANGE);
    cr_assert_eq(conc_semaphore_release(&s, LONG_MAX), CONC_ERANGE);
    cr_assert_eq(conc_semaphore_value(&s), 5);
}

/* ---- threads */

typedef struct {
    conc_semaphore_t s;
    atomic_int phase;
    atomic_int r1[TU_MAX_BUNCH], r2[TU_MAX_BUNCH]; /* phase seen, -1 = not yet */
    atomic_int count;
    atomic_int res[TU_MAX_BUNCH];
    atomic_int order[TU_MAX_BUNCH];
    atomic_int norder;
} ctx_t;

static void two_acquires_fn(void *p, int i)
{
    ctx_t *x = p;
    conc_semaphore_acquire(&x->s, true, CONC_FOREVER);
    atomic_store(&x->r1[i], atomic_load(&x->phase));
    atomic_fetch_add(&x->count, 1);
    conc_semaphore_acquire(&x->s, true, CONC_FOREVER);
    atomic_store(&x->r2[i], atomic_load(&x->phase));
    atomic_fetch_add(&x->count, 1);
}

static void count_phases(ctx_t *x, int n, int *per_phase)
{
    memset(per_phase, 0, 3 * sizeof *per_phase);
    for (int i = 0; i < n; i++) {
        int a = atomic_load(&x->r1[i]), b = atomic_load(&x->r2[i]);
        if (a >= 0)
            per_phase[a]++;
        if (b >= 0)
            per_phase[b]++;
    }
}

Test(semaphore, acquire_contended, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    for (int k = 0; k < 2; k++) {
        memset(&x, 0, sizeof x);
        for (int i = 0; i < TU_MAX_BUNCH; i++)
            x.r1[i] = x.r2[i] = -1;
        cr_assert_eq(inits[k](&x.s, 7), 0);
        cr_assert_eq(conc_semaphore_acquire(&x.s, true, CONC_FOREVER), 0);
        tu_bunch_start(&b, 10, two_acquires_fn, &x);
        cr_assert(TU_WAIT_UNTIL(atomic_load(&x.count) >= 6, 10));
        cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10));
        int per[3];
        count_phases(&x, 10, per);
        cr_assert_eq(atomic_load(&x.count), 6, "%s", names[k]);
        cr_assert_eq(per[0], 6);
        atomic_store(&x.phase, 1);
        for (int i = 0; i < 7; i++) /* within the bound of 7 too */
            cr_assert_eq(conc_semaphore_release(&x.s, 1), 0);
        cr_assert(TU_WAIT_UNTIL(atomic_load(&x.count) >= 13, 10));
        cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10));
        count_phases(&x, 10, per);
        cr_assert_eq(atomic_load(&x.count), 13);
        cr_assert_eq(per[0], 6);
        cr_assert_eq(per[1], 7);
        atomic_store(&x.phase, 2);
        for (int i = 0; i < 6; i++)
            cr_assert_eq(conc_semaphore_release(&x.s, 1), 0);
        cr_assert(TU_WAIT_UNTIL(atomic_load(&x.count) >= 19, 10));
        cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10));
        count_phases(&x, 10, per);
        cr_assert_eq(atomic_load(&x.count), 19);
        cr_assert_eq(per[2], 6);
        /* still locked */
        cr_assert_eq(conc_semaphore_acquire(&x.s, false, CONC_FOREVER), CONC_ETIMEDOUT);
        cr_assert_eq(conc_semaphore_release(&x.s, 1), 0);
        tu_bunch_join(&b);
        cr_assert_eq(atomic_load(&x.count), 20);
        cr_assert_eq(conc_semaphore_value(&x.s), 0);
    }
}

static void try_twice_fn(void *p, int i)
{
    ctx_t *x = p;
    atomic_store(&x->r1[i], conc_semaphore_acquire(&x->s, false, CONC_FOREVER));
    atomic_store(&x->r2[i], conc_semaphore_acquire(&x->s, false, CONC_FOREVER));
}

Test(semaphore, try_acquire_contended, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    for (int k = 0; k < 2; k++) {
        memset(&x, 0, sizeof x);
        cr_assert_eq(inits[k](&x.s, 4), 0);
        cr_assert_eq(conc_semaphore_acquire(&x.s, true, CONC_FOREVER), 0);
        tu_bunch_start(&b, 5, try_twice_fn, &x);
        tu_bunch_join(&b);
        int ok = 0, fail = 0;
        for (int i = 0; i < 5; i++) {
            int a = atomic_load(&x.r1[i]), c = atomic_load(&x.r2[i]);
            ok += (a == 0) + (c == 0);
            fail += (a == CONC_ETIMEDOUT) + (c == CONC_ETIMEDOUT);
        }
        cr_assert_eq(ok, 3, "%s", names[k]);
        cr_assert_eq(fail, 7);
        cr_assert_eq(conc_semaphore_value(&x.s), 0);
    }
}

Test(semaphore, default_blocks_until_release, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    memset(&x, 0, sizeof x);
    for (int i = 0; i < TU_MAX_BUNCH; i++)
        x.r1[i] = x.r2[i] = -1;
    cr_assert_eq(conc_semaphore_init(&x.s, 1), 0);
    cr_assert_eq(conc_semaphore_acquire(&x.s, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_semaphore_release(&x.s, 1), 0);
    cr_assert_eq(conc_semaphore_acquire(&x.s, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_semaphore_value(&x.s), 0);
    tu_bunch_start(&b, 1, two_acquires_fn, &x);
    cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10));
    cr_assert_eq(atomic_load(&x.count), 0);
    cr_assert_eq(conc_semaphore_release(&x.s, 2), 0);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.count), 2);
}

/* release(n) wakes n waiters: exactly n get through. */
static void one_acquire_fn(void *p, int i)
{
    ctx_t *x = p;
    atomic_store(&x->res[i], conc_semaphore_acquire(&x->s, true, CONC_FOREVER));
    atomic_fetch_add(&x->count, 1);
}

Test(semaphore, release_n_wakes_n, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    for (int k = 0; k < 2; k++) {
        memset(&x, 0, sizeof x);
        cr_assert_eq(inits[k](&x.s, 10), 0);
        for (int i = 0; i < 10; i++)
            cr_assert_eq(conc_semaphore_acquire(&x.s, true, CONC_FOREVER), 0);
        tu_bunch_start(&b, 10, one_acquire_fn, &x);
        cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10));
        cr_assert_eq(atomic_load(&x.count), 0);
        cr_assert_eq(conc_semaphore_release(&x.s, 3), 0);
        cr_assert(TU_WAIT_UNTIL(atomic_load(&x.count) >= 3, 10));
        tu_sleep(0.05);
        cr_assert_eq(atomic_load(&x.count), 3, "%s: release(3) let %d through", names[k],
                     atomic_load(&x.count));
        cr_assert_eq(conc_semaphore_release(&x.s, 6), 0);
        cr_assert(TU_WAIT_UNTIL(atomic_load(&x.count) >= 9, 10));
        tu_sleep(0.05);
        cr_assert_eq(atomic_load(&x.count), 9);
        cr_assert_eq(conc_semaphore_value(&x.s), 0);
        cr_assert_eq(conc_semaphore_release(&x.s, 1), 0);
        tu_bunch_join(&b);
        for (int i = 0; i < 10; i++)
            cr_assert_eq(atomic_load(&x.res[i]), 0);
        cr_assert_eq(conc_semaphore_value(&x.s), 0);
    }
}

/* Waiters are served first come, first served. */
static void fifo_fn(void *p, int i)
{
    (void)i;
    ctx_t *x = p;
    int me = (int)(long)atomic_fetch_add(&x->phase, 1); /* arrival ticket */
    conc_semaphore_acquire(&x->s, true, CONC_FOREVER);
    atomic_store(&x->order[atomic_fetch_add(&x->norder, 1)], me);
}

Test(semaphore, waiters_served_fifo, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b[6];
    const int N = 6;
    memset(&x, 0, sizeof x);
    cr_assert_eq(conc_semaphore_init(&x.s, 0), 0);
    for (int i = 0; i < N; i++) {
        tu_bunch_start(&b[i], 1, fifo_fn, &x);
        /* parked in the kernel before the next one arrives */
        cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b[i]), 10));
    }
    for (int i = 0; i < N; i++) {
        cr_assert_eq(conc_semaphore_release(&x.s, 1), 0);
        cr_assert(TU_WAIT_UNTIL(atomic_load(&x.norder) == i + 1, 10));
    }
    for (int i = 0; i < N; i++)
        tu_bunch_join(&b[i]);
    for (int i = 0; i < N; i++)
        cr_assert_eq(atomic_load(&x.order[i]), i, "served #%d was arrival #%d", i,
                     atomic_load(&x.order[i]));
}

/* Timed-out waiters leave no trace: later releases are not lost on them. */
static void timed_fn(void *p, int i)
{
    ctx_t *x = p;
    atomic_store(&x->res[i], conc_semaphore_acquire(&x->s, true, 0.1));
}

Test(semaphore, timed_out_waiters_do_not_eat_releases, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    memset(&x, 0, sizeof x);
    cr_assert_eq(conc_semaphore_init(&x.s, 0), 0);
    tu_bunch_start(&b, 5, timed_fn, &x);
    tu_bunch_join(&b);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(atomic_load(&x.res[i]), CONC_ETIMEDOUT);
    cr_assert_eq(conc_semaphore_value(&x.s), 0);
    cr_assert_eq(conc_semaphore_release(&x.s, 2), 0);
    cr_assert_eq(conc_semaphore_value(&x.s), 2);
    cr_assert_eq(conc_semaphore_acquire(&x.s, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_semaphore_acquire(&x.s, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_semaphore_acquire(&x.s, false, CONC_FOREVER), CONC_ETIMEDOUT);
}
