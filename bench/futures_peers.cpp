// bench/futures_peers.cpp — the TBB peer of bench/futures_bench.c
// (tbb::task_group), behind the C interface of bench/futures_peers.h.
// Built into futures_bench when CMake finds a C++ compiler and TBB
// (CONC_BENCH_HAVE_TBB); otherwise the peer reports why and is skipped.
//
// Workers: one tbb::task_arena with max_concurrency = `workers` (the
// number of cores, as for every impl), created once and reused. An arena
// of concurrency 2 holds the thread that calls execute() plus one TBB
// worker; the calling thread submits (task_group::run pushes to its own
// deque, the worker steals) and, in task_group::wait(), runs tasks itself
// until the group is empty — TBB's waiting thread helps.
//
// The clock runs inside arena.execute(), from the first run() to the
// return of wait(); the arena's threads are already up (the driver's
// warm-up run starts them).

#include "futures_peers.h"

#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>

#ifdef CONC_BENCH_HAVE_TBB
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#include <tbb/task_group.h>
#endif

namespace {

inline double now_s()
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

#ifdef CONC_BENCH_HAVE_TBB
std::unique_ptr<tbb::task_arena> g_arena;
int g_arena_workers;

tbb::task_arena &arena(int workers)
{
    if (!g_arena || g_arena_workers != workers) {
        g_arena.reset(new tbb::task_arena(workers));
        g_arena->initialize();
        g_arena_workers = workers;
    }
    return *g_arena;
}

long tbb_fib(int n, int cutoff)
{
    if (n <= cutoff)
        return fut_fib_seq(n);
    long a = 0, b = 0;
    tbb::task_group g;
    g.run([&a, n, cutoff] { a = tbb_fib(n - 1, cutoff); });
    g.run([&b, n, cutoff] { b = tbb_fib(n - 2, cutoff); });
    g.wait();
    return a + b;
}
#endif

} // namespace

extern "C" int fpeer_tbb_available(char *why, size_t whylen)
{
#ifdef CONC_BENCH_HAVE_TBB
    (void)why, (void)whylen;
    return 1;
#else
    std::snprintf(why, whylen, "TBB (cmake package, Debian libtbb-dev) was not found when the bench was built");
    return 0;
#endif
}

extern "C" double fpeer_tbb_throughput(long n, unsigned char *slots, int workers, char *why, size_t whylen)
{
#ifdef CONC_BENCH_HAVE_TBB
    try {
        double t0 = 0, t1 = 0;
        arena(workers).execute([&] {
            tbb::task_group g;
            t0 = now_s();
            for (long i = 0; i < n; i++) {
                unsigned char *p = slots + i;
                g.run([p] { fut_touch(p); });
            }
            g.wait();
            t1 = now_s();
        });
        return t1 - t0;
    } catch (const std::exception &e) {
        std::snprintf(why, whylen, "tbb: %s", e.what());
        return -1;
    }
#else
    (void)n, (void)slots, (void)workers;
    fpeer_tbb_available(why, whylen);
    return -1;
#endif
}

extern "C" double fpeer_tbb_parallel_for(long n, unsigned char *slots, int workers, char *why, size_t whylen)
{
#ifdef CONC_BENCH_HAVE_TBB
    try {
        double t0 = 0, t1 = 0;
        arena(workers).execute([&] {
            t0 = now_s();
            tbb::parallel_for(tbb::blocked_range<long>(0, n), [slots](const tbb::blocked_range<long> &r) {
                for (long i = r.begin(); i != r.end(); i++)
                    fut_touch(slots + i);
            });
            t1 = now_s();
        });
        return t1 - t0;
    } catch (const std::exception &e) {
        std::snprintf(why, whylen, "tbb: %s", e.what());
        return -1;
    }
#else
    (void)n, (void)slots, (void)workers;
    fpeer_tbb_available(why, whylen);
    return -1;
#endif
}

extern "C" double fpeer_tbb_fib(int n, int cutoff, int workers, long *value, char *why, size_t whylen)
{
#ifdef CONC_BENCH_HAVE_TBB
    try {
        double t0 = 0, t1 = 0;
        arena(workers).execute([&] {
            t0 = now_s();
            *value = tbb_fib(n, cutoff);
            t1 = now_s();
        });
        return t1 - t0;
    } catch (const std::exception &e) {
        std::snprintf(why, whylen, "tbb: %s", e.what());
        return -1;
    }
#else
    (void)n, (void)cutoff, (void)workers, (void)value;
    fpeer_tbb_available(why, whylen);
    return -1;
#endif
}
