/*
 * hub_io.c — the hub's side of I/O: fd waits, completion-based
 * operations and the poller (io/poller.h) behind them.
 *
 * Every hub has one poller, chosen when the hub is made (conc_hub_init,
 * CONC_HUB_BACKEND, or the default: io/poller.c). The hub keeps a table
 * indexed by fd (conc__fdent_t): who waits to read and to write it (one
 * of each: a second is CONC_EPERM), what the hub knows of it
 * (`registered`: the directions ever waited on, `dry`: ran dry with no
 * readiness seen since, `stream`: the directions in which a short
 * transfer means drained / full — see short_means) and,
 * for readiness backends, the poller's interest in it.
 *
 * Readiness backends (epoll, poll, select): a waiting context puts its
 * waiter in the table, makes sure the poller watches the direction and
 * parks; the loop's poll reports the fd and wake_fd unparks it; it then
 * retries its system call. Edge-triggered epoll keeps the interest once
 * added; level-triggered poll and select watch only what is waited for
 * now (else a ready fd nobody reads would wake the hub on every turn).
 *
 * The completion backend (uring): a wait is an operation (hub_op_t, on
 * the waiter's stack) submitted to the ring: POLL_ADD for plain
 * readiness (conc__fd_wait), and for cooperative I/O on sockets the
 * transfer itself (conc__fd_op: recv, send, read, write, connect): the
 * kernel waits and copies, the completion carries the byte count. The
 * caller parks until the completion unparks it. If its park is cut short
 * (a kill, a Timeout scope, its deadline, conc_close of the fd), it asks
 * the kernel to cancel the operation (IORING_OP_ASYNC_CANCEL) and parks
 * again, uninterruptibly, until the operation's own completion has been
 * reaped — so the kernel never writes the buffer after the call
 * returned. If the operation completed anyway (it moved data before the
 * cancel took hold), the call reports the data, and the interruption is
 * delivered at the caller's next blocking call (conc__cut_rearm), as
 * every conc wait does when it turns out satisfied.
 *
 * Accept on uring keeps one multishot accept per listening fd (accq_t):
 * armed the first time a conc_accept finds no connection, it stays
 * armed, and each connection the kernel accepts is queued on the hub
 * until a conc_accept takes it (so a busy listener costs no system call
 * per connection). The queue is bounded softly: past ACC_SOFT_MAX queued
 * connections the accept is cancelled and the kernel's backlog holds the
 * rest. conc_close of the listener cancels it and closes what is queued
 * (as closing a listener resets its backlog). The hub stays attached
 * (does not go back to plain OS-thread parking) while it accepts on
 * some fd, or connections would sit in a queue nobody reads.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/fdwait.h"
#include "core/shwait.h"
#include "green/internal.h"
#include "green/local.h"
#include "io/poller.h"

#define ACC_SOFT_MAX 64

/* Stale registrations (epoll): an fd closed behind the hub's back (plain
 * close or dup2, or conc_close on another hub's thread) leaves the table
 * saying "watched" while the kernel dropped the interest with the file;
 * a socket that gets the number next would wait for edges that never
 * come. conc's own socket makers forget the number on the calling thread's
 * hub (conc__fd_forget at creation); for the rest, the loop re-checks,
 * after a quiet spell, the registrations of fds that waiters park on and
 * that saw no event since the last check: EPOLL_CTL_MOD, and on ENOENT an
 * ADD, which reports the new file's readiness at once. So a stale entry
 * costs a bounded delay (two check intervals, 0.1 s doubling to at most
 * 1.6 s while nothing stale turns up), never a hang. The cost on busy
 * paths: a poll counter (a clock read every SWEEP_POLLS polls), and
 * wake_fd clears the FD_QUIET mark in the same store as its dry bits. */
#define FD_QUIET 0x80             /* in dry: no event since the last check */
#define SWEEP_POLLS 256           /* polls between two looks at the clock */
#define SWEEP_MIN_NS 100000000LL  /* the first interval, and after a stale find */
#define SWEEP_MAX_NS 1600000000LL /* the longest */
static __thread struct {
    unsigned polls;
    int64_t next, every;
} sweep __attribute__((tls_model("initial-exec"))); /* a hub is one thread's */

/* ------------------------------------------------------------- the table */

