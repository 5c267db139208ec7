/*
 * poll_select.c — the hub's select(2) backend (io/poller.h).
 *
 * Level-triggered like poll_poll.c: the sets hold exactly the directions
 * some context waits for now. An fd_set has FD_SETSIZE (1024) bits and
 * FD_SET past them writes out of bounds, so an fd >= FD_SETSIZE is
 * refused with -ERANGE before it touches a set: the conc call that would
 * wait on it returns CONC_ERANGE (CPython's select raises "filedescriptor
 * out of range in select()"). select rewrites its sets, so each wait
 * works on copies of the interest sets, scanning up to the highest fd.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include "core/fdwait.h"
#include "io/poller.h"

struct conc__poller {
    fd_set rd, wr;
    int wakefd;
    int maxfd;    /* highest fd in the sets (wakefd at least) */
    size_t count; /* fds in the sets (not wakefd) */
};

static conc__poller_t *sl_create(int wakefd)
{
    if (wakefd >= FD_SETSIZE) {
        errno = ERANGE;
        return NULL;
    }
    conc__poller_t *p = malloc(sizeof *p);
    if (!p)
        return NULL;
    FD_ZERO(&p->rd);
    FD_ZERO(&p->wr);
    p->wakefd = wakefd;
    p->maxfd = wakefd;
    p->count = 0;
    return p;
}

static void sl_destroy(conc__poller_t *p) { free(p); }

static int sl_set(conc__poller_t *p, int fd, int old, int want)
{
    if (fd < 0 || fd >= FD_SETSIZE)
        return want ? -ERANGE : 0;
    if (want & CONC__FD_READ)
        FD_SET(fd, &p->rd);
    else
        FD_CLR(fd, &p->rd);
    if (want & CONC__FD_WRITE)
        FD_SET(fd, &p->wr);
    else
        FD_CLR(fd, &p->wr);
    if (!old && want)
        p->count++;
    else if (old && !want)
        p->count--;
    if (want && fd > p->maxfd)
        p->maxfd = fd;
    return 0;
}

static int sl_wait(conc__poller_t *p, int64_t timeout_ns, void (*ready)(void *arg, int fd, int ev), void *arg)
{
    /* Shrink maxfd to what is really in the sets. */
    while (p->maxfd > p->wakefd && !FD_ISSET(p->maxfd, &p->rd) && !FD_ISSET(p->maxfd, &p->wr))
        p->maxfd--;
    fd_set rd = p->rd, wr = p->wr, ex;
    FD_SET(p->wakefd, &rd);
    FD_ZERO(&ex);
    struct timespec ts, *tp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        tp = &ts;
    }
    int r = pselect(p->maxfd + 1, &rd, &wr, &ex, tp, NULL);
    if (r < 0) {
        if (errno != EBADF)
            return -errno;
        /* An fd in the set was closed under us (plain close(2) instead of
         * conc_close): report every watched fd, its waiter retries and
         * sees EBADF itself. */
        for (int fd = 0; fd <= p->maxfd; fd++)
            if (fd != p->wakefd && (FD_ISSET(fd, &p->rd) || FD_ISSET(fd, &p->wr)))
                ready(arg, fd, CONC__FD_ERR);
        return 0;
    }
    if (r == 0)
        return 0;
    if (FD_ISSET(p->wakefd, &rd)) {
        uint64_t v;
        ssize_t x = read(p->wakefd, &v, sizeof v);
        (void)x;
    }
    for (int fd = 0; fd <= p->maxfd; fd++) {
        if (fd == p->wakefd)
            continue;
        int ev = (FD_ISSET(fd, &rd) ? CONC__FD_READ : 0) | (FD_ISSET(fd, &wr) ? CONC__FD_WRITE : 0);
        if (ev)
            ready(arg, fd, ev);
    }
    return r;
}

const conc__poller_ops_t conc__poll_select = {
    .name = "select",
    .backend = CONC_HUB_SELECT,
    .edge = false,
    .create = sl_create,
    .destroy = sl_destroy,
    .set = sl_set,
    .wait = sl_wait,
};
