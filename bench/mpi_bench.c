/*
 * bench/mpi_bench.c — the MPI executor (module "mpi") against
 * mpi4py.futures and against conc's own process pool on this machine.
 *
 * Rows (impls conc, mpi4py, conc_pool):
 *   mpi.throughput   tasks/s: submit 20k trivial tasks (echo of 8 bytes),
 *                    then wait for every result (checked)
 *   mpi.latency      us per submit -> result of one trivial task (2000)
 *   mpi.map_chunked  items/s: map squaring 1M ints, chunksize n / (4 x
 *                    workers) (Pool's default); conc_pool: conc_pool_map
 *                    (multiprocessing.Pool, the pool bench's
 *                    pool.map_chunked) with the same workers
 *
 * Setup, the same for every impl: 4 MPI ranks (rank 0 + 3 workers; the
 * process pools get 3 workers too) on this machine's CPUs, oversubscribed,
 * loopback only, with
 *   mpirun --oversubscribe --bind-to none -n 4 --mca btl self,vader,tcp
 *          --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo
 *          --mca mpi_yield_when_idle 1
 * (yield_when_idle: Open MPI's blocking calls yield the CPU while they
 * poll — mpi4py's workers wait in them; conc's workers and communication
 * thread back off by themselves.)
 *
 * This program, started alone (bench/run), runs itself under that mpirun
 * (--child: rank 0 measures conc and conc_pool and prints the values) and
 * then mpi4py.futures (mpirun ... python3 -m mpi4py.futures
 * bench/mpi_python.py); it prints the table and appends the JSON rows.
 */
#include "bench_util.h"

#ifdef CONC_BENCH_HAVE_MPI
#include <conc.h>
#include <conc/mpi.h>

static int echo8(const void *arg, size_t len, conc_pool_out_t *out) { return conc_pool_return(out, arg, len); }
CONC_POOL_REGISTER(echo8);

static int square(const void *arg, size_t len, conc_pool_out_t *out)
{
    (void)len;
    int x = *(const int *)arg, y = x * x;
    return conc_pool_return(out, &y, sizeof y);
}
CONC_POOL_REGISTER(square);

#define WORKERS 3

static double throughput(conc_executor_t *ex, size_t n)
{
    conc_future_t **fs = malloc(n * sizeof *fs);
    double t0 = bench_now();
    for (size_t i = 0; i < n; i++) {
        uint64_t v = i;
        if (conc_process_pool_submit(ex, &fs[i], echo8, &v, 8))
            exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        const void *d;
        size_t len;
        if (conc_future_bytes(fs[i], CONC_FOREVER, &d, &len) || len != 8 || *(const uint64_t *)d != i)
            exit(1);
    }
    double dt = bench_now() - t0;
    for (size_t i = 0; i < n; i++)
        conc_future_free(fs[i]);
    free(fs);
    return n / dt;
}

static double latency(conc_executor_t *ex, size_t n)
{
    double t0 = bench_now();
    for (size_t i = 0; i < n; i++) {
        uint64_t v = i;
        conc_future_t *f;
        const void *d;
        size_t len;
        if (conc_process_pool_submit(ex, &f, echo8, &v, 8) || conc_future_bytes(f, CONC_FOREVER, &d, &len) ||
            *(const uint64_t *)d != i)
            exit(1);
        conc_future_free(f);
    }
    return (bench_now() - t0) / n * 1e6;
}

static int *items;

static void check_map(conc_results_t *r, size_t n)
{
    int *out = malloc(n * sizeof *out);
    if (conc_results_copy(r, out, sizeof(int)))
        exit(1);
    for (size_t i = 0; i < n; i++)
        if (out[i] != (int)(i * i))
            exit(1);
    free(out);
    conc_results_free(r);
}

static double map_ex(conc_executor_t *ex, size_t n)
{
    conc_results_t *r;
    double t0 = bench_now();
    if (conc_process_pool_map(ex, square, items, sizeof(int), n, n / (4 * WORKERS), CONC_FOREVER, &r))
        exit(1);
    double dt = bench_now() - t0;
    check_map(r, n);
    return n / dt;
}

