/*
 * server_more.c — the manager server's newer objects and requests:
 * Namespace (a dict of attributes: the dict requests, KeyError turned
 * into AttributeError by the dispatcher), Value (one typed C value),
 * instances of registered types (conc_mtype_t: create / destroy / exposed
 * methods found through the registry, so a spawned server finds them),
 * DictProxy's setdefault / popitem / update / items, and nested proxies
 * (a container item that is a reference to another object).
 *
 * References. An item may hold a reference to another object instead of
 * bytes (storing a proxy in a container, as Python's nested proxies do):
 * it counts in the referent's refs, so the referent lives while the item
 * does. A reference is taken (conc__mgr_obj_ref, server lock) before the
 * container's lock and dropped (conc__mgr_unref) after it is released:
 * the server lock is never taken under an object's lock. Reading a nested
 * item back is BIND_ITEM on a new connection: under the container's lock
 * the referent's refs is raised (safe without the server lock: the item
 * holds one, and it cannot go while we hold the container's lock), so
 * the referent cannot vanish between the read and the bind.
 *
 * Everything here parses untrusted bytes: each request is read through
 * the bounded cursor (internal.h) and must parse exactly before anything
 * changes; sizes of replies are checked against the frame limit.
 */
#include <stdlib.h>
#include <string.h>

#include "conc/process.h"
#include "manager/objects.h"

#define MAX_TYPEID 200
#define MAX_METHOD 4096

size_t conc_mvalue_size(char typecode)
{
    switch (typecode) {
    case 'b': case 'B': case 'c': case '?':
        return 1;
    case 'h': case 'H':
        return 2;
    case 'i': case 'I': case 'f':
        return 4;
    case 'l': case 'L':
        return sizeof(long);
    case 'q': case 'Q': case 'd':
        return 8;
    default:
        return 0;
    }
}

/* The registered type named tname (n bytes), or NULL. */
static const conc_mtype_t *find_type(const uint8_t *tname, size_t n)
{
    char name[sizeof "conc.mtype." + MAX_TYPEID];
    if (n == 0 || n > MAX_TYPEID || memchr(tname, 0, n))
        return NULL;
    memcpy(name, "conc.mtype.", sizeof "conc.mtype." - 1);
    memcpy(name + sizeof "conc.mtype." - 1, tname, n);
    name[sizeof "conc.mtype." - 1 + n] = 0;
    const conc_registration_t *r = conc_registry_find(name);
    if (!r || r->sig != CONC__SIG_MTYPE || !r->fn)
        return NULL;
    const conc_mtype_t *t = ((const conc_mtype_t *(*)(void))r->fn)();
    return t && t->create && t->methods ? t : NULL;
}

/* A code a user function returned, as one a reply may carry. */
static int user_code(int rc)
{
    return rc > 0 || rc < CONC__MGR_MIN_CODE ? CONC_EFAILED : rc;
}

int conc__mgr_init_check(int kind, const uint8_t *init, size_t n)
{
    if (kind == CONC__MK_VALUE)
        return init && n >= 1 && conc_mvalue_size((char)init[0]) == n - 1 ? 0 : CONC_EINVAL;
    if (kind == CONC__MK_USER) {
        if (!init) /* no init bytes at all (never init + 0 on NULL) */
            return CONC_EINVAL;
        conc__rbuf_t r = {init, init + n, false};
        size_t tn, an;
        const uint8_t *tid = conc__rb_bytes(&r, &tn);
        conc__rb_bytes(&r, &an);
        if (!conc__rb_done(&r))
            return CONC_EINVAL;
        return find_type(tid, tn) ? 0 : CONC_EKEY;
    }
    return init ? CONC_EINVAL : 0;
}

void conc__mgr_init_pre(obj_t *o, int kind, const uint8_t *init, size_t n)
{
    if (kind == CONC__MK_VALUE) {
        o->vtype = (char)init[0];
        memcpy(o->vbits, init + 1, n - 1);
        if (o->vtype == '?')
            o->vbits[0] = o->vbits[0] != 0;
    } else if (kind == CONC__MK_USER) {
        conc__rbuf_t r = {init, init + n, false};
        size_t tn;
        const uint8_t *tid = conc__rb_bytes(&r, &tn);
        o->utype = find_type(tid, tn);
        o->ubroken = true; /* until create succeeded */
    }
}

