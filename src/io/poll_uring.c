/*
 * poll_uring.c — the hub's io_uring backend (io/poller.h), on the raw
 * system calls (io_uring_setup / io_uring_enter / io_uring_register and
 * the mmap'd rings): libconc needs nothing but libc.
 *
 * Completion-based: the hub hands whole operations to the kernel (recv,
 * send, accept, connect, read, write — and POLL_ADD for plain readiness
 * waits); the kernel waits for the fd and does the copy, and the
 * operation's completion (CQE) carries the result. An operation is a
 * conc__pop_t owned by the parked caller; its address is the SQE's
 * user_data (0 marks SQEs whose completions nobody wants: cancellations).
 *
 * Batching: submit only writes the SQE into the shared ring and bumps
 * the tail; the kernel sees them at the hub's next `wait`, which makes
 * one io_uring_enter per hub turn that both submits everything queued
 * and waits for completions (min_complete 1, the timeout through
 * IORING_ENTER_EXT_ARG). A turn with nothing to submit and nothing to
 * wait for costs no system call: it just reads the CQ ring. Only a full
 * SQ ring forces an extra enter.
 *
 * Invariants: an operation is on the in-flight list from submit until
 * the completion without IORING_CQE_F_MORE; its `done` runs exactly once
 * per CQE; the ring is only touched by the hub's own thread. The wake
 * eventfd is watched by a multishot POLL_ADD (re-armed whenever the
 * kernel ends it), and drained with read(2) when it fires.
 *
 * Probe (once per process): io_uring_setup must succeed (it fails with
 * EPERM when /proc/sys/kernel/io_uring_disabled or a seccomp filter
 * forbids it, ENOSYS on kernels without it), the kernel must have
 * IORING_FEAT_NODROP and IORING_FEAT_EXT_ARG (5.11), and
 * IORING_REGISTER_PROBE must list every opcode we use. Multishot accept
 * (5.19) cannot be probed: the first EINVAL turns it off
 * (conc__uring_multishot) and accepts go one at a time.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/fdwait.h"
#include "io/poller.h"

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#define __NR_io_uring_enter 426
#define __NR_io_uring_register 427
#endif

#define RING_ENTRIES 256

struct conc__poller {
    int ringfd, wakefd;
    unsigned *sq_head, *sq_tail, sq_mask, sq_entries, tail;
    unsigned *cq_head, *cq_tail, cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    void *sq_map, *cq_map;
    size_t sq_len, cq_len, sqe_len;
    unsigned to_submit;
    conc__pop_t *inflight;
    conc__pop_t wake; /* POLL_ADD (multishot) on wakefd */
    bool wake_armed;
    bool defer;       /* IORING_SETUP_DEFER_TASKRUN: completions post only in enter */
};

