/*
 * remote.c — the pool's side of executors that live outside libconc
 * (libconc_mpi; see remote.h): running one encoded task in a worker into a
 * result blob, and turning a blob back into the future's outcome (the same
 * cres_t block a local pool's future holds, so conc_future_bytes and
 * conc_results_t work unchanged).
 *
 * The blob comes from another process (maybe another machine): every
 * length is checked before use and a malformed blob fails the future with
 * CONC_EBROKEN.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "core/park.h"
#include "futures/internal.h"
#include "pool/internal.h"
#include "pool/remote.h"

/* ------------------------------------------------------------ worker */

/* Grow out's buffer to hold at least need bytes. */
static int out_grow(conc_pool_out_t *out, size_t need)
{
    if (need <= out->cap)
        return 0;
    size_t c = out->cap ? out->cap : 4096;
    while (c < need)
        c *= 2;
    unsigned char *p = realloc(out->p, c);
    if (!p)
        return CONC_ENOMEM;
    out->p = p;
    out->cap = c;
    return 0;
}

/* One blob being built at the end of the caller's buffer: the items'
 * results go straight into it (out.p is that buffer), the table (only
 * once an item fails or differs in length) aside. */
typedef struct {
    conc_pool_out_t out;
    size_t data0;           /* where the blob's data starts in out.p */
    witem_t *tab;
    size_t n, cap;          /* items so far; table capacity */
    uint32_t nfail;
    bool uni;               /* every item so far succeeded with unilen bytes */
    uint32_t unilen;
    conc__ctx_t *ctx;
} run_t;

static int tab_push(run_t *r, int code, uint32_t len)
{
    if (r->n >= r->cap) {
        size_t c = r->cap ? r->cap * 2 : 64;
        while (c <= r->n)
            c *= 2;
        witem_t *t = realloc(r->tab, c * sizeof *t);
        if (!t)
            return CONC_ENOMEM;
        r->tab = t;
        r->cap = c;
    }
    r->tab[r->n++] = (witem_t){code, len};
    return 0;
}

/* Leave the uniform form: a table entry for every item so far. */
static int to_table(run_t *r)
{
    size_t n = r->n;
    r->n = 0;
    r->uni = false;
    for (size_t j = 0; j < n; j++)
        if (tab_push(r, 0, r->unilen))
            return CONC_ENOMEM;
    return 0;
}

static int item_ok(run_t *r, uint32_t len)
{
    r->out.base += len;
    r->out.len = 0;
    if (r->uni && (r->n == 0 || len == r->unilen)) {
        r->unilen = len;
        r->n++;
        return 0;
    }
    if (r->uni && to_table(r))
        return CONC_ENOMEM;
    return tab_push(r, 0, len);
}

/* Item failed with code and msg: the message (with its NUL) is its data. */
static int item_fail(run_t *r, int code, const char *msg)
{
    if (!msg)
        msg = "";
    size_t len = strlen(msg) + 1;
    r->out.len = 0; /* what the task wrote before failing is dropped */
    if (conc_pool_return(&r->out, msg, len))
        return CONC_ENOMEM;
    r->out.base += len;
    r->out.len = 0;
    if (r->uni && to_table(r))
        return CONC_ENOMEM;
    r->nfail++;
    return tab_push(r, code, (uint32_t)len);
}

/* After a task returned: record its outcome (ret: its return value). */
static int settle(run_t *r, int ret)
{
    conc__ctx_t *ctx = r->ctx;
    int code = ctx->fail_code;
    const char *msg = ctx->fail_msg;
    if (!code && ret) {
        code = ret < 0 ? ret : CONC_EFAILED;
        msg = ret < 0 ? conc_strerror(ret) : "task returned a nonzero value";
    }
    if (code) {
        int rc = item_fail(r, code, msg);
        ctx->fail_code = 0;
        return rc;
    }
    if (r->out.len > UINT32_MAX)
        return item_fail(r, CONC_ERANGE, "result too large");
    return item_ok(r, (uint32_t)r->out.len);
}

static int run_one(run_t *r, const conc_registration_t *reg, uint32_t kind, const void *arg, size_t len)
{
    r->out.len = 0;
    if (!reg)
        return item_fail(r, CONC_EINVAL, "task function not found in the worker's registry");
    if (kind == K_WORD) {
        uint64_t v = 0;
        memcpy(&v, arg, len < 8 ? len : 8);
        void *res = ((void *(*)(void *))(void (*)(void))reg->fn)((void *)(uintptr_t)v);
        if (r->ctx->fail_code)
            return settle(r, 0);
        uint64_t rv = (uint64_t)(uintptr_t)res;
        if (conc_pool_return(&r->out, &rv, 8))
            return CONC_ENOMEM;
        return settle(r, 0);
    }
    return settle(r, ((conc_pool_fn)(void (*)(void))reg->fn)(arg, len, &r->out));
}

