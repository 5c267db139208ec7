/*
 * manager.c — multiprocessing.Manager for C: starting the server process,
 * connecting to it, and the proxies (conc/manager.h).
 *
 * The process that starts a manager makes the listening socket itself (a
 * Unix socket in a fresh mkdtemp directory, mode 0700, or TCP on
 * 127.0.0.1) and hands it to the server process, so the address is known
 * before the server runs and nothing has to be sent back. The server
 * watches its starter's pidfd and ends with it.
 *
 * Every proxy (and the manager handle itself, for ping and shutdown) is a
 * connection: dial, the two-way HMAC handshake, then BIND to its object.
 * A call is one frame out and one frame back on that connection, written
 * with a single send and read into a buffer the proxy keeps; the proxy's
 * lock serialises calls from several threads. Any I/O failure, EOF, a
 * reply that does not parse, or a reply that did not come in time marks
 * the proxy broken (CONC_EBROKEN from then on): after a timeout the stream
 * can no longer be trusted to pair replies with requests.
 *
 * Transport. On a Unix socket a proxy asks, right after the handshake, for
 * the shared-memory channel (internal.h): the server passes a sealed memfd
 * and from then on a call writes the request body into it, bumps a
 * sequence word and waits for the reply's (spin, futex, then poll the
 * socket, which stays open to report a dead server as EOF). A green thread
 * skips the futex and parks on the socket. TCP, opts.socket_only and
 * CONC_MANAGER_TRANSPORT=socket keep the frames on the socket.
 *
 * Interruptions (a kill of the calling green thread, a Timeout scope,
 * conc/green.h) cut every wait of a call short, on OS threads too. The
 * request is out by then and the server may be about to answer it, so
 * the proxy half-closes its connection (shutdown SHUT_WR): the server's
 * blocking get/put/acquire wakes up on the hang-up (it sleeps in ppoll
 * on the socket too),
 * stops waiting and answers at once. The proxy reads that answer (for at
 * most CUT_DRAIN_NS, not interruptible) and closes the connection. Before
 * the half-close it binds a second connection to the same object, which
 * takes the old one's place: an unnamed object lives as long as some
 * connection is bound to it, so binding after the close could find it
 * gone (if that second connection cannot be made, the next call dials
 * again). An answer that
 * says the call succeeded after all (a get that took an item as it was
 * cut) is returned as success and the interruption is delivered at the
 * next blocking call, so no item is lost; an acquire that succeeded as it
 * was cut still reports the interruption: the lock belonged to the closed
 * connection, and the server releases it with that connection.
 *
 * After fork the child has a copy of the parent's socket (and channel
 * mapping); using it from both would interleave frames. A proxy therefore remembers the pid that
 * connected it and, used in another process, dials again and binds to the
 * same object by id.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "conc/green.h"
#include "conc/io.h"
#include "conc/manager.h"
#include "core/fdwait.h"
#include "core/park.h"
#include "core/shwait.h"
#include "core/time.h"
#include "manager/client.h"
#include "manager/internal.h"
#include "manager/proxy.h"
#include "manager/sync.h"
#include "process/internal.h"

#define DEFAULT_TIMEOUT 30.0
/* How long a cut-short call waits for the server's answer (see above). */
#define CUT_DRAIN_NS 2000000000LL

struct conc_mdict { mproxy_t p; };
struct conc_mlist { mproxy_t p; };
struct conc_mlock { mproxy_t p; };
struct conc_mqueue { mproxy_t p; };


/* --------------------------------------------------------- connections */

/* getpid() without a syscall per call: refreshed in every forked child. */
static pid_t self_pid;
static void pid_refresh(void) { self_pid = getpid(); }
__attribute__((constructor)) static void pid_init(void)
{
    self_pid = getpid();
    pthread_atfork(NULL, NULL, pid_refresh);
}


static int dial(const char *addr, double timeout, int *fd)
{
    if (addr[0] == '/' || addr[0] == '@')
        return conc_unix_dial(addr, timeout, fd);
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || (size_t)(colon - addr) >= 64)
        return CONC_EINVAL;
    char host[64];
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port <= 0 || port > 65535)
        return CONC_EINVAL;
    return conc_tcp_dial(host, (int)port, timeout, fd);
}

static void proxy_close_fd(mproxy_t *p)
{
    if (p->fd >= 0)
        conc_close(p->fd);
    p->fd = -1;
    if (p->chan) /* after fork: only our mapping goes, the parent keeps its own */
        munmap(p->chan, CONC__MGR_CHAN_SIZE);
    p->chan = NULL;
}

static bool want_chan(const mproxy_t *p)
{
    if (p->socket_only || (p->addr[0] != '/' && p->addr[0] != '@'))
        return false; /* TCP: the peer may be another machine */
    const char *e = getenv("CONC_MANAGER_TRANSPORT");
    return !e || strcmp(e, "socket") != 0;
}

/* Ask the server for a shared-memory channel on the fresh connection fd.
 * 0: switched (p->chan set) or the server said no (stay on the socket);
 * CONC_EBROKEN: the connection failed; CONC_ESYS (errno set): no fd or
 * memory left here for the channel. */
static int chan_switch(mproxy_t *p, int fd, double timeout)
{
    static const uint8_t req[5] = {1, 0, 0, 0, CONC__MOP_SHM};
    if (conc_write_all(fd, req, sizeof req, NULL, timeout) != 0)
        return CONC_EBROKEN;
    double deadline = conc_monotonic() + timeout; /* CONC_FOREVER stays INFINITY */
    uint8_t msg[8];
    size_t have = 0;
    int mfd = -1;
    bool ctrunc = false;
    while (have < sizeof msg) {
        double left = deadline - conc_monotonic(); /* negative: already up */
        if (conc_wait_read(fd, left) != 0)
            goto broken;
        struct iovec iov = {msg + have, sizeof msg - have};
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(sizeof(int))];
        } cb;
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b,
                            .msg_controllen = sizeof cb.b};
        ssize_t r = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (r <= 0)
            goto broken;
        if (mh.msg_flags & MSG_CTRUNC)
            ctrunc = true; /* the memfd did not fit in our fd table */
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
                int n = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                for (int i = 0; i < n; i++) {
                    int got;
                    memcpy(&got, CMSG_DATA(cm) + i * sizeof(int), sizeof got);
                    if (mfd < 0)
                        mfd = got;
                    else
                        close(got);
                }
            }
        have += (size_t)r;
    }
    int32_t code = (int32_t)((uint32_t)msg[4] | (uint32_t)msg[5] << 8 | (uint32_t)msg[6] << 16 |
                             (uint32_t)msg[7] << 24);
    if (code == 0 && mfd < 0 && ctrunc) {
        errno = EMFILE; /* out of fds here: not the server's fault */
        return CONC_ESYS;
    }
    if (msg[0] != 4 || msg[1] || msg[2] || msg[3] || (code == 0) != (mfd >= 0))
        goto broken;
    if (code) /* e.g. not a Unix socket on the server's side: keep the socket */
        return 0;
    struct stat st;
    void *m = MAP_FAILED;
    /* The server's segment must be sealed against shrinking: else it could
     * truncate it under our mapping and make our next access a SIGBUS. */
    int seals = fcntl(mfd, F_GET_SEALS);
    if (fstat(mfd, &st) == 0 && (size_t)st.st_size == CONC__MGR_CHAN_SIZE && seals >= 0 &&
        (seals & F_SEAL_SHRINK))
        m = mmap(NULL, CONC__MGR_CHAN_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    int e = errno;
    close(mfd);
    if (m == MAP_FAILED && (e == ENOMEM || e == EMFILE || e == ENFILE)) {
        errno = e;
        return CONC_ESYS; /* no room here for the mapping */
    }
    if (m == MAP_FAILED)
        return CONC_EBROKEN; /* the server waits on the channel now */
    p->chan = m;
    p->seq = 0;
    return 0;
broken:
    if (mfd >= 0)
        close(mfd);
    return CONC_EBROKEN;
}

