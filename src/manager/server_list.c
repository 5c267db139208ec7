/*
 * server_list.c — the rest of ListProxy on the manager server: `x in l`,
 * `del l[i]`, `l[start:stop:step]`, `del l[start:stop:step]`,
 * `l.sort(reverse=)` and `l *= n`.
 *
 * Slices follow CPython's PySlice_Unpack + PySlice_AdjustIndices: a
 * missing bound (INT64_MIN on the wire: None) is the start or end in the
 * step's direction; a negative bound counts from the end; bounds are then
 * clamped to the list ([-1, len-1] for a negative step, [0, len] else).
 * Step 0 is CONC_EINVAL (ValueError); step None is 1.
 *
 * Items compare as bytes (memcmp of the common prefix, then the shorter
 * first); a nested proxy has no order (sort with one among two or more
 * items is CONC_EINVAL: TypeError) and equals no bytes. The sort is a
 * stable merge sort (reverse keeps equal items in their order, as
 * Python's does).
 *
 * Removed items may hold references: they are taken out under o->mu and
 * freed (conc__mgr_unref) after it is released, since the server lock is
 * never taken under an object's lock. Every request parses exactly before
 * anything changes; the server's input is untrusted.
 */
#include <stdlib.h>
#include <string.h>

#include "manager/objects.h"

#define NONE INT64_MIN
/* l *= n: at most this many items / item bytes afterwards (else
 * CONC_ENOMEM). One small request must not make the server allocate
 * without bound (the fuzzer's memory limit, other clients). */
#define IMUL_MAX_ITEMS ((size_t)1 << 20)
#define IMUL_MAX_BYTES ((size_t)1 << 26)

typedef struct { int64_t start, step; size_t n; } span_t;

/* PySlice_AdjustIndices: the positions a slice selects in a list of len
 * items (step != 0, not NONE). */
static span_t adjust(int64_t start, int64_t stop, int64_t step, size_t len)
{
    int64_t n = (int64_t)len;
    if (start == NONE)
        start = step < 0 ? n - 1 : 0;
    else if (start < 0)
        start = start + n < 0 ? (step < 0 ? -1 : 0) : start + n;
    else if (start >= n)
        start = step < 0 ? n - 1 : n;
    if (stop == NONE)
        stop = step < 0 ? -1 : n;
    else if (stop < 0)
        stop = stop + n < 0 ? (step < 0 ? -1 : 0) : stop + n;
    else if (stop >= n)
        stop = step < 0 ? n - 1 : n;
    span_t s = {start, step, 0};
    if (step < 0 && stop < start)
        s.n = (size_t)((uint64_t)(start - stop - 1) / (uint64_t)-step + 1);
    else if (step > 0 && start < stop)
        s.n = (size_t)((uint64_t)(stop - start - 1) / (uint64_t)step + 1);
    return s;
}

static void put_nested(conc__wbuf_t *w, const item_t *it)
{
    conc__wb_u8(w, it->ref ? (uint8_t)it->ref->kind : 0);
    if (!it->ref)
        conc__wb_bytes(w, it->p, it->n);
}

static int item_cmp(const item_t *a, const item_t *b)
{
    size_t n = a->n < b->n ? a->n : b->n;
    int c = n ? memcmp(a->p, b->p, n) : 0;
    if (c)
        return c;
    return (a->n > b->n) - (a->n < b->n);
}

/* Stable merge sort of v[0..n) using tmp (n items). */
static void msort(item_t *v, item_t *tmp, size_t n, bool rev)
{
    if (n < 2)
        return;
    size_t h = n / 2;
    msort(v, tmp, h, rev);
    msort(v + h, tmp, n - h, rev);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int c = item_cmp(&v[j], &v[i]);
        /* take the right one only when it goes strictly before the left */
        if (rev ? c > 0 : c < 0)
            tmp[k++] = v[j++];
        else
            tmp[k++] = v[i++];
    }
    while (i < h)
        tmp[k++] = v[i++];
    while (j < n)
        tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof *v);
}

/* With o->mu held: take the items of s out of o into *out (malloc'd,
 * s.n items; freed by the caller after unlocking). 0 or CONC_ENOMEM
 * (nothing changed). */
static int take_span(obj_t *o, span_t s, item_t **out)
{
    *out = NULL;
    if (!s.n)
        return 0;
    item_t *gone = malloc(s.n * sizeof *gone);
    if (!gone)
        return CONC_ENOMEM;
    /* the same positions with a positive step, lowest first */
    size_t first = s.step < 0 ? (size_t)(s.start + (int64_t)(s.n - 1) * s.step) : (size_t)s.start;
    size_t step = s.step < 0 ? (size_t)-(uint64_t)s.step : (size_t)s.step;
    size_t w = first, k = 0;
    for (size_t i = first; i < o->len; i++) {
        if (k < s.n && i == first + k * step)
            gone[k++] = *conc__mgr_vec_at(o, i);
        else
            *conc__mgr_vec_at(o, w++) = *conc__mgr_vec_at(o, i);
    }
    o->len -= s.n;
    *out = gone;
    return 0;
}

static void drop_items(conc__mgr_server_t *s, item_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].p);
        conc__mgr_unref(s, v[i].ref);
    }
    free(v);
}

