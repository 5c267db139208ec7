/*
 * wait.c — gevent.wait / iwait over mixed waitables (green threads,
 * Events, futures, queues, fds, processes) and gevent.joinall with count
 * and raise_error.
 *
 * Every kind already has a colorless blocking wait of its own, so one
 * helper green thread per object that is not ready yet runs that wait
 * (join, Event.wait, Future.exception, Queue.peek, wait_read/wait_write,
 * Process.join) on the caller's hub and, when it returns ready, appends
 * the object's index to the ready list and sets `changed`. The caller
 * parks on `changed` (its OS thread's hub runs the helpers meanwhile —
 * an OS thread's own context is one more context of its hub), until
 * `count` are ready, the timeout passes, or it is interrupted. Then the
 * helpers still waiting are killed and joined before returning, so all
 * shared state lives on the caller's stack and is touched only on the
 * caller's OS thread. Objects already ready are found by a first pass
 * that spawns nothing (so a poll, timeout 0, never switches).
 */
#include <stdlib.h>

#include "conc/futures.h"
#include "conc/io.h"
#include "conc/process.h"
#include "conc/queue.h"
#include "core/time.h"
#include "green/internal.h"

typedef struct {
    const conc_waitable_t *objs;
    size_t n, want;
    size_t *ready;
    size_t nready;
    bool raise_error;  /* joinall: stop at the first failed green thread */
    size_t failed;     /* its index, or SIZE_MAX */
    int error;         /* an object's wait failed (a closed fd...): returned */
    conc_event_t changed;
} waitset_t;

typedef struct {
    waitset_t *w;
    size_t i;
} helper_t;

/* Ready now? (no blocking; a process is reaped if it ended) */
static bool poll_one(const conc_waitable_t *o)
{
    switch (o->kind) {
    case CONC_WAITABLE_GREEN:
        return conc_green_dead(o->obj);
    case CONC_WAITABLE_EVENT:
        return conc_event_is_set(o->obj);
    case CONC_WAITABLE_FUTURE:
        return conc_future_done(o->obj);
    case CONC_WAITABLE_QUEUE: {
        void *x;
        int rc = conc_queue_peek(o->obj, &x, false, 0);
        return rc == 0 || rc == CONC_ESHUTDOWN;
    }
    case CONC_WAITABLE_FD:
        return (o->events & CONC_WAITABLE_WRITE ? conc_wait_write(o->fd, -1) : conc_wait_read(o->fd, -1)) == 0;
    case CONC_WAITABLE_PROCESS:
        return conc_process_join(o->obj, -1) == 0;
    }
    return false;
}

static int block_one(const conc_waitable_t *o)
{
    switch (o->kind) {
    case CONC_WAITABLE_GREEN:
        return conc_green_join(o->obj, CONC_FOREVER);
    case CONC_WAITABLE_EVENT:
        return conc_event_wait(o->obj, CONC_FOREVER);
    case CONC_WAITABLE_FUTURE: {
        int rc = conc_future_exception(o->obj, CONC_FOREVER, NULL, NULL);
        return rc == CONC_ECANCELLED ? 0 : rc; /* cancelled is done */
    }
    case CONC_WAITABLE_QUEUE: {
        void *x;
        int rc = conc_queue_peek(o->obj, &x, true, CONC_FOREVER);
        return rc == CONC_ESHUTDOWN ? 0 : rc; /* a get would not block either */
    }
    case CONC_WAITABLE_FD:
        return o->events & CONC_WAITABLE_WRITE ? conc_wait_write(o->fd, CONC_FOREVER)
                                               : conc_wait_read(o->fd, CONC_FOREVER);
    case CONC_WAITABLE_PROCESS:
        return conc_process_join(o->obj, CONC_FOREVER);
    }
    return CONC_EINVAL;
}

static void mark(waitset_t *w, size_t i)
{
    if (w->nready < w->want)
        w->ready[w->nready++] = i;
    const conc_waitable_t *o = &w->objs[i];
    if (w->raise_error && w->failed == SIZE_MAX && o->kind == CONC_WAITABLE_GREEN &&
        !conc_green_successful(o->obj))
        w->failed = i;
    conc_event_set(&w->changed);
}

static void *helper(void *arg)
{
    helper_t *h = arg;
    int rc = block_one(&h->w->objs[h->i]);
    if (rc == 0) {
        mark(h->w, h->i);
    } else if (rc != CONC_EKILLED && rc != CONC_ELOOPEXIT && !h->w->error) {
        /* it can never become ready (a closed fd): the wait says why */
        h->w->error = rc;
        conc_event_set(&h->w->changed);
    }
    return NULL;
}

static bool done(const waitset_t *w)
{
    return w->nready >= w->want || w->failed != SIZE_MAX || w->error;
}

static bool valid(const conc_waitable_t *o)
{
    if (o->kind == CONC_WAITABLE_FD)
        return o->fd >= 0;
    return o->kind >= CONC_WAITABLE_GREEN && o->kind <= CONC_WAITABLE_PROCESS;
}

