/*
 * opts_defaults_test.c — a zero-initialised *_opts_t means Python's
 * defaults (issue 12 §3; the audit is in docs/design.md). One test per
 * options struct: the zero struct behaves as the Python constructor with
 * no arguments (and as NULL).
 *
 * Own main with CONC_PROCESS_MAIN (pools and managers may spawn).
 */
#include "test_util.h"

#include <conc/pool.h>

#define P(x) ((void *)(uintptr_t)(x))

static void setup(void) { unsetenv("BXFI_MAP"); }
TestSuite(opts_defaults, .init = setup, .timeout = TU_TIMEOUT);

/* ----------------------------------------------------- conc_map_opts_t */

static void *slow_square(void *arg)
{
    tu_sleep(0.05);
    uintptr_t x = (uintptr_t)arg;
    return P(x * x);
}

static atomic_size_t progress_calls;
static void count_progress(size_t done, size_t total, void *arg)
{
    (void)done;
    (void)total;
    (void)arg;
    atomic_fetch_add(&progress_calls, 1);
}

Test(opts_defaults, map_opts_zero_means_no_timeout)
{
    /* The case: {.progress = cb} left the timeout at 0, so map
     * failed at once and cancelled the work. Python's map(fn, args) has
     * timeout=None. */
    conc_executor_t *ex;
    conc_thread_pool_opts_t po = {.max_workers = 2};
    cr_assert_eq(conc_thread_pool_new(&ex, &po), 0);
    enum { N = 6 };
    void *args[N], *res[N];
    for (int i = 0; i < N; i++)
        args[i] = P(i + 1);
    atomic_store(&progress_calls, 0);
    conc_map_opts_t o = {.progress = count_progress};
    cr_assert_eq(conc_map(ex, slow_square, args, N, res, &o), 0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(res[i], P((i + 1) * (i + 1)));
    cr_assert_eq(atomic_load(&progress_calls), N);
    conc_map_opts_t z = {0};
    cr_assert_eq(conc_map(ex, slow_square, args, N, res, &z), 0, "the zero struct is NULL");
    /* a timeout of exactly 0 is still expressible */
    conc_map_opts_t zero_timeout = {.timeout = 0, .has_timeout = true};
    cr_assert_eq(conc_map(ex, slow_square, args, N, res, &zero_timeout), CONC_ETIMEDOUT);
    cr_assert_eq(conc_executor_free(ex), 0);
}

/* --------------------------------------------- conc_thread_pool_opts_t */

static void *my_name(void *arg)
{
    (void)arg;
    return (void *)conc_thread_name(conc_current_thread());
}

Test(opts_defaults, thread_pool_opts_zero_is_threadpoolexecutor)
{
    conc_executor_t *ex;
    conc_thread_pool_opts_t o = {0};
    cr_assert_eq(conc_thread_pool_new(&ex, &o), 0);
    conc_future_t *f;
    cr_assert_eq(conc_submit(ex, &f, my_name, NULL), 0);
    void *r = NULL;
    cr_assert_eq(conc_future_result(f, 30, &r), 0);
    cr_assert(r && strncmp(r, "ThreadPoolExecutor-", 19) == 0, "worker name %s", r ? (char *)r : "(null)");
    conc_future_free(f);
    cr_assert_eq(conc_executor_free(ex), 0);
}

/* -------------------------------------------------- conc_thread_opts_t */

static void *nothing(void *arg) { return arg; }

Test(opts_defaults, thread_opts_zero_is_thread)
{
    conc_thread_t *t;
    conc_thread_opts_t o = {0};
    cr_assert_eq(conc_thread_new(&t, nothing, NULL, &o), 0);
    cr_assert_eq(strncmp(conc_thread_name(t), "Thread-", 7), 0, "name %s", conc_thread_name(t));
    cr_assert_not(conc_thread_daemon(t), "created by the (non-daemon) main thread: not a daemon");
    cr_assert_eq(conc_thread_start(t), 0);
    cr_assert_eq(conc_thread_join(t, CONC_FOREVER, NULL), 0);
    cr_assert_eq(conc_thread_free(t), 0);
}

/* --------------------------------------------------- conc_green_opts_t */

Test(opts_defaults, green_opts_zero_is_spawn)
{
    conc_green_t *g;
    conc_green_opts_t o = {0};
    cr_assert_eq(conc_go_opts(&g, &o, nothing, P(5)), 0);
    cr_assert_eq(strncmp(conc_green_name(g), "Green-", 6), 0, "name %s", conc_green_name(g));
    void *r = NULL;
    cr_assert_eq(conc_green_get(g, CONC_FOREVER, &r), 0);
    cr_assert_eq(r, P(5));
    conc_green_free(g);
}

/* ------------------------------------------------- conc_process_opts_t */

static int child_ok(const void *arg, size_t len)
{
    (void)arg;
    (void)len;
    return 0;
}
CONC_REGISTER(child_ok);

Test(opts_defaults, process_opts_zero_is_process)
{
    conc_process_t *p;
    conc_process_opts_t o = {0};
    cr_assert_eq(conc_process_new(&p, child_ok, NULL, 0, &o), 0);
    cr_assert_eq(strncmp(conc_process_name(p), "Process-", 8), 0, "name %s", conc_process_name(p));
    cr_assert_not(conc_process_daemon(p));
    cr_assert_eq(conc_process_method(p), CONC_START_DEFAULT);
    cr_assert_eq(conc_process_start(p), 0);
    cr_assert_eq(conc_process_join(p, 30), 0);
    conc_process_free(p);
}

/* -------------------------- conc_process_pool_opts_t, conc_pool_opts_t */

static int pool_echo(const void *arg, size_t len, conc_pool_out_t *out)
{
    return conc_pool_return(out, arg, len);
}
CONC_POOL_REGISTER(pool_echo);

Test(opts_defaults, process_pool_opts_zero_is_processpoolexecutor)
{
    conc_executor_t *ex;
    conc_process_pool_opts_t o = {0};
    cr_assert_eq(conc_process_pool_new(&ex, &o), 0);
    int pids[64];
    cr_assert_eq(conc_process_pool_pids(ex, pids, 64), (size_t)conc_cpu_count(), "max_workers: cpu_count");
    conc_future_t *f;
    cr_assert_eq(conc_process_pool_submit(ex, &f, pool_echo, "hi", 2), 0);
    const void *d;
    size_t n;
    cr_assert_eq(conc_future_bytes(f, 30, &d, &n), 0);
    cr_assert_eq(n, 2);
    conc_future_free(f);
    cr_assert_eq(conc_executor_free(ex), 0);
}

Test(opts_defaults, pool_opts_zero_is_pool)
{
    conc_pool_t *p;
    conc_pool_opts_t o = {0};
    cr_assert_eq(conc_pool_new(&p, &o), 0);
    int pids[64];
    cr_assert_eq(conc_pool_pids(p, pids, 64), (size_t)conc_cpu_count(), "processes: cpu_count");
    void *d = NULL;
    size_t n;
    cr_assert_eq(conc_pool_apply(p, pool_echo, "abc", 3, &d, &n), 0);
    cr_assert_eq(n, 3);
    free(d);
    cr_assert_eq(conc_pool_close(p), 0);
    cr_assert_eq(conc_pool_join(p, 30), 0);
    cr_assert_eq(conc_pool_free(p), 0);
}

/* ------------------------------------------------- conc_manager_opts_t */

Test(opts_defaults, manager_opts_zero_is_manager)
{
    conc_manager_t *m;
    conc_manager_opts_t o = {0};
    int rc = conc_manager_start(&m, &o);
    cr_assert_eq(rc, 0, "start: %s", conc_strerror(rc));
    size_t klen = 0;
    cr_assert_not_null(conc_manager_authkey(m, &klen));
    cr_assert_eq(klen, 32, "a random authkey");
    const char *addr = conc_manager_address(m);
    cr_assert(addr && addr[0] == '/', "a Unix socket by default: %s", addr ? addr : "(null)");
    conc_mdict_t *d;
    cr_assert_eq(conc_manager_dict(m, "d", &d), 0);
    cr_assert_eq(conc_mdict_set(d, "k", 1, "v", 1), 0, "calls work with the default reply timeout");
    conc_mdict_free(d);
    cr_assert_eq(conc_manager_free(m), 0);
}

TU_MAIN_WITH_PROCESS_GUARD()
