/* fdwait.h — wait until an fd is ready, in whatever way suits the caller
 * (private; the cooperative I/O of conc/io.h is built on it).
 *
 * On a green thread (or an OS thread whose hub runs green threads) the
 * wait parks only the caller: the fd is watched by the hub's epoll. On a
 * plain OS thread it is a poll(2). Timeout scopes (conc_timeout_begin) and
 * kills apply either way. */
#ifndef CONC_CORE_FDWAIT_H
#define CONC_CORE_FDWAIT_H

#include <stdint.h>

enum { CONC__FD_READ = 1, CONC__FD_WRITE = 2 };

/* Wait until fd is readable (CONC__FD_READ) or writable (CONC__FD_WRITE) —
 * errors and hang-ups count as ready, so the caller's next syscall reports
 * them — or the absolute deadline (CONC__NO_DEADLINE = none). Returns 0,
 * CONC_ETIMEDOUT, CONC_EKILLED (a green thread was killed), CONC_EINVAL
 * (bad fd or events), CONC_ESYS (errno set). Readiness may be spurious:
 * retry the syscall and wait again on EAGAIN. */
int conc__fd_wait(int fd, int events, int64_t deadline);

/* Forget fd before it is closed (a green thread's hub may be watching it).
 * Harmless for fds never waited on. */
void conc__fd_forget(int fd);

#endif
