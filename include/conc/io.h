/*
 * conc/io.h — cooperative I/O: read, write, recv, send, accept and connect
 * with timeouts, which park only the calling green thread while the fd is
 * not ready (gevent.socket in C); plus small helpers to listen on and dial
 * TCP and Unix addresses.
 *
 * How a call works: it tries the syscall; when the kernel says EAGAIN it
 * waits until the fd is ready — a green thread parks on its hub's poller
 * (epoll, io_uring, poll or select: conc/green.h, "Hub backends"; on
 * io_uring the kernel does the whole operation) and its siblings run; a plain OS thread sleeps in poll(2) — then tries
 * again. Timeouts are per call (double seconds, CONC_FOREVER = none, 0 =
 * try once, never wait), and timeout scopes (conc_timeout_begin) and kills
 * (conc_green_kill) cut a wait short.
 *
 * Return convention (like read(2) and accept(2), with conc's codes): a
 * value >= 0 is success (bytes moved, or a new fd); a negative value is a
 * CONC_E* code:
 *   CONC_ETIMEDOUT  the call's timeout or a timeout scope ran out
 *   CONC_EKILLED    the calling green thread was killed while it waited
 *   CONC_ESYS       the kernel refused; errno says why (EBADF, ECONNRESET,
 *                   ECONNREFUSED, EPIPE ...) and is left as the kernel set it
 *   CONC_EEOF       (conc_read_exact only) the peer closed before n bytes
 *   CONC_EPERM      another green thread of the same hub already waits to
 *                   read (or to write) this fd
 *   CONC_ERANGE     the call had to wait on an fd >= FD_SETSIZE (1024) on
 *                   a hub whose backend is select (CONC_HUB_SELECT)
 *   CONC_EINVAL     a negative fd, NULL buffer with n > 0, n > SSIZE_MAX,
 *                   a NaN timeout, or a negative one (Python's
 *                   socket.settimeout(-1) is ValueError; -1.0 is not
 *                   "forever"); conc_wait_read / conc_wait_write follow
 *                   gevent instead: a negative timeout is already up
 * A wait that was cut short (timeout, kill) moved no data: the bytes the
 * kernel had not taken or given are still there for the next call (on an
 * io_uring hub the operation is cancelled and its completion reaped
 * before the call returns: the kernel never writes buf afterwards).
 *
 * Blocking and non-blocking fds: every fd conc makes (conc_accept,
 * conc_tcp_*, conc_unix_*, conc_socketpair) is O_NONBLOCK and O_CLOEXEC,
 * and that is the mode these calls are built for. conc never changes the
 * flags of an fd you pass in (stdin and other shared files stay as they
 * are), and blocking fds still work, with timeouts:
 *   - sockets are read and written with MSG_DONTWAIT, so their mode does
 *     not matter at all;
 *   - other blocking fds (pipes, FIFOs, terminals) are waited on first and
 *     then read or written once; a read then never blocks, but a write of
 *     more than the pipe has room for may block the OS thread until the
 *     reader takes the rest — make such fds non-blocking;
 *   - conc_accept on a blocking listening socket waits for a connection,
 *     then accepts; if another thread took it first, accept(2) blocks;
 *   - conc_connect on a blocking socket switches it to non-blocking for the
 *     call and back.
 * So plain OS threads can use these calls on any fd; and plain read(2) on
 * a blocking fd still works, but on a green thread it stalls the whole hub.
 *
 * No SIGPIPE: writing to a socket or pipe whose reader is gone returns
 * CONC_ESYS with errno EPIPE; the process never gets the signal.
 *
 * Sharing: at most one context reads and one writes a given fd at a time
 * (gevent raises "already used by another greenlet"; conc returns
 * CONC_EPERM when it can tell). Close an fd with conc_close, never plain
 * close(2), once the hub may have watched it: conc_close makes the hub
 * forget it first, and green threads of that hub still waiting on it wake
 * up and get CONC_ESYS (EBADF) — gevent's cancel_wait. An fd closed
 * behind the hub's back anyway (close(2), dup2(2), conc_close on another
 * hub's thread) does not hang a later socket that gets its number: conc's
 * own socket makers (conc_socketpair, conc_tcp_*, conc_unix_*,
 * conc_accept) make the calling thread's hub forget the number, and an
 * epoll hub re-checks a quiet registration that a context waits on (a
 * delay of 0.2 to 3.2 s then, never a hang).
 *
 * Names are not resolved: the helpers take IPv4/IPv6 literals and
 * "localhost" (127.0.0.1), because DNS would block the OS thread. Resolve
 * elsewhere (e.g. getaddrinfo in conc_green_offload) and use conc_connect.
 *
 * Ownership: every fd a function hands back is the caller's; close it with
 * conc_close. On failure no fd is left open.
 */
