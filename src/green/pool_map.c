/*
 * pool_map.c — the mapping half of gevent.pool.Pool: apply, apply_async,
 * map, imap and imap_unordered.
 *
 * apply runs fn in a pool member and waits for it — or, called from a
 * member of the same pool, runs fn right there (gevent does the same: a
 * member waiting for a slot of its own full pool would deadlock).
 * apply_async spawns at once when there is room; when the pool is full it
 * returns a helper green thread, outside the pool, that waits for the slot
 * and passes the member's outcome on, so the caller never blocks.
 *
 * imap: a feeder green thread (outside the pool, on the caller's hub)
 * spawns the items in order, each waiting for a slot as Pool.spawn does,
 * and for room when maxsize results are already waiting unconsumed. A
 * link on each member records its index in completion order; next hands
 * them out in input order (imap) or completion order (imap_unordered).
 * All shared state sits under one lock; `changed` wakes the consumer.
 */
#include <stdlib.h>
#include <string.h>

#include "green/internal.h"

/* ----------------------------------------------------------- apply */

int conc_green_pool_apply(conc_green_pool_t *p, void *(*fn)(void *), void *arg, void **result)
{
    if (!p || !fn)
        return CONC_EINVAL;
    conc_green_t *me = conc_green_current();
    if (me && me->pool == p) { /* _apply_immediately */
        conc__ctx_t *c = conc__ctx();
        int before = c->fail_code;
        c->fail_code = 0;
        void *r = fn(arg);
        int failed = c->fail_code;
        if (!failed)
            c->fail_code = before;
        if (failed)
            return CONC_EFAILED; /* its code and message are the caller's failure now */
        if (result)
            *result = r;
        return 0;
    }
    conc_green_t *g;
    int rc = conc_green_pool_spawn(p, &g, fn, arg, CONC_FOREVER);
    if (rc)
        return rc;
    rc = conc_green_get(g, CONC_FOREVER, result);
    if (rc == CONC_EFAILED) { /* pass the member's failure on, as get re-raises */
        const char *msg = NULL;
        int code = conc_green_exception(g, &msg);
        conc_fail(code, "%s", msg ? msg : "");
    } else if (rc != 0) {
        conc_green_kill(g, false, 0); /* we were interrupted: it goes too */
    }
    conc_green_free(g);
    return rc;
}

typedef struct {
    conc_green_pool_t *p;
    void *(*fn)(void *);
    void *arg;
} later_t;

static void *apply_later(void *arg)
{
    later_t l = *(later_t *)arg;
    free(arg);
    void *r = NULL;
    int rc = conc_green_pool_apply(l.p, l.fn, l.arg, &r);
    if (rc && rc != CONC_EFAILED)
        conc_fail(rc, "apply_async: %s", conc_strerror(rc));
    return r;
}

typedef struct {
    void (*cb)(void *result, void *arg);
    void *arg;
} async_cb_t;

static void async_done(conc_green_t *g, void *arg)
{
    async_cb_t c = *(async_cb_t *)arg;
    free(arg);
    if (conc_green_successful(g) && !conc_green_killed(g))
        c.cb(conc_green_value(g), c.arg);
}

int conc_green_pool_apply_async(conc_green_pool_t *p, conc_green_t **out, void *(*fn)(void *), void *arg,
                                void (*callback)(void *result, void *arg), void *cb_arg)
{
    if (!p || !fn)
        return CONC_EINVAL;
    async_cb_t *c = NULL;
    if (callback) {
        c = malloc(sizeof *c);
        if (!c)
            return CONC_ENOMEM;
        c->cb = callback;
        c->arg = cb_arg;
    }
    conc_green_t *g;
    int rc;
    if (!conc_green_pool_full(p)) {
        rc = conc_green_pool_spawn(p, &g, fn, arg, 0);
    } else {
        later_t *l = malloc(sizeof *l);
        if (!l) {
            free(c);
            return CONC_ENOMEM;
        }
        *l = (later_t){p, fn, arg};
        rc = conc_go(&g, apply_later, l);
        if (rc)
            free(l);
    }
    if (rc) {
        free(c);
        return rc;
    }
    if (c && (rc = conc_green_link(g, async_done, c)) != 0) {
        free(c);
        conc_green_kill(g, false, 0);
        conc_green_free(g);
        return rc;
    }
    if (out)
        *out = g;
    else
        conc_green_free(g);
    return 0;
}

