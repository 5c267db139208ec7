/*
 * internal.h — the manager's wire format, object store and server
 * (private to src/manager and the fuzz harness).
 *
 * Frames. Every message, in both directions, is a frame: a 32-bit
 * little-endian body length, then the body. A body longer than
 * CONC__MGR_MAX_FRAME (or, during the handshake, CONC__MGR_HS_MAX) is a
 * protocol error: the reader closes the connection without reading it.
 *
 * Handshake (multiprocessing.connection's deliver/answer_challenge, both
 * ways): server -> 'S' + 32 random bytes; client -> HMAC-SHA256(key, that);
 * server -> "W" (welcome) or "F" (failure, then close); then client ->
 * 'C' + 32 random bytes; server -> HMAC; client checks it. A side only
 * answers a challenge tagged with the other side's role letter, so a
 * challenge cannot be reflected back to the peer that made it. The server
 * does nothing else for a connection until the client proved the key.
 *
 * Requests: op (u8) then the op's arguments; integers are little-endian,
 * byte strings are a u32 length and the bytes, timeouts an IEEE double.
 * Replies: code (i32, 0 or a CONC_E* code) then, on success, the op's
 * results. A request that does not parse exactly (short, trailing bytes,
 * unknown op, an op for another kind of object) gets the reply CONC_EINVAL
 * and the server closes that connection.
 *
 * A connection is bound to at most one object (BIND_NEW / BIND_ID); every
 * proxy has its own connection, so a blocking acquire or get on one proxy
 * never holds up another.
 */
#ifndef CONC_MANAGER_INTERNAL_H
#define CONC_MANAGER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "conc/manager.h"
#include "conc/sync.h"

#define CONC__MGR_MAX_FRAME (16u << 20) /* largest body, either way */
#define CONC__MGR_HS_MAX 64u            /* largest body during the handshake */
#define CONC__MGR_NONCE 32u
#define CONC__MGR_HS_TIMEOUT 5.0        /* seconds for the whole handshake */
/* Adaptive spinning before a reader sleeps: a peer in a loop of calls
 * answers within microseconds when it has a core of its own, and catching
 * the frame awake saves the two wake-ups of a round trip. The budget (ns)
 * doubles when a spin caught data and halves when it did not (to 0 on a
 * busy machine, where spinning only steals the peer's core); at 0 a short
 * spin is tried every 32nd read to see whether it pays again.
 * conc__mgr_spin_ns caps it (env CONC_MANAGER_SPIN_NS; 0 turns it off). */
extern long conc__mgr_spin_ns;
extern int conc__mgr_spin_yield;
typedef struct conc__spin {
    long budget;
    unsigned probe;
} conc__spin_t;
/* recv(MSG_DONTWAIT) in a loop for up to the budget: bytes, 0 at EOF, or
 * -1 with errno (EAGAIN when nothing came: sleep in a real wait now). */
ssize_t conc__mgr_recv_spin(int fd, void *buf, size_t n, conc__spin_t *sp);

enum {
    CONC__MOP_PING = 1,
    CONC__MOP_SHUTDOWN = 2,
    CONC__MOP_BIND_NEW = 3,  /* kind u8, maxsize i64, name bytes (empty: anonymous) -> id u64 */
    CONC__MOP_BIND_ID = 4,   /* id u64 -> kind u8 */

    CONC__MOP_D_SET = 16,    /* key, value */
    CONC__MOP_D_GET,         /* key -> value */
    CONC__MOP_D_DEL,         /* key */
    CONC__MOP_D_POP,         /* key -> value */
    CONC__MOP_D_HAS,         /* key -> u8 */
    CONC__MOP_D_LEN,         /* -> u64 */
    CONC__MOP_D_KEYS,        /* -> u64 n, n x bytes */
    CONC__MOP_D_CLEAR,

    CONC__MOP_L_APPEND = 32, /* value */
    CONC__MOP_L_EXTEND,      /* u32 n, n x bytes */
    CONC__MOP_L_GET,         /* i64 index -> value */
    CONC__MOP_L_SET,         /* i64 index, value */
    CONC__MOP_L_POP,         /* i64 index -> value */
    CONC__MOP_L_LEN,         /* -> u64 */
    CONC__MOP_L_CLEAR,

    CONC__MOP_K_ACQUIRE = 48, /* u8 blocking, f64 timeout */
    CONC__MOP_K_RELEASE,
    CONC__MOP_K_LOCKED,       /* -> u8 */

    CONC__MOP_Q_PUT = 64,     /* u8 block, f64 timeout, value */
    CONC__MOP_Q_GET,          /* u8 block, f64 timeout -> value */
    CONC__MOP_Q_SIZE,         /* -> u64 */
};