static conc__fdent_t *fdent(conc__hub_t *h, int fd)
{
    if ((size_t)fd >= h->nfds) {
        size_t n = h->nfds ? h->nfds : 64;
        while (n <= (size_t)fd)
            n *= 2;
        conc__fdent_t *t = realloc(h->fds, n * sizeof *t);
        if (!t)
            return NULL;
        memset(t + h->nfds, 0, (n - h->nfds) * sizeof *t);
        h->fds = t;
        h->nfds = n;
    }
    return &h->fds[fd];
}

/* The directions in which a short read or write of fd means it is
 * drained or full now (CONC__FD_READ / CONC__FD_WRITE; nonzero: a stream
 * socket, which conc__fd_io may take). Stream sockets only — not
 * datagrams, pipes (a packet-mode pipe's read end cannot be told from a
 * plain one), terminals, inotify, signalfd... (one record per read). And
 * reads only on TCP (and MPTCP): a Unix stream socket's read stops after
 * a message that passed fds (SCM_RIGHTS) and, with SO_PASSCRED, between
 * messages of different writers, with more queued; SCTP's keeps message
 * boundaries. A TCP read also stops at an urgent mark: wake_fd drops
 * READ when the poller reports urgent data (CONC__FD_URG); and a short
 * MSG_OOB / MSG_ERRQUEUE read says nothing of the stream (its callers). */
static uint8_t short_means(int fd)
{
    int type = 0, proto = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
        return 0;
    len = sizeof proto;
    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0 && (proto == IPPROTO_TCP || proto == 262 /* MPTCP */))
        return CONC__FD_READ | CONC__FD_WRITE;
    return CONC__FD_WRITE;
}

/* The hub knows fd in `events` too from now on. */
static void know(conc__hub_t *h, conc__fdent_t *e, int fd, int events)
{
    if (!e->registered) {
        e->stream = short_means(fd);
        e->dry = 0;
        h->nwatched++;
    }
    e->registered |= (uint8_t)events;
}

/* Readiness backends: the poller watches `events` too. 0 or -errno. */
static int want(conc__hub_t *h, conc__fdent_t *e, int fd, int events)
{
    int w = e->interest | events;
    if (w == e->interest)
        return 0;
    int r = h->pops->set(h->poller, fd, e->interest, w);
    if (r == 0)
        e->interest = (uint8_t)w;
    return r;
}

/* Level-triggered backends: after a wait, watch exactly what is waited for. */
static void settle_interest(conc__hub_t *h, int fd)
{
    if (h->pops->edge || h->pops->completion)
        return;
    conc__fdent_t *e = &h->fds[fd];
    int w = (e->rd ? CONC__FD_READ : 0) | (e->wr ? CONC__FD_WRITE : 0);
    if (w != e->interest && h->pops->set(h->poller, fd, e->interest, w) == 0)
        e->interest = (uint8_t)w;
}

static int code_of(int negerr)
{
    if (negerr == -EBADF)
        return CONC_EINVAL;
    if (negerr == -ERANGE)
        return CONC_ERANGE;
    if (negerr == -ENOMEM)
        return CONC_ENOMEM;
    errno = -negerr;
    return CONC_ESYS;
}

/* ------------------------------------------------------ operations (uring) */

typedef struct hub_op {
    conc__pop_t op;
    conc__waiter_t *w;
    int res;
    bool done;
} hub_op_t;

static void op_done(conc__pop_t *op, int res, bool more)
{
    (void)more;
    hub_op_t *o = (hub_op_t *)op;
    o->res = res;
    o->done = true;
    if (o->w)
        conc__unpark(o->w);
}

/* Submit o and park on w until its completion or the deadline / a cut;
 * a cut-short operation is cancelled and its completion waited for
 * (uninterruptibly). Returns what the park returned (0 or the
 * interruption); o->res is the kernel's result either way, *cut what to
 * rearm if the caller reports success after all. */
