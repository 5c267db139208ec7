/*
 * manager_sync.c — the client side of the Manager's Event, Semaphore,
 * BoundedSemaphore, Condition and Barrier proxies (conc/manager_sync.h).
 * Each call is one request on the proxy's connection through manager.c's
 * call machinery (proxy.h); the objects themselves and how the server
 * waits are in sync.c. Arguments are checked here first (the server
 * checks them again: other processes are not trusted), so a bad call
 * costs no round trip.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conc/manager_sync.h"
#include "core/time.h"
#include "manager/proxy.h"
#include "manager/sync.h"

struct conc_mevent { int unused; };
struct conc_msem { int unused; };
struct conc_mcond { int unused; };
struct conc_mbarrier { int unused; };

static int simple(void *p, uint8_t op)
{
    if (!p)
        return CONC_EINVAL;
    if (!conc__mp_begin(p, op))
        return conc__mp_failed();
    return conc__mp_void(p, conc__mp_timeout(p));
}

static int get_u64(void *p, uint8_t op, uint64_t *v)
{
    if (!conc__mp_begin(p, op))
        return conc__mp_failed();
    return conc__mp_u64(p, v);
}

static int get_bool(void *p, uint8_t op, bool *v)
{
    if (!conc__mp_begin(p, op))
        return conc__mp_failed();
    return conc__mp_bool(p, v);
}

/* A wait with a timeout on the server: how long to wait for the reply. */
static double reply_wait(void *p, double timeout)
{
    return conc__mp_wait(p, true, timeout < 0 ? 0 : timeout);
}

/* --------------------------------------------------------------- Event */

int conc_manager_event(conc_manager_t *m, const char *name, conc_mevent_t **out)
{
    return conc__mp_make_sync(m, CONC__MK_EVENT, 0, 0, name, (void **)out);
}

int conc_mevent_set(conc_mevent_t *e) { return simple(e, CONC__MOP_E_SET); }
int conc_mevent_clear(conc_mevent_t *e) { return simple(e, CONC__MOP_E_CLEAR); }

int conc_mevent_is_set(conc_mevent_t *e, bool *out)
{
    if (!e || !out)
        return CONC_EINVAL;
    return get_bool(e, CONC__MOP_E_IS_SET, out);
}

int conc_mevent_wait(conc_mevent_t *e, double timeout)
{
    if (!e || isnan(timeout))
        return CONC_EINVAL;
    conc__wbuf_t *w = conc__mp_begin(e, CONC__MOP_E_WAIT);
    if (!w)
        return conc__mp_failed();
    conc__wb_f64(w, timeout);
    return conc__mp_void(e, reply_wait(e, timeout));
}

int conc_mevent_free(conc_mevent_t *e) { return conc__mps_free(e); }

/* ----------------------------------------------------------- Semaphore */

static int make_sem(conc_manager_t *m, const char *name, long value, uint8_t kind, conc_msem_t **out)
{
    if (value < 0 || value > (long)CONC_SEMAPHORE_MAX)
        return CONC_EINVAL;
    return conc__mp_make_sync(m, kind, value, 0, name, (void **)out);
}

int conc_manager_semaphore(conc_manager_t *m, const char *name, long value, conc_msem_t **out)
{
    return make_sem(m, name, value, CONC__MK_SEM, out);
}

int conc_manager_bounded_semaphore(conc_manager_t *m, const char *name, long value,
                                   conc_msem_t **out)
{
    return make_sem(m, name, value, CONC__MK_BSEM, out);
}

int conc_msem_acquire(conc_msem_t *s, bool blocking, double timeout)
{
    int64_t d;
    if (!s || conc__acquire_deadline_lenient(blocking, timeout, &d))
        return CONC_EINVAL;
    conc__wbuf_t *w = conc__mp_begin(s, CONC__MOP_S_ACQUIRE);
    if (!w)
        return conc__mp_failed();
    conc__wb_u8(w, blocking);
    conc__wb_f64(w, timeout);
    return conc__mp_void(s, blocking ? reply_wait(s, timeout) : conc__mp_timeout(s));
}

int conc_msem_release(conc_msem_t *s, long n)
{
    if (!s || n < 1)
        return CONC_EINVAL;
    conc__wbuf_t *w = conc__mp_begin(s, CONC__MOP_S_RELEASE);
    if (!w)
        return conc__mp_failed();
    conc__wb_u64(w, (uint64_t)(int64_t)n);
    return conc__mp_void(s, conc__mp_timeout(s));
}

