/*
 * poll.c — the readiness waits of libconc_patch.so: poll, ppoll, select,
 * pselect, epoll_wait, epoll_pwait (design: patch.c).
 *
 * On a green thread with a timeout other than zero, the fds are first
 * looked at (libc's call with a zero timeout); if none is ready, the green
 * thread parks until one may be — one fd: on the hub's own watch
 * (conc_wait_read / conc_wait_write); several, or both directions: on a
 * private, level-triggered epoll holding them, which the hub watches —
 * then looks again, until something is ready or the timeout passes. The
 * caller sees libc's results (revents, fd_sets, epoll events) from that
 * last look. A kill or timeout scope ends the wait: -1 with the cut errno
 * (EINTR by default: what a signal does to these calls).
 *
 * ppoll and pselect with a signal mask, and epoll_pwait with one, go to
 * libc unchanged: the mask would have to apply to the whole OS thread
 * while only this green thread waits. select's timeval is updated with the
 * time left, as Linux does.
 */
#include "patch/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>

/* poll on a green thread; dl: the absolute deadline (never 0 wait). */
static int poll_green(struct pollfd *fds, nfds_t n, double dl)
{
    for (;;) {
        int r = REAL(poll)(fds, n, 0);
        if (r != 0)
            return r;
        if (dl != PATCH_NEVER && conc_monotonic() >= dl)
            return 0;
        int w;
        nfds_t one = n, live = 0;
        for (nfds_t i = 0; i < n; i++)
            if (fds[i].fd >= 0) {
                live++;
                one = i;
            }
        if (live == 1)
            w = conc__patch_wait_fd(fds[one].fd, fds[one].events, dl);
        else
            w = conc__patch_wait_many(fds, n, dl);
        if (w == W_CUT) {
            errno = conc__patch_cut_errno();
            return -1;
        }
        if (w == W_TIMEOUT)
            return REAL(poll)(fds, n, 0);
        if (w == W_ERROR) {
            int ms = -1;
            if (dl != PATCH_NEVER) {
                double left = (dl - conc_monotonic()) * 1e3;
                ms = left <= 0 ? 0 : left > 1e9 ? 1000000000 : (int)left + 1;
            }
            return REAL(poll)(fds, n, ms); /* as a plain thread would */
        }
    }
}

PATCH_EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    if (timeout == 0 || !PATCH_GREEN())
        return REAL(poll)(fds, n, timeout);
    return poll_green(fds, n, conc__patch_deadline_ms(timeout));
}

PATCH_EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask)
{
    if (mask || (ts && ts->tv_sec == 0 && ts->tv_nsec == 0) || !PATCH_GREEN())
        return REAL(ppoll)(fds, n, ts, mask);
    if (ts && (ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000)) {
        errno = EINVAL;
        return -1;
    }
    return poll_green(fds, n, conc__patch_deadline_ts(ts));
}

/* select through poll_green; the sets are rewritten from the revents. */
static int select_green(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, double dl)
{
    if (nfds < 0 || nfds > FD_SETSIZE) {
        errno = EINVAL;
        return -1;
    }
    struct pollfd stack[64], *p = stack;
    int n = 0;
    for (int fd = 0; fd < nfds; fd++)
        if ((rd && FD_ISSET(fd, rd)) || (wr && FD_ISSET(fd, wr)) || (ex && FD_ISSET(fd, ex)))
            n++;
    if (n > 64 && !(p = malloc((size_t)n * sizeof *p))) {
        errno = ENOMEM;
        return -1;
    }
    int k = 0;
    for (int fd = 0; fd < nfds; fd++) {
        short ev = (short)((rd && FD_ISSET(fd, rd) ? POLLIN : 0) | (wr && FD_ISSET(fd, wr) ? POLLOUT : 0) |
                           (ex && FD_ISSET(fd, ex) ? POLLPRI : 0));
        if (ev)
            p[k++] = (struct pollfd){.fd = fd, .events = ev};
    }
    int r = poll_green(p, (nfds_t)n, dl);
    if (r >= 0) {
        for (int i = 0; i < n; i++)
            if (p[i].revents & POLLNVAL) {
                errno = EBADF;
                r = -1;
            }
    }
    if (r >= 0) {
        if (rd)
            FD_ZERO(rd);
        if (wr)
            FD_ZERO(wr);
        if (ex)
            FD_ZERO(ex);
        r = 0;
        for (int i = 0; i < n; i++) {
            short re = p[i].revents;
            if (rd && (p[i].events & POLLIN) && (re & (POLLIN | POLLHUP | POLLERR))) {
                FD_SET(p[i].fd, rd);
                r++;
            }
            if (wr && (p[i].events & POLLOUT) && (re & (POLLOUT | POLLERR))) {
                FD_SET(p[i].fd, wr);
                r++;
            }
            if (ex && (p[i].events & POLLPRI) && (re & POLLPRI)) {
                FD_SET(p[i].fd, ex);
                r++;
            }
        }
    }
    if (p != stack)
        free(p);
    return r;
}

