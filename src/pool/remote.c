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

typedef struct {
    conc_pool_out_t out;    /* item results, one after the other */
    witem_t *tab;
    size_t n, cap;
    uint32_t nfail;
} run_t;

static int add_item(run_t *r, int code, uint32_t len)
{
    if (r->n == r->cap) {
        size_t c = r->cap ? r->cap * 2 : 16;
        witem_t *t = realloc(r->tab, c * sizeof *t);
        if (!t)
            return CONC_ENOMEM;
        r->tab = t;
        r->cap = c;
    }
    r->tab[r->n++] = (witem_t){code, len};
    r->nfail += code != 0;
    return 0;
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
    return add_item(r, code, (uint32_t)len);
}

static int run_one(run_t *r, const conc_registration_t *reg, uint32_t kind, const void *arg, size_t len)
{
    conc_fail_clear();
    r->out.len = 0;
    if (!reg)
        return item_fail(r, CONC_EINVAL, "task function not found in the worker's registry");
    int rc = 0;
    if (kind == K_WORD) {
        uint64_t v = 0;
        memcpy(&v, arg, len < 8 ? len : 8);
        void *res = ((void *(*)(void *))(void (*)(void))reg->fn)((void *)(uintptr_t)v);
        uint64_t rv = (uint64_t)(uintptr_t)res;
        const char *msg;
        int code = conc_failure(&msg);
        if (code) {
            rc = item_fail(r, code, msg);
            conc_fail_clear();
            return rc;
        }
        if (conc_pool_return(&r->out, &rv, 8))
            return CONC_ENOMEM;
    } else {
        int ret = ((conc_pool_fn)(void (*)(void))reg->fn)(arg, len, &r->out);
        const char *msg;
        int code = conc_failure(&msg);
        if (!code && ret) {
            code = ret < 0 ? ret : CONC_EFAILED;
            msg = ret < 0 ? conc_strerror(ret) : "task returned a nonzero value";
        }
        if (code) {
            rc = item_fail(r, code, msg);
            conc_fail_clear();
            return rc;
        }
    }
    if (r->out.len > UINT32_MAX)
        return item_fail(r, CONC_ERANGE, "result too large");
    uint32_t n = (uint32_t)r->out.len;
    r->out.base += n;
    r->out.len = 0;
    return add_item(r, 0, n);
}

static int make_blob(run_t *r, void **blob, size_t *bloblen)
{
    bool uni = r->nfail == 0;
    for (size_t j = 1; uni && j < r->n; j++)
        uni = r->tab[j].len == r->tab[0].len;
    size_t tab = uni ? 0 : r->n * sizeof(witem_t);
    size_t datalen = r->out.base;
    unsigned char *b = malloc(sizeof(conc__rblob_t) + tab + datalen);
    if (!b)
        return CONC_ENOMEM;
    conc__rblob_t h = {(uint32_t)r->n, r->nfail, uni && r->n ? r->tab[0].len : 0, !uni, datalen};
    memcpy(b, &h, sizeof h);
    if (tab)
        memcpy(b + sizeof h, r->tab, tab);
    if (datalen)
        memcpy(b + sizeof h + tab, r->out.p, datalen);
    *blob = b;
    *bloblen = sizeof h + tab + datalen;
    return 0;
}

int conc__pool_remote_run(const void *wire, size_t len, void **blob, size_t *bloblen)
{
    if (!wire || !blob || !bloblen || len < sizeof(wtask_t))
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
    run_t r = {0};
    int rc = 0;
    if (t.kind != K_CHUNK) {
        rc = run_one(&r, reg, t.kind, data, t.datalen);
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
        rc = make_blob(&r, blob, bloblen);
    free(r.tab);
    free(r.out.p);
    return rc;
}

int conc__pool_remote_fail_blob(uint32_t count, int code, const char *msg, void **blob, size_t *bloblen)
{
    run_t r = {0};
    int rc = 0;
    for (uint32_t j = 0; rc == 0 && j < (count ? count : 1); j++)
        rc = item_fail(&r, code, msg);
    if (rc == 0)
        rc = make_blob(&r, blob, bloblen);
    free(r.tab);
    free(r.out.p);
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
    size_t tab = h.table ? (size_t)h.count * sizeof(witem_t) : 0;
    if (h.count != count || (h.table && h.count > (len - sizeof h) / sizeof(witem_t)) ||
        h.datalen != len - sizeof h - tab)
        return broken(f, "BrokenExecutor: a worker sent a malformed result");
    const witem_t *items = (const witem_t *)(b + sizeof h);
    const unsigned char *data = b + sizeof h + tab;
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
        int32_t code = h.table ? items[0].code : 0;
        uint32_t l0 = h.table ? items[0].len : h.unilen;
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