static int run_op(conc__hub_t *h, hub_op_t *o, conc__waiter_t *w, int64_t deadline, conc__cut_t *cut)
{
    o->done = false;
    o->w = w;
    o->op.done = op_done;
    o->op.inflight = 0;
    cut->code = 0;
    int r = h->pops->submit(h->poller, &o->op);
    if (r < 0) {
        o->res = r;
        o->w = NULL;
        return 0;
    }
    h->nsubmit++;
    h->nfdwait++;
    int rc = conc__park(w, deadline);
    if (rc)
        *cut = conc__cut_save(rc);
    if (!o->done) {
        /* A cancel that could not be queued (the SQ ring still full after
         * a flush) is asked for again after a hub turn, at most 1 ms
         * later: without it the operation might never end. */
        bool asked = h->pops->cancel(h->poller, &o->op) == 0;
        conc__ctx_t *ctx = conc__ctx();
        int8_t scope = ctx->cut_scope;
        ctx->nointr++;
        while (!o->done) {
            conc__waiter_init(w);
            conc__park(w, asked ? CONC__NO_DEADLINE : conc__now_ns() + 1000000);
            if (!asked && !o->done)
                asked = h->pops->cancel(h->poller, &o->op) == 0;
        }
        ctx->nointr--;
        ctx->cut_scope = scope;
    }
    h->nfdwait--;
    o->w = NULL;
    return rc;
}

static short poll_mask(int events)
{
    return (short)(((events & CONC__FD_READ) ? POLLIN | POLLPRI | POLLRDHUP : 0) |
                   ((events & CONC__FD_WRITE) ? POLLOUT : 0));
}

/* ------------------------------------------------------------- fd waits */

int conc__green_fd_wait(int fd, int events, int64_t deadline)
{
    conc__hub_t *h = conc__tl_hub; /* (the loop context's fd waits: conc__loop_ops) */
    if (__builtin_expect(h->nalive == 0, 0) && conc__hub_main_idle_detach(h))
        return conc__fd_wait(fd, events, deadline); /* as the plain thread it is again */
    conc__fdent_t *e = fdent(h, fd);
    if (!e)
        return CONC_ENOMEM;
    if (((events & CONC__FD_READ) && e->rd) || ((events & CONC__FD_WRITE) && e->wr))
        return CONC_EPERM; /* another context of this hub waits for the same */
    bool uring = h->pops->completion;
    if (!uring) {
        int r = want(h, e, fd, events);
        if (r == -EPERM)
            return 0; /* epoll: a regular file, always ready */
        if (r < 0)
            return code_of(r);
    }
    know(h, e, fd, events);
    e->dry |= (uint8_t)events; /* the caller found it not ready */
    conc__waiter_t w;
    conc__waiter_init(&w);
    w.obj = CONC__WAIT_FD_OBJ(fd, events);
    w.kind = CONC__WAIT_FD;
    if (events & CONC__FD_READ)
        e->rd = &w;
    if (events & CONC__FD_WRITE)
        e->wr = &w;
    int rc;
    if (uring) {
        hub_op_t o = {.op = {.opcode = IORING_OP_POLL_ADD, .fd = fd, .len = (uint16_t)poll_mask(events)}};
        conc__cut_t cut;
        rc = run_op(h, &o, &w, deadline, &cut);
        e = &h->fds[fd];
        if (o.res > 0) {
            int ev = o.res;
            if (ev & (POLLIN | POLLPRI | POLLRDHUP | POLLERR | POLLHUP))
                e->dry &= (uint8_t)~CONC__FD_READ;
            if (ev & (POLLOUT | POLLERR | POLLHUP))
                e->dry &= (uint8_t)~CONC__FD_WRITE;
        } else if (o.res < 0 && o.res != -ECANCELED && o.res != -EAGAIN && o.res != -EINTR && !rc) {
            rc = code_of(o.res);
        }
    } else {
        h->nfdwait++;
        rc = conc__park(&w, deadline);
        h->nfdwait--;
    }
    e = &h->fds[fd]; /* the table may have moved */
    if (e->rd == &w)
        e->rd = NULL;
    if (e->wr == &w)
        e->wr = NULL;
    settle_interest(h, fd);
    return rc;
}

/* ------------------------------------------- the fast path (edge-triggered) */

/* Wait for ev on fd, which the caller found not ready: the hub-local park
 * (hub.c: no atomics, no timer, no clock read) when nothing needs
 * conc__park's other steps — no deadline, no timeout scope, no pending
 * interruption, not nointr, no observation that wraps parks, fd watched
 * that way already; conc__green_fd_wait otherwise. Every waker of an fd
 * waiter runs on the hub's thread (wake_fd, conc__green_fd_forget, a kill
 * through the loop), so the hub-local park's rules hold. */
