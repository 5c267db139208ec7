/*
 * wait.c — concurrent.futures.wait and as_completed.
 *
 * wait() puts one node waiter on every pending future's list (the group
 * protocol of park.h: any completion unparks the one parked context),
 * re-checks the condition after each wakeup, and takes the nodes off
 * before returning. One deadline covers the whole call.
 *
 * as_completed() registers a waiter callback on each distinct future
 * that appends it to a finished list inside the iterator's shared state
 * (which the callbacks keep alive with a reference count) and wakes the
 * iterator; next() hands out finished futures in completion order.
 * Freeing the iterator removes the callbacks that have not run, so an
 * iterator abandoned on a long-lived future leaves nothing behind.
 *
 * Both count a future as done when it finished or was cancelled and
 * notified (CPython's CANCELLED_AND_NOTIFIED): a cancelled future whose
 * executor has not dropped it yet is still pending for them.
 */
#include <stdlib.h>
#include <string.h>

#include "conc/sync.h"
#include "futures/internal.h"
#include "sync/internal.h"

/* Done as CPython's wait() sees it: finished, or cancelled and notified
 * (a future cancelled but not yet dropped by its executor is not done). */
static bool is_done(conc_future_t *f)
{
    return conc__future_done_notified(f);
}

static bool failed(conc_future_t *f)
{
    int code = 0;
    return conc_future_state(f) == CONC_FUTURE_FINISHED && conc_future_exception(f, 0, &code, NULL) == 0 &&
           code != 0;
}

/* Distinct futures of fs (order kept), with a small open-addressing set. */
static size_t unique(conc_future_t *const *fs, size_t n, conc_future_t **u)
{
    if (n <= 16) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            size_t k = 0;
            while (k < m && u[k] != fs[i])
                k++;
            if (k == m)
                u[m++] = fs[i];
        }
        return m;
    }
    size_t cap = 32;
    while (cap < 2 * n)
        cap <<= 1;
    conc_future_t **set = calloc(cap, sizeof *set);
    if (!set) { /* no memory for the set: keep duplicates (still correct for wait) */
        memcpy(u, fs, n * sizeof *u);
        return n;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uintptr_t h = (uintptr_t)fs[i];
        h ^= h >> 17;
        h *= 0x9E3779B97F4A7C15ull;
        size_t j = (size_t)(h >> 20) & (cap - 1);
        while (set[j] && set[j] != fs[i])
            j = (j + 1) & (cap - 1);
        if (!set[j]) {
            set[j] = fs[i];
            u[m++] = fs[i];
        }
    }
    free(set);
    return m;
}

/* fs holds n non-NULL futures and timeout is valid: 0, else CONC_EINVAL. */
static int check_args(conc_future_t *const *fs, size_t n, double timeout, int64_t *deadline)
{
    if (n && !fs)
        return CONC_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!fs[i])
            return CONC_EINVAL;
    return conc__deadline(timeout, deadline) ? CONC_EINVAL : 0;
}

static bool satisfied(conc_future_t **u, size_t m, conc_return_when_t rw)
{
    size_t ndone = 0;
    for (size_t i = 0; i < m; i++) {
        if (is_done(u[i])) {
            ndone++;
            if (rw == CONC_FIRST_COMPLETED)
                return true;
            if (rw == CONC_FIRST_EXCEPTION && failed(u[i]))
                return true;
        }
    }
    return ndone == m;
}

int conc_wait(conc_future_t *const *fs, size_t n, double timeout, conc_return_when_t return_when,
              conc_future_t **done, size_t *ndone, conc_future_t **not_done, size_t *nnot_done)
{
    int64_t deadline;
    if ((unsigned)return_when > CONC_ALL_COMPLETED || check_args(fs, n, timeout, &deadline))
        return CONC_EINVAL;
    conc_future_t **u = malloc((n ? n : 1) * sizeof *u);
    if (!u)
        return CONC_ENOMEM;
    size_t m = unique(fs, n, u);

    /* All-completed over many futures: wait for each in turn (cheap, and a
     * pool worker helps run tasks while it waits). */
    int intr = 0; /* a kill or timeout scope cut the wait short */
    if (return_when == CONC_ALL_COMPLETED) {
        for (size_t i = 0; i < m; i++) {
            int r = conc__future_wait_notified(u[i], deadline);
            if (r) {
                if (conc__park_interrupted(r))
                    intr = r;
                break;
            }
        }
    } else {
        conc__waiter_t *nodes = NULL;
        while (!satisfied(u, m, return_when)) {
            if (deadline != CONC__NO_DEADLINE && conc__now_ns() >= deadline)
                break;
            if (!nodes && !(nodes = malloc(m * sizeof *nodes)))
                break;
            conc__waiter_t g;
            conc__waiter_init(&g);
            g.obj = u;
            g.kind = CONC__WAIT_SELECT;
            bool *reg = (bool *)calloc(m, sizeof *reg);
            if (!reg)
                break;
            bool any_done = false;
            for (size_t i = 0; i < m && !any_done; i++) {
                conc__waiter_init(&nodes[i]);
                nodes[i].group = &g;
                reg[i] = conc__future_register(u[i], &nodes[i], true);
                if (!reg[i])
                    any_done = true; /* finished meanwhile: re-check */
            }
            int prc = any_done ? 0 : conc__park(&g, deadline);
            if (conc__park_interrupted(prc))
                intr = prc;
            for (size_t i = 0; i < m; i++) {
                if (!reg[i])
                    continue;
                conc__waitq_lock(&u[i]->q);
                bool queued = nodes[i].queued;
                if (queued)
                    conc__waitq_remove(&u[i]->q, &nodes[i]);
                conc__waitq_unlock(&u[i]->q);
                if (!queued)
                    conc__node_settle(&nodes[i]);
            }
            free(reg);
            if (intr)
                break;
        }
        free(nodes);
    }

    size_t d = 0, nd = 0;
    for (size_t i = 0; i < m; i++) {
        if (is_done(u[i])) {
            if (done)
                done[d] = u[i];
            d++;
        } else {
            if (not_done)
                not_done[nd] = u[i];
            nd++;
        }
    }
    if (ndone)
        *ndone = d;
    if (nnot_done)
        *nnot_done = nd;
    free(u);
    return intr;
}

