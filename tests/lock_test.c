/* conc_lock_t: the behaviours of CPython's lock_tests.BaseLockTests/LockTests. */
#include "test_util.h"

Test(lock, static_and_init, .timeout = TU_TIMEOUT)
{
    conc_lock_t a = CONC_LOCK_INIT;
    cr_assert_not(conc_lock_locked(&a));
    cr_assert_eq(conc_lock_acquire(&a, true, CONC_FOREVER), 0);
    cr_assert(conc_lock_locked(&a));
    cr_assert_eq(conc_lock_release(&a), 0);
    cr_assert_not(conc_lock_locked(&a));

    conc_lock_t b;
    memset(&b, 0xa5, sizeof b);
    cr_assert_eq(conc_lock_init(&b), 0);
    cr_assert_not(conc_lock_locked(&b));
    cr_assert_eq(conc_lock_acquire(&b, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_lock_release(&b), 0);

    conc_lock_t z;
    memset(&z, 0, sizeof z); /* zero-initialised works too */
    cr_assert_eq(conc_lock_acquire(&z, true, 1.0), 0);
    cr_assert_eq(conc_lock_release(&z), 0);
}

Test(lock, null_pointers, .timeout = TU_TIMEOUT)
{
    cr_assert_eq(conc_lock_init(NULL), CONC_EINVAL);
    cr_assert_eq(conc_lock_acquire(NULL, true, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc_lock_acquire(NULL, false, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc_lock_release(NULL), CONC_EINVAL);
    cr_assert_not(conc_lock_locked(NULL));
}

Test(lock, acquire_release_try, .timeout = TU_TIMEOUT)
{
    conc_lock_t l = CONC_LOCK_INIT;
    cr_assert_eq(conc_lock_acquire(&l, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_lock_acquire(&l, false, CONC_FOREVER), CONC_ETIMEDOUT);
    cr_assert_eq(conc_lock_acquire(&l, true, 0), CONC_ETIMEDOUT); /* 0: do not block */
    cr_assert(conc_lock_locked(&l));
    cr_assert_eq(conc_lock_release(&l), 0);
    cr_assert_eq(conc_lock_release(&l), CONC_EPERM); /* RuntimeError */
    cr_assert_not(conc_lock_locked(&l));
    cr_assert_eq(conc_lock_acquire(&l, true, 0), 0);
    cr_assert_eq(conc_lock_release(&l), 0);
}

Test(lock, release_unlocked_is_eperm, .timeout = TU_TIMEOUT)
{
    conc_lock_t l = CONC_LOCK_INIT;
    cr_assert_eq(conc_lock_release(&l), CONC_EPERM);
    cr_assert_not(conc_lock_locked(&l));
    cr_assert_eq(conc_lock_acquire(&l, false, CONC_FOREVER), 0, "EPERM release corrupted the lock");
    cr_assert_eq(conc_lock_release(&l), 0);
}

Test(lock, bad_timeouts, .timeout = TU_TIMEOUT)
{
    conc_lock_t l = CONC_LOCK_INIT;
    /* can't specify a timeout for a non-blocking call */
    cr_assert_eq(conc_lock_acquire(&l, false, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_lock_acquire(&l, false, 0.0), CONC_EINVAL);
    cr_assert_eq(conc_lock_acquire(&l, false, 1e100), CONC_EINVAL);
    /* every negative (Python's ValueError; -1.0 is not "forever"), NaN */
    cr_assert_eq(conc_lock_acquire(&l, true, -100), CONC_EINVAL);
    cr_assert_eq(conc_lock_acquire(&l, true, -1.0), CONC_EINVAL);
    cr_assert_eq(conc_lock_acquire(&l, true, -0.5), CONC_EINVAL);
    cr_assert_eq(conc_lock_acquire(&l, true, -1.5), CONC_EINVAL);
    cr_assert_eq(conc_lock_acquire(&l, true, -INFINITY), CONC_EINVAL);
    cr_assert_eq(conc_lock_acquire(&l, true, NAN), CONC_EINVAL);
    cr_assert_not(conc_lock_locked(&l), "an invalid call acquired the lock");
    /* huge values clamp (behave as forever) */
    cr_assert_eq(conc_lock_acquire(&l, true, 1e100), 0);
    cr_assert_eq(conc_lock_release(&l), 0);
    cr_assert_eq(conc_lock_acquire(&l, true, INFINITY), 0);
    cr_assert_eq(conc_lock_release(&l), 0);
    cr_assert_eq(conc_lock_acquire(&l, true, 1e18), 0);
    cr_assert_eq(conc_lock_release(&l), 0);
    cr_assert_eq(conc_lock_acquire(&l, true, 9.3e9), 0);
    cr_assert_eq(conc_lock_release(&l), 0);
}

/* ---- helpers with a shared context */
typedef struct {
    conc_lock_t l;
    atomic_int results[TU_MAX_BUNCH];
    double times[TU_MAX_BUNCH];
    double timeout;
    atomic_int phase;
} ctx_t;

static void try_acquire_fn(void *p, int i)
{
    ctx_t *c = p;
    atomic_store(&c->results[i], conc_lock_acquire(&c->l, false, CONC_FOREVER));
}

Test(lock, try_acquire_contended, .timeout = TU_TIMEOUT)
{
    static ctx_t c = {.l = CONC_LOCK_INIT};
    static tu_bunch_t b;
    cr_assert_eq(conc_lock_acquire(&c.l, true, CONC_FOREVER), 0);
    tu_bunch_start(&b, 1, try_acquire_fn, &c);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&c.results[0]), CONC_ETIMEDOUT);
    cr_assert_eq(conc_lock_release(&c.l), 0);
}

static void acquire_release_fn(void *p, int i)
{
    ctx_t *c = p;
    atomic_store(&c->results[i], conc_lock_acquire(&c->l, true, CONC_FOREVER));
    conc_lock_release(&c->l);
}

Test(lock, acquire_contended, .timeout = TU_TIMEOUT)
{
    static ctx_t c = {.l = CONC_LOCK_INIT};
    static tu_bunch_t b;
    cr_assert_eq(conc_lock_acquire(&c.l, true, CONC_FOREVER), 0);
    tu_bunch_start(&b, 5, acquire_release_fn, &c);
    cr_assert(tu_bunch_wait_started(&b, 10));
    /* Everyone must block: wait until all are asleep in the kernel. */
    cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10), "waiters did not park");
    tu_sleep(0.01);
    cr_assert_eq(atomic_load(&b.finished), 0, "a thread got a held lock");
    cr_assert_eq(conc_lock_release(&c.l), 0);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&b.finished), 5);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(atomic_load(&c.results[i]), 0);
    cr_assert_not(conc_lock_locked(&c.l));
}

