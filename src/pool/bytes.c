/*
 * bytes.c — bytes tasks (conc_pool_fn) on an executor that runs its tasks
 * in this process (a ThreadPoolExecutor, or any conc_executor_t that is
 * not a process pool): conc_submit_bytes / conc_map_bytes give the same
 * futures and result blocks there as on a process pool, so that moving
 * work between threads and processes changes only the constructor.
 *
 * How: a job is one block, made by the submitter:
 *
 *     [job_t][cres_t header][item table (a chunk)][room for results][offsets][items]
 *
 * submitted with plain conc_submit as job_run(job). job_run calls the task
 * on each item (read in place) with a conc_pool_out_t whose buffer starts
 * at the cres_t header inside the block, marked fixed: results up to the
 * room's size land right after the header (or the table), and that part
 * of the block *is* the result — one allocation per task and no copy. A
 * result that outgrows the room moves to a new malloc'd buffer
 * (conc_pool_return never reallocs a fixed one: the items it is reading
 * live further on in the block). One item (submit) gets a uniform result;
 * its failure fails the future with the task's code and message
 * (conc_fail left them in the context; a nonzero return is turned into
 * one), as a K_BYTES task's does. A chunk (map) always completes with a
 * table: one outcome per item.
 *
 * Ownership. After conc_submit returns, the submitter makes the block the
 * future's owned memory (f->owned = block, f->owned_free =
 * conc__bytes_free) — before the caller gets f, so before anyone can read
 * the result or drop the last reference, even when the task has already
 * run. job_run never touches the future: it leaves the result's address
 * in job->res (published with the outcome), and the readers (fut_cres in
 * api.c) accept a result that is the block's job->res
 * (conc__bytes_result). conc__bytes_free frees a moved result with the
 * block. A job that never runs (cancelled, shut down, broken pool) goes
 * with its future the same way.
 *
 * Small blocks (one word or two of argument) are recycled: see below.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "futures/internal.h"
#include "pool/internal.h"

/* Result room per job: a word or two for one item, whose argument is
 * often about as big as its result; about the items' size for a chunk.
 * Small enough that a one-word task's whole block (job_t, cres_t header,
 * room, argument of up to 16 bytes) fits one recycled BLK. */
#define ROOM_MIN 16
#define ROOM_MAX ((size_t)64 << 10)

/* ------------------------------------------------ small job blocks */

/* A one-item job's block is small (job_t, header, a little room, a short
 * argument) and there is one per task: malloc there costs more than the
 * whole thread-pool round trip once thousands are in flight. So blocks of
 * up to BLK bytes are recycled like futures (futures/future.c): a cache
 * per thread, batches of TBATCH traded with a global depot under a mutex,
 * whichever thread frees a block keeps it (the future's owned_free,
 * conc__bytes_free, gives it back). */
#define BLK 128
#define TCAP 256
#define TBATCH 128
#define DEPOT_MAX 1024 /* batches: 16 MiB of blocks at most */

typedef struct {
    void *items[TCAP];
    unsigned n;
} bcache_t;

/* A depot entry: a batch of blocks, as an array (taking a batch is one
 * copy, not a walk through cold blocks). */
typedef struct dbatch {
    struct dbatch *next;
    void *items[TBATCH];
} dbatch_t;

static __thread bcache_t *tl_bc;
static pthread_key_t bc_key;
static pthread_once_t bc_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t depot_mu = PTHREAD_MUTEX_INITIALIZER;
static dbatch_t *depot;
static size_t depot_n;

/* k <= TBATCH blocks to the depot (or back to malloc when it is full). */
static void depot_put(void **items, unsigned k)
{
    dbatch_t *b = k == TBATCH ? malloc(sizeof *b) : NULL;
    if (b) {
        memcpy(b->items, items, sizeof b->items);
        pthread_mutex_lock(&depot_mu);
        if (depot_n < DEPOT_MAX) {
            b->next = depot;
            depot = b;
            depot_n++;
            b = NULL;
            k = 0;
        }
        pthread_mutex_unlock(&depot_mu);
        free(b);
    }
    for (unsigned i = 0; i < k; i++)
        free(items[i]);
}

static bool depot_take(bcache_t *c)
{
    pthread_mutex_lock(&depot_mu);
    dbatch_t *b = depot;
    if (b) {
        depot = b->next;
        depot_n--;
    }
    pthread_mutex_unlock(&depot_mu);
    if (!b)
        return false;
    memcpy(&c->items[c->n], b->items, sizeof b->items); /* c->n == 0 here */
    c->n += TBATCH;
    free(b);
    return true;
}

