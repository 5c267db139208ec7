/* Green Pool (gevent.pool.Pool, test__pool.py): at most size members run at
 * once; spawn waits for a free slot (and times out); join waits for all;
 * kill ends all (blocking or not, also members that never started); size
 * and free_count; free refuses while members run; a killed or failed
 * member frees its slot; a green thread spawning into a full pool parks
 * only itself. */
#include "test_util.h"

#include "conc/green.h"

#define PTR(x) ((void *)(uintptr_t)(x))
#define INT(p) ((int)(uintptr_t)(p))

typedef struct {
    atomic_int running, max, started, finished, killed;
    double secs;
} work_t;

static void *member(void *arg)
{
    work_t *w = arg;
    atomic_fetch_add(&w->started, 1);
    int r = atomic_fetch_add(&w->running, 1) + 1;
    int m = atomic_load(&w->max);
    while (r > m && !atomic_compare_exchange_weak(&w->max, &m, r)) {
    }
    int rc = conc_sleep(w->secs);
    atomic_fetch_sub(&w->running, 1);
    if (rc == CONC_EKILLED)
        atomic_fetch_add(&w->killed, 1);
    else
        atomic_fetch_add(&w->finished, 1);
    return PTR(7);
}

Test(green_pool, bad_arguments, .timeout = TU_TIMEOUT)
{
    conc_green_pool_t *p = PTR(1);
    cr_assert_eq(conc_green_pool_new(&p, (size_t)CONC_SEMAPHORE_MAX + 1), CONC_EINVAL);
    cr_assert_eq(conc_green_pool_new(NULL, 2), CONC_EINVAL);
    cr_assert_eq(conc_green_pool_new(&p, 2), 0);
    work_t w = {.secs = 0};
    cr_assert_eq(conc_green_pool_spawn(NULL, NULL, member, &w, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_green_pool_spawn(p, NULL, NULL, &w, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_green_pool_spawn(p, NULL, member, &w, NAN), CONC_EINVAL);
    cr_assert_eq(conc_green_pool_size(p), 0, "a rejected spawn took a slot");
    cr_assert_eq(conc_green_pool_free_count(p), 2);
    cr_assert_eq(conc_green_pool_join(NULL, 1.0), CONC_EINVAL);
    cr_assert_eq(conc_green_pool_kill(NULL, false, 0), CONC_EINVAL);
    cr_assert_eq(conc_green_pool_free(NULL), CONC_EINVAL);
    cr_assert_eq(conc_green_pool_join(p, 0), 0, "join of an empty pool");
    cr_assert_eq(conc_green_pool_kill(p, true, 1.0), 0, "kill of an empty pool");
    cr_assert_eq(conc_green_pool_free(p), 0);
}

Test(green_pool, at_most_size_run_at_once, .timeout = TU_TIMEOUT)
{
    conc_green_pool_t *p;
    cr_assert_eq(conc_green_pool_new(&p, 3), 0);
    cr_assert_eq(conc_green_pool_free_count(p), 3);
    work_t w = {.secs = 0.02};
    double t0 = tu_now();
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(conc_green_pool_spawn(p, NULL, member, &w, 5.0), 0, "spawn %d", i);
        cr_assert_leq(conc_green_pool_size(p), 3);
    }
    cr_assert_eq(conc_green_pool_join(p, 5.0), 0);
    double dt = tu_now() - t0;
    cr_assert_eq(atomic_load(&w.finished), 10);
    cr_assert_eq(atomic_load(&w.max), 3, "max %d running at once (size 3)", atomic_load(&w.max));
    cr_assert_eq(conc_green_pool_size(p), 0);
    cr_assert_eq(conc_green_pool_free_count(p), 3);
    /* 10 members of 0.02 s, 3 at a time: at least 4 rounds */
    cr_assert_geq(dt, 4 * 0.02 - 0.01);
    cr_assert_lt(dt, 10 * 0.02 + TU_SLACK);
    cr_assert_eq(conc_green_pool_free(p), 0);
}

Test(green_pool, spawn_waits_for_a_free_slot_and_times_out, .timeout = TU_TIMEOUT)
{
    conc_green_pool_t *p;
    cr_assert_eq(conc_green_pool_new(&p, 1), 0);
    work_t a = {.secs = 0.1}, b = {.secs = 0};
    conc_green_t *ga;
    cr_assert_eq(conc_green_pool_spawn(p, &ga, member, &a, 1.0), 0);
    cr_assert_eq(conc_green_pool_size(p), 1);
    cr_assert_eq(conc_green_pool_free_count(p), 0);
    double t0 = tu_now();
    cr_assert_eq(conc_green_pool_spawn(p, NULL, member, &b, 0.03), CONC_EFULL, "PoolFull");
    tu_assert_timeout(tu_now() - t0, 0.03);
    cr_assert_eq(conc_green_pool_spawn(p, NULL, member, &b, 0), CONC_EFULL, "0: do not wait");
    /* waiting with a timeout large enough gets the slot once a ends */
    t0 = tu_now();
    conc_green_t *gb;
    cr_assert_eq(conc_green_pool_spawn(p, &gb, member, &b, 5.0), 0);
    double dt = tu_now() - t0;
    cr_assert(conc_green_dead(ga), "got a slot while the only member still ran");
    cr_assert_lt(dt, 0.1 + TU_SLACK);
    cr_assert_eq(conc_green_pool_join(p, 5.0), 0);
    cr_assert_eq(atomic_load(&b.started), 1, "the timed-out spawns ran anyway");
    void *r = NULL;
    cr_assert_eq(conc_green_get(ga, 0, &r), 0);
    cr_assert_eq(r, PTR(7));
    cr_assert_eq(conc_green_free(ga), 0);
    cr_assert_eq(conc_green_free(gb), 0);
    cr_assert_eq(conc_green_pool_free(p), 0);
}

Test(green_pool, kill_all_blocking_and_free, .timeout = TU_TIMEOUT)
{
    conc_green_pool_t *p;
    cr_assert_eq(conc_green_pool_new(&p, 4), 0);
    work_t w = {.secs = 10};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_green_pool_spawn(p, NULL, member, &w, 1.0), 0);
    cr_assert_eq(conc_sleep(0.01), 0);
    cr_assert_eq(atomic_load(&w.started), 3);
    cr_assert_eq(conc_green_pool_size(p), 3);
    cr_assert_eq(conc_green_pool_free_count(p), 1);
    cr_assert_eq(conc_green_pool_free(p), CONC_EPERM, "freed a pool with running members");
    double t0 = tu_now();
    cr_assert_eq(conc_green_pool_join(p, 0.03), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - t0, 0.03);
    t0 = tu_now();
    cr_assert_eq(conc_green_pool_kill(p, true, 5.0), 0);
    cr_assert_lt(tu_now() - t0, 1.0);
    cr_assert_eq(atomic_load(&w.killed), 3);
    cr_assert_eq(conc_green_pool_size(p), 0);
    cr_assert_eq(conc_green_pool_free_count(p), 4);
    cr_assert_eq(conc_green_pool_join(p, 0), 0);
    cr_assert_eq(conc_green_pool_free(p), 0);
}

