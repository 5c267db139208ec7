/* fdwait.h — wait until an fd is ready, in whatever way suits the caller
 * (private; the cooperative I/O of conc/io.h is built on it).
 *
 * On a green thread (or an OS thread whose hub runs green threads) the
 * wait parks only the caller: the fd is watched by the hub's poller
 * (io/poller.h: epoll, io_uring, poll or select). On a
 * plain OS thread it is a poll(2). Timeout scopes (conc_timeout_begin) and
 * kills apply either way. */
#ifndef CONC_CORE_FDWAIT_H
#define CONC_CORE_FDWAIT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conc/base.h"

#include "core/park.h"

enum { CONC__FD_READ = 1, CONC__FD_WRITE = 2 };

/* Wait until fd is readable (CONC__FD_READ) or writable (CONC__FD_WRITE) —
 * errors and hang-ups count as ready, so the caller's next syscall reports
 * them — or the absolute deadline (CONC__NO_DEADLINE = none). Returns 0,
 * CONC_ETIMEDOUT, CONC_EKILLED (a green thread was killed), CONC_EINVAL
 * (bad fd or events), CONC_ESYS (errno set). Readiness may be spurious:
 * retry the syscall and wait again on EAGAIN. */
int conc__fd_wait(int fd, int events, int64_t deadline);

/* Readiness hints, so a cooperative read or write skips the syscall that
 * would only fail with EAGAIN. conc__fd_maybe_ready: false when the
 * caller's hub knows fd ran dry (EAGAIN, or a short transfer on a stream
 * socket)
 * and has seen no readiness since — wait first; true otherwise (always on
 * plain OS threads). conc__fd_short: the caller's read or write of fd moved
 * fewer bytes than asked, so (on a stream) it is drained / full now. */
static inline bool conc__fd_maybe_ready(int fd, int events)
{
    conc__ctx_t *ctx = conc__ctx();
    return !ctx->ops || !ctx->ops->fd_maybe_ready || ctx->ops->fd_maybe_ready(fd, events);
}
static inline void conc__fd_short(int fd, int events)
{
    conc__ctx_t *ctx = conc__ctx();
    if (ctx->ops && ctx->ops->fd_short)
        ctx->ops->fd_short(fd, events);
}

/* Completion-based I/O (a hub on io_uring): the whole operation is handed
 * to the kernel and the caller parks until it is done, instead of waiting
 * for readiness and then making the system call. */
enum { CONC__OP_RECV, CONC__OP_SEND, CONC__OP_READ, CONC__OP_WRITE, CONC__OP_ACCEPT, CONC__OP_CONNECT };
typedef struct conc__fdop {
    int kind;                    /* CONC__OP_* */
    int fd;
    void *buf;                   /* recv/send/read/write */
    size_t n;
    int flags;                   /* recv/send flags (no MSG_DONTWAIT) */
    const struct sockaddr *addr; /* connect */
    socklen_t addrlen;
    struct sockaddr *out_addr;   /* accept: the peer (may be NULL) */
    socklen_t *out_addrlen;
    bool armed_only;             /* accept: only if the hub already accepts on fd */
} conc__fdop_t;

/* Run op on fd, parking the caller until it completes, the absolute
 * deadline, or an interruption (kill, timeout scope) — a cut-short
 * operation is cancelled and its completion reaped before this returns,
 * so buf is never written afterwards. Returns what the system call would
 * (bytes >= 0, a new fd for accept, 0 for connect), CONC_ESYS with errno,
 * CONC_ETIMEDOUT / CONC_EKILLED..., CONC_EPERM (another context waits the
 * same way on fd), or: CONC_ENOTSUP — the caller's context does not do
 * completions (use the system call and conc__fd_wait); CONC_EAGAIN — it
 * did not happen, retry that way (accept: armed_only found no queue). */
static inline ssize_t conc__fd_op(const conc__fdop_t *op, int64_t deadline)
{
    conc__ctx_t *ctx = conc__ctx();
    return ctx->ops && ctx->ops->fd_op ? ctx->ops->fd_op(op, deadline) : CONC_ENOTSUP;
}

/* A cooperative transfer on a stream socket the caller's hub already
 * knows (its fast path: io/coop.c tries it first): recv (wr false) or
 * send (wr true) of up to n bytes with MSG_DONTWAIT (send: MSG_NOSIGNAL)
 * plus flags, waiting for readiness on EAGAIN until the absolute deadline
 * (not 0), and the same readiness hints as conc__fd_maybe_ready /
 * conc__fd_short. Returns bytes >= 0, CONC_ESYS with errno, the wait's
 * codes (CONC_ETIMEDOUT, CONC_EKILLED, CONC_EPERM...), or
 * CONC__FD_IO_SLOW: not done (another kind of context or backend, an fd
 * the hub does not know, a datagram socket, deadline 0, ENOTSOCK) — take
 * the general path, which starts over (nothing was transferred). */
#define CONC__FD_IO_SLOW ((ssize_t)INT32_MIN)
static inline ssize_t conc__fd_io(int fd, bool wr, void *buf, size_t n, int flags, int64_t deadline)
{
    conc__ctx_t *ctx = conc__ctx();
    return ctx->ops && ctx->ops->fd_io ? ctx->ops->fd_io(fd, wr, buf, n, flags, deadline) : CONC__FD_IO_SLOW;
}

/* Forget fd before it is closed (a green thread's hub may be watching it).
 * Harmless for fds never waited on. */
void conc__fd_forget(int fd);

#endif
