/*
 * gevent.Timeout as an object (issue 17), ported from gevent's
 * test__timeout.py and test__with_timeout.py: start / cancel / pending
 * (test_cancel, test_pending...), a second start is an error
 * (test_start_twice), a custom exception (test_raising_custom_exception,
 * here a code), Timeout(None) never fires and Timeout(-1) at once,
 * cancelling an outer timeout while an inner one is open and in any order,
 * restart after firing, with_timeout with a timeout_value
 * (test__with_timeout.Test.test_timeout_value...), and the mix with
 * begin/end scopes. Each runs on an OS thread and on a green thread.
 */
#include "test_util.h"

#define PTR(x) ((void *)(uintptr_t)(x))
#define INT(p) ((int)(uintptr_t)(p))

typedef void (*body_t)(void);

static void *run_body(void *arg)
{
    ((body_t)(uintptr_t)arg)();
    return NULL;
}

/* Run body on this OS thread, then in a green thread (asserting there
 * is fine: same OS thread, Criterion's context). */
static void both_ways(body_t body)
{
    body();
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, run_body, (void *)(uintptr_t)body), 0);
    cr_assert_eq(conc_green_join(g, 30), 0);
    conc_green_free(g);
}

static void basic(void)
{
    conc_timeout_t t;
    cr_assert_eq(conc_timeout_init(&t, NAN, 0), CONC_EINVAL);
    cr_assert_eq(conc_timeout_init(&t, 1, 5), CONC_EINVAL, "codes are negative");
    cr_assert_eq(conc_timeout_init(&t, 0.02, 0), 0);
    cr_assert_not(conc_timeout_pending(&t));
    cr_assert_eq(conc_timeout_cancel(&t), 0, "cancel before start: nothing");
    cr_assert_eq(conc_timeout_start(&t), 0);
    cr_assert(conc_timeout_pending(&t));
    cr_assert_eq(conc_timeout_start(&t), CONC_EPERM, "already started");
    double t0 = tu_now();
    cr_assert_eq(conc_sleep(5), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t0, 0.02);
    cr_assert_not(conc_timeout_pending(&t), "fired: no longer pending");
    cr_assert(conc_timeout_fired(&t));
    cr_assert_eq(conc_sleep(0.001), 0, "fires once");
    cr_assert_eq(conc_timeout_cancel(&t), 0);
    cr_assert(conc_timeout_fired(&t), "remembered after cancel");
    cr_assert_eq(conc_timeout_cancel(&t), 0, "idempotent");
    /* restart after it fired */
    cr_assert_eq(conc_timeout_start(&t), 0);
    cr_assert_not(conc_timeout_fired(&t));
    cr_assert_eq(conc_sleep(5), CONC_ETIMEDOUT);
    cr_assert_eq(conc_timeout_cancel(&t), 0);
    /* cancelled in time: nothing fires */
    cr_assert_eq(conc_timeout_start_new(&t, 0.02, 0), 0);
    cr_assert_eq(conc_timeout_cancel(&t), 0);
    cr_assert_not(conc_timeout_pending(&t));
    cr_assert_eq(conc_sleep(0.04), 0);
    cr_assert_not(conc_timeout_fired(&t));
}

Test(timeout_obj, start_cancel_pending, .timeout = TU_TIMEOUT) { both_ways(basic); }

static void custom_code(void)
{
    conc_timeout_t t = CONC_TIMEOUT_INIT(0.01, CONC_ECANCELLED);
    cr_assert_eq(conc_timeout_start(&t), 0);
    cr_assert_eq(conc_sleep(5), CONC_ECANCELLED, "the cut wait returns the object's code");
    cr_assert_eq(conc_timeout_cancel(&t), 0);
    /* a queue get cut by it: its code, not Empty */
    conc_queue_t *q;
    cr_assert_eq(conc_queue_new(&q, CONC_FIFO, 0), 0);
    cr_assert_eq(conc_timeout_start(&t), 0);
    void *item;
    cr_assert_eq(conc_queue_get(q, &item, true, CONC_FOREVER), CONC_ECANCELLED);
    cr_assert_eq(conc_timeout_cancel(&t), 0);
    /* the wait's own shorter timeout keeps its own code */
    cr_assert_eq(conc_timeout_start_new(&t, 5, CONC_EBROKEN), 0);
    cr_assert_eq(conc_queue_get(q, &item, true, 0.01), CONC_EEMPTY);
    cr_assert(conc_timeout_pending(&t));
    cr_assert_eq(conc_timeout_cancel(&t), 0);
    conc_queue_free(q, NULL);
}

Test(timeout_obj, custom_code, .timeout = TU_TIMEOUT) { both_ways(custom_code); }

static void none_and_negative(void)
{
    conc_timeout_t t;
    cr_assert_eq(conc_timeout_start_new(&t, CONC_FOREVER, 0), 0);
    cr_assert(conc_timeout_pending(&t));
    cr_assert_eq(conc_sleep(0.01), 0, "Timeout(None) never fires");
    cr_assert_eq(conc_timeout_cancel(&t), 0);
    cr_assert_eq(conc_timeout_start_new(&t, -1, 0), 0);
    cr_assert_eq(conc_sleep(5), CONC_ETIMEDOUT, "Timeout(-1): at once");
    cr_assert_eq(conc_timeout_cancel(&t), 0);
}

Test(timeout_obj, none_and_negative, .timeout = TU_TIMEOUT) { both_ways(none_and_negative); }

