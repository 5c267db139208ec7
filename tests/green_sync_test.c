/* Colorless blocking: every conc primitive parks only the calling green
 * thread (its siblings keep running, measured by a "ticker" green thread
 * that counts while the others wait), and OS threads and green threads
 * share one Lock, RLock, Condition, Semaphore, Event, Barrier, Queue and
 * Future. Also: RLock ownership is per green thread (not per OS thread);
 * a green thread waits on a thread-pool future and joins a conc Thread
 * while its siblings run; green join across hubs; kills cut every
 * primitive's wait without corrupting it; conc_green_offload. Ports the
 * spirit of gevent's test__event.py, test__queue.py and test__threadpool. */
#include "test_util.h"

#include "conc/green.h"

#define PTR(x) ((void *)(uintptr_t)(x))
#define INT(p) ((int)(uintptr_t)(p))

/* ------------------------------------------------------------- ticker */

typedef struct {
    atomic_int stop;
    atomic_long ticks;
    conc_green_t *g;
} ticker_t;

static void *ticker_fn(void *arg)
{
    ticker_t *t = arg;
    while (!atomic_load(&t->stop)) {
        atomic_fetch_add(&t->ticks, 1);
        if (conc_sleep(0.001) != 0)
            break;
    }
    return NULL;
}

static void ticker_start(ticker_t *t)
{
    atomic_store(&t->stop, 0);
    atomic_store(&t->ticks, 0);
    cr_assert_eq(conc_go(&t->g, ticker_fn, t), 0);
}

static long ticker_stop(ticker_t *t)
{
    atomic_store(&t->stop, 1);
    cr_assert_eq(conc_green_join(t->g, 5.0), 0, "the ticker did not stop");
    cr_assert_eq(conc_green_free(t->g), 0);
    return atomic_load(&t->ticks);
}

/* At 1 ms per tick, a wait of w seconds that parks only the waiter lets
 * the ticker tick many times; one that blocks the OS thread lets it tick
 * about never. Demand a fifth of the ideal count. */
#define MIN_TICKS(w) ((long)((w) * 1000 / 5))

/* --------------------------------------------------------------- Lock */

typedef struct {
    conc_lock_t l;
    atomic_int step;
    atomic_int a_rc, b_rc;
    double b_wait;
} lockpair_t;

static void *lock_holder(void *arg)
{
    lockpair_t *p = arg;
    atomic_store(&p->a_rc, conc_lock_acquire(&p->l, true, 5.0));
    atomic_store(&p->step, 1);
    conc_sleep(0.1);
    atomic_store(&p->step, 2);
    conc_lock_release(&p->l);
    return NULL;
}

static void *lock_waiter(void *arg)
{
    lockpair_t *p = arg;
    double t0 = tu_now();
    int rc = conc_lock_acquire(&p->l, true, 5.0);
    p->b_wait = tu_now() - t0;
    if (rc == 0 && atomic_load(&p->step) != 2)
        rc = 1000; /* got it while the holder still held it */
    atomic_store(&p->b_rc, rc);
    if (rc == 0)
        conc_lock_release(&p->l);
    return NULL;
}

Test(green_sync, lock_parks_only_the_waiting_green_thread, .timeout = TU_TIMEOUT)
{
    lockpair_t p = {.l = CONC_LOCK_INIT};
    ticker_t t;
    ticker_start(&t);
    conc_green_t *g[2];
    cr_assert_eq(conc_go(&g[0], lock_holder, &p), 0);
    cr_assert_eq(conc_go(&g[1], lock_waiter, &p), 0);
    cr_assert_eq(conc_green_joinall(g, 2, 10.0), 0);
    long ticks = ticker_stop(&t);
    cr_assert_eq(atomic_load(&p.a_rc), 0);
    cr_assert_eq(atomic_load(&p.b_rc), 0, "waiter: %d", atomic_load(&p.b_rc));
    cr_assert_geq(p.b_wait, 0.1 - 0.02);
    cr_assert_lt(p.b_wait, 2.0);
    cr_assert_geq(ticks, MIN_TICKS(0.1), "the ticker ticked %ld times: the lock wait blocked the hub", ticks);
    cr_assert_not(conc_lock_locked(&p.l));
    for (int i = 0; i < 2; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);
}

/* One lock, one plain counter: green threads (yielding while they hold it)
 * and OS threads increment it. */
typedef struct {
    conc_lock_t l;
    long counter;
    long iters;
    atomic_int errors;
} shared_lock_t;

static void *green_incr(void *arg)
{
    shared_lock_t *s = arg;
    for (long i = 0; i < s->iters; i++) {
        if (conc_lock_acquire(&s->l, true, 10.0) != 0) {
            atomic_fetch_add(&s->errors, 1);
            return NULL;
        }
        long v = s->counter;
        if (i % 8 == 0)
            conc_yield(); /* hold it across a switch */
        s->counter = v + 1;
        conc_lock_release(&s->l);
    }
    return NULL;
}

static void os_incr(void *arg, int idx)
{
    (void)idx;
    shared_lock_t *s = arg;
    for (long i = 0; i < s->iters; i++) {
        if (conc_lock_acquire(&s->l, true, 10.0) != 0) {
            atomic_fetch_add(&s->errors, 1);
            return;
        }
        long v = s->counter;
        if (i % 64 == 0)
            sched_yield();
        s->counter = v + 1;
        conc_lock_release(&s->l);
    }
}

Test(green_sync, one_lock_shared_by_os_threads_and_green_threads, .timeout = TU_TIMEOUT)
{
    static shared_lock_t s = {.l = CONC_LOCK_INIT};
    s.iters = tu_iters(3000);
    static tu_bunch_t b;
    tu_bunch_start(&b, 3, os_incr, &s);
    conc_green_t *g[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(conc_go(&g[i], green_incr, &s), 0);
    cr_assert_eq(conc_green_joinall(g, 4, 30.0), 0);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&s.errors), 0);
    cr_assert_eq(s.counter, 7 * s.iters, "lost updates: %ld of %ld", s.counter, 7 * s.iters);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);
}

/* -------------------------------------------------------------- RLock */

typedef struct {
    conc_rlock_t r;
    conc_event_t held, checked;
    atomic_int a_rc[6];
    atomic_int b_owned, b_level, b_release, b_try, b_timed, b_final;
} rl_t;

static void *rl_owner(void *arg)
{
    rl_t *s = arg;
    atomic_store(&s->a_rc[0], conc_rlock_acquire(&s->r, true, 5.0));
    atomic_store(&s->a_rc[1], conc_rlock_acquire(&s->r, true, 5.0));
    atomic_store(&s->a_rc[2], (int)conc_rlock_level(&s->r));
    conc_event_set(&s->held);
    conc_event_wait(&s->checked, 5.0); /* parks while holding it */
    atomic_store(&s->a_rc[3], conc_rlock_is_owned(&s->r));
    atomic_store(&s->a_rc[4], conc_rlock_release(&s->r) | conc_rlock_release(&s->r));
    atomic_store(&s->a_rc[5], conc_rlock_release(&s->r));
    return NULL;
}

static void *rl_other(void *arg)
{
    rl_t *s = arg;
    conc_event_wait(&s->held, 5.0);
    atomic_store(&s->b_owned, conc_rlock_is_owned(&s->r));
    atomic_store(&s->b_level, (int)conc_rlock_level(&s->r));
    atomic_store(&s->b_release, conc_rlock_release(&s->r));
    atomic_store(&s->b_try, conc_rlock_acquire(&s->r, false, CONC_FOREVER));
    atomic_store(&s->b_timed, conc_rlock_acquire(&s->r, true, 0.03));
    conc_event_set(&s->checked);
    int rc = conc_rlock_acquire(&s->r, true, 5.0); /* once the owner let go */
    if (rc == 0)
        rc = conc_rlock_release(&s->r);
    atomic_store(&s->b_final, rc);
    return NULL;
}

