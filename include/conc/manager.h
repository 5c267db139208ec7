/*
 * conc/manager.h — multiprocessing's Manager: a server process that holds
 * shared objects (a dict, a list, a Lock, a Queue) which other processes —
 * children, or programs it never met — use through proxies, by address
 * and authentication key.
 *
 *     conc_manager_t *m;
 *     conc_manager_start(&m, NULL);                 // m = Manager(); m.start()
 *     conc_mdict_t *d;
 *     conc_manager_dict(m, "config", &d);           // d = m.dict()
 *     conc_mdict_set(d, "k", 1, "v", 1);            // d[b"k"] = b"v"
 *     ... any process: conc_manager_connect(&m2, address, key, keylen, 5.0)
 *     conc_mdict_free(d);
 *     conc_manager_free(m);                         // m.shutdown()
 *
 * The server. conc_manager_start starts a server process (fork, spawn or
 * forkserver, as for conc/process.h; spawn and forkserver need
 * CONC_PROCESS_MAIN in main) listening on a Unix socket in a private 0700
 * directory (default) or on TCP 127.0.0.1. It serves every connection on
 * its own thread, so a client blocked in acquire or get, or a client that
 * sends garbage, holds up nobody else. It ends on conc_manager_shutdown
 * (from any client), or when the process that started it ends.
 *
 * Authentication. Every connection starts with an HMAC-SHA256 challenge on
 * the authkey in both directions (multiprocessing.connection's
 * deliver_challenge / answer_challenge): the client proves the key to the
 * server before the server does anything for it, then the server proves it
 * to the client. A wrong key gets CONC_EPERM (Python's AuthenticationError)
 * and the connection is closed. The key is never sent.
 *
 * Shared objects are bytes: dict keys and values, list items, queue items
 * are byte strings (a dict value, a list item or a Namespace attribute may
 * also be another shared object: nested proxies, below) of any length (the whole request must fit in
 * CONC_MANAGER_MAX_MESSAGE; larger is CONC_ERANGE). Every object may carry
 * a name: asking for a name that exists returns a proxy of the same object
 * (another client looks it up that way); a name is kept until the server
 * ends. An object without a name lives while some proxy refers to it.
 *
 * Proxies. Each proxy has its own connection to the server (set up when it
 * is made, kept until it is freed), so a call is one request and one reply.
 * Calls on one proxy from several threads are serialised; give each thread
 * its own proxy when they should block independently. A proxy inherited
 * through fork reconnects on its first use in the child (as Python's
 * proxies do after fork).
 *
 * Transport. Over a Unix socket, a connection switches after the handshake
 * to a shared-memory channel the server hands over (a sealed memfd): calls
 * then cost no system call while both sides are running, and the socket
 * stays open to tell each side when the other is gone. TCP connections
 * (and opts.socket_only, or CONC_MANAGER_TRANSPORT=socket in the
 * environment) keep the frames on the socket. Semantics are the same.
 *
 * Errors (Python's exception in brackets):
 *   CONC_EINVAL    NULL argument, bad timeout, bad address; a name that
 *                  exists with another type.
 *   CONC_EPERM     the authkey was refused (AuthenticationError).
 *   CONC_EBROKEN   the server is gone: the connection failed, closed, or a
 *                  reply did not come within the manager's timeout. The
 *                  proxy stays broken; every later call returns it too.
 *   CONC_EKEY      KeyError for dict get/del/pop/popitem.
 *   CONC_EEMPTY    queue.Empty; ValueError "not in list" (list index/remove).
 *   CONC_EATTR     AttributeError: no such Namespace attribute; a method a
 *                  registered type does not expose.
 *   CONC_ERANGE    IndexError for list get/set/pop; too large a message.
 *   CONC_EFULL     queue.Full.
 *   CONC_ETIMEDOUT acquire timed out (Python's False); or a Timeout scope
 *                  (conc/green.h) ran out during any call.
 *   CONC_EKILLED   the calling green thread was killed during the call.
 *                  After either of these two the proxy stays usable: it
 *                  drops its connection and dials a new one at the next
 *                  call; a get or put that took effect as it was cut
 *                  returns 0 (docs/manager.md).
 *   CONC_ESHUTDOWN the server is shutting down.
 *   CONC_ESYS      errno set; EMFILE/ENFILE: this process has no file
 *                  descriptor left for a new connection (the server is
 *                  not to blame, so this is not CONC_EBROKEN).
 *   CONC_ENOMEM.
 *
 * Waiting. A call that blocks on the server (acquire, a get from an empty
 * queue, a put to a full one) waits there for its own timeout; every other
 * call waits at most the manager's timeout for its reply (opts.timeout,
 * default 30 s). A server that dies closes its connections, so no call
 * hangs on a dead server whatever its timeout. Calls park the calling green
 * thread (conc/io.h) rather than its hub. Timeouts follow the server-side
 * object's Python original (conc/base.h): a negative timeout is
 * CONC_EINVAL for Lock.acquire, Queue.get and a put to a bounded Queue
 * (threading.Lock / queue.Queue raise ValueError); a put to an unbounded
 * Queue ignores it; NaN is CONC_EINVAL. conc_manager_connect takes no
 * negative timeout either.
 *
 * Beyond Python: a Lock whose holder's connection closes (its process died
 * or freed the proxy) while still holding it is released by the server.
 *
 * Ownership. conc_manager_t and every proxy are opaque handles: free each
 * once. Freeing the manager that started the server shuts the server down
 * (in the process that started it; in a forked child it only closes). Byte
 * strings returned through void ** / conc_mbytes_t ** are malloc'd and
 * yours: free() them (keys: one free() for the whole array).
 */