/* A chunk of fixed-size items. Fast path: an item that succeeds with the
 * uniform length is just counted (its bytes are already in place). */
static int run_strided(run_t *r, conc_pool_fn fn, const unsigned char *data, size_t stride, uint32_t count)
{
    conc__ctx_t *ctx = r->ctx;
    for (uint32_t j = 0; j < count; j++) {
        r->out.len = 0;
        int ret = fn(data + (size_t)j * stride, stride, &r->out);
        size_t len = r->out.len;
        if (__builtin_expect(ret == 0 && ctx->fail_code == 0 && r->uni && r->n && len == r->unilen, 1)) {
            r->out.base += len;
            r->n++;
            continue;
        }
        int rc = settle(r, ret);
        if (rc)
            return rc;
    }
    return 0;
}

/* Close the blob: header before the data, the table after it. */
static int finish_blob(run_t *r, size_t *used)
{
    size_t datalen = r->out.base - r->data0;
    size_t tabat = PAD8(r->out.base);
    size_t tab = r->uni ? 0 : r->n * sizeof(witem_t);
    size_t end = PAD8(tabat + tab);
    r->out.len = 0;
    if (out_grow(&r->out, end)) /* room for the padding and the table */
        return CONC_ENOMEM;
    unsigned char *b = r->out.p;
    memset(b + r->out.base, 0, tabat - r->out.base);
    if (tab)
        memcpy(b + tabat, r->tab, tab);
    memset(b + tabat + tab, 0, end - tabat - tab);
    conc__rblob_t h = {(uint32_t)r->n, r->nfail, r->uni ? r->unilen : 0, !r->uni, datalen};
    memcpy(b + r->data0 - sizeof h, &h, sizeof h);
    *used = end;
    return 0;
}

/* Set up a blob at *used (8-aligned) of the caller's buffer. */
static int start_blob(run_t *r, void **buf, size_t *cap, size_t used)
{
    *r = (run_t){.out = {*buf, *cap, used + sizeof(conc__rblob_t), 0, false}, .uni = true, .ctx = conc__ctx()};
    r->data0 = r->out.base;
    if (r->data0 > r->out.cap && out_grow(&r->out, r->data0 + 64))
        return CONC_ENOMEM;
    return 0;
}

static void end_run(run_t *r, void **buf, size_t *cap)
{
    *buf = r->out.p;
    *cap = r->out.cap;
    free(r->tab);
}

int conc__pool_remote_run(const void *wire, size_t len, void **buf, size_t *cap, size_t *used)
{
    if (!wire || !buf || !cap || !used || (*used & 7) || len < sizeof(wtask_t))
        return CONC_EBROKEN;
    wtask_t t;
    memcpy(&t, wire, sizeof t);
    size_t rem = len - sizeof t;
    if (t.namelen > rem || PAD8((size_t)t.namelen) > rem || t.namelen > 255)
        return CONC_EBROKEN;
    rem -= PAD8((size_t)t.namelen);
    if (t.datalen > rem)
        return CONC_EBROKEN;
    const char *name = (const char *)wire + sizeof t;
    const unsigned char *data = (const unsigned char *)name + PAD8(t.namelen);
    if (t.kind != K_BYTES && t.kind != K_WORD && t.kind != K_CHUNK)
        return CONC_EBROKEN;
    if (t.kind == K_CHUNK && !conc__pool_chunk_ok(&t, data))
        return CONC_EBROKEN;
    char nb[256];
    memcpy(nb, name, t.namelen);
    nb[t.namelen] = 0;
    const conc_registration_t *reg = conc_registry_find(nb);
    run_t r;
    int rc = start_blob(&r, buf, cap, *used);
    r.ctx->fail_code = 0;
    if (rc) {
    } else if (t.kind != K_CHUNK) {
        rc = run_one(&r, reg, t.kind, data, t.datalen);
    } else if (t.stride && reg) {
        rc = run_strided(&r, (conc_pool_fn)(void (*)(void))reg->fn, data, t.stride, t.count);
    } else {
        for (uint32_t j = 0; rc == 0 && j < t.count; j++) {
            if (t.stride) {
                rc = run_one(&r, reg, K_BYTES, data + (size_t)j * t.stride, t.stride);
            } else {
                uint64_t o0, o1;
                memcpy(&o0, data + (size_t)j * 8, 8);
                memcpy(&o1, data + (size_t)j * 8 + 8, 8);
                const unsigned char *base = data + ((size_t)t.count + 1) * 8;
                rc = run_one(&r, reg, K_BYTES, base + o0, o1 - o0);
            }
        }
    }
    if (rc == 0)
        rc = finish_blob(&r, used);
    end_run(&r, buf, cap);
    return rc;
}

