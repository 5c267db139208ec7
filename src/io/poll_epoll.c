/*
 * poll_epoll.c — the hub's epoll backend (io/poller.h).
 *
 * Edge-triggered: a direction is added to an fd's interest the first time
 * a context waits for it and stays until the fd is forgotten (conc_close),
 * so a busy connection costs no epoll_ctl per wait, and an fd is reported
 * once per change of readiness — the hub keeps "ran dry" hints instead of
 * asking the kernel again. EPOLLRDHUP with reads, so a peer's shutdown
 * wakes a reader. The wake eventfd sits in the set level-triggered under a
 * key no fd can have; wait drains it. Timeouts have nanosecond precision
 * through epoll_pwait2 where the kernel has it (5.11), else milliseconds
 * rounded up.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/fdwait.h"
#include "io/poller.h"

#define EV_WAKE UINT64_MAX

struct conc__poller {
    int epfd, wakefd;
};

static conc__poller_t *ep_create(int wakefd)
{
    conc__poller_t *p = malloc(sizeof *p);
    if (!p)
        return NULL;
    p->wakefd = wakefd;
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EV_WAKE};
    if (p->epfd < 0 || epoll_ctl(p->epfd, EPOLL_CTL_ADD, wakefd, &ev) != 0) {
        int e = errno;
        if (p->epfd >= 0)
            close(p->epfd);
        free(p);
        errno = e;
        return NULL;
    }
    return p;
}

static void ep_destroy(conc__poller_t *p)
{
    close(p->epfd);
    free(p);
}

static uint32_t ep_events(int dirs)
{
    uint32_t ev = EPOLLET;
    if (dirs & CONC__FD_READ)
        ev |= EPOLLIN | EPOLLRDHUP | EPOLLPRI; /* PRI: see CONC__FD_URG */
    if (dirs & CONC__FD_WRITE)
        ev |= EPOLLOUT;
    return ev;
}

static int ep_set(conc__poller_t *p, int fd, int old, int want)
{
    if (want == 0)
        return epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL) == 0 ? 0 : -errno;
    struct epoll_event ev = {.events = ep_events(want), .data.u64 = (uint64_t)fd};
    if (old) {
        if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &ev) != 0)
            return -errno;
    } else if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) != 0 &&
               (errno != EEXIST || epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &ev) != 0)) {
        return -errno;
    }
    return 0;
}

static int epoll_for(int epfd, struct epoll_event *evs, int max, int64_t timeout_ns)
{
#ifdef SYS_epoll_pwait2
    static _Atomic int no_pwait2;
    if (timeout_ns > 0 && !atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
        struct timespec ts = {timeout_ns / 1000000000, timeout_ns % 1000000000};
        long r = syscall(SYS_epoll_pwait2, epfd, evs, max, &ts, NULL, 0);
        if (r >= 0 || errno != ENOSYS)
            return (int)r;
        atomic_store_explicit(&no_pwait2, 1, memory_order_relaxed);
    }
#endif
    int ms = timeout_ns < 0 ? -1 : (int)((timeout_ns + 999999) / 1000000);
    if (timeout_ns > (int64_t)1000000000 * 1000000)
        ms = 1000000000;
    return epoll_wait(epfd, evs, max, ms);
}

static int ep_wait(conc__poller_t *p, int64_t timeout_ns, void (*ready)(void *arg, int fd, int ev), void *arg)
{
    struct epoll_event evs[64];
    int n = epoll_for(p->epfd, evs, 64, timeout_ns);
    if (n < 0)
        return -errno;
    for (int i = 0; i < n; i++) {
        uint32_t e = evs[i].events;
        if (evs[i].data.u64 == EV_WAKE) {
            uint64_t v;
            ssize_t r = read(p->wakefd, &v, sizeof v);
            (void)r;
            continue;
        }
        int ev = 0;
        if (e & (EPOLLIN | EPOLLPRI | EPOLLRDHUP))
            ev |= CONC__FD_READ;
        if (e & EPOLLOUT)
            ev |= CONC__FD_WRITE;
        if (e & (EPOLLERR | EPOLLHUP))
            ev |= CONC__FD_ERR;
        if (e & EPOLLPRI)
            ev |= CONC__FD_URG;
        ready(arg, (int)evs[i].data.u64, ev);
    }
    return n;
}

const conc__poller_ops_t conc__poll_epoll = {
    .name = "epoll",
    .backend = CONC_HUB_EPOLL,
    .edge = true,
    .create = ep_create,
    .destroy = ep_destroy,
    .set = ep_set,
    .wait = ep_wait,
};