static double map_pool(conc_pool_t *p, size_t n)
{
    conc_results_t *r;
    double t0 = bench_now();
    if (conc_pool_map(p, square, items, sizeof(int), n, 0, &r))
        exit(1);
    double dt = bench_now() - t0;
    check_map(r, n);
    return n / dt;
}

/* rank 0 under mpirun: per rep, 5 lines: throughput conc, conc_pool;
 * latency conc; map conc, conc_pool */
static int child(int reps, double scale)
{
    size_t nt = (size_t)(20000 * scale), nl = (size_t)(2000 * scale), nm = (size_t)(1000000 * scale);
    if (nt < 100)
        nt = 100;
    if (nl < 20)
        nl = 20;
    if (nm < 1000)
        nm = 1000;
    items = malloc(nm * sizeof *items);
    for (size_t i = 0; i < nm; i++)
        items[i] = (int)i;
    conc_executor_t *mx, *px;
    conc_mpi_opts_t mo = {.max_workers = WORKERS};
    conc_process_pool_opts_t po = {.max_workers = WORKERS};
    conc_pool_opts_t qo = {.processes = WORKERS};
    conc_pool_t *pool;
    if (conc_mpi_executor_new(&mx, &mo) || conc_process_pool_new(&px, &po) || conc_pool_new(&pool, &qo))
        return 1;
    throughput(mx, nt / 4); /* warm-up */
    throughput(px, nt / 4);
    latency(mx, nl / 4);
    map_ex(mx, nm / 4);
    map_pool(pool, nm / 4);
    for (int r = 0; r < reps; r++) {
        printf("%.6g\n%.6g\n", throughput(mx, nt), throughput(px, nt));
        printf("%.6g\n", latency(mx, nl));
        printf("%.6g\n%.6g\n", map_ex(mx, nm), map_pool(pool, nm));
        fflush(stdout);
    }
    conc_executor_free(px);
    conc_pool_free(pool);
    conc_executor_free(mx);
    free(items);
    return 0;
}
#endif

static const char *mpirun_args[] = {"--oversubscribe", "--bind-to", "none", "-n", "4", "--mca", "btl",
                                    "self,vader,tcp", "--mca", "btl_tcp_if_include", "lo", "--mca",
                                    "oob_tcp_if_include", "lo", "--mca", "mpi_yield_when_idle", "1"};
#define NMPIRUN_ARGS (sizeof mpirun_args / sizeof *mpirun_args)

static int run_mpirun(char **tail, int ntail, double *vals, int max, char *why, size_t whylen)
{
    char *argv[64];
    int k = 0;
    argv[k++] = "/usr/bin/env";
    argv[k++] = "mpirun";
    for (size_t i = 0; i < NMPIRUN_ARGS; i++)
        argv[k++] = (char *)mpirun_args[i];
    for (int i = 0; i < ntail && k < 63; i++)
        argv[k++] = tail[i];
    argv[k] = NULL;
    return bench_run_peer(argv, vals, max, why, whylen);
}

static bool is_child; /* --child: the ranks' side, under mpirun */

static int child_flag(const char *opt, const char *val)
{
    (void)val;
    if (strcmp(opt, "--child") != 0)
        return 0;
    is_child = true;
    return 1;
}

