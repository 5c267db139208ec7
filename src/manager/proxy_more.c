/*
 * proxy_more.c — the client side of the manager's newer proxies
 * (conc/manager.h, "more proxies"): Namespace, Value, instances of
 * registered types, the rest of DictProxy, nested proxies. Every call is
 * one request and one reply through manager.c's call machinery, so each
 * parks only the calling green thread and is cut short by a kill or a
 * Timeout scope like the first proxies' calls.
 *
 * A nested proxy is read back by opening a new proxy whose first request
 * is BIND_ITEM (container id + key or index): the server binds it to the
 * object the item refers to in one step, so the object cannot be dropped
 * between the read and the bind.
 */
#include <stdlib.h>
#include <string.h>

#include "manager/client.h"
#include "manager/objects.h"

struct conc_mdict { mproxy_t p; };
struct conc_mlist { mproxy_t p; };
struct conc_mns { mproxy_t p; };
struct conc_mvalue { mproxy_t p; };
struct conc_mobject { mproxy_t p; };

#define KEYOK(k, kn) ((k) || !(kn))
#define MAX_ATTR 4096

int conc_mproxy_free(void *proxy) { return conc__mp_free(proxy); }

/* A proxy of the kind a call expects: a proxy cast to the wrong type (say
 * one from a *_get_proxy) is CONC_EINVAL here, instead of a request the
 * server refuses by closing the connection. */
#define IS(x, k) ((x) && (x)->p.kind == (k))

/* The proxy another proxy of the same server refers to: its object id (0:
 * not a proxy of that server). */
static uint64_t same_server_id(const mproxy_t *p, const void *proxy)
{
    const mproxy_t *q = proxy;
    if (!q || !q->id || strcmp(q->addr, p->addr) != 0)
        return 0;
    return q->id;
}

/* ---------------------------------------------------------- dict, more */

static int copy_out(const void *src, size_t n, void **val, size_t *vlen)
{
    void *o = malloc(n ? n : 1);
    if (!o)
        return CONC_ENOMEM;
    if (n)
        memcpy(o, src, n);
    *val = o;
    *vlen = n;
    return 0;
}

int conc_mdict_get_default(conc_mdict_t *d, const void *key, size_t klen, const void *def,
                           size_t dlen, void **val, size_t *vlen)
{
    if (!KEYOK(def, dlen))
        return CONC_EINVAL;
    int rc = conc_mdict_get(d, key, klen, val, vlen);
    return rc == CONC_EKEY ? copy_out(def, dlen, val, vlen) : rc;
}

int conc_mdict_pop_default(conc_mdict_t *d, const void *key, size_t klen, const void *def,
                           size_t dlen, void **val, size_t *vlen)
{
    if (!KEYOK(def, dlen))
        return CONC_EINVAL;
    int rc = conc_mdict_pop(d, key, klen, val, vlen);
    return rc == CONC_EKEY ? copy_out(def, dlen, val, vlen) : rc;
}

int conc_mdict_setdefault(conc_mdict_t *d, const void *key, size_t klen, const void *def,
                          size_t dlen, void **val, size_t *vlen)
{
    if (!IS(d, CONC__MK_DICT) || !KEYOK(key, klen) || !KEYOK(def, dlen) || !val || !vlen)
        return CONC_EINVAL;
    if (klen > CONC__MGR_MAX_FRAME || dlen > CONC__MGR_MAX_FRAME)
        return CONC_ERANGE;
    conc__wbuf_t *w = conc__mp_call_begin(&d->p, CONC__MOP_D_SETDEFAULT);
    if (!w)
        return conc__mp_call_failed();
    conc__wb_bytes(w, key, klen);
    conc__wb_bytes(w, def, dlen);
    return conc__mp_call_bytes(&d->p, d->p.timeout, val, vlen);
}

/* A nested value from a reply: kind, and bytes for plain bytes. */
static bool take_nested(conc__rbuf_t *r, conc_mkind_t *kind, const uint8_t **b, size_t *n)
{
    uint8_t k = conc__rb_u8(r);
    *kind = (conc_mkind_t)k;
    *b = NULL;
    *n = 0;
    if (k == 0)
        *b = conc__rb_bytes(r, n);
    return !r->bad;
}

