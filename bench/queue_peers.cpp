// bench/queue_peers.cpp — the C++ peers of bench/queue_bench.c: moodycamel's
// BlockingConcurrentQueue and TBB's concurrent_bounded_queue, behind the C
// interface of bench/queue_peers.h. Built into queue_bench when CMake finds
// a C++ compiler and the library (CONC_BENCH_HAVE_MOODYCAMEL,
// CONC_BENCH_HAVE_TBB); a peer left out reports why and is skipped.
//
// Bounding moodycamel: BlockingConcurrentQueue is unbounded (enqueue
// allocates blocks as needed) and has no blocking put. The rows compare
// bounded queues of 1024 items whose put blocks when full, so the peer gets
// a counting semaphore with one count per free slot — moodycamel's own
// LightweightSemaphore (lightweightsemaphore.h, the one its blocking queue
// uses internally, with the same spin count): put = slots.wait() then
// enqueue; get = wait_dequeue then slots.signal(). At most `capacity` items
// are ever inside, producers sleep when it is full, and the fast path
// stays lock-free (one extra atomic per put and per get). Each thread uses
// a producer or consumer token, the fastest way to use the queue.
//
// The peers at their best (issue 18): the same BlockingConcurrentQueue
// unbounded, as its documentation recommends (tokens, enqueue,
// wait_dequeue; no semaphore), and moodycamel's bounded single-producer
// single-consumer BlockingReaderWriterCircularBuffer (readerwriterqueue,
// Debian libreaderwriterqueue-dev) for the 1p1c row.

#include "queue_peers.h"

#include <cstdio>
#include <new>

#ifdef CONC_BENCH_HAVE_MOODYCAMEL
#include <concurrentqueue/blockingconcurrentqueue.h>
#include <concurrentqueue/lightweightsemaphore.h>
#endif
#ifdef CONC_BENCH_HAVE_TBB
#include <tbb/concurrent_queue.h>
#endif
#ifdef CONC_BENCH_HAVE_MOODYCAMEL_SPSC
#include <readerwriterqueue/readerwritercircularbuffer.h>
#endif

namespace {

const int kMaxProducers = 64;

// Per-consumer checks: sums, and per-producer increasing order.
struct Checker {
    int nprod;
    bool ordered = true;
    uint64_t sum = 0, sumsq = 0;
    uintptr_t last[kMaxProducers] = {};

    explicit Checker(int n) : nprod(n > kMaxProducers ? 0 : n) {}
    inline void see(uintptr_t v)
    {
        sum += v;
        sumsq += (uint64_t)v * (uint64_t)v;
        if (nprod > 0) {
            uintptr_t &l = last[v % (uintptr_t)nprod];
            ordered &= v > l;
            l = v;
        }
    }
};

// The one produce loop and the one consume loop every peer runs; a peer
// passes its own put and get (a lambda, inlined here) so that each queue is
// still driven exactly the way its documentation recommends.
// put(uintptr_t) returns false when the queue could not take the item
// (allocation failed); get(void *&) blocks until it has one. Both loops
// and the lambdas are forced inline so that the compiler sees the same
// code as when each peer wrote its own loop (same inlining of the
// queue's calls, checked with nm -S).
#define QP_INLINE __attribute__((always_inline))
template <class Put> QP_INLINE inline int produce_loop(uintptr_t first, uintptr_t stride, long n, Put put)
{
    uintptr_t v = first;
    for (long i = 0; i < n; i++, v += stride)
        if (!put(v))
            return -1; // allocation failed
    return 0;
}

template <class Get> QP_INLINE inline int consume_loop(long n, Checker &c, long *progress, Get get)
{
    void *item;
    for (long i = 0; i < n; i++) {
        get(item);
        c.see((uintptr_t)item);
        if ((i & 0xffff) == 0)
            __atomic_fetch_add(progress, 1, __ATOMIC_RELAXED);
    }
    return 0;
}

} // namespace

struct qpeer {
    int kind;
    virtual ~qpeer() {}
    virtual int produce(uintptr_t first, uintptr_t stride, long n) = 0;
    virtual int consume(long n, Checker &c, long *progress) = 0;
};

#ifdef CONC_BENCH_HAVE_MOODYCAMEL
namespace {
struct MoodyPeer final : qpeer {
    moodycamel::BlockingConcurrentQueue<void *> q;
    moodycamel::LightweightSemaphore slots;

    explicit MoodyPeer(long cap)
        : q((size_t)cap),
          slots((moodycamel::LightweightSemaphore::ssize_t)cap,
                (int)moodycamel::ConcurrentQueueDefaultTraits::MAX_SEMA_SPINS)
    {
    }
    int produce(uintptr_t first, uintptr_t stride, long n) override
    {
        moodycamel::ProducerToken tok(q);
        return produce_loop(first, stride, n, [&](uintptr_t v) QP_INLINE {
            slots.wait();
            return q.enqueue(tok, (void *)v);
        });
    }
    int consume(long n, Checker &c, long *progress) override
    {
        moodycamel::ConsumerToken tok(q);
        return consume_loop(n, c, progress, [&](void *&item) QP_INLINE {
            q.wait_dequeue(tok, item);
            slots.signal();
        });
    }
};

struct MoodyUnboundedPeer final : qpeer {
    moodycamel::BlockingConcurrentQueue<void *> q;