int conc__mgr_init_run(obj_t *o, const uint8_t *init, size_t n)
{
    if (o->kind != CONC__MK_USER)
        return 0;
    conc__rbuf_t r = {init, init + n, false};
    size_t tn, an;
    conc__rb_bytes(&r, &tn);
    const uint8_t *args = conc__rb_bytes(&r, &an);
    void *self = NULL;
    int rc = o->utype->create(an ? args : NULL, an, &self);
    if (rc)
        return user_code(rc);
    o->uself = self;
    o->ubroken = false;
    return 0;
}

bool conc__mgr_init_matches(const obj_t *o, const uint8_t *init, size_t n)
{
    if (o->kind == CONC__MK_VALUE)
        return init && n >= 1 && (char)init[0] == o->vtype;
    if (o->kind == CONC__MK_USER) { /* checked already: init is there and parses */
        if (!init)
            return false;
        conc__rbuf_t r = {init, init + n, false};
        size_t tn;
        const uint8_t *tid = conc__rb_bytes(&r, &tn);
        return o->utype && strlen(o->utype->type_name) == tn && memcmp(o->utype->type_name, tid, tn) == 0;
    }
    return init == NULL;
}

void conc__mgr_fini_obj(obj_t *o)
{
    if (o->utype && !o->ubroken && o->utype->destroy)
        o->utype->destroy(o->uself);
    o->utype = NULL;
    o->uself = NULL;
}

static bool is_dict(const obj_t *o) { return o->kind == CONC__MK_DICT || o->kind == CONC__MK_NAMESPACE; }

/* Python index -> position in o's list; false when out of range. */
static bool list_pos(const obj_t *o, int64_t idx, size_t *pos)
{
    if (idx < 0) {
        if ((uint64_t)-(idx + 1) >= o->len)
            return false;
        *pos = o->len - (size_t)-(idx + 1) - 1;
        return true;
    }
    if ((uint64_t)idx >= o->len)
        return false;
    *pos = (size_t)idx;
    return true;
}

int conc__mgr_resolve_item(conc__mgr_server_t *s, conc__rbuf_t *r, obj_t **out)
{
    uint64_t id = conc__rb_u64(r);
    uint8_t sel = conc__rb_u8(r);
    size_t kn = 0;
    const uint8_t *k = NULL;
    int64_t idx = 0;
    if (sel == 0)
        k = conc__rb_bytes(r, &kn);
    else
        idx = (int64_t)conc__rb_u64(r);
    if (!conc__rb_done(r) || sel > 1) {
        r->bad = true;
        return CONC_EINVAL;
    }
    obj_t *c = conc__mgr_obj_ref(s, id);
    if (!c)
        return CONC_EINVAL;
    int rc = CONC_EINVAL;
    obj_t *found = NULL;
    conc_lock_acquire(&c->mu, true, CONC_FOREVER);
    if (sel == 0 && is_dict(c)) {
        dent_t *e = c->nb ? *conc__mgr_dict_slot(c, k, kn, conc__mgr_hash(k, kn)) : NULL;
        if (!e)
            rc = c->kind == CONC__MK_NAMESPACE ? CONC_EATTR : CONC_EKEY;
        else
            found = e->v.ref;
    } else if (sel == 1 && c->kind == CONC__MK_LIST) {
        size_t pos;
        if (!list_pos(c, idx, &pos))
            rc = CONC_ERANGE;
        else
            found = conc__mgr_vec_at(c, pos)->ref;
    }
    if (found) { /* the item holds a reference and cannot go while we hold c->mu */
        __atomic_add_fetch(&found->refs, 1, __ATOMIC_RELAXED);
        *out = found;
        rc = 0;
    }
    conc_lock_release(&c->mu);
    conc__mgr_unref(s, c);
    return rc;
}

/* A value in a reply: u8 kind, then the bytes for plain bytes. */
static void put_nested(conc__wbuf_t *w, const item_t *it)
{
    conc__wb_u8(w, it->ref ? (uint8_t)it->ref->kind : 0);
    if (!it->ref)
        conc__wb_bytes(w, it->p, it->n);
}