static int sys_setup(unsigned entries, struct io_uring_params *p)
{
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_enter(int fd, unsigned submit, unsigned min, unsigned flags, void *arg, size_t argsz)
{
    return (int)syscall(__NR_io_uring_enter, fd, submit, min, flags, arg, argsz);
}

/* ---------------------------------------------------------------- probe */

_Atomic int conc__uring_multishot = 1;
static _Atomic int probed;    /* 0: not yet, 1: usable, -1: not */
static _Atomic int test_fail; /* test hook: errno io_uring_setup "returns" */
static _Atomic int test_cancel_fail; /* test hook: how many cancels fail */

void conc__uring_test_fail(int err)
{
    atomic_store(&test_fail, err);
    atomic_store(&probed, 0);
}

void conc__uring_test_cancel_fail(int n) { atomic_store(&test_cancel_fail, n); }

static const uint8_t needed_ops[] = {IORING_OP_POLL_ADD, IORING_OP_ASYNC_CANCEL, IORING_OP_ACCEPT,
                                     IORING_OP_CONNECT,  IORING_OP_RECV,         IORING_OP_SEND,
                                     IORING_OP_READ,     IORING_OP_WRITE};

static int probe(void)
{
    int err = atomic_load(&test_fail);
    if (err) {
        errno = err;
        return -1;
    }
    struct io_uring_params par;
    memset(&par, 0, sizeof par);
    int fd = sys_setup(4, &par);
    if (fd < 0)
        return -1;
    int ok = (par.features & IORING_FEAT_NODROP) && (par.features & IORING_FEAT_EXT_ARG);
    if (!ok)
        errno = ENOSYS;
    size_t sz = sizeof(struct io_uring_probe) + 256 * sizeof(struct io_uring_probe_op);
    struct io_uring_probe *pr = calloc(1, sz);
    if (ok && pr && syscall(__NR_io_uring_register, fd, IORING_REGISTER_PROBE, pr, 256) == 0) {
        for (size_t i = 0; i < sizeof needed_ops; i++) {
            unsigned op = needed_ops[i];
            if (op > pr->last_op || !(pr->ops[op].flags & IO_URING_OP_SUPPORTED)) {
                ok = 0;
                errno = ENOSYS;
            }
        }
    } else if (ok) {
        ok = 0;
        errno = pr ? errno : ENOMEM;
    }
    free(pr);
    int e = errno;
    close(fd);
    errno = e;
    return ok ? 0 : -1;
}

bool conc__uring_available(void)
{
    int p = atomic_load_explicit(&probed, memory_order_acquire);
    if (p == 0) {
        int e = errno;
        p = probe() == 0 ? 1 : -1;
        if (p < 0) {
            const char *d = getenv("CONC_DEBUG");
            if (d && *d && strcmp(d, "0") != 0) {
                char dis = '0';
                int f = open("/proc/sys/kernel/io_uring_disabled", O_RDONLY | O_CLOEXEC);
                if (f >= 0) {
                    if (read(f, &dis, 1) != 1)
                        dis = '0';
                    close(f);
                }
                fprintf(stderr, "conc: io_uring unavailable (%s%s): hubs use epoll\n", strerror(errno),
                        dis != '0' ? ", kernel.io_uring_disabled" : "");
            }
        }
        atomic_store_explicit(&probed, p, memory_order_release);
        errno = e;
    }
    return p > 0;
}

/* ---------------------------------------------------------------- rings */

static void ur_destroy(conc__poller_t *p)
{
    if (p->sqes)
        munmap(p->sqes, p->sqe_len);
    if (p->cq_map && p->cq_map != p->sq_map)
        munmap(p->cq_map, p->cq_len);
    if (p->sq_map)
        munmap(p->sq_map, p->sq_len);
    if (p->ringfd >= 0)
        close(p->ringfd);
    free(p);
}

static int submit_sqe(conc__poller_t *p, const struct io_uring_sqe *s);

static void arm_wake(conc__poller_t *p)
{
    struct io_uring_sqe s = {.opcode = IORING_OP_POLL_ADD, .fd = p->wakefd, .len = IORING_POLL_ADD_MULTI,
                             .user_data = (uint64_t)(uintptr_t)&p->wake};
    s.poll32_events = POLLIN;
    if (submit_sqe(p, &s) == 0)
        p->wake_armed = true;
}

static conc__poller_t *ur_create(int wakefd)
{
    if (!conc__uring_available()) {
        errno = ENOSYS;
        return NULL;
    }
    conc__poller_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->ringfd = -1;
    p->wakefd = wakefd;
    struct io_uring_params par;
    memset(&par, 0, sizeof par);
    /* Best first: task work run only when the hub enters the ring (6.1;
     * the ring then belongs to this thread: hub.c makes a new one when a
     * recycled hub moves to another thread), then cooperative task work
     * (5.19), then plain. */
    par.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL;
    p->ringfd = sys_setup(RING_ENTRIES, &par);
    p->defer = p->ringfd >= 0;
    if (p->ringfd < 0 && errno == EINVAL) {
        memset(&par, 0, sizeof par);
        par.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL;
        p->ringfd = sys_setup(RING_ENTRIES, &par);
    }
    if (p->ringfd < 0 && errno == EINVAL) {
        memset(&par, 0, sizeof par);
        p->ringfd = sys_setup(RING_ENTRIES, &par);
    }
    if (p->ringfd < 0)
        goto fail;
    fcntl(p->ringfd, F_SETFD, FD_CLOEXEC);
    p->sq_len = par.sq_off.array + par.sq_entries * sizeof(unsigned);
    p->cq_len = par.cq_off.cqes + par.cq_entries * sizeof(struct io_uring_cqe);
    if (par.features & IORING_FEAT_SINGLE_MMAP) {
        if (p->cq_len > p->sq_len)
            p->sq_len = p->cq_len;
        p->cq_len = p->sq_len;
    }
    p->sq_map = mmap(NULL, p->sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, p->ringfd,
                     IORING_OFF_SQ_RING);
    if (p->sq_map == MAP_FAILED) {
        p->sq_map = NULL;
        goto fail;
    }
    if (par.features & IORING_FEAT_SINGLE_MMAP) {
        p->cq_map = p->sq_map;
    } else {
        p->cq_map = mmap(NULL, p->cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, p->ringfd,
                         IORING_OFF_CQ_RING);
        if (p->cq_map == MAP_FAILED) {
            p->cq_map = NULL;
            goto fail;
        }
    }
    p->sqe_len = par.sq_entries * sizeof(struct io_uring_sqe);
    p->sqes = mmap(NULL, p->sqe_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, p->ringfd,
                   IORING_OFF_SQES);
    if (p->sqes == MAP_FAILED) {
        p->sqes = NULL;
        goto fail;
    }
    char *sq = p->sq_map, *cq = p->cq_map;
    p->sq_head = (unsigned *)(sq + par.sq_off.head);
    p->sq_tail = (unsigned *)(sq + par.sq_off.tail);
    p->sq_mask = *(unsigned *)(sq + par.sq_off.ring_mask);
    p->sq_entries = *(unsigned *)(sq + par.sq_off.ring_entries);
    unsigned *array = (unsigned *)(sq + par.sq_off.array);
    for (unsigned i = 0; i < p->sq_entries; i++)
        array[i] = i; /* slot i of the ring is SQE i, always */
    p->tail = *p->sq_tail;
    p->cq_head = (unsigned *)(cq + par.cq_off.head);
    p->cq_tail = (unsigned *)(cq + par.cq_off.tail);
    p->cq_mask = *(unsigned *)(cq + par.cq_off.ring_mask);
    p->cqes = (struct io_uring_cqe *)(cq + par.cq_off.cqes);
    arm_wake(p);
    if (!p->wake_armed)
        goto fail;
    return p;
fail:;
    int e = errno;
    ur_destroy(p);
    errno = e;
    return NULL;
}

/* Hand queued SQEs to the kernel (no waiting). */
static int flush(conc__poller_t *p)
{
    while (p->to_submit) {
        int r = sys_enter(p->ringfd, p->to_submit, 0, 0, NULL, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p->to_submit -= (unsigned)r <= p->to_submit ? (unsigned)r : p->to_submit;
        if (r == 0)
            return -EBUSY;
    }
    return 0;
}

static void reap(conc__poller_t *p);

static int submit_sqe(conc__poller_t *p, const struct io_uring_sqe *s)
{
    for (int tries = 0; p->tail - atomic_load_explicit((_Atomic unsigned *)p->sq_head, memory_order_acquire) >=
                        p->sq_entries;
         tries++) {
        /* SQ ring full: let the kernel take what is queued. */
        int r = flush(p);
        if (r == -EBUSY || tries > 2)
            reap(p); /* the CQ ring is full: make room (NODROP) */
        if (r < 0 && r != -EBUSY && tries > 4)
            return r;
    }
    p->sqes[p->tail & p->sq_mask] = *s;
    atomic_store_explicit((_Atomic unsigned *)p->sq_tail, ++p->tail, memory_order_release);
    p->to_submit++;
    return 0;
}

static void link_op(conc__poller_t *p, conc__pop_t *op)
{
    op->prev = NULL;
    op->next = p->inflight;
    if (p->inflight)
        p->inflight->prev = op;
    p->inflight = op;
    op->inflight = 1;
}

static void unlink_op(conc__poller_t *p, conc__pop_t *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        p->inflight = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->next = op->prev = NULL;
    op->inflight = 0;
}

static int ur_submit(conc__poller_t *p, conc__pop_t *op)
{
    struct io_uring_sqe s;
    memset(&s, 0, sizeof s);
    s.opcode = op->opcode;
    s.fd = op->fd;
    s.user_data = (uint64_t)(uintptr_t)op;
    switch (op->opcode) {
    case IORING_OP_POLL_ADD:
        s.poll32_events = op->len;
        break;
    case IORING_OP_RECV:
    case IORING_OP_SEND:
        s.addr = (uint64_t)(uintptr_t)op->buf;
        s.len = op->len;
        s.msg_flags = (uint32_t)op->msg_flags;
        if (op->multishot) /* the caller just saw EAGAIN: do not try again first */
            s.ioprio = IORING_RECVSEND_POLL_FIRST;
        break;
    case IORING_OP_READ:
    case IORING_OP_WRITE:
        s.addr = (uint64_t)(uintptr_t)op->buf;
        s.len = op->len;
        s.off = op->off;
        break;
    case IORING_OP_ACCEPT:
        s.accept_flags = (uint32_t)op->msg_flags;
        if (op->multishot)
            s.ioprio = IORING_ACCEPT_MULTISHOT;
        break;
    case IORING_OP_CONNECT:
        s.addr = (uint64_t)(uintptr_t)op->buf;
        s.off = op->len;
        break;
    default:
        return -EINVAL;
    }
    int r = submit_sqe(p, &s);
    if (r == 0)
        link_op(p, op);
    return r;
}

static int ur_cancel(conc__poller_t *p, conc__pop_t *op)
{
    if (!op->inflight)
        return 0;
    if (__builtin_expect(atomic_load_explicit(&test_cancel_fail, memory_order_relaxed) > 0, 0)) {
        atomic_fetch_sub(&test_cancel_fail, 1);
        return -EBUSY; /* as when the SQ ring stays full */
    }
    struct io_uring_sqe s;
    memset(&s, 0, sizeof s);
    s.opcode = IORING_OP_ASYNC_CANCEL;
    s.fd = -1;
    s.addr = (uint64_t)(uintptr_t)op;
    s.user_data = 0;
    return submit_sqe(p, &s);
}

static void reap(conc__poller_t *p)
{
    _Atomic unsigned *headp = (_Atomic unsigned *)p->cq_head;
    for (;;) {
        /* Reloaded each turn: a done callback may cancel, and a cancel on a
         * full SQ may reap (this function, nested) before it returns. */
        unsigned head = atomic_load_explicit(headp, memory_order_relaxed);
        unsigned tail = atomic_load_explicit((_Atomic unsigned *)p->cq_tail, memory_order_acquire);
        if (head == tail)
            break;
        struct io_uring_cqe c = p->cqes[head & p->cq_mask];
        atomic_store_explicit(headp, ++head, memory_order_release);
        if (c.user_data == 0)
            continue; /* a cancellation's own result */
        bool more = (c.flags & IORING_CQE_F_MORE) != 0;
        conc__pop_t *op = (conc__pop_t *)(uintptr_t)c.user_data;
        if (op == &p->wake) {
            uint64_t v;
            ssize_t x = read(p->wakefd, &v, sizeof v);
            (void)x;
            if (!more)
                p->wake_armed = false;
            continue;
        }
        if (!more)
            unlink_op(p, op);
        op->done(op, c.res, more);
    }
}

static int ur_wait(conc__poller_t *p, int64_t timeout_ns, void (*ready)(void *arg, int fd, int ev), void *arg)
{
    (void)ready;
    (void)arg;
    if (!p->wake_armed)
        arm_wake(p);
    unsigned head = atomic_load_explicit((_Atomic unsigned *)p->cq_head, memory_order_relaxed);
    bool have = head != atomic_load_explicit((_Atomic unsigned *)p->cq_tail, memory_order_acquire);
    if (timeout_ns != 0 && !have) {
        struct __kernel_timespec ts;
        struct io_uring_getevents_arg ga = {.sigmask = 0, .sigmask_sz = _NSIG / 8};
        if (timeout_ns > 0) {
            ts.tv_sec = timeout_ns / 1000000000;
            ts.tv_nsec = timeout_ns % 1000000000;
            ga.ts = (uint64_t)(uintptr_t)&ts;
        }
        int r = sys_enter(p->ringfd, p->to_submit, 1, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &ga,
                          sizeof ga);
        if (r >= 0)
            p->to_submit -= (unsigned)r <= p->to_submit ? (unsigned)r : p->to_submit;
        else if (errno != EINTR && errno != ETIME && errno != EBUSY && errno != EAGAIN)
            return -errno;
    } else if (p->to_submit || (p->defer && p->inflight)) {
        /* deferred task work: only an enter with GETEVENTS posts completions */
        int r = sys_enter(p->ringfd, p->to_submit, 0, p->defer ? IORING_ENTER_GETEVENTS : 0, NULL, 0);
        if (r >= 0)
            p->to_submit -= (unsigned)r <= p->to_submit ? (unsigned)r : p->to_submit;
        else if (errno != EINTR && errno != EBUSY && errno != EAGAIN)
            return -errno;
    }
    reap(p);
    return 0;
}

static void ur_abandon(conc__poller_t *p)
{
    while (p->inflight) {
        conc__pop_t *op = p->inflight;
        unlink_op(p, op);
        op->done(op, -EAGAIN, false);
    }
}

const conc__poller_ops_t conc__poll_uring = {
    .name = "uring",
    .backend = CONC_HUB_URING,
    .edge = false,
    .completion = true,
    .create = ur_create,
    .destroy = ur_destroy,
    .wait = ur_wait,
    .submit = ur_submit,
    .cancel = ur_cancel,
    .abandon = ur_abandon,
};
