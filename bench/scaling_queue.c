/*
 * bench/scaling_queue.c — the queue part of the scaling bench
 * (bench/scaling_bench.c, issue 18): NpNc through the queue benchmark's own
 * code. This file compiles bench/queue_bench.c into the scaling program as
 * a translation unit of its own (its main renamed, its statics private to
 * this file), so every queue impl the queue bench has — conc and the peers
 * that were installed when it was built — runs here with the same threads,
 * start gate, checks and peer code, and a peer added there shows up here.
 *
 * Exported (bench/scaling_bench.c declares them):
 *   scq_nimpls()            number of queue impls (Python excluded)
 *   scq_impl_name(i)        "conc", "moodycamel", ...
 *   scq_available(i, why)   1 when impl i can run here
 *   scq_skip(i, n)          NULL, or why impl i sits out NpNc: a single-
 *                           producer / single-consumer impl (its name
 *                           says "spsc") when n > 1; Concurrency Kit's
 *                           ring ("ck_") when the 2n threads outnumber the
 *                           CPUs: its enqueue spins, without yielding, for
 *                           every earlier producer to publish, so a
 *                           producer preempted mid-enqueue stalls all the
 *                           others for whole time slices (4p4c on 2 CPUs
 *                           moved under 64k items in 60 s)
 *   scq_run(i, n, items, why)  items/s through a bounded FIFO with n
 *                           producers and n consumers, or NAN (why)
 */
#define main queue_bench_main
int queue_bench_main(int argc, char **argv);
#include "queue_bench.c"
#undef main

int scq_nimpls(void);
const char *scq_impl_name(int i);
int scq_available(int i, char *why, size_t whylen);
const char *scq_skip(int i, int n);
double scq_run(int i, int n, long items, char *why, size_t whylen);

int scq_nimpls(void)
{
    return IMPL_PYTHON; /* the C impls come before the Python peer */
}

const char *scq_impl_name(int i)
{
    return impl_names[i];
}

int scq_available(int i, char *why, size_t whylen)
{
    return impl_available(i, why, whylen);
}

const char *scq_skip(int i, int n)
{
    if (n > 1 && strstr(impl_names[i], "spsc"))
        return "single producer / single consumer only";
    if (strncmp(impl_names[i], "ck_", 3) == 0 && 2L * n > sysconf(_SC_NPROCESSORS_ONLN))
        return "ck_ring spins without yielding: with more threads than CPUs a preempted producer "
               "stalls the rest (left out)";
    return NULL;
}

double scq_run(int i, int n, long items, char *why, size_t whylen)
{
    if (2 * n > MAX_THREADS) {
        snprintf(why, whylen, "%dp%dc needs %d threads, queue_bench.c has room for %d", n, n, 2 * n,
                 MAX_THREADS);
        return NAN;
    }
    return run_queue(i, ROW_FIFO, n, n, items, why, whylen);
}