int conc_mdict_popitem(conc_mdict_t *d, void **key, size_t *klen, void **val, size_t *vlen)
{
    if (!IS(d, CONC__MK_DICT) || !key || !klen || !val || !vlen)
        return CONC_EINVAL;
    mproxy_t *p = &d->p;
    if (!conc__mp_call_begin(p, CONC__MOP_D_POPITEM))
        return conc__mp_call_failed();
    conc__rbuf_t rep;
    int rc = conc__mp_call_run(p, p->timeout, &rep);
    if (!rc) {
        size_t kn, vn;
        const uint8_t *k = conc__rb_bytes(&rep, &kn), *v;
        conc_mkind_t kind;
        if (!take_nested(&rep, &kind, &v, &vn) || !conc__rb_done(&rep)) {
            rc = conc__mp_broken(p);
        } else if ((rc = copy_out(k, kn, key, klen)) == 0) {
            if (kind != CONC_MK_BYTES) {
                *val = NULL;
                *vlen = 0;
            } else if ((rc = copy_out(v, vn, val, vlen)) != 0) {
                free(*key);
                *key = NULL;
            }
        }
    }
    conc__mp_call_end(p);
    return rc;
}

int conc_mdict_update(conc_mdict_t *d, const conc_mbytes_t *keys, const conc_mbytes_t *vals, size_t n)
{
    if (!IS(d, CONC__MK_DICT) || (n && (!keys || !vals)))
        return CONC_EINVAL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!KEYOK(keys[i].data, keys[i].len) || !KEYOK(vals[i].data, vals[i].len))
            return CONC_EINVAL;
        if (keys[i].len > CONC__MGR_MAX_FRAME || vals[i].len > CONC__MGR_MAX_FRAME ||
            (total += keys[i].len + vals[i].len + 8) > CONC__MGR_MAX_FRAME)
            return CONC_ERANGE;
    }
    conc__wbuf_t *w = conc__mp_call_begin(&d->p, CONC__MOP_D_UPDATE);
    if (!w)
        return conc__mp_call_failed();
    conc__wb_u32(w, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        conc__wb_bytes(w, keys[i].data, keys[i].len);
        conc__wb_bytes(w, vals[i].data, vals[i].len);
    }
    return conc__mp_call_void(&d->p, d->p.timeout);
}

int conc__mp_take_items(mproxy_t *p, conc__rbuf_t *rep, bool keyed, bool with_keys,
                        conc_mitem_t **items, size_t *n)
{
    uint64_t count = conc__rb_u64(rep);
    conc__rbuf_t scan = *rep; /* check the shape and size the block first */
    size_t bytes = 0;
    for (uint64_t i = 0; i < count && !scan.bad; i++) {
        size_t kn = 0, vn;
        const uint8_t *v;
        conc_mkind_t kind;
        if (keyed)
            conc__rb_bytes(&scan, &kn);
        if (take_nested(&scan, &kind, &v, &vn))
            bytes += (with_keys ? kn : 0) + vn;
    }
    /* the least an item takes: a kind, and a key's length when keyed */
    if (!conc__rb_done(&scan) || count > (uint64_t)(rep->end - rep->p) / (keyed ? 5 : 1))
        return conc__mp_broken(p);
    conc_mitem_t *arr = malloc(count * sizeof *arr + bytes + 1);
    if (!arr)
        return CONC_ENOMEM;
    uint8_t *data = (uint8_t *)(arr + count);
    for (uint64_t i = 0; i < count; i++) {
        size_t kn = 0, vn;
        const uint8_t *k = keyed ? conc__rb_bytes(rep, &kn) : NULL, *v;
        conc_mkind_t kind;
        take_nested(rep, &kind, &v, &vn);
        arr[i] = (conc_mitem_t){{NULL, 0}, {NULL, 0}, kind};
        if (keyed && with_keys) {
            memcpy(data, k, kn);
            arr[i].key.data = data;
            arr[i].key.len = kn;
            data += kn;
        }
        if (kind == CONC_MK_BYTES) {
            if (vn)
                memcpy(data, v, vn);
            arr[i].value.data = data;
            arr[i].value.len = vn;
            data += vn;
        }
    }
    *items = arr;
    *n = (size_t)count;
    return 0;
}

