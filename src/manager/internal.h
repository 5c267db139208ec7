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
#define CONC__MGR_HS_TIMEOUT 5.0        /* seconds the server gives a whole handshake */
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

/* ------------------------------------------------- shared-memory channel
 *
 * A client on the same machine (a Unix-socket connection) may move its
 * requests and replies off the socket: after the handshake it sends the
 * one-byte request CONC__MOP_SHM; the server answers the frame {code 0}
 * with a memfd attached (SCM_RIGHTS), sealed against shrinking and
 * growing, of CONC__MGR_CHAN_SIZE bytes: the header below, then one data
 * area of CONC__MGR_MAX_FRAME bytes that holds a request body, then its
 * reply body, in turn (one call at a time per connection). Any other code
 * means "stay on the socket". From then on:
 *
 *   client: data = body; req_len = n; req_seq++ (release); wake the server
 *   server: sees req_seq move; copies req_len bytes (bounded by the data
 *           area, exactly like a frame from the socket) into private
 *           memory; dispatches; data = reply; rep_len; rep_seq = req_seq;
 *           wakes the client
 *
 * The socket stays open and carries only one-byte wake-ups: it tells each
 * side when the other one is gone (EOF), as before. Waiting (both sides,
 * conc__mgr_chan_wait): spin (adaptive, as for the socket), then a futex
 * on the sequence word for up to CONC__MGR_CHAN_FUTEX_NS, then poll the
 * socket. The waiter announces how it sleeps in its own wait word
 * (1: futex, 2: socket); the poster reads it after publishing and, if set,
 * takes it (exchange with 0) and wakes that way (conc__mgr_chan_post).
 * The server treats everything in the segment as hostile input: lengths
 * are read once and bounded, the request is copied out before it is
 * parsed, the sealed size means no access can fault.
 */
#define CONC__MOP_SHM 5
#define CONC__MGR_CHAN_HDR 4096u
#define CONC__MGR_CHAN_SIZE ((size_t)CONC__MGR_CHAN_HDR + CONC__MGR_MAX_FRAME)
#define CONC__MGR_CHAN_FUTEX_NS 5000000LL
/* a data area that held more than this gets its pages back (punched)
 * before a smaller reply is written */
#define CONC__MGR_CHAN_KEEP (1u << 20)

typedef struct conc__mgr_chan {
    /* written by the client */
    _Alignas(64) uint32_t req_seq;
    uint32_t req_len;
    uint32_t srv_wait; /* the server sleeps: 1 futex on req_seq, 2 on its socket */
    uint32_t req_cpu;  /* the CPU the client posted from (a hint) */
    /* written by the server */
    _Alignas(64) uint32_t rep_seq;
    uint32_t rep_len;
    uint32_t cli_wait; /* the client sleeps: 1 futex on rep_seq, 2 on its socket */
    uint32_t rep_cpu;  /* the CPU the server posted from (a hint) */
} conc__mgr_chan_t;
/* The poster's CPU sits three words after its sequence word. */
_Static_assert(__builtin_offsetof(conc__mgr_chan_t, req_cpu) ==
                   __builtin_offsetof(conc__mgr_chan_t, req_seq) + 12 &&
               __builtin_offsetof(conc__mgr_chan_t, rep_cpu) ==
                   __builtin_offsetof(conc__mgr_chan_t, rep_seq) + 12, "channel layout");

static inline uint8_t *conc__mgr_chan_data(conc__mgr_chan_t *ch)
{
    return (uint8_t *)ch + CONC__MGR_CHAN_HDR;
}

/* Wait until *word != old (another process stores it): 0; CONC_ETIMEDOUT
 * at deadline (ns, CLOCK_MONOTONIC; INT64_MAX: none); CONC_EEOF when fd
 * reports EOF or an error (the peer is gone); CONC_ESHUTDOWN when *stop
 * (may be NULL) became nonzero; another negative code from conc_wait_read
 * (green). flag: this side's wait word. green: never sleep in the kernel
 * on the futex (a green thread must park through conc/io.h instead). */
int conc__mgr_chan_wait(const uint32_t *word, uint32_t old, uint32_t *flag, int fd,
                        conc__spin_t *sp, int64_t deadline, const int *stop, bool green);
/* Publish *word = v, then wake the other side the way its flag says. */
void conc__mgr_chan_post(uint32_t *word, uint32_t v, uint32_t *flag, int fd);
/* Create a channel segment: the sealed memfd (close-on-exec) in *fd and
 * its mapping in *ch. 0 or CONC_ESYS. */
