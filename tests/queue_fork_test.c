/*
 * Queues in a forked child (suite queue_fork), and re-claiming a shared
 * ring side (suite queue_reclaim, below).
 *
 * Queues in a forked child. A raw fork() of a threaded program may leave
 * a ring cell claimed by a thread that does not exist in the child, so
 * there an exact look (get_nowait, put_nowait, the re-check before a
 * sleep) gives up on a cell that stays claimed for long (ring.c). A
 * child that the fork made while no other thread ran cannot hold such a
 * cell: there get_nowait stays exact — a put that is mid-way (its thread
 * preempted) is waited for, not answered with Empty while a later put has
 * already landed (queue.Queue never does that).
 */
#include "test_util.h"

#include <pthread.h>
#include <sys/wait.h>

#include <conc/queue.h>

#include "core/fence.h"
#include "queue/internal.h"

TestSuite(queue_fork, .timeout = TU_TIMEOUT);
TestSuite(queue_reclaim, .timeout = TU_TIMEOUT);

typedef struct {
    conc__ring_t *r;
    size_t pos;
} claim_t;

/* The claimer, "preempted" for 100 ms between its claim and its publish. */
static void *publish_late(void *arg)
{
    claim_t *c = arg;
    tu_sleep(0.1);
    conc__cell_t *cell = &c->r->cells[c->r->mask ? (c->pos & c->r->mask) : (c->pos % c->r->cap)];
    cell->item = (void *)1;
    atomic_store_explicit(&cell->seq, c->pos + 1, memory_order_release);
    return NULL;
}

static int slow_putter_child(void)
{
    conc_queue_t *q;
    if (conc_queue_new(&q, CONC_FIFO, 8) != 0 || q->impl != IMPL_RING)
        return 10;
    conc__ring_t *r = &q->s.ring;
    /* a put claims cell 0 ... */
    claim_t c = {r, atomic_load(&r->enq)};
    size_t exp = c.pos;
    if (!atomic_compare_exchange_strong(&r->enq, &exp, c.pos + 1))
        return 11;
    pthread_t t;
    if (pthread_create(&t, NULL, publish_late, &c) != 0)
        return 12;
    /* ... a later put lands in cell 1 ... */
    if (conc_queue_put_nowait(q, (void *)2) != 0)
        return 13;
    /* ... and get_nowait answers the first put's item, once it is in */
    void *item = NULL;
    int rc = conc_queue_get_nowait(q, &item);
    pthread_join(t, NULL);
    if (rc != 0)
        return 14; /* Empty, with two puts made and one of them done */
    if (item != (void *)1)
        return 15;
    if (conc_queue_get_nowait(q, &item) != 0 || item != (void *)2)
        return 16;
    return 0;
}

/* Run in a fresh copy of this binary (no Criterion thread): fork from a
 * single thread, run the slow putter in the child. */
static void *claim_and_exit(void *arg)
{
    return (void *)(intptr_t)conc_queue_put_nowait(arg, (void *)1);
}

/* A thread claims a side and exits (its record goes to the free list),
 * its queue is freed; then a fork, and the child exits the normal way
 * (exit(): LeakSanitizer checks, under ASan). The records the child does
 * not hand out must stay reachable, not count as leaked. */
static int records_of_exited_threads_child(void)
{
    for (int i = 0; i < 4; i++) {
        conc_queue_t *q;
        if (conc_queue_new(&q, CONC_FIFO, 8) != 0)
            return 10;
        pthread_t t;
        void *rc;
        if (pthread_create(&t, NULL, claim_and_exit, q) != 0 || pthread_join(t, &rc) != 0 || rc)
            return 11;
        if (conc_queue_free(q, NULL) != 0)
            return 12;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return 13;
    if (pid == 0)
        exit(0); /* (LeakSanitizer runs here, under ASan) */
    int st = 0;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
        return 14;
    return WEXITSTATUS(st) ? 15 : 0;
}

static int scenario(const char *name)
{
    if (strcmp(name, "records_of_exited_threads") == 0)
        return records_of_exited_threads_child();
    if (strcmp(name, "fork_from_one_thread") != 0)
        return 100;
    pid_t pid = fork();
    if (pid < 0)
        return 101;
    if (pid == 0)
        _exit(slow_putter_child());
    int st = 0;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
        return 102;
    return WEXITSTATUS(st);
}

/* Runs a scenario of this binary in a process of its own; it must exit
 * with 0 (else the step that failed; what names the telling step). */
static void scenario_exits_clean(const char *name, const char *what)
{
    char out[256];
    double secs;
    int st = tu_run_scenario(name, out, sizeof out, &secs);
    cr_assert(WIFEXITED(st), "status %d", st);
    cr_assert_eq(WEXITSTATUS(st), 0, "step %d failed (%s)", WEXITSTATUS(st), what);
}

Test(queue_fork, get_nowait_stays_exact_in_a_child_forked_without_threads)
{
    scenario_exits_clean("fork_from_one_thread", "14: get_nowait said Empty");
}

/* After a fork the child hands out no record of a thread that exited
 * before it (ring.c), but keeps them reachable: a child that exits the
 * normal way under LeakSanitizer reports no leak. */
Test(queue_fork, records_dropped_by_a_fork_are_not_leaked)
{
    scenario_exits_clean("records_of_exited_threads", "15: the child's exit reported a leak");
}

/* A ring's sides owned by threads a fork leaves behind (ring.c, owner
 * paths): the put side's owner is idle, the get side's owner is frozen
 * mid-get (its busy flag set, as if the fork caught it there). The child's
 * thread takes both sides over — the busy one after its bounded wait in a
 * process forked while threads ran — and the queue stays exact. */
static void *own_put_side(void *arg)
{
    return (void *)(intptr_t)conc_queue_put_nowait(arg, (void *)1);
}

static atomic_int idle_stop, idle_running;
static void *idle_thread(void *arg)
{
    (void)arg;
    atomic_store(&idle_running, 1);
    while (!atomic_load(&idle_stop))
        tu_sleep(0.001);
    return NULL;
}

/* Forks while a second thread runs (so the child descends from a
 * threaded fork) and runs child(q) there; returns the child's exit code
 * (its failed step), failing the test if it was killed (hung: alarm).
 * It forks once that thread runs its own code: forked while still being
 * set up, it could leave a sanitizer's thread-registry or allocator lock
 * held in the child, whose own pthread_create then hung (ASan). */
static int fork_threaded(int (*child)(conc_queue_t *), conc_queue_t *q)
{
    pthread_t idle;
    atomic_store(&idle_stop, 0);
    atomic_store(&idle_running, 0);
    cr_assert_eq(pthread_create(&idle, NULL, idle_thread, NULL), 0);
    while (!atomic_load(&idle_running))
        tu_sleep(0.0005);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0)
        _exit(child(q));
    atomic_store(&idle_stop, 1);
    pthread_join(idle, NULL);
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st), "child killed by signal %d (hung?)", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return WEXITSTATUS(st);
}

static int owner_child(conc_queue_t *q)
{
    alarm(20); /* a hang kills the child: the parent sees a signal */
    void *item;
    if (conc_queue_put_nowait(q, (void *)2) != 0)
        return 20;
    /* (the put side's owner exited before the fork: its record, with the
     * side, goes to no thread of the child) */
    if (atomic_load(&q->s.ring.pown) != CONC__RING_OWN_SHARED || conc__ring_me == &conc__ring_nothr)
        return 21;
    if (conc_queue_get_nowait(q, &item) != 0 || item != (void *)1)
        return 22;
    if (atomic_load(&q->s.ring.cown) != CONC__RING_OWN_SHARED)
        return 23;
    if (conc_queue_get_nowait(q, &item) != 0 || item != (void *)2)
        return 24;
    if (conc_queue_get_nowait(q, &item) != CONC_EEMPTY)
        return 25;
    for (int i = 0; i < 8; i++)
        if (conc_queue_put(q, (void *)(intptr_t)(10 + i), true, 1.0) != 0)
            return 26;
    if (conc_queue_put_nowait(q, (void *)3) != CONC_EFULL || conc_queue_qsize(q) != 8)
        return 27;
    for (int i = 0; i < 8; i++)
        if (conc_queue_get(q, &item, true, 1.0) != 0 || item != (void *)(intptr_t)(10 + i))
            return 28;
    return 0;
}

