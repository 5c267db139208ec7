/*
 * sync.c — the manager's Event, Semaphore, BoundedSemaphore, Condition and
 * Barrier (SyncManager's typeids of the same names), on the server side.
 *
 * Each object is a small state record with its own mutex and a FIFO of
 * waiters (a second one for the Condition's lock). Every connection is
 * served by its own server thread (listener.c), so a blocking request
 * blocks only that thread; it waits without polling: each waiter record
 * carries an eventfd, and the thread sleeps in one ppoll on that eventfd
 * and on its client's socket (POLLRDHUP), with the request's own deadline.
 * A state change writes the eventfds of the waiters it concerns; a client
 * that hangs up (its process died, or the proxy's call was cut short by a
 * kill or a Timeout scope: the proxy half-closes) wakes its own thread at
 * once; shutdown writes every eventfd (conc__mgr_sync_wake). Out of file
 * descriptors, a waiter has no eventfd and naps 50 ms at a time instead.
 *
 * Invariants:
 *  - Semaphore permits are handed over, first come first served: release
 *    gives a permit to the oldest waiter (w->woken), so a newcomer cannot
 *    overtake. A waiter that leaves with a permit it was handed (its
 *    client hung up) gives it to the next one; a grant to a client that
 *    has already hung up is taken back before the reply: no permit is
 *    ever lost to a cut call.
 *  - Condition: an RLock owned by a connection (owner, count), released by
 *    the server when that connection closes (conc__mgr_sync_leave, and on
 *    every request when the owner's socket is seen closed). notify(n)
 *    marks the n oldest unmarked waiters; a marked waiter whose client
 *    hung up passes its mark on, so no notification is lost to a cut wait.
 *  - Barrier: threading.Barrier's state machine (0 filling, 1 draining,
 *    -1 resetting, -2 broken); a waiter cut short breaks it, as an
 *    exception inside threading.Barrier.wait does.
 *  - Event: set() marks every current waiter, so each returns true even if
 *    clear() follows at once.
 * No record is touched after its waiter's thread took it off its list
 * (under the object's mutex); the object outlives every bound connection.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <stdatomic.h>
#include <unistd.h>

#include "conc/pool.h"
#include "conc/process.h"
#include "core/park.h"
#include "core/time.h"
#include "futures/internal.h"
#include "manager/server.h"
#include "manager/sync.h"

#define NAP_NS 50000000LL
#define MAX_NAME 4096
#define MAX_POOL 1024   /* processes of a Pool */
#define MAX_FN 256      /* a task function's registered name */
#define MAX_RESULTS 65536 /* apply_async / map_async results a Pool keeps */

/* A server thread's waiter. Its list link is the park layer's wait-list
 * node (core/park.h: next, prev, queued), on a conc__waitq_t, with that
 * layer's list operations; the lists are guarded by sy->mu (the waitq's
 * own spin guard is not used) and nothing here parks on the node: a
 * server thread sleeps in poll on its eventfd and the client's socket. */
typedef struct swaiter {
    conc__waiter_t node; /* first: a list's node is its swaiter */
    int efd;    /* eventfd, -1: nap */
    bool woken; /* semaphore: handed a permit; condition: notified; event: set */
    bool shared; /* efd belongs to a Pool result: never read it (see pool_wait) */
} swaiter_t;

typedef conc__waitq_t wq_t;

struct conc__mgr_sync {
    pthread_mutex_t mu;
    int kind;
    wq_t q;  /* waiters (of every kind of object) */
    wq_t lq; /* Condition: waiters for its lock */
    /* event */
    bool flag;
    /* semaphore */
    long value, bound; /* bound: BoundedSemaphore's initial value; -1: none */
    /* condition */
    conc__mgr_conn_t *owner;
    unsigned long count;
    /* barrier (parties); pool (parties: its processes) */
    long parties, nwait;
    conc_pool_t *pool; /* made at the first task */
    struct presult *results; /* apply_async / map_async results not forgotten */
    size_t nresults;
    uint64_t next_token;
    int state;
    double timeout;
};

/* ------------------------------------------------------------- waiting */

static swaiter_t *sw_of(conc__waiter_t *n) { return (swaiter_t *)n; }
static swaiter_t *wq_first(const wq_t *q) { return sw_of(q->head); }
static swaiter_t *wq_next(const swaiter_t *w) { return sw_of(w->node.next); }

static void wq_push(wq_t *q, swaiter_t *w) { conc__waitq_push(q, &w->node); }

/* Off the list, if still on it (a waker may have taken it off). */
static void wq_remove(wq_t *q, swaiter_t *w)
{
    if (w->node.queued)
        conc__waitq_remove(q, &w->node);
}

