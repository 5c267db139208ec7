/*
 * bench/futures_peers.h — the peers of the futures benchmark that need
 * another compiler mode, behind a C interface:
 *
 *   bench/futures_peers.cpp  TBB (tbb::task_group in a tbb::task_arena of
 *                            `workers` threads), built when CMake finds a C++
 *                            compiler and TBB (CONC_BENCH_HAVE_FPEERS,
 *                            CONC_BENCH_HAVE_TBB)
 *   bench/futures_omp.c      OpenMP tasks (libgomp), compiled with -fopenmp
 *                            when CMake finds OpenMP (CONC_BENCH_HAVE_OPENMP)
 *
 * futures_bench.c owns the clock-independent parts (the task bodies below,
 * the checks) and supplies stubs for a peer that was not built.
 *
 * The task bodies are defined once, in futures_bench.c, and called (never
 * inlined) by every impl, so all impls run the same machine code per task:
 *   fut_touch(p)    the "empty" task: stores 1 at p (a byte of the run's
 *                   slot array, so the driver can count that every task ran
 *                   exactly once) and returns p;
 *   fut_fib_seq(n)  plain recursive Fibonacci, for the leaves of pool.nested.
 */
#ifndef CONC_BENCH_FUTURES_PEERS_H
#define CONC_BENCH_FUTURES_PEERS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

void *fut_touch(void *p);
long fut_fib_seq(int n);

/* TBB. available: 1, or 0 with the reason in why. */
int fpeer_tbb_available(char *why, size_t whylen);
/* Submit n tasks fut_touch(slots + i) with task_group::run, then wait().
 * Returns the seconds taken, or -1 (reason in why). */
double fpeer_tbb_throughput(long n, unsigned char *slots, int workers, char *why, size_t whylen);
/* The "submitter helps" ceiling (issue 18): the same n bodies through
 * tbb::parallel_for over [0, n) with TBB's default auto_partitioner (it
 * splits the range into chunks that idle workers steal; no per-task
 * submission at all). Returns the seconds taken, or -1. */
double fpeer_tbb_parallel_for(long n, unsigned char *slots, int workers, char *why, size_t whylen);
/* fib(n) where every call with n > cutoff runs both halves as tasks of a
 * task_group and waits for them. Stores the value in *value; returns the
 * seconds taken, or -1. */
double fpeer_tbb_fib(int n, int cutoff, int workers, long *value, char *why, size_t whylen);

/* OpenMP: the same two, with `#pragma omp task` / `taskwait` inside a
 * parallel region of `workers` threads (one of which runs `single`). */
int fomp_available(char *why, size_t whylen);
double fomp_throughput(long n, unsigned char *slots, int workers, char *why, size_t whylen);
double fomp_fib(int n, int cutoff, int workers, long *value, char *why, size_t whylen);

#ifdef __cplusplus
}
#endif
#endif /* CONC_BENCH_FUTURES_PEERS_H */
