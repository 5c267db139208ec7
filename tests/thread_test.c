/* conc_thread_t and the module functions: the behaviours of CPython's
 * Lib/test/test_threading.py (ThreadTests, ThreadingExceptionTests,
 * ExceptHookTests, main_thread, foreign threads, exit joins non-daemons). */
#include "test_util.h"

typedef struct {
    conc_event_t go;      /* released by the test */
    conc_event_t started; /* set by the thread */
    atomic_ulong ident;
    atomic_long native;
    atomic_ulong pself;
    atomic_long tid;
    _Atomic(conc_thread_t *) cur;
    atomic_int alive_inside;
    atomic_int daemon_inside;
    char name_inside[64];
    atomic_int join_self;
    atomic_int runs;
} tctx_t;

/* Contexts in use, so that a failed test still lets its threads go (the
 * process exit joins non-daemon threads: a blocked one would hang it). */
static tctx_t *live[16];
static int nlive;

static void tctx_init(tctx_t *x)
{
    memset(x, 0, sizeof *x);
    conc_event_init(&x->go);
    conc_event_init(&x->started);
    if (nlive < 16)
        live[nlive++] = x;
}

static void release_all(void)
{
    for (int i = 0; i < nlive; i++)
        conc_event_set(&live[i]->go);
}

TestSuite(thread, .fini = release_all);

static void *worker(void *arg)
{
    tctx_t *x = arg;
    atomic_fetch_add(&x->runs, 1);
    atomic_store(&x->ident, conc_get_ident());
    atomic_store(&x->native, conc_get_native_id());
    atomic_store(&x->pself, (unsigned long)pthread_self());
    atomic_store(&x->tid, tu_gettid());
    conc_thread_t *me = conc_current_thread();
    atomic_store(&x->cur, me);
    if (me) {
        atomic_store(&x->alive_inside, conc_thread_is_alive(me));
        atomic_store(&x->daemon_inside, conc_thread_daemon(me));
        const char *n = conc_thread_name(me);
        snprintf(x->name_inside, sizeof x->name_inside, "%s", n ? n : "(null)");
        atomic_store(&x->join_self, conc_thread_join(me, 0.1, NULL));
    }
    conc_event_set(&x->started);
    conc_event_wait(&x->go, CONC_FOREVER);
    return (void *)0x1234;
}

static void *quick(void *arg) { return arg; }

Test(thread, bad_inputs, .timeout = TU_TIMEOUT)
{
    conc_thread_t *t = (conc_thread_t *)0x1;
    cr_assert_eq(conc_thread_new(NULL, quick, NULL, NULL), CONC_EINVAL);
    cr_assert_eq(conc_thread_new(&t, NULL, NULL, NULL), CONC_EINVAL);
    cr_assert_eq(t, (conc_thread_t *)0x1, "*out set on failure");
    conc_thread_opts_t o = {.stack_size = 1000};
    cr_assert_eq(conc_thread_new(&t, quick, NULL, &o), CONC_EINVAL, "tiny stack accepted");
    o.stack_size = 16 * 1024 - 1;
    cr_assert_eq(conc_thread_new(&t, quick, NULL, &o), CONC_EINVAL);
    cr_assert_eq(conc_thread_spawn(&t, NULL, NULL, NULL), CONC_EINVAL);
    cr_assert_eq(conc_thread_spawn(NULL, quick, NULL, NULL), CONC_EINVAL);
    cr_assert_eq(t, (conc_thread_t *)0x1);
    cr_assert_eq(conc_thread_start(NULL), CONC_EINVAL);
    cr_assert_eq(conc_thread_join(NULL, CONC_FOREVER, NULL), CONC_EINVAL);
    cr_assert_eq(conc_thread_free(NULL), CONC_EINVAL);
    cr_assert_eq(conc_thread_set_name(NULL, "x"), CONC_EINVAL);
    cr_assert_eq(conc_thread_set_daemon(NULL, true), CONC_EINVAL);
    cr_assert_not(conc_thread_is_alive(NULL));
    cr_assert_eq(conc_thread_ident(NULL), 0);
    cr_assert_eq(conc_thread_native_id(NULL), 0);

    cr_assert_eq(conc_thread_new(&t, quick, NULL, NULL), 0);
    cr_assert_eq(conc_thread_set_name(t, NULL), CONC_EINVAL);
    cr_assert_eq(conc_thread_start(t), 0);
    int jr = conc_thread_join(t, -1.0, NULL); /* a poll: join(max(timeout, 0)) */
    cr_assert(jr == 0 || jr == CONC_ETIMEDOUT, "join(-1.0) gave %d", jr);
    cr_assert_eq(conc_thread_join(t, NAN, NULL), CONC_EINVAL);
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, NULL), 0);
    cr_assert_eq(conc_thread_free(t), 0);
}