Test(green_sync, rlock_is_owned_per_green_thread, .timeout = TU_TIMEOUT)
{
    static rl_t s = {.r = CONC_RLOCK_INIT, .held = CONC_EVENT_INIT, .checked = CONC_EVENT_INIT};
    conc_green_t *g[2];
    cr_assert_eq(conc_go(&g[0], rl_owner, &s), 0);
    cr_assert_eq(conc_go(&g[1], rl_other, &s), 0);
    cr_assert_eq(conc_event_wait(&s.held, 5.0), 0);
    /* main runs on the same OS thread as the owner, but is another context */
    cr_assert_not(conc_rlock_is_owned(&s.r), "the main context owns a green thread's RLock");
    cr_assert_eq(conc_rlock_level(&s.r), 0);
    cr_assert_eq(conc_rlock_release(&s.r), CONC_EPERM);
    cr_assert_eq(conc_rlock_acquire(&s.r, false, CONC_FOREVER), CONC_ETIMEDOUT,
                 "the main context re-entered a green thread's RLock");
    cr_assert_eq(conc_green_joinall(g, 2, 10.0), 0);
    cr_assert_eq(atomic_load(&s.a_rc[0]), 0);
    cr_assert_eq(atomic_load(&s.a_rc[1]), 0, "re-entry by the owning green thread");
    cr_assert_eq(atomic_load(&s.a_rc[2]), 2);
    cr_assert_eq(atomic_load(&s.a_rc[3]), 1, "the owner lost ownership across a park");
    cr_assert_eq(atomic_load(&s.a_rc[4]), 0);
    cr_assert_eq(atomic_load(&s.a_rc[5]), CONC_EPERM);
    cr_assert_eq(atomic_load(&s.b_owned), 0, "another green thread on the same OS thread owns it");
    cr_assert_eq(atomic_load(&s.b_level), 0);
    cr_assert_eq(atomic_load(&s.b_release), CONC_EPERM, "another green thread released it");
    cr_assert_eq(atomic_load(&s.b_try), CONC_ETIMEDOUT);
    cr_assert_eq(atomic_load(&s.b_timed), CONC_ETIMEDOUT);
    cr_assert_eq(atomic_load(&s.b_final), 0);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);
}

typedef struct {
    conc_rlock_t r;
    atomic_int os_rc;
    atomic_int green_released;
    double os_wait;
} rlx_t;

static void *rl_hold_then_release(void *arg)
{
    rlx_t *s = arg;
    conc_rlock_acquire(&s->r, true, 5.0);
    conc_rlock_acquire(&s->r, true, 5.0);
    conc_sleep(0.08);
    atomic_store(&s->green_released, 1);
    conc_rlock_release(&s->r);
    conc_rlock_release(&s->r);
    return NULL;
}

static void os_rlock_taker(void *arg, int idx)
{
    (void)idx;
    rlx_t *s = arg;
    double t0 = tu_now();
    int rc = conc_rlock_acquire(&s->r, true, 5.0);
    s->os_wait = tu_now() - t0;
    if (rc == 0 && !atomic_load(&s->green_released))
        rc = 1000;
    if (rc == 0)
        rc = conc_rlock_release(&s->r);
    atomic_store(&s->os_rc, rc);
}

Test(green_sync, rlock_held_by_a_green_thread_blocks_an_os_thread, .timeout = TU_TIMEOUT)
{
    static rlx_t s = {.r = CONC_RLOCK_INIT};
    atomic_store(&s.os_rc, 99);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, rl_hold_then_release, &s), 0);
    conc_yield(); /* g holds it now */
    static tu_bunch_t b;
    tu_bunch_start(&b, 1, os_rlock_taker, &s);
    cr_assert_eq(conc_green_join(g, 5.0), 0);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&s.os_rc), 0, "OS thread: %d", atomic_load(&s.os_rc));
    cr_assert_eq(conc_green_free(g), 0);
}

/* ---------------------------------------------------------- Condition */

typedef struct {
    conc_lock_t l;
    conc_cond_t c;
    bool flag;
    atomic_int rcs[8];
    atomic_int woken;
} condx_t;

static bool flag_pred(void *arg) { return ((condx_t *)arg)->flag; }

static void *cond_green_waiter(void *arg)
{
    condx_t *s = ((void **)arg)[0];
    int i = INT(((void **)arg)[1]);
    int rc = conc_cond_acquire(&s->c, true, 5.0);
    if (rc == 0) {
        rc = conc_cond_wait_for(&s->c, flag_pred, s, 5.0);
        if (rc == 0 && !conc_lock_locked(&s->l))
            rc = 1000;
        conc_cond_release(&s->c);
    }
    atomic_store(&s->rcs[i], rc);
    atomic_fetch_add(&s->woken, 1);
    return NULL;
}

static void cond_os_waiter(void *arg, int idx)
{
    void *a[2] = {arg, PTR(4 + idx)};
    cond_green_waiter(a);
}

static void *cond_green_notifier(void *arg)
{
    condx_t *s = arg;
    conc_sleep(0.05);
    conc_cond_acquire(&s->c, true, 5.0);
    s->flag = true;
    conc_cond_notify_all(&s->c);
    conc_cond_release(&s->c);
    return NULL;
}

Test(green_sync, condition_green_and_os_waiters_green_notifier, .timeout = TU_TIMEOUT)
{
    static condx_t s = {.l = CONC_LOCK_INIT};
    cr_assert_eq(conc_cond_init(&s.c, &s.l), 0);
    for (int i = 0; i < 8; i++)
        atomic_store(&s.rcs[i], 99);
    static tu_bunch_t b;
    tu_bunch_start(&b, 2, cond_os_waiter, &s);
    ticker_t t;
    ticker_start(&t);
    void *args[3][2];
    conc_green_t *g[4];
    for (int i = 0; i < 3; i++) {
        args[i][0] = &s;
        args[i][1] = PTR(i);
        cr_assert_eq(conc_go(&g[i], cond_green_waiter, args[i]), 0);
    }
    cr_assert_eq(conc_go(&g[3], cond_green_notifier, &s), 0);
    cr_assert_eq(conc_green_joinall(g, 4, 10.0), 0);
    tu_bunch_join(&b);
    long ticks = ticker_stop(&t);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(atomic_load(&s.rcs[i]), 0, "green waiter %d: %d", i, atomic_load(&s.rcs[i]));
    for (int i = 4; i < 6; i++)
        cr_assert_eq(atomic_load(&s.rcs[i]), 0, "OS waiter %d: %d", i, atomic_load(&s.rcs[i]));
    cr_assert_geq(ticks, MIN_TICKS(0.05));
    for (int i = 0; i < 4; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);
}

static void os_cond_notifier(void *arg, int idx)
{
    (void)idx;
    condx_t *s = arg;
    tu_sleep(0.05);
    conc_cond_acquire(&s->c, true, 5.0);
    s->flag = true;
    conc_cond_notify_all(&s->c);
    conc_cond_release(&s->c);
}

static void *cond_timed_wait(void *arg)
{
    condx_t *s = arg;
    int rc = conc_cond_acquire(&s->c, true, 5.0);
    if (rc == 0) {
        double t0 = tu_now();
        rc = conc_cond_wait(&s->c, 0.03);
        if (rc == CONC_ETIMEDOUT && tu_now() - t0 < 0.03 - TU_EPS)
            rc = 1001;
        if (!conc_lock_locked(&s->l))
            rc = 1000;
        conc_cond_release(&s->c);
    }
    return PTR(rc);
}

Test(green_sync, condition_os_notifier_and_timed_wait, .timeout = TU_TIMEOUT)
{
    static condx_t s = {.l = CONC_LOCK_INIT};
    cr_assert_eq(conc_cond_init(&s.c, &s.l), 0);
    conc_green_t *tw;
    cr_assert_eq(conc_go(&tw, cond_timed_wait, &s), 0);
    void *r = PTR(1);
    cr_assert_eq(conc_green_get(tw, 5.0, &r), 0);
    cr_assert_eq(INT(r), CONC_ETIMEDOUT, "timed cond wait in a green thread: %d", INT(r));
    cr_assert_eq(conc_green_free(tw), 0);

    static tu_bunch_t b;
    tu_bunch_start(&b, 1, os_cond_notifier, &s);
    void *args[3][2];
    conc_green_t *g[3];
    for (int i = 0; i < 3; i++) {
        atomic_store(&s.rcs[i], 99);
        args[i][0] = &s;
        args[i][1] = PTR(i);
        cr_assert_eq(conc_go(&g[i], cond_green_waiter, args[i]), 0);
    }
    cr_assert_eq(conc_green_joinall(g, 3, 10.0), 0);
    tu_bunch_join(&b);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(atomic_load(&s.rcs[i]), 0, "green waiter %d: %d", i, atomic_load(&s.rcs[i]));
        cr_assert_eq(conc_green_free(g[i]), 0);
    }
}

/* ---------------------------------------------------------- Semaphore */

typedef struct {
    conc_semaphore_t s;
    atomic_int running, max, errors, done;
} semx_t;

