/* conc_local_t: the behaviours of CPython's Lib/test/test_threading_local.py
 * (per-thread values, no leaks when threads end) and destructors. */
#include "test_util.h"

typedef struct item {
    atomic_int dtor_calls;
    atomic_ulong dtor_thread; /* pthread_self() where dtor ran */
    unsigned long owner;      /* pthread_self() of the thread that set it */
    int tag;
} item_t;

static atomic_int total_dtor_calls;

static void item_dtor(void *v)
{
    item_t *it = v;
    atomic_fetch_add(&it->dtor_calls, 1);
    atomic_store(&it->dtor_thread, (unsigned long)pthread_self());
    atomic_fetch_add(&total_dtor_calls, 1);
}

static void count_dtor(void *v)
{
    (void)v;
    atomic_fetch_add(&total_dtor_calls, 1);
}

Test(local, bad_inputs, .timeout = TU_TIMEOUT)
{
    cr_assert_eq(conc_local_new(NULL, NULL), CONC_EINVAL);
    cr_assert_eq(conc_local_new(NULL, item_dtor), CONC_EINVAL);
    cr_assert_null(conc_local_get(NULL));
    cr_assert_eq(conc_local_set(NULL, (void *)1, NULL), CONC_EINVAL);
    cr_assert_eq(conc_local_free(NULL), CONC_EINVAL);
}

Test(local, set_get_and_old, .timeout = TU_TIMEOUT)
{
    conc_local_t *l;
    item_t a = {0}, b = {0};
    cr_assert_eq(conc_local_new(&l, item_dtor), 0);
    cr_assert_null(conc_local_get(l));
    void *old = (void *)0x1;
    cr_assert_eq(conc_local_set(l, &a, &old), 0);
    cr_assert_null(old);
    cr_assert_eq(conc_local_get(l), &a);
    cr_assert_eq(conc_local_set(l, &b, &old), 0);
    cr_assert_eq(old, &a);
    cr_assert_eq(atomic_load(&a.dtor_calls), 0, "the replaced value went to dtor");
    cr_assert_eq(conc_local_get(l), &b);
    cr_assert_eq(conc_local_set(l, &a, NULL), 0);
    cr_assert_eq(atomic_load(&b.dtor_calls), 0);
    cr_assert_eq(conc_local_set(l, NULL, &old), 0);
    cr_assert_eq(old, &a);
    cr_assert_null(conc_local_get(l));
    cr_assert_eq(conc_local_set(l, &b, NULL), 0);
    cr_assert_eq(conc_local_free(l), 0);
    /* local_free passes every remaining value, here the main thread's b */
    cr_assert_eq(atomic_load(&b.dtor_calls), 1);
    cr_assert_eq(atomic_load(&a.dtor_calls), 0);
}

/* ---- per-thread values */

typedef struct {
    conc_local_t *l;
    pthread_barrier_t all_set;
    item_t items[TU_MAX_BUNCH];
    atomic_int first_seen_null[TU_MAX_BUNCH];
    atomic_int own_value_ok[TU_MAX_BUNCH];
    conc_event_t go;
    atomic_int n_set;
} ctx_t;

static void per_thread_fn(void *p, int i)
{
    ctx_t *x = p;
    atomic_store(&x->first_seen_null[i], conc_local_get(x->l) == NULL);
    x->items[i].owner = (unsigned long)pthread_self();
    x->items[i].tag = i;
    conc_local_set(x->l, &x->items[i], NULL);
    pthread_barrier_wait(&x->all_set);
    /* every thread has set its value now; each still sees its own */
    bool ok = true;
    for (int k = 0; k < 100; k++) {
        if (conc_local_get(x->l) != &x->items[i])
            ok = false;
        sched_yield();
    }
    atomic_store(&x->own_value_ok[i], ok);
}