static void wake(swaiter_t *w)
{
    if (w->efd >= 0) {
        uint64_t one = 1;
        ssize_t r = write(w->efd, &one, sizeof one);
        (void)r; /* the counter cannot overflow by 1s: never fails */
    }
}

static void wake_all(wq_t *q)
{
    for (swaiter_t *w = wq_first(q); w; w = wq_next(w))
        wake(w);
}

static bool peer_gone(int fd)
{
    if (fd < 0)
        return false;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

static void waiter_init(swaiter_t *w, conc__mgr_conn_t *c)
{
    memset(w, 0, sizeof *w);
    w->efd = c->s->noblock ? -1 : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

static void waiter_fini(swaiter_t *w)
{
    if (w->efd >= 0)
        close(w->efd);
}

/* With sy->mu held: sleep until woken, the deadline, the client's hang-up
 * or shutdown (the mutex is released meanwhile). 0: look again;
 * CONC_ETIMEDOUT, CONC_EEOF (the client left), CONC_ESHUTDOWN. */
static int swait(conc__mgr_sync_t *sy, conc__mgr_conn_t *c, swaiter_t *w, int64_t deadline)
{
    if (__atomic_load_n(&c->s->stopping, __ATOMIC_ACQUIRE))
        return CONC_ESHUTDOWN;
    int64_t now = conc__now_ns();
    if (now >= deadline || c->s->noblock)
        return CONC_ETIMEDOUT;
    int64_t left = deadline - now;
    if (w->efd < 0 && left > NAP_NS)
        left = NAP_NS;
    struct pollfd p[2] = {{.fd = c->fd, .events = POLLRDHUP}, {.fd = w->efd, .events = POLLIN}};
    struct timespec ts = {(time_t)(left / 1000000000), (long)(left % 1000000000)};
    pthread_mutex_unlock(&sy->mu);
    int n = ppoll(p, 2, deadline == CONC__NO_DEADLINE ? NULL : &ts, NULL);
    if (n > 0 && (p[1].revents & POLLIN) && !w->shared) {
        uint64_t v;
        ssize_t r = read(w->efd, &v, sizeof v);
        (void)r;
    }
    pthread_mutex_lock(&sy->mu);
    if (n > 0 && (p[0].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)))
        return CONC_EEOF;
    if (__atomic_load_n(&c->s->stopping, __ATOMIC_ACQUIRE))
        return CONC_ESHUTDOWN;
    return 0;
}

/* ------------------------------------------------------------- replies */

static int reply(conc__mgr_conn_t *c, int code)
{
    conc__mgr_reply_code(c, code);
    return 0;
}

static int bad(conc__mgr_conn_t *c)
{
    conc__mgr_reply_code(c, CONC_EINVAL);
    return CONC_EINVAL;
}

/* ------------------------------------------------------------- objects */

static void pool_forget_all(conc__mgr_sync_t *sy); /* (Pool, below) */

void conc__mgr_sync_free(conc__mgr_sync_t *sy)
{
    if (!sy)
        return;
    pool_forget_all(sy);
    if (sy->pool) {
        conc_pool_terminate(sy->pool);
        conc_pool_free(sy->pool);
    }
    pthread_mutex_destroy(&sy->mu);
    free(sy);
}

void conc__mgr_sync_wake(conc__mgr_sync_t *sy)
{
    pthread_mutex_lock(&sy->mu);
    wake_all(&sy->q);
    wake_all(&sy->lq);
    pthread_mutex_unlock(&sy->mu);
}

/* With sy->mu held: the Condition's lock is free again; wake its waiters
 * (each looks again: the lock goes to whoever takes it first). */
static void cond_unlock(conc__mgr_sync_t *sy)
{
    sy->owner = NULL;
    sy->count = 0;
    wake_all(&sy->lq);
}

void conc__mgr_sync_leave(conc__mgr_sync_t *sy, conc__mgr_conn_t *c)
{
    pthread_mutex_lock(&sy->mu);
    if (sy->kind == CONC__MK_COND && sy->owner == c)
        cond_unlock(sy);
    pthread_mutex_unlock(&sy->mu);
}

/* With sy->mu held: an owner whose socket closed no longer owns the lock
 * (its record stays valid while it is the owner: leave() clears it first). */
static void cond_reclaim(conc__mgr_sync_t *sy)
{
    if (sy->owner && peer_gone(sy->owner->fd))
        cond_unlock(sy);
}

int conc__mgr_sync_bind(conc__mgr_conn_t *c, conc__rbuf_t *r)
{
    uint8_t kind = conc__rb_u8(r);
    int64_t param = (int64_t)conc__rb_u64(r);
    double timeout = conc__rb_f64(r);
    size_t nlen;
    const uint8_t *name = conc__rb_bytes(r, &nlen);
    if (!conc__rb_done(r) || kind < CONC__MK_EVENT || kind > CONC__MK_POOL)
        return bad(c);
    if (nlen > MAX_NAME || isnan(timeout))
        return reply(c, CONC_EINVAL);
    if ((kind == CONC__MK_SEM || kind == CONC__MK_BSEM) && (param < 0 || param > CONC_SEMAPHORE_MAX))
        return reply(c, CONC_EINVAL);
    if (kind == CONC__MK_BARRIER && (param < 1 || param > INT_MAX))
        return reply(c, CONC_EINVAL);
    if (kind == CONC__MK_POOL && (param < 0 || param > MAX_POOL))
        return reply(c, CONC_EINVAL);
    conc__mgr_sync_t *sy = calloc(1, sizeof *sy);
    if (!sy)
        return reply(c, CONC_ENOMEM);
    pthread_mutex_init(&sy->mu, NULL);
    sy->kind = kind;
    sy->value = kind == CONC__MK_SEM || kind == CONC__MK_BSEM ? (long)param : 0;
    sy->bound = kind == CONC__MK_BSEM ? (long)param : -1;
    sy->parties = kind == CONC__MK_BARRIER || kind == CONC__MK_POOL ? (long)param : 0;
    sy->timeout = timeout;
    bool used = false;
    uint64_t id = 0;
    int rc = conc__mgr_bind_sync_obj(c, kind, name, nlen, sy, &used, &id);
    if (!used)
        conc__mgr_sync_free(sy);
    if (rc)
        return reply(c, rc);
    reply(c, 0);
    conc__wb_u64(&c->out, id);
    conc__wb_u8(&c->out, kind);
    return 0;
}

/* --------------------------------------------------------------- Event */

static int do_event(conc__mgr_conn_t *c, conc__mgr_sync_t *sy, conc__rbuf_t *r, int op)
{
    int64_t deadline = 0;
    if (op == CONC__MOP_E_WAIT) {
        double t = conc__rb_f64(r);
        if (!conc__rb_done(r))
            return bad(c);
        if (conc__deadline(t, &deadline))
            return reply(c, CONC_EINVAL);
    } else if (!conc__rb_done(r)) {
        return bad(c);
    }
    pthread_mutex_lock(&sy->mu);
    switch (op) {
    case CONC__MOP_E_SET:
        sy->flag = true;
        for (swaiter_t *w = wq_first(&sy->q); w; w = wq_next(w)) {
            w->woken = true;
            wake(w);
        }
        reply(c, 0);
        break;
    case CONC__MOP_E_CLEAR:
        sy->flag = false;
        reply(c, 0);
        break;
    case CONC__MOP_E_IS_SET:
        reply(c, 0);
        conc__wb_u8(&c->out, sy->flag);
        break;
    case CONC__MOP_E_WAIT: {
        int rc = 0;
        if (!sy->flag) {
            swaiter_t w;
            waiter_init(&w, c);
            wq_push(&sy->q, &w);
            while (!w.woken && (rc = swait(sy, c, &w, deadline)) == 0) {
            }
            wq_remove(&sy->q, &w);
            waiter_fini(&w);
            if (w.woken || sy->flag)
                rc = 0;
        }
        reply(c, rc);
        break;
    }
    }
    pthread_mutex_unlock(&sy->mu);
    return 0;
}

/* ----------------------------------------------------------- Semaphore */

/* With sy->mu held: hand free permits to the oldest waiters. */
static void sem_hand_out(conc__mgr_sync_t *sy)
{
    for (swaiter_t *w = wq_first(&sy->q); w && sy->value > 0; w = wq_next(w))
        if (!w->woken) {
            w->woken = true;
            sy->value--;
            wake(w);
        }
}

static int do_sem(conc__mgr_conn_t *c, conc__mgr_sync_t *sy, conc__rbuf_t *r, int op)
{
    int64_t deadline = 0, n = 0;
    if (op == CONC__MOP_S_ACQUIRE) {
        uint8_t blocking = conc__rb_u8(r);
        double t = conc__rb_f64(r);
        if (!conc__rb_done(r) || blocking > 1)
            return bad(c);
        /* threading.Semaphore: a negative timeout is "already up" */
        if (conc__acquire_deadline_lenient(blocking, t, &deadline))
            return reply(c, CONC_EINVAL);
    } else if (op == CONC__MOP_S_RELEASE) {
        n = (int64_t)conc__rb_u64(r);
        if (!conc__rb_done(r))
            return bad(c);
    } else if (!conc__rb_done(r)) {
        return bad(c);
    }
    pthread_mutex_lock(&sy->mu);
    switch (op) {
    case CONC__MOP_S_ACQUIRE: {
        int rc = 0;
        /* value > 0 means every queued waiter has been handed its permit
         * already (sem_hand_out runs whenever value grows): take one */
        if (sy->value > 0) {
            sy->value--;
        } else if (deadline == 0) {
            rc = CONC_ETIMEDOUT; /* try once */
        } else {
            swaiter_t w;
            waiter_init(&w, c);
            wq_push(&sy->q, &w);
            while (!w.woken && (rc = swait(sy, c, &w, deadline)) == 0) {
            }
            wq_remove(&sy->q, &w);
            waiter_fini(&w);
            if (w.woken && rc != CONC_EEOF)
                rc = 0; /* handed a permit as the wait ended: keep it */
            else if (w.woken) {
                sy->value++; /* the client left: give the permit on */
                sem_hand_out(sy);
            }
        }
        if (rc == 0 && peer_gone(c->fd)) {
            /* the client hung up (a cut call): it will not read a grant */
            sy->value++;
            sem_hand_out(sy);
            rc = CONC_EEOF;
        }
        reply(c, rc);
        break;
    }
    case CONC__MOP_S_RELEASE:
        if (n < 1 || (sy->bound >= 0 && n > sy->bound - sy->value))
            reply(c, CONC_EINVAL); /* ValueError (BoundedSemaphore released too many times) */
        else if (n > CONC_SEMAPHORE_MAX - sy->value)
            reply(c, CONC_ERANGE);
        else {
            sy->value += (long)n;
            sem_hand_out(sy);
            reply(c, 0);
        }
        break;
    case CONC__MOP_S_VALUE:
        reply(c, 0);
        conc__wb_u64(&c->out, (uint64_t)sy->value);
        break;
    }
    pthread_mutex_unlock(&sy->mu);
    return 0;
}

/* ----------------------------------------------------------- Condition */

/* With sy->mu held: take the lock for c (re-entrant). 0, CONC_ETIMEDOUT,
 * CONC_EEOF, CONC_ESHUTDOWN, CONC_ERANGE (recursion overflow). */
static int cond_lock(conc__mgr_sync_t *sy, conc__mgr_conn_t *c, int64_t deadline, unsigned long count)
{
    if (sy->owner == c) {
        if (sy->count > ULONG_MAX - count)
            return CONC_ERANGE;
        sy->count += count;
        return 0;
    }
    int rc = 0;
    if (sy->owner) {
        swaiter_t w;
        waiter_init(&w, c);
        wq_push(&sy->lq, &w);
        while (sy->owner && (rc = swait(sy, c, &w, deadline)) == 0)
            cond_reclaim(sy);
        wq_remove(&sy->lq, &w);
        waiter_fini(&w);
        if (sy->owner)
            return rc;
    }
    if (peer_gone(c->fd)) { /* a cut call: the lock would die with the connection */
        wake_all(&sy->lq);
        return CONC_EEOF;
    }
    sy->owner = c;
    sy->count = count;
    return 0;
}

/* With sy->mu held: a notification whose waiter left goes to the next. */
static void cond_pass_on(conc__mgr_sync_t *sy)
{
    for (swaiter_t *w = wq_first(&sy->q); w; w = wq_next(w))
        if (!w->woken) {
            w->woken = true;
            wake(w);
            return;
        }
}

static int do_cond(conc__mgr_conn_t *c, conc__mgr_sync_t *sy, conc__rbuf_t *r, int op)
{
    int64_t deadline = 0, n = 0;
    if (op == CONC__MOP_C_ACQUIRE) {
        uint8_t blocking = conc__rb_u8(r);
        double t = conc__rb_f64(r);
        if (!conc__rb_done(r) || blocking > 1)
            return bad(c);
        if (conc__acquire_deadline(blocking, t, &deadline)) /* RLock: ValueError */
            return reply(c, CONC_EINVAL);
    } else if (op == CONC__MOP_C_WAIT) {
        double t = conc__rb_f64(r);
        if (!conc__rb_done(r))
            return bad(c);
        if (conc__deadline(t, &deadline))
            return reply(c, CONC_EINVAL);
    } else if (op == CONC__MOP_C_NOTIFY) {
        n = (int64_t)conc__rb_u64(r);
        if (!conc__rb_done(r))
            return bad(c);
    } else if (!conc__rb_done(r)) {
        return bad(c);
    }
    pthread_mutex_lock(&sy->mu);
    cond_reclaim(sy);
    bool owned = sy->owner == c;
    switch (op) {
    case CONC__MOP_C_ACQUIRE:
        reply(c, cond_lock(sy, c, deadline, 1));
        break;
    case CONC__MOP_C_RELEASE:
        if (!owned)
            reply(c, CONC_EPERM);
        else {
            if (--sy->count == 0)
                cond_unlock(sy);
            reply(c, 0);
        }
        break;
    case CONC__MOP_C_NOTIFY:
    case CONC__MOP_C_NOTIFY_ALL:
        if (!owned)
            reply(c, CONC_EPERM);
        else if (op == CONC__MOP_C_NOTIFY && n < 0)
            reply(c, CONC_EINVAL);
        else {
            for (swaiter_t *w = wq_first(&sy->q); w && (op == CONC__MOP_C_NOTIFY_ALL || n > 0); w = wq_next(w))
                if (!w->woken) {
                    w->woken = true;
                    wake(w);
                    n--;
                }
            reply(c, 0);
        }
        break;
    case CONC__MOP_C_WAIT: {
        if (!owned) {
            reply(c, CONC_EPERM);
            break;
        }
        unsigned long saved = sy->count;
        cond_unlock(sy);
        swaiter_t w;
        waiter_init(&w, c);
        wq_push(&sy->q, &w);
        int rc = 0;
        while (!w.woken && (rc = swait(sy, c, &w, deadline)) == 0) {
        }
        wq_remove(&sy->q, &w);
        waiter_fini(&w);
        if (w.woken && rc == CONC_EEOF)
            cond_pass_on(sy);
        else if (w.woken)
            rc = 0;
        if (rc == 0 || rc == CONC_ETIMEDOUT) { /* take the lock back, at its level */
            int lr = cond_lock(sy, c, CONC__NO_DEADLINE, saved);
            if (lr)
                rc = lr;
        }
        reply(c, rc);
        break;
    }
    }
    pthread_mutex_unlock(&sy->mu);
    return 0;
}

/* ------------------------------------------------------------- Barrier */

static void barrier_break(conc__mgr_sync_t *sy)
{
    sy->state = -2;
    wake_all(&sy->q);
}

static int do_barrier(conc__mgr_conn_t *c, conc__mgr_sync_t *sy, conc__rbuf_t *r, int op)
{
    double t = 0;
    if (op == CONC__MOP_B_WAIT) {
        t = conc__rb_f64(r);
        if (!conc__rb_done(r))
            return bad(c);
        if (isnan(t))
            return reply(c, CONC_EINVAL);
    } else if (!conc__rb_done(r)) {
        return bad(c);
    }
    pthread_mutex_lock(&sy->mu);
    switch (op) {
    case CONC__MOP_B_WAIT: {
        int64_t deadline;
        conc__deadline(t == CONC_BARRIER_DEFAULT ? sy->timeout : t, &deadline);
        swaiter_t w;
        waiter_init(&w, c);
        wq_push(&sy->q, &w);
        int rc = 0;
        /* _enter: wait while the barrier drains or resets */
        while ((sy->state == 1 || sy->state == -1) && (rc = swait(sy, c, &w, CONC__NO_DEADLINE)) == 0) {
        }
        if (rc == 0 && sy->state < 0)
            rc = CONC_EBROKEN;
        long index = 0;
        if (rc == 0) {
            index = sy->nwait++;
            if (index + 1 == sy->parties) {
                sy->state = 1; /* _release: everyone may go */
                wake_all(&sy->q);
            } else {
                while (sy->state == 0 && (rc = swait(sy, c, &w, deadline)) == 0) {
                }
                if (sy->state == 0) { /* timed out, cut or shutdown: _break */
                    barrier_break(sy);
                    rc = rc == CONC_ETIMEDOUT ? CONC_EBROKEN : rc;
                } else if (sy->state < 0) {
                    rc = CONC_EBROKEN;
                } else {
                    rc = 0;
                }
            }
            /* _exit */
            if (--sy->nwait == 0 && (sy->state == -1 || sy->state == 1)) {
                sy->state = 0;
                wake_all(&sy->q);
            }
        }
        wq_remove(&sy->q, &w);
        waiter_fini(&w);
        reply(c, rc);
        if (rc == 0)
            conc__wb_u64(&c->out, (uint64_t)index);
        break;
    }
    case CONC__MOP_B_RESET:
        if (sy->nwait > 0) {
            if (sy->state == 0 || sy->state == -2)
                sy->state = -1;
        } else {
            sy->state = 0;
        }
        wake_all(&sy->q);
        reply(c, 0);
        break;
    case CONC__MOP_B_ABORT:
        barrier_break(sy);
        reply(c, 0);
        break;
    case CONC__MOP_B_BROKEN:
        reply(c, 0);
        conc__wb_u8(&c->out, sy->state == -2);
        break;
    case CONC__MOP_B_N_WAITING:
        reply(c, 0);
        conc__wb_u64(&c->out, sy->state == 0 ? (uint64_t)sy->nwait : 0);
        break;
    case CONC__MOP_B_PARTIES:
        reply(c, 0);
        conc__wb_u64(&c->out, (uint64_t)sy->parties);
        break;
    }
    pthread_mutex_unlock(&sy->mu);
    return 0;
}

/* ---------------------------------------------------------------- Pool
 *
 * Manager().Pool(n): a conc_pool_t in the server process, made at the
 * first task. A request submits its task(s) with a done callback that
 * writes an eventfd, then waits like every other request here (ppoll on
 * that eventfd and on its client's socket): a client that hangs up (a cut
 * call) gets its answer at once and the task finishes unobserved, as in
 * CPython when the caller stops waiting. The eventfd is shared by the
 * callback and the request (refs): whichever is last closes it, so a
 * callback that fires after the request left writes to nothing reused.
 */

typedef struct psig {
    atomic_int refs, fired;
    int efd;
} psig_t;

static void psig_put(void *p)
{
    psig_t *g = p;
    if (atomic_fetch_sub(&g->refs, 1) == 1) {
        close(g->efd);
        free(g);
    }
}

static void psig_fire(psig_t *g)
{
    atomic_store(&g->fired, 1);
    uint64_t one = 1;
    ssize_t r = write(g->efd, &one, sizeof one);
    (void)r;
    psig_put(g);
}

static void psig_future_cb(conc_future_t *f, void *arg)
{
    (void)f;
    psig_fire(arg);
}

static void psig_map_cb(const conc_results_t *r, void *arg)
{
    (void)r;
    psig_fire(arg);
}

static void psig_map_ecb(int code, const char *msg, void *arg)
{
    (void)code, (void)msg;
    psig_fire(arg);
}

/* The registered task function called name (a copy, NUL-terminated). */
static conc_pool_fn pool_fn(const uint8_t *name, size_t n)
{
    char buf[MAX_FN + 1];
    if (n == 0 || n > MAX_FN || memchr(name, 0, n))
        return NULL;
    memcpy(buf, name, n);
    buf[n] = 0;
    const conc_registration_t *reg = conc_registry_find(buf);
    return reg && reg->sig == CONC_SIG_POOL ? (conc_pool_fn)reg->fn : NULL;
}

static void reply_failure(conc__mgr_conn_t *c, int code, const char *msg)
{
    reply(c, CONC_EFAILED);
    conc__wb_u32(&c->out, (uint32_t)code);
    conc__wb_bytes(&c->out, msg ? msg : "", msg ? strlen(msg) : 0);
}

/* One submitted apply or map: its future or MapResult and its signal. */
typedef struct presult {
    struct presult *next;
    uint64_t token;  /* apply_async / map_async: the client's handle (0: a plain call) */
    psig_t *g;       /* one reference held here */
    conc_future_t *f;
    conc_map_result_t *mr;
} presult_t;

static void presult_free(presult_t *pr)
{
    if (!pr)
        return;
    conc_future_free(pr->f);
    if (pr->mr)
        conc_map_result_free(pr->mr); /* the map goes on; its callbacks drop g */
    psig_put(pr->g);
    free(pr);
}

/* Parse an apply or map request and submit it (sy->mu held). 0 with *out;
 * else the request has been answered with an error, and *proto is what
 * the dispatcher returns (CONC_EINVAL when malformed: close). */
static int pool_submit(conc__mgr_conn_t *c, conc__mgr_sync_t *sy, conc__rbuf_t *r, bool map,
                       presult_t **out, int *proto)
{
    size_t fnlen, alen = 0;
    const uint8_t *fname = conc__rb_bytes(r, &fnlen);
    const uint8_t *arg = NULL, *items = NULL;
    uint64_t chunksize = 0;
    uint32_t n = 0;
    *proto = 0;
    if (!map) {
        arg = conc__rb_bytes(r, &alen);
    } else {
        chunksize = conc__rb_u64(r);
        n = conc__rb_u32(r);
        items = r->p;
        for (uint32_t i = 0; i < n && !r->bad; i++) /* every item checked before any is used */
            conc__rb_bytes(r, &alen);
    }
    if (!conc__rb_done(r)) {
        *proto = bad(c);
        return CONC_EINVAL;
    }
    conc_pool_fn fn = pool_fn(fname, fnlen);
    if (!fn)
        return reply(c, CONC_EINVAL), CONC_EINVAL; /* no such registered task function here */
    if (c->s->noblock)
        return reply(c, CONC_ENOTSUP), CONC_ENOTSUP; /* the fuzz harness's server starts no processes */
    conc_buf_t *bufs = NULL;
    if (map) {
        if (!(bufs = malloc((n ? n : 1) * sizeof *bufs)))
            return reply(c, CONC_ENOMEM), CONC_ENOMEM;
        conc__rbuf_t rr = {items, r->end, false};
        for (uint32_t i = 0; i < n; i++)
            bufs[i].data = conc__rb_bytes(&rr, &bufs[i].len);
    }
    presult_t *pr = calloc(1, sizeof *pr);
    psig_t *g = pr ? calloc(1, sizeof *g) : NULL;
    if (!g || (g->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        int rc = g ? CONC_ESYS : CONC_ENOMEM;
        free(g);
        free(pr);
        free(bufs);
        return reply(c, rc), rc;
    }
    atomic_store(&g->refs, 2); /* the record and the callback */
    pr->g = g;
    int rc = 0;
    if (!sy->pool) {
        conc_pool_opts_t o = {.processes = (size_t)sy->parties};
        rc = conc_pool_new(&sy->pool, &o);
        if (rc)
            sy->pool = NULL;
    }
    if (!rc && !map) {
        rc = conc_pool_apply_async(sy->pool, fn, arg, alen, NULL, NULL, NULL, &pr->f);
        /* psig_put as the discard hook: a future dropped unfinished still lets g go */
        if (!rc && conc__future_add_callback(pr->f, psig_future_cb, g, psig_put) != 0)
            rc = CONC_ENOMEM, atomic_fetch_sub(&g->refs, 1);
    } else if (!rc) {
        rc = conc_pool_map_async(sy->pool, fn, bufs, 0, n, (size_t)(chunksize > SIZE_MAX ? 0 : chunksize),
                                 psig_map_cb, psig_map_ecb, g, &pr->mr);
    }
    free(bufs);
    if (rc) {
        if (!pr->f && !pr->mr)
            atomic_fetch_sub(&g->refs, 1); /* no callback will come */
        presult_free(pr);
        return reply(c, rc), rc;
    }
    *out = pr;
    return 0;
}

/* With sy->mu held: wait until pr is done (0), its deadline passed
 * (CONC_ETIMEDOUT), or CONC_EEOF / CONC_ESHUTDOWN. The eventfd is never
 * read: it stays readable once fired, for every waiter of the result. */
static int pool_wait(conc__mgr_sync_t *sy, conc__mgr_conn_t *c, presult_t *pr, int64_t deadline)
{
    psig_t *g = pr->g;
    if (atomic_load(&g->fired))
        return 0;
    swaiter_t w;
    memset(&w, 0, sizeof w);
    w.efd = g->efd;
    w.shared = true;
    atomic_fetch_add(&g->refs, 1); /* a forget during the wait cannot close it */
    wq_push(&sy->q, &w);
    int rc = 0;
    while (!atomic_load(&g->fired) && (rc = swait(sy, c, &w, deadline)) == 0) {
    }
    wq_remove(&sy->q, &w);
    rc = atomic_load(&g->fired) ? 0 : rc;
    psig_put(g);
    return rc;
}

/* Reply with pr's outcome (it is done). */
static void pool_reply(conc__mgr_conn_t *c, presult_t *pr)
{
    if (pr->f) {
        const void *d;
        size_t dn;
        int fr = conc_future_bytes(pr->f, 0, &d, &dn);
        if (fr == 0) {
            reply(c, 0);
            conc__wb_bytes(&c->out, d, dn);
        } else if (fr == CONC_EFAILED) {
            int code = 0;
            const char *msg = NULL;
            conc_future_exception(pr->f, 0, &code, &msg);
            reply_failure(c, code, msg);
        } else {
            reply(c, fr);
        }
        return;
    }
    const conc_results_t *res = NULL;
    /* the callback runs just before the result is marked ready */
    int mrc = conc_map_result_get(pr->mr, CONC_FOREVER, &res);
    if (mrc == CONC_EFAILED) {
        int code = 0;
        const char *msg = NULL;
        conc_map_result_exception(pr->mr, &code, &msg);
        reply_failure(c, code, msg);
    } else if (mrc) {
        reply(c, mrc);
    } else {
        conc__wbuf_t *w = &c->out;
        size_t cnt = conc_results_len(res);
        reply(c, 0);
        conc__wb_u32(w, (uint32_t)cnt);
        for (size_t i = 0; i < cnt && !w->oom && w->len <= CONC__MGR_MAX_FRAME; i++) {
            const void *d = NULL;
            size_t dn = 0;
            conc_results_item(res, i, &d, &dn);
            conc__wb_bytes(w, d, dn);
        }
        if (w->len > 4 + CONC__MGR_MAX_FRAME)
            reply(c, CONC_ERANGE);
    }
}

static void pool_forget_all(conc__mgr_sync_t *sy)
{
    while (sy->results) {
        presult_t *pr = sy->results;
        sy->results = pr->next;
        presult_free(pr);
    }
}

static presult_t **pool_find(conc__mgr_sync_t *sy, uint64_t token)
{
    presult_t **pp = &sy->results;
    while (*pp && (*pp)->token != token)
        pp = &(*pp)->next;
    return pp;
}

static int do_pool(conc__mgr_conn_t *c, conc__mgr_sync_t *sy, conc__rbuf_t *r, int op)
{
    int proto = 0;
    presult_t *pr = NULL;
    if (op == CONC__MOP_P_GET || op == CONC__MOP_P_READY || op == CONC__MOP_P_FORGET) {
        uint64_t token = conc__rb_u64(r);
        double t = op == CONC__MOP_P_GET ? conc__rb_f64(r) : 0;
        int64_t deadline = 0;
        if (!conc__rb_done(r))
            return bad(c);
        if (op == CONC__MOP_P_GET && conc__deadline(t, &deadline))
            return reply(c, CONC_EINVAL);
        pthread_mutex_lock(&sy->mu);
        presult_t **pp = pool_find(sy, token);
        if (!*pp || !token) {
            reply(c, CONC_EINVAL); /* no such result (forgotten, or never made) */
        } else if (op == CONC__MOP_P_READY) {
            reply(c, 0);
            conc__wb_u8(&c->out, (uint8_t)atomic_load(&(*pp)->g->fired));
        } else if (op == CONC__MOP_P_FORGET) {
            pr = *pp;
            *pp = pr->next;
            sy->nresults--;
            reply(c, 0);
        } else {
            presult_t *x = *pp;
            int rc = pool_wait(sy, c, x, deadline);
            /* the record may have been forgotten meanwhile: look again */
            presult_t **again = pool_find(sy, token);
            if (rc == 0 && *again == x)
                pool_reply(c, x);
            else
                reply(c, rc ? rc : CONC_EINVAL);
        }
        pthread_mutex_unlock(&sy->mu);
        presult_free(pr);
        return 0;
    }
    bool map = op == CONC__MOP_P_MAP || op == CONC__MOP_P_MAP_ASYNC;
    bool async = op == CONC__MOP_P_APPLY_ASYNC || op == CONC__MOP_P_MAP_ASYNC;
    pthread_mutex_lock(&sy->mu);
    if (async && sy->nresults >= MAX_RESULTS) {
        /* a bound for clients that never free their results */
        pthread_mutex_unlock(&sy->mu);
        return reply(c, CONC_EAGAIN);
    }
    if (pool_submit(c, sy, r, map, &pr, &proto) != 0) {
        pthread_mutex_unlock(&sy->mu);
        return proto;
    }
    if (async) {
        pr->token = ++sy->next_token;
        pr->next = sy->results;
        sy->results = pr;
        sy->nresults++;
        reply(c, 0);
        conc__wb_u64(&c->out, pr->token);
        pthread_mutex_unlock(&sy->mu);
        return 0;
    }
    int rc = pool_wait(sy, c, pr, CONC__NO_DEADLINE);
    pthread_mutex_unlock(&sy->mu);
    if (rc)
        reply(c, rc);
    else
        pool_reply(c, pr);
    presult_free(pr);
    return 0;
}

int conc__mgr_sync_dispatch(conc__mgr_conn_t *c, conc__mgr_sync_t *sy, conc__rbuf_t *r, int op)
{
    if (!sy)
        return bad(c);
    switch (sy->kind) {
    case CONC__MK_EVENT:
        if (op >= CONC__MOP_E_SET && op <= CONC__MOP_E_WAIT)
            return do_event(c, sy, r, op);
        break;
    case CONC__MK_SEM:
    case CONC__MK_BSEM:
        if (op >= CONC__MOP_S_ACQUIRE && op <= CONC__MOP_S_VALUE)
            return do_sem(c, sy, r, op);
        break;
    case CONC__MK_COND:
        if (op >= CONC__MOP_C_ACQUIRE && op <= CONC__MOP_C_NOTIFY_ALL)
            return do_cond(c, sy, r, op);
        break;
    case CONC__MK_BARRIER:
        if (op >= CONC__MOP_B_WAIT && op <= CONC__MOP_B_PARTIES)
            return do_barrier(c, sy, r, op);
        break;
    case CONC__MK_POOL:
        if (op >= CONC__MOP_P_APPLY && op <= CONC__MOP_P_FORGET)
            return do_pool(c, sy, r, op);
        break;
    }
    return bad(c); /* an op for another kind of object */
}
