/*
 * io.c — the byte-moving calls of libconc_patch.so: read, readv, recv,
 * recvfrom, recvmsg; write, writev, send, sendto, sendmsg; accept,
 * accept4, connect (design: patch.c; the list and the reasons:
 * docs/patch.md).
 *
 * Sockets. Every read-side call is a recvmsg(2) and every write-side call
 * a sendmsg(2) with MSG_DONTWAIT added, which never blocks whatever the
 * fd's O_NONBLOCK says (read(2) on a socket is recv with no flags, so the
 * kernel does the same work). When it would block (EAGAIN) and the caller
 * asked to block (the fd is blocking and MSG_DONTWAIT was not passed), the
 * green thread parks until the socket is ready or SO_RCVTIMEO /
 * SO_SNDTIMEO passes (then -1 EAGAIN, as the kernel does), and tries
 * again. Writes go on until everything is sent, as a blocking send does;
 * a partial count is returned when a timeout, a cut or an error comes
 * after some bytes went (so does the kernel). MSG_WAITALL reads go on
 * until the buffer is full or the stream ends.
 *
 * Other fds. Regular files, directories and block devices are always
 * "ready" to the kernel, so they go to libc unchanged (gevent does not
 * patch files either: a disk read cannot be waited for with epoll). A
 * non-blocking fd goes to libc unchanged. A blocking pipe, FIFO, terminal
 * or character device is waited on first, then read or written once: a
 * read then finds data (or the end), and a pipe write is cut into pieces
 * of at most PIPE_BUF bytes, each written once the pipe has room — Linux
 * reports a pipe writable only with a free page, and a write of up to
 * PIPE_BUF fits in one, so none blocks (unless another writer races us;
 * writes of up to PIPE_BUF stay atomic).
 *
 * accept on a blocking listening socket waits for a connection, then
 * accepts (if another thread takes it first, accept(2) blocks); connect
 * on a blocking socket makes it non-blocking for the call and restores
 * its flags before returning.
 */
#include "patch/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define IOV_STACK 16

static bool is_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 || (fl & O_NONBLOCK);
}

static bool would_block(void) { return errno == EAGAIN || errno == EWOULDBLOCK; }

static size_t iov_len(const struct iovec *v, size_t n)
{
    size_t t = 0;
    for (size_t i = 0; i < n; i++)
        t += v[i].iov_len;
    return t;
}

/* Drop the first k bytes of the iovec array (a private copy). */
static void iov_advance(struct iovec **v, size_t *n, size_t k)
{
    while (*n && k >= (*v)->iov_len) {
        k -= (*v)->iov_len;
        (*v)++;
        (*n)--;
    }
    if (*n && k) {
        (*v)->iov_base = (char *)(*v)->iov_base + k;
        (*v)->iov_len -= k;
    }
}

/* A private copy of iov (on the stack when small). NULL: out of memory. */
static struct iovec *iov_copy(struct iovec *stack, const struct iovec *iov, size_t n)
{
    struct iovec *c = n <= IOV_STACK ? stack : malloc(n * sizeof *c);
    if (c && n)
        memcpy(c, iov, n * sizeof *c);
    return c;
}

static void iov_free(struct iovec *stack, struct iovec *c)
{
    if (c != stack)
        free(c);
}

/* The last wait's end as a call result: -1 and errno. */
static ssize_t fail_wait(int w, ssize_t done)
{
    if (done > 0)
        return done;
    errno = w == W_TIMEOUT ? EAGAIN : conc__patch_cut_errno();
    return -1;
}

/* ----------------------------------------------------------- sockets */

/* Read side on a socket: m as the caller gave it (recvmsg) or built for
 * read/recv/recvfrom. Returns as recvmsg(2); ENOTSOCK comes back for the
 * caller to take the non-socket path. */
