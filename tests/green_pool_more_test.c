/*
 * gevent.pool.Pool, the rest (issue 17), ported from gevent's test__pool.py:
 * PoolFull on a non-blocking spawn / add (test_pool_full...), Pool(0)
 * (TestPool0.test_wait_full), full / free_count / wait_available
 * (TestPool.test_wait_available...), add / discard / start of an unstarted
 * greenlet (test_add_method...), apply / apply_async with a callback
 * (test_apply, test_apply_async, test_apply_async_callback,
 * test_apply_from_member), map / imap / imap_unordered order and laziness
 * (TestPool.test_map, test_imap*, TestErrorInIterator, test_imap_unordered
 * _no_stop...), unbounded pools (Pool(None)), and the colorless waits:
 * each is cut by kill and by a Timeout scope.
 */
#include "test_util.h"

#define PTR(x) ((void *)(uintptr_t)(x))
#define INT(p) ((int)(uintptr_t)(p))

static void *ret_arg(void *arg) { return arg; }

static void *nap(void *arg) /* sleeps arg ms, returns arg */
{
    conc_sleep(INT(arg) / 1000.0);
    return arg;
}

static void *square_or_fail(void *arg)
{
    int x = INT(arg);
    if (x == 3)
        return conc_fail(CONC_EBROKEN, "three");
    return PTR(x * x);
}

Test(green_pool_more, pool_full_is_efull, .timeout = TU_TIMEOUT)
{
    conc_green_pool_t *p;
    cr_assert_eq(conc_green_pool_new(&p, 2), 0);
    cr_assert_not(conc_green_pool_full(p));
    cr_assert_eq(conc_green_pool_free_count(p), 2);
    cr_assert_eq(conc_green_pool_spawn(p, NULL, nap, PTR(50), 0), 0);
    cr_assert_eq(conc_green_pool_spawn(p, NULL, nap, PTR(50), 0), 0);
    cr_assert(conc_green_pool_full(p));
    cr_assert_eq(conc_green_pool_free_count(p), 0);
    cr_assert_eq(conc_green_pool_spawn(p, NULL, nap, PTR(1), 0), CONC_EFULL, "non-blocking: PoolFull");
    cr_assert_eq(conc_green_pool_spawn(p, NULL, nap, PTR(1), 0.005), CONC_EFULL, "timed out: PoolFull");
    /* a Timeout scope is not PoolFull */
    conc_timeout_begin(0.005);
    cr_assert_eq(conc_green_pool_spawn(p, NULL, nap, PTR(1), CONC_FOREVER), CONC_ETIMEDOUT);
    cr_assert_eq(conc_timeout_end(), 1);
    conc_green_t *g;
    cr_assert_eq(conc_green_new(&g, NULL, ret_arg, NULL), 0);
    cr_assert_eq(conc_green_pool_add(p, g, false, 0), CONC_EFULL);
    cr_assert_eq(conc_green_pool_add(p, g, true, 0.005), CONC_EFULL);
    size_t fc = 9;
    cr_assert_eq(conc_green_pool_wait_available(p, 5, &fc), 0);
    cr_assert_geq(fc, 1);
    cr_assert_eq(conc_green_pool_start(p, g, true, 5), 0);
    cr_assert(conc_green_pool_contains(p, g));
    cr_assert_eq(conc_green_join(g, 5), 0);
    cr_assert_not(conc_green_pool_contains(p, g));
    conc_green_free(g);
    cr_assert_eq(conc_green_pool_join(p, 5), 0);
    cr_assert_eq(conc_green_pool_free(p), 0);
}

