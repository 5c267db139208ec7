/* ThreadPoolExecutor and the executor interface: the behaviours of CPython's
 * test_concurrent_futures executor.py, test_thread_pool.py, test_shutdown.py
 * and test_init.py (submit, map with order / timeout / failures, max_workers,
 * default workers, saturation, idle reuse, thread names, initializer and the
 * broken pool, shutdown with and without wait and cancel_futures, submit
 * after shutdown, pools joined at exit), plus conc's additions: nested
 * submits that wait on each other, EPERM when a worker frees its own pool,
 * and map's progress callback and failed_index. */
#include "test_util.h"

#include <pthread.h>
#include <sched.h>

#define P(x) ((void *)(uintptr_t)(x))
#define U(p) ((uintptr_t)(p))

static conc_executor_t *mkpool_opts(const conc_thread_pool_opts_t *o)
{
    conc_executor_t *ex = NULL;
    int rc = conc_thread_pool_new(&ex, o);
    cr_assert_eq(rc, 0, "conc_thread_pool_new = %d", rc);
    cr_assert_not_null(ex);
    return ex;
}

static conc_executor_t *mkpool(size_t max_workers)
{
    conc_thread_pool_opts_t o = {0};
    o.max_workers = max_workers;
    return mkpool_opts(&o);
}

static void freepool(conc_executor_t *ex)
{
    int rc = conc_executor_free(ex);
    cr_assert_eq(rc, 0, "conc_executor_free = %d", rc);
}

static conc_future_t *submit(conc_executor_t *ex, void *(*fn)(void *), void *arg)
{
    conc_future_t *f = NULL;
    int rc = conc_submit(ex, &f, fn, arg);
    cr_assert_eq(rc, 0, "conc_submit = %d", rc);
    cr_assert_not_null(f);
    return f;
}

static void freef(conc_future_t *f)
{
    int rc = conc_future_free(f);
    cr_assert_eq(rc, 0, "conc_future_free = %d", rc);
}

/* ------------------------------------------------------- shared task kit */

static atomic_int gate;
static void gate_wait(void)
{
    double dl = tu_now() + 20;
    while (!atomic_load(&gate) && tu_now() < dl)
        tu_sleep(0.001);
}

/* distinct native thread ids seen by tasks */
#define MAXT 256
static pthread_mutex_t tid_mu = PTHREAD_MUTEX_INITIALIZER;
static long tids[MAXT];
static int ntids;
static void note_tid(void)
{
    long me = tu_gettid();
    pthread_mutex_lock(&tid_mu);
    int i;
    for (i = 0; i < ntids; i++)
        if (tids[i] == me)
            break;
    if (i == ntids && ntids < MAXT)
        tids[ntids++] = me;
    pthread_mutex_unlock(&tid_mu);
}
static int distinct_tids(bool exclude_self)
{
    long me = tu_gettid();
    pthread_mutex_lock(&tid_mu);
    int n = 0;
    for (int i = 0; i < ntids; i++)
        if (!exclude_self || tids[i] != me)
            n++;
    pthread_mutex_unlock(&tid_mu);
    return n;
}

static atomic_int running, max_running, completed, started;
static void reset_counters(void)
{
    atomic_store(&gate, 0);
    atomic_store(&running, 0);
    atomic_store(&max_running, 0);
    atomic_store(&completed, 0);
    atomic_store(&started, 0);
    pthread_mutex_lock(&tid_mu);
    ntids = 0;
    pthread_mutex_unlock(&tid_mu);
}

/* counts how many run at once; blocks on the gate */
static void *busy_task(void *arg)
{
    note_tid();
    atomic_fetch_add(&started, 1);
    int now = atomic_fetch_add(&running, 1) + 1;
    int m = atomic_load(&max_running);
    while (now > m && !atomic_compare_exchange_weak(&max_running, &m, now)) {
    }
    gate_wait();
    atomic_fetch_sub(&running, 1);
    atomic_fetch_add(&completed, 1);
    return arg;
}

static void *gate_task(void *arg)
{
    atomic_fetch_add(&started, 1);
    gate_wait();
    atomic_fetch_add(&completed, 1);
    return arg;
}

static void *quick_task(void *arg)
{
    note_tid();
    atomic_fetch_add(&completed, 1);
    return arg;
}

static void *square_task(void *arg)
{
    return P(U(arg) * U(arg));
}

static void *failing_task(void *arg)
{
    return conc_fail(CONC_ERANGE, "item %d is out of range", (int)U(arg));
}

/* ------------------------------------------------------------ bad input */

Test(executor, null_arguments, .timeout = TU_TIMEOUT)
{
    conc_executor_t *ex = mkpool(2);
    conc_future_t *f = NULL;
    void *args[2] = {P(1), P(2)}, *res[2];
    cr_assert_eq(conc_thread_pool_new(NULL, NULL), CONC_EINVAL);
    cr_assert_eq(conc_submit(NULL, &f, quick_task, NULL), CONC_EINVAL);
    cr_assert_eq(conc_submit(ex, NULL, quick_task, NULL), CONC_EINVAL);
    cr_assert_eq(conc_submit(ex, &f, NULL, NULL), CONC_EINVAL);
    cr_assert_null(f);
    cr_assert_eq(conc_executor_shutdown(NULL, true, false), CONC_EINVAL);
    cr_assert_eq(conc_executor_free(NULL), CONC_EINVAL);
    cr_assert_eq(conc_map(NULL, square_task, args, 2, res, NULL), CONC_EINVAL);
    cr_assert_eq(conc_map(ex, NULL, args, 2, res, NULL), CONC_EINVAL);
    cr_assert_eq(conc_map(ex, square_task, NULL, 2, res, NULL), CONC_EINVAL);
    cr_assert_eq(conc_map(ex, square_task, args, 2, NULL, NULL), CONC_EINVAL);
    conc_map_opts_t nan_o = {.timeout = NAN};
    cr_assert_eq(conc_map(ex, square_task, args, 2, res, &nan_o), CONC_EINVAL);
    /* none of that broke the pool */
    f = submit(ex, square_task, P(7));
    void *r;
    cr_assert_eq(conc_future_result(f, 20, &r), 0);
    cr_assert_eq(U(r), 49);
    freef(f);
    freepool(ex);
}

Test(executor, map_of_nothing, .timeout = TU_TIMEOUT)
{
    /* Python: list(ex.map(f, [])) == [] */
    conc_executor_t *ex = mkpool(2);
    void *args[1] = {P(1)}, *res[1] = {P(5)};
    double t = tu_now();
    int rc = conc_map(ex, square_task, args, 0, res, NULL);
    cr_assert(rc == 0 || rc == CONC_EINVAL, "map of 0 items = %d", rc);
    cr_assert_eq(U(res[0]), 5, "map of 0 items wrote results[0]");
    cr_assert_lt(tu_now() - t, 5.0);
    freepool(ex);
}

/* --------------------------------------------------------- submit/result */

Test(executor, submit_and_result, .timeout = TU_TIMEOUT)
{
    conc_executor_t *ex = mkpool(4);
    enum { N = 100 };
    conc_future_t *fs[N];
    for (int i = 0; i < N; i++)
        fs[i] = submit(ex, square_task, P(i));
    for (int i = 0; i < N; i++) {
        void *r = NULL;
        cr_assert_eq(conc_future_result(fs[i], 20, &r), 0);
        cr_assert_eq(U(r), (uintptr_t)i * i);
        cr_assert_eq(conc_future_state(fs[i]), CONC_FUTURE_FINISHED);
        int code = 9;
        cr_assert_eq(conc_future_exception(fs[i], 0, &code, NULL), 0);
        cr_assert_eq(code, 0);
        freef(fs[i]);
    }
    freepool(ex);
}

Test(executor, submit_with_null_options_and_the_ops_name, .timeout = TU_TIMEOUT)
{
    conc_executor_t *ex = mkpool_opts(NULL);
    cr_assert_not_null(ex->ops);
    cr_assert_not_null(ex->ops->name);
    conc_future_t *f = submit(ex, square_task, P(3));
    void *r;
    cr_assert_eq(conc_future_result(f, 20, &r), 0);
    cr_assert_eq(U(r), 9);
    freef(f);
    freepool(ex);
}

static void *fail_then_clear_task(void *arg)
{
    (void)arg;
    conc_fail(CONC_EEOF, "handled");
    conc_fail_clear(); /* Python: except: pass */
    return P(5);
}

Test(executor, task_failure, .timeout = TU_TIMEOUT)
{
    conc_executor_t *ex = mkpool(1);
    conc_future_t *f = submit(ex, failing_task, P(3));
    conc_future_t *g = submit(ex, square_task, P(4)); /* same worker, next task */
    conc_future_t *h = submit(ex, fail_then_clear_task, NULL);
    void *r = P(1);
    cr_assert_eq(conc_future_result(f, 20, &r), CONC_EFAILED);
    int code = 0;
    const char *msg = NULL;
    cr_assert_eq(conc_future_exception(f, 20, &code, &msg), 0);
    cr_assert_eq(code, CONC_ERANGE);
    cr_assert_not_null(msg);
    cr_assert_str_eq(msg, "item 3 is out of range");
    cr_assert_eq(conc_future_state(f), CONC_FUTURE_FINISHED);
    cr_assert_not(conc_future_cancelled(f));
    cr_assert_eq(conc_future_result(g, 20, &r), 0, "the failure stuck to the worker's next task");
    cr_assert_eq(U(r), 16);
    cr_assert_eq(conc_future_result(h, 20, &r), 0, "a cleared failure still failed the task");
    cr_assert_eq(U(r), 5);
    freef(f);
    freef(g);
    freef(h);
    freepool(ex);
}

