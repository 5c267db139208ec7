/*
 * links.c — the rest of gevent's link API: link_value, link_exception,
 * unlink, unlink_all, has_links, and Greenlet.value for the callbacks.
 *
 * Links are a stack (newest first) in g->links, pushed with a CAS by
 * conc_green_link from any OS thread and closed for good by the ending
 * green thread (CONC__LINKS_CLOSED, after which a new link runs at once).
 * Removing from the middle cannot be done with one CAS, so an unlink
 * swaps the whole stack for CONC__LINKS_BUSY, edits it privately and
 * stores the result back; while BUSY, a link and the end wait (yield) —
 * only an unlink ever holds it, for a few loads and stores. A link or
 * unlink from another OS thread than g's hub's announces itself first
 * (conc__links_foreign_enter): the end closes the links with plain
 * stores when none is under way (green.c end_green).
 */
#include <sched.h>
#include <stdlib.h>

#include "green/internal.h"

int conc__green_link_kind(conc_green_t *g, void (*cb)(conc_green_t *g, void *arg), void *arg, int kind);

int conc_green_link_value(conc_green_t *g, void (*cb)(conc_green_t *g, void *arg), void *arg)
{
    return conc__green_link_kind(g, cb, arg, CONC__LINK_VALUE);
}

int conc_green_link_exception(conc_green_t *g, void (*cb)(conc_green_t *g, void *arg), void *arg)
{
    return conc__green_link_kind(g, cb, arg, CONC__LINK_EXCEPTION);
}

/* Take the list (BUSY in its place); NULL list and false once ended.
 * From another OS thread than g's hub's, announced (green.c end_green):
 * the caller leaves after put_back (`foreign`). */
static bool take(conc_green_t *g, conc__link_t **list, bool *foreign)
{
    *foreign = g->gs.hub != conc__tl_hub;
    if (*foreign && !conc__links_foreign_enter(g))
        return false; /* ended: no links to remove any more */
    conc__link_t *head = atomic_load_explicit(&g->links, memory_order_acquire);
    for (;;) {
        if (head == CONC__LINKS_CLOSED) {
            if (*foreign)
                conc__links_foreign_leave(g);
            return false;
        }
        if (head == CONC__LINKS_BUSY) {
            sched_yield();
            head = atomic_load_explicit(&g->links, memory_order_acquire);
            continue;
        }
        if (atomic_compare_exchange_weak_explicit(&g->links, &head, CONC__LINKS_BUSY, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            *list = head;
            return true;
        }
    }
}

static void put_back(conc_green_t *g, conc__link_t *list, bool foreign)
{
    atomic_store_explicit(&g->links, list, memory_order_release);
    if (foreign)
        conc__links_foreign_leave(g);
}

int conc_green_unlink(conc_green_t *g, void (*cb)(conc_green_t *g, void *arg), void *arg)
{
    if (!g || !cb)
        return CONC_EINVAL;
    conc__link_t *list;
    bool foreign;
    if (!take(g, &list, &foreign))
        return 0;
    /* gevent removes the first one linked: the last match in the stack */
    conc__link_t **victim = NULL;
    for (conc__link_t **pp = &list; *pp; pp = &(*pp)->next)
        if ((*pp)->cb == cb && (*pp)->arg == arg)
            victim = pp;
    conc__link_t *gone = NULL;
    if (victim) {
        gone = *victim;
        *victim = gone->next;
    }
    put_back(g, list, foreign);
    free(gone);
    return gone ? 1 : 0;
}

int conc_green_unlink_all(conc_green_t *g)
{
    if (!g)
        return CONC_EINVAL;
    conc__link_t *list;
    bool foreign;
    if (!take(g, &list, &foreign))
        return 0;
    put_back(g, NULL, foreign);
    int n = 0;
    while (list) {
        conc__link_t *next = list->next;
        free(list);
        list = next;
        n++;
    }
    return n;
}

bool conc_green_has_links(const conc_green_t *g)
{
    if (!g)
        return false;
    conc__link_t *head;
    while ((head = atomic_load_explicit(&((conc_green_t *)g)->links, memory_order_acquire)) == CONC__LINKS_BUSY)
        sched_yield();
    return head != NULL && head != CONC__LINKS_CLOSED;
}

void *conc_green_value(const conc_green_t *g)
{
    if (!g || atomic_load_explicit(&g->status, memory_order_acquire) != G_DEAD || g->killed || g->ctx.fail_code)
        return NULL;
    return g->result;
}