static int dict_items(conc_mdict_t *d, bool with_keys, conc_mitem_t **items, size_t *n)
{
    if (!IS(d, CONC__MK_DICT) || !items || !n)
        return CONC_EINVAL;
    mproxy_t *p = &d->p;
    if (!conc__mp_call_begin(p, CONC__MOP_D_ITEMS))
        return conc__mp_call_failed();
    conc__rbuf_t rep;
    int rc = conc__mp_call_run(p, p->timeout, &rep);
    if (!rc)
        rc = conc__mp_take_items(p, &rep, true, with_keys, items, n);
    conc__mp_call_end(p);
    return rc;
}

int conc_mdict_items(conc_mdict_t *d, conc_mitem_t **items, size_t *n)
{
    return dict_items(d, true, items, n);
}

int conc_mdict_copy(conc_mdict_t *d, conc_mitem_t **items, size_t *n)
{
    return dict_items(d, true, items, n);
}

int conc_mdict_values(conc_mdict_t *d, conc_mitem_t **items, size_t *n)
{
    return dict_items(d, false, items, n);
}

/* ------------------------------------------------------ nested proxies */

static int set_ref_key(mproxy_t *p, const void *key, size_t klen, const void *proxy)
{
    uint64_t id = same_server_id(p, proxy);
    if (!id)
        return CONC_EINVAL;
    if (klen > CONC__MGR_MAX_FRAME)
        return CONC_ERANGE;
    conc__wbuf_t *w = conc__mp_call_begin(p, CONC__MOP_D_SET_REF);
    if (!w)
        return conc__mp_call_failed();
    conc__wb_bytes(w, key, klen);
    conc__wb_u64(w, id);
    return conc__mp_call_void(p, p->timeout);
}

/* A new proxy of the object the container p holds at key (sel 0) or
 * index (sel 1). The container's own connection is not used. */
static int get_ref(mproxy_t *p, uint8_t sel, const void *key, size_t klen, long index, void **proxy,
                   conc_mkind_t *kind)
{
    if (klen > CONC__MGR_MAX_FRAME)
        return CONC_ERANGE;
    conc__wbuf_t req = {0};
    conc__wb_u64(&req, p->id);
    conc__wb_u8(&req, sel);
    if (sel == 0)
        conc__wb_bytes(&req, key, klen);
    else
        conc__wb_u64(&req, (uint64_t)(int64_t)index);
    mproxy_t *q = NULL;
    int rc = req.oom ? CONC_ENOMEM : conc__mp_make_item(p, req.p, req.len, &q);
    conc__wb_free(&req);
    if (rc)
        return rc;
    *proxy = q;
    if (kind)
        *kind = (conc_mkind_t)q->kind;
    return 0;
}

int conc_mdict_set_proxy(conc_mdict_t *d, const void *key, size_t klen, const void *proxy)
{
    if (!IS(d, CONC__MK_DICT) || !KEYOK(key, klen))
        return CONC_EINVAL;
    return set_ref_key(&d->p, key, klen, proxy);
}

int conc_mdict_get_proxy(conc_mdict_t *d, const void *key, size_t klen, void **proxy,
                         conc_mkind_t *kind)
{
    if (!IS(d, CONC__MK_DICT) || !KEYOK(key, klen) || !proxy)
        return CONC_EINVAL;
    return get_ref(&d->p, 0, key, klen, 0, proxy, kind);
}

int conc_mlist_append_proxy(conc_mlist_t *l, const void *proxy)
{
    uint64_t id = IS(l, CONC__MK_LIST) ? same_server_id(&l->p, proxy) : 0;
    if (!id)
        return CONC_EINVAL;
    conc__wbuf_t *w = conc__mp_call_begin(&l->p, CONC__MOP_L_APPEND_REF);
    if (!w)
        return conc__mp_call_failed();
    conc__wb_u64(w, id);
    return conc__mp_call_void(&l->p, l->p.timeout);
}

int conc_mlist_set_proxy(conc_mlist_t *l, long index, const void *proxy)
{
    uint64_t id = IS(l, CONC__MK_LIST) ? same_server_id(&l->p, proxy) : 0;
    if (!id)
        return CONC_EINVAL;
    conc__wbuf_t *w = conc__mp_call_begin(&l->p, CONC__MOP_L_SET_REF);
    if (!w)
        return conc__mp_call_failed();
    conc__wb_u64(w, (uint64_t)(int64_t)index);
    conc__wb_u64(w, id);
    return conc__mp_call_void(&l->p, l->p.timeout);
}

