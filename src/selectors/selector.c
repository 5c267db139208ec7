/*
 * selector.c — Python's selectors (conc/selectors.h): the part shared by
 * every backend.
 *
 * How it works. A selector is a key table indexed by fd (one malloc'd key
 * per registered fd, so key pointers stay put when the table grows) plus a
 * backend (sel.h: add / mod / del / wait / waitfd / fini) that keeps the
 * kernel's view in step. This file checks arguments (CPython's rules:
 * KeyError for twice / unknown, ValueError for bad events), calls the
 * backend, and runs the wait loop:
 *
 *   OS thread    the deadline is computed once (a negative timeout is 0,
 *                as in Python's selectors), the earliest open Timeout scope
 *                may shorten it, and the backend's blocking call gets the
 *                time left; EINTR (a signal handler ran) and spurious
 *                wake-ups loop with the time recomputed (PEP 475). When the
 *                time is up: 0 ready keys, or CONC_ETIMEDOUT if it was a
 *                scope's.
 *   green thread never blocks the hub: poll the backend with a zero
 *                timeout; if nothing is ready, park on a pollable fd with
 *                conc__fd_wait (the hub watches it; kills and scopes cut
 *                the park short), then poll again. The fd is the backend's
 *                own (epoll fd, io_uring ring fd, signalfd); select and poll
 *                have none, so a helper epoll fd mirroring the keys is made
 *                at the first green select and kept in step after.
 *
 * Invariants: s->keys[fd] != NULL exactly for registered fds; s->count and
 * s->maxfd describe the table; the backend's state always matches the
 * table between calls (an add or mod the kernel refuses leaves the fd
 * unregistered).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/fdwait.h"
#include "core/park.h"
#include "core/time.h"
#include "selectors/sel.h"

static const conc__sel_ops_t *backend_ops(conc_selector_backend_t b)
{
    switch (b) {
    case CONC_SEL_SELECT: return &conc__sel_select_ops;
    case CONC_SEL_POLL: return &conc__sel_poll_ops;
    case CONC_SEL_EPOLL: return &conc__sel_epoll_ops;
    case CONC_SEL_URING: return &conc__sel_uring_ops;
    case CONC_SEL_SIGNAL: return &conc__sel_signal_ops;
    default: return NULL;
    }
}

const char *conc_selector_backend_name(conc_selector_backend_t b)
{
    if (b == CONC_SEL_DEFAULT)
        return "default";
    const conc__sel_ops_t *o = backend_ops(b);
    return o ? o->name : "unknown";
}

int conc_selector_new_opts(conc_selector_t **out, const conc_selector_opts_t *opts)
{
    conc_selector_opts_t o = opts ? *opts : (conc_selector_opts_t){0};
    if (!out)
        return CONC_EINVAL;
    *out = NULL;
    if (o.backend == CONC_SEL_DEFAULT)
        o.backend = CONC_SEL_EPOLL;
    const conc__sel_ops_t *ops = backend_ops(o.backend);
    if (!ops)
        return CONC_EINVAL;
    conc_selector_t *s = calloc(1, sizeof *s);
    if (!s)
        return CONC_ENOMEM;
    s->ops = ops;
    s->backend = o.backend;
    s->maxfd = -1;
    s->helper_ep = -1;
    int rc = ops->init(s, &o);
    if (rc) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int conc_selector_new(conc_selector_t **out, conc_selector_backend_t backend)
{
    conc_selector_opts_t o = {.backend = backend};
    return conc_selector_new_opts(out, &o);
}

void conc_selector_close(conc_selector_t *s)
{
    if (!s)
        return;
    /* A hub may watch the fd a green select parked on (as conc_close). */
    int w = s->ops->waitfd(s);
    if (w >= 0)
        conc__fd_forget(w);
    if (s->helper_ep >= 0)
        conc__fd_forget(s->helper_ep);
    s->ops->fini(s);
    for (int fd = 0; fd <= s->maxfd; fd++)
        free(s->keys[fd]);
    free(s->keys);
    if (s->helper_ep >= 0)
        close(s->helper_ep);
    free(s);
}