static int do_dict_more(conc__mgr_conn_t *c, obj_t *o, conc__rbuf_t *r, int op)
{
    conc__wbuf_t *w = &c->out;
    size_t kn = 0, vn = 0;
    const uint8_t *k = NULL, *v = NULL;
    uint64_t id = 0;
    uint32_t count = 0;
    const uint8_t *pairs = NULL;
    if (op == CONC__MOP_D_SETDEFAULT || op == CONC__MOP_D_SET_REF)
        k = conc__rb_bytes(r, &kn);
    if (op == CONC__MOP_D_SETDEFAULT)
        v = conc__rb_bytes(r, &vn);
    if (op == CONC__MOP_D_SET_REF)
        id = conc__rb_u64(r);
    if (op == CONC__MOP_D_UPDATE) { /* every pair checked before anything changes */
        count = conc__rb_u32(r);
        pairs = r->p;
        for (uint32_t i = 0; i < count && !r->bad; i++) {
            conc__rb_bytes(r, &kn);
            conc__rb_bytes(r, &vn);
        }
    }
    if (!conc__rb_done(r))
        return conc__mgr_bad(c);
    if (op != CONC__MOP_D_SET_REF && o->kind != CONC__MK_DICT)
        return conc__mgr_bad(c);
    obj_t *ref = NULL, *drop = NULL, **drops = NULL;
    if (op == CONC__MOP_D_SET_REF && !(ref = conc__mgr_obj_ref(c->s, id))) {
        conc__mgr_reply_code(c, CONC_EINVAL);
        return 0;
    }
    if (op == CONC__MOP_D_UPDATE && count && !(drops = calloc(count, sizeof *drops))) {
        conc__mgr_reply_code(c, CONC_ENOMEM);
        return 0;
    }
    int rc = 0;
    conc_lock_acquire(&o->mu, true, CONC_FOREVER);
    switch (op) {
    case CONC__MOP_D_SETDEFAULT: {
        dent_t *e = o->nb ? *conc__mgr_dict_slot(o, k, kn, conc__mgr_hash(k, kn)) : NULL;
        if (e && e->v.ref) {
            conc__mgr_reply_code(c, CONC_EINVAL);
            break;
        }
        if (!e && (rc = conc__mgr_dict_put(o, k, kn, v, vn, NULL, &drop)) != 0) {
            conc__mgr_reply_code(c, rc);
            break;
        }
        conc__mgr_reply_code(c, 0);
        if (e)
            conc__wb_bytes(w, e->v.p, e->v.n);
        else
            conc__wb_bytes(w, v, vn);
        break;
    }
    case CONC__MOP_D_POPITEM: {
        dent_t *e = o->tail;
        if (!e) {
            conc__mgr_reply_code(c, CONC_EKEY); /* popitem(): dictionary is empty */
            break;
        }
        conc__mgr_reply_code(c, 0);
        conc__wb_bytes(w, e->key, e->klen);
        put_nested(w, &e->v);
        conc__mgr_dict_unlink(o, conc__mgr_dict_slot(o, e->key, e->klen, e->h));
        drop = e->v.ref;
        free(e->v.p);
        free(e);
        break;
    }
    case CONC__MOP_D_UPDATE: {
        conc__rbuf_t rr = {pairs, r->end, false};
        for (uint32_t i = 0; i < count && !rc; i++) {
            k = conc__rb_bytes(&rr, &kn);
            v = conc__rb_bytes(&rr, &vn);
            rc = conc__mgr_dict_put(o, k, kn, v, vn, NULL, &drops[i]);
        }
        conc__mgr_reply_code(c, rc); /* out of memory part way: the pairs before it are in */
        break;
    }
    case CONC__MOP_D_ITEMS:
        conc__mgr_reply_code(c, 0);
        conc__wb_u64(w, o->n);
        for (dent_t *e = o->head; e && !w->oom && w->len <= CONC__MGR_MAX_FRAME; e = e->next) {
            conc__wb_bytes(w, e->key, e->klen);
            put_nested(w, &e->v);
        }
        if (w->len > 4 + CONC__MGR_MAX_FRAME)
            conc__mgr_reply_code(c, CONC_ERANGE);
        break;
    case CONC__MOP_D_SET_REF:
        rc = conc__mgr_dict_put(o, k, kn, NULL, 0, ref, &drop);
        if (!rc)
            ref = NULL; /* the item holds it now */
        conc__mgr_reply_code(c, rc);
        break;
    }
    conc_lock_release(&o->mu);
    conc__mgr_unref(c->s, ref);
    conc__mgr_unref(c->s, drop);
    for (uint32_t i = 0; drops && i < count; i++)
        conc__mgr_unref(c->s, drops[i]);
    free(drops);
    return 0;
}

