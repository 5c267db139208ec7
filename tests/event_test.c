/* conc_event_t: CPython's lock_tests.EventTests, and the set/clear race. */
#include "test_util.h"

Test(event, null_and_bad_timeouts, .timeout = TU_TIMEOUT)
{
    cr_assert_eq(conc_event_init(NULL), CONC_EINVAL);
    cr_assert_eq(conc_event_set(NULL), CONC_EINVAL);
    cr_assert_eq(conc_event_clear(NULL), CONC_EINVAL);
    cr_assert_eq(conc_event_wait(NULL, 0), CONC_EINVAL);
    cr_assert_not(conc_event_is_set(NULL));
    conc_event_t e = CONC_EVENT_INIT;
    /* a negative timeout is already up (Python's Event.wait(-1) is False) */
    cr_assert_eq(conc_event_wait(&e, -0.5), CONC_ETIMEDOUT);
    cr_assert_eq(conc_event_wait(&e, -1.0), CONC_ETIMEDOUT);
    cr_assert_eq(conc_event_wait(&e, -2), CONC_ETIMEDOUT);
    cr_assert_eq(conc_event_wait(&e, NAN), CONC_EINVAL);
    cr_assert_eq(conc_event_wait(&e, -INFINITY), CONC_ETIMEDOUT);
    cr_assert_eq(conc_event_set(&e), 0);
    cr_assert_eq(conc_event_wait(&e, -0.5), 0, "a set event is a set event");
    cr_assert_eq(conc_event_wait(&e, NAN), CONC_EINVAL, "NaN accepted when set");
    cr_assert_eq(conc_event_wait(&e, 1e300), 0);
    cr_assert_eq(conc_event_wait(&e, INFINITY), 0);
}

Test(event, is_set, .timeout = TU_TIMEOUT)
{
    conc_event_t e = CONC_EVENT_INIT;
    cr_assert_not(conc_event_is_set(&e));
    cr_assert_eq(conc_event_set(&e), 0);
    cr_assert(conc_event_is_set(&e));
    cr_assert_eq(conc_event_set(&e), 0);
    cr_assert(conc_event_is_set(&e));
    cr_assert_eq(conc_event_clear(&e), 0);
    cr_assert_not(conc_event_is_set(&e));
    cr_assert_eq(conc_event_clear(&e), 0);
    cr_assert_not(conc_event_is_set(&e));

    conc_event_t g;
    memset(&g, 0x77, sizeof g);
    cr_assert_eq(conc_event_init(&g), 0);
    cr_assert_not(conc_event_is_set(&g));
    conc_event_t z;
    memset(&z, 0, sizeof z);
    cr_assert_not(conc_event_is_set(&z));
    cr_assert_eq(conc_event_wait(&z, 0), CONC_ETIMEDOUT);
}

typedef struct {
    conc_event_t e;
    atomic_int r1[TU_MAX_BUNCH], r2[TU_MAX_BUNCH];
    double times[TU_MAX_BUNCH];
    atomic_int count;
    atomic_int stop;
    long rounds;
    double timeout;
} ctx_t;

static void wait_twice_fn(void *p, int i)
{
    ctx_t *x = p;
    atomic_store(&x->r1[i], conc_event_wait(&x->e, CONC_FOREVER));
    atomic_fetch_add(&x->count, 1);
    atomic_store(&x->r2[i], conc_event_wait(&x->e, CONC_FOREVER));
}

static void check_notify(ctx_t *x)
{
    static tu_bunch_t b;
    const int N = 5;
    atomic_store(&x->count, 0);
    for (int i = 0; i < N; i++)
        x->r1[i] = x->r2[i] = 99;
    tu_bunch_start(&b, N, wait_twice_fn, x);
    cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10));
    cr_assert_eq(atomic_load(&x->count), 0, "wait returned on a clear event");
    cr_assert_eq(conc_event_set(&x->e), 0);
    tu_bunch_join(&b);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(atomic_load(&x->r1[i]), 0);
        cr_assert_eq(atomic_load(&x->r2[i]), 0);
    }
}

