/*
 * The Manager's Event, Semaphore, BoundedSemaphore, Condition and Barrier
 * proxies (conc/manager_sync.h), ported from CPython's
 * _test_multiprocessing.py run through a manager (_TestEvent.test_event,
 * _TestSemaphore.test_semaphore / test_bounded_semaphore / test_timeout,
 * _TestCondition.test_notify / test_notify_all / test_timeout /
 * test_waitfor / test_waitfor_timeout, _TestBarrier's test_barrier,
 * test_wait_return, test_abort, test_reset, test_timeout,
 * test_default_timeout), with processes and OS threads each on their own
 * proxy. Then what conc adds: every blocking call is cut short by a kill
 * of its green thread and by a Timeout scope, and the cut leaves nothing
 * behind on the server (no permit, no notification lost; a cut barrier
 * wait breaks the barrier); a waiter whose process dies frees its waits;
 * malformed requests for the new ops are refused.
 */
#include "manager_util.h"

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>

#include <conc/green.h>
#include <conc/manager.h>
#include <conc/manager_sync.h>

#include "manager/internal.h"
#include "manager/sync.h"

TestSuite(manager_sync, .init = mu_setup, .timeout = TU_TIMEOUT);

static conc_manager_t *start(void) { return mu_start((conc_manager_opts_t){.timeout = 10}); }

/* Proxies the forked children use (a proxy reconnects in a child). */
static conc_mevent_t *g_ev;
static conc_msem_t *g_sem;
static conc_mbarrier_t *g_bar;

/* ---------------------------------------------------------------- Event */

static int child_set_later(const void *arg, size_t len)
{
    (void)arg, (void)len;
    tu_sleep(0.2);
    return conc_mevent_set(g_ev) == 0 ? 0 : 1;
}
CONC_REGISTER(child_set_later);

Test(manager_sync, event)
{
    conc_manager_t *m = start();
    conc_mevent_t *e;
    cr_assert_eq(conc_manager_event(m, NULL, &e), 0);
    bool set = true;
    cr_assert_eq(conc_mevent_is_set(e, &set), 0);
    cr_assert_not(set);
    cr_assert_eq(conc_mevent_wait(e, 0), CONC_ETIMEDOUT);
    cr_assert_eq(conc_mevent_wait(e, -1), CONC_ETIMEDOUT); /* negative: only looks */
    double t0 = tu_now();
    cr_assert_eq(conc_mevent_wait(e, 0.2), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t0, 0.2);
    cr_assert_eq(conc_mevent_set(e), 0);
    cr_assert_eq(conc_mevent_is_set(e, &set), 0);
    cr_assert(set);
    cr_assert_eq(conc_mevent_wait(e, CONC_FOREVER), 0);
    cr_assert_eq(conc_mevent_wait(e, 0), 0);
    cr_assert_eq(conc_mevent_clear(e), 0);
    cr_assert_eq(conc_mevent_is_set(e, &set), 0);
    cr_assert_not(set);
    /* another process sets it while we wait */
    g_ev = e;
    conc_process_t *p = mu_run(child_set_later, NULL, 0, CONC_FORK);
    t0 = tu_now();
    cr_assert_eq(conc_mevent_wait(e, 20), 0);
    cr_assert_lt(tu_now() - t0, 10);
    cr_assert_eq(mu_join_code(p, 30), 0);
    /* a second proxy by name is the same event */
    conc_mevent_t *a, *b;
    cr_assert_eq(conc_manager_event(m, "E", &a), 0);
    cr_assert_eq(conc_manager_event(m, "E", &b), 0);
    cr_assert_eq(conc_mevent_set(a), 0);
    cr_assert_eq(conc_mevent_wait(b, 0), 0);
    /* bad input */
    cr_assert_eq(conc_mevent_wait(e, NAN), CONC_EINVAL);
    cr_assert_eq(conc_mevent_wait(NULL, 1), CONC_EINVAL);
    cr_assert_eq(conc_mevent_is_set(e, NULL), CONC_EINVAL);
    conc_mqueue_t *q;
    cr_assert_eq(conc_manager_queue(m, "E", 0, &q), CONC_EINVAL); /* the name is an Event's */
    conc_mevent_free(a);
    conc_mevent_free(b);
    conc_mevent_free(e);
    conc_manager_free(m);
}

/* ------------------------------------------------------------ Semaphore */

typedef struct {
    conc_manager_t *m;
    conc_msem_t *s;
    int rc;
    double took;
} semarg_t;

static void *sem_waiter(void *p)
{
    semarg_t *a = p;
    double t0 = tu_now();
    a->rc = conc_msem_acquire(a->s, true, 20);
    a->took = tu_now() - t0;
    return NULL;
}