/* l *= n for n >= 2 (o->mu held): the items repeated; all or nothing. */
static int repeat(obj_t *o, int64_t times)
{
    size_t len = o->len, bytes = 0;
    if (!len)
        return 0;
    if ((uint64_t)times > IMUL_MAX_ITEMS / len)
        return CONC_ENOMEM;
    size_t more = len * (size_t)(times - 1);
    for (size_t i = 0; i < len; i++)
        bytes += conc__mgr_vec_at(o, i)->n;
    if (bytes && (uint64_t)times > IMUL_MAX_BYTES / bytes)
        return CONC_ENOMEM;
    int rc = conc__mgr_vec_reserve(o, more);
    size_t done = 0;
    for (; !rc && done < more; done++) {
        const item_t *src = conc__mgr_vec_at(o, done % len);
        item_t *dst = conc__mgr_vec_at(o, len + done);
        *dst = (item_t){NULL, src->n, src->ref};
        if (src->ref)
            continue;
        if (!(dst->p = malloc(src->n ? src->n : 1))) {
            rc = CONC_ENOMEM;
            break;
        }
        memcpy(dst->p, src->p, src->n);
    }
    if (rc) {
        while (done--)
            free(conc__mgr_vec_at(o, len + done)->p);
        return rc;
    }
    /* the copies' references (the originals hold one each, under o->mu) */
    for (size_t i = len; i < len + more; i++)
        if (conc__mgr_vec_at(o, i)->ref)
            __atomic_add_fetch(&conc__mgr_vec_at(o, i)->ref->refs, 1, __ATOMIC_RELAXED);
    o->len += more;
    return 0;
}

int conc__mgr_do_list_more(conc__mgr_conn_t *c, obj_t *o, conc__rbuf_t *r, int op)
{
    const uint8_t *v = NULL;
    size_t vn = 0;
    int64_t a = 0, b = 0, step = 1;
    uint8_t rev = 0;
    if (op == CONC__MOP_L_CONTAINS)
        v = conc__rb_bytes(r, &vn);
    if (op == CONC__MOP_L_DEL || op == CONC__MOP_L_IMUL)
        a = (int64_t)conc__rb_u64(r);
    if (op == CONC__MOP_L_SLICE || op == CONC__MOP_L_DEL_SLICE) {
        a = (int64_t)conc__rb_u64(r);
        b = (int64_t)conc__rb_u64(r);
        step = (int64_t)conc__rb_u64(r);
    }
    if (op == CONC__MOP_L_SORT)
        rev = conc__rb_u8(r);
    if (!conc__rb_done(r) || rev > 1)
        return conc__mgr_bad(c);
    if (step == NONE)
        step = 1;
    if (step == 0) { /* ValueError: slice step cannot be zero */
        conc__mgr_reply_code(c, CONC_EINVAL);
        return 0;
    }
    conc__wbuf_t *w = &c->out;
    item_t *gone = NULL;
    size_t ngone = 0;
    int rc = 0;
    conc_lock_acquire(&o->mu, true, CONC_FOREVER);
    switch (op) {
    case CONC__MOP_L_CONTAINS: {
        bool found = false;
        for (size_t i = 0; i < o->len && !found; i++) {
            const item_t *it = conc__mgr_vec_at(o, i);
            found = !it->ref && it->n == vn && (!vn || memcmp(it->p, v, vn) == 0);
        }
        conc__mgr_reply_code(c, 0);
        conc__wb_u8(w, found);
        break;
    }
    case CONC__MOP_L_DEL: {
        /* a one-item slice at the normalized index (IndexError when out of range) */
        int64_t n = (int64_t)o->len;
        if (a < 0)
            a = a < -n ? -1 : a + n;
        if (a < 0 || a >= n) {
            rc = CONC_ERANGE;
        } else if ((rc = take_span(o, (span_t){a, 1, 1}, &gone)) == 0) {
            ngone = 1;
        }
        conc__mgr_reply_code(c, rc);
        break;
    }
    case CONC__MOP_L_SLICE: {
        span_t s = adjust(a, b, step, o->len);
        conc__mgr_reply_code(c, 0);
        conc__wb_u64(w, s.n);
        /* start + k * step stays in [0, len) for k < n (no step past the last) */
        for (size_t k = 0; k < s.n && !w->oom && w->len <= CONC__MGR_MAX_FRAME; k++)
            put_nested(w, conc__mgr_vec_at(o, (size_t)(s.start + (int64_t)k * s.step)));
        if (w->len > 4 + CONC__MGR_MAX_FRAME)
            conc__mgr_reply_code(c, CONC_ERANGE);
        break;
    }
    case CONC__MOP_L_DEL_SLICE: {
        span_t s = adjust(a, b, step, o->len);
        if ((rc = take_span(o, s, &gone)) == 0)
            ngone = s.n;
        conc__mgr_reply_code(c, rc);
        break;
    }
    case CONC__MOP_L_SORT: {
        size_t n = o->len;
        for (size_t i = 0; i < n && n > 1 && !rc; i++)
            if (conc__mgr_vec_at(o, i)->ref)
                rc = CONC_EINVAL; /* TypeError: a proxy has no order */
        item_t *arr = NULL;
        if (!rc && n > 1 && !(arr = malloc(2 * n * sizeof *arr)))
            rc = CONC_ENOMEM;
        if (arr) {
            for (size_t i = 0; i < n; i++)
                arr[i] = *conc__mgr_vec_at(o, i);
            msort(arr, arr + n, n, rev);
            for (size_t i = 0; i < n; i++)
                *conc__mgr_vec_at(o, i) = arr[i];
            free(arr);
        }
        conc__mgr_reply_code(c, rc);
        break;
    }
    case CONC__MOP_L_IMUL:
        if (a <= 0) {
            span_t all = {0, 1, o->len};
            if ((rc = take_span(o, all, &gone)) == 0)
                ngone = all.n;
        } else if (a > 1) {
            rc = repeat(o, a);
        }
        conc__mgr_reply_code(c, rc);
        break;
    }
    conc_lock_release(&o->mu);
    if (gone)
        drop_items(c->s, gone, ngone);
    return 0;
}
