/*
 * server.h — what the two halves of the manager's server share (private):
 * server.c keeps the objects and executes requests (the dispatcher);
 * listener.c accepts connections, runs the handshakes from one event loop
 * and serves each authenticated connection on its own thread.
 */
#ifndef CONC_MANAGER_SERVER_H
#define CONC_MANAGER_SERVER_H

#include "manager/internal.h"

#define CONC__MGR_NBUCKETS 1024

struct conc__mgr_obj;

struct conc__mgr_conn {
    conc__mgr_server_t *s;
    int fd;
    struct conc__mgr_obj *bound;
    conc__wbuf_t out;
    uint8_t *in;
    size_t inlen, incap;
    conc__spin_t spin;
    conc__mgr_chan_t *chan;        /* the shared-memory channel, once switched */
    size_t chan_hi;                /* most of its data area used since the last trim */
    conc__mgr_conn_t *prev, *next; /* server lock */
};

struct conc__mgr_server {
    conc_lock_t mu;
    struct conc__mgr_obj *ids[CONC__MGR_NBUCKETS], *names[CONC__MGR_NBUCKETS];
    uint64_t next_id;
    uint8_t *key;
    size_t keylen;
    bool noblock;
    int stopping;                  /* atomic */
    int nthreads;                  /* atomic: connection threads alive */
    int wake[2];                   /* a connection asks the main thread to stop */
    conc__mgr_conn_t *conns;       /* authenticated connections (server lock) */
};

/* Start c's reply with code (the reply frame is in c->out). */
void conc__mgr_reply_code(conc__mgr_conn_t *c, int code);
/* Wake every request waiting on an object (shutdown): they see the stop
 * flag at once instead of at the end of their slice. */
void conc__mgr_wake_objects(conc__mgr_server_t *s);

#endif