static void *fail_without_code_task(void *arg)
{
    (void)arg;
    return conc_fail(0, "no code");
}

Test(executor, task_failure_without_code, .timeout = TU_TIMEOUT)
{
    conc_executor_t *ex = mkpool(1);
    conc_future_t *f = submit(ex, fail_without_code_task, NULL);
    cr_assert_eq(conc_future_result(f, 20, NULL), CONC_EFAILED);
    freef(f);
    freepool(ex);
}

/* ----------------------------------------------------------- the workers */

Test(executor, max_workers_respected, .timeout = TU_TIMEOUT)
{
    /* test_saturation: 15 * max_workers blocked tasks, max_workers threads */
    reset_counters();
    conc_executor_t *ex = mkpool(3);
    enum { N = 45 };
    conc_future_t *fs[N];
    for (int i = 0; i < N; i++)
        fs[i] = submit(ex, busy_task, P(i));
    cr_assert(TU_WAIT_UNTIL(atomic_load(&running) == 3, 10), "running %d of 3", atomic_load(&running));
    tu_sleep(0.2);
    cr_assert_eq(atomic_load(&running), 3, "more than max_workers tasks ran at once");
    cr_assert_eq(distinct_tids(false), 3);
    atomic_store(&gate, 1);
    /* poll rather than wait, so the test thread runs no task itself */
    cr_assert(TU_WAIT_UNTIL(atomic_load(&completed) == N, 20));
    cr_assert_eq(atomic_load(&max_running), 3);
    cr_assert_eq(distinct_tids(false), 3, "%d threads ran tasks for a pool of 3", distinct_tids(false));
    for (int i = 0; i < N; i++) {
        cr_assert(conc_future_done(fs[i]));
        freef(fs[i]);
    }
    freepool(ex);
}

static int cpu_counts(int *affinity)
{
    cpu_set_t set;
    *affinity = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        *affinity = CPU_COUNT(&set);
    return (int)sysconf(_SC_NPROCESSORS_ONLN);
}

static int min32(int x) { return x < 32 ? x : 32; }

Test(executor, default_max_workers, .timeout = TU_TIMEOUT)
{
    int aff, online = cpu_counts(&aff);
    int want1 = min32(aff + 4), want2 = min32(online + 4);
    int want = want1 > want2 ? want1 : want2;
    reset_counters();
    conc_executor_t *ex = mkpool(0);
    int n = want + 4;
    conc_future_t *fs[40];
    for (int i = 0; i < n; i++)
        fs[i] = submit(ex, busy_task, P(i));
    TU_WAIT_UNTIL(atomic_load(&running) >= want, 10);
    tu_sleep(0.3);
    int r = atomic_load(&running);
    cr_assert(r == want1 || r == want2,
              "%d tasks run at once by default; min(32, cpus + 4) is %d (affinity) / %d (online)", r, want1,
              want2);
    atomic_store(&gate, 1);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&completed) == n, 20));
    for (int i = 0; i < n; i++)
        freef(fs[i]);
    freepool(ex);
}

Test(executor, workers_reused_while_idle, .timeout = TU_TIMEOUT)
{
    /* test_idle_thread_reuse: one task at a time needs one worker */
    reset_counters();
    conc_executor_t *ex = mkpool(8);
    for (int i = 0; i < 20; i++) {
        conc_future_t *f = submit(ex, quick_task, P(i));
        cr_assert(TU_WAIT_UNTIL(conc_future_done(f), 20));
        cr_assert_eq(conc_future_result(f, 0, NULL), 0);
        freef(f);
        tu_sleep(0.01); /* let the worker go idle */
    }
    int n = distinct_tids(true);
    cr_assert_leq(n, 2, "%d worker threads for 20 sequential tasks (not reused)", n);
    cr_assert_geq(n, 1);
    freepool(ex);
}

Test(executor, workers_started_lazily, .timeout = TU_TIMEOUT)
{
    /* a pool of 8 running 2 blocked tasks has at most 2 busy threads, and
     * tasks never run on the submitting thread */
    reset_counters();
    conc_executor_t *ex = mkpool(8);
    conc_future_t *a = submit(ex, busy_task, NULL), *b = submit(ex, busy_task, NULL);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&running) == 2, 10));
    cr_assert_eq(distinct_tids(false), 2);
    cr_assert_eq(distinct_tids(true), 2, "a task ran on the submitting thread");
    atomic_store(&gate, 1);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&completed) == 2, 20));
    freef(a);
    freef(b);
    freepool(ex);
}

/* thread names */
static pthread_mutex_t name_mu = PTHREAD_MUTEX_INITIALIZER;
static char names[8][64];
static atomic_int nnames;
static void *name_task(void *arg)
{
    (void)arg;
    conc_thread_t *me = conc_current_thread();
    const char *nm = me ? conc_thread_name(me) : NULL;
    int k = atomic_fetch_add(&nnames, 1);
    if (k < 8) {
        pthread_mutex_lock(&name_mu);
        snprintf(names[k], sizeof names[k], "%s", nm ? nm : "(null)");
        pthread_mutex_unlock(&name_mu);
    }
    atomic_fetch_add(&running, 1);
    gate_wait();
    return NULL;
}

static void check_names(const char *prefix)
{
    reset_counters();
    atomic_store(&nnames, 0);
    conc_thread_pool_opts_t o = {.max_workers = 2, .thread_name_prefix = prefix};
    char copy[64];
    if (prefix) {
        snprintf(copy, sizeof copy, "%s", prefix);
        o.thread_name_prefix = copy;
    }
    conc_executor_t *ex = mkpool_opts(&o);
    if (prefix)
        memset(copy, 'z', sizeof copy - 1); /* the prefix must have been copied */
    conc_future_t *a = submit(ex, name_task, NULL), *b = submit(ex, name_task, NULL);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&running) == 2, 10));
    const char *want = prefix ? prefix : "ThreadPoolExecutor-";
    pthread_mutex_lock(&name_mu);
    char n0[64], n1[64];
    memcpy(n0, names[0], sizeof n0);
    memcpy(n1, names[1], sizeof n1);
    pthread_mutex_unlock(&name_mu);
    atomic_store(&gate, 1);
    cr_assert_eq(strncmp(n0, want, strlen(want)), 0, "worker named '%s', expected prefix '%s'", n0, want);
    cr_assert_eq(strncmp(n1, want, strlen(want)), 0, "worker named '%s', expected prefix '%s'", n1, want);
    cr_assert_str_neq(n0, n1, "two workers share the name '%s'", n0);
    cr_assert_eq(conc_future_result(a, 20, NULL), 0);
    cr_assert_eq(conc_future_result(b, 20, NULL), 0);
    freef(a);
    freef(b);
    freepool(ex);
}

Test(executor, thread_name_prefix, .timeout = TU_TIMEOUT) { check_names("mypool"); }

Test(executor, default_thread_names, .timeout = TU_TIMEOUT) { check_names(NULL); }

/* initializer */
static _Thread_local int tls_inits;
static atomic_int inits, bad_init_arg, uninitialised_runs;
static void init_fn(void *arg)
{
    if (arg != P(0x1234))
        atomic_store(&bad_init_arg, 1);
    tls_inits++;
    atomic_fetch_add(&inits, 1);
    note_tid();
}
static void *check_init_task(void *arg)
{
    if (tls_inits != 1)
        atomic_fetch_add(&uninitialised_runs, 1);
    return busy_task(arg);
}

Test(executor, initializer_runs_once_per_worker, .timeout = TU_TIMEOUT)
{
    reset_counters();
    atomic_store(&inits, 0);
    atomic_store(&uninitialised_runs, 0);
    conc_thread_pool_opts_t o = {.max_workers = 3, .initializer = init_fn, .initarg = P(0x1234)};
    conc_executor_t *ex = mkpool_opts(&o);
    enum { N = 30 };
    conc_future_t *fs[N];
    for (int i = 0; i < N; i++)
        fs[i] = submit(ex, check_init_task, P(i));
    cr_assert(TU_WAIT_UNTIL(atomic_load(&running) == 3, 10));
    atomic_store(&gate, 1);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&completed) == N, 20));
    cr_assert_eq(atomic_load(&inits), 3, "initializer ran %d times for 3 workers", atomic_load(&inits));
    cr_assert_eq(distinct_tids(false), 3);
    cr_assert_eq(atomic_load(&uninitialised_runs), 0, "a task ran on a thread not initialised exactly once");
    cr_assert_eq(atomic_load(&bad_init_arg), 0, "initializer got the wrong arg");
    for (int i = 0; i < N; i++) {
        cr_assert_eq(conc_future_result(fs[i], 0, NULL), 0);
        freef(fs[i]);
    }
    freepool(ex);
    cr_assert_eq(atomic_load(&inits), 3);
}