static void timed_acquire_fn(void *p, int i)
{
    ctx_t *c = p;
    double t = tu_now();
    atomic_store(&c->results[i], conc_lock_acquire(&c->l, true, c->timeout));
    c->times[i] = tu_now() - t;
}

Test(lock, timeout, .timeout = TU_TIMEOUT)
{
    static ctx_t c = {.l = CONC_LOCK_INIT};
    static tu_bunch_t b;
    double t = tu_now();
    cr_assert_eq(conc_lock_acquire(&c.l, true, 5), 0);
    cr_assert_lt(tu_now() - t, 5, "a free lock waited for its timeout");
    c.timeout = 0.2;
    tu_bunch_start(&b, 3, timed_acquire_fn, &c);
    tu_bunch_join(&b);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(atomic_load(&c.results[i]), CONC_ETIMEDOUT);
        tu_assert_timeout(c.times[i], 0.2);
    }
    cr_assert(conc_lock_locked(&c.l));
    cr_assert_eq(conc_lock_release(&c.l), 0);
    cr_assert_not(conc_lock_locked(&c.l), "timed-out waiters left the lock locked");
}

static void release_later_fn(void *p, int i)
{
    (void)i;
    ctx_t *c = p;
    tu_sleep(0.1);
    atomic_store(&c->phase, 1);
    conc_lock_release(&c->l);
}

Test(lock, timed_acquire_succeeds_when_released, .timeout = TU_TIMEOUT)
{
    static ctx_t c = {.l = CONC_LOCK_INIT};
    static tu_bunch_t b;
    cr_assert_eq(conc_lock_acquire(&c.l, true, CONC_FOREVER), 0);
    tu_bunch_start(&b, 1, release_later_fn, &c);
    double t = tu_now();
    cr_assert_eq(conc_lock_acquire(&c.l, true, 10.0), 0);
    double dt = tu_now() - t;
    cr_assert_eq(atomic_load(&c.phase), 1);
    cr_assert_lt(dt, 5.0);
    tu_bunch_join(&b);
    cr_assert_eq(conc_lock_release(&c.l), 0);
}

