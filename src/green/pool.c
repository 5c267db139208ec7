/*
 * pool.c — gevent.pool.Pool: at most `size` green threads at once.
 *
 * A counting semaphore holds the free slots (spawn / add take one, a
 * member's end or discard gives it back), so a spawn blocks like any conc
 * wait — parking only the calling context. Members are kept on a list
 * (for kill) under a small guard; `empty` is an Event set whenever no
 * member runs (join). Pool(0) is allowed, as in gevent: nothing can ever
 * join it (spawn waits forever or until its timeout); an unbounded pool
 * (size CONC_GREEN_POOL_UNBOUNDED, gevent's Pool(None)) has no semaphore.
 * apply / map / imap live in pool_map.c.
 */
#include <stdlib.h>

#include "green/internal.h"
#include "trace/obs.h"

struct conc_green_pool {
    conc_semaphore_t slots;
    size_t size;
    bool unbounded;
    size_t running;
    conc__waitq_t guard; /* guards running and the member list */
    conc_green_t *members;
    conc_event_t empty;
};

int conc_green_pool_new(conc_green_pool_t **out, size_t size)
{
    bool unbounded = size == CONC_GREEN_POOL_UNBOUNDED;
    if (!out || (!unbounded && size > CONC_SEMAPHORE_MAX))
        return CONC_EINVAL;
    conc_green_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return CONC_ENOMEM;
    conc_semaphore_init(&p->slots, unbounded ? 0 : (long)size);
    conc_event_init(&p->empty);
    conc_event_set(&p->empty);
    p->size = size;
    p->unbounded = unbounded;
    *out = p;
    return 0;
}

static void slot_give(conc_green_pool_t *p)
{
    if (!p->unbounded)
        conc_semaphore_release(&p->slots, 1);
}

/* Take a slot: 0, CONC_EFULL (no room: not blocking, or the own timeout
 * passed — gevent's PoolFull either way), or an interruption. */
static int slot_take(conc_green_pool_t *p, bool blocking, double timeout)
{
    if (p->unbounded)
        return 0;
    int rc = conc_semaphore_acquire(&p->slots, blocking, blocking ? timeout : CONC_FOREVER);
    if (rc == CONC_ETIMEDOUT && !conc__park_interrupted(rc))
        return CONC_EFULL;
    return rc;
}

static void member_join(conc_green_pool_t *p, conc_green_t *g)
{
    conc__waitq_lock(&p->guard);
    g->pool = p;
    g->pool_prev = NULL;
    g->pool_next = p->members;
    if (p->members)
        p->members->pool_prev = g;
    p->members = g;
    if (p->running++ == 0)
        conc_event_clear(&p->empty);
    conc__waitq_unlock(&p->guard);
}

static void member_leave(conc_green_pool_t *p, conc_green_t *g)
{
    conc__waitq_lock(&p->guard);
    if (g->pool_prev)
        g->pool_prev->pool_next = g->pool_next;
    else
        p->members = g->pool_next;
    if (g->pool_next)
        g->pool_next->pool_prev = g->pool_prev;
    g->pool_next = g->pool_prev = NULL;
    bool last = --p->running == 0;
    if (last)
        conc_event_set(&p->empty);
    conc__waitq_unlock(&p->guard);
    slot_give(p);
}

/* g ended (called from its end, before its record can go away). */
void conc__green_pool_member_done(conc_green_t *g)
{
    member_leave(g->pool, g);
}

int conc_green_pool_spawn(conc_green_pool_t *p, conc_green_t **out, void *(*fn)(void *), void *arg,
                          double timeout)
{
    if (!p || !fn)
        return CONC_EINVAL;
    int rc = slot_take(p, true, timeout);
    if (rc)
        return rc;
    if (conc__obs_on(CONC__OBS_TRACE))
        conc__trace_task(CONC__TASK_SUBMIT, fn, arg);
    conc_green_t *g;
    rc = conc_go(&g, fn, arg);
    if (rc) {
        slot_give(p);
        return rc;
    }
    member_join(p, g); /* g cannot run before we block or yield */
    if (out)
        *out = g;
    else
        conc_green_free(g);
    return 0;
}

