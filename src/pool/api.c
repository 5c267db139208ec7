/*
 * api.c — the public faces of the process-pool engine (engine.c):
 * ProcessPoolExecutor (an Executor: conc_submit, conc_map,
 * conc_executor_shutdown/free work on it), multiprocessing.Pool, the
 * map results and the imap iterators.
 *
 * A map is cut into chunks; each chunk is one task with one future whose
 * result is the chunk's outcome block (cres_t: one outcome per item). A
 * conc_results_t is just the array of chunk futures; imap yields from
 * them in order, imap_unordered in the order the chunks complete (a done
 * callback queues each finished chunk for the iterator).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/time.h"
#include "futures/internal.h"
#include "pool/internal.h"
#include "pool/remote.h"

/* ------------------------------------------------------------ targets */

/* Where tasks go: the local engine, or a remote backend's executor
 * (libconc_mpi, see remote.h). */
typedef struct {
    engine_t *e;
    conc_executor_t *rex;
    const conc__pool_remote_t *r;
    tpool_t *tp;            /* a ThreadPool: jobs run in its threads */
} tgt_t;

/* An executor that runs tasks in this process (rex without e or r):
 * bytes tasks go to it as bytes.c jobs. */
static conc_executor_t *tgt_local(const tgt_t *t)
{
    return !t->e && !t->r && !t->tp ? t->rex : NULL;
}

#define REMOTE_MAX 4
static const conc__pool_remote_t *_Atomic remotes[REMOTE_MAX];

int conc__pool_remote_add(const conc__pool_remote_t *r)
{
    for (int i = 0; i < REMOTE_MAX; i++) {
        const conc__pool_remote_t *cur = atomic_load(&remotes[i]);
        if (cur == r)
            return 0;
        if (!cur && atomic_compare_exchange_strong(&remotes[i], &cur, r))
            return 0;
    }
    return CONC_ENOMEM;
}

static const conc__pool_remote_t *remote_of(conc_executor_t *ex)
{
    for (int i = 0; ex && ex->ops && i < REMOTE_MAX; i++) {
        const conc__pool_remote_t *r = atomic_load(&remotes[i]);
        if (r && r->ops == ex->ops)
            return r;
    }
    return NULL;
}

static int tgt_task_new(tgt_t *t, task_t **out, const conc_registration_t *reg, uint32_t kind, const void *items,
                        size_t item_size, size_t count, bool borrow)
{
    /* a remote backend copies a borrowed task's items when it queues it */
    return conc__task_new(t->e, out, reg, kind, items, item_size, count, borrow);
}

/* Queue tasks, all or none; the caller frees them when the target is a
 * remote backend (it copies what it keeps). */
static int tgt_submit(tgt_t *t, task_t **ts, size_t n)
{
    if (t->e)
        return conc__engine_submit(t->e, ts, n);
    conc__rtask_t *rt = calloc(n ? n : 1, sizeof *rt);
    if (!rt)
        return CONC_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        task_t *k = ts[i];
        rt[i] = (conc__rtask_t){k->f, k->wire, k->ext ? k->headlen : k->wirelen, k->ext,
                                k->ext ? ((const wtask_t *)k->wire)->datalen : 0, k->kind, k->count};
    }
    int rc = t->r->submit(t->rex, rt, n);
    free(rt);
    if (rc == 0)
        for (size_t i = 0; i < n; i++)
            conc__task_free(ts[i]);
    return rc;
}

/* ------------------------------------------------------------ results */

struct conc_results {
    size_t n, chunksize, nchunks;
    conc_future_t **fs;
};

static const cres_t *fut_cres(conc_future_t *f)
{
    if (conc_future_state(f) != CONC_FUTURE_FINISHED || f->code) /* acquire load */
        return NULL;
    const cres_t *c = f->result;
    if (!c)
        return NULL;
    /* ours: the block the executor attached, or a bytes.c job's result */
    if ((const void *)f->owned != (const void *)c &&
        !(f->owned_free == conc__bytes_free && conc__bytes_result(f->owned) == (const void *)c))
        return NULL;
    if (c->magic != CRES_MAGIC)
        return NULL;
    return c;
}

int conc_future_bytes(conc_future_t *f, double timeout, const void **data, size_t *len)
{
    void *r;
    int rc = conc_future_result(f, timeout, &r);
    if (rc)
        return rc;
    const cres_t *c = fut_cres(f);
    if (!c || c->count != 1)
        return CONC_EINVAL;
    uint64_t off;
    uint32_t n;
    cres_item(c, 0, &off, &n);
    if (data)
        *data = cres_data((cres_t *)c) + off;
    if (len)
        *len = n;
    return 0;
}

/* Item j of chunk future f (done): its own code (the task's failure code,
 * or CONC_ECANCELLED for a cancelled chunk), data and length. */
