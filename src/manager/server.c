/*
 * server.c — the manager's objects and the request dispatcher (the
 * connections, the handshakes and the server's life are in listener.c).
 *
 * Objects. Every object has an id (a counter) and, optionally, a name;
 * two small chained hash tables find them. An object's reference count is
 * the number of connections bound to it, plus one for its name (named
 * objects live until the server ends). The tables and the counts are
 * guarded by the server lock; an object's contents by its own lock, so
 * clients of different objects never contend. Locking order: an object's
 * lock is never held while taking the server lock.
 *
 * Blocking requests (Lock.acquire, Queue.get on an empty queue, Queue.put
 * on a full one) sleep in one ppoll on an eventfd of their own (on the
 * object's list of waiters) and on the client's socket (POLLRDHUP), up to
 * their deadline: obj_notify writes every waiter's eventfd, a client that
 * goes away wakes its own thread at once, shutdown notifies every object.
 * (Without an eventfd — out of descriptors — they nap 50 ms at a time.)
 * Every change a waiter may wait for must go through obj_notify.
 *
 * A Lock held by a connection that closed is released. The holder's
 * thread does it when it sees the EOF, but that is asynchronous; so every
 * request on the lock (and every slice of a waiting acquire) first looks
 * at the holder's socket. The kernel closes a process's sockets before its
 * death can be seen by wait/join, so once a holder's exit is observable,
 * any later request finds the lock released: deterministically, not by
 * timing.
 *
 * A request that does not parse exactly, or an unknown op, gets an error
 * reply and the caller closes that connection only. A Unix-socket
 * connection may move to a shared-memory channel (internal.h);
 * conc__mgr_chan_serve copies each request out of the segment before it is
 * parsed: nothing the client writes there is trusted.
 *
 * Dicts keep insertion order (like Python's): entries are chained in the
 * hash buckets and on a doubly linked list in insertion order. Lists are
 * arrays; queues are rings.
 *
 * Nested proxies (objects.h, server_more.c): a dict or list item may be a
 * reference to another object, counted in its refs. References an item
 * loses under an object's lock (overwritten, deleted, cleared) are dropped
 * after that lock is released; freeing an object drops the references it
 * holds through obj_unref's worklist (no recursion: a chain of any depth).
 * refs is atomic: changed under the server lock, or raised under a
 * container's lock while the container's item holds one (BIND_ITEM).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/time.h"
#include "manager/objects.h"
#include "manager/sync.h"

#define NBUCKETS CONC__MGR_NBUCKETS
#define SLICE_NS 50000000LL     /* a wait without an eventfd naps this long */
#define RECHECK_NS 1000000000LL /* and with one, looks again at least this often */
#define MAX_NAME 4096

typedef struct owaiter {
    struct owaiter *next;
    int efd;
} owaiter_t;

/* With o->mu held: wake every request waiting on o (the condition too). */
static void obj_notify(obj_t *o)
{
    conc_cond_notify_all(&o->cv);
    for (owaiter_t *w = o->waiters; w; w = w->next)
        if (w->efd >= 0) {
            uint64_t one = 1;
            ssize_t r = write(w->efd, &one, sizeof one);
            (void)r;
        }
}

/* --------------------------------------------------------------- items */

static int item_set(item_t *it, const uint8_t *p, size_t n)
{
    uint8_t *q = malloc(n ? n : 1);
    if (!q)
        return CONC_ENOMEM;
    if (n)
        memcpy(q, p, n);
    it->p = q;
    it->n = n;
    it->ref = NULL;
    return 0;
}

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

uint64_t conc__mgr_hash(const uint8_t *p, size_t n) { return hash_bytes(p, n); }

/* ---------------------------------------------------------------- dict */

dent_t **conc__mgr_dict_slot(obj_t *o, const uint8_t *k, size_t kn, uint64_t h)
{
    dent_t **pp = &o->b[h & (o->nb - 1)];
    for (; *pp; pp = &(*pp)->chain)
        if ((*pp)->h == h && (*pp)->klen == kn && memcmp((*pp)->key, k, kn) == 0)
            break;
    return pp;
}

static int dict_grow(obj_t *o)
{
    size_t nb = o->nb ? o->nb * 2 : 16;
    dent_t **b = calloc(nb, sizeof *b);
    if (!b)
        return CONC_ENOMEM;
    for (dent_t *e = o->head; e; e = e->next) {
        dent_t **pp = &b[e->h & (nb - 1)];
        e->chain = *pp;
        *pp = e;
    }
    free(o->b);
    o->b = b;
    o->nb = nb;
    return 0;
}

#define dict_slot conc__mgr_dict_slot
#define dict_unlink conc__mgr_dict_unlink

void conc__mgr_dict_unlink(obj_t *o, dent_t **pp)
{
    dent_t *e = *pp;
    *pp = e->chain;
    if (e->prev)
        e->prev->next = e->next;
    else
        o->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        o->tail = e->prev;
    o->n--;
}

