/*
 * worker.c — the child side of the process pools: a worker process reads
 * task messages from its own queue, runs each task, and sends results
 * back in batches on the shared result queue.
 *
 * Results of the tasks of one task message (a batch of tasks measured to
 * be short) are gathered in one result message, sent when the batch is
 * done, when the message is full, or before the next task starts if the
 * oldest result waiting has waited 50 µs — so a busy worker makes about
 * one put per batch, and a result is held back by at most one task of
 * its own batch. A chunk whose results do not fit in one message is
 * sent in pieces (first item, count). A single result that could never fit
 * fails with CONC_ERANGE. The worker leaves when it reads M_STOP, after
 * max_tasks tasks (announcing M_RETIRE), or when its parent is gone.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/park.h"
#include "pool/internal.h"

#define FLUSH_NS 50000

static int out_reserve(conc_pool_out_t *out, size_t need)
{
    if (need <= out->cap)
        return 0;
    size_t cap = out->cap ? out->cap * 2 : 4096;
    while (cap < need)
        cap *= 2;
    unsigned char *p = out->fixed ? malloc(cap) : realloc(out->p, cap);
    if (!p)
        return CONC_ENOMEM;
    if (out->fixed) { /* the old buffer stays where it is (see bytes.c) */
        memcpy(p, out->p, out->base + out->len);
        out->fixed = false;
    }
    out->p = p;
    out->cap = cap;
    return 0;
}

