/*
 * The rest of threading's surface (issue 17): RLock.locked(), a local with
 * a per-thread initialiser (a local subclass's __init__), `with lock:`
 * (CONC_WITH), threading.stack_size(), and as_completed's unfinished count.
 * Ported from CPython's lock_tests.py (test_locked), test_threading_local.py
 * (test_local_with_init...), test_threading.py (test_stack_size) and
 * test_concurrent_futures/test_as_completed.py (test_timeout).
 */
#include "test_util.h"

/* ------------------------------------------------------------ RLock.locked */

static void *hold_rlock(void *arg)
{
    conc_rlock_t *r = arg;
    conc_rlock_acquire(r, true, CONC_FOREVER);
    return NULL; /* never released: another thread sees it locked */
}

Test(threading_more, rlock_locked, .timeout = TU_TIMEOUT)
{
    conc_rlock_t r = CONC_RLOCK_INIT;
    cr_assert_not(conc_rlock_locked(&r));
    cr_assert_not(conc_rlock_locked(NULL));
    cr_assert_eq(conc_rlock_acquire(&r, true, CONC_FOREVER), 0);
    cr_assert(conc_rlock_locked(&r));
    cr_assert_eq(conc_rlock_acquire(&r, true, CONC_FOREVER), 0);
    cr_assert(conc_rlock_locked(&r));
    cr_assert_eq(conc_rlock_release(&r), 0);
    cr_assert(conc_rlock_locked(&r), "still held once");
    cr_assert_eq(conc_rlock_release(&r), 0);
    cr_assert_not(conc_rlock_locked(&r));

    /* locked() is about anyone, not only the caller (unlike _is_owned) */
    conc_rlock_t r2 = CONC_RLOCK_INIT;
    conc_thread_t *t;
    cr_assert_eq(conc_thread_spawn(&t, hold_rlock, &r2, NULL), 0);
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, NULL), 0);
    conc_thread_free(t);
    cr_assert(conc_rlock_locked(&r2));
    cr_assert_not(conc_rlock_is_owned(&r2));
}

/* ------------------------------------------------------ local with __init__ */

static _Atomic int inits;
static _Atomic int dtors;

static void *make_value(void *arg)
{
    atomic_fetch_add(&inits, 1);
    int *v = malloc(sizeof *v);
    *v = *(int *)arg;
    return v;
}

static void free_value(void *v)
{
    atomic_fetch_add(&dtors, 1);
    free(v);
}

static void *use_local(void *arg)
{
    conc_local_t *l = arg;
    int *v = conc_local_get(l);
    int first = v ? *v : -1;
    if (v)
        *v = 99; /* this thread's copy only */
    int *again = conc_local_get(l);
    return (void *)(intptr_t)(first == 42 && again == v ? 1 : 0);
}

Test(threading_more, local_init_per_thread, .timeout = TU_TIMEOUT)
{
    atomic_store(&inits, 0);
    atomic_store(&dtors, 0);
    int seed = 42;
    conc_local_t *l;
    cr_assert_eq(conc_local_new_init(NULL, make_value, &seed, free_value), CONC_EINVAL);
    cr_assert_eq(conc_local_new_init(&l, make_value, &seed, free_value), 0);
    int *mine = conc_local_get(l);
    cr_assert_not_null(mine);
    cr_assert_eq(*mine, 42);
    cr_assert_eq(atomic_load(&inits), 1);
    cr_assert_eq(conc_local_get(l), mine, "init runs once per thread");
    for (int i = 0; i < 3; i++) {
        conc_thread_t *t;
        void *ok = NULL;
        cr_assert_eq(conc_thread_spawn(&t, use_local, l, NULL), 0);
        cr_assert_eq(conc_thread_join(t, CONC_FOREVER, &ok), 0);
        conc_thread_free(t);
        cr_assert_eq((intptr_t)ok, 1, "each thread sees its own fresh value");
    }
    cr_assert_eq(*mine, 42, "other threads' changes stay theirs");
    cr_assert_eq(atomic_load(&inits), 4);
    cr_assert_eq(atomic_load(&dtors), 3, "each ended thread's value destroyed");
    /* a value set to NULL stays NULL: init does not run again */
    void *old = NULL;
    cr_assert_eq(conc_local_set(l, NULL, &old), 0);
    cr_assert_eq(old, mine);
    free(mine);
    cr_assert_null(conc_local_get(l));
    cr_assert_eq(atomic_load(&inits), 4);
    cr_assert_eq(conc_local_free(l), 0);
}

static _Atomic int green_tag;

