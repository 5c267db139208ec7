/* Stress tests with real contention: many threads, many iterations, checked
 * totals. Iterations scale with CONC_TEST_SCALE (sanitizer builds: 10%). */
#include "test_util.h"

#define NT 8

/* ---- Lock: 8 threads x 100k lock/increment/unlock */

typedef struct {
    conc_lock_t l;
    conc_rlock_t r;
    conc_semaphore_t s;
    long counter;
    long iters;
    atomic_int errors;
    atomic_int inside, max_inside;
} ctx_t;

static void lock_inc_fn(void *p, int i)
{
    (void)i;
    ctx_t *x = p;
    for (long k = 0; k < x->iters; k++) {
        if (conc_lock_acquire(&x->l, true, CONC_FOREVER) != 0) {
            atomic_fetch_add(&x->errors, 1);
            continue;
        }
        if (atomic_fetch_add(&x->inside, 1) != 0)
            atomic_fetch_add(&x->errors, 1); /* two threads inside */
        x->counter++;
        atomic_fetch_sub(&x->inside, 1);
        if (conc_lock_release(&x->l) != 0)
            atomic_fetch_add(&x->errors, 1);
    }
}

Test(stress, lock_counter, .timeout = TU_TIMEOUT)
{
    static ctx_t x = {.l = CONC_LOCK_INIT};
    static tu_bunch_t b;
    x.iters = tu_iters(100000);
    tu_bunch_start(&b, NT, lock_inc_fn, &x);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.errors), 0);
    cr_assert_eq(x.counter, NT * x.iters);
    cr_assert_not(conc_lock_locked(&x.l));
}

/* Lock handed between threads that release a lock they did not take (a
 * binary semaphore): the lock passes a token round a ring. */
typedef struct {
    conc_lock_t turn[4];
    long rounds;
    long hits[4];
    atomic_int errors;
} ring_t;

static void ring_fn(void *p, int i)
{
    ring_t *r = p;
    for (long k = 0; k < r->rounds; k++) {
        if (conc_lock_acquire(&r->turn[i], true, 30) != 0) {
            atomic_fetch_add(&r->errors, 1);
            return;
        }
        r->hits[i]++;
        if (conc_lock_release(&r->turn[(i + 1) % 4]) != 0)
            atomic_fetch_add(&r->errors, 1);
    }
}

Test(stress, lock_token_ring, .timeout = TU_TIMEOUT)
{
    static ring_t r;
    static tu_bunch_t b;
    memset(&r, 0, sizeof r);
    r.rounds = tu_iters(20000);
    for (int i = 0; i < 4; i++) {
        conc_lock_init(&r.turn[i]);
        if (i != 0)
            conc_lock_acquire(&r.turn[i], true, CONC_FOREVER);
    }
    tu_bunch_start(&b, 4, ring_fn, &r);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&r.errors), 0);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(r.hits[i], r.rounds);
    /* the token is back at 0: lock 0 free, the others held */
    cr_assert_not(conc_lock_locked(&r.turn[0]));
    for (int i = 1; i < 4; i++)
        cr_assert(conc_lock_locked(&r.turn[i]));
}

/* ---- RLock: recursive acquisition under contention */

static void rlock_fn(void *p, int i)
{
    ctx_t *x = p;
    for (long k = 0; k < x->iters; k++) {
        int depth = 1 + (int)((k + i) % 3);
        for (int d = 0; d < depth; d++)
            if (conc_rlock_acquire(&x->r, true, d == 0 ? CONC_FOREVER : 0) != 0)
                atomic_fetch_add(&x->errors, 1);
        if (conc_rlock_level(&x->r) != (unsigned long)depth)
            atomic_fetch_add(&x->errors, 1);
        if (atomic_fetch_add(&x->inside, 1) != 0)
            atomic_fetch_add(&x->errors, 1);
        x->counter++;
        atomic_fetch_sub(&x->inside, 1);
        for (int d = 0; d < depth; d++)
            if (conc_rlock_release(&x->r) != 0)
                atomic_fetch_add(&x->errors, 1);
        if (conc_rlock_is_owned(&x->r))
            atomic_fetch_add(&x->errors, 1);
    }
}

