/*
 * ring.c — bounded MPMC FIFO: an array of cells, each with a sequence
 * number saying whose turn it is (after D. Vyukov's bounded queue).
 *
 * Cell i starts with seq = i. A producer holding ticket p (from `enq`) may
 * fill cell p % cap when its seq == p, then sets seq = p + 1; a consumer
 * with ticket d may empty cell d % cap when seq == d + 1, then sets
 * seq = d + cap (the producer one lap later). Tickets are taken with a CAS
 * only when the cell is ready, so `enq - deq` never exceeds cap and the
 * counters double as the queue's put/get totals. Any capacity works
 * (modulo; a mask when it is a power of two).
 *
 * A cell can be "claimed but not yet published" for a few instructions.
 * In exact mode put/get then spin instead of reporting full/empty, so
 * put_nowait fails only when the queue really holds cap items (and
 * get_nowait only when it holds none); the blocking fast paths skip that
 * check (it reads the other side's counter, a cache line the other side
 * writes on every operation) and re-check exactly before sleeping.
 *
 * After a raw fork() the claiming thread may not exist: its cell stays
 * claimed for good. So in a process forked while other threads ran (or
 * descended from one: conc__fork_orphans, core/park.h) a spin that lasts
 * ~16k rounds gives up and answers full/empty; the caller's blocking path
 * then waits with its own deadline instead of spinning forever. (There a
 * preempted claimer can cause such an answer too; blocking callers
 * re-check, so only the _nowait calls can see a spurious Full/Empty. A
 * child forked from a single thread — every fork-server child — stays
 * exact.)
 *
 * Owner paths (one producer, one consumer). A ticket CAS is a locked
 * instruction: it drains the store buffer, so every put/get waits for the
 * cache line of the cell it just wrote to come back from the other core.
 * Most rings have one producing and one consuming thread, so each side
 * has an owner word (pown, cown): the first thread to put (get) claims
 * its side, and while it owns it, it takes tickets with a plain load and
 * store of enq (deq) — the same steps as the CAS path (claim, then fill
 * or empty the cell, then publish its seq), so a half-done owner step
 * looks like a claimed, unpublished cell to everybody else. The owner
 * brackets each operation with its busy count (per thread, not per side:
 * conc__ring_thr_t, whose address is the thread's owner id; raised without
 * a fence and followed by a re-read of the owner word; a nesting count, so
 * a signal handler's operation on another ring restores it). Another thread that wants the
 * side (or close()) revokes it: owner word -> REVOKING, membarrier(2)
 * (conc__fence_heavy: every running thread of the process executes a full
 * barrier, so either the owner's re-read sees REVOKING or the revoker sees
 * busy), waits for the owner's busy == 0, then SHARED: everybody uses the
 * CAS path. Owner records are never freed (a revoker reads the busy count
 * of an owner that may have exited); an exited thread's record goes to the
 * next thread that claims a side, with the sides it still owns.
 * Only a process where membarrier works claims sides
 * (conc__membarrier_init); a revocation in a child that a fork left
 * without the owner stops waiting as a stuck claim does — only for a side
 * claimed before that fork (pgen/cgen: the fork generation of the claim);
 * an owner claimed in this process is alive and waited for. Likewise a
 * side left REVOKING by a fork (its revoker left behind: rgen, the fork
 * generation stamped before the REVOKING CAS, is older) is taken over
 * after that bounded wait; a revoker of this process is waited for.
 *
 * Re-claiming a shared side. A side revoked because a second thread came
 * by once, or because sleepers met every few items for a while, often
 * goes back to one thread running alone on it for a long time. So the
 * CAS path counts, on the counter's own cache line (in this CPU's cache
 * right after the CAS), which thread made the last operation and how many
 * it made in a row; at `reclaim` in a row (RECLAIM_MIN at first) that
 * thread claims the side (SHARED -> its id) — any thread: with more
 * threads than CPUs the scheduler often runs one producer of 16 and one
 * consumer alone for a stretch, and each claims its side for that
 * stretch (16p16c went from 31 to ~68 M items/s on 2 CPUs, ~80-106 with
 * the shorter runs of RECLAIM_MIN). That needs
 * the busy count per thread: a former owner may still be inside an
 * owner-path entry it began before its revocation (preempted between its
 * check of the owner word and its raise of busy); it then raises and
 * restores its own count, never the new owner's (with one busy flag per
 * side, a revoker would stop waiting for the new owner's operation).
 * The claim must shut out CAS-path operations already under way, which read the side as shared:
 * a shared side's counter carries SHARED_BIT (set by whoever makes it
 * shared, after the owner's last operation), which the CAS path's ticket
 * CAS expects set and the new owner clears with an RMW (side_mark, in its
 * first busy bracket) — a CAS-path operation either took its ticket
 * before (the owner's plain load sees it) or fails, sees the bit clear and
 * starts over (RING_AGAIN). close() sets CLOSED in enq only together
 * with SHARED_BIT (a CAS; a side claimed back meanwhile is revoked again)
 * and a claim that finds CLOSED is given up (side_mark), so no owner
 * ever stores enq over CLOSED nor answers Full on a closed side. An
 * owner's counter has no bit to mask: the
 * owner paths are the plain single-producer / single-consumer steps. A claim costs the next revocation's membarrier (~10-20 us
 * when another CPU runs a thread of ours, in a VM): one that did not last
 * RECLAIM_PAYOFF operations doubles the run the next claim needs, one
 * that did halves it (down to RECLAIM_MIN).
 *
 * Cache lines. The cells are line-aligned, four to a line, and both
 * sides write every cell (the producer its item and seq, the consumer its
 * seq), so a put or get fetches its cell's line for writing before it reads
 * the seq (conc__prefetchw): one transfer from the other core instead of a
 * read and then an upgrade (which, on the CAS path, the next locked CAS
 * would wait for). A full ring's waiting putter watches a cell a batch
 * ahead, not the consumer's (queue.c, put_general).
 *
 * Sleeping (queue.c): the owner's wake-up check (a load of the sleeper
 * count after the publishing stores) has no RMW before it, so a sleeper
 * waiting on a side owned by another thread pairs its re-check with a
 * heavy fence, as with segq (conc__ring_sleep_fence; not when the owner
 * is its own thread, e.g. green threads of one hub). Where sleeps come
 * every few items (hand-offs between threads), those membarriers would
 * cost more than the owner path saves, so after a run of such close
 * sleeps the side is made shared. FIFO puts and gets are not async-signal-safe
 * (Python's are not either): a handler that puts to a ring its thread owns
 * while that thread is mid-put would take the same ticket.
 */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "core/fence.h"
