/*
 * bench/futures_omp.c — the OpenMP peer of bench/futures_bench.c: explicit
 * tasks (`#pragma omp task` + `taskwait`) in a parallel region of `workers`
 * threads, one of which creates the tasks inside `single`. Compiled with
 * the compiler's OpenMP flag (-fopenmp: GCC's libgomp) when CMake finds
 * OpenMP (CONC_BENCH_HAVE_OPENMP); futures_bench.c has stubs otherwise.
 *
 * The clock includes opening and closing the parallel region: libgomp
 * keeps the team's threads between regions of the same calling thread (the
 * driver runs every measurement on one long-lived thread, and its warm-up
 * starts the team), so that costs a wake-up, not thread creation.
 * A thread in `taskwait` (or at the region's closing barrier) runs queued
 * tasks: OpenMP's waiting thread helps. libgomp also runs a new task at
 * once in the creating thread (undeferred) when more than 64 x threads
 * tasks are queued; that throttle is part of what is measured.
 */
#include <stdio.h>
#include <time.h>

#include <omp.h>

#include "futures_peers.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int fomp_available(char *why, size_t whylen)
{
    (void)why, (void)whylen;
    return 1;
}

double fomp_throughput(long n, unsigned char *slots, int workers, char *why, size_t whylen)
{
    (void)why, (void)whylen;
    double t0 = now_s();
#pragma omp parallel num_threads(workers)
#pragma omp single
    {
        for (long i = 0; i < n; i++) {
            unsigned char *p = slots + i;
#pragma omp task firstprivate(p)
            fut_touch(p);
        }
#pragma omp taskwait
    }
    return now_s() - t0;
}

static long omp_fib(int n, int cutoff)
{
    if (n <= cutoff)
        return fut_fib_seq(n);
    long a = 0, b = 0;
#pragma omp task shared(a) firstprivate(n, cutoff)
    a = omp_fib(n - 1, cutoff);
#pragma omp task shared(b) firstprivate(n, cutoff)
    b = omp_fib(n - 2, cutoff);
#pragma omp taskwait
    return a + b;
}

double fomp_fib(int n, int cutoff, int workers, long *value, char *why, size_t whylen)
{
    (void)why, (void)whylen;
    long v = 0;
    double t0 = now_s();
#pragma omp parallel num_threads(workers)
#pragma omp single
    v = omp_fib(n, cutoff);
    double t1 = now_s();
    *value = v;
    return t1 - t0;
}