int conc_green_pool_add(conc_green_pool_t *p, conc_green_t *g, bool blocking, double timeout)
{
    if (!p || !g)
        return CONC_EINVAL;
    if (g->gs.hub != conc__tl_hub)
        return CONC_EPERM;
    if (g->pool == p)
        return 0; /* tracked already */
    if (g->pool)
        return CONC_EPERM;
    if (conc_green_dead(g))
        return 0; /* Group.add: an ended one is not tracked */
    /* the own reference keeps g while we wait for a slot */
    atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    int rc = slot_take(p, blocking, timeout);
    if (rc == 0) {
        if (conc_green_dead(g))
            slot_give(p); /* it ended while we waited */
        else if (g->pool)
            slot_give(p), rc = g->pool == p ? 0 : CONC_EPERM; /* added by another meanwhile */
        else
            member_join(p, g);
    }
    conc__green_unref(g);
    return rc;
}

int conc_green_pool_start(conc_green_pool_t *p, conc_green_t *g, bool blocking, double timeout)
{
    if (!p || !g)
        return CONC_EINVAL;
    if (!g->unscheduled || g->gs.hub != conc__tl_hub)
        return CONC_EPERM;
    int rc = conc_green_pool_add(p, g, blocking, timeout);
    return rc ? rc : conc_green_start(g);
}

int conc_green_pool_discard(conc_green_pool_t *p, conc_green_t *g)
{
    if (!p || !g)
        return CONC_EINVAL;
    if (g->gs.hub != conc__tl_hub)
        return CONC_EPERM;
    if (g->pool != p)
        return 0;
    member_leave(p, g);
    g->pool = NULL;
    return 0;
}

bool conc_green_pool_contains(const conc_green_pool_t *p, const conc_green_t *g)
{
    return p && g && g->pool == p && !conc_green_dead(g);
}

int conc_green_pool_wait_available(conc_green_pool_t *p, double timeout, size_t *free_out)
{
    if (free_out)
        *free_out = 0;
    if (!p)
        return CONC_EINVAL;
    if (!p->unbounded) {
        /* Semaphore.wait: until a slot is free, without taking it */
        int rc = conc_semaphore_acquire(&p->slots, true, timeout);
        if (rc)
            return rc;
        conc_semaphore_release(&p->slots, 1);
    }
    if (free_out)
        *free_out = conc_green_pool_free_count(p);
    return 0;
}

int conc_green_pool_join(conc_green_pool_t *p, double timeout)
{
    if (!p)
        return CONC_EINVAL;
    return conc_event_wait(&p->empty, timeout);
}

int conc_green_pool_kill(conc_green_pool_t *p, bool block, double timeout)
{
    if (!p)
        return CONC_EINVAL;
    /* Take references under the guard, kill outside it (a kill of one
     * that never started ends it at once, which takes the guard). */
    conc__waitq_lock(&p->guard);
    size_t n = p->running, k = 0;
    conc_green_t **gs = n ? malloc(n * sizeof *gs) : NULL;
    if (n && !gs) {
        conc__waitq_unlock(&p->guard);
        return CONC_ENOMEM;
    }
    for (conc_green_t *g = p->members; g && k < n; g = g->pool_next) {
        atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
        gs[k++] = g;
    }
    conc__waitq_unlock(&p->guard);
    for (size_t i = 0; i < k; i++) {
        conc_green_kill(gs[i], false, 0);
        conc__green_unref(gs[i]);
    }
    free(gs);
    return block ? conc_green_pool_join(p, timeout) : 0;
}

size_t conc_green_pool_size(const conc_green_pool_t *p)
{
    if (!p)
        return 0;
    conc__waitq_lock((conc__waitq_t *)&p->guard);
    size_t n = p->running;
    conc__waitq_unlock((conc__waitq_t *)&p->guard);
    return n;
}

size_t conc_green_pool_free_count(const conc_green_pool_t *p)
{
    if (!p)
        return 0;
    if (p->unbounded)
        return 1; /* gevent: Pool(None).free_count() is 1 */
    size_t n = conc_green_pool_size(p);
    return n >= p->size ? 0 : p->size - n;
}

bool conc_green_pool_full(const conc_green_pool_t *p)
{
    return p && conc_green_pool_free_count(p) == 0;
}

int conc_green_pool_free(conc_green_pool_t *p)
{
    if (!p)
        return CONC_EINVAL;
    if (conc_green_pool_size(p) != 0)
        return CONC_EPERM;
    free(p);
    return 0;
}