Test(thread, start_join_result, .timeout = TU_TIMEOUT)
{
    conc_thread_t *t = NULL;
    cr_assert_eq(conc_thread_new(&t, quick, (void *)0xbeef, NULL), 0);
    cr_assert_not_null(t);
    cr_assert_not(conc_thread_is_alive(t));
    cr_assert_eq(conc_thread_ident(t), 0, "ident before start");
    cr_assert_eq(conc_thread_native_id(t), 0, "native_id before start");
    cr_assert_eq(conc_thread_start(t), 0);
    void *res = NULL;
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, &res), 0);
    cr_assert_eq(res, (void *)0xbeef);
    cr_assert_not(conc_thread_is_alive(t));
    /* joining again is fine, and gives the result again */
    res = NULL;
    cr_assert_eq(conc_thread_join(t, 0, &res), 0);
    cr_assert_eq(res, (void *)0xbeef);
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, NULL), 0);
    cr_assert_eq(conc_thread_free(t), 0);

    cr_assert_eq(conc_thread_spawn(&t, quick, (void *)0x77, NULL), 0);
    cr_assert_eq(conc_thread_join(t, 10.0, &res), 0);
    cr_assert_eq(res, (void *)0x77);
    cr_assert_eq(conc_thread_free(t), 0);
}

Test(thread, start_twice_is_eperm, .timeout = TU_TIMEOUT)
{
    static tctx_t x;
    tctx_init(&x);
    conc_thread_t *t;
    cr_assert_eq(conc_thread_new(&t, worker, &x, NULL), 0);
    cr_assert_eq(conc_thread_start(t), 0);
    cr_assert_eq(conc_thread_start(t), CONC_EPERM); /* while running */
    conc_event_set(&x.go);
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, NULL), 0);
    cr_assert_eq(conc_thread_start(t), CONC_EPERM); /* after it ended */
    cr_assert_eq(atomic_load(&x.runs), 1);
    cr_assert_eq(conc_thread_free(t), 0);
}

Test(thread, join_unstarted_is_eperm, .timeout = TU_TIMEOUT)
{
    conc_thread_t *t;
    cr_assert_eq(conc_thread_new(&t, quick, NULL, NULL), 0);
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, NULL), CONC_EPERM);
    cr_assert_eq(conc_thread_join(t, 0.1, NULL), CONC_EPERM);
    cr_assert_not(conc_thread_is_alive(t));
    cr_assert_eq(conc_thread_free(t), 0); /* never started: freeing is fine */
}

Test(thread, join_self_is_eperm, .timeout = TU_TIMEOUT)
{
    static tctx_t x;
    tctx_init(&x);
    conc_thread_t *t;
    cr_assert_eq(conc_thread_spawn(&t, worker, &x, NULL), 0);
    cr_assert_eq(conc_event_wait(&x.started, 10), 0);
    cr_assert_eq(atomic_load(&x.join_self), CONC_EPERM);
    conc_event_set(&x.go);
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, NULL), 0);
    cr_assert_eq(conc_thread_free(t), 0);
    /* the test's own thread joining itself */
    conc_thread_t *me = conc_current_thread();
    cr_assert_not_null(me);
    cr_assert_eq(conc_thread_join(me, 0.1, NULL), CONC_EPERM);
    cr_assert_eq(conc_thread_join(me, CONC_FOREVER, NULL), CONC_EPERM);
}

Test(thread, join_timeout, .timeout = TU_TIMEOUT)
{
    static tctx_t x;
    tctx_init(&x);
    conc_thread_t *t;
    cr_assert_eq(conc_thread_spawn(&t, worker, &x, NULL), 0);
    cr_assert_eq(conc_thread_join(t, 0, NULL), CONC_ETIMEDOUT);
    double s = tu_now();
    void *res = (void *)0x5;
    cr_assert_eq(conc_thread_join(t, 0.2, &res), CONC_ETIMEDOUT);
    tu_assert_timeout(tu_now() - s, 0.2);
    cr_assert_eq(res, (void *)0x5, "result written on timeout");
    cr_assert(conc_thread_is_alive(t));
    conc_event_set(&x.go);
    cr_assert_eq(conc_thread_join(t, 1e300, &res), 0); /* huge clamps */
    cr_assert_eq(res, (void *)0x1234);
    cr_assert_not(conc_thread_is_alive(t));
    cr_assert_eq(conc_thread_free(t), 0);
}

/* Many joiners on one thread all get its result. */
typedef struct {
    conc_thread_t *t;
    atomic_int rc[8];
    void *res[8];
} joiners_t;

static void joiner_fn(void *p, int i)
{
    joiners_t *j = p;
    atomic_store(&j->rc[i], conc_thread_join(j->t, 30, &j->res[i]));
}

Test(thread, many_joiners, .timeout = TU_TIMEOUT)
{
    static tctx_t x;
    static joiners_t j;
    static tu_bunch_t b;
    tctx_init(&x);
    cr_assert_eq(conc_thread_spawn(&j.t, worker, &x, NULL), 0);
    tu_bunch_start(&b, 6, joiner_fn, &j);
    cr_assert(TU_WAIT_UNTIL(tu_bunch_all_sleeping(&b), 10));
    conc_event_set(&x.go);
    tu_bunch_join(&b);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(atomic_load(&j.rc[i]), 0);
        cr_assert_eq(j.res[i], (void *)0x1234);
    }
    cr_assert_eq(conc_thread_free(j.t), 0);
}

