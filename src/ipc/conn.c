/*
 * conn.c — multiprocessing.Pipe / Connection.
 *
 * Framing: each message is an 8-byte native-endian length and its bytes
 * (both ends run on the same machine). A message of up to SMALL bytes is
 * copied behind its header on the stack and sent with one write, so the
 * reader usually finds a whole message after one read; larger ones go out
 * with writev (header + caller's buffer), continuing after partial writes.
 *
 * Reading is buffered: each end owns a BUF-byte buffer that read() fills
 * with whatever the kernel has (possibly several messages). A message is
 * copied out of the buffer; the part of a large message the buffer does
 * not hold is read straight into the destination, never past its end, so
 * the next message stays in the kernel. poll() reports buffered bytes
 * without a syscall.
 *
 * Errors break the connection for good (Python closes it) when the stream
 * is no longer at a message boundary: a message over the limit (its bytes
 * are not read), an EOF or I/O error in the middle of a message.
 *
 * Colorless: every wait goes through conc__fd_wait (core/fdwait.h): a
 * green thread parks alone (its hub's epoll watches the fd) and a kill or
 * a Timeout scope cuts it short. A plain OS thread with no scope open
 * keeps the cheap path (a blocking read or write, no poll first). A wait
 * cut short before a message started leaves the connection as it was; one
 * cut in the middle of a message breaks it (as an EOF there does).
 *
 * SIGPIPE: sockets are written with MSG_NOSIGNAL; for pipes the signal is
 * blocked in the calling thread around the write and a SIGPIPE caused by
 * it is consumed, so a vanished reader is CONC_ESYS/EPIPE, never a signal.
 * That costs two sigmask calls per write, so a pipe end made while SIGPIPE
 * is ignored (as Python runs, and many servers) writes without the guard;
 * changing SIGPIPE back to its default afterwards is the caller's risk.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/fdwait.h"
#include "core/sys.h"
#include "ipc/internal.h"

#define BUF (64 * 1024)
#define SMALL 4096
#define HDR 8

/* Passed fds (send_handle / recv_handle; sockets only). Every socket read
 * is a recvmsg with room for RX_FDS fds (MSG_CMSG_CLOEXEC), since a plain
 * read would make the kernel drop fds riding on the bytes it returns.
 * Each fd received is queued with the stream range [start, end) of the
 * read that brought it; the kernel ends a read right after the bytes that
 * carried fds, so a handle message starting at stream offset S owns the
 * entries whose range holds S. Entries wholly before the next message
 * are strays (a peer attached fds to ordinary messages): closed. At most
 * FDQ_MAX wait; more are closed on arrival. */
#define RX_FDS 8
#define FDQ_MAX 32
#define FDQ_TRUNC 1 /* the control data was cut (MSG_CTRUNC): fds were lost */

typedef struct {
    int fd, flags;
    uint64_t start, end;
} fdent_t;

/* The body of a handle message: magic, then the number of fds (1). */
static const char HANDLE_MAGIC[8] = {'c', 'o', 'n', 'c', '-', 'f', 'd', 0};
#define HANDLE_LEN 12

struct conc_conn {
    int fd;
    bool readable, writable, sock, broken;
    bool sigpipe_ignored; /* SIGPIPE was SIG_IGN when it was made: no guard */
    size_t rpos, rlen; /* buffered bytes: rbuf[rpos, rlen) */
    char *rbuf;        /* BUF bytes when readable */
    uint64_t rtotal;   /* bytes read from the fd so far */
    fdent_t *fdq;      /* passed fds waiting (FDQ_MAX entries, lazily) */
    size_t nfdq;
    const void *tx_ctl; /* control data for the next sendmsg (send_handle) */
    size_t tx_ctl_len;
};

/* Stream offset of the next unread byte. */
static uint64_t conc__conn_rpos(const conc_conn_t *c) { return c->rtotal - (c->rlen - c->rpos); }

