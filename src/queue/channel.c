/*
 * channel.c — gevent.queue.Channel: a queue of size 0. put waits until a
 * getter takes the item from its hands; get waits until a putter offers
 * one (Go's unbuffered channel).
 *
 * One guarded pair of wait lists: `getters` (each node waits for an item
 * to be written into it) and `putters` (each node holds its item). A put
 * that finds a getter writes the item into the getter's node, takes it
 * off the list under the guard and unparks it after dropping the guard;
 * otherwise it queues its own node and parks. get mirrors it. A node is
 * handed off exactly once, under the guard: a wait that times out (or is
 * cut by a kill or a scope) takes the guard and, if its node is still
 * queued, leaves — the exchange did not happen; if a partner already took
 * it off, the exchange did happen, so the call succeeds (the interruption
 * is kept for the next wait: conc__park_rearm). Both sides always agree.
 */
#include <stdlib.h>

#include "conc/queue.h"
#include "core/park.h"
#include "core/time.h"

typedef struct {
    conc__waiter_t w; /* first: the lists hold &node->w */
    void *item;
} node_t;

struct conc_channel {
    conc__waitq_t guard; /* its lock guards both lists */
    conc__waitq_t getters, putters;
};

int conc_channel_new(conc_channel_t **out)
{
    if (!out)
        return CONC_EINVAL;
    conc_channel_t *c = calloc(1, sizeof *c);
    if (!c)
        return CONC_ENOMEM;
    *out = c;
    return 0;
}

int conc_channel_free(conc_channel_t *c)
{
    if (!c)
        return CONC_EINVAL;
    conc__waitq_lock(&c->guard);
    bool busy = !conc__waitq_empty(&c->getters) || !conc__waitq_empty(&c->putters);
    conc__waitq_unlock(&c->guard);
    if (busy)
        return CONC_EPERM;
    free(c);
    return 0;
}

/* Wait on `mine` (on list `q`, guard held on entry and released here)
 * until a partner takes it. 0: exchanged; else the wait's own outcome. */
static int wait_partner(conc_channel_t *c, conc__waitq_t *q, node_t *n, int64_t dl)
{
    conc__waitq_push(q, &n->w);
    conc__waitq_unlock(&c->guard);
    int rc = conc__park(&n->w, dl);
    if (rc == 0)
        return 0;
    conc__waitq_lock(&c->guard);
    if (n->w.queued) {
        conc__waitq_remove(q, &n->w);
        conc__waitq_unlock(&c->guard);
        return rc;
    }
    conc__waitq_unlock(&c->guard);
    conc__park_settle(&n->w); /* a partner took it: its unpark is imminent */
    conc__park_rearm(&n->w);
    return 0;
}

static int deadline_of(bool block, double timeout, int64_t *dl)
{
    *dl = CONC__NO_DEADLINE;
    if (!block)
        return 0;
    return timeout != CONC_FOREVER && conc__deadline_strict(timeout, dl) ? CONC_EINVAL : 0;
}

int conc_channel_put(conc_channel_t *c, void *item, bool block, double timeout)
{
    int64_t dl;
    if (!c || deadline_of(block, timeout, &dl))
        return CONC_EINVAL;
    conc__waitq_lock(&c->guard);
    conc__waiter_t *g = conc__waitq_pop(&c->getters);
    if (g) {
        ((node_t *)g)->item = item;
        conc__waitq_unlock(&c->guard);
        conc__unpark(g);
        return 0;
    }
    if (!block || (dl != CONC__NO_DEADLINE && dl <= conc__now_ns())) {
        conc__waitq_unlock(&c->guard);
        return CONC_EFULL;
    }
    node_t n;
    conc__waiter_init(&n.w);
    n.w.obj = c;
    n.w.kind = CONC__WAIT_QUEUE_PUT;
    n.item = item;
    int rc = wait_partner(c, &c->putters, &n, dl);
    if (rc == CONC_ETIMEDOUT && !conc__park_interrupted(rc))
        return CONC_EFULL; /* no getter in time: queue.Full */
    return rc;
}

int conc_channel_get(conc_channel_t *c, void **item, bool block, double timeout)
{
    int64_t dl;
    if (!c || !item || deadline_of(block, timeout, &dl))
        return CONC_EINVAL;
    conc__waitq_lock(&c->guard);
    conc__waiter_t *p = conc__waitq_pop(&c->putters);
    if (p) {
        *item = ((node_t *)p)->item;
        conc__waitq_unlock(&c->guard);
        conc__unpark(p);
        return 0;
    }
    if (!block || (dl != CONC__NO_DEADLINE && dl <= conc__now_ns())) {
        conc__waitq_unlock(&c->guard);
        return CONC_EEMPTY;
    }
    node_t n;
    conc__waiter_init(&n.w);
    n.w.obj = c;
    n.w.kind = CONC__WAIT_QUEUE_GET;
    n.item = NULL;
    int rc = wait_partner(c, &c->getters, &n, dl);
    if (rc == 0) {
        *item = n.item;
        return 0;
    }
    if (rc == CONC_ETIMEDOUT && !conc__park_interrupted(rc))
        return CONC_EEMPTY;
    return rc;
}

long conc_channel_balance(const conc_channel_t *c)
{
    if (!c)
        return 0;
    conc_channel_t *m = (conc_channel_t *)c;
    long b = 0;
    conc__waitq_lock(&m->guard);
    for (conc__waiter_t *w = m->putters.head; w; w = w->next)
        b++;
    for (conc__waiter_t *w = m->getters.head; w; w = w->next)
        b--;
    conc__waitq_unlock(&m->guard);
    return b;
}
