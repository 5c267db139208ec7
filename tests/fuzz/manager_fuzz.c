/*
 * manager_fuzz.c — libFuzzer harness for the manager server's frame
 * parser and request dispatcher (src/manager/server.c).
 *
 * The input is the byte stream a client would send after the handshake.
 * It is fed to one connection of a socket-less server, then fed again to
 * a second connection of the same server (so objects created by name on
 * the first pass are met again, and a lock the first connection holds is
 * released when it goes). The server runs in "noblock" mode: a request
 * that would wait (acquire of a held lock, get from an empty queue) times
 * out at once, so no input can wedge the harness. Whatever the input, the
 * dispatcher must not crash, leak, or read out of bounds; the run ends by
 * freeing everything (LeakSanitizer checks).
 *
 * A third connection gets the same input through the shared-memory
 * channel's path (conc__mgr_chan_serve), as a hostile client could write
 * it: each u32 of the stream is taken as the request length the client
 * announces (any value), the bytes after it (as many as there are, up to
 * the data area) are copied in, and whatever the area held before stays
 * behind them. The data area is small (CHAN_CAP) so that announced
 * lengths and replies past it are exercised too.
 *
 * The newer requests (Namespace, Value, nested references, DictProxy's
 * setdefault/popitem/update/items, BIND_ITEM, calls of a registered type
 * — the "Fuzz" type below) go through the same dispatcher; the seed
 * corpus has a stream of each.
 *
 * Build and run: tests/fuzz/run [seconds]
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "manager/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A registered type (issue 17), so that calls reach a method: "echo"
 * returns its arguments, "fail" a code, anything else is not exposed. */
static int fz_new(const void *args, size_t len, void **self)
{
    *self = malloc(len ? len : 1);
    if (!*self)
        return CONC_ENOMEM;
    if (len)
        memcpy(*self, args, len);
    return len > 64 ? CONC_ERANGE : 0;
}
static int fz_echo(void *self, const void *args, size_t len, void **out, size_t *outlen)
{
    (void)self;
    if (!len)
        return 0;
    if (!(*out = malloc(len)))
        return CONC_ENOMEM;
    memcpy(*out, args, len);
    *outlen = len;
    return 0;
}
static int fz_fail(void *self, const void *args, size_t len, void **out, size_t *outlen)
{
    (void)self, (void)args, (void)out, (void)outlen;
    return len ? 77 : CONC_EKEY;
}
static const conc_mmethod_t fz_methods[] = {{"echo", fz_echo}, {"fail", fz_fail}, {NULL, NULL}};
CONC_MANAGER_REGISTER("Fuzz", fz_new, free, fz_methods);

#define CHAN_CAP 4096u

static void feed_chan(conc__mgr_conn_t *c, const uint8_t *data, size_t size)
{
    conc__mgr_chan_t *ch = aligned_alloc(4096, CONC__MGR_CHAN_HDR + CHAN_CAP);
    if (!ch)
        return;
    memset(ch, 0, CONC__MGR_CHAN_HDR + CHAN_CAP);
    while (size >= 4) {
        uint32_t len = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
                       (uint32_t)data[3] << 24;
        data += 4;
        size -= 4;
        size_t n = len < size ? len : size;
        if (n > CHAN_CAP)
            n = CHAN_CAP;
        memcpy(conc__mgr_chan_data(ch), data, n);
        data += n;
        size -= n;
        ch->req_len = len;
        int rc = conc__mgr_chan_serve(c, ch, CHAN_CAP);
        if (ch->rep_len < 4 || ch->rep_len > CHAN_CAP)
            __builtin_trap(); /* a reply must carry a code and fit */
        if (rc < 0)
            break; /* the server closes the connection here */
    }
    free(ch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    conc__mgr_server_t *s;
    if (conc__mgr_server_new(&s, "key", 3, true) != 0)
        return 0;
    conc__mgr_conn_t *a = conc__mgr_conn_new(s, -1);
    conc__mgr_conn_t *b = conc__mgr_conn_new(s, -1);
    conc__mgr_conn_t *c = conc__mgr_conn_new(s, -1);
    if (a && b && c) {
        (void)conc__mgr_feed(a, data, size);
        (void)conc__mgr_feed(b, data, size);
        feed_chan(c, data, size);
        /* frame cutting alone, with the handshake's limit */
        const uint8_t *body;
        size_t blen, used;
        (void)conc__mgr_frame(data, size, CONC__MGR_HS_MAX, &body, &blen, &used);
    }
    conc__mgr_conn_free(a);
    conc__mgr_conn_free(b);
    conc__mgr_conn_free(c);
    conc__mgr_server_free(s);
    return 0;
}