int conc__mgr_dict_put(obj_t *o, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn,
                       obj_t *ref, obj_t **old)
{
    *old = NULL;
    if (o->n >= o->nb - o->nb / 4 || !o->nb) {
        int rc = dict_grow(o);
        if (rc)
            return rc;
    }
    uint64_t h = hash_bytes(k, kn);
    dent_t **pp = dict_slot(o, k, kn, h);
    item_t it = {NULL, 0, ref};
    int rc = ref ? 0 : item_set(&it, v, vn);
    if (rc)
        return rc;
    if (*pp) {
        free((*pp)->v.p);
        *old = (*pp)->v.ref;
        (*pp)->v = it;
        return 0;
    }
    dent_t *e = malloc(sizeof *e + kn);
    if (!e) {
        free(it.p);
        return CONC_ENOMEM;
    }
    e->h = h;
    e->klen = kn;
    memcpy(e->key, k, kn);
    e->v = it;
    e->chain = NULL;
    *pp = e;
    e->next = NULL;
    e->prev = o->tail;
    if (o->tail)
        o->tail->next = e;
    else
        o->head = e;
    o->tail = e;
    o->n++;
    return 0;
}

static int dict_set(obj_t *o, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn, obj_t **old)
{
    return conc__mgr_dict_put(o, k, kn, v, vn, NULL, old);
}

/* Free every entry (bytes only: the references an object holds are
 * dropped by obj_unref's worklist, or by the caller of dict_detach). */
static void dict_clear(obj_t *o)
{
    for (dent_t *e = o->head, *nx; e; e = nx) {
        nx = e->next;
        free(e->v.p);
        free(e);
    }
    o->head = o->tail = NULL;
    o->n = 0;
    if (o->b)
        memset(o->b, 0, o->nb * sizeof *o->b);
}

/* ---------------------------------------------------------- list/queue */

static int vec_reserve(obj_t *o, size_t more)
{
    if (more <= o->cap - o->len)
        return 0;
    if (more > SIZE_MAX / sizeof(item_t) / 2 - o->len)
        return CONC_ENOMEM;
    size_t cap = o->cap ? o->cap : 8;
    while (cap - o->len < more)
        cap *= 2;
    item_t *v = malloc(cap * sizeof *v);
    if (!v)
        return CONC_ENOMEM;
    for (size_t i = 0; i < o->len; i++) /* unwrap the ring */
        v[i] = o->v[(o->first + i) % o->cap];
    free(o->v);
    o->v = v;
    o->cap = cap;
    o->first = 0;
    return 0;
}

static item_t *vec_at(obj_t *o, size_t i) { return &o->v[(o->first + i) % o->cap]; }

int conc__mgr_vec_reserve(obj_t *o, size_t more) { return vec_reserve(o, more); }
item_t *conc__mgr_vec_at(obj_t *o, size_t i) { return vec_at(o, i); }

/* With o->mu held: take every item out (the dict's chain in *chain, the
 * list's array in *v, *n); the caller frees them after unlocking
 * (items_drop), since they may hold references. */
static void dict_detach(obj_t *o, dent_t **chain)
{
    *chain = o->head;
    o->head = o->tail = NULL;
    o->n = 0;
    if (o->b)
        memset(o->b, 0, o->nb * sizeof *o->b);
}

typedef struct ring {
    item_t *v;
    size_t len, cap, first;
} ring_t;

static void vec_detach(obj_t *o, ring_t *r)
{
    r->v = o->v;
    r->len = o->len;
    r->cap = o->cap;
    r->first = o->first;
    o->v = NULL;
    o->len = o->cap = o->first = 0;
}

static void vec_clear(obj_t *o)
{
    for (size_t i = 0; i < o->len; i++)
        free(vec_at(o, i)->p);
    o->len = 0;
    o->first = 0;
}

/* Python index -> position; false when out of range. */
static bool norm_index(obj_t *o, int64_t idx, size_t *pos)
{
    if (idx < 0) {
        if ((uint64_t)-(idx + 1) >= o->len) /* -(idx+1) avoids overflow at INT64_MIN */
            return false;
        *pos = o->len - (size_t)-(idx + 1) - 1;
        return true;
    }
    if ((uint64_t)idx >= o->len)
        return false;
    *pos = (size_t)idx;
    return true;
}

/* ------------------------------------------------------------- objects */

static void obj_free(obj_t *o)
{
    conc__mgr_fini_obj(o);
    dict_clear(o);
    free(o->b);
    vec_clear(o);
    free(o->v);
    conc__mgr_sync_free(o->sync);
    free(o->name);
    free(o);
}

static obj_t *obj_by_id(conc__mgr_server_t *s, uint64_t id)
{
    obj_t *o = s->ids[id % NBUCKETS];
    while (o && o->id != id)
        o = o->id_next;
    return o;
}

/* With the server lock: one reference less; at zero the object leaves the
 * id table and goes on *work (to be freed by obj_unref's loop). */
static void obj_dec(conc__mgr_server_t *s, obj_t *o, obj_t **work)
{
    if (__atomic_sub_fetch(&o->refs, 1, __ATOMIC_ACQ_REL))
        return;
    obj_t **pp = &s->ids[o->id % NBUCKETS];
    while (*pp != o)
        pp = &(*pp)->id_next;
    *pp = o->id_next;
    o->free_next = *work; /* anonymous: named ones keep a reference */
    *work = o;
}

/* Server lock held. Freeing an object drops the references its items hold:
 * an explicit worklist, so a long chain of nested containers cannot
 * overflow the stack. Nothing else can reach an object at zero. */
static void obj_unref(conc__mgr_server_t *s, obj_t *o)
{
    obj_t *work = NULL;
    obj_dec(s, o, &work);
    while (work) {
        obj_t *x = work;
        work = x->free_next;
        for (dent_t *e = x->head; e; e = e->next)
            if (e->v.ref)
                obj_dec(s, e->v.ref, &work);
        for (size_t i = 0; i < x->len; i++)
            if (x->v[(x->first + i) % x->cap].ref)
                obj_dec(s, x->v[(x->first + i) % x->cap].ref, &work);
        obj_free(x);
    }
}

