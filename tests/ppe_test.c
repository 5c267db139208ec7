/*
 * ProcessPoolExecutor (conc/pool.h): the behaviours of CPython's
 * test_concurrent_futures process-pool tests (test_process_pool.py,
 * executor.py, test_shutdown.py, test_deadlock.py): submit/result and
 * exceptions, map with chunksize and timeouts, shutdown wait and
 * cancel_futures, BrokenProcessPool (worker killed, worker _exit, crash in
 * a task, failing initializer), max_tasks_per_child, and no zombies.
 *
 * Own main with CONC_PROCESS_MAIN: spawn and the fork server run fresh
 * copies of this executable (see tests/process_test.c).
 */
#include "test_util.h"

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>

#include <conc/pool.h>

static void setup(void) { unsetenv("BXFI_MAP"); }
TestSuite(ppe, .init = setup, .timeout = TU_TIMEOUT);

/* ------------------------------------------------------------ tasks */

static int echo(const void *arg, size_t len, conc_pool_out_t *out)
{
    return conc_pool_return(out, arg, len);
}
CONC_POOL_REGISTER(echo);

static int square(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)len;
    long x;
    memcpy(&x, arg, sizeof x);
    long y = x * x;
    return conc_pool_return(out, &y, sizeof y);
}
CONC_POOL_REGISTER(square);

static int getpid_task(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len;
    int p = getpid();
    return conc_pool_return(out, &p, sizeof p);
}
CONC_POOL_REGISTER(getpid_task);

static int raiser(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)out;
    conc_fail(CONC_ERANGE, "bad value %.*s", (int)len, (const char *)arg);
    return 0;
}
CONC_POOL_REGISTER(raiser);

static int nonzero(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len, (void)out;
    return 5;
}
CONC_POOL_REGISTER(nonzero);

static int sleeper(const void *arg, size_t len, conc_pool_out_t *out)
{
    double s = 0.1;
    if (len == sizeof s)
        memcpy(&s, arg, sizeof s);
    tu_sleep(s);
    return conc_pool_return(out, "z", 1);
}
CONC_POOL_REGISTER(sleeper);

static int exiter(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len, (void)out;
    _exit(3);
}
CONC_POOL_REGISTER(exiter);

static int crasher(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len, (void)out;
    signal(SIGSEGV, SIG_DFL); /* a plain crash, not a sanitizer's report */
    raise(SIGSEGV);
    return 0;
}
CONC_POOL_REGISTER(crasher);

static int big(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)len;
    size_t n;
    memcpy(&n, arg, sizeof n);
    char *b = malloc(n);
    memset(b, 'x', n);
    int rc = conc_pool_return(out, b, n);
    free(b);
    return rc;
}
CONC_POOL_REGISTER(big);

static void *word_sq(void *a)
{
    uintptr_t x = (uintptr_t)a;
    if (x == 13)
        return conc_fail(CONC_EINVAL, "unlucky %d", 13);
    return (void *)(x * x);
}
CONC_REGISTER(word_sq);

static int init_value;
static int init_ok(const void *arg, size_t len)
{
    if (len == sizeof init_value)
        memcpy(&init_value, arg, len);
    return 0;
}
CONC_REGISTER(init_ok);

static int init_fail(const void *arg, size_t len)
{
    (void)arg, (void)len;
    conc_fail(CONC_EINVAL, "initializer says no");
    return 0;
}
CONC_REGISTER(init_fail);

static int get_init(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len;
    return conc_pool_return(out, &init_value, sizeof init_value);
}
CONC_POOL_REGISTER(get_init);

static int unregistered(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len, (void)out;
    return 0;
}

/* ---------------------------------------------------------- helpers */

static bool gone(int pid) { return kill(pid, 0) < 0 && errno == ESRCH; }

static conc_executor_t *new_pool(conc_start_method_t m, size_t workers)
{
    conc_executor_t *ex = NULL;
    conc_process_pool_opts_t o = {.max_workers = workers, .method = m};
    cr_assert_eq(conc_process_pool_new(&ex, &o), 0);
    return ex;
}