static void *green_local(void *arg)
{
    int *v = conc_local_get(arg);
    if (!v || *v != 7)
        return NULL;
    *v = atomic_fetch_add(&green_tag, 1) + 100; /* its own copy */
    int mine = *v;
    conc_yield(); /* the other green thread runs and changes its copy */
    int *again = conc_local_get(arg);
    return (void *)(intptr_t)(again == v && *again == mine);
}

Test(threading_more, local_init_per_green_thread, .timeout = TU_TIMEOUT)
{
    atomic_store(&inits, 0);
    atomic_store(&dtors, 0);
    int seed = 7;
    conc_local_t *l;
    cr_assert_eq(conc_local_new_init(&l, make_value, &seed, free_value), 0);
    conc_green_t *a, *b;
    cr_assert_eq(conc_go(&a, green_local, l), 0);
    cr_assert_eq(conc_go(&b, green_local, l), 0);
    void *ra = NULL, *rb = NULL;
    cr_assert_eq(conc_green_get(a, CONC_FOREVER, &ra), 0);
    cr_assert_eq(conc_green_get(b, CONC_FOREVER, &rb), 0);
    cr_assert(ra && rb, "each green thread has its own value");
    cr_assert_eq(atomic_load(&inits), 2);
    cr_assert_eq(atomic_load(&dtors), 2, "destroyed when each green thread ended");
    conc_green_free(a);
    conc_green_free(b);
    cr_assert_eq(conc_local_free(l), 0);
}

/* ----------------------------------------------------------- with lock: */

static int with_return(conc_lock_t *l, int early)
{
    CONC_WITH(l);
    if (early)
        return 1; /* released on the way out */
    return 2;
}

Test(threading_more, with_lock_every_exit, .timeout = TU_TIMEOUT)
{
    conc_lock_t l = CONC_LOCK_INIT;
    {
        CONC_WITH(&l);
        cr_assert(conc_lock_locked(&l));
    }
    cr_assert_not(conc_lock_locked(&l), "released at the end of the block");

    cr_assert_eq(with_return(&l, 1), 1);
    cr_assert_not(conc_lock_locked(&l), "released by return");
    cr_assert_eq(with_return(&l, 0), 2);
    cr_assert_not(conc_lock_locked(&l));

    int laps = 0;
    for (int i = 0; i < 5; i++) {
        CONC_WITH(&l);
        laps++;
        if (i == 2)
            break; /* released by break */
        if (i < 2)
            continue; /* and by continue */
    }
    cr_assert_eq(laps, 3);
    cr_assert_not(conc_lock_locked(&l), "released by break/continue");

    {
        CONC_WITH(&l);
        goto out; /* released by goto out of the block */
    }
out:
    cr_assert_not(conc_lock_locked(&l), "released by goto");

    /* nested, in reverse order; RLock re-entry */
    conc_rlock_t r = CONC_RLOCK_INIT;
    {
        CONC_WITH(&r);
        {
            CONC_WITH(&r);
            cr_assert_eq(conc_rlock_level(&r), 2);
        }
        cr_assert_eq(conc_rlock_level(&r), 1);
    }
    cr_assert_not(conc_rlock_locked(&r));

    conc_semaphore_t s;
    conc_semaphore_init(&s, 2);
    {
        CONC_WITH(&s);
        cr_assert_eq(conc_semaphore_value(&s), 1);
    }
    cr_assert_eq(conc_semaphore_value(&s), 2);

    conc_cond_t c = CONC_COND_INIT;
    {
        CONC_WITH_RC(&c, rc);
        cr_assert_eq(rc, 0);
        cr_assert_eq(conc_cond_notify(&c, 1), 0, "notify needs the lock held");
    }
    cr_assert_eq(conc_cond_notify(&c, 1), CONC_EPERM);
}

static void *with_cut(void *arg)
{
    conc_lock_t *l = arg;
    conc_timeout_begin(0.05);
    int got;
    {
        CONC_WITH_RC(l, rc); /* held by the test: cut by the scope */
        got = rc;
    }
    conc_timeout_end();
    return (void *)(intptr_t)got;
}