static void bc_destroy(void *p)
{
    bcache_t *c = p;
    while (c->n) {
        unsigned k = c->n < TBATCH ? c->n : TBATCH;
        depot_put(&c->items[c->n - k], k); /* a partial batch goes back to malloc */
        c->n -= k;
    }
    free(c);
    tl_bc = NULL;
}

static void bc_atfork_child(void) { pthread_mutex_init(&depot_mu, NULL); }

static void bc_key_init(void)
{
    pthread_key_create(&bc_key, bc_destroy);
    pthread_atfork(NULL, NULL, bc_atfork_child);
}

static bcache_t *bc_get(void)
{
    bcache_t *c = tl_bc;
    if (c)
        return c;
    pthread_once(&bc_once, bc_key_init);
    if (!(c = calloc(1, sizeof *c)))
        return NULL;
    tl_bc = c;
    pthread_setspecific(bc_key, c);
    return c;
}

static void *blk_alloc(void)
{
    bcache_t *c = bc_get();
    if (c && (c->n || depot_take(c)))
        return c->items[--c->n];
    return malloc(BLK);
}

static void blk_free(void *p)
{
    if (!p)
        return;
    bcache_t *c = bc_get();
    if (!c) {
        free(p);
        return;
    }
    if (c->n == TCAP) { /* full: hand the older half to the depot */
        depot_put(&c->items[0], TBATCH);
        memmove(&c->items[0], &c->items[TBATCH], (TCAP - TBATCH) * sizeof c->items[0]);
        c->n -= TBATCH;
    }
    c->items[c->n++] = p;
}

/* --------------------------------------------------------------- jobs */

typedef struct {
    uint32_t count;
    uint32_t room;          /* result bytes that fit in the block */
    uint16_t chunk;         /* a map chunk: a table, never a failed future */
    uint16_t pooled;        /* the block came from blk_alloc */
    unsigned char *res;     /* the result (in the block or moved), NULL */
    conc_pool_fn fn;
    size_t item_size;       /* 0: count + 1 offsets follow the room, then the items */
} job_t;

#define JOB_AT PAD8(sizeof(job_t))

static size_t job_head(const job_t *j)
{
    return offsetof(cres_t, items) + (j->chunk ? j->count * sizeof(citem_t) : 0);
}

/* Where the result starts (a cres_t header). */
static unsigned char *job_out(job_t *j) { return (unsigned char *)j + JOB_AT; }

static size_t *job_tail(job_t *j) { return (size_t *)(job_out(j) + PAD8(job_head(j) + j->room)); }

static unsigned char *job_data(job_t *j)
{
    return (unsigned char *)&job_tail(j)[j->item_size ? 0 : j->count + 1];
}

static const void *item_at(job_t *j, size_t i, size_t *len)
{
    if (j->item_size) {
        *len = j->item_size;
        return job_data(j) + i * j->item_size;
    }
    size_t *t = job_tail(j);
    *len = t[i + 1] - t[i];
    return job_data(j) + t[i];
}

void conc__bytes_free(void *block)
{
    job_t *j = block;
    if (!j)
        return;
    if (j->res && j->res != job_out(j))
        free(j->res);
    j->pooled ? blk_free(j) : free(j);
}

const void *conc__bytes_result(const void *block)
{
    return block ? ((const job_t *)block)->res : NULL;
}

/* Run the items; returns the result (job_out(j), or a moved copy), or
 * NULL for a single failed item (the failure stays in the context). */
static unsigned char *run_items(job_t *j)
{
    size_t n = j->count, head = job_head(j);
    conc_pool_out_t out = {job_out(j), head + j->room, head, 0, true};
    uint32_t nfail = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const void *arg = item_at(j, i, &len);
        out.base += out.len;
        out.len = 0;
        if (j->chunk)
            conc_fail_clear(); /* a single item starts clear (conc__future_run) */
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
            if (!out.fixed)
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
    if (j->chunk)
        conc_fail_clear();
    cres_t *c = (cres_t *)out.p;
    c->magic = CRES_MAGIC;
    c->count = c->got = (uint32_t)n;
    c->nfail = nfail;
    c->cap = c->used = out.base + out.len - head;
    c->blk = out.fixed ? 0 : out.cap; /* never handed to conc__cres_release (api.c) */
    c->table = j->chunk;
    c->unilen = j->chunk ? 0 : (uint32_t)out.len;
    return out.p;
}

