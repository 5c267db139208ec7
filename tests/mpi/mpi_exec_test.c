/*
 * mpi_exec_test.c — the MPI executor's tests (a plain program: see
 * harness.h for why not Criterion).
 *
 *   mpirun -n 4 ./mpi_exec_test     launch mode 1: ranks 1..3 serve
 *   ./mpi_exec_test                 launch mode 2: workers are spawned
 *
 * Every body of exec_bodies.h runs against conc's process pool and then
 * against the MPI executor, so both are held to the same behaviour.
 */
#include "exec_bodies.h"

#include <conc/mpi.h>

static int mk_pool(conc_executor_t **ex, size_t workers, conc_process_fn init, const void *arg, size_t len)
{
    conc_process_pool_opts_t o = {.max_workers = workers, .initializer = init, .initarg = arg, .initarg_len = len};
    return conc_process_pool_new(ex, &o);
}

/* Open MPI 4.1's MPI_Comm_spawn hangs now and then (docs/mpi.md): a start
 * that times out in spawn mode stops the spawn-mode tests with a note
 * instead of failing them (conc's side of it, the timeout, is what is
 * tested then). */
static int spawn_hung;

static int mk_mpi(conc_executor_t **ex, size_t workers, conc_process_fn init, const void *arg, size_t len)
{
    conc_mpi_opts_t o = {.max_workers = workers, .initializer = init, .initarg = arg, .initarg_len = len,
                         .start_timeout = 20};
    int rc = conc_mpi_executor_new(ex, &o);
    if (rc == CONC_ETIMEDOUT && conc_mpi_world_size() <= 1)
        spawn_hung = 1;
    return rc;
}

static void run_mpi(const char *mode, const char *name, int (*fn)(void *), void *arg)
{
    if (spawn_hung) {
        printf("[%s] %-40s skipped: Open MPI's MPI_Comm_spawn hung earlier\n", mode, name);
        return;
    }
    int before = h_failed;
    h_run(mode, name, fn, arg);
    if (spawn_hung && h_failed > before) {
        h_failed = before;
        printf("SKIP: Open MPI's MPI_Comm_spawn did not return within 20 s (a known Open MPI 4.1 hang, "
               "docs/mpi.md): conc_mpi_executor_new returned CONC_ETIMEDOUT; the rest of the spawn-mode "
               "tests are skipped\n");
    }
}

static const factory_t pool_factory = {"process_pool", mk_pool, conc_process_pool_pids, false};
static factory_t mpi_factory = {"mpi", mk_mpi, conc_mpi_executor_pids, false};

typedef struct {
    const body_t *b;
    const factory_t *f;
} job_t;

static int run_body(void *p)
{
    job_t *j = p;
    return j->b->fn(j->f);
}

static int init_unregistered(const void *arg, size_t len)
{
    (void)arg, (void)len;
    return 0;
}

static int cb_rc = 1;
static void free_from_callback(conc_future_t *f, void *ex)
{
    (void)f;
    __atomic_store_n(&cb_rc, conc_executor_free(ex), __ATOMIC_RELEASE);
}

/* MPI only: bad options; one executor at a time on mpirun's ranks. */
static int t_mpi_options(void *p)
{
    (void)p;
    conc_executor_t *ex, *ex2;
    CHECK(conc_mpi_executor_new(NULL, NULL) == CONC_EINVAL);
    conc_mpi_opts_t o = {.max_workers = 5000};
    CHECK(conc_mpi_executor_new(&ex, &o) == CONC_EINVAL);
    o = (conc_mpi_opts_t){.initializer = init_unregistered};
    CHECK(conc_mpi_executor_new(&ex, &o) == CONC_EINVAL);
    CHECK(conc_mpi_executor_pids(NULL, NULL, 0) == 0);
    o = (conc_mpi_opts_t){.spawn = true, .max_workers = 1, .command = "/nonexistent/conc-worker"};
    CHECK(conc_mpi_executor_new(&ex, &o) == CONC_EINVAL); /* Open MPI's spawn would hang */
    o.command = "no-such-program-conc-mpi";
    CHECK(conc_mpi_executor_new(&ex, &o) == CONC_EINVAL);
    /* freeing the executor from a callback on its own thread is refused */
    CHECK(mk_mpi(&ex, 1, NULL, NULL, 0) == 0);
    conc_future_t *f;
    int ms = 50;
    CHECK(conc_process_pool_submit(ex, &f, b_sleep_ms, &ms, sizeof ms) == 0);
    CHECK(conc_future_add_done_callback(f, free_from_callback, ex) == 0);
    CHECK(conc_future_bytes(f, 30, NULL, NULL) == 0);
    double end = h_now() + 10;
    while (__atomic_load_n(&cb_rc, __ATOMIC_ACQUIRE) == 1 && h_now() < end)
        usleep(1000);
    CHECK(cb_rc == CONC_EPERM, "rc %d", cb_rc);
    conc_future_free(f);
    CHECK(conc_executor_free(ex) == 0);
    if (conc_mpi_world_size() > 1) {
        o = (conc_mpi_opts_t){.max_workers = (size_t)conc_mpi_world_size()};
        CHECK(conc_mpi_executor_new(&ex, &o) == CONC_EINVAL); /* more than the ranks */
        CHECK(conc_mpi_executor_new(&ex, NULL) == 0);
        CHECK(conc_mpi_executor_new(&ex2, NULL) == CONC_EAGAIN);
        CHECK(conc_executor_free(ex) == 0);
        CHECK(conc_mpi_executor_new(&ex, NULL) == 0); /* again, after the first */
        CHECK(conc_executor_free(ex) == 0);
    }
    return 0;
}

