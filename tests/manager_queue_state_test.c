/*
 * A Manager's Queue proxy: empty() / full(), ported from CPython's
 * _test_multiprocessing.py _TestQueue.test_put / test_get (empty and full
 * before, during and after filling a Queue(maxsize=6)), seen from a
 * second proxy of the same named queue too; an unbounded queue is never
 * full.
 */
#include "test_util.h"

#include <conc/manager.h>

static void setup(void) { unsetenv("BXFI_MAP"); }
TestSuite(manager_queue_state, .init = setup, .timeout = TU_TIMEOUT);

Test(manager_queue_state, empty_and_full)
{
    conc_manager_t *m;
    conc_manager_opts_t o = {.timeout = 10};
    cr_assert_eq(conc_manager_start(&m, &o), 0);
    conc_mqueue_t *q, *q2;
    cr_assert_eq(conc_manager_queue(m, "Q", 6, &q), 0);
    cr_assert_eq(conc_manager_queue(m, "Q", 0, &q2), 0); /* the same queue */
    bool e = false, f = true;
    cr_assert_eq(conc_mqueue_empty(q, &e), 0);
    cr_assert_eq(conc_mqueue_full(q, &f), 0);
    cr_assert(e);
    cr_assert_not(f);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(conc_mqueue_put(q, &i, sizeof i, false, 0), 0);
        cr_assert_eq(conc_mqueue_empty(q2, &e), 0);
        cr_assert_not(e);
        cr_assert_eq(conc_mqueue_full(q2, &f), 0);
        cr_assert_eq(f, i == 5, "full after %d puts", i + 1);
    }
    cr_assert_eq(conc_mqueue_put(q, "x", 1, false, 0), CONC_EFULL);
    void *v;
    size_t n;
    cr_assert_eq(conc_mqueue_get(q, &v, &n, false, 0), 0);
    free(v);
    cr_assert_eq(conc_mqueue_full(q, &f), 0);
    cr_assert_not(f);
    for (int i = 1; i < 6; i++) {
        cr_assert_eq(conc_mqueue_get(q2, &v, &n, true, 5), 0);
        free(v);
    }
    cr_assert_eq(conc_mqueue_empty(q, &e), 0);
    cr_assert(e);
    /* unbounded: never full */
    conc_mqueue_t *u;
    cr_assert_eq(conc_manager_queue(m, NULL, 0, &u), 0);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(conc_mqueue_put(u, &i, sizeof i, false, 0), 0);
    cr_assert_eq(conc_mqueue_full(u, &f), 0);
    cr_assert_not(f);
    /* bad input */
    cr_assert_eq(conc_mqueue_full(NULL, &f), CONC_EINVAL);
    cr_assert_eq(conc_mqueue_full(q, NULL), CONC_EINVAL);
    cr_assert_eq(conc_mqueue_empty(NULL, &e), CONC_EINVAL);
    cr_assert_eq(conc_mqueue_empty(q, NULL), CONC_EINVAL);
    conc_mqueue_free(u);
    conc_mqueue_free(q);
    conc_mqueue_free(q2);
    conc_manager_free(m);
}

TU_MAIN_WITH_PROCESS_GUARD()