void conc__mgr_unref(conc__mgr_server_t *s, obj_t *o)
{
    if (!o)
        return;
    conc_lock_acquire(&s->mu, true, CONC_FOREVER);
    obj_unref(s, o);
    conc_lock_release(&s->mu);
}

obj_t *conc__mgr_obj_ref(conc__mgr_server_t *s, uint64_t id)
{
    conc_lock_acquire(&s->mu, true, CONC_FOREVER);
    obj_t *o = obj_by_id(s, id);
    if (o)
        __atomic_add_fetch(&o->refs, 1, __ATOMIC_RELAXED);
    conc_lock_release(&s->mu);
    return o;
}

/* Free detached items (no object lock held): bytes, and the references. */
static void chain_drop(conc__mgr_server_t *s, dent_t *e)
{
    bool refs = false;
    for (dent_t *x = e; x; x = x->next)
        refs |= x->v.ref != NULL;
    if (refs)
        conc_lock_acquire(&s->mu, true, CONC_FOREVER);
    for (dent_t *nx; e; e = nx) {
        nx = e->next;
        if (e->v.ref)
            obj_unref(s, e->v.ref);
        free(e->v.p);
        free(e);
    }
    if (refs)
        conc_lock_release(&s->mu);
}

static void ring_drop(conc__mgr_server_t *s, ring_t *r)
{
    bool refs = false;
    for (size_t i = 0; i < r->len; i++)
        refs |= r->v[(r->first + i) % r->cap].ref != NULL;
    if (refs) /* the server lock only when there are references to drop */
        conc_lock_acquire(&s->mu, true, CONC_FOREVER);
    for (size_t i = 0; i < r->len; i++) {
        item_t *it = &r->v[(r->first + i) % r->cap];
        if (it->ref)
            obj_unref(s, it->ref);
        free(it->p);
    }
    if (refs)
        conc_lock_release(&s->mu);
    free(r->v);
}

/* Find or create; returns the object with a reference for the caller. */
static int obj_get(conc__mgr_server_t *s, int kind, long maxsize, const uint8_t *name,
                   size_t nlen, const uint8_t *init, size_t ilen, obj_t **out)
{
    uint64_t h = hash_bytes(name, nlen);
    int rc = conc__mgr_init_check(kind, init, ilen);
    if (rc)
        return rc;
    conc_lock_acquire(&s->mu, true, CONC_FOREVER);
    if (nlen) {
        for (obj_t *o = s->names[h % NBUCKETS]; o; o = o->name_next)
            if (o->nlen == nlen && memcmp(o->name, name, nlen) == 0) {
                if (o->kind != kind || !conc__mgr_init_matches(o, init, ilen))
                    rc = CONC_EINVAL;
                else
                    __atomic_add_fetch(&o->refs, 1, __ATOMIC_RELAXED), *out = o;
                conc_lock_release(&s->mu);
                return rc;
            }
    }
    obj_t *o = calloc(1, sizeof *o);
    if (!o || (nlen && !(o->name = malloc(nlen)))) {
        free(o);
        conc_lock_release(&s->mu);
        return CONC_ENOMEM;
    }
    o->id = ++s->next_id;
    o->kind = kind;
    o->maxsize = maxsize;
    o->refs = nlen ? 2 : 1;
    conc_lock_init(&o->mu);
    conc_cond_init(&o->cv, &o->mu);
    o->id_next = s->ids[o->id % NBUCKETS];
    s->ids[o->id % NBUCKETS] = o;
    if (nlen) {
        memcpy(o->name, name, nlen);
        o->nlen = nlen;
        o->name_next = s->names[h % NBUCKETS];
        s->names[h % NBUCKETS] = o;
    }
    /* A registered type's instance is made under its own lock, taken
     * before the object can be found: nobody uses it half made (create
     * runs user code: not under the server lock). */
    conc__mgr_init_pre(o, kind, init, ilen);
    conc_lock_acquire(&o->mu, true, CONC_FOREVER);
    conc_lock_release(&s->mu);
    rc = conc__mgr_init_run(o, init, ilen);
    conc_lock_release(&o->mu);
    if (rc) { /* forget its name too, so that a later make may try again */
        conc_lock_acquire(&s->mu, true, CONC_FOREVER);
        if (nlen) {
            obj_t **pp = &s->names[h % NBUCKETS];
            while (*pp != o)
                pp = &(*pp)->name_next;
            *pp = o->name_next;
            obj_unref(s, o);
        }
        obj_unref(s, o);
        conc_lock_release(&s->mu);
        return rc;
    }
    *out = o;
    return 0;
}

/* --------------------------------------------------------- connections */

int conc__mgr_server_new(conc__mgr_server_t **out, const void *key, size_t keylen, bool noblock)
{
    conc__mgr_server_t *s = calloc(1, sizeof *s);
    if (!s || !(s->key = malloc(keylen ? keylen : 1))) {
        free(s);
        return CONC_ENOMEM;
    }
    if (keylen)
        memcpy(s->key, key, keylen);
    s->keylen = keylen;
    s->noblock = noblock;
    s->wake[0] = s->wake[1] = -1;
    conc_lock_init(&s->mu);
    *out = s;
    return 0;
}