static void sem_body(semx_t *x, bool green)
{
    for (int k = 0; k < 3; k++) {
        if (conc_semaphore_acquire(&x->s, true, 10.0) != 0) {
            atomic_fetch_add(&x->errors, 1);
            return;
        }
        int r = atomic_fetch_add(&x->running, 1) + 1;
        int m = atomic_load(&x->max);
        while (r > m && !atomic_compare_exchange_weak(&x->max, &m, r)) {
        }
        if (green)
            conc_sleep(0.005);
        else
            tu_sleep(0.005);
        atomic_fetch_sub(&x->running, 1);
        conc_semaphore_release(&x->s, 1);
    }
    atomic_fetch_add(&x->done, 1);
}

static void *sem_green(void *arg)
{
    sem_body(arg, true);
    return NULL;
}

static void sem_os(void *arg, int idx)
{
    (void)idx;
    sem_body(arg, false);
}

Test(green_sync, semaphore_shared_by_green_and_os_threads, .timeout = TU_TIMEOUT)
{
    static semx_t x;
    cr_assert_eq(conc_semaphore_init(&x.s, 2), 0);
    static tu_bunch_t b;
    tu_bunch_start(&b, 2, sem_os, &x);
    conc_green_t *g[6];
    for (int i = 0; i < 6; i++)
        cr_assert_eq(conc_go(&g[i], sem_green, &x), 0);
    cr_assert_eq(conc_green_joinall(g, 6, 20.0), 0);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.errors), 0);
    cr_assert_eq(atomic_load(&x.done), 8);
    cr_assert_leq(atomic_load(&x.max), 2, "%d holders at once", atomic_load(&x.max));
    cr_assert_eq(atomic_load(&x.max), 2, "never two at once: waits serialised the hub?");
    cr_assert_eq(conc_semaphore_value(&x.s), 2);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);
}

/* -------------------------------------------------------------- Event */

typedef struct {
    conc_event_t e;
    atomic_int rcs[8];
} evx_t;

static void *ev_green_wait(void *arg)
{
    evx_t *x = ((void **)arg)[0];
    int i = INT(((void **)arg)[1]);
    atomic_store(&x->rcs[i], conc_event_wait(&x->e, 5.0));
    return NULL;
}

static void ev_os_wait(void *arg, int idx)
{
    void *a[2] = {arg, PTR(6 + idx)};
    ev_green_wait(a);
}

static void ev_os_set(void *arg, int idx)
{
    (void)idx;
    tu_sleep(0.05);
    conc_event_set(&((evx_t *)arg)->e);
}

Test(green_sync, event_set_by_an_os_thread_wakes_green_and_os_waiters, .timeout = TU_TIMEOUT)
{
    static evx_t x = {.e = CONC_EVENT_INIT};
    for (int i = 0; i < 8; i++)
        atomic_store(&x.rcs[i], 99);
    static tu_bunch_t w, s;
    tu_bunch_start(&w, 2, ev_os_wait, &x);
    ticker_t t;
    ticker_start(&t);
    void *args[5][2];
    conc_green_t *g[5];
    for (int i = 0; i < 5; i++) {
        args[i][0] = &x;
        args[i][1] = PTR(i);
        cr_assert_eq(conc_go(&g[i], ev_green_wait, args[i]), 0);
    }
    tu_bunch_start(&s, 1, ev_os_set, &x);
    cr_assert_eq(conc_green_joinall(g, 5, 10.0), 0);
    long ticks = ticker_stop(&t);
    tu_bunch_join(&s);
    tu_bunch_join(&w);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(atomic_load(&x.rcs[i]), 0, "green %d: %d", i, atomic_load(&x.rcs[i]));
    cr_assert_eq(atomic_load(&x.rcs[6]), 0);
    cr_assert_eq(atomic_load(&x.rcs[7]), 0);
    cr_assert_geq(ticks, MIN_TICKS(0.05));
    for (int i = 0; i < 5; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);
}

static void *ev_timed(void *arg)
{
    double t0 = tu_now();
    int rc = conc_event_wait(arg, 0.05);
    double dt = tu_now() - t0;
    if (rc == CONC_ETIMEDOUT && (dt < 0.05 - TU_EPS || dt > 0.05 + TU_SLACK))
        rc = 1000;
    return PTR(rc);
}

static void *ev_set_green(void *arg)
{
    conc_event_set(arg);
    return NULL;
}

Test(green_sync, event_timeouts_and_already_set, .timeout = TU_TIMEOUT)
{
    /* gevent test__event: wait(timeout) on an unset event returns False
     * after the timeout; on a set one, at once */
    conc_event_t e = CONC_EVENT_INIT;
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, ev_timed, &e), 0);
    void *r = PTR(1);
    cr_assert_eq(conc_green_get(g, 5.0, &r), 0);
    cr_assert_eq(INT(r), CONC_ETIMEDOUT);
    cr_assert_eq(conc_green_free(g), 0);
    conc_event_set(&e);
    cr_assert_eq(conc_go(&g, ev_timed, &e), 0);
    cr_assert_eq(conc_green_get(g, 5.0, &r), 0);
    cr_assert_eq(INT(r), 0);
    cr_assert_eq(conc_green_free(g), 0);

    /* a green setter wakes a green waiter and the main context */
    conc_event_t e2 = CONC_EVENT_INIT;
    conc_green_t *w, *s;
    cr_assert_eq(conc_go(&w, ev_timed, &e2), 0);
    cr_assert_eq(conc_go(&s, ev_set_green, &e2), 0);
    cr_assert_eq(conc_event_wait(&e2, 5.0), 0);
    cr_assert_eq(conc_green_get(w, 5.0, &r), 0);
    cr_assert_eq(INT(r), 0);
    cr_assert_eq(conc_green_join(s, 5.0), 0);
    cr_assert_eq(conc_green_free(w), 0);
    cr_assert_eq(conc_green_free(s), 0);
}

/* ------------------------------------------------------------ Barrier */

typedef struct {
    conc_barrier_t b;
    atomic_int idx_seen[2][5];
    atomic_int errors;
} barx_t;

static void bar_body(barx_t *x)
{
    for (int round = 0; round < 2; round++) {
        int idx = -1;
        int rc = conc_barrier_wait(&x->b, 10.0, &idx);
        if (rc != 0 || idx < 0 || idx >= 5) {
            atomic_fetch_add(&x->errors, 1);
            return;
        }
        atomic_fetch_add(&x->idx_seen[round][idx], 1);
    }
}

static void *bar_green(void *arg)
{
    bar_body(arg);
    return NULL;
}

static void bar_os(void *arg, int idx)
{
    (void)idx;
    bar_body(arg);
}

Test(green_sync, barrier_of_green_and_os_threads, .timeout = TU_TIMEOUT)
{
    static barx_t x;
    cr_assert_eq(conc_barrier_init(&x.b, 5, NULL, NULL, CONC_FOREVER), 0);
    static tu_bunch_t b;
    tu_bunch_start(&b, 2, bar_os, &x);
    conc_green_t *g[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_go(&g[i], bar_green, &x), 0);
    cr_assert_eq(conc_green_joinall(g, 3, 20.0), 0);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.errors), 0);
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < 5; i++)
            cr_assert_eq(atomic_load(&x.idx_seen[r][i]), 1, "round %d index %d given %d times", r, i,
                         atomic_load(&x.idx_seen[r][i]));
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);
}

/* -------------------------------------------------------------- Queue */

typedef struct {
    conc_queue_t *q, *back;
    long n;
    atomic_long sum, got;
    atomic_int errors;
} qx_t;

static void *q_green_consumer(void *arg)
{
    qx_t *x = arg;
    for (;;) {
        void *it;
        int rc = conc_queue_get(x->q, &it, true, 10.0);
        if (rc != 0) {
            atomic_fetch_add(&x->errors, 1);
            return NULL;
        }
        if (it == NULL)
            return NULL; /* sentinel */
        atomic_fetch_add(&x->sum, (long)(uintptr_t)it);
        atomic_fetch_add(&x->got, 1);
    }
}

static void q_os_producer(void *arg, int idx)
{
    qx_t *x = arg;
    for (long i = 1; i <= x->n; i++)
        if (conc_queue_put(x->q, PTR(i), true, 10.0) != 0)
            atomic_fetch_add(&x->errors, 1);
    (void)idx;
}