int conc_msem_value(conc_msem_t *s, long *out)
{
    if (!s || !out)
        return CONC_EINVAL;
    uint64_t v = 0;
    int rc = get_u64(s, CONC__MOP_S_VALUE, &v);
    if (!rc)
        *out = (long)v;
    return rc;
}

int conc_msem_free(conc_msem_t *s) { return conc__mps_free(s); }

/* ----------------------------------------------------------- Condition */

int conc_manager_condition(conc_manager_t *m, const char *name, conc_mcond_t **out)
{
    return conc__mp_make_sync(m, CONC__MK_COND, 0, 0, name, (void **)out);
}

int conc_mcond_acquire(conc_mcond_t *c, bool blocking, double timeout)
{
    int64_t d;
    if (!c || conc__acquire_deadline(blocking, timeout, &d))
        return CONC_EINVAL;
    conc__wbuf_t *w = conc__mp_begin(c, CONC__MOP_C_ACQUIRE);
    if (!w)
        return conc__mp_failed();
    conc__wb_u8(w, blocking);
    conc__wb_f64(w, timeout);
    return conc__mp_void(c, blocking ? reply_wait(c, timeout) : conc__mp_timeout(c));
}

int conc_mcond_release(conc_mcond_t *c) { return simple(c, CONC__MOP_C_RELEASE); }

int conc_mcond_wait(conc_mcond_t *c, double timeout)
{
    if (!c || isnan(timeout))
        return CONC_EINVAL;
    conc__wbuf_t *w = conc__mp_begin(c, CONC__MOP_C_WAIT);
    if (!w)
        return conc__mp_failed();
    conc__wb_f64(w, timeout);
    /* after the notify the lock must be taken back: no bound on that */
    return conc__mp_void(c, CONC_FOREVER);
}

int conc_mcond_wait_for(conc_mcond_t *c, bool (*pred)(void *arg), void *arg, double timeout)
{
    int64_t deadline;
    if (!c || !pred || conc__deadline(timeout, &deadline))
        return CONC_EINVAL;
    /* threading.Condition.wait_for: check, wait the time left, check ... */
    while (!pred(arg)) {
        double left = CONC_FOREVER;
        if (deadline != CONC__NO_DEADLINE) {
            left = (double)(deadline - conc__now_ns()) / 1e9;
            if (left <= 0)
                return CONC_ETIMEDOUT;
        }
        int rc = conc_mcond_wait(c, left);
        if (rc && rc != CONC_ETIMEDOUT)
            return rc;
    }
    return 0;
}

int conc_mcond_notify(conc_mcond_t *c, long n)
{
    if (!c || n < 0)
        return CONC_EINVAL;
    conc__wbuf_t *w = conc__mp_begin(c, CONC__MOP_C_NOTIFY);
    if (!w)
        return conc__mp_failed();
    conc__wb_u64(w, (uint64_t)(int64_t)n);
    return conc__mp_void(c, conc__mp_timeout(c));
}

int conc_mcond_notify_all(conc_mcond_t *c) { return simple(c, CONC__MOP_C_NOTIFY_ALL); }
int conc_mcond_free(conc_mcond_t *c) { return conc__mps_free(c); }

/* ------------------------------------------------------------- Barrier */

int conc_manager_barrier(conc_manager_t *m, const char *name, int parties, double timeout,
                         conc_mbarrier_t **out)
{
    if (parties < 1 || isnan(timeout))
        return CONC_EINVAL;
    return conc__mp_make_sync(m, CONC__MK_BARRIER, parties, timeout, name, (void **)out);
}

int conc_mbarrier_wait(conc_mbarrier_t *b, double timeout, int *index)
{
    if (!b || isnan(timeout))
        return CONC_EINVAL;
    conc__wbuf_t *w = conc__mp_begin(b, CONC__MOP_B_WAIT);
    if (!w)
        return conc__mp_failed();
    conc__wb_f64(w, timeout);
    conc__rbuf_t rep;
    /* the default timeout is the server's to apply: no bound here */
    int rc = conc__mp_run(b, CONC_FOREVER, &rep);
    if (!rc) {
        uint64_t i = conc__rb_u64(&rep);
        if (!conc__rb_done(&rep) || i > INT32_MAX) {
            conc__mps_broken(b);
            rc = CONC_EBROKEN;
        } else if (index) {
            *index = (int)i;
        }
    }
    conc__mp_end(b);
    return rc;
}