PATCH_EXPORT int select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *tv)
{
    if ((tv && tv->tv_sec == 0 && tv->tv_usec == 0) || !PATCH_GREEN())
        return REAL(select)(nfds, rd, wr, ex, tv);
    if (tv && (tv->tv_sec < 0 || tv->tv_usec < 0)) {
        errno = EINVAL;
        return -1;
    }
    double dl = tv ? conc_monotonic() + (double)tv->tv_sec + tv->tv_usec / 1e6 : PATCH_NEVER;
    int r = select_green(nfds, rd, wr, ex, dl);
    if (tv) { /* Linux: the time not slept */
        double left = dl - conc_monotonic();
        if (left < 0 || r == 0)
            left = 0;
        tv->tv_sec = (time_t)left;
        tv->tv_usec = (suseconds_t)((left - (double)tv->tv_sec) * 1e6);
    }
    return r;
}

PATCH_EXPORT int pselect(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, const struct timespec *ts,
                         const sigset_t *mask)
{
    if (mask || (ts && ts->tv_sec == 0 && ts->tv_nsec == 0) || !PATCH_GREEN())
        return REAL(pselect)(nfds, rd, wr, ex, ts, mask);
    if (ts && (ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000)) {
        errno = EINVAL;
        return -1;
    }
    return select_green(nfds, rd, wr, ex, conc__patch_deadline_ts(ts));
}

static int epoll_green(int ep, struct epoll_event *ev, int max, double dl)
{
    for (;;) {
        int r = REAL(epoll_wait)(ep, ev, max, 0);
        if (r != 0)
            return r;
        int w = conc__patch_wait_fd(ep, POLLIN, dl);
        if (w == W_CUT) {
            errno = conc__patch_cut_errno();
            return -1;
        }
        if (w == W_TIMEOUT)
            return REAL(epoll_wait)(ep, ev, max, 0);
        if (w == W_ERROR)
            return REAL(epoll_wait)(ep, ev, max, -1);
    }
}

PATCH_EXPORT int epoll_wait(int ep, struct epoll_event *ev, int max, int timeout)
{
    if (timeout == 0 || !PATCH_GREEN())
        return REAL(epoll_wait)(ep, ev, max, timeout);
    return epoll_green(ep, ev, max, conc__patch_deadline_ms(timeout));
}

PATCH_EXPORT int epoll_pwait(int ep, struct epoll_event *ev, int max, int timeout, const sigset_t *mask)
{
    if (mask || timeout == 0 || !PATCH_GREEN())
        return REAL(epoll_pwait)(ep, ev, max, timeout, mask);
    return epoll_green(ep, ev, max, conc__patch_deadline_ms(timeout));
}

extern void __chk_fail(void) __attribute__((noreturn));

PATCH_EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
    if (fdslen / sizeof *fds < n)
        __chk_fail();
    return poll(fds, n, timeout);
}

PATCH_EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask,
                             size_t fdslen)
{
    if (fdslen / sizeof *fds < n)
        __chk_fail();
    return ppoll(fds, n, ts, mask);
}
