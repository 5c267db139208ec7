/*
 * queue.c — multiprocessing.Queue / JoinableQueue / SimpleQueue over a
 * shared-memory ring (conc/ipc_queue.h).
 *
 * Segment: a memfd holding a header (queue_internal.h) and a ring of
 * `cap` bytes (a power of two). Positions are byte counts that only grow
 * (u64, never wrap in practice); pos & (cap-1) is the ring offset. A
 * message is an 8-byte header (u32 length) and its bytes, padded to 8, so
 * a header never straddles the end of the ring (the bytes may: they are
 * copied in two pieces).
 *
 * Two locks, like the two-lock queue of Michael and Scott: producers
 * serialize on put.lock, consumers on get.lock, so one producer and one
 * consumer never contend for a lock, and each lock's line stays in its
 * side's cache. Each side writes only its own published words:
 *     producers: tail (bytes) and puts (messages), puts stored first;
 *     consumers: head and gets.
 * Each side keeps a cached copy of the other side's position and count
 * and re-reads the real one only when the cache says "full" or "empty",
 * so in a stream the two sides touch each other's lines once per batch,
 * not once per message. Invariant: head <= tail <= head + cap.
 *
 * Publication and crash safety. A put writes the header and bytes past
 * tail (invisible), then commits with a release store of tail; a get
 * copies the message out, then commits with a release store of head.
 * Each commit updates two words (position and count), so it goes through
 * a one-entry redo journal in the side's lock line: write the new values,
 * set valid, store the words, clear valid (compiler-ordered; a killed
 * process's executed stores all reach memory). A process that takes over
 * the lock of a dead holder replays a valid journal (or finds the old,
 * consistent state when valid was never set) and wakes every sleeper. So
 * a put killed before its commit leaves nothing, after it leaves the whole
 * message; a get killed before its commit leaves the message in the queue.
 *
 * The side locks are our own, not glibc's robust mutexes (whose lock and
 * unlock were more than half the cost of a put+get): a 64-bit word, 0
 * when free, else the holder's thread id in the low half (the futex word)
 * and the low 31 bits of that thread's tag (its pidfs inode number, or
 * start time on old kernels: src/ipc/common.c; read once per thread)
 * above it; bit 63 marks a biased lock (below).
 * Lock is one CAS; unlock a release store, then a futex wake only if
 * lock_sleepers says someone sleeps (see the fences under Blocking). A
 * waiter spins, then sleeps on the word; when a sleep ends with
 * the same holder (first after 2 ms, then every CONC__IPC_CHECK_NS), it
 * asks whether that thread still runs: gone, exited, or a thread of
 * the same id with another tag (the id was reused) means the
 * holder died, and the waiter takes the word over with a CAS from that
 * exact value (one waiter wins) and repairs. All processes sharing a
 * queue must see one pid namespace (as for the process-shared locks).
 *
 * Biased locks (see mpq_lock). With one producer process and one
 * consumer process — the common case — each side's lock is only ever
 * wanted by one thread, so that thread keeps it between operations (bit
 * 63 of the word) and brackets each operation with stores of `busy`
 * instead of a CAS and an unlock. The first other thread that wants the
 * lock revokes the bias for good: it sets `revoked`, issues a global
 * expedited membarrier (so the holder either sees `revoked` when it next
 * starts an operation and lets go, or its busy = 1 is visible), waits for
 * busy == 0 and takes the word over with a CAS. A biased holder that dies
 * between operations needs no repair; one that dies inside (busy == 1)
 * is found dead by the same liveness check as a plain holder.
 *
 * Blocking. Waiters spin briefly (conc's adaptive spinner) on the word
 * they need to change, then yield the CPU for a while (an adaptive
 * per-thread budget, see mpq_yield_until: on a busy machine the other
 * side often waits for our CPU, and sleeping at once would cost a futex
 * wake and two context switches per message), then sleep on a futex word
 * `seq` in the segment after counting themselves in `sleepers`. A
 * committer fences and looks at `sleepers`; only if nonzero does it bump
 * `seq` and call futex_wake (a put wakes one consumer, a get wakes every waiting
 * producer — their messages differ in size — and the last task_done wakes
 * every joiner). No lost wakeup: the sleeper increments `sleepers`, reads
 * `seq`, re-checks its condition, and only then waits on `seq`; the
 * committer stores, fences, then reads `sleepers` (a Dekker pair). The
 * fences are asymmetric where the kernel allows: every process using a
 * queue registers for MEMBARRIER_CMD_GLOBAL_EXPEDITED, a sleeper issues
 * that membarrier between its increment and its re-check (once per
 * sleep), and a registered committer's fence is then only a compiler
 * barrier — its unlock is a plain release store, no locked instruction
 * (see mpq_unlock; the lock's own sleepers pair the same way). A woken
 * consumer that times out while a message is waiting passes its wakeup
 * on. Processes can die between being woken and acting, or after a commit
 * and before their wake call; sleeps are therefore capped at 250 ms and
 * re-checked, so such a loss costs at most that much latency, never a
 * hang. A process killed while asleep leaves `sleepers` one too high;
 * that only costs the other side a futex_wake call per operation.
 *
 * Every sleep is colorless (core/shwait.h): a green thread yields to its
 * siblings instead of the CPU and then parks (a waiter thread sleeps on
 * the word for it); a kill or a Timeout scope cuts any wait — for room,
 * for a message, for a side's lock — and the call returns the
 * interruption (mpq_cut) with nothing taken, unless the condition it
 * waited for had come true by then (the call goes on, the interruption is
 * delivered at the next blocking call).
 *
 * JoinableQueue: unfinished = puts - done. task_done increments done
 * with a CAS that refuses to pass puts (ValueError); one word, so it is
 * crash-safe without a lock.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/membarrier.h>

#include "conc/green.h"
#include "core/fence.h"
#include "core/futex.h"
#include "core/park.h"
#include "core/time.h"
#include "ipc/internal.h"
#include "ipc/queue_internal.h"

#include <signal.h>
#include <stdio.h>

#define SEQ memory_order_seq_cst

/* Tests only: a process that sets this dies by SIGKILL when its put/get
 * reaches step n (see FAULT below), to hit every point of a commit. */
int conc__mpq_fault_point;
#define FAULT(n)                                                              \
    do {                                                                      \
        if (__builtin_expect(conc__mpq_fault_point != 0, 0) && conc__mpq_fault_point == (n)) \
            raise(SIGKILL);                                                   \
    } while (0)
#define HDR ((uint64_t)CONC__MPQ_HDR)
#define SLEEP_CAP_NS 250000000LL
/* Tests only: the cap on one futex sleep of a queue wait (a test that
 * raises it turns a lost wakeup into a long stall it can see). */
int64_t conc__mpq_sleep_cap_ns = SLEEP_CAP_NS;
void (*conc__mpq_attach_hook)(conc__mpq_shm_t *s);

static inline uint64_t msg_size(uint64_t len) { return HDR + ((len + 7) & ~(uint64_t)7); }

/* ------------------------------------------------------------ waiting */

typedef struct {
    const uint64_t *a, *b; /* wait until *a != av or (b and *b != bv) */
    uint64_t av, bv;
} wait_cond_t;

static bool cond_changed(void *arg)
{
    const wait_cond_t *c = arg;
    return conc__load(c->a, ACQ) != c->av || (c->b && conc__load(c->b, ACQ) != c->bv);
}