Test(stress, rlock_recursive_counter, .timeout = TU_TIMEOUT)
{
    static ctx_t x = {.r = CONC_RLOCK_INIT};
    static tu_bunch_t b;
    x.iters = tu_iters(50000);
    tu_bunch_start(&b, NT, rlock_fn, &x);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.errors), 0);
    cr_assert_eq(x.counter, NT * x.iters);
    cr_assert_eq(conc_rlock_acquire(&x.r, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_rlock_release(&x.r), 0);
}

/* ---- Semaphore limits concurrency */

static void sem_fn(void *p, int i)
{
    ctx_t *x = p;
    for (long k = 0; k < x->iters; k++) {
        int rc;
        if ((k + i) % 4 == 0) {
            while ((rc = conc_semaphore_acquire(&x->s, true, 0.001)) == CONC_ETIMEDOUT)
                ;
        } else if ((k + i) % 4 == 1) {
            while ((rc = conc_semaphore_acquire(&x->s, false, CONC_FOREVER)) == CONC_ETIMEDOUT)
                sched_yield();
        } else {
            rc = conc_semaphore_acquire(&x->s, true, CONC_FOREVER);
        }
        if (rc != 0) {
            atomic_fetch_add(&x->errors, 1);
            continue;
        }
        int now = atomic_fetch_add(&x->inside, 1) + 1;
        int m = atomic_load(&x->max_inside);
        while (now > m && !atomic_compare_exchange_weak(&x->max_inside, &m, now))
            ;
        if (now > 3)
            atomic_fetch_add(&x->errors, 1);
        if (k % 64 == 0)
            sched_yield();
        atomic_fetch_sub(&x->inside, 1);
        if (conc_semaphore_release(&x->s, 1) != 0)
            atomic_fetch_add(&x->errors, 1);
    }
}

Test(stress, semaphore_limits_concurrency, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    for (int bounded = 0; bounded < 2; bounded++) {
        memset(&x, 0, sizeof x);
        x.iters = tu_iters(30000);
        if (bounded)
            cr_assert_eq(conc_bounded_semaphore_init(&x.s, 3), 0);
        else
            cr_assert_eq(conc_semaphore_init(&x.s, 3), 0);
        tu_bunch_start(&b, NT, sem_fn, &x);
        tu_bunch_join(&b);
        cr_assert_eq(atomic_load(&x.errors), 0, "bounded=%d", bounded);
        cr_assert_leq(atomic_load(&x.max_inside), 3);
        cr_assert_geq(atomic_load(&x.max_inside), 1);
        cr_assert_eq(conc_semaphore_value(&x.s), 3, "units lost or made up");
    }
}

/* release(n) in bulk against many waiters: units are conserved. */
typedef struct {
    conc_semaphore_t s;
    long per_thread;
    atomic_long taken;
    atomic_int errors;
} bulk_t;

static void bulk_consumer(void *p, int i)
{
    (void)i;
    bulk_t *x = p;
    for (long k = 0; k < x->per_thread; k++) {
        int rc = conc_semaphore_acquire(&x->s, true, 30);
        if (rc != 0) {
            atomic_fetch_add(&x->errors, 1);
            return;
        }
        atomic_fetch_add(&x->taken, 1);
    }
}

Test(stress, semaphore_bulk_release, .timeout = TU_TIMEOUT)
{
    static bulk_t x;
    static tu_bunch_t b;
    memset(&x, 0, sizeof x);
    x.per_thread = tu_iters(20000);
    cr_assert_eq(conc_semaphore_init(&x.s, 0), 0);
    tu_bunch_start(&b, 6, bulk_consumer, &x);
    long total = 6 * x.per_thread, given = 0;
    unsigned seed = 1;
    while (given < total) {
        seed = seed * 1103515245u + 12345u;
        long n = 1 + (long)((seed >> 16) % 7);
        if (n > total - given)
            n = total - given;
        cr_assert_eq(conc_semaphore_release(&x.s, n), 0);
        given += n;
        if ((seed >> 8) % 16 == 0)
            sched_yield();
    }
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.errors), 0);
    cr_assert_eq(atomic_load(&x.taken), total);
    cr_assert_eq(conc_semaphore_value(&x.s), 0);
}