Test(manager_sync, semaphore)
{
    conc_manager_t *m = start();
    conc_msem_t *s;
    long v = -1;
    cr_assert_eq(conc_manager_semaphore(m, NULL, 2, &s), 0);
    cr_assert_eq(conc_msem_value(s, &v), 0);
    cr_assert_eq(v, 2);
    cr_assert_eq(conc_msem_acquire(s, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_msem_acquire(s, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_msem_acquire(s, false, CONC_FOREVER), CONC_ETIMEDOUT);
    cr_assert_eq(conc_msem_acquire(s, true, -1), CONC_ETIMEDOUT); /* negative: tries once */
    double t0 = tu_now();
    cr_assert_eq(conc_msem_acquire(s, true, 0.2), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t0, 0.2);
    cr_assert_eq(conc_msem_release(s, 1), 0);
    cr_assert_eq(conc_msem_value(s, &v), 0);
    cr_assert_eq(v, 1);
    cr_assert_eq(conc_msem_release(s, 2), 0); /* release(n) */
    cr_assert_eq(conc_msem_value(s, &v), 0);
    cr_assert_eq(v, 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_msem_acquire(s, false, CONC_FOREVER), 0);
    /* a waiter on its own proxy, woken by a release on ours */
    semarg_t a = {m, NULL, 1, 0};
    conc_msem_free(s);
    cr_assert_eq(conc_manager_semaphore(m, "S", 0, &s), 0);
    conc_msem_t *s2;
    cr_assert_eq(conc_manager_semaphore(m, "S", 99, &s2), 0); /* the same: value 0 stays */
    a.s = s2;
    pthread_t th;
    pthread_create(&th, NULL, sem_waiter, &a);
    tu_sleep(0.2);
    cr_assert_eq(conc_msem_release(s, 1), 0);
    pthread_join(th, NULL);
    cr_assert_eq(a.rc, 0);
    cr_assert_geq(a.took, 0.15);
    cr_assert_eq(conc_msem_value(s, &v), 0);
    cr_assert_eq(v, 0);
    /* release(2) with one waiter: it gets one, the other is free at once
     * for a newcomer (even before the waiter has left the queue) */
    a.rc = 1;
    pthread_create(&th, NULL, sem_waiter, &a);
    tu_sleep(0.2);
    conc_msem_t *s3;
    cr_assert_eq(conc_manager_semaphore(m, "S", 0, &s3), 0);
    cr_assert_eq(conc_msem_release(s, 2), 0);
    cr_assert_eq(conc_msem_acquire(s3, false, CONC_FOREVER), 0);
    pthread_join(th, NULL);
    cr_assert_eq(a.rc, 0);
    conc_msem_free(s3);
    /* bad input */
    cr_assert_eq(conc_msem_acquire(s, false, 1), CONC_EINVAL);
    cr_assert_eq(conc_msem_acquire(s, true, NAN), CONC_EINVAL);
    cr_assert_eq(conc_msem_release(s, 0), CONC_EINVAL);
    cr_assert_eq(conc_manager_semaphore(m, NULL, -1, &s2), CONC_EINVAL);
    conc_msem_free(a.s);
    conc_msem_free(s);
    conc_manager_free(m);
}

Test(manager_sync, bounded_semaphore)
{
    conc_manager_t *m = start();
    conc_msem_t *s;
    long v;
    cr_assert_eq(conc_manager_bounded_semaphore(m, NULL, 2, &s), 0);
    cr_assert_eq(conc_msem_release(s, 1), CONC_EINVAL); /* ValueError: over its initial value */
    cr_assert_eq(conc_msem_acquire(s, true, 1), 0);
    cr_assert_eq(conc_msem_release(s, 2), CONC_EINVAL); /* nothing released */
    cr_assert_eq(conc_msem_value(s, &v), 0);
    cr_assert_eq(v, 1);
    cr_assert_eq(conc_msem_release(s, 1), 0);
    cr_assert_eq(conc_msem_release(s, 1), CONC_EINVAL);
    cr_assert_eq(conc_msem_value(s, &v), 0);
    cr_assert_eq(v, 2);
    conc_msem_free(s);
    conc_manager_free(m);
}

/* ------------------------------------------------------------ Condition */

typedef struct {
    conc_manager_t *m;
    conc_mcond_t *c;
    atomic_int *woken;
    int rc;
    double timeout;
} condarg_t;

static void *cond_waiter(void *p)
{
    condarg_t *a = p;
    a->rc = conc_mcond_acquire(a->c, true, CONC_FOREVER);
    if (a->rc)
        return NULL;
    a->rc = conc_mcond_wait(a->c, a->timeout);
    if (a->rc == 0)
        atomic_fetch_add(a->woken, 1);
    int r = conc_mcond_release(a->c);
    if (!a->rc)
        a->rc = r;
    return NULL;
}

Test(manager_sync, condition_notify)
{
    conc_manager_t *m = start();
    conc_mcond_t *c;
    cr_assert_eq(conc_manager_condition(m, "C", &c), 0);
    enum { N = 3 };
    atomic_int woken = 0;
    condarg_t a[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        a[i] = (condarg_t){m, NULL, &woken, 1, 20};
        cr_assert_eq(conc_manager_condition(m, "C", &a[i].c), 0);
        pthread_create(&th[i], NULL, cond_waiter, &a[i]);
    }
    tu_sleep(0.3); /* all waiting */
    cr_assert_eq(conc_mcond_notify(c, 1), CONC_EPERM); /* not held */
    cr_assert_eq(conc_mcond_acquire(c, true, 5), 0);
    cr_assert_eq(conc_mcond_notify(c, 1), 0);
    cr_assert_eq(conc_mcond_release(c), 0);
    TU_WAIT_UNTIL(atomic_load(&woken) == 1, 5);
    tu_sleep(0.1);
    cr_assert_eq(atomic_load(&woken), 1); /* only one */
    cr_assert_eq(conc_mcond_acquire(c, true, 5), 0);
    cr_assert_eq(conc_mcond_notify_all(c), 0);
    cr_assert_eq(conc_mcond_release(c), 0);
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(a[i].rc, 0, "waiter %d: %d", i, a[i].rc);
        conc_mcond_free(a[i].c);
    }
    cr_assert_eq(atomic_load(&woken), N);
    /* timeout; the lock is held again after it, at its full level */
    cr_assert_eq(conc_mcond_acquire(c, true, 5), 0);
    cr_assert_eq(conc_mcond_acquire(c, true, 5), 0); /* re-entrant */
    double t0 = tu_now();
    cr_assert_eq(conc_mcond_wait(c, 0.2), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t0, 0.2);
    cr_assert_eq(conc_mcond_wait(c, -1), CONC_ETIMEDOUT);
    cr_assert_eq(conc_mcond_release(c), 0);
    cr_assert_eq(conc_mcond_release(c), 0);
    cr_assert_eq(conc_mcond_release(c), CONC_EPERM);
    cr_assert_eq(conc_mcond_wait(c, 1), CONC_EPERM);
    cr_assert_eq(conc_mcond_notify_all(c), CONC_EPERM);
    /* bad input */
    cr_assert_eq(conc_mcond_acquire(c, true, -1), CONC_EINVAL); /* RLock: ValueError */
    cr_assert_eq(conc_mcond_acquire(c, false, 1), CONC_EINVAL);
    cr_assert_eq(conc_mcond_notify(c, -1), CONC_EINVAL);
    cr_assert_eq(conc_mcond_wait(c, NAN), CONC_EINVAL);
    conc_mcond_free(c);
    conc_manager_free(m);
}

/* the lock is owned: another proxy cannot take or release it */
Test(manager_sync, condition_lock_is_owned)
{
    conc_manager_t *m = start();
    conc_mcond_t *c, *d;
    cr_assert_eq(conc_manager_condition(m, "D", &c), 0);
    cr_assert_eq(conc_manager_condition(m, "D", &d), 0);
    cr_assert_eq(conc_mcond_acquire(c, true, 5), 0);
    cr_assert_eq(conc_mcond_acquire(d, false, CONC_FOREVER), CONC_ETIMEDOUT);
    cr_assert_eq(conc_mcond_release(d), CONC_EPERM);
    /* its holder's proxy closes: the server releases it */
    conc_mcond_free(c);
    cr_assert_eq(conc_mcond_acquire(d, true, 5), 0);
    cr_assert_eq(conc_mcond_release(d), 0);
    conc_mcond_free(d);
    conc_manager_free(m);
}

typedef struct {
    conc_mcond_t *c;
    atomic_int *state;
} wfarg_t;

static bool state_ready(void *p) { return atomic_load((atomic_int *)p) >= 4; }

static void *cond_bumper(void *p)
{
    wfarg_t *a = p;
    for (int i = 0; i < 4; i++) {
        tu_sleep(0.05);
        if (conc_mcond_acquire(a->c, true, 5))
            return NULL;
        atomic_fetch_add(a->state, 1);
        conc_mcond_notify(a->c, 1);
        conc_mcond_release(a->c);
    }
    return NULL;
}

Test(manager_sync, condition_wait_for)
{
    conc_manager_t *m = start();
    conc_mcond_t *c;
    atomic_int state = 0;
    cr_assert_eq(conc_manager_condition(m, "W", &c), 0);
    wfarg_t a = {NULL, &state};
    cr_assert_eq(conc_manager_condition(m, "W", &a.c), 0);
    cr_assert_eq(conc_mcond_acquire(c, true, 5), 0);
    double t0 = tu_now();
    cr_assert_eq(conc_mcond_wait_for(c, state_ready, &state, 0.1), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t0, 0.1);
    pthread_t th;
    pthread_create(&th, NULL, cond_bumper, &a);
    cr_assert_eq(conc_mcond_wait_for(c, state_ready, &state, 20), 0);
    cr_assert_eq(atomic_load(&state), 4);
    cr_assert_eq(conc_mcond_release(c), 0);
    pthread_join(th, NULL);
    cr_assert_eq(conc_mcond_wait_for(c, NULL, NULL, 1), CONC_EINVAL);
    conc_mcond_free(a.c);
    conc_mcond_free(c);
    conc_manager_free(m);
}

/* -------------------------------------------------------------- Barrier */

typedef struct {
    conc_manager_t *m;
    conc_mbarrier_t *b;
    int rc, index;
    double timeout;
} bararg_t;

static void *bar_waiter(void *p)
{
    bararg_t *a = p;
    a->rc = conc_mbarrier_wait(a->b, a->timeout, &a->index);
    return NULL;
}

static int child_bar(const void *arg, size_t len)
{
    (void)arg, (void)len;
    int idx = -1;
    return conc_mbarrier_wait(g_bar, 20, &idx) == 0 ? 0 : 1;
}
CONC_REGISTER(child_bar);

Test(manager_sync, barrier)
{
    conc_manager_t *m = start();
    enum { N = 3 };
    conc_mbarrier_t *b;
    cr_assert_eq(conc_manager_barrier(m, "B", N, CONC_FOREVER, &b), 0);
    int n = -1;
    cr_assert_eq(conc_mbarrier_parties(b, &n), 0);
    cr_assert_eq(n, N);
    for (int pass = 0; pass < 2; pass++) { /* test_barrier: reusable */
        bararg_t a[N - 1];
        pthread_t th[N - 1];
        for (int i = 0; i < N - 1; i++) {
            a[i] = (bararg_t){m, NULL, 1, -1, CONC_BARRIER_DEFAULT};
            cr_assert_eq(conc_manager_barrier(m, "B", 99, 0, &a[i].b), 0); /* the same barrier */
            pthread_create(&th[i], NULL, bar_waiter, &a[i]);
        }
        TU_WAIT_UNTIL(conc_mbarrier_n_waiting(b, &n) == 0 && n == N - 1, 5);
        cr_assert_eq(n, N - 1);
        int mine = -1;
        cr_assert_eq(conc_mbarrier_wait(b, CONC_BARRIER_DEFAULT, &mine), 0);
        int seen = 1 << mine;
        for (int i = 0; i < N - 1; i++) {
            pthread_join(th[i], NULL);
            cr_assert_eq(a[i].rc, 0);
            seen |= 1 << a[i].index;
            conc_mbarrier_free(a[i].b);
        }
        cr_assert_eq(seen, (1 << N) - 1); /* test_wait_return: each index once */
    }
    /* a process takes part */
    conc_mbarrier_t *b2;
    cr_assert_eq(conc_manager_barrier(m, NULL, 2, CONC_FOREVER, &b2), 0);
    g_bar = b2;
    conc_process_t *p = mu_run(child_bar, NULL, 0, CONC_FORK);
    cr_assert_eq(conc_mbarrier_wait(b2, 20, NULL), 0);
    cr_assert_eq(mu_join_code(p, 30), 0);
    /* test_timeout: the waiter that times out breaks it, for the others too */
    bararg_t w = {m, NULL, 1, -1, 20};
    cr_assert_eq(conc_manager_barrier(m, "B", N, 0, &w.b), 0);
    pthread_t th;
    pthread_create(&th, NULL, bar_waiter, &w);
    TU_WAIT_UNTIL(conc_mbarrier_n_waiting(b, &n) == 0 && n == 1, 5);
    double t0 = tu_now();
    cr_assert_eq(conc_mbarrier_wait(b, 0.2, NULL), CONC_EBROKEN);
    tu_assert_timeout(tu_now() - t0, 0.2);
    pthread_join(th, NULL);
    cr_assert_eq(w.rc, CONC_EBROKEN);
    bool broken = false;
    cr_assert_eq(conc_mbarrier_broken(b, &broken), 0);
    cr_assert(broken);
    cr_assert_eq(conc_mbarrier_wait(b, 1, NULL), CONC_EBROKEN);
    /* test_reset */
    cr_assert_eq(conc_mbarrier_reset(b), 0);
    cr_assert_eq(conc_mbarrier_broken(b, &broken), 0);
    cr_assert_not(broken);
    /* test_abort: a waiter gets broken when another aborts */
    pthread_create(&th, NULL, bar_waiter, &w);
    TU_WAIT_UNTIL(conc_mbarrier_n_waiting(b, &n) == 0 && n == 1, 5);
    cr_assert_eq(conc_mbarrier_abort(b), 0);
    pthread_join(th, NULL);
    cr_assert_eq(w.rc, CONC_EBROKEN);
    cr_assert_eq(conc_mbarrier_reset(b), 0);
    /* reset while one waits: it gets broken, the barrier is usable after */
    pthread_create(&th, NULL, bar_waiter, &w);
    TU_WAIT_UNTIL(conc_mbarrier_n_waiting(b, &n) == 0 && n == 1, 5);
    cr_assert_eq(conc_mbarrier_reset(b), 0);
    pthread_join(th, NULL);
    cr_assert_eq(w.rc, CONC_EBROKEN);
    cr_assert_eq(conc_mbarrier_broken(b, &broken), 0);
    cr_assert_not(broken);
    conc_mbarrier_free(w.b);
    /* test_default_timeout */
    conc_mbarrier_t *d;
    cr_assert_eq(conc_manager_barrier(m, NULL, 2, 0.2, &d), 0);
    t0 = tu_now();
    cr_assert_eq(conc_mbarrier_wait(d, CONC_BARRIER_DEFAULT, NULL), CONC_EBROKEN);
    tu_assert_timeout(tu_now() - t0, 0.2);
    /* bad input */
    cr_assert_eq(conc_manager_barrier(m, NULL, 0, 1, &d), CONC_EINVAL);
    cr_assert_eq(conc_manager_barrier(m, NULL, 2, NAN, &d), CONC_EINVAL);
    cr_assert_eq(conc_mbarrier_wait(b, NAN, NULL), CONC_EINVAL);
    cr_assert_eq(conc_mbarrier_n_waiting(b, NULL), CONC_EINVAL);
    conc_mbarrier_free(d);
    conc_mbarrier_free(b2);
    conc_mbarrier_free(b);
    conc_manager_free(m);
}

/* ------------------------------------------------------------ colorless */

typedef struct {
    conc_manager_t *m;
    int kind; /* 0 event wait, 1 semaphore acquire, 2 condition wait, 3 barrier wait */
    void *proxy;
    int rc;
    bool scope; /* cut by a Timeout scope instead of a kill */
    atomic_int ready;
} cutarg_t;

static int blocking_call(cutarg_t *a)
{
    switch (a->kind) {
    case 0:
        return conc_mevent_wait(a->proxy, CONC_FOREVER);
    case 1:
        return conc_msem_acquire(a->proxy, true, CONC_FOREVER);
    case 2: {
        int rc = conc_mcond_acquire(a->proxy, true, 5);
        if (rc)
            return 100 + rc;
        return conc_mcond_wait(a->proxy, CONC_FOREVER);
    }
    default:
        return conc_mbarrier_wait(a->proxy, CONC_FOREVER, NULL);
    }
}

static void *cut_body(void *p)
{
    cutarg_t *a = p;
    atomic_store(&a->ready, 1);
    if (a->scope) {
        conc_timeout_begin(0.3);
        a->rc = blocking_call(a);
        conc_timeout_end();
    } else {
        a->rc = blocking_call(a);
    }
    return NULL;
}

static void *os_thread_scope(void *p)
{
    cutarg_t *a = p;
    a->scope = true;
    return cut_body(a);
}

/* Cut one blocking call of each kind, by a kill of a green thread and by
 * a Timeout scope on an OS thread. */
static void cut_one(conc_manager_t *m, int kind, void *proxy, bool by_scope)
{
    cutarg_t a = {m, kind, proxy, 1, false, 0};
    double t0 = tu_now();
    if (by_scope) {
        pthread_t th;
        pthread_create(&th, NULL, os_thread_scope, &a);
        pthread_join(th, NULL);
        cr_assert_eq(a.rc, CONC_ETIMEDOUT, "kind %d by scope: %d", kind, a.rc);
        cr_assert_lt(tu_now() - t0, 0.3 + TU_SLACK);
    } else {
        conc_green_t *g;
        cr_assert_eq(conc_go(&g, cut_body, &a), 0);
        conc_sleep(0.2); /* let it block on the server */
        cr_assert(atomic_load(&a.ready));
        t0 = tu_now();
        cr_assert_eq(conc_green_kill(g, true, 10), 0);
        cr_assert_eq(a.rc, CONC_EKILLED, "kind %d by kill: %d", kind, a.rc);
        cr_assert_lt(tu_now() - t0, TU_SLACK);
        conc_green_free(g);
    }
}

Test(manager_sync, cut_short_leaves_nothing_behind)
{
    conc_manager_t *m = start();
    for (int by_scope = 0; by_scope < 2; by_scope++) {
        /* Event: the cut waiter is gone; a set still works */
        conc_mevent_t *e;
        cr_assert_eq(conc_manager_event(m, NULL, &e), 0);
        cut_one(m, 0, e, by_scope);
        cr_assert_eq(conc_mevent_set(e), 0);
        cr_assert_eq(conc_mevent_wait(e, 1), 0); /* the proxy is still usable */
        conc_mevent_free(e);

        /* Semaphore: no permit taken by the cut waiter */
        conc_msem_t *s, *s2;
        long v = -1;
        cr_assert_eq(conc_manager_semaphore(m, NULL, 0, &s), 0);
        cut_one(m, 1, s, by_scope);
        conc_msem_t *other;
        cr_assert_eq(conc_manager_bounded_semaphore(m, NULL, 1, &other), 0);
        conc_msem_free(other);
        cr_assert_eq(conc_msem_release(s, 1), 0);
        cr_assert_eq(conc_msem_value(s, &v), 0);
        cr_assert_eq(v, 1, "the permit went to the cut waiter");
        cr_assert_eq(conc_msem_acquire(s, true, 1), 0);
        conc_msem_free(s);
        (void)s2;

        /* Condition: the notification goes to the waiter still there */
        conc_mcond_t *c, *c2, *c3;
        cr_assert_eq(conc_manager_condition(m, "cut", &c), 0);
        cr_assert_eq(conc_manager_condition(m, "cut", &c2), 0);
        cr_assert_eq(conc_manager_condition(m, "cut", &c3), 0);
        atomic_int woken = 0;
        condarg_t keep = {m, c2, &woken, 1, 20};
        pthread_t th;
        pthread_create(&th, NULL, cond_waiter, &keep);
        tu_sleep(0.1);
        cut_one(m, 2, c, by_scope);
        /* the cut wait left the lock free (its connection closed) */
        cr_assert_eq(conc_mcond_acquire(c3, true, 5), 0);
        cr_assert_eq(conc_mcond_notify(c3, 1), 0);
        cr_assert_eq(conc_mcond_release(c3), 0);
        pthread_join(th, NULL);
        cr_assert_eq(keep.rc, 0, "the live waiter: %d", keep.rc);
        cr_assert_eq(atomic_load(&woken), 1);
        cr_assert_eq(conc_mcond_release(c), CONC_EPERM); /* not held after the cut */
        conc_mcond_free(c);
        conc_mcond_free(c2);
        conc_mcond_free(c3);

        /* Barrier: a cut waiter breaks it (threading: an exception in wait) */
        conc_mbarrier_t *b;
        bool broken = false;
        cr_assert_eq(conc_manager_barrier(m, NULL, 2, CONC_FOREVER, &b), 0);
        cut_one(m, 3, b, by_scope);
        cr_assert_eq(conc_mbarrier_broken(b, &broken), 0);
        cr_assert(broken);
        conc_mbarrier_free(b);
    }
    conc_manager_free(m);
}

/* a permit handed to a process that died waiting goes to the next */
static int child_sem_wait(const void *arg, size_t len)
{
    (void)arg, (void)len;
    conc_msem_acquire(g_sem, true, CONC_FOREVER);
    return 0;
}
CONC_REGISTER(child_sem_wait);

Test(manager_sync, dead_waiter_loses_no_permit)
{
    conc_manager_t *m = start();
    conc_msem_t *s;
    cr_assert_eq(conc_manager_semaphore(m, NULL, 0, &s), 0);
    g_sem = s;
    conc_process_t *p = mu_run(child_sem_wait, NULL, 0, CONC_FORK);
    tu_sleep(0.3);
    cr_assert_eq(conc_process_kill(p), 0);
    cr_assert_eq(conc_process_join(p, 10), 0);
    conc_process_free(p);
    cr_assert_eq(conc_msem_release(s, 1), 0);
    cr_assert_eq(conc_msem_acquire(s, true, 2), 0);
    conc_msem_free(s);
    conc_manager_free(m);
}

/* ----------------------------------------------------------------- Pool */

static int msq(const void *arg, size_t len, conc_pool_out_t *out)
{
    int x;
    if (len != sizeof x)
        return CONC_EINVAL;
    memcpy(&x, arg, sizeof x);
    if (x == 3) {
        conc_fail(CONC_ERANGE, "three is not allowed");
        return 0;
    }
    if (x < 0)
        tu_sleep(-x / 1000.0); /* -ms: slow */
    int y = x * x;
    return conc_pool_return(out, &y, sizeof y);
}
CONC_POOL_REGISTER(msq);

static int mpid(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len;
    int pid = getpid();
    return conc_pool_return(out, &pid, sizeof pid);
}
CONC_POOL_REGISTER(mpid);

static int not_registered(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len, (void)out;
    return 0;
}

Test(manager_sync, pool_apply_and_map)
{
    conc_manager_t *m = start();
    conc_mpool_t *p, *p2;
    cr_assert_eq(conc_manager_pool(m, "P", 2, &p), 0);
    int x = 7, y = 0;
    void *d;
    size_t n;
    cr_assert_eq(conc_mpool_apply(p, msq, &x, sizeof x, &d, &n), 0);
    cr_assert_eq(n, sizeof y);
    memcpy(&y, d, sizeof y);
    free(d);
    cr_assert_eq(y, 49);
    /* the task ran in a pool worker: neither here nor in the server */
    cr_assert_eq(conc_mpool_apply(p, mpid, NULL, 0, &d, &n), 0);
    int wpid;
    memcpy(&wpid, d, sizeof wpid);
    free(d);
    cr_assert_neq(wpid, getpid());
    cr_assert_neq(wpid, conc_manager_pid(m));
    /* a failing task: its code and message come back */
    x = 3;
    cr_assert_eq(conc_mpool_apply(p, msq, &x, sizeof x, &d, &n), CONC_EFAILED);
    int code = 0;
    const char *msg = NULL;
    cr_assert_eq(conc_mpool_exception(p, &code, &msg), 0);
    cr_assert_eq(code, CONC_ERANGE);
    cr_assert_str_eq(msg, "three is not allowed");
    /* map, in order, through a second proxy of the same pool */
    cr_assert_eq(conc_manager_pool(m, "P", 9, &p2), 0);
    int xs[20];
    for (int i = 0; i < 20; i++)
        xs[i] = i + 4;
    conc_mbytes_t *r;
    cr_assert_eq(conc_mpool_map(p2, msq, xs, sizeof(int), 20, 0, &r), 0);
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(r[i].len, sizeof(int));
        memcpy(&y, r[i].data, sizeof y);
        cr_assert_eq(y, xs[i] * xs[i]);
    }
    free(r);
    cr_assert_eq(conc_mpool_map(p2, msq, xs, sizeof(int), 0, 0, &r), 0); /* empty */
    free(r);
    xs[5] = 3; /* map raises the failure */
    cr_assert_eq(conc_mpool_map(p2, msq, xs, sizeof(int), 20, 3, &r), CONC_EFAILED);
    cr_assert_eq(conc_mpool_exception(p2, &code, NULL), 0);
    cr_assert_eq(code, CONC_ERANGE);
    /* variable-sized items */
    conc_buf_t bufs[2] = {{&x, sizeof x}, {"no", 2}};
    x = 2;
    int mrc = conc_mpool_map(p2, msq, bufs, 0, 2, 1, &r);
    cr_assert_eq(mrc, CONC_EFAILED, "map: %d", mrc); /* "no": EINVAL */
    cr_assert_eq(conc_mpool_exception(p2, &code, NULL), 0);
    cr_assert_eq(code, CONC_EINVAL);
    /* bad input */
    cr_assert_eq(conc_mpool_apply(p, not_registered, NULL, 0, &d, &n), CONC_EINVAL);
    cr_assert_eq(conc_mpool_apply(p, NULL, NULL, 0, &d, &n), CONC_EINVAL);
    cr_assert_eq(conc_mpool_map(p, msq, NULL, 4, 2, 0, &r), CONC_EINVAL);
    cr_assert_eq(conc_manager_pool(m, NULL, 5000, &p2), CONC_EINVAL);
    conc_mpool_t *q;
    cr_assert_eq(conc_manager_pool(m, NULL, 1, &q), 0);
    cr_assert_eq(conc_mpool_exception(q, &code, NULL), CONC_EINVAL); /* no failure yet */
    conc_mpool_free(q);
    conc_mpool_free(p2);
    conc_mpool_free(p);
    conc_manager_free(m);
}