static void check_submit(conc_start_method_t m)
{
    conc_executor_t *ex = new_pool(m, 2);
    conc_future_t *f;
    cr_assert_eq(conc_process_pool_submit(ex, &f, echo, "hello", 5), 0);
    const void *d;
    size_t n;
    cr_assert_eq(conc_future_bytes(f, 10, &d, &n), 0);
    cr_assert_eq(n, 5);
    cr_assert_eq(memcmp(d, "hello", 5), 0);
    cr_assert(conc_future_done(f));
    conc_future_free(f);
    /* an empty argument and an empty result */
    cr_assert_eq(conc_process_pool_submit(ex, &f, echo, NULL, 0), 0);
    cr_assert_eq(conc_future_bytes(f, 10, &d, &n), 0);
    cr_assert_eq(n, 0);
    conc_future_free(f);
    int pids[4];
    cr_assert_eq(conc_process_pool_pids(ex, pids, 4), 2);
    cr_assert_eq(conc_executor_free(ex), 0);
    cr_assert(gone(pids[0]) && gone(pids[1]));
    cr_assert_eq(tu_zombies(), 0);
}

Test(ppe, submit_fork) { check_submit(CONC_FORK); }

/* Idle workers wake up now and then to see whether their parent is still
 * there; a live parent must never look gone (any start method). */
Test(ppe, idle_workers_stay)
{
    for (int m = CONC_FORK; m <= CONC_FORKSERVER; m++) {
        conc_executor_t *ex = new_pool((conc_start_method_t)m, 2);
        for (int k = 0; k < 2; k++) {
            conc_future_t *f;
            cr_assert_eq(conc_process_pool_submit(ex, &f, echo, "a", 1), 0, "method %d round %d", m, k);
            cr_assert_eq(conc_future_bytes(f, 10, NULL, NULL), 0);
            conc_future_free(f);
            tu_sleep(0.6);
        }
        conc_executor_free(ex);
    }
}
Test(ppe, submit_spawn) { check_submit(CONC_SPAWN); }
Test(ppe, submit_forkserver) { check_submit(CONC_FORKSERVER); }

Test(ppe, exceptions)
{
    conc_executor_t *ex = new_pool(CONC_START_DEFAULT, 2);
    conc_future_t *f;
    cr_assert_eq(conc_process_pool_submit(ex, &f, raiser, "42", 2), 0);
    int code;
    const char *msg;
    cr_assert_eq(conc_future_exception(f, 10, &code, &msg), 0);
    cr_assert_eq(code, CONC_ERANGE);
    cr_assert_str_eq(msg, "bad value 42");
    cr_assert_eq(conc_future_bytes(f, 0, NULL, NULL), CONC_EFAILED); /* the outcome rule */
    conc_future_free(f);
    cr_assert_eq(conc_process_pool_submit(ex, &f, nonzero, NULL, 0), 0);
    cr_assert_eq(conc_future_bytes(f, 10, NULL, NULL), CONC_EFAILED);
    conc_future_free(f);
    /* the pool is still fine */
    cr_assert_eq(conc_process_pool_submit(ex, &f, echo, "a", 1), 0);
    cr_assert_eq(conc_future_bytes(f, 10, NULL, NULL), 0);
    conc_future_free(f);
    conc_executor_free(ex);
}

