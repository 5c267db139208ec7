/* conc_rlock_t: the behaviours of CPython's lock_tests.BaseLockTests/RLockTests. */
#include "test_util.h"

Test(rlock, null_pointers, .timeout = TU_TIMEOUT)
{
    cr_assert_eq(conc_rlock_init(NULL), CONC_EINVAL);
    cr_assert_eq(conc_rlock_acquire(NULL, true, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc_rlock_release(NULL), CONC_EINVAL);
    cr_assert_not(conc_rlock_is_owned(NULL));
    cr_assert_eq(conc_rlock_level(NULL), 0);
}

Test(rlock, static_init_and_zero, .timeout = TU_TIMEOUT)
{
    conc_rlock_t r = CONC_RLOCK_INIT;
    cr_assert_not(conc_rlock_is_owned(&r));
    cr_assert_eq(conc_rlock_level(&r), 0);
    cr_assert_eq(conc_rlock_acquire(&r, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_rlock_release(&r), 0);

    conc_rlock_t z;
    memset(&z, 0, sizeof z);
    cr_assert_eq(conc_rlock_acquire(&z, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_rlock_release(&z), 0);

    conc_rlock_t g;
    memset(&g, 0x5a, sizeof g);
    cr_assert_eq(conc_rlock_init(&g), 0);
    cr_assert_eq(conc_rlock_level(&g), 0);
    cr_assert_eq(conc_rlock_acquire(&g, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_rlock_release(&g), 0);
}

Test(rlock, reacquire_and_levels, .timeout = TU_TIMEOUT)
{
    conc_rlock_t r = CONC_RLOCK_INIT;
    cr_assert_eq(conc_rlock_acquire(&r, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_rlock_level(&r), 1);
    cr_assert_eq(conc_rlock_acquire(&r, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_rlock_acquire(&r, true, 0), 0);
    cr_assert_eq(conc_rlock_acquire(&r, true, 0.5), 0);
    cr_assert_eq(conc_rlock_level(&r), 4);
    for (int k = 3; k >= 0; k--) {
        cr_assert_eq(conc_rlock_release(&r), 0);
        cr_assert_eq(conc_rlock_level(&r), (unsigned long)k);
    }
    cr_assert_not(conc_rlock_is_owned(&r));
    cr_assert_eq(conc_rlock_release(&r), CONC_EPERM);
}

Test(rlock, release_unacquired, .timeout = TU_TIMEOUT)
{
    conc_rlock_t r = CONC_RLOCK_INIT;
    cr_assert_eq(conc_rlock_release(&r), CONC_EPERM);
    cr_assert_eq(conc_rlock_acquire(&r, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_rlock_acquire(&r, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_rlock_release(&r), 0);
    cr_assert_eq(conc_rlock_acquire(&r, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_rlock_release(&r), 0);
    cr_assert_eq(conc_rlock_release(&r), 0);
    cr_assert_eq(conc_rlock_release(&r), CONC_EPERM);
    cr_assert_eq(conc_rlock_level(&r), 0);
    cr_assert_eq(conc_rlock_acquire(&r, false, CONC_FOREVER), 0, "EPERM corrupted the rlock");
    cr_assert_eq(conc_rlock_release(&r), 0);
}

Test(rlock, bad_timeouts, .timeout = TU_TIMEOUT)
{
    conc_rlock_t r = CONC_RLOCK_INIT;
    cr_assert_eq(conc_rlock_acquire(&r, false, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_rlock_acquire(&r, false, 0.0), CONC_EINVAL);
    cr_assert_eq(conc_rlock_acquire(&r, true, -100), CONC_EINVAL);
    cr_assert_eq(conc_rlock_acquire(&r, true, -0.001), CONC_EINVAL);
    cr_assert_eq(conc_rlock_acquire(&r, true, NAN), CONC_EINVAL);
    cr_assert_not(conc_rlock_is_owned(&r));
    cr_assert_eq(conc_rlock_acquire(&r, true, 1e100), 0);
    /* Also invalid while owned: no level is added. */
    cr_assert_eq(conc_rlock_acquire(&r, true, NAN), CONC_EINVAL);
    cr_assert_eq(conc_rlock_acquire(&r, false, 2.0), CONC_EINVAL);
    cr_assert_eq(conc_rlock_level(&r), 1);
    cr_assert_eq(conc_rlock_release(&r), 0);
    cr_assert_not(conc_rlock_is_owned(&r));
}

typedef struct {
    conc_rlock_t r;
    atomic_int res[TU_MAX_BUNCH];
    atomic_int res2[TU_MAX_BUNCH];
    atomic_ulong level[TU_MAX_BUNCH];
    atomic_int owned[TU_MAX_BUNCH];
    double times[TU_MAX_BUNCH];
    atomic_int go;
    atomic_int phase;
} ctx_t;

static void hold_fn(void *p, int i)
{
    ctx_t *c = p;
    atomic_store(&c->res[i], conc_rlock_acquire(&c->r, true, CONC_FOREVER));
    conc_rlock_acquire(&c->r, true, CONC_FOREVER);
    atomic_store(&c->phase, 1);
    while (!atomic_load(&c->go))
        tu_sleep(0.001);
    conc_rlock_release(&c->r);
    conc_rlock_release(&c->r);
}

Test(rlock, release_by_non_owner, .timeout = TU_TIMEOUT)
{
    static ctx_t c = {.r = CONC_RLOCK_INIT};
    static tu_bunch_t b;
    tu_bunch_start(&b, 1, hold_fn, &c);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&c.phase) == 1, 10));
    cr_assert_not(conc_rlock_is_owned(&c.r));
    cr_assert_eq(conc_rlock_level(&c.r), 0);
    cr_assert_eq(conc_rlock_release(&c.r), CONC_EPERM);
    cr_assert_eq(conc_rlock_acquire(&c.r, false, CONC_FOREVER), CONC_ETIMEDOUT);
    double t = tu_now();
    cr_assert_eq(conc_rlock_acquire(&c.r, true, 0.2), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t, 0.2);
    atomic_store(&c.go, 1);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&c.res[0]), 0);
    /* The owner's two releases both worked: the lock is free now. */
    cr_assert_eq(conc_rlock_acquire(&c.r, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_rlock_level(&c.r), 1);
    cr_assert_eq(conc_rlock_release(&c.r), 0);
}

static void is_owned_fn(void *p, int i)
{
    ctx_t *c = p;
    atomic_store(&c->owned[i], conc_rlock_is_owned(&c->r));
    atomic_store(&c->level[i], conc_rlock_level(&c->r));
    atomic_store(&c->res[i], conc_rlock_release(&c->r));
    atomic_store(&c->res2[i], conc_rlock_acquire(&c->r, false, CONC_FOREVER));
}

Test(rlock, is_owned, .timeout = TU_TIMEOUT)
{
    static ctx_t c = {.r = CONC_RLOCK_INIT};
    static tu_bunch_t b;
    cr_assert_not(conc_rlock_is_owned(&c.r));
    cr_assert_eq(conc_rlock_acquire(&c.r, true, CONC_FOREVER), 0);
    cr_assert(conc_rlock_is_owned(&c.r));
    cr_assert_eq(conc_rlock_acquire(&c.r, true, CONC_FOREVER), 0);
    cr_assert(conc_rlock_is_owned(&c.r));
    tu_bunch_start(&b, 1, is_owned_fn, &c);
    tu_bunch_join(&b);
    cr_assert_not(atomic_load(&c.owned[0]));
    cr_assert_eq(atomic_load(&c.level[0]), 0);
    cr_assert_eq(atomic_load(&c.res[0]), CONC_EPERM);
    cr_assert_eq(atomic_load(&c.res2[0]), CONC_ETIMEDOUT);
    cr_assert_eq(conc_rlock_level(&c.r), 2, "a non-owner changed the level");
    cr_assert_eq(conc_rlock_release(&c.r), 0);
    cr_assert(conc_rlock_is_owned(&c.r));
    cr_assert_eq(conc_rlock_release(&c.r), 0);
    cr_assert_not(conc_rlock_is_owned(&c.r));
}

static void contended_fn(void *p, int i)
{
    ctx_t *c = p;
    atomic_store(&c->res[i], conc_rlock_acquire(&c->r, true, CONC_FOREVER));
    atomic_store(&c->res2[i], conc_rlock_acquire(&c->r, true, CONC_FOREVER));
    atomic_store(&c->level[i], conc_rlock_level(&c->r));
    conc_rlock_release(&c->r);
    conc_rlock_release(&c->r);
}

Test(rlock, acquire_contended, .timeout = TU_TIMEOUT)
{
    static ctx_t c = {.r = CONC_RLOCK_INIT};
    static tu_bunch_t b;
    cr_assert_eq(conc_rlock_acquire(&c.r, true, CONC_FOREVER), 0);
    tu_bunch_start(&b, 5, contended_fn, &c);
    cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10));
    tu_sleep(0.01);
    cr_assert_eq(atomic_load(&b.finished), 0);
    cr_assert_eq(conc_rlock_release(&c.r), 0);
    tu_bunch_join(&b);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(atomic_load(&c.res[i]), 0);
        cr_assert_eq(atomic_load(&c.res2[i]), 0);
        cr_assert_eq(atomic_load(&c.level[i]), 2);
    }
    cr_assert_eq(conc_rlock_acquire(&c.r, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_rlock_release(&c.r), 0);
}

static void timed_fn(void *p, int i)
{
    ctx_t *c = p;
    double t = tu_now();
    atomic_store(&c->res[i], conc_rlock_acquire(&c->r, true, 0.2));
    c->times[i] = tu_now() - t;
}

Test(rlock, timeout, .timeout = TU_TIMEOUT)
{
    static ctx_t c = {.r = CONC_RLOCK_INIT};
    static tu_bunch_t b;
    cr_assert_eq(conc_rlock_acquire(&c.r, true, 5), 0);
    tu_bunch_start(&b, 3, timed_fn, &c);
    tu_bunch_join(&b);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(atomic_load(&c.res[i]), CONC_ETIMEDOUT);
        tu_assert_timeout(c.times[i], 0.2);
    }
    cr_assert_eq(conc_rlock_level(&c.r), 1);
    cr_assert_eq(conc_rlock_release(&c.r), 0);
    cr_assert_eq(conc_rlock_acquire(&c.r, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_rlock_release(&c.r), 0);
}

/* A thread that ends still owning an RLock does not make others its owner. */
static void acquire_and_leave_fn(void *p, int i)
{
    ctx_t *c = p;
    atomic_store(&c->res[i], conc_rlock_acquire(&c->r, true, CONC_FOREVER));
}

Test(rlock, owner_identity_is_per_thread, .timeout = TU_TIMEOUT)
{
    static ctx_t c = {.r = CONC_RLOCK_INIT};
    static tu_bunch_t b;
    tu_bunch_start(&b, 1, acquire_and_leave_fn, &c);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&c.res[0]), 0);
    cr_assert_not(conc_rlock_is_owned(&c.r));
    cr_assert_eq(conc_rlock_acquire(&c.r, false, CONC_FOREVER), CONC_ETIMEDOUT);
    cr_assert_eq(conc_rlock_release(&c.r), CONC_EPERM);
}
