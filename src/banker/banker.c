/*
 * banker.c — Dijkstra's banker's algorithm with Habermann's safety check.
 *
 * State (under b->mu, a conc Lock held only for bookkeeping, never while
 * parked): avail[m]; for every client (in claim order) max[m] and
 * alloc[m]; need = max - alloc. Invariants, after every call:
 *   0 <= alloc[k][i] <= max[k][i] <= total[i];
 *   avail[i] + sum_k alloc[k][i] == total[i];
 *   the state is safe (safe_seq finds every client).
 * A new client holds nothing and can always finish last (work then equals
 * the totals, which cover any claim), so claiming keeps the state safe;
 * releases only make it safer; a grant is made only when the state after
 * it is safe. So the banker never leaves the safe states, and clients that
 * stay within their claims never deadlock on it.
 *
 * Waiting: a request that cannot be granted queues a waiter on b->q whose
 * data points to the request (client, vector) on the waiter's stack, and
 * parks (conc__wait_queued: kills and Timeout scopes cut it). Every
 * release / unclaim walks the queue oldest first, under b->mu and then the
 * queue's guard, and grants each waiting request that is safe now,
 * dequeuing it; the dequeue is the grant, so a waiter that times out finds
 * itself either still queued (nothing granted: it leaves) or dequeued
 * (granted: it returns 0). Grants only make other requests less safe, so
 * one pass per release is enough. Lock order: mu, then the queue's guard.
 *
 * Cost: a safety check is O(n^2 m) for n clients and m types (a pass per
 * finished client, at worst), done once per attempted grant.
 */
#include "conc/banker.h"

#include <stdlib.h>
#include <string.h>

#include "core/observe.h"
#include "core/park.h"
#include "sync/internal.h"

struct conc_banker_client {
    conc_banker_t *b;
    size_t id;
    size_t pos;   /* index in b->cl */
    long nwait;   /* requests of this client parked now (atomic) */
    long *max, *alloc;
};

struct conc_banker {
    conc_lock_t mu;
    conc__waitq_t q;
    size_t m;
    long *total, *avail, *work; /* m each; work is scratch under mu */
    conc_banker_client_t **cl;
    unsigned char *fin;         /* scratch under mu, cap entries */
    size_t n, cap, next_id;
};

typedef struct pending {
    conc_banker_client_t *c;
    const long *req;
} pending_t;

/* ------------------------------------------------------------ safety */

/* Habermann's check on the current state: returns how many clients can
 * finish; their ids go to seq (up to cap). */
static size_t safe_seq(conc_banker_t *b, size_t *seq, size_t cap)
{
    size_t m = b->m, done = 0;
    memcpy(b->work, b->avail, m * sizeof *b->work);
    if (b->n)
        memset(b->fin, 0, b->n);
    bool progress = true;
    while (progress && done < b->n) {
        progress = false;
        for (size_t k = 0; k < b->n; k++) {
            if (b->fin[k])
                continue;
            conc_banker_client_t *c = b->cl[k];
            size_t i = 0;
            while (i < m && c->max[i] - c->alloc[i] <= b->work[i])
                i++;
            if (i < m)
                continue;
            for (i = 0; i < m; i++)
                b->work[i] += c->alloc[i];
            b->fin[k] = 1;
            if (seq && done < cap)
                seq[done] = c->id;
            done++;
            progress = true;
        }
    }
    return done;
}

/* Grant req to c if available and safe: 0, CONC_EAGAIN or CONC_EDEADLK.
 * keep = false: only tell (the state is left as it was). */
static int try_grant(conc_banker_t *b, conc_banker_client_t *c, const long *req, bool keep)
{
    size_t m = b->m;
    for (size_t i = 0; i < m; i++)
        if (req[i] > b->avail[i])
            return CONC_EAGAIN;
    for (size_t i = 0; i < m; i++) {
        b->avail[i] -= req[i];
        c->alloc[i] += req[i];
    }
    bool safe = safe_seq(b, NULL, 0) == b->n;
    if (!safe || !keep)
        for (size_t i = 0; i < m; i++) {
            b->avail[i] += req[i];
            c->alloc[i] -= req[i];
        }
    return safe ? 0 : CONC_EDEADLK;
}

/* Under mu: grant every waiting request that is safe now, oldest first;
 * returns the list of granted waiters to unpark after dropping mu. */
