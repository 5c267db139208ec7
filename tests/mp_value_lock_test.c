/*
 * multiprocessing.Value / Array with a caller's lock, ported from
 * CPython's _test_multiprocessing.py _TestValue.test_getobj_getlock and
 * _TestArray (lock=<Lock>, lock=<RLock>, lock=False), plus a counter that
 * two fork children increment under a lock shared by two Values.
 */
#include "test_util.h"

#include <sys/wait.h>

#include <conc/ipc.h>

TestSuite(mp_value_lock, .timeout = TU_TIMEOUT);

Test(mp_value_lock, shared_plain_lock)
{
    conc_plock_t *lk;
    cr_assert_eq(conc_plock_new(&lk), 0);
    conc_value_t *a, *b;
    int zero = 0;
    cr_assert_eq(conc_value_new_with_lock(sizeof(int), &zero, NULL, lk, &a), 0);
    cr_assert_eq(conc_value_new_with_lock(sizeof(int), &zero, NULL, lk, &b), 0);
    cr_assert_eq(conc_array_get_plock(a), lk);
    cr_assert_null(conc_array_get_lock(a));
    /* one lock for both: held through a, b cannot take it */
    cr_assert_eq(conc_array_acquire(a, true, CONC_FOREVER), 0);
    cr_assert(conc_plock_locked(lk));
    cr_assert_eq(conc_array_acquire(b, false, CONC_FOREVER), CONC_ETIMEDOUT);
    cr_assert_eq(conc_array_release(a), 0);
    /* two fork children add 500 each to both values, under the lock */
    enum { K = 500 };
    pid_t pids[2];
    for (int c = 0; c < 2; c++) {
        fflush(NULL);
        pids[c] = fork();
        if (pids[c] == 0) {
            for (int i = 0; i < K; i++) {
                conc_array_acquire(a, true, CONC_FOREVER);
                int *x = conc_value_ptr(a), *y = conc_value_ptr(b);
                int v = *x;
                sched_yield();
                *x = v + 1;
                *y += 1;
                conc_array_release(b); /* the same lock */
            }
            _exit(0);
        }
    }
    for (int c = 0; c < 2; c++)
        waitpid(pids[c], NULL, 0);
    cr_assert_eq(*(int *)conc_value_ptr(a), 2 * K);
    cr_assert_eq(*(int *)conc_value_ptr(b), 2 * K);
    conc_array_free(a);
    conc_array_free(b);
    conc_shared_free(lk);
}

Test(mp_value_lock, caller_rlock)
{
    conc_prlock_t *rl;
    cr_assert_eq(conc_prlock_new(&rl), 0);
    conc_array_t *arr;
    long init[3] = {1, 2, 3};
    cr_assert_eq(conc_array_new_with_lock(sizeof(long), 3, init, rl, NULL, &arr), 0);
    cr_assert_eq(conc_array_get_lock(arr), rl); /* get_lock() is the one given */
    cr_assert_null(conc_array_get_plock(arr));
    cr_assert_eq(conc_array_acquire(arr, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_array_acquire(arr, true, CONC_FOREVER), 0); /* an RLock */
    cr_assert_eq(conc_array_release(arr), 0);
    cr_assert_eq(conc_array_release(arr), 0);
    cr_assert_eq(conc_array_release(arr), CONC_EPERM);
    cr_assert_eq(((long *)conc_array_ptr(arr))[2], 3);
    /* attached by name: the caller's lock is out of reach */
    conc_array_t *att;
    cr_assert_eq(conc_array_attach(conc_array_name(arr), &att), 0);
    cr_assert_null(conc_array_get_lock(att));
    cr_assert_eq(conc_array_acquire(att, true, 0), CONC_EINVAL);
    cr_assert_eq(((long *)conc_array_ptr(att))[1], 2);
    conc_array_free(att);
    conc_array_free(arr);
    conc_shared_free(rl);
}

Test(mp_value_lock, raw_and_bad_input)
{
    conc_value_t *v;
    cr_assert_eq(conc_value_new(sizeof(int), NULL, false, &v), 0); /* lock=False */
    cr_assert_null(conc_array_get_lock(v));
    cr_assert_null(conc_array_get_plock(v));
    cr_assert_eq(conc_array_acquire(v, true, 0), CONC_EINVAL);
    conc_array_free(v);
    conc_plock_t *lk;
    conc_prlock_t *rl;
    cr_assert_eq(conc_plock_new(&lk), 0);
    cr_assert_eq(conc_prlock_new(&rl), 0);
    cr_assert_eq(conc_value_new_with_lock(4, NULL, NULL, NULL, &v), CONC_EINVAL);
    cr_assert_eq(conc_value_new_with_lock(4, NULL, rl, lk, &v), CONC_EINVAL);
    cr_assert_eq(conc_value_new_with_lock(0, NULL, rl, NULL, &v), CONC_EINVAL);
    cr_assert_eq(conc_value_new_with_lock(4, NULL, rl, NULL, NULL), CONC_EINVAL);
    conc_shared_free(lk);
    conc_shared_free(rl);
}