Test(event, notify_all_waiters, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    cr_assert_eq(conc_event_init(&x.e), 0);
    check_notify(&x);
    /* again, after an explicit clear */
    cr_assert_eq(conc_event_set(&x.e), 0);
    cr_assert_eq(conc_event_clear(&x.e), 0);
    check_notify(&x);
}

static void timeout_fn(void *p, int i)
{
    ctx_t *x = p;
    atomic_store(&x->r1[i], conc_event_wait(&x->e, 0.0));
    double t = tu_now();
    atomic_store(&x->r2[i], conc_event_wait(&x->e, x->timeout));
    x->times[i] = tu_now() - t;
}

Test(event, timeout, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    const int N = 5;
    cr_assert_eq(conc_event_init(&x.e), 0);
    x.timeout = 0.2;
    tu_bunch_start(&b, N, timeout_fn, &x);
    tu_bunch_join(&b);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(atomic_load(&x.r1[i]), CONC_ETIMEDOUT);
        cr_assert_eq(atomic_load(&x.r2[i]), CONC_ETIMEDOUT);
        tu_assert_timeout(x.times[i], 0.2);
    }
    cr_assert_eq(conc_event_set(&x.e), 0);
    x.timeout = 5.0;
    tu_bunch_start(&b, N, timeout_fn, &x);
    tu_bunch_join(&b);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(atomic_load(&x.r1[i]), 0);
        cr_assert_eq(atomic_load(&x.r2[i]), 0);
        cr_assert_lt(x.times[i], 2.5, "wait on a set event blocked");
    }
}

static void set_later_fn(void *p, int i)
{
    (void)i;
    ctx_t *x = p;
    tu_sleep(0.1);
    atomic_store(&x->count, 1);
    conc_event_set(&x->e);
}

Test(event, timed_wait_returns_when_set, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    double timeouts[] = {10.0, 1e300, INFINITY};
    for (size_t k = 0; k < 3; k++) {
        cr_assert_eq(conc_event_init(&x.e), 0);
        atomic_store(&x.count, 0);
        tu_bunch_start(&b, 1, set_later_fn, &x);
        double t = tu_now();
        cr_assert_eq(conc_event_wait(&x.e, timeouts[k]), 0, "timeout %g", timeouts[k]);
        cr_assert_eq(atomic_load(&x.count), 1, "timeout %g: returned before set", timeouts[k]);
        cr_assert_lt(tu_now() - t, 5.0);
        tu_bunch_join(&b);
    }
}

/* Issue #13502: wait() returns true even when the event is cleared right
 * after set, before the waiter wakes. Many waiters, many rounds; each round
 * they are all parked in the kernel when set() happens. */
static void race_waiter_fn(void *p, int i)
{
    ctx_t *x = p;
    atomic_store(&x->r1[i], conc_event_wait(&x->e, x->rounds > 0 ? 30.0 : CONC_FOREVER));
    atomic_fetch_add(&x->count, 1);
}

Test(event, set_and_clear_race, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    const int N = 8;
    long rounds = tu_iters(500);
    cr_assert_eq(conc_event_init(&x.e), 0);
    for (long r = 0; r < rounds; r++) {
        x.rounds = r & 1; /* alternate forever / timed waits */
        atomic_store(&x.count, 0);
        for (int i = 0; i < N; i++)
            x.r1[i] = 99;
        tu_bunch_start(&b, N, race_waiter_fn, &x);
        cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10));
        cr_assert_eq(atomic_load(&x.count), 0);
        cr_assert_eq(conc_event_set(&x.e), 0);
        cr_assert_eq(conc_event_clear(&x.e), 0);
        /* Every waiter must come back with 0 on its own: no rescue set(). */
        bool all = TU_WAIT_UNTIL(atomic_load(&x.count) == N, 10);
        if (!all)
            conc_event_set(&x.e); /* let the stuck ones go, then fail */
        tu_bunch_join(&b);
        cr_assert(all, "round %ld: %d of %d waiters missed a set() followed by clear()", r,
                  N - atomic_load(&x.count), N);
        for (int i = 0; i < N; i++)
            cr_assert_eq(atomic_load(&x.r1[i]), 0, "round %ld waiter %d got %d", r, i,
                         atomic_load(&x.r1[i]));
        cr_assert_not(conc_event_is_set(&x.e));
    }
}