static ssize_t sock_in(int fd, struct msghdr *m, int flags)
{
    socklen_t namelen = m->msg_namelen;
    size_t ctllen = m->msg_controllen;
    /* MSG_WAITALL means "fill the buffer" on stream sockets only: on a
     * datagram or seqpacket socket one recv is one message (recv(2)) */
    int wall = flags & MSG_WAITALL;
    if (wall) {
        int type = 0;
        socklen_t tl = sizeof type;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type != SOCK_STREAM)
            wall = 0;
    }
    ssize_t r = REAL(recvmsg)(fd, m, flags | MSG_DONTWAIT);
    bool waitall = wall && r > 0;
    if ((r < 0 && !would_block()) || (r >= 0 && !waitall) || (flags & MSG_DONTWAIT))
        return r;
    size_t want = iov_len(m->msg_iov, m->msg_iovlen);
    if (waitall && (size_t)r >= want)
        return r;
    if (is_nonblocking(fd))
        return r;
    double dl = conc__patch_sock_deadline(fd, false);
    /* MSG_WAITALL after a part: the rest goes into the rest of the iovecs */
    struct iovec stack[IOV_STACK], *base = NULL, *v = m->msg_iov;
    size_t nv = m->msg_iovlen, done = r > 0 ? (size_t)r : 0;
    int oflags = r > 0 ? m->msg_flags : 0;
    if (done) {
        base = v = iov_copy(stack, m->msg_iov, nv);
        if (!base)
            return (ssize_t)done;
        iov_advance(&v, &nv, done);
    }
    struct msghdr mm = *m;
    ssize_t res;
    for (;;) {
        int w = conc__patch_wait_fd(fd, POLLIN, dl);
        if (w == W_TIMEOUT || w == W_CUT) {
            res = fail_wait(w, (ssize_t)done);
            break;
        }
        if (done) { /* the address and control data came with the first part */
            mm.msg_iov = v;
            mm.msg_iovlen = nv;
            mm.msg_name = NULL;
            mm.msg_namelen = 0;
            mm.msg_control = NULL;
            mm.msg_controllen = 0;
        } else {
            m->msg_namelen = namelen;
            m->msg_controllen = ctllen;
        }
        r = REAL(recvmsg)(fd, done ? &mm : m, (flags | MSG_DONTWAIT) & ~(w == W_ERROR ? MSG_DONTWAIT : 0));
        if (r < 0 && would_block())
            continue;
        if (r < 0) {
            res = done ? (ssize_t)done : -1;
            break;
        }
        if (!wall || r == 0) {
            res = (ssize_t)done + r;
            break;
        }
        if (!done)
            oflags = m->msg_flags;
        done += (size_t)r;
        if (done >= want) {
            res = (ssize_t)done;
            break;
        }
        if (!base) {
            base = v = iov_copy(stack, m->msg_iov, m->msg_iovlen);
            nv = m->msg_iovlen;
            if (!base) {
                res = (ssize_t)done;
                break;
            }
            iov_advance(&v, &nv, done);
        } else {
            iov_advance(&v, &nv, (size_t)r);
        }
    }
    if (done && res > 0)
        m->msg_flags = oflags;
    if (base)
        iov_free(stack, base);
    return res;
}

/* Write side on a socket, everything in m (its iovecs a private copy we
 * may advance). Returns as sendmsg(2) on a blocking socket: all of it,
 * or a part when a timeout, a cut or an error comes after some bytes. */
static ssize_t sock_out(int fd, struct msghdr *m, int flags, bool *notsock)
{
    size_t want = iov_len(m->msg_iov, m->msg_iovlen), done = 0;
    ssize_t r = REAL(sendmsg)(fd, m, flags | MSG_DONTWAIT);
    if (r < 0 && errno == ENOTSOCK) {
        *notsock = true;
        return -1;
    }
    if ((r < 0 && !would_block()) || (r >= 0 && (size_t)r >= want) || (flags & MSG_DONTWAIT) ||
        is_nonblocking(fd))
        return r;
    double dl = conc__patch_sock_deadline(fd, true);
    struct iovec *v = m->msg_iov;
    size_t nv = m->msg_iovlen;
    if (r > 0) {
        done = (size_t)r;
        iov_advance(&v, &nv, done);
    }
    for (;;) {
        if (done) { /* control data went with the first part */
            m->msg_control = NULL;
            m->msg_controllen = 0;
        }
        int w = conc__patch_wait_fd(fd, POLLOUT, dl);
        if (w == W_TIMEOUT || w == W_CUT)
            return fail_wait(w, (ssize_t)done);
        m->msg_iov = v;
        m->msg_iovlen = nv;
        r = REAL(sendmsg)(fd, m, flags | (w == W_ERROR ? 0 : MSG_DONTWAIT));
        if (r < 0 && would_block())
            continue;
        if (r < 0)
            return done ? (ssize_t)done : -1;
        done += (size_t)r;
        if (done >= want)
            return (ssize_t)done;
        iov_advance(&v, &nv, (size_t)r);
    }
}