#include "queue/container.h"

/* This thread's id as a side owner (never 0, 1 or 2): its record's
 * address (container.h; conc__ring_nothr, which owns nothing, until it
 * first claims a side). */
conc__ring_thr_t conc__ring_nothr;
__thread conc__ring_thr_t *conc__ring_me __attribute__((tls_model("initial-exec"))) = &conc__ring_nothr;
static inline uintptr_t self_id(void)
{
    return (uintptr_t)conc__ring_me;
}

/* Records of exited threads, for the next threads that claim sides.
 * A thread's first claim may come from a signal handler (a non-blocking
 * get in a handler is allowed; a blocking one says CONC_EPERM in the
 * hub's loop only after its first try), so making a record uses only
 * async-signal-safe steps: the guard is a flag that a claim only tries
 * (busy: no claim this time, the CAS path serves), records come from
 * mmap'd chunks (no malloc; never freed, as records never are), and the
 * key's slot is set with pthread_setspecific (glibc: a store into the
 * thread's own array for the first keys). */
static atomic_flag thr_guard = ATOMIC_FLAG_INIT;
static conc__ring_thr_t *thr_free;
/* Records a fork took off thr_free (ring_atfork_child): never handed out
 * again, but still referenced. */
static conc__ring_thr_t *volatile thr_retired; /* (volatile: its stores stay) */
static char *thr_chunk;        /* the rest of the chunk records come from */
static size_t thr_chunk_left;
#define THR_CHUNK (16u * 1024u)
static pthread_key_t thr_key;
static bool thr_key_ok;

static bool thr_trylock(void)
{
    return !atomic_flag_test_and_set_explicit(&thr_guard, memory_order_acquire);
}
static void thr_unlock(void)
{
    atomic_flag_clear_explicit(&thr_guard, memory_order_release);
}

/* At thread exit: give the record back (its busy count is 0: no
 * operation is under way), and stop using it. A ring operation of a
 * later destructor of this thread gets a record again (or none). */
static void thr_exit(void *p)
{
    conc__ring_thr_t *t = p;
    conc__ring_me = &conc__ring_nothr;
    while (!thr_trylock()) /* held for a few instructions by a running thread */
        sched_yield();
    t->next_free = thr_free;
    thr_free = t;
    thr_unlock();
}

