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
 * Build and run: tests/fuzz/run [seconds]
 */
#include <stddef.h>
#include <stdint.h>

#include "manager/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    conc__mgr_server_t *s;
    if (conc__mgr_server_new(&s, "key", 3, true) != 0)
        return 0;
    conc__mgr_conn_t *a = conc__mgr_conn_new(s, -1);
    conc__mgr_conn_t *b = conc__mgr_conn_new(s, -1);
    if (a && b) {
        (void)conc__mgr_feed(a, data, size);
        (void)conc__mgr_feed(b, data, size);
        /* frame cutting alone, with the handshake's limit */
        const uint8_t *body;
        size_t blen, used;
        (void)conc__mgr_frame(data, size, CONC__MGR_HS_MAX, &body, &blen, &used);
    }
    conc__mgr_conn_free(a);
    conc__mgr_conn_free(b);
    conc__mgr_server_free(s);
    return 0;
}