Test(green_pool_more, pool_of_size_zero, .timeout = TU_TIMEOUT)
{
    conc_green_pool_t *p;
    cr_assert_eq(conc_green_pool_new(&p, 0), 0, "Pool(0) is allowed");
    cr_assert_eq(conc_green_pool_free_count(p), 0);
    cr_assert(conc_green_pool_full(p));
    size_t fc = 9;
    cr_assert_eq(conc_green_pool_wait_available(p, 0.01, &fc), CONC_ETIMEDOUT);
    cr_assert_eq(fc, 0);
    cr_assert_eq(conc_green_pool_spawn(p, NULL, ret_arg, NULL, 0.01), CONC_EFULL);
    cr_assert_eq(conc_green_pool_join(p, 0), 0, "empty");
    cr_assert_eq(conc_green_pool_free(p), 0);
}

Test(green_pool_more, unbounded, .timeout = TU_TIMEOUT)
{
    conc_green_pool_t *p;
    cr_assert_eq(conc_green_pool_new(&p, CONC_GREEN_POOL_UNBOUNDED), 0);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(conc_green_pool_spawn(p, NULL, nap, PTR(10), 0), 0);
    cr_assert_eq(conc_green_pool_size(p), 100);
    cr_assert_eq(conc_green_pool_free_count(p), 1);
    cr_assert_not(conc_green_pool_full(p));
    cr_assert_eq(conc_green_pool_wait_available(p, 0, NULL), 0);
    cr_assert_eq(conc_green_pool_join(p, 5), 0);
    cr_assert_eq(conc_green_pool_free(p), 0);
}

Test(green_pool_more, add_and_discard, .timeout = TU_TIMEOUT)
{
    conc_green_pool_t *p, *q;
    cr_assert_eq(conc_green_pool_new(&p, 1), 0);
    cr_assert_eq(conc_green_pool_new(&q, 1), 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, nap, PTR(30)), 0);
    cr_assert_eq(conc_green_pool_add(NULL, g, true, 1), CONC_EINVAL);
    cr_assert_eq(conc_green_pool_add(p, NULL, true, 1), CONC_EINVAL);
    cr_assert_eq(conc_green_pool_add(p, g, true, 1), 0);
    cr_assert_eq(conc_green_pool_add(p, g, false, 0), 0, "adding twice does nothing");
    cr_assert_eq(conc_green_pool_size(p), 1);
    cr_assert_eq(conc_green_pool_add(q, g, false, 0), CONC_EPERM, "in another pool");
    cr_assert(conc_green_pool_full(p));
    cr_assert_eq(conc_green_pool_discard(p, g), 0);
    cr_assert_eq(conc_green_pool_size(p), 0);
    cr_assert_not(conc_green_pool_full(p), "the slot is free again");
    cr_assert_not(conc_green_pool_contains(p, g));
    cr_assert_eq(conc_green_pool_discard(p, g), 0, "not a member: nothing");
    cr_assert_eq(conc_green_join(g, 5), 0);
    cr_assert_eq(conc_green_pool_free_count(p), 1, "an ended, discarded one gives nothing back twice");
    cr_assert_eq(conc_green_pool_add(p, g, false, 0), 0, "an ended one is not tracked");
    cr_assert_eq(conc_green_pool_size(p), 0);
    conc_green_free(g);
    /* killing the pool kills an added, unstarted one: it never runs */
    cr_assert_eq(conc_green_new(&g, NULL, ret_arg, NULL), 0);
    cr_assert_eq(conc_green_pool_add(p, g, false, 0), 0);
    cr_assert_eq(conc_green_pool_kill(p, true, 5), 0);
    cr_assert(conc_green_killed(g));
    cr_assert_eq(conc_green_pool_size(p), 0);
    conc_green_free(g);
    cr_assert_eq(conc_green_pool_free(p), 0);
    cr_assert_eq(conc_green_pool_free(q), 0);
}

static conc_green_pool_t *apool;

static void *apply_from_member(void *arg)
{
    void *r = NULL;
    int rc = conc_green_pool_apply(apool, ret_arg, arg, &r); /* pool is full: runs here */
    return rc ? PTR(-1) : r;
}