Test(queue_fork, ring_sides_owned_by_threads_left_behind)
{
    conc_queue_t *q;
    cr_assert_eq(conc_queue_new(&q, CONC_FIFO, 8), 0);
    cr_assert_eq(q->impl, IMPL_RING);
    pthread_t t;
    void *rc;
    cr_assert_eq(pthread_create(&t, NULL, own_put_side, q), 0);
    cr_assert_eq(pthread_join(t, &rc), 0);
    cr_assert_eq((intptr_t)rc, 0);
    conc__ring_t *r = &q->s.ring;
    static conc__ring_thr_t frozen; /* a thread that exists in no process */
    uintptr_t fake = (uintptr_t)&frozen;
    uintptr_t none = CONC__RING_OWN_NONE;
    cr_assert(atomic_compare_exchange_strong(&r->cown, &none, fake));
    atomic_store(&frozen.busy, 1);
    /* a thread runs during the fork, as the frozen owner would */
    int step = fork_threaded(owner_child, q);
    cr_assert_eq(step, 0, "child step %d failed", step);
    atomic_store(&frozen.busy, 0); /* the frozen owner "finishes" in the parent */
    void *item;
    cr_assert_eq(conc_queue_get_nowait(q, &item), 0);
    cr_assert_eq(item, (void *)1);
    cr_assert_eq(atomic_load(&r->cown), CONC__RING_OWN_SHARED);
    cr_assert_eq(conc_queue_free(q, NULL), 0);
}

/* A side caught REVOKING by a raw fork (its revoker is left behind): a
 * put in the child finishes the hand-over after the bounded wait and
 * keeps its timeout (it waited for SHARED forever before). */
static int revoking_child(conc_queue_t *q)
{
    alarm(20);
    conc__ring_t *r = &q->s.ring;
    void *it;
    double t0 = tu_now();
    TU_CK(conc_queue_put(q, (void *)2, true, 1.0) == 0);
    TU_CK(tu_now() - t0 < 5.0);
    TU_CK(atomic_load(&r->pown) == CONC__RING_OWN_SHARED);
    TU_CK(atomic_load(&r->enq) & CONC__RING_SHARED_BIT);
    TU_CK(conc_queue_get_nowait(q, &it) == 0 && it == (void *)1);
    TU_CK(conc_queue_get_nowait(q, &it) == 0 && it == (void *)2);
    TU_CK(conc_queue_get_nowait(q, &it) == CONC_EEMPTY);
    return 0;
}

Test(queue_fork, side_left_revoking_by_a_fork_is_taken_over)
{
    conc_queue_t *q;
    cr_assert_eq(conc_queue_new(&q, CONC_FIFO, 8), 0);
    conc__ring_t *r = &q->s.ring;
    cr_assert_eq(conc_queue_put_nowait(q, (void *)1), 0);
    uintptr_t owner = atomic_load(&r->pown);
    atomic_store(&r->pown, CONC__RING_OWN_REVOKING); /* a revoker, caught by the fork */
    int step = fork_threaded(revoking_child, q);
    cr_assert_eq(step, 0, "child step %d failed", step);
    atomic_store(&r->pown, owner); /* in the parent the "revoker" gives the side back */
    void *it;
    cr_assert_eq(conc_queue_get_nowait(q, &it), 0);
    cr_assert_eq(it, (void *)1);
    cr_assert_eq(conc_queue_free(q, NULL), 0);
}

/* The bounded wait for a busy owner is only for owners a fork left
 * behind. In a process descended from a threaded fork, a side claimed in
 * that very process has a live owner: a revoker must wait for its
 * operation however long it is preempted, never switch the side to the
 * CAS path under it (the owner would then store its ticket over a CAS
 * claim: one cell for two puts). */
static atomic_int live_state; /* 1: the owner claimed, 2: let it exit */
static void *live_owner(void *arg)
{
    if (conc_queue_put_nowait(arg, (void *)1) != 0)
        return (void *)1;
    atomic_store(&live_state, 1);
    while (atomic_load(&live_state) != 2)
        tu_sleep(0.001);
    return NULL;
}
static atomic_int revoker_done;
static void *revoker(void *arg)
{
    intptr_t rc = conc_queue_put_nowait(arg, (void *)2);
    atomic_store(&revoker_done, 1);
    return (void *)rc;
}

static int live_owner_child(conc_queue_t *unused)
{
    (void)unused;
    alarm(20);
    conc_queue_t *q;
    if (conc_queue_new(&q, CONC_FIFO, 8) != 0 || q->impl != IMPL_RING)
        return 30;
    pthread_t o, v;
    if (pthread_create(&o, NULL, live_owner, q) != 0)
        return 31;
    while (atomic_load(&live_state) != 1)
        tu_sleep(0.001);
    /* the owner, "preempted" in the middle of a put */
    atomic_uint *busy = conc__ring_busy(atomic_load(&q->s.ring.pown));
    atomic_store(busy, 1);
    if (pthread_create(&v, NULL, revoker, q) != 0)
        return 32;
    tu_sleep(0.3);
    int early = atomic_load(&revoker_done);
    atomic_store(busy, 0); /* its put ends */
    void *rc;
    pthread_join(v, &rc);
    atomic_store(&live_state, 2);
    pthread_join(o, NULL);
    if (early)
        return 33; /* the side went shared while its owner was in a put */
    if ((intptr_t)rc != 0 || conc_queue_qsize(q) != 2)
        return 34;
    return 0;
}

Test(queue_fork, live_owner_in_a_child_of_a_threaded_fork_is_waited_for)
{
    if (TU_TSAN)
        cr_skip_test("TSan does not start threads in a child of a threaded fork");
    int step = fork_threaded(live_owner_child, NULL);
    cr_assert_eq(step, 0, "child step %d failed (33: revoked under a live owner)", step);
}

/* The same with a second thread that comes by while the first revoker
 * waits: the side is REVOKING for as long as the owner is preempted, but
 * its revoker is alive (it revoked in this process), so the newcomer
 * waits for it too instead of taking the hand-over over (which went on
 * under the live owner's put). */
static atomic_int second_done;
static void *second_revoker(void *arg)
{
    intptr_t rc = conc_queue_put_nowait(arg, (void *)3);
    atomic_store(&second_done, 1);
    return (void *)rc;
}

static int live_revoker_child(conc_queue_t *unused)
{
    (void)unused;
    alarm(20);
    conc_queue_t *q;
    if (conc_queue_new(&q, CONC_FIFO, 8) != 0 || q->impl != IMPL_RING)
        return 50;
    atomic_store(&live_state, 0);
    atomic_store(&revoker_done, 0);
    pthread_t o, v, w;
    if (pthread_create(&o, NULL, live_owner, q) != 0)
        return 51;
    while (atomic_load(&live_state) != 1)
        tu_sleep(0.001);
    atomic_uint *busy = conc__ring_busy(atomic_load(&q->s.ring.pown));
    atomic_store(busy, 1); /* the owner, "preempted" mid-put */
    if (pthread_create(&v, NULL, revoker, q) != 0)
        return 52;
    while (atomic_load(&q->s.ring.pown) != CONC__RING_OWN_REVOKING)
        tu_sleep(0.001);
    if (pthread_create(&w, NULL, second_revoker, q) != 0)
        return 53;
    tu_sleep(0.5);
    int early = atomic_load(&revoker_done) || atomic_load(&second_done);
    atomic_store(busy, 0); /* its put ends */
    void *rc1, *rc2;
    pthread_join(v, &rc1);
    pthread_join(w, &rc2);
    atomic_store(&live_state, 2);
    pthread_join(o, NULL);
    if (early)
        return 54; /* the side went shared while its owner was in a put */
    if ((intptr_t)rc1 != 0 || (intptr_t)rc2 != 0 || conc_queue_qsize(q) != 3)
        return 55;
    return 0;
}

Test(queue_fork, live_revoker_in_a_child_of_a_threaded_fork_is_waited_for)
{
    if (TU_TSAN)
        cr_skip_test("TSan does not start threads in a child of a threaded fork");
    int step = fork_threaded(live_revoker_child, NULL);
    cr_assert_eq(step, 0, "child step %d failed (54: taken over under a live revoker)", step);
}

/* The same for the thread that forked: it owned the put side before the
 * fork and goes on owning it in the child, where it is alive. */
