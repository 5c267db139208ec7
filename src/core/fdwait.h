/* fdwait.h — wait until an fd is ready, in whatever way suits the caller
 * (private; the cooperative I/O of conc/io.h is built on it).
 *
 * On a green thread (or an OS thread whose hub runs green threads) the
 * wait parks only the caller: the fd is watched by the hub's epoll. On a
 * plain OS thread it is a poll(2). Timeout scopes (conc_timeout_begin) and
 * kills apply either way. */
#ifndef CONC_CORE_FDWAIT_H
#define CONC_CORE_FDWAIT_H

#include <stdbool.h>
#include <stdint.h>

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

/* Forget fd before it is closed (a green thread's hub may be watching it).
 * Harmless for fds never waited on. */
void conc__fd_forget(int fd);

#endif
