// bench/green_peers.cpp — green_bench's Boost.Context peer (issue 7): the
// switch and spawn_join rows done with Boost.Context's lowest layer,
// fcontext (boost/context/detail/fcontext.hpp: make_fcontext /
// jump_fcontext, the assembly switch that boost::context::fiber and
// Boost.Fiber are built on; Debian libboost-context-dev), behind a small C
// interface so the timing and the checks stay in green_bench.c.
//
// Stacks come from Boost.Context's own pooled_fixedsize_stack (a
// boost::pool of fixed-size blocks: freed stacks are reused, no syscall
// per spawn), 128 KiB each like conc's default green stack.
//
// Compiled into green_bench only when CMake finds a C++ compiler and
// Boost.Context (bench/CMakeLists.txt); otherwise green_bench skips the
// boost peer with a printed note.
//
// The boost_fiber peer (issue 18): Boost.Fiber, the scheduler-level library
// built on Boost.Context (Debian libboost-fiber-dev), as its documentation
// shows it: fibers on the default round_robin scheduler of the calling
// thread, boost::this_fiber::yield for switch, fiber + join for
// spawn_join, and two buffered_channel<long> (capacity 2, the smallest)
// for chan_pingpong. Stacks come from Boost.Fiber's pooled_fixedsize_stack
// (128 KiB, like the others) so a spawn costs no mmap. Built only with
// CONC_BENCH_HAVE_BOOST_FIBER (the CMake package of boost_fiber found).

#include <boost/context/detail/fcontext.hpp>
#include <boost/context/pooled_fixedsize_stack.hpp>

#include <cstddef>
#include <cstdio>
#include <new>

#ifdef CONC_BENCH_HAVE_BOOST_FIBER
#include <boost/fiber/all.hpp>
#endif

namespace ctx = boost::context;
using ctx::detail::fcontext_t;
using ctx::detail::jump_fcontext;
using ctx::detail::make_fcontext;
using ctx::detail::transfer_t;

namespace {

const std::size_t kStackSize = 128 * 1024;

ctx::pooled_fixedsize_stack *g_pool;

// ---------------------------------------------------------------- switch
//
// Two contexts, A and B, jump to each other directly, n times each: every
// jump_fcontext returns the context that jumped to us, which is where the
// next jump goes. A starts B with its first jump; after its n-th jump came
// back, A jumps to the caller's context. B is left suspended on its last
// jump (nothing lives on its stack that needs destroying) and its stack
// goes back to the pool.

struct pingpong {
    fcontext_t caller; // the context that started A (green_bench's thread)
    fcontext_t b;      // B before it ran
    long n;
    long turn;   // iterations of both, in order
    long missed; // jumps that came back without the other side running
};

void pp_body(pingpong *p, fcontext_t other)
{
    for (long i = 0; i < p->n; i++) {
        long before = ++p->turn;
        transfer_t t = jump_fcontext(other, p);
        other = t.fctx;
        if (p->turn == before)
            p->missed++;
    }
}

void pp_a(transfer_t t)
{
    pingpong *p = static_cast<pingpong *>(t.data);
    p->caller = t.fctx;
    pp_body(p, p->b);
    jump_fcontext(p->caller, nullptr); // never comes back
}

void pp_b(transfer_t t)
{
    pingpong *p = static_cast<pingpong *>(t.data);
    pp_body(p, t.fctx);
    // not reached in a full run: A ends the ping-pong (B's n-th jump is
    // the last one A waits for); if it were, give control back to A's side
    jump_fcontext(p->caller, nullptr);
}

// ------------------------------------------------------------ spawn_join
//
// One "green thread": take a stack from the pool, make a context on it,
// jump into it; the body counts its run and jumps back (that is the
// join: the caller resumes only once the body has ended); the stack goes
// back to the pool.

void empty_body(transfer_t t)
{
    ++*static_cast<long *>(t.data);
    jump_fcontext(t.fctx, nullptr); // ended: back to the joiner, never resumed
}

} // namespace