static int forker_owner_child(conc_queue_t *q)
{
    alarm(20);
    atomic_store(&revoker_done, 0);
    atomic_uint *busy = conc__ring_busy(atomic_load(&q->s.ring.pown));
    atomic_store(busy, 1); /* this owner, "preempted" mid-put */
    pthread_t v;
    if (pthread_create(&v, NULL, revoker, q) != 0)
        return 40;
    tu_sleep(0.3);
    int early = atomic_load(&revoker_done);
    atomic_store(busy, 0);
    void *rc;
    pthread_join(v, &rc);
    if (early)
        return 41;
    if ((intptr_t)rc != 0 || conc_queue_qsize(q) != 2)
        return 42;
    return 0;
}

Test(queue_fork, forking_owner_is_waited_for_in_its_child)
{
    if (TU_TSAN)
        cr_skip_test("TSan does not start threads in a child of a threaded fork");
    conc_queue_t *q;
    cr_assert_eq(conc_queue_new(&q, CONC_FIFO, 8), 0);
    cr_assert_eq(conc_queue_put_nowait(q, (void *)1), 0); /* this thread owns the put side */
    cr_assert_neq(atomic_load(&q->s.ring.pown), CONC__RING_OWN_SHARED);
    int step = fork_threaded(forker_owner_child, q);
    cr_assert_eq(step, 0, "child step %d failed (41: revoked under the live forking owner)", step);
    cr_assert_eq(conc_queue_free(q, NULL), 0);
}

/* ------------------------------------------------------------------
 * Re-claiming a shared ring side (ring.c): a thread that makes a long run
 * of CAS-path operations alone on a side claims it back (clearing
 * SHARED_BIT in the side's counter shuts out CAS-path operations under
 * way); the next other thread revokes it again. */

static uintptr_t ring_self(void)
{
    return (uintptr_t)conc__ring_me;
}

/* Puts (and gets) item 1000 + i on another thread, revoking what it owns. */
static void *other_put(void *arg)
{
    return (void *)(intptr_t)conc_queue_put_nowait(arg, (void *)(uintptr_t)7);
}
static void *other_get(void *arg)
{
    void *it = NULL;
    int rc = conc_queue_get_nowait(arg, &it);
    return (void *)(intptr_t)(rc ? rc : (intptr_t)it);
}
static intptr_t on_other_thread(void *(*fn)(void *), conc_queue_t *q)
{
    pthread_t t;
    void *rc;
    cr_assert_eq(pthread_create(&t, NULL, fn, q), 0);
    cr_assert_eq(pthread_join(t, &rc), 0);
    return (intptr_t)rc;
}

/* This thread makes both sides shared (another thread's put and get
 * revoke its first claims), then a run of put+get pairs alone: it owns
 * both sides again, SHARED_BIT clear. Returns the run's length. */
static long reclaim_both(conc_queue_t *q)
{
    conc__ring_t *r = &q->s.ring;
    void *it;
    cr_assert_eq(conc_queue_put_nowait(q, (void *)1), 0); /* claims the put side */
    cr_assert_eq(conc_queue_get_nowait(q, &it), 0);       /* and the get side */
    cr_assert_eq(on_other_thread(other_put, q), 0);
    cr_assert_eq(on_other_thread(other_get, q), 7);
    cr_assert_eq(atomic_load(&r->pown), CONC__RING_OWN_SHARED);
    cr_assert_eq(atomic_load(&r->cown), CONC__RING_OWN_SHARED);
    long n = (long)atomic_load(&r->preclaim) + 10;
    for (long i = 0; i < n; i++) {
        cr_assert_eq(conc_queue_put_nowait(q, (void *)(uintptr_t)(100 + i)), 0);
        cr_assert_eq(conc_queue_get_nowait(q, &it), 0);
        cr_assert_eq(it, (void *)(uintptr_t)(100 + i));
    }
    return n;
}

Test(queue_reclaim, a_solo_run_claims_a_shared_side_back)
{
    if (!conc__membarrier_init())
        cr_skip_test("membarrier(2) is not usable here: sides are never owned");
    conc_queue_t *q;
    cr_assert_eq(conc_queue_new(&q, CONC_FIFO, 8), 0);
    cr_assert_eq(q->impl, IMPL_RING);
    conc__ring_t *r = &q->s.ring;
    unsigned k0 = atomic_load(&r->preclaim);
    reclaim_both(q);
    cr_assert_eq(atomic_load(&r->pown), ring_self());
    cr_assert_eq(atomic_load(&r->cown), ring_self());
    cr_assert_not(atomic_load(&r->enq) & CONC__RING_SHARED_BIT);
    cr_assert_not(atomic_load(&r->deq) & CONC__RING_SHARED_BIT);
    /* a CAS-path put that read enq as shared before the claim cannot take
     * a ticket under the owner (its CAS expects SHARED_BIT set) */
    size_t stale = atomic_load(&r->enq) | CONC__RING_SHARED_BIT;
    cr_assert_not(atomic_compare_exchange_strong(&r->enq, &stale, stale + 1));
    cr_assert_eq(conc_queue_qsize(q), 0);
    cr_assert_eq(conc_queue_unfinished_tasks(q), atomic_load(&r->enq) & ~CONC__RING_FLAGS);
    /* full and empty stay exact under an owner */
    void *it;
    for (int i = 0; i < 8; i++)
        cr_assert_eq(conc_queue_put_nowait(q, (void *)(uintptr_t)(50 + i)), 0);
    cr_assert_eq(conc_queue_put_nowait(q, (void *)9), CONC_EFULL);
    cr_assert_eq(conc_queue_qsize(q), 8);
    cr_assert(conc_queue_full(q));
    cr_assert_eq(conc_queue_peek(q, &it, false, 0), 0);
    cr_assert_eq(it, (void *)50);
    /* another thread's get revokes the get side: CAS path, FIFO kept */
    cr_assert_eq(on_other_thread(other_get, q), 50);
    cr_assert_eq(atomic_load(&r->cown), CONC__RING_OWN_SHARED);
    cr_assert(atomic_load(&r->deq) & CONC__RING_SHARED_BIT);
    /* ... and its put the put side (a short claim: the next one needs a
     * longer run) */
    cr_assert_eq(on_other_thread(other_put, q), 0);
    cr_assert_eq(atomic_load(&r->pown), CONC__RING_OWN_SHARED);
    cr_assert(atomic_load(&r->enq) & CONC__RING_SHARED_BIT);
    cr_assert_gt(atomic_load(&r->preclaim), k0);
    for (int i = 1; i < 8; i++) {
        cr_assert_eq(conc_queue_get_nowait(q, &it), 0);
        cr_assert_eq(it, (void *)(uintptr_t)(50 + i));
    }
    cr_assert_eq(conc_queue_get_nowait(q, &it), 0);
    cr_assert_eq(it, (void *)7);
    cr_assert_eq(conc_queue_get_nowait(q, &it), CONC_EEMPTY);
    cr_assert_eq(conc_queue_free(q, NULL), 0);
}

/* Any thread that runs alone on a shared side long enough claims it, not
 * only the side's first owner (ring.c: busy counts are per thread, so a
 * former owner still inside an owner-path entry begun before its
 * revocation raises its own count, never the new owner's). */
static void *long_solo_run(void *arg)
{
    conc_queue_t *q = arg;
    long n = (long)atomic_load(&q->s.ring.preclaim) * 4;
    void *it;
    for (long i = 0; i < n; i++)
        if (conc_queue_put_nowait(q, (void *)(uintptr_t)(i + 1)) != 0 || conc_queue_get_nowait(q, &it) != 0 ||
            it != (void *)(uintptr_t)(i + 1))
            return (void *)1;
    if (!conc__membarrier_init())
        return NULL;
    /* it owns both sides now */
    if (atomic_load(&q->s.ring.pown) != ring_self() || atomic_load(&q->s.ring.cown) != ring_self())
        return (void *)2;
    if ((atomic_load(&q->s.ring.enq) | atomic_load(&q->s.ring.deq)) & CONC__RING_SHARED_BIT)
        return (void *)3;
    return NULL;
}