/* ------------------------------------------------------------- map */

int conc_green_pool_map(conc_green_pool_t *p, void *(*fn)(void *), void *const *args, size_t n, void **results,
                        size_t *failed_index)
{
    if (!p || !fn || (n && (!args || !results)))
        return CONC_EINVAL;
    conc_green_imap_t *it;
    int rc = conc_green_pool_imap(&it, p, fn, args, n, NULL);
    if (rc)
        return rc;
    int first = 0;
    for (;;) {
        void *r = NULL;
        size_t idx = 0;
        rc = conc_green_imap_next(it, &r, &idx);
        if (rc == CONC_EEOF) {
            rc = 0;
            break;
        }
        if (rc == CONC_EFAILED) {
            if (!first) { /* the first in input order (imap is ordered) */
                first = rc;
                if (failed_index)
                    *failed_index = idx;
                const char *msg = NULL;
                int code = conc_green_imap_exception(it, idx, &msg);
                conc_fail(code, "%s", msg ? msg : "");
            }
            continue;
        }
        if (rc)
            break; /* interrupted: the rest is killed by free */
        results[idx] = r;
    }
    conc_green_imap_free(it);
    return rc ? rc : first;
}

/* ------------------------------------------------------------ imap */

struct conc_green_imap {
    conc_green_pool_t *p;
    void *(*fn)(void *);
    void *const *args;
    size_t n;
    bool ordered;
    conc_lock_t lock;
    conc_event_t changed;
    conc_semaphore_t room;    /* maxsize: results waiting unconsumed */
    bool bounded;
    conc_green_t **gs;        /* spawned members (handles), by index */
    struct imap_slot { struct conc_green_imap *it; size_t i; } *slots; /* link args */
    unsigned char *done;      /* by index */
    size_t *order;            /* completion order */
    size_t ndone;             /* entries in order */
    size_t next;              /* imap: next index; unordered: next in order[] */
    size_t spawned;
    int feed_rc;              /* the feeder stopped on this error (0: ok) */
    conc_green_t *feeder;
};

static void imap_link(conc_green_t *g, void *arg)
{
    (void)g;
    struct imap_slot *sl = arg;
    conc_green_imap_t *it = sl->it;
    size_t i = sl->i;
    conc_lock_acquire(&it->lock, true, CONC_FOREVER);
    if (!it->done[i]) {
        it->done[i] = 1;
        it->order[it->ndone++] = i;
    }
    conc_lock_release(&it->lock);
    conc_event_set(&it->changed);
}

static void *imap_feed(void *arg)
{
    conc_green_imap_t *it = arg;
    for (size_t i = 0; i < it->n; i++) {
        int rc = it->bounded ? conc_semaphore_acquire(&it->room, true, CONC_FOREVER) : 0;
        conc_green_t *g = NULL;
        if (rc == 0)
            rc = conc_green_pool_spawn(it->p, &g, it->fn, it->args[i], CONC_FOREVER);
        conc_lock_acquire(&it->lock, true, CONC_FOREVER);
        if (rc) {
            it->feed_rc = rc;
        } else {
            it->gs[i] = g;
            it->spawned = i + 1;
        }
        conc_lock_release(&it->lock);
        if (rc) {
            conc_event_set(&it->changed);
            return NULL;
        }
        it->slots[i] = (struct imap_slot){it, i};
        if (conc_green_link(g, imap_link, &it->slots[i]) != 0) {
            /* no memory for a link: wait for it here, then record it */
            while (conc_green_join(g, CONC_FOREVER) == CONC_EKILLED) {
            }
            imap_link(g, &it->slots[i]);
        }
    }
    return NULL;
}