static conc__waiter_t *grant_waiters(conc_banker_t *b)
{
    conc__waiter_t *list = NULL, **tail = &list;
    conc__waitq_lock(&b->q);
    conc__waiter_t *w = b->q.head;
    while (w) {
        conc__waiter_t *next = w->next;
        pending_t *p = (pending_t *)w->data;
        if (try_grant(b, p->c, p->req, true) == 0) {
            conc__waitq_remove(&b->q, w);
            *tail = w;
            tail = &w->next;
        }
        w = next;
    }
    conc__waitq_unlock(&b->q);
    return list;
}

/* ------------------------------------------------------------- banker */

int conc_banker_new(conc_banker_t **out, size_t ntypes, const long *totals)
{
    if (!out || !totals || ntypes == 0 || ntypes > CONC_BANKER_MAX_TYPES)
        return CONC_EINVAL;
    for (size_t i = 0; i < ntypes; i++)
        if (totals[i] < 0 || totals[i] > CONC_BANKER_MAX_UNITS)
            return CONC_EINVAL;
    conc_banker_t *b = calloc(1, sizeof *b);
    long *v = calloc(3 * ntypes, sizeof *v);
    if (!b || !v) {
        free(b);
        free(v);
        return CONC_ENOMEM;
    }
    b->m = ntypes;
    b->total = v;
    b->avail = v + ntypes;
    b->work = v + 2 * ntypes;
    memcpy(b->total, totals, ntypes * sizeof *totals);
    memcpy(b->avail, totals, ntypes * sizeof *totals);
    *out = b;
    return 0;
}

int conc_banker_free(conc_banker_t *b)
{
    if (!b)
        return CONC_EINVAL;
    conc__lock_hold(&b->mu);
    size_t n = b->n;
    conc_lock_release(&b->mu);
    if (n)
        return CONC_EPERM;
    free(b->cl);
    free(b->fin);
    free(b->total);
    free(b);
    return 0;
}

size_t conc_banker_ntypes(const conc_banker_t *b)
{
    return b ? b->m : 0;
}

/* ------------------------------------------------------------- clients */

int conc_banker_claim(conc_banker_t *b, const long *max, conc_banker_client_t **out)
{
    if (!b || !max || !out)
        return CONC_EINVAL;
    size_t m = b->m;
    for (size_t i = 0; i < m; i++)
        if (max[i] < 0 || max[i] > b->total[i])
            return CONC_EINVAL;
    conc_banker_client_t *c = calloc(1, sizeof *c + 2 * m * sizeof(long));
    if (!c)
        return CONC_ENOMEM;
    c->b = b;
    c->max = (long *)(c + 1);
    c->alloc = c->max + m;
    memcpy(c->max, max, m * sizeof *max);
    conc__lock_hold(&b->mu);
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 8;
        conc_banker_client_t **cl = realloc(b->cl, cap * sizeof *cl);
        if (cl)
            b->cl = cl;
        unsigned char *fin = cl ? realloc(b->fin, cap) : NULL;
        if (fin)
            b->fin = fin;
        if (!cl || !fin) {
            conc_lock_release(&b->mu);
            free(c);
            return CONC_ENOMEM;
        }
        b->cap = cap;
    }
    c->id = b->next_id++;
    c->pos = b->n;
    b->cl[b->n++] = c;
    conc_lock_release(&b->mu);
    *out = c;
    return 0;
}

int conc_banker_unclaim(conc_banker_client_t *c)
{
    if (!c)
        return CONC_EINVAL;
    conc_banker_t *b = c->b;
    conc__lock_hold(&b->mu);
    if (conc__load(&c->nwait, ACQ) != 0) {
        conc_lock_release(&b->mu);
        return CONC_EPERM;
    }
    for (size_t i = 0; i < b->m; i++)
        b->avail[i] += c->alloc[i];
    for (size_t k = c->pos + 1; k < b->n; k++) {
        b->cl[k - 1] = b->cl[k];
        b->cl[k - 1]->pos = k - 1;
    }
    b->n--;
    conc__waiter_t *list = grant_waiters(b);
    conc_lock_release(&b->mu);
    conc__unpark_list(list);
    free(c);
    return 0;
}

size_t conc_banker_client_id(const conc_banker_client_t *c)
{
    return c ? c->id : (size_t)-1;
}

int conc_banker_held(conc_banker_client_t *c, long *held)
{
    if (!c || !held)
        return CONC_EINVAL;
    conc_banker_t *b = c->b;
    conc__lock_hold(&b->mu);
    memcpy(held, c->alloc, b->m * sizeof *held);
    conc_lock_release(&b->mu);
    return 0;
}