#ifndef CONC_MANAGER_H
#define CONC_MANAGER_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conc/base.h"
#include "conc/process.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest request or reply on the wire (16 MiB). */
#define CONC_MANAGER_MAX_MESSAGE (16u << 20)

typedef struct conc_manager conc_manager_t;
typedef struct conc_mdict conc_mdict_t;   /* DictProxy */
typedef struct conc_mlist conc_mlist_t;   /* ListProxy */
typedef struct conc_mlock conc_mlock_t;   /* AcquirerProxy of a Lock */
typedef struct conc_mqueue conc_mqueue_t; /* Queue proxy */

/* A byte string (keys lists). */
typedef struct conc_mbytes {
    void *data;
    size_t len;
} conc_mbytes_t;

/* Options for conc_manager_start; NULL means all defaults. */
typedef struct conc_manager_opts {
    const void *authkey;         /* NULL: this process's authkey (conc_process_authkey:
                                    32 random bytes shared with its children);
                                    a key of length 0 is CONC_EINVAL */
    size_t authkey_len;
    bool tcp;                    /* listen on TCP 127.0.0.1 instead of a Unix socket */
    int port;                    /* with tcp: 0 lets the kernel pick */
    conc_start_method_t method;  /* how the server process starts */
    double timeout;              /* reply timeout of non-blocking calls; 0: 30 s */
    bool socket_only;            /* frames over the Unix socket, no shared-memory channel
                                    (this handle and the proxies made from it; the
                                    environment's CONC_MANAGER_TRANSPORT=socket does it
                                    for every connection of the process) */
    /* Manager(initializer=, initargs=): run initializer(initargs,
     * initargs_len) once in the server process before it serves anybody.
     * It must be registered (CONC_REGISTER: the server may be a new
     * program, as with spawn); a nonzero return ends the server and start
     * returns CONC_EBROKEN; an unregistered function is CONC_EINVAL.
     * initargs (copied; at most 1 MiB) may be NULL with length 0. */
    conc_process_fn initializer;
    const void *initargs;
    size_t initargs_len;
} conc_manager_opts_t;

/* ------------------------------------------------------------- manager */

/* Manager().start(): start a server process and connect to it. Returns 0
 * and the handle in *out, or CONC_EINVAL (NULL out, bad options),
 * CONC_EPERM (spawn/forkserver from an unguarded spawned child), CONC_ESYS,
 * CONC_ENOMEM, CONC_EBROKEN (the server did not come up). Blocks until the
 * server answered the handshake. */