Test(green_sync, queue_os_producers_green_consumers, .timeout = TU_TIMEOUT)
{
    static qx_t x;
    x.n = tu_iters(5000);
    cr_assert_eq(conc_queue_new(&x.q, CONC_FIFO, 16), 0); /* bounded: producers block too */
    static tu_bunch_t b;
    tu_bunch_start(&b, 2, q_os_producer, &x);
    conc_green_t *g[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_go(&g[i], q_green_consumer, &x), 0);
    /* not pthread_join: main must keep running the hub for the consumers */
    cr_assert(TU_WAIT_UNTIL((conc_sleep(0.001), atomic_load(&b.finished) == 2), 30.0), "producers stuck");
    tu_bunch_join(&b);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_queue_put(x.q, NULL, true, 10.0), 0); /* main puts the sentinels */
    cr_assert_eq(conc_green_joinall(g, 3, 30.0), 0);
    cr_assert_eq(atomic_load(&x.errors), 0);
    cr_assert_eq(atomic_load(&x.got), 2 * x.n);
    cr_assert_eq(atomic_load(&x.sum), 2 * (x.n * (x.n + 1) / 2));
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);
    cr_assert_eq(conc_queue_free(x.q, NULL), 0);
}

static void *q_green_producer(void *arg)
{
    qx_t *x = arg;
    for (long i = 1; i <= x->n; i++)
        if (conc_queue_put(x->q, PTR(i), true, 10.0) != 0) {
            atomic_fetch_add(&x->errors, 1);
            break;
        }
    return NULL;
}

static void q_os_consumer(void *arg, int idx)
{
    (void)idx;
    qx_t *x = arg;
    for (;;) {
        void *it;
        if (conc_queue_get(x->q, &it, true, 10.0) != 0) {
            atomic_fetch_add(&x->errors, 1);
            return;
        }
        if (it == NULL)
            return;
        atomic_fetch_add(&x->sum, (long)(uintptr_t)it);
        atomic_fetch_add(&x->got, 1);
    }
}

Test(green_sync, queue_green_producers_os_consumers, .timeout = TU_TIMEOUT)
{
    static qx_t x;
    x.n = tu_iters(5000);
    cr_assert_eq(conc_queue_new(&x.q, CONC_FIFO, 8), 0);
    static tu_bunch_t b;
    tu_bunch_start(&b, 2, q_os_consumer, &x);
    conc_green_t *g[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_go(&g[i], q_green_producer, &x), 0);
    cr_assert_eq(conc_green_joinall(g, 3, 30.0), 0);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(conc_queue_put(x.q, NULL, true, 10.0), 0);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.errors), 0);
    cr_assert_eq(atomic_load(&x.got), 3 * x.n);
    cr_assert_eq(atomic_load(&x.sum), 3 * (x.n * (x.n + 1) / 2));
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);
    cr_assert_eq(conc_queue_free(x.q, NULL), 0);
}

static void *pingpong_green(void *arg)
{
    qx_t *x = arg;
    for (long i = 0; i < x->n; i++) {
        void *it;
        if (conc_queue_put(x->q, PTR(i), true, 10.0) != 0 || conc_queue_get(x->back, &it, true, 10.0) != 0 ||
            it != PTR(i + 1)) {
            atomic_fetch_add(&x->errors, 1);
            return NULL;
        }
    }
    return NULL;
}

static void pingpong_os(void *arg, int idx)
{
    (void)idx;
    qx_t *x = arg;
    for (long i = 0; i < x->n; i++) {
        void *it;
        if (conc_queue_get(x->q, &it, true, 10.0) != 0 ||
            conc_queue_put(x->back, PTR((uintptr_t)it + 1), true, 10.0) != 0) {
            atomic_fetch_add(&x->errors, 1);
            return;
        }
    }
}

Test(green_sync, queue_ping_pong_between_a_green_thread_and_an_os_thread, .timeout = TU_TIMEOUT)
{
    static qx_t x;
    x.n = tu_iters(2000);
    cr_assert_eq(conc_queue_new(&x.q, CONC_FIFO, 1), 0);
    cr_assert_eq(conc_queue_new(&x.back, CONC_FIFO, 1), 0);
    static tu_bunch_t b;
    tu_bunch_start(&b, 1, pingpong_os, &x);
    ticker_t t;
    ticker_start(&t);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, pingpong_green, &x), 0);
    cr_assert_eq(conc_green_join(g, 30.0), 0);
    ticker_stop(&t);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.errors), 0);
    cr_assert_eq(conc_green_free(g), 0);
    conc_queue_free(x.q, NULL);
    conc_queue_free(x.back, NULL);
}

static void *q_get_timeout(void *arg)
{
    void *it;
    double t0 = tu_now();
    int rc = conc_queue_get(arg, &it, true, 0.04);
    if (rc == CONC_EEMPTY && tu_now() - t0 < 0.04 - TU_EPS)
        rc = 1000;
    return PTR(rc);
}

Test(green_sync, queue_get_timeout_in_a_green_thread, .timeout = TU_TIMEOUT)
{
    conc_queue_t *q;
    cr_assert_eq(conc_queue_new(&q, CONC_FIFO, 0), 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, q_get_timeout, q), 0);
    void *r = PTR(1);
    cr_assert_eq(conc_green_get(g, 5.0, &r), 0);
    cr_assert_eq(INT(r), CONC_EEMPTY, "get(timeout) on an empty queue: %d", INT(r));
    cr_assert_eq(conc_green_free(g), 0);
    cr_assert_eq(conc_queue_free(q, NULL), 0);
}

/* ------------------------------------------------------------- Future */

typedef struct {
    conc_future_t *f;
    atomic_int rc;
    void *res;
} fw_t;

static void *fut_green_wait(void *arg)
{
    fw_t *w = arg;
    void *r = NULL;
    atomic_store(&w->rc, conc_future_result(w->f, 5.0, &r));
    w->res = r;
    return NULL;
}

static void fut_os_wait(void *arg, int idx)
{
    (void)idx;
    fut_green_wait(arg);
}

static void *fut_green_set(void *arg)
{
    conc_sleep(0.05);
    conc_future_set_result(arg, PTR(123));
    return NULL;
}

static void fut_os_set(void *arg, int idx)
{
    (void)idx;
    tu_sleep(0.05);
    conc_future_set_result(arg, PTR(456));
}

Test(green_sync, one_future_green_and_os_waiters, .timeout = TU_TIMEOUT)
{
    /* set by a green thread: wakes a green waiter and an OS waiter */
    conc_future_t *f;
    cr_assert_eq(conc_future_new(&f), 0);
    static fw_t gw, ow;
    gw = (fw_t){.f = f};
    ow = (fw_t){.f = f};
    atomic_store(&gw.rc, 99);
    atomic_store(&ow.rc, 99);
    static tu_bunch_t b;
    tu_bunch_start(&b, 1, fut_os_wait, &ow);
    conc_green_t *g[2];
    cr_assert_eq(conc_go(&g[0], fut_green_wait, &gw), 0);
    cr_assert_eq(conc_go(&g[1], fut_green_set, f), 0);
    cr_assert_eq(conc_green_joinall(g, 2, 10.0), 0);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&gw.rc), 0);
    cr_assert_eq(gw.res, PTR(123));
    cr_assert_eq(atomic_load(&ow.rc), 0);
    cr_assert_eq(ow.res, PTR(123));
    for (int i = 0; i < 2; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);
    conc_future_free(f);

    /* set by an OS thread: wakes green waiters while a sibling ticks */
    cr_assert_eq(conc_future_new(&f), 0);
    static fw_t w[3];
    conc_green_t *h[3];
    ticker_t t;
    ticker_start(&t);
    for (int i = 0; i < 3; i++) {
        w[i] = (fw_t){.f = f};
        atomic_store(&w[i].rc, 99);
        cr_assert_eq(conc_go(&h[i], fut_green_wait, &w[i]), 0);
    }
    tu_bunch_start(&b, 1, fut_os_set, f);
    cr_assert_eq(conc_green_joinall(h, 3, 10.0), 0);
    long ticks = ticker_stop(&t);
    tu_bunch_join(&b);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(atomic_load(&w[i].rc), 0);
        cr_assert_eq(w[i].res, PTR(456));
        cr_assert_eq(conc_green_free(h[i]), 0);
    }
    cr_assert_geq(ticks, MIN_TICKS(0.05));
    conc_future_free(f);
}

static void *slow_pool_task(void *arg)
{
    tu_sleep(0.1); /* really blocks its worker thread */
    return PTR((uintptr_t)arg * 2);
}

static void *failing_pool_task(void *arg)
{
    (void)arg;
    tu_sleep(0.02);
    return conc_fail(CONC_EEOF, "pool task failed");
}

typedef struct {
    conc_executor_t *ex;
    atomic_int rc, exc_code;
    void *res;
    char msg[64];
} poolw_t;