Test(lock, huge_timeout_still_waits, .timeout = TU_TIMEOUT)
{
    /* A clamped huge timeout must not overflow into "already expired". */
    static ctx_t c = {.l = CONC_LOCK_INIT};
    static tu_bunch_t b;
    double huge[] = {1e100, INFINITY, 1e18, 4e9, 9.3e9};
    for (size_t k = 0; k < sizeof huge / sizeof huge[0]; k++) {
        atomic_store(&c.phase, 0);
        cr_assert_eq(conc_lock_acquire(&c.l, true, CONC_FOREVER), 0);
        tu_bunch_start(&b, 1, release_later_fn, &c);
        cr_assert_eq(conc_lock_acquire(&c.l, true, huge[k]), 0, "timeout %g", huge[k]);
        cr_assert_eq(atomic_load(&c.phase), 1, "timeout %g did not wait", huge[k]);
        tu_bunch_join(&b);
        cr_assert_eq(conc_lock_release(&c.l), 0);
    }
}

static void reacquire_fn(void *p, int i)
{
    (void)i;
    ctx_t *c = p;
    conc_lock_acquire(&c->l, true, CONC_FOREVER);
    atomic_store(&c->phase, 1);
    conc_lock_acquire(&c->l, true, CONC_FOREVER); /* blocks: not recursive */
    atomic_store(&c->phase, 2);
}

Test(lock, reacquire_blocks_until_released, .timeout = TU_TIMEOUT)
{
    static ctx_t c = {.l = CONC_LOCK_INIT};
    static tu_bunch_t b;
    tu_bunch_start(&b, 1, reacquire_fn, &c);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&c.phase) >= 1, 10));
    cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10));
    tu_sleep(0.01);
    cr_assert_eq(atomic_load(&c.phase), 1, "Lock was re-entrant");
    cr_assert_eq(conc_lock_release(&c.l), 0);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&c.phase), 2);
    cr_assert(conc_lock_locked(&c.l));
    cr_assert_eq(conc_lock_release(&c.l), 0);
}

static void release_fn(void *p, int i)
{
    ctx_t *c = p;
    atomic_store(&c->results[i], conc_lock_release(&c->l));
}

Test(lock, release_from_different_thread, .timeout = TU_TIMEOUT)
{
    static ctx_t c = {.l = CONC_LOCK_INIT};
    static tu_bunch_t b;
    cr_assert_eq(conc_lock_acquire(&c.l, true, CONC_FOREVER), 0);
    tu_bunch_start(&b, 1, release_fn, &c);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&c.results[0]), 0);
    cr_assert_not(conc_lock_locked(&c.l));
    cr_assert_eq(conc_lock_acquire(&c.l, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_lock_release(&c.l), 0);
}

Test(lock, state_after_timeout, .timeout = TU_TIMEOUT)
{
    conc_lock_t l = CONC_LOCK_INIT;
    cr_assert_eq(conc_lock_acquire(&l, true, CONC_FOREVER), 0);
    cr_assert_eq(conc_lock_acquire(&l, true, 0.01), CONC_ETIMEDOUT);
    cr_assert_eq(conc_lock_release(&l), 0);
    cr_assert_not(conc_lock_locked(&l));
    cr_assert_eq(conc_lock_acquire(&l, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_lock_release(&l), 0);
}

/* A waiter parked in the kernel is woken by a release from a third thread,
 * and the handoff goes on through a chain of waiters. */
static void chain_fn(void *p, int i)
{
    ctx_t *c = p;
    atomic_store(&c->results[i], conc_lock_acquire(&c->l, true, 30));
    atomic_fetch_add(&c->phase, 1);
    tu_sleep(0.002);
    conc_lock_release(&c->l);
}

Test(lock, handoff_chain, .timeout = TU_TIMEOUT)
{
    static ctx_t c = {.l = CONC_LOCK_INIT};
    static tu_bunch_t b;
    for (int round = 0; round < 5; round++) {
        atomic_store(&c.phase, 0);
        cr_assert_eq(conc_lock_acquire(&c.l, true, CONC_FOREVER), 0);
        tu_bunch_start(&b, 8, chain_fn, &c);
        cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10));
        cr_assert_eq(atomic_load(&c.phase), 0);
        cr_assert_eq(conc_lock_release(&c.l), 0);
        tu_bunch_join(&b);
        cr_assert_eq(atomic_load(&c.phase), 8);
        for (int i = 0; i < 8; i++)
            cr_assert_eq(atomic_load(&c.results[i]), 0);
        cr_assert_not(conc_lock_locked(&c.l));
    }
}