int conc_mbarrier_reset(conc_mbarrier_t *b) { return simple(b, CONC__MOP_B_RESET); }
int conc_mbarrier_abort(conc_mbarrier_t *b) { return simple(b, CONC__MOP_B_ABORT); }

int conc_mbarrier_broken(conc_mbarrier_t *b, bool *out)
{
    if (!b || !out)
        return CONC_EINVAL;
    return get_bool(b, CONC__MOP_B_BROKEN, out);
}

static int get_int(void *p, uint8_t op, int *out)
{
    if (!p || !out)
        return CONC_EINVAL;
    uint64_t v = 0;
    int rc = get_u64(p, op, &v);
    if (!rc)
        *out = v > INT32_MAX ? INT32_MAX : (int)v;
    return rc;
}

int conc_mbarrier_n_waiting(conc_mbarrier_t *b, int *out) { return get_int(b, CONC__MOP_B_N_WAITING, out); }
int conc_mbarrier_parties(conc_mbarrier_t *b, int *out) { return get_int(b, CONC__MOP_B_PARTIES, out); }
int conc_mbarrier_free(conc_mbarrier_t *b) { return conc__mps_free(b); }

/* ---------------------------------------------------------------- Pool */

/* A Pool proxy: the call machinery's proxy plus the last failure. */
struct conc_mpool {
    void *p;
    int code;
    char *msg; /* NULL: no failure yet */
};

static void fail_set(conc_mpool_t *mp, int code, const uint8_t *msg, size_t n)
{
    char *m = malloc(n + 1);
    if (!m)
        return;
    memcpy(m, msg, n);
    m[n] = 0;
    free(mp->msg);
    mp->msg = m;
    mp->code = code;
}

int conc_manager_pool(conc_manager_t *m, const char *name, size_t processes, conc_mpool_t **out)
{
    if (processes > 1024 || !out)
        return CONC_EINVAL;
    conc_mpool_t *mp = calloc(1, sizeof *mp);
    if (!mp)
        return CONC_ENOMEM;
    int rc = conc__mp_make_sync(m, CONC__MK_POOL, (int64_t)processes, 0, name, &mp->p);
    if (rc) {
        free(mp);
        return rc;
    }
    *out = mp;
    return 0;
}

/* The registered name of fn, or NULL. */
static const char *fn_name(conc_pool_fn fn)
{
    const conc_registration_t *r = fn ? conc_registry_find_fn((void (*)(void))fn) : NULL;
    return r && r->sig == CONC_SIG_POOL ? r->name : NULL;
}

/* rc of a pool call; for CONC_EFAILED the task's failure is recorded. */
static int pool_reply(conc_mpool_t *mp, int rc, conc__rbuf_t *rep)
{
    if (rc == CONC_EFAILED) {
        int code = (int32_t)conc__rb_u32(rep);
        size_t n;
        const uint8_t *msg = conc__rb_bytes(rep, &n);
        if (!conc__rb_done(rep)) {
            conc__mps_broken(mp->p);
            return CONC_EBROKEN;
        }
        fail_set(mp, code, msg, n); /* under the proxy's lock: calls are serialised */
    }
    return rc;
}

/* Encode an apply request (op P_APPLY or P_APPLY_ASYNC); NULL: return *rc. */
static conc__wbuf_t *apply_begin(conc_mpool_t *mp, uint8_t op, conc_pool_fn fn, const void *arg,
                                 size_t len, int *rc)
{
    const char *name = fn_name(fn);
    void *p = mp ? mp->p : NULL;
    *rc = CONC_EINVAL;
    if (!p || !name || (!arg && len))
        return NULL;
    *rc = CONC_ERANGE;
    if (len > CONC_MANAGER_MAX_MESSAGE)
        return NULL;
    conc__wbuf_t *w = conc__mp_begin(p, op);
    if (!w) {
        *rc = conc__mp_failed();
        return NULL;
    }
    conc__wb_bytes(w, name, strlen(name));
    conc__wb_bytes(w, arg, len);
    return w;
}

