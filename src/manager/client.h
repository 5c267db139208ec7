/*
 * client.h — the manager's client side shared by manager.c (connections,
 * calls, the first proxies) and proxy_more.c (Namespace, Value,
 * registered types, more dict methods, nested proxies). Private.
 */
#ifndef CONC_MANAGER_CLIENT_H
#define CONC_MANAGER_CLIENT_H

#include "conc/manager.h"
#include "conc/sync.h"
#include "manager/internal.h"
#include "process/internal.h"

#define ADDR_MAX 160

typedef struct conc__mproxy {
    int fd;
    pid_t pid;           /* the process that connected fd */
    bool broken;
    uint64_t id;         /* bound object (0: the manager's own connection) */
    int kind;
    conc_lock_t mu;
    conc__wbuf_t req;
    uint8_t *in;
    size_t incap;
    double timeout;
    conc__spin_t spin;
    double rcvtimeo;     /* SO_RCVTIMEO now set on fd (0: none yet) */
    conc__mgr_chan_t *chan; /* the shared-memory channel (NULL: the socket carries frames) */
    uint32_t seq;        /* the last request posted on chan */
    bool socket_only;    /* never switch to a channel */
    bool redial;         /* a call was cut short: next call dials anew */
    size_t have;         /* bytes of the reply in `in` (socket transport) */
    char addr[ADDR_MAX];
    uint8_t *key;
    size_t keylen;
    /* what a new connection binds to when p->id is 0: BIND_NEW's trailing
     * init bytes (Value, registered types), or a whole BIND_ITEM request
     * (bind_item: a nested proxy read from a container) */
    const uint8_t *bind_init;
    size_t bind_init_len;
    bool bind_item;
    char vtype_cache;    /* a Value's typecode */
} mproxy_t;

struct conc_manager {
    mproxy_t ctl;
    pid_t owner;             /* the process that started the server, 0 if connected */
    conc__child_t child;
    bool shut;
    char path[ADDR_MAX];     /* the Unix socket we created ("" for TCP) */
};

/* manager.c's call machinery (see there): begin a request (NULL: the wait
 * for the proxy's lock was cut short, return conc__mp_call_failed()), run
 * it (the reply's code; results in *rep; the lock stays held), end it. */
conc__wbuf_t *conc__mp_call_begin(mproxy_t *p, uint8_t op);
int conc__mp_call_failed(void);
int conc__mp_call_run(mproxy_t *p, double wait, conc__rbuf_t *rep);
void conc__mp_call_end(mproxy_t *p);
int conc__mp_call_void(mproxy_t *p, double wait);
int conc__mp_call_bytes(mproxy_t *p, double wait, void **val, size_t *len);
int conc__mp_call_u64(mproxy_t *p, uint64_t *out);
int conc__mp_call_bool(mproxy_t *p, bool *out);
/* A reply that did not parse: the proxy is broken (CONC_EBROKEN). */
int conc__mp_broken(mproxy_t *p);
/* A new proxy of kind bound as p's bind fields say (make_proxy). */
int conc__mp_make(conc_manager_t *m, uint8_t kind, long maxsize, const char *name, mproxy_t **out,
                  const uint8_t *init, size_t ilen);
/* A proxy on the same server as p, bound with a BIND_ITEM request body. */
int conc__mp_make_item(const mproxy_t *p, const uint8_t *req, size_t n, mproxy_t **out);
int conc__mp_free(mproxy_t *p);
/* Decode an items reply (a u64 count, then per item: a key's bytes when
 * keyed, a u8 kind, and the value's bytes when the kind is CONC_MK_BYTES)
 * into one malloc'd block of conc_mitem_t (keys kept when with_keys).
 * The reply is checked whole first: a bad shape breaks p (CONC_EBROKEN). */
int conc__mp_take_items(mproxy_t *p, conc__rbuf_t *rep, bool keyed, bool with_keys,
                        conc_mitem_t **items, size_t *n);

#endif