int conc_mlist_get_proxy(conc_mlist_t *l, long index, void **proxy, conc_mkind_t *kind)
{
    if (!IS(l, CONC__MK_LIST) || !proxy)
        return CONC_EINVAL;
    return get_ref(&l->p, 1, NULL, 0, index, proxy, kind);
}

/* ----------------------------------------------------------- Namespace */

int conc_manager_namespace(conc_manager_t *m, const char *name, conc_mns_t **out)
{
    if (!m || !out || (name && strlen(name) > 4096))
        return CONC_EINVAL;
    return conc__mp_make(m, CONC__MK_NAMESPACE, 0, name, (mproxy_t **)out, NULL, 0);
}

/* An attribute name Python would share: 1..4096 bytes, not '_'-prefixed. */
static bool attr_ok(const char *a) { return a && a[0] && a[0] != '_' && strlen(a) <= MAX_ATTR; }

int conc_mns_set(conc_mns_t *ns, const char *attr, const void *val, size_t len)
{
    if (!IS(ns, CONC__MK_NAMESPACE) || !attr_ok(attr))
        return CONC_EINVAL;
    return conc_mdict_set((conc_mdict_t *)ns, attr, strlen(attr), val, len);
}

int conc_mns_get(conc_mns_t *ns, const char *attr, void **val, size_t *len)
{
    if (!IS(ns, CONC__MK_NAMESPACE) || !attr_ok(attr))
        return CONC_EINVAL;
    return conc_mdict_get((conc_mdict_t *)ns, attr, strlen(attr), val, len);
}

int conc_mns_del(conc_mns_t *ns, const char *attr)
{
    if (!IS(ns, CONC__MK_NAMESPACE) || !attr_ok(attr))
        return CONC_EINVAL;
    return conc_mdict_del((conc_mdict_t *)ns, attr, strlen(attr));
}

int conc_mns_has(conc_mns_t *ns, const char *attr, bool *out)
{
    if (!IS(ns, CONC__MK_NAMESPACE) || !attr_ok(attr))
        return CONC_EINVAL;
    return conc_mdict_contains((conc_mdict_t *)ns, attr, strlen(attr), out);
}

int conc_mns_names(conc_mns_t *ns, conc_mbytes_t **names, size_t *n)
{
    if (!IS(ns, CONC__MK_NAMESPACE))
        return CONC_EINVAL;
    return conc_mdict_keys((conc_mdict_t *)ns, names, n);
}

int conc_mns_set_proxy(conc_mns_t *ns, const char *attr, const void *proxy)
{
    if (!IS(ns, CONC__MK_NAMESPACE) || !attr_ok(attr))
        return CONC_EINVAL;
    return set_ref_key(&ns->p, attr, strlen(attr), proxy);
}

int conc_mns_get_proxy(conc_mns_t *ns, const char *attr, void **proxy, conc_mkind_t *kind)
{
    if (!IS(ns, CONC__MK_NAMESPACE) || !attr_ok(attr) || !proxy)
        return CONC_EINVAL;
    return get_ref(&ns->p, 0, attr, strlen(attr), 0, proxy, kind);
}

int conc_mns_free(conc_mns_t *ns) { return conc__mp_free((mproxy_t *)ns); }

/* --------------------------------------------------------------- Value */

int conc_manager_value(conc_manager_t *m, const char *name, char typecode, const void *init,
                       conc_mvalue_t **out)
{
    size_t size = conc_mvalue_size(typecode);
    if (!m || !out || !size || (name && strlen(name) > 4096))
        return CONC_EINVAL;
    uint8_t buf[1 + 8] = {(uint8_t)typecode};
    if (init)
        memcpy(buf + 1, init, size);
    int rc = conc__mp_make(m, CONC__MK_VALUE, 0, name, (mproxy_t **)out, buf, 1 + size);
    if (!rc)
        (*out)->p.vtype_cache = typecode;
    return rc;
}