/* Encode a map request (P_MAP or P_MAP_ASYNC); NULL: return *rc. */
static conc__wbuf_t *map_begin(conc_mpool_t *mp, uint8_t op, conc_pool_fn fn, const void *items,
                               size_t item_size, size_t n, size_t chunksize, int *rc)
{
    const char *name = fn_name(fn);
    void *p = mp ? mp->p : NULL;
    *rc = CONC_EINVAL;
    if (!p || !name || (!items && n))
        return NULL;
    for (size_t i = 0; !item_size && i < n; i++)
        if (!((const conc_buf_t *)items)[i].data && ((const conc_buf_t *)items)[i].len)
            return NULL;
    *rc = CONC_ERANGE;
    if (n > UINT32_MAX)
        return NULL;
    conc__wbuf_t *w = conc__mp_begin(p, op);
    if (!w) {
        *rc = conc__mp_failed();
        return NULL;
    }
    conc__wb_bytes(w, name, strlen(name));
    conc__wb_u64(w, chunksize);
    conc__wb_u32(w, (uint32_t)n);
    for (size_t i = 0; i < n && !w->oom && w->len <= CONC__MGR_MAX_FRAME + 4; i++) {
        const conc_buf_t *b = item_size ? NULL : &((const conc_buf_t *)items)[i];
        conc__wb_bytes(w, b ? b->data : (const uint8_t *)items + i * item_size, b ? b->len : item_size);
    }
    return w;
}

/* Run the call begun; the reply of an apply: bytes. Ends the call. */
static int apply_finish(conc_mpool_t *mp, double wait, void **data, size_t *rlen)
{
    void *p = mp->p;
    conc__rbuf_t rep;
    int rc = pool_reply(mp, conc__mp_run(p, wait, &rep), &rep);
    if (!rc) {
        size_t n;
        const uint8_t *b = conc__rb_bytes(&rep, &n);
        void *c = NULL;
        if (!conc__rb_done(&rep)) {
            conc__mps_broken(p);
            rc = CONC_EBROKEN;
        } else if (!(c = malloc(n ? n : 1))) {
            rc = CONC_ENOMEM;
        } else {
            memcpy(c, b, n);
            *data = c;
            *rlen = n;
        }
    }
    conc__mp_end(p);
    return rc;
}

/* The reply of a map: u32 n, n x bytes, copied into one block. */
static int map_finish(conc_mpool_t *mp, double wait, size_t n, bool any_n, conc_mbytes_t **results)
{
    void *p = mp->p;
    conc__rbuf_t rep;
    int rc = pool_reply(mp, conc__mp_run(p, wait, &rep), &rep);
    if (!rc) {
        /* two passes: check and size, then copy into one block */
        uint32_t cnt = conc__rb_u32(&rep);
        conc__rbuf_t scan = rep;
        size_t total = 0;
        for (uint32_t i = 0; i < cnt && !scan.bad; i++) {
            size_t bn;
            conc__rb_bytes(&scan, &bn);
            total += bn;
        }
        conc_mbytes_t *out = NULL;
        if (!conc__rb_done(&scan) || (!any_n && cnt != n)) {
            conc__mps_broken(p);
            rc = CONC_EBROKEN;
        } else if (!(out = malloc((size_t)cnt * sizeof *out + total + 1))) {
            rc = CONC_ENOMEM;
        } else {
            uint8_t *d = (uint8_t *)(out + cnt);
            for (uint32_t i = 0; i < cnt; i++) {
                size_t bn;
                const uint8_t *b = conc__rb_bytes(&rep, &bn);
                memcpy(d, b, bn);
                out[i] = (conc_mbytes_t){d, bn};
                d += bn;
            }
            *results = out;
        }
    }
    conc__mp_end(p);
    return rc;
}

int conc_mpool_apply(conc_mpool_t *mp, conc_pool_fn fn, const void *arg, size_t len, void **data,
                     size_t *rlen)
{
    int rc;
    if (!data || !rlen)
        return CONC_EINVAL;
    if (!apply_begin(mp, CONC__MOP_P_APPLY, fn, arg, len, &rc))
        return rc;
    return apply_finish(mp, CONC_FOREVER, data, rlen);
}

int conc_mpool_map(conc_mpool_t *mp, conc_pool_fn fn, const void *items, size_t item_size, size_t n,
                   size_t chunksize, conc_mbytes_t **results)
{
    int rc;
    if (!results)
        return CONC_EINVAL;
    if (!map_begin(mp, CONC__MOP_P_MAP, fn, items, item_size, n, chunksize, &rc))
        return rc;
    return map_finish(mp, CONC_FOREVER, n, false, results);
}

/* ------------------------------------------------------- AsyncResult */