/* Mutual exclusion, with blocking, try and timed acquires mixed. */
typedef struct {
    conc_lock_t l;
    long counter;
    long iters;
    atomic_long errors;
} mx_t;

static void mutex_fn(void *p, int i)
{
    mx_t *m = p;
    for (long k = 0; k < m->iters; k++) {
        int rc;
        switch ((i + k) % 3) {
        case 0:
            rc = conc_lock_acquire(&m->l, true, CONC_FOREVER);
            break;
        case 1:
            while ((rc = conc_lock_acquire(&m->l, false, CONC_FOREVER)) == CONC_ETIMEDOUT)
                ;
            break;
        default:
            while ((rc = conc_lock_acquire(&m->l, true, 0.0005)) == CONC_ETIMEDOUT)
                ;
            break;
        }
        if (rc != 0) {
            atomic_fetch_add(&m->errors, 1);
            continue;
        }
        m->counter++;
        if (conc_lock_release(&m->l) != 0)
            atomic_fetch_add(&m->errors, 1);
    }
}

Test(lock, mutual_exclusion_mixed_modes, .timeout = TU_TIMEOUT)
{
    static mx_t m = {.l = CONC_LOCK_INIT};
    static tu_bunch_t b;
    m.iters = tu_iters(20000);
    tu_bunch_start(&b, 4, mutex_fn, &m);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&m.errors), 0);
    cr_assert_eq(m.counter, 4 * m.iters);
    cr_assert_not(conc_lock_locked(&m.l));
}

/* The header inlines the uncontended paths (conc__lock_*_inline behind the
 * conc_lock_acquire/release macros); the functions behind them must agree
 * with the out-of-line ones on every outcome. */
Test(lock, inline_and_out_of_line_paths_agree, .timeout = TU_TIMEOUT)
{
    conc_lock_t l = CONC_LOCK_INIT;
    cr_assert_eq(conc__lock_acquire_inline(&l, true, CONC_FOREVER), 0);
    cr_assert_eq((conc_lock_acquire)(&l, false, CONC_FOREVER), CONC_ETIMEDOUT);
    cr_assert_eq(conc__lock_acquire_inline(&l, false, CONC_FOREVER), CONC_ETIMEDOUT);
    cr_assert_eq(conc__lock_acquire_inline(&l, true, 0.01), CONC_ETIMEDOUT);
    cr_assert_eq(conc__lock_release_inline(&l), 0);
    cr_assert_eq(conc__lock_release_inline(&l), CONC_EPERM);
    cr_assert_eq((conc_lock_release)(&l), CONC_EPERM);
    cr_assert_eq((conc_lock_acquire)(&l, true, CONC_FOREVER), 0);
    cr_assert_eq(conc__lock_release_inline(&l), 0);
    cr_assert_eq(conc__lock_acquire_inline(NULL, true, CONC_FOREVER), CONC_EINVAL);
    cr_assert_eq(conc__lock_release_inline(NULL), CONC_EINVAL);
    cr_assert_eq(conc__lock_acquire_inline(&l, false, 1.0), CONC_EINVAL);
    cr_assert_not(conc_lock_locked(&l));
}

/* ------------------------------------- bounded waits against a hammering holder
 * (issue 18: whatever the lock's contention strategy, a waiter must get in;
 * a timed contender that gives up must not strand the others). */

typedef struct {
    conc_lock_t l;
    atomic_int stop;
    atomic_int errors;
    atomic_long got;
    long counter, iters;
} hammer_t;

/* The holder's loop: acquire (waiting at most timeout), count, hold for
 * hold seconds, release, at once again, until told to stop. */