Test(green_pool, kill_nonblocking_then_join, .timeout = TU_TIMEOUT)
{
    conc_green_pool_t *p;
    cr_assert_eq(conc_green_pool_new(&p, 2), 0);
    work_t w = {.secs = 10};
    conc_green_t *g[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(conc_green_pool_spawn(p, &g[i], member, &w, 1.0), 0);
    conc_yield();
    cr_assert_eq(conc_green_pool_kill(p, false, 0), 0);
    cr_assert_eq(conc_green_pool_join(p, 5.0), 0);
    cr_assert_eq(atomic_load(&w.killed), 2);
    for (int i = 0; i < 2; i++) {
        cr_assert(conc_green_killed(g[i]));
        cr_assert_eq(conc_green_free(g[i]), 0);
    }
    cr_assert_eq(conc_green_pool_free(p), 0);
}

Test(green_pool, kill_before_members_started, .timeout = TU_TIMEOUT)
{
    conc_green_pool_t *p;
    cr_assert_eq(conc_green_pool_new(&p, 3), 0);
    work_t w = {.secs = 0};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_green_pool_spawn(p, NULL, member, &w, 1.0), 0);
    /* no blocking point yet: none has started */
    cr_assert_eq(atomic_load(&w.started), 0);
    cr_assert_eq(conc_green_pool_kill(p, true, 5.0), 0);
    conc_sleep(0.01);
    cr_assert_eq(atomic_load(&w.started), 0, "members killed before they started ran");
    cr_assert_eq(conc_green_pool_size(p), 0);
    cr_assert_eq(conc_green_pool_free(p), 0);
}

static void *failing_member(void *arg)
{
    (void)arg;
    return conc_fail(CONC_EBROKEN, "member failed");
}