Test(executor, initializer_holds_for_tasks_run_while_waiting, .timeout = TU_TIMEOUT)
{
    /* Waiting for results (which may help run queued tasks) must still run
     * every task in an initialised worker. */
    reset_counters();
    atomic_store(&gate, 1);
    atomic_store(&inits, 0);
    atomic_store(&uninitialised_runs, 0);
    conc_thread_pool_opts_t o = {.max_workers = 2, .initializer = init_fn, .initarg = P(0x1234)};
    conc_executor_t *ex = mkpool_opts(&o);
    enum { N = 200 };
    conc_future_t *fs[N];
    for (int i = 0; i < N; i++)
        fs[i] = submit(ex, check_init_task, P(i));
    for (int i = 0; i < N; i++) {
        cr_assert_eq(conc_future_result(fs[i], 20, NULL), 0);
        freef(fs[i]);
    }
    cr_assert_eq(atomic_load(&uninitialised_runs), 0, "%d tasks ran where the initializer had not run",
                 atomic_load(&uninitialised_runs));
    freepool(ex);
    cr_assert_leq(atomic_load(&inits), 2);
}

static atomic_int failing_inits;
static void failing_init(void *arg)
{
    (void)arg;
    atomic_fetch_add(&failing_inits, 1);
    conc_fail(CONC_EINVAL, "initializer failed");
}

Test(executor, failing_initializer_breaks_pool, .timeout = TU_TIMEOUT)
{
    reset_counters();
    atomic_store(&failing_inits, 0);
    conc_thread_pool_opts_t o = {.max_workers = 2, .initializer = failing_init};
    /* Python logs "Exception in initializer:"; so does conc (on stderr) */
    FILE *tmp = tmpfile();
    cr_assert_not_null(tmp);
    fflush(stderr);
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    conc_executor_t *ex = mkpool_opts(&o);
    enum { N = 5 };
    conc_future_t *fs[N];
    int accepted = 0;
    for (int i = 0; i < N; i++) {
        conc_future_t *f = NULL;
        int rc = conc_submit(ex, &f, quick_task, P(i));
        cr_assert(rc == 0 || rc == CONC_EBROKEN, "submit = %d", rc);
        if (rc == 0)
            fs[accepted++] = f;
    }
    cr_assert_geq(accepted, 1, "the first submit cannot know yet");
    for (int i = 0; i < accepted; i++) {
        int rc = conc_future_result(fs[i], 20, NULL);
        cr_assert_eq(rc, CONC_EFAILED, "pending future of a broken pool: %d", rc);
        cr_assert(conc_future_done(fs[i]));
        /* BrokenThreadPool, carrying the initializer's code and message */
        int code = 0;
        const char *msg = NULL;
        cr_assert_eq(conc_future_exception(fs[i], 0, &code, &msg), 0);
        cr_assert_eq(code, CONC_EBROKEN);
        cr_assert_not_null(msg);
        cr_assert_not_null(strstr(msg, "BrokenThreadPool"), "message: %s", msg);
        cr_assert_not_null(strstr(msg, "initializer failed"), "message: %s", msg);
        cr_assert_not_null(strstr(msg, conc_errname(CONC_EINVAL)), "message: %s", msg);
        freef(fs[i]);
    }
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char out[2048] = "";
    rewind(tmp);
    size_t nout = fread(out, 1, sizeof out - 1, tmp);
    out[nout] = 0;
    fclose(tmp);
    cr_assert_not_null(strstr(out, "Exception in initializer:"), "stderr: %s", out);
    cr_assert_not_null(strstr(out, "initializer failed"), "stderr: %s", out);
    cr_assert_eq(atomic_load(&completed), 0, "a task ran in a broken pool");
    cr_assert_geq(atomic_load(&failing_inits), 1);
    conc_future_t *f = NULL;
    cr_assert_eq(conc_submit(ex, &f, quick_task, NULL), CONC_EBROKEN);
    cr_assert_null(f);
    void *args[2] = {P(1), P(2)}, *res[2];
    cr_assert_eq(conc_map(ex, square_task, args, 2, res, NULL), CONC_EBROKEN);
    cr_assert_eq(conc_executor_shutdown(ex, true, false), 0);
    freepool(ex);
    cr_assert_eq(atomic_load(&completed), 0);
}

static int start_order[64];
static atomic_int nstarted;
static void *order_task(void *arg)
{
    int k = atomic_fetch_add(&nstarted, 1);
    if (k < 64)
        start_order[k] = (int)U(arg);
    return arg;
}

Test(executor, one_worker_runs_tasks_in_submission_order, .timeout = TU_TIMEOUT)
{
    /* Python's pool takes work from one FIFO queue: with a single worker,
     * tasks submitted by one thread start in the order submitted */
    for (int round = 0; round < 20; round++) {
        atomic_store(&nstarted, 0);
        conc_executor_t *ex = mkpool(1);
        enum { N = 40 };
        conc_future_t *fs[N];
        for (int i = 0; i < N; i++)
            fs[i] = submit(ex, order_task, P(i));
        cr_assert(TU_WAIT_UNTIL(atomic_load(&nstarted) == N, 20));
        for (int i = 0; i < N; i++)
            freef(fs[i]);
        freepool(ex);
        char seq[N * 4 + 1];
        size_t len = 0;
        for (int i = 0; i < N; i++)
            len += (size_t)snprintf(seq + len, sizeof seq - len, "%d ", start_order[i]);
        for (int i = 0; i < N; i++)
            cr_assert_eq(start_order[i], i, "round %d: tasks started out of order: %s", round, seq);
    }
}

/* ---------------------------------------------------------------- shutdown */

static atomic_int slow_done;
static void *slow_task(void *arg)
{
    atomic_fetch_add(&started, 1);
    tu_sleep(0.3);
    atomic_fetch_add(&slow_done, 1);
    return arg;
}

Test(executor, shutdown_wait_waits_for_running_work, .timeout = TU_TIMEOUT)
{
    reset_counters();
    atomic_store(&slow_done, 0);
    conc_executor_t *ex = mkpool(2);
    conc_future_t *a = submit(ex, slow_task, P(1)), *b = submit(ex, slow_task, P(2));
    cr_assert(TU_WAIT_UNTIL(atomic_load(&started) == 2, 10));
    cr_assert_eq(conc_executor_shutdown(ex, true, false), 0);
    cr_assert_eq(atomic_load(&slow_done), 2, "shutdown(wait) returned before running work finished");
    cr_assert(conc_future_done(a));
    cr_assert(conc_future_done(b));
    cr_assert_eq(conc_executor_shutdown(ex, true, false), 0, "a second shutdown");
    cr_assert_eq(conc_executor_shutdown(ex, false, true), 0, "a third shutdown");
    freef(a);
    freef(b);
    freepool(ex);
}

Test(executor, shutdown_wait_runs_queued_work, .timeout = TU_TIMEOUT)
{
    /* shutdown(wait=True, cancel_futures=False) lets queued work finish */
    reset_counters();
    conc_executor_t *ex = mkpool(1);
    atomic_store(&gate, 1);
    enum { N = 10 };
    conc_future_t *fs[N];
    for (int i = 0; i < N; i++)
        fs[i] = submit(ex, quick_task, P(i));
    cr_assert_eq(conc_executor_shutdown(ex, true, false), 0);
    cr_assert_eq(atomic_load(&completed), N, "shutdown(wait) dropped queued work");
    for (int i = 0; i < N; i++) {
        cr_assert_eq(conc_future_result(fs[i], 0, NULL), 0);
        freef(fs[i]);
    }
    freepool(ex);
}

Test(executor, shutdown_without_wait, .timeout = TU_TIMEOUT)
{
    /* test_shutdown_no_wait: returns at once; the work still completes */
    reset_counters();
    conc_executor_t *ex = mkpool(1);
    conc_future_t *a = submit(ex, gate_task, P(1));
    conc_future_t *b = submit(ex, gate_task, P(2)); /* queued */
    cr_assert(TU_WAIT_UNTIL(atomic_load(&started) == 1, 10));
    double t = tu_now();
    cr_assert_eq(conc_executor_shutdown(ex, false, false), 0);
    cr_assert_lt(tu_now() - t, 5.0, "shutdown(wait=false) blocked");
    cr_assert_eq(atomic_load(&completed), 0);
    conc_future_t *f = NULL;
    cr_assert_eq(conc_submit(ex, &f, quick_task, NULL), CONC_ESHUTDOWN);
    cr_assert_null(f);
    atomic_store(&gate, 1);
    void *r;
    cr_assert_eq(conc_future_result(a, 20, &r), 0);
    cr_assert_eq(U(r), 1);
    cr_assert_eq(conc_future_result(b, 20, &r), 0, "queued work dropped by shutdown(wait=false)");
    cr_assert_eq(U(r), 2);
    freef(a);
    freef(b);
    freepool(ex);
}

static atomic_int cancelled_cbs;
static void cancelled_cb(conc_future_t *f, void *arg)
{
    (void)arg;
    if (conc_future_cancelled(f))
        atomic_fetch_add(&cancelled_cbs, 1);
}

static void open_gate_later(void *p, int i)
{
    (void)p;
    (void)i;
    tu_sleep(0.2);
    atomic_store(&gate, 1);
}

