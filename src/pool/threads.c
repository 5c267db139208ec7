/*
 * threads.c — multiprocessing.pool.ThreadPool: the conc_pool_t calls
 * (apply_async, map, imap, starmap, the *_async forms, close, terminate,
 * join) with tasks run in threads of this process instead of workers.
 *
 * How: a job (one apply, or one chunk of a map) copies its items and is
 * submitted to a private ThreadPoolExecutor. The thread that runs it
 * calls the task on each item with a private conc_pool_out_t, then builds
 * the same cres_t result block a process worker's results become (a
 * table: one citem_t per item, then the data) and completes the job's
 * future with it — so conc_future_bytes, conc_results_*, the iterators and
 * the map results read thread and process outcomes alike.
 *
 * Callbacks (apply_async's callback / error_callback, map_async's) run on
 * the pool's result-handler thread, as in CPython's ThreadPool (its
 * _handle_results thread), not on the worker that finished the task: the
 * completion callback in api.c / async.c hands them over with
 * conc__tpool_defer, so a slow callback holds up later callbacks, never a
 * worker. The result thread starts with the first deferred callback; each
 * deferred call counts in `pending`, so join waits for the callbacks too.
 *
 * Invariants: the job owns one reference to its future; exactly one of
 * job_run (the executor ran it) and job_done (the executor cancelled it
 * at terminate, or failed it: a broken pool) frees the job. `pending` counts jobs not yet freed; join
 * waits for it to reach 0 under `cv`.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/time.h"
#include "futures/internal.h"
#include "pool/internal.h"

typedef struct deferred {
    struct deferred *next;
    void (*fn)(void *);
    void *arg;
} deferred_t;

struct tpool {
    conc_executor_t *ex;
    conc_lock_t mu;
    conc_cond_t cv;
    size_t pending;
    /* the result-handler thread (under cv's lock) */
    deferred_t *dq, **dq_tail;
    bool rthread, rstop;
    pthread_t rt;
    conc_process_fn init;
    void *initarg;
    size_t initarg_len;
};

typedef struct {
    tpool_t *tp;
    conc_future_t *f;
    conc_pool_fn fn;
    bool apply;              /* one item whose failure fails the future */
    size_t count;
    size_t *off, *len;       /* each item's bytes in data */
    unsigned char *data;
} job_t;

static void job_free(job_t *j)
{
    tpool_t *tp = j->tp;
    conc_future_free(j->f);
    free(j->off);
    free(j->data);
    free(j);
    conc_cond_acquire(&tp->cv, true, CONC_FOREVER);
    if (--tp->pending == 0)
        conc_cond_notify_all(&tp->cv);
    conc_cond_release(&tp->cv);
}

/* Run every item; returns the finished block (or NULL: out of memory). */
static cres_t *run_items(job_t *j)
{
    size_t n = j->count;
    citem_t *it = calloc(n ? n : 1, sizeof *it);
    conc_pool_out_t out = {0};
    uint32_t nfail = 0;
    if (!it)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        out.base += out.len;
        out.len = 0;
        conc_fail_clear();
        int rc = j->fn(j->data + j->off[i], j->len[i], &out);
        const char *msg = NULL;
        int code = conc_failure(&msg);
        if (!code && rc) {
            code = rc < 0 ? rc : CONC_EFAILED;
            msg = rc < 0 ? conc_strerror(rc) : "task returned a nonzero value";
        }
        if (!code && out.len > UINT32_MAX) {
            code = CONC_ERANGE;
            msg = "result too large";
        }
        if (code) {
            /* the message replaces whatever the task wrote */
            size_t ml = strlen(msg ? msg : "") + 1;
            out.len = 0;
            if (conc_pool_return(&out, msg ? msg : "", ml)) {
                code = CONC_ENOMEM;
                out.len = 0;
            }
            nfail++;
        }
        it[i] = (citem_t){out.base, (uint32_t)out.len, code};
    }
    conc_fail_clear();
    size_t dlen = out.base + out.len;
    size_t bytes = sizeof(cres_t) + n * sizeof(citem_t) + dlen;
    cres_t *c = conc__cres_alloc(bytes);
    if (c) {
        c->magic = CRES_MAGIC;
        c->count = c->got = (uint32_t)n;
        c->nfail = nfail;
        c->cap = c->used = dlen;
        c->unilen = 0;
        c->table = 1;
        memcpy(c->items, it, n * sizeof *it);
        if (dlen)
            memcpy(cres_data(c), out.p, dlen);
    }
    free(it);
    free(out.p);
    return c;
}

