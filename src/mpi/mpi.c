/*
 * mpi.c — starting MPI for conc (CONC_MPI_MAIN): initialise with the best
 * thread level on offer; turn ranks 1.. of an mpirun job, and spawned
 * workers, into task servers that exit when their parent is done; and at
 * rank 0's exit end the executors, release the world's workers and
 * finalize MPI (executor.c does that part).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>

#include "conc/process.h"
#include "mpi/internal.h"

int conc__mpi_provided = -1;
MPI_Comm conc__mpi_world = MPI_COMM_NULL; /* rank 0's side of the world's workers */
int conc__mpi_wsize = 0, conc__mpi_wrank = -1; /* MPI_COMM_WORLD's, once started */

void conc__mpi_atexit(void); /* executor.c */

int conc__mpi_init(int *argc, char ***argv)
{
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (finalized)
        return CONC_ESYS;
    if (!inited) {
        int provided = 0;
        if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
            return CONC_ESYS;
        conc__mpi_provided = provided;
        atexit(conc__mpi_atexit);
        MPI_Comm_size(MPI_COMM_WORLD, &conc__mpi_wsize);
        MPI_Comm_rank(MPI_COMM_WORLD, &conc__mpi_wrank);
    } else if (conc__mpi_provided < 0) {
        MPI_Query_thread(&conc__mpi_provided); /* the program started MPI itself */
        MPI_Comm_size(MPI_COMM_WORLD, &conc__mpi_wsize);
        MPI_Comm_rank(MPI_COMM_WORLD, &conc__mpi_wrank);
    }
    if (conc__mpi_provided < MPI_THREAD_SERIALIZED) {
        fprintf(stderr, "conc: MPI offers thread level %d; the MPI executor needs MPI_THREAD_SERIALIZED\n",
                conc__mpi_provided);
        return CONC_ENOTSUP;
    }
    return 0;
}

int conc_mpi_main(int *argc, char ***argv)
{
    /* a child a process pool started (spawn, fork server): it is no MPI
     * process; CONC_PROCESS_MAIN runs it and exits (with NULL arguments
     * too: the guard does not need them) */
    conc_process_main(argc ? *argc : 0, argv ? *argv : NULL);
    int rc = conc__mpi_init(argc, argv);
    if (rc)
        return rc;
    MPI_Comm parent = MPI_COMM_NULL;
    MPI_Comm_get_parent(&parent);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (parent != MPI_COMM_NULL) {
        /* a spawned worker: serve the executor that started us */
        int ok = conc__mpi_serve(parent, 0) == 0;
        if (ok)
            MPI_Comm_disconnect(&parent);
        MPI_Finalize();
        exit(ok ? 0 : 1);
    }
    if (rank != 0) {
        /* ranks 1.. of mpirun: serve rank 0's executors until it exits */
        MPI_Comm c;
        MPI_Comm_dup(MPI_COMM_WORLD, &c);
        int ok = conc__mpi_serve(c, 1) == 0;
        MPI_Comm_free(&c);
        MPI_Finalize();
        exit(ok ? 0 : 1);
    }
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > 1 && conc__mpi_world == MPI_COMM_NULL) {
        MPI_Comm_dup(MPI_COMM_WORLD, &conc__mpi_world); /* collective with the workers' dup */
        MPI_Comm_set_errhandler(conc__mpi_world, MPI_ERRORS_RETURN);
    }
    return 0;
}

/* MPI started by the program itself, without CONC_MPI_MAIN (yet): learn
 * the world from MPI once it has started (MPI_Initialized may be called at
 * any time, from any thread). */
static void learn_world(void)
{
    if (__atomic_load_n(&conc__mpi_wsize, __ATOMIC_ACQUIRE) > 0)
        return;
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    if (!inited)
        return;
    MPI_Finalized(&finalized);
    if (finalized)
        return;
    int rank = -1, size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    __atomic_store_n(&conc__mpi_wrank, rank, __ATOMIC_RELAXED);
    __atomic_store_n(&conc__mpi_wsize, size, __ATOMIC_RELEASE);
}

int conc_mpi_rank(void)
{
    learn_world();
    return __atomic_load_n(&conc__mpi_wrank, __ATOMIC_RELAXED);
}

int conc_mpi_world_size(void)
{
    learn_world();
    return __atomic_load_n(&conc__mpi_wsize, __ATOMIC_RELAXED);
}