/* ------------------------------------------------------- other fds */

/* 1 when fd is a blocking pipe, FIFO, terminal or device we should wait
 * on (2 for a pipe or FIFO); 0 when libc should have the call as is. */
static int waitable(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || S_ISREG(st.st_mode) || S_ISDIR(st.st_mode) || S_ISBLK(st.st_mode))
        return 0;
    if (is_nonblocking(fd))
        return 0;
    return S_ISFIFO(st.st_mode) ? 2 : 1;
}

static ssize_t other_in(int fd, const struct iovec *iov, int n)
{
    if (iov_len(iov, (size_t)n) > 0 && waitable(fd)) { /* a 0-byte read returns at once */
        int w = conc__patch_wait_fd(fd, POLLIN, PATCH_NEVER);
        if (w == W_CUT)
            return fail_wait(w, 0);
    }
    return n == 1 ? REAL(read)(fd, iov[0].iov_base, iov[0].iov_len) : REAL(readv)(fd, iov, n);
}

static ssize_t other_out(int fd, const struct iovec *iov, int n)
{
    int kind = iov_len(iov, (size_t)n) > 0 ? waitable(fd) : 0; /* a 0-byte write returns at once */
    if (!kind)
        return n == 1 ? REAL(write)(fd, iov[0].iov_base, iov[0].iov_len) : REAL(writev)(fd, iov, n);
    if (kind == 1) {
        int w = conc__patch_wait_fd(fd, POLLOUT, PATCH_NEVER);
        if (w == W_CUT)
            return fail_wait(w, 0);
        return n == 1 ? REAL(write)(fd, iov[0].iov_base, iov[0].iov_len) : REAL(writev)(fd, iov, n);
    }
    /* a pipe: PIPE_BUF at a time, each once there is room */
    struct iovec stack[IOV_STACK], *base = iov_copy(stack, iov, (size_t)n), *v = base;
    if (!base)
        return REAL(writev)(fd, iov, n);
    size_t nv = (size_t)n, want = iov_len(iov, (size_t)n), done = 0;
    ssize_t res = 0;
    while (done < want) {
        int w = conc__patch_wait_fd(fd, POLLOUT, PATCH_NEVER);
        if (w == W_CUT) {
            res = fail_wait(w, (ssize_t)done);
            break;
        }
        /* the first PIPE_BUF bytes of what is left */
        struct iovec part[IOV_STACK];
        size_t np = 0, take = 0;
        for (size_t i = 0; i < nv && np < IOV_STACK && take < PIPE_BUF; i++) {
            size_t l = v[i].iov_len < PIPE_BUF - take ? v[i].iov_len : PIPE_BUF - take;
            part[np].iov_base = v[i].iov_base;
            part[np++].iov_len = l;
            take += l;
        }
        ssize_t r = REAL(writev)(fd, part, (int)np);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            res = done ? (ssize_t)done : -1;
            break;
        }
        done += (size_t)r;
        res = (ssize_t)done;
        iov_advance(&v, &nv, (size_t)r);
    }
    iov_free(stack, base);
    return res;
}

/* ------------------------------------------------------- entry points */

static ssize_t in(int fd, struct msghdr *m, int flags)
{
    ssize_t r = sock_in(fd, m, flags);
    if (r < 0 && errno == ENOTSOCK)
        return other_in(fd, m->msg_iov, (int)m->msg_iovlen);
    return r;
}

static ssize_t out_iov(int fd, const struct iovec *iov, int n)
{
    struct iovec stack[IOV_STACK], *c = iov_copy(stack, iov, (size_t)n);
    if (!c)
        return REAL(writev)(fd, iov, n);
    struct msghdr m = {.msg_iov = c, .msg_iovlen = (size_t)n};
    bool notsock = false;
    ssize_t r = sock_out(fd, &m, 0, &notsock);
    iov_free(stack, c);
    if (notsock)
        return other_out(fd, iov, n);
    return r;
}

