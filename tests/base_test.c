/* Tests for conc/base.h: error codes, monotonic clock, sleep, conc_fail. */
#include "test_util.h"

#define FIRST_CODE CONC_EATTR /* the most negative defined code */

Test(base, strerror_every_code, .timeout = TU_TIMEOUT)
{
    const char *unknown = conc_strerror(-1000);
    cr_assert_not_null(unknown);
    cr_assert_str_eq(unknown, "unknown error");
    cr_assert_str_eq(conc_strerror(1), "unknown error");
    cr_assert_str_eq(conc_strerror(FIRST_CODE - 1), "unknown error");
    cr_assert_not_null(conc_strerror(0));

    for (int c = FIRST_CODE; c <= 0; c++) {
        const char *s = conc_strerror(c);
        cr_assert_not_null(s, "strerror(%d) is NULL", c);
        cr_assert_gt(strlen(s), 0, "strerror(%d) is empty", c);
        if (c != 0)
            cr_assert_str_neq(s, "unknown error", "strerror(%d) not described", c);
        for (int d = FIRST_CODE; d < c; d++)
            cr_assert_str_neq(s, conc_strerror(d), "codes %d and %d share a description", c, d);
    }
    cr_assert_not_null(strstr(conc_strerror(CONC_EEMPTY), "Empty"));
}

Test(base, errname_every_code, .timeout = TU_TIMEOUT)
{
    cr_assert_str_eq(conc_errname(0), "OK");
    for (int c = FIRST_CODE - 3; c <= 3; c++) {
        const char *s = conc_errname(c);
        cr_assert_not_null(s, "errname(%d) is NULL", c);
        if (c >= FIRST_CODE && c <= 0)
            cr_assert_gt(strlen(s), 0, "errname(%d) is empty", c);
    }
    cr_assert_str_eq(conc_errname(CONC_ETIMEDOUT), "TimeoutError");
    cr_assert_str_eq(conc_errname(CONC_EPERM), "RuntimeError");
    cr_assert_str_eq(conc_errname(CONC_ENOMEM), "MemoryError");
    cr_assert_str_eq(conc_errname(CONC_EEOF), "EOFError");
    cr_assert_str_eq(conc_errname(CONC_ENOTSUP), "NotImplementedError");
    cr_assert_str_eq(conc_errname(CONC_ERANGE), "OverflowError");
    cr_assert_str_eq(conc_errname(CONC_EOWNERDEAD), "OwnerDeadError");
    cr_assert_str_eq(conc_errname(CONC_EKEY), "KeyError");
    cr_assert_str_eq(conc_errname(CONC_EATTR), "AttributeError");
    cr_assert_not_null(strstr(conc_errname(CONC_ECANCELLED), "CancelledError"));
    cr_assert_not_null(strstr(conc_errname(CONC_EKILLED), "GreenletExit"));
    cr_assert_not_null(strstr(conc_errname(CONC_ELOOPEXIT), "LoopExit"));
    cr_assert_not_null(strstr(conc_errname(CONC_EEMPTY), "Empty"));
    cr_assert_not_null(strstr(conc_errname(CONC_EFULL), "Full"));
    /* one code for every broken thing: a neutral name (the failure's message
     * names what broke: BrokenThreadPool, BrokenProcessPool...) */
    cr_assert_str_eq(conc_errname(CONC_EBROKEN), "BrokenError");
    cr_assert_not_null(strstr(conc_strerror(CONC_EBROKEN), "BrokenBarrierError"));
    cr_assert_not_null(strstr(conc_strerror(CONC_EBROKEN), "BrokenExecutor"));
    const char *inv = conc_errname(CONC_EINVAL);
    cr_assert(strstr(inv, "ValueError") || strstr(inv, "TypeError"), "errname(EINVAL) = %s", inv);
}

