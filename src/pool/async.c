/*
 * async.c — multiprocessing.Pool's asynchronous surface: AsyncResult
 * successful / wait over an apply_async future, map_async /
 * starmap_async's MapResult, and starmap's argument tuples.
 *
 * MapResult: the map's chunks run as for map (api.c's conc_results_t);
 * a done callback on every chunk counts down `left`. The chunk that brings
 * it to 0 runs the user's callback (or error_callback with the first
 * failure, as CPython's MapResult._set does) and then sets `done`, so
 * ready() implies the callback has run. The first failure is recorded
 * under mu in the order chunks finish. refs: the user's handle + one per
 * chunk callback not yet run; the last drop frees everything.
 *
 * Tuples (starmap): [u32 argc][u32 len x argc][bytes...], packed by the
 * parent, unpacked (and checked: any bytes are safe) by conc_pool_args.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/time.h"
#include "futures/internal.h"
#include "pool/internal.h"

/* ------------------------------------------------- AsyncResult (future) */

int conc_async_successful(conc_future_t *f, bool *ok)
{
    if (!f || !ok || !conc_future_done(f))
        return CONC_EINVAL;
    int code = 0;
    if (conc_future_cancelled(f))
        code = CONC_ECANCELLED;
    else
        conc_future_exception(f, 0, &code, NULL);
    *ok = code == 0;
    return 0;
}

int conc_async_wait(conc_future_t *f, double timeout)
{
    if (!f)
        return CONC_EINVAL;
    int code;
    const char *msg;
    int rc = conc_future_exception(f, timeout, &code, &msg);
    return rc == CONC_ECANCELLED ? 0 : rc;
}

/* -------------------------------------------------------------- tuples */

int conc_pool_args(const void *arg, size_t len, conc_buf_t *argv, size_t cap, size_t *argc)
{
    if (!arg || !argc || (!argv && cap))
        return CONC_EINVAL;
    const unsigned char *b = arg;
    uint32_t n;
    if (len < 4)
        return CONC_EINVAL;
    memcpy(&n, b, 4);
    if (n > (len - 4) / 4)
        return CONC_EINVAL;
    size_t at = 4 + (size_t)n * 4, total = 0;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t l;
        memcpy(&l, b + 4 + k * 4, 4);
        total += l;
        if (total > len - at)
            return CONC_EINVAL;
    }
    if (at + total != len)
        return CONC_EINVAL;
    *argc = n;
    if (n > cap)
        return CONC_ERANGE;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t l;
        memcpy(&l, b + 4 + k * 4, 4);
        argv[k] = (conc_buf_t){b + at, l};
        at += l;
    }
    return 0;
}

/* Pack n tuples of nargs buffers: one malloc block holding n conc_buf_t
 * then the packed tuples. */
static int pack_tuples(const conc_buf_t *args, size_t nargs, size_t n, conc_buf_t **out)
{
    if ((n && !args) || nargs > UINT32_MAX / 8 || (n && nargs > SIZE_MAX / n))
        return CONC_EINVAL;
    size_t total = n * sizeof(conc_buf_t);
    for (size_t i = 0; i < n; i++) {
        size_t t = 4 + nargs * 4;
        for (size_t k = 0; k < nargs; k++) {
            const conc_buf_t *a = &args[i * nargs + k];
            if ((a->len && !a->data) || a->len > UINT32_MAX)
                return CONC_EINVAL;
            t += a->len;
        }
        if (t > UINT32_MAX)
            return CONC_ERANGE;
        total += t;
    }
    conc_buf_t *bufs = malloc(total ? total : 1);
    if (!bufs)
        return CONC_ENOMEM;
    unsigned char *p = (unsigned char *)(bufs + n);
    for (size_t i = 0; i < n; i++) {
        unsigned char *start = p;
        uint32_t c = (uint32_t)nargs;
        memcpy(p, &c, 4);
        p += 4;
        for (size_t k = 0; k < nargs; k++) {
            uint32_t l = (uint32_t)args[i * nargs + k].len;
            memcpy(p, &l, 4);
            p += 4;
        }
        for (size_t k = 0; k < nargs; k++) {
            const conc_buf_t *a = &args[i * nargs + k];
            if (a->len)
                memcpy(p, a->data, a->len);
            p += a->len;
        }
        bufs[i] = (conc_buf_t){start, (size_t)(p - start)};
    }
    *out = bufs;
    return 0;
}

int conc_pool_starmap(conc_pool_t *p, conc_pool_fn fn, const conc_buf_t *args, size_t nargs, size_t n,
                      size_t chunksize, conc_results_t **out)
{
    if (!p || !fn || !out)
        return CONC_EINVAL;
    conc_buf_t *items;
    int rc = pack_tuples(args, nargs, n, &items);
    if (rc)
        return rc;
    rc = conc_pool_map(p, fn, items, 0, n, chunksize, out);
    free(items);
    return rc;
}

/* ----------------------------------------------------------- MapResult */

struct conc_map_result {
    conc_results_t *r;
    conc_pool_map_callback cb;
    conc_pool_error_callback ecb;
    void *cbarg;
    conc_lock_t mu;
    size_t left;            /* chunks not finished (under mu) */
    int refs;               /* atomic */
    int code;               /* first failure (under mu; final once done) */
    const char *msg;        /* owned by r */
    conc_event_t done;
    tpool_t *tp;            /* a ThreadPool's: callbacks on its result thread */
};

static void mr_unref(conc_map_result_t *m)
{
    if (atomic_fetch_sub((_Atomic int *)&m->refs, 1) == 1) {
        conc_results_free(m->r);
        free(m);
    }
}