PATCH_EXPORT ssize_t read(int fd, void *buf, size_t n)
{
    if (!PATCH_GREEN())
        return REAL(read)(fd, buf, n);
    struct iovec v = {buf, n};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
    return in(fd, &m, 0);
}

PATCH_EXPORT ssize_t readv(int fd, const struct iovec *iov, int n)
{
    if (!PATCH_GREEN() || n < 0 || n > IOV_MAX)
        return REAL(readv)(fd, iov, n);
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
    return in(fd, &m, 0);
}

PATCH_EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    if (!PATCH_GREEN() || (flags & MSG_DONTWAIT))
        return REAL(recv)(fd, buf, n, flags);
    struct iovec v = {buf, n};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
    return sock_in(fd, &m, flags);
}

PATCH_EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr, socklen_t *alen)
{
    if (!PATCH_GREEN() || (flags & MSG_DONTWAIT) || (addr && !alen))
        return REAL(recvfrom)(fd, buf, n, flags, addr, alen);
    struct iovec v = {buf, n};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_name = addr, .msg_namelen = addr ? *alen : 0};
    ssize_t r = sock_in(fd, &m, flags);
    if (r >= 0 && addr)
        *alen = m.msg_namelen;
    return r;
}

PATCH_EXPORT ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
    if (!PATCH_GREEN() || (flags & MSG_DONTWAIT) || !m)
        return REAL(recvmsg)(fd, m, flags);
    return sock_in(fd, m, flags);
}

PATCH_EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
    if (!PATCH_GREEN())
        return REAL(write)(fd, buf, n);
    struct iovec v = {(void *)buf, n};
    return out_iov(fd, &v, 1);
}

PATCH_EXPORT ssize_t writev(int fd, const struct iovec *iov, int n)
{
    if (!PATCH_GREEN() || n < 0 || n > IOV_MAX)
        return REAL(writev)(fd, iov, n);
    return out_iov(fd, iov, n);
}

PATCH_EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    if (!PATCH_GREEN() || (flags & MSG_DONTWAIT))
        return REAL(send)(fd, buf, n, flags);
    struct iovec v = {(void *)buf, n};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
    bool notsock = false;
    ssize_t r = sock_out(fd, &m, flags, &notsock);
    if (notsock)
        errno = ENOTSOCK;
    return r;
}

PATCH_EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *addr,
                            socklen_t alen)
{
    if (!PATCH_GREEN() || (flags & MSG_DONTWAIT))
        return REAL(sendto)(fd, buf, n, flags, addr, alen);
    struct iovec v = {(void *)buf, n};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_name = (void *)addr, .msg_namelen = addr ? alen : 0};
    bool notsock = false;
    ssize_t r = sock_out(fd, &m, flags, &notsock);
    if (notsock)
        errno = ENOTSOCK;
    return r;
}

PATCH_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    if (!PATCH_GREEN() || (flags & MSG_DONTWAIT) || !msg || msg->msg_iovlen > IOV_MAX)
        return REAL(sendmsg)(fd, msg, flags);
    struct iovec stack[IOV_STACK], *c = iov_copy(stack, msg->msg_iov, msg->msg_iovlen);
    if (!c)
        return REAL(sendmsg)(fd, msg, flags);
    struct msghdr m = *msg;
    m.msg_iov = c;
    bool notsock = false;
    ssize_t r = sock_out(fd, &m, flags, &notsock);
    iov_free(stack, c);
    if (notsock)
        errno = ENOTSOCK;
    return r;
}

/* ------------------------------------------------- accept and connect */

static int accept_green(int fd, struct sockaddr *addr, socklen_t *alen, int flags, bool four)
{
    if (!is_nonblocking(fd)) {
        double dl = conc__patch_sock_deadline(fd, false);
        for (;;) {
            int w = conc__patch_wait_fd(fd, POLLIN, dl);
            if (w == W_TIMEOUT || w == W_CUT)
                return (int)fail_wait(w, 0);
            struct pollfd p = {.fd = fd, .events = POLLIN};
            if (w == W_ERROR || REAL(poll)(&p, 1, 0) != 0)
                break; /* a connection waits (or an error: accept says which) */
        }
    }
    return four ? REAL(accept4)(fd, addr, alen, flags) : REAL(accept)(fd, addr, alen);
}