CONC_API int conc_manager_start(conc_manager_t **out, const conc_manager_opts_t *opts);

/* BaseManager(address, authkey).connect(): connect to a running server.
 * authkey NULL with authkey_len 0 is Python's authkey=None: this
 * process's authkey (conc_process_authkey), which a child shares with the
 * parent that started the Manager.
 * address: as conc_manager_address gives it (a Unix socket path, or
 * "127.0.0.1:PORT"). Waits up to timeout (>= 0, or CONC_FOREVER) for the
 * connection and handshake.
 * Returns 0, CONC_EINVAL (also for an empty key: it would prove nothing;
 * and for a negative or NaN timeout), CONC_EPERM (wrong key), CONC_EBROKEN
 * (nobody there, or it closed), CONC_ESYS (errno set: this process is out
 * of file descriptors), CONC_ENOMEM. */
CONC_API int conc_manager_connect(conc_manager_t **out, const char *address, const void *authkey,
                                  size_t authkey_len, double timeout);

/* The server's address (conc-owned, lives as long as m); NULL for NULL. */
CONC_API const char *conc_manager_address(const conc_manager_t *m);

/* The authkey (conc-owned); *len gets its length. NULL for NULL m. */
CONC_API const void *conc_manager_authkey(const conc_manager_t *m, size_t *len);

/* The server's pid when this process started it, else 0; CONC_EINVAL for
 * NULL. */
CONC_API int conc_manager_pid(const conc_manager_t *m);

/* Manager.shutdown(): ask the server to stop (any client may). The server
 * wakes its waiting calls (they get CONC_ESHUTDOWN), closes every
 * connection and exits; the process that started it also waits for it
 * (up to 5 s, then kills it) and removes its socket directory. Returns 0,
 * CONC_EBROKEN (already gone; for the starter the process is still
 * reaped), CONC_EINVAL. Proxies fail with CONC_EBROKEN afterwards. */
CONC_API int conc_manager_shutdown(conc_manager_t *m);

/* Close the handle; in the process that started the server, shut it down
 * first unless that was done. Returns 0 or CONC_EINVAL. */
CONC_API int conc_manager_free(conc_manager_t *m);

/* Make a proxy of a shared object: a new one when name is NULL, else the
 * object named name, created if the server has none by that name (then
 * maxsize applies: <= 0 means unbounded). Opens the proxy's connection.
 * Returns 0, CONC_EINVAL (NULL m/out, name longer than 4096 bytes, name
 * taken by another type), CONC_EBROKEN, CONC_EPERM, CONC_ENOMEM. */
CONC_API int conc_manager_dict(conc_manager_t *m, const char *name, conc_mdict_t **out);
CONC_API int conc_manager_list(conc_manager_t *m, const char *name, conc_mlist_t **out);
CONC_API int conc_manager_lock(conc_manager_t *m, const char *name, conc_mlock_t **out);
CONC_API int conc_manager_queue(conc_manager_t *m, const char *name, long maxsize,
                                conc_mqueue_t **out);

/* ---------------------------------------------------------------- dict */

/* d[key] = val. 0 or an error above. */
CONC_API int conc_mdict_set(conc_mdict_t *d, const void *key, size_t klen, const void *val,
                            size_t vlen);
/* d[key]: *val (malloc'd, free it) and *vlen; CONC_EKEY if absent. */
CONC_API int conc_mdict_get(conc_mdict_t *d, const void *key, size_t klen, void **val,
                            size_t *vlen);
/* del d[key]: CONC_EKEY if absent. */
CONC_API int conc_mdict_del(conc_mdict_t *d, const void *key, size_t klen);
/* d.pop(key): as get, and removes it. */
CONC_API int conc_mdict_pop(conc_mdict_t *d, const void *key, size_t klen, void **val,
                            size_t *vlen);
/* key in d -> *out. */
CONC_API int conc_mdict_contains(conc_mdict_t *d, const void *key, size_t klen, bool *out);
/* len(d) -> *n. */
CONC_API int conc_mdict_len(conc_mdict_t *d, size_t *n);
/* list(d.keys()), in insertion order: *keys is one malloc'd block (an
 * array of *n entries followed by their bytes): free(*keys) once. */
