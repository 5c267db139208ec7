/*
 * select.c — conc_queue_select: get from whichever of several queues has
 * an item first (Go's select over receive channels).
 *
 * Scan the queues, starting one past where this thread's last select
 * stopped (so ready queues take turns); if none has an item, put a node
 * waiter on every queue's getter list (counted in its gsleep like any
 * getter), re-check, and park on one group waiter (park.h). A put on any
 * of the queues wakes the group. After waking, every node is taken off its
 * list (or settled, if a waker took it), the queues are scanned again, and
 * a wakeup that came from a queue we did not take from is passed on to
 * that queue's next sleeping getter, so no plain getter loses its wakeup.
 */
#include <stdlib.h>

#include "core/fence.h"
#include "queue/internal.h"

#define STACK_NODES 16

static __thread size_t conc__select_next;

/* Scan from `start`; returns the index taken from, or n. *all_shut tells
 * whether every queue was shut down (and, so, found empty). */
static size_t scan(conc_queue_t *const *qs, size_t n, size_t start, void **item, bool *all_shut)
{
    bool shut = true;
    for (size_t k = 0; k < n; k++) {
        size_t i = (start + k) % n;
        if (conc__queue_try_get(qs[i], item))
            return i;
        if (!atomic_load_explicit(&qs[i]->shutdown, memory_order_acquire))
            shut = false;
    }
    /* A queue shut down with items left could have received them before
     * the flag was read: look once more before calling it over. */
    if (shut) {
        for (size_t i = 0; i < n; i++)
            if (conc__queue_try_get(qs[i], item))
                return i;
    }
    *all_shut = shut;
    return n;
}

/* Take the nodes [0, count) off their lists; notified[i] says whether a
 * waker took node i (its wakeup is ours to use or pass on). */
static void unregister(conc_queue_t *const *qs, conc__waiter_t *nodes, size_t count, bool *notified)
{
    for (size_t i = 0; i < count; i++) {
        conc_queue_t *q = qs[i];
        conc__waitq_lock(&q->getq);
        if (nodes[i].queued) {
            conc__waitq_remove(&q->getq, &nodes[i]);
            atomic_fetch_sub_explicit(&q->gsleep, 1, memory_order_seq_cst);
            notified[i] = false;
        } else {
            notified[i] = true;
        }
        conc__waitq_unlock(&q->getq);
        if (notified[i])
            conc__node_settle(&nodes[i]);
    }
}

/* One scan: 0 with an item (and *got set), CONC_ESHUTDOWN when every queue
 * is shut down and empty, 1 when there is nothing yet. */
static int try_all(conc_queue_t *const *qs, size_t n, size_t start, void **item, size_t *got)
{
    bool all_shut = false;
    *got = scan(qs, n, start, item, &all_shut);
    if (*got < n)
        return 0;
    return all_shut ? CONC_ESHUTDOWN : 1;
}

static void pass_on(conc_queue_t *const *qs, size_t n, const bool *notified, size_t used)
{
    for (size_t i = 0; i < n; i++)
        if (notified[i] && i != used && atomic_load_explicit(&qs[i]->gsleep, memory_order_seq_cst) &&
            conc__queue_has_items(qs[i]))
            conc__queue_wake_one(&qs[i]->getq, &qs[i]->gsleep);
}

int conc_queue_select(conc_queue_t *const *qs, size_t n, size_t *index, void **item, double timeout)
{
    if (!qs || n == 0 || !index || !item)
        return CONC_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!qs[i])
            return CONC_EINVAL;
    int64_t deadline;
    if (conc__deadline(timeout, &deadline))
        return CONC_EINVAL;

    size_t start = conc__select_next % n;
    size_t got;
    int rc = try_all(qs, n, start, item, &got);
    if (rc == 0)
        goto found;
    if (rc < 0)
        return rc;
    if (timeout == 0)
        return CONC_EEMPTY;

    {
        /* Spin briefly before registering anywhere. */
        conc__spinner_t sp;
        conc__spin_begin(&sp, deadline);
        bool ok = false;
        while (conc__spin_more(&sp)) {
            for (size_t k = 0; k < n && !ok; k++)
                ok = conc__queue_has_items(qs[(start + k) % n]);
            if (ok)
                break;
        }
        conc__spin_end(&sp, ok);
    }

    conc__waiter_t stack_nodes[STACK_NODES];
    bool stack_notified[STACK_NODES];
    conc__waiter_t *nodes = stack_nodes;
    bool *notified = stack_notified;
    if (n > STACK_NODES) {
        nodes = malloc(n * sizeof *nodes);
        notified = malloc(n * sizeof *notified);
        if (!nodes || !notified) {
            free(nodes);
            free(notified);
            return CONC_ENOMEM;
        }
    }
    for (;;) {
        if ((rc = try_all(qs, n, start, item, &got)) <= 0)
            break;
        if (deadline != CONC__NO_DEADLINE && conc__now_ns() >= deadline) {
            rc = CONC_EEMPTY;
            break;
        }
        conc__waiter_t g;
        conc__waiter_init(&g);
        g.spun = 1;
        g.obj = qs;
        g.kind = CONC__WAIT_SELECT;
        size_t reg = 0, nshut = 0;
        bool ready = false;
        for (; reg < n; reg++) {
            conc_queue_t *q = qs[reg];
            conc__waiter_init(&nodes[reg]);
            nodes[reg].group = &g;
            conc__waitq_lock(&q->getq);
            atomic_fetch_add_explicit(&q->gsleep, 1, memory_order_seq_cst);
            if (conc__queue_light_publish(q, true))
                conc__fence_heavy(); /* segq puts, ring owners publish without an RMW */
            /* A queue that is shut down (and so stays empty once drained)
             * is not a reason to stay awake, unless all of them are. */
            nshut += atomic_load_explicit(&q->shutdown, memory_order_seq_cst) != 0;
            if (conc__queue_has_items(q) || nshut == n) {
                atomic_fetch_sub_explicit(&q->gsleep, 1, memory_order_seq_cst);
                conc__waitq_unlock(&q->getq);
                ready = true;
                break;
            }
            conc__waitq_push(&q->getq, &nodes[reg]);
            conc__waitq_unlock(&q->getq);
        }
        int prc = ready ? 0 : conc__park(&g, deadline);
        bool intr = conc__park_interrupted(prc);
        unregister(qs, nodes, reg, notified);
        rc = try_all(qs, n, start, item, &got);
        pass_on(qs, reg, notified, got);
        if (rc <= 0)
            break;
        if (intr) {
            rc = prc; /* a kill or a timeout scope */
            break;
        }
    }
    if (nodes != stack_nodes) {
        free(nodes);
        free(notified);
    }
    if (rc)
        return rc;
found:
    conc__select_next = got + 1;
    *index = got;
    return 0;
}
