/*
 * start.c — gevent's Greenlet(fn) then start() / start_later(), spawn_later
 * and killall.
 *
 * conc_green_new makes a green thread exactly as conc_go does but leaves
 * it off the ready queue (g->unscheduled); start puts it there. A delayed
 * start sets g->start_dl: the green thread is scheduled at once but its
 * first act (conc__green_run) is to park until that deadline — a plain
 * timed park, so a kill during the delay ends it without running fn, the
 * way gevent's kill cancels a start_later timer.
 */
#include <stdlib.h>

#include "core/time.h"
#include "green/internal.h"

int conc__green_make(conc_green_t **out, const conc_green_opts_t *opts, void *(*fn)(void *), void *arg,
                     bool schedule);

int conc_green_new(conc_green_t **out, const conc_green_opts_t *opts, void *(*fn)(void *), void *arg)
{
    if (!out)
        return CONC_EINVAL;
    return conc__green_make(out, opts, fn, arg, false);
}

static int start_at(conc_green_t *g, int64_t dl)
{
    if (!g)
        return CONC_EINVAL;
    if (g->gs.hub != conc__tl_hub)
        return CONC_EPERM; /* its hub's OS thread only */
    if (!g->unscheduled)
        return CONC_EPERM; /* started already (or killed, or made by conc_go) */
    g->unscheduled = false;
    g->start_dl = dl;
    conc__hub_ready(g->gs.hub, &g->gs);
    return 0;
}

int conc_green_start(conc_green_t *g)
{
    return start_at(g, 0);
}

int conc_green_start_later(conc_green_t *g, double seconds)
{
    int64_t dl;
    if (conc__deadline(seconds, &dl) || seconds == CONC_FOREVER)
        return CONC_EINVAL;
    return start_at(g, seconds <= 0 ? 0 : dl);
}

int conc_green_spawn_later(conc_green_t **out, double seconds, void *(*fn)(void *), void *arg)
{
    int64_t dl;
    if (!fn || conc__deadline(seconds, &dl) || seconds == CONC_FOREVER)
        return CONC_EINVAL;
    conc_green_t *g;
    int rc = conc__green_make(&g, NULL, fn, arg, false);
    if (rc)
        return rc;
    start_at(g, seconds <= 0 ? 0 : dl);
    if (out)
        *out = g;
    else
        conc_green_free(g); /* detached: it runs on, freed when it ends */
    return 0;
}

int conc_green_killall(conc_green_t *const *gs, size_t n, bool block, double timeout)
{
    int64_t dl;
    if ((!gs && n) || (block && conc__deadline(timeout, &dl)))
        return CONC_EINVAL;
    conc_green_t *me = conc_green_current();
    for (size_t i = 0; i < n; i++) /* all first: none of them runs meanwhile */
        if (gs[i] && gs[i] != me)
            conc_green_kill(gs[i], false, 0);
    if (!block)
        return 0;
    return conc_green_joinall(gs, n, timeout);
}

typedef struct {
    void (*fn)(void *);
    void *arg;
} callback_t;

static void *run_callback(void *arg)
{
    callback_t c = *(callback_t *)arg;
    free(arg);
    c.fn(c.arg);
    return NULL;
}

int conc_green_run_callback(void (*fn)(void *), void *arg)
{
    if (!fn)
        return CONC_EINVAL;
    callback_t *c = malloc(sizeof *c);
    if (!c)
        return CONC_ENOMEM;
    c->fn = fn;
    c->arg = arg;
    int rc = conc_go(NULL, run_callback, c);
    if (rc)
        free(c);
    return rc;
}
