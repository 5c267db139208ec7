/*
 * epoll.c — the epoll(7) backend (Python's EpollSelector), level-triggered.
 *
 * Each event carries the fd, never a key pointer: an fd closed while
 * registered (and still open through a dup) may keep reporting events
 * after its key is gone, and a lookup by fd simply ignores them.
 * Unregistering a closed fd ignores epoll_ctl's EBADF, as Python does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "selectors/sel.h"

enum { EV_BATCH = 256 };

typedef struct {
    int ep;
    struct epoll_event ev[EV_BATCH];
} sel_epoll_t;

static int e_init(conc_selector_t *s, const conc_selector_opts_t *o)
{
    (void)o;
    sel_epoll_t *b = malloc(sizeof *b);
    if (!b)
        return CONC_ENOMEM;
    b->ep = epoll_create1(EPOLL_CLOEXEC);
    if (b->ep < 0) {
        free(b);
        return CONC_ESYS;
    }
    s->be = b;
    return 0;
}

static void e_fini(conc_selector_t *s)
{
    sel_epoll_t *b = s->be;
    close(b->ep);
    free(b);
}

static int e_ctl(conc_selector_t *s, int op, conc__sel_key_t *k)
{
    sel_epoll_t *b = s->be;
    struct epoll_event e = {.events = 0, .data.fd = k->pub.fd};
    if (k->pub.events & CONC_SEL_READ)
        e.events |= EPOLLIN;
    if (k->pub.events & CONC_SEL_WRITE)
        e.events |= EPOLLOUT;
    return epoll_ctl(b->ep, op, k->pub.fd, &e) ? CONC_ESYS : 0;
}

static int e_add(conc_selector_t *s, conc__sel_key_t *k)
{
    return e_ctl(s, EPOLL_CTL_ADD, k);
}

static int e_mod(conc_selector_t *s, conc__sel_key_t *k, int old)
{
    (void)old;
    return e_ctl(s, EPOLL_CTL_MOD, k);
}

static void e_del(conc_selector_t *s, conc__sel_key_t *k)
{
    sel_epoll_t *b = s->be;
    (void)epoll_ctl(b->ep, EPOLL_CTL_DEL, k->pub.fd, NULL); /* EBADF: closed already */
}

static int e_wait(conc_selector_t *s, int64_t ns, conc_selector_ready_t *out, int max)
{
    sel_epoll_t *b = s->be;
    int n = epoll_wait(b->ep, b->ev, max < EV_BATCH ? max : EV_BATCH, conc__sel_ms(ns));
    if (n < 0)
        return errno == EINTR ? CONC__SEL_EINTR : CONC_ESYS;
    int got = 0;
    for (int i = 0; i < n; i++) {
        conc__sel_key_t *k = conc__sel_lookup(s, b->ev[i].data.fd);
        if (!k)
            continue;
        int ev = conc__sel_events(b->ev[i].events, EPOLLIN, EPOLLOUT, k->pub.events);
        if (ev)
            out[got++] = (conc_selector_ready_t){&k->pub, ev};
    }
    return got;
}

static int e_waitfd(conc_selector_t *s)
{
    return ((sel_epoll_t *)s->be)->ep;
}

const conc__sel_ops_t conc__sel_epoll_ops = {"epoll", e_init, e_fini, e_add, e_mod, e_del, e_wait,
                                             e_waitfd};