static int chunk_item_code(conc_future_t *f, size_t j, const void **data, size_t *len)
{
    const cres_t *c = fut_cres(f);
    if (!c) {
        int code = 0;
        const char *msg = "";
        if (conc_future_cancelled(f)) {
            code = CONC_ECANCELLED;
            msg = "cancelled";
        } else {
            conc_future_exception(f, 0, &code, &msg);
            if (!code)
                code = CONC_EINVAL;
        }
        if (data)
            *data = msg ? msg : "";
        if (len)
            *len = msg ? strlen(msg) : 0;
        return code;
    }
    if (j >= c->count)
        return CONC_EINVAL;
    uint64_t off;
    uint32_t n;
    int32_t code = cres_item(c, j, &off, &n);
    if (data)
        *data = cres_data((cres_t *)c) + off;
    if (len)
        *len = code ? (n ? n - 1 : 0) : n;
    return code;
}

/* The outcome rule (conc/base.h): a failed item is CONC_EFAILED whatever
 * its code; a cancelled chunk stays CONC_ECANCELLED. */
static int outcome(int code, conc_future_t *f)
{
    if (code == 0)
        return 0;
    return conc_future_cancelled(f) ? CONC_ECANCELLED : CONC_EFAILED;
}

static int chunk_item(conc_future_t *f, size_t j, const void **data, size_t *len)
{
    return outcome(chunk_item_code(f, j, data, len), f);
}

size_t conc_results_len(const conc_results_t *r) { return r ? r->n : 0; }

int conc_results_item(const conc_results_t *r, size_t i, const void **data, size_t *len)
{
    if (!r || i >= r->n)
        return CONC_EINVAL;
    return chunk_item(r->fs[i / r->chunksize], i % r->chunksize, data, len);
}

int conc_results_exception(const conc_results_t *r, size_t i, int *code, const char **msg)
{
    if (!r || i >= r->n)
        return CONC_EINVAL;
    const void *d = NULL;
    int c = chunk_item_code(r->fs[i / r->chunksize], i % r->chunksize, &d, NULL);
    if (code)
        *code = c;
    if (msg)
        *msg = c ? (const char *)d : NULL;
    return 0;
}

int conc_results_copy(const conc_results_t *r, void *dst, size_t item_size)
{
    if (!r || (!dst && r->n))
        return CONC_EINVAL;
    for (size_t c = 0; c < r->nchunks; c++) {
        size_t first = c * r->chunksize;
        const cres_t *cr = fut_cres(r->fs[c]);
        if (!cr) /* the chunk failed as a whole: its first item says why */
            return conc_results_item(r, first, NULL, NULL);
        const unsigned char *data = cres_data((cres_t *)cr);
        char *out = (char *)dst + first * item_size;
        if (!cr->table && cr->unilen == item_size) { /* one block, in item order */
            if (cr->count && item_size)
                memcpy(out, data, (size_t)cr->count * item_size);
            continue;
        }
        for (size_t j = 0; j < cr->count; j++) {
            uint64_t off;
            uint32_t len;
            int32_t code = cres_item(cr, j, &off, &len);
            if (code)
                return CONC_EFAILED;
            if (len != item_size)
                return CONC_ERANGE;
            memcpy(out + j * item_size, data + off, item_size);
        }
    }
    return 0;
}

static void results_drop(conc_results_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nchunks; i++)
        if (r->fs[i]) {
            /* A chunk's block goes back to the cache for the next map.
             * Only this object ever handed the future out, and the
             * engine never looks at a finished one's result again. */
            cres_t *c = (cres_t *)fut_cres(r->fs[i]);
            if (c && !r->fs[i]->owned_free) { /* a pooled block goes with the future */
                r->fs[i]->owned = NULL;
                conc__cres_release(c);
            }
            conc_future_free(r->fs[i]);
        }
    free(r->fs);
}

void conc_results_free(conc_results_t *r)
{
    results_drop(r);
    free(r);
}

/* Cut the items into chunk tasks and submit them; fills r (n, chunksize,
 * nchunks, fs). On error nothing stays queued. borrow: a blocking map,
 * whose items stay valid until it returns — big chunks of fixed-size items
 * are then read from the caller's array when dispatched, not copied
 * first (see do_map for the early return). */