static void cancel_futures_case(bool wait)
{
    static tu_bunch_t b;
    reset_counters();
    atomic_store(&cancelled_cbs, 0);
    conc_executor_t *ex = mkpool(1);
    conc_future_t *a = submit(ex, gate_task, P(1));
    cr_assert(TU_WAIT_UNTIL(atomic_load(&started) == 1, 10));
    enum { N = 8 };
    conc_future_t *q[N];
    for (int i = 0; i < N; i++) {
        q[i] = submit(ex, quick_task, P(i));
        cr_assert_eq(conc_future_add_done_callback(q[i], cancelled_cb, NULL), 0);
    }
    if (wait)
        tu_bunch_start(&b, 1, open_gate_later, NULL);
    cr_assert_eq(conc_executor_shutdown(ex, wait, true), 0);
    if (wait) {
        cr_assert(conc_future_done(a), "shutdown(wait, cancel_futures) did not wait for the running task");
        tu_bunch_join(&b);
    }
    cr_assert_not(conc_future_cancelled(a), "cancel_futures cancelled running work");
    for (int i = 0; i < N; i++)
        cr_assert(conc_future_cancelled(q[i]), "queued future %d not cancelled", i);
    cr_assert_eq(atomic_load(&cancelled_cbs), N);
    atomic_store(&gate, 1);
    void *r;
    cr_assert_eq(conc_future_result(a, 20, &r), 0);
    cr_assert_eq(U(r), 1);
    freef(a);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(conc_future_result(q[i], 0, NULL), CONC_ECANCELLED);
        freef(q[i]);
    }
    freepool(ex);
    cr_assert_eq(atomic_load(&completed), 1, "a cancelled task ran");
}

Test(executor, shutdown_cancel_futures_without_wait, .timeout = TU_TIMEOUT) { cancel_futures_case(false); }

Test(executor, shutdown_cancel_futures_with_wait, .timeout = TU_TIMEOUT) { cancel_futures_case(true); }

Test(executor, submit_and_map_after_shutdown, .timeout = TU_TIMEOUT)
{
    conc_executor_t *ex = mkpool(2);
    conc_future_t *f = submit(ex, square_task, P(2));
    cr_assert_eq(conc_executor_shutdown(ex, true, false), 0);
    cr_assert_eq(conc_future_result(f, 0, NULL), 0);
    freef(f);
    f = NULL;
    cr_assert_eq(conc_submit(ex, &f, square_task, P(3)), CONC_ESHUTDOWN);
    cr_assert_null(f);
    void *args[2] = {P(1), P(2)}, *res[2];
    cr_assert_eq(conc_map(ex, square_task, args, 2, res, NULL), CONC_ESHUTDOWN);
    cr_assert_eq(conc_executor_shutdown(ex, true, true), 0);
    cr_assert_eq(conc_executor_shutdown(ex, false, false), 0);
    freepool(ex);
}

Test(executor, free_without_shutdown_runs_pending_work, .timeout = TU_TIMEOUT)
{
    /* `with ThreadPoolExecutor() as ex:` — free is shutdown(wait=True) */
    reset_counters();
    atomic_store(&slow_done, 0);
    conc_executor_t *ex = mkpool(2);
    for (int i = 0; i < 4; i++)
        freef(submit(ex, slow_task, P(i)));
    for (int i = 0; i < 20; i++)
        freef(submit(ex, quick_task, P(i)));
    freepool(ex);
    cr_assert_eq(atomic_load(&slow_done), 4);
    cr_assert_eq(atomic_load(&completed), 20);
}

/* a worker may not free its own pool */
static conc_executor_t *self_pool;
static void *free_own_pool_task(void *arg)
{
    (void)arg;
    return P((uintptr_t)(intptr_t)conc_executor_free(self_pool));
}

Test(executor, free_from_worker_is_eperm, .timeout = TU_TIMEOUT)
{
    self_pool = mkpool(2);
    conc_future_t *f = submit(self_pool, free_own_pool_task, NULL);
    void *r = NULL;
    cr_assert_eq(conc_future_result(f, 20, &r), 0);
    cr_assert_eq((int)(intptr_t)r, CONC_EPERM, "conc_executor_free from a worker returned %d", (int)(intptr_t)r);
    freef(f);
    /* the pool still works */
    f = submit(self_pool, square_task, P(6));
    cr_assert_eq(conc_future_result(f, 20, &r), 0);
    cr_assert_eq(U(r), 36);
    freef(f);
    freepool(self_pool);
}

/* ----------------------------------------------------------------- nested */

static conc_executor_t *nest_pool;
static atomic_int nest_failures;
static void *tree_task(void *arg)
{
    uintptr_t depth = U(arg);
    if (depth == 0)
        return P(1);
    conc_future_t *l = NULL, *r = NULL;
    if (conc_submit(nest_pool, &l, tree_task, P(depth - 1)) != 0 ||
        conc_submit(nest_pool, &r, tree_task, P(depth - 1)) != 0) {
        atomic_fetch_add(&nest_failures, 1);
        if (l)
            conc_future_free(l);
        return conc_fail(CONC_EFAILED, "submit failed");
    }
    void *a = NULL, *b = NULL;
    /* Untimed waits: a worker waiting without a timeout runs the queued
     * subtasks itself (timed waits keep Python's semantics and do not). */
    int ra = conc_future_result(l, CONC_FOREVER, &a);
    int rb = conc_future_result(r, CONC_FOREVER, &b);
    conc_future_free(l);
    conc_future_free(r);
    if (ra != 0 || rb != 0) {
        atomic_fetch_add(&nest_failures, 1);
        return conc_fail(ra ? ra : rb, "child failed or timed out");
    }
    return P(U(a) + U(b) + 1);
}

static void nested_case(size_t workers, uintptr_t depth)
{
    atomic_store(&nest_failures, 0);
    nest_pool = mkpool(workers);
    conc_future_t *f = submit(nest_pool, tree_task, P(depth));
    void *r = NULL;
    int rc = conc_future_result(f, 30, &r);
    cr_assert_eq(rc, 0, "nested tasks with %zu workers: result = %d (%s)", workers, rc,
                 rc == CONC_ETIMEDOUT ? "deadlock: waiting tasks do not let queued ones run" : "failed");
    cr_assert_eq(U(r), ((uintptr_t)1 << (depth + 1)) - 1);
    cr_assert_eq(atomic_load(&nest_failures), 0);
    freef(f);
    freepool(nest_pool);
}

Test(executor, nested_submit_and_wait_two_workers, .timeout = TU_TIMEOUT) { nested_case(2, 6); }

Test(executor, nested_submit_and_wait_one_worker, .timeout = TU_TIMEOUT) { nested_case(1, 4); }

/* Inline runs (a worker waiting untimed on a queued task of its own pool
 * runs it itself) use a context of their own per nesting depth, kept by
 * the worker and reused: each run must still look like a run on another
 * worker — its own RLock identity, a clean failure record — however many
 * runs reused that context before, and past the worker's cache of them. */
static conc_rlock_t inl_rlock;
static atomic_int inl_reentered, inl_stale_failure;
static void *inl_probe(void *arg)
{
    if (conc_failure(NULL) != 0)
        atomic_fetch_add(&inl_stale_failure, 1);
    if (conc_rlock_acquire(&inl_rlock, false, CONC_FOREVER) == 0) {
        atomic_fetch_add(&inl_reentered, 1); /* re-entered the waiter's RLock */
        conc_rlock_release(&inl_rlock);
    }
    if (U(arg) == 1)
        return conc_fail(CONC_ERANGE, "inline child fails");
    return P(7);
}
static void *inl_parent(void *arg)
{
    (void)arg;
    if (conc_rlock_acquire(&inl_rlock, true, CONC_FOREVER) != 0)
        return conc_fail(CONC_EFAILED, "rlock");
    uintptr_t bad = 0;
    for (int i = 0; i < 50; i++) {
        conc_future_t *c = NULL;
        if (conc_submit(nest_pool, &c, inl_probe, P(i % 3 == 1)) != 0) {
            bad++;
            break;
        }
        void *r = NULL;
        int rc = conc_future_result(c, CONC_FOREVER, &r);
        int code = 0;
        if (i % 3 == 1) {
            if (rc != CONC_EFAILED || conc_future_exception(c, 0, &code, NULL) != 0 || code != CONC_ERANGE)
                bad++;
        } else if (rc != 0 || U(r) != 7) {
            bad++;
        }
        conc_future_free(c);
    }
    /* the parent's own failure record is untouched by its children's */
    if (conc_failure(NULL) != 0)
        bad++;
    conc_rlock_release(&inl_rlock);
    return P(bad);
}

Test(executor, inline_runs_reused_context_is_fresh, .timeout = TU_TIMEOUT)
{
    atomic_store(&inl_reentered, 0);
    atomic_store(&inl_stale_failure, 0);
    cr_assert_eq(conc_rlock_init(&inl_rlock), 0);
    nest_pool = mkpool(1); /* the only worker runs every child inline */
    for (int round = 0; round < 2; round++) {
        conc_future_t *f = submit(nest_pool, inl_parent, NULL);
        void *r = P(99);
        cr_assert_eq(conc_future_result(f, 30, &r), 0);
        cr_assert_eq(U(r), 0, "%lu inline children saw a wrong outcome", (unsigned long)U(r));
        freef(f);
    }
    freepool(nest_pool);
    cr_assert_eq(atomic_load(&inl_reentered), 0, "an inline child re-entered its waiter's RLock");
    cr_assert_eq(atomic_load(&inl_stale_failure), 0, "an inline child started with a failure set");
}