/* Close queued fds whose read ended at or before pos (strays). */
static void conc__conn_drop_fds(conc_conn_t *c, uint64_t pos)
{
    size_t k = 0;
    for (size_t i = 0; i < c->nfdq; i++) {
        if (c->fdq[i].end <= pos)
            close(c->fdq[i].fd);
        else
            c->fdq[k++] = c->fdq[i];
    }
    c->nfdq = k;
}

/* Queue the fds of a recvmsg that returned bytes [start, end). Any bytes
 * are checked: only SOL_SOCKET/SCM_RIGHTS payloads are taken, whole ints
 * only; other control messages are ignored. */
static void conc__conn_take_fds(conc_conn_t *c, struct msghdr *m, uint64_t start, uint64_t end)
{
    int flags = (m->msg_flags & MSG_CTRUNC) ? FDQ_TRUNC : 0;
    bool any = false;
    for (struct cmsghdr *h = CMSG_FIRSTHDR(m); h; h = CMSG_NXTHDR(m, h)) {
        if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS || h->cmsg_len < CMSG_LEN(0))
            continue;
        size_t n = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const unsigned char *d = CMSG_DATA(h);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, d + i * sizeof(int), sizeof fd);
            if (fd < 0)
                continue;
            any = true;
            if (!c->fdq && !(c->fdq = malloc(FDQ_MAX * sizeof *c->fdq))) {
                close(fd);
                continue;
            }
            if (c->nfdq == FDQ_MAX) {
                close(fd); /* too many waiting: a flood is not our problem */
                continue;
            }
            c->fdq[c->nfdq++] = (fdent_t){fd, flags, start, end};
        }
    }
    if (flags && !any && c->nfdq < FDQ_MAX && (c->fdq || (c->fdq = malloc(FDQ_MAX * sizeof *c->fdq))))
        c->fdq[c->nfdq++] = (fdent_t){-1, flags, start, end}; /* remember the loss */
}

static int conc__conn_make(int fd, bool r, bool w, conc_conn_t **out)
{
    conc_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return CONC_ENOMEM;
    if (r && !(c->rbuf = malloc(BUF))) {
        free(c);
        return CONC_ENOMEM;
    }
    struct stat st;
    c->fd = fd;
    c->readable = r;
    c->writable = w;
    c->sock = fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
    if (w && !c->sock) {
        struct sigaction sa;
        c->sigpipe_ignored = sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN;
    }
    *out = c;
    return 0;
}

int conc_pipe(bool duplex, conc_conn_t **a, conc_conn_t **b)
{
    if (!a || !b)
        return CONC_EINVAL;
    *a = *b = NULL;
    int fds[2];
    if (duplex) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
            return CONC_ESYS;
    } else if (pipe2(fds, O_CLOEXEC) != 0) {
        return CONC_ESYS;
    }
    int rc = conc__conn_make(fds[0], true, duplex, a);
    if (rc == 0 && (rc = conc__conn_make(fds[1], duplex, true, b)) != 0) {
        conc_conn_close(*a);
        *a = NULL;
        close(fds[1]);
        return rc;
    }
    if (rc) {
        close(fds[0]);
        close(fds[1]);
    }
    return rc;
}

int conc_conn_from_fd(int fd, bool readable, bool writable, conc_conn_t **out)
{
    if (!out)
        return CONC_EINVAL;
    *out = NULL;
    if (fd < 0 || (!readable && !writable))
        return CONC_EINVAL;
    return conc__conn_make(fd, readable, writable, out);
}

int conc_conn_fileno(const conc_conn_t *c) { return c && c->fd >= 0 ? c->fd : CONC_EINVAL; }
bool conc_conn_readable(const conc_conn_t *c) { return c && c->readable; }
bool conc_conn_writable(const conc_conn_t *c) { return c && c->writable; }