/* ---- Condition: bounded-buffer producer/consumer with checked sums */

#define QCAP 16
typedef struct {
    conc_lock_t l;
    conc_cond_t not_empty, not_full;
    long buf[QCAP];
    int head, count;
    long per_producer;
    int producers_left;
    long sum_in[NT], sum_out[NT];
    long got[NT];
    atomic_int errors;
} pc_t;

static void producer(void *p, int i)
{
    pc_t *q = p;
    for (long k = 1; k <= q->per_producer; k++) {
        long v = k * NT + i;
        conc_cond_acquire(&q->not_full, true, CONC_FOREVER);
        while (q->count == QCAP)
            if (conc_cond_wait(&q->not_full, CONC_FOREVER) != 0)
                atomic_fetch_add(&q->errors, 1);
        q->buf[(q->head + q->count) % QCAP] = v;
        q->count++;
        q->sum_in[i] += v;
        conc_cond_notify(&q->not_empty, 1);
        conc_cond_release(&q->not_full);
    }
    conc_cond_acquire(&q->not_full, true, CONC_FOREVER);
    if (--q->producers_left == 0)
        conc_cond_notify_all(&q->not_empty);
    conc_cond_release(&q->not_full);
}

static void consumer(void *p, int i)
{
    pc_t *q = p;
    int c = i - NT / 2;
    for (;;) {
        conc_cond_acquire(&q->not_empty, true, CONC_FOREVER);
        while (q->count == 0 && q->producers_left > 0) {
            /* a timed wait now and then exercises the timeout path */
            int rc = conc_cond_wait(&q->not_empty, (q->got[c] % 7 == 0) ? 0.001 : CONC_FOREVER);
            if (rc != 0 && rc != CONC_ETIMEDOUT)
                atomic_fetch_add(&q->errors, 1);
        }
        if (q->count == 0) {
            conc_cond_release(&q->not_empty);
            return;
        }
        long v = q->buf[q->head];
        q->head = (q->head + 1) % QCAP;
        q->count--;
        q->sum_out[c] += v;
        q->got[c]++;
        conc_cond_notify(&q->not_full, 1);
        conc_cond_release(&q->not_empty);
    }
}

static void pc_fn(void *p, int i)
{
    if (i < NT / 2)
        producer(p, i);
    else
        consumer(p, i);
}

Test(stress, condition_producer_consumer, .timeout = TU_TIMEOUT)
{
    static pc_t q;
    static tu_bunch_t b;
    memset(&q, 0, sizeof q);
    conc_lock_init(&q.l);
    cr_assert_eq(conc_cond_init(&q.not_empty, &q.l), 0);
    cr_assert_eq(conc_cond_init(&q.not_full, &q.l), 0);
    q.per_producer = tu_iters(50000);
    q.producers_left = NT / 2;
    tu_bunch_start(&b, NT, pc_fn, &q);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&q.errors), 0);
    long in = 0, out = 0, got = 0;
    for (int i = 0; i < NT / 2; i++) {
        in += q.sum_in[i];
        out += q.sum_out[i];
        got += q.got[i];
    }
    cr_assert_eq(got, (NT / 2) * q.per_producer);
    cr_assert_eq(in, out, "sum in %ld, out %ld", in, out);
    long n = q.per_producer;
    long expect = 0;
    for (int i = 0; i < NT / 2; i++)
        expect += NT * n * (n + 1) / 2 + (long)i * n;
    cr_assert_eq(in, expect);
    cr_assert_eq(q.count, 0);
    cr_assert_not(conc_lock_locked(&q.l));
}

/* ---- Event ping-pong: 100k round trips */