conc_selector_backend_t conc_selector_backend(const conc_selector_t *s)
{
    return s ? s->backend : CONC_SEL_DEFAULT;
}

/* ---- helper epoll (green parking for select / poll) ---- */

static void helper_sync(conc_selector_t *s, int op, const conc__sel_key_t *k)
{
    if (s->helper_ep < 0)
        return;
    struct epoll_event e = {.events = 0, .data.fd = k->pub.fd};
    if (k->pub.events & CONC_SEL_READ)
        e.events |= EPOLLIN;
    if (k->pub.events & CONC_SEL_WRITE)
        e.events |= EPOLLOUT;
    /* Errors are harmless here: a regular file (EPERM) is always ready, so
     * the zero-timeout poll before each park reports it; a closed fd (EBADF)
     * left epoll when it was closed. */
    (void)epoll_ctl(s->helper_ep, op, k->pub.fd, &e);
}

static int helper_fd(conc_selector_t *s)
{
    if (s->helper_ep >= 0)
        return s->helper_ep;
    s->helper_ep = epoll_create1(EPOLL_CLOEXEC);
    if (s->helper_ep < 0)
        return CONC_ESYS;
    for (int fd = 0; fd <= s->maxfd; fd++)
        if (s->keys[fd])
            helper_sync(s, EPOLL_CTL_ADD, s->keys[fd]);
    return s->helper_ep;
}

/* ---- keys ---- */

static int check_events(const conc_selector_t *s, int fd, int events)
{
    if (!s || fd < 0 || events <= 0 || (events & ~(CONC_SEL_READ | CONC_SEL_WRITE)))
        return CONC_EINVAL;
    return 0;
}

static int table_grow(conc_selector_t *s, int fd)
{
    if (fd < s->nkeys_cap)
        return 0;
    size_t cap = s->nkeys_cap ? (size_t)s->nkeys_cap : 64;
    while (cap <= (size_t)fd)
        cap *= 2;
    conc__sel_key_t **k = realloc(s->keys, cap * sizeof *k);
    if (!k)
        return CONC_ENOMEM;
    memset(k + s->nkeys_cap, 0, (cap - (size_t)s->nkeys_cap) * sizeof *k);
    s->keys = k;
    s->nkeys_cap = (int)cap;
    return 0;
}

static void table_drop(conc_selector_t *s, conc__sel_key_t *k)
{
    int fd = k->pub.fd;
    s->keys[fd] = NULL;
    s->count--;
    if (fd == s->maxfd)
        while (s->maxfd >= 0 && !s->keys[s->maxfd])
            s->maxfd--;
    free(k);
}

int conc_selector_register(conc_selector_t *s, int fd, int events, void *data,
                           const conc_selector_key_t **key)
{
    int rc = check_events(s, fd, events);
    if (rc)
        return rc;
    if (conc__sel_lookup(s, fd))
        return CONC_EKEY;
    if ((rc = table_grow(s, fd)))
        return rc;
    conc__sel_key_t *k = calloc(1, sizeof *k);
    if (!k)
        return CONC_ENOMEM;
    k->pub = (conc_selector_key_t){.fd = fd, .events = events, .data = data};
    k->cand = -1;
    s->keys[fd] = k;
    s->count++;
    int oldmax = s->maxfd;
    if (fd > s->maxfd)
        s->maxfd = fd;
    if ((rc = s->ops->add(s, k))) {
        s->keys[fd] = NULL;
        s->count--;
        s->maxfd = oldmax;
        free(k);
        return rc;
    }
    helper_sync(s, EPOLL_CTL_ADD, k);
    if (key)
        *key = &k->pub;
    return 0;
}

