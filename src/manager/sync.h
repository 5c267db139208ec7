/*
 * sync.h — the manager's synchronisation objects (Event, Semaphore,
 * BoundedSemaphore, Condition, Barrier) as the server keeps them
 * (src/manager/sync.c; private to src/manager and the fuzz harness).
 *
 * Wire (internal.h's framing): a proxy binds with CONC__MOP_BIND_SYNC
 * (kind u8, param i64, timeout f64, name bytes -> id u64, kind u8), then
 * sends the ops below on that connection. param: a semaphore's initial
 * value, a barrier's parties; timeout: a barrier's default timeout (the
 * others ignore both). A named object keeps the parameters of the call
 * that created it (as a Queue's maxsize).
 */
#ifndef CONC_MANAGER_SYNC_INTERNAL_H
#define CONC_MANAGER_SYNC_INTERNAL_H

#include <stdint.h>

#include "manager/internal.h"

enum {
    CONC__MOP_SYNC_FIRST = 144, /* (the Pool's ops, below, come first) */
    CONC__MOP_BIND_SYNC = 158,  /* kind u8, param i64, timeout f64, name -> id u64, kind u8 */

    CONC__MOP_E_SET = 160,
    CONC__MOP_E_CLEAR,          /* 161 */
    CONC__MOP_E_IS_SET,         /* -> u8 */
    CONC__MOP_E_WAIT,           /* f64 timeout (CONC_ETIMEDOUT: not set) */

    CONC__MOP_S_ACQUIRE = 168,  /* u8 blocking, f64 timeout */
    CONC__MOP_S_RELEASE,        /* i64 n */
    CONC__MOP_S_VALUE,          /* -> i64 */

    CONC__MOP_C_ACQUIRE = 176,  /* u8 blocking, f64 timeout (RLock: re-entrant per connection) */
    CONC__MOP_C_RELEASE,
    CONC__MOP_C_WAIT,           /* f64 timeout */
    CONC__MOP_C_NOTIFY,         /* i64 n */
    CONC__MOP_C_NOTIFY_ALL,

    CONC__MOP_B_WAIT = 184,     /* f64 timeout (-inf: the barrier's default) -> u64 index */
    CONC__MOP_B_RESET,
    CONC__MOP_B_ABORT,
    CONC__MOP_B_BROKEN,         /* -> u8 */
    CONC__MOP_B_N_WAITING,      /* -> u64 */
    CONC__MOP_B_PARTIES,        /* -> u64 */

    /* Pool: fn is a CONC_POOL_REGISTER name in the server's program.
     * A task that failed: CONC_EFAILED, then i32 its code, bytes its message. */
    CONC__MOP_P_APPLY = 144,    /* fn bytes, arg bytes -> bytes */
    CONC__MOP_P_MAP,            /* fn bytes, u64 chunksize, u32 n, n x bytes -> u32 n, n x bytes */
    CONC__MOP_P_APPLY_ASYNC,    /* as P_APPLY -> u64 token */
    CONC__MOP_P_MAP_ASYNC,      /* as P_MAP -> u64 token */
    CONC__MOP_P_GET,            /* u64 token, f64 timeout -> as P_APPLY / P_MAP; CONC_ETIMEDOUT */
    CONC__MOP_P_READY,          /* u64 token -> u8 */
    CONC__MOP_P_FORGET,         /* u64 token */
    CONC__MOP_SYNC_LAST = CONC__MOP_B_PARTIES, /* (192 on: server_more.c's) */
};

enum {
    /* (16..18: Namespace, Value, registered types: objects.h) */
    CONC__MK_EVENT = 32,
    CONC__MK_SEM = 33,
    CONC__MK_BSEM = 34,
    CONC__MK_COND = 35,
    CONC__MK_BARRIER = 36,
    CONC__MK_POOL = 37,         /* param: processes (0: the CPU count) */
};

typedef struct conc__mgr_sync conc__mgr_sync_t;

/* Ops whose success belongs to the connection (the Condition's lock): a
 * call cut short reports the interruption even when the server granted
 * it, since the connection that held it is closed (as for Lock.acquire). */
static inline bool conc__mgr_sync_op_owned(int op)
{
    return op == CONC__MOP_C_ACQUIRE || op == CONC__MOP_C_WAIT;
}

/* Server side (sync.c). */
int conc__mgr_sync_bind(conc__mgr_conn_t *c, conc__rbuf_t *r);
int conc__mgr_sync_dispatch(conc__mgr_conn_t *c, struct conc__mgr_sync *sy, conc__rbuf_t *r, int op);
/* c's connection leaves the object: a Condition lock it holds is released. */
void conc__mgr_sync_leave(struct conc__mgr_sync *sy, conc__mgr_conn_t *c);
/* Shutdown: wake every waiter (they see the stop flag). */
void conc__mgr_sync_wake(struct conc__mgr_sync *sy);
void conc__mgr_sync_free(struct conc__mgr_sync *sy);

/* server.c: find or create the object named name (nlen 0: anonymous) of
 * kind and bind c to it; sy (made by the caller) becomes its state when
 * the object is new, else *used is false and the caller frees sy.
 * Returns 0 with *id, or CONC_EINVAL (name of another kind), CONC_ENOMEM. */
int conc__mgr_bind_sync_obj(conc__mgr_conn_t *c, int kind, const uint8_t *name, size_t nlen,
                            struct conc__mgr_sync *sy, bool *used, uint64_t *id);

#endif
