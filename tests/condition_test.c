/* conc_cond_t: the behaviours of CPython's lock_tests.ConditionTests, over an
 * embedded RLock (Condition()), a Lock and an RLock. */
#include "test_util.h"

enum { K_DEFAULT, K_LOCK, K_RLOCK, K_COUNT };
static const char *kind_name[] = {"default", "lock", "rlock"};

typedef struct {
    conc_cond_t c;
    conc_lock_t l;
    conc_rlock_t r;
    int kind;
    /* shared state, protected by the condition's lock */
    int waiting;  /* threads inside wait */
    int woken;    /* threads that returned from wait */
    int phase;
    int state;
    int order[TU_MAX_BUNCH];
    int norder;
    /* per-thread results */
    atomic_int res[TU_MAX_BUNCH];
    atomic_int held_after[TU_MAX_BUNCH];
    atomic_int phase_seen[TU_MAX_BUNCH];
    double times[TU_MAX_BUNCH];
    double timeout;
    atomic_int stop;
} ctx_t;

static void setup(ctx_t *x, int kind)
{
    memset(x, 0, sizeof *x);
    x->kind = kind;
    conc_lock_init(&x->l);
    conc_rlock_init(&x->r);
    int rc = kind == K_DEFAULT ? conc_cond_init(&x->c, NULL)
             : kind == K_LOCK  ? conc_cond_init(&x->c, &x->l)
                               : conc_cond_init_rlock(&x->c, &x->r);
    cr_assert_eq(rc, 0);
}

/* Does the calling thread hold the condition's lock? */
static bool held(ctx_t *x)
{
    switch (x->kind) {
    case K_LOCK:
        return conc_lock_locked(&x->l);
    case K_RLOCK:
        return conc_rlock_is_owned(&x->r);
    default:
        return conc_rlock_is_owned(&x->c.own);
    }
}

static void lock(ctx_t *x) { cr_assert_eq(conc_cond_acquire(&x->c, true, CONC_FOREVER), 0); }
static void unlock(ctx_t *x) { cr_assert_eq(conc_cond_release(&x->c), 0); }