Test(local, per_thread_values, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    const int n = 16;
    item_t mine = {0};
    memset(&x, 0, sizeof x);
    atomic_store(&total_dtor_calls, 0);
    cr_assert_eq(conc_local_new(&x.l, item_dtor), 0);
    cr_assert_eq(conc_local_set(x.l, &mine, NULL), 0);
    pthread_barrier_init(&x.all_set, NULL, n);
    tu_bunch_start(&b, n, per_thread_fn, &x);
    tu_bunch_join(&b);
    pthread_barrier_destroy(&x.all_set);
    for (int i = 0; i < n; i++) {
        cr_assert(atomic_load(&x.first_seen_null[i]), "thread %d saw another's value", i);
        cr_assert(atomic_load(&x.own_value_ok[i]), "thread %d lost its value", i);
    }
    cr_assert_eq(conc_local_get(x.l), &mine, "main's value changed");
    /* the threads ended: each value went to dtor once, in its own thread */
    cr_assert(TU_WAIT_UNTIL(atomic_load(&total_dtor_calls) == n, 5), "dtor calls %d of %d",
              atomic_load(&total_dtor_calls), n);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(atomic_load(&x.items[i].dtor_calls), 1);
        cr_assert_eq(atomic_load(&x.items[i].dtor_thread), x.items[i].owner,
                     "dtor of thread %d's value ran in another thread", i);
    }
    cr_assert_eq(atomic_load(&mine.dtor_calls), 0);
    cr_assert_eq(conc_local_free(x.l), 0);
    cr_assert_eq(atomic_load(&mine.dtor_calls), 1);
    cr_assert_eq(atomic_load(&total_dtor_calls), n + 1);
}

/* Destructors for conc threads, run in the thread before it is gone. */
static void *conc_thread_fn(void *arg)
{
    ctx_t *x = arg;
    int i = atomic_fetch_add(&x->n_set, 1);
    x->items[i].owner = (unsigned long)pthread_self();
    if (conc_local_get(x->l) != NULL)
        return (void *)1;
    conc_local_set(x->l, &x->items[i], NULL);
    return NULL;
}

Test(local, dtor_runs_when_conc_thread_ends, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    memset(&x, 0, sizeof x);
    atomic_store(&total_dtor_calls, 0);
    cr_assert_eq(conc_local_new(&x.l, item_dtor), 0);
    conc_thread_t *ts[8];
    for (int i = 0; i < 8; i++)
        cr_assert_eq(conc_thread_spawn(&ts[i], conc_thread_fn, &x, NULL), 0);
    for (int i = 0; i < 8; i++) {
        void *r = (void *)9;
        cr_assert_eq(conc_thread_join(ts[i], CONC_FOREVER, &r), 0);
        cr_assert_null(r, "a new thread saw a value");
        cr_assert_eq(conc_thread_free(ts[i]), 0);
    }
    cr_assert(TU_WAIT_UNTIL(atomic_load(&total_dtor_calls) == 8, 5), "dtor calls %d",
              atomic_load(&total_dtor_calls));
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(atomic_load(&x.items[i].dtor_calls), 1);
        cr_assert_eq(atomic_load(&x.items[i].dtor_thread), x.items[i].owner);
    }
    cr_assert_eq(conc_local_free(x.l), 0);
    cr_assert_eq(atomic_load(&total_dtor_calls), 8, "local_free ran dtors of ended threads");
}

/* NULL values are not passed to dtor; a value set then cleared is not. */
static void set_then_clear_fn(void *p, int i)
{
    ctx_t *x = p;
    conc_local_set(x->l, &x->items[i], NULL);
    conc_local_set(x->l, NULL, NULL);
}

Test(local, null_values_not_destroyed, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    memset(&x, 0, sizeof x);
    atomic_store(&total_dtor_calls, 0);
    cr_assert_eq(conc_local_new(&x.l, item_dtor), 0);
    tu_bunch_start(&b, 4, set_then_clear_fn, &x);
    tu_bunch_join(&b);
    tu_sleep(0.05);
    cr_assert_eq(atomic_load(&total_dtor_calls), 0);
    cr_assert_eq(conc_local_free(x.l), 0);
    cr_assert_eq(atomic_load(&total_dtor_calls), 0);
}

/* local_free hands every live thread's value to dtor exactly once; those
 * threads ending later do not call it again. */
static void hold_value_fn(void *p, int i)
{
    ctx_t *x = p;
    x->items[i].owner = (unsigned long)pthread_self();
    conc_local_set(x->l, &x->items[i], NULL);
    atomic_fetch_add(&x->n_set, 1);
    conc_event_wait(&x->go, 30);
}

Test(local, free_destroys_remaining_values, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    item_t mine = {0};
    memset(&x, 0, sizeof x);
    conc_event_init(&x.go);
    atomic_store(&total_dtor_calls, 0);
    cr_assert_eq(conc_local_new(&x.l, item_dtor), 0);
    cr_assert_eq(conc_local_set(x.l, &mine, NULL), 0);
    tu_bunch_start(&b, 5, hold_value_fn, &x);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&x.n_set) == 5, 10));
    cr_assert_eq(conc_local_free(x.l), 0);
    cr_assert_eq(atomic_load(&total_dtor_calls), 6);
    cr_assert_eq(atomic_load(&mine.dtor_calls), 1);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(atomic_load(&x.items[i].dtor_calls), 1);
    conc_event_set(&x.go);
    tu_bunch_join(&b);
    tu_sleep(0.05);
    cr_assert_eq(atomic_load(&total_dtor_calls), 6, "values destroyed twice");
}

