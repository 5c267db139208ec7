/*
 * examples/mpi/tour_mpi.c — `make demo-mpi`: a tour of the MPI executor,
 * run under mpirun with 4 ranks (rank 0 runs this main, ranks 1-3 serve):
 *
 *   mpirun --oversubscribe -n 4 ./build/tour_mpi
 *
 * Started alone (./build/tour_mpi) it spawns its workers instead. Each
 * section prints what it shows and checks it; the exit status is 0 when all
 * behaved as promised.
 */
#define _GNU_SOURCE
#include <conc.h>
#include <conc/mpi.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* ---- the tasks: the process pool's registered functions and bytes ---- */

static int square(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)len;
    long x = *(const long *)arg, y = x * x;
    return conc_pool_return(out, &y, sizeof y);
}
CONC_POOL_REGISTER(square);

static int where(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len;
    char buf[64];
    int n = snprintf(buf, sizeof buf, "rank %d, pid %d", conc_mpi_rank(), (int)getpid());
    return conc_pool_return(out, buf, (size_t)n + 1);
}
CONC_POOL_REGISTER(where);

static int slow(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)len;
    int ms = *(const int *)arg;
    usleep((useconds_t)ms * 1000);
    return conc_pool_return(out, &ms, sizeof ms);
}
CONC_POOL_REGISTER(slow);

static int picky(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)len, (void)out;
    return conc_fail(CONC_ERANGE, "%ld is too big", *(const long *)arg), 0;
}
CONC_POOL_REGISTER(picky);

static long greeting;
static int init(const void *arg, size_t len)
{
    (void)len;
    greeting = *(const long *)arg;
    return 0;
}
CONC_REGISTER(init);

static int get_greeting(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)arg, (void)len;
    return conc_pool_return(out, &greeting, sizeof greeting);
}
CONC_POOL_REGISTER(get_greeting);

static int failures;
#define SHOW(ok, ...)                                                                   \
    do {                                                                                \
        int ok_ = (ok);                                                                 \
        printf("  %s ", ok_ ? "ok " : "BAD");                                           \
        printf(__VA_ARGS__);                                                            \
        printf("\n");                                                                   \
        failures += !ok_;                                                               \
    } while (0)

/* The same function works on any executor that takes pool tasks. */
static long sum_of_squares(conc_executor_t *ex, long n)
{
    long items[1000];
    for (long i = 0; i < n; i++)
        items[i] = i;
    conc_results_t *r;
    if (conc_process_pool_map(ex, square, items, sizeof(long), (size_t)n, 50, CONC_FOREVER, &r))
        return -1;
    long out[1000], s = 0;
    conc_results_copy(r, out, sizeof(long));
    conc_results_free(r);
    for (long i = 0; i < n; i++)
        s += out[i];
    return s;
}

static void *green_waiter(void *arg)
{
    conc_future_t *f = arg;
    const void *d;
    size_t n;
    return (void *)(long)conc_future_bytes(f, 30, &d, &n);
}

int main(int argc, char **argv)
{
    CONC_MPI_MAIN(argc, argv); /* ranks 1.. serve tasks in here and never return */
    int ranks = conc_mpi_world_size();
    printf("conc MPI tour: %s, %d rank(s)\n\n", ranks > 1 ? "under mpirun" : "alone (spawning workers)", ranks);

    printf("1. One constructor apart: the same map on a process pool and on MPI ranks\n");
    conc_executor_t *pool, *mpi;
    conc_process_pool_new(&pool, &(conc_process_pool_opts_t){.max_workers = 2});
    long want = 999L * 1000 * 1999 / 6;
    SHOW(sum_of_squares(pool, 1000) == want, "process pool: sum of squares below 1000 = %ld", want);
    conc_executor_free(pool);
    long hello = 42;
    conc_mpi_opts_t o = {.initializer = init, .initarg = &hello, .initarg_len = sizeof hello,
                         .max_workers = ranks > 1 ? 0 : 3};
    if (conc_mpi_executor_new(&mpi, &o) != 0) {
        printf("  could not start the MPI executor\n");
        return 1;
    }
    SHOW(sum_of_squares(mpi, 1000) == want, "MPI executor: the same sum, computed on the ranks");

    printf("\n2. Where tasks run: each worker is its own MPI process\n");
    conc_future_t *fs[3];
    for (int i = 0; i < 3; i++)
        conc_process_pool_submit(mpi, &fs[i], where, NULL, 0);
    for (int i = 0; i < 3; i++) {
        const void *d;
        size_t n;
        int rc = conc_future_bytes(fs[i], 30, &d, &n);
        SHOW(rc == 0, "task %d ran on %s", i, rc == 0 ? (const char *)d : "?");
        conc_future_free(fs[i]);
    }
    conc_future_t *g;
    conc_process_pool_submit(mpi, &g, get_greeting, NULL, 0);
    const void *d;
    size_t n;
    SHOW(conc_future_bytes(g, 30, &d, &n) == 0 && *(const long *)d == 42,
         "the initializer ran in every worker first (greeting = 42)");
    conc_future_free(g);

    printf("\n3. as_completed: results as they finish, not as submitted\n");
    int ms[3] = {300, 20, 150};
    for (int i = 0; i < 3; i++)
        conc_process_pool_submit(mpi, &fs[i], slow, &ms[i], sizeof ms[i]);
    conc_as_completed_t *it;
    conc_as_completed_new(&it, fs, 3, 30);
    conc_future_t *f;
    int order = 0;
    while (conc_as_completed_next(it, &f) == 0) {
        conc_future_bytes(f, 0, &d, &n);
        printf("      finished: the %d ms task\n", *(const int *)d);
        order = order * 10 + (f == fs[0] ? 1 : f == fs[1] ? 2 : 3);
    }
    conc_as_completed_free(it);
    SHOW(order == 231, "shortest first");
    for (int i = 0; i < 3; i++)
        conc_future_free(fs[i]);

    printf("\n4. A task's failure comes back with its code and message\n");
    long big = 1L << 40;
    conc_process_pool_submit(mpi, &f, picky, &big, sizeof big);
    int rc = conc_future_bytes(f, 30, &d, &n), code = 0;
    const char *msg = NULL;
    conc_future_exception(f, 0, &code, &msg);
    SHOW(rc == CONC_EFAILED && code == CONC_ERANGE, "result: %s; exception: %s \"%s\"", conc_errname(rc),
         conc_errname(code), msg ? msg : "");
    conc_future_free(f);

    printf("\n5. Waiting on an MPI future parks only the waiting green thread\n");
    int pause = 200;
    conc_process_pool_submit(mpi, &f, slow, &pause, sizeof pause);
    conc_green_t *w;
    conc_go(&w, green_waiter, f);
    int ticks = 0;
    while (!conc_future_done(f)) {
        conc_sleep(0.01);
        ticks++;
    }
    void *res;
    conc_green_get(w, CONC_FOREVER, &res);
    conc_green_free(w);
    SHOW(ticks >= 5 && res == NULL, "main ticked %d times while a green thread waited for the rank", ticks);
    conc_future_free(f);

    printf("\n6. Shutdown: drains the work, then the workers %s\n",
           ranks > 1 ? "go back to waiting (they exit with rank 0)" : "exit");
    SHOW(conc_executor_free(mpi) == 0, "executor freed");
    printf("\n%s\n", failures ? "some sections misbehaved" : "all sections behaved as promised");
    return failures ? 1 : 0;
}