Test(green_pool_more, apply, .timeout = TU_TIMEOUT)
{
    cr_assert_eq(conc_green_pool_new(&apool, 1), 0);
    void *r = NULL;
    cr_assert_eq(conc_green_pool_apply(NULL, ret_arg, NULL, &r), CONC_EINVAL);
    cr_assert_eq(conc_green_pool_apply(apool, ret_arg, PTR(5), &r), 0);
    cr_assert_eq(r, PTR(5));
    cr_assert_eq(conc_green_pool_apply(apool, square_or_fail, PTR(3), &r), CONC_EFAILED);
    cr_assert_eq(conc_green_pool_apply(apool, apply_from_member, PTR(9), &r), 0);
    cr_assert_eq(r, PTR(9), "apply from a member of a full pool runs in place");
    cr_assert_eq(conc_green_pool_free(apool), 0);
}

static void *apply_killable(void *arg)
{
    void *r;
    return PTR(conc_green_pool_apply(arg, nap, PTR(5000), &r));
}

Test(green_pool_more, apply_is_colorless, .timeout = TU_TIMEOUT)
{
    conc_green_pool_t *p;
    cr_assert_eq(conc_green_pool_new(&p, 1), 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, apply_killable, p), 0);
    cr_assert_eq(conc_sleep(0.01), 0);
    cr_assert_eq(conc_green_kill(g, true, 5), 0);
    cr_assert(conc_green_dead(g));
    conc_green_free(g);
    cr_assert_eq(conc_green_pool_join(p, 5), 0, "its member was killed too");
    void *r;
    conc_timeout_begin(0.01);
    cr_assert_eq(conc_green_pool_apply(p, nap, PTR(5000), &r), CONC_ETIMEDOUT);
    cr_assert_eq(conc_timeout_end(), 1);
    cr_assert_eq(conc_green_pool_join(p, 5), 0);
    cr_assert_eq(conc_green_pool_free(p), 0);
}

static _Atomic int cb_sum;
static void add_result(void *result, void *arg)
{
    (void)arg;
    atomic_fetch_add(&cb_sum, INT(result));
}

Test(green_pool_more, apply_async, .timeout = TU_TIMEOUT)
{
    atomic_store(&cb_sum, 0);
    conc_green_pool_t *p;
    cr_assert_eq(conc_green_pool_new(&p, 1), 0);
    conc_green_t *a, *b, *c;
    double t0 = tu_now();
    /* naps long enough that a blocking call would take 200 ms: the bound
     * below then holds on a loaded machine and under sanitizers too */
    cr_assert_eq(conc_green_pool_apply_async(p, &a, nap, PTR(300), add_result, NULL), 0);
    cr_assert_eq(conc_green_pool_apply_async(p, &b, nap, PTR(200), add_result, NULL), 0, "full: never blocks");
    cr_assert_eq(conc_green_pool_apply_async(p, &c, square_or_fail, PTR(3), add_result, NULL), 0);
    cr_assert_lt(tu_now() - t0, 0.15);
    void *r = NULL;
    cr_assert_eq(conc_green_get(a, 5, &r), 0);
    cr_assert_eq(r, PTR(300));
    cr_assert_eq(conc_green_get(b, 5, &r), 0);
    cr_assert_eq(r, PTR(200), "the helper hands on the member's value");
    cr_assert_eq(conc_green_get(c, 5, &r), CONC_EFAILED, "and its failure");
    cr_assert_eq(conc_green_exception(c, NULL), CONC_EBROKEN);
    cr_assert_eq(atomic_load(&cb_sum), 500, "callbacks for successes only");
    conc_green_free(a);
    conc_green_free(b);
    conc_green_free(c);
    cr_assert_eq(conc_green_pool_join(p, 5), 0);
    cr_assert_eq(conc_green_pool_free(p), 0);
}