CONC_API int conc_mdict_keys(conc_mdict_t *d, conc_mbytes_t **keys, size_t *n);
/* d.clear(). */
CONC_API int conc_mdict_clear(conc_mdict_t *d);
/* Close the proxy (0 or CONC_EINVAL). */
CONC_API int conc_mdict_free(conc_mdict_t *d);

/* ---------------------------------------------------------------- list */

/* l.append(val). */
CONC_API int conc_mlist_append(conc_mlist_t *l, const void *val, size_t len);
/* l.extend(items): n items in one request. */
CONC_API int conc_mlist_extend(conc_mlist_t *l, const conc_mbytes_t *items, size_t n);
/* l[index] (negative counts from the end): *val malloc'd; CONC_ERANGE. */
CONC_API int conc_mlist_get(conc_mlist_t *l, long index, void **val, size_t *len);
/* l[index] = val; CONC_ERANGE. */
CONC_API int conc_mlist_set(conc_mlist_t *l, long index, const void *val, size_t len);
/* l.pop(index) (-1: the last): CONC_ERANGE when out of range or empty. */
CONC_API int conc_mlist_pop(conc_mlist_t *l, long index, void **val, size_t *len);
/* len(l) -> *n. */
CONC_API int conc_mlist_len(conc_mlist_t *l, size_t *n);
/* l.clear(). */
CONC_API int conc_mlist_clear(conc_mlist_t *l);
/* l.insert(index, val): index clamped to [0, len] as Python does (a
 * negative one counts from the end). 0 or an error above. */
CONC_API int conc_mlist_insert(conc_mlist_t *l, long index, const void *val, size_t len);
/* l.index(val) -> *index (the first equal item: same bytes); l.count(val)
 * -> *count; l.remove(val) removes the first equal item. index and remove
 * return CONC_EEMPTY when no item equals val (Python's ValueError "not in
 * list"; a missing dict key is CONC_EKEY); otherwise 0 or an error
 * above. */
CONC_API int conc_mlist_index(conc_mlist_t *l, const void *val, size_t len, size_t *index);
CONC_API int conc_mlist_count(conc_mlist_t *l, const void *val, size_t len, size_t *count);
CONC_API int conc_mlist_remove(conc_mlist_t *l, const void *val, size_t len);
/* l.reverse(): in place. */
CONC_API int conc_mlist_reverse(conc_mlist_t *l);
CONC_API int conc_mlist_free(conc_mlist_t *l);

/* ---------------------------------------------------------------- lock */

/* Lock.acquire(blocking, timeout), as in conc/sync.h: 0 when acquired,
 * CONC_ETIMEDOUT when not, CONC_EINVAL for a bad combination or a
 * negative timeout (ValueError). Blocks on the server. */
CONC_API int conc_mlock_acquire(conc_mlock_t *l, bool blocking, double timeout);
/* Lock.release(): any process may release; CONC_EPERM when not locked. */
CONC_API int conc_mlock_release(conc_mlock_t *l);
/* Lock.locked() -> *out. */
CONC_API int conc_mlock_locked(conc_mlock_t *l, bool *out);
CONC_API int conc_mlock_free(conc_mlock_t *l);

/* --------------------------------------------------------------- queue */

/* Queue.put(item, block, timeout): CONC_EFULL when a bounded queue stays
 * full (at once when block is false); CONC_EINVAL for a negative timeout
 * on a bounded queue (an unbounded one ignores it). */
CONC_API int conc_mqueue_put(conc_mqueue_t *q, const void *item, size_t len, bool block,
                             double timeout);
/* Queue.get(block, timeout): *item malloc'd; CONC_EEMPTY when nothing
 * came (at once when block is false); CONC_EINVAL for a negative timeout
 * with block. */
CONC_API int conc_mqueue_get(conc_mqueue_t *q, void **item, size_t *len, bool block,
                             double timeout);
