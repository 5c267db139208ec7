/*
 * process_pool.c — ProcessPoolExecutor and multiprocessing.Pool.
 *
 *   1. submit a task to a process pool and read its result bytes;
 *   2. Pool.map over a million integers (default chunking);
 *   3. imap_unordered with a progress line;
 *   4. a worker killed on purpose: the broken pool's error, not a hang.
 *
 * Functions that run in workers are registered (CONC_POOL_REGISTER) and
 * main begins with CONC_PROCESS_MAIN, so any start method works.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <conc.h>
#include <conc/pool.h>

static int square(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)len;
    long x;
    memcpy(&x, arg, sizeof x);
    long y = x * x;
    return conc_pool_return(out, &y, sizeof y);
}
CONC_POOL_REGISTER(square);

static int greet(const void *arg, size_t len, conc_pool_out_t *out)
{
    char buf[128];
    int n = snprintf(buf, sizeof buf, "hello, %.*s, from pid %d", (int)len, (const char *)arg, (int)getpid());
    return conc_pool_return(out, buf, (size_t)n + 1);
}
CONC_POOL_REGISTER(greet);

static int nap(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len, (void)out;
    sleep(10);
    return 0;
}
CONC_POOL_REGISTER(nap);

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    CONC_PROCESS_MAIN(argc, argv);

    /* 1. ProcessPoolExecutor: submit + result bytes */
    conc_executor_t *ex;
    if (conc_process_pool_new(&ex, &(conc_process_pool_opts_t){.max_workers = 2}) != 0)
        return 1;
    conc_future_t *f;
    conc_process_pool_submit(ex, &f, greet, "world", 5);
    const void *r;
    size_t n;
    if (conc_future_bytes(f, CONC_FOREVER, &r, &n) == 0)
        printf("1. %s\n", (const char *)r);
    conc_future_free(f);

    /* 4. kill a busy worker: its future fails at once (BrokenProcessPool:
     * exception CONC_EBROKEN, message naming the worker) */
    conc_process_pool_submit(ex, &f, nap, NULL, 0);
    usleep(100000);
    int pids[8];
    size_t np = conc_process_pool_pids(ex, pids, 8);
    double t0 = now();
    for (size_t i = 0; i < np; i++)
        kill(pids[i], SIGKILL);
    int code;
    const char *msg;
    conc_future_exception(f, 5.0, &code, &msg);
    printf("4. broken pool after %.1f ms: %s: %s\n", (now() - t0) * 1e3, conc_errname(code), msg);
    conc_future_free(f);
    conc_executor_free(ex);

    /* 2. Pool.map over a million integers */
    conc_pool_t *pool;
    if (conc_pool_new(&pool, &(conc_pool_opts_t){.processes = 2}) != 0)
        return 1;
    size_t N = 1000000;
    long *xs = malloc(N * sizeof *xs), *ys = malloc(N * sizeof *ys);
    for (size_t i = 0; i < N; i++)
        xs[i] = (long)i;
    conc_results_t *res;
    t0 = now();
    int rc = conc_pool_map(pool, square, xs, sizeof *xs, N, 0, &res);
    if (rc == 0)
        rc = conc_results_copy(res, ys, sizeof *ys);
    printf("2. map of %zu squares in %.1f ms: ys[999999] = %ld (%s)\n", N, (now() - t0) * 1e3, ys[N - 1],
           conc_strerror(rc));
    conc_results_free(res);

    /* 3. imap_unordered with progress */
    conc_pool_iter_t *it;
    conc_pool_imap_unordered(pool, square, xs, sizeof *xs, 40, 1, &it);
    long sum = 0;
    for (size_t k = 1; conc_pool_iter_next(it, CONC_FOREVER, &r, &n, NULL) == 0; k++) {
        long y;
        memcpy(&y, r, sizeof y);
        sum += y;
        printf("\r3. imap_unordered %2zu/40", k);
        fflush(stdout);
    }
    printf(" sum of squares = %ld\n", sum);
    conc_pool_iter_free(it);
    conc_pool_close(pool);
    conc_pool_join(pool, CONC_FOREVER);
    conc_pool_free(pool);
    free(xs);
    free(ys);
    return 0;
}