Test(ppe, misuse)
{
    conc_executor_t *ex = new_pool(CONC_START_DEFAULT, 1);
    conc_future_t *f;
    conc_fail_clear();
    cr_assert_eq(conc_process_pool_submit(ex, &f, unregistered, NULL, 0), CONC_EINVAL);
    const char *msg = NULL; /* the failure names the function and the fix */
    cr_assert_eq(conc_failure(&msg), CONC_EINVAL);
    cr_assert(strstr(msg, "CONC_POOL_REGISTER(unregistered)"), "message: %s", msg);
    conc_fail_clear();
    conc_results_t *mr = NULL;
    cr_assert_eq(conc_process_pool_map(ex, unregistered, "ab", 1, 2, 1, 5, &mr), CONC_EINVAL);
    cr_assert_eq(conc_failure(&msg), CONC_EINVAL);
    cr_assert(strstr(msg, "CONC_POOL_REGISTER(unregistered)"), "message: %s", msg);
    cr_assert_eq(conc_process_pool_submit(ex, NULL, echo, NULL, 0), CONC_EINVAL);
    cr_assert_eq(conc_process_pool_submit(NULL, &f, echo, NULL, 0), CONC_EINVAL);
    cr_assert_eq(conc_process_pool_submit(ex, &f, echo, NULL, 3), CONC_EINVAL);
    /* an argument larger than half a task queue */
    size_t n = (size_t)3 << 20;
    char *b = calloc(1, n);
    cr_assert_eq(conc_process_pool_submit(ex, &f, echo, b, n), CONC_ERANGE);
    free(b);
    conc_results_t *r;
    cr_assert_eq(conc_process_pool_map(ex, echo, "ab", 1, 2, 1, NAN, &r), CONC_EINVAL);
    /* a thread pool's future holds no bytes */
    cr_assert_eq(conc_future_new(&f), 0);
    conc_future_set_result(f, (void *)1);
    cr_assert_eq(conc_future_bytes(f, 0, NULL, NULL), CONC_EINVAL);
    conc_future_free(f);
    cr_assert_eq(conc_process_pool_new(NULL, NULL), CONC_EINVAL);
    conc_process_pool_opts_t o = {.max_workers = 1, .initializer = (conc_process_fn)(void (*)(void))unregistered};
    conc_executor_t *ex2 = NULL;
    cr_assert_eq(conc_process_pool_new(&ex2, &o), CONC_EINVAL);
    o = (conc_process_pool_opts_t){.max_workers = 5000};
    cr_assert_eq(conc_process_pool_new(&ex2, &o), CONC_EINVAL);
    conc_executor_free(ex);
}

Test(ppe, big_results_travel_in_pieces)
{
    conc_process_pool_opts_t o = {.max_workers = 2, .queue_capacity = 1 << 20};
    conc_executor_t *ex;
    cr_assert_eq(conc_process_pool_new(&ex, &o), 0);
    size_t sizes[40];
    for (int i = 0; i < 40; i++)
        sizes[i] = 50000 + (size_t)i * 1000; /* ~2.7 MB in all, one chunk */
    conc_results_t *r;
    cr_assert_eq(conc_process_pool_map(ex, big, sizes, sizeof sizes[0], 40, 40, 30, &r), 0);
    for (int i = 0; i < 40; i++) {
        const void *d;
        size_t n;
        cr_assert_eq(conc_results_item(r, i, &d, &n), 0);
        cr_assert_eq(n, sizes[i]);
        cr_assert_eq(((const char *)d)[n - 1], 'x');
    }
    conc_results_free(r);
    /* one result that can never fit fails alone */
    size_t huge = (size_t)2 << 20;
    conc_future_t *f;
    cr_assert_eq(conc_process_pool_submit(ex, &f, big, &huge, sizeof huge), 0);
    cr_assert_eq(conc_future_bytes(f, 30, NULL, NULL), CONC_EFAILED);
    int code = 0;
    cr_assert_eq(conc_future_exception(f, 0, &code, NULL), 0);
    cr_assert_eq(code, CONC_ERANGE);
    conc_future_free(f);
    conc_executor_free(ex);
}

/* conc_submit / conc_map with a void * on a process pool are refused
 * (the pointer would reach the worker as a bare number); word tasks go
 * by value through their own, explicit names. */
Test(ppe, executor_interface)
{
    conc_executor_t *ex = new_pool(CONC_START_DEFAULT, 2);
    conc_future_t *f = NULL;
    int x = 7;
    cr_assert_eq(conc_submit(ex, &f, word_sq, &x), CONC_ENOTSUP);
    cr_assert_null(f);
    void *a1[1] = {&x}, *r1[1];
    cr_assert_eq(conc_map(ex, word_sq, a1, 1, r1, NULL), CONC_ENOTSUP);
    conc_map_iter_t *it = NULL;
    cr_assert_eq(conc_map_iter_new(&it, ex, word_sq, a1, 1, NULL), CONC_ENOTSUP);
    cr_assert_null(it);
    cr_assert(strlen(conc_strerror(CONC_ENOTSUP)) > 0);

    cr_assert_eq(conc_process_pool_submit_word(ex, &f, word_sq, (void *)7), 0);
    void *res;
    cr_assert_eq(conc_future_result(f, 10, &res), 0);
    cr_assert_eq((uintptr_t)res, 49);
    conc_future_free(f);
    cr_assert_eq(conc_process_pool_submit_word(ex, &f, word_sq, (void *)13), 0);
    int code;
    const char *msg;
    cr_assert_eq(conc_future_exception(f, 10, &code, &msg), 0);
    cr_assert_eq(code, CONC_EINVAL);
    cr_assert_str_eq(msg, "unlucky 13");
    conc_future_free(f);
    /* conc_map's semantics, word by word */
    void *args[100], *out[100];
    for (uintptr_t i = 0; i < 100; i++)
        args[i] = (void *)(i < 13 ? i : i + 1);
    cr_assert_eq(conc_process_pool_map_word(ex, word_sq, args, 100, out, NULL), 0);
    for (uintptr_t i = 0; i < 100; i++)
        cr_assert_eq((uintptr_t)out[i], (uintptr_t)args[i] * (uintptr_t)args[i]);
    /* unregistered task function; not a process pool */
    cr_assert_eq(conc_process_pool_submit_word(ex, &f, (void *(*)(void *))(void (*)(void))unregistered, NULL),
                 CONC_EINVAL);
    conc_executor_t *tp;
    cr_assert_eq(conc_thread_pool_new(&tp, NULL), 0);
    cr_assert_eq(conc_process_pool_submit_word(tp, &f, word_sq, (void *)7), CONC_EINVAL);
    cr_assert_eq(conc_process_pool_map_word(tp, word_sq, args, 1, out, NULL), CONC_EINVAL);
    conc_executor_free(tp);
    conc_executor_free(ex);
}

