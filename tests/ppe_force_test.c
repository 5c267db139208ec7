/*
 * ProcessPoolExecutor.terminate_workers / kill_workers (Python 3.14),
 * ported from CPython's test_concurrent_futures/test_process_pool.py
 * test_force_shutdown_workers: a task that started is cut off by the
 * signal, futures not yet started are cancelled (or fail, if a worker had
 * taken them), the pool is broken (submit fails), the workers are gone
 * and conc_executor_free reaps them.
 */
#include "test_util.h"

#include <signal.h>

#include <conc/pool.h>

static void setup(void) { unsetenv("BXFI_MAP"); }
TestSuite(ppe_force, .init = setup, .timeout = TU_TIMEOUT);

static int nap(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)len;
    double d;
    memcpy(&d, arg, sizeof d);
    tu_sleep(d);
    return conc_pool_return(out, &d, sizeof d);
}
CONC_POOL_REGISTER(nap);

static void force_case(bool kill_them)
{
    conc_executor_t *ex;
    conc_process_pool_opts_t o = {.max_workers = 1};
    cr_assert_eq(conc_process_pool_new(&ex, &o), 0);
    /* 2 ms: the pool's batch size follows its tasks' measured time
     * (engine.c: 200 us of work per hand-over), so after this warm-up it
     * hands the worker one task beyond the running one and the rest of
     * the backlog stays with the pool, to be cancelled (a 0 s warm-up
     * measured a few us under TSan: all four went to the worker) */
    double warm = 0.002;
    conc_future_t *f;
    /* the worker is up and has run a task */
    cr_assert_eq(conc_process_pool_submit(ex, &f, nap, &warm, sizeof warm), 0);
    cr_assert_eq(conc_future_bytes(f, 10, NULL, NULL), 0);
    conc_future_free(f);
    int pid;
    cr_assert_eq(conc_process_pool_pids(ex, &pid, 1), 1);
    double d = 20;
    conc_future_t *running, *later[4];
    cr_assert_eq(conc_process_pool_submit(ex, &running, nap, &d, sizeof d), 0);
    TU_WAIT_UNTIL(conc_future_running(running), 5);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(conc_process_pool_submit(ex, &later[i], nap, &d, sizeof d), 0);
    tu_sleep(0.05);
    double t0 = tu_now();
    cr_assert_eq(kill_them ? conc_process_pool_kill_workers(ex) : conc_process_pool_terminate_workers(ex), 0);
    /* the running task is cut off: BrokenProcessPool */
    cr_assert_eq(conc_future_bytes(running, 10, NULL, NULL), CONC_EFAILED);
    cr_assert_lt(tu_now() - t0, 5);
    int code = 0;
    const char *msg = NULL;
    conc_future_exception(running, 0, &code, &msg);
    cr_assert_eq(code, CONC_EBROKEN);
    cr_assert(strstr(msg, kill_them ? "kill_workers" : "terminate_workers"), "%s", msg);
    /* the others never ran: cancelled (or broken, if already handed over) */
    int cancelled = 0;
    for (int i = 0; i < 4; i++) {
        int rc = conc_future_bytes(later[i], 10, NULL, NULL);
        cr_assert(rc == CONC_ECANCELLED || rc == CONC_EFAILED, "%s", conc_strerror(rc));
        cancelled += rc == CONC_ECANCELLED;
        conc_future_free(later[i]);
    }
    cr_assert_geq(cancelled, 1, "the backlog was not cancelled");
    /* no more submits */
    cr_assert_eq(conc_process_pool_submit(ex, &f, nap, &warm, sizeof warm), CONC_EBROKEN);
    /* again: harmless */
    cr_assert_eq(conc_process_pool_terminate_workers(ex), 0);
    cr_assert_eq(conc_executor_free(ex), 0);
    cr_assert_lt(tu_now() - t0, 5, "the worker did not die at once");
    cr_assert_eq(kill(pid, 0), -1, "the worker is still there");
    conc_future_free(running);
}

Test(ppe_force, terminate_workers) { force_case(false); }
Test(ppe_force, kill_workers) { force_case(true); }

Test(ppe_force, bad_input)
{
    cr_assert_eq(conc_process_pool_terminate_workers(NULL), CONC_EINVAL);
    cr_assert_eq(conc_process_pool_kill_workers(NULL), CONC_EINVAL);
    conc_executor_t *tp;
    cr_assert_eq(conc_thread_pool_new(&tp, NULL), 0);
    cr_assert_eq(conc_process_pool_kill_workers(tp), CONC_EINVAL);
    conc_executor_free(tp);
}

TU_MAIN_WITH_PROCESS_GUARD()