/* The sleeper's half of the Dekker pairs (see mpq_unlock): after
 * counting ourselves in a sleepers word (a seq_cst RMW) and before
 * re-reading the condition. When membarrier cannot be issued, no
 * committer may rely on it: the caller then caps its sleep at 1 ms
 * (returns false), which bounds the cost of a missed wakeup. */
static bool mpq_sleep_fence(void)
{
#if defined(CONC__TSAN) || !defined(SYS_membarrier)
    return true; /* every committer fences */
#else
    static int broken;
    if (__atomic_load_n(&broken, __ATOMIC_RELAXED))
        return false;
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0)
        return true;
    __atomic_store_n(&broken, 1, __ATOMIC_RELAXED);
    return false;
#endif
}
#define BLIND_SLEEP_NS 1000000LL

/* mpq_sleep_fence for a green thread. The membarrier is needed between
 * the sleeper's count and its re-read, but one serves every sleeper of
 * this OS thread that counted itself before it: the green thread first
 * lets its siblings run (those going to sleep too count themselves), and
 * issues the membarrier only if none of them did meanwhile. A hundred
 * green consumers that find a queue empty then cost one membarrier, not
 * a hundred. Returns 1 (fenced), 0 (cannot fence: cap the sleep), or an
 * interruption from the yield (nothing was taken). */
static __thread unsigned mpq_fence_gen;
static int mpq_green_sleep_fence(void)
{
    unsigned g = mpq_fence_gen;
    int r = conc_yield();
    if (r)
        return r;
    if (mpq_fence_gen != g)
        return 1; /* a sibling fenced after our count: it covers us */
    if (!mpq_sleep_fence())
        return 0;
    mpq_fence_gen = g + 1;
    return 1;
}

/* Set by a wait that a kill or a Timeout scope cut short, just before it
 * returns the interruption; read (and cleared) on the error paths only, so
 * the op reports the interruption itself, not Full/Empty. */
static __thread bool mpq_cut;

/* Between the spin and the sleep: give the CPU away (sched_yield) for up
 * to a per-thread budget, re-checking after each yield. When the other
 * side is runnable on our CPU (an oversubscribed machine), this lets it
 * fill or drain a batch instead of our sleeping at once and its waking us
 * with a system call per message; when it is not, a yield returns at once
 * and this is a slower spin. The budget doubles when yielding paid off
 * and halves (to a floor) when the wait ended in a sleep anyway. True
 * when the condition changed. */
#define YIELD_MAX_NS 200000u
#define YIELD_MIN_NS 10000u
static __thread uint32_t mpq_yield_ns = YIELD_MAX_NS;

static bool mpq_yield_until(const wait_cond_t *c, int64_t deadline)
{
    uint32_t budget = mpq_yield_ns;
    int64_t end = conc__now_ns() + budget;
    if (end > deadline)
        end = deadline;
    for (unsigned i = 1;; i++) {
        sched_yield();
        if (cond_changed((void *)c)) {
            mpq_yield_ns = budget >= YIELD_MAX_NS / 2 ? YIELD_MAX_NS : budget * 2;
            return true;
        }
        if ((i & 3) == 0 && conc__now_ns() >= end)
            break;
    }
    mpq_yield_ns = budget / 2 < YIELD_MIN_NS ? YIELD_MIN_NS : budget / 2;
    return false;
}

/* rc, an op's failure: the interruption as is, else a timeout as alt. */
static int mpq_cut_code(int rc, int alt)
{
    if (mpq_cut) {
        mpq_cut = false;
        return rc;
    }
    return rc == CONC_ETIMEDOUT ? alt : rc;
}

/* mpq_yield_until for a green thread: conc_yield lets its siblings run
 * (a sibling may be the one that changes the condition, and sleeping
 * costs each green sleeper a membarrier and a hand-off to the waiter
 * thread). Same budget. 1 changed, 0 not, or an interruption (mpq_cut
 * set; nothing was consumed, so the caller just reports it). */
static int mpq_green_yield_until(const wait_cond_t *c, int64_t deadline)
{
    uint32_t budget = mpq_yield_ns;
    int64_t end = conc__now_ns() + budget;
    if (end > deadline)
        end = deadline;
    for (unsigned i = 1;; i++) {
        int r = conc_yield();
        if (r) {
            mpq_cut = true;
            return r;
        }
        if (cond_changed((void *)c)) {
            mpq_yield_ns = budget >= YIELD_MAX_NS / 2 ? YIELD_MAX_NS : budget * 2;
            return 1;
        }
        if ((i & 3) == 0 && conc__now_ns() >= end)
            break;
    }
    mpq_yield_ns = budget / 2 < YIELD_MIN_NS ? YIELD_MIN_NS : budget / 2;
    return 0;
}

/* Wait for the condition; 0 when it changed, CONC_ETIMEDOUT, or an
 * interruption (kill, Timeout scope; mpq_cut set). A green thread never
 * blocks its OS thread: it yields to its siblings, then parks
 * (core/shwait.h). */
static int mpq_wait(conc__mpq_wait_t *w, wait_cond_t *c, int64_t deadline)
{
    if (cond_changed(c) || conc__spin_until(cond_changed, c, deadline))
        return 0;
    bool green = conc__ctx()->ops != NULL;
    if (!green) {
        if (mpq_yield_until(c, deadline))
            return 0;
    } else {
        int r = mpq_green_yield_until(c, deadline);
        if (r)
            return r > 0 ? 0 : r;
    }
    for (;;) {
        int64_t now = conc__now_ns();
        if (now >= deadline)
            return cond_changed(c) ? 0 : CONC_ETIMEDOUT;
        atomic_fetch_add_explicit(CONC__A(&w->sleepers), 1u, SEQ);
        int f = green ? mpq_green_sleep_fence() : mpq_sleep_fence();
        if (f < 0) { /* interrupted while it let its siblings count themselves */
            atomic_fetch_sub_explicit(CONC__A(&w->sleepers), 1u, SEQ);
            mpq_cut = true;
            return f;
        }
        int64_t cap = f ? conc__mpq_sleep_cap_ns : BLIND_SLEEP_NS;
        uint32_t seq = conc__load(&w->seq, SEQ);
        if (cond_changed(c)) {
            atomic_fetch_sub_explicit(CONC__A(&w->sleepers), 1u, SEQ);
            return 0;
        }
        int64_t until = deadline - now > cap ? now + cap : deadline;
        int r = conc__shared_wait(&w->seq, seq, until);
        atomic_fetch_sub_explicit(CONC__A(&w->sleepers), 1u, SEQ);
        bool intr = conc__is_cut(r);
        if (cond_changed(c)) {
            if (intr) { /* satisfied as it was cut: the caller goes on */
                conc__cut_t cut = conc__cut_save(r);
                conc__cut_rearm(&cut);
            }
            return 0;
        }
        if (intr) {
            mpq_cut = true;
            return r;
        }
    }
}

static void mpq_wake(conc__mpq_wait_t *w, int n)
{
    atomic_fetch_add_explicit(CONC__A(&w->seq), 1u, SEQ);
    conc__futex_wake(&w->seq, n, 1);
}

/* After a commit made without a lock: wake n sleepers of w if any. */
static inline void mpq_notify(conc__mpq_wait_t *w, int n)
{
    conc__fence_full();
    if (__builtin_expect(conc__load(&w->sleepers, RLX) != 0, 0))
        mpq_wake(w, n);
}

/* ------------------------------------------------------------ locking */

