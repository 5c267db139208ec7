/* exec_bodies.h — executor behaviours shared by the process pool and the
 * MPI executor: each body gets a factory and runs against whichever
 * executor it makes (mpi_exec_test.c runs every body against both), so
 * the two are held to the same semantics. Tasks are the process pool's:
 * registered bytes tasks (CONC_POOL_REGISTER) and word tasks
 * (CONC_REGISTER). */
#ifndef CONC_EXEC_BODIES_H
#define CONC_EXEC_BODIES_H
#include <conc.h>

#include "harness.h"

typedef struct {
    const char *name;
    int (*make)(conc_executor_t **ex, size_t workers, conc_process_fn init, const void *arg, size_t len);
    size_t (*pids)(conc_executor_t *ex, int *pids, size_t cap);
    bool persist;           /* workers outlive the executor (mpirun's ranks) */
} factory_t;

static int b_square(const void *arg, size_t len, conc_pool_out_t *out)
{
    if (len != sizeof(int))
        return conc_fail(CONC_EINVAL, "want an int"), 0;
    int x = *(const int *)arg, y = x * x;
    return conc_pool_return(out, &y, sizeof y);
}
CONC_POOL_REGISTER(b_square);

static int b_sleep_ms(const void *arg, size_t len, conc_pool_out_t *out)
{
    int ms = len == sizeof(int) ? *(const int *)arg : 0;
    usleep((useconds_t)ms * 1000);
    return conc_pool_return(out, &ms, sizeof ms);
}
CONC_POOL_REGISTER(b_sleep_ms);

static int b_raiser(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)out;
    int x = len == sizeof(int) ? *(const int *)arg : 0;
    conc_fail(CONC_ERANGE, "bad item %d", x);
    return 0;
}
CONC_POOL_REGISTER(b_raiser);

static int b_odd_fails(const void *arg, size_t len, conc_pool_out_t *out)
{
    int x = *(const int *)arg;
    (void)len;
    if (x % 1000 == 999)
        return conc_fail(CONC_ERANGE, "item %d is odd", x), 0;
    return conc_pool_return(out, &x, sizeof x);
}
CONC_POOL_REGISTER(b_odd_fails);

static int b_nonzero(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len, (void)out;
    return 7;
}
CONC_POOL_REGISTER(b_nonzero);

static void *b_word_sq(void *a)
{
    uintptr_t x = (uintptr_t)a;
    return (void *)(x * x);
}
CONC_REGISTER(b_word_sq);

static int b_init_value;
static int b_init_ok(const void *arg, size_t len)
{
    if (len == sizeof(int))
        b_init_value = *(const int *)arg;
    return 0;
}
CONC_REGISTER(b_init_ok);

static int b_init_fail(const void *arg, size_t len)
{
    (void)arg, (void)len;
    conc_fail(CONC_EPERM, "no init for you");
    return 0;
}
CONC_REGISTER(b_init_fail);

static int b_get_init(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len;
    return conc_pool_return(out, &b_init_value, sizeof b_init_value);
}
CONC_POOL_REGISTER(b_get_init);

static int b_unregistered(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len, (void)out;
    return 0;
}

static int int_of(conc_future_t *f, int *v)
{
    const void *d;
    size_t n;
    int rc = conc_future_bytes(f, 30, &d, &n);
    if (rc == 0 && n == sizeof(int))
        memcpy(v, d, sizeof(int));
    return rc ? rc : n == sizeof(int) ? 0 : CONC_ERANGE;
}

/* ------------------------------------------------------------- bodies */