struct conc_masync {
    conc_mpool_t *mp;
    uint64_t token;
    bool map;
};

static int async_start(conc_mpool_t *mp, bool map, conc_masync_t **out)
{
    void *p = mp->p;
    conc_masync_t *r = malloc(sizeof *r);
    conc__rbuf_t rep;
    int rc = conc__mp_run(p, conc__mp_timeout(p), &rep);
    uint64_t token = 0;
    if (!rc) {
        token = conc__rb_u64(&rep);
        if (!conc__rb_done(&rep) || !token) {
            conc__mps_broken(p);
            rc = CONC_EBROKEN;
        }
    }
    conc__mp_end(p);
    if (!rc && !r) {
        /* no memory for the handle: let the server forget the result */
        conc__wbuf_t *w = conc__mp_begin(p, CONC__MOP_P_FORGET);
        if (w) {
            conc__wb_u64(w, token);
            conc__mp_void(p, conc__mp_timeout(p));
        }
        rc = CONC_ENOMEM;
    }
    if (rc) {
        free(r);
        return rc;
    }
    *r = (conc_masync_t){mp, token, map};
    *out = r;
    return 0;
}

int conc_mpool_apply_async(conc_mpool_t *mp, conc_pool_fn fn, const void *arg, size_t len,
                           conc_masync_t **out)
{
    int rc;
    if (!out)
        return CONC_EINVAL;
    if (!apply_begin(mp, CONC__MOP_P_APPLY_ASYNC, fn, arg, len, &rc))
        return rc;
    return async_start(mp, false, out);
}

int conc_mpool_map_async(conc_mpool_t *mp, conc_pool_fn fn, const void *items, size_t item_size,
                         size_t n, size_t chunksize, conc_masync_t **out)
{
    int rc;
    if (!out)
        return CONC_EINVAL;
    if (!map_begin(mp, CONC__MOP_P_MAP_ASYNC, fn, items, item_size, n, chunksize, &rc))
        return rc;
    return async_start(mp, true, out);
}

int conc_masync_ready(conc_masync_t *r, bool *out)
{
    if (!r || !out)
        return CONC_EINVAL;
    conc__wbuf_t *w = conc__mp_begin(r->mp->p, CONC__MOP_P_READY);
    if (!w)
        return conc__mp_failed();
    conc__wb_u64(w, r->token);
    return conc__mp_bool(r->mp->p, out);
}

static conc__wbuf_t *get_begin(conc_masync_t *r, double timeout, int *rc)
{
    conc__wbuf_t *w = conc__mp_begin(r->mp->p, CONC__MOP_P_GET);
    if (!w) {
        *rc = conc__mp_failed();
        return NULL;
    }
    conc__wb_u64(w, r->token);
    conc__wb_f64(w, timeout);
    return w;
}

int conc_masync_get(conc_masync_t *r, double timeout, void **data, size_t *len)
{
    int rc;
    if (!r || r->map || !data || !len || isnan(timeout))
        return CONC_EINVAL;
    if (!get_begin(r, timeout, &rc))
        return rc;
    return apply_finish(r->mp, reply_wait(r->mp->p, timeout), data, len);
}

int conc_masync_get_map(conc_masync_t *r, double timeout, conc_mbytes_t **results)
{
    int rc;
    if (!r || !r->map || !results || isnan(timeout))
        return CONC_EINVAL;
    if (!get_begin(r, timeout, &rc))
        return rc;
    return map_finish(r->mp, reply_wait(r->mp->p, timeout), 0, true, results);
}

int conc_masync_free(conc_masync_t *r)
{
    if (!r)
        return CONC_EINVAL;
    conc__wbuf_t *w = conc__mp_begin(r->mp->p, CONC__MOP_P_FORGET);
    if (w) {
        conc__wb_u64(w, r->token);
        conc__mp_void(r->mp->p, conc__mp_timeout(r->mp->p));
    }
    free(r);
    return 0;
}

int conc_mpool_exception(conc_mpool_t *p, int *code, const char **msg)
{
    if (!p || !p->msg)
        return CONC_EINVAL;
    if (code)
        *code = p->code;
    if (msg)
        *msg = p->msg;
    return 0;
}

int conc_mpool_free(conc_mpool_t *p)
{
    if (!p)
        return CONC_EINVAL;
    int rc = conc__mps_free(p->p);
    free(p->msg);
    free(p);
    return rc;
}
