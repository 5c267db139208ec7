/*
 * listener.c — the manager's server process: the listening socket, the
 * handshakes, one thread per authenticated connection, and the end.
 *
 * Handshakes. The main thread runs one epoll loop over the listening
 * socket, the stop pipe, the owner's pidfd, a signalfd (SIGTERM, SIGHUP)
 * and every connection that has not proved the key yet. A pending
 * handshake is a small record and a non-blocking socket, never a thread:
 * the server side of the handshake (internal.h) is a little state machine
 * fed by whatever bytes arrive —
 *
 *   accepted:  send 'S' + nonce                          -> MAC
 *   MAC:       check HMAC(key, challenge); send W or F   -> CHALLENGE
 *   CHALLENGE: 'C' + nonce from the client; send its HMAC -> VERDICT
 *   VERDICT:   'W': authenticated, hand over to a thread; 'F': close
 *
 * Frames are read exactly (header, then body), so nothing the client sends
 * after its verdict is consumed here; the server's own messages are tiny
 * and go into an empty socket buffer, so a send that would block is a
 * protocol failure, never a wait. Each pending handshake has a deadline
 * (CONC__MGR_HS_TIMEOUT); they all have the same length, so the
 * pending list in accept order is also in deadline order and the loop
 * sleeps until the oldest one expires. At most CONC__MGR_MAX_PENDING are
 * held (fewer if the fd limit, raised to its hard maximum at start, is
 * lower); a connection that arrives past the limit evicts one pending
 * handshake chosen at random (sshd's MaxStartups drops at random too), so
 * a flood of silent connections slows legitimate clients down without
 * locking them out: a client's chance to survive depends on the flood's
 * rate against the deadline, not on who came first. Running out of file
 * descriptors evicts a random pending handshake too, or pauses accepting
 * for a moment when there is none.
 *
 * Connections. After the handshake a connection gets a detached thread
 * that reads frames, dispatches them (server.c) and writes one reply each,
 * or switches to the shared-memory channel and serves it. A frame that is
 * too long gets CONC_ERANGE and closes that connection only.
 *
 * The end. The loop stops on a SHUTDOWN request, on the owner's death (its
 * pidfd), on SIGTERM or SIGHUP (a terminated process group, a daemon
 * child terminated at exit), or when the listening socket fails. Then: the
 * socket path is unlinked and its directory removed first of all, the
 * pending handshakes closed, every connection shut down (waking its
 * thread), every object's condition broadcast, and the threads are given a
 * moment to leave before the process exits. Only SIGKILL skips this; the
 * owner then removes the directory when it reaps the server.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/time.h"
#include "manager/server.h"
#include "manager/sha256.h"

/* Handshakes held at once, at most (fewer when the fd limit is lower). */
#define CONC__MGR_MAX_PENDING 10000
/* fds kept out of the handshake budget: authenticated connections, the
 * loop's own, the channels' memfds while they are handed over. */
#define FD_RESERVE 512

enum { HS_MAC = 0, HS_CHALLENGE = 1, HS_VERDICT = 2 };

typedef struct pend {
    int fd;
    int state;
    int64_t deadline;
    size_t slot;                /* index in the random-eviction array */
    struct pend *prev, *next;   /* accept (= deadline) order */
    size_t inlen;
    uint8_t in[4 + CONC__MGR_HS_MAX];
    uint8_t chal[1 + CONC__MGR_NONCE];
} pend_t;

typedef struct loop {
    conc__mgr_server_t *s;
    int ep, lfd;
    pend_t *head, *tail;        /* oldest first */
    pend_t **all;               /* every pending record, for a random pick */
    size_t n, max;
    uint64_t rng;
    int64_t accept_paused_until;
} loop_t;

/* epoll tags of the loop's own fds (pending records are their own tag) */
static char tag_listen, tag_wake, tag_watch, tag_signal;

static int send_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void wake_main(conc__mgr_server_t *s)
{
    char b = 1;
    while (write(s->wake[1], &b, 1) < 0 && errno == EINTR) {
    }
}