typedef struct {
    conc_mpool_t *p;
    int rc;
} papply_t;

static void *slow_apply(void *arg)
{
    papply_t *a = arg;
    int x = -3000; /* 3 s */
    void *d = NULL;
    size_t n;
    a->rc = conc_mpool_apply(a->p, msq, &x, sizeof x, &d, &n);
    free(d);
    return NULL;
}

static void *slow_apply_scoped(void *arg)
{
    conc_timeout_begin(0.3);
    slow_apply(arg);
    conc_timeout_end();
    return NULL;
}

Test(manager_sync, pool_apply_cut_short)
{
    conc_manager_t *m = start();
    papply_t a = {NULL, 1};
    cr_assert_eq(conc_manager_pool(m, NULL, 3, &a.p), 0); /* the cut tasks hold two */
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, slow_apply, &a), 0);
    conc_sleep(0.3);
    double t0 = tu_now();
    cr_assert_eq(conc_green_kill(g, true, 10), 0);
    cr_assert_eq(a.rc, CONC_EKILLED);
    cr_assert_lt(tu_now() - t0, 1.0, "the kill waited for the task");
    conc_green_free(g);
    pthread_t th;
    t0 = tu_now();
    pthread_create(&th, NULL, slow_apply_scoped, &a);
    pthread_join(th, NULL);
    cr_assert_eq(a.rc, CONC_ETIMEDOUT);
    cr_assert_lt(tu_now() - t0, 0.3 + 1.0);
    /* the proxy still works; the cut tasks run on in two workers */
    int x = 5;
    void *d;
    size_t n;
    cr_assert_eq(conc_mpool_apply(a.p, msq, &x, sizeof x, &d, &n), 0);
    memcpy(&x, d, sizeof x);
    free(d);
    cr_assert_eq(x, 25);
    conc_mpool_free(a.p);
    conc_manager_free(m);
}