int conc_pool_return(conc_pool_out_t *out, const void *data, size_t len)
{
    if (!out || (!data && len))
        return CONC_EINVAL;
    size_t at = out->base + out->len;
    if (at + len > out->cap && out_reserve(out, at + len))
        return CONC_ENOMEM;
    if (len == 8) /* a word: no call */
        memcpy(out->p + at, data, 8);
    else if (len)
        memcpy(out->p + at, data, len);
    out->len += len;
    return 0;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct {
    conc_mpqueue_t *tq, *rq;
    uint32_t idx, gen;
    /* the result message being built */
    unsigned char *m;
    size_t mlen, mcap;      /* mcap: largest message we send */
    uint32_t nrec;
    int64_t oldest;         /* when the first unsent result was added */
    /* the current piece of the current task: uniform (no table: every
     * item succeeded with unilen bytes) until an item does not fit that */
    witem_t *tab;
    size_t tabn, tabcap;    /* tabn: items in the piece (tab unused if uni) */
    bool uni;
    uint32_t unilen;
    size_t pdlen;           /* the piece's data: out.p[0, pdlen) */
    uint64_t task_id;
    uint32_t first;
    int64_t piece_start;
    conc_pool_out_t out;    /* the data buffer; a task appends at pdlen */
    conc__ctx_t *ctx;       /* this thread's context: its failure record */
} wk_t;

/* The process that started this worker (the pool's owner, or the fork
 * server, which leaves with it): gone when we have been re-parented. */
static pid_t start_ppid;

static bool parent_alive(void)
{
    return getppid() == start_ppid;
}

static int put_msg(wk_t *w, const void *m, size_t len)
{
    for (;;) {
        int rc = conc_mpqueue_put(w->rq, m, len, true, 1.0);
        if (rc != CONC_EFULL)
            return rc;
        if (!parent_alive())
            return CONC_EEOF;
    }
}

static void flush(wk_t *w)
{
    if (!w->nrec)
        return;
    *(mhdr_t *)w->m = (mhdr_t){M_RESULTS, w->idx, w->nrec, w->gen};
    if (put_msg(w, w->m, w->mlen))
        _exit(0);
    w->mlen = sizeof(mhdr_t);
    w->nrec = 0;
}

/* Close the current piece into the message. */
static void end_piece(wk_t *w, int64_t now)
{
    if (!w->tabn)
        return;
    size_t tabsz = w->uni ? 0 : w->tabn * sizeof(witem_t);
    size_t need = sizeof(wres_t) + tabsz + PAD8(w->pdlen);
    if (w->mlen + need > w->mcap)
        flush(w);
    if (w->nrec == 0)
        w->oldest = now;
    wres_t r = {w->task_id,   w->first, (uint32_t)w->tabn, w->pdlen, (uint64_t)(now - w->piece_start),
                w->uni ? w->unilen : 0, w->uni ? WRES_UNIFORM : 0};
    unsigned char *p = w->m + w->mlen;
    memcpy(p, &r, sizeof r);
    p += sizeof r;
    if (tabsz)
        memcpy(p, w->tab, tabsz);
    p += tabsz;
    if (w->pdlen)
        memcpy(p, w->out.p, w->pdlen);
    memset(p + w->pdlen, 0, PAD8(w->pdlen) - w->pdlen);
    w->mlen += need;
    w->nrec++;
    w->first += (uint32_t)w->tabn;
    w->tabn = 0;
    w->pdlen = 0;
    w->piece_start = now;
}

static void *grow(void *p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return p;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *q = realloc(p, c * elem);
    if (!q) {
        fprintf(stderr, "conc pool worker: out of memory\n");
        _exit(70);
    }
    *cap = c;
    return q;
}

/* A uniform piece of a few items gets a table (entries for the items so
 * far). Longer uniform runs are ended instead and stay compact; room for
 * a table of UNI_SLACK entries is kept free in every uniform piece, so
 * the table always fits. */
#define UNI_SLACK 8

static void to_table(wk_t *w)
{
    w->tab = grow(w->tab, &w->tabcap, UNI_SLACK + 1, sizeof(witem_t));
    for (size_t j = 0; j < w->tabn; j++)
        w->tab[j] = (witem_t){0, w->unilen};
    w->uni = false;
}

/* End the current piece; move bytes already written for the next item
 * (at out.p + pdlen) to the front of the new one. */
static void end_piece_keep(wk_t *w, size_t move)
{
    size_t at = w->pdlen;
    end_piece(w, now_ns());
    if (move)
        memmove(w->out.p, w->out.p + at, move);
}

/* Make room in the message for one more item of len data bytes (and a
 * table entry if tabled): end the piece when it would not fit, keeping
 * `move` bytes of the item. */
static void fit_item(wk_t *w, size_t len, size_t move, bool tabled)
{
    size_t tabsz = (tabled ? w->tabn + 1 : UNI_SLACK) * sizeof(witem_t);
    if (w->tabn && sizeof(mhdr_t) + sizeof(wres_t) + tabsz + PAD8(w->pdlen + len) > w->mcap)
        end_piece_keep(w, move);
}

static void add_fail(wk_t *w, int code, const char *msg);

/* Item succeeded: its len result bytes are at out.p + pdlen. */
static void add_ok(wk_t *w, size_t len)
{
    size_t maxdata = w->mcap - sizeof(mhdr_t) - sizeof(wres_t) - UNI_SLACK * sizeof(witem_t) - 8;
    if (len > maxdata || len > UINT32_MAX) {
        char tmp[96];
        snprintf(tmp, sizeof tmp, "result too large for the pool's result queue (%zu bytes)", len);
        add_fail(w, CONC_ERANGE, tmp);
        return;
    }
    if (w->tabn && w->uni && len != w->unilen) {
        if (w->tabn >= UNI_SLACK)
            end_piece_keep(w, len);
        else
            to_table(w);
    }
    fit_item(w, len, len, w->tabn && !w->uni);
    if (w->tabn == 0) { /* a new piece */
        w->uni = true;
        w->unilen = (uint32_t)len;
    }
    if (!w->uni) {
        w->tab = grow(w->tab, &w->tabcap, w->tabn + 1, sizeof(witem_t));
        w->tab[w->tabn] = (witem_t){0, (uint32_t)len};
    }
    w->tabn++;
    w->pdlen += len;
}

/* Item failed with code and msg (NUL-terminated; not in out.p). */
static void add_fail(wk_t *w, int code, const char *msg)
{
    size_t len = strlen(msg) + 1;
    if (w->tabn && w->uni) {
        if (w->tabn >= UNI_SLACK)
            end_piece_keep(w, 0);
        else
            to_table(w);
    }
    fit_item(w, len, 0, true);
    w->uni = false;
    if (out_reserve(&w->out, w->pdlen + len)) {
        fprintf(stderr, "conc pool worker: out of memory\n");
        _exit(70);
    }
    memcpy(w->out.p + w->pdlen, msg, len);
    w->tab = grow(w->tab, &w->tabcap, w->tabn + 1, sizeof(witem_t));
    w->tab[w->tabn++] = (witem_t){code, (uint32_t)len};
    w->pdlen += len;
}

static void run_item(wk_t *w, const conc_registration_t *reg, uint32_t kind, const void *arg, size_t len)
{
    const char *msg;
    conc__ctx_t *ctx = w->ctx;
    ctx->fail_code = 0;
    if (!reg) {
        add_fail(w, CONC_EINVAL, "task function not found in the worker's registry");
        return;
    }
    if (kind == K_WORD) {
        uint64_t v = 0;
        memcpy(&v, arg, len < 8 ? len : 8);
        void *r = ((void *(*)(void *))(void (*)(void))reg->fn)((void *)(uintptr_t)v);
        int code = ctx->fail_code;
        msg = ctx->fail_msg;
        if (code) {
            add_fail(w, code, msg);
            ctx->fail_code = 0;
        } else {
            uint64_t rv = (uint64_t)(uintptr_t)r;
            w->out.base = w->pdlen;
            w->out.len = 0;
            if (conc_pool_return(&w->out, &rv, 8))
                add_fail(w, CONC_ENOMEM, "out of memory for a result");
            else
                add_ok(w, 8);
        }
        return;
    }
    w->out.base = w->pdlen;
    w->out.len = 0;
    int rc = ((conc_pool_fn)(void (*)(void))reg->fn)(arg, len, &w->out);
    int code = ctx->fail_code;
    msg = ctx->fail_msg;
    if (!code && rc) {
        code = rc < 0 ? rc : CONC_EFAILED;
        msg = rc < 0 ? conc_strerror(rc) : "task returned a nonzero value";
    }
    if (code)
        add_fail(w, code, msg);
    else
        add_ok(w, w->out.len);
    ctx->fail_code = 0; /* not the worker's own failure at exit */
}

/* The items of a chunk of fixed-size items. Fast path: while the piece is
 * uniform, an item that succeeds with a result of the piece's length and
 * fits is just counted (its bytes are already in place); anything else
 * goes through add_ok / add_fail. */
static void run_strided(wk_t *w, conc_pool_fn fn, const unsigned char *data, size_t stride, uint32_t count)
{
    conc__ctx_t *ctx = w->ctx;
    /* largest piece data a uniform piece may hold (see fit_item) */
    size_t lim = w->mcap - sizeof(mhdr_t) - sizeof(wres_t) - UNI_SLACK * sizeof(witem_t) - 8;
    ctx->fail_code = 0;
    for (uint32_t j = 0; j < count; j++) {
        w->out.base = w->pdlen;
        w->out.len = 0;
        int rc = fn(data + (size_t)j * stride, stride, &w->out);
        size_t len = w->out.len;
        if (__builtin_expect(rc == 0 && ctx->fail_code == 0 && w->uni && w->tabn && len == w->unilen &&
                                 w->pdlen + len <= lim,
                             1)) {
            w->tabn++;
            w->pdlen += len;
            continue;
        }
        int code = ctx->fail_code;
        const char *msg = ctx->fail_msg;
        if (!code && rc) {
            code = rc < 0 ? rc : CONC_EFAILED;
            msg = rc < 0 ? conc_strerror(rc) : "task returned a nonzero value";
        }
        if (code)
            add_fail(w, code, msg);
        else
            add_ok(w, len);
        ctx->fail_code = 0;
    }
}

/* Do a chunk's items lie inside its data? stride: count items of stride
 * bytes; 0: count + 1 offsets (u64) first, non-decreasing, within the
 * bytes after them. */
bool conc__pool_chunk_ok(const wtask_t *t, const unsigned char *data)
{
    if (t->stride)
        return t->count <= t->datalen / t->stride;
    uint64_t table = ((uint64_t)t->count + 1) * 8;
    if (table > t->datalen)
        return false;
    uint64_t prev = 0, o;
    for (uint64_t j = 0; j <= t->count; j++) {
        memcpy(&o, data + j * 8, sizeof o);
        if (o < prev || o > t->datalen - table)
            return false;
        prev = o;
    }
    return true;
}

/* Run the tasks of one message. Returns false when the worker must leave
 * (its task budget is used up). */
static bool run_tasks(wk_t *w, const unsigned char *m, size_t n, unsigned max_tasks, unsigned *done)
{
    const mhdr_t *h = (const mhdr_t *)m;
    size_t pos = sizeof *h;
    const conc_registration_t *reg = NULL;
    const char *regname = NULL;
    size_t reglen = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        /* The message came through shared memory: every length is checked
         * against what is left, without overflow, before it is used; a
         * malformed task ends the message. */
        size_t rem = n - pos;
        if (rem < sizeof(wtask_t))
            break;
        const wtask_t *t = (const wtask_t *)(m + pos);
        rem -= sizeof *t;
        if (t->namelen > rem || PAD8((size_t)t->namelen) > rem)
            break;
        rem -= PAD8((size_t)t->namelen);
        if (t->datalen > rem)
            break;
        const char *name = (const char *)(t + 1);
        const unsigned char *data = (const unsigned char *)name + PAD8(t->namelen);
        if (t->kind == K_CHUNK && !conc__pool_chunk_ok(t, data))
            break;
        size_t step = PAD8((size_t)t->datalen);
        pos += sizeof *t + PAD8((size_t)t->namelen) + (step <= rem ? step : rem);
        if (!regname || reglen != t->namelen || memcmp(regname, name, reglen) != 0) {
            char nb[256];
            size_t k = t->namelen < sizeof nb - 1 ? t->namelen : sizeof nb - 1;
            memcpy(nb, name, k);
            nb[k] = 0;
            reg = conc_registry_find(nb);
            regname = name;
            reglen = t->namelen;
        }
        int64_t t0 = now_ns();
        if (w->tabn)
            end_piece(w, t0); /* the previous task's record */
        if (w->nrec && t0 - w->oldest > FLUSH_NS)
            flush(w);
        w->task_id = t->id;
        w->first = 0;
        w->piece_start = t0;
        if (t->kind == K_CHUNK && t->stride && reg) {
            run_strided(w, (conc_pool_fn)(void (*)(void))reg->fn, data, t->stride, t->count);
        } else if (t->kind == K_CHUNK) {
            for (uint32_t j = 0; j < t->count; j++) {
                if (t->stride) {
                    run_item(w, reg, K_BYTES, data + (size_t)j * t->stride, t->stride);
                } else {
                    const uint64_t *offs = (const uint64_t *)data;
                    const unsigned char *base = data + ((size_t)t->count + 1) * 8;
                    run_item(w, reg, K_BYTES, base + offs[j], offs[j + 1] - offs[j]);
                }
            }
        } else {
            run_item(w, reg, t->kind, data, t->datalen);
        }
        if (max_tasks && ++*done >= max_tasks) {
            end_piece(w, now_ns());
            return false;
        }
    }
    end_piece(w, now_ns());
    return true;
}