/* A chain of tasks each waiting on the next, deeper than the contexts a
 * worker keeps for inline runs: the runs past the cache still work, on
 * one worker (where every wait runs the next link inline) and on two. */
static void *chain_task(void *arg)
{
    uintptr_t d = U(arg);
    if (d == 0)
        return P(1);
    conc_future_t *c = NULL;
    if (conc_submit(nest_pool, &c, chain_task, P(d - 1)) != 0)
        return conc_fail(CONC_EFAILED, "submit");
    void *r = NULL;
    int rc = conc_future_result(c, CONC_FOREVER, &r);
    conc_future_free(c);
    if (rc != 0)
        return conc_fail(rc, "link failed");
    return P(U(r) + 1);
}

Test(executor, nested_chain_deeper_than_inline_cache, .timeout = TU_TIMEOUT)
{
    for (size_t workers = 1; workers <= 2; workers++) {
        nest_pool = mkpool(workers);
        for (int k = 0; k < 3; k++) {
            conc_future_t *f = submit(nest_pool, chain_task, P(100));
            void *r = NULL;
            cr_assert_eq(conc_future_result(f, 30, &r), 0, "chain of 100 on %zu workers", workers);
            cr_assert_eq(U(r), 101);
            freef(f);
        }
        freepool(nest_pool);
    }
}

/* A worker that runs a waited-on task inline takes it out of its own
 * deque when it is the newest entry, and drops the finished or cancelled
 * entries below it; a cancelled one is notified then (wait() counts it
 * as done) and never runs; a pending one above is left queued, not run. */
static atomic_int drop_ran[3];
static void *drop_child(void *arg)
{
    atomic_fetch_add(&drop_ran[U(arg)], 1);
    return P(U(arg) + 10);
}
static void *drop_parent(void *arg)
{
    (void)arg;
    conc_future_t *keep = NULL, *gone = NULL, *last = NULL;
    uintptr_t bad = 0;
    if (conc_submit(nest_pool, &keep, drop_child, P(0)) != 0 || conc_submit(nest_pool, &gone, drop_child, P(1)) != 0 ||
        conc_submit(nest_pool, &last, drop_child, P(2)) != 0)
        return conc_fail(CONC_EFAILED, "submit");
    bad += !conc_future_cancel(gone); /* queued on our one worker: cancels */
    void *r = NULL;
    bad += conc_future_result(last, CONC_FOREVER, &r) != 0 || U(r) != 12; /* runs inline */
    /* the cancelled entry below it is dropped and notified by now */
    conc_future_t *fs[1] = {gone}, *done[1];
    size_t ndone = 0;
    bad += conc_wait(fs, 1, 0, CONC_ALL_COMPLETED, done, &ndone, NULL, NULL) != 0 || ndone != 1;
    /* keep is still pending: not run by the wait on last */
    bad += conc_future_state(keep) != CONC_FUTURE_PENDING;
    bad += conc_future_result(keep, CONC_FOREVER, &r) != 0 || U(r) != 10;
    bad += conc_future_result(gone, CONC_FOREVER, &r) != CONC_ECANCELLED;
    conc_future_free(keep);
    conc_future_free(gone);
    conc_future_free(last);
    return P(bad);
}

Test(executor, inline_run_drops_stale_entries, .timeout = TU_TIMEOUT)
{
    for (int i = 0; i < 3; i++)
        atomic_store(&drop_ran[i], 0);
    nest_pool = mkpool(1);
    conc_future_t *f = submit(nest_pool, drop_parent, NULL);
    void *r = P(99);
    cr_assert_eq(conc_future_result(f, 30, &r), 0);
    cr_assert_eq(U(r), 0, "%lu checks failed in the worker", (unsigned long)U(r));
    freef(f);
    freepool(nest_pool);
    cr_assert_eq(atomic_load(&drop_ran[0]), 1);
    cr_assert_eq(atomic_load(&drop_ran[1]), 0, "a cancelled task ran");
    cr_assert_eq(atomic_load(&drop_ran[2]), 1);
}

/* A cancelled entry below a pending one survives the tidy-up after the
 * first inline run (the tidy stops at the pending one); the next inline
 * run, which takes that pending one, must still drop and notify it, though
 * no cancel happened since the first tidy: wait() with no time to wait
 * then counts it as done. */
static void *drop_deep_parent(void *arg)
{
    uintptr_t shape = U(arg); /* 0: mid waited on as the newest entry; 1: via the two-deep path */
    conc_future_t *gone = NULL, *mid = NULL, *last = NULL;
    uintptr_t bad = 0;
    if (conc_submit(nest_pool, &gone, drop_child, P(1)) != 0 || conc_submit(nest_pool, &mid, drop_child, P(0)) != 0 ||
        conc_submit(nest_pool, &last, drop_child, P(2)) != 0)
        return conc_fail(CONC_EFAILED, "submit");
    bad += !conc_future_cancel(gone); /* queued on our one worker: cancels */
    void *r = NULL;
    if (shape == 0) {
        bad += conc_future_result(last, CONC_FOREVER, &r) != 0 || U(r) != 12; /* tidy stops at mid */
        bad += conc_future_result(mid, CONC_FOREVER, &r) != 0 || U(r) != 10;  /* newest now */
    } else {
        bad += conc_future_result(mid, CONC_FOREVER, &r) != 0 || U(r) != 10; /* under last: tidy stops at last */
        bad += conc_future_result(last, CONC_FOREVER, &r) != 0 || U(r) != 12;
    }
    conc_future_t *fs[1] = {gone}, *done[1];
    size_t ndone = 0;
    bad += (conc_wait(fs, 1, 0, CONC_ALL_COMPLETED, done, &ndone, NULL, NULL) != 0 || ndone != 1) * 100;
    bad += conc_future_result(gone, CONC_FOREVER, &r) != CONC_ECANCELLED;
    conc_future_free(gone);
    conc_future_free(mid);
    conc_future_free(last);
    return P(bad);
}

Test(executor, inline_run_drops_cancelled_entries_under_pending_ones, .timeout = TU_TIMEOUT)
{
    for (uintptr_t shape = 0; shape < 2; shape++) {
        for (int i = 0; i < 3; i++)
            atomic_store(&drop_ran[i], 0);
        nest_pool = mkpool(1);
        conc_future_t *f = submit(nest_pool, drop_deep_parent, P(shape));
        void *r = P(99);
        cr_assert_eq(conc_future_result(f, 30, &r), 0);
        cr_assert_eq(U(r), 0, "shape %lu: checks failed in the worker (%lu; 100: the cancelled one not notified)",
                     (unsigned long)shape, (unsigned long)U(r));
        freef(f);
        freepool(nest_pool);
        cr_assert_eq(atomic_load(&drop_ran[1]), 0, "a cancelled task ran");
        cr_assert_eq(atomic_load(&drop_ran[0]), 1);
        cr_assert_eq(atomic_load(&drop_ran[2]), 1);
    }
}

/* Two subtasks submitted, the first waited on first (the usual fork-join
 * shape): the wait takes the first out from under the second, runs it
 * inline and puts the second back, still queued — not run by that wait,
 * cancellable, and stealable by another worker while the first runs. */
static atomic_int pair_ran[2], pair_b_started, pair_a_inline;
static atomic_long pair_parent_tid;
static void *pair_child(void *arg)
{
    uintptr_t which = U(arg) & 1, wait_for_b = U(arg) >> 1;
    atomic_fetch_add(&pair_ran[which], 1);
    if (which == 1)
        atomic_store(&pair_b_started, 1);
    /* Only when the parent's wait runs us (inline, on its thread): the
     * idle worker may have stolen us instead (mode 3, or a busy machine),
     * and then the parent, blocked on us, is the only one that could run
     * the second — waiting for it here would deadlock. */
    if (wait_for_b && tu_gettid() == atomic_load(&pair_parent_tid)) {
        atomic_store(&pair_a_inline, 1);
        if (!TU_WAIT_UNTIL(atomic_load(&pair_b_started), 20))
            return conc_fail(CONC_ETIMEDOUT, "the put-back sibling was never stolen");
    }
    return P(which + 20);
}
static void *pair_parent(void *arg)
{
    uintptr_t mode = U(arg); /* 0: run both inline, 1: cancel the second, 2: the second is stolen,
                                3: the first is stolen before the second is submitted */
    conc_future_t *a = NULL, *b = NULL;
    uintptr_t bad = 0;
    atomic_store(&pair_parent_tid, tu_gettid());
    if (conc_submit(nest_pool, &a, pair_child, P(mode >= 2 ? 2 : 0)) != 0)
        return conc_fail(CONC_EFAILED, "submit");
    if (mode == 3 && !TU_WAIT_UNTIL(atomic_load(&pair_ran[0]), 20)) /* the idle worker took it */
        bad++;
    if (conc_submit(nest_pool, &b, pair_child, P(1)) != 0)
        return conc_fail(CONC_EFAILED, "submit");
    void *r = NULL;
    bad += conc_future_result(a, CONC_FOREVER, &r) != 0 || U(r) != 20;
    if (mode == 0) {
        bad += conc_future_state(b) != CONC_FUTURE_PENDING; /* not run by the wait on a */
        bad += atomic_load(&pair_ran[1]) != 0;
        bad += conc_future_result(b, CONC_FOREVER, &r) != 0 || U(r) != 21; /* runs inline now */
    } else if (mode == 1) {
        bad += !conc_future_cancel(b); /* still queued: cancels */
        bad += conc_future_result(b, CONC_FOREVER, &r) != CONC_ECANCELLED;
    } else {
        bad += conc_future_result(b, CONC_FOREVER, &r) != 0 || U(r) != 21;
    }
    conc_future_free(a);
    conc_future_free(b);
    return P(bad);
}
static atomic_int warm_n;
static void *warm_task(void *arg)
{
    (void)arg;
    atomic_fetch_add(&warm_n, 1);
    TU_WAIT_UNTIL(atomic_load(&warm_n) >= 2, 20);
    return NULL;
}