int conc__pool_remote_fail_blob(uint32_t count, int code, const char *msg, void **buf, size_t *cap,
                                size_t *used)
{
    if (!buf || !cap || !used || (*used & 7))
        return CONC_EINVAL;
    run_t r;
    int rc = start_blob(&r, buf, cap, *used);
    for (uint32_t j = 0; rc == 0 && j < (count ? count : 1); j++)
        rc = item_fail(&r, code, msg);
    if (rc == 0)
        rc = finish_blob(&r, used);
    end_run(&r, buf, cap);
    return rc;
}

/* ------------------------------------------------------------ parent */

void conc__pool_remote_fail(conc_future_t *f, int code, const char *msg)
{
    if (f)
        conc__future_fail_now(f, code, msg);
}

static void broken(conc_future_t *f, const char *why)
{
    conc__future_fail_now(f, CONC_EBROKEN, why);
}

void conc__pool_remote_complete(conc_future_t *f, uint32_t kind, uint32_t count, const void *blob, size_t len)
{
    if (!f || conc_future_state(f) != CONC_FUTURE_RUNNING)
        return;
    const unsigned char *b = blob;
    conc__rblob_t h;
    if (!b || len < sizeof h)
        return broken(f, "BrokenExecutor: a worker sent a malformed result");
    memcpy(&h, b, sizeof h);
    /* header, data, padding to 8, table */
    size_t avail = len - sizeof h;
    size_t tab = h.table ? (size_t)h.count * sizeof(witem_t) : 0;
    if (h.count != count || h.datalen > avail || (h.table && h.count > avail / sizeof(witem_t)) ||
        PAD8((size_t)h.datalen) + tab > avail)
        return broken(f, "BrokenExecutor: a worker sent a malformed result");
    const unsigned char *data = b + sizeof h;
    const witem_t *items = (const witem_t *)(data + PAD8((size_t)h.datalen));
    /* check the table: lengths add up, failures carry a NUL-ended message */
    uint64_t off = 0;
    uint32_t nfail = 0;
    if (h.table) {
        for (uint32_t j = 0; j < h.count; j++) {
            witem_t it;
            memcpy(&it, items + j, sizeof it);
            if (it.len > h.datalen - off)
                return broken(f, "BrokenExecutor: a worker sent a malformed result");
            if (it.code) {
                if (it.code > 0 || it.len == 0 || data[off + it.len - 1] != 0)
                    return broken(f, "BrokenExecutor: a worker sent a malformed result");
                nfail++;
            }
            off += it.len;
        }
        if (off != h.datalen)
            return broken(f, "BrokenExecutor: a worker sent a malformed result");
    } else if ((uint64_t)h.count * h.unilen != h.datalen) {
        return broken(f, "BrokenExecutor: a worker sent a malformed result");
    }
    if (kind != K_CHUNK) {
        witem_t i0 = {0, h.unilen};
        if (h.table)
            memcpy(&i0, items, sizeof i0);
        int32_t code = i0.code;
        uint32_t l0 = i0.len;
        if (code) {
            conc__future_fail_now(f, code, (const char *)data);
            return;
        }
        if (kind == K_WORD) {
            uint64_t v = 0;
            if (l0 == 8)
                memcpy(&v, data, 8);
            conc_future_set_result(f, (void *)(uintptr_t)v);
            return;
        }
    }
    size_t ctab = h.table ? (size_t)h.count * sizeof(citem_t) : 0;
    size_t bytes = sizeof(cres_t) + ctab + h.datalen;
    cres_t *r = conc__cres_alloc(bytes);
    if (!r) {
        conc__future_fail_now(f, CONC_ENOMEM, "out of memory for a result");
        return;
    }
    r->count = h.count;
    r->got = h.count;
    r->nfail = nfail;
    r->unilen = h.table ? 0 : h.unilen;
    r->table = h.table ? 1 : 0;
    r->cap = r->used = h.datalen;
    off = 0;
    for (uint32_t j = 0; h.table && j < h.count; j++) {
        witem_t it;
        memcpy(&it, items + j, sizeof it);
        r->items[j] = (citem_t){off, it.len, it.code};
        off += it.len;
    }
    if (h.datalen)
        memcpy(cres_data(r), data, h.datalen);
    r->magic = CRES_MAGIC;
    /* the future owns the block from here (freed with its last reference) */
    if (f->owned == NULL && conc_future_state(f) == CONC_FUTURE_RUNNING) {
        f->owned = r;
        if (conc_future_set_result(f, r) == 0)
            return;
        f->owned = NULL;
    }
    conc__cres_release(r);
}