static int fd_park(conc__hub_t *h, int fd, int ev, int64_t deadline)
{
    conc__ctx_t *ctx = conc__cur;
    conc__gs_t *gs = ctx->green;
    conc__fdent_t *e = &h->fds[fd];
    if (__builtin_expect(deadline != CONC__NO_DEADLINE || ctx->nscopes != 0 || ctx->nointr || gs->interrupt ||
                             !(e->registered & e->interest & ev) || conc__obs_on(CONC__OBS_PARKS),
                         0))
        return conc__green_fd_wait(fd, ev, deadline);
    conc__waiter_t **slot = ev == CONC__FD_READ ? &e->rd : &e->wr;
    if (*slot)
        return CONC_EPERM; /* another context of this hub waits for the same */
    e->dry |= (uint8_t)ev;
    conc__waiter_t w = {.state = CONC__W_WAITING, .ctx = ctx, .obj = CONC__WAIT_FD_OBJ(fd, ev), .kind = CONC__WAIT_FD};
    *slot = &w;
    ctx->cut_scope = -1; /* as conc__park */
    conc__obs_block(ctx, w.obj, CONC__WAIT_FD, CONC__NO_DEADLINE);
    h->nfdwait++;
    h->nfastwait++;
    int rc = conc__hub_park_local(gs, &w);
    h->nfdwait--;
    conc__obs_unblock(ctx);
    e = &h->fds[fd]; /* the table may have moved */
    if (e->rd == &w)
        e->rd = NULL;
    if (e->wr == &w)
        e->wr = NULL;
    return rc;
}

/* conc__fd_io (core/fdwait.h): a stream socket this hub's edge-triggered
 * poller already watches (the direction's first wait goes through
 * conc__green_fd_wait, which adds it). The steps of coop.c's xfer,
 * in the same order, without its dispatch: skip the system call when the
 * hub knows the socket ran dry (only before the first wait), else
 * recv/send; a short transfer marks it dry; EAGAIN waits and tries again.
 * Anything else takes the general path (CONC__FD_IO_SLOW) before a byte
 * moved: a deadline of 0 (its first wait is a look), a completion or
 * level-triggered backend, an fd the hub does not know yet (the general
 * path's first wait registers it), a datagram socket, ENOTSOCK (an fd
 * number reused behind the hub's back). */
ssize_t conc__green_fd_io(int fd, bool wr, void *buf, size_t n, int flags, int64_t deadline)
{
    conc__hub_t *h = conc__tl_hub;
    int ev = wr ? CONC__FD_WRITE : CONC__FD_READ;
    if ((size_t)fd >= h->nfds || deadline == 0 || !h->pops->edge)
        return CONC__FD_IO_SLOW;
    if (__builtin_expect(h->nalive == 0, 0) && conc__hub_main_idle_detach(h))
        return CONC__FD_IO_SLOW; /* main, nothing green alive: detached (conc__green_fd_wait) */
    conc__fdent_t *e = &h->fds[fd];
    if (!e->registered || !e->stream)
        return CONC__FD_IO_SLOW;
    bool skip = (e->dry & ev) != 0; /* (dry only has directions it is registered for) */
    for (;;) {
        if (!skip) {
            ssize_t r = wr ? send(fd, buf, n, flags | MSG_DONTWAIT | MSG_NOSIGNAL) : recv(fd, buf, n, flags | MSG_DONTWAIT);
            if (r >= 0) {
                e = &h->fds[fd];
                if ((size_t)r < n && !(flags & (MSG_OOB | MSG_ERRQUEUE))) /* drained (or full): the next edge says when not */
                    e->dry |= (uint8_t)(ev & e->registered & e->stream);
                return r;
            }
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return errno == ENOTSOCK ? CONC__FD_IO_SLOW : CONC_ESYS;
        }
        skip = false;
        int rc = fd_park(h, fd, ev, deadline);
        if (rc)
            return rc;
    }
}

/* ---------------------------------------------------- accept queues (uring) */

typedef struct accq {
    conc__pop_t op;         /* the (multishot) accept */
    conc__waiter_t *w;      /* a conc_accept waiting, or NULL */
    int *q;                 /* accepted fds, a ring */
    unsigned head, n, cap;
    bool armed;             /* op in flight */
    bool orphan;            /* the listener was forgotten: free once quiet */
    bool pinned;            /* forget is reaping its cancellation: keep it */
    conc__poller_t *poller; /* to cancel through */
    const conc__poller_ops_t *pops;
} accq_t;