#define RET(x)                                                                \
    do {                                                                      \
        ret = (x);                                                            \
        goto out;                                                             \
    } while (0)

static int worker_main(const void *arg, size_t len)
{
    if (len < sizeof(wcfg_t))
        return 70;
    wcfg_t cfg;
    memcpy(&cfg, arg, sizeof cfg);
    if (cfg.initname_len > len - sizeof cfg || cfg.initarg_len > len - sizeof cfg - cfg.initname_len)
        return 70; /* lengths past the argument's bytes */
    const int *fds;
    if (conc__child_fds(&fds) < 2)
        return 70;
    start_ppid = getppid();
    wk_t w = {0};
    int ret = 0;
    unsigned char *buf = NULL;
    w.ctx = conc__ctx();
    w.idx = cfg.idx;
    w.gen = cfg.gen;
    if (conc_mpqueue_attach(&w.tq, fds[0]) || conc_mpqueue_attach(&w.rq, fds[1]))
        RET(70);
    w.mcap = conc_mpqueue_max_message(w.rq) / 4;
    w.m = malloc(w.mcap);
    /* the parent sends messages of at most half the task queue */
    size_t cap = conc_mpqueue_max_message(w.tq) / 2 + 64;
    buf = malloc(cap);
    /* a piece's data never exceeds the message */
    if (!w.m || !buf || out_reserve(&w.out, w.mcap))
        RET(70);
    w.mlen = sizeof(mhdr_t);
    /* fault this worker's buffers in now, not during its first big task
     * (the rings' pages were allocated by the parent; mapping them here
     * too would only make the worker's exit slower) */
    if (conc_mpqueue_capacity(w.tq) * 3 <= POPULATE_MAX) {
        conc__pool_populate(buf, cap);
        conc__pool_populate(w.m, w.mcap);
        conc__pool_populate(w.out.p, w.out.cap);
    }
    if (cfg.initname_len) {
        char name[256];
        size_t k = cfg.initname_len < sizeof name - 1 ? cfg.initname_len : sizeof name - 1;
        memcpy(name, (const char *)arg + sizeof cfg, k);
        name[k] = 0;
        const conc_registration_t *r = conc_registry_find(name);
        conc_fail_clear();
        int rc = r ? ((conc_process_fn)(void (*)(void))r->fn)(
                         (const char *)arg + sizeof cfg + cfg.initname_len, cfg.initarg_len)
                   : CONC_EINVAL;
        const char *msg;
        int code = conc_failure(&msg);
        if (!r)
            msg = "initializer not found in the worker's registry";
        if (code || rc) {
            if (!code)
                msg = rc < 0 ? conc_strerror(rc) : "initializer returned a nonzero value";
            size_t ml = strlen(msg) + 1;
            unsigned char *m = malloc(sizeof(mhdr_t) + 4 + ml);
            if (m) {
                *(mhdr_t *)m = (mhdr_t){M_INITFAIL, w.idx, 0, w.gen};
                int32_t c = code ? code : rc;
                memcpy(m + sizeof(mhdr_t), &c, 4);
                memcpy(m + sizeof(mhdr_t) + 4, msg, ml);
                put_msg(&w, m, sizeof(mhdr_t) + 4 + ml);
                free(m);
            }
            conc_fail_clear();
            RET(1);
        }
    }
    unsigned done = 0;
    for (;;) {
        size_t n;
        int rc = conc_mpqueue_get(w.tq, buf, cap, &n, w.nrec == 0, 0.25);
        if (rc == CONC_EEMPTY) {
            if (w.nrec) {
                flush(&w);
                continue;
            }
            if (!parent_alive())
                RET(0);
            continue;
        }
        if (rc || n < sizeof(mhdr_t))
            RET(70);
        const mhdr_t *h = (const mhdr_t *)buf;
        if (h->type == M_STOP) {
            flush(&w);
            RET(0);
        }
        if (h->type != M_TASKS)
            continue;
        /* A new message: its tasks may be long, send what we have first
         * (tasks are only batched into one message when they are short). */
        flush(&w);
        if (!run_tasks(&w, buf, n, cfg.max_tasks, &done)) {
            flush(&w);
            mhdr_t r = {M_RETIRE, w.idx, 0, w.gen};
            put_msg(&w, &r, sizeof r);
            RET(0);
        }
        if (w.nrec && now_ns() - w.oldest > FLUSH_NS)
            flush(&w);
    }
out:
    free(buf);
    free(w.m);
    free(w.tab);
    free(w.out.p);
    conc_mpqueue_free(w.tq);
    conc_mpqueue_free(w.rq);
    return ret;
}
#undef RET
CONC_REGISTER_AS(worker_main, "conc.pool.worker", CONC_SIG_PROCESS);

const conc_registration_t *conc__pool_worker_entry(void)
{
    return &conc__reg_worker_main;
}
