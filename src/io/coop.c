/*
 * coop.c — cooperative I/O (conc/io.h): read, write, recv, send, accept,
 * connect with timeouts, on top of conc__fd_wait (core/fdwait.h).
 *
 * Every call is "try, and on EAGAIN wait, then try again": the syscall is
 * made first because on a busy fd the data is usually there already, and
 * conc__fd_wait parks a green thread on its hub's poller (or polls on a
 * plain OS thread), honouring the deadline, timeout scopes and kills. The
 * deadline is computed once per call, so a call that waits and retries
 * several times (read_exact, write_all, a spurious wake-up) never waits
 * longer in total than its timeout. EINTR is retried (PEP 475).
 *
 * We never change an fd's flags, so we must not make a syscall that could
 * block on a blocking fd. How a stream fd is talked to (its "mode"):
 *   SOCK      recv/send with MSG_DONTWAIT (and MSG_NOSIGNAL): never blocks,
 *             whatever O_NONBLOCK says. This is tried first by conc_read
 *             and conc_write; ENOTSOCK moves the fd to one of:
 *   NONBLOCK  read/write, then wait on EAGAIN;
 *   BLOCK     wait for readiness first (a zero-timeout poll, then the real
 *             wait), then one read/write.
 * The mode is found once per call (one F_GETFL for non-sockets) and not
 * cached across calls: fd numbers are reused.
 *
 * A write to a pipe whose reader is gone would raise SIGPIPE: it is
 * blocked in the calling thread around the write and a SIGPIPE caused by
 * the write is consumed, so the caller sees EPIPE (sockets use
 * MSG_NOSIGNAL instead, which costs nothing).
 *
 * On a hub whose backend completes operations (io_uring, green/hub_io.c),
 * the wait is the operation itself: where the syscall said EAGAIN (or the
 * hub knows the socket ran dry) recv / send / accept / connect are handed
 * to the kernel whole through conc__fd_op, and the call parks until the
 * completion brings the result; a cut-short one is cancelled and reaped
 * before the call returns. CONC_ENOTSUP from conc__fd_op (every other
 * kind of context) means: wait for readiness as above; CONC_EAGAIN means
 * the kernel would not (a fork, an old kernel): readiness from then on.
 * conc_accept takes connections a multishot accept already queued on the
 * hub before it tries accept(2).
 *
 * connect: non-blocking connect, wait for writability, read SO_ERROR, and
 * make sure the socket really is connected (getpeername) before reporting
 * success, since readiness may be spurious. A Unix socket whose listener's
 * backlog is full fails with EAGAIN rather than EINPROGRESS and never
 * becomes "writable" in a useful way, so that case is retried after a short
 * park (1 ms doubling to 32 ms) until the deadline.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "conc/io.h"
#include "core/fdwait.h"
#include "core/sys.h"
#include "core/park.h"
#include "core/time.h"

enum { M_SOCK, M_NONBLOCK, M_BLOCK };

static inline int check_args(int fd, const void *buf, size_t n, double timeout, int64_t *dl)
{
    if (fd < 0 || (!buf && n > 0) || n > (size_t)SSIZE_MAX)
        return CONC_EINVAL;
    if (timeout == CONC_FOREVER) { /* the usual case: no call, no clock read */
        *dl = CONC__NO_DEADLINE;
        return 0;
    }
    return conc__deadline_strict(timeout, dl); /* settimeout(-1): ValueError */
}

/* Is fd ready right now (a zero-timeout poll)? 1, 0, or a code. */
static int probe(int fd, int events)
{
    struct pollfd p = {.fd = fd, .events = (short)(((events & CONC__FD_READ) ? POLLIN : 0) |
                                                   ((events & CONC__FD_WRITE) ? POLLOUT : 0))};
    int r;
    while ((r = poll(&p, 1, 0)) < 0 && errno == EINTR) {
    }
    if (r < 0)
        return CONC_ESYS;
    if (r > 0 && (p.revents & POLLNVAL))
        return CONC_EINVAL;
    return r > 0;
}

/* Wait until fd is ready or dl. With first, the fd is checked before any
 * wait: a deadline that has already passed (timeout 0) must not fail a
 * call whose fd is ready. */
static int wait_fd(int fd, int events, int64_t dl, bool first)
{
    if (first) {
        int r = probe(fd, events);
        if (r != 0)
            return r > 0 ? 0 : r;
    }
    return conc__fd_wait(fd, events, dl);
}

/* M_NONBLOCK or M_BLOCK for a non-socket fd, or CONC_ESYS. */
static int classify(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return CONC_ESYS;
    return (fl & O_NONBLOCK) ? M_NONBLOCK : M_BLOCK;
}