Test(executor, inline_run_of_the_second_newest_entry, .timeout = TU_TIMEOUT)
{
    for (uintptr_t mode = 0, tries = 0; mode < 4; mode++) {
        atomic_store(&pair_ran[0], 0);
        atomic_store(&pair_ran[1], 0);
        atomic_store(&pair_b_started, 0);
        atomic_store(&pair_a_inline, 0);
        nest_pool = mkpool(mode >= 2 ? 2 : 1);
        if (mode >= 2) { /* both workers up: the idle one steals the put-back entry */
            atomic_store(&warm_n, 0);
            conc_future_t *w1 = submit(nest_pool, warm_task, NULL), *w2 = submit(nest_pool, warm_task, NULL);
            cr_assert_eq(conc_future_result(w1, 30, NULL), 0);
            cr_assert_eq(conc_future_result(w2, 30, NULL), 0);
            freef(w1);
            freef(w2);
        }
        conc_future_t *f = submit(nest_pool, pair_parent, P(mode));
        void *r = P(99);
        cr_assert_eq(conc_future_result(f, 30, &r), 0, "mode %lu", (unsigned long)mode);
        cr_assert_eq(U(r), 0, "mode %lu: %lu checks failed in the worker", (unsigned long)mode, (unsigned long)U(r));
        freef(f);
        freepool(nest_pool);
        cr_assert_eq(atomic_load(&pair_ran[0]), 1, "mode %lu", (unsigned long)mode);
        cr_assert_eq(atomic_load(&pair_ran[1]), mode == 1 ? 0 : 1, "mode %lu", (unsigned long)mode);
        if (mode == 2 && !atomic_load(&pair_a_inline) && ++tries < 50)
            mode--; /* the idle worker stole the first before the wait took it: again */
    }
    cr_assert_eq(atomic_load(&pair_a_inline), 0, "mode 3: the first was run inline, not stolen");
}

/* An inline run drops the pool's reference in the CAS that publishes the
 * outcome when nobody waits on the future, after waking the waiters and
 * running the callbacks otherwise. Other holders of references — a done
 * callback, a thread that lets go of its reference while the run goes on
 * — see each outcome once and every future freed once (ASan checks). */
static atomic_int ref_cb_runs;
static void ref_cb(conc_future_t *f, void *arg)
{
    (void)arg;
    void *r = NULL;
    if (conc_future_result(f, 0, &r) == 0 && U(r) == 5)
        atomic_fetch_add(&ref_cb_runs, 1);
}
static void *ref_child(void *arg)
{
    for (volatile uintptr_t i = 0; i < U(arg); i++) {
    }
    return P(5);
}
static void *ref_dropper(void *arg)
{
    conc_future_t *f = arg;
    sched_yield();
    conc_future_free(f);
    return NULL;
}
static void *ref_parent(void *arg)
{
    uintptr_t n = U(arg), bad = 0;
    for (uintptr_t i = 0; i < n; i++) {
        conc_future_t *c = NULL;
        if (conc_submit(nest_pool, &c, ref_child, P(i % 7 * 50)) != 0)
            return conc_fail(CONC_EFAILED, "submit");
        bool cb = i % 2 == 1, other = i % 3 != 0;
        if (cb && conc_future_add_done_callback(c, ref_cb, NULL) != 0)
            bad++;
        pthread_t th;
        bool started = other && pthread_create(&th, NULL, ref_dropper, conc_future_ref(c)) == 0;
        if (other && !started)
            conc_future_free(c); /* the reference the thread would have dropped */
        void *r = NULL;
        bad += conc_future_result(c, CONC_FOREVER, &r) != 0 || U(r) != 5;
        if (started)
            pthread_join(th, NULL);
        conc_future_free(c);
    }
    return P(bad);
}

Test(executor, inline_run_drops_the_pool_reference_once, .timeout = TU_TIMEOUT)
{
    long n = tu_iters(300);
    atomic_store(&ref_cb_runs, 0);
    nest_pool = mkpool(1);
    conc_future_t *f = submit(nest_pool, ref_parent, P(n));
    void *r = P(99);
    cr_assert_eq(conc_future_result(f, 30, &r), 0);
    cr_assert_eq(U(r), 0, "%lu checks failed in the worker", (unsigned long)U(r));
    freef(f);
    freepool(nest_pool);
    cr_assert_eq(atomic_load(&ref_cb_runs), n / 2, "done callbacks: %d of %ld", atomic_load(&ref_cb_runs), n / 2);
}

/* A worker waiting untimed on a task another worker runs now keeps its
 * CPU awake for a while (spinning and yielding) before it sleeps: it gets
 * the result whether the task ends during that time or long after (the
 * sleep then takes over), and a timeout scope open in the waiting task
 * still cuts the wait at the scope's deadline. */
static atomic_int wr_started;
static void *wr_sleeper(void *arg)
{
    atomic_fetch_add(&wr_started, 1);
    tu_sleep((double)U(arg) / 1000.0);
    return P(U(arg) + 1);
}
static void *wr_waiter(void *arg)
{
    uintptr_t ms = U(arg) & 0xffff, scoped = U(arg) >> 16;
    conc_future_t *c = NULL;
    if (conc_submit(nest_pool, &c, wr_sleeper, P(ms)) != 0)
        return conc_fail(CONC_EFAILED, "submit");
    /* wait until the other worker has taken it: then it runs, and this
     * wait cannot run it inline */
    double dl = tu_now() + 10;
    while (conc_future_state(c) == CONC_FUTURE_PENDING && tu_now() < dl)
        sched_yield();
    void *r = NULL;
    int rc;
    double t = tu_now();
    if (scoped) {
        conc_timeout_begin(0.05);
        rc = conc_future_result(c, CONC_FOREVER, &r);
        conc_timeout_end();
    } else {
        rc = conc_future_result(c, CONC_FOREVER, &r);
    }
    double dt = tu_now() - t;
    uintptr_t bad = 0;
    if (scoped) {
        bad += rc != CONC_ETIMEDOUT;
        bad += dt > 0.05 + TU_SLACK;
        bad += conc_future_result(c, CONC_FOREVER, &r) != 0 || U(r) != ms + 1;
    } else {
        bad += rc != 0 || U(r) != ms + 1;
    }
    conc_future_free(c);
    return P(bad);
}

Test(executor, worker_waits_on_running_task, .timeout = TU_TIMEOUT)
{
    nest_pool = mkpool(2);
    /* short (ends while the waiter spins), long (ends after it slept),
     * and long with a 50 ms timeout scope open in the waiter */
    uintptr_t cases[] = {1, 300, 300 | (1u << 16)};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        atomic_store(&wr_started, 0);
        conc_future_t *f = submit(nest_pool, wr_waiter, P(cases[i]));
        void *r = P(99);
        cr_assert_eq(conc_future_result(f, 30, &r), 0);
        cr_assert_eq(U(r), 0, "case %zu: %lu checks failed in the worker", i, (unsigned long)U(r));
        cr_assert_eq(atomic_load(&wr_started), 1);
        freef(f);
    }
    freepool(nest_pool);
}

/* The same wait from a green thread on a worker's hub parks only that
 * green thread (no spinning: the hub's other green threads must run), so
 * a kill, or a timeout scope opened in it, cuts it short. */
