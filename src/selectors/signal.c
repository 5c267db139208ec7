/*
 * signal.c — the signal-driven backend: O_ASYNC + F_SETSIG with a
 * real-time signal, read through a signalfd, confirmed with poll(2).
 *
 *    register(fd):  F_SETOWN_EX (this thread), F_SETSIG (signo), O_ASYNC
 *    kernel:        on each I/O event of fd, queue signo with si_fd = fd,
 *                   si_band = POLLIN/POLLOUT/...; if the RT queue is full
 *                   (RLIMIT_SIGPENDING), send a plain SIGIO instead
 *    select:        1. drain the signalfd: each si_fd becomes a candidate;
 *                      a SIGIO means signals were lost: every key becomes a
 *                      candidate (a full rescan; counted in rescans)
 *                   2. poll(candidates, 0): report the ready ones, drop the
 *                      others (their next event brings a new signal)
 *                   3. nothing ready: poll the signalfd with the timeout,
 *                      then 1-2 again
 *
 * Why the confirmation: a signal says "something happened on fd", once per
 * event (edge), while select is level-triggered and the caller may leave
 * data unread; the candidate list keeps an fd until poll says it is not
 * ready any more. A newly registered (or modified) fd is a candidate at
 * once, since it may be ready before any signal comes. No event is lost:
 * the signalfd is drained before the poll, so an event after the drain is
 * either seen by that poll or leaves a signal for the next select.
 *
 * Limits (docs/selectors.md): the signals are directed to the creating
 * thread, which must block signo and SIGIO (done here, restored at close)
 * and is the only one allowed to select (CONC_EPERM otherwise); one signal
 * selector per thread (CONC_EAGAIN); O_ASYNC is a flag of the open file
 * description, shared by dup'ed fds and cleared again at unregister;
 * regular files never signal (they are always ready anyway); sockets
 * signal writability only after they were found full.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "selectors/sel.h"

typedef struct {
    int sfd, signo;
    pid_t tid;
    bool had_signo, had_sigio; /* already blocked before we came */
    int *cand;                 /* candidate fds; key->cand is the index */
    int ncand, candcap;
    struct pollfd *pfd;
    int pfdcap;
    long rescans;
} sel_signal_t;

/* Threads that own an open signal selector (at most one each). */
static pthread_mutex_t owners_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t owners[64];

static bool owners_add(pid_t tid)
{
    pthread_mutex_lock(&owners_lock);
    int free_slot = -1;
    bool ok = true;
    for (int i = 0; i < 64; i++) {
        if (owners[i] == tid)
            ok = false;
        if (!owners[i] && free_slot < 0)
            free_slot = i;
    }
    if (ok && free_slot < 0)
        ok = false;
    if (ok)
        owners[free_slot] = tid;
    pthread_mutex_unlock(&owners_lock);
    return ok;
}

static void owners_del(pid_t tid)
{
    pthread_mutex_lock(&owners_lock);
    for (int i = 0; i < 64; i++)
        if (owners[i] == tid)
            owners[i] = 0;
    pthread_mutex_unlock(&owners_lock);
}

static int sg_init(conc_selector_t *s, const conc_selector_opts_t *o)
{
    int signo = o->signo ? o->signo : SIGRTMIN + 4;
    if (signo < SIGRTMIN || signo > SIGRTMAX)
        return CONC_EINVAL;
    sel_signal_t *b = calloc(1, sizeof *b);
    if (!b)
        return CONC_ENOMEM;
    b->signo = signo;
    b->tid = gettid();
    if (!owners_add(b->tid)) {
        free(b);
        return CONC_EAGAIN;
    }
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, signo);
    sigaddset(&set, SIGIO);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    b->had_signo = sigismember(&old, signo);
    b->had_sigio = sigismember(&old, SIGIO);
    b->sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (b->sfd < 0) {
        int e = errno;
        sigemptyset(&set);
        if (!b->had_signo)
            sigaddset(&set, signo);
        if (!b->had_sigio)
            sigaddset(&set, SIGIO);
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
        owners_del(b->tid);
        free(b);
        errno = e;
        return CONC_ESYS;
    }
    s->be = b;
    return 0;
}

static int cand_add(sel_signal_t *b, conc__sel_key_t *k)
{
    if (k->cand >= 0)
        return 0;
    if (b->ncand == b->candcap) {
        int cap = b->candcap ? b->candcap * 2 : 64;
        int *c = realloc(b->cand, (size_t)cap * sizeof *c);
        if (!c)
            return CONC_ENOMEM;
        b->cand = c;
        b->candcap = cap;
    }
    k->cand = b->ncand;
    b->cand[b->ncand++] = k->pub.fd;
    return 0;
}

static void cand_del(conc_selector_t *s, sel_signal_t *b, conc__sel_key_t *k)
{
    if (k->cand < 0)
        return;
    int last = --b->ncand;
    if (k->cand != last) {
        b->cand[k->cand] = b->cand[last];
        s->keys[b->cand[k->cand]]->cand = k->cand;
    }
    k->cand = -1;
}

static void async_off(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_ASYNC))
        (void)fcntl(fd, F_SETFL, fl & ~O_ASYNC);
}

static void sg_drain(conc_selector_t *s, sel_signal_t *b);