typedef struct {
    conc_event_t ping, pong;
    long rounds;
    long seen;
    atomic_int errors;
} pp_t;

static void ponger(void *p, int i)
{
    (void)i;
    pp_t *x = p;
    for (long k = 0; k < x->rounds; k++) {
        if (conc_event_wait(&x->ping, 30) != 0) {
            atomic_fetch_add(&x->errors, 1);
            return;
        }
        conc_event_clear(&x->ping);
        x->seen++;
        conc_event_set(&x->pong);
    }
}

Test(stress, event_ping_pong, .timeout = TU_TIMEOUT)
{
    static pp_t x;
    static tu_bunch_t b;
    memset(&x, 0, sizeof x);
    conc_event_init(&x.ping);
    conc_event_init(&x.pong);
    x.rounds = tu_iters(100000);
    tu_bunch_start(&b, 1, ponger, &x);
    long k;
    for (k = 0; k < x.rounds; k++) {
        conc_event_set(&x.ping);
        if (conc_event_wait(&x.pong, 30) != 0)
            break;
        conc_event_clear(&x.pong);
        if (x.seen != k + 1)
            break;
    }
    if (k < x.rounds)
        conc_event_set(&x.ping); /* unblock on failure */
    tu_bunch_join(&b);
    cr_assert_eq(k, x.rounds, "stopped at round %ld", k);
    cr_assert_eq(atomic_load(&x.errors), 0);
    cr_assert_eq(x.seen, x.rounds);
}

/* ---- Condition ping-pong on an RLock condition */

typedef struct {
    conc_cond_t c;
    long turn; /* even: main, odd: the other */
    long rounds;
    atomic_int errors;
} cpp_t;

static void cond_ponger(void *p, int i)
{
    (void)i;
    cpp_t *x = p;
    conc_cond_acquire(&x->c, true, CONC_FOREVER);
    while (x->turn < 2 * x->rounds) {
        while (x->turn % 2 == 0)
            if (conc_cond_wait(&x->c, 30) != 0) {
                atomic_fetch_add(&x->errors, 1);
                goto out;
            }
        x->turn++;
        conc_cond_notify(&x->c, 1);
    }
out:
    conc_cond_release(&x->c);
}

Test(stress, condition_ping_pong, .timeout = TU_TIMEOUT)
{
    static cpp_t x;
    static tu_bunch_t b;
    memset(&x, 0, sizeof x);
    cr_assert_eq(conc_cond_init(&x.c, NULL), 0);
    x.rounds = tu_iters(50000);
    tu_bunch_start(&b, 1, cond_ponger, &x);
    conc_cond_acquire(&x.c, true, CONC_FOREVER);
    int rc = 0;
    for (long k = 0; k < x.rounds && rc == 0; k++) {
        x.turn++; /* now odd */
        conc_cond_notify(&x.c, 1);
        while (x.turn % 2 == 1 && rc == 0)
            rc = conc_cond_wait(&x.c, 30);
    }
    conc_cond_release(&x.c);
    tu_bunch_join(&b);
    cr_assert_eq(rc, 0);
    cr_assert_eq(atomic_load(&x.errors), 0);
    cr_assert_eq(x.turn, 2 * x.rounds);
}

/* ---- Barrier cycles with many threads */

typedef struct {
    conc_barrier_t b;
    long cycles;
    atomic_long arrived;
    atomic_int errors;
} bc_t;

static void barrier_fn(void *p, int i)
{
    (void)i;
    bc_t *x = p;
    for (long c = 0; c < x->cycles; c++) {
        atomic_fetch_add(&x->arrived, 1);
        int idx;
        if (conc_barrier_wait(&x->b, 30, &idx) != 0) {
            atomic_fetch_add(&x->errors, 1);
            return;
        }
        /* everyone of this cycle arrived before anyone left */
        if (atomic_load(&x->arrived) < (c + 1) * NT)
            atomic_fetch_add(&x->errors, 1);
    }
}