static void check_map(size_t chunksize)
{
    conc_executor_t *ex = new_pool(CONC_START_DEFAULT, 2);
    size_t n = 1000;
    long *xs = malloc(n * sizeof *xs), *ys = malloc(n * sizeof *ys);
    for (size_t i = 0; i < n; i++)
        xs[i] = (long)i - 500;
    conc_results_t *r;
    cr_assert_eq(conc_process_pool_map(ex, square, xs, sizeof *xs, n, chunksize, CONC_FOREVER, &r), 0);
    cr_assert_eq(conc_results_len(r), n);
    cr_assert_eq(conc_results_copy(r, ys, sizeof *ys), 0);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(ys[i], xs[i] * xs[i]);
    cr_assert_eq(conc_results_copy(r, ys, 4), CONC_ERANGE);
    conc_results_free(r);
    /* variable-size items */
    conc_buf_t bufs[3] = {{"a", 1}, {"", 0}, {"ccc", 3}};
    cr_assert_eq(conc_process_pool_map(ex, echo, bufs, 0, 3, chunksize, 10, &r), 0);
    const void *d;
    size_t len;
    cr_assert_eq(conc_results_item(r, 2, &d, &len), 0);
    cr_assert_eq(len, 3);
    cr_assert_eq(memcmp(d, "ccc", 3), 0);
    cr_assert_eq(conc_results_item(r, 1, &d, &len), 0);
    cr_assert_eq(len, 0);
    cr_assert_eq(conc_results_item(r, 3, &d, &len), CONC_EINVAL);
    conc_results_free(r);
    /* an empty map */
    cr_assert_eq(conc_process_pool_map(ex, square, NULL, 8, 0, chunksize, 10, &r), 0);
    cr_assert_eq(conc_results_len(r), 0);
    conc_results_free(r);
    free(xs);
    free(ys);
    conc_executor_free(ex);
}

Test(ppe, map) { check_map(1); }
Test(ppe, map_chunksize) { check_map(7); }
Test(ppe, map_chunksize_large) { check_map(5000); }

Test(ppe, map_exception)
{
    conc_executor_t *ex = new_pool(CONC_START_DEFAULT, 2);
    conc_buf_t items[5] = {{"1", 1}, {"2", 1}, {"3", 1}, {"4", 1}, {"5", 1}};
    conc_results_t *r;
    cr_assert_eq(conc_process_pool_map(ex, raiser, items, 0, 5, 2, 10, &r), CONC_EFAILED);
    const void *d;
    size_t n;
    cr_assert_eq(conc_results_item(r, 3, &d, &n), CONC_EFAILED);
    cr_assert_str_eq((const char *)d, "bad value 4");
    cr_assert_eq(n, strlen("bad value 4"));
    int code = 0;
    const char *msg = NULL;
    cr_assert_eq(conc_results_exception(r, 3, &code, &msg), 0);
    cr_assert_eq(code, CONC_ERANGE);
    cr_assert_str_eq(msg, "bad value 4");
    cr_assert_eq(conc_results_exception(r, 0, &code, &msg), 0);
    cr_assert_eq(code, CONC_ERANGE);
    cr_assert_str_eq(msg, "bad value 1");
    cr_assert_eq(conc_results_exception(r, 5, &code, &msg), CONC_EINVAL);
    cr_assert_eq(conc_results_exception(NULL, 0, &code, &msg), CONC_EINVAL);
    conc_results_free(r);
    conc_executor_free(ex);
}

