/*
 * map_iter.c — Executor.map as Python has it: a lazy result iterator
 * (results in input order, each as soon as it and the ones before it are
 * done), chunksize (several items per task) and 3.14's buffersize (at
 * most that many tasks submitted ahead of the consumer).
 *
 * Items are cut into chunks of `chunksize`; chunk c is one task: with
 * chunksize 1 the user's fn itself, else a trampoline that runs fn over
 * the chunk's items into the iterator's results array and stops at the
 * first item that fails (its conc_fail becomes the chunk's failure; `ran`
 * says which item). Without buffersize every chunk is submitted at once;
 * with it, `buffersize` chunks are, and each time next starts on a new
 * chunk one more is submitted first (Python's appendleft before the
 * wait). One deadline, from _new, covers the whole iteration. A failure
 * or the own timeout ends the iteration as Python's generator does:
 * everything not started is cancelled and next returns CONC_EEOF after.
 * Freeing waits for chunk tasks already running (they write into the
 * iterator's arrays); single-item tasks are only cancelled.
 */
#include <stdlib.h>
#include <string.h>

#include "core/time.h"
#include "futures/internal.h"

typedef struct {
    void *(*fn)(void *);
    void *const *args;
    void **results;
    size_t count;
    size_t ran; /* items finished (the failing one is not counted) */
} chunk_t;

struct conc_map_iter {
    conc_executor_t *ex;
    void *(*fn)(void *);
    void *const *args;
    size_t n, chunk, nchunks, buffersize;
    chunk_t *chunks;      /* chunk > 1 only */
    void **results;       /* chunk > 1 only */
    conc_future_t **fs;   /* by chunk; NULL until submitted */
    size_t submitted;     /* chunks submitted */
    size_t next;          /* next item to hand out */
    size_t ready_chunk;   /* chunks known done and good: [0, ready_chunk) */
    int64_t deadline;
    bool over;
    size_t failed_index;
    conc_future_t *failed;
    int submit_rc;
    int fail_rc;          /* a chunk failed: report it when next reaches failed_index */
};

static void *run_chunk(void *arg)
{
    chunk_t *c = arg;
    conc__ctx_t *ctx = conc__ctx();
    for (size_t i = 0; i < c->count; i++) {
        void *r = c->fn(c->args[i]);
        if (ctx->fail_code)
            return NULL; /* the item's failure is the chunk's */
        c->results[i] = r;
        c->ran = i + 1;
    }
    return NULL;
}

static int submit_next(conc_map_iter_t *it)
{
    size_t c = it->submitted;
    int rc;
    if (it->chunk == 1) {
        rc = conc_submit(it->ex, &it->fs[c], it->fn, it->args[c]);
    } else {
        chunk_t *ch = &it->chunks[c];
        size_t start = c * it->chunk;
        ch->fn = it->fn;
        ch->args = it->args + start;
        ch->results = it->results + start;
        ch->count = it->n - start < it->chunk ? it->n - start : it->chunk;
        ch->ran = 0;
        rc = conc_submit(it->ex, &it->fs[c], run_chunk, ch);
    }
    if (rc == 0)
        it->submitted++;
    return rc;
}

static void finish(conc_map_iter_t *it)
{
    it->over = true;
    for (size_t c = 0; c < it->submitted; c++)
        conc_future_cancel(it->fs[c]);
}

int conc_map_iter_new(conc_map_iter_t **out, conc_executor_t *ex, void *(*fn)(void *), void *const *args, size_t n,
                      const conc_map_opts_t *opts)
{
    if (!out || !ex || !ex->ops || !fn || (n && !args))
        return CONC_EINVAL;
    conc_map_opts_t o = {0};
    if (opts)
        o = *opts;
    if (o.timeout == 0 && !o.has_timeout)
        o.timeout = CONC_FOREVER;
    int64_t deadline;
    if (conc__deadline(o.timeout, &deadline))
        return CONC_EINVAL;
    conc_map_iter_t *it = calloc(1, sizeof *it);
    if (!it)
        return CONC_ENOMEM;
    it->ex = ex;
    it->fn = fn;
    it->args = args;
    it->n = n;
    it->chunk = o.chunksize ? o.chunksize : 1;
    it->nchunks = n ? (n - 1) / it->chunk + 1 : 0;
    it->buffersize = o.buffersize;
    it->deadline = deadline;
    it->failed_index = SIZE_MAX;
    size_t m = it->nchunks ? it->nchunks : 1;
    it->fs = calloc(m, sizeof *it->fs);
    if (it->chunk > 1) {
        it->chunks = calloc(m, sizeof *it->chunks);
        it->results = calloc(n ? n : 1, sizeof *it->results);
    }
    if (!it->fs || (it->chunk > 1 && (!it->chunks || !it->results))) {
        free(it->fs), free(it->chunks), free(it->results), free(it);
        return CONC_ENOMEM;
    }
    size_t first = it->buffersize && it->buffersize < it->nchunks ? it->buffersize : it->nchunks;
    for (size_t c = 0; c < first; c++) {
        int rc = submit_next(it);
        if (rc) { /* as Python: map raises at once when a submit does */
            conc_map_iter_free(it);
            return rc;
        }
    }
    *out = it;
    return 0;
}