#ifndef CONC_IO_H
#define CONC_IO_H

#include <sys/socket.h>
#include <sys/types.h>

#include "conc/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ byte streams */

/* os.read / socket.recv: read up to n bytes into buf, waiting up to timeout
 * for the fd to become readable. Returns the bytes read (> 0), 0 at end of
 * file (the peer closed; or n == 0), or a negative code (see above). */
CONC_API ssize_t conc_read(int fd, void *buf, size_t n, double timeout);

/* os.write / socket.send: write up to n bytes of buf once the fd can take
 * some, waiting up to timeout. Returns the bytes written, which may be
 * fewer than n (a partial write, as with write(2)); use conc_write_all to
 * write everything. Negative code on failure. */
CONC_API ssize_t conc_write(int fd, const void *buf, size_t n, double timeout);

/* socket.recv / socket.send with recv(2)/send(2) flags (MSG_PEEK,
 * MSG_OOB...; MSG_DONTWAIT and MSG_NOSIGNAL are always added). fd must be
 * a socket (else CONC_ESYS, errno ENOTSOCK). Results as conc_read /
 * conc_write. */
CONC_API ssize_t conc_recv(int fd, void *buf, size_t n, int flags, double timeout);
CONC_API ssize_t conc_send(int fd, const void *buf, size_t n, int flags, double timeout);

/* asyncio's readexactly: read exactly n bytes, across as many reads as it
 * takes, within timeout in total. Returns 0 when all n arrived;
 * CONC_EEOF when the peer closed first; or another negative code. got (may
 * be NULL) receives how many bytes were read either way — on CONC_EEOF
 * with *got == 0 the stream ended cleanly between messages. */
CONC_API int conc_read_exact(int fd, void *buf, size_t n, size_t *got, double timeout);

/* socket.sendall for any fd: write all n bytes, across as many writes as
 * it takes, within timeout in total (Python 3.5+). Returns 0 or a negative
 * code; sent (may be NULL) receives how many bytes were written either
 * way. */
CONC_API int conc_write_all(int fd, const void *buf, size_t n, size_t *sent, double timeout);

/* socket.sendall(data, flags): conc_write_all for sockets with send(2)
 * flags. Returns 0 or a negative code. */
CONC_API int conc_sendall(int fd, const void *buf, size_t n, int flags, double timeout);

/* gevent.socket.wait_read / wait_write: wait until fd is readable /
 * writable (errors and hang-ups count as ready), up to timeout; returns at
 * once if it already is (a negative timeout is already up: one check, as
 * gevent's timer fires at once). For driving other libraries' non-blocking fds.
 * Returns 0, CONC_ETIMEDOUT, CONC_EKILLED, CONC_EPERM (see above),
 * CONC_EINVAL (bad fd), CONC_ESYS. Readiness may be spurious: retry your
 * call and wait again on EAGAIN. */
CONC_API int conc_wait_read(int fd, double timeout);
CONC_API int conc_wait_write(int fd, double timeout);

/* ----------------------------------------------------------------- sockets */