Test(ppe, map_timeout)
{
    conc_executor_t *ex = new_pool(CONC_START_DEFAULT, 2);
    double s[6] = {0, 0, 1.0, 1.0, 1.0, 1.0};
    conc_results_t *r = (void *)1;
    double t0 = tu_now();
    cr_assert_eq(conc_process_pool_map(ex, sleeper, s, sizeof s[0], 6, 1, 0.3, &r), CONC_ETIMEDOUT);
    double dt = tu_now() - t0;
    cr_assert(dt >= 0.3 - TU_EPS && dt < 0.3 + TU_SLACK, "dt=%f", dt);
    cr_assert_null(r);
    conc_executor_free(ex);
}

/* A map reads big chunks of fixed-size items from the caller's array as
 * it dispatches them; when it returns early (timeout) nothing may read
 * that array afterwards (ASan checks it is freed at once). */
Test(ppe, map_timeout_then_items_freed)
{
    conc_executor_t *ex = new_pool(CONC_START_DEFAULT, 2);
    size_t n = 6000; /* 6 chunks of 8000 bytes */
    double *s = calloc(n, sizeof *s);
    s[1000] = s[2000] = 0.6;
    conc_results_t *r = (void *)1;
    cr_assert_eq(conc_process_pool_map(ex, sleeper, s, sizeof *s, n, 1000, 0.2, &r), CONC_ETIMEDOUT);
    cr_assert_null(r);
    memset(s, 0xff, n * sizeof *s);
    free(s);
    /* the pool goes on */
    double z[3] = {0, 0, 0};
    cr_assert_eq(conc_process_pool_map(ex, sleeper, z, sizeof z[0], 3, 1, 10, &r), 0);
    cr_assert_eq(conc_results_len(r), 3);
    conc_results_free(r);
    conc_executor_free(ex);
}

Test(ppe, shutdown_wait)
{
    conc_executor_t *ex = new_pool(CONC_START_DEFAULT, 2);
    conc_future_t *fs[6];
    double s = 0.05;
    for (int i = 0; i < 6; i++)
        cr_assert_eq(conc_process_pool_submit(ex, &fs[i], sleeper, &s, sizeof s), 0);
    cr_assert_eq(conc_executor_shutdown(ex, true, false), 0);
    for (int i = 0; i < 6; i++) {
        cr_assert(conc_future_done(fs[i]));
        cr_assert_eq(conc_future_bytes(fs[i], 0, NULL, NULL), 0);
        conc_future_free(fs[i]);
    }
    conc_future_t *f;
    cr_assert_eq(conc_process_pool_submit(ex, &f, echo, "a", 1), CONC_ESHUTDOWN);
    cr_assert_eq(conc_process_pool_submit_word(ex, &f, word_sq, NULL), CONC_ESHUTDOWN);
    cr_assert_eq(conc_executor_shutdown(ex, true, false), 0); /* twice is fine */
    cr_assert_eq(tu_zombies(), 0);
    conc_executor_free(ex);
}

Test(ppe, shutdown_nowait_then_free)
{
    conc_executor_t *ex = new_pool(CONC_START_DEFAULT, 2);
    conc_future_t *fs[4];
    double s = 0.1;
    for (int i = 0; i < 4; i++)
        cr_assert_eq(conc_process_pool_submit(ex, &fs[i], sleeper, &s, sizeof s), 0);
    double t0 = tu_now();
    cr_assert_eq(conc_executor_shutdown(ex, false, false), 0);
    cr_assert(tu_now() - t0 < 0.09);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(conc_future_bytes(fs[i], 10, NULL, NULL), 0);
        conc_future_free(fs[i]);
    }
    conc_executor_free(ex);
}