/* write(2) without SIGPIPE (see the top). */
static ssize_t write_nosigpipe(int fd, const void *buf, size_t n)
{
    struct iovec v = {(void *)buf, n};
    return conc__writev_nosigpipe(fd, &v, 1);
}

/* The operation would block: on a hub that does completions (io_uring)
 * hand it to the kernel whole. Returns bytes >= 0, a code, CONC_ENOTSUP
 * (wait for readiness instead) or CONC_EAGAIN (it did not happen: retry
 * the system call, then wait for readiness). */
static ssize_t xfer_op(int fd, bool wr, void *buf, size_t n, int flags, int64_t dl)
{
    conc__fdop_t op = {.kind = wr ? CONC__OP_SEND : CONC__OP_RECV, .fd = fd, .buf = buf, .n = n, .flags = flags};
    return conc__fd_op(&op, dl);
}

/* One transfer (bytes >= 0) or a code. *mode is M_SOCK on the first call
 * of an operation; any_fd allows falling back to read/write for
 * non-sockets (conc_read/conc_write) instead of failing with ENOTSOCK. */
static __attribute__((noinline)) ssize_t xfer_slow(int fd, bool wr, void *buf, size_t n, int flags, bool any_fd,
                                                   int *mode, int64_t dl)
{
    int ev = wr ? CONC__FD_WRITE : CONC__FD_READ;
    /* The hub saw it run dry and nothing since: the syscall would only
     * say EAGAIN. Wait (or hand the operation over) first. */
    bool skip = dl != 0 && !conc__fd_maybe_ready(fd, ev);
    bool use_op = dl != 0;
    for (;;) {
        ssize_t r;
        if (skip) {
            skip = false;
            r = -1;
            errno = EAGAIN;
        } else if (*mode == M_SOCK) {
            r = wr ? send(fd, buf, n, flags | MSG_DONTWAIT | MSG_NOSIGNAL) : recv(fd, buf, n, flags | MSG_DONTWAIT);
            if (r < 0 && errno == ENOTSOCK && any_fd) {
                int m = classify(fd);
                if (m < 0)
                    return m;
                *mode = m;
                continue;
            }
        } else {
            if (*mode == M_BLOCK) {
                int rc = wait_fd(fd, ev, dl, true);
                if (rc)
                    return rc;
            }
            r = wr ? write_nosigpipe(fd, buf, n) : read(fd, buf, n);
        }
        if (r >= 0) {
            if ((size_t)r < n && n > 0 && !(flags & (MSG_OOB | MSG_ERRQUEUE))) /* (they say nothing of the stream) */
                conc__fd_short(fd, ev); /* drained (or full): the next edge says when not */
            return r;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return CONC_ESYS;
        if (use_op && *mode == M_SOCK) {
            r = xfer_op(fd, wr, buf, n, flags, dl);
            if (r >= 0) {
                if ((size_t)r < n && n > 0 && !(flags & (MSG_OOB | MSG_ERRQUEUE)))
                    conc__fd_short(fd, ev);
                return r;
            }
            if (r == CONC_ESYS && errno == ENOTSOCK && any_fd) {
                int m = classify(fd);
                if (m < 0)
                    return m;
                *mode = m;
                continue;
            }
            if (r == CONC_EAGAIN) {
                use_op = false; /* the kernel would not: readiness from now on */
                continue;
            }
            if (r != CONC_ENOTSUP)
                return r;
            use_op = false;
        }
        int rc = conc__fd_wait(fd, ev, dl);
        if (rc)
            return rc;
    }
}

/* xfer: a socket the hub already watches goes its fast path
 * (conc__fd_io: the same steps, without the dispatch above). */
static inline ssize_t xfer(int fd, bool wr, void *buf, size_t n, int flags, bool any_fd, int *mode, int64_t dl)
{
    if (*mode == M_SOCK && dl != 0) {
        ssize_t r = conc__fd_io(fd, wr, buf, n, flags, dl);
        if (r != CONC__FD_IO_SLOW)
            return r;
    }
    return xfer_slow(fd, wr, buf, n, flags, any_fd, mode, dl);
}

ssize_t conc_read(int fd, void *buf, size_t n, double timeout)
{
    int64_t dl;
    int rc = check_args(fd, buf, n, timeout, &dl);
    if (rc)
        return rc;
    int mode = M_SOCK;
    return xfer(fd, false, buf, n, 0, true, &mode, dl);
}

ssize_t conc_write(int fd, const void *buf, size_t n, double timeout)
{
    int64_t dl;
    int rc = check_args(fd, buf, n, timeout, &dl);
    if (rc)
        return rc;
    int mode = M_SOCK;
    return xfer(fd, true, (void *)buf, n, 0, true, &mode, dl);
}

ssize_t conc_recv(int fd, void *buf, size_t n, int flags, double timeout)
{
    int64_t dl;
    int rc = check_args(fd, buf, n, timeout, &dl);
    if (rc)
        return rc;
    int mode = M_SOCK;
    return xfer(fd, false, buf, n, flags, false, &mode, dl);
}

ssize_t conc_send(int fd, const void *buf, size_t n, int flags, double timeout)
{
    int64_t dl;
    int rc = check_args(fd, buf, n, timeout, &dl);
    if (rc)
        return rc;
    int mode = M_SOCK;
    return xfer(fd, true, (void *)buf, n, flags, false, &mode, dl);
}

/* Transfer all n bytes; *done counts them. r: the result of a first
 * transfer already made (CONC__FD_IO_SLOW: none). */
static __attribute__((noinline)) int xfer_all_from(int fd, bool wr, char *buf, size_t n, int flags, bool any_fd,
                                                   size_t *done, int64_t dl, ssize_t r)
{
    size_t got = 0;
    int rc = 0;
    int mode = M_SOCK;
    while (got < n) {
        if (r == CONC__FD_IO_SLOW)
            r = xfer(fd, wr, buf + got, n - got, flags, any_fd, &mode, dl);
        if (r < 0) {
            rc = (int)r;
            break;
        }
        if (r == 0 && !wr) {
            rc = CONC_EEOF;
            break;
        }
        got += (size_t)r;
        r = CONC__FD_IO_SLOW;
    }
    if (done)
        *done = got;
    return rc;
}

/* The usual case inline: one transfer through the hub's fast path moves
 * it all. */
static inline int xfer_all(int fd, bool wr, char *buf, size_t n, int flags, bool any_fd, size_t *done,
                           double timeout)
{
    int64_t dl;
    int rc = check_args(fd, buf, n, timeout, &dl);
    if (rc) {
        if (done)
            *done = 0;
        return rc;
    }
    ssize_t r = CONC__FD_IO_SLOW;
    if (n > 0 && dl != 0) {
        r = conc__fd_io(fd, wr, buf, n, flags, dl);
        if (r == (ssize_t)n) {
            if (done)
                *done = n;
            return 0;
        }
    }
    return xfer_all_from(fd, wr, buf, n, flags, any_fd, done, dl, r);
}

int conc_read_exact(int fd, void *buf, size_t n, size_t *got, double timeout)
{
    return xfer_all(fd, false, buf, n, 0, true, got, timeout);
}

int conc_write_all(int fd, const void *buf, size_t n, size_t *sent, double timeout)
{
    return xfer_all(fd, true, (char *)buf, n, 0, true, sent, timeout);
}

int conc_sendall(int fd, const void *buf, size_t n, int flags, double timeout)
{
    return xfer_all(fd, true, (char *)buf, n, flags, false, NULL, timeout);
}

static int wait_public(int fd, int events, double timeout)
{
    int64_t dl;
    if (fd < 0 || conc__deadline(timeout, &dl)) /* gevent: negative is already up */
        return CONC_EINVAL;
    /* Level-triggered, whatever the hub's epoll does: an fd that is ready
     * now returns at once (the caller may not have drained it), and
     * timeout 0 is a check, not an immediate failure. */
    return wait_fd(fd, events, dl, true);
}

int conc_wait_read(int fd, double timeout) { return wait_public(fd, CONC__FD_READ, timeout); }
int conc_wait_write(int fd, double timeout) { return wait_public(fd, CONC__FD_WRITE, timeout); }

int conc_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, double timeout)
{
    int64_t dl;
    if (fd < 0 || (addr && !addrlen) || conc__deadline_strict(timeout, &dl))
        return CONC_EINVAL;
    int mode = classify(fd);
    if (mode < 0)
        return mode;
    /* On io_uring, a listener the hub already accepts on (multishot) has
     * its connections queued there: take them, never race accept(2). */
    conc__fdop_t op = {.kind = CONC__OP_ACCEPT, .fd = fd, .out_addr = addr, .out_addrlen = addrlen};
    bool use_op = mode != M_BLOCK;
    for (;;) {
        if (use_op) {
            op.armed_only = true;
            ssize_t o = conc__fd_op(&op, dl);
            if (o >= 0)
                return (int)o;
            if (o == CONC_ENOTSUP)
                use_op = false;
            else if (o != CONC_EAGAIN)
                return (int)o;
        }
        if (mode == M_BLOCK) {
            int rc = wait_fd(fd, CONC__FD_READ, dl, true);
            if (rc)
                return rc;
        }
        int c = accept4(fd, addr, addr ? addrlen : NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c >= 0) {
            conc__fd_forget(c); /* a number closed behind our hub's back: not watched */
            return c;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return CONC_ESYS;
        if (use_op && dl != 0) {
            op.armed_only = false;
            ssize_t o = conc__fd_op(&op, dl);
            if (o >= 0)
                return (int)o;
            if (o == CONC_EAGAIN)
                continue; /* the kernel ended the accept: accept(2) says why */
            if (o != CONC_ENOTSUP)
                return (int)o;
            use_op = false;
        }
        int rc = conc__fd_wait(fd, CONC__FD_READ, dl);
        if (rc)
            return rc;
    }
}

/* Park the caller until min(now + ns, dl): 0 to go on, or the code that
 * ends the operation (its own deadline passed, a scope fired, a kill). */
static int nap(int64_t ns, int64_t dl)
{
    int64_t until = conc__now_ns() + ns;
    if (until > dl)
        until = dl;
    conc__waiter_t w;
    conc__waiter_init(&w);
    w.spun = 1; /* nobody will unpark it: do not spin */
    w.kind = CONC__WAIT_SLEEP;
    int rc = conc__park(&w, until);
    if (rc == 0 || (rc == CONC_ETIMEDOUT && !conc__park_interrupted(rc)))
        return conc__now_ns() >= dl ? CONC_ETIMEDOUT : 0;
    return rc;
}

static int connect_nb(int fd, const struct sockaddr *addr, socklen_t addrlen, int64_t dl)
{
    int64_t backoff = 1000000;
    if (dl != 0) {
        /* io_uring: the kernel connects and reports the outcome */
        conc__fdop_t op = {.kind = CONC__OP_CONNECT, .fd = fd, .addr = addr, .addrlen = addrlen};
        ssize_t o = conc__fd_op(&op, dl);
        if (o >= 0)
            return 0;
        if (o == CONC_ESYS && errno == EAGAIN && addr->sa_family == AF_UNIX) {
            /* backlog full: the loop below backs off and retries */
        } else if (o == CONC_ESYS && (errno == EISCONN)) {
            return 0;
        } else if (o != CONC_ENOTSUP && o != CONC_EAGAIN) {
            return (int)o;
        }
    }
    for (;;) {
        if (connect(fd, addr, addrlen) == 0)
            return 0;
        int e = errno;
        if (e == EINPROGRESS || e == EALREADY || e == EINTR)
            break;
        if (e == EAGAIN && addr->sa_family == AF_UNIX) { /* backlog full */
            int rc = nap(backoff, dl);
            if (rc)
                return rc;
            if (backoff < 32000000)
                backoff *= 2;
            continue;
        }
        return CONC_ESYS;
    }
    for (;;) {
        /* loopback connects are often done by now: timeout 0 may succeed */
        int rc = wait_fd(fd, CONC__FD_WRITE, dl, dl <= conc__now_ns());
        if (rc)
            return rc;
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            return CONC_ESYS;
        if (err) {
            errno = err;
            return CONC_ESYS;
        }
        struct sockaddr_storage peer;
        len = sizeof peer;
        if (getpeername(fd, (struct sockaddr *)&peer, &len) == 0)
            return 0;
        if (errno != ENOTCONN)
            return CONC_ESYS;
        /* spurious: still connecting */
    }
}

int conc_connect(int fd, const struct sockaddr *addr, socklen_t addrlen, double timeout)
{
    int64_t dl;
    if (fd < 0 || !addr || conc__deadline_strict(timeout, &dl))
        return CONC_EINVAL;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return CONC_ESYS;
    bool restore = !(fl & O_NONBLOCK);
    if (restore && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return CONC_ESYS;
    int rc = connect_nb(fd, addr, addrlen, dl);
    if (restore) {
        int e = errno;
        fcntl(fd, F_SETFL, fl);
        errno = e;
    }
    return rc;
}

int conc_close(int fd)
{
    if (fd < 0)
        return CONC_EINVAL;
    conc__fd_forget(fd);
    /* Linux releases the fd even when close fails with EINTR: never retry
     * (the number may already belong to someone else). */
    if (close(fd) < 0 && errno != EINTR)
        return CONC_ESYS;
    return 0;
}