/* A start that takes longer than start_timeout returns CONC_ETIMEDOUT;
 * the executor is dropped when its setup ends, and the next one works. */
static int t_start_timeout(void *p)
{
    (void)p;
    conc_executor_t *ex;
    conc_mpi_opts_t o = {.max_workers = 2, .start_timeout = 1e-6};
    int rc = conc_mpi_executor_new(&ex, &o);
    CHECK(rc == CONC_ETIMEDOUT || rc == 0, "rc %d", rc);
    if (rc == 0)
        CHECK(conc_executor_free(ex) == 0);
    /* the abandoned one is finished by the thread; then the ranks are free */
    double end = h_now() + 20;
    while ((rc = mk_mpi(&ex, 2, NULL, NULL, 0)) == CONC_EAGAIN && h_now() < end)
        usleep(10000);
    CHECK(rc == 0, "rc %d", rc);
    conc_future_t *f;
    int x = 4, v = 0;
    CHECK(conc_process_pool_submit(ex, &f, b_square, &x, sizeof x) == 0);
    CHECK(int_of(f, &v) == 0 && v == 16);
    conc_future_free(f);
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

/* A green thread waiting on an MPI future parks only itself. */
static int g_counter;
static bool g_started_before_done;
static void *g_tick(void *a)
{
    /* runs once the other green thread parked in its wait: a wait that
     * blocked the OS thread would only let it start after the 300 ms task */
    g_started_before_done = !conc_future_done(a);
    for (int i = 0; i < 20; i++) {
        g_counter++;
        conc_sleep(0.005);
    }
    return NULL;
}

static void *g_wait(void *a)
{
    conc_future_t *f = a;
    const void *d;
    size_t n;
    return (void *)(intptr_t)conc_future_bytes(f, 30, &d, &n);
}

static int t_green_wait(void *p)
{
    (void)p;
    conc_executor_t *ex;
    CHECK(mk_mpi(&ex, 1, NULL, NULL, 0) == 0);
    int ms = 300;
    conc_future_t *f;
    CHECK(conc_process_pool_submit(ex, &f, b_sleep_ms, &ms, sizeof ms) == 0);
    conc_green_t *a, *b;
    CHECK(conc_go(&a, g_wait, f) == 0);
    CHECK(conc_go(&b, g_tick, f) == 0);
    void *ra = NULL;
    CHECK(conc_green_join(b, CONC_FOREVER) == 0);
    CHECK(g_counter == 20);
    CHECK(g_started_before_done); /* ran while the other waited */
    CHECK(conc_green_get(a, CONC_FOREVER, &ra) == 0);
    CHECK((intptr_t)ra == 0);
    conc_green_free(a);
    conc_green_free(b);
    conc_future_free(f);
    /* a Timeout scope and a kill cut a wait on an MPI future short */
    CHECK(conc_process_pool_submit(ex, &f, b_sleep_ms, &ms, sizeof ms) == 0);
    conc_timeout_begin(0.05);
    const void *d;
    size_t n;
    double t0 = h_now();
    CHECK(conc_future_bytes(f, CONC_FOREVER, &d, &n) == CONC_ETIMEDOUT);
    conc_timeout_end();
    CHECK(h_now() - t0 < 0.25);
    CHECK(conc_go(&a, g_wait, f) == 0);
    conc_sleep(0.02);
    CHECK(conc_green_kill(a, true, 5) == 0);
    CHECK(conc_green_killed(a));
    conc_green_free(a);
    CHECK(conc_future_bytes(f, 30, &d, &n) == 0); /* the task itself still ran */
    conc_future_free(f);
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

/* A reply that cannot be received for want of memory fails its batch's
 * futures with CONC_ENOMEM (no truncation error, no broken executor). */
static int b_big(const void *arg, size_t len, conc_pool_out_t *out)
{
    int n = len == sizeof(int) ? *(const int *)arg : 0;
    char *p = malloc((size_t)n);
    if (!p)
        return conc_fail(CONC_ENOMEM, "no memory"), 0;
    memset(p, 'z', (size_t)n);
    int rc = conc_pool_return(out, p, (size_t)n);
    free(p);
    return rc;
}
CONC_POOL_REGISTER(b_big);

extern bool conc__mpi_test_nomem; /* src/mpi/executor.c */

static int t_reply_nomem(void *p)
{
    (void)p;
    conc_executor_t *ex;
    CHECK(mk_mpi(&ex, 1, NULL, NULL, 0) == 0);
    conc_future_t *f;
    const void *d;
    size_t n;
    int x = 7, big = 24 << 20; /* bigger than any reply before: the buffer must grow */
    CHECK(conc_process_pool_submit(ex, &f, b_square, &x, sizeof x) == 0);
    CHECK(conc_future_bytes(f, 30, &d, &n) == 0); /* the worker is up */
    conc_future_free(f);
    __atomic_store_n(&conc__mpi_test_nomem, true, __ATOMIC_RELAXED);
    CHECK(conc_process_pool_submit(ex, &f, b_big, &big, sizeof big) == 0);
    int rc = conc_future_bytes(f, 60, &d, &n), code = 0;
    __atomic_store_n(&conc__mpi_test_nomem, false, __ATOMIC_RELAXED);
    CHECK(rc == CONC_EFAILED, "got %d", rc);
    CHECK(conc_future_exception(f, 0, &code, NULL) == 0);
    CHECK(code == CONC_ENOMEM, "code %d", code);
    conc_future_free(f);
    /* the executor goes on */
    CHECK(conc_process_pool_submit(ex, &f, b_square, &x, sizeof x) == 0);
    CHECK(conc_future_bytes(f, 30, &d, &n) == 0 && n == sizeof(int) && *(const int *)d == 49);
    conc_future_free(f);
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

/* conc_mpi_main on rank 0, directly: the world is known (mpirun's ranks,
 * or 1 alone); a second call returns 0 and does no collective call again
 * (a second MPI_Comm_dup on rank 0 alone would hang the next executor). */
static int main_argc;
static char **main_argv;
static int t_main_direct(void *p)
{
    (void)p;
    int size = conc_mpi_world_size();
    CHECK(conc_mpi_rank() == 0, "rank %d", conc_mpi_rank());
    CHECK(size >= 1, "size %d", size);
    CHECK(conc_mpi_main(&main_argc, &main_argv) == 0);
    CHECK(conc_mpi_main(NULL, NULL) == 0);
    CHECK(conc_mpi_rank() == 0 && conc_mpi_world_size() == size);
    conc_executor_t *ex;
    CHECK(mk_mpi(&ex, 1, NULL, NULL, 0) == 0);
    conc_future_t *f;
    int x = 5, v = 0;
    CHECK(conc_process_pool_submit(ex, &f, b_square, &x, sizeof x) == 0);
    CHECK(int_of(f, &v) == 0 && v == 25);
    conc_future_free(f);
    CHECK(conc_executor_free(ex) == 0);
    return 0;
}

int main(int argc, char **argv)
{
    CONC_MPI_MAIN(argc, argv);
    main_argc = argc, main_argv = argv;
    const char *mode = conc_mpi_world_size() > 1 ? "world" : "spawn";
    mpi_factory.persist = conc_mpi_world_size() > 1;
    printf("conc MPI executor tests, launch mode: %s (%d ranks)\n", mode, conc_mpi_world_size());
    const char *only = getenv("MPI_TEST_ONLY");
    for (size_t i = 0; i < sizeof exec_bodies / sizeof *exec_bodies; i++) {
        if (only && !strstr(exec_bodies[i].name, only))
            continue;
        job_t jp = {&exec_bodies[i], &pool_factory}, jm = {&exec_bodies[i], &mpi_factory};
        if (!getenv("MPI_TEST_NO_POOL"))
            h_run("process_pool", exec_bodies[i].name, run_body, &jp);
        run_mpi(mode, exec_bodies[i].name, run_body, &jm);
    }
    if (!only) {
        run_mpi(mode, "main_called_again", t_main_direct, NULL);
        run_mpi(mode, "options", t_mpi_options, NULL);
        run_mpi(mode, "start_timeout", t_start_timeout, NULL);
        run_mpi(mode, "green_wait_parks_only_itself", t_green_wait, NULL);
        run_mpi(mode, "reply_without_memory_fails_its_batch", t_reply_nomem, NULL);
    }
    /* Left alive at exit (Python joins its executors at exit): the atexit
     * step shuts it down with wait, releases the ranks and finalizes MPI;
     * run.sh then checks that no process of ours is left. */
    conc_executor_t *ex;
    conc_future_t *f;
    int ms = 100;
    if (!only && !spawn_hung && mk_mpi(&ex, 2, NULL, NULL, 0) == 0 && conc_process_pool_submit(ex, &f, b_sleep_ms, &ms, sizeof ms) == 0) {
        conc_future_free(f);
        printf("exiting with a live MPI executor and a task in flight\n");
    }
    return h_summary();
}