/* Under mu: is req a valid request of c (returns 0) and is it all zero? */
static int check_req(conc_banker_client_t *c, const long *req, bool *zero)
{
    *zero = true;
    for (size_t i = 0; i < c->b->m; i++) {
        if (req[i] < 0 || req[i] > c->max[i] - c->alloc[i])
            return CONC_EINVAL;
        if (req[i])
            *zero = false;
    }
    return 0;
}

int conc_banker_query(conc_banker_client_t *c, const long *req)
{
    if (!c || !req)
        return CONC_EINVAL;
    conc_banker_t *b = c->b;
    bool zero;
    conc__lock_hold(&b->mu);
    int rc = check_req(c, req, &zero);
    if (rc == 0 && !zero)
        rc = try_grant(b, c, req, false);
    conc_lock_release(&b->mu);
    return rc;
}

int conc_banker_request(conc_banker_client_t *c, const long *req, double timeout)
{
    if (!c || !req)
        return CONC_EINVAL;
    int64_t deadline = CONC__NO_DEADLINE;
    if (timeout != CONC_FOREVER && conc__deadline(timeout, &deadline))
        return CONC_EINVAL;
    conc_banker_t *b = c->b;
    bool zero;
    conc__lock_hold(&b->mu);
    int rc = check_req(c, req, &zero);
    if (rc == 0 && !zero)
        rc = try_grant(b, c, req, true);
    if (rc != CONC_EAGAIN && rc != CONC_EDEADLK) {
        conc_lock_release(&b->mu);
        return rc; /* granted, or CONC_EINVAL */
    }
    if (deadline == 0) {
        conc_lock_release(&b->mu);
        return CONC_ETIMEDOUT;
    }
    pending_t p = {c, req};
    conc__waiter_t w;
    conc__waiter_init(&w);
    w.data = (uintptr_t)&p;
    w.obj = b;
    w.kind = CONC__WAIT_OTHER;
    atomic_fetch_add_explicit(CONC__A(&c->nwait), 1, memory_order_relaxed);
    conc__waitq_lock(&b->q);
    conc__waitq_push(&b->q, &w);
    conc__waitq_unlock(&b->q);
    conc_lock_release(&b->mu);
    rc = conc__wait_queued(&b->q, &w, deadline, NULL, NULL);
    atomic_fetch_sub_explicit(CONC__A(&c->nwait), 1, memory_order_release);
    return rc;
}

int conc_banker_release(conc_banker_client_t *c, const long *rel)
{
    if (!c || !rel)
        return CONC_EINVAL;
    conc_banker_t *b = c->b;
    size_t m = b->m;
    conc__lock_hold(&b->mu);
    for (size_t i = 0; i < m; i++)
        if (rel[i] < 0 || rel[i] > c->alloc[i]) {
            conc_lock_release(&b->mu);
            return CONC_EINVAL;
        }
    for (size_t i = 0; i < m; i++) {
        c->alloc[i] -= rel[i];
        b->avail[i] += rel[i];
    }
    conc__waiter_t *list = b->q.head ? grant_waiters(b) : NULL;
    conc_lock_release(&b->mu);
    conc__unpark_list(list);
    return 0;
}

/* ------------------------------------------------------------ queries */

int conc_banker_safe_sequence(conc_banker_t *b, size_t *ids, size_t cap, size_t *n)
{
    if (!b || !n || (!ids && cap))
        return CONC_EINVAL;
    conc__lock_hold(&b->mu);
    size_t done = safe_seq(b, ids, cap), all = b->n;
    conc_lock_release(&b->mu);
    *n = done;
    return done == all ? 0 : CONC_EDEADLK;
}

int conc_banker_snapshot(conc_banker_t *b, long *available, size_t cap, size_t *ids, long *max,
                         long *alloc, size_t *nclients)
{
    if (!b || !nclients)
        return CONC_EINVAL;
    size_t m = b->m;
    conc__lock_hold(&b->mu);
    if (available)
        memcpy(available, b->avail, m * sizeof *available);
    for (size_t k = 0; k < b->n && k < cap; k++) {
        conc_banker_client_t *c = b->cl[k];
        if (ids)
            ids[k] = c->id;
        if (max)
            memcpy(max + k * m, c->max, m * sizeof *max);
        if (alloc)
            memcpy(alloc + k * m, c->alloc, m * sizeof *alloc);
    }
    *nclients = b->n;
    conc_lock_release(&b->mu);
    return 0;
}