int conc_mvalue_get(conc_mvalue_t *v, void *out)
{
    if (!IS(v, CONC__MK_VALUE))
        return CONC_EINVAL;
    mproxy_t *p = &v->p;
    if (!conc__mp_call_begin(p, CONC__MOP_V_GET))
        return conc__mp_call_failed();
    conc__rbuf_t rep;
    int rc = conc__mp_call_run(p, p->timeout, &rep);
    if (!rc) {
        char tc = (char)conc__rb_u8(&rep);
        size_t n;
        const uint8_t *b = conc__rb_bytes(&rep, &n);
        if (!conc__rb_done(&rep) || !conc_mvalue_size(tc) || n != conc_mvalue_size(tc) ||
            (p->vtype_cache && p->vtype_cache != tc)) {
            rc = conc__mp_broken(p); /* not a Value's reply */
        } else {
            p->vtype_cache = tc; /* a nested Value learns its typecode here */
            if (out)
                memcpy(out, b, n);
        }
    }
    conc__mp_call_end(p);
    return rc;
}

int conc_mvalue_set(conc_mvalue_t *v, const void *in)
{
    if (!IS(v, CONC__MK_VALUE) || !in)
        return CONC_EINVAL;
    if (!v->p.vtype_cache) { /* read back from a container: learn the typecode first */
        int rc = conc_mvalue_get(v, NULL);
        if (rc)
            return rc;
    }
    conc__wbuf_t *w = conc__mp_call_begin(&v->p, CONC__MOP_V_SET);
    if (!w)
        return conc__mp_call_failed();
    conc__wb_bytes(w, in, conc_mvalue_size(v->p.vtype_cache));
    return conc__mp_call_void(&v->p, v->p.timeout);
}

char conc_mvalue_typecode(const conc_mvalue_t *v) { return v ? v->p.vtype_cache : 0; }

int conc_mvalue_free(conc_mvalue_t *v) { return conc__mp_free((mproxy_t *)v); }

/* ---------------------------------------------------- registered types */

int conc_manager_make(conc_manager_t *m, const char *type_name, const char *name, const void *args,
                      size_t len, conc_mobject_t **out)
{
    if (!m || !out || !type_name || !type_name[0] || strlen(type_name) > 200 || !KEYOK(args, len) ||
        (name && strlen(name) > 4096))
        return CONC_EINVAL;
    if (len > CONC__MGR_MAX_FRAME - 4096)
        return CONC_ERANGE;
    conc__wbuf_t init = {0};
    conc__wb_bytes(&init, type_name, strlen(type_name));
    conc__wb_bytes(&init, args, len);
    int rc = init.oom ? CONC_ENOMEM : conc__mp_make(m, CONC__MK_USER, 0, name, (mproxy_t **)out, init.p, init.len);
    conc__wb_free(&init);
    return rc;
}

int conc_mobject_call(conc_mobject_t *o, const char *method, const void *args, size_t len,
                      void **out, size_t *outlen)
{
    if (!IS(o, CONC__MK_USER) || !method || !KEYOK(args, len) || (out && !outlen))
        return CONC_EINVAL;
    size_t mn = strlen(method);
    if (mn > MAX_ATTR || len > CONC__MGR_MAX_FRAME - MAX_ATTR - 16)
        return CONC_ERANGE;
    if (out) {
        *out = NULL;
        *outlen = 0;
    }
    mproxy_t *p = &o->p;
    conc__wbuf_t *w = conc__mp_call_begin(p, CONC__MOP_U_CALL);
    if (!w)
        return conc__mp_call_failed();
    conc__wb_bytes(w, method, mn);
    conc__wb_bytes(w, args, len);
    conc__rbuf_t rep;
    /* a method may take as long as it likes: no reply timeout (a dead
     * server still ends the wait; kills and Timeout scopes cut it) */
    int rc = conc__mp_call_run(p, CONC_FOREVER, &rep);
    if (!rc) {
        uint8_t has = conc__rb_u8(&rep);
        size_t n = 0;
        const uint8_t *b = has ? conc__rb_bytes(&rep, &n) : NULL;
        if (has > 1 || !conc__rb_done(&rep))
            rc = conc__mp_broken(p);
        else if (has && out)
            rc = copy_out(b, n, out, outlen);
    }
    conc__mp_call_end(p);
    return rc;
}

int conc_mobject_free(conc_mobject_t *o) { return conc__mp_free((mproxy_t *)o); }