static void *job_run(void *arg)
{
    job_t *j = arg;
    conc_future_t *f = j->f;
    if (conc_future_set_running_or_notify_cancel(f) == 1) {
        cres_t *c = run_items(j);
        if (!c) {
            conc__future_fail_now(f, CONC_ENOMEM, "out of memory for a result");
        } else if (j->apply && c->items[0].code) {
            conc__future_fail_now(f, c->items[0].code, (const char *)cres_data(c) + c->items[0].off);
            conc__cres_release(c);
        } else {
            f->owned = c; /* freed with the future's last reference */
            conc_future_set_result(f, c);
        }
    }
    job_free(j);
    return NULL;
}

/* The executor's future of a job: if the executor cancelled it
 * (terminate) or failed it (broken), job_run never runs: cancel or fail
 * the job's future instead. */
static void job_done(conc_future_t *ef, void *arg)
{
    job_t *j = arg;
    if (conc_future_cancelled(ef)) {
        conc_future_cancel(j->f);
        conc__future_notify_cancel(j->f);
        job_free(j);
        return;
    }
    /* job_run never fails its own future: a failure means it did not run
     * (the pool broke: its initializer failed) */
    int code = 0;
    const char *msg = NULL;
    conc_future_exception(ef, 0, &code, &msg);
    if (code) {
        conc__future_fail_now(j->f, code, msg ? msg : "BrokenThreadPool");
        job_free(j);
    }
}

/* ------------------------------------------------ result-handler thread */

static void pending_done(tpool_t *tp) /* cv's lock held */
{
    if (--tp->pending == 0)
        conc_cond_notify_all(&tp->cv);
}

static void *result_main(void *arg)
{
    tpool_t *tp = arg;
    conc_cond_acquire(&tp->cv, true, CONC_FOREVER);
    for (;;) {
        deferred_t *d = tp->dq;
        if (!d) {
            if (tp->rstop)
                break;
            conc_cond_wait(&tp->cv, CONC_FOREVER);
            continue;
        }
        tp->dq = d->next;
        if (!tp->dq)
            tp->dq_tail = &tp->dq;
        conc_cond_release(&tp->cv);
        d->fn(d->arg);
        free(d);
        conc_cond_acquire(&tp->cv, true, CONC_FOREVER);
        pending_done(tp);
    }
    conc_cond_release(&tp->cv);
    return NULL;
}

int conc__tpool_defer(tpool_t *tp, void (*fn)(void *), void *arg)
{
    deferred_t *d = malloc(sizeof *d);
    if (!d)
        return CONC_ENOMEM;
    *d = (deferred_t){NULL, fn, arg};
    conc_cond_acquire(&tp->cv, true, CONC_FOREVER);
    if (!tp->rthread) {
        if (tp->rstop || pthread_create(&tp->rt, NULL, result_main, tp) != 0) {
            conc_cond_release(&tp->cv);
            free(d);
            return CONC_EAGAIN;
        }
        pthread_setname_np(tp->rt, "ThreadPool-res");
        tp->rthread = true;
    }
    *tp->dq_tail = d;
    tp->dq_tail = &d->next;
    tp->pending++;
    /* the lock is the condition's: every waiter (join's too) looks again */
    conc_cond_notify_all(&tp->cv);
    conc_cond_release(&tp->cv);
    return 0;
}

static void tp_init(void *arg)
{
    tpool_t *tp = arg;
    int rc = tp->init(tp->initarg, tp->initarg_len);
    if (rc && !conc_failure(NULL))
        conc_fail(rc < 0 ? rc : CONC_EFAILED, "initializer returned %d", rc);
}