/* socket.accept: wait up to timeout for a connection on the listening
 * socket fd and return its new fd (>= 0; O_NONBLOCK, O_CLOEXEC; TCP
 * sockets inherit TCP_NODELAY from a conc_tcp_listen socket). addr/addrlen
 * as accept(2) (both NULL if you do not want the address). A connection
 * that was reset before it was accepted (ECONNABORTED) is skipped. Negative
 * code on failure (CONC_ESYS with EMFILE when out of fds...). */
CONC_API int conc_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, double timeout);

/* socket.connect with a timeout: start connecting fd to addr and wait up
 * to timeout for the outcome. Returns 0 once connected; CONC_ESYS with
 * errno ECONNREFUSED, ENOENT (no such Unix socket), ... ; CONC_ETIMEDOUT or
 * CONC_EKILLED (the socket is then half-way: close it). A Unix socket
 * whose listener's backlog is full is retried (with a short back-off)
 * until the timeout. */
CONC_API int conc_connect(int fd, const struct sockaddr *addr, socklen_t addrlen, double timeout);

/* socket.close: forget fd in the hub's poller, then close(2) it. Returns 0,
 * CONC_EINVAL (negative fd), CONC_ESYS (EBADF: not open). The fd is
 * released even when close reports an I/O error (CONC_ESYS, errno EIO). */
CONC_API int conc_close(int fd);

/* -------------------------------------------------------------- helpers */

/* Listen on TCP host:port with SO_REUSEADDR, O_NONBLOCK, O_CLOEXEC and
 * TCP_NODELAY (inherited by accepted sockets). host: an IPv4 or IPv6
 * literal ("127.0.0.1", "::1", "[::1]"), "localhost" (127.0.0.1), or NULL
 * or "" for every IPv4 interface. port 0..65535 (0: the kernel picks one;
 * see conc_socket_port). backlog: > 0, or 0 for SOMAXCONN. Stores the
 * listening fd in *fd. Returns 0, CONC_EINVAL (NULL fd, a host that is not
 * a literal, bad port or backlog), CONC_ESYS (EADDRINUSE...). */
CONC_API int conc_tcp_listen(const char *host, int port, int backlog, int *fd);

/* Connect to TCP host:port (host as in conc_tcp_listen; NULL or "" means
 * 127.0.0.1) within timeout. Stores a connected socket (O_NONBLOCK,
 * O_CLOEXEC, TCP_NODELAY) in *fd. Returns 0 or a code as conc_connect
 * (no fd is left open on failure). */
CONC_API int conc_tcp_dial(const char *host, int port, double timeout, int *fd);

/* Listen on the Unix stream socket path (a leading '@' names an abstract
 * socket, Linux's namespace that needs no file and no cleanup, as in Go).
 * An existing file at path is not removed (CONC_ESYS, EADDRINUSE): unlink
 * it yourself. backlog as for conc_tcp_listen. Returns 0, CONC_EINVAL (NULL,
 * empty or too long a path: more than 107 bytes), CONC_ESYS. */
CONC_API int conc_unix_listen(const char *path, int backlog, int *fd);

/* Connect to the Unix stream socket path ('@' as above) within timeout.
 * Returns 0 (socket in *fd), CONC_EINVAL, or a code as conc_connect
 * (CONC_ESYS with ENOENT or ECONNREFUSED when nobody listens). */
CONC_API int conc_unix_dial(const char *path, double timeout, int *fd);

/* socket.socketpair: two connected Unix stream sockets, O_NONBLOCK and
 * O_CLOEXEC. Returns 0, CONC_EINVAL (NULL), CONC_ESYS (EMFILE...). */
CONC_API int conc_socketpair(int fds[2]);

/* The local port of an IPv4/IPv6 socket (the one the kernel picked for
 * port 0). Returns the port (0..65535), CONC_EINVAL (negative fd, not an
 * IP socket), CONC_ESYS (EBADF, ENOTSOCK). */
CONC_API int conc_socket_port(int fd);

#ifdef __cplusplus
}
#endif
#endif /* CONC_IO_H */