Test(thread, is_alive, .timeout = TU_TIMEOUT)
{
    static tctx_t x;
    tctx_init(&x);
    conc_thread_t *t;
    cr_assert_eq(conc_thread_new(&t, worker, &x, NULL), 0);
    cr_assert_not(conc_thread_is_alive(t));
    cr_assert_eq(conc_thread_start(t), 0);
    cr_assert(conc_thread_is_alive(t));
    cr_assert_eq(conc_event_wait(&x.started, 10), 0);
    cr_assert(atomic_load(&x.alive_inside));
    cr_assert(conc_thread_is_alive(t));
    conc_event_set(&x.go);
    /* not alive once the function returned, even before anyone joins */
    cr_assert(TU_WAIT_UNTIL(!conc_thread_is_alive(t), 10));
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, NULL), 0);
    cr_assert_not(conc_thread_is_alive(t));
    cr_assert_eq(conc_thread_free(t), 0);
}

Test(thread, ident_and_native_id, .timeout = TU_TIMEOUT)
{
    static tctx_t x;
    tctx_init(&x);
    cr_assert_eq(conc_get_ident(), (unsigned long)pthread_self());
    cr_assert_eq(conc_get_native_id(), tu_gettid());
    conc_thread_t *t;
    cr_assert_eq(conc_thread_new(&t, worker, &x, NULL), 0);
    cr_assert_eq(conc_thread_ident(t), 0);
    cr_assert_eq(conc_thread_native_id(t), 0);
    cr_assert_eq(conc_thread_start(t), 0);
    cr_assert_eq(conc_event_wait(&x.started, 10), 0);
    unsigned long id = conc_thread_ident(t);
    cr_assert_neq(id, 0);
    cr_assert_eq(id, atomic_load(&x.ident));
    cr_assert_eq(id, atomic_load(&x.pself), "ident is not the pthread_t");
    cr_assert_neq(id, conc_get_ident());
    long nid = conc_thread_native_id(t);
    cr_assert_eq(nid, atomic_load(&x.native));
    cr_assert_eq(nid, atomic_load(&x.tid), "native_id is not gettid()");
    conc_event_set(&x.go);
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, NULL), 0);
    cr_assert_eq(conc_thread_ident(t), id, "ident changed after the thread ended");
    cr_assert_eq(conc_thread_free(t), 0);
}

Test(thread, current_thread_is_the_handle, .timeout = TU_TIMEOUT)
{
    static tctx_t x;
    tctx_init(&x);
    conc_thread_t *t;
    cr_assert_eq(conc_thread_spawn(&t, worker, &x, NULL), 0);
    cr_assert_eq(conc_event_wait(&x.started, 10), 0);
    cr_assert_eq(atomic_load(&x.cur), t);
    cr_assert_neq(conc_current_thread(), t);
    conc_event_set(&x.go);
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, NULL), 0);
    cr_assert_eq(conc_thread_free(t), 0);
}

Test(thread, names, .timeout = TU_TIMEOUT)
{
    static tctx_t x;
    tctx_init(&x);
    conc_thread_t *a, *b;
    cr_assert_eq(conc_thread_new(&a, quick, NULL, NULL), 0);
    cr_assert_eq(conc_thread_new(&b, quick, NULL, NULL), 0);
    const char *na = conc_thread_name(a), *nb = conc_thread_name(b);
    cr_assert_not_null(na);
    cr_assert_not_null(nb);
    cr_assert_eq(strncmp(na, "Thread-", 7), 0, "default name %s", na);
    cr_assert_eq(strncmp(nb, "Thread-", 7), 0, "default name %s", nb);
    cr_assert_str_neq(na, nb, "two threads share the default name %s", na);
    cr_assert_eq(conc_thread_set_name(a, "renamed"), 0);
    cr_assert_str_eq(conc_thread_name(a), "renamed");
    cr_assert_eq(conc_thread_free(a), 0);
    cr_assert_eq(conc_thread_free(b), 0);

    char buf[64];
    strcpy(buf, "worker-with-a-long-name");
    conc_thread_opts_t o = {.name = buf};
    conc_thread_t *t;
    cr_assert_eq(conc_thread_new(&t, worker, &x, &o), 0);
    strcpy(buf, "XXXXXXXX"); /* the name was copied */
    cr_assert_str_eq(conc_thread_name(t), "worker-with-a-long-name");
    cr_assert_eq(conc_thread_start(t), 0);
    cr_assert_eq(conc_event_wait(&x.started, 10), 0);
    cr_assert_str_eq(x.name_inside, "worker-with-a-long-name");
    /* the OS thread carries the first 15 bytes */
    char os[32] = "";
    cr_assert_eq(pthread_getname_np((pthread_t)conc_thread_ident(t), os, sizeof os), 0);
    cr_assert_str_eq(os, "worker-with-a-l");
    cr_assert_eq(conc_thread_set_name(t, "short"), 0);
    cr_assert_str_eq(conc_thread_name(t), "short");
    conc_event_set(&x.go);
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, NULL), 0);
    cr_assert_str_eq(conc_thread_name(t), "short");
    cr_assert_eq(conc_thread_free(t), 0);
}