/* Every chunk is done: the user's callback, then ready(). */
static void mr_fire(void *arg)
{
    conc_map_result_t *m = arg;
    if (!m->code && m->cb)
        m->cb(m->r, m->cbarg);
    else if (m->code && m->ecb)
        m->ecb(m->code, m->msg ? m->msg : "", m->cbarg);
    conc_event_set(&m->done);
}

static void mr_fire_deferred(void *arg)
{
    mr_fire(arg);
    mr_unref(arg);
}

static void mr_finish(conc_map_result_t *m)
{
    /* a ThreadPool runs callbacks on its result thread (CPython's
     * _handle_results), not on the worker that finished the last chunk */
    if (m->tp && (m->cb || m->ecb)) {
        atomic_fetch_add((_Atomic int *)&m->refs, 1);
        if (conc__tpool_defer(m->tp, mr_fire_deferred, m) == 0)
            return;
        atomic_fetch_sub((_Atomic int *)&m->refs, 1);
    }
    mr_fire(m);
}

static void mr_chunk_done(conc_future_t *f, void *arg)
{
    (void)f;
    conc_map_result_t *m = arg;
    /* which chunk: the first not-yet-seen failure among its items */
    size_t cs = conc__results_chunksize(m->r), nch = conc__results_nchunks(m->r);
    size_t c = 0;
    while (c < nch && conc__results_chunk(m->r, c) != f)
        c++;
    int code = 0;
    const char *msg = NULL;
    size_t n = conc_results_len(m->r);
    for (size_t i = c * cs; i < n && i < (c + 1) * cs && !code; i++)
        conc_results_exception(m->r, i, &code, &msg);
    conc_lock_acquire(&m->mu, true, CONC_FOREVER);
    if (code && !m->code) {
        m->code = code;
        m->msg = msg;
    }
    bool last = --m->left == 0;
    conc_lock_release(&m->mu);
    if (last)
        mr_finish(m);
    mr_unref(m);
}

static int map_async(conc_pool_t *p, conc_pool_fn fn, const void *items, size_t item_size, size_t n,
                     size_t chunksize, conc_pool_map_callback cb, conc_pool_error_callback ecb, void *cbarg,
                     conc_map_result_t **out)
{
    conc_map_result_t *m = calloc(1, sizeof *m);
    if (!m)
        return CONC_ENOMEM;
    int rc = conc__pool_map_start(p, fn, items, item_size, n, chunksize, &m->r);
    if (rc) {
        free(m);
        return rc;
    }
    conc_lock_init(&m->mu);
    conc_event_init(&m->done);
    m->cb = cb;
    m->ecb = ecb;
    m->cbarg = cbarg;
    m->tp = conc__pool_tpool(p);
    size_t nch = conc__results_nchunks(m->r);
    m->left = nch + 1; /* + this call's own count: no callback fires early */
    m->refs = (int)nch + 2;
    for (size_t c = 0; c < nch; c++) {
        conc_future_t *f = conc__results_chunk(m->r, c);
        if (conc_future_add_done_callback(f, mr_chunk_done, m) != 0) {
            /* no memory for the callback: wait for the chunk here */
            conc__future_wait_done(f, CONC__NO_DEADLINE);
            mr_chunk_done(f, m);
        }
    }
    conc_lock_acquire(&m->mu, true, CONC_FOREVER);
    bool last = --m->left == 0;
    conc_lock_release(&m->mu);
    if (last)
        mr_finish(m);
    mr_unref(m); /* this call's reference */
    if (out)
        *out = m;
    else
        mr_unref(m);
    return 0;
}

int conc_pool_map_async(conc_pool_t *p, conc_pool_fn fn, const void *items, size_t item_size, size_t n,
                        size_t chunksize, conc_pool_map_callback callback, conc_pool_error_callback error_callback,
                        void *cbarg, conc_map_result_t **out)
{
    if (!p || !fn)
        return CONC_EINVAL;
    return map_async(p, fn, items, item_size, n, chunksize, callback, error_callback, cbarg, out);
}

int conc_pool_starmap_async(conc_pool_t *p, conc_pool_fn fn, const conc_buf_t *args, size_t nargs, size_t n,
                            size_t chunksize, conc_pool_map_callback callback,
                            conc_pool_error_callback error_callback, void *cbarg, conc_map_result_t **out)
{
    if (!p || !fn)
        return CONC_EINVAL;
    conc_buf_t *items;
    int rc = pack_tuples(args, nargs, n, &items);
    if (rc)
        return rc;
    rc = map_async(p, fn, items, 0, n, chunksize, callback, error_callback, cbarg, out);
    free(items);
    return rc;
}

bool conc_map_result_ready(conc_map_result_t *r)
{
    return r && conc_event_is_set(&r->done);
}

int conc_map_result_successful(conc_map_result_t *r, bool *ok)
{
    if (!r || !ok || !conc_event_is_set(&r->done))
        return CONC_EINVAL;
    *ok = r->code == 0;
    return 0;
}

int conc_map_result_wait(conc_map_result_t *r, double timeout)
{
    if (!r)
        return CONC_EINVAL;
    return conc_event_wait(&r->done, timeout);
}

int conc_map_result_get(conc_map_result_t *r, double timeout, const conc_results_t **out)
{
    if (!r || !out)
        return CONC_EINVAL;
    int rc = conc_event_wait(&r->done, timeout);
    if (rc)
        return rc;
    *out = r->r;
    return r->code ? CONC_EFAILED : 0;
}

int conc_map_result_exception(conc_map_result_t *r, int *code, const char **msg)
{
    if (!r || !conc_event_is_set(&r->done))
        return CONC_EINVAL;
    if (code)
        *code = r->code;
    if (msg)
        *msg = r->code ? r->msg : NULL;
    return 0;
}

void conc_map_result_free(conc_map_result_t *r)
{
    if (r)
        mr_unref(r);
}