Test(queue_reclaim, any_thread_claims_back)
{
    conc_queue_t *q;
    cr_assert_eq(conc_queue_new(&q, CONC_FIFO, 8), 0);
    conc__ring_t *r = &q->s.ring;
    void *it;
    cr_assert_eq(conc_queue_put_nowait(q, (void *)1), 0); /* this thread: the first owner of both sides */
    cr_assert_eq(conc_queue_get_nowait(q, &it), 0);
    /* another thread revokes both, then claims them in a long run alone */
    cr_assert_eq(on_other_thread(long_solo_run, q), 0);
    /* (that thread exited: its record waits for the next claimer) */
    cr_assert_eq(conc_queue_put_nowait(q, (void *)5), 0); /* revokes it again */
    cr_assert_eq(atomic_load(&r->pown), CONC__RING_OWN_SHARED);
    cr_assert(atomic_load(&r->enq) & CONC__RING_SHARED_BIT);
    cr_assert_eq(conc_queue_qsize(q), 1);
    cr_assert_eq(conc_queue_get_nowait(q, &it), 0);
    cr_assert_eq(it, (void *)5);
    cr_assert_eq(atomic_load(&r->cown), CONC__RING_OWN_SHARED);
    cr_assert_eq(conc_queue_get_nowait(q, &it), CONC_EEMPTY);
    cr_assert_eq(conc_queue_free(q, NULL), 0);
}

/* The hazard that kept claims to a side's first owner: a former owner
 * "preempted" inside an owner-path entry it began before its revocation
 * (its busy count raised) while another thread claims the side. That
 * count is its own: a third thread that revokes the new owner waits for
 * the new owner's operations only, and the former owner's entry, when it
 * goes on, sees that it owns nothing (and restores its count). */
typedef struct {
    conc_queue_t *q;
    atomic_int step; /* 1: A claimed, 2: A "preempted" mid-entry, 3: B claimed, 4: let A go on */
    uintptr_t a_id;
    intptr_t a_rc;
} former_t;

static void *former_owner(void *arg)
{
    former_t *x = arg;
    conc__ring_t *r = &x->q->s.ring;
    if (conc_queue_put_nowait(x->q, (void *)1) != 0)
        return (void *)1;
    x->a_id = ring_self();
    if (atomic_load(&r->pown) != x->a_id)
        return (void *)2;
    /* its owner-path entry: the owner word read, busy raised next */
    atomic_uint *busy = conc__ring_busy(x->a_id);
    atomic_store(&x->step, 1);
    while (atomic_load(&x->step) != 2)
        tu_sleep(0.001);
    atomic_store(busy, 1); /* preempted after this store, before the re-read */
    atomic_store(&x->step, 3);
    while (atomic_load(&x->step) != 4)
        tu_sleep(0.001);
    /* the re-read: no longer the owner; restore the count and take the
     * CAS path (a put through the ordinary entry shows the same) */
    bool owner = atomic_load(&r->pown) == x->a_id;
    atomic_store(busy, 0);
    if (owner)
        return (void *)3;
    return (void *)(intptr_t)conc_queue_put_nowait(x->q, (void *)99);
}

Test(queue_reclaim, a_former_owners_busy_count_is_its_own)
{
    if (!conc__membarrier_init())
        cr_skip_test("membarrier(2) is not usable here: sides are never owned");
    static former_t x;
    memset(&x, 0, sizeof x);
    cr_assert_eq(conc_queue_new(&x.q, CONC_FIFO, 8), 0);
    conc__ring_t *r = &x.q->s.ring;
    pthread_t a;
    cr_assert_eq(pthread_create(&a, NULL, former_owner, &x), 0);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&x.step) == 1, 10.0));
    /* this thread (B) revokes A (A is between its read of the owner word
     * and its raise of busy), then claims the side in a run alone */
    void *it;
    cr_assert_eq(conc_queue_put_nowait(x.q, (void *)2), 0);
    cr_assert_eq(atomic_load(&r->pown), CONC__RING_OWN_SHARED);
    cr_assert_eq(conc_queue_get_nowait(x.q, &it), 0);
    cr_assert_eq(it, (void *)1);
    cr_assert_eq(conc_queue_get_nowait(x.q, &it), 0);
    cr_assert_eq(it, (void *)2);
    atomic_store(&x.step, 2);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&x.step) == 3, 10.0));
    long n = (long)atomic_load(&r->preclaim) + 10;
    for (long i = 0; i < n; i++) {
        cr_assert_eq(conc_queue_put_nowait(x.q, (void *)(uintptr_t)(100 + i)), 0);
        cr_assert_eq(conc_queue_get_nowait(x.q, &it), 0);
        cr_assert_eq(it, (void *)(uintptr_t)(100 + i));
    }
    cr_assert_eq(atomic_load(&r->pown), ring_self());
    cr_assert_neq(ring_self(), x.a_id);
    cr_assert_eq(atomic_load(conc__ring_busy(ring_self())), 0); /* A's raise is not ours */
    cr_assert_eq(conc_queue_put_nowait(x.q, (void *)7), 0);  /* owner path */
    /* a third thread revokes B at once (it does not wait for A) */
    double t0 = tu_now();
    cr_assert_eq(on_other_thread(other_put, x.q), 0);
    cr_assert_lt(tu_now() - t0, 5.0);
    cr_assert_eq(atomic_load(&r->pown), CONC__RING_OWN_SHARED);
    atomic_store(&x.step, 4);
    void *arc;
    cr_assert_eq(pthread_join(a, &arc), 0);
    cr_assert_eq((intptr_t)arc, 0, "former owner: %d", (int)(intptr_t)arc);
    /* FIFO: 7 (B's owner put), 7 (the third thread's), 99 (A's CAS put) */
    cr_assert_eq(conc_queue_get_nowait(x.q, &it), 0);
    cr_assert_eq(it, (void *)7);
    cr_assert_eq(conc_queue_get_nowait(x.q, &it), 0);
    cr_assert_eq(it, (void *)7);
    cr_assert_eq(conc_queue_get_nowait(x.q, &it), 0);
    cr_assert_eq(it, (void *)99);
    cr_assert_eq(conc_queue_get_nowait(x.q, &it), CONC_EEMPTY);
    cr_assert_eq(conc_queue_free(x.q, NULL), 0);
}

/* An exited owner's record goes to the next thread that claims a side,
 * together with the sides the exited thread still owns: that thread then
 * uses them as their owner (nobody else does), FIFO kept; and a thread's
 * busy count is a nesting count (a handler's operation on another ring in
 * the middle of one restores it). */
static void *claim_put_side(void *arg)
{
    if (conc_queue_put_nowait(arg, (void *)1) != 0)
        return (void *)0;
    return (void *)ring_self();
}
static void *inherit(void *arg)
{
    conc_queue_t **qs = arg;
    if (conc_queue_put_nowait(qs[1], (void *)2) != 0) /* its first claim */
        return (void *)1;
    uintptr_t me = ring_self();
    if (atomic_load(&qs[1]->s.ring.pown) != me)
        return (void *)2;
    /* a nested operation restores the count it found */
    atomic_uint *busy = conc__ring_busy(me);
    atomic_store(busy, 1);
    if (conc_queue_put_nowait(qs[1], (void *)3) != 0 || atomic_load(busy) != 1)
        return (void *)3;
    atomic_store(busy, 0);
    /* qs[0]'s put side: owned by the exited thread, maybe this record */
    if (atomic_load(&qs[0]->s.ring.pown) == me && conc_queue_put_nowait(qs[0], (void *)4) != 0)
        return (void *)4;
    return NULL;
}