/* The same race without waiting for the waiters to park: some are spinning,
 * some parked, some just arriving. Waiters that arrive after the clear() may
 * block, so the test sets the event again afterwards; what it checks is
 * that every wait that returns gives 0 (never a timeout, never an error) and
 * that the set/clear storm leaves no waiter behind. */
static void storm_waiter_fn(void *p, int i)
{
    ctx_t *x = p;
    while (!atomic_load(&x->stop)) {
        int rc = conc_event_wait(&x->e, CONC_FOREVER);
        if (rc != 0)
            atomic_store(&x->r1[i], rc);
        atomic_fetch_add(&x->count, 1);
    }
}

Test(event, set_clear_storm, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    const int N = 6;
    memset(&x, 0, sizeof x);
    cr_assert_eq(conc_event_init(&x.e), 0);
    tu_bunch_start(&b, N, storm_waiter_fn, &x);
    cr_assert(tu_bunch_wait_started(&b, 10));
    long rounds = tu_iters(20000);
    for (long r = 0; r < rounds; r++) {
        conc_event_set(&x.e);
        conc_event_clear(&x.e);
    }
    atomic_store(&x.stop, 1);
    conc_event_set(&x.e);
    tu_bunch_join(&b);
    /* (a hang in join would mean a waiter missed the final set) */
    for (int i = 0; i < N; i++)
        cr_assert_eq(atomic_load(&x.r1[i]), 0);
}

Test(event, wait_zero_does_not_block, .timeout = TU_TIMEOUT)
{
    conc_event_t e = CONC_EVENT_INIT;
    double t = tu_now();
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(conc_event_wait(&e, 0), CONC_ETIMEDOUT);
    cr_assert_lt(tu_now() - t, 1.0);
}

/* ------------------------------------------- the OS-thread waiting policy
 * (src/core/park.c): a pair of threads handing events back and forth
 * must complete whether they share one CPU (yield hand-offs, and now and
 * then a sleep so the scheduler can spread them), sit on two (spinning,
 * budgets restored by quick answered yields), or fall asleep (a futex wake
 * boosts the waker's next spin); and every timed wait still times out. */
#include <sched.h>

#include "core/park.h"

typedef struct {
    conc_event_t e1, e2;
    long rounds;
    int cpu_b; /* -1: anywhere */
    atomic_int bad;
} pp_t;

/* The n-th CPU this process may run on (-1: none). */
static int allowed_cpu(int n)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return -1;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set) && n-- == 0)
            return c;
    return -1;
}

static bool pin_self(int cpu)
{
    if (cpu < 0)
        return true;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
}

static void *pp_b(void *arg)
{
    pp_t *p = arg;
    if (!pin_self(p->cpu_b))
        atomic_store(&p->bad, -1);
    for (long i = 0; i < p->rounds; i++) {
        if (conc_event_wait(&p->e1, 5.0) != 0 || conc_event_clear(&p->e1) != 0 || conc_event_set(&p->e2) != 0) {
            atomic_store(&p->bad, 1);
            break;
        }
    }
    return NULL;
}

/* Ping-pong with A pinned to the cpu_a-th allowed CPU and B to the
 * cpu_b-th (-1: unpinned); every wait has a timeout, so a lost wake-up
 * fails instead of hanging. */
static void pingpong(int cpu_a, int cpu_b, long rounds)
{
    static pp_t p;
    if (cpu_a >= 0)
        cpu_a = allowed_cpu(cpu_a);
    if (cpu_b >= 0)
        cpu_b = allowed_cpu(cpu_b);
    memset(&p, 0, sizeof p);
    p.rounds = rounds;
    p.cpu_b = cpu_b;
    cpu_set_t old;
    cr_assert_eq(pthread_getaffinity_np(pthread_self(), sizeof old, &old), 0);
    cr_assert(pin_self(cpu_a));
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, pp_b, &p), 0);
    long i = 0;
    for (; i < rounds && !atomic_load(&p.bad); i++) {
        cr_assert_eq(conc_event_set(&p.e1), 0);
        int rc = conc_event_wait(&p.e2, 5.0);
        cr_assert_eq(rc, 0, "round %ld: wait returned %d", i, rc);
        cr_assert_eq(conc_event_clear(&p.e2), 0);
    }
    pthread_join(t, NULL);
    pthread_setaffinity_np(pthread_self(), sizeof old, &old);
    cr_assert_eq(atomic_load(&p.bad), 0);
    cr_assert_eq(i, rounds);
}