static void hold_until_stop(hammer_t *h, double timeout, double hold)
{
    while (!atomic_load_explicit(&h->stop, memory_order_relaxed)) {
        if (conc_lock_acquire(&h->l, true, timeout) != 0)
            atomic_fetch_add(&h->errors, 1);
        h->counter++;
        if (hold > 0)
            tu_sleep(hold);
        conc_lock_release(&h->l);
    }
}

/* A contender's turn after an acquire that returned rc (not a timeout it
 * expected): true (counted) if it got the lock, which the caller then
 * releases; false (an error counted) if not. */
static bool got_it(hammer_t *h, int rc)
{
    if (rc != 0) {
        atomic_fetch_add(&h->errors, 1);
        return false;
    }
    h->counter++;
    atomic_fetch_add(&h->got, 1);
    return true;
}

/* Thread 0 hammers (acquire, increment, release, at once again) until
 * told to stop; the others each need the lock iters times, with a bounded
 * wait: a waiter must get in even against a holder that never pauses. */
static void hammer_fn(void *p, int i)
{
    hammer_t *h = p;
    if (i == 0) {
        hold_until_stop(h, CONC_FOREVER, 0);
        return;
    }
    for (long k = 0; k < h->iters; k++)
        if (got_it(h, conc_lock_acquire(&h->l, true, 10.0)))
            conc_lock_release(&h->l);
}

Test(lock, waiters_get_in_against_a_hammering_holder, .timeout = TU_TIMEOUT)
{
    static hammer_t h = {.l = CONC_LOCK_INIT};
    static tu_bunch_t b;
    h.iters = tu_iters(200);
    tu_bunch_start(&b, 4, hammer_fn, &h);
    double t0 = tu_now();
    while (atomic_load(&h.got) < 3 * h.iters && tu_now() - t0 < 40)
        tu_sleep(0.001);
    atomic_store(&h.stop, 1);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&h.errors), 0, "a bounded wait ran out against the hammering holder");
    cr_assert_eq(atomic_load(&h.got), 3 * h.iters);
    cr_assert_not(conc_lock_locked(&h.l));
    cr_assert_eq(h.l.state, 0u, "state bits left behind: %#x", h.l.state);
    cr_assert_eq(h.l.q.reserved, 0u, "waiter bits left behind: %#x", h.l.q.reserved);
}

/* Timed contenders that give up (possibly while they own SPIN, spinning or
 * just woken) must never strand the waiters that wait forever. */
static void strand_fn(void *p, int i)
{
    hammer_t *h = p;
    for (long k = 0; k < h->iters; k++) {
        int rc;
        if (i % 2 == 0) {
            rc = conc_lock_acquire(&h->l, true, 0.00002 * (double)((k + i) % 7));
            if (rc == CONC_ETIMEDOUT)
                continue;
        } else {
            rc = conc_lock_acquire(&h->l, true, CONC_FOREVER);
        }
        if (!got_it(h, rc))
            continue;
        if (k % 16 == 0)
            sched_yield(); /* hold it across a switch now and then */
        conc_lock_release(&h->l);
    }
}

Test(lock, timed_out_contenders_never_strand_waiters, .timeout = TU_TIMEOUT)
{
    static hammer_t h = {.l = CONC_LOCK_INIT};
    static tu_bunch_t b;
    h.iters = tu_iters(5000);
    tu_bunch_start(&b, 6, strand_fn, &h);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&h.errors), 0);
    cr_assert_eq(h.counter, atomic_load(&h.got), "lost updates");
    cr_assert_geq(atomic_load(&h.got), 3 * h.iters); /* every forever-waiter got in each time */
    cr_assert_not(conc_lock_locked(&h.l));
    cr_assert_eq(h.l.state, 0u, "state bits left behind: %#x", h.l.state);
    cr_assert_eq(h.l.q.reserved, 0u, "waiter bits left behind: %#x", h.l.q.reserved);
}

/* ------------------------------------------ one candidate, sleepers, handoffs
 * (sync/lock.c: sleepers leave no bit in the state word; one contender is
 * in flight at a time; a waiter that waited long is handed the lock). */

/* Many more threads than CPUs, every one needing the lock a bounded
 * number of times beside a hammering holder: each waiter is woken as the
 * candidate in turn or handed the lock; none waits out its 10 s. */