static void *wait_pool_future(void *arg)
{
    poolw_t *p = arg;
    conc_future_t *f;
    int rc = conc_submit(p->ex, &f, slow_pool_task, PTR(21));
    if (rc == 0) {
        rc = conc_future_result(f, 5.0, &p->res);
        conc_future_free(f);
    }
    atomic_store(&p->rc, rc);
    rc = conc_submit(p->ex, &f, failing_pool_task, NULL);
    if (rc == 0) {
        int code = 0;
        const char *m = NULL;
        rc = conc_future_exception(f, 5.0, &code, &m);
        atomic_store(&p->exc_code, rc == 0 ? code : rc);
        if (m)
            snprintf(p->msg, sizeof p->msg, "%s", m);
        conc_future_free(f);
    }
    return NULL;
}

Test(green_sync, green_thread_waits_on_a_thread_pool_future_while_siblings_run, .timeout = TU_TIMEOUT)
{
    conc_executor_t *ex;
    cr_assert_eq(conc_thread_pool_new(&ex, NULL), 0);
    static poolw_t p;
    p = (poolw_t){.ex = ex};
    atomic_store(&p.rc, 99);
    ticker_t t;
    ticker_start(&t);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, wait_pool_future, &p), 0);
    cr_assert_eq(conc_green_join(g, 10.0), 0);
    long ticks = ticker_stop(&t);
    cr_assert_eq(atomic_load(&p.rc), 0);
    cr_assert_eq(p.res, PTR(42));
    cr_assert_eq(atomic_load(&p.exc_code), CONC_EEOF);
    cr_assert_str_eq(p.msg, "pool task failed");
    cr_assert_geq(ticks, MIN_TICKS(0.1), "siblings ticked %ld times during a 0.1 s future wait", ticks);
    cr_assert_eq(conc_green_free(g), 0);
    cr_assert_eq(conc_executor_free(ex), 0);
}

/* ------------------------------------------------------- Thread join */

static void *os_thread_body(void *arg)
{
    tu_sleep(0.08);
    return arg;
}

static void *green_joins_thread(void *arg)
{
    (void)arg;
    conc_thread_t *t;
    if (conc_thread_spawn(&t, os_thread_body, PTR(9), NULL) != 0)
        return PTR(-1);
    void *r = NULL;
    int rc = conc_thread_join(t, 5.0, &r);
    conc_thread_free(t);
    return rc == 0 ? r : PTR(-2);
}

Test(green_sync, green_thread_joins_a_conc_thread_while_siblings_run, .timeout = TU_TIMEOUT)
{
    ticker_t t;
    ticker_start(&t);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, green_joins_thread, NULL), 0);
    void *r = NULL;
    cr_assert_eq(conc_green_get(g, 10.0, &r), 0);
    long ticks = ticker_stop(&t);
    cr_assert_eq(r, PTR(9));
    cr_assert_geq(ticks, MIN_TICKS(0.08));
    cr_assert_eq(conc_green_free(g), 0);
}

/* ------------------------------------------- green join across two hubs */

typedef struct {
    _Atomic(conc_green_t *) g;
    conc_event_t release;
    atomic_int rc;
} xhub_t;

static void *other_hub_green(void *arg)
{
    xhub_t *x = arg;
    conc_event_wait(&x->release, 5.0);
    return PTR(11);
}

static void *other_hub_thread(void *arg)
{
    xhub_t *x = arg;
    conc_green_t *g;
    int rc = conc_go(&g, other_hub_green, x);
    if (rc == 0) {
        atomic_store(&x->g, g);
        rc = conc_green_join(g, 10.0); /* runs this thread's hub */
    }
    atomic_store(&x->rc, rc);
    return NULL;
}

static void *join_other_hub(void *arg)
{
    xhub_t *x = arg;
    void *r = NULL;
    int rc = conc_green_get(atomic_load(&x->g), 5.0, &r);
    return rc == 0 ? r : PTR(rc);
}

Test(green_sync, green_thread_joins_a_green_thread_of_another_hub, .timeout = TU_TIMEOUT)
{
    static xhub_t x = {.release = CONC_EVENT_INIT};
    atomic_store(&x.rc, 99);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, other_hub_thread, &x), 0);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&x.g) != NULL, 5.0));
    conc_green_t *j;
    cr_assert_eq(conc_go(&j, join_other_hub, &x), 0);
    cr_assert_eq(conc_sleep(0.02), 0);
    conc_event_set(&x.release); /* from this hub's main context */
    void *r = NULL;
    cr_assert_eq(conc_green_get(j, 5.0, &r), 0);
    cr_assert_eq(r, PTR(11));
    pthread_join(th, NULL);
    cr_assert_eq(atomic_load(&x.rc), 0);
    cr_assert_eq(conc_green_free(atomic_load(&x.g)), 0);
    cr_assert_eq(conc_green_free(j), 0);
}

/* -------------------------------------- kills cut waits, state survives */

typedef struct {
    conc_lock_t l;
    conc_queue_t *q;
    conc_semaphore_t s;
    conc_cond_t c;
    conc_future_t *f;
    atomic_int rc[5];
} killx_t;

static void *kill_lock(void *a)
{
    killx_t *x = a;
    atomic_store(&x->rc[0], conc_lock_acquire(&x->l, true, 10.0));
    return NULL;
}
static void *kill_queue(void *a)
{
    killx_t *x = a;
    void *it;
    atomic_store(&x->rc[1], conc_queue_get(x->q, &it, true, 10.0));
    return NULL;
}
static void *kill_sem(void *a)
{
    killx_t *x = a;
    atomic_store(&x->rc[2], conc_semaphore_acquire(&x->s, true, 10.0));
    return NULL;
}
static void *kill_cond(void *a)
{
    killx_t *x = a;
    int rc = conc_cond_acquire(&x->c, true, 5.0);
    if (rc == 0) {
        rc = conc_cond_wait(&x->c, 10.0);
        if (!conc_lock_locked(x->c.lock))
            rc = 1001; /* must hold the lock again even when killed */
        conc_cond_release(&x->c);
    } else {
        rc = 1000;
    }
    atomic_store(&x->rc[3], rc);
    return NULL;
}
static void *kill_future(void *a)
{
    killx_t *x = a;
    void *r;
    atomic_store(&x->rc[4], conc_future_result(x->f, 10.0, &r));
    return NULL;
}

Test(green_sync, kill_cuts_every_primitive_and_leaves_it_usable, .timeout = TU_TIMEOUT)
{
    static killx_t x = {.l = CONC_LOCK_INIT};
    cr_assert_eq(conc_queue_new(&x.q, CONC_FIFO, 0), 0);
    cr_assert_eq(conc_semaphore_init(&x.s, 0), 0);
    cr_assert_eq(conc_future_new(&x.f), 0);
    static conc_lock_t cl = CONC_LOCK_INIT;
    cr_assert_eq(conc_cond_init(&x.c, &cl), 0);
    for (int i = 0; i < 5; i++)
        atomic_store(&x.rc[i], 99);
    void *(*fns[5])(void *) = {kill_lock, kill_queue, kill_sem, kill_cond, kill_future};
    const char *names[5] = {"lock", "queue", "semaphore", "cond", "future"};
    cr_assert_eq(conc_lock_acquire(&x.l, true, CONC_FOREVER), 0); /* main holds the lock */
    conc_green_t *g[5];
    for (int i = 0; i < 5; i++)
        cr_assert_eq(conc_go(&g[i], fns[i], &x), 0);
    cr_assert_eq(conc_sleep(0.02), 0); /* all parked now */
    for (int i = 0; i < 5; i++) {
        cr_assert_not(conc_green_dead(g[i]), "%s waiter ended early", names[i]);
        cr_assert_eq(conc_green_kill(g[i], true, 5.0), 0, "%s", names[i]);
        void *r = PTR(1);
        cr_assert_eq(conc_green_get(g[i], 0, &r), 0);
        cr_assert_null(r, "get of a killed green thread gives NULL");
        cr_assert(conc_green_killed(g[i]));
        cr_assert_eq(atomic_load(&x.rc[i]), CONC_EKILLED, "%s waiter got %d", names[i], atomic_load(&x.rc[i]));
        cr_assert_eq(conc_green_free(g[i]), 0);
    }
    /* still usable: no stale waiter swallows a wakeup */
    cr_assert_eq(conc_lock_release(&x.l), 0);
    cr_assert_eq(conc_lock_acquire(&x.l, true, 1.0), 0);
    cr_assert_eq(conc_lock_release(&x.l), 0);
    cr_assert_eq(conc_queue_put(x.q, PTR(5), true, 1.0), 0);
    void *it = NULL;
    cr_assert_eq(conc_queue_get(x.q, &it, true, 1.0), 0);
    cr_assert_eq(it, PTR(5));
    cr_assert_eq(conc_semaphore_release(&x.s, 1), 0);
    cr_assert_eq(conc_semaphore_value(&x.s), 1);
    cr_assert_not(conc_lock_locked(&cl));
    cr_assert_eq(conc_future_set_result(x.f, NULL), 0);
    conc_future_free(x.f);
    cr_assert_eq(conc_queue_free(x.q, NULL), 0, "a killed waiter is still registered on the queue");
}

