/*
 * timeout_rule_test.c — the timeout rule of conc/base.h, call by call
 * (issue 12 §2): CONC_FOREVER is INFINITY, -1.0 is an ordinary negative
 * timeout, NaN is CONC_EINVAL, and a negative timeout follows the Python
 * original of each call — "already up" (no wait, the timeout is reported)
 * or ValueError (CONC_EINVAL before anything changes).
 *
 * Every "already up" check passes -1.0 exactly (the value a remaining
 * time `deadline - now` can take, and the old CONC_FOREVER) and asserts
 * the call returns at once; the test's own timeout catches a wait forever.
 * The process-shared side is in ipc_timeout_rule_test.c.
 */
#include <sys/socket.h>

#include "core/time.h"
#include "test_util.h"

#define P(x) ((void *)(uintptr_t)(x))
#define QUICK 2.0 /* "at once", generously, on a loaded machine */

/* -1.0 the way a caller gets it: a deadline one second in the past. */
static double left_of_past_deadline(void)
{
    double deadline = conc_monotonic() - 1.0;
    double left = deadline - conc_monotonic();
    return left < -0.5 ? left : -1.0;
}

/* ------------------------------------------------------------ helpers */

Test(timeout_rule, forever_is_infinity_and_the_helpers_apply_the_rule, .timeout = TU_TIMEOUT)
{
    cr_assert(isinf(CONC_FOREVER) && CONC_FOREVER > 0);
    int64_t dl = 42;
    cr_assert_eq(conc__deadline(CONC_FOREVER, &dl), 0);
    cr_assert_eq(dl, CONC__NO_DEADLINE);
    cr_assert_eq(conc__deadline(1e300, &dl), 0);
    cr_assert_eq(dl, CONC__NO_DEADLINE, "too large to represent waits forever");
    cr_assert_eq(conc__deadline(-1.0, &dl), 0);
    cr_assert_eq(dl, 0, "-1.0 is already up, not forever");
    dl = 42;
    cr_assert_eq(conc__deadline(-INFINITY, &dl), 0);
    cr_assert_eq(dl, 0);
    dl = 42;
    cr_assert_eq(conc__deadline(NAN, &dl), CONC_EINVAL);
    cr_assert_eq(dl, 42);
    int64_t now = conc__now_ns();
    cr_assert_eq(conc__deadline(0, &dl), 0);
    cr_assert_geq(dl, now);
    cr_assert_lt(dl, now + 1000000000LL);

    cr_assert_eq(conc__deadline_strict(-1.0, &dl), CONC_EINVAL);
    cr_assert_eq(conc__deadline_strict(-1e-9, &dl), CONC_EINVAL);
    cr_assert_eq(conc__deadline_strict(-INFINITY, &dl), CONC_EINVAL);
    cr_assert_eq(conc__deadline_strict(NAN, &dl), CONC_EINVAL);
    cr_assert_eq(conc__deadline_strict(CONC_FOREVER, &dl), 0);
    cr_assert_eq(dl, CONC__NO_DEADLINE);

    /* blocking=false takes no timeout: only CONC_FOREVER (Python's -1
     * default) is allowed, and gives deadline 0 (try once) */
    cr_assert_eq(conc__acquire_deadline(false, CONC_FOREVER, &dl), 0);
    cr_assert_eq(dl, 0);
    cr_assert_eq(conc__acquire_deadline(false, 0, &dl), CONC_EINVAL);
    cr_assert_eq(conc__acquire_deadline(false, -1.0, &dl), CONC_EINVAL);
    cr_assert_eq(conc__acquire_deadline_lenient(false, -1.0, &dl), CONC_EINVAL);
    cr_assert_eq(conc__acquire_deadline(true, -1.0, &dl), CONC_EINVAL);
    cr_assert_eq(conc__acquire_deadline_lenient(true, -1.0, &dl), 0);
    cr_assert_eq(dl, 0);
}

