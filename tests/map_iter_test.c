/*
 * Executor.map as Python has it (issue 17): the lazy result iterator,
 * chunksize and 3.14's buffersize, ported from CPython's
 * test_concurrent_futures/executor.py (test_map, test_map_exception,
 * test_map_timeout, test_map_buffersize_validation,
 * test_map_buffersize_when_buffer_is_full, test_map_buffersize_on_...)
 * and test_process_pool's chunksize tests (same results for any chunk).
 * Colorless: a green thread consuming the iterator parks alone and is cut
 * by kill and Timeout scopes.
 */
#include "test_util.h"

#define PTR(x) ((void *)(uintptr_t)(x))
#define INT(p) ((int)(uintptr_t)(p))

static _Atomic int calls;

static void *square(void *arg)
{
    atomic_fetch_add(&calls, 1);
    int x = INT(arg);
    if (x == 5)
        return conc_fail(CONC_EBROKEN, "five");
    return PTR(x * x);
}

static void *snooze(void *arg)
{
    atomic_fetch_add(&calls, 1);
    tu_sleep(INT(arg) / 1000.0);
    return arg;
}

static conc_executor_t *pool(size_t workers)
{
    conc_thread_pool_opts_t o = {.max_workers = workers};
    conc_executor_t *ex;
    cr_assert_eq(conc_thread_pool_new(&ex, &o), 0);
    return ex;
}

Test(map_iter, in_order_any_chunksize, .timeout = TU_TIMEOUT)
{
    conc_executor_t *ex = pool(4);
    void *args[10];
    for (int i = 0; i < 10; i++)
        args[i] = PTR(i == 5 ? 50 : i);
    size_t chunks[4] = {0, 1, 3, 20};
    for (int k = 0; k < 4; k++) {
        conc_map_opts_t o = {.chunksize = chunks[k]};
        conc_map_iter_t *it;
        cr_assert_eq(conc_map_iter_new(&it, ex, square, args, 10, &o), 0);
        void *r;
        size_t idx;
        for (size_t i = 0; i < 10; i++) {
            cr_assert_eq(conc_map_iter_next(it, &r, &idx), 0);
            cr_assert_eq(idx, i);
            cr_assert_eq(INT(r), INT(args[i]) * INT(args[i]), "chunksize %zu item %zu", chunks[k], i);
        }
        cr_assert_eq(conc_map_iter_next(it, &r, &idx), CONC_EEOF);
        cr_assert_eq(conc_map_iter_free(it), 0);
        /* conc_map with the same chunksize gives the same */
        void *res[10];
        cr_assert_eq(conc_map(ex, square, args, 10, res, &o), 0);
        for (int i = 0; i < 10; i++)
            cr_assert_eq(INT(res[i]), INT(args[i]) * INT(args[i]));
    }
    conc_map_iter_t *it;
    cr_assert_eq(conc_map_iter_new(&it, ex, square, NULL, 0, NULL), 0);
    cr_assert_eq(conc_map_iter_next(it, NULL, NULL), CONC_EEOF, "empty");
    conc_map_iter_free(it);
    cr_assert_eq(conc_map_iter_new(NULL, ex, square, args, 1, NULL), CONC_EINVAL);
    cr_assert_eq(conc_map_iter_new(&it, ex, NULL, args, 1, NULL), CONC_EINVAL);
    cr_assert_eq(conc_map_iter_new(&it, ex, square, NULL, 1, NULL), CONC_EINVAL);
    cr_assert_eq(conc_map_iter_next(NULL, NULL, NULL), CONC_EINVAL);
    conc_executor_free(ex);
}

Test(map_iter, exception_ends_it, .timeout = TU_TIMEOUT)
{
    conc_executor_t *ex = pool(2);
    void *args[8];
    for (int i = 0; i < 8; i++)
        args[i] = PTR(i);
    size_t chunks[2] = {1, 3};
    for (int k = 0; k < 2; k++) {
        conc_map_opts_t o = {.chunksize = chunks[k]};
        conc_map_iter_t *it;
        cr_assert_eq(conc_map_iter_new(&it, ex, square, args, 8, &o), 0);
        void *r;
        size_t idx;
        for (int i = 0; i < 5; i++)
            cr_assert_eq(conc_map_iter_next(it, &r, &idx), 0);
        cr_assert_eq(conc_map_iter_next(it, &r, &idx), CONC_EFAILED, "item 5 raises");
        cr_assert_eq(idx, 5);
        int code;
        const char *msg;
        cr_assert_eq(conc_map_iter_exception(it, &code, &msg), 0);
        cr_assert_eq(code, CONC_EBROKEN);
        cr_assert_str_eq(msg, "five");
        cr_assert_eq(conc_map_iter_next(it, &r, &idx), CONC_EEOF, "the generator is over");
        cr_assert_eq(conc_map_iter_free(it), 0);
        size_t bad = 99;
        void *res[8];
        conc_future_t *ff = NULL;
        conc_map_opts_t mo = {.chunksize = chunks[k], .failed_index = &bad, .failed_future = &ff};
        cr_assert_eq(conc_map(ex, square, args, 8, res, &mo), CONC_EFAILED);
        cr_assert_eq(bad, 5);
        cr_assert_not_null(ff);
        conc_future_free(ff);
    }
    conc_executor_free(ex);
}