int conc_conn_set_inheritable(conc_conn_t *c, bool inheritable)
{
    if (!c || c->fd < 0)
        return CONC_EINVAL;
    int fl = fcntl(c->fd, F_GETFD);
    if (fl < 0)
        return CONC_ESYS;
    fl = inheritable ? (fl & ~FD_CLOEXEC) : (fl | FD_CLOEXEC);
    return fcntl(c->fd, F_SETFD, fl) == 0 ? 0 : CONC_ESYS;
}

int conc_conn_close(conc_conn_t *c)
{
    if (!c)
        return 0;
    int rc = 0;
    if (c->fd >= 0)
        conc__fd_forget(c->fd); /* a hub may watch it (green waits) */
    if (c->fd >= 0 && close(c->fd) != 0 && errno != EINTR)
        rc = CONC_ESYS;
    for (size_t i = 0; i < c->nfdq; i++)
        if (c->fdq[i].fd >= 0)
            close(c->fdq[i].fd);
    free(c->fdq);
    free(c->rbuf);
    free(c);
    return rc;
}

/* Must the caller wait for readiness before a read or write that could
 * block? A green context (its hub must not block) or an open Timeout
 * scope (the syscall would ignore it). */
static inline bool conc__conn_wait_first(void)
{
    conc__ctx_t *x = conc__ctx();
    return x->ops != NULL || x->scope_dl != 0;
}

/* Ready now (level-triggered)? A hub watches fds edge-triggered, so
 * conc__fd_wait must only follow a call that found the fd not ready. */
static bool conc__conn_ready(int fd, int events)
{
    struct pollfd p = {.fd = fd, .events = (short)(((events & CONC__FD_READ) ? POLLIN : 0) |
                                                   ((events & CONC__FD_WRITE) ? POLLOUT : 0))};
    int r;
    while ((r = poll(&p, 1, 0)) < 0 && errno == EINTR) {
    }
    return r != 0; /* an error: let the syscall report it */
}

/* Wait until fd is ready (CONC__FD_READ / WRITE) until deadline: 0, or
 * CONC_ETIMEDOUT, an interruption (CONC_EKILLED, CONC_ETIMEDOUT of a
 * scope), CONC_ESYS, CONC_EINVAL. */
static int conc__conn_wait_dl(int fd, int events, int64_t deadline)
{
    if (conc__conn_ready(fd, events))
        return 0;
    return conc__fd_wait(fd, events, deadline);
}

static int conc__conn_wait_fd(int fd, int events)
{
    return conc__conn_wait_dl(fd, events, CONC__NO_DEADLINE);
}

/* ------------------------------------------------------------------ send */

/* One write/sendmsg of iov, without SIGPIPE. Returns bytes or -1 (errno). */
static ssize_t conc__conn_writev(conc_conn_t *c, struct iovec *iov, int n)
{
    if (c->sock) {
        struct msghdr m = {.msg_iov = iov,
                           .msg_iovlen = (size_t)n,
                           .msg_control = (void *)c->tx_ctl,
                           .msg_controllen = c->tx_ctl_len};
        /* Waiting contexts never block in the call (EAGAIN: wait, retry). */
        ssize_t r = sendmsg(c->fd, &m, MSG_NOSIGNAL | (conc__conn_wait_first() ? MSG_DONTWAIT : 0));
        if (r >= 0) { /* control data goes with the first bytes only */
            c->tx_ctl = NULL;
            c->tx_ctl_len = 0;
        }
        return r;
    }
    if (c->sigpipe_ignored) /* as Python runs: a gone reader is just EPIPE */
        return n == 1 ? write(c->fd, iov[0].iov_base, iov[0].iov_len) : writev(c->fd, iov, n);
    return conc__writev_nosigpipe(c->fd, iov, n);
}