int conc_map_iter_next(conc_map_iter_t *it, void **result, size_t *index)
{
    if (!it)
        return CONC_EINVAL;
    if (it->over || it->next == it->n)
        return CONC_EEOF;
    if (it->fail_rc && it->next == it->failed_index) {
        finish(it);
        if (index)
            *index = it->failed_index;
        return it->fail_rc;
    }
    size_t c = it->next / it->chunk;
    if (c >= it->ready_chunk) {
        if (it->buffersize && it->submitted < it->nchunks && c + it->buffersize >= it->submitted) {
            int rc = submit_next(it); /* one more in flight before we wait */
            if (rc) {
                it->submit_rc = rc;
                finish(it);
                return rc;
            }
        }
        int rc = conc__future_wait_done(it->fs[c], it->deadline);
        if (rc) {
            if (conc__park_interrupted(rc))
                return rc; /* killed / a scope: the iterator stays usable */
            finish(it); /* the own timeout: Python's generator is over */
            return CONC_ETIMEDOUT;
        }
        void *r = NULL;
        rc = conc_future_result(it->fs[c], 0, &r);
        if (rc) { /* CONC_EFAILED, CONC_ECANCELLED */
            it->failed_index = c * it->chunk + (it->chunk > 1 ? it->chunks[c].ran : 0);
            if (rc == CONC_EFAILED)
                it->failed = conc_future_ref(it->fs[c]);
            if (it->next < it->failed_index) {
                /* the chunk's items before the failing one have results:
                 * hand them out first, then the failure */
                it->fail_rc = rc;
                it->ready_chunk = c + 1;
            } else {
                finish(it);
                if (index)
                    *index = it->failed_index;
                return rc;
            }
        } else {
            it->ready_chunk = c + 1;
        }
        if (it->chunk == 1 && result)
            *result = r;
        if (it->chunk == 1) {
            if (index)
                *index = it->next;
            it->next++;
            return 0;
        }
    }
    if (result)
        *result = it->results[it->next]; /* chunk > 1: its chunk is done */
    if (index)
        *index = it->next;
    it->next++;
    return 0;
}

int conc_map_iter_exception(const conc_map_iter_t *it, int *code, const char **msg)
{
    if (code)
        *code = 0;
    if (msg)
        *msg = NULL;
    if (!it)
        return CONC_EINVAL;
    if (it->failed)
        conc_future_exception(it->failed, 0, code, msg);
    return 0;
}

/* conc_map with chunksize > 1: the iterator, collected (executor.c). */
int conc__map_chunked(conc_executor_t *ex, void *(*fn)(void *), void *const *args, size_t n, void **results,
                      const conc_map_opts_t *o);
int conc__map_chunked(conc_executor_t *ex, void *(*fn)(void *), void *const *args, size_t n, void **results,
                      const conc_map_opts_t *o)
{
    conc_map_opts_t io = *o;
    io.buffersize = 0;
    conc_map_iter_t *it;
    int rc = conc_map_iter_new(&it, ex, fn, args, n, &io);
    if (rc) {
        if (o->failed_index)
            *o->failed_index = 0;
        return rc;
    }
    size_t done = 0, idx = 0;
    for (;;) {
        void *r = NULL;
        rc = conc_map_iter_next(it, &r, &idx);
        if (rc == CONC_EEOF) {
            rc = 0;
            break;
        }
        if (rc) {
            if (o->failed_index)
                *o->failed_index = rc == CONC_EFAILED || rc == CONC_ECANCELLED ? idx : it->next;
            if (rc == CONC_EFAILED && o->failed_future && it->failed)
                *o->failed_future = conc_future_ref(it->failed);
            finish(it);
            break;
        }
        results[idx] = r;
        if (o->progress)
            o->progress(++done, n, o->progress_arg);
    }
    conc_map_iter_free(it);
    return rc;
}

int conc_map_iter_free(conc_map_iter_t *it)
{
    if (!it)
        return CONC_EINVAL;
    for (size_t c = 0; c < it->submitted; c++) {
        if (!conc_future_cancel(it->fs[c]) && it->chunk > 1) {
            /* running or done: a running chunk writes into our arrays */
            while (conc__future_wait_done(it->fs[c], CONC__NO_DEADLINE) != 0) {
            }
        }
        conc_future_free(it->fs[c]);
    }
    if (it->failed)
        conc_future_free(it->failed);
    free(it->fs);
    free(it->chunks);
    free(it->results);
    free(it);
    return 0;
}