    explicit MoodyUnboundedPeer(long cap) : q((size_t)cap) {}
    int produce(uintptr_t first, uintptr_t stride, long n) override
    {
        moodycamel::ProducerToken tok(q);
        return produce_loop(first, stride, n, [&](uintptr_t v) QP_INLINE { return q.enqueue(tok, (void *)v); });
    }
    int consume(long n, Checker &c, long *progress) override
    {
        moodycamel::ConsumerToken tok(q);
        return consume_loop(n, c, progress, [&](void *&item) QP_INLINE { q.wait_dequeue(tok, item); });
    }
};
} // namespace
#endif

#ifdef CONC_BENCH_HAVE_MOODYCAMEL_SPSC
namespace {
struct MoodySpscPeer final : qpeer {
    moodycamel::BlockingReaderWriterCircularBuffer<void *> q;

    explicit MoodySpscPeer(long cap) : q((size_t)cap) {}
    int produce(uintptr_t first, uintptr_t stride, long n) override
    {
        return produce_loop(first, stride, n, [&](uintptr_t v) QP_INLINE {
            q.wait_enqueue((void *)v);
            return true;
        });
    }
    int consume(long n, Checker &c, long *progress) override
    {
        return consume_loop(n, c, progress, [&](void *&item) QP_INLINE { q.wait_dequeue(item); });
    }
};
} // namespace
#endif

#ifdef CONC_BENCH_HAVE_TBB
namespace {
struct TbbPeer final : qpeer {
    tbb::concurrent_bounded_queue<void *> q;

    explicit TbbPeer(long cap) { q.set_capacity((std::ptrdiff_t)cap); }
    int produce(uintptr_t first, uintptr_t stride, long n) override
    {
        return produce_loop(first, stride, n, [&](uintptr_t v) QP_INLINE {
            q.push((void *)v);
            return true;
        });
    }
    int consume(long n, Checker &c, long *progress) override
    {
        return consume_loop(n, c, progress, [&](void *&item) QP_INLINE { q.pop(item); });
    }
};
} // namespace
#endif

extern "C" {

int qpeer_available(int kind, char *why, size_t whylen)
{
    switch (kind) {
    case QPEER_MOODYCAMEL:
#ifdef CONC_BENCH_HAVE_MOODYCAMEL
        return 1;
#else
        snprintf(why, whylen, "not built: no C++ compiler or no <concurrentqueue/blockingconcurrentqueue.h> "
                              "(Debian libconcurrentqueue-dev) at configure time");
        return 0;
#endif
    case QPEER_MOODYCAMEL_UNBOUNDED:
#ifdef CONC_BENCH_HAVE_MOODYCAMEL
        return 1;
#else
        snprintf(why, whylen, "not built: no C++ compiler or no <concurrentqueue/blockingconcurrentqueue.h> "
                              "(Debian libconcurrentqueue-dev) at configure time");
        return 0;
#endif
    case QPEER_MOODYCAMEL_SPSC:
#ifdef CONC_BENCH_HAVE_MOODYCAMEL_SPSC
        return 1;
#else
        snprintf(why, whylen, "not built: no C++ compiler or no <readerwriterqueue/readerwritercircularbuffer.h> "
                              "(Debian libreaderwriterqueue-dev) at configure time");
        return 0;
#endif
    case QPEER_TBB:
#ifdef CONC_BENCH_HAVE_TBB
        return 1;
#else
        snprintf(why, whylen, "not built: no C++ compiler or no TBB (Debian libtbb-dev) at configure time");
        return 0;
#endif
    }
    snprintf(why, whylen, "unknown peer %d", kind);
    return 0;
}

qpeer_t *qpeer_new(int kind, long capacity, char *why, size_t whylen)
{
    if (!qpeer_available(kind, why, whylen))
        return nullptr;
    try {
        qpeer *q = nullptr;
#ifdef CONC_BENCH_HAVE_MOODYCAMEL
        if (kind == QPEER_MOODYCAMEL)
            q = new MoodyPeer(capacity);
        if (kind == QPEER_MOODYCAMEL_UNBOUNDED)
            q = new MoodyUnboundedPeer(capacity);
#endif
#ifdef CONC_BENCH_HAVE_MOODYCAMEL_SPSC
        if (kind == QPEER_MOODYCAMEL_SPSC)
            q = new MoodySpscPeer(capacity);
#endif
#ifdef CONC_BENCH_HAVE_TBB
        if (kind == QPEER_TBB)
            q = new TbbPeer(capacity);
#endif
        if (q)
            q->kind = kind;
        return q;
    } catch (std::exception &e) {
        snprintf(why, whylen, "constructor threw: %s", e.what());
        return nullptr;
    }
}

void qpeer_free(qpeer_t *q)
{
    delete q;
}

int qpeer_produce(qpeer_t *q, uintptr_t first, uintptr_t stride, long n)
{
    try {
        return q->produce(first, stride, n);
    } catch (...) {
        return -1;
    }
}

int qpeer_consume(qpeer_t *q, long n, int nprod, uint64_t *sum, uint64_t *sumsq, long *progress)
{
    Checker c(nprod);
    int rc;
    try {
        rc = q->consume(n, c, progress);
    } catch (...) {
        rc = -1;
    }
    *sum += c.sum;
    *sumsq += c.sumsq;
    if (rc == 0 && !c.ordered)
        rc = -2;
    return rc;
}

} // extern "C"