Test(event, pingpong_on_one_cpu, .timeout = TU_TIMEOUT)
{
    /* Both on one CPU: the answers come in yields that ran the partner,
     * so every 256th such wait sleeps in the kernel instead. */
    pingpong(0, 0, tu_iters(3000));
    conc__ctx_t *c = conc__ctx();
    /* A timed wait after it (the shared-CPU sleep path may be next). */
    conc_event_t e = CONC_EVENT_INIT;
    c->spin_shared = 1;
    double t = tu_now();
    cr_assert_eq(conc_event_wait(&e, 0.02), CONC_ETIMEDOUT);
    double dt = tu_now() - t;
    cr_assert(dt >= 0.02 - TU_EPS && dt < 0.02 + TU_SLACK, "%.3f s", dt);
    cr_assert_eq(c->spin_shared, 0, "a sleep clears the sleep-instead-of-yield flag");
}

Test(event, pingpong_on_two_cpus, .timeout = TU_TIMEOUT)
{
    if (allowed_cpu(1) < 0)
        cr_skip_test("one CPU");
    pingpong(0, 1, tu_iters(20000));
    pingpong(-1, -1, tu_iters(20000));
}

/* Sets the spinner's adaptive state: no budget, no skipped spins, a futex
 * wake just issued, and whether the CPU looked the thread's own. */
static void spin_state_woke(conc__ctx_t *c, bool alone)
{
    c->spin_ns = 0;
    c->spin_skips = 0;
    c->spin_woke = 1;
    c->spin_alone = alone;
}

Test(event, spin_boost_after_waking_a_sleeper, .timeout = TU_TIMEOUT)
{
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
        cr_skip_test("one CPU: nothing spins");
    conc__ctx_t *c = conc__ctx();
    conc__spinner_t sp;
    /* no budget, woke a sleeper, CPU to itself: one long spin */
    spin_state_woke(c, true);
    conc__spin_begin(&sp, CONC__NO_DEADLINE);
    cr_assert(sp.boosted);
    cr_assert_eq(sp.end - sp.start, 50000);
    cr_assert_eq(c->spin_woke, 0, "one boost per wake");
    conc__spin_end(&sp, true);
    cr_assert_geq(c->spin_ns, 10000, "a won boost restores the budget");
    /* failing it shrinks from the budget the thread had, not the boost */
    c->spin_ns = 0;
    c->spin_woke = 1;
    conc__spin_begin(&sp, CONC__NO_DEADLINE);
    conc__spin_end(&sp, false);
    cr_assert_eq(c->spin_ns, 0);
    /* the deadline caps it */
    c->spin_woke = 1;
    int64_t dl = conc__now_ns() + 1000;
    conc__spin_begin(&sp, dl);
    cr_assert(sp.boosted);
    cr_assert_leq(sp.end, dl);
    conc__spin_end(&sp, false);
    /* its CPU looked shared: no boost (and no spin with no budget) */
    spin_state_woke(c, false);
    conc__spin_begin(&sp, CONC__NO_DEADLINE);
    cr_assert_not(sp.boosted);
    cr_assert_eq(sp.end, 0);
    conc__spin_end(&sp, false);
    c->spin_ns = 10000;
}

static void *sleep_then_wait(void *arg)
{
    return (void *)(intptr_t)conc_event_wait(arg, 30.0);
}

/* The state of the one waiter queued on e (-1: none yet). Read under the
 * list's guard: a queued waiter cannot leave (it takes the guard to). */
static int queued_state(conc_event_t *e)
{
    conc__waitq_lock(&e->q);
    conc__waiter_t *w = e->q.head;
    int st = w ? (int)conc__load(&w->state, ACQ) : -1;
    conc__waitq_unlock(&e->q);
    return st;
}