/* A record: a free one, or a new one from the chunk (under the guard). */
static conc__ring_thr_t *thr_take(void)
{
    conc__ring_thr_t *t = thr_free;
    if (t) {
        thr_free = t->next_free;
        return t;
    }
    if (thr_chunk_left < sizeof *t) {
        void *m = mmap(NULL, THR_CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return NULL;
        thr_chunk = m;
        thr_chunk_left = THR_CHUNK;
    }
    t = (conc__ring_thr_t *)(void *)thr_chunk; /* (page-aligned chunk, line-sized records) */
    thr_chunk += sizeof *t;
    thr_chunk_left -= sizeof *t;
    atomic_init(&t->busy, 0);
    return t;
}

/* The calling thread's own record, made on its first claim: its id (0
 * when there is none to have now — no memory, or the guard is held, e.g.
 * by the code a signal handler interrupted: the caller does not claim). */
static uintptr_t thr_id(void)
{
    conc__ring_thr_t *t = conc__ring_me;
    if (__builtin_expect(t != &conc__ring_nothr, 1))
        return (uintptr_t)t;
    if (!thr_key_ok || !thr_trylock())
        return 0;
    t = thr_take();
    thr_unlock();
    if (!t)
        return 0;
    t->next_free = NULL;
    if (pthread_setspecific(thr_key, t) != 0) {
        thr_exit(t); /* (no destructor would give it back: not kept) */
        return 0;
    }
    conc__ring_me = t;
    return (uintptr_t)t;
}

/* The thread that made the last fork (in a child: its only thread, still
 * the owner of the sides it owned before the fork). */
static uintptr_t fork_survivor;
static void ring_atfork_child(void)
{
    atomic_store_explicit((_Atomic uintptr_t *)&fork_survivor, self_id(), memory_order_relaxed);
    /* (a thread left behind may have held it; the child has one thread) */
    atomic_flag_clear_explicit(&thr_guard, memory_order_relaxed);
    /* Records of threads that exited before the fork are not handed out
     * here: the sides they own carry the parent's fork generation, and a
     * revoker would take a live owner of such a side for one left behind
     * (a bounded wait). The few records are left unused (kept on a list
     * of their own: still reachable). */
    if (thr_free) {
        conc__ring_thr_t *last = thr_free;
        while (last->next_free)
            last = last->next_free;
        last->next_free = thr_retired;
        thr_retired = thr_free;
    }
    thr_free = NULL;
}
__attribute__((constructor)) static void ring_fork_init(void)
{
    pthread_atfork(NULL, NULL, ring_atfork_child);
    thr_key_ok = pthread_key_create(&thr_key, thr_exit) == 0;
}

/* A shared side is claimed again by a thread that made this many CAS-path
 * operations on it in a row (at first; see side_revoke).
 * The break-even: a CAS-path operation costs ~100 ns more than an owner's
 * while the other side runs on another CPU (a locked instruction waiting
 * for the cell's line), a revocation's membarrier ~10-20 us, so a claim
 * pays after a few hundred operations. Measured at 16p16c on 2 CPUs:
 * with a 1024-8192-16384 run, 3-5% of the operations took the CAS path
 * and cost about a fifth of the CPU (the side went back to shared with
 * each time slice: the scheduler ran another of the 16 producers); with
 * 32-256-4096, 0.15% (25x fewer) for 2.5x the revocations, and 16p16c
 * went from ~45-76 to ~80-106 M items/s. 1p1c and 2p2c are unchanged
 * (1p1c never revokes). */
#define RECLAIM_MIN 32u
#define RECLAIM_MAX 4096u
/* A claim that lasted this many operations paid for its revocation. */
#define RECLAIM_PAYOFF 256u

int conc__ring_init(conc__ring_t *r, size_t cap)
{
    /* line-aligned: each line holds 4 whole cells of this ring and nothing
     * else (no allocator header of a neighbour shares its ends) */
    size_t bytes = (cap * sizeof *r->cells + CONC__CACHELINE - 1) & ~(size_t)(CONC__CACHELINE - 1);
    r->cells = cap > SIZE_MAX / sizeof *r->cells / 2 ? NULL : aligned_alloc(CONC__CACHELINE, bytes);
    if (!r->cells)
        return CONC_ENOMEM;
    for (size_t i = 0; i < cap; i++) {
        atomic_init(&r->cells[i].seq, i);
        r->cells[i].item = NULL;
    }
    r->cap = cap;
    r->mask = (cap & (cap - 1)) == 0 ? cap - 1 : 0;
    atomic_init(&r->enq, 0);
    atomic_init(&r->deq, 0);
    atomic_init(&r->pown, CONC__RING_OWN_NONE);
    atomic_init(&r->cown, CONC__RING_OWN_NONE);
    atomic_init(&r->pgen, 0);
    atomic_init(&r->cgen, 0);
    atomic_init(&r->plast, 0);
    atomic_init(&r->clast, 0);
    atomic_init(&r->pstreak, 0);
    atomic_init(&r->cstreak, 0);
    atomic_init(&r->preclaim, RECLAIM_MIN);
    atomic_init(&r->creclaim, RECLAIM_MIN);
    atomic_init(&r->pfrom, 0);
    atomic_init(&r->cfrom, 0);
    atomic_init(&r->prgen, 0);
    atomic_init(&r->crgen, 0);
    atomic_init(&r->fence_mark[0], 0);
    atomic_init(&r->fence_mark[1], 0);
    atomic_init(&r->fence_strikes, 0);
    conc__membarrier_init(); /* once per process: sides may be claimed */
    return 0;
}

void conc__ring_destroy(conc__ring_t *r)
{
    free(r->cells);
    r->cells = NULL;
}

static inline conc__cell_t *cell_at(conc__ring_t *r, size_t pos)
{
    return &r->cells[r->mask ? (pos & r->mask) : (pos % r->cap)];
}

/* A claimed cell still unpublished after many rounds, in a child that a
 * fork may have left with a dead claimer. */
static bool stuck_since_fork(unsigned *spins)
{
    return ++*spins > (1u << 14) && conc__load(&conc__fork_orphans, RLX);
}

/* Wait a round for a cell another thread claimed but has not published
 * yet (true: give up, see stuck_since_fork). Its claimer is normally a few
 * instructions from done, but it may have been preempted there: with more
 * threads than CPUs it then waits in a run queue, behind the very threads
 * spinning for it, so after a short spin each round yields the CPU. */
static bool mid_way_wait(unsigned *spins)
{
    if (stuck_since_fork(spins))
        return true;
    if ((*spins & 63) != 0)
        conc__cpu_relax();
    else
        sched_yield();
    return false;
}

/* One side of the ring (put: enq and the p* fields; get: deq, c*). */
typedef struct {
    atomic_size_t *ctr;
    _Atomic uintptr_t *own, *last;
    atomic_uint *gen, *streak, *reclaim, *rgen;
    atomic_size_t *from;
} side_t;

static inline side_t side_of(conc__ring_t *r, bool getter)
{
    if (getter)
        return (side_t){&r->deq,  &r->cown,     &r->clast,   &r->cgen,
                        &r->cstreak, &r->creclaim, &r->crgen, &r->cfrom};
    return (side_t){&r->enq,  &r->pown,     &r->plast,   &r->pgen,
                    &r->pstreak, &r->preclaim, &r->prgen, &r->pfrom};
}

/* own: *o -> REVOKING (a CAS; false and *o updated if it changed).
 * Stamps the side's rgen first, so a thread that sees REVOKING also sees
 * the fork generation of a revoker that may have set it (the CAS
 * releases the stamp; a failed CAS leaves this process's generation,
 * which a fork's orphaned REVOKING never sees: threads of the child find
 * it set from their start and never CAS). */
static inline bool side_begin_revoke(side_t s, uintptr_t *o)
{
    atomic_store_explicit(s.rgen, conc__load(&conc__fork_gen, RLX), memory_order_relaxed);
    return atomic_compare_exchange_strong_explicit(s.own, o, CONC__RING_OWN_REVOKING, memory_order_seq_cst,
                                                   memory_order_acquire);
}

/* Enter the owner path: true if the calling thread (me: its id) owns the
 * side (its busy count is raised then, from *b; the caller restores it
 * with side_leave). */
static inline bool side_enter(_Atomic uintptr_t *own, uintptr_t me, unsigned *b)
{
    if (atomic_load_explicit(own, memory_order_relaxed) != me)
        return false;
    atomic_uint *busy = conc__ring_busy(me);
    *b = atomic_load_explicit(busy, memory_order_relaxed);
    atomic_store_explicit(busy, *b + 1, memory_order_relaxed);
    /* no hardware fence: the revoker's membarrier stands in for it */
    atomic_signal_fence(memory_order_seq_cst);
    if (__builtin_expect(atomic_load_explicit(own, memory_order_relaxed) == me, 1))
        return true;
    atomic_store_explicit(busy, *b, memory_order_release);
    return false;
}

static inline void side_leave(uintptr_t me, unsigned b)
{
    atomic_store_explicit(conc__ring_busy(me), b, memory_order_release);
}

/* A new owner's first step, inside its first busy bracket: clear
 * SHARED_BIT in the counter with an RMW, so that no CAS-path operation
 * that read the side as shared can take a ticket from now on (theirs
 * expect the bit set; they fail, see it clear and go round again).
 * False: the put side was closed meanwhile (conc__ring_close sets CLOSED
 * only together with SHARED_BIT): the claim is given up, the side stays
 * shared (a revoker under way finishes that), the caller leaves its busy
 * bracket and takes the CAS path, which fails. */
static bool side_mark(side_t s)
{
    size_t c = atomic_load_explicit(s.ctr, memory_order_relaxed);
    while (c & CONC__RING_SHARED_BIT) {
        if (c & CONC__RING_CLOSED) {
            uintptr_t me = self_id();
            atomic_compare_exchange_strong_explicit(s.own, &me, CONC__RING_OWN_SHARED, memory_order_seq_cst,
                                                    memory_order_relaxed);
            return false;
        }
        if (atomic_compare_exchange_weak_explicit(s.ctr, &c, c & ~CONC__RING_SHARED_BIT, memory_order_seq_cst,
                                                  memory_order_relaxed))
            break;
    }
    atomic_store_explicit(s.from, c & ~CONC__RING_FLAGS, memory_order_relaxed);
    return true;
}

/* The owner o of a side is being replaced (own == REVOKING, set by the
 * caller): wait for its operation, set SHARED_BIT, make the side shared
 * (true). A claim that did not last long makes the next one wait for a
 * longer run of CAS-path operations by one thread.
 * The owner's operation is a few instructions, but its thread may be
 * preempted in it. A green revoker (may_switch: it holds no guard) does
 * not stall its hub meanwhile: after a short spin it puts the owner back
 * (only a revoker changes REVOKING) and switches to the hub's other green
 * threads (conc__hub_pause), then tries again (false) — so REVOKING is
 * never left set while its revoker is switched out, where a green thread
 * of the same hub could wait for it without switching. */
static bool side_revoke(side_t s, uintptr_t o, bool may_switch)
{
    /* Either the owner's re-read of `own` sees REVOKING, or we see its
     * busy flag: wait until its operation is over. */
    conc__fence_heavy();
    unsigned spins = 0;
    /* (claimed before a fork, by another thread than the forking one) */
    bool left_behind = atomic_load_explicit(s.gen, memory_order_relaxed) != conc__load(&conc__fork_gen, RLX) &&
                       o != atomic_load_explicit((_Atomic uintptr_t *)&fork_survivor, memory_order_relaxed);
    may_switch = may_switch && !left_behind && conc__local_hub();
    while (atomic_load_explicit(conc__ring_busy(o), memory_order_acquire)) {
        if (left_behind ? stuck_since_fork(&spins) : (++spins, false))
            break;
        if (may_switch && spins >= 256) {
            atomic_store_explicit(s.own, o, memory_order_seq_cst);
            if (!conc__hub_pause())
                sched_yield(); /* the hub's loop context: it cannot switch */
            return false;
        }
        if ((spins & 63) != 63)
            conc__cpu_relax();
        else
            sched_yield();
    }
    size_t c = atomic_fetch_or_explicit(s.ctr, CONC__RING_SHARED_BIT, memory_order_seq_cst) & ~CONC__RING_FLAGS;
    unsigned k = atomic_load_explicit(s.reclaim, memory_order_relaxed);
    if (c - atomic_load_explicit(s.from, memory_order_relaxed) < RECLAIM_PAYOFF)
        k = k < RECLAIM_MAX / 2 ? k * 2 : RECLAIM_MAX; /* a short claim */
    else
        k = k / 2 > RECLAIM_MIN ? k / 2 : RECLAIM_MIN;
    atomic_store_explicit(s.reclaim, k, memory_order_relaxed);
    atomic_store_explicit(s.streak, 0, memory_order_relaxed);
    atomic_store_explicit(s.own, CONC__RING_OWN_SHARED, memory_order_seq_cst);
    return true;
}

/* A side left REVOKING for long by a revoker of an older fork generation
 * (rgen: a thread a fork left behind; a revoker of this process is alive
 * and is waited for): finish the hand-over (the CAS leaves a live
 * revoker's own end of it alone). Its owner was one of the threads of
 * that fork: left behind too, or the thread that forked — which is not in
 * an owner operation (it was in fork(), and nobody claims a REVOKING
 * side), so there is no operation to wait for. */
static void side_orphan_revoked(side_t s)
{
    atomic_fetch_or_explicit(s.ctr, CONC__RING_SHARED_BIT, memory_order_seq_cst);
    uintptr_t o = CONC__RING_OWN_REVOKING;
    atomic_compare_exchange_strong_explicit(s.own, &o, CONC__RING_OWN_SHARED, memory_order_seq_cst,
                                            memory_order_relaxed);
}

/* The calling thread does not own the side: claim it if nobody has yet
 * and may_claim (returns true: the caller owns it now, and marks it on
 * its first operation, side_mark), else make it shared (returns false:
 * use the CAS path). gen: the fork generation the side was claimed in.
 * Only an owner claimed in an older generation (a thread of an ancestor
 * process, left behind by a fork) may be given up on while busy, unless
 * it is the thread that forked (alive here); an owner of this process is
 * alive and its operation ends, however long it is preempted.
 * may_switch: the caller holds no guard (side_revoke). */
static bool side_take(side_t s, uintptr_t me, bool may_claim, bool may_switch)
{
    uintptr_t o = atomic_load_explicit(s.own, memory_order_acquire);
    for (;;) {
        if (o == CONC__RING_OWN_SHARED)
            return false;
        if (o == CONC__RING_OWN_REVOKING) {
            /* another thread is handing it over: wait for SHARED (a
             * revoker of this process is alive and finishes, however long
             * it or the owner it waits for is preempted; only one that a
             * fork left behind is taken over) */
            for (unsigned n = 0; (o = atomic_load_explicit(s.own, memory_order_acquire)) ==
                                 CONC__RING_OWN_REVOKING;) {
                if (stuck_since_fork(&n) &&
                    atomic_load_explicit(s.rgen, memory_order_relaxed) != conc__load(&conc__fork_gen, RLX)) {
                    side_orphan_revoked(s);
                    break;
                }
                if ((n & 63) != 0)
                    conc__cpu_relax();
                else
                    sched_yield();
            }
            continue;
        }
        if (o == CONC__RING_OWN_NONE) {
            bool claim = may_claim && conc__membarrier_init();
            /* (racing claimers of one process store the same value) */
            atomic_store_explicit(s.gen, conc__load(&conc__fork_gen, RLX), memory_order_relaxed);
            if (claim ? !atomic_compare_exchange_strong_explicit(s.own, &o, me, memory_order_seq_cst,
                                                                 memory_order_acquire)
                      : !side_begin_revoke(s, &o))
                continue;
            if (claim)
                return true;
            /* never owned: shared from the start (others wait for SHARED) */
            atomic_fetch_or_explicit(s.ctr, CONC__RING_SHARED_BIT, memory_order_seq_cst);
            atomic_store_explicit(s.own, CONC__RING_OWN_SHARED, memory_order_seq_cst);
            return false;
        }
        if (o == me)
            return true;
        if (!side_begin_revoke(s, &o))
            continue;
        if (side_revoke(s, o, may_switch))
            return false;
        o = atomic_load_explicit(s.own, memory_order_acquire); /* put back while we switched: again */
    }
}

/* After a CAS-path operation of the calling thread: count the run of such
 * operations it made in a row (the side's counter line is in this CPU's
 * cache now: plain loads and stores) and claim the side back when the run
 * is long: with more threads than CPUs, the scheduler often lets one
 * thread run alone on a side for a whole time slice. */
static inline void side_count(side_t s)
{
    uintptr_t me = self_id();
    unsigned n = atomic_load_explicit(s.streak, memory_order_relaxed) + 1;
    if (atomic_load_explicit(s.last, memory_order_relaxed) != me) {
        atomic_store_explicit(s.last, me, memory_order_relaxed);
        n = 1;
    }
    atomic_store_explicit(s.streak, n, memory_order_relaxed);
    if (__builtin_expect(n < atomic_load_explicit(s.reclaim, memory_order_relaxed), 1))
        return;
    atomic_store_explicit(s.streak, 0, memory_order_relaxed);
    /* Any thread may claim it: a former owner that is still inside an
     * owner-path entry it began before its revocation (preempted between
     * its check of the owner word and its raise of busy) raises and
     * restores its own busy count, not the new owner's. */
    if (conc__membarrier_state != 1 || atomic_load_explicit(s.own, memory_order_relaxed) != CONC__RING_OWN_SHARED ||
        !(me = thr_id()))
        return;
    /* Stamp the claim's fork generation before the CAS, as side_take does
     * (the CAS releases it): a revoker that sees us as the owner sees our
     * generation too, never an older claim's (which could make it take a
     * live owner for one a fork left behind). A shared side's gen is read
     * by nobody, and the stamps of racing claimers of one process are
     * equal, so the stamp never lands wrong under another thread's claim. */
    atomic_store_explicit(s.gen, conc__load(&conc__fork_gen, RLX), memory_order_relaxed);
    uintptr_t o = CONC__RING_OWN_SHARED;
    if (!atomic_compare_exchange_strong_explicit(s.own, &o, me, memory_order_seq_cst, memory_order_relaxed))
        return;
    unsigned b;
    if (side_enter(s.own, me, &b)) {
        (void)side_mark(s);
        side_leave(me, b);
    }
}

/* Sleeps closer than this many items apart are strikes; this many strikes
 * make the side shared. */
#define FENCE_NEAR 256
#define FENCE_STRIKES 16

bool conc__ring_sleep_fence_slow(conc__ring_t *r, bool getter)
{
    side_t s = side_of(r, !getter); /* the side that would wake us */
    uintptr_t o = atomic_load(s.own);
    if (o == CONC__RING_OWN_NONE || o == CONC__RING_OWN_SHARED || o == self_id())
        return false;
    /* Being revoked: our heavy fence pairs with the outgoing owner's
     * operations (no waiting here, under the list's guard). */
    if (o == CONC__RING_OWN_REVOKING)
        return true;
    {
        size_t now = atomic_load_explicit(s.ctr, memory_order_relaxed) & ~CONC__RING_FLAGS;
        size_t last = atomic_exchange_explicit(&r->fence_mark[getter], now, memory_order_relaxed);
        if (now - last >= FENCE_NEAR) {
            atomic_store_explicit(&r->fence_strikes, 0, memory_order_relaxed);
            return true;
        }
        if (atomic_fetch_add_explicit(&r->fence_strikes, 1, memory_order_relaxed) + 1 < FENCE_STRIKES)
            return true;
    }
    /* hand the side over (its own heavy fence orders the owner's last
     * operations before our re-check); from now on its puts use the RMW.
     * Under the guard: revoke without switching, and do not wait for
     * another revoker (fence instead). */
    if (!side_begin_revoke(s, &o))
        return o != CONC__RING_OWN_SHARED && o != self_id();
    side_revoke(s, o, false);
    return false;
}

void conc__ring_close(conc__ring_t *r)
{
    /* The CLOSED bit is set with an RMW, so CAS-path puts fail from then
     * on, and only while the side is shared: with SHARED_BIT, which no
     * re-claim clears from then on (side_mark), so no owner stores enq
     * over it. A claim back that came between our hand-over and the RMW
     * is revoked again. */
    side_t s = side_of(r, false);
    for (;;) {
        side_take(s, CONC__RING_OWN_NONE, false, true);
        size_t c = atomic_load_explicit(&r->enq, memory_order_relaxed);
        while ((c & CONC__RING_SHARED_BIT) &&
               !atomic_compare_exchange_weak_explicit(&r->enq, &c, c | CONC__RING_CLOSED, memory_order_seq_cst,
                                                      memory_order_relaxed)) {
        }
        if (c & CONC__RING_SHARED_BIT)
            return;
    }
}

/* The CAS path saw SHARED_BIT clear: a thread claimed the side
 * meanwhile; look again. */
#define RING_AGAIN 1

/* The owner's put: only it stores enq (close revokes first). */
static inline int owner_put(conc__ring_t *r, void *item, bool exact)
{
    unsigned spins = 0;
    size_t pos = atomic_load_explicit(&r->enq, memory_order_relaxed);
    conc__cell_t *c = cell_at(r, pos);
    for (;;) {
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        if (seq == pos) {
            atomic_store_explicit(&r->enq, pos + 1, memory_order_relaxed);
            atomic_store_explicit((void *_Atomic *)&c->item, item, memory_order_relaxed);
            atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
            return 0;
        }
        /* Full by this cell. Really full, or a consumer is mid-way? */
        if (!exact)
            return CONC_EFULL;
        size_t deq = atomic_load_explicit(&r->deq, memory_order_acquire) & ~CONC__RING_SHARED_BIT;
        if (pos - deq >= r->cap || mid_way_wait(&spins))
            return CONC_EFULL;
    }
}

/* The owner's get: only it stores deq. */
static inline bool owner_get(conc__ring_t *r, void **item, bool exact)
{
    unsigned spins = 0;
    size_t pos = atomic_load_explicit(&r->deq, memory_order_relaxed);
    conc__cell_t *c = cell_at(r, pos);
    for (;;) {
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        if (seq == pos + 1) {
            atomic_store_explicit(&r->deq, pos + 1, memory_order_relaxed);
            *item = c->item;
            atomic_store_explicit(&c->seq, pos + r->cap, memory_order_release);
            return true;
        }
        /* Empty by this cell. Really empty, or a producer is mid-way? */
        if (!exact)
            return false;
        size_t enq = atomic_load_explicit(&r->enq, memory_order_acquire) & ~CONC__RING_FLAGS;
        if (enq == pos || mid_way_wait(&spins))
            return false;
    }
}

/* The CAS path (a shared side): 0, CONC_EFULL, CONC_ESHUTDOWN or
 * RING_AGAIN (a thread claimed the side). */
static __attribute__((noinline)) int shared_put(conc__ring_t *r, void *item, bool exact)
{
    unsigned spins = 0;
    size_t pos = atomic_load_explicit(&r->enq, memory_order_relaxed);
    for (;;) {
        /* (close() leaves the bit set) */
        if (pos & CONC__RING_CLOSED)
            return CONC_ESHUTDOWN;
        if (!(pos & CONC__RING_SHARED_BIT))
            return RING_AGAIN;
        size_t p = pos & ~CONC__RING_SHARED_BIT;
        conc__cell_t *c = cell_at(r, p);
        conc__prefetchw(c);
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)p;
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&r->enq, &pos, pos + 1, memory_order_seq_cst,
                                                      memory_order_relaxed)) {
                /* atomic (relaxed: a plain mov): conc__ring_peek may read
                 * this cell while the next lap's put writes it */
                atomic_store_explicit((void *_Atomic *)&c->item, item, memory_order_relaxed);
                atomic_store_explicit(&c->seq, p + 1, memory_order_release);
                side_count(side_of(r, false));
                return 0;
            }
        } else if (dif < 0) {
            /* Full by this cell. Really full, or a consumer is mid-way? */
            if (!exact)
                return CONC_EFULL;
            size_t deq = atomic_load_explicit(&r->deq, memory_order_acquire) & ~CONC__RING_SHARED_BIT;
            if (p - deq >= r->cap || mid_way_wait(&spins))
                return CONC_EFULL;
            pos = atomic_load_explicit(&r->enq, memory_order_relaxed);
        } else {
            pos = atomic_load_explicit(&r->enq, memory_order_relaxed);
        }
    }
}