static void acc_close_queued(accq_t *a)
{
    while (a->n) {
        close(a->q[a->head]);
        a->head = (a->head + 1) % a->cap;
        a->n--;
    }
}

static void acc_maybe_free(accq_t *a)
{
    if (a->orphan && !a->armed && !a->w && !a->pinned) {
        acc_close_queued(a);
        free(a->q);
        free(a);
    }
}

static bool acc_push(accq_t *a, int fd)
{
    if (a->n == a->cap) {
        unsigned cap = a->cap ? a->cap * 2 : 16;
        int *q = malloc(cap * sizeof *q);
        if (!q)
            return false;
        for (unsigned i = 0; i < a->n; i++)
            q[i] = a->q[(a->head + i) % a->cap];
        free(a->q);
        a->q = q;
        a->head = 0;
        a->cap = cap;
    }
    a->q[(a->head + a->n) % a->cap] = fd;
    a->n++;
    return true;
}

static void acc_done(conc__pop_t *op, int res, bool more)
{
    accq_t *a = (accq_t *)op;
    if (!more)
        a->armed = false;
    if (res >= 0) {
        if (a->orphan || !acc_push(a, res))
            close(res);
        else if (a->armed && a->n >= ACC_SOFT_MAX)
            a->pops->cancel(a->poller, &a->op); /* enough queued: leave the rest to the backlog */
    } else if (res == -EINVAL && a->op.multishot) {
        atomic_store_explicit(&conc__uring_multishot, 0, memory_order_relaxed);
    }
    if (a->w)
        conc__unpark(a->w);
    else
        acc_maybe_free(a);
}

static ssize_t acc_op(conc__hub_t *h, const conc__fdop_t *d, int64_t deadline)
{
    int fd = d->fd;
    conc__fdent_t *e = fdent(h, fd);
    if (!e)
        return CONC_ENOMEM;
    accq_t *a = e->acc;
    if (!a) {
        if (d->armed_only)
            return CONC_EAGAIN;
        if (!(a = calloc(1, sizeof *a)))
            return CONC_ENOMEM;
        a->poller = h->poller;
        a->pops = h->pops;
        e->acc = a;
        h->nacq++;
    }
    if (e->rd)
        return CONC_EPERM;
    for (;;) {
        while (a->n) {
            int c = a->q[a->head];
            a->head = (a->head + 1) % a->cap;
            a->n--;
            if (d->out_addr && getpeername(c, d->out_addr, d->out_addrlen) != 0) {
                close(c); /* reset before it was taken: skip it, as accept does */
                continue;
            }
            return c;
        }
        if (deadline == 0)
            return CONC_EAGAIN; /* a poll: accept(2) tries the backlog */
        if (!a->armed) {
            if (d->armed_only)
                return CONC_EAGAIN;
            memset(&a->op, 0, sizeof a->op);
            a->op.opcode = IORING_OP_ACCEPT;
            a->op.fd = fd;
            a->op.multishot = (uint8_t)atomic_load_explicit(&conc__uring_multishot, memory_order_relaxed);
            a->op.msg_flags = SOCK_NONBLOCK | SOCK_CLOEXEC;
            a->op.done = acc_done;
            if (h->pops->submit(h->poller, &a->op) != 0)
                return CONC_EAGAIN;
            a->armed = true;
            h->narm++;
        }
        know(h, e, fd, CONC__FD_READ);
        conc__waiter_t w;
        conc__waiter_init(&w);
        w.obj = CONC__WAIT_FD_OBJ(fd, CONC__FD_READ);
        w.kind = CONC__WAIT_FD;
        a->w = &w;
        e->rd = &w;
        h->nfdwait++;
        int rc = conc__park(&w, deadline);
        h->nfdwait--;
        a->w = NULL;
        e = &h->fds[fd];
        if (e->rd == &w)
            e->rd = NULL;
        if (a->orphan) {
            acc_maybe_free(a);
            return rc ? rc : CONC_EAGAIN; /* closed: accept(2) says EBADF */
        }
        if (rc)
            return rc; /* a connection queued meanwhile waits for the next accept */
        if (!a->n && !a->armed)
            return CONC_EAGAIN; /* the kernel ended the accept: accept(2) tells why */
    }
}