static int do_list_more(conc__mgr_conn_t *c, obj_t *o, conc__rbuf_t *r, int op)
{
    int64_t idx = 0;
    if (op == CONC__MOP_L_SET_REF)
        idx = (int64_t)conc__rb_u64(r);
    uint64_t id = conc__rb_u64(r);
    if (!conc__rb_done(r))
        return conc__mgr_bad(c);
    obj_t *ref = conc__mgr_obj_ref(c->s, id), *drop = NULL;
    if (!ref) {
        conc__mgr_reply_code(c, CONC_EINVAL);
        return 0;
    }
    int rc = 0;
    size_t pos;
    conc_lock_acquire(&o->mu, true, CONC_FOREVER);
    if (op == CONC__MOP_L_APPEND_REF) {
        if (!(rc = conc__mgr_vec_reserve(o, 1))) {
            *conc__mgr_vec_at(o, o->len) = (item_t){NULL, 0, ref};
            o->len++;
            ref = NULL;
        }
    } else if (!list_pos(o, idx, &pos)) {
        rc = CONC_ERANGE;
    } else {
        item_t *it = conc__mgr_vec_at(o, pos);
        free(it->p);
        drop = it->ref;
        *it = (item_t){NULL, 0, ref};
        ref = NULL;
    }
    conc__mgr_reply_code(c, rc);
    conc_lock_release(&o->mu);
    conc__mgr_unref(c->s, ref);
    conc__mgr_unref(c->s, drop);
    return 0;
}

static int do_value(conc__mgr_conn_t *c, obj_t *o, conc__rbuf_t *r, int op)
{
    size_t n = 0;
    const uint8_t *v = NULL;
    if (op == CONC__MOP_V_SET)
        v = conc__rb_bytes(r, &n);
    if (!conc__rb_done(r))
        return conc__mgr_bad(c);
    conc_lock_acquire(&o->mu, true, CONC_FOREVER);
    size_t size = conc_mvalue_size(o->vtype);
    if (op == CONC__MOP_V_GET) {
        conc__mgr_reply_code(c, 0);
        conc__wb_u8(&c->out, (uint8_t)o->vtype);
        conc__wb_bytes(&c->out, o->vbits, size);
    } else if (n != size) {
        conc__mgr_reply_code(c, CONC_EINVAL);
    } else {
        memcpy(o->vbits, v, n);
        if (o->vtype == '?')
            o->vbits[0] = o->vbits[0] != 0;
        conc__mgr_reply_code(c, 0);
    }
    conc_lock_release(&o->mu);
    return 0;
}

static int do_call(conc__mgr_conn_t *c, obj_t *o, conc__rbuf_t *r)
{
    size_t mn, an;
    const uint8_t *m = conc__rb_bytes(r, &mn);
    const uint8_t *args = conc__rb_bytes(r, &an);
    if (!conc__rb_done(r))
        return conc__mgr_bad(c);
    conc_lock_acquire(&o->mu, true, CONC_FOREVER);
    const conc_mtype_t *t = o->utype;
    conc_mmethod_fn fn = NULL;
    for (const conc_mmethod_t *x = t ? t->methods : NULL; x && x->name && mn <= MAX_METHOD; x++)
        if (strlen(x->name) == mn && memcmp(x->name, m, mn) == 0) {
            fn = x->fn;
            break;
        }
    if (!t || o->ubroken) {
        conc__mgr_reply_code(c, CONC_EINVAL);
    } else if (!fn) {
        conc__mgr_reply_code(c, CONC_EATTR); /* not in exposed */
    } else {
        void *out = NULL;
        size_t outlen = 0;
        int rc = user_code(fn(o->uself, an ? args : NULL, an, &out, &outlen));
        if (!rc && out && outlen > CONC__MGR_MAX_FRAME - 16)
            rc = CONC_ERANGE;
        conc__mgr_reply_code(c, rc);
        if (!rc) {
            conc__wb_u8(&c->out, out != NULL);
            if (out)
                conc__wb_bytes(&c->out, out, outlen);
        }
        free(out);
    }
    conc_lock_release(&o->mu);
    return 0;
}

int conc__mgr_do_more(conc__mgr_conn_t *c, obj_t *o, conc__rbuf_t *r, int op)
{
    if (op >= CONC__MOP_D_SETDEFAULT && op <= CONC__MOP_D_SET_REF && is_dict(o))
        return do_dict_more(c, o, r, op);
    if ((op == CONC__MOP_L_APPEND_REF || op == CONC__MOP_L_SET_REF) && o->kind == CONC__MK_LIST)
        return do_list_more(c, o, r, op);
    if (op >= CONC__MOP_L_CONTAINS && op <= CONC__MOP_L_IMUL && o->kind == CONC__MK_LIST)
        return conc__mgr_do_list_more(c, o, r, op);
    if ((op == CONC__MOP_V_GET || op == CONC__MOP_V_SET) && o->kind == CONC__MK_VALUE)
        return do_value(c, o, r, op);
    if (op == CONC__MOP_U_CALL && o->kind == CONC__MK_USER)
        return do_call(c, o, r);
    return conc__mgr_bad(c);
}