static inline uint64_t *ring_word(const conc_mpqueue_t *q, uint64_t pos)
{
    return (uint64_t *)(void *)(q->ring + (pos & q->mask));
}

/* A shared field broke an invariant: the queue is broken for this handle
 * from now on (every call returns CONC_EBROKEN). */
static int mpq_break(conc_mpqueue_t *q)
{
    atomic_store_explicit(&q->broken, 1, RLX);
    return CONC_EBROKEN;
}

/* Positions a peer may have written: a tail t and a head h (a cached copy
 * or the real one) must be multiples of 8 with h <= t <= h + cap - HDR. */
static inline bool mpq_span_ok(const conc_mpqueue_t *q, uint64_t h, uint64_t t)
{
    return ((h | t) & 7) == 0 && h <= t && t - h <= q->cap - HDR;
}

/* Finish or undo the operation a dead lock holder left in sd's journal.
 * A put took effect iff its header was stored; a get iff head moved. The
 * journal is shared memory: read once, checked (aligned, a size that fits
 * the ring); false when it is bad (the caller breaks the queue). */
static bool mpq_repair(conc_mpqueue_t *q, bool put_side)
{
    conc__mpq_shm_t *s = q->shm;
    conc__mpq_side_t *sd = put_side ? &s->put : &s->get;
    bool ok = true;
    if (conc__load(&sd->j.valid, ACQ)) {
        uint64_t pos = conc__load(&sd->j.pos, RLX), size = conc__load(&sd->j.size, RLX);
        uint64_t count = conc__load(&sd->j.count, RLX);
        if (((pos | size) & 7) != 0 || size < HDR || size > q->cap - HDR) {
            ok = false;
        } else if (put_side) {
            bool done = conc__load(ring_word(q, pos), ACQ) != 0;
            conc__store(&s->puts, count + done, REL);
            conc__store(&s->tail, done ? pos + size : pos, REL);
        } else {
            bool done = conc__load(&s->head, ACQ) != pos;
            conc__store(&s->gets, count + done, REL);
        }
        if (ok)
            conc__store(&sd->j.valid, 0u, REL);
    }
    atomic_fetch_add_explicit(CONC__A(&s->recoveries), 1u, RLX);
    mpq_wake(&s->nonempty, INT_MAX);
    mpq_wake(&s->nonfull, INT_MAX);
    mpq_wake(&s->alldone, INT_MAX);
    return ok;
}

/* After a takeover: repair, or (a bad journal) let the lock go and break. */
static int mpq_took_over(conc_mpqueue_t *q, bool put_side)
{
    if (mpq_repair(q, put_side))
        return 0;
    conc__mpq_side_t *sd = put_side ? &q->shm->put : &q->shm->get;
    conc__store(&sd->lock, (uint64_t)0, REL);
    return mpq_break(q);
}

/* Lock word: holder's thread id | low 31 bits of its start time << 32 |
 * LOCK_BIAS (the holder keeps the lock between its operations). */
#define LOCK_BIAS ((uint64_t)1 << 63)
#define LOCK_START_MASK 0x7fffffffull

/* A call's deadline, computed on first need: a call that neither waits
 * nor meets a held lock never reads the clock. */
#define DL_LAZY INT64_MIN
typedef struct {
    int64_t dl;     /* DL_LAZY until computed; 0: do not wait */
    double timeout; /* validated: not NaN; negative gives dl = 0 */
} mpq_dl_t;

static int64_t dl_get(mpq_dl_t *d)
{
    if (d->dl == DL_LAZY)
        (void)conc__deadline(d->timeout, &d->dl);
    return d->dl;
}

/* block/timeout as the API takes them. Returns 0 or CONC_EINVAL. */
static inline int dl_init(mpq_dl_t *d, bool block, double timeout)
{
    d->timeout = timeout;
    if (!block)
        d->dl = 0;
    else if (timeout == CONC_FOREVER)
        d->dl = CONC__NO_DEADLINE;
    else if (isnan(timeout))
        return CONC_EINVAL;
    else if (timeout < 0) /* multiprocessing's SemLock: negative is 0 */
        d->dl = 0;
    else
        d->dl = DL_LAZY;
    return 0;
}

/* The caller's lock word (without LOCK_BIAS). Cached per thread; a fork
 * child has a new thread id and recomputes. */
static __thread uint64_t mpq_me_word;
/* Bumped in every fork child (pthread_atfork), so a thread's cached word
 * is recomputed there (the child's thread id differs). */
static _Atomic unsigned mpq_fork_gen = 1;
static __thread unsigned mpq_me_gen;
static pthread_once_t mpq_atfork_once = PTHREAD_ONCE_INIT;
static void mpq_atfork_child(void) { atomic_fetch_add_explicit(&mpq_fork_gen, 1u, RLX); }
static void mpq_atfork_register(void) { (void)pthread_atfork(NULL, NULL, mpq_atfork_child); }
/* This process is registered for MEMBARRIER_CMD_GLOBAL_EXPEDITED: its
 * unlocks may skip the full barrier (see mpq_unlock). Copied per thread
 * with the word. */
static __thread bool mpq_me_light;

/* Register the process once (per pid: a fork child registers again) —
 * when a queue is made or attached, or in a fork child's first call.
 * (Registering a process with several threads may wait for an RCU grace
 * period, so it is not left to each thread's first call.) */
#if defined(CONC__TSAN) || !defined(SYS_membarrier)
static bool mpq_mb_register(void)
{
    return false; /* TSan does not model membarrier: keep the fences */
}
#else
static _Atomic pid_t mpq_mb_pid;
static atomic_bool mpq_mb_ok;

static bool mpq_mb_register(void)
{
    pid_t me = conc__ipc_pid();
    if (atomic_load_explicit(&mpq_mb_pid, ACQ) == me)
        return atomic_load_explicit(&mpq_mb_ok, RLX);
    long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    bool ok = cmds > 0 && (cmds & MEMBARRIER_CMD_GLOBAL_EXPEDITED) &&
              syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0;
    atomic_store_explicit(&mpq_mb_ok, ok, RLX);
    atomic_store_explicit(&mpq_mb_pid, me, REL);
    return ok;
}
#endif

static uint64_t mpq_me_slow(void)
{
    pthread_once(&mpq_atfork_once, mpq_atfork_register);
    unsigned gen = atomic_load_explicit(&mpq_fork_gen, RLX);
    pid_t tid = conc__ipc_tid();
    uint64_t tag = conc__ipc_my_tag(true);
    mpq_me_light = mpq_mb_register();
    mpq_me_word = (uint64_t)(uint32_t)tid | (tag & LOCK_START_MASK) << 32;
    mpq_me_gen = gen;
    return mpq_me_word;
}

static inline uint64_t mpq_me(void)
{
    if (__builtin_expect(mpq_me_gen == atomic_load_explicit(&mpq_fork_gen, RLX), 1))
        return mpq_me_word;
    return mpq_me_slow();
}

/* The futex word of a lock: its low 32 bits (the holder's thread id). */
static inline uint32_t *lock_futex(uint64_t *lock)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (uint32_t *)(void *)lock + 1;
#else
    return (uint32_t *)(void *)lock;
#endif
}

/* Does the thread recorded in lock word w still run? Its thread id must
 * exist, not have exited, and — when the tag is known — still name the
 * same thread (pidfs inode or start time, common.c; the low 31 bits are
 * compared), so a thread id reused after the holder died is not mistaken
 * for it. */
