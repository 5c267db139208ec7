/*
 * LoopExit must not fire while a thread conc itself started could still
 * wake the waiter (issue 12 section 6): conc's internal helper threads
 * (the process pool's result thread) count as wakers from their start,
 * not only once they first touch a conc context.
 */
#include "test_util.h"

#include <conc/green.h>
#include <conc/pool.h>

TestSuite(green_wakers, .timeout = TU_TIMEOUT);

static int slow_echo(const void *arg, size_t len, conc_pool_out_t *out)
{
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    return conc_pool_return(out, arg, len);
}
CONC_POOL_REGISTER(slow_echo);

static conc_executor_t *ex;

static void *wait_pool_result(void *arg)
{
    (void)arg;
    conc_future_t *f;
    int rc = conc_process_pool_submit(ex, &f, slow_echo, "hi", 2);
    if (rc)
        return conc_fail(rc, "submit");
    rc = conc_future_result(f, CONC_FOREVER, NULL);
    conc_future_free(f);
    if (rc)
        return conc_fail(rc, "result");
    return NULL;
}

/* A green thread in the main thread waits for a process-pool result: the
 * pool's own threads will complete it, so this is no LoopExit. */
Test(green_wakers, no_loopexit_while_a_process_pool_result_is_due)
{
    /* The pool's threads may not have run yet when the wait begins: try
     * it on fresh pools. */
    for (int i = 0; i < 20; i++) {
        conc_process_pool_opts_t o = {.max_workers = 1, .method = CONC_FORK};
        cr_assert_eq(conc_process_pool_new(&ex, &o), 0);
        conc_green_t *g;
        cr_assert_eq(conc_go(&g, wait_pool_result, NULL), 0);
        int rc = conc_green_join(g, CONC_FOREVER);
        cr_assert_eq(rc, 0, "round %d: join: %s", i, conc_errname(rc));
        rc = conc_green_get(g, 0, NULL);
        cr_assert_eq(rc, 0, "round %d: get: %s", i, conc_errname(conc_green_exception(g, NULL)));
        conc_green_free(g);
        conc_executor_free(ex);
    }
}
