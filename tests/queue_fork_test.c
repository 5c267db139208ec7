/*
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

#include "queue/internal.h"

TestSuite(queue_fork, .timeout = TU_TIMEOUT);

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
static int scenario(const char *name)
{
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

Test(queue_fork, get_nowait_stays_exact_in_a_child_forked_without_threads)
{
    char out[256];
    double secs;
    int st = tu_run_scenario("fork_from_one_thread", out, sizeof out, &secs);
    cr_assert(WIFEXITED(st), "status %d", st);
    cr_assert_eq(WEXITSTATUS(st), 0, "child step %d failed (14: get_nowait said Empty)", WEXITSTATUS(st));
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

static atomic_int idle_stop;
static void *idle_thread(void *arg)
{
    (void)arg;
    while (!atomic_load(&idle_stop))
        tu_sleep(0.001);
    return NULL;
}

/* Forks while a second thread runs (so the child descends from a
 * threaded fork) and runs child(q) there; returns the child's exit code
 * (its failed step), failing the test if it was killed (hung: alarm). */
static int fork_threaded(int (*child)(conc_queue_t *), conc_queue_t *q)
{
    pthread_t idle;
    atomic_store(&idle_stop, 0);
    cr_assert_eq(pthread_create(&idle, NULL, idle_thread, NULL), 0);
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
    if (atomic_load(&q->s.ring.pown) != CONC__RING_OWN_SHARED)
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
    uintptr_t fake = 0x1000; /* a thread that exists in no process */
    uintptr_t none = CONC__RING_OWN_NONE;
    cr_assert(atomic_compare_exchange_strong(&r->cown, &none, fake));
    atomic_store(&r->cbusy, 1);
    /* a thread runs during the fork, as the frozen owner would */
    int step = fork_threaded(owner_child, q);
    cr_assert_eq(step, 0, "child step %d failed", step);
    atomic_store(&r->cbusy, 0); /* the frozen owner "finishes" in the parent */
    void *item;
    cr_assert_eq(conc_queue_get_nowait(q, &item), 0);
    cr_assert_eq(item, (void *)1);
    cr_assert_eq(atomic_load(&r->cown), CONC__RING_OWN_SHARED);
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
    atomic_store(&q->s.ring.pbusy, 1);
    if (pthread_create(&v, NULL, revoker, q) != 0)
        return 32;
    tu_sleep(0.3);
    int early = atomic_load(&revoker_done);
    atomic_store(&q->s.ring.pbusy, 0); /* its put ends */
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

/* The same for the thread that forked: it owned the put side before the
 * fork and goes on owning it in the child, where it is alive. */
static int forker_owner_child(conc_queue_t *q)
{
    alarm(20);
    atomic_store(&revoker_done, 0);
    atomic_store(&q->s.ring.pbusy, 1); /* this owner, "preempted" mid-put */
    pthread_t v;
    if (pthread_create(&v, NULL, revoker, q) != 0)
        return 40;
    tu_sleep(0.3);
    int early = atomic_load(&revoker_done);
    atomic_store(&q->s.ring.pbusy, 0);
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

TU_MAIN_WITH_SCENARIOS(scenario)