static bool holder_alive(uint64_t w)
{
    return conc__ipc_holder_alive((pid_t)(uint32_t)w, (uint32_t)((w >> 32) & LOCK_START_MASK),
                                  (uint32_t)LOCK_START_MASK, true);
}

typedef struct {
    conc__mpq_side_t *sd;
    uint64_t w;
} lock_watch_t;

/* The lock is free, or no longer the word we saw. */
static bool lock_moved(void *arg)
{
    lock_watch_t *t = arg;
    return conc__load(&t->sd->lock, RLX) != t->w;
}

/* A revoker waits for the biased holder to leave its operation. */
static bool bias_idle(void *arg)
{
    lock_watch_t *t = arg;
    return conc__load(&t->sd->busy, ACQ) == 0 || conc__load(&t->sd->lock, RLX) != t->w;
}

/* First sleep on a held lock before asking whether its holder lives, then
 * the period of later checks. A holder's critical section is a copy, so a
 * lock held this long usually means a preempted or dead holder. */
#define LOCK_FIRST_CHECK_NS 2000000LL
#define BIAS_POLL_NS 100000LL
/* How long a non-blocking call waits for a side lock held by another. */
#define NOWAIT_LOCK_NS 100000000LL

/* Biased holder: enter an operation. busy = 1, then look at revoked; a
 * revoker stores revoked, issues a global membarrier, then looks at busy,
 * so either we see revoked or it sees busy (asymmetric Dekker; only a
 * compiler barrier here). Revoked: give the bias up and return false. */
static inline bool bias_enter(conc__mpq_side_t *sd, uint64_t mine)
{
    conc__store(&sd->busy, 1u, RLX);
    atomic_signal_fence(SEQ);
    if (__builtin_expect(conc__load(&sd->revoked, ACQ) == 0, 1))
        return true;
    conc__store(&sd->busy, 0u, REL);
    uint64_t w = mine;
    (void)atomic_compare_exchange_strong_explicit(CONC__A(&sd->lock), &w, (uint64_t)0, REL, RLX);
    return false;
}

/* Take a biased lock w from its holder (another thread): revoke the bias
 * for good, wait until the holder is outside any operation (or dead),
 * then take the word over with a CAS from w. Returns 0 (locked, plain),
 * 1 (w moved: try again), CONC_ETIMEDOUT. If the membarrier cannot be
 * issued (only where it is filtered for this process alone), busy proves
 * nothing: wait for the holder to let go at its next operation, or die. */
static int bias_revoke(conc_mpqueue_t *q, bool put_side, uint64_t me, uint64_t w, int64_t deadline)
{
    conc__mpq_side_t *sd = put_side ? &q->shm->put : &q->shm->get;
    if (conc__load(&sd->revoked, RLX) == 0)
        conc__store(&sd->revoked, 1u, SEQ);
    bool forced = mpq_sleep_fence();
    lock_watch_t t = {sd, w};
    if (forced && !bias_idle(&t))
        conc__spin_until(bias_idle, &t, deadline);
    int64_t period = LOCK_FIRST_CHECK_NS, next_check = 0;
    for (;;) {
        if (lock_moved(&t))
            return 1;
        if (forced && conc__load(&sd->busy, ACQ) == 0)
            break;
        int64_t now = conc__now_ns();
        if (next_check == 0)
            next_check = now + period;
        if (now >= next_check) {
            period = CONC__IPC_CHECK_NS;
            next_check = now + period;
            if (!holder_alive(w)) {
                /* It died (inside an operation, if busy): take over and
                 * repair. */
                if (!atomic_compare_exchange_strong_explicit(CONC__A(&sd->lock), &w, me, ACQ, RLX))
                    return 1;
                conc__store(&sd->busy, 0u, RLX);
                return mpq_took_over(q, put_side);
            }
        }
        if (now >= deadline)
            return CONC_ETIMEDOUT;
        int64_t until = now + BIAS_POLL_NS < deadline ? now + BIAS_POLL_NS : deadline;
        /* a timed nap (nobody wakes it; a change of busy ends it early) */
        int r = conc__shared_wait(&sd->busy, conc__load(&sd->busy, RLX), until);
        if (conc__is_cut(r)) {
            mpq_cut = true;
            return r;
        }
    }
    if (!atomic_compare_exchange_strong_explicit(CONC__A(&sd->lock), &w, me, ACQ, RLX))
        return 1;
    /* The holder was outside its operations (maybe gone for good: a
     * process may exit holding a bias); its journal is clear. */
    return 0;
}

static int mpq_lock_slow(conc_mpqueue_t *q, bool put_side, uint64_t me, int64_t deadline,
                         bool *biased)
{
    conc__mpq_side_t *sd = put_side ? &q->shm->put : &q->shm->get;
    /* A non-blocking call waits for a held lock a little (it is held
     * across a copy; a dead holder is found after LOCK_FIRST_CHECK_NS),
     * never for ever: a holder that lives and keeps it (stopped, or a
     * forged word) makes it report full/empty, as Python's does at once. */
    if (deadline == 0)
        deadline = conc__now_ns() + NOWAIT_LOCK_NS;
    int64_t period = LOCK_FIRST_CHECK_NS;
    bool spun = false;
    *biased = false;
    for (;;) {
        uint64_t w = conc__load(&sd->lock, ACQ);
        if (w == (me | LOCK_BIAS)) {
            if (bias_enter(sd, w)) {
                *biased = true;
                return 0;
            }
            continue;
        }
        if (w == 0) {
            uint64_t want = me;
            if (mpq_me_light && conc__load(&sd->revoked, RLX) == 0)
                want |= LOCK_BIAS; /* nobody else ever wanted this side: keep it */
            if (atomic_compare_exchange_strong_explicit(CONC__A(&sd->lock), &w, want, ACQ, RLX) &&
                !(want & LOCK_BIAS))
                return 0;
            continue; /* lost the race, or took the bias: enter it above */
        }
        if (w == me) {
            /* Our own id, but this thread holds no plain lock between
             * calls: a stale or forged word (it would wait for itself for
             * ever). Take it as a dead holder's. */
            if (atomic_compare_exchange_strong_explicit(CONC__A(&sd->lock), &w, me, ACQ, RLX))
                return mpq_took_over(q, put_side);
            continue;
        }
        if (w & LOCK_BIAS) {
            int r = bias_revoke(q, put_side, me, w, deadline);
            if (r <= 0)
                return r;
            continue;
        }
        if (!spun) {
            spun = true;
            lock_watch_t t = {sd, w};
            conc__spin_until(lock_moved, &t, deadline);
            continue;
        }
        int64_t now = conc__now_ns();
        if (now >= deadline)
            return CONC_ETIMEDOUT;
        atomic_fetch_add_explicit(CONC__A(&sd->lock_sleepers), 1u, SEQ);
        int64_t cap = mpq_sleep_fence() ? period : BLIND_SLEEP_NS;
        int64_t until = deadline - now > cap ? now + cap : deadline;
        int r = conc__shared_wait(lock_futex(&sd->lock), (uint32_t)w, until);
        atomic_fetch_sub_explicit(CONC__A(&sd->lock_sleepers), 1u, RLX);
        if (conc__is_cut(r)) {
            /* Cut short: leave without the lock; a wakeup it may have
             * taken goes to the next sleeper. */
            if (conc__load(&sd->lock, ACQ) != w && conc__load(&sd->lock_sleepers, SEQ) != 0)
                conc__futex_wake(lock_futex(&sd->lock), 1, 1);
            mpq_cut = true;
            return r;
        }
        if (r != CONC_ETIMEDOUT || conc__load(&sd->lock, ACQ) != w)
            continue;
        period = CONC__IPC_CHECK_NS;
        if (holder_alive(w))
            continue;
        /* The holder died with the lock: take it over from that exact
         * word (so one waiter wins), then finish or undo its operation. */
        if (atomic_compare_exchange_strong_explicit(CONC__A(&sd->lock), &w, me, ACQ, RLX))
            return mpq_took_over(q, put_side);
    }
}