/* Queue.qsize() -> *n. */
CONC_API int conc_mqueue_qsize(conc_mqueue_t *q, size_t *n);
/* Queue.empty() / Queue.full() -> *empty / *full (full: bounded and
 * holding maxsize items; never for an unbounded queue). The answer is the
 * server's at the moment it answered. 0 or an error above (CONC_EINVAL
 * for NULL). */
CONC_API int conc_mqueue_empty(conc_mqueue_t *q, bool *empty);
CONC_API int conc_mqueue_full(conc_mqueue_t *q, bool *full);
CONC_API int conc_mqueue_free(conc_mqueue_t *q);

/* ====================================================== more proxies
 *
 * Namespace, Value, the rest of DictProxy, nested proxies, registered
 * types (BaseManager.register) and handing a manager to a child.
 * Errors as above, and CONC_EKEY (KeyError: a dict has no such key),
 * CONC_EATTR (AttributeError: a Namespace has no such attribute; a
 * registered type does not expose that method). docs/manager.md.
 */
typedef struct conc_mns conc_mns_t;         /* NamespaceProxy */
typedef struct conc_mvalue conc_mvalue_t;   /* ValueProxy */
typedef struct conc_mobject conc_mobject_t; /* proxy of a registered type */

/* What a stored value is: bytes, or a reference to a shared object (a
 * nested proxy; the number is the kind of that object). */
typedef enum conc_mkind {
    CONC_MK_BYTES = 0,
    CONC_MK_DICT = 1,
    CONC_MK_LIST = 2,
    CONC_MK_LOCK = 3,
    CONC_MK_QUEUE = 4,
    CONC_MK_NAMESPACE = 16,
    CONC_MK_VALUE = 17,
    CONC_MK_OBJECT = 18 /* an instance of a registered type */
} conc_mkind_t;

/* One entry of a dict snapshot (items, values, copy). value.data is NULL
 * when the value is a nested proxy (kind says of what: read it with
 * conc_mdict_get_proxy). */
typedef struct conc_mitem {
    conc_mbytes_t key;
    conc_mbytes_t value;
    conc_mkind_t kind;
} conc_mitem_t;

/* Close any proxy (dict, list, lock, queue, namespace, value, object;
 * also one from a *_get_proxy). 0 or CONC_EINVAL. */
CONC_API int conc_mproxy_free(void *proxy);

/* --------------------------------------------------------- dict, more */

/* Every call below: 0 or an error above; byte results malloc'd (free()). */

/* d.get(key, default): the value, or a copy of def (dlen bytes; NULL with
 * 0: an empty one) when key is absent. CONC_EINVAL when the value is a
 * nested proxy. */
CONC_API int conc_mdict_get_default(conc_mdict_t *d, const void *key, size_t klen, const void *def,
                                    size_t dlen, void **val, size_t *vlen);
/* d.pop(key, default): as conc_mdict_pop, but absent gives a copy of def. */
CONC_API int conc_mdict_pop_default(conc_mdict_t *d, const void *key, size_t klen, const void *def,
                                    size_t dlen, void **val, size_t *vlen);
/* d.setdefault(key, default): the value; when absent, def is stored first
 * (one atomic step on the server). */
CONC_API int conc_mdict_setdefault(conc_mdict_t *d, const void *key, size_t klen, const void *def,
                                   size_t dlen, void **val, size_t *vlen);
/* d.popitem(): removes and returns the last inserted pair (LIFO, as
 * Python 3.7+); CONC_EKEY when empty. *val is NULL (and *vlen 0) when the
 * value was a nested proxy (its reference is dropped). */
CONC_API int conc_mdict_popitem(conc_mdict_t *d, void **key, size_t *klen, void **val, size_t *vlen);
/* d.update(zip(keys, vals)): n pairs in one atomic request (later pairs
 * win over earlier ones with the same key). */
CONC_API int conc_mdict_update(conc_mdict_t *d, const conc_mbytes_t *keys, const conc_mbytes_t *vals,
                               size_t n);