/* --------------------------------------------------------------- sync */

Test(timeout_rule, lock_rlock_condition_acquire_are_strict, .timeout = TU_TIMEOUT)
{
    conc_lock_t l = CONC_LOCK_INIT;
    conc_rlock_t r = CONC_RLOCK_INIT;
    conc_cond_t c = CONC_COND_INIT;
    const double neg[] = {-1.0, -0.5, -1e-9, -INFINITY, NAN};
    for (size_t i = 0; i < sizeof neg / sizeof neg[0]; i++) {
        cr_assert_eq(conc_lock_acquire(&l, true, neg[i]), CONC_EINVAL, "lock %g", neg[i]);
        cr_assert_eq((conc_lock_acquire)(&l, true, neg[i]), CONC_EINVAL, "lock (no inline) %g", neg[i]);
        cr_assert_eq(conc_rlock_acquire(&r, true, neg[i]), CONC_EINVAL, "rlock %g", neg[i]);
        cr_assert_eq(conc_cond_acquire(&c, true, neg[i]), CONC_EINVAL, "cond %g", neg[i]);
    }
    cr_assert_not(conc_lock_locked(&l), "a refused acquire took the lock");
    cr_assert_eq(conc_rlock_level(&r), 0);
    cr_assert_eq(conc_cond_release(&c), CONC_EPERM, "a refused acquire took the condition's lock");
    /* held, so a strict call cannot hide behind the fast path either */
    cr_assert_eq(conc_rlock_acquire(&r, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_rlock_acquire(&r, true, -1.0), CONC_EINVAL);
    cr_assert_eq(conc_rlock_level(&r), 1, "a refused re-acquire counted a level");
    cr_assert_eq(conc_rlock_release(&r), 0);
    /* blocking=false: only CONC_FOREVER */
    cr_assert_eq(conc_lock_acquire(&l, false, -1.0), CONC_EINVAL);
    cr_assert_eq(conc_lock_acquire(&l, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_lock_release(&l), 0);
}

Test(timeout_rule, semaphore_acquire_negative_is_one_try, .timeout = TU_TIMEOUT)
{
    conc_semaphore_t s = CONC_SEMAPHORE_INIT(1);
    double t0 = tu_now();
    cr_assert_eq(conc_semaphore_acquire(&s, true, -1.0), 0, "a free unit is taken");
    cr_assert_eq(conc_semaphore_acquire(&s, true, -1.0), CONC_ETIMEDOUT);
    cr_assert_eq(conc_semaphore_acquire(&s, true, left_of_past_deadline()), CONC_ETIMEDOUT);
    cr_assert_eq(conc_semaphore_acquire(&s, true, -INFINITY), CONC_ETIMEDOUT);
    cr_assert_lt(tu_now() - t0, QUICK);
    cr_assert_eq(conc_semaphore_value(&s), 0);
    cr_assert_eq(conc_semaphore_acquire(&s, false, -1.0), CONC_EINVAL, "blocking=false with a timeout");
    cr_assert_eq(conc_semaphore_acquire(&s, true, NAN), CONC_EINVAL);
    cr_assert_eq(conc_semaphore_release(&s, 1), 0);
}

Test(timeout_rule, event_wait_negative_is_already_up, .timeout = TU_TIMEOUT)
{
    conc_event_t e = CONC_EVENT_INIT;
    double t0 = tu_now();
    cr_assert_eq(conc_event_wait(&e, -1.0), CONC_ETIMEDOUT);
    cr_assert_eq(conc_event_wait(&e, left_of_past_deadline()), CONC_ETIMEDOUT);
    cr_assert_lt(tu_now() - t0, QUICK);
    cr_assert_not(conc_event_is_set(&e));
    conc_event_set(&e);
    cr_assert_eq(conc_event_wait(&e, -1.0), 0);
}

struct flag {
    bool v;
};
static bool flag_true(void *a) { return ((struct flag *)a)->v; }

Test(timeout_rule, condition_wait_negative_releases_and_retakes, .timeout = TU_TIMEOUT)
{
    conc_cond_t c = CONC_COND_INIT;
    cr_assert_eq(conc_cond_acquire(&c, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_cond_acquire(&c, true, CONC_FOREVER), 0); /* RLock level 2 */
    double t0 = tu_now();
    cr_assert_eq(conc_cond_wait(&c, -1.0), CONC_ETIMEDOUT);
    struct flag f = {false};
    cr_assert_eq(conc_cond_wait_for(&c, flag_true, &f, -1.0), CONC_ETIMEDOUT);
    f.v = true;
    cr_assert_eq(conc_cond_wait_for(&c, flag_true, &f, -1.0), 0, "pred holds: no wait needed");
    cr_assert_lt(tu_now() - t0, QUICK);
    cr_assert_eq(conc_rlock_level(&c.own), 2, "the lock came back with its level");
    cr_assert_eq(conc_cond_release(&c), 0);
    cr_assert_eq(conc_cond_release(&c), 0);
    cr_assert_eq(conc_cond_wait(&c, -1.0), CONC_EPERM, "not holding the lock");
}

Test(timeout_rule, barrier_wait_negative_breaks_unless_last, .timeout = TU_TIMEOUT)
{
    conc_barrier_t b;
    cr_assert_eq(conc_barrier_init(&b, 1, NULL, NULL, CONC_FOREVER), 0);
    int idx = -1;
    cr_assert_eq(conc_barrier_wait(&b, -1.0, &idx), 0, "the last party does not wait");
    cr_assert_eq(idx, 0);

    cr_assert_eq(conc_barrier_init(&b, 2, NULL, NULL, CONC_FOREVER), 0);
    double t0 = tu_now();
    cr_assert_eq(conc_barrier_wait(&b, -1.0, NULL), CONC_EBROKEN);
    cr_assert_lt(tu_now() - t0, QUICK);
    cr_assert(conc_barrier_broken(&b), "a timed-out waiter breaks the barrier, as in Python");
    cr_assert_eq(conc_barrier_reset(&b), 0);

    /* a negative default timeout: Python accepts it; every default wait
     * is already up; CONC_BARRIER_DEFAULT is not a negative number a
     * remaining time can equal */
    cr_assert_eq(conc_barrier_init(&b, 2, NULL, NULL, -1.0), 0);
    cr_assert_eq(conc_barrier_wait(&b, CONC_BARRIER_DEFAULT, NULL), CONC_EBROKEN);
    cr_assert(isinf(CONC_BARRIER_DEFAULT) && CONC_BARRIER_DEFAULT < 0);
    cr_assert_eq(conc_barrier_init(&b, 2, NULL, NULL, NAN), CONC_EINVAL);
}

/* -------------------------------------------------------------- queue */

Test(timeout_rule, queue_get_and_bounded_put_are_strict_unbounded_put_ignores, .timeout = TU_TIMEOUT)
{
    conc_queue_t *bq, *uq, *sq;
    cr_assert_eq(conc_queue_new(&bq, CONC_FIFO, 1), 0);
    cr_assert_eq(conc_queue_new(&uq, CONC_FIFO, 0), 0);
    cr_assert_eq(conc_queue_new(&sq, CONC_SIMPLE, 0), 0);
    void *it = P(0xdead);
    cr_assert_eq(conc_queue_get(bq, &it, true, -1.0), CONC_EINVAL);
    cr_assert_eq(conc_queue_get(uq, &it, true, -1.0), CONC_EINVAL);
    cr_assert_eq(conc_queue_get(sq, &it, true, -1.0), CONC_EINVAL);
    cr_assert_eq(it, P(0xdead));
    cr_assert_eq(conc_queue_put(bq, P(1), true, -1.0), CONC_EINVAL, "bounded put: ValueError");
    cr_assert_eq(conc_queue_qsize(bq), 0);
    cr_assert_eq(conc_queue_put(bq, P(1), true, 0), 0);
    cr_assert_eq(conc_queue_put(bq, P(2), true, -1.0), CONC_EINVAL, "full bounded put: ValueError");
    cr_assert_eq(conc_queue_get(bq, &it, true, -1.0), CONC_EINVAL, "non-empty get: ValueError too");
    cr_assert_eq(conc_queue_qsize(bq), 1, "a refused call changed the queue");
    cr_assert_eq(conc_queue_unfinished_tasks(bq), 1);
    /* an unbounded put ignores its timeout, as Python's does */
    cr_assert_eq(conc_queue_put(uq, P(3), true, -1.0), 0);
    cr_assert_eq(conc_queue_put(sq, P(4), true, -1.0), 0);
    cr_assert_eq(conc_queue_put(sq, P(5), true, NAN), CONC_EINVAL, "NaN is still a bug");
    cr_assert_eq(conc_queue_qsize(uq), 1);
    cr_assert_eq(conc_queue_qsize(sq), 1);
    /* join and select have no Python rule: already up */
    double t0 = tu_now();
    cr_assert_eq(conc_queue_join(bq, -1.0), CONC_ETIMEDOUT);
    conc_queue_t *qs[1] = {bq};
    size_t idx;
    cr_assert_eq(conc_queue_get(bq, &it, false, 0), 0);
    cr_assert_eq(conc_queue_select(qs, 1, &idx, &it, -1.0), CONC_EEMPTY);
    cr_assert_lt(tu_now() - t0, QUICK);
    cr_assert_eq(conc_queue_free(bq, NULL), 0);
    cr_assert_eq(conc_queue_free(uq, NULL), 0);
    cr_assert_eq(conc_queue_free(sq, NULL), 0);
}

/* ------------------------------------------------------- thread, timer */

static conc_event_t thread_gate = CONC_EVENT_INIT;
static void *gated(void *arg)
{
    (void)arg;
    conc_event_wait(&thread_gate, 30);
    return P(7);
}

Test(timeout_rule, thread_join_negative_is_a_poll, .timeout = TU_TIMEOUT)
{
    conc_event_clear(&thread_gate);
    conc_thread_t *t;
    cr_assert_eq(conc_thread_spawn(&t, gated, NULL, NULL), 0);
    double t0 = tu_now();
    cr_assert_eq(conc_thread_join(t, -1.0, NULL), CONC_ETIMEDOUT);
    cr_assert_eq(conc_thread_join(t, left_of_past_deadline(), NULL), CONC_ETIMEDOUT);
    cr_assert_lt(tu_now() - t0, QUICK);
    cr_assert_eq(conc_thread_join(t, NAN, NULL), CONC_EINVAL);
    conc_event_set(&thread_gate);
    void *r = NULL;
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, &r), 0);
    cr_assert_eq(r, P(7));
    cr_assert_eq(conc_thread_join(t, -1.0, NULL), 0, "an ended thread joins even with no time");
    cr_assert_eq(conc_thread_free(t), 0);
}

static atomic_int fired;
static void fire(void *arg)
{
    (void)arg;
    atomic_fetch_add(&fired, 1);
}

Test(timeout_rule, timer_negative_interval_fires_at_once_forever_never, .timeout = TU_TIMEOUT)
{
    atomic_store(&fired, 0);
    conc_timer_t *t, *never;
    double t0 = tu_now();
    cr_assert_eq(conc_timer_start(&t, -1.0, fire, NULL), 0, "Timer(-1, f): fires at once");
    cr_assert_eq(conc_timer_join(t, 10), 0);
    cr_assert_lt(tu_now() - t0, QUICK);
    cr_assert_eq(atomic_load(&fired), 1);
    cr_assert(conc_timer_fired(t));
    cr_assert_eq(conc_timer_start(&never, CONC_FOREVER, fire, NULL), 0);
    cr_assert_eq(conc_timer_join(never, -1.0), CONC_ETIMEDOUT, "pending: join(-1) is a poll");
    cr_assert_eq(conc_timer_cancel(never), 0);
    cr_assert_eq(conc_timer_join(never, 10), 0);
    cr_assert_eq(atomic_load(&fired), 1);
    cr_assert_eq(conc_timer_start(&never, NAN, fire, NULL), CONC_EINVAL);
    conc_timer_free(t);
    conc_timer_free(never);
}

/* ------------------------------------------------------------ futures */

static conc_event_t pool_gate = CONC_EVENT_INIT;
static void *pool_gated(void *arg)
{
    conc_event_wait(&pool_gate, 30);
    return arg;
}

Test(timeout_rule, futures_waits_negative_are_already_up, .timeout = TU_TIMEOUT)
{
    conc_event_clear(&pool_gate);
    conc_executor_t *ex;
    conc_thread_pool_opts_t po = {.max_workers = 1};
    cr_assert_eq(conc_thread_pool_new(&ex, &po), 0);
    conc_future_t *busy, *done;
    cr_assert_eq(conc_submit(ex, &busy, pool_gated, P(1)), 0);
    cr_assert_eq(conc_future_new(&done), 0);
    cr_assert_eq(conc_future_set_result(done, P(2)), 0);

    double t0 = tu_now();
    void *r;
    int code;
    cr_assert_eq(conc_future_result(busy, -1.0, &r), CONC_ETIMEDOUT);
    cr_assert_eq(conc_future_exception(busy, left_of_past_deadline(), &code, NULL), CONC_ETIMEDOUT);
    cr_assert_eq(conc_future_result(done, -1.0, &r), 0);
    cr_assert_eq(r, P(2));

    conc_future_t *fs[2] = {busy, done}, *d[2], *nd[2];
    size_t nd_n = 0, d_n = 0;
    cr_assert_eq(conc_wait(fs, 2, -1.0, CONC_ALL_COMPLETED, d, &d_n, nd, &nd_n), 0);
    cr_assert_eq(d_n, 1);
    cr_assert_eq(nd_n, 1);
    cr_assert_eq(nd[0], busy);

    conc_as_completed_t *it;
    conc_future_t *got;
    cr_assert_eq(conc_as_completed_new(&it, fs, 2, -1.0), 0);
    cr_assert_eq(conc_as_completed_next(it, &got), 0, "the done future comes first");
    cr_assert_eq(got, done);
    cr_assert_eq(conc_as_completed_next(it, &got), CONC_ETIMEDOUT);
    cr_assert_eq(conc_as_completed_free(it), 0);

    /* map with a negative timeout: nothing waited for, the rest cancelled */
    void *args[2] = {P(3), P(4)}, *res[2];
    conc_map_opts_t mo = {.timeout = -1.0};
    cr_assert_eq(conc_map(ex, pool_gated, args, 2, res, &mo), CONC_ETIMEDOUT);
    cr_assert_lt(tu_now() - t0, QUICK);

    conc_event_set(&pool_gate);
    cr_assert_eq(conc_future_result(busy, 30, &r), 0);
    conc_future_free(busy);
    conc_future_free(done);
    cr_assert_eq(conc_executor_free(ex), 0);
}

/* -------------------------------------------------------------- green */

static atomic_int green_ran;
static void *green_mark(void *arg)
{
    (void)arg;
    atomic_store(&green_ran, 1);
    return NULL;
}
static void *green_wait_event(void *arg)
{
    conc_event_wait(arg, CONC_FOREVER);
    return NULL;
}

Test(timeout_rule, green_waits_negative_are_already_up_sleep_yields, .timeout = TU_TIMEOUT)
{
    atomic_store(&green_ran, 0);
    conc_green_t *g, *w;
    cr_assert_eq(conc_go(&g, green_mark, NULL), 0);
    cr_assert_eq(conc_sleep(-1.0), 0, "gevent.sleep(-1) is a yield");
    cr_assert_eq(atomic_load(&green_ran), 1, "the yield let the ready green thread run");
    cr_assert_eq(conc_sleep(NAN), CONC_EINVAL);
    cr_assert_eq(conc_green_join(g, CONC_FOREVER), 0);

    conc_event_t ev = CONC_EVENT_INIT;
    cr_assert_eq(conc_go(&w, green_wait_event, &ev), 0);
    cr_assert_eq(conc_yield(), 0);
    double t0 = tu_now();
    cr_assert_eq(conc_green_join(w, -1.0), CONC_ETIMEDOUT);
    cr_assert_eq(conc_green_get(w, left_of_past_deadline(), NULL), CONC_ETIMEDOUT);
    conc_green_t *both[2] = {g, w};
    cr_assert_eq(conc_green_joinall(both, 2, -1.0), CONC_ETIMEDOUT);
    /* gevent.Timeout(-1): a scope that has already fired */
    cr_assert_eq(conc_timeout_begin(-1.0), 0);
    cr_assert_eq(conc_event_wait(&ev, CONC_FOREVER), CONC_ETIMEDOUT);
    cr_assert_eq(conc_timeout_end(), 1);
    /* a green Pool full of a waiting member: spawn(-1) does not wait */
    conc_green_pool_t *gp;
    cr_assert_eq(conc_green_pool_new(&gp, 1), 0);
    cr_assert_eq(conc_green_pool_spawn(gp, NULL, green_wait_event, &ev, -1.0), 0, "a free slot: taken");
    cr_assert_eq(conc_green_pool_spawn(gp, NULL, green_mark, NULL, -1.0), CONC_EFULL, "PoolFull");
    cr_assert_eq(conc_green_pool_size(gp), 1, "the refused spawn took nothing");
    cr_assert_eq(conc_green_pool_join(gp, -1.0), CONC_ETIMEDOUT);
    cr_assert_lt(tu_now() - t0, QUICK);
    conc_event_set(&ev);
    cr_assert_eq(conc_green_pool_join(gp, CONC_FOREVER), 0);
    cr_assert_eq(conc_green_pool_free(gp), 0);
    cr_assert_eq(conc_green_join(w, CONC_FOREVER), 0);
    conc_green_free(g);
    conc_green_free(w);
}

/* ----------------------------------------------------------------- io */

Test(timeout_rule, io_socket_calls_strict_wait_read_already_up, .timeout = TU_TIMEOUT)
{
    int s[2];
    cr_assert_eq(conc_socketpair(s), 0);
    char b[4];
    cr_assert_eq(conc_read(s[0], b, sizeof b, -1.0), CONC_EINVAL, "settimeout(-1): ValueError");
    cr_assert_eq(conc_recv(s[0], b, sizeof b, 0, -1.0), CONC_EINVAL);
    cr_assert_eq(conc_write(s[1], "x", 1, -1.0), CONC_EINVAL);
    cr_assert_eq(conc_accept(s[0], NULL, NULL, -1.0), CONC_EINVAL);
    cr_assert_eq(conc_tcp_dial("127.0.0.1", 1, -1.0, &(int){0}), CONC_EINVAL);
    double t0 = tu_now();
    cr_assert_eq(conc_wait_read(s[0], -1.0), CONC_ETIMEDOUT, "gevent wait_read: already up");
    cr_assert_lt(tu_now() - t0, QUICK);
    cr_assert_eq(conc_write(s[1], "x", 1, CONC_FOREVER), 1);
    cr_assert_eq(conc_wait_read(s[0], -1.0), 0, "ready: one check succeeds");
    cr_assert_eq(conc_wait_write(s[0], -1.0), 0);
    cr_assert_eq(conc_wait_read(s[0], NAN), CONC_EINVAL);
    close(s[0]);
    close(s[1]);
}