Test(threading_more, with_lock_cut_releases_nothing, .timeout = TU_TIMEOUT)
{
    conc_lock_t l = CONC_LOCK_INIT;
    cr_assert_eq(conc_lock_acquire(&l, true, CONC_FOREVER), 0);
    /* on a green thread: the scope cuts the acquire, nothing is released */
    conc_green_t *g;
    cr_assert_eq(conc_go(&g, with_cut, &l), 0);
    void *r = NULL;
    cr_assert_eq(conc_green_get(g, CONC_FOREVER, &r), 0);
    cr_assert_eq((intptr_t)r, CONC_ETIMEDOUT);
    cr_assert(conc_lock_locked(&l), "the holder's lock was not released by the failed with");
    conc_green_free(g);
    /* and on an OS thread */
    conc_thread_t *t;
    cr_assert_eq(conc_thread_spawn(&t, with_cut, &l, NULL), 0);
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, &r), 0);
    conc_thread_free(t);
    cr_assert_eq((intptr_t)r, CONC_ETIMEDOUT);
    cr_assert(conc_lock_locked(&l));
    cr_assert_eq(conc_lock_release(&l), 0);
}

/* ---------------------------------------------------------- stack_size */

static void *stack_probe(void *arg)
{
    (void)arg;
    pthread_attr_t a;
    size_t sz = 0;
    if (pthread_getattr_np(pthread_self(), &a) == 0) {
        pthread_attr_getstacksize(&a, &sz);
        pthread_attr_destroy(&a);
    }
    return (void *)sz;
}

Test(threading_more, stack_size, .timeout = TU_TIMEOUT)
{
    size_t old = 1;
    cr_assert_eq(conc_stack_size_get(), 0);
    /* test_threading.test_various_ops_small_stack / large_stack */
    cr_assert_eq(conc_stack_size(262144, &old), 0);
    cr_assert_eq(old, 0, "the default reads as 0");
    cr_assert_eq(conc_stack_size_get(), 262144);
    conc_thread_t *t;
    void *got = NULL;
    cr_assert_eq(conc_thread_spawn(&t, stack_probe, NULL, NULL), 0);
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, &got), 0);
    conc_thread_free(t);
    cr_assert_geq((size_t)got, 262144, "new threads get the size");
    if (!TU_SANITIZED) /* TSan's pthread_create adds room of its own */
        cr_assert_lt((size_t)got, 2 * 262144);
    cr_assert_eq(conc_stack_size(0x100000, &old), 0);
    cr_assert_eq(old, 262144);
    /* too small: ValueError, and the setting is unchanged */
    cr_assert_eq(conc_stack_size(4096, &old), CONC_EINVAL);
    cr_assert_eq(conc_stack_size(32 * 1024 - 1, NULL), CONC_EINVAL);
    cr_assert_eq(conc_stack_size_get(), 0x100000);
    cr_assert_eq(conc_stack_size(32 * 1024, NULL), 0, "32 KiB is the minimum accepted");
    cr_assert_eq(conc_stack_size(0, &old), 0, "0 resets the default");
    cr_assert_eq(old, 32 * 1024);
    cr_assert_eq(conc_stack_size_get(), 0);
}

/* --------------------------------------------- as_completed: unfinished */

Test(threading_more, as_completed_unfinished_count, .timeout = TU_TIMEOUT)
{
    conc_future_t *fs[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_future_new(&fs[i]), 0);
    cr_assert_eq(conc_future_set_result(fs[1], NULL), 0);
    conc_as_completed_t *it;
    conc_future_t *in[4] = {fs[0], fs[1], fs[2], fs[0]}; /* a duplicate counts once */
    cr_assert_eq(conc_as_completed_new(&it, in, 4, 0.05), 0);
    conc_future_t *got;
    cr_assert_eq(conc_as_completed_next(it, &got), 0);
    cr_assert_eq(got, fs[1]);
    cr_assert_eq(conc_as_completed_next(it, &got), CONC_ETIMEDOUT);
    size_t total = 0;
    cr_assert_eq(conc_as_completed_unfinished(it, &total), 2, "2 (of 3) futures unfinished");
    cr_assert_eq(total, 3);
    cr_assert_eq(conc_future_set_result(fs[0], NULL), 0);
    cr_assert_eq(conc_as_completed_unfinished(it, NULL), 1);
    cr_assert_eq(conc_as_completed_unfinished(NULL, &total), 0);
    cr_assert_eq(total, 0);
    conc_as_completed_free(it);
    for (int i = 0; i < 3; i++)
        conc_future_free(fs[i]);
}

/* CONC_WITH's helpers (conc/sync.h), one by one: what each takes, what
 * it records, and that leave releases exactly what was taken. */