void conc__mgr_server_free(conc__mgr_server_t *s)
{
    if (!s)
        return;
    for (int i = 0; i < NBUCKETS; i++)
        for (obj_t *o = s->ids[i], *nx; o; o = nx) {
            nx = o->id_next;
            obj_free(o);
        }
    if (s->wake[0] >= 0) {
        close(s->wake[0]);
        close(s->wake[1]);
    }
    free(s->key);
    free(s);
}

conc__mgr_conn_t *conc__mgr_conn_new(conc__mgr_server_t *s, int fd)
{
    conc__mgr_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->s = s;
    c->fd = fd;
    return c;
}

static void unbind(conc__mgr_conn_t *c)
{
    obj_t *o = c->bound;
    if (!o)
        return;
    c->bound = NULL;
    if (o->kind == CONC__MK_LOCK) {
        conc_lock_acquire(&o->mu, true, CONC_FOREVER);
        if (o->held && o->holder == c) { /* its holder is gone: release it */
            o->held = false;
            o->holder = NULL;
            obj_notify(o);
        }
        conc_lock_release(&o->mu);
    }
    if (o->sync)
        conc__mgr_sync_leave(o->sync, c);
    conc_lock_acquire(&c->s->mu, true, CONC_FOREVER);
    obj_unref(c->s, o);
    conc_lock_release(&c->s->mu);
}

void conc__mgr_conn_free(conc__mgr_conn_t *c)
{
    if (!c)
        return;
    unbind(c);
    if (c->chan)
        munmap(c->chan, CONC__MGR_CHAN_SIZE);
    conc__wb_free(&c->out);
    free(c->in);
    free(c);
}

/* ------------------------------------------------------------- waiting */