Test(queue_reclaim, an_exited_owners_record_is_reused)
{
    if (!conc__membarrier_init())
        cr_skip_test("membarrier(2) is not usable here: sides are never owned");
    conc_queue_t *qs[2];
    cr_assert_eq(conc_queue_new(&qs[0], CONC_FIFO, 8), 0);
    cr_assert_eq(conc_queue_new(&qs[1], CONC_FIFO, 8), 0);
    uintptr_t gone = (uintptr_t)on_other_thread(claim_put_side, qs[0]);
    cr_assert_neq(gone, 0);
    cr_assert_eq(atomic_load(&qs[0]->s.ring.pown), gone);
    pthread_t t;
    void *trc;
    cr_assert_eq(pthread_create(&t, NULL, inherit, qs), 0);
    cr_assert_eq(pthread_join(t, &trc), 0);
    cr_assert_eq((intptr_t)trc, 0, "inherit: step %d", (int)(intptr_t)trc);
    /* this thread revokes whoever owns it now: FIFO across the owners */
    cr_assert_eq(conc_queue_put_nowait(qs[0], (void *)5), 0);
    void *it;
    cr_assert_eq(conc_queue_get_nowait(qs[0], &it), 0);
    cr_assert_eq(it, (void *)1);
    if (conc_queue_qsize(qs[0]) == 2) {
        cr_assert_eq(conc_queue_get_nowait(qs[0], &it), 0);
        cr_assert_eq(it, (void *)4);
    }
    cr_assert_eq(conc_queue_get_nowait(qs[0], &it), 0);
    cr_assert_eq(it, (void *)5);
    for (uintptr_t v = 2; v <= 3; v++) {
        cr_assert_eq(conc_queue_get_nowait(qs[1], &it), 0);
        cr_assert_eq(it, (void *)v);
    }
    cr_assert_eq(conc_queue_free(qs[0], NULL), 0);
    cr_assert_eq(conc_queue_free(qs[1], NULL), 0);
}

/* Producers put in bursts, one at a time (a mutex: each burst is a solo
 * run, long enough to claim the side back), except every third burst,
 * which races the others freely — CAS-path puts under way while a side is
 * being claimed and revoked. Consumers likewise. Every item comes out
 * once, each producer's in order; shutdown may come mid-way. */
#define RC_NP 4
#define RC_NC 2
typedef struct {
    conc_queue_t *q;
    long per;               /* items per producer */
    long burst;
    pthread_mutex_t pm, cm; /* one bursting producer / consumer at a time */
    bool stop_on_shutdown;
    atomic_uchar *seen;     /* by value */
    atomic_long got, put_ok, put_sum, got_sum, dup, disorder, errors, owned_after_burst;
    atomic_int producers_done;
} rc_t;

static void rc_producer(void *arg, int p)
{
    rc_t *x = arg;
    long k = 0;
    for (long b = 0; k < x->per; b++) {
        bool solo = b % 3 != 2;
        if (solo)
            pthread_mutex_lock(&x->pm);
        int rc = 0;
        for (long i = 0; i < x->burst && k < x->per; i++, k++) {
            uintptr_t v = (uintptr_t)p * (uintptr_t)x->per + (uintptr_t)k + 1;
            rc = conc_queue_put(x->q, (void *)v, true, 20.0);
            if (rc)
                break;
            atomic_fetch_add(&x->put_ok, 1);
            atomic_fetch_add(&x->put_sum, (long)v);
        }
        if (solo && atomic_load(&x->q->s.ring.pown) == ring_self())
            atomic_fetch_add(&x->owned_after_burst, 1);
        if (solo)
            pthread_mutex_unlock(&x->pm);
        if (rc) {
            if (!(rc == CONC_ESHUTDOWN && x->stop_on_shutdown))
                atomic_fetch_add(&x->errors, 1);
            break;
        }
    }
    atomic_fetch_add(&x->producers_done, 1);
}

static void rc_consumer(void *arg, int c)
{
    rc_t *x = arg;
    long last[RC_NP] = {0};
    bool done = false;
    for (long b = 0; !done; b++) {
        bool solo = (b + c) % 3 != 2;
        if (solo)
            pthread_mutex_lock(&x->cm);
        for (long i = 0; i < x->burst; i++) {
            void *it;
            int rc = conc_queue_get(x->q, &it, true, 20.0);
            if (rc) {
                if (rc != CONC_ESHUTDOWN)
                    atomic_fetch_add(&x->errors, 1);
                done = true;
                break;
            }
            uintptr_t v = (uintptr_t)it;
            if (v == 0 || v > (uintptr_t)(RC_NP * x->per)) {
                atomic_fetch_add(&x->errors, 1);
                continue;
            }
            if (atomic_exchange(&x->seen[v], 1))
                atomic_fetch_add(&x->dup, 1);
            int p = (int)((v - 1) / (uintptr_t)x->per);
            if ((long)v <= last[p])
                atomic_fetch_add(&x->disorder, 1);
            last[p] = (long)v;
            atomic_fetch_add(&x->got_sum, (long)v);
            atomic_fetch_add(&x->got, 1);
        }
        if (solo)
            pthread_mutex_unlock(&x->cm);
    }
}

static void rc_run(rc_t *x, double shutdown_after)
{
    cr_assert_eq(conc_queue_new(&x->q, CONC_FIFO, 256), 0);
    cr_assert_eq(x->q->impl, IMPL_RING);
    x->seen = calloc((size_t)(RC_NP * x->per + 1), 1);
    cr_assert_not_null(x->seen);
    pthread_mutex_init(&x->pm, NULL);
    pthread_mutex_init(&x->cm, NULL);
    static tu_bunch_t pb, cb;
    tu_bunch_start(&cb, RC_NC, rc_consumer, x);
    tu_bunch_start(&pb, RC_NP, rc_producer, x);
    if (shutdown_after > 0) {
        /* mid-way: once a side was claimed back (or a bound passed) */
        TU_WAIT_UNTIL(atomic_load(&x->owned_after_burst) > 0 && atomic_load(&x->got) > 0, shutdown_after);
        cr_assert_eq(conc_queue_shutdown(x->q, false, NULL), 0);
        cr_assert_eq(atomic_load(&x->q->s.ring.pown), CONC__RING_OWN_SHARED, "close revokes the put side");
        cr_assert_eq(conc_queue_put_nowait(x->q, (void *)1), CONC_ESHUTDOWN);
    } else {
        tu_bunch_join(&pb);
        cr_assert_eq(conc_queue_shutdown(x->q, false, NULL), 0); /* ends the consumers once drained */
    }
    tu_bunch_join(&pb);
    tu_bunch_join(&cb);
    cr_assert_eq(atomic_load(&x->errors), 0);
    cr_assert_eq(atomic_load(&x->dup), 0);
    cr_assert_eq(atomic_load(&x->disorder), 0);
    cr_assert_eq(atomic_load(&x->got), atomic_load(&x->put_ok), "lost items: put %ld, got %ld",
                 atomic_load(&x->put_ok), atomic_load(&x->got));
    cr_assert_eq(atomic_load(&x->got_sum), atomic_load(&x->put_sum));
    cr_assert_eq(conc_queue_qsize(x->q), 0);
    cr_assert_eq(conc_queue_free(x->q, NULL), 0);
    free(x->seen);
    pthread_mutex_destroy(&x->pm);
    pthread_mutex_destroy(&x->cm);
}

Test(queue_reclaim, claims_back_while_other_threads_race)
{
    static rc_t x;
    memset(&x, 0, sizeof x);
    x.per = tu_iters(60000);
    x.burst = 3000; /* > RECLAIM_MIN (ring.c): each solo burst may claim */
    rc_run(&x, 0);
    cr_assert_eq(atomic_load(&x.put_ok), RC_NP * x.per);
    if (conc__membarrier_init())
        cr_assert_gt(atomic_load(&x.owned_after_burst), 0, "no side was ever claimed back");
}

Test(queue_reclaim, shutdown_while_sides_are_claimed_back)
{
    static rc_t x;
    memset(&x, 0, sizeof x);
    x.per = tu_iters(200000);
    x.burst = 3000;
    x.stop_on_shutdown = true;
    rc_run(&x, 10.0);
    cr_assert_lt(atomic_load(&x.put_ok), RC_NP * x.per, "shutdown came after every put (not mid-way)");
}

/* A side claimed back by a thread that a fork leaves behind (it runs
 * during the fork, idle): the child takes the sides over (setting
 * SHARED_BIT) and the queue stays exact there; in the parent the owner goes on. */