/* Write all of iov[0..n), continuing after partial writes and EINTR. */
static int conc__conn_write_all(conc_conn_t *c, struct iovec *iov, int n)
{
    bool started = false;
    while (n > 0) {
        if (!c->sock && conc__conn_wait_first()) {
            /* A pipe cannot be written without blocking per call: wait
             * until it takes bytes (it may still block for the rest of a
             * large message). */
            int w = conc__conn_wait_fd(c->fd, CONC__FD_WRITE);
            if (w) {
                if (started)
                    c->broken = true;
                return w;
            }
        }
        ssize_t r = conc__conn_writev(c, iov, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                int w = conc__conn_wait_fd(c->fd, CONC__FD_WRITE);
                if (w) {
                    if (started)
                        c->broken = true; /* the peer saw half a message */
                    return w;
                }
                continue;
            }
            if (started)
                c->broken = true; /* the peer saw half a message */
            return CONC_ESYS;
        }
        started = true;
        size_t done = (size_t)r;
        while (n > 0 && done >= iov[0].iov_len) {
            done -= iov[0].iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov[0].iov_base = (char *)iov[0].iov_base + done;
            iov[0].iov_len -= done;
        }
    }
    return 0;
}

int conc_conn_send_bytes(conc_conn_t *c, const void *buf, size_t len)
{
    if (!c || c->broken || !c->writable || (!buf && len > 0))
        return CONC_EINVAL;
    uint64_t h = (uint64_t)len;
    if (len <= SMALL) {
        char tmp[HDR + SMALL];
        memcpy(tmp, &h, HDR);
        if (len)
            memcpy(tmp + HDR, buf, len);
        struct iovec iov = {tmp, HDR + len};
        return conc__conn_write_all(c, &iov, 1);
    }
    struct iovec iov[2] = {{&h, HDR}, {(void *)buf, len}};
    return conc__conn_write_all(c, iov, 2);
}

/* ------------------------------------------------------------------ recv */

/* One read into dst (at most cap). Returns bytes, 0 at EOF, or -1 after an
 * error (errno); EINTR and EAGAIN are retried. A wait cut short: -1 with
 * *intr set to the interruption. */
static ssize_t conc__conn_read(conc_conn_t *c, void *dst, size_t cap, int *intr)
{
    bool wait = conc__conn_wait_first();
    for (;;) {
        if (wait) {
            int w = conc__conn_wait_fd(c->fd, CONC__FD_READ);
            if (w) {
                *intr = w;
                return -1;
            }
        }
        ssize_t r;
        if (c->sock) {
            union {
                struct cmsghdr h;
                char b[CMSG_SPACE(RX_FDS * sizeof(int))];
            } ctl;
            struct iovec iov = {dst, cap};
            struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof ctl};
            r = recvmsg(c->fd, &m, MSG_CMSG_CLOEXEC | (wait ? MSG_DONTWAIT : 0));
            if (r >= 0 && (m.msg_controllen || (m.msg_flags & MSG_CTRUNC)))
                conc__conn_take_fds(c, &m, c->rtotal, c->rtotal + (uint64_t)r);
        } else {
            r = read(c->fd, dst, cap);
        }
        if (r >= 0) {
            c->rtotal += (uint64_t)r;
            return r;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            wait = true;
            continue;
        }
        return -1;
    }
}

/* Make at least need (<= BUF) bytes available in the buffer. */
static int conc__conn_fill(conc_conn_t *c, size_t need)
{
    while (c->rlen - c->rpos < need) {
        if (c->rpos == c->rlen) {
            c->rpos = c->rlen = 0;
        } else if (c->rpos > 0 && BUF - c->rpos < need) {
            memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
            c->rlen -= c->rpos;
            c->rpos = 0;
        }
        int intr = 0;
        ssize_t r = conc__conn_read(c, c->rbuf + c->rlen, BUF - c->rlen, &intr);
        if (r < 0 && intr)
            return intr; /* the buffer keeps what came: still at a boundary */
        if (r < 0) {
            if (c->rlen > c->rpos)
                c->broken = true;
            return CONC_ESYS;
        }
        if (r == 0) {
            if (c->rlen > c->rpos)
                c->broken = true; /* EOF in the middle of a message */
            return CONC_EEOF;
        }
        c->rlen += (size_t)r;
    }
    return 0;
}

