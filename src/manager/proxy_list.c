/*
 * proxy_list.c — the client side of the rest of ListProxy (conc/manager.h,
 * "list, more"): contains, del, slices, sort, *=. One request and one
 * reply each through manager.c's call machinery (parks only the calling
 * green thread; cut short by a kill or a Timeout scope). A slice's reply
 * is checked whole (shape, count, sizes) before the result block is made:
 * the server is as untrusted as its clients.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "manager/client.h"

struct conc_mlist { mproxy_t p; };

#define IS_LIST(l) ((l) && (l)->p.kind == CONC__MK_LIST)

int conc_mlist_contains(conc_mlist_t *l, const void *val, size_t len)
{
    if (!IS_LIST(l) || (!val && len))
        return CONC_EINVAL;
    if (len > CONC__MGR_MAX_FRAME)
        return CONC_ERANGE;
    conc__wbuf_t *w = conc__mp_call_begin(&l->p, CONC__MOP_L_CONTAINS);
    if (!w)
        return conc__mp_call_failed();
    conc__wb_bytes(w, val, len);
    bool in = false;
    int rc = conc__mp_call_bool(&l->p, &in);
    return rc ? rc : in;
}

int conc_mlist_del(conc_mlist_t *l, long index)
{
    if (!IS_LIST(l))
        return CONC_EINVAL;
    conc__wbuf_t *w = conc__mp_call_begin(&l->p, CONC__MOP_L_DEL);
    if (!w)
        return conc__mp_call_failed();
    conc__wb_u64(w, (uint64_t)(int64_t)index);
    return conc__mp_call_void(&l->p, l->p.timeout);
}

static conc__wbuf_t *slice_begin(conc_mlist_t *l, int op, long start, long stop, long step)
{
    conc__wbuf_t *w = conc__mp_call_begin(&l->p, (uint8_t)op);
    if (w) {
        conc__wb_u64(w, (uint64_t)(int64_t)start); /* LONG_MIN: INT64_MIN, None */
        conc__wb_u64(w, (uint64_t)(int64_t)stop);
        conc__wb_u64(w, (uint64_t)(int64_t)step);
    }
    return w;
}

int conc_mlist_slice(conc_mlist_t *l, long start, long stop, long step, conc_mitem_t **items,
                     size_t *n)
{
    if (!IS_LIST(l) || !items || !n || step == 0)
        return CONC_EINVAL;
    mproxy_t *p = &l->p;
    if (!slice_begin(l, CONC__MOP_L_SLICE, start, stop, step))
        return conc__mp_call_failed();
    conc__rbuf_t rep;
    int rc = conc__mp_call_run(p, p->timeout, &rep);
    if (!rc)
        rc = conc__mp_take_items(p, &rep, false, false, items, n);
    conc__mp_call_end(p);
    return rc;
}

int conc_mlist_del_slice(conc_mlist_t *l, long start, long stop, long step)
{
    if (!IS_LIST(l) || step == 0)
        return CONC_EINVAL;
    if (!slice_begin(l, CONC__MOP_L_DEL_SLICE, start, stop, step))
        return conc__mp_call_failed();
    return conc__mp_call_void(&l->p, l->p.timeout);
}

int conc_mlist_sort(conc_mlist_t *l, bool reverse)
{
    if (!IS_LIST(l))
        return CONC_EINVAL;
    conc__wbuf_t *w = conc__mp_call_begin(&l->p, CONC__MOP_L_SORT);
    if (!w)
        return conc__mp_call_failed();
    conc__wb_u8(w, reverse ? 1 : 0);
    return conc__mp_call_void(&l->p, l->p.timeout);
}

int conc_mlist_imul(conc_mlist_t *l, long n)
{
    if (!IS_LIST(l))
        return CONC_EINVAL;
    conc__wbuf_t *w = conc__mp_call_begin(&l->p, CONC__MOP_L_IMUL);
    if (!w)
        return conc__mp_call_failed();
    conc__wb_u64(w, (uint64_t)(int64_t)n);
    return conc__mp_call_void(&l->p, l->p.timeout);
}