/* list(d.items()) / d.copy() (Python's copy() returns a plain dict: a
 * snapshot), in insertion order: *items is one malloc'd block, free it
 * once. conc_mdict_values: the same with every key empty (NULL, 0). */
CONC_API int conc_mdict_items(conc_mdict_t *d, conc_mitem_t **items, size_t *n);
CONC_API int conc_mdict_copy(conc_mdict_t *d, conc_mitem_t **items, size_t *n);
CONC_API int conc_mdict_values(conc_mdict_t *d, conc_mitem_t **items, size_t *n);

/* ------------------------------------------------------ nested proxies
 *
 * d[key] = proxy, l.append(proxy), l[i] = proxy, ns.attr = proxy: the
 * container stores a reference to the proxy's shared object (which then
 * lives at least as long as the container holds it), not a copy. Reading
 * it back with *_get_proxy gives a new proxy of that same object (free it
 * with conc_mproxy_free); a change through it is seen by every proxy of
 * the object. proxy: any proxy of the same server (else CONC_EINVAL). A
 * container may hold itself (Python allows b.append(b)); such a cycle is
 * freed when the server ends. *_get_proxy of a value that is bytes, and
 * the byte getters (get, pop, l[i]) of a nested proxy, are CONC_EINVAL
 * (TypeError); *kind (may be NULL) gets the object's kind. */
CONC_API int conc_mdict_set_proxy(conc_mdict_t *d, const void *key, size_t klen, const void *proxy);
CONC_API int conc_mdict_get_proxy(conc_mdict_t *d, const void *key, size_t klen, void **proxy,
                                  conc_mkind_t *kind);
CONC_API int conc_mlist_append_proxy(conc_mlist_t *l, const void *proxy);
CONC_API int conc_mlist_set_proxy(conc_mlist_t *l, long index, const void *proxy);
CONC_API int conc_mlist_get_proxy(conc_mlist_t *l, long index, void **proxy, conc_mkind_t *kind);

/* ----------------------------------------------------------- list, more */

/* A slice bound (start, stop, step) left out, as Python's None. */
#define CONC_MLIST_NONE LONG_MIN

/* val in l: 1 when an item has the same bytes, 0 when none does (a
 * nested proxy equals no bytes), or a negative error code above. */
CONC_API int conc_mlist_contains(conc_mlist_t *l, const void *val, size_t len);
/* del l[index] (negative counts from the end; a nested proxy item is
 * removed too): 0, CONC_ERANGE (IndexError) or an error above. */
CONC_API int conc_mlist_del(conc_mlist_t *l, long index);
/* l[start:stop:step] -> a snapshot as conc_mdict_values' (keys empty;
 * value.data NULL and kind set for a nested proxy): *items is one
 * malloc'd block of *n entries, free(*items) once. Bounds as Python's:
 * CONC_MLIST_NONE for an omitted one, negative ones count from the end,
 * then clamped to the list; step 0 is CONC_EINVAL (ValueError);
 * CONC_ERANGE when the result exceeds a reply. */
CONC_API int conc_mlist_slice(conc_mlist_t *l, long start, long stop, long step,
                              conc_mitem_t **items, size_t *n);
/* del l[start:stop:step]: the same slice rules; one atomic step. */
CONC_API int conc_mlist_del_slice(conc_mlist_t *l, long start, long stop, long step);
/* l.sort(reverse=reverse): stable (equal items keep their order, also
 * reversed). Items compare as bytes: memcmp over the shorter length, then
 * the shorter item first (b"ab" < b"abc" < b"b"). CONC_EINVAL (TypeError)
 * when the list holds a nested proxy and two or more items. */
CONC_API int conc_mlist_sort(conc_mlist_t *l, bool reverse);
/* l *= n: the items repeated n times (nested proxies repeat as
 * references); n <= 0 clears, as Python. CONC_ENOMEM (MemoryError) when
 * the result would pass 2^20 items or 64 MiB of item bytes (a limit
 * of the server: one small request must not allocate without bound;
 * nothing changes). l += items is conc_mlist_extend; l + items is a slice of all
 * plus the local items. */
CONC_API int conc_mlist_imul(conc_mlist_t *l, long n);