Test(stress, barrier_cycles, .timeout = TU_TIMEOUT)
{
    static bc_t x;
    static tu_bunch_t b;
    memset(&x, 0, sizeof x);
    x.cycles = tu_iters(5000);
    cr_assert_eq(conc_barrier_init(&x.b, NT, NULL, NULL, CONC_FOREVER), 0);
    tu_bunch_start(&b, NT, barrier_fn, &x);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.errors), 0);
    cr_assert_eq(atomic_load(&x.arrived), NT * x.cycles);
    cr_assert_not(conc_barrier_broken(&x.b));
}

/* ---- Threads: many start/join cycles with results */

static void *ret_arg(void *a) { return a; }

Test(stress, thread_start_join, .timeout = TU_TIMEOUT)
{
    long n = tu_iters(3000);
    for (long k = 0; k < n; k++) {
        conc_thread_t *t[4];
        for (int i = 0; i < 4; i++)
            cr_assert_eq(conc_thread_spawn(&t[i], ret_arg, (void *)(intptr_t)(k * 4 + i + 1), NULL), 0);
        for (int i = 0; i < 4; i++) {
            void *r = NULL;
            cr_assert_eq(conc_thread_join(t[i], 30, &r), 0);
            cr_assert_eq((intptr_t)r, k * 4 + i + 1);
            cr_assert_eq(conc_thread_free(t[i]), 0);
        }
    }
    cr_assert(TU_WAIT_UNTIL(conc_active_count() == 1, 10), "active_count %zu", conc_active_count());
}

/* ---- Semaphore: units are conserved when timed acquires race releases
 * (a waiter handed a unit as its timeout passes must keep it and succeed). */

typedef struct {
    conc_semaphore_t s;
    atomic_long ok;
    atomic_int errors;
    atomic_int stop;
} cons_t;

static void timed_taker(void *p, int i)
{
    cons_t *x = p;
    while (!atomic_load(&x->stop)) {
        int rc = conc_semaphore_acquire(&x->s, true, 0.0002 * (1 + i % 3));
        if (rc == 0)
            atomic_fetch_add(&x->ok, 1);
        else if (rc != CONC_ETIMEDOUT)
            atomic_fetch_add(&x->errors, 1);
    }
}

Test(stress, semaphore_timed_acquire_conserves_units, .timeout = TU_TIMEOUT)
{
    static cons_t x;
    static tu_bunch_t b;
    memset(&x, 0, sizeof x);
    cr_assert_eq(conc_semaphore_init(&x.s, 0), 0);
    tu_bunch_start(&b, 6, timed_taker, &x);
    long total = tu_iters(50000), given = 0;
    while (given < total) {
        long n = 1 + given % 3;
        if (n > total - given)
            n = total - given;
        cr_assert_eq(conc_semaphore_release(&x.s, n), 0);
        given += n;
        if (given % 64 == 0)
            tu_sleep(0.0001);
    }
    tu_sleep(0.05);
    atomic_store(&x.stop, 1);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.errors), 0);
    cr_assert_eq(atomic_load(&x.ok) + conc_semaphore_value(&x.s), total,
                 "taken %ld + left %ld != released %ld", atomic_load(&x.ok),
                 conc_semaphore_value(&x.s), total);
}

/* ---- Event: timed waits racing set/clear only ever return 0 or a timeout,
 * and a wait that returns 0 saw a set() that happened during or before it. */

typedef struct {
    conc_event_t e;
    atomic_long sets; /* number of set() calls begun */
    atomic_int errors;
    atomic_int stop;
    atomic_long ok, to;
} ev_t;

static void ev_waiter(void *p, int i)
{
    (void)i;
    ev_t *x = p;
    while (!atomic_load(&x->stop)) {
        long before = atomic_load(&x->sets);
        int rc = conc_event_wait(&x->e, 0.0005);
        if (rc == 0) {
            atomic_fetch_add(&x->ok, 1);
            if (atomic_load(&x->sets) == 0 && before == 0)
                atomic_fetch_add(&x->errors, 1); /* woke without any set */
        } else if (rc == CONC_ETIMEDOUT) {
            atomic_fetch_add(&x->to, 1);
        } else {
            atomic_fetch_add(&x->errors, 1);
        }
    }
}