Test(condition, null_pointers_and_bad_args, .timeout = TU_TIMEOUT)
{
    conc_rlock_t r = CONC_RLOCK_INIT;
    cr_assert_eq(conc_cond_init(NULL, NULL), CONC_EINVAL);
    cr_assert_eq(conc_cond_init_rlock(NULL, &r), CONC_EINVAL);
    cr_assert_eq(conc_cond_acquire(NULL, true, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc_cond_release(NULL), CONC_EINVAL);
    cr_assert_eq(conc_cond_wait(NULL, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc_cond_notify(NULL, 1), CONC_EINVAL);
    cr_assert_eq(conc_cond_notify_all(NULL), CONC_EINVAL);

    conc_cond_t c = CONC_COND_INIT;
    cr_assert_eq(conc_cond_acquire(&c, false, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_cond_acquire(&c, true, -3), CONC_EINVAL);
    cr_assert_eq(conc_cond_acquire(&c, true, NAN), CONC_EINVAL);
    cr_assert_eq(conc_cond_acquire(&c, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_cond_notify(&c, -1), CONC_EINVAL);
    cr_assert_eq(conc_cond_notify(&c, -1000), CONC_EINVAL);
    cr_assert_eq(conc_cond_notify(&c, 0), 0);
    cr_assert_eq(conc_cond_notify(&c, 5), 0); /* nobody waiting: fine */
    cr_assert_eq(conc_cond_notify_all(&c), 0);
    cr_assert_eq(conc_cond_wait(&c, -0.5), CONC_ETIMEDOUT); /* already up */
    cr_assert_eq(conc_cond_wait(&c, NAN), CONC_EINVAL);
    cr_assert_eq(conc_cond_wait_for(&c, NULL, NULL, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_cond_wait_for(NULL, NULL, NULL, 1.0), CONC_EINVAL);
    /* Invalid calls did not drop the lock. */
    cr_assert(conc_rlock_is_owned(&c.own));
    cr_assert_eq(conc_rlock_level(&c.own), 1);
    cr_assert_eq(conc_cond_release(&c), 0);
}

Test(condition, acquire_default_is_reentrant, .timeout = TU_TIMEOUT)
{
    conc_cond_t c = CONC_COND_INIT;
    cr_assert_eq(conc_cond_acquire(&c, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_cond_acquire(&c, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_cond_release(&c), 0);
    cr_assert_eq(conc_cond_release(&c), 0);
    cr_assert_eq(conc_cond_release(&c), CONC_EPERM);

    conc_cond_t z;
    memset(&z, 0, sizeof z); /* zero-initialised: own RLock */
    cr_assert_eq(conc_cond_acquire(&z, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_cond_acquire(&z, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_cond_release(&z), 0);
    cr_assert_eq(conc_cond_release(&z), 0);
}

Test(condition, acquire_over_lock, .timeout = TU_TIMEOUT)
{
    conc_lock_t l = CONC_LOCK_INIT;
    conc_cond_t c;
    cr_assert_eq(conc_cond_init(&c, &l), 0);
    cr_assert_eq(conc_cond_acquire(&c, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_lock_acquire(&l, false, CONC_FOREVER), CONC_ETIMEDOUT);
    cr_assert_eq(conc_cond_release(&c), 0);
    cr_assert_eq(conc_lock_acquire(&l, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_cond_acquire(&c, false, CONC_FOREVER), CONC_ETIMEDOUT);
    cr_assert_eq(conc_lock_release(&l), 0);
    cr_assert_eq(conc_cond_acquire(&c, true, CONC_FOREVER), 0);
    cr_assert(conc_lock_locked(&l));
    cr_assert_eq(conc_cond_release(&c), 0);
    cr_assert_not(conc_lock_locked(&l));
}

Test(condition, acquire_over_rlock, .timeout = TU_TIMEOUT)
{
    conc_rlock_t r = CONC_RLOCK_INIT;
    conc_cond_t c;
    cr_assert_eq(conc_cond_init_rlock(&c, &r), 0);
    cr_assert_eq(conc_cond_acquire(&c, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_rlock_level(&r), 1);
    cr_assert_eq(conc_rlock_acquire(&r, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_cond_acquire(&c, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_rlock_level(&r), 3);
    cr_assert_eq(conc_cond_release(&c), 0);
    cr_assert_eq(conc_rlock_release(&r), 0);
    cr_assert_eq(conc_cond_release(&c), 0);
    cr_assert_not(conc_rlock_is_owned(&r));
}

Test(condition, unacquired_calls_are_eperm, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    for (int k = 0; k < K_COUNT; k++) {
        setup(&x, k);
        cr_assert_eq(conc_cond_wait(&x.c, CONC_FOREVER), CONC_EPERM, "%s", kind_name[k]);
        cr_assert_eq(conc_cond_wait(&x.c, 0.1), CONC_EPERM, "%s", kind_name[k]);
        cr_assert_eq(conc_cond_notify(&x.c, 1), CONC_EPERM, "%s", kind_name[k]);
        cr_assert_eq(conc_cond_notify_all(&x.c), CONC_EPERM, "%s", kind_name[k]);
        cr_assert_eq(conc_cond_release(&x.c), CONC_EPERM, "%s", kind_name[k]);
        cr_assert_not(held(&x), "%s", kind_name[k]);
    }
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

Test(condition, unacquired_wait_for_is_eperm, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    for (int k = 0; k < K_COUNT; k++) {
        setup(&x, k);
        cr_assert_eq(conc_cond_wait_for(&x.c, never, NULL, 0.1), CONC_EPERM, "%s", kind_name[k]);
    }
}

/* An RLock held by another thread is not held by us. */
static void hold_rlock_fn(void *p, int i)
{
    (void)i;
    ctx_t *x = p;
    conc_cond_acquire(&x->c, true, CONC_FOREVER);
    atomic_store(&x->res[0], 1);
    while (!atomic_load(&x->stop))
        tu_sleep(0.001);
    conc_cond_release(&x->c);
}

Test(condition, rlock_held_by_other_thread_is_eperm, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    for (int k = 0; k < K_COUNT; k++) {
        if (k == K_LOCK)
            continue; /* a Lock has no owner (Python's Condition allows this) */
        setup(&x, k);
        tu_bunch_start(&b, 1, hold_rlock_fn, &x);
        cr_assert(TU_WAIT_UNTIL(atomic_load(&x.res[0]) == 1, 10));
        cr_assert_eq(conc_cond_notify(&x.c, 1), CONC_EPERM, "%s", kind_name[k]);
        cr_assert_eq(conc_cond_notify_all(&x.c), CONC_EPERM, "%s", kind_name[k]);
        cr_assert_eq(conc_cond_wait(&x.c, 0.05), CONC_EPERM, "%s", kind_name[k]);
        cr_assert_eq(conc_cond_release(&x.c), CONC_EPERM, "%s", kind_name[k]);
        atomic_store(&x.stop, 1);
        tu_bunch_join(&b);
    }
}

/* ---- notify(n) wakes exactly n */

static void wait_twice_fn(void *p, int i)
{
    ctx_t *x = p;
    conc_cond_acquire(&x->c, true, CONC_FOREVER);
    x->waiting++;
    int rc = conc_cond_wait(&x->c, CONC_FOREVER);
    x->waiting--;
    x->woken++;
    atomic_store(&x->res[i], rc);
    atomic_store(&x->phase_seen[i], x->phase);
    atomic_store(&x->held_after[i], held(x));
    /* second wait */
    x->waiting++;
    rc = conc_cond_wait(&x->c, CONC_FOREVER);
    x->waiting--;
    x->woken++;
    if (rc != 0)
        atomic_store(&x->res[i], rc);
    conc_cond_release(&x->c);
}

static int woken(ctx_t *x)
{
    lock(x);
    int w = x->woken;
    unlock(x);
    return w;
}

static int waiting(ctx_t *x)
{
    lock(x);
    int w = x->waiting;
    unlock(x);
    return w;
}

static void check_notify(ctx_t *x)
{
    static tu_bunch_t b;
    const int N = 5;
    tu_bunch_start(&b, N, wait_twice_fn, x);
    /* A thread counts itself in "waiting" with the lock held and wait
     * releases it atomically, so waiting==N under the lock means all wait. */
    TU_TRACE("check_notify kind %s", kind_name[x->kind]);
    cr_assert(TU_WAIT_UNTIL(waiting(x) == N, 10));
    TU_TRACE("all waiting");
    lock(x);
    cr_assert_eq(x->woken, 0);
    cr_assert_eq(conc_cond_notify(&x->c, 3), 0);
    x->phase = 1;
    unlock(x);
    cr_assert(TU_WAIT_UNTIL(woken(x) >= 3, 10), "notify(3) woke %d", woken(x));
    /* Those three go back to wait; then nobody else may be awake. */
    cr_assert(TU_WAIT_UNTIL(waiting(x) == N, 10));
    tu_sleep(0.05);
    cr_assert_eq(woken(x), 3, "notify(3) woke more than 3");

    TU_TRACE("notify(3) ok");
    /* notify(1) wakes the oldest waiter: one of the two never woken. */
    lock(x);
    cr_assert_eq(conc_cond_notify(&x->c, 1), 0);
    x->phase = 2;
    unlock(x);
    cr_assert(TU_WAIT_UNTIL(woken(x) >= 4, 10));
    cr_assert(TU_WAIT_UNTIL(waiting(x) == N, 10));
    tu_sleep(0.05);
    cr_assert_eq(woken(x), 4, "notify(1) woke more than 1");
    int second_round = 0;
    for (int i = 0; i < N; i++)
        second_round += atomic_load(&x->phase_seen[i]) == 2;
    cr_assert_eq(second_round, 1, "notify(1) did not wake the oldest waiter");

    lock(x);
    cr_assert_eq(conc_cond_notify(&x->c, 0), 0);
    unlock(x);
    tu_sleep(0.02);
    cr_assert_eq(woken(x), 4, "notify(0) woke someone");

    TU_TRACE("notify(1), notify(0) ok");
    /* notify_all wakes the remaining 5 (one first wait, four second ones) */
    lock(x);
    cr_assert_eq(conc_cond_notify_all(&x->c), 0);
    x->phase = 3;
    unlock(x);
    /* 4 threads are done; the last one woken from its first wait now waits
     * a second time, alone. */
    cr_assert(TU_WAIT_UNTIL(woken(x) == 2 * N - 1 && waiting(x) == 1, 10), "woken %d waiting %d",
              woken(x), waiting(x));
    lock(x);
    cr_assert_eq(conc_cond_notify(&x->c, 1), 0);
    unlock(x);
    tu_bunch_join(&b);
    cr_assert_eq(x->woken, N * 2);
    cr_assert_eq(x->waiting, 0);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(atomic_load(&x->res[i]), 0);
        cr_assert(atomic_load(&x->held_after[i]), "wait returned without the lock");
        int ph = atomic_load(&x->phase_seen[i]);
        cr_assert(ph >= 1 && ph <= 3, "woken in phase %d", ph);
    }
    cr_assert_not(held(x));
}

Test(condition, notify_counts, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    for (int k = 0; k < K_COUNT; k++) {
        setup(&x, k);
        check_notify(&x);
        /* a second time on the same object: its state is still fine */
        x.woken = x.waiting = x.phase = 0;
        memset(x.phase_seen, 0, sizeof x.phase_seen);
        check_notify(&x);
    }
}

/* notify(n) for larger n wakes exactly n of many. */
static void wait_once_fn(void *p, int i)
{
    ctx_t *x = p;
    conc_cond_acquire(&x->c, true, CONC_FOREVER);
    x->order[x->norder++] = i;
    x->waiting++;
    atomic_store(&x->res[i], conc_cond_wait(&x->c, CONC_FOREVER));
    x->waiting--;
    x->phase_seen[i] = ++x->woken;
    atomic_store(&x->held_after[i], held(x));
    conc_cond_release(&x->c);
}

Test(condition, notify_n_wakes_exactly_n, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    const int N = 20;
    setup(&x, K_LOCK);
    tu_bunch_start(&b, N, wait_once_fn, &x);
    cr_assert(TU_WAIT_UNTIL(waiting(&x) == N, 10));
    int expect = 0;
    int steps[] = {1, 7, 4, 2};
    for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
        lock(&x);
        cr_assert_eq(conc_cond_notify(&x.c, steps[s]), 0);
        unlock(&x);
        expect += steps[s];
        cr_assert(TU_WAIT_UNTIL(woken(&x) >= expect, 10));
        tu_sleep(0.03);
        cr_assert_eq(woken(&x), expect, "notify(%d) woke %d", steps[s], woken(&x) - expect + steps[s]);
    }
    lock(&x);
    cr_assert_eq(conc_cond_notify(&x.c, 1000), 0); /* more than waiting: all the rest */
    unlock(&x);
    tu_bunch_join(&b);
    cr_assert_eq(x.woken, N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(atomic_load(&x.res[i]), 0);
        cr_assert(atomic_load(&x.held_after[i]));
    }
}

/* Waiters are woken oldest first. */
static void fifo_wait_fn(void *p, int i)
{
    (void)i;
    ctx_t *x = p;
    conc_cond_acquire(&x->c, true, CONC_FOREVER);
    int ticket = x->norder++; /* the order in which threads entered wait */
    x->waiting++;
    int rc = conc_cond_wait(&x->c, CONC_FOREVER);
    x->waiting--;
    x->order[ticket] = rc == 0 ? ++x->woken : -1;
    conc_cond_release(&x->c);
}

Test(condition, notify_wakes_oldest_first, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b[8];
    const int N = 8;
    setup(&x, K_DEFAULT);
    /* Start the waiters one at a time so the wait order is known. */
    for (int i = 0; i < N; i++) {
        tu_bunch_start(&b[i], 1, fifo_wait_fn, &x);
        cr_assert(TU_WAIT_UNTIL(waiting(&x) == i + 1, 10));
    }
    for (int i = 0; i < N; i++) {
        lock(&x);
        cr_assert_eq(conc_cond_notify(&x.c, 1), 0);
        unlock(&x);
        cr_assert(TU_WAIT_UNTIL(woken(&x) == i + 1, 10));
    }
    for (int i = 0; i < N; i++)
        tu_bunch_join(&b[i]);
    cr_assert_eq(x.norder, N);
    for (int k = 0; k < N; k++)
        cr_assert_eq(x.order[k], k + 1, "waiter #%d was woken as #%d", k + 1, x.order[k]);
}

/* ---- timeouts */

static void timed_wait_fn(void *p, int i)
{
    ctx_t *x = p;
    conc_cond_acquire(&x->c, true, CONC_FOREVER);
    double t = tu_now();
    atomic_store(&x->res[i], conc_cond_wait(&x->c, x->timeout));
    x->times[i] = tu_now() - t;
    atomic_store(&x->held_after[i], held(x));
    conc_cond_release(&x->c);
}

Test(condition, wait_timeout, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    for (int k = 0; k < K_COUNT; k++) {
        setup(&x, k);
        x.timeout = 0.2;
        tu_bunch_start(&b, 5, timed_wait_fn, &x);
        tu_bunch_join(&b);
        for (int i = 0; i < 5; i++) {
            cr_assert_eq(atomic_load(&x.res[i]), CONC_ETIMEDOUT, "%s", kind_name[k]);
            tu_assert_timeout(x.times[i], 0.2);
            cr_assert(atomic_load(&x.held_after[i]), "%s: lock not re-acquired after timeout",
                      kind_name[k]);
        }
        cr_assert_not(held(&x));
    }
}

Test(condition, wait_zero_timeout, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    for (int k = 0; k < K_COUNT; k++) {
        setup(&x, k);
        lock(&x);
        double t = tu_now();
        cr_assert_eq(conc_cond_wait(&x.c, 0), CONC_ETIMEDOUT);
        cr_assert_lt(tu_now() - t, 1.0);
        cr_assert(held(&x));
        unlock(&x);
    }
}

/* ---- RLock under Condition: the whole level is released and restored */

static void rlock_notifier_fn(void *p, int i)
{
    (void)i;
    ctx_t *x = p;
    /* Can only get the lock if the waiter released all 3 levels. */
    atomic_store(&x->res[1], conc_cond_acquire(&x->c, true, 10.0));
    x->state = 1;
    atomic_store(&x->res[2], conc_cond_notify(&x->c, 1));
    conc_cond_release(&x->c);
}

static void check_rlock_levels(ctx_t *x, bool notify_path)
{
    static tu_bunch_t b;
    for (int j = 0; j < 3; j++)
        lock(x);
    cr_assert_eq(x->kind == K_RLOCK ? conc_rlock_level(&x->r) : conc_rlock_level(&x->c.own), 3);
    if (notify_path) {
        tu_bunch_start(&b, 1, rlock_notifier_fn, x);
        int rc = 0;
        while (x->state == 0 && rc == 0)
            rc = conc_cond_wait(&x->c, 10.0);
        cr_assert_eq(rc, 0);
        cr_assert_eq(x->state, 1);
        tu_bunch_join(&b);
        cr_assert_eq(atomic_load(&x->res[1]), 0, "notifier could not get the lock: level not released");
        cr_assert_eq(atomic_load(&x->res[2]), 0);
    } else {
        cr_assert_eq(conc_cond_wait(&x->c, 0.05), CONC_ETIMEDOUT);
    }
    unsigned long lvl = x->kind == K_RLOCK ? conc_rlock_level(&x->r) : conc_rlock_level(&x->c.own);
    cr_assert_eq(lvl, 3, "level after wait is %lu", lvl);
    for (int j = 0; j < 3; j++)
        unlock(x);
    cr_assert_not(held(x));
    cr_assert_eq(conc_cond_release(&x->c), CONC_EPERM);
}

Test(condition, rlock_level_restored_after_notify, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    setup(&x, K_RLOCK);
    check_rlock_levels(&x, true);
    setup(&x, K_DEFAULT);
    check_rlock_levels(&x, true);
}

Test(condition, rlock_level_restored_after_timeout, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    setup(&x, K_RLOCK);
    check_rlock_levels(&x, false);
    setup(&x, K_DEFAULT);
    check_rlock_levels(&x, false);
}

/* While the waiter holds 3 levels and waits with a timeout, another thread
 * can take the lock; after the timeout the waiter gets it back (after the
 * other thread released it) with level 3. */
static void grab_during_wait_fn(void *p, int i)
{
    (void)i;
    ctx_t *x = p;
    /* blocks until the waiter's wait releases all its levels */
    atomic_store(&x->res[1], conc_cond_acquire(&x->c, true, 30.0));
    atomic_store(&x->res[3], 1);
    tu_sleep(0.6); /* hold it past the waiter's timeout */
    atomic_store(&x->res[3], 2);
    conc_cond_release(&x->c);
}

Test(condition, rlock_timeout_reacquires_after_holder, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    setup(&x, K_RLOCK);
    for (int j = 0; j < 3; j++)
        lock(&x);
    tu_bunch_start(&b, 1, grab_during_wait_fn, &x);
    cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10)); /* queued on the lock */
    cr_assert_eq(conc_cond_wait(&x.c, 0.2), CONC_ETIMEDOUT);
    cr_assert_eq(atomic_load(&x.res[3]), 2, "wait returned while another thread held the lock");
    cr_assert_eq(conc_rlock_level(&x.r), 3);
    for (int j = 0; j < 3; j++)
        unlock(&x);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.res[1]), 0);
}

/* ---- wait_for */

static bool state_is_4(void *arg)
{
    ctx_t *x = arg;
    if (!held(x))
        atomic_store(&x->stop, -1); /* predicate called without the lock */
    return x->state == 4;
}

static void waitfor_fn(void *p, int i)
{
    ctx_t *x = p;
    conc_cond_acquire(&x->c, true, CONC_FOREVER);
    double t = tu_now();
    atomic_store(&x->res[i], conc_cond_wait_for(&x->c, state_is_4, x, x->timeout));
    x->times[i] = tu_now() - t;
    atomic_store(&x->phase_seen[i], x->state);
    atomic_store(&x->held_after[i], held(x));
    conc_cond_release(&x->c);
}

static void check_waitfor(ctx_t *x, int increments, double timeout)
{
    static tu_bunch_t b;
    x->timeout = timeout;
    tu_bunch_start(&b, 1, waitfor_fn, x);
    for (int k = 0; k < increments; k++) {
        tu_sleep(0.01);
        lock(x);
        x->state++;
        cr_assert_eq(conc_cond_notify(&x->c, 1), 0);
        unlock(x);
    }
    tu_bunch_join(&b);
    cr_assert_neq(atomic_load(&x->stop), -1, "predicate called without the lock held");
    cr_assert(atomic_load(&x->held_after[0]));
}

Test(condition, wait_for_predicate, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    for (int k = 0; k < K_COUNT; k++) {
        setup(&x, k);
        check_waitfor(&x, 4, CONC_FOREVER);
        cr_assert_eq(atomic_load(&x.res[0]), 0, "%s", kind_name[k]);
        cr_assert_eq(atomic_load(&x.phase_seen[0]), 4);
    }
}

Test(condition, wait_for_timeout, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    for (int k = 0; k < K_COUNT; k++) {
        setup(&x, k);
        check_waitfor(&x, 3, 0.3);
        cr_assert_eq(atomic_load(&x.res[0]), CONC_ETIMEDOUT, "%s", kind_name[k]);
        tu_assert_timeout(x.times[0], 0.3);
        cr_assert_leq(atomic_load(&x.phase_seen[0]), 3);
    }
}

static bool always(void *arg)
{
    (void)arg;
    return true;
}

Test(condition, wait_for_already_true_does_not_wait, .timeout = TU_TIMEOUT)
{
    conc_cond_t c = CONC_COND_INIT;
    cr_assert_eq(conc_cond_acquire(&c, true, CONC_FOREVER), 0);
    double t = tu_now();
    cr_assert_eq(conc_cond_wait_for(&c, always, NULL, CONC_FOREVER), 0);
    cr_assert_eq(conc_cond_wait_for(&c, always, NULL, 0), 0);
    cr_assert_eq(conc_cond_wait_for(&c, always, NULL, 5.0), 0);
    cr_assert_lt(tu_now() - t, 1.0);
    cr_assert_eq(conc_cond_wait_for(&c, never, NULL, 0), CONC_ETIMEDOUT);
    cr_assert_eq(conc_rlock_level(&c.own), 1);
    cr_assert_eq(conc_cond_release(&c), 0);
}

/* wait_for has one overall deadline: constant notifications with the
 * predicate still false must not extend it. */
static void spam_notify_fn(void *p, int i)
{
    (void)i;
    ctx_t *x = p;
    while (!atomic_load(&x->stop)) {
        conc_cond_acquire(&x->c, true, CONC_FOREVER);
        conc_cond_notify_all(&x->c);
        conc_cond_release(&x->c);
        tu_sleep(0.005);
    }
}

Test(condition, wait_for_single_deadline, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    setup(&x, K_LOCK);
    tu_bunch_start(&b, 1, spam_notify_fn, &x);
    lock(&x);
    double t = tu_now();
    int rc = conc_cond_wait_for(&x.c, never, NULL, 0.3);
    double dt = tu_now() - t;
    unlock(&x);
    atomic_store(&x.stop, 1);
    tu_bunch_join(&b);
    cr_assert_eq(rc, CONC_ETIMEDOUT);
    tu_assert_timeout(dt, 0.3);
}

/* ---- notify_all with many waiters, several rounds */

static void wait_round_fn(void *p, int i)
{
    ctx_t *x = p;
    conc_cond_acquire(&x->c, true, CONC_FOREVER);
    for (int round = 1; round <= 20; round++) {
        x->waiting++;
        while (x->phase < round) {
            int rc = conc_cond_wait(&x->c, CONC_FOREVER);
            if (rc != 0) {
                atomic_store(&x->res[i], rc);
                break;
            }
        }
        x->waiting--;
        x->woken++;
    }
    conc_cond_release(&x->c);
}

Test(condition, notify_all_rounds, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    const int N = 10;
    setup(&x, K_DEFAULT);
    tu_bunch_start(&b, N, wait_round_fn, &x);
    for (int round = 1; round <= 20; round++) {
        cr_assert(TU_WAIT_UNTIL(waiting(&x) == N, 10), "round %d", round);
        lock(&x);
        x.phase = round;
        cr_assert_eq(conc_cond_notify_all(&x.c), 0);
        unlock(&x);
        cr_assert(TU_WAIT_UNTIL(woken(&x) == N * round, 10), "round %d: woken %d", round,
                  woken(&x));
    }
    tu_bunch_join(&b);
    for (int i = 0; i < N; i++)
        cr_assert_eq(atomic_load(&x.res[i]), 0);
}

/* wait_for on an RLock held 3 times restores the level too (both paths). */
static bool state_positive(void *arg) { return ((ctx_t *)arg)->state > 0; }

static void bump_fn(void *p, int i)
{
    (void)i;
    ctx_t *x = p;
    atomic_store(&x->res[1], conc_cond_acquire(&x->c, true, 10.0));
    x->state = 1;
    conc_cond_notify_all(&x->c);
    conc_cond_release(&x->c);
}

Test(condition, wait_for_restores_rlock_level, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    for (int k = 0; k < K_COUNT; k++) {
        if (k == K_LOCK)
            continue;
        setup(&x, k);
        for (int j = 0; j < 3; j++)
            lock(&x);
        cr_assert_eq(conc_cond_wait_for(&x.c, state_positive, &x, 0.05), CONC_ETIMEDOUT);
        cr_assert_eq(k == K_RLOCK ? conc_rlock_level(&x.r) : conc_rlock_level(&x.c.own), 3);
        tu_bunch_start(&b, 1, bump_fn, &x);
        cr_assert_eq(conc_cond_wait_for(&x.c, state_positive, &x, 10.0), 0);
        cr_assert_eq(k == K_RLOCK ? conc_rlock_level(&x.r) : conc_rlock_level(&x.c.own), 3);
        for (int j = 0; j < 3; j++)
            unlock(&x);
        tu_bunch_join(&b);
        cr_assert_eq(atomic_load(&x.res[1]), 0);
        cr_assert_not(held(&x));
    }
}
