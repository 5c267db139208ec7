/* harness.h — a tiny assert harness for the MPI tests. Criterion forks a
 * child per test and runs them in parallel processes; under mpirun a forked
 * rank 0 would share its MPI state with a copy of itself, so these tests
 * are plain programs: each test is a function, CHECK records a failure and
 * returns from it, main prints a summary and exits nonzero on failure. */
#ifndef CONC_MPI_HARNESS_H
#define CONC_MPI_HARNESS_H
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int h_failed, h_ran;

#define CHECK(cond, ...)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);         \
            fprintf(stderr, " " __VA_ARGS__);                                          \
            fprintf(stderr, "\n");                                                    \
            return 1;                                                                 \
        }                                                                             \
    } while (0)

static double h_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void h_run(const char *suite, const char *name, int (*fn)(void *), void *arg)
{
    double t0 = h_now();
    int rc = fn(arg);
    h_ran++;
    h_failed += rc != 0;
    printf("[%s] %-40s %s (%.2f s)\n", suite, name, rc ? "FAILED" : "ok", h_now() - t0);
    fflush(stdout);
}

static int h_summary(void)
{
    printf("%d tests, %d failed\n", h_ran, h_failed);
    return h_failed ? 1 : 0;
}

/* a process has ended (or is a zombie about to be reaped) */
static int h_gone(int pid)
{
    if (pid <= 0)
        return 1;
    char path[64], st = 0;
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 1;
    int n = fscanf(f, "%*d %*s %c", &st);
    fclose(f);
    return n == 1 && (st == 'Z' || st == 'X');
}

static int h_wait_gone(int pid, double secs)
{
    double end = h_now() + secs;
    while (!h_gone(pid) && h_now() < end)
        usleep(10000);
    return h_gone(pid);
}
#endif