Test(lock, oversubscribed_waiters_all_get_in, .timeout = TU_TIMEOUT)
{
    static hammer_t h = {.l = CONC_LOCK_INIT};
    static tu_bunch_t b;
    h.iters = tu_iters(100);
    tu_bunch_start(&b, 17, hammer_fn, &h);
    double t0 = tu_now();
    while (atomic_load(&h.got) < 16 * h.iters && tu_now() - t0 < 40)
        tu_sleep(0.001);
    atomic_store(&h.stop, 1);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&h.errors), 0, "a bounded wait ran out against the hammering holder");
    cr_assert_eq(atomic_load(&h.got), 16 * h.iters);
    cr_assert_eq(h.l.state, 0u, "state bits left behind: %#x", h.l.state);
    cr_assert_eq(h.l.q.reserved, 0u, "waiter bits left behind: %#x", h.l.q.reserved);
}

/* A release while the woken candidate is still on its way wakes nobody
 * else, and the candidate still gets in: a holder releases and re-takes
 * the lock in a burst while waiters sleep, then lets go for good. */
typedef struct {
    conc_lock_t l;
    atomic_int ready, got;
} burst_t;

static void burst_waiter(void *p, int i)
{
    burst_t *bt = p;
    (void)i;
    atomic_fetch_add(&bt->ready, 1);
    if (conc_lock_acquire(&bt->l, true, 10.0) == 0) {
        atomic_fetch_add(&bt->got, 1);
        conc_lock_release(&bt->l);
    }
}

Test(lock, releases_with_a_woken_candidate_in_flight, .timeout = TU_TIMEOUT)
{
    static burst_t bt = {.l = CONC_LOCK_INIT};
    static tu_bunch_t b;
    for (int round = 0; round < 5; round++) {
        atomic_store(&bt.ready, 0);
        atomic_store(&bt.got, 0);
        cr_assert_eq(conc_lock_acquire(&bt.l, true, CONC_FOREVER), 0);
        tu_bunch_start(&b, 6, burst_waiter, &bt);
        while (atomic_load(&bt.ready) < 6)
            tu_sleep(0.001);
        tu_sleep(0.02); /* let them queue and sleep (the candidate's spin ends) */
        for (int k = 0; k < 1000; k++) {
            cr_assert_eq(conc_lock_release(&bt.l), 0);
            cr_assert_eq(conc_lock_acquire(&bt.l, true, CONC_FOREVER), 0);
        }
        cr_assert_eq(conc_lock_release(&bt.l), 0);
        tu_bunch_join(&b);
        cr_assert_eq(atomic_load(&bt.got), 6, "a waiter was stranded");
        cr_assert_eq(bt.l.state, 0u, "state bits left behind: %#x", bt.l.state);
        cr_assert_eq(bt.l.q.reserved, 0u, "waiter bits left behind: %#x", bt.l.q.reserved);
    }
    /* Releasing an unlocked lock is still an error, also after all that. */
    cr_assert_eq(conc_lock_release(&bt.l), CONC_EPERM);
}

/* Waiters that time out while they are the candidate or have asked for a
 * handoff (they waited past 1 ms) clear what they set: a waiter with no
 * timeout behind them still gets in every time, and no bit stays set.
 * The holder keeps the lock 2 ms at a time and takes it again at once, so
 * a waiter woken at a release finds it taken, asks, and times out. */
static void asker_fn(void *p, int i)
{
    hammer_t *h = p;
    if (i == 0) {
        hold_until_stop(h, CONC_FOREVER, 0.002);
        return;
    }
    for (long k = 0; k < h->iters; k++) {
        int rc;
        if (i != 1) {
            rc = conc_lock_acquire(&h->l, true, 0.0025 + 0.0005 * (double)((k + i) % 3));
            if (rc == CONC_ETIMEDOUT)
                continue;
        } else {
            rc = conc_lock_acquire(&h->l, true, CONC_FOREVER);
        }
        if (got_it(h, rc))
            conc_lock_release(&h->l);
    }
}