static void join_hard(conc_green_t *g)
{
    for (int k = 0; k < 16; k++) {
        int rc = conc_green_join(g, CONC_FOREVER);
        if (rc == 0 || rc == CONC_ELOOPEXIT || rc == CONC_EPERM)
            return;
    }
}

static int wait_set(waitset_t *w, double timeout)
{
    int64_t dl;
    if (conc__deadline(timeout, &dl))
        return CONC_EINVAL;
    for (size_t i = 0; i < w->n; i++)
        if (w->objs[i].obj || w->objs[i].kind == CONC_WAITABLE_FD)
            if (!valid(&w->objs[i]))
                return CONC_EINVAL;
    conc_event_init(&w->changed);
    /* first pass: the ones ready now, in order, spawning nothing */
    bool *pending = calloc(w->n ? w->n : 1, sizeof *pending);
    if (!pending)
        return CONC_ENOMEM;
    size_t npending = 0;
    for (size_t i = 0; i < w->n && !done(w); i++) {
        const conc_waitable_t *o = &w->objs[i];
        if (!o->obj && o->kind != CONC_WAITABLE_FD)
            continue; /* NULL entries are skipped */
        if (poll_one(o))
            mark(w, i);
        else
            pending[i] = true, npending++;
    }
    int rc = 0;
    if (done(w) || npending == 0 || (dl != CONC__NO_DEADLINE && dl <= conc__now_ns())) {
        free(pending);
        return 0;
    }
    helper_t *hs = calloc(w->n, sizeof *hs);
    conc_green_t **gs = calloc(w->n, sizeof *gs);
    if (!hs || !gs) {
        free(hs), free(gs), free(pending);
        return CONC_ENOMEM;
    }
    for (size_t i = 0; i < w->n && rc == 0; i++) {
        if (!pending[i])
            continue;
        hs[i] = (helper_t){w, i};
        rc = conc_go(&gs[i], helper, &hs[i]);
    }
    while (rc == 0 && !done(w)) {
        conc_event_clear(&w->changed);
        if (done(w))
            break;
        double left = CONC_FOREVER;
        if (dl != CONC__NO_DEADLINE) {
            int64_t ns = dl - conc__now_ns();
            if (ns <= 0)
                break;
            left = (double)ns / 1e9;
        }
        int wrc = conc_event_wait(&w->changed, left);
        if (wrc == CONC_ETIMEDOUT && !conc__park_interrupted(wrc))
            break; /* the own timeout: return what is ready */
        if (wrc)
            rc = wrc; /* killed, a scope, LoopExit */
    }
    for (size_t i = 0; i < w->n; i++)
        if (gs[i] && !conc_green_dead(gs[i]))
            conc_green_kill(gs[i], false, 0);
    for (size_t i = 0; i < w->n; i++)
        if (gs[i]) {
            join_hard(gs[i]);
            conc_green_free(gs[i]);
        }
    free(hs), free(gs), free(pending);
    return rc ? rc : w->error;
}

int conc_green_wait(const conc_waitable_t *objs, size_t n, size_t count, double timeout, size_t *ready,
                    size_t *nready)
{
    if (nready)
        *nready = 0;
    if ((n && (!objs || !ready)) || !nready)
        return CONC_EINVAL;
    waitset_t w = {.objs = objs, .n = n, .want = count && count < n ? count : n, .ready = ready,
                   .failed = SIZE_MAX};
    int rc = wait_set(&w, timeout);
    *nready = w.nready;
    return rc;
}

int conc_green_joinall_ex(conc_green_t *const *gs, size_t n, double timeout, size_t count, bool raise_error,
                          size_t *done_idx, size_t *ndone)
{
    if (ndone)
        *ndone = 0;
    if ((n && (!gs || !done_idx)) || !ndone)
        return CONC_EINVAL;
    conc_waitable_t *objs = malloc((n ? n : 1) * sizeof *objs);
    if (!objs)
        return CONC_ENOMEM;
    size_t live = 0;
    for (size_t i = 0; i < n; i++) {
        objs[i] = (conc_waitable_t){.kind = CONC_WAITABLE_GREEN, .obj = gs[i]};
        live += gs[i] != NULL;
    }
    waitset_t w = {.objs = objs, .n = n, .want = count && count < live ? count : live, .ready = done_idx,
                   .raise_error = raise_error, .failed = SIZE_MAX};
    int rc = wait_set(&w, timeout);
    if (rc == 0 && w.failed != SIZE_MAX) {
        /* gevent raises the failure: hand it over with its index last */
        size_t k = 0;
        while (k < w.nready && done_idx[k] != w.failed)
            k++;
        if (k == w.nready && w.nready < n)
            done_idx[w.nready++] = w.failed;
        rc = CONC_EFAILED;
    }
    *ndone = w.nready;
    free(objs);
    return rc;
}
