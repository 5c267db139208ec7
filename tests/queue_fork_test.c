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

TU_MAIN_WITH_SCENARIOS(scenario)
