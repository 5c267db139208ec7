/*
 * uring.c — the io_uring backend: readiness through IORING_OP_POLL_ADD,
 * with raw system calls (io_uring_setup / io_uring_enter and mmap of the
 * rings; <linux/io_uring.h> from the kernel headers), so libconc needs
 * nothing but libc.
 *
 * How it works. Every key has at most one one-shot poll in flight, tagged
 * user_data = fd << 32 | gen, where gen is fresh for every submission. A
 * select
 *   1. queues a POLL_ADD for every key that has none in flight (new keys,
 *      modified keys, keys reported by the previous select): a one-shot poll
 *      on an fd that is still ready completes at once, which makes the
 *      backend level-triggered like the others;
 *   2. submits them and waits in the same io_uring_enter (EXT_ARG carries
 *      the timeout), so a select costs one system call;
 *   3. reaps completions: a completion whose (fd, gen) no longer matches a
 *      key is stale (cancelled by unregister / modify) and is dropped.
 * Unregister and modify cancel the poll in flight (POLL_REMOVE by
 * user_data) and submit at once, so the kernel drops its reference to the
 * file before the caller closes it. A cancel is never lost: when the SQ
 * ring has no free entry (the kernel refuses submissions, EAGAIN) its tag
 * waits in rm[] and is queued first thing in every later cancel and
 * select, before any new POLL_ADD; no key is armed again while rm[] is
 * not empty. rm[] cannot overflow: add reserves room for every
 * registered key on top of the cancels already waiting (invariant:
 * nrm + keys armed <= rmcap), so unregister never needs memory. Completions beyond max stay in the
 * ring for the next call. The CQ ring holds 4096 entries and the kernel
 * keeps overflowing completions (IORING_FEAT_NODROP), flushed on the next
 * enter.
 *
 * Requires Linux 5.11 (EXT_ARG); io_uring_setup failing (seccomp in
 * containers, kernel.io_uring_disabled) gives CONC_ENOTSUP.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "selectors/sel.h"

#define TAG_REMOVE UINT64_MAX
enum { SQ_ENTRIES = 256, CQ_ENTRIES = 4096 };

typedef struct {
    int fd;
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array, *sq_flags;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_cqe *cqes;
    struct io_uring_sqe *sqes;
    void *sq_ptr, *cq_ptr;
    size_t sq_sz, cq_sz, sqes_sz;
    unsigned sq_entries, tail; /* tail: our local SQ tail */
    uint32_t gen;
    int *arm; /* fds whose key needs a POLL_ADD */
    int narm, armcap;
    uint64_t *rm; /* tags of polls whose POLL_REMOVE found no free SQE yet */
    int nrm, rmcap;
} sel_uring_t;