static int reclaimed_child(conc_queue_t *q)
{
    alarm(20);
    conc__ring_t *r = &q->s.ring;
    void *it;
    TU_CK(conc_queue_qsize(q) == 2);
    TU_CK(conc_queue_put_nowait(q, (void *)3) == 0);
    TU_CK(atomic_load(&r->pown) == CONC__RING_OWN_SHARED);
    TU_CK(atomic_load(&r->enq) & CONC__RING_SHARED_BIT);
    TU_CK(conc_queue_get_nowait(q, &it) == 0 && it == (void *)1);
    TU_CK(atomic_load(&r->cown) == CONC__RING_OWN_SHARED);
    TU_CK(atomic_load(&r->deq) & CONC__RING_SHARED_BIT);
    for (int i = 0; i < 6; i++)
        TU_CK(conc_queue_put(q, (void *)(uintptr_t)(10 + i), true, 1.0) == 0);
    TU_CK(conc_queue_put_nowait(q, (void *)4) == CONC_EFULL && conc_queue_qsize(q) == 8);
    TU_CK(conc_queue_get(q, &it, true, 1.0) == 0 && it == (void *)2);
    TU_CK(conc_queue_get(q, &it, true, 1.0) == 0 && it == (void *)3);
    for (int i = 0; i < 6; i++)
        TU_CK(conc_queue_get(q, &it, true, 1.0) == 0 && it == (void *)(uintptr_t)(10 + i));
    TU_CK(conc_queue_get_nowait(q, &it) == CONC_EEMPTY);
    return 0;
}

typedef struct {
    conc_queue_t *q;
    atomic_int state; /* 1: both sides claimed back, 2: forked, go on */
    uintptr_t id;
} reowner_t;

static void *reowner(void *arg)
{
    reowner_t *o = arg;
    reclaim_both(o->q);
    o->id = ring_self(); /* (a thread has its id from its first claim on) */
    conc_queue_put_nowait(o->q, (void *)1);
    conc_queue_put_nowait(o->q, (void *)2);
    atomic_store(&o->state, 1);
    while (atomic_load(&o->state) != 2)
        tu_sleep(0.001);
    /* still the owner in the parent */
    void *it;
    if (conc_queue_get_nowait(o->q, &it) != 0 || it != (void *)1)
        return (void *)1;
    if (conc_queue_put_nowait(o->q, (void *)5) != 0)
        return (void *)2;
    return NULL;
}

Test(queue_reclaim, sides_claimed_back_by_a_thread_a_fork_leaves_behind)
{
    if (!conc__membarrier_init())
        cr_skip_test("membarrier(2) is not usable here: sides are never owned");
    static reowner_t o;
    memset(&o, 0, sizeof o);
    cr_assert_eq(conc_queue_new(&o.q, CONC_FIFO, 8), 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, reowner, &o), 0);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&o.state) == 1, 20.0));
    conc__ring_t *r = &o.q->s.ring;
    cr_assert_eq(atomic_load(&r->pown), o.id);
    cr_assert_eq(atomic_load(&r->cown), o.id);
    pid_t pid = fork(); /* the owner thread runs (idle) during the fork */
    cr_assert_neq(pid, -1);
    if (pid == 0)
        _exit(reclaimed_child(o.q));
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st), "child killed by signal %d (hung?)", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    cr_assert_eq(WEXITSTATUS(st), 0, "child failed (see its stderr)");
    atomic_store(&o.state, 2);
    void *rc;
    cr_assert_eq(pthread_join(t, &rc), 0);
    cr_assert_null(rc);
    void *it;
    cr_assert_eq(conc_queue_get_nowait(o.q, &it), 0); /* this thread revokes the get side */
    cr_assert_eq(it, (void *)2);
    cr_assert_eq(conc_queue_get_nowait(o.q, &it), 0);
    cr_assert_eq(it, (void *)5);
    cr_assert_eq(conc_queue_get_nowait(o.q, &it), CONC_EEMPTY);
    cr_assert_eq(conc_queue_free(o.q, NULL), 0);
}

/* A claim back racing shutdown (ring.c, conc__ring_close): the first
 * owner's run of CAS-path puts reaches the re-claim just as another
 * thread shuts the queue down. Once shutdown() has returned, every put
 * fails with CONC_ESHUTDOWN (never CONC_EFULL on a queue far from full,
 * never a put that lands: an owner's plain store of enq must not erase
 * the CLOSED bit), and every put that succeeded comes out. */
typedef struct {
    conc_queue_t *_Atomic q;
    atomic_size_t target; /* close when enq reaches it (0: not yet) */
    atomic_int closed, round, stop;
} rs_t;

static void *rs_closer(void *arg)
{
    rs_t *x = arg;
    for (int round = 1;; round++) {
        while (atomic_load(&x->round) != round)
            if (atomic_load(&x->stop))
                return NULL;
            else
                sched_yield();
        conc_queue_t *q = atomic_load(&x->q);
        if (conc_queue_put_nowait(q, (void *)7) != 0) /* revokes the put side: shared */
            return (void *)1;
        size_t t;
        while ((t = atomic_load(&x->target)) == 0)
            sched_yield();
        while ((atomic_load(&q->s.ring.enq) & ~CONC__RING_FLAGS) < t)
            conc__cpu_relax();
        conc_queue_shutdown(q, false, NULL);
        atomic_store(&x->closed, round);
    }
}

Test(queue_reclaim, a_claim_back_racing_shutdown_keeps_the_queue_closed)
{
    if (!conc__membarrier_init())
        cr_skip_test("membarrier(2) is not usable here: sides are never owned");
    rs_t x;
    memset(&x, 0, sizeof x);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, rs_closer, &x), 0);
    long rounds = tu_iters(3000), landed = 0, efull = 0, lost = 0, owned = 0;
    unsigned seed = 12345;
    for (int round = 1; round <= rounds; round++) {
        conc_queue_t *q;
        cr_assert_eq(conc_queue_new(&q, CONC_FIFO, 1 << 15), 0);
        conc__ring_t *r = &q->s.ring;
        cr_assert_eq(conc_queue_put_nowait(q, (void *)1), 0); /* this thread: the first owner */
        atomic_store(&x.q, q);
        atomic_store(&x.target, 0);
        atomic_store(&x.round, round);
        while (atomic_load(&r->pown) != CONC__RING_OWN_SHARED)
            sched_yield();
        long ok = 1;
        while (ok < 2) /* the closer's put has landed */
            ok = (long)(atomic_load(&r->enq) & ~CONC__RING_FLAGS);
        size_t k = atomic_load(&r->preclaim);
        cr_assert_lt(k, (size_t)1 << 13);
        /* the closer closes when enq reaches 2 + k - (0..3): around the
         * put that claims the side back */
        seed = seed * 1103515245u + 12345u;
        size_t target = 2 + k - ((seed >> 16) & 3);
        atomic_store(&x.target, target);
        int rc;
        for (;;) {
            if ((size_t)ok > target + 64) /* past the race: let the closer finish */
                while (atomic_load(&x.closed) != round)
                    sched_yield();
            bool after = atomic_load(&x.closed) == round;
            rc = conc_queue_put_nowait(q, (void *)(uintptr_t)(ok + 1));
            if (rc != 0)
                break;
            ok++;
            if (after) {
                landed++;
                if (ok > (1 << 14))
                    break;
            }
        }
        if (rc == CONC_EFULL)
            efull++;
        while (atomic_load(&x.closed) != round)
            sched_yield();
        if (atomic_load(&r->pown) != CONC__RING_OWN_SHARED)
            owned++;
        long got = 0;
        void *it;
        while (conc_queue_get_nowait(q, &it) == 0)
            got++;
        if (got != ok)
            lost++;
        cr_assert_eq(conc_queue_free(q, NULL), 0);
    }
    atomic_store(&x.stop, 1);
    void *trc;
    cr_assert_eq(pthread_join(t, &trc), 0);
    cr_assert_null(trc);
    cr_assert_eq(landed + efull + lost + owned, 0,
                 "%ld rounds: puts landed after shutdown in %ld, Full on an open-looking queue in %ld, "
                 "items lost in %ld, a closed side owned in %ld",
                 rounds, landed, efull, lost, owned);
}

/* Short-lived threads hand their records (and the sides they own) on
 * while other threads revoke them: producer threads one after another
 * (every third overlapping the previous one), each a run of puts long
 * enough to claim the side back, then exit; consumer threads likewise;
 * a third thread puts now and then (a revocation, racing the exits and
 * the next thread's take-over of the record). Every item comes out once,
 * each producer's in order. */
#define CH_GENS 48
#define CH_DIST_ID (CH_GENS + 1)
typedef struct {
    conc_queue_t *q;
    long per;
    atomic_int stop, errors;
    atomic_long put_ok, dist_ok, owned;
    long got, dup, disorder, bad;
    long last[CH_GENS + 2];
    unsigned char *seen;
} ch_t;
typedef struct {
    ch_t *x;
    int id;
} ch_arg_t;

