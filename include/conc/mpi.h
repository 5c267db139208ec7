/*
 * conc/mpi.h — an Executor whose workers are MPI ranks (mpi4py.futures'
 * MPIPoolExecutor, in C). Optional: in libconc_mpi (link it and MPI; the
 * core libconc needs only libc). See docs/mpi.md.
 *
 *     static int square(const void *arg, size_t len, conc_pool_out_t *out)
 *     { int x = *(const int *)arg, y = x * x; return conc_pool_return(out, &y, sizeof y); }
 *     CONC_POOL_REGISTER(square);
 *
 *     int main(int argc, char **argv) {
 *         CONC_MPI_MAIN(argc, argv);                  // worker ranks serve here
 *         conc_executor_t *ex;
 *         conc_mpi_executor_new(&ex, NULL);           // was: conc_process_pool_new
 *         conc_future_t *f; int x = 7;
 *         conc_process_pool_submit(ex, &f, square, &x, sizeof x);
 *         const void *r; size_t n;
 *         conc_future_bytes(f, CONC_FOREVER, &r, &n); // *(int *)r == 49
 *         conc_future_free(f); conc_executor_free(ex);
 *     }
 *
 * The same calls as a process pool (conc/pool.h): conc_process_pool_submit
 * and conc_process_pool_map (bytes tasks registered with
 * CONC_POOL_REGISTER; chunked maps, results in item order, conc_results_t),
 * conc_process_pool_submit_word / conc_process_pool_map_word (word tasks
 * registered with CONC_REGISTER; conc_submit and conc_map are refused with
 * CONC_ENOTSUP, as on a process pool),
 * conc_executor_shutdown / conc_executor_free, and the futures work with
 * conc_wait, conc_as_completed, conc_future_bytes, callbacks. Switching is
 * one constructor.
 *
 * Launch. (1) mpirun -n N ./prog: rank 0 runs main past CONC_MPI_MAIN,
 * ranks 1..N-1 serve tasks inside it and exit when rank 0 exits (they
 * never run the rest of main); an executor uses them (at most one such
 * executor at a time; one after another is fine). (2) ./prog started
 * alone (or opts.spawn): the executor starts max_workers workers with
 * MPI_Comm_spawn, running this same program (its CONC_MPI_MAIN makes them
 * workers), and they exit at shutdown. Open MPI settings (oversubscription,
 * running as root) are in docs/mpi.md.
 *
 * Threads. One communication thread in the calling process owns every MPI
 * call conc makes; submitters queue tasks and it sends them, receives
 * results and completes the futures. MPI is initialised with
 * MPI_THREAD_MULTIPLE when the library offers it (then the program may
 * make its own MPI calls too), else MPI_THREAD_SERIALIZED (then it must
 * not make MPI calls while an executor is alive). Waiting on a future
 * parks only the calling (green) thread.
 *
 * Failures. A task's failure (conc_fail, or a nonzero return) reaches its
 * future: CONC_EFAILED from conc_future_bytes / result, the code and
 * message from conc_future_exception. An initializer that fails breaks
 * the executor: pending futures fail with CONC_EBROKEN
 * ("BrokenMPIExecutor: ..."), later submits return CONC_EBROKEN. A worker
 * process that dies: see docs/mpi.md — under mpirun Open MPI ends the
 * whole job (every rank, rank 0 included) with a nonzero exit status, it
 * never hangs; a spawned worker's death is noticed (its pid is watched on
 * the same host) and fails that worker's futures, and every pending one,
 * with CONC_EBROKEN, if Open MPI lets the program live on.
 */
#ifndef CONC_MPI_H
#define CONC_MPI_H

#include "conc/base.h"
#include "conc/futures.h"
#include "conc/pool.h"

/* Exported from libconc_mpi (not libconc): link with conc::conc_mpi. */
#define CONC_MPI_API __attribute__((visibility("default")))

#ifdef __cplusplus
extern "C" {
#endif

/* Options; NULL or zero fields mean the defaults. */
typedef struct conc_mpi_opts {
    /* 0: under mpirun every rank but 0; spawned: the number of online
     * CPUs. Under mpirun, more than the ranks there is CONC_EINVAL. At
     * most 4096. */
    size_t max_workers;
    conc_process_fn initializer;    /* registered; runs once in each worker */
    const void *initarg;            /* copied */
    size_t initarg_len;
    bool spawn;                     /* spawn workers even under mpirun */
    /* Spawn: the program to start (NULL: this program) and its arguments
     * (NULL-terminated, or NULL). It must call CONC_MPI_MAIN first. */
    const char *command;
    char *const *args;
    /* Seconds conc_mpi_executor_new waits for the workers to be started
     * and connected (0: 60). Open MPI 4.1's MPI_Comm_spawn can hang (a
     * worker stuck in its PMIx start-up, seen now and then on a loaded
     * machine): the call then returns CONC_ETIMEDOUT instead of hanging,
     * and the executor is dropped once MPI returns, if it ever does. */
    double start_timeout;
} conc_mpi_opts_t;

/* Called by CONC_MPI_MAIN: runs CONC_PROCESS_MAIN first (a process pool
 * may start children from an MPI program too), initialises MPI (if the program did not);
 * on a worker rank (ranks 1.. of mpirun, or a spawned worker) serves
 * tasks until the parent ends, finalizes MPI and exits the process; on
 * rank 0 or alone returns 0 (again on a second call). CONC_ESYS: MPI
 * could not start (or was finalized already); CONC_ENOTSUP: the program
 * started MPI itself with a thread level below MPI_THREAD_SERIALIZED
 * (plain MPI_Init), which the executor cannot use. The arguments may be
 * NULL (the process guard runs all the same). Call it first thing in
 * main. */
CONC_MPI_API int conc_mpi_main(int *argc, char ***argv);
#define CONC_MPI_MAIN(argc, argv) conc_mpi_main(&(argc), &(argv))

/* MPIPoolExecutor(...): returns 0 and a new executor in *out (free it with
 * conc_executor_free: it shuts down, waits, and the workers exit or, under
 * mpirun, go back to waiting for the next executor); CONC_EINVAL (NULL
 * out, an unregistered initializer, max_workers too large, a command
 * that is not an executable file); CONC_EAGAIN
 * (under mpirun, another executor uses the ranks); CONC_ESYS (MPI failed
 * to start or to spawn, or was finalized); CONC_ENOTSUP (the program
 * started MPI below MPI_THREAD_SERIALIZED); CONC_ETIMEDOUT (the workers were not ready within
 * opts.start_timeout); CONC_ENOMEM. */
CONC_MPI_API int conc_mpi_executor_new(conc_executor_t **out, const conc_mpi_opts_t *opts);

/* conc_executor_shutdown(ex, wait=true, ...) and conc_executor_free return
 * CONC_EPERM when called from a done-callback of one of the executor's
 * futures (callbacks run on the communication thread, which the wait would
 * be waiting for); shutdown without wait works there. */

/* The workers' process ids (up to cap) and how many workers there are
 * (0 for NULL or another executor). A worker on another host reports -1
 * until it has answered; pids are those on its own host. */
CONC_MPI_API size_t conc_mpi_executor_pids(conc_executor_t *ex, int *pids, size_t cap);

/* This process's rank in MPI_COMM_WORLD (-1 before MPI started) and the
 * world's size (0 before); also when the program started MPI itself,
 * before or without conc_mpi_main. */
CONC_MPI_API int conc_mpi_rank(void);
CONC_MPI_API int conc_mpi_world_size(void);

#ifdef __cplusplus
}
#endif
#endif /* CONC_MPI_H */
