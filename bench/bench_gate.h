/*
 * bench/bench_gate.h — the start gate of the multi-threaded benches.
 *
 * Each worker checks in (bench_gate_arrive) and waits; the main thread
 * waits for all of them, starts the clock and opens the gate
 * (bench_gate_open returns the start time), so thread start-up is never
 * timed. Workers wait spinning with a CPU pause, or with sched_yield when
 * there are more of them than CPUs (the scaling bench's 64 threads).
 */
#ifndef CONC_BENCH_GATE_H
#define CONC_BENCH_GATE_H

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "bench_util.h"

typedef struct bench_gate {
    atomic_int ready;
    atomic_int go;
} bench_gate_t;

static inline void bench_gate_reset(bench_gate_t *g)
{
    atomic_store(&g->ready, 0);
    atomic_store(&g->go, 0);
}

static inline void bench_gate_arrive(bench_gate_t *g, bool yield)
{
    atomic_fetch_add(&g->ready, 1);
    while (!atomic_load_explicit(&g->go, memory_order_acquire)) {
        if (yield)
            sched_yield();
#if defined(__x86_64__) || defined(__i386__)
        else
            __asm__ __volatile__("pause");
#elif defined(__aarch64__)
        else
            __asm__ __volatile__("yield");
#endif
    }
}

static inline double bench_gate_open(bench_gate_t *g, int parties)
{
    while (atomic_load(&g->ready) < parties)
        sched_yield();
    double t0 = bench_now();
    atomic_store_explicit(&g->go, 1, memory_order_release);
    return t0;
}

#endif