PATCH_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *alen)
{
    if (!PATCH_GREEN())
        return REAL(accept)(fd, addr, alen);
    return accept_green(fd, addr, alen, 0, false);
}

PATCH_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *alen, int flags)
{
    if (!PATCH_GREEN())
        return REAL(accept4)(fd, addr, alen, flags);
    return accept_green(fd, addr, alen, flags, true);
}

/* A blocking connect, cooperatively: non-blocking for the call, flags
 * restored. Its ends as the kernel's: 0; -1 with the connection's error;
 * SO_SNDTIMEO passed: EINPROGRESS (the kernel's answer then); cut: the
 * cut errno (EINTR: like a signal, the connection goes on in the
 * background). */
PATCH_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t alen)
{
    if (!PATCH_GREEN())
        return REAL(connect)(fd, addr, alen);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (fl & O_NONBLOCK) || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
        return REAL(connect)(fd, addr, alen);
    double dl = conc__patch_sock_deadline(fd, true);
    int rc = REAL(connect)(fd, addr, alen), e = errno;
    double backoff = 0.001;
    while (rc != 0 && e == EAGAIN && addr && addr->sa_family == AF_UNIX) {
        /* a Unix listener's backlog is full: try again a little later */
        double left = dl == PATCH_NEVER ? backoff : dl - conc_monotonic();
        if (left <= 0) {
            e = EAGAIN;
            goto out;
        }
        int s = conc_sleep(left < backoff ? left : backoff);
        if (s != 0) {
            e = conc__patch_cut_errno();
            goto out;
        }
        if (backoff < 0.032)
            backoff *= 2;
        rc = REAL(connect)(fd, addr, alen);
        e = errno;
    }
    while (rc != 0 && (e == EINPROGRESS || e == EALREADY)) {
        int w = conc__patch_wait_fd(fd, POLLOUT, dl);
        if (w == W_TIMEOUT) {
            e = EINPROGRESS;
            break;
        }
        if (w == W_CUT) {
            e = conc__patch_cut_errno();
            break;
        }
        if (w == W_ERROR) {
            /* the hub cannot wait for fd (select's FD_SETSIZE, no memory):
             * wait as a plain thread would, or this loop would spin */
            int ms = -1;
            if (dl != PATCH_NEVER) {
                double left = (dl - conc_monotonic()) * 1e3;
                ms = left <= 0 ? 0 : left > 1e9 ? 1000000000 : (int)left + 1;
            }
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int pr = REAL(poll)(&p, 1, ms);
            if (pr == 0) {
                e = EINPROGRESS;
                break;
            }
            if (pr < 0 && errno != EINTR) {
                e = errno;
                break;
            }
        }
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
            e = errno;
            break;
        }
        if (err) {
            e = err;
            break;
        }
        struct sockaddr_storage peer;
        len = sizeof peer;
        if (getpeername(fd, (struct sockaddr *)&peer, &len) == 0) {
            rc = 0;
            break;
        }
        if (errno != ENOTCONN) {
            e = errno;
            break;
        }
    }
out:
    fcntl(fd, F_SETFL, fl);
    if (rc == 0)
        return 0;
    errno = e;
    return -1;
}

/* _FORTIFY_SOURCE builds call these instead (libc's go to its internal
 * read, past us). Same checks as libc: a length beyond the buffer aborts. */
extern void __chk_fail(void) __attribute__((noreturn));

PATCH_EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
    if (n > buflen)
        __chk_fail();
    return read(fd, buf, n);
}

PATCH_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags)
{
    if (n > buflen)
        __chk_fail();
    return recv(fd, buf, n, flags);
}

PATCH_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags, struct sockaddr *addr,
                                    socklen_t *alen)
{
    if (n > buflen)
        __chk_fail();
    return recvfrom(fd, buf, n, flags, addr, alen);
}