static void any_order(void)
{
    conc_timeout_t outer, inner;
    cr_assert_eq(conc_timeout_start_new(&outer, 0.01, CONC_EBROKEN), 0);
    cr_assert_eq(conc_timeout_start_new(&inner, 0.05, 0), 0);
    cr_assert_eq(conc_timeout_cancel(&outer), 0, "the outer one, while the inner is open");
    cr_assert_not(conc_timeout_pending(&outer));
    cr_assert(conc_timeout_pending(&inner));
    double t0 = tu_now();
    cr_assert_eq(conc_sleep(5), CONC_ETIMEDOUT, "the inner one still fires, with its code");
    tu_assert_timeout(tu_now() - t0, 0.05);
    cr_assert_not(conc_timeout_fired(&outer));
    cr_assert_eq(conc_timeout_cancel(&inner), 0);

    /* with begin/end scopes around and inside */
    cr_assert_eq(conc_timeout_begin(10), 0);
    cr_assert_eq(conc_timeout_start_new(&outer, 0.01, CONC_EBROKEN), 0);
    cr_assert_eq(conc_timeout_begin(10), 0);
    cr_assert_eq(conc_timeout_start_new(&inner, 10, 0), 0);
    cr_assert_eq(conc_sleep(5), CONC_EBROKEN, "the earliest one cuts, whatever its place");
    cr_assert_eq(conc_timeout_end(), 0, "end: the innermost begin scope, objects stay");
    cr_assert(conc_timeout_pending(&inner));
    cr_assert(conc_timeout_fired(&outer));
    cr_assert_eq(conc_timeout_cancel(&outer), 0);
    cr_assert_eq(conc_timeout_cancel(&inner), 0);
    cr_assert_eq(conc_timeout_end(), 0);
    cr_assert_eq(conc_timeout_end(), CONC_EPERM, "all closed");

    /* eight slots in all */
    conc_timeout_t many[9];
    for (int i = 0; i < 8; i++)
        cr_assert_eq(conc_timeout_start_new(&many[i], 10, 0), 0);
    cr_assert_eq(conc_timeout_start_new(&many[8], 10, 0), CONC_ERANGE);
    for (int i = 0; i < 8; i += 2) /* odd order */
        cr_assert_eq(conc_timeout_cancel(&many[i]), 0);
    for (int i = 7; i > 0; i -= 2)
        cr_assert_eq(conc_timeout_cancel(&many[i]), 0);
    cr_assert_eq(conc_timeout_end(), CONC_EPERM);
}

Test(timeout_obj, cancel_in_any_order, .timeout = TU_TIMEOUT) { both_ways(any_order); }

static void *other_cancel(void *arg) { return PTR(conc_timeout_cancel(arg)); }

Test(timeout_obj, cancel_from_another_context, .timeout = TU_TIMEOUT)
{
    conc_timeout_t t;
    cr_assert_eq(conc_timeout_start_new(&t, 10, 0), 0);
    conc_thread_t *th;
    void *rc = NULL;
    cr_assert_eq(conc_thread_spawn(&th, other_cancel, &t, NULL), 0);
    cr_assert_eq(conc_thread_join(th, 10, &rc), 0);
    conc_thread_free(th);
    cr_assert_eq(INT(rc), CONC_EPERM);
    cr_assert_not(conc_timeout_pending(NULL));
    cr_assert(conc_timeout_pending(&t));
    cr_assert_eq(conc_timeout_cancel(&t), 0);
    cr_assert_eq(conc_timeout_start(NULL), CONC_EINVAL);
    cr_assert_eq(conc_timeout_cancel(NULL), CONC_EINVAL);
}

static void *slow(void *arg)
{
    int rc = conc_sleep(INT(arg) / 1000.0);
    return rc ? PTR(100) : PTR(1);
}

static void *failing(void *arg)
{
    (void)arg;
    return conc_fail(CONC_EBROKEN, "no");
}

static void with_timeout(void)
{
    void *r = NULL;
    cr_assert_eq(conc_with_timeout(0.01, slow, PTR(5000), PTR(7), &r), CONC_ETIMEDOUT);
    cr_assert_eq(r, PTR(7), "timeout_value");
    cr_assert_eq(conc_with_timeout(5, slow, PTR(1), PTR(7), &r), 0);
    cr_assert_eq(r, PTR(1));
    cr_assert_eq(conc_with_timeout(5, failing, NULL, NULL, &r), CONC_EFAILED);
    cr_assert_eq(conc_with_timeout(5, NULL, NULL, NULL, &r), CONC_EINVAL);
    cr_assert_eq(conc_with_timeout(NAN, slow, NULL, NULL, &r), CONC_EINVAL);
    /* an outer scope that fires first is not this timeout */
    conc_timeout_begin(0.01);
    cr_assert_eq(conc_with_timeout(5, slow, PTR(5000), PTR(7), &r), 0);
    cr_assert_eq(r, PTR(100), "fn saw the outer cut and returned");
    cr_assert_eq(conc_timeout_end(), 1);
}

Test(timeout_obj, with_timeout, .timeout = TU_TIMEOUT) { both_ways(with_timeout); }

static void *victim(void *arg)
{
    (void)arg;
    conc_timeout_t t;
    conc_timeout_start_new(&t, 10, 0);
    int rc = conc_sleep(10); /* killed */
    conc_timeout_cancel(&t);
    return PTR(rc);
}

Test(timeout_obj, kill_beats_it, .timeout = TU_TIMEOUT)
{
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, victim, NULL), 0);
    cr_assert_eq(conc_sleep(0.01), 0);
    cr_assert_eq(conc_green_kill(g, true, 5), 0);
    conc_green_free(g);
}