Test(map_iter, timeout_from_the_start, .timeout = TU_TIMEOUT)
{
    conc_executor_t *ex = pool(4);
    void *args[3] = {PTR(1), PTR(1), PTR(300)};
    conc_map_opts_t o = {.timeout = 0.1};
    conc_map_iter_t *it;
    cr_assert_eq(conc_map_iter_new(&it, ex, snooze, args, 3, &o), 0);
    void *r;
    cr_assert_eq(conc_map_iter_next(it, &r, NULL), 0);
    cr_assert_eq(conc_map_iter_next(it, &r, NULL), 0);
    double t0 = tu_now();
    cr_assert_eq(conc_map_iter_next(it, &r, NULL), CONC_ETIMEDOUT);
    cr_assert_lt(tu_now() - t0, 0.1 + TU_SLACK);
    cr_assert_eq(conc_map_iter_next(it, &r, NULL), CONC_EEOF);
    cr_assert_eq(conc_map_iter_free(it), 0);
    conc_executor_free(ex);
}

Test(map_iter, buffersize_limits_submissions, .timeout = TU_TIMEOUT)
{
    /* test_map_buffersize_when_buffer_is_full: with nothing consumed, only
     * buffersize tasks are submitted; each next submits one more */
    atomic_store(&calls, 0);
    conc_executor_t *ex = pool(4);
    void *args[10];
    for (int i = 0; i < 10; i++)
        args[i] = PTR(i);
    conc_map_opts_t o = {.buffersize = 2};
    conc_map_iter_t *it;
    cr_assert_eq(conc_map_iter_new(&it, ex, square, args, 4, &o), 0);
    tu_sleep(0.05);
    cr_assert_eq(atomic_load(&calls), 2, "buffersize tasks ahead");
    void *r;
    cr_assert_eq(conc_map_iter_next(it, &r, NULL), 0);
    cr_assert_eq(r, PTR(0));
    tu_sleep(0.05);
    cr_assert_eq(atomic_load(&calls), 3);
    for (int i = 1; i < 4; i++) {
        cr_assert_eq(conc_map_iter_next(it, &r, NULL), 0);
        cr_assert_eq(r, PTR(i * i));
    }
    cr_assert_eq(conc_map_iter_next(it, &r, NULL), CONC_EEOF);
    cr_assert_eq(atomic_load(&calls), 4);
    conc_map_iter_free(it);
    /* freed early: what was never submitted never runs */
    atomic_store(&calls, 0);
    cr_assert_eq(conc_map_iter_new(&it, ex, square, args, 10, &o), 0);
    cr_assert_eq(conc_map_iter_next(it, &r, NULL), 0);
    cr_assert_eq(conc_map_iter_free(it), 0);
    conc_executor_free(ex); /* joins the workers: all calls are in */
    cr_assert_leq(atomic_load(&calls), 3);
}

static void *consume(void *arg)
{
    conc_map_iter_t *it = arg;
    void *r;
    int rc;
    while ((rc = conc_map_iter_next(it, &r, NULL)) == 0) {
    }
    return PTR(rc);
}

Test(map_iter, next_is_colorless, .timeout = TU_TIMEOUT)
{
    conc_executor_t *ex = pool(1);
    void *args[2] = {PTR(1), PTR(3000)};
    conc_map_iter_t *it;
    cr_assert_eq(conc_map_iter_new(&it, ex, snooze, args, 2, NULL), 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, consume, it), 0);
    cr_assert_eq(conc_sleep(0.05), 0, "the main context runs while the consumer waits");
    cr_assert_eq(conc_green_kill(g, true, 5), 0);
    conc_green_free(g);
    conc_timeout_begin(0.02);
    void *r;
    cr_assert_eq(conc_map_iter_next(it, &r, NULL), CONC_ETIMEDOUT, "a scope cut");
    cr_assert_eq(conc_timeout_end(), 1);
    cr_assert_eq(conc_map_iter_free(it), 0);
    conc_executor_free(ex);
}