typedef struct {
    conc_masync_t *r;
    int rc;
} aget_t;

static void *async_getter(void *arg)
{
    aget_t *a = arg;
    void *d = NULL;
    size_t n;
    a->rc = conc_masync_get(a->r, CONC_FOREVER, &d, &n);
    free(d);
    return NULL;
}

Test(manager_sync, pool_async_results)
{
    conc_manager_t *m = start();
    conc_mpool_t *p;
    cr_assert_eq(conc_manager_pool(m, NULL, 2, &p), 0);
    /* apply_async: not ready, get times out, then the value (twice) */
    int x = -300, y;
    conc_masync_t *r;
    cr_assert_eq(conc_mpool_apply_async(p, msq, &x, sizeof x, &r), 0);
    bool ready = true;
    cr_assert_eq(conc_masync_ready(r, &ready), 0);
    cr_assert_not(ready);
    void *d;
    size_t n;
    double t0 = tu_now();
    cr_assert_eq(conc_masync_get(r, 0.05, &d, &n), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t0, 0.05);
    cr_assert_eq(conc_masync_get(r, 10, &d, &n), 0);
    memcpy(&y, d, sizeof y);
    free(d);
    cr_assert_eq(y, 90000);
    cr_assert_eq(conc_masync_get(r, 0, &d, &n), 0); /* get again */
    free(d);
    cr_assert_eq(conc_masync_ready(r, &ready), 0);
    cr_assert(ready);
    conc_mbytes_t *res;
    cr_assert_eq(conc_masync_get_map(r, 1, &res), CONC_EINVAL); /* an apply's handle */
    cr_assert_eq(conc_masync_free(r), 0);
    /* map_async */
    int xs[8];
    for (int i = 0; i < 8; i++)
        xs[i] = i + 10;
    cr_assert_eq(conc_mpool_map_async(p, msq, xs, sizeof(int), 8, 2, &r), 0);
    cr_assert_eq(conc_masync_get(r, 1, &d, &n), CONC_EINVAL); /* a map's handle */
    cr_assert_eq(conc_masync_get_map(r, 10, &res), 0);
    for (int i = 0; i < 8; i++) {
        memcpy(&y, res[i].data, sizeof y);
        cr_assert_eq(y, xs[i] * xs[i]);
    }
    free(res);
    conc_masync_free(r);
    /* a failure */
    x = 3;
    cr_assert_eq(conc_mpool_apply_async(p, msq, &x, sizeof x, &r), 0);
    cr_assert_eq(conc_masync_get(r, 10, &d, &n), CONC_EFAILED);
    int code = 0;
    cr_assert_eq(conc_mpool_exception(p, &code, NULL), 0);
    cr_assert_eq(code, CONC_ERANGE);
    conc_masync_free(r);
    /* a get cut short by a kill: the result stays, a later get has it */
    x = -400;
    cr_assert_eq(conc_mpool_apply_async(p, msq, &x, sizeof x, &r), 0);
    aget_t a = {r, 1};
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, async_getter, &a), 0);
    conc_sleep(0.1);
    cr_assert_eq(conc_green_kill(g, true, 10), 0);
    cr_assert_eq(a.rc, CONC_EKILLED);
    conc_green_free(g);
    cr_assert_eq(conc_masync_get(r, 10, &d, &n), 0);
    memcpy(&y, d, sizeof y);
    free(d);
    cr_assert_eq(y, 160000);
    conc_masync_free(r);
    cr_assert_eq(conc_mpool_apply_async(p, not_registered, NULL, 0, &r), CONC_EINVAL);
    cr_assert_eq(conc_masync_free(NULL), CONC_EINVAL);
    conc_mpool_free(p);
    conc_manager_free(m);
}