/* A side nobody owns yet, or owned by another thread, or being handed
 * over: claim it or share it. */
static __attribute__((noinline)) int claim_put(conc__ring_t *r, void *item, bool exact)
{
    uintptr_t me = thr_id();
    side_t s = side_of(r, false);
    unsigned b;
    if (side_take(s, me ? me : self_id(), me != 0, true) && side_enter(s.own, me, &b)) {
        if (side_mark(s)) {
            int rc = owner_put(r, item, exact);
            side_leave(me, b);
            return rc;
        }
        side_leave(me, b);
    }
    return shared_put(r, item, exact);
}

int conc__ring_put(conc__ring_t *r, void *item, bool exact)
{
    for (;;) {
        uintptr_t me = self_id();
        unsigned b;
        if (side_enter(&r->pown, me, &b)) {
            int rc = owner_put(r, item, exact);
            side_leave(me, b);
            return rc;
        }
        /* acquire: pairs with the revoker's SHARED store, so the former
         * owner's last ticket store is before our CAS (C11; x86 and ARMv8
         * order it anyway) */
        int rc = atomic_load_explicit(&r->pown, memory_order_acquire) == CONC__RING_OWN_SHARED
                     ? shared_put(r, item, exact)
                     : claim_put(r, item, exact);
        if (rc != RING_AGAIN)
            return rc;
    }
}

