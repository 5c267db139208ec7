/*
 * wire.c — the manager's frames, argument encoding and authentication
 * handshake (the formats are described in internal.h).
 *
 * Encoding writes into a growable buffer that remembers an allocation
 * failure instead of reporting each one; decoding reads through a cursor
 * that turns every overrun into a sticky "bad" flag, so the dispatcher
 * checks once, at the end, that a request parsed exactly.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conc/io.h"
#include "core/fdwait.h"
#include "core/futex.h"
#include "core/park.h"
#include "core/shwait.h"
#include "core/time.h"
#include "manager/internal.h"
#include "manager/sha256.h"

/* ------------------------------------------------------------ encoding */

void conc__wb_reset(conc__wbuf_t *w)
{
    w->len = 0;
    w->oom = false;
}

void conc__wb_free(conc__wbuf_t *w)
{
    free(w->p);
    w->p = NULL;
    w->len = w->cap = 0;
    w->oom = false;
}

static bool wb_reserve(conc__wbuf_t *w, size_t n)
{
    if (w->oom)
        return false;
    if (n <= w->cap - w->len)
        return true;
    if (n > SIZE_MAX / 2 - w->len) {
        w->oom = true;
        return false;
    }
    size_t cap = w->cap ? w->cap : 256;
    while (cap - w->len < n)
        cap *= 2;
    uint8_t *p = realloc(w->p, cap);
    if (!p) {
        w->oom = true;
        return false;
    }
    w->p = p;
    w->cap = cap;
    return true;
}

void conc__wb_put(conc__wbuf_t *w, const void *p, size_t n)
{
    if (!n || !wb_reserve(w, n))
        return;
    memcpy(w->p + w->len, p, n);
    w->len += n;
}

void conc__wb_u8(conc__wbuf_t *w, uint8_t v) { conc__wb_put(w, &v, 1); }

void conc__wb_u32(conc__wbuf_t *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    conc__wb_put(w, b, 4);
}

void conc__wb_u64(conc__wbuf_t *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    conc__wb_put(w, b, 8);
}

void conc__wb_f64(conc__wbuf_t *w, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    conc__wb_u64(w, u);
}

void conc__wb_bytes(conc__wbuf_t *w, const void *p, size_t n)
{
    if (n > UINT32_MAX) {
        w->oom = true; /* cannot be framed; the caller checks sizes first */
        return;
    }
    conc__wb_u32(w, (uint32_t)n);
    conc__wb_put(w, p, n);
}

void conc__wb_begin_frame(conc__wbuf_t *w)
{
    conc__wb_reset(w);
    conc__wb_u32(w, 0);
}

void conc__wb_end_frame(conc__wbuf_t *w)
{
    if (w->oom || w->len < 4)
        return;
    size_t n = w->len - 4;
    if (n > UINT32_MAX)
        n = UINT32_MAX; /* rejected by the size check before sending */
    w->p[0] = (uint8_t)n;
    w->p[1] = (uint8_t)(n >> 8);
    w->p[2] = (uint8_t)(n >> 16);
    w->p[3] = (uint8_t)(n >> 24);
}

/* ------------------------------------------------------------ decoding */

static const uint8_t *rb_take(conc__rbuf_t *r, size_t n)
{
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    return p;
}