/* Read the next header; *len gets the message length. */
static int conc__conn_header(conc_conn_t *c, uint64_t *len)
{
    if (!c || c->broken || !c->readable)
        return CONC_EINVAL;
    if (c->nfdq)
        conc__conn_drop_fds(c, conc__conn_rpos(c));
    int rc = conc__conn_fill(c, HDR);
    if (rc)
        return rc;
    memcpy(len, c->rbuf + c->rpos, HDR);
    return 0;
}

/* Copy the body (len bytes) of the message whose header is buffered. */
static int conc__conn_body(conc_conn_t *c, char *dst, size_t len)
{
    c->rpos += HDR;
    size_t have = c->rlen - c->rpos;
    if (len <= have) {
        memcpy(dst, c->rbuf + c->rpos, len);
        c->rpos += len;
        return 0;
    }
    if (len - have < BUF / 2) { /* finish through the buffer */
        memcpy(dst, c->rbuf + c->rpos, have);
        dst += have;
        len -= have;
        c->rpos = c->rlen = 0;
        int rc = conc__conn_fill(c, len);
        if (rc) {
            c->broken = true;
            return rc;
        }
        memcpy(dst, c->rbuf, len);
        c->rpos = len;
        return 0;
    }
    memcpy(dst, c->rbuf + c->rpos, have);
    c->rpos = c->rlen = 0;
    size_t done = have;
    while (done < len) {
        int intr = 0;
        ssize_t r = conc__conn_read(c, dst + done, len - done, &intr);
        if (r <= 0) {
            c->broken = true;
            return r == 0 ? CONC_EEOF : intr ? intr : CONC_ESYS;
        }
        done += (size_t)r;
    }
    return 0;
}

int conc_conn_recv_bytes(conc_conn_t *c, void **buf, size_t *len, size_t maxlength)
{
    if (!buf || !len)
        return CONC_EINVAL;
    *buf = NULL;
    *len = 0;
    uint64_t n;
    int rc = conc__conn_header(c, &n);
    if (rc)
        return rc;
    if ((maxlength && n > maxlength) || n > (uint64_t)SIZE_MAX - 1) {
        c->broken = true;
        return CONC_ERANGE;
    }
    char *p = malloc(n ? (size_t)n : 1);
    if (!p) {
        c->broken = true; /* its bytes are still in the stream */
        return CONC_ENOMEM;
    }
    rc = conc__conn_body(c, p, (size_t)n);
    if (rc) {
        free(p);
        return rc;
    }
    *buf = p;
    *len = (size_t)n;
    return 0;
}

int conc_conn_recv_bytes_into(conc_conn_t *c, void *buf, size_t cap, size_t *len)
{
    if (!len || (!buf && cap > 0))
        return CONC_EINVAL;
    *len = 0;
    uint64_t n;
    int rc = conc__conn_header(c, &n);
    if (rc)
        return rc;
    if (n > cap) {
        c->broken = true;
        *len = n > SIZE_MAX ? SIZE_MAX : (size_t)n;
        return CONC_ERANGE;
    }
    rc = conc__conn_body(c, buf, (size_t)n);
    if (rc == 0)
        *len = (size_t)n;
    return rc;
}

/* ------------------------------------------------------- passing fds */

int conc_conn_send_handle(conc_conn_t *c, int fd)
{
    if (!c || c->broken || !c->writable || fd < 0)
        return CONC_EINVAL;
    if (!c->sock)
        return CONC_ENOTSUP;
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    ctl.h.cmsg_level = SOL_SOCKET;
    ctl.h.cmsg_type = SCM_RIGHTS;
    ctl.h.cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(&ctl.h), &fd, sizeof fd);
    char msg[HDR + HANDLE_LEN];
    uint64_t h = HANDLE_LEN;
    uint32_t one = 1;
    memcpy(msg, &h, HDR);
    memcpy(msg + HDR, HANDLE_MAGIC, sizeof HANDLE_MAGIC);
    memcpy(msg + HDR + sizeof HANDLE_MAGIC, &one, sizeof one);
    c->tx_ctl = &ctl;
    c->tx_ctl_len = sizeof ctl;
    struct iovec iov = {msg, sizeof msg};
    int rc = conc__conn_write_all(c, &iov, 1);
    bool sent = c->tx_ctl == NULL;
    c->tx_ctl = NULL;
    c->tx_ctl_len = 0;
    if (rc == 0 && !sent)
        rc = CONC_ESYS;
    if (rc == CONC_ESYS && errno == EBADF)
        rc = CONC_EINVAL; /* fd is not open */
    return rc;
}