int conc_selector_modify(conc_selector_t *s, int fd, int events, void *data,
                         const conc_selector_key_t **key)
{
    int rc = check_events(s, fd, events);
    if (rc)
        return rc;
    conc__sel_key_t *k = conc__sel_lookup(s, fd);
    if (!k)
        return CONC_EKEY;
    int old = k->pub.events;
    k->pub.events = events;
    k->pub.data = data;
    if (old != events && (rc = s->ops->mod(s, k, old))) {
        /* As Python's modify (unregister + register): the fd is gone. */
        k->pub.events = old;
        s->ops->del(s, k);
        helper_sync(s, EPOLL_CTL_DEL, k);
        table_drop(s, k);
        return rc;
    }
    if (old != events)
        helper_sync(s, EPOLL_CTL_MOD, k);
    if (key)
        *key = &k->pub;
    return 0;
}

int conc_selector_unregister(conc_selector_t *s, int fd, conc_selector_key_t *old)
{
    if (!s || fd < 0)
        return CONC_EINVAL;
    conc__sel_key_t *k = conc__sel_lookup(s, fd);
    if (!k)
        return CONC_EKEY;
    if (old)
        *old = k->pub;
    s->ops->del(s, k);
    helper_sync(s, EPOLL_CTL_DEL, k);
    table_drop(s, k);
    return 0;
}

int conc_selector_get_key(const conc_selector_t *s, int fd, const conc_selector_key_t **key)
{
    if (!s || fd < 0 || !key)
        return CONC_EINVAL;
    conc__sel_key_t *k = conc__sel_lookup(s, fd);
    if (!k)
        return CONC_EKEY;
    *key = &k->pub;
    return 0;
}

int conc_selector_count(const conc_selector_t *s)
{
    return s ? s->count : 0;
}

const conc_selector_key_t *conc_selector_next_key(const conc_selector_t *s, int *cursor)
{
    if (!s || !cursor || *cursor < 0)
        return NULL;
    for (int fd = *cursor; fd <= s->maxfd; fd++)
        if (s->keys[fd]) {
            *cursor = fd + 1;
            return &s->keys[fd]->pub;
        }
    *cursor = s->maxfd + 1;
    return NULL;
}

/* ---- select ---- */

static int select_green(conc_selector_t *s, int64_t deadline, conc_selector_ready_t *out, int max)
{
    for (;;) {
        int n = s->ops->wait(s, 0, out, max);
        if (n == CONC__SEL_EINTR)
            continue;
        if (n != 0 || deadline == 0)
            return n;
        int wfd = s->ops->waitfd(s);
        if (wfd < 0 && (wfd = helper_fd(s)) < 0)
            return wfd;
        int rc = conc__fd_wait(wfd, CONC__FD_READ, deadline);
        if (rc == CONC_ETIMEDOUT && !conc__park_interrupted(rc)) {
            deadline = 0; /* our own timeout: one last look, then [] */
            continue;
        }
        if (rc)
            return rc;
    }
}

static int select_os(conc_selector_t *s, int64_t deadline, conc_selector_ready_t *out, int max)
{
    conc__ctx_t *ctx = conc__ctx();
    ctx->cut_scope = -1;
    int64_t dl = ctx->nointr ? deadline : conc__park_deadline(ctx, deadline);
    for (;;) {
        int64_t ns = -1;
        if (dl != CONC__NO_DEADLINE) {
            ns = dl - conc__now_ns();
            if (ns < 0)
                ns = 0;
        }
        int n = s->ops->wait(s, ns, out, max);
        if (n == CONC__SEL_EINTR)
            continue; /* PEP 475: resume with the time left */
        if (n != 0)
            return n;
        if (ns == 0 || (dl != CONC__NO_DEADLINE && conc__now_ns() >= dl))
            return dl != deadline ? conc__park_cut(ctx, deadline) : 0;
        /* a wake-up with nothing confirmed ready: wait again */
    }
}

int conc_selector_select(conc_selector_t *s, double timeout, conc_selector_ready_t *out, int max)
{
    if (!s || !out || max <= 0)
        return CONC_EINVAL;
    int64_t deadline;
    if (conc__deadline(timeout, &deadline)) /* negative: 0, a poll */
        return CONC_EINVAL;
    conc__ctx_t *ctx = conc__ctx();
    if (ctx->ops && ctx->ops->fd_wait)
        return select_green(s, deadline, out, max);
    return select_os(s, deadline, out, max);
}