/* The receive timeout of p's (blocking) socket, set only when it changes:
 * the socket's SO_RCVTIMEO bounds an OS thread's recv. 0 or -1. */
static int set_rcvtimeo(mproxy_t *p, double t)
{
    if (t != CONC_FOREVER && t < 0.000001)
        t = 0.000001; /* 0 would mean "forever" to the kernel */
    if (t == p->rcvtimeo)
        return 0;
    struct timeval tv = {0, 0};
    if (t != CONC_FOREVER && t < 1e8) {
        tv.tv_sec = (time_t)t;
        tv.tv_usec = (suseconds_t)((t - (double)tv.tv_sec) * 1e6);
    }
    if (setsockopt(p->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0)
        return -1;
    p->rcvtimeo = t;
    return 0;
}

/* A call's wait (seconds; CONC_FOREVER or a huge one: none; 0 or
 * negative: time is up) as a deadline. */
static int64_t wait_deadline(double wait)
{
    if (wait == CONC_FOREVER || wait >= 1e9)
        return CONC__NO_DEADLINE;
    if (!(wait > 0))
        return conc__now_ns();
    return conc__now_ns() + (int64_t)(wait * 1e9);
}

/* The frame in p->in, or a broken proxy. The bytes already received of
 * it: p->have. A kill or a Timeout scope that cuts the wait short sets
 * *cut and returns its code (p->have keeps what came). */
static int recv_reply(mproxy_t *p, double wait, conc__rbuf_t *rep, conc__cut_t *cut)
{
    int64_t deadline = wait_deadline(wait);
    size_t have = p->have;
    for (;;) {
        const uint8_t *body;
        size_t blen, used;
        int f = conc__mgr_frame(p->in, have, CONC__MGR_MAX_FRAME, &body, &blen, &used);
        if (f == 1) {
            if (used != have || blen < 4)
                return CONC_EBROKEN; /* more than one reply, or no code */
            rep->p = body;
            rep->end = body + blen;
            rep->bad = false;
            return 0;
        }
        if (f < 0)
            return CONC_EBROKEN;
        size_t need = have < 4 ? 4096 : 4 + (size_t)(p->in[0] | p->in[1] << 8 | p->in[2] << 16 |
                                                   (uint32_t)p->in[3] << 24);
        if (need < 4096)
            need = 4096;
        if (need > p->incap) {
            uint8_t *q = realloc(p->in, need);
            if (!q)
                return CONC_ENOMEM;
            p->in = q;
            p->incap = need;
        }
        ssize_t r = conc__mgr_recv_spin(p->fd, p->in + have, p->incap - have, &p->spin);
        if (r < 0 && errno == EAGAIN) {
            conc__ctx_t *x = conc__ctx();
            if (have == 0 && !x->ops && (x->scope_dl == 0 || x->nointr) && set_rcvtimeo(p, wait) == 0) {
                /* An OS thread with no Timeout scope open sleeps in recv
                 * itself: one syscall, where a wait would take three
                 * (recv, poll, recv). The socket keeps the call's whole
                 * wait as its timeout (set again only when it changes);
                 * the rest of a long reply is read within what is left
                 * of it. */
                do
                    r = recv(p->fd, p->in + have, p->incap - have, 0);
                while (r < 0 && errno == EINTR && (deadline == CONC__NO_DEADLINE || conc__now_ns() < deadline));
            } else {
                /* green: park on the hub; an OS thread in a scope: poll
                 * bounded by it. Kills and scopes cut it short. */
                int w = conc__fd_wait(p->fd, CONC__FD_READ, deadline);
                if (w != 0) {
                    if (conc__is_cut(w)) {
                        *cut = conc__cut_save(w);
                        p->have = have;
                        return w;
                    }
                    return CONC_EBROKEN; /* timeout, error */
                }
                r = recv(p->fd, p->in + have, p->incap - have, MSG_DONTWAIT);
                if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                    continue;
            }
        }
        if (r <= 0)
            return CONC_EBROKEN; /* EOF, error, timeout */
        have += (size_t)r;
    }
}

/* The reply to request seq, now in the channel's data area, into p->in. */
static int chan_take_reply(mproxy_t *p, uint32_t seq, conc__rbuf_t *rep)
{
    conc__mgr_chan_t *ch = p->chan;
    size_t rl = __atomic_load_n(&ch->rep_len, __ATOMIC_RELAXED);
    if (__atomic_load_n(&ch->rep_seq, __ATOMIC_ACQUIRE) != seq || rl < 4 ||
        rl > CONC__MGR_MAX_FRAME)
        return CONC_EBROKEN;
    if (rl > p->incap) {
        size_t cap = p->incap ? p->incap : 4096;
        while (cap < rl)
            cap *= 2;
        uint8_t *q = realloc(p->in, cap);
        if (!q)
            return CONC_EBROKEN; /* the reply is lost: the call's outcome is unknown */
        p->in = q;
        p->incap = cap;
    }
    memcpy(p->in, conc__mgr_chan_data(ch), rl);
    rep->p = p->in;
    rep->end = p->in + rl;
    rep->bad = false;
    return 0;
}

/* One round trip on the shared-memory channel: the request frame in p->req
 * goes into the data area, the reply comes back into p->in. A kill or a
 * Timeout scope: *cut set, its code returned. */
static int chan_call(mproxy_t *p, double wait, conc__rbuf_t *rep, conc__cut_t *cut)
{
    conc__mgr_chan_t *ch = p->chan;
    conc__wbuf_t *w = &p->req;
    size_t n = w->len - 4;
    memcpy(conc__mgr_chan_data(ch), w->p + 4, n);
    __atomic_store_n(&ch->req_len, (uint32_t)n, __ATOMIC_RELAXED);
    uint32_t seq = ++p->seq;
    conc__mgr_chan_post(&ch->req_seq, seq, &ch->srv_wait, p->fd);
    int rc = conc__mgr_chan_wait(&ch->rep_seq, seq - 1, &ch->cli_wait, p->fd, &p->spin,
                                 wait_deadline(wait), NULL, conc__ctx()->ops != NULL);
    if (rc) {
        if (conc__is_cut(rc)) {
            *cut = conc__cut_save(rc);
            return rc;
        }
        return CONC_EBROKEN; /* EOF, timeout: no reply can be paired with this call now */
    }
    return chan_take_reply(p, seq, rep);
}

/* The wait of a call whose request is out was cut short (see the top of
 * the file): bind a second connection to the object (keeper_connect),
 * half-close, read the server's answer (not interruptible, for at most
 * CUT_DRAIN_NS), drop the connection; the keeper takes its place (without
 * one, the next call dials again).
 * 0 when the answer says the call took effect (an acquire excepted): the
 * caller goes on with *rep, the interruption rearmed; else the
 * interruption's code. */
static int proxy_connect(mproxy_t *p, double timeout, uint8_t kind, long maxsize, const char *name);

/* A second connection bound to p's object, made while p's connection still
 * holds it: the server frees an unnamed object when its last connection
 * closes, so the rebind after a cut must come before the old connection
 * goes. k->fd < 0 when it could not be made (the next call dials again). */
static void keeper_connect(const mproxy_t *p, mproxy_t *k)
{
    memset(k, 0, sizeof *k);
    k->fd = -1;
    conc_lock_init(&k->mu);
    k->timeout = p->timeout;
    k->socket_only = p->socket_only;
    k->id = p->id;
    k->kind = p->kind;
    memcpy(k->addr, p->addr, sizeof k->addr);
    k->key = p->key;
    k->keylen = p->keylen;
    double t = (double)CUT_DRAIN_NS / 1e9; /* a cut stays prompt: at most this long */
    if (p->id && proxy_connect(k, p->timeout < t ? p->timeout : t, 0, 0, NULL) != 0)
        k->fd = -1;
}

/* Put the keeper's connection in place of p's (closed already). */
static void keeper_install(mproxy_t *p, mproxy_t *k)
{
    if (k->fd >= 0) {
        p->fd = k->fd;
        p->chan = k->chan;
        p->seq = k->seq;
        p->pid = k->pid;
        p->rcvtimeo = k->rcvtimeo;
        p->spin = k->spin;
        p->broken = false;
        p->redial = false;
    }
    conc__wb_free(&k->req);
    free(k->in);
}

static int call_cut(mproxy_t *p, const conc__cut_t *cut, conc__rbuf_t *rep)
{
    conc__ctx_t *x = conc__ctx();
    x->nointr++;
    mproxy_t keeper;
    keeper_connect(p, &keeper);
    shutdown(p->fd, SHUT_WR);
    int rc;
    uint8_t op = p->req.len > 4 ? p->req.p[4] : 0;
    if (op == CONC__MOP_U_CALL) {
        rc = CONC_EBROKEN; /* a registered method cannot be stopped: do not wait for it */
    } else if (p->chan) {
        rc = conc__mgr_chan_wait(&p->chan->rep_seq, p->seq - 1, &p->chan->cli_wait, p->fd, &p->spin,
                                 conc__now_ns() + CUT_DRAIN_NS, NULL, x->ops != NULL);
        if (rc == 0)
            rc = chan_take_reply(p, p->seq, rep);
    } else {
        conc__cut_t again;
        rc = recv_reply(p, (double)CUT_DRAIN_NS / 1e9, rep, &again);
    }
    x->nointr--;
    proxy_close_fd(p);
    p->redial = true;
    keeper_install(p, &keeper);
    if (rc == 0 && rep->end - rep->p >= 4 && rep->p[0] == 0 && rep->p[1] == 0 && rep->p[2] == 0 &&
        rep->p[3] == 0 && op != CONC__MOP_K_ACQUIRE && !conc__mgr_sync_op_owned(op)) {
        conc__cut_rearm(cut);
        return 0;
    }
    return cut->code;
}

/* Dial, authenticate, bind (by id when p->id is set). Caller holds p->mu. */
static int proxy_connect(mproxy_t *p, double timeout, uint8_t kind, long maxsize, const char *name)
{
    int fd = -1;
    int rc = dial(p->addr, timeout, &fd);
    if (rc == CONC_ESYS && (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM))
        return CONC_ESYS; /* out of fds (or memory) here: errno says so; the server is fine */
    if (rc)
        return rc == CONC_EINVAL ? rc : CONC_EBROKEN;
    rc = conc__mgr_hs_client(fd, p->key, p->keylen, timeout);
    if (rc) {
        conc_close(fd);
        return rc == CONC_EPERM ? rc : rc == CONC_ENOMEM ? rc : CONC_EBROKEN;
    }
    /* Blocking mode: an OS thread then sleeps in recv (under SO_RCVTIMEO);
     * conc_read and conc_write_all use MSG_DONTWAIT on sockets, so green
     * threads are not affected. */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    p->rcvtimeo = 0;
    if (want_chan(p) && (rc = chan_switch(p, fd, timeout)) != 0) {
        conc_close(fd);
        return rc;
    }
    p->fd = fd;
    p->pid = getpid();
    p->broken = false;
    if (!kind && !p->id && !p->bind_item)
        return 0; /* the manager's own connection */
    conc__wbuf_t *w = &p->req;
    conc__wb_begin_frame(w);
    if (p->id) {
        conc__wb_u8(w, CONC__MOP_BIND_ID);
        conc__wb_u64(w, p->id);
    } else if (p->bind_item) { /* a nested proxy: the whole request is given */
        conc__wb_u8(w, CONC__MOP_BIND_ITEM);
        conc__wb_put(w, p->bind_init, p->bind_init_len);
    } else {
        conc__wb_u8(w, CONC__MOP_BIND_NEW);
        conc__wb_u8(w, kind);
        conc__wb_u64(w, (uint64_t)(int64_t)maxsize);
        conc__wb_bytes(w, name ? name : "", name ? strlen(name) : 0);
        if (p->bind_init)
            conc__wb_bytes(w, p->bind_init, p->bind_init_len);
    }
    conc__wb_end_frame(w);
    conc__rbuf_t rep;
    conc__cut_t cut;
    p->have = 0;
    if (w->oom)
        rc = CONC_ENOMEM;
    else if (p->chan)
        rc = chan_call(p, timeout, &rep, &cut);
    else if (conc_write_all(fd, w->p, w->len, NULL, timeout) != 0)
        rc = CONC_EBROKEN;
    else
        rc = recv_reply(p, timeout, &rep, &cut);
    if (!rc) {
        rc = (int32_t)conc__rb_u32(&rep);
        if (!rc) {
            uint64_t id = conc__rb_u64(&rep);
            int k = conc__rb_u8(&rep);
            if (!conc__rb_done(&rep) || (p->id && id != p->id) || (kind && k != kind))
                rc = CONC_EBROKEN;
            p->id = id;
            p->kind = k;
        }
    }
    if (rc)
        proxy_close_fd(p);
    p->bind_init = NULL; /* only the first bind uses them; later ones go by id */
    p->bind_init_len = 0;
    p->bind_item = false;
    return rc;
}

static int proxy_init(mproxy_t *p, const char *addr, const void *key, size_t keylen, double timeout)
{
    memset(p, 0, sizeof *p);
    p->fd = -1;
    conc_lock_init(&p->mu);
    p->timeout = timeout;
    size_t n = strlen(addr);
    if (n >= ADDR_MAX)
        return CONC_EINVAL;
    memcpy(p->addr, addr, n + 1);
    p->key = malloc(keylen ? keylen : 1);
    if (!p->key)
        return CONC_ENOMEM;
    if (keylen)
        memcpy(p->key, key, keylen);
    p->keylen = keylen;
    return 0;
}

static void proxy_fini(mproxy_t *p)
{
    /* In a forked child the fd is the parent's connection too: closing our
     * copy is harmless (the socket lives on in the parent). */
    proxy_close_fd(p);
    conc__wb_free(&p->req);
    free(p->in);
    if (p->key)
        memset(p->key, 0, p->keylen);
    free(p->key);
}

/* ----------------------------------------------------------------- calls */

/* Why the last call_begin of this thread failed. */
static __thread int begin_rc;

/* Begin a request: lock the proxy, start the frame. NULL when the wait
 * for the lock (another call on the same proxy) was cut short by a kill
 * or a Timeout scope: the caller returns call_failed(). */
static conc__wbuf_t *call_begin(mproxy_t *p, uint8_t op)
{
    int rc = conc_lock_acquire(&p->mu, true, CONC_FOREVER);
    if (rc) {
        begin_rc = rc;
        return NULL;
    }
    conc__wb_begin_frame(&p->req);
    conc__wb_u8(&p->req, op);
    return &p->req;
}

static int call_failed(void) { return begin_rc; }

/* Send, wait up to wait (CONC_FOREVER: until the reply or EOF) for the
 * reply; returns its code (the results follow in *rep). The lock stays
 * held until call_end. */
static int call_run(mproxy_t *p, double wait, conc__rbuf_t *rep)
{
    bool forked = p->fd >= 0 && p->pid != self_pid && !p->broken; /* inherited through fork */
    if (forked || (p->redial && !p->broken)) {
        proxy_close_fd(p);
        conc__wbuf_t saved = p->req; /* the pending request survives the rebind */
        memset(&p->req, 0, sizeof p->req);
        /* After a cut-short call: never cut short itself (the kill or the
         * scope that cut that call may still be pending). */
        conc__ctx_t *x = conc__ctx();
        x->nointr += !forked;
        int rc = proxy_connect(p, p->timeout, 0, 0, NULL);
        /* A burst of cut-short calls dials in a burst: a busy server's
         * accept backlog may be full for a moment. Try again briefly. */
        for (int k = 0; rc && rc != CONC_EPERM && !forked && k < 20; k++) {
            conc_sleep(0.01 * (k + 1));
            proxy_close_fd(p);
            rc = proxy_connect(p, p->timeout, 0, 0, NULL);
        }
        x->nointr -= !forked;
        p->redial = false;
        conc__wb_free(&p->req);
        p->req = saved;
        if (rc) {
            p->broken = true;
            return rc == CONC_EPERM ? rc : CONC_EBROKEN;
        }
    }
    if (p->broken || p->fd < 0)
        return CONC_EBROKEN;
    conc__wbuf_t *w = &p->req;
    if (w->oom)
        return CONC_ENOMEM;
    if (w->len - 4 > CONC__MGR_MAX_FRAME)
        return CONC_ERANGE;
    conc__wb_end_frame(w);
    int rc;
    conc__cut_t cut = {0, -1};
    p->have = 0;
    if (p->chan) {
        rc = chan_call(p, wait, rep, &cut);
    } else if (!(rc = conc_write_all(p->fd, w->p, w->len, NULL, p->timeout))) {
        rc = recv_reply(p, wait, rep, &cut);
    } else if (conc__is_cut(rc)) {
        /* cut short while the request went out: at most part of it did;
         * the server drops a connection that ends inside a frame */
        proxy_close_fd(p);
        p->redial = true;
        return rc;
    }
    if (rc && cut.code && (rc = call_cut(p, &cut, rep)) != 0)
        return rc; /* the connection is gone; the next call dials again */
    if (rc) {
        if (rc != CONC_ENOMEM) {
            p->broken = true;
            proxy_close_fd(p);
        }
        return rc == CONC_ENOMEM ? rc : CONC_EBROKEN;
    }
    rc = (int32_t)conc__rb_u32(rep);
    if (rc > 0 || rc < CONC__MGR_MIN_CODE) { /* not a code: the stream is corrupt */
        p->broken = true;
        proxy_close_fd(p);
        return CONC_EBROKEN;
    }
    return rc;
}

static void call_end(mproxy_t *p) { conc_lock_release(&p->mu); }

/* The common shapes. */
static int finish_void(mproxy_t *p, conc__rbuf_t *rep, int rc)
{
    if (!rc && !conc__rb_done(rep)) {
        p->broken = true;
        proxy_close_fd(p);
        rc = CONC_EBROKEN;
    }
    call_end(p);
    return rc;
}

static int call_void(mproxy_t *p, double wait)
{
    conc__rbuf_t rep;
    return finish_void(p, &rep, call_run(p, wait, &rep));
}

static int finish_bytes(mproxy_t *p, conc__rbuf_t *rep, int rc, void **val, size_t *len)
{
    if (!rc) {
        size_t n;
        const uint8_t *b = conc__rb_bytes(rep, &n);
        if (!conc__rb_done(rep)) {
            p->broken = true;
            proxy_close_fd(p);
            rc = CONC_EBROKEN;
        } else {
            void *out = malloc(n ? n : 1);
            if (!out) {
                rc = CONC_ENOMEM;
            } else {
                memcpy(out, b, n);
                *val = out;
                *len = n;
            }
        }
    }
    call_end(p);
    return rc;
}

static int call_bytes(mproxy_t *p, double wait, void **val, size_t *len)
{
    conc__rbuf_t rep;
    return finish_bytes(p, &rep, call_run(p, wait, &rep), val, len);
}

static int call_u64(mproxy_t *p, uint64_t *out)
{
    conc__rbuf_t rep;
    int rc = call_run(p, p->timeout, &rep);
    if (!rc) {
        uint64_t v = conc__rb_u64(&rep);
        if (conc__rb_done(&rep))
            *out = v;
        else
            rc = CONC_EBROKEN, p->broken = true, proxy_close_fd(p);
    }
    call_end(p);
    return rc;
}

static int call_bool(mproxy_t *p, bool *out)
{
    conc__rbuf_t rep;
    int rc = call_run(p, p->timeout, &rep);
    if (!rc) {
        uint8_t v = conc__rb_u8(&rep);
        if (conc__rb_done(&rep) && v <= 1)
            *out = v;
        else
            rc = CONC_EBROKEN, p->broken = true, proxy_close_fd(p);
    }
    call_end(p);
    return rc;
}

/* How long to wait for the reply of a call that may block for timeout. */
static double blocking_wait(mproxy_t *p, bool block, double timeout)
{
    if (!block)
        return p->timeout;
    if (timeout == CONC_FOREVER || timeout >= 1e9)
        return CONC_FOREVER;
    return (timeout > 0 ? timeout : 0) + p->timeout; /* negative: the server does not wait */
}

/* The calls whose Python original raises ValueError for a negative
 * timeout (threading.Lock.acquire, queue.Queue.get): NaN or negative. */
static bool bad_timeout(double t) { return !(t >= 0); }

/* ------------------------------------------- for the other proxy files */

/* src/manager/proxy.h: the call machinery for proxies defined in other
 * files (manager_sync.c). */
conc__wbuf_t *conc__mp_begin(void *p, uint8_t op) { return call_begin(p, op); }
int conc__mp_failed(void) { return call_failed(); }
int conc__mp_run(void *p, double wait, conc__rbuf_t *rep) { return call_run(p, wait, rep); }
void conc__mp_end(void *p) { call_end(p); }
int conc__mp_void(void *p, double wait) { return call_void(p, wait); }
int conc__mp_u64(void *p, uint64_t *out) { return call_u64(p, out); }
int conc__mp_bool(void *p, bool *out) { return call_bool(p, out); }
double conc__mp_wait(void *p, bool block, double timeout) { return blocking_wait(p, block, timeout); }
double conc__mp_timeout(const void *p) { return ((const mproxy_t *)p)->timeout; }
void conc__mps_broken(void *p)
{
    mproxy_t *x = p;
    x->broken = true;
    proxy_close_fd(x);
}

static int make_proxy(conc_manager_t *m, uint8_t kind, long maxsize, const char *name,
                      mproxy_t **out);
static int proxy_free(mproxy_t *p);

int conc__mp_make_sync(conc_manager_t *m, uint8_t kind, int64_t param, double timeout,
                       const char *name, void **out)
{
    mproxy_t *p;
    int rc = make_proxy(m, 0, 0, name, &p); /* connected, bound to nothing yet */
    if (rc)
        return rc;
    conc__wbuf_t *w = call_begin(p, CONC__MOP_BIND_SYNC);
    if (!w) {
        proxy_free(p);
        return call_failed();
    }
    conc__wb_u8(w, kind);
    conc__wb_u64(w, (uint64_t)param);
    conc__wb_f64(w, timeout);
    conc__wb_bytes(w, name ? name : "", name ? strlen(name) : 0);
    conc__rbuf_t rep;
    rc = call_run(p, p->timeout, &rep);
    if (!rc) {
        uint64_t id = conc__rb_u64(&rep);
        uint8_t k = conc__rb_u8(&rep);
        if (!conc__rb_done(&rep) || k != kind || !id)
            rc = CONC_EBROKEN;
        p->id = id;
        p->kind = k;
    }
    call_end(p);
    if (rc) {
        proxy_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

int conc__mps_free(void *p) { return proxy_free(p); }

/* ------------------------------------------------------- server process */

/* The server process: arg = u32 keylen, key, u32 pathlen, path; fds[0] =
 * the listening socket, fds[1] (if any) a pidfd of the process that
 * started it (readable when that process ends: the server then ends too). */
static int conc__manager_server(const void *arg, size_t len)
{
    conc__rbuf_t r = {arg, (const uint8_t *)arg + len, false};
    size_t keylen, pathlen;
    const uint8_t *key = conc__rb_bytes(&r, &keylen);
    const uint8_t *path = conc__rb_bytes(&r, &pathlen);
    size_t inlen = 0, ialen = 0;
    const uint8_t *init = NULL, *iargs = NULL;
    if (!r.bad && r.p != r.end) { /* Manager(initializer, initargs) */
        init = conc__rb_bytes(&r, &inlen);
        iargs = conc__rb_bytes(&r, &ialen);
    }
    const int *fds;
    int nfds = conc__child_fds(&fds);
    if (!conc__rb_done(&r) || nfds < 1 || pathlen >= ADDR_MAX || inlen >= 256)
        return 2;
    if (init) { /* once, before serving: connections wait in the backlog */
        char fn[256];
        memcpy(fn, init, inlen);
        fn[inlen] = 0;
        const conc_registration_t *reg = conc_registry_find(fn);
        if (!reg || reg->sig != CONC_SIG_PROCESS || !reg->fn)
            return 2;
        if (((conc_process_fn)reg->fn)(ialen ? iargs : NULL, ialen) != 0)
            return 3; /* the listening socket closes with us: start sees CONC_EBROKEN */
    }
    char p[ADDR_MAX];
    memcpy(p, path, pathlen);
    p[pathlen] = 0;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, SIG_IGN); /* Ctrl-C is for the program, as in Python's manager */
    int rc = conc__mgr_serve(fds[0], nfds >= 2 ? fds[1] : -1, key, keylen, pathlen ? p : NULL);
    return rc ? 1 : 0;
}
CONC_REGISTER_AS(conc__manager_server, "conc.manager.server", CONC_SIG_PROCESS);

/* A fresh private directory with a socket path in it. */
static int make_socket_path(char *path, size_t cap)
{
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp || strlen(tmp) > 60)
        tmp = "/tmp";
    char dir[ADDR_MAX];
    snprintf(dir, sizeof dir, "%s/conc-mgr-XXXXXX", tmp);
    if (!mkdtemp(dir)) /* mode 0700 */
        return CONC_ESYS;
    if ((size_t)snprintf(path, cap, "%s/listener", dir) >= cap) {
        rmdir(dir);
        return CONC_EINVAL;
    }
    return 0;
}

static void remove_socket_path(const char *path)
{
    if (!path[0])
        return;
    unlink(path);
    char dir[ADDR_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = 0;
        rmdir(dir);
    }
}

/* ------------------------------------------------------------ manager */

int conc_manager_start(conc_manager_t **out, const conc_manager_opts_t *opts)
{
    conc_manager_opts_t o = {0};
    if (opts)
        o = *opts;
    if (!out || (o.authkey_len && !o.authkey) || (o.authkey && !o.authkey_len) || /* empty key */
        o.authkey_len > 1024 || o.port < 0 ||
        o.port > 65535 || isnan(o.timeout) || o.timeout < 0 || (int)o.method < CONC_START_DEFAULT ||
        o.method > CONC_FORKSERVER)
        return CONC_EINVAL;
    if (!o.authkey) /* Python: current_process().authkey */
        o.authkey = conc_process_authkey(conc_current_process(), &o.authkey_len);
    const conc_registration_t *init = NULL;
    if (o.initializer) {
        init = conc_registry_find_fn((void (*)(void))o.initializer);
        if (!init || strlen(init->name) >= 256 || (o.initargs_len && !o.initargs) ||
            o.initargs_len > (1u << 20))
            return CONC_EINVAL; /* the server may be a new program: it finds it by name */
    }
    conc_manager_t *m = calloc(1, sizeof *m);
    if (!m)
        return CONC_ENOMEM;
    char addr[ADDR_MAX];
    int lfd = -1, rc;
    if (o.tcp) {
        rc = conc_tcp_listen("127.0.0.1", o.port, 0, &lfd);
        if (!rc)
            snprintf(addr, sizeof addr, "127.0.0.1:%d", conc_socket_port(lfd));
    } else {
        rc = make_socket_path(m->path, sizeof m->path);
        if (!rc) {
            rc = conc_unix_listen(m->path, 0, &lfd);
            if (rc)
                remove_socket_path(m->path);
        }
        snprintf(addr, sizeof addr, "%s", m->path);
    }
    if (rc) {
        free(m);
        return rc;
    }
    rc = proxy_init(&m->ctl, addr, o.authkey, o.authkey_len, o.timeout > 0 ? o.timeout : DEFAULT_TIMEOUT);
    m->ctl.socket_only = o.socket_only;
    conc__wbuf_t arg = {0};
    conc__wb_bytes(&arg, o.authkey, o.authkey_len);
    conc__wb_bytes(&arg, m->path, strlen(m->path));
    if (init) {
        conc__wb_bytes(&arg, init->name, strlen(init->name));
        conc__wb_bytes(&arg, o.initargs, o.initargs_len);
    }
    if (!rc && arg.oom)
        rc = CONC_ENOMEM;
    if (!rc) {
        conc__launch_t l = {.entry = conc_registry_find("conc.manager.server"),
                            .fork_fn = conc__manager_server,
                            .arg = arg.p,
                            .len = arg.len,
                            .method = o.method,
                            .name = "SyncManager",
                            .daemon = true,
                            .fds = &lfd,
                            .nfds = 1};
        /* Our own pidfd, passed explicitly: the server ends with us. */
        int fds[2] = {lfd, conc__pidfd_open(getpid())};
        if (fds[1] >= 0)
            l.nfds = 2;
        l.fds = fds;
        rc = conc__child_start(&m->child, &l);
        if (fds[1] >= 0)
            close(fds[1]);
    }
    conc__wb_free(&arg);
    close(lfd);
    if (rc) {
        remove_socket_path(m->path);
        proxy_fini(&m->ctl);
        free(m);
        return rc;
    }
    m->owner = getpid();
    conc_lock_acquire(&m->ctl.mu, true, CONC_FOREVER);
    rc = proxy_connect(&m->ctl, m->ctl.timeout, 0, 0, NULL);
    conc_lock_release(&m->ctl.mu);
    if (rc) {
        conc__child_signal(&m->child, SIGKILL);
        conc__child_wait(&m->child, CONC__NO_DEADLINE);
        conc__child_release(&m->child);
        remove_socket_path(m->path);
        proxy_fini(&m->ctl);
        free(m);
        return rc == CONC_ENOMEM || rc == CONC_ESYS ? rc : CONC_EBROKEN;
    }
    *out = m;
    return 0;
}

int conc_manager_connect(conc_manager_t **out, const char *address, const void *authkey,
                         size_t authkey_len, double timeout)
{
    if (!authkey && !authkey_len) /* authkey=None: current_process().authkey */
        authkey = conc_process_authkey(conc_current_process(), &authkey_len);
    if (!out || !address || !*address || !authkey || !authkey_len || bad_timeout(timeout))
        return CONC_EINVAL; /* an empty key would authenticate anybody */
    conc_manager_t *m = calloc(1, sizeof *m);
    if (!m)
        return CONC_ENOMEM;
    int rc = proxy_init(&m->ctl, address, authkey, authkey_len, DEFAULT_TIMEOUT);
    if (!rc) {
        conc_lock_acquire(&m->ctl.mu, true, CONC_FOREVER);
        rc = proxy_connect(&m->ctl, timeout, 0, 0, NULL);
        conc_lock_release(&m->ctl.mu);
    }
    if (rc) {
        proxy_fini(&m->ctl);
        free(m);
        return rc;
    }
    *out = m;
    return 0;
}

const char *conc_manager_address(const conc_manager_t *m) { return m ? m->ctl.addr : NULL; }

const void *conc_manager_authkey(const conc_manager_t *m, size_t *len)
{
    if (!m)
        return NULL;
    if (len)
        *len = m->ctl.keylen;
    return m->ctl.key;
}

int conc_manager_pid(const conc_manager_t *m)
{
    if (!m)
        return CONC_EINVAL;
    return m->owner == getpid() ? (int)m->child.pid : 0;
}

int conc_manager_shutdown(conc_manager_t *m)
{
    if (!m)
        return CONC_EINVAL;
    if (!call_begin(&m->ctl, CONC__MOP_SHUTDOWN))
        return call_failed();
    int rc = call_void(&m->ctl, m->ctl.timeout);
    conc_lock_acquire(&m->ctl.mu, true, CONC_FOREVER);
    m->ctl.broken = true; /* the server is going: later calls fail at once */
    proxy_close_fd(&m->ctl);
    conc_lock_release(&m->ctl.mu);
    if (m->owner == getpid() && !m->shut) {
        m->shut = true;
        if (conc__child_wait(&m->child, conc__now_ns() + 5000000000LL) != 0) {
            conc__child_signal(&m->child, SIGKILL);
            conc__child_wait(&m->child, CONC__NO_DEADLINE);
        }
        conc__child_release(&m->child);
        remove_socket_path(m->path);
    }
    return rc;
}

int conc_manager_free(conc_manager_t *m)
{
    if (!m)
        return CONC_EINVAL;
    if (m->owner == getpid() && !m->shut)
        conc_manager_shutdown(m);
    proxy_fini(&m->ctl);
    free(m);
    return 0;
}

static int make_proxy_init(conc_manager_t *m, uint8_t kind, long maxsize, const char *name,
                           mproxy_t **out, const uint8_t *init, size_t ilen);

static int make_proxy(conc_manager_t *m, uint8_t kind, long maxsize, const char *name,
                      mproxy_t **out)
{
    return make_proxy_init(m, kind, maxsize, name, out, NULL, 0);
}

/* A new proxy on src's server (its address, key, timeout, transport),
 * bound to (kind, maxsize, name) plus init bytes, or with item to the
 * BIND_ITEM request init. */
static int proxy_new_on(const mproxy_t *src, uint8_t kind, long maxsize, const char *name,
                        const uint8_t *init, size_t ilen, bool item, mproxy_t **out)
{
    mproxy_t *p = malloc(sizeof *p);
    if (!p)
        return CONC_ENOMEM;
    int rc = proxy_init(p, src->addr, src->key, src->keylen, src->timeout);
    p->socket_only = src->socket_only;
    p->bind_init = init;
    p->bind_init_len = ilen;
    p->bind_item = item;
    if (!rc) {
        conc_lock_acquire(&p->mu, true, CONC_FOREVER);
        rc = proxy_connect(p, p->timeout, kind, maxsize, name);
        conc_lock_release(&p->mu);
    }
    if (rc) {
        proxy_fini(p);
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

static int make_proxy_init(conc_manager_t *m, uint8_t kind, long maxsize, const char *name,
                           mproxy_t **out, const uint8_t *init, size_t ilen)
{
    if (!m || !out || (name && strlen(name) > 4096))
        return CONC_EINVAL;
    return proxy_new_on(&m->ctl, kind, maxsize, name, init, ilen, false, out);
}

int conc_manager_dict(conc_manager_t *m, const char *name, conc_mdict_t **out)
{
    return make_proxy(m, CONC__MK_DICT, 0, name, (mproxy_t **)out);
}

int conc_manager_list(conc_manager_t *m, const char *name, conc_mlist_t **out)
{
    return make_proxy(m, CONC__MK_LIST, 0, name, (mproxy_t **)out);
}

int conc_manager_lock(conc_manager_t *m, const char *name, conc_mlock_t **out)
{
    return make_proxy(m, CONC__MK_LOCK, 0, name, (mproxy_t **)out);
}

int conc_manager_queue(conc_manager_t *m, const char *name, long maxsize, conc_mqueue_t **out)
{
    return make_proxy(m, CONC__MK_QUEUE, maxsize, name, (mproxy_t **)out);
}

static int proxy_free(mproxy_t *p)
{
    if (!p)
        return CONC_EINVAL;
    proxy_fini(p);
    free(p);
    return 0;
}

/* ---------------------------------------------------------------- dict */

#define KEYOK(k, kn) ((k) || !(kn))

/* An op without arguments whose answer is nothing (clear, reverse,
 * release) or a count (len, qsize). */
static int call_op_void(mproxy_t *p, uint8_t op)
{
    if (!call_begin(p, op))
        return call_failed();
    return call_void(p, p->timeout);
}

static int call_op_size(mproxy_t *p, uint8_t op, size_t *n)
{
    uint64_t v = 0;
    if (!call_begin(p, op))
        return call_failed();
    int rc = call_u64(p, &v);
    if (!rc)
        *n = (size_t)v;
    return rc;
}

int conc_mdict_set(conc_mdict_t *d, const void *key, size_t klen, const void *val, size_t vlen)
{
    if (!d || !KEYOK(key, klen) || !KEYOK(val, vlen))
        return CONC_EINVAL;
    if (klen > CONC__MGR_MAX_FRAME || vlen > CONC__MGR_MAX_FRAME)
        return CONC_ERANGE;
    conc__wbuf_t *w = call_begin(&d->p, CONC__MOP_D_SET);
    if (!w)
        return call_failed();
    conc__wb_bytes(w, key, klen);
    conc__wb_bytes(w, val, vlen);
    return call_void(&d->p, d->p.timeout);
}

static int dict_key_bytes(conc_mdict_t *d, int op, const void *key, size_t klen, void **val,
                          size_t *vlen)
{
    if (!d || !KEYOK(key, klen) || (op != CONC__MOP_D_DEL && (!val || !vlen)))
        return CONC_EINVAL;
    if (klen > CONC__MGR_MAX_FRAME)
        return CONC_ERANGE;
    conc__wbuf_t *w = call_begin(&d->p, (uint8_t)op);
    if (!w)
        return call_failed();
    conc__wb_bytes(w, key, klen);
    if (op == CONC__MOP_D_DEL)
        return call_void(&d->p, d->p.timeout);
    return call_bytes(&d->p, d->p.timeout, val, vlen);
}

int conc_mdict_get(conc_mdict_t *d, const void *key, size_t klen, void **val, size_t *vlen)
{
    return dict_key_bytes(d, CONC__MOP_D_GET, key, klen, val, vlen);
}

int conc_mdict_del(conc_mdict_t *d, const void *key, size_t klen)
{
    return dict_key_bytes(d, CONC__MOP_D_DEL, key, klen, NULL, NULL);
}

int conc_mdict_pop(conc_mdict_t *d, const void *key, size_t klen, void **val, size_t *vlen)
{
    return dict_key_bytes(d, CONC__MOP_D_POP, key, klen, val, vlen);
}

int conc_mdict_contains(conc_mdict_t *d, const void *key, size_t klen, bool *out)
{
    if (!d || !KEYOK(key, klen) || !out)
        return CONC_EINVAL;
    if (klen > CONC__MGR_MAX_FRAME)
        return CONC_ERANGE;
    conc__wbuf_t *w = call_begin(&d->p, CONC__MOP_D_HAS);
    if (!w)
        return call_failed();
    conc__wb_bytes(w, key, klen);
    return call_bool(&d->p, out);
}

int conc_mdict_len(conc_mdict_t *d, size_t *n)
{
    if (!d || !n)
        return CONC_EINVAL;
    return call_op_size(&d->p, CONC__MOP_D_LEN, n);
}

int conc_mdict_keys(conc_mdict_t *d, conc_mbytes_t **keys, size_t *n)
{
    if (!d || !keys || !n)
        return CONC_EINVAL;
    mproxy_t *p = &d->p;
    if (!call_begin(p, CONC__MOP_D_KEYS))
        return call_failed();
    conc__rbuf_t rep;
    int rc = call_run(p, p->timeout, &rep);
    if (!rc) {
        uint64_t count = conc__rb_u64(&rep);
        /* First pass: check the shape and size the block. */
        conc__rbuf_t scan = rep;
        size_t bytes = 0;
        for (uint64_t i = 0; i < count && !scan.bad; i++) {
            size_t kn;
            conc__rb_bytes(&scan, &kn);
            bytes += kn;
        }
        if (!conc__rb_done(&scan) || count > (uint64_t)(rep.end - rep.p) / 4) {
            rc = CONC_EBROKEN;
            p->broken = true;
            proxy_close_fd(p);
        } else {
            conc_mbytes_t *arr = malloc(count * sizeof *arr + bytes + 1);
            if (!arr) {
                rc = CONC_ENOMEM;
            } else {
                uint8_t *data = (uint8_t *)(arr + count);
                for (uint64_t i = 0; i < count; i++) {
                    size_t kn;
                    const uint8_t *k = conc__rb_bytes(&rep, &kn);
                    memcpy(data, k, kn);
                    arr[i].data = data;
                    arr[i].len = kn;
                    data += kn;
                }
                *keys = arr;
                *n = (size_t)count;
            }
        }
    }
    call_end(p);
    return rc;
}

int conc_mdict_clear(conc_mdict_t *d)
{
    if (!d)
        return CONC_EINVAL;
    return call_op_void(&d->p, CONC__MOP_D_CLEAR);
}

int conc_mdict_free(conc_mdict_t *d) { return proxy_free((mproxy_t *)d); }

/* ---------------------------------------------------------------- list */

int conc_mlist_append(conc_mlist_t *l, const void *val, size_t len)
{
    if (!l || !KEYOK(val, len))
        return CONC_EINVAL;
    if (len > CONC__MGR_MAX_FRAME)
        return CONC_ERANGE;
    conc__wbuf_t *w = call_begin(&l->p, CONC__MOP_L_APPEND);
    if (!w)
        return call_failed();
    conc__wb_bytes(w, val, len);
    return call_void(&l->p, l->p.timeout);
}

int conc_mlist_extend(conc_mlist_t *l, const conc_mbytes_t *items, size_t n)
{
    if (!l || (n && !items))
        return CONC_EINVAL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!KEYOK(items[i].data, items[i].len))
            return CONC_EINVAL;
        if (items[i].len > CONC__MGR_MAX_FRAME || (total += items[i].len + 4) > CONC__MGR_MAX_FRAME)
            return CONC_ERANGE;
    }
    conc__wbuf_t *w = call_begin(&l->p, CONC__MOP_L_EXTEND);
    if (!w)
        return call_failed();
    conc__wb_u32(w, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        conc__wb_bytes(w, items[i].data, items[i].len);
    return call_void(&l->p, l->p.timeout);
}

static int list_index_bytes(conc_mlist_t *l, int op, long index, void **val, size_t *len)
{
    if (!l || !val || !len)
        return CONC_EINVAL;
    conc__wbuf_t *w = call_begin(&l->p, (uint8_t)op);
    if (!w)
        return call_failed();
    conc__wb_u64(w, (uint64_t)(int64_t)index);
    return call_bytes(&l->p, l->p.timeout, val, len);
}

int conc_mlist_get(conc_mlist_t *l, long index, void **val, size_t *len)
{
    return list_index_bytes(l, CONC__MOP_L_GET, index, val, len);
}

int conc_mlist_pop(conc_mlist_t *l, long index, void **val, size_t *len)
{
    return list_index_bytes(l, CONC__MOP_L_POP, index, val, len);
}

/* set / insert: an index and a value, nothing back. */
static int list_index_value(conc_mlist_t *l, uint8_t op, long index, const void *val, size_t len)
{
    if (!l || !KEYOK(val, len))
        return CONC_EINVAL;
    if (len > CONC__MGR_MAX_FRAME)
        return CONC_ERANGE;
    conc__wbuf_t *w = call_begin(&l->p, op);
    if (!w)
        return call_failed();
    conc__wb_u64(w, (uint64_t)(int64_t)index);
    conc__wb_bytes(w, val, len);
    return call_void(&l->p, l->p.timeout);
}

int conc_mlist_set(conc_mlist_t *l, long index, const void *val, size_t len)
{
    return list_index_value(l, CONC__MOP_L_SET, index, val, len);
}

int conc_mlist_len(conc_mlist_t *l, size_t *n)
{
    if (!l || !n)
        return CONC_EINVAL;
    return call_op_size(&l->p, CONC__MOP_L_LEN, n);
}

int conc_mlist_clear(conc_mlist_t *l)
{
    if (!l)
        return CONC_EINVAL;
    return call_op_void(&l->p, CONC__MOP_L_CLEAR);
}

int conc_mlist_insert(conc_mlist_t *l, long index, const void *val, size_t len)
{
    return list_index_value(l, CONC__MOP_L_INSERT, index, val, len);
}

/* index / count / remove: one value, maybe a u64 back. */
static int list_find(conc_mlist_t *l, int op, const void *val, size_t len, size_t *out)
{
    if (!l || !KEYOK(val, len) || (op != CONC__MOP_L_REMOVE && !out))
        return CONC_EINVAL;
    if (len > CONC__MGR_MAX_FRAME)
        return CONC_ERANGE;
    conc__wbuf_t *w = call_begin(&l->p, op);
    if (!w)
        return call_failed();
    conc__wb_bytes(w, val, len);
    if (op == CONC__MOP_L_REMOVE)
        return call_void(&l->p, l->p.timeout);
    uint64_t v = 0;
    int rc = call_u64(&l->p, &v);
    if (!rc)
        *out = (size_t)v;
    return rc;
}

int conc_mlist_index(conc_mlist_t *l, const void *val, size_t len, size_t *index)
{
    return list_find(l, CONC__MOP_L_INDEX, val, len, index);
}

int conc_mlist_count(conc_mlist_t *l, const void *val, size_t len, size_t *count)
{
    return list_find(l, CONC__MOP_L_COUNT, val, len, count);
}

int conc_mlist_remove(conc_mlist_t *l, const void *val, size_t len)
{
    return list_find(l, CONC__MOP_L_REMOVE, val, len, NULL);
}

int conc_mlist_reverse(conc_mlist_t *l)
{
    if (!l)
        return CONC_EINVAL;
    return call_op_void(&l->p, CONC__MOP_L_REVERSE);
}

int conc_mlist_free(conc_mlist_t *l) { return proxy_free((mproxy_t *)l); }

/* ---------------------------------------------------------------- lock */

int conc_mlock_acquire(conc_mlock_t *l, bool blocking, double timeout)
{
    if (!l || bad_timeout(timeout) || (!blocking && timeout != CONC_FOREVER))
        return CONC_EINVAL;
    conc__wbuf_t *w = call_begin(&l->p, CONC__MOP_K_ACQUIRE);
    if (!w)
        return call_failed();
    conc__wb_u8(w, blocking);
    conc__wb_f64(w, timeout);
    return call_void(&l->p, blocking_wait(&l->p, blocking, timeout));
}

int conc_mlock_release(conc_mlock_t *l)
{
    if (!l)
        return CONC_EINVAL;
    return call_op_void(&l->p, CONC__MOP_K_RELEASE);
}

int conc_mlock_locked(conc_mlock_t *l, bool *out)
{
    if (!l || !out)
        return CONC_EINVAL;
    if (!call_begin(&l->p, CONC__MOP_K_LOCKED))
        return call_failed();
    return call_bool(&l->p, out);
}

int conc_mlock_free(conc_mlock_t *l) { return proxy_free((mproxy_t *)l); }

/* --------------------------------------------------------------- queue */

int conc_mqueue_put(conc_mqueue_t *q, const void *item, size_t len, bool block, double timeout)
{
    /* The server checks a negative timeout where it applies (a bounded
     * queue: Python's ValueError); an unbounded put ignores it. */
    if (!q || !KEYOK(item, len) || (block && isnan(timeout)))
        return CONC_EINVAL;
    if (len > CONC__MGR_MAX_FRAME)
        return CONC_ERANGE;
    conc__wbuf_t *w = call_begin(&q->p, CONC__MOP_Q_PUT);
    if (!w)
        return call_failed();
    conc__wb_u8(w, block);
    conc__wb_f64(w, block ? timeout : 0);
    conc__wb_bytes(w, item, len);
    return call_void(&q->p, blocking_wait(&q->p, block, timeout));
}

int conc_mqueue_get(conc_mqueue_t *q, void **item, size_t *len, bool block, double timeout)
{
    if (!q || !item || !len || (block && bad_timeout(timeout)))
        return CONC_EINVAL;
    conc__wbuf_t *w = call_begin(&q->p, CONC__MOP_Q_GET);
    if (!w)
        return call_failed();
    conc__wb_u8(w, block);
    conc__wb_f64(w, block ? timeout : 0);
    return call_bytes(&q->p, blocking_wait(&q->p, block, timeout), item, len);
}

int conc_mqueue_qsize(conc_mqueue_t *q, size_t *n)
{
    if (!q || !n)
        return CONC_EINVAL;
    return call_op_size(&q->p, CONC__MOP_Q_SIZE, n);
}

int conc_mqueue_empty(conc_mqueue_t *q, bool *empty)
{
    size_t n = 0; /* set on success; gcc (aarch64, -O2) cannot see that through call_op_size */
    if (!empty)
        return CONC_EINVAL;
    int rc = conc_mqueue_qsize(q, &n);
    if (!rc)
        *empty = n == 0;
    return rc;
}

int conc_mqueue_full(conc_mqueue_t *q, bool *full)
{
    if (!q || !full)
        return CONC_EINVAL;
    uint64_t v = 0;
    if (!call_begin(&q->p, CONC__MOP_Q_FULL))
        return call_failed();
    int rc = call_u64(&q->p, &v);
    if (!rc)
        *full = v != 0;
    return rc;
}

int conc_mqueue_free(conc_mqueue_t *q) { return proxy_free((mproxy_t *)q); }

/* ------------------------------------------ for proxy_more.c (client.h) */

conc__wbuf_t *conc__mp_call_begin(mproxy_t *p, uint8_t op) { return call_begin(p, op); }
int conc__mp_call_failed(void) { return call_failed(); }
int conc__mp_call_run(mproxy_t *p, double wait, conc__rbuf_t *rep) { return call_run(p, wait, rep); }
void conc__mp_call_end(mproxy_t *p) { call_end(p); }
int conc__mp_call_void(mproxy_t *p, double wait) { return call_void(p, wait); }
int conc__mp_call_bytes(mproxy_t *p, double wait, void **val, size_t *len)
{
    return call_bytes(p, wait, val, len);
}
int conc__mp_call_u64(mproxy_t *p, uint64_t *out) { return call_u64(p, out); }
int conc__mp_call_bool(mproxy_t *p, bool *out) { return call_bool(p, out); }
int conc__mp_free(mproxy_t *p) { return proxy_free(p); }

int conc__mp_broken(mproxy_t *p)
{
    p->broken = true;
    proxy_close_fd(p);
    return CONC_EBROKEN;
}

int conc__mp_make(conc_manager_t *m, uint8_t kind, long maxsize, const char *name, mproxy_t **out,
                  const uint8_t *init, size_t ilen)
{
    return make_proxy_init(m, kind, maxsize, name, out, init, ilen);
}

int conc__mp_make_item(const mproxy_t *src, const uint8_t *req, size_t n, mproxy_t **out)
{
    return proxy_new_on(src, 0, 0, NULL, req, n, true, out);
}

/* ------------------------------------------------- a manager for a child */

static const char ref_magic[8] = "CMGRREF1";

int conc_manager_ref(const conc_manager_t *m, void **ref, size_t *len)
{
    if (!m || !ref || !len)
        return CONC_EINVAL;
    conc__wbuf_t w = {0};
    conc__wb_put(&w, ref_magic, sizeof ref_magic);
    conc__wb_bytes(&w, m->ctl.addr, strlen(m->ctl.addr));
    conc__wb_bytes(&w, m->ctl.key, m->ctl.keylen);
    if (w.oom) {
        conc__wb_free(&w);
        return CONC_ENOMEM;
    }
    *ref = w.p;
    *len = w.len;
    return 0;
}

int conc_manager_attach(conc_manager_t **out, const void *ref, size_t len, double timeout)
{
    if (!out || !ref || len < sizeof ref_magic || memcmp(ref, ref_magic, sizeof ref_magic) != 0)
        return CONC_EINVAL;
    conc__rbuf_t r = {(const uint8_t *)ref + sizeof ref_magic, (const uint8_t *)ref + len, false};
    size_t an, kn;
    const uint8_t *a = conc__rb_bytes(&r, &an);
    const uint8_t *k = conc__rb_bytes(&r, &kn);
    if (!conc__rb_done(&r) || an == 0 || an >= ADDR_MAX || memchr(a, 0, an) || kn == 0)
        return CONC_EINVAL;
    char addr[ADDR_MAX];
    memcpy(addr, a, an);
    addr[an] = 0;
    return conc_manager_connect(out, addr, k, kn, timeout);
}
