/*
 * echo_server.c — a green echo server (one green thread per connection)
 * and, in the same program, clients that check the echo and then stop it.
 *
 * The server is the first two functions: accept in a loop, spawn a green
 * thread per connection, read and write back until the peer closes. Every
 * conc_read/conc_accept that would block parks only its green thread, so
 * one OS thread serves all connections — gevent's StreamServer in C.
 *
 *     ./echo_server            # 100 clients x 10 messages, then exits
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <conc.h>
#include <conc/green.h>
#include <conc/io.h>

/* ---- the server: ten lines ---- */
static void *serve(void *arg)
{
    int c = (int)(intptr_t)arg;
    char buf[4096];
    ssize_t n;
    while ((n = conc_read(c, buf, sizeof buf, CONC_FOREVER)) > 0)
        if (conc_write_all(c, buf, (size_t)n, NULL, CONC_FOREVER) != 0)
            break;
    conc_close(c);
    return NULL;
}

static void *server(void *arg)
{
    int lfd = (int)(intptr_t)arg, c;
    while ((c = conc_accept(lfd, NULL, NULL, CONC_FOREVER)) >= 0) /* CONC_EKILLED ends it */
        conc_go(NULL, serve, (void *)(intptr_t)c);
    return NULL;
}

/* ---- the clients ---- */
#define CLIENTS 100
#define MESSAGES 10

static int port;

static void *client(void *arg)
{
    int id = (int)(intptr_t)arg, fd, rc;
    if ((rc = conc_tcp_dial("127.0.0.1", port, 5.0, &fd)) != 0)
        return conc_fail(rc, "client %d: dial: %s", id, conc_strerror(rc));
    for (int i = 0; i < MESSAGES; i++) {
        char out[64], in[64];
        int n = snprintf(out, sizeof out, "client %d message %d", id, i);
        if ((rc = conc_write_all(fd, out, (size_t)n, NULL, 5.0)) != 0 ||
            (rc = conc_read_exact(fd, in, (size_t)n, NULL, 5.0)) != 0) {
            conc_close(fd);
            return conc_fail(rc, "client %d: %s", id, conc_strerror(rc));
        }
        if (memcmp(in, out, (size_t)n) != 0) {
            conc_close(fd);
            return conc_fail(CONC_EFAILED, "client %d: echo differs", id);
        }
    }
    conc_close(fd);
    return NULL;
}

int main(void)
{
    int lfd, rc;
    if ((rc = conc_tcp_listen("127.0.0.1", 0, 0, &lfd)) != 0) {
        fprintf(stderr, "listen: %s\n", conc_strerror(rc));
        return 1;
    }
    port = conc_socket_port(lfd);
    conc_green_t *srv, *cl[CLIENTS];
    conc_go(&srv, server, (void *)(intptr_t)lfd);
    for (int i = 0; i < CLIENTS; i++)
        conc_go(&cl[i], client, (void *)(intptr_t)i);

    /* main blocks in a conc call: the hub runs the server and clients */
    int failed = 0;
    rc = conc_green_joinall(cl, CLIENTS, 30.0);
    for (int i = 0; i < CLIENTS; i++) {
        const char *msg;
        if (conc_green_exception(cl[i], &msg) != 0 || !conc_green_dead(cl[i])) {
            if (failed++ < 5)
                fprintf(stderr, "client %d: %s\n", i, conc_green_dead(cl[i]) ? msg : "did not finish");
        }
        conc_green_free(cl[i]);
    }
    conc_green_kill(srv, true, 5.0); /* its conc_accept returns CONC_EKILLED */
    conc_green_free(srv);
    conc_close(lfd);
    printf("echo: %d clients x %d messages over 127.0.0.1:%d: %s\n", CLIENTS, MESSAGES, port,
           (rc == 0 && failed == 0) ? "all echoed" : "FAILED");
    return rc == 0 && failed == 0 ? 0 : 1;
}