/* -------------------------------------------------------- offload */

static void *offload_body(void *arg)
{
    tu_sleep(0.08); /* a real blocking call, on a pool thread */
    return PTR((uintptr_t)arg + 1);
}

static void *offload_fail(void *arg)
{
    (void)arg;
    return conc_fail(CONC_ESYS, "offloaded failure");
}

static void *green_offload(void *arg)
{
    void *r = NULL;
    int rc = conc_green_offload(offload_body, arg, &r);
    return rc == 0 ? r : PTR(rc);
}

Test(green_sync, offload_parks_only_the_green_thread, .timeout = TU_TIMEOUT)
{
    ticker_t t;
    ticker_start(&t);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, green_offload, PTR(41)), 0);
    void *r = NULL;
    cr_assert_eq(conc_green_get(g, 10.0, &r), 0);
    long ticks = ticker_stop(&t);
    cr_assert_eq(r, PTR(42));
    cr_assert_geq(ticks, MIN_TICKS(0.08), "siblings ticked %ld times during an offload", ticks);
    cr_assert_eq(conc_green_free(g), 0);
}

Test(green_sync, offloads_run_in_parallel, .timeout = TU_TIMEOUT)
{
    conc_green_t *g[4];
    double t0 = tu_now();
    for (int i = 0; i < 4; i++)
        cr_assert_eq(conc_go(&g[i], green_offload, PTR(i * 10)), 0);
    cr_assert_eq(conc_green_joinall(g, 4, 10.0), 0);
    double dt = tu_now() - t0;
    for (int i = 0; i < 4; i++) {
        void *r = NULL;
        cr_assert_eq(conc_green_get(g[i], 0, &r), 0);
        cr_assert_eq(r, PTR(i * 10 + 1));
        cr_assert_eq(conc_green_free(g[i]), 0);
    }
    /* one after another would take 4 x 0.08 s */
    cr_assert_lt(dt, 0.3, "4 offloads of 0.08 s took %.3fs: not in parallel", dt);
}

static void *green_offload_fail(void *arg)
{
    (void)arg;
    void *r = PTR(1);
    int rc = conc_green_offload(offload_fail, NULL, &r);
    int mine = conc_failure(NULL);
    /* outcomes rule: fn's failure is CONC_EFAILED, not its own code */
    return PTR(rc == CONC_EFAILED && mine == 0 ? 0 : (rc != CONC_EFAILED ? rc : 1000));
}

static atomic_int offload_finished;
static void *offload_long(void *arg)
{
    (void)arg;
    tu_sleep(0.15);
    atomic_store(&offload_finished, 1);
    return NULL;
}

static atomic_int offload_long_rc;
static void *green_offload_long(void *arg)
{
    (void)arg;
    void *r;
    atomic_store(&offload_long_rc, conc_green_offload(offload_long, NULL, &r));
    return NULL;
}

Test(green_sync, offload_failure_main_context_and_kill, .timeout = TU_TIMEOUT)
{
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, green_offload_fail, NULL), 0);
    void *r = PTR(1);
    cr_assert_eq(conc_green_get(g, 5.0, &r), 0);
    cr_assert_eq(INT(r), 0, "offload of a failing fn: %d (1000: the failure leaked into the caller)", INT(r));
    cr_assert_eq(conc_green_free(g), 0);

    /* from the main OS context too */
    r = NULL;
    cr_assert_eq(conc_green_offload(offload_body, PTR(1), &r), 0);
    cr_assert_eq(r, PTR(2));
    cr_assert_eq(conc_green_offload(NULL, NULL, &r), CONC_EINVAL);

    /* a kill cuts the wait, the function keeps running */
    atomic_store(&offload_finished, 0);
    atomic_store(&offload_long_rc, 99);
    cr_assert_eq(conc_go(&g, green_offload_long, NULL), 0);
    cr_assert_eq(conc_sleep(0.02), 0);
    double t0 = tu_now();
    cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    cr_assert_lt(tu_now() - t0, 0.12, "kill waited for the offloaded function");
    cr_assert(conc_green_dead(g));
    cr_assert_eq(atomic_load(&offload_long_rc), CONC_EKILLED);
    cr_assert_eq(atomic_load(&offload_finished), 0);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&offload_finished), 5.0));
    cr_assert_eq(conc_green_free(g), 0);
}

/* --------------------- lock: green waiters beside hammering OS threads
 * A green waiter never spins: woken, it tries once and queues again; it
 * must still get in, and one killed in the queue must not keep the OS
 * threads' releases from waking the others. */

typedef struct {
    conc_lock_t l;
    atomic_int stop, errors;
    long counter, iters;
} ghammer_t;

static void ghammer_os(void *p, int i)
{
    ghammer_t *h = p;
    (void)i;
    while (!atomic_load_explicit(&h->stop, memory_order_relaxed)) {
        if (conc_lock_acquire(&h->l, true, 10.0) != 0)
            atomic_fetch_add(&h->errors, 1);
        h->counter++;
        conc_lock_release(&h->l);
    }
}

static void *ghammer_green(void *arg)
{
    ghammer_t *h = arg;
    for (long k = 0; k < h->iters; k++) {
        if (conc_lock_acquire(&h->l, true, 10.0) != 0) {
            atomic_fetch_add(&h->errors, 1);
            return NULL;
        }
        h->counter++;
        conc_lock_release(&h->l);
        if (k % 4 == 0)
            conc_yield();
    }
    return NULL;
}

static void *ghammer_victim(void *arg)
{
    ghammer_t *h = arg;
    int rc = conc_lock_acquire(&h->l, true, 10.0);
    if (rc == 0)
        conc_lock_release(&h->l);
    return (void *)(intptr_t)rc;
}

Test(green_sync, lock_green_waiters_beside_hammering_threads, .timeout = TU_TIMEOUT)
{
    static ghammer_t h = {.l = CONC_LOCK_INIT};
    static tu_bunch_t b;
    h.iters = tu_iters(300);
    tu_bunch_start(&b, 2, ghammer_os, &h);
    conc_green_t *g[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_go(&g[i], ghammer_green, &h), 0);
    cr_assert_eq(conc_green_joinall(g, 3, 40.0), 0, "green waiters starved by hammering threads");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);

    /* A green waiter killed in the queue while the threads hammer. */
    for (int round = 0; round < 10; round++) {
        conc_green_t *v;
        cr_assert_eq(conc_go(&v, ghammer_victim, &h), 0);
        cr_assert_eq(conc_sleep(0.002), 0);
        cr_assert_eq(conc_green_kill(v, true, 5.0), 0);
        cr_assert_eq(conc_green_free(v), 0);
    }
    atomic_store(&h.stop, 1);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&h.errors), 0);
    cr_assert_not(conc_lock_locked(&h.l));
    cr_assert_eq(h.l.state, 0u, "state bits left behind: %#x", h.l.state);
    cr_assert_eq(h.l.q.reserved, 0u, "waiter bits left behind: %#x", h.l.q.reserved);
    /* still usable by a fresh green thread and the main thread */
    cr_assert_eq(conc_lock_acquire(&h.l, true, 1.0), 0);
    cr_assert_eq(conc_lock_release(&h.l), 0);
}

/* Green waiters beside OS threads, where a green waiter waits past the
 * fairness time (sync/lock.c) and asks to be handed the lock: by the
 * hammering threads' release, or cut by a Timeout scope or a kill while
 * it asks (a slow holder keeps the lock 2 ms at a time). No bit stays. */
static void ghammer_slow(void *p, int i)
{
    ghammer_t *h = p;
    if (i > 0) {
        ghammer_os(p, i);
        return;
    }
    while (!atomic_load_explicit(&h->stop, memory_order_relaxed)) {
        if (conc_lock_acquire(&h->l, true, 10.0) != 0)
            atomic_fetch_add(&h->errors, 1);
        h->counter++;
        tu_sleep(0.002);
        conc_lock_release(&h->l);
    }
}