Test(ppe, shutdown_cancel_futures)
{
    conc_executor_t *ex = new_pool(CONC_START_DEFAULT, 1);
    double s = 0.3;
    conc_future_t *fs[20];
    for (int i = 0; i < 20; i++)
        cr_assert_eq(conc_process_pool_submit(ex, &fs[i], sleeper, &s, sizeof s), 0);
    tu_sleep(0.1);
    cr_assert_eq(conc_executor_shutdown(ex, true, true), 0);
    /* the pool dropped the cancelled ones: notified (CANCELLED_AND_NOTIFIED),
     * so wait() counts every future done */
    size_t nd = 0, nn = 0;
    cr_assert_eq(conc_wait(fs, 20, 5, CONC_ALL_COMPLETED, NULL, &nd, NULL, &nn), 0);
    cr_assert_eq(nn, 0, "%zu futures cancelled by shutdown are not done for wait()", nn);
    int cancelled = 0, ok = 0;
    for (int i = 0; i < 20; i++) {
        cr_assert(conc_future_done(fs[i]));
        if (conc_future_cancelled(fs[i]))
            cancelled++;
        else if (conc_future_bytes(fs[i], 0, NULL, NULL) == 0)
            ok++;
        conc_future_free(fs[i]);
    }
    cr_assert(ok >= 1 && ok <= 3, "ok=%d", ok);
    cr_assert_eq(cancelled + ok, 20);
    conc_executor_free(ex);
}

/* BrokenProcessPool: every pending and running future fails at once. */
static void check_broken(conc_executor_t *ex, conc_future_t *victim, int npend, conc_future_t **pend,
                         const char *want)
{
    int code;
    const char *msg;
    cr_assert_eq(conc_future_exception(victim, 10, &code, &msg), 0);
    cr_assert_eq(code, CONC_EBROKEN);
    cr_assert(strstr(msg, want), "msg: %s", msg);
    cr_assert(strstr(msg, "worker process "), "msg: %s", msg);
    /* the message names what broke; result() says the task failed */
    cr_assert(strstr(msg, "BrokenProcessPool: "), "msg: %s", msg);
    cr_assert_eq(conc_future_result(victim, 0, NULL), CONC_EFAILED);
    for (int i = 0; i < npend; i++) {
        cr_assert_eq(conc_future_exception(pend[i], 10, &code, &msg), 0);
        cr_assert_eq(code, CONC_EBROKEN);
        conc_future_free(pend[i]);
    }
    conc_future_t *f;
    cr_assert_eq(conc_process_pool_submit(ex, &f, echo, "a", 1), CONC_EBROKEN);
    int pids[4];
    cr_assert_eq(conc_executor_free(ex), 0);
    (void)pids;
    cr_assert_eq(tu_zombies(), 0);
}

Test(ppe, broken_worker_killed)
{
    conc_executor_t *ex = new_pool(CONC_START_DEFAULT, 2);
    conc_future_t *v, *p[5];
    double s = 5;
    cr_assert_eq(conc_process_pool_submit(ex, &v, sleeper, &s, sizeof s), 0);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(conc_process_pool_submit(ex, &p[i], sleeper, &s, sizeof s), 0);
    tu_sleep(0.2);
    int pids[2];
    cr_assert_eq(conc_process_pool_pids(ex, pids, 2), 2);
    double t0 = tu_now();
    kill(pids[0], SIGKILL);
    int code;
    cr_assert_eq(conc_future_exception(v, 5, &code, NULL), 0);
    double dt = tu_now() - t0;
    fprintf(stderr, "ppe: broken detected %.2f ms after SIGKILL\n", dt * 1e3);
    cr_assert(dt < 1.0, "dt=%f", dt);
    char want[64];
    snprintf(want, sizeof want, "%d", pids[0]);
    check_broken(ex, v, 5, p, "signal 9");
    conc_future_free(v);
    cr_assert(gone(pids[0]) && gone(pids[1]));
}