static uintptr_t ch_val(int id, long k)
{
    return ((uintptr_t)id << 24) | (uintptr_t)(k + 1);
}

static void *ch_producer(void *arg)
{
    ch_arg_t *a = arg;
    /* (claims that did not pay make the next need longer runs: reset, so
     * that runs keep claiming) */
    atomic_store(&a->x->q->s.ring.preclaim, 1024);
    for (long k = 0; k < a->x->per; k++) {
        if (conc_queue_put(a->x->q, (void *)ch_val(a->id, k), true, 20.0) != 0) {
            atomic_fetch_add(&a->x->errors, 1);
            break;
        }
        atomic_fetch_add(&a->x->put_ok, 1);
        if (atomic_load(&a->x->q->s.ring.pown) == ring_self())
            atomic_fetch_add(&a->x->owned, 1); /* an owner-path put next */
    }
    return NULL;
}

static void *ch_disturber(void *arg)
{
    ch_t *x = arg;
    for (long k = 0; !atomic_load(&x->stop) && k < (1 << 23); k++) {
        if (conc_queue_put(x->q, (void *)ch_val(CH_DIST_ID, k), true, 20.0) != 0) {
            atomic_fetch_add(&x->errors, 1);
            break;
        }
        atomic_fetch_add(&x->dist_ok, 1);
        tu_sleep(k % 8 == 0 ? 0.003 : 0.0002);
    }
    return NULL;
}

/* A consumer generation: n items (or until the queue is shut down). */
static void *ch_consumer(void *arg)
{
    ch_arg_t *a = arg;
    ch_t *x = a->x;
    atomic_store(&x->q->s.ring.creclaim, 1024);
    for (long i = 0; i < (long)a->id; i++) {
        void *it;
        int rc = conc_queue_get(x->q, &it, true, 20.0);
        if (rc) {
            if (rc != CONC_ESHUTDOWN)
                atomic_fetch_add(&x->errors, 1);
            return (void *)1;
        }
        uintptr_t v = (uintptr_t)it;
        int id = (int)(v >> 24);
        long k = (long)(v & 0xffffff);
        if (id < 1 || id > CH_DIST_ID || k < 1 || k > (1 << 23)) {
            x->bad++;
            continue;
        }
        if ((long)v <= x->last[id])
            x->disorder++;
        x->last[id] = (long)v;
        if (id <= CH_GENS) {
            if (x->seen[(size_t)(id - 1) * (size_t)x->per + (size_t)(k - 1)]++)
                x->dup++;
        }
        x->got++;
    }
    return NULL;
}

static void *ch_consumers(void *arg)
{
    ch_t *x = arg;
    for (int g = 0;; g++) {
        ch_arg_t a = {x, 1500 + 37 * (g % 11)};
        pthread_t t;
        void *rc;
        if (pthread_create(&t, NULL, ch_consumer, &a) != 0) {
            atomic_fetch_add(&x->errors, 1);
            return NULL;
        }
        pthread_join(t, &rc);
        if (rc)
            return NULL;
    }
}

Test(queue_reclaim, short_lived_owners_hand_records_on_under_revocation)
{
    static ch_t x;
    memset(&x, 0, sizeof x);
    x.per = tu_iters(6000) < 3000 ? 3000 : tu_iters(6000); /* > RECLAIM_MIN: a run may claim */
    x.seen = calloc((size_t)CH_GENS * (size_t)x.per, 1);
    cr_assert_not_null(x.seen);
    cr_assert_eq(conc_queue_new(&x.q, CONC_FIFO, 64), 0);
    cr_assert_eq(x.q->impl, IMPL_RING);
    pthread_t cons, dist;
    cr_assert_eq(pthread_create(&cons, NULL, ch_consumers, &x), 0);
    cr_assert_eq(pthread_create(&dist, NULL, ch_disturber, &x), 0);
    ch_arg_t args[CH_GENS];
    pthread_t prev = 0;
    bool have_prev = false;
    for (int g = 0; g < CH_GENS; g++) {
        args[g] = (ch_arg_t){&x, g + 1};
        pthread_t t;
        if (have_prev && g % 3 != 2) {
            pthread_join(prev, NULL); /* sequential: the next one inherits the record */
            have_prev = false;
        }
        cr_assert_eq(pthread_create(&t, NULL, ch_producer, &args[g]), 0);
        if (have_prev)
            pthread_join(prev, NULL); /* overlapped with the previous one */
        prev = t;
        have_prev = true;
    }
    pthread_join(prev, NULL);
    atomic_store(&x.stop, 1);
    pthread_join(dist, NULL);
    cr_assert_eq(conc_queue_shutdown(x.q, false, NULL), 0); /* the consumers drain, then end */
    pthread_join(cons, NULL);
    cr_assert_eq(atomic_load(&x.errors), 0);
    cr_assert_eq(x.bad + x.dup + x.disorder, 0, "bad %ld dup %ld disorder %ld", x.bad, x.dup, x.disorder);
    cr_assert_eq(atomic_load(&x.put_ok), (long)CH_GENS * x.per);
    cr_assert_eq(x.got, atomic_load(&x.put_ok) + atomic_load(&x.dist_ok), "lost items: got %ld of %ld", x.got,
                 atomic_load(&x.put_ok) + atomic_load(&x.dist_ok));
    cr_assert_eq(conc_queue_qsize(x.q), 0);
    unsigned rp = atomic_load(&x.q->s.ring.preclaim), rc = atomic_load(&x.q->s.ring.creclaim);
    cr_assert_eq(conc_queue_free(x.q, NULL), 0);
    free(x.seen);
    if (getenv("CH_VERBOSE"))
        fprintf(stderr, "owned puts: %ld of %ld, preclaim %u creclaim %u\n", atomic_load(&x.owned), atomic_load(&x.put_ok), rp, rc);
}

/* A thread's busy count nests (ring.c): a signal handler that puts to and
 * gets from a ring its thread owns, interrupting that thread's owner-path
 * operations on another ring, restores the count it found, so a revoker
 * of the other ring never stops waiting while the interrupted operation
 * is under way. Every item comes out once, in order. */
#include <signal.h>
typedef struct {
    conc_queue_t *q1, *q2;
    pthread_t worker;
    atomic_int stop, ready, errors;
    atomic_long handled, rev_puts;
} sn_t;
static sn_t *sn_x;
static _Atomic uintptr_t sn_next2 = 1;

static void sn_handler(int sig)
{
    (void)sig;
    int e = errno;
    uintptr_t v = atomic_load(&sn_next2);
    void *it;
    if (conc_queue_put_nowait(sn_x->q2, (void *)v) != 0 || conc_queue_get_nowait(sn_x->q2, &it) != 0 ||
        it != (void *)v)
        atomic_fetch_add(&sn_x->errors, 1);
    atomic_store(&sn_next2, v + 1);
    atomic_fetch_add(&sn_x->handled, 1);
    errno = e;
}

#define SN_REV ((uintptr_t)1 << 40)
static void *sn_worker(void *arg)
{
    sn_t *x = arg;
    void *it;
    /* this thread owns both sides of q2 (and claims q1's on its first use) */
    if (conc_queue_put_nowait(x->q2, (void *)1) != 0 || conc_queue_get_nowait(x->q2, &it) != 0)
        atomic_fetch_add(&x->errors, 1);
    atomic_store(&x->ready, 1);
    uintptr_t next = 1, expect = 1, last_rev = 0;
    long n = tu_iters(400000), want = tu_iters(2000);
    double end = tu_now() + 5.0;
    for (long i = 0; i < n || (atomic_load(&x->handled) < want && tu_now() < end); i++) {
        if (conc_queue_put_nowait(x->q1, (void *)next) == 0)
            next++;
        while (conc_queue_get_nowait(x->q1, &it) == 0) {
            uintptr_t v = (uintptr_t)it;
            if (v & SN_REV) {
                if (v <= last_rev)
                    atomic_fetch_add(&x->errors, 1);
                last_rev = v;
                continue;
            }
            if (v != expect)
                atomic_fetch_add(&x->errors, 1); /* lost, duplicated or out of order */
            expect = v + 1;
        }
    }
    atomic_store(&x->stop, 1);
    if (expect != next)
        atomic_fetch_add(&x->errors, 1);
    return (void *)(last_rev & ~SN_REV);
}

