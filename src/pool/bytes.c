/*
 * bytes.c — bytes tasks (conc_pool_fn) on an executor that runs its tasks
 * in this process (a ThreadPoolExecutor, or any conc_executor_t that is
 * not a process pool): conc_submit_bytes / conc_map_bytes give the same
 * futures and result blocks there as on a process pool, so that moving
 * work between threads and processes changes only the constructor.
 *
 * How: a job is one malloc block — header, then (for items of any size)
 * their offsets, then a copy of the items — submitted with plain
 * conc_submit as job_run(job). job_run calls the task on each item with a
 * conc_pool_out_t whose buffer *is* the result block being built (the
 * task's bytes land right after the cres_t header, or after the item table
 * of a chunk), so a result costs one allocation and no copy. One item
 * (submit) gets a uniform block; a failure fails the future with the
 * task's code and message (conc_fail left them in the context; a nonzero
 * return is turned into one), as a K_BYTES task's does. A chunk (map)
 * always completes with a table block: one outcome per item.
 *
 * Ownership (the one subtle part). The future frees f->owned with free()
 * when its last reference goes, and the result readers (fut_cres in
 * api.c) want f->owned == f->result. The job does not know its future
 * until conc_submit has returned, and the task may finish before that. So
 * the submitter and job_run meet on job->st:
 *   - the submitter sets f->owned = job, then CASes st 0 -> SUBMITTED;
 *     if job_run got there first (st == RAN), the submitter sets
 *     f->owned = job->res and frees the job instead;
 *   - job_run, once the block is built, CASes st 0 -> RAN (storing res);
 *     if the submitter got there first, job_run swaps f->owned from the
 *     job to the block and frees the job — before it returns, so before
 *     the outcome is published.
 * Either way f->owned is right before the caller of submit gets f, so
 * before anyone can read the result or drop the last reference; a job
 * that never runs (cancelled, shut down, broken pool) is freed with its
 * future.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "futures/internal.h"
#include "pool/internal.h"

enum { ST_NONE = 0, ST_RAN = 1, ST_SUBMITTED = 2 };

typedef struct {
    _Atomic int st;
    conc_future_t *f;       /* set by the submitter before its CAS */
    cres_t *res;            /* set by job_run before its CAS */
    conc_pool_fn fn;
    size_t count, item_size; /* item_size 0: offsets follow the header */
    bool chunk;             /* a map chunk: a table, never a failed future */
    unsigned char *data;    /* the items (inside this block) */
    size_t tail[];          /* item_size 0: count + 1 offsets */
} job_t;

static const void *item_at(const job_t *j, size_t i, size_t *len)
{
    if (j->item_size) {
        *len = j->item_size;
        return j->data + i * j->item_size;
    }
    *len = j->tail[i + 1] - j->tail[i];
    return j->data + j->tail[i];
}

/* Run the items into one block (NULL when out of memory, or for a
 * single failed item: the failure stays in the context). */
static cres_t *run_items(job_t *j)
{
    size_t n = j->count;
    size_t head = offsetof(cres_t, items) + (j->chunk ? n * sizeof(citem_t) : 0);
    conc_pool_out_t out = {malloc(head + 64), head + 64, head, 0};
    if (!out.p) {
        conc_fail(CONC_ENOMEM, "out of memory for a result");
        return NULL;
    }
    uint32_t nfail = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const void *arg = item_at(j, i, &len);
        out.base += out.len;
        out.len = 0;
        conc_fail_clear();
        int rc = j->fn(arg, len, &out);
        const char *msg = NULL;
        int code = conc_failure(&msg);
        if (!code && rc) {
            code = rc < 0 ? rc : CONC_EFAILED;
            msg = rc < 0 ? conc_strerror(rc) : "task returned a nonzero value";
            if (!j->chunk)
                conc_fail(code, "%s", msg);
        }
        if (!code && out.len > UINT32_MAX) {
            code = CONC_ERANGE;
            msg = "result too large";
            if (!j->chunk)
                conc_fail(code, "%s", msg);
        }
        if (code && !j->chunk) {
            free(out.p); /* the future fails with the context's failure */
            return NULL;
        }
        if (code) {
            size_t ml = strlen(msg ? msg : "") + 1;
            out.len = 0;
            if (conc_pool_return(&out, msg ? msg : "", ml)) {
                code = CONC_ENOMEM;
                out.len = 0;
            }
            nfail++;
        }
        if (j->chunk)
            ((cres_t *)out.p)->items[i] = (citem_t){out.base - head, (uint32_t)out.len, code};
    }
    conc_fail_clear();
    cres_t *c = (cres_t *)out.p;
    c->magic = CRES_MAGIC;
    c->count = c->got = (uint32_t)n;
    c->nfail = nfail;
    c->cap = c->used = out.base + out.len - head;
    c->blk = out.cap;
    c->table = j->chunk;
    c->unilen = j->chunk ? 0 : (uint32_t)out.len;
    return c;
}

static void *job_run(void *arg)
{
    job_t *j = arg;
    cres_t *c = run_items(j);
    j->res = c;
    int exp = ST_NONE;
    if (atomic_compare_exchange_strong_explicit(&j->st, &exp, ST_RAN, memory_order_acq_rel,
                                                memory_order_acquire))
        return c; /* the submitter attaches it and frees the job */
    j->f->owned = c;
    free(j);
    return c;
}

int conc__bytes_submit(conc_executor_t *ex, conc_future_t **out, conc_pool_fn fn, const void *items,
                       size_t item_size, size_t count, bool chunk)
{
    size_t total = item_size * count, ntail = item_size ? 0 : count + 1;
    if (!item_size) {
        total = 0;
        for (size_t i = 0; i < count; i++) {
            const conc_buf_t *b = (const conc_buf_t *)items + i;
            if (b->len && !b->data)
                return CONC_EINVAL;
            total += b->len;
        }
    }
    job_t *j = malloc(sizeof *j + ntail * sizeof(size_t) + (total ? total : 1));
    if (!j)
        return CONC_ENOMEM;
    atomic_init(&j->st, ST_NONE);
    j->f = NULL;
    j->res = NULL;
    j->fn = fn;
    j->count = count;
    j->item_size = item_size;
    j->chunk = chunk;
    j->data = (unsigned char *)&j->tail[ntail];
    if (item_size) {
        if (total)
            memcpy(j->data, items, total);
    } else {
        size_t at = 0;
        for (size_t i = 0; i < count; i++) {
            const conc_buf_t *b = (const conc_buf_t *)items + i;
            j->tail[i] = at;
            if (b->len)
                memcpy(j->data + at, b->data, b->len);
            at += b->len;
        }
        j->tail[count] = at;
    }
    conc_future_t *f;
    int rc = conc_submit(ex, &f, job_run, j);
    if (rc) {
        free(j);
        return rc;
    }
    f->owned = j;
    j->f = f;
    int exp = ST_NONE;
    if (!atomic_compare_exchange_strong_explicit(&j->st, &exp, ST_SUBMITTED, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        f->owned = j->res; /* it ran already */
        free(j);
    }
    *out = f;
    return 0;
}