/* Answer a CONC__MOP_SHM request: {0} with the channel's memfd attached,
 * or an error code (stay on the socket): only Unix-socket peers can map
 * our memory. 1 switched, 0 not, -1 the socket failed. */
static int offer_chan(conc__mgr_conn_t *c)
{
    int code = 0, mfd = -1;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (c->chan)
        code = CONC_EINVAL;
    else if (getsockname(c->fd, (struct sockaddr *)&ss, &sl) != 0 || ss.ss_family != AF_UNIX)
        code = CONC_ENOTSUP;
    else if (conc__mgr_chan_create(&mfd, &c->chan) != 0)
        code = CONC_ENOTSUP;
    uint8_t msg[8] = {4, 0, 0, 0, (uint8_t)code, (uint8_t)((uint32_t)code >> 8),
                      (uint8_t)((uint32_t)code >> 16), (uint8_t)((uint32_t)code >> 24)};
    struct iovec iov = {msg, sizeof msg};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } cb;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (mfd >= 0) {
        memset(&cb, 0, sizeof cb);
        mh.msg_control = cb.b;
        mh.msg_controllen = sizeof cb.b;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &mfd, sizeof mfd);
    }
    ssize_t w;
    while ((w = sendmsg(c->fd, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
    }
    if (mfd >= 0)
        close(mfd);
    if (w < 0 || (w < (ssize_t)sizeof msg && send_all(c->fd, msg + w, sizeof msg - (size_t)w)))
        return -1;
    return code == 0;
}

/* A connection on the shared-memory channel: serve until the client
 * hangs up or the server stops. */
static void serve_chan(conc__mgr_conn_t *c)
{
    conc__mgr_server_t *s = c->s;
    conc__mgr_chan_t *ch = c->chan;
    uint32_t seq = 0;
    for (;;) {
        if (conc__mgr_chan_wait(&ch->req_seq, seq, &ch->srv_wait, c->fd, &c->spin, INT64_MAX,
                                &s->stopping, false) != 0)
            return; /* EOF, shutdown */
        seq = __atomic_load_n(&ch->req_seq, __ATOMIC_ACQUIRE);
        int rc = conc__mgr_chan_serve(c, ch, CONC__MGR_MAX_FRAME);
        conc__mgr_chan_post(&ch->rep_seq, seq, &ch->cli_wait, c->fd);
        if (rc < 0)
            return; /* malformed: replied, now close */
        if (rc == 1) {
            __atomic_store_n(&s->stopping, 1, __ATOMIC_RELEASE);
            wake_main(s);
        }
    }
}

/* Take c off the server's list of connections, free it and close fd. */
static void conn_drop(conc__mgr_server_t *s, conc__mgr_conn_t *c, int fd)
{
    conc_lock_acquire(&s->mu, true, CONC_FOREVER);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    conc_lock_release(&s->mu);
    conc__mgr_conn_free(c);
    close(fd);
}

/* An authenticated connection: frames in, replies out, until EOF. */
static void *conn_main(void *arg)
{
    conc__mgr_conn_t *c = arg;
    conc__mgr_server_t *s = c->s;
    int fd = c->fd;
    for (;;) {
        const uint8_t *body, *reply;
        size_t blen, used, rlen;
        int f = conc__mgr_frame(c->in, c->inlen, CONC__MGR_MAX_FRAME, &body, &blen, &used);
        if (f < 0) { /* too long: say so, then close without reading it */
            conc__mgr_reply_code(c, CONC_ERANGE);
            conc__wb_end_frame(&c->out);
            send_all(fd, c->out.p, c->out.len);
            break;
        }
        if (f == 0) {
            size_t need = c->inlen < 4 ? 4096 : 4 + (size_t)(c->in[0] | c->in[1] << 8 |
                                                            c->in[2] << 16 | (uint32_t)c->in[3] << 24);
            if (need < 4096)
                need = 4096;
            if (need > c->incap) {
                uint8_t *p = realloc(c->in, need);
                if (!p)
                    break;
                c->in = p;
                c->incap = need;
            }
            ssize_t r = conc__mgr_recv_spin(fd, c->in + c->inlen, c->incap - c->inlen, &c->spin);
            if (r < 0 && errno == EAGAIN)
                r = recv(fd, c->in + c->inlen, c->incap - c->inlen, 0);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break; /* EOF (a truncated frame included), error, shutdown */
            c->inlen += (size_t)r;
            continue;
        }
        if (blen == 1 && body[0] == CONC__MOP_SHM) {
            int sw = offer_chan(c);
            if (sw < 0 || (sw && c->inlen != used))
                break; /* nothing may follow the switch on the socket */
            c->inlen -= used;
            memmove(c->in, c->in + used, c->inlen);
            if (sw) {
                serve_chan(c);
                break;
            }
            continue;
        }
        int rc = conc__mgr_dispatch(c, body, blen, &reply, &rlen);
        if (send_all(fd, reply - 4, rlen + 4) != 0 || rc < 0)
            break;
        c->inlen -= used;
        memmove(c->in, c->in + used, c->inlen);
        if (rc == 1) {
            __atomic_store_n(&s->stopping, 1, __ATOMIC_RELEASE);
            wake_main(s);
        }
    }
    conn_drop(s, c, fd);
    __atomic_fetch_sub(&s->nthreads, 1, __ATOMIC_RELEASE); /* last touch of s */
    return NULL;
}

/* The handshake succeeded: a thread serves fd from now on (the bytes the
 * client sent after its verdict are still in the socket). */
static void start_conn(conc__mgr_server_t *s, int fd)
{
    int fl = fcntl(fd, F_GETFL);
    conc__mgr_conn_t *c = conc__mgr_conn_new(s, fd);
    if (!c || fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        conc__mgr_conn_free(c);
        close(fd);
        return;
    }
    conc_lock_acquire(&s->mu, true, CONC_FOREVER);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    conc_lock_release(&s->mu);
    __atomic_fetch_add(&s->nthreads, 1, __ATOMIC_RELAXED);
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 256 * 1024);
    pthread_t th;
    if (pthread_create(&th, &at, conn_main, c) != 0) { /* refuse it */
        conn_drop(s, c, fd);
        __atomic_fetch_sub(&s->nthreads, 1, __ATOMIC_RELAXED);
    }
    pthread_attr_destroy(&at);
}

