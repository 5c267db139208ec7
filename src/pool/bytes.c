/*
 * bytes.c — bytes tasks (conc_pool_fn) on an executor that runs its tasks
 * in this process (a ThreadPoolExecutor, or any conc_executor_t that is
 * not a process pool): conc_submit_bytes / conc_map_bytes give the same
 * futures and result blocks there as on a process pool, so that moving
 * work between threads and processes changes only the constructor.
 *
 * How: a job is one malloc block, made by the submitter:
 *
 *     [cres_t header][item table (a chunk)][room for the results][job_t][offsets][items]
 *
 * submitted with plain conc_submit as job_run(job). job_run calls the task
 * on each item (read in place) with a conc_pool_out_t whose buffer is the
 * front of that same block, marked fixed: results up to the room's size
 * land right after the header (or the table) and the block *is* the
 * result — one allocation per task, made and (usually) freed by the
 * submitting thread, no copy. A result that outgrows the room moves to a
 * new malloc'd buffer (conc_pool_return never reallocs a fixed one: the
 * items it is reading live further on in the block), which then becomes
 * the result block and the job block is freed. One item (submit) gets a
 * uniform block; its failure fails the future with the task's code and
 * message (conc_fail left them in the context; a nonzero return is turned
 * into one), as a K_BYTES task's does. A chunk (map) always completes with
 * a table block: one outcome per item.
 *
 * Ownership (the one subtle part). The future frees f->owned with free()
 * when its last reference goes, and the result readers (fut_cres in
 * api.c) want f->owned == f->result for a result. The job does not know
 * its future until conc_submit has returned, and the task may finish
 * before that. So the submitter and job_run meet on job->st:
 *   - the submitter sets f->owned = the block, then CASes st 0 ->
 *     SUBMITTED; if job_run got there first (st == RAN), the submitter
 *     sets f->owned = job->res (the result block, or the job block when
 *     the task failed) and frees the job block if that is another one;
 *   - job_run, once the result is built, CASes st 0 -> RAN (storing res);
 *     if the submitter got there first, job_run moves f->owned to the
 *     result block when that is another one and frees the job block —
 *     before it returns, so before the outcome is published.
 * Either way f->owned is right before the caller of submit gets f, so
 * before anyone can read the result or drop the last reference; a job
 * that never runs (cancelled, shut down, broken pool) is freed with its
 * future. job_t lives after the result room, so the submitter's writes
 * (f, st) never meet job_run's header writes.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "futures/internal.h"
#include "pool/internal.h"

enum { ST_NONE = 0, ST_RAN = 1, ST_SUBMITTED = 2 };

/* Result room per job: a word or two for one item, whose argument is
 * often about as big as its result; about the items' size for a chunk.
 * Small enough that a one-word task's whole block (cres_t header, room,
 * job_t, argument of up to 16 bytes) fits one recycled BLK. */
#define ROOM_MIN 16
#define ROOM_MAX ((size_t)64 << 10)

typedef struct {
    _Atomic uint32_t st;
    uint32_t count;
    uint32_t room;          /* results start at head; room bytes there */
    uint16_t chunk;         /* a map chunk: a table, never a failed future */
    uint16_t pooled;        /* the block came from blk_alloc */
    conc_future_t *f;       /* set by the submitter before its CAS */
    unsigned char *res;     /* set by job_run before its CAS */
    conc_pool_fn fn;
    size_t item_size;       /* 0: count + 1 offsets follow, then the items */
    size_t tail[];
} job_t;

/* ------------------------------------------------ small job blocks */

/* A one-item job's block is small (header, a little room, job_t, a short
 * argument) and there is one per task: malloc there costs more than the
 * whole thread-pool round trip once thousands are in flight. So blocks of
 * up to BLK bytes are recycled like futures (futures/future.c): a cache
 * per thread, batches of TBATCH traded with a global depot under a mutex,
 * whichever thread frees a block keeps it. The future frees such a block
 * through owned_free = blk_free. */
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