/* "Rename (copied). Also names the OS thread (first 15 bytes)": renaming a
 * running thread from another thread renames its OS thread too. */
Test(thread, set_name_renames_running_os_thread, .timeout = TU_TIMEOUT)
{
    static tctx_t x;
    tctx_init(&x);
    conc_thread_t *t;
    cr_assert_eq(conc_thread_spawn(&t, worker, &x, NULL), 0);
    cr_assert_eq(conc_event_wait(&x.started, 10), 0);
    cr_assert_eq(conc_thread_set_name(t, "renamed-from-outside"), 0);
    char os[32] = "";
    cr_assert_eq(pthread_getname_np((pthread_t)conc_thread_ident(t), os, sizeof os), 0);
    cr_assert_str_eq(os, "renamed-from-ou");
    conc_event_set(&x.go);
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, NULL), 0);
    cr_assert_eq(conc_thread_free(t), 0);
}

static void *daemon_child(void *arg)
{
    tctx_t *x = arg;
    conc_thread_opts_t o = {.inherit_daemon = true};
    conc_thread_t *c;
    if (conc_thread_spawn(&c, quick, NULL, &o) != 0)
        return (void *)1;
    atomic_store(&x->daemon_inside, conc_thread_daemon(c));
    conc_thread_join(c, CONC_FOREVER, NULL);
    conc_thread_free(c);
    return NULL;
}

Test(thread, daemon_flag, .timeout = TU_TIMEOUT)
{
    static tctx_t x;
    tctx_init(&x);
    conc_thread_t *t;
    cr_assert_eq(conc_thread_new(&t, quick, NULL, NULL), 0);
    cr_assert_not(conc_thread_daemon(t));
    cr_assert_eq(conc_thread_set_daemon(t, true), 0);
    cr_assert(conc_thread_daemon(t));
    cr_assert_eq(conc_thread_set_daemon(t, false), 0);
    cr_assert_not(conc_thread_daemon(t));
    cr_assert_eq(conc_thread_free(t), 0);

    conc_thread_opts_t o = {.daemon = true};
    cr_assert_eq(conc_thread_new(&t, worker, &x, &o), 0);
    cr_assert(conc_thread_daemon(t));
    cr_assert_eq(conc_thread_start(t), 0);
    cr_assert_eq(conc_thread_set_daemon(t, false), CONC_EPERM, "daemonised an active thread");
    cr_assert(conc_thread_daemon(t));
    cr_assert_eq(conc_event_wait(&x.started, 10), 0);
    cr_assert(atomic_load(&x.daemon_inside));
    conc_event_set(&x.go);
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, NULL), 0);
    cr_assert_eq(conc_thread_set_daemon(t, true), CONC_EPERM);
    cr_assert_eq(conc_thread_free(t), 0);

    /* inherit_daemon: a child of a daemon thread is a daemon */
    tctx_init(&x);
    atomic_store(&x.daemon_inside, -1);
    o = (conc_thread_opts_t){.daemon = true};
    void *res = (void *)1;
    cr_assert_eq(conc_thread_spawn(&t, daemon_child, &x, &o), 0);
    cr_assert_eq(conc_thread_join(t, 30, &res), 0);
    cr_assert_null(res);
    cr_assert_eq(atomic_load(&x.daemon_inside), 1);
    cr_assert_eq(conc_thread_free(t), 0);
    /* ...and of a non-daemon thread is not */
    atomic_store(&x.daemon_inside, -1);
    cr_assert_eq(conc_thread_spawn(&t, daemon_child, &x, NULL), 0);
    cr_assert_eq(conc_thread_join(t, 30, &res), 0);
    cr_assert_eq(atomic_load(&x.daemon_inside), 0);
    cr_assert_eq(conc_thread_free(t), 0);
}

static void *use_stack(void *arg)
{
    volatile char buf[32 * 1024];
    for (size_t i = 0; i < sizeof buf; i += 512)
        buf[i] = (char)i;
    (void)arg;
    return (void *)(uintptr_t)buf[512];
}

Test(thread, stack_size, .timeout = TU_TIMEOUT)
{
    conc_thread_opts_t o = {.stack_size = 256 * 1024};
    conc_thread_t *t;
    cr_assert_eq(conc_thread_spawn(&t, use_stack, NULL, &o), 0);
    void *res = NULL;
    cr_assert_eq(conc_thread_join(t, 30, &res), 0);
    cr_assert_eq((uintptr_t)res, (uintptr_t)(char)512);
    cr_assert_eq(conc_thread_free(t), 0);
    o.stack_size = 16 * 1024; /* the documented minimum */
    cr_assert_eq(conc_thread_spawn(&t, quick, (void *)3, &o), 0);
    cr_assert_eq(conc_thread_join(t, 30, &res), 0);
    cr_assert_eq(res, (void *)3);
    cr_assert_eq(conc_thread_free(t), 0);
}