/* ------------------------------------------------------ operations, public */

ssize_t conc__green_fd_op(const conc__fdop_t *d, int64_t deadline)
{
    conc__hub_t *h = conc__tl_hub;
    if (!h->pops->completion)
        return CONC_ENOTSUP;
    if (__builtin_expect(h->nalive == 0, 0) && conc__hub_main_idle_detach(h))
        return CONC_ENOTSUP; /* main, nothing green alive: detached, a plain thread's I/O */
    if (d->kind == CONC__OP_ACCEPT)
        return acc_op(h, d, deadline);
    int fd = d->fd;
    conc__fdent_t *e = fdent(h, fd);
    if (!e)
        return CONC_ENOMEM;
    int dir = (d->kind == CONC__OP_RECV || d->kind == CONC__OP_READ) ? CONC__FD_READ : CONC__FD_WRITE;
    if (d->kind == CONC__OP_CONNECT)
        dir = CONC__FD_WRITE;
    if ((dir == CONC__FD_READ && e->rd) || (dir == CONC__FD_WRITE && e->wr))
        return CONC_EPERM;
    hub_op_t o;
    memset(&o, 0, sizeof o);
    o.op.fd = fd;
    switch (d->kind) {
    case CONC__OP_RECV:
    case CONC__OP_SEND:
        o.op.opcode = d->kind == CONC__OP_RECV ? IORING_OP_RECV : IORING_OP_SEND;
        o.op.buf = d->buf;
        o.op.len = d->n > UINT32_MAX / 2 ? UINT32_MAX / 2 : (uint32_t)d->n;
        o.op.msg_flags = d->flags | (d->kind == CONC__OP_SEND ? MSG_NOSIGNAL : 0);
        o.op.multishot = 1; /* coop.c tried (or knew it dry): poll first */
        break;
    case CONC__OP_READ:
    case CONC__OP_WRITE:
        o.op.opcode = d->kind == CONC__OP_READ ? IORING_OP_READ : IORING_OP_WRITE;
        o.op.buf = d->buf;
        o.op.len = d->n > UINT32_MAX / 2 ? UINT32_MAX / 2 : (uint32_t)d->n;
        o.op.off = (uint64_t)-1;
        break;
    case CONC__OP_CONNECT:
        o.op.opcode = IORING_OP_CONNECT;
        o.op.buf = (void *)d->addr;
        o.op.len = d->addrlen;
        break;
    default:
        return CONC_EINVAL;
    }
    know(h, e, fd, dir);
    conc__waiter_t w;
    conc__waiter_init(&w);
    w.obj = CONC__WAIT_FD_OBJ(fd, dir);
    w.kind = CONC__WAIT_FD;
    if (dir == CONC__FD_READ)
        e->rd = &w;
    else
        e->wr = &w;
    conc__cut_t cut;
    int rc = run_op(h, &o, &w, deadline, &cut);
    e = &h->fds[fd];
    if (e->rd == &w)
        e->rd = NULL;
    if (e->wr == &w)
        e->wr = NULL;
    int res = o.res;
    if (res >= 0 || (rc == 0 && res != -ECANCELED && res != -EAGAIN && res != -EINTR)) {
        /* the kernel's outcome stands; an interruption waits for the next call */
        if (rc)
            conc__cut_rearm(&cut);
        if (res >= 0) {
            e->dry &= (uint8_t)~dir;
            return res;
        }
        errno = -res;
        return CONC_ESYS;
    }
    if (res == -EAGAIN)
        e->dry &= (uint8_t)~dir; /* retry the readiness way (an older kernel, a fork) */
    return rc ? rc : CONC_EAGAIN;
}

/* ------------------------------------------------------------ forgetting */

/* Stop everything the hub does with fd (its poller interest, a multishot
 * accept); waiters wake up and retry (their fd is being closed). */