/* The CAS path (a shared side): 1 = got, 0 = empty, RING_AGAIN + 1 (a
 * thread claimed the side). */
#define GET_AGAIN (RING_AGAIN + 1)
static __attribute__((noinline)) int shared_get(conc__ring_t *r, void **item, bool exact)
{
    unsigned spins = 0;
    size_t pos = atomic_load_explicit(&r->deq, memory_order_relaxed);
    for (;;) {
        if (!(pos & CONC__RING_SHARED_BIT))
            return GET_AGAIN;
        size_t p = pos & ~CONC__RING_SHARED_BIT;
        conc__cell_t *c = cell_at(r, p);
        conc__prefetchw(c);
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)(p + 1);
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&r->deq, &pos, pos + 1, memory_order_seq_cst,
                                                      memory_order_relaxed)) {
                *item = c->item;
                atomic_store_explicit(&c->seq, p + r->cap, memory_order_release);
                side_count(side_of(r, true));
                return 1;
            }
        } else if (dif < 0) {
            /* Empty by this cell. Really empty, or a producer is mid-way? */
            if (!exact)
                return 0;
            size_t enq = atomic_load_explicit(&r->enq, memory_order_acquire) & ~CONC__RING_FLAGS;
            if (enq == p || mid_way_wait(&spins))
                return 0;
            pos = atomic_load_explicit(&r->deq, memory_order_relaxed);
        } else {
            pos = atomic_load_explicit(&r->deq, memory_order_relaxed);
        }
    }
}

