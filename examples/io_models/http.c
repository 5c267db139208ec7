/*
 * http.c — a minimal HTTP/1.1 "hello" server on green threads.
 *
 *   One green thread per connection reads requests into a buffer, answers
 *   every complete GET (or HEAD) in it — pipelined requests get their
 *   answers in order, in one write — and keeps the connection open
 *   (HTTP/1.1 keep-alive) until the client closes it or asks
 *   "Connection: close" (HTTP/1.0 closes unless it asks keep-alive).
 *   Enough for curl and wrk; not a web server: no bodies, no chunked
 *   requests, no URL routing.
 *
 * Costs as green.c: a page or two of stack per connection; the parse is a
 * scan for the blank line that ends each request's headers.
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <conc.h>
#include <conc/green.h>
#include <conc/io.h>

static const char hello[] = "HTTP/1.1 200 OK\r\nServer: conc\r\nContent-Type: text/plain\r\n"
                            "Content-Length: 6\r\n\r\nhello\n";
static const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
static const char toobig[] = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
                             "Connection: close\r\n\r\n";

/* Does the header block h (len bytes) have a header name: value containing
 * word (case-insensitively)? */
static bool header_has(const char *h, size_t len, const char *name, const char *word)
{
    size_t nl = strlen(name);
    for (const char *p = h, *end = h + len; p < end;) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol)
            eol = end;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            char v[128];
            size_t vl = (size_t)(eol - p) - nl - 1;
            vl = vl < sizeof v - 1 ? vl : sizeof v - 1;
            memcpy(v, p + nl + 1, vl);
            v[vl] = 0;
            if (strcasestr(v, word))
                return true;
        }
        p = eol + 2;
    }
    return false;
}

static void *serve(void *arg)
{
    int c = (int)(intptr_t)arg;
    char in[2048], out[2048];
    size_t have = 0;
    bool open = true;
    while (open) {
        ssize_t n = conc_read(c, in + have, sizeof in - have, CONC_FOREVER);
        if (n <= 0)
            break;
        have += (size_t)n;
        size_t used = 0, olen = 0;
        char *end;
        while (open && (end = memmem(in + used, have - used, "\r\n\r\n", 4))) { /* one whole request */
            char *req = in + used;
            size_t hlen = (size_t)(end - req) + 4;
            bool get = strncmp(req, "GET ", 4) == 0, head = strncmp(req, "HEAD ", 5) == 0;
            char *eol = memmem(req, hlen, "\r\n", 2);
            bool v10 = eol - req >= 8 && memcmp(eol - 8, "HTTP/1.0", 8) == 0;
            const char *msg = hello;
            size_t mlen = sizeof hello - 1;
            if (!get && !head) { /* a body we would have to skip, or not HTTP at all */
                msg = bad, mlen = sizeof bad - 1, open = false;
            } else {
                if (head)
                    mlen -= 6; /* the same headers, no body */
                if (header_has(req, hlen, "Connection", "close") ||
                    (v10 && !header_has(req, hlen, "Connection", "keep-alive")))
                    open = false;
            }
            if (olen + mlen > sizeof out) { /* flush a long pipelined batch */
                if (conc_write_all(c, out, olen, NULL, CONC_FOREVER) != 0)
                    goto done;
                olen = 0;
            }
            memcpy(out + olen, msg, mlen);
            olen += mlen;
            used += hlen;
        }
        memmove(in, in + used, have - used);
        have -= used;
        if (have == sizeof in) { /* headers larger than the buffer */
            memcpy(out + olen, toobig, sizeof toobig - 1);
            olen += sizeof toobig - 1;
            open = false;
        }
        if (olen && conc_write_all(c, out, olen, NULL, CONC_FOREVER) != 0)
            break;
    }
done:
    conc_close(c);
    return NULL;
}

int main(int argc, char **argv)
{
    int lfd, c, rc = conc_tcp_listen("127.0.0.1", argc > 1 ? atoi(argv[1]) : 0, 0, &lfd);
    if (rc != 0) {
        fprintf(stderr, "http: listen: %s\n", conc_strerror(rc));
        return 1;
    }
    printf("ready %d\n", conc_socket_port(lfd));
    fflush(stdout);
    while ((c = conc_accept(lfd, NULL, NULL, CONC_FOREVER)) >= 0)
        if (conc_go(NULL, serve, (void *)(intptr_t)c) != 0)
            conc_close(c);
    return 1;
}