void conc__green_fd_forget(int fd)
{
    conc__hub_t *h = conc__tl_hub;
    if (!h || fd < 0 || (size_t)fd >= h->nfds)
        return;
    conc__fdent_t *e = &h->fds[fd];
    accq_t *a = e->acc;
    if (a) {
        e->acc = NULL;
        h->nacq--;
        a->orphan = true;
        acc_close_queued(a);
        if (a->armed) {
            /* Cancel it and reap that now: nothing is left in the kernel
             * that would accept on a closed listener's behalf. Usually
             * immediate; an accept the kernel is running (io-wq) takes a
             * moment: wait for it, 1 ms at a time, at most ~0.1 s. */
            bool asked = h->pops->cancel(h->poller, &a->op) == 0;
            a->pinned = true;
            for (int i = 0; i < 100 && a->armed; i++) {
                h->pops->wait(h->poller, i < 2 ? 0 : 1000000, NULL, NULL);
                if (!asked && a->armed) /* the SQ ring was full: ask again */
                    asked = h->pops->cancel(h->poller, &a->op) == 0;
            }
            a->pinned = false;
        }
        if (a->w)
            conc__unpark(a->w);
        else
            acc_maybe_free(a);
    }
    if (!e->registered && !e->interest)
        return;
    if (e->interest)
        h->pops->set(h->poller, fd, e->interest, 0);
    if (e->registered)
        h->nwatched--;
    e->registered = 0;
    e->interest = 0;
    e->dry = 0;
    /* Waiters would wait forever: wake them to see the fd is gone. */
    if (e->rd)
        conc__unpark(e->rd);
    if (e->wr && e->wr != e->rd)
        conc__unpark(e->wr);
}

/* Readiness hints (core/fdwait.h): only for fds this hub knows. */
bool conc__green_fd_maybe_ready(int fd, int events)
{
    conc__hub_t *h = conc__tl_hub;
    if (fd < 0 || (size_t)fd >= h->nfds || (h->fds[fd].registered & events) != events)
        return true; /* not watched that way: nothing known */
    return (h->fds[fd].dry & events) != events;
}

void conc__green_fd_short(int fd, int events)
{
    conc__hub_t *h = conc__tl_hub;
    if (fd >= 0 && (size_t)fd < h->nfds)
        h->fds[fd].dry |= (uint8_t)(events & h->fds[fd].registered & h->fds[fd].stream);
}

/* ------------------------------------------------------------- the poll */

static void wake_fd(void *arg, int fd, int ev)
{
    conc__hub_t *h = arg;
    if ((size_t)fd >= h->nfds)
        return;
    conc__fdent_t *e = &h->fds[fd];
    bool rd_ev = (ev & (CONC__FD_READ | CONC__FD_ERR)) != 0;
    bool wr_ev = (ev & (CONC__FD_WRITE | CONC__FD_ERR)) != 0;
    if (rd_ev)
        e->dry &= (uint8_t)~(CONC__FD_READ | FD_QUIET);
    if (__builtin_expect(ev & CONC__FD_URG, 0))
        e->stream &= (uint8_t)~CONC__FD_READ; /* reads stop at urgent marks: short is not drained */
    if (wr_ev)
        e->dry &= (uint8_t)~(CONC__FD_WRITE | FD_QUIET);
    /* Every fd waiter is a context of this hub, parked (or resumed by
     * its timer or a kill and not run yet): the hub-local unpark. */
    conc__waiter_t *rd = e->rd, *wr = e->wr;
    if (rd && rd_ev)
        conc__unpark_local_inline(rd);
    if (wr && wr != rd && wr_ev)
        conc__unpark_local_inline(wr);
    else if (wr && wr == rd && !rd_ev && wr_ev)
        conc__unpark_local_inline(wr);
}

/* Re-check the registrations of fds waited on that stayed quiet for a
 * whole interval (see FD_QUIET above). */
static __attribute__((noinline, cold)) void sweep_stale(conc__hub_t *h)
{
    if (!h->pops->edge || !h->nfdwait)
        return;
    int64_t now = conc__now_ns();
    if (now < sweep.next)
        return;
    bool stale = false;
    for (size_t fd = 0; fd < h->nfds; fd++) {
        conc__fdent_t *e = &h->fds[fd];
        if (!e->interest || (!e->rd && !e->wr))
            continue;
        if (!(e->dry & FD_QUIET)) {
            e->dry |= FD_QUIET; /* checked next time unless an event comes */
            continue;
        }
        int r = h->pops->set(h->poller, (int)fd, e->interest, e->interest); /* MOD */
        if (r == -ENOENT) {
            stale = true;
            r = h->pops->set(h->poller, (int)fd, 0, e->interest); /* the new file: ADD */
        }
        if (r != 0) { /* closed and not reused (EBADF), or now a file: wake its waiters to retry */
            stale = true;
            conc__green_fd_forget((int)fd);
        }
    }
    if (stale || sweep.every == 0)
        sweep.every = SWEEP_MIN_NS;
    else if (sweep.every < SWEEP_MAX_NS)
        sweep.every *= 2;
    sweep.next = now + sweep.every;
}

