/*
 * pool.c — gevent.pool.Pool: at most `size` green threads at once.
 *
 * A counting semaphore holds the free slots (spawn takes one, a member's
 * end gives it back), so a spawn blocks like any conc wait — parking only
 * the calling context. Members are kept on a list (for kill) under a small
 * guard; `empty` is an Event set whenever no member runs (join).
 */
#include <stdlib.h>

#include "green/internal.h"
#include "trace/obs.h"

struct conc_green_pool {
    conc_semaphore_t slots;
    size_t size;
    size_t running;
    conc__waitq_t guard; /* guards running and the member list */
    conc_green_t *members;
    conc_event_t empty;
};

int conc_green_pool_new(conc_green_pool_t **out, size_t size)
{
    if (!out || size < 1 || size > CONC_SEMAPHORE_MAX)
        return CONC_EINVAL;
    conc_green_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return CONC_ENOMEM;
    conc_semaphore_init(&p->slots, (long)size);
    conc_event_init(&p->empty);
    conc_event_set(&p->empty);
    p->size = size;
    *out = p;
    return 0;
}

/* g ended (called from its end, before its record can go away). */
void conc__green_pool_member_done(conc_green_t *g)
{
    conc_green_pool_t *p = g->pool;
    conc__waitq_lock(&p->guard);
    if (g->pool_prev)
        g->pool_prev->pool_next = g->pool_next;
    else
        p->members = g->pool_next;
    if (g->pool_next)
        g->pool_next->pool_prev = g->pool_prev;
    bool last = --p->running == 0;
    if (last)
        conc_event_set(&p->empty);
    conc__waitq_unlock(&p->guard);
    conc_semaphore_release(&p->slots, 1);
}

int conc_green_pool_spawn(conc_green_pool_t *p, conc_green_t **out, void *(*fn)(void *), void *arg,
                          double timeout)
{
    if (!p || !fn)
        return CONC_EINVAL;
    int rc = conc_semaphore_acquire(&p->slots, true, timeout);
    if (rc)
        return rc;
    if (conc__obs_on(CONC__OBS_TRACE))
        conc__trace_task(CONC__TASK_SUBMIT, fn, arg);
    conc_green_t *g;
    rc = conc_go(&g, fn, arg);
    if (rc) {
        conc_semaphore_release(&p->slots, 1);
        return rc;
    }
    /* g cannot run before we block or yield: join it up now. */
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
    if (out)
        *out = g;
    else
        conc_green_free(g);
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
    return p ? p->size - conc_green_pool_size(p) : 0;
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