Test(ppe, broken_worker_exit)
{
    conc_executor_t *ex = new_pool(CONC_START_DEFAULT, 2);
    conc_future_t *v, *p[3];
    double s = 5;
    cr_assert_eq(conc_process_pool_submit(ex, &v, exiter, NULL, 0), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(conc_process_pool_submit(ex, &p[i], sleeper, &s, sizeof s), 0);
    check_broken(ex, v, 3, p, "exit status 3");
    conc_future_free(v);
}

Test(ppe, broken_crash_in_task)
{
    conc_executor_t *ex = new_pool(CONC_SPAWN, 1);
    conc_future_t *v;
    cr_assert_eq(conc_process_pool_submit(ex, &v, crasher, NULL, 0), 0);
    check_broken(ex, v, 0, NULL, "signal 11");
    conc_future_free(v);
}

Test(ppe, broken_initializer)
{
    conc_executor_t *ex;
    conc_process_pool_opts_t o = {.max_workers = 2, .initializer = init_fail};
    cr_assert_eq(conc_process_pool_new(&ex, &o), 0);
    conc_future_t *f;
    int rc = conc_process_pool_submit(ex, &f, echo, "a", 1);
    if (rc == 0) {
        int code;
        const char *msg;
        cr_assert_eq(conc_future_exception(f, 10, &code, &msg), 0);
        cr_assert_eq(code, CONC_EBROKEN);
        cr_assert(strstr(msg, "initializer says no"), "msg: %s", msg);
        conc_future_free(f);
    } else {
        cr_assert_eq(rc, CONC_EBROKEN);
    }
    TU_WAIT_UNTIL(conc_process_pool_submit(ex, &f, echo, "a", 1) == CONC_EBROKEN, 10);
    cr_assert_eq(conc_process_pool_submit(ex, &f, echo, "a", 1), CONC_EBROKEN);
    conc_executor_free(ex);
    cr_assert_eq(tu_zombies(), 0);
}

Test(ppe, initializer)
{
    int v = 1234;
    conc_process_pool_opts_t o = {.max_workers = 2, .initializer = init_ok, .initarg = &v, .initarg_len = sizeof v};
    conc_start_method_t ms[2] = {CONC_FORK, CONC_FORKSERVER};
    for (int k = 0; k < 2; k++) {
        o.method = ms[k];
        conc_executor_t *ex;
        cr_assert_eq(conc_process_pool_new(&ex, &o), 0);
        conc_results_t *r;
        cr_assert_eq(conc_process_pool_map(ex, get_init, "abcd", 1, 4, 1, 10, &r), 0);
        int got[4];
        cr_assert_eq(conc_results_copy(r, got, sizeof got[0]), 0);
        for (int i = 0; i < 4; i++)
            cr_assert_eq(got[i], 1234);
        conc_results_free(r);
        conc_executor_free(ex);
    }
}

/* Python: ValueError("max_tasks_per_child is incompatible with the 'fork'
 * multiprocessing start method") */
Test(ppe, max_tasks_per_child_refuses_fork)
{
    conc_process_pool_opts_t o = {.max_workers = 1, .max_tasks_per_child = 3, .method = CONC_FORK};
    conc_executor_t *ex = NULL;
    cr_assert_eq(conc_process_pool_new(&ex, &o), CONC_EINVAL);
    cr_assert_null(ex);
    /* the default method, set to fork: the pool uses the fork server instead */
    cr_assert_eq(conc_set_start_method(CONC_FORK), 0);
    o.method = CONC_START_DEFAULT;
    int rc = conc_process_pool_new(&ex, &o);
    conc_set_start_method(CONC_START_DEFAULT);
    cr_assert_eq(rc, 0);
    conc_future_t *f;
    cr_assert_eq(conc_process_pool_submit(ex, &f, getpid_task, NULL, 0), 0);
    cr_assert_eq(conc_future_bytes(f, 10, NULL, NULL), 0);
    conc_future_free(f);
    conc_executor_free(ex);
}

Test(ppe, max_tasks_per_child)
{
    conc_process_pool_opts_t o = {.max_workers = 1, .max_tasks_per_child = 3};
    conc_executor_t *ex;
    cr_assert_eq(conc_process_pool_new(&ex, &o), 0);
    int pids[9];
    for (int i = 0; i < 9; i++) {
        conc_future_t *f;
        cr_assert_eq(conc_process_pool_submit(ex, &f, getpid_task, NULL, 0), 0);
        const void *d;
        cr_assert_eq(conc_future_bytes(f, 10, &d, NULL), 0);
        memcpy(&pids[i], d, sizeof pids[i]);
        conc_future_free(f);
    }
    for (int i = 0; i < 9; i++)
        cr_assert_eq(pids[i] == pids[i - i % 3], true, "task %d", i);
    cr_assert_neq(pids[0], pids[3]);
    cr_assert_neq(pids[3], pids[6]);
    /* many tasks at once, each worker does at most 3 */
    conc_future_t *fs[60];
    for (int i = 0; i < 60; i++)
        cr_assert_eq(conc_process_pool_submit(ex, &fs[i], getpid_task, NULL, 0), 0);
    int seen[60], nseen = 0, count[60] = {0};
    for (int i = 0; i < 60; i++) {
        const void *d;
        int p;
        cr_assert_eq(conc_future_bytes(fs[i], 20, &d, NULL), 0);
        memcpy(&p, d, sizeof p);
        int k = 0;
        while (k < nseen && seen[k] != p)
            k++;
        if (k == nseen)
            seen[nseen++] = p;
        count[k]++;
        conc_future_free(fs[i]);
    }
    for (int k = 0; k < nseen; k++)
        cr_assert(count[k] <= 3);
    cr_assert(nseen >= 20);
    conc_executor_free(ex);
    cr_assert_eq(tu_zombies(), 0);
}

Test(ppe, many_tasks_and_cancel)
{
    conc_executor_t *ex = new_pool(CONC_START_DEFAULT, 2);
    size_t n = (size_t)tu_iters(20000);
    conc_future_t **fs = malloc(n * sizeof *fs);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(conc_process_pool_submit_word(ex, &fs[i], word_sq, (void *)(uintptr_t)(i == 13 ? 12 : i)), 0);
    /* cancel some from the end: those still queued say so */
    size_t cancelled = 0;
    for (size_t i = n - 100; i < n; i++)
        cancelled += conc_future_cancel(fs[i]);
    for (size_t i = 0; i < n; i++) {
        void *r;
        int rc = conc_future_result(fs[i], 30, &r);
        if (rc == CONC_ECANCELLED)
            cr_assert(i >= n - 100);
        else
            cr_assert_eq((uintptr_t)r, (i == 13 ? 12 : i) * (i == 13 ? 12 : i));
        conc_future_free(fs[i]);
    }
    free(fs);
    (void)cancelled;
    conc_executor_free(ex);
}

/* Issue 12 section 4: a task that fails with CONC_ETIMEDOUT or
 * CONC_ECANCELLED is a failed task (CONC_EFAILED), never a timed-out wait
 * or a cancelled future. */
static int fails_with_code(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)out;
    int code;
    if (len != sizeof code)
        return CONC_EINVAL;
    memcpy(&code, arg, sizeof code);
    conc_fail(code, "task failed with %s", conc_errname(code));
    return 0;
}
CONC_POOL_REGISTER(fails_with_code);