/* ----------------------------------------------------------- Namespace */

/* m.Namespace(): a shared object whose attributes are set and read by
 * name. Names are C strings of 1..4096 bytes; a name starting with '_'
 * is CONC_EINVAL (Python keeps those on the proxy, unshared). name: as
 * for conc_manager_dict. */
CONC_API int conc_manager_namespace(conc_manager_t *m, const char *name, conc_mns_t **out);
/* ns.attr = val. */
CONC_API int conc_mns_set(conc_mns_t *ns, const char *attr, const void *val, size_t len);
/* ns.attr: *val malloc'd; CONC_EATTR when there is no such attribute. */
CONC_API int conc_mns_get(conc_mns_t *ns, const char *attr, void **val, size_t *len);
/* del ns.attr: CONC_EATTR when absent. */
CONC_API int conc_mns_del(conc_mns_t *ns, const char *attr);
/* hasattr(ns, attr) -> *out. */
CONC_API int conc_mns_has(conc_mns_t *ns, const char *attr, bool *out);
/* The attribute names in the order they were first set (what
 * Namespace's repr lists): one block as conc_mdict_keys. */
CONC_API int conc_mns_names(conc_mns_t *ns, conc_mbytes_t **names, size_t *n);
/* ns.attr = proxy / ns.attr read back as a proxy (nested proxies above). */
CONC_API int conc_mns_set_proxy(conc_mns_t *ns, const char *attr, const void *proxy);
CONC_API int conc_mns_get_proxy(conc_mns_t *ns, const char *attr, void **proxy, conc_mkind_t *kind);
CONC_API int conc_mns_free(conc_mns_t *ns);

/* --------------------------------------------------------------- Value */

/* m.Value(typecode, value): one typed C value on the server. typecode is
 * one of array's: 'b' 'B' 'h' 'H' 'i' 'I' 'l' 'L' 'q' 'Q' 'f' 'd' 'c'
 * ('c': one char) or '?' (bool; stored as 0 or 1); init points to a value
 * of that C type (NULL: zero). A name that exists with another kind or
 * typecode is CONC_EINVAL (and the existing value is kept, as for the
 * other kinds). Other typecodes: CONC_EINVAL. */
CONC_API int conc_manager_value(conc_manager_t *m, const char *name, char typecode, const void *init,
                                conc_mvalue_t **out);
/* v.value -> *out (the typecode's C type: sizeof that type is written). */
CONC_API int conc_mvalue_get(conc_mvalue_t *v, void *out);
/* v.value = *in. '?' stores in != 0. */
CONC_API int conc_mvalue_set(conc_mvalue_t *v, const void *in);
/* The typecode (0 for NULL, and for a Value read back from a container
 * until its first get or set). Never blocks. */
CONC_API char conc_mvalue_typecode(const conc_mvalue_t *v);
/* The size of typecode's C type, 0 when it is not one of the above. */
CONC_API size_t conc_mvalue_size(char typecode);
CONC_API int conc_mvalue_free(conc_mvalue_t *v);

/* ---------------------------------------------------- registered types
 *
 * BaseManager.register(typeid, callable, exposed): a type whose instances
 * live in the server and whose methods run there. At file scope:
 *
 *     static int counter_new(const void *args, size_t len, void **self);
 *     static void counter_free(void *self);
 *     static int counter_incr(void *self, const void *args, size_t len,
 *                             void **out, size_t *outlen);
 *     static const conc_mmethod_t counter_methods[] = {
 *         {"incr", counter_incr}, {NULL, NULL}};
 *     CONC_MANAGER_REGISTER("Counter", counter_new, counter_free, counter_methods);
 *
 * The type's name (Python's typeid; a C++ keyword, hence type_name) is
 * a string literal (1..200 bytes); the registration is made at
 * load time in every copy of the program, so the server finds the type
 * whatever the start method. create gets the constructor's argument bytes
 * and sets *self (0 or a CONC_E* code, which conc_manager_make returns).
 * A method gets the call's argument bytes and may set *out to a malloc'd
 * result (the server frees it) of *outlen bytes (leave *out NULL for
 * none); it returns 0 or a CONC_E* code (another value becomes
 * CONC_EFAILED), which the caller gets. destroy (may be NULL) runs when
 * the last proxy (and name) is gone. Methods of one instance run one at a
 * time; they run in the server's connection threads, so a method that
 * blocks holds up callers of that instance only. The methods listed are
 * the exposed ones: any other name is CONC_EATTR.
 */