static bool peer_gone(int fd)
{
    if (fd < 0)
        return false;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* With o->mu held: a Lock whose holder's connection has closed is
 * released now (see the top of the file). The holder's record stays valid
 * while it is the holder: unbind() clears it under o->mu before the
 * connection is freed and its socket closed. */
static void lock_reclaim(obj_t *o)
{
    if (o->kind == CONC__MK_LOCK && o->held && o->holder && peer_gone(o->holder->fd)) {
        o->held = false;
        o->holder = NULL;
        obj_notify(o);
    }
}

/* With o->mu held: wait one slice for a change. 0 (look again),
 * CONC_ETIMEDOUT, CONC_ESHUTDOWN, CONC_EEOF (the client left). */
static int wait_slice(conc__mgr_conn_t *c, obj_t *o, int64_t deadline)
{
    int64_t now = conc__now_ns();
    if (now >= deadline || c->s->noblock)
        return CONC_ETIMEDOUT;
    if (__atomic_load_n(&c->s->stopping, __ATOMIC_ACQUIRE))
        return CONC_ESHUTDOWN;
    if (peer_gone(c->fd))
        return CONC_EEOF;
    owaiter_t w = {o->waiters, eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
    o->waiters = &w;
    int64_t left = deadline - now;
    if (left > (w.efd < 0 ? SLICE_NS : RECHECK_NS))
        left = w.efd < 0 ? SLICE_NS : RECHECK_NS;
    struct pollfd p[2] = {{.fd = c->fd, .events = POLLRDHUP}, {.fd = w.efd, .events = POLLIN}};
    struct timespec ts = {(time_t)(left / 1000000000), (long)(left % 1000000000)};
    conc_lock_release(&o->mu);
    ppoll(p, 2, &ts, NULL);
    conc_lock_acquire(&o->mu, true, CONC_FOREVER);
    owaiter_t **pp = &o->waiters;
    while (*pp != &w)
        pp = &(*pp)->next;
    *pp = w.next;
    if (w.efd >= 0)
        close(w.efd);
    lock_reclaim(o);
    return 0;
}

/* ------------------------------------------------------------ dispatch */

static int reply_code(conc__mgr_conn_t *c, int code)
{
    conc__wb_begin_frame(&c->out);
    conc__wb_u32(&c->out, (uint32_t)code);
    return 0;
}

void conc__mgr_reply_code(conc__mgr_conn_t *c, int code) { reply_code(c, code); }

void conc__mgr_wake_objects(conc__mgr_server_t *s)
{
    conc_lock_acquire(&s->mu, true, CONC_FOREVER);
    for (int i = 0; i < NBUCKETS; i++)
        for (obj_t *o = s->ids[i]; o; o = o->id_next) {
            conc_lock_acquire(&o->mu, true, CONC_FOREVER);
            obj_notify(o);
            conc_lock_release(&o->mu);
            if (o->sync)
                conc__mgr_sync_wake(o->sync);
        }
    conc_lock_release(&s->mu);
}

static int bad(conc__mgr_conn_t *c)
{
    reply_code(c, CONC_EINVAL);
    return CONC_EINVAL;
}

int conc__mgr_bad(conc__mgr_conn_t *c) { return bad(c); }

static bool kind_ok(int kind)
{
    return (kind >= CONC__MK_DICT && kind <= CONC__MK_QUEUE) || kind == CONC__MK_NAMESPACE ||
           kind == CONC__MK_VALUE || kind == CONC__MK_USER;
}

static int do_bind(conc__mgr_conn_t *c, conc__rbuf_t *r, int op)
{
    obj_t *o = NULL;
    int rc;
    if (op == CONC__MOP_BIND_NEW) {
        uint8_t kind = conc__rb_u8(r);
        uint64_t maxsize = conc__rb_u64(r);
        size_t nlen, ilen = 0;
        const uint8_t *name = conc__rb_bytes(r, &nlen), *init = NULL;
        if (!r->bad && r->p != r->end) /* Value and registered types: their init bytes */
            init = conc__rb_bytes(r, &ilen);
        if (!conc__rb_done(r) || !kind_ok(kind))
            return bad(c);
        if (nlen > MAX_NAME)
            return reply_code(c, CONC_EINVAL);
        int64_t ms = (int64_t)maxsize;
        rc = obj_get(c->s, kind, ms > LONG_MAX ? LONG_MAX : ms < 0 ? 0 : (long)ms, name, nlen,
                     init, ilen, &o);
    } else if (op == CONC__MOP_BIND_ITEM) {
        rc = conc__mgr_resolve_item(c->s, r, &o);
        if (rc == CONC_EINVAL && r->bad)
            return bad(c);
    } else {
        uint64_t id = conc__rb_u64(r);
        if (!conc__rb_done(r))
            return bad(c);
        o = conc__mgr_obj_ref(c->s, id);
        rc = o ? 0 : CONC_EINVAL;
    }
    if (rc)
        return reply_code(c, rc);
    unbind(c);
    c->bound = o;
    reply_code(c, 0);
    conc__wb_u64(&c->out, o->id);
    conc__wb_u8(&c->out, (uint8_t)o->kind);
    return 0;
}

int conc__mgr_bind_sync_obj(conc__mgr_conn_t *c, int kind, const uint8_t *name, size_t nlen,
                            conc__mgr_sync_t *sy, bool *used, uint64_t *id)
{
    obj_t *o = NULL;
    *used = false;
    int rc = obj_get(c->s, kind, 0, name, nlen, NULL, 0, &o);
    if (rc)
        return rc;
    conc_lock_acquire(&c->s->mu, true, CONC_FOREVER);
    if (!o->sync) { /* new (two first binders of one name race here: one wins) */
        o->sync = sy;
        *used = true;
    }
    conc_lock_release(&c->s->mu);
    unbind(c);
    c->bound = o;
    *id = o->id;
    return 0;
}

static int do_dict(conc__mgr_conn_t *c, obj_t *o, conc__rbuf_t *r, int op)
{
    size_t kn = 0, vn = 0;
    const uint8_t *k = NULL, *v = NULL;
    if (op >= CONC__MOP_D_SET && op <= CONC__MOP_D_HAS)
        k = conc__rb_bytes(r, &kn);
    if (op == CONC__MOP_D_SET)
        v = conc__rb_bytes(r, &vn);
    if (!conc__rb_done(r))
        return bad(c);
    conc__wbuf_t *w = &c->out;
    int rc = 0;
    obj_t *drop = NULL;   /* a reference to drop once o->mu is released */
    dent_t *chain = NULL; /* entries taken out by clear */
    conc_lock_acquire(&o->mu, true, CONC_FOREVER);
    switch (op) {
    case CONC__MOP_D_SET:
        rc = dict_set(o, k, kn, v, vn, &drop);
        reply_code(c, rc);
        break;
    case CONC__MOP_D_GET:
    case CONC__MOP_D_POP:
    case CONC__MOP_D_DEL:
    case CONC__MOP_D_HAS: {
        dent_t **pp = o->nb ? dict_slot(o, k, kn, hash_bytes(k, kn)) : NULL;
        dent_t *e = pp ? *pp : NULL;
        if (op == CONC__MOP_D_HAS) {
            reply_code(c, 0);
            conc__wb_u8(w, e != NULL);
            break;
        }
        if (!e) {
            reply_code(c, CONC_EKEY);
            break;
        }
        if (e->v.ref && op != CONC__MOP_D_DEL) {
            reply_code(c, CONC_EINVAL); /* a nested proxy: read it with get_proxy */
            break;
        }
        reply_code(c, 0);
        if (op != CONC__MOP_D_DEL)
            conc__wb_bytes(w, e->v.p, e->v.n);
        if (op != CONC__MOP_D_GET) {
            dict_unlink(o, pp);
            drop = e->v.ref;
            free(e->v.p);
            free(e);
        }
        break;
    }
    case CONC__MOP_D_LEN:
        reply_code(c, 0);
        conc__wb_u64(w, o->n);
        break;
    case CONC__MOP_D_KEYS:
        reply_code(c, 0);
        conc__wb_u64(w, o->n);
        for (dent_t *e = o->head; e && !w->oom && w->len <= CONC__MGR_MAX_FRAME; e = e->next)
            conc__wb_bytes(w, e->key, e->klen);
        if (w->len > 4 + CONC__MGR_MAX_FRAME)
            reply_code(c, CONC_ERANGE);
        break;
    case CONC__MOP_D_CLEAR:
        dict_detach(o, &chain);
        reply_code(c, 0);
        break;
    }
    conc_lock_release(&o->mu);
    conc__mgr_unref(c->s, drop);
    chain_drop(c->s, chain);
    return 0;
}

static int do_list(conc__mgr_conn_t *c, obj_t *o, conc__rbuf_t *r, int op)
{
    int64_t idx = 0;
    size_t vn = 0;
    const uint8_t *v = NULL;
    uint32_t count = 0;
    const uint8_t *items = NULL;
    if (op == CONC__MOP_L_GET || op == CONC__MOP_L_SET || op == CONC__MOP_L_POP || op == CONC__MOP_L_INSERT)
        idx = (int64_t)conc__rb_u64(r);
    if (op == CONC__MOP_L_APPEND || op == CONC__MOP_L_SET || op == CONC__MOP_L_INSERT || op == CONC__MOP_L_INDEX ||
        op == CONC__MOP_L_COUNT || op == CONC__MOP_L_REMOVE)
        v = conc__rb_bytes(r, &vn);
    if (op == CONC__MOP_L_EXTEND) { /* validate every item before touching the list */
        count = conc__rb_u32(r);
        items = r->p;
        for (uint32_t i = 0; i < count && !r->bad; i++)
            conc__rb_bytes(r, &vn);
    }
    if (!conc__rb_done(r))
        return bad(c);
    conc__wbuf_t *w = &c->out;
    size_t pos = 0;
    int rc = 0;
    obj_t *drop = NULL;          /* a reference to drop once o->mu is released */
    ring_t cleared = {0};        /* the items a clear took out */
    conc_lock_acquire(&o->mu, true, CONC_FOREVER);
    switch (op) {
    case CONC__MOP_L_APPEND:
        if (!(rc = vec_reserve(o, 1)) && !(rc = item_set(vec_at(o, o->len), v, vn)))
            o->len++;
        reply_code(c, rc);
        break;
    case CONC__MOP_L_EXTEND: {
        conc__rbuf_t rr = {items, r->end, false};
        rc = vec_reserve(o, count);
        size_t done = 0;
        for (; !rc && done < count; done++) {
            v = conc__rb_bytes(&rr, &vn);
            rc = item_set(vec_at(o, o->len + done), v, vn);
            if (rc)
                break;
        }
        if (rc)
            while (done--)
                free(vec_at(o, o->len + done)->p);
        else
            o->len += count;
        reply_code(c, rc);
        break;
    }
    case CONC__MOP_L_GET:
        if (!norm_index(o, idx, &pos)) {
            reply_code(c, CONC_ERANGE);
            break;
        }
        if (vec_at(o, pos)->ref) {
            reply_code(c, CONC_EINVAL); /* a nested proxy: read it with get_proxy */
            break;
        }
        reply_code(c, 0);
        conc__wb_bytes(w, vec_at(o, pos)->p, vec_at(o, pos)->n);
        break;
    case CONC__MOP_L_SET: {
        item_t it;
        if (!norm_index(o, idx, &pos))
            rc = CONC_ERANGE;
        else if (!(rc = item_set(&it, v, vn))) {
            free(vec_at(o, pos)->p);
            drop = vec_at(o, pos)->ref;
            *vec_at(o, pos) = it;
        }
        reply_code(c, rc);
        break;
    }
    case CONC__MOP_L_POP: {
        if (!norm_index(o, idx, &pos)) {
            reply_code(c, CONC_ERANGE);
            break;
        }
        if (vec_at(o, pos)->ref) {
            reply_code(c, CONC_EINVAL);
            break;
        }
        item_t it = *vec_at(o, pos);
        for (size_t i = pos; i + 1 < o->len; i++)
            *vec_at(o, i) = *vec_at(o, i + 1);
        o->len--;
        reply_code(c, 0);
        conc__wb_bytes(w, it.p, it.n);
        free(it.p);
        break;
    }
    case CONC__MOP_L_LEN:
        reply_code(c, 0);
        conc__wb_u64(w, o->len);
        break;
    case CONC__MOP_L_CLEAR:
        vec_detach(o, &cleared);
        reply_code(c, 0);
        break;
    case CONC__MOP_L_INSERT: {
        /* list.insert: the index is clamped to [0, len] */
        if (idx < 0)
            pos = (uint64_t)-(idx + 1) >= o->len ? 0 : o->len - (size_t)-(idx + 1) - 1;
        else
            pos = (uint64_t)idx > o->len ? o->len : (size_t)idx;
        item_t it;
        if (!(rc = vec_reserve(o, 1)) && !(rc = item_set(&it, v, vn))) {
            for (size_t i = o->len; i > pos; i--)
                *vec_at(o, i) = *vec_at(o, i - 1);
            *vec_at(o, pos) = it;
            o->len++;
        }
        reply_code(c, rc);
        break;
    }
    case CONC__MOP_L_INDEX:
    case CONC__MOP_L_COUNT:
    case CONC__MOP_L_REMOVE: {
        uint64_t count = 0;
        bool found = false;
        for (size_t i = 0; i < o->len && !found; i++) {
            item_t *it = vec_at(o, i);
            if (it->ref || it->n != vn || (vn && memcmp(it->p, v, vn) != 0))
                continue; /* a nested proxy equals no bytes */
            count++;
            if (op != CONC__MOP_L_COUNT) {
                found = true;
                pos = i;
            }
        }
        if (op == CONC__MOP_L_COUNT) {
            reply_code(c, 0);
            conc__wb_u64(w, count);
        } else if (!found) {
            reply_code(c, CONC_EEMPTY); /* ValueError: x not in list (absent, as d[k]) */
        } else if (op == CONC__MOP_L_INDEX) {
            reply_code(c, 0);
            conc__wb_u64(w, pos);
        } else {
            free(vec_at(o, pos)->p);
            for (size_t i = pos; i + 1 < o->len; i++)
                *vec_at(o, i) = *vec_at(o, i + 1);
            o->len--;
            reply_code(c, 0);
        }
        break;
    }
    case CONC__MOP_L_REVERSE:
        for (size_t i = 0, j = o->len; i + 1 < j; i++, j--) {
            item_t t = *vec_at(o, i);
            *vec_at(o, i) = *vec_at(o, j - 1);
            *vec_at(o, j - 1) = t;
        }
        reply_code(c, 0);
        break;
    }
    conc_lock_release(&o->mu);
    conc__mgr_unref(c->s, drop);
    if (cleared.v)
        ring_drop(c->s, &cleared);
    return 0;
}

static int do_lock(conc__mgr_conn_t *c, obj_t *o, conc__rbuf_t *r, int op)
{
    int64_t deadline = 0;
    int rc = 0;
    if (op == CONC__MOP_K_ACQUIRE) {
        uint8_t blocking = conc__rb_u8(r);
        double timeout = conc__rb_f64(r);
        if (!conc__rb_done(r) || blocking > 1)
            return bad(c);
        if (conc__acquire_deadline(blocking, timeout, &deadline) != 0)
            return reply_code(c, CONC_EINVAL);
    } else if (!conc__rb_done(r)) {
        return bad(c);
    }
    conc_lock_acquire(&o->mu, true, CONC_FOREVER);
    lock_reclaim(o);
    switch (op) {
    case CONC__MOP_K_ACQUIRE:
        while (o->held && (rc = wait_slice(c, o, deadline)) == 0) {
        }
        if (!o->held) {
            o->held = true;
            o->holder = c;
            rc = 0;
        }
        reply_code(c, rc);
        break;
    case CONC__MOP_K_RELEASE:
        if (!o->held) {
            rc = CONC_EPERM;
        } else {
            o->held = false;
            o->holder = NULL;
            obj_notify(o);
        }
        reply_code(c, rc);
        break;
    case CONC__MOP_K_LOCKED:
        reply_code(c, 0);
        conc__wb_u8(&c->out, o->held);
        break;
    }
    conc_lock_release(&o->mu);
    return 0;
}

static int do_queue(conc__mgr_conn_t *c, obj_t *o, conc__rbuf_t *r, int op)
{
    int64_t deadline = 0;
    size_t vn = 0;
    const uint8_t *v = NULL;
    int rc = 0;
    if (op == CONC__MOP_Q_PUT || op == CONC__MOP_Q_GET) {
        uint8_t block = conc__rb_u8(r);
        double timeout = conc__rb_f64(r);
        if (op == CONC__MOP_Q_PUT)
            v = conc__rb_bytes(r, &vn);
        if (!conc__rb_done(r) || block > 1)
            return bad(c);
        /* queue.Queue: a negative timeout is ValueError for a get and for
         * a put to a bounded queue; an unbounded put ignores it. */
        bool strict = op == CONC__MOP_Q_GET || o->maxsize > 0;
        if (block && (strict ? conc__deadline_strict(timeout, &deadline) : conc__deadline(timeout, &deadline)) != 0)
            return reply_code(c, CONC_EINVAL);
    } else if (!conc__rb_done(r)) {
        return bad(c);
    }
    conc_lock_acquire(&o->mu, true, CONC_FOREVER);
    switch (op) {
    case CONC__MOP_Q_PUT:
        while (o->maxsize > 0 && o->len >= (size_t)o->maxsize &&
               (rc = wait_slice(c, o, deadline)) == 0) {
        }
        if (o->maxsize <= 0 || o->len < (size_t)o->maxsize) {
            if (!(rc = vec_reserve(o, 1)) && !(rc = item_set(vec_at(o, o->len), v, vn))) {
                o->len++;
                obj_notify(o);
            }
        } else if (rc == CONC_ETIMEDOUT) {
            rc = CONC_EFULL;
        }
        reply_code(c, rc);
        break;
    case CONC__MOP_Q_GET:
        while (o->len == 0 && (rc = wait_slice(c, o, deadline)) == 0) {
        }
        if (o->len) {
            item_t it = *vec_at(o, 0);
            o->first = (o->first + 1) % o->cap;
            o->len--;
            obj_notify(o);
            reply_code(c, 0);
            conc__wb_bytes(&c->out, it.p, it.n);
            free(it.p);
        } else {
            reply_code(c, rc == CONC_ETIMEDOUT ? CONC_EEMPTY : rc);
        }
        break;
    case CONC__MOP_Q_SIZE:
        reply_code(c, 0);
        conc__wb_u64(&c->out, o->len);
        break;
    case CONC__MOP_Q_FULL:
        reply_code(c, 0);
        conc__wb_u64(&c->out, o->maxsize > 0 && o->len >= (size_t)o->maxsize);
        break;
    }
    conc_lock_release(&o->mu);
    return 0;
}

int conc__mgr_dispatch(conc__mgr_conn_t *c, const uint8_t *req, size_t n,
                       const uint8_t **reply, size_t *rlen)
{
    conc__rbuf_t r = {req, req + n, false};
    int op = conc__rb_u8(&r);
    int rc = 0;
    obj_t *o = c->bound;
    if (r.bad) {
        rc = bad(c);
    } else if (op == CONC__MOP_PING || op == CONC__MOP_SHUTDOWN) {
        if (!conc__rb_done(&r)) {
            rc = bad(c);
        } else {
            reply_code(c, 0);
            rc = op == CONC__MOP_SHUTDOWN;
        }
    } else if (op == CONC__MOP_BIND_NEW || op == CONC__MOP_BIND_ID || op == CONC__MOP_BIND_ITEM) {
        rc = do_bind(c, &r, op);
    } else if (op >= CONC__MOP_D_SET && op <= CONC__MOP_D_CLEAR && o &&
               (o->kind == CONC__MK_DICT || o->kind == CONC__MK_NAMESPACE)) {
        rc = do_dict(c, o, &r, op);
        if (o->kind == CONC__MK_NAMESPACE && c->out.len >= 8 && !c->out.oom &&
            (int32_t)(c->out.p[4] | c->out.p[5] << 8 | c->out.p[6] << 16 | (uint32_t)c->out.p[7] << 24) ==
                CONC_EKEY) { /* a Namespace: AttributeError */
            conc__wb_begin_frame(&c->out);
            conc__wb_u32(&c->out, (uint32_t)CONC_EATTR);
        }
    } else if (op >= CONC__MOP_L_APPEND && op <= CONC__MOP_L_REVERSE && o && o->kind == CONC__MK_LIST) {
        rc = do_list(c, o, &r, op);
    } else if (op >= CONC__MOP_K_ACQUIRE && op <= CONC__MOP_K_LOCKED && o && o->kind == CONC__MK_LOCK) {
        rc = do_lock(c, o, &r, op);
    } else if (op >= CONC__MOP_Q_PUT && op <= CONC__MOP_Q_FULL && o && o->kind == CONC__MK_QUEUE) {
        rc = do_queue(c, o, &r, op);
    } else if (op == CONC__MOP_BIND_SYNC) {
        rc = conc__mgr_sync_bind(c, &r);
    } else if (op >= CONC__MOP_SYNC_FIRST && op <= CONC__MOP_SYNC_LAST && o) {
        rc = conc__mgr_sync_dispatch(c, o->sync, &r, op);
    } else if (op >= CONC__MOP_MORE_FIRST && o) { /* server_more.c */
        rc = conc__mgr_do_more(c, o, &r, op);
    } else {
        rc = bad(c); /* unknown op, or not for the bound object */
    }
    if (c->out.oom)
        reply_code(c, CONC_ENOMEM);
    if (!c->out.oom && c->out.len > 4 + CONC__MGR_MAX_FRAME) /* a reply too large for any frame */
        reply_code(c, CONC_ERANGE);
    if (c->out.oom) { /* not even the code fits */
        static const uint8_t nomem[8] = {4, 0, 0, 0, (uint8_t)CONC_ENOMEM, 0xff, 0xff, 0xff};
        *reply = nomem + 4;
        *rlen = 4;
        return rc;
    }
    conc__wb_end_frame(&c->out);
    *reply = c->out.p + 4;
    *rlen = c->out.len - 4;
    return rc;
}

int conc__mgr_feed(conc__mgr_conn_t *c, const uint8_t *data, size_t n)
{
    while (n) {
        const uint8_t *body, *reply;
        size_t blen, used, rlen;
        int f = conc__mgr_frame(data, n, CONC__MGR_MAX_FRAME, &body, &blen, &used);
        if (f == 0)
            return CONC_EINVAL; /* truncated: the stream ended inside a frame */
        if (f < 0)
            return f;
        int rc = conc__mgr_dispatch(c, body, blen, &reply, &rlen);
        if (rc)
            return rc;
        data += used;
        n -= used;
    }
    return 0;
}

/* Room for n bytes in c->in (the copied-out request). */
static bool in_reserve(conc__mgr_conn_t *c, size_t n)
{
    if (n <= c->incap)
        return true;
    size_t cap = c->incap ? c->incap : 4096;
    while (cap < n)
        cap *= 2;
    uint8_t *p = realloc(c->in, cap);
    if (!p)
        return false;
    c->in = p;
    c->incap = cap;
    return true;
}

int conc__mgr_chan_serve(conc__mgr_conn_t *c, conc__mgr_chan_t *ch, size_t cap)
{
    static const uint8_t erange[4] = {(uint8_t)CONC_ERANGE, 0xff, 0xff, 0xff};
    static const uint8_t enomem[4] = {(uint8_t)CONC_ENOMEM, 0xff, 0xff, 0xff};
    uint8_t *data = conc__mgr_chan_data(ch);
    /* Read once: the client may change it (and the data) at any time. */
    size_t len = __atomic_load_n(&ch->req_len, __ATOMIC_RELAXED);
    const uint8_t *reply;
    size_t rlen;
    int rc;
    if (len > cap || len > CONC__MGR_MAX_FRAME) {
        reply = erange, rlen = 4, rc = CONC_ERANGE;
    } else if (!in_reserve(c, len ? len : 1)) { /* never memcpy to NULL */
        reply = enomem, rlen = 4, rc = 0;
    } else {
        memcpy(c->in, data, len); /* parse a private copy, never the shared bytes */
        rc = conc__mgr_dispatch(c, c->in, len, &reply, &rlen);
        if (rlen > cap)
            reply = erange, rlen = 4;
    }
    if (len > c->chan_hi)
        c->chan_hi = len;
    if (c->chan_hi > CONC__MGR_CHAN_KEEP && rlen <= CONC__MGR_CHAN_KEEP &&
        cap > CONC__MGR_CHAN_KEEP) { /* give a big message's pages back */
        size_t pg = CONC__MGR_CHAN_KEEP, n = (c->chan_hi - pg + 4095) & ~(size_t)4095;
        if (n > cap - pg)
            n = cap - pg;
        madvise(data + pg, n, MADV_REMOVE);
        c->chan_hi = rlen;
    } else if (rlen > c->chan_hi) {
        c->chan_hi = rlen;
    }
    memcpy(data, reply, rlen);
    __atomic_store_n(&ch->rep_len, (uint32_t)rlen, __ATOMIC_RELAXED);
    return rc;
}