static int submit_chunks(tgt_t *e, conc_pool_fn fn, const void *items, size_t item_size, size_t n,
                         size_t chunksize, conc_results_t *r, void (*cb)(conc_future_t *, void *), char *cbargs,
                         size_t cbstride, bool borrow)
{
    tpool_t *tp = e->tp;
    bool local = tp || tgt_local(e); /* tasks run in this process: fn need not be registered */
    const conc_registration_t *reg = local ? NULL : conc__pool_entry((void (*)(void))fn, false);
    if ((!reg && !(local && fn)) || (n && !items))
        return CONC_EINVAL;
    if (chunksize == 0)
        chunksize = 1;
    r->n = n;
    r->chunksize = chunksize;
    r->nchunks = n ? (n - 1) / chunksize + 1 : 0;
    r->fs = calloc(r->nchunks ? r->nchunks : 1, sizeof *r->fs);
    task_t **ts = calloc(r->nchunks ? r->nchunks : 1, sizeof *ts);
    int rc = 0;
    if (!r->fs || !ts)
        rc = CONC_ENOMEM;
    for (size_t c = 0; rc == 0 && c < r->nchunks; c++) {
        size_t first = c * chunksize, cnt = n - first < chunksize ? n - first : chunksize;
        const void *base = item_size ? (const char *)items + first * item_size
                                     : (const void *)((const conc_buf_t *)items + first);
        if (tgt_local(e)) {
            conc_future_t *f;
            if ((rc = conc__bytes_submit(tgt_local(e), &f, fn, base, item_size, cnt, true)) != 0)
                break;
            r->fs[c] = f;
            if (cb && (rc = conc__future_add_callback(f, cb, cbargs + c * cbstride, NULL)) != 0) {
                conc_future_cancel(f);
                conc_future_free(f), r->fs[c] = NULL;
                break;
            }
            continue;
        }
        if (tp) {
            conc_future_t *f = conc__future_alloc();
            if (!f) {
                rc = CONC_ENOMEM;
                break;
            }
            r->fs[c] = conc_future_ref(f);
            if (cb && (rc = conc__future_add_callback(r->fs[c], cb, cbargs + c * cbstride, NULL)) != 0) {
                conc_future_free(f);
                conc_future_free(r->fs[c]), r->fs[c] = NULL;
                break;
            }
            /* queued at once: a failure later cancels what is already queued */
            if ((rc = conc__tpool_submit(tp, f, fn, base, item_size, cnt, false)) != 0)
                conc_future_free(f);
            continue;
        }
        rc = tgt_task_new(e, &ts[c], reg, K_CHUNK, base, item_size, cnt, borrow);
        if (rc == 0 && !(ts[c]->f = conc__future_alloc()))
            rc = CONC_ENOMEM;
        if (rc == 0)
            r->fs[c] = conc_future_ref(ts[c]->f);
        if (rc == 0 && cb && (rc = conc__future_add_callback(r->fs[c], cb, cbargs + c * cbstride, NULL)) != 0)
            conc_future_free(r->fs[c]), r->fs[c] = NULL;
    }
    if (rc == 0 && !local)
        rc = tgt_submit(e, ts, r->nchunks);
    if (rc) {
        for (size_t c = 0; c < r->nchunks; c++) {
            if (r->fs[c] && (cb || tgt_local(e)))
                conc_future_cancel(r->fs[c]); /* runs cb: the iterator counts it */
            if (!local)
                conc__task_free(ts ? ts[c] : NULL);
        }
        results_drop(r);
        r->fs = NULL;
        r->nchunks = 0;
    }
    free(ts);
    return rc;
}