static _Atomic int running, peak;
static void *track(void *arg)
{
    int now = atomic_fetch_add(&running, 1) + 1;
    int pk = atomic_load(&peak);
    while (now > pk && !atomic_compare_exchange_weak(&peak, &pk, now)) {
    }
    conc_sleep(INT(arg) / 1000.0);
    atomic_fetch_sub(&running, 1);
    return arg;
}

Test(green_pool_more, map_in_order, .timeout = TU_TIMEOUT)
{
    atomic_store(&peak, 0);
    conc_green_pool_t *p;
    cr_assert_eq(conc_green_pool_new(&p, 3), 0);
    void *args[8], *res[8];
    int ms[8] = {40, 10, 30, 5, 20, 1, 15, 2};
    for (int i = 0; i < 8; i++)
        args[i] = PTR(ms[i]);
    cr_assert_eq(conc_green_pool_map(p, track, args, 8, res, NULL), 0);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(res[i], PTR(ms[i]));
    cr_assert_eq(atomic_load(&peak), 3, "at most the pool's size at once");
    cr_assert_eq(conc_green_pool_map(p, track, NULL, 0, NULL, NULL), 0, "empty");
    for (int i = 0; i < 6; i++)
        args[i] = PTR(i);
    size_t bad = 99;
    cr_assert_eq(conc_green_pool_map(p, square_or_fail, args, 6, res, &bad), CONC_EFAILED);
    cr_assert_eq(bad, 3);
    cr_assert_eq(res[5], PTR(25), "the others still ran");
    cr_assert_eq(conc_green_pool_map(NULL, track, args, 1, res, NULL), CONC_EINVAL);
    cr_assert_eq(conc_green_pool_map(p, track, NULL, 1, res, NULL), CONC_EINVAL);
    cr_assert_eq(conc_green_pool_free(p), 0);
}

Test(green_pool_more, imap_ordered_and_lazy, .timeout = TU_TIMEOUT)
{
    conc_green_pool_t *p;
    cr_assert_eq(conc_green_pool_new(&p, 4), 0);
    void *args[4] = {PTR(60), PTR(1), PTR(30), PTR(2)};
    conc_green_imap_t *it;
    cr_assert_eq(conc_green_pool_imap(&it, p, nap, args, 4, NULL), 0);
    void *r;
    size_t idx;
    double t0 = tu_now();
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(conc_green_imap_next(it, &r, &idx), 0);
        cr_assert_eq(idx, i, "input order");
        cr_assert_eq(r, args[i]);
    }
    cr_assert_lt(tu_now() - t0, 0.06 + TU_SLACK);
    cr_assert_eq(conc_green_imap_next(it, &r, &idx), CONC_EEOF);
    cr_assert_eq(conc_green_imap_next(it, &r, &idx), CONC_EEOF);
    cr_assert_eq(conc_green_imap_free(it), 0);
    cr_assert_eq(conc_green_pool_free(p), 0);
}

Test(green_pool_more, imap_unordered_as_they_finish, .timeout = TU_TIMEOUT)
{
    conc_green_pool_t *p;
    cr_assert_eq(conc_green_pool_new(&p, 4), 0);
    void *args[4] = {PTR(80), PTR(1), PTR(40), PTR(10)};
    conc_green_imap_opts_t o = {.unordered = true};
    conc_green_imap_t *it;
    cr_assert_eq(conc_green_pool_imap(&it, p, nap, args, 4, &o), 0);
    size_t want[4] = {1, 3, 2, 0}, idx;
    void *r;
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(conc_green_imap_next(it, &r, &idx), 0);
        cr_assert_eq(idx, want[i], "completion order");
        cr_assert_eq(r, args[idx]);
    }
    cr_assert_eq(conc_green_imap_next(it, &r, &idx), CONC_EEOF);
    cr_assert_eq(conc_green_imap_free(it), 0);
    cr_assert_eq(conc_green_pool_free(p), 0);
}