Test(stress, event_timed_waits_race_set_clear, .timeout = TU_TIMEOUT)
{
    static ev_t x;
    static tu_bunch_t b;
    memset(&x, 0, sizeof x);
    conc_event_init(&x.e);
    tu_bunch_start(&b, 6, ev_waiter, &x);
    tu_sleep(0.02); /* some timeouts with no set() at all */
    long rounds = tu_iters(5000);
    for (long r = 0; r < rounds; r++) {
        atomic_fetch_add(&x.sets, 1);
        conc_event_set(&x.e);
        conc_event_clear(&x.e);
        if (r % 16 == 0)
            sched_yield();
    }
    atomic_store(&x.stop, 1);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.errors), 0);
    cr_assert_gt(atomic_load(&x.to), 0);
}

/* ---- Condition: waiters timing out while notify/notify_all fly */

typedef struct {
    conc_cond_t c;
    int waiting;
    atomic_int errors;
    atomic_int stop;
    atomic_long notified;
} cn_t;

static void cn_waiter(void *p, int i)
{
    cn_t *x = p;
    conc_cond_acquire(&x->c, true, CONC_FOREVER);
    while (!atomic_load(&x->stop)) {
        x->waiting++;
        int rc = conc_cond_wait(&x->c, 0.0003 * (1 + i % 4));
        x->waiting--;
        if (rc == 0)
            atomic_fetch_add(&x->notified, 1);
        else if (rc != CONC_ETIMEDOUT)
            atomic_fetch_add(&x->errors, 1);
        if (!conc_rlock_is_owned(&x->c.own))
            atomic_fetch_add(&x->errors, 1000);
    }
    conc_cond_release(&x->c);
}

Test(stress, condition_timeouts_race_notify, .timeout = TU_TIMEOUT)
{
    static cn_t x;
    static tu_bunch_t b;
    memset(&x, 0, sizeof x);
    cr_assert_eq(conc_cond_init(&x.c, NULL), 0);
    tu_bunch_start(&b, 6, cn_waiter, &x);
    long rounds = tu_iters(30000);
    for (long r = 0; r < rounds; r++) {
        conc_cond_acquire(&x.c, true, CONC_FOREVER);
        if (r % 5 == 0)
            conc_cond_notify_all(&x.c);
        else
            conc_cond_notify(&x.c, 1 + (int)(r % 3));
        conc_cond_release(&x.c);
    }
    atomic_store(&x.stop, 1);
    conc_cond_acquire(&x.c, true, CONC_FOREVER);
    conc_cond_notify_all(&x.c);
    conc_cond_release(&x.c);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&x.errors), 0);
    cr_assert_eq(x.waiting, 0);
    cr_assert_not(conc_rlock_is_owned(&x.c.own));
    cr_assert_eq(conc_cond_acquire(&x.c, false, CONC_FOREVER), 0, "lock left held");
    conc_cond_release(&x.c);
}

/* ---- Thread join with short timeouts racing the thread's end */

static void *short_life(void *a)
{
    for (volatile int k = 0; k < (int)(intptr_t)a; k++)
        ;
    return a;
}

Test(stress, join_timeouts_race_thread_end, .timeout = TU_TIMEOUT)
{
    long n = tu_iters(2000);
    for (long k = 0; k < n; k++) {
        conc_thread_t *t;
        intptr_t spin = (k * 37) % 20000;
        cr_assert_eq(conc_thread_spawn(&t, short_life, (void *)spin, NULL), 0);
        int rc;
        void *r = NULL;
        while ((rc = conc_thread_join(t, (k % 2) ? 0 : 0.00005, &r)) == CONC_ETIMEDOUT)
            ;
        cr_assert_eq(rc, 0);
        cr_assert_eq((intptr_t)r, spin);
        cr_assert_not(conc_thread_is_alive(t));
        cr_assert_eq(conc_thread_free(t), 0);
    }
}