/* One item (submit): the task's own conc_fail, if any, is left in the
 * context for the future (conc__future_run starts it clear), so the
 * context is only looked at when the task returned nonzero. */
static unsigned char *run_one(job_t *j)
{
    size_t head = offsetof(cres_t, items);
    conc_pool_out_t out = {job_out(j), head + j->room, head, 0, true};
    /* a one-item job has no offsets: item_size is its length, even 0 */
    int rc = j->fn(job_out(j) + PAD8(head + j->room), j->item_size, &out);
    if (rc && !conc_failure(NULL))
        conc_fail(rc < 0 ? rc : CONC_EFAILED, "%s", rc < 0 ? conc_strerror(rc) : "task returned a nonzero value");
    else if (!rc && out.len > UINT32_MAX)
        conc_fail(CONC_ERANGE, "result too large");
    cres_t *c = (cres_t *)out.p;
    c->magic = CRES_MAGIC;
    c->count = c->got = 1;
    c->nfail = 0;
    c->cap = c->used = out.len;
    c->blk = out.fixed ? 0 : out.cap;
    c->table = 0;
    c->unilen = (uint32_t)out.len;
    return out.p; /* kept with the block even if the future fails */
}

static void *job_run(void *arg)
{
    job_t *j = arg;
    j->res = j->chunk ? run_items(j) : run_one(j);
    return j->res;
}

int conc__bytes_submit_one(conc_executor_t *ex, conc_future_t **out, conc_pool_fn fn, const void *arg,
                           size_t len)
{
    size_t room = PAD8(len < ROOM_MIN ? ROOM_MIN : len > ROOM_MAX ? ROOM_MAX : len);
    size_t at = JOB_AT + PAD8(offsetof(cres_t, items) + room);
    bool pooled = at + len <= BLK;
    job_t *j = pooled ? blk_alloc() : malloc(at + len);
    if (!j)
        return CONC_ENOMEM;
    j->count = 1;
    j->room = (uint32_t)room;
    j->chunk = 0;
    j->pooled = pooled;
    j->res = NULL;
    j->fn = fn;
    j->item_size = len;
    unsigned char *data = (unsigned char *)j + at;
    if (len == 8)
        memcpy(data, arg, 8); /* a word: no call */
    else if (len)
        memcpy(data, arg, len);
    conc_future_t *f;
    int rc = conc_submit(ex, &f, job_run, j);
    if (rc) {
        conc__bytes_free(j);
        return rc;
    }
    f->owned = j; /* see Ownership above */
    f->owned_free = conc__bytes_free;
    *out = f;
    return 0;
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
    if (count > UINT32_MAX)
        return CONC_ERANGE;
    size_t head = offsetof(cres_t, items) + (chunk ? count * sizeof(citem_t) : 0);
    size_t room = chunk ? (item_size ? total : 16 * count) : total;
    room = PAD8(room < ROOM_MIN ? ROOM_MIN : room > ROOM_MAX ? ROOM_MAX : room);
    size_t size = JOB_AT + PAD8(head + room) + ntail * sizeof(size_t) + total;
    bool pooled = size <= BLK;
    job_t *j = pooled ? blk_alloc() : malloc(size);
    if (!j)
        return CONC_ENOMEM;
    j->count = (uint32_t)count;
    j->room = (uint32_t)room;
    j->chunk = chunk;
    j->pooled = pooled;
    j->res = NULL;
    j->fn = fn;
    j->item_size = item_size;
    unsigned char *data = job_data(j);
    if (item_size) {
        if (total)
            memcpy(data, items, total);
    } else {
        size_t *t = job_tail(j), off = 0;
        for (size_t i = 0; i < count; i++) {
            const conc_buf_t *b = (const conc_buf_t *)items + i;
            t[i] = off;
            if (b->len)
                memcpy(data + off, b->data, b->len);
            off += b->len;
        }
        t[count] = off;
    }
    conc_future_t *f;
    int rc = conc_submit(ex, &f, job_run, j);
    if (rc) {
        conc__bytes_free(j);
        return rc;
    }
    /* The task may have run already: f is finished then, but nobody else
     * has it yet (see Ownership above). */
    f->owned = j;
    f->owned_free = conc__bytes_free;
    *out = f;
    return 0;
}