Test(thread, free_running_handle, .timeout = TU_TIMEOUT)
{
    static tctx_t x;
    tctx_init(&x);
    size_t base = conc_active_count();
    conc_thread_t *t;
    cr_assert_eq(conc_thread_spawn(&t, worker, &x, NULL), 0);
    cr_assert_eq(conc_thread_free(t), 0); /* does not stop it */
    cr_assert_eq(conc_event_wait(&x.started, 10), 0);
    cr_assert_eq(conc_active_count(), base + 1);
    conc_event_set(&x.go);
    cr_assert(TU_WAIT_UNTIL(conc_active_count() == base, 10));
}

/* ---- main_thread, enumerate, active_count */

static void *main_thread_probe(void *arg)
{
    conc_thread_t **out = arg;
    out[0] = conc_main_thread();
    out[1] = conc_current_thread();
    return NULL;
}

Test(thread, main_thread, .timeout = TU_TIMEOUT)
{
    conc_thread_t *m = conc_main_thread();
    cr_assert_not_null(m);
    cr_assert_str_eq(conc_thread_name(m), "MainThread");
    cr_assert(conc_thread_is_alive(m));
    cr_assert_not(conc_thread_daemon(m));
    if (tu_gettid() == getpid()) { /* the test body runs on the process's main thread */
        cr_assert_eq(conc_current_thread(), m);
        cr_assert_eq(conc_thread_ident(m), conc_get_ident());
        cr_assert_eq(conc_thread_native_id(m), getpid());
        cr_assert_eq(conc_thread_join(m, 0.1, NULL), CONC_EPERM);
    }
    static conc_thread_t *seen[2];
    conc_thread_t *t;
    cr_assert_eq(conc_thread_spawn(&t, main_thread_probe, seen, NULL), 0);
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, NULL), 0);
    cr_assert_eq(seen[0], m);
    cr_assert_eq(seen[1], t);
    cr_assert_neq(seen[1], m);
    cr_assert_eq(conc_thread_free(t), 0);
}

Test(thread, enumerate_and_active_count, .timeout = TU_TIMEOUT)
{
    static tctx_t x[5];
    conc_thread_t *ts[5];
    size_t base = conc_active_count();
    cr_assert_geq(base, 1);
    cr_assert_eq(conc_thread_enumerate(NULL, 0), base);
    for (int i = 0; i < 5; i++) {
        tctx_init(&x[i]);
        cr_assert_eq(conc_thread_new(&ts[i], worker, &x[i], NULL), 0);
    }
    cr_assert_eq(conc_active_count(), base, "unstarted threads counted");
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(conc_thread_start(ts[i]), 0);
        cr_assert_eq(conc_event_wait(&x[i].started, 10), 0);
    }
    cr_assert_eq(conc_active_count(), base + 5);
    conc_thread_t *all[64];
    size_t n = conc_thread_enumerate(all, 64);
    cr_assert_eq(n, base + 5);
    for (int i = 0; i < 5; i++) {
        bool found = false;
        for (size_t k = 0; k < n; k++)
            found |= conc_thread_ident(all[k]) == conc_thread_ident(ts[i]);
        cr_assert(found, "thread %d not enumerated", i);
    }
    bool main_found = false;
    for (size_t k = 0; k < n; k++) {
        main_found |= all[k] == conc_main_thread();
        cr_assert(conc_thread_is_alive(all[k]));
        cr_assert_eq(conc_thread_free(all[k]), 0);
    }
    cr_assert(main_found, "main thread not enumerated");
    /* cap smaller than the count: stores cap, returns the count */
    conc_thread_t *two[2] = {NULL, NULL};
    cr_assert_eq(conc_thread_enumerate(two, 2), base + 5);
    cr_assert_not_null(two[0]);
    cr_assert_not_null(two[1]);
    conc_thread_free(two[0]);
    conc_thread_free(two[1]);

    for (int i = 0; i < 5; i++)
        conc_event_set(&x[i].go);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(conc_thread_join(ts[i], CONC_FOREVER, NULL), 0);
        cr_assert_eq(conc_thread_free(ts[i]), 0);
    }
    cr_assert(TU_WAIT_UNTIL(conc_active_count() == base, 10), "active_count %zu, base %zu",
              conc_active_count(), base);
    cr_assert_eq(conc_thread_enumerate(NULL, 0), base);
}

/* ---- foreign threads (not created by conc) */

typedef struct {
    _Atomic(conc_thread_t *) cur, cur2;
    atomic_ulong ident, self;
    atomic_long native;
    atomic_int alive;
    atomic_long tid;
    char name[64];
    conc_event_t go;
    atomic_int in;
} foreign_t;