static int body_submit(const factory_t *F)
{
    conc_executor_t *ex;
    CHECK(F->make(&ex, 2, NULL, NULL, 0) == 0);
    conc_future_t *fs[20];
    for (int i = 0; i < 20; i++)
        CHECK(conc_process_pool_submit(ex, &fs[i], b_square, &i, sizeof i) == 0);
    for (int i = 0; i < 20; i++) {
        int v = -1;
        CHECK(int_of(fs[i], &v) == 0);
        CHECK(v == i * i, "item %d: %d", i, v);
        conc_future_free(fs[i]);
    }
    /* the pthread-shaped interface: refused (a pointer would travel as a
     * bare number); words travel by value under their own name */
    conc_future_t *f;
    int twelve = 12;
    CHECK(conc_submit(ex, &f, b_word_sq, &twelve) == CONC_ENOTSUP);
    CHECK(conc_process_pool_submit_word(ex, &f, b_word_sq, (void *)(uintptr_t)12) == 0);
    void *r = NULL;
    CHECK(conc_future_result(f, 30, &r) == 0);
    CHECK((uintptr_t)r == 144);
    conc_future_free(f);
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

static int body_misuse(const factory_t *F)
{
    conc_executor_t *ex;
    CHECK(F->make(&ex, 1, NULL, NULL, 0) == 0);
    conc_future_t *f = NULL;
    int x = 1;
    CHECK(conc_process_pool_submit(ex, &f, b_unregistered, &x, sizeof x) == CONC_EINVAL);
    CHECK(conc_process_pool_submit(ex, NULL, b_square, &x, sizeof x) == CONC_EINVAL);
    CHECK(conc_process_pool_submit(ex, &f, b_square, NULL, 4) == CONC_EINVAL);
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

static int body_exceptions(const factory_t *F)
{
    conc_executor_t *ex;
    CHECK(F->make(&ex, 2, NULL, NULL, 0) == 0);
    conc_future_t *f, *g;
    int x = 5;
    CHECK(conc_process_pool_submit(ex, &f, b_raiser, &x, sizeof x) == 0);
    CHECK(conc_process_pool_submit(ex, &g, b_nonzero, &x, sizeof x) == 0);
    const void *d;
    size_t n;
    CHECK(conc_future_bytes(f, 30, &d, &n) == CONC_EFAILED);
    int code = 0;
    const char *msg = NULL;
    CHECK(conc_future_exception(f, 0, &code, &msg) == 0);
    CHECK(code == CONC_ERANGE, "code %d", code);
    CHECK(msg && strcmp(msg, "bad item 5") == 0, "msg %s", msg ? msg : "(null)");
    CHECK(conc_future_bytes(g, 30, &d, &n) == CONC_EFAILED);
    CHECK(conc_future_exception(g, 0, &code, &msg) == 0);
    CHECK(code == CONC_EFAILED);
    conc_future_free(f);
    conc_future_free(g);
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

static int check_map(const factory_t *F, size_t chunksize)
{
    conc_executor_t *ex;
    CHECK(F->make(&ex, 3, NULL, NULL, 0) == 0);
    enum { N = 3000 };
    static int in[N], out[N];
    for (int i = 0; i < N; i++)
        in[i] = i;
    conc_results_t *r = NULL;
    CHECK(conc_process_pool_map(ex, b_square, in, sizeof(int), N, chunksize, 60, &r) == 0);
    CHECK(conc_results_len(r) == N);
    CHECK(conc_results_copy(r, out, sizeof(int)) == 0);
    for (int i = 0; i < N; i++)
        CHECK(out[i] == i * i, "item %d", i);
    conc_results_free(r);
    /* conc_map with word tasks: by name */
    void *args[50], *res[50];
    for (int i = 0; i < 50; i++)
        args[i] = (void *)(uintptr_t)i;
    CHECK(conc_map(ex, b_word_sq, args, 50, res, NULL) == CONC_ENOTSUP);
    CHECK(conc_process_pool_map_word(ex, b_word_sq, args, 50, res, NULL) == 0);
    for (int i = 0; i < 50; i++)
        CHECK((uintptr_t)res[i] == (uintptr_t)(i * i));
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}
static int body_map(const factory_t *F) { return check_map(F, 1); }
static int body_map_chunked(const factory_t *F) { return check_map(F, 7) || check_map(F, 5000); }

static int body_map_exception(const factory_t *F)
{
    conc_executor_t *ex;
    CHECK(F->make(&ex, 2, NULL, NULL, 0) == 0);
    enum { N = 2500 };
    static int in[N];
    for (int i = 0; i < N; i++)
        in[i] = i;
    conc_results_t *r = NULL;
    CHECK(conc_process_pool_map(ex, b_odd_fails, in, sizeof(int), N, 100, 60, &r) == CONC_EFAILED);
    CHECK(r && conc_results_len(r) == N);
    int code;
    const char *msg;
    CHECK(conc_results_item(r, 999, NULL, NULL) == CONC_EFAILED);
    CHECK(conc_results_exception(r, 999, &code, &msg) == 0 && code == CONC_ERANGE);
    CHECK(strcmp(msg, "item 999 is odd") == 0);
    const void *d;
    size_t n;
    CHECK(conc_results_item(r, 1000, &d, &n) == 0 && n == sizeof(int) && *(const int *)d == 1000);
    conc_results_free(r);
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

static int body_as_completed(const factory_t *F)
{
    conc_executor_t *ex;
    CHECK(F->make(&ex, 3, NULL, NULL, 0) == 0);
    int ms[3] = {600, 10, 250};
    conc_future_t *fs[3];
    for (int i = 0; i < 3; i++)
        CHECK(conc_process_pool_submit(ex, &fs[i], b_sleep_ms, &ms[i], sizeof ms[i]) == 0);
    conc_as_completed_t *it;
    CHECK(conc_as_completed_new(&it, fs, 3, 30) == 0);
    conc_future_t *got[3];
    for (int i = 0; i < 3; i++)
        CHECK(conc_as_completed_next(it, &got[i]) == 0);
    conc_future_t *none;
    CHECK(conc_as_completed_next(it, &none) == CONC_EEOF);
    CHECK(got[0] == fs[1], "the 10 ms task first");
    CHECK(got[2] == fs[0], "the 600 ms task last");
    conc_as_completed_free(it);
    /* wait: FIRST_COMPLETED then ALL_COMPLETED */
    conc_future_t *g[2];
    int a = 10, b = 500;
    CHECK(conc_process_pool_submit(ex, &g[0], b_sleep_ms, &a, sizeof a) == 0);
    CHECK(conc_process_pool_submit(ex, &g[1], b_sleep_ms, &b, sizeof b) == 0);
    conc_future_t *done[2], *nd[2];
    size_t ndone, nnd;
    CHECK(conc_wait(g, 2, 30, CONC_FIRST_COMPLETED, done, &ndone, nd, &nnd) == 0);
    CHECK(ndone == 1 && done[0] == g[0] && nnd == 1);
    CHECK(conc_wait(g, 2, 30, CONC_ALL_COMPLETED, done, &ndone, nd, &nnd) == 0);
    CHECK(ndone == 2 && nnd == 0);
    CHECK(conc_wait(g, 2, 0, CONC_ALL_COMPLETED, done, &ndone, nd, &nnd) == 0 && ndone == 2);
    for (int i = 0; i < 3; i++)
        conc_future_free(fs[i]);
    conc_future_free(g[0]);
    conc_future_free(g[1]);
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

static int body_timeout_and_cancel(const factory_t *F)
{
    conc_executor_t *ex;
    CHECK(F->make(&ex, 1, NULL, NULL, 0) == 0);
    int ms = 300;
    conc_future_t *fs[6];
    for (int i = 0; i < 6; i++)
        CHECK(conc_process_pool_submit(ex, &fs[i], b_sleep_ms, &ms, sizeof ms) == 0);
    const void *d;
    size_t n;
    CHECK(conc_future_bytes(fs[0], 0.05, &d, &n) == CONC_ETIMEDOUT); /* the wait's own timeout */
    /* the last one has not started (one worker, at most 2 in flight) */
    CHECK(conc_future_cancel(fs[5]) == true);
    CHECK(conc_future_cancelled(fs[5]));
    CHECK(conc_future_bytes(fs[5], 1, &d, &n) == CONC_ECANCELLED);
    CHECK(conc_future_bytes(fs[0], 30, &d, &n) == 0);
    CHECK(conc_future_cancel(fs[0]) == false); /* finished */
    for (int i = 0; i < 5; i++)
        CHECK(conc_future_bytes(fs[i], 30, &d, &n) == 0, "task %d", i);
    for (int i = 0; i < 6; i++)
        conc_future_free(fs[i]);
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

static int body_shutdown_wait(const factory_t *F)
{
    conc_executor_t *ex;
    CHECK(F->make(&ex, 2, NULL, NULL, 0) == 0);
    int pids[8];
    size_t np = F->pids(ex, pids, 8);
    CHECK(np == 2, "%zu workers", np);
    int ms = 100;
    conc_future_t *fs[4];
    for (int i = 0; i < 4; i++)
        CHECK(conc_process_pool_submit(ex, &fs[i], b_sleep_ms, &ms, sizeof ms) == 0);
    CHECK(conc_executor_shutdown(ex, true, false) == 0);
    for (int i = 0; i < 4; i++)
        CHECK(conc_future_done(fs[i]) && !conc_future_cancelled(fs[i]));
    conc_future_t *f;
    CHECK(conc_process_pool_submit(ex, &f, b_sleep_ms, &ms, sizeof ms) == CONC_ESHUTDOWN);
    CHECK(conc_process_pool_submit_word(ex, &f, b_word_sq, NULL) == CONC_ESHUTDOWN);
    CHECK(conc_executor_shutdown(ex, true, false) == 0); /* twice is fine */
    for (int i = 0; i < 4; i++)
        conc_future_free(fs[i]);
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

static int body_shutdown_cancel_futures(const factory_t *F)
{
    conc_executor_t *ex;
    CHECK(F->make(&ex, 1, NULL, NULL, 0) == 0);
    int ms = 200;
    enum { N = 8 };
    conc_future_t *fs[N];
    for (int i = 0; i < N; i++)
        CHECK(conc_process_pool_submit(ex, &fs[i], b_sleep_ms, &ms, sizeof ms) == 0);
    usleep(50000);
    CHECK(conc_executor_shutdown(ex, true, true) == 0);
    int cancelled = 0, done = 0;
    for (int i = 0; i < N; i++) {
        CHECK(conc_future_done(fs[i]), "future %d not done after shutdown(wait)", i);
        if (conc_future_cancelled(fs[i]))
            cancelled++;
        else
            done++;
    }
    CHECK(cancelled >= N - 3 && done >= 1, "cancelled %d done %d", cancelled, done);
    /* as wait() sees it: cancelled futures were notified */
    conc_future_t *d[N], *nd[N];
    size_t nd1, nnd;
    CHECK(conc_wait(fs, N, 0, CONC_ALL_COMPLETED, d, &nd1, nd, &nnd) == 0 && nd1 == N);
    for (int i = 0; i < N; i++)
        conc_future_free(fs[i]);
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

static int body_free_leaves_no_worker(const factory_t *F)
{
    conc_executor_t *ex;
    CHECK(F->make(&ex, 2, NULL, NULL, 0) == 0);
    int pids[8];
    size_t np = F->pids(ex, pids, 8);
    CHECK(np == 2);
    conc_future_t *f;
    int x = 3;
    CHECK(conc_process_pool_submit(ex, &f, b_square, &x, sizeof x) == 0);
    conc_future_free(f); /* given back before it ran: still runs, nothing leaks */
    CHECK(conc_executor_free(ex) == 0);
    for (size_t i = 0; i < np; i++)
        CHECK(F->persist ? !h_gone(pids[i]) : h_wait_gone(pids[i], 10), "worker %d", pids[i]);
    return 0;
}

static int body_initializer(const factory_t *F)
{
    conc_executor_t *ex;
    int v = 4242;
    CHECK(F->make(&ex, 2, b_init_ok, &v, sizeof v) == 0);
    conc_future_t *fs[4];
    for (int i = 0; i < 4; i++)
        CHECK(conc_process_pool_submit(ex, &fs[i], b_get_init, NULL, 0) == 0);
    for (int i = 0; i < 4; i++) {
        int got = 0;
        CHECK(int_of(fs[i], &got) == 0 && got == 4242, "got %d", got);
        conc_future_free(fs[i]);
    }
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

static int body_broken_initializer(const factory_t *F)
{
    conc_executor_t *ex;
    CHECK(F->make(&ex, 1, b_init_fail, NULL, 0) == 0);
    conc_future_t *f;
    int x = 2;
    int rc = conc_process_pool_submit(ex, &f, b_square, &x, sizeof x);
    if (rc == 0) {
        const void *d;
        size_t n;
        CHECK(conc_future_bytes(f, 30, &d, &n) == CONC_EFAILED);
        int code;
        const char *msg;
        CHECK(conc_future_exception(f, 0, &code, &msg) == 0 && code == CONC_EBROKEN, "code %d", code);
        conc_future_free(f);
    } else {
        CHECK(rc == CONC_EBROKEN);
    }
    /* later submits see the broken executor */
    double end = h_now() + 10;
    while ((rc = conc_process_pool_submit(ex, &f, b_square, &x, sizeof x)) == 0 && h_now() < end) {
        conc_future_bytes(f, 30, NULL, NULL);
        conc_future_free(f);
        usleep(10000);
    }
    CHECK(rc == CONC_EBROKEN, "rc %d", rc);
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

/* After many trivial tasks (big batches), a few slow ones still spread
 * over the workers instead of queueing behind each other in one batch. */
static int body_slow_after_fast(const factory_t *F)
{
    conc_executor_t *ex;
    CHECK(F->make(&ex, 3, NULL, NULL, 0) == 0);
    enum { N = 3000 };
    conc_future_t **fs = malloc(N * sizeof *fs);
    for (int i = 0; i < N; i++)
        CHECK(conc_process_pool_submit(ex, &fs[i], b_square, &i, sizeof i) == 0);
    for (int i = 0; i < N; i++) {
        int v;
        CHECK(int_of(fs[i], &v) == 0 && v == i * i);
        conc_future_free(fs[i]);
    }
    free(fs);
    int ms = 400;
    conc_future_t *g[3];
    double t0 = h_now();
    for (int i = 0; i < 3; i++)
        CHECK(conc_process_pool_submit(ex, &g[i], b_sleep_ms, &ms, sizeof ms) == 0);
    for (int i = 0; i < 3; i++) {
        int v;
        CHECK(int_of(g[i], &v) == 0);
        conc_future_free(g[i]);
    }
    double dt = h_now() - t0;
    CHECK(dt < 1.0, "3 x 400 ms on 3 workers took %.2f s", dt);
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

typedef struct {
    const char *name;
    int (*fn)(const factory_t *);
} body_t;

static const body_t exec_bodies[] = {
    {"submit", body_submit},
    {"misuse", body_misuse},
    {"exceptions", body_exceptions},
    {"map", body_map},
    {"map_chunked", body_map_chunked},
    {"map_exception", body_map_exception},
    {"as_completed_and_wait", body_as_completed},
    {"timeout_and_cancel", body_timeout_and_cancel},
    {"shutdown_wait", body_shutdown_wait},
    {"shutdown_cancel_futures", body_shutdown_cancel_futures},
    {"free_leaves_no_worker", body_free_leaves_no_worker},
    {"initializer", body_initializer},
    {"broken_initializer", body_broken_initializer},
    {"slow_after_fast_spread", body_slow_after_fast},
};
#endif