int conc_conn_recv_handle(conc_conn_t *c, int *fd)
{
    if (!fd)
        return CONC_EINVAL;
    *fd = -1;
    if (!c || c->broken || !c->readable)
        return CONC_EINVAL;
    if (!c->sock)
        return CONC_ENOTSUP;
    /* where the handle message starts: its header must be buffered first */
    uint64_t len;
    int rc = conc__conn_header(c, &len);
    if (rc)
        return rc;
    uint64_t start = conc__conn_rpos(c);
    char body[HANDLE_LEN];
    size_t got;
    rc = conc_conn_recv_bytes_into(c, body, sizeof body, &got);
    if (rc)
        return rc == CONC_ERANGE ? CONC_EBROKEN : rc; /* not a handle message */
    bool ok = got == HANDLE_LEN && memcmp(body, HANDLE_MAGIC, sizeof HANDLE_MAGIC) == 0;
    uint32_t count = 0;
    if (ok)
        memcpy(&count, body + sizeof HANDLE_MAGIC, sizeof count);
    /* the fds that came with this message's bytes */
    int mine = -1, nmine = 0;
    bool trunc = false;
    size_t k = 0;
    for (size_t i = 0; i < c->nfdq; i++) {
        fdent_t e = c->fdq[i];
        if (e.start <= start && start < e.end) {
            trunc |= (e.flags & FDQ_TRUNC) != 0;
            if (e.fd >= 0) {
                if (nmine++ == 0)
                    mine = e.fd;
                else
                    close(e.fd); /* extra fds: never handed out */
            }
        } else if (e.end <= start) {
            close(e.fd); /* strays before it */
        } else {
            c->fdq[k++] = e;
        }
    }
    c->nfdq = k;
    if (!ok || count != 1 || nmine != 1 || trunc) {
        if (mine >= 0)
            close(mine);
        return CONC_EBROKEN;
    }
    *fd = mine;
    return 0;
}

int conc__conn_wait_state(const conc_conn_t *c)
{
    if (!c || !c->readable || c->fd < 0)
        return CONC_EINVAL;
    return c->broken || c->rlen > c->rpos ? 1 : 0;
}

int conc_conn_poll(conc_conn_t *c, double timeout)
{
    if (!c || c->broken || !c->readable)
        return CONC_EINVAL;
    int64_t deadline;
    if (conc__deadline(timeout, &deadline) != 0)
        return CONC_EINVAL;
    if (c->rlen > c->rpos)
        return 0;
    /* data, EOF (POLLHUP) or an error recv will report; a kill or a
     * Timeout scope cuts it short (CONC_EKILLED / CONC_ETIMEDOUT) */
    int rc = conc__conn_wait_dl(c->fd, CONC__FD_READ, deadline);
    if (rc == CONC_ETIMEDOUT) {
        /* Time is up (or was at once, for timeout 0): one last look. Ready
         * now means satisfied, even if a scope cut the wait. */
        conc__cut_t cut = conc__cut_save(rc);
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int r;
        while ((r = poll(&p, 1, 0)) < 0 && errno == EINTR) {
        }
        if (r < 0)
            return CONC_ESYS;
        if (r > 0) {
            conc__cut_rearm(&cut);
            return 0;
        }
    }
    return rc == CONC_EINVAL ? CONC_ESYS : rc;
}