typedef int (*conc_mtype_new_fn)(const void *args, size_t len, void **self);
typedef void (*conc_mtype_free_fn)(void *self);
typedef int (*conc_mmethod_fn)(void *self, const void *args, size_t len, void **out, size_t *outlen);
typedef struct conc_mmethod {
    const char *name;
    conc_mmethod_fn fn;
} conc_mmethod_t;
typedef struct conc_mtype {
    const char *type_name;         /* Python's typeid */
    conc_mtype_new_fn create;
    conc_mtype_free_fn destroy;
    const conc_mmethod_t *methods; /* ends with {NULL, NULL} */
} conc_mtype_t;

#define CONC__SIG_MTYPE 90 /* registry tag of a manager type */
#define CONC_MANAGER_REGISTER(type_name, create, destroy, methods) \
    CONC__MREG1(type_name, create, destroy, methods, __COUNTER__)
#define CONC__MREG1(t, c, d, m, n) CONC__MREG2(t, c, d, m, n)
#define CONC__MREG2(t, c, d, m, n)                                                       \
    static const conc_mtype_t conc__mtype_##n = {t, c, d, m};                            \
    static const conc_mtype_t *conc__mtype_get_##n(void) { return &conc__mtype_##n; }    \
    static conc_registration_t conc__mtreg_##n = {                                       \
        "conc.mtype." t, (void (*)(void))conc__mtype_get_##n, CONC__SIG_MTYPE, 0};       \
    __attribute__((constructor)) static void conc__mtreg_ctor_##n(void)                  \
    {                                                                                    \
        conc_register(&conc__mtreg_##n);                                                 \
    }                                                                                    \
    struct conc__mtreg_semicolon_##n

/* m.<typeid>(*args): a new instance (name NULL), or the instance named
 * name (made with args the first time). CONC_EKEY when the server has no
 * type type_name; CONC_EINVAL for a name held by another kind or type; the
 * create function's own code. args: len bytes (NULL with 0). */
CONC_API int conc_manager_make(conc_manager_t *m, const char *type_name, const char *name,
                               const void *args, size_t len, conc_mobject_t **out);
/* proxy._callmethod(method, args): run method on the server. *out (may be
 * NULL: the result is dropped) gets the method's malloc'd result, or NULL
 * with *outlen 0 when it gave none. Returns the method's code, CONC_EATTR
 * for a method that is not exposed, or an error above. Waits for the
 * method however long it takes (a dead server ends the wait at once);
 * kill and Timeout scopes cut the wait short (the method runs on). */
CONC_API int conc_mobject_call(conc_mobject_t *o, const char *method, const void *args, size_t len,
                               void **out, size_t *outlen);
CONC_API int conc_mobject_free(conc_mobject_t *o);

/* -------------------------------------------------- a manager for a child
 *
 * A child connecting by address uses its own Process.authkey, which is its
 * parent's: enough for a Manager started with the default key. For a key
 * of its own, hand the child a reference (Python sends a proxy's authkey
 * along while it spawns a child): conc_manager_ref gives the address and
 * the key as bytes (malloc'd, free() them; they hold the key: give them
 * only to whom you would give the key), to pass as the child's Process
 * argument; the child's conc_manager_attach connects with them (within
 * timeout). A wrong key is CONC_EPERM; bytes that are not a reference,
 * CONC_EINVAL. */
CONC_API int conc_manager_ref(const conc_manager_t *m, void **ref, size_t *len);
CONC_API int conc_manager_attach(conc_manager_t **out, const void *ref, size_t len, double timeout);

#ifdef __cplusplus
}
#endif
#endif /* CONC_MANAGER_H */