Test(green_pool, killed_or_failed_members_free_their_slot, .timeout = TU_TIMEOUT)
{
    conc_green_pool_t *p;
    cr_assert_eq(conc_green_pool_new(&p, 1), 0);
    work_t w = {.secs = 10};
    conc_green_t *g;
    cr_assert_eq(conc_green_pool_spawn(p, &g, member, &w, 1.0), 0);
    conc_yield();
    cr_assert_eq(conc_green_kill(g, true, 5.0), 0);
    cr_assert_eq(conc_green_free(g), 0);
    cr_assert_eq(conc_green_pool_free_count(p), 1, "a killed member kept its slot");
    double t0 = tu_now();
    cr_assert_eq(conc_green_pool_spawn(p, &g, failing_member, NULL, 1.0), 0);
    cr_assert_lt(tu_now() - t0, 0.5);
    cr_assert_eq(conc_green_pool_join(p, 5.0), 0, "join of a pool whose member failed");
    const char *msg = NULL;
    cr_assert_eq(conc_green_get(g, 0, NULL), CONC_EFAILED);
    cr_assert_eq(conc_green_exception(g, &msg), CONC_EBROKEN);
    cr_assert_str_eq(msg, "member failed");
    cr_assert_eq(conc_green_free(g), 0);
    cr_assert_eq(conc_green_pool_free_count(p), 1);
    cr_assert_eq(conc_green_pool_free(p), 0);
}

/* A green thread feeding a full pool parks only itself. */
typedef struct {
    conc_green_pool_t *p;
    work_t *w;
    atomic_int rc;
} feeder_t;

static void *feeder(void *arg)
{
    feeder_t *f = arg;
    int rc = 0;
    for (int i = 0; i < 6 && rc == 0; i++)
        rc = conc_green_pool_spawn(f->p, NULL, member, f->w, 5.0);
    atomic_store(&f->rc, rc);
    return NULL;
}

typedef struct {
    atomic_int stop;
    atomic_long ticks;
} tick_t;

static void *ticker(void *arg)
{
    tick_t *t = arg;
    while (!atomic_load(&t->stop)) {
        atomic_fetch_add(&t->ticks, 1);
        if (conc_sleep(0.001) != 0)
            break;
    }
    return NULL;
}

Test(green_pool, a_green_thread_spawning_into_a_full_pool_parks_only_itself, .timeout = TU_TIMEOUT)
{
    conc_green_pool_t *p;
    cr_assert_eq(conc_green_pool_new(&p, 2), 0);
    work_t w = {.secs = 0.03};
    feeder_t f = {.p = p, .w = &w};
    atomic_store(&f.rc, 99);
    tick_t t = {0};
    conc_green_t *tg, *fg;
    cr_assert_eq(conc_go(&tg, ticker, &t), 0);
    cr_assert_eq(conc_go(&fg, feeder, &f), 0);
    cr_assert_eq(conc_green_join(fg, 5.0), 0);
    cr_assert_eq(atomic_load(&f.rc), 0);
    cr_assert_eq(conc_green_pool_join(p, 5.0), 0);
    atomic_store(&t.stop, 1);
    cr_assert_eq(conc_green_join(tg, 5.0), 0);
    cr_assert_eq(atomic_load(&w.finished), 6);
    cr_assert_eq(atomic_load(&w.max), 2);
    /* 3 rounds of 0.03 s: the ticker should have ticked dozens of times */
    cr_assert_geq(atomic_load(&t.ticks), 15, "ticker: %ld", atomic_load(&t.ticks));
    cr_assert_eq(conc_green_free(tg), 0);
    cr_assert_eq(conc_green_free(fg), 0);
    cr_assert_eq(conc_green_pool_free(p), 0);
}

Test(green_pool, reuse_after_join_and_many_members, .timeout = TU_TIMEOUT)
{
    conc_green_pool_t *p;
    cr_assert_eq(conc_green_pool_new(&p, 16), 0);
    long n = tu_iters(5000);
    work_t w = {.secs = 0};
    for (int round = 0; round < 2; round++) {
        for (long i = 0; i < n; i++)
            cr_assert_eq(conc_green_pool_spawn(p, NULL, member, &w, 5.0), 0);
        cr_assert_eq(conc_green_pool_join(p, 10.0), 0);
        cr_assert_eq(conc_green_pool_size(p), 0);
    }
    cr_assert_eq(atomic_load(&w.finished), 2 * n);
    cr_assert_leq(atomic_load(&w.max), 16);
    cr_assert_eq(conc_green_pool_free(p), 0);
}