static void foreign_fn(void *p, int i)
{
    foreign_t *f = &((foreign_t *)p)[i];
    conc_thread_t *me = conc_current_thread();
    atomic_store(&f->cur, me);
    atomic_store(&f->cur2, conc_current_thread());
    atomic_store(&f->self, (unsigned long)pthread_self());
    atomic_store(&f->tid, tu_gettid());
    if (me) {
        atomic_store(&f->ident, conc_thread_ident(me));
        atomic_store(&f->native, conc_thread_native_id(me));
        atomic_store(&f->alive, conc_thread_is_alive(me));
        const char *n = conc_thread_name(me);
        snprintf(f->name, sizeof f->name, "%s", n ? n : "");
    }
    atomic_store(&f->in, 1);
    conc_event_wait(&((foreign_t *)p)[0].go, CONC_FOREVER);
}

Test(thread, current_thread_in_foreign_thread, .timeout = TU_TIMEOUT)
{
    static foreign_t f[4];
    static tu_bunch_t b;
    memset(f, 0, sizeof f);
    conc_event_init(&f[0].go);
    size_t base = conc_active_count();
    tu_bunch_start(&b, 4, foreign_fn, f);
    for (int i = 0; i < 4; i++)
        cr_assert(TU_WAIT_UNTIL(atomic_load(&f[i].in), 10));
    for (int i = 0; i < 4; i++) {
        conc_thread_t *t = atomic_load(&f[i].cur);
        cr_assert_not_null(t, "current_thread() NULL in a foreign thread");
        cr_assert_eq(atomic_load(&f[i].cur2), t, "two different records for one thread");
        cr_assert_neq(t, conc_main_thread());
        cr_assert_eq(atomic_load(&f[i].ident), atomic_load(&f[i].self));
        cr_assert_eq(atomic_load(&f[i].native), atomic_load(&f[i].tid));
        cr_assert(atomic_load(&f[i].alive));
        cr_assert(conc_thread_daemon(t), "a foreign thread's record is not daemonic");
        cr_assert_gt(strlen(f[i].name), 0);
        for (int k = 0; k < i; k++)
            cr_assert_neq(atomic_load(&f[k].cur), t);
    }
    cr_assert_eq(conc_active_count(), base + 4, "foreign threads not counted");
    conc_event_set(&f[0].go);
    tu_bunch_join(&b);
    /* their records go when they end (no leak, test_thread_leak) */
    cr_assert(TU_WAIT_UNTIL(conc_active_count() == base, 10), "active_count %zu after foreign threads ended, base %zu",
              conc_active_count(), base);
    cr_assert_eq(conc_thread_enumerate(NULL, 0), base);
}

/* A foreign thread that only uses locks leaves no record behind. */
static conc_lock_t leak_lock = CONC_LOCK_INIT;
static conc_rlock_t leak_rlock = CONC_RLOCK_INIT;
static void lock_user_fn(void *p, int i)
{
    (void)p;
    (void)i;
    conc_lock_acquire(&leak_lock, true, CONC_FOREVER);
    conc_lock_release(&leak_lock);
    conc_rlock_acquire(&leak_rlock, true, CONC_FOREVER);
    conc_rlock_release(&leak_rlock);
}

Test(thread, no_thread_leak_from_foreign_lock_users, .timeout = TU_TIMEOUT)
{
    static tu_bunch_t b;
    size_t n = conc_thread_enumerate(NULL, 0);
    tu_bunch_start(&b, 15, lock_user_fn, NULL);
    tu_bunch_join(&b);
    cr_assert(TU_WAIT_UNTIL(conc_thread_enumerate(NULL, 0) == n, 5), "enumerate %zu, was %zu",
              conc_thread_enumerate(NULL, 0), n);
}

/* A foreign thread whose record is first asked for from one of its green
 * threads, or from its hub's loop (a signal handler landing while the
 * loop polls, main and the green thread parked): the record is the OS
 * thread's (one record, as Python's current_thread() in a greenlet), and
 * it goes when the thread ends — it was attached to the green thread's or
 * the loop's context, which the thread's end never looked at. */
#include <signal.h>

static struct {
    atomic_int armed, ran, kind;
    _Atomic(conc_thread_t *) in_loop, in_green, in_thread;
} fl;

static void fl_handler(int sig)
{
    (void)sig;
    atomic_store(&fl.kind, conc_context_kind());
    atomic_store(&fl.in_loop, conc_current_thread());
    atomic_store(&fl.ran, 1);
}

static void *fl_green_asks(void *p)
{
    (void)p;
    atomic_store(&fl.in_green, conc_current_thread());
    return NULL;
}

static void *fl_green_sleeps(void *p)
{
    (void)p;
    atomic_store(&fl.armed, 1);
    return (void *)(intptr_t)conc_sleep(TU_SANITIZED ? 1.5 : 0.6);
}

/* i == 0: a green thread asks; i == 1: the loop asks (the signal) */
static void fl_thread_fn(void *p, int i)
{
    (void)p;
    conc_green_t *g;
    if (conc_go(&g, i == 0 ? fl_green_asks : fl_green_sleeps, NULL) != 0)
        return;
    conc_green_join(g, 10.0);
    conc_green_free(g);
    if (i == 0)
        atomic_store(&fl.in_thread, conc_current_thread());
}