static size_t job_head(const job_t *j)
{
    return offsetof(cres_t, items) + (j->chunk ? j->count * sizeof(citem_t) : 0);
}

/* The block a job lives in (it starts with the result header). */
static unsigned char *job_block(job_t *j)
{
    return (unsigned char *)j - PAD8(job_head(j) + j->room);
}

static unsigned char *job_data(job_t *j)
{
    return (unsigned char *)&j->tail[j->item_size ? 0 : j->count + 1];
}

static const void *item_at(job_t *j, size_t i, size_t *len)
{
    if (j->item_size) {
        *len = j->item_size;
        return job_data(j) + i * j->item_size;
    }
    *len = j->tail[i + 1] - j->tail[i];
    return job_data(j) + j->tail[i];
}

/* Run the items; returns the result block (j->block, or a new one), or
 * NULL for a single failed item (the failure stays in the context) or
 * when out of memory. */
static unsigned char *run_items(job_t *j)
{
    size_t n = j->count, head = job_head(j);
    conc_pool_out_t out = {job_block(j), head + j->room, head, 0, true};
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
    c->blk = out.fixed ? (size_t)((unsigned char *)j - out.p) : out.cap; /* at least */
    c->table = j->chunk;
    c->unilen = j->chunk ? 0 : (uint32_t)out.len;
    return out.p;
}

static void *job_run(void *arg)
{
    job_t *j = arg;
    unsigned char *block = job_block(j);
    unsigned char *c = run_items(j);
    j->res = c ? c : block;
    uint32_t exp = ST_NONE;
    if (atomic_compare_exchange_strong_explicit(&j->st, &exp, ST_RAN, memory_order_acq_rel,
                                                memory_order_acquire))
        return c; /* the submitter attaches it (and frees the job block if need be) */
    if (c && c != block) {
        bool pooled = j->pooled;
        j->f->owned = c;
        j->f->owned_free = NULL;
        pooled ? blk_free(block) : free(block);
    }
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
    if (count > UINT32_MAX)
        return CONC_ERANGE;
    size_t head = offsetof(cres_t, items) + (chunk ? count * sizeof(citem_t) : 0);
    size_t room = chunk ? (item_size ? total : 16 * count) : total;
    room = PAD8(room < ROOM_MIN ? ROOM_MIN : room > ROOM_MAX ? ROOM_MAX : room);
    size_t at = PAD8(head + room);
    size_t size = at + sizeof(job_t) + ntail * sizeof(size_t) + total;
    bool pooled = size <= BLK;
    unsigned char *block = pooled ? blk_alloc() : malloc(size);
    if (!block)
        return CONC_ENOMEM;
    job_t *j = (job_t *)(block + at);
    atomic_init(&j->st, ST_NONE);
    j->pooled = pooled;
    j->count = (uint32_t)count;
    j->room = (uint32_t)room;
    j->chunk = chunk;
    j->f = NULL;
    j->res = NULL;
    j->fn = fn;
    j->item_size = item_size;
    unsigned char *data = job_data(j);
    if (item_size) {
        if (total)
            memcpy(data, items, total);
    } else {
        size_t off = 0;
        for (size_t i = 0; i < count; i++) {
            const conc_buf_t *b = (const conc_buf_t *)items + i;
            j->tail[i] = off;
            if (b->len)
                memcpy(data + off, b->data, b->len);
            off += b->len;
        }
        j->tail[count] = off;
    }
    conc_future_t *f;
    int rc = conc_submit(ex, &f, job_run, j);
    if (rc) {
        pooled ? blk_free(block) : free(block);
        return rc;
    }
    f->owned = block;
    f->owned_free = pooled ? blk_free : NULL;
    j->f = f;
    uint32_t exp = ST_NONE;
    if (!atomic_compare_exchange_strong_explicit(&j->st, &exp, ST_SUBMITTED, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        unsigned char *res = j->res; /* it ran already */
        if (res != block) {
            f->owned = res;
            f->owned_free = NULL;
            pooled ? blk_free(block) : free(block);
        }
    }
    *out = f;
    return 0;
}