static void *ghammer_scoped(void *arg)
{
    ghammer_t *h = arg;
    for (int k = 0; k < 20; k++) {
        cr_assert_eq(conc_timeout_begin(0.0025 + 0.0005 * (double)(k % 3)), 0);
        int rc = conc_lock_acquire(&h->l, true, CONC_FOREVER);
        int fired = conc_timeout_end();
        if (rc == 0) {
            h->counter++;
            conc_lock_release(&h->l);
        } else if (rc != CONC_ETIMEDOUT || fired != 1) {
            atomic_fetch_add(&h->errors, 1);
        }
    }
    return NULL;
}

Test(green_sync, lock_handoff_to_green_beside_hammering_threads, .timeout = TU_TIMEOUT)
{
    static ghammer_t h = {.l = CONC_LOCK_INIT};
    static tu_bunch_t b;
    h.iters = tu_iters(100);
    tu_bunch_start(&b, 2, ghammer_slow, &h);
    conc_green_t *g[4];
    cr_assert_eq(conc_go(&g[0], ghammer_green, &h), 0);
    cr_assert_eq(conc_go(&g[1], ghammer_green, &h), 0);
    cr_assert_eq(conc_go(&g[2], ghammer_scoped, &h), 0);
    cr_assert_eq(conc_go(&g[3], ghammer_victim, &h), 0);
    cr_assert_eq(conc_sleep(0.004), 0);
    cr_assert_eq(conc_green_kill(g[3], true, 5.0), 0);
    cr_assert_eq(conc_green_joinall(g, 3, 40.0), 0, "green waiters starved by hammering threads");
    for (int i = 0; i < 4; i++)
        cr_assert_eq(conc_green_free(g[i]), 0);
    atomic_store(&h.stop, 1);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&h.errors), 0);
    cr_assert_eq(h.l.state, 0u, "state bits left behind: %#x", h.l.state);
    cr_assert_eq(h.l.q.reserved, 0u, "waiter bits left behind: %#x", h.l.q.reserved);
}

/* ------------------------------------------- Queue: a ring's owner paths */

#include "core/fence.h"
#include "queue/internal.h"

static bool side_owned(uintptr_t o)
{
    return o != CONC__RING_OWN_NONE && o != CONC__RING_OWN_REVOKING && o != CONC__RING_OWN_SHARED;
}

static void ring_os_consumer(void *arg, int idx)
{
    (void)idx;
    qx_t *x = arg;
    for (long i = 1; i <= x->n; i++) {
        void *it;
        if (conc_queue_get(x->q, &it, true, 10.0) != 0 || it != PTR(i)) {
            atomic_fetch_add(&x->errors, 1);
            return;
        }
        atomic_fetch_add(&x->got, 1);
    }
}

static atomic_int ring_rc; /* a killed green thread's result is NULL: its code goes here */

static void *ring_get_in_scope(void *arg)
{
    void *it;
    conc_timeout_begin(0.03);
    int rc = conc_queue_get(arg, &it, true, CONC_FOREVER);
    conc_timeout_end();
    atomic_store(&ring_rc, rc);
    return NULL;
}

static void *ring_get_forever(void *arg)
{
    void *it;
    atomic_store(&ring_rc, conc_queue_get(arg, &it, true, CONC_FOREVER));
    return NULL;
}

static void *ring_put_timed(void *arg)
{
    atomic_store(&ring_rc, conc_queue_put(arg, PTR(99), true, 0.03));
    return NULL;
}

static void *ring_put_forever(void *arg)
{
    atomic_store(&ring_rc, conc_queue_put(arg, PTR(98), true, CONC_FOREVER));
    return NULL;
}

static int green_result(void *(*fn)(void *), void *arg, bool kill)
{
    conc_green_t *g;
    atomic_store(&ring_rc, 12345);
    cr_assert_eq(conc_go(&g, fn, arg), 0);
    if (kill) {
        cr_assert_eq(conc_sleep(0.01), 0);
        cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    }
    void *r = PTR(1);
    cr_assert_eq(conc_green_get(g, 5.0, &r), 0);
    cr_assert_eq(conc_green_free(g), 0);
    return atomic_load(&ring_rc);
}

/* One green producer (its hub's thread owns the put side) and one OS
 * consumer (owns the get side), both blocking on a ring of 4; then, on the
 * owning thread, green getters and putters cut by a Timeout scope, a
 * timeout and a kill; then an OS thread takes the put side over. */
Test(green_sync, queue_ring_owner_sides_green_and_os_threads, .timeout = TU_TIMEOUT)
{
    static qx_t x;
    memset(&x, 0, sizeof x);
    x.n = tu_iters(20000);
    bool mb = conc__membarrier_init();
    cr_assert_eq(conc_queue_new(&x.q, CONC_FIFO, 4), 0);
    cr_assert_eq(x.q->impl, IMPL_RING);
    static tu_bunch_t b;
    tu_bunch_start(&b, 1, ring_os_consumer, &x);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, q_green_producer, &x), 0);
    cr_assert_eq(conc_green_join(g, 30.0), 0);
    cr_assert_eq(conc_green_free(g), 0);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.errors), 0);
    cr_assert_eq(atomic_load(&x.got), x.n);
    conc__ring_t *r = &x.q->s.ring;
    /* each side was claimed; one whose sleepers met every few items is
     * shared by now (conc__ring_sleep_fence) */
    cr_assert_neq(atomic_load(&r->pown), CONC__RING_OWN_NONE);
    cr_assert_neq(atomic_load(&r->cown), CONC__RING_OWN_NONE);
    if (!mb)
        cr_assert_eq(atomic_load(&r->pown), CONC__RING_OWN_SHARED);
    cr_assert_eq(conc_queue_free(x.q, NULL), 0);

    /* the sleepers' rule, white box: a side owned by another thread needs
     * the heavy fence; after FENCE_STRIKES sleeps with no items between
     * them it is made shared (and needs none); this thread's own side or a
     * shared one never needs it */
    cr_assert_eq(conc_queue_new(&x.q, CONC_FIFO, 4), 0);
    r = &x.q->s.ring;
    uintptr_t none = CONC__RING_OWN_NONE;
    static conc__ring_thr_t other; /* another thread's record (idle) */
    cr_assert(atomic_compare_exchange_strong(&r->pown, &none, (uintptr_t)&other)); /* another thread */
    int fenced = 0;
    while (conc__ring_sleep_fence(r, true))
        cr_assert_lt(++fenced, 100);
    cr_assert_eq(fenced, 15);
    cr_assert_eq(atomic_load(&r->pown), CONC__RING_OWN_SHARED);
    cr_assert_not(conc__ring_sleep_fence(r, true));
    cr_assert_not(conc__ring_sleep_fence(r, false)); /* get side unowned */
    void *it0;
    cr_assert_eq(conc_queue_get_nowait(x.q, &it0), CONC_EEMPTY); /* this thread claims the get side */
    cr_assert_not(conc__ring_sleep_fence(r, false));
    cr_assert_eq(conc_queue_put_nowait(x.q, PTR(5)), 0); /* CAS path: shared */
    cr_assert_eq(conc_queue_get(x.q, &it0, true, 1.0), 0);
    cr_assert_eq(it0, PTR(5));
    cr_assert_eq(conc_queue_free(x.q, NULL), 0);

    /* cuts on sides this thread owns */
    conc_queue_t *q;
    void *it;
    cr_assert_eq(conc_queue_new(&q, CONC_FIFO, 2), 0);
    cr_assert_eq(conc_queue_get_nowait(q, &it), CONC_EEMPTY); /* claims the get side */
    cr_assert_eq(green_result(ring_get_in_scope, q, false), CONC_ETIMEDOUT);
    cr_assert_eq(green_result(ring_get_forever, q, true), CONC_EKILLED);
    cr_assert_eq(conc_queue_put_nowait(q, PTR(1)), 0); /* claims the put side */
    cr_assert_eq(conc_queue_put_nowait(q, PTR(2)), 0);
    cr_assert_eq(conc_queue_put_nowait(q, PTR(3)), CONC_EFULL);
    cr_assert_eq(green_result(ring_put_timed, q, false), CONC_EFULL);
    cr_assert_eq(green_result(ring_put_forever, q, true), CONC_EKILLED);
    r = &q->s.ring;
    if (mb) {
        cr_assert(side_owned(atomic_load(&r->pown)) && side_owned(atomic_load(&r->cown)));
        cr_assert_eq(atomic_load(&r->pown), atomic_load(&r->cown), "one thread owns both sides");
    }
    cr_assert_eq(conc_queue_get_nowait(q, &it), 0);
    cr_assert_eq(it, PTR(1));
    /* an OS thread's put takes the side over for good */
    static qx_t y;
    memset(&y, 0, sizeof y);
    y.q = q;
    y.n = 1;
    tu_bunch_start(&b, 1, q_os_producer, &y);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&y.errors), 0);
    cr_assert_eq(atomic_load(&r->pown), CONC__RING_OWN_SHARED);
    cr_assert_eq(conc_queue_qsize(q), 2);
    cr_assert_eq(conc_queue_get_nowait(q, &it), 0);
    cr_assert_eq(it, PTR(2));
    cr_assert_eq(conc_queue_get_nowait(q, &it), 0);
    cr_assert_eq(it, PTR(1)); /* q_os_producer puts 1..n */
    cr_assert_eq(conc_queue_get_nowait(q, &it), CONC_EEMPTY);
    cr_assert_eq(conc_queue_free(q, NULL), 0);
}