int conc__mgr_chan_create(int *fd, conc__mgr_chan_t **ch);

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
    CONC__MOP_L_INSERT,      /* i64 index (clamped), value */
    CONC__MOP_L_INDEX,       /* value -> u64 (CONC_EEMPTY: absent) */
    CONC__MOP_L_COUNT,       /* value -> u64 */
    CONC__MOP_L_REMOVE,      /* value (CONC_EEMPTY: absent) */
    CONC__MOP_L_REVERSE,

    CONC__MOP_K_ACQUIRE = 48, /* u8 blocking, f64 timeout */
    CONC__MOP_K_RELEASE,
    CONC__MOP_K_LOCKED,       /* -> u8 */

    CONC__MOP_Q_PUT = 64,     /* u8 block, f64 timeout, value */
    CONC__MOP_Q_GET,          /* u8 block, f64 timeout -> value */
    CONC__MOP_Q_SIZE,         /* -> u64 */
    CONC__MOP_Q_FULL,         /* -> u64: 1 when bounded and at maxsize */
};

enum { CONC__MK_DICT = 1, CONC__MK_LIST = 2, CONC__MK_LOCK = 3, CONC__MK_QUEUE = 4 };

/* Namespace, Value, registered types, the rest of DictProxy, nested
 * proxies (server_more.c; kinds in objects.h). A nested value in a reply
 * is u8 kind (0: bytes follow; else the referent's kind, nothing follows). */
enum {
    CONC__MOP_BIND_ITEM = 12,      /* container id u64, u8 sel: 0 key bytes | 1 i64 index
                                      -> id u64, kind u8 (the nested object there) */
    CONC__MOP_MORE_FIRST = 192,
    CONC__MOP_D_SETDEFAULT = 192,  /* key, value -> value */
    CONC__MOP_D_POPITEM = 193,     /* -> key, nested value */
    CONC__MOP_D_UPDATE = 194,      /* u32 n, n x (key, value) */
    CONC__MOP_D_ITEMS = 195,       /* -> u64 n, n x (key, nested value) */
    CONC__MOP_D_SET_REF = 196,     /* key, id u64 (dict or namespace) */
    CONC__MOP_L_APPEND_REF = 200,  /* id u64 */
    CONC__MOP_L_SET_REF = 201,     /* i64 index, id u64 */
    CONC__MOP_V_GET = 208,         /* -> u8 typecode, bytes (the typecode's size) */
    CONC__MOP_V_SET = 209,         /* bytes (the typecode's size) */
    CONC__MOP_U_CALL = 216,        /* method bytes, args bytes -> u8 has, [bytes] */
    /* the rest of ListProxy (server_list.c); a slice is i64 start, stop,
     * step with INT64_MIN for None (step None: 1; step 0: CONC_EINVAL) */
    CONC__MOP_L_CONTAINS = 224,    /* value -> u8 */
    CONC__MOP_L_DEL = 225,         /* i64 index */
    CONC__MOP_L_SLICE = 226,       /* slice -> u64 n, n x nested value */
    CONC__MOP_L_DEL_SLICE = 227,   /* slice */
    CONC__MOP_L_SORT = 228,        /* u8 reverse (0 or 1) */
    CONC__MOP_L_IMUL = 229,        /* i64 n (<= 0: clear) */
};
/* The most negative code a reply may carry. */
#define CONC__MGR_MIN_CODE CONC_EATTR

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
/* Serve the request in the channel's data area (of cap bytes; the real
 * segment has CONC__MGR_MAX_FRAME): read req_len once; if it exceeds cap or
 * CONC__MGR_MAX_FRAME, reply CONC_ERANGE; else copy the body out and
 * dispatch it. Writes the reply body and rep_len (not rep_seq: the caller
 * posts it). Returns as conc__mgr_dispatch, or CONC_ERANGE (close). */
int conc__mgr_chan_serve(conc__mgr_conn_t *c, conc__mgr_chan_t *ch, size_t cap);
/* Feed a byte stream as a connection would receive it after the handshake:
 * frames are cut and dispatched in order. Returns 0 when the stream ended
 * on a frame boundary, CONC_EINVAL/CONC_ERANGE when the connection would
 * be closed (malformed, too long, truncated), 1 for a shutdown request. */
int conc__mgr_feed(conc__mgr_conn_t *c, const uint8_t *data, size_t n);

/* The whole server process (listener.c): serve on listening socket lfd
 * until SHUTDOWN, until watch_fd (a pidfd of the owner, -1 for none)
 * becomes readable, or until SIGTERM or SIGHUP (blocked in the calling
 * process and read from a signalfd). unix_path (may be NULL): unlinked,
 * and its directory removed, however it ends. Raises RLIMIT_NOFILE's soft
 * limit to the hard one. */
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
