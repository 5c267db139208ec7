/*
 * objects.h — the manager server's objects, shared by server.c (the
 * object store, dict/list/lock/queue requests) and server_more.c
 * (Namespace, Value, registered types, the rest of DictProxy, nested
 * proxies). Private to src/manager.
 *
 * An item (a dict value, a list or queue element) is bytes, or a
 * reference to another object (a nested proxy: `ref` set, `p` NULL). A
 * reference counts in the referent's refs; it is dropped (conc__mgr_unref)
 * only after the container's lock is released (the server lock is never
 * taken under an object's lock).
 */
#ifndef CONC_MANAGER_OBJECTS_H
#define CONC_MANAGER_OBJECTS_H

#include "manager/server.h"

typedef struct conc__mgr_obj obj_t;

typedef struct item {
    uint8_t *p; /* malloc'd, at least one byte; NULL for a reference */
    size_t n;
    obj_t *ref; /* a nested object (holds one of its refs), or NULL */
} item_t;

typedef struct dent {
    struct dent *chain, *prev, *next;
    uint64_t h;
    item_t v;
    size_t klen;
    uint8_t key[];
} dent_t;

struct conc__mgr_obj {
    uint64_t id;
    int kind;
    unsigned long refs;            /* atomic; changed under the server lock, or
                                      raised under a container's lock that holds one */
    struct conc__mgr_obj *id_next, *name_next;
    struct conc__mgr_obj *free_next; /* freeing worklist (server lock) */
    char *name;                    /* NULL: anonymous */
    size_t nlen;
    conc_lock_t mu;
    conc_cond_t cv;
    /* dict, namespace */
    dent_t **b;
    size_t nb, n;
    dent_t *head, *tail;
    /* list, queue (ring from `first`) */
    item_t *v;
    size_t len, cap, first;
    long maxsize;
    /* lock */
    bool held;
    conc__mgr_conn_t *holder;
    /* value */
    char vtype;
    uint8_t vbits[8];
    /* an instance of a registered type */
    const conc_mtype_t *utype;     /* set before the object is visible */
    void *uself;
    bool ubroken;                  /* create has not succeeded (yet) */
    struct owaiter *waiters;       /* blocked requests (o->mu): see obj_notify (server.c) */
    /* Event, Semaphore, Condition, Barrier, Pool (sync.c) */
    struct conc__mgr_sync *sync;
};

/* Kinds beyond internal.h's four (the numbers of conc_mkind_t). */
enum { CONC__MK_NAMESPACE = 16, CONC__MK_VALUE = 17, CONC__MK_USER = 18 };

/* server.c helpers used by server_more.c */
uint64_t conc__mgr_hash(const uint8_t *p, size_t n);
dent_t **conc__mgr_dict_slot(obj_t *o, const uint8_t *k, size_t kn, uint64_t h); /* o->nb > 0 */
/* d[k] = item (taken over: bytes copied from v when ref is NULL). *old
 * gets the referent the replaced value held (drop it after unlocking). */
int conc__mgr_dict_put(obj_t *o, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn,
                       obj_t *ref, obj_t **old);
void conc__mgr_dict_unlink(obj_t *o, dent_t **pp);
/* Lists: room for more items; the item at position i. */
int conc__mgr_vec_reserve(obj_t *o, size_t more);
item_t *conc__mgr_vec_at(obj_t *o, size_t i);
/* Find an object by id and take a reference; NULL when there is none. */
obj_t *conc__mgr_obj_ref(conc__mgr_server_t *s, uint64_t id);
/* Drop one reference (takes the server lock; never call it under an
 * object's lock). NULL is ignored. */
void conc__mgr_unref(conc__mgr_server_t *s, obj_t *o);
/* The reply helpers. */
int conc__mgr_bad(conc__mgr_conn_t *c);

/* server_more.c: requests for the new kinds and ops (0 or CONC_EINVAL,
 * as conc__mgr_dispatch) */
int conc__mgr_do_more(conc__mgr_conn_t *c, obj_t *o, conc__rbuf_t *r, int op);
/* server_list.c: ListProxy's contains, del, slices, sort, *= (ops
 * CONC__MOP_L_CONTAINS..CONC__MOP_L_IMUL on a list; as conc__mgr_dispatch) */
int conc__mgr_do_list_more(conc__mgr_conn_t *c, obj_t *o, conc__rbuf_t *r, int op);
/* BIND_NEW's trailing init bytes (Value, registered types), in three
 * steps: check them before anything is made (0 or a reply code: a bad
 * Value, an unknown type), apply what needs no user code while the new
 * object is not visible yet (server lock: the typecode, the type), then
 * run the type's create under the object's own lock (0 or its code). */
int conc__mgr_init_check(int kind, const uint8_t *init, size_t n);
void conc__mgr_init_pre(obj_t *o, int kind, const uint8_t *init, size_t n);
int conc__mgr_init_run(obj_t *o, const uint8_t *init, size_t n);
/* Whether an existing object named like a new request matches it. */
bool conc__mgr_init_matches(const obj_t *o, const uint8_t *init, size_t n);
/* Free what a Value / registered instance owns. */
void conc__mgr_fini_obj(obj_t *o);
/* BIND_ITEM: the object a container holds at a key or index, with a
 * reference for the caller. 0 or a reply code. */
int conc__mgr_resolve_item(conc__mgr_server_t *s, conc__rbuf_t *r, obj_t **out);

#endif
