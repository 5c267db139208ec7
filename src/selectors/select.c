/*
 * select.c — the select(2) backend (Python's SelectSelector).
 *
 * Two master fd_sets (read, write) mirror the keys; each wait copies them
 * and calls select with maxfd + 1. An fd_set holds FD_SETSIZE bits only,
 * so register refuses fd >= FD_SETSIZE with CONC_ERANGE before any bit is
 * touched (FD_SET past the end would write outside the set).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/select.h>

#include "selectors/sel.h"

typedef struct {
    fd_set rd, wr;
} sel_select_t;

static int s_init(conc_selector_t *s, const conc_selector_opts_t *o)
{
    (void)o;
    sel_select_t *b = calloc(1, sizeof *b);
    if (!b)
        return CONC_ENOMEM;
    FD_ZERO(&b->rd);
    FD_ZERO(&b->wr);
    s->be = b;
    return 0;
}

static void s_fini(conc_selector_t *s)
{
    free(s->be);
}

static void s_set(sel_select_t *b, const conc__sel_key_t *k)
{
    int fd = k->pub.fd;
    FD_CLR(fd, &b->rd);
    FD_CLR(fd, &b->wr);
    if (k->pub.events & CONC_SEL_READ)
        FD_SET(fd, &b->rd);
    if (k->pub.events & CONC_SEL_WRITE)
        FD_SET(fd, &b->wr);
}

static int s_add(conc_selector_t *s, conc__sel_key_t *k)
{
    if (k->pub.fd >= FD_SETSIZE)
        return CONC_ERANGE;
    s_set(s->be, k);
    return 0;
}

static int s_mod(conc_selector_t *s, conc__sel_key_t *k, int old)
{
    (void)old;
    s_set(s->be, k);
    return 0;
}

static void s_del(conc_selector_t *s, conc__sel_key_t *k)
{
    sel_select_t *b = s->be;
    FD_CLR(k->pub.fd, &b->rd);
    FD_CLR(k->pub.fd, &b->wr);
}

static int s_wait(conc_selector_t *s, int64_t ns, conc_selector_ready_t *out, int max)
{
    sel_select_t *b = s->be;
    fd_set r = b->rd, w = b->wr;
    struct timeval tv, *tvp = NULL;
    if (ns >= 0) {
        int64_t us = (ns + 999) / 1000; /* round up: never return early */
        tv.tv_sec = us / 1000000;
        tv.tv_usec = us % 1000000;
        tvp = &tv;
    }
    int n = select(s->maxfd + 1, &r, &w, NULL, tvp);
    if (n < 0)
        return errno == EINTR ? CONC__SEL_EINTR : CONC_ESYS;
    int got = 0;
    for (int fd = 0; fd <= s->maxfd && n > 0 && got < max; fd++) {
        int ev = (FD_ISSET(fd, &r) ? CONC_SEL_READ : 0) | (FD_ISSET(fd, &w) ? CONC_SEL_WRITE : 0);
        if (!ev)
            continue;
        n -= (ev == (CONC_SEL_READ | CONC_SEL_WRITE)) ? 2 : 1;
        conc__sel_key_t *k = s->keys[fd];
        if (k && (ev &= k->pub.events))
            out[got++] = (conc_selector_ready_t){&k->pub, ev};
    }
    return got;
}

static int s_waitfd(conc_selector_t *s)
{
    (void)s;
    return -1;
}

const conc__sel_ops_t conc__sel_select_ops = {"select", s_init, s_fini, s_add, s_mod, s_del, s_wait,
                                              s_waitfd};