typedef struct {
    conc_future_t *c;
    double scope;      /* > 0: wait inside a timeout scope of that length */
    atomic_int rc;
} gwr_t;
static void *gwr_green(void *arg)
{
    gwr_t *g = arg;
    if (g->scope > 0)
        conc_timeout_begin(g->scope);
    atomic_store(&g->rc, conc_future_result(g->c, CONC_FOREVER, NULL));
    if (g->scope > 0)
        conc_timeout_end();
    return NULL;
}
static void *gwr_worker_task(void *arg)
{
    uintptr_t bad = 0;
    for (int mode = 0; mode < 2; mode++) { /* 0: kill, 1: timeout scope */
        gwr_t g = {.scope = mode ? 0.05 : 0};
        atomic_store(&g.rc, 99);
        if (conc_submit(nest_pool, &g.c, wr_sleeper, P(400)) != 0)
            return conc_fail(CONC_EFAILED, "submit");
        double dl = tu_now() + 10;
        while (conc_future_state(g.c) == CONC_FUTURE_PENDING && tu_now() < dl)
            sched_yield(); /* the other worker runs it now */
        conc_green_t *gt = NULL;
        if (conc_go(&gt, gwr_green, &g) != 0)
            return conc_fail(CONC_EFAILED, "go");
        double t = tu_now();
        if (mode == 0) {
            conc_sleep(0.03); /* lets the green thread start its wait */
            bad += conc_green_kill(gt, true, 5.0) != 0;
        } else {
            bad += conc_green_join(gt, 5.0) != 0;
        }
        double dt = tu_now() - t;
        bad += conc_green_join(gt, 5.0) != 0;
        conc_green_free(gt);
        bad += atomic_load(&g.rc) != (mode == 0 ? CONC_EKILLED : CONC_ETIMEDOUT);
        bad += dt > 0.05 + TU_SLACK; /* cut, not waited out (400 ms) */
        bad += conc_future_result(g.c, CONC_FOREVER, NULL) != 0;
        conc_future_free(g.c);
        (void)arg;
    }
    return P(bad);
}

Test(executor, green_waiter_in_worker_cut_by_kill_and_scope, .timeout = TU_TIMEOUT)
{
    nest_pool = mkpool(2);
    conc_future_t *f = submit(nest_pool, gwr_worker_task, NULL);
    void *r = P(99);
    cr_assert_eq(conc_future_result(f, 30, &r), 0);
    cr_assert_eq(U(r), 0, "%lu checks failed in the worker", (unsigned long)U(r));
    freef(f);
    freepool(nest_pool);
}

/* A timed wait inside a worker must keep its timeout, even when the
 * library lets waiting workers run queued tasks: helping with a task that
 * takes longer than the timeout overruns it. */
static atomic_int long_task_release;
static void *long_task(void *arg)
{
    double dl = tu_now() + 10;
    while (!atomic_load(&long_task_release) && tu_now() < dl)
        tu_sleep(0.001);
    return arg;
}
static conc_executor_t *timed_pool;
static double timed_dt[3];
static atomic_int timed_rc[3];
static void *timed_wait_in_worker(void *arg)
{
    (void)arg;
    conc_future_t *never = NULL, *slow = NULL;
    if (conc_future_new(&never) != 0 || conc_submit(timed_pool, &slow, long_task, NULL) != 0)
        return conc_fail(CONC_EFAILED, "setup");
    double t = tu_now();
    atomic_store(&timed_rc[0], conc_future_result(never, 0.1, NULL));
    timed_dt[0] = tu_now() - t;
    t = tu_now();
    atomic_store(&timed_rc[1], conc_future_result(never, 0, NULL));
    timed_dt[1] = tu_now() - t;
    /* and on the queued slow task itself: time out, do not run it inline */
    t = tu_now();
    atomic_store(&timed_rc[2], conc_future_result(slow, 0.1, NULL));
    timed_dt[2] = tu_now() - t;
    atomic_store(&long_task_release, 1);
    conc_future_free(never);
    /* not waited for here: queued behind this task on the pool's one
     * worker, it runs (at once, released) after this task returns; a wait
     * here only timed out, 20 s later */
    conc_future_free(slow);
    return NULL;
}

Test(executor, timed_wait_in_worker_keeps_its_timeout, .timeout = TU_TIMEOUT)
{
    atomic_store(&long_task_release, 0);
    timed_pool = mkpool(1); /* the queued slow task can only run if the waiter runs it */
    conc_future_t *f = submit(timed_pool, timed_wait_in_worker, NULL);
    cr_assert_eq(conc_future_result(f, 30, NULL), 0);
    freef(f);
    freepool(timed_pool);
    cr_assert_eq(atomic_load(&timed_rc[0]), CONC_ETIMEDOUT);
    cr_assert_eq(atomic_load(&timed_rc[1]), CONC_ETIMEDOUT);
    cr_assert_lt(timed_dt[0], 0.1 + TU_SLACK,
                 "result(timeout=0.1) in a worker took %.2fs (it ran a queued task meanwhile)", timed_dt[0]);
    cr_assert_lt(timed_dt[1], TU_SLACK, "result(timeout=0) in a worker took %.2fs (it ran a queued task)",
                 timed_dt[1]);
    cr_assert_lt(timed_dt[2], 0.1 + TU_SLACK,
                 "result(timeout=0.1) on a queued 10 s task in a worker took %.2fs (it ran the task inline)",
                 timed_dt[2]);
    cr_assert_eq(atomic_load(&timed_rc[2]), CONC_ETIMEDOUT, "result(timeout=0.1) on a queued 10 s task = %d",
                 atomic_load(&timed_rc[2]));
}

/* -------------------------------------------------------------------- map */

static atomic_int map_runs[64];
static void *map_item(void *arg)
{
    uintptr_t i = U(arg);
    atomic_fetch_add(&map_runs[i], 1);
    tu_sleep(0.001 * (double)((37 * i) % 7)); /* finish out of order */
    return P(i * 10 + 1);
}

Test(executor, map_results_in_order, .timeout = TU_TIMEOUT)
{
    memset(map_runs, 0, sizeof map_runs);
    conc_executor_t *ex = mkpool(4);
    enum { N = 60 };
    void *args[N], *res[N];
    for (int i = 0; i < N; i++) {
        args[i] = P(i);
        res[i] = NULL;
    }
    cr_assert_eq(conc_map(ex, map_item, args, N, res, NULL), 0);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(U(res[i]), (uintptr_t)i * 10 + 1, "results[%d] = %lu", i, (unsigned long)U(res[i]));
        cr_assert_eq(atomic_load(&map_runs[i]), 1);
    }
    /* with options and no timeout */
    conc_map_opts_t o = {.timeout = CONC_FOREVER};
    size_t fi = 12345;
    o.failed_index = &fi;
    cr_assert_eq(conc_map(ex, square_task, args, N, res, &o), 0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(U(res[i]), (uintptr_t)i * i);
    freepool(ex);
}

static void *map_gated_item(void *arg)
{
    uintptr_t i = U(arg);
    atomic_fetch_add(&map_runs[i], 1);
    if (i == 2)
        gate_wait();
    return P(i + 100);
}

Test(executor, map_timeout_cancels_unstarted, .timeout = TU_TIMEOUT)
{
    /* test_map_timeout: items 0 and 1 finish, 2 blocks, the rest wait */
    memset(map_runs, 0, sizeof map_runs);
    atomic_store(&gate, 0);
    conc_executor_t *ex = mkpool(1);
    enum { N = 8 };
    void *args[N], *res[N];
    for (int i = 0; i < N; i++) {
        args[i] = P(i);
        res[i] = NULL;
    }
    size_t fi = 999;
    conc_map_opts_t o = {.timeout = 0.3, .failed_index = &fi};
    double t = tu_now();
    int rc = conc_map(ex, map_gated_item, args, N, res, &o);
    double dt = tu_now() - t;
    atomic_store(&gate, 1);
    cr_assert_eq(rc, CONC_ETIMEDOUT, "map = %d", rc);
    tu_assert_timeout(dt, 0.3);
    cr_assert_eq(fi, 2, "failed_index %zu, expected the item that timed out (2)", fi);
    cr_assert_eq(U(res[0]), 100);
    cr_assert_eq(U(res[1]), 101);
    freepool(ex);
    cr_assert_eq(atomic_load(&map_runs[2]), 1);
    for (int i = 3; i < N; i++)
        cr_assert_eq(atomic_load(&map_runs[i]), 0, "item %d ran after map timed out", i);
}

Test(executor, map_timeout_zero_while_saturated, .timeout = TU_TIMEOUT)
{
    /* test_executor_map_current_future_cancel */
    memset(map_runs, 0, sizeof map_runs);
    reset_counters();
    conc_executor_t *ex = mkpool(1);
    conc_future_t *blocker = submit(ex, gate_task, NULL);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&started) == 1, 10));
    void *args[2] = {P(3), P(4)}, *res[2];
    conc_map_opts_t o = {.timeout = 0, .has_timeout = true};
    double t = tu_now();
    cr_assert_eq(conc_map(ex, map_gated_item, args, 2, res, &o), CONC_ETIMEDOUT);
    cr_assert_lt(tu_now() - t, 5.0);
    atomic_store(&gate, 1);
    cr_assert_eq(conc_future_result(blocker, 20, NULL), 0);
    freef(blocker);
    freepool(ex);
    cr_assert_eq(atomic_load(&map_runs[3]), 0, "item ran after map timed out");
    cr_assert_eq(atomic_load(&map_runs[4]), 0, "item ran after map timed out");
}

static void *map_fail_item(void *arg)
{
    uintptr_t i = U(arg);
    atomic_fetch_add(&map_runs[i], 1);
    if (i == 2)
        return conc_fail(CONC_ERANGE, "item %d", (int)i);
    if (i > 2)
        tu_sleep(0.2);
    return P(i + 1);
}