/* Lock one side; deadline as for waits (0: wait for the lock up to
 * NOWAIT_LOCK_NS, it is held only across a copy). Returns 0,
 * CONC_ETIMEDOUT, an interruption (mpq_cut set) or CONC_EBROKEN (took
 * over a dead holder's lock and its journal was bad: unlocked); *biased
 * says how to unlock.
 *
 * Biased locking: a thread that takes a side's lock while nobody else
 * ever wanted it (revoked is 0, and its process is registered for global
 * membarrier) sets LOCK_BIAS in the word and keeps the lock between its
 * operations; it enters one with busy = 1 and a look at revoked, and
 * leaves it with busy = 0 — no locked instruction at all. Any other
 * thread that wants the lock revokes the bias for good (revoked = 1, a
 * membarrier), waits for busy == 0, and takes the word over with a CAS
 * from the biased value; from then on the side is locked with a CAS per
 * operation. A biased holder that dies outside an operation (busy == 0,
 * journal clear) is simply taken over; one that dies inside (busy == 1)
 * is found dead by the liveness check and repaired as usual. */
static inline int mpq_lock(conc_mpqueue_t *q, bool put_side, mpq_dl_t *dl, bool *biased)
{
    conc__mpq_side_t *sd = put_side ? &q->shm->put : &q->shm->get;
    uint64_t me = mpq_me(), exp = 0;
    if (__builtin_expect(conc__load(&sd->lock, RLX) == (me | LOCK_BIAS), 1) && bias_enter(sd, me | LOCK_BIAS)) {
        *biased = true;
        return 0;
    }
    if (!mpq_me_light || conc__load(&sd->revoked, RLX) != 0) {
        if (atomic_compare_exchange_strong_explicit(CONC__A(&sd->lock), &exp, me, ACQ, RLX)) {
            *biased = false;
            return 0;
        }
    }
    return mpq_lock_slow(q, put_side, me, dl_get(dl), biased);
}

/* Unlock and look for sleepers: first on the lock, then (the caller) on
 * the side's wait word. A plain holder unlocks with a release store; a
 * biased one keeps the lock and stores busy = 0. Each look is the second
 * half of a Dekker pair (we store, then read the sleeper count; a sleeper
 * counts itself, then reads our word), which needs a full barrier between
 * our store and our load — or, when this process is registered for
 * global expedited membarrier, none here: every sleeper calls
 * mpq_sleep_fence() between counting itself and re-reading, which makes
 * each running registered thread execute a full barrier (a thread not
 * running has passed one in the context switch). A sleeper does that once
 * per sleep; the committer saves a locked instruction per operation. */
static inline void mpq_unlock(conc__mpq_shm_t *s, bool put_side, bool biased)
{
    conc__mpq_side_t *sd = put_side ? &s->put : &s->get;
    if (biased)
        conc__store(&sd->busy, 0u, REL);
    else
        conc__store(&sd->lock, (uint64_t)0, REL);
    if (__builtin_expect(mpq_me_light, 1))
        atomic_signal_fence(SEQ);
    else
        conc__fence_full();
    if (__builtin_expect(!biased && conc__load(&sd->lock_sleepers, RLX) != 0, 0))
        conc__futex_wake(lock_futex(&sd->lock), 1, 1);
}

/* After a commit and unlock: wake n sleepers of w if there are any. */
static inline void mpq_notify_unlocked(conc__mpq_wait_t *w, int n)
{
    if (__builtin_expect(conc__load(&w->sleepers, RLX) != 0, 0))
        mpq_wake(w, n);
}

/* --------------------------------------------------------- lifecycle */

/* The header fields come as checked copies: the handle never re-reads
 * them from the segment. */
static int mpq_handle(conc_mpqueue_t **out, int fd, conc__mpq_shm_t *s, size_t map_size,
                      size_t data_off, uint64_t cap, int kind, uint64_t maxsize)
{
    conc_mpqueue_t *q = calloc(1, sizeof *q);
    if (!q)
        return CONC_ENOMEM;
    (void)mpq_mb_register();
    q->shm = s;
    q->ring = (unsigned char *)s + data_off;
    q->map_size = map_size;
    q->fd = fd;
    q->kind = kind;
    q->cap = cap;
    q->mask = cap - 1;
    q->maxsize = maxsize;
    atomic_init(&q->users, 0);
    atomic_init(&q->closed, 0);
    atomic_init(&q->broken, 0);
    *out = q;
    return 0;
}

static size_t mpq_data_off(void)
{
    long pg = sysconf(_SC_PAGESIZE);
    size_t p = pg > 0 ? (size_t)pg : 4096;
    return (sizeof(conc__mpq_shm_t) + p - 1) / p * p;
}

/* Open for calls: mapped and not closed (close keeps the mapping for calls
 * still running in other threads; free releases it). */
static inline bool mpq_open(const conc_mpqueue_t *q)
{
    return q->shm && !atomic_load_explicit(&((conc_mpqueue_t *)q)->closed, memory_order_relaxed);
}

static inline bool mpq_is_broken(const conc_mpqueue_t *q)
{
    return atomic_load_explicit(&((conc_mpqueue_t *)q)->broken, memory_order_relaxed) != 0;
}

int conc_mpqueue_new(conc_mpqueue_t **out, conc_mpqueue_kind_t kind, long maxsize, size_t capacity)
{
    if (!out)
        return CONC_EINVAL;
    *out = NULL;
    if (kind != CONC_MPQ_QUEUE && kind != CONC_MPQ_JOINABLE && kind != CONC_MPQ_SIMPLE)
        return CONC_EINVAL;
    if (capacity > CONC_MPQ_MAX_CAPACITY)
        return CONC_EINVAL;
    if (capacity == 0)
        capacity = CONC_MPQ_DEFAULT_CAPACITY;
    size_t cap = 64;
    while (cap < capacity)
        cap <<= 1;
    size_t off = mpq_data_off(), size = off + cap;

    int fd = memfd_create("conc-mpqueue", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return errno == ENOMEM ? CONC_ENOMEM : CONC_ESYS;
    if (ftruncate(fd, (off_t)size) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return CONC_ESYS;
    }
    /* Nobody may resize it under the mappings (that would be SIGBUS);
     * attach refuses a segment without the seal. */
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return CONC_ESYS;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        close(fd);
        errno = e;
        return e == ENOMEM ? CONC_ENOMEM : CONC_ESYS;
    }
    conc__mpq_shm_t *s = p;
    s->version = CONC__MPQ_VERSION;
    s->kind = (uint32_t)kind;
    s->cap = cap;
    s->maxsize = (kind != CONC_MPQ_SIMPLE && maxsize > 0) ? (uint64_t)maxsize : 0;
    s->map_size = size;
    s->data_off = off;
    int rc = mpq_handle(out, fd, s, size, off, cap, (int)kind, s->maxsize);
    if (rc != 0) {
        munmap(p, size);
        close(fd);
        return rc;
    }
    conc__store(&s->magic, CONC__MPQ_MAGIC, REL);
    return 0;
}