Test(lock, timed_out_candidates_and_askers_clear_their_bits, .timeout = TU_TIMEOUT)
{
    static hammer_t h = {.l = CONC_LOCK_INIT};
    static tu_bunch_t b;
    h.iters = TU_SANITIZED ? 10 : 30;
    tu_bunch_start(&b, 5, asker_fn, &h);
    double t0 = tu_now();
    /* the forever-waiter (i == 1) needs iters; the timed ones come and go */
    while (atomic_load(&h.got) < h.iters && tu_now() - t0 < 40)
        tu_sleep(0.005);
    atomic_store(&h.stop, 1);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&h.errors), 0);
    cr_assert_geq(atomic_load(&h.got), h.iters);
    cr_assert_eq(h.l.state, 0u, "state bits left behind: %#x", h.l.state);
    cr_assert_eq(h.l.q.reserved, 0u, "waiter bits left behind: %#x", h.l.q.reserved);
    cr_assert_eq(conc_lock_acquire(&h.l, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_lock_release(&h.l), 0);
}

/* A fork made while threads contend leaves their candidate and waiters
 * behind in the child's copy of the lock (they did not survive the fork):
 * they count as absent there, so the child's own waiters are woken and
 * get in (sync/lock.c, fork generations in core/park.h). */
#include <sys/wait.h>
#include <unistd.h>

static void fork_contend_fn(void *p, int i)
{
    (void)i;
    hold_until_stop(p, 10.0, 0);
}

/* In the child: one green thread holds the lock across a sleep while
 * another waits for it (no new OS threads: their stacks would reuse those
 * of the threads the fork left behind, on which ghost waiters sit). */
static void *child_green_holder(void *p)
{
    hammer_t *h = p;
    for (int k = 0; k < 5; k++) {
        if (conc_lock_acquire(&h->l, true, 2.0) != 0)
            atomic_fetch_add(&h->errors, 1);
        conc_sleep(0.002);
        conc_lock_release(&h->l);
        conc_yield();
    }
    return NULL;
}

static void *child_green_waiter(void *p)
{
    hammer_t *h = p;
    for (int k = 0; k < 5; k++) {
        if (conc_lock_acquire(&h->l, true, 2.0) != 0)
            atomic_fetch_add(&h->errors, 1);
        else
            conc_lock_release(&h->l);
    }
    return NULL;
}

Test(lock, waiters_left_behind_by_a_fork_do_not_block_the_child, .timeout = TU_TIMEOUT)
{
    if (TU_TSAN) {
        printf("skipped under TSan: threads started after a multi-threaded fork\n");
        return;
    }
    static hammer_t h = {.l = CONC_LOCK_INIT};
    static tu_bunch_t b;
    tu_bunch_start(&b, 4, fork_contend_fn, &h);
    for (int round = 0; round < 5; round++) {
        tu_sleep(0.003 + 0.001 * round);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            /* the child: the lock as the fork left it (maybe held by a
             * thread that is gone: any thread may release a Lock) */
            if (conc_lock_locked(&h.l)) /* not if only handed to a thread that is gone (RESERVED) */
                conc_lock_release(&h.l);
            atomic_store(&h.errors, 0);
            conc_green_t *g[2];
            if (conc_go(&g[0], child_green_holder, &h) != 0 || conc_go(&g[1], child_green_waiter, &h) != 0)
                _exit(4);
            if (conc_green_joinall(g, 2, 20.0) != 0)
                _exit(5);
            _exit(atomic_load(&h.errors) == 0 ? 0 : 3);
        }
        int st = 0;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "round %d: the child's waiters were stranded (status %#x)", round, st);
    }
    atomic_store(&h.stop, 1);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&h.errors), 0);
}

/* A lock handed over (RESERVED, the fairness handoff) to a waiter that a
 * fork then left behind: only the forking thread lives in the child, and
 * a lock merely promised to a thread that is gone is nobody's (Python:
 * locks other threads held stay held; this one was never taken) — the
 * child takes it and locked() says false, and the parent's waiter still
 * gets it. The waiter is a green thread whose hub another green thread
 * keeps busy, so the fork surely copies the lock while RESERVED. */
static struct {
    conc_lock_t l;
    atomic_int spin, spinning, phase2, release, got, early, err;
} rs;

static void *rs_waiter(void *p)
{
    (void)p;
    for (;;) {
        int rc = conc_lock_acquire(&rs.l, true, 30.0);
        if (rc != 0) {
            atomic_store(&rs.err, rc);
            return NULL;
        }
        bool done = atomic_load(&rs.phase2);
        conc_lock_release(&rs.l);
        if (done) {
            atomic_store(&rs.got, 1);
            return NULL;
        }
        atomic_fetch_add(&rs.early, 1); /* got in between the test's release and retake: again */
    }
}