static int sys_setup(unsigned entries, struct io_uring_params *p)
{
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

/* Tests: while nonzero, every io_uring_enter that submits fails with EAGAIN
 * (a kernel that cannot take new requests), so the SQ ring fills up. */
int conc__uring_refuse_submit;

static int sys_enter(int fd, unsigned submit, unsigned min, unsigned flags, void *arg, size_t argsz)
{
    if (submit && __builtin_expect(__atomic_load_n(&conc__uring_refuse_submit, __ATOMIC_RELAXED), 0)) {
        errno = EAGAIN;
        return -1;
    }
    return (int)syscall(__NR_io_uring_enter, fd, submit, min, flags, arg, argsz);
}

static void u_unmap(sel_uring_t *b)
{
    if (b->sqes && b->sqes != MAP_FAILED)
        munmap(b->sqes, b->sqes_sz);
    if (b->cq_ptr && b->cq_ptr != MAP_FAILED && b->cq_ptr != b->sq_ptr)
        munmap(b->cq_ptr, b->cq_sz);
    if (b->sq_ptr && b->sq_ptr != MAP_FAILED)
        munmap(b->sq_ptr, b->sq_sz);
}

static int u_init(conc_selector_t *s, const conc_selector_opts_t *o)
{
    (void)o;
    sel_uring_t *b = calloc(1, sizeof *b);
    if (!b)
        return CONC_ENOMEM;
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = CQ_ENTRIES;
    b->fd = sys_setup(SQ_ENTRIES, &p);
    if (b->fd < 0) {
        free(b);
        return (errno == ENOMEM) ? CONC_ENOMEM : CONC_ENOTSUP;
    }
    int rc = CONC_ENOTSUP;
    if (!(p.features & IORING_FEAT_EXT_ARG) || !(p.features & IORING_FEAT_NODROP))
        goto fail;
    b->sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    b->cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    bool single = p.features & IORING_FEAT_SINGLE_MMAP;
    if (single && b->cq_sz > b->sq_sz)
        b->sq_sz = b->cq_sz;
    rc = CONC_ESYS;
    b->sq_ptr = mmap(NULL, b->sq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, b->fd,
                     IORING_OFF_SQ_RING);
    if (b->sq_ptr == MAP_FAILED)
        goto fail;
    b->cq_ptr = single ? b->sq_ptr
                       : mmap(NULL, b->cq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                              b->fd, IORING_OFF_CQ_RING);
    if (b->cq_ptr == MAP_FAILED)
        goto fail;
    b->sqes_sz = p.sq_entries * sizeof(struct io_uring_sqe);
    b->sqes = mmap(NULL, b->sqes_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, b->fd,
                   IORING_OFF_SQES);
    if (b->sqes == MAP_FAILED)
        goto fail;
    char *sq = b->sq_ptr, *cq = b->cq_ptr;
    b->sq_head = (unsigned *)(sq + p.sq_off.head);
    b->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    b->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    b->sq_array = (unsigned *)(sq + p.sq_off.array);
    b->sq_flags = (unsigned *)(sq + p.sq_off.flags);
    b->cq_head = (unsigned *)(cq + p.cq_off.head);
    b->cq_tail = (unsigned *)(cq + p.cq_off.tail);
    b->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    b->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    b->sq_entries = p.sq_entries;
    b->tail = *b->sq_tail;
    s->be = b;
    return 0;
fail:
    u_unmap(b);
    close(b->fd);
    free(b);
    return rc;
}

static void u_fini(conc_selector_t *s)
{
    sel_uring_t *b = s->be;
    u_unmap(b);
    close(b->fd); /* cancels every poll in flight */
    free(b->arm);
    free(b->rm);
    free(b);
}

/* Submit what is queued (no wait). A few tries: EINTR retries, and EBUSY /
 * EAGAIN (completions backed up) first lets the kernel flush them. */
static int u_flush(sel_uring_t *b)
{
    __atomic_store_n(b->sq_tail, b->tail, __ATOMIC_RELEASE);
    for (int tries = 0; tries < 8; tries++) {
        unsigned pending = b->tail - __atomic_load_n(b->sq_head, __ATOMIC_ACQUIRE);
        if (!pending)
            return 0;
        int r = sys_enter(b->fd, pending, 0, 0, NULL, 0);
        if (r == 0)
            break;
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EBUSY)) {
            (void)sys_enter(b->fd, 0, 0, IORING_ENTER_GETEVENTS, NULL, 0);
            continue;
        }
        if (r < 0)
            return CONC_ESYS;
    }
    return 0;
}

static struct io_uring_sqe *u_sqe(sel_uring_t *b)
{
    if (b->tail - __atomic_load_n(b->sq_head, __ATOMIC_ACQUIRE) >= b->sq_entries) {
        u_flush(b);
        if (b->tail - __atomic_load_n(b->sq_head, __ATOMIC_ACQUIRE) >= b->sq_entries)
            return NULL;
    }
    unsigned i = b->tail & *b->sq_mask;
    struct io_uring_sqe *e = &b->sqes[i];
    memset(e, 0, sizeof *e);
    b->sq_array[i] = i;
    b->tail++;
    return e;
}

static int u_push_arm(sel_uring_t *b, int fd)
{
    if (b->narm == b->armcap) {
        int cap = b->armcap ? b->armcap * 2 : 64;
        int *a = realloc(b->arm, (size_t)cap * sizeof *a);
        if (!a)
            return CONC_ENOMEM;
        b->arm = a;
        b->armcap = cap;
    }
    b->arm[b->narm++] = fd;
    return 0;
}

/* Queue a POLL_REMOVE for every waiting cancel the SQ ring has room for;
 * true when none is left waiting. */
static bool u_queue_removes(sel_uring_t *b)
{
    int i = 0;
    for (; i < b->nrm; i++) {
        struct io_uring_sqe *e = u_sqe(b);
        if (!e)
            break; /* still full: the next cancel or select tries again */
        e->opcode = IORING_OP_POLL_REMOVE;
        e->fd = -1;
        e->addr = b->rm[i];
        e->user_data = TAG_REMOVE;
    }
    if (i) {
        memmove(b->rm, b->rm + i, (size_t)(b->nrm - i) * sizeof *b->rm);
        b->nrm -= i;
    }
    return b->nrm == 0;
}

/* Cancel k's poll in flight, if any, and submit at once. */
static void u_cancel(sel_uring_t *b, conc__sel_key_t *k)
{
    if (!k->slot)
        return;
    k->slot = 0;
    b->rm[b->nrm++] = ((uint64_t)(uint32_t)k->pub.fd << 32) | k->gen; /* room: see u_add */
    k->gen = ++b->gen; /* whatever completes under the old tag is stale */
    u_queue_removes(b);
    u_flush(b);
}

static int u_add(conc_selector_t *s, conc__sel_key_t *k)
{
    sel_uring_t *b = s->be;
    k->slot = 0;
    /* room for a cancel of every registered key (k included) on top of
     * those waiting: u_cancel never allocates */
    long need = (long)b->nrm + s->count;
    if (need > b->rmcap) {
        long cap = b->rmcap ? b->rmcap : 64;
        while (cap < need)
            cap *= 2;
        if (cap > INT_MAX)
            return CONC_ENOMEM;
        uint64_t *rm = realloc(b->rm, (size_t)cap * sizeof *rm);
        if (!rm)
            return CONC_ENOMEM;
        b->rm = rm;
        b->rmcap = (int)cap;
    }
    return u_push_arm(b, k->pub.fd);
}