static void sg_fini(conc_selector_t *s)
{
    sel_signal_t *b = s->be;
    for (int fd = 0; fd <= s->maxfd; fd++)
        if (s->keys[fd])
            async_off(fd);
    /* No new signals now; consume the queued ones before unblocking. */
    struct signalfd_siginfo si[16];
    while (read(b->sfd, si, sizeof si) > 0) {
    }
    close(b->sfd);
    if (gettid() == b->tid) {
        sigset_t set;
        sigemptyset(&set);
        if (!b->had_signo)
            sigaddset(&set, b->signo);
        if (!b->had_sigio)
            sigaddset(&set, SIGIO);
        pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    }
    owners_del(b->tid);
    free(b->cand);
    free(b->pfd);
    free(b);
}

static int sg_add(conc_selector_t *s, conc__sel_key_t *k)
{
    sel_signal_t *b = s->be;
    int fd = k->pub.fd;
    struct f_owner_ex own = {.type = F_OWNER_TID, .pid = b->tid};
    if (fcntl(fd, F_SETOWN_EX, &own) < 0 || fcntl(fd, F_SETSIG, b->signo) < 0)
        return CONC_ESYS;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_ASYNC) < 0)
        return CONC_ESYS;
    if (cand_add(b, k)) { /* it may be ready already: no signal would say so */
        async_off(fd);
        return CONC_ENOMEM;
    }
    return 0;
}

static int sg_mod(conc_selector_t *s, conc__sel_key_t *k, int old)
{
    (void)old;
    return cand_add(s->be, k);
}

static void sg_del(conc_selector_t *s, conc__sel_key_t *k)
{
    cand_del(s, s->be, k);
    async_off(k->pub.fd); /* EBADF for a closed fd: nothing to undo */
}

/* Step 1: turn queued signals into candidates. */
static void sg_drain(conc_selector_t *s, sel_signal_t *b)
{
    struct signalfd_siginfo si[32];
    bool overflow = false;
    for (;;) {
        ssize_t r = read(b->sfd, si, sizeof si);
        if (r <= 0)
            break;
        for (size_t i = 0; i < (size_t)r / sizeof si[0]; i++) {
            if ((int)si[i].ssi_signo == SIGIO) {
                overflow = true;
                continue;
            }
            conc__sel_key_t *k = conc__sel_lookup(s, si[i].ssi_fd);
            if (k)
                cand_add(b, k);
        }
    }
    if (overflow) {
        b->rescans++;
        for (int fd = 0; fd <= s->maxfd; fd++)
            if (s->keys[fd])
                cand_add(b, s->keys[fd]);
    }
}

/* Step 2: confirm the candidates with a zero-timeout poll. */
static int sg_confirm(conc_selector_t *s, sel_signal_t *b, conc_selector_ready_t *out, int max)
{
    if (!b->ncand)
        return 0;
    if (b->pfdcap < b->ncand) {
        struct pollfd *p = realloc(b->pfd, (size_t)b->ncand * sizeof *p);
        if (!p)
            return CONC_ENOMEM;
        b->pfd = p;
        b->pfdcap = b->ncand;
    }
    int n = b->ncand;
    for (int i = 0; i < n; i++) {
        const conc__sel_key_t *k = s->keys[b->cand[i]];
        b->pfd[i] = (struct pollfd){.fd = k->pub.fd,
                                    .events = (short)(((k->pub.events & CONC_SEL_READ) ? POLLIN : 0) |
                                                      ((k->pub.events & CONC_SEL_WRITE) ? POLLOUT : 0))};
    }
    if (poll(b->pfd, (nfds_t)n, 0) < 0)
        return errno == EINTR ? CONC__SEL_EINTR : CONC_ESYS;
    int got = 0;
    for (int i = 0; i < n && got < max; i++) {
        conc__sel_key_t *k = s->keys[b->pfd[i].fd];
        int ev = b->pfd[i].revents
                     ? conc__sel_events((unsigned short)b->pfd[i].revents, POLLIN, POLLOUT, k->pub.events)
                     : 0;
        if (ev)
            out[got++] = (conc_selector_ready_t){&k->pub, ev};
        else
            cand_del(s, b, k); /* not ready: its next event brings a signal */
    }
    return got;
}

static int sg_wait(conc_selector_t *s, int64_t ns, conc_selector_ready_t *out, int max)
{
    sel_signal_t *b = s->be;
    if (gettid() != b->tid)
        return CONC_EPERM;
    sg_drain(s, b);
    int got = sg_confirm(s, b, out, max);
    if (got != 0 || ns == 0)
        return got;
    struct pollfd p = {.fd = b->sfd, .events = POLLIN};
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    if (ppoll(&p, 1, ns < 0 ? NULL : &ts, NULL) < 0)
        return errno == EINTR ? CONC__SEL_EINTR : CONC_ESYS;
    sg_drain(s, b);
    return sg_confirm(s, b, out, max);
}

static int sg_waitfd(conc_selector_t *s)
{
    return ((sel_signal_t *)s->be)->sfd;
}

long conc_selector_rescans(const conc_selector_t *s)
{
    return (s && s->backend == CONC_SEL_SIGNAL) ? ((const sel_signal_t *)s->be)->rescans : 0;
}

const conc__sel_ops_t conc__sel_signal_ops = {"signal", sg_init, sg_fini, sg_add, sg_mod, sg_del,
                                              sg_wait, sg_waitfd};