/* -------------------------------------------------- no polling server */

/* The voluntary context switches of every thread of process pid. */
static long ctx_switches(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    long total = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char sp[320], line[256];
        snprintf(sp, sizeof sp, "/proc/%d/task/%s/status", pid, de->d_name);
        FILE *f = fopen(sp, "r");
        while (f && fgets(line, sizeof line, f))
            if (strncmp(line, "voluntary_ctxt_switches:", 24) == 0)
                total += atol(line + 24);
        if (f)
            fclose(f);
    }
    if (d)
        closedir(d);
    return total;
}

typedef struct {
    void *proxy;
    int kind;
    int rc;
} idle_t;

static void *idle_waiter(void *p)
{
    idle_t *a = p;
    void *v = NULL;
    size_t n;
    if (a->kind == 0)
        a->rc = conc_mqueue_get(a->proxy, &v, &n, true, 1.0);
    else if (a->kind == 1)
        a->rc = conc_mlock_acquire(a->proxy, true, 1.0);
    else
        a->rc = conc_msem_acquire(a->proxy, true, 1.0);
    free(v);
    return NULL;
}

/* A request blocked on the server sleeps until something happens: it does
 * not wake up every 50 ms to look (the Queue and Lock waited in slices
 * before; a Semaphore never did). Measured as the server's voluntary
 * context switches in 0.5 s while three requests wait: slices of 50 ms
 * made 20 (two slicing waiters), plus TSan's under TSan. */
