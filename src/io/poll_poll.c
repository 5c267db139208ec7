/*
 * poll_poll.c — the hub's poll(2) backend (io/poller.h).
 *
 * Level-triggered: the hub keeps in the set exactly the directions some
 * context waits for now, so a ready fd nobody waits on does not spin the
 * loop. The set is an array of pollfd (slot 0: the wake eventfd) with a
 * per-fd slot index, so adding, changing and removing are O(1) (removal
 * moves the last slot into the hole); each wait hands the whole array to
 * ppoll and scans it — O(fds waited on) per turn, which is the price of
 * this model (docs/green.md compares the backends).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/fdwait.h"
#include "io/poller.h"

struct conc__poller {
    struct pollfd *pfd; /* [0]: wakefd */
    size_t n, cap;
    int *slot;          /* fd -> index in pfd, 0 = none */
    size_t nslot;
};

static conc__poller_t *pl_create(int wakefd)
{
    conc__poller_t *p = calloc(1, sizeof *p);
    if (!p || !(p->pfd = malloc(16 * sizeof *p->pfd))) {
        free(p);
        errno = ENOMEM;
        return NULL;
    }
    p->cap = 16;
    p->n = 1;
    p->pfd[0] = (struct pollfd){.fd = wakefd, .events = POLLIN};
    return p;
}

static void pl_destroy(conc__poller_t *p)
{
    free(p->pfd);
    free(p->slot);
    free(p);
}

static short pl_events(int dirs)
{
    return (short)(((dirs & CONC__FD_READ) ? POLLIN | POLLPRI | POLLRDHUP : 0) |
                   ((dirs & CONC__FD_WRITE) ? POLLOUT : 0));
}

static int pl_set(conc__poller_t *p, int fd, int old, int want)
{
    (void)old;
    if ((size_t)fd >= p->nslot) {
        if (want == 0)
            return 0;
        size_t n = p->nslot ? p->nslot : 64;
        while (n <= (size_t)fd)
            n *= 2;
        int *s = realloc(p->slot, n * sizeof *s);
        if (!s)
            return -ENOMEM;
        memset(s + p->nslot, 0, (n - p->nslot) * sizeof *s);
        p->slot = s;
        p->nslot = n;
    }
    int i = p->slot[fd];
    if (want == 0) {
        if (i) {
            p->pfd[i] = p->pfd[--p->n];
            if ((size_t)i < p->n)
                p->slot[p->pfd[i].fd] = i;
            p->slot[fd] = 0;
        }
        return 0;
    }
    if (!i) {
        if (p->n == p->cap) {
            struct pollfd *np = realloc(p->pfd, 2 * p->cap * sizeof *np);
            if (!np)
                return -ENOMEM;
            p->pfd = np;
            p->cap *= 2;
        }
        i = (int)p->n++;
        p->slot[fd] = i;
        p->pfd[i].fd = fd;
    }
    p->pfd[i].events = pl_events(want);
    p->pfd[i].revents = 0;
    return 0;
}

static int pl_wait(conc__poller_t *p, int64_t timeout_ns, void (*ready)(void *arg, int fd, int ev), void *arg)
{
    struct timespec ts, *tp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        tp = &ts;
    }
    int r = ppoll(p->pfd, p->n, tp, NULL);
    if (r <= 0)
        return r < 0 ? -errno : 0;
    if (p->pfd[0].revents) {
        uint64_t v;
        ssize_t x = read(p->pfd[0].fd, &v, sizeof v);
        (void)x;
    }
    /* ready() may change the set (never while we scan: the hub only moves
     * contexts to its ready queue), but collect first to be safe. */
    int seen = 0;
    for (size_t i = 1; i < p->n && seen < r; i++) {
        short re = p->pfd[i].revents;
        if (!re)
            continue;
        seen++;
        p->pfd[i].revents = 0;
        int ev = 0;
        if (re & (POLLIN | POLLPRI | POLLRDHUP))
            ev |= CONC__FD_READ;
        if (re & POLLOUT)
            ev |= CONC__FD_WRITE;
        if (re & (POLLERR | POLLHUP | POLLNVAL))
            ev |= CONC__FD_ERR;
        ready(arg, p->pfd[i].fd, ev);
    }
    return r;
}

const conc__poller_ops_t conc__poll_poll = {
    .name = "poll",
    .backend = CONC_HUB_POLL,
    .edge = false,
    .create = pl_create,
    .destroy = pl_destroy,
    .set = pl_set,
    .wait = pl_wait,
};