enum { CONC__MK_DICT = 1, CONC__MK_LIST = 2, CONC__MK_LOCK = 3, CONC__MK_QUEUE = 4 };

/* ------------------------------------------------------------ encoding */

typedef struct conc__wbuf {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} conc__wbuf_t;

void conc__wb_reset(conc__wbuf_t *w);      /* len = 0 (keeps the storage) */
void conc__wb_free(conc__wbuf_t *w);
void conc__wb_put(conc__wbuf_t *w, const void *p, size_t n);
void conc__wb_u8(conc__wbuf_t *w, uint8_t v);
void conc__wb_u32(conc__wbuf_t *w, uint32_t v);
void conc__wb_u64(conc__wbuf_t *w, uint64_t v);
void conc__wb_f64(conc__wbuf_t *w, double v);
void conc__wb_bytes(conc__wbuf_t *w, const void *p, size_t n); /* u32 len + bytes */
/* Start a frame: reserve the length word (call conc__wb_end_frame after). */
void conc__wb_begin_frame(conc__wbuf_t *w);
void conc__wb_end_frame(conc__wbuf_t *w);

typedef struct conc__rbuf {
    const uint8_t *p, *end;
    bool bad;
} conc__rbuf_t;

uint8_t conc__rb_u8(conc__rbuf_t *r);
uint32_t conc__rb_u32(conc__rbuf_t *r);
uint64_t conc__rb_u64(conc__rbuf_t *r);
double conc__rb_f64(conc__rbuf_t *r);
/* A u32-prefixed byte string: points into the buffer (no copy). */
const uint8_t *conc__rb_bytes(conc__rbuf_t *r, size_t *n);
static inline bool conc__rb_done(const conc__rbuf_t *r) { return !r->bad && r->p == r->end; }

/* Look for one frame at the start of buf[0..n): returns 1 and sets
 * *body and *blen when a whole frame is there (*used = its total size), 0 when
 * more bytes are needed, CONC_ERANGE when the announced length exceeds max. */
int conc__mgr_frame(const uint8_t *buf, size_t n, size_t max, const uint8_t **body,
                    size_t *blen, size_t *used);

/* --------------------------------------------------------------- server */

typedef struct conc__mgr_server conc__mgr_server_t;
typedef struct conc__mgr_conn conc__mgr_conn_t;

/* A server without sockets (the fuzz harness uses it directly). noblock:
 * waits never sleep (acquire/get/put time out at once). */
int conc__mgr_server_new(conc__mgr_server_t **out, const void *key, size_t keylen, bool noblock);
void conc__mgr_server_free(conc__mgr_server_t *s);
/* A connection record for fd (-1: none, for the fuzzer). */
conc__mgr_conn_t *conc__mgr_conn_new(conc__mgr_server_t *s, int fd);
/* Drop the connection's object reference (an anonymous object with no
 * connection left is freed; a lock it holds is released) and free it. */
void conc__mgr_conn_free(conc__mgr_conn_t *c);
/* Execute one request body; the reply body is in *reply (owned by c, valid
 * until the next call). Returns 0 (keep going), 1 (reply, then stop the
 * server), or CONC_EINVAL (malformed: reply, then close the connection). */
int conc__mgr_dispatch(conc__mgr_conn_t *c, const uint8_t *req, size_t n,
                       const uint8_t **reply, size_t *rlen);
/* Feed a byte stream as a connection would receive it after the handshake:
 * frames are cut and dispatched in order. Returns 0 when the stream ended
 * on a frame boundary, CONC_EINVAL/CONC_ERANGE when the connection would
 * be closed (malformed, too long, truncated), 1 for a shutdown request. */
int conc__mgr_feed(conc__mgr_conn_t *c, const uint8_t *data, size_t n);

/* The whole server process: serve on listening socket lfd until SHUTDOWN
 * or until watch_fd (a pidfd of the owner, -1 for none) becomes readable.
 * unix_path (may be NULL): unlinked, and its directory removed, at the end. */
int conc__mgr_serve(int lfd, int watch_fd, const void *key, size_t keylen, const char *unix_path);

/* ------------------------------------------------------------ handshake */

/* Both return 0, or CONC_EPERM (the other side's key differs),
 * CONC_EINVAL (protocol), CONC_EBROKEN (I/O, timeout, EOF). fd may be
 * blocking or not. */
int conc__mgr_hs_server(int fd, const void *key, size_t keylen, double timeout);
int conc__mgr_hs_client(int fd, const void *key, size_t keylen, double timeout);

/* Random bytes from the kernel (getrandom). 0 or CONC_ESYS. */
int conc__mgr_random(void *buf, size_t n);

#endif