Test(manager_sync, server_waits_without_polling)
{
    conc_manager_t *m = start();
    int spid = conc_manager_pid(m);
    conc_mqueue_t *q;
    conc_mlock_t *l, *l2;
    conc_msem_t *s;
    cr_assert_eq(conc_manager_queue(m, NULL, 0, &q), 0);
    cr_assert_eq(conc_manager_lock(m, "idle", &l), 0);
    cr_assert_eq(conc_manager_lock(m, "idle", &l2), 0);
    cr_assert_eq(conc_manager_semaphore(m, NULL, 0, &s), 0);
    cr_assert_eq(conc_mlock_acquire(l, true, 1), 0);
    idle_t a[3] = {{q, 0, 1}, {l2, 1, 1}, {s, 2, 1}};
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, idle_waiter, &a[i]);
    tu_sleep(0.2);
    long before = ctx_switches(spid);
    tu_sleep(0.5);
    long during = ctx_switches(spid) - before;
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(a[0].rc, CONC_EEMPTY);
    cr_assert_eq(a[1].rc, CONC_ETIMEDOUT);
    cr_assert_eq(a[2].rc, CONC_ETIMEDOUT);
    /* (TSan's own background thread wakes the server process ~10 times) */
    cr_assert_lt(during, TU_TSAN ? 17 : 10, "the server woke %ld times in 0.5 s", during);
    conc_mlock_free(l);
    conc_mlock_free(l2);
    conc_msem_free(s);
    conc_mqueue_free(q);
    conc_manager_free(m);
}