int conc__tpool_new(tpool_t **out, size_t threads, conc_process_fn init, const void *initarg, size_t initarg_len)
{
    tpool_t *tp = calloc(1, sizeof *tp);
    if (!tp)
        return CONC_ENOMEM;
    conc_lock_init(&tp->mu);
    conc_cond_init(&tp->cv, &tp->mu);
    tp->dq_tail = &tp->dq;
    tp->init = init;
    if (initarg_len) {
        if (!(tp->initarg = malloc(initarg_len))) {
            free(tp);
            return CONC_ENOMEM;
        }
        memcpy(tp->initarg, initarg, initarg_len);
        tp->initarg_len = initarg_len;
    }
    conc_thread_pool_opts_t o = {.max_workers = threads,
                                 .thread_name_prefix = "ThreadPool",
                                 .initializer = init ? tp_init : NULL,
                                 .initarg = tp};
    int rc = conc_thread_pool_new(&tp->ex, &o);
    if (rc) {
        free(tp->initarg);
        free(tp);
        return rc;
    }
    *out = tp;
    return 0;
}

int conc__tpool_submit(tpool_t *tp, conc_future_t *f, conc_pool_fn fn, const void *items, size_t item_size,
                       size_t count, bool apply)
{
    job_t *j = calloc(1, sizeof *j);
    size_t total = 0;
    if (!j)
        return CONC_ENOMEM;
    j->off = malloc(2 * (count ? count : 1) * sizeof *j->off);
    if (!j->off) {
        free(j);
        return CONC_ENOMEM;
    }
    j->len = j->off + (count ? count : 1);
    for (size_t i = 0; i < count; i++) {
        size_t l = item_size ? item_size : ((const conc_buf_t *)items)[i].len;
        if (!item_size && l && !((const conc_buf_t *)items)[i].data) {
            free(j->off);
            free(j);
            return CONC_EINVAL;
        }
        j->off[i] = total;
        j->len[i] = l;
        total += l;
    }
    j->data = malloc(total ? total : 1);
    if (!j->data) {
        free(j->off);
        free(j);
        return CONC_ENOMEM;
    }
    if (item_size && total)
        memcpy(j->data, items, total);
    else
        for (size_t i = 0; i < count; i++)
            if (j->len[i])
                memcpy(j->data + j->off[i], ((const conc_buf_t *)items)[i].data, j->len[i]);
    j->tp = tp;
    j->fn = fn;
    j->count = count;
    j->apply = apply;
    conc_cond_acquire(&tp->cv, true, CONC_FOREVER);
    tp->pending++;
    conc_cond_release(&tp->cv);
    j->f = f;
    conc_future_t *ef;
    int rc = conc_submit(tp->ex, &ef, job_run, j);
    if (rc) {
        j->f = conc_future_ref(f); /* job_free drops the job's reference; the caller keeps f */
        job_free(j);
        return rc;
    }
    if (conc_future_add_done_callback(ef, job_done, j) != 0 && conc_future_cancelled(ef))
        job_done(ef, j);
    conc_future_free(ef);
    return 0;
}

void conc__tpool_close(tpool_t *tp)
{
    conc_executor_shutdown(tp->ex, false, false);
}

void conc__tpool_terminate(tpool_t *tp)
{
    conc_executor_shutdown(tp->ex, false, true);
}

int conc__tpool_join(tpool_t *tp, int64_t deadline)
{
    conc_cond_acquire(&tp->cv, true, CONC_FOREVER);
    int rc = 0;
    while (tp->pending) {
        double left = CONC_FOREVER;
        if (deadline != CONC__NO_DEADLINE) {
            int64_t l = deadline - conc__now_ns();
            if (l <= 0) {
                rc = CONC_ETIMEDOUT;
                break;
            }
            left = l / 1e9;
        }
        conc_cond_wait(&tp->cv, left);
    }
    conc_cond_release(&tp->cv);
    if (rc == 0)
        conc_executor_shutdown(tp->ex, true, false);
    return rc;
}

void conc__tpool_destroy(tpool_t *tp)
{
    if (!tp)
        return;
    conc__tpool_terminate(tp);
    conc__tpool_join(tp, CONC__NO_DEADLINE);
    conc_cond_acquire(&tp->cv, true, CONC_FOREVER);
    tp->rstop = true;
    bool rt = tp->rthread;
    conc_cond_notify_all(&tp->cv);
    conc_cond_release(&tp->cv);
    if (rt)
        pthread_join(tp->rt, NULL);
    conc_executor_free(tp->ex);
    free(tp->initarg);
    free(tp);
}