int conc_mpqueue_attach(conc_mpqueue_t **out, int fd)
{
    if (!out)
        return CONC_EINVAL;
    *out = NULL;
    if (fd < 0)
        return CONC_EINVAL;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return errno == EBADF ? CONC_EINVAL : CONC_ESYS;
    size_t off = mpq_data_off();
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < off + 64)
        return CONC_EINVAL;
    /* A segment its maker could shrink under our mapping would make any
     * access SIGBUS: only a memfd sealed against shrinking is a queue
     * (the seal is final: sealing is sealed too). The size is read after
     * the seals are. */
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK) || fstat(fd, &st) != 0 || (uint64_t)st.st_size < off + 64)
        return CONC_EINVAL;
    size_t size = (size_t)st.st_size;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return errno == ENOMEM ? CONC_ENOMEM : CONC_EINVAL;
    /* The header is shared memory that a peer may change at any moment
     * (even during this call): read each field once, check the copies,
     * use only them. */
    conc__mpq_shm_t *s = p;
    uint64_t magic = conc__load(&s->magic, ACQ);
    uint32_t version = conc__load(&s->version, RLX), kind = conc__load(&s->kind, RLX);
    uint64_t cap = conc__load(&s->cap, RLX), maxsize = conc__load(&s->maxsize, RLX);
    uint64_t msize = conc__load(&s->map_size, RLX), doff = conc__load(&s->data_off, RLX);
    if (magic != CONC__MPQ_MAGIC || version != CONC__MPQ_VERSION || msize != size || doff != off ||
        cap < 64 || (cap & (cap - 1)) != 0 || off + cap != size || kind > CONC_MPQ_SIMPLE ||
        (kind == CONC_MPQ_SIMPLE && maxsize != 0) || maxsize > (uint64_t)LONG_MAX) {
        munmap(p, size);
        return CONC_EINVAL;
    }
    if (conc__mpq_attach_hook)
        conc__mpq_attach_hook(s);
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (nfd < 0) {
        munmap(p, size);
        return CONC_ESYS;
    }
    int rc = mpq_handle(out, nfd, s, size, off, cap, (int)kind, maxsize);
    if (rc != 0) {
        munmap(p, size);
        close(nfd);
    }
    return rc;
}

int conc_mpqueue_name(const conc_mpqueue_t *q, char *buf, size_t cap)
{
    if (!q || !mpq_open(q) || !buf)
        return CONC_EINVAL;
    int n = snprintf(buf, cap, "conc-mpq:%ld:%d", (long)getpid(), q->fd);
    return n > 0 && (size_t)n < cap ? 0 : CONC_EINVAL;
}

int conc_mpqueue_attach_name(conc_mpqueue_t **out, const char *name)
{
    if (!out)
        return CONC_EINVAL;
    *out = NULL;
    long pid;
    int fd, used = 0;
    if (!name || sscanf(name, "conc-mpq:%ld:%d%n", &pid, &fd, &used) != 2 || name[used] != 0 ||
        pid <= 0 || fd < 0)
        return CONC_EINVAL;
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd/%d", pid, fd);
    int f = open(path, O_RDWR | O_CLOEXEC);
    if (f < 0)
        return errno == ENOENT || errno == ESRCH ? CONC_EINVAL : CONC_ESYS;
    int rc = conc_mpqueue_attach(out, f);
    close(f);
    return rc;
}

int conc_mpqueue_fd(const conc_mpqueue_t *q)
{
    if (!q || !mpq_open(q))
        return CONC_EINVAL;
    return q->fd;
}

int conc_mpqueue_close(conc_mpqueue_t *q)
{
    if (!q || !q->shm)
        return CONC_EINVAL;
    int expect = 0;
    if (!atomic_compare_exchange_strong(&q->closed, &expect, 1))
        return CONC_EINVAL;
    if (atomic_load(&q->users) != 0) {
        atomic_store(&q->closed, 0);
        return CONC_EPERM;
    }
    /* Give up a bias this thread holds, so the next user need not revoke
     * it (a bias held by another thread or a process that exits is
     * revoked when someone wants the lock). */
    uint64_t mine = mpq_me() | LOCK_BIAS;
    for (int side = 0; side < 2; side++) {
        uint64_t w = mine;
        atomic_compare_exchange_strong_explicit(CONC__A(side ? &q->shm->get.lock : &q->shm->put.lock),
                                                &w, (uint64_t)0, REL, RLX);
    }
    /* The mapping and the fd stay until conc_mpqueue_free: a call of
     * another thread that does not wait (and so is not counted in users)
     * may still be running on them. */
    return 0;
}

int conc_mpqueue_free(conc_mpqueue_t *q)
{
    if (!q)
        return 0;
    if (q->shm) {
        if (!atomic_load(&q->closed)) {
            int rc = conc_mpqueue_close(q);
            if (rc != 0)
                return rc;
        }
        munmap(q->shm, q->map_size);
        close(q->fd);
        q->shm = NULL;
        q->ring = NULL;
        q->fd = -1;
    }
    free(q);
    return 0;
}

/* A call that is about to wait registers itself so close() refuses to
 * unmap under it. Returns false when q is being closed. */
static bool mpq_enter_wait(conc_mpqueue_t *q, bool *counted)
{
    if (*counted)
        return true;
    atomic_fetch_add(&q->users, 1);
    if (atomic_load(&q->closed)) {
        atomic_fetch_sub(&q->users, 1);
        return false;
    }
    *counted = true;
    return true;
}

static inline int mpq_leave(conc_mpqueue_t *q, bool counted, int rc)
{
    if (counted)
        atomic_fetch_sub(&q->users, 1);
    return rc;
}

/* --------------------------------------------------------- put / get */

/* ThreadSanitizer sees one process. A queue is shared with other
 * processes, and the happens-before that frees ring space can run through
 * them: a consumer thread here reads a message and releases head; a
 * producer in another process acquires head and caches it in
 * put.peer_pos, then releases the put lock; a producer thread here takes
 * the lock and trusts peer_pos — so it writes where our consumer read,
 * ordered by a chain TSan never saw (it reported ring_read's memcpy
 * against the put's stores; mppool's result queue does this, its workers
 * put from child processes). Likewise a consumer here can read bytes a
 * producer here wrote for a message that a consumer elsewhere took.
 * Under TSan only, each commit also releases, and the other side
 * acquires, a TSan-only sync object on the word it commits (head for a
 * get, tail for a put). Every release follows the copy it covers, so a
 * put writing into bytes a get has not finished reading (or a get reading
 * bytes a put has not committed) is still reported. Other builds: no
 * code at all. */
#ifdef CONC__TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define TSAN_ACQUIRE(p) __tsan_acquire((void *)(p))
#define TSAN_RELEASE(p) __tsan_release((void *)(p))
#else
#define TSAN_ACQUIRE(p) ((void)0)
#define TSAN_RELEASE(p) ((void)0)
#endif

#define PREFETCH_AHEAD 512 /* bytes past tail the producer prefetches */

/* Copy n <= 64 bytes inline (two overlapping fixed-size moves), without
 * a call into libc: small messages are the common case. */