static int u_mod(conc_selector_t *s, conc__sel_key_t *k, int old)
{
    (void)old;
    sel_uring_t *b = s->be;
    u_cancel(b, k);
    return u_push_arm(b, k->pub.fd);
}

static void u_del(conc_selector_t *s, conc__sel_key_t *k)
{
    u_cancel(s->be, k);
}

/* Queue a POLL_ADD for every key that needs one. */
static void u_arm(conc_selector_t *s, sel_uring_t *b)
{
    int i = 0;
    for (; i < b->narm; i++) {
        conc__sel_key_t *k = conc__sel_lookup(s, b->arm[i]);
        if (!k || k->slot)
            continue;
        struct io_uring_sqe *e = u_sqe(b);
        if (!e)
            break; /* the SQ ring is full even after a flush: next time */
        k->gen = ++b->gen;
        k->slot = 1;
        e->opcode = IORING_OP_POLL_ADD;
        e->fd = k->pub.fd;
        e->poll32_events = ((k->pub.events & CONC_SEL_READ) ? POLLIN : 0) |
                           ((k->pub.events & CONC_SEL_WRITE) ? POLLOUT : 0);
        e->user_data = ((uint64_t)(uint32_t)k->pub.fd << 32) | k->gen;
    }
    if (i) {
        memmove(b->arm, b->arm + i, (size_t)(b->narm - i) * sizeof *b->arm);
        b->narm -= i;
    }
}

static int u_reap(conc_selector_t *s, sel_uring_t *b, conc_selector_ready_t *out, int max)
{
    int got = 0;
    unsigned head = *b->cq_head;
    unsigned tail = __atomic_load_n(b->cq_tail, __ATOMIC_ACQUIRE);
    for (; head != tail && got < max; head++) {
        struct io_uring_cqe *c = &b->cqes[head & *b->cq_mask];
        if (c->user_data == TAG_REMOVE)
            continue;
        conc__sel_key_t *k = conc__sel_lookup(s, (int)(c->user_data >> 32));
        if (!k || !k->slot || k->gen != (uint32_t)c->user_data)
            continue; /* stale: cancelled by unregister / modify */
        k->slot = 0;
        u_push_arm(b, k->pub.fd);
        /* an error (a closed fd: -EBADF) counts as ready, as POLLNVAL does */
        unsigned rev = c->res < 0 ? (unsigned)POLLERR : (unsigned)c->res;
        int ev = conc__sel_events(rev, POLLIN, POLLOUT, k->pub.events);
        if (ev)
            out[got++] = (conc_selector_ready_t){&k->pub, ev};
    }
    __atomic_store_n(b->cq_head, head, __ATOMIC_RELEASE);
    return got;
}

static int u_wait(conc_selector_t *s, int64_t ns, conc_selector_ready_t *out, int max)
{
    sel_uring_t *b = s->be;
    if (u_queue_removes(b)) /* cancels first; no arming while one waits */
        u_arm(s, b);
    __atomic_store_n(b->sq_tail, b->tail, __ATOMIC_RELEASE);
    unsigned pending = b->tail - __atomic_load_n(b->sq_head, __ATOMIC_ACQUIRE);
    bool have = *b->cq_head != __atomic_load_n(b->cq_tail, __ATOMIC_ACQUIRE);
    struct __kernel_timespec ts;
    struct io_uring_getevents_arg arg;
    memset(&arg, 0, sizeof arg);
    if (ns >= 0) {
        ts.tv_sec = ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        arg.ts = (uint64_t)(uintptr_t)&ts;
    }
    unsigned min = (have || ns == 0) ? 0 : 1;
    int r = sys_enter(b->fd, pending, min, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg,
                      sizeof arg);
    if (r < 0 && errno != ETIME) {
        if (errno == EINTR)
            return CONC__SEL_EINTR;
        if (errno != EAGAIN && errno != EBUSY)
            return CONC_ESYS;
    }
    int got = u_reap(s, b, out, max);
    if (got < max && (__atomic_load_n(b->sq_flags, __ATOMIC_ACQUIRE) & IORING_SQ_CQ_OVERFLOW)) {
        (void)sys_enter(b->fd, 0, 0, IORING_ENTER_GETEVENTS, NULL, 0);
        got += u_reap(s, b, out + got, max - got);
    }
    return got;
}

static int u_waitfd(conc_selector_t *s)
{
    return ((sel_uring_t *)s->be)->fd;
}

const conc__sel_ops_t conc__sel_uring_ops = {"uring", u_init, u_fini, u_add, u_mod, u_del, u_wait,
                                             u_waitfd};