Test(base, monotonic_is_monotonic_and_advances, .timeout = TU_TIMEOUT)
{
    double prev = conc_monotonic();
    for (int i = 0; i < 100000; i++) {
        double t = conc_monotonic();
        cr_assert_geq(t, prev, "clock went back: %.9f < %.9f", t, prev);
        prev = t;
    }
    double a = conc_monotonic(), ra = tu_now();
    tu_sleep(0.05);
    double b = conc_monotonic(), rb = tu_now();
    cr_assert_geq(b - a, 0.05 - TU_EPS);
    cr_assert_lt(b - a, 0.05 + TU_SLACK);
    /* It is CLOCK_MONOTONIC in seconds. */
    cr_assert_lt(fabs(a - ra), 0.5, "conc_monotonic %.6f vs CLOCK_MONOTONIC %.6f", a, ra);
    cr_assert_lt(fabs(b - rb), 0.5);
}

Test(base, sleep_thread, .timeout = TU_TIMEOUT)
{
    /* time.sleep(-1) is ValueError */
    cr_assert_eq(conc_sleep_thread(-0.5), CONC_EINVAL);
    cr_assert_eq(conc_sleep_thread(-1.0), CONC_EINVAL);
    cr_assert_eq(conc_sleep_thread(NAN), CONC_EINVAL);
    cr_assert_eq(conc_sleep_thread(-INFINITY), CONC_EINVAL);
    double t = tu_now();
    cr_assert_eq(conc_sleep_thread(0), 0);
    cr_assert_lt(tu_now() - t, 0.5);
    t = tu_now();
    cr_assert_eq(conc_sleep_thread(0.1), 0);
    tu_assert_timeout(tu_now() - t, 0.1);
}

Test(base, fail_records_code_and_message, .timeout = TU_TIMEOUT)
{
    const char *msg = (const char *)1;
    cr_assert_eq(conc_failure(NULL), 0);
    void *r = conc_fail(CONC_EINVAL, "x=%d %s", 42, "bad");
    cr_assert_null(r);
    cr_assert_eq(conc_failure(&msg), CONC_EINVAL);
    cr_assert_not_null(msg);
    cr_assert_str_eq(msg, "x=42 bad");
    cr_assert_eq(conc_failure(NULL), CONC_EINVAL);

    /* A later failure replaces the earlier one. */
    conc_fail(CONC_ETIMEDOUT, "late");
    cr_assert_eq(conc_failure(&msg), CONC_ETIMEDOUT);
    cr_assert_str_eq(msg, "late");

    conc_fail_clear();
    cr_assert_eq(conc_failure(NULL), 0);
    conc_fail_clear(); /* harmless twice */
    cr_assert_eq(conc_failure(NULL), 0);
}

Test(base, fail_zero_or_positive_becomes_efailed, .timeout = TU_TIMEOUT)
{
    conc_fail(0, "zero");
    cr_assert_eq(conc_failure(NULL), CONC_EFAILED);
    conc_fail(7, "seven");
    const char *msg = NULL;
    cr_assert_eq(conc_failure(&msg), CONC_EFAILED);
    cr_assert_str_eq(msg, "seven");
    conc_fail_clear();
}

Test(base, fail_message_truncated, .timeout = TU_TIMEOUT)
{
    char big[1024];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    big[0] = 'Q';
    conc_fail(CONC_EFAILED, "%s", big);
    const char *msg = NULL;
    cr_assert_eq(conc_failure(&msg), CONC_EFAILED);
    cr_assert_not_null(msg);
    size_t n = strlen(msg);
    cr_assert_leq(n, 255, "message not truncated: %zu bytes", n);
    cr_assert_geq(n, 200, "message truncated too much: %zu bytes", n);
    cr_assert_eq(msg[0], 'Q');
    cr_assert_eq(strncmp(msg, big, n), 0);
    conc_fail_clear();
}

static _Atomic int other_seen = 99;
static void *other_thread_failure(void *arg)
{
    (void)arg;
    atomic_store(&other_seen, conc_failure(NULL));
    conc_fail(CONC_EEOF, "in the other thread");
    return NULL;
}

Test(base, failure_is_per_thread, .timeout = TU_TIMEOUT)
{
    conc_fail(CONC_EBROKEN, "main");
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, other_thread_failure, NULL), 0);
    pthread_join(th, NULL);
    cr_assert_eq(atomic_load(&other_seen), 0, "a new thread saw another thread's failure");
    const char *msg = NULL;
    cr_assert_eq(conc_failure(&msg), CONC_EBROKEN);
    cr_assert_str_eq(msg, "main");
    conc_fail_clear();
}