Test(threading_more, with_helpers_directly, .timeout = TU_TIMEOUT)
{
    conc_lock_t l = CONC_LOCK_INIT;
    conc__held_t h = conc__held_lock(&l);
    cr_assert_eq(h.rc, 0);
    cr_assert_eq(h.obj, &l);
    cr_assert(conc_lock_locked(&l));
    conc__held_leave(&h);
    cr_assert_not(conc_lock_locked(&l));

    /* NULL: the acquire's CONC_EINVAL, nothing held, leave does nothing */
#define HELD_OF_NULL(take)                                                                         \
    do {                                                                                           \
        h = take(NULL);                                                                            \
        cr_assert_eq(h.rc, CONC_EINVAL, #take);                                                    \
        cr_assert_null(h.obj, #take);                                                              \
        conc__held_leave(&h);                                                                      \
    } while (0)
    HELD_OF_NULL(conc__held_lock);
    HELD_OF_NULL(conc__held_rlock);
    HELD_OF_NULL(conc__held_sem);
    HELD_OF_NULL(conc__held_cond);
#undef HELD_OF_NULL

    /* conc__held_mk: a failed acquire (rc != 0) holds nothing */
    h = conc__held_mk(conc__held_lock_rel, &l, CONC_ETIMEDOUT);
    cr_assert_eq(h.rc, CONC_ETIMEDOUT);
    cr_assert_null(h.obj);
    h = conc__held_mk(conc__held_lock_rel, &l, 0);
    cr_assert_eq(h.obj, &l);
    cr_assert_eq(h.release, conc__held_lock_rel);

    /* RLock: one level each; leave gives back one */
    conc_rlock_t r = CONC_RLOCK_INIT;
    conc__held_t h1 = conc__held_take(&r), h2 = conc__held_take(&r);
    cr_assert_eq(h1.rc, 0);
    cr_assert_eq(h2.obj, &r);
    cr_assert_eq(conc_rlock_level(&r), 2);
    conc__held_leave(&h2);
    cr_assert_eq(conc_rlock_level(&r), 1);
    conc__held_leave(&h1);
    cr_assert_not(conc_rlock_locked(&r));

    /* Semaphore: one unit */
    conc_semaphore_t s;
    conc_semaphore_init(&s, 3);
    h = conc__held_take(&s);
    cr_assert_eq(h.rc, 0);
    cr_assert_eq(conc_semaphore_value(&s), 2);
    conc__held_leave(&h);
    cr_assert_eq(conc__held_sem_rel(&s), 0); /* its release gives back one unit */
    cr_assert_eq(conc_semaphore_value(&s), 4, "3 after the leave, one more");
    cr_assert_eq(conc_semaphore_acquire(&s, false, CONC_FOREVER), 0);
    cr_assert_eq(conc_semaphore_value(&s), 3);

    /* Condition: its lock */
    conc_cond_t c = CONC_COND_INIT;
    h = conc__held_take(&c);
    cr_assert_eq(h.rc, 0);
    cr_assert_eq(conc_cond_notify(&c, 1), 0, "the condition's lock is held");
    conc__held_leave(&h);
    cr_assert_eq(conc_cond_notify(&c, 1), CONC_EPERM);

    /* a failed take (cut by a Timeout scope) records the code, holds
     * nothing, and leave releases nothing (the lock stays the holder's) */
    cr_assert_eq(conc_lock_acquire(&l, true, CONC_FOREVER), 0);
    conc_timeout_begin(0.01);
    h = conc__held_take(&l);
    conc_timeout_end();
    cr_assert_eq(h.rc, CONC_ETIMEDOUT);
    cr_assert_null(h.obj);
    conc__held_leave(&h);
    cr_assert(conc_lock_locked(&l), "leave of a failed take released the holder's lock");
    cr_assert_eq(conc_lock_release(&l), 0);
    /* the release functions return the primitive's own results */
    cr_assert_eq(conc__held_lock_rel(&l), CONC_EPERM, "releasing an unheld Lock");
    cr_assert_eq(conc__held_rlock_rel(&r), CONC_EPERM);
    cr_assert_eq(conc__held_cond_rel(&c), CONC_EPERM);
}

/* CONC_TIMEOUT_SCOPE's cleanup, called directly: it ends the scope its
 * begin opened, and nothing when that begin failed (an outer scope stays). */
Test(threading_more, timeout_scope_leave_directly, .timeout = TU_TIMEOUT)
{
    int begun = conc_timeout_begin(5);
    cr_assert_eq(begun, 0);
    conc__timeout_scope_leave(&begun);
    cr_assert_eq(conc_timeout_end(), CONC_EPERM, "the scope was ended");

    cr_assert_eq(conc_timeout_begin(5), 0); /* outer */
    int failed = CONC_EINVAL;               /* an inner begin that failed */
    conc__timeout_scope_leave(&failed);
    cr_assert_eq(conc_timeout_end(), 0, "the outer scope is still open");
    cr_assert_eq(conc_timeout_end(), CONC_EPERM);
}