Test(executor, map_failure_cancels_later_items, .timeout = TU_TIMEOUT)
{
    memset(map_runs, 0, sizeof map_runs);
    conc_executor_t *ex = mkpool(1);
    enum { N = 12 };
    void *args[N], *res[N];
    for (int i = 0; i < N; i++)
        args[i] = P(i);
    size_t fi = 999;
    conc_map_opts_t o = {.timeout = CONC_FOREVER, .failed_index = &fi};
    conc_future_t *failed = NULL;
    o.failed_future = &failed;
    int rc = conc_map(ex, map_fail_item, args, N, res, &o);
    cr_assert_eq(rc, CONC_EFAILED, "map = %d", rc);
    cr_assert_eq(fi, 2);
    cr_assert_not_null(failed);
    int code = 0;
    const char *msg = NULL;
    cr_assert_eq(conc_future_exception(failed, 0, &code, &msg), 0);
    cr_assert_eq(code, CONC_ERANGE);
    cr_assert_str_eq(msg, "item 2");
    freef(failed);
    cr_assert_eq(U(res[0]), 1);
    cr_assert_eq(U(res[1]), 2);
    freepool(ex);
    int later = 0;
    for (int i = 3; i < N; i++)
        later += atomic_load(&map_runs[i]);
    /* each later item takes 0.2 s; at most the one or two that started
     * before map saw the failure may have run */
    cr_assert_leq(later, 2, "%d of the %d items after the failure ran (not cancelled)", later, N - 3);
}

static void *map_first_fail_item(void *arg)
{
    uintptr_t i = U(arg);
    if (i == 0) {
        tu_sleep(0.3);
        return conc_fail(CONC_EEOF, "first");
    }
    if (i == 1)
        return conc_fail(CONC_ERANGE, "second");
    return arg;
}

Test(executor, map_reports_first_failure_in_submission_order, .timeout = TU_TIMEOUT)
{
    conc_executor_t *ex = mkpool(2);
    void *args[4] = {P(0), P(1), P(2), P(3)}, *res[4];
    size_t fi = 999;
    conc_map_opts_t o = {.timeout = CONC_FOREVER, .failed_index = &fi};
    int rc = conc_map(ex, map_first_fail_item, args, 4, res, &o);
    cr_assert_eq(rc, CONC_EFAILED, "map = %d", rc);
    cr_assert_eq(fi, 0, "not the first item's failure");
    freepool(ex);
}

static atomic_int prog_calls, prog_bad;
static size_t prog_last;
static long prog_tid;
static void progress(size_t done, size_t total, void *arg)
{
    int k = atomic_fetch_add(&prog_calls, 1);
    if (arg != P(0xabc) || total != 25 || done != (size_t)k + 1 || done <= prog_last ||
        tu_gettid() != prog_tid)
        atomic_fetch_add(&prog_bad, 1);
    prog_last = done;
}

Test(executor, map_progress, .timeout = TU_TIMEOUT)
{
    memset(map_runs, 0, sizeof map_runs);
    atomic_store(&prog_calls, 0);
    atomic_store(&prog_bad, 0);
    prog_last = 0;
    prog_tid = tu_gettid();
    conc_executor_t *ex = mkpool(3);
    enum { N = 25 };
    void *args[N], *res[N];
    for (int i = 0; i < N; i++)
        args[i] = P(i);
    conc_map_opts_t o = {.timeout = CONC_FOREVER, .progress = progress, .progress_arg = P(0xabc)};
    cr_assert_eq(conc_map(ex, map_item, args, N, res, &o), 0);
    cr_assert_eq(atomic_load(&prog_calls), N, "progress called %d times for %d items", atomic_load(&prog_calls),
                 N);
    cr_assert_eq(atomic_load(&prog_bad), 0,
                 "progress got a wrong total/arg, a non-increasing done count, or ran off the mapping thread");
    cr_assert_eq(prog_last, N);
    for (int i = 0; i < N; i++)
        cr_assert_eq(U(res[i]), (uintptr_t)i * 10 + 1);
    freepool(ex);
}

/* ------------------------------------------------------ process exit */

static void *exit_writer(void *arg)
{
    tu_sleep(0.1);
    char line[32];
    int n = snprintf(line, sizeof line, "task %d\n", (int)U(arg));
    if (write(1, line, (size_t)n) != n)
        return NULL;
    return NULL;
}

static int scenario(const char *name)
{
    if (strcmp(name, "exit_joins_pool") == 0) {
        conc_executor_t *ex;
        conc_thread_pool_opts_t o = {.max_workers = 1};
        if (conc_thread_pool_new(&ex, &o) != 0)
            return 2;
        for (int i = 0; i < 3; i++) {
            conc_future_t *f;
            if (conc_submit(ex, &f, exit_writer, P(i)) != 0)
                return 3;
            conc_future_free(f);
        }
        return 0; /* the pool is still alive: exit shuts it down and joins */
    }
    return 99;
}

TU_MAIN_WITH_SCENARIOS(scenario)

Test(executor, process_exit_joins_live_pool, .timeout = TU_TIMEOUT)
{
    /* test_interpreter_shutdown */
    char out[256];
    double secs;
    int st = tu_run_scenario("exit_joins_pool", out, sizeof out, &secs);
    cr_assert(WIFEXITED(st), "child status %#x", st);
    cr_assert_eq(WEXITSTATUS(st), 0);
    cr_assert_str_eq(out, "task 0\ntask 1\ntask 2\n", "at exit the pool's work was dropped: '%s'", out);
    cr_assert_lt(secs, 20.0);
}

/* ------------------------------------------------ issue 12, sections 4-5 */

static void *fails_timed_out(void *arg)
{
    (void)arg;
    return conc_fail(CONC_ETIMEDOUT, "the task's own timeout");
}

Test(executor, map_task_timeout_is_not_map_timeout, .timeout = TU_TIMEOUT)
{
    conc_executor_t *ex = mkpool(2);
    void *args[3] = {P(0), P(1), P(2)}, *res[3];
    conc_future_t *failed = NULL;
    size_t fi = 99;
    conc_map_opts_t o = {.timeout = 30, .failed_index = &fi, .failed_future = &failed};
    int rc = conc_map(ex, fails_timed_out, args, 3, res, &o);
    cr_assert_eq(rc, CONC_EFAILED, "map = %d (CONC_ETIMEDOUT would mean the map's own timeout)", rc);
    cr_assert_eq(fi, 0);
    int code = 0;
    cr_assert_eq(conc_future_exception(failed, 0, &code, NULL), 0);
    cr_assert_eq(code, CONC_ETIMEDOUT);
    freef(failed);
    freepool(ex);
}

static void *tid_task(void *arg)
{
    (void)arg;
    return P(tu_gettid());
}

Test(executor, idle_thread_reuse, .timeout = TU_TIMEOUT)
{
    /* CPython test_thread_pool.test_idle_thread_reuse (Python 3.8+'s
     * _idle_semaphore): back-to-back submit().result() use one worker */
    for (int round = 0; round < 20; round++) {
        conc_executor_t *ex = mkpool(0);
        void *t[3];
        for (int i = 0; i < 3; i++) {
            conc_future_t *f = submit(ex, tid_task, NULL);
            cr_assert_eq(conc_future_result(f, 20, &t[i]), 0);
            freef(f);
        }
        cr_assert(t[0] == t[1] && t[1] == t[2], "round %d: three submit/result pairs ran on %s threads (%ld %ld %ld)", round,
                  t[0] == t[1] || t[1] == t[2] || t[0] == t[2] ? "two" : "three", (long)U(t[0]), (long)U(t[1]), (long)U(t[2]));
        freepool(ex);
    }
}

static atomic_int gate2;
static void *gate2_task(void *arg)
{
    double dl = tu_now() + 20;
    while (!atomic_load(&gate2) && tu_now() < dl)
        tu_sleep(0.001);
    return arg;
}

Test(executor, shutdown_cancel_futures_notifies_waiters, .timeout = TU_TIMEOUT)
{
    /* futures cancelled by shutdown(cancel_futures) are dropped by the
     * pool: they are CANCELLED_AND_NOTIFIED, so wait() counts them done */
    atomic_store(&gate2, 0);
    conc_executor_t *ex = mkpool(1);
    conc_future_t *fs[4];
    for (int i = 0; i < 4; i++)
        fs[i] = submit(ex, gate2_task, P(i));
    cr_assert(TU_WAIT_UNTIL(conc_future_running(fs[0]), 10));
    cr_assert_eq(conc_executor_shutdown(ex, false, true), 0);
    for (int i = 1; i < 4; i++) {
        cr_assert(conc_future_cancelled(fs[i]));
        cr_assert_eq(conc_future_set_running_or_notify_cancel(fs[i]), CONC_EPERM, "not notified by the pool");
    }
    conc_future_t *done[4], *nd[4];
    size_t a = 0, b = 0;
    cr_assert_eq(conc_wait(fs + 1, 3, 5, CONC_ALL_COMPLETED, done, &a, nd, &b), 0);
    cr_assert_eq(a, 3);
    atomic_store(&gate2, 1);
    cr_assert_eq(conc_future_result(fs[0], 20, NULL), 0);
    for (int i = 0; i < 4; i++)
        freef(fs[i]);
    freepool(ex);
}