/* --------------------------------------------------- hostile requests */

Test(manager_sync, dispatcher_refuses_malformed)
{
    conc__mgr_server_t *s;
    cr_assert_eq(conc__mgr_server_new(&s, "k", 1, true), 0);
    conc__mgr_conn_t *c = conc__mgr_conn_new(s, -1);
    const uint8_t *rep;
    size_t rlen;
    /* an op before any bind */
    uint8_t set = CONC__MOP_E_SET;
    cr_assert_eq(conc__mgr_dispatch(c, &set, 1, &rep, &rlen), CONC_EINVAL);
    /* bind a semaphore of value 1 */
    uint8_t bind[1 + 1 + 8 + 8 + 4] = {CONC__MOP_BIND_SYNC, CONC__MK_SEM, 1};
    cr_assert_eq(conc__mgr_dispatch(c, bind, sizeof bind, &rep, &rlen), 0);
    cr_assert_eq(rep[0], 0);
    /* an Event op on a semaphore */
    cr_assert_eq(conc__mgr_dispatch(c, &set, 1, &rep, &rlen), CONC_EINVAL);
    /* short acquire; bad blocking byte */
    uint8_t acq[10] = {CONC__MOP_S_ACQUIRE, 1};
    cr_assert_eq(conc__mgr_dispatch(c, acq, 5, &rep, &rlen), CONC_EINVAL);
    acq[1] = 7;
    cr_assert_eq(conc__mgr_dispatch(c, acq, 10, &rep, &rlen), CONC_EINVAL);
    acq[1] = 1; /* timeout 0.0: gets the one permit */
    cr_assert_eq(conc__mgr_dispatch(c, acq, 10, &rep, &rlen), 0);
    cr_assert_eq((int32_t)(rep[0] | rep[1] << 8 | rep[2] << 16 | (uint32_t)rep[3] << 24), 0);
    /* the next one times out at once (noblock server) */
    cr_assert_eq(conc__mgr_dispatch(c, acq, 10, &rep, &rlen), 0);
    cr_assert_eq((int32_t)(rep[0] | rep[1] << 8 | rep[2] << 16 | (uint32_t)rep[3] << 24), CONC_ETIMEDOUT);
    /* release of a huge or negative n */
    uint8_t rel[9] = {CONC__MOP_S_RELEASE, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
    cr_assert_eq(conc__mgr_dispatch(c, rel, 9, &rep, &rlen), 0);
    cr_assert_eq((int32_t)(rep[0] | rep[1] << 8 | rep[2] << 16 | (uint32_t)rep[3] << 24), CONC_ERANGE);
    memset(rel + 1, 0xff, 8);
    cr_assert_eq(conc__mgr_dispatch(c, rel, 9, &rep, &rlen), 0);
    cr_assert_eq((int32_t)(rep[0] | rep[1] << 8 | rep[2] << 16 | (uint32_t)rep[3] << 24), CONC_EINVAL);
    /* bind with bad parameters: unknown kind, negative value, barrier of 0, NaN */
    uint8_t b2[sizeof bind];
    memcpy(b2, bind, sizeof bind);
    b2[1] = 99;
    cr_assert_eq(conc__mgr_dispatch(c, b2, sizeof b2, &rep, &rlen), CONC_EINVAL);
    b2[1] = CONC__MK_SEM;
    memset(b2 + 2, 0xff, 8);
    cr_assert_eq(conc__mgr_dispatch(c, b2, sizeof b2, &rep, &rlen), 0);
    cr_assert_neq(rep[0], 0);
    b2[1] = CONC__MK_BARRIER;
    memset(b2 + 2, 0, 8);
    cr_assert_eq(conc__mgr_dispatch(c, b2, sizeof b2, &rep, &rlen), 0);
    cr_assert_neq(rep[0], 0);
    b2[2] = 2;
    memset(b2 + 10, 0xff, 8); /* NaN */
    cr_assert_eq(conc__mgr_dispatch(c, b2, sizeof b2, &rep, &rlen), 0);
    cr_assert_neq(rep[0], 0);
    /* a name longer than it says */
    b2[10] = 0, memset(b2 + 10, 0, 8);
    b2[18] = 200;
    cr_assert_eq(conc__mgr_dispatch(c, b2, sizeof b2, &rep, &rlen), CONC_EINVAL);
    /* a pool: submissions refused by this (process-less) server, unknown tokens */
    conc__mgr_conn_t *c2 = conc__mgr_conn_new(s, -1);
    uint8_t pb[sizeof bind] = {CONC__MOP_BIND_SYNC, CONC__MK_POOL, 2};
    cr_assert_eq(conc__mgr_dispatch(c2, pb, sizeof pb, &rep, &rlen), 0);
    cr_assert_eq(rep[0], 0);
    uint8_t get[17] = {CONC__MOP_P_GET, 5};
    cr_assert_eq(conc__mgr_dispatch(c2, get, sizeof get, &rep, &rlen), 0);
    cr_assert_eq((int32_t)(rep[0] | rep[1] << 8 | rep[2] << 16 | (uint32_t)rep[3] << 24), CONC_EINVAL);
    uint8_t ap[1 + 4 + 3 + 4] = {CONC__MOP_P_APPLY, 3, 0, 0, 0, 'm', 's', 'q'};
    cr_assert_eq(conc__mgr_dispatch(c2, ap, sizeof ap, &rep, &rlen), 0);
    cr_assert_eq((int32_t)(rep[0] | rep[1] << 8 | rep[2] << 16 | (uint32_t)rep[3] << 24), CONC_ENOTSUP);
    ap[5] = 'x'; /* no such task function */
    cr_assert_eq(conc__mgr_dispatch(c2, ap, sizeof ap, &rep, &rlen), 0);
    cr_assert_eq((int32_t)(rep[0] | rep[1] << 8 | rep[2] << 16 | (uint32_t)rep[3] << 24), CONC_EINVAL);
    cr_assert_eq(conc__mgr_dispatch(c2, ap, sizeof ap - 1, &rep, &rlen), CONC_EINVAL); /* short */
    conc__mgr_conn_free(c2);
    conc__mgr_conn_free(c);
    conc__mgr_server_free(s);
}

TU_MAIN_WITH_PROCESS_GUARD()