Test(thread, foreign_thread_record_asked_from_green_or_loop_goes_with_it, .timeout = TU_TIMEOUT)
{
    memset(&fl, 0, sizeof fl);
    struct sigaction sa = {0}, old;
    sa.sa_handler = fl_handler;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR2, &sa, &old), 0);
    size_t base = conc_active_count();
    static tu_bunch_t b;
    /* the handler's first ask allocates the record: TSan reports that as a
     * signal-unsafe call, so there only the green thread asks */
    bool loop = !TU_TSAN;
    if (!loop)
        printf("the loop's part skipped under TSan: the record's malloc in a signal handler is reported\n");
    tu_bunch_start(&b, loop ? 2 : 1, fl_thread_fn, NULL);
    if (loop) {
        cr_assert(TU_WAIT_UNTIL(atomic_load(&fl.armed), 10));
        tu_sleep(TU_SANITIZED ? 0.3 : 0.15); /* main and the green thread parked: the loop polls */
        pthread_kill(b.th[1], SIGUSR2);
    }
    tu_bunch_join(&b);
    sigaction(SIGUSR2, &old, NULL);
    if (loop) {
        cr_assert(atomic_load(&fl.ran), "the signal did not land");
        cr_expect_eq(atomic_load(&fl.kind), CONC_CTX_HUB);
        cr_expect_not_null(atomic_load(&fl.in_loop));
    }
    cr_expect_not_null(atomic_load(&fl.in_green));
    cr_expect_eq(atomic_load(&fl.in_green), atomic_load(&fl.in_thread), "the green thread got a record of its own");
    cr_assert(TU_WAIT_UNTIL(conc_active_count() == base, 10), "active_count %zu after the threads ended, base %zu",
              conc_active_count(), base);
}

/* ---- excepthook */

typedef struct {
    atomic_int calls;
    _Atomic(conc_thread_t *) t;
    atomic_int code;
    char msg[300];
    void *arg;
    atomic_ulong in_ident;
} hook_rec_t;
static hook_rec_t rec;

static void my_hook(conc_thread_t *t, int code, const char *msg, void *arg)
{
    atomic_store(&rec.t, t);
    atomic_store(&rec.code, code);
    snprintf(rec.msg, sizeof rec.msg, "%s", msg ? msg : "(null)");
    rec.arg = arg;
    atomic_store(&rec.in_ident, conc_get_ident());
    atomic_fetch_add(&rec.calls, 1);
}

static void other_hook(conc_thread_t *t, int code, const char *msg, void *arg)
{
    (void)t, (void)code, (void)msg, (void)arg;
}

static void *failing(void *arg)
{
    return conc_fail(CONC_EINVAL, "bad value %d", (int)(intptr_t)arg);
}

static void *fail_then_clear(void *arg)
{
    (void)arg;
    conc_fail(CONC_EEOF, "handled");
    conc_fail_clear();
    return (void *)5;
}

Test(thread, excepthook_called_on_failure, .timeout = TU_TIMEOUT)
{
    conc_excepthook_fn prev = conc_set_excepthook(my_hook, (void *)0xabc);
    conc_thread_opts_t o = {.name = "failer"};
    conc_thread_t *t;
    cr_assert_eq(conc_thread_spawn(&t, failing, (void *)42, &o), 0);
    void *res = (void *)1;
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, &res), 0);
    cr_assert_null(res);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&rec.calls) == 1, 5));
    cr_assert_eq(atomic_load(&rec.t), t);
    cr_assert_eq(atomic_load(&rec.code), CONC_EINVAL);
    cr_assert_str_eq(rec.msg, "bad value 42");
    cr_assert_eq(rec.arg, (void *)0xabc);
    cr_assert_eq(atomic_load(&rec.in_ident), conc_thread_ident(t), "hook not run in the thread");
    cr_assert_eq(conc_thread_free(t), 0);

    /* no failure, or a cleared one: no call */
    cr_assert_eq(conc_thread_spawn(&t, quick, NULL, NULL), 0);
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, NULL), 0);
    cr_assert_eq(conc_thread_free(t), 0);
    cr_assert_eq(conc_thread_spawn(&t, fail_then_clear, NULL, NULL), 0);
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, &res), 0);
    cr_assert_eq(res, (void *)5);
    cr_assert_eq(conc_thread_free(t), 0);
    tu_sleep(0.05);
    cr_assert_eq(atomic_load(&rec.calls), 1);
    /* the failure stayed in its thread */
    cr_assert_eq(conc_failure(NULL), 0);

    cr_assert_eq(conc_set_excepthook(other_hook, NULL), my_hook);
    cr_assert_eq(conc_set_excepthook(prev, NULL), other_hook);
}