Test(event, futex_wake_marks_the_waker, .timeout = TU_TIMEOUT)
{
    /* Only a wake of a waiter that reached its futex sleep marks the
     * waker (one still spinning or yielding needs no syscall): wake it
     * once its state word says SLEEPING, however long that takes under
     * load, instead of guessing a nap. */
    conc__ctx_t *c = conc__ctx();
    conc_event_t e = CONC_EVENT_INIT;
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, sleep_then_wait, &e), 0);
    double t0 = tu_now();
    while (queued_state(&e) != CONC__W_SLEEPING) {
        cr_assert_lt(tu_now() - t0, 20.0, "the waiter never went to sleep");
        tu_sleep(0.001);
    }
    c->spin_woke = 0;
    cr_assert_eq(conc_event_set(&e), 0);
    cr_assert_eq(c->spin_woke, 1, "a futex wake marks the waker for a boosted spin");
    void *r;
    pthread_join(t, &r);
    cr_assert_eq((int)(intptr_t)r, 0);
}

Test(event, spin_stops_at_an_open_scope, .timeout = TU_TIMEOUT)
{
    /* Spins are given the wait's own deadline (conc_event_wait, Lock,
     * Semaphore, futures, queues): an open Timeout scope that ends first
     * must end the spin too, boosted or not, so the park that follows
     * delivers the scope on time instead of after a 50 us spin. */
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
        cr_skip_test("one CPU: nothing spins");
    conc__ctx_t *c = conc__ctx();
    conc__spinner_t sp;
    cr_assert_eq(conc_timeout_begin(0), 0); /* its time is already up */
    int64_t scope = c->scope_dl;
    cr_assert_neq(scope, 0);
    spin_state_woke(c, true);
    conc__spin_begin(&sp, CONC__NO_DEADLINE);
    cr_assert(sp.boosted);
    cr_assert_leq(sp.end, scope, "a boosted spin runs past the scope by %lld ns", (long long)(sp.end - scope));
    conc__spin_end(&sp, false);
    c->spin_ns = 50000;
    conc__spin_begin(&sp, conc__now_ns() + 1000000000);
    cr_assert_leq(sp.end, scope, "a spin runs past the scope by %lld ns", (long long)(sp.end - scope));
    conc__spin_end(&sp, false);
    /* the wait itself: cut by the scope, which is marked fired */
    conc_event_t e = CONC_EVENT_INIT;
    cr_assert_eq(conc_event_wait(&e, 5.0), CONC_ETIMEDOUT);
    cr_assert_eq(conc_timeout_end(), 1);
    /* conc's own uninterruptible holds (nointr) are not cut: nor their spin */
    cr_assert_eq(conc_timeout_begin(0), 0);
    c->nointr++;
    c->spin_ns = 50000;
    conc__spin_begin(&sp, CONC__NO_DEADLINE);
    cr_assert_eq(sp.end - sp.start, 50000);
    conc__spin_end(&sp, false);
    c->nointr--;
    conc_timeout_end();
    c->spin_ns = 10000;
}

static void *scope_wait(void *arg)
{
    /* A boosted spin and the sleep-instead-of-yield path, cut by a
     * Timeout scope shorter than the wait's own timeout. */
    conc__ctx_t *c = conc__ctx();
    c->spin_woke = 1;
    c->spin_alone = 1;
    c->spin_shared = 1;
    if (conc_timeout_begin(0.03) != 0)
        return (void *)(intptr_t)-100;
    double t = tu_now();
    int rc = conc_event_wait(arg, 5.0);
    double dt = tu_now() - t;
    int fired = conc_timeout_end();
    if (rc != CONC_ETIMEDOUT || fired != 1 || dt < 0.03 - TU_EPS || dt > 0.03 + TU_SLACK)
        return (void *)(intptr_t)(rc ? rc : -101);
    return NULL;
}

Test(event, scope_cuts_a_boosted_wait, .timeout = TU_TIMEOUT)
{
    conc_event_t e = CONC_EVENT_INIT;
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, scope_wait, &e), 0);
    void *r;
    pthread_join(t, &r);
    cr_assert_null(r, "rc %d", (int)(intptr_t)r);
}