/* A side nobody owns yet, or owned by another thread, or being handed
 * over: claim it or share it. */
static __attribute__((noinline)) int claim_get(conc__ring_t *r, void **item, bool exact)
{
    uintptr_t me = thr_id();
    side_t s = side_of(r, true);
    unsigned b;
    if (side_take(s, me ? me : self_id(), me != 0, true) && side_enter(s.own, me, &b)) {
        if (side_mark(s)) { /* (deq has no CLOSED bit: always) */
            bool ok = owner_get(r, item, exact);
            side_leave(me, b);
            return ok;
        }
        side_leave(me, b);
    }
    return shared_get(r, item, exact);
}

bool conc__ring_get(conc__ring_t *r, void **item, bool exact)
{
    for (;;) {
        uintptr_t me = self_id();
        unsigned b;
        if (side_enter(&r->cown, me, &b)) {
            bool ok = owner_get(r, item, exact);
            side_leave(me, b);
            return ok;
        }
        /* acquire: as for put */
        int rc = atomic_load_explicit(&r->cown, memory_order_acquire) == CONC__RING_OWN_SHARED
                     ? shared_get(r, item, exact)
                     : claim_get(r, item, exact);
        if (rc != GET_AGAIN)
            return rc;
    }
}

/* Queue.peek: the next item, left in place. A cell's item is read only
 * while its sequence says "full, not taken", then both counters are read
 * again: if a consumer took it meanwhile (and a producer of the next lap
 * may be rewriting it), the read is thrown away and retried — a seqlock. */
bool conc__ring_peek(conc__ring_t *r, void **item)
{
    for (;;) {
        size_t pos = atomic_load_explicit(&r->deq, memory_order_acquire) & ~CONC__RING_SHARED_BIT;
        conc__cell_t *c = &r->cells[r->mask ? (pos & r->mask) : (pos % r->cap)];
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        if (seq != pos + 1) {
            if ((intptr_t)(seq - (pos + 1)) < 0)
                return false; /* empty (or its item is still being written) */
            continue;         /* taken meanwhile: look again */
        }
        void *it = atomic_load_explicit((void *_Atomic *)&c->item, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&c->seq, memory_order_relaxed) == seq &&
            (atomic_load_explicit(&r->deq, memory_order_relaxed) & ~CONC__RING_SHARED_BIT) == pos) {
            *item = it;
            return true;
        }
    }
}