Test(ppe, task_failure_codes_are_not_wait_outcomes)
{
    conc_executor_t *ex = new_pool(CONC_START_DEFAULT, 2);
    int codes[2] = {CONC_ETIMEDOUT, CONC_ECANCELLED};
    for (int k = 0; k < 2; k++) {
        conc_future_t *f;
        cr_assert_eq(conc_process_pool_submit(ex, &f, fails_with_code, &codes[k], sizeof codes[k]), 0);
        int rc, loops = 0;
        while ((rc = conc_future_bytes(f, 1.0, NULL, NULL)) == CONC_ETIMEDOUT && ++loops < 30) {
        }
        cr_assert_eq(rc, CONC_EFAILED, "code %d: bytes = %d", codes[k], rc);
        cr_assert_not(conc_future_cancelled(f));
        int code = 0;
        const char *msg = NULL;
        cr_assert_eq(conc_future_exception(f, 0, &code, &msg), 0);
        cr_assert_eq(code, codes[k]);
        conc_future_free(f);
    }
    /* the map: CONC_EFAILED, not the map's own timeout */
    conc_results_t *r = NULL;
    cr_assert_eq(conc_process_pool_map(ex, fails_with_code, codes, sizeof codes[0], 2, 1, 30, &r), CONC_EFAILED);
    for (size_t i = 0; i < 2; i++) {
        cr_assert_eq(conc_results_item(r, i, NULL, NULL), CONC_EFAILED);
        int code = 0;
        cr_assert_eq(conc_results_exception(r, i, &code, NULL), 0);
        cr_assert_eq(code, codes[i]);
    }
    int out[2];
    cr_assert_eq(conc_results_copy(r, out, sizeof out[0]), CONC_EFAILED);
    conc_results_free(r);
    conc_executor_free(ex);
}

TU_MAIN_WITH_PROCESS_GUARD()