uint8_t conc__rb_u8(conc__rbuf_t *r)
{
    const uint8_t *p = rb_take(r, 1);
    return p ? p[0] : 0;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint32_t conc__rb_u32(conc__rbuf_t *r)
{
    const uint8_t *p = rb_take(r, 4);
    return p ? le32(p) : 0;
}

uint64_t conc__rb_u64(conc__rbuf_t *r)
{
    const uint8_t *p = rb_take(r, 8);
    if (!p)
        return 0;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

double conc__rb_f64(conc__rbuf_t *r)
{
    uint64_t u = conc__rb_u64(r);
    double d;
    memcpy(&d, &u, 8);
    return d;
}

const uint8_t *conc__rb_bytes(conc__rbuf_t *r, size_t *n)
{
    uint32_t len = conc__rb_u32(r);
    const uint8_t *p = rb_take(r, len);
    *n = p ? len : 0;
    return p ? p : (const uint8_t *)"";
}

int conc__mgr_frame(const uint8_t *buf, size_t n, size_t max, const uint8_t **body,
                    size_t *blen, size_t *used)
{
    if (n < 4)
        return 0;
    uint32_t len = le32(buf);
    if (len > max)
        return CONC_ERANGE;
    if (n - 4 < len)
        return 0;
    *body = buf + 4;
    *blen = len;
    *used = 4 + (size_t)len;
    return 1;
}

/* ----------------------------------------------------------- handshake */

int conc__mgr_random(void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return CONC_ESYS;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static double left(double deadline)
{
    double t = deadline - conc_monotonic();
    return t > 0 ? t : 0;
}

static int hs_send(int fd, const void *body, size_t n, double deadline)
{
    uint8_t buf[4 + CONC__MGR_HS_MAX];
    buf[0] = (uint8_t)n;
    buf[1] = (uint8_t)(n >> 8);
    buf[2] = buf[3] = 0;
    memcpy(buf + 4, body, n);
    return conc_write_all(fd, buf, 4 + n, NULL, left(deadline)) == 0 ? 0 : CONC_EBROKEN;
}

/* Receive one handshake frame (at most CONC__MGR_HS_MAX bytes). */
static int hs_recv(int fd, uint8_t *body, size_t *n, double deadline)
{
    uint8_t hdr[4];
    if (conc_read_exact(fd, hdr, 4, NULL, left(deadline)) != 0)
        return CONC_EBROKEN;
    uint32_t len = le32(hdr);
    if (len > CONC__MGR_HS_MAX)
        return CONC_EINVAL;
    if (len && conc_read_exact(fd, body, len, NULL, left(deadline)) != 0)
        return CONC_EBROKEN;
    *n = len;
    return 0;
}

/* deliver_challenge: send role + nonce, check the HMAC that comes back. */
static int deliver(int fd, char role, const void *key, size_t keylen, double deadline)
{
    uint8_t msg[1 + CONC__MGR_NONCE], mac[CONC__SHA256_LEN], got[CONC__MGR_HS_MAX];
    msg[0] = (uint8_t)role;
    if (conc__mgr_random(msg + 1, CONC__MGR_NONCE) != 0)
        return CONC_ESYS;
    int rc = hs_send(fd, msg, sizeof msg, deadline);
    if (rc)
        return rc;
    size_t n = 0;
    if ((rc = hs_recv(fd, got, &n, deadline)) != 0)
        return rc;
    conc__hmac_sha256(key, keylen, msg, sizeof msg, mac);
    bool ok = n == sizeof mac && conc__ct_equal(got, mac, sizeof mac);
    rc = hs_send(fd, ok ? "W" : "F", 1, deadline);
    if (!ok)
        return CONC_EPERM;
    return rc;
}

/* answer_challenge: HMAC the peer's challenge (tagged with its role),
 * then read its verdict. */
static int answer(int fd, char peer_role, const void *key, size_t keylen, double deadline)
{
    uint8_t msg[CONC__MGR_HS_MAX], mac[CONC__SHA256_LEN];
    size_t n = 0;
    int rc = hs_recv(fd, msg, &n, deadline);
    if (rc)
        return rc;
    if (n != 1 + CONC__MGR_NONCE || msg[0] != (uint8_t)peer_role)
        return CONC_EINVAL;
    conc__hmac_sha256(key, keylen, msg, n, mac);
    if ((rc = hs_send(fd, mac, sizeof mac, deadline)) != 0)
        return rc;
    if ((rc = hs_recv(fd, msg, &n, deadline)) != 0)
        return rc;
    if (n == 1 && msg[0] == 'W')
        return 0;
    if (n == 1 && msg[0] == 'F')
        return CONC_EPERM;
    return CONC_EINVAL;
}

int conc__mgr_hs_server(int fd, const void *key, size_t keylen, double timeout)
{
    double deadline = conc_monotonic() + timeout;
    int rc = deliver(fd, 'S', key, keylen, deadline);
    return rc ? rc : answer(fd, 'C', key, keylen, deadline);
}

int conc__mgr_hs_client(int fd, const void *key, size_t keylen, double timeout)
{
    double deadline = conc_monotonic() + timeout; /* CONC_FOREVER stays INFINITY */
    int rc = answer(fd, 'S', key, keylen, deadline);
    return rc ? rc : deliver(fd, 'C', key, keylen, deadline);
}

long conc__mgr_spin_ns = 50000;
int conc__mgr_spin_yield = 1;
__attribute__((constructor)) static void spin_from_env(void)
{
    const char *e = getenv("CONC_MANAGER_SPIN_NS");
    if (e)
        conc__mgr_spin_ns = atol(e);
    if ((e = getenv("CONC_MANAGER_SPIN_YIELD")))
        conc__mgr_spin_yield = atoi(e) != 0;
}

ssize_t conc__mgr_recv_spin(int fd, void *buf, size_t n, conc__spin_t *sp)
{
    long budget = sp->budget;
    if (budget <= 0 && ++sp->probe % 32 == 0)
        budget = 2000; /* now and then, see whether spinning pays again */
    if (budget > 0) {
        int64_t t0 = conc__now_ns(), until = t0 + budget;
        do {
            ssize_t r = recv(fd, buf, n, MSG_DONTWAIT);
            if (r >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                if (r > 0) { /* caught it awake: allow a longer spin next time */
                    long b = budget * 2;
                    sp->budget = b > conc__mgr_spin_ns ? conc__mgr_spin_ns : b;
                }
                return r;
            }
            if (conc__mgr_spin_yield)
                sched_yield();
        } while (conc__now_ns() < until);
        sp->budget = budget / 2 < 1000 ? 0 : budget / 2; /* it did not pay: spin less */
    }
    errno = EAGAIN;
    return -1;
}

/* ------------------------------------------------ shared-memory channel */

int conc__mgr_chan_create(int *fd, conc__mgr_chan_t **ch)
{
    int m = memfd_create("conc-manager", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (m < 0)
        return CONC_ESYS;
    /* Sealed at its size: the client cannot shrink it under our mapping
     * (an access past the end would be SIGBUS in the server). */
    if (ftruncate(m, (off_t)CONC__MGR_CHAN_SIZE) != 0 ||
        fcntl(m, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        close(m);
        return CONC_ESYS;
    }
    void *p = mmap(NULL, CONC__MGR_CHAN_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
    if (p == MAP_FAILED) {
        close(m);
        return CONC_ESYS;
    }
    *fd = m;
    *ch = p;
    return 0;
}

/* Spin on *word for up to the adaptive budget (as conc__mgr_recv_spin,
 * capped at CHAN_SPIN_MAX), unless the peer is on our own CPU (each post
 * records the poster's CPU next to its sequence word). It never yields: a word in memory is caught
 * within nanoseconds when the peer runs on another core, and when the peer
 * shares our core a sched_yield can hand the core to some third busy
 * process for a whole time slice (measured: 5k pairs/s with one busy loop
 * elsewhere, against 110k+ without yielding); the budget then just decays
 * to 0 and we sleep on the futex, which hands the core over directly. */
#define CHAN_SPIN_MAX 20000L
static bool chan_spin(const uint32_t *word, uint32_t old, conc__spin_t *sp)
{
    long cap = conc__mgr_spin_ns < CHAN_SPIN_MAX ? conc__mgr_spin_ns : CHAN_SPIN_MAX;
    /* The peer last posted from our CPU: it cannot run while we spin. */
    if (cap <= 0 || (int)__atomic_load_n(word + 3, __ATOMIC_RELAXED) == sched_getcpu())
        return false;
    /* On another CPU a reply is usually a microsecond or two away; the
     * budget never drops below a quarter of the cap there, so one peer
     * that was preempted a few times does not put both sides to sleep
     * for good (a sleeping peer makes every later spin miss too). */
    long budget = sp->budget < cap / 4 ? cap / 4 : sp->budget;
    int64_t until = conc__now_ns() + budget;
    for (;;) {
        for (int i = 0; i < 32; i++) {
            if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != old) {
                long b = budget * 2;
                sp->budget = b > cap ? cap : b;
                return true;
            }
            conc__cpu_relax();
        }
        if (conc__now_ns() >= until)
            break;
    }
    sp->budget = budget / 2 < 1000 ? 0 : budget / 2;
    return false;
}

/* Read the wake-up bytes waiting on fd: false at EOF or on an error. */
static bool chan_drain(int fd)
{
    char b[64];
    for (;;) {
        ssize_t r = recv(fd, b, sizeof b, MSG_DONTWAIT);
        if (r == (ssize_t)sizeof b)
            continue;
        if (r > 0)
            return true;
        if (r == 0)
            return false;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN || errno == EWOULDBLOCK;
    }
}

static bool moved(const uint32_t *word, uint32_t old, uint32_t *flag)
{
    if (__atomic_load_n(word, __ATOMIC_SEQ_CST) == old)
        return false;
    __atomic_store_n(flag, 0, __ATOMIC_RELAXED); /* no wake-up wanted now */
    return true;
}

/* A wait cut short by rc (a kill, a Timeout scope): no wake-up wanted;
 * the word moved meanwhile: satisfied after all (the interruption waits
 * for the next blocking call), else report it. */
static int chan_cut(const uint32_t *word, uint32_t old, uint32_t *flag, int rc)
{
    conc__cut_t cut = conc__cut_save(rc);
    __atomic_store_n(flag, 0, __ATOMIC_SEQ_CST);
    if (moved(word, old, flag)) {
        conc__cut_rearm(&cut);
        return 0;
    }
    return rc;
}

int conc__mgr_chan_wait(const uint32_t *word, uint32_t old, uint32_t *flag, int fd,
                        conc__spin_t *sp, int64_t deadline, const int *stop, bool green)
{
    if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != old || chan_spin(word, old, sp))
        return 0;
    if (!green) { /* the futex: the cheapest wake-up, but blind to EOF */
        int64_t until = conc__now_ns() + CONC__MGR_CHAN_FUTEX_NS;
        if (until > deadline)
            until = deadline;
        for (;;) {
            if (stop && __atomic_load_n(stop, __ATOMIC_ACQUIRE))
                return CONC_ESHUTDOWN;
            __atomic_store_n(flag, 1, __ATOMIC_SEQ_CST);
            if (moved(word, old, flag))
                return 0;
            /* colorless: a Timeout scope (or a kill) cuts it short */
            int r = conc__shared_wait((uint32_t *)word, old, until);
            if (conc__is_cut(r))
                return chan_cut(word, old, flag, r);
            if (moved(word, old, flag))
                return 0;
            if (conc__now_ns() >= until)
                break;
        }
        if (until >= deadline) {
            __atomic_store_n(flag, 0, __ATOMIC_RELAXED);
            return CONC_ETIMEDOUT;
        }
    }
    /* the socket: a wake-up byte, or EOF when the peer is gone */
    for (;;) {
        if (stop && __atomic_load_n(stop, __ATOMIC_ACQUIRE))
            return CONC_ESHUTDOWN;
        __atomic_store_n(flag, 2, __ATOMIC_SEQ_CST);
        if (moved(word, old, flag))
            return 0;
        int64_t now = conc__now_ns();
        if (now >= deadline) {
            __atomic_store_n(flag, 0, __ATOMIC_RELAXED);
            return CONC_ETIMEDOUT;
        }
        /* a green thread parks on the hub's epoll (edge-triggered: look
         * first, wake-up bytes may be waiting), an OS thread polls; either
         * way kills and Timeout scopes cut it short */
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int rc = 0;
        if (poll(&pf, 1, 0) == 0)
            rc = conc__fd_wait(fd, CONC__FD_READ, deadline);
        if (conc__is_cut(rc))
            return chan_cut(word, old, flag, rc);
        if (rc != 0 && rc != CONC_ETIMEDOUT) {
            __atomic_store_n(flag, 0, __ATOMIC_RELAXED);
            return moved(word, old, flag) ? 0 : CONC_EEOF;
        }
        if (moved(word, old, flag))
            return 0;
        if (!chan_drain(fd)) {
            __atomic_store_n(flag, 0, __ATOMIC_RELAXED);
            return CONC_EEOF;
        }
    }
}

void conc__mgr_chan_post(uint32_t *word, uint32_t v, uint32_t *flag, int fd)
{
    __atomic_store_n(word + 3, (uint32_t)sched_getcpu(), __ATOMIC_RELAXED);
    __atomic_store_n(word, v, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(flag, __ATOMIC_SEQ_CST) == 0)
        return; /* nobody sleeps: no syscall */
    uint32_t how = __atomic_exchange_n(flag, 0, __ATOMIC_SEQ_CST);
    if (how == 1) {
        conc__futex_wake(word, 1, 1);
    } else if (how) {
        while (send(fd, "w", 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno == EINTR) {
        }
    }
}
