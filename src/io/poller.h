/*
 * io/poller.h — the hub's poller behind one small interface (private).
 *
 * Redis's ae_*.c is the model: one file per backend, a handful of
 * functions each, chosen at run time per hub (green/hub.c):
 *
 *   poll_epoll.c   edge-triggered epoll (the default where io_uring is not)
 *   poll_poll.c    poll(2) over the fds being waited on (level-triggered)
 *   poll_select.c  select(2), fds < FD_SETSIZE only (else CONC_ERANGE)
 *   poll_uring.c   io_uring, raw syscalls: completion-based operations
 *                  (recv, send, accept, connect...) and POLL_ADD readiness
 *
 * Readiness backends (epoll, poll, select) keep an interest set: `set`
 * moves fd from the directions `old` to `want` (CONC__FD_READ/WRITE; 0 =
 * not watched). An edge-triggered backend (edge = true) reports a change
 * once and keeps the interest until told otherwise, so the hub adds a
 * direction the first time a context waits for it and keeps it; a
 * level-triggered one reports "ready" for as long as it is, so the hub
 * watches exactly the directions some context waits for right now.
 *
 * A completion backend (uring) takes operations instead (conc__pop_t):
 * `submit` queues one (the kernel sees it at the next `wait`, so a hub
 * turn makes one io_uring_enter for all of them), `cancel` asks for an
 * operation to be cut short; either way its `done` callback runs exactly
 * once per completion, from `wait`, on the hub's thread — a multishot
 * operation's more than once, `more` telling whether others follow.
 *
 * `wait` blocks up to timeout_ns (-1: forever; 0: just look), reports
 * ready fds through `ready` (readiness backends) and runs completions.
 * Every backend watches the hub's eventfd (wakefd): other threads write
 * it to wake a sleeping hub, and `wait` drains it itself.
 */
#ifndef CONC_IO_POLLER_H
#define CONC_IO_POLLER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conc/green.h"

/* What `ready` reports: CONC__FD_READ / CONC__FD_WRITE (core/fdwait.h)
 * and these: CONC__FD_ERR, an error or hang-up (wakes readers and
 * writers); CONC__FD_URG (with READ), urgent data pending — a read stops
 * at its mark, so a short read does not mean drained (epoll reports it;
 * the hub's `stream` hint depends on it only there). */
enum { CONC__FD_ERR = 4, CONC__FD_URG = 8 };

typedef struct conc__poller conc__poller_t; /* a backend's state */

/* One operation on a completion backend. Lives with its caller (on its
 * stack) until `done` said it is over (for a multishot one: more == false). */
typedef struct conc__pop {
    uint8_t opcode;       /* IORING_OP_* */
    uint8_t multishot;    /* accept: IORING_ACCEPT_MULTISHOT; recv/send: poll first */
    int fd;
    void *buf;            /* recv/send/read/write buffer; connect: the address */
    uint32_t len;         /* bytes; connect: address length; poll: POLL* mask */
    int msg_flags;        /* recv/send flags; accept: SOCK_* flags */
    uint64_t off;         /* read/write: file offset (-1: current position) */
    void (*done)(struct conc__pop *op, int res, bool more);
    struct conc__pop *prev, *next; /* in flight (the backend's list) */
    uint8_t inflight;
} conc__pop_t;

typedef struct conc__poller_ops {
    const char *name;
    conc_hub_backend_t backend;
    bool edge;       /* readiness edge-triggered: the hub keeps interest */
    bool completion; /* takes conc__pop_t operations (and no `set`) */
    /* A new poller watching wakefd; NULL with errno set on failure. */
    conc__poller_t *(*create)(int wakefd);
    void (*destroy)(conc__poller_t *p);
    /* Readiness interest of fd: old -> want. 0, or -errno (select:
     * -ERANGE for fd >= FD_SETSIZE; epoll: -EPERM for regular files). */
    int (*set)(conc__poller_t *p, int fd, int old, int want);
    /* See above. Returns the number of events handled, or -errno. */
    int (*wait)(conc__poller_t *p, int64_t timeout_ns, void (*ready)(void *arg, int fd, int ev), void *arg);
    int (*submit)(conc__poller_t *p, conc__pop_t *op);
    int (*cancel)(conc__poller_t *p, conc__pop_t *op);
    /* In a forked child, before destroy: every operation in flight is
     * the parent's; end each with res = -EAGAIN (its caller retries). */
    void (*abandon)(conc__poller_t *p);
} conc__poller_ops_t;

extern const conc__poller_ops_t conc__poll_epoll, conc__poll_poll, conc__poll_select, conc__poll_uring;

/* The backend for b (CONC_HUB_DEFAULT: CONC_HUB_BACKEND from the
 * environment, else the best this kernel allows). NULL when b was asked
 * for explicitly and is not available here. An environment request that
 * cannot be met falls back to the default (a note on stderr under
 * CONC_DEBUG). */
const conc__poller_ops_t *conc__poller_choose(conc_hub_backend_t b);
/* Can this process use io_uring (probed once)? */
bool conc__uring_available(void);
/* Accept with IORING_ACCEPT_MULTISHOT (cleared when the kernel says
 * EINVAL). */
extern _Atomic int conc__uring_multishot;

/* Test hooks: make the io_uring probe fail with this errno (0: real
 * probe), forgetting what was probed before. */
void conc__uring_test_fail(int err);
/* Test hook: the next n cancels fail (-EBUSY, as with a full SQ ring). */
void conc__uring_test_cancel_fail(int n);

#endif