extern "C" {

// 1 if the peer can run (its stack pool exists), else 0 and why.
int gpeer_boost_init(char *why, std::size_t whylen)
{
    if (g_pool)
        return 1;
    g_pool = new (std::nothrow) ctx::pooled_fixedsize_stack(kStackSize);
    if (!g_pool) {
        std::snprintf(why, whylen, "out of memory for the stack pool");
        return 0;
    }
    return 1;
}

// n jumps each way between two contexts. Returns 0, or -1 with why.
int gpeer_boost_switch(long n, char *why, std::size_t whylen)
{
    ctx::stack_context sa, sb;
    try {
        sa = g_pool->allocate();
        sb = g_pool->allocate();
    } catch (const std::bad_alloc &) {
        std::snprintf(why, whylen, "stack allocation failed");
        return -1;
    }
    pingpong p{};
    p.n = n;
    p.b = make_fcontext(sb.sp, sb.size, pp_b);
    fcontext_t a = make_fcontext(sa.sp, sa.size, pp_a);
    jump_fcontext(a, &p);
    g_pool->deallocate(sa);
    g_pool->deallocate(sb);
    if (p.turn != 2 * n) {
        std::snprintf(why, whylen, "%ld iterations instead of %ld", p.turn, 2 * n);
        return -1;
    }
    if (p.missed != 0) {
        std::snprintf(why, whylen, "%ld jumps came back without the other context running", p.missed);
        return -1;
    }
    return 0;
}

// n spawn + run + join of an empty body, one after the other. Returns 0,
// or -1 with why.
int gpeer_boost_spawn_join(long n, char *why, std::size_t whylen)
{
    long ran = 0;
    for (long i = 0; i < n; i++) {
        ctx::stack_context s;
        try {
            s = g_pool->allocate();
        } catch (const std::bad_alloc &) {
            std::snprintf(why, whylen, "stack allocation failed");
            return -1;
        }
        fcontext_t c = make_fcontext(s.sp, s.size, empty_body);
        jump_fcontext(c, &ran);
        g_pool->deallocate(s);
    }
    if (ran != n) {
        std::snprintf(why, whylen, "%ld bodies ran instead of %ld", ran, n);
        return -1;
    }
    return 0;
}

#ifdef CONC_BENCH_HAVE_BOOST_FIBER

namespace fibers = boost::fibers;

// n yields each in two fibers, joined by the calling thread's main fiber.
// A yield that came back without the other fiber running is counted (more
// than 2 fails the run, as for the other impls).
int gpeer_fiber_switch(long n, char *why, std::size_t whylen)
{
    long turn = 0, missed = 0;
    auto body = [&] {
        for (long i = 0; i < n; i++) {
            long before = ++turn;
            boost::this_fiber::yield();
            if (turn == before)
                missed++;
        }
    };
    try {
        fibers::fiber a(std::allocator_arg, fibers::pooled_fixedsize_stack(kStackSize), body);
        fibers::fiber b(std::allocator_arg, fibers::pooled_fixedsize_stack(kStackSize), body);
        a.join();
        b.join();
    } catch (const std::exception &e) {
        std::snprintf(why, whylen, "boost.fiber threw: %s", e.what());
        return -1;
    }
    if (turn != 2 * n) {
        std::snprintf(why, whylen, "%ld iterations instead of %ld", turn, 2 * n);
        return -1;
    }
    if (missed > 2) {
        std::snprintf(why, whylen, "%ld yields came back without the other fiber running", missed);
        return -1;
    }
    return 0;
}

// n fiber spawns of an empty body, each joined before the next. One pooled
// stack allocator for the whole run (its pool keeps the freed stacks).
int gpeer_fiber_spawn_join(long n, char *why, std::size_t whylen)
{
    long ran = 0;
    try {
        fibers::pooled_fixedsize_stack salloc(kStackSize);
        for (long i = 0; i < n; i++) {
            fibers::fiber f(std::allocator_arg, salloc, [&ran] { ++ran; });
            f.join();
        }
    } catch (const std::exception &e) {
        std::snprintf(why, whylen, "boost.fiber threw: %s", e.what());
        return -1;
    }
    if (ran != n) {
        std::snprintf(why, whylen, "%ld bodies ran instead of %ld", ran, n);
        return -1;
    }
    return 0;
}

// Ping-pong through two buffered_channel<long>: fiber A pushes 1..n on
// ping and pops each back from pong, fiber B pops from ping and pushes
// what it got on pong. 2n hand-offs; A checks every value it gets back.
int gpeer_fiber_chan_pingpong(long n, char *why, std::size_t whylen)
{
    long bad = 0, got = 0;
    try {
        fibers::buffered_channel<long> ping(2), pong(2);
        fibers::pooled_fixedsize_stack salloc(kStackSize);
        fibers::fiber a(std::allocator_arg, salloc, [&] {
            for (long i = 1; i <= n; i++) {
                long x = 0;
                if (ping.push(i) != fibers::channel_op_status::success ||
                    pong.pop(x) != fibers::channel_op_status::success) {
                    bad++;
                    break;
                }
                bad += x != i;
                got++;
            }
        });
        fibers::fiber b(std::allocator_arg, salloc, [&] {
            for (long i = 1; i <= n; i++) {
                long x = 0;
                if (ping.pop(x) != fibers::channel_op_status::success ||
                    pong.push(x) != fibers::channel_op_status::success) {
                    bad++;
                    break;
                }
            }
        });
        a.join();
        b.join();
    } catch (const std::exception &e) {
        std::snprintf(why, whylen, "boost.fiber threw: %s", e.what());
        return -1;
    }
    if (bad || got != n) {
        std::snprintf(why, whylen, "%ld of %ld round trips came back wrong or failed", bad + (n - got), n);
        return -1;
    }
    return 0;
}

#endif // CONC_BENCH_HAVE_BOOST_FIBER

} // extern "C"
