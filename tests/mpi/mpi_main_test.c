/*
 * mpi_main_test.c — conc_mpi_main, conc_mpi_rank and conc_mpi_world_size
 * called directly (Criterion), in a process started alone: MPI's singleton
 * mode, one rank. Each test is its own process (Criterion's worker), so
 * each starts with MPI not started. What needs mpirun's ranks (a worker
 * rank serving inside conc_mpi_main, rank 0's world) is tested by
 * mpi_exec_test under mpirun (mpi_world) and its spawned workers
 * (mpi_spawn).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <mpi.h>
#include <stdlib.h>

#include <conc/mpi.h>
#include <conc/process.h>

static void setup(void)
{
    unsetenv("CONC_PROCESS_CHILD");
}
TestSuite(mpi_main, .init = setup, .timeout = 60);

static int provided(void)
{
    int p = -1;
    MPI_Query_thread(&p);
    return p;
}

/* Before MPI started: rank -1, world size 0, and no call starts it. */
Test(mpi_main, rank_before_mpi_started)
{
    cr_assert_eq(conc_mpi_rank(), -1);
    cr_assert_eq(conc_mpi_world_size(), 0);
    cr_assert_eq(conc_mpi_rank(), -1, "asking does not start MPI");
    int inited = 1;
    MPI_Initialized(&inited);
    cr_assert_eq(inited, 0);
}

/* Alone: starts MPI with a thread level the executor can use, returns 0
 * on rank 0 of a world of 1; a second call (and one with NULL arguments)
 * returns 0 again and changes nothing; the arguments are left as they
 * are. */
Test(mpi_main, starts_mpi_alone_and_twice_is_harmless)
{
    char a0[] = "mpi_main_test", a1[] = "--keep";
    char *args[] = {a0, a1, NULL}, **argv = args;
    int argc = 2;
    cr_assert_eq(conc_mpi_main(&argc, &argv), 0);
    int inited = 0;
    MPI_Initialized(&inited);
    cr_assert_eq(inited, 1);
    cr_assert_geq(provided(), MPI_THREAD_SERIALIZED);
    cr_assert_eq(conc_mpi_rank(), 0);
    cr_assert_eq(conc_mpi_world_size(), 1);
    cr_assert_eq(argc, 2);
    cr_assert_str_eq(argv[1], "--keep");
    cr_assert_eq(CONC_MPI_MAIN(argc, argv), 0, "twice");
    cr_assert_eq(conc_mpi_main(NULL, NULL), 0, "NULL arguments");
    cr_assert_eq(conc_mpi_rank(), 0);
    cr_assert_eq(conc_mpi_world_size(), 1);
    /* the process is MPI's, and an executor can be made (spawned workers
     * are mpi_spawn's business: only the refusals here) */
    conc_executor_t *ex;
    conc_mpi_opts_t o = {.max_workers = 5000};
    cr_assert_eq(conc_mpi_executor_new(&ex, &o), CONC_EINVAL);
}

/* NULL arguments: the process guard runs all the same (first, before
 * MPI), so a child a process pool spawned from an MPI program becomes
 * that child. A malformed bootstrap value makes it exit with 255. */
Test(mpi_main, null_arguments_still_run_the_process_guard, .exit_code = 255)
{
    setenv("CONC_PROCESS_CHILD", "bad", 1);
    conc_mpi_main(NULL, NULL);
    /* the guard returned: MPI was started in a process pool's child */
    int inited = 0;
    MPI_Initialized(&inited);
    cr_assert_fail("conc_mpi_main(NULL, NULL) returned (MPI started: %d)", inited);
}

Test(mpi_main, process_guard_runs_before_mpi, .exit_code = 255)
{
    setenv("CONC_PROCESS_CHILD", "bad", 1);
    int argc = 1;
    char a0[] = "x", *args[] = {a0, NULL}, **argv = args;
    conc_mpi_main(&argc, &argv);
    cr_assert_fail("conc_mpi_main returned in a process pool's child");
}

/* A program that started MPI itself (MPI_THREAD_MULTIPLE): the rank is
 * known before conc_mpi_main (MPI has started), conc_mpi_main takes MPI as
 * it is (no second MPI_Init) and returns 0. Once the program finalized
 * MPI, conc_mpi_main cannot start it again: CONC_ESYS. */
Test(mpi_main, program_started_mpi_itself)
{
    int p = -1;
    cr_assert_eq(MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &p), MPI_SUCCESS);
    cr_assert_eq(conc_mpi_rank(), 0, "MPI has started: the rank is known");
    cr_assert_eq(conc_mpi_world_size(), 1);
    cr_assert_eq(conc_mpi_main(NULL, NULL), 0);
    cr_assert_eq(provided(), p);
    cr_assert_eq(conc_mpi_rank(), 0);
    cr_assert_eq(MPI_Finalize(), MPI_SUCCESS);
    cr_assert_eq(conc_mpi_main(NULL, NULL), CONC_ESYS);
    conc_executor_t *ex;
    cr_assert_eq(conc_mpi_executor_new(&ex, NULL), CONC_ESYS);
}

/* A program that started MPI with a thread level below
 * MPI_THREAD_SERIALIZED (plain MPI_Init: MPI_THREAD_SINGLE): refused with
 * CONC_ENOTSUP (the executor's communication thread could not make MPI
 * calls), by the executor too. */
Test(mpi_main, thread_single_is_refused)
{
    cr_assert_eq(MPI_Init(NULL, NULL), MPI_SUCCESS);
    if (provided() >= MPI_THREAD_SERIALIZED) {
        MPI_Finalize();
        cr_skip_test("this MPI gives MPI_Init a thread level >= MPI_THREAD_SERIALIZED");
    }
    cr_assert_eq(conc_mpi_main(NULL, NULL), CONC_ENOTSUP);
    conc_executor_t *ex;
    cr_assert_eq(conc_mpi_executor_new(&ex, NULL), CONC_ENOTSUP);
    cr_assert_eq(conc_mpi_rank(), 0);
    MPI_Finalize();
}