static inline void copy_small(unsigned char *d, const unsigned char *s, size_t n)
{
    if (n >= 32) {
        memcpy(d, s, 32);
        memcpy(d + n - 32, s + n - 32, 32);
    } else if (n >= 16) {
        memcpy(d, s, 16);
        memcpy(d + n - 16, s + n - 16, 16);
    } else if (n >= 8) {
        memcpy(d, s, 8);
        memcpy(d + n - 8, s + n - 8, 8);
    } else if (n >= 4) {
        memcpy(d, s, 4);
        memcpy(d + n - 4, s + n - 4, 4);
    } else {
        for (size_t i = 0; i < n; i++)
            d[i] = s[i];
    }
}

static inline void ring_write(conc_mpqueue_t *q, uint64_t pos, const void *src, size_t n)
{
    size_t off = (size_t)(pos & q->mask), first = (size_t)q->cap - off;
    if (n <= 64 && n <= first) {
        copy_small(q->ring + off, src, n);
    } else if (n <= first) {
        memcpy(q->ring + off, src, n);
    } else {
        memcpy(q->ring + off, src, first);
        memcpy(q->ring, (const unsigned char *)src + first, n - first);
    }
}

static inline void ring_read(const conc_mpqueue_t *q, uint64_t pos, void *dst, size_t n)
{
    size_t off = (size_t)(pos & q->mask), first = (size_t)q->cap - off;
    if (n <= 64 && n <= first) {
        copy_small(dst, q->ring + off, n);
    } else if (n <= first) {
        memcpy(dst, q->ring + off, n);
    } else {
        memcpy(dst, q->ring + off, first);
        memcpy((unsigned char *)dst + first, q->ring, n - first);
    }
}

int conc_mpqueue_put(conc_mpqueue_t *q, const void *data, size_t len, bool block, double timeout)
{
    if (!q || (!data && len) || !mpq_open(q))
        return CONC_EINVAL;
    conc__mpq_shm_t *s = q->shm;
    mpq_dl_t dl;
    if (dl_init(&dl, block, timeout) != 0)
        return CONC_EINVAL;
    if (len > q->cap - 2 * HDR)
        return CONC_ERANGE;
    if (mpq_is_broken(q))
        return CONC_EBROKEN;
    /* room for the message and the zero header that ends the ring */
    uint64_t need = msg_size(len), cap = q->cap - HDR, maxsize = q->maxsize;
    bool counted = false, biased;
    int rc = mpq_lock(q, true, &dl, &biased);
    if (rc != 0)
        return mpq_cut_code(rc, CONC_EFULL);
    uint64_t t;
    for (;;) {
        /* Each shared word once, into a local; the checks and the writes
         * below use only the copies. A tail that is not a multiple of 8
         * would put a header across the end of the ring. */
        t = conc__load(&s->tail, RLX);
        uint64_t h = conc__load(&s->put.peer_pos, RLX), pc = conc__load(&s->put.peer_count, RLX);
        uint64_t p = conc__load(&s->puts, RLX);
        bool fresh = false, room = false;
        for (;;) {
            if (!mpq_span_ok(q, h, t)) {
                if (fresh) {
                    mpq_unlock(s, true, biased);
                    return mpq_leave(q, counted, mpq_break(q));
                }
            } else if (t + need - h <= cap && (!maxsize || p - pc < maxsize)) {
                room = true;
                break;
            } else if (fresh) {
                break;
            }
            /* The cached peer words say no: refresh both (the wait below
             * watches them, so neither may be stale) and look again. */
            h = conc__load(&s->head, ACQ);
            if (maxsize)
                pc = conc__load(&s->gets, ACQ);
            conc__store(&s->put.peer_pos, h, RLX);
            conc__store(&s->put.peer_count, pc, RLX);
            fresh = true;
        }
        if (room)
            break;
        wait_cond_t c = {.a = &s->head, .av = h, .b = maxsize ? &s->gets : NULL, .bv = pc};
        mpq_unlock(s, true, biased);
        if (!block || !mpq_enter_wait(q, &counted))
            return mpq_leave(q, counted, block ? CONC_EINVAL : CONC_EFULL);
        if ((rc = mpq_wait(&s->nonfull, &c, dl_get(&dl))) != 0)
            return mpq_leave(q, counted, mpq_cut_code(rc, CONC_EFULL));
        rc = mpq_lock(q, true, &dl, &biased);
        if (rc != 0)
            return mpq_leave(q, counted, mpq_cut_code(rc, CONC_EFULL));
    }
    /* [t, t + need + HDR) is free. The bytes, the zero header after them,
     * the journal, the count, then the header: the commit. */
    /* Ask for the line a few messages ahead for writing now: the consumer
     * read it last (a ring ago), so getting it back costs a cross-CPU
     * transfer that the prefetch overlaps with this put and the next. */
    __builtin_prefetch(q->ring + ((t + PREFETCH_AHEAD) & q->mask), 1, 3);
    TSAN_ACQUIRE(&s->head); /* h may be another process's cached copy */
    if (len)
        ring_write(q, t + HDR, data, len);
    FAULT(1);
    conc__store(ring_word(q, t + need), (uint64_t)0, RLX);
    FAULT(2);
    uint64_t p = conc__load(&s->puts, RLX);
    s->put.j.pos = t;
    s->put.j.size = need;
    s->put.j.count = p;
    atomic_signal_fence(SEQ);
    conc__store(&s->put.j.valid, 1u, RLX);
    atomic_signal_fence(SEQ);
    FAULT(3);
    conc__store(&s->puts, p + 1, RLX);
    FAULT(4);
    conc__store(ring_word(q, t), (uint64_t)len | CONC__MPQ_MARK << 32, REL);
    TSAN_RELEASE(&s->tail);
    FAULT(5);
    conc__store(&s->tail, t + need, RLX);
    atomic_signal_fence(SEQ);
    FAULT(6);
    conc__store(&s->put.j.valid, 0u, RLX);
    FAULT(7);
    mpq_unlock(s, true, biased);
    mpq_notify_unlocked(&s->nonempty, 1);
    return mpq_leave(q, counted, 0);
}

int conc_mpqueue_put_nowait(conc_mpqueue_t *q, const void *data, size_t len)
{
    return conc_mpqueue_put(q, data, len, false, 0);
}