/* A local created after another was freed starts empty everywhere. */
static void reuse_fn(void *p, int i)
{
    ctx_t *x = p;
    conc_local_set(x->l, &x->items[i], NULL);
    atomic_fetch_add(&x->n_set, 1);
    conc_event_wait(&x->go, 30); /* main frees x->l and makes a new one */
    atomic_store(&x->first_seen_null[i], conc_local_get(x->l) == NULL);
}

Test(local, new_local_after_free_is_empty, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    memset(&x, 0, sizeof x);
    conc_event_init(&x.go);
    atomic_store(&total_dtor_calls, 0);
    for (int round = 0; round < 20; round++) {
        atomic_store(&x.n_set, 0);
        conc_event_clear(&x.go);
        cr_assert_eq(conc_local_new(&x.l, count_dtor), 0);
        tu_bunch_start(&b, 3, reuse_fn, &x);
        cr_assert(TU_WAIT_UNTIL(atomic_load(&x.n_set) == 3, 10));
        cr_assert_eq(conc_local_free(x.l), 0);
        cr_assert_eq(conc_local_new(&x.l, count_dtor), 0);
        cr_assert_null(conc_local_get(x.l));
        conc_event_set(&x.go);
        tu_bunch_join(&b);
        for (int i = 0; i < 3; i++)
            cr_assert(atomic_load(&x.first_seen_null[i]), "round %d: stale value in a new local",
                      round);
        cr_assert_eq(conc_local_free(x.l), 0);
    }
    cr_assert_eq(atomic_load(&total_dtor_calls), 60);
}

/* Many locals at once, many threads, with and without destructors. */
#define NLOCALS 100
static conc_local_t *many[NLOCALS];

static void many_fn(void *p, int i)
{
    atomic_int *bad = p;
    for (int k = 0; k < NLOCALS; k++)
        conc_local_set(many[k], (void *)(uintptr_t)(1 + i * 1000 + k), NULL);
    for (int round = 0; round < 10; round++)
        for (int k = 0; k < NLOCALS; k++)
            if (conc_local_get(many[k]) != (void *)(uintptr_t)(1 + i * 1000 + k))
                atomic_fetch_add(bad, 1);
}

Test(local, many_locals_many_threads, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    static atomic_int bad;
    atomic_store(&total_dtor_calls, 0);
    for (int k = 0; k < NLOCALS; k++)
        cr_assert_eq(conc_local_new(&many[k], k % 2 ? count_dtor : NULL), 0);
    tu_bunch_start(&b, 8, many_fn, &bad);
    tu_bunch_join(&b);
    cr_assert_eq(atomic_load(&bad), 0);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&total_dtor_calls) == 8 * NLOCALS / 2, 5), "dtor calls %d",
              atomic_load(&total_dtor_calls));
    for (int k = 0; k < NLOCALS; k++)
        cr_assert_eq(conc_local_free(many[k]), 0);
    cr_assert_eq(atomic_load(&total_dtor_calls), 8 * NLOCALS / 2);
}

/* Threads ending while another thread frees the local: every value goes to
 * dtor exactly once (either at thread exit or in local_free). */
static void race_fn(void *p, int i)
{
    ctx_t *x = p;
    conc_local_set(x->l, &x->items[i], NULL);
    atomic_fetch_add(&x->n_set, 1);
}

Test(local, free_races_thread_exit, .timeout = TU_TIMEOUT)
{
    static ctx_t x;
    static tu_bunch_t b;
    long rounds = tu_iters(200);
    for (long r = 0; r < rounds; r++) {
        memset(&x, 0, sizeof x);
        atomic_store(&total_dtor_calls, 0);
        cr_assert_eq(conc_local_new(&x.l, item_dtor), 0);
        tu_bunch_start(&b, 4, race_fn, &x);
        cr_assert(TU_WAIT_UNTIL(atomic_load(&x.n_set) == 4, 10));
        cr_assert_eq(conc_local_free(x.l), 0);
        tu_bunch_join(&b);
        for (int i = 0; i < 4; i++)
            cr_assert_eq(atomic_load(&x.items[i].dtor_calls), 1, "round %ld: value %d destroyed %d times",
                         r, i, atomic_load(&x.items[i].dtor_calls));
    }
}