static void *rs_spinner(void *p)
{
    (void)p;
    while (!atomic_load(&rs.spin))
        conc_sleep(0.0005);
    atomic_store(&rs.spinning, 1);
    double dl = tu_now() + 20.0;
    while (!atomic_load(&rs.release) && tu_now() < dl) {
        /* no switch: the hub cannot run the waiter it was handed to */
    }
    return NULL;
}

static void rs_hub_fn(void *p, int i)
{
    (void)p, (void)i;
    conc_green_t *g[2];
    if (conc_go(&g[0], rs_waiter, NULL) != 0 || conc_go(&g[1], rs_spinner, NULL) != 0) {
        atomic_store(&rs.err, -1000);
        return;
    }
    conc_green_joinall(g, 2, 40.0);
    conc_green_free(g[0]);
    conc_green_free(g[1]);
}

Test(lock, handoff_to_a_waiter_left_behind_by_a_fork_is_free_in_the_child, .timeout = TU_TIMEOUT)
{
    if (TU_TSAN) {
        printf("skipped under TSan: a fork beside a running thread, and the test reads the wait bits\n");
        return;
    }
    memset(&rs, 0, sizeof rs);
    conc_lock_init(&rs.l);
    cr_assert_eq(conc_lock_acquire(&rs.l, true, CONC_FOREVER), 0);
    static tu_bunch_t b;
    tu_bunch_start(&b, 1, rs_hub_fn, NULL);
    /* A green waiter woken by a release that fails its turn 1 ms after its
     * first failed one asks for the handoff (HANDOFF, 4, in the wait bits):
     * release and retake at once until it does. */
    double dl = tu_now() + 10.0;
    for (;;) {
        tu_sleep(0.002);
        if ((__atomic_load_n(&rs.l.q.reserved, __ATOMIC_ACQUIRE) & 4u) || tu_now() > dl)
            break;
        cr_assert_eq(conc_lock_release(&rs.l), 0);
        cr_assert_eq(conc_lock_acquire(&rs.l, true, CONC_FOREVER), 0);
    }
    cr_assert(__atomic_load_n(&rs.l.q.reserved, __ATOMIC_ACQUIRE) & 4u, "the waiter never asked for a handoff");
    atomic_store(&rs.spin, 1);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&rs.spinning), 10));
    atomic_store(&rs.phase2, 1);
    cr_assert_eq(conc_lock_release(&rs.l), 0); /* hands it over: RESERVED until the waiter runs */
    unsigned st = __atomic_load_n(&rs.l.state, __ATOMIC_ACQUIRE);
    cr_assert(st & 8u, "not reserved for the waiter: state %#x", st);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int code = 0;
        if (conc_lock_locked(&rs.l))
            code |= 1;
        if (conc_lock_acquire(&rs.l, false, CONC_FOREVER) != 0) {
            code |= 2;
        } else {
            if (!conc_lock_locked(&rs.l))
                code |= 4;
            if (conc_lock_release(&rs.l) != 0)
                code |= 8;
        }
        if (conc_lock_acquire(&rs.l, true, 1.0) != 0)
            code |= 16;
        else if (conc_lock_release(&rs.l) != 0)
            code |= 32;
        if (rs.l.state != 0)
            code |= 64;
        _exit(code);
    }
    int wst = 0;
    cr_assert_eq(waitpid(pid, &wst, 0), pid);
    atomic_store(&rs.release, 1);
    tu_bunch_join(&b);
    cr_assert(WIFEXITED(wst), "child status %#x", wst);
    cr_expect_eq(WEXITSTATUS(wst), 0,
                 "in the child (1 locked, 2 not taken, 4/8 taken but not locked / release failed, 16/32 blocking "
                 "acquire, 64 bits left): %#x",
                 WEXITSTATUS(wst));
    cr_assert_eq(atomic_load(&rs.err), 0);
    cr_assert(atomic_load(&rs.got), "the parent's waiter did not get the lock it was handed");
    cr_assert_eq(rs.l.state, 0u, "state bits left behind: %#x", rs.l.state);
}