/* --------------------------------------------------------- as_completed */

typedef struct {
    int refs;                    /* atomic: the iterator + pending callbacks */
    conc_lock_t lock;
    conc_future_t **finished;    /* completion order */
    size_t nfinished, cap;
    conc_event_t changed;
} ac_shared_t;

struct conc_as_completed {
    ac_shared_t *sh;
    conc_future_t **fs;          /* distinct futures, each referenced */
    size_t m;
    size_t yielded;
    int64_t deadline;
};

static void ac_unref(ac_shared_t *sh)
{
    if (atomic_fetch_sub_explicit(CONC__A(&sh->refs), 1, memory_order_acq_rel) == 1) {
        free(sh->finished);
        free(sh);
    }
}

static void ac_cb(conc_future_t *f, void *arg)
{
    ac_shared_t *sh = arg;
    conc__lock_hold(&sh->lock);
    sh->finished[sh->nfinished++] = f; /* cap = number of futures: fits */
    conc_lock_release(&sh->lock);
    conc_event_set(&sh->changed);
    ac_unref(sh);
}

/* The future was dropped before completing: its callback will never run. */
static void ac_discard(void *arg)
{
    ac_unref(arg);
}

int conc_as_completed_new(conc_as_completed_t **out, conc_future_t *const *fs, size_t n, double timeout)
{
    int64_t deadline;
    if (!out || check_args(fs, n, timeout, &deadline))
        return CONC_EINVAL;
    conc_as_completed_t *it = calloc(1, sizeof *it);
    ac_shared_t *sh = calloc(1, sizeof *sh);
    conc_future_t **u = malloc((n ? n : 1) * sizeof *u);
    conc_future_t **fin = malloc((n ? n : 1) * sizeof *fin);
    if (!it || !sh || !u || !fin) {
        free(it);
        free(sh);
        free(u);
        free(fin);
        return CONC_ENOMEM;
    }
    size_t m = unique(fs, n, u);
    sh->finished = fin;
    sh->cap = m;
    sh->refs = 1;
    it->sh = sh;
    it->fs = u;
    it->m = m;
    it->deadline = deadline;
    for (size_t i = 0; i < m; i++) {
        conc_future_ref(u[i]);
        atomic_fetch_add_explicit(CONC__A(&sh->refs), 1, RLX);
        if (conc__future_add_waiter_callback(u[i], ac_cb, sh, ac_discard)) {
            /* Out of memory: undo. Callbacks already registered keep the
             * shared state alive through their own references. */
            ac_unref(sh);
            for (size_t k = 0; k <= i; k++)
                conc_future_free(u[k]);
            free(u);
            free(it);
            ac_unref(sh);
            return CONC_ENOMEM;
        }
    }
    *out = it;
    return 0;
}

int conc_as_completed_next(conc_as_completed_t *it, conc_future_t **f)
{
    if (!it || !f)
        return CONC_EINVAL;
    ac_shared_t *sh = it->sh;
    for (;;) {
        if (it->yielded == it->m)
            return CONC_EEOF;
        conc__lock_hold(&sh->lock);
        bool have = it->yielded < sh->nfinished;
        if (have)
            *f = sh->finished[it->yielded++];
        else
            conc_event_clear(&sh->changed);
        conc_lock_release(&sh->lock);
        if (have)
            return 0;
        double left = CONC_FOREVER;
        if (it->deadline != CONC__NO_DEADLINE) {
            int64_t ns = it->deadline - conc__now_ns();
            if (ns <= 0)
                return CONC_ETIMEDOUT;
            left = (double)ns / 1e9;
        }
        int rc = conc_event_wait(&sh->changed, left);
        if (rc != 0 && conc__park_interrupted(rc))
            return rc;
        if (rc == CONC_ETIMEDOUT) {
            /* one last look before reporting the timeout */
            conc__lock_hold(&sh->lock);
            have = it->yielded < sh->nfinished;
            if (have)
                *f = sh->finished[it->yielded++];
            conc_lock_release(&sh->lock);
            return have ? 0 : CONC_ETIMEDOUT;
        }
    }
}

int conc_as_completed_free(conc_as_completed_t *it)
{
    if (!it)
        return CONC_EINVAL;
    for (size_t i = 0; i < it->m; i++) {
        /* Our callback, if it has not run, goes with its reference on the
         * shared state; one that runs now keeps the state alive itself. */
        int n = conc__future_remove_callback(it->fs[i], ac_cb, it->sh);
        while (n-- > 0)
            ac_unref(it->sh);
        conc_future_free(it->fs[i]);
    }
    free(it->fs);
    ac_unref(it->sh);
    free(it);
    return 0;
}

size_t conc_as_completed_unfinished(conc_as_completed_t *it, size_t *total)
{
    if (!it) {
        if (total)
            *total = 0;
        return 0;
    }
    conc__lock_hold(&it->sh->lock);
    size_t done = it->sh->nfinished;
    conc_lock_release(&it->sh->lock);
    if (total)
        *total = it->m;
    return it->m - done;
}