Test(green_pool_more, imap_failure_goes_on, .timeout = TU_TIMEOUT)
{
    conc_green_pool_t *p;
    cr_assert_eq(conc_green_pool_new(&p, 2), 0);
    void *args[5] = {PTR(1), PTR(2), PTR(3), PTR(4), PTR(5)};
    conc_green_imap_t *it;
    cr_assert_eq(conc_green_pool_imap(&it, p, square_or_fail, args, 5, NULL), 0);
    void *r;
    size_t idx;
    for (int i = 0; i < 5; i++) {
        int rc = conc_green_imap_next(it, &r, &idx);
        if (i == 2) {
            cr_assert_eq(rc, CONC_EFAILED);
            const char *msg = NULL;
            cr_assert_eq(conc_green_imap_exception(it, idx, &msg), CONC_EBROKEN);
            cr_assert_str_eq(msg, "three");
        } else {
            cr_assert_eq(rc, 0);
            cr_assert_eq(r, PTR((i + 1) * (i + 1)));
        }
    }
    cr_assert_eq(conc_green_imap_next(it, &r, &idx), CONC_EEOF);
    cr_assert_eq(conc_green_imap_free(it), 0);
    cr_assert_eq(conc_green_pool_free(p), 0);
}

static _Atomic int started_items;
static void *count_start(void *arg)
{
    atomic_fetch_add(&started_items, 1);
    return arg;
}

Test(green_pool_more, imap_maxsize_and_early_free, .timeout = TU_TIMEOUT)
{
    atomic_store(&started_items, 0);
    conc_green_pool_t *p;
    cr_assert_eq(conc_green_pool_new(&p, 10), 0);
    void *args[10];
    for (int i = 0; i < 10; i++)
        args[i] = PTR(i);
    conc_green_imap_opts_t o = {.maxsize = 2};
    conc_green_imap_t *it;
    cr_assert_eq(conc_green_pool_imap(&it, p, count_start, args, 10, &o), 0);
    cr_assert_eq(conc_sleep(0.02), 0);
    cr_assert_eq(atomic_load(&started_items), 2, "maxsize results wait unconsumed: the feeder pauses");
    void *r;
    cr_assert_eq(conc_green_imap_next(it, &r, NULL), 0);
    cr_assert_eq(r, PTR(0));
    cr_assert_eq(conc_sleep(0.02), 0);
    cr_assert_eq(atomic_load(&started_items), 3);
    cr_assert_eq(conc_green_imap_free(it), 0);
    cr_assert_eq(conc_sleep(0.02), 0);
    cr_assert_eq(atomic_load(&started_items), 3, "freed: the rest never runs");
    cr_assert_eq(conc_green_pool_size(p), 0);
    cr_assert_eq(conc_green_pool_free(p), 0);
}

static void *imap_killable(void *arg)
{
    conc_green_imap_t *it = arg;
    void *r;
    return PTR(conc_green_imap_next(it, &r, NULL));
}

Test(green_pool_more, imap_next_is_colorless, .timeout = TU_TIMEOUT)
{
    conc_green_pool_t *p;
    cr_assert_eq(conc_green_pool_new(&p, 1), 0);
    void *args[1] = {PTR(5000)};
    conc_green_imap_t *it;
    cr_assert_eq(conc_green_pool_imap(&it, p, nap, args, 1, NULL), 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, imap_killable, it), 0);
    cr_assert_eq(conc_sleep(0.01), 0);
    cr_assert_eq(conc_green_kill(g, true, 5), 0);
    void *rc = NULL;
    cr_assert_eq(conc_green_get(g, 0, &rc), 0);
    conc_green_free(g);
    void *r;
    conc_timeout_begin(0.01);
    cr_assert_eq(conc_green_imap_next(it, &r, NULL), CONC_ETIMEDOUT);
    cr_assert_eq(conc_timeout_end(), 1);
    cr_assert_eq(conc_green_imap_free(it), 0, "kills the sleeping item");
    cr_assert_eq(conc_green_pool_free(p), 0);
}