static void *sn_signaller(void *arg)
{
    sn_t *x = arg;
    while (!atomic_load(&x->stop)) {
        pthread_kill(x->worker, SIGUSR2);
        tu_sleep(TU_SANITIZED ? 0.0005 : 0.00005); /* (a signal costs much more there) */
    }
    return NULL;
}

static void *sn_revoker(void *arg)
{
    sn_t *x = arg;
    uintptr_t k = 0;
    while (!atomic_load(&x->stop)) {
        if (conc_queue_put_nowait(x->q1, (void *)(SN_REV | (k + 1))) == 0)
            k++; /* revokes the worker's put side (it claims it back later) */
        tu_sleep(0.0005);
    }
    return (void *)k;
}

Test(queue_reclaim, a_signal_handlers_ring_operations_nest_in_the_busy_count)
{
    static sn_t x;
    memset(&x, 0, sizeof x);
    sn_x = &x;
    cr_assert_eq(conc_queue_new(&x.q1, CONC_FIFO, 1024), 0);
    cr_assert_eq(conc_queue_new(&x.q2, CONC_FIFO, 1024), 0);
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = sn_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR2, &sa, &old), 0);
    cr_assert_eq(pthread_create(&x.worker, NULL, sn_worker, &x), 0);
    cr_assert(TU_WAIT_UNTIL(atomic_load(&x.ready), 10.0));
    pthread_t sg, rv;
    cr_assert_eq(pthread_create(&sg, NULL, sn_signaller, &x), 0);
    cr_assert_eq(pthread_create(&rv, NULL, sn_revoker, &x), 0);
    void *wl, *rk;
    cr_assert_eq(pthread_join(x.worker, &wl), 0);
    cr_assert_eq(pthread_join(sg, NULL), 0);
    cr_assert_eq(pthread_join(rv, &rk), 0);
    sigaction(SIGUSR2, &old, NULL);
    void *it;
    uintptr_t last = (uintptr_t)wl; /* the revoker's items left: in order, none lost */
    while (conc_queue_get_nowait(x.q1, &it) == 0) {
        cr_assert((uintptr_t)it & SN_REV);
        cr_assert_eq((uintptr_t)it & ~SN_REV, last + 1);
        last++;
    }
    cr_assert_eq(last, (uintptr_t)rk);
    cr_assert_eq(atomic_load(&x.errors), 0);
    if (getenv("CH_VERBOSE"))
        fprintf(stderr, "handled %ld signals, %lu revoker puts\n", atomic_load(&x.handled), (unsigned long)last);
    cr_assert_eq(conc_queue_free(x.q1, NULL), 0);
    cr_assert_eq(conc_queue_free(x.q2, NULL), 0);
}

/* Claims back under churn: 8 producers and 8 consumers (more threads than
 * CPUs) on a small ring, every side claimed back after a short solo run
 * (RECLAIM_MIN) and revoked by the next thread the scheduler runs, many
 * times over (a watcher counts the owners it sees). Blocking, timed and _nowait calls mixed: FIFO per producer, no item
 * lost or doubled; then, from the sides as the churn left them, the
 * _nowait answers are exact (Full at maxsize items and not before, Empty
 * at none). */
#define CHURN_P 8
#define CHURN_C 8
typedef struct {
    conc_queue_t *q;
    long per;
    atomic_long got, sum, bad, errors;
    atomic_int producers_done, stop;
    long claims;
} churn_t;

static void churn_fn(void *arg, int i)
{
    churn_t *h = arg;
    if (i < CHURN_P) {
        for (long n = 1; n <= h->per; n++) {
            void *it = (void *)(((uintptr_t)i << 32) | (uintptr_t)n);
            int rc;
            switch (n % 3) {
            case 0:
                while ((rc = conc_queue_put_nowait(h->q, it)) == CONC_EFULL)
                    sched_yield();
                break;
            case 1:
                while ((rc = conc_queue_put(h->q, it, true, 0.001)) == CONC_EFULL) {
                }
                break;
            default:
                rc = conc_queue_put(h->q, it, true, CONC_FOREVER);
            }
            if (rc != 0) {
                atomic_fetch_add(&h->errors, 1);
                break;
            }
        }
        atomic_fetch_add(&h->producers_done, 1);
        return;
    }
    uintptr_t last[CHURN_P] = {0};
    for (long k = 0;; k++) {
        void *it;
        if (atomic_load(&h->got) == CHURN_P * h->per || atomic_load(&h->errors))
            return; /* all came out (or a producer failed) */
        int rc = (k % 3) == 0   ? conc_queue_get_nowait(h->q, &it)
                 : (k % 3) == 1 ? conc_queue_get(h->q, &it, true, 0.001)
                                : conc_queue_get(h->q, &it, true, 0.05);
        if (rc == CONC_EEMPTY)
            continue;
        if (rc != 0) {
            atomic_fetch_add(&h->errors, 1);
            return;
        }
        uintptr_t v = (uintptr_t)it, p = v >> 32, n = v & 0xffffffffu;
        if (p >= CHURN_P || n <= last[p])
            atomic_fetch_add(&h->bad, 1);
        else
            last[p] = n;
        atomic_fetch_add(&h->sum, (long)n);
        atomic_fetch_add(&h->got, 1);
    }
}

static void *churn_watch(void *arg)
{
    churn_t *h = arg;
    conc__ring_t *r = &h->q->s.ring;
    uintptr_t was[2] = {CONC__RING_OWN_NONE, CONC__RING_OWN_NONE};
    while (!atomic_load(&h->stop)) {
        uintptr_t o[2] = {atomic_load(&r->pown), atomic_load(&r->cown)};
        for (int s = 0; s < 2; s++)
            if (o[s] > CONC__RING_OWN_SHARED && o[s] != was[s]) {
                h->claims++; /* a thread's id, not the last one seen */
                was[s] = o[s];
            }
    }
    return NULL;
}

Test(queue_reclaim, claims_back_under_churn_keep_fifo_and_exact_answers)
{
    static churn_t h;
    static tu_bunch_t b;
    memset(&h, 0, sizeof h);
    h.per = tu_iters(30000);
    cr_assert_eq(conc_queue_new(&h.q, CONC_FIFO, 64), 0);
    pthread_t w;
    cr_assert_eq(pthread_create(&w, NULL, churn_watch, &h), 0);
    tu_bunch_start(&b, CHURN_P + CHURN_C, churn_fn, &h);
    long n = CHURN_P * h.per;
    cr_assert(TU_WAIT_UNTIL(atomic_load(&h.producers_done) == CHURN_P, 60), "producers stuck");
    cr_assert(TU_WAIT_UNTIL(atomic_load(&h.got) == n || atomic_load(&h.errors), 60), "%ld of %ld items came out",
              atomic_load(&h.got), n);
    tu_bunch_join(&b);
    /* quiet now, the sides left as the churn left them: exact answers */
    void *it;
    cr_assert_eq(conc_queue_get_nowait(h.q, &it), CONC_EEMPTY);
    for (long i = 0; i < 64; i++)
        cr_assert_eq(conc_queue_put_nowait(h.q, (void *)(uintptr_t)(i + 1)), 0);
    cr_assert_eq(conc_queue_put_nowait(h.q, (void *)1), CONC_EFULL);
    for (long i = 0; i < 64; i++) {
        cr_assert_eq(conc_queue_get_nowait(h.q, &it), 0);
        cr_assert_eq(it, (void *)(uintptr_t)(i + 1));
    }
    cr_assert_eq(conc_queue_get_nowait(h.q, &it), CONC_EEMPTY);
    atomic_store(&h.stop, 1);
    cr_assert_eq(pthread_join(w, NULL), 0);
    cr_assert_eq(atomic_load(&h.errors), 0);
    cr_assert_eq(atomic_load(&h.bad), 0, "out of order or foreign items");
    cr_assert_eq(atomic_load(&h.got), n);
    cr_assert_eq(atomic_load(&h.sum), CHURN_P * (h.per * (h.per + 1) / 2));
    cr_assert_eq(conc_queue_qsize(h.q), 0);
    /* (informative only: the watcher runs now and then, and sees 1 to
     * 60 owners per run, the two first claims included) */
    TU_TRACE("owners seen: %ld", h.claims);
    cr_assert_eq(conc_queue_free(h.q, NULL), 0);
}

TU_MAIN_WITH_SCENARIOS(scenario)