/* ------------------------------------------------------------ handshakes */

static uint64_t rnd(loop_t *L)
{
    uint64_t x = L->rng; /* xorshift64*: spreads evictions, need not be secret */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    L->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Take p out of the loop; close its socket unless keep_fd. */
static void pend_drop(loop_t *L, pend_t *p, bool keep_fd)
{
    epoll_ctl(L->ep, EPOLL_CTL_DEL, p->fd, NULL);
    if (!keep_fd)
        close(p->fd);
    if (p->prev)
        p->prev->next = p->next;
    else
        L->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        L->tail = p->prev;
    pend_t *last = L->all[--L->n];
    L->all[p->slot] = last;
    last->slot = p->slot;
    free(p);
}

static void evict_random(loop_t *L)
{
    if (L->n)
        pend_drop(L, L->all[rnd(L) % L->n], false);
}

/* One handshake frame, at most CONC__MGR_HS_MAX bytes, sent at once. */
static int hs_send(int fd, const void *body, size_t n)
{
    uint8_t b[4 + CONC__MGR_HS_MAX];
    b[0] = (uint8_t)n;
    b[1] = b[2] = b[3] = 0;
    memcpy(b + 4, body, n);
    ssize_t w;
    do
        w = send(fd, b, 4 + n, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (w < 0 && errno == EINTR);
    return w == (ssize_t)(4 + n) ? 0 : -1;
}

/* Accept one connection and start its handshake. false: nothing more to
 * accept now (none waiting, or out of fds and accepting paused). */
static bool accept_one(loop_t *L)
{
    int fd = accept4(L->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0 && (errno == EMFILE || errno == ENFILE) && L->n) {
        evict_random(L); /* a pending stranger's fd is worth less than a new client's */
        fd = accept4(L->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    }
    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* nothing to evict: stop looking at the listener for a moment */
            struct epoll_event ev = {.events = 0, .data.ptr = &tag_listen};
            epoll_ctl(L->ep, EPOLL_CTL_MOD, L->lfd, &ev);
            L->accept_paused_until = conc__now_ns() + 10000000LL;
        }
        return errno == EINTR || errno == ECONNABORTED;
    }
    if (L->n >= L->max)
        evict_random(L);
    pend_t *p = calloc(1, sizeof *p);
    if (!p) {
        close(fd);
        return true;
    }
    p->fd = fd;
    p->state = HS_MAC;
    p->deadline = conc__now_ns() + (int64_t)(CONC__MGR_HS_TIMEOUT * 1e9);
    p->chal[0] = 'S';
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = p};
    if (conc__mgr_random(p->chal + 1, CONC__MGR_NONCE) != 0 || hs_send(fd, p->chal, sizeof p->chal) ||
        epoll_ctl(L->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        close(fd);
        free(p);
        return true;
    }
    p->slot = L->n;
    L->all[L->n++] = p;
    p->prev = L->tail;
    if (L->tail)
        L->tail->next = p;
    else
        L->head = p;
    L->tail = p;
    return true;
}

/* One whole frame arrived for p: advance. false: the connection is done
 * with (dropped, or handed over). */
static bool hs_step(loop_t *L, pend_t *p, const uint8_t *b, size_t n)
{
    conc__mgr_server_t *s = L->s;
    uint8_t mac[CONC__SHA256_LEN];
    switch (p->state) {
    case HS_MAC: {
        conc__hmac_sha256(s->key, s->keylen, p->chal, sizeof p->chal, mac);
        bool ok = n == sizeof mac && conc__ct_equal(b, mac, sizeof mac);
        if (hs_send(p->fd, ok ? "W" : "F", 1) || !ok)
            break;
        p->state = HS_CHALLENGE;
        return true;
    }
    case HS_CHALLENGE:
        if (n != 1 + CONC__MGR_NONCE || b[0] != 'C')
            break; /* only the client's role letter: no reflection */
        conc__hmac_sha256(s->key, s->keylen, b, n, mac);
        if (hs_send(p->fd, mac, sizeof mac))
            break;
        p->state = HS_VERDICT;
        return true;
    case HS_VERDICT:
        if (n != 1 || b[0] != 'W')
            break;
        int fd = p->fd;
        pend_drop(L, p, true);
        start_conn(s, fd);
        return false;
    }
    pend_drop(L, p, false);
    return false;
}

/* p's socket is readable: read exactly the frame in progress. */
static void hs_input(loop_t *L, pend_t *p)
{
    for (;;) {
        size_t need = p->inlen < 4 ? 4 - p->inlen : 4 + (size_t)p->in[0] - p->inlen;
        if (p->inlen >= 4 && (p->in[1] | p->in[2] | p->in[3] || p->in[0] > CONC__MGR_HS_MAX)) {
            pend_drop(L, p, false); /* longer than any handshake message */
            return;
        }
        if (need == 0) {
            size_t n = p->inlen - 4;
            p->inlen = 0;
            if (!hs_step(L, p, p->in + 4, n))
                return;
            continue;
        }
        ssize_t r = recv(p->fd, p->in + p->inlen, need, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (r <= 0) {
            pend_drop(L, p, false); /* EOF or error */
            return;
        }
        p->inlen += (size_t)r;
    }
}

/* ------------------------------------------------------------------ loop */

/* The fd limit, raised to its hard maximum: 0 or the new soft limit. */
static rlim_t raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t want = rl.rlim_max;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

static void remove_path(const char *unix_path)
{
    if (!unix_path)
        return;
    unlink(unix_path);
    char dir[4096];
    size_t n = strlen(unix_path);
    if (n < sizeof dir) {
        memcpy(dir, unix_path, n + 1);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) {
            *slash = 0;
            rmdir(dir);
        }
    }
}

static int ep_add(int ep, int fd, void *tag)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = tag};
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

