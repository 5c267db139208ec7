/* futures.c — concurrent.futures: ThreadPoolExecutor, submit, result and
 * exception, map, wait, as_completed, cancel and shutdown. */
#include <conc.h>
#include <stdint.h>
#include <stdio.h>

#define N(p) ((int)(intptr_t)(p)) /* small ints travel as void * */
#define P(n) ((void *)(intptr_t)(n))

static void *square(void *arg)
{
    conc_sleep_thread(0.01 * (5 - N(arg)));        /* later items are quicker */
    return P(N(arg) * N(arg));
}

static void *divide(void *arg)
{
    if (N(arg) == 0)
        return conc_fail(CONC_EINVAL, "division by zero"); /* raise ValueError(...) */
    return P(100 / N(arg));
}

int main(void)
{
    conc_executor_t *pool;
    conc_thread_pool_opts_t opts = {.max_workers = 4};
    conc_thread_pool_new(&pool, &opts);               /* pool = ThreadPoolExecutor(4) */

    conc_future_t *f, *g;
    void *r;
    conc_submit(pool, &f, square, P(7));              /* f = pool.submit(square, 7) */
    conc_future_result(f, CONC_FOREVER, &r);          /* f.result() */
    printf("square(7) = %d\n", N(r));

    int code;
    const char *msg;
    conc_submit(pool, &g, divide, P(0));
    int rc = conc_future_result(g, 5.0, &r);          /* raises: CONC_EFAILED ("Exception") */
    conc_future_exception(g, 0, &code, &msg);         /* g.exception() */
    printf("divide(0): result() -> %s, exception() -> %s: %s\n", conc_errname(rc),
           conc_errname(code), msg);

    void *args[5] = {P(1), P(2), P(3), P(4), P(5)}, *res[5];
    conc_map(pool, square, args, 5, res, NULL);       /* list(pool.map(square, args)) */
    printf("map:");
    for (int i = 0; i < 5; i++)
        printf(" %d", N(res[i]));                     /* 1 4 9 16 25: submission order */
    printf("\n");

    conc_future_t *fs[5], *done[5], *pending[5];
    size_t nd, np;
    for (int i = 0; i < 5; i++)
        conc_submit(pool, &fs[i], square, args[i]);
    conc_wait(fs, 5, CONC_FOREVER, CONC_FIRST_COMPLETED, done, &nd, pending, &np);
    printf("wait(FIRST_COMPLETED): %zu done, %zu not done\n", nd, np);

    conc_as_completed_t *it;
    conc_future_t *next;
    conc_as_completed_new(&it, fs, 5, 10.0);          /* for f in as_completed(fs, 10): */
    printf("as_completed:");
    while (conc_as_completed_next(it, &next) == 0) {
        conc_future_result(next, 0, &r);
        printf(" %d", N(r));                          /* as they finish */
    }
    printf("\n");
    conc_as_completed_free(it);

    conc_future_t *c;
    conc_future_new(&c);                              /* a future nobody runs */
    bool cancelled = conc_future_cancel(c);           /* c.cancel() */
    printf("cancel() -> %s, result() -> %s\n", cancelled ? "True" : "False",
           conc_errname(conc_future_result(c, 0, &r)));  /* CancelledError */

    conc_executor_shutdown(pool, true, false);        /* pool.shutdown(wait=True) */
    rc = conc_submit(pool, &c, square, P(1));         /* RuntimeError in Python */
    printf("submit after shutdown -> %s\n", conc_errname(rc));

    for (int i = 0; i < 5; i++)
        conc_future_free(fs[i]);                      /* every future you got: free once */
    conc_future_free(f);
    conc_future_free(g);
    conc_future_free(c);
    conc_executor_free(pool);
    return 0;
}