/* Wait for every chunk; cancel the rest on timeout. */
static int wait_chunks(conc_results_t *r, int64_t deadline)
{
    for (size_t c = 0; c < r->nchunks; c++)
        if (conc__future_wait_done(r->fs[c], deadline) != 0) {
            for (size_t k = 0; k < r->nchunks; k++)
                conc_future_cancel(r->fs[k]);
            return CONC_ETIMEDOUT;
        }
    /* the first failed item, in item order: whole chunks are skipped
     * unless they hold a failure */
    for (size_t c = 0; c < r->nchunks; c++) {
        const cres_t *cr = fut_cres(r->fs[c]);
        if (cr && cr->nfail == 0)
            continue;
        size_t first = c * r->chunksize, end = first + r->chunksize < r->n ? first + r->chunksize : r->n;
        for (size_t i = first; i < end; i++) {
            int rc = conc_results_item(r, i, NULL, NULL);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static int do_map(tgt_t *e, conc_pool_fn fn, const void *items, size_t item_size, size_t n, size_t chunksize,
                  int64_t deadline, conc_results_t **out)
{
    conc_results_t *r = calloc(1, sizeof *r);
    if (!r)
        return CONC_ENOMEM;
    int rc = submit_chunks(e, fn, items, item_size, n, chunksize, r, NULL, NULL, 0, !e->tp && !tgt_local(e));
    if (rc) {
        free(r);
        return rc;
    }
    rc = wait_chunks(r, deadline);
    if (rc == CONC_ETIMEDOUT) {
        /* chunks that could not be cancelled (dispatched once, sent back
         * by a full queue) may still wait: they get their own copy */
        if (e->e)
            conc__engine_unborrow(e->e);
        conc_results_free(r);
        return rc;
    }
    *out = r;
    return rc;
}

static int submit_one(tgt_t *e, conc_future_t **out, const conc_registration_t *reg, uint32_t kind,
                      const void *arg, size_t len, conc_future_cb cb, void *cbarg)
{
    task_t *t;
    int rc = tgt_task_new(e, &t, reg, kind, arg, len, 1, false);
    if (rc)
        return rc;
    if (!(t->f = conc__future_alloc())) {
        conc__task_free(t);
        return CONC_ENOMEM;
    }
    conc_future_t *f = out ? conc_future_ref(t->f) : NULL;
    if (cb && (rc = conc__future_add_callback(t->f, cb, cbarg, free)) != 0) {
        if (f)
            conc_future_free(f);
        conc__task_free(t);
        return rc;
    }
    rc = tgt_submit(e, &t, 1);
    if (rc) {
        if (f)
            conc_future_free(f);
        conc__task_free(t); /* the callback's arg is discarded with it */
        return rc;
    }
    if (out)
        *out = f;
    return 0;
}

/* ------------------------------------------------ ProcessPoolExecutor */

typedef struct {
    conc_executor_t base;
    engine_t *e;
} ppe_t;

/* conc_submit / conc_map on a process pool: refused. The pthread-shaped
 * task's void * would have to travel by value (a pointer means nothing in
 * the worker); that is conc_process_pool_submit_word, asked for by name. */
static int ppe_submit_refused(conc_executor_t *ex, conc_future_t **out, void *(*fn)(void *), void *arg)
{
    (void)ex, (void)out, (void)fn, (void)arg;
    return CONC_ENOTSUP;
}

static int ppe_shutdown(conc_executor_t *ex, bool wait, bool cancel_futures)
{
    ppe_t *p = (ppe_t *)ex;
    conc__engine_close(p->e, cancel_futures);
    if (wait)
        conc__engine_join(p->e, CONC__NO_DEADLINE);
    return 0;
}

static void ppe_destroy(conc_executor_t *ex)
{
    ppe_t *p = (ppe_t *)ex;
    conc__engine_destroy(p->e);
    free(p);
}

static const conc_executor_ops_t ppe_ops = {"ProcessPoolExecutor", ppe_submit_refused, ppe_shutdown, ppe_destroy};

static engine_t *ppe_engine(conc_executor_t *ex)
{
    return ex && ex->ops == &ppe_ops ? ((ppe_t *)ex)->e : NULL;
}

/* A process pool executor, or one of a remote backend: false otherwise. */
static bool ppe_target(conc_executor_t *ex, tgt_t *t)
{
    *t = (tgt_t){ppe_engine(ex), ex, NULL, NULL};
    if (!t->e && atomic_load_explicit(&remotes[0], memory_order_acquire)) /* any backend at all */
        t->r = remote_of(ex);
    return t->e || t->r;
}

static int submit_word(conc_executor_t *ex, conc_future_t **out, void *(*fn)(void *), void *arg)
{
    tgt_t t;
    const conc_registration_t *reg = fn ? conc__pool_entry((void (*)(void))fn, true) : NULL;
    if (!ppe_target(ex, &t) || !out || !reg)
        return CONC_EINVAL;
    uint64_t v = (uint64_t)(uintptr_t)arg;
    return submit_one(&t, out, reg, K_WORD, &v, 8, NULL, NULL);
}

/* A remote backend's conc_submit: refused as on a local process pool. */
int conc__pool_remote_submit_word(conc_executor_t *ex, conc_future_t **out, void *(*fn)(void *), void *arg)
{
    return ppe_submit_refused(ex, out, fn, arg);
}

int conc_process_pool_submit_word(conc_executor_t *ex, conc_future_t **out, void *(*fn)(void *), void *word)
{
    return submit_word(ex, out, fn, word);
}

/* The word view conc_process_pool_map_word hands to conc_map: its
 * submits are word submits to the real pool. Lives on the caller's
 * stack for the duration of the map (conc_map keeps no executor). */
typedef struct {
    conc_executor_t base;
    conc_executor_t *real;
} word_view_t;

static int view_submit(conc_executor_t *ex, conc_future_t **out, void *(*fn)(void *), void *arg)
{
    return submit_word(((word_view_t *)ex)->real, out, fn, arg);
}

static int view_shutdown(conc_executor_t *ex, bool wait, bool cancel_futures)
{
    (void)ex, (void)wait, (void)cancel_futures;
    return 0;
}

static void view_destroy(conc_executor_t *ex) { (void)ex; }

static const conc_executor_ops_t view_ops = {"ProcessPoolExecutor(words)", view_submit, view_shutdown,
                                             view_destroy};

int conc_process_pool_map_word(conc_executor_t *ex, void *(*fn)(void *), void *const *words, size_t n,
                               void **results, const conc_map_opts_t *opts)
{
    tgt_t t;
    if (!ppe_target(ex, &t))
        return CONC_EINVAL;
    word_view_t v = {{&view_ops}, ex};
    return conc_map(&v.base, fn, words, n, results, opts);
}

int conc_process_pool_new(conc_executor_t **out, const conc_process_pool_opts_t *opts)
{
    if (!out)
        return CONC_EINVAL;
    conc_process_pool_opts_t o = {0};
    if (opts)
        o = *opts;
    if (o.max_tasks_per_child && o.method == CONC_FORK)
        return CONC_EINVAL; /* replacements would be forks of a threaded parent */
    if (o.max_tasks_per_child && o.method == CONC_START_DEFAULT && conc_get_start_method() == CONC_FORK)
        o.method = CONC_FORKSERVER; /* Python picks spawn here; the fork server is ours */
    engine_opts_t eo = {o.max_workers ? o.max_workers : (size_t)conc_cpu_count(),
                        o.method,
                        o.initializer,
                        o.initarg,
                        o.initarg_len,
                        o.max_tasks_per_child,
                        o.queue_capacity};
    ppe_t *p = calloc(1, sizeof *p);
    if (!p)
        return CONC_ENOMEM;
    p->base.ops = &ppe_ops;
    int rc = conc__engine_new(&p->e, E_EXECUTOR, &eo);
    if (rc) {
        free(p);
        return rc;
    }
    *out = &p->base;
    return 0;
}

static int force_stop(conc_executor_t *ex, int sig)
{
    engine_t *e = ppe_engine(ex);
    if (!e)
        return CONC_EINVAL;
    conc__engine_force_stop(e, sig);
    return 0;
}

int conc_process_pool_terminate_workers(conc_executor_t *ex) { return force_stop(ex, SIGTERM); }
int conc_process_pool_kill_workers(conc_executor_t *ex) { return force_stop(ex, SIGKILL); }

/* Where a bytes call on ex goes: a process pool or a remote backend, or
 * (any other executor) bytes.c jobs run by ex in this process. */
static bool bytes_target(conc_executor_t *ex, tgt_t *t)
{
    if (ppe_target(ex, t))
        return true;
    *t = (tgt_t){NULL, ex, NULL, NULL};
    return ex && ex->ops;
}

int conc_submit_bytes(conc_executor_t *ex, conc_future_t **out, conc_pool_fn fn, const void *arg, size_t len)
{
    if (!ex || !ex->ops || !out || !fn || (!arg && len))
        return CONC_EINVAL;
    tgt_t t;
    if (!ppe_target(ex, &t)) /* an executor that runs tasks in this process */
        return conc__bytes_submit_one(ex, out, fn, arg, len);
    const conc_registration_t *reg = conc__pool_entry((void (*)(void))fn, false);
    if (!reg)
        return CONC_EINVAL;
    return submit_one(&t, out, reg, K_BYTES, arg, len, NULL, NULL);
}

int conc_map_bytes(conc_executor_t *ex, conc_pool_fn fn, const void *items, size_t item_size, size_t n,
                   size_t chunksize, double timeout, conc_results_t **out)
{
    tgt_t t;
    int64_t deadline;
    if (!bytes_target(ex, &t) || !fn || !out || conc__deadline(timeout, &deadline))
        return CONC_EINVAL;
    *out = NULL;
    return do_map(&t, fn, items, item_size, n, chunksize, deadline, out);
}

int conc_process_pool_submit(conc_executor_t *ex, conc_future_t **out, conc_pool_fn fn, const void *arg,
                             size_t len)
{
    return conc_submit_bytes(ex, out, fn, arg, len);
}

int conc_process_pool_map(conc_executor_t *ex, conc_pool_fn fn, const void *items, size_t item_size, size_t n,
                          size_t chunksize, double timeout, conc_results_t **out)
{
    return conc_map_bytes(ex, fn, items, item_size, n, chunksize, timeout, out);
}

size_t conc_process_pool_pids(conc_executor_t *ex, int *pids, size_t cap)
{
    engine_t *e = ppe_engine(ex);
    return e ? conc__engine_pids(e, pids, cap) : 0;
}

/* ---------------------------------------------------- multiprocessing.Pool */

struct conc_pool {
    engine_t *e;            /* Pool: the process engine; or */
    tpool_t *tp;            /* ThreadPool: the thread backend (threads.c) */
    size_t processes;
    int state; /* 0 running, 1 closed, 2 terminated */
};

int conc_threadpool_new(conc_pool_t **out, const conc_pool_opts_t *opts)
{
    if (!out)
        return CONC_EINVAL;
    conc_pool_opts_t o = {0};
    if (opts)
        o = *opts;
    if ((o.initarg_len && !o.initarg) || o.processes > 4096)
        return CONC_EINVAL;
    conc_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return CONC_ENOMEM;
    p->processes = o.processes ? o.processes : (size_t)conc_cpu_count();
    int rc = conc__tpool_new(&p->tp, p->processes, o.initializer, o.initarg, o.initarg_len);
    if (rc) {
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

int conc_pool_new(conc_pool_t **out, const conc_pool_opts_t *opts)
{
    if (!out)
        return CONC_EINVAL;
    conc_pool_opts_t o = {0};
    if (opts)
        o = *opts;
    engine_opts_t eo = {o.processes ? o.processes : (size_t)conc_cpu_count(),
                        o.method,
                        o.initializer,
                        o.initarg,
                        o.initarg_len,
                        o.maxtasksperchild,
                        o.queue_capacity};
    conc_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return CONC_ENOMEM;
    p->processes = eo.workers;
    int rc = conc__engine_new(&p->e, E_POOL, &eo);
    if (rc) {
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

tpool_t *conc__pool_tpool(const conc_pool_t *p) { return p ? p->tp : NULL; }

static int pool_rc(int rc)
{
    return rc == CONC_ESHUTDOWN ? CONC_EINVAL : rc; /* ValueError: Pool not running */
}

typedef struct {
    conc_pool_callback cb;
    conc_pool_error_callback ecb;
    void *arg;
    tpool_t *tp;        /* a ThreadPool's: run the callback on its result thread */
    conc_future_t *f;   /* (a deferred copy holds a reference) */
} apply_cb_t;

static void apply_run(conc_future_t *f, apply_cb_t *a);

static void apply_deferred(void *p)
{
    apply_cb_t *a = p;
    apply_run(a->f, a);
    conc_future_free(a->f);
    free(a);
}

static void apply_done(conc_future_t *f, void *p)
{
    apply_cb_t *a = p;
    if (a->tp) { /* CPython's ThreadPool: callbacks on the result thread, not the worker */
        apply_cb_t *d = malloc(sizeof *d);
        if (d) {
            *d = *a;
            d->f = conc_future_ref(f);
            if (conc__tpool_defer(a->tp, apply_deferred, d) == 0) {
                free(a);
                return;
            }
            conc_future_free(d->f);
            free(d);
        }
    }
    apply_run(f, a);
    free(a);
}

static void apply_run(conc_future_t *f, apply_cb_t *a)
{
    const void *d;
    size_t n;
    int rc = conc_future_bytes(f, 0, &d, &n);
    if (rc == 0) {
        if (a->cb)
            a->cb(d, n, a->arg);
    } else if (a->ecb) {
        int code = rc;
        const char *msg = "cancelled";
        if (rc != CONC_ECANCELLED)
            conc_future_exception(f, 0, &code, &msg);
        a->ecb(code, msg ? msg : "", a->arg);
    }
}

int conc_pool_apply_async(conc_pool_t *p, conc_pool_fn fn, const void *arg, size_t len,
                          conc_pool_callback callback, conc_pool_error_callback error_callback, void *cbarg,
                          conc_future_t **out)
{
    const conc_registration_t *reg = fn && p && !p->tp ? conc__pool_entry((void (*)(void))fn, false) : NULL;
    if (!p || !fn || (!reg && !p->tp) || (!arg && len))
        return CONC_EINVAL;
    if (p->state)
        return CONC_EINVAL;
    apply_cb_t *a = NULL;
    if (callback || error_callback) {
        if (!(a = malloc(sizeof *a)))
            return CONC_ENOMEM;
        *a = (apply_cb_t){callback, error_callback, cbarg, p->tp, NULL};
    }
    if (p->tp) {
        conc_future_t *f = conc__future_alloc(), *mine = NULL;
        int rc = f ? 0 : CONC_ENOMEM;
        if (rc == 0 && out)
            mine = conc_future_ref(f);
        if (rc == 0 && a && (rc = conc__future_add_callback(f, apply_done, a, free)) == 0)
            a = NULL; /* the future owns it now */
        if (rc == 0) {
            conc_buf_t one = {arg, len};
            rc = conc__tpool_submit(p->tp, f, fn, &one, 0, 1, true);
        }
        if (rc) {
            if (mine)
                conc_future_free(mine);
            if (f)
                conc_future_free(f);
            free(a);
            return pool_rc(rc);
        }
        if (out)
            *out = mine;
        return 0;
    }
    tgt_t t = {p->e, NULL, NULL, NULL};
    int rc = submit_one(&t, out, reg, K_BYTES, arg, len, a ? apply_done : NULL, a);
    return pool_rc(rc);
}

int conc_pool_apply(conc_pool_t *p, conc_pool_fn fn, const void *arg, size_t len, void **data, size_t *rlen)
{
    if (!data || !rlen)
        return CONC_EINVAL;
    conc_future_t *f;
    int rc = conc_pool_apply_async(p, fn, arg, len, NULL, NULL, NULL, &f);
    if (rc)
        return rc;
    const void *d;
    size_t n;
    rc = conc_future_bytes(f, CONC_FOREVER, &d, &n);
    if (rc == 0) {
        void *c = malloc(n ? n : 1);
        if (!c) {
            rc = CONC_ENOMEM;
        } else {
            if (n)
                memcpy(c, d, n);
            *data = c;
            *rlen = n;
        }
    }
    conc_future_free(f);
    return rc;
}

int conc_pool_map(conc_pool_t *p, conc_pool_fn fn, const void *items, size_t item_size, size_t n,
                  size_t chunksize, conc_results_t **out)
{
    if (!p || !fn || !out)
        return CONC_EINVAL;
    *out = NULL;
    if (p->state)
        return CONC_EINVAL;
    if (chunksize == 0) {
        size_t d = p->processes * 4;
        chunksize = n / d + (n % d ? 1 : 0);
    }
    tgt_t t = {p->e, NULL, NULL, p->tp};
    return pool_rc(do_map(&t, fn, items, item_size, n, chunksize, CONC__NO_DEADLINE, out));
}

/* Start a map without waiting (map_async): as conc_pool_map, but the
 * items are copied and *out (r's chunks: conc__results_chunk) is returned
 * at once. */
int conc__pool_map_start(conc_pool_t *p, conc_pool_fn fn, const void *items, size_t item_size, size_t n,
                         size_t chunksize, conc_results_t **out)
{
    if (!p || !fn || !out)
        return CONC_EINVAL;
    *out = NULL;
    if (p->state)
        return CONC_EINVAL;
    if (chunksize == 0) {
        size_t d = p->processes * 4;
        chunksize = n / d + (n % d ? 1 : 0);
    }
    conc_results_t *r = calloc(1, sizeof *r);
    if (!r)
        return CONC_ENOMEM;
    tgt_t t = {p->e, NULL, NULL, p->tp};
    int rc = submit_chunks(&t, fn, items, item_size, n, chunksize, r, NULL, NULL, 0, false);
    if (rc) {
        free(r);
        return pool_rc(rc);
    }
    *out = r;
    return 0;
}

size_t conc__results_nchunks(const conc_results_t *r) { return r->nchunks; }
size_t conc__results_chunksize(const conc_results_t *r) { return r->chunksize; }
conc_future_t *conc__results_chunk(const conc_results_t *r, size_t c) { return r->fs[c]; }

/* ------------------------------------------------------------- imap */

typedef struct {
    struct conc_pool_iter *it;
    size_t idx;
} islot_t;

struct conc_pool_iter {
    islot_t *slots;          /* unordered: the callbacks' arguments */
    conc_results_t r;
    bool ordered;
    size_t yielded;          /* items handed out */
    size_t cur, cur_j;       /* chunk being read, next item in it */
    bool have_cur;
    /* unordered: chunks finished, in completion order */
    conc_rlock_t mu;
    conc_cond_t cv;
    size_t *ready;
    size_t nready, rpos;
    int last_code;           /* the last item's own failure code */
    const char *last_msg;
    int refs;                /* the iterator + one per pending callback */
};

static void iter_unref(conc_pool_iter_t *it)
{
    if (atomic_fetch_sub((_Atomic int *)&it->refs, 1) == 1) {
        results_drop(&it->r);
        free(it->ready);
        free(it->slots);
        free(it);
    }
}

static void iter_chunk_done(conc_future_t *f, void *p)
{
    (void)f;
    islot_t *s = p;
    conc_pool_iter_t *it = s->it;
    conc_cond_acquire(&it->cv, true, CONC_FOREVER);
    it->ready[it->nready++] = s->idx;
    conc_cond_notify_all(&it->cv);
    conc_cond_release(&it->cv);
    iter_unref(it);
}

static int imap_common(conc_pool_t *p, conc_pool_fn fn, const void *items, size_t item_size, size_t n,
                       size_t chunksize, bool ordered, conc_pool_iter_t **out)
{
    if (!p || !fn || !out)
        return CONC_EINVAL;
    if (p->state)
        return CONC_EINVAL;
    conc_pool_iter_t *it = calloc(1, sizeof *it);
    if (!it)
        return CONC_ENOMEM;
    it->ordered = ordered;
    it->refs = 1;
    conc_rlock_init(&it->mu);
    conc_cond_init_rlock(&it->cv, &it->mu);
    int rc;
    if (ordered) {
        tgt_t t = {p->e, NULL, NULL, p->tp};
        rc = submit_chunks(&t, fn, items, item_size, n, chunksize, &it->r, NULL, NULL, 0, false);
    } else {
        size_t cs = chunksize ? chunksize : 1;
        size_t nch = n ? (n - 1) / cs + 1 : 0;
        it->ready = malloc((nch ? nch : 1) * sizeof *it->ready);
        it->slots = malloc((nch ? nch : 1) * sizeof *it->slots);
        if (!it->ready || !it->slots) {
            free(it->ready);
            free(it->slots);
            free(it);
            return CONC_ENOMEM;
        }
        for (size_t k = 0; k < nch; k++)
            it->slots[k] = (islot_t){it, k};
        it->refs = 1 + (int)nch;
        /* fs[] must be complete before a callback searches it: hold the
         * lock while submitting (callbacks wait for it). */
        conc_cond_acquire(&it->cv, true, CONC_FOREVER);
        tgt_t t = {p->e, NULL, NULL, p->tp};
        rc = submit_chunks(&t, fn, items, item_size, n, chunksize, &it->r, iter_chunk_done,
                           (char *)it->slots, sizeof *it->slots, false);
        conc_cond_release(&it->cv);
        if (rc) {
            /* callbacks of cancelled chunks ran and dropped their refs;
             * the ones never registered did not */
            it->refs = 1;
        }
    }
    if (rc) {
        iter_unref(it);
        return pool_rc(rc);
    }
    *out = it;
    return 0;
}

int conc_pool_imap(conc_pool_t *p, conc_pool_fn fn, const void *items, size_t item_size, size_t n,
                   size_t chunksize, conc_pool_iter_t **out)
{
    return imap_common(p, fn, items, item_size, n, chunksize, true, out);
}

int conc_pool_imap_unordered(conc_pool_t *p, conc_pool_fn fn, const void *items, size_t item_size, size_t n,
                             size_t chunksize, conc_pool_iter_t **out)
{
    return imap_common(p, fn, items, item_size, n, chunksize, false, out);
}

int conc_pool_iter_next(conc_pool_iter_t *it, double timeout, const void **data, size_t *len, size_t *index)
{
    int64_t deadline;
    if (!it || conc__deadline(timeout, &deadline))
        return CONC_EINVAL;
    if (it->yielded >= it->r.n)
        return CONC_EEOF;
    if (!it->have_cur) {
        if (it->ordered) {
            it->cur = it->yielded / it->r.chunksize;
            if (conc__future_wait_done(it->r.fs[it->cur], deadline) != 0)
                return CONC_ETIMEDOUT;
        } else {
            conc_cond_acquire(&it->cv, true, CONC_FOREVER);
            while (it->rpos == it->nready) {
                double left = CONC_FOREVER;
                if (deadline != CONC__NO_DEADLINE) {
                    int64_t l = deadline - conc__now_ns();
                    if (l <= 0)
                        break;
                    left = l / 1e9;
                }
                conc_cond_wait(&it->cv, left);
            }
            bool got = it->rpos < it->nready;
            if (got)
                it->cur = it->ready[it->rpos++];
            conc_cond_release(&it->cv);
            if (!got)
                return CONC_ETIMEDOUT;
        }
        it->cur_j = 0;
        it->have_cur = true;
    }
    size_t c = it->cur, j = it->cur_j;
    size_t first = c * it->r.chunksize;
    size_t cnt = it->r.n - first < it->r.chunksize ? it->r.n - first : it->r.chunksize;
    const void *d = NULL;
    int code = chunk_item_code(it->r.fs[c], j, &d, len);
    it->last_code = code;
    it->last_msg = code ? (const char *)d : NULL;
    if (data)
        *data = d;
    int rc = outcome(code, it->r.fs[c]);
    if (index)
        *index = first + j;
    it->yielded++;
    if (++it->cur_j >= cnt)
        it->have_cur = false;
    return rc;
}

int conc_pool_iter_exception(const conc_pool_iter_t *it, int *code, const char **msg)
{
    if (!it)
        return CONC_EINVAL;
    if (code)
        *code = it->last_code;
    if (msg)
        *msg = it->last_msg;
    return 0;
}

void conc_pool_iter_free(conc_pool_iter_t *it)
{
    if (it)
        iter_unref(it);
}

int conc_pool_close(conc_pool_t *p)
{
    if (!p)
        return CONC_EINVAL;
    if (p->state == 0) {
        p->state = 1;
        if (p->tp)
            conc__tpool_close(p->tp);
        else
            conc__engine_close(p->e, false);
    }
    return 0;
}

int conc_pool_terminate(conc_pool_t *p)
{
    if (!p)
        return CONC_EINVAL;
    p->state = 2;
    if (p->tp)
        conc__tpool_terminate(p->tp);
    else
        conc__engine_terminate(p->e);
    return 0;
}

int conc_pool_join(conc_pool_t *p, double timeout)
{
    int64_t deadline;
    if (!p || conc__deadline(timeout, &deadline) || p->state == 0)
        return CONC_EINVAL;
    return p->tp ? conc__tpool_join(p->tp, deadline) : conc__engine_join(p->e, deadline);
}

int conc_pool_free(conc_pool_t *p)
{
    if (!p)
        return CONC_EINVAL;
    if (p->state != 2)
        conc_pool_terminate(p);
    if (p->tp) {
        conc__tpool_destroy(p->tp);
    } else {
        conc__engine_join(p->e, CONC__NO_DEADLINE);
        conc__engine_destroy(p->e);
    }
    free(p);
    return 0;
}

size_t conc_pool_pids(conc_pool_t *p, int *pids, size_t cap)
{
    return p && p->e ? conc__engine_pids(p->e, pids, cap) : 0;
}