int conc__mgr_serve(int lfd, int watch_fd, const void *key, size_t keylen, const char *unix_path)
{
    loop_t L = {.lfd = lfd, .ep = -1};
    int sfd = -1, rc = CONC_ESYS;
    /* Signals that end the server end it cleanly (blocked before any
     * connection thread exists, so they all inherit the mask). */
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigaddset(&term, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &term, NULL);
    rlim_t lim = raise_nofile();
    L.max = CONC__MGR_MAX_PENDING;
    if (lim && lim < (rlim_t)L.max + 2 * FD_RESERVE)
        L.max = lim > 3 * FD_RESERVE ? (size_t)(lim - 2 * FD_RESERVE) : FD_RESERVE / 4;
    conc__mgr_random(&L.rng, sizeof L.rng);
    L.rng |= 1;
    if ((rc = conc__mgr_server_new(&L.s, key, keylen, false)) != 0) {
        remove_path(unix_path);
        return rc;
    }
    conc__mgr_server_t *s = L.s;
    rc = CONC_ESYS;
    if (!(L.all = malloc(L.max * sizeof *L.all)) || pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) != 0 ||
        (sfd = signalfd(-1, &term, SFD_CLOEXEC | SFD_NONBLOCK)) < 0 ||
        (L.ep = epoll_create1(EPOLL_CLOEXEC)) < 0 || ep_add(L.ep, lfd, &tag_listen) ||
        ep_add(L.ep, s->wake[0], &tag_wake) || ep_add(L.ep, sfd, &tag_signal) ||
        (watch_fd >= 0 && ep_add(L.ep, watch_fd, &tag_watch))) {
        rc = L.all ? CONC_ESYS : CONC_ENOMEM;
        goto stop;
    }
    rc = 0;
    for (;;) {
        int64_t now = conc__now_ns();
        while (L.head && L.head->deadline <= now)
            pend_drop(&L, L.head, false); /* too slow to prove the key */
        if (L.accept_paused_until && now >= L.accept_paused_until) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tag_listen};
            epoll_ctl(L.ep, EPOLL_CTL_MOD, lfd, &ev);
            L.accept_paused_until = 0;
        }
        int64_t until = L.head ? L.head->deadline : INT64_MAX;
        if (L.accept_paused_until && L.accept_paused_until < until)
            until = L.accept_paused_until;
        int ms = until == INT64_MAX ? -1 : (int)((until - now) / 1000000 + 1);
        struct epoll_event evs[256];
        int n = epoll_wait(L.ep, evs, 256, ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        bool stop = false, acc = false;
        for (int i = 0; i < n; i++) {
            void *t = evs[i].data.ptr;
            if (t == &tag_wake || t == &tag_watch || t == &tag_signal)
                stop = true;
            else if (t == &tag_listen)
                acc = acc || (evs[i].events & EPOLLIN), stop = stop || !(evs[i].events & EPOLLIN);
        }
        if (stop || __atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE))
            break;
        /* Handshakes first: an eviction by accept below frees a record
         * that may still be named by a later event of this batch. */
        for (int i = 0; i < n; i++) {
            void *t = evs[i].data.ptr;
            if (t != &tag_listen && t != &tag_wake && t != &tag_watch && t != &tag_signal)
                hs_input(&L, t);
        }
        for (int k = 0; acc && k < 64 && accept_one(&L); k++) {
        }
    }
stop:
    /* No new connections; the address goes first, whatever else happens. */
    __atomic_store_n(&s->stopping, 1, __ATOMIC_RELEASE);
    close(lfd);
    remove_path(unix_path);
    while (L.head)
        pend_drop(&L, L.head, false);
    free(L.all);
    if (L.ep >= 0)
        close(L.ep);
    if (sfd >= 0)
        close(sfd);
    conc_lock_acquire(&s->mu, true, CONC_FOREVER);
    for (conc__mgr_conn_t *c = s->conns; c; c = c->next)
        shutdown(c->fd, SHUT_RDWR);
    conc_lock_release(&s->mu);
    conc__mgr_wake_objects(s);
    for (int i = 0; i < 3000 && __atomic_load_n(&s->nthreads, __ATOMIC_ACQUIRE); i++)
        poll(NULL, 0, 1);
    if (__atomic_load_n(&s->nthreads, __ATOMIC_ACQUIRE) == 0)
        conc__mgr_server_free(s); /* else the process exits under them */
    return rc;
}