Test(thread, default_excepthook_prints, .timeout = TU_TIMEOUT)
{
    conc_excepthook_fn def = conc_set_excepthook(NULL, NULL);
    cr_assert_eq(conc_set_excepthook(NULL, NULL), def, "NULL did not restore the default");
    FILE *tmp = tmpfile();
    cr_assert_not_null(tmp);
    fflush(stderr);
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    conc_thread_opts_t o = {.name = "doomed"};
    conc_thread_t *t;
    int rc = conc_thread_spawn(&t, failing, (void *)7, &o);
    if (rc == 0)
        rc = conc_thread_join(t, CONC_FOREVER, NULL);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    cr_assert_eq(rc, 0);
    conc_thread_free(t);
    char out[1024] = "";
    rewind(tmp);
    size_t n = fread(out, 1, sizeof out - 1, tmp);
    out[n] = 0;
    fclose(tmp);
    cr_assert_not_null(strstr(out, "Exception in thread doomed"), "stderr: %s", out);
    cr_assert_not_null(strstr(out, "bad value 7"), "stderr: %s", out);
    cr_assert_not_null(strstr(out, conc_errname(CONC_EINVAL)), "stderr: %s", out);
}

/* ---- process exit joins non-daemon threads and abandons daemon ones */

static void *slow_writer(void *arg)
{
    (void)arg;
    tu_sleep(0.3);
    if (write(1, "joined\n", 7) != 7)
        return NULL;
    return NULL;
}

static void *forever(void *arg)
{
    (void)arg;
    for (;;)
        tu_sleep(1);
    return NULL;
}

static int scenario(const char *name)
{
    if (strcmp(name, "exit_joins") == 0) {
        conc_thread_t *t, *d;
        conc_thread_opts_t od = {.daemon = true};
        if (conc_thread_spawn(&d, forever, NULL, &od) != 0)
            return 3;
        if (conc_thread_spawn(&t, slow_writer, NULL, NULL) != 0)
            return 2;
        conc_thread_free(d); /* dropping the handles stops neither thread */
        conc_thread_free(t);
        /* return from main: must wait for slow_writer, not for forever */
        return 0;
    }
    return 99;
}

TU_MAIN_WITH_SCENARIOS(scenario)

Test(thread, exit_joins_non_daemon_threads, .timeout = TU_TIMEOUT)
{
    char out[256];
    double secs;
    int st = tu_run_scenario("exit_joins", out, sizeof out, &secs);
    cr_assert(WIFEXITED(st), "child status %#x", st);
    cr_assert_eq(WEXITSTATUS(st), 0);
    cr_assert_str_eq(out, "joined\n", "the process exited before its non-daemon thread ended");
    cr_assert_lt(secs, 10.0, "exit waited for a daemon thread?");
}

/* ---- fork: in the child, the forking thread is the main thread and the
 * only one alive (test_main_thread_after_fork[_from_nonmain_thread]). */

static int child_checks(void)
{
    int bad = 0;
    conc_thread_t *m = conc_main_thread(), *cur = conc_current_thread();
    if (!m || m != cur)
        bad |= 1;
    if (conc_active_count() != 1)
        bad |= 2;
    if (conc_thread_enumerate(NULL, 0) != 1)
        bad |= 4;
    if (m && conc_thread_ident(m) != conc_get_ident())
        bad |= 8;
    if (m && conc_thread_native_id(m) != tu_gettid())
        bad |= 16;
    /* threads still work in the child */
    conc_thread_t *t;
    void *r = NULL;
    if (TU_TSAN) /* TSan cannot start threads after a threaded fork */
        return bad;
    if (conc_thread_spawn(&t, quick, (void *)0x42, NULL) != 0 ||
        conc_thread_join(t, 10, &r) != 0 || r != (void *)0x42)
        bad |= 32;
    else
        conc_thread_free(t);
    return bad;
}

static void *fork_from_thread(void *arg)
{
    (void)arg;
    pid_t pid = fork();
    if (pid == 0)
        _exit(child_checks());
    int st = 0;
    waitpid(pid, &st, 0);
    return (void *)(intptr_t)st;
}

Test(thread, fork_from_main_thread, .timeout = TU_TIMEOUT)
{
    static tctx_t x;
    tctx_init(&x);
    conc_thread_t *t; /* another thread alive in the parent */
    cr_assert_eq(conc_thread_spawn(&t, worker, &x, NULL), 0);
    cr_assert_eq(conc_event_wait(&x.started, 10), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0)
        _exit(child_checks());
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    conc_event_set(&x.go);
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, NULL), 0);
    conc_thread_free(t);
    cr_assert(WIFEXITED(st), "child status %#x", st);
    cr_assert_eq(WEXITSTATUS(st), 0, "child checks failed: mask %#x", WEXITSTATUS(st));
}

Test(thread, fork_from_other_thread, .timeout = TU_TIMEOUT)
{
    fflush(NULL);
    conc_thread_t *t;
    void *r = NULL;
    cr_assert_eq(conc_thread_spawn(&t, fork_from_thread, NULL, NULL), 0);
    cr_assert_eq(conc_thread_join(t, 30, &r), 0);
    conc_thread_free(t);
    int st = (int)(intptr_t)r;
    cr_assert(WIFEXITED(st), "child status %#x", st);
    cr_assert_eq(WEXITSTATUS(st), 0, "child checks failed: mask %#x", WEXITSTATUS(st));
}
