/*
 * poll.c — the poll(2) backend (Python's PollSelector).
 *
 * A dense pollfd array, one entry per key; key->slot is its index, and
 * unregister moves the last entry into the hole (O(1)). poll's revents
 * map to events as in Python (sel.h: conc__sel_events). A closed fd
 * reports POLLNVAL: it counts as ready, like Python's, so the caller
 * notices and unregisters it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>

#include "selectors/sel.h"

typedef struct {
    struct pollfd *pfd;
    int n, cap;
} sel_poll_t;

static int p_init(conc_selector_t *s, const conc_selector_opts_t *o)
{
    (void)o;
    sel_poll_t *b = calloc(1, sizeof *b);
    if (!b)
        return CONC_ENOMEM;
    s->be = b;
    return 0;
}

static void p_fini(conc_selector_t *s)
{
    sel_poll_t *b = s->be;
    free(b->pfd);
    free(b);
}

static short p_bits(int events)
{
    return (short)(((events & CONC_SEL_READ) ? POLLIN : 0) | ((events & CONC_SEL_WRITE) ? POLLOUT : 0));
}

static int p_add(conc_selector_t *s, conc__sel_key_t *k)
{
    sel_poll_t *b = s->be;
    if (b->n == b->cap) {
        int cap = b->cap ? b->cap * 2 : 64;
        struct pollfd *p = realloc(b->pfd, (size_t)cap * sizeof *p);
        if (!p)
            return CONC_ENOMEM;
        b->pfd = p;
        b->cap = cap;
    }
    k->slot = b->n++;
    b->pfd[k->slot] = (struct pollfd){.fd = k->pub.fd, .events = p_bits(k->pub.events)};
    return 0;
}

static int p_mod(conc_selector_t *s, conc__sel_key_t *k, int old)
{
    (void)old;
    sel_poll_t *b = s->be;
    b->pfd[k->slot].events = p_bits(k->pub.events);
    return 0;
}

static void p_del(conc_selector_t *s, conc__sel_key_t *k)
{
    sel_poll_t *b = s->be;
    int last = --b->n;
    if (k->slot != last) {
        b->pfd[k->slot] = b->pfd[last];
        s->keys[b->pfd[k->slot].fd]->slot = k->slot;
    }
}

static int p_wait(conc_selector_t *s, int64_t ns, conc_selector_ready_t *out, int max)
{
    sel_poll_t *b = s->be;
    int n = poll(b->pfd, (nfds_t)b->n, conc__sel_ms(ns));
    if (n < 0)
        return errno == EINTR ? CONC__SEL_EINTR : CONC_ESYS;
    int got = 0;
    for (int i = 0; i < b->n && n > 0 && got < max; i++) {
        if (!b->pfd[i].revents)
            continue;
        n--;
        conc__sel_key_t *k = s->keys[b->pfd[i].fd];
        int ev = conc__sel_events((unsigned short)b->pfd[i].revents, POLLIN, POLLOUT, k->pub.events);
        if (ev)
            out[got++] = (conc_selector_ready_t){&k->pub, ev};
    }
    return got;
}

static int p_waitfd(conc_selector_t *s)
{
    (void)s;
    return -1;
}

const conc__sel_ops_t conc__sel_poll_ops = {"poll", p_init, p_fini, p_add, p_mod, p_del, p_wait,
                                            p_waitfd};
