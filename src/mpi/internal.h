/* internal.h — what the MPI executor's files share (private). */
#ifndef CONC_MPI_INTERNAL_H
#define CONC_MPI_INTERNAL_H

#include <mpi.h>
#include <stdint.h>

#include "conc/mpi.h"

/* Message tags. Parent -> worker: */
enum { T_CONFIG = 1, T_TASKS = 2, T_DETACH = 3, T_EXIT = 4 };
/* Worker -> parent: */
enum { T_READY = 11, T_INITFAIL = 12, T_RESULTS = 13 };

/* T_CONFIG: hdr, initializer name, its argument. */
typedef struct {
    uint32_t namelen, pad;
    uint64_t arglen;
} mcfg_t;

/* T_READY: the worker's pid and host. */
typedef struct {
    int32_t pid, pad;
    char host[64];
} mready_t;

/* T_TASKS: hdr, then n x (uint64 len, the encoded task padded to 8).
 * T_RESULTS: hdr, then n x (uint64 len, the result blob padded to 8), for
 * the tasks of one T_TASKS message, in order. T_INITFAIL: int32 code and
 * the message with its NUL. */
typedef struct {
    uint32_t n, pad;
    uint64_t elapsed_ns;    /* results: time spent running the tasks */
} mbatch_t;

#define MPAD8(n) (((n) + 7) & ~(size_t)7)

/* Worker side (worker.c): serve the parent on comm (its rank 0) until
 * T_EXIT (returns 0) or an MPI error (returns -1). world: under mpirun
 * (T_DETACH returns to waiting for the next T_CONFIG). */
int conc__mpi_serve(MPI_Comm comm, int world);

/* Wait for a message from source on comm, probing with a backoff that
 * spins briefly, then yields, then sleeps (Open MPI's blocking calls
 * busy-poll a core). Returns an MPI error code. */
int conc__mpi_probe(MPI_Comm comm, int source, MPI_Status *st);

/* The state MPI_Init left (mpi.c). */
extern int conc__mpi_provided;  /* thread level */
extern int conc__mpi_wsize, conc__mpi_wrank;
extern MPI_Comm conc__mpi_world; /* rank 0 under mpirun with CONC_MPI_MAIN: its workers */
int conc__mpi_init(int *argc, char ***argv);
int64_t conc__mpi_now(void);
/* Test hook (executor.c, atomic): the next reply buffer that must grow
 * cannot be had (its batch fails with CONC_ENOMEM). */
extern bool conc__mpi_test_nomem;

#endif