/* A green thread that revokes a ring side from an OS thread "preempted"
 * in the middle of an operation (its busy flag held for 0.3 s) does not
 * stall its hub meanwhile: the hub's other green threads run (ring.c,
 * side_revoke: it puts the owner back and switches, conc__hub_pause). A
 * kill that comes meanwhile is not lost: the put (which does not block)
 * completes and the revoker's next blocking call returns CONC_EKILLED. */
typedef struct {
    conc_queue_t *q;
    atomic_int owner_state; /* 1: the owner claimed, 2: let it exit */
    atomic_int ticks, stop, busy_cleared;
    uintptr_t owner; /* the owner thread's id (ring.c) */
    int ticks_before, ticks_after; /* around the revoker's put */
    int put_rc, sleep_rc;
    conc_green_t *revoker;
    bool kill;
} gr_t;

static void *gr_owner(void *arg)
{
    gr_t *x = arg;
    if (conc_queue_put_nowait(x->q, PTR(1)) != 0)
        return PTR(1);
    atomic_store(&x->owner_state, 1);
    while (atomic_load(&x->owner_state) != 2)
        tu_sleep(0.001);
    return NULL;
}

static void *gr_unbusy(void *arg)
{
    gr_t *x = arg;
    tu_sleep(0.3);
    atomic_store(&x->busy_cleared, 1);
    atomic_store(conc__ring_busy(x->owner), 0); /* the owner's put ends */
    return NULL;
}

static void *gr_ticker(void *arg)
{
    gr_t *x = arg;
    while (!atomic_load(&x->stop)) {
        int t = atomic_fetch_add(&x->ticks, 1) + 1;
        if (x->kill && t == 10 && !atomic_load(&x->busy_cleared))
            conc_green_kill(x->revoker, false, 0);
        conc_sleep(0.002);
    }
    return NULL;
}

static void *gr_revoker(void *arg)
{
    gr_t *x = arg;
    x->ticks_before = atomic_load(&x->ticks);
    x->put_rc = conc_queue_put_nowait(x->q, PTR(2));
    x->ticks_after = atomic_load(&x->ticks);
    x->sleep_rc = conc_sleep(x->kill ? 5.0 : 0.001);
    return NULL;
}

static void green_revoker_case(bool kill)
{
    static gr_t x;
    memset(&x, 0, sizeof x);
    x.kill = kill;
    cr_assert_eq(conc_queue_new(&x.q, CONC_FIFO, 8), 0);
    conc__ring_t *r = &x.q->s.ring;
    pthread_t owner, unbusy;
    cr_assert_eq(pthread_create(&owner, NULL, gr_owner, &x), 0);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&x.owner_state) == 1, 10.0));
    cr_assert(side_owned(atomic_load(&r->pown)));
    x.owner = atomic_load(&r->pown);
    atomic_store(conc__ring_busy(x.owner), 1); /* the owner, "preempted" mid-put */
    conc_green_t *ticker;
    cr_assert_eq(conc_go(&ticker, gr_ticker, &x), 0);
    cr_assert_eq(conc_go(&x.revoker, gr_revoker, &x), 0);
    cr_assert_eq(pthread_create(&unbusy, NULL, gr_unbusy, &x), 0);
    cr_assert_eq(conc_green_join(x.revoker, 10.0), 0);
    atomic_store(&x.stop, 1);
    cr_assert_eq(conc_green_join(ticker, 10.0), 0);
    pthread_join(unbusy, NULL);
    atomic_store(&x.owner_state, 2);
    void *orc;
    pthread_join(owner, &orc);
    cr_assert_null(orc);
    cr_assert_eq(x.put_rc, 0);
    cr_assert_geq(x.ticks_after - x.ticks_before, 10, "the hub ran its other green thread %d times in 0.3 s",
                  x.ticks_after - x.ticks_before);
    cr_assert_eq(x.sleep_rc, kill ? CONC_EKILLED : 0);
    cr_assert_eq(atomic_load(&r->pown), CONC__RING_OWN_SHARED);
    void *it;
    cr_assert_eq(conc_queue_get_nowait(x.q, &it), 0);
    cr_assert_eq(it, PTR(1));
    cr_assert_eq(conc_queue_get_nowait(x.q, &it), 0);
    cr_assert_eq(it, PTR(2));
    cr_assert_eq(conc_queue_get_nowait(x.q, &it), CONC_EEMPTY);
    cr_assert_eq(conc_green_free(x.revoker), 0);
    cr_assert_eq(conc_green_free(ticker), 0);
    cr_assert_eq(conc_queue_free(x.q, NULL), 0);
}

Test(green_sync, queue_ring_green_revoker_lets_its_hub_run, .timeout = TU_TIMEOUT)
{
    if (!conc__membarrier_init())
        cr_skip_test("membarrier(2) is not usable here: sides are never owned");
    green_revoker_case(false);
    green_revoker_case(true);
}

/* ------------------- lock: a green waiter woken while its hub is busy
 * A release wakes the oldest waiter, here a green thread; its hub (this
 * thread) keeps running something else — it takes and drops the lock
 * without ever parking. The green thread cannot run yet, so it must not
 * keep the release path from waking the OS thread waiting behind it: the
 * OS thread gets in while the hub stays busy (sync/lock.c: only an OS
 * thread is made the one candidate in flight). */
typedef struct {
    conc_lock_t l;
    atomic_int queued, got, errors;
} busyhub_t;

static void *busyhub_green(void *arg)
{
    busyhub_t *h = arg;
    atomic_store(&h->queued, 1);
    if (conc_lock_acquire(&h->l, true, 20.0) != 0)
        atomic_fetch_add(&h->errors, 1);
    else
        conc_lock_release(&h->l);
    return NULL;
}

static void busyhub_os(void *p, int i)
{
    busyhub_t *h = p;
    (void)i;
    if (conc_lock_acquire(&h->l, true, 20.0) != 0) {
        atomic_fetch_add(&h->errors, 1);
        return;
    }
    atomic_store(&h->got, 1);
    conc_lock_release(&h->l);
}

Test(green_sync, lock_green_waiter_woken_on_a_busy_hub_does_not_strand_os_waiters, .timeout = TU_TIMEOUT)
{
    static busyhub_t h = {.l = CONC_LOCK_INIT};
    static tu_bunch_t b;
    cr_assert_eq(conc_lock_acquire(&h.l, true, CONC_FOREVER), 0);
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, busyhub_green, &h), 0);
    while (!atomic_load(&h.queued))
        cr_assert_eq(conc_yield(), 0);
    cr_assert_eq(conc_yield(), 0); /* it queued on the lock (first in line) */
    tu_bunch_start(&b, 1, busyhub_os, &h);
    cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10.0)); /* the OS thread sleeps behind it */
    tu_sleep(0.005);
    cr_assert_eq(conc_lock_release(&h.l), 0); /* wakes the green thread: ready, not running */
    /* Busy, never parking: the hub cannot run the green thread. */
    double t0 = tu_now();
    while (!atomic_load(&h.got) && tu_now() - t0 < 2.0) {
        if (conc_lock_acquire(&h.l, false, CONC_FOREVER) == 0)
            cr_assert_eq(conc_lock_release(&h.l), 0);
    }
    cr_assert(atomic_load(&h.got), "the OS waiter was stranded behind a green waiter that could not run");
    tu_bunch_join(&b);
    cr_assert_eq(conc_green_join(g, 10.0), 0);
    cr_assert_eq(conc_green_free(g), 0);
    cr_assert_eq(atomic_load(&h.errors), 0);
    cr_assert_eq(h.l.state, 0u, "state bits left behind: %#x", h.l.state);
    cr_assert_eq(h.l.q.reserved, 0u, "waiter bits left behind: %#x", h.l.q.reserved);
}
