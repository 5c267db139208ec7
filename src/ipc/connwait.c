/*
 * connwait.c — multiprocessing.connection.wait(object_list, timeout).
 *
 * How: a Connection may be ready without its fd saying so (a message
 * already read into its buffer), so each round first asks every
 * Connection (conc__conn_wait_state), then poll(2)s every fd with a zero
 * timeout. Nothing ready: wait on one epoll fd made for this call that
 * holds every fd, edge-triggered, through conc__fd_wait — a green thread
 * parks alone (its hub watches the epoll fd), an OS thread polls it;
 * kills and Timeout scopes cut it short.
 *
 * Invariant (no lost wake-up): the epoll set is complete before the first
 * look, and each round drains its pending edges *before* looking, so a
 * readiness that appears after a look leaves a new edge on the epoll fd,
 * which then is readable when conc__fd_wait starts (a hub, which watches
 * edge-triggered too, sees it as ready when it adds the fd). A wait cut
 * short (timeout, scope, kill) takes one last look; ready then means
 * satisfied (the scope is re-armed, as the other colorless waits do).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "conc/process.h"
#include "core/fdwait.h"
#include "ipc/internal.h"

#define MAX_OBJS 4096

/* The fd of o, or a negative error. */
static int obj_fd(const conc_conn_waitable_t *o)
{
    switch (o->kind) {
    case CONC_CONN_WAIT_CONN: {
        int st = conc__conn_wait_state(o->u.conn);
        return st < 0 ? st : conc_conn_fileno(o->u.conn);
    }
    case CONC_CONN_WAIT_PROCESS: {
        if (!o->u.process)
            return CONC_EINVAL;
        int fd = conc_process_sentinel(o->u.process);
        return fd < 0 ? CONC_EINVAL : fd;
    }
    case CONC_CONN_WAIT_FD:
        return o->u.fd >= 0 ? o->u.fd : CONC_EINVAL;
    default:
        return CONC_EINVAL;
    }
}

/* One look at every object: marks the ready ones, returns how many, or
 * CONC_ESYS. */
static int look(conc_conn_waitable_t *objs, size_t n, struct pollfd *pf)
{
    int nready = 0;
    for (size_t i = 0; i < n; i++) {
        objs[i].ready = objs[i].kind == CONC_CONN_WAIT_CONN && conc__conn_wait_state(objs[i].u.conn) == 1;
        pf[i].revents = 0;
        pf[i].events = POLLIN;
    }
    int r;
    while ((r = poll(pf, (nfds_t)n, 0)) < 0 && errno == EINTR) {
    }
    if (r < 0)
        return CONC_ESYS;
    for (size_t i = 0; i < n; i++) {
        /* POLLNVAL: the fd was closed under us — ready, the caller's
         * next call on it reports the error (as select would raise) */
        if (pf[i].revents)
            objs[i].ready = true;
        nready += objs[i].ready;
    }
    return nready;
}

static void drain(int epfd)
{
    struct epoll_event ev[64];
    while (epoll_wait(epfd, ev, 64, 0) == 64) {
    }
}

int conc_conn_wait(conc_conn_waitable_t *objs, size_t n, double timeout, size_t *nready)
{
    int64_t deadline;
    if ((!objs && n) || n > MAX_OBJS || conc__deadline(timeout, &deadline) != 0)
        return CONC_EINVAL;
    if (nready)
        *nready = 0;
    struct pollfd *pf = calloc(n ? n : 1, sizeof *pf);
    if (!pf)
        return CONC_ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        int fd = obj_fd(&objs[i]);
        if (fd < 0)
            rc = CONC_EINVAL;
        pf[i].fd = fd;
        objs[i].ready = false;
    }
    int epfd = -1;
    if (rc == 0 && (epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        rc = CONC_ESYS;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = i};
        /* EEXIST: listed twice; EPERM: a regular file, which poll always
         * finds ready */
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, pf[i].fd, &ev) < 0 && errno != EEXIST && errno != EPERM)
            rc = errno == EBADF ? CONC_EINVAL : CONC_ESYS;
    }
    while (rc == 0) {
        drain(epfd);
        int k = look(objs, n, pf);
        if (k != 0) {
            rc = k < 0 ? k : 0;
            if (k > 0 && nready)
                *nready = (size_t)k;
            break;
        }
        if (deadline != CONC__NO_DEADLINE && conc__now_ns() >= deadline) {
            rc = CONC_ETIMEDOUT;
            break;
        }
        int w = conc__fd_wait(epfd, CONC__FD_READ, deadline);
        if (w == 0)
            continue;
        /* cut short or timed out: one last look */
        conc__cut_t cut = conc__cut_save(w);
        k = look(objs, n, pf);
        if (k > 0) {
            conc__cut_rearm(&cut);
            if (nready)
                *nready = (size_t)k;
            rc = 0;
        } else {
            rc = k < 0 ? k : (w == CONC_EINVAL ? CONC_ESYS : w);
        }
    }
    if (epfd >= 0) {
        conc__fd_forget(epfd);
        close(epfd);
    }
    free(pf);
    return rc;
}