int main(int argc, char **argv)
{
#ifdef CONC_BENCH_HAVE_MPI
    /* under mpirun (the child): ranks 1.. serve inside CONC_MPI_MAIN; alone:
     * no MPI here (the mpirun started below must not inherit a singleton) */
    if (getenv("OMPI_COMM_WORLD_SIZE"))
        CONC_MPI_MAIN(argc, argv);
    else
        CONC_PROCESS_MAIN(argc, argv);
#endif
    int reps = 5;
    double scale = 1;
    const char *jsonl = NULL, *python = NULL, *script = NULL;
    const bench_args_t args = {.prog = "mpi_bench", .extra = child_flag, .reps = &reps, .scale = &scale,
                               .jsonl = &jsonl, .python = &python, .python_script = &script};
    int st = bench_parse_args(argc, argv, &args);
    if (st >= 0)
        return st;
#ifndef CONC_BENCH_HAVE_MPI
    (void)is_child, (void)jsonl, (void)python, (void)script, (void)run_mpirun;
    printf("mpi bench: skipped: conc was built without Open MPI (apt-get install libopenmpi-dev openmpi-bin)\n");
    return 0;
#else
    if (is_child)
        return child(reps, scale);
    double t_start = bench_now();
    bench_note_load();
    if (getuid() == 0) {
        setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
        setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
    }
    bench_row_t *rt = bench_row_new("mpi.throughput", "tasks/s", false);
    bench_row_t *rl = bench_row_new("mpi.latency", "us", true);
    bench_row_t *rm = bench_row_new("mpi.map_chunked", "items/s", false);
    bench_impl_t *tc = bench_impl_add(rt, "conc"), *tp = bench_impl_add(rt, "mpi4py"),
                 *tq = bench_impl_add(rt, "conc_pool");
    bench_impl_t *lc = bench_impl_add(rl, "conc"), *lp = bench_impl_add(rl, "mpi4py");
    bench_impl_t *mc = bench_impl_add(rm, "conc"), *mq = bench_impl_add(rm, "conc_pool");
    char why[256], reps_s[16], scale_s[32], self[4096];
    snprintf(reps_s, sizeof reps_s, "%d", reps);
    snprintf(scale_s, sizeof scale_s, "%g", scale);
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    self[sl > 0 ? sl : 0] = 0;
    double vals[5 * BENCH_MAX_REPS];
    char *ctail[] = {self, "--child", "--reps", reps_s, "--scale", scale_s};
    int n = run_mpirun(ctail, 6, vals, 5 * reps, why, sizeof why);
    if (n < 5 * reps) {
        if (n >= 0)
            snprintf(why, sizeof why, "the child printed %d of %d values", n, 5 * reps);
        bench_impl_t *all[] = {tc, tq, lc, mc, mq};
        for (int i = 0; i < 5; i++)
            bench_impl_note(all[i], BENCH_FAILED, "%s", why);
    } else {
        for (int r = 0; r < reps; r++) {
            bench_impl_record(tc, vals[5 * r]);
            bench_impl_record(tq, vals[5 * r + 1]);
            bench_impl_record(lc, vals[5 * r + 2]);
            bench_impl_record(mc, vals[5 * r + 3]);
            bench_impl_record(mq, vals[5 * r + 4]);
        }
    }
    if (!python || !script || access(python, X_OK) != 0) {
        bench_impl_note(tp, BENCH_SKIPPED, "no Python interpreter given (--python)");
        bench_impl_note(lp, BENCH_SKIPPED, "no Python interpreter given (--python)");
    } else {
        char *ptail[] = {(char *)python, "-m", "mpi4py.futures", (char *)script, "--reps", reps_s,
                         "--scale", scale_s};
        n = run_mpirun(ptail, 8, vals, 2 * reps, why, sizeof why);
        if (n < 2 * reps) {
            if (n >= 0)
                snprintf(why, sizeof why, "mpi4py peer printed %d of %d values (python3-mpi4py installed?)", n,
                         2 * reps);
            bench_impl_note(tp, BENCH_SKIPPED, "%s", why);
            bench_impl_note(lp, BENCH_SKIPPED, "%s", why);
        } else {
            for (int r = 0; r < reps; r++) {
                bench_impl_record(tp, vals[2 * r]);
                bench_impl_record(lp, vals[2 * r + 1]);
            }
        }
    }
    bench_print_header("mpi (4 ranks: rank 0 + 3 workers, oversubscribed, mpi_yield_when_idle 1)", reps);
    for (int i = 0; i < bench_nrows; i++)
        bench_print_row(&bench_rows[i]);
    printf("\ntargets (issue 16):\n");
    bench_tally_t tally = {0};
    (void)bench_python_targets; /* the peers here are mpi4py and conc_pool */
    bench_target_tally(&tally, "mpi.throughput", "mpi4py", 10.0, "mpi.throughput: conc >= 10x mpi4py");
    bench_target_tally(&tally, "mpi.latency", "mpi4py", 10.0, "mpi.latency: conc time <= 0.1x mpi4py");
    bench_target_tally(&tally, "mpi.map_chunked", "conc_pool", 0.5, "mpi.map_chunked: conc >= 0.5x conc_pool");
    return bench_finish("mpi", &tally, jsonl, t_start);
#endif
}