/* get and get_alloc: exactly one of buf/allocp is used. */
static int mpq_get(conc_mpqueue_t *q, void *buf, size_t bufcap, size_t *lenp, void **allocp,
                   bool block, double timeout)
{
    if (!q || !lenp || !mpq_open(q) || (!allocp && !buf && bufcap))
        return CONC_EINVAL;
    conc__mpq_shm_t *s = q->shm;
    mpq_dl_t dl;
    if (dl_init(&dl, block, timeout) != 0)
        return CONC_EINVAL;
    if (mpq_is_broken(q))
        return CONC_EBROKEN;
    bool counted = false, biased;
    int rc = mpq_lock(q, false, &dl, &biased);
    if (rc != 0)
        return mpq_cut_code(rc, CONC_EEMPTY);
    uint64_t h, hdr;
    for (;;) {
        /* head once, checked (a multiple of 8: a header never crosses the
         * end of the ring); only the copy is used. */
        h = conc__load(&s->head, RLX);
        if (__builtin_expect((h & 7) != 0, 0)) {
            mpq_unlock(s, false, biased);
            return mpq_leave(q, counted, mpq_break(q));
        }
        hdr = conc__load(ring_word(q, h), ACQ);
        if (hdr != 0)
            break;
        mpq_unlock(s, false, biased);
        if (!block || !mpq_enter_wait(q, &counted))
            return mpq_leave(q, counted, block ? CONC_EINVAL : CONC_EEMPTY);
        wait_cond_t c = {.a = ring_word(q, h), .av = 0, .b = &s->head, .bv = h};
        rc = mpq_wait(&s->nonempty, &c, dl_get(&dl));
        if (rc == 0)
            rc = mpq_lock(q, false, &dl, &biased);
        if (rc != 0) {
            /* We may have been the one consumer woken for a message that
             * is still there: pass the wakeup on. */
            uint64_t h2 = conc__load(&s->head, ACQ);
            if ((h2 & 7) == 0 && conc__load(ring_word(q, h2), ACQ) != 0)
                mpq_notify(&s->nonempty, 1);
            return mpq_leave(q, counted, mpq_cut_code(rc, CONC_EEMPTY));
        }
    }
    TSAN_ACQUIRE(&s->tail);
    size_t len = (size_t)(uint32_t)hdr;
    if (__builtin_expect(len > q->cap - 2 * HDR || hdr >> 32 != CONC__MPQ_MARK, 0)) {
        mpq_unlock(s, false, biased); /* someone scribbled on the segment */
        return mpq_leave(q, counted, mpq_break(q));
    }
    if (allocp) {
        buf = malloc(len ? len : 1);
        if (!buf) {
            mpq_unlock(s, false, biased);
            return mpq_leave(q, counted, CONC_ENOMEM);
        }
    } else if (len > bufcap) {
        mpq_unlock(s, false, biased);
        *lenp = len;
        return mpq_leave(q, counted, CONC_ERANGE);
    }
    if (len)
        ring_read(q, h + HDR, buf, len);
    FAULT(11);
    /* Commit: head (release: the bytes were read before the space is
     * handed back). gets follows; the journal covers the gap. */
    uint64_t g = conc__load(&s->gets, RLX);
    s->get.j.pos = h;
    s->get.j.size = msg_size(len);
    s->get.j.count = g;
    atomic_signal_fence(SEQ);
    conc__store(&s->get.j.valid, 1u, RLX);
    atomic_signal_fence(SEQ);
    FAULT(12);
    conc__store(&s->head, h + msg_size(len), REL);
    TSAN_RELEASE(&s->head);
    FAULT(13);
    conc__store(&s->gets, g + 1, REL);
    atomic_signal_fence(SEQ);
    FAULT(14);
    conc__store(&s->get.j.valid, 0u, RLX);
    FAULT(15);
    mpq_unlock(s, false, biased);
    mpq_notify_unlocked(&s->nonfull, INT_MAX);
    *lenp = len;
    if (allocp)
        *allocp = buf;
    return mpq_leave(q, counted, 0);
}

int conc_mpqueue_get(conc_mpqueue_t *q, void *buf, size_t cap, size_t *len, bool block,
                     double timeout)
{
    return mpq_get(q, buf, cap, len, NULL, block, timeout);
}

int conc_mpqueue_get_nowait(conc_mpqueue_t *q, void *buf, size_t cap, size_t *len)
{
    return mpq_get(q, buf, cap, len, NULL, false, 0);
}

int conc_mpqueue_get_alloc(conc_mpqueue_t *q, void **data, size_t *len, bool block, double timeout)
{
    if (!data)
        return CONC_EINVAL;
    return mpq_get(q, NULL, 0, len, data, block, timeout);
}

/* ------------------------------------------------------------ queries */

size_t conc_mpqueue_qsize(const conc_mpqueue_t *q)
{
    if (!q || !mpq_open(q))
        return 0;
    const conc__mpq_shm_t *s = q->shm;
    uint64_t g = conc__load(&s->gets, ACQ); /* gets first: then puts >= gets */
    uint64_t p = conc__load(&s->puts, ACQ);
    return p > g ? (size_t)(p - g) : 0;
}

bool conc_mpqueue_empty(const conc_mpqueue_t *q) { return conc_mpqueue_qsize(q) == 0; }

bool conc_mpqueue_full(const conc_mpqueue_t *q)
{
    if (!q || !mpq_open(q))
        return false;
    const conc__mpq_shm_t *s = q->shm;
    if (q->maxsize && conc_mpqueue_qsize(q) >= q->maxsize)
        return true;
    uint64_t h = conc__load(&s->head, ACQ);
    uint64_t t = conc__load(&s->tail, ACQ);
    return t > h && t - h > q->cap - 2 * HDR;
}

long conc_mpqueue_maxsize(const conc_mpqueue_t *q)
{
    return q && mpq_open(q) ? (long)q->maxsize : 0;
}

size_t conc_mpqueue_capacity(const conc_mpqueue_t *q) { return q && mpq_open(q) ? (size_t)q->cap : 0; }

size_t conc_mpqueue_max_message(const conc_mpqueue_t *q)
{
    return q && mpq_open(q) ? (size_t)(q->cap - 2 * HDR) : 0;
}

unsigned long conc_mpqueue_recoveries(const conc_mpqueue_t *q)
{
    return q && mpq_open(q) ? (unsigned long)conc__load(&q->shm->recoveries, RLX) : 0;
}

/* ------------------------------------------------------ JoinableQueue */

int conc_mpqueue_task_done(conc_mpqueue_t *q)
{
    if (!q || !mpq_open(q) || q->kind != CONC_MPQ_JOINABLE)
        return CONC_EINVAL;
    if (mpq_is_broken(q))
        return CONC_EBROKEN;
    conc__mpq_shm_t *s = q->shm;
    uint64_t d = conc__load(&s->done, RLX), p;
    do {
        p = conc__load(&s->puts, ACQ);
        if (d >= p)
            return CONC_EINVAL; /* task_done() called too many times */
    } while (!atomic_compare_exchange_weak_explicit(CONC__A(&s->done), &d, d + 1, SEQ, RLX));
    if (d + 1 == p)
        mpq_notify(&s->alldone, INT_MAX);
    return 0;
}

int conc_mpqueue_join(conc_mpqueue_t *q, double timeout)
{
    if (!q || !mpq_open(q) || q->kind != CONC_MPQ_JOINABLE)
        return CONC_EINVAL;
    if (mpq_is_broken(q))
        return CONC_EBROKEN;
    conc__mpq_shm_t *s = q->shm;
    int64_t deadline;
    if (conc__deadline(timeout, &deadline) != 0)
        return CONC_EINVAL;
    bool counted = false;
    for (;;) {
        uint64_t d = conc__load(&s->done, ACQ);
        uint64_t p = conc__load(&s->puts, ACQ);
        if (d >= p)
            return mpq_leave(q, counted, 0);
        if (!mpq_enter_wait(q, &counted))
            return CONC_EINVAL;
        wait_cond_t c = {.a = &s->done, .av = d};
        int rc = mpq_wait(&s->alldone, &c, deadline);
        if (rc != 0)
            return mpq_leave(q, counted, mpq_cut_code(rc, CONC_ETIMEDOUT));
    }
}

size_t conc_mpqueue_unfinished_tasks(const conc_mpqueue_t *q)
{
    if (!q || !mpq_open(q) || q->kind != CONC_MPQ_JOINABLE)
        return 0;
    const conc__mpq_shm_t *s = q->shm;
    uint64_t d = conc__load(&s->done, ACQ);
    uint64_t p = conc__load(&s->puts, ACQ);
    return p > d ? (size_t)(p - d) : 0;
}