int conc_green_pool_imap(conc_green_imap_t **out, conc_green_pool_t *p, void *(*fn)(void *), void *const *args,
                         size_t n, const conc_green_imap_opts_t *opts)
{
    if (!out || !p || !fn || (n && !args))
        return CONC_EINVAL;
    conc_green_imap_t *it = calloc(1, sizeof *it);
    size_t m = n ? n : 1;
    if (it) {
        it->gs = calloc(m, sizeof *it->gs);
        it->done = calloc(m, 1);
        it->order = calloc(m, sizeof *it->order);
        it->slots = calloc(m, sizeof *it->slots);
    }
    if (!it || !it->gs || !it->done || !it->order || !it->slots) {
        if (it) {
            free(it->slots);
            free(it->gs);
            free(it->done);
            free(it->order);
        }
        free(it);
        return CONC_ENOMEM;
    }
    it->p = p;
    it->fn = fn;
    it->args = args;
    it->n = n;
    it->ordered = !(opts && opts->unordered);
    conc_lock_init(&it->lock);
    conc_event_init(&it->changed);
    if (opts && opts->maxsize) {
        if (opts->maxsize > CONC_SEMAPHORE_MAX) {
            free(it->slots), free(it->gs), free(it->done), free(it->order), free(it);
            return CONC_EINVAL;
        }
        it->bounded = true;
        conc_semaphore_init(&it->room, (long)opts->maxsize);
    }
    int rc = n ? conc_go(&it->feeder, imap_feed, it) : 0;
    if (rc) {
        free(it->slots), free(it->gs), free(it->done), free(it->order), free(it);
        return rc;
    }
    *out = it;
    return 0;
}

int conc_green_imap_next(conc_green_imap_t *it, void **result, size_t *index)
{
    if (!it)
        return CONC_EINVAL;
    for (;;) {
        conc_lock_acquire(&it->lock, true, CONC_FOREVER);
        if (it->next == it->n) {
            conc_lock_release(&it->lock);
            return CONC_EEOF;
        }
        size_t idx = SIZE_MAX;
        if (it->ordered) {
            if (it->done[it->next])
                idx = it->next++;
        } else if (it->next < it->ndone) {
            idx = it->order[it->next++];
        }
        int feed_rc = it->feed_rc;
        size_t spawned = it->spawned, ndone = it->ndone;
        if (idx == SIZE_MAX)
            conc_event_clear(&it->changed);
        conc_lock_release(&it->lock);
        if (idx != SIZE_MAX) {
            if (it->bounded)
                conc_semaphore_release(&it->room, 1);
            if (index)
                *index = idx;
            void *r = NULL;
            int rc = conc_green_get(it->gs[idx], 0, &r);
            if (rc == 0 && result)
                *result = r;
            return rc;
        }
        if (feed_rc && ndone == spawned)
            return feed_rc; /* the feeder stopped: nothing more will come */
        int rc = conc_event_wait(&it->changed, CONC_FOREVER);
        if (rc)
            return rc;
    }
}

int conc_green_imap_exception(conc_green_imap_t *it, size_t index, const char **msg)
{
    if (msg)
        *msg = NULL;
    if (!it || index >= it->n || !it->gs[index])
        return 0;
    return conc_green_exception(it->gs[index], msg);
}

/* Join whatever interrupts the wait (a kill, a scope: each once). */
static void join_hard(conc_green_t *g)
{
    for (int k = 0; k < 16; k++) {
        int rc = conc_green_join(g, CONC_FOREVER);
        if (rc == 0 || rc == CONC_ELOOPEXIT || rc == CONC_EPERM)
            return;
    }
}

int conc_green_imap_free(conc_green_imap_t *it)
{
    if (!it)
        return CONC_EINVAL;
    /* Stop the feeder, then the members still running, and wait for all:
     * their links point here. Waits are not cut short meanwhile. */
    if (it->feeder) {
        conc_green_kill(it->feeder, false, 0);
        join_hard(it->feeder);
        conc_green_free(it->feeder);
    }
    for (size_t i = 0; i < it->spawned; i++) {
        if (!conc_green_dead(it->gs[i]))
            conc_green_kill(it->gs[i], false, 0);
    }
    for (size_t i = 0; i < it->spawned; i++) {
        join_hard(it->gs[i]);
        conc_green_free(it->gs[i]);
    }
    free(it->slots);
    free(it->gs);
    free(it->done);
    free(it->order);
    free(it);
    return 0;
}