/* A long sleep while contexts park on fds (epoll): wake up within a check
 * interval, and check after a quiet one. */
static __attribute__((noinline)) void poll_capped(conc__hub_t *h, int64_t timeout_ns)
{
    int64_t cap = sweep.every ? sweep.every : SWEEP_MIN_NS;
    bool capped = timeout_ns < 0 || timeout_ns > cap;
    int n = h->pops->wait(h->poller, capped ? cap : timeout_ns, wake_fd, h);
    /* Any sleep that ends with nothing to report is a quiet one, capped
     * or cut short by a timer: a hub whose timers keep every sleep under
     * the cap (a green thread ticking every few ms) would otherwise only
     * check every SWEEP_POLLS polls (2 x 256 ticks for a stale find). */
    if (n == 0)
        sweep_stale(h);
}

void conc__hub_io_poll(conc__hub_t *h, int64_t timeout_ns)
{
    /* Busy hubs: a look at the clock every SWEEP_POLLS polls. */
    if (__builtin_expect(++sweep.polls % SWEEP_POLLS == 0, 0))
        sweep_stale(h);
    if (timeout_ns != 0 && h->nfdwait && h->pops->edge)
        poll_capped(h, timeout_ns);
    else
        h->pops->wait(h->poller, timeout_ns, wake_fd, h);
}

/* Going back to plain parking: a conc_close would not reach the hub any
 * more, so forget every fd now (a reused fd number would look watched). */
void conc__hub_io_detach(conc__hub_t *h)
{
    for (size_t fd = 0; (h->nwatched || h->nacq) && fd < h->nfds; fd++)
        if (h->fds[fd].registered || h->fds[fd].interest || h->fds[fd].acc)
            conc__green_fd_forget((int)fd);
}

/* A new poller for h (fresh wake eventfd in h->evfd), watching what h's
 * readiness interest says. false: out of fds or memory. */
bool conc__hub_io_start(conc__hub_t *h, const conc__poller_ops_t *ops)
{
    conc__poller_t *p = ops->create(h->evfd);
    if (!p)
        return false;
    h->pops = ops;
    h->poller = p;
    for (size_t fd = 0; fd < h->nfds; fd++) {
        conc__fdent_t *e = &h->fds[fd];
        if (!e->interest)
            continue;
        if (ops->completion || ops->set(p, (int)fd, 0, e->interest) != 0)
            e->interest = 0;
    }
    return true;
}

/* In a forked child: the poller h had is the parent's (a shared epoll set
 * or ring): end what the child had in flight on it, then drop it (its
 * state, not the parent's kernel object). Queued accepted connections
 * are the parent's to serve. */
void conc__hub_io_forked(conc__hub_t *h)
{
    if (h->pops->abandon)
        h->pops->abandon(h->poller);
    for (size_t fd = 0; fd < h->nfds; fd++)
        if (h->fds[fd].acc)
            acc_close_queued(h->fds[fd].acc);
    h->pops->destroy(h->poller);
    h->poller = NULL;
}

/* Switch an idle hub to another backend (renew: or to a new instance of
 * the same; a recycled hub forgets the fds its last thread left). */
int conc__hub_io_switch(conc__hub_t *h, const conc__poller_ops_t *ops, bool renew)
{
    if (ops == h->pops && !renew)
        return 0;
    if (renew)
        conc__hub_io_detach(h);
    if (h->nfdwait || h->nacq)
        return CONC_EPERM;
    conc__poller_t *p = ops->create(h->evfd);
    if (!p)
        return errno == ENOMEM ? CONC_ENOMEM : CONC_ENOTSUP;
    conc__hub_io_detach(h);
    if (h->pops->abandon)
        h->pops->abandon(h->poller); /* cancelled accepts: end them here */
    h->pops->destroy(h->poller);
    h->pops = ops;
    h->poller = p;
    return 0;
}
